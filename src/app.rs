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
mod dialogs;
mod view;
pub use view::*;
mod input;

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
        // Every router's counters: in a fleet, two routers' counters of the same slot are
        // two parts of its traffic, so the figures are their sum (`SlotTraffic::read_router`).
        let routers = e.routers.len();
        if let Some(r) = e.routers.get(router) {
            match (r.error.is_none(), r.state.as_ref(), r.at) {
                (true, Some(st), Some(at)) => {
                    for s in e.slots.iter_mut() {
                        s.traffic
                            .read_router(router, routers, st.slots.get(&s.name), at);
                    }
                }
                _ => {
                    for s in e.slots.iter_mut() {
                        s.traffic.lost_router(router, routers);
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
        if rolled_back {
            e.mark(self.now, "rollback");
        }
        if let Some((l, t)) = line {
            self.log(env, l, t);
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
