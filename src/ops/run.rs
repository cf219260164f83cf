//! One operation's run: its steps, its audit record, its lock and journal.

use super::*;

pub(super) struct Run<'a> {
    pub(super) engine: &'a Engine,
    pub(super) tx: mpsc::UnboundedSender<Progress>,
    pub(super) record: AuditRecord,
    pub(super) step_started: Instant,
    pub(super) cancel: watch::Receiver<Interrupt>,
    /// The environment's lock, from before the plan to after the last record.
    pub(super) lock: Option<LockGuard>,
    /// What is being changed on the routers right now (written before the first command).
    pub(super) journal: Option<Journal>,
    /// Swap and rollback: the end (audit record, `Finished`, the lock) is left here for
    /// [`Engine::conclude`], which runs the after-hooks first.
    pub(super) held: Option<Arc<std::sync::Mutex<Option<Held>>>>,
    /// When the operation began; [`Run::mark`] times its moments from here.
    pub(super) began: Instant,
    /// Moments on the way to the first router command and back, for [`Outcome::marks`].
    pub(super) marks: Vec<(&'static str, Duration)>,
    /// Each router's live slot as the plan read it under the lock, and when: the switch
    /// journals these as "before" instead of reading the routers again, while fresh.
    pub(super) plan_read: Option<(Instant, Vec<Option<String>>)>,
}

/// What [`Run::finish`] leaves for [`Engine::conclude`].
pub(super) struct Held {
    pub(super) tx: mpsc::UnboundedSender<Progress>,
    pub(super) lock: Option<LockGuard>,
}

impl Run<'_> {
    /// A moment of the operation (`lock`, `routers read`, `command sent`, ...), timed from
    /// its start: the switch-time breakdown (`cutover drill`, BENCHMARKS.md) and the debug log.
    pub(super) fn mark(&mut self, what: &'static str) {
        let at = self.began.elapsed();
        tracing::debug!(op = %self.record.id, at_us = at.as_micros() as u64, "{what}");
        self.marks.push((what, at));
    }
    /// Start a step: its time is counted from here.
    pub(super) fn step(&mut self, step: Step, message: impl Into<String>) {
        self.step_started = Instant::now();
        self.note(step, message);
    }
    /// Say how a running step is going, without restarting its clock.
    pub(super) fn note(&self, step: Step, message: impl Into<String>) {
        let message = message.into();
        self.share(step, None, &message);
        let _ = self.tx.send(Progress::Step {
            step,
            ok: None,
            message,
        });
    }
    /// A decision inside a running step that the audit keeps (an operator's pause, a failed
    /// check the step tolerated): said as a note, and recorded as a step line that did not
    /// end the operation.
    pub(super) fn decision(&mut self, step: Step, message: impl Into<String>) {
        let message = message.into();
        self.record_step(step, true, &message);
        self.share(step, None, &message);
        let _ = self.tx.send(Progress::Decision { step, message });
    }
    /// A step line in the audit record (redacted), timed from the step's start.
    fn record_step(&mut self, step: Step, ok: bool, detail: &str) {
        self.record.steps.push(StepRecord {
            step: step.label().into(),
            ok,
            ms: self.step_started.elapsed().as_millis() as u64,
            detail: crate::audit::redact(detail),
        });
    }
    /// Tell the shared store's followers (another operator's screen) about a step; the
    /// store redacts it.
    fn share(&self, step: Step, ok: Option<bool>, message: &str) {
        if let Some(g) = &self.lock {
            g.share_step(step.label(), ok, message);
        }
    }
    pub(super) fn done(&mut self, step: Step, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        self.record_step(step, ok, &detail);
        self.share(step, Some(ok), &detail);
        if let (false, Some(n)) = (ok, &self.engine.notifier) {
            n.tell(
                EventKind::StepFailed,
                &self.record,
                Some(step.label()),
                &detail,
            );
        }
        let _ = self.tx.send(Progress::Step {
            step,
            ok: Some(ok),
            message: detail,
        });
    }
    pub(super) fn finish(mut self, verdict: Verdict, message: impl Into<String>) -> Outcome {
        let message = message.into();
        self.record.time = crate::timefmt::rfc3339(SystemTime::now());
        self.record.result = verdict.label().into();
        self.record.message = crate::audit::redact(&message);
        if let Some(g) = &self.lock {
            g.share_result(&self.record.result, &message);
        }
        let out = Outcome {
            verdict,
            message,
            record: self.record.clone(),
            marks: std::mem::take(&mut self.marks),
        };
        if let Some(h) = self.held.take()
            && let Ok(mut slot) = h.lock()
        {
            *slot = Some(Held {
                tx: self.tx.clone(),
                lock: self.lock.take(),
            });
            return out;
        }
        self.engine.record_result(&out);
        let _ = self.tx.send(Progress::Finished(out.clone()));
        // The lock goes last: after the record, so the next holder's records follow this one.
        drop(self.lock.take());
        out
    }
    /// End on a failed step whose detail is also the outcome's message.
    pub(super) fn fail(mut self, step: Step, verdict: Verdict, why: impl Into<String>) -> Outcome {
        let why = why.into();
        self.done(step, false, why.clone());
        self.finish(verdict, why)
    }

    /// Before the first router command: the journal (for a crash) and the intent record (for
    /// the audit trail), both durable before anything changes.
    pub(super) fn begin_changes(
        &mut self,
        action: String,
        from: Option<&str>,
        to: Option<&str>,
        before: &[Option<String>],
    ) {
        let j = Journal {
            op_id: self.record.id.clone(),
            operation: self.record.operation.clone(),
            action: action.clone(),
            environment: self.engine.env.name.clone(),
            user: self.record.user.clone(),
            pid: std::process::id(),
            started: crate::timefmt::rfc3339(SystemTime::now()),
            slots: FromTo {
                from: from.map(str::to_string),
                to: to.map(str::to_string),
            },
            target: None,
            routers: self
                .engine
                .routers
                .iter()
                .zip(before.iter().chain(std::iter::repeat(&None)))
                .map(|(r, b)| JournalRouter {
                    name: r.name().to_string(),
                    before: b.clone(),
                    result: "pending".into(),
                })
                .collect(),
        };
        if let Some(g) = &self.lock
            && let Err(e) = off_worker(|| self.engine.store.write_journal(g, &j))
        {
            tracing::error!("cannot write the operation journal: {e:#}");
        }
        self.journal = Some(j);
        if let Some(a) = &self.engine.audit {
            let mut intent = self.record.clone();
            intent.time = crate::timefmt::rfc3339(SystemTime::now());
            intent.result = "started".into();
            intent.message = crate::audit::redact(&format!("intent: {action}"));
            a.write(&intent);
        }
        if let Some(n) = &self.engine.notifier {
            n.tell(EventKind::Start, &self.record, None, &action);
        }
    }

    /// One router's part of the journalled change ended.
    pub(super) fn journal_router(&mut self, router: usize, result: &str) {
        let (Some(j), Some(g)) = (self.journal.as_mut(), self.lock.as_ref()) else {
            return;
        };
        if let Some(r) = j.routers.get_mut(router) {
            r.result = result.to_string();
        }
        if let Err(e) = off_worker(|| self.engine.store.write_journal(g, j)) {
            tracing::error!("cannot update the operation journal: {e:#}");
        }
    }

    /// The routers are consistent again.
    pub(super) fn end_changes(&mut self) {
        if let (Some(_), Some(g)) = (self.journal.take(), self.lock.as_ref()) {
            off_worker(|| self.engine.store.close_journal(g));
        }
    }

    /// Why this operation should stop at this safe point, if it should: an interrupt from
    /// this cutover, or another cutover's takeover request.
    pub(super) fn interrupted(&self) -> Option<Interrupt> {
        let i = self.cancel.borrow().clone();
        if i != Interrupt::None {
            return Some(i);
        }
        if let Some(why) = self.lock.as_ref().and_then(|g| g.lost()) {
            return Some(Interrupt::LockLost(why));
        }
        off_worker(|| {
            self.engine
                .store
                .takeover_request(&self.engine.env.name, &self.record.id)
        })
        .map(Interrupt::TakenOver)
    }

    pub(super) fn remember(&self, f: impl FnOnce(&mut crate::state::EnvMemory)) {
        if let Some(g) = &self.lock {
            if let Err(e) = off_worker(|| self.engine.store.update(g, f)) {
                tracing::error!("cannot write the state file: {e:#}");
            }
            let _ = self.tx.send(Progress::Remembered);
        }
    }
}
