//! Maintenance page and redirect, with flag files, checked after each change.

use super::*;

impl Apache {
    pub(super) async fn set_maintenance(&self, on: bool, mode: &MaintenanceMode) -> Result<()> {
        let redirect = self.cfg.maintenance_flag.as_deref();
        let page = self.cfg.maintenance_page_flag.as_deref();
        if !on {
            for f in redirect.iter().chain(page.iter()) {
                remove_flag(f).await?;
            }
            return self.verify_maintenance(None).await;
        }
        let (flag, other, want) = match mode {
            MaintenanceMode::Redirect { to } => {
                let Some(flag) = redirect else {
                    bail!(
                        "router `{}` has no `maintenance_flag`: add it (and the RewriteCond \
                         from docs/apache.md) to redirect maintenance traffic",
                        self.name
                    );
                };
                let configured = self.cfg.maintenance_to.as_deref().unwrap_or_default();
                if to != configured {
                    bail!(
                        "this Apache's maintenance redirect goes to `{configured}` \
                         (maintenance_to), not `{to}`; change the redirect balancer in the \
                         Apache config and `maintenance_to` together"
                    );
                }
                for p in &self.cfg.maintenance_peer_flags {
                    if exists(p).await? {
                        bail!(
                            "refusing to redirect: the server this one redirects to is itself in \
                             maintenance ({} exists), so no node would be left serving. Turn \
                             its maintenance off first",
                            p.display()
                        );
                    }
                }
                (flag, page, "redirect")
            }
            MaintenanceMode::Page => {
                let Some(flag) = page else {
                    bail!(
                        "router `{}` has no `maintenance_page_flag`: add it (and the RewriteCond \
                         from docs/apache.md) to serve the maintenance page",
                        self.name
                    );
                };
                (flag, redirect, "page")
            }
        };
        let had_other = match other {
            Some(o) => exists(o).await?,
            None => false,
        };
        let note = format!(
            "cutover router `{}`: maintenance {want} since {}\n",
            self.name,
            crate::timefmt::rfc3339(SystemTime::now())
        );
        create_flag(flag, &note).await?;
        if let Some(o) = other {
            remove_flag(o).await?;
        }
        if let Err(e) = self.verify_maintenance(Some(want)).await {
            let _ = remove_flag(flag).await;
            if let (Some(o), true) = (other, had_other) {
                let _ = create_flag(o, &note).await;
            }
            return Err(e.wrap_err(format!(
                "maintenance {want} did not take effect; {} was removed again",
                flag.display()
            )));
        }
        Ok(())
    }

    /// When `maintenance_verify_url` is set, wait (up to `timeout`) until its answers carry
    /// `X-Cutover-Maintenance: WANT` (or no such header).
    pub(super) async fn verify_maintenance(&self, want: Option<&str>) -> Result<()> {
        let Some(url) = &self.cfg.maintenance_verify_url else {
            return Ok(());
        };
        let deadline = Instant::now() + self.cfg.timeout;
        let mut last;
        loop {
            match self.client.get(url).send().await {
                Ok(r) => {
                    let got = r
                        .headers()
                        .get(MAINTENANCE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    if got.as_deref() == want {
                        return Ok(());
                    }
                    last = format!(
                        "HTTP {} with {MAINTENANCE_HEADER}: {}",
                        r.status().as_u16(),
                        got.as_deref().unwrap_or("(none)")
                    );
                }
                Err(e) => last = crate::load::error_chain(&e),
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "{url} answered {last}, not {}, within {}: the Apache config does not test this \
             flag file (see docs/apache.md for the RewriteCond), or Apache cannot see the file",
            match want {
                Some(w) => format!("{MAINTENANCE_HEADER}: {w}"),
                None => format!("without {MAINTENANCE_HEADER}"),
            },
            crate::timefmt::millis(self.cfg.timeout)
        )
    }
}
