//! The canary operation: plan → gate → for each step below 100 %: apply the weights on every
//! router, verify them by reading them back, hold for `canary_pause` while the analysis runs;
//! then the last step is the normal swap ([`Engine::switch`]), with its verify, smoke test and
//! watch.
//!
//! The analysis, once a second during each hold: the canary slot's health check, and the
//! routers' error and request counters for the canary slot since the step began (as the
//! watch reads them). A failure — `WATCH_FAILED_CHECKS` failed health checks in a row, or an
//! error rate above `canary_max_error_rate` — aborts: one `set_weights(live, canary, 0)` per
//! router puts all the traffic back on the live slot, and the reason and the time from the
//! failing check to 0 % go to the audit record.
//!
//! Everything runs under the operation's lock; each weight change is journalled like a swap
//! (`cutover recover` puts every router back on the live slot at 0 %).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::watching::Tally;
use super::{
    Engine, GateSource, OpRequest, Outcome, Progress, Run, Step, Verdict, WATCH_CHECK_EVERY,
    WATCH_TAKEOVER_POLL, gate,
};
use crate::model::RouterState;
use crate::router::{DEFAULT_OBSERVE_TIMEOUT, Verb};

/// A step's error rate is judged once it has seen this many requests on the canary: below
/// that, one error would be a rate of several percent.
pub const CANARY_MIN_REQUESTS: u64 = 20;

/// The canary slot's counters summed over the routers: (errors, requests).
fn counters(states: &[RouterState], slot: &str) -> (u64, u64) {
    states
        .iter()
        .filter_map(|s| s.slots.get(slot))
        .fold((0, 0), |(e, r), s| {
            (e + s.errors.unwrap_or(0), r + s.requests.unwrap_or(0))
        })
}

/// Why a step's error rate fails the analysis, if it does.
pub fn error_rate_failure(errors: u64, requests: u64, max_rate: f64) -> Option<f64> {
    if requests < CANARY_MIN_REQUESTS {
        return None;
    }
    let rate = errors as f64 / requests as f64;
    (rate > max_rate).then_some(rate)
}

fn pct(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}

impl Engine {
    /// The canary from `live` to `to` (the lock is held and the plan step is open).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn canary(
        &self,
        mut run: Run<'_>,
        req: OpRequest,
        gate_source: GateSource,
        live: Option<String>,
        preview: Option<String>,
        to: String,
        steps: Vec<u8>,
        held: Arc<std::sync::Mutex<Option<super::Held>>>,
    ) -> Outcome {
        // No steps asked for: the environment's plan.
        let steps = if steps.is_empty() {
            self.env.canary_steps.clone()
        } else {
            steps
        };
        let Some(live) = live else {
            let why = "no slot is live: a canary splits the live traffic; swap first".to_string();
            return run.fail(Step::Plan, Verdict::Refused, why);
        };
        if self.env.slot(&to).is_none() {
            let why = format!("there is no slot `{to}` in `{}`", self.env.name);
            return run.fail(Step::Plan, Verdict::Refused, why);
        }
        if live == to {
            let why = format!("`{to}` is already live");
            return run.fail(Step::Plan, Verdict::Refused, why);
        }
        if let Some(r) = self.routers.iter().find(|r| !r.supports(Verb::Weights)) {
            let why = format!(
                "{} router `{}` cannot split traffic by weight; a canary needs every router \
                 to (embedded; haproxy with `canary_key`); use `cutover swap` instead",
                r.kind(),
                r.name()
            );
            return run.fail(Step::Plan, Verdict::Refused, why);
        }
        if let Err(e) = crate::config::parse_canary_steps(
            &steps.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        ) {
            return run.fail(Step::Plan, Verdict::Refused, format!("canary steps: {e}"));
        }
        run.record.from = Some(live.clone());
        run.record.to = Some(to.clone());
        let plan_text = steps
            .iter()
            .map(|s| format!("{s} %"))
            .collect::<Vec<_>>()
            .join(" → ");
        run.done(
            Step::Plan,
            true,
            format!(
                "canary {live} → {to}: {plan_text}, {} per step",
                crate::timefmt::millis(self.env.canary_pause)
            ),
        );

        // Gate: the canary must pass what a swap to it would have to pass.
        run.step(Step::Gate, format!("checking `{to}`"));
        let input = self.gate_input(gate_source, &to).await;
        let plan = gate(self.env.gate_checks, Some(&live), &to, &input, true);
        run.record.from_version = plan.from_version.clone();
        run.record.to_version = plan.to_version.clone();
        let mut run = match run.judge_gate(&plan, req.force, "--force") {
            Ok(run) => run,
            Err(refused) => return *refused,
        };

        let mut promote = req.promote.clone();
        let count = steps.len();
        for (i, &percent) in steps.iter().enumerate() {
            let label = format!("step {}/{count} ({percent} %)", i + 1);
            if let Some(int) = run.interrupted() {
                let why = format!("{label} not started ({})", int.reason());
                return self.abort(run, &live, &to, why, Verdict::Cancelled).await;
            }
            if percent >= 100 {
                // The last step is the swap: the canary slot becomes live.
                // Its gate probes the canary afresh: the plan's gate input is a whole plan old.
                run.note(Step::Apply, format!("{label}: swapping to `{to}`"));
                run.held = Some(held.clone());
                return self
                    .switch(
                        run,
                        req,
                        GateSource::ProbeNow,
                        Some(live),
                        preview,
                        to,
                        false,
                    )
                    .await;
            }
            if let Err(why) = self
                .apply_weights(&mut run, &live, &to, percent, &label)
                .await
            {
                return self.abort(run, &live, &to, why, Verdict::Failed).await;
            }
            if let Err((why, failed_at)) = self.analyse(&mut run, &to, &label, &mut promote).await {
                return self
                    .abort_after(run, &live, &to, why, Verdict::RolledBack, failed_at)
                    .await;
            }
        }
        // parse_canary_steps makes the last step 100: the loop always returns.
        let why = "the canary plan has no 100 % step".to_string();
        self.abort(run, &live, &to, why, Verdict::Failed).await
    }

    /// Set `percent` on every router (journalled), then read every router back.
    async fn apply_weights(
        &self,
        run: &mut Run<'_>,
        live: &str,
        to: &str,
        percent: u8,
        label: &str,
    ) -> std::result::Result<(), String> {
        run.step(Step::Apply, format!("{label}: {percent} % to `{to}`"));
        let before: Vec<Option<String>> = self.routers.iter().map(|_| Some(live.into())).collect();
        run.begin_changes(
            format!("canary {label}: {percent} % of the live traffic to {to}"),
            Some(live),
            Some(to),
            &before,
        );
        for (i, r) in self.routers.iter().enumerate() {
            let done =
                tokio::time::timeout(DEFAULT_OBSERVE_TIMEOUT, r.set_weights(live, to, percent))
                    .await;
            let err = match done {
                Ok(Ok(())) => {
                    run.journal_router(i, "changed");
                    continue;
                }
                Ok(Err(e)) => format!("{e:#}"),
                Err(_) => format!(
                    "no answer within {}",
                    crate::timefmt::millis(DEFAULT_OBSERVE_TIMEOUT)
                ),
            };
            run.journal_router(i, "failed");
            let why = format!("{label}: router `{}` refused the weights: {err}", r.name());
            run.done(Step::Apply, false, why.clone());
            return Err(why);
        }
        run.step(Step::Verify, format!("{label}: reading the weights back"));
        let states = match self.observe_all().await {
            Ok(s) => s,
            Err(e) => {
                let why = format!("{label}: cannot read the weights back: {e:#}");
                run.done(Step::Verify, false, why.clone());
                return Err(why);
            }
        };
        for (r, s) in self.routers.iter().zip(&states) {
            let seen = s
                .weights
                .as_ref()
                .filter(|w| w.live == live && w.canary == to);
            if seen.map(|w| w.canary_percent) != Some(percent) {
                let why = format!(
                    "{label}: router `{}` reports {} instead of {percent} % to `{to}`",
                    r.name(),
                    s.weights
                        .as_ref()
                        .map_or("no split".to_string(), |w| w.to_string())
                );
                run.done(Step::Verify, false, why.clone());
                return Err(why);
            }
        }
        run.end_changes();
        run.done(
            Step::Verify,
            true,
            format!("{label}: every router sends {percent} % to `{to}`"),
        );
        Ok(())
    }

    /// Hold the step for `canary_pause` while the analysis runs. `Err` names why it failed
    /// and when the failing check was seen.
    async fn analyse(
        &self,
        run: &mut Run<'_>,
        to: &str,
        label: &str,
        promote: &mut Option<tokio::sync::watch::Receiver<u32>>,
    ) -> std::result::Result<(), (String, Instant)> {
        let window = self.env.canary_pause;
        run.step(
            Step::Watch,
            format!(
                "{label}: analysing `{to}` for {}",
                crate::timefmt::millis(window)
            ),
        );
        let Some(slot) = self.env.slot(to).cloned() else {
            return Err((format!("{label}: no slot `{to}`"), Instant::now()));
        };
        let (base_errors, base_requests) = self
            .observe_all()
            .await
            .map(|s| counters(&s, to))
            .unwrap_or((0, 0));
        let max_rate = self.env.canary_max_error_rate;
        let started = Instant::now();
        let end = started + window;
        let mut next_check = started + WATCH_CHECK_EVERY;
        let mut tally = Tally::default();
        let mut cancel = run.cancel.clone();
        let mut seen = (0u64, 0u64);
        loop {
            if Instant::now() >= end {
                break;
            }
            let wake = next_check
                .min(end)
                .min(Instant::now() + WATCH_TAKEOVER_POLL);
            let promoted = async {
                match promote.as_mut() {
                    Some(p) => p.changed().await.ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = cancel.changed() => {}
                Some(()) = promoted => {
                    let (errors, requests) = seen;
                    run.done(
                        Step::Watch,
                        true,
                        format!(
                            "{label}: promoted by the operator after {} ({} of {} health \
                             checks, {errors} errors of {requests} requests so far)",
                            crate::timefmt::millis(started.elapsed()),
                            tally.passed,
                            tally.checks
                        ),
                    );
                    return Ok(());
                }
            }
            if let Some(i) = run.interrupted() {
                let why = format!("{label}: stopped during the analysis ({})", i.reason());
                run.done(Step::Watch, false, why.clone());
                return Err((why, Instant::now()));
            }
            if Instant::now() < next_check.min(end) {
                continue;
            }
            next_check = Instant::now() + WATCH_CHECK_EVERY;
            let r = self.prober.probe_slot(&slot).await;
            tally.count(&r);
            if let Ok(states) = self.observe_all().await {
                let (e, q) = counters(&states, to);
                seen = (
                    e.saturating_sub(base_errors),
                    q.saturating_sub(base_requests),
                );
            }
            let (errors, requests) = seen;
            let _ = run.tx.send(Progress::Watching {
                remaining: end.saturating_duration_since(Instant::now()),
                detail: format!(
                    "{label} · {to} {} · {errors} err / {requests} req",
                    r.health.label()
                ),
                errors,
                checks: tally.checks,
                passed: tally.passed,
            });
            let failure = if let Some(why) = tally.failing(to, &r) {
                Some(format!("{label} failed: {why}"))
            } else {
                error_rate_failure(errors, requests, max_rate).map(|rate| {
                    format!(
                        "{label} failed: {to} error rate {} > {} ({errors} of {requests} \
                         requests) over {}",
                        pct(rate),
                        pct(max_rate),
                        crate::timefmt::millis(started.elapsed())
                    )
                })
            };
            if let Some(why) = failure {
                let at = Instant::now();
                run.done(Step::Watch, false, why.clone());
                return Err((why, at));
            }
        }
        run.done(
            Step::Watch,
            true,
            format!(
                "{label}: `{to}` passed ({} of {} health checks, {} errors of {} \
                 requests)",
                tally.passed, tally.checks, seen.0, seen.1
            ),
        );
        Ok(())
    }

    async fn abort(
        &self,
        run: Run<'_>,
        live: &str,
        to: &str,
        why: String,
        verdict: Verdict,
    ) -> Outcome {
        self.abort_after(run, live, to, why, verdict, Instant::now())
            .await
    }

    /// Put 100 % back on `live`: one `set_weights(live, to, 0)` per router, every router tried
    /// even when one fails. The time from `since` (the failing check) to the last router at 0 %
    /// is in the message.
    async fn abort_after(
        &self,
        mut run: Run<'_>,
        live: &str,
        to: &str,
        why: String,
        verdict: Verdict,
        since: Instant,
    ) -> Outcome {
        run.step(Step::Apply, format!("aborting: 100 % back on `{live}`"));
        let before: Vec<Option<String>> = self.routers.iter().map(|_| Some(live.into())).collect();
        run.begin_changes(
            format!("canary abort: 100 % of the live traffic back on {live}"),
            Some(live),
            Some(live),
            &before,
        );
        let mut failures = Vec::new();
        for (i, r) in self.routers.iter().enumerate() {
            let done =
                tokio::time::timeout(DEFAULT_OBSERVE_TIMEOUT, r.set_weights(live, to, 0)).await;
            match done {
                Ok(Ok(())) => run.journal_router(i, "changed"),
                Ok(Err(e)) => {
                    run.journal_router(i, "failed");
                    failures.push(format!("`{}`: {e:#}", r.name()));
                }
                Err(_) => {
                    run.journal_router(i, "failed");
                    failures.push(format!("`{}`: no answer", r.name()));
                }
            }
        }
        let took = since.elapsed();
        if failures.is_empty() {
            run.end_changes();
            let done = format!(
                "aborted; 100 % on {live} after {}",
                crate::timefmt::millis(took)
            );
            run.done(Step::Apply, true, done.clone());
            run.finish(verdict, format!("{why}; {done}"))
        } else {
            // The journal stays open: `cutover recover` finishes the way back.
            let done = format!(
                "the abort failed on {}: run `cutover recover {}`",
                failures.join("; "),
                self.env.name
            );
            run.done(Step::Apply, false, done.clone());
            run.finish(Verdict::Failed, format!("{why}; {done}"))
        }
    }
}

/// The canary's step plan, for a dialog or `--steps`: "5,25,50,100".
pub fn steps_text(steps: &[u8]) -> String {
    steps
        .iter()
        .map(u8::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// How long the whole plan holds, at least (the pauses; the swap's own watch comes after).
pub fn plan_duration(steps: &[u8], pause: Duration) -> Duration {
    pause * steps.iter().filter(|&&s| s < 100).count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_error_rate_is_judged_on_enough_requests() {
        assert_eq!(error_rate_failure(5, 10, 0.01), None, "too few to judge");
        assert_eq!(error_rate_failure(0, 1000, 0.01), None);
        assert_eq!(
            error_rate_failure(10, 1000, 0.01),
            None,
            "1 % is not above 1 %"
        );
        assert_eq!(error_rate_failure(41, 1000, 0.01), Some(0.041));
        assert_eq!(steps_text(&[5, 25, 100]), "5,25,100");
        assert_eq!(
            plan_duration(&[5, 25, 100], Duration::from_secs(60)),
            Duration::from_secs(120)
        );
    }
}
