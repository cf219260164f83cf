//! Applying a change: `nginx -t`, a checked reload, and an exact restore when it fails.

use super::*;

impl Nginx {
    /// Apply changes (skipping those already in place). With `reload`, run the test command
    /// and reload, and check the reload took; on any failure put every touched path back
    /// exactly as it was.
    pub(super) async fn apply(&self, changes: Vec<Change>, reload: bool) -> Result<()> {
        let changes: Vec<Change> = changes.into_iter().filter(|c| !c.in_place()).collect();
        if changes.is_empty() {
            return Ok(());
        }
        let mut done: Vec<(Change, Entry)> = Vec::new();
        for c in changes {
            let before = Entry::read(c.path());
            if let Err(e) = c.perform() {
                let restored = restore(&done);
                return Err(e).wrap_err_with(|| {
                    format!("cutover could not write its nginx files{restored}")
                });
            }
            done.push((c, before));
        }
        if reload && let Err(e) = self.test_and_reload().await {
            let restored = restore(&done);
            return Err(e.wrap_err(format!(
                "the change was not applied{restored}; nginx still serves what it served before"
            )));
        }
        Ok(())
    }

    pub(super) fn test_argv(&self) -> Vec<String> {
        self.cfg.test_command.clone().unwrap_or_else(|| {
            let mut v = vec![self.cfg.nginx.clone()];
            v.extend(self.cfg.nginx_args.iter().cloned());
            v.push("-t".into());
            v
        })
    }

    pub(super) fn reload_argv(&self) -> Vec<String> {
        self.cfg.reload_command.clone().unwrap_or_else(|| {
            let mut v = vec![self.cfg.nginx.clone()];
            v.extend(self.cfg.nginx_args.iter().cloned());
            v.extend(["-s".to_string(), "reload".to_string()]);
            v
        })
    }

    pub(super) async fn run(&self, argv: &[String]) -> Result<CmdOutput> {
        let shown = argv.join(" ");
        let Some((prog, args)) = argv.split_first() else {
            bail!("an empty command is configured");
        };
        let child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(self.cfg.timeout, child)
            .await
            .map_err(|_| {
                eyre!(
                    "`{shown}` did not finish within {}; it was stopped",
                    humantime::format_duration(self.cfg.timeout)
                )
            })?
            .wrap_err_with(|| {
                format!("cannot run `{shown}`; check the `nginx` path or the command")
            })?;
        let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.trim().is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(stdout.trim());
        }
        Ok(CmdOutput {
            shown,
            ok: out.status.success(),
            status: out.status.to_string(),
            text,
        })
    }

    pub(super) fn master_pid(&self) -> Result<u32> {
        let p = &self.cfg.pid_file;
        let s = std::fs::read_to_string(p).wrap_err_with(|| {
            format!(
                "cannot read nginx's pid file {}: is nginx running, and is `pid_file` the path \
                 of nginx's `pid` directive?",
                p.display()
            )
        })?;
        let pid: u32 = s.trim().parse().map_err(|_| {
            eyre!(
                "nginx's pid file {} holds `{}`, not a process id",
                p.display(),
                s.trim()
            )
        })?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!(
                "nginx is not running: its pid file {} names process {pid}, which does not exist",
                p.display()
            );
        }
        Ok(pid)
    }

    pub(super) fn log_len(&self) -> u64 {
        self.cfg
            .error_log
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// `[emerg]`/`[alert]`/`[crit]` lines the error log gained since `from`.
    pub(super) fn log_errors_since(&self, from: u64) -> Option<String> {
        let p = self.cfg.error_log.as_ref()?;
        let bytes = std::fs::read(p).ok()?;
        let from = usize::try_from(from).ok()?.min(bytes.len());
        let lines: Vec<&str> = std::str::from_utf8(&bytes[from..])
            .ok()?
            .lines()
            .filter(|l| l.contains("[emerg]") || l.contains("[alert]") || l.contains("[crit]"))
            .collect();
        if lines.is_empty() {
            return None;
        }
        let n = lines.len();
        Some(lines[n.saturating_sub(5)..].join("\n"))
    }

    pub(super) async fn test_and_reload(&self) -> Result<()> {
        self.run(&self.test_argv())
            .await?
            .succeeded("nginx rejected the new config")?;
        let master = self.master_pid()?;
        // A master that has just started may not have forked its workers yet; the check
        // below needs the old generation to compare with.
        let started = Instant::now();
        let before = loop {
            let now = children_of(master)
                .wrap_err("cannot list nginx's worker processes in /proc to check the reload")?;
            if !now.is_empty() {
                break now;
            }
            if started.elapsed() >= self.cfg.reload_timeout {
                bail!(
                    "nginx's master (pid {master}) has no worker processes; is it starting or \
                     stopping? Nothing was reloaded"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let log_from = self.log_len();
        match self.cfg.reload {
            ReloadBy::Command => {
                self.run(&self.reload_argv())
                    .await?
                    .succeeded("the reload failed")?;
            }
            ReloadBy::Signal => {
                let pid = i32::try_from(master)
                    .ok()
                    .and_then(rustix::process::Pid::from_raw)
                    .ok_or_else(|| eyre!("pid {master} is not a process id"))?;
                if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::HUP) {
                    bail!(
                        "cannot send SIGHUP to nginx's master {master}: {}; run cutover as \
                         nginx's user or configure a reload_command (with sudo)",
                        std::io::Error::from(e)
                    );
                }
            }
        }
        let started = Instant::now();
        loop {
            // Took: new workers run, and every old one has stopped accepting (it retitles
            // itself "shutting down" before closing its listeners) or is gone. Until then old
            // workers still accept connections and serve the old config.
            let now = children_of(master).unwrap_or_default();
            if now.iter().any(|p| !before.contains(p))
                && before
                    .iter()
                    .filter(|p| now.contains(p))
                    .all(|p| shutting_down(*p))
            {
                return Ok(());
            }
            if let Some(lines) = self.log_errors_since(log_from) {
                bail!(
                    "nginx did not apply the new config although `nginx -t` passed; its error \
                     log says:\n{lines}"
                );
            }
            if started.elapsed() >= self.cfg.reload_timeout {
                bail!(
                    "nginx did not apply the new config: no new worker process within {} of the \
                     reload, so its master kept the old config (`nginx -s reload` exits 0 even \
                     then). nginx's error log says why (a port in use?){}",
                    humantime::format_duration(self.cfg.reload_timeout),
                    match &self.cfg.error_log {
                        Some(p) => format!(": {}", p.display()),
                        None => "; set `error_log` to see it here".into(),
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Files whose content nginx has not loaded yet: changed after the current workers started.
    pub(super) fn unloaded_notes(&self, master: u32, disk: &Disk) -> Vec<String> {
        let Some(loaded_at) = newest_worker_start(master) else {
            return Vec::new();
        };
        let mut paths = vec![self.upstreams_path()];
        match self.cfg.method {
            Method::Realpath | Method::Include => {
                for p in [Pointer::Live, Pointer::Next] {
                    paths.push(self.dir().join(p.conf_name()));
                }
            }
            Method::Symlink => {
                paths.push(self.link(Pointer::Live));
                paths.push(self.link(Pointer::Next));
                for s in &self.slots {
                    paths.push(self.dir().join(&s.name).join("route.conf"));
                }
                if disk.maintenance.is_some() {
                    paths.push(self.dir().join(MAINT).join("route.conf"));
                }
            }
        }
        let mut notes = Vec::new();
        for p in paths {
            let Ok(m) = std::fs::symlink_metadata(&p).and_then(|m| m.modified()) else {
                continue;
            };
            // Process start times have a 10 ms grain; a second of slack avoids false alarms.
            if m > loaded_at + Duration::from_secs(1) {
                notes.push(format!(
                    "{} changed at {} after nginx last loaded its config ({}); nginx still serves \
                     the old content until a reload",
                    p.display(),
                    crate::timefmt::rfc3339(m),
                    crate::timefmt::rfc3339(loaded_at)
                ));
            }
        }
        notes
    }
}
