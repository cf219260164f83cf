//! The records cutover keeps to coordinate operations, wherever they are kept (the state
//! dir's files, or etcd): who holds an environment's lock, what it remembers between runs, the
//! journal of a router change in progress, and what a running operation is doing. Plain data;
//! the stores are [`crate::state`] and [`crate::etcd`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnvMemory {
    /// The slot that was live before the last switch: the rollback target.
    pub previous_live: Option<String>,
    /// The version the previous live slot served while it was live: a one-key rollback goes
    /// back only to that version.
    pub previous_live_version: Option<String>,
    /// When the last switch was made (seconds since the epoch).
    pub switched_at: Option<u64>,
    /// What the last switch was: `swap` (rollback is one key for a while) or `rollback`.
    pub last_switch: Option<String>,
    /// The live slot cutover last set.
    pub last_set_live: Option<String>,
    /// The preview slot cutover last set.
    pub last_set_preview: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default)]
    pub environments: BTreeMap<String, EnvMemory>,
}

/// Who holds (or asks for) an environment's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub holder: String,
    pub pid: u32,
    pub operation: String,
    /// The operation's id (empty in files written by older versions).
    #[serde(default)]
    pub op_id: String,
    pub since: String,
}

impl LockInfo {
    /// This process, about to run `operation` with id `op_id`.
    pub fn me(operation: &str, op_id: &str) -> LockInfo {
        LockInfo {
            holder: crate::paths::user_at_host(),
            pid: std::process::id(),
            operation: operation.to_string(),
            op_id: op_id.to_string(),
            since: crate::timefmt::rfc3339(SystemTime::now()),
        }
    }

    /// False only for a holder of this host whose process is gone (its lock went with it).
    pub(crate) fn may_be_alive(&self) -> bool {
        let host = crate::paths::user_at_host();
        let same_host = host.split('@').nth(1) == self.holder.split('@').nth(1);
        !same_host || Path::new(&format!("/proc/{}", self.pid)).exists()
    }

    /// "alice@bastion (pid 812, swap #a1b2c3d4 since 2026-…)"
    pub fn describe(&self) -> String {
        let id = if self.op_id.is_empty() {
            String::new()
        } else {
            format!(" #{}", self.op_id)
        };
        format!(
            "{} (pid {}, {}{id} since {})",
            self.holder, self.pid, self.operation, self.since
        )
    }
}

/// What a running operation is doing, as the other cutovers on a shared store see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    pub op_id: String,
    pub operation: String,
    pub holder: String,
    pub pid: u32,
    pub since: String,
    #[serde(default)]
    pub steps: Vec<ActivityStep>,
    /// The verdict once it ended (`done`, `refused`, `cancelled`...).
    pub result: Option<String>,
    pub message: Option<String>,
}

/// One step of an [`Activity`]: `ok` is `None` while it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivityStep {
    /// Counts every change of the activity's steps: a follower prints the ones it has not seen.
    #[serde(default)]
    pub n: u64,
    pub step: String,
    pub ok: Option<bool>,
    pub message: String,
}

/// Steps an [`Activity`] keeps (the newest).
pub(crate) const ACTIVITY_STEPS: usize = 40;

impl Activity {
    pub fn of(holder: &LockInfo) -> Activity {
        Activity {
            op_id: holder.op_id.clone(),
            operation: holder.operation.clone(),
            holder: holder.holder.clone(),
            pid: holder.pid,
            since: holder.since.clone(),
            ..Default::default()
        }
    }

    /// A step started, went on (replacing its running line) or ended.
    pub fn step(&mut self, step: &str, ok: Option<bool>, message: &str) {
        let n = self.steps.iter().map(|s| s.n).max().unwrap_or(0) + 1;
        let new = ActivityStep {
            n,
            step: step.to_string(),
            ok,
            message: message.to_string(),
        };
        match self.steps.last_mut() {
            Some(last) if last.step == step && last.ok.is_none() => *last = new,
            _ => self.steps.push(new),
        }
        if self.steps.len() > ACTIVITY_STEPS {
            self.steps.remove(0);
        }
    }

    /// The lines a follower prints for what changed since `before` (the same operation's
    /// earlier state, or another operation's).
    pub fn lines_since(&self, before: Option<&Activity>) -> Vec<String> {
        let who = format!("{} #{} by {}", self.operation, self.op_id, self.holder);
        let before = before.filter(|b| b.op_id == self.op_id);
        let mut out = Vec::new();
        if before.is_none() {
            out.push(format!("{who}: started {}", self.since));
        }
        let seen = before.map_or(0, |b| b.steps.iter().map(|s| s.n).max().unwrap_or(0));
        for s in self.steps.iter().filter(|s| s.n > seen) {
            let mark = match s.ok {
                None => "...",
                Some(true) => "ok",
                Some(false) => "FAIL",
            };
            out.push(format!("{who}: {} {mark} {}", s.step, s.message));
        }
        if let Some(r) = &self.result
            && before.and_then(|b| b.result.as_ref()).is_none()
        {
            out.push(format!(
                "{who}: ended {r}: {}",
                self.message.as_deref().unwrap_or_default()
            ));
        }
        out
    }
}

/// Why a lock could not be taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockError {
    /// Another live cutover holds it.
    Held(LockInfo),
    /// A takeover was asked for, and the holder did not let go in time.
    TakeoverTimedOut(LockInfo, Duration),
    /// The file system said no.
    Io(String),
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held(h) => write!(f, "locked by {}", h.describe()),
            LockError::TakeoverTimedOut(h, d) => write!(
                f,
                "asked {} to hand the lock over, and it did not within {} (it finishes a router \
                 change before it lets go); try again",
                h.describe(),
                crate::timefmt::millis(*d)
            ),
            LockError::Io(e) => f.write_str(e),
        }
    }
}

/// The slots an operation moves live traffic between: `from` the live slot before it, `to`
/// the one it makes live (or, for a rolling deploy, the slot it works on). Written flat into
/// the journal, the audit log and notifications (`"from": …, "to": …`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FromTo {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// The versions the `from` and `to` slots of an operation served when it was planned. Written
/// flat (`"from_version": …, "to_version": …`) into the audit log and the switch plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub from_version: Option<String>,
    pub to_version: Option<String>,
}

/// One router's part in a journalled operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalRouter {
    pub name: String,
    /// Its live slot before the operation touched it.
    pub before: Option<String>,
    /// `pending`, `changed`, `failed`, `reverted`, `revert-failed`.
    pub result: String,
}

/// What a running operation is changing, written before the first router command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub op_id: String,
    pub operation: String,
    /// What it does, in words ("switch live to green", "drain blue").
    pub action: String,
    pub environment: String,
    pub user: String,
    pub pid: u32,
    pub started: String,
    /// For switches: the live slot before, and the one being made live.
    #[serde(flatten)]
    pub slots: FromTo,
    /// For a drain or undrain: the slot or `slot/node` it applies to.
    pub target: Option<String>,
    pub routers: Vec<JournalRouter>,
}

impl Journal {
    /// "INTERRUPTED swap blue → green at 03:12:40 (#a1b2c3d4, alice@bastion): router edge-1
    /// switched, edge-2 not"
    pub fn summary(&self) -> String {
        let parts: Vec<String> = self
            .routers
            .iter()
            .map(|r| {
                let what = match r.result.as_str() {
                    "changed" => "changed",
                    "pending" => "not changed",
                    "failed" => "refused",
                    "reverted" => "changed and put back",
                    other => other,
                };
                format!("router `{}` {what}", r.name)
            })
            .collect();
        let at = self.started.get(11..19).unwrap_or(&self.started);
        format!(
            "INTERRUPTED {} at {at} (#{}, {}): {}",
            self.action,
            self.op_id,
            self.user,
            parts.join(", ")
        )
    }
}
