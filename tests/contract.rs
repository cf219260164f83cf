//! The driver contract: one set of properties, run against every router kind and mode in
//! front of its real proxy (tests/common/rig.rs starts them): read the state; swap and swap
//! back (and move the preview); drain and undrain a node; maintenance on and off, as a page
//! (with the bypass where the proxy has one) and as a redirect where the kind has one; drift
//! after a change by hand on the proxy; a refused command leaves traffic where it was; a hung
//! proxy times out with a clear error.
//!
//! `contract!` makes one test per kind and property (`haproxy_map::swap_and_swap_back`), so a
//! failure names both. A new driver gets a rig in tests/common/rig.rs and a line below.
#![allow(clippy::expect_used)]

mod common;
#[path = "common/rig.rs"]
mod rig;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{eventually, get};
use cutover::model::{AdminState, MaintenanceMode, RouterState};
use cutover::ops::Verdict;
use cutover::router::Router;
use rig::{Kind, Rig};

/// How long a proxy may take to show a change that a verb reported done.
const SETTLE: Duration = Duration::from_secs(10);

async fn observe(r: &Arc<dyn Router>) -> RouterState {
    r.observe()
        .await
        .unwrap_or_else(|e| panic!("{}: observe failed: {e:#}", r.name()))
}

/// Run a verb on every router of the rig, in order (a fleet's routers one after the other).
macro_rules! each {
    ($rig:expr, |$d:ident| $verb:expr, $what:expr) => {
        for $d in &$rig.routers {
            if let Err(e) = $verb.await {
                panic!("{}: {} failed: {e:#}", $d.name(), $what);
            }
        }
    };
}

/// Every router reads back `live` as the live slot, and every public URL answers from it.
async fn all_live(rig: &Rig, live: &str) {
    for d in &rig.routers {
        let st = observe(d).await;
        assert_eq!(st.live.as_deref(), Some(live), "{}: {st:#?}", d.name());
    }
    public_answers(rig, live).await;
}

/// Every public URL answers from `slot` (within SETTLE: a reload takes effect when it does).
async fn public_answers(rig: &Rig, slot: &str) {
    let ok = eventually(SETTLE, || async {
        for u in &rig.public {
            let (status, from, _) = get(u).await;
            if status != 200 || from != slot {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        ok,
        "{:?}: the public URLs do not answer from {slot}: now {:?}",
        rig.kind,
        rig.public_slot().await
    );
}

/// How many of `n` requests to the public URL the drained server answered.
async fn drained_server_served(rig: &Rig, n: usize) -> u64 {
    common::served_during(
        std::slice::from_ref(rig.drained_server()),
        &rig.public[0],
        n,
    )
    .await[0]
}

// ---------------------------------------------------------------------------------------
// The properties

async fn reads_the_state(rig: Rig) {
    for d in &rig.routers {
        let st = observe(d).await;
        let who = d.name();
        // Holding requests is the embedded proxy's alone; every other driver says it cannot.
        assert_eq!(
            d.supports(cutover::router::Verb::Pause),
            rig.kind == Kind::Embedded,
            "{who}: supports(Pause)"
        );
        assert_eq!(st.live.as_deref(), Some("blue"), "{who}: {st:#?}");
        if rig.preview.is_some() {
            assert_eq!(st.preview.as_deref(), Some("green"), "{who}: {st:#?}");
        }
        assert_eq!(st.maintenance, None, "{who}");
        assert!(
            st.slots.contains_key("blue") && st.slots.contains_key("green"),
            "{who}: {st:#?}"
        );
        assert_eq!(st.slots["blue"].admin, AdminState::Ready, "{who}: {st:#?}");
        assert!(st.problems.is_empty(), "{who}: {:?}", st.problems);
        assert!(st.notes.is_empty(), "{who}: {:?}", st.notes);
        if rig.servers.nodes {
            for n in ["n1", "n2"] {
                assert_eq!(common::node(&st, "blue", n).admin, AdminState::Ready);
            }
        }
    }
    assert_eq!(rig.public_slot().await, "blue");
    if let Some(p) = &rig.preview {
        assert_eq!(get(p).await.1, "green", "the preview URL");
    }
}

async fn swap_and_swap_back(rig: Rig) {
    each!(rig, |d| d.switch_live("green"), "swap to green");
    all_live(&rig, "green").await;
    each!(rig, |d| d.switch_live("blue"), "swap back to blue");
    all_live(&rig, "blue").await;
    // Swapping to the live slot changes nothing.
    each!(rig, |d| d.switch_live("blue"), "swap to blue again");
    all_live(&rig, "blue").await;
    // The preview moves too, where the kind has one.
    if let Some(p) = &rig.preview {
        for slot in ["blue", "green"] {
            each!(rig, |d| d.set_preview(slot), format!("preview {slot}"));
            for d in &rig.routers {
                assert_eq!(observe(d).await.preview.as_deref(), Some(slot));
            }
            let moved = eventually(SETTLE, || async { get(p).await.1 == slot }).await;
            assert!(
                moved,
                "{:?}: the preview URL does not answer from {slot}",
                rig.kind
            );
        }
        all_live(&rig, "blue").await;
    }
    // A slot the environment does not have is refused, and nothing moves.
    for d in &rig.routers {
        assert!(d.switch_live("purple").await.is_err(), "{}", d.name());
    }
    all_live(&rig, "blue").await;
}

async fn drain_and_undrain_a_node(rig: Rig) {
    let target = rig.drain_target();
    let admin_of = |st: &RouterState| match &target.node {
        Some(n) => common::node(st, &target.slot, n).admin,
        None => st.slots[&target.slot].admin,
    };
    let mut before = Vec::new();
    for d in &rig.routers {
        before.push(admin_of(&observe(d).await));
    }
    each!(rig, |d| d.drain(&target), format!("drain {target}"));
    for d in &rig.routers {
        let st = observe(d).await;
        assert_eq!(admin_of(&st), AdminState::Drain, "{}: {st:#?}", d.name());
        assert_eq!(st.live.as_deref(), Some("blue"));
    }
    // No new request reaches the drained server; the slot keeps serving.
    let quiet = eventually(SETTLE, || async {
        drained_server_served(&rig, 10).await == 0
    })
    .await;
    assert!(
        quiet,
        "{:?}: the drained server still gets requests",
        rig.kind
    );
    assert_eq!(rig.public_slot().await, "blue");

    // Undrained, the target is as before (a slot that is not live stays disabled where the
    // proxy keeps it so, as Apache's live balancer does).
    each!(rig, |d| d.undrain(&target), format!("undrain {target}"));
    for (d, was) in rig.routers.iter().zip(before) {
        let st = observe(d).await;
        assert_eq!(admin_of(&st), was, "{}: {st:#?}", d.name());
    }
    if target.node.is_some() {
        let back = eventually(SETTLE, || async {
            drained_server_served(&rig, 10).await > 0
        })
        .await;
        assert!(back, "{:?}: the undrained node gets no request", rig.kind);
    }
}

async fn maintenance_on_and_off(rig: Rig) {
    let page = MaintenanceMode::Page;
    each!(rig, |d| d.maintenance(true, &page), "maintenance on");
    for d in &rig.routers {
        let st = observe(d).await;
        assert_eq!(st.maintenance, Some(MaintenanceMode::Page), "{}", d.name());
    }
    let c = cutover::http_client().build().expect("client");
    for u in &rig.public {
        let down = eventually(SETTLE, || async { get(u).await.0 == 503 }).await;
        assert!(down, "{u} does not answer 503 in maintenance");
        if let Some((header, value)) = rig.bypass {
            let r = c.get(u).header(header, value).send().await.expect("get");
            assert_eq!(r.status().as_u16(), 200, "{header} reaches the live slot");
            let slot = r.headers().get("x-slot").and_then(|v| v.to_str().ok());
            assert_eq!(slot, Some("blue"));
        }
    }
    each!(rig, |d| d.maintenance(false, &page), "maintenance off");
    for d in &rig.routers {
        assert_eq!(observe(d).await.maintenance, None, "{}", d.name());
    }
    all_live(&rig, "blue").await;
    if !rig.redirect {
        return;
    }
    // The live traffic goes to another slot instead, and comes back.
    let to_green = MaintenanceMode::Redirect { to: "green".into() };
    each!(rig, |d| d.maintenance(true, &to_green), "redirect to green");
    for d in &rig.routers {
        let st = observe(d).await;
        assert_eq!(st.maintenance.as_ref(), Some(&to_green), "{}", d.name());
        assert_eq!(st.live.as_deref(), Some("blue"), "the slot that comes back");
    }
    public_answers(&rig, "green").await;
    each!(rig, |d| d.maintenance(false, &page), "maintenance off");
    all_live(&rig, "blue").await;
}

async fn drift_after_a_change_by_hand(rig: Rig) {
    rig.hand_switch("green").await;
    // The (last) router reads back what its proxy really does.
    let d = rig.routers.last().expect("router");
    let st = observe(d).await;
    assert_eq!(st.live.as_deref(), Some("green"), "{}: {st:#?}", d.name());
    if rig.routers.len() > 1 {
        let first = observe(&rig.routers[0]).await;
        assert_eq!(
            first.live.as_deref(),
            Some("blue"),
            "only the second was changed"
        );
    }
    // A change through cutover puts it right.
    each!(rig, |d| d.switch_live("blue"), "swap back to blue");
    all_live(&rig, "blue").await;
}

async fn a_refused_swap_leaves_traffic_where_it_was(mut rig: Rig) {
    rig.make_refuse().await;
    let engine = common::engine(&rig.toml);
    let swap = common::swap_to("green");
    let (out, _) = common::run_op(&engine, swap, false, false).await;
    assert!(
        matches!(out.verdict, Verdict::Failed | Verdict::Refused),
        "{:?}: the swap was {:?}: {}",
        rig.kind,
        out.verdict,
        out.message
    );
    assert!(!out.message.is_empty());
    eprintln!("{:?}: the refusal: {}", rig.kind, out.message);
    public_answers(&rig, "blue").await;
    // Still blue a moment later (nothing applies late). A router that can still read its
    // proxy (the refusing one may not) reads blue back, or no live slot with a problem.
    assert_eq!(rig.public_slot().await, "blue");
    for d in &rig.routers {
        if let Ok(st) = d.observe().await {
            match st.live.as_deref() {
                Some(live) => assert_eq!(live, "blue", "{}: {st:#?}", d.name()),
                None => assert!(!st.problems.is_empty(), "{}: {st:#?}", d.name()),
            }
        }
    }
}

async fn a_hung_proxy_times_out_with_a_clear_error(rig: Rig) {
    let target = rig.drain_target();
    let d = rig.routers.last().expect("router");
    let stopped = rig.hang();
    let t = Instant::now();
    let e = match tokio::time::timeout(Duration::from_secs(60), d.drain(&target)).await {
        Err(_) => panic!(
            "{:?}: drain on a hung proxy still waits after 60 s",
            rig.kind
        ),
        Ok(Ok(())) => panic!("{:?}: drain on a hung proxy succeeded", rig.kind),
        Ok(Err(e)) => format!("{e:#}"),
    };
    let took = t.elapsed();
    eprintln!("{:?}: after {took:?}: {e}", rig.kind);
    let said = [
        "timed out",
        "did not answer",
        "timeout",
        "no answer",
        "within",
    ];
    assert!(
        said.iter().any(|w| e.to_lowercase().contains(w)),
        "{:?}: the error does not say the proxy did not answer in time: {e}",
        rig.kind
    );
    // Which proxy it was: the router's name (haproxy's errors name only the proxy).
    let lower = e.to_lowercase();
    assert!(
        e.contains(d.name()) || lower.contains(d.kind()),
        "the error names neither the router nor its kind: {e}"
    );
    drop(stopped);
    // Back from the hang, the proxy serves and reads as before.
    let st = observe(d).await;
    assert_eq!(st.live.as_deref(), Some("blue"), "{st:#?}");
    public_answers(&rig, "blue").await;
}

// ---------------------------------------------------------------------------------------
// Every kind × every property

macro_rules! contract {
    ($($module:ident => $kind:expr;)*) => {$(
        mod $module {
            use super::*;
            contract!(@props $kind;
                reads_the_state,
                swap_and_swap_back,
                drain_and_undrain_a_node,
                maintenance_on_and_off,
                drift_after_a_change_by_hand,
                a_refused_swap_leaves_traffic_where_it_was,
                a_hung_proxy_times_out_with_a_clear_error,
            );
        }
    )*};
    (@props $kind:expr; $($prop:ident,)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $prop() {
            let test = concat!(module_path!(), "::", stringify!($prop));
            if let Some(rig) = Rig::start(test, $kind).await {
                super::$prop(rig).await;
            }
        }
    )*};
}

contract! {
    embedded => Kind::Embedded;
    haproxy_map => Kind::HaproxyMap;
    haproxy_servers => Kind::HaproxyServers;
    nginx => Kind::Nginx;
    nginx_symlink => Kind::NginxSymlink;
    caddy_api => Kind::CaddyApi;
    caddy_file => Kind::CaddyFile;
    exec => Kind::Exec;
    apache => Kind::Apache;
    apache_file => Kind::ApacheFile;
    fleet => Kind::Fleet;
}
