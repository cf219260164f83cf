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

use crate::hooks::{RawPath, RawSmokePath, RawWarmupPath};
use crate::router::RouterConfig;
use crate::timefmt::serde_duration;

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

/// A config that parsed but cannot be used as it stands, found when a driver is built (a
/// `token_env` variable that is not set...): a usage error (exit 2), like a [`ConfigError`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem(pub String);

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigProblem {}

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
    /// `cutover canary`: the canary's share at each step, rising, the last one 100 (the swap).
    pub canary_steps: Vec<u8>,
    /// How long each canary step holds while its analysis runs.
    pub canary_pause: Duration,
    /// The canary's error rate (router errors / requests on the canary slot during a step)
    /// above which the canary is aborted, as a fraction (0.01 = 1 %).
    pub canary_max_error_rate: f64,
}

/// The default canary plan: 5, 25, 50, 100 %.
pub const DEFAULT_CANARY_STEPS: [u8; 4] = [5, 25, 50, 100];

/// Parse a canary plan: `["5%", "25%", "50%", "100%"]` (the `%` is optional). The shares rise,
/// are 1 to 100, and the last is 100 (the swap).
pub fn parse_canary_steps<S: AsRef<str>>(steps: &[S]) -> std::result::Result<Vec<u8>, String> {
    let mut out: Vec<u8> = Vec::new();
    for s in steps {
        let s = s.as_ref().trim();
        let n: u8 = s
            .trim_end_matches('%')
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=100).contains(n))
            .ok_or_else(|| format!("`{s}` is not a share from 1% to 100%"))?;
        if out.last().is_some_and(|&l| l >= n) {
            return Err(format!(
                "the steps must rise; `{s}` comes after {}%",
                out[out.len() - 1]
            ));
        }
        out.push(n);
    }
    if out.last() != Some(&100) {
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

impl Environment {
    pub fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub name: String,
    /// Base URL the proxy sends traffic to, e.g. `http://127.0.0.1:9001`.
    pub address: String,
    /// Full URL of the health endpoint.
    pub health_url: String,
    /// Full URL of the version endpoint.
    pub version_url: String,
    /// JSON pointer to the version in the version body (`/version`); plain text when absent.
    pub version_pointer: Option<String>,
    /// The health endpoint's expected status.
    pub expect_status: u16,
    /// The servers of this slot, for slots with several (rolling deploys).
    pub nodes: Vec<Node>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub address: String,
}

// ---------------------------------------------------------------------------------------
// Raw, spanned form.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    settings: Settings,
    #[serde(default)]
    keys: Option<Spanned<std::collections::BTreeMap<String, KeyList>>>,
    #[serde(default, rename = "environment")]
    environments: Vec<RawEnvironment>,
    #[serde(default, rename = "notify")]
    notify: Vec<Spanned<RawNotify>>,
}

fn default_notify_retries() -> u32 {
    3
}
fn default_notify_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    url: Spanned<String>,
    #[serde(default)]
    format: crate::notify::Format,
    events: Option<Spanned<Vec<Spanned<String>>>>,
    min_severity: Option<crate::notify::Severity>,
    token_env: Option<String>,
    #[serde(default = "default_notify_retries")]
    retries: u32,
    #[serde(default = "default_notify_timeout", with = "serde_duration")]
    timeout: Duration,
}

/// One key or a list of keys.
#[derive(Deserialize)]
#[serde(untagged)]
enum KeyList {
    One(String),
    Many(Vec<String>),
}

fn default_watch() -> Duration {
    Duration::from_secs(30)
}
fn default_verify() -> Duration {
    Duration::from_secs(10)
}
fn default_canary_pause() -> Duration {
    Duration::from_secs(60)
}
fn default_rollback_window() -> Duration {
    Duration::from_secs(600)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    name: Spanned<String>,
    public_url: Option<Spanned<String>>,
    preview_url: Option<Spanned<String>>,
    #[serde(default)]
    production: bool,
    #[serde(default)]
    confirm: ConfirmMode,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    auto_rollback: bool,
    #[serde(default = "default_watch", with = "serde_duration")]
    watch: Duration,
    #[serde(default = "default_verify", with = "serde_duration")]
    verify_timeout: Duration,
    gate_checks: Option<usize>,
    #[serde(default, rename = "slot")]
    slots: Vec<RawSlot>,
    #[serde(default, rename = "router")]
    routers: Vec<Spanned<RawTable>>,
    rolling: Option<Spanned<Rolling>>,
    #[serde(default)]
    allow_drill: bool,
    #[serde(default)]
    fleet: FleetOrder,
    #[serde(default)]
    drill_loopback_only: bool,
    #[serde(default = "default_rollback_window", with = "serde_duration")]
    rollback_window: Duration,
    one_key_rollback: Option<bool>,
    #[serde(default)]
    warmup_paths: Vec<Spanned<RawPath<RawWarmupPath>>>,
    warmup_command: Option<Spanned<Vec<String>>>,
    #[serde(default = "default_warmup_timeout", with = "serde_duration")]
    warmup_timeout: Duration,
    smoke: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    smoke_paths: Vec<Spanned<RawPath<RawSmokePath>>>,
    #[serde(default = "default_smoke_timeout", with = "serde_duration")]
    smoke_timeout: Duration,
    on_done: Option<Spanned<Vec<String>>>,
    on_rollback: Option<Spanned<Vec<String>>>,
    on_failed: Option<Spanned<Vec<String>>>,
    #[serde(default = "default_after_timeout", with = "serde_duration")]
    hook_timeout: Duration,
    #[serde(default)]
    hook_pass_env: Vec<Spanned<String>>,
    canary_steps: Option<Spanned<Vec<String>>>,
    #[serde(default = "default_canary_pause", with = "serde_duration")]
    canary_pause: Duration,
    canary_max_error_rate: Option<Spanned<f64>>,
}

fn default_warmup_timeout() -> Duration {
    crate::hooks::DEFAULT_WARMUP_TIMEOUT
}
fn default_smoke_timeout() -> Duration {
    crate::hooks::DEFAULT_SMOKE_TIMEOUT
}
fn default_after_timeout() -> Duration {
    crate::hooks::DEFAULT_HOOK_TIMEOUT
}

/// A table kept with the positions of its keys and values, turned into its typed form
/// afterwards, so an error can name the key it is about and point at its line.
type RawTable = std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>>;

fn default_health() -> Spanned<String> {
    Spanned::new(0..0, "/health".into())
}
fn default_version() -> Spanned<String> {
    Spanned::new(0..0, "/version".into())
}
fn default_status() -> u16 {
    200
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSlot {
    name: Spanned<String>,
    address: Spanned<String>,
    #[serde(default = "default_health")]
    health: Spanned<String>,
    #[serde(default = "default_version")]
    version: Spanned<String>,
    version_pointer: Option<Spanned<String>>,
    #[serde(default = "default_status")]
    expect_status: u16,
    #[serde(default)]
    nodes: Vec<Node>,
}

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
    let s = &raw.settings;
    for (key, d) in [("poll_interval", s.poll_interval), ("timeout", s.timeout)] {
        if d.is_zero() {
            return Err(at(
                settings_value(src, key).unwrap_or(0..0),
                Some(key),
                "must be more than zero".into(),
            ));
        }
    }
    let setting = |key: &str| settings_value(src, key).unwrap_or(0..0);
    if let StoreSetting::Etcd(e) = &s.store
        && let Some(m) = e.problem()
    {
        let span = table_value(src, "settings.store", "etcd").unwrap_or_else(|| setting("store"));
        return Err(at(span, Some("store"), m));
    }
    if s.gate_checks == 0 || s.gate_checks > MAX_GATE_CHECKS {
        return Err(at(
            setting("gate_checks"),
            Some("gate_checks"),
            format!("must be between 1 and {MAX_GATE_CHECKS}"),
        ));
    }
    if s.history == 0 || s.history > MAX_HISTORY {
        return Err(at(
            setting("history"),
            Some("history"),
            format!(
                "must be between 1 and {MAX_HISTORY} (polls kept for the sparkline); it is {}",
                s.history
            ),
        ));
    }
    if s.max_body == 0 || s.max_body > MAX_BODY {
        return Err(at(
            setting("max_body"),
            Some("max_body"),
            format!(
                "must be between 1 and {MAX_BODY} bytes (16 MiB); it is {}",
                s.max_body
            ),
        ));
    }
    if raw.environments.is_empty() {
        return Err(at(
            0..0,
            None,
            "no [[environment]] is defined; `cutover init` writes a complete example".into(),
        ));
    }

    let mut env_names = BTreeSet::new();
    let mut environments = Vec::new();
    for mut re in raw.environments {
        let mut raw_hooks = re_hooks(&mut re);
        let name = re.name.get_ref().clone();
        if name.trim().is_empty() {
            return Err(at(re.name.span(), Some("name"), "must not be empty".into()));
        }
        if !crate::paths::is_safe_name(&name) {
            return Err(at(
                re.name.span(),
                Some("name"),
                format!(
                    "environment name `{name}` is not allowed: it is used in file names, so \
                     it must be {}",
                    crate::paths::SAFE_NAME_RULE
                ),
            ));
        }
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
        let mut slot_names = BTreeSet::new();
        let mut slots = Vec::new();
        for rs in re.slots {
            let sname = rs.name.get_ref().clone();
            if !crate::paths::is_safe_name(&sname) {
                return Err(at(
                    rs.name.span(),
                    Some("name"),
                    format!(
                        "slot name `{sname}` is not allowed: it is used in file names and proxy \
                         configs, so it must be {}",
                        crate::paths::SAFE_NAME_RULE
                    ),
                ));
            }
            for n in &rs.nodes {
                if !crate::paths::is_safe_name(&n.name) {
                    let span =
                        find_value_in(src, rs.name.span().start, "nodes").unwrap_or(rs.name.span());
                    return Err(at(
                        span,
                        Some("nodes"),
                        format!(
                            "node name `{}` is not allowed: it must be {}",
                            n.name,
                            crate::paths::SAFE_NAME_RULE
                        ),
                    ));
                }
            }
            if !slot_names.insert(sname.clone()) {
                return Err(at(
                    rs.name.span(),
                    Some("name"),
                    format!("slot `{sname}` is defined twice in environment `{name}`"),
                ));
            }
            check_url(rs.address.get_ref()).map_err(|m| at(rs.address.span(), None, m))?;
            let address = rs.address.get_ref().trim_end_matches('/').to_string();
            let join = |p: &Spanned<String>| -> Result<String, ConfigError> {
                let v = p.get_ref();
                if v.starts_with("http://") || v.starts_with("https://") {
                    check_url(v).map_err(|m| at(p.span(), None, m))?;
                    Ok(v.clone())
                } else if v.starts_with('/') {
                    Ok(format!("{address}{v}"))
                } else {
                    Err(at(
                        p.span(),
                        None,
                        format!("`{v}` must be a path starting with / or a full http(s) URL"),
                    ))
                }
            };
            let health_url = join(&rs.health)?;
            let version_url = join(&rs.version)?;
            if let Some(p) = &rs.version_pointer {
                let v = p.get_ref();
                if !v.is_empty() && !v.starts_with('/') {
                    return Err(at(
                        p.span(),
                        None,
                        format!(
                            "`{v}` is not a JSON pointer; write it like \"/version\" or \"/build/version\""
                        ),
                    ));
                }
            }
            for n in &rs.nodes {
                check_url(&n.address).map_err(|m| {
                    at(
                        rs.address.span(),
                        Some("nodes"),
                        format!("node `{}`: {m}", n.name),
                    )
                })?;
            }
            slots.push(Slot {
                name: sname,
                address,
                health_url,
                version_url,
                version_pointer: rs.version_pointer.map(|p| p.into_inner()),
                expect_status: rs.expect_status,
                nodes: rs.nodes,
            });
        }
        let mut routers = Vec::new();
        let mut router_names = BTreeSet::new();
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
        for rr in re.routers {
            let span = rr.span();
            let mut rc = router_from(rr.into_inner(), span.clone(), &at)?;
            if rc.name() != rc.kind() && !crate::paths::is_safe_name(rc.name()) {
                return Err(at(
                    find_value_in(src, span.start, "name").unwrap_or(span.clone()),
                    Some("name"),
                    format!(
                        "router name `{}` is not allowed: it is used in file names, so it must \
                         be {}",
                        rc.name(),
                        crate::paths::SAFE_NAME_RULE
                    ),
                ));
            }
            rc.validate(&slots).map_err(|m| at(span.clone(), None, m))?;
            if let RouterConfig::Embedded(c) = &mut rc
                && c.state_file.is_none()
            {
                let dir = raw
                    .settings
                    .state_dir
                    .clone()
                    .unwrap_or_else(crate::paths::state_dir);
                c.state_file = Some(c.state_path_in(&name, &dir));
            }
            if !router_names.insert(rc.name().to_string()) {
                return Err(at(
                    span,
                    Some("name"),
                    format!(
                        "two routers of environment `{name}` are both called `{}`; give each a `name`",
                        rc.name()
                    ),
                ));
            }
            routers.push(rc);
        }
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
        let canary_max_error_rate = match &re.canary_max_error_rate {
            None => 0.01,
            Some(r) if (0.0..=1.0).contains(r.get_ref()) => *r.get_ref(),
            Some(r) => {
                return Err(at(
                    r.span(),
                    Some("canary_max_error_rate"),
                    "must be a fraction from 0 to 1 (0.01 is 1 %)".into(),
                ));
            }
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
            canary_steps,
            canary_pause: re.canary_pause,
            canary_max_error_rate,
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

/// Makes a located [`ConfigError`]: span, field, message.
type ErrorAt<'a> = dyn Fn(Range<usize>, Option<&str>, String) -> ConfigError + 'a;

/// One `[[notify]]` entry, checked.
fn notify_from(
    src: &str,
    rn: Spanned<RawNotify>,
    at: &ErrorAt<'_>,
) -> Result<crate::notify::NotifyConfig, ConfigError> {
    use crate::notify::{EventKind, MAX_RETRIES, NotifyConfig, Severity};
    let span = rn.span();
    let rn = rn.into_inner();
    let key = |k: &str| find_value_in(src, rn.url.span().start, k).unwrap_or(span.clone());
    check_url(rn.url.get_ref()).map_err(|m| at(rn.url.span(), Some("url"), m))?;
    let events = match &rn.events {
        None => None,
        Some(list) => {
            if rn.min_severity.is_some() {
                return Err(at(
                    key("min_severity"),
                    Some("min_severity"),
                    "give `events` or `min_severity`, not both: `events` lists exactly what this                      webhook gets"
                        .into(),
                ));
            }
            if list.get_ref().is_empty() {
                return Err(at(
                    list.span(),
                    Some("events"),
                    "is empty, so this webhook would get nothing; list events or remove the entry"
                        .into(),
                ));
            }
            let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
            let mut kinds = Vec::new();
            for e in list.get_ref() {
                let Some(k) = EventKind::from_name(e.get_ref()) else {
                    let hint = closest(e.get_ref(), &names)
                        .map(|c| format!("did you mean `{c}`? "))
                        .unwrap_or_default();
                    return Err(at(
                        e.span(),
                        Some("events"),
                        format!(
                            "unknown event `{}`; {hint}the events are: {}",
                            e.get_ref(),
                            names.join(", ")
                        ),
                    ));
                };
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            Some(kinds)
        }
    };
    if rn.retries > MAX_RETRIES {
        return Err(at(
            key("retries"),
            Some("retries"),
            format!(
                "must be at most {MAX_RETRIES} (attempts after the first); it is {}",
                rn.retries
            ),
        ));
    }
    if rn.timeout.is_zero() {
        return Err(at(
            key("timeout"),
            Some("timeout"),
            "must be more than zero: it is how long one delivery attempt may take".into(),
        ));
    }
    Ok(NotifyConfig {
        url: rn.url.into_inner(),
        format: rn.format,
        events,
        min_severity: rn.min_severity.unwrap_or(Severity::Info),
        token_env: rn.token_env,
        retries: rn.retries,
        timeout: rn.timeout,
    })
}

/// Tell [`crate::redact`] the credentials a router's config points at, so their values are
/// hidden wherever they appear: `token_env`, `password_env`, the first line of `password_file`,
/// and exec's `env` values and `pass_env` variables whose names look secret (`*_TOKEN`,
/// `*PASSWORD`...).
fn register_secrets(r: &RouterConfig) {
    use crate::redact::{register_env, register_secret};
    let secret_name = |k: &str| {
        let k = k.to_ascii_lowercase();
        [
            "token",
            "password",
            "passwd",
            "secret",
            "apikey",
            "api_key",
            "credential",
        ]
        .iter()
        .any(|w| k.contains(w))
    };
    match r {
        RouterConfig::Embedded(c) => c.token_env.iter().for_each(|v| register_env(v)),
        RouterConfig::Apache(c) => {
            c.password_env.iter().for_each(|v| register_env(v));
            if let Some(f) = &c.password_file
                && let Ok(text) = std::fs::read_to_string(f)
            {
                register_secret(text.lines().next().unwrap_or_default());
            }
        }
        RouterConfig::Exec(c) => {
            for (k, v) in &c.env {
                if secret_name(k) {
                    register_secret(v);
                }
            }
            for k in c.pass_env.iter().filter(|k| secret_name(k)) {
                register_env(k);
            }
        }
        RouterConfig::Haproxy(_) | RouterConfig::Nginx(_) | RouterConfig::Caddy(_) => {}
    }
}

/// The hook keys of one `[[environment]]`, taken out of it.
struct RawHooks {
    warmup_paths: Vec<Spanned<RawPath<RawWarmupPath>>>,
    warmup_command: Option<Spanned<Vec<String>>>,
    warmup_timeout: Duration,
    smoke: Option<Spanned<Vec<String>>>,
    smoke_paths: Vec<Spanned<RawPath<RawSmokePath>>>,
    smoke_timeout: Duration,
    on_done: Option<Spanned<Vec<String>>>,
    on_rollback: Option<Spanned<Vec<String>>>,
    on_failed: Option<Spanned<Vec<String>>>,
    hook_timeout: Duration,
    hook_pass_env: Vec<Spanned<String>>,
}

fn re_hooks(re: &mut RawEnvironment) -> RawHooks {
    RawHooks {
        warmup_paths: std::mem::take(&mut re.warmup_paths),
        warmup_command: re.warmup_command.take(),
        warmup_timeout: re.warmup_timeout,
        smoke: re.smoke.take(),
        smoke_paths: std::mem::take(&mut re.smoke_paths),
        smoke_timeout: re.smoke_timeout,
        on_done: re.on_done.take(),
        on_rollback: re.on_rollback.take(),
        on_failed: re.on_failed.take(),
        hook_timeout: re.hook_timeout,
        hook_pass_env: std::mem::take(&mut re.hook_pass_env),
    }
}

/// Makes a [`ConfigError`] from a span, the field, and the message.
type LocateError<'a> = dyn Fn(Range<usize>, Option<&str>, String) -> ConfigError + 'a;

/// Check the hook keys; every error names its key and where it is.
fn parse_hooks(
    raw: &mut RawHooks,
    src: &str,
    at: &LocateError<'_>,
) -> Result<crate::hooks::Hooks, ConfigError> {
    use crate::hooks::{AFTER_VARS, Hooks, SMOKE_VARS, WARMUP_VARS, validate_command};
    let mut h = Hooks {
        warmup_timeout: raw.warmup_timeout,
        smoke_timeout: raw.smoke_timeout,
        hook_timeout: raw.hook_timeout,
        ..Hooks::default()
    };
    for p in std::mem::take(&mut raw.warmup_paths) {
        let span = p.span();
        h.warmup_paths.push(
            p.into_inner()
                .into_warmup()
                .map_err(|m| at(span, Some("warmup_paths"), m))?,
        );
    }
    for p in std::mem::take(&mut raw.smoke_paths) {
        let span = p.span();
        h.smoke_paths.push(
            p.into_inner()
                .into_smoke()
                .map_err(|m| at(span, Some("smoke_paths"), m))?,
        );
    }
    for (key, cmd, vars, into) in [
        (
            "warmup_command",
            raw.warmup_command.take(),
            WARMUP_VARS,
            &mut h.warmup_command,
        ),
        ("smoke", raw.smoke.take(), SMOKE_VARS, &mut h.smoke),
        ("on_done", raw.on_done.take(), AFTER_VARS, &mut h.on_done),
        (
            "on_rollback",
            raw.on_rollback.take(),
            AFTER_VARS,
            &mut h.on_rollback,
        ),
        (
            "on_failed",
            raw.on_failed.take(),
            AFTER_VARS,
            &mut h.on_failed,
        ),
    ] {
        let Some(c) = cmd else { continue };
        validate_command(c.get_ref(), vars).map_err(|m| at(c.span(), Some(key), m))?;
        *into = c.into_inner();
    }
    for (key, d) in [
        ("warmup_timeout", raw.warmup_timeout),
        ("smoke_timeout", raw.smoke_timeout),
        ("hook_timeout", raw.hook_timeout),
    ] {
        if d.is_zero() {
            return Err(at(
                find_key(src, key).unwrap_or(0..0),
                Some(key),
                "must be more than zero".into(),
            ));
        }
    }
    for k in std::mem::take(&mut raw.hook_pass_env) {
        let name = k.get_ref();
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(at(
                k.span(),
                Some("hook_pass_env"),
                format!("`{name}` is not a variable name (empty, or contains `=` or NUL)"),
            ));
        }
        h.pass_env.push(k.into_inner());
    }
    Ok(h)
}

fn check_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| format!("`{u}` is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("`{u}` has no host"));
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && !host.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("`{u}` has a bad port `{port}`"));
    }
    Ok(())
}

/// 1-based line and column of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, col)
}

/// The key on the line holding `offset`, if that line is `key = value`.
fn key_at(src: &str, offset: usize) -> Option<String> {
    let offset = offset.min(src.len());
    let start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let line = &src[start..end];
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#')).then(|| key.to_string())
}

/// 1-based line and column of byte `offset` in text that may not be UTF-8 after it.
fn line_col_bytes(b: &[u8], offset: usize) -> (usize, usize) {
    let before = String::from_utf8_lossy(&b[..offset.min(b.len())]);
    line_col(&before, before.len())
}

/// The span of `key`'s value in `[settings]`.
fn settings_value(src: &str, key: &str) -> Option<Range<usize>> {
    table_value(src, "settings", key)
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

/// Line and column of `key` in `[settings]` of the config file `c` came from, for messages
/// about a setting found wrong after loading (an unknown theme).
pub fn setting_position(c: &Config, key: &str) -> Option<(usize, usize)> {
    let src = std::fs::read_to_string(&c.path).ok()?;
    settings_value(&src, key).map(|r| line_col(&src, r.start))
}

/// Makes a [`ConfigError`] at a span of the source, about a field, with a message.
type Locate<'a> = dyn Fn(Range<usize>, Option<&str>, String) -> ConfigError + 'a;

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

/// The text between `prefix` and the next backtick.
fn quoted_after<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &s[s.find(prefix)? + prefix.len()..];
    rest.split('`').next()
}

/// The backticked words after `prefix`: serde's "expected one of `a`, `b`".
fn quoted_list<'a>(s: &'a str, prefix: &str) -> Vec<&'a str> {
    s.find(prefix).map_or_else(Vec::new, |i| {
        s[i + prefix.len()..]
            .split('`')
            .skip(1)
            .step_by(2)
            .collect()
    })
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

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The span of the value of `key` in the table whose header or first key is at `from`: the
/// line `key = value` before the next table header. For errors about one key of a table.
fn find_value_in(src: &str, from: usize, key: &str) -> Option<Range<usize>> {
    let from = from.min(src.len());
    // Back to the table's header (or the start of the file).
    let mut off = src[..from].rfind('\n').map_or(0, |i| i + 1);
    let header = |o: usize| {
        src[o..]
            .lines()
            .next()
            .is_some_and(|l| l.trim_start().starts_with('['))
    };
    while off > 0 && !header(off) {
        off = src[..off - 1].rfind('\n').map_or(0, |i| i + 1);
    }
    for (i, line) in src[off..].split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with('[') {
            return None;
        }
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let eq = line.find('=').unwrap_or(0);
            let value = line[eq + 1..].len() - line[eq + 1..].trim_start().len();
            let start = off + eq + 1 + value;
            return Some(start..start + line.trim_end().len().saturating_sub(eq + 1 + value));
        }
        off += line.len();
    }
    None
}

/// The first line of `src` that starts with `key`, as a span: where an error about a
/// top-level duration key points when its value's own span is gone.
fn find_key(src: &str, key: &str) -> Option<Range<usize>> {
    let mut off = 0;
    for line in src.split_inclusive('\n') {
        if line.trim_start().starts_with(key) {
            let i = off + line.find(key).unwrap_or(0);
            return Some(i..i + key.len());
        }
        off += line.len();
    }
    None
}

#[cfg(test)]
mod tests {

    #[test]
    fn canary_steps_rise_to_100() {
        assert_eq!(
            parse_canary_steps(&["5%", "25%", "50%", "100%"]),
            Ok(vec![5, 25, 50, 100])
        );
        assert_eq!(parse_canary_steps(&["50", "100"]), Ok(vec![50, 100]));
        assert!(
            parse_canary_steps(&["25%", "5%", "100%"])
                .unwrap_err()
                .contains("rise")
        );
        assert!(
            parse_canary_steps(&["5%", "50%"])
                .unwrap_err()
                .contains("100%")
        );
        assert!(
            parse_canary_steps(&["0%", "100%"])
                .unwrap_err()
                .contains("1% to 100%")
        );
        assert!(parse_canary_steps::<&str>(&[]).is_err());
    }

    use super::*;

    const GOOD: &str = r#"
[settings]
poll_interval = "1s"

[[environment]]
name = "shop"
public_url = "http://127.0.0.1:8080/"

[[environment.slot]]
name = "blue"
address = "http://127.0.0.1:9001"

[[environment.slot]]
name = "green"
address = "http://127.0.0.1:9002"
health = "http://127.0.0.1:9002/healthz"
version_pointer = "/version"
"#;

    fn err(src: &str) -> ConfigError {
        match parse(src, Path::new("cutover.toml")) {
            Ok(_) => panic!("config was accepted:\n{src}"),
            Err(e) => e,
        }
    }

    #[test]
    fn the_store_is_the_state_dir_or_an_etcd_cluster() {
        let c = parse(GOOD, Path::new("cutover.toml")).expect("good");
        assert_eq!(c.settings.store, StoreSetting::File);
        let file = GOOD.replace("poll_interval = \"1s\"\n", "store = \"file\"\n");
        let c = parse(&file, Path::new("cutover.toml")).expect("store = file");
        assert_eq!(c.settings.store, StoreSetting::File);
        let etcd = GOOD.replace(
            "poll_interval = \"1s\"\n",
            "[settings.store]\netcd = [\"http://127.0.0.1:2379\", \"http://127.0.0.1:22379\"]\n",
        );
        let c = parse(&etcd, Path::new("cutover.toml")).expect("etcd");
        let StoreSetting::Etcd(e) = &c.settings.store else {
            panic!("{:?}", c.settings.store)
        };
        assert_eq!(e.etcd.len(), 2);
        assert_eq!(e.prefix, "/cutover/");
        assert_eq!(e.lease_ttl, Duration::from_secs(10));
        let e = err(&GOOD.replace("poll_interval = \"1s\"\n", "store = \"consul\"\n"));
        assert!(e.message.contains("unknown store `consul`"), "{e}");
        let e = err(&GOOD.replace("poll_interval = \"1s\"\n", "[settings.store]\netcd = []\n"));
        assert_eq!((e.line, e.field.as_deref()), (4, Some("store")), "{e}");
        assert!(e.message.contains("no member"), "{e}");
        let e = err(&GOOD.replace(
            "poll_interval = \"1s\"\n",
            "[settings.store]\netcd = [\"127.0.0.1:2379\"]\n",
        ));
        assert!(e.message.contains("not an http://"), "{e}");
        let e = err(&GOOD.replace(
            "poll_interval = \"1s\"\n",
            "[settings.store]\netcd = [\"http://127.0.0.1:2379\"]\nprefx = \"/x/\"\n",
        ));
        assert!(e.message.contains("did you mean `prefix`"), "{e}");
    }

    #[test]
    fn the_embedded_proxy_keeps_its_state_in_the_state_dir() {
        let src = GOOD.replace(
            "poll_interval = \"1s\"\n",
            "poll_interval = \"1s\"\nstate_dir = \"/srv/cutover\"\n",
        ) + "[[environment.router]]\nkind = \"embedded\"\n";
        let c = parse(&src, Path::new("x.toml")).expect("valid");
        let crate::router::RouterConfig::Embedded(r) = &c.environments[0].routers[0] else {
            panic!("embedded")
        };
        assert_eq!(
            r.state_file.as_deref(),
            Some(Path::new("/srv/cutover/proxy-shop.json"))
        );
        // Whatever name it is given, the path stays in the state dir.
        let mut r = r.clone();
        r.state_file = None;
        let dir = Path::new("/srv/cutover");
        for env in ["../../evil", "..", "a/b", ".x"] {
            let p = r.state_path_in(env, dir);
            assert_eq!(p.parent(), Some(dir), "{env}: {}", p.display());
            let name = p.file_name().map(|n| n.to_string_lossy().to_string());
            assert!(name.is_some_and(|n| crate::paths::file_in(dir, &n).is_some()));
        }
    }

    #[test]
    fn a_good_config_has_defaults_filled_in() {
        let c = parse(&with_router(""), Path::new("x.toml")).expect("valid");
        assert_eq!(c.settings.poll_interval, Duration::from_secs(1));
        assert_eq!(c.settings.timeout, Duration::from_secs(1));
        let e = &c.environments[0];
        assert_eq!(e.gate_checks, 3);
        assert_eq!(e.watch, Duration::from_secs(30));
        assert_eq!(e.slots[0].health_url, "http://127.0.0.1:9001/health");
        assert_eq!(e.slots[0].version_url, "http://127.0.0.1:9001/version");
        assert_eq!(e.slots[1].health_url, "http://127.0.0.1:9002/healthz");
        assert_eq!(e.slots[1].version_pointer.as_deref(), Some("/version"));
    }

    #[test]
    fn unknown_key_names_line_column_and_field() {
        let src = GOOD.replace("poll_interval = \"1s\"", "poll_intervall = \"1s\"");
        let e = err(&src);
        assert_eq!((e.line, e.column), (3, 1), "{e}");
        assert!(e.to_string().starts_with("cutover.toml:3:1:"), "{e}");
        assert!(e.message.contains("unknown field `poll_intervall`"), "{e}");
        assert!(e.message.contains("did you mean `poll_interval`?"), "{e}");
    }

    #[test]
    fn bad_duration_says_how_to_write_one() {
        let e = err(&GOOD.replace("\"1s\"", "\"fast\""));
        assert_eq!(e.line, 3);
        assert_eq!(e.field.as_deref(), Some("poll_interval"));
        assert!(e.message.contains("\"500ms\""), "{e}");
    }

    #[test]
    fn wrong_type_is_located() {
        let e = err(&GOOD.replace("name = \"blue\"", "name = 7"));
        assert_eq!(e.line, 10, "{e}");
        assert_eq!(e.field.as_deref(), Some("name"));
    }

    #[test]
    fn duplicate_slot_is_refused_at_the_second_one() {
        let e = err(&GOOD.replace("name = \"green\"", "name = \"blue\""));
        assert_eq!(e.line, 14, "{e}");
        assert!(e.message.contains("slot `blue` is defined twice"), "{e}");
    }

    #[test]
    fn bad_url_is_refused() {
        let e = err(&GOOD.replace("http://127.0.0.1:9001", "127.0.0.1:9001"));
        assert_eq!((e.line, e.column), (11, 11), "{e}");
        assert_eq!(e.field.as_deref(), Some("address"));
        assert!(e.message.contains("not an http"), "{e}");
        let e = err(&GOOD.replace("http://127.0.0.1:9001", "http://127.0.0.1:99999"));
        assert!(e.message.contains("bad port"), "{e}");
    }

    #[test]
    fn bad_health_path_and_pointer_are_refused() {
        let e = err(&GOOD.replace("http://127.0.0.1:9002/healthz", "healthz"));
        assert_eq!(e.field.as_deref(), Some("health"));
        let e = err(&GOOD.replace("\"/version\"", "\"version\""));
        assert_eq!(e.field.as_deref(), Some("version_pointer"));
        assert!(e.message.contains("JSON pointer"));
    }

    #[test]
    fn missing_environment_and_missing_slots_are_explained() {
        let e = err("[settings]\n");
        assert!(e.message.contains("cutover init"), "{e}");
        let e = err("[[environment]]\nname = \"x\"\n");
        assert_eq!(e.line, 2);
        assert!(e.message.contains("has no [[environment.slot]]"), "{e}");
    }

    #[test]
    fn missing_required_field_is_named() {
        let e = err(&GOOD.replace("address = \"http://127.0.0.1:9001\"\n", ""));
        assert!(e.message.contains("missing field `address`"), "{e}");
    }

    #[test]
    fn names_used_in_paths_are_refused_at_their_own_line() {
        let e = err(&GOOD.replace("name = \"shop\"", "name = \"../../evil\""));
        assert_eq!((e.line, e.column), (6, 8), "{e}");
        assert_eq!(e.field.as_deref(), Some("name"));
        assert!(e.message.contains("`../../evil` is not allowed"), "{e}");
        assert!(
            e.to_string().starts_with("cutover.toml:6:8: field `name`:"),
            "{e}"
        );
        let e = err(&GOOD.replace("name = \"blue\"", "name = \".blue\""));
        assert_eq!((e.line, e.field.as_deref()), (10, Some("name")), "{e}");
        let e = err(&GOOD.replace("name = \"green\"", "name = \"gr een\""));
        assert_eq!(e.line, 14, "{e}");
        let src =
            format!("{GOOD}\n[[environment.router]]\nkind = \"embedded\"\n\nname = \"a/b\"\n");
        let e = err(&src);
        assert_eq!((e.line, e.column), (22, 8), "{e}");
        assert_eq!(e.field.as_deref(), Some("name"));
        assert!(e.message.contains("router name `a/b`"), "{e}");
        let src = GOOD.replace(
            "name = \"blue\"\n",
            "nodes = [{ name = \"..\", address = \"http://127.0.0.1:1\" }]\nname = \"blue\"\n",
        );
        let e = err(&src);
        assert_eq!((e.line, e.field.as_deref()), (10, Some("nodes")), "{e}");
    }

    /// GOOD with an embedded router table holding `fields`; the table's header is line 19.
    fn with_router(fields: &str) -> String {
        format!("{GOOD}\n[[environment.router]]\nkind = \"embedded\"\n{fields}")
    }

    #[test]
    fn a_bad_router_value_is_named_at_its_own_line() {
        let e = err(&with_router(
            "live_listen = \"127.0.0.1:1\"\nretry_after = -3\n",
        ));
        assert_eq!((e.line, e.column), (22, 15), "{e}");
        assert_eq!(e.field.as_deref(), Some("retry_after"));
        assert!(
            e.to_string()
                .starts_with("cutover.toml:22:15: field `retry_after`: invalid value"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_router_key_is_named_at_its_own_line_with_a_suggestion() {
        let e = err(&with_router(
            "live_listen = \"127.0.0.1:1\"\nretry_aftr = 3\n",
        ));
        assert_eq!((e.line, e.column), (22, 1), "{e}");
        assert_eq!(e.field.as_deref(), Some("retry_aftr"));
        assert!(e.message.contains("unknown field `retry_aftr`"), "{e}");
        assert!(e.message.contains("did you mean `retry_after`?"), "{e}");
        let src = GOOD.to_string() + "\n[[environment.router]]\nkindx = \"embedded\"\n";
        let e = err(&src);
        assert_eq!((e.line, e.column), (20, 1), "{e}");
        assert_eq!(e.field.as_deref(), Some("kindx"));
        assert!(e.message.contains("missing field `kind`"), "{e}");
        assert!(e.message.contains("did you mean `kind`?"), "{e}");
        let e = err(&(GOOD.to_string() + "\n[[environment.router]]\nkind = \"embeded\"\n"));
        assert_eq!(
            (e.line, e.column, e.field.as_deref()),
            (20, 8, Some("kind")),
            "{e}"
        );
        assert!(e.message.contains("did you mean `embedded`?"), "{e}");
    }

    #[test]
    fn settings_out_of_range_are_refused_at_their_line() {
        for (line, field, text) in [
            (4, "max_body", "max_body = 0"),
            (4, "history", "history = 0"),
            (4, "history", "history = 100000000000"),
            (4, "gate_checks", "gate_checks = 0"),
            (4, "timeout", "timeout = \"0s\""),
        ] {
            let e = err(&GOOD.replace(
                "poll_interval = \"1s\"\n",
                &format!("poll_interval = \"1s\"\n{text}\n"),
            ));
            assert_eq!(e.line, line, "{text}: {e}");
            assert_eq!(e.field.as_deref(), Some(field), "{text}: {e}");
            assert!(e.message.contains("between") || e.message.contains("more than zero"));
        }
        let e = err(&GOOD.replace("\"1s\"", "\"8d\""));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (3, Some("poll_interval")),
            "{e}"
        );
        assert!(e.message.contains("7 days"), "{e}");
    }

    #[test]
    fn an_environment_needs_a_router_and_a_verify_timeout() {
        let no_router = GOOD.to_string();
        let e = match parse_strict(&no_router, Path::new("cutover.toml")) {
            Ok(_) => panic!("accepted"),
            Err(e) => e,
        };
        assert_eq!((e.line, e.field.as_deref()), (6, Some("router")), "{e}");
        assert!(e.message.contains("has no [[environment.router]]"), "{e}");
        let src = with_router("").replace(
            "name = \"shop\"\n",
            "name = \"shop\"\nverify_timeout = \"0s\"\n",
        );
        let e = err(&src);
        assert_eq!((e.line, e.column), (7, 18), "{e}");
        assert_eq!(e.field.as_deref(), Some("verify_timeout"));
    }

    #[test]
    fn a_file_that_cannot_be_read_says_what_is_wrong() {
        let d = tempfile::tempdir().expect("tempdir");
        let e = load(d.path()).expect_err("a directory");
        assert!(e.to_string().contains("is a directory"), "{e}");
        assert!(!e.to_string().contains(":0:0"), "{e}");
        let e = load(&d.path().join("none.toml")).expect_err("missing");
        assert!(
            e.to_string()
                .contains("no such file; create one with `cutover init"),
            "{e}"
        );
        let p = d.path().join("latin1.toml");
        std::fs::write(&p, b"[settings]\ntheme = \"caf\xe9\"\n").expect("write");
        let e = load(&p).expect_err("not UTF-8");
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        assert!(e.message.contains("not UTF-8"), "{e}");
    }

    #[test]
    fn loading_hands_the_credentials_it_names_to_redaction() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("c.toml");
        let src = GOOD.to_string()
            + "\n[[environment.router]]\nkind = \"exec\"\nobserve = [\"true\"]\n\
               env = { LB_TOKEN = \"cfg-secret-XYZ\", REGION = \"eu-west-1\" }\n";
        std::fs::write(&p, &src).expect("write");
        // Parsing alone registers nothing.
        parse(&src, &p).expect("valid");
        assert!(crate::redact::redact("cfg-secret-XYZ").contains("XYZ"));
        load(&p).expect("valid");
        assert_eq!(
            crate::redact::redact("lb said cfg-secret-XYZ in eu-west-1"),
            "lb said *** in eu-west-1"
        );
    }

    #[test]
    fn hooks_parse_with_defaults_and_both_path_forms() {
        let src = GOOD.replace(
            "public_url = \"http://127.0.0.1:8080/\"\n",
            "public_url = \"http://127.0.0.1:8080/\"\n\
             warmup_paths = [\"/\", { path = \"/api\", times = 5, expect_status = 204 }]\n\
             smoke = [\"./login-test\", \"{public_url}\"]\n\
             smoke_paths = [{ path = \"/login\", body_contains = \"Sign in\" }]\n\
             on_done = [\"notify\", \"{env} {to} {version} {result}\"]\n",
        );
        let c = parse(&src, Path::new("x.toml")).expect("valid");
        let h = &c.environments[0].hooks;
        assert_eq!(h.warmup_paths.len(), 2);
        assert_eq!(
            (h.warmup_paths[0].times, h.warmup_paths[0].expect_status),
            (1, 200)
        );
        assert_eq!(
            (h.warmup_paths[1].times, h.warmup_paths[1].expect_status),
            (5, 204)
        );
        assert_eq!(h.smoke_paths[0].body_contains.as_deref(), Some("Sign in"));
        assert_eq!(h.smoke_timeout, crate::hooks::DEFAULT_SMOKE_TIMEOUT);
        assert!(h.has_warmup() && h.has_smoke());
        assert_eq!(h.commands().len(), 2);
        assert!(
            parse(GOOD, Path::new("x.toml"))
                .expect("valid")
                .environments[0]
                .hooks
                .commands()
                .is_empty()
        );
    }

    #[test]
    fn bad_hooks_name_line_column_and_field() {
        let with = |line: &str| {
            GOOD.replace(
                "public_url = \"http://127.0.0.1:8080/\"\n",
                &format!("public_url = \"http://127.0.0.1:8080/\"\n{line}\n"),
            )
        };
        // Line 8: the line after public_url.
        let e = err(&with("smoke = [\"./t\", \"{public_ur}\"]"));
        assert_eq!((e.line, e.field.as_deref()), (8, Some("smoke")), "{e}");
        assert!(
            e.message.contains("unknown placeholder `{public_ur}`"),
            "{e}"
        );
        assert!(
            e.to_string().starts_with("cutover.toml:8:9: field `smoke`"),
            "{e}"
        );
        let e = err(&with("warmup_command = [\"./w\", \"{public_url}\"]"));
        assert_eq!(e.field.as_deref(), Some("warmup_command"), "{e}");
        let e = err(&with("on_failed = []"));
        assert_eq!(e.field.as_deref(), Some("on_failed"), "{e}");
        assert!(e.message.contains("empty"), "{e}");
        let e = err(&with("warmup_paths = [\"/ok\", \"api\"]"));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (8, Some("warmup_paths")),
            "{e}"
        );
        assert!(e.message.contains("starting with /"), "{e}");
        let e = err(&with("warmup_paths = [{ path = \"/\", times = 0 }]"));
        assert!(e.message.contains("at least 1"), "{e}");
        let e = err(&with(
            "smoke_paths = [{ path = \"/\", expect_status = 999 }]",
        ));
        assert_eq!(e.field.as_deref(), Some("smoke_paths"), "{e}");
        let e = err(&with("smoke_paths = [{ path = \"/\", body = \"x\" }]"));
        assert_eq!(e.line, 8, "{e}");
        assert!(e.message.contains("unknown field `body`"), "{e}");
        let e = err(&with("warmup_paths = [7]"));
        assert!(e.message.contains("a path"), "{e}");
        let e = err(&with("smoke_timeout = \"0s\""));
        assert_eq!(
            (e.line, e.field.as_deref()),
            (8, Some("smoke_timeout")),
            "{e}"
        );
    }

    #[test]
    fn line_col_counts_characters() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("ab", 0), (1, 1));
    }
}
