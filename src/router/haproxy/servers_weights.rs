//! Canary weights in `mode = "servers"`: the live and the canary slot's servers are both
//! `ready` in the one backend, and their weights (`set server BE/SRV weight N`, no reload)
//! split the traffic: live `2 × (100 − p)`, canary `2 × p + 1`.
//!
//! The weights themselves say which slot is the canary, so the split lives in HAProxy (and in
//! the server-state file) and observe() reads it back from `show servers state` alone: the
//! canary's weight is odd, the live one's even, and the two add up to 201, which no ordinary
//! pair of ready servers does by chance. HAProxy takes weights 0 to 256; at 100 % the live
//! server is `ready` with weight 0 (it takes no new request) and the canary has 201. The odd
//! 1 of 201 sends the canary at most half a point more than its share (5 % → 11/201 = 5.5 %).
//! Each slot is one server in this setup, so a share is one server's weight.
//!
//! The abort (0 %) is one round of commands: the live server back to its weight from
//! haproxy.cfg, the canary's weight 0 and its state `drain`, as after a swap.

use color_eyre::eyre::{Result, bail, eyre};

use super::servers::ServersSetup;
use super::stats::{self, ServerState};
use super::{Haproxy, find_state};
use crate::model::{AdminState, Weights};

/// The weights for a share: `(live, canary)`. The sum is 201 and the canary's is odd.
fn split_weights(percent: u8) -> (u32, u32) {
    let p = u32::from(percent.min(100));
    (2 * (100 - p), 2 * p + 1)
}

/// What a slot's server holds now, to put it back.
struct Held {
    server: String,
    weight: u32,
    admin: AdminState,
}

impl ServersSetup {
    fn weight_of(&self, states: &[ServerState], slot: &str) -> Option<(u32, u32)> {
        find_state(states, &self.backend, self.servers.get(slot)?)?.weight
    }

    /// The split the server weights describe: two `ready` servers whose weights are
    /// `2 × (100 − p)` and `2 × p + 1`, for p from 1 to 100.
    pub(super) fn split_in(&self, states: &[ServerState]) -> Option<Weights> {
        let ready = self.slots_in(states, AdminState::Ready);
        let [a, b] = ready.as_slice() else {
            return None;
        };
        let (wa, wb) = (self.weight_of(states, a)?.0, self.weight_of(states, b)?.0);
        let (live, canary, weights) = if wa % 2 == 1 {
            (b, a, (wb, wa))
        } else {
            (a, b, (wa, wb))
        };
        let percent = u8::try_from(weights.1.checked_sub(1)? / 2).ok()?;
        let valid = (1..=100).contains(&percent) && split_weights(percent) == weights;
        valid.then(|| Weights {
            live: live.clone(),
            canary: canary.clone(),
            canary_percent: percent,
        })
    }

    /// Maintenance takes all the live traffic, and the canary's server would keep its share:
    /// maintenance waits until the split is back at 0 %.
    pub(super) fn refuse_during_split(&self, states: &[ServerState]) -> Result<()> {
        if let Some(w) = self.split_in(states) {
            bail!(
                "a canary has {} % of the live traffic: set its weight to 0 (abort the canary) \
                 before maintenance; nothing was changed",
                w.canary_percent
            );
        }
        Ok(())
    }

    /// A drain of either slot of a split would end it by hand: the canary's drain answers
    /// nothing wrong but drops its share, the live one's moves all traffic to the canary.
    pub(super) fn refuse_split_drain(&self, states: &[ServerState], slot: &str) -> Result<()> {
        match self.split_in(states) {
            Some(w) if w.canary == slot => bail!(
                "slot `{slot}` is the canary with {} % of the live traffic: set its weight to 0 \
                 first; nothing was changed",
                w.canary_percent
            ),
            Some(w) if w.live == slot => bail!(
                "slot `{slot}` is live beside the canary `{}` with {} %: set the canary's \
                 weight to 0 (or swap to it) first; nothing was changed",
                w.canary,
                w.canary_percent
            ),
            _ => Ok(()),
        }
    }

    /// The abort of a split, as one line of commands: the live server back to its weight
    /// from haproxy.cfg first, then the canary out (weight 0, `drain`).
    fn abort_commands(&self, states: &[ServerState], w: &Weights) -> Result<String> {
        let be = &self.backend;
        let (live, canary) = (self.server_of(&w.live)?, self.server_of(&w.canary)?);
        let full = self.weight_of(states, &w.live).map_or(1, |(_, i)| i);
        Ok(format!(
            "set server {be}/{live} weight {full}; set server {be}/{canary} weight 0; \
             set server {be}/{canary} state drain"
        ))
    }

    fn held(&self, states: &[ServerState], slot: &str) -> Result<Held> {
        let server = self.server_of(slot)?.to_string();
        let Some(st) = find_state(states, &self.backend, &server) else {
            bail!(
                "HAProxy has no server {}/{server} (slot `{slot}`); nothing was changed",
                self.backend
            );
        };
        let Some((weight, _)) = st.weight else {
            bail!(
                "HAProxy's `show servers state` has no srv_uweight column for {}/{server}: \
                 canary weights in mode = \"servers\" need it (HAProxy 1.8 or later)",
                self.backend
            );
        };
        Ok(Held {
            server,
            weight,
            admin: st.admin(),
        })
    }

    /// The commands that put both servers back as they were held.
    fn put_back(&self, live: &Held, canary: &Held) -> String {
        let be = &self.backend;
        let (l, c) = (&live.server, &canary.server);
        format!(
            "set server {be}/{l} weight {}; set server {be}/{c} weight {}; \
             set server {be}/{c} state {}",
            live.weight,
            canary.weight,
            stats::state_word(canary.admin)
        )
    }
}

impl Haproxy {
    pub(super) async fn weights_servers(
        &self,
        s: &ServersSetup,
        live: &str,
        canary: &str,
        percent: u8,
    ) -> Result<()> {
        let states = self.states().await?;
        let split = s.split_in(&states);
        s.server_of(live)?;
        if percent == 0 {
            // The abort: one round of commands, whatever the split is.
            if let Some(w) = &split {
                self.sock.run(&s.abort_commands(&states, w)?).await?;
            }
            return self.persist_states().await;
        }
        if canary == live {
            bail!("`{canary}` is the live slot; a canary is another slot");
        }
        let ready = s.slots_in(&states, AdminState::Ready);
        if ready.is_empty() && !s.slots_in(&states, AdminState::Maint).is_empty() {
            bail!("maintenance is on: turn it off before a canary; nothing was changed");
        }
        let live_now = match (&split, ready.as_slice()) {
            (Some(w), _) => Some(w.live.clone()),
            (None, [one]) => Some(one.clone()),
            _ => None,
        };
        if live_now.as_deref() != Some(live) {
            bail!(
                "`{live}` is not the live slot of backend {} (ready: {}); a split is between \
                 the live slot and a canary; nothing was changed",
                s.backend,
                if ready.is_empty() {
                    "none".into()
                } else {
                    super::join(&ready)
                }
            );
        }
        let (held_live, held_canary) = (s.held(&states, live)?, s.held(&states, canary)?);
        let be = &s.backend;
        let c = &held_canary.server;
        if find_state(&states, be, c).is_some_and(ServerState::checked_down) {
            bail!(
                "HAProxy's health check says {be}/{c} (slot `{canary}`) is down; nothing was \
                 changed"
            );
        }
        if let Some(w) = split.as_ref().filter(|w| w.canary != canary) {
            // Another canary first loses its share.
            self.sock.run(&s.abort_commands(&states, w)?).await?;
        }
        let (lw, cw) = split_weights(percent);
        let l = &held_live.server;
        if held_canary.admin == AdminState::Ready {
            self.sock
                .run(&format!(
                    "set server {be}/{c} weight {cw}; set server {be}/{l} weight {lw}"
                ))
                .await?;
        } else {
            // The canary takes its share once HAProxy confirms it, and only then does the
            // live server give up its own (at 100 % all of it).
            self.sock
                .run(&format!(
                    "set server {be}/{c} weight {cw}; set server {be}/{c} state ready"
                ))
                .await?;
            if let Err(e) = self.wait_ready(be, std::slice::from_ref(c)).await {
                let back = s.put_back(&held_live, &held_canary);
                if let Err(b) = self.sock.run(&back).await {
                    tracing::warn!("haproxy: could not put {be}/{c} back: {b:#}");
                }
                bail!(
                    "`{canary}` cannot take traffic: {e}; it is back to {} and `{live}` keeps \
                     all the live traffic",
                    held_canary.admin
                );
            }
            self.sock
                .run(&format!("set server {be}/{l} weight {lw}"))
                .await?;
        }
        if let Err(e) = self.persist_states().await {
            // A share that a reload would lose is not kept: both servers go back to what they
            // held (a canary that moved keeps 0 %).
            let put_back = match self.sock.run(&s.put_back(&held_live, &held_canary)).await {
                Ok(()) => "both servers were put back as they were".to_string(),
                Err(b) => format!("putting the servers back failed too: {b:#}"),
            };
            return Err(e.wrap_err(format!(
                "{percent} % to `{canary}` was not kept; {put_back}"
            )));
        }
        Ok(())
    }

    /// After a swap to `slot`: its server takes the traffic at its weight from haproxy.cfg (a
    /// canary's or an aborted canary's weight is not a live slot's).
    pub(super) async fn full_weight(&self, s: &ServersSetup, slot: &str) -> Result<()> {
        let states = self.states().await?;
        let srv = s.server_of(slot)?;
        match find_state(&states, &s.backend, srv).and_then(|st| st.weight) {
            Some((now, full)) if now != full => self
                .sock
                .run(&format!("set server {}/{srv} weight {full}", s.backend))
                .await
                .map_err(|e| eyre!("`{slot}` is ready but keeps weight {now}: {e}")),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(server: &str, admin_state: u32, weight: u32) -> ServerState {
        ServerState {
            backend: "be_app".into(),
            server: server.into(),
            op_state: 2,
            admin_state,
            since: 0,
            weight: Some((weight, 1)),
        }
    }

    fn setup() -> ServersSetup {
        ServersSetup {
            backend: "be_app".into(),
            servers: [("blue", "b1"), ("green", "g1"), ("staging", "s1")]
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
        }
    }

    #[test]
    fn the_weights_of_a_share_add_up_to_201_and_fit_haproxy() {
        assert_eq!(split_weights(5), (190, 11));
        assert_eq!(split_weights(50), (100, 101));
        assert_eq!(split_weights(100), (0, 201));
        for p in 1..=100u8 {
            let (l, c) = split_weights(p);
            let share = f64::from(c) / f64::from(l + c) * 100.0;
            assert!(
                share >= f64::from(p) && share - f64::from(p) <= 0.5,
                "{p}: {share}"
            );
        }
    }

    #[test]
    fn the_split_is_read_from_the_weights_of_two_ready_servers() {
        let s = setup();
        let split = |p: u8| {
            Some(Weights {
                live: "blue".into(),
                canary: "green".into(),
                canary_percent: p,
            })
        };
        let (drain, ready) = (8, 0);
        for p in [1u8, 5, 50, 99, 100] {
            let (l, c) = split_weights(p);
            let states = [st("b1", ready, l), st("g1", ready, c), st("s1", 5, 1)];
            assert_eq!(s.split_in(&states), split(p), "{p} %");
            assert!(s.refuse_during_split(&states).is_err());
            assert!(s.refuse_split_drain(&states, "green").is_err());
            assert!(s.refuse_split_drain(&states, "blue").is_err());
            assert!(s.refuse_split_drain(&states, "staging").is_ok());
        }
        // Not a split: one ready server, two at their configured weight, a sum that is not
        // 201, or the canary drained.
        let none = [
            [st("b1", ready, 1), st("g1", drain, 0), st("s1", 5, 1)],
            [st("b1", ready, 1), st("g1", ready, 1), st("s1", 5, 1)],
            [st("b1", ready, 100), st("g1", ready, 51), st("s1", 5, 1)],
            [st("b1", ready, 150), st("g1", drain, 51), st("s1", 5, 1)],
            [st("b1", ready, 200), st("g1", ready, 1), st("s1", 5, 1)],
        ];
        for states in none {
            assert_eq!(s.split_in(&states), None, "{states:?}");
            assert!(s.refuse_during_split(&states).is_ok());
            assert!(s.refuse_split_drain(&states, "green").is_ok());
        }
    }

    #[test]
    fn the_abort_is_one_line_of_commands() {
        let s = setup();
        let states = [st("b1", 0, 150), st("g1", 0, 51)];
        let w = s.split_in(&states).expect("a split");
        assert_eq!(
            s.abort_commands(&states, &w).expect("commands"),
            "set server be_app/b1 weight 1; set server be_app/g1 weight 0; \
             set server be_app/g1 state drain"
        );
    }
}
