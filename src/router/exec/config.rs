//! The `exec` router table: one command per verb, and its validation.

use super::*;

// ---------------------------------------------------------------------------------------
// Config

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn opt_duration<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Duration>, D::Error> {
    serde_duration::deserialize(d).map(Some)
}

crate::router::router_table! {
    /// One `[[environment.router]]` table with `kind = "exec"`.
    pub struct Config {
        /// Prints the router's state (JSON or key=value lines). Required.
        pub observe: Option<Vec<String>>,
        /// Makes `{to}` the live slot.
        pub switch_live: Option<Vec<String>>,
        /// Points the preview route at `{slot}`.
        pub set_preview: Option<Vec<String>>,
        /// Stops new traffic to `{slot}` (or to `{node}` of it).
        pub drain: Option<Vec<String>>,
        /// Puts `{slot}` (or `{node}`) back in service.
        pub undrain: Option<Vec<String>>,
        /// Turns maintenance on (`{mode}` is `page` or `redirect`, `{to}` the redirect's slot).
        pub maintenance_on: Option<Vec<String>>,
        /// Turns maintenance off.
        pub maintenance_off: Option<Vec<String>>,
        /// Sends `{weight}` % of the live traffic of `{live}` to `{canary}` (0: all back on
        /// `{live}`). With it, the router takes part in a canary.
        #[serde(default)]
        pub weights: Option<Vec<String>>,
        /// How long any command may run before it is killed (default 30s).
        #[serde(default = "default_timeout", with = "serde_duration")]
        pub timeout: Duration,
        /// A shorter limit for `observe` alone (default: `timeout`).
        #[serde(default, deserialize_with = "opt_duration")]
        pub observe_timeout: Option<Duration>,
        /// Extra environment variables for every command, passed as written.
        #[serde(default)]
        pub env: BTreeMap<String, String>,
        /// Names of cutover's own environment variables passed through (e.g. `KUBECONFIG`).
        #[serde(default)]
        pub pass_env: Vec<String>,
        /// The working directory of every command (absolute).
        pub cwd: Option<PathBuf>,
    }
}

/// The commands an exec router can be given, one per verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cmd {
    Observe,
    SwitchLive,
    SetPreview,
    Drain,
    Undrain,
    MaintenanceOn,
    MaintenanceOff,
    Weights,
}

impl Cmd {
    pub const ALL: [Cmd; 8] = [
        Cmd::Observe,
        Cmd::SwitchLive,
        Cmd::SetPreview,
        Cmd::Drain,
        Cmd::Undrain,
        Cmd::MaintenanceOn,
        Cmd::MaintenanceOff,
        Cmd::Weights,
    ];

    /// The config key, which is also how the command is named in messages.
    pub fn key(self) -> &'static str {
        match self {
            Cmd::Observe => "observe",
            Cmd::SwitchLive => "switch_live",
            Cmd::SetPreview => "set_preview",
            Cmd::Drain => "drain",
            Cmd::Undrain => "undrain",
            Cmd::MaintenanceOn => "maintenance_on",
            Cmd::MaintenanceOff => "maintenance_off",
            Cmd::Weights => "weights",
        }
    }

    /// The placeholders that have a value in this command.
    pub fn placeholders(self) -> &'static [&'static str] {
        match self {
            Cmd::Observe => &["env"],
            Cmd::SwitchLive => &["env", "from", "to", "slot", "address", "host"],
            Cmd::SetPreview => &["env", "from", "slot", "address", "host"],
            Cmd::Drain | Cmd::Undrain => &["env", "from", "slot", "node", "address", "host"],
            Cmd::MaintenanceOn | Cmd::MaintenanceOff => {
                &["env", "from", "mode", "to", "address", "host"]
            }
            Cmd::Weights => &["env", "live", "canary", "weight"],
        }
    }

    /// The command that must be configured with this one, so that what one does can be undone.
    pub(super) fn partner(self) -> Option<Cmd> {
        match self {
            Cmd::Drain => Some(Cmd::Undrain),
            Cmd::Undrain => Some(Cmd::Drain),
            Cmd::MaintenanceOn => Some(Cmd::MaintenanceOff),
            Cmd::MaintenanceOff => Some(Cmd::MaintenanceOn),
            _ => None,
        }
    }
}

impl Config {
    pub fn command(&self, c: Cmd) -> Option<&[String]> {
        match c {
            Cmd::Observe => self.observe.as_deref(),
            Cmd::SwitchLive => self.switch_live.as_deref(),
            Cmd::SetPreview => self.set_preview.as_deref(),
            Cmd::Drain => self.drain.as_deref(),
            Cmd::Undrain => self.undrain.as_deref(),
            Cmd::MaintenanceOn => self.maintenance_on.as_deref(),
            Cmd::MaintenanceOff => self.maintenance_off.as_deref(),
            Cmd::Weights => self.weights.as_deref(),
        }
    }

    /// Checks made when the config is loaded; the message names the field.
    pub fn validate(&self, _slots: &[Slot]) -> std::result::Result<(), String> {
        if self.observe.is_none() {
            return Err(
                "an exec router needs `observe`: cutover reads every router back after \
                 each change and never assumes which slot is live, so give a command that prints \
                 the router's state, e.g. observe = [\"/usr/local/bin/where-is-www\"] printing \
                 `live=blue` (docs/exec.md describes the output)"
                    .into(),
            );
        }
        for c in Cmd::ALL {
            let Some(argv) = self.command(c) else {
                continue;
            };
            let key = c.key();
            if argv.is_empty() {
                return Err(format!(
                    "`{key} = []` is empty: give the program and its arguments, e.g. \
                     {key} = [\"/usr/local/bin/lbctl\", \"{key}\", \"{{slot}}\"], or remove the line"
                ));
            }
            // The checks every command of the config gets (hooks too), over every exec
            // placeholder; then the ones this command has a value for.
            super::validate_command(argv, &PLACEHOLDERS).map_err(|m| format!("`{key}`: {m}"))?;
            for arg in argv {
                for name in placeholders_in(arg) {
                    if !c.placeholders().contains(&name) {
                        return Err(format!(
                            "`{key}`: `{{{name}}}` has no value in {key} ({}); {key} knows {}",
                            meaning(name),
                            list_placeholders(c.placeholders())
                        ));
                    }
                }
            }
            if let Some(p) = c.partner()
                && self.command(p).is_none()
            {
                return Err(format!(
                    "`{key}` is configured without `{}`: what one does the other must be able to \
                     undo, so configure both (or neither)",
                    p.key()
                ));
            }
        }
        if self.timeout.is_zero() || self.observe_timeout.is_some_and(|t| t.is_zero()) {
            return Err("`timeout` and `observe_timeout` must be more than zero".into());
        }
        for (k, v) in &self.env {
            check_env_name(k).map_err(|m| format!("`env`: {m}"))?;
            if v.contains('\0') {
                return Err(format!("`env`: the value of `{k}` contains a NUL byte"));
            }
        }
        for k in &self.pass_env {
            check_env_name(k).map_err(|m| format!("`pass_env`: {m}"))?;
            if self.env.contains_key(k) {
                return Err(format!(
                    "`{k}` is both in `env` and in `pass_env`; keep one (env sets a value, \
                     pass_env passes cutover's own)"
                ));
            }
        }
        if let Some(d) = &self.cwd
            && !d.is_absolute()
        {
            return Err(format!(
                "`cwd = \"{}\"` is relative, so it would depend on where cutover is started; \
                 write an absolute path",
                d.display()
            ));
        }
        Ok(())
    }
}
