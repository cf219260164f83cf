//! Admin changes: switch, weights, preview, drain, pause, maintenance — each written, applied,
//! then flushed to the disk (and undone when the flush fails).

use super::*;

impl Shared {
    /// Make the atomics say what `s` says. Undrains first and drains last, so no moment has
    /// fewer ready upstreams than either the old or the new state.
    pub(super) fn apply(&self, s: &Saved) {
        let is_drained = |slot: &str, node: Option<&str>| {
            s.drained
                .iter()
                .any(|d| d.slot == slot && d.node.as_deref() == node)
        };
        for drain_pass in [false, true] {
            for slot in &self.slots {
                let want = is_drained(&slot.name, None);
                if want == drain_pass {
                    slot.draining.store(want, Ordering::SeqCst);
                }
                for n in slot.nodes.iter().filter(|_| slot.has_nodes) {
                    let want = is_drained(&slot.name, Some(&n.name));
                    if want == drain_pass {
                        n.draining.store(want, Ordering::SeqCst);
                    }
                }
            }
            if !drain_pass {
                if let Some(i) = self.index(&s.live) {
                    self.live.store(i, Ordering::SeqCst);
                }
                let p = s.preview.as_deref().and_then(|p| self.index(p));
                self.preview.store(p.unwrap_or(NONE), Ordering::SeqCst);
                let m = match &s.maintenance {
                    None => MAINT_OFF,
                    Some(MaintenanceMode::Page) => MAINT_PAGE,
                    Some(MaintenanceMode::Redirect { to }) => {
                        self.index(to).map_or(MAINT_OFF, |i| MAINT_REDIRECT + i)
                    }
                };
                self.maint.store(m, Ordering::SeqCst);
                let c = s
                    .canary
                    .as_ref()
                    .and_then(|c| Some(pack_canary(self.index(&c.slot)?, c.percent.min(100))));
                self.canary.store(c.unwrap_or(0), Ordering::SeqCst);
            }
        }
    }

    /// Check, save, apply. `f` edits a copy of the current state and refuses with a reason.
    pub(super) async fn change(
        &self,
        what: &str,
        f: impl FnOnce(&Self, &mut Saved) -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        let _one_at_a_time = self.changes.lock().await;
        let before = self.snapshot();
        let mut next = before.clone();
        f(self, &mut next)?;
        if next == before {
            return Ok(());
        }
        // Written, then applied, then flushed: requests take the new route as soon as the file
        // says it, and the admin call answers once the disk has it. A flush that fails puts
        // the route back as it was.
        self.save(&next)?;
        self.apply(&next);
        self.routing.send_modify(|g| *g = g.wrapping_add(1));
        if let Err(e) = self.sync_saved() {
            self.apply(&before);
            self.routing.send_modify(|g| *g = g.wrapping_add(1));
            let _ = self.save(&before).and_then(|_| self.sync_saved());
            return Err(e);
        }
        tracing::info!(env = %self.env, "{what}");
        Ok(())
    }

    // --- what requests read -------------------------------------------------------------

    pub async fn switch_live(&self, to: &str) -> Result<(), AdminError> {
        let from = self.snapshot().live;
        self.change(&format!("live: {from} -> {to}"), |me, next| {
            let (_, slot) = me.slot_of(to)?;
            if next.live == to {
                return Ok(());
            }
            me.must_take_traffic(slot, "live")?;
            if let Some(MaintenanceMode::Redirect { to: r }) = &next.maintenance
                && r == to
            {
                return Err(AdminError::new(
                    409,
                    format!(
                        "maintenance redirects live traffic to `{to}`; turn maintenance off (or \
                         redirect elsewhere) before making `{to}` live"
                    ),
                ));
            }
            next.live = to.to_string();
            // A switch ends any split: the new live slot takes all the live traffic.
            next.canary = None;
            Ok(())
        })
        .await
    }

    /// Send `percent` % of the live traffic to `canary` and the rest to `live`, which must be
    /// the live slot. 0 puts it all back on `live`.
    pub async fn set_weights(
        &self,
        live: &str,
        canary: &str,
        percent: u8,
    ) -> Result<(), AdminError> {
        self.change(
            &format!(
                "weights: {live} {} % / {canary} {percent} %",
                100 - u16::from(percent.min(100))
            ),
            |me, next| {
                me.slot_of(live)?;
                let (_, c) = me.slot_of(canary)?;
                if percent > 100 {
                    return Err(AdminError::new(
                        400,
                        format!("a canary share is 0 to 100 %, not {percent}"),
                    ));
                }
                if next.live != live {
                    return Err(AdminError::new(
                        409,
                        format!(
                            "`{live}` is not the live slot (`{}` is); a split is between the live \
                             slot and a canary",
                            next.live
                        ),
                    ));
                }
                if canary == live {
                    return Err(AdminError::new(
                        409,
                        format!("`{canary}` is the live slot; a canary is another slot"),
                    ));
                }
                if percent == 0 {
                    next.canary = None;
                    return Ok(());
                }
                if next.canary.as_ref().is_none_or(|c| c.slot != canary) {
                    me.must_take_traffic(c, "the canary slot")?;
                }
                next.canary = Some(Canary {
                    slot: canary.to_string(),
                    percent,
                });
                Ok(())
            },
        )
        .await
    }

    pub async fn set_preview(&self, to: &str) -> Result<(), AdminError> {
        self.change(&format!("preview: -> {to}"), |me, next| {
            let (_, slot) = me.slot_of(to)?;
            if next.preview.as_deref() == Some(to) {
                return Ok(());
            }
            me.must_take_traffic(slot, "the preview slot")?;
            next.preview = Some(to.to_string());
            Ok(())
        })
        .await
    }

    pub async fn drain(&self, slot: &str, node: Option<&str>) -> Result<(), AdminError> {
        self.change(&drain_change("drain", slot, node), |me, next| {
            let (_, s) = me.slot_of(slot)?;
            let entry = Drained {
                slot: slot.to_string(),
                node: node.map(str::to_string),
            };
            if next.drained.contains(&entry) {
                return Ok(());
            }
            let role = me.serving_role(next, slot);
            match node {
                None => {
                    if let Some(role) = role {
                        let how = match role {
                            "live" => "switch live to another slot first",
                            "the preview slot" => "point preview at another slot first",
                            "the canary slot" => "set its weight to 0 first",
                            _ => "turn maintenance off or redirect elsewhere first",
                        };
                        return Err(AdminError::new(
                            409,
                            format!(
                                "slot `{slot}` is {role}; draining it would leave that traffic \
                                 with no backend: {how}, then drain it"
                            ),
                        ));
                    }
                }
                Some(n) => {
                    me.node_of(s, n)?;
                    let ready_others = s
                        .nodes
                        .iter()
                        .filter(|x| x.name != n && !x.draining.load(Ordering::SeqCst))
                        .count();
                    if let Some(role) = role
                        && ready_others == 0
                    {
                        return Err(AdminError::new(
                            409,
                            format!(
                                "node `{n}` is the last ready node of slot `{slot}`, which is \
                                 {role}; undrain another node of `{slot}` first"
                            ),
                        ));
                    }
                }
            }
            next.drained.push(entry);
            Ok(())
        })
        .await
    }

    pub(super) fn node_of<'a>(&self, s: &'a SlotRt, node: &str) -> Result<&'a NodeRt, AdminError> {
        if !s.has_nodes {
            return Err(AdminError::new(
                404,
                format!(
                    "slot `{}` has no nodes; drain or undrain the slot itself (leave out `node`)",
                    s.name
                ),
            ));
        }
        s.nodes.iter().find(|n| n.name == node).ok_or_else(|| {
            AdminError::new(
                404,
                format!(
                    "unknown node `{node}` of slot `{}`; it has: {}",
                    s.name,
                    crate::router::comma_list(s.nodes.iter().map(|n| n.name.as_str()))
                ),
            )
        })
    }

    pub async fn undrain(&self, slot: &str, node: Option<&str>) -> Result<(), AdminError> {
        self.change(&drain_change("undrain", slot, node), |me, next| {
            let (_, s) = me.slot_of(slot)?;
            if let Some(n) = node {
                me.node_of(s, n)?;
            }
            next.drained
                .retain(|d| !(d.slot == slot && d.node.as_deref() == node));
            Ok(())
        })
        .await
    }

    /// Hold new live requests until [`Self::resume`] (each up to `pause_timeout`).
    /// The 503s counted since the last pause began start again from 0 (a pause while
    /// paused keeps counting).
    pub fn pause(&self) {
        if !self.pause.send_replace(true) {
            self.pause_refused.store(0, Ordering::SeqCst);
        }
        self.paused.store(true, Ordering::SeqCst);
        tracing::info!(env = %self.env, "paused: new live requests are held");
    }

    /// Release the held requests to the live slot; new ones are served again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.pause.send_replace(false);
        tracing::info!(env = %self.env, "resumed: held requests go to the live slot");
    }

    /// Wait while paused: `Ok` once resumed, `Err` with what to answer when the pause holds
    /// `pause_max_held` requests already or did not end within `pause_timeout`.
    pub async fn wait_while_paused(&self) -> Result<(), String> {
        let mut resumed = self.pause.subscribe();
        if !*resumed.borrow_and_update() {
            return Ok(());
        }
        let held = self.held.fetch_add(1, Ordering::SeqCst) + 1;
        let _held = HeldGuard(&self.held);
        if held > self.opts.pause_max_held {
            self.pause_refused.fetch_add(1, Ordering::SeqCst);
            return Err(format!(
                "cutover proxy: paused, and {} requests are held already; try again shortly",
                self.opts.pause_max_held
            ));
        }
        let waited = tokio::time::timeout(self.opts.pause_timeout, resumed.wait_for(|p| !*p)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => {
                self.pause_refused.fetch_add(1, Ordering::SeqCst);
                Err(format!(
                    "cutover proxy: paused for longer than {}s; try again shortly",
                    self.opts.pause_timeout.as_secs()
                ))
            }
        }
    }

    pub async fn set_maintenance(
        &self,
        on: bool,
        mode: Option<MaintenanceMode>,
    ) -> Result<(), AdminError> {
        let what = match (&mode, on) {
            (_, false) => "maintenance off".to_string(),
            (Some(m), true) => format!("maintenance on: {m}"),
            (None, true) => "maintenance on: 503 page".to_string(),
        };
        self.change(&what, |me, next| {
            if !on {
                next.maintenance = None;
                return Ok(());
            }
            let mode = mode.unwrap_or_default();
            if let MaintenanceMode::Redirect { to } = &mode {
                let (_, s) = me.slot_of(to)?;
                if *to == next.live {
                    return Err(AdminError::new(
                        409,
                        format!(
                            "`{to}` is the live slot: redirecting its traffic to itself would \
                             leave no slot serving; redirect to another slot, or use the page"
                        ),
                    ));
                }
                if s.ready_nodes() == 0 {
                    return Err(AdminError::new(
                        409,
                        format!(
                            "slot `{to}` is draining (no ready node); refusing to redirect live \
                             traffic to it, which would leave no serving node; undrain it first"
                        ),
                    ));
                }
            }
            next.maintenance = Some(mode);
            Ok(())
        })
        .await
    }
}

/// What a drain or undrain is called in its log line and error: `drain blue/b1`.
fn drain_change(verb: &str, slot: &str, node: Option<&str>) -> String {
    match node {
        Some(n) => format!("{verb} {slot}/{n}"),
        None => format!("{verb} {slot}"),
    }
}
