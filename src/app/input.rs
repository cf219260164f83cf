//! Keys, `:` commands and the mouse, turned into actions.

use super::*;

impl App {
    pub(super) fn on_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        if k.kind == crossterm::event::KeyEventKind::Release {
            return vec![];
        }
        match &mut self.overlay {
            Overlay::Help => {
                self.overlay = Overlay::None;
                return vec![];
            }
            Overlay::Confirm(_) => return self.on_confirm_key(k),
            Overlay::None => {}
        }
        if self.command.text.is_some() {
            return self.on_command_key(k);
        }
        if self.filter.typing {
            if k.code == KeyCode::Tab {
                let names: Vec<String> = self.envs.iter().map(|e| e.config.name.clone()).collect();
                let (done, _) = complete(&self.filter.text, &names);
                self.filter.text = done;
            }
            match k.code {
                KeyCode::Esc => {
                    self.filter.text.clear();
                    self.filter.typing = false;
                }
                KeyCode::Enter => self.filter.typing = false,
                KeyCode::Backspace => {
                    self.filter.text.pop();
                }
                KeyCode::Char(c) => self.filter.text.push(c),
                _ => {}
            }
            let visible = self.visible_envs();
            if let Some(&first) = visible.first()
                && !visible.contains(&self.selected_env)
            {
                self.selected_env = first;
                self.selected_slot = 0;
            }
            return vec![];
        }
        let Some(action) = self.keymap.action(&k) else {
            return vec![];
        };
        self.status = None;
        self.act(action)
    }

    /// Do an action (from a key, or a `:` command later).
    pub fn act(&mut self, action: Action) -> Vec<Effect> {
        if action.changes_routers() && self.read_only_here() {
            self.refuse_read_only(action.name());
            return vec![];
        }
        if action.is_demo() && !self.demo {
            return vec![];
        }
        let env_idx = self.selected_env;
        match action {
            Action::Quit => {
                let changing: Vec<String> = self
                    .envs
                    .iter()
                    .filter(|e| e.op_changing_routers())
                    .filter_map(|e| {
                        e.op.as_ref()
                            .map(|o| format!("{} on `{}`", o.title, e.config.name))
                    })
                    .collect();
                if changing.is_empty() || self.quit_pending {
                    // A second q quits now, in the middle of the change (recorded).
                    self.should_quit = true;
                    return vec![if changing.is_empty() {
                        Effect::Quit
                    } else {
                        Effect::QuitNow
                    }];
                }
                self.quit_pending = true;
                let key = self.keymap.first_key(Action::Quit);
                self.status = Some((
                    Level::Warn,
                    format!(
                        "{} is changing the routers: cutover quits when that step ends (a watch after it is abandoned, the new slot stays live); press {key} again to quit now (recorded as abandoned; `cutover recover` finishes it)",
                        changing.join(", ")
                    ),
                ));
                vec![]
            }
            Action::Help => {
                self.overlay = Overlay::Help;
                vec![]
            }
            Action::NextPane => {
                self.focus = match self.focus {
                    Focus::Environments => Focus::Slots,
                    Focus::Slots => Focus::Events,
                    Focus::Events => Focus::Environments,
                };
                vec![]
            }
            Action::Up | Action::Down => {
                let down = action == Action::Down;
                if self.focus == Focus::Events {
                    self.log.scroll_by_one(down);
                } else {
                    let vis = self.visible_envs();
                    if let Some(pos) = vis.iter().position(|&i| i == self.selected_env) {
                        let next = if down {
                            (pos + 1).min(vis.len().saturating_sub(1))
                        } else {
                            pos.saturating_sub(1)
                        };
                        if vis[next] != self.selected_env {
                            self.selected_env = vis[next];
                            self.selected_slot = 0;
                        }
                    }
                }
                vec![]
            }
            Action::Left => {
                self.selected_slot = self.selected_slot.saturating_sub(1);
                vec![]
            }
            Action::Right => {
                let n = self.env().map_or(1, |e| e.slots.len());
                self.selected_slot = (self.selected_slot + 1).min(n.saturating_sub(1));
                vec![]
            }
            Action::Filter => {
                self.filter.typing = true;
                vec![]
            }
            Action::Command => {
                self.command.open();
                vec![]
            }
            Action::Swap => {
                self.ask_swap(env_idx);
                vec![]
            }
            Action::Rollback => self.ask_rollback(env_idx),
            Action::Drain => {
                if let Some((e, slot)) = self.env().zip(self.selected_slot_name()) {
                    let drain = e.role_of(&slot) != Role::Draining;
                    self.ask_drain(env_idx, &slot, drain);
                }
                vec![]
            }
            Action::Maintenance => {
                if let Some(e) = self.env() {
                    let on = e.state().is_none_or(|s| s.maintenance.is_none());
                    self.ask_maintenance(env_idx, on);
                }
                vec![]
            }
            Action::Hold => {
                if let Some(e) = self.env() {
                    let on = !e.state().and_then(|s| s.pause).is_some_and(|p| p.paused);
                    self.ask_pause(env_idx, on);
                }
                vec![]
            }
            Action::Drill => {
                self.ask_drill(env_idx);
                vec![]
            }
            Action::Rolling => {
                if let Some(slot) = self.selected_slot_name() {
                    self.ask_rolling(env_idx, &slot);
                }
                vec![]
            }
            Action::Canary => {
                if let Some(slot) = self.selected_slot_name() {
                    self.ask_canary(env_idx, &slot, CanaryPlan::default());
                }
                vec![]
            }
            Action::Promote => self.steer_canary(env_idx, true),
            Action::Pause => self.steer_canary(env_idx, false),
            // Dialog actions act only inside a confirm dialog.
            Action::Confirm | Action::Cancel | Action::Force | Action::TakeOver => vec![],
            Action::DemoBreak | Action::DemoSlow => {
                let Some(slot) = self.selected_slot_name() else {
                    return vec![];
                };
                let cmd = if action == Action::DemoBreak {
                    DemoCommand::ToggleHealth { slot }
                } else {
                    DemoCommand::ToggleSlow { slot }
                };
                vec![Effect::Demo(cmd)]
            }
        }
    }

    pub(super) fn on_command_key(&mut self, k: KeyEvent) -> Vec<Effect> {
        let Some(line) = self.command.text.as_mut() else {
            return vec![];
        };
        match k.code {
            KeyCode::Esc => self.command.close(),
            KeyCode::Backspace if line.pop().is_none() => self.command.close(),
            KeyCode::Backspace => {}
            KeyCode::Char(c) => line.push(c),
            KeyCode::Tab => {
                let line = line.clone();
                let (head, last) = match line.rsplit_once(' ') {
                    Some((h, l)) => (format!("{h} "), l.to_string()),
                    None => (String::new(), line.clone()),
                };
                let candidates = self.candidates(&head);
                let (done, options) = complete(&last, &candidates);
                let finished = options.len() == 1;
                self.command.text =
                    Some(format!("{head}{done}{}", if finished { " " } else { "" }));
                self.command.completions = if finished { vec![] } else { options };
            }
            KeyCode::Enter => {
                let line = line.trim().to_string();
                self.command.close();
                return self.run_command(&line);
            }
            _ => {}
        }
        vec![]
    }

    /// What may follow `head` on the command line.
    pub(super) fn candidates(&self, head: &str) -> Vec<String> {
        let slots = || {
            self.env()
                .map(|e| e.slots.iter().map(|s| s.name.clone()).collect())
                .unwrap_or_default()
        };
        match head.split_whitespace().next() {
            None => COMMANDS.iter().map(|c| c.to_string()).collect(),
            Some("env") => self.envs.iter().map(|e| e.config.name.clone()).collect(),
            Some("swap" | "drain" | "undrain" | "rolling" | "canary") => slots(),
            Some("maintenance") => ["on", "off", "pause", "resume"].map(String::from).to_vec(),
            Some("theme") => Theme::builtin_names()
                .into_iter()
                .map(String::from)
                .collect(),
            Some(_) => vec![],
        }
    }

    /// Run a `:` command.
    pub fn run_command(&mut self, line: &str) -> Vec<Effect> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let env_idx = self.selected_env;
        let needs_ro_check = matches!(
            words.first().copied(),
            Some("swap" | "rollback" | "drain" | "undrain" | "maintenance" | "rolling" | "canary")
        );
        if needs_ro_check && self.read_only_here() {
            self.refuse_read_only(&format!(":{line}"));
            return vec![];
        }
        let known_slot = |app: &App, s: &str| {
            app.env()
                .is_some_and(|e| e.slots.iter().any(|x| x.name == s))
        };
        match words.as_slice() {
            [] => {}
            ["quit" | "q"] => return self.act(Action::Quit),
            ["help"] => self.overlay = Overlay::Help,
            ["env", name] => match self.envs.iter().position(|e| e.config.name == *name) {
                Some(i) => {
                    self.selected_env = i;
                    self.selected_slot = 0;
                }
                None => {
                    let names: Vec<&str> =
                        self.envs.iter().map(|e| e.config.name.as_str()).collect();
                    self.status = Some((
                        Level::Warn,
                        format!(
                            "no environment `{name}`; environments: {}",
                            names.join(", ")
                        ),
                    ));
                }
            },
            ["swap"] => self.ask_swap(env_idx),
            ["swap", slot] if known_slot(self, slot) => self.ask_swap_to(env_idx, slot),
            ["rollback"] => return self.ask_rollback(env_idx),
            ["drain", slot] if known_slot(self, slot) => self.ask_drain(env_idx, slot, true),
            ["undrain", slot] if known_slot(self, slot) => self.ask_drain(env_idx, slot, false),
            ["rolling", slot] if known_slot(self, slot) => self.ask_rolling(env_idx, slot),
            ["canary", slot, plan @ ..] if known_slot(self, slot) => {
                match CanaryPlan::parse(plan) {
                    Ok(plan) => self.ask_canary(env_idx, slot, plan),
                    Err(why) => {
                        self.status = Some((
                            Level::Warn,
                            format!(
                                ":canary {slot}: {why}; e.g. `:canary {slot} 5,25,pause,100 30s`"
                            ),
                        ))
                    }
                }
            }
            ["maintenance", on @ ("on" | "off")] => self.ask_maintenance(env_idx, *on == "on"),
            ["maintenance", p @ ("pause" | "resume")] => self.ask_pause(env_idx, *p == "pause"),
            ["theme", name] => return vec![Effect::LoadTheme(name.to_string())],
            [cmd, rest @ ..]
                if ["swap", "drain", "undrain", "rolling", "canary"].contains(cmd)
                    && !rest.is_empty() =>
            {
                let (env, slots) = self.env().map_or_else(Default::default, |e| {
                    let slots: Vec<&str> = e.slots.iter().map(|s| s.name.as_str()).collect();
                    (e.config.name.as_str(), slots.join(", "))
                });
                self.status = Some((
                    Level::Warn,
                    format!(
                        "no slot `{}` in `{env}`; its slots: {slots}",
                        rest.join(" ")
                    ),
                ));
            }
            _ => {
                self.status = Some((
                    Level::Warn,
                    format!(
                        "unknown command `:{line}`; try {} (Tab completes)",
                        COMMANDS.join(", ")
                    ),
                ))
            }
        }
        vec![]
    }

    /// Whether router changes are refused here: `--read-only`, or `read_only` in the config.
    pub(super) fn read_only_here(&self) -> bool {
        self.read_only || self.env().is_some_and(|e| e.config.read_only)
    }

    pub(super) fn refuse_read_only(&mut self, what: &str) {
        self.status = Some((
            Level::Warn,
            format!(
                "read-only: `{what}` is not allowed here (cutover runs with --read-only, or \
                 read_only = true is set in the config)"
            ),
        ));
    }

    pub(super) fn selected_slot_name(&self) -> Option<String> {
        self.env()
            .and_then(|e| e.slots.get(self.selected_slot))
            .map(|s| s.name.clone())
    }

    pub(super) fn on_click(&mut self, hit: Hit) {
        match hit {
            Hit::EnvRow(row) => {
                if let Some(&i) = self.visible_envs().get(row) {
                    self.selected_env = i;
                    self.selected_slot = 0;
                    self.focus = Focus::Environments;
                }
            }
            Hit::Slot(i) => {
                self.selected_slot = i;
                self.focus = Focus::Slots;
            }
            Hit::Events => self.focus = Focus::Events,
        }
    }
}
