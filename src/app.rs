//! The TUI's state and its update function.
//!
//! `App` is owned by one task. Probes, router observers and operations talk to it only through
//! [`Event`]s; [`App::update`] does no IO and never awaits, and returns [`Effect`]s that the
//! runner executes. Views take `&App` and change nothing.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers, MouseButton, MouseEvent, MouseEventKind};
use ratatui::layout::{Position, Rect};

use crate::config::{Config, ConfirmMode, Environment};
use crate::keymap::{Action, Keymap};
use crate::model::{Health, MaintenanceMode, ProbeResult, Role, RouterState};
use crate::ops::{self, GateInput, OpKind, OpRequest, Progress, Step, SwitchPlan, Verdict};
use crate::probe::UrlProbe;
use crate::router::Target;
use crate::state::{EnvMemory, Journal, LockInfo};
use crate::ui::theme::Theme;

/// How many health results per slot the gate can look back on.
const GATE_HISTORY: usize = 20;
/// How many lines the event pane keeps.
const EVENT_LINES: usize = 500;
/// How far back the traffic chart looks.
pub const TRAFFIC_WINDOW: Duration = Duration::from_secs(300);
/// How many operation markers the traffic chart keeps.
const MARKERS: usize = 32;
/// At most this many of cutover's own public/preview URL probes are still to be taken off a
/// slot's request counter: a probe attributed to the wrong slot costs at most this much.
const PROBE_DEBT_CAP: u64 = 8;
/// Why a new operation must wait.
const OP_RUNNING: &str = "an operation is running on this environment; wait for it to end";

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // events are moved, not stored in bulk
pub enum Event {
    Key(KeyEvent),
    Mouse(MouseEvent),
    Resize(u16, u16),
    Tick(SystemTime),
    Probe {
        env: usize,
        slot: usize,
        result: ProbeResult,
    },
    Url {
        env: usize,
        preview: bool,
        result: UrlProbe,
    },
    Router {
        env: usize,
        router: usize,
        result: Result<RouterState, String>,
        at: SystemTime,
    },
    /// Progress of the operation `id` (every operation's progress carries its id, so a
    /// superseded operation's last words never land on the newer one's view).
    Op {
        env: usize,
        id: String,
        progress: Progress,
    },
    Memory {
        env: usize,
        memory: EnvMemory,
    },
    Lock {
        env: usize,
        holder: Option<LockInfo>,
        /// An operation a dead cutover left unfinished.
        interrupted: Option<Journal>,
    },
    /// What another cutover on the shared store is doing, or the store's state, as a line.
    Shared {
        env: usize,
        text: String,
    },
    /// SIGTERM, SIGINT or SIGHUP: quit as `q` does.
    Signal(&'static str),
    /// A theme asked for with `:theme`, loaded by the runner.
    Theme(Result<Theme, String>),
    /// A running drill's live counters.
    DrillTick {
        env: usize,
        tick: crate::drill::DrillTick,
    },
    /// A drill ended.
    DrillDone {
        env: usize,
        result: Result<Box<crate::drill::DrillReport>, String>,
    },
}

#[derive(Debug, Clone)]
pub enum DemoCommand {
    ToggleHealth { slot: String },
    ToggleSlow { slot: String },
}

#[derive(Debug, Clone)]
pub enum Effect {
    /// Run an operation. When one is running on the environment (a watch), it is told it is
    /// superseded, and the new one starts once it has let go of the lock.
    RunOp {
        env: usize,
        req: OpRequest,
        gate: GateInput,
    },
    Demo(DemoCommand),
    /// Load a theme (it may be a user file).
    LoadTheme(String),
    /// Run a drill on the environment, reporting ticks.
    RunDrill {
        env: usize,
    },
    /// Stop the operation running on the environment at its next safe point (a canary aborts
    /// back to 0 %).
    StopOp {
        env: usize,
    },
    /// Quit: running watches are abandoned (recorded), and cutover ends once their records
    /// are written.
    Quit,
    /// Quit at once, in the middle of a router change: recorded as abandoned; the journal
    /// stays for `cutover recover`.
    QuitNow,
}

/// Swap+rollback pairs of a drill started from the TUI.
pub const DRILL_PAIRS: usize = 3;

/// The `:` commands.
pub const COMMANDS: [&str; 10] = [
    "env",
    "swap",
    "rollback",
    "drain",
    "undrain",
    "maintenance",
    "rolling",
    "theme",
    "help",
    "quit",
];

/// Complete `prefix` against `candidates`: the longest common prefix of the matches, and the
/// matches.
pub fn complete(prefix: &str, candidates: &[String]) -> (String, Vec<String>) {
    let matches: Vec<String> = candidates
        .iter()
        .filter(|c| c.starts_with(prefix))
        .cloned()
        .collect();
    let Some(first) = matches.first() else {
        return (prefix.to_string(), vec![]);
    };
    let mut common = first.clone();
    for m in &matches[1..] {
        while !m.starts_with(&common) {
            common.pop();
        }
    }
    (common, matches)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    Environments,
    Slots,
    Events,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Good,
    Warn,
    Bad,
}

#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: SystemTime,
    pub env: String,
    pub level: Level,
    pub text: String,
}

/// One sparkline / gate sample.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub health: Health,
    pub latency_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct SlotView {
    pub name: String,
    pub last: Option<ProbeResult>,
    pub history: VecDeque<Sample>,
    pub health_since: Option<SystemTime>,
    pub version_since: Option<SystemTime>,
    pub role_since: Option<SystemTime>,
    pub last_role: Role,
    /// User traffic on the slot, from the first router's own counters.
    pub traffic: SlotTraffic,
}

/// Requests and errors per second on one slot between two router readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficSample {
    /// When the later of the two readings was taken.
    pub at: SystemTime,
    pub rps: f64,
    /// Errors per second: what the router counts as errors (5xx answers, failed connections).
    pub eps: f64,
    /// The window the rates are over, and the user requests and errors counted in it.
    window: Duration,
    requests: u64,
    errors: u64,
}

impl TrafficSample {
    fn new(at: SystemTime, window: Duration, requests: u64, errors: u64) -> TrafficSample {
        let secs = window.as_secs_f64();
        TrafficSample {
            at,
            rps: requests as f64 / secs,
            eps: errors as f64 / secs,
            window,
            requests,
            errors,
        }
    }
}

/// A slot's user traffic as the router counts it, turned into rates by the App.
///
/// The public and preview URL probes of cutover go through the router and are counted there;
/// they are taken off again here (each probe answer is a debt on the slot that answered it), so
/// what is shown is user traffic only. Slot probes go to the slot's address and never reach the
/// router.
#[derive(Debug, Clone, Default)]
pub struct SlotTraffic {
    /// Rates of the last [`TRAFFIC_WINDOW`], oldest first.
    pub history: VecDeque<TrafficSample>,
    /// In-flight requests or sessions, as of the last reading.
    pub in_flight: Option<u64>,
    /// The router's own average latency for the slot, when it has one.
    pub latency_ms: Option<u64>,
    /// Whether the router counts this slot's requests at all.
    pub counted: bool,
    /// Whether it counts their errors (Apache's balancer-manager does not).
    pub errors_counted: bool,
    /// The router did not answer the last reading: the newest rates are old news.
    pub stale: bool,
    /// (when, requests, errors) of the previous reading.
    last: Option<(SystemTime, u64, u64)>,
    /// cutover's own probe requests (and failed ones) not yet taken off the counters.
    probe_debt: (u64, u64),
}

impl SlotTraffic {
    /// The newest rates.
    pub fn current(&self) -> Option<&TrafficSample> {
        self.history.back()
    }

    /// The share of the newest requests that failed, when there were requests.
    pub fn error_rate(&self) -> Option<f64> {
        self.current()
            .filter(|s| s.rps > 0.0)
            .map(|s| (s.eps / s.rps).min(1.0))
    }

    /// Take a router reading: rates since the previous one, minus cutover's own probes.
    fn read(&mut self, route: Option<&crate::model::SlotRoute>, at: SystemTime) {
        self.stale = false;
        self.in_flight = route.and_then(|r| r.sessions);
        self.latency_ms = route.and_then(|r| r.latency_ms);
        let Some(requests) = route.and_then(|r| r.requests) else {
            self.counted = false;
            self.last = None;
            self.history.clear();
            return;
        };
        self.counted = true;
        self.errors_counted = route.is_some_and(|r| r.errors.is_some());
        let errors = route.and_then(|r| r.errors).unwrap_or(0);
        if let Some((t, r0, e0)) = self.last
            && let Ok(dt) = at.duration_since(t)
            && !dt.is_zero()
        {
            // A counter that went back means the proxy restarted: count from zero.
            let mut dr = if requests >= r0 {
                requests - r0
            } else {
                requests
            };
            let mut de = if errors >= e0 { errors - e0 } else { errors };
            let taken = dr.min(self.probe_debt.0);
            dr -= taken;
            self.probe_debt.0 -= taken;
            let taken = de.min(self.probe_debt.1);
            de -= taken;
            self.probe_debt.1 -= taken;
            self.history.push_back(TrafficSample::new(at, dt, dr, de));
            while self
                .history
                .front()
                .is_some_and(|s| at.duration_since(s.at).unwrap_or_default() > TRAFFIC_WINDOW)
            {
                self.history.pop_front();
            }
        }
        if self.last.is_none_or(|(t, _, _)| at > t) {
            self.last = Some((at, requests, errors));
        }
    }

    /// The router did not answer: the rates stop until it does (from a fresh baseline, so
    /// a restarted proxy is not read as a burst).
    fn lost(&mut self) {
        self.stale = true;
        self.last = None;
        self.in_flight = None;
        self.probe_debt = (0, 0);
    }

    /// One of cutover's probes, started at `started`, went through the router to this slot.
    /// Started after the last reading, the next reading counts it: it is owed. Started
    /// before, the last reading (read while the probe was answered) counted it already: it
    /// comes off the newest rates, or, before the first rates, off nothing.
    fn probed(&mut self, started: SystemTime, failed: bool) {
        if let Some((t, _, _)) = self.last
            && started < t
        {
            if let Some(s) = self.history.back_mut()
                && s.at == t
                && t.duration_since(started).unwrap_or_default() <= s.window
                && s.requests > 0
            {
                let errors = if failed {
                    s.errors.saturating_sub(1)
                } else {
                    s.errors
                };
                *s = TrafficSample::new(s.at, s.window, s.requests - 1, errors);
            }
            return;
        }
        self.probe_debt.0 = (self.probe_debt.0 + 1).min(PROBE_DEBT_CAP);
        if failed {
            self.probe_debt.1 = (self.probe_debt.1 + 1).min(PROBE_DEBT_CAP);
        }
    }
}

impl SlotView {
    pub fn health(&self) -> Health {
        self.last.as_ref().map_or(Health::Unknown, |p| p.health)
    }
    pub fn version(&self) -> Option<&str> {
        self.last
            .as_ref()
            .and_then(|p| p.version.as_ref())
            .map(|v| v.version.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct RouterView {
    pub name: String,
    pub kind: String,
    pub state: Option<RouterState>,
    pub error: Option<String>,
    pub at: Option<SystemTime>,
}

/// An operation as the screen shows it.
#[derive(Debug, Clone)]
pub struct OpView {
    pub id: String,
    /// The operation's name (`swap`, `rollback`, …).
    pub kind: &'static str,
    pub title: String,
    pub steps: Vec<(Step, Option<bool>, String)>,
    pub watching: Option<(Duration, String)>,
    /// The watch verdict's inputs, while it watches: errors since the switch, checks made,
    /// checks passed.
    pub watch_inputs: Option<(u64, u32, u32)>,
    pub verdict: Option<Verdict>,
    pub message: String,
    pub started: SystemTime,
}

/// A drill as the screen shows it.
#[derive(Debug, Clone, Default)]
pub struct DrillView {
    pub ticks: Vec<crate::drill::DrillTick>,
    pub done: Option<Result<Box<crate::drill::DrillReport>, String>>,
}

impl DrillView {
    /// Answers per second per slot, tick by tick (ticks are half a second apart).
    pub fn rates(&self) -> std::collections::BTreeMap<String, Vec<u64>> {
        let mut out: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
        let mut prev: std::collections::BTreeMap<String, u64> = Default::default();
        for (i, t) in self.ticks.iter().enumerate() {
            for (slot, n) in &t.by_slot {
                let v = out.entry(slot.clone()).or_insert_with(|| vec![0; i]);
                v.push((n - prev.get(slot).copied().unwrap_or(0)) * 2);
            }
            for v in out.values_mut() {
                v.resize(i + 1, 0);
            }
            prev = t.by_slot.clone();
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct EnvView {
    pub config: Environment,
    pub slots: Vec<SlotView>,
    pub routers: Vec<RouterView>,
    pub public: Option<UrlProbe>,
    pub preview: Option<UrlProbe>,
    pub memory: EnvMemory,
    pub op: Option<OpView>,
    /// Operations this cutover superseded that have not yet written their last record.
    pub superseded: Vec<OpView>,
    pub lock: Option<LockInfo>,
    pub interrupted: Option<Journal>,
    pub drill: Option<DrillView>,
    /// When operations started on this environment, for the traffic chart's time axis.
    pub markers: VecDeque<(SystemTime, &'static str)>,
    /// Which slot answered the public URL at each of cutover's probes (the traffic view of a
    /// router without per-slot counters).
    pub public_answers: VecDeque<(SystemTime, String)>,
}

impl EnvView {
    /// Mark the moment an operation started on the traffic chart's time axis.
    fn mark(&mut self, at: SystemTime, label: &'static str) {
        self.markers.push_back((at, label));
        while self.markers.len() > MARKERS {
            self.markers.pop_front();
        }
    }

    /// One of cutover's probes of the public (or preview) URL answered: it went through the
    /// router, so it is owed back to the slot that answered it (the `X-Slot` header, or the
    /// slot the router sends that URL to).
    fn url_probed(&mut self, preview: bool, p: &UrlProbe, now: SystemTime) {
        let Some(status) = p.status else { return };
        let slot = p
            .slot_header
            .clone()
            .filter(|h| self.slots.iter().any(|s| &s.name == h))
            .or_else(|| {
                if preview {
                    self.preview_slot().map(str::to_string)
                } else {
                    self.live().map(str::to_string)
                }
            });
        let Some(slot) = slot else { return };
        // A maintenance page is the router's own answer: no slot counted it.
        let paged = matches!(
            self.state().and_then(|s| s.maintenance.as_ref()),
            Some(MaintenanceMode::Page)
        );
        if !preview {
            self.public_answers.push_back((now, slot.clone()));
            while self
                .public_answers
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t).unwrap_or_default() > TRAFFIC_WINDOW)
            {
                self.public_answers.pop_front();
            }
        }
        if let Some(s) = self.slots.iter_mut().find(|s| s.name == slot)
            && (preview || !paged)
        {
            s.traffic.probed(p.at, status >= 500);
        }
    }

    /// The first router, when it reads no per-slot request counters (nginx OSS, Caddy
    /// without metrics); `None` while it has not answered, or when it counts.
    pub fn uncounted_router(&self) -> Option<&RouterView> {
        let r = self.routers.first()?;
        let st = r.state.as_ref()?;
        self.slots
            .iter()
            .all(|s| st.slots.get(&s.name).and_then(|r| r.requests).is_none())
            .then_some(r)
    }

    /// The router state the screen shows: the first router that answered.
    pub fn state(&self) -> Option<&RouterState> {
        self.routers.iter().find_map(|r| r.state.as_ref())
    }

    /// The role of a slot, read from the routers; `Unknown` until one answers.
    pub fn role_of(&self, slot: &str) -> Role {
        self.state().map_or(Role::Unknown, |s| s.role_of(slot))
    }

    pub fn live(&self) -> Option<&str> {
        self.state().and_then(|s| s.live.as_deref())
    }

    pub fn preview_slot(&self) -> Option<&str> {
        self.state().and_then(|s| s.preview.as_deref())
    }

    /// Routers that disagree with the first about which slot is live.
    pub fn disagreement(&self) -> Option<String> {
        let states: Vec<(&str, Option<&str>)> = self
            .routers
            .iter()
            .filter_map(|r| {
                r.state
                    .as_ref()
                    .map(|s| (r.name.as_str(), s.live.as_deref()))
            })
            .collect();
        let first = states.first()?;
        let odd: Vec<String> = states
            .iter()
            .filter(|(_, l)| *l != first.1)
            .map(|(n, l)| format!("`{n}` → {}", l.unwrap_or("nothing")))
            .collect();
        (!odd.is_empty()).then(|| {
            format!(
                "ROUTERS DISAGREE: `{}` → {}, {}",
                first.0,
                first.1.unwrap_or("nothing"),
                odd.join(", ")
            )
        })
    }

    /// The router shows a different live slot than cutover last set.
    pub fn drift(&self) -> Option<String> {
        // An operation of this cutover is changing the routers: what it set and what the
        // last poll read may differ for a moment; that is not drift.
        if self.op_running() {
            return None;
        }
        let set = self.memory.last_set_live.as_deref()?;
        let live = self.live()?;
        (live != set).then(|| {
            format!(
                "DRIFT: the router sends live traffic to `{live}`, but cutover last set `{set}`"
            )
        })
    }

    /// The public URL serves another version than the live slot reports. Not while a
    /// maintenance redirect is on: the public URL then serves the redirect's target, on
    /// purpose (seed 004).
    pub fn public_mismatch(&self) -> Option<String> {
        if matches!(
            self.state().and_then(|s| s.maintenance.as_ref()),
            Some(MaintenanceMode::Redirect { .. })
        ) {
            return None;
        }
        let public = self.public.as_ref()?.version.as_ref()?.version.as_str();
        let live = self.live()?;
        let slot_version = self.slots.iter().find(|s| s.name == live)?.version()?;
        (public != slot_version).then(|| {
            format!("the public URL serves {public}, but live slot `{live}` runs {slot_version}")
        })
    }

    /// Every warning about this environment's routing, worst first: what the Traffic panel
    /// lists, the header counts and `status --json` reports.
    pub fn warnings(&self) -> Vec<String> {
        [
            self.interrupted.as_ref().map(|j| {
                format!(
                    "{}; run `cutover recover {}`",
                    j.summary(),
                    self.config.name
                )
            }),
            self.disagreement(),
            self.drift(),
            self.public_mismatch(),
        ]
        .into_iter()
        .flatten()
        .chain(self.router_problems())
        .collect()
    }

    /// What the routers say they cannot do as configured (a backend or `@id` the proxy
    /// does not have), one line each with the router's name.
    pub fn router_problems(&self) -> Vec<String> {
        self.routers
            .iter()
            .filter_map(|r| r.state.as_ref().map(|s| (r, s)))
            .flat_map(|(r, s)| s.problems.iter().map(move |p| router_problem(&r.name, p)))
            .collect()
    }

    /// How a confirm dialog on this environment asks: production environments always want
    /// the name typed.
    pub fn confirm_mode(&self) -> ConfirmMode {
        if self.config.production {
            ConfirmMode::TypeName
        } else {
            self.config.confirm
        }
    }

    pub fn gate_input(&self) -> GateInput {
        let mut g = GateInput::default();
        for s in &self.slots {
            g.health
                .insert(s.name.clone(), s.history.iter().map(|h| h.health).collect());
            g.versions
                .insert(s.name.clone(), s.version().map(str::to_string));
        }
        g
    }

    /// The last operation was a swap refused by a failed warm-up: the confirm dialog's force
    /// key may then go past the warm-up (as past a gate check), even with the gate passing.
    pub fn warmup_refused(&self) -> bool {
        self.op.as_ref().is_some_and(|o| {
            o.verdict == Some(Verdict::Refused)
                && o.steps
                    .iter()
                    .any(|(s, ok, _)| *s == Step::Warmup && *ok == Some(false))
        })
    }

    pub fn op_running(&self) -> bool {
        self.op.as_ref().is_some_and(|o| o.verdict.is_none())
    }

    /// The running operation is changing routers (apply or verify): quitting now would leave
    /// them half-changed.
    pub fn op_changing_routers(&self) -> bool {
        self.op.as_ref().is_some_and(|o| {
            o.verdict.is_none()
                && o.watching.is_none()
                && !o.steps.iter().any(|(s, _, _)| *s == Step::Watch)
                && o.steps
                    .iter()
                    .any(|(s, _, _)| matches!(s, Step::Apply | Step::Verify))
        })
    }

    /// Whether `r` rolls back at once, without a dialog: during a swap's watch, or within
    /// `rollback_window` after it, when the gate passes for the previous live slot and it
    /// still runs the version it served when it was live. `Ok((slot, version, left))`, or why
    /// the dialog asks (`None`: nothing to explain).
    pub fn one_key(&self, now: SystemTime) -> Result<(String, String, Duration), Option<String>> {
        let prev = self.memory.previous_live.clone().ok_or(None)?;
        if !self.config.one_key_rollback {
            return Err(None);
        }
        if self.memory.last_switch.as_deref() != Some("swap") {
            return Err(Some(
                "the last switch was a rollback: going back again asks first".into(),
            ));
        }
        let since = self.memory.switched_at.map(|t| {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(t);
            now.duration_since(at).unwrap_or_default()
        });
        let window = self.config.rollback_window;
        let watching = self
            .op
            .as_ref()
            .is_some_and(|o| o.kind == "swap" && o.verdict.is_none());
        let left = match since {
            Some(s) if s <= window => window - s,
            _ if watching => Duration::ZERO,
            Some(s) => {
                return Err(Some(format!(
                    "outside the rollback window: the swap was {} ago (rollback_window = {})",
                    crate::timefmt::millis(s),
                    crate::timefmt::millis(window)
                )));
            }
            None => return Err(None),
        };
        let plan = ops::gate(
            self.config.gate_checks,
            self.live(),
            &prev,
            &self.gate_input(),
            false,
        );
        if let Some(c) = plan.failed_checks().first() {
            return Err(Some(c.detail.clone()));
        }
        let way_back = ops::way_back_check(&prev, &plan, &self.memory);
        if !way_back.ok {
            return Err(Some(way_back.detail));
        }
        let version = plan.to_version.unwrap_or_default();
        Ok((prev, version, left))
    }

    /// The one-key rollback hint for the key bar and the Traffic pane, when `r` would roll
    /// back at once: "r ROLLBACK → blue v1.4.2 (no confirmation) · 8m left".
    pub fn one_key_hint(&self, key: &str, now: SystemTime) -> Option<String> {
        let rolling_back = self
            .op
            .as_ref()
            .is_some_and(|o| o.kind == "rollback" && o.verdict.is_none());
        if rolling_back {
            return None;
        }
        let (slot, version, left) = self.one_key(now).ok()?;
        let left = if left.is_zero() {
            "during the watch".to_string()
        } else {
            format!("{}m left", left.as_secs().div_ceil(60))
        };
        Some(format!(
            "{key} ROLLBACK → {slot} v{} (no confirmation) · {left}",
            version.trim_start_matches('v')
        ))
    }

    /// Another cutover (not this process) holds the environment's lock.
    pub fn locked_by_other(&self) -> Option<&LockInfo> {
        self.lock.as_ref().filter(|l| l.pid != std::process::id())
    }
}

/// A router's problem as a warning line: what [`EnvView::warnings`] lists.
pub fn router_problem(router: &str, problem: &str) -> String {
    format!("router `{router}`: {problem}")
}

/// What a confirm dialog would start.
#[derive(Debug, Clone)]
pub enum Confirmed {
    Op(OpKind),
    /// `cutover drill` from the TUI, with its live chart.
    Drill,
}

#[derive(Debug, Clone)]
pub struct Confirm {
    pub env: usize,
    pub what: Confirmed,
    pub title: String,
    /// Why this dialog asks when it usually would not (a rollback outside its window).
    pub why: Option<String>,
    pub typed: String,
    pub mode: ConfirmMode,
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one overlay at a time
pub enum Overlay {
    None,
    Help,
    Confirm(Confirm),
}

pub struct App {
    pub config: Config,
    pub theme: Theme,
    pub keymap: Keymap,
    pub envs: Vec<EnvView>,
    pub selected_env: usize,
    pub selected_slot: usize,
    pub focus: Focus,
    pub overlay: Overlay,
    pub filter: String,
    pub filtering: bool,
    /// The `:` command line, while it is open.
    pub command: Option<String>,
    /// Completions offered for the command line.
    pub completions: Vec<String>,
    pub events: VecDeque<LogLine>,
    /// Lines ever logged (the pane keeps the newest only).
    pub events_total: u64,
    /// Lines scrolled back from the newest in the event pane.
    pub event_scroll: usize,
    pub now: SystemTime,
    pub size: (u16, u16),
    pub read_only: bool,
    pub demo: bool,
    pub status: Option<(Level, String)>,
    pub should_quit: bool,
    /// `q` was pressed while routers were being changed: quit when that step ends.
    pub quit_pending: bool,
}

impl App {
    pub fn new(config: Config, theme: Theme, memories: Vec<EnvMemory>, now: SystemTime) -> App {
        let envs = config
            .environments
            .iter()
            .enumerate()
            .map(|(i, e)| EnvView {
                slots: e
                    .slots
                    .iter()
                    .map(|s| SlotView {
                        name: s.name.clone(),
                        last: None,
                        history: VecDeque::new(),
                        health_since: None,
                        version_since: None,
                        role_since: None,
                        last_role: Role::Unknown,
                        traffic: SlotTraffic::default(),
                    })
                    .collect(),
                routers: e
                    .routers
                    .iter()
                    .map(|r| RouterView {
                        name: r.name().to_string(),
                        kind: r.kind().to_string(),
                        state: None,
                        error: None,
                        at: None,
                    })
                    .collect(),
                public: None,
                preview: None,
                memory: memories.get(i).cloned().unwrap_or_default(),
                op: None,
                superseded: Vec::new(),
                lock: None,
                interrupted: None,
                drill: None,
                markers: VecDeque::new(),
                public_answers: VecDeque::new(),
                config: e.clone(),
            })
            .collect();
        let keymap = Keymap::with_overrides(&config.keys).unwrap_or_default();
        App {
            read_only: config.settings.read_only,
            config,
            theme,
            keymap,
            envs,
            selected_env: 0,
            selected_slot: 0,
            focus: Focus::Slots,
            overlay: Overlay::None,
            filter: String::new(),
            filtering: false,
            command: None,
            completions: Vec::new(),
            events: VecDeque::new(),
            events_total: 0,
            event_scroll: 0,
            now,
            size: (120, 40),
            demo: false,
            status: None,
            should_quit: false,
            quit_pending: false,
        }
    }

    pub fn env(&self) -> Option<&EnvView> {
        self.envs.get(self.selected_env)
    }

    /// Indices of the environments the filter lets through.
    pub fn visible_envs(&self) -> Vec<usize> {
        let f = self.filter.to_lowercase();
        (0..self.envs.len())
            .filter(|&i| f.is_empty() || self.envs[i].config.name.to_lowercase().contains(&f))
            .collect()
    }

    fn log(&mut self, env: usize, level: Level, text: impl Into<String>) {
        let name = self
            .envs
            .get(env)
            .map(|e| e.config.name.clone())
            .unwrap_or_default();
        self.events.push_back(LogLine {
            at: self.now,
            env: name,
            level,
            text: text.into(),
        });
        self.events_total += 1;
        while self.events.len() > EVENT_LINES {
            self.events.pop_front();
        }
    }

    pub fn update(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::Tick(now) => {
                self.now = now;
                vec![]
            }
            Event::Resize(w, h) => {
                self.size = (w, h);
                vec![]
            }
            Event::Key(k) => self.on_key(k),
            Event::Mouse(m) => {
                self.on_mouse(m);
                vec![]
            }
            Event::Probe { env, slot, result } => {
                self.on_probe(env, slot, result);
                vec![]
            }
            Event::Url {
                env,
                preview,
                result,
            } => {
                if let Some(e) = self.envs.get_mut(env) {
                    e.url_probed(preview, &result, self.now);
                    if preview {
                        e.preview = Some(result);
                    } else {
                        e.public = Some(result);
                    }
                }
                vec![]
            }
            Event::Router {
                env,
                router,
                result,
                at,
            } => {
                self.on_router(env, router, result, at);
                vec![]
            }
            Event::Op { env, id, progress } => {
                self.on_progress(env, &id, progress);
                if self.quit_pending && !self.envs.iter().any(EnvView::op_changing_routers) {
                    self.should_quit = true;
                    return vec![Effect::Quit];
                }
                vec![]
            }
            Event::Shared { env, text } => {
                self.log(env, Level::Info, crate::redact::redact(&text));
                vec![]
            }
            Event::Signal(name) => {
                self.status = Some((Level::Warn, format!("{name} received")));
                self.act(Action::Quit)
            }
            Event::Memory { env, memory } => {
                if let Some(e) = self.envs.get_mut(env) {
                    e.memory = memory;
                }
                vec![]
            }
            Event::Lock {
                env,
                holder,
                interrupted,
            } => {
                let mut line = None;
                if let Some(e) = self.envs.get_mut(env) {
                    e.lock = holder;
                    if interrupted.is_some() && e.interrupted.is_none() {
                        line = e
                            .warnings()
                            .first()
                            .cloned()
                            .or_else(|| interrupted.as_ref().map(Journal::summary));
                    }
                    e.interrupted = interrupted;
                }
                if let Some(l) = line {
                    let l = match self.envs.get(env).and_then(|e| e.interrupted.as_ref()) {
                        Some(j) => format!(
                            "{}; run `cutover recover {}`",
                            j.summary(),
                            self.envs[env].config.name
                        ),
                        None => l,
                    };
                    self.log(env, Level::Bad, l);
                }
                vec![]
            }
            Event::Theme(Ok(t)) => {
                self.status = Some((Level::Good, format!("theme {}", t.name)));
                self.theme = t;
                vec![]
            }
            Event::Theme(Err(e)) => {
                self.status = Some((Level::Bad, e));
                vec![]
            }
            Event::DrillTick { env, tick } => {
                let now = self.now;
                if let Some(e) = self.envs.get_mut(env)
                    && let Some(d) = e.drill.as_mut()
                {
                    // Each switch of the drill is marked on the traffic chart as well.
                    let before = d.ticks.last().map_or(0, |t| t.switches);
                    let switched = tick.switches > before;
                    d.ticks.push(tick);
                    if switched {
                        e.mark(now, "drill");
                    }
                }
                vec![]
            }
            Event::DrillDone { env, result } => {
                let line = match &result {
                    Ok(r) if r.passed() => (
                        Level::Good,
                        format!(
                            "drill: {} requests, 0 failed, {} switches",
                            r.sent,
                            r.switches.len()
                        ),
                    ),
                    Ok(r) if r.failed == 0 && r.failed_operations.is_empty() => (
                        Level::Bad,
                        format!("drill FAILED: {}", r.unobserved.join("; ")),
                    ),
                    Ok(r) => (
                        Level::Bad,
                        format!(
                            "drill: {} of {} requests FAILED ({:?}); {} operations failed",
                            r.failed,
                            r.sent,
                            r.failures,
                            r.failed_operations.len()
                        ),
                    ),
                    Err(e) => (Level::Bad, format!("drill refused: {e}")),
                };
                if let Some(d) = self.envs.get_mut(env).and_then(|e| e.drill.as_mut()) {
                    d.done = Some(result);
                }
                self.status = Some(line.clone());
                self.log(env, line.0, line.1);
                vec![]
            }
        }
    }

    fn on_probe(&mut self, env: usize, slot: usize, result: ProbeResult) {
        let now = self.now;
        let history_len = self.config.settings.history.max(GATE_HISTORY);
        let Some(s) = self.envs.get_mut(env).and_then(|e| e.slots.get_mut(slot)) else {
            return;
        };
        let before_health = s.health();
        let before_version = s.version().map(str::to_string);
        let name = s.name.clone();
        s.history.push_back(Sample {
            health: result.health,
            latency_ms: result.latency.map(|d| d.as_millis() as u64),
        });
        while s.history.len() > history_len {
            s.history.pop_front();
        }
        let new_health = result.health;
        let new_version = result.version.as_ref().map(|v| v.version.clone());
        let why = result.error.as_ref().map(|e| e.to_string());
        s.last = Some(result);
        let mut lines = Vec::new();
        if before_health != new_health {
            s.health_since = Some(now);
            if before_health != Health::Unknown || new_health != Health::Up {
                let level = match new_health {
                    Health::Up => Level::Good,
                    Health::Degraded => Level::Warn,
                    _ => Level::Bad,
                };
                lines.push((
                    level,
                    format!(
                        "{name} health {} → {}{}",
                        before_health,
                        new_health,
                        why.map(|w| format!(" ({w})")).unwrap_or_default()
                    ),
                ));
            }
        }
        if new_version.is_some() && before_version != new_version {
            s.version_since = Some(now);
            if let (Some(b), Some(n)) = (&before_version, &new_version) {
                lines.push((Level::Info, format!("{name} version {b} → {n}")));
            }
        }
        for (l, t) in lines {
            self.log(env, l, t);
        }
    }

    fn on_router(
        &mut self,
        env: usize,
        router: usize,
        result: Result<RouterState, String>,
        at: SystemTime,
    ) {
        let now = self.now;
        let Some(e) = self.envs.get_mut(env) else {
            return;
        };
        let mut lines = Vec::new();
        if let Some(r) = e.routers.get_mut(router) {
            match result {
                Ok(state) => {
                    if r.error.take().is_some() {
                        lines.push((Level::Good, format!("router `{}` answers again", r.name)));
                    }
                    r.state = Some(state);
                    r.at = Some(at);
                }
                Err(err) => {
                    if r.error.as_deref() != Some(err.as_str()) {
                        lines.push((Level::Bad, format!("router `{}`: {err}", r.name)));
                    }
                    r.error = Some(err);
                }
            }
        }
        // The traffic figures come from the first router only: two routers' counters of
        // the same slot are two halves of its traffic, not two readings of it.
        if router == 0
            && let Some(r) = e.routers.first()
        {
            match (r.error.is_none(), r.state.as_ref(), r.at) {
                (true, Some(st), Some(at)) => {
                    for s in e.slots.iter_mut() {
                        s.traffic.read(st.slots.get(&s.name), at);
                    }
                }
                _ => {
                    for s in e.slots.iter_mut() {
                        s.traffic.lost();
                    }
                }
            }
        }
        let roles: Vec<Role> = e.slots.iter().map(|s| e.role_of(&s.name)).collect();
        for (s, role) in e.slots.iter_mut().zip(roles) {
            if s.last_role != role {
                if s.last_role != Role::Unknown {
                    lines.push((
                        Level::Info,
                        format!("{} role {} → {}", s.name, s.last_role, role),
                    ));
                }
                s.last_role = role;
                s.role_since = Some(now);
            }
        }
        for (l, t) in lines {
            self.log(env, l, t);
        }
    }

    fn on_progress(&mut self, env: usize, id: &str, p: Progress) {
        let Some(e) = self.envs.get_mut(env) else {
            return;
        };
        // The operation on the screen, or one it superseded that is still finishing: the
        // latter's progress is kept off the screen; only its last record is logged.
        let current = e.op.as_ref().is_some_and(|o| o.id == id);
        let op = if current {
            e.op.as_mut()
        } else {
            e.superseded.iter_mut().find(|o| o.id == id)
        };
        let Some(op) = op else { return };
        let mut line = None;
        let mut finished = false;
        match p {
            Progress::Step { step, ok, message } => {
                match op.steps.iter_mut().find(|(s, _, _)| *s == step) {
                    Some(entry) => *entry = (step, ok, message.clone()),
                    None => op.steps.push((step, ok, message.clone())),
                }
                if let Some(ok) = ok
                    && current
                {
                    line = Some((
                        if ok { Level::Info } else { Level::Bad },
                        format!("{} {}: {}", op.title, step.label(), message),
                    ));
                }
            }
            Progress::Watching {
                remaining,
                detail,
                errors,
                checks,
                passed,
            } => {
                op.watching = Some((remaining, detail));
                op.watch_inputs = Some((errors, checks, passed));
            }
            Progress::Remembered => {}
            Progress::Finished(out) => {
                finished = true;
                op.verdict = Some(out.verdict);
                op.watching = None;
                op.watch_inputs = None;
                op.message = out.message.clone();
                let level = match out.verdict {
                    Verdict::Done => Level::Good,
                    Verdict::Refused | Verdict::Cancelled => Level::Warn,
                    _ => Level::Bad,
                };
                line = Some((
                    level,
                    format!(
                        "{} #{} {}: {}",
                        op.title,
                        op.id,
                        out.verdict.label(),
                        out.message
                    ),
                ));
                if current {
                    // An alarm names the key that rolls back, as bound here, first: a long
                    // reason must not push it off the screen.
                    let hint = if out.verdict == Verdict::Alarm {
                        format!(
                            "ALARM — press {} to roll back · ",
                            self.keymap.first_key(Action::Rollback)
                        )
                    } else {
                        String::new()
                    };
                    self.status = Some((level, format!("{hint}{}: {}", op.title, out.message)));
                }
            }
        }
        if finished && !current {
            e.superseded.retain(|o| o.id != id);
        }
        if let Some((l, t)) = line {
            self.log(env, l, t);
        }
    }

    fn on_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if k.kind == crossterm::event::KeyEventKind::Release {
            return vec![];
        }
        match &mut self.overlay {
            Overlay::Help => {
                self.overlay = Overlay::None;
                return vec![];
            }
            Overlay::Confirm(_) => return self.on_confirm_key(k),
            Overlay::None => {}
        }
        if self.command.is_some() {
            return self.on_command_key(k);
        }
        if self.filtering {
            if k.code == KeyCode::Tab {
                let names: Vec<String> = self.envs.iter().map(|e| e.config.name.clone()).collect();
                let (done, _) = complete(&self.filter, &names);
                self.filter = done;
            }
            match k.code {
                KeyCode::Esc => {
                    self.filter.clear();
                    self.filtering = false;
                }
                KeyCode::Enter => self.filtering = false,
                KeyCode::Backspace => {
                    self.filter.pop();
                }
                KeyCode::Char(c) => self.filter.push(c),
                _ => {}
            }
            let visible = self.visible_envs();
            if let Some(&first) = visible.first()
                && !visible.contains(&self.selected_env)
            {
                self.selected_env = first;
                self.selected_slot = 0;
            }
            return vec![];
        }
        let Some(action) = self.keymap.action(&k) else {
            return vec![];
        };
        self.status = None;
        self.act(action)
    }

    /// Do an action (from a key, or a `:` command later).
    pub fn act(&mut self, action: Action) -> Vec<Effect> {
        if action.changes_routers() && self.read_only_here() {
            self.refuse_read_only(action.name());
            return vec![];
        }
        if action.is_demo() && !self.demo {
            return vec![];
        }
        let env_idx = self.selected_env;
        match action {
            Action::Quit => {
                let changing: Vec<String> = self
                    .envs
                    .iter()
                    .filter(|e| e.op_changing_routers())
                    .filter_map(|e| {
                        e.op.as_ref()
                            .map(|o| format!("{} on `{}`", o.title, e.config.name))
                    })
                    .collect();
                if changing.is_empty() || self.quit_pending {
                    // A second q quits now, in the middle of the change (recorded).
                    self.should_quit = true;
                    return vec![if changing.is_empty() {
                        Effect::Quit
                    } else {
                        Effect::QuitNow
                    }];
                }
                self.quit_pending = true;
                let key = self.keymap.first_key(Action::Quit);
                self.status = Some((
                    Level::Warn,
                    format!(
                        "{} is changing the routers: cutover quits when that step ends (a watch after it is abandoned, the new slot stays live); press {key} again to quit now (recorded as abandoned; `cutover recover` finishes it)",
                        changing.join(", ")
                    ),
                ));
                vec![]
            }
            Action::Help => {
                self.overlay = Overlay::Help;
                vec![]
            }
            Action::NextPane => {
                self.focus = match self.focus {
                    Focus::Environments => Focus::Slots,
                    Focus::Slots => Focus::Events,
                    Focus::Events => Focus::Environments,
                };
                vec![]
            }
            Action::Up | Action::Down => {
                let down = action == Action::Down;
                if self.focus == Focus::Events {
                    self.event_scroll = if down {
                        self.event_scroll.saturating_sub(1)
                    } else {
                        (self.event_scroll + 1).min(self.events.len().saturating_sub(1))
                    };
                } else {
                    let vis = self.visible_envs();
                    if let Some(pos) = vis.iter().position(|&i| i == self.selected_env) {
                        let next = if down {
                            (pos + 1).min(vis.len().saturating_sub(1))
                        } else {
                            pos.saturating_sub(1)
                        };
                        if vis[next] != self.selected_env {
                            self.selected_env = vis[next];
                            self.selected_slot = 0;
                        }
                    }
                }
                vec![]
            }
            Action::Left => {
                self.selected_slot = self.selected_slot.saturating_sub(1);
                vec![]
            }
            Action::Right => {
                let n = self.env().map_or(1, |e| e.slots.len());
                self.selected_slot = (self.selected_slot + 1).min(n.saturating_sub(1));
                vec![]
            }
            Action::Filter => {
                self.filtering = true;
                vec![]
            }
            Action::Command => {
                self.command = Some(String::new());
                self.completions.clear();
                vec![]
            }
            Action::Swap => {
                self.ask_swap(env_idx);
                vec![]
            }
            Action::Rollback => self.ask_rollback(env_idx),
            Action::Drain => {
                if let Some((e, slot)) = self.env().zip(self.selected_slot_name()) {
                    let drain = e.role_of(&slot) != Role::Draining;
                    self.ask_drain(env_idx, &slot, drain);
                }
                vec![]
            }
            Action::Maintenance => {
                if let Some(e) = self.env() {
                    let on = e.state().is_none_or(|s| s.maintenance.is_none());
                    self.ask_maintenance(env_idx, on);
                }
                vec![]
            }
            Action::Drill => {
                self.ask_drill(env_idx);
                vec![]
            }
            Action::Rolling => {
                if let Some(slot) = self.selected_slot_name() {
                    self.ask_rolling(env_idx, &slot);
                }
                vec![]
            }
            Action::Canary => {
                if let Some(slot) = self.selected_slot_name() {
                    self.ask_canary(env_idx, &slot);
                }
                vec![]
            }
            // Dialog actions act only inside a confirm dialog.
            Action::Confirm | Action::Cancel | Action::Force | Action::TakeOver => vec![],
            Action::DemoBreak | Action::DemoSlow => {
                let Some(slot) = self.selected_slot_name() else {
                    return vec![];
                };
                let cmd = if action == Action::DemoBreak {
                    DemoCommand::ToggleHealth { slot }
                } else {
                    DemoCommand::ToggleSlow { slot }
                };
                vec![Effect::Demo(cmd)]
            }
        }
    }

    fn on_command_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let Some(line) = self.command.as_mut() else {
            return vec![];
        };
        match k.code {
            KeyCode::Esc => {
                self.command = None;
                self.completions.clear();
            }
            KeyCode::Backspace if line.pop().is_none() => self.command = None,
            KeyCode::Backspace => {}
            KeyCode::Char(c) => line.push(c),
            KeyCode::Tab => {
                let line = line.clone();
                let (head, last) = match line.rsplit_once(' ') {
                    Some((h, l)) => (format!("{h} "), l.to_string()),
                    None => (String::new(), line.clone()),
                };
                let candidates = self.candidates(&head);
                let (done, options) = complete(&last, &candidates);
                let finished = options.len() == 1;
                self.command = Some(format!("{head}{done}{}", if finished { " " } else { "" }));
                self.completions = if finished { vec![] } else { options };
            }
            KeyCode::Enter => {
                let line = line.trim().to_string();
                self.command = None;
                self.completions.clear();
                return self.run_command(&line);
            }
            _ => {}
        }
        vec![]
    }

    /// What may follow `head` on the command line.
    fn candidates(&self, head: &str) -> Vec<String> {
        let slots = || {
            self.env()
                .map(|e| e.slots.iter().map(|s| s.name.clone()).collect())
                .unwrap_or_default()
        };
        match head.split_whitespace().next() {
            None => COMMANDS.iter().map(|c| c.to_string()).collect(),
            Some("env") => self.envs.iter().map(|e| e.config.name.clone()).collect(),
            Some("swap" | "drain" | "undrain" | "rolling") => slots(),
            Some("maintenance") => vec!["on".into(), "off".into()],
            Some("theme") => Theme::builtin_names()
                .into_iter()
                .map(String::from)
                .collect(),
            Some(_) => vec![],
        }
    }

    /// Run a `:` command.
    pub fn run_command(&mut self, line: &str) -> Vec<Effect> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let env_idx = self.selected_env;
        let needs_ro_check = matches!(
            words.first().copied(),
            Some("swap" | "rollback" | "drain" | "undrain" | "maintenance" | "rolling")
        );
        if needs_ro_check && self.read_only_here() {
            self.refuse_read_only(&format!(":{line}"));
            return vec![];
        }
        let known_slot = |app: &App, s: &str| {
            app.env()
                .is_some_and(|e| e.slots.iter().any(|x| x.name == s))
        };
        match words.as_slice() {
            [] => {}
            ["quit" | "q"] => return self.act(Action::Quit),
            ["help"] => self.overlay = Overlay::Help,
            ["env", name] => match self.envs.iter().position(|e| e.config.name == *name) {
                Some(i) => {
                    self.selected_env = i;
                    self.selected_slot = 0;
                }
                None => {
                    let names: Vec<&str> =
                        self.envs.iter().map(|e| e.config.name.as_str()).collect();
                    self.status = Some((
                        Level::Warn,
                        format!(
                            "no environment `{name}`; environments: {}",
                            names.join(", ")
                        ),
                    ));
                }
            },
            ["swap"] => self.ask_swap(env_idx),
            ["swap", slot] if known_slot(self, slot) => self.ask_swap_to(env_idx, slot),
            ["rollback"] => return self.ask_rollback(env_idx),
            ["drain", slot] if known_slot(self, slot) => self.ask_drain(env_idx, slot, true),
            ["undrain", slot] if known_slot(self, slot) => self.ask_drain(env_idx, slot, false),
            ["rolling", slot] if known_slot(self, slot) => self.ask_rolling(env_idx, slot),
            ["maintenance", on @ ("on" | "off")] => self.ask_maintenance(env_idx, *on == "on"),
            ["theme", name] => return vec![Effect::LoadTheme(name.to_string())],
            [cmd, rest @ ..]
                if ["swap", "drain", "undrain", "rolling"].contains(cmd) && !rest.is_empty() =>
            {
                let (env, slots) = self.env().map_or_else(Default::default, |e| {
                    let slots: Vec<&str> = e.slots.iter().map(|s| s.name.as_str()).collect();
                    (e.config.name.as_str(), slots.join(", "))
                });
                self.status = Some((
                    Level::Warn,
                    format!(
                        "no slot `{}` in `{env}`; its slots: {slots}",
                        rest.join(" ")
                    ),
                ));
            }
            _ => {
                self.status = Some((
                    Level::Warn,
                    format!(
                        "unknown command `:{line}`; try {} (Tab completes)",
                        COMMANDS.join(", ")
                    ),
                ))
            }
        }
        vec![]
    }

    /// Whether router changes are refused here: `--read-only`, or `read_only` in the config.
    fn read_only_here(&self) -> bool {
        self.read_only || self.env().is_some_and(|e| e.config.read_only)
    }

    fn refuse_read_only(&mut self, what: &str) {
        self.status = Some((
            Level::Warn,
            format!(
                "read-only: `{what}` is not allowed here (cutover runs with --read-only, or \
                 read_only = true is set in the config)"
            ),
        ));
    }

    fn selected_slot_name(&self) -> Option<String> {
        self.env()
            .and_then(|e| e.slots.get(self.selected_slot))
            .map(|s| s.name.clone())
    }

    fn ask(&mut self, env: usize, kind: OpKind, title: String) {
        let Some(e) = self.envs.get(env) else { return };
        if e.op_running() {
            // A watch may be running: a new swap or rollback cancels it; anything else waits.
            let watching =
                e.op.as_ref()
                    .is_some_and(|o| o.steps.iter().any(|(s, _, _)| *s == Step::Watch));
            if !(watching && matches!(kind, OpKind::Rollback | OpKind::Swap { .. })) {
                let why = if watching {
                    format!(
                        "a cutover is being watched: wait for the watch to end, or press {} to \
                         roll back",
                        self.keymap.first_key(Action::Rollback)
                    )
                } else {
                    OP_RUNNING.to_string()
                };
                self.status = Some((Level::Warn, why));
                return;
            }
        }
        let mode = e.confirm_mode();
        self.overlay = Overlay::Confirm(Confirm {
            env,
            what: Confirmed::Op(kind),
            title,
            why: None,
            typed: String::new(),
            mode,
        });
    }

    fn ask_drill(&mut self, env: usize) {
        let Some(e) = self.envs.get_mut(env) else {
            return;
        };
        if let Some(d) = &e.drill {
            if d.done.is_some() {
                e.drill = None; // D closes a finished drill's chart
            } else {
                self.status = Some((
                    Level::Warn,
                    "a drill is running on this environment; wait for it to end".into(),
                ));
            }
            return;
        }
        if e.op_running() {
            self.status = Some((Level::Warn, OP_RUNNING.into()));
            return;
        }
        let why = if e.config.production && !e.config.allow_drill {
            Some(
                "a production environment: set allow_drill = true for it, or use `cutover drill --yes-really`",
            )
        } else if e.config.public_url.is_none() {
            Some("it has no public_url to send load to; set one in the config")
        } else {
            None
        };
        if let Some(why) = why {
            self.status = Some((
                Level::Warn,
                format!("no drill on `{}`: {why}", e.config.name),
            ));
            return;
        }
        let mode = e.confirm_mode();
        self.overlay = Overlay::Confirm(Confirm {
            env,
            what: Confirmed::Drill,
            title: format!("Drill: {DRILL_PAIRS} swap+rollback pairs under load"),
            why: None,
            typed: String::new(),
            mode,
        });
    }

    /// `s`: swap live and preview, or make the selected idle slot live.
    fn ask_swap(&mut self, env: usize) {
        let Some(e) = self.envs.get(env) else { return };
        let Some(live) = e.live() else {
            self.status = Some((
                Level::Warn,
                "the router has not said which slot is live yet; wait for its first answer, \
                 or name the slot with :swap SLOT"
                    .into(),
            ));
            return;
        };
        let selected = e.slots.get(self.selected_slot).map(|s| s.name.as_str());
        let to = match selected {
            Some(s) if s != live && e.preview_slot() != Some(s) => Some(s),
            _ => e.preview_slot(),
        };
        let Some(to) = to.map(str::to_string) else {
            self.status = Some((
                Level::Warn,
                format!(
                    "no preview slot: select the slot to make live, then press {}",
                    self.keymap.first_key(Action::Swap)
                ),
            ));
            return;
        };
        self.ask_swap_to(env, &to);
    }

    /// Ask to make `to` live, with the gate's verdict.
    fn ask_swap_to(&mut self, env: usize, to: &str) {
        let Some(e) = self.envs.get(env) else { return };
        let live = e.live().map(str::to_string);
        self.ask(
            env,
            OpKind::Swap {
                to: Some(to.to_string()),
            },
            format!("Swap: {} → {to}", live.as_deref().unwrap_or("?")),
        );
    }

    fn ask_drain(&mut self, env: usize, slot: &str, drain: bool) {
        let (kind, verb) = if drain {
            (OpKind::Drain(Target::slot(slot)), "Drain")
        } else {
            (OpKind::Undrain(Target::slot(slot)), "Undrain")
        };
        self.ask(env, kind, format!("{verb} `{slot}`"));
    }

    fn ask_maintenance(&mut self, env: usize, on: bool) {
        let title = if on {
            "Maintenance ON (503 page on the live URL)"
        } else {
            "Maintenance OFF"
        };
        let kind = OpKind::Maintenance {
            on,
            mode: MaintenanceMode::Page,
        };
        self.ask(env, kind, title.into());
    }

    fn ask_canary(&mut self, env: usize, slot: &str) {
        let Some(e) = self.envs.get(env) else { return };
        if e.live() == Some(slot) {
            self.status = Some((Level::Warn, format!("`{slot}` is already live")));
            return;
        }
        let steps = e
            .config
            .canary_steps
            .iter()
            .map(|s| format!("{s} %"))
            .collect::<Vec<_>>()
            .join(" → ");
        let title = format!(
            "Canary to `{slot}`: {steps}, {} per step",
            crate::timefmt::millis(e.config.canary_pause)
        );
        let kind = OpKind::Canary {
            to: slot.to_string(),
            steps: Vec::new(),
        };
        self.ask(env, kind, title);
    }

    fn ask_rolling(&mut self, env: usize, slot: &str) {
        let kind = OpKind::Rolling {
            slot: slot.to_string(),
            version: None,
        };
        self.ask(
            env,
            kind,
            format!("Rolling deploy of `{slot}`, node by node"),
        );
    }

    /// `r`: during a swap's watch and its rollback window, roll back at once when the way back
    /// is safe (one-key rollback); otherwise ask, saying why.
    fn ask_rollback(&mut self, env: usize) -> Vec<Effect> {
        let Some(e) = self.envs.get(env) else {
            return vec![];
        };
        // During a canary's steps the rollback key is its abort: 100 % back on the live slot.
        // Once its last step (the swap) has begun, it is a rollback as after any swap.
        if let Some(op) = e.op.as_ref().filter(|o| {
            o.kind == "canary"
                && o.verdict.is_none()
                && !o.steps.iter().any(|(st, _, m)| {
                    *st == Step::Apply
                        && (m.contains("swapping to")
                            || m.starts_with("switching live")
                            || m.starts_with("routers switched"))
                })
        }) {
            let msg = format!(
                "ABORTING the canary #{}: 100 % back on the live slot",
                op.id
            );
            self.status = Some((Level::Bad, msg));
            return vec![Effect::StopOp { env }];
        }
        let Some(prev) = e.memory.previous_live.clone() else {
            self.status = Some((
                Level::Warn,
                "nothing to roll back to: no previous live slot recorded".into(),
            ));
            return vec![];
        };
        let live = e.live().map(str::to_string);
        if let Some(op) =
            e.op.as_ref()
                .filter(|o| o.kind == "rollback" && o.verdict.is_none())
        {
            // Pressed twice: one rollback.
            self.status = Some((Level::Warn, format!("already rolling back (#{})", op.id)));
            return vec![];
        }
        let swap_watching = e.op.as_ref().is_some_and(|o| {
            o.kind == "swap"
                && o.verdict.is_none()
                && o.steps.iter().any(|(s, _, _)| *s == Step::Watch)
        });
        // During a swap's watch the last poll may not show the swap yet; the engine reads
        // the routers itself.
        if live.as_deref() == Some(prev.as_str()) && !swap_watching {
            self.status = Some((Level::Warn, format!("`{prev}` is already live")));
            return vec![];
        }
        let free = !e.op_running() || swap_watching;
        let title = format!("Rollback: {} → {prev}", live.as_deref().unwrap_or("?"));
        match e.one_key(self.now) {
            Ok((slot, version, _)) if free => {
                let req = OpRequest {
                    one_key: true,
                    ..OpRequest::new(OpKind::Rollback)
                };
                let msg = format!("ROLLING BACK to {slot} (v{version}) — one-key rollback");
                self.status = Some((Level::Bad, msg));
                let title = format!(
                    "One-key rollback: {} → {slot}",
                    live.as_deref().unwrap_or("?")
                );
                self.start_op(env, title, "", req)
            }
            Ok(_) | Err(_) if !free => {
                self.ask(env, OpKind::Rollback, title);
                vec![]
            }
            Ok(_) => vec![],
            Err(why) => {
                self.ask(env, OpKind::Rollback, title);
                if let Overlay::Confirm(c) = &mut self.overlay {
                    c.why = why;
                }
                vec![]
            }
        }
    }

    /// The gate's verdict for a confirm dialog, from the newest polls. It is computed each
    /// time the dialog is drawn or a key is pressed, so it follows the slot while the dialog
    /// is open: `y` works the moment the gate passes, and stops working the moment it fails.
    pub fn confirm_plan(&self, c: &Confirm) -> Option<SwitchPlan> {
        let e = self.envs.get(c.env)?;
        let live = e.live();
        let (to, new_version) = match &c.what {
            Confirmed::Op(OpKind::Swap { to: Some(to) }) => (to.as_str(), true),
            Confirmed::Op(OpKind::Rollback) => (e.memory.previous_live.as_deref()?, false),
            _ => return None,
        };
        Some(ops::gate(
            e.config.gate_checks,
            live,
            to,
            &e.gate_input(),
            new_version,
        ))
    }

    fn on_confirm_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let Overlay::Confirm(c) = &self.overlay else {
            return vec![];
        };
        let gate_ok = self.confirm_plan(c).is_none_or(|p| p.passes());
        let forceable = !gate_ok
            || (matches!(c.what, Confirmed::Op(OpKind::Swap { .. }))
                && self.envs[c.env].warmup_refused());
        let name = self.envs[c.env].config.name.clone();
        let other_holder = self.envs[c.env].locked_by_other().is_some();
        let (mode, typed_ok) = (c.mode, c.typed == name);
        let is_char =
            matches!(k.code, KeyCode::Char(_)) && !k.modifiers.contains(KeyModifiers::CONTROL);
        // While a name is being typed, letters are letters: a bound letter acts only once the
        // name is complete.
        let action = self
            .keymap
            .dialog_action(&k)
            .filter(|_| !(mode == ConfirmMode::TypeName && is_char && !typed_ok));
        let mut go: Option<(bool, bool)> = None; // Some((force, take_over))
        match action {
            Some(Action::Cancel) => {
                self.overlay = Overlay::None;
                self.status = Some((Level::Info, "cancelled".into()));
                return vec![];
            }
            Some(Action::Confirm) if gate_ok && (mode == ConfirmMode::YesNo || typed_ok) => {
                go = Some((false, false))
            }
            Some(Action::Force) if forceable && (mode == ConfirmMode::YesNo || typed_ok) => {
                go = Some((true, false))
            }
            Some(Action::TakeOver) if other_holder && (mode == ConfirmMode::YesNo || typed_ok) => {
                go = Some((!gate_ok, true))
            }
            Some(_) => {}
            None => {
                if let Overlay::Confirm(c) = &mut self.overlay
                    && mode == ConfirmMode::TypeName
                {
                    match k.code {
                        KeyCode::Backspace => {
                            c.typed.pop();
                        }
                        KeyCode::Char(ch) if is_char => c.typed.push(ch),
                        _ => {}
                    }
                }
            }
        }
        let Some((force, take_over)) = go else {
            return vec![];
        };
        let Overlay::Confirm(c) = std::mem::replace(&mut self.overlay, Overlay::None) else {
            return vec![];
        };
        let kind = match c.what {
            Confirmed::Op(k) => k,
            Confirmed::Drill => {
                if let Some(e) = self.envs.get_mut(c.env) {
                    e.drill = Some(DrillView::default());
                }
                self.log(c.env, Level::Info, format!("{} requested", c.title));
                return vec![Effect::RunDrill { env: c.env }];
            }
        };
        let req = OpRequest {
            force,
            watch: true,
            take_over,
            ..OpRequest::new(kind)
        };
        let note = format!(
            "{}{}",
            if force { " (FORCED)" } else { "" },
            if take_over {
                " (taking the lock over)"
            } else {
                ""
            }
        );
        self.start_op(c.env, c.title, &note, req)
    }

    /// Start an operation on the screen: a running watch steps aside (superseded; its last
    /// record is still logged under its own title and id).
    fn start_op(&mut self, env: usize, title: String, note: &str, req: OpRequest) -> Vec<Effect> {
        let Some(e) = self.envs.get_mut(env) else {
            return vec![];
        };
        let gate = e.gate_input();
        if let Some(old) = e.op.take()
            && old.verdict.is_none()
        {
            e.superseded.push(old);
        }
        let line = format!("{title} #{} requested{note}", req.id);
        e.mark(self.now, req.kind.name());
        e.op = Some(OpView {
            id: req.id.clone(),
            kind: req.kind.name(),
            title,
            steps: Vec::new(),
            watching: None,
            watch_inputs: None,
            verdict: None,
            message: String::new(),
            started: self.now,
        });
        self.log(env, Level::Info, line);
        vec![Effect::RunOp { env, req, gate }]
    }

    fn on_mouse(&mut self, m: MouseEvent) {
        if !matches!(m.kind, MouseEventKind::Down(MouseButton::Left)) {
            return;
        }
        let area = Rect::new(0, 0, self.size.0, self.size.1);
        let areas = crate::ui::layout(area, self);
        let p = Position::new(m.column, m.row);
        if let Some(list) = areas.envs
            && list.contains(p)
        {
            let row = m.row.saturating_sub(list.y + 1) as usize;
            if let Some(&i) = self.visible_envs().get(row) {
                self.selected_env = i;
                self.selected_slot = 0;
                self.focus = Focus::Environments;
            }
            return;
        }
        for (i, r) in areas.slots.iter().enumerate() {
            if r.contains(p) {
                self.selected_slot = areas.shown.start + i;
                self.focus = Focus::Slots;
                return;
            }
        }
        if areas.events.contains(p) {
            self.focus = Focus::Events;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(env_extra: &str) -> App {
        let text = format!(
            "[[environment]]\nname = \"shop\"\npublic_url = \"http://127.0.0.1:8080/\"\n{env_extra}\n\
             [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:9101\"\n\
             [[environment.slot]]\nname = \"green\"\naddress = \"http://127.0.0.1:9102\"\n"
        );
        let config =
            crate::config::parse(&text, std::path::Path::new("t.toml")).expect("valid config");
        App::new(config, Theme::monochrome(), vec![], SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn a_production_drill_asks_for_the_name_like_every_production_operation() {
        let mut a = app("production = true\nallow_drill = true");
        a.act(Action::Drill);
        match &a.overlay {
            Overlay::Confirm(c) => assert_eq!(c.mode, ConfirmMode::TypeName),
            _ => panic!("no confirm dialog; status: {:?}", a.status),
        }
    }

    #[test]
    fn unknown_names_on_the_command_line_list_the_known_ones() {
        let mut a = app("");
        a.run_command("drain purple");
        let (_, msg) = a.status.clone().expect("a status");
        assert!(
            msg.contains("no slot `purple`") && msg.contains("blue, green"),
            "{msg}"
        );
        a.run_command("env nope");
        let (_, msg) = a.status.clone().expect("a status");
        assert!(
            msg.contains("no environment `nope`") && msg.contains("shop"),
            "{msg}"
        );
    }
}
