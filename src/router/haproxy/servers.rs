//! `mode = "servers"`: the slots are servers of one backend. The live one is `ready`, the
//! others `drain`; a swap enables the new one, waits for HAProxy's health check to confirm
//! it, and only then drains the old one. Maintenance puts the live server in `maint`, and
//! haproxy.cfg answers the page when no server is left (`nbsrv(be) eq 0`).

use std::collections::BTreeMap;

use color_eyre::eyre::{Result, bail, eyre};

use super::stats::{self, ServerState, Stat};
use super::{Config, Haproxy, find_stat, find_state, join};
use crate::model::{AdminState, MaintenanceMode, RouterState, SlotRoute};
use crate::router::Target;

#[derive(Debug, Clone)]
pub(super) struct ServersSetup {
    pub(super) backend: String,
    pub(super) servers: BTreeMap<String, String>,
}

impl ServersSetup {
    pub(super) fn server_of(&self, slot: &str) -> Result<&str> {
        super::slot_entry(&self.servers, slot, "server")
    }
    /// Slots whose server has this admin state.
    pub(super) fn slots_in(&self, states: &[ServerState], admin: AdminState) -> Vec<String> {
        self.servers
            .iter()
            .filter(|(_, srv)| {
                find_state(states, &self.backend, srv).map(ServerState::admin) == Some(admin)
            })
            .map(|(slot, _)| slot.clone())
            .collect()
    }
}

impl ServersSetup {
    /// The live slot while maintenance is on: of the slots in maint, the one whose state
    /// changed last (on a tie, the one not `disabled` in haproxy.cfg). None when that does
    /// not single one out.
    fn last_in_maint(&self, states: &[ServerState]) -> Option<String> {
        let mut c: Vec<(u64, bool, &String)> = self
            .servers
            .iter()
            .filter_map(|(slot, srv)| {
                let st = find_state(states, &self.backend, srv)?;
                (st.admin() == AdminState::Maint).then_some((st.since, st.config_disabled(), slot))
            })
            .collect();
        c.sort();
        match c.as_slice() {
            [one] => Some(one.2.clone()),
            [a, b, ..] if (a.0, a.1) != (b.0, b.1) => Some(a.2.clone()),
            _ => None,
        }
    }
}

/// A slot whose server is in `maint` while no maintenance is on (or, during maintenance,
/// that is not the live slot) is a standby, not under maintenance: `disabled` in haproxy.cfg,
/// the way the documented config starts the other slots. It is reported `disabled` (an idle
/// slot) with the check `standby (maint)`. While maintenance is on and the live slot is not
/// known, every slot in maint stays `maint`.
fn mark_standby(st: &mut RouterState) {
    if st.maintenance.is_some() && st.live.is_none() {
        return;
    }
    let live = st.live.clone();
    for (slot, r) in st.slots.iter_mut() {
        if r.admin == AdminState::Maint && (st.maintenance.is_none() || live.as_ref() != Some(slot))
        {
            r.admin = AdminState::Disabled;
            r.check = Some(match r.check.as_deref() {
                None | Some("MAINT") => "standby (maint)".to_string(),
                Some(c) => format!("standby ({c})"),
            });
        }
    }
}

impl From<&Config> for ServersSetup {
    fn from(c: &Config) -> Self {
        ServersSetup {
            backend: c.backend.clone().unwrap_or_default(),
            servers: c.servers.clone().unwrap_or_default(),
        }
    }
}

impl Haproxy {
    pub(super) async fn observe_servers(&self, s: &ServersSetup) -> Result<RouterState> {
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
                st.problems.push(format!(
                    "server {}/{srv} of slot `{slot}` is not in HAProxy: a swap to `{slot}` will \
                     be refused; fix `servers` in cutover's config or add the server to \
                     haproxy.cfg",
                    s.backend
                ));
            }
            managed.push((s.backend.clone(), srv.clone()));
            st.slots.insert(
                slot.clone(),
                SlotRoute {
                    admin: state.map_or(AdminState::Unknown, ServerState::admin),
                    check: stat.map(Stat::check_text),
                    checks_up: stat.and_then(Stat::checks_up),
                    ..stat.map(|x| x.counts).unwrap_or_default().route()
                },
            );
        }
        let ready = s.slots_in(&states, AdminState::Ready);
        let maint = s.slots_in(&states, AdminState::Maint);
        st.weights = s.split_in(&states);
        match (ready.as_slice(), maint.as_slice()) {
            _ if st.weights.is_some() => st.live = st.weights.as_ref().map(|w| w.live.clone()),
            ([one], _) => st.live = Some(one.clone()),
            ([], []) => st.notes.push(format!(
                "no slot's server is ready in backend {}: HAProxy has nowhere to send live traffic",
                s.backend
            )),
            ([], several) => {
                st.maintenance = Some(MaintenanceMode::Page);
                st.live = s.last_in_maint(&states);
                if st.live.is_none() {
                    st.notes.push(format!(
                        "maintenance: several slots went into maint at the same time ({}), so \
                         the one to bring back is not known; undrain it by name",
                        join(several)
                    ));
                }
            }
            (several, _) => st.notes.push(format!(
                "several slots take live traffic in backend {} ({}); a swap leaves one",
                s.backend,
                join(several)
            )),
        }
        mark_standby(&mut st);
        st.notes.extend(self.level_note(level));
        st.notes
            .extend(self.state_file_notes(&states, &managed).await);
        Ok(st)
    }

    pub(super) async fn switch_servers(&self, s: &ServersSetup, to: &str) -> Result<()> {
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
                "`{to}` cannot take traffic: {e}; it is back to {was} and the live slot is \
                 unchanged"
            );
        }
        // A canary's weight is not a live slot's: the new one gets its full weight back
        // (from haproxy.cfg) before the old ones stop taking traffic.
        self.full_weight(s, to).await?;
        // Then drain the old ones.
        for old in ready.iter().filter(|o| o.as_str() != to) {
            let old_srv = s.server_of(old)?;
            self.set_server(&s.backend, old_srv, "drain")
                .await
                .map_err(|e| {
                    eyre!(
                        "`{to}` takes traffic now, but `{old}` could not be drained, so both \
                         share the live traffic: {e}"
                    )
                })?;
        }
        self.persist_states().await
    }

    pub(super) async fn drain_servers(
        &self,
        s: &ServersSetup,
        t: &Target,
        word: &str,
    ) -> Result<()> {
        if t.node.is_some() {
            bail!(
                "in mode = \"servers\" each slot is one server, so {t} cannot be addressed; use \
                 mode = \"map\" (a backend per slot) for slots with nodes"
            );
        }
        let srv = s.server_of(&t.slot)?;
        // An undrain puts the server back where it was: in service when its slot is the live
        // one, on standby (maint) when another slot's server is live. Setting it ready next to
        // the live one would send it live traffic.
        let undrain = word == "ready";
        let word = if undrain {
            let states = self.states().await?;
            let another_live = s.servers.iter().any(|(slot, other)| {
                slot != &t.slot
                    && find_state(&states, &s.backend, other)
                        .is_some_and(|st| st.admin() == AdminState::Ready)
            });
            if another_live { "maint" } else { "ready" }
        } else {
            word
        };
        if !undrain {
            let states = self.states().await?;
            s.refuse_split_drain(&states, &t.slot)?;
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

    pub(super) async fn maintenance_servers(
        &self,
        s: &ServersSetup,
        on: bool,
        mode: &MaintenanceMode,
    ) -> Result<()> {
        let states = self.states().await?;
        let ready = s.slots_in(&states, AdminState::Ready);
        let maint = s.slots_in(&states, AdminState::Maint);
        if on {
            s.refuse_during_split(&states)?;
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
        let Some(back) = s.last_in_maint(&states) else {
            bail!(
                "several slots went into maint at the same time ({}), so the one to bring back \
                 is not known: undrain it by name",
                join(&maint)
            );
        };
        let srv = s.server_of(&back)?.to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn st(server: &str, admin_state: u32, since: u64) -> ServerState {
        ServerState {
            backend: "be_app".into(),
            server: server.into(),
            op_state: 0,
            admin_state,
            since,
            weight: None,
        }
    }

    #[test]
    fn a_slot_in_maint_without_maintenance_is_a_standby() {
        let route = |admin| SlotRoute {
            admin,
            check: Some("MAINT".into()),
            ..SlotRoute::default()
        };
        let mut st = RouterState {
            live: Some("blue".into()),
            ..RouterState::default()
        };
        st.slots.insert("blue".into(), route(AdminState::Ready));
        st.slots.insert("green".into(), route(AdminState::Maint));
        mark_standby(&mut st);
        assert_eq!(st.slots["green"].admin, AdminState::Disabled);
        assert_eq!(st.slots["green"].check.as_deref(), Some("standby (maint)"));
        assert_eq!(st.role_of("green"), crate::model::Role::Idle);
        // Maintenance on: the live slot stays in maint, the other is a standby.
        st.slots.insert("blue".into(), route(AdminState::Maint));
        st.slots.insert("green".into(), route(AdminState::Maint));
        st.maintenance = Some(MaintenanceMode::Page);
        mark_standby(&mut st);
        assert_eq!(st.slots["blue"].admin, AdminState::Maint);
        assert_eq!(st.slots["green"].admin, AdminState::Disabled);
        // Not known which is live: nothing is guessed.
        st.live = None;
        st.slots.insert("green".into(), route(AdminState::Maint));
        mark_standby(&mut st);
        assert_eq!(st.slots["green"].admin, AdminState::Maint);
    }

    #[test]
    fn the_slot_that_went_into_maint_last_is_the_live_one() {
        let s = ServersSetup {
            backend: "be_app".into(),
            servers: [("blue", "blue"), ("green", "green"), ("staging", "staging")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        };
        // Put in maint by cutover (1) vs `disabled` in haproxy.cfg (5), same second.
        let states = [st("blue", 1, 0), st("green", 5, 0), st("staging", 5, 40)];
        assert_eq!(s.last_in_maint(&states).as_deref(), Some("blue"));
        let states = [st("blue", 1, 30), st("green", 5, 2), st("staging", 0, 0)];
        assert_eq!(s.last_in_maint(&states).as_deref(), Some("green"));
        let states = [st("blue", 1, 3), st("green", 1, 3), st("staging", 0, 0)];
        assert_eq!(s.last_in_maint(&states), None, "a tie is not guessed");
        let states = [st("blue", 8, 3), st("green", 0, 3)];
        assert_eq!(s.last_in_maint(&states), None, "nothing in maint");
    }
}
