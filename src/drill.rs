//! `cutover drill ENV`: prove a cutover loses nothing. A bounded load runs against the public
//! URL while K swap+rollback pairs go through the normal operations engine; the report counts
//! failed requests by kind, which slot answered over time, and how long each switch took to
//! reach the clients.
//!
//! The load keeps running until every switch has been seen by a client (an answer from the new
//! slot), and only then is stopped. Its bounds (requests, duration) still hold: if one ends the
//! load first, the switches it left unseen are listed and the drill fails — a switch no client
//! saw proves nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, bail};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::load::{self, Ended, Failures, LoadOptions, LoadReport};
use crate::ops::{Engine, GateSource, Interrupt, OpKind, OpRequest, Verdict};

mod canary;
pub use canary::{CanaryDrillReport, CanaryRow, run_canary};

#[derive(Debug, Clone)]
pub struct DrillOptions {
    pub concurrency: usize,
    /// The load's ceiling in requests; reaching it before every switch is seen fails the drill.
    pub requests: u64,
    /// The load's ceiling in time; reaching it before every switch is seen fails the drill.
    pub duration: Duration,
    pub pairs: usize,
    pub keep_alive: bool,
    pub path: String,
    /// Pause between switches, so each is seen under load.
    pub pause: Duration,
    pub yes_really: bool,
    /// `--canary`: run a canary instead of swap pairs ([`run_canary`]), aborted at this
    /// step (in %), each step measured on this many answers.
    pub canary: Option<CanaryDrill>,
}

/// `cutover drill ENV --canary [--abort-at 50] [--sample 4000]`.
#[derive(Debug, Clone, Copy)]
pub struct CanaryDrill {
    pub abort_at: u8,
    pub sample: u64,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            concurrency: 32,
            requests: 1_000_000,
            duration: Duration::from_secs(60),
            pairs: 5,
            keep_alive: true,
            path: "/".into(),
            pause: Duration::from_millis(250),
            yes_really: false,
            canary: None,
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
    /// Command issued → each moment of the operation (`lock`, `routers read`, `gate`,
    /// `journal written`, `command sent`, `routers answered`, `verified`), in µs.
    pub marks_us: Vec<(String, u64)>,
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
    /// Switches the drill meant to make (two per pair).
    pub planned_switches: usize,
    /// Why the load ended: `stopped` when the drill stopped it after its last switch was seen.
    pub load_ended: Ended,
    /// Switches that prove nothing, each saying why: no client saw them, or they were not run.
    pub unobserved: Vec<String>,
    pub failed_operations: Vec<String>,
    pub rps: f64,
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    pub elapsed_ms: u64,
    pub first_errors: Vec<String>,
}

impl DrillReport {
    /// No request failed, every operation went through, and every switch reached the clients.
    pub fn passed(&self) -> bool {
        self.failed == 0 && self.failed_operations.is_empty() && self.unobserved.is_empty()
    }

    /// Where a switch's time goes: each moment's p50 from the command, in ms, in the order
    /// an operation reaches them, with the first answer from the new slot among them.
    pub fn breakdown(&self) -> Vec<(String, f64)> {
        let mut names: Vec<String> = Vec::new();
        for s in &self.switches {
            for (m, _) in &s.marks_us {
                if !names.contains(m) {
                    names.push(m.clone());
                }
            }
        }
        let mut rows: Vec<(String, f64)> = names
            .into_iter()
            .filter_map(|name| {
                let mut v: Vec<u64> = self
                    .switches
                    .iter()
                    .filter_map(|s| s.marks_us.iter().find(|(m, _)| *m == name).map(|m| m.1))
                    .collect();
                Self::percentile(&mut v, 0.5).map(|us| (name, us as f64 / 1000.0))
            })
            .collect();
        let mut first: Vec<u64> = self
            .switches
            .iter()
            .filter_map(|s| s.first_new_ms)
            .collect();
        if let Some(ms) = Self::percentile(&mut first, 0.5) {
            rows.push(("first answer from the new slot".into(), ms as f64));
        }
        rows.sort_by(|a, b| a.1.total_cmp(&b.1));
        rows
    }

    /// The first answer from the new slot counted from the first router command instead of
    /// the operation's start: the proxy's part of a switch (ms, p50; the answers are timed to
    /// the millisecond).
    pub fn command_to_first_answer_p50(&self) -> Option<f64> {
        let mut v: Vec<u64> = self
            .switches
            .iter()
            .filter_map(|s| {
                let sent = s.marks_us.iter().find(|(m, _)| m == "command sent")?.1;
                Some((s.first_new_ms? * 1000).saturating_sub(sent))
            })
            .collect();
        Self::percentile(&mut v, 0.5).map(|us| us as f64 / 1000.0)
    }

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
        let steps: Vec<String> = self
            .breakdown()
            .iter()
            .map(|(m, ms)| format!("{m} {ms:.1}ms"))
            .collect();
        if !steps.is_empty() {
            println!("  p50 from the command: {}", steps.join(" · "));
        }
        if let Some(ms) = self.command_to_first_answer_p50() {
            println!(
                "  p50 from the first router command to the first answer from the new slot: {ms:.1}ms"
            );
        }
        for u in &self.unobserved {
            println!("  unseen     {u}");
        }
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
        if !self.unobserved.is_empty() {
            println!(
                "drill FAILED: {} of {} switches were not seen by any client",
                self.planned_switches
                    - self
                        .switches
                        .iter()
                        .filter(|s| s.first_new_ms.is_some())
                        .count(),
                self.planned_switches
            );
        }
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

/// How long one request of the drill's load may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(5);

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

/// The URL a drill loads (the public URL and `opts.path`), once the environment allows a
/// drill there.
fn load_url(engine: &Engine, opts: &DrillOptions) -> Result<String> {
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
    Ok(url)
}

/// The drill's load on `url`, within the options' bounds.
fn start_load(url: &str, opts: &DrillOptions) -> load::LoadRun {
    load::start(LoadOptions {
        url: url.to_string(),
        concurrency: opts.concurrency,
        max_requests: opts.requests,
        max_duration: opts.duration,
        keep_alive: opts.keep_alive,
        timeout: LOAD_TIMEOUT,
    })
}

/// The live slot the routers agree on, and the slot a drill moves to: the preview slot, else
/// (a router without a preview route) the first other slot.
pub(crate) async fn live_and_other(engine: &Engine) -> Result<(String, Option<String>)> {
    let states = engine.observe_all().await?;
    let Some(live) = engine.agreed_live(&states)? else {
        bail!(
            "no router sends live traffic to a slot; make one live first (`cutover swap {} --to SLOT`)",
            engine.env.name
        );
    };
    let other = states[0]
        .preview
        .clone()
        .filter(|p| *p != live)
        .or_else(|| {
            let mut slots = engine.env.slots.iter().map(|s| s.name.clone());
            slots.find(|s| *s != live)
        });
    Ok((live, other))
}

/// [`run`], sending a [`DrillTick`] every half second to `ticks`.
pub async fn run_with(
    engine: &Engine,
    opts: &DrillOptions,
    ticks: Option<mpsc::UnboundedSender<DrillTick>>,
) -> Result<DrillReport> {
    let url = load_url(engine, opts)?;
    let env = &engine.env;
    let (a, b) = live_and_other(engine).await?;
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

    let run = start_load(&url, opts);
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
    let mut progress = run.live.progress();
    // Every worker has stopped by then, even if the load's task could not say so.
    let load_over = started.checked_add(
        opts.duration
            .saturating_add(LOAD_TIMEOUT + Duration::from_secs(1)),
    );
    tokio::time::sleep(opts.pause).await;
    let mut switches: Vec<Made> = Vec::new();
    let mut failed_operations = Vec::new();
    for _ in 0..opts.pairs {
        // A pair is always finished, so the live slot ends where it started; no new pair
        // starts once the load is over, as no client could see it.
        if progress.borrow().ended.is_some() {
            break;
        }
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
            let done = out.verdict == Verdict::Done;
            if !done {
                failed_operations.push(format!("{from} → {to}: {}", out.message));
            }
            switches.push(Made {
                from: from.clone(),
                to: to.clone(),
                issued,
                took: t.elapsed(),
                done,
                marks: out.marks.clone(),
            });
            done_switches.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if done {
                // The next switch waits until a client has seen this one (or the load is over):
                // each switch's window then holds an answer from its new slot.
                let since = issued.as_millis() as u64;
                let seen = progress.wait_for(|p| p.ended.is_some() || p.answered_since(to, since));
                match load_over {
                    Some(at) => drop(tokio::time::timeout_at(at.into(), seen).await),
                    None => drop(seen.await),
                }
            }
            tokio::time::sleep(opts.pause).await;
        }
    }
    let report = run.finish().await;
    if let Some(t) = ticker {
        t.abort();
    }
    Ok(analyse(url, opts, report, switches, failed_operations))
}

/// One switch as the drill made it.
struct Made {
    from: String,
    to: String,
    /// From the start of the load.
    issued: Duration,
    took: Duration,
    /// The operation went through.
    done: bool,
    /// Its moments, from its start (see [`crate::ops::Outcome::marks`]).
    marks: Vec<(&'static str, Duration)>,
}

fn analyse(
    url: String,
    opts: &DrillOptions,
    r: LoadReport,
    switches: Vec<Made>,
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
    let timings: Vec<SwitchTiming> = switches
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let t0 = m.issued.as_millis() as u64;
            let t_next = switches
                .get(i + 1)
                .map_or(u64::MAX, |n| n.issued.as_millis() as u64);
            let window = r.samples.iter().filter(|s| s.at_ms >= t0);
            // The drill issues the next switch only after seeing this one, possibly in the
            // same millisecond: the first new answer may sit on the window's end.
            let first_new = window
                .clone()
                .take_while(|s| s.at_ms <= t_next)
                .find(|s| s.slot == m.to)
                .map(|s| s.at_ms - t0);
            let last_old = window
                .take_while(|s| s.at_ms < t_next)
                .filter(|s| s.slot == m.from)
                .map(|s| s.at_ms - t0)
                .max();
            SwitchTiming {
                from: m.from.clone(),
                to: m.to.clone(),
                issued_ms: t0,
                op_ms: m.took.as_millis() as u64,
                first_new_ms: first_new,
                last_old_ms: last_old,
                marks_us: m
                    .marks
                    .iter()
                    .map(|(what, at)| (what.to_string(), at.as_micros() as u64))
                    .collect(),
            }
        })
        .collect();
    let planned_switches = opts.pairs * 2;
    let unobserved = unobserved(opts, &r, &switches, &timings, planned_switches);
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
        planned_switches,
        load_ended: r.ended,
        unobserved,
        failed_operations,
    }
}

/// One line per switch no client saw, and one for the switches not run, each saying why.
fn unobserved(
    opts: &DrillOptions,
    r: &LoadReport,
    made: &[Made],
    timings: &[SwitchTiming],
    planned: usize,
) -> Vec<String> {
    let (over, advice) = match r.ended {
        Ended::Requests => (
            format!(
                "the load ended after {} request{} (the --requests bound)",
                opts.requests,
                if opts.requests == 1 { "" } else { "s" }
            ),
            "; raise --requests",
        ),
        Ended::Duration => (
            format!(
                "the load ended at {} (the --duration bound)",
                humantime::format_duration(opts.duration)
            ),
            "; raise --duration, or lower --pairs or --pause",
        ),
        Ended::Stopped => ("the load was stopped".to_string(), ""),
    };
    let mut lines: Vec<String> = made
        .iter()
        .zip(timings)
        .enumerate()
        .filter(|(_, (_, t))| t.first_new_ms.is_none())
        .map(|(i, (m, t))| {
            let why = if m.done {
                let after = r.elapsed_ms.saturating_sub(t.issued_ms) as f64 / 1000.0;
                format!(
                    "{over} {after:.1} s after it was issued, before {} answered{advice}",
                    t.to
                )
            } else {
                "its operation failed".to_string()
            };
            format!(
                "switch {} ({} → {}) was not observed: {why}",
                i + 1,
                t.from,
                t.to
            )
        })
        .collect();
    let next = made.len() + 1;
    if next == planned {
        lines.push(format!(
            "switch {next} was not run: {over} before it{advice}"
        ));
    } else if next < planned {
        lines.push(format!(
            "switches {next} to {planned} were not run: {over} before them{advice}"
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Sample;

    fn made(from: &str, to: &str, issued_ms: u64) -> Made {
        Made {
            from: from.into(),
            to: to.into(),
            issued: Duration::from_millis(issued_ms),
            took: Duration::from_millis(5),
            done: true,
            marks: vec![
                ("lock", Duration::from_micros(300)),
                ("command sent", Duration::from_millis(2 + issued_ms / 100)),
            ],
        }
    }

    #[test]
    fn the_breakdown_puts_each_moment_at_its_p50_in_the_order_reached() {
        // Commands sent 3 and 4 ms after the switches were issued; clients saw the new slots
        // after 20 and 10 ms. Of two, the p50 is the higher (as `percentile` rounds).
        let r = load(Ended::Stopped, &[(120, "green"), (210, "blue")]);
        let switches = vec![made("blue", "green", 100), made("green", "blue", 200)];
        let d = analyse("u".into(), &opts(1, 2), r, switches, vec![]);
        let rows = d.breakdown();
        let rows: Vec<(&str, f64)> = rows.iter().map(|(m, v)| (&**m, *v)).collect();
        assert_eq!(
            rows,
            [
                ("lock", 0.3),
                ("command sent", 4.0),
                ("first answer from the new slot", 20.0)
            ]
        );
    }

    fn load(ended: Ended, samples: &[(u64, &str)]) -> LoadReport {
        LoadReport {
            sent: samples.len() as u64,
            ok: samples.len() as u64,
            ended,
            elapsed_ms: samples.last().map_or(0, |s| s.0 + 150),
            samples: samples
                .iter()
                .map(|(at_ms, slot)| Sample {
                    at_ms: *at_ms,
                    slot: (*slot).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn opts(requests: u64, pairs: usize) -> DrillOptions {
        DrillOptions {
            requests,
            pairs,
            ..Default::default()
        }
    }

    #[test]
    fn a_request_bound_reached_before_the_last_switch_names_the_unseen_switches() {
        // Answers stop at 250 ms: the second switch (at 200 ms) is seen, the third is not, the
        // fourth never ran.
        let r = load(
            Ended::Requests,
            &[(10, "blue"), (120, "green"), (210, "blue"), (250, "blue")],
        );
        let switches = vec![
            made("blue", "green", 100),
            made("green", "blue", 200),
            made("blue", "green", 300),
        ];
        let d = analyse("u".into(), &opts(4, 2), r, switches, vec![]);
        assert!(!d.passed());
        assert_eq!(d.planned_switches, 4);
        assert_eq!(
            d.unobserved,
            [
                "switch 3 (blue → green) was not observed: the load ended after 4 requests \
                 (the --requests bound) 0.1 s after it was issued, before green answered; \
                 raise --requests",
                "switch 4 was not run: the load ended after 4 requests (the --requests bound) \
                 before it; raise --requests",
            ]
        );
        assert_eq!(d.switches[0].first_new_ms, Some(20));
        assert_eq!(d.switches[1].first_new_ms, Some(10));
    }

    #[test]
    fn a_load_that_ends_before_the_first_switch_fails_every_switch() {
        let r = load(Ended::Duration, &[(10, "blue")]);
        let d = analyse("u".into(), &opts(1_000, 2), r, vec![], vec![]);
        assert!(!d.passed());
        assert_eq!(
            d.unobserved,
            [
                "switches 1 to 4 were not run: the load ended at 1m (the --duration bound) \
              before them; raise --duration, or lower --pairs or --pause"
            ]
        );
    }

    #[test]
    fn every_switch_seen_passes_even_when_seen_in_the_millisecond_of_the_next() {
        // The drill issues the next switch once it has seen this one, possibly in the same
        // millisecond.
        let r = load(Ended::Stopped, &[(150, "green"), (230, "blue")]);
        let switches = vec![made("blue", "green", 100), made("green", "blue", 150)];
        let d = analyse("u".into(), &opts(1_000, 1), r, switches, vec![]);
        assert!(d.passed(), "{:?}", d.unobserved);
        assert_eq!(d.switches[0].first_new_ms, Some(50));
        assert_eq!(d.switches[1].first_new_ms, Some(80));
    }

    #[test]
    fn a_failed_operation_is_named_as_the_reason_its_switch_went_unseen() {
        let r = load(Ended::Stopped, &[(150, "green")]);
        let mut failed = made("green", "blue", 200);
        failed.done = false;
        let switches = vec![made("blue", "green", 100), failed];
        let d = analyse("u".into(), &opts(1_000, 1), r, switches, vec!["x".into()]);
        assert_eq!(
            d.unobserved,
            ["switch 2 (green → blue) was not observed: its operation failed"]
        );
    }
}
