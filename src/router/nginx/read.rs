//! Reading nginx's routing back from the files and links it serves from.

use super::*;

impl Nginx {
    pub(super) fn read_disk(&self) -> Disk {
        let mut disk = Disk {
            canon_dir: std::fs::canonicalize(self.dir()).unwrap_or_else(|_| self.dir().into()),
            ..Disk::default()
        };
        let up_path = self.upstreams_path();
        let upstreams_text = std::fs::read_to_string(&up_path);
        match &upstreams_text {
            Ok(text) => {
                let parsed = parse_upstreams(text);
                for slot in &self.slots {
                    let uname = self.upstream_name(&slot.name);
                    let Some(lines) = parsed.get(&uname) else {
                        disk.notes.push(format!(
                            "{} has no upstream `{uname}` for slot {}; the next change writes it",
                            up_path.display(),
                            slot.name
                        ));
                        continue;
                    };
                    disk.present.insert(slot.name.clone());
                    for l in lines {
                        if !slot.servers.iter().any(|s| s.addr == l.addr) {
                            disk.notes.push(format!(
                                "upstream `{uname}` in {} has server {} that slot {} does not list \
                                 (changed by hand?); the next change removes it",
                                up_path.display(),
                                l.addr,
                                slot.name
                            ));
                        }
                        if l.down {
                            disk.down.insert((slot.name.clone(), l.addr.clone()));
                        }
                    }
                    for s in &slot.servers {
                        if !lines.iter().any(|l| l.addr == s.addr) {
                            disk.notes.push(format!(
                                "upstream `{uname}` lacks server {} of slot {}; the next change adds it",
                                s.addr, slot.name
                            ));
                        }
                    }
                }
                if self.cfg.method == Method::Include {
                    disk.split = self.parse_split(text);
                }
                if self
                    .render_upstreams(&disk.down, &disk.canon_dir, disk.split.as_ref())
                    .ok()
                    .as_ref()
                    != Some(text)
                {
                    disk.notes.push(format!(
                        "{} differs from what cutover writes (changed by hand, or the slots \
                         changed); the next change rewrites it",
                        up_path.display()
                    ));
                }
            }
            Err(e) => disk.problems.push(format!(
                "cannot read {}: {e}; nginx is not routed by cutover's files yet: run `cutover \
                 setup {} --live SLOT` and include them in the nginx config (docs/nginx.md)",
                up_path.display(),
                self.env
            )),
        }
        match self.cfg.method {
            Method::Realpath => {
                self.read_realpath(&mut disk);
                self.read_buckets(&mut disk);
            }
            Method::Symlink => self.read_symlink(&mut disk),
            Method::Include => {
                self.read_include(&mut disk);
                self.check_split(&mut disk);
            }
        }
        disk
    }

    pub(super) fn read_realpath(&self, disk: &mut Disk) {
        for p in [Pointer::Live, Pointer::Next] {
            let conf = self.dir().join(p.conf_name());
            match (
                std::fs::read_to_string(&conf),
                self.render_realpath_include(p),
            ) {
                (Ok(text), Ok(want)) if text != want => disk.notes.push(format!(
                    "{} differs from what cutover writes (changed by hand?); the next change \
                     rewrites it",
                    conf.display()
                )),
                (Err(e), _) => disk
                    .notes
                    .push(format!("cannot read {}: {e}", conf.display())),
                _ => {}
            }
            let link = self.link(p);
            let Some((target, rel)) = self.read_pointer(p, disk) else {
                continue;
            };
            if !link.exists() {
                disk.notes.push(format!(
                    "link {} points to {}, which does not exist: nginx answers 500 on this route",
                    link.display(),
                    target.display()
                ));
            }
            let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
            let known = |n: &str| self.slots.iter().any(|s| s.name == n);
            match (p, parts.as_slice()) {
                (Pointer::Live, [slot]) if known(slot) => disk.live = Some(slot.to_string()),
                (Pointer::Next, [slot]) if known(slot) => disk.preview = Some(slot.to_string()),
                (Pointer::Live, [m, live, what]) if *m == MAINT && known(live) => {
                    disk.live = Some(live.to_string());
                    disk.maintenance = if *what == PAGE {
                        Some(MaintenanceMode::Page)
                    } else if known(what) {
                        Some(MaintenanceMode::Redirect {
                            to: what.to_string(),
                        })
                    } else {
                        disk.notes.push(format!(
                            "link {} points to {rel}, which is not a maintenance state cutover writes",
                            link.display()
                        ));
                        None
                    };
                }
                _ => disk.notes.push(format!(
                    "link {} points to {} (changed by hand?): that is not a slot of {}",
                    link.display(),
                    target.display(),
                    self.env
                )),
            }
        }
    }

    /// Where the `which` link points: as read, and relative to `dir` (links cutover writes
    /// are relative). A missing next link is no news (there may be no preview); any other
    /// link that cannot be read is a note.
    pub(super) fn read_pointer(
        &self,
        which: Pointer,
        disk: &mut Disk,
    ) -> Option<(PathBuf, String)> {
        let link = self.link(which);
        let target = match std::fs::read_link(&link) {
            Ok(t) => t,
            Err(e) => {
                if which == Pointer::Live || e.kind() != std::io::ErrorKind::NotFound {
                    disk.notes
                        .push(format!("cannot read link {}: {e}", link.display()));
                }
                return None;
            }
        };
        let rel = target
            .strip_prefix(self.dir())
            .or_else(|_| target.strip_prefix(&disk.canon_dir))
            .unwrap_or(&target)
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        Some((target, rel))
    }

    pub(super) fn read_symlink(&self, disk: &mut Disk) {
        for p in [Pointer::Live, Pointer::Next] {
            let link = self.link(p);
            let Some((_, rel)) = self.read_pointer(p, disk) else {
                continue;
            };
            let file = link.join("route.conf");
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    disk.notes.push(format!(
                        "link {} points to {rel}, but {} cannot be read ({e}): nginx -t would fail",
                        link.display(),
                        file.display()
                    ));
                    continue;
                }
            };
            let route = self.read_route(&file, &text, &mut disk.notes);
            if let Some(Route::Slot(s)) = &route
                && *s != rel
            {
                disk.notes.push(format!(
                    "link {} points to directory {rel}, whose route.conf routes to {s} (changed by hand?)",
                    link.display()
                ));
            }
            self.set_route(disk, p, route);
        }
    }

    pub(super) fn read_include(&self, disk: &mut Disk) {
        for p in [Pointer::Live, Pointer::Next] {
            let file = self.dir().join(p.conf_name());
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let route = self.read_route(&file, &text, &mut disk.notes);
                    self.set_route(disk, p, route);
                }
                Err(e) => {
                    if p == Pointer::Live || e.kind() != std::io::ErrorKind::NotFound {
                        disk.notes
                            .push(format!("cannot read {}: {e}", file.display()));
                    }
                }
            }
        }
    }

    pub(super) fn set_route(&self, disk: &mut Disk, p: Pointer, route: Option<Route>) {
        match (p, route) {
            (Pointer::Live, Some(Route::Slot(s))) => disk.live = Some(s),
            (Pointer::Live, Some(Route::Maintenance { live, mode })) => {
                disk.live = Some(live);
                disk.maintenance = Some(mode);
            }
            (Pointer::Next, Some(Route::Slot(s))) => disk.preview = Some(s),
            (Pointer::Next, Some(Route::Maintenance { live, .. })) => disk.preview = Some(live),
            (_, None) => {}
        }
    }

    /// What a route include (symlink and include methods) does: the marker cutover writes
    /// says what it meant; the directives say what nginx does. Where they disagree, the
    /// directives win and a note says so.
    pub(super) fn read_route(
        &self,
        file: &Path,
        text: &str,
        notes: &mut Vec<String>,
    ) -> Option<Route> {
        let marker = text
            .lines()
            .find_map(|l| l.strip_prefix("# cutover:"))
            .map(|m| {
                m.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        let meant = if let Some(s) = marker.get("route") {
            Some(Route::Slot(s.clone()))
        } else {
            match (
                marker.get("maintenance").map(String::as_str),
                marker.get("live"),
            ) {
                (Some("page"), Some(live)) => Some(Route::Maintenance {
                    live: live.clone(),
                    mode: MaintenanceMode::Page,
                }),
                (Some("redirect"), Some(live)) => marker.get("to").map(|to| Route::Maintenance {
                    live: live.clone(),
                    mode: MaintenanceMode::Redirect { to: to.clone() },
                }),
                _ => None,
            }
        };
        let expected = match &meant {
            Some(Route::Slot(s)) if marker.get("split").is_some_and(|v| v == "on") => {
                self.render_split_route(s).ok()
            }
            Some(Route::Slot(s)) => self.render_route(s).ok(),
            Some(Route::Maintenance { live, mode }) => self.render_maintenance(live, mode).ok(),
            None => None,
        };
        if expected.as_deref() == Some(text) {
            return meant;
        }
        // Hand-edited or foreign: read the directives.
        let tokens = tokenize(text);
        let proxied = tokens
            .windows(2)
            .find(|w| w[0] == "proxy_pass")
            .map(|w| w[1].clone());
        let returns_503 = tokens.windows(2).any(|w| w[0] == "return" && w[1] == "503");
        let by_upstream = |url: &str| {
            let host = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
            self.slots
                .iter()
                .find(|s| {
                    host == self.upstream_name(&s.name) || s.servers.iter().any(|v| v.addr == host)
                })
                .map(|s| s.name.clone())
        };
        let actual = match (&proxied, returns_503) {
            (_, true) => Some(Route::Maintenance {
                live: match &meant {
                    Some(Route::Maintenance { live, .. }) => live.clone(),
                    _ => String::new(),
                },
                mode: MaintenanceMode::Page,
            }),
            (Some(url), false) => match by_upstream(url) {
                Some(slot) => match &meant {
                    Some(Route::Maintenance { live, .. }) => Some(Route::Maintenance {
                        live: live.clone(),
                        mode: MaintenanceMode::Redirect { to: slot },
                    }),
                    _ => Some(Route::Slot(slot)),
                },
                None => {
                    notes.push(format!(
                        "{} proxies to {url}, which is no slot of {} (changed by hand?)",
                        file.display(),
                        self.env
                    ));
                    return None;
                }
            },
            (None, false) => {
                notes.push(format!(
                    "{} neither proxies to a slot nor answers 503 (changed by hand?)",
                    file.display()
                ));
                return None;
            }
        };
        notes.push(format!(
            "{} was changed by hand: it is not what cutover writes{}; cutover reports what \
             its directives do",
            file.display(),
            match &meant {
                Some(Route::Slot(s)) => format!(" for route={s}"),
                Some(Route::Maintenance { live, .. }) => format!(" for maintenance of {live}"),
                None => String::new(),
            }
        ));
        actual
    }

    // --- changing -----------------------------------------------------------------------
}
