//! The traffic view against real routers: the embedded proxy's p50/p99 under a slow slot, and
//! a fleet of two embedded proxies whose counters the screen sums.
//!
//! Every proxy listens on 127.0.0.1 on free ports, keeps its state file in a temp dir and is
//! stopped by the test; every load is bounded in count and time. The readings are real
//! `observe()` answers of the `embedded` driver, fed to the App with the times the test gives
//! them, so the rates are exact and nothing depends on the machine's speed.

#![allow(clippy::expect_used)]

mod common;

use std::time::{Duration, SystemTime};

use common::{SlotServer, free_port, slots};
use cutover::app::{App, Event};
use cutover::config;
use cutover::envview::Seen;
use cutover::load::{self, LoadOptions, LoadReport};
use cutover::model::RouterState;
use cutover::proxy::{self, ProxyHandle};
use cutover::router::{Router, RouterConfig, embedded};
use cutover::state::EnvMemory;
use cutover::theme::Theme;
use tempfile::TempDir;

/// The whole config: one environment `shop` with the slots and `routers` embedded proxies
/// (`edge-1`, `edge-2`, ...), each on its own free ports and state file.
fn config_toml(servers: &[SlotServer], routers: usize, dir: &TempDir) -> String {
    let mut t = "[[environment]]\nname = \"shop\"\n".to_string();
    for s in servers {
        t += &format!(
            "\n[[environment.slot]]\nname = \"{}\"\naddress = \"{}\"\n",
            s.controls.name,
            s.url()
        );
    }
    for i in 1..=routers {
        t += &format!(
            "\n[[environment.router]]\nkind = \"embedded\"\nname = \"edge-{i}\"\n\
             admin = \"127.0.0.1:{}\"\nlive_listen = \"127.0.0.1:{}\"\nstate_file = \"{}\"\n",
            free_port(),
            free_port(),
            dir.path().join(format!("proxy-{i}.json")).display()
        );
    }
    t
}

/// blue (1.0.0) and green (2.0.0) behind `routers` embedded proxies, started, with their
/// drivers.
struct Edges {
    s: Vec<SlotServer>,
    cfg: config::Config,
    proxies: Vec<ProxyHandle>,
    drivers: Vec<embedded::Driver>,
    _dir: TempDir,
}

async fn edges(routers: usize) -> Edges {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let text = config_toml(&s, routers, &dir);
    let cfg = config::parse(&text, std::path::Path::new("traffic.toml")).expect("config");
    let env = &cfg.environments[0];
    let (mut proxies, mut drivers) = (Vec::new(), Vec::new());
    for (i, r) in env.routers.iter().enumerate() {
        let RouterConfig::Embedded(rc) = r else {
            panic!("not an embedded router")
        };
        proxies.push(proxy::start(env, rc).await.expect("proxy starts"));
        drivers.push(embedded::Driver::new(format!("edge-{}", i + 1), env, rc).expect("driver"));
    }
    Edges {
        s,
        cfg,
        proxies,
        drivers,
        _dir: dir,
    }
}

/// `n` requests to the proxy's live listener, `concurrency` at a time, within 60 s.
async fn load(h: &ProxyHandle, n: u64, concurrency: usize) -> LoadReport {
    let rep = load::run(LoadOptions {
        url: format!("http://{}/", h.live_addr()),
        concurrency,
        max_requests: n,
        max_duration: Duration::from_secs(60),
        keep_alive: true,
        timeout: Duration::from_secs(10),
    })
    .await;
    assert_eq!(rep.sent, n, "the load was cut short: {rep:?}");
    assert_eq!(rep.failed(), 0, "{:?}", rep.first_errors);
    rep
}

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

/// Feed one reading of router `router` to the app, taken at `t0 + secs`.
fn reading(app: &mut App, router: usize, secs: u64, result: Result<RouterState, String>) {
    let at = t0() + Duration::from_secs(secs);
    app.update(Event::Tick(at));
    app.update(Event::Seen(Seen::Router {
        env: 0,
        router,
        result,
        at,
    }));
}

fn screen(app: &mut App, w: u16, h: u16) -> String {
    common::draw_screen(app, w, h).0
}

/// The milliseconds in `p99 NNNms` / `p99 1.2s` on the screen's first line that has one.
fn p99_on_screen(text: &str) -> Option<f64> {
    let l = text.lines().find(|l| l.contains("p99 "))?;
    let v = l.split("p99 ").nth(1)?.split_whitespace().next()?;
    let v = v.trim_end_matches(['│', '…']);
    if let Some(us) = v.strip_suffix("µs") {
        us.parse::<f64>().ok().map(|us| us / 1000.0)
    } else if let Some(ms) = v.strip_suffix("ms") {
        ms.parse().ok()
    } else {
        v.strip_suffix('s')?.parse::<f64>().ok().map(|s| s * 1000.0)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_proxys_p99_shows_a_slow_slot_and_its_p50_stays_at_or_below_it() {
    let Edges {
        s,
        cfg,
        mut proxies,
        mut drivers,
        _dir,
    } = edges(1).await;
    let (h, d) = (proxies.remove(0), drivers.remove(0));

    let idle = d.observe().await.expect("observe");
    assert_eq!(idle.slots["blue"].percentiles, None, "no answer yet");

    // 200 quick answers, then 20 that each take at least SLOW: 9 % of the answers are slow,
    // so the p99 is one of them, and the p50 one of the quick ones.
    const SLOW: Duration = Duration::from_millis(400);
    load(&h, 200, 8).await;
    s[0].controls.set_delay(SLOW);
    let slow = load(&h, 20, 10).await;
    s[0].controls.set_delay(Duration::ZERO);
    let min_slow_us = slow.latencies_us.iter().min().copied().unwrap_or(0);
    assert!(
        min_slow_us >= SLOW.as_micros() as u64,
        "the client saw the delay"
    );

    let st = d.observe().await.expect("observe");
    let p = st.slots["blue"].percentiles.expect("blue's percentiles");
    eprintln!(
        "measured: blue p50 {} µs, p99 {} µs over {} answers (20 of them delayed {} ms)",
        p.p50_us,
        p.p99_us,
        p.answers,
        SLOW.as_millis()
    );
    assert!(
        p.p99_us >= SLOW.as_micros() as u64,
        "the p99 shows the slow answers: {p:?}"
    );
    assert!(p.p50_us <= p.p99_us, "{p:?}");
    // Every answer was within the window (the percentiles cover the last 10 s at least,
    // unless the load itself took longer: then only the newest are in it).
    if p.answers == 220 {
        assert!(
            p.p50_us < SLOW.as_micros() as u64,
            "most answers were quick, so the p50 is one of them: {p:?}"
        );
    }
    assert_eq!(st.slots["green"].percentiles, None, "green had no answer");

    // /metrics has them as gauges.
    let metrics = reqwest::get(format!("http://{}/metrics", h.admin_addr()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("cutover_proxy_recent_latency_seconds{")
                && l.contains("slot=\"blue\"")
                && l.contains("percentile=\"p99\"")
        })
        .expect("blue's p99 gauge");
    let secs: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!(secs >= SLOW.as_secs_f64(), "{line}");

    // The screen shows them in blue's column and beside the chart.
    let mut app = App::new(cfg.clone(), Theme::dark(), vec![EnvMemory::default()], t0());
    reading(&mut app, 0, 0, Ok(idle));
    reading(&mut app, 0, 10, Ok(st));
    let shown = screen(&mut app, 120, 40);
    assert!(shown.contains("22 req/s"), "220 requests in 10 s:\n{shown}");
    let ms = p99_on_screen(&shown).expect("a p99 on screen");
    assert!(ms >= SLOW.as_millis() as f64, "{ms} ms:\n{shown}");
    common::assert_contains(&shown, "p50 ");
    let narrow = screen(&mut app, 80, 24);
    assert!(
        p99_on_screen(&narrow).is_some_and(|ms| ms >= SLOW.as_millis() as f64),
        "at 80x24 the column keeps the p99:\n{narrow}"
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_of_two_embedded_proxies_shows_the_sum_and_the_slowest_routers_latency() {
    let Edges {
        s,
        cfg,
        mut proxies,
        drivers,
        _dir,
    } = edges(2).await;
    let mut app = App::new(cfg.clone(), Theme::dark(), vec![EnvMemory::default()], t0());
    for (i, d) in drivers.iter().enumerate() {
        reading(&mut app, i, 0, Ok(d.observe().await.expect("observe")));
    }

    // 300 requests through edge-1, quick; then 30 through edge-2 while blue is slow.
    const SLOW: Duration = Duration::from_millis(300);
    load(&proxies[0], 300, 8).await;
    s[0].controls.set_delay(SLOW);
    load(&proxies[1], 30, 10).await;
    s[0].controls.set_delay(Duration::ZERO);
    let states: Vec<RouterState> = {
        let mut v = Vec::new();
        for d in &drivers {
            v.push(d.observe().await.expect("observe"));
        }
        v
    };
    assert_eq!(states[0].slots["blue"].requests, Some(300));
    assert_eq!(states[1].slots["blue"].requests, Some(30));
    let slowest = states[1].slots["blue"].percentiles.expect("edge-2's p99");
    let quick = states[0].slots["blue"].percentiles.expect("edge-1's p99");
    assert!(slowest.p99_us >= SLOW.as_micros() as u64, "{slowest:?}");
    assert!(quick.p99_us < slowest.p99_us, "{quick:?} {slowest:?}");

    // Both readings 10 s after the first: 330 requests in 10 s on blue.
    reading(&mut app, 0, 10, Ok(states[0].clone()));
    reading(&mut app, 1, 10, Ok(states[1].clone()));
    let blue = &app.envs[0].slots[0].traffic;
    assert_eq!(blue.current().map(|c| c.rps), Some(33.0));
    assert_eq!(blue.percentiles, Some(slowest), "the slowest router's");
    assert_eq!(app.envs[0].counting_routers(), 2);
    let shown = screen(&mut app, 120, 40);
    common::assert_contains_all(
        &shown,
        &[
            "sum of 2 routers, latency of the slowest",
            "33 req/s",
            "33/s",
        ],
    );
    let ms = p99_on_screen(&shown).expect("a p99 on screen");
    assert!(ms >= SLOW.as_millis() as f64, "{ms}:\n{shown}");

    // edge-2 stops: the next readings are edge-1's alone, and the screen says edge-2 is not
    // read rather than showing its share as a fall in traffic.
    let stopped = proxies.pop().expect("edge-2");
    stopped.stop().await;
    load(&proxies[0], 100, 8).await;
    reading(
        &mut app,
        0,
        20,
        Ok(drivers[0].observe().await.expect("observe")),
    );
    let err = drivers[1]
        .observe()
        .await
        .expect_err("edge-2 is stopped")
        .to_string();
    reading(&mut app, 1, 20, Err(err));
    let blue = &app.envs[0].slots[0].traffic;
    assert_eq!(
        blue.current().map(|c| c.rps),
        Some(10.0),
        "edge-1's 100 in 10 s"
    );
    assert!(!blue.stale, "edge-1 still counts");
    let shown = screen(&mut app, 120, 40);
    common::assert_contains(&shown, "edge-2 (embedded)  ✘");
    common::assert_contains(&shown, "10 req/s");
    for h in proxies {
        h.stop().await;
    }
}
