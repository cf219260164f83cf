//! Reading `mode = "map"` back: the map keys, the backends and their servers, drift.

use super::*;

impl Haproxy {
    pub(in crate::router::haproxy) async fn observe_map(
        &self,
        m: &MapSetup,
    ) -> Result<RouterState> {
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
        st.weights = m.split(&entries, st.live.as_deref());
        let mut managed_servers = Vec::new();
        for (slot, backend) in &m.backends {
            let Some(be) = find_stat(&stats, backend, "BACKEND") else {
                st.problems.push(format!(
                    "backend {backend} of slot `{slot}` is not in HAProxy (its backends: {}): a \
                     swap to `{slot}` will be refused; fix `backends` in cutover's config or \
                     add the backend to haproxy.cfg",
                    backend_list(&stats)
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
                        sessions: s.counts.sessions,
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
                    check: Some(match servers.as_slice() {
                        [one] => one.check_text(),
                        _ => be.status.clone(),
                    }),
                    checks_up: crate::model::all_checks_up(servers.iter().map(|s| s.checks_up())),
                    nodes,
                    ..be.counts.route()
                },
            );
        }
        if let Some(mb) = &m.maintenance_backend
            && find_stat(&stats, mb, "BACKEND").is_none()
        {
            st.problems.push(format!(
                "`maintenance_backend` {mb} is not in HAProxy (its backends: {}): maintenance on \
                 will be refused",
                backend_list(&stats)
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
}
