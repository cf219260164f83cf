//! Canary weights on every router kind that offers them, each in front of its real proxy
//! (tests/common/rig.rs starts them): each step's split read back by `observe`, the share the
//! canary really served under a bounded load through the public URL (counted by the slot
//! servers themselves) within 3 points with no failed request, 0 % putting everything back
//! on the live slot, a refused weight change leaving the proxy serving what it served,
//! `cutover canary` itself under load, the sticky cookie, and the preview header or cookie
//! through the public URL.
//!
//! `kinds!` is the table: one module per kind, one test per property it has (`nginx::steps`).
#![allow(clippy::expect_used)]

mod common;
#[path = "common/rig.rs"]
mod rig;

use std::sync::Arc;

use common::SlotServer;
use cutover::model::Weights;
use cutover::router::{Router, Verb};
use rig::{Kind, Rig};

/// Requests per measured step: at 50 % one standard deviation of a random split is 0.8
/// points, so 3 points is more than 3.5 of them.
const PER_STEP: u64 = 4_000;

fn split(percent: u8) -> Option<Weights> {
    (percent > 0).then(|| Weights {
        live: "blue".into(),
        canary: "green".into(),
        canary_percent: percent,
    })
}

/// The live slot and the split, as the router reads them back.
async fn read_back(d: &Arc<dyn Router>) -> (Option<String>, Option<Weights>) {
    let st = d
        .observe()
        .await
        .unwrap_or_else(|e| panic!("{}: observe failed: {e:#}", d.name()));
    (st.live, st.weights)
}

/// The split, with blue still live: a split is not a switch.
async fn weights_now(d: &Arc<dyn Router>) -> Option<Weights> {
    let (live, weights) = read_back(d).await;
    assert_eq!(live.as_deref(), Some("blue"), "a split is not a switch");
    weights
}

/// Every slot server of the rig, each counting what it served.
fn servers(rig: &Rig) -> Vec<&SlotServer> {
    rig.servers.all.iter().collect()
}

/// Measure the canary's share through the public URL and print it for the report.
async fn measured(rig: &Rig, percent: u8) {
    let (report, share) =
        common::canary_share_under_load(&servers(rig), "green", &rig.public[0], PER_STEP).await;
    eprintln!(
        "{:?}: set {percent:>3} % -> green served {share:5.1} % of {} answers, {} failed",
        rig.kind,
        report.sent,
        report.failed()
    );
    assert_eq!(report.failed(), 0, "{percent} %: {:?}", report.first_errors);
    assert!(
        (share - f64::from(percent)).abs() <= 3.0,
        "{:?}: at {percent} % the canary served {share:.1} %",
        rig.kind
    );
}

async fn steps_read_back_and_measured(rig: Rig) {
    let d = &rig.routers[0];
    assert!(d.supports(Verb::Weights), "{:?} offers weights", rig.kind);
    for percent in [5u8, 25, 50, 100, 0] {
        d.set_weights("blue", "green", percent)
            .await
            .unwrap_or_else(|e| panic!("{:?}: weights {percent} %: {e:#}", rig.kind));
        assert_eq!(weights_now(d).await, split(percent), "{:?}", rig.kind);
        measured(&rig, percent).await;
    }
    // After the canary a swap is an ordinary swap, and takes the split with it.
    d.set_weights("blue", "green", 25).await.expect("25 %");
    d.switch_live("green").await.expect("swap to the canary");
    let st = d.observe().await.expect("observe");
    assert_eq!((st.live.as_deref(), st.weights), (Some("green"), None));
    assert_eq!(rig.public_slot().await, "green");
}

async fn a_refused_change_leaves_the_split(mut rig: Rig) {
    let d = rig.routers[0].clone();
    d.set_weights("blue", "green", 25).await.expect("25 %");
    rig.make_refuse().await;
    // What the proxy serves once the fault is made (a fault may itself change it: Caddy's
    // refusing config has no split and no live handler cutover knows).
    let before = read_back(&d).await;
    let e = match d.set_weights("blue", "green", 50).await {
        Ok(()) => panic!("{:?}: the weight change was not refused", rig.kind),
        Err(e) => format!("{e:#}"),
    };
    eprintln!("{:?}: refused: {e}", rig.kind);
    assert!(e.contains("green"), "the error names the change: {e}");
    assert_eq!(read_back(&d).await, before, "{:?}", rig.kind);
    measured(&rig, before.1.map_or(0, |w| w.canary_percent)).await;
}

/// Which slot answers a request to `url` carrying `header` (name, value), if any.
async fn answered_with(url: &str, header: Option<(&str, &str)>) -> String {
    let c = cutover::http_client().build().expect("client");
    let mut req = c.get(url);
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let r = req.send().await.expect("a request through the public URL");
    assert_eq!(r.status().as_u16(), 200, "{url} with {header:?}");
    let slot = r.headers().get("x-slot").and_then(|v| v.to_str().ok());
    slot.unwrap_or_default().to_string()
}

/// Testers reach the preview slot through the public URL with the documented header or
/// cookie, at 0 % and during a split; everyone else gets the live slot (or the split).
async fn header_and_cookie_reach_the_preview(rig: Rig) {
    let d = &rig.routers[0];
    let url = &rig.public[0];
    let cookie = format!("theme=dark; {}=1", rig::PREVIEW_COOKIE);
    let testers = [(rig::PREVIEW_HEADER, "1"), ("cookie", cookie.as_str())];
    for percent in [0u8, 50] {
        d.set_weights("blue", "green", percent)
            .await
            .expect("weights");
        for t in testers {
            for _ in 0..20 {
                assert_eq!(
                    answered_with(url, Some(t)).await,
                    "green",
                    "{t:?} at {percent} %"
                );
            }
        }
    }
    d.set_weights("blue", "green", 0).await.expect("0 %");
    for _ in 0..20 {
        assert_eq!(answered_with(url, None).await, "blue", "without the header");
    }
    // The header follows the preview route wherever it points.
    d.set_preview("blue").await.expect("preview blue");
    let moved = common::eventually(std::time::Duration::from_secs(10), || async {
        answered_with(url, Some(testers[0])).await == "blue"
    })
    .await;
    assert!(
        moved,
        "{:?}: the header does not follow the preview",
        rig.kind
    );
    assert_eq!(answered_with(url, Some(testers[1])).await, "blue");
}

/// One request to `url` with `cookie` (if any): the slot that answered and the sticky
/// cookie the router set (`name=value`), if it set one.
async fn sticky_answer(url: &str, cookie: Option<&str>) -> (String, Option<String>) {
    let c = cutover::http_client().build().expect("client");
    let mut req = c.get(url);
    if let Some(v) = cookie {
        req = req.header("cookie", v);
    }
    let r = req.send().await.expect("a request through the public URL");
    assert_eq!(r.status().as_u16(), 200, "{url} with {cookie:?}");
    let header = |n: &str| common::header(&r, n);
    let set = header("set-cookie").and_then(|c| c.split(';').next().map(str::to_string));
    (header("x-slot").unwrap_or_default(), set)
}

/// During a canary a client that sends its cookie back stays on the slot it was sent to, while
/// the share moves; after the abort (0 %) the same cookie reaches the live slot.
async fn a_client_keeps_its_slot_by_the_cookie(rig: Rig) {
    let d = &rig.routers[0];
    let url = &rig.public[0];
    d.set_weights("blue", "green", 50).await.expect("50 %");
    let mut cookies = std::collections::BTreeMap::new();
    for _ in 0..200 {
        let (slot, set) = sticky_answer(url, None).await;
        let set = set.unwrap_or_else(|| panic!("{:?}: no cookie during a canary", rig.kind));
        cookies.entry(slot).or_insert(set);
        if cookies.len() == 2 {
            break;
        }
    }
    assert_eq!(cookies.len(), 2, "both slots answered 200 requests at 50 %");
    for step in [50u8, 5, 95] {
        d.set_weights("blue", "green", step).await.expect("weights");
        for (slot, cookie) in &cookies {
            for _ in 0..20 {
                let (got, _) = sticky_answer(url, Some(cookie)).await;
                assert_eq!(&got, slot, "{cookie} at {step} %");
            }
        }
    }
    d.set_weights("blue", "green", 0).await.expect("the abort");
    for cookie in cookies.values() {
        for _ in 0..20 {
            let (got, _) = sticky_answer(url, Some(cookie)).await;
            assert_eq!(got, "blue", "{cookie} after the abort");
        }
    }
}

/// `cutover canary` itself through the driver, under a bounded keep-alive load through the
/// public URL: each step set and read back by the operation, then the swap at 100 %.
async fn the_canary_operation_runs_through_the_driver(rig: Rig) {
    let toml = rig.toml.replacen(
        "watch = \"0s\"\n",
        "watch = \"0s\"\ncanary_pause = \"1s\"\n",
        1,
    );
    let engine = common::engine(&toml);
    let load = cutover::load::start(cutover::load::LoadOptions {
        url: rig.public[0].clone(),
        concurrency: 4,
        // Ceilings far beyond any machine's need: the test stops the load after the canary.
        max_requests: 50_000_000,
        max_duration: std::time::Duration::from_secs(240),
        keep_alive: true,
        timeout: std::time::Duration::from_secs(5),
    });
    let canary = cutover::ops::OpKind::Canary {
        to: "green".into(),
        steps: [5, 50, 100]
            .map(cutover::model::CanaryStep::Weight)
            .to_vec(),
        interval: None,
    };
    let (out, lines) = common::run_op(&engine, canary, false, false).await;
    let report = load.finish().await;
    eprintln!(
        "{:?}: canary {:?} ({}); load: {} sent, {} failed {:?}",
        rig.kind,
        out.verdict,
        out.message,
        report.sent,
        report.failed(),
        report.by_slot
    );
    assert_eq!(out.verdict, cutover::ops::Verdict::Done, "{lines:#?}");
    for p in [5, 50] {
        let want = format!("every router sends {p} % to `green`");
        assert!(
            lines.iter().any(|l| l.contains(&want)),
            "{want}: {lines:#?}"
        );
    }
    assert_eq!(rig.public_slot().await, "green");
    // nginx's include method (a reload per step) and Caddy 2.6's api mode (every admin API
    // change is a config reload) close idle keep-alive connections when they reload: a request
    // the client sends on one just then fails ("connection closed before message completed";
    // docs/nginx.md and docs/caddy.md measure it). At most one per connection per reload: 2
    // steps + the swap. nginx's realpath method renames links and Caddy's file mode bucket
    // files: neither reloads.
    let reloads_may_reset = match rig.kind {
        Kind::CaddyApi | Kind::Nginx => 4 * 3,
        _ => 0,
    };
    assert!(
        report.failed() <= reloads_may_reset,
        "{:?}: {} failed, more than its reloads explain: {:?}",
        rig.kind,
        report.failed(),
        report.first_errors
    );
}

/// The table: every kind that offers weights, with the properties it has. Each row becomes a
/// module with one test per property (`nginx::sticky`), so a failure names both.
macro_rules! kinds {
    ($($module:ident => $kind:expr => [$($prop:ident),* $(,)?];)*) => {$(
        mod $module {
            use crate::rig::Kind;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $prop() {
                    let test = concat!(module_path!(), "::", stringify!($prop));
                    if let Some(rig) = crate::Rig::start(test, $kind).await {
                        crate::$prop(rig).await;
                    }
                }
            )*
        }
    )*};
}

/// Each property under a short name for the table.
use a_client_keeps_its_slot_by_the_cookie as sticky;
use a_refused_change_leaves_the_split as refused;
use header_and_cookie_reach_the_preview as preview_by_header;
use steps_read_back_and_measured as steps;
use the_canary_operation_runs_through_the_driver as operation;

kinds! {
    embedded => Kind::Embedded => [steps, refused, operation];
    haproxy_map => Kind::HaproxyMap => [steps, refused, operation, sticky, preview_by_header];
    haproxy_servers => Kind::HaproxyServers => [steps, refused, operation, sticky];
    nginx => Kind::Nginx => [steps, refused, operation, sticky, preview_by_header];
    // No `refused`: a realpath step renames links and asks nginx nothing, so nginx cannot
    // refuse it (src/router/nginx/tests.rs checks a link that cannot be renamed).
    nginx_realpath => Kind::NginxRealpath => [steps, operation, sticky, preview_by_header];
    apache => Kind::Apache => [steps, refused, operation, sticky, preview_by_header];
    caddy_api => Kind::CaddyApi => [steps, refused, operation, sticky, preview_by_header];
    caddy_file => Kind::CaddyFile => [steps, refused, operation, sticky, preview_by_header];
    exec => Kind::Exec => [steps, refused, operation];
}

/// The kinds whose config offers no weights (nginx's symlink method, Apache's file mode) say
/// so, and refuse them without a change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_without_weights_refuse_them() {
    for kind in [Kind::NginxSymlink, Kind::ApacheFile] {
        let rig = common::or_skip!(Rig::start(kind).await);
        let d = &rig.routers[0];
        assert!(!d.supports(Verb::Weights), "{kind:?}");
        let e = d
            .set_weights("blue", "green", 10)
            .await
            .expect_err("refused");
        eprintln!("{kind:?}: {e:#}");
        assert_eq!(weights_now(d).await, None);
        assert_eq!(rig.public_slot().await, "blue");
    }
}
