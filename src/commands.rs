//! The headless commands: the same engine and drivers as the TUI, for scripts.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::SystemTime;

use color_eyre::eyre::{Result, bail};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::app::{App, Event};
use crate::config::Config;
use crate::model::{MaintenanceMode, ProbeResult, Role, RouterState};
use crate::ops::{Engine, GateSource, OpKind, OpRequest, Progress, Verdict, observe_within};
use crate::probe::UrlProbe;
use crate::tui::World;
use crate::ui::theme::Theme;

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
    warnings: Vec<String>,
    routers: Vec<RouterStatus>,
    slots: Vec<SlotStatus>,
    public: Option<UrlProbe>,
}

async fn env_status(world: &World, engine: &Engine) -> EnvStatus {
    let mut routers = Vec::new();
    for r in &engine.routers {
        let (state, error) = match observe_within(r.as_ref(), r.observe_timeout()).await {
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
        Some(u) => Some(engine.probe_behind(u).await),
        None => None,
    };
    // Warnings are computed by the same code as the TUI's.
    let memory = world.store.env(&engine.env.name);
    let mut app = App::new(
        Config {
            environments: vec![engine.env.clone()],
            ..world.config.clone()
        },
        Theme::monochrome(),
        vec![memory.clone()],
        SystemTime::now(),
    );
    for (i, r) in routers.iter().enumerate() {
        let result = match (&r.state, &r.error) {
            (Some(s), _) => Ok(s.clone()),
            (None, e) => Err(e.clone().unwrap_or_default()),
        };
        app.update(Event::Router {
            env: 0,
            router: i,
            result,
            at: SystemTime::now(),
        });
    }
    for (i, s) in slots.iter().enumerate() {
        app.update(Event::Probe {
            env: 0,
            slot: i,
            result: s.probe.clone(),
        });
    }
    if let Some(p) = &public {
        app.update(Event::Url {
            env: 0,
            preview: false,
            result: p.clone(),
        });
    }
    let ev = &app.envs[0];
    let warnings = ev.warnings();
    let first = first.unwrap_or_default();
    EnvStatus {
        name: engine.env.name.clone(),
        live: first.live,
        preview: first.preview,
        previous_live: memory.previous_live,
        maintenance: first.maintenance,
        warnings,
        routers,
        slots,
        public,
    }
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
    let failed = out
        .iter()
        .any(|e| e.routers.iter().any(|r| r.error.is_some()));
    if json {
        println!(
            "{}",
            crate::redact::to_json_pretty(&serde_json::json!({ "environments": out }))?
        );
    } else {
        for e in &out {
            outln!(
                "{}  live={} preview={}{}",
                e.name,
                e.live.as_deref().unwrap_or("?"),
                e.preview.as_deref().unwrap_or("-"),
                if e.maintenance.is_some() {
                    "  MAINTENANCE"
                } else {
                    ""
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
                match &r.error {
                    Some(err) => outln!("  router {} ({}): ERROR {err}", r.name, r.kind),
                    None => outln!("  router {} ({}): ok", r.name, r.kind),
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
            for w in &e.warnings {
                outln!("  WARNING {w}");
            }
        }
    }
    Ok(if failed { EXIT_FAILED } else { EXIT_OK })
}

/// `cutover check`: every endpoint and every router must answer.
pub async fn check(world: &World, json: bool) -> Result<i32> {
    #[derive(Serialize)]
    struct Row {
        environment: String,
        what: String,
        target: String,
        ok: bool,
        detail: String,
    }
    let mut rows = Vec::new();
    for e in &world.engines {
        for s in &e.env.slots {
            let p = e.prober.probe_slot(s).await;
            rows.push(Row {
                environment: e.env.name.clone(),
                what: format!("slot {} health", s.name),
                target: s.health_url.clone(),
                ok: p.health.is_serving(),
                detail: p.error.as_ref().map_or_else(
                    || {
                        format!(
                            "{} {}",
                            p.status.unwrap_or(0),
                            p.latency.map_or("".into(), crate::timefmt::millis)
                        )
                    },
                    |e| e.to_string(),
                ),
            });
            rows.push(Row {
                environment: e.env.name.clone(),
                what: format!("slot {} version", s.name),
                target: s.version_url.clone(),
                ok: p.version.is_some(),
                detail: p.version.as_ref().map_or_else(
                    || {
                        p.version_error
                            .as_ref()
                            .map_or("?".into(), |e| e.to_string())
                    },
                    |v| v.version.clone(),
                ),
            });
        }
        for (label, url) in [
            ("public URL", &e.env.public_url),
            ("preview URL", &e.env.preview_url),
        ] {
            if let Some(u) = url {
                let p = e.probe_behind(u).await;
                rows.push(Row {
                    environment: e.env.name.clone(),
                    what: label.into(),
                    target: p.url,
                    ok: p.error.is_none(),
                    detail: p.version.map_or_else(
                        || p.error.map_or("?".into(), |e| e.to_string()),
                        |v| v.version,
                    ),
                });
            }
        }
        for r in &e.routers {
            let (ok, detail) = match observe_within(r.as_ref(), r.observe_timeout()).await {
                Ok(s) => (
                    true,
                    format!(
                        "live={} preview={}",
                        s.live.as_deref().unwrap_or("?"),
                        s.preview.as_deref().unwrap_or("-")
                    ),
                ),
                Err(err) => (false, err),
            };
            rows.push(Row {
                environment: e.env.name.clone(),
                what: format!("router {}", r.name()),
                target: r.kind().into(),
                ok,
                detail,
            });
        }
    }
    let failed = rows.iter().filter(|r| !r.ok).count();
    if json {
        println!("{}", crate::redact::to_json_pretty(&rows)?);
    } else {
        outln!("config {} is valid", world.config.path.display());
        for r in &rows {
            outln!(
                "{} {:<14} {:<22} {:<40} {}",
                if r.ok { "ok  " } else { "FAIL" },
                r.environment,
                r.what,
                crate::ui::fit(&r.target, 40),
                r.detail
            );
        }
        outln!("{} checks, {} failed", rows.len(), failed);
    }
    Ok(if failed > 0 { EXIT_FAILED } else { EXIT_OK })
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
    if let Some(why) = read_only_reason(world, &engine, read_only) {
        errln!("read-only: `{}` is not allowed ({why})", kind.name());
        return Ok(EXIT_FAILED);
    }
    let question = format!("{} on `{env}`?", kind.name());
    let asks = !matches!(
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
    let (_cancel_tx, cancel_rx) = watch::channel(false);
    let req = OpRequest {
        kind,
        force: flags.force,
        watch: !flags.no_watch,
    };
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
                Progress::Watching { remaining, detail } => {
                    errln!("watch   {:>3}s {detail}", remaining.as_secs())
                }
                Progress::Finished(_) | Progress::Remembered => {}
            }
        }
    });
    let out = engine.run(req, GateSource::ProbeNow, tx, cancel_rx).await;
    let _ = printer.await;
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

/// `cutover watch ENV`: the TUI's event lines, printed.
pub async fn watch_env(world: World, env: &str) -> Result<i32> {
    let idx = engine_index(&world, env)?;
    let mut app = App::new(
        world.config.clone(),
        Theme::monochrome(),
        world.memories(),
        SystemTime::now(),
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = watch::channel(false);
    world.spawn_watchers(tx, stop_rx);
    let mut printed: u64 = 0;
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(ev) = ev else { break };
        app.update(Event::Tick(SystemTime::now()));
        app.update(ev);
        let name = &app.envs[idx].config.name;
        let new = (app.events_total - printed) as usize;
        for l in app.events.iter().skip(app.events.len().saturating_sub(new)) {
            if &l.env == name {
                outln!("{} {} {}", crate::timefmt::rfc3339(l.at), l.env, l.text);
            }
        }
        printed = app.events_total;
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
    if let Some(why) = read_only_reason(world, engine, read_only) {
        errln!("read-only: a drill switches slots; not allowed ({why})");
        return Ok(EXIT_FAILED);
    }
    let report = match crate::drill::run(engine, opts).await {
        Ok(r) => r,
        Err(e) => {
            errln!("drill refused: {e:#}");
            return Ok(EXIT_FAILED);
        }
    };
    if json {
        println!("{}", crate::redact::to_json_pretty(&report)?);
    } else {
        report.print();
    }
    Ok(
        if report.failed == 0 && report.failed_operations.is_empty() {
            EXIT_OK
        } else {
            EXIT_FAILED
        },
    )
}

/// `cutover setup ENV --live SLOT [--preview SLOT]`: the starting files of file-owning routers.
pub async fn setup(world: &World, env: &str, live: &str, preview: Option<&str>) -> Result<i32> {
    use crate::router::RouterConfig;
    let engine = engine(world, env)?;
    let mut done = 0;
    for cfg in &engine.env.routers {
        let name = cfg.name().to_string();
        let res = match cfg {
            RouterConfig::Nginx(c) => {
                crate::router::nginx::Driver::new(name.clone(), &engine.env, c)?
                    .install(live, preview)
                    .await
            }
            RouterConfig::Caddy(c) if c.mode == crate::router::caddy::Mode::File => {
                crate::router::caddy::Driver::new(name.clone(), &engine.env, c)?
                    .install(live, preview)
                    .await
            }
            _ => continue,
        };
        match res {
            Ok(()) => {
                done += 1;
                outln!(
                    "router `{name}`: live route → {live}{}",
                    preview
                        .map(|p| format!(", preview route → {p}"))
                        .unwrap_or_default()
                );
            }
            Err(e) => {
                errln!("router `{name}`: {e:#}");
                return Ok(EXIT_FAILED);
            }
        }
    }
    if done == 0 {
        errln!(
            "`{env}` has no nginx or Caddy router whose files cutover writes; nothing to set up"
        );
        return Ok(EXIT_FAILED);
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(settings: &str, env: &str, state: &std::path::Path) -> World {
        let src = format!(
            "[settings]\nstate_dir = \"{}\"\n{settings}\n\n[[environment]]\nname = \"shop\"\n{env}\n\n\
             [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:9\"\n",
            state.display()
        );
        let config = crate::config::parse(&src, std::path::Path::new("c.toml")).expect("valid");
        World::build(config, None).expect("world")
    }

    #[test]
    fn read_only_names_where_it_is_set_for_operations_and_drills_alike() {
        let d = tempfile::tempdir().expect("tempdir");
        let w = world("", "", d.path());
        let e = &w.engines[0];
        assert_eq!(read_only_reason(&w, e, false), None);
        let why = read_only_reason(&w, e, true).expect("the flag");
        assert!(why.contains("--read-only"), "{why}");

        let w = world("read_only = true", "", d.path());
        let why = read_only_reason(&w, &w.engines[0], false).expect("settings");
        assert!(
            why.contains("[settings]") && why.contains("c.toml"),
            "{why}"
        );

        let w = world("", "read_only = true", d.path());
        let why = read_only_reason(&w, &w.engines[0], false).expect("environment");
        assert!(why.contains("environment `shop`"), "{why}");
    }
}
