//! Confirm dialogs: what each action asks, the live gate, and starting the operation.

use super::*;

impl App {
    pub(super) fn ask(&mut self, env: usize, kind: OpKind, title: String) {
        let Some(e) = self.envs.get(env) else { return };
        if e.op_running() {
            // A watch may be running: a new swap or rollback cancels it; anything else waits.
            let watching =
                e.op.as_ref()
                    .is_some_and(|o| o.steps.iter().any(|(s, _, _)| *s == Step::Watch));
            if !(watching && matches!(kind, OpKind::Rollback | OpKind::Swap { .. })) {
                let why = if watching {
                    format!(
                        "a cutover is being watched: wait for the watch to end, or press {} to \
                         roll back",
                        self.keymap.first_key(Action::Rollback)
                    )
                } else {
                    OP_RUNNING.to_string()
                };
                self.status = Some((Level::Warn, why));
                return;
            }
        }
        let mode = e.confirm_mode();
        self.overlay = Overlay::Confirm(Confirm {
            env,
            what: Confirmed::Op(kind),
            title,
            why: None,
            typed: String::new(),
            mode,
        });
    }

    pub(super) fn ask_drill(&mut self, env: usize) {
        let Some(e) = self.envs.get_mut(env) else {
            return;
        };
        if let Some(d) = &e.drill {
            if d.done.is_some() {
                e.drill = None; // D closes a finished drill's chart
            } else {
                self.status = Some((
                    Level::Warn,
                    "a drill is running on this environment; wait for it to end".into(),
                ));
            }
            return;
        }
        if e.op_running() {
            self.status = Some((Level::Warn, OP_RUNNING.into()));
            return;
        }
        let why = if e.config.production && !e.config.allow_drill {
            Some(
                "a production environment: set allow_drill = true for it, or use `cutover drill --yes-really`",
            )
        } else if e.config.public_url.is_none() {
            Some("it has no public_url to send load to; set one in the config")
        } else {
            None
        };
        if let Some(why) = why {
            self.status = Some((
                Level::Warn,
                format!("no drill on `{}`: {why}", e.config.name),
            ));
            return;
        }
        let mode = e.confirm_mode();
        self.overlay = Overlay::Confirm(Confirm {
            env,
            what: Confirmed::Drill,
            title: format!("Drill: {DRILL_PAIRS} swap+rollback pairs under load"),
            why: None,
            typed: String::new(),
            mode,
        });
    }

    /// `s`: swap live and preview, or make the selected idle slot live.
    pub(super) fn ask_swap(&mut self, env: usize) {
        let Some(e) = self.envs.get(env) else { return };
        let Some(live) = e.live() else {
            self.status = Some((
                Level::Warn,
                "the router has not said which slot is live yet; wait for its first answer, \
                 or name the slot with :swap SLOT"
                    .into(),
            ));
            return;
        };
        let selected = e.slots.get(self.selected_slot).map(|s| s.name.as_str());
        let to = match selected {
            Some(s) if s != live && e.preview_slot() != Some(s) => Some(s),
            _ => e.preview_slot(),
        };
        let Some(to) = to.map(str::to_string) else {
            self.status = Some((
                Level::Warn,
                format!(
                    "no preview slot: select the slot to make live, then press {}",
                    self.keymap.first_key(Action::Swap)
                ),
            ));
            return;
        };
        self.ask_swap_to(env, &to);
    }

    /// Ask to make `to` live, with the gate's verdict.
    pub(super) fn ask_swap_to(&mut self, env: usize, to: &str) {
        let Some(e) = self.envs.get(env) else { return };
        let live = e.live().map(str::to_string);
        self.ask(
            env,
            OpKind::Swap {
                to: Some(to.to_string()),
            },
            format!("Swap: {} → {to}", live.as_deref().unwrap_or("?")),
        );
    }

    pub(super) fn ask_drain(&mut self, env: usize, slot: &str, drain: bool) {
        let (kind, verb) = if drain {
            (OpKind::Drain(Target::slot(slot)), "Drain")
        } else {
            (OpKind::Undrain(Target::slot(slot)), "Undrain")
        };
        self.ask(env, kind, format!("{verb} `{slot}`"));
    }

    pub(super) fn ask_maintenance(&mut self, env: usize, on: bool) {
        let title = if on {
            "Maintenance ON (503 page on the live URL)"
        } else {
            "Maintenance OFF"
        };
        let kind = OpKind::Maintenance {
            on,
            mode: MaintenanceMode::Page,
        };
        self.ask(env, kind, title.into());
    }

    pub(super) fn ask_pause(&mut self, env: usize, on: bool) {
        let title = if on {
            "PAUSE new live requests (held until resumed)"
        } else {
            "RESUME: release the held requests"
        };
        self.ask(env, OpKind::Pause { on }, title.into());
    }

    /// The confirm dialog of a canary to `slot`: with `plan`'s steps and interval where given
    /// (`:canary SLOT STEPS INTERVAL`), else the environment's.
    pub(super) fn ask_canary(&mut self, env: usize, slot: &str, plan: CanaryPlan) {
        let Some(e) = self.envs.get(env) else { return };
        if e.live() == Some(slot) {
            self.status = Some((Level::Warn, format!("`{slot}` is already live")));
            return;
        }
        let shown = if plan.steps.is_empty() {
            &e.config.canary.steps
        } else {
            &plan.steps
        };
        let steps = shown
            .iter()
            .map(|s| match s.percent() {
                Some(p) => format!("{p} %"),
                None => "pause".into(),
            })
            .collect::<Vec<_>>()
            .join(" → ");
        let title = format!(
            "Canary to `{slot}`: {steps}, {} per step",
            crate::timefmt::millis(plan.interval.unwrap_or(e.config.canary.pause))
        );
        let kind = OpKind::Canary {
            to: slot.to_string(),
            steps: plan.steps,
            interval: plan.interval,
        };
        self.ask(env, kind, title);
    }

    /// Promote, pause or resume the canary running on `env` (no dialog: each is undone by
    /// the next key, and the rollback key aborts).
    pub(super) fn steer_canary(&mut self, env: usize, promote: bool) -> Vec<Effect> {
        let Some(op) = self
            .envs
            .get(env)
            .and_then(|e| e.op.as_ref())
            .filter(|o| o.canary_in_steps())
        else {
            self.status = Some((Level::Warn, "no canary is running here".into()));
            return vec![];
        };
        let ask = match (promote, op.canary_waiting()) {
            (true, _) => "promote",
            (false, true) => "resume",
            (false, false) => "pause",
        };
        let msg = match ask {
            "promote" => format!("promoting the canary #{}: on to its next step", op.id),
            "resume" => format!("resuming the canary #{}", op.id),
            _ => format!(
                "pausing the canary #{}: its countdown waits, its analysis goes on",
                op.id
            ),
        };
        self.status = Some((Level::Info, msg));
        vec![Effect::SteerCanary { env, ask }]
    }

    pub(super) fn ask_rolling(&mut self, env: usize, slot: &str) {
        let kind = OpKind::Rolling {
            slot: slot.to_string(),
            version: None,
        };
        self.ask(
            env,
            kind,
            format!("Rolling deploy of `{slot}`, node by node"),
        );
    }

    /// `r`: during a swap's watch and its rollback window, roll back at once when the way back
    /// is safe (one-key rollback); otherwise ask, saying why.
    pub(super) fn ask_rollback(&mut self, env: usize) -> Vec<Effect> {
        let Some(e) = self.envs.get(env) else {
            return vec![];
        };
        // During a canary's steps the rollback key is its abort: 100 % back on the live slot.
        // Once its last step (the swap) has begun, it is a rollback as after any swap.
        if let Some(op) = e.op.as_ref().filter(|o| o.canary_in_steps()) {
            let msg = format!(
                "ABORTING the canary #{}: 100 % back on the live slot",
                op.id
            );
            self.status = Some((Level::Bad, msg));
            return vec![Effect::StopOp { env }];
        }
        let Some(prev) = e.memory.previous_live.clone() else {
            self.status = Some((
                Level::Warn,
                "nothing to roll back to: no previous live slot recorded".into(),
            ));
            return vec![];
        };
        let live = e.live().map(str::to_string);
        if let Some(op) =
            e.op.as_ref()
                .filter(|o| o.kind == "rollback" && o.verdict.is_none())
        {
            // Pressed twice: one rollback.
            self.status = Some((Level::Warn, format!("already rolling back (#{})", op.id)));
            return vec![];
        }
        let swap_watching = e.op.as_ref().is_some_and(|o| {
            o.kind == "swap"
                && o.verdict.is_none()
                && o.steps.iter().any(|(s, _, _)| *s == Step::Watch)
        });
        // During a swap's watch the last poll may not show the swap yet; the engine reads
        // the routers itself.
        if live.as_deref() == Some(prev.as_str()) && !swap_watching {
            self.status = Some((Level::Warn, format!("`{prev}` is already live")));
            return vec![];
        }
        let free = !e.op_running() || swap_watching;
        let title = format!("Rollback: {} → {prev}", live.as_deref().unwrap_or("?"));
        match e.one_key(self.now) {
            Ok((slot, version, _)) if free => {
                let req = OpRequest {
                    one_key: true,
                    ..OpRequest::new(OpKind::Rollback)
                };
                let msg = format!("ROLLING BACK to {slot} (v{version}) — one-key rollback");
                self.status = Some((Level::Bad, msg));
                let title = format!(
                    "One-key rollback: {} → {slot}",
                    live.as_deref().unwrap_or("?")
                );
                self.start_op(env, title, "", req)
            }
            Ok(_) | Err(_) if !free => {
                self.ask(env, OpKind::Rollback, title);
                vec![]
            }
            Ok(_) => vec![],
            Err(why) => {
                self.ask(env, OpKind::Rollback, title);
                if let Overlay::Confirm(c) = &mut self.overlay {
                    c.why = why;
                }
                vec![]
            }
        }
    }

    /// The gate's verdict for a confirm dialog, from the newest polls. It is computed each
    /// time the dialog is drawn or a key is pressed, so it follows the slot while the dialog
    /// is open: `y` works the moment the gate passes, and stops working the moment it fails.
    pub fn confirm_plan(&self, c: &Confirm) -> Option<SwitchPlan> {
        let e = self.envs.get(c.env)?;
        let live = e.live();
        let (to, new_version) = match &c.what {
            // A canary's gate is a swap's to the same slot (the engine judges it so).
            Confirmed::Op(OpKind::Swap { to: Some(to) } | OpKind::Canary { to, .. }) => {
                (to.as_str(), true)
            }
            Confirmed::Op(OpKind::Rollback) => (e.memory.previous_live.as_deref()?, false),
            _ => return None,
        };
        Some(ops::gate(
            e.config.gate_checks,
            live,
            to,
            &e.gate_input(),
            new_version,
        ))
    }

    pub(super) fn on_confirm_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let Overlay::Confirm(c) = &self.overlay else {
            return vec![];
        };
        let gate_ok = self.confirm_plan(c).is_none_or(|p| p.passes());
        let forceable = !gate_ok
            || (matches!(c.what, Confirmed::Op(OpKind::Swap { .. }))
                && self.envs[c.env].warmup_refused());
        let name = self.envs[c.env].config.name.clone();
        let other_holder = self.envs[c.env].locked_by_other().is_some();
        let (mode, typed_ok) = (c.mode, c.typed == name);
        let is_char =
            matches!(k.code, KeyCode::Char(_)) && !k.modifiers.contains(KeyModifiers::CONTROL);
        // While a name is being typed, letters are letters: a bound letter acts only once the
        // name is complete.
        let action = self
            .keymap
            .dialog_action(&k)
            .filter(|_| !(mode == ConfirmMode::TypeName && is_char && !typed_ok));
        let mut go: Option<(bool, bool)> = None; // Some((force, take_over))
        match action {
            Some(Action::Cancel) => {
                self.overlay = Overlay::None;
                self.status = Some((Level::Info, "cancelled".into()));
                return vec![];
            }
            Some(Action::Confirm) if gate_ok && (mode == ConfirmMode::YesNo || typed_ok) => {
                go = Some((false, false))
            }
            Some(Action::Force) if forceable && (mode == ConfirmMode::YesNo || typed_ok) => {
                go = Some((true, false))
            }
            Some(Action::TakeOver) if other_holder && (mode == ConfirmMode::YesNo || typed_ok) => {
                go = Some((!gate_ok, true))
            }
            Some(_) => {}
            None => {
                if let Overlay::Confirm(c) = &mut self.overlay
                    && mode == ConfirmMode::TypeName
                {
                    match k.code {
                        KeyCode::Backspace => {
                            c.typed.pop();
                        }
                        KeyCode::Char(ch) if is_char => c.typed.push(ch),
                        _ => {}
                    }
                }
            }
        }
        let Some((force, take_over)) = go else {
            return vec![];
        };
        let Overlay::Confirm(c) = std::mem::replace(&mut self.overlay, Overlay::None) else {
            return vec![];
        };
        let kind = match c.what {
            Confirmed::Op(k) => k,
            Confirmed::Drill => {
                if let Some(e) = self.envs.get_mut(c.env) {
                    e.drill = Some(DrillView::default());
                }
                self.log(c.env, Level::Info, format!("{} requested", c.title));
                return vec![Effect::RunDrill { env: c.env }];
            }
        };
        let req = OpRequest {
            force,
            watch: true,
            take_over,
            ..OpRequest::new(kind)
        };
        let note = format!(
            "{}{}",
            if force { " (FORCED)" } else { "" },
            if take_over {
                " (taking the lock over)"
            } else {
                ""
            }
        );
        // A canary's events and Op line name it short: its plan was in the dialog and the
        // step timeline shows it (a long title would push each event's news off the line).
        let title = match &req.kind {
            OpKind::Canary { to, .. } => format!("Canary to `{to}`"),
            _ => c.title,
        };
        self.start_op(c.env, title, &note, req)
    }

    /// Start an operation on the screen: a running watch steps aside (superseded; its last
    /// record is still logged under its own title and id).
    pub(super) fn start_op(
        &mut self,
        env: usize,
        title: String,
        note: &str,
        req: OpRequest,
    ) -> Vec<Effect> {
        let Some(e) = self.envs.get_mut(env) else {
            return vec![];
        };
        let gate = e.gate_input();
        if let Some(old) = e.op.take()
            && old.verdict.is_none()
        {
            e.superseded.push(old);
        }
        let line = format!("{title} #{} requested{note}", req.id);
        e.mark(self.now, req.kind.name());
        e.op = Some(OpView {
            id: req.id.clone(),
            kind: req.kind.name(),
            title,
            steps: Vec::new(),
            watching: None,
            watch_inputs: None,
            verdict: None,
            message: String::new(),
            started: self.now,
        });
        self.log(env, Level::Info, line);
        vec![Effect::RunOp { env, req, gate }]
    }
}

/// A canary's plan as the operator typed it (`:canary SLOT [STEPS] [INTERVAL]`); what is left
/// out comes from the environment's config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CanaryPlan {
    pub steps: Vec<crate::model::CanaryStep>,
    pub interval: Option<std::time::Duration>,
}

impl CanaryPlan {
    /// Read the words after `:canary SLOT`: a comma list of steps (`10,pause,50,100`) and a
    /// duration (`30s`), in either order; each at most once. The message says what is wrong.
    pub fn parse(words: &[&str]) -> Result<CanaryPlan, String> {
        let mut plan = CanaryPlan::default();
        for w in words {
            if let Ok(d) = humantime::parse_duration(w) {
                if plan.interval.replace(d).is_some() {
                    return Err("give one interval".into());
                }
                if d.is_zero() {
                    return Err("the interval must be more than zero".into());
                }
            } else {
                if !plan.steps.is_empty() {
                    return Err(format!(
                        "`{w}`: give the steps once, as one list (5,25,100)"
                    ));
                }
                let parts: Vec<&str> = w.split(',').collect();
                plan.steps = crate::config::parse_canary_steps(&parts)?;
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::CanaryPlan;
    use crate::model::CanaryStep::{Pause, Weight};
    use std::time::Duration;

    #[test]
    fn a_typed_canary_plan_reads_steps_and_interval_in_either_order() {
        let want = CanaryPlan {
            steps: vec![Weight(10), Pause, Weight(100)],
            interval: Some(Duration::from_secs(30)),
        };
        assert_eq!(
            CanaryPlan::parse(&["10,pause,100", "30s"]),
            Ok(want.clone())
        );
        assert_eq!(CanaryPlan::parse(&["30s", "10%,pause,100%"]), Ok(want));
        assert_eq!(CanaryPlan::parse(&[]), Ok(CanaryPlan::default()));
        for (words, says) in [
            (&["10,50"][..], "the last step must be 100%"),
            (&["50,10,100"], "must rise"),
            (&["10,100", "5,100"], "give the steps once"),
            (&["1m", "30s"], "give one interval"),
            (&["0s"], "more than zero"),
        ] {
            let e = CanaryPlan::parse(words).expect_err(says);
            assert!(e.contains(says), "{words:?}: {e}");
        }
    }
}
