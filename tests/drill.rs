//! `cutover drill` against the embedded proxy: zero failed requests across swap+rollback
//! pairs, both slots seen, every switch timed; a load bound reached before the last switch
//! fails the drill; and the refusals.
#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use cutover::config;
use cutover::router::RouterConfig;

fn demo_like(
    dir: &std::path::Path,
    slots: &[common::SlotServer],
    production: bool,
) -> (std::path::PathBuf, u16) {
    let (live, admin) = (common::free_port(), common::free_port());
    let mut text = format!(
        "[settings]\ngate_checks = 1\nstate_dir = \"{}\"\n\n[[environment]]\nname = \"shop\"\n\
         production = {production}\npublic_url = \"http://127.0.0.1:{live}/\"\nwatch = \"0s\"\n\n",
        dir.join("state").display()
    );
    text.push_str(&common::server_slot_tables(slots, ""));
    text.push_str(&format!(
        "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{admin}\"\n\
         live_listen = \"127.0.0.1:{live}\"\nstate_file = \"{}\"\n",
        dir.join("proxy.json").display()
    ));
    let p = dir.join("cutover.toml");
    std::fs::write(&p, text).expect("write");
    (p, live)
}

/// Slot servers blue (1.0.0) and green (2.0.0), and a temp dir for the config and state.
async fn blue_green() -> (Vec<common::SlotServer>, tempfile::TempDir) {
    let slots = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    (slots, tempfile::tempdir().expect("tempdir"))
}

/// `cutover --config PATH drill shop` and `extra`.
fn drill_shop(path: &std::path::Path, extra: &[&str]) -> Vec<String> {
    let mut argv = ["--config", path.to_str().expect("utf8"), "drill", "shop"]
        .map(String::from)
        .to_vec();
    argv.extend(extra.iter().map(|a| a.to_string()));
    argv
}

/// The config at `path` and its embedded proxy, started and listening on `live`.
async fn start_proxy(
    path: &std::path::Path,
    live: u16,
) -> (config::Config, cutover::proxy::ProxyHandle) {
    let cfg = config::load(path).expect("config");
    let env = cfg.environments[0].clone();
    let RouterConfig::Embedded(pc) = &env.routers[0] else {
        panic!("embedded")
    };
    let proxy = cutover::proxy::start(&env, pc).await.expect("proxy");
    common::wait_port(live, Duration::from_secs(5)).await;
    (cfg, proxy)
}

#[tokio::test]
async fn a_drill_against_the_embedded_proxy_loses_no_request() {
    let (slots, d) = blue_green().await;
    let (path, live) = demo_like(d.path(), &slots, false);
    let (cfg, _proxy) = start_proxy(&path, live).await;
    let world = cutover::world::World::build(cfg, None).expect("world");
    let opts = cutover::drill::DrillOptions {
        concurrency: 16,
        // Ceilings far beyond any machine's need: the drill itself stops the load once the
        // clients have seen every switch, however long the switches take.
        requests: 50_000_000,
        duration: Duration::from_secs(240),
        pairs: 5,
        keep_alive: true,
        path: "/".into(),
        pause: Duration::from_millis(150),
        yes_really: false,
        canary: None,
    };
    let r = cutover::drill::run(&world.engines[0], &opts)
        .await
        .expect("drill");
    assert_eq!(
        r.load_ended,
        cutover::load::Ended::Stopped,
        "the drill, not a bound, ends the load: {:?}",
        r.unobserved
    );
    assert!(r.unobserved.is_empty(), "{:?}", r.unobserved);
    assert_eq!(
        r.failed, 0,
        "failed requests: {:?} {:?}",
        r.failures, r.first_errors
    );
    assert!(r.failed_operations.is_empty(), "{:?}", r.failed_operations);
    assert_eq!(r.switches.len(), 10, "5 pairs = 10 switches");
    common::assert_served_by(&r.by_slot, &["blue", "green"]);
    assert_eq!(r.sent, r.ok);
    assert!(
        r.switches.iter().all(|s| s.first_new_ms.is_some()),
        "every switch reached the clients: {:?}",
        r.switches
    );
    assert!(r.passed());
}

/// One request and one pair: two switches, one answer, and an answer comes from one slot, so
/// at least one switch cannot be seen whatever the machine's speed. The drill must say so and
/// exit 1 (it used to report "0 failed" and exit 0).
#[tokio::test]
async fn a_drill_whose_request_bound_comes_before_its_last_switch_fails_and_says_so() {
    let (slots, d) = blue_green().await;
    let (path, live) = demo_like(d.path(), &slots, false);
    let (_cfg, _proxy) = start_proxy(&path, live).await;
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(drill_shop(
            &path,
            &["--requests", "1", "--concurrency", "1", "--pairs", "1"],
        ))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let o = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the drill ends within its bounds")
        .expect("run");
    let out = common::printed(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("the load ended after 1 request (the --requests bound)")
            && out.contains("raise --requests")
            && (out.contains("was not observed") || out.contains("were not run"))
            && out.contains("drill FAILED"),
        "{out}"
    );
}

#[test]
fn a_drill_refuses_production_without_yes_really() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let d = tempfile::tempdir().expect("tempdir");
    let slots = rt.block_on(common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]));
    let (path, _) = demo_like(d.path(), &slots, true);
    let o = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(drill_shop(&path, &["--requests", "10"]))
        .stdin(Stdio::null())
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("production environment") && err.contains("--yes-really"),
        "{err}"
    );
}

/// scripts/bench: `cargo test --release --test drill -- --ignored bench_ --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_drill_embedded() {
    let (slots, d) = blue_green().await;
    let (path, live) = demo_like(d.path(), &slots, false);
    // The proxy in its own process, as operators run it and as every other drill's proxy
    // runs: on this test's runtime, the load generator's 64 connections and the slots would
    // share its workers, and the switch would measure their scheduling.
    let cfg = config::load(&path).expect("config");
    let RouterConfig::Embedded(pc) = &cfg.environments[0].routers[0] else {
        panic!("embedded")
    };
    let admin: std::net::SocketAddr = pc.admin.parse().expect("admin address");
    let log = std::fs::File::create(d.path().join("proxy.log")).expect("log");
    let _proxy = common::ChildGuard::spawn(
        "cutover proxy",
        std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
            .arg("--config")
            .arg(&path)
            .arg("proxy")
            .env("XDG_STATE_HOME", d.path().join("xdg-state"))
            .env_remove("CUTOVER_CONFIG")
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    );
    for port in [live, admin.port()] {
        common::wait_port(port, Duration::from_secs(10)).await;
    }
    let text = std::fs::read_to_string(&path).expect("config text");
    let env_only = &text[text.find("[[environment]]").expect("environment")..];
    common::bench_drill("embedded", env_only).await;
}
