//! `cutover drill ENV`: prove a cutover loses nothing. A bounded load runs against the public
//! URL while K swap+rollback pairs go through the normal operations engine; the report counts
//! failed requests by kind, which slot answered over time, and how long each switch took to
//! reach the clients.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, bail};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::load::{self, Failures, LoadOptions, LoadReport};
use crate::ops::{Engine, GateSource, Interrupt, OpKind, OpRequest, Verdict};

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub concurrency: usize,
    pub requests: u64,
    pub duration: Duration,
    pub pairs: usize,
    pub keep_alive: bool,
    pub path: String,
    /// Pause between switches, so each is seen under load.
    pub pause: Duration,
    pub yes_really: bool,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            concurrency: 32,
            requests: 100_000,
            duration: Duration::from_secs(60),
            pairs: 5,
            keep_alive: true,
            path: "/".into(),
            pause: Duration::from_millis(250),
            yes_really: false,
        }
    }
}

/// One switch as the clients saw it.
#[derive(Debug, Clone, Serialize)]
pub struct SwitchTiming {
    pub from: String,
    pub to: String,
    /// When the command was issued, from the start of the load.
    pub issued_ms: u64,
    /// The operation's own duration (plan → verify).
    pub op_ms: u64,
    /// Command issued → the first response from the new slot.
    pub first_new_ms: Option<u64>,
    /// Command issued → the last response from the old slot.
    pub last_old_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub url: String,
    pub concurrency: usize,
    pub keep_alive: bool,
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
    pub failures: Failures,
    pub by_slot: BTreeMap<String, u64>,
    /// Answers per slot per second since the start.
    pub timeline: Vec<BTreeMap<String, u64>>,
    pub switches: Vec<SwitchTiming>,
    pub failed_operations: Vec<String>,
    pub rps: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub elapsed_ms: u64,
    pub first_errors: Vec<String>,
}

impl DrillReport {
    pub fn percentile(v: &mut [u64], p: f64) -> Option<u64> {
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
    }

    pub fn print(&self) {
        println!(
            "drill against {} ({} connections, keep-alive {})",
            self.url,
            self.concurrency,
            if self.keep_alive { "on" } else { "off" }
        );
        println!(
            "  requests   {} sent, {} ok, {} failed in {:.1}s ({:.0} req/s)",
            self.sent,
            self.ok,
            self.failed,
            self.elapsed_ms as f64 / 1000.0,
            self.rps
        );
        println!(
            "  failures   connect {} · reset {} · timeout {} · non-2xx {}",
            self.failures.connect,
            self.failures.reset,
            self.failures.timeout,
            self.failures.status.values().sum::<u64>()
        );
        let by: Vec<String> = self
            .by_slot
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("  answered   {}", by.join(" · "));
        if let (Some(a), Some(b)) = (self.p50_us, self.p99_us) {
            println!(
                "  latency    p50 {:.2}ms · p99 {:.2}ms",
                a as f64 / 1000.0,
                b as f64 / 1000.0
            );
        }
        let mut first: Vec<u64> = self
            .switches
            .iter()
            .filter_map(|s| s.first_new_ms)
            .collect();
        let mut last: Vec<u64> = self.switches.iter().filter_map(|s| s.last_old_ms).collect();
        let mut op: Vec<u64> = self.switches.iter().map(|s| s.op_ms).collect();
        println!(
            "  switches   {} · operation p50 {}ms p99 {}ms · first answer from the new slot p50 {}ms p99 {}ms · last answer from the old slot p50 {}ms p99 {}ms",
            self.switches.len(),
            fmt_opt(Self::percentile(&mut op, 0.5)),
            fmt_opt(Self::percentile(&mut op, 0.99)),
            fmt_opt(Self::percentile(&mut first, 0.5)),
            fmt_opt(Self::percentile(&mut first, 0.99)),
            fmt_opt(Self::percentile(&mut last, 0.5)),
            fmt_opt(Self::percentile(&mut last, 0.99)),
        );
        for f in &self.failed_operations {
            println!("  operation failed: {f}");
        }
        for e in &self.first_errors {
            println!("  error: {e}");
        }
        println!("  per second:");
        for (i, b) in self.timeline.iter().enumerate() {
            let row: Vec<String> = b.iter().map(|(k, v)| format!("{k} {v}")).collect();
            println!("    {:>3}s  {}", i, row.join(" · "));
        }
        println!("{} passed, {} failed", self.ok, self.failed);
    }
}

fn fmt_opt(v: Option<u64>) -> String {
    v.map_or("-".into(), |v| v.to_string())
}

fn is_loopback(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map_or(url, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

/// A live reading of a running drill (for the TUI's chart), every half second.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillTick {
    pub elapsed: Duration,
    /// Successful answers per slot so far.
    pub by_slot: BTreeMap<String, u64>,
    pub failed: u64,
    pub switches: usize,
}

/// Run a drill. Refuses production environments unless `yes_really`, and non-loopback targets
/// when the environment says `drill_loopback_only`.
pub async fn run(engine: &Engine, opts: &DrillOptions) -> Result<DrillReport> {
    run_with(engine, opts, None).await
}

/// [`run`], sending a [`DrillTick`] every half second to `ticks`.
pub async fn run_with(
    engine: &Engine,
    opts: &DrillOptions,
    ticks: Option<mpsc::UnboundedSender<DrillTick>>,
) -> Result<DrillReport> {
    let env = &engine.env;
    if env.production && !env.allow_drill && !opts.yes_really {
        bail!(
            "`{}` is a production environment: a drill switches it back and forth under load. \
             Pass --yes-really, or set allow_drill = true for it",
            env.name
        );
    }
    let Some(base) = &env.public_url else {
        bail!(
            "`{}` has no public_url to send the drill's load to",
            env.name
        );
    };
    let url = format!("{}{}", base.trim_end_matches('/'), opts.path);
    if env.drill_loopback_only && !is_loopback(&url) {
        bail!(
            "{url} is not a loopback address and `{}` sets drill_loopback_only",
            env.name
        );
    }
    let states = engine.observe_all().await?;
    let Some(a) = engine.agreed_live(&states)? else {
        bail!("the router has no live slot");
    };
    let b = states[0]
        .preview
        .clone()
        .filter(|p| *p != a)
        .or_else(|| env.slots.iter().map(|s| s.name.clone()).find(|s| *s != a));
    let Some(b) = b else {
        bail!("a drill needs a second slot to switch to");
    };
    // One gate input for the whole drill: the drill checks that both slots are healthy first.
    let gate = engine.fresh_gate_input(env.gate_checks).await;
    for s in [&a, &b] {
        let plan = crate::ops::gate(env.gate_checks, None, s, &gate, false);
        if !plan.passes() {
            bail!(
                "`{s}` is not healthy enough for a drill: {}",
                plan.failed_checks()
                    .iter()
                    .map(|c| c.detail.clone())
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
    }

    let run = load::start(LoadOptions {
        url: url.clone(),
        concurrency: opts.concurrency,
        max_requests: opts.requests,
        max_duration: opts.duration,
        keep_alive: opts.keep_alive,
        timeout: Duration::from_secs(5),
    });
    let started = run.started;
    let done_switches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ticker = ticks.map(|tx| {
        let (live, done) = (run.live.clone(), done_switches.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let (by_slot, failed) = live.snapshot();
                let tick = DrillTick {
                    elapsed: started.elapsed(),
                    by_slot,
                    failed,
                    switches: done.load(std::sync::atomic::Ordering::Relaxed),
                };
                if tx.send(tick).is_err() {
                    return;
                }
            }
        })
    });
    tokio::time::sleep(opts.pause).await;
    let mut switches: Vec<(String, String, Duration, Duration)> = Vec::new();
    let mut failed_operations = Vec::new();
    for _ in 0..opts.pairs {
        for (from, to) in [(&a, &b), (&b, &a)] {
            let (tx, mut rx) = mpsc::unbounded_channel();
            tokio::spawn(async move { while rx.recv().await.is_some() {} });
            let (_c, cancel) = watch::channel(Interrupt::None);
            let issued = started.elapsed();
            let t = Instant::now();
            let out = engine
                .run(
                    OpRequest {
                        force: true,
                        watch: false,
                        ..OpRequest::new(OpKind::Swap {
                            to: Some(to.clone()),
                        })
                    },
                    GateSource::Given(gate.clone()),
                    tx,
                    cancel,
                )
                .await;
            if out.verdict != Verdict::Done {
                failed_operations.push(format!("{from} → {to}: {}", out.message));
            }
            switches.push((from.clone(), to.clone(), issued, t.elapsed()));
            done_switches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(opts.pause).await;
        }
        if run.sent.load(std::sync::atomic::Ordering::Relaxed) >= opts.requests {
            break;
        }
    }
    let report = run.finish().await;
    if let Some(t) = ticker {
        t.abort();
    }
    Ok(analyse(url, opts, report, switches, failed_operations))
}

fn analyse(
    url: String,
    opts: &DrillOptions,
    r: LoadReport,
    switches: Vec<(String, String, Duration, Duration)>,
    failed_operations: Vec<String>,
) -> DrillReport {
    let mut timeline: Vec<BTreeMap<String, u64>> = Vec::new();
    for s in &r.samples {
        let i = (s.at_ms / 1000) as usize;
        if timeline.len() <= i {
            timeline.resize(i + 1, BTreeMap::new());
        }
        *timeline[i].entry(s.slot.clone()).or_default() += 1;
    }
    let timings = switches
        .iter()
        .enumerate()
        .map(|(i, (from, to, issued, took))| {
            let t0 = issued.as_millis() as u64;
            let t_next = switches
                .get(i + 1)
                .map_or(u64::MAX, |n| n.2.as_millis() as u64);
            let window = r
                .samples
                .iter()
                .filter(|s| s.at_ms >= t0 && s.at_ms < t_next);
            let first_new = window.clone().find(|s| &s.slot == to).map(|s| s.at_ms - t0);
            let last_old = window
                .filter(|s| &s.slot == from)
                .map(|s| s.at_ms - t0)
                .max();
            SwitchTiming {
                from: from.clone(),
                to: to.clone(),
                issued_ms: t0,
                op_ms: took.as_millis() as u64,
                first_new_ms: first_new,
                last_old_ms: last_old,
            }
        })
        .collect();
    DrillReport {
        url,
        concurrency: opts.concurrency,
        keep_alive: opts.keep_alive,
        sent: r.sent,
        ok: r.ok,
        failed: r.failed(),
        rps: r.rps(),
        p50_us: r.percentile_us(0.5),
        p99_us: r.percentile_us(0.99),
        elapsed_ms: r.elapsed_ms,
        failures: r.failures.clone(),
        by_slot: r.by_slot.clone(),
        first_errors: r.first_errors.clone(),
        timeline,
        switches: timings,
        failed_operations,
    }
}
