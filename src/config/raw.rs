//! The file as written: the serde schema (with spans) that parsing checks and turns into the model.

use super::*;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) settings: Settings,
    pub(super) keys: Option<Spanned<std::collections::BTreeMap<String, KeyList>>>,
    #[serde(default, rename = "environment")]
    pub(super) environments: Vec<RawEnvironment>,
    #[serde(default, rename = "notify")]
    pub(super) notify: Vec<Spanned<RawNotify>>,
}

pub(super) fn default_notify_retries() -> u32 {
    3
}
pub(super) fn default_notify_timeout() -> Duration {
    Duration::from_secs(5)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNotify {
    pub(super) url: Spanned<String>,
    #[serde(default)]
    pub(super) format: crate::notify::Format,
    pub(super) events: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) min_severity: Option<crate::notify::Severity>,
    pub(super) token_env: Option<String>,
    #[serde(default = "default_notify_retries")]
    pub(super) retries: u32,
    #[serde(default = "default_notify_timeout", with = "serde_duration")]
    pub(super) timeout: Duration,
}

/// One key or a list of keys.
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum KeyList {
    One(String),
    Many(Vec<String>),
}

pub(super) fn default_watch() -> Duration {
    Duration::from_secs(30)
}
pub(super) fn default_verify() -> Duration {
    Duration::from_secs(10)
}
pub(super) fn default_canary_pause() -> Duration {
    Duration::from_secs(60)
}
pub(super) fn default_rollback_window() -> Duration {
    Duration::from_secs(600)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEnvironment {
    pub(super) name: Spanned<String>,
    pub(super) public_url: Option<Spanned<String>>,
    pub(super) preview_url: Option<Spanned<String>>,
    #[serde(default)]
    pub(super) production: bool,
    #[serde(default)]
    pub(super) confirm: ConfirmMode,
    #[serde(default)]
    pub(super) read_only: bool,
    #[serde(default)]
    pub(super) auto_rollback: bool,
    #[serde(default = "default_watch", with = "serde_duration")]
    pub(super) watch: Duration,
    #[serde(default = "default_verify", with = "serde_duration")]
    pub(super) verify_timeout: Duration,
    pub(super) gate_checks: Option<usize>,
    #[serde(default, rename = "slot")]
    pub(super) slots: Vec<RawSlot>,
    #[serde(default, rename = "router")]
    pub(super) routers: Vec<Spanned<RawTable>>,
    pub(super) rolling: Option<Spanned<Rolling>>,
    #[serde(default)]
    pub(super) allow_drill: bool,
    #[serde(default)]
    pub(super) fleet: FleetOrder,
    #[serde(default)]
    pub(super) drill_loopback_only: bool,
    #[serde(default = "default_rollback_window", with = "serde_duration")]
    pub(super) rollback_window: Duration,
    pub(super) one_key_rollback: Option<bool>,
    #[serde(default)]
    pub(super) warmup_paths: Vec<Spanned<RawPath<WarmupPath>>>,
    pub(super) warmup_command: Option<Spanned<Vec<String>>>,
    #[serde(default = "default_warmup_timeout", with = "serde_duration")]
    pub(super) warmup_timeout: Duration,
    pub(super) smoke: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    pub(super) smoke_paths: Vec<Spanned<RawPath<SmokePath>>>,
    #[serde(default = "default_smoke_timeout", with = "serde_duration")]
    pub(super) smoke_timeout: Duration,
    pub(super) on_done: Option<Spanned<Vec<String>>>,
    pub(super) on_rollback: Option<Spanned<Vec<String>>>,
    pub(super) on_failed: Option<Spanned<Vec<String>>>,
    #[serde(default = "default_after_timeout", with = "serde_duration")]
    pub(super) hook_timeout: Duration,
    #[serde(default)]
    pub(super) hook_pass_env: Vec<Spanned<String>>,
    pub(super) canary_steps: Option<Spanned<Vec<String>>>,
    #[serde(default = "default_canary_pause", with = "serde_duration")]
    pub(super) canary_pause: Duration,
    pub(super) canary_max_error_rate: Option<Spanned<f64>>,
    pub(super) canary_max_error_rate_over_stable: Option<Spanned<f64>>,
    #[serde(
        default,
        deserialize_with = "crate::timefmt::serde_duration_opt::deserialize"
    )]
    pub(super) canary_max_latency: Option<Duration>,
    pub(super) canary_failure_limit: Option<u32>,
    #[serde(default, rename = "canary_query")]
    pub(super) canary_queries: Vec<super::query::RawQuery>,
}

pub(super) fn default_warmup_timeout() -> Duration {
    crate::hooks::DEFAULT_WARMUP_TIMEOUT
}
pub(super) fn default_smoke_timeout() -> Duration {
    crate::hooks::DEFAULT_SMOKE_TIMEOUT
}
pub(super) fn default_after_timeout() -> Duration {
    crate::hooks::DEFAULT_HOOK_TIMEOUT
}

/// A table kept with the positions of its keys and values, turned into its typed form
/// afterwards, so an error can name the key it is about and point at its line.
pub(super) type RawTable = std::collections::BTreeMap<Spanned<String>, Spanned<toml::Value>>;

pub(super) fn default_health() -> Spanned<String> {
    Spanned::new(0..0, "/health".into())
}
pub(super) fn default_version() -> Spanned<String> {
    Spanned::new(0..0, "/version".into())
}
pub(super) fn default_status() -> u16 {
    200
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSlot {
    pub(super) name: Spanned<String>,
    pub(super) address: Spanned<String>,
    #[serde(default = "default_health")]
    pub(super) health: Spanned<String>,
    #[serde(default = "default_version")]
    pub(super) version: Spanned<String>,
    pub(super) version_pointer: Option<Spanned<String>>,
    #[serde(default = "default_status")]
    pub(super) expect_status: u16,
    #[serde(default)]
    pub(super) nodes: Vec<RawNode>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) name: String,
    pub(super) address: String,
}
