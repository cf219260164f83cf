//! How an environment's view changes with what cutover sees, and which of those changes are
//! worth a line in the event log. Pure: no IO, no awaiting, no terminal.

use super::*;
use crate::notify::EventKind;

/// What cutover sees of an environment: the probes', router observers' and lock watchers'
/// results, and the running operations' progress. The TUI and `cutover watch` are fed these;
/// [`EnvView::apply`] turns one into the view's new state and the lines it is worth.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // moved one at a time, not stored in bulk
pub enum Seen {
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
    /// What the store says now: who holds the lock (read first), an operation a dead cutover
    /// left unfinished, then what it remembers.
    Stored {
        env: usize,
        holder: Option<LockInfo>,
        interrupted: Option<Journal>,
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
    /// Whether the shared store answers (the header's indicator), and a line when it changed.
    Store {
        env: usize,
        up: bool,
        text: Option<String>,
    },
    /// A notification could not be delivered (after its retries): the line says to where.
    NotifyFailed {
        env: usize,
        text: String,
    },
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

impl Seen {
    /// The environment it is about.
    pub fn env(&self) -> usize {
        match self {
            Seen::Probe { env, .. }
            | Seen::Url { env, .. }
            | Seen::Router { env, .. }
            | Seen::Op { env, .. }
            | Seen::Memory { env, .. }
            | Seen::Stored { env, .. }
            | Seen::Lock { env, .. }
            | Seen::Shared { env, .. }
            | Seen::NotifyFailed { env, .. }
            | Seen::Store { env, .. }
            | Seen::DrillTick { env, .. }
            | Seen::DrillDone { env, .. } => *env,
        }
    }
}

/// What applying a [`Seen`] is worth saying.
#[derive(Debug, Default)]
pub struct Said {
    /// Lines for the event log.
    pub lines: Vec<(Level, String)>,
    /// The operation on screen ended: its verdict, level and "title: message".
    pub finished: Option<(Verdict, Level, String)>,
    /// A drill ended: its one-line result.
    pub drill_done: Option<(Level, String)>,
    /// Warnings for the notification channels: drift or a disagreement that just began.
    pub alerts: Vec<(EventKind, String)>,
}

impl Said {
    fn line(level: Level, text: impl Into<String>) -> Said {
        Said {
            lines: vec![(level, text.into())],
            ..Said::default()
        }
    }
}

impl EnvView {
    /// The view of `config` before anything is seen, with what the store remembers of it.
    pub fn new(config: &Environment, memory: EnvMemory) -> EnvView {
        EnvView {
            slots: config
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
            routers: config
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
            memory,
            op: None,
            superseded: Vec::new(),
            lock: None,
            interrupted: None,
            drill: None,
            markers: VecDeque::new(),
            public_answers: VecDeque::new(),
            alerts: Alerts::default(),
            store_up: None,
            config: config.clone(),
        }
    }

    /// Take in what was seen of this environment at `now`; `history` is how many probe
    /// results per slot to keep.
    pub fn apply(&mut self, seen: Seen, now: SystemTime, history: usize) -> Said {
        match seen {
            Seen::Probe { slot, result, .. } => Said {
                lines: self.on_probe(slot, result, now, history),
                ..Said::default()
            },
            Seen::Url {
                preview, result, ..
            } => {
                self.url_probed(preview, &result, now);
                if preview {
                    self.preview = Some(result);
                } else {
                    self.public = Some(result);
                }
                Said::default()
            }
            Seen::Router {
                router, result, at, ..
            } => {
                let lines = self.on_router(router, result, at, now);
                Said {
                    lines,
                    alerts: self.alerts_after_router(router),
                    ..Said::default()
                }
            }
            Seen::Op { id, progress, .. } => self.on_progress(&id, progress, now),
            Seen::Shared { text, .. } => Said::line(Level::Info, crate::redact::redact(&text)),
            Seen::Store { up, text, .. } => {
                self.store_up = Some(up);
                match text {
                    Some(t) => Said::line(if up { Level::Good } else { Level::Bad }, t),
                    None => Said::default(),
                }
            }
            Seen::NotifyFailed { text, .. } => {
                Said::line(Level::Warn, crate::redact::redact(&text))
            }
            Seen::Memory { memory, .. } => {
                self.memory = memory;
                Said::default()
            }
            Seen::Stored {
                holder,
                interrupted,
                memory,
                ..
            } => {
                let mut said = self.on_lock(holder, interrupted);
                self.memory = memory;
                said.alerts = self.alerts_after_memory();
                said
            }
            Seen::Lock {
                holder,
                interrupted,
                ..
            } => self.on_lock(holder, interrupted),
            Seen::DrillTick { tick, .. } => {
                if let Some(d) = self.drill.as_mut() {
                    // Each switch of the drill is marked on the traffic chart as well.
                    let before = d.ticks.last().map_or(0, |t| t.switches);
                    let switched = tick.switches > before;
                    d.ticks.push(tick);
                    if switched {
                        self.mark(now, "drill");
                    }
                }
                Said::default()
            }
            Seen::DrillDone { result, .. } => {
                let line = drill_line(&result);
                if let Some(d) = self.drill.as_mut() {
                    d.done = Some(result);
                }
                Said {
                    lines: vec![line.clone()],
                    drill_done: Some(line),
                    ..Said::default()
                }
            }
        }
    }

    /// Drift and disagreement after a router reading (see [`Alerts`]).
    fn alerts_after_router(&mut self, router: usize) -> Vec<(EventKind, String)> {
        let mut out = Vec::new();
        match self.drift() {
            Some(_) => self.alerts.drift_seen = true,
            None => (self.alerts.drift_seen, self.alerts.drift_told) = (false, false),
        }
        if router == 0 {
            match self.disagreement() {
                Some(what) => {
                    if self.alerts.disagree_seen
                        && !self.alerts.disagree_told
                        && self.lock.is_none()
                    {
                        self.alerts.disagree_told = true;
                        out.push((EventKind::Disagree, what));
                    }
                    self.alerts.disagree_seen = true;
                }
                None => (self.alerts.disagree_seen, self.alerts.disagree_told) = (false, false),
            }
        }
        out
    }

    /// Drift, confirmed by the memory read after the routers showed it (see [`Alerts`]).
    fn alerts_after_memory(&mut self) -> Vec<(EventKind, String)> {
        let confirmed = std::mem::take(&mut self.alerts.drift_seen);
        match self.drift() {
            Some(what) if confirmed && !self.alerts.drift_told && self.lock.is_none() => {
                self.alerts.drift_told = true;
                vec![(EventKind::Drift, what)]
            }
            Some(_) => vec![],
            None => {
                self.alerts.drift_told = false;
                vec![]
            }
        }
    }

    fn on_lock(&mut self, holder: Option<LockInfo>, interrupted: Option<Journal>) -> Said {
        self.lock = holder;
        let newly = interrupted.is_some() && self.interrupted.is_none();
        self.interrupted = interrupted;
        match (&self.interrupted, newly) {
            (Some(j), true) => Said::line(
                Level::Bad,
                format!(
                    "{}; run `cutover recover {}`",
                    j.summary(),
                    self.config.name
                ),
            ),
            _ => Said::default(),
        }
    }

    fn on_probe(
        &mut self,
        slot: usize,
        result: ProbeResult,
        now: SystemTime,
        history: usize,
    ) -> Vec<(Level, String)> {
        let history_len = history.max(GATE_HISTORY);
        let Some(s) = self.slots.get_mut(slot) else {
            return vec![];
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
        lines
    }

    fn on_router(
        &mut self,
        router: usize,
        result: Result<RouterState, String>,
        at: SystemTime,
        now: SystemTime,
    ) -> Vec<(Level, String)> {
        let mut lines = Vec::new();
        if let Some(r) = self.routers.get_mut(router) {
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
        // Every router's counters: in a fleet, two routers' counters of the same slot are
        // two parts of its traffic, so the figures are their sum (`SlotTraffic::read_router`).
        let routers = self.routers.len();
        if let Some(r) = self.routers.get(router) {
            match (r.error.is_none(), r.state.as_ref(), r.at) {
                (true, Some(st), Some(at)) => {
                    for s in self.slots.iter_mut() {
                        s.traffic
                            .read_router(router, routers, st.slots.get(&s.name), at);
                    }
                }
                _ => {
                    for s in self.slots.iter_mut() {
                        s.traffic.lost_router(router, routers);
                    }
                }
            }
        }
        let roles: Vec<Role> = self.slots.iter().map(|s| self.role_of(&s.name)).collect();
        for (s, role) in self.slots.iter_mut().zip(roles) {
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
        lines
    }

    fn on_progress(&mut self, id: &str, p: Progress, now: SystemTime) -> Said {
        // The operation on the screen, or one it superseded that is still finishing: the
        // latter's progress is kept off the screen; only its last record is logged.
        let current = self.op.as_ref().is_some_and(|o| o.id == id);
        let op = if current {
            self.op.as_mut()
        } else {
            self.superseded.iter_mut().find(|o| o.id == id)
        };
        let Some(op) = op else {
            return Said::default();
        };
        let mut said = Said::default();
        let mut finished = false;
        let mut rolled_back = false;
        match p {
            Progress::Step { step, ok, message } => {
                match op.steps.iter_mut().find(|(s, _, _)| *s == step) {
                    Some(entry) => *entry = (step, ok, message.clone()),
                    None => op.steps.push((step, ok, message.clone())),
                }
                if let Some(ok) = ok
                    && current
                {
                    said.lines.push((
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
            Progress::Decision { step, message } => {
                if current {
                    said.lines.push((
                        Level::Warn,
                        format!("{} {}: {}", op.title, step.label(), message),
                    ));
                }
            }
            Progress::Remembered => {}
            Progress::Finished(out) => {
                finished = true;
                // A watch that failed and rolled back by itself: the traffic chart marks the
                // rollback too, as it marks one the operator asked for.
                rolled_back = current && out.verdict == Verdict::RolledBack;
                op.verdict = Some(out.verdict);
                op.watching = None;
                op.watch_inputs = None;
                op.message = out.message.clone();
                let level = match out.verdict {
                    Verdict::Done => Level::Good,
                    Verdict::Refused | Verdict::Cancelled => Level::Warn,
                    _ => Level::Bad,
                };
                said.lines.push((
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
                    said.finished =
                        Some((out.verdict, level, format!("{}: {}", op.title, out.message)));
                }
            }
        }
        if finished && !current {
            self.superseded.retain(|o| o.id != id);
        }
        if rolled_back {
            self.mark(now, "rollback");
        }
        said
    }
}

/// A drill's result in one line.
fn drill_line(result: &Result<Box<crate::drill::DrillReport>, String>) -> (Level, String) {
    match result {
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
    }
}
