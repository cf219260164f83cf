//! Keys → actions, in one place. The help overlay and the key bar are generated from this
//! map, so they can never go stale.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

/// Every user operation, with a name (for config files and `:` commands) and a description.
/// In the order the help overlay lists them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Action {
    Swap,
    Rollback,
    Drain,
    Maintenance,
    Hold,
    Rolling,
    Canary,
    Promote,
    Pause,
    Drill,
    Up,
    Down,
    Left,
    Right,
    NextPane,
    Filter,
    Command,
    Help,
    Quit,
    DemoBreak,
    DemoSlow,
    /// In a confirm dialog: go ahead.
    Confirm,
    /// In a confirm dialog: close it, doing nothing.
    Cancel,
    /// In a confirm dialog: go past a failed gate.
    Force,
    /// In a confirm dialog: take the environment's lock over from another cutover.
    TakeOver,
}

impl Action {
    /// Every action, in the order the help overlay lists them.
    pub const ALL: &'static [Action] = <Action as strum::VariantArray>::VARIANTS;

    /// The name in config files and `:` commands: the variant in kebab-case (`next-pane`).
    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn description(self) -> &'static str {
        match self {
            Action::Quit => {
                "quit; mid-change: after the step (again: now, recorded); a watch is abandoned"
            }
            Action::Help => "show or hide this help",
            Action::Up => "previous environment / scroll events up",
            Action::Down => "next environment / scroll events down",
            Action::Left => "select the slot to the left",
            Action::Right => "select the slot to the right",
            Action::NextPane => "move focus: environments, slots, events",
            Action::Swap => "swap live ↔ preview (or make the selected idle slot live); asks first",
            Action::Rollback => {
                "roll back; at once (no dialog) during a swap's watch and its rollback window when the old slot is healthy and unchanged, else asks"
            }
            Action::Drain => "drain the selected slot, or undrain it if it is draining",
            Action::Maintenance => "turn maintenance on (503 page) or off for the environment",
            Action::Hold => {
                "hold: hold new live requests while the live slot restarts in place (embedded router), or resume: release them; asks first"
            }
            Action::Rolling => "rolling deploy of the selected slot, node by node; asks first",
            Action::Canary => {
                "canary: move the live traffic to the selected slot step by step (canary_steps), analysing each step; asks first; the rollback key aborts it to 0 %"
            }
            Action::Promote => "canary: end the current step's hold now and go on to the next step",
            Action::Pause => {
                "canary: pause its countdown (the analysis goes on), or resume it; ends a `pause` step"
            }
            Action::Drill => {
                "drill: load the public URL while swapping back and forth, with a live chart; D again closes it"
            }
            Action::Filter => {
                "filter environments by name (Tab completes, Enter keeps it, Esc clears it)"
            }
            Action::Command => {
                ":env NAME, :swap [SLOT], :rollback, :drain SLOT, :undrain SLOT, :maintenance on|off|pause|resume, :rolling SLOT, :canary SLOT [STEPS] [INTERVAL], :theme NAME, :help, :quit (Tab completes)"
            }
            Action::DemoBreak => "demo: break / heal the selected slot's health",
            Action::DemoSlow => "demo: make the selected slot slow / fast",
            Action::Confirm => "dialog: go ahead (when the gate passes; after the typed name)",
            Action::Cancel => "dialog: close it, doing nothing",
            Action::Force => "dialog: go past a failed gate (logged as FORCED)",
            Action::TakeOver => {
                "dialog: take the lock over from another cutover (its watch ends, it records who took over)"
            }
        }
    }

    /// Actions that change a router (refused in read-only mode).
    pub fn changes_routers(self) -> bool {
        matches!(
            self,
            Action::Swap
                | Action::Rollback
                | Action::Drain
                | Action::Maintenance
                | Action::Hold
                | Action::Rolling
                | Action::Canary
                | Action::Promote
                | Action::Pause
                | Action::Drill
        )
    }

    pub fn is_demo(self) -> bool {
        matches!(self, Action::DemoBreak | Action::DemoSlow)
    }

    /// Actions of the confirm dialog (bound in their own layer: `y` there is not a key of the
    /// main screen).
    pub fn is_dialog(self) -> bool {
        matches!(
            self,
            Action::Confirm | Action::Cancel | Action::Force | Action::TakeOver
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub code: KeyCode,
    pub mods: KeyModifiers,
}

impl Key {
    const fn plain(code: KeyCode) -> Key {
        Key {
            code,
            mods: KeyModifiers::NONE,
        }
    }
    const fn ch(c: char) -> Key {
        Key::plain(KeyCode::Char(c))
    }

    pub fn label(self) -> String {
        let base = match self.code {
            KeyCode::Char(' ') => "Space".to_string(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::Up => "↑".into(),
            KeyCode::Down => "↓".into(),
            KeyCode::Left => "←".into(),
            KeyCode::Right => "→".into(),
            KeyCode::Tab => "Tab".into(),
            KeyCode::Enter => "Enter".into(),
            KeyCode::Esc => "Esc".into(),
            KeyCode::F(n) => format!("F{n}"),
            other => format!("{other:?}"),
        };
        if self.mods.contains(KeyModifiers::CONTROL) {
            format!("Ctrl-{base}")
        } else {
            base
        }
    }
}

#[derive(Debug, Clone)]
pub struct Keymap {
    bindings: Vec<(Key, Action)>,
    /// The confirm dialog's keys.
    dialog: Vec<(Key, Action)>,
}

impl Default for Keymap {
    fn default() -> Self {
        use Action::*;
        let b = vec![
            (Key::ch('s'), Swap),
            (Key::ch('r'), Rollback),
            (Key::ch('d'), Drain),
            (Key::ch('m'), Maintenance),
            (Key::ch('H'), Hold),
            (Key::ch('R'), Rolling),
            (Key::ch('c'), Canary),
            (Key::ch('p'), Promote),
            (Key::ch('P'), Pause),
            (Key::ch('D'), Drill),
            (Key::ch('k'), Up),
            (Key::plain(KeyCode::Up), Up),
            (Key::ch('j'), Down),
            (Key::plain(KeyCode::Down), Down),
            (Key::ch('h'), Left),
            (Key::plain(KeyCode::Left), Left),
            (Key::ch('l'), Right),
            (Key::plain(KeyCode::Right), Right),
            (Key::plain(KeyCode::Tab), NextPane),
            (Key::ch('/'), Filter),
            (Key::ch(':'), Command),
            (Key::ch('?'), Help),
            (Key::ch('q'), Quit),
            (
                Key {
                    code: KeyCode::Char('c'),
                    mods: KeyModifiers::CONTROL,
                },
                Quit,
            ),
            (Key::ch('b'), DemoBreak),
            (Key::ch('w'), DemoSlow),
        ];
        let dialog = vec![
            (Key::ch('y'), Confirm),
            (Key::plain(KeyCode::Enter), Confirm),
            (Key::ch('n'), Cancel),
            (Key::plain(KeyCode::Esc), Cancel),
            (Key::ch('F'), Force),
            (Key::ch('T'), TakeOver),
        ];
        Keymap {
            bindings: b,
            dialog,
        }
    }
}

impl Action {
    pub fn from_name(name: &str) -> Option<Action> {
        name.parse().ok()
    }
}

/// Parse a key as written in a config: `s`, `R`, `Ctrl-c`, `Enter`, `Tab`, `Esc`, `Up`,
/// `Down`, `Left`, `Right`, `Space`, `F5`.
pub fn parse_key(s: &str) -> Result<Key, String> {
    let (mods, rest) = match s.strip_prefix("Ctrl-").or_else(|| s.strip_prefix("ctrl-")) {
        Some(r) => (KeyModifiers::CONTROL, r),
        None => (KeyModifiers::NONE, s),
    };
    let code = match rest {
        "Enter" => KeyCode::Enter,
        "Tab" => KeyCode::Tab,
        "Esc" => KeyCode::Esc,
        "Up" => KeyCode::Up,
        "Down" => KeyCode::Down,
        "Left" => KeyCode::Left,
        "Right" => KeyCode::Right,
        "Space" => KeyCode::Char(' '),
        "Backspace" => KeyCode::Backspace,
        f if f.len() > 1 && f.starts_with('F') && f[1..].parse::<u8>().is_ok() => {
            KeyCode::F(f[1..].parse().unwrap_or(1))
        }
        c if c.chars().count() == 1 => KeyCode::Char(c.chars().next().unwrap_or(' ')),
        _ => {
            return Err(format!(
                "`{s}` is not a key; write a character (`s`), `Ctrl-c`, `Enter`, `Tab`, `Esc`, `Up`, `Down`, `Left`, `Right`, `Space` or `F1`..`F12`"
            ));
        }
    };
    Ok(Key { code, mods })
}

impl Keymap {
    /// The default keys, with the user's bindings (`[keys]` in the config) laid over them:
    /// an action named there gets exactly the keys listed.
    pub fn with_overrides(
        overrides: &std::collections::BTreeMap<String, Vec<String>>,
    ) -> Result<Keymap, String> {
        let mut km = Keymap::default();
        for (name, keys) in overrides {
            let action = Action::from_name(name).ok_or_else(|| {
                format!(
                    "`{name}` is not an action; actions: {}",
                    Action::ALL
                        .iter()
                        .map(|a| a.name())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            let layer = if action.is_dialog() {
                &mut km.dialog
            } else {
                &mut km.bindings
            };
            layer.retain(|(_, a)| *a != action);
            for k in keys {
                let key = parse_key(k)?;
                layer.retain(|(bk, _)| *bk != key);
                layer.push((key, action));
            }
        }
        Ok(km)
    }

    pub fn action(&self, ev: &KeyEvent) -> Option<Action> {
        Self::find(&self.bindings, ev)
    }

    /// The action of a key in the confirm dialog.
    pub fn dialog_action(&self, ev: &KeyEvent) -> Option<Action> {
        Self::find(&self.dialog, ev)
    }

    fn find(layer: &[(Key, Action)], ev: &KeyEvent) -> Option<Action> {
        // Shifted letters arrive as uppercase chars with SHIFT; compare without SHIFT.
        let mods = ev.modifiers - KeyModifiers::SHIFT;
        layer
            .iter()
            .find(|(k, _)| k.code == ev.code && k.mods == mods)
            .map(|(_, a)| *a)
    }

    pub fn keys(&self, action: Action) -> Vec<String> {
        self.bindings
            .iter()
            .chain(&self.dialog)
            .filter(|(_, a)| *a == action)
            .map(|(k, _)| k.label())
            .collect()
    }

    /// The first key of an action, for the key bar ("s").
    pub fn first_key(&self, action: Action) -> String {
        self.keys(action)
            .into_iter()
            .next()
            .unwrap_or_else(|| "-".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_bindings_replace_an_actions_keys() {
        let mut o = std::collections::BTreeMap::new();
        o.insert("swap".to_string(), vec!["S".to_string(), "F5".to_string()]);
        let km = Keymap::with_overrides(&o).expect("valid");
        assert_eq!(km.keys(Action::Swap), vec!["S", "F5"]);
        let ev = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE);
        assert_eq!(km.action(&ev), None, "the default key is gone");
        o.insert("swapp".into(), vec!["x".into()]);
        assert!(
            Keymap::with_overrides(&o)
                .expect_err("unknown")
                .contains("not an action")
        );
        let mut o = std::collections::BTreeMap::new();
        o.insert("swap".to_string(), vec!["Ctrl-".to_string()]);
        assert!(
            Keymap::with_overrides(&o)
                .expect_err("bad key")
                .contains("is not a key")
        );
    }

    #[test]
    fn every_action_has_a_key_name_and_description() {
        let km = Keymap::default();
        for &a in Action::ALL {
            assert!(!km.keys(a).is_empty(), "{a:?} has no key");
            assert!(!a.name().is_empty() && !a.description().is_empty());
        }
        let ev = KeyEvent::new(KeyCode::Char('s'), KeyModifiers::NONE);
        assert_eq!(km.action(&ev), Some(Action::Swap));
        let ev = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(km.action(&ev), Some(Action::Quit));
    }
}
