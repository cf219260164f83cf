//! The TUI's state and its update function.
//!
//! `App` is owned by one task. Probes, router observers and operations talk to it only through
//! [`Event`]s; [`App::update`] does no IO and never awaits, and returns [`Effect`]s that the
//! runner executes. Views take `&App` and change nothing.

use std::collections::VecDeque;
use std::time::SystemTime;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::config::{Config, ConfirmMode};
use crate::keymap::{Action, Keymap};
use crate::model::{MaintenanceMode, Role};
use crate::ops::{self, GateInput, OpKind, OpRequest, Step, SwitchPlan, Verdict};
use crate::router::Target;
use crate::state::EnvMemory;
use crate::theme::Theme;
mod dialogs;
pub use dialogs::CanaryPlan;
mod input;
pub use crate::envview::*;

/// How many lines the event pane keeps.
const EVENT_LINES: usize = 500;
/// Why a new operation must wait.
const OP_RUNNING: &str = "an operation is running on this environment; wait for it to end";

/// What the App is fed: the terminal's input, the clock, and what cutover sees.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // events are moved, not stored in bulk
pub enum Event {
    Key(KeyEvent),
    /// A left click, hit-tested by the view against what it drew (see `ui::click`).
    Click(Hit),
    Resize(u16, u16),
    Tick(SystemTime),
    /// What cutover saw of an environment (probes, routers, locks, operations).
    Seen(Seen),
    /// SIGTERM, SIGINT or SIGHUP: quit as `q` does.
    Signal(&'static str),
    /// A theme asked for with `:theme`, loaded by the runner.
    Theme(Result<Theme, String>),
}

impl From<Seen> for Event {
    fn from(s: Seen) -> Event {
        Event::Seen(s)
    }
}

/// What a click landed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hit {
    /// The `n`th row of the environment list (of the environments the filter shows).
    EnvRow(usize),
    /// Slot `i` of the selected environment.
    Slot(usize),
    Events,
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
    /// Promote, pause or resume the canary running on the environment (`ask`: the
    /// [`crate::ops::CanaryControl::apply`] name).
    SteerCanary {
        env: usize,
        ask: &'static str,
    },
    /// Stop the operation running on the environment at its next safe point (a canary aborts
    /// back to 0 %).
    StopOp {
        env: usize,
    },
    /// Quit: running watches are abandoned (recorded), and cutover ends once their records
    /// are written.
    Quit,
    /// Tell the notification channels: drift or routers that disagree, just begun.
    Warn {
        env: usize,
        kind: crate::notify::EventKind,
        message: String,
    },
    /// Quit at once, in the middle of a router change: recorded as abandoned; the journal
    /// stays for `cutover recover`.
    QuitNow,
}

/// Swap+rollback pairs of a drill started from the TUI.
pub const DRILL_PAIRS: usize = 3;

/// The `:` commands.
pub const COMMANDS: [&str; 11] = [
    "env",
    "swap",
    "canary",
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

/// The `/` filter over the environment list.
#[derive(Debug, Default)]
pub struct Filter {
    /// What the names must contain.
    pub text: String,
    /// The filter is being typed (keys edit it).
    pub typing: bool,
}

impl Filter {
    /// Whether the list's title shows the filter rather than the count.
    pub fn shown(&self) -> bool {
        self.typing || !self.text.is_empty()
    }
}

/// The `:` command line.
#[derive(Debug, Default)]
pub struct CommandLine {
    /// What is typed, while the line is open.
    pub text: Option<String>,
    /// Completions offered for it.
    pub completions: Vec<String>,
}

impl CommandLine {
    pub fn open(&mut self) {
        self.text = Some(String::new());
        self.completions.clear();
    }

    pub fn close(&mut self) {
        self.text = None;
        self.completions.clear();
    }
}

/// The event pane's lines.
#[derive(Debug, Default)]
pub struct EventLog {
    /// The newest [`EVENT_LINES`] lines, oldest first.
    pub lines: VecDeque<LogLine>,
    /// Lines scrolled back from the newest.
    pub scroll: usize,
}

impl EventLog {
    fn push(&mut self, line: LogLine) {
        self.lines.push_back(line);
        while self.lines.len() > EVENT_LINES {
            self.lines.pop_front();
        }
    }

    /// One line further back (up) or towards the newest (down).
    fn scroll_by_one(&mut self, down: bool) {
        self.scroll = if down {
            self.scroll.saturating_sub(1)
        } else {
            (self.scroll + 1).min(self.lines.len().saturating_sub(1))
        };
    }
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
    pub filter: Filter,
    pub command: CommandLine,
    pub log: EventLog,
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
            .map(|(i, e)| EnvView::new(e, memories.get(i).cloned().unwrap_or_default()))
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
            filter: Filter::default(),
            command: CommandLine::default(),
            log: EventLog::default(),
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
        let f = self.filter.text.to_lowercase();
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
        self.log.push(LogLine {
            at: self.now,
            env: name,
            level,
            text: text.into(),
        });
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
            Event::Click(hit) => {
                self.on_click(hit);
                vec![]
            }
            Event::Seen(seen) => self.on_seen(seen),
            Event::Signal(name) => {
                self.status = Some((Level::Warn, format!("{name} received")));
                self.act(Action::Quit)
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
        }
    }

    fn on_seen(&mut self, seen: Seen) -> Vec<Effect> {
        let env = seen.env();
        let is_op = matches!(seen, Seen::Op { .. });
        let (now, history) = (self.now, self.config.settings.history);
        let Some(e) = self.envs.get_mut(env) else {
            return vec![];
        };
        let said = e.apply(seen, now, history);
        for (level, text) in said.lines {
            self.log(env, level, text);
        }
        let mut effects: Vec<Effect> = said
            .alerts
            .into_iter()
            .map(|(kind, message)| Effect::Warn { env, kind, message })
            .collect();
        if let Some((verdict, level, text)) = said.finished {
            // An alarm names the key that rolls back, as bound here, first: a long reason
            // must not push it off the screen.
            let hint = if verdict == Verdict::Alarm {
                format!(
                    "ALARM — press {} to roll back · ",
                    self.keymap.first_key(Action::Rollback)
                )
            } else {
                String::new()
            };
            self.status = Some((level, format!("{hint}{text}")));
        }
        if let Some(line) = said.drill_done {
            self.status = Some(line);
        }
        if is_op && self.quit_pending && !self.envs.iter().any(EnvView::op_changing_routers) {
            self.should_quit = true;
            effects.push(Effect::Quit);
        }
        effects
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
