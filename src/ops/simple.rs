//! Drain, undrain, maintenance and preview: all or nothing over the routers, then verify.

use super::*;

impl Engine {
    /// Drain, undrain, maintenance, set preview: apply to every router — all or nothing: when
    /// one refuses, the ones already changed are put back — then verify.
    pub(super) async fn simple(
        &self,
        mut run: Run<'_>,
        kind: OpKind,
        states: Vec<RouterState>,
    ) -> Outcome {
        run.done(Step::Plan, true, describe(&kind));
        if let OpKind::Maintenance {
            on: true,
            mode: MaintenanceMode::Redirect { to },
        } = &kind
            && self.env.slot(to).is_none()
        {
            let why = format!("there is no slot `{to}` to redirect to");
            return run.finish(Verdict::Refused, why);
        }
        if let OpKind::Pause { .. } = &kind
            && let Some(r) = self
                .routers
                .iter()
                .find(|r| !r.supports(crate::router::Verb::Pause))
        {
            let why = format!(
                "{} router `{}` cannot hold requests; pausing needs every router of the \
                 environment to be embedded",
                r.kind(),
                r.name()
            );
            return run.finish(Verdict::Refused, why);
        }
        run.step(Step::Apply, describe(&kind));
        if let Err(why) = self.apply_all(&mut run, &kind, &states).await {
            run.end_changes();
            return run.fail(Step::Apply, Verdict::Failed, why);
        }
        run.end_changes();
        run.done(Step::Apply, true, "accepted by every router");

        run.step(Step::Verify, "reading the routers back");
        let deadline = Instant::now() + self.env.verify_timeout;
        loop {
            let states = self.observe_all().await;
            let (changed, mut detail) = match &states {
                Ok(s) => check_simple(&kind, s),
                Err(e) => (false, format!("{e:#}")),
            };
            if changed {
                if let (OpKind::Drain(t), Ok(s)) = (&kind, &states) {
                    let n = sessions_of(t, s);
                    if n.unwrap_or(0) > 0 && Instant::now() < deadline + self.env.verify_timeout * 5
                    {
                        run.note(
                            Step::Verify,
                            format!("{t} drained; {} in flight", n.unwrap_or(0)),
                        );
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    if n == Some(0) {
                        detail.push_str("; no requests in flight");
                    }
                }
                run.done(Step::Verify, true, detail.clone());
                // Only a new preview is remembered (for drift); the rest leaves the state alone.
                if let OpKind::SetPreview(s) = &kind {
                    run.remember(|m| m.last_set_preview = Some(s.clone()));
                }
                return run.finish(Verdict::Done, detail);
            }
            if Instant::now() >= deadline {
                let why = format!("the router accepted it but did not change: {detail}");
                return run.fail(Step::Verify, Verdict::Failed, why);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Apply a drain, undrain, maintenance or preview change to every router in turn,
    /// journalled; when one refuses, undo it on the ones already changed and say where each
    /// router ended.
    pub(super) async fn apply_all(
        &self,
        run: &mut Run<'_>,
        kind: &OpKind,
        states: &[RouterState],
    ) -> std::result::Result<(), String> {
        let before: Vec<Option<String>> = states
            .iter()
            .map(|s| match kind {
                OpKind::SetPreview(_) => s.preview.clone(),
                _ => None,
            })
            .collect();
        run.begin_changes(describe(kind), None, None, &before);
        if let (Some(j), OpKind::Drain(t) | OpKind::Undrain(t)) = (run.journal.as_mut(), kind) {
            j.target = Some(t.to_string());
        }
        let mut failure = None;
        for (i, r) in self.routers.iter().enumerate() {
            match apply_simple(r.as_ref(), kind, None).await {
                Ok(()) => run.journal_router(i, "changed"),
                Err(e) => {
                    run.journal_router(i, "failed");
                    failure = Some(format!("router `{}` refused: {e:#}", r.name()));
                    break;
                }
            }
        }
        let Some(mut why) = failure else {
            return Ok(());
        };
        let undo = run.journal.as_ref().and_then(undo_of);
        let changed: Vec<usize> = run
            .journal
            .as_ref()
            .map(|j| {
                j.routers
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.result == "changed")
                    .map(|(i, _)| i)
                    .collect()
            })
            .unwrap_or_default();
        let mut stuck = Vec::new();
        for i in changed {
            let r = &self.routers[i];
            let res = match &undo {
                Some(u) => apply_simple(r.as_ref(), u, before.get(i).cloned().flatten().as_deref())
                    .await
                    .map_err(|e| format!("{e:#}")),
                None => Err("cutover cannot undo this change by itself".to_string()),
            };
            match res {
                Ok(()) => {
                    run.journal_router(i, "reverted");
                    why.push_str(&format!("; `{}` put back as it was", r.name()));
                }
                Err(e) => {
                    run.journal_router(i, "revert-failed");
                    stuck.push(r.name().to_string());
                    why.push_str(&format!("; `{}` could NOT be put back: {e}", r.name()));
                }
            }
        }
        if !stuck.is_empty() {
            why = format!(
                "ROUTERS DISAGREE ({} changed, the rest not): {why}",
                stuck.join(", ")
            );
        }
        Err(why)
    }
}

/// The operation that undoes an interrupted or half-done simple change, from its journal.
pub(super) fn undo_of(j: &Journal) -> Option<OpKind> {
    let target = || {
        let t = j.target.as_deref()?;
        Some(match t.split_once('/') {
            Some((s, n)) => Target::node(s, n),
            None => Target::slot(t),
        })
    };
    match j.operation.as_str() {
        "drain" => Some(OpKind::Undrain(target()?)),
        "undrain" => Some(OpKind::Drain(target()?)),
        "pause" => Some(OpKind::Pause { on: false }),
        "maintenance-on" => Some(OpKind::Maintenance {
            on: false,
            mode: MaintenanceMode::Page,
        }),
        // Back to each router's own preview before the change.
        "set-preview" => Some(OpKind::SetPreview(String::new())),
        _ => None,
    }
}

/// One router's part of a simple change. `before` is, for a preview undo, that router's
/// preview before the change.
pub(super) async fn apply_simple(
    r: &dyn Router,
    kind: &OpKind,
    before: Option<&str>,
) -> Result<()> {
    match kind {
        OpKind::Drain(t) => r.drain(t).await,
        OpKind::Undrain(t) => r.undrain(t).await,
        OpKind::Maintenance { on, mode } => r.maintenance(*on, mode).await,
        OpKind::Pause { on } => r.pause(*on).await,
        OpKind::SetPreview(s) if s.is_empty() => match before {
            Some(b) => r.set_preview(b).await,
            None => Ok(()),
        },
        OpKind::SetPreview(s) => r.set_preview(s).await,
        _ => Ok(()),
    }
}

pub(super) fn admin_of(t: &Target, s: &RouterState) -> AdminState {
    let slot = s.slots.get(&t.slot);
    match &t.node {
        Some(n) => slot
            .and_then(|r| r.nodes.iter().find(|x| &x.name == n))
            .map(|x| x.admin)
            .unwrap_or_default(),
        None => slot.map(|r| r.admin).unwrap_or_default(),
    }
}

pub(super) fn sessions_of(t: &Target, states: &[RouterState]) -> Option<u64> {
    let mut total = None;
    for s in states {
        let slot = s.slots.get(&t.slot);
        let n = match &t.node {
            Some(n) => slot
                .and_then(|r| r.nodes.iter().find(|x| &x.name == n))
                .and_then(|x| x.sessions),
            None => slot.and_then(|r| r.sessions),
        };
        if let Some(n) = n {
            total = Some(total.unwrap_or(0) + n);
        }
    }
    total
}

pub(super) fn check_simple(kind: &OpKind, states: &[RouterState]) -> (bool, String) {
    let first_is = |t: &Target| {
        let first = states
            .first()
            .map_or(AdminState::Unknown, |s| admin_of(t, s));
        format!("{t} is {}", first.described())
    };
    match kind {
        OpKind::Drain(t) => {
            let ok = states.iter().all(|s| {
                matches!(
                    admin_of(t, s),
                    AdminState::Drain | AdminState::Maint | AdminState::Disabled
                )
            });
            (ok, first_is(t))
        }
        OpKind::Undrain(t) => {
            let ok = states.iter().all(|s| admin_of(t, s).undrained());
            (ok, first_is(t))
        }
        OpKind::Maintenance { on, .. } => {
            let ok = states.iter().all(|s| s.maintenance.is_some() == *on);
            (
                ok,
                format!("maintenance is {}", if ok == *on { "on" } else { "off" }),
            )
        }
        OpKind::Pause { on } => {
            let pauses: Vec<_> = states.iter().filter_map(|s| s.pause).collect();
            let ok = pauses.len() == states.len() && pauses.iter().all(|p| p.paused == *on);
            let detail = match pauses.first() {
                Some(p) => format!("requests: {p}"),
                None => "the router reports no pause state".into(),
            };
            (ok, detail)
        }
        OpKind::SetPreview(slot) => {
            let ok = states
                .iter()
                .all(|s| s.preview.as_deref() == Some(slot.as_str()));
            (
                ok,
                format!(
                    "preview is `{}`",
                    states
                        .first()
                        .and_then(|s| s.preview.clone())
                        .unwrap_or_default()
                ),
            )
        }
        _ => (true, String::new()),
    }
}
