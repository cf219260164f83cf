//! The embedded proxy at the edge, as a single host runs it in production: request pausing
//! from the CLI while the only slot restarts in place, TLS on the preview listener, HTTP/2 by
//! ALPN (curl and h2load, clients no one here wrote).
//!
//! Every proxy listens on 127.0.0.1 and free ports, keeps its state in its own temp dir, and
//! every load is bounded in count and time.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::{
    SlotServer, cutover_cli, eventually, free_port, printed, require_binary, self_signed,
    start_embedded, tls_client,
};
use cutover::proxy::ProxyHandle;
use tempfile::TempDir;

/// A proxy of environment `shop` started from a config file in its own temp dir (which
/// `cutover` commands then read too): the slots, and `router` lines added to the embedded
/// router's table.
struct Edge {
    dir: TempDir,
    text: String,
    proxy: ProxyHandle,
}

impl Edge {
    async fn start(slots: &[&SlotServer], router: &str) -> Edge {
        let dir = TempDir::new().expect("tempdir");
        let mut text = format!(
            "[settings]\nstate_dir = \"{}\"\n\n[[environment]]\nname = \"shop\"\n\n",
            dir.path().join("state").display()
        );
        text.push_str(&common::versioned_slot_tables(slots.iter().copied()));
        text.push_str(&format!(
            "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{}\"\n\
             live_listen = \"127.0.0.1:{}\"\nstate_file = \"{}\"\n{router}\n",
            free_port(),
            free_port(),
            dir.path().join("proxy.json").display()
        ));
        let (_, proxy) = start_embedded(dir.path(), &text).await;
        Edge { dir, text, proxy }
    }

    /// `cutover ARGS` on this config; fails the test unless it exits 0. Its output.
    async fn cli(&self, args: &[&str]) -> String {
        let o = cutover_cli(self.dir.path(), &self.text, args).await;
        let out = printed(&o);
        assert_eq!(o.status.code(), Some(0), "cutover {args:?}:\n{out}");
        out
    }

    /// `cutover status shop --json`: the environment's entry.
    async fn status(&self) -> serde_json::Value {
        let out = cutover_cli(self.dir.path(), &self.text, &["status", "shop", "--json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", printed(&out)));
        v["environments"][0].clone()
    }

    fn live_url(&self) -> String {
        format!("http://{}/", self.proxy.live_addr())
    }
}

/// The proxy's own view of the live slot's requests in flight and of the pause.
fn in_flight(p: &ProxyHandle, slot: &str) -> u64 {
    p.state().slots[slot].sessions.unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pausing_from_the_cli_while_the_only_slot_restarts_in_place_fails_no_request() {
    let blue = SlotServer::start("blue", "1.0.0", common::loopback(0))
        .await
        .expect("blue");
    let addr = blue.addr;
    let edge = Edge::start(&[&blue], "pause_timeout = 120").await;

    // A bounded load: 8 keep-alive connections, at most 200,000 requests or 120 s, each request
    // waiting as long as the pause may hold it.
    let mut o = cutover::load::LoadOptions::new(edge.live_url());
    o.concurrency = 8;
    o.max_requests = 200_000;
    o.max_duration = Duration::from_secs(120);
    o.timeout = Duration::from_secs(120);
    let run = cutover::load::start(o);
    let sent_by = |n: u64| {
        let sent = run.sent.clone();
        eventually(Duration::from_secs(30), move || {
            let sent = sent.clone();
            async move { sent.load(SeqCst) >= n }
        })
    };
    assert!(sent_by(200).await, "the load is running");

    let out = edge.cli(&["maintenance", "shop", "pause", "--yes"]).await;
    assert!(out.contains("paused"), "{out}");
    // New requests are held; the ones already at the slot finish.
    let p = &edge.proxy;
    let held = eventually(Duration::from_secs(30), || async {
        let st = p.state();
        st.pause.is_some_and(|x| x.held > 0) && in_flight(p, "blue") == 0
    })
    .await;
    assert!(held, "requests held and none at the slot: {:?}", p.state());
    let status = edge.status().await;
    assert_eq!(status["pause"]["paused"], true, "{status}");
    assert!(status["pause"]["held"].as_u64() > Some(0), "{status}");

    // The operator restarts the only slot in place: stopped, then started on its address.
    let served_before = blue.controls.served.load(SeqCst);
    blue.stop();
    drop(blue);
    let slot = std::sync::Mutex::new(None);
    let restarted = eventually(Duration::from_secs(30), || async {
        let started = SlotServer::start("blue", "1.0.1", addr).await.ok();
        let up = started.is_some();
        *slot.lock().expect("lock") = started;
        up
    })
    .await;
    assert!(restarted, "blue listens on {addr} again");
    let blue = slot.into_inner().expect("lock").expect("restarted");
    assert_eq!(common::get(&format!("{}/health", blue.url())).await.0, 200);

    let out = edge.cli(&["maintenance", "shop", "resume", "--yes"]).await;
    assert!(out.contains("not paused"), "{out}");
    let target = run.sent.load(SeqCst) + 500;
    assert!(sent_by(target).await, "the load goes on after the resume");
    common::assert_none_failed(&run.finish().await);
    assert!(
        blue.controls.served.load(SeqCst) >= 500,
        "the restarted slot served the held requests and the rest (before: {served_before})"
    );
    assert_eq!(edge.proxy.state().pause.map(|x| x.refused), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_pause_bound_requests_get_503_and_status_reports_them() {
    let blue = SlotServer::start("blue", "1.0.0", common::loopback(0))
        .await
        .expect("blue");
    let edge = Edge::start(&[&blue], "pause_max_held = 1\npause_timeout = 60").await;
    edge.cli(&["maintenance", "shop", "pause", "--yes"]).await;
    let url = edge.live_url();
    let held = tokio::spawn({
        let url = url.clone();
        async move { common::get(&url).await.0 }
    });
    let p = &edge.proxy;
    let one_held = eventually(Duration::from_secs(10), || async {
        p.state().pause.is_some_and(|x| x.held == 1)
    })
    .await;
    assert!(one_held, "{:?}", p.state());
    let (status, body, _) = common::get(&url).await;
    assert_eq!(status, 503, "over pause_max_held: {body}");

    let st = edge.status().await;
    assert_eq!(
        (&st["pause"]["held"], &st["pause"]["refused"]),
        (&serde_json::json!(1), &serde_json::json!(1)),
        "{st}"
    );
    let text = edge.cli(&["status", "shop"]).await;
    assert!(
        text.contains("requests paused, 1 held, 1 refused (503)"),
        "{text}"
    );
    edge.cli(&["maintenance", "shop", "resume", "--yes"]).await;
    assert_eq!(held.await.expect("held request"), 200, "released");
    let text = edge.cli(&["status", "shop"]).await;
    assert!(
        text.contains("requests not paused, 1 refused (503) since the pause began"),
        "{text}"
    );
}

/// `tls` or `preview_tls` table lines for `cert`/`key`, plus `more`.
fn tls_table(field: &str, cert: &std::path::Path, key: &std::path::Path, more: &str) -> String {
    format!(
        "{field} = {{ listen = \"127.0.0.1:{}\", cert = \"{}\", key = \"{}\"{more} }}",
        free_port(),
        cert.display(),
        key.display()
    )
}

/// GET `SCHEME://localhost:PORT/PATH` from a client that trusts `pem` and finds `localhost` at
/// `addr`.
async fn tls_get(
    pem: &[u8],
    scheme: &str,
    addr: std::net::SocketAddr,
    path: &str,
) -> reqwest::Response {
    let url = format!("{scheme}://localhost:{}{path}", addr.port());
    let r = tls_client(pem, addr).get(&url).send().await;
    r.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_preview_listener_terminates_tls_too_and_its_plain_port_redirects() {
    let s = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let certs = TempDir::new().expect("tempdir");
    let (cert, key, pem) = self_signed(certs.path(), "preview");
    let router = format!(
        "preview_listen = \"127.0.0.1:{}\"\n{}\n",
        free_port(),
        tls_table("preview_tls", &cert, &key, ", redirect = true")
    );
    let edge = Edge::start(&[&s[0], &s[1]], &router).await;
    let addr = edge
        .proxy
        .preview_tls_addr()
        .expect("a preview TLS listener");
    assert_eq!(edge.proxy.tls_addr(), None, "no live TLS listener");

    let r = tls_get(&pem, "https", addr, "/headers").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-slot"], "green", "the preview slot answers");
    let seen: serde_json::Value = r.json().await.expect("headers as JSON");
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");

    let plain = edge.proxy.preview_addr().expect("a plain preview listener");
    let r = tls_get(&pem, "http", plain, "/cart?x=1").await;
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()["location"],
        format!("https://localhost:{}/cart?x=1", addr.port()).as_str()
    );
    // The live listener has no `redirect`: it serves plain HTTP as before.
    let (status, body, _) = common::get(&edge.live_url()).await;
    assert_eq!(status, 200, "{body}");
}

/// `curl VERSION --include` over TLS to `localhost:PORT/PATH`, trusting `cert` (Debian's
/// curl, built with nghttp2): its output, after it exits 0.
async fn curl_tls(version: &'static str, cert: &std::path::Path, port: u16, path: &str) -> String {
    let cacert = cert.display().to_string();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let url = format!("https://localhost:{port}{path}");
    tokio::task::spawn_blocking(move || {
        let o = std::process::Command::new("curl")
            .args(["--silent", "--show-error", "--max-time", "20", version])
            .args([
                "--include",
                "--cacert",
                &cacert,
                "--resolve",
                &resolve,
                &url,
            ])
            .output()
            .expect("curl runs");
        let out = printed(&o);
        assert!(o.status.success(), "curl {version} {url}: {out}");
        out
    })
    .await
    .expect("curl")
}

/// A proxy whose live TLS listener has a certificate made now and the table's `more` keys:
/// (the proxy, the certificate's dir, the certificate).
async fn tls_edge(slots: &[&SlotServer], more: &str) -> (Edge, TempDir, std::path::PathBuf) {
    let certs = TempDir::new().expect("tempdir");
    let (cert, key, _) = self_signed(certs.path(), "site");
    let edge = Edge::start(slots, &tls_table("tls", &cert, &key, more)).await;
    (edge, certs, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_by_alpn_on_the_tls_listener_for_curl_and_h2load_with_http_1_1_to_the_slot() {
    let test = "http2_by_alpn_on_the_tls_listener";
    let Some(h2load) = require_binary(test, "h2load") else {
        return;
    };
    if require_binary(test, "curl").is_none() {
        return;
    }
    let s = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (edge, _certs, cert) = tls_edge(&[&s[0], &s[1]], "").await;
    let port = edge.proxy.tls_addr().expect("a TLS listener").port();

    // curl --http2 gets HTTP/2; the slot (HTTP/1.1 only) sees the host and https.
    let out = curl_tls("--http2", &cert, port, "/headers").await;
    assert!(out.starts_with("HTTP/2 200"), "{out}");
    assert!(out.contains("x-slot: blue"), "{out}");
    let body = &out[out.find("\r\n\r\n").expect("a head") + 4..];
    let seen: serde_json::Value = serde_json::from_str(body).expect("headers as JSON");
    assert_eq!(seen["host"], format!("localhost:{port}"), "{seen}");
    assert_eq!(seen["x-forwarded-proto"], "https", "{seen}");
    // A client that speaks only HTTP/1.1 gets HTTP/1.1 on the same port.
    let out = curl_tls("--http1.1", &cert, port, "/").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");

    // h2load: 4 connections, 10 streams each at once, 4,000 requests in all, every one a 2xx.
    let target = format!("https://127.0.0.1:{port}/");
    let o = tokio::task::spawn_blocking(move || {
        std::process::Command::new(h2load)
            .args(["-n", "4000", "-c", "4", "-m", "10", "-T", "30", &target])
            .output()
            .expect("h2load runs")
    })
    .await
    .expect("join");
    let out = printed(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("Application protocol: h2"), "{out}");
    assert!(
        out.contains("requests: 4000 total, 4000 started, 4000 done, 4000 succeeded, 0 failed"),
        "{out}"
    );
    assert!(out.contains("status codes: 4000 2xx"), "{out}");
    assert!(s[0].controls.served.load(SeqCst) >= 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_can_be_turned_off_and_curl_then_gets_http_1_1() {
    if require_binary("http2_can_be_turned_off", "curl").is_none() {
        return;
    }
    let s = common::slots(&[("blue", "1.0.0")]).await;
    let (edge, _certs, cert) = tls_edge(&[&s[0]], ", http2 = false").await;
    let port = edge.proxy.tls_addr().expect("a TLS listener").port();
    let out = curl_tls("--http2", &cert, port, "/").await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

/// Two environments, `shop` (slots blue, green) and `blog` (slots b1, b2), whose embedded
/// routers share one live listener; `shop_keys` and `blog_keys` are added to their tables.
/// The config text and the live port.
fn two_sites(s: &[SlotServer], dir: &TempDir, shop_keys: &str, blog_keys: &str) -> (String, u16) {
    let live = free_port();
    let mut text = format!(
        "[settings]\nstate_dir = \"{}\"\n",
        dir.path().join("state").display()
    );
    for (name, slots, keys) in [("shop", &s[..2], shop_keys), ("blog", &s[2..], blog_keys)] {
        text.push_str(&format!("\n[[environment]]\nname = \"{name}\"\n\n"));
        text.push_str(&common::versioned_slot_tables(slots));
        text.push_str(&format!(
            "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{}\"\n\
             live_listen = \"127.0.0.1:{live}\"\nstate_file = \"{}\"\n{keys}\n",
            free_port(),
            dir.path().join(format!("proxy-{name}.json")).display()
        ));
    }
    (text, live)
}

/// The slot servers of [`two_sites`]: shop's blue and green, blog's b1 and b2.
async fn site_slots() -> Vec<SlotServer> {
    let specs = [("blue", "1.0.0"), ("green", "2.0.0"), ("b1", "1.0.0")];
    common::slots(&[specs[0], specs[1], specs[2], ("b2", "2.0.0")]).await
}

/// Start every embedded router of `text` as `cutover proxy` does: (config, handles or the
/// error).
async fn try_start_all(
    dir: &TempDir,
    text: &str,
) -> (
    cutover::config::Config,
    color_eyre::Result<Vec<ProxyHandle>>,
) {
    let path = dir.path().join("cutover.toml");
    std::fs::write(&path, text).expect("write config");
    let config = cutover::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let items: Vec<_> = config
        .environments
        .iter()
        .map(|e| match e.routers.first() {
            Some(cutover::router::RouterConfig::Embedded(c)) => (e.routed(), c),
            _ => panic!("no embedded router"),
        })
        .collect();
    let started = cutover::proxy::start_many(&items).await;
    (config, started)
}

async fn start_all(dir: &TempDir, text: &str) -> (cutover::config::Config, Vec<ProxyHandle>) {
    let (config, started) = try_start_all(dir, text).await;
    (config, started.expect("proxies start"))
}

/// One raw HTTP/1.1 request with `Host: host` to `port`: the whole answer.
async fn ask_host(port: u16, host: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.expect("write");
    let mut out = String::new();
    c.read_to_string(&mut out).await.expect("read");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_environments_on_one_listener_by_host_swap_independently_under_load() {
    let s = site_slots().await;
    let dir = TempDir::new().expect("tempdir");
    // `localhost` and `127.0.0.1` are two host names a client can use for one loopback port.
    let (text, port) = two_sites(
        &s,
        &dir,
        "hosts = [\"localhost\"]",
        "hosts = [\"127.0.0.1\"]",
    );
    let (config, handles) = start_all(&dir, &text).await;
    assert_eq!(
        handles[0].live_addr(),
        handles[1].live_addr(),
        "one listener"
    );

    let unknown = ask_host(port, "nope.example").await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert!(
        unknown.contains("No site is served for <code>nope.example</code>"),
        "{unknown}"
    );

    let load = |url: String| {
        let mut o = cutover::load::LoadOptions::new(url);
        o.concurrency = 4;
        o.max_requests = 200_000;
        o.max_duration = Duration::from_secs(60);
        cutover::load::start(o)
    };
    let (shop, blog) = (
        load(format!("http://localhost:{port}/")),
        load(format!("http://127.0.0.1:{port}/")),
    );
    let driver = |i: usize| {
        let mut c = match config.environments[i].routers[0].clone() {
            cutover::router::RouterConfig::Embedded(c) => c,
            _ => panic!("embedded"),
        };
        c.admin = handles[i].admin_addr().to_string();
        cutover::router::embedded::Driver::new("embedded".into(), &config.environments[i], &c)
            .expect("driver")
    };
    let shop_driver = driver(0);
    // 5 swap+rollback pairs of shop, each after both loads have gone on by 100 requests.
    let both_go_on = || async {
        let (a, b) = (shop.sent.load(SeqCst) + 100, blog.sent.load(SeqCst) + 100);
        let ok = eventually(Duration::from_secs(30), || async {
            shop.sent.load(SeqCst) >= a && blog.sent.load(SeqCst) >= b
        })
        .await;
        assert!(ok, "both loads go on");
    };
    use cutover::router::Router;
    for to in ["green", "blue"].repeat(5) {
        both_go_on().await;
        shop_driver.switch_live(to).await.expect("switch shop");
    }
    both_go_on().await;
    let (shop, blog) = (shop.finish().await, blog.finish().await);
    common::assert_none_failed(&shop);
    common::assert_none_failed(&blog);
    let slots_of = |r: &cutover::load::LoadReport| r.by_slot.keys().cloned().collect::<Vec<_>>();
    assert_eq!(slots_of(&shop), ["blue", "green"], "shop swapped");
    assert_eq!(slots_of(&blog), ["b1"], "blog never moved");
    assert_eq!(handles[1].state().live.as_deref(), Some("b1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_without_hosts_takes_the_unknown_ones_and_overlaps_are_refused() {
    let s = site_slots().await;
    let dir = TempDir::new().expect("tempdir");
    let (text, port) = two_sites(&s, &dir, "hosts = [\"shop.example\"]", "");
    let (_, handles) = start_all(&dir, &text).await;
    let (shop, other) = (
        ask_host(port, "Shop.Example:80").await,
        ask_host(port, "nope.example").await,
    );
    assert!(shop.contains("x-slot: blue"), "{shop}");
    assert!(
        other.contains("x-slot: b1"),
        "the default takes it: {other}"
    );
    drop(handles);

    // Two environments that would answer the same requests on one address.
    let dir = TempDir::new().expect("tempdir");
    let (text, _) = two_sites(&s, &dir, "path_prefix = \"/x\"", "path_prefix = \"/x\"");
    let (_, started) = try_start_all(&dir, &text).await;
    let err = match started {
        Ok(_) => panic!("two catch-all environments on one port were accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("`shop` and `blog` share `live_listen")
            && err.contains("give each its own `hosts` or `path_prefix`"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_over_tls_swaps_20_pairs_with_no_failed_request() {
    let s = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (edge, _certs, cert) = tls_edge(&[&s[0], &s[1]], "").await;
    let port = edge.proxy.tls_addr().expect("a TLS listener").port();
    // The drill's load (`cutover drill`, its own HTTPS client) trusts the test's certificate
    // through SSL_CERT_FILE, as it would a private CA's.
    let text = edge.text.replacen(
        "name = \"shop\"\n",
        &format!("name = \"shop\"\npublic_url = \"https://127.0.0.1:{port}/\"\n"),
        1,
    );
    let path = edge.dir.path().join("cutover.toml");
    std::fs::write(&path, &text).expect("write config");
    let dir = edge.dir.path().to_path_buf();
    let o = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
            .arg("--config")
            .arg(&path)
            .args(["drill", "shop", "--pairs", "20", "--concurrency", "16"])
            .args(["--duration", "120s", "--json"])
            .env("SSL_CERT_FILE", &cert)
            .env("XDG_STATE_HOME", dir.join("state"))
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run cutover drill")
    })
    .await
    .expect("join");
    let out = printed(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).expect("a JSON report");
    println!(
        "MEASURED embedded over TLS: drill of 20 pairs: sent={} failed={} switches={} rps={:.0}",
        report["sent"], report["failed"], report["planned_switches"], report["rps"]
    );
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["planned_switches"], 40, "{report}");
    assert_eq!(report["switches"].as_array().map(Vec::len), Some(40));
    assert!(
        report["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://"))
    );
    assert!(report["by_slot"]["green"].as_u64() > Some(0), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_tls_listener_gives_each_site_its_own_certificate_by_sni() {
    let s = site_slots().await;
    let dir = TempDir::new().expect("tempdir");
    let (shop_cert, shop_key, shop_pem) = self_signed(dir.path(), "shop");
    let (blog_cert, blog_key, blog_pem) = self_signed(dir.path(), "blog");
    let port = free_port();
    let table = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "tls = {{ listen = \"127.0.0.1:{port}\", cert = \"{}\", key = \"{}\" }}",
            cert.display(),
            key.display()
        )
    };
    let shop_keys = format!("hosts = [\"localhost\"]\n{}", table(&shop_cert, &shop_key));
    let (text, _) = two_sites(&s, &dir, &shop_keys, &table(&blog_cert, &blog_key));
    let (_, handles) = start_all(&dir, &text).await;
    let addr = handles[0].tls_addr().expect("a TLS listener");
    assert_eq!(handles[1].tls_addr(), Some(addr), "one TLS listener");

    // SNI `localhost` gets shop's certificate and shop's slot.
    let r = tls_get(&shop_pem, "https", addr, "/").await;
    assert_eq!(r.headers()["x-slot"], "blue");
    assert!(
        tls_client(&blog_pem, addr)
            .get(format!("https://localhost:{port}/"))
            .send()
            .await
            .is_err(),
        "blog's certificate is not offered for localhost"
    );
    // An address (no SNI) gets the default site's certificate and slot.
    let r = tls_client(&blog_pem, addr)
        .get(format!("https://127.0.0.1:{port}/"))
        .send()
        .await
        .expect("GET the default site by address");
    assert_eq!(r.headers()["x-slot"], "b1");
}

/// Wait (at most 30 s) until the proxy's node checks show every one of blue's `nodes` as
/// `want` (`UP`, `DOWN`).
async fn checks_say(proxy: &ProxyHandle, nodes: &[&str], want: &str) {
    let check = |node: &str| {
        proxy.state().slots["blue"]
            .nodes
            .iter()
            .find(|n| n.name == node)
            .and_then(|n| n.check.clone())
    };
    let all = || nodes.iter().all(|n| check(n).as_deref() == Some(want));
    let shown = eventually(Duration::from_secs(30), || async { all() }).await;
    assert!(
        shown,
        "the checks never showed {nodes:?} {want}: {:?}",
        proxy.state().slots["blue"]
    );
}
/// The proxy's own checks of a slot's nodes: a node that stops answering gets no new request
/// once its checks fail (every request then succeeds on the other node), and is back when it
/// answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_stops_getting_requests_and_comes_back_when_it_answers() {
    let (mut servers, slot_tables) =
        common::slots_with_nodes(&["blue", "green"], &[("blue", 1)]).await;
    let dir = TempDir::new().expect("tempdir");
    let text = format!(
        "[settings]\nstate_dir = \"{}\"\n\n[[environment]]\nname = \"shop\"\n\n{slot_tables}\n\
         [[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{}\"\n\
         live_listen = \"127.0.0.1:{}\"\nstate_file = \"{}\"\nnode_check_interval = 1\n",
        dir.path().join("state").display(),
        free_port(),
        free_port(),
        dir.path().join("proxy.json").display()
    );
    let (_, proxy) = start_embedded(dir.path(), &text).await;
    checks_say(&proxy, &["n1", "n2"], "UP").await;

    let n2_addr = servers[2].addr;
    servers[2].stop();
    checks_say(&proxy, &["n2"], "DOWN").await;
    let url = format!("http://{}/", proxy.live_addr());
    for i in 0..40 {
        let (status, slot, body) = common::get(&url).await;
        assert_eq!(
            (status, slot.as_str()),
            (200, "blue"),
            "request {i}: {body}"
        );
    }

    // n2 answers again on its address: back in the round-robin after its good checks.
    servers[2] = SlotServer::start("blue", "1.0.0", n2_addr)
        .await
        .expect("n2 again");
    checks_say(&proxy, &["n2"], "UP").await;
    let before = servers[2].controls.served.load(SeqCst);
    for _ in 0..20 {
        let (status, _, body) = common::get(&url).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        servers[2].controls.served.load(SeqCst) > before,
        "n2 got no request after it came back"
    );
}
