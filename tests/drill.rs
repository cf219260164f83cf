//! `cutover drill` against the embedded proxy: zero failed requests across swap+rollback
//! pairs, both slots seen, every switch timed; and the refusals.
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
    for s in slots {
        text.push_str(&format!(
            "[[environment.slot]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            s.controls.name,
            s.url()
        ));
    }
    text.push_str(&format!(
        "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{admin}\"\n\
         live_listen = \"127.0.0.1:{live}\"\nstate_file = \"{}\"\n",
        dir.join("proxy.json").display()
    ));
    let p = dir.join("cutover.toml");
    std::fs::write(&p, text).expect("write");
    (p, live)
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
    let slots = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let d = tempfile::tempdir().expect("tempdir");
    let (path, live) = demo_like(d.path(), &slots, false);
    let (cfg, _proxy) = start_proxy(&path, live).await;
    let world = cutover::tui::World::build(cfg, None).expect("world");
    let opts = cutover::drill::DrillOptions {
        concurrency: 16,
        requests: 15_000,
        duration: Duration::from_secs(40),
        pairs: 5,
        keep_alive: true,
        path: "/".into(),
        pause: Duration::from_millis(150),
        yes_really: false,
    };
    let r = cutover::drill::run(&world.engines[0], &opts)
        .await
        .expect("drill");
    assert_eq!(
        r.failed, 0,
        "failed requests: {:?} {:?}",
        r.failures, r.first_errors
    );
    assert!(r.failed_operations.is_empty(), "{:?}", r.failed_operations);
    assert_eq!(r.switches.len(), 10, "5 pairs = 10 switches");
    assert!(
        r.by_slot.get("blue").copied().unwrap_or(0) > 0
            && r.by_slot.get("green").copied().unwrap_or(0) > 0,
        "{:?}",
        r.by_slot
    );
    assert_eq!(r.sent, r.ok);
    assert!(
        r.switches.iter().all(|s| s.first_new_ms.is_some()),
        "every switch reached the clients: {:?}",
        r.switches
    );
}

#[test]
fn a_drill_refuses_production_without_yes_really() {
    let rt = tokio::runtime::Runtime::new().expect("rt");
    let d = tempfile::tempdir().expect("tempdir");
    let slots = rt.block_on(common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]));
    let (path, _) = demo_like(d.path(), &slots, true);
    let o = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args([
            "--config",
            path.to_str().expect("utf8"),
            "drill",
            "shop",
            "--requests",
            "10",
        ])
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
    let slots = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let d = tempfile::tempdir().expect("tempdir");
    let (path, live) = demo_like(d.path(), &slots, false);
    let (_, _proxy) = start_proxy(&path, live).await;
    let text = std::fs::read_to_string(&path).expect("config text");
    let env_only = &text[text.find("[[environment]]").expect("environment")..];
    common::bench_drill("embedded", env_only).await;
}
