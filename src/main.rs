//! cutover's binary: CLI dispatch, error and log setup.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use color_eyre::eyre::{Result, WrapErr};

use cutover::cli::{Cli, Command, ConfigCommand, MaintenanceState, OpFlags, SlotOrNode};
use cutover::commands::{self, EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use cutover::config::{self, Config};
use cutover::model::MaintenanceMode;
use cutover::ops::OpKind;
use cutover::router::Target;
use cutover::theme::Theme;
use cutover::tui::{self, TuiOptions};
use cutover::world::World;

fn main() -> ExitCode {
    let _ = color_eyre::install();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cutover: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(run(cli));
    // Do not wait for background tasks (probes) to notice.
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    match code {
        Ok(c) => ExitCode::from(c as u8),
        Err(e)
            if e.downcast_ref::<commands::UnknownEnv>().is_some()
                || e.chain().any(|c| c.is::<config::ConfigProblem>()) =>
        {
            eprintln!("cutover: {}", cutover::redact::redact(&format!("{e:#}")));
            ExitCode::from(EXIT_USAGE as u8)
        }
        Err(e) => {
            eprintln!("cutover: {}", cutover::redact::redact(&format!("{e:#}")));
            ExitCode::from(EXIT_FAILED as u8)
        }
    }
}

/// Logs go to a daily file (redacted, mode 0600), never to the screen. The guard lives as
/// long as the program.
fn init_logs(dir: &Path) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    cutover::logs::init(dir)
}

fn config_path(cli: &Cli) -> PathBuf {
    cli.config.clone().unwrap_or_else(config::default_path)
}

fn load_config(cli: &Cli) -> std::result::Result<Config, i32> {
    let path = config_path(cli);
    config::load(&path).map_err(|e| {
        eprintln!("cutover: {}", cutover::redact::redact(&e.to_string()));
        EXIT_USAGE
    })
}

fn theme(cli: &Cli, config: Option<&Config>) -> std::result::Result<Theme, i32> {
    if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        return Ok(Theme::monochrome());
    }
    let from_config = cli.theme.is_none();
    let name = cli
        .theme
        .clone()
        .or_else(|| config.map(|c| c.settings.theme.clone()))
        .unwrap_or_else(|| "dark".into());
    Theme::load(&name).map_err(|e| {
        // A theme named in the config: say where.
        let at = config
            .filter(|_| from_config)
            .and_then(|c| {
                config::setting_position(c, "theme")
                    .map(|(l, col)| format!("{}:{l}:{col}: field `theme`: ", c.path.display()))
            })
            .unwrap_or_default();
        eprintln!("cutover: {at}{}", cutover::redact::redact(&e));
        EXIT_USAGE
    })
}

async fn run(cli: Cli) -> Result<i32> {
    match &cli.command {
        Some(Command::Completions { shell }) => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "cutover",
                &mut std::io::stdout(),
            );
            return Ok(EXIT_OK);
        }
        Some(Command::Man) => {
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            return Ok(EXIT_OK);
        }
        Some(Command::Config {
            what: ConfigCommand::Path,
        }) => {
            println!("{}", config_path(&cli).display());
            return Ok(EXIT_OK);
        }
        Some(Command::Init { path }) => {
            let p = path.clone().unwrap_or_else(|| config_path(&cli));
            if p.exists() {
                eprintln!(
                    "cutover: {} exists; not overwriting it (edit it, or give another PATH)",
                    p.display()
                );
                return Ok(EXIT_FAILED);
            }
            if let Some(d) = p.parent() {
                std::fs::create_dir_all(d)
                    .wrap_err_with(|| format!("cannot create {}", d.display()))?;
            }
            std::fs::write(&p, cutover::example::CONFIG)
                .wrap_err_with(|| format!("cannot write {}", p.display()))?;
            println!("wrote {}; edit it, then run `cutover check`", p.display());
            return Ok(EXIT_OK);
        }
        Some(Command::Demo(a)) => {
            if let Err(m) = cutover::demo::check_args(a) {
                eprintln!("cutover: demo: {m}");
                return Ok(EXIT_USAGE);
            }
            let dir = cutover::demo::state_dir();
            if a.print_config {
                print!("{}", cutover::demo::config_text(a, &dir));
                return Ok(EXIT_OK);
            }
            let _logs = init_logs(&cutover::paths::state_dir());
            let th = match theme(&cli, None) {
                Ok(t) => t,
                Err(c) => return Ok(c),
            };
            let world = cutover::demo::DemoWorld::start(a, &dir).await?;
            if a.no_tui {
                println!(
                    "demo running: live http://{}  preview http://{}  admin http://{}\n\
                     config: {}\nopen the TUI with: cutover --config {}\nCtrl-C stops it.",
                    world.proxy.live_addr(),
                    world
                        .proxy
                        .preview_addr()
                        .map_or("-".into(), |a| a.to_string()),
                    world.proxy.admin_addr(),
                    world.config.path.display(),
                    world.config.path.display(),
                );
                tokio::signal::ctrl_c().await?;
                return Ok(EXIT_OK);
            }
            let w = World::build(world.config.clone(), Some(world.controls()))?;
            let metrics = metrics_listener(&cli).await?;
            tui::run(
                w,
                TuiOptions {
                    read_only: cli.read_only,
                    theme: th,
                    metrics,
                },
            )
            .await?;
            drop(world);
            return Ok(EXIT_OK);
        }
        _ => {}
    }

    let config = match load_config(&cli) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    // State, locks and logs are the operator's own: their directories are created 0700.
    let _ = cutover::logs::create_private_dir(&config.settings.state_dir_or_default());
    let _logs = init_logs(&config.settings.log_dir_or_default());

    if let Some(Command::Proxy { env }) = &cli.command {
        cutover::proxy::run_from_config(&config, env.as_deref()).await?;
        return Ok(EXIT_OK);
    }
    let th = match theme(&cli, Some(&config)) {
        Ok(t) => t,
        Err(c) => return Ok(c),
    };
    let world = World::build(config, None)?;
    let ro = cli.read_only;
    let code = match cli.command {
        None => {
            let metrics = metrics_listener(&cli).await?;
            tui::run(
                world,
                TuiOptions {
                    read_only: ro,
                    theme: th,
                    metrics,
                },
            )
            .await?;
            EXIT_OK
        }
        Some(Command::Check { json }) => commands::check(&world, json).await?,
        Some(Command::Status { env, json }) => {
            commands::status(&world, env.as_deref(), json).await?
        }
        Some(Command::Drill {
            env,
            concurrency,
            requests,
            duration,
            pairs,
            no_keep_alive,
            path,
            pause,
            yes_really,
            canary,
            abort_at,
            sample,
            json,
        }) => {
            let opts = cutover::drill::DrillOptions {
                concurrency,
                requests,
                duration,
                pairs,
                keep_alive: !no_keep_alive,
                path,
                pause,
                yes_really,
                canary: canary.then_some(cutover::drill::CanaryDrill { abort_at, sample }),
            };
            commands::drill(&world, &env, &opts, json, ro).await?
        }
        Some(Command::Setup {
            env,
            live,
            preview,
            force,
        }) => commands::setup(&world, &env, &live, preview.as_deref(), force, ro).await?,
        Some(Command::Watch { env }) => commands::watch_env(world, &env).await?,
        Some(Command::Unlock { env }) => commands::unlock(&world, &env, ro)?,
        Some(Command::Canary {
            env,
            to: None,
            promote,
            pause,
            ..
        }) => {
            let ask = if promote {
                "promote"
            } else if pause {
                "pause"
            } else {
                "resume"
            };
            commands::steer_canary(&world, &env, ask, ro)?
        }
        Some(cmd) => match operation(cmd) {
            Some((env, kind, op)) => commands::operate(&world, &env, kind, &op, ro).await?,
            None => EXIT_USAGE,
        },
    };
    Ok(code)
}

/// `drain` or `undrain` (`kind`) of the slot or node `a` names.
fn slot_or_node(a: SlotOrNode, kind: fn(Target) -> OpKind) -> (String, OpKind, OpFlags) {
    let target = Target {
        slot: a.slot,
        node: a.node,
    };
    (a.env, kind(target), a.op)
}

/// The operation a command asks for: its environment, what to do, and the flags every
/// operation takes. `None` for the commands that are not operations.
fn operation(cmd: Command) -> Option<(String, OpKind, OpFlags)> {
    Some(match cmd {
        Command::Swap { env, to, op } => (env, OpKind::Swap { to }, op),
        Command::Rollback { env, op } => (env, OpKind::Rollback, op),
        Command::Drain(a) => slot_or_node(a, OpKind::Drain),
        Command::Undrain(a) => slot_or_node(a, OpKind::Undrain),
        Command::Maintenance {
            env,
            state,
            redirect_to,
            op,
        } => {
            let mode = match redirect_to {
                Some(to) => MaintenanceMode::Redirect { to },
                None => MaintenanceMode::Page,
            };
            let kind = match state {
                MaintenanceState::Pause => OpKind::Pause { on: true },
                MaintenanceState::Resume => OpKind::Pause { on: false },
                on_off => OpKind::Maintenance {
                    on: on_off == MaintenanceState::On,
                    mode,
                },
            };
            (env, kind, op)
        }
        Command::Preview { env, slot, op } => (env, OpKind::SetPreview(slot), op),
        Command::Rolling {
            env,
            slot,
            version,
            op,
        } => (env, OpKind::Rolling { slot, version }, op),
        Command::Recover { env, to, op } => (env, OpKind::Recover { to }, op),
        Command::Canary {
            env,
            to: Some(to),
            steps,
            interval,
            op,
            ..
        } => (
            env,
            OpKind::Canary {
                to,
                steps,
                interval,
            },
            op,
        ),
        _ => return None,
    })
}

/// `--metrics-listen`: bound before the TUI takes the terminal, so a refusal is printed.
async fn metrics_listener(cli: &Cli) -> Result<Option<(tokio::net::TcpListener, Option<String>)>> {
    match &cli.metrics_listen {
        None => Ok(None),
        Some(addr) => Ok(Some(cutover::selfmetrics::bind(addr).await?)),
    }
}
