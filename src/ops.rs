//! Operations: swap, rollback, drain, undrain, maintenance, set preview.
//!
//! Every operation runs as plan → gate → apply → verify → watch (a swap or rollback with
//! hooks: plan → gate → warm-up → apply → verify → smoke → watch, see [`crate::hooks`]). Each
//! step is reported as [`Progress`] (the TUI shows it, the CLI prints it) and the whole run is
//! written to the audit log. The TUI and the headless CLI share this engine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use color_eyre::eyre::{Result, eyre};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::audit::{AuditLog, AuditRecord, StepRecord};
use crate::config::Environment;
use crate::model::{AdminState, Health, MaintenanceMode, RouterState};
use crate::notify::EventKind;
use crate::probe::Prober;
use crate::router::{Router, Target};
use crate::state::{Journal, JournalRouter, LockError, LockGuard, LockInfo, Store};

pub mod canary;

/// Errors on the router counters during the watch window above which the cutover fails.
pub const WATCH_ERROR_BUDGET: u64 = 5;
/// How long a rolling deploy waits after draining a node whose router cannot count in-flight
/// requests (capped by `drain_timeout`).
pub const UNKNOWN_SESSIONS_GRACE: Duration = Duration::from_secs(5);
/// Consecutive failed health checks during the watch window that fail the cutover.
pub const WATCH_FAILED_CHECKS: u32 = 2;
/// How often the watch probes the new live slot and reads the routers.
const WATCH_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the watch looks for another cutover's takeover request.
const WATCH_TAKEOVER_POLL: Duration = Duration::from_millis(250);

/// Read one router, giving up after `limit`. The error is the router's own message, or that it
/// did not answer in time.
pub async fn observe_within(
    router: &dyn Router,
    limit: Duration,
) -> std::result::Result<RouterState, String> {
    match tokio::time::timeout(limit, router.observe()).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(_) => Err(format!(
            "no answer within {}",
            crate::timefmt::millis(limit)
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// Make `to` live (default: the preview slot); the old live becomes preview.
    Swap {
        to: Option<String>,
    },
    /// Make the previous live slot live again.
    Rollback,
    Drain(Target),
    Undrain(Target),
    Maintenance {
        on: bool,
        mode: MaintenanceMode,
    },
    SetPreview(String),
    /// Deploy node by node: drain, wait, deploy hook, smoke test, undrain (seed 003).
    Rolling {
        slot: String,
        version: Option<String>,
    },
    /// Finish what an interrupted operation left: bring every router to one slot (`to`, or
    /// the slot that was live before the interrupted switch).
    Recover {
        to: Option<String>,
    },
    /// Move the live traffic to `to` step by step (`steps`: its share at each step, the last
    /// 100), holding each step while an analysis watches the canary; a failed analysis puts
    /// everything back on the live slot at once. The last step is a swap.
    Canary {
        to: String,
        steps: Vec<u8>,
    },
}

impl OpKind {
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Swap { .. } => "swap",
            OpKind::Rollback => "rollback",
            OpKind::Drain(_) => "drain",
            OpKind::Undrain(_) => "undrain",
            OpKind::Maintenance { on: true, .. } => "maintenance-on",
            OpKind::Maintenance { on: false, .. } => "maintenance-off",
            OpKind::SetPreview(_) => "set-preview",
            OpKind::Rolling { .. } => "rolling",
            OpKind::Recover { .. } => "recover",
            OpKind::Canary { .. } => "canary",
        }
    }
}

#[derive(Debug, Clone)]
pub struct OpRequest {
    /// The operation's id: progress, events, the lock, the journal and the audit records all
    /// carry it.
    pub id: String,
    pub kind: OpKind,
    pub force: bool,
    /// Watch the new live slot after a swap or rollback.
    pub watch: bool,
    /// When another cutover holds the environment's lock, ask it to hand the lock over (its
    /// watch ends, and it records who took over) instead of being refused.
    pub take_over: bool,
    /// A one-key rollback (no dialog): the gate also requires the previous live slot to run
    /// the version it served when it was live.
    pub one_key: bool,
    /// A canary: each change of this value ends the current (or next) step's hold early and
    /// goes on to the next step ("promote"). `cutover canary ENV --promote` sends it.
    pub promote: Option<watch::Receiver<u32>>,
}

impl OpRequest {
    /// A watched, unforced request with a new id.
    pub fn new(kind: OpKind) -> OpRequest {
        OpRequest {
            id: new_op_id(),
            kind,
            force: false,
            watch: true,
            take_over: false,
            one_key: false,
            promote: None,
        }
    }
}

/// A new operation id: 8 hex digits from the time, this process and a counter, so that ids
/// from two cutovers on two machines do not meet in one audit log in practice.
pub fn new_op_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.write_u64(SEQ.fetch_add(1, Ordering::Relaxed));
    format!("{:08x}", h.finish() as u32)
}

/// Why a running operation should stop at its next safe point (never in the middle of a
/// router change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Interrupt {
    #[default]
    None,
    /// This cutover started a newer operation on the environment ("rollback #b2c3d4e5").
    Superseded(String),
    /// Another cutover took the lock over.
    TakenOver(LockInfo),
    /// The operator quit (or a signal asked cutover to end).
    Quit,
    /// The lock's lease on the shared store was lost (etcd unreachable, the lease expired):
    /// another cutover may hold the lock now.
    LockLost(String),
}

impl Interrupt {
    /// Why, in words: "superseded by rollback #b2c3d4e5", "cutover quit".
    fn reason(&self) -> String {
        match self {
            Interrupt::None => "no reason".into(),
            Interrupt::Superseded(by) => format!("superseded by {by}"),
            Interrupt::TakenOver(by) => format!("{} took the lock over", by.describe()),
            Interrupt::Quit => "cutover quit".into(),
            Interrupt::LockLost(why) => format!("LOCK LOST ({why})"),
        }
    }

    /// How a watch ended because of it.
    fn watch_ended(&self) -> String {
        match self {
            Interrupt::None => "watch ended".into(),
            Interrupt::Superseded(by) => format!("watch superseded by {by}"),
            Interrupt::TakenOver(by) => {
                format!("watch ended: {} took the lock over", by.describe())
            }
            Interrupt::Quit => "watch abandoned (cutover quit)".into(),
            Interrupt::LockLost(why) => format!("watch ended: LOCK LOST ({why})"),
        }
    }
}

/// How long a `--take-over` waits for the holder to let go: it finishes the router change it
/// is in first.
pub const TAKEOVER_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Plan,
    Gate,
    /// Requests and a command on the target slot before the switch (`warmup_paths`,
    /// `warmup_command`).
    Warmup,
    Apply,
    Verify,
    /// Checks of the new live slot after the switch (`smoke`, `smoke_paths`).
    Smoke,
    Watch,
    /// `on_done`, `on_rollback`, `on_failed`, once the result is known.
    Hook,
}

impl Step {
    /// Every step, in the order an operation runs them.
    pub const ALL: [Step; 8] = [
        Step::Plan,
        Step::Gate,
        Step::Warmup,
        Step::Apply,
        Step::Verify,
        Step::Smoke,
        Step::Watch,
        Step::Hook,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Step::Plan => "plan",
            Step::Gate => "gate",
            Step::Warmup => "warm-up",
            Step::Apply => "apply",
            Step::Verify => "verify",
            Step::Smoke => "smoke",
            Step::Watch => "watch",
            Step::Hook => "hook",
        }
    }
}

/// One gate check and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Done,
    Refused,
    Failed,
    RolledBack,
    /// Applied, but the watch saw the new slot fail and auto-rollback is off.
    Alarm,
    Cancelled,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Done => "done",
            Verdict::Refused => "refused",
            Verdict::Failed => "failed",
            Verdict::RolledBack => "rolled-back",
            Verdict::Alarm => "alarm",
            Verdict::Cancelled => "cancelled",
        }
    }
    pub fn is_success(self) -> bool {
        matches!(self, Verdict::Done)
    }
}

/// What an operation sends while it runs.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // a handful per operation
pub enum Progress {
    Step {
        step: Step,
        ok: Option<bool>,
        message: String,
    },
    /// The watch window's countdown.
    Watching {
        remaining: Duration,
        detail: String,
        /// The verdict's inputs: errors the routers counted on the new live slot since the
        /// switch (the cutover fails above [`WATCH_ERROR_BUDGET`]), health checks made, and
        /// how many of them passed.
        errors: u64,
        checks: u32,
        passed: u32,
    },
    /// The state file changed (previous live slot, last set): readers should reload it.
    Remembered,
    Finished(Outcome),
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub verdict: Verdict,
    pub message: String,
    pub record: AuditRecord,
}

/// Recent health and versions per slot, the gate's input.
#[derive(Debug, Clone, Default)]
pub struct GateInput {
    /// Newest last.
    pub health: BTreeMap<String, Vec<Health>>,
    pub versions: BTreeMap<String, Option<String>>,
}

/// The plan of a switch: from, to, and what the gate says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchPlan {
    pub from: Option<String>,
    pub to: String,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub checks: Vec<Check>,
}

impl SwitchPlan {
    pub fn passes(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }
}

/// The gate: may `to` go live? Pure, so the confirm dialog shows exactly what the engine checks.
pub fn gate(
    need: usize,
    from: Option<&str>,
    to: &str,
    input: &GateInput,
    same_version_check: bool,
) -> SwitchPlan {
    let hist = input.health.get(to).cloned().unwrap_or_default();
    let recent: Vec<Health> = hist.iter().rev().take(need).rev().copied().collect();
    let healthy = recent.len() >= need && recent.iter().all(|h| h.is_serving());
    let symbols: Vec<&str> = recent.iter().map(|h| h.symbol()).collect();
    let streak = hist
        .iter()
        .rev()
        .take_while(|h| h.is_serving())
        .count()
        .min(need);
    let mut checks = vec![Check {
        name: "health",
        ok: healthy,
        detail: if healthy {
            format!("last {need} checks healthy")
        } else {
            format!(
                "`{to}` needs {need} healthy checks in a row: {streak} of {need} so far ({})",
                if symbols.is_empty() {
                    "none yet".into()
                } else {
                    symbols.join(" ")
                }
            )
        },
    }];
    let to_version = input.versions.get(to).cloned().flatten();
    let from_version = from.and_then(|f| input.versions.get(f).cloned().flatten());
    checks.push(Check {
        name: "version",
        ok: to_version.is_some(),
        detail: match &to_version {
            Some(v) => format!("`{to}` runs {v}"),
            None => format!("`{to}`'s version is unknown (its version endpoint did not answer)"),
        },
    });
    if same_version_check {
        let same = to_version.is_some() && to_version == from_version;
        checks.push(Check {
            name: "new version",
            ok: !same,
            // Passes when a version is unknown: this check only catches a swap to what is
            // already live, and refusing would block swapping away from a live slot whose
            // version endpoint is down, when a swap is most needed. It says it could not
            // compare; the version check above refuses an unknown new version on its own.
            detail: match (&to_version, from, &from_version) {
                _ if same => format!(
                    "`{to}` runs the same version as live ({})",
                    to_version.clone().unwrap_or_default()
                ),
                (None, _, _) => format!("`{to}`'s version unknown: cannot compare"),
                (_, None, _) => "no live slot known: cannot compare".into(),
                (_, Some(_), None) => "live slot's version unknown: cannot compare".into(),
                _ => "differs from live".into(),
            },
        });
    }
    SwitchPlan {
        from: from.map(str::to_string),
        to: to.to_string(),
        from_version,
        to_version,
        checks,
    }
}

/// The one-key rollback's extra check: the way back is the version the slot served when it
/// was live, not whatever was deployed there since.
pub fn way_back_check(to: &str, plan: &SwitchPlan, memory: &crate::state::EnvMemory) -> Check {
    let then = memory.previous_live_version.as_deref();
    let now = plan.to_version.as_deref();
    let ok = then.is_some() && then == now;
    Check {
        name: "way back",
        ok,
        detail: match (then, now) {
            (Some(t), Some(n)) if t == n => format!("`{to}` still runs {t}, as when it was live"),
            (Some(t), Some(n)) => {
                format!("`{to}` now runs {n}, not the {t} it served when it was live")
            }
            (None, _) => format!("the version `{to}` served when it was live is not recorded"),
            (Some(t), None) => format!("`{to}`'s version is unknown (it served {t} when live)"),
        },
    }
}

/// Seconds since the epoch, now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Everything an operation needs for one environment.
pub struct Engine {
    pub env: Environment,
    pub routers: Vec<Arc<dyn Router>>,
    pub prober: Prober,
    pub store: Store,
    pub audit: Option<Arc<AuditLog>>,
    /// `[[notify]]` webhooks: told of the start, failed steps and the verdict, never waited for.
    pub notifier: Option<Arc<crate::notify::Notifier>>,
    /// Spacing of the gate's fresh probes when no history is given (CLI).
    pub probe_spacing: Duration,
}

/// Where the gate's health history comes from.
pub enum GateSource {
    /// The TUI's poll history.
    Given(GateInput),
    /// Probe every slot `gate_checks` times now (the CLI).
    ProbeNow,
}

struct Run<'a> {
    engine: &'a Engine,
    tx: mpsc::UnboundedSender<Progress>,
    record: AuditRecord,
    step_started: Instant,
    cancel: watch::Receiver<Interrupt>,
    /// The environment's lock, from before the plan to after the last record.
    lock: Option<LockGuard>,
    /// What is being changed on the routers right now (written before the first command).
    journal: Option<Journal>,
    /// Swap and rollback: the end (audit record, `Finished`, the lock) is left here for
    /// [`Engine::conclude`], which runs the after-hooks first.
    held: Option<Arc<std::sync::Mutex<Option<Held>>>>,
}

/// What [`Run::finish`] leaves for [`Engine::conclude`].
struct Held {
    tx: mpsc::UnboundedSender<Progress>,
    lock: Option<LockGuard>,
}

impl Run<'_> {
    /// Start a step: its time is counted from here.
    fn step(&mut self, step: Step, message: impl Into<String>) {
        self.step_started = Instant::now();
        self.note(step, message);
    }
    /// Say how a running step is going, without restarting its clock.
    fn note(&self, step: Step, message: impl Into<String>) {
        let message = message.into();
        if let Some(g) = &self.lock {
            g.share_step(step.label(), None, &message);
        }
        let _ = self.tx.send(Progress::Step {
            step,
            ok: None,
            message,
        });
    }
    fn done(&mut self, step: Step, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.record.steps.push(StepRecord {
            step: step.label().into(),
            ok,
            ms: self.step_started.elapsed().as_millis() as u64,
            detail: crate::audit::redact(&detail),
        });
        if let Some(g) = &self.lock {
            g.share_step(step.label(), Some(ok), &crate::audit::redact(&detail));
        }
        if let (false, Some(n)) = (ok, &self.engine.notifier) {
            n.tell(
                EventKind::StepFailed,
                &self.record,
                Some(step.label()),
                &detail,
            );
        }
        let _ = self.tx.send(Progress::Step {
            step,
            ok: Some(ok),
            message: detail,
        });
    }
    fn finish(mut self, verdict: Verdict, message: impl Into<String>) -> Outcome {
        let message = message.into();
        self.record.time = crate::timefmt::rfc3339(SystemTime::now());
        self.record.result = verdict.label().into();
        self.record.message = crate::audit::redact(&message);
        if let Some(g) = &self.lock {
            g.share_result(&self.record.result, &self.record.message);
        }
        let out = Outcome {
            verdict,
            message,
            record: self.record.clone(),
        };
        if let Some(h) = self.held.take()
            && let Ok(mut slot) = h.lock()
        {
            *slot = Some(Held {
                tx: self.tx.clone(),
                lock: self.lock.take(),
            });
            return out;
        }
        self.engine.record_result(&out);
        let _ = self.tx.send(Progress::Finished(out.clone()));
        // The lock goes last: after the record, so the next holder's records follow this one.
        drop(self.lock.take());
        out
    }
    /// End on a failed step whose detail is also the outcome's message.
    fn fail(mut self, step: Step, verdict: Verdict, why: impl Into<String>) -> Outcome {
        let why = why.into();
        self.done(step, false, why.clone());
        self.finish(verdict, why)
    }

    /// Before the first router command: the journal (for a crash) and the intent record (for
    /// the audit trail), both durable before anything changes.
    fn begin_changes(
        &mut self,
        action: String,
        from: Option<&str>,
        to: Option<&str>,
        before: &[Option<String>],
    ) {
        let j = Journal {
            op_id: self.record.id.clone(),
            operation: self.record.operation.clone(),
            action: action.clone(),
            environment: self.engine.env.name.clone(),
            user: self.record.user.clone(),
            pid: std::process::id(),
            started: crate::timefmt::rfc3339(SystemTime::now()),
            from: from.map(str::to_string),
            to: to.map(str::to_string),
            target: None,
            routers: self
                .engine
                .routers
                .iter()
                .zip(before.iter().chain(std::iter::repeat(&None)))
                .map(|(r, b)| JournalRouter {
                    name: r.name().to_string(),
                    before: b.clone(),
                    result: "pending".into(),
                })
                .collect(),
        };
        if let Some(g) = &self.lock
            && let Err(e) = self.engine.store.write_journal(g, &j)
        {
            tracing::error!("cannot write the operation journal: {e:#}");
        }
        self.journal = Some(j);
        if let Some(a) = &self.engine.audit {
            let mut intent = self.record.clone();
            intent.time = crate::timefmt::rfc3339(SystemTime::now());
            intent.result = "started".into();
            intent.message = crate::audit::redact(&format!("intent: {action}"));
            a.write(&intent);
        }
        if let Some(n) = &self.engine.notifier {
            n.tell(EventKind::Start, &self.record, None, &action);
        }
    }

    /// One router's part of the journalled change ended.
    fn journal_router(&mut self, router: usize, result: &str) {
        let (Some(j), Some(g)) = (self.journal.as_mut(), self.lock.as_ref()) else {
            return;
        };
        if let Some(r) = j.routers.get_mut(router) {
            r.result = result.to_string();
        }
        if let Err(e) = self.engine.store.write_journal(g, j) {
            tracing::error!("cannot update the operation journal: {e:#}");
        }
    }

    /// The routers are consistent again.
    fn end_changes(&mut self) {
        if let (Some(_), Some(g)) = (self.journal.take(), self.lock.as_ref()) {
            self.engine.store.close_journal(g);
        }
    }

    /// Why this operation should stop at this safe point, if it should: an interrupt from
    /// this cutover, or another cutover's takeover request.
    fn interrupted(&self) -> Option<Interrupt> {
        let i = self.cancel.borrow().clone();
        if i != Interrupt::None {
            return Some(i);
        }
        if let Some(why) = self.lock.as_ref().and_then(|g| g.lost()) {
            return Some(Interrupt::LockLost(why));
        }
        self.engine
            .store
            .takeover_request(&self.engine.env.name, &self.record.id)
            .map(Interrupt::TakenOver)
    }

    fn remember(&self, f: impl FnOnce(&mut crate::state::EnvMemory)) {
        if let Some(g) = &self.lock {
            if let Err(e) = self.engine.store.update(g, f) {
                tracing::error!("cannot write the state file: {e:#}");
            }
            let _ = self.tx.send(Progress::Remembered);
        }
    }
}

impl Engine {
    /// An operation's result: to the audit log, and to the notification channels.
    fn record_result(&self, out: &Outcome) {
        if let Some(a) = &self.audit {
            a.write(&out.record);
        }
        if let (Some(n), Some(k)) = (&self.notifier, EventKind::from_result(out.verdict.label())) {
            n.tell(k, &out.record, None, &out.message);
        }
    }

    /// Observe every router; all must answer.
    pub async fn observe_all(&self) -> Result<Vec<RouterState>> {
        let mut out = Vec::new();
        for r in &self.routers {
            let s = observe_within(r.as_ref(), r.observe_timeout())
                .await
                .map_err(|e| eyre!("router `{}`: {e}", r.name()))?;
            out.push(s);
        }
        if out.is_empty() {
            return Err(eyre!(
                "environment `{}` has no [[environment.router]]; nothing to command",
                self.env.name
            ));
        }
        Ok(out)
    }

    /// The live slot all routers agree on, or an error naming the disagreement.
    pub fn agreed_live(&self, states: &[RouterState]) -> Result<Option<String>> {
        let first = states.first().and_then(|s| s.live.clone());
        for (r, s) in self.routers.iter().zip(states) {
            if s.live != first {
                return Err(eyre!(
                    "routers disagree: `{}` sends live traffic to {} but `{}` to {}; fix the \
                     odd one first (cutover swap --to SLOT --force applies to all)",
                    self.routers[0].name(),
                    first.as_deref().unwrap_or("nothing"),
                    r.name(),
                    s.live.as_deref().unwrap_or("nothing")
                ));
            }
        }
        Ok(first)
    }

    /// Probe every slot `n` times, spaced, for the gate (the CLI has no history).
    pub async fn fresh_gate_input(&self, n: usize) -> GateInput {
        let mut input = GateInput::default();
        for i in 0..n {
            if i > 0 {
                tokio::time::sleep(self.probe_spacing).await;
            }
            let results = futures_util::future::join_all(
                self.env.slots.iter().map(|s| self.prober.probe_slot(s)),
            )
            .await;
            for (slot, r) in self.env.slots.iter().zip(results) {
                input
                    .health
                    .entry(slot.name.clone())
                    .or_default()
                    .push(r.health);
                if r.version.is_some() || !input.versions.contains_key(&slot.name) {
                    input
                        .versions
                        .insert(slot.name.clone(), r.version.map(|v| v.version));
                }
            }
        }
        input
    }

    /// Probe the version served behind a public or preview URL: the slots' version path on
    /// that host, read with the first slot's version pointer.
    pub async fn probe_behind(&self, url: &str) -> crate::probe::UrlProbe {
        let pointer = self
            .env
            .slots
            .first()
            .and_then(|s| s.version_pointer.as_deref());
        self.prober
            .probe_url(&crate::probe::version_url_behind(&self.env, url), pointer)
            .await
    }

    /// Take the environment's lock for operation `id` (asking its holder to hand it over
    /// when `take_over`), off the async threads: the file lock may wait a moment.
    async fn take_lock(
        &self,
        id: &str,
        operation: &str,
        take_over: bool,
    ) -> std::result::Result<(LockGuard, Option<LockInfo>), LockError> {
        let store = self.store.clone();
        let env = self.env.name.clone();
        let me = LockInfo::me(operation, id);
        tokio::task::spawn_blocking(move || {
            if take_over {
                store.take_over(&env, &me, TAKEOVER_WAIT)
            } else {
                store.lock(&env, &me).map(|g| (g, None))
            }
        })
        .await
        .unwrap_or_else(|e| Err(LockError::Io(format!("the lock task failed: {e}"))))
    }

    /// Run one operation to its end. Progress goes to `tx`; `cancel` stops it at its next safe
    /// point (never inside a router change).
    pub async fn run(
        &self,
        req: OpRequest,
        gate_source: GateSource,
        tx: mpsc::UnboundedSender<Progress>,
        cancel: watch::Receiver<Interrupt>,
    ) -> Outcome {
        let now = crate::timefmt::rfc3339(SystemTime::now());
        let mut run = Run {
            engine: self,
            tx,
            record: AuditRecord {
                time: now.clone(),
                id: req.id.clone(),
                started: now,
                user: crate::paths::user_at_host(),
                environment: self.env.name.clone(),
                operation: req.kind.name().into(),
                from: None,
                to: None,
                from_version: None,
                to_version: None,
                forced: req.force,
                one_key: req.one_key,
                result: String::new(),
                message: String::new(),
                steps: Vec::new(),
            },
            step_started: Instant::now(),
            cancel,
            lock: None,
            journal: None,
            held: None,
        };

        // The lock first: the plan must read routers nobody else is changing.
        run.step(Step::Plan, "taking the lock");
        match self
            .take_lock(&req.id, req.kind.name(), req.take_over)
            .await
        {
            Ok((g, prev)) => {
                if let Some(p) = prev {
                    run.note(
                        Step::Plan,
                        format!("took the lock over from {}", p.describe()),
                    );
                    run.record.message = format!("took over from {}", p.describe());
                }
                run.lock = Some(g);
            }
            Err(LockError::Held(h)) => {
                let why = format!(
                    "`{}` is {}: wait for it to end, or take it over (`--take-over`; in the \
                     TUI, the take-over key in the confirm dialog): its watch ends and it \
                     records who took over",
                    self.env.name,
                    LockError::Held(h)
                );
                return run.fail(Step::Plan, Verdict::Refused, why);
            }
            Err(e) => return run.fail(Step::Plan, Verdict::Refused, e.to_string()),
        }
        if !matches!(req.kind, OpKind::Recover { .. })
            && let Some(j) = self.store.journal(&self.env.name)
        {
            let why = format!(
                "{}; resolve it first: `cutover recover {}` brings every router to one slot",
                j.summary(),
                self.env.name
            );
            return run.fail(Step::Plan, Verdict::Refused, why);
        }

        // Plan: read the routers' real state.
        run.note(Step::Plan, "reading the routers");
        let states = match self.observe_all().await {
            Ok(s) => s,
            Err(e) => {
                run.done(Step::Plan, false, format!("{e:#}"));
                return run.finish(Verdict::Failed, format!("cannot read the routers: {e:#}"));
            }
        };
        if let OpKind::Recover { to } = &req.kind {
            return self.recover(run, to.clone(), &states).await;
        }
        let live = match self.agreed_live(&states) {
            Ok(l) => l,
            Err(e) if !req.force => {
                return run.fail(Step::Plan, Verdict::Refused, format!("{e:#}"));
            }
            Err(_) => states[0].live.clone(),
        };
        let preview = states[0].preview.clone();

        match &req.kind {
            OpKind::Swap { .. } | OpKind::Rollback => {
                let (to, rollback) = match &req.kind {
                    OpKind::Swap { to: Some(t) } => (Some(t.clone()), false),
                    OpKind::Swap { to: None } => (preview.clone(), false),
                    _ => (self.store.env(&self.env.name).previous_live, true),
                };
                let Some(to) = to else {
                    let why = if rollback {
                        "no previous live slot is recorded for this environment; use \
                         `swap --to SLOT` to choose one"
                            .to_string()
                    } else {
                        let others: Vec<&str> = self
                            .env
                            .slots
                            .iter()
                            .map(|s| s.name.as_str())
                            .filter(|s| Some(*s) != live.as_deref())
                            .collect();
                        format!(
                            "no preview slot to swap to; use `swap --to SLOT` (one of: {})",
                            others.join(", ")
                        )
                    };
                    return run.fail(Step::Plan, Verdict::Refused, why);
                };
                if self.env.slot(&to).is_none() {
                    let why = format!("there is no slot `{to}` in `{}`", self.env.name);
                    return run.fail(Step::Plan, Verdict::Refused, why);
                }
                if live.as_deref() == Some(to.as_str()) {
                    return run.fail(
                        Step::Plan,
                        Verdict::Refused,
                        format!("`{to}` is already live"),
                    );
                }
                run.record.from = live.clone();
                run.record.to = Some(to.clone());
                run.done(
                    Step::Plan,
                    true,
                    format!("{} → {to}", live.as_deref().unwrap_or("nothing")),
                );
                let held = Arc::new(std::sync::Mutex::new(None));
                run.held = Some(held.clone());
                let out = self
                    .switch(run, req, gate_source, live, preview, to, rollback)
                    .await;
                self.conclude(out, &held).await
            }
            OpKind::Rolling { slot, version } => {
                let (slot, version) = (slot.clone(), version.clone());
                self.rolling(run, &slot, version.as_deref()).await
            }
            OpKind::Canary { to, steps } => {
                let (to, steps) = (to.clone(), steps.clone());
                let held = Arc::new(std::sync::Mutex::new(None));
                let out = self
                    .canary(
                        run,
                        req,
                        gate_source,
                        live,
                        preview,
                        to,
                        steps,
                        held.clone(),
                    )
                    .await;
                self.conclude(out, &held).await
            }
            other => self.simple(run, other.clone(), states).await,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn switch(
        &self,
        mut run: Run<'_>,
        req: OpRequest,
        gate_source: GateSource,
        from: Option<String>,
        preview: Option<String>,
        to: String,
        rollback: bool,
    ) -> Outcome {
        // Gate.
        run.step(Step::Gate, format!("checking `{to}`"));
        let input = match gate_source {
            GateSource::Given(i) => i,
            GateSource::ProbeNow => self.fresh_gate_input(self.env.gate_checks).await,
        };
        let mut plan = gate(
            self.env.gate_checks,
            from.as_deref(),
            &to,
            &input,
            !rollback,
        );
        if req.one_key {
            let memory = self.store.env(&self.env.name);
            plan.checks.push(way_back_check(&to, &plan, &memory));
        }
        run.record.from_version = plan.from_version.clone();
        run.record.to_version = plan.to_version.clone();
        if !plan.passes() {
            let failed: Vec<String> = plan
                .failed_checks()
                .iter()
                .map(|c| c.detail.clone())
                .collect();
            if !req.force {
                let why = format!(
                    "refused: {}; to do it anyway, force it (F in the confirm dialog, --force)",
                    failed.join("; ")
                );
                return run.fail(Step::Gate, Verdict::Refused, why);
            }
            run.done(
                Step::Gate,
                true,
                format!("FORCED past: {}", failed.join("; ")),
            );
        } else {
            run.done(Step::Gate, true, "all checks passed");
        }

        // Warm-up: the target slot, directly, before any router changes. Never on the way
        // back (a rollback must be fast).
        if !rollback && self.env.hooks.has_warmup() {
            run.step(Step::Warmup, format!("warming `{to}` up"));
            let cancel = run.cancel.clone();
            let warmed = tokio::select! {
                w = self.warm_up(&mut run, &to, plan.to_version.as_deref()) => w,
                i = self.next_interrupt(&req.id, cancel) => {
                    let why = format!("nothing changed: stopped during the warm-up ({})", i.reason());
                    return run.fail(Step::Warmup, Verdict::Cancelled, why);
                }
            };
            match warmed {
                Ok(detail) => run.done(Step::Warmup, true, detail),
                Err(why) if !req.force => {
                    let why = format!(
                        "refused: the warm-up of `{to}` failed: {why}; nothing was changed, \
                         traffic stays on `{}`; to switch anyway, force it (F in the confirm \
                         dialog, --force)",
                        from.as_deref().unwrap_or("nothing")
                    );
                    return run.fail(Step::Warmup, Verdict::Refused, why);
                }
                Err(why) => run.done(Step::Warmup, true, format!("FORCED past: {why}")),
            }
        }
        if let Some(i) = run.interrupted() {
            let why = format!(
                "nothing changed: stopped before the switch ({})",
                i.reason()
            );
            return run.finish(Verdict::Cancelled, why);
        }

        // Apply, verify.
        if let Err(e) = self
            .apply_switch(&mut run, &to, from.as_deref(), preview.as_deref())
            .await
        {
            run.end_changes();
            return run.finish(Verdict::Failed, e);
        }
        if let Err(e) = self
            .verify_switch(&mut run, &to, plan.to_version.as_deref())
            .await
        {
            // Put things back as they were, so the proxy serves what it served before.
            let mut why = e;
            if let Some(f) = &from {
                why = match self.switch_routers(&mut run, f).await {
                    Ok(()) => format!("{why}; switched back to `{f}`"),
                    Err(back) => format!("{why}; switching back to `{f}` failed: {back}"),
                };
            }
            run.end_changes();
            return run.finish(Verdict::Failed, why);
        }
        run.end_changes();
        run.remember(|m| {
            m.previous_live = from.clone();
            m.previous_live_version = plan.from_version.clone();
            m.last_set_live = Some(to.clone());
            m.switched_at = Some(unix_now());
            m.last_switch = Some(if rollback { "rollback" } else { "swap" }.into());
            if preview.as_deref() == Some(to.as_str()) {
                m.last_set_preview = from.clone();
            }
        });

        // Smoke test: the new live slot, as users reach it. A failure is a failed cutover,
        // handled as a failing watch is.
        if self.env.hooks.has_smoke() {
            run.step(Step::Smoke, format!("smoke-testing `{to}`"));
            let smoked = tokio::select! {
                s = self.smoke_test_live(&to, plan.to_version.as_deref()) => s,
                i = self.next_interrupt(&req.id, run.cancel.clone()) => {
                    let why = format!(
                        "`{to}` is live; smoke test abandoned ({}), nothing rolled back",
                        i.reason()
                    );
                    return run.fail(Step::Smoke, Verdict::Cancelled, why);
                }
            };
            match smoked {
                Ok(detail) => run.done(Step::Smoke, true, detail),
                Err(why) => {
                    run.done(Step::Smoke, false, why.clone());
                    let why = format!("the smoke test of `{to}` failed: {why}");
                    return self.after_failure(run, why, &to, from.as_deref()).await;
                }
            }
        }

        if !req.watch || self.env.watch.is_zero() {
            return run.finish(Verdict::Done, format!("`{to}` is live"));
        }
        if let Some(i) = run.interrupted() {
            let why = format!("`{to}` is live; {} before it began", i.watch_ended());
            return run.finish(Verdict::Cancelled, why);
        }
        self.watch(run, &to, from.as_deref()).await
    }

    /// Switch every router to `to` (one by one, or all at once as configured); on a failure,
    /// switch back the ones already changed, read every router again, and say where each
    /// ended. The journal follows each router.
    async fn switch_routers(&self, run: &mut Run<'_>, to: &str) -> std::result::Result<(), String> {
        let before: Vec<Option<String>> = match self.observe_all().await {
            Ok(s) => s.into_iter().map(|s| s.live).collect(),
            Err(_) => vec![None; self.routers.len()],
        };
        let from = run.record.from.clone();
        run.begin_changes(
            format!(
                "{} {} → {to}",
                run.record.operation,
                from.as_deref().unwrap_or("?")
            ),
            from.as_deref(),
            Some(to),
            &before,
        );
        // The journal's fenced write is refused once the lock is lost: no router command then.
        if let Some(why) = run.lock.as_ref().and_then(|g| g.lost()) {
            return Err(format!("LOCK LOST, no router was changed: {why}"));
        }
        let mut results: Vec<Option<std::result::Result<(), String>>> =
            vec![None; self.routers.len()];
        match self.env.fleet {
            crate::config::FleetOrder::Sequential => {
                for (i, r) in self.routers.iter().enumerate() {
                    let res = r.switch_live(to).await.map_err(|e| format!("{e:#}"));
                    let failed = res.is_err();
                    run.journal_router(i, if failed { "failed" } else { "changed" });
                    results[i] = Some(res);
                    if failed {
                        break;
                    }
                }
            }
            crate::config::FleetOrder::Parallel => {
                let all =
                    futures_util::future::join_all(self.routers.iter().map(|r| r.switch_live(to)))
                        .await;
                for (i, res) in all.into_iter().enumerate() {
                    run.journal_router(i, if res.is_ok() { "changed" } else { "failed" });
                    results[i] = Some(res.map_err(|e| format!("{e:#}")));
                }
            }
        }
        let failures: Vec<String> = self
            .routers
            .iter()
            .zip(&results)
            .filter_map(|(r, res)| match res {
                Some(Err(e)) => Some(format!(
                    "router `{}` refused the switch to `{to}`: {e}",
                    r.name()
                )),
                _ => None,
            })
            .collect();
        if failures.is_empty() {
            return Ok(());
        }
        let mut msg = failures.join("; ");
        let mut stuck = Vec::new();
        for (i, ((r, res), back)) in self.routers.iter().zip(&results).zip(&before).enumerate() {
            let Some(back) = back.as_deref().filter(|b| *b != to) else {
                continue;
            };
            // A router that refused may still have changed (a script that switched, then
            // failed to reload): read it, and put back every router that now serves `to`.
            let changed = match res {
                Some(Ok(())) => true,
                Some(Err(_)) => observe_within(r.as_ref(), r.observe_timeout())
                    .await
                    .is_ok_and(|s| s.live.as_deref() == Some(to)),
                None => false,
            };
            if !changed {
                continue;
            }
            let res = r.switch_live(back).await;
            // The router's own state decides, not the command's exit: a script may fail after
            // switching.
            let shows_back = res.is_ok()
                || observe_within(r.as_ref(), r.observe_timeout())
                    .await
                    .is_ok_and(|s| s.live.as_deref() == Some(back));
            match (res, shows_back) {
                (Ok(()), _) => {
                    run.journal_router(i, "reverted");
                    msg.push_str(&format!("; `{}` switched back to `{back}`", r.name()));
                }
                (Err(e), true) => {
                    run.journal_router(i, "reverted");
                    msg.push_str(&format!(
                        "; `{}` switched back to `{back}` (it shows `{back}`, though it said: \
                         {e:#})",
                        r.name()
                    ));
                }
                (Err(e), false) => {
                    run.journal_router(i, "revert-failed");
                    stuck.push(r.name().to_string());
                    msg.push_str(&format!(
                        "; `{}` could NOT be switched back to `{back}`: {e:#}",
                        r.name()
                    ));
                }
            }
        }
        // Where each one ended, read again: the verdict's first words say so when they do not
        // agree.
        let (now, agree) = self.where_routers_are_agreeing().await;
        msg.push_str(&format!("; now {now}"));
        if !stuck.is_empty() || !agree {
            let odd = if stuck.is_empty() {
                String::new()
            } else {
                format!(" ({} not put back)", stuck.join(", "))
            };
            msg = format!("ROUTERS DISAGREE{odd}: {msg}");
        }
        Err(msg)
    }

    /// Each router's live slot, read now ("`edge-1` → blue, `edge-2` → green"), and whether
    /// they all show the same one.
    async fn where_routers_are_agreeing(&self) -> (String, bool) {
        let mut lives = Vec::new();
        let mut parts = Vec::new();
        for r in &self.routers {
            match observe_within(r.as_ref(), r.observe_timeout()).await {
                Ok(s) => {
                    parts.push(format!(
                        "`{}` → {}",
                        r.name(),
                        s.live.as_deref().unwrap_or("nothing")
                    ));
                    lives.push(Some(s.live));
                }
                Err(e) => {
                    parts.push(format!("`{}` unreadable ({e})", r.name()));
                    lives.push(None);
                }
            }
        }
        let agree = lives.windows(2).all(|w| w[0] == w[1]) && lives.iter().all(Option::is_some);
        (parts.join(", "), agree)
    }

    /// Each router's live slot, read now: "`edge-1` → blue, `edge-2` → green".
    async fn where_routers_are(&self) -> String {
        self.where_routers_are_agreeing().await.0
    }

    async fn apply_switch(
        &self,
        run: &mut Run<'_>,
        to: &str,
        from: Option<&str>,
        preview: Option<&str>,
    ) -> std::result::Result<(), String> {
        run.step(Step::Apply, format!("switching live to `{to}`"));
        if let Err(e) = self.switch_routers(run, to).await {
            run.done(Step::Apply, false, e.clone());
            return Err(e);
        }
        // A swap exchanges: the old live becomes the preview (as Azure's swap does).
        if preview == Some(to)
            && let Some(f) = from
        {
            for r in &self.routers {
                if r.supports(crate::router::Verb::SetPreview)
                    && let Err(e) = r.set_preview(f).await
                {
                    tracing::warn!("router `{}` kept its preview: {e:#}", r.name());
                }
            }
        }
        run.done(Step::Apply, true, format!("routers switched to `{to}`"));
        Ok(())
    }

    async fn verify_switch(
        &self,
        run: &mut Run<'_>,
        to: &str,
        to_version: Option<&str>,
    ) -> std::result::Result<(), String> {
        run.step(Step::Verify, "reading the routers back");
        let deadline = Instant::now() + self.env.verify_timeout;
        loop {
            match self.observe_all().await {
                Ok(states) if states.iter().all(|s| s.live.as_deref() == Some(to)) => break,
                Ok(states) if Instant::now() >= deadline => {
                    let seen: Vec<String> = self
                        .routers
                        .iter()
                        .zip(&states)
                        .map(|(r, s)| {
                            format!(
                                "`{}` shows {}",
                                r.name(),
                                s.live.as_deref().unwrap_or("nothing")
                            )
                        })
                        .collect();
                    let why = format!(
                        "the router accepted the switch but did not change: {} live after {}",
                        seen.join(", "),
                        crate::timefmt::millis(self.env.verify_timeout)
                    );
                    run.done(Step::Verify, false, why.clone());
                    return Err(why);
                }
                Err(e) if Instant::now() >= deadline => {
                    let why = format!("cannot read the routers back: {e:#}");
                    run.done(Step::Verify, false, why.clone());
                    return Err(why);
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        // The environment's public URL, and each router's own (a fleet of frontends).
        let mut urls: Vec<&str> = Vec::new();
        for u in self
            .env
            .public_url
            .as_deref()
            .into_iter()
            .chain(self.env.routers.iter().filter_map(|r| r.public_url()))
        {
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        let Some(want) = to_version.filter(|_| !urls.is_empty()) else {
            run.done(Step::Verify, true, format!("routers show `{to}` live"));
            return Ok(());
        };
        let pointer = self.env.slot(to).and_then(|s| s.version_pointer.clone());
        for url in &urls {
            let vurl = crate::probe::version_url_behind(&self.env, url);
            loop {
                let p = self.prober.probe_url(&vurl, pointer.as_deref()).await;
                let got = p.version.as_ref().map(|v| v.version.clone());
                if got.as_deref() == Some(want) {
                    break;
                }
                if Instant::now() >= deadline {
                    let why = format!(
                        "the router shows `{to}` live but {vurl} serves {} (wanted {want})",
                        got.map_or_else(
                            || p.error.map_or("nothing".into(), |e| e.to_string()),
                            |g| format!("version {g}")
                        )
                    );
                    run.done(Step::Verify, false, why.clone());
                    return Err(why);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let what = if urls.len() == 1 {
            "public URL serves".to_string()
        } else {
            format!("all {} public URLs serve", urls.len())
        };
        run.done(
            Step::Verify,
            true,
            format!("routers show `{to}`; {what} {want}"),
        );
        Ok(())
    }

    async fn watch(&self, mut run: Run<'_>, to: &str, from: Option<&str>) -> Outcome {
        let window = self.env.watch;
        run.step(
            Step::Watch,
            format!("watching `{to}` for {}", crate::timefmt::millis(window)),
        );
        let Some(slot) = self.env.slot(to).cloned() else {
            return run.finish(Verdict::Done, format!("`{to}` is live"));
        };
        let errors_of = |states: &[RouterState]| -> u64 {
            states
                .iter()
                .filter_map(|s| s.slots.get(to).and_then(|r| r.errors))
                .sum()
        };
        let base_errors = self.observe_all().await.map(|s| errors_of(&s)).unwrap_or(0);
        let started = Instant::now();
        let end = started + window;
        let mut next_check = started + WATCH_CHECK_EVERY;
        let mut failed_in_a_row = 0;
        let mut checks: u32 = 0;
        let mut passed: u32 = 0;
        let mut cancel = run.cancel.clone();
        let failure: Option<String> = loop {
            let remaining = end.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break None;
            }
            // Wake for the next check, an interrupt from this cutover, or every
            // WATCH_TAKEOVER_POLL to look for another cutover's takeover request.
            let wake = next_check
                .min(end)
                .min(Instant::now() + WATCH_TAKEOVER_POLL);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = cancel.changed() => {}
            }
            if let Some(i) = run.interrupted() {
                let why = format!(
                    "`{to}` is live; {} after {}",
                    i.watch_ended(),
                    crate::timefmt::millis(started.elapsed())
                );
                run.done(Step::Watch, true, why.clone());
                return run.finish(Verdict::Cancelled, why);
            }
            if Instant::now() < next_check.min(end) {
                continue;
            }
            next_check = Instant::now() + WATCH_CHECK_EVERY;
            let r = self.prober.probe_slot(&slot).await;
            checks += 1;
            if r.health.is_serving() {
                passed += 1;
                failed_in_a_row = 0;
            } else {
                failed_in_a_row += 1;
            }
            let states = self.observe_all().await;
            // The slot this watch guards must still be the live one: if someone else made
            // another slot live, this watch has nothing left to judge, and rolling back
            // would undo their change.
            if let Ok(st) = &states
                && let Some(other) = st.iter().find_map(|s| s.live.clone().filter(|l| l != to))
            {
                let why = format!(
                    "`{other}` was made live by someone else during the watch of `{to}`; \
                     watch ended, nothing rolled back"
                );
                run.done(Step::Watch, false, why.clone());
                return run.finish(Verdict::Cancelled, why);
            }
            let errors = states
                .map(|s| errors_of(&s).saturating_sub(base_errors))
                .unwrap_or(0);
            let detail = format!(
                "{to} {} · {errors} new err · {checks} checks",
                r.health.label()
            );
            let _ = run.tx.send(Progress::Watching {
                remaining: end.saturating_duration_since(Instant::now()),
                detail,
                errors,
                checks,
                passed,
            });
            if failed_in_a_row >= WATCH_FAILED_CHECKS {
                break Some(format!(
                    "`{to}` failed {failed_in_a_row} health checks in a row ({})",
                    r.error
                        .map_or_else(|| r.health.label().to_string(), |e| e.to_string())
                ));
            }
            if errors > WATCH_ERROR_BUDGET {
                break Some(format!("the router counted {errors} errors on `{to}`"));
            }
        };
        let Some(why) = failure else {
            run.done(
                Step::Watch,
                true,
                format!(
                    "`{to}` stayed healthy for {}",
                    crate::timefmt::millis(window)
                ),
            );
            return run.finish(Verdict::Done, format!("`{to}` is live and stayed healthy"));
        };
        run.done(Step::Watch, false, why.clone());
        self.after_failure(run, why, to, from).await
    }

    /// The new live slot failed (its watch or its smoke test): roll back by itself when
    /// `auto_rollback` is on, else raise the alarm that names the rollback key.
    async fn after_failure(
        &self,
        mut run: Run<'_>,
        why: String,
        to: &str,
        from: Option<&str>,
    ) -> Outcome {
        let Some(from) = from else {
            return run.finish(
                Verdict::Alarm,
                format!("{why}; no previous live slot to roll back to"),
            );
        };
        if !self.env.auto_rollback {
            return run.finish(
                Verdict::Alarm,
                format!(
                    "{why}; roll back to `{from}`: `cutover rollback {}` (in the TUI: the \
                     rollback key)",
                    self.env.name
                ),
            );
        }
        // Still under this operation's lock, and the routers were just read showing `to`:
        // the rollback moves only traffic this operation moved.
        run.step(Step::Apply, format!("auto-rollback to `{from}`"));
        run.record.operation = format!("{} (auto-rollback)", run.record.operation);
        let result = self.switch_routers(&mut run, from).await;
        run.end_changes();
        match result {
            Ok(()) => {
                run.remember(|m| {
                    m.previous_live = Some(to.to_string());
                    m.previous_live_version = None;
                    m.last_set_live = Some(from.to_string());
                    m.switched_at = Some(unix_now());
                    m.last_switch = Some("rollback".into());
                });
                run.done(Step::Apply, true, format!("rolled back to `{from}`"));
                run.finish(
                    Verdict::RolledBack,
                    format!("{why}; rolled back to `{from}` automatically"),
                )
            }
            Err(e) => {
                run.done(Step::Apply, false, e.clone());
                run.finish(
                    Verdict::Failed,
                    format!("{why}; the automatic rollback failed: {e}"),
                )
            }
        }
    }

    /// The next interrupt of operation `id`: from this cutover (`cancel`), or another
    /// cutover's takeover request (looked for every `WATCH_TAKEOVER_POLL`). For steps that
    /// change nothing on the routers (warm-up, smoke test), which may stop at any point.
    async fn next_interrupt(&self, id: &str, mut cancel: watch::Receiver<Interrupt>) -> Interrupt {
        loop {
            let i = cancel.borrow_and_update().clone();
            if i != Interrupt::None {
                return i;
            }
            if let Some(by) = self.store.takeover_request(&self.env.name, id) {
                return Interrupt::TakenOver(by);
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_TAKEOVER_POLL) => {}
                changed = cancel.changed() => {
                    if changed.is_err() {
                        // Nobody can interrupt any more: only takeovers are left to look for.
                        tokio::time::sleep(WATCH_TAKEOVER_POLL).await;
                    }
                }
            }
        }
    }

    /// The warm-up of `to`: its `warmup_paths` on its own address (each node's, for a slot
    /// with nodes), then `warmup_command`, all within `warmup_timeout`.
    async fn warm_up(
        &self,
        run: &mut Run<'_>,
        to: &str,
        version: Option<&str>,
    ) -> std::result::Result<String, String> {
        let hooks = &self.env.hooks;
        let Some(slot) = self.env.slot(to) else {
            return Err(format!("there is no slot `{to}`"));
        };
        let deadline = Instant::now() + hooks.warmup_timeout;
        let mut parts = Vec::new();
        if !hooks.warmup_paths.is_empty() {
            let addresses: Vec<String> = if slot.nodes.is_empty() {
                vec![slot.address.clone()]
            } else {
                slot.nodes.iter().map(|n| n.address.clone()).collect()
            };
            let tx = run.tx.clone();
            let mut note = |m: String| {
                let _ = tx.send(Progress::Step {
                    step: Step::Warmup,
                    ok: None,
                    message: m,
                });
            };
            parts.push(
                crate::hooks::warm_paths(&hooks.warmup_paths, &addresses, deadline, &mut note)
                    .await?,
            );
        }
        if !hooks.warmup_command.is_empty() {
            let argv = crate::hooks::fill(
                &hooks.warmup_command,
                &[
                    ("env", self.env.name.as_str()),
                    ("slot", to),
                    ("address", slot.address.as_str()),
                    ("version", version.unwrap_or("")),
                ],
            );
            run.note(Step::Warmup, "running warmup_command");
            parts.push(
                command_before(
                    &argv,
                    deadline,
                    &hooks.pass_env,
                    "warmup_command",
                    "warmup_timeout",
                )
                .await?,
            );
        }
        Ok(parts.join("; "))
    }

    /// The smoke test of the new live slot `to`: `smoke_paths` through the public URL (or on
    /// the slot when there is none), then the `smoke` command, within `smoke_timeout`.
    async fn smoke_test_live(
        &self,
        to: &str,
        version: Option<&str>,
    ) -> std::result::Result<String, String> {
        let hooks = &self.env.hooks;
        let Some(slot) = self.env.slot(to) else {
            return Err(format!("there is no slot `{to}`"));
        };
        let deadline = Instant::now() + hooks.smoke_timeout;
        let mut parts = Vec::new();
        if !hooks.smoke_paths.is_empty() {
            let base = self.env.public_url.as_deref().unwrap_or(&slot.address);
            parts.push(crate::hooks::smoke_paths(&hooks.smoke_paths, base, deadline).await?);
        }
        if !hooks.smoke.is_empty() {
            let argv = crate::hooks::fill(
                &hooks.smoke,
                &[
                    ("env", self.env.name.as_str()),
                    ("slot", to),
                    ("address", slot.address.as_str()),
                    ("version", version.unwrap_or("")),
                    ("public_url", self.env.public_url.as_deref().unwrap_or("")),
                ],
            );
            parts.push(
                command_before(&argv, deadline, &hooks.pass_env, "smoke", "smoke_timeout").await?,
            );
        }
        Ok(parts.join("; "))
    }

    /// The end of a swap or rollback: the after-hook its result calls for (`on_done` for a
    /// swap done, `on_rollback` for a rollback done or an automatic rollback, `on_failed` for
    /// a failure or an alarm; none for a refusal or a cancellation), then the audit record,
    /// `Finished`, and the lock. The hook cannot change the result; its failure is recorded.
    async fn conclude(
        &self,
        mut out: Outcome,
        held: &Arc<std::sync::Mutex<Option<Held>>>,
    ) -> Outcome {
        let Some(Held { tx, lock }) = held.lock().ok().and_then(|mut h| h.take()) else {
            return out;
        };
        let hooks = &self.env.hooks;
        let rollback = out.record.operation.starts_with("rollback");
        let (key, argv): (&str, &[String]) = match out.verdict {
            Verdict::Done if rollback => ("on_rollback", &hooks.on_rollback),
            Verdict::Done => ("on_done", &hooks.on_done),
            Verdict::RolledBack => ("on_rollback", &hooks.on_rollback),
            Verdict::Failed | Verdict::Alarm => ("on_failed", &hooks.on_failed),
            Verdict::Refused | Verdict::Cancelled => ("", &[]),
        };
        if !argv.is_empty() {
            let started = Instant::now();
            let _ = tx.send(Progress::Step {
                step: Step::Hook,
                ok: None,
                message: format!("running {key}"),
            });
            // `{live}`: read from the routers, only when the command asks for it.
            let live = if crate::hooks::uses(argv, "live") {
                match self.observe_all().await {
                    Ok(states) => self.agreed_live(&states).ok().flatten().unwrap_or_default(),
                    Err(_) => String::new(),
                }
            } else {
                String::new()
            };
            let r = &out.record;
            let argv = crate::hooks::fill(
                argv,
                &[
                    ("env", self.env.name.as_str()),
                    ("operation", r.operation.as_str()),
                    ("id", r.id.as_str()),
                    ("from", r.from.as_deref().unwrap_or("")),
                    ("to", r.to.as_deref().unwrap_or("")),
                    ("version", r.to_version.as_deref().unwrap_or("")),
                    ("result", out.verdict.label()),
                    ("message", r.message.as_str()),
                    ("live", live.as_str()),
                ],
            );
            let (ok, detail) =
                match crate::hooks::run_command(&argv, hooks.hook_timeout, &hooks.pass_env).await {
                    Ok(said) if said.is_empty() => (true, format!("{key} done")),
                    Ok(said) => (true, format!("{key} done: {said}")),
                    Err(e) => (false, format!("{key} failed (the result stands): {e}")),
                };
            let detail = crate::audit::redact(&detail);
            out.record.steps.push(StepRecord {
                step: Step::Hook.label().into(),
                ok,
                ms: started.elapsed().as_millis() as u64,
                detail: detail.clone(),
            });
            let _ = tx.send(Progress::Step {
                step: Step::Hook,
                ok: Some(ok),
                message: detail,
            });
        }
        self.record_result(&out);
        let _ = tx.send(Progress::Finished(out.clone()));
        // The lock goes last: after the record, so the next holder's records follow this one.
        drop(lock);
        out
    }

    /// `cutover recover`: an interrupted operation left the routers (maybe) disagreeing.
    /// Bring every router to one slot — `to`, or the one that was live before the interrupted
    /// switch — then close the journal. Any other interrupted change (drain, maintenance,
    /// preview) is undone on the routers it reached.
    async fn recover(
        &self,
        mut run: Run<'_>,
        to: Option<String>,
        states: &[RouterState],
    ) -> Outcome {
        let journal = self.store.journal(&self.env.name);
        let now: Vec<String> = self
            .routers
            .iter()
            .zip(states)
            .map(|(r, s)| {
                format!(
                    "`{}` → {}",
                    r.name(),
                    s.live.as_deref().unwrap_or("nothing")
                )
            })
            .collect();
        let found = journal
            .as_ref()
            .map_or("no interrupted operation".to_string(), Journal::summary);
        let switch = journal
            .as_ref()
            .is_none_or(|j| j.to.is_some() || j.operation.starts_with("rollback"));
        if !switch && to.is_none() {
            let Some(j) = journal else {
                return run.fail(Step::Plan, Verdict::Refused, "nothing to recover");
            };
            run.done(
                Step::Plan,
                true,
                format!("{found}; routers now: {}", now.join(", ")),
            );
            return self.undo_simple(run, &j).await;
        }
        let target = to.or_else(|| journal.as_ref().and_then(|j| j.from.clone()));
        let Some(target) = target else {
            let why = format!(
                "{found}; routers now: {}; say which slot they should all serve: \
                 `cutover recover {} --to SLOT`",
                now.join(", "),
                self.env.name
            );
            return run.fail(Step::Plan, Verdict::Refused, why);
        };
        if self.env.slot(&target).is_none() {
            let why = format!("there is no slot `{target}` in `{}`", self.env.name);
            return run.fail(Step::Plan, Verdict::Refused, why);
        }
        run.record.from = journal.as_ref().and_then(|j| j.to.clone());
        run.record.to = Some(target.clone());
        run.done(
            Step::Plan,
            true,
            format!(
                "{found}; routers now: {}; all to `{target}`",
                now.join(", ")
            ),
        );
        run.step(Step::Apply, format!("bringing every router to `{target}`"));
        let before: Vec<Option<String>> = states.iter().map(|s| s.live.clone()).collect();
        run.begin_changes(
            format!("recover: every router to {target}"),
            None,
            Some(&target),
            &before,
        );
        let mut failures = Vec::new();
        for (i, (r, s)) in self.routers.iter().zip(states).enumerate() {
            if s.live.as_deref() == Some(target.as_str()) {
                // A canary's leftover share goes back to the live slot.
                if let Some(w) = &s.weights {
                    match r.set_weights(&w.live, &w.canary, 0).await {
                        Ok(()) => run.journal_router(i, "changed"),
                        Err(e) => {
                            run.journal_router(i, "failed");
                            failures.push(format!(
                                "`{}` refused 0 % on `{}`: {e:#}",
                                r.name(),
                                w.canary
                            ));
                        }
                    }
                    continue;
                }
                run.journal_router(i, "unchanged");
                continue;
            }
            match r.switch_live(&target).await {
                Ok(()) => run.journal_router(i, "changed"),
                Err(e) => {
                    run.journal_router(i, "failed");
                    failures.push(format!("`{}` refused: {e:#}", r.name()));
                }
            }
        }
        if !failures.is_empty() {
            let why = format!(
                "{}; now {} (the journal is kept: run recover again)",
                failures.join("; "),
                self.where_routers_are().await
            );
            return run.fail(Step::Apply, Verdict::Failed, why);
        }
        run.done(
            Step::Apply,
            true,
            format!("every router told to serve `{target}`"),
        );
        if let Err(e) = self.verify_switch(&mut run, &target, None).await {
            return run.finish(Verdict::Failed, format!("{e} (the journal is kept)"));
        }
        run.end_changes();
        // The journal of the interrupted operation, if it was not this one's.
        if let Some(g) = &run.lock {
            self.store.close_journal(g);
        }
        if let Some(j) = &journal {
            let previous = j.from.clone().filter(|f| *f != target).or(j.to.clone());
            run.remember(|m| {
                m.last_set_live = Some(target.clone());
                if previous.as_deref() != Some(target.as_str()) {
                    m.previous_live = previous.clone();
                }
            });
        }
        let msg = format!(
            "every router serves `{target}` ({})",
            self.where_routers_are().await
        );
        run.finish(Verdict::Done, msg)
    }

    /// Undo an interrupted drain, undrain, maintenance or preview change on the routers it
    /// reached.
    async fn undo_simple(&self, mut run: Run<'_>, j: &Journal) -> Outcome {
        run.step(Step::Apply, format!("undoing: {}", j.action));
        let Some(kind) = undo_of(j) else {
            let why = format!(
                "cutover cannot undo `{}` by itself; set it as it should be (e.g. `cutover \
                 maintenance {} on|off`), then `cutover unlock {}` clears the journal",
                j.action, self.env.name, self.env.name
            );
            return run.fail(Step::Apply, Verdict::Refused, why);
        };
        let mut failures = Vec::new();
        for (r, jr) in self.routers.iter().zip(&j.routers) {
            if jr.result != "changed" {
                continue;
            }
            if let Err(e) = apply_simple(r.as_ref(), &kind, jr.before.as_deref()).await {
                failures.push(format!("`{}`: {e:#}", r.name()));
            }
        }
        if !failures.is_empty() {
            return run.fail(Step::Apply, Verdict::Failed, failures.join("; "));
        }
        run.done(Step::Apply, true, format!("undone: {}", describe(&kind)));
        if let Some(g) = &run.lock {
            self.store.close_journal(g);
        }
        run.finish(Verdict::Done, format!("undid the interrupted {}", j.action))
    }

    /// A rolling deploy over the nodes of a slot. Stops at the first failure, leaving that node
    /// out (drained) and the rest serving.
    async fn rolling(&self, mut run: Run<'_>, slot_name: &str, version: Option<&str>) -> Outcome {
        let Some(rolling) = self.env.rolling.clone() else {
            let why = format!(
                "`{}` has no [environment.rolling] section: add a `deploy` command",
                self.env.name
            );
            return run.fail(Step::Plan, Verdict::Refused, why);
        };
        let Some(slot) = self.env.slot(slot_name).cloned() else {
            let why = format!("there is no slot `{slot_name}`");
            return run.fail(Step::Plan, Verdict::Refused, why);
        };
        if slot.nodes.is_empty() {
            let why = format!(
                "slot `{slot_name}` has no nodes; list them as `nodes = [...]` to roll them"
            );
            return run.fail(Step::Plan, Verdict::Refused, why);
        }
        run.record.to = Some(slot_name.to_string());
        run.record.to_version = version.map(str::to_string);
        let n = slot.nodes.len();
        run.done(
            Step::Plan,
            true,
            format!("{n} nodes of `{slot_name}`, one at a time"),
        );
        for (i, node) in slot.nodes.iter().enumerate() {
            let label = format!("{} ({}/{n})", node.name, i + 1);
            let target = Target::node(slot_name, &node.name);
            // Drain, and wait for zero sessions.
            run.step(Step::Apply, format!("{label}: draining"));
            let drained = self
                .apply_all(&mut run, &OpKind::Drain(target.clone()), &[])
                .await;
            run.end_changes();
            if let Err(e) = drained {
                let why = format!("{label}: the routers would not drain it: {e}");
                run.done(Step::Apply, false, why.clone());
                return run.finish(
                    Verdict::Failed,
                    format!("{why}; stopped before touching it"),
                );
            }
            let deadline = Instant::now() + rolling.drain_timeout;
            let drained_how = loop {
                let sessions = self
                    .observe_all()
                    .await
                    .ok()
                    .and_then(|s| sessions_of(&target, &s));
                let Some(n) = sessions else {
                    // The router does not count in-flight requests: give them the grace period
                    // (at most drain_timeout) instead of pretending they are zero.
                    let grace = rolling.drain_timeout.min(UNKNOWN_SESSIONS_GRACE);
                    run.note(
                        Step::Apply,
                        format!(
                            "{label}: drained; the router does not count in-flight requests, waiting {}",
                            crate::timefmt::millis(grace)
                        ),
                    );
                    tokio::time::sleep(grace).await;
                    break format!(
                        "in-flight unknown, waited {}",
                        crate::timefmt::millis(grace)
                    );
                };
                if n == 0 {
                    break "0 in flight".to_string();
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        "{label}: still {n} in flight after the drain timeout; going on"
                    );
                    break format!("still {n} in flight after drain_timeout");
                }
                run.note(Step::Apply, format!("{label}: drained, {n} in flight"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            run.done(
                Step::Apply,
                true,
                format!("{label}: drained ({drained_how})"),
            );
            // Deploy, then the smoke test. A failure in either leaves this node drained.
            let vars = [
                ("env", self.env.name.as_str()),
                ("slot", slot_name),
                ("node", node.name.as_str()),
                ("address", node.address.as_str()),
                ("version", version.unwrap_or("")),
            ];
            run.step(Step::Apply, format!("{label}: deploying"));
            let deployed =
                match run_hook(&template(&rolling.deploy, &vars), rolling.hook_timeout).await {
                    Err(e) => Err((Step::Apply, format!("{label}: deploy failed: {e}"))),
                    Ok(()) => {
                        run.done(Step::Apply, true, format!("{label}: deployed"));
                        run.step(Step::Verify, format!("{label}: smoke test"));
                        self.smoke_test(&slot, node, &label, version, &rolling, &vars)
                            .await
                            .map_err(|why| (Step::Verify, why))
                    }
                };
            if let Err((step, why)) = deployed {
                run.done(step, false, why.clone());
                return run.finish(
                    Verdict::Failed,
                    format!(
                        "{why}; `{}` stays drained, the other nodes keep serving",
                        node.name
                    ),
                );
            }
            run.done(
                Step::Verify,
                true,
                format!(
                    "{label}: healthy{}",
                    version.map(|v| format!(", runs {v}")).unwrap_or_default()
                ),
            );
            // Back in.
            run.step(Step::Apply, format!("{label}: undraining"));
            let undrained = self
                .apply_all(&mut run, &OpKind::Undrain(target.clone()), &[])
                .await;
            run.end_changes();
            if let Err(e) = undrained {
                let why = format!("{label}: the routers would not undrain it: {e}");
                return run.fail(Step::Apply, Verdict::Failed, why);
            }
            run.done(Step::Apply, true, format!("{label}: back in service"));
        }
        run.finish(
            Verdict::Done,
            format!("all {n} nodes of `{slot_name}` deployed and back in service"),
        )
    }

    /// A freshly deployed node must answer healthy (with `version`, when one is given) within
    /// `smoke_timeout`; then the optional `smoke` command must pass.
    async fn smoke_test(
        &self,
        slot: &crate::config::Slot,
        node: &crate::config::Node,
        label: &str,
        version: Option<&str>,
        rolling: &crate::config::Rolling,
        vars: &[(&str, &str)],
    ) -> std::result::Result<(), String> {
        let base = node.address.trim_end_matches('/');
        let node_slot = crate::config::Slot {
            health_url: format!("{base}{}", path_of(&slot.health_url, &slot.address)),
            version_url: format!("{base}{}", path_of(&slot.version_url, &slot.address)),
            address: node.address.clone(),
            nodes: vec![],
            ..slot.clone()
        };
        let deadline = Instant::now() + rolling.smoke_timeout;
        loop {
            let p = self.prober.probe_slot(&node_slot).await;
            let got = p.version.as_ref().map(|v| v.version.clone());
            if p.health.is_serving() && (version.is_none() || got.as_deref() == version) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{label}: smoke test failed: health {}{}, version {} (wanted {})",
                    p.health.label(),
                    p.error.map(|e| format!(" ({e})")).unwrap_or_default(),
                    got.unwrap_or_else(|| "?".into()),
                    version.unwrap_or("any")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if rolling.smoke.is_empty() {
            return Ok(());
        }
        run_hook(&template(&rolling.smoke, vars), rolling.hook_timeout)
            .await
            .map_err(|e| format!("{label}: smoke command failed: {e}"))
    }

    /// Drain, undrain, maintenance, set preview: apply to every router — all or nothing: when
    /// one refuses, the ones already changed are put back — then verify.
    async fn simple(&self, mut run: Run<'_>, kind: OpKind, states: Vec<RouterState>) -> Outcome {
        run.done(Step::Plan, true, describe(&kind));
        if let OpKind::Maintenance {
            on: true,
            mode: MaintenanceMode::Redirect { to },
        } = &kind
            && self.env.slot(to).is_none()
        {
            let why = format!("there is no slot `{to}` to redirect to");
            return run.finish(Verdict::Refused, why);
        }
        run.step(Step::Apply, describe(&kind));
        if let Err(why) = self.apply_all(&mut run, &kind, &states).await {
            run.end_changes();
            return run.fail(Step::Apply, Verdict::Failed, why);
        }
        run.end_changes();
        run.done(Step::Apply, true, "accepted by every router");

        run.step(Step::Verify, "reading the routers back");
        let deadline = Instant::now() + self.env.verify_timeout;
        loop {
            let states = self.observe_all().await;
            let (changed, mut detail) = match &states {
                Ok(s) => check_simple(&kind, s),
                Err(e) => (false, format!("{e:#}")),
            };
            if changed {
                if let (OpKind::Drain(t), Ok(s)) = (&kind, &states) {
                    let n = sessions_of(t, s);
                    if n.unwrap_or(0) > 0 && Instant::now() < deadline + self.env.verify_timeout * 5
                    {
                        run.note(
                            Step::Verify,
                            format!("{t} drained; {} in flight", n.unwrap_or(0)),
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    if n == Some(0) {
                        detail.push_str("; no requests in flight");
                    }
                }
                run.done(Step::Verify, true, detail.clone());
                // Only a new preview is remembered (for drift); the rest leaves the state alone.
                if let OpKind::SetPreview(s) = &kind {
                    run.remember(|m| m.last_set_preview = Some(s.clone()));
                }
                return run.finish(Verdict::Done, detail);
            }
            if Instant::now() >= deadline {
                let why = format!("the router accepted it but did not change: {detail}");
                return run.fail(Step::Verify, Verdict::Failed, why);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Apply a drain, undrain, maintenance or preview change to every router in turn,
    /// journalled; when one refuses, undo it on the ones already changed and say where each
    /// router ended.
    async fn apply_all(
        &self,
        run: &mut Run<'_>,
        kind: &OpKind,
        states: &[RouterState],
    ) -> std::result::Result<(), String> {
        let before: Vec<Option<String>> = states
            .iter()
            .map(|s| match kind {
                OpKind::SetPreview(_) => s.preview.clone(),
                _ => None,
            })
            .collect();
        run.begin_changes(describe(kind), None, None, &before);
        if let (Some(j), OpKind::Drain(t) | OpKind::Undrain(t)) = (run.journal.as_mut(), kind) {
            j.target = Some(t.to_string());
        }
        let mut failure = None;
        for (i, r) in self.routers.iter().enumerate() {
            match apply_simple(r.as_ref(), kind, None).await {
                Ok(()) => run.journal_router(i, "changed"),
                Err(e) => {
                    run.journal_router(i, "failed");
                    failure = Some(format!("router `{}` refused: {e:#}", r.name()));
                    break;
                }
            }
        }
        let Some(mut why) = failure else {
            return Ok(());
        };
        let undo = run.journal.as_ref().and_then(undo_of);
        let changed: Vec<usize> = run
            .journal
            .as_ref()
            .map(|j| {
                j.routers
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.result == "changed")
                    .map(|(i, _)| i)
                    .collect()
            })
            .unwrap_or_default();
        let mut stuck = Vec::new();
        for i in changed {
            let r = &self.routers[i];
            let res = match &undo {
                Some(u) => apply_simple(r.as_ref(), u, before.get(i).cloned().flatten().as_deref())
                    .await
                    .map_err(|e| format!("{e:#}")),
                None => Err("cutover cannot undo this change by itself".to_string()),
            };
            match res {
                Ok(()) => {
                    run.journal_router(i, "reverted");
                    why.push_str(&format!("; `{}` put back as it was", r.name()));
                }
                Err(e) => {
                    run.journal_router(i, "revert-failed");
                    stuck.push(r.name().to_string());
                    why.push_str(&format!("; `{}` could NOT be put back: {e}", r.name()));
                }
            }
        }
        if !stuck.is_empty() {
            why = format!(
                "ROUTERS DISAGREE ({} changed, the rest not): {why}",
                stuck.join(", ")
            );
        }
        Err(why)
    }
}

fn describe(kind: &OpKind) -> String {
    match kind {
        OpKind::Drain(t) => format!("drain {t}"),
        OpKind::Undrain(t) => format!("undrain {t}"),
        OpKind::Maintenance { on: true, mode } => format!("maintenance on ({mode})"),
        OpKind::Maintenance { on: false, .. } => "maintenance off".into(),
        OpKind::SetPreview(s) => format!("preview → {s}"),
        OpKind::Swap { to } => format!("swap to {}", to.as_deref().unwrap_or("preview")),
        OpKind::Rollback => "rollback".into(),
        OpKind::Rolling { slot, .. } => format!("rolling deploy of {slot}"),
        OpKind::Canary { to, steps } => format!("canary to {to} ({})", canary::steps_text(steps)),
        OpKind::Recover { to } => format!(
            "recover{}",
            to.as_deref()
                .map(|t| format!(" to {t}"))
                .unwrap_or_default()
        ),
    }
}

/// Replace `{key}` placeholders in every argument.
pub fn template(argv: &[String], vars: &[(&str, &str)]) -> Vec<String> {
    argv.iter()
        .map(|a| {
            let mut a = a.clone();
            for (k, v) in vars {
                a = a.replace(&format!("{{{k}}}"), v);
            }
            a
        })
        .collect()
}

/// Run a hook command with a timeout; Err carries the exit code and the end of stderr.
pub async fn run_hook(argv: &[String], timeout: Duration) -> std::result::Result<(), String> {
    let Some((prog, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{prog}`: {e}"))?;
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "`{}` did not finish within {}",
            argv.join(" "),
            crate::timefmt::millis(timeout)
        )),
        Ok(Err(e)) => Err(format!("`{prog}` failed: {e}")),
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = err
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            Err(format!(
                "`{}` exited with {}: {}",
                argv.join(" "),
                o.status.code().map_or("a signal".into(), |c| c.to_string()),
                tail.join(" / ")
            ))
        }
    }
}

/// The path part of `url` (after the slot's `address`, or after the host).
fn path_of(url: &str, address: &str) -> String {
    if let Some(rest) = url.strip_prefix(address) {
        return rest.to_string();
    }
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    after_scheme
        .find('/')
        .map_or("/".into(), |i| after_scheme[i..].to_string())
}

/// Run a hook command (`key`, for messages) with what is left of `deadline` (set by
/// `limit`); its last output lines, or why it failed.
async fn command_before(
    argv: &[String],
    deadline: Instant,
    pass_env: &[String],
    key: &str,
    limit: &str,
) -> std::result::Result<String, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(format!("no time left for `{key}` within {limit}"));
    }
    let said = crate::hooks::run_command(argv, left, pass_env)
        .await
        .map_err(|e| format!("{key}: {e}"))?;
    Ok(if said.is_empty() {
        format!("{key} passed")
    } else {
        format!("{key} passed: {said}")
    })
}

/// The operation that undoes an interrupted or half-done simple change, from its journal.
fn undo_of(j: &Journal) -> Option<OpKind> {
    let target = || {
        let t = j.target.as_deref()?;
        Some(match t.split_once('/') {
            Some((s, n)) => Target::node(s, n),
            None => Target::slot(t),
        })
    };
    match j.operation.as_str() {
        "drain" => Some(OpKind::Undrain(target()?)),
        "undrain" => Some(OpKind::Drain(target()?)),
        "maintenance-on" => Some(OpKind::Maintenance {
            on: false,
            mode: MaintenanceMode::Page,
        }),
        // Back to each router's own preview before the change.
        "set-preview" => Some(OpKind::SetPreview(String::new())),
        _ => None,
    }
}

/// One router's part of a simple change. `before` is, for a preview undo, that router's
/// preview before the change.
async fn apply_simple(r: &dyn Router, kind: &OpKind, before: Option<&str>) -> Result<()> {
    match kind {
        OpKind::Drain(t) => r.drain(t).await,
        OpKind::Undrain(t) => r.undrain(t).await,
        OpKind::Maintenance { on, mode } => r.maintenance(*on, mode).await,
        OpKind::SetPreview(s) if s.is_empty() => match before {
            Some(b) => r.set_preview(b).await,
            None => Ok(()),
        },
        OpKind::SetPreview(s) => r.set_preview(s).await,
        _ => Ok(()),
    }
}

fn admin_of(t: &Target, s: &RouterState) -> AdminState {
    let slot = s.slots.get(&t.slot);
    match &t.node {
        Some(n) => slot
            .and_then(|r| r.nodes.iter().find(|x| &x.name == n))
            .map(|x| x.admin)
            .unwrap_or_default(),
        None => slot.map(|r| r.admin).unwrap_or_default(),
    }
}

fn sessions_of(t: &Target, states: &[RouterState]) -> Option<u64> {
    let mut total = None;
    for s in states {
        let slot = s.slots.get(&t.slot);
        let n = match &t.node {
            Some(n) => slot
                .and_then(|r| r.nodes.iter().find(|x| &x.name == n))
                .and_then(|x| x.sessions),
            None => slot.and_then(|r| r.sessions),
        };
        if let Some(n) = n {
            total = Some(total.unwrap_or(0) + n);
        }
    }
    total
}

fn check_simple(kind: &OpKind, states: &[RouterState]) -> (bool, String) {
    match kind {
        OpKind::Drain(t) => {
            let ok = states.iter().all(|s| {
                matches!(
                    admin_of(t, s),
                    AdminState::Drain | AdminState::Maint | AdminState::Disabled
                )
            });
            (
                ok,
                format!(
                    "{t} is {}",
                    states
                        .first()
                        .map_or(AdminState::Unknown, |s| admin_of(t, s))
                        .described()
                ),
            )
        }
        OpKind::Undrain(t) => {
            let ok = states.iter().all(|s| admin_of(t, s).undrained());
            (
                ok,
                format!(
                    "{t} is {}",
                    states
                        .first()
                        .map_or(AdminState::Unknown, |s| admin_of(t, s))
                        .described()
                ),
            )
        }
        OpKind::Maintenance { on, .. } => {
            let ok = states.iter().all(|s| s.maintenance.is_some() == *on);
            (
                ok,
                format!("maintenance is {}", if ok == *on { "on" } else { "off" }),
            )
        }
        OpKind::SetPreview(slot) => {
            let ok = states
                .iter()
                .all(|s| s.preview.as_deref() == Some(slot.as_str()));
            (
                ok,
                format!(
                    "preview is `{}`",
                    states
                        .first()
                        .and_then(|s| s.preview.clone())
                        .unwrap_or_default()
                ),
            )
        }
        _ => (true, String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(h: &[(&str, &[Health], Option<&str>)]) -> GateInput {
        let mut i = GateInput::default();
        for (s, hs, v) in h {
            i.health.insert(s.to_string(), hs.to_vec());
            i.versions.insert(s.to_string(), v.map(str::to_string));
        }
        i
    }

    #[test]
    fn gate_needs_n_healthy_checks_a_known_and_new_version() {
        use Health::*;
        let ok = input(&[
            ("blue", &[Up, Up, Up], Some("1")),
            ("green", &[Down, Up, Up, Up], Some("2")),
        ]);
        assert!(gate(3, Some("blue"), "green", &ok, true).passes());

        let flappy = input(&[
            ("blue", &[Up], Some("1")),
            ("green", &[Up, Down, Up], Some("2")),
        ]);
        let p = gate(3, Some("blue"), "green", &flappy, true);
        assert_eq!(p.failed_checks()[0].name, "health");
        assert!(
            p.failed_checks()[0].detail.contains("✔ ✘ ✔"),
            "{:?}",
            p.checks
        );

        let too_few = input(&[("green", &[Up, Up], Some("2"))]);
        assert!(!gate(3, None, "green", &too_few, true).passes());

        let unknown = input(&[("green", &[Up, Up, Up], None)]);
        assert_eq!(
            gate(3, None, "green", &unknown, true).failed_checks()[0].name,
            "version"
        );

        let same = input(&[
            ("blue", &[Up; 3], Some("1")),
            ("green", &[Up; 3], Some("1")),
        ]);
        let p = gate(3, Some("blue"), "green", &same, true);
        assert_eq!(p.failed_checks()[0].name, "new version");
        // Rollback does not check for a new version.
        assert!(gate(3, Some("blue"), "green", &same, false).passes());
    }

    #[test]
    fn checks_read_naturally_and_say_when_they_cannot_compare() {
        use Health::*;
        let live_unknown = input(&[("blue", &[Up], None), ("green", &[Up; 3], Some("2"))]);
        let p = gate(3, Some("blue"), "green", &live_unknown, true);
        let new = p.checks.iter().find(|c| c.name == "new version");
        assert_eq!(
            new.map(|c| (c.ok, c.detail.as_str())),
            Some((true, "live slot's version unknown: cannot compare"))
        );
        let p = gate(3, None, "green", &live_unknown, true);
        assert!(p.passes(), "{:?}", p.checks);
        assert!(
            p.checks[2].detail.contains("no live slot known"),
            "{:?}",
            p.checks
        );

        let mut s = RouterState::default();
        for (name, admin) in [("blue", AdminState::Drain), ("green", AdminState::Maint)] {
            s.slots.insert(
                name.into(),
                crate::model::SlotRoute {
                    admin,
                    ..Default::default()
                },
            );
        }
        let drain = |t: &str| OpKind::Drain(Target::slot(t));
        let (ok, msg) = check_simple(&drain("blue"), std::slice::from_ref(&s));
        assert!(ok && msg.ends_with("is drained"), "{msg}");
        let (_, msg) = check_simple(&drain("green"), std::slice::from_ref(&s));
        assert!(msg.ends_with("is in maintenance"), "{msg}");
        let (ok, msg) = check_simple(&OpKind::Undrain(Target::slot("blue")), &[s]);
        assert!(!ok && msg.ends_with("is drained"), "{msg}");
    }
}
