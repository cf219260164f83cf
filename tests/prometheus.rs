//! The embedded proxy's `/metrics`, checked with the real Prometheus tools: `promtool check
//! metrics` on the exposition, and a `prometheus` server (unprivileged, on a free loopback
//! port, its own temp dir) scraping the admin listener with the admin token.
//!
//! Every load is bounded in count and time and goes to 127.0.0.1. Without `promtool` or
//! `prometheus` the tests say SKIPPED loudly, and fail with `CUTOVER_REQUIRE_PROXIES=1`.

#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{SlotServer, eventually, free_port, require_binary, slots};
use cutover::config::Environment;
use cutover::load::{self, LoadOptions, LoadReport};
use cutover::proxy::{self, ProxyHandle};
use cutover::router::{RouterConfig, embedded};
use reqwest::Method;
use tempfile::TempDir;

/// An environment `shop` with the slot servers behind one embedded router (all on port 0);
/// `extra` adds router keys.
fn world(servers: &[&SlotServer], extra: &str, dir: &TempDir) -> (Environment, embedded::Config) {
    let named: Vec<(String, String)> = servers
        .iter()
        .map(|s| (s.controls.name.clone(), s.url()))
        .collect();
    world_of(&named, extra, dir)
}

/// As [`world`], with slots given as (name, address).
fn world_of(
    slots: &[(String, String)],
    extra: &str,
    dir: &TempDir,
) -> (Environment, embedded::Config) {
    let mut t = "[[environment]]\nname = \"shop\"\n".to_string();
    for (name, address) in slots {
        t += &format!("\n[[environment.slot]]\nname = \"{name}\"\naddress = \"{address}\"\n");
    }
    t += &format!(
        "\n[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:0\"\n\
         live_listen = \"127.0.0.1:0\"\npreview_listen = \"127.0.0.1:0\"\n\
         state_file = \"{}\"\n{extra}\n",
        dir.path().join("proxy-state.json").display()
    );
    let env = common::environment(&t);
    let RouterConfig::Embedded(r) = env.routers[0].clone() else {
        panic!("not an embedded router")
    };
    (env, r)
}

/// The status `url` answers a `method` request with, sent with the bearer `token` (if any).
async fn status_of(method: Method, url: &str, token: Option<&str>) -> u16 {
    let mut req = client().request(method, url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("request").status().as_u16()
}

fn client() -> reqwest::Client {
    cutover::http_client()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn scrape(h: &ProxyHandle, token: Option<&str>) -> String {
    let mut req = client().get(format!("http://{}/metrics", h.admin_addr()));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("GET /metrics");
    assert_eq!(r.status().as_u16(), 200, "GET /metrics");
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    r.text().await.expect("metrics body")
}

async fn switch_live(h: &ProxyHandle, slot: &str, token: Option<&str>) {
    let mut req = client()
        .post(format!("http://{}/live", h.admin_addr()))
        .json(&serde_json::json!({ "slot": slot }));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("POST /live");
    assert_eq!(r.status().as_u16(), 200, "POST /live {slot}");
}

/// The samples of the exposition: (name, labels, value).
fn samples(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut v = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let value: f64 = value.parse().expect("a number");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (k, v) = l.split_once('=').expect("label=value");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        v.push((name.to_string(), labels, value));
    }
    v
}

/// The sum of `name`'s samples per value of label `by`.
fn sum_by(text: &str, name: &str, by: &str) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for (n, labels, value) in samples(text) {
        if n == name {
            *m.entry(labels.get(by).cloned().unwrap_or_default())
                .or_insert(0.0) += value;
        }
    }
    m
}

fn value(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .find(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no sample {name}{want:?} in:\n{text}"))
        .2
}

fn bounded_load(url: String, n: u64) -> LoadOptions {
    LoadOptions {
        url,
        concurrency: 8,
        max_requests: n,
        max_duration: Duration::from_secs(30),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    }
}

fn assert_clean(r: &LoadReport, n: u64) {
    assert_eq!(r.sent, n, "the load ran to its count: {r:?}");
    assert_eq!(r.failed(), 0, "{:?}", r.first_errors);
}

/// Within 1 % (the bound); both sides count every request here, so they are equal.
fn assert_close(what: &str, scraped: f64, counted: u64) {
    let diff = (scraped - counted as f64).abs();
    assert!(
        diff <= counted as f64 * 0.01,
        "{what}: scraped {scraped}, the load counted {counted}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_the_load_per_slot_flip_on_a_swap_and_pass_promtool() {
    let Some(promtool) = require_binary("metrics_pass_promtool", "promtool") else {
        return;
    };
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    // `red` is down: nothing listens on its port.
    let named = vec![
        ("blue".to_string(), s[0].url()),
        ("green".to_string(), s[1].url()),
        (
            "red".to_string(),
            format!("http://127.0.0.1:{}", free_port()),
        ),
    ];
    let (env, cfg) = world_of(&named, "", &dir);
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let url = format!("http://{}/", h.live_addr());

    let before = scrape(&h, None).await;
    assert_eq!(
        value(&before, "cutover_proxy_live", &[("slot", "blue")]),
        1.0
    );
    assert_eq!(
        value(&before, "cutover_proxy_live", &[("slot", "green")]),
        0.0
    );
    assert_eq!(
        value(&before, "cutover_proxy_preview", &[("slot", "green")]),
        1.0
    );
    let (ok, said) = common::promtool_check(&promtool, &before);
    assert!(
        ok,
        "promtool check metrics refused the idle exposition:\n{said}\n{before}"
    );

    let first = load::run(bounded_load(url.clone(), 2_000)).await;
    assert_clean(&first, 2_000);
    switch_live(&h, "green", None).await;
    let swapped = scrape(&h, None).await;
    assert_eq!(
        value(&swapped, "cutover_proxy_live", &[("slot", "blue")]),
        0.0,
        "right after the swap"
    );
    assert_eq!(
        value(&swapped, "cutover_proxy_live", &[("slot", "green")]),
        1.0,
        "right after the swap"
    );
    let second = load::run(bounded_load(url.clone(), 1_500)).await;
    assert_clean(&second, 1_500);

    // A slot that is down: connect errors and 502s on its node.
    switch_live(&h, "red", None).await;
    let down = load::run(bounded_load(url, 50)).await;
    assert_eq!(down.failures.status.get(&502), Some(&50), "{down:?}");

    let text = scrape(&h, None).await;
    let (ok, said) = common::promtool_check(&promtool, &text);
    assert!(ok, "promtool check metrics refused:\n{said}\n{text}");
    println!(
        "promtool check metrics: ok ({} lines)",
        text.lines().count()
    );
    common::assert_metrics_in_readme(&text);

    let ok_by_slot = |name: &str| {
        first.by_slot.get(name).copied().unwrap_or(0)
            + second.by_slot.get(name).copied().unwrap_or(0)
    };
    let requests = samples(&text);
    let per_slot_2xx = |slot: &str| -> f64 {
        requests
            .iter()
            .filter(|(n, l, _)| {
                n == "cutover_proxy_requests_total"
                    && l.get("slot").map(String::as_str) == Some(slot)
                    && l.get("code").map(String::as_str) == Some("2xx")
            })
            .map(|(_, _, v)| v)
            .sum()
    };
    for slot in ["blue", "green"] {
        println!(
            "slot {slot}: scraped 2xx {} / load counted {}",
            per_slot_2xx(slot),
            ok_by_slot(slot)
        );
        assert_close(&format!("{slot} 2xx"), per_slot_2xx(slot), ok_by_slot(slot));
    }
    assert_eq!(ok_by_slot("blue"), 2_000);
    assert_eq!(ok_by_slot("green"), 1_500);
    let all = sum_by(&text, "cutover_proxy_requests_total", "slot");
    assert_eq!(all.get("blue"), Some(&2_000.0), "{all:?}");
    assert_eq!(all.get("red"), Some(&50.0), "{all:?}");
    let count = sum_by(
        &text,
        "cutover_proxy_request_duration_seconds_count",
        "slot",
    );
    assert_eq!(count, all, "every request is in its slot's histogram");
    assert_eq!(
        value(
            &text,
            "cutover_proxy_requests_total",
            &[("slot", "red"), ("code", "5xx")]
        ),
        50.0
    );
    assert_eq!(
        value(
            &text,
            "cutover_proxy_upstream_errors_total",
            &[("slot", "red"), ("kind", "connect")]
        ),
        50.0
    );
    assert_eq!(
        value(
            &text,
            "cutover_proxy_upstream_errors_total",
            &[("slot", "green"), ("kind", "connect")]
        ),
        0.0
    );
    let inf = value(
        &text,
        "cutover_proxy_request_duration_seconds_bucket",
        &[("slot", "green"), ("le", "+Inf")],
    );
    assert_eq!(inf, 1_500.0);
    let in_flight = sum_by(&text, "cutover_proxy_in_flight_requests", "slot");
    assert!(in_flight.values().all(|v| *v == 0.0), "{in_flight:?}");
    assert_eq!(value(&text, "cutover_proxy_maintenance", &[]), 0.0);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_admin_token_when_one_is_configured() {
    const VAR: &str = "CUTOVER_TEST_METRICS_ADMIN_TOKEN";
    // SAFETY: a name only this test uses; std serializes its own env access.
    unsafe { std::env::set_var(VAR, "metrics-s3cret") };
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = world(&[&s[0], &s[1]], &format!("token_env = \"{VAR}\""), &dir);
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let url = format!("http://{}/metrics", h.admin_addr());
    assert_eq!(status_of(Method::GET, &url, None).await, 401);
    assert_eq!(status_of(Method::GET, &url, Some("wrong")).await, 401);
    let text = scrape(&h, Some("metrics-s3cret")).await;
    common::assert_contains(&text, "cutover_proxy_live{env=\"shop\",slot=\"blue\"} 1");
    assert!(!text.contains("metrics-s3cret"));
    assert_eq!(
        status_of(Method::POST, &url, Some("metrics-s3cret")).await,
        405
    );
}

/// One instant query against the Prometheus HTTP API: the result vector.
async fn query(base: &str, q: &str) -> Vec<serde_json::Value> {
    let r = client()
        .get(format!("{base}/api/v1/query?query={}", encode(q)))
        .send()
        .await;
    let Ok(r) = r else { return Vec::new() };
    let Ok(v) = r.json::<serde_json::Value>().await else {
        return Vec::new();
    };
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// `{slot: value}` of an instant query's result.
async fn query_by_slot(base: &str, q: &str) -> BTreeMap<String, f64> {
    query(base, q)
        .await
        .iter()
        .filter_map(|r| {
            let slot = r["metric"]["slot"].as_str()?.to_string();
            let v: f64 = r["value"][1].as_str()?.parse().ok()?;
            Some((slot, v))
        })
        .collect()
}

/// Query until `slot`'s value is `want` (20 s at most): whether it was, and the last result.
async fn wait_for_sum(base: &str, q: &str, slot: &str, want: f64) -> (bool, BTreeMap<String, f64>) {
    let last = std::sync::Mutex::new(BTreeMap::new());
    let ok = common::eventually(Duration::from_secs(20), || async {
        let seen = query_by_slot(base, q).await;
        let hit = seen.get(slot) == Some(&want);
        *last.lock().expect("lock") = seen;
        hit
    })
    .await;
    (ok, last.into_inner().expect("lock"))
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prometheus_server_scrapes_the_proxy_with_the_token_and_sees_the_swap() {
    let Some(prometheus) = require_binary("prometheus_scrapes_the_proxy", "prometheus") else {
        return;
    };
    const VAR: &str = "CUTOVER_TEST_PROMETHEUS_ADMIN_TOKEN";
    const TOKEN: &str = "prom-scrape-token";
    // SAFETY: a name only this test uses; std serializes its own env access.
    unsafe { std::env::set_var(VAR, TOKEN) };
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = world(&[&s[0], &s[1]], &format!("token_env = \"{VAR}\""), &dir);
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");

    let token_file = dir.path().join("token");
    std::fs::write(&token_file, TOKEN).expect("write the token file");
    let scrape_interval = Duration::from_secs(1);
    let (_prom, base) = common::spawn_prometheus(
        &prometheus,
        dir.path(),
        "cutover_proxy",
        &h.admin_addr().to_string(),
        Some(&token_file),
    );
    let prom_log =
        || std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();

    // Wait until Prometheus has scraped the admin listener with the token (up == 1).
    let started = Instant::now();
    let up = eventually(Duration::from_secs(30), || async {
        query(&base, "up{job=\"cutover_proxy\"} == 1").await.len() == 1
    })
    .await;
    assert!(up, "prometheus never scraped the proxy:\n{}", prom_log());
    println!("prometheus up and scraped after {:?}", started.elapsed());

    let url = format!("http://{}/", h.live_addr());
    let first = load::run(bounded_load(url.clone(), 1_000)).await;
    assert_clean(&first, 1_000);
    let sums = "sum by (slot) (cutover_proxy_requests_total{env=\"shop\"})";
    let (matched, seen) = wait_for_sum(&base, sums, "blue", 1_000.0).await;
    assert!(
        matched,
        "prometheus has {seen:?}, the load counted {first:?}"
    );
    assert_close("blue via prometheus", seen["blue"], first.by_slot["blue"]);

    // The swap: the first sample of live{green} == 1 is from the first scrape after it.
    let swap_at = now_s();
    switch_live(&h, "green", Some(TOKEN)).await;
    let flipped = eventually(Duration::from_secs(10), || async {
        query_by_slot(&base, "cutover_proxy_live{env=\"shop\"} == 1")
            .await
            .contains_key("green")
    })
    .await;
    assert!(flipped, "prometheus never saw green live:\n{}", prom_log());
    let range = query(
        &base,
        "cutover_proxy_live{env=\"shop\",slot=\"green\"}[30s]",
    )
    .await;
    let values = range
        .first()
        .and_then(|r| r["values"].as_array().cloned())
        .unwrap_or_default();
    let points: Vec<(f64, String)> = values
        .iter()
        .filter_map(|p| Some((p[0].as_f64()?, p[1].as_str()?.to_string())))
        .collect();
    let first_one = points
        .iter()
        .find(|(_, v)| v == "1")
        .expect("a sample with green live");
    let last_zero = points.iter().rev().find(|(_, v)| v == "0");
    let lag = first_one.0 - swap_at;
    println!(
        "swap at {swap_at:.3}; first scrape with green live at {:.3} ({lag:.3}s later); the \
         scrape before it at {:?}",
        first_one.0,
        last_zero.map(|p| p.0)
    );
    assert!(
        lag <= scrape_interval.as_secs_f64() + 0.5,
        "green became live {lag:.3}s after the swap in prometheus, more than one scrape \
         interval: {points:?}"
    );
    if let Some((t, _)) = last_zero {
        assert!(
            *t <= swap_at + 0.05,
            "a scrape after the swap still saw green not live: {points:?}"
        );
    }

    let second = load::run(bounded_load(url, 500)).await;
    assert_clean(&second, 500);
    let (matched, seen) = wait_for_sum(&base, sums, "green", 500.0).await;
    assert!(
        matched,
        "prometheus has {seen:?}, the load counted {second:?}"
    );
    assert_eq!(seen.get("blue"), Some(&1_000.0));

    // Every query of the Grafana dashboard in docs/ is valid PromQL on these metrics and
    // returns data.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../docs/grafana-cutover-proxy.json"))
            .expect("the dashboard is JSON");
    let mut n = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            let expr = t["expr"].as_str().expect("expr");
            let q = expr
                .replace("$env", "shop")
                .replace("$__rate_interval", "1m");
            let (status, result) = query_status(&base, &q).await;
            assert_eq!(status, "success", "{}: {q}", panel["title"]);
            // Nothing is drained here, so that panel's query has no series.
            assert!(
                !result.is_empty() || q.contains("draining"),
                "{}: no data for {q}",
                panel["title"]
            );
            n += 1;
        }
    }
    println!("{n} dashboard queries answered by prometheus");
    h.stop().await;
}

/// A query string as a URL's query value.
fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query's status and result.
async fn query_status(base: &str, q: &str) -> (String, Vec<serde_json::Value>) {
    let r = client()
        .get(format!("{base}/api/v1/query?query={}", encode(q)))
        .send()
        .await
        .expect("query prometheus");
    let v: serde_json::Value = r.json().await.expect("json answer");
    (
        v["status"].as_str().unwrap_or_default().to_string(),
        v["data"]["result"].as_array().cloned().unwrap_or_default(),
    )
}

/// A slot that reads a request and closes the connection without answering.
async fn hang_up_server() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                // Dropped here: the connection closes before any answer.
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_errors_are_counted_by_kind() {
    let s = slots(&[("slow", "1.0.0")]).await;
    s[0].controls.set_delay(Duration::from_secs(3));
    let hangup = hang_up_server().await;
    let dir = TempDir::new().expect("tempdir");
    let named = vec![
        ("slow".to_string(), s[0].url()),
        ("hangup".to_string(), format!("http://{hangup}")),
        (
            "down".to_string(),
            format!("http://127.0.0.1:{}", free_port()),
        ),
    ];
    // upstream_timeout = 1 s: the slow slot's 3 s answers time out.
    let (env, cfg) = world_of(&named, "upstream_timeout = 1", &dir);
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let url = format!("http://{}/", h.live_addr());
    let mut expect = Vec::new();
    for (slot, n, status, kind) in [
        ("slow", 4, 504, "timeout"),
        ("hangup", 5, 502, "reset"),
        ("down", 6, 502, "connect"),
    ] {
        switch_live(&h, slot, None).await;
        let r = load::run(LoadOptions {
            concurrency: 4,
            ..bounded_load(url.clone(), n)
        })
        .await;
        assert_eq!(r.failures.status.get(&status), Some(&n), "{slot}: {r:?}");
        expect.push((slot, n, kind));
    }
    let text = scrape(&h, None).await;
    for (slot, n, kind) in expect {
        for k in ["connect", "reset", "timeout", "5xx"] {
            let want = if k == kind { n as f64 } else { 0.0 };
            assert_eq!(
                value(
                    &text,
                    "cutover_proxy_upstream_errors_total",
                    &[("slot", slot), ("kind", k)]
                ),
                want,
                "{slot} {k}"
            );
        }
        assert_eq!(
            value(
                &text,
                "cutover_proxy_requests_total",
                &[("slot", slot), ("code", "5xx")]
            ),
            n as f64
        );
    }
    // The timed-out requests took at least the 1 s limit: they are above the 1 s bucket.
    assert_eq!(
        value(
            &text,
            "cutover_proxy_request_duration_seconds_bucket",
            &[("slot", "slow"), ("le", "1")]
        ),
        0.0,
        "{text}"
    );
    h.stop().await;
}
