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
//!   and only then drains the old one, so the backend never has no live server. Canary
//!   weights are server weights (`servers_weights`).
//!
//! Every answer is parsed: a change answers an empty line, anything else is HAProxy's error
//! text and becomes an error quoting it. Files HAProxy reads on a reload (map file,
//! server-state file) are rewritten after each change when configured, and observe() notes
//! when they differ from the runtime state.
//!
//! Files: `config` (the router table), `socket` (the admin socket and its answers), `stats`
//! (parsers of `show ...`), `files` (map and server-state files, drift), `map` and `servers`
//! (the two setups), `weights` and `servers_weights` (canary weights in each); this file holds what both setups share and the [`Router`] impl.

mod config;
mod files;
mod map;
mod servers;
mod servers_weights;
mod socket;
mod stats;
mod weights;

pub use config::{Config, Mode};
/// The readers of HAProxy's runtime API answers (`show stat`, `show servers state`, `show
/// map`, `show backend`) and of map files, for the property tests (tests/proptests.rs).
#[doc(hidden)]
pub use files::read_map;
#[doc(hidden)]
pub use stats::{parse_backends, parse_map, parse_servers_state, parse_stat};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, bail, eyre};

use crate::model::EnvSlots;
use crate::model::{MaintenanceMode, RouterState};
use crate::router::{DEFAULT_CHANGE_TIMEOUT, Driven, Proxy, Target, Verb};

use map::MapSetup;
use servers::ServersSetup;
use socket::{Endpoint, Socket};
use stats::{ServerState, Stat};

#[derive(Debug, Clone)]
enum Setup {
    Map(MapSetup),
    Servers(ServersSetup),
}

/// The haproxy router: a [`Driven`] [`Haproxy`].
pub type Driver = Driven<Haproxy>;

pub struct Haproxy {
    sock: Socket,
    setup: Setup,
    state_file: Option<PathBuf>,
    ready_timeout: Duration,
    /// Slot -> its declared node names.
    slot_nodes: BTreeMap<String, Vec<String>>,
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

/// A slot's entry in one of the router table's maps (`backends`, `servers`), or an error
/// naming the field and what it has.
fn slot_entry<'a>(map: &'a BTreeMap<String, String>, slot: &str, what: &str) -> Result<&'a str> {
    map.get(slot).map(String::as_str).ok_or_else(|| {
        eyre!(
            "slot `{slot}` has no {what} in this haproxy router's `{what}s` (it has: {})",
            crate::router::comma_list(map.keys())
        )
    })
}

fn join(v: &[String]) -> String {
    v.join(", ")
}

impl Haproxy {
    // --- reading -------------------------------------------------------------------------

    async fn stats(&self) -> Result<Vec<Stat>> {
        let t = self.sock.show("show stat").await?;
        parse_stat(&t).map_err(|e| eyre!("{e}"))
    }

    async fn states(&self) -> Result<Vec<ServerState>> {
        let t = self.sock.show("show servers state").await?;
        parse_servers_state(&t).map_err(|e| eyre!("{e}"))
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

    /// Best-effort undo of server state changes.
    async fn revert(&self, backend: &str, servers: &[String], word: &str) {
        for s in servers {
            if let Err(e) = self.set_server(backend, s, word).await {
                tracing::warn!("haproxy: could not set {backend}/{s} back to {word}: {e}");
            }
        }
    }
}

impl Proxy for Haproxy {
    const KIND: &'static str = "haproxy";
    type Config = Config;
    fn new(_name: &str, env: EnvSlots<'_>, cfg: &Config) -> Result<Self> {
        let endpoint = Endpoint::parse(&cfg.socket).map_err(|e| eyre!("`socket`: {e}"))?;
        let setup = match cfg.mode {
            Mode::Map => Setup::Map(MapSetup::from(cfg)),
            Mode::Servers => Setup::Servers(ServersSetup::from(cfg)),
        };
        Ok(Haproxy {
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
        })
    }
    /// A swap in `servers` mode waits up to `ready_timeout` for HAProxy's health check.
    fn change_timeout(&self) -> Duration {
        DEFAULT_CHANGE_TIMEOUT + self.ready_timeout
    }
    fn supports(&self, verb: Verb) -> bool {
        match (&self.setup, verb) {
            (Setup::Map(m), Verb::SetPreview) => m.preview_key.is_some(),
            (Setup::Servers(_), Verb::SetPreview) => false,
            (Setup::Map(m), Verb::Weights) => m.canary_key.is_some(),
            (Setup::Servers(_), Verb::Weights) => true,
            (_, Verb::Pause) => false,
            _ => true,
        }
    }
    async fn observe(&self) -> Result<RouterState> {
        match &self.setup {
            Setup::Map(m) => self.observe_map(m).await,
            Setup::Servers(s) => self.observe_servers(s).await,
        }
    }
    async fn switch_live(&self, to: &str) -> Result<()> {
        match &self.setup {
            Setup::Map(m) => self.switch_map(m, to).await,
            Setup::Servers(s) => self.switch_servers(s, to).await,
        }
    }
    async fn set_preview(&self, slot: &str) -> Result<()> {
        match &self.setup {
            Setup::Map(m) => self.preview_map(m, slot).await,
            Setup::Servers(_) => bail!(
                "mode = \"servers\" has no preview route: use mode = \"map\" with a preview \
                 frontend (docs/haproxy.md)"
            ),
        }
    }
    async fn drain(&self, t: &Target) -> Result<()> {
        match &self.setup {
            Setup::Map(m) => self.servers_map(m, t, "drain").await,
            Setup::Servers(s) => self.drain_servers(s, t, "drain").await,
        }
    }
    async fn undrain(&self, t: &Target) -> Result<()> {
        match &self.setup {
            Setup::Map(m) => self.servers_map(m, t, "ready").await,
            Setup::Servers(s) => self.drain_servers(s, t, "ready").await,
        }
    }
    async fn maintenance(&self, on: bool, mode: &MaintenanceMode) -> Result<()> {
        match &self.setup {
            Setup::Map(m) => self.maintenance_map(m, on, mode).await,
            Setup::Servers(s) => self.maintenance_servers(s, on, mode).await,
        }
    }
    async fn set_weights(&self, live: &str, canary: &str, percent: u8) -> Result<()> {
        match &self.setup {
            Setup::Map(m) => self.weights_map(m, live, canary, percent).await,
            Setup::Servers(s) => self.weights_servers(s, live, canary, percent).await,
        }
    }
}
