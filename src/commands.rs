//! The headless commands: the same engine and drivers as the TUI, for scripts.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::SystemTime;

use color_eyre::eyre::{Result, bail};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::envview::{EnvView, Seen};
use crate::model::{MaintenanceMode, ProbeResult, Role, RouterState};
use crate::ops::{Engine, GateSource, Interrupt, OpKind, OpRequest, Progress, Verdict};
use crate::probe::UrlProbe;
use crate::world::World;

/// `println!`, `eprintln!` and `eprint!` with the text passed through [`crate::redact::redact`]:
/// nothing a command prints carries a credential.
macro_rules! outln {
    ($($t:tt)*) => { println!("{}", crate::redact::redact(&format!($($t)*))) };
}
macro_rules! errln {
    ($($t:tt)*) => { eprintln!("{}", crate::redact::redact(&format!($($t)*))) };
}
macro_rules! err {
    ($($t:tt)*) => { eprint!("{}", crate::redact::redact(&format!($($t)*))) };
}

/// Exit codes, documented in the README.
pub const EXIT_OK: i32 = 0;
pub const EXIT_FAILED: i32 = 1;
pub const EXIT_USAGE: i32 = 2;
mod admin;
pub use admin::{canary_ask_file, setup, steer_canary, unlock};
mod check;
pub use check::check;

/// How long a command waits, after its operation, for its notifications to be delivered.
const NOTIFY_FLUSH: std::time::Duration = std::time::Duration::from_secs(15);

/// An unknown environment is a usage error (exit 2).
#[derive(Debug)]
pub struct UnknownEnv(pub String);

impl std::fmt::Display for UnknownEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UnknownEnv {}

/// The position of `env` in the world, or an [`UnknownEnv`] that lists the known ones.
fn engine_index(world: &World, env: &str) -> Result<usize> {
    match world.engines.iter().position(|e| e.env.name == env) {
        Some(i) => Ok(i),
        None => Err(UnknownEnv(format!(
            "no environment `{env}` in {}; environments: {}",
            world.config.path.display(),
            world
                .engines
                .iter()
                .map(|e| e.env.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
        .into()),
    }
}

fn engine<'a>(world: &'a World, env: &str) -> Result<&'a Arc<Engine>> {
    Ok(&world.engines[engine_index(world, env)?])
}

/// Whether an action on `engine`'s environment is refused as read-only (see
/// [`read_only_reason`]); if it is, says so on stderr: "read-only: `what` (why)".
fn refused_read_only(world: &World, engine: &Engine, flag: bool, what: &str) -> bool {
    let Some(why) = read_only_reason(world, engine, flag) else {
        return false;
    };
    errln!("read-only: {what} ({why})");
    true
}

/// Why actions on `engine`'s environment are refused as read-only, if they are; the text names
/// the setting, so the operator knows what to lift.
fn read_only_reason(world: &World, engine: &Engine, flag: bool) -> Option<String> {
    if flag {
        Some("--read-only was given".into())
    } else if world.config.settings.read_only {
        Some(format!(
            "read_only = true in [settings] of {}",
            world.config.path.display()
        ))
    } else if engine.env.read_only {
        Some(format!(
            "environment `{}` sets read_only = true in {}",
            engine.env.name,
            world.config.path.display()
        ))
    } else {
        None
    }
}

#[derive(Serialize)]
struct SlotStatus {
    name: String,
    role: Role,
    #[serde(flatten)]
    probe: ProbeResult,
}

#[derive(Serialize)]
struct RouterStatus {
    name: String,
    kind: String,
    state: Option<RouterState>,
    error: Option<String>,
}

#[derive(Serialize)]
struct EnvStatus {
    name: String,
    live: Option<String>,
    preview: Option<String>,
    previous_live: Option<String>,
    maintenance: Option<MaintenanceMode>,
    /// Request pausing, when the routers can pause: paused or not, held now, refused (503).
    #[serde(skip_serializing_if = "Option::is_none")]
    pause: Option<crate::model::PauseState>,
    warnings: Vec<String>,
    /// An operation a dead cutover left unfinished (`cutover recover` resolves it).
    interrupted: Option<crate::state::Journal>,
    routers: Vec<RouterStatus>,
    slots: Vec<SlotStatus>,
    public: Option<UrlProbe>,
}

async fn env_status(world: &World, engine: &Engine) -> EnvStatus {
    let mut routers = Vec::new();
    for r in &engine.routers {
        let (state, error) =
            match crate::router::observe_within(r.as_ref(), r.observe_timeout()).await {
                Ok(s) => (Some(s), None),
                Err(e) => (None, Some(e)),
            };
        routers.push(RouterStatus {
            name: r.name().into(),
            kind: r.kind().into(),
            state,
            error,
        });
    }
    // The first router that answered speaks for the environment; a disagreement is a warning.
    let first = routers.iter().find_map(|r| r.state.clone());
    let probes = futures_util::future::join_all(
        engine.env.slots.iter().map(|s| engine.prober.probe_slot(s)),
    )
    .await;
    let slots = engine
        .env
        .slots
        .iter()
        .zip(probes)
        .map(|(s, p)| SlotStatus {
            name: s.name.clone(),
            role: first.as_ref().map_or(Role::Unknown, |f| f.role_of(&s.name)),
            probe: p,
        })
        .collect::<Vec<_>>();
    let public = match &engine.env.public_url {
        Some(u) => Some(engine.prober.probe_behind(&engine.env, u).await),
        None => None,
    };
    // Warnings are computed by the same code as the TUI's: the environment's view, fed what
    // was just seen.
    let memory = world.store.env(&engine.env.name);
    let mut view = EnvView::new(&engine.env, memory.clone());
    let now = SystemTime::now();
    let history = world.config.settings.history;
    let mut seen = Vec::new();
    for (i, r) in routers.iter().enumerate() {
        let result = match (&r.state, &r.error) {
            (Some(s), _) => Ok(s.clone()),
            (None, e) => Err(e.clone().unwrap_or_default()),
        };
        seen.push(Seen::Router {
            env: 0,
            router: i,
            result,
            at: now,
        });
    }
    for (i, s) in slots.iter().enumerate() {
        seen.push(Seen::Probe {
            env: 0,
            slot: i,
            result: s.probe.clone(),
        });
    }
    seen.push(Seen::Lock {
        env: 0,
        holder: world.store.holder(&engine.env.name),
        interrupted: world.store.interrupted(&engine.env.name),
    });
    if let Some(p) = &public {
        seen.push(Seen::Url {
            env: 0,
            preview: false,
            result: p.clone(),
        });
    }
    for s in seen {
        view.apply(s, now, history);
    }
    let ev = &view;
    let warnings = ev.warnings();
    let interrupted = ev.interrupted.clone();
    let first = first.unwrap_or_default();
    EnvStatus {
        name: engine.env.name.clone(),
        live: first.live,
        preview: first.preview,
        previous_live: memory.previous_live,
        maintenance: first.maintenance,
        pause: pause_of(&routers),
        warnings,
        interrupted,
        routers,
        slots,
        public,
    }
}

/// The pause of an environment's routers: paused when any is, held and refused summed.
fn pause_of(routers: &[RouterStatus]) -> Option<crate::model::PauseState> {
    let mut pauses = routers.iter().filter_map(|r| r.state.as_ref()?.pause);
    let first = pauses.next()?;
    Some(pauses.fold(first, |a, p| crate::model::PauseState {
        paused: a.paused || p.paused,
        held: a.held + p.held,
        refused: a.refused + p.refused,
    }))
}

/// `cutover status [ENV] [--json]`
pub async fn status(world: &World, env: Option<&str>, json: bool) -> Result<i32> {
    let engines: Vec<&Arc<Engine>> = match env {
        Some(n) => vec![engine(world, n)?],
        None => world.engines.iter().collect(),
    };
    let mut out = Vec::new();
    for e in engines {
        out.push(env_status(world, e).await);
    }
    // A router that does not answer or reports a problem, or an operation a dead cutover
    // left half-done, fails the status.
    let failed = out.iter().any(|e| {
        e.interrupted.is_some()
            || e.routers.iter().any(|r| {
                r.error.is_some() || r.state.as_ref().is_some_and(|s| !s.problems.is_empty())
            })
    });
    if json {
        println!(
            "{}",
            crate::redact::to_json_pretty(&serde_json::json!({ "environments": out }))?
        );
    } else {
        for e in &out {
            outln!(
                "{}  live={} preview={}{}{}",
                e.name,
                e.live.as_deref().unwrap_or("?"),
                e.preview.as_deref().unwrap_or("-"),
                if e.maintenance.is_some() {
                    "  MAINTENANCE"
                } else {
                    ""
                },
                match e.pause {
                    Some(p) if p.paused || p.refused > 0 => format!("  requests {p}"),
                    _ => String::new(),
                }
            );
            outln!(
                "  {:<10} {:<12} {:<10} {:<7} {:<9} version",
                "slot",
                "role",
                "health",
                "status",
                "latency"
            );
            for s in &e.slots {
                let p = &s.probe;
                outln!(
                    "  {:<10} {:<12} {:<10} {:<7} {:<9} {}",
                    s.name,
                    format!("{} {}", s.role.symbol(), s.role.label()),
                    format!("{} {}", p.health.symbol(), p.health.label()),
                    p.status.map_or_else(
                        || p.error.as_ref().map_or("-".into(), |e| e.to_string()),
                        |s| s.to_string()
                    ),
                    p.latency.map_or("-".into(), crate::timefmt::millis),
                    p.version.as_ref().map_or("?".into(), |v| v.version.clone()),
                );
            }
            for r in &e.routers {
                let problems = r.state.as_ref().map_or(&[][..], |s| &s.problems[..]);
                match (&r.error, problems) {
                    (Some(err), _) => outln!("  router {} ({}): ERROR {err}", r.name, r.kind),
                    (None, []) => outln!("  router {} ({}): ok", r.name, r.kind),
                    (None, [first, rest @ ..]) => {
                        outln!("  router {} ({}): PROBLEM {first}", r.name, r.kind);
                        for p in rest {
                            outln!("    PROBLEM {p}");
                        }
                    }
                }
                if let Some(w) = r.state.as_ref().and_then(|s| s.weights.as_ref()) {
                    outln!("    canary: {w}");
                }
                if let Some(p) = r.state.as_ref().and_then(|s| s.preview_route.as_ref()) {
                    outln!("    preview route armed: {p}");
                }
                for n in r.state.iter().flat_map(|s| &s.notes) {
                    outln!("    note: {n}");
                }
            }
            if let Some(p) = &e.public {
                outln!(
                    "  public {} → {}",
                    p.url,
                    p.version.as_ref().map_or_else(
                        || p.error.as_ref().map_or("?".into(), |e| e.to_string()),
                        |v| v.version.clone()
                    )
                );
            }
            // Router problems are on their router's line already.
            let problems: Vec<String> = e
                .routers
                .iter()
                .filter_map(|r| r.state.as_ref().map(|s| (r, s)))
                .flat_map(|(r, s)| {
                    s.problems
                        .iter()
                        .map(move |p| crate::envview::router_problem(&r.name, p))
                })
                .collect();
            for w in e.warnings.iter().filter(|w| !problems.contains(w)) {
                outln!("  WARNING {w}");
            }
        }
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// Ask on the terminal, or refuse when there is none.
fn confirm(question: &str, yes: bool) -> Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("refusing to act without --yes: there is no terminal to ask on ({question})");
    }
    err!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// Run an operation headless; prints progress lines, returns the exit code.
pub async fn operate(
    world: &World,
    env: &str,
    kind: OpKind,
    flags: &crate::cli::OpFlags,
    read_only: bool,
) -> Result<i32> {
    let engine = engine(world, env)?.clone();
    let what = format!("`{}` is not allowed", kind.name());
    if refused_read_only(world, &engine, read_only, &what) {
        return Ok(EXIT_FAILED);
    }
    let question = format!("{} on `{env}`?", kind.name());
    // Inside the rollback window after a swap, rollback is one key: no question (the engine
    // still checks that the way back is healthy and runs the version it ran when live).
    let one_key =
        matches!(kind, OpKind::Rollback) && !flags.yes && in_rollback_window(world, &engine);
    let asks = !one_key
        && !matches!(
            kind,
            OpKind::Drain(_) | OpKind::Undrain(_) | OpKind::SetPreview(_)
        );
    if asks {
        match confirm(&question, flags.yes) {
            Ok(true) => {}
            Ok(false) => {
                errln!("cancelled");
                return Ok(EXIT_FAILED);
            }
            Err(e) => {
                errln!("{e:#}");
                return Ok(EXIT_FAILED);
            }
        }
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (cancel_tx, cancel_rx) = watch::channel(Interrupt::None);
    // A canary is steered by SIGUSR1 (`cutover canary ENV --promote|--pause|--resume`).
    let (control_tx, control_rx) = match kind {
        OpKind::Canary { .. } => {
            let (t, r) = watch::channel(crate::ops::CanaryControl::default());
            let ask = canary_ask_file(world, &engine.env.name, std::process::id());
            (Some((t, ask)), Some(r))
        }
        _ => (None, None),
    };
    let req = OpRequest {
        force: flags.force,
        watch: !flags.no_watch,
        take_over: flags.take_over,
        one_key,
        control: control_rx,
        ..OpRequest::new(kind)
    };
    let (id, op_name) = (req.id.clone(), req.kind.name());
    let json = flags.json;
    let printer = tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            if json {
                continue;
            }
            match p {
                Progress::Step {
                    step,
                    ok: Some(ok),
                    message,
                } => {
                    errln!(
                        "{:<7} {} {message}",
                        step.label(),
                        if ok { "ok  " } else { "FAIL" }
                    )
                }
                Progress::Step {
                    step,
                    ok: None,
                    message,
                } => errln!("{:<7} ...  {message}", step.label()),
                Progress::Decision { step, message } => {
                    errln!("{:<7} !    {message}", step.label())
                }
                Progress::Watching {
                    remaining, detail, ..
                } => {
                    errln!("watch   {:>3}s {detail}", remaining.as_secs())
                }
                Progress::Finished(_) | Progress::Remembered => {}
            }
        }
    });
    let run = engine.run(req, GateSource::ProbeNow, tx, cancel_rx);
    let out = run_until_signalled(run, cancel_tx, control_tx, &engine, &id, op_name).await?;
    let _ = printer.await;
    if let Some(n) = &engine.notifier
        && !n.flush(NOTIFY_FLUSH).await
    {
        errln!(
            "some notifications were not delivered within {}s; see the audit log",
            NOTIFY_FLUSH.as_secs()
        );
    }
    if json {
        println!("{}", crate::redact::to_json_pretty(&out)?);
    } else {
        outln!("{}: {}", out.verdict.label(), out.message);
    }
    Ok(match out.verdict {
        Verdict::Done => EXIT_OK,
        _ => EXIT_FAILED,
    })
}

/// The last switch of the environment was a swap, within its `rollback_window`, and one-key
/// rollback is on.
fn in_rollback_window(world: &World, engine: &Engine) -> bool {
    let m = world.store.env(&engine.env.name);
    engine.env.one_key_rollback
        && m.last_switch.as_deref() == Some("swap")
        && m.switched_at.is_some_and(|t| {
            crate::ops::unix_now().saturating_sub(t) <= engine.env.rollback_window.as_secs()
        })
}

/// Run an operation; the first SIGINT, SIGTERM or SIGHUP asks it to stop at its next safe
/// point (a router change in progress finishes; a watch is abandoned with the new slot live),
/// a second one ends cutover at once, recording the operation as abandoned (its journal stays
/// for `cutover recover`).
async fn run_until_signalled(
    run: impl std::future::Future<Output = crate::ops::Outcome>,
    cancel: watch::Sender<Interrupt>,
    control: Option<(watch::Sender<crate::ops::CanaryControl>, std::path::PathBuf)>,
    engine: &Engine,
    id: &str,
    op_name: &str,
) -> Result<crate::ops::Outcome> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut usr1 = match &control {
        Some(_) => Some(signal(SignalKind::user_defined1())?),
        None => None,
    };
    tokio::pin!(run);
    let mut asked = false;
    loop {
        let promoted = async {
            match usr1.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = &mut run => return Ok(out),
            _ = term.recv() => {}
            _ = hup.recv() => {}
            _ = int.recv() => {}
            Some(()) = promoted => {
                if let Some((c, file)) = &control {
                    let ask = admin::take_canary_ask(file);
                    if c.send_if_modified(|c| c.apply(&ask)) {
                        errln!("{ask}: asked by the operator");
                    } else {
                        errln!("ignored an unknown request `{ask}` in {}", file.display());
                    }
                }
                continue;
            }
        }
        if asked {
            engine.abandon(id, op_name, "a second signal ended cutover");
            std::process::exit(EXIT_FAILED);
        }
        asked = true;
        errln!(
            "stopping at the next safe point (a router change in progress finishes first); signal again to quit at once"
        );
        let _ = cancel.send(Interrupt::Quit);
    }
}

/// `cutover watch ENV`: the TUI's event lines, printed.
pub async fn watch_env(world: World, env: &str) -> Result<i32> {
    let idx = engine_index(&world, env)?;
    let name = world.engines[idx].env.name.clone();
    let history = world.config.settings.history;
    let mut view = EnvView::new(
        &world.engines[idx].env,
        world.store.env(&world.engines[idx].env.name),
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    let (stop_tx, stop_rx) = watch::channel(false);
    world.spawn_watchers(tx, stop_rx);
    let mut announced = false;
    // One signal listener for the whole watch, not one per event.
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        let seen = tokio::select! {
            s = rx.recv() => s,
            _ = &mut ctrl_c => break,
        };
        let Some(seen) = seen else { break };
        if seen.env() != idx {
            continue;
        }
        let now = SystemTime::now();
        let said = view.apply(seen, now, history);
        let mut lines: Vec<String> = said.lines.into_iter().map(|(_, t)| t).collect();
        // The first reading of the routers says where things stand; the lines after it say
        // what changes.
        if !announced && let Some(live) = view.live() {
            announced = true;
            lines.insert(0, format!("`{live}` is live"));
        }
        for text in lines {
            outln!("{} {} {}", crate::timefmt::rfc3339(now), name, text);
        }
        if let Some(n) = &world.engines[idx].notifier {
            for (kind, message) in said.alerts {
                n.warn(kind, &name, &message);
            }
        }
    }
    let _ = stop_tx.send(true);
    Ok(EXIT_OK)
}

/// `cutover drill ENV`: refused when read-only, as every operation is (a drill swaps).
pub async fn drill(
    world: &World,
    env: &str,
    opts: &crate::drill::DrillOptions,
    json: bool,
    read_only: bool,
) -> Result<i32> {
    let engine = engine(world, env)?;
    if refused_read_only(
        world,
        engine,
        read_only,
        "a drill switches slots; not allowed",
    ) {
        return Ok(EXIT_FAILED);
    }
    let done = match opts.canary {
        Some(how) => crate::drill::run_canary(engine, opts, how)
            .await
            .map(|r| (r.passed(), Box::new(r) as Box<dyn DrillOutput>)),
        None => crate::drill::run(engine, opts)
            .await
            .map(|r| (r.passed(), Box::new(r) as Box<dyn DrillOutput>)),
    };
    let (passed, report) = match done {
        Ok(r) => r,
        Err(e) => {
            errln!("drill refused: {e:#}");
            return Ok(EXIT_FAILED);
        }
    };
    if json {
        println!("{}", report.json()?);
    } else {
        report.print();
        // A method known to lose requests is named next to the figures it explains.
        for r in &engine.routers {
            if let Some(c) = r.caveat() {
                outln!("  router {} ({}): {c}", r.name(), r.kind());
            }
        }
    }
    Ok(if passed { EXIT_OK } else { EXIT_FAILED })
}

/// A drill's report, as `drill` prints it.
trait DrillOutput {
    fn print(&self);
    fn json(&self) -> serde_json::Result<String>;
}

impl DrillOutput for crate::drill::DrillReport {
    fn print(&self) {
        crate::drill::DrillReport::print(self)
    }
    fn json(&self) -> serde_json::Result<String> {
        crate::redact::to_json_pretty(self)
    }
}

impl DrillOutput for crate::drill::CanaryDrillReport {
    fn print(&self) {
        crate::drill::CanaryDrillReport::print(self)
    }
    fn json(&self) -> serde_json::Result<String> {
        crate::redact::to_json_pretty(self)
    }
}

#[cfg(test)]
mod tests;
