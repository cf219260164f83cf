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
use crate::state::{
    FromTo, Journal, JournalRouter, LockError, LockGuard, LockInfo, Store, Versions,
};

pub mod canary;
pub mod query;
pub use gate::{Check, GateInput, SwitchPlan, gate, way_back_check};
pub use hook_cmd::{run_hook, template};
use run::{Held, Run};
mod gate;
mod hook_cmd;
mod hooks;
mod recover;
mod rolling;
mod run;
mod simple;
mod switch;
mod watching;

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

/// Run `f`, which may block (a file lock; the shared store waiting out a silent member), without
/// holding up the runtime's other tasks (the TUI's loop, the probes): on a multi-thread runtime
/// the worker hands them on first (`block_in_place`); on a current-thread one `f` just runs.
pub(crate) fn off_worker<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
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
        steps: Vec<crate::model::CanaryStep>,
        /// How long each step holds (`--interval`); `None`: the environment's `canary_pause`.
        interval: Option<Duration>,
    },
    /// Hold new live requests (`on`) while the live slot restarts in place, or release them
    /// (a router that can pause: the embedded proxy).
    Pause {
        on: bool,
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
            OpKind::Pause { on: true } => "pause",
            OpKind::Pause { on: false } => "resume",
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
    /// A canary: what the operator asks of it while it runs (promote, pause, resume).
    /// `cutover canary ENV --promote|--pause|--resume` and the TUI's keys send it.
    pub control: Option<watch::Receiver<CanaryControl>>,
}

/// What the operator asks of a running canary. Each field is a counter or a switch, so a
/// receiver sees every request even when two come before it looks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CanaryControl {
    /// Each change ends the current (or next) hold at once and goes on to the next step.
    pub promotes: u32,
    /// While set, a step's countdown stops (its analysis goes on and may still abort).
    pub paused: bool,
    /// Each change ends a `pause` step (and clears `paused`).
    pub resumes: u32,
}

impl CanaryControl {
    /// Apply one request by its name (`promote`, `pause`, `resume`); `false` for another name.
    pub fn apply(&mut self, what: &str) -> bool {
        match what {
            "promote" => self.promotes = self.promotes.wrapping_add(1),
            "pause" => self.paused = true,
            "resume" => {
                self.paused = false;
                self.resumes = self.resumes.wrapping_add(1);
            }
            _ => return false,
        }
        true
    }
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
            control: None,
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

pub use crate::model::Verdict;

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
    /// A decision inside a running step that the audit keeps and the event pane shows (an
    /// operator's pause or resume, a failed check the step tolerated).
    Decision {
        step: Step,
        message: String,
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
    /// Moments of the operation from its start (`lock`, `routers read`, `gate`,
    /// `journal written`, `command sent`, `routers answered`, `verified`): where a switch's
    /// time goes. Not in the audit record.
    pub marks: Vec<(&'static str, Duration)>,
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
    /// Probe every slot `gate_checks` times now (the CLI), or once where the routers' own
    /// health checks vouch for the target (see [`Engine::vouchers`]).
    ProbeNow,
    /// Probe once now; the routers' own health checks, as the plan read them, vouch for the
    /// target: what they said.
    ProbeOnce { vouched: String },
}

impl GateSource {
    /// `ProbeNow` becomes `ProbeOnce` where the routers vouch for `to`.
    fn or_vouched(self, engine: &Engine, states: &[RouterState], to: &str) -> GateSource {
        match self {
            GateSource::ProbeNow => match engine.vouchers(states, to) {
                Some(vouched) => GateSource::ProbeOnce { vouched },
                None => GateSource::ProbeNow,
            },
            g => g,
        }
    }
}

impl Engine {
    /// An operation's result: to the audit log, and to the notification channels.
    fn record_result(&self, out: &Outcome) {
        if let Some(a) = &self.audit {
            a.write(&out.record);
        }
        if let Some(n) = &self.notifier {
            n.tell(
                EventKind::Ended(out.verdict),
                &out.record,
                None,
                &out.message,
            );
        }
    }

    /// What each router serves live in `states`, in words: "`edge` shows blue" (`verb`
    /// "shows").
    fn lives(&self, states: &[RouterState], verb: &str) -> Vec<String> {
        self.routers
            .iter()
            .zip(states)
            .map(|(r, s)| {
                let live = s.live.as_deref().unwrap_or("nothing");
                format!("`{}` {verb} {live}", r.name())
            })
            .collect()
    }

    /// Observe every router; all must answer.
    pub async fn observe_all(&self) -> Result<Vec<RouterState>> {
        // All at once: a fleet's plan takes as long as its slowest router, not their sum.
        let reads = self
            .routers
            .iter()
            .map(|r| crate::router::observe_within(r.as_ref(), r.observe_timeout()));
        let out = futures_util::future::join_all(reads)
            .await
            .into_iter()
            .zip(&self.routers)
            .map(|(s, r)| s.map_err(|e| eyre!("router `{}`: {e}", r.name())))
            .collect::<Result<Vec<_>>>()?;
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

    /// What the routers' own health checks say of `slot` in `states` (read by the plan a
    /// moment ago), when every router that checks it says it is up and one at least does;
    /// `None` otherwise (one says down, or none checks it).
    pub fn vouchers(&self, states: &[RouterState], slot: &str) -> Option<String> {
        let mut said = Vec::new();
        for (r, st) in self.routers.iter().zip(states) {
            let Some(route) = st.slots.get(slot) else {
                continue;
            };
            match route.checks_up {
                Some(true) => said.push(format!(
                    "{} `{}`'s own checks say {}",
                    r.kind(),
                    r.name(),
                    route.check.as_deref().unwrap_or("up")
                )),
                Some(false) => return None,
                None => {}
            }
        }
        (!said.is_empty()).then(|| said.join("; "))
    }

    /// The gate's input for a switch to `to`, as `source` says to get it.
    pub(super) async fn gate_input(&self, source: GateSource, to: &str) -> GateInput {
        match source {
            GateSource::Given(i) => i,
            GateSource::ProbeNow => self.fresh_gate_input(self.env.gate_checks).await,
            GateSource::ProbeOnce { vouched } => {
                let mut i = self.fresh_gate_input(1).await;
                i.vouched.insert(to.to_string(), vouched);
                i
            }
        }
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
                slots: FromTo::default(),
                versions: Versions::default(),
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
            began: Instant::now(),
            marks: Vec::new(),
            plan_read: None,
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
                run.mark("lock");
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
            && let Some(j) = off_worker(|| self.store.journal(&self.env.name))
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
        run.mark("routers read");
        run.plan_read = Some((
            Instant::now(),
            states.iter().map(|s| s.live.clone()).collect(),
        ));
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
                    _ => (
                        off_worker(|| self.store.env(&self.env.name)).previous_live,
                        true,
                    ),
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
                run.record.slots.from = live.clone();
                run.record.slots.to = Some(to.clone());
                run.done(
                    Step::Plan,
                    true,
                    format!("{} → {to}", live.as_deref().unwrap_or("nothing")),
                );
                let held = Arc::new(std::sync::Mutex::new(None));
                run.held = Some(held.clone());
                let out = self
                    .switch(
                        run,
                        req,
                        gate_source.or_vouched(self, &states, &to),
                        live,
                        preview,
                        to,
                        rollback,
                    )
                    .await;
                self.conclude(out, &held).await
            }
            OpKind::Rolling { slot, version } => {
                let (slot, version) = (slot.clone(), version.clone());
                self.rolling(run, &slot, version.as_deref()).await
            }
            OpKind::Canary {
                to,
                steps,
                interval,
            } => {
                let (to, steps, interval) = (to.clone(), steps.clone(), *interval);
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
                        interval,
                        held.clone(),
                    )
                    .await;
                self.conclude(out, &held).await
            }
            other => self.simple(run, other.clone(), states).await,
        }
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
        OpKind::Canary { to, steps, .. } => {
            format!("canary to {to} ({})", canary::steps_text(steps))
        }
        OpKind::Pause { on: true } => "pause new live requests".into(),
        OpKind::Pause { on: false } => "resume: release the held requests".into(),
        OpKind::Recover { to } => format!(
            "recover{}",
            to.as_deref()
                .map(|t| format!(" to {t}"))
                .unwrap_or_default()
        ),
    }
}

#[cfg(test)]
mod tests;
