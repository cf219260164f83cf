//! Warm-up before a switch, the smoke test after it, and the after-hooks when it ends.

use super::*;
use crate::hooks::Stage;

impl Engine {
    /// The warm-up of `to`: its `warmup_paths` on its own address (each node's, for a slot
    /// with nodes), then `warmup_command`, all within `warmup_timeout`.
    pub(super) async fn warm_up(
        &self,
        run: &mut Run<'_>,
        to: &str,
        version: Option<&str>,
    ) -> std::result::Result<String, String> {
        let warmup = &self.env.hooks.warmup;
        let (slot, deadline) = self.stage_start(to, warmup)?;
        let mut parts = Vec::new();
        if !warmup.paths.is_empty() {
            let addresses: Vec<String> = if slot.nodes.is_empty() {
                vec![slot.address.to_string()]
            } else {
                slot.nodes.iter().map(|n| n.address.to_string()).collect()
            };
            let tx = run.tx.clone();
            let mut note = |m: String| {
                let _ = tx.send(Progress::Step {
                    step: Step::Warmup,
                    ok: None,
                    message: m,
                });
            };
            parts.push(
                crate::hooks::warm_paths(&warmup.paths, &addresses, deadline, &mut note).await?,
            );
        }
        if !warmup.command.is_empty() {
            let argv = self.slot_command(&warmup.command, slot, version, &[]);
            run.note(Step::Warmup, "running warmup_command");
            parts.push(
                command_before(
                    &argv,
                    deadline,
                    &self.env.hooks.pass_env,
                    "warmup_command",
                    "warmup_timeout",
                )
                .await?,
            );
        }
        Ok(parts.join("; "))
    }

    /// The smoke test of the new live slot `to`: `smoke_paths` through the public URL (or on
    /// the slot when there is none), then the `smoke` command, within `smoke_timeout`.
    pub(super) async fn smoke_test_live(
        &self,
        to: &str,
        version: Option<&str>,
    ) -> std::result::Result<String, String> {
        let hooks = &self.env.hooks;
        let (slot, deadline) = self.stage_start(to, &hooks.smoke)?;
        let mut parts = Vec::new();
        if !hooks.smoke.paths.is_empty() {
            let base = self
                .env
                .public_url
                .as_deref()
                .unwrap_or(slot.address.as_str());
            parts.push(crate::hooks::smoke_paths(&hooks.smoke.paths, base, deadline).await?);
        }
        if !hooks.smoke.command.is_empty() {
            let public_url = self.env.public_url.as_deref().unwrap_or("");
            let argv = self.slot_command(
                &hooks.smoke.command,
                slot,
                version,
                &[("public_url", public_url)],
            );
            parts.push(
                command_before(&argv, deadline, &hooks.pass_env, "smoke", "smoke_timeout").await?,
            );
        }
        Ok(parts.join("; "))
    }

    /// The slot `to` of a warm-up or smoke test starting now, and when its `stage` must end;
    /// or what is wrong.
    fn stage_start<P>(
        &self,
        to: &str,
        stage: &Stage<P>,
    ) -> std::result::Result<(&crate::config::Slot, Instant), String> {
        let slot = self
            .env
            .slot(to)
            .ok_or_else(|| format!("there is no slot `{to}`"))?;
        Ok((slot, Instant::now() + stage.timeout))
    }

    /// `command` with `{env}`, `{slot}`, `{address}`, `{version}` and `extra` filled in.
    fn slot_command(
        &self,
        command: &[String],
        slot: &crate::config::Slot,
        version: Option<&str>,
        extra: &[(&str, &str)],
    ) -> Vec<String> {
        let mut vars = vec![
            ("env", self.env.name.as_str()),
            ("slot", slot.name.as_str()),
            ("address", slot.address.as_str()),
            ("version", version.unwrap_or("")),
        ];
        vars.extend_from_slice(extra);
        crate::hooks::fill(command, &vars)
    }

    /// The end of a swap or rollback: the after-hook its result calls for (`on_done` for a
    /// swap done, `on_rollback` for a rollback done or an automatic rollback, `on_failed` for
    /// a failure or an alarm; none for a refusal or a cancellation), then the audit record,
    /// `Finished`, and the lock. The hook cannot change the result; its failure is recorded.
    pub(super) async fn conclude(
        &self,
        mut out: Outcome,
        held: &Arc<std::sync::Mutex<Option<Held>>>,
    ) -> Outcome {
        let Some(Held { tx, lock }) = held.lock().ok().and_then(|mut h| h.take()) else {
            return out;
        };
        let hooks = &self.env.hooks;
        let rollback = out.record.operation.starts_with("rollback");
        let (key, argv): (&str, &[String]) = match out.verdict {
            Verdict::Done if rollback => ("on_rollback", &hooks.after.on_rollback),
            Verdict::Done => ("on_done", &hooks.after.on_done),
            Verdict::RolledBack => ("on_rollback", &hooks.after.on_rollback),
            Verdict::Failed | Verdict::Alarm => ("on_failed", &hooks.after.on_failed),
            Verdict::Refused | Verdict::Cancelled => ("", &[]),
        };
        if !argv.is_empty() {
            let started = Instant::now();
            let _ = tx.send(Progress::Step {
                step: Step::Hook,
                ok: None,
                message: format!("running {key}"),
            });
            // `{live}`: read from the routers, only when the command asks for it.
            let live = if crate::hooks::uses(argv, "live") {
                match self.observe_all().await {
                    Ok(states) => self.agreed_live(&states).ok().flatten().unwrap_or_default(),
                    Err(_) => String::new(),
                }
            } else {
                String::new()
            };
            let r = &out.record;
            let argv = crate::hooks::fill(
                argv,
                &[
                    ("env", self.env.name.as_str()),
                    ("operation", r.operation.as_str()),
                    ("id", r.id.as_str()),
                    ("from", r.slots.from.as_deref().unwrap_or("")),
                    ("to", r.slots.to.as_deref().unwrap_or("")),
                    ("version", r.versions.to_version.as_deref().unwrap_or("")),
                    ("result", out.verdict.label()),
                    ("message", r.message.as_str()),
                    ("live", live.as_str()),
                ],
            );
            let (ok, detail) = match crate::hooks::run_command(
                &argv,
                hooks.after.timeout,
                &hooks.pass_env,
            )
            .await
            {
                Ok(said) if said.is_empty() => (true, format!("{key} done")),
                Ok(said) => (true, format!("{key} done: {said}")),
                Err(e) => (false, format!("{key} failed (the result stands): {e}")),
            };
            let detail = crate::audit::redact(&detail);
            out.record.steps.push(StepRecord {
                step: Step::Hook.label().into(),
                ok,
                ms: started.elapsed().as_millis() as u64,
                detail: detail.clone(),
            });
            let _ = tx.send(Progress::Step {
                step: Step::Hook,
                ok: Some(ok),
                message: detail,
            });
        }
        self.record_result(&out);
        let _ = tx.send(Progress::Finished(out.clone()));
        // The lock goes last: after the record, so the next holder's records follow this one.
        drop(lock);
        out
    }
}

/// Run a hook command (`key`, for messages) with what is left of `deadline` (set by
/// `limit`); its last output lines, or why it failed.
pub(super) async fn command_before(
    argv: &[String],
    deadline: Instant,
    pass_env: &[String],
    key: &str,
    limit: &str,
) -> std::result::Result<String, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(format!("no time left for `{key}` within {limit}"));
    }
    let said = crate::hooks::run_command(argv, left, pass_env)
        .await
        .map_err(|e| format!("{key}: {e}"))?;
    Ok(if said.is_empty() {
        format!("{key} passed")
    } else {
        format!("{key} passed: {said}")
    })
}
