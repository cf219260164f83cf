//! The `haproxy` driver: HAProxy through its admin socket (the runtime API).
//!
//! Two setups (`mode`), both described with a complete haproxy.cfg in docs/haproxy.md:
//! - `map`: each slot is its own backend and the frontend picks one through a map
//!   (`use_backend %[str(live),map(FILE,DEFAULT)]`). A swap is one `set map`, which HAProxy
//!   applies atomically. A preview frontend reads a second key. Maintenance points the live
//!   key at a maintenance backend (or another slot) and keeps the slot to come back to under
//!   a third key (`resume_key`), so the state lives in HAProxy (and in the map file), not in
//!   cutover's memory.
//! - `servers`: the slots are servers of one backend; the live one is `ready`, the others
//!   `drain`. A swap sets the new one ready, waits for HAProxy's health check to confirm it,
//!   and only then drains the old one, so the backend never has no live server.
//!
//! Every answer is parsed: a change answers an empty line, anything else is HAProxy's error
//! text and becomes an error quoting it (see [`socket`]). Files HAProxy reads on a reload
//! (map file, server-state file) are rewritten after each change when configured, and
//! observe() notes when they differ from the runtime state ([`files`]).

mod files;
mod socket;
mod stats;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, bail, eyre};
use serde::Deserialize;

use crate::config::{Environment, Slot};
use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute};
use crate::router::{BoxFuture, Router, Target, Verb};
use crate::timefmt::serde_duration;

use socket::{Endpoint, Socket};
use stats::{
    ServerState, Stat, map_get, parse_backends, parse_map, parse_servers_state, parse_stat,
};

/// How the slots are laid out in haproxy.cfg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One backend per slot, chosen through a map.
    Map,
    /// One server per slot in a single backend.
    Servers,
}

fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_ready_timeout() -> Duration {
    Duration::from_secs(10)
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The router's name in its environment (defaults to the kind).
    #[serde(default)]
    pub name: Option<String>,
    /// The admin socket: a Unix path (`/run/haproxy/admin.sock`) or `HOST:PORT`
    /// (`stats socket ipv4@127.0.0.1:9999 level admin`).
    pub socket: String,
    /// Timeout of one socket command.
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    pub mode: Mode,
    /// How long a server that was just enabled may take to pass HAProxy's health check
    /// before the old one is disabled (otherwise the change is undone and refused).
    #[serde(default = "default_ready_timeout", with = "serde_duration")]
    pub ready_timeout: Duration,
    /// The file of haproxy.cfg's `server-state-file`: rewritten from `show servers state`
    /// after each server change, so a reload keeps drain/maint states.
    #[serde(default)]
    pub server_state_file: Option<PathBuf>,

    // mode = "map"
    /// The map as HAProxy names it: the file path used in the map() converter (or `#ID`).
    #[serde(default)]
    pub map: Option<String>,
    /// The map file on disk to keep in sync (usually the same path as `map`).
    #[serde(default)]
    pub map_file: Option<PathBuf>,
    /// The map key the public frontend looks up (default `live`).
    #[serde(default)]
    pub live_key: Option<String>,
    /// The map key the preview frontend looks up (no preview when absent).
    #[serde(default)]
    pub preview_key: Option<String>,
    /// The map key that holds the live backend while maintenance is on
    /// (default `<live_key>.resume`).
    #[serde(default)]
    pub resume_key: Option<String>,
    /// Slot name -> backend name.
    #[serde(default)]
    pub backends: Option<BTreeMap<String, String>>,
    /// The backend that serves the maintenance page.
    #[serde(default)]
    pub maintenance_backend: Option<String>,
    /// Slot -> node -> server name, where a node's server is not named like the node.
    #[serde(default)]
    pub node_servers: Option<BTreeMap<String, BTreeMap<String, String>>>,

    // mode = "servers"
    /// The backend whose servers are the slots.
    #[serde(default)]
    pub backend: Option<String>,
    /// Slot name -> server name in `backend`.
    #[serde(default)]
    pub servers: Option<BTreeMap<String, String>>,
}

fn one_word(field: &str, v: &str) -> std::result::Result<(), String> {
    if v.is_empty() || v.contains(char::is_whitespace) {
        Err(format!(
            "`{field}`: `{v}` must be one word (HAProxy names have no spaces)"
        ))
    } else {
        Ok(())
    }
}

fn distinct_values(field: &str, m: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in m {
        one_word(field, v)?;
        if let Some(other) = seen.insert(v, k) {
            return Err(format!(
                "`{field}`: slots `{other}` and `{k}` both name `{v}`; each slot needs its own"
            ));
        }
    }
    Ok(())
}

impl Config {
    pub fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
        let known = |field: &str, slot: &str| {
            if names.contains(&slot) {
                Ok(())
            } else {
                Err(format!(
                    "`{field}`: `{slot}` is not a slot of this environment (slots: {})",
                    names.join(", ")
                ))
            }
        };
        Endpoint::parse(&self.socket).map_err(|e| format!("`socket`: {e}"))?;
        if self.timeout.is_zero() || self.ready_timeout.is_zero() {
            return Err("`timeout` and `ready_timeout` must be more than zero".into());
        }
        let other_mode = |fields: &[(&str, bool)], mode: &str, this: &str| match fields
            .iter()
            .find(|(_, set)| *set)
        {
            Some((f, _)) => Err(format!(
                "`{f}` belongs to mode = \"{mode}\"; this router has mode = \"{this}\""
            )),
            None => Ok(()),
        };
        match self.mode {
            Mode::Map => {
                other_mode(
                    &[
                        ("backend", self.backend.is_some()),
                        ("servers", self.servers.is_some()),
                    ],
                    "servers",
                    "map",
                )?;
                let map = self.map.as_deref().ok_or(
                    "`map` is missing: mode = \"map\" needs the map's file path as haproxy.cfg's \
                     map() converter names it",
                )?;
                one_word("map", map)?;
                let backends = match &self.backends {
                    Some(b) if !b.is_empty() => b,
                    _ => {
                        return Err("`backends` is missing: mode = \"map\" needs each slot's \
                                    backend, like backends = { blue = \"be_blue\", green = \
                                    \"be_green\" }"
                            .into());
                    }
                };
                for slot in backends.keys() {
                    known("backends", slot)?;
                }
                distinct_values("backends", backends)?;
                if let Some(mb) = &self.maintenance_backend {
                    one_word("maintenance_backend", mb)?;
                    if let Some((slot, _)) = backends.iter().find(|(_, b)| *b == mb) {
                        return Err(format!(
                            "`maintenance_backend`: `{mb}` is slot `{slot}`'s backend; the \
                             maintenance page needs a backend of its own"
                        ));
                    }
                }
                let setup = MapSetup::from(self);
                let mut keys = vec![
                    ("live_key", &setup.live_key),
                    ("resume_key", &setup.resume_key),
                ];
                if let Some(p) = &setup.preview_key {
                    keys.push(("preview_key", p));
                }
                for (i, (f, k)) in keys.iter().enumerate() {
                    one_word(f, k)?;
                    if let Some((g, _)) = keys[..i].iter().find(|(_, o)| o == k) {
                        return Err(format!(
                            "`{f}` and `{g}` are both `{k}`; each needs its own"
                        ));
                    }
                }
                for (slot, nodes) in self.node_servers.iter().flatten() {
                    known("node_servers", slot)?;
                    if !backends.contains_key(slot) {
                        return Err(format!(
                            "`node_servers`: slot `{slot}` has no entry in `backends`"
                        ));
                    }
                    let declared: Vec<&str> = slots
                        .iter()
                        .find(|s| &s.name == slot)
                        .map(|s| s.nodes.iter().map(|n| n.name.as_str()).collect())
                        .unwrap_or_default();
                    for (node, server) in nodes {
                        if !declared.contains(&node.as_str()) {
                            return Err(format!(
                                "`node_servers`: slot `{slot}` has no node `{node}` (its nodes: \
                                 {})",
                                if declared.is_empty() {
                                    "none".to_string()
                                } else {
                                    declared.join(", ")
                                }
                            ));
                        }
                        one_word("node_servers", server)?;
                    }
                }
            }
            Mode::Servers => {
                other_mode(
                    &[
                        ("map", self.map.is_some()),
                        ("map_file", self.map_file.is_some()),
                        ("live_key", self.live_key.is_some()),
                        ("preview_key", self.preview_key.is_some()),
                        ("resume_key", self.resume_key.is_some()),
                        ("backends", self.backends.is_some()),
                        ("maintenance_backend", self.maintenance_backend.is_some()),
                        ("node_servers", self.node_servers.is_some()),
                    ],
                    "map",
                    "servers",
                )?;
                let backend = self.backend.as_deref().ok_or(
                    "`backend` is missing: mode = \"servers\" needs the backend whose servers are \
                     the slots",
                )?;
                one_word("backend", backend)?;
                let servers = match &self.servers {
                    Some(s) if !s.is_empty() => s,
                    _ => {
                        return Err(
                            "`servers` is missing: mode = \"servers\" needs each slot's \
                                    server, like servers = { blue = \"blue\", green = \"green\" }"
                                .into(),
                        );
                    }
                };
                for slot in servers.keys() {
                    known("servers", slot)?;
                    if let Some(s) = slots.iter().find(|s| &s.name == slot)
                        && !s.nodes.is_empty()
                    {
                        return Err(format!(
                            "`servers`: slot `{slot}` has nodes, but in mode = \"servers\" each \
                             slot is one server; use mode = \"map\" (a backend per slot) for \
                             slots with several nodes"
                        ));
                    }
                }
                distinct_values("servers", servers)?;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
struct MapSetup {
    map: String,
    file: Option<PathBuf>,
    live_key: String,
    preview_key: Option<String>,
    resume_key: String,
    backends: BTreeMap<String, String>,
    maintenance_backend: Option<String>,
    node_servers: BTreeMap<String, BTreeMap<String, String>>,
}

impl From<&Config> for MapSetup {
    fn from(c: &Config) -> Self {
        let live_key = c.live_key.clone().unwrap_or_else(|| "live".into());
        MapSetup {
            map: c.map.clone().unwrap_or_default(),
            file: c.map_file.clone(),
            resume_key: c
                .resume_key
                .clone()
                .unwrap_or_else(|| format!("{live_key}.resume")),
            live_key,
            preview_key: c.preview_key.clone(),
            backends: c.backends.clone().unwrap_or_default(),
            maintenance_backend: c.maintenance_backend.clone(),
            node_servers: c.node_servers.clone().unwrap_or_default(),
        }
    }
}

impl MapSetup {
    fn backend_of(&self, slot: &str) -> Result<&str> {
        self.backends.get(slot).map(String::as_str).ok_or_else(|| {
            eyre!(
                "slot `{slot}` has no backend in this haproxy router's `backends` (it has: {})",
                self.backends.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
    fn slot_of(&self, backend: &str) -> Option<String> {
        self.backends
            .iter()
            .find(|(_, b)| *b == backend)
            .map(|(s, _)| s.clone())
    }
    fn managed_keys(&self) -> Vec<&str> {
        let mut k = vec![self.live_key.as_str(), self.resume_key.as_str()];
        if let Some(p) = &self.preview_key {
            k.push(p);
        }
        k
    }
    /// Maintenance is on when the resume key holds a backend other than the live one.
    fn maintenance_on(&self, entries: &[(String, String)]) -> bool {
        match map_get(entries, &self.resume_key) {
            Some(r) => map_get(entries, &self.live_key) != Some(r),
            None => false,
        }
    }
}

#[derive(Debug, Clone)]
struct ServersSetup {
    backend: String,
    servers: BTreeMap<String, String>,
}

impl ServersSetup {
    fn server_of(&self, slot: &str) -> Result<&str> {
        self.servers.get(slot).map(String::as_str).ok_or_else(|| {
            eyre!(
                "slot `{slot}` has no server in this haproxy router's `servers` (it has: {})",
                self.servers.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })
    }
    /// Slots whose server has this admin state.
    fn slots_in(&self, states: &[ServerState], admin: AdminState) -> Vec<String> {
        self.servers
            .iter()
            .filter(|(_, srv)| {
                find_state(states, &self.backend, srv).map(ServerState::admin) == Some(admin)
            })
            .map(|(slot, _)| slot.clone())
            .collect()
    }
}

#[derive(Debug, Clone)]
enum Setup {
    Map(MapSetup),
    Servers(ServersSetup),
}

pub struct Driver {
    name: String,
    sock: Socket,
    setup: Setup,
    state_file: Option<PathBuf>,
    ready_timeout: Duration,
    /// Slot -> its declared node names.
    slot_nodes: BTreeMap<String, Vec<String>>,
    /// One change at a time through this driver.
    changes: tokio::sync::Mutex<()>,
}

fn find_state<'a>(
    states: &'a [ServerState],
    backend: &str,
    server: &str,
) -> Option<&'a ServerState> {
    states
        .iter()
        .find(|s| s.backend == backend && s.server == server)
}

fn find_stat<'a>(stats: &'a [Stat], proxy: &str, name: &str) -> Option<&'a Stat> {
    stats.iter().find(|s| s.proxy == proxy && s.name == name)
}

fn join(v: &[String]) -> String {
    v.join(", ")
}

impl Driver {
    pub fn new(name: String, env: &Environment, cfg: &Config) -> Result<Self> {
        cfg.validate(&env.slots)
            .map_err(|e| eyre!("haproxy router `{name}`: {e}"))?;
        let endpoint = Endpoint::parse(&cfg.socket).map_err(|e| eyre!("`socket`: {e}"))?;
        let setup = match cfg.mode {
            Mode::Map => Setup::Map(MapSetup::from(cfg)),
            Mode::Servers => Setup::Servers(ServersSetup {
                backend: cfg.backend.clone().unwrap_or_default(),
                servers: cfg.servers.clone().unwrap_or_default(),
            }),
        };
        Ok(Driver {
            name,
            sock: Socket::new(endpoint, cfg.timeout),
            setup,
            state_file: cfg.server_state_file.clone(),
            ready_timeout: cfg.ready_timeout,
            slot_nodes: env
                .slots
                .iter()
                .map(|s| {
                    (
                        s.name.clone(),
                        s.nodes.iter().map(|n| n.name.clone()).collect(),
                    )
                })
                .collect(),
            changes: tokio::sync::Mutex::new(()),
        })
    }

    // --- reading -------------------------------------------------------------------------

    async fn stats(&self) -> Result<Vec<Stat>> {
        let t = self.sock.show("show stat").await?;
        parse_stat(&t).map_err(|e| eyre!("{e}"))
    }

    async fn states(&self) -> Result<Vec<ServerState>> {
        let t = self.sock.show("show servers state").await?;
        parse_servers_state(&t).map_err(|e| eyre!("{e}"))
    }

    async fn map_entries(&self, m: &MapSetup) -> Result<Vec<(String, String)>> {
        // An empty map answers nothing at all, so this cannot use `show`.
        let cmd = format!("show map {}", m.map);
        let t = self.sock.raw(&cmd).await?;
        if socket::is_error_text(&t) {
            return Err(socket::refused(&self.sock.endpoint, &cmd, &t));
        }
        parse_map(&t).map_err(|e| eyre!("{e}"))
    }

    async fn backend_names(&self) -> Result<Vec<String>> {
        let t = self.sock.show("show backend").await?;
        parse_backends(&t).map_err(|e| eyre!("{e}"))
    }

    /// The socket's level (`admin`, `operator`, `user`), when HAProxy says.
    async fn level(&self) -> Option<String> {
        let t = self.sock.show("show cli level").await.ok()?;
        let l = t.trim().to_lowercase();
        (!l.is_empty() && !l.contains(' ')).then_some(l)
    }

    fn level_note(&self, level: Option<String>) -> Option<String> {
        let l = level?;
        if l == "admin" {
            return None;
        }
        Some(match self.setup {
            Setup::Map(_) => format!(
                "the admin socket {} is level `{l}`: HAProxy takes map changes there, but drain, \
                 undrain and server changes need `level admin` on its `stats socket` line",
                self.sock.endpoint
            ),
            Setup::Servers(_) => format!(
                "the admin socket {} is level `{l}`: every change needs `level admin` on its \
                 `stats socket` line",
                self.sock.endpoint
            ),
        })
    }

    async fn file_text(path: &Path) -> Result<Option<String>, String> {
        match tokio::fs::read_to_string(path).await {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// Drift notes between the server-state file and HAProxy, for these servers.
    async fn state_file_notes(
        &self,
        states: &[ServerState],
        managed: &[(String, String)],
    ) -> Vec<String> {
        let Some(f) = &self.state_file else {
            return vec![];
        };
        match Self::file_text(f).await {
            Ok(Some(t)) => files::state_drift(f, &t, states, managed),
            // Before cutover's first change HAProxy starts from haproxy.cfg alone; the file
            // is written at the first change.
            Ok(None) => vec![],
            Err(e) => vec![e],
        }
    }

    // --- changing ------------------------------------------------------------------------

    async fn set_server(&self, backend: &str, server: &str, word: &str) -> Result<()> {
        self.sock
            .run(&format!("set server {backend}/{server} state {word}"))
            .await
    }

    /// Rewrite the server-state file from HAProxy's runtime state.
    async fn persist_states(&self) -> Result<()> {
        let Some(f) = &self.state_file else {
            return Ok(());
        };
        let text = self.sock.show("show servers state").await.map_err(|e| {
            eyre!(
                "HAProxy has the change, but its state could not be read back to write the \
                 server-state file {}: {e}; a reload would revert the change",
                f.display()
            )
        })?;
        files::atomic_write(f, text)
            .await
            .map_err(|e| eyre!("HAProxy has the change, but a reload would revert it: {e}"))
    }

    /// Rewrite the map file's managed keys from HAProxy's runtime map.
    async fn persist_map(&self, m: &MapSetup) -> Result<()> {
        let Some(f) = &m.file else {
            return Ok(());
        };
        let entries = self.map_entries(m).await?;
        let old = Self::file_text(f)
            .await
            .map_err(|e| eyre!("HAProxy has the change, but a reload would revert it: {e}"))?
            .unwrap_or_default();
        let new = files::merge_map(&old, &entries, &m.managed_keys());
        if new == old {
            return Ok(());
        }
        files::atomic_write(f, new)
            .await
            .map_err(|e| eyre!("HAProxy has the change, but a reload would revert it: {e}"))
    }

    /// Wait until one of `servers` in `backend` takes traffic and HAProxy's health check has
    /// confirmed it.
    async fn wait_ready(&self, backend: &str, servers: &[String]) -> Result<()> {
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            let (states, stats) = tokio::try_join!(self.states(), self.stats())?;
            let ok = servers.iter().any(|s| {
                find_state(&states, backend, s).is_some_and(ServerState::serving)
                    && find_stat(&stats, backend, s).is_some_and(Stat::confirmed_up)
            });
            if ok {
                return Ok(());
            }
            // A server that was just enabled is UP until its first check; DOWN after that
            // means the check failed, so there is no need to wait longer.
            let failed = servers
                .iter()
                .all(|s| find_state(&states, backend, s).is_some_and(ServerState::checked_down));
            if failed || Instant::now() >= deadline {
                let seen: Vec<String> = servers
                    .iter()
                    .map(|s| {
                        let c = find_stat(&stats, backend, s)
                            .map_or("absent".to_string(), Stat::check_text);
                        format!("{backend}/{s}: {c}")
                    })
                    .collect();
                let names = servers
                    .iter()
                    .map(|s| format!("{backend}/{s}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                if failed {
                    bail!(
                        "HAProxy's health check failed for {names} ({})",
                        seen.join("; ")
                    );
                }
                bail!(
                    "HAProxy's health check did not confirm {names} within {} ({})",
                    humantime::format_duration(self.ready_timeout),
                    seen.join("; ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Make sure a backend can take traffic before traffic is sent to it: when none of its
    /// servers is in service, the drained ones that are up are set ready (and confirmed by a
    /// health check). Refused when its servers are all in maint or down.
    async fn ensure_serving(&self, backend: &str, slot: &str) -> Result<()> {
        let states = self.states().await?;
        let mine: Vec<&ServerState> = states.iter().filter(|s| s.backend == backend).collect();
        if mine.is_empty() || mine.iter().any(|s| s.serving()) {
            // A backend without servers answers by itself (`http-request return`).
            return Ok(());
        }
        let drained: Vec<String> = mine
            .iter()
            .filter(|s| s.admin() == AdminState::Drain && !s.checked_down())
            .map(|s| s.server.clone())
            .collect();
        if drained.is_empty() {
            let names: Vec<String> = mine.iter().map(|s| s.server.clone()).collect();
            if mine.iter().all(|s| s.admin() == AdminState::Maint) {
                bail!(
                    "every server of backend {backend} (slot `{slot}`) is in maint ({}): undrain \
                     `{slot}` first; nothing was changed",
                    join(&names)
                );
            }
            let stats = self.stats().await.unwrap_or_default();
            let checks: Vec<String> = names
                .iter()
                .map(|s| {
                    let c = find_stat(&stats, backend, s).map_or("?".into(), Stat::check_text);
                    format!("{s}: {c}")
                })
                .collect();
            bail!(
                "HAProxy's health checks say no server of backend {backend} (slot `{slot}`) is \
                 up ({}); nothing was changed",
                checks.join("; ")
            );
        }
        for (i, s) in drained.iter().enumerate() {
            if let Err(e) = self.set_server(backend, s, "ready").await {
                self.revert(backend, &drained[..i], "drain").await;
                return Err(e);
            }
        }
        if let Err(e) = self.wait_ready(backend, &drained).await {
            self.revert(backend, &drained, "drain").await;
            bail!(
                "slot `{slot}` cannot take traffic: {e}; its servers are drained again and nothing else was changed"
            );
        }
        self.persist_states().await
    }

    /// Best-effort undo of server state changes.
    async fn revert(&self, backend: &str, servers: &[String], word: &str) {
        for s in servers {
            if let Err(e) = self.set_server(backend, s, word).await {
                tracing::warn!("haproxy: could not set {backend}/{s} back to {word}: {e}");
            }
        }
    }

    async fn require_backend(&self, backend: &str, slot: &str) -> Result<()> {
        let names = self.backend_names().await?;
        if names.iter().any(|b| b == backend) {
            return Ok(());
        }
        bail!(
            "HAProxy has no backend `{backend}` (for `{slot}`); its backends are: {}. A `set \
             map` to it would be accepted and then answer 503, so cutover did not send it: add \
             the backend to haproxy.cfg and reload, or fix this router's config",
            join(&names)
        )
    }

    /// Set a map key (or add it when the map lacks it) and read it back.
    async fn set_key(&self, m: &MapSetup, key: &str, value: &str) -> Result<()> {
        let entries = self.map_entries(m).await?;
        let verb = if map_get(&entries, key).is_some() {
            "set"
        } else {
            "add"
        };
        let cmd = format!("{verb} map {} {key} {value}", m.map);
        self.sock.run(&cmd).await?;
        let after = self.map_entries(m).await?;
        if map_get(&after, key) != Some(value) {
            bail!(
                "HAProxy answered `{cmd}` without an error, but its map says `{key}` -> {}",
                map_get(&after, key).unwrap_or("(nothing)")
            );
        }
        Ok(())
    }

    async fn del_key(&self, m: &MapSetup, key: &str) -> Result<()> {
        let cmd = format!("del map {} {key}", m.map);
        self.sock.run(&cmd).await?;
        let after = self.map_entries(m).await?;
        if let Some(v) = map_get(&after, key) {
            bail!(
                "HAProxy answered `{cmd}` without an error, but its map still has `{key}` -> {v}"
            );
        }
        Ok(())
    }

    /// The HAProxy server of a node: `node_servers`, or the node's own name.
    fn node_server(&self, m: &MapSetup, slot: &str, node: &str) -> Result<String> {
        if let Some(s) = m.node_servers.get(slot).and_then(|n| n.get(node)) {
            return Ok(s.clone());
        }
        let declared = self.slot_nodes.get(slot).cloned().unwrap_or_default();
        if !declared.is_empty() && !declared.iter().any(|n| n == node) {
            bail!(
                "slot `{slot}` has no node `{node}` (its nodes: {})",
                join(&declared)
            );
        }
        Ok(node.to_string())
    }

    fn server_node(&self, m: &MapSetup, slot: &str, server: &str) -> String {
        m.node_servers
            .get(slot)
            .and_then(|n| n.iter().find(|(_, s)| *s == server))
            .map_or_else(|| server.to_string(), |(n, _)| n.clone())
    }

    // --- mode = "map" --------------------------------------------------------------------

    async fn observe_map(&self, m: &MapSetup) -> Result<RouterState> {
        let (stats, states, entries, level) = tokio::join!(
            self.stats(),
            self.states(),
            self.map_entries(m),
            self.level()
        );
        let (stats, states, entries) = (stats?, states?, entries?);
        let mut st = RouterState::default();
        let live_val = map_get(&entries, &m.live_key);
        let resume_val = map_get(&entries, &m.resume_key);
        let unknown = |key: &str, v: &str| {
            format!(
                "the map's `{key}` -> {v}, which is no slot's backend in this router's `backends`"
            )
        };
        match (live_val, resume_val) {
            (Some(l), Some(r)) if l != r => {
                st.live = m.slot_of(r);
                if st.live.is_none() {
                    st.notes.push(unknown(&m.resume_key, r));
                }
                st.maintenance = Some(match m.slot_of(l) {
                    Some(to) => MaintenanceMode::Redirect { to },
                    None => {
                        if m.maintenance_backend.as_deref() != Some(l) {
                            st.notes.push(format!(
                                "maintenance: live traffic goes to backend {l}, which is neither \
                                 a slot's backend nor `maintenance_backend`"
                            ));
                        }
                        MaintenanceMode::Page
                    }
                });
            }
            (Some(l), resume) => {
                if resume.is_some() {
                    st.notes.push(format!(
                        "the map has a leftover `{}` key equal to `{}`; the next maintenance \
                         change removes it",
                        m.resume_key, m.live_key
                    ));
                }
                st.live = m.slot_of(l);
                if st.live.is_none() {
                    if m.maintenance_backend.as_deref() == Some(l) {
                        st.maintenance = Some(MaintenanceMode::Page);
                        st.notes.push(format!(
                            "maintenance is on, but the map has no `{}` key saying which slot \
                             comes back after it: turn it off with a swap",
                            m.resume_key
                        ));
                    } else {
                        st.notes.push(unknown(&m.live_key, l));
                    }
                }
            }
            (None, _) => st.notes.push(format!(
                "the map {} has no `{}` key: the public frontend uses the default of its map() \
                 converter",
                m.map, m.live_key
            )),
        }
        if let Some(pk) = &m.preview_key {
            match map_get(&entries, pk) {
                Some(v) => {
                    st.preview = m.slot_of(v);
                    if st.preview.is_none() {
                        st.notes.push(unknown(pk, v));
                    }
                }
                None => st.notes.push(format!(
                    "the map {} has no `{pk}` key: the preview frontend uses the default of its \
                     map() converter",
                    m.map
                )),
            }
        }
        let mut managed_servers = Vec::new();
        for (slot, backend) in &m.backends {
            let Some(be) = find_stat(&stats, backend, "BACKEND") else {
                st.notes.push(format!(
                    "backend {backend} of slot `{slot}` is not in HAProxy: a swap to `{slot}` \
                     will be refused"
                ));
                st.slots.insert(slot.clone(), SlotRoute::default());
                continue;
            };
            let servers: Vec<&Stat> = stats
                .iter()
                .filter(|s| &s.proxy == backend && !s.is_backend() && s.name != "FRONTEND")
                .collect();
            let admins: Vec<AdminState> = servers
                .iter()
                .map(|s| {
                    find_state(&states, backend, &s.name)
                        .map_or(AdminState::Unknown, ServerState::admin)
                })
                .collect();
            let admin = if admins.is_empty() || admins.contains(&AdminState::Ready) {
                AdminState::Ready
            } else if admins.iter().all(|a| *a == AdminState::Maint) {
                AdminState::Maint
            } else if admins.contains(&AdminState::Drain) {
                AdminState::Drain
            } else {
                AdminState::Unknown
            };
            let has_nodes = self.slot_nodes.get(slot).is_some_and(|n| !n.is_empty());
            let nodes = if servers.len() > 1 || has_nodes {
                servers
                    .iter()
                    .zip(&admins)
                    .map(|(s, a)| NodeRoute {
                        name: self.server_node(m, slot, &s.name),
                        admin: *a,
                        sessions: s.scur,
                        check: Some(s.check_text()),
                    })
                    .collect()
            } else {
                vec![]
            };
            managed_servers.extend(servers.iter().map(|s| (backend.clone(), s.name.clone())));
            st.slots.insert(
                slot.clone(),
                SlotRoute {
                    admin,
                    sessions: be.scur,
                    requests: be.requests(),
                    errors: be.errors(),
                    check: Some(match servers.as_slice() {
                        [one] => one.check_text(),
                        _ => be.status.clone(),
                    }),
                    nodes,
                },
            );
        }
        if let Some(mb) = &m.maintenance_backend
            && find_stat(&stats, mb, "BACKEND").is_none()
        {
            st.notes.push(format!(
                "`maintenance_backend` {mb} is not in HAProxy: maintenance on will be refused"
            ));
        }
        st.notes.extend(self.level_note(level));
        if let Some(f) = &m.file {
            match Self::file_text(f).await {
                Ok(Some(t)) => {
                    st.notes
                        .extend(files::map_drift(f, &t, &entries, &m.managed_keys()))
                }
                Ok(None) => st.notes.push(format!(
                    "the map file {} does not exist: HAProxy would not start or reload without it",
                    f.display()
                )),
                Err(e) => st.notes.push(e),
            }
        }
        st.notes
            .extend(self.state_file_notes(&states, &managed_servers).await);
        Ok(st)
    }

    async fn switch_map(&self, m: &MapSetup, to: &str) -> Result<()> {
        let backend = m.backend_of(to)?;
        let entries = self.map_entries(m).await?;
        if m.maintenance_on(&entries) {
            bail!(
                "maintenance is on (the map's `{}` -> {}): turn maintenance off before a swap; \
                 nothing was changed",
                m.live_key,
                map_get(&entries, &m.live_key).unwrap_or("?")
            );
        }
        self.require_backend(backend, to).await?;
        self.ensure_serving(backend, to).await?;
        if map_get(&entries, &m.live_key) != Some(backend) {
            self.set_key(m, &m.live_key, backend).await?;
        }
        self.persist_map(m).await
    }

    async fn preview_map(&self, m: &MapSetup, slot: &str) -> Result<()> {
        let Some(pk) = &m.preview_key else {
            bail!(
                "this haproxy router has no `preview_key`: add a preview frontend that reads a \
                 second map key (see docs/haproxy.md) and set `preview_key`"
            );
        };
        let backend = m.backend_of(slot)?;
        self.require_backend(backend, slot).await?;
        self.ensure_serving(backend, slot).await?;
        let entries = self.map_entries(m).await?;
        if map_get(&entries, pk) != Some(backend) {
            self.set_key(m, pk, backend).await?;
        }
        self.persist_map(m).await
    }

    async fn servers_map(&self, m: &MapSetup, t: &Target, word: &str) -> Result<()> {
        let backend = m.backend_of(&t.slot)?;
        let (states, entries) = tokio::try_join!(self.states(), self.map_entries(m))?;
        let servers: Vec<String> = match &t.node {
            Some(n) => vec![self.node_server(m, &t.slot, n)?],
            None => states
                .iter()
                .filter(|s| s.backend == backend)
                .map(|s| s.server.clone())
                .collect(),
        };
        if servers.is_empty() {
            bail!(
                "backend {backend} of slot `{}` has no servers in HAProxy",
                t.slot
            );
        }
        if word != "ready" && map_get(&entries, &m.live_key) == Some(backend) {
            let left: Vec<&ServerState> = states
                .iter()
                .filter(|s| s.backend == backend && s.serving() && !servers.contains(&s.server))
                .collect();
            if left.is_empty() {
                bail!(
                    "{t} takes the live traffic and no other server of backend {backend} would be \
                     left to serve it: swap to another slot (or turn maintenance on) first; \
                     nothing was changed"
                );
            }
        }
        for (i, s) in servers.iter().enumerate() {
            if let Err(e) = self.set_server(backend, s, word).await {
                if i == 0 {
                    return Err(e);
                }
                bail!(
                    "{e} (after {} of {} servers of {t} were set {word}: {})",
                    i,
                    servers.len(),
                    join(&servers[..i])
                );
            }
        }
        self.persist_states().await
    }

    async fn maintenance_map(&self, m: &MapSetup, on: bool, mode: &MaintenanceMode) -> Result<()> {
        let entries = self.map_entries(m).await?;
        let live_val = map_get(&entries, &m.live_key).map(str::to_string);
        let is_on = m.maintenance_on(&entries);
        if !on {
            let Some(resume) = map_get(&entries, &m.resume_key).map(str::to_string) else {
                return Ok(());
            };
            if is_on {
                let slot = m.slot_of(&resume).unwrap_or_else(|| resume.clone());
                self.require_backend(&resume, &slot).await?;
                self.ensure_serving(&resume, &slot).await?;
                self.set_key(m, &m.live_key, &resume).await?;
            }
            self.del_key(m, &m.resume_key).await.map_err(|e| {
                eyre!(
                    "live traffic is back on {resume}, but the map's `{}` key could not be \
                     removed: {e}",
                    m.resume_key
                )
            })?;
            return self.persist_map(m).await;
        }
        let (target, slot) = match mode {
            MaintenanceMode::Page => match &m.maintenance_backend {
                Some(b) => (b.clone(), "the maintenance page".to_string()),
                None => bail!(
                    "this haproxy router has no `maintenance_backend`: add a backend that serves \
                     the maintenance page (see docs/haproxy.md) and name it there"
                ),
            },
            MaintenanceMode::Redirect { to } => (m.backend_of(to)?.to_string(), to.clone()),
        };
        let Some(live) = live_val else {
            bail!(
                "the map has no `{}` key, so there is no live slot to come back to after \
                 maintenance: swap to a slot first",
                m.live_key
            );
        };
        let resume = if is_on {
            map_get(&entries, &m.resume_key)
                .unwrap_or(&live)
                .to_string()
        } else {
            live.clone()
        };
        if target == resume {
            bail!("`{slot}` is the live slot itself; redirect maintenance traffic to another slot");
        }
        if is_on && live == target {
            return Ok(());
        }
        self.require_backend(&target, &slot).await?;
        if matches!(mode, MaintenanceMode::Redirect { .. }) {
            self.ensure_serving(&target, &slot).await?;
        }
        let added_resume = !is_on;
        if added_resume {
            self.set_key(m, &m.resume_key, &live).await?;
        }
        if let Err(e) = self.set_key(m, &m.live_key, &target).await {
            if added_resume && let Err(e2) = self.del_key(m, &m.resume_key).await {
                tracing::warn!("haproxy: could not remove `{}` again: {e2}", m.resume_key);
            }
            return Err(e);
        }
        self.persist_map(m).await
    }

    // --- mode = "servers" ----------------------------------------------------------------

    async fn observe_servers(&self, s: &ServersSetup) -> Result<RouterState> {
        let (stats, states, level) = tokio::join!(self.stats(), self.states(), self.level());
        let (stats, states) = (stats?, states?);
        if find_stat(&stats, &s.backend, "BACKEND").is_none() {
            bail!(
                "HAProxy has no backend `{}`: check `backend` in this haproxy router's config \
                 (`show backend` on the socket lists them)",
                s.backend
            );
        }
        let mut st = RouterState::default();
        let mut managed = Vec::new();
        for (slot, srv) in &s.servers {
            let (state, stat) = (
                find_state(&states, &s.backend, srv),
                find_stat(&stats, &s.backend, srv),
            );
            if state.is_none() || stat.is_none() {
                st.notes.push(format!(
                    "server {}/{srv} of slot `{slot}` is not in HAProxy",
                    s.backend
                ));
            }
            managed.push((s.backend.clone(), srv.clone()));
            st.slots.insert(
                slot.clone(),
                SlotRoute {
                    admin: state.map_or(AdminState::Unknown, ServerState::admin),
                    sessions: stat.and_then(|x| x.scur),
                    requests: stat.and_then(Stat::requests),
                    errors: stat.and_then(Stat::errors),
                    check: stat.map(Stat::check_text),
                    nodes: vec![],
                },
            );
        }
        let ready = s.slots_in(&states, AdminState::Ready);
        let maint = s.slots_in(&states, AdminState::Maint);
        match (ready.as_slice(), maint.as_slice()) {
            ([one], _) => st.live = Some(one.clone()),
            ([], []) => st.notes.push(format!(
                "no slot's server is ready in backend {}: HAProxy has nowhere to send live traffic",
                s.backend
            )),
            ([], [one]) => {
                st.live = Some(one.clone());
                st.maintenance = Some(MaintenanceMode::Page);
            }
            ([], several) => {
                st.maintenance = Some(MaintenanceMode::Page);
                st.notes.push(format!(
                    "maintenance: several slots are in maint ({}), so the one to bring back is \
                     not known; undrain it by name",
                    join(several)
                ));
            }
            (several, _) => st.notes.push(format!(
                "several slots take live traffic in backend {} ({}); a swap leaves one",
                s.backend,
                join(several)
            )),
        }
        st.notes.extend(self.level_note(level));
        st.notes
            .extend(self.state_file_notes(&states, &managed).await);
        Ok(st)
    }

    async fn switch_servers(&self, s: &ServersSetup, to: &str) -> Result<()> {
        let srv = s.server_of(to)?.to_string();
        let states = self.states().await?;
        let Some(new) = find_state(&states, &s.backend, &srv).cloned() else {
            bail!(
                "HAProxy has no server {}/{srv} (slot `{to}`); nothing was changed",
                s.backend
            );
        };
        let ready = s.slots_in(&states, AdminState::Ready);
        if ready.is_empty() && !s.slots_in(&states, AdminState::Maint).is_empty() {
            bail!("maintenance is on: turn maintenance off before a swap; nothing was changed");
        }
        if new.checked_down() {
            let stats = self.stats().await.unwrap_or_default();
            let c = find_stat(&stats, &s.backend, &srv).map_or("DOWN".into(), Stat::check_text);
            bail!(
                "HAProxy's health check says {}/{srv} (slot `{to}`) is down ({c}); nothing was \
                 changed",
                s.backend
            );
        }
        // Enable the new one first, and wait for HAProxy to confirm it.
        let was = new.admin();
        if was != AdminState::Ready {
            self.set_server(&s.backend, &srv, "ready").await?;
        }
        if let Err(e) = self
            .wait_ready(&s.backend, std::slice::from_ref(&srv))
            .await
        {
            if was != AdminState::Ready {
                self.revert(
                    &s.backend,
                    std::slice::from_ref(&srv),
                    stats::state_word(was),
                )
                .await;
            }
            bail!(
                "`{to}` cannot take traffic: {e}; it is back to {was} and the live slot is unchanged"
            );
        }
        // Then drain the old ones.
        for old in ready.iter().filter(|o| o.as_str() != to) {
            let old_srv = s.server_of(old)?;
            self.set_server(&s.backend, old_srv, "drain")
                .await
                .map_err(|e| {
                    eyre!(
                        "`{to}` takes traffic now, but `{old}` could not be drained, so both share \
                     the live traffic: {e}"
                    )
                })?;
        }
        self.persist_states().await
    }

    async fn drain_servers(&self, s: &ServersSetup, t: &Target, word: &str) -> Result<()> {
        if t.node.is_some() {
            bail!(
                "in mode = \"servers\" each slot is one server, so {t} cannot be addressed; use \
                 mode = \"map\" (a backend per slot) for slots with nodes"
            );
        }
        let srv = s.server_of(&t.slot)?;
        if word != "ready" {
            let states = self.states().await?;
            let ready = s.slots_in(&states, AdminState::Ready);
            let serving_others = s.servers.iter().any(|(slot, other)| {
                slot != &t.slot
                    && find_state(&states, &s.backend, other).is_some_and(ServerState::serving)
            });
            if ready.contains(&t.slot) && !serving_others {
                bail!(
                    "`{}` is the only slot taking live traffic in backend {}: swap to another slot \
                     (or turn maintenance on) first; nothing was changed",
                    t.slot,
                    s.backend
                );
            }
        }
        self.set_server(&s.backend, srv, word).await?;
        self.persist_states().await
    }

    async fn maintenance_servers(
        &self,
        s: &ServersSetup,
        on: bool,
        mode: &MaintenanceMode,
    ) -> Result<()> {
        let states = self.states().await?;
        let ready = s.slots_in(&states, AdminState::Ready);
        let maint = s.slots_in(&states, AdminState::Maint);
        if on {
            if let MaintenanceMode::Redirect { to } = mode {
                bail!(
                    "in mode = \"servers\" sending live traffic to `{to}` is a swap: use swap, or \
                     mode = \"map\" for a maintenance redirect"
                );
            }
            let live = match ready.as_slice() {
                [] if !maint.is_empty() => return Ok(()),
                [one] => one.clone(),
                [] => bail!(
                    "no slot is live in backend {}, so there is nothing to put under maintenance",
                    s.backend
                ),
                several => bail!(
                    "several slots take live traffic ({}); swap to one of them first",
                    join(several)
                ),
            };
            self.set_server(&s.backend, s.server_of(&live)?, "maint")
                .await?;
            return self.persist_states().await;
        }
        if !ready.is_empty() || maint.is_empty() {
            return Ok(());
        }
        let [back] = maint.as_slice() else {
            bail!(
                "several slots are in maint ({}), so the one to bring back is not known: undrain \
                 it by name",
                join(&maint)
            );
        };
        let srv = s.server_of(back)?.to_string();
        self.set_server(&s.backend, &srv, "ready").await?;
        if let Err(e) = self
            .wait_ready(&s.backend, std::slice::from_ref(&srv))
            .await
        {
            self.revert(&s.backend, std::slice::from_ref(&srv), "maint")
                .await;
            bail!("`{back}` cannot take traffic: {e}; maintenance stays on");
        }
        self.persist_states().await
    }
}

impl Router for Driver {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "haproxy"
    }
    fn supports(&self, verb: Verb) -> bool {
        match (&self.setup, verb) {
            (Setup::Map(m), Verb::SetPreview) => m.preview_key.is_some(),
            (Setup::Servers(_), Verb::SetPreview) => false,
            _ => true,
        }
    }
    fn observe(&self) -> BoxFuture<'_, Result<RouterState>> {
        Box::pin(async move {
            match &self.setup {
                Setup::Map(m) => self.observe_map(m).await,
                Setup::Servers(s) => self.observe_servers(s).await,
            }
        })
    }
    fn switch_live<'a>(&'a self, to: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _one = self.changes.lock().await;
            match &self.setup {
                Setup::Map(m) => self.switch_map(m, to).await,
                Setup::Servers(s) => self.switch_servers(s, to).await,
            }
        })
    }
    fn set_preview<'a>(&'a self, slot: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _one = self.changes.lock().await;
            match &self.setup {
                Setup::Map(m) => self.preview_map(m, slot).await,
                Setup::Servers(_) => bail!(
                    "mode = \"servers\" has no preview route: use mode = \"map\" with a preview \
                     frontend (docs/haproxy.md)"
                ),
            }
        })
    }
    fn drain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _one = self.changes.lock().await;
            match &self.setup {
                Setup::Map(m) => self.servers_map(m, t, "drain").await,
                Setup::Servers(s) => self.drain_servers(s, t, "drain").await,
            }
        })
    }
    fn undrain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _one = self.changes.lock().await;
            match &self.setup {
                Setup::Map(m) => self.servers_map(m, t, "ready").await,
                Setup::Servers(s) => self.drain_servers(s, t, "ready").await,
            }
        })
    }
    fn maintenance<'a>(&'a self, on: bool, mode: &'a MaintenanceMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let _one = self.changes.lock().await;
            match &self.setup {
                Setup::Map(m) => self.maintenance_map(m, on, mode).await,
                Setup::Servers(s) => self.maintenance_servers(s, on, mode).await,
            }
        })
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::config::Node;

    fn slot(name: &str, nodes: &[&str]) -> Slot {
        Slot {
            name: name.into(),
            address: "http://127.0.0.1:9001".into(),
            health_url: "http://127.0.0.1:9001/health".into(),
            version_url: "http://127.0.0.1:9001/version".into(),
            version_pointer: None,
            expect_status: 200,
            nodes: nodes
                .iter()
                .map(|n| Node {
                    name: n.to_string(),
                    address: "http://127.0.0.1:9009".into(),
                })
                .collect(),
        }
    }

    fn slots() -> Vec<Slot> {
        vec![slot("blue", &[]), slot("green", &["g1", "g2"])]
    }

    fn cfg(toml_text: &str) -> Config {
        match toml::from_str::<Config>(toml_text) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{toml_text}"),
        }
    }

    const MAP: &str = r#"
socket = "127.0.0.1:9999"
mode = "map"
map = "/etc/haproxy/slots.map"
backends = { blue = "be_blue", green = "be_green" }
"#;

    const SERVERS: &str = r#"
socket = "/run/haproxy/admin.sock"
mode = "servers"
backend = "be_app"
servers = { blue = "srv_blue" }
"#;

    fn err(text: &str, slots: &[Slot]) -> String {
        match cfg(text).validate(slots) {
            Ok(()) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn good_configs_validate_with_defaults() {
        let c = cfg(MAP);
        assert_eq!(c.validate(&slots()), Ok(()));
        assert_eq!(c.timeout, Duration::from_secs(2));
        let m = MapSetup::from(&c);
        assert_eq!(
            (m.live_key.as_str(), m.resume_key.as_str()),
            ("live", "live.resume")
        );
        assert_eq!(cfg(SERVERS).validate(&slots()), Ok(()));
    }

    #[test]
    fn slot_and_node_names_must_exist() {
        let e = err(
            &MAP.replace("blue = \"be_blue\"", "purple = \"be_blue\""),
            &slots(),
        );
        assert!(e.contains("`backends`: `purple` is not a slot"), "{e}");
        assert!(e.contains("blue, green"), "{e}");
        let e = err(
            &format!("{MAP}node_servers = {{ green = {{ g3 = \"web3\" }} }}\n"),
            &slots(),
        );
        assert!(
            e.contains("slot `green` has no node `g3` (its nodes: g1, g2)"),
            "{e}"
        );
        let ok = format!("{MAP}node_servers = {{ green = {{ g1 = \"web1\" }} }}\n");
        assert_eq!(cfg(&ok).validate(&slots()), Ok(()));
        let e = err(&SERVERS.replace("blue = ", "pink = "), &slots());
        assert!(e.contains("`servers`: `pink` is not a slot"), "{e}");
        let e = err(&SERVERS.replace("blue = ", "green = "), &slots());
        assert!(e.contains("slot `green` has nodes"), "{e}");
    }

    #[test]
    fn fields_of_the_other_mode_and_missing_fields_are_named() {
        let e = err(&format!("{MAP}backend = \"be_app\"\n"), &slots());
        assert!(e.contains("`backend` belongs to mode = \"servers\""), "{e}");
        let e = err(&format!("{SERVERS}map = \"/x.map\"\n"), &slots());
        assert!(e.contains("`map` belongs to mode = \"map\""), "{e}");
        let e = err(
            &MAP.replace("map = \"/etc/haproxy/slots.map\"\n", ""),
            &slots(),
        );
        assert!(e.starts_with("`map` is missing"), "{e}");
        let e = err(&SERVERS.replace("backend = \"be_app\"\n", ""), &slots());
        assert!(e.starts_with("`backend` is missing"), "{e}");
        let e = err(&MAP.replace("\"be_green\"", "\"be_blue\""), &slots());
        assert!(e.contains("both name `be_blue`"), "{e}");
        let e = err(
            &format!("{MAP}maintenance_backend = \"be_blue\"\n"),
            &slots(),
        );
        assert!(e.contains("`maintenance_backend`"), "{e}");
        let e = err(&format!("{MAP}preview_key = \"live\"\n"), &slots());
        assert!(
            e.contains("`preview_key` and `live_key` are both `live`"),
            "{e}"
        );
        let e = err(&MAP.replace("127.0.0.1:9999", "admin.sock"), &slots());
        assert!(e.starts_with("`socket`:"), "{e}");
        let e = err(&format!("{MAP}timeout = \"0s\"\n"), &slots());
        assert!(e.contains("more than zero"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = toml::from_str::<Config>(&format!("{MAP}sockett = \"x\"\n"))
            .expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `sockett`"), "{e}");
    }

    #[test]
    fn maintenance_is_read_from_the_resume_key() {
        let m = MapSetup::from(&cfg(MAP));
        let e = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(!m.maintenance_on(&e(&[("live", "be_blue")])));
        assert!(m.maintenance_on(&e(&[("live", "be_maint"), ("live.resume", "be_blue")])));
        assert!(!m.maintenance_on(&e(&[("live", "be_blue"), ("live.resume", "be_blue")])));
    }
}
