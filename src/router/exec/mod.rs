//! The `exec` driver: a router that cutover drives by running the operator's commands.
//!
//! Some routers are not proxies cutover can speak to: a DNS alias moved to another host, a
//! cloud slot swap (`az webapp deployment slot swap`), a Kubernetes Service selector patched
//! with kubectl, a hardware balancer's CLI. For those, the router table lists one command per
//! verb (`observe`, `switch_live`, `set_preview`, `drain`, `undrain`, `maintenance_on`,
//! `maintenance_off`), each an argv list with `{placeholders}`.
//!
//! How a command runs:
//! - as argv, never through a shell (unless the operator writes `["sh", "-c", ...]`);
//! - with a clean environment: only `PATH` and `HOME` from cutover's, the names listed in
//!   `pass_env`, and the `env` table. Cutover's own secrets never reach a command by accident;
//! - with stdin closed, stdout and stderr captured up to a cap, in its own process group;
//! - with a time limit: a command that outlives it is killed with its whole process group
//!   (SIGTERM, then SIGKILL a second later) and reported as a timeout.
//!
//! Exit code 0 means done. Anything else is an [`ExecError`] carrying the exit code and the
//! last lines of stderr, so the event pane and the audit log show what the tool said.
//!
//! `observe` prints the router's state as JSON or as `key=value` lines; [`parse_observe`]
//! reads both, and docs/exec.md documents the schema.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute};
use crate::model::{EnvSlots, Slot};
use crate::router::{BoxFuture, Router, Target, Verb};
use crate::timefmt::serde_duration;
mod observe;
pub use observe::parse_observe;
mod commands;
use commands::*;
pub use commands::{display_argv, host_of};

mod run;
mod verbs;

/// How long a command may run when the router sets no `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The most of a command's stdout that is kept (observe output larger than this is refused).
pub const MAX_STDOUT: usize = 1024 * 1024;
/// The most of a command's stderr that is kept (the end of it: that is where tools say why).
pub const MAX_STDERR: usize = 64 * 1024;
/// How many lines of stderr an error shows.
pub const ERROR_LINES: usize = 20;
/// How long a timed-out command gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// How much of unreadable observe output is quoted in the error.
const QUOTE_BYTES: usize = 200;

/// Every placeholder a command may use.
pub const PLACEHOLDERS: [&str; 8] = [
    "env", "from", "to", "slot", "node", "address", "host", "mode",
];

// ---------------------------------------------------------------------------------------
// Config

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    serde_duration::deserialize(d).map(Some)
}

/// One `[[environment.router]]` table with `kind = "exec"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The router's name in its environment (defaults to the kind).
    #[serde(default)]
    pub name: Option<String>,
    /// This router's own public URL, when it has a frontend of its own (a fleet of proxies
    /// behind DNS): verify probes it as well as the environment's `public_url`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// Prints the router's state (JSON or key=value lines). Required.
    #[serde(default)]
    pub observe: Option<Vec<String>>,
    /// Makes `{to}` the live slot.
    #[serde(default)]
    pub switch_live: Option<Vec<String>>,
    /// Points the preview route at `{slot}`.
    #[serde(default)]
    pub set_preview: Option<Vec<String>>,
    /// Stops new traffic to `{slot}` (or to `{node}` of it).
    #[serde(default)]
    pub drain: Option<Vec<String>>,
    /// Puts `{slot}` (or `{node}`) back in service.
    #[serde(default)]
    pub undrain: Option<Vec<String>>,
    /// Turns maintenance on (`{mode}` is `page` or `redirect`, `{to}` the redirect's slot).
    #[serde(default)]
    pub maintenance_on: Option<Vec<String>>,
    /// Turns maintenance off.
    #[serde(default)]
    pub maintenance_off: Option<Vec<String>>,
    /// How long any command may run before it is killed (default 30s).
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    /// A shorter limit for `observe` alone (default: `timeout`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub observe_timeout: Option<Duration>,
    /// Extra environment variables for every command, passed as written.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of cutover's own environment variables passed through (e.g. `KUBECONFIG`).
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// The working directory of every command (absolute).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
}

/// The commands an exec router can be given, one per verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cmd {
    Observe,
    SwitchLive,
    SetPreview,
    Drain,
    Undrain,
    MaintenanceOn,
    MaintenanceOff,
}

impl Cmd {
    pub const ALL: [Cmd; 7] = [
        Cmd::Observe,
        Cmd::SwitchLive,
        Cmd::SetPreview,
        Cmd::Drain,
        Cmd::Undrain,
        Cmd::MaintenanceOn,
        Cmd::MaintenanceOff,
    ];

    /// The config key, which is also how the command is named in messages.
    pub fn key(self) -> &'static str {
        match self {
            Cmd::Observe => "observe",
            Cmd::SwitchLive => "switch_live",
            Cmd::SetPreview => "set_preview",
            Cmd::Drain => "drain",
            Cmd::Undrain => "undrain",
            Cmd::MaintenanceOn => "maintenance_on",
            Cmd::MaintenanceOff => "maintenance_off",
        }
    }

    /// The placeholders that have a value in this command.
    pub fn placeholders(self) -> &'static [&'static str] {
        match self {
            Cmd::Observe => &["env"],
            Cmd::SwitchLive => &["env", "from", "to", "slot", "address", "host"],
            Cmd::SetPreview => &["env", "from", "slot", "address", "host"],
            Cmd::Drain | Cmd::Undrain => &["env", "from", "slot", "node", "address", "host"],
            Cmd::MaintenanceOn | Cmd::MaintenanceOff => {
                &["env", "from", "mode", "to", "address", "host"]
            }
        }
    }

    /// The command that must be configured with this one, so that what one does can be undone.
    fn partner(self) -> Option<Cmd> {
        match self {
            Cmd::Drain => Some(Cmd::Undrain),
            Cmd::Undrain => Some(Cmd::Drain),
            Cmd::MaintenanceOn => Some(Cmd::MaintenanceOff),
            Cmd::MaintenanceOff => Some(Cmd::MaintenanceOn),
            _ => None,
        }
    }
}

impl Config {
    pub fn command(&self, c: Cmd) -> Option<&[String]> {
        match c {
            Cmd::Observe => self.observe.as_deref(),
            Cmd::SwitchLive => self.switch_live.as_deref(),
            Cmd::SetPreview => self.set_preview.as_deref(),
            Cmd::Drain => self.drain.as_deref(),
            Cmd::Undrain => self.undrain.as_deref(),
            Cmd::MaintenanceOn => self.maintenance_on.as_deref(),
            Cmd::MaintenanceOff => self.maintenance_off.as_deref(),
        }
    }

    /// Checks made when the config is loaded; the message names the field.
    pub fn validate(&self, _slots: &[Slot]) -> std::result::Result<(), String> {
        if self.observe.is_none() {
            return Err(
                "an exec router needs `observe`: cutover reads every router back after \
                 each change and never assumes which slot is live, so give a command that prints \
                 the router's state, e.g. observe = [\"/usr/local/bin/where-is-www\"] printing \
                 `live=blue` (docs/exec.md describes the output)"
                    .into(),
            );
        }
        for c in Cmd::ALL {
            let Some(argv) = self.command(c) else {
                continue;
            };
            let key = c.key();
            match argv.first() {
                None => {
                    return Err(format!(
                        "`{key} = []` is empty: give the program and its arguments, e.g. \
                         {key} = [\"/usr/local/bin/lbctl\", \"{key}\", \"{{slot}}\"], or remove the line"
                    ));
                }
                Some(p) if p.trim().is_empty() => {
                    return Err(format!(
                        "`{key}`: the first element must name the program to run; it is empty"
                    ));
                }
                _ => {}
            }
            for (i, arg) in argv.iter().enumerate() {
                if arg.contains('\0') {
                    return Err(format!("`{key}`: argument {} contains a NUL byte", i + 1));
                }
                for name in placeholders_in(arg) {
                    if !PLACEHOLDERS.contains(&name) {
                        return Err(format!(
                            "`{key}`: unknown placeholder `{{{name}}}` in argument {} (`{arg}`); \
                             the placeholders are {}. Text that must reach the command as a \
                             literal `{{word}}` belongs in a script file",
                            i + 1,
                            list_placeholders(&PLACEHOLDERS)
                        ));
                    }
                    if !c.placeholders().contains(&name) {
                        return Err(format!(
                            "`{key}`: `{{{name}}}` has no value in {key} ({}); {key} knows {}",
                            meaning(name),
                            list_placeholders(c.placeholders())
                        ));
                    }
                }
            }
            if let Some(p) = c.partner()
                && self.command(p).is_none()
            {
                return Err(format!(
                    "`{key}` is configured without `{}`: what one does the other must be able to \
                     undo, so configure both (or neither)",
                    p.key()
                ));
            }
        }
        if self.timeout.is_zero() || self.observe_timeout.is_some_and(|t| t.is_zero()) {
            return Err("`timeout` and `observe_timeout` must be more than zero".into());
        }
        for (k, v) in &self.env {
            check_env_name(k).map_err(|m| format!("`env`: {m}"))?;
            if v.contains('\0') {
                return Err(format!("`env`: the value of `{k}` contains a NUL byte"));
            }
        }
        for k in &self.pass_env {
            check_env_name(k).map_err(|m| format!("`pass_env`: {m}"))?;
            if self.env.contains_key(k) {
                return Err(format!(
                    "`{k}` is both in `env` and in `pass_env`; keep one (env sets a value, \
                     pass_env passes cutover's own)"
                ));
            }
        }
        if let Some(d) = &self.cwd
            && !d.is_absolute()
        {
            return Err(format!(
                "`cwd = \"{}\"` is relative, so it would depend on where cutover is started; \
                 write an absolute path",
                d.display()
            ));
        }
        Ok(())
    }
}

pub(crate) enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Split an argument into text and `{name}` placeholders.
///
/// `{name}` (a letter or `_`, then letters, digits, `_`) is a placeholder. Every other brace
/// is text: `{"spec":...}` (JSON), `{{.x}}` (a run of braces: Go templates), `${HOME}` (a
/// brace after `$`: shell expansion), `{ print }` (spaces).
pub(crate) fn pieces(arg: &str) -> Vec<Piece<'_>> {
    let b = arg.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'{') {
            while i < b.len() && b[i] == b'{' {
                i += 1;
            }
            continue;
        }
        if i > 0 && b[i - 1] == b'$' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        let ident_start = b
            .get(i + 1)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
        if ident_start && b.get(j) == Some(&b'}') {
            if start < i {
                out.push(Piece::Text(&arg[start..i]));
            }
            out.push(Piece::Placeholder(&arg[i + 1..j]));
            i = j + 1;
            start = i;
        } else {
            i += 1;
        }
    }
    if start < b.len() {
        out.push(Piece::Text(&arg[start..]));
    }
    out
}

pub(crate) fn placeholders_in(arg: &str) -> Vec<&str> {
    pieces(arg)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Placeholder(n) => Some(n),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Why a command did not do its job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The verb has no command in the router's config.
    NotConfigured,
    /// The program could not be started (not installed, not executable...).
    Spawn(String),
    /// It ran and exited with a code other than 0, or was killed by a signal.
    Exit {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// It outlived the time limit and was killed with its process group.
    Timeout(Duration),
    /// `observe` ran but printed something cutover cannot read (the message says what).
    BadOutput(String),
}

/// A failed exec command, with what the operator needs to see: which router and verb, the
/// command line, how it failed and the end of what it printed.
#[derive(Debug, Clone)]
pub struct ExecError {
    pub router: String,
    pub verb: Cmd,
    /// The command as run (shell-quoted for reading); empty when nothing ran.
    pub command: String,
    pub failure: Failure,
    /// The last lines of stderr (or of stdout when stderr was empty), trimmed.
    pub output: String,
    /// `stderr` or `stdout`: where `output` came from.
    pub output_from: &'static str,
}

impl ExecError {
    /// The exit code, when the command exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match self.failure {
            Failure::Exit { code, .. } => code,
            _ => None,
        }
    }
    pub fn is_timeout(&self) -> bool {
        matches!(self.failure, Failure::Timeout(_))
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (r, key) = (&self.router, self.verb.key());
        match &self.failure {
            Failure::NotConfigured => {
                write!(
                    f,
                    "router `{r}`: `{key}` is not configured: add `{key} = [...]`"
                )?;
                if let Some(p) = self.verb.partner() {
                    write!(f, " and `{} = [...]`", p.key())?;
                }
                write!(f, " to the router (docs/exec.md has examples)")?;
            }
            Failure::Spawn(e) => write!(
                f,
                "router `{r}`: cannot start `{key}` ({}): {e}; check that the program is \
                 installed and on the PATH cutover runs with, or give its absolute path",
                self.command
            )?,
            Failure::Exit { code: Some(c), .. } => write!(
                f,
                "router `{r}`: `{key}` failed with exit code {c}: {}",
                self.command
            )?,
            Failure::Exit { signal, .. } => write!(
                f,
                "router `{r}`: `{key}` was killed by signal {}: {}",
                signal.map_or("?".to_string(), |s| s.to_string()),
                self.command
            )?,
            Failure::Timeout(d) => {
                write!(
                    f,
                    "router `{r}`: `{key}` timed out after {} and was killed with its whole \
                     process group: {}; ",
                    humantime::format_duration(*d),
                    self.command
                )?;
                if self.verb == Cmd::Observe {
                    write!(f, "raise `observe_timeout` if the tool is just slow")?;
                } else {
                    write!(
                        f,
                        "whether it changed anything is unknown: observe the router before \
                         retrying, or raise `timeout` if the tool is just slow"
                    )?;
                }
            }
            Failure::BadOutput(m) => write!(
                f,
                "router `{r}`: `{key}` printed output cutover cannot read: {m}"
            )?,
        }
        if !self.output.is_empty() {
            write!(f, "\n{}:", self.output_from)?;
            for line in self.output.lines() {
                write!(f, "\n  {line}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ExecError {}

/// The last `ERROR_LINES` non-empty lines of `text`, each cut to a readable length.
fn tail_lines(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let skip = lines.len().saturating_sub(ERROR_LINES);
    let mut out = Vec::new();
    if skip > 0 {
        out.push(format!("… ({skip} earlier lines)"));
    }
    out.extend(lines[skip..].iter().map(|l| cut(l, 500)));
    out.join("\n")
}

// ---------------------------------------------------------------------------------------
// Running a command

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    total: u64,
}

/// Read a pipe to its end, keeping the first (`tail == false`) or last `cap` bytes.
async fn capture<R: AsyncRead + Unpin>(
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

fn take(c: &Arc<Mutex<Captured>>) -> (String, u64) {
    match c.lock() {
        Ok(c) => (String::from_utf8_lossy(&c.bytes).into_owned(), c.total),
        Err(_) => (String::new(), 0),
    }
}

pub(crate) fn signal_group(pgid: i32, sig: i32) {
    // Never 0 (our own group) or 1 and below (-1 would signal every process we may signal).
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals that process group; no memory involved.
        unsafe {
            libc::kill(-pgid, sig);
        }
    }
}

/// Kills the command's process group if the run is abandoned (the future dropped).
pub(crate) struct GroupGuard(pub(crate) Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            signal_group(pgid, libc::SIGKILL);
        }
    }
}

/// What a successful command printed.
struct Ran {
    stdout: String,
    stdout_total: u64,
    stderr: String,
}

// ---------------------------------------------------------------------------------------
// The driver

pub struct Driver {
    name: String,
    env_name: String,
    slots: Vec<Slot>,
    cfg: Config,
    /// Changes run one at a time (observe runs beside them).
    change: tokio::sync::Mutex<()>,
}

impl Driver {
    pub fn new<'a>(name: String, env: impl Into<EnvSlots<'a>>, cfg: &Config) -> Result<Self> {
        let env = env.into();
        cfg.validate(env.slots)
            .map_err(|m| eyre!("router `{name}` of environment `{}`: {m}", env.name))?;
        Ok(Driver {
            name,
            env_name: env.name.to_string(),
            slots: env.slots.to_vec(),
            cfg: cfg.clone(),
            change: tokio::sync::Mutex::new(()),
        })
    }

    /// How long `observe` may run: `observe_timeout`, else `timeout`.
    fn observe_limit(&self) -> Duration {
        self.cfg.observe_timeout.unwrap_or(self.cfg.timeout)
    }

    fn error(&self, verb: Cmd, command: String, failure: Failure) -> ExecError {
        ExecError {
            router: self.name.clone(),
            verb,
            command,
            failure,
            output: String::new(),
            output_from: "stderr",
        }
    }

    fn argv(&self, c: Cmd) -> Result<&[String]> {
        self.cfg
            .command(c)
            .ok_or_else(|| self.error(c, String::new(), Failure::NotConfigured).into())
    }

    fn slot(&self, name: &str) -> Result<&Slot> {
        self.slots.iter().find(|s| s.name == name).ok_or_else(|| {
            eyre!(
                "router `{}`: environment `{}` has no slot `{name}` (its slots: {})",
                self.name,
                self.env_name,
                self.slot_names()
            )
        })
    }

    fn slot_names(&self) -> String {
        self.slots
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Router for Driver {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "exec"
    }
    /// The configured `observe_timeout` (else `timeout`), plus the time a command that
    /// outlives it takes to be killed, so the command's own timeout error is what is reported.
    fn observe_timeout(&self) -> Duration {
        self.observe_limit() + 2 * KILL_GRACE
    }
    fn supports(&self, verb: Verb) -> bool {
        let has = |c| self.cfg.command(c).is_some();
        match verb {
            Verb::Observe => has(Cmd::Observe),
            Verb::SwitchLive => has(Cmd::SwitchLive),
            Verb::SetPreview => has(Cmd::SetPreview),
            Verb::Drain => has(Cmd::Drain),
            Verb::Undrain => has(Cmd::Undrain),
            Verb::Maintenance => has(Cmd::MaintenanceOn) && has(Cmd::MaintenanceOff),
            Verb::Weights => false,
        }
    }
    fn observe(&self) -> BoxFuture<'_, Result<RouterState>> {
        Box::pin(self.observe_now())
    }
    fn switch_live<'a>(&'a self, to: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.switch(to))
    }
    fn set_preview<'a>(&'a self, slot: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.preview(slot))
    }
    fn drain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.drain_cmd(Cmd::Drain, t))
    }
    fn undrain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.drain_cmd(Cmd::Undrain, t))
    }
    fn maintenance<'a>(&'a self, on: bool, m: &'a MaintenanceMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.maintenance_cmd(on, m))
    }
}

// ---------------------------------------------------------------------------------------
// Observe output

const TOP_KEYS: &str = "live, preview, maintenance, slots, notes";
const SLOT_KEYS: &str = "state, sessions, requests, errors, check, nodes";
const NODE_KEYS: &str = "state, sessions, check";

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::model::{Address, Node};

    fn slots() -> Vec<Slot> {
        ["blue", "green"]
            .iter()
            .map(|n| Slot {
                nodes: if *n == "blue" {
                    vec![Node {
                        name: "web1".into(),
                        address: Address::parse("http://10.0.0.1:80").expect("valid"),
                    }]
                } else {
                    vec![]
                },
                ..Slot::new(
                    n,
                    Address::parse(&format!("http://{n}.example.org:8080")).expect("valid"),
                )
            })
            .collect()
    }

    fn phs(arg: &str) -> Vec<&str> {
        placeholders_in(arg)
    }

    #[test]
    fn placeholders_are_words_in_single_braces() {
        assert_eq!(phs("--slot={to}"), vec!["to"]);
        assert_eq!(phs("{from}->{to}"), vec!["from", "to"]);
        assert!(phs(r#"{"spec":{"selector":{"slot":"x"}}}"#).is_empty());
        assert_eq!(phs(r#"{"spec":{"selector":{"slot":"{to}"}}}"#), vec!["to"]);
        assert!(phs("{{if eq .metadata.name \"shop\"}}live{{end}}").is_empty());
        assert!(phs("echo ${HOME} ${1}").is_empty());
        assert!(phs("awk '{ print }' {} {1x}").is_empty());
        assert_eq!(phs("{foo}"), vec!["foo"]);
    }

    #[test]
    fn render_fills_values_and_explains_missing_ones() {
        let mut v = Values::new("shop");
        v.set("to", "green");
        v.missing("node", "whole slot");
        let argv = vec![r#"{"slot":"{to}"}"#.to_string(), "{env}".into()];
        let out = render(Cmd::SwitchLive, &argv, &v).expect("renders");
        assert_eq!(out, vec![r#"{"slot":"green"}"#, "shop"]);
        let e = render(Cmd::Drain, &["{node}".to_string()], &v).expect_err("no node");
        assert!(
            e.to_string().contains("`{node}`") && e.to_string().contains("whole slot"),
            "{e}"
        );
    }

    #[test]
    fn host_of_strips_scheme_port_and_path() {
        assert_eq!(
            host_of("http://vm-blue.example.edu:8080/app"),
            "vm-blue.example.edu"
        );
        assert_eq!(
            host_of("https://shop.azurewebsites.net"),
            "shop.azurewebsites.net"
        );
        assert_eq!(host_of("http://[::1]:9001"), "::1");
        assert_eq!(host_of("http://10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn json_schema_reads_every_field() {
        let out = r#"{"live":"blue","preview":"green","maintenance":{"mode":"redirect","to":"green"},
            "slots":{"blue":{"state":"Ready","sessions":3,"requests":"10","errors":0,"check":"UP",
                             "nodes":{"web1":{"state":"draining","sessions":1,"check":"L7OK"}}},
                     "green":{"state":"maint","sessions":null}},
            "notes":["alias TTL is 60s"]}"#;
        let s = parse_observe(out, &slots()).expect("parses");
        assert_eq!(s.live.as_deref(), Some("blue"));
        assert_eq!(s.preview.as_deref(), Some("green"));
        assert_eq!(
            s.maintenance,
            Some(MaintenanceMode::Redirect { to: "green".into() })
        );
        let b = &s.slots["blue"];
        assert_eq!(
            (b.admin, b.sessions, b.requests, b.errors),
            (AdminState::Ready, Some(3), Some(10), Some(0))
        );
        assert_eq!(b.check.as_deref(), Some("UP"));
        assert_eq!(b.nodes[0].name, "web1");
        assert_eq!(b.nodes[0].admin, AdminState::Drain);
        assert_eq!(s.slots["green"].admin, AdminState::Maint);
        assert_eq!(s.slots["green"].sessions, None);
        assert_eq!(s.notes, vec!["alias TTL is 60s"]);
    }

    #[test]
    fn key_value_lines_read_the_same_state() {
        let out = "# from the test\nlive = blue\npreview=\"green\"\nmaintenance=redirect:green\n\
                   blue.state=ready\nblue.sessions=3\nblue/web1.state=drain\nnote=one\nnote=two\n";
        let s = parse_observe(out, &slots()).expect("parses");
        assert_eq!(s.live.as_deref(), Some("blue"));
        assert_eq!(s.preview.as_deref(), Some("green"));
        assert_eq!(
            s.maintenance,
            Some(MaintenanceMode::Redirect { to: "green".into() })
        );
        assert_eq!(s.slots["blue"].sessions, Some(3));
        assert_eq!(s.slots["blue"].nodes[0].admin, AdminState::Drain);
        assert_eq!(s.notes, vec!["one", "two"]);
        let s = parse_observe("live=blue\npreview=\nmaintenance=on", &slots()).expect("parses");
        assert_eq!(s.preview, None);
        assert_eq!(s.maintenance, Some(MaintenanceMode::Page));
        let s = parse_observe(r#"{"live":null,"maintenance":true}"#, &slots()).expect("parses");
        assert_eq!(s.live, None);
    }

    #[test]
    fn problems_are_read_in_both_forms() {
        let s = parse_observe(
            "live=blue\nproblem=no alias `www`\nproblem=no zone\nnote=ttl 60s\n",
            &slots(),
        )
        .expect("parses");
        assert_eq!(s.problems, vec!["no alias `www`", "no zone"]);
        assert_eq!(s.notes, vec!["ttl 60s"]);
        let s = parse_observe(r#"{"live":"blue","problems":"no zone"}"#, &slots()).expect("parses");
        assert_eq!(s.problems, vec!["no zone"]);
        let s = parse_observe(r#"{"live":"blue","problems":["a","b"]}"#, &slots()).expect("parses");
        assert_eq!(s.problems, vec!["a", "b"]);
        let e = parse_observe(r#"{"live":"blue","problems":[1]}"#, &slots()).expect_err("a number");
        assert!(e.contains("`problems` holds"), "{e}");
    }

    #[test]
    fn mistakes_in_observe_output_are_named() {
        let e = |out: &str| parse_observe(out, &slots()).expect_err(out);
        assert!(e("live=purple").contains("`purple` is not a slot"));
        assert!(e("live=\npreview=green").contains("`live` is empty"));
        assert!(e(r#"{"live":""}"#).contains("`live` is empty"));
        assert!(e("preview=green").contains("did not say which slot is live"));
        assert!(e(r#"{"preview":"green"}"#).contains("did not say which slot is live"));
        assert!(e("live=blue\nlive=green").contains("given twice"));
        assert!(e("lvie=blue").contains("unknown key `lvie`"));
        assert!(e("blue.state=reddy").contains("state `reddy`"));
        assert!(e("blue.sessions=-1").contains("whole number"));
        assert!(e("blue/web9.state=ready").contains("node `web9`"));
        assert!(e(r#"{"live":"blue","lvie":1}"#).contains("unknown key `lvie`"));
        assert!(e(r#"{"live":3}"#).contains("`live` is a number"));
        assert!(e(r#"{"slots":{"blue":{"weight":3}}}"#).contains("`slots.blue.weight`"));
        assert!(e(r#"{"maintenance":"sometimes"}"#).contains("maintenance `sometimes`"));
        assert!(e("").contains("printed nothing"));
        let long = format!("{{\"live\": \"blue\", {}", "x".repeat(500));
        let m = e(&long);
        assert!(m.contains("expected a JSON object"), "{m}");
        assert!(
            m.contains("`{\"live\": \"blue\", xxx") && m.contains("…`"),
            "{m}"
        );
    }

    fn cfg(extra: &str) -> Config {
        let src = format!("observe = [\"cat\", \"state\"]\n{extra}");
        toml::from_str(&src).expect("config parses")
    }

    #[test]
    fn validate_explains_each_mistake() {
        let err = |extra: &str| cfg(extra).validate(&slots()).expect_err(extra);
        assert!(cfg("").validate(&slots()).is_ok());
        let c: Config = toml::from_str("switch_live = [\"x\"]").expect("parses");
        assert!(
            c.validate(&slots())
                .expect_err("no observe")
                .contains("needs `observe`")
        );
        assert!(err("switch_live = []").contains("`switch_live = []` is empty"));
        assert!(err("switch_live = [\"\"]").contains("first element"));
        let m = err("switch_live = [\"x\", \"--to={foo}\"]");
        assert!(
            m.contains("unknown placeholder `{foo}`") && m.contains("argument 2"),
            "{m}"
        );
        let m = err("drain = [\"x\", \"{to}\"]\nundrain = [\"x\"]");
        assert!(m.contains("`{to}` has no value in drain"), "{m}");
        assert!(err("drain = [\"x\"]").contains("without `undrain`"));
        assert!(err("maintenance_off = [\"x\"]").contains("without `maintenance_on`"));
        assert!(err("timeout = \"0s\"").contains("more than zero"));
        assert!(err("cwd = \"rel/dir\"").contains("absolute"));
        assert!(err("env = { \"A=B\" = \"x\" }").contains("not a variable name"));
        assert!(err("env = { A = \"x\" }\npass_env = [\"A\"]").contains("both in `env`"));
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let t = tail_lines(&text);
        assert!(t.starts_with("… (10 earlier lines)"), "{t}");
        assert!(t.contains("line 11") && t.ends_with("line 30"));
        assert!(!t.contains("line 10\n"));
    }
}
