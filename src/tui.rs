//! The TUI runtime: terminal setup and restore, the background tasks (probes, router observers,
//! keys, ticks), and the loop that feeds events to [`App::update`] and runs its effects.

use std::io::{Stdout, stdout};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use color_eyre::eyre::{Result, WrapErr};
use crossterm::event::{DisableMouseCapture, EnableMouseCapture, EventStream};
use crossterm::execute;
use crossterm::terminal::{
    EnterAlternateScreen, LeaveAlternateScreen, disable_raw_mode, enable_raw_mode,
};
use futures_util::StreamExt;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use tokio::sync::{mpsc, watch};

use crate::app::{App, DemoCommand, Effect, Event};
use crate::envview::Seen;
use crate::ops::{GateSource, Interrupt, Progress};
use crate::slotserver::SlotControls;
use crate::theme::Theme;
use crate::world::World;

/// Restores the terminal when dropped, whatever way the TUI ends.
pub struct TerminalGuard;

impl TerminalGuard {
    pub fn enter() -> Result<(TerminalGuard, Terminal<CrosstermBackend<Stdout>>)> {
        enable_raw_mode()
            .wrap_err("cannot switch the terminal to raw mode (is this a terminal?)")?;
        let guard = TerminalGuard;
        execute!(stdout(), EnterAlternateScreen, EnableMouseCapture)?;
        let term = Terminal::new(CrosstermBackend::new(stdout()))?;
        Ok((guard, term))
    }
}

pub fn restore_terminal() {
    let _ = disable_raw_mode();
    let _ = execute!(
        stdout(),
        LeaveAlternateScreen,
        DisableMouseCapture,
        crossterm::cursor::Show
    );
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Restore the terminal before a panic report is printed.
pub fn install_panic_hook() {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore_terminal();
        prev(info);
    }));
}

/// An operation this runner started and that has not ended.
struct Running {
    id: String,
    kind: &'static str,
    cancel: watch::Sender<Interrupt>,
    /// A canary's promote, pause and resume.
    control: Option<watch::Sender<crate::ops::CanaryControl>>,
    task: tokio::task::JoinHandle<()>,
}

/// Runs effects. Owns the running operations: their interrupt switches and tasks.
struct Runner {
    world: Arc<World>,
    tx: mpsc::UnboundedSender<Event>,
    running: Vec<Vec<Running>>,
}

impl Runner {
    fn run(&mut self, effect: Effect) {
        match effect {
            Effect::Quit | Effect::QuitNow => {}
            Effect::Warn { env, kind, message } => {
                if let Some(e) = self.world.engines.get(env)
                    && let Some(n) = &e.notifier
                {
                    n.warn(kind, &e.env.name, &message);
                }
            }
            Effect::StopOp { env } => {
                if let Some(running) = self.running.get(env) {
                    for r in running.iter().filter(|r| !r.task.is_finished()) {
                        let _ = r.cancel.send(Interrupt::Superseded("the abort key".into()));
                    }
                }
            }
            Effect::SteerCanary { env, ask } => {
                if let Some(running) = self.running.get(env) {
                    for r in running.iter().filter(|r| !r.task.is_finished()) {
                        if let Some(c) = &r.control {
                            c.send_if_modified(|c| c.apply(ask));
                        }
                    }
                }
            }
            Effect::RunOp { env, mut req, gate } => {
                let Some(engine) = self.world.engines.get(env).cloned() else {
                    return;
                };
                let Some(running) = self.running.get_mut(env) else {
                    return;
                };
                running.retain(|r| !r.task.is_finished());
                // The operation running here (a watch) is superseded: it stops at its next
                // safe point and records by what; the new one starts once it has let go.
                let by = format!("{} #{}", req.kind.name(), req.id);
                let before: Vec<tokio::task::JoinHandle<()>> = running
                    .drain(..)
                    .map(|r| {
                        let _ = r.cancel.send(Interrupt::Superseded(by.clone()));
                        r.task
                    })
                    .collect();
                let (cancel_tx, cancel_rx) = watch::channel(Interrupt::None);
                let control = matches!(req.kind, crate::ops::OpKind::Canary { .. }).then(|| {
                    let (tx, rx) = watch::channel(crate::ops::CanaryControl::default());
                    req.control = Some(rx);
                    tx
                });
                let (ptx, mut prx) = mpsc::unbounded_channel();
                let tx = self.tx.clone();
                let store = self.world.store.clone();
                let name = engine.env.name.clone();
                let id = req.id.clone();
                let kind = req.kind.name();
                let task_id = id.clone();
                let task = tokio::spawn(async move {
                    let id = task_id;
                    for t in before {
                        let _ = t.await;
                    }
                    let fwd = {
                        let (tx, store, name, id) =
                            (tx.clone(), store.clone(), name.clone(), id.clone());
                        tokio::spawn(async move {
                            while let Some(p) = prx.recv().await {
                                if p == Progress::Remembered {
                                    let _ = tx.send(Event::Seen(Seen::Memory {
                                        env,
                                        memory: store.env(&name),
                                    }));
                                    continue;
                                }
                                let _ = tx.send(Event::Seen(Seen::Op {
                                    env,
                                    id: id.clone(),
                                    progress: p,
                                }));
                            }
                        })
                    };
                    engine
                        .run(req, GateSource::Given(gate), ptx, cancel_rx)
                        .await;
                    let _ = fwd.await;
                    let _ = tx.send(Event::Seen(Seen::Memory {
                        env,
                        memory: store.env(&name),
                    }));
                });
                running.push(Running {
                    id,
                    kind,
                    cancel: cancel_tx,
                    control,
                    task,
                });
            }
            Effect::RunDrill { env } => {
                let Some(engine) = self.world.engines.get(env).cloned() else {
                    return;
                };
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    let (ttx, mut trx) = mpsc::unbounded_channel();
                    let fwd = {
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            while let Some(tick) = trx.recv().await {
                                let _ = tx.send(Event::Seen(Seen::DrillTick { env, tick }));
                            }
                        })
                    };
                    let opts = crate::drill::DrillOptions {
                        concurrency: 16,
                        requests: 2_000_000,
                        duration: Duration::from_secs(60),
                        pairs: crate::app::DRILL_PAIRS,
                        pause: Duration::from_millis(1500),
                        ..Default::default()
                    };
                    let result = crate::drill::run_with(&engine, &opts, Some(ttx))
                        .await
                        .map(Box::new)
                        .map_err(|e| format!("{e:#}"));
                    let _ = fwd.await;
                    let _ = tx.send(Event::Seen(Seen::DrillDone { env, result }));
                });
            }
            Effect::LoadTheme(name) => {
                let tx = self.tx.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = tx.send(Event::Theme(Theme::load(&name)));
                });
            }
            Effect::Demo(cmd) => {
                let Some(slots) = &self.world.demo else {
                    return;
                };
                let (name, f): (&str, fn(&SlotControls)) = match &cmd {
                    DemoCommand::ToggleHealth { slot } => (slot, |c| c.set_healthy(!c.healthy())),
                    DemoCommand::ToggleSlow { slot } => (slot, |c| {
                        c.set_delay(if c.delay().is_zero() {
                            Duration::from_millis(600)
                        } else {
                            Duration::ZERO
                        })
                    }),
                };
                if let Some(c) = slots.iter().find(|c| c.name == name) {
                    f(c);
                }
            }
        }
    }
}

impl Runner {
    /// Quitting: every running operation stops at its next safe point (a watch is abandoned,
    /// the new slot stays live, and says so in its record). With `now`, operations in the
    /// middle of a router change are left as they are and recorded as abandoned; their
    /// journal stays for `cutover recover`. Waits at most `QUIT_WAIT` for the records.
    async fn shutdown(&mut self, now: bool) {
        let mut waits = Vec::new();
        for (env, running) in self.running.iter_mut().enumerate() {
            for r in running.drain(..) {
                if r.task.is_finished() {
                    continue;
                }
                let _ = r.cancel.send(Interrupt::Quit);
                if now {
                    if let Some(engine) = self.world.engines.get(env) {
                        engine.abandon(&r.id, r.kind, "the operator quit");
                    }
                    continue;
                }
                waits.push(r.task);
            }
        }
        let all = futures_util::future::join_all(waits);
        let _ = tokio::time::timeout(QUIT_WAIT, all).await;
    }
}

/// How long quitting waits for running operations to write their last records.
const QUIT_WAIT: Duration = Duration::from_secs(15);
/// How long quitting then waits for pending notifications.
const NOTIFY_FLUSH: Duration = Duration::from_secs(5);

pub struct TuiOptions {
    pub read_only: bool,
    pub theme: Theme,
    /// `--metrics-listen`: where to serve cutover's own metrics, and its token.
    pub metrics: Option<(tokio::net::TcpListener, Option<String>)>,
}

/// Run the TUI until the user quits (or SIGTERM/SIGINT).
pub async fn run(world: World, opts: TuiOptions) -> Result<()> {
    let world = Arc::new(world);
    let mut app = App::new(
        world.config.clone(),
        opts.theme,
        world.memories(),
        SystemTime::now(),
    );
    app.read_only |= opts.read_only;
    app.demo = world.demo.is_some();

    let (tx, mut rx) = mpsc::unbounded_channel::<Event>();
    // Clicks wait for the App: they are hit-tested against the screen it last drew.
    let (mouse_tx, mut mouse_rx) = mpsc::unbounded_channel::<crossterm::event::MouseEvent>();
    let (stop_tx, stop_rx) = watch::channel(false);

    install_panic_hook();
    let (_guard, mut term) = TerminalGuard::enter()?;
    let size = term.size()?;
    app.update(Event::Resize(size.width, size.height));
    // The first frame comes before the first poll: slots show "unknown" until then.
    term.draw(|f| crate::ui::draw(f, &app))?;

    world.spawn_watchers(tx.clone(), stop_rx.clone());
    let metrics = opts.metrics.map(|(listener, token)| {
        let m = Arc::new(crate::selfmetrics::SelfMetrics::new(&world.config));
        crate::selfmetrics::serve(listener, m.clone(), token, stop_rx.clone());
        m
    });
    {
        let tx = tx.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut keys = EventStream::new();
            loop {
                let ev = tokio::select! {
                    ev = keys.next() => ev,
                    _ = stop.changed() => return,
                };
                let Some(Ok(ev)) = ev else { return };
                let ev = match ev {
                    crossterm::event::Event::Key(k) => Event::Key(k),
                    crossterm::event::Event::Mouse(m) => {
                        if mouse_tx.send(m).is_err() {
                            return;
                        }
                        continue;
                    }
                    crossterm::event::Event::Resize(w, h) => Event::Resize(w, h),
                    _ => continue,
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        });
    }
    {
        let tx = tx.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                if tx.send(Event::Tick(SystemTime::now())).is_err() {
                    return;
                }
            }
        });
    }
    // SIGTERM, SIGINT and SIGHUP (the SSH session dropped) quit as `q` does: the terminal is
    // restored by the guard, an operation in the middle of a router change finishes its step.
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).wrap_err("cannot listen for SIGTERM")?;
        let mut hup = signal(SignalKind::hangup()).wrap_err("cannot listen for SIGHUP")?;
        let mut int = signal(SignalKind::interrupt()).wrap_err("cannot listen for SIGINT")?;
        let mut quit = signal(SignalKind::quit()).wrap_err("cannot listen for SIGQUIT")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                    _ = int.recv() => "SIGINT",
                    _ = quit.recv() => "SIGQUIT",
                };
                if tx.send(Event::Signal(name)).is_err() {
                    return;
                }
            }
        });
    }

    let mut runner = Runner {
        world: world.clone(),
        tx: tx.clone(),
        running: (0..world.engines.len()).map(|_| Vec::new()).collect(),
    };
    let mut quit_now = false;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            Some(m) = mouse_rx.recv() => match crate::ui::click(&app, m) {
                Some(ev) => Some(ev),
                None => continue,
            },
        };
        let Some(ev) = ev else { break };
        let observe = |ev: &Event| {
            if let (Some(m), Event::Seen(seen)) = (&metrics, ev) {
                m.observe(seen);
            }
        };
        observe(&ev);
        let mut effects = app.update(ev);
        // Take everything already queued before drawing: draw only the newest state.
        while let Ok(ev) = rx.try_recv() {
            observe(&ev);
            effects.extend(app.update(ev));
        }
        for e in effects {
            quit_now |= matches!(e, Effect::QuitNow);
            runner.run(e);
        }
        if app.should_quit {
            break;
        }
        // A closed terminal (the SSH session is gone) must not stop cutover from quitting
        // cleanly: a failed draw ends the loop like a quit.
        if term.draw(|f| crate::ui::draw(f, &app)).is_err() {
            break;
        }
    }
    let _ = stop_tx.send(true);
    runner.shutdown(quit_now).await;
    // The last operations' notifications (one notifier serves every environment).
    if let Some(n) = world.engines.iter().find_map(|e| e.notifier.clone())
        && !n.flush(NOTIFY_FLUSH).await
    {
        tracing::warn!("quit with notifications not yet delivered");
    }
    Ok(())
}
