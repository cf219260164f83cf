//! `mode = "file"`: a `balancer://SLOT` per slot, and the Apache config picks the live one with
//! `RewriteCond FLAG_DIR/live=SLOT -f` on every request (seed 004's maintenance flag, used for
//! the swap itself). A swap is one atomic rename of `live=OLD` to `live=NEW`, so at every
//! instant exactly one flag exists; no reload, no balancer-manager change. The preview URL
//! reads `next=SLOT` the same way. Observe reads the flag files back (they are what Apache
//! tests), and the balancer-manager for each slot's members (counts, drains).

use super::*;

/// The flag of the live slot and of the preview slot (as Caddy's file mode names them).
pub(super) const LIVE_FLAG: &str = "live";
pub(super) const NEXT_FLAG: &str = "next";

impl Apache {
    pub(super) fn file_mode(&self) -> bool {
        self.cfg.mode == config::Mode::File
    }

    pub(super) fn flag_dir(&self) -> Result<&Path> {
        self.cfg
            .flag_dir
            .as_deref()
            .ok_or_else(|| eyre!("mode = \"file\" needs `flag_dir`"))
    }

    /// The values of the `PREFIX=VALUE` files in `flag_dir`, sorted.
    pub(super) fn flags(&self, prefix: &str) -> Result<Vec<String>> {
        crate::router::flags(self.flag_dir()?, prefix)
    }

    /// A swap (`live`) or a preview change (`next`) in file mode: the slot's balancer must
    /// have a member that can take traffic, then the flag is renamed and read back.
    pub(super) async fn swap_flag(&self, prefix: &str, to: &str) -> Result<()> {
        self.slot(to)?;
        let all = self.read_all().await?;
        let b = all
            .iter()
            .find(|b| b.name == to)
            .ok_or_else(|| self.no_balancer(to, &all))?;
        if !b.workers.iter().any(|w| w.status.serving()) {
            bail!(
                "balancer://{to} has no member that can take traffic ({}); nothing was changed",
                check_text(b.workers.iter()).unwrap_or_else(|| "no member".into())
            );
        }
        crate::router::set_flag(self.flag_dir()?, prefix, Some(to))
    }

    /// The slot a flag names, with a note when it does not name exactly one.
    async fn flagged(&self, prefix: &str, st: &mut RouterState) -> Result<Option<String>> {
        let mut found = self.flags(prefix)?;
        let dir = self.flag_dir()?.display();
        match found.len() {
            1 => return Ok(found.pop()),
            0 if prefix == LIVE_FLAG => st.problems.push(format!(
                "{dir} has no live=SLOT file: the Apache config answers every public request \
                 with 503; swap to a slot to create it"
            )),
            0 => {}
            _ => st.notes.push(format!(
                "{dir} holds several {prefix}= files ({}): the Apache config's first \
                 RewriteCond wins; remove all but one",
                found.join(", ")
            )),
        }
        Ok(None)
    }

    pub(super) async fn observe_files(&self) -> Result<RouterState> {
        let all = self.read_all().await?;
        let mut st = RouterState::default();
        for s in &self.slots {
            let Some(b) = all.iter().find(|b| b.name == s.name) else {
                st.problems.push(format!(
                    "Apache has no balancer://{0} for slot `{0}`: a swap to it will be refused; \
                     add a <Proxy balancer://{0}> with the slot's members (docs/apache.md)",
                    s.name
                ));
                continue;
            };
            let b = self.count_in_flight(b);
            let route = |ws: &[&Worker]| SlotRoute {
                admin: aggregate(ws.iter().copied()),
                sessions: Some(ws.iter().map(|w| w.busy).sum()),
                requests: Some(ws.iter().map(|w| w.elected).sum()),
                check: check_text(ws.iter().copied()),
                checks_up: crate::model::all_checks_up(ws.iter().map(|w| w.status.checks_up())),
                ..SlotRoute::default()
            };
            let members: Vec<&Worker> = b.workers.iter().collect();
            let mut r = route(&members);
            r.nodes = s
                .nodes
                .iter()
                .map(|(n, _)| {
                    let mine: Vec<&Worker> = members
                        .iter()
                        .copied()
                        .filter(|w| self.belongs(w, &s.name, Some(n)))
                        .collect();
                    let n_route = route(&mine);
                    NodeRoute {
                        name: n.clone(),
                        admin: n_route.admin,
                        sessions: n_route.sessions,
                        check: n_route.check,
                    }
                })
                .collect();
            st.slots.insert(s.name.clone(), r);
        }
        st.live = self.flagged(LIVE_FLAG, &mut st).await?;
        st.preview = self.flagged(NEXT_FLAG, &mut st).await?;
        self.observe_maintenance(&mut st).await?;
        Ok(st)
    }
}
