//! `setup`, `unlock` and `canary --promote|--pause|--resume`: commands about an environment's
//! files and lock.

use super::*;

/// `cutover setup ENV --live SLOT [--preview SLOT] [--force]`: the starting files of
/// file-owning routers. It changes what a running proxy serves, so it goes the way every
/// operation goes: refused when read-only, under the environment's lock, audited; and it
/// refuses to rewrite files a proxy already serves from unless `force`.
pub async fn setup(
    world: &World,
    env: &str,
    live: &str,
    preview: Option<&str>,
    force: bool,
    read_only: bool,
) -> Result<i32> {
    use crate::router::RouterConfig;
    let engine = engine(world, env)?;
    let what = "`setup` writes the files a proxy serves from; not allowed";
    if refused_read_only(world, engine, read_only, what) {
        return Ok(EXIT_FAILED);
    }
    for slot in std::iter::once(live).chain(preview) {
        if engine.env.slot(slot).is_none() {
            errln!("there is no slot `{slot}` in `{env}`");
            return Ok(EXIT_USAGE);
        }
    }
    let id = crate::ops::new_op_id();
    let me = crate::state::LockInfo::me("setup", &id);
    let store = world.store.clone();
    let name = engine.env.name.clone();
    let guard = match tokio::task::spawn_blocking(move || store.lock(&name, &me)).await? {
        Ok(g) => g,
        Err(e) => {
            errln!("`{env}` is {e}: wait for it to end");
            return Ok(EXIT_FAILED);
        }
    };
    let started = crate::timefmt::rfc3339(SystemTime::now());
    let mut steps = Vec::new();
    let mut failed = None;
    let mut done = 0;
    for (cfg, router) in engine.env.routers.iter().zip(&engine.routers) {
        let name = cfg.name().to_string();
        let writes = matches!(cfg, RouterConfig::Nginx(_))
            || matches!(cfg, RouterConfig::Caddy(c) if c.mode == crate::router::caddy::Mode::File);
        if !writes {
            continue;
        }
        if !force
            && let Ok(Ok(state)) =
                tokio::time::timeout(router.observe_timeout(), router.observe()).await
            && let Some(serving) = state.live
        {
            errln!(
                "router `{name}` is already set up: its live route serves `{serving}`. `cutover swap {env}` changes it (gated, verified, watched); `setup --force` rewrites its files now"
            );
            failed = Some(format!("router `{name}` already set up (live `{serving}`)"));
            break;
        }
        let res = match cfg {
            RouterConfig::Nginx(c) => {
                crate::router::nginx::Driver::new(name.clone(), engine.env.routed(), c)?
                    .install(live, preview)
                    .await
            }
            RouterConfig::Caddy(c) => {
                crate::router::caddy::Driver::new(name.clone(), engine.env.routed(), c)?
                    .install(live, preview)
                    .await
            }
            _ => continue,
        };
        let detail = format!(
            "router `{name}`: live route → {live}{}",
            preview
                .map(|p| format!(", preview route → {p}"))
                .unwrap_or_default()
        );
        match res {
            Ok(()) => {
                done += 1;
                outln!("{detail}");
                steps.push(crate::audit::StepRecord {
                    step: "apply".into(),
                    ok: true,
                    ms: 0,
                    detail,
                });
            }
            Err(e) => {
                errln!("router `{name}`: {e:#}");
                failed = Some(format!("router `{name}`: {e:#}"));
                break;
            }
        }
    }
    if done == 0 && failed.is_none() {
        errln!(
            "`{env}` has no nginx or Caddy router whose files cutover writes; nothing to set up"
        );
        return Ok(EXIT_FAILED);
    }
    if let Some(a) = &engine.audit {
        a.write(&crate::audit::AuditRecord {
            time: crate::timefmt::rfc3339(SystemTime::now()),
            id,
            started,
            user: crate::paths::user_at_host(),
            environment: engine.env.name.clone(),
            operation: "setup".into(),
            slots: crate::records::FromTo {
                from: None,
                to: Some(live.to_string()),
            },
            versions: crate::records::Versions::default(),
            forced: force,
            one_key: false,
            result: if failed.is_some() { "failed" } else { "done" }.into(),
            message: failed
                .clone()
                .unwrap_or_else(|| format!("{done} router(s) set up")),
            steps,
        });
    }
    drop(guard);
    Ok(if failed.is_some() {
        EXIT_FAILED
    } else {
        EXIT_OK
    })
}

/// `cutover unlock ENV`: refused when read-only; never breaks a live holder's lock (it names
/// the holder); clears what a dead holder left.
/// Where `cutover canary ENV --pause|--resume|--promote` leaves its request for the canary
/// process `pid` before it signals it (SIGUSR1); the canary reads and removes it. No file:
/// a promote (the signal alone, as older versions sent it).
pub fn canary_ask_file(world: &World, env: &str, pid: u32) -> std::path::PathBuf {
    world.config.settings.state_dir_or_default().join(format!(
        "canary-{}-{pid}.ask",
        crate::paths::safe_file_name(env)
    ))
}

/// What the canary was asked, read from its ask file (removed), `promote` when there is none.
pub(super) fn take_canary_ask(path: &std::path::Path) -> String {
    let ask = std::fs::read_to_string(path).unwrap_or_default();
    let _ = std::fs::remove_file(path);
    match ask.trim() {
        "" => "promote".into(),
        other => other.to_string(),
    }
}

/// `cutover canary ENV --promote|--pause|--resume`: leave the request beside ENV's state and
/// send SIGUSR1 to the `cutover canary` holding ENV's lock on this host. `promote` ends the
/// current step's hold and goes on to the next step; `pause` stops the countdown (the
/// analysis goes on); `resume` restarts it, or ends a `pause` step.
pub fn steer_canary(world: &World, env: &str, ask: &str, read_only: bool) -> Result<i32> {
    let engine = engine(world, env)?;
    let what = format!("`canary --{ask}` is not allowed");
    if refused_read_only(world, engine, read_only, &what) {
        return Ok(EXIT_FAILED);
    }
    let Some(h) = world.store.holder(&engine.env.name) else {
        errln!("no canary is running on `{env}`: nobody holds its lock");
        return Ok(EXIT_FAILED);
    };
    if h.operation != "canary" {
        errln!(
            "`{env}` is not running a canary but {}: nothing to {ask}",
            h.describe()
        );
        return Ok(EXIT_FAILED);
    }
    let me = crate::paths::user_at_host();
    let host = |s: &str| s.rsplit('@').next().unwrap_or_default().to_string();
    if host(&h.holder) != host(&me) {
        errln!(
            "the canary on `{env}` runs on another host ({}); run `cutover canary {env} --{ask}` there",
            h.describe()
        );
        return Ok(EXIT_FAILED);
    }
    let Ok(pid) = i32::try_from(h.pid) else {
        errln!(
            "the lock of `{env}` names pid {}, which is not a process id",
            h.pid
        );
        return Ok(EXIT_FAILED);
    };
    let file = canary_ask_file(world, &engine.env.name, h.pid);
    let tmp = file.with_extension("ask.tmp");
    let written = std::fs::write(&tmp, ask).and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        errln!(
            "cannot leave the request for the canary on `{env}` in {}: {e}",
            file.display()
        );
        return Ok(EXIT_FAILED);
    }
    let sent = rustix::process::Pid::from_raw(pid)
        .ok_or(rustix::io::Errno::SRCH)
        .and_then(|p| rustix::process::kill_process(p, rustix::process::Signal::USR1));
    if let Err(e) = sent {
        let _ = std::fs::remove_file(&file);
        let e = std::io::Error::from(e);
        errln!("cannot signal the canary on `{env}` (pid {pid}): {e}; are you its user?");
        return Ok(EXIT_FAILED);
    }
    let what = match ask {
        "pause" => "to pause its countdown",
        "resume" => "to resume",
        _ => "to go on to its next step",
    };
    outln!(
        "asked the canary #{} on `{env}` (pid {pid}) {what}",
        h.op_id
    );
    Ok(EXIT_OK)
}

pub fn unlock(world: &World, env: &str, read_only: bool) -> Result<i32> {
    let engine = engine(world, env)?;
    if refused_read_only(world, engine, read_only, "`unlock` is not allowed") {
        return Ok(EXIT_FAILED);
    }
    match world.store.clear_lock(&engine.env.name)? {
        Err(holder) => {
            errln!(
                "`{env}` is locked by a live cutover: {}. Its lock ends with it; to act now, take it over: `cutover swap {env} --take-over` (its watch ends and it records who took over)",
                holder.describe()
            );
            Ok(EXIT_FAILED)
        }
        Ok(journal) => {
            outln!("`{env}` is not locked (nothing held it)");
            if journal {
                errln!(
                    "an interrupted operation's journal is there: `cutover status {env}` shows it, `cutover recover {env}` resolves it"
                );
            }
            Ok(EXIT_OK)
        }
    }
}
