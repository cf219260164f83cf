//! The files cutover writes for nginx: upstreams, routes, maintenance pages, pointers.

use super::*;

impl Nginx {
    pub(super) fn header(&self, what: &str) -> String {
        format!(
            "# Written by cutover: {what} of environment `{}` (nginx router `{}`, method {}).\n\
             # cutover rewrites this file; a hand edit shows as drift and is replaced by the next change.\n",
            self.env,
            self.name,
            self.cfg.method.name()
        )
    }

    pub(super) fn render_upstreams(
        &self,
        down: &BTreeSet<(String, String)>,
        canon_dir: &Path,
        split: Option<&Weights>,
    ) -> Result<String> {
        let mut s = self.header("the upstreams");
        for slot in &self.slots {
            s.push_str(&format!("upstream {} {{\n", self.upstream_name(&slot.name)));
            for srv in &slot.servers {
                let is_down = down.contains(&(slot.name.clone(), srv.addr.clone()));
                s.push_str(&format!(
                    "    server {}{};{}\n",
                    srv.addr,
                    if is_down { " down" } else { "" },
                    if slot.has_nodes {
                        format!("  # node {}", srv.node)
                    } else {
                        String::new()
                    }
                ));
            }
            s.push_str("}\n");
        }
        if self.cfg.method == Method::Realpath {
            // Regex keys: a hash of long paths would need map_hash_bucket_size tuning.
            let d = regex_escape(&canon_dir.to_string_lossy());
            s.push_str(&format!(
                "# nginx resolves the live/next links on every request: the real path of the\n\
                 # location's root names the route.\nmap $realpath_root ${} {{\n    default \"\";\n",
                self.route_var
            ));
            for slot in &self.slots {
                s.push_str(&format!(
                    "    \"~^{d}/{}$\" \"{}\";\n",
                    regex_escape(&slot.name),
                    self.upstream_url(slot)
                ));
            }
            for live in &self.slots {
                let l = regex_escape(&live.name);
                s.push_str(&format!(
                    "    \"~^{d}/{MAINT}/{l}/{PAGE}$\" \"maintenance\";\n"
                ));
                for to in self.slots.iter().filter(|t| t.name != live.name) {
                    s.push_str(&format!(
                        "    \"~^{d}/{MAINT}/{l}/{}$\" \"{}\";\n",
                        regex_escape(&to.name),
                        self.upstream_url(to)
                    ));
                }
            }
            s.push_str("}\n");
            s.push_str(&self.render_buckets(&d));
        }
        if let Some(w) = split.filter(|_| self.cfg.method == Method::Include) {
            s.push_str(&self.render_split(w)?);
        }
        Ok(s)
    }

    pub(super) fn page_text(&self) -> Result<String> {
        let page = maintenance_html(self.cfg.maintenance_page.as_deref())?;
        // An nginx string: `$` would start a variable, so it goes in as an HTML entity.
        Ok(page
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "&#36;"))
    }

    pub(super) fn render_page_answer(&self, indent: &str) -> Result<String> {
        Ok(format!(
            "{indent}add_header Retry-After {} always;\n{indent}return 503 \"{}\";\n",
            self.cfg.retry_after,
            self.page_text()?
        ))
    }

    /// The route include of the symlink and include methods for a plain slot.
    pub(super) fn render_route(&self, slot: &str) -> Result<String> {
        let info = self.slot(slot)?;
        Ok(format!(
            "# cutover: route={slot}\n{}proxy_pass {};\n",
            self.header("a route"),
            self.upstream_url(info)
        ))
    }

    pub(super) fn render_maintenance(&self, live: &str, mode: &MaintenanceMode) -> Result<String> {
        let head = self.header("the live route");
        Ok(match mode {
            MaintenanceMode::Page => format!(
                "# cutover: maintenance=page live={live}\n{head}default_type text/html;\n{}",
                self.render_page_answer("")?
            ),
            MaintenanceMode::Redirect { to } => format!(
                "# cutover: maintenance=redirect to={to} live={live}\n{head}proxy_pass {};\n",
                self.upstream_url(self.slot(to)?)
            ),
        })
    }

    /// The static location include of the realpath method: the live route resolves a bucket
    /// link (or the cookie's sticky link) that follows the live link, the preview route the
    /// `next` link.
    pub(super) fn render_realpath_include(&self, which: Pointer) -> Result<String> {
        let mut s = self.header(match which {
            Pointer::Live => "the live route",
            Pointer::Next => "the preview route",
        });
        match which {
            Pointer::Live => s.push_str(&format!(
                "{}default_type text/html;\nif (${} = maintenance) {{\n{}}}\n{}",
                self.bucket_root(),
                self.route_var,
                self.render_page_answer("    ")?,
                self.bucket_cookie()
            )),
            Pointer::Next => s.push_str(&format!(
                "# The `{}` link names the slot; switching it needs no reload.\nroot {};\n",
                which.link_name(),
                self.link(which).display()
            )),
        }
        s.push_str(&format!("proxy_pass ${};\n", self.route_var));
        Ok(s)
    }

    /// Everything that must be in place whatever the pointers say: the upstreams (keeping the
    /// servers marked down as they are), the static includes and the slot directories; for
    /// the realpath method also the bucket and sticky links as `disk` read them (links nginx
    /// must find before it loads the includes that name them).
    pub(super) fn base_changes(
        &self,
        disk: &Disk,
        down: &BTreeSet<(String, String)>,
    ) -> Result<Vec<Change>> {
        let mut v = vec![Change::File(
            self.upstreams_path(),
            self.render_upstreams(down, &disk.canon_dir, disk.split.as_ref())?,
        )];
        match self.cfg.method {
            Method::Realpath => {
                for s in &self.slots {
                    v.push(Change::Dir(self.dir().join(&s.name)));
                    v.push(Change::Dir(self.dir().join(MAINT).join(&s.name).join(PAGE)));
                    for t in self.slots.iter().filter(|t| t.name != s.name) {
                        v.push(Change::Dir(
                            self.dir().join(MAINT).join(&s.name).join(&t.name),
                        ));
                    }
                }
                v.extend(self.bucket_dirs());
                v.extend(self.bucket_changes(disk.split.as_ref()));
                for p in [Pointer::Live, Pointer::Next] {
                    v.push(Change::File(
                        self.dir().join(p.conf_name()),
                        self.render_realpath_include(p)?,
                    ));
                }
            }
            Method::Symlink => {
                for s in &self.slots {
                    v.push(Change::Dir(self.dir().join(&s.name)));
                    v.push(Change::File(
                        self.dir().join(&s.name).join("route.conf"),
                        self.render_route(&s.name)?,
                    ));
                }
                v.push(Change::Dir(self.dir().join(MAINT)));
            }
            Method::Include => {}
        }
        Ok(v)
    }

    /// The changes that point `which` at `slot` (for live: under `maintenance` if on).
    pub(super) fn pointer_changes(
        &self,
        which: Pointer,
        slot: &str,
        maintenance: Option<&MaintenanceMode>,
    ) -> Result<Vec<Change>> {
        let maintenance = if which == Pointer::Live {
            maintenance
        } else {
            None
        };
        Ok(match self.cfg.method {
            Method::Realpath => vec![Change::Link(
                self.link(which),
                Self::realpath_target(slot, maintenance),
            )],
            Method::Symlink => match maintenance {
                None => vec![Change::Link(self.link(which), slot.to_string())],
                Some(m) => vec![
                    Change::File(
                        self.dir().join(MAINT).join("route.conf"),
                        self.render_maintenance(slot, m)?,
                    ),
                    Change::Link(self.link(which), MAINT.to_string()),
                ],
            },
            Method::Include => vec![Change::File(
                self.dir().join(which.conf_name()),
                match maintenance {
                    None => self.render_route(slot)?,
                    Some(m) => self.render_maintenance(slot, m)?,
                },
            )],
        })
    }
}
