//! Reading Caddy's routing back from its config.

use super::*;

impl Caddy {
    /// Paths of the reverse_proxy handlers whose upstreams all belong to `slot`.
    pub(super) fn slot_handlers(&self, config: &Value, slot: &Upstream) -> Vec<Vec<String>> {
        let mut out = Vec::new();
        walk(config, &mut Vec::new(), &mut |path, v| {
            if v.get("handler").and_then(Value::as_str) == Some("reverse_proxy") {
                let dials = dials_of(&v["upstreams"]);
                if !dials.is_empty() && dials.iter().all(|d| slot.owns(d)) {
                    out.push(path.to_vec());
                }
            }
        });
        out
    }

    /// What `observe` reads from a Caddy config document, without the admin API: the live
    /// and preview routes (or why they cannot be read) and how many handlers each slot has.
    /// For the property tests (tests/proptests.rs).
    #[doc(hidden)]
    pub fn read_config(&self, config: &Value) -> Vec<std::result::Result<String, String>> {
        let mut out = vec![
            self.routed_slot(config, Pointer::Live)
                .map_err(Unrouted::into_text),
            self.routed_slot(config, Pointer::Next)
                .map_err(Unrouted::into_text),
        ];
        for u in &self.slots {
            out.push(Ok(self.slot_handlers(config, u).len().to_string()));
        }
        out
    }

    /// api mode: the slot the live or preview handler proxies to; else why there is none,
    /// as a problem (cutover's config names an `@id` Caddy does not have: nothing can be
    /// switched) or a note (the handler was changed by hand).
    pub(super) fn routed_slot(
        &self,
        config: &Value,
        which: Pointer,
    ) -> std::result::Result<String, Unrouted> {
        let id = self
            .id_for(which)
            .map_err(|e| Unrouted::Problem(e.to_string()))?;
        let (route, field) = match which {
            Pointer::Live => ("live", "live_id"),
            Pointer::Next => ("preview", "preview_id"),
        };
        let Some(h) = find_id(config, id).and_then(|p| get_path(config, &p)) else {
            return Err(Unrouted::Problem(format!(
                "Caddy's config has no object with @id `{id}`: the {route} route cannot be read \
                 or switched (check `{field}` in cutover's config against Caddy's config)"
            )));
        };
        if let Some(w) = self.split_in(&h["upstreams"]) {
            return Ok(w.live);
        }
        let dials = dials_of(&h["upstreams"]);
        self.slot_of(&dials).map(|s| s.name.clone()).ok_or_else(|| {
            Unrouted::Note(format!(
                "the {route} handler `{id}` proxies to {dials:?}, which is no slot of {} \
                 (changed by hand?)",
                self.env
            ))
        })
    }

    /// Record why a route has no slot: a problem or a note.
    pub(super) fn unrouted(state: &mut RouterState, why: Unrouted) {
        match why {
            Unrouted::Problem(p) => state.problems.push(p),
            Unrouted::Note(n) => state.notes.push(n),
        }
    }

    /// File mode: what is odd about the `split=` directories (made by hand, or routes
    /// missing).
    fn note_splits(&self, config: &Value, state: &mut RouterState) -> Result<()> {
        let dir = self.flag_dir()?;
        let on: Vec<_> = self.split_dirs()?.into_iter().filter(|s| s.on).collect();
        if on.len() > 1 {
            let names: Vec<&str> = on.iter().map(|s| s.canary.as_str()).collect();
            state.notes.push(format!(
                "{} holds several split= directories that are on ({}), made by hand? Caddy \
                 sends each its buckets; set the weight to 0 to remove them all",
                dir.display(),
                names.join(", ")
            ));
        }
        for s in &on {
            if self.slot(&s.canary).is_err() {
                state.notes.push(format!(
                    "{}/split={} names no slot of {} (made by hand?)",
                    dir.display(),
                    s.canary,
                    self.env
                ));
            } else if !self.has_split_route(config, &s.canary) {
                state.problems.push(format!(
                    "Caddy's config has no canary route for split={} under {}: Caddy does not \
                     split by these files (load the file-mode routes)",
                    s.canary,
                    dir.display()
                ));
            }
        }
        Ok(())
    }

    pub(super) async fn observe_inner(&self) -> Result<RouterState> {
        let (config, stats) = tokio::join!(self.get_config(), self.upstream_stats());
        let (config, _) = config?;
        let config = Arc::new(config);
        if let Ok(mut read) = self.read.lock() {
            *read = Some((std::time::Instant::now(), config.clone()));
        }
        let mut state = RouterState::default();
        match self.cfg.mode {
            Mode::Api => {
                match self.routed_slot(&config, Pointer::Live) {
                    Ok(s) => state.live = Some(s),
                    Err(why) => Self::unrouted(&mut state, why),
                }
                if let Some(mp) = find_id(&config, &self.maintenance_id())
                    && let Some(m) = get_path(&config, &mp)
                {
                    state.maintenance = match m.get("handler").and_then(Value::as_str) {
                        Some("static_response") => Some(MaintenanceMode::Page),
                        Some("reverse_proxy") => self
                            .slot_of(&dials_of(&m["upstreams"]))
                            .map(|s| MaintenanceMode::Redirect { to: s.name.clone() }),
                        _ => None,
                    };
                    if state.maintenance.is_none() {
                        state.notes.push(format!(
                            "the maintenance handler `{}` is neither a 503 page nor a proxy to a slot (changed by hand?)",
                            self.maintenance_id()
                        ));
                    }
                }
                if self.cfg.preview_id.is_some() {
                    match self.routed_slot(&config, Pointer::Next) {
                        Ok(s) => state.preview = Some(s),
                        Err(why) => Self::unrouted(&mut state, why),
                    }
                }
            }
            Mode::File => {
                let dir = self.flag_dir()?;
                for (which, set) in [
                    (Pointer::Live, &mut state.live),
                    (Pointer::Next, &mut state.preview),
                ] {
                    let flags = self.flags(which.flag())?;
                    match flags.as_slice() {
                        [] => {
                            if which == Pointer::Live {
                                state.notes.push(format!(
                                    "{} has no live= file: Caddy answers 503 on the live route",
                                    dir.display()
                                ));
                            }
                        }
                        [one] => {
                            if self.slot(one).is_ok() {
                                *set = Some(one.clone());
                                if !self.has_file_route(&config, which.flag(), one) {
                                    state.problems.push(format!(
                                        "Caddy's config has no route for {}={one} under {}: Caddy does not \
                                         route by these flags (load the file-mode routes)",
                                        which.flag(),
                                        dir.display()
                                    ));
                                }
                            } else {
                                state.notes.push(format!(
                                    "{}/{}={one} names no slot of {} (made by hand?): Caddy answers 503",
                                    dir.display(),
                                    which.flag(),
                                    self.env
                                ));
                            }
                        }
                        many => state.notes.push(format!(
                            "{} holds several {}= files ({}), made by hand? Caddy uses the first that exists",
                            dir.display(),
                            which.flag(),
                            many.join(", ")
                        )),
                    }
                }
                self.note_splits(&config, &mut state)?;
                state.maintenance = self.file_maintenance()?;
                if let Some(MaintenanceMode::Redirect { to }) = &state.maintenance
                    && self.slot(to).is_err()
                {
                    state.notes.push(format!(
                        "{}/maintenance={to} names no slot (made by hand?)",
                        dir.display()
                    ));
                    state.maintenance = None;
                }
            }
        }
        state.weights = match self.cfg.mode {
            Mode::Api => self
                .live_handler(&config)
                .ok()
                .and_then(|p| get_path(&config, &p))
                .and_then(|h| self.split_in(&h["upstreams"])),
            // What Caddy applies: nothing, without the canary routes (a problem above).
            Mode::File => self
                .file_split()?
                .filter(|w| self.has_split_route(&config, &w.canary)),
        }
        .filter(|w| state.live.as_deref() == Some(w.live.as_str()));
        for slot in &self.slots {
            let handlers = self.slot_handlers(&config, slot);
            let routed: BTreeSet<String> = handlers
                .iter()
                .filter_map(|p| get_path(&config, p))
                .flat_map(|h| dials_of(&h["upstreams"]))
                .collect();
            let missing_in_some = |d: &str| {
                handlers
                    .iter()
                    .filter_map(|p| get_path(&config, p))
                    .any(|h| !dials_of(&h["upstreams"]).iter().any(|x| x == d))
            };
            let node_admin = |d: &str| {
                if handlers.is_empty() || !missing_in_some(d) {
                    AdminState::Ready
                } else {
                    AdminState::Drain
                }
            };
            let (sessions, fails) = slot.addrs().iter().filter_map(|d| stats.get(d)).fold(
                (None, None),
                |(s, f): (Option<u64>, Option<u64>), (n, x)| {
                    (Some(s.unwrap_or(0) + n), Some(f.unwrap_or(0) + x))
                },
            );
            if !handlers.is_empty() && routed.is_empty() {
                state
                    .notes
                    .push(format!("no handler for {} has upstreams", slot.name));
            }
            state.slots.insert(
                slot.name.clone(),
                SlotRoute {
                    admin: if slot
                        .servers
                        .iter()
                        .all(|s| node_admin(&s.addr) == AdminState::Drain)
                    {
                        AdminState::Drain
                    } else {
                        AdminState::Ready
                    },
                    sessions,
                    errors: fails,
                    nodes: if slot.has_nodes {
                        slot.servers
                            .iter()
                            .map(|s| NodeRoute {
                                name: s.node.clone(),
                                admin: node_admin(&s.addr),
                                sessions: stats.get(&s.addr).map(|x| x.0),
                                check: None,
                            })
                            .collect()
                    } else {
                        Vec::new()
                    },
                    ..SlotRoute::default()
                },
            );
        }
        Ok(state)
    }
}
