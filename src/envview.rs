//! What cutover knows of each environment, built from what it sees ([`Seen`]: probes, router
//! reads, locks, operations' progress): slots, routers, traffic, the running operation,
//! warnings, drift. Both faces read it: the TUI draws it, `cutover status` and `cutover watch`
//! print it. No terminal in here.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use crate::config::{ConfirmMode, Environment};
use crate::model::{Health, MaintenanceMode, ProbeResult, Role, RouterState};
use crate::ops::{GateInput, Progress, Step, Verdict};
use crate::probe::UrlProbe;
use crate::state::{EnvMemory, Journal, LockInfo};

mod traffic;
mod update;
pub use traffic::{SlotTraffic, TrafficSample};
pub use update::{Said, Seen};

/// How many health results per slot the gate can look back on.
pub const GATE_HISTORY: usize = 20;
/// How far back the traffic chart looks.
pub const TRAFFIC_WINDOW: Duration = Duration::from_secs(300);
/// How many operation markers the traffic chart keeps.
const MARKERS: usize = 32;
/// At most this many of cutover's own public/preview URL probes are still to be taken off a
/// slot's request counter: a probe attributed to the wrong slot costs at most this much.
const PROBE_DEBT_CAP: u64 = 8;

/// How worrying a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Good,
    Warn,
    Bad,
}

/// A line of the event log.
#[derive(Debug, Clone)]
pub struct LogLine {
    pub at: SystemTime,
    pub env: String,
    pub level: Level,
    pub text: String,
}

/// When drift or a disagreement is worth telling the notification channels: once, and only
/// when it is not another cutover's change in progress. Drift is told once the state files
/// (or the shared store), read after the router showed it, still say cutover set otherwise: a
/// swap by another cutover process reaches the routers a moment before its memory does. A
/// disagreement is told when it lasts from one reading of the first router to the next,
/// while no one holds the lock.
#[derive(Debug, Clone, Default)]
pub struct Alerts {
    /// The routers showed drift since the memory was last read.
    drift_seen: bool,
    drift_told: bool,
    /// The routers disagreed at the last reading of the first router.
    disagree_seen: bool,
    disagree_told: bool,
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
    /// User traffic on the slot, from the routers' own counters (summed over a fleet).
    pub traffic: SlotTraffic,
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

impl OpView {
    /// A canary that is still in its steps (its last step, the swap, has not begun): the
    /// rollback key aborts it, and promote, pause and resume steer it.
    pub fn canary_in_steps(&self) -> bool {
        self.kind == "canary"
            && self.verdict.is_none()
            && !self.steps.iter().any(|(st, _, m)| {
                *st == Step::Apply
                    && (m.contains("swapping to")
                        || m.starts_with("switching live")
                        || m.starts_with("routers switched"))
            })
    }

    /// A canary's plan as its plan step wrote it (`5 %`, `pause`, …, `100 %`) and the index
    /// of its current step.
    pub fn canary_timeline(&self) -> Option<(Vec<String>, usize)> {
        let (_, _, plan) = self
            .steps
            .iter()
            .find(|(s, ok, m)| *s == Step::Plan && *ok == Some(true) && m.starts_with("canary "))?;
        let list = plan.split_once(": ")?.1.rsplit_once(", ")?.0;
        let steps: Vec<String> = list.split(" → ").map(str::to_string).collect();
        let current = self
            .steps
            .iter()
            .filter_map(|(_, _, m)| m.strip_prefix("step ")?.split_once('/')?.0.parse().ok())
            .max()
            .unwrap_or(1usize);
        Some((steps, current.saturating_sub(1)))
    }

    /// The canary's hold waits for the operator: paused, or in a `pause` step (a resume goes
    /// on).
    pub fn canary_waiting(&self) -> bool {
        self.watching.as_ref().is_some_and(|(_, d)| {
            d.contains(" · paused") || d.contains(" · waiting for the operator")
        })
    }
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
    /// Drift and disagreement, as far as telling the channels goes (see [`Alerts`]).
    pub alerts: Alerts,
    /// Whether the shared store (etcd) answers; `None` without one, or before it is known.
    pub store_up: Option<bool>,
}

impl EnvView {
    /// Mark the moment an operation started on the traffic chart's time axis.
    pub(crate) fn mark(&mut self, at: SystemTime, label: &'static str) {
        self.markers.push_back((at, label));
        while self.markers.len() > MARKERS {
            self.markers.pop_front();
        }
    }

    /// One of cutover's probes of the public (or preview) URL answered: it went through the
    /// router, so it is owed back to the slot that answered it (the `X-Slot` header, or the
    /// slot the router sends that URL to).
    pub(crate) fn url_probed(&mut self, preview: bool, p: &UrlProbe, now: SystemTime) {
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

    /// The first router that answered, when no router that answered reads per-slot request
    /// counters (nginx OSS, Caddy without metrics); `None` while none has answered, or when
    /// one counts.
    pub fn uncounted_router(&self) -> Option<&RouterView> {
        let without = self.routers_without_counters();
        let answered = self.routers.iter().filter(|r| r.state.is_some()).count();
        (answered > 0 && without.len() == answered)
            .then(|| without.first().copied())
            .flatten()
    }

    /// Whether router `r` counts requests per slot, as of its last answer (`None` before it).
    fn counts(&self, r: &RouterView) -> Option<bool> {
        let st = r.state.as_ref()?;
        Some(
            self.slots
                .iter()
                .any(|s| st.slots.get(&s.name).and_then(|r| r.requests).is_some()),
        )
    }

    /// The routers that answered without per-slot request counters: in a fleet, the traffic
    /// figures are the other routers' sum and leave these out.
    pub fn routers_without_counters(&self) -> Vec<&RouterView> {
        self.routers
            .iter()
            .filter(|r| self.counts(r) == Some(false))
            .collect()
    }

    /// How many routers count requests per slot and answered their last reading: the
    /// traffic figures are their sum.
    pub fn counting_routers(&self) -> usize {
        self.routers
            .iter()
            .filter(|r| r.error.is_none() && self.counts(r) == Some(true))
            .count()
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
        let plan = crate::ops::gate(
            self.config.gate_checks,
            self.live(),
            &prev,
            &self.gate_input(),
            false,
        );
        if let Some(c) = plan.failed_checks().first() {
            return Err(Some(c.detail.clone()));
        }
        let way_back = crate::ops::way_back_check(&prev, &plan, &self.memory);
        if !way_back.ok {
            return Err(Some(way_back.detail));
        }
        let version = plan.versions.to_version.unwrap_or_default();
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
