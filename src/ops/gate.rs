//! The gate: may a slot go live? Pure, so the confirm dialog shows exactly what the engine
//! checks.

use super::*;

/// One gate check and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Recent health and versions per slot, the gate's input.
#[derive(Debug, Clone, Default)]
pub struct GateInput {
    /// Newest last.
    pub health: BTreeMap<String, Vec<Health>>,
    pub versions: BTreeMap<String, Option<String>>,
    /// Slots the routers' own health checks vouch for, with what they said: for these, the
    /// newest check of cutover's own stands for the streak (see [`Engine::vouchers`]).
    pub vouched: BTreeMap<String, String>,
}

/// The plan of a switch: from, to, and what the gate says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SwitchPlan {
    pub from: Option<String>,
    pub to: String,
    #[serde(flatten)]
    pub versions: Versions,
    pub checks: Vec<Check>,
}

impl SwitchPlan {
    pub fn passes(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
    pub fn failed_checks(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }
}

/// The gate step's line when every check passed: which evidence the health check used.
pub(super) fn gate_passed(plan: &SwitchPlan) -> String {
    match plan.checks.first() {
        Some(c) if c.name == "health" => format!("all checks passed ({})", c.detail),
        _ => "all checks passed".into(),
    }
}

/// The gate: may `to` go live? Pure, so the confirm dialog shows exactly what the engine checks.
pub fn gate(
    need: usize,
    from: Option<&str>,
    to: &str,
    input: &GateInput,
    same_version_check: bool,
) -> SwitchPlan {
    let hist = input.health.get(to).cloned().unwrap_or_default();
    let recent: Vec<Health> = hist.iter().rev().take(need).rev().copied().collect();
    let vouched = input.vouched.get(to);
    let healthy = match vouched {
        Some(_) => hist.last().is_some_and(|h| h.is_serving()),
        None => recent.len() >= need && recent.iter().all(|h| h.is_serving()),
    };
    let symbols: Vec<&str> = recent.iter().map(|h| h.symbol()).collect();
    let streak = hist
        .iter()
        .rev()
        .take_while(|h| h.is_serving())
        .count()
        .min(need);
    let mut checks = vec![Check {
        name: "health",
        ok: healthy,
        detail: if let (true, Some(v)) = (healthy, vouched) {
            format!("healthy now, and {v}")
        } else if healthy {
            format!("last {need} checks healthy")
        } else {
            format!(
                "`{to}` needs {need} healthy checks in a row: {streak} of {need} so far ({})",
                if symbols.is_empty() {
                    "none yet".into()
                } else {
                    symbols.join(" ")
                }
            )
        },
    }];
    let to_version = input.versions.get(to).cloned().flatten();
    let from_version = from.and_then(|f| input.versions.get(f).cloned().flatten());
    checks.push(Check {
        name: "version",
        ok: to_version.is_some(),
        detail: match &to_version {
            Some(v) => format!("`{to}` runs {v}"),
            None => format!("`{to}`'s version is unknown (its version endpoint did not answer)"),
        },
    });
    if same_version_check {
        let same = to_version.is_some() && to_version == from_version;
        checks.push(Check {
            name: "new version",
            ok: !same,
            // Passes when a version is unknown: this check only catches a swap to what is
            // already live, and refusing would block swapping away from a live slot whose
            // version endpoint is down, when a swap is most needed. It says it could not
            // compare; the version check above refuses an unknown new version on its own.
            detail: match (&to_version, from, &from_version) {
                _ if same => format!(
                    "`{to}` runs the same version as live ({})",
                    to_version.clone().unwrap_or_default()
                ),
                (None, _, _) => format!("`{to}`'s version unknown: cannot compare"),
                (_, None, _) => "no live slot known: cannot compare".into(),
                (_, Some(_), None) => "live slot's version unknown: cannot compare".into(),
                _ => "differs from live".into(),
            },
        });
    }
    SwitchPlan {
        from: from.map(str::to_string),
        to: to.to_string(),
        versions: Versions {
            from_version,
            to_version,
        },
        checks,
    }
}

/// The one-key rollback's extra check: the way back is the version the slot served when it
/// was live, not whatever was deployed there since.
pub fn way_back_check(to: &str, plan: &SwitchPlan, memory: &crate::state::EnvMemory) -> Check {
    let then = memory.previous_live_version.as_deref();
    let now = plan.versions.to_version.as_deref();
    let ok = then.is_some() && then == now;
    Check {
        name: "way back",
        ok,
        detail: match (then, now) {
            (Some(t), Some(n)) if t == n => format!("`{to}` still runs {t}, as when it was live"),
            (Some(t), Some(n)) => {
                format!("`{to}` now runs {n}, not the {t} it served when it was live")
            }
            (None, _) => format!("the version `{to}` served when it was live is not recorded"),
            (Some(t), None) => format!("`{to}`'s version is unknown (it served {t} when live)"),
        },
    }
}

impl<'a> Run<'a> {
    /// End the gate step on `plan`: passed (saying on what evidence) or forced past, and the
    /// run goes on; or refused, and the refusal is the operation's outcome. `how_to_force`
    /// names the face's way to force.
    pub(super) fn judge_gate(
        mut self,
        plan: &SwitchPlan,
        force: bool,
        how_to_force: &str,
    ) -> Result<Run<'a>, Box<Outcome>> {
        if plan.passes() {
            self.done(Step::Gate, true, gate_passed(plan));
            return Ok(self);
        }
        let failed: Vec<String> = plan
            .failed_checks()
            .iter()
            .map(|c| c.detail.clone())
            .collect();
        if !force {
            let why = format!(
                "refused: {}; to do it anyway, force it ({how_to_force})",
                failed.join("; ")
            );
            return Err(Box::new(self.fail(Step::Gate, Verdict::Refused, why)));
        }
        self.done(
            Step::Gate,
            true,
            format!("FORCED past: {}", failed.join("; ")),
        );
        Ok(self)
    }
}
