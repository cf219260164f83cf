//! `cutover recover`: finish what an interrupted operation left.

use super::simple::{apply_simple, undo_of};
use super::*;

impl Engine {
    /// `cutover recover`: an interrupted operation left the routers (maybe) disagreeing.
    /// Bring every router to one slot — `to`, or the one that was live before the interrupted
    /// switch — then close the journal. Any other interrupted change (drain, maintenance,
    /// preview) is undone on the routers it reached.
    pub(super) async fn recover(
        &self,
        mut run: Run<'_>,
        to: Option<String>,
        states: &[RouterState],
    ) -> Outcome {
        let journal = off_worker(|| self.store.journal(&self.env.name));
        let now = self.lives(states, "→");
        let found = journal
            .as_ref()
            .map_or("no interrupted operation".to_string(), Journal::summary);
        let switch = journal
            .as_ref()
            .is_none_or(|j| j.slots.to.is_some() || j.operation.starts_with("rollback"));
        if !switch && to.is_none() {
            let Some(j) = journal else {
                return run.fail(Step::Plan, Verdict::Refused, "nothing to recover");
            };
            run.done(
                Step::Plan,
                true,
                format!("{found}; routers now: {}", now.join(", ")),
            );
            return self.undo_simple(run, &j).await;
        }
        let target = to.or_else(|| journal.as_ref().and_then(|j| j.slots.from.clone()));
        let Some(target) = target else {
            let why = format!(
                "{found}; routers now: {}; say which slot they should all serve: \
                 `cutover recover {} --to SLOT`",
                now.join(", "),
                self.env.name
            );
            return run.fail(Step::Plan, Verdict::Refused, why);
        };
        if self.env.slot(&target).is_none() {
            let why = format!("there is no slot `{target}` in `{}`", self.env.name);
            return run.fail(Step::Plan, Verdict::Refused, why);
        }
        run.record.slots.from = journal.as_ref().and_then(|j| j.slots.to.clone());
        run.record.slots.to = Some(target.clone());
        run.done(
            Step::Plan,
            true,
            format!(
                "{found}; routers now: {}; all to `{target}`",
                now.join(", ")
            ),
        );
        run.step(Step::Apply, format!("bringing every router to `{target}`"));
        let before: Vec<Option<String>> = states.iter().map(|s| s.live.clone()).collect();
        run.begin_changes(
            format!("recover: every router to {target}"),
            None,
            Some(&target),
            &before,
        );
        let mut failures = Vec::new();
        for (i, (r, s)) in self.routers.iter().zip(states).enumerate() {
            if s.live.as_deref() == Some(target.as_str()) {
                // A canary's leftover share goes back to the live slot.
                if let Some(w) = &s.weights {
                    match r.set_weights(&w.live, &w.canary, 0).await {
                        Ok(()) => run.journal_router(i, "changed"),
                        Err(e) => {
                            run.journal_router(i, "failed");
                            failures.push(format!(
                                "`{}` refused 0 % on `{}`: {e:#}",
                                r.name(),
                                w.canary
                            ));
                        }
                    }
                    continue;
                }
                run.journal_router(i, "unchanged");
                continue;
            }
            match r.switch_live(&target).await {
                Ok(()) => run.journal_router(i, "changed"),
                Err(e) => {
                    run.journal_router(i, "failed");
                    failures.push(format!("`{}` refused: {e:#}", r.name()));
                }
            }
        }
        if !failures.is_empty() {
            let why = format!(
                "{}; now {} (the journal is kept: run recover again)",
                failures.join("; "),
                self.where_routers_are().await
            );
            return run.fail(Step::Apply, Verdict::Failed, why);
        }
        run.done(
            Step::Apply,
            true,
            format!("every router told to serve `{target}`"),
        );
        if let Err(e) = self.verify_switch(&mut run, &target, None).await {
            return run.finish(Verdict::Failed, format!("{e} (the journal is kept)"));
        }
        run.end_changes();
        // The journal of the interrupted operation, if it was not this one's.
        if let Some(g) = &run.lock {
            off_worker(|| self.store.close_journal(g));
        }
        if let Some(j) = &journal {
            let previous = j
                .slots
                .from
                .clone()
                .filter(|f| *f != target)
                .or(j.slots.to.clone());
            run.remember(|m| {
                m.last_set_live = Some(target.clone());
                if previous.as_deref() != Some(target.as_str()) {
                    m.previous_live = previous.clone();
                }
            });
        }
        let msg = format!(
            "every router serves `{target}` ({})",
            self.where_routers_are().await
        );
        run.finish(Verdict::Done, msg)
    }

    /// Undo an interrupted drain, undrain, maintenance or preview change on the routers it
    /// reached.
    pub(super) async fn undo_simple(&self, mut run: Run<'_>, j: &Journal) -> Outcome {
        run.step(Step::Apply, format!("undoing: {}", j.action));
        let Some(kind) = undo_of(j) else {
            let why = format!(
                "cutover cannot undo `{}` by itself; set it as it should be (e.g. `cutover \
                 maintenance {} on|off`), then `cutover unlock {}` clears the journal",
                j.action, self.env.name, self.env.name
            );
            return run.fail(Step::Apply, Verdict::Refused, why);
        };
        let mut failures = Vec::new();
        for (r, jr) in self.routers.iter().zip(&j.routers) {
            if jr.result != "changed" {
                continue;
            }
            if let Err(e) = apply_simple(r.as_ref(), &kind, jr.before.as_deref()).await {
                failures.push(format!("`{}`: {e:#}", r.name()));
            }
        }
        if !failures.is_empty() {
            return run.fail(Step::Apply, Verdict::Failed, failures.join("; "));
        }
        run.done(Step::Apply, true, format!("undone: {}", describe(&kind)));
        if let Some(g) = &run.lock {
            off_worker(|| self.store.close_journal(g));
        }
        run.finish(Verdict::Done, format!("undid the interrupted {}", j.action))
    }
}

impl Engine {
    /// Record that cutover ended in the middle of an operation.
    pub fn abandon(&self, id: &str, op_name: &str, why: &str) {
        let Some(audit) = &self.audit else { return };
        let now = crate::timefmt::rfc3339(SystemTime::now());
        let journal = off_worker(|| self.store.journal(&self.env.name));
        audit.write(&crate::audit::AuditRecord {
            time: now.clone(),
            id: id.to_string(),
            started: now,
            user: crate::paths::user_at_host(),
            environment: self.env.name.clone(),
            operation: op_name.to_string(),
            slots: journal
                .as_ref()
                .map(|j| j.slots.clone())
                .unwrap_or_default(),
            versions: Versions::default(),
            forced: false,
            one_key: false,
            result: "abandoned".into(),
            message: match journal {
                Some(j) => format!(
                    "{why} during a router change; {}; run `cutover recover {}`",
                    j.summary(),
                    self.env.name
                ),
                None => format!("{why}; no router change was in progress"),
            },
            steps: vec![],
        });
    }
}
