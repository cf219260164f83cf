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
use cutover::config::{self, Config};
use cutover::ops::{Engine, GateSource, OpKind, OpRequest, Outcome, Verdict};
use cutover::proxy::ProxyHandle;
use cutover::router::RouterConfig;
use cutover::slotserver::SlotServer;
use cutover::tui::World;
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
    async fn start(versions: &[(&str, &str)], extra_env: &str) -> Rig {
        // SAFETY-free: tests in this file all use the same token value.
        unsafe { std::env::set_var("CUTOVER_TEST_TOKEN", TOKEN) };
        let slots = common::slots(versions).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (live, preview, admin) = (
            common::free_port(),
            common::free_port(),
            common::free_port(),
        );
        let mut text = format!(
            "[settings]\npoll_interval = \"200ms\"\ntimeout = \"500ms\"\ngate_checks = 2\n\
             state_dir = \"{state}\"\n\n[[environment]]\nname = \"shop\"\n\
             public_url = \"http://127.0.0.1:{live}/\"\nwatch = \"0s\"\nverify_timeout = \"3s\"\n{extra_env}\n",
            state = dir.path().join("state").display()
        );
        for s in &slots {
            text.push_str(&format!(
                "[[environment.slot]]\nname = \"{}\"\naddress = \"{}\"\nversion_pointer = \"/version\"\n\n",
                s.controls.name,
                s.url()
            ));
        }
        text.push_str(&format!(
            "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{admin}\"\n\
             live_listen = \"127.0.0.1:{live}\"\npreview_listen = \"127.0.0.1:{preview}\"\n\
             initial_live = \"{}\"\ninitial_preview = \"{}\"\ntoken_env = \"CUTOVER_TEST_TOKEN\"\n\
             state_file = \"{}\"\n",
            versions[0].0,
            versions[1].0,
            dir.path().join("proxy.json").display()
        ));
        let config_path = dir.path().join("cutover.toml");
        std::fs::write(&config_path, &text).expect("write config");
        let config = config::load(&config_path).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let env = &config.environments[0];
        let Some(RouterConfig::Embedded(pc)) = env.routers.first() else {
            panic!("no embedded router")
        };
        let proxy = cutover::proxy::start(env, pc).await.expect("start proxy");
        common::wait_port(live, Duration::from_secs(5)).await;
        Rig {
            dir,
            config,
            config_path,
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

    fn cli(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .env("CUTOVER_TEST_TOKEN", TOKEN)
            .env("XDG_STATE_HOME", self.dir.path().join("xdg"))
            .stdin(Stdio::null())
            .output()
            .expect("run cutover")
    }
}

async fn run(engine: &Engine, kind: OpKind, force: bool, watch_it: bool) -> Outcome {
    common::run_op(engine, kind, force, watch_it).await.0
}

#[tokio::test]
async fn swap_passes_the_gate_switches_and_records_the_previous_live_slot() {
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], "").await;
    let e = rig.engine();
    assert_eq!(rig.serving().await, "blue");
    let o = run(&e, OpKind::Swap { to: None }, false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    assert_eq!(rig.serving().await, "green");
    assert_eq!(e.store.env("shop").previous_live.as_deref(), Some("blue"));
    // The swap exchanged the roles: blue is now the preview.
    let s = e.observe_all().await.expect("observe");
    assert_eq!(s[0].preview.as_deref(), Some("blue"));
    // And rollback takes it back.
    let o = run(&e, OpKind::Rollback, false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    assert_eq!(rig.serving().await, "blue");
}

#[tokio::test]
async fn an_unhealthy_target_is_refused_with_the_reason_and_force_goes_past() {
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], "").await;
    rig.slot("green").controls.set_healthy(false);
    let e = rig.engine();
    let o = run(&e, OpKind::Swap { to: None }, false, false).await;
    assert_eq!(o.verdict, Verdict::Refused);
    assert!(
        o.message.contains("`green` needs 2 healthy checks"),
        "{}",
        o.message
    );
    assert!(o.message.contains("--force"), "{}", o.message);
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
    assert!(
        o.message.contains("same version as live (1.0.0)"),
        "{}",
        o.message
    );
    let o = run(&e, OpKind::Swap { to: None }, true, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
}

#[tokio::test]
async fn an_unknown_version_is_refused() {
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], "").await;
    let mut cfg = rig.config.clone();
    cfg.environments[0].slots[1].version_url = format!("{}/nope", rig.slot("green").url());
    let e = World::build(cfg, None).expect("world").engines[0].clone();
    let o = run(&e, OpKind::Swap { to: None }, false, false).await;
    assert_eq!(o.verdict, Verdict::Refused);
    assert!(o.message.contains("version is unknown"), "{}", o.message);
}

/// A watched swap to green (watch window `watch_for`); green turns unhealthy as soon as the
/// watch starts.
async fn swap_with_green_failing_while_watched(rig: &Rig, watch_for: Duration) -> Outcome {
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
    task.await.expect("join")
}

#[tokio::test]
async fn auto_rollback_when_the_new_slot_fails_while_watched() {
    let rig = Rig::start(
        &[("blue", "1.0.0"), ("green", "2.0.0")],
        "auto_rollback = true",
    )
    .await;
    let o = swap_with_green_failing_while_watched(&rig, Duration::from_secs(8)).await;
    assert_eq!(o.verdict, Verdict::RolledBack, "{}", o.message);
    assert!(o.message.contains("rolled back to `blue`"), "{}", o.message);
    assert_eq!(rig.serving().await, "blue");
}

#[tokio::test]
async fn without_auto_rollback_a_failing_watch_raises_an_alarm_naming_the_key() {
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], "").await;
    let o = swap_with_green_failing_while_watched(&rig, Duration::from_secs(6)).await;
    assert_eq!(o.verdict, Verdict::Alarm, "{}", o.message);
    assert!(o.message.contains("press r"), "{}", o.message);
    assert_eq!(rig.serving().await, "green", "no automatic rollback");
}

#[tokio::test]
async fn rollback_is_refused_when_the_old_slot_is_down() {
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], "").await;
    let e = rig.engine();
    let o = run(&e, OpKind::Swap { to: None }, false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    rig.slot("blue").controls.set_healthy(false);
    let o = run(&e, OpKind::Rollback, false, false).await;
    assert_eq!(o.verdict, Verdict::Refused);
    assert!(o.message.contains("`blue` needs"), "{}", o.message);
    assert_eq!(rig.serving().await, "green");
}

#[tokio::test]
async fn rollback_with_nothing_recorded_says_so() {
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], "").await;
    let o = run(&rig.engine(), OpKind::Rollback, false, false).await;
    assert_eq!(o.verdict, Verdict::Refused);
    assert!(o.message.contains("no previous live slot"), "{}", o.message);
}

#[tokio::test]
async fn drain_waits_for_the_in_flight_request_and_undrain_restores() {
    let rig = Rig::start(
        &[("blue", "1.0.0"), ("green", "2.0.0"), ("staging", "3.0.0")],
        "",
    )
    .await;
    let e = rig.engine();
    // Make staging live through a swap, start a slow request on it, swap back, then drain it.
    let o = run(
        &e,
        OpKind::Swap {
            to: Some("staging".into()),
        },
        false,
        false,
    )
    .await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    let url = format!("http://127.0.0.1:{}/slow?ms=1500", rig.live);
    let slow = tokio::spawn(async move { common::get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let o = run(
        &e,
        OpKind::Swap {
            to: Some("blue".into()),
        },
        true,
        false,
    )
    .await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    let o = run(
        &e,
        OpKind::Drain(cutover::router::Target::slot("staging")),
        false,
        false,
    )
    .await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    assert!(o.message.contains("no requests in flight"), "{}", o.message);
    let (status, slot, _) = slow.await.expect("join");
    assert_eq!(
        (status, slot.as_str()),
        (200, "staging"),
        "the in-flight request finished on the old slot"
    );
    let o = run(
        &e,
        OpKind::Undrain(cutover::router::Target::slot("staging")),
        false,
        false,
    )
    .await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
}

#[tokio::test]
async fn maintenance_on_and_off() {
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], "").await;
    let e = rig.engine();
    let on = OpKind::Maintenance {
        on: true,
        mode: cutover::model::MaintenanceMode::Page,
    };
    let o = run(&e, on, false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    let (status, _, _) = common::get(&format!("http://127.0.0.1:{}/", rig.live)).await;
    assert_eq!(status, 503);
    let off = OpKind::Maintenance {
        on: false,
        mode: cutover::model::MaintenanceMode::Page,
    };
    let o = run(&e, off, false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    assert_eq!(rig.serving().await, "blue");
}

#[tokio::test]
async fn audit_records_have_the_fields_and_no_secrets() {
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], "").await;
    let e = rig.engine();
    let o = run(&e, OpKind::Swap { to: None }, false, false).await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
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
    let rig = Rig::start(&[("blue", "1.0.0"), ("green", "2.0.0")], "").await;
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
