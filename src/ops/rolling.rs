//! Rolling deploys: node by node, drain → deploy → smoke test → undrain.

use super::simple::sessions_of;
use super::*;

impl Engine {
    /// Drain or undrain (`kind`) one node of a rolling deploy on every router, journalled;
    /// the error names the node by its `label`.
    async fn node_change(
        &self,
        run: &mut Run<'_>,
        kind: OpKind,
        label: &str,
    ) -> std::result::Result<(), String> {
        let verb = kind.name();
        run.step(Step::Apply, format!("{label}: {verb}ing"));
        let changed = self.apply_all(run, &kind, &[]).await;
        run.end_changes();
        changed.map_err(|e| format!("{label}: the routers would not {verb} it: {e}"))
    }

    /// A rolling deploy over the nodes of a slot. Stops at the first failure, leaving that node
    /// out (drained) and the rest serving.
    pub(super) async fn rolling(
        &self,
        mut run: Run<'_>,
        slot_name: &str,
        version: Option<&str>,
    ) -> Outcome {
        let Some(rolling) = self.env.rolling.clone() else {
            let why = format!(
                "`{}` has no [environment.rolling] section: add a `deploy` command",
                self.env.name
            );
            return run.fail(Step::Plan, Verdict::Refused, why);
        };
        let Some(slot) = self.env.slot(slot_name).cloned() else {
            let why = format!("there is no slot `{slot_name}`");
            return run.fail(Step::Plan, Verdict::Refused, why);
        };
        if slot.nodes.is_empty() {
            let why = format!(
                "slot `{slot_name}` has no nodes; list them as `nodes = [...]` to roll them"
            );
            return run.fail(Step::Plan, Verdict::Refused, why);
        }
        run.record.slots.to = Some(slot_name.to_string());
        run.record.versions.to_version = version.map(str::to_string);
        let n = slot.nodes.len();
        run.done(
            Step::Plan,
            true,
            format!("{n} nodes of `{slot_name}`, one at a time"),
        );
        for (i, node) in slot.nodes.iter().enumerate() {
            let label = format!("{} ({}/{n})", node.name, i + 1);
            let target = Target::node(slot_name, &node.name);
            // Drain, and wait for zero sessions.
            let drained = self
                .node_change(&mut run, OpKind::Drain(target.clone()), &label)
                .await;
            if let Err(why) = drained {
                run.done(Step::Apply, false, why.clone());
                return run.finish(
                    Verdict::Failed,
                    format!("{why}; stopped before touching it"),
                );
            }
            let deadline = Instant::now() + rolling.drain_timeout;
            let drained_how = loop {
                let sessions = self
                    .observe_all()
                    .await
                    .ok()
                    .and_then(|s| sessions_of(&target, &s));
                let Some(n) = sessions else {
                    // The router does not count in-flight requests: give them the grace period
                    // (at most drain_timeout) instead of pretending they are zero.
                    let grace = rolling.drain_timeout.min(UNKNOWN_SESSIONS_GRACE);
                    run.note(
                        Step::Apply,
                        format!(
                            "{label}: drained; the router does not count in-flight requests, waiting {}",
                            crate::timefmt::millis(grace)
                        ),
                    );
                    tokio::time::sleep(grace).await;
                    break format!(
                        "in-flight unknown, waited {}",
                        crate::timefmt::millis(grace)
                    );
                };
                if n == 0 {
                    break "0 in flight".to_string();
                }
                if Instant::now() >= deadline {
                    tracing::warn!(
                        "{label}: still {n} in flight after the drain timeout; going on"
                    );
                    break format!("still {n} in flight after drain_timeout");
                }
                run.note(Step::Apply, format!("{label}: drained, {n} in flight"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            run.done(
                Step::Apply,
                true,
                format!("{label}: drained ({drained_how})"),
            );
            // Deploy, then the smoke test. A failure in either leaves this node drained.
            let vars = [
                ("env", self.env.name.as_str()),
                ("slot", slot_name),
                ("node", node.name.as_str()),
                ("address", node.address.as_str()),
                ("version", version.unwrap_or("")),
            ];
            run.step(Step::Apply, format!("{label}: deploying"));
            let deployed =
                match run_hook(&template(&rolling.deploy, &vars), rolling.hook_timeout).await {
                    Err(e) => Err((Step::Apply, format!("{label}: deploy failed: {e}"))),
                    Ok(()) => {
                        run.done(Step::Apply, true, format!("{label}: deployed"));
                        run.step(Step::Verify, format!("{label}: smoke test"));
                        self.smoke_test(&slot, node, &label, version, &rolling, &vars)
                            .await
                            .map_err(|why| (Step::Verify, why))
                    }
                };
            if let Err((step, why)) = deployed {
                run.done(step, false, why.clone());
                return run.finish(
                    Verdict::Failed,
                    format!(
                        "{why}; `{}` stays drained, the other nodes keep serving",
                        node.name
                    ),
                );
            }
            run.done(
                Step::Verify,
                true,
                format!(
                    "{label}: healthy{}",
                    version.map(|v| format!(", runs {v}")).unwrap_or_default()
                ),
            );
            // Back in.
            let undrained = self
                .node_change(&mut run, OpKind::Undrain(target.clone()), &label)
                .await;
            if let Err(why) = undrained {
                return run.fail(Step::Apply, Verdict::Failed, why);
            }
            run.done(Step::Apply, true, format!("{label}: back in service"));
        }
        run.finish(
            Verdict::Done,
            format!("all {n} nodes of `{slot_name}` deployed and back in service"),
        )
    }

    /// A freshly deployed node must answer healthy (with `version`, when one is given) within
    /// `smoke_timeout`; then the optional `smoke` command must pass.
    pub(super) async fn smoke_test(
        &self,
        slot: &crate::config::Slot,
        node: &crate::config::Node,
        label: &str,
        version: Option<&str>,
        rolling: &crate::config::Rolling,
        vars: &[(&str, &str)],
    ) -> std::result::Result<(), String> {
        let base = node.address.as_str();
        let node_slot = crate::config::Slot {
            health_url: format!("{base}{}", path_of(&slot.health_url, slot.address.as_str())),
            version_url: format!(
                "{base}{}",
                path_of(&slot.version_url, slot.address.as_str())
            ),
            address: node.address.clone(),
            nodes: vec![],
            ..slot.clone()
        };
        let deadline = Instant::now() + rolling.smoke_timeout;
        loop {
            let p = self.prober.probe_slot(&node_slot).await;
            let got = p.version.as_ref().map(|v| v.version.clone());
            if p.health.is_serving() && (version.is_none() || got.as_deref() == version) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{label}: smoke test failed: health {}{}, version {} (wanted {})",
                    p.health.label(),
                    p.error.map(|e| format!(" ({e})")).unwrap_or_default(),
                    got.unwrap_or_else(|| "?".into()),
                    version.unwrap_or("any")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if rolling.smoke.is_empty() {
            return Ok(());
        }
        run_hook(&template(&rolling.smoke, vars), rolling.hook_timeout)
            .await
            .map_err(|e| format!("{label}: smoke command failed: {e}"))
    }
}

/// The path part of `url` (after the slot's `address`, or after the host).
pub(super) fn path_of(url: &str, address: &str) -> String {
    if let Some(rest) = url.strip_prefix(address) {
        return rest.to_string();
    }
    let after_scheme = url.split_once("://").map_or(url, |(_, r)| r);
    after_scheme
        .find('/')
        .map_or("/".into(), |i| after_scheme[i..].to_string())
}
