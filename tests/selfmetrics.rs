//! cutover's own metrics (`--metrics-listen`): fed by the same events as the TUI (the
//! watchers' probes and router reads, an operation's progress), served on loopback, checked by
//! `promtool check metrics` and by their values.

#![allow(clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, free_port, require_binary};
use cutover::config;
use cutover::envview::Seen;
use cutover::ops::{GateSource, Interrupt, OpRequest, Verdict};
use cutover::router::RouterConfig;
use cutover::selfmetrics::SelfMetrics;
use cutover::world::World;
use tokio::sync::{mpsc, watch};

async fn scrape(addr: std::net::SocketAddr) -> String {
    let r = cutover::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status().as_u16(), 200);
    r.text().await.expect("body")
}

fn has(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_metrics_show_health_versions_routers_and_operations() {
    let promtool = require_binary("own_metrics_pass_promtool", "promtool");
    let slots = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (live, admin) = (free_port(), free_port());
    let text = common::embedded_shop_config(dir.path(), &slots, "100ms", (live, admin), "", "");
    let cfg = config::parse(&text, std::path::Path::new("t.toml")).expect("config");
    let RouterConfig::Embedded(pc) = &cfg.environments[0].routers[0] else {
        panic!("embedded")
    };
    let _proxy = cutover::proxy::start(&cfg.environments[0], pc)
        .await
        .expect("proxy");
    let world = World::build(cfg.clone(), None).expect("world");

    // What the TUI's loop does: every event goes through the metrics first.
    let metrics = Arc::new(SelfMetrics::new(&cfg));
    let (listener, token) = cutover::selfmetrics::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop_tx, stop) = watch::channel(false);
    cutover::selfmetrics::serve(listener, metrics.clone(), token, stop.clone());
    let (tx, mut rx) = mpsc::unbounded_channel::<Seen>();
    world.spawn_watchers(tx.clone(), stop);
    let m = metrics.clone();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            m.observe(&ev);
        }
    });

    let ready = eventually(Duration::from_secs(10), || async {
        let t = scrape(addr).await;
        has(
            &t,
            "cutover_slot_health{env=\"shop\",slot=\"green\",state=\"up\"} 1",
        ) && has(
            &t,
            "cutover_slot_version_info{env=\"shop\",slot=\"green\",version=\"2.0.0\"} 1",
        ) && has(&t, "cutover_slot_live{env=\"shop\",slot=\"blue\"} 1")
            && has(&t, "cutover_routers_agree{env=\"shop\"} 1")
    })
    .await;
    assert!(ready, "{}", scrape(addr).await);

    // A swap, its progress reported as the TUI's runner does.
    let engine = world.engines[0].clone();
    let (ptx, mut prx) = mpsc::unbounded_channel();
    let (_cancel, cancelled) = watch::channel(Interrupt::None);
    let req = OpRequest::new(common::swap_to("green"));
    let id = req.id.clone();
    let forward = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(progress) = prx.recv().await {
                let _ = tx.send(Seen::Op {
                    env: 0,
                    id: id.clone(),
                    progress,
                });
            }
        })
    };
    let out = engine.run(req, GateSource::ProbeNow, ptx, cancelled).await;
    common::assert_verdict(&out, Verdict::Done);
    forward.await.expect("forwarded");

    let swapped = eventually(Duration::from_secs(10), || async {
        let t = scrape(addr).await;
        has(&t, "cutover_slot_live{env=\"shop\",slot=\"green\"} 1")
            && has(
                &t,
                "cutover_operation_duration_seconds_count{env=\"shop\",operation=\"swap\",verdict=\"done\"} 1",
            )
            && has(&t, "cutover_lock_held{env=\"shop\"} 0")
    })
    .await;
    let t = scrape(addr).await;
    assert!(swapped, "{t}");
    assert!(
        has(&t, "cutover_router_up{env=\"shop\",router=\"embedded\"} 1"),
        "{t}"
    );
    assert!(
        has(
            &t,
            "cutover_router_read_errors_total{env=\"shop\",router=\"embedded\"} 0"
        ),
        "{t}"
    );
    assert!(t.contains(
        "cutover_slot_probe_duration_seconds_bucket{env=\"shop\",slot=\"blue\",le=\"+Inf\"}"
    ));
    assert!(t.contains("cutover_events_total{kind=\"probe\"}"));
    common::assert_metrics_in_readme(&t);
    // The dashboard for these metrics: every series it asks for is served, and every query
    // is valid PromQL (promtool check rules parses them).
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../docs/grafana-cutover.json")).expect("JSON");
    // Sample names, and the declared ones (an info metric has no sample while nobody holds
    // the lock).
    let served: std::collections::BTreeSet<&str> = t
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if l.starts_with('#') => None,
            None => l.split(['{', ' ']).next(),
        })
        .collect();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    let mut n = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"]
                .as_str()
                .expect("expr")
                .replace("$env", "shop")
                .replace("$__rate_interval", "1m");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("cutover_") {
                    assert!(
                        served.contains(word),
                        "{}: `{word}` is not served",
                        panel["title"]
                    );
                }
            }
            rules += &format!("      - record: dashboard:q{n}\n        expr: '{expr}'\n");
            n += 1;
        }
    }
    let rules_file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&rules_file, rules).expect("write rules");
    if let Some(promtool) = &promtool {
        let mut check = std::process::Command::new(promtool);
        check.args(["check", "rules"]).arg(&rules_file);
        common::run_ok(&mut check, "promtool check rules (the dashboard's queries)");
        println!("{n} dashboard queries parse");
    }
    if let Some(promtool) = promtool {
        let (ok, said) = common::promtool_check(&promtool, &t);
        assert!(ok, "promtool check metrics refused:\n{said}\n{t}");
    }
    let _ = stop_tx.send(true);
}

#[tokio::test]
async fn a_metrics_listener_off_loopback_needs_a_token() {
    let (dir, path) = common::temp_file(
        "c.toml",
        "[[environment]]\nname = \"shop\"\n[[environment.slot]]\nname = \"blue\"\n\
         address = \"http://127.0.0.1:9\"\n[[environment.router]]\nkind = \"embedded\"\n",
    );
    let xdg = dir.path().join("xdg");
    let out = tokio::task::spawn_blocking(move || {
        let config = path.display().to_string();
        let args = ["--config", &config, "--metrics-listen", "0.0.0.0:0"];
        common::cutover_with_env(&xdg, &args, &[("CUTOVER_METRICS_TOKEN", None)])
    })
    .await
    .expect("join");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--metrics-listen 0.0.0.0:0 is not a loopback address")
            && err.contains("$CUTOVER_METRICS_TOKEN"),
        "{err}"
    );
}
