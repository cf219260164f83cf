//! The TOML config: schema, defaults, and validation that names file, line, column and field.
//!
//! The file is parsed into private `Raw*` structs that keep the source spans of the fields
//! that need checking after parsing (names, URLs), then turned into the plain public structs
//! the rest of cutover uses. Unknown keys are errors everywhere.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::hooks::{RawPath, SmokePath, WarmupPath};
use crate::router::RouterConfig;
use crate::timefmt::serde_duration;
mod env;
use env::*;
mod locate;
use locate::*;
pub use locate::{line_col, setting_position};
mod raw;
use raw::*;

mod hooks;
use hooks::*;
mod extras;
use extras::*;
mod query;
use query::*;

/// A config that could not be used, located in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The key the mistake is in, when it is known.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // About the whole file (missing, a directory, unreadable): no position.
            write!(f, "{}: ", self.file.display())?;
        } else {
            write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        }
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

pub use crate::model::{CanaryStep, ConfigProblem, Node, Slot};

/// How a fleet (several routers) is switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum FleetOrder {
    /// One router after the other, in the order they are listed; stop at the first failure.
    #[default]
    Sequential,
    /// All at once.
    Parallel,
}

/// How a destructive operation is confirmed in the TUI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ConfirmMode {
    /// `y` confirms, `n` or Esc cancels.
    #[default]
    YesNo,
    /// The operator types the environment's name.
    TypeName,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this came from, for messages.
    pub path: PathBuf,
    pub settings: Settings,
    /// `[keys]`: action name → keys, laid over the default key map.
    pub keys: std::collections::BTreeMap<String, Vec<String>>,
    pub environments: Vec<Environment>,
    /// `[[notify]]`: webhooks told about operations.
    pub notify: Vec<crate::notify::NotifyConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// How often every slot is polled.
    #[serde(with = "serde_duration")]
    pub poll_interval: Duration,
    /// Timeout of one probe request (health or version).
    #[serde(with = "serde_duration")]
    pub timeout: Duration,
    /// A healthy answer slower than this shows as degraded.
    #[serde(with = "serde_duration")]
    pub degraded_after: Duration,
    /// Theme name (a file in themes/ or the built-in ones) or a path to a theme file.
    pub theme: String,
    /// Where the debug log goes (default: the state dir).
    pub log_dir: Option<PathBuf>,
    /// Where state (previous live slot, locks, audit log) goes (default: `$XDG_STATE_HOME/cutover/`).
    pub state_dir: Option<PathBuf>,
    /// Where the audit log goes (default: the state dir).
    pub audit_dir: Option<PathBuf>,
    /// How many consecutive healthy checks a slot needs before it may go live.
    pub gate_checks: usize,
    /// Every action is refused; for people who watch.
    pub read_only: bool,
    /// How many polls the sparkline keeps.
    pub history: usize,
    /// The largest health/version body read, in bytes; more is cut off and reported.
    pub max_body: usize,
    /// `r` rolls back without a dialog during a watch and the rollback window (environments
    /// may override it).
    pub one_key_rollback: bool,
    /// Where the lock, the memory and the journal live: `"file"` (the state dir, the default)
    /// or `[settings.store]` with `etcd = [...]` (shared by a team; see [`crate::etcd`]).
    pub store: StoreSetting,
}

/// `store = "file"`, or `[settings.store] etcd = [...]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StoreSetting {
    #[default]
    File,
    Etcd(crate::etcd::EtcdSettings),
}

impl<'de> Deserialize<'de> for StoreSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = toml::Value::deserialize(d)?;
        match v {
            toml::Value::String(n) if n == "file" => Ok(StoreSetting::File),
            toml::Value::Table(_) => crate::etcd::EtcdSettings::deserialize(v)
                .map(StoreSetting::Etcd)
                .map_err(|e| D::Error::custom(e.message())),
            other => Err(D::Error::custom(format!(
                "unknown store `{}`: \"file\", or a table [settings.store] with `etcd = [...]`",
                other
                    .as_str()
                    .map_or_else(|| other.to_string(), str::to_string)
            ))),
        }
    }
}

impl Settings {
    /// `state_dir`, else `$XDG_STATE_HOME/cutover`.
    /// The store these settings name: the state dir, or an etcd cluster (no request is made
    /// yet; an unreachable cluster shows when an operation takes the lock).
    pub fn open_store(&self) -> color_eyre::eyre::Result<crate::state::Store> {
        let etcd = match &self.store {
            StoreSetting::Etcd(e) => Some(e),
            StoreSetting::File => None,
        };
        crate::state::Store::open(self.state_dir_or_default(), etcd)
    }

    pub fn state_dir_or_default(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(crate::paths::state_dir)
    }
    /// `audit_dir`, else the state dir.
    pub fn audit_dir_or_default(&self) -> PathBuf {
        self.audit_dir
            .clone()
            .unwrap_or_else(|| self.state_dir_or_default())
    }
    /// `log_dir`, else the state dir.
    pub fn log_dir_or_default(&self) -> PathBuf {
        self.log_dir
            .clone()
            .unwrap_or_else(|| self.state_dir_or_default())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            poll_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            degraded_after: Duration::from_millis(800),
            theme: "dark".into(),
            log_dir: None,
            state_dir: None,
            audit_dir: None,
            gate_checks: 3,
            read_only: false,
            history: 60,
            max_body: 64 * 1024,
            one_key_rollback: true,
            store: StoreSetting::File,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    /// The URL users reach; probed to show the version users actually get.
    pub public_url: Option<String>,
    /// The staging / next URL (seed 001's staging slot, seed 002's next host).
    pub preview_url: Option<String>,
    /// Production environments refuse drills and always confirm.
    pub production: bool,
    pub confirm: ConfirmMode,
    pub read_only: bool,
    /// Roll back by itself when the new live slot fails during the watch window.
    pub auto_rollback: bool,
    /// How long a cutover is watched after it is applied.
    pub watch: Duration,
    /// How long verify waits for the router and the public URL to show a change.
    pub verify_timeout: Duration,
    /// Overrides `settings.gate_checks` for this environment.
    pub gate_checks: usize,
    pub slots: Vec<Slot>,
    pub routers: Vec<RouterConfig>,
    /// How a rolling deploy runs (seed 003), when configured.
    pub rolling: Option<Rolling>,
    /// `cutover drill` may run against this production environment.
    pub allow_drill: bool,
    /// How the routers of a fleet are switched.
    pub fleet: FleetOrder,
    /// `cutover drill` refuses a public URL that is not a loopback address.
    pub drill_loopback_only: bool,
    /// After a swap, how long `r` rolls back at once (no dialog) when the way back is safe.
    pub rollback_window: Duration,
    /// One-key rollback on (the settings' value unless the environment sets its own).
    pub one_key_rollback: bool,
    /// Warm-up, smoke test and after-hooks around every swap and rollback (all optional).
    pub hooks: crate::hooks::Hooks,
    /// How `cutover canary` runs (the `canary_*` keys).
    pub canary: Canary,
}

/// An environment's `canary_*` keys: the plan and the analysis of `cutover canary`.
#[derive(Debug, Clone, PartialEq)]
pub struct Canary {
    /// `canary_steps`: the canary's share at each step, rising, the last one 100 (the swap).
    pub steps: Vec<CanaryStep>,
    /// How long each canary step holds while its analysis runs.
    pub pause: Duration,
    /// The canary's error rate (router errors / requests on the canary slot during a step)
    /// above which the canary is aborted, as a fraction (0.01 = 1 %).
    pub max_error_rate: f64,
    /// How far the canary's error rate may rise above the stable (live) slot's over the same
    /// step, as a fraction (0.01 = 1 point); `None`: not compared.
    pub max_error_rate_over_stable: Option<f64>,
    /// The slowest probe answer of the canary slot a check accepts; `None`: not judged.
    pub max_latency: Option<Duration>,
    /// How many failed analysis checks a step tolerates: the one after them aborts.
    pub failure_limit: u32,
    /// `[[environment.canary_query]]`: Prometheus queries judged at each analysis check, next
    /// to the router's counters.
    pub queries: Vec<crate::model::CanaryQuery>,
}

/// The default `canary_failure_limit`: one failed check is a blip, the second aborts.
pub const DEFAULT_CANARY_FAILURE_LIMIT: u32 = 1;

/// The default canary plan: 5, 25, 50, 100 %.
pub const DEFAULT_CANARY_STEPS: [CanaryStep; 4] = [
    CanaryStep::Weight(5),
    CanaryStep::Weight(25),
    CanaryStep::Weight(50),
    CanaryStep::Weight(100),
];

/// Parse a canary plan: `["5%", "25%", "pause", "50%", "100%"]` (the `%` is optional). The
/// shares rise, are 1 to 100, and the last is 100 (the swap); a `pause` holds the share before
/// it until the operator resumes or promotes.
pub fn parse_canary_steps<S: AsRef<str>>(
    steps: &[S],
) -> std::result::Result<Vec<CanaryStep>, String> {
    let mut out: Vec<CanaryStep> = Vec::new();
    let mut last = 0u8;
    for s in steps {
        let s = s.as_ref().trim();
        if s.eq_ignore_ascii_case("pause") {
            out.push(CanaryStep::Pause);
            continue;
        }
        let n: u8 = s
            .trim_end_matches('%')
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| format!("`{s}` is neither `pause` nor a share from 1% to 100%"))?;
        if last >= n {
            return Err(format!("the steps must rise; `{s}` comes after {last}%"));
        }
        last = n;
        out.push(CanaryStep::Weight(n));
    }
    if out.last() != Some(&CanaryStep::Weight(100)) {
        return Err("the last step must be 100% (the swap to the canary slot)".into());
    }
    Ok(out)
}

/// `[environment.rolling]`: a rolling deploy over the nodes of a slot, one node at a time:
/// drain → wait for zero sessions → deploy hook → smoke test → undrain.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rolling {
    /// The deploy command for one node, as argv; `{env}`, `{slot}`, `{node}`, `{address}`,
    /// `{version}` are replaced.
    pub deploy: Vec<String>,
    /// An extra smoke test (a browser test...) whose exit code gates; same placeholders.
    #[serde(default)]
    pub smoke: Vec<String>,
    /// How long a node may take to reach zero sessions after it is drained.
    #[serde(default = "default_drain_timeout", with = "serde_duration")]
    pub drain_timeout: Duration,
    /// How long the deploy and smoke commands may run.
    #[serde(default = "default_hook_timeout", with = "serde_duration")]
    pub hook_timeout: Duration,
    /// How long the node has to answer healthy with the new version after the deploy.
    #[serde(default = "default_verify", with = "serde_duration")]
    pub smoke_timeout: Duration,
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_hook_timeout() -> Duration {
    Duration::from_secs(600)
}

impl<'a> From<&'a Environment> for crate::model::EnvSlots<'a> {
    fn from(env: &'a Environment) -> Self {
        env.routed()
    }
}

impl Environment {
    /// What the routers are told of this environment.
    pub fn routed(&self) -> crate::model::EnvSlots<'_> {
        crate::model::EnvSlots {
            name: &self.name,
            slots: &self.slots,
        }
    }

    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }
}

// ---------------------------------------------------------------------------------------
// Raw, spanned form.

/// The most `gate_checks` may be.
pub const MAX_GATE_CHECKS: usize = 1000;
/// The most polls `history` may keep.
pub const MAX_HISTORY: usize = 100_000;
/// The most `max_body` may be, in bytes (16 MiB).
pub const MAX_BODY: usize = 16 * 1024 * 1024;

/// Where the config comes from when `--config` is not given.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CUTOVER_CONFIG") {
        return PathBuf::from(p);
    }
    crate::paths::config_dir().join("config.toml")
}

/// Read and validate a config file, as the binary does: every environment needs a router, and
/// the credentials the routers point at are handed to [`crate::redact`] (only here, so that
/// parsing a text has no effect beyond its result).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let fail = |message: String| ConfigError {
        file: path.to_path_buf(),
        line: 0,
        column: 0,
        field: None,
        message,
    };
    if path.is_dir() {
        return Err(fail(
            "is a directory, not a config file; give the file's path (--config DIR/config.toml)"
                .into(),
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| {
        fail(match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "no such file; create one with `cutover init {}`, or give another with --config",
                path.display()
            ),
            std::io::ErrorKind::PermissionDenied => {
                "cannot be read: permission denied; check its owner and mode (ls -l)".into()
            }
            _ => format!("cannot be read: {e}"),
        })
    })?;
    let src = String::from_utf8(bytes).map_err(|e| {
        let (line, column) = line_col_bytes(e.as_bytes(), e.utf8_error().valid_up_to());
        ConfigError {
            line,
            column,
            ..fail("is not UTF-8 text; a config is a TOML file written in UTF-8".into())
        }
    })?;
    let c = parse_strict(&src, path)?;
    for e in &c.environments {
        for r in &e.routers {
            register_secrets(r);
        }
    }
    if let StoreSetting::Etcd(e) = &c.settings.store {
        e.password_env
            .iter()
            .for_each(|v| crate::redact::register_env(v));
    }
    for n in &c.notify {
        // A webhook URL (Slack's, Mattermost's) is a credential itself.
        crate::redact::register_secret(&n.url);
        n.token_env
            .iter()
            .for_each(|v| crate::redact::register_env(v));
    }
    Ok(c)
}

/// Parse and validate config text; `path` is used only in messages. Unlike [`load`], an
/// environment without a router is accepted (views and probes are tested without one).
pub fn parse(src: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with(src, path, false)
}

/// [`parse`], refusing an environment without a router as [`load`] does.
pub fn parse_strict(src: &str, path: &Path) -> Result<Config, ConfigError> {
    parse_with(src, path, true)
}

fn parse_with(src: &str, path: &Path, require_router: bool) -> Result<Config, ConfigError> {
    let at = |span: Range<usize>, field: Option<&str>, message: String| {
        let (line, column) = line_col(src, span.start);
        ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            field: field
                .map(str::to_string)
                .or_else(|| key_at(src, span.start)),
            message,
        }
    };
    let raw: RawConfig = toml::from_str(src).map_err(|e| {
        let span = e.span().unwrap_or(0..0);
        let m = e.message().trim().to_string();
        let hint = quoted_after(&m, "unknown field `")
            .and_then(|k| closest(k, &quoted_list(&m, "expected one of ")))
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        at(span, None, format!("{m}{hint}"))
    })?;

    let mut keys = std::collections::BTreeMap::new();
    if let Some(k) = &raw.keys {
        for (name, list) in k.get_ref() {
            let v = match list {
                KeyList::One(s) => vec![s.clone()],
                KeyList::Many(v) => v.clone(),
            };
            keys.insert(name.clone(), v);
        }
        crate::keymap::Keymap::with_overrides(&keys).map_err(|m| at(k.span(), Some("keys"), m))?;
    }
    check_settings(src, &raw.settings, &at)?;
    if raw.environments.is_empty() {
        return Err(at(
            0..0,
            None,
            "no [[environment]] is defined; `cutover init` writes a complete example".into(),
        ));
    }

    let state_dir = raw
        .settings
        .state_dir
        .clone()
        .unwrap_or_else(crate::paths::state_dir);
    let mut env_names = BTreeSet::new();
    let mut environments = Vec::new();
    for mut re in raw.environments {
        let mut raw_hooks = re_hooks(&mut re);
        let name = re.name.get_ref().clone();
        if name.trim().is_empty() {
            return Err(at(re.name.span(), Some("name"), "must not be empty".into()));
        }
        crate::paths::check_name("environment", &name, "it is used in file names, so ")
            .map_err(|m| at(re.name.span(), Some("name"), m))?;
        if !env_names.insert(name.clone()) {
            return Err(at(
                re.name.span(),
                Some("name"),
                format!("environment `{name}` is defined twice"),
            ));
        }
        for u in [&re.public_url, &re.preview_url].into_iter().flatten() {
            check_url(u.get_ref()).map_err(|m| at(u.span(), None, m))?;
        }
        if re.slots.is_empty() {
            return Err(at(
                re.name.span(),
                Some("slot"),
                format!("environment `{name}` has no [[environment.slot]]"),
            ));
        }
        let slots = parse_slots(src, &name, re.slots, &at)?;
        if re.routers.is_empty() && require_router {
            return Err(at(
                re.name.span(),
                Some("router"),
                format!(
                    "environment `{name}` has no [[environment.router]]: cutover reads every \
                     switch back from a router, so give one (`kind = \"embedded\"` is cutover's \
                     own proxy; see Routers in the README)"
                ),
            ));
        }
        if re.verify_timeout.is_zero() {
            return Err(at(
                find_value_in(src, re.name.span().start, "verify_timeout")
                    .unwrap_or(re.name.span()),
                Some("verify_timeout"),
                "must be more than zero: verify waits this long for the routers and the public \
                 URL to show a change"
                    .into(),
            ));
        }
        if re.gate_checks == Some(0) {
            return Err(at(
                find_value_in(src, re.name.span().start, "gate_checks").unwrap_or(re.name.span()),
                Some("gate_checks"),
                format!("must be between 1 and {MAX_GATE_CHECKS}"),
            ));
        }
        let routers = parse_routers(src, &name, re.routers, &slots, &state_dir, &at)?;
        if let Some(r) = &re.rolling
            && r.get_ref().deploy.is_empty()
        {
            return Err(at(
                r.span(),
                Some("deploy"),
                "the rolling deploy needs a `deploy` command (an argv list)".into(),
            ));
        }
        let hooks = parse_hooks(&mut raw_hooks, src, &at)?;
        let canary_steps = match &re.canary_steps {
            None => DEFAULT_CANARY_STEPS.to_vec(),
            Some(v) => parse_canary_steps(v.get_ref())
                .map_err(|m| at(v.span(), Some("canary_steps"), m))?,
        };
        let fraction = |v: &Option<Spanned<f64>>, field: &'static str| match v {
            Some(r) if !(0.0..=1.0).contains(r.get_ref()) => Err(at(
                r.span(),
                Some(field),
                "must be a fraction from 0 to 1 (0.01 is 1 %)".into(),
            )),
            other => Ok(other.as_ref().map(|r| *r.get_ref())),
        };
        if re.canary_pause.is_zero() {
            return Err(at(
                find_value_in(src, re.name.span().start, "canary_pause").unwrap_or(0..0),
                Some("canary_pause"),
                "must be more than zero: it is how long each canary step is watched".into(),
            ));
        }
        let canary = Canary {
            steps: canary_steps,
            pause: re.canary_pause,
            max_error_rate: fraction(&re.canary_max_error_rate, "canary_max_error_rate")?
                .unwrap_or(0.01),
            max_error_rate_over_stable: fraction(
                &re.canary_max_error_rate_over_stable,
                "canary_max_error_rate_over_stable",
            )?,
            max_latency: re.canary_max_latency,
            failure_limit: re
                .canary_failure_limit
                .unwrap_or(DEFAULT_CANARY_FAILURE_LIMIT),
            queries: parse_queries(src, std::mem::take(&mut re.canary_queries), &at)?,
        };
        environments.push(Environment {
            name,
            public_url: re.public_url.map(|u| u.into_inner()),
            preview_url: re.preview_url.map(|u| u.into_inner()),
            production: re.production,
            confirm: re.confirm,
            read_only: re.read_only,
            auto_rollback: re.auto_rollback,
            watch: re.watch,
            verify_timeout: re.verify_timeout,
            gate_checks: re.gate_checks.unwrap_or(raw.settings.gate_checks).max(1),
            slots,
            routers,
            rolling: re.rolling.map(|r| r.into_inner()),
            allow_drill: re.allow_drill,
            fleet: re.fleet,
            drill_loopback_only: re.drill_loopback_only,
            rollback_window: re.rollback_window,
            one_key_rollback: re.one_key_rollback.unwrap_or(raw.settings.one_key_rollback),
            hooks,
            canary,
        });
    }
    let mut notify = Vec::new();
    for rn in raw.notify {
        notify.push(notify_from(src, rn, &at)?);
    }
    Ok(Config {
        path: path.to_path_buf(),
        keys,
        settings: raw.settings,
        environments,
        notify,
    })
}

/// The span of `key`'s value in the single table `[table]`.
pub(crate) fn table_value(src: &str, table: &str, key: &str) -> Option<Range<usize>> {
    let header = format!("[{table}]");
    let mut off = 0;
    for line in src.split_inclusive('\n') {
        let l = line.split('#').next().unwrap_or_default().trim();
        if l == header {
            return find_value_in(src, off, key);
        }
        off += line.len();
    }
    None
}

/// Makes a [`ConfigError`] at a span of the source, about a field, with a message.
pub(super) type Locate<'a> = dyn Fn(Range<usize>, Option<&str>, String) -> ConfigError + 'a;

/// A router table as its typed config. On an error, find the key it is about: the one the
/// message names (`unknown field`), one that looks like a missing field (`kindx` for `kind`),
/// or the one without which the table is accepted (`retry_after = -3`), and point at it.
fn router_from(
    table: RawTable,
    span: Range<usize>,
    at: &Locate<'_>,
) -> Result<RouterConfig, ConfigError> {
    let plain = |skip: Option<&str>| -> toml::Value {
        toml::Value::Table(
            table
                .iter()
                .filter(|(k, _)| Some(k.get_ref().as_str()) != skip)
                .map(|(k, v)| (k.get_ref().clone(), v.get_ref().clone()))
                .collect(),
        )
    };
    let first = match plain(None).try_into::<RouterConfig>() {
        Ok(rc) => return Ok(rc),
        Err(e) => e.message().trim().to_string(),
    };
    let key_named = |k: &str| table.keys().find(|x| x.get_ref() == k);
    if let Some(k) = quoted_after(&first, "unknown field `") {
        let hint = closest(k, &quoted_list(&first, "expected one of "))
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        if let Some(ks) = key_named(k) {
            return Err(at(ks.span(), Some(k), format!("{first}{hint}")));
        }
    }
    if let Some(v) = quoted_after(&first, "unknown variant `")
        && let Some(k) = key_named("kind")
        && let Some(value) = table.get(k)
    {
        let hint = closest(v, &quoted_list(&first, "expected one of "))
            .map(|c| format!("; did you mean `{c}`?"))
            .unwrap_or_default();
        return Err(at(value.span(), Some("kind"), format!("{first}{hint}")));
    }
    if let Some(missing) = quoted_after(&first, "missing field `") {
        let near = table
            .keys()
            .filter(|k| k.get_ref() != missing)
            .find(|k| closest(k.get_ref(), &[missing]).is_some());
        if let Some(k) = near {
            return Err(at(
                k.span(),
                Some(k.get_ref()),
                format!(
                    "{first}; `{}` is not a field: did you mean `{missing}`?",
                    k.get_ref()
                ),
            ));
        }
        return Err(at(span, Some(missing), first.clone()));
    }
    for (k, v) in table.iter().filter(|(k, _)| k.get_ref() != "kind") {
        let without = plain(Some(k.get_ref())).try_into::<RouterConfig>();
        if without.is_ok() {
            return Err(at(v.span(), Some(k.get_ref()), first));
        }
    }
    Err(at(span, None, first))
}

/// The candidate closest to `word` by edit distance, if it is close (a typo).
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests;
