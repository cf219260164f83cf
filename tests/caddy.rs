//! The caddy driver against Debian's real Caddy, started with `caddy run --config FILE` on
//! loopback ports, its admin API on a free port, `persist: false`, and its XDG dirs in a temp
//! dir; stopped by PID.
//!
//! Run: `cargo test --test caddy -- --nocapture` (the MEASURED lines are the numbers in
//! docs/caddy.md).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{ChildGuard, SlotServer};
use cutover::load::LoadReport;
use cutover::model::{AdminState, MaintenanceMode, Role};
use cutover::router::caddy::{self, Mode, Pointer};
use cutover::router::{Router, RouterConfig, Target};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Rig {
    driver: caddy::Driver,
    /// The environment's cutover config.
    toml: String,
    public: u16,
    preview: u16,
    admin: u16,
    slots: Vec<SlotServer>,
    flag_dir: std::path::PathBuf,
    _caddy: ChildGuard,
    _tmp: tempfile::TempDir,
}

/// The Caddy config an operator writes for `mode = "api"` (docs/caddy.md shows this one).
fn api_config(admin: u16, public: u16, preview: u16, live: &[String], next: &[String]) -> Value {
    let ups = |d: &[String]| d.iter().map(|d| json!({"dial": d})).collect::<Vec<_>>();
    json!({
        "admin": {"listen": format!("127.0.0.1:{admin}"), "config": {"persist": false}},
        "apps": {"http": {"servers": {
            "public": {
                "listen": [format!("127.0.0.1:{public}")],
                "routes": [{"handle": [
                    {"handler": "reverse_proxy", "@id": "shop_live", "upstreams": ups(live)}
                ]}]
            },
            "preview": {
                "listen": [format!("127.0.0.1:{preview}")],
                "routes": [{"handle": [
                    {"handler": "reverse_proxy", "@id": "shop_preview", "upstreams": ups(next)}
                ]}]
            }
        }}}
    })
}

/// The Caddy config for `mode = "file"`: the routes come from the driver.
fn file_config(admin: u16, public: u16, preview: u16, d: &caddy::Driver) -> Value {
    json!({
        "admin": {"listen": format!("127.0.0.1:{admin}"), "config": {"persist": false}},
        "apps": {"http": {"servers": {
            "public": {
                "listen": [format!("127.0.0.1:{public}")],
                "routes": d.file_mode_routes(Pointer::Live).expect("routes")
            },
            "preview": {
                "listen": [format!("127.0.0.1:{preview}")],
                "routes": d.file_mode_routes(Pointer::Next).expect("routes")
            }
        }}}
    })
}

/// `admin_override`: where the driver sends its admin calls (an interposer), if not Caddy.
async fn rig(
    test: &str,
    mode: Mode,
    names: &[&str],
    nodes: &[(&str, usize)],
    extra_router: &str,
    admin_override: Option<u16>,
) -> Option<Rig> {
    let bin = common::require_binary(test, "caddy")?;
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tmp.path().to_path_buf();
    let (slots, slot_tables) = common::slots_with_nodes(names, nodes).await;
    let [public, preview, admin] = common::free_ports();
    let mut toml = format!(
        "[[environment]]\nname = \"shop\"\npublic_url = \"http://127.0.0.1:{public}/\"\n{slot_tables}"
    );
    // A slot's upstreams for Caddy: its servers' host:port, its own first (node n1).
    let dials = |slot: &str| -> Vec<String> {
        slots
            .iter()
            .filter(|s| s.controls.name == slot)
            .map(|s| s.addr.to_string())
            .collect()
    };
    let flag_dir = t.join("flags");
    let admin_port = admin_override.unwrap_or(admin);
    match mode {
        Mode::Api => toml.push_str(&format!(
            "[[environment.router]]\nkind = \"caddy\"\nmode = \"api\"\n\
             admin = \"http://127.0.0.1:{admin_port}\"\nlive_id = \"shop_live\"\n{extra_router}\n"
        )),
        Mode::File => toml.push_str(&format!(
            "[[environment.router]]\nkind = \"caddy\"\nmode = \"file\"\n\
             admin = \"http://127.0.0.1:{admin_port}\"\nflag_dir = \"{}\"\n{extra_router}\n",
            flag_dir.display()
        )),
    }
    let env = common::environment(&toml);
    let RouterConfig::Caddy(c) = &env.routers[0] else {
        panic!("not caddy")
    };
    let driver = caddy::Driver::new("caddy".into(), &env, c).expect("driver");
    let config = match mode {
        Mode::Api => api_config(admin, public, preview, &dials(names[0]), &dials(names[1])),
        Mode::File => {
            driver
                .install(names[0], Some(names[1]))
                .await
                .expect("install");
            file_config(admin, public, preview, &driver)
        }
    };
    let conf = t.join("caddy.json");
    std::fs::write(&conf, serde_json::to_string_pretty(&config).expect("json")).expect("write");
    let log = std::fs::File::create(t.join("caddy.log")).expect("log");
    let mut cmd = std::process::Command::new(bin);
    cmd.args(["run", "--config", &conf.display().to_string()])
        .env("XDG_DATA_HOME", t.join("data"))
        .env("XDG_CONFIG_HOME", t.join("config"))
        .env("HOME", &t)
        .stdout(log.try_clone().expect("log"))
        .stderr(log);
    let guard = ChildGuard::spawn("caddy", &mut cmd);
    common::wait_ports(&[admin, public, preview], Duration::from_secs(10)).await;
    Some(Rig {
        driver,
        toml,
        public,
        preview,
        admin,
        slots,
        flag_dir,
        _caddy: guard,
        _tmp: tmp,
    })
}

/// The rig most tests use: blue live, green the preview, no nodes, no extra router settings,
/// the driver talking to Caddy itself.
async fn blue_green(test: &str, mode: Mode) -> Option<Rig> {
    rig(test, mode, &["blue", "green"], &[], "", None).await
}

impl Rig {
    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.public)
    }
    async fn public_slot(&self) -> String {
        common::get(&self.public_url()).await.1
    }
    async fn preview_slot(&self) -> String {
        common::get(&format!("http://127.0.0.1:{}/", self.preview))
            .await
            .1
    }
    /// A change made straight on Caddy's admin API, as another operator or tool would.
    async fn patch_live_by_hand(&self, dial: &str) {
        patch_live_upstreams(self.admin, dial).await;
    }
}

/// A client for Caddy's admin API, with a deadline.
fn admin_client() -> reqwest::Client {
    cutover::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Point the `shop_live` handler's upstreams at `dial` on the admin API at `admin`.
async fn patch_live_upstreams(admin: u16, dial: &str) {
    let c = admin_client();
    let r = c
        .patch(format!("http://127.0.0.1:{admin}/id/shop_live/upstreams"))
        .header("content-type", "application/json")
        .body(json!([{ "dial": dial }]).to_string())
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
}

// Swapping, the preview, draining and undraining a node, maintenance (page and redirect),
// drift by hand, a refused swap and a hung Caddy: tests/contract.rs, in both modes. Below:
// what is Caddy's own.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_page_says_so_and_a_redirect_to_itself_is_refused() {
    let r = common::or_skip!(blue_green(Mode::Api).await);
    r.driver
        .maintenance(true, &MaintenanceMode::Page)
        .await
        .expect("on");
    common::maintenance_page(&r.public_url()).await;
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.role_of("blue"), Role::Maintenance);
    common::fails_with(
        r.driver
            .maintenance(true, &MaintenanceMode::Redirect { to: "blue".into() })
            .await,
        "to itself",
        "itself",
    );
}

/// Draining and undraining a node: tests/contract.rs. Caddy's own: a drained node stays
/// drained across a swap to the live slot, and the last upstream of a slot is never removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_never_removes_the_last_upstream() {
    for mode in [Mode::Api, Mode::File] {
        let r = common::or_skip!(
            rig(
                mode,
                &["blue", "green", "staging"],
                &[("blue", 1)],
                "",
                None
            )
            .await
        );
        r.driver
            .drain(&Target::node("blue", "n1"))
            .await
            .expect("drain n1");
        r.driver
            .switch_live("blue")
            .await
            .expect("blue is live already");
        let s = r.driver.observe().await.expect("observe");
        assert_eq!(
            common::node(&s, "blue", "n1").admin,
            AdminState::Drain,
            "{mode:?}: still drained"
        );
        common::fails_with(
            r.driver.drain(&Target::node("blue", "n2")).await,
            "last node",
            "refusing to remove the last upstream",
        );
        common::fails_with(
            r.driver.drain(&Target::slot("blue")).await,
            "whole live slot",
            "refusing",
        );
        if mode == Mode::Api {
            common::fails_with(
                r.driver.drain(&Target::slot("staging")).await,
                "unrouted slot",
                "nothing to drain",
            );
        }
        assert_eq!(r.public_slot().await, "blue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_shown_and_change_nothing() {
    // A wrong @id: Caddy's 404 and its JSON error are in the message; nothing changes.
    let r = common::or_skip!(
        rig(
            Mode::Api,
            &["blue", "green"],
            &[],
            "preview_id = \"no_such_handler\"",
            None
        )
        .await
    );
    common::fails_with_all(
        r.driver.set_preview("blue").await,
        "unknown id",
        &["answered 404", "unknown object ID 'no_such_handler'"],
    );
    assert_eq!(r.preview_slot().await, "green");
    assert_eq!(r.public_slot().await, "blue");
    let s = r.driver.observe().await.expect("observe");
    common::assert_problem(&s, "no_such_handler");

    // A concurrent writer changes the live upstreams between cutover's read and its PATCH:
    // the If-Match makes Caddy refuse cutover's write (412), and the other change stands.
    let relay_target = Arc::new(std::sync::atomic::AtomicU16::new(0));
    let staging = SlotServer::start("staging", "1.0.0", common::loopback(0))
        .await
        .expect("staging");
    let staging_dial = staging.addr.to_string();
    let rt = relay_target.clone();
    let relay = racing_relay_deferred(rt.clone(), staging_dial.clone()).await;
    let r = common::or_skip!(rig(Mode::Api, &["blue", "green"], &[], "", Some(relay)).await);
    rt.store(r.admin, Ordering::SeqCst);
    common::fails_with_all(
        r.driver.switch_live("green").await,
        "a concurrent change",
        &[
            "answered 412",
            "If-Match header did not match",
            "nothing was changed by cutover",
        ],
    );
    assert_eq!(
        r.public_slot().await,
        "staging",
        "the other writer's change stands"
    );
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.live, None, "staging is no slot of this environment");
    assert!(
        s.notes.iter().any(|n| n.contains("changed by hand")),
        "{:?}",
        s.notes
    );
    // The next attempt reads the new state and goes through.
    r.driver.switch_live("green").await.expect("retry");
    assert_eq!(r.public_slot().await, "green");
}

/// A TCP relay in front of Caddy's admin API (whose port is known once the rig is up) that,
/// the first time it sees a PATCH, first changes the live upstreams on Caddy itself: a
/// concurrent writer racing cutover.
async fn racing_relay_deferred(admin: Arc<std::sync::atomic::AtomicU16>, dial: String) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let raced = Arc::new(AtomicBool::new(false));
    tokio::spawn(async move {
        while let Ok((mut client, _)) = l.accept().await {
            let (raced, admin, dial) = (raced.clone(), admin.load(Ordering::SeqCst), dial.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let Ok(n) = client.read(&mut buf).await else {
                    return;
                };
                if buf[..n].starts_with(b"PATCH ") && !raced.swap(true, Ordering::SeqCst) {
                    patch_live_upstreams(admin, &dial).await;
                }
                let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", admin)).await
                else {
                    return;
                };
                // Caddy's admin API only answers requests addressed to it by name.
                let head = String::from_utf8_lossy(&buf[..n])
                    .replace(&format!("127.0.0.1:{port}"), &format!("127.0.0.1:{admin}"));
                if server.write_all(head.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_status_fail_on_an_id_caddy_does_not_have() {
    let r = common::or_skip!(blue_green(Mode::Api).await);
    // A typo in `live_id`: Caddy's config has no such @id.
    let (line, status) = common::check_and_status_fail_after(
        &r.toml,
        "live_id = \"shop_live\"",
        "live_id = \"shop_lvie\"",
        "caddy",
    )
    .await;
    common::assert_contains(&line, "Caddy's config has no object with @id `shop_lvie`");
    assert!(
        status
            .lines()
            .any(|l| l.contains("router caddy (caddy): PROBLEM") && l.contains("shop_lvie")),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_changes_show_as_drift() {
    let r = common::or_skip!(blue_green(Mode::Api).await);
    // A change by hand to another slot: tests/contract.rs. To no slot at all:
    r.patch_live_by_hand("127.0.0.1:9").await;
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.live, None);
    assert!(
        s.notes.iter().any(|n| n.contains("which is no slot")),
        "{:?}",
        s.notes
    );

    let r = common::or_skip!(blue_green(Mode::File).await);
    std::fs::File::create(r.flag_dir.join("live=green")).expect("second flag");
    let s = r.driver.observe().await.expect("observe");
    assert!(
        s.notes.iter().any(|n| n.contains("several live= files")),
        "{:?}",
        s.notes
    );
    common::fails_with(
        r.driver.switch_live("green").await,
        "ambiguous flags",
        "Remove all but one",
    );
    std::fs::remove_file(r.flag_dir.join("live=green")).expect("rm");
    assert!(r.driver.observe().await.expect("observe").notes.is_empty());

    // Flags for a Caddy that was never given the file-mode routes: switching would route
    // nothing, so the driver says so and refuses.
    let resp = admin_client()
        .post(format!("http://127.0.0.1:{}/load", r.admin))
        .header("content-type", "application/json")
        .body(
            api_config(
                r.admin,
                r.public,
                r.preview,
                &[r.slots[0].addr.to_string()],
                &[r.slots[1].addr.to_string()],
            )
            .to_string(),
        )
        .send()
        .await
        .expect("load");
    assert_eq!(resp.status().as_u16(), 200);
    let s = r.driver.observe().await.expect("observe");
    common::assert_problem(&s, "no route for live=blue");
    common::fails_with(
        r.driver.switch_live("green").await,
        "no routes",
        "no file-mode route",
    );
    assert_eq!(
        std::fs::read_dir(&r.flag_dir).expect("dir").count(),
        2,
        "flags unchanged"
    );
}

/// Caddy's whole config, as its admin API holds it.
async fn caddy_config(admin: u16) -> Value {
    let c = admin_client();
    let r = c
        .get(format!("http://127.0.0.1:{admin}/config/"))
        .send()
        .await
        .expect("GET /config/");
    r.json().await.expect("json")
}

/// The names in the flag directory (and in `split=green/`, where there is one).
fn flag_names(r: &Rig) -> (Vec<String>, usize) {
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|e| {
                e.flatten()
                    .map(|e| e.file_name().to_string_lossy().into())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let buckets = names(&r.flag_dir.join("split=green"));
    let n = buckets.iter().filter(|b| *b != "on").count();
    (names(&r.flag_dir), n)
}

/// File mode's canary (docs/caddy.md): each step is bucket files in `split=green/` that the
/// routes test per request, and Caddy's config stays the one it loaded (no reload); a cookie
/// naming a slot outside the split is not followed; the abort leaves no split directory and
/// the canary's cookie then reaches blue, whose answer clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_canary_steps_are_bucket_files_not_config_changes() {
    let r = common::or_skip!(rig(Mode::File, &["blue", "green", "staging"], &[], "", None).await);
    let loaded = caddy_config(r.admin).await;
    for (percent, files) in [(5u8, 13), (25, 64), (50, 128), (95, 243)] {
        r.driver
            .set_weights("blue", "green", percent)
            .await
            .expect("step");
        assert_eq!(flag_names(&r).1, files, "bucket files at {percent} %");
        let w = r.driver.observe().await.expect("observe").weights;
        assert_eq!(w.map(|w| w.canary_percent), Some(percent));
        assert_eq!(
            caddy_config(r.admin).await,
            loaded,
            "{percent} %: no config change"
        );
    }
    for _ in 0..20 {
        let (slot, _) = common::get_with(&r.public_url(), ("cookie", "cutover_slot=staging")).await;
        assert_ne!(slot, "staging", "staging is in no split");
    }
    r.driver
        .set_weights("blue", "green", 0)
        .await
        .expect("abort");
    let (names, _) = flag_names(&r);
    assert_eq!(names, ["live=blue", "next=green"], "no split, no leftover");
    assert_eq!(r.driver.observe().await.expect("observe").weights, None);
    for _ in 0..20 {
        let got = common::get_with(&r.public_url(), ("cookie", "cutover_slot=green")).await;
        assert_eq!(
            got,
            (
                "blue".to_string(),
                Some("cutover_slot=; Path=/; Max-Age=0".into())
            ),
            "the canary's cookie after the abort reaches blue, which clears it"
        );
    }
    assert_eq!(
        caddy_config(r.admin).await,
        loaded,
        "the abort: no config change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mistakes_name_the_field() {
    let base = "[[environment]]\nname = \"e\"\n[[environment.slot]]\nname = \"blue\"\n\
                address = \"http://127.0.0.1:9001\"\n[[environment.router]]\nkind = \"caddy\"\n";
    for (keys, mistake) in [
        ("", "needs `flag_dir`"),
        ("mode = \"api\"\n", "needs `live_id`"),
        (
            "mode = \"api\"\nlive_id = \"x\"\nadmin = \"https://h:1\"\n",
            "must be an http:// URL",
        ),
    ] {
        let text = format!("{base}{keys}");
        common::fails_with(
            cutover::config::parse(&text, Path::new("c.toml")),
            &text,
            mistake,
        );
    }
    let ok = cutover::config::parse(
        &format!("{base}flag_dir = \"/srv/flags\"\n"),
        Path::new("c.toml"),
    )
    .expect("ok");
    let RouterConfig::Caddy(c) = &ok.environments[0].routers[0] else {
        panic!()
    };
    assert_eq!(c.mode, Mode::File, "the measured default");
    assert_eq!(c.admin, "http://127.0.0.1:2019");
}

async fn measure(test: &str, mode: Mode, label: &str) -> Option<LoadReport> {
    let _serial = LOAD.lock().await;
    let r = blue_green(test, mode).await?;
    let rep = common::swap_pairs_under_load(&r.driver, &r.public_url(), 20).await;
    common::print_measured("caddy", label, &rep);
    common::assert_served_by(&rep.by_slot, &["blue", "green"]);
    assert!(
        rep.by_slot.keys().all(|k| k == "blue" || k == "green"),
        "every answer came from a slot (no fall-through route): {:?}",
        rep.by_slot
    );
    assert_eq!(
        r.driver.observe().await.expect("observe").live.as_deref(),
        Some("blue")
    );
    Some(rep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_failed_requests_with_the_default_mode() {
    let rep = common::or_skip!(measure(Mode::default(), "mode=file (default)").await);
    assert_eq!(rep.failed(), 0, "first errors: {:?}", rep.first_errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_requests_api_mode() {
    measure("failed_requests_api_mode", Mode::Api, "mode=api").await;
}

/// `cutover check` names api mode as lossy (a WARN line with the measured reason), in text and
/// in JSON; file mode passes without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_names_api_mode_lossy_and_file_mode_not() {
    for (mode, lossy) in [(Mode::Api, true), (Mode::File, false)] {
        let test = "check_names_api_mode_lossy_and_file_mode_not";
        let Some(r) = blue_green(test, mode).await else {
            return;
        };
        let dir = tempfile::tempdir().expect("dir");
        let o = common::cutover_cli(dir.path(), &r.toml, &["check"]).await;
        let out = common::printed(&o);
        eprintln!("{mode:?}:\n{out}");
        assert_eq!(o.status.code(), Some(0), "{out}");
        let line = out
            .lines()
            .find(|l| l.contains("router caddy"))
            .unwrap_or_else(|| panic!("no router line:\n{out}"));
        assert_eq!(line.starts_with("WARN"), lossy, "{mode:?}: {line}");
        assert_eq!(out.contains("lossy: api mode"), lossy, "{mode:?}: {out}");
        let o = common::cutover_cli(dir.path(), &r.toml, &["check", "--json"]).await;
        let rows: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
        let router = rows
            .as_array()
            .and_then(|a| a.iter().find(|r| r["what"] == "router caddy"))
            .unwrap_or_else(|| panic!("no router row: {rows}"));
        assert_eq!(router["caveat"].is_string(), lossy, "{mode:?}: {router}");
    }
}

// ---------------------------------------------------------------------------------------
// Benchmarks (scripts/bench): `cargo test --release --test caddy -- --ignored bench_ --nocapture`

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_drill_file_mode() {
    bench_drill(
        "bench_drill_file_mode",
        Mode::File,
        "caddy (file, the default)",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_drill_api_mode() {
    bench_drill("bench_drill_api_mode", Mode::Api, "caddy (api)").await;
}

/// The drill (`common::bench_drill`) through caddy in `mode`, named `label` in the table.
async fn bench_drill(test: &str, mode: Mode, label: &str) {
    if let Some(r) = blue_green(test, mode).await {
        common::bench_drill(label, &r.toml).await;
    }
}
