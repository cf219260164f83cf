//! The proxy's state file: what it starts from, loads, and saves after each change.

use super::*;

impl Shared {
    pub(super) fn initial(&self, cfg: &embedded::Config) -> Saved {
        let live = cfg
            .initial_live
            .clone()
            .unwrap_or_else(|| self.slots[0].name.clone());
        let preview = cfg.initial_preview.clone().or_else(|| {
            self.slots
                .iter()
                .find(|s| s.name != live)
                .map(|s| s.name.clone())
        });
        Saved {
            environment: self.env.clone(),
            live,
            preview,
            drained: Vec::new(),
            maintenance: None,
            canary: None,
        }
    }

    /// Read the state file, keeping what still fits the config; returns warnings as notes.
    pub(super) fn load(&self, initial: Saved) -> Result<(Saved, Vec<String>)> {
        let path = &self.state_file;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((initial, vec![])),
            Err(e) => {
                return Err(e).wrap_err_with(|| {
                    format!(
                        "cannot read the proxy's state file {}; fix its permissions or set \
                         `state_file` to another path",
                        path.display()
                    )
                });
            }
        };
        let loaded: Saved = serde_json::from_str(&text).wrap_err_with(|| {
            format!(
                "the proxy's state file {} is not valid; fix it, or delete it to start from \
                 initial_live / initial_preview",
                path.display()
            )
        })?;
        let mut notes = Vec::new();
        let mut warn = |m: String| {
            tracing::warn!(env = %self.env, "{m}");
            notes.push(m);
        };
        let from = path.display();
        let mut s = initial.clone();
        if self.index(&loaded.live).is_some() {
            s.live = loaded.live;
        } else {
            warn(format!(
                "state file {from}: live slot `{}` is no longer in the config; ignored, `{}` is live",
                loaded.live, s.live
            ));
        }
        match &loaded.preview {
            None => s.preview = None,
            Some(p) if self.index(p).is_some() => s.preview = Some(p.clone()),
            Some(p) => warn(format!(
                "state file {from}: preview slot `{p}` is no longer in the config; ignored"
            )),
        }
        for d in loaded.drained {
            let Some(i) = self.index(&d.slot) else {
                warn(format!(
                    "state file {from}: drained slot `{}` is no longer in the config; ignored",
                    d.slot
                ));
                continue;
            };
            let node_known = match &d.node {
                None => true,
                Some(n) => {
                    self.slots[i].has_nodes && self.slots[i].nodes.iter().any(|x| &x.name == n)
                }
            };
            if !node_known {
                warn(format!(
                    "state file {from}: drained node `{}/{}` is no longer in the config; ignored",
                    d.slot,
                    d.node.as_deref().unwrap_or_default()
                ));
                continue;
            }
            let serving = d.slot == s.live || s.preview.as_deref() == Some(&d.slot);
            if d.node.is_none() && serving {
                warn(format!(
                    "state file {from}: slot `{}` was drained but is live or preview; it serves",
                    d.slot
                ));
                continue;
            }
            if !s.drained.contains(&d) {
                s.drained.push(d);
            }
        }
        match loaded.maintenance {
            Some(MaintenanceMode::Redirect { to }) => {
                let drained = s.drained.iter().any(|d| d.slot == to && d.node.is_none());
                if self.index(&to).is_none() || to == s.live || drained {
                    warn(format!(
                        "state file {from}: maintenance redirect to `{to}` no longer fits the \
                         config; maintenance is off"
                    ));
                } else {
                    s.maintenance = Some(MaintenanceMode::Redirect { to });
                }
            }
            m => s.maintenance = m,
        }
        if let Some(c) = loaded.canary {
            let fits = c.slot != s.live
                && (1..=100).contains(&c.percent)
                && self.index(&c.slot).is_some()
                && !s
                    .drained
                    .iter()
                    .any(|d| d.slot == c.slot && d.node.is_none());
            if fits {
                s.canary = Some(c);
            } else {
                warn(format!(
                    "state file {from}: canary `{}` at {} % no longer fits the config; all the \
                     live traffic goes to `{}`",
                    c.slot, c.percent, s.live
                ));
            }
        }
        Ok((s, notes))
    }

    /// Write the state file atomically (a temp file in the same directory, then rename).
    /// Write `s` to the state file (a temporary file renamed over it), not yet flushed: see
    /// [`Self::sync_saved`].
    pub(super) fn save(&self, s: &Saved) -> Result<(), AdminError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            AdminError::new(
                500,
                format!(
                    "cannot {what} the state file {}: {e}; nothing was changed (fix the \
                     directory or set `state_file`)",
                    self.state_file.display()
                ),
            )
        };
        let dir = self
            .state_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::logs::create_private_dir(dir).map_err(|e| fail("create the directory of", &e))?;
        let json = serde_json::to_vec_pretty(s).map_err(|e| fail("encode", &e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail("write", &e))?;
        tmp.write_all(&json)
            .and_then(|_| tmp.write_all(b"\n"))
            .map_err(|e| fail("write", &e))?;
        tmp.persist(&self.state_file)
            .map_err(|e| fail("replace", &e.error))?;
        Ok(())
    }

    /// Flush what [`Self::save`] wrote to the disk (the file, then its directory's entry).
    pub(super) fn sync_saved(&self) -> Result<(), AdminError> {
        let dir = self
            .state_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(&self.state_file)
            .and_then(|f| f.sync_all())
            .and_then(|_| std::fs::File::open(dir)?.sync_all())
            .map_err(|e| {
                AdminError::new(
                    500,
                    format!(
                        "cannot flush the state file {} to the disk: {e}",
                        self.state_file.display()
                    ),
                )
            })
    }

    /// The routing as it stands, in the state file's form.
    pub(super) fn snapshot(&self) -> Saved {
        let mut drained = Vec::new();
        for s in &self.slots {
            if s.draining.load(Ordering::SeqCst) {
                drained.push(Drained {
                    slot: s.name.clone(),
                    node: None,
                });
            }
            if s.has_nodes {
                for n in &s.nodes {
                    if n.draining.load(Ordering::SeqCst) {
                        drained.push(Drained {
                            slot: s.name.clone(),
                            node: Some(n.name.clone()),
                        });
                    }
                }
            }
        }
        let name = |i: usize| self.slots.get(i).map(|s| s.name.clone());
        Saved {
            environment: self.env.clone(),
            live: name(self.live.load(Ordering::SeqCst)).unwrap_or_default(),
            preview: name(self.preview.load(Ordering::SeqCst)),
            drained,
            maintenance: self.maintenance(),
            canary: self.canary().and_then(|(i, percent)| {
                Some(Canary {
                    slot: self.slots.get(i)?.name.clone(),
                    percent,
                })
            }),
        }
    }
}
