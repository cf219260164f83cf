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
use serde::Deserializer;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::model::{Address, EnvSlots, Slot};
use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute, Weights};
use crate::router::{Driven, Proxy, Target, Verb};
use crate::timefmt::serde_duration;
mod observe;
pub use observe::parse_observe;
mod commands;
pub use commands::display_argv;
pub use commands::validate_command;
use commands::*;
pub(crate) use commands::{fill_with, placeholders_in};
pub(crate) use run::GroupGuard;

mod config;
pub use config::*;
mod error;
pub use error::*;
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
pub const PLACEHOLDERS: [&str; 11] = [
    "env", "from", "to", "slot", "node", "address", "host", "mode", "live", "canary", "weight",
];

// ---------------------------------------------------------------------------------------
// The driver

/// The exec router: a [`Driven`] [`Exec`].
pub type Driver = Driven<Exec>;

pub struct Exec {
    name: String,
    env_name: String,
    slots: Vec<Slot>,
    cfg: Config,
}

impl Exec {
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
                "environment `{}` has no slot `{name}` (its slots: {})",
                self.env_name,
                self.slot_names()
            )
        })
    }

    fn slot_names(&self) -> String {
        crate::router::comma_list(self.slots.iter().map(|s| s.name.as_str()))
    }
}

impl Proxy for Exec {
    const KIND: &'static str = "exec";
    type Config = Config;
    fn new(name: &str, env: EnvSlots<'_>, cfg: &Config) -> Result<Self> {
        let name = name.to_string();
        Ok(Exec {
            name,
            env_name: env.name.to_string(),
            slots: env.slots.to_vec(),
            cfg: cfg.clone(),
        })
    }
    /// The configured `observe_timeout` (else `timeout`), plus the time a command that
    /// outlives it takes to be killed, so the command's own timeout error is what is reported.
    fn observe_timeout(&self) -> Duration {
        self.observe_limit() + 2 * KILL_GRACE
    }
    /// A change may observe first, then runs its command: both limits and the kill grace,
    /// so the command's own timeout error is what is reported.
    fn change_timeout(&self) -> Duration {
        self.observe_timeout() + self.cfg.timeout + 3 * KILL_GRACE
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
            Verb::Weights => has(Cmd::Weights),
            Verb::Pause => false,
        }
    }
    async fn observe(&self) -> Result<RouterState> {
        self.observe_now().await
    }
    async fn switch_live(&self, to: &str) -> Result<()> {
        self.switch(to).await
    }
    async fn set_preview(&self, slot: &str) -> Result<()> {
        self.preview(slot).await
    }
    async fn drain(&self, t: &Target) -> Result<()> {
        self.drain_cmd(Cmd::Drain, t).await
    }
    async fn undrain(&self, t: &Target) -> Result<()> {
        self.drain_cmd(Cmd::Undrain, t).await
    }
    async fn maintenance(&self, on: bool, m: &MaintenanceMode) -> Result<()> {
        self.maintenance_cmd(on, m).await
    }
    async fn set_weights(&self, live: &str, canary: &str, percent: u8) -> Result<()> {
        self.weights_cmd(live, canary, percent).await
    }
}

// ---------------------------------------------------------------------------------------
// Observe output

const TOP_KEYS: &str = "live, preview, maintenance, weights, slots, notes";
const SLOT_KEYS: &str = "state, sessions, requests, errors, check, nodes";
const NODE_KEYS: &str = "state, sessions, check";

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests;
