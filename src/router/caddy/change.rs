//! Changing what Caddy routes: live and preview, maintenance, drains.

use super::*;

impl Caddy {
    pub(super) async fn point(&self, which: Pointer, to: &str) -> Result<()> {
        let slot = self.slot(to)?.clone();
        match self.cfg.mode {
            Mode::File => {
                let config = self.recent_config().await?;
                if !self.has_file_route(&config, which.flag(), to) {
                    bail!(
                        "Caddy's config has no file-mode route for {}={to} under {}; switching \
                         the flag would route nothing. Load the routes from `file_mode_routes` \
                         (docs/caddy.md) first",
                        which.flag(),
                        self.flag_dir()?.display()
                    );
                }
                if which == Pointer::Live
                    && let Some(MaintenanceMode::Redirect { to: m }) = self.file_maintenance()?
                    && m == to
                {
                    bail!(
                        "maintenance sends live traffic to {to}; turn maintenance off before making {to} live"
                    );
                }
                self.set_flag(which.flag(), Some(to))?;
                // A split ends with the switch: the new live slot has it all.
                if which == Pointer::Live {
                    self.end_file_splits()?;
                }
                Ok(())
            }
            Mode::Api => {
                let id = self.id_for(which)?;
                let path = format!("/id/{id}/upstreams");
                let a = self.call_ok(&Call::get(&path)).await?;
                let tag = a.etag.clone().ok_or_else(|| {
                    eyre!("Caddy sent no ETag for {path}; cutover needs Caddy 2.6 or later")
                })?;
                let upstreams = a.json()?;
                let current = dials_of(&upstreams);
                let want = slot.addrs();
                // Already there (possibly with a node drained): nothing to change, and
                // rewriting the upstreams would undo the drain. A split is never "there".
                if self.split_in(&upstreams).is_none()
                    && self.slot_of(&current).is_some_and(|s| s.name == to)
                {
                    return Ok(());
                }
                let body = Value::Array(want.iter().map(|d| json!({"dial": d})).collect());
                self.call_ok(&Call::change(
                    hyper::Method::PATCH,
                    &path,
                    Some(&body),
                    &tag,
                ))
                .await?;
                let after = dials_of(&self.call_ok(&Call::get(&path)).await?.json()?);
                if after != want {
                    bail!(
                        "Caddy accepted the change but its config now proxies {path} to {after:?}, not {want:?}"
                    );
                }
                Ok(())
            }
        }
    }

    pub(super) fn file_maintenance(&self) -> Result<Option<MaintenanceMode>> {
        Ok(self.flags(MAINT)?.first().map(|v| {
            if v == PAGE {
                MaintenanceMode::Page
            } else {
                MaintenanceMode::Redirect { to: v.clone() }
            }
        }))
    }

    pub(super) async fn set_maintenance(&self, on: bool, mode: &MaintenanceMode) -> Result<()> {
        if on {
            let (config, _) = self.get_config().await?;
            self.refuse_during_split(&config, "maintenance")?;
        }
        if on && let MaintenanceMode::Redirect { to } = mode {
            self.slot(to)?;
        }
        match self.cfg.mode {
            Mode::File => {
                let live = self.flags(Pointer::Live.flag())?;
                if on
                    && let MaintenanceMode::Redirect { to } = mode
                    && live.first() == Some(to)
                {
                    bail!("maintenance cannot redirect {to} to itself; pick another slot");
                }
                let value = match (on, mode) {
                    (false, _) => None,
                    (true, MaintenanceMode::Page) => Some(PAGE),
                    (true, MaintenanceMode::Redirect { to }) => Some(to.as_str()),
                };
                if let Some(v) = value {
                    let (config, _) = self.get_config().await?;
                    if !self.has_file_route(&config, MAINT, v) {
                        bail!(
                            "Caddy's config has no file-mode route for {MAINT}={v} under {}; \
                             load the routes from `file_mode_routes` (docs/caddy.md) first",
                            self.flag_dir()?.display()
                        );
                    }
                }
                self.set_flag(MAINT, value)
            }
            Mode::Api => {
                let live_id = self.id_for(Pointer::Live)?.to_string();
                let mid = self.maintenance_id();
                let (config, tag) = self.get_config().await?;
                let live_path = find_id(&config, &live_id).ok_or_else(|| {
                    eyre!("Caddy's config has no object with @id `{live_id}` (the live_id); check cutover's config against Caddy's")
                })?;
                let live_handler = get_path(&config, &live_path)
                    .cloned()
                    .unwrap_or(Value::Null);
                if on
                    && let MaintenanceMode::Redirect { to } = mode
                    && self
                        .slot_of(&dials_of(&live_handler["upstreams"]))
                        .map(|s| s.name.as_str())
                        == Some(to)
                {
                    bail!("maintenance cannot redirect {to} to itself; pick another slot");
                }
                let existing = find_id(&config, &mid);
                let mut handler = match mode {
                    MaintenanceMode::Page => self.page_handler()?,
                    MaintenanceMode::Redirect { to } => {
                        let mut h = self.proxy_handler(self.slot(to)?);
                        if let Some(t) = live_handler.get("transport") {
                            h["transport"] = t.clone();
                        }
                        h
                    }
                };
                handler["@id"] = json!(mid);
                let change = match (on, existing) {
                    (true, Some(p)) => {
                        Some((hyper::Method::PATCH, config_path(&p), Some(&handler)))
                    }
                    // Inserted before the live handler in the same handle list: a
                    // static_response or reverse_proxy answers, so the live one is not reached.
                    (true, None) => {
                        Some((hyper::Method::PUT, config_path(&live_path), Some(&handler)))
                    }
                    (false, Some(_)) => Some((hyper::Method::DELETE, format!("/id/{mid}"), None)),
                    (false, None) => None,
                };
                if let Some((method, path, body)) = change {
                    self.call_ok(&Call::change(method, &path, body, &tag))
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// Remove (drain) or add back (undrain) servers of a slot in every reverse_proxy handler
    /// that serves it, in one config change guarded by the config's ETag.
    pub(super) async fn set_drained(&self, target: &Target, drain: bool) -> Result<()> {
        let slot = self.slot(&target.slot)?.clone();
        let dials: Vec<String> = slot
            .servers_of(target)?
            .into_iter()
            .map(|s| s.addr.clone())
            .collect();
        let (mut config, tag) = self.get_config().await?;
        self.refuse_during_split(&config, if drain { "a drain" } else { "an undrain" })?;
        let handlers = self.slot_handlers(&config, &slot);
        if handlers.is_empty() {
            bail!(
                "no reverse_proxy handler in Caddy's config routes to {} now, so there is \
                 nothing to {}; Caddy has no drain state of its own to record it in",
                slot.name,
                if drain { "drain" } else { "undrain" }
            );
        }
        let mut changed = false;
        for path in &handlers {
            let Some(h) = get_path_mut(&mut config, path) else {
                continue;
            };
            let current = dials_of(&h["upstreams"]);
            let new: Vec<String> = if drain {
                current
                    .iter()
                    .filter(|d| !dials.contains(d))
                    .cloned()
                    .collect()
            } else {
                slot.addrs()
                    .into_iter()
                    .filter(|d| current.contains(d) || dials.contains(d))
                    .collect()
            };
            if new.is_empty() {
                bail!(
                    "refusing to remove the last upstream of a route to {}: Caddy has no drain \
                     state, and the route would have no backend. Drain one node at a time, or \
                     move the route to another slot first",
                    slot.name
                );
            }
            if new != current {
                h["upstreams"] = Value::Array(new.iter().map(|d| json!({"dial": d})).collect());
                changed = true;
            }
        }
        if changed {
            self.call_ok(&Call::change(
                hyper::Method::POST,
                "/config/",
                Some(&config),
                &tag,
            ))
            .await?;
        }
        Ok(())
    }
}
