//! The watch after a switch, and what a failure during it leads to (auto-rollback or the alarm).

use super::*;

impl Engine {
    pub(super) async fn watch(&self, mut run: Run<'_>, to: &str, from: Option<&str>) -> Outcome {
        let window = self.env.watch;
        run.step(
            Step::Watch,
            format!("watching `{to}` for {}", crate::timefmt::millis(window)),
        );
        let Some(slot) = self.env.slot(to).cloned() else {
            return run.finish(Verdict::Done, format!("`{to}` is live"));
        };
        let errors_of = |states: &[RouterState]| -> u64 {
            states
                .iter()
                .filter_map(|s| s.slots.get(to).and_then(|r| r.errors))
                .sum()
        };
        let base_errors = self.observe_all().await.map(|s| errors_of(&s)).unwrap_or(0);
        let started = Instant::now();
        let end = started + window;
        let mut next_check = started + WATCH_CHECK_EVERY;
        let mut tally = Tally::default();
        let mut cancel = run.cancel.clone();
        let failure: Option<String> = loop {
            let remaining = end.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                break None;
            }
            // Wake for the next check, an interrupt from this cutover, or every
            // WATCH_TAKEOVER_POLL to look for another cutover's takeover request.
            let wake = next_check
                .min(end)
                .min(Instant::now() + WATCH_TAKEOVER_POLL);
            tokio::select! {
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = cancel.changed() => {}
            }
            if let Some(i) = run.interrupted() {
                let why = format!(
                    "`{to}` is live; {} after {}",
                    i.watch_ended(),
                    crate::timefmt::millis(started.elapsed())
                );
                run.done(Step::Watch, true, why.clone());
                return run.finish(Verdict::Cancelled, why);
            }
            if Instant::now() < next_check.min(end) {
                continue;
            }
            next_check = Instant::now() + WATCH_CHECK_EVERY;
            let r = self.prober.probe_slot(&slot).await;
            tally.count(&r);
            let states = self.observe_all().await;
            // The slot this watch guards must still be the live one: if someone else made
            // another slot live, this watch has nothing left to judge, and rolling back
            // would undo their change.
            if let Ok(st) = &states
                && let Some(other) = st.iter().find_map(|s| s.live.clone().filter(|l| l != to))
            {
                let why = format!(
                    "`{other}` was made live by someone else during the watch of `{to}`; \
                     watch ended, nothing rolled back"
                );
                run.done(Step::Watch, false, why.clone());
                return run.finish(Verdict::Cancelled, why);
            }
            let errors = states
                .map(|s| errors_of(&s).saturating_sub(base_errors))
                .unwrap_or(0);
            let detail = format!(
                "{to} {} · {errors} new err · {} checks",
                r.health.label(),
                tally.checks
            );
            let _ = run.tx.send(Progress::Watching {
                remaining: end.saturating_duration_since(Instant::now()),
                detail,
                errors,
                checks: tally.checks,
                passed: tally.passed,
            });
            if let Some(why) = tally.failing(to, &r) {
                break Some(why);
            }
            if errors > WATCH_ERROR_BUDGET {
                break Some(format!("the router counted {errors} errors on `{to}`"));
            }
        };
        let Some(why) = failure else {
            run.done(
                Step::Watch,
                true,
                format!(
                    "`{to}` stayed healthy for {}",
                    crate::timefmt::millis(window)
                ),
            );
            return run.finish(Verdict::Done, format!("`{to}` is live and stayed healthy"));
        };
        run.done(Step::Watch, false, why.clone());
        self.after_failure(run, why, to, from).await
    }

    /// The new live slot failed (its watch or its smoke test): roll back by itself when
    /// `auto_rollback` is on, else raise the alarm that names the rollback key.
    pub(super) async fn after_failure(
        &self,
        mut run: Run<'_>,
        why: String,
        to: &str,
        from: Option<&str>,
    ) -> Outcome {
        let Some(from) = from else {
            return run.finish(
                Verdict::Alarm,
                format!("{why}; no previous live slot to roll back to"),
            );
        };
        if !self.env.auto_rollback {
            return run.finish(
                Verdict::Alarm,
                format!(
                    "{why}; roll back to `{from}`: `cutover rollback {}` (in the TUI: the \
                     rollback key)",
                    self.env.name
                ),
            );
        }
        // Still under this operation's lock, and the routers were just read showing `to`:
        // the rollback moves only traffic this operation moved.
        run.step(Step::Apply, format!("auto-rollback to `{from}`"));
        run.record.operation = format!("{} (auto-rollback)", run.record.operation);
        let result = self.switch_routers(&mut run, from).await;
        run.end_changes();
        match result {
            Ok(()) => {
                run.remember(|m| {
                    m.previous_live = Some(to.to_string());
                    m.previous_live_version = None;
                    m.last_set_live = Some(from.to_string());
                    m.switched_at = Some(unix_now());
                    m.last_switch = Some("rollback".into());
                });
                run.done(Step::Apply, true, format!("rolled back to `{from}`"));
                run.finish(
                    Verdict::RolledBack,
                    format!("{why}; rolled back to `{from}` automatically"),
                )
            }
            Err(e) => {
                run.done(Step::Apply, false, e.clone());
                run.finish(
                    Verdict::Failed,
                    format!("{why}; the automatic rollback failed: {e}"),
                )
            }
        }
    }

    /// The next interrupt of operation `id`: from this cutover (`cancel`), or another
    /// cutover's takeover request (looked for every `WATCH_TAKEOVER_POLL`). For steps that
    /// change nothing on the routers (warm-up, smoke test), which may stop at any point.
    pub(super) async fn next_interrupt(
        &self,
        id: &str,
        mut cancel: watch::Receiver<Interrupt>,
    ) -> Interrupt {
        loop {
            let i = cancel.borrow_and_update().clone();
            if i != Interrupt::None {
                return i;
            }
            if let Some(by) = off_worker(|| self.store.takeover_request(&self.env.name, id)) {
                return Interrupt::TakenOver(by);
            }
            tokio::select! {
                _ = tokio::time::sleep(WATCH_TAKEOVER_POLL) => {}
                changed = cancel.changed() => {
                    if changed.is_err() {
                        // Nobody can interrupt any more: only takeovers are left to look for.
                        tokio::time::sleep(WATCH_TAKEOVER_POLL).await;
                    }
                }
            }
        }
    }
}

/// The health checks of a watch or a canary step so far.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub(super) checks: u32,
    pub(super) passed: u32,
    failed_in_a_row: u32,
}

impl Tally {
    pub(super) fn count(&mut self, r: &crate::model::ProbeResult) {
        self.checks += 1;
        if r.health.is_serving() {
            self.passed += 1;
            self.failed_in_a_row = 0;
        } else {
            self.failed_in_a_row += 1;
        }
    }

    /// Why `slot` has failed, once it failed [`WATCH_FAILED_CHECKS`] checks in a row (`r`:
    /// the newest).
    pub(super) fn failing(&self, slot: &str, r: &crate::model::ProbeResult) -> Option<String> {
        (self.failed_in_a_row >= WATCH_FAILED_CHECKS).then(|| {
            format!(
                "`{slot}` failed {} health checks in a row ({})",
                self.failed_in_a_row,
                r.error
                    .as_ref()
                    .map_or_else(|| r.health.label().to_string(), |e| e.to_string())
            )
        })
    }
}
