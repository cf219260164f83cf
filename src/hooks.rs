//! Hooks around a swap or rollback (issue #23): warm the target slot up before the switch,
//! smoke-test it after, and tell the outside world (a deploy tracker, a chat) once the
//! operation has ended.
//!
//! - **Warm-up** (`warmup_paths`, `warmup_command`): requests sent to the *target slot's own
//!   address* (each node's, for a slot with nodes), never through a router, and never
//!   following a redirect, so no warm-up request can reach the live slot. A failed warm-up
//!   refuses the swap: nothing was changed yet.
//! - **Smoke test** (`smoke`, `smoke_paths`): after apply and verify; a failure is a failed
//!   cutover, handled as a failing watch is.
//! - **After-hooks** (`on_done`, `on_rollback`, `on_failed`): run once the result is known;
//!   they cannot change it, and their failure is recorded.
//!
//! Commands run as argv (no shell) with a clean environment, as the exec router's do: only
//! `PATH` and `HOME` from cutover's own, plus the names in `hook_pass_env`. Their output is
//! redacted ([`crate::redact::redact`]) before anything shows or records it.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::router::exec::{fill_with, placeholders_in};

/// How many lines of a hook's output the event pane and the audit log keep.
pub const OUTPUT_LINES: usize = 5;
/// The longest output line kept.
const LINE_CHARS: usize = 300;
/// Spacing of warm-up requests that did not get the expected status yet.
const WARMUP_RETRY: Duration = Duration::from_millis(200);
/// The largest body a smoke path's answer is read to (its text is searched in it).
const SMOKE_BODY_MAX: usize = 1024 * 1024;

/// Placeholders of `warmup_command`.
pub const WARMUP_VARS: &[&str] = &["env", "slot", "address", "version"];
/// Placeholders of `smoke`.
pub const SMOKE_VARS: &[&str] = &["env", "slot", "address", "version", "public_url"];
/// Placeholders of `on_done`, `on_rollback`, `on_failed`.
pub const AFTER_VARS: &[&str] = &[
    "env",
    "operation",
    "id",
    "from",
    "to",
    "version",
    "result",
    "message",
    "live",
];

/// One of `warmup_paths`: requested on the target slot until it has answered
/// `expect_status` `times` times (within `warmup_timeout`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupPath {
    pub path: String,
    #[serde(default = "one")]
    pub times: u32,
    #[serde(default = "ok_status")]
    pub expect_status: u16,
}

/// One of `smoke_paths`: one request that must answer `expect_status`, with `body_contains`
/// in its body when given.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmokePath {
    /// A path (on the public URL, or on the new live slot when there is none) or a full URL.
    pub path: String,
    #[serde(default = "ok_status")]
    pub expect_status: u16,
    pub body_contains: Option<String>,
}

/// An environment's hooks; every part optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hooks {
    pub warmup: Stage<WarmupPath>,
    pub smoke: Stage<SmokePath>,
    pub after: AfterHooks,
    /// Variables of cutover's environment passed to every hook command (besides PATH, HOME).
    pub pass_env: Vec<String>,
}

/// The warm-up (`warmup_paths`, `warmup_command`, `warmup_timeout`) or the smoke test
/// (`smoke_paths`, `smoke`, `smoke_timeout`): requests to paths, then a command, all within
/// one time limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage<P> {
    pub paths: Vec<P>,
    pub command: Vec<String>,
    pub timeout: Duration,
}

impl<P> Stage<P> {
    fn new(timeout: Duration) -> Stage<P> {
        Stage {
            paths: vec![],
            command: vec![],
            timeout,
        }
    }

    pub fn is_set(&self) -> bool {
        !self.paths.is_empty() || !self.command.is_empty()
    }
}

/// The commands run when an operation ends, by verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterHooks {
    pub on_done: Vec<String>,
    pub on_rollback: Vec<String>,
    pub on_failed: Vec<String>,
    /// How long each of them may run (`hook_timeout`).
    pub timeout: Duration,
}

pub const DEFAULT_WARMUP_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_SMOKE_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            warmup: Stage::new(DEFAULT_WARMUP_TIMEOUT),
            smoke: Stage::new(DEFAULT_SMOKE_TIMEOUT),
            after: AfterHooks {
                on_done: vec![],
                on_rollback: vec![],
                on_failed: vec![],
                timeout: DEFAULT_HOOK_TIMEOUT,
            },
            pass_env: vec![],
        }
    }
}

impl Hooks {
    pub fn has_warmup(&self) -> bool {
        self.warmup.is_set()
    }
    pub fn has_smoke(&self) -> bool {
        self.smoke.is_set()
    }
    /// Every configured command, with its config key.
    pub fn commands(&self) -> Vec<(&'static str, &[String])> {
        [
            ("warmup_command", &self.warmup.command),
            ("smoke", &self.smoke.command),
            ("on_done", &self.after.on_done),
            ("on_rollback", &self.after.on_rollback),
            ("on_failed", &self.after.on_failed),
        ]
        .into_iter()
        .filter(|(_, c)| !c.is_empty())
        .map(|(k, c)| (k, c.as_slice()))
        .collect()
    }
}

/// `warmup_paths` and `smoke_paths` entries: a path, or a table.
pub(crate) enum RawPath<T> {
    Path(String),
    Table(T),
}

/// By hand rather than `untagged`, so that a mistake in a table keeps serde's message
/// ("unknown field `body`, expected ...").
impl<'de, T: Deserialize<'de>> Deserialize<'de> for RawPath<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = RawPath<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path (\"/warm\") or a table ({ path = \"/warm\", ... })")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(RawPath::Path(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<Self::Value, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(m)).map(RawPath::Table)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

fn one() -> u32 {
    1
}
fn ok_status() -> u16 {
    200
}

/// A `warmup_paths` or `smoke_paths` entry, checked into the path the hooks use.
pub(crate) trait CheckPath {
    type Path;
    fn check(self) -> Result<Self::Path, String>;
}

impl<T: From<String>> RawPath<T> {
    /// The table; a bare path is the table with that path and every default.
    fn into_table(self) -> T {
        match self {
            RawPath::Path(path) => T::from(path),
            RawPath::Table(t) => t,
        }
    }
}

impl From<String> for WarmupPath {
    fn from(path: String) -> WarmupPath {
        WarmupPath {
            path,
            times: one(),
            expect_status: ok_status(),
        }
    }
}

impl From<String> for SmokePath {
    fn from(path: String) -> SmokePath {
        SmokePath {
            path,
            expect_status: ok_status(),
            body_contains: None,
        }
    }
}

impl CheckPath for RawPath<WarmupPath> {
    type Path = WarmupPath;
    fn check(self) -> Result<WarmupPath, String> {
        let w = self.into_table();
        if !w.path.starts_with('/') {
            return Err(format!(
                "`{}` must be a path starting with / (it is requested on the target slot's own \
                 address, never through the public URL)",
                w.path
            ));
        }
        if w.times == 0 {
            return Err(format!("`{}`: `times` must be at least 1", w.path));
        }
        check_status(w.expect_status)?;
        Ok(w)
    }
}

impl CheckPath for RawPath<SmokePath> {
    type Path = SmokePath;
    fn check(self) -> Result<SmokePath, String> {
        let s = self.into_table();
        let full = s.path.starts_with("http://") || s.path.starts_with("https://");
        if !full && !s.path.starts_with('/') {
            return Err(format!(
                "`{}` must be a path starting with / or a full http(s) URL",
                s.path
            ));
        }
        check_status(s.expect_status)?;
        Ok(s)
    }
}

fn check_status(s: u16) -> Result<(), String> {
    if (100..=599).contains(&s) {
        Ok(())
    } else {
        Err(format!("`expect_status = {s}` is not an HTTP status"))
    }
}

pub use crate::router::exec::validate_command;

/// Why `program` cannot be run, if it cannot: not found on PATH, not a file, not executable.
pub fn program_problem(program: &str) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let candidates: Vec<PathBuf> = if program.contains('/') {
        vec![PathBuf::from(program)]
    } else {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).map(|d| d.join(program)).collect())
            .unwrap_or_default()
    };
    let mut seen = None;
    for c in &candidates {
        match std::fs::metadata(c) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => return None,
            Ok(m) if m.is_file() => seen = Some(format!("{} is not executable", c.display())),
            Ok(_) => seen = Some(format!("{} is not a file", c.display())),
            Err(_) => {}
        }
    }
    Some(seen.unwrap_or_else(|| {
        if program.contains('/') {
            format!("{program} does not exist")
        } else {
            format!("`{program}` is not on the PATH")
        }
    }))
}

/// Whether any argument of `argv` uses `{name}`.
pub fn uses(argv: &[String], name: &str) -> bool {
    argv.iter().any(|a| placeholders_in(a).contains(&name))
}

/// Fill `{name}` placeholders (the exec router's syntax: other braces are text).
pub fn fill(argv: &[String], vars: &[(&str, &str)]) -> Vec<String> {
    let filled = fill_with(argv, |n| {
        Ok::<_, std::convert::Infallible>(vars.iter().find(|(k, _)| *k == n).map(|(_, v)| *v))
    });
    match filled {
        Ok(argv) => argv,
        Err(never) => match never {},
    }
}

/// The last [`OUTPUT_LINES`] non-empty lines of a command's output, redacted, joined by " / ".
pub fn tail(text: &str) -> String {
    let (_, lines) = crate::text::last_lines(text, OUTPUT_LINES);
    let kept: Vec<String> = lines
        .iter()
        .map(|l| {
            let l: String = l.chars().take(LINE_CHARS).collect();
            crate::redact::redact(&l)
        })
        .collect();
    kept.join(" / ")
}

/// Run one hook command to its end or its time limit, argv only, with a clean environment
/// (PATH, HOME and `pass_env`), stdin closed, in its own process group (killed as a whole on
/// a timeout). Ok carries the end of its output; Err says why it failed, with the end of its
/// output. Both are redacted.
pub async fn run_command(
    argv: &[String],
    limit: Duration,
    pass_env: &[String],
) -> Result<String, String> {
    let shown = crate::redact::redact(&crate::router::exec::display_argv(argv));
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let mut env: BTreeMap<OsString, OsString> = BTreeMap::new();
    for k in ["PATH", "HOME"]
        .into_iter()
        .chain(pass_env.iter().map(String::as_str))
    {
        if let Some(v) = std::env::var_os(k) {
            env.insert(OsString::from(k), v);
        }
    }
    let child = tokio::process::Command::new(program)
        .args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            format!(
                "cannot start `{shown}`: {e}; check that the program is installed and on the \
                 PATH cutover runs with, or give its absolute path"
            )
        })?;
    let pgid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    let mut guard = crate::router::exec::GroupGuard(Some(pgid));
    let out = tokio::time::timeout(limit, child.wait_with_output()).await;
    let out = match out {
        Err(_) => {
            // The guard kills the whole group.
            return Err(format!(
                "`{shown}` did not finish within {} and was killed",
                crate::timefmt::millis(limit)
            ));
        }
        Ok(Err(e)) => return Err(format!("`{shown}` failed: {e}")),
        Ok(Ok(o)) => o,
    };
    guard.0 = None;
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said = tail(&text);
    if out.status.success() {
        return Ok(said);
    }
    use std::os::unix::process::ExitStatusExt;
    let how = match (out.status.code(), out.status.signal()) {
        (Some(c), _) => format!("exited with {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        (None, None) => "failed".into(),
    };
    Err(if said.is_empty() {
        format!("`{shown}` {how}")
    } else {
        format!("`{shown}` {how}: {said}")
    })
}

/// A client for warm-up and smoke requests: no system proxy, no redirects followed (a
/// redirect must not carry a warm-up request to another slot).
fn client(limit: Duration) -> Result<reqwest::Client, String> {
    crate::http_client()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(limit)
        .connect_timeout(limit)
        .user_agent(concat!("cutover-hooks/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// Warm the target slot up: every path on every address (the slot's, or each node's) until
/// it answered its expected status its number of times. `note` hears progress.
pub async fn warm_paths(
    paths: &[WarmupPath],
    addresses: &[String],
    deadline: Instant,
    note: &mut (dyn FnMut(String) + Send),
) -> Result<String, String> {
    let total = deadline.saturating_duration_since(Instant::now());
    let c = client(total.max(Duration::from_millis(1)))?;
    let started = Instant::now();
    let mut sent = 0u64;
    for address in addresses {
        let base = address.trim_end_matches('/');
        for p in paths {
            let url = format!("{base}{}", p.path);
            let mut good = 0;
            let mut last = String::from("no answer yet");
            note(crate::redact::redact(&format!(
                "GET {url} ({} × {})",
                p.times, p.expect_status
            )));
            while good < p.times {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(crate::redact::redact(&format!(
                        "{url} answered {good} of {} times {} within {} (last: {last})",
                        p.times,
                        p.expect_status,
                        crate::timefmt::millis(total)
                    )));
                }
                sent += 1;
                match c.get(&url).timeout(left).send().await {
                    Ok(r) if r.status().as_u16() == p.expect_status => {
                        let _ = r.bytes().await;
                        good += 1;
                        continue;
                    }
                    Ok(r) => last = format!("status {}", r.status().as_u16()),
                    Err(e) => last = crate::redact::redact(&format!("{e}")),
                }
                let wait = WARMUP_RETRY.min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(wait).await;
            }
        }
    }
    Ok(format!(
        "{} path{} warmed on {} address{} ({sent} requests in {})",
        paths.len(),
        if paths.len() == 1 { "" } else { "s" },
        addresses.len(),
        if addresses.len() == 1 { "" } else { "es" },
        crate::timefmt::millis(started.elapsed())
    ))
}

/// The smoke paths, one request each, against `base` (the public URL, or the new live slot).
pub async fn smoke_paths(
    paths: &[SmokePath],
    base: &str,
    deadline: Instant,
) -> Result<String, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    let c = client(left.max(Duration::from_millis(1)))?;
    for p in paths {
        let url = if p.path.starts_with("http://") || p.path.starts_with("https://") {
            p.path.clone()
        } else {
            format!("{}{}", base.trim_end_matches('/'), p.path)
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(crate::redact::redact(&format!("no time left for {url}")));
        }
        let resp = c
            .get(&url)
            .timeout(left)
            .send()
            .await
            .map_err(|e| crate::redact::redact(&format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        if status != p.expect_status {
            return Err(crate::redact::redact(&format!(
                "{url} answered {status} (wanted {})",
                p.expect_status
            )));
        }
        if let Some(text) = &p.body_contains {
            let body = resp
                .bytes()
                .await
                .map_err(|e| crate::redact::redact(&format!("{url}: reading the body: {e}")))?;
            let body = String::from_utf8_lossy(&body[..body.len().min(SMOKE_BODY_MAX)]);
            if !body.contains(text.as_str()) {
                return Err(crate::redact::redact(&format!(
                    "{url} answered {status} but its body does not contain `{text}`"
                )));
            }
        }
    }
    Ok(format!(
        "{} path{} answered as expected",
        paths.len(),
        if paths.len() == 1 { "" } else { "s" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_replaces_known_placeholders_and_leaves_other_braces() {
        let argv = vec![
            "notify".to_string(),
            "{env}:{to}".to_string(),
            r#"{"v":"{version}"}"#.to_string(),
            "{unknown}".to_string(),
        ];
        let got = fill(
            &argv,
            &[("env", "shop"), ("to", "green"), ("version", "{to}")],
        );
        assert_eq!(got[1], "shop:green");
        assert_eq!(got[2], r#"{"v":"{to}"}"#, "a value is never filled again");
        assert_eq!(got[3], "{unknown}");
    }

    #[test]
    fn validate_names_unknown_placeholders_and_empty_commands() {
        let e = validate_command(&["x".into(), "{public_url}".into()], WARMUP_VARS)
            .expect_err("unknown");
        assert!(
            e.contains("`{public_url}`") && e.contains("{address}"),
            "{e}"
        );
        assert!(validate_command(&[], WARMUP_VARS).is_err());
        assert!(validate_command(&["x".into(), "{public_url}".into()], SMOKE_VARS).is_ok());
    }

    #[test]
    fn tail_keeps_the_last_lines_redacted() {
        let t = tail("1\n2\n\n3\n4\n5\n6\nAuthorization: Bearer abc123 token=zzz\n");
        assert!(!t.starts_with("1 /") && !t.contains("2 /"), "{t}");
        assert!(!t.contains("abc123") && !t.contains("zzz"), "{t}");
        assert_eq!(t.split(" / ").count(), OUTPUT_LINES, "{t}");
    }

    #[test]
    fn program_problem_tells_missing_from_not_executable() {
        assert!(program_problem("sh").is_none());
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("script");
        std::fs::write(&f, "#!/bin/sh\n").expect("write");
        let p = f.display().to_string();
        assert!(
            program_problem(&p)
                .expect("not executable")
                .contains("not executable")
        );
        assert!(
            program_problem("no-such-program-cutover")
                .expect("missing")
                .contains("not on the PATH")
        );
    }

    #[tokio::test]
    async fn a_command_gets_a_clean_environment_and_its_output_is_redacted() {
        // SAFETY: a variable only this test reads.
        unsafe { std::env::set_var("CUTOVER_HOOK_TEST_SECRET", "leaked") };
        let sh = |script: &str| {
            let argv = ["sh".into(), "-c".into(), script.into()];
            async move { run_command(&argv, Duration::from_secs(20), &[]).await }
        };
        let out = sh("echo \"x=${CUTOVER_HOOK_TEST_SECRET:-unset}\"; echo password=hunter2")
            .await
            .expect("ran");
        assert!(out.contains("x=unset"), "{out}");
        assert!(!out.contains("hunter2"), "{out}");
        let err = sh("echo nope token=abc >&2; exit 3")
            .await
            .expect_err("exit 3");
        assert!(
            err.contains("exited with 3") && err.contains("nope"),
            "{err}"
        );
        assert!(!err.contains("abc"), "{err}");
    }

    #[tokio::test]
    async fn a_command_past_its_time_is_killed() {
        let started = Instant::now();
        let err = run_command(
            &["sleep".into(), "30".into()],
            Duration::from_millis(300),
            &[],
        )
        .await
        .expect_err("timeout");
        assert!(err.contains("did not finish"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
