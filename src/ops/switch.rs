//! Switching every router to a slot: apply with compensation, verify, and where each router ended.

use super::*;

/// How long the plan's reading of the routers stands for "before" in the journal.
const PLAN_READ_FRESH: Duration = Duration::from_secs(1);

impl Engine {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn switch(
        &self,
        mut run: Run<'_>,
        req: OpRequest,
        gate_source: GateSource,
        from: Option<String>,
        preview: Option<String>,
        to: String,
        rollback: bool,
    ) -> Outcome {
        // Gate.
        run.step(Step::Gate, format!("checking `{to}`"));
        let input = self.gate_input(gate_source, &to).await;
        let mut plan = gate(
            self.env.gate_checks,
            from.as_deref(),
            &to,
            &input,
            !rollback,
        );
        if req.one_key {
            let memory = off_worker(|| self.store.env(&self.env.name));
            plan.checks.push(way_back_check(&to, &plan, &memory));
        }
        run.record.versions = plan.versions.clone();
        let mut run = match run.judge_gate(&plan, req.force, "F in the confirm dialog, --force") {
            Ok(run) => run,
            Err(refused) => return *refused,
        };
        run.mark("gate");

        // Warm-up: the target slot, directly, before any router changes. Never on the way
        // back (a rollback must be fast).
        if !rollback && self.env.hooks.has_warmup() {
            run.step(Step::Warmup, format!("warming `{to}` up"));
            let cancel = run.cancel.clone();
            let warmed = tokio::select! {
                w = self.warm_up(&mut run, &to, plan.versions.to_version.as_deref()) => w,
                i = self.next_interrupt(&req.id, cancel) => {
                    let why = format!("nothing changed: stopped during the warm-up ({})", i.reason());
                    return run.fail(Step::Warmup, Verdict::Cancelled, why);
                }
            };
            match warmed {
                Ok(detail) => run.done(Step::Warmup, true, detail),
                Err(why) if !req.force => {
                    let why = format!(
                        "refused: the warm-up of `{to}` failed: {why}; nothing was changed, \
                         traffic stays on `{}`; to switch anyway, force it (F in the confirm \
                         dialog, --force)",
                        from.as_deref().unwrap_or("nothing")
                    );
                    return run.fail(Step::Warmup, Verdict::Refused, why);
                }
                Err(why) => run.done(Step::Warmup, true, format!("FORCED past: {why}")),
            }
        }
        if let Some(i) = run.interrupted() {
            let why = format!(
                "nothing changed: stopped before the switch ({})",
                i.reason()
            );
            return run.finish(Verdict::Cancelled, why);
        }

        // Apply, verify.
        if let Err(e) = self
            .apply_switch(&mut run, &to, from.as_deref(), preview.as_deref())
            .await
        {
            run.end_changes();
            return run.finish(Verdict::Failed, e);
        }
        if let Err(e) = self
            .verify_switch(&mut run, &to, plan.versions.to_version.as_deref())
            .await
        {
            // Put things back as they were, so the proxy serves what it served before.
            let mut why = e;
            if let Some(f) = &from {
                why = match self.switch_routers(&mut run, f).await {
                    Ok(()) => format!("{why}; switched back to `{f}`"),
                    Err(back) => format!("{why}; switching back to `{f}` failed: {back}"),
                };
            }
            run.end_changes();
            return run.finish(Verdict::Failed, why);
        }
        run.end_changes();
        run.remember(|m| {
            m.previous_live = from.clone();
            m.previous_live_version = plan.versions.from_version.clone();
            m.last_set_live = Some(to.clone());
            m.switched_at = Some(unix_now());
            m.last_switch = Some(if rollback { "rollback" } else { "swap" }.into());
            if preview.as_deref() == Some(to.as_str()) {
                m.last_set_preview = from.clone();
            }
        });

        // Smoke test: the new live slot, as users reach it. A failure is a failed cutover,
        // handled as a failing watch is.
        if self.env.hooks.has_smoke() {
            run.step(Step::Smoke, format!("smoke-testing `{to}`"));
            let smoked = tokio::select! {
                s = self.smoke_test_live(&to, plan.versions.to_version.as_deref()) => s,
                i = self.next_interrupt(&req.id, run.cancel.clone()) => {
                    let why = format!(
                        "`{to}` is live; smoke test abandoned ({}), nothing rolled back",
                        i.reason()
                    );
                    return run.fail(Step::Smoke, Verdict::Cancelled, why);
                }
            };
            match smoked {
                Ok(detail) => run.done(Step::Smoke, true, detail),
                Err(why) => {
                    run.done(Step::Smoke, false, why.clone());
                    let why = format!("the smoke test of `{to}` failed: {why}");
                    return self.after_failure(run, why, &to, from.as_deref()).await;
                }
            }
        }

        if !req.watch || self.env.watch.is_zero() {
            return run.finish(Verdict::Done, format!("`{to}` is live"));
        }
        if let Some(i) = run.interrupted() {
            let why = format!("`{to}` is live; {} before it began", i.watch_ended());
            return run.finish(Verdict::Cancelled, why);
        }
        self.watch(run, &to, from.as_deref()).await
    }

    /// Switch every router to `to` (one by one, or all at once as configured); on a failure,
    /// switch back the ones already changed, read every router again, and say where each
    /// ended. The journal follows each router.
    pub(super) async fn switch_routers(
        &self,
        run: &mut Run<'_>,
        to: &str,
    ) -> std::result::Result<(), String> {
        // Under the lock nobody else changes the routers: the plan's reading of a moment ago
        // stands for "before" (one read less before the command); an older one is read again
        // (a long warm-up, a hand-made change in between).
        let fresh = run
            .plan_read
            .take()
            .filter(|(at, _)| at.elapsed() < PLAN_READ_FRESH)
            .map(|(_, lives)| lives);
        let before: Vec<Option<String>> = match fresh {
            Some(lives) => lives,
            None => match self.observe_all().await {
                Ok(s) => s.into_iter().map(|s| s.live).collect(),
                Err(_) => vec![None; self.routers.len()],
            },
        };
        let from = run.record.slots.from.clone();
        run.begin_changes(
            format!(
                "{} {} → {to}",
                run.record.operation,
                from.as_deref().unwrap_or("?")
            ),
            from.as_deref(),
            Some(to),
            &before,
        );
        run.mark("journal written");
        // The journal's fenced write is refused once the lock is lost: no router command then.
        if let Some(why) = run.lock.as_ref().and_then(|g| g.lost()) {
            return Err(format!("LOCK LOST, no router was changed: {why}"));
        }
        run.mark("command sent");
        let mut results: Vec<Option<std::result::Result<(), String>>> =
            vec![None; self.routers.len()];
        match self.env.fleet {
            crate::config::FleetOrder::Sequential => {
                for (i, r) in self.routers.iter().enumerate() {
                    let res = r.switch_live(to).await.map_err(|e| format!("{e:#}"));
                    let failed = res.is_err();
                    run.journal_router(i, if failed { "failed" } else { "changed" });
                    results[i] = Some(res);
                    if failed {
                        break;
                    }
                }
            }
            crate::config::FleetOrder::Parallel => {
                let all =
                    futures_util::future::join_all(self.routers.iter().map(|r| r.switch_live(to)))
                        .await;
                for (i, res) in all.into_iter().enumerate() {
                    run.journal_router(i, if res.is_ok() { "changed" } else { "failed" });
                    results[i] = Some(res.map_err(|e| format!("{e:#}")));
                }
            }
        }
        let failures: Vec<String> = self
            .routers
            .iter()
            .zip(&results)
            .filter_map(|(r, res)| match res {
                Some(Err(e)) => Some(format!(
                    "router `{}` refused the switch to `{to}`: {e}",
                    r.name()
                )),
                _ => None,
            })
            .collect();
        if failures.is_empty() {
            return Ok(());
        }
        let mut msg = failures.join("; ");
        let mut stuck = Vec::new();
        for (i, ((r, res), back)) in self.routers.iter().zip(&results).zip(&before).enumerate() {
            let Some(back) = back.as_deref().filter(|b| *b != to) else {
                continue;
            };
            // A router that refused may still have changed (a script that switched, then
            // failed to reload): read it, and put back every router that now serves `to`.
            let changed = match res {
                Some(Ok(())) => true,
                Some(Err(_)) => crate::router::observe_within(r.as_ref(), r.observe_timeout())
                    .await
                    .is_ok_and(|s| s.live.as_deref() == Some(to)),
                None => false,
            };
            if !changed {
                continue;
            }
            let res = r.switch_live(back).await;
            // The router's own state decides, not the command's exit: a script may fail after
            // switching.
            let shows_back = res.is_ok()
                || crate::router::observe_within(r.as_ref(), r.observe_timeout())
                    .await
                    .is_ok_and(|s| s.live.as_deref() == Some(back));
            match (res, shows_back) {
                (Ok(()), _) => {
                    run.journal_router(i, "reverted");
                    msg.push_str(&format!("; `{}` switched back to `{back}`", r.name()));
                }
                (Err(e), true) => {
                    run.journal_router(i, "reverted");
                    msg.push_str(&format!(
                        "; `{}` switched back to `{back}` (it shows `{back}`, though it said: \
                         {e:#})",
                        r.name()
                    ));
                }
                (Err(e), false) => {
                    run.journal_router(i, "revert-failed");
                    stuck.push(r.name().to_string());
                    msg.push_str(&format!(
                        "; `{}` could NOT be switched back to `{back}`: {e:#}",
                        r.name()
                    ));
                }
            }
        }
        // Where each one ended, read again: the verdict's first words say so when they do not
        // agree.
        let (now, agree) = self.where_routers_are_agreeing().await;
        msg.push_str(&format!("; now {now}"));
        if !stuck.is_empty() || !agree {
            let odd = if stuck.is_empty() {
                String::new()
            } else {
                format!(" ({} not put back)", stuck.join(", "))
            };
            msg = format!("ROUTERS DISAGREE{odd}: {msg}");
        }
        Err(msg)
    }

    /// Each router's live slot, read now ("`edge-1` → blue, `edge-2` → green"), and whether
    /// they all show the same one.
    pub(super) async fn where_routers_are_agreeing(&self) -> (String, bool) {
        let mut lives = Vec::new();
        let mut parts = Vec::new();
        for r in &self.routers {
            match crate::router::observe_within(r.as_ref(), r.observe_timeout()).await {
                Ok(s) => {
                    parts.push(format!(
                        "`{}` → {}",
                        r.name(),
                        s.live.as_deref().unwrap_or("nothing")
                    ));
                    lives.push(Some(s.live));
                }
                Err(e) => {
                    parts.push(format!("`{}` unreadable ({e})", r.name()));
                    lives.push(None);
                }
            }
        }
        let agree = lives.windows(2).all(|w| w[0] == w[1]) && lives.iter().all(Option::is_some);
        (parts.join(", "), agree)
    }

    /// Each router's live slot, read now: "`edge-1` → blue, `edge-2` → green".
    pub(super) async fn where_routers_are(&self) -> String {
        self.where_routers_are_agreeing().await.0
    }

    pub(super) async fn apply_switch(
        &self,
        run: &mut Run<'_>,
        to: &str,
        from: Option<&str>,
        preview: Option<&str>,
    ) -> std::result::Result<(), String> {
        run.step(Step::Apply, format!("switching live to `{to}`"));
        if let Err(e) = self.switch_routers(run, to).await {
            run.done(Step::Apply, false, e.clone());
            return Err(e);
        }
        run.mark("routers answered");
        // A swap exchanges: the old live becomes the preview (as Azure's swap does).
        if preview == Some(to)
            && let Some(f) = from
        {
            for r in &self.routers {
                if r.supports(crate::router::Verb::SetPreview)
                    && let Err(e) = r.set_preview(f).await
                {
                    tracing::warn!("router `{}` kept its preview: {e:#}", r.name());
                }
            }
        }
        run.done(Step::Apply, true, format!("routers switched to `{to}`"));
        Ok(())
    }

    pub(super) async fn verify_switch(
        &self,
        run: &mut Run<'_>,
        to: &str,
        to_version: Option<&str>,
    ) -> std::result::Result<(), String> {
        run.step(Step::Verify, "reading the routers back");
        let deadline = Instant::now() + self.env.verify_timeout;
        loop {
            match self.observe_all().await {
                Ok(states) if states.iter().all(|s| s.live.as_deref() == Some(to)) => break,
                Ok(states) if Instant::now() >= deadline => {
                    let seen = self.lives(&states, "shows");
                    let why = format!(
                        "the router accepted the switch but did not change: {} live after {}",
                        seen.join(", "),
                        crate::timefmt::millis(self.env.verify_timeout)
                    );
                    run.done(Step::Verify, false, why.clone());
                    return Err(why);
                }
                Err(e) if Instant::now() >= deadline => {
                    let why = format!("cannot read the routers back: {e:#}");
                    run.done(Step::Verify, false, why.clone());
                    return Err(why);
                }
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        // The environment's public URL, and each router's own (a fleet of frontends).
        let mut urls: Vec<&str> = Vec::new();
        for u in self
            .env
            .public_url
            .as_deref()
            .into_iter()
            .chain(self.env.routers.iter().filter_map(|r| r.public_url()))
        {
            if !urls.contains(&u) {
                urls.push(u);
            }
        }
        let Some(want) = to_version.filter(|_| !urls.is_empty()) else {
            run.done(Step::Verify, true, format!("routers show `{to}` live"));
            run.mark("verified");
            return Ok(());
        };
        let pointer = self.env.slot(to).and_then(|s| s.version_pointer.clone());
        for url in &urls {
            let vurl = crate::probe::version_url_behind(&self.env, url);
            loop {
                let p = self.prober.probe_url(&vurl, pointer.as_deref()).await;
                let got = p.version.as_ref().map(|v| v.version.clone());
                if got.as_deref() == Some(want) {
                    break;
                }
                if Instant::now() >= deadline {
                    let why = format!(
                        "the router shows `{to}` live but {vurl} serves {} (wanted {want})",
                        got.map_or_else(
                            || p.error.map_or("nothing".into(), |e| e.to_string()),
                            |g| format!("version {g}")
                        )
                    );
                    run.done(Step::Verify, false, why.clone());
                    return Err(why);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let what = if urls.len() == 1 {
            "public URL serves".to_string()
        } else {
            format!("all {} public URLs serve", urls.len())
        };
        run.done(
            Step::Verify,
            true,
            format!("routers show `{to}`; {what} {want}"),
        );
        run.mark("verified");
        Ok(())
    }
}
