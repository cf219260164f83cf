//! `cutover drill ENV --canary`: a canary to the preview slot under a bounded load, through
//! the normal canary operation. At each step below `abort_at` the drill waits for the routers'
//! weights to be verified, counts who answers the next `sample` requests, and promotes; at
//! `abort_at` it measures the step, then stops the canary (an abort: 100 % back on the stable
//! slot) and measures again. The report says, per step, the configured weight, the share the
//! canary served and the failed requests; a share off by more than [`TOLERANCE`] points, a
//! failed request, or an abort that leaves the canary any traffic fails the drill.

use std::collections::BTreeMap;

use color_eyre::eyre::{Result, bail};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use super::{CanaryDrill, DrillOptions, load_url, start_load};
use crate::model::CanaryStep;
use crate::ops::{
    CanaryControl, Engine, GateSource, Interrupt, OpKind, OpRequest, Progress, Verdict,
};

/// How far the measured share may be from the configured weight, in percentage points.
pub const TOLERANCE: f64 = 3.0;

/// One measured step: `weight` configured, `share` % of `answers` served by the canary.
#[derive(Debug, Clone, Serialize)]
pub struct CanaryRow {
    pub step: String,
    pub weight: u8,
    pub share: f64,
    pub answers: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CanaryDrillReport {
    pub url: String,
    pub concurrency: usize,
    pub stable: String,
    pub canary: String,
    /// The steps, and last the measurement after the abort (weight 0).
    pub rows: Vec<CanaryRow>,
    /// The canary operation's result (its abort line).
    pub outcome: String,
    pub sent: u64,
    pub failed: u64,
    /// Why the drill failed, one line each (empty: it passed).
    pub problems: Vec<String>,
}

impl CanaryDrillReport {
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    pub fn print(&self) {
        println!(
            "canary drill against {} ({} connections): {} → {}",
            self.url, self.concurrency, self.stable, self.canary
        );
        println!("  step                 weight  measured  answers  failed");
        for r in &self.rows {
            println!(
                "  {:<20} {:>4} %  {:>6.1} %  {:>7}  {:>6}",
                r.step, r.weight, r.share, r.answers, r.failed
            );
        }
        println!("  canary: {}", self.outcome);
        println!("{} sent, {} failed", self.sent, self.failed);
        for p in &self.problems {
            println!("drill FAILED: {p}");
        }
    }
}

/// Run the canary drill (see the module's documentation): `how.abort_at`, the step (in %) at
/// which the canary is aborted; `how.sample`, the answers each step is measured on.
pub async fn run_canary(
    engine: &Engine,
    opts: &DrillOptions,
    how: CanaryDrill,
) -> Result<CanaryDrillReport> {
    let CanaryDrill { abort_at, sample } = how;
    let url = load_url(engine, opts)?;
    let (stable, canary) = super::live_and_other(engine).await?;
    let Some(canary) = canary else {
        bail!("a canary drill needs a second slot (the preview slot, or another) for the canary");
    };
    let steps: Vec<CanaryStep> = engine
        .env
        .canary
        .steps
        .iter()
        .filter_map(|s| s.percent())
        .filter(|&p| p <= abort_at && p < 100)
        .map(CanaryStep::Weight)
        .chain([CanaryStep::Weight(100)])
        .collect();
    let Some(&CanaryStep::Weight(last)) = steps.iter().rev().nth(1) else {
        bail!("the environment's canary_steps have no step at or below {abort_at} %");
    };

    let run = start_load(&url, opts);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (cancel_tx, cancel) = watch::channel(Interrupt::None);
    let (control_tx, control) = watch::channel(CanaryControl::default());
    let req = OpRequest {
        force: true,
        watch: false,
        control: Some(control),
        ..OpRequest::new(OpKind::Canary {
            to: canary.clone(),
            steps,
            interval: None,
        })
    };
    let op = engine.run(req, GateSource::ProbeNow, tx, cancel);
    tokio::pin!(op);
    let progress = run.live.progress();
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    let mut outcome = None;
    let measure = |label: String, weight: u8| {
        let live = run.live.clone();
        let mut progress = progress.clone();
        let canary = canary.clone();
        async move {
            let (before, failed_before) = live.snapshot();
            let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
            let _ = progress
                .wait_for(|p| {
                    p.ended.is_some() || total(&live.snapshot().0) >= total(&before) + sample
                })
                .await;
            let (after, failed_after) = live.snapshot();
            let diff = |slot: &str| {
                after.get(slot).copied().unwrap_or(0) - before.get(slot).copied().unwrap_or(0)
            };
            let answers = total(&after) - total(&before);
            CanaryRow {
                step: label,
                weight,
                share: if answers == 0 {
                    0.0
                } else {
                    diff(&canary) as f64 * 100.0 / answers as f64
                },
                answers,
                failed: failed_after - failed_before,
            }
        }
    };
    // Each verified step is measured, then promoted (or, at the last one, aborted).
    while outcome.is_none() {
        tokio::select! {
            out = &mut op => outcome = Some(out),
            p = rx.recv() => {
                let Some(Progress::Step { ok: Some(true), message, .. }) = p else { continue };
                let Some(weight) = verified_weight(&message) else { continue };
                let label = message.split(':').next().unwrap_or_default().to_string();
                let row = tokio::select! {
                    row = measure(label, weight) => row,
                    out = &mut op => { outcome = Some(out); break; }
                };
                rows.push(row);
                if weight >= last {
                    let _ = cancel_tx.send(Interrupt::Superseded("the canary drill's abort".into()));
                } else {
                    control_tx.send_modify(|c| {
                        c.apply("promote");
                    });
                }
            }
        }
    }
    let out = match outcome {
        Some(o) => o,
        None => op.await,
    };
    if out.verdict == Verdict::RolledBack {
        rows.push(measure("after the abort".into(), 0).await);
    } else {
        problems.push(format!(
            "the canary ended `{}`, not aborted: {}",
            out.verdict.label(),
            out.message
        ));
    }
    let report = run.finish().await;
    for r in &rows {
        if (r.share - f64::from(r.weight)).abs() > TOLERANCE {
            problems.push(format!(
                "{}: the canary served {:.1} % of {} answers, configured {} %",
                r.step, r.share, r.answers, r.weight
            ));
        }
        if r.answers < sample {
            problems.push(format!(
                "{}: only {} answers of the {sample} to measure (the load's bounds ended it)",
                r.step, r.answers
            ));
        }
    }
    if report.failed() > 0 {
        problems.push(format!("{} requests failed", report.failed()));
    }
    Ok(CanaryDrillReport {
        url,
        concurrency: opts.concurrency,
        stable,
        canary,
        rows,
        outcome: out.message,
        sent: report.sent,
        failed: report.failed(),
        problems,
    })
}

/// The weight a finished verify step names: "step 2/4 (25 %): every router sends 25 % to …".
fn verified_weight(message: &str) -> Option<u8> {
    let (_, rest) = message.split_once("every router sends ")?;
    rest.split_once(" % to")?.0.parse().ok()
}
