//! The embedded proxy and its `embedded` driver, checked the way an operator would: which
//! slot answers on the live port, what observe() reports, and how many requests failed.
//!
//! Every proxy here listens on 127.0.0.1 (port 0 unless a test needs a known port), keeps
//! its state file in its own temp dir, and every load run is bounded in count and time.

#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{
    SlotServer, eventually, fenced_blocks, free_port, get, more_requests, node, observe_until,
    self_signed, slot_changes, slots, tls_client,
};
use cutover::config::{self, Environment};
use cutover::load::{self, LoadOptions};
use cutover::model::{AdminState, MaintenanceMode, Role, RouterState};
use cutover::proxy::{self, ProxyHandle};
use cutover::router::{Router, RouterConfig, Target, embedded};
use tempfile::TempDir;

/// An environment named `env` with the given slots (TOML lines after `name`/`address`) and
/// an embedded router whose keys are the defaults below overridden by `router`.
fn world_toml(
    env: &str,
    slots: &[(&str, String)],
    router: &[(&str, String)],
    dir: &TempDir,
) -> String {
    let mut keys: BTreeMap<&str, String> = BTreeMap::new();
    keys.insert("admin", "\"127.0.0.1:0\"".into());
    keys.insert("live_listen", "\"127.0.0.1:0\"".into());
    keys.insert("preview_listen", "\"127.0.0.1:0\"".into());
    keys.insert(
        "state_file",
        format!("\"{}\"", dir.path().join("proxy-state.json").display()),
    );
    for (k, v) in router {
        keys.insert(k, v.clone());
    }
    let mut t = format!("[[environment]]\nname = \"{env}\"\n");
    for (name, rest) in slots {
        t += &format!("\n[[environment.slot]]\nname = \"{name}\"\n{rest}\n");
    }
    t += "\n[[environment.router]]\nkind = \"embedded\"\n";
    for (k, v) in keys {
        t += &format!("{k} = {v}\n");
    }
    t
}

fn parse_world(toml: &str) -> (Environment, embedded::Config) {
    let env = common::environment(toml);
    let RouterConfig::Embedded(r) = env.routers[0].clone() else {
        panic!("not an embedded router")
    };
    (env, r)
}

/// The embedded proxy of `shop` in front of one slot, `blue` (1.0.0): the slot server (kept
/// running while held), the temp dir and the proxy.
async fn one_blue_slot() -> (Vec<SlotServer>, TempDir, ProxyHandle) {
    let s = slots(&[("blue", "1.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = parse_world(&world_toml(
        "shop",
        &[("blue", addr_line(&s[0]))],
        &[],
        &dir,
    ));
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    (s, dir, h)
}

fn addr_line(s: &SlotServer) -> String {
    format!("address = \"{}\"", s.url())
}

/// A world of slot servers behind one embedded router.
fn world(
    servers: &[&SlotServer],
    router: &[(&str, String)],
    dir: &TempDir,
) -> (Environment, embedded::Config) {
    let slots: Vec<(&str, String)> = servers
        .iter()
        .map(|s| (s.controls.name.as_str(), addr_line(s)))
        .collect();
    parse_world(&world_toml("shop", &slots, router, dir))
}

/// The driver, pointed at the admin port the proxy really bound.
fn driver(h: &ProxyHandle, env: &Environment, cfg: &embedded::Config) -> embedded::Driver {
    let mut c = cfg.clone();
    c.admin = h.admin_addr().to_string();
    embedded::Driver::new("embedded".into(), env, &c).expect("driver")
}

/// The proxy started on a world of slot servers behind one embedded router, and its driver:
/// (temp dir, environment, router config, proxy, driver).
async fn up(
    servers: &[&SlotServer],
    router: &[(&str, String)],
) -> (
    TempDir,
    Environment,
    embedded::Config,
    ProxyHandle,
    embedded::Driver,
) {
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = world(servers, router, &dir);
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);
    (dir, env, cfg, h, d)
}

fn client() -> reqwest::Client {
    cutover::http_client()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

async fn observe(d: &embedded::Driver) -> RouterState {
    d.observe().await.expect("observe through the driver")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_live_and_back_20_times_under_keep_alive_load_fails_no_request() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (_dir, _env, _cfg, h, d) = up(&[&s[0], &s[1]], &[]).await;
    assert_eq!(observe(&d).await.live.as_deref(), Some("blue"));

    // Ceilings far beyond any machine's need: the test stops the load after the switches.
    let max_requests = 50_000_000;
    let run = load::start(LoadOptions {
        url: format!("http://{}/", h.live_addr()),
        concurrency: 32,
        max_requests,
        max_duration: Duration::from_secs(240),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    });
    for i in 0..20 {
        more_requests(&run, 300, &format!("switch {i} to green")).await;
        d.switch_live("green").await.expect("switch to green");
        assert_eq!(observe(&d).await.live.as_deref(), Some("green"));
        more_requests(&run, 300, &format!("switch {i} back to blue")).await;
        d.switch_live("blue").await.expect("switch back to blue");
        assert_eq!(observe(&d).await.live.as_deref(), Some("blue"));
    }
    more_requests(&run, 300, "the end").await;
    let report = run.finish().await;

    assert_eq!(
        report.ended,
        load::Ended::Stopped,
        "the load ended by its own bound; the switches did not all happen under load"
    );
    assert_eq!(
        report.failed(),
        0,
        "{} of {} requests failed: {:?} {:?}",
        report.failed(),
        report.sent,
        report.failures,
        report.first_errors
    );
    let blue = report.by_slot.get("blue").copied().unwrap_or(0);
    let green = report.by_slot.get("green").copied().unwrap_or(0);
    assert!(
        blue > 0 && green > 0,
        "both slots answer: {:?}",
        report.by_slot
    );
    // The answers follow the switches: the answering slot changed at least once per switch.
    let changes = slot_changes(&report);
    assert!(
        changes >= 40,
        "only {changes} changes of answering slot over 40 switches"
    );
    let st = observe(&d).await;
    let counted: u64 = st.slots.values().filter_map(|r| r.requests).sum();
    assert_eq!(
        counted, report.sent,
        "the proxy counted every request it got"
    );
    assert_eq!(st.slots["blue"].errors, Some(0));
    assert_eq!(st.slots["green"].errors, Some(0));
    eprintln!(
        "switch test: {} requests, {:?}, {:.0} req/s",
        report.sent,
        report.by_slot,
        report.rps()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_lets_a_slow_in_flight_request_finish_and_shows_sessions_falling_to_zero() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (_dir, _env, _cfg, h, d) = up(&[&s[0], &s[1]], &[]).await;

    let slow_url = format!("http://{}/slow?ms=1500", h.live_addr());
    let slow = tokio::spawn(async move {
        let r = client().get(slow_url).send().await.expect("slow request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    observe_until(
        &d,
        Duration::from_secs(3),
        "the slow request as one session on blue",
        |st| st.slots["blue"].sessions == Some(1),
    )
    .await;

    // Draining the live slot is refused: it would leave no backend.
    let err = d
        .drain(&Target::slot("blue"))
        .await
        .expect_err("drain live refused");
    assert!(format!("{err:#}").contains("switch live"), "{err}");

    d.switch_live("green").await.expect("switch to green");
    let err = d
        .drain(&Target::slot("green"))
        .await
        .expect_err("drain new live refused");
    assert!(format!("{err:#}").contains("switch live"), "{err}");
    d.drain(&Target::slot("blue")).await.expect("drain blue");

    let st = observe(&d).await;
    assert_eq!(st.slots["blue"].admin, AdminState::Drain);
    assert_eq!(st.role_of("blue"), Role::Draining);
    assert_eq!(
        st.slots["blue"].sessions,
        Some(1),
        "the slow request is still in flight"
    );
    let (status, slot, _) = get(&format!("http://{}/", h.live_addr())).await;
    assert_eq!(
        (status, slot.as_str()),
        (200, "green"),
        "new requests go to green"
    );
    let err = d
        .switch_live("blue")
        .await
        .expect_err("a draining slot cannot go live");
    assert!(format!("{err:#}").contains("undrain"), "{err}");

    let (status, body) = slow.await.expect("slow task");
    assert_eq!(status, 200, "the in-flight request finished: {body}");
    common::assert_contains(&body, "slow answer from blue");
    observe_until(&d, Duration::from_secs(3), "sessions on blue at 0", |st| {
        st.slots["blue"].sessions == Some(0)
    })
    .await;
    assert_eq!(
        s[0].controls
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );

    d.undrain(&Target::slot("blue")).await.expect("undrain");
    assert_eq!(observe(&d).await.slots["blue"].admin, AdminState::Ready);
    d.switch_live("blue").await.expect("blue can go live again");
    let (_, slot, _) = get(&format!("http://{}/", h.live_addr())).await;
    assert_eq!(slot, "blue");
}

#[tokio::test]
async fn maintenance_page_answers_503_with_retry_after_until_turned_off() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (_dir, _env, _cfg, h, d) = up(&[&s[0], &s[1]], &[("retry_after", "7".into())]).await;
    let live = format!("http://{}/", h.live_addr());
    let preview = format!("http://{}/", h.preview_addr().expect("preview listener"));

    d.maintenance(true, &MaintenanceMode::Page)
        .await
        .expect("maintenance on");
    let r = client().get(&live).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert!(r.text().await.unwrap_or_default().contains("maintenance"));
    let st = observe(&d).await;
    assert_eq!(st.maintenance, Some(MaintenanceMode::Page));
    assert_eq!(st.role_of("blue"), Role::Maintenance);
    // The preview listener keeps serving, and the operator can look at blue with the cookie.
    assert_eq!(get(&preview).await.1, "green");
    let r = client()
        .get(&live)
        .header("cookie", "theme=dark; cutover_bypass=1")
        .send()
        .await
        .expect("get with bypass cookie");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-slot"], "blue");
    let r = client()
        .get(&live)
        .header("cookie", "cutover_bypass=0")
        .send()
        .await
        .expect("get with cookie set to 0");
    assert_eq!(r.status().as_u16(), 503, "only cutover_bypass=1 bypasses");

    d.maintenance(false, &MaintenanceMode::Page)
        .await
        .expect("maintenance off");
    assert_eq!(get(&live).await.0, 200);
    assert_eq!(get(&live).await.1, "blue");
    assert_eq!(observe(&d).await.maintenance, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_redirect_sends_live_traffic_to_another_slot_with_bypass_and_loop_guard() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0"), ("staging", "3.0.0")]).await;
    let (_dir, _env, _cfg, h, d) = up(&[&s[0], &s[1], &s[2]], &[]).await;
    let live = format!("http://{}/", h.live_addr());

    // Refusals that would leave no serving slot, or name something that is not there.
    let to = |s: &str| MaintenanceMode::Redirect { to: s.into() };
    let err = d
        .maintenance(true, &to("blue"))
        .await
        .expect_err("redirect to live");
    assert!(format!("{err:#}").contains("live slot"), "{err}");
    let err = d
        .maintenance(true, &to("purple"))
        .await
        .expect_err("unknown");
    assert!(
        format!("{err:#}").contains("unknown slot `purple`")
            && format!("{err:#}").contains("blue, green, staging"),
        "{err}"
    );
    d.drain(&Target::slot("staging"))
        .await
        .expect("drain staging");
    let err = d
        .maintenance(true, &to("staging"))
        .await
        .expect_err("draining");
    assert!(format!("{err:#}").contains("draining"), "{err}");
    assert_eq!(
        observe(&d).await.maintenance,
        None,
        "refusals change nothing"
    );
    d.undrain(&Target::slot("staging"))
        .await
        .expect("undrain staging");
    d.set_preview("staging").await.expect("preview to staging");

    // Redirect on and off under load: no request fails.
    let run = load::start(LoadOptions {
        url: live.clone(),
        concurrency: 16,
        // Ceilings far beyond any machine's need: the test stops the load after the changes.
        max_requests: 50_000_000,
        max_duration: Duration::from_secs(240),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    });
    for _ in 0..5 {
        more_requests(&run, 300, "redirect on").await;
        d.maintenance(true, &to("green"))
            .await
            .expect("redirect on");
        more_requests(&run, 300, "redirect off").await;
        d.maintenance(false, &MaintenanceMode::Page)
            .await
            .expect("redirect off");
    }
    more_requests(&run, 200, "the end").await;
    let report = run.finish().await;
    assert_eq!(
        report.failed(),
        0,
        "{:?} {:?}",
        report.failures,
        report.first_errors
    );
    assert!(
        report.by_slot.get("green").copied().unwrap_or(0) > 0,
        "{:?}",
        report.by_slot
    );

    d.maintenance(true, &to("green"))
        .await
        .expect("redirect on");
    let st = observe(&d).await;
    assert_eq!(st.maintenance, Some(to("green")));
    assert_eq!(st.role_of("blue"), Role::Maintenance);
    assert_eq!(get(&live).await.1, "green", "live traffic goes to green");
    // green sees the marker that stops a second redirect.
    let headers: serde_json::Value =
        serde_json::from_str(&get(&format!("{live}headers")).await.2).expect("json");
    assert_eq!(headers["x-cutover-redirected"], "shop");
    let err = d
        .drain(&Target::slot("green"))
        .await
        .expect_err("drain redirect target");
    assert!(format!("{err:#}").contains("redirect"), "{err}");
    let err = d
        .switch_live("green")
        .await
        .expect_err("live to the redirect target");
    assert!(format!("{err:#}").contains("maintenance"), "{err}");

    // The operator reaches blue, the slot under maintenance, with the cookie or the header.
    let c = client();
    for (name, value) in [("cookie", "cutover_bypass=1"), ("x-cutover-bypass", "1")] {
        let r = c.get(&live).header(name, value).send().await.expect("get");
        assert_eq!(r.headers()["x-slot"], "blue", "with {name}");
    }
    // Loop guard: a request another proxy already redirected is not redirected again.
    let r = c
        .get(&live)
        .header(proxy::REDIRECTED_HEADER, "other-site")
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["x-cutover-maintenance"], "loop-guard");

    d.maintenance(false, &MaintenanceMode::Page)
        .await
        .expect("off");
    assert_eq!(get(&live).await.1, "blue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_proxies_redirecting_to_each_other_do_not_loop() {
    let s = slots(&[("server-a", "1.0.0"), ("server-b", "1.0.0")]).await;
    let (dir_a, dir_b) = (TempDir::new().expect("tmp"), TempDir::new().expect("tmp"));
    let (port_a, port_b) = (free_port(), free_port());
    let listen = |p: u16| [("live_listen", format!("\"127.0.0.1:{p}\""))];
    // Seed 004: two servers, each with its own proxy; maintenance on one sends its traffic
    // to the other's public port.
    let (env_a, cfg_a) = parse_world(&world_toml(
        "site-a",
        &[
            ("a", addr_line(&s[0])),
            ("b", format!("address = \"http://127.0.0.1:{port_b}\"")),
        ],
        &listen(port_a),
        &dir_a,
    ));
    let (env_b, cfg_b) = parse_world(&world_toml(
        "site-b",
        &[
            ("b", addr_line(&s[1])),
            ("a", format!("address = \"http://127.0.0.1:{port_a}\"")),
        ],
        &listen(port_b),
        &dir_b,
    ));
    let pa = proxy::start(&env_a, &cfg_a).await.expect("proxy a");
    let pb = proxy::start(&env_b, &cfg_b).await.expect("proxy b");
    let (da, db) = (driver(&pa, &env_a, &cfg_a), driver(&pb, &env_b, &cfg_b));
    let redirect = |s: &str| MaintenanceMode::Redirect { to: s.into() };
    da.maintenance(true, &redirect("b"))
        .await
        .expect("a redirects to b");
    db.maintenance(true, &redirect("a"))
        .await
        .expect("b redirects to a");

    let url_a = format!("http://127.0.0.1:{port_a}/");
    let t = Instant::now();
    let r = client()
        .get(&url_a)
        .send()
        .await
        .expect("answered, not looping");
    assert_eq!(r.status().as_u16(), 503, "both in maintenance: the page");
    assert_eq!(r.headers()["x-cutover-maintenance"], "loop-guard");
    eprintln!("loop guard answered in {:?}", t.elapsed());
    assert_eq!(
        observe(&da).await.slots["b"].requests,
        Some(1),
        "a redirected once"
    );
    assert_eq!(
        observe(&db).await.slots["a"].requests,
        Some(0),
        "b did not redirect back"
    );

    // The operator checks server a through its own proxy with the bypass cookie.
    let r = client()
        .get(&url_a)
        .header("cookie", "cutover_bypass=1")
        .send()
        .await
        .expect("bypass");
    assert_eq!(r.headers()["x-slot"], "server-a");

    // b back in service: a's traffic reaches server b through b's proxy.
    db.maintenance(false, &MaintenanceMode::Page)
        .await
        .expect("b off");
    let (status, slot, _) = get(&url_a).await;
    assert_eq!((status, slot.as_str()), (200, "server-b"));
}

/// A slot that echoes the request body back, streaming.
async fn echo_server() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let mut r = hyper::Response::new(req.into_body());
                        r.headers_mut()
                            .insert("x-slot", hyper::header::HeaderValue::from_static("echo"));
                        Ok::<_, Infallible>(r)
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, task)
}

/// Send `request` as written on a fresh connection to `addr`; the whole answer.
async fn raw_exchange(addr: std::net::SocketAddr, request: &'static [u8]) -> String {
    tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(addr).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.write_all(request).expect("write");
        let mut out = Vec::new();
        c.read_to_end(&mut out).expect("read");
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .expect("raw request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_host_is_refused_with_400_and_never_forwarded() {
    let (_s, _dir, h) = one_blue_slot().await;
    let live = h.live_addr();

    // Two Host lines (RFC 9112 §3.2: a server MUST answer 400).
    let two = raw_exchange(
        live,
        b"GET /version HTTP/1.1\r\nHost: shop.example\r\nHost: evil.example\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    common::assert_contains(&two, "several Host headers");
    assert!(!two.contains("1.0.0"), "the slot answered: {two}");

    // An absolute-form target whose host is not the Host header's.
    let differs = raw_exchange(
        live,
        b"GET http://shop.example/version HTTP/1.1\r\nHost: evil.example\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert!(differs.starts_with("HTTP/1.1 400"), "{differs}");
    common::assert_contains(&differs, "differs from the request target");

    // The same host written with its default port and another case is one host: served.
    let same = raw_exchange(
        live,
        b"GET http://Shop.Example/version HTTP/1.1\r\nHost: shop.example:80\r\n\
          Connection: close\r\n\r\n",
    )
    .await;
    assert!(same.starts_with("HTTP/1.1 200"), "{same}");
    common::assert_contains(&same, "1.0.0");

    // One Host and an origin-form target: served.
    let one = raw_exchange(
        live,
        b"GET /version HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(one.starts_with("HTTP/1.1 200"), "{one}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_1_1_request_without_host_is_refused_with_400_and_1_0_is_served() {
    let (_s, _dir, h) = one_blue_slot().await;
    let live = h.live_addr();

    // HTTP/1.1 with no Host (RFC 9112 §3.2: a server MUST answer 400), origin- and
    // absolute-form alike.
    for request in [
        &b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        &b"GET http://shop.example/version HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
    ] {
        let answer = raw_exchange(live, request).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        common::assert_contains(&answer, "no Host header");
        assert!(!answer.contains("1.0.0"), "the slot answered: {answer}");
    }

    // HTTP/1.0 had no Host header: still served.
    let old = raw_exchange(live, b"GET /version HTTP/1.0\r\n\r\n").await;
    assert!(
        old.starts_with("HTTP/1.0 200") || old.starts_with("HTTP/1.1 200"),
        "{old}"
    );
    common::assert_contains(&old, "1.0.0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_slot_sees_forwarded_headers_and_bodies_stream_through() {
    let s = slots(&[("blue", "1.0.0")]).await;
    let (echo, echo_task) = echo_server().await;
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = parse_world(&world_toml(
        "shop",
        &[
            ("blue", addr_line(&s[0])),
            ("echo", format!("address = \"http://{echo}\"")),
        ],
        &[],
        &dir,
    ));
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);

    // A raw request, so the test controls Host, Connection and X-Forwarded-For exactly.
    let live = h.live_addr();
    let raw = tokio::task::spawn_blocking(move || {
        let mut c = std::net::TcpStream::connect(live).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        c.write_all(
            b"GET /headers HTTP/1.1\r\nHost: shop.example\r\nConnection: close, X-Hop\r\n\
              X-Hop: secret\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n",
        )
        .expect("write");
        let mut out = String::new();
        c.read_to_string(&mut out).expect("read");
        out
    })
    .await
    .expect("raw request");
    let (head, body) = raw.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let seen: serde_json::Value = serde_json::from_str(body).expect("json headers");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], "shop.example");
    assert_eq!(seen["host"], "shop.example", "the Host header is kept");
    assert!(
        seen.get("x-hop").is_none(),
        "a header named by Connection is not forwarded"
    );

    // 4 MiB up and back through the proxy, streamed, byte for byte.
    d.switch_live("echo").await.expect("switch to echo");
    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let r = client()
        .post(format!("http://{live}/upload"))
        .body(payload.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["x-slot"], "echo");
    let back = r.bytes().await.expect("body");
    assert!(
        back.len() == payload.len() && back[..] == payload[..],
        "body changed in transit"
    );
    echo_task.abort();
}

#[tokio::test]
async fn a_slot_that_is_down_answers_502_and_counts_errors() {
    let s = slots(&[("green", "2.0.0")]).await;
    let down = free_port(); // nothing listens there
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = parse_world(&world_toml(
        "shop",
        &[
            ("blue", format!("address = \"http://127.0.0.1:{down}\"")),
            ("green", addr_line(&s[0])),
        ],
        &[],
        &dir,
    ));
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);
    let live = format!("http://{}/", h.live_addr());

    let t = Instant::now();
    let (status, _, body) = get(&live).await;
    eprintln!("502 after {:?}", t.elapsed());
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("slot `blue`") && body.contains(&down.to_string()),
        "{body}"
    );
    let st = observe(&d).await;
    assert_eq!(
        (st.slots["blue"].requests, st.slots["blue"].errors),
        (Some(1), Some(1))
    );

    // A 5xx from a slot is passed through and counted.
    s[0].controls.set_healthy(false);
    d.switch_live("green").await.expect("switch");
    assert_eq!(get(&live).await.0, 500);
    assert_eq!(observe(&d).await.slots["green"].errors, Some(1));
    s[0].controls.set_healthy(true);
    assert_eq!(get(&live).await.0, 200);
    assert_eq!(observe(&d).await.slots["green"].errors, Some(1));
}

#[tokio::test]
async fn the_admin_api_requires_the_token_when_one_is_configured() {
    const VAR: &str = "CUTOVER_TEST_EMBEDDED_ADMIN_TOKEN";
    // SAFETY: a name only this test uses; std serializes its own env access.
    unsafe { std::env::set_var(VAR, "s3cret-token") };
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = world(
        &[&s[0], &s[1]],
        &[("token_env", format!("\"{VAR}\""))],
        &dir,
    );
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let state = format!("http://{}/state", h.admin_addr());

    let r = client().get(&state).send().await.expect("get");
    assert_eq!(r.status().as_u16(), 401);
    let body: serde_json::Value = r.json().await.expect("json error");
    assert!(
        body["error"].as_str().unwrap_or("").contains("Bearer"),
        "{body}"
    );
    let r = client()
        .post(format!("http://{}/live", h.admin_addr()))
        .bearer_auth("wrong")
        .json(&serde_json::json!({"slot": "green"}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        get(&format!("http://{}/", h.live_addr())).await.1,
        "blue",
        "nothing changed"
    );

    let d = driver(&h, &env, &cfg);
    d.switch_live("green")
        .await
        .expect("the driver sends the token");
    assert_eq!(observe(&d).await.live.as_deref(), Some("green"));

    // A token variable that is not set stops the proxy from starting without one.
    let mut unset = cfg.clone();
    unset.token_env = Some("CUTOVER_TEST_EMBEDDED_UNSET_TOKEN".into());
    let err = proxy::start(&env, &unset).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("$CUTOVER_TEST_EMBEDDED_UNSET_TOKEN is not set"),
        "{err}"
    );
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_the_port_and_the_listener() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    for (field, what) in [
        ("live_listen", "live listener"),
        ("preview_listen", "preview listener"),
        ("admin", "admin API"),
    ] {
        let (env, cfg) = world(
            &[&s[0], &s[1]],
            &[(field, format!("\"127.0.0.1:{port}\""))],
            &dir,
        );
        let err = proxy::start(&env, &cfg).await.err().expect("refused");
        let want = format!(
            "the {what} cannot bind 127.0.0.1:{port}: address in use; set {field} to a free port"
        );
        assert_eq!(err.to_string(), want);
    }
}

#[tokio::test]
async fn the_live_slot_and_drains_survive_a_proxy_restart() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0"), ("staging", "3.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let (env, mut cfg) = world(&[&s[0], &s[1], &s[2]], &[], &dir);
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);
    d.switch_live("green").await.expect("switch");
    d.set_preview("staging").await.expect("preview");
    d.drain(&Target::slot("blue")).await.expect("drain");
    let live_port = h.live_addr().port();
    h.stop().await;

    // Same ports, same state file: it comes back as it was left.
    cfg.live_listen = format!("127.0.0.1:{live_port}");
    let h = proxy::start(&env, &cfg).await.expect("proxy restarts");
    let d = driver(&h, &env, &cfg);
    let st = observe(&d).await;
    assert_eq!(st.live.as_deref(), Some("green"));
    assert_eq!(st.preview.as_deref(), Some("staging"));
    assert_eq!(st.slots["blue"].admin, AdminState::Drain);
    assert_eq!(
        get(&format!("http://127.0.0.1:{live_port}/")).await.1,
        "green"
    );
    h.stop().await;

    // A state file naming slots that are gone: ignored with a note, initial_* used.
    let path = dir.path().join("proxy-state.json");
    std::fs::write(
        &path,
        r#"{"live":"purple","preview":"green","drained":[{"slot":"ghost"}],"maintenance":null}"#,
    )
    .expect("write state");
    let h = proxy::start(&env, &cfg)
        .await
        .expect("starts despite stale state");
    let st = h.state();
    assert_eq!(st.live.as_deref(), Some("blue"));
    assert_eq!(st.preview.as_deref(), Some("green"));
    assert!(
        st.notes
            .iter()
            .any(|n| n.contains("`purple` is no longer in the config"))
            && st.notes.iter().any(|n| n.contains("`ghost`")),
        "{:?}",
        st.notes
    );
    h.stop().await;

    // A broken state file is refused rather than silently reverting the live slot.
    std::fs::write(&path, "{ not json").expect("write");
    let err = proxy::start(&env, &cfg).await.err().expect("refused");
    assert!(format!("{err:#}").contains("delete it"), "{err:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_through_the_driver_reports_live_preview_and_in_flight() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (_dir, _env, _cfg, h, d) = up(&[&s[0], &s[1]], &[]).await;
    let preview = h.preview_addr().expect("preview");
    let slow = tokio::spawn(async move {
        client()
            .get(format!("http://{preview}/slow?ms=800"))
            .send()
            .await
            .map(|r| r.status().as_u16())
    });
    observe_until(
        &d,
        Duration::from_secs(3),
        "one request in flight on green (the preview)",
        |st| st.slots["green"].sessions == Some(1),
    )
    .await;
    get(&format!("http://{}/", h.live_addr())).await;
    let st = observe(&d).await;
    assert_eq!(st.live.as_deref(), Some("blue"));
    assert_eq!(st.preview.as_deref(), Some("green"));
    assert_eq!(st.role_of("blue"), Role::Live);
    assert_eq!(st.role_of("green"), Role::Preview);
    assert_eq!(st.slots["blue"].requests, Some(1));
    assert_eq!(st.slots["blue"].sessions, Some(0));
    assert_eq!(slow.await.expect("task").expect("slow answered"), 200);
    assert_eq!(observe(&d).await.slots["green"].sessions, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_are_balanced_and_drained_one_at_a_time() {
    let s = slots(&[("b1", "1.0.0"), ("b2", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let nodes = format!(
        "address = \"{}\"\nnodes = [{{ name = \"b1\", address = \"{}\" }}, {{ name = \"b2\", address = \"{}\" }}]",
        s[0].url(),
        s[0].url(),
        s[1].url()
    );
    let (env, cfg) = parse_world(&world_toml(
        "shop",
        &[("blue", nodes), ("green", addr_line(&s[2]))],
        &[],
        &dir,
    ));
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);
    let live = format!("http://{}/", h.live_addr());
    let answers = || async {
        let mut seen = BTreeMap::new();
        for _ in 0..6 {
            *seen.entry(get(&live).await.1).or_insert(0) += 1;
        }
        seen
    };
    let seen = answers().await;
    assert_eq!(
        (seen.get("b1"), seen.get("b2")),
        (Some(&3), Some(&3)),
        "{seen:?}"
    );

    d.drain(&Target::node("blue", "b1"))
        .await
        .expect("drain one node of the live slot");
    let st = observe(&d).await;
    let b1 = node(&st, "blue", "b1");
    assert_eq!((b1.admin, b1.sessions), (AdminState::Drain, Some(0)));
    assert_eq!(
        st.slots["blue"].admin,
        AdminState::Ready,
        "the slot still serves"
    );
    assert_eq!(answers().await.get("b2"), Some(&6), "only b2 answers");
    let err = d
        .drain(&Target::node("blue", "b2"))
        .await
        .expect_err("last node");
    assert!(format!("{err:#}").contains("last ready node"), "{err}");
    let err = d
        .drain(&Target::node("blue", "b9"))
        .await
        .expect_err("unknown node");
    assert!(format!("{err:#}").contains("b1, b2"), "{err}");
    let err = d
        .drain(&Target::node("green", "x"))
        .await
        .expect_err("no nodes");
    assert!(format!("{err:#}").contains("has no nodes"), "{err}");

    d.undrain(&Target::node("blue", "b1"))
        .await
        .expect("undrain");
    let seen = answers().await;
    assert!(
        seen.contains_key("b1") && seen.contains_key("b2"),
        "{seen:?}"
    );
}

#[tokio::test]
async fn admin_api_refusals_name_the_problem() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (_dir, env, cfg, h, d) = up(&[&s[0], &s[1]], &[]).await;

    let err = d.switch_live("purple").await.expect_err("unknown slot");
    let msg = format!("{err:#}");
    assert!(
        msg.contains("404") && msg.contains("unknown slot `purple`; this proxy knows: blue, green"),
        "{msg}"
    );
    let admin = h.admin_addr();
    let r = client()
        .post(format!("http://{admin}/live"))
        .body("green")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains(r#"{"slot":"green"}"#),
        "{body}"
    );
    let r = client()
        .get(format!("http://{admin}/nope"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(
        observe(&d).await.live.as_deref(),
        Some("blue"),
        "nothing changed"
    );

    // A driver pointed at a port where no proxy listens says so.
    let mut gone = cfg.clone();
    gone.admin = format!("127.0.0.1:{}", free_port());
    let g = embedded::Driver::new("embedded".into(), &env, &gone).expect("driver");
    let err = g.observe().await.expect_err("nothing there");
    assert!(
        format!("{err:#}").contains("cannot reach the embedded proxy"),
        "{err}"
    );
}

#[test]
fn config_examples_in_the_docs_parse_and_bad_fields_are_named() {
    let doc = include_str!("../docs/embedded.md");
    let mut blocks = 0;
    for (_, toml) in fenced_blocks(doc).iter().filter(|(info, _)| info == "toml") {
        let c = config::parse(toml, Path::new("docs/embedded.md"))
            .unwrap_or_else(|e| panic!("docs example refused: {e}\n{toml}"));
        assert!(
            c.environments
                .iter()
                .any(|e| e.routers.iter().any(|r| r.kind() == "embedded")),
            "the example has an embedded router"
        );
        blocks += 1;
    }
    assert!(blocks > 0, "docs/embedded.md has a toml example");

    let dir = TempDir::new().expect("tempdir");
    let slots = [
        ("blue", "address = \"http://127.0.0.1:9001\"".to_string()),
        ("green", "address = \"https://127.0.0.1:9002\"".to_string()),
    ];
    let bad = |router: &[(&str, String)], slots: &[(&str, String)]| {
        let toml = world_toml("shop", slots, router, &dir);
        match config::parse(&toml, Path::new("c.toml")) {
            Ok(_) => panic!("accepted:\n{toml}"),
            Err(e) => e.to_string(),
        }
    };
    let e = bad(&[("initial_live", "\"purple\"".into())], &slots[..1]);
    assert!(
        e.contains("`initial_live`") && e.contains("no slot `purple`"),
        "{e}"
    );
    let e = bad(&[], &slots);
    common::assert_contains(&e, "plain http://");
    let e = bad(&[("admin", "\"0.0.0.0:8089\"".into())], &slots[..1]);
    common::assert_contains(&e, "token_env");
    let e = bad(&[("live_listen", "\"8080\"".into())], &slots[..1]);
    common::assert_contains(&e, "`live_listen`");
    let tls = "{ listen = \"8443\", cert = \"c.pem\", key = \"k.pem\" }";
    let e = bad(&[("tls", tls.into())], &slots[..1]);
    common::assert_contains(&e, "`tls.listen`");
    let tls = "{ listen = \"127.0.0.1:8080\", cert = \"c.pem\", key = \"k.pem\" }";
    let e = bad(
        &[
            ("tls", tls.into()),
            ("live_listen", "\"127.0.0.1:8080\"".into()),
        ],
        &slots[..1],
    );
    assert!(e.contains("`tls.listen`") && e.contains("own port"), "{e}");
    let e = bad(&[("access_log", "\" \"".into())], &slots[..1]);
    common::assert_contains(&e, "`access_log`");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_proxy_serves_every_embedded_router_until_sigterm() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0"), ("blog", "0.9.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let (shop_live, shop_admin, blog_live, blog_admin, shop_tls) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let (first, first_key, first_pem) = self_signed(dir.path(), "first");
    let (second, second_key, second_pem) = self_signed(dir.path(), "second");
    let (cert, key) = (dir.path().join("site.crt"), dir.path().join("site.key"));
    std::fs::copy(&first, &cert).expect("copy");
    std::fs::copy(&first_key, &key).expect("copy");
    let text = format!(
        r#"
[[environment]]
name = "shop"
{shop_slots}
[[environment.router]]
kind = "embedded"
live_listen = "127.0.0.1:{shop_live}"
admin = "127.0.0.1:{shop_admin}"
state_file = "{dir}/shop.json"
tls = {{ listen = "127.0.0.1:{shop_tls}", cert = "{dir}/site.crt", key = "{dir}/site.key" }}

[[environment]]
name = "blog"
{blog_slots}
[[environment.router]]
kind = "embedded"
live_listen = "127.0.0.1:{blog_live}"
admin = "127.0.0.1:{blog_admin}"
state_file = "{dir}/blog.json"
"#,
        shop_slots = common::slot_tables(&[("blue", &s[0].url()), ("green", &s[1].url())]),
        blog_slots = common::slot_tables(&[("blog", &s[2].url())]),
        dir = dir.path().display()
    );
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, text).expect("write config");
    let cfg = config::load(&path).expect("config");

    let err = proxy::run_from_config(&cfg, Some("wiki"))
        .await
        .expect_err("unknown env");
    assert!(
        err.to_string().contains("no environment `wiki`") && err.to_string().contains("shop, blog"),
        "{err}"
    );

    let task = tokio::spawn(async move { proxy::run_from_config(&cfg, None).await });
    common::wait_ports(&[shop_live, blog_live], Duration::from_secs(5)).await;
    assert_eq!(
        get(&format!("http://127.0.0.1:{shop_live}/")).await.1,
        "blue"
    );
    assert_eq!(
        get(&format!("http://127.0.0.1:{blog_live}/")).await.1,
        "blog"
    );

    // SIGHUP re-reads the TLS certificate; the proxy keeps serving.
    let tls_addr = std::net::SocketAddr::from(([127, 0, 0, 1], shop_tls));
    let https = format!("https://localhost:{shop_tls}/");
    let r = tls_client(&first_pem, tls_addr)
        .get(&https)
        .send()
        .await
        .expect("GET over TLS");
    assert_eq!(r.headers()["x-slot"], "blue");
    std::fs::copy(&second, &cert).expect("copy");
    std::fs::copy(&second_key, &key).expect("copy");
    // SAFETY: kill(2) on our own pid with a signal run_from_config registered for.
    unsafe { libc::kill(libc::getpid(), libc::SIGHUP) };
    let reloaded = eventually(Duration::from_secs(10), || {
        let (c, url) = (tls_client(&second_pem, tls_addr), https.clone());
        async move { c.get(url).send().await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(
        reloaded,
        "after SIGHUP the TLS listener serves the new certificate"
    );

    // SIGTERM to this test process: run_from_config registered for it before it listened.
    // SAFETY: kill(2) on our own pid with a signal tokio now handles.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    let ended = tokio::time::timeout(Duration::from_secs(15), task).await;
    assert!(
        matches!(ended, Ok(Ok(Ok(())))),
        "run_from_config ends cleanly: {ended:?}"
    );
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", shop_live))
            .await
            .is_err(),
        "the live listener is closed"
    );
}

/// Throughput and latency straight to a slot and through the proxy. Run with:
/// `cargo test --release --test embedded_proxy -- --ignored --nocapture measure`
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn measure_direct_vs_through_the_proxy() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = world(&[&s[0], &s[1]], &[], &dir);
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let opts = |url: String| LoadOptions {
        url,
        concurrency: 32,
        max_requests: 20_000,
        max_duration: Duration::from_secs(60),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    };
    // Warm up both paths, then measure each.
    for url in [s[0].url(), format!("http://{}", h.live_addr())] {
        let mut o = opts(format!("{url}/"));
        o.max_requests = 2_000;
        load::run(o).await;
    }
    for (what, url) in [
        ("direct to the slot", s[0].url()),
        ("through the proxy", format!("http://{}", h.live_addr())),
    ] {
        let r = load::run(opts(format!("{url}/"))).await;
        assert_eq!(r.failed(), 0, "{:?}", r.first_errors);
        println!(
            "{what:>20}: {} requests, {:.0} req/s, p50 {} us, p99 {} us",
            r.sent,
            r.rps(),
            r.percentile_us(0.5).unwrap_or(0),
            r.percentile_us(0.99).unwrap_or(0)
        );
    }
}

/// A WebSocket slot written for the tests: it answers a handshake that still carries
/// `Connection: upgrade`, `Upgrade: websocket` and the key with `101`, then answers each
/// text frame with `SLOT:payload`. Frames are small (under 126 bytes).
async fn websocket_slot(slot: &'static str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut s).await else {
                    return;
                };
                let lower = head.to_ascii_lowercase();
                let asked = lower.contains("\r\nupgrade: websocket\r\n")
                    && lower.contains("\r\nconnection: upgrade\r\n")
                    && lower.contains("\r\nsec-websocket-key: ");
                if !asked {
                    let _ = s
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                // RFC 6455 §4.2.2: the key and the protocol's GUID, SHA-1, base64 (a real
                // client checks it).
                let key = head
                    .lines()
                    .find_map(|l| {
                        l.split_once(':')
                            .filter(|(k, _)| k.eq_ignore_ascii_case("sec-websocket-key"))
                            .map(|(_, v)| v.trim().to_string())
                    })
                    .unwrap_or_default();
                let digest = ring::digest::digest(
                    &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                    format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes(),
                );
                let accept = base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    digest.as_ref(),
                );
                let hello = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\
                     connection: upgrade\r\nsec-websocket-accept: {accept}\r\nx-slot: {slot}\r\n\r\n"
                );
                if s.write_all(hello.as_bytes()).await.is_err() {
                    return;
                }
                while let Some(text) = read_frame(&mut s).await {
                    let answer = frame(format!("{slot}:{text}").as_bytes(), false);
                    if s.write_all(&answer).await.is_err() {
                        return;
                    }
                }
                let _ = s.shutdown().await;
                let _ = s.read(&mut [0u8; 1]).await;
            });
        }
    });
    (addr, task)
}

/// The request or response head, up to the blank line (bytes after it are not expected).
async fn read_head(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.ok()? == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// One small WebSocket text frame, masked as a client must send it.
fn frame(payload: &[u8], masked: bool) -> Vec<u8> {
    assert!(payload.len() < 126);
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x81, payload.len() as u8 | if masked { 0x80 } else { 0 }];
    if masked {
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// Read one small text frame (masked or not); `None` at the end of the connection or on a
/// close frame.
async fn read_frame(s: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut h = [0u8; 2];
    s.read_exact(&mut h).await.ok()?;
    if h[0] & 0x0f == 0x8 {
        return None;
    }
    let len = usize::from(h[1] & 0x7f);
    assert!(len < 126, "the tests send small frames only");
    let mut mask = [0u8; 4];
    if h[1] & 0x80 != 0 {
        s.read_exact(&mut mask).await.ok()?;
    }
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await.ok()?;
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i % 4];
    }
    Some(String::from_utf8_lossy(&payload).into_owned())
}

/// A WebSocket client connection through `addr`: the handshake's answer head and the stream.
async fn websocket_connect(addr: std::net::SocketAddr) -> (String, tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let hello = format!(
        "GET /chat HTTP/1.1\r\nhost: {addr}\r\nupgrade: websocket\r\n\
         connection: keep-alive, Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         sec-websocket-version: 13\r\n\r\n"
    );
    s.write_all(hello.as_bytes()).await.expect("handshake");
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .expect("handshake answered in time")
        .expect("handshake answered");
    (head, s)
}

/// Send `text` and wait for the slot's answer.
async fn websocket_say(s: &mut tokio::net::TcpStream, text: &str) -> Option<String> {
    use tokio::io::AsyncWriteExt;
    s.write_all(&frame(text.as_bytes(), true)).await.ok()?;
    tokio::time::timeout(Duration::from_secs(5), read_frame(s))
        .await
        .ok()
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_stays_on_its_slot_across_a_switch_and_a_drain_waits_for_it() {
    let (blue, _b) = websocket_slot("blue").await;
    let (green, _g) = websocket_slot("green").await;
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = parse_world(&world_toml(
        "shop",
        &[
            ("blue", format!("address = \"http://{blue}\"")),
            ("green", format!("address = \"http://{green}\"")),
        ],
        &[],
        &dir,
    ));
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);

    let (head, mut old) = websocket_connect(h.live_addr()).await;
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101 "), "{head}");
    assert!(lower.contains("\r\nupgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("\r\nconnection: upgrade\r\n"), "{head}");
    assert!(lower.contains("\r\nx-slot: blue\r\n"), "{head}");
    assert_eq!(
        websocket_say(&mut old, "one").await.as_deref(),
        Some("blue:one")
    );
    observe_until(
        &d,
        Duration::from_secs(5),
        "the WebSocket as one session on blue",
        |st| st.slots["blue"].sessions == Some(1),
    )
    .await;

    d.switch_live("green").await.expect("switch to green");
    assert_eq!(
        websocket_say(&mut old, "two").await.as_deref(),
        Some("blue:two"),
        "an open WebSocket is not moved by a switch"
    );
    let (head, mut new) = websocket_connect(h.live_addr()).await;
    assert!(
        head.to_ascii_lowercase().contains("\r\nx-slot: green\r\n"),
        "{head}"
    );
    assert_eq!(
        websocket_say(&mut new, "three").await.as_deref(),
        Some("green:three")
    );

    d.drain(&Target::slot("blue")).await.expect("drain blue");
    let st = observe(&d).await;
    assert_eq!(st.slots["blue"].admin, AdminState::Drain);
    assert_eq!(
        st.slots["blue"].sessions,
        Some(1),
        "the drain shows the open WebSocket until it closes"
    );
    assert_eq!(
        websocket_say(&mut old, "four").await.as_deref(),
        Some("blue:four")
    );
    drop(old);
    observe_until(
        &d,
        Duration::from_secs(5),
        "sessions on blue at 0 after the close",
        |st| st.slots["blue"].sessions == Some(0),
    )
    .await;
    let metrics = scrape(&h).await;
    let upgraded: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("cutover_proxy_requests_total{") && l.contains("code=\"1xx\""))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert_eq!(upgraded.len(), 2, "one 101 on each slot: {metrics}");
    assert!(
        upgraded.iter().all(|l| l.ends_with(" 1")),
        "a WebSocket counts as one request: {upgraded:?}"
    );

    // Stopping the proxy ends the spliced connection that is still open.
    h.stop().await;
    let ended = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut new)).await;
    assert_eq!(
        ended.ok(),
        Some(None),
        "the WebSocket ended when the proxy stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_one_json_line_per_request_with_query_secrets_redacted() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let log = dir.path().join("access.log");
    let (env, cfg) = world(
        &[&s[0], &s[1]],
        &[("access_log", format!("\"{}\"", log.display()))],
        &dir,
    );
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);
    let live = h.live_addr();

    let r = client()
        .get(format!("http://{live}/version?password=hunter2222&page=2"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let body_len = r.bytes().await.expect("body").len();
    d.switch_live("green").await.expect("switch to green");
    let r = client()
        .post(format!("http://{live}/headers"))
        .body("not logged")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 200);
    r.bytes().await.expect("body");
    // Answered by the proxy itself: no slot, no node.
    let answer = raw_exchange(live, b"GET /x HTTP/1.1\r\nconnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");

    let mut lines = Vec::new();
    let complete = eventually(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        std::future::ready(lines.len() >= 3)
    })
    .await;
    assert!(complete, "three lines in the access log: {lines:?}");
    assert_eq!(lines.len(), 3, "{lines:?}");
    let mut v: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // A line is written when its answer has been sent: order them as the test sent them.
    v.sort_by_key(|l| (l["status"] == 400, l["method"] == "POST"));

    assert_eq!(v[0]["method"], "GET");
    assert_eq!(v[0]["status"], 200);
    assert_eq!(
        (&v[0]["slot"], &v[0]["node"]),
        (&"blue".into(), &"blue".into())
    );
    assert_eq!(v[0]["client"], "127.0.0.1");
    assert_eq!(v[0]["bytes"], body_len);
    assert!(
        v[0]["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{}",
        lines[0]
    );
    assert!(
        v[0]["time"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{}",
        lines[0]
    );
    let path = v[0]["path"].as_str().expect("path");
    assert!(
        path.starts_with("/version?password=") && path.ends_with("&page=2"),
        "{path}"
    );
    assert!(
        !lines.concat().contains("hunter2222"),
        "a query secret was logged: {lines:?}"
    );

    assert_eq!(
        (&v[1]["method"], &v[1]["slot"]),
        (&"POST".into(), &"green".into())
    );
    assert!(
        !lines.concat().contains("not logged"),
        "bodies are never logged"
    );

    assert_eq!(
        (&v[2]["status"], &v[2]["slot"]),
        (&400.into(), &serde_json::Value::Null)
    );

    let metrics = scrape(&h).await;
    common::assert_contains(
        &metrics,
        "cutover_proxy_access_log_dropped_total{env=\"shop\"} 0",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_terminates_redirects_plain_http_and_reloads_its_certificate_without_dropping_requests()
{
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let (first, first_key, first_pem) = self_signed(dir.path(), "first");
    let (cert, key) = (dir.path().join("site.crt"), dir.path().join("site.key"));
    std::fs::copy(&first, &cert).expect("copy");
    std::fs::copy(&first_key, &key).expect("copy");
    let tls = format!(
        "{{ listen = \"127.0.0.1:0\", cert = \"{}\", key = \"{}\", redirect = true }}",
        cert.display(),
        key.display()
    );
    let (env, cfg) = world(&[&s[0], &s[1]], &[("tls", tls)], &dir);
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);
    let tls_addr = h.tls_addr().expect("a TLS listener");
    let https = format!("https://localhost:{}", tls_addr.port());

    let trusts_first = tls_client(&first_pem, tls_addr);
    let r = trusts_first
        .get(format!("{https}/headers"))
        .send()
        .await
        .expect("GET over TLS");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-slot"], "blue");
    let seen: serde_json::Value = r.json().await.expect("headers as JSON");
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");

    // The plain listener sends browsers to HTTPS, path and query kept.
    let r = tls_client(&first_pem, h.live_addr())
        .get(format!(
            "http://localhost:{}/cart?page=2",
            h.live_addr().port()
        ))
        .send()
        .await
        .expect("plain GET");
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("{https}/cart?page=2").as_str()
    );

    // A request in flight over the first certificate's connection while it is replaced.
    let slow_client = trusts_first.clone();
    let slow_url = format!("{https}/slow?ms=1500");
    let slow = tokio::spawn(async move {
        let r = slow_client
            .get(slow_url)
            .send()
            .await
            .expect("slow request");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    });
    observe_until(
        &d,
        Duration::from_secs(5),
        "the slow request on blue",
        |st| st.slots["blue"].sessions == Some(1),
    )
    .await;
    let (second, second_key, second_pem) = self_signed(dir.path(), "second");
    std::fs::copy(&second, &cert).expect("copy");
    std::fs::copy(&second_key, &key).expect("copy");
    let admin = format!("http://{}", h.admin_addr());
    let r = client()
        .post(format!("{admin}/tls/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    let r = tls_client(&second_pem, tls_addr)
        .get(format!("{https}/version"))
        .send()
        .await
        .expect("a new connection gets the second certificate");
    assert_eq!(r.status(), 200);
    let refused = tls_client(&first_pem, tls_addr)
        .get(format!("{https}/version"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a client that trusts only the first certificate is refused after the reload"
    );
    let (status, body) = slow.await.expect("slow task");
    assert_eq!(
        (status, body.contains("slow answer from blue")),
        (200, true),
        "{body}"
    );

    // A broken key is refused and the certificate in use stays.
    std::fs::write(&key, "not a key\n").expect("write");
    let r = client()
        .post(format!("{admin}/tls/reload"))
        .send()
        .await
        .expect("reload");
    assert_eq!(r.status(), 422);
    let why = r.text().await.expect("body");
    assert!(why.contains("site.key") && why.contains("stays"), "{why}");
    let r = tls_client(&second_pem, tls_addr)
        .get(format!("{https}/version"))
        .send()
        .await
        .expect("still served with the second certificate");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_holds_live_requests_until_resume_within_its_bounds_in_count_and_time() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = world(
        &[&s[0], &s[1]],
        &[
            ("pause_timeout", "5".into()),
            ("pause_max_held", "2".into()),
        ],
        &dir,
    );
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);
    let (live, admin) = (h.live_addr(), format!("http://{}", h.admin_addr()));
    let post = |what: &str| {
        let url = format!("{admin}/{what}");
        async move {
            let r = client().post(url).send().await.expect("admin call");
            assert_eq!(r.status(), 200);
        }
    };
    let send = || {
        let url = format!("http://{live}/version");
        tokio::spawn(async move {
            let started = Instant::now();
            let r = client().get(url).send().await.expect("request");
            let slot = r.headers().get("x-slot").map(|v| v.as_bytes().to_vec());
            (r.status().as_u16(), slot, started.elapsed())
        })
    };

    post("pause").await;
    let (first, second) = (send(), send());
    observe_until(&d, Duration::from_secs(5), "two requests held", |st| {
        st.notes
            .iter()
            .any(|n| n.starts_with("paused: 2 requests held"))
    })
    .await;
    assert_eq!(
        s[0].controls
            .in_flight
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    let (status, _, _) = send().await.expect("third");
    assert_eq!(status, 503, "a third request is over pause_max_held");
    post("resume").await;
    for held in [first, second] {
        let (status, slot, _) = held.await.expect("held request");
        assert_eq!(
            (status, slot.as_deref()),
            (200, Some(&b"blue"[..])),
            "released to the live slot"
        );
    }
    assert!(
        observe(&d)
            .await
            .notes
            .iter()
            .all(|n| !n.starts_with("paused"))
    );

    post("pause").await;
    let (status, _, waited) = send().await.expect("timed out request");
    assert_eq!(status, 503, "held longer than pause_timeout");
    assert!(waited >= Duration::from_millis(4900), "{waited:?}");
    post("resume").await;
    assert_eq!(get(&format!("http://{live}/")).await.0, 200);

    let metrics = client()
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    for line in [
        "cutover_proxy_local_responses_total{env=\"shop\",reason=\"paused\"} 2",
        "cutover_proxy_paused{env=\"shop\"} 0",
        "cutover_proxy_held_requests{env=\"shop\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}

/// WebSocket slots blue and green behind a proxy with `upgrade_drain_timeout` (seconds): the
/// slots' tasks, the temp dir, the proxy and its driver (keep them all for the test's length).
async fn websocket_world(
    drain_timeout: &str,
) -> (
    [tokio::task::JoinHandle<()>; 2],
    TempDir,
    ProxyHandle,
    embedded::Driver,
) {
    let (blue, b) = websocket_slot("blue").await;
    let (green, g) = websocket_slot("green").await;
    let dir = TempDir::new().expect("tempdir");
    let (env, cfg) = parse_world(&world_toml(
        "shop",
        &[
            ("blue", format!("address = \"http://{blue}\"")),
            ("green", format!("address = \"http://{green}\"")),
        ],
        &[("upgrade_drain_timeout", drain_timeout.into())],
        &dir,
    ));
    let h = proxy::start(&env, &cfg).await.expect("proxy starts");
    let d = driver(&h, &env, &cfg);
    ([b, g], dir, h, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_drain_timeout_closes_an_old_websocket_after_a_switch_with_a_close_frame() {
    use tokio::io::AsyncReadExt;
    let (_slots, _dir, h, d) = websocket_world("1").await;

    let (_, mut old) = websocket_connect(h.live_addr()).await;
    assert_eq!(
        websocket_say(&mut old, "one").await.as_deref(),
        Some("blue:one")
    );
    // A switch there and back again before the timeout keeps it open past the timeout.
    let first = Instant::now();
    d.switch_live("green").await.expect("switch to green");
    d.switch_live("blue").await.expect("switch back to blue");
    let quiet = Duration::from_millis(1800).saturating_sub(first.elapsed());
    let closed = tokio::time::timeout(quiet, old.read(&mut [0u8; 1])).await;
    assert!(
        closed.is_err(),
        "nothing arrived, the WebSocket was not closed: {closed:?}"
    );
    assert_eq!(
        websocket_say(&mut old, "still").await.as_deref(),
        Some("blue:still")
    );
    let (_, mut kept) = websocket_connect(h.live_addr()).await;

    d.switch_live("green").await.expect("switch to green");
    let (_, mut new) = websocket_connect(h.live_addr()).await;
    assert_eq!(
        websocket_say(&mut new, "two").await.as_deref(),
        Some("green:two")
    );
    let switched = Instant::now();
    for ws in [&mut old, &mut kept] {
        let mut close = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(10), ws.read_exact(&mut close))
            .await
            .expect("closed within the deadline")
            .expect("a close frame");
        assert_eq!(
            close,
            [0x88, 0x02, 0x03, 0xe9],
            "a close frame, 1001 going away"
        );
        let rest = tokio::time::timeout(Duration::from_secs(5), ws.read(&mut [0u8; 16]))
            .await
            .expect("then the end");
        assert_eq!(rest.ok(), Some(0), "then the connection ends");
    }
    assert!(
        switched.elapsed() >= Duration::from_millis(900),
        "not before upgrade_drain_timeout: {:?}",
        switched.elapsed()
    );
    observe_until(&d, Duration::from_secs(5), "sessions on blue at 0", |st| {
        st.slots["blue"].sessions == Some(0)
    })
    .await;
    assert_eq!(
        websocket_say(&mut new, "three").await.as_deref(),
        Some("green:three"),
        "the new slot's WebSocket stays open"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_weights_split_the_live_traffic_and_zero_puts_it_all_back() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (_dir, _env, _cfg, h, d) = up(&[&s[0], &s[1]], &[]).await;
    assert!(d.supports(cutover::router::Verb::Weights));
    let url = format!("http://{}/", h.live_addr());
    let servers = [&s[0], &s[1]];

    for percent in [5u8, 25, 50, 100, 0] {
        d.set_weights("blue", "green", percent)
            .await
            .unwrap_or_else(|e| panic!("set weights to {percent} %: {e:#}"));
        let st = observe(&d).await;
        match percent {
            0 => assert_eq!(st.weights, None, "0 % reports no split"),
            p => assert_eq!(
                st.weights,
                Some(cutover::model::Weights {
                    live: "blue".into(),
                    canary: "green".into(),
                    canary_percent: p,
                })
            ),
        }
        assert_eq!(st.live.as_deref(), Some("blue"), "a split is not a switch");
        common::assert_canary_share(&servers, "green", &url, 2_000, percent).await;
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_are_refused_when_they_do_not_fit_and_end_with_a_switch() {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0"), ("staging", "3.0.0")]).await;
    let (_dir, env, cfg, h, d) = up(&[&s[0], &s[1], &s[2]], &[]).await;

    let refused = |r: color_eyre::Result<()>, what: &str, want: &str| {
        let e = format!("{:#}", r.expect_err(what));
        assert!(e.contains(want), "{what}: {e}");
    };
    refused(
        d.set_weights("green", "staging", 10).await,
        "green is not live",
        "is not the live slot",
    );
    refused(
        d.set_weights("blue", "blue", 10).await,
        "the live slot as its own canary",
        "a canary is another slot",
    );
    refused(
        d.set_weights("blue", "purple", 10).await,
        "an unknown slot",
        "unknown slot `purple`",
    );
    refused(
        d.set_weights("blue", "green", 101).await,
        "more than 100 %",
        "0 to 100",
    );
    d.drain(&Target::slot("staging"))
        .await
        .expect("drain staging");
    refused(
        d.set_weights("blue", "staging", 10).await,
        "a drained canary",
        "draining",
    );
    assert_eq!(
        observe(&d).await.weights,
        None,
        "nothing refused was applied"
    );

    d.undrain(&Target::slot("staging"))
        .await
        .expect("undrain staging");
    d.set_weights("blue", "staging", 25).await.expect("25 %");
    // The split is on /metrics too, by slot, so a dashboard shows it beside the traffic.
    let metrics = scrape(&h).await;
    let weight = |slot: &str| {
        let key = format!("cutover_proxy_weight_percent{{env=\"shop\",slot=\"{slot}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(key.as_str()))
            .map(str::to_string)
    };
    assert_eq!(
        (weight("blue"), weight("staging"), weight("green")),
        (Some("75".into()), Some("25".into()), Some("0".into())),
        "{metrics}"
    );
    refused(
        d.drain(&Target::slot("staging")).await,
        "draining the canary",
        "the canary slot",
    );
    // The split survives a restart, from the state file.
    let live_port = h.live_addr().port();
    h.stop().await;
    let mut cfg2 = cfg.clone();
    cfg2.live_listen = format!("127.0.0.1:{live_port}");
    let h = proxy::start(&env, &cfg2).await.expect("proxy restarts");
    let d = driver(&h, &env, &cfg2);
    let st = observe(&d).await;
    assert_eq!(
        st.weights
            .as_ref()
            .map(|w| (w.canary.as_str(), w.canary_percent)),
        Some(("staging", 25))
    );
    // Switching live ends the split: the new live slot takes everything.
    d.switch_live("staging")
        .await
        .expect("switch to the canary");
    let st = observe(&d).await;
    assert_eq!(st.live.as_deref(), Some("staging"));
    assert_eq!(st.weights, None);
    let served = common::served_during(&s, &format!("http://{}/", h.live_addr()), 40).await;
    assert_eq!(
        served,
        vec![0, 0, 40],
        "after the switch every answer is staging's"
    );
    h.stop().await;
}

/// The proxy's /metrics, as text.
async fn scrape(h: &ProxyHandle) -> String {
    client()
        .get(format!("http://{}/metrics", h.admin_addr()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body")
}

/// A WebSocket client no one here wrote (Debian's python3-websockets): it stays on its slot
/// across a swap while new clients reach the new one, and the proxy closes it (1001) after
/// `upgrade_drain_timeout`.
const PY_WEBSOCKETS: &str = r#"
import asyncio, sys, websockets
async def main(uri):
    async with websockets.connect(uri, open_timeout=30, close_timeout=10) as ws:
        await ws.send("one"); print("old", await ws.recv(), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await ws.send("two"); print("old", await ws.recv(), flush=True)
        async with websockets.connect(uri, open_timeout=30) as new:
            await new.send("three"); print("new", await new.recv(), flush=True)
        try:
            await asyncio.wait_for(ws.recv(), 60)
            print("not closed", flush=True)
        except websockets.ConnectionClosed as e:
            rcvd = getattr(e, "rcvd", None)
            print("closed", rcvd.code if rcvd else getattr(e, "code", None), flush=True)
asyncio.run(main(sys.argv[1]))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_websockets_client_stays_on_its_slot_across_a_swap_until_upgrade_drain_timeout() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let test = "a_python_websockets_client_stays_on_its_slot_across_a_swap";
    // Debian's python3, where python3-websockets is installed (not a pyenv one on PATH).
    let python = match std::path::Path::new("/usr/bin/python3").exists() {
        true => std::path::PathBuf::from("/usr/bin/python3"),
        false => match common::require_binary(test, "python3") {
            Some(p) => p,
            None => return,
        },
    };
    let has_module = std::process::Command::new(&python)
        .args(["-c", "import websockets"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_module {
        assert!(
            std::env::var("CUTOVER_REQUIRE_PROXIES").as_deref() != Ok("1"),
            "{test}: python3-websockets is not installed and CUTOVER_REQUIRE_PROXIES=1; \
             scripts/test installs it"
        );
        eprintln!("\n*** SKIPPED {test}: python3-websockets is not installed. ***\n");
        return;
    }
    // Long enough for the old client's second message after the swap on a slow machine.
    let (_slots, _dir, h, d) = websocket_world("5").await;
    let mut py = tokio::process::Command::new(&python)
        .args(["-c", PY_WEBSOCKETS, &format!("ws://{}/", h.live_addr())])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 starts");
    let mut lines = tokio::io::BufReader::new(py.stdout.take().expect("stdout")).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(90), lines.next_line())
            .await
            .expect("the client answers within the deadline")
            .expect("its output")
            .unwrap_or_default()
    };
    assert_eq!(next().await, "old blue:one");
    d.switch_live("green").await.expect("switch to green");
    let mut stdin = py.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").await.expect("tell the client");
    assert_eq!(
        next().await,
        "old blue:two",
        "the open WebSocket stays on blue"
    );
    assert_eq!(next().await, "new green:three", "a new one reaches green");
    assert_eq!(
        next().await,
        "closed 1001",
        "closed, going away, after the timeout"
    );
    let status = tokio::time::timeout(Duration::from_secs(30), py.wait())
        .await
        .expect("the client exits")
        .expect("its status");
    assert!(status.success(), "{status}");
}
