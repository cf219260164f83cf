//! The canary operation against real proxies (tests/common/rig.rs starts them): an analysis
//! failure at step 2 aborts on its own; a `pause` step, pause/resume and a manual promote steer
//! it; a fleet where one router refuses a weight change puts the other back; the embedded
//! proxy's sticky cookie holds during a canary and is overridden by an abort; its preview
//! header and cookie reach the preview slot through the public URL at 0 %.
#![allow(clippy::expect_used)]

mod common;
#[path = "common/rig.rs"]
mod rig;

use std::sync::Arc;
use std::time::Duration;

use cutover::model::CanaryStep::{self, Pause, Weight};
use cutover::ops::{
    CanaryControl, Engine, GateSource, Interrupt, OpKind, OpRequest, Outcome, Progress, Verdict,
};
use rig::{Kind, Rig};
use tokio::sync::{mpsc, watch};

/// How long a step message may take to come (the machine is loaded).
const WITHIN: Duration = Duration::from_secs(60);

/// The rig's engine, with `extra` lines in its environment.
fn engine(rig: &Rig, extra: &str) -> Arc<Engine> {
    let anchor = "watch = \"0s\"\n";
    assert!(rig.toml.contains(anchor), "{}", rig.toml);
    common::engine(&rig.toml.replacen(anchor, &format!("{anchor}{extra}"), 1))
}

/// A canary running in the background, steered as the CLI and the TUI steer it.
struct Canary {
    task: tokio::task::JoinHandle<Outcome>,
    rx: mpsc::UnboundedReceiver<Progress>,
    control: watch::Sender<CanaryControl>,
    cancel: watch::Sender<Interrupt>,
}

impl Canary {
    fn start(e: &Arc<Engine>, steps: &[CanaryStep]) -> Canary {
        let (tx, rx) = mpsc::unbounded_channel();
        let (cancel, cancelled) = watch::channel(Interrupt::None);
        let (control, steer) = watch::channel(CanaryControl::default());
        let req = OpRequest {
            watch: false,
            control: Some(steer),
            ..OpRequest::new(OpKind::Canary {
                to: "green".into(),
                steps: steps.to_vec(),
                interval: None,
            })
        };
        let e = e.clone();
        let task =
            tokio::spawn(async move { e.run(req, GateSource::ProbeNow, tx, cancelled).await });
        Canary {
            task,
            rx,
            control,
            cancel,
        }
    }

    /// Wait for a step line (begun, done, a note or a decision) containing `needle`.
    async fn until(&mut self, needle: &str) {
        let found = tokio::time::timeout(WITHIN, async {
            while let Some(p) = self.rx.recv().await {
                if let Progress::Step { message, .. } | Progress::Decision { message, .. } = &p
                    && message.contains(needle)
                {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true), "no step line saying `{needle}`");
    }

    /// The next analysis check's countdown and line.
    async fn next_check(&mut self) -> (Duration, String) {
        tokio::time::timeout(WITHIN, async {
            while let Some(p) = self.rx.recv().await {
                if let Progress::Watching {
                    remaining, detail, ..
                } = p
                {
                    return Some((remaining, detail));
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
        .expect("an analysis check")
    }

    fn ask(&self, what: &str) {
        self.control
            .send_modify(|c| assert!(c.apply(what), "{what}"));
    }

    async fn finish(self) -> Outcome {
        tokio::time::timeout(WITHIN, self.task)
            .await
            .expect("the canary ends")
            .expect("task")
    }
}

/// What every router of the rig reports: (live, canary share).
async fn routers(rig: &Rig) -> Vec<(Option<String>, Option<u8>)> {
    let mut out = Vec::new();
    for r in &rig.routers {
        let s = r.observe().await.expect("observe");
        out.push((s.live, s.weights.map(|w| w.canary_percent)));
    }
    out
}

/// The canary aborted on its own, back to 100 % on blue, its result saying each of `said`.
#[track_caller]
fn assert_aborted(out: &Outcome, said: &[&str]) {
    common::assert_verdict(out, Verdict::RolledBack);
    for s in said.iter().chain(&["aborted; 100 % on blue after "]) {
        common::assert_contains(&out.message, s);
    }
}

/// Green starts answering 500 once step 2 (50 %) holds: the analysis sees its error rate
/// against blue's under a bounded load on the public URL and aborts back to 0 % on its own.
async fn analysis_failure_aborts(test: &str, kind: Kind) {
    let Some(rig) = Rig::start(test, kind).await else {
        return;
    };
    let e = engine(
        &rig,
        "canary_pause = \"60s\"\ncanary_max_error_rate = 0.5\n\
         canary_max_error_rate_over_stable = 0.01\ncanary_failure_limit = 2\n",
    );
    let mut c = Canary::start(&e, &[Weight(10), Weight(50), Weight(100)]);
    c.until("step 1/3 (10 %): analysing").await;
    c.ask("promote");
    c.until("step 2/3 (50 %): every router sends 50 % to `green`")
        .await;
    assert_eq!(
        routers(&rig).await,
        vec![(Some("blue".into()), Some(50))],
        "step 2 read back"
    );
    rig.servers.green().controls.set_healthy(false);
    let out = common::under_load(format!("{}health", rig.public[0]), c.task).await;
    eprintln!("{kind:?} abort: {}", out.message);
    assert_aborted(
        &out,
        &[
            "step 2/3 (50 %) failed: ",
            "green error rate ",
            " > blue's 0.0 % + 1.0 % (",
        ],
    );
    assert_eq!(routers(&rig).await, vec![(Some("blue".into()), None)]);
    rig.servers.green().controls.set_healthy(true);
    for _ in 0..20 {
        assert_eq!(rig.public_slot().await, "blue");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_analysis_failure_at_step_2_aborts_on_the_embedded_proxy() {
    analysis_failure_aborts(
        "an_analysis_failure_at_step_2_aborts_on_the_embedded_proxy",
        Kind::Embedded,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_analysis_failure_at_step_2_aborts_on_haproxy() {
    analysis_failure_aborts(
        "an_analysis_failure_at_step_2_aborts_on_haproxy",
        Kind::HaproxyMap,
    )
    .await;
}

/// A `[[environment.canary_query]]` judged by a real Prometheus scraping the embedded proxy's
/// `/metrics`: green's p99 passes while it answers at once (the step's line shows the value);
/// once green answers in 300 ms under load, the query fails the checks and the canary aborts
/// on its own, naming the query and its value. The router's own checks (error rate, health)
/// pass throughout, so the query is what aborts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_prometheus_query_judges_each_check_and_aborts_the_canary() {
    let test = "a_prometheus_query_judges_each_check_and_aborts_the_canary";
    let Some(bin) = common::require_binary(test, "prometheus") else {
        return;
    };
    let rig = common::or_skip!(Rig::start(Kind::Embedded).await);
    let admin = rig
        .toml
        .split("admin = \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the embedded router's admin address")
        .to_string();
    let dir = tempfile::tempdir().expect("dir");
    let (_prom, base) = common::spawn_prometheus(&bin, dir.path(), "proxy", &admin, None);
    let client = reqwest::Client::new();
    let up = common::eventually(Duration::from_secs(30), || async {
        let q = cutover::model::CanaryQuery {
            name: "up".into(),
            url: base.parse().expect("url"),
            query: "up{job=\"proxy\"}".into(),
            pass: "== 1".parse().expect("pass"),
            timeout: Duration::from_secs(2),
        };
        cutover::ops::query::ask(&client, &q, "green", "blue").await == Ok(vec![1.0])
    })
    .await;
    assert!(up, "prometheus never scraped the proxy at {admin}");

    let query = format!(
        "[[environment.canary_query]]\nname = \"green p99\"\nurl = \"{base}\"\n\
         query = 'max(cutover_proxy_recent_latency_seconds{{slot=\"{{canary}}\",percentile=\"p99\"}}) or vector(0)'\n\
         pass = \"< 0.1\"\n"
    );
    let e = common::engine(&format!(
        "{}\n{query}",
        rig.toml.replacen(
            "watch = \"0s\"\n",
            "watch = \"0s\"\ncanary_pause = \"600s\"\ncanary_max_error_rate = 1.0\n",
            1
        )
    ));
    assert_eq!(e.env.canary.queries.len(), 1);
    let mut c = Canary::start(&e, &[Weight(50), Weight(100)]);
    c.until("step 1/2 (50 %): analysing `green`").await;
    let (_, line) = c.next_check().await;
    assert!(line.contains("green p99 0.0"), "{line}");
    assert!(!line.contains("query `"), "{line}");

    rig.servers
        .green()
        .controls
        .set_delay(Duration::from_millis(300));
    let out = common::under_load(rig.public[0].clone(), c.task).await;
    rig.servers.green().controls.set_delay(Duration::ZERO);
    eprintln!("abort: {}", out.message);
    assert_aborted(
        &out,
        &[
            "step 1/2 (50 %) failed: ",
            "query `green p99` = 0.",
            ", not < 0.1",
        ],
    );
    assert!(!out.message.contains("error rate"), "{}", out.message);
    assert_eq!(routers(&rig).await, vec![(Some("blue".into()), None)]);
}

/// `cutover canary ENV --to SLOT --steps … --interval 1s` holds each step for the interval
/// given, not the environment's `canary_pause` (10 minutes here), and says so in its plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_interval_overrides_the_configured_hold() {
    let rig = common::or_skip!(Rig::start(Kind::Embedded).await);
    let toml = rig.toml.replacen(
        "watch = \"0s\"\n",
        "watch = \"0s\"\ncanary_pause = \"600s\"\n",
        1,
    );
    let dir = tempfile::tempdir().expect("dir");
    let args = [
        "canary",
        "shop",
        "--to",
        "green",
        "--steps",
        "50,100",
        "--interval",
        "1s",
        "--yes",
    ];
    let o = tokio::time::timeout(
        Duration::from_secs(120),
        common::cutover_cli(dir.path(), &toml, &args),
    )
    .await
    .expect("the canary held its steps for the interval given, not 600 s");
    let out = common::printed(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    common::assert_contains(&out, "canary blue → green: 50 % → 100 %, 1.0s per step");
    common::assert_contains(&out, "step 1/2 (50 %): analysing `green` for 1.0s");
    assert_eq!(rig.public_slot().await, "green");
}

/// A promote ends a 10-minute hold; a `pause` step waits for a resume; a pause stops the
/// countdown (the analysis goes on) until resumed; the last promote leads to the swap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_steps_pause_resume_and_promote_steer_the_canary() {
    let rig = common::or_skip!(Rig::start(Kind::Embedded).await);
    let e = engine(&rig, "canary_pause = \"600s\"\n");
    let mut c = Canary::start(&e, &[Weight(10), Pause, Weight(20), Weight(100)]);
    c.until("step 1/4 (10 %): analysing `green` for 600.0s")
        .await;
    c.ask("promote");
    c.until("step 1/4 (10 %): promoted by the operator").await;

    c.until("step 2/4 (pause at 10 %): paused").await;
    let (_, line) = c.next_check().await;
    assert!(line.contains("waiting for the operator"), "{line}");
    assert_eq!(routers(&rig).await, vec![(Some("blue".into()), Some(10))]);
    c.ask("resume");
    c.until("step 2/4 (pause at 10 %): resumed by the operator")
        .await;

    c.until("step 3/4 (20 %): every router sends 20 % to `green`")
        .await;
    c.ask("pause");
    c.until("step 3/4 (20 %): paused by the operator").await;
    // Paused: the checks go on, the countdown stands still.
    let (first, line) = c.next_check().await;
    assert!(line.contains("· paused"), "{line}");
    let (second, _) = c.next_check().await;
    assert_eq!(first, second, "the countdown moved while paused");
    c.ask("resume");
    c.until("step 3/4 (20 %): resumed by the operator").await;
    c.ask("promote");
    let out = c.finish().await;
    assert_eq!(out.verdict, Verdict::Done, "{}", out.message);
    assert_eq!(rig.public_slot().await, "green");
    assert_eq!(routers(&rig).await, vec![(Some("green".into()), None)]);
    // The operator's decisions are in the audit record, in order.
    let said: Vec<&str> = out.record.steps.iter().map(|s| s.detail.as_str()).collect();
    let at = |needle: &str| {
        said.iter()
            .position(|d| d.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in {said:#?}"))
    };
    assert!(at("step 3/4 (20 %): paused by the operator") < at("step 3/4 (20 %): resumed"));
    assert!(at("step 1/4 (10 %): promoted by the operator") < at("step 3/4 (20 %): paused"));
}

/// A check that fails within `canary_failure_limit` does not abort: it is said as a decision
/// (the event pane, the CLI) and kept in the audit record with its reason, and the step's
/// later lines say the failure they still count.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tolerated_failed_check_is_said_and_audited() {
    let rig = common::or_skip!(Rig::start(Kind::Embedded).await);
    let e = engine(
        &rig,
        "canary_pause = \"600s\"\ncanary_failure_limit = 1000\n",
    );
    let mut c = Canary::start(&e, &[Weight(10), Weight(100)]);
    c.until("step 1/2 (10 %): analysing").await;
    rig.servers.green().controls.set_healthy(false);
    c.until("step 1/2 (10 %): check failed (1 of 1001 would abort), tolerated: `green` failed its health check")
        .await;
    rig.servers.green().controls.set_healthy(true);
    // The next passing check still says the failure it counts, and how long ago it was.
    let line = loop {
        let (_, line) = c.next_check().await;
        if line.contains(" · last failed ") {
            break line;
        }
    };
    assert!(
        line.contains(" ago: `green` failed its health check"),
        "{line}"
    );
    c.ask("promote");
    let out = c.finish().await;
    assert_eq!(out.verdict, Verdict::Done, "{}", out.message);
    let tolerated = out
        .record
        .steps
        .iter()
        .find(|s| s.detail.contains("tolerated"))
        .unwrap_or_else(|| panic!("{:#?}", out.record.steps));
    assert_eq!((tolerated.step.as_str(), tolerated.ok), ("watch", true));
}

/// Two HAProxy routers; the second refuses the first weight change: the first is put back to
/// 0 % and every public URL serves blue.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fleet_where_one_router_refuses_the_weights_puts_the_other_back() {
    let mut rig = common::or_skip!(Rig::start(Kind::Fleet).await);
    let e = engine(&rig, "canary_pause = \"600s\"\n");
    rig.make_refuse().await;
    let out = Canary::start(&e, &[Weight(25), Weight(100)]).finish().await;
    eprintln!("fleet: {}", out.message);
    assert_eq!(out.verdict, Verdict::Failed, "{}", out.message);
    assert!(
        out.message
            .contains("step 1/2 (25 %): router `edge-b` refused the weights")
            && out.message.contains("aborted; 100 % on blue after"),
        "{}",
        out.message
    );
    assert_eq!(
        routers(&rig).await,
        vec![(Some("blue".into()), None), (Some("blue".into()), None)]
    );
    assert_eq!(rig.public_slot().await, "blue");
}

/// `n` answers of the public URL to a client holding `cookie`: the slots that served them.
async fn served_to(rig: &Rig, cookie: &str, n: usize) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(common::get_with(&rig.public[0], ("cookie", cookie)).await);
    }
    out
}

/// At 50 % a new client is pinned by a cookie to the slot it was sent to, and stays there;
/// after an abort the canary's cookie reaches blue, and the answer clears it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sticky_cookie_holds_during_a_canary_and_an_abort_overrides_it() {
    let rig = common::or_skip!(Rig::start(Kind::Embedded).await);
    let e = engine(&rig, "canary_pause = \"600s\"\n");
    let mut c = Canary::start(&e, &[Weight(50), Weight(100)]);
    c.until("step 1/2 (50 %): every router sends 50 % to `green`")
        .await;
    // New clients (no cookie) are split, and each answer pins its client.
    let mut pins = std::collections::BTreeSet::new();
    for (slot, set) in served_to(&rig, "other=1", 40).await {
        assert_eq!(
            set,
            Some(format!(
                "cutover_slot={slot}; Path=/; HttpOnly; SameSite=Lax"
            ))
        );
        pins.insert(slot);
    }
    assert_eq!(
        pins.len(),
        2,
        "40 new clients at 50 % reach both slots: {pins:?}"
    );
    for pinned in ["green", "blue"] {
        let cookie = format!("cutover_slot={pinned}");
        for (slot, set) in served_to(&rig, &cookie, 20).await {
            assert_eq!((slot.as_str(), set), (pinned, None), "{cookie}");
        }
    }
    c.cancel.send(Interrupt::Quit).expect("the canary listens");
    let out = c.finish().await;
    assert_eq!(out.verdict, Verdict::RolledBack, "{}", out.message);
    for (slot, set) in served_to(&rig, "cutover_slot=green", 20).await {
        assert_eq!(slot, "blue", "the canary's cookie after the abort");
        assert_eq!(set.as_deref(), Some("cutover_slot=; Path=/; Max-Age=0"));
    }
}

/// No weight moves: the preview header or cookie reaches green through the public URL, every
/// other request blue; `status --json` says the preview route is armed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_preview_header_and_cookie_reach_the_preview_slot_at_zero_percent() {
    let rig = common::or_skip!(Rig::start(Kind::Embedded).await);
    let url = &rig.public[0];
    for asks in [
        ("X-Cutover-Preview", "1"),
        ("cookie", "a=b; cutover_preview=1"),
    ] {
        assert_eq!(common::get_with(url, asks).await.0, "green", "{asks:?}");
    }
    for plain in [
        ("X-Cutover-Preview", "0"),
        ("cookie", "cutover_preview=0"),
        ("X-Other", "1"),
    ] {
        assert_eq!(common::get_with(url, plain).await.0, "blue", "{plain:?}");
    }
    assert_eq!(routers(&rig).await, vec![(Some("blue".into()), None)]);
    let dir = tempfile::tempdir().expect("tempdir");
    let o = common::cutover_cli(dir.path(), &rig.toml, &["status", "shop", "--json"]).await;
    let text = common::printed(&o);
    assert!(
        text.contains(
            "\"preview_route\": \"header x-cutover-preview or cookie cutover_preview=1 → green\""
        ),
        "{text}"
    );
    let o = common::cutover_cli(dir.path(), &rig.toml, &["status", "shop"]).await;
    assert!(
        common::printed(&o).contains("preview route armed: header x-cutover-preview"),
        "{}",
        common::printed(&o)
    );
}

/// `cutover drill ENV --canary` as a library call on `kind`: each step of the default plan
/// up to 50 % measured on 4000 answers, then the abort; printed. Its weights are the plan's and
/// the canary is back at 0 % on every router afterwards.
async fn run_canary_drill(test: &str, kind: Kind) -> Option<cutover::drill::CanaryDrillReport> {
    let rig = Rig::start(test, kind).await?;
    let e = engine(&rig, "canary_pause = \"600s\"\n");
    let opts = cutover::drill::DrillOptions {
        concurrency: 16,
        requests: 2_000_000,
        duration: Duration::from_secs(180),
        ..Default::default()
    };
    let how = cutover::drill::CanaryDrill {
        abort_at: 50,
        sample: 4000,
    };
    let r = cutover::drill::run_canary(&e, &opts, how)
        .await
        .unwrap_or_else(|e| panic!("{kind:?}: {e:#}"));
    eprintln!("--- {kind:?}");
    r.print();
    let weights: Vec<u8> = r.rows.iter().map(|row| row.weight).collect();
    assert_eq!(weights, [5, 25, 50, 0], "{:?}", r.problems);
    assert_eq!(routers(&rig).await, vec![(Some("blue".into()), None)]);
    Some(r)
}

/// The drill passes: each step within 3 points, no failed request.
async fn canary_drill(test: &str, kind: Kind) {
    if let Some(r) = run_canary_drill(test, kind).await {
        assert!(r.passed(), "{:?}", r.problems);
        assert_eq!(r.failed, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_drill_on_the_embedded_proxy_measures_each_step() {
    canary_drill(
        "a_canary_drill_on_the_embedded_proxy_measures_each_step",
        Kind::Embedded,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_drill_on_haproxy_measures_each_step() {
    canary_drill(
        "a_canary_drill_on_haproxy_measures_each_step",
        Kind::HaproxyMap,
    )
    .await;
}

/// The servers setup's steps are server weights (`set server be_app/SRV weight N`): no
/// reload, so no loss either.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_drill_on_haproxy_servers_measures_each_step() {
    canary_drill(
        "a_canary_drill_on_haproxy_servers_measures_each_step",
        Kind::HaproxyServers,
    )
    .await;
}

/// Apache's steps are `lbfactor` changes through the balancer-manager: no reload, so no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_drill_on_apache_measures_each_step() {
    canary_drill("a_canary_drill_on_apache_measures_each_step", Kind::Apache).await;
}

/// nginx's steps (the realpath method, the default) re-point bucket links: no reload, so no
/// loss (docs/nginx.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_drill_on_nginx_measures_each_step() {
    canary_drill(
        "a_canary_drill_on_nginx_measures_each_step",
        Kind::NginxRealpath,
    )
    .await;
}

/// Caddy's file mode takes each step by bucket files its routes test per request
/// (docs/caddy.md): no config change, so no reload and no loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_drill_on_caddy_measures_each_step() {
    canary_drill(
        "a_canary_drill_on_caddy_measures_each_step",
        Kind::CaddyFile,
    )
    .await;
}
