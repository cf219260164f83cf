//! Running a configured command: a clean environment, its own process group, a timeout, its output captured.

use super::*;
use rustix::process::Signal;

impl Exec {
    /// The environment a command starts with: PATH and HOME, `pass_env`, then `env`.
    pub(super) fn child_env(&self) -> BTreeMap<OsString, OsString> {
        let mut m = BTreeMap::new();
        for k in ["PATH", "HOME"]
            .into_iter()
            .chain(self.cfg.pass_env.iter().map(String::as_str))
        {
            if let Some(v) = std::env::var_os(k) {
                m.insert(OsString::from(k), v);
            }
        }
        for (k, v) in &self.cfg.env {
            m.insert(OsString::from(k), OsString::from(v));
        }
        m
    }

    /// Run one command to its end (or its time limit). Ok only for exit code 0.
    pub(super) async fn run(&self, verb: Cmd, argv: &[String]) -> Result<Ran> {
        let command = display_argv(argv);
        let Some((program, args)) = argv.split_first() else {
            return Err(self.error(verb, command, Failure::NotConfigured).into());
        };
        let limit = match verb {
            Cmd::Observe => self.observe_limit(),
            _ => self.cfg.timeout,
        };
        let mut c = tokio::process::Command::new(program);
        c.args(args)
            .env_clear()
            .envs(self.child_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(d) = &self.cfg.cwd {
            c.current_dir(d);
        }
        let started = Instant::now();
        let mut child = c
            .spawn()
            .map_err(|e| self.error(verb, command.clone(), Failure::Spawn(e.to_string())))?;
        let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        let mut guard = GroupGuard(Some(pgid));

        let out = Arc::new(Mutex::new(Captured::default()));
        let err = Arc::new(Mutex::new(Captured::default()));
        let mut out_task = child
            .stdout
            .take()
            .map(|p| tokio::spawn(capture(p, out.clone(), MAX_STDOUT, false)));
        let mut err_task = child
            .stderr
            .take()
            .map(|p| tokio::spawn(capture(p, err.clone(), MAX_STDERR, true)));

        // The exit code is the result. Output is read until it closes, but a process the
        // command left running in the background may hold it open: that is not waited for
        // beyond a short grace.
        let deadline = tokio::time::Instant::now() + limit;
        let finished = tokio::time::timeout_at(deadline, child.wait()).await;
        if matches!(finished, Ok(Ok(_))) {
            let grace = deadline.min(tokio::time::Instant::now() + KILL_GRACE);
            for t in [&mut out_task, &mut err_task].into_iter().flatten() {
                if tokio::time::timeout_at(grace, &mut *t).await.is_err() {
                    t.abort();
                    tracing::warn!(
                        router = %self.name, verb = verb.key(), command = %command,
                        "the command exited but something it started still holds its output; \
                         not reading the rest"
                    );
                }
            }
        }

        let status = match finished {
            Ok(Ok(status)) => {
                guard.0 = None;
                Ok(status)
            }
            Ok(Err(e)) => Err(Failure::Spawn(format!("waiting for it failed: {e}"))),
            Err(_) => Err(Failure::Timeout(limit)),
        };
        if status.is_err() {
            signal_group(pgid, Signal::TERM);
            let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
            signal_group(pgid, Signal::KILL);
            let _ = tokio::time::timeout(KILL_GRACE, child.wait()).await;
            guard.0 = None;
            for t in [&mut out_task, &mut err_task].into_iter().flatten() {
                if !t.is_finished() && tokio::time::timeout(KILL_GRACE, &mut *t).await.is_err() {
                    t.abort();
                }
            }
        }
        let (stdout, stdout_total) = take(&out);
        let (stderr, _) = take(&err);
        let elapsed = started.elapsed();

        let failure = match status {
            Ok(s) if s.success() => {
                tracing::info!(
                    router = %self.name, verb = verb.key(), command = %command,
                    elapsed_ms = elapsed.as_millis() as u64, "exec command done"
                );
                if !stderr.trim().is_empty() {
                    tracing::debug!(router = %self.name, verb = verb.key(), stderr = %tail_lines(&stderr));
                }
                return Ok(Ran {
                    stdout,
                    stdout_total,
                    stderr,
                });
            }
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                Failure::Exit {
                    code: s.code(),
                    signal: s.signal(),
                }
            }
            Err(f) => f,
        };
        let mut e = self.error(verb, command, failure);
        if stderr.trim().is_empty() {
            e.output = tail_lines(&stdout);
            e.output_from = "stdout";
        } else {
            e.output = tail_lines(&stderr);
        }
        tracing::warn!(
            router = %self.name, verb = verb.key(),
            elapsed_ms = elapsed.as_millis() as u64, "{e}"
        );
        Err(e.into())
    }

    /// Run `observe` and read its output.
    pub(super) async fn observe_now(&self) -> Result<RouterState> {
        let argv = render(
            Cmd::Observe,
            self.argv(Cmd::Observe)?,
            &Values::new(&self.env_name),
        )?;
        let ran = self.run(Cmd::Observe, &argv).await?;
        let bad = |m: String| {
            let mut e = self.error(Cmd::Observe, display_argv(&argv), Failure::BadOutput(m));
            e.output = tail_lines(&ran.stderr);
            e
        };
        if ran.stdout_total > MAX_STDOUT as u64 {
            return Err(bad(format!(
                "it printed {} bytes, more than the {} cutover reads; print only the router's state",
                ran.stdout_total, MAX_STDOUT
            ))
            .into());
        }
        let mut state = parse_observe(&ran.stdout, &self.slots).map_err(bad)?;
        if let Some(first) = ran.stderr.lines().find(|l| !l.trim().is_empty()) {
            state.notes.push(format!(
                "observe wrote to stderr: {}",
                cut(first.trim(), 200)
            ));
        }
        Ok(state)
    }

    /// `{from}`: the live slot, read from the router just now (only when the command uses it).
    pub(super) async fn fill_from(&self, argv: &[String], v: &mut Values) -> Result<()> {
        if !uses(argv, "from") {
            return Ok(());
        }
        let state = self.observe_now().await.wrap_err(
            "the command uses {from}, but observe failed, so the live slot is unknown; nothing \
             was changed",
        )?;
        match state.live {
            Some(l) => v.set("from", l),
            None => v.missing("from", "observe reports no live slot"),
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Running a command

#[derive(Default)]
pub(super) struct Captured {
    pub(super) bytes: Vec<u8>,
    pub(super) total: u64,
}

/// Read a pipe to its end, keeping the first (`tail == false`) or last `cap` bytes.
pub(super) async fn capture<R: AsyncRead + Unpin>(
    mut r: R,
    into: Arc<Mutex<Captured>>,
    cap: usize,
    tail: bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Ok(mut c) = into.lock() else { break };
        c.total += n as u64;
        if tail {
            c.bytes.extend_from_slice(&buf[..n]);
            if c.bytes.len() > cap {
                let excess = c.bytes.len() - cap;
                c.bytes.drain(..excess);
            }
        } else {
            let room = cap.saturating_sub(c.bytes.len());
            c.bytes.extend_from_slice(&buf[..n.min(room)]);
        }
    }
}

pub(super) fn take(c: &Arc<Mutex<Captured>>) -> (String, u64) {
    match c.lock() {
        Ok(c) => (String::from_utf8_lossy(&c.bytes).into_owned(), c.total),
        Err(_) => (String::new(), 0),
    }
}

pub(crate) fn signal_group(pgid: i32, sig: Signal) {
    // Never 0 (our own group) or 1 and below (-1 would signal every process we may signal).
    if pgid > 1
        && let Some(pgid) = rustix::process::Pid::from_raw(pgid)
    {
        // Best effort: the group may be gone already.
        let _ = rustix::process::kill_process_group(pgid, sig);
    }
}

/// Kills the command's process group if the run is abandoned (the future dropped).
pub(crate) struct GroupGuard(pub(crate) Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            signal_group(pgid, Signal::KILL);
        }
    }
}

/// What a successful command printed.
pub(super) struct Ran {
    pub(super) stdout: String,
    pub(super) stdout_total: u64,
    pub(super) stderr: String,
}
