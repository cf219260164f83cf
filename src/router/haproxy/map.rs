//! `mode = "map"`: one backend per slot, and the frontends pick one through map keys.
//!
//! A swap or a preview change is one `set map` (after checking that the backend exists and
//! has a server in service). Maintenance points the live key at `maintenance_backend` (or at
//! another slot's backend) and keeps the backend to come back to under `resume_key`, so the
//! whole state is in HAProxy's map (and in the map file), not in cutover's memory.

use std::collections::BTreeMap;
use std::path::PathBuf;

use color_eyre::eyre::{Result, bail, eyre};

use super::stats::{ServerState, Stat, map_get, parse_backends, parse_map};
use super::{Config, Haproxy, files, find_stat, find_state, join, socket};
use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute};
use crate::router::Target;

mod observe;

#[derive(Debug, Clone)]
pub(super) struct MapSetup {
    pub(super) map: String,
    pub(super) file: Option<PathBuf>,
    pub(super) live_key: String,
    pub(super) preview_key: Option<String>,
    pub(super) resume_key: String,
    pub(super) canary_key: Option<String>,
    /// `<canary_key>.weight`.
    pub(super) canary_weight_key: Option<String>,
    pub(super) backends: BTreeMap<String, String>,
    pub(super) maintenance_backend: Option<String>,
    pub(super) node_servers: BTreeMap<String, BTreeMap<String, String>>,
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
            canary_key: c.canary_key.clone(),
            canary_weight_key: c.canary_key.as_ref().map(|k| format!("{k}.weight")),
            backends: c.backends.clone().unwrap_or_default(),
            maintenance_backend: c.maintenance_backend.clone(),
            node_servers: c.node_servers.clone().unwrap_or_default(),
        }
    }
}

impl MapSetup {
    pub(super) fn backend_of(&self, slot: &str) -> Result<&str> {
        super::slot_entry(&self.backends, slot, "backend")
    }
    pub(super) fn slot_of(&self, backend: &str) -> Option<String> {
        self.backends
            .iter()
            .find(|(_, b)| *b == backend)
            .map(|(s, _)| s.clone())
    }
    pub(super) fn managed_keys(&self) -> Vec<&str> {
        let mut k = vec![self.live_key.as_str(), self.resume_key.as_str()];
        if let Some(p) = &self.preview_key {
            k.push(p);
        }
        if let (Some(c), Some(w)) = (&self.canary_key, &self.canary_weight_key) {
            k.push(c);
            k.push(w);
        }
        k
    }
    /// Maintenance is on when the resume key holds a backend other than the live one.
    pub(super) fn maintenance_on(&self, entries: &[(String, String)]) -> bool {
        match map_get(entries, &self.resume_key) {
            Some(r) => map_get(entries, &self.live_key) != Some(r),
            None => false,
        }
    }
}

/// The backends `show stat` lists, for a message.
fn backend_list(stats: &[Stat]) -> String {
    let names: Vec<String> = stats
        .iter()
        .filter(|s| s.is_backend())
        .map(|s| s.proxy.clone())
        .collect();
    join(&names)
}

impl Haproxy {
    pub(super) async fn map_entries(&self, m: &MapSetup) -> Result<Vec<(String, String)>> {
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

    /// Rewrite the map file's managed keys from HAProxy's runtime map.
    pub(super) async fn persist_map(&self, m: &MapSetup) -> Result<()> {
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

    /// Make sure a backend can take traffic before traffic is sent to it: when none of its
    /// servers is in service, the drained ones that are up are set ready (and confirmed by a
    /// health check). Refused when its servers are all in maint or down.
    pub(super) async fn ensure_serving(&self, backend: &str, slot: &str) -> Result<()> {
        let states = self.states().await?;
        self.ensure_serving_in(&states, backend, slot).await
    }

    /// [`Self::ensure_serving`] on servers' states read a moment ago.
    async fn ensure_serving_in(
        &self,
        states: &[ServerState],
        backend: &str,
        slot: &str,
    ) -> Result<()> {
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
                "slot `{slot}` cannot take traffic: {e}; its servers are drained again and \
                 nothing else was changed"
            );
        }
        self.persist_states().await
    }

    pub(super) async fn require_backend(&self, backend: &str, slot: &str) -> Result<()> {
        let names = self.backend_names().await?;
        require_backend_in(&names, backend, slot)
    }

    /// Set a map key (or add it when the map lacks it) and read it back.
    pub(super) async fn set_key(&self, m: &MapSetup, key: &str, value: &str) -> Result<()> {
        let entries = self.map_entries(m).await?;
        self.set_key_in(m, &entries, key, value).await
    }

    /// [`Self::set_key`] with the map as it was read a moment ago.
    async fn set_key_in(
        &self,
        m: &MapSetup,
        entries: &[(String, String)],
        key: &str,
        value: &str,
    ) -> Result<()> {
        let verb = if map_get(entries, key).is_some() {
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

    pub(super) async fn switch_map(&self, m: &MapSetup, to: &str) -> Result<()> {
        let backend = m.backend_of(to)?;
        // What the switch checks, read in one round (each read is its own connection to the
        // socket): the time to the `set map` is the time users wait for the new slot.
        let (entries, names, states) =
            tokio::try_join!(self.map_entries(m), self.backend_names(), self.states())?;
        if m.maintenance_on(&entries) {
            bail!(
                "maintenance is on (the map's `{}` -> {}): turn maintenance off before a swap; \
                 nothing was changed",
                m.live_key,
                map_get(&entries, &m.live_key).unwrap_or("?")
            );
        }
        require_backend_in(&names, backend, to)?;
        self.ensure_serving_in(&states, backend, to).await?;
        if map_get(&entries, &m.live_key) != Some(backend) {
            self.set_key_in(m, &entries, &m.live_key, backend).await?;
        }
        self.end_split(m, &entries).await?;
        self.persist_map(m).await
    }

    pub(super) async fn preview_map(&self, m: &MapSetup, slot: &str) -> Result<()> {
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

    pub(super) async fn servers_map(&self, m: &MapSetup, t: &Target, word: &str) -> Result<()> {
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
        if word != "ready" && t.node.is_none() {
            m.refuse_canary_drain(&entries, backend, &t.slot)?;
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

    pub(super) async fn maintenance_map(
        &self,
        m: &MapSetup,
        on: bool,
        mode: &MaintenanceMode,
    ) -> Result<()> {
        let entries = self.map_entries(m).await?;
        let live_val = map_get(&entries, &m.live_key).map(str::to_string);
        let is_on = m.maintenance_on(&entries);
        if !on {
            let Some(resume) = map_get(&entries, &m.resume_key).map(str::to_string) else {
                if let Some(l) = &live_val
                    && m.maintenance_backend.as_ref() == Some(l)
                {
                    bail!(
                        "the map's `{}` -> {l} was set without cutover, so there is no `{}` key \
                         saying which slot comes back: swap to the slot that should be live",
                        m.live_key,
                        m.resume_key
                    );
                }
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
        m.refuse_during_split(&entries)?;
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
        if !is_on && m.slot_of(&live).is_none() {
            bail!(
                "the map's `{}` -> {live}, which is no slot's backend, so there is no live slot \
                 to come back to after maintenance: swap to a slot first",
                m.live_key
            );
        }
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
}

/// Refuse a backend HAProxy does not have (`names`: what `show backend` listed).
fn require_backend_in(names: &[String], backend: &str, slot: &str) -> Result<()> {
    if names.iter().any(|b| b == backend) {
        return Ok(());
    }
    bail!(
        "HAProxy has no backend `{backend}` (for `{slot}`); its backends are: {}. A `set \
         map` to it would be accepted and then answer 503, so cutover did not send it: add \
         the backend to haproxy.cfg and reload, or fix this router's config",
        join(names)
    )
}

#[cfg(test)]
mod tests {
    use super::super::config::tests::{MAP, cfg};
    use super::*;

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
