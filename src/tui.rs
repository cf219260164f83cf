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
use crate::audit::AuditLog;
use crate::config::Config;
use crate::ops::{Engine, GateSource, Interrupt, Progress};
use crate::probe::Prober;
use crate::slotserver::SlotControls;
use crate::state::{EnvMemory, Store};
use crate::ui::theme::Theme;

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

/// Everything the TUI runs against.
pub struct World {
    pub config: Config,
    pub engines: Vec<Arc<Engine>>,
    pub store: Store,
    /// Demo slot controls, by slot name (the demo keys).
    pub demo: Option<Vec<Arc<SlotControls>>>,
}

impl World {
    pub fn build(config: Config, demo: Option<Vec<Arc<SlotControls>>>) -> Result<World> {
        let store = Store::open(&config.settings)?;
        let audit = match AuditLog::open(config.settings.audit_dir_or_default()) {
            Ok(a) => Some(Arc::new(a.share(&store))),
            Err(e) => {
                tracing::error!("no audit log: {e:#}");
                None
            }
        };
        let prober = Prober::new(&config.settings)?;
        let notifier = if config.notify.is_empty() {
            None
        } else {
            Some(Arc::new(crate::notify::Notifier::start(
                &config.notify,
                audit.clone(),
            )?))
        };
        let mut engines = Vec::new();
        for env in &config.environments {
            let routers = crate::router::build_all(env.routed(), &env.routers)
                .wrap_err_with(|| format!("cannot set up the routers of `{}`", env.name))?;
            engines.push(Arc::new(Engine {
                env: env.clone(),
                routers,
                prober: prober.clone(),
                store: store.clone(),
                audit: audit.clone(),
                notifier: notifier.clone(),
                probe_spacing: Duration::from_millis(300),
            }));
        }
        Ok(World {
            config,
            engines,
            store,
            demo,
        })
    }

    /// What cutover remembers of each environment (in `engines` order), from one read of the
    /// state file.
    pub fn memories(&self) -> Vec<EnvMemory> {
        let mut all = self.store.load().environments;
        self.engines
            .iter()
            .map(|e| all.remove(&e.env.name).unwrap_or_default())
            .collect()
    }

    /// Start the probe and observer tasks; they stop when `stop` flips.
    pub fn spawn_watchers(&self, tx: mpsc::UnboundedSender<Event>, stop: watch::Receiver<bool>) {
        let interval = self.config.settings.poll_interval;
        for (ei, engine) in self.engines.iter().enumerate() {
            for (si, slot) in engine.env.slots.iter().enumerate() {
                let (engine, slot) = (engine.clone(), slot.clone());
                every(interval, &tx, &stop, move || {
                    let (engine, slot) = (engine.clone(), slot.clone());
                    async move {
                        let result = engine.prober.probe_slot(&slot).await;
                        Event::Probe {
                            env: ei,
                            slot: si,
                            result,
                        }
                    }
                });
            }
            for (preview, url) in [
                (false, &engine.env.public_url),
                (true, &engine.env.preview_url),
            ] {
                let Some(url) = url.clone() else { continue };
                let engine = engine.clone();
                // Half a poll apart from the router readings: these probes go through the
                // router, which counts them, and the App takes them off its counters again
                // (see `app::SlotTraffic`); a probe sent while a reading is taken could land
                // on either side of it.
                every_from(interval / 2, interval, &tx, &stop, move || {
                    let (engine, url) = (engine.clone(), url.clone());
                    async move {
                        let result = engine.probe_behind(&url).await;
                        Event::Url {
                            env: ei,
                            preview,
                            result,
                        }
                    }
                });
            }
            for (ri, router) in engine.routers.iter().enumerate() {
                // The router's own limit (exec's `observe_timeout`, as configured).
                let limit = router.observe_timeout();
                let router = router.clone();
                every(interval, &tx, &stop, move || {
                    let router = router.clone();
                    async move {
                        let result = crate::ops::observe_within(&*router, limit).await;
                        Event::Router {
                            env: ei,
                            router: ri,
                            result,
                            at: SystemTime::now(),
                        }
                    }
                });
            }
            // Another operator's operations, step by step, from the shared store.
            if let Some(etcd) = self.store.shared() {
                let (ltx, mut lines) = mpsc::unbounded_channel();
                etcd.follow(&engine.env.name, ltx);
                let (tx, mut stop) = (tx.clone(), stop.clone());
                let (store, name) = (self.store.clone(), engine.env.name.clone());
                tokio::spawn(async move {
                    loop {
                        let seen = tokio::select! {
                            l = lines.recv() => l,
                            _ = stop.changed() => return,
                        };
                        let event = match seen {
                            None => return,
                            Some(crate::etcd::Seen::Line(text)) => Event::Shared { env: ei, text },
                            // Another operator's swap changed what `r` goes back to.
                            Some(crate::etcd::Seen::Ended) => {
                                let (store, name) = (store.clone(), name.clone());
                                let Ok(memory) =
                                    tokio::task::spawn_blocking(move || store.env(&name)).await
                                else {
                                    continue;
                                };
                                Event::Memory { env: ei, memory }
                            }
                        };
                        if tx.send(event).is_err() {
                            return;
                        }
                    }
                });
            }
            let (store, name) = (self.store.clone(), engine.env.name.clone());
            every(
                interval.max(Duration::from_secs(1)),
                &tx,
                &stop,
                move || {
                    let (store, name) = (store.clone(), name.clone());
                    async move {
                        let (holder, interrupted) = tokio::task::spawn_blocking(move || {
                            (store.holder(&name), store.interrupted(&name))
                        })
                        .await
                        .unwrap_or_default();
                        Event::Lock {
                            env: ei,
                            holder,
                            interrupted,
                        }
                    }
                },
            );
        }
    }
}

/// Run `poll` on every tick of `interval` and send what it returns, until `stop` flips or the
/// app is gone. A slow `poll` delays only its own next tick.
fn every<F, Fut>(
    interval: Duration,
    tx: &mpsc::UnboundedSender<Event>,
    stop: &watch::Receiver<bool>,
    poll: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Event> + Send + 'static,
{
    every_from(Duration::ZERO, interval, tx, stop, poll)
}

/// [`every`], the first tick `phase` from now.
fn every_from<F, Fut>(
    phase: Duration,
    interval: Duration,
    tx: &mpsc::UnboundedSender<Event>,
    stop: &watch::Receiver<bool>,
    mut poll: F,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Event> + Send + 'static,
{
    let (tx, mut stop) = (tx.clone(), stop.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            let ev = tokio::select! {
                ev = poll() => ev,
                _ = stop.changed() => return,
            };
            if tx.send(ev).is_err() {
                return;
            }
        }
    });
}

/// An operation this runner started and that has not ended.
struct Running {
    id: String,
    kind: &'static str,
    cancel: watch::Sender<Interrupt>,
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
            Effect::StopOp { env } => {
                if let Some(running) = self.running.get(env) {
                    for r in running.iter().filter(|r| !r.task.is_finished()) {
                        let _ = r.cancel.send(Interrupt::Superseded("the abort key".into()));
                    }
                }
            }
            Effect::RunOp { env, req, gate } => {
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
                                    let _ = tx.send(Event::Memory {
                                        env,
                                        memory: store.env(&name),
                                    });
                                    continue;
                                }
                                let _ = tx.send(Event::Op {
                                    env,
                                    id: id.clone(),
                                    progress: p,
                                });
                            }
                        })
                    };
                    engine
                        .run(req, GateSource::Given(gate), ptx, cancel_rx)
                        .await;
                    let _ = fwd.await;
                    let _ = tx.send(Event::Memory {
                        env,
                        memory: store.env(&name),
                    });
                });
                running.push(Running {
                    id,
                    kind,
                    cancel: cancel_tx,
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
                                let _ = tx.send(Event::DrillTick { env, tick });
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
                    let _ = tx.send(Event::DrillDone { env, result });
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
                        crate::commands::abandon(engine, &r.id, r.kind, "the operator quit");
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
                    crossterm::event::Event::Mouse(m) => Event::Mouse(m),
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
        let Some(ev) = rx.recv().await else { break };
        if let Some(m) = &metrics {
            m.observe(&ev);
        }
        let mut effects = app.update(ev);
        // Take everything already queued before drawing: draw only the newest state.
        while let Ok(ev) = rx.try_recv() {
            if let Some(m) = &metrics {
                m.observe(&ev);
            }
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
