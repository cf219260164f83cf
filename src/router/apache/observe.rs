//! Reading Apache's real state back: roles, drains, in-flight requests, the maintenance bypass.

use super::*;

impl Apache {
    /// What this driver remembers of Apache, locked.
    fn memory_lock(&self) -> Result<std::sync::MutexGuard<'_, Memory>> {
        self.memory
            .lock()
            .map_err(|_| eyre!("driver state poisoned"))
    }

    pub(super) async fn observe_inner(&self) -> Result<RouterState> {
        let all = self.read_all().await?;
        let live = all
            .iter()
            .find(|b| b.name == self.live)
            .ok_or_else(|| self.no_balancer(&self.live, &all))?;
        let preview = match &self.preview {
            Some(p) => Some(
                all.iter()
                    .find(|b| b.name == *p)
                    .ok_or_else(|| self.no_balancer(p, &all))?,
            ),
            None => None,
        };
        let (live, preview) = (
            self.count_in_flight(live),
            preview.map(|p| self.count_in_flight(p)),
        );
        let (live, preview) = (&live, preview.as_ref());
        let managed: Vec<&Balancer> = std::iter::once(live).chain(preview).collect();

        // Apache restarted (or first look): find out again whether changes persist.
        let restarted = {
            let m = self.memory_lock()?;
            m.persist.is_none()
                || managed
                    .iter()
                    .any(|b| m.nonces.get(&b.name).is_some_and(|n| *n != b.nonce))
        };
        let persist = if restarted {
            let p = self.read_persist().await;
            if let Ok(mut m) = self.memory.lock() {
                m.persist = p;
            }
            p
        } else {
            self.memory.lock().ok().and_then(|m| m.persist)
        };

        let mut st = RouterState::default();
        for s in &self.slots {
            let of = |b: &Balancer| -> Vec<(Worker, Option<String>)> {
                b.workers
                    .iter()
                    .filter_map(|w| {
                        self.owner(w)
                            .filter(|o| o.slot == s.name)
                            .map(|o| (w.clone(), o.node))
                    })
                    .collect()
            };
            let in_live = of(live);
            let in_preview = preview.map(of).unwrap_or_default();
            let admin_from = if in_live.is_empty() {
                &in_preview
            } else {
                &in_live
            };
            let everywhere: Vec<&(Worker, Option<String>)> =
                in_live.iter().chain(&in_preview).collect();
            let nodes = s
                .nodes
                .iter()
                .map(|(n, _)| {
                    let mine = |v: &Vec<(Worker, Option<String>)>| -> Vec<Worker> {
                        v.iter()
                            .filter(|(_, o)| o.as_deref() == Some(n.as_str()))
                            .map(|(w, _)| w.clone())
                            .collect()
                    };
                    let (l, p) = (mine(&in_live), mine(&in_preview));
                    let admin_src = if l.is_empty() { &p } else { &l };
                    let found = !l.is_empty() || !p.is_empty();
                    NodeRoute {
                        name: n.clone(),
                        admin: aggregate(admin_src.iter()),
                        sessions: found.then(|| l.iter().chain(&p).map(|w| w.busy).sum()),
                        check: check_text(admin_src.iter()),
                    }
                })
                .collect();
            let found = !everywhere.is_empty();
            if !found {
                st.problems.push(format!(
                    "slot `{}` has no member in {}: a swap to it will be refused; add a \
                     BalancerMember with the slot's address, or map one with a [[member]] entry",
                    s.name,
                    managed
                        .iter()
                        .map(|b| format!("balancer://{}", b.name))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
            st.slots.insert(
                s.name.clone(),
                SlotRoute {
                    admin: aggregate(admin_from.iter().map(|(w, _)| w)),
                    sessions: found.then(|| everywhere.iter().map(|(w, _)| w.busy).sum()),
                    requests: found.then(|| everywhere.iter().map(|(w, _)| w.elected).sum()),
                    errors: None,
                    latency_ms: None,
                    percentiles: None,
                    check: check_text(admin_from.iter().map(|(w, _)| w)),
                    checks_up: crate::model::all_checks_up(
                        admin_from.iter().map(|(w, _)| w.status.checks_up()),
                    ),
                    nodes,
                },
            );
        }

        st.weights = self
            .split_of(live, preview)
            .filter(|w| w.canary_percent > 0);
        let (l, mut notes) = match &st.weights {
            Some(w) => (Some(w.live.clone()), Vec::new()),
            None => self.in_rotation(live),
        };
        st.live = l;
        st.notes.append(&mut notes);
        if let Some(p) = preview {
            let (p, mut notes) = self.in_rotation(p);
            st.preview = p;
            st.notes.append(&mut notes);
        }

        // Apache-specific drift: what Apache shows vs what this driver last set.
        let set = {
            let m = self.memory_lock()?;
            m.set.clone()
        };
        for ((bal, worker), (flags, when)) in &set {
            let Some(b) = managed.iter().find(|b| b.name == *bal) else {
                continue;
            };
            let Some(w) = b.worker(worker) else {
                st.notes.push(format!(
                    "drift: member {worker} of balancer://{bal}, which cutover changed at {}, \
                     is gone (the Apache config changed?)",
                    crate::timefmt::clock(*when)
                ));
                continue;
            };
            let differ: Vec<_> = flags
                .iter()
                .filter(|(f, on)| w.status.has(**f) != **on)
                .map(|(f, on)| format!("{} {}", if *on { "set" } else { "cleared" }, f.label()))
                .collect();
            if !differ.is_empty() {
                let why = match persist {
                    Some(false) => {
                        "BalancerPersist is Off, so an Apache restart (even graceful) returned \
                         the member to the config's state; run the operation again, or set \
                         `BalancerPersist On`"
                    }
                    Some(true) => {
                        "someone changed it in the balancer-manager, or Apache's config changed"
                    }
                    None => "Apache restarted, or someone changed it in the balancer-manager",
                };
                st.notes.push(format!(
                    "drift: balancer://{bal} member {worker} ({}) shows `{}`, but cutover {} at \
                     {}: {why}",
                    self.owner(w)
                        .map(|o| match o.node {
                            Some(n) => format!("{}/{n}", o.slot),
                            None => o.slot,
                        })
                        .unwrap_or_else(|| "no slot".into()),
                    w.status_text,
                    differ.join(", "),
                    crate::timefmt::clock(*when)
                ));
            }
        }
        if persist == Some(false) {
            st.notes.push(
                "BalancerPersist is Off: an Apache restart returns every member to the \
                 config's state"
                    .into(),
            );
        }
        for b in &managed {
            for w in &b.workers {
                if self.owner(w).is_none() {
                    st.notes.push(format!(
                        "balancer://{} member {} (`{}`) belongs to no slot",
                        b.name, w.url, w.status_text
                    ));
                }
            }
        }
        if let Ok(mut m) = self.memory.lock() {
            for b in &managed {
                m.nonces.insert(b.name.clone(), b.nonce.clone());
            }
        }

        self.observe_maintenance(&mut st).await?;
        Ok(st)
    }

    /// Maintenance: the flag files are what Apache's RewriteCond tests on every request.
    pub(super) async fn observe_maintenance(&self, st: &mut RouterState) -> Result<()> {
        let redirect_on = match &self.cfg.maintenance_flag {
            Some(f) => exists(f).await?,
            None => false,
        };
        let page_on = match &self.cfg.maintenance_page_flag {
            Some(f) => exists(f).await?,
            None => false,
        };
        if redirect_on {
            st.maintenance = Some(MaintenanceMode::Redirect {
                to: self.cfg.maintenance_to.clone().unwrap_or_default(),
            });
            if page_on {
                st.notes.push(
                    "both maintenance flags exist; the redirect comes first in the Apache config"
                        .into(),
                );
            }
            for p in &self.cfg.maintenance_peer_flags {
                if exists(p).await? {
                    st.notes.push(format!(
                        "the peer is in maintenance too ({} exists): the loop guard ({}) serves \
                         redirected requests from the peer's own backend",
                        p.display(),
                        REDIRECTED_HEADER
                    ));
                }
            }
        } else if page_on {
            st.maintenance = Some(MaintenanceMode::Page);
        }
        if st.maintenance.is_some()
            && let Some(note) = self.bypass_note().await
        {
            st.notes.push(note);
        }
        Ok(())
    }

    /// While maintenance is on: whether the bypass really reaches this server's own backend,
    /// tried on `maintenance_verify_url` with one request without the cookie (it must get
    /// the maintenance) and one with it (it must not). Never claimed untried.
    pub(super) async fn bypass_note(&self) -> Option<String> {
        let url = self.cfg.maintenance_verify_url.as_deref()?;
        let marker = |cookie: Option<String>| {
            let mut req = self.client.get(url);
            if let Some(c) = cookie {
                req = req.header(reqwest::header::COOKIE, c);
            }
            async move {
                let r = req.send().await.map_err(|e| crate::load::error_chain(&e))?;
                Ok::<_, String>(
                    r.headers()
                        .get(MAINTENANCE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                )
            }
        };
        let cookie = format!("{}=1", self.cfg.bypass_cookie);
        let (plain, bypass) = tokio::join!(marker(None), marker(Some(cookie.clone())));
        Some(match (plain, bypass) {
            (Ok(Some(_)), Ok(None)) => format!(
                "maintenance bypass: a request with the cookie `{cookie}` reached this \
                 server's own backend ({url} answered it without {MAINTENANCE_HEADER})"
            ),
            (Ok(Some(_)), Ok(Some(m))) => format!(
                "no maintenance bypass: a request with the cookie `{cookie}` got the \
                 maintenance too ({url} answered it with {MAINTENANCE_HEADER}: {m}); the \
                 Apache config's maintenance rule has no `RewriteCond %{{HTTP_COOKIE}}` for \
                 `{}` (see docs/apache.md)",
                self.cfg.bypass_cookie
            ),
            (Ok(None), _) => format!(
                "maintenance bypass not checked: {url} answered without {MAINTENANCE_HEADER}, \
                 so it is not under this maintenance"
            ),
            (Err(e), _) | (_, Err(e)) => {
                format!("maintenance bypass not checked: {url} did not answer ({e})")
            }
        })
    }

    /// The balancer with each member's busy count turned into requests in flight: Apache's
    /// count less what it left over (see `idle_after` and [`BusyTrack`]).
    pub(super) fn count_in_flight(&self, b: &Balancer) -> Balancer {
        let mut b = b.clone();
        let now = Instant::now();
        let Ok(mut m) = self.memory.lock() else {
            return b;
        };
        for w in &mut b.workers {
            let t = m
                .busy
                .entry((b.name.clone(), w.url.clone()))
                .or_insert_with(|| BusyTrack::new(&b.nonce, w, now));
            t.read(&b.nonce, w, now, self.cfg.idle_after);
            w.leftover = t.leftover;
            w.busy = w.busy.saturating_sub(t.leftover);
        }
        b
    }

    /// The slots whose members are in rotation in a balancer, sorted, each once.
    pub(super) fn slots_in_rotation(&self, b: &Balancer) -> Vec<String> {
        let mut slots: Vec<String> = b
            .workers
            .iter()
            .filter(|w| w.status.in_rotation())
            .filter_map(|w| self.owner(w).map(|o| o.slot))
            .collect();
        slots.sort();
        slots.dedup();
        slots
    }

    /// The slot a balancer sends to: the one whose members are in rotation.
    pub(super) fn in_rotation(&self, b: &Balancer) -> (Option<String>, Vec<String>) {
        let mut slots = self.slots_in_rotation(b);
        match slots.len() {
            0 => (
                None,
                vec![format!("balancer://{} has no member in rotation", b.name)],
            ),
            1 => (slots.pop(), vec![]),
            _ => (
                None,
                vec![format!(
                    "balancer://{} sends to several slots: {}",
                    b.name,
                    slots.join(", ")
                )],
            ),
        }
    }
}
