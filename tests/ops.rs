//! Operations against the real embedded proxy and local slot servers, through the same engine
//! the TUI and CLI use: gates and force, verify, watch and auto-rollback, rollback refusal,
//! locks between processes, the audit log, and the CLI's exit codes.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::printed;
use cutover::config::Config;
use cutover::ops::{Engine, GateSource, OpKind, OpRequest, Outcome, Verdict};
use cutover::proxy::ProxyHandle;
use cutover::slotserver::SlotServer;
use cutover::world::World;
use tokio::sync::{mpsc, watch};

const TOKEN: &str = "s3cr3t-admin-token-for-tests";

struct Rig {
    dir: tempfile::TempDir,
    config: Config,
    config_path: PathBuf,
    slots: Vec<SlotServer>,
    _proxy: ProxyHandle,
    live: u16,
}

impl Rig {
    /// [`Rig::start`] with blue at 1.0.0 (live), green at 2.0.0 and `third` at 3.0.0.
    async fn with_third(third: &str, extra_env: &str) -> Rig {
        Rig::start(
            &[("blue", "1.0.0"), ("green", "2.0.0"), (third, "3.0.0")],
            extra_env,
        )
        .await
    }

    /// [`Rig::start`] with blue at 1.0.0 (live) and green at 2.0.0.
    async fn blue_green(extra_env: &str) -> Rig {
        Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], extra_env).await
    }

    async fn start(versions: &[(&str, &str)], extra_env: &str) -> Rig {
        // SAFETY-free: tests in this file all use the same token value.
        unsafe { std::env::set_var("CUTOVER_TEST_TOKEN", TOKEN) };
        let slots = common::slots(versions).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let [live, preview, admin] = common::free_ports();
        let mut text = format!(
            "[settings]\npoll_interval = \"200ms\"\ntimeout = \"500ms\"\ngate_checks = 2\n\
             state_dir = \"{state}\"\n\n[[environment]]\nname = \"shop\"\n\
             public_url = \"http://127.0.0.1:{live}/\"\n{watch}verify_timeout = \"3s\"\n{extra_env}\n",
            state = dir.path().join("state").display(),
            watch = if extra_env.contains("watch =") {
                ""
            } else {
                "watch = \"0s\"\n"
            },
        );
        text.push_str(&common::versioned_slot_tables(&slots));
        text.push_str(&format!(
            "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{admin}\"\n\
             live_listen = \"127.0.0.1:{live}\"\npreview_listen = \"127.0.0.1:{preview}\"\n\
             initial_live = \"{}\"\ninitial_preview = \"{}\"\ntoken_env = \"CUTOVER_TEST_TOKEN\"\n\
             state_file = \"{}\"\n",
            versions[0].0,
            versions[1].0,
            dir.path().join("proxy.json").display()
        ));
        let (config, proxy) = common::start_embedded(dir.path(), &text).await;
        common::wait_port(live, Duration::from_secs(5)).await;
        Rig {
            config_path: dir.path().join("cutover.toml"),
            dir,
            config,
            slots,
            _proxy: proxy,
            live,
        }
    }

    fn engine(&self) -> Arc<Engine> {
        let w = World::build(self.config.clone(), None).expect("world");
        w.engines[0].clone()
    }

    fn slot(&self, name: &str) -> &SlotServer {
        self.slots
            .iter()
            .find(|s| s.controls.name == name)
            .expect("slot")
    }

    async fn serving(&self) -> String {
        common::get(&format!("http://127.0.0.1:{}/", self.live))
            .await
            .1
    }

    fn audit_text(&self) -> String {
        let mut all = String::new();
        for e in std::fs::read_dir(self.dir.path().join("state"))
            .expect("state dir")
            .flatten()
        {
            if e.file_name().to_string_lossy().starts_with("audit") {
                all.push_str(&std::fs::read_to_string(e.path()).expect("audit"));
            }
        }
        all
    }

    /// `cutover ARGS` on this rig's config, its token and state in the rig's dir, no stdin.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
        c.arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("CUTOVER_TEST_TOKEN", TOKEN)
            .env("XDG_STATE_HOME", self.dir.path().join("xdg"))
            .stdin(Stdio::null());
        c
    }

    fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run cutover")
    }
}

/// A swap (no force, no watch) on a blue/green rig with `extra_env`, which must end in
/// `verdict`: the rig, the outcome and the messages on the way.
async fn swap_on(extra_env: &str, verdict: Verdict) -> (Rig, Outcome, Vec<String>) {
    let rig = Rig::blue_green(extra_env).await;
    let (o, seen) = common::run_op_ends(&rig.engine(), OpKind::Swap { to: None }, verdict).await;
    (rig, o, seen)
}

/// `kind` (forced if `force`; no watch), which must end done: its outcome.
async fn done(engine: &Engine, kind: OpKind, force: bool) -> Outcome {
    let o = run(engine, kind, force, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    o
}

/// A swap to the preview, without force or watch, which must end done: its outcome.
async fn swap_done(engine: &Engine) -> Outcome {
    let o = run(engine, OpKind::Swap { to: None }, false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    o
}

async fn run(engine: &Engine, kind: OpKind, force: bool, watch_it: bool) -> Outcome {
    common::run_op(engine, kind, force, watch_it).await.0
}

#[tokio::test]
async fn swap_passes_the_gate_switches_and_records_the_previous_live_slot() {
    let rig = Rig::blue_green("").await;
    let e = rig.engine();
    assert_eq!(rig.serving().await, "blue");
    swap_done(&e).await;
    assert_eq!(rig.serving().await, "green");
    assert_eq!(e.store.env("shop").previous_live.as_deref(), Some("blue"));
    // The swap exchanged the roles: blue is now the preview.
    let s = e.observe_all().await.expect("observe");
    assert_eq!(s[0].preview.as_deref(), Some("blue"));
    // And rollback takes it back.
    done(&e, OpKind::Rollback, false).await;
    assert_eq!(rig.serving().await, "blue");
}

#[tokio::test]
async fn an_unhealthy_target_is_refused_with_the_reason_and_force_goes_past() {
    let rig = Rig::blue_green("").await;
    rig.slot("green").controls.set_healthy(false);
    let e = rig.engine();
    let o = run(&e, OpKind::Swap { to: None }, false, false).await;
    assert_eq!(o.verdict, Verdict::Refused);
    common::assert_contains(&o.message, "`green` needs 2 healthy checks");
    common::assert_contains(&o.message, "--force");
    assert_eq!(
        rig.serving().await,
        "blue",
        "a refused swap changes nothing"
    );
    let o = run(&e, OpKind::Swap { to: None }, true, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    assert!(o.record.forced);
    assert!(o.record.steps.iter().any(|s| s.detail.contains("FORCED")));
    assert!(rig.audit_text().contains("\"forced\":true"));
}

#[tokio::test]
async fn the_same_version_is_refused_unless_forced() {
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "1.0.0")], "").await;
    let e = rig.engine();
    let o = run(&e, OpKind::Swap { to: None }, false, false).await;
    assert_eq!(o.verdict, Verdict::Refused);
    common::assert_contains(&o.message, "same version as live (1.0.0)");
    let o = run(&e, OpKind::Swap { to: None }, true, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
}

#[tokio::test]
async fn an_unknown_version_is_refused() {
    let rig = Rig::blue_green("").await;
    let mut cfg = rig.config.clone();
    cfg.environments[0].slots[1].version_url = format!("{}/nope", rig.slot("green").url());
    let e = World::build(cfg, None).expect("world").engines[0].clone();
    let o = run(&e, OpKind::Swap { to: None }, false, false).await;
    assert_eq!(o.verdict, Verdict::Refused);
    common::assert_contains(&o.message, "version is unknown");
}

/// A watched swap to green (watch window `watch_for`); green turns unhealthy as soon as the
/// watch starts.
async fn swap_with_green_failing_while_watched(
    rig: &Rig,
    watch_for: Duration,
    verdict: Verdict,
) -> Outcome {
    let mut cfg = rig.config.clone();
    cfg.environments[0].watch = watch_for;
    let e = World::build(cfg, None).expect("world").engines[0].clone();
    let green = rig.slot("green").controls.clone();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_c, cancel) = watch::channel(cutover::ops::Interrupt::None);
    let req = OpRequest::new(OpKind::Swap { to: None });
    let task = tokio::spawn(async move { e.run(req, GateSource::ProbeNow, tx, cancel).await });
    // Break green as soon as the watch starts.
    while let Some(p) = rx.recv().await {
        if let cutover::ops::Progress::Step {
            step: cutover::ops::Step::Watch,
            ..
        } = p
        {
            green.set_healthy(false);
            break;
        }
    }
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let o = task.await.expect("join");
    assert_eq!(o.verdict, verdict, "{}", o.message);
    o
}

#[tokio::test]
async fn auto_rollback_when_the_new_slot_fails_while_watched() {
    let rig = Rig::blue_green("auto_rollback = true").await;
    let o =
        swap_with_green_failing_while_watched(&rig, Duration::from_secs(8), Verdict::RolledBack)
            .await;
    common::assert_contains(&o.message, "rolled back to `blue`");
    assert_eq!(rig.serving().await, "blue");
}

#[tokio::test]
async fn without_auto_rollback_a_failing_watch_raises_an_alarm_naming_the_key() {
    let rig = Rig::blue_green("").await;
    let o =
        swap_with_green_failing_while_watched(&rig, Duration::from_secs(6), Verdict::Alarm).await;
    common::assert_contains(&o.message, "cutover rollback shop");
    assert_eq!(rig.serving().await, "green", "no automatic rollback");
}

#[tokio::test]
async fn rollback_is_refused_when_the_old_slot_is_down() {
    let rig = Rig::blue_green("").await;
    let e = rig.engine();
    swap_done(&e).await;
    rig.slot("blue").controls.set_healthy(false);
    let o = run(&e, OpKind::Rollback, false, false).await;
    assert_eq!(o.verdict, Verdict::Refused);
    common::assert_contains(&o.message, "`blue` needs");
    assert_eq!(rig.serving().await, "green");
}

#[tokio::test]
async fn rollback_with_nothing_recorded_says_so() {
    let rig = Rig::blue_green("").await;
    let o = run(&rig.engine(), OpKind::Rollback, false, false).await;
    assert_eq!(o.verdict, Verdict::Refused);
    common::assert_contains(&o.message, "no previous live slot");
}

#[tokio::test]
async fn drain_waits_for_the_in_flight_request_and_undrain_restores() {
    let rig = Rig::with_third("staging", "").await;
    let e = rig.engine();
    // Make staging live through a swap, start a slow request on it, swap back, then drain it.
    let o = run(&e, common::swap_to("staging"), false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    let url = format!("http://127.0.0.1:{}/slow?ms=1500", rig.live);
    let slow = tokio::spawn(async move { common::get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    done(&e, common::swap_to("blue"), true).await;
    let o = done(
        &e,
        OpKind::Drain(cutover::router::Target::slot("staging")),
        false,
    )
    .await;
    common::assert_contains(&o.message, "no requests in flight");
    let (status, slot, _) = slow.await.expect("join");
    assert_eq!(
        (status, slot.as_str()),
        (200, "staging"),
        "the in-flight request finished on the old slot"
    );
    done(
        &e,
        OpKind::Undrain(cutover::router::Target::slot("staging")),
        false,
    )
    .await;
}

#[tokio::test]
async fn maintenance_on_and_off() {
    let rig = Rig::blue_green("").await;
    let e = rig.engine();
    let on = OpKind::Maintenance {
        on: true,
        mode: cutover::model::MaintenanceMode::Page,
    };
    done(&e, on, false).await;
    let (status, _, _) = common::get(&format!("http://127.0.0.1:{}/", rig.live)).await;
    assert_eq!(status, 503);
    let off = OpKind::Maintenance {
        on: false,
        mode: cutover::model::MaintenanceMode::Page,
    };
    done(&e, off, false).await;
    assert_eq!(rig.serving().await, "blue");
}

#[tokio::test]
async fn audit_records_have_the_fields_and_no_secrets() {
    let rig = Rig::blue_green("").await;
    let e = rig.engine();
    swap_done(&e).await;
    let text = rig.audit_text();
    assert!(
        !text.contains(TOKEN),
        "the admin token leaked into the audit log"
    );
    let line = text.lines().last().expect("a record");
    let v: serde_json::Value = serde_json::from_str(line).expect("json line");
    for f in [
        "time",
        "user",
        "environment",
        "operation",
        "from",
        "to",
        "from_version",
        "to_version",
        "forced",
        "result",
        "steps",
    ] {
        assert!(v.get(f).is_some(), "missing {f}: {line}");
    }
    assert_eq!(v["environment"], "shop");
    assert_eq!(v["operation"], "swap");
    assert_eq!(
        (v["from"].as_str(), v["to"].as_str()),
        (Some("blue"), Some("green"))
    );
    assert_eq!(
        (v["from_version"].as_str(), v["to_version"].as_str()),
        (Some("1.0.0"), Some("2.0.0"))
    );
    assert_eq!(v["result"], "done");
    let steps: Vec<&str> = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert_eq!(steps, ["plan", "gate", "apply", "verify"]);
    assert!(v["user"].as_str().is_some_and(|u| u.contains('@')));
}

#[tokio::test]
async fn cli_exit_codes_and_lock_contention_between_processes() {
    let rig = Rig::blue_green("").await;
    let rig = Arc::new(rig);
    let cli = |args: Vec<&'static str>| {
        let rig = rig.clone();
        tokio::task::spawn_blocking(move || rig.cli(&args))
    };
    // Another holder (this test process, alive) has the lock: the CLI refuses and names it.
    let store = cutover::state::Store::new(rig.dir.path().join("state"));
    let guard = store
        .lock("shop", &cutover::state::LockInfo::me("swap", "t35t1d00"))
        .expect("lock");
    let o = cli(vec!["swap", "shop", "--yes", "--no-watch"])
        .await
        .expect("join");
    assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
    assert!(
        printed(&o).contains("locked by") && printed(&o).contains("#t35t1d00"),
        "{}",
        printed(&o)
    );
    assert!(printed(&o).contains("--take-over"), "{}", printed(&o));
    // unlock never breaks a live holder's lock: it names it.
    let o = cli(vec!["unlock", "shop"]).await.expect("join");
    assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
    assert!(printed(&o).contains("#t35t1d00"), "{}", printed(&o));
    drop(guard);
    // What a dead holder left in the lock file is no lock: the swap goes through: exit 0.
    let dead = serde_json::json!({"holder": cutover::paths::user_at_host(), "pid": 999_999_999u32, "operation": "swap", "since": "then"});
    std::fs::write(rig.dir.path().join("state/shop.lock"), dead.to_string()).expect("write");
    let o = cli(vec!["swap", "shop", "--yes", "--no-watch"])
        .await
        .expect("join");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert_eq!(rig.serving().await, "green");
    // Refused (same slot already live): exit 1, the message says why.
    let o = cli(vec!["swap", "shop", "--to", "green", "--yes"])
        .await
        .expect("join");
    assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
    assert!(printed(&o).contains("already live"), "{}", printed(&o));
    // JSON status is parseable and shows the new live slot.
    let o = cli(vec!["status", "shop", "--json"]).await.expect("join");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["environments"][0]["live"], "green");
    assert_eq!(v["environments"][0]["previous_live"], "blue");
    // Rollback through the CLI: exit 0 and blue serves again.
    let o = cli(vec!["rollback", "shop", "--yes", "--no-watch"])
        .await
        .expect("join");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert_eq!(rig.serving().await, "blue");
    // unlock with nobody holding it is fine.
    let o = cli(vec!["unlock", "shop"]).await.expect("join");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
}

// ---------------------------------------------------------------------------------------
// Races between processes: the lock, the state, a watch and another operator.
// ---------------------------------------------------------------------------------------

/// The child side of the lock races: run by the tests below as a separate process (this test
/// binary again), never on its own.
#[test]
#[ignore = "a child process of the lock race tests"]
fn lock_race_child() {
    use cutover::state::{LockError, LockInfo, Store};
    let Ok(dir) = std::env::var("CUTOVER_RACE_DIR") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let env = std::env::var("CUTOVER_RACE_ENV").expect("env");
    let store = Store::new(dir.clone());
    let me = LockInfo::me("swap", &format!("p{}", std::process::id()));
    if std::env::var("CUTOVER_RACE_HOLD").is_ok() {
        let _g = store.lock(&env, &me).expect("lock");
        println!("held");
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let n: usize = std::env::var("CUTOVER_RACE_N")
        .expect("n")
        .parse()
        .expect("n");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut done = 0;
    while done < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{done} of {n} in 120s"
        );
        match store.lock(&env, &me) {
            Ok(g) => {
                // Nobody else may be inside: the marker is created exclusively.
                let last = format!("{}-{done}", std::process::id());
                let (inside, counter) = (
                    dir.join(format!("{env}.inside")),
                    dir.join(format!("{env}.counter")),
                );
                common::race_turn(&inside, &counter, || {
                    store
                        .update(&g, |m| m.previous_live = Some(last.clone()))
                        .expect("state");
                });
                drop(g);
                done += 1;
            }
            Err(LockError::Held(_)) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

fn race_child(dir: &std::path::Path, env: &str, n: usize, hold: bool) -> std::process::Child {
    let vars = [
        ("CUTOVER_RACE_DIR", dir.display().to_string()),
        ("CUTOVER_RACE_ENV", env.to_string()),
        ("CUTOVER_RACE_N", n.to_string()),
    ];
    common::test_child(
        "lock_race_child",
        &vars,
        hold.then_some("CUTOVER_RACE_HOLD"),
    )
}

#[test]
fn two_processes_racing_for_one_lock_never_both_hold_it_and_two_environments_keep_their_state() {
    let d = tempfile::tempdir().expect("tempdir");
    // Two processes, 100 lock-protected increments each, on one environment; and two more on
    // another environment each, at the same time, writing their state.
    let kids: Vec<_> = [("shop", 100), ("shop", 100), ("api", 50), ("web", 50)]
        .iter()
        .map(|(env, n)| race_child(d.path(), env, *n, false))
        .collect();
    let pids: Vec<u32> = kids.iter().map(|k| k.id()).collect();
    for k in kids {
        let o = k.wait_with_output().expect("child");
        assert!(o.status.success(), "a child failed: {}", printed(&o));
    }
    let count = |env: &str| -> u64 {
        std::fs::read_to_string(d.path().join(format!("{env}.counter")))
            .expect("counter")
            .trim()
            .parse()
            .expect("number")
    };
    assert_eq!(count("shop"), 200, "an increment was lost: two holders");
    let store = cutover::state::Store::new(d.path().to_path_buf());
    // Each environment keeps the record its last writer left: none lost the other's.
    assert_eq!(
        store.env("api").previous_live,
        Some(format!("{}-49", pids[2]))
    );
    assert_eq!(
        store.env("web").previous_live,
        Some(format!("{}-49", pids[3]))
    );
    assert!(store.env("shop").previous_live.is_some());
}

#[test]
fn a_killed_holders_lock_is_free_at_once() {
    use std::io::BufRead;
    let d = tempfile::tempdir().expect("tempdir");
    let mut kid = race_child(d.path(), "shop", 0, true);
    // The test harness prints its own lines first; wait for the child's.
    let mut out = std::io::BufReader::new(kid.stdout.take().expect("stdout"));
    let mut line = String::new();
    while line.trim() != "held" {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read") > 0,
            "the child ended"
        );
    }
    let store = cutover::state::Store::new(d.path().to_path_buf());
    let me = cutover::state::LockInfo::me("swap", "parent");
    let held = store.lock("shop", &me).expect_err("the child holds it");
    assert!(held.to_string().contains("locked by"), "{held}");
    assert_eq!(store.holder("shop").map(|h| h.pid), Some(kid.id()));
    kid.kill().expect("kill -9");
    kid.wait().expect("reaped");
    // No stale lock to break: the kernel let go with the process.
    assert_eq!(store.holder("shop"), None);
    let _g = store.lock("shop", &me).expect("free at once");
}

/// A cutover CLI run in the background whose stderr lines can be waited for.
struct Background {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Background {
    fn start(rig: &Rig, args: &[&str]) -> Background {
        let mut child = rig
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cutover");
        let (tx, lines) = std::sync::mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Background {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Wait (generously) for a stderr line starting with `prefix`.
    fn wait_for(&mut self, prefix: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.starts_with(prefix);
                    self.seen.push(l);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!("no `{prefix}` line in 60s; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// [`Background::start`] off the async runtime, and wait until it is in its watch.
    async fn watching(rig: &Arc<Rig>, args: &[&str]) -> Background {
        let (rig, args) = (
            rig.clone(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        );
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut a = Background::start(&rig, &args);
            a.wait_for("watch");
            a
        })
        .await
        .expect("join")
    }

    /// [`Background::finish`] off the async runtime.
    async fn finished(self) -> (Option<i32>, String) {
        tokio::task::spawn_blocking(move || self.finish())
            .await
            .expect("join")
    }

    fn finish(self) -> (Option<i32>, String) {
        let o = self.child.wait_with_output().expect("wait");
        let rest: Vec<String> = self.lines.try_iter().collect();
        (
            o.status.code(),
            format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&o.stdout),
                self.seen.join("\n"),
                rest.join("\n")
            ),
        )
    }
}

fn audit_records(rig: &Rig) -> Vec<serde_json::Value> {
    rig.audit_text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("audit json"))
        .collect()
}

#[tokio::test]
async fn another_operator_is_refused_during_a_watch_and_a_takeover_ends_it_without_rollback() {
    let rig = Rig::with_third("c", "watch = \"120s\"\nauto_rollback = true").await;
    let rig = Arc::new(rig);
    // Operator A: a watched swap to green.
    let a = Background::watching(&rig, &["swap", "shop", "--to", "green", "--yes"]).await;
    assert_eq!(rig.serving().await, "green");
    // Operator B, 'just a quick swap' during A's watch: refused, naming A.
    let b = {
        let rig = rig.clone();
        tokio::task::spawn_blocking(move || {
            rig.cli(&["swap", "shop", "--to", "c", "--yes", "--no-watch"])
        })
        .await
        .expect("join")
    };
    assert_eq!(b.status.code(), Some(1), "{}", printed(&b));
    let a_pid = a.child.id().to_string();
    assert!(
        printed(&b).contains("locked by") && printed(&b).contains(&format!("pid {a_pid}")),
        "B must name A: {}",
        printed(&b)
    );
    assert_eq!(rig.serving().await, "green", "B changed nothing");
    // B takes over explicitly: A's watch ends, saying who took over; B's swap runs.
    let b = {
        let rig = rig.clone();
        tokio::task::spawn_blocking(move || {
            rig.cli(&[
                "swap",
                "shop",
                "--to",
                "c",
                "--yes",
                "--no-watch",
                "--take-over",
            ])
        })
        .await
        .expect("join")
    };
    assert_eq!(b.status.code(), Some(0), "{}", printed(&b));
    let (code, a_out) = a.finished().await;
    assert_eq!(code, Some(1), "A's watch did not complete: {a_out}");
    common::assert_contains(&a_out, "took the lock over");
    // Green now fails: nobody rolls traffic off c, which A did not set.
    rig.slot("green").controls.set_healthy(false);
    assert_eq!(rig.serving().await, "c");
    let records = audit_records(&rig);
    assert!(
        records.iter().any(|r| r["result"] == "cancelled"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("took the lock over"))),
        "A's record says who took over: {records:?}"
    );
    assert!(
        !records.iter().any(|r| r["result"] == "rolled-back"),
        "{records:?}"
    );
}

#[tokio::test]
async fn a_watch_whose_slot_was_changed_by_hand_ends_without_rolling_back() {
    let rig = Rig::with_third("c", "watch = \"120s\"\nauto_rollback = true").await;
    let e = rig.engine();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_c, cancel) = watch::channel(cutover::ops::Interrupt::None);
    let req = OpRequest::new(common::swap_to("green"));
    let task = {
        let e = e.clone();
        tokio::spawn(async move { e.run(req, GateSource::ProbeNow, tx, cancel).await })
    };
    while let Some(p) = rx.recv().await {
        if matches!(
            p,
            cutover::ops::Progress::Step {
                step: cutover::ops::Step::Watch,
                ..
            }
        ) {
            break;
        }
    }
    // Someone switches the proxy by hand (no lock), then green fails.
    e.routers[0].switch_live("c").await.expect("by hand");
    rig.slot("green").controls.set_healthy(false);
    let out = task.await.expect("join");
    common::assert_verdict(&out, Verdict::Cancelled);
    common::assert_contains(&out.message, "`c` was made live by someone else");
    assert_eq!(
        rig.serving().await,
        "c",
        "the watch did not undo their change"
    );
}

#[tokio::test]
async fn two_swaps_started_together_do_one_swap() {
    let rig = Arc::new(Rig::blue_green("").await);
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let rig = rig.clone();
            tokio::task::spawn_blocking(move || rig.cli(&["swap", "shop", "--yes", "--no-watch"]))
        })
        .collect();
    let mut codes = Vec::new();
    for r in runs {
        let o = r.await.expect("join");
        codes.push((o.status.code(), printed(&o)));
    }
    let ok = codes.iter().filter(|(c, _)| *c == Some(0)).count();
    assert_eq!(ok, 1, "exactly one swap: {codes:?}");
    let other = codes
        .iter()
        .find(|(c, _)| *c != Some(0))
        .expect("the other");
    assert!(
        other.1.contains("locked by") || other.1.contains("already live"),
        "{}",
        other.1
    );
    let done: Vec<_> = audit_records(&rig)
        .into_iter()
        .filter(|r| r["operation"] == "swap" && r["result"] == "done")
        .collect();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(rig.serving().await, "green");
}

#[tokio::test]
async fn a_kill_during_a_watch_leaves_an_intent_record_and_sigint_abandons_the_watch_on_record() {
    let rig = Arc::new(Rig::blue_green("watch = \"120s\"").await);
    let mut a = Background::watching(&rig, &["swap", "shop", "--yes"]).await;
    a.child.kill().expect("kill -9");
    let _ = a.child.wait();
    let records = audit_records(&rig);
    let intent = records
        .iter()
        .find(|r| r["result"] == "started")
        .unwrap_or_else(|| panic!("no intent record: {records:?}"));
    assert_eq!(intent["to"], "green");
    assert!(intent["id"].as_str().is_some_and(|i| !i.is_empty()));
    assert_eq!(rig.serving().await, "green");
    // The lock went with the process: the next operation runs. SIGINT during its watch
    // abandons the watch (the slot stays live) and says so in the audit log.
    let a = Background::watching(&rig, &["rollback", "shop", "--yes"]).await;
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc_kill(a.child.id() as i32, 2) };
    let (code, out) = a.finished().await;
    assert_eq!(code, Some(1), "{out}");
    common::assert_contains(&out, "watch abandoned");
    assert_eq!(rig.serving().await, "blue");
    let records = audit_records(&rig);
    assert!(
        records.iter().any(|r| r["operation"] == "rollback"
            && r["result"] == "cancelled"
            && r["message"]
                .as_str()
                .is_some_and(|m| m.contains("watch abandoned"))),
        "{records:?}"
    );
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[tokio::test]
async fn setup_and_unlock_are_refused_read_only() {
    let rig = Arc::new(Rig::blue_green("").await);
    for args in [
        vec!["--read-only", "setup", "shop", "--live", "blue"],
        vec!["--read-only", "unlock", "shop"],
    ] {
        let rig = rig.clone();
        let o = tokio::task::spawn_blocking(move || rig.cli(&args))
            .await
            .expect("join");
        assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
        assert!(printed(&o).contains("read-only"), "{}", printed(&o));
    }
}

// ---------------------------------------------------------------------------------------
// Hooks around a swap (issue #23): warm-up, smoke test, after-hooks.
// ---------------------------------------------------------------------------------------

/// Run `kind`, calling `at_apply` when the apply step starts (before any router changes);
/// returns the outcome and every progress message.
async fn run_seeing_apply(
    engine: Arc<Engine>,
    kind: OpKind,
    force: bool,
    mut at_apply: impl FnMut() + Send + 'static,
) -> (Outcome, Vec<String>) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_c, cancel) = watch::channel(cutover::ops::Interrupt::None);
    let req = OpRequest {
        force,
        watch: false,
        ..OpRequest::new(kind)
    };
    let task = tokio::spawn(async move { engine.run(req, GateSource::ProbeNow, tx, cancel).await });
    let mut seen = Vec::new();
    let mut applied = false;
    while let Some(p) = rx.recv().await {
        if let cutover::ops::Progress::Step { step, ok, message } = p {
            if step == cutover::ops::Step::Apply && ok.is_none() && !applied {
                applied = true;
                at_apply();
            }
            seen.push(format!("{} {ok:?} {message}", step.label()));
        }
    }
    (task.await.expect("join"), seen)
}

fn step_names(o: &Outcome) -> Vec<String> {
    o.record.steps.iter().map(|s| s.step.clone()).collect()
}

#[tokio::test]
async fn warmup_requests_reach_the_target_slot_before_the_switch_and_never_the_public_url() {
    let logs = tempfile::tempdir().expect("tempdir");
    let log = logs.path().join("warm.log");
    let rig = Rig::blue_green(&format!(
            "warmup_paths = [\"/warm\", {{ path = \"/warm-many\", times = 3 }}]\n\
             warmup_command = [\"sh\", \"-c\", \"echo \\\"$0 $1 $2 $3 ${{CUTOVER_TEST_TOKEN:-clean}}\\\" >> {}\", \"{{env}}\", \"{{slot}}\", \"{{address}}\", \"{{version}}\"]\n\
             smoke_paths = [{{ path = \"/\", body_contains = \"Hello from\" }}]\n",
            log.display()
        ),
    )
    .await;
    let green = rig.slot("green").controls.clone();
    let at_apply = Arc::new(std::sync::Mutex::new(None));
    let (o, seen) = {
        let (green, at_apply) = (green.clone(), at_apply.clone());
        run_seeing_apply(rig.engine(), OpKind::Swap { to: None }, false, move || {
            *at_apply.lock().expect("lock") = Some((green.hits("/warm"), green.hits("/warm-many")));
        })
        .await
    };
    assert_eq!(o.verdict, Verdict::Done, "{}\n{seen:#?}", o.message);
    assert_eq!(
        *at_apply.lock().expect("lock"),
        Some((1, 3)),
        "every warm-up request reached green before the switch began"
    );
    assert_eq!(
        rig.slot("blue").controls.hits("/warm"),
        0,
        "nothing through the public URL"
    );
    assert_eq!(rig.slot("blue").controls.hits("/warm-many"), 0);
    assert_eq!(green.hits("/warm-many"), 3, "exactly `times` requests");
    assert_eq!(
        step_names(&o),
        ["plan", "gate", "warm-up", "apply", "verify", "smoke"]
    );
    let said = std::fs::read_to_string(&log).expect("the warm-up command ran");
    assert_eq!(
        said.trim(),
        format!("shop green {} 2.0.0 clean", rig.slot("green").url()),
        "placeholders filled, cutover's environment not passed"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("warm-up Some(true)")),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.starts_with("smoke Some(true)")),
        "{seen:#?}"
    );
    assert_eq!(rig.serving().await, "green");

    // A rollback runs the smoke test but never the warm-up.
    let o = run(&rig.engine(), OpKind::Rollback, false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    assert_eq!(step_names(&o), ["plan", "gate", "apply", "verify", "smoke"]);
    assert_eq!(rig.slot("blue").controls.hits("/warm"), 0);
    assert_eq!(green.hits("/warm"), 1);
}

#[tokio::test]
async fn a_failed_warmup_refuses_the_swap_and_leaves_traffic_where_it_was() {
    let (rig, o, seen) = swap_on(
        // Green answers 200, never the 201 asked for.
        "warmup_paths = [{ path = \"/warm\", expect_status = 201 }]\nwarmup_timeout = \"1s\"\n",
        Verdict::Refused,
    )
    .await;
    common::assert_contains_all(
        &o.message,
        &[
            "warm-up of `green` failed",
            "201",
            "traffic stays on `blue`",
            "--force",
        ],
    );
    assert!(!o.message.contains("  "), "{}", o.message);
    assert_eq!(step_names(&o), ["plan", "gate", "warm-up"]);
    assert!(
        seen.iter().any(|l| l.contains("warm-up of `green` failed")),
        "{seen:#?}"
    );
    assert_eq!(rig.serving().await, "blue", "nothing changed");
    assert!(rig.slot("green").controls.hits("/warm") >= 1);
    let records = audit_records(&rig);
    assert!(
        !records.iter().any(|r| r["result"] == "started"),
        "no intent record: no router was touched: {records:?}"
    );
    assert!(
        records.iter().any(|r| r["result"] == "refused"),
        "{records:?}"
    );
    // Forced, it goes past the warm-up as past a gate check.
    let o = run(&rig.engine(), OpKind::Swap { to: None }, true, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    assert!(
        o.record
            .steps
            .iter()
            .any(|s| s.step == "warm-up" && s.ok && s.detail.starts_with("FORCED past")),
        "{:?}",
        o.record.steps
    );
    assert_eq!(rig.serving().await, "green");
}

#[tokio::test]
async fn a_smoke_command_failing_after_the_switch_rolls_back_automatically() {
    let logs = tempfile::tempdir().expect("tempdir");
    let seen_by_smoke = logs.path().join("smoke.log");
    let on_rollback = logs.path().join("on_rollback.log");
    let rig = Rig::blue_green(&format!(
            "auto_rollback = true\n\
             smoke = [\"sh\", \"-c\", \"echo $1 $2 >> {}; echo login as admin password=hunter2; echo Authorization: Bearer abc123xyz >&2; exit 1\", \"smoke\", \"{{slot}}\", \"{{public_url}}\"]\n\
             on_rollback = [\"sh\", \"-c\", \"echo \\\"$*\\\" >> {}\", \"on_rollback\", \"{{result}}\", \"{{operation}}\", \"{{to}}\", \"{{live}}\"]\n",
            seen_by_smoke.display(),
            on_rollback.display()
        ),
    )
    .await;
    let (o, seen) = common::run_op_ends(
        &rig.engine(),
        OpKind::Swap { to: None },
        Verdict::RolledBack,
    )
    .await;
    common::assert_contains_all(
        &o.message,
        &[
            "the smoke test of `green` failed",
            "exited with 1",
            "rolled back to `blue` automatically",
        ],
    );
    assert_eq!(
        rig.serving().await,
        "blue",
        "traffic is back on the old slot"
    );
    // on_rollback ran once, after the rollback: {to} is the slot that failed, {live} the
    // routers' live slot now.
    assert_eq!(
        std::fs::read_to_string(&on_rollback)
            .expect("on_rollback ran")
            .trim(),
        "rolled-back swap (auto-rollback) green blue"
    );
    // The smoke test ran after the switch, against the public URL.
    let said = std::fs::read_to_string(&seen_by_smoke).expect("smoke ran");
    assert_eq!(said.trim(), format!("green http://127.0.0.1:{}/", rig.live));
    let steps: Vec<(String, bool)> = o
        .record
        .steps
        .iter()
        .map(|s| (s.step.clone(), s.ok))
        .collect();
    assert_eq!(
        steps,
        [
            ("plan", true),
            ("gate", true),
            ("apply", true),
            ("verify", true),
            ("smoke", false),
            ("apply", true),
            ("hook", true)
        ]
        .map(|(s, ok)| (s.to_string(), ok))
    );
    // The audit log says why, and none of the secrets the command printed.
    let records = audit_records(&rig);
    let last = records.last().expect("a record");
    assert_eq!(last["result"], "rolled-back");
    assert_eq!(last["operation"], "swap (auto-rollback)");
    assert!(
        last["message"]
            .as_str()
            .is_some_and(|m| m.contains("smoke test of `green` failed")),
        "{last}"
    );
    let text = rig.audit_text();
    assert!(
        text.contains("login as admin"),
        "the output's last lines are kept: {text}"
    );
    for secret in ["hunter2", "abc123xyz"] {
        assert!(!text.contains(secret), "{secret} in the audit log: {text}");
        assert!(
            !seen.iter().any(|l| l.contains(secret)) && !o.message.contains(secret),
            "{secret} in the event pane: {seen:#?}"
        );
    }
}

#[tokio::test]
async fn a_failed_smoke_test_without_auto_rollback_raises_the_alarm_naming_the_key() {
    let (rig, o, _) = swap_on(
        "smoke_paths = [{ path = \"/\", body_contains = \"never in the body\" }]\n",
        Verdict::Alarm,
    )
    .await;
    common::assert_contains_all(
        &o.message,
        &[
            "smoke test of `green` failed",
            "never in the body",
            "cutover rollback shop",
        ],
    );
    assert_eq!(rig.serving().await, "green", "no automatic rollback");
}

#[tokio::test]
async fn on_done_runs_once_per_successful_swap_with_the_documented_placeholders() {
    let logs = tempfile::tempdir().expect("tempdir");
    let (done, failed) = (logs.path().join("done.log"), logs.path().join("failed.log"));
    let rig = Rig::blue_green(&format!(
            "on_done = [\"sh\", \"-c\", \"echo \\\"$*\\\" >> {}\", \"on_done\", \"{{env}}\", \"{{operation}}\", \"{{id}}\", \"{{from}}\", \"{{to}}\", \"{{version}}\", \"{{result}}\"]\n\
             on_failed = [\"sh\", \"-c\", \"echo \\\"$*\\\" >> {}\", \"on_failed\", \"{{result}}\"]\n",
            done.display(),
            failed.display()
        ),
    )
    .await;
    let lines = || {
        std::fs::read_to_string(&done)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let (o, _) = common::run_op_ends(&rig.engine(), OpKind::Swap { to: None }, Verdict::Done).await;
    assert_eq!(
        lines(),
        [format!("shop swap {} blue green 2.0.0 done", o.record.id)]
    );
    let hook = o.record.steps.last().expect("steps");
    assert_eq!((hook.step.as_str(), hook.ok), ("hook", true), "{hook:?}");
    // A refused swap and a rollback do not run it.
    let o = run(&rig.engine(), common::swap_to("green"), false, false).await;
    assert_eq!(o.verdict, Verdict::Refused, "{}", o.message);
    let o = run(&rig.engine(), OpKind::Rollback, false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    assert_eq!(lines().len(), 1, "{:?}", lines());
    // The next swap runs it once more.
    let (o, _) = common::run_op_ends(&rig.engine(), OpKind::Swap { to: None }, Verdict::Done).await;
    assert_eq!(lines().len(), 2, "{:?}", lines());
    assert!(!failed.exists(), "on_failed ran for a success");
    // The record written to the audit log carries the hook's step.
    let records = audit_records(&rig);
    let last = records.last().expect("a record");
    assert_eq!(last["id"].as_str(), Some(o.record.id.as_str()));
    assert!(
        last["steps"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| s["step"] == "hook")),
        "{last}"
    );
}

#[tokio::test]
async fn a_failing_after_hook_is_recorded_and_never_changes_the_result() {
    let (rig, o, seen) = swap_on(
        "on_done = [\"sh\", \"-c\", \"echo chat says api_key=sk-live-999 >&2; exit 7\"]\n",
        Verdict::Done,
    )
    .await;
    assert_eq!(rig.serving().await, "green");
    let hook = o.record.steps.last().expect("steps");
    assert_eq!(hook.step, "hook");
    assert!(!hook.ok);
    assert!(
        hook.detail.contains("on_done failed (the result stands)")
            && hook.detail.contains("exited with 7")
            && hook.detail.contains("api_key=***"),
        "{hook:?}"
    );
    assert!(!rig.audit_text().contains("sk-live-999"));
    assert!(!seen.iter().any(|l| l.contains("sk-live-999")), "{seen:#?}");
}

#[tokio::test]
async fn the_cli_shows_the_hook_steps_and_check_validates_the_commands() {
    let logs = tempfile::tempdir().expect("tempdir");
    let not_executable = logs.path().join("notify.sh");
    std::fs::write(&not_executable, "#!/bin/sh\necho hi\n").expect("write");
    let rig = Arc::new(
        Rig::blue_green(&format!(
                "warmup_paths = [\"/warm\"]\nsmoke = [\"sh\", \"-c\", \"echo smoke ok for $0\", \"{{slot}}\"]\n\
                 on_failed = [\"{}\"]\n",
                not_executable.display()
            ),
        )
        .await,
    );
    let cli = |args: Vec<&'static str>| {
        let rig = rig.clone();
        tokio::task::spawn_blocking(move || rig.cli(&args))
    };
    // check: the missing executable bit is a failed check, named.
    let o = cli(vec!["check"]).await.expect("join");
    common::failed_check(&o, "hook on_failed", "is not executable");
    let out = printed(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok") && l.contains("hook smoke") && l.contains("executable")),
        "{out}"
    );
    // swap: the steps on stderr, in order.
    let o = cli(vec!["swap", "shop", "--yes", "--no-watch"])
        .await
        .expect("join");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    let at = |prefix: &str| {
        err.lines()
            .position(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line: {err}"))
    };
    assert!(
        at("gate    ok") < at("warm-up ok") && at("warm-up ok") < at("apply   ok"),
        "{err}"
    );
    assert!(at("verify  ok") < at("smoke   ok"), "{err}");
    assert!(
        err.contains("smoke ok for green"),
        "the command's output is shown: {err}"
    );
    // rollback --json: the steps in the record; no warm-up on the way back.
    let o = cli(vec!["rollback", "shop", "--yes", "--no-watch", "--json"])
        .await
        .expect("join");
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let steps: Vec<&str> = v["record"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert_eq!(steps, ["plan", "gate", "apply", "verify", "smoke"], "{v}");
    assert_eq!(rig.serving().await, "blue");
}

#[tokio::test]
async fn a_quit_during_the_warmup_stops_it_at_once_with_nothing_changed() {
    let rig =
        Rig::blue_green("warmup_paths = [\"/slow?ms=20000\"]\nwarmup_timeout = \"60s\"\n").await;
    let e = rig.engine();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (cancel_tx, cancel) = watch::channel(cutover::ops::Interrupt::None);
    let req = OpRequest {
        watch: false,
        ..OpRequest::new(OpKind::Swap { to: None })
    };
    let task = tokio::spawn(async move { e.run(req, GateSource::ProbeNow, tx, cancel).await });
    // Quit once the slow warm-up request is on its way.
    while let Some(p) = rx.recv().await {
        if let cutover::ops::Progress::Step {
            step: cutover::ops::Step::Warmup,
            ok: None,
            message,
        } = p
            && message.starts_with("GET ")
        {
            cancel_tx
                .send(cutover::ops::Interrupt::Quit)
                .expect("the operation listens");
            break;
        }
    }
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    let o = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("the warm-up stopped long before its 20 s request")
        .expect("join");
    assert_eq!(o.verdict, Verdict::Cancelled, "{}", o.message);
    common::assert_contains(&o.message, "stopped during the warm-up");
    assert_eq!(rig.serving().await, "blue");
    assert!(
        !audit_records(&rig).iter().any(|r| r["result"] == "started"),
        "no router was touched"
    );
}

fn canary(to: &str, steps: &[u8]) -> OpKind {
    OpKind::Canary {
        to: to.into(),
        steps: steps
            .iter()
            .map(|&p| cutover::model::CanaryStep::Weight(p))
            .collect(),
        interval: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_steps_through_its_plan_and_ends_with_a_swap() {
    let rig = Rig::blue_green("canary_pause = \"5s\"\n").await;
    let e = rig.engine();
    let (task, mut rx, _cancel) = common::start_op(&e, canary("green", &[10, 50, 100]));
    common::step_done(
        &mut rx,
        "step 1/3 (10 %): every router sends 10 % to `green`",
    )
    .await;
    let w = rig._proxy.state().weights.expect("a split at step 1");
    assert_eq!((w.canary.as_str(), w.canary_percent), ("green", 10));
    // `cutover status` shows the split (and --json has it as `weights`).
    let rig_ref = &rig;
    let o = tokio::task::block_in_place(|| rig_ref.cli(&["status", "shop"]));
    assert!(
        printed(&o).contains("canary: blue 90 % / green 10 %"),
        "{}",
        printed(&o)
    );
    let o = tokio::task::block_in_place(|| rig_ref.cli(&["status", "shop", "--json"]));
    assert!(
        printed(&o).contains("\"canary_percent\": 10"),
        "{}",
        printed(&o)
    );
    common::step_done(
        &mut rx,
        "step 2/3 (50 %): every router sends 50 % to `green`",
    )
    .await;
    let out = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the canary ends")
        .expect("task");
    common::assert_verdict(&out, Verdict::Done);
    assert_eq!(rig.serving().await, "green");
    let st = rig._proxy.state();
    assert_eq!((st.live.as_deref(), st.weights), (Some("green"), None));
    assert_eq!(e.store.env("shop").previous_live.as_deref(), Some("blue"));
    let audit = rig.audit_text();
    common::assert_contains(&audit, "\"operation\":\"canary\"");
    common::assert_contains(&audit, "step 2/3 (50 %): `green` passed");
    assert!(e.store.journal("shop").is_none(), "the journal is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_canary_is_aborted_back_to_zero_with_the_reason_recorded() {
    let rig = Rig::blue_green("canary_pause = \"30s\"\ncanary_max_error_rate = 0.01\n").await;
    let e = rig.engine();
    let (task, mut rx, _cancel) = common::start_op(&e, canary("green", &[25, 100]));
    common::step_done(&mut rx, "every router sends 25 % to `green`").await;
    // Green starts answering 500 on /health; the public load on that path reaches it.
    rig.slot("green").controls.set_healthy(false);
    let url = format!("http://127.0.0.1:{}/health", rig.live);
    let out = common::under_load(url, task).await;
    eprintln!("canary abort: {}", out.message);
    common::assert_verdict(&out, Verdict::RolledBack);
    assert!(
        out.message.contains("step 1/2 (25 %) failed")
            && out.message.contains("aborted; 100 % on blue after"),
        "{}",
        out.message
    );
    let st = rig._proxy.state();
    assert_eq!((st.live.as_deref(), st.weights), (Some("blue"), None));
    rig.slot("green").controls.set_healthy(true);
    for _ in 0..20 {
        assert_eq!(rig.serving().await, "blue");
    }
    assert!(rig.audit_text().contains("aborted; 100 % on blue"));
    assert!(e.store.journal("shop").is_none(), "the journal is closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_canary_puts_everything_back_and_the_cli_runs_one() {
    let rig = Rig::blue_green("canary_pause = \"30s\"\n").await;
    let e = rig.engine();
    let (task, mut rx, cancel) = common::start_op(&e, canary("green", &[5, 100]));
    common::step_done(&mut rx, "every router sends 5 % to `green`").await;
    cancel
        .send(cutover::ops::Interrupt::Quit)
        .expect("the canary listens");
    let out = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the canary ends")
        .expect("task");
    common::assert_verdict(&out, Verdict::RolledBack);
    common::assert_contains(&out.message, "cutover quit");
    assert_eq!(rig._proxy.state().weights, None);

    // The CLI: bad steps are a usage error; a short plan runs to the swap.
    let o = rig.cli(&[
        "canary", "shop", "--to", "green", "--steps", "0,100", "--yes",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", printed(&o));
    let text = std::fs::read_to_string(&rig.config_path)
        .expect("config")
        .replace("canary_pause = \"30s\"", "canary_pause = \"1s\"");
    std::fs::write(&rig.config_path, text).expect("write config");
    let rig_ref = &rig;
    let o = tokio::task::block_in_place(|| {
        rig_ref.cli(&[
            "canary",
            "shop",
            "--to",
            "green",
            "--steps",
            "50%,100",
            "--yes",
            "--no-watch",
        ])
    });
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert!(printed(&o).contains("step 1/2 (50 %)"), "{}", printed(&o));
    assert_eq!(rig.serving().await, "green");
}

/// `cutover canary shop --promote` in another process: its output.
async fn promote(rig: &Arc<Rig>) -> Output {
    steer(rig, "--promote").await
}

/// `cutover canary shop FLAG` (`--promote`, `--pause`, `--resume`) in another process.
async fn steer(rig: &Arc<Rig>, flag: &'static str) -> Output {
    let rig = rig.clone();
    tokio::task::spawn_blocking(move || rig.cli(&["canary", "shop", flag]))
        .await
        .expect("cli")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_ends_a_canary_steps_hold_from_another_process() {
    let rig = Arc::new(Rig::blue_green("canary_pause = \"600s\"\n").await);
    let o = promote(&rig).await;
    assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
    assert!(
        printed(&o).contains("no canary is running"),
        "{}",
        printed(&o)
    );

    let started = std::time::Instant::now();
    let mut a = {
        let rig = rig.clone();
        tokio::task::spawn_blocking(move || {
            let mut a = Background::start(
                &rig,
                &[
                    "canary",
                    "shop",
                    "--to",
                    "green",
                    "--steps",
                    "10,20,100",
                    "--yes",
                    "--no-watch",
                ],
            );
            a.wait_for("watch   ...  step 1/3");
            a
        })
        .await
        .expect("the canary holds step 1")
    };
    let o = promote(&rig).await;
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    a = tokio::task::spawn_blocking(move || {
        a.wait_for("watch   ...  step 2/3");
        a
    })
    .await
    .expect("the canary holds step 2");
    assert_eq!(
        rig._proxy.state().weights.map(|w| w.canary_percent),
        Some(20)
    );
    // Pause and resume from another process: the canary says so, as decisions (`!`).
    for (flag, said) in [
        (
            "--pause",
            "watch   !    step 2/3 (20 %): paused by the operator",
        ),
        (
            "--resume",
            "watch   !    step 2/3 (20 %): resumed by the operator",
        ),
    ] {
        let o = steer(&rig, flag).await;
        assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
        a = tokio::task::spawn_blocking(move || {
            a.wait_for(said);
            a
        })
        .await
        .expect("the canary answers");
    }
    let o = promote(&rig).await;
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let (code, text) = a.finished().await;
    assert_eq!(code, Some(0), "{text}");
    common::assert_contains(&text, "step 1/3 (10 %): promoted by the operator");
    assert!(
        started.elapsed() < Duration::from_secs(300),
        "the 600 s holds were cut short"
    );
    assert_eq!(rig.serving().await, "green");
}
