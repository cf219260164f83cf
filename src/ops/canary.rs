//! The canary operation: plan → gate → for each step below 100 %: apply the weights on every
//! router, verify them by reading them back, hold for `canary_pause` while the analysis runs;
//! a `pause` step holds the share before it until the operator resumes or promotes; then the
//! last step is the normal swap ([`Engine::switch`]), with its verify, smoke test and watch.
//!
//! The analysis, once a second during each hold ([`judge`]): the canary slot's health check
//! and its latency, and the routers' error and request counters for the canary slot since
//! the step began, against `canary_max_error_rate` and against the stable (live) slot's own
//! rate over the same time (`canary_max_error_rate_over_stable`). A step tolerates
//! `canary_failure_limit` failed checks; the next one aborts: one `set_weights(live, canary,
//! 0)` per router puts all the traffic back on the live slot, and the reason and the time
//! from the failing check to 0 % go to the audit record.
//!
//! The operator steers a running canary through [`CanaryControl`]: promote (end the hold
//! now), pause (stop the countdown; the analysis goes on) and resume.
//!
//! Everything runs under the operation's lock; each weight change is journalled like a swap
//! (`cutover recover` puts every router back on the live slot at 0 %).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::watching::Tally;
use super::{
    CanaryControl, Engine, GateSource, OpRequest, Outcome, Progress, Run, Step, Verdict,
    WATCH_CHECK_EVERY, WATCH_TAKEOVER_POLL, gate,
};
use crate::config::Environment;
use crate::model::{CanaryStep, ProbeResult, RouterState};
use crate::router::{DEFAULT_OBSERVE_TIMEOUT, Verb};

/// A step's error rate is judged once it has seen this many requests on the canary: below
/// that, one error would be a rate of several percent.
pub const CANARY_MIN_REQUESTS: u64 = 20;

/// A slot's counters summed over the routers: (errors, requests).
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

/// A rate (0.01) as the canary's lines say it (`1.0 %`).
pub(crate) fn pct(rate: f64) -> String {
    format!("{:.1} %", rate * 100.0)
}

fn rate(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        errors as f64 / requests as f64
    }
}

/// What one analysis check saw: the canary's probe, and (errors, requests) on the canary and
/// on the stable slot since the step began.
#[derive(Debug, Clone)]
pub struct Sample<'a> {
    pub canary: &'a str,
    pub stable: &'a str,
    pub probe: &'a ProbeResult,
    pub canary_counts: (u64, u64),
    pub stable_counts: (u64, u64),
    /// How long the step has held.
    pub over: Duration,
}

/// The analysis of one check against the environment's thresholds: what failed, one line
/// each (empty: the check passed).
pub fn judge(env: &Environment, s: &Sample<'_>) -> Vec<String> {
    let mut failed = Vec::new();
    let (to, over) = (s.canary, crate::timefmt::millis(s.over));
    if !s.probe.health.is_serving() {
        failed.push(format!(
            "`{to}` failed its health check ({})",
            s.probe
                .error
                .as_ref()
                .map_or_else(|| s.probe.health.label().to_string(), |e| e.to_string())
        ));
    }
    if let (Some(max), Some(took)) = (env.canary.max_latency, s.probe.latency)
        && took > max
    {
        failed.push(format!(
            "`{to}` answered its health check in {} > {}",
            crate::timefmt::millis(took),
            crate::timefmt::millis(max)
        ));
    }
    let (errors, requests) = s.canary_counts;
    if let Some(r) = error_rate_failure(errors, requests, env.canary.max_error_rate) {
        failed.push(format!(
            "{to} error rate {} > {} ({errors} of {requests} requests) over {over}",
            pct(r),
            pct(env.canary.max_error_rate)
        ));
    }
    if let Some(margin) = env.canary.max_error_rate_over_stable {
        let stable = rate(s.stable_counts.0, s.stable_counts.1);
        if let Some(r) = error_rate_failure(errors, requests, stable + margin) {
            failed.push(format!(
                "{to} error rate {} > {}'s {} + {} ({errors} of {requests} requests; {} {} of \
                 {}) over {over}",
                pct(r),
                s.stable,
                pct(stable),
                pct(margin),
                s.stable,
                s.stable_counts.0,
                s.stable_counts.1
            ));
        }
    }
    failed
}

/// How a step holds: for a time (its countdown stops while paused), or until the operator
/// resumes or promotes (a `pause` step).
#[derive(Debug, Clone, Copy)]
enum Hold {
    For(Duration),
    UntilResumed,
}

/// The plan as a line: "5 % → 25 % → pause → 100 %".
fn plan_text(steps: &[CanaryStep]) -> String {
    steps
        .iter()
        .map(|s| match s.percent() {
            Some(p) => format!("{p} %"),
            None => "pause".into(),
        })
        .collect::<Vec<_>>()
        .join(" → ")
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
        steps: Vec<CanaryStep>,
        interval: Option<Duration>,
        held: Arc<std::sync::Mutex<Option<super::Held>>>,
    ) -> Outcome {
        // No steps or interval asked for: the environment's plan.
        let steps = if steps.is_empty() {
            self.env.canary.steps.clone()
        } else {
            steps
        };
        let pause = interval.unwrap_or(self.env.canary.pause);
        if pause.is_zero() {
            let why =
                "the canary's interval must be more than zero: give one (`--interval 30s`, or \
                       `:canary SLOT STEPS 30s` in the TUI)"
                    .to_string();
            return run.fail(Step::Plan, Verdict::Refused, why);
        }
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
                "{} router `{}` cannot split traffic by weight with its config; a canary needs \
                 every router to (see Canary in the README for each router's setup); use \
                 `cutover swap` instead",
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
        run.record.slots.from = Some(live.clone());
        run.record.slots.to = Some(to.clone());
        run.done(
            Step::Plan,
            true,
            format!(
                "canary {live} → {to}: {}, {} per step",
                plan_text(&steps),
                crate::timefmt::millis(pause)
            ),
        );

        // Gate: the canary must pass what a swap to it would have to pass.
        run.step(Step::Gate, format!("checking `{to}`"));
        let input = self.gate_input(gate_source, &to).await;
        let plan = gate(self.env.gate_checks, Some(&live), &to, &input, true);
        run.record.versions = plan.versions.clone();
        let mut run = match run.judge_gate(&plan, req.force, "--force") {
            Ok(run) => run,
            Err(refused) => return *refused,
        };

        let mut control = Control {
            rx: req.control.clone(),
            last: CanaryControl::default(),
        };
        let count = steps.len();
        let mut share = 0u8;
        for (i, &step) in steps.iter().enumerate() {
            let label = match step {
                CanaryStep::Weight(p) => format!("step {}/{count} ({p} %)", i + 1),
                CanaryStep::Pause => format!("step {}/{count} (pause at {share} %)", i + 1),
            };
            if let Some(int) = run.interrupted() {
                let why = format!("{label} not started ({})", int.reason());
                return self.abort(run, &live, &to, why, Verdict::Cancelled).await;
            }
            let hold = match step {
                CanaryStep::Weight(p) if p >= 100 => {
                    // The last step is the swap: the canary slot becomes live. Its gate
                    // probes the canary afresh: the plan's gate input is a whole plan old.
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
                CanaryStep::Weight(p) => {
                    if let Err(why) = self.apply_weights(&mut run, &live, &to, p, &label).await {
                        return self.abort(run, &live, &to, why, Verdict::Failed).await;
                    }
                    share = p;
                    Hold::For(pause)
                }
                CanaryStep::Pause => Hold::UntilResumed,
            };
            if let Err((why, failed_at)) = self
                .analyse(&mut run, &live, &to, &label, hold, &mut control)
                .await
            {
                return self
                    .abort_after(run, &live, &to, why, Verdict::RolledBack, failed_at)
                    .await;
            }
        }
        // parse_canary_steps makes the last step 100: the loop always returns.
        let why = "the canary plan has no 100 % step".to_string();
        self.abort(run, &live, &to, why, Verdict::Failed).await
    }

    /// Journal a change of the weights (`action`) from `live`, live on every router, `to`.
    fn begin_weights(&self, run: &mut Run<'_>, action: String, live: &str, to: &str) {
        let before: Vec<Option<String>> = self.routers.iter().map(|_| Some(live.into())).collect();
        run.begin_changes(action, Some(live), Some(to), &before);
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
        let action = format!("canary {label}: {percent} % of the live traffic to {to}");
        self.begin_weights(run, action, live, to);
        for (i, r) in self.routers.iter().enumerate() {
            // Every driver's change is bounded by its own limit (`Driven`: longer than its
            // request and reload timeouts, so that theirs are the errors reported).
            let err = match r.set_weights(live, to, percent).await {
                Ok(()) => {
                    run.journal_router(i, "changed");
                    continue;
                }
                Err(e) => format!("{e:#}"),
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

    /// Hold the step while the analysis runs: for `canary_pause` (the countdown stops while
    /// the operator pauses), or, for a `pause` step, until the operator resumes. A promote
    /// ends either at once. `Err` names why the analysis failed and when the failing check
    /// was seen.
    async fn analyse(
        &self,
        run: &mut Run<'_>,
        live: &str,
        to: &str,
        label: &str,
        hold: Hold,
        control: &mut Control,
    ) -> std::result::Result<(), (String, Instant)> {
        run.step(
            Step::Watch,
            match hold {
                Hold::For(window) => format!(
                    "{label}: analysing `{to}` for {}",
                    crate::timefmt::millis(window)
                ),
                Hold::UntilResumed => format!(
                    "{label}: paused, analysing `{to}` until the operator resumes or promotes"
                ),
            },
        );
        let Some(slot) = self.env.slot(to).cloned() else {
            return Err((format!("{label}: no slot `{to}`"), Instant::now()));
        };
        let base = self
            .observe_all()
            .await
            .map(|s| (counters(&s, to), counters(&s, live)))
            .unwrap_or_default();
        let started = Instant::now();
        let mut left = match hold {
            Hold::For(window) => Some(window),
            Hold::UntilResumed => None,
        };
        let mut counted_to = started;
        let mut next_check = started + WATCH_CHECK_EVERY;
        let mut tally = Tally::default();
        let mut failed = 0u32;
        let mut cancel = run.cancel.clone();
        let mut seen = ((0u64, 0u64), (0u64, 0u64));
        let mut was_paused = false;
        // Prometheus is asked only where the environment has queries; a configured check that
        // cannot be asked fails the step rather than being skipped.
        let prometheus = if self.env.canary.queries.is_empty() {
            None
        } else {
            match crate::http_client().build() {
                Ok(c) => Some(c),
                Err(e) => {
                    let why = format!(
                        "{label}: cannot make the HTTP client for the Prometheus checks: {e}"
                    );
                    run.done(Step::Watch, false, why.clone());
                    return Err((why, Instant::now()));
                }
            }
        };
        let mut last_queried = String::new();
        let mut last_failure: Option<(Instant, String)> = None;
        loop {
            let before = control.last;
            let asked = control.now();
            let ended_by = if asked.promotes != before.promotes {
                Some("promoted")
            } else if asked.resumes != before.resumes && left.is_none() {
                Some("resumed")
            } else {
                None
            };
            if let Some(how) = ended_by {
                let msg = format!(
                    "{label}: {how} by the operator after {} ({} of {} health checks, {} \
                     errors of {} requests so far)",
                    crate::timefmt::millis(started.elapsed()),
                    tally.passed,
                    tally.checks,
                    seen.0.0,
                    seen.0.1
                );
                run.done(Step::Watch, true, msg);
                return Ok(());
            }
            if asked.paused != was_paused {
                was_paused = asked.paused;
                let what = if was_paused {
                    "paused by the operator: the countdown waits, the analysis goes on"
                } else {
                    "resumed by the operator"
                };
                run.decision(Step::Watch, format!("{label}: {what}"));
            }
            let now = Instant::now();
            if let Some(l) = left.as_mut()
                && !asked.paused
            {
                *l = l.saturating_sub(now - counted_to);
            }
            counted_to = now;
            if left == Some(Duration::ZERO) {
                break;
            }
            if let Some(i) = run.interrupted() {
                let why = format!("{label}: stopped during the analysis ({})", i.reason());
                run.done(Step::Watch, false, why.clone());
                return Err((why, Instant::now()));
            }
            if now >= next_check {
                next_check = now + WATCH_CHECK_EVERY;
                // The probe, the routers' counters and the queries at once: a check takes as
                // long as the slowest of them, so a slow Prometheus delays pause and promote less.
                let queries = async {
                    match &prometheus {
                        Some(client) => {
                            super::query::check_all(client, &self.env.canary.queries, to, live)
                                .await
                        }
                        None => Vec::new(),
                    }
                };
                let (r, states, queried) =
                    tokio::join!(self.prober.probe_slot(&slot), self.observe_all(), queries);
                tally.count(&r);
                if let Ok(states) = states {
                    let since = |(e, q): (u64, u64), (be, bq): (u64, u64)| {
                        (e.saturating_sub(be), q.saturating_sub(bq))
                    };
                    seen = (
                        since(counters(&states, to), base.0),
                        since(counters(&states, live), base.1),
                    );
                }
                let sample = Sample {
                    canary: to,
                    stable: live,
                    probe: &r,
                    canary_counts: seen.0,
                    stable_counts: seen.1,
                    over: started.elapsed(),
                };
                let mut failures = judge(&self.env, &sample);
                failures.extend(queried.iter().filter_map(|q| q.failure.clone()));
                if !queried.is_empty() {
                    let said: Vec<String> = queried.iter().map(|q| q.summary()).collect();
                    last_queried = format!("; Prometheus: {}", said.join(", "));
                }
                let limit = self.env.canary.failure_limit;
                if !failures.is_empty() {
                    failed += 1;
                    let why = failures.join("; ");
                    if failed <= limit {
                        run.decision(
                            Step::Watch,
                            format!(
                                "{label}: check failed ({failed} of {} would abort), tolerated: {why}",
                                limit + 1,
                            ),
                        );
                    }
                    last_failure = Some((Instant::now(), why));
                }
                let ((errors, requests), (s_errors, s_requests)) = seen;
                let mut detail = format!(
                    "{label} · {to} {}{} · {errors} err / {requests} req ({}; {live} {}) · \
                     {failed} of {} failed checks",
                    r.health.label(),
                    r.latency
                        .map(|l| format!(" {}", crate::timefmt::millis(l)))
                        .unwrap_or_default(),
                    pct(rate(errors, requests)),
                    pct(rate(s_errors, s_requests)),
                    limit + 1
                );
                for q in &queried {
                    detail.push_str(&format!(" · {}", q.summary()));
                }
                if left.is_none() {
                    detail.push_str(" · waiting for the operator");
                } else if asked.paused {
                    detail.push_str(" · paused");
                }
                if let Some(f) = failures.first() {
                    detail.push_str(&format!(" · {f}"));
                } else if let Some((at, why)) = &last_failure {
                    // The check passed; the failure still counted is said, with its age.
                    detail.push_str(&format!(
                        " · last failed {} ago: {why}",
                        crate::timefmt::millis(at.elapsed())
                    ));
                }
                let _ = run.tx.send(Progress::Watching {
                    remaining: left.unwrap_or_default(),
                    detail,
                    errors,
                    checks: tally.checks,
                    passed: tally.passed,
                });
                if failed > limit {
                    let why = format!("{label} failed: {}", failures.join("; "));
                    let at = Instant::now();
                    run.done(Step::Watch, false, why.clone());
                    return Err((why, at));
                }
            }
            let mut wake = next_check.min(now + WATCH_TAKEOVER_POLL);
            if let Some(l) = left
                && !asked.paused
            {
                wake = wake.min(now + l);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = cancel.changed() => {}
                _ = control.changed() => {}
            }
        }
        run.done(
            Step::Watch,
            true,
            format!(
                "{label}: `{to}` passed ({} of {} health checks, {} errors of {} \
                 requests; {live} {} of {}{last_queried})",
                tally.passed, tally.checks, seen.0.0, seen.0.1, seen.1.0, seen.1.1
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
        let action = format!("canary abort: 100 % of the live traffic back on {live}");
        self.begin_weights(&mut run, action, live, live);
        let mut failures = Vec::new();
        for (i, r) in self.routers.iter().enumerate() {
            let err = match r.set_weights(live, to, 0).await {
                Ok(()) => {
                    run.journal_router(i, "changed");
                    continue;
                }
                Err(e) => format!("{e:#}"),
            };
            // A router that refuses the change but sends nothing to the canary (it refused
            // the step's weights in the first place) is where the abort wants it.
            let state = crate::router::observe_within(r.as_ref(), DEFAULT_OBSERVE_TIMEOUT).await;
            if state.is_ok_and(|s| s.live.as_deref() == Some(live) && s.weights.is_none()) {
                run.journal_router(i, "changed");
                continue;
            }
            run.journal_router(i, "failed");
            failures.push(format!("`{}`: {err}", r.name()));
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

/// The operator's requests ([`CanaryControl`]) as the canary has seen them so far.
struct Control {
    rx: Option<watch::Receiver<CanaryControl>>,
    last: CanaryControl,
}

impl Control {
    /// The newest requests, remembered as seen.
    fn now(&mut self) -> CanaryControl {
        if let Some(rx) = self.rx.as_mut() {
            self.last = *rx.borrow_and_update();
        }
        self.last
    }

    /// Until a new request comes (never, when nobody can send one).
    async fn changed(&mut self) {
        match self.rx.as_mut() {
            Some(rx) => {
                if rx.changed().await.is_err() {
                    self.rx = None;
                }
            }
            None => std::future::pending().await,
        }
    }
}

/// The canary's step plan, for a dialog or `--steps`: "5,25,pause,50,100".
pub fn steps_text(steps: &[CanaryStep]) -> String {
    steps
        .iter()
        .map(CanaryStep::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// How long the whole plan holds, at least (the timed holds; `pause` steps wait for the
/// operator, and the swap's own watch comes after).
pub fn plan_duration(steps: &[CanaryStep], pause: Duration) -> Duration {
    pause
        * steps
            .iter()
            .filter(|s| s.percent().is_some_and(|p| p < 100))
            .count() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(extra: &str) -> Environment {
        let text = format!(
            "[[environment]]\nname = \"shop\"\n{extra}\n\
             [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:9001\"\n\
             [[environment.slot]]\nname = \"green\"\naddress = \"http://127.0.0.1:9002\"\n"
        );
        match crate::config::parse(&text, std::path::Path::new("t.toml")) {
            Ok(mut c) => c.environments.remove(0),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn a_check_fails_on_health_latency_the_error_rate_and_the_stable_slots_rate() {
        let probe = |health, ms| ProbeResult {
            at: std::time::SystemTime::UNIX_EPOCH,
            health,
            status: Some(200),
            latency: Some(Duration::from_millis(ms)),
            error: None,
            version: None,
            version_error: None,
        };
        let sample = |p: &ProbeResult, canary, stable| {
            judge(
                &env(
                    "canary_max_error_rate = 0.5\ncanary_max_error_rate_over_stable = 0.01\n\
                     canary_max_latency = \"100ms\"\ncanary_failure_limit = 3\n",
                ),
                &Sample {
                    canary: "green",
                    stable: "blue",
                    probe: p,
                    canary_counts: canary,
                    stable_counts: stable,
                    over: Duration::from_secs(12),
                },
            )
        };
        let up = probe(crate::model::Health::Up, 5);
        assert!(
            sample(&up, (1, 100), (1, 100)).is_empty(),
            "as good as blue"
        );
        assert!(
            sample(&up, (5, 10), (0, 100)).is_empty(),
            "too few requests"
        );
        let worse = sample(&up, (3, 100), (1, 100));
        assert_eq!(
            worse,
            [
                "green error rate 3.0 % > blue's 1.0 % + 1.0 % (3 of 100 requests; blue 1 of 100) \
              over 12.0s"
            ]
        );
        let slow_down = sample(&probe(crate::model::Health::Down, 250), (60, 100), (0, 100));
        assert_eq!(slow_down.len(), 4, "{slow_down:?}");
        assert!(slow_down[0].contains("`green` failed its health check"));
        assert!(slow_down[1].contains("in 250ms > 100ms"));
        assert!(slow_down[2].contains("green error rate 60.0 % > 50.0 %"));
        let e = env("");
        assert_eq!(
            (e.canary.failure_limit, e.canary.max_error_rate_over_stable),
            (1, None)
        );
    }

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
        let plan = [
            CanaryStep::Weight(5),
            CanaryStep::Pause,
            CanaryStep::Weight(25),
            CanaryStep::Weight(100),
        ];
        assert_eq!(steps_text(&plan), "5,pause,25,100");
        assert_eq!(plan_text(&plan), "5 % → pause → 25 % → 100 %");
        assert_eq!(
            plan_duration(&plan, Duration::from_secs(60)),
            Duration::from_secs(120)
        );
    }
}
