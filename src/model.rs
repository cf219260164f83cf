//! The words of the product: roles, health, versions and what a router reports.
//!
//! Everything here is plain data. Roles are *read back* from a router (see
//! [`RouterState::role_of`]); nothing in cutover assumes a role from what it did last.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

mod address;
pub use address::Address;
mod query;
pub use query::{CanaryQuery, Cmp, Pass};

/// A slot of an environment, as the config describes it: where it answers and how it is probed.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub name: String,
    /// Where the routers send this slot's traffic, e.g. `http://127.0.0.1:9001`.
    pub address: Address,
    /// Full URL of the health endpoint.
    pub health_url: String,
    /// Full URL of the version endpoint.
    pub version_url: String,
    /// The version endpoint's path (`/version`): the version behind a public URL is read there.
    pub version_path: String,
    /// JSON pointer to the version in the version body (`/version`); plain text when absent.
    pub version_pointer: Option<String>,
    /// The health endpoint's expected status.
    pub expect_status: u16,
    /// The servers of this slot, for slots with several (rolling deploys).
    pub nodes: Vec<Node>,
}

impl Slot {
    /// A slot at `address` with the config's defaults: health at `/health`, the version at
    /// `/version` (plain text or `{"version": …}`), 200 expected, no nodes.
    pub fn new(name: &str, address: Address) -> Slot {
        Slot {
            name: name.to_string(),
            health_url: address.join("/health"),
            version_url: address.join("/version"),
            version_path: "/version".into(),
            address,
            version_pointer: None,
            expect_status: 200,
            nodes: Vec::new(),
        }
    }
}

/// What a router is told of the environment it routes: its name and its slots (a driver
/// needs nothing else of the config's environment, and imports nothing from the config).
#[derive(Debug, Clone, Copy)]
pub struct EnvSlots<'a> {
    pub name: &'a str,
    pub slots: &'a [Slot],
}

/// One server of a slot with several.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub address: Address,
}

/// A config that parsed but cannot be used as it stands, found when a driver is built (a
/// `token_env` variable that is not set...): a usage error (exit 2), like a config error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem(pub String);

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigProblem {}

/// What the router does with a slot right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Live,
    Preview,
    Idle,
    Draining,
    Maintenance,
    /// The router has not answered yet, or does not know this slot.
    Unknown,
}

impl Role {
    /// The label shown on screen; readable without colour.
    pub fn label(self) -> &'static str {
        match self {
            Role::Live => "LIVE",
            Role::Preview => "PREVIEW",
            Role::Idle => "IDLE",
            Role::Draining => "DRAINING",
            Role::Maintenance => "MAINTENANCE",
            Role::Unknown => "UNKNOWN",
        }
    }

    /// A symbol that carries the role for people who cannot tell colours apart.
    pub fn symbol(self) -> &'static str {
        match self {
            Role::Live => "●",
            Role::Preview => "◐",
            Role::Idle => "○",
            Role::Draining => "↓",
            Role::Maintenance => "⚠",
            Role::Unknown => "?",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Done,
    Refused,
    Failed,
    RolledBack,
    /// Applied, but the watch saw the new slot fail and auto-rollback is off.
    Alarm,
    Cancelled,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Done => "done",
            Verdict::Refused => "refused",
            Verdict::Failed => "failed",
            Verdict::RolledBack => "rolled-back",
            Verdict::Alarm => "alarm",
            Verdict::Cancelled => "cancelled",
        }
    }
    pub fn is_success(self) -> bool {
        matches!(self, Verdict::Done)
    }
}

/// A router's administrative state for one slot (or one node of a slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AdminState {
    /// Takes new traffic.
    Ready,
    /// Takes no new traffic; in-flight requests/sessions finish.
    Drain,
    /// Out for maintenance (HAProxy `maint`, Apache `Stopped`, embedded maintenance).
    Maint,
    /// Disabled by the operator (Apache `Disabled`, nginx `down`).
    Disabled,
    #[default]
    Unknown,
}

impl AdminState {
    pub fn label(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
            AdminState::Disabled => "disabled",
            AdminState::Unknown => "unknown",
        }
    }

    /// The state as it reads after "`blue` is …": "drained", "in maintenance". The label
    /// ("drain", "maint") stays the short word columns and JSON use.
    pub fn described(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drained",
            AdminState::Maint => "in maintenance",
            AdminState::Disabled => "disabled",
            AdminState::Unknown => "in an unknown state",
        }
    }

    /// Whether an undrain has done its work: no drain and no maintenance left. `Disabled`
    /// counts: an undrain clears the drain only, so a member that was disabled before (the
    /// idle slot's members of an Apache balancer, a `disabled` server of HAProxy's servers
    /// setup) is disabled again, as the drivers' docs say.
    pub fn undrained(self) -> bool {
        matches!(self, AdminState::Ready | AdminState::Disabled)
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What a router reports about one node (server) of a slot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeRoute {
    pub name: String,
    pub admin: AdminState,
    /// Active sessions / in-flight / busy requests, when the proxy knows them.
    pub sessions: Option<u64>,
    /// The proxy's own health-check verdict for the node, as it words it.
    pub check: Option<String>,
}

/// What a router reports about one slot.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SlotRoute {
    pub admin: AdminState,
    /// Active sessions or in-flight requests, when the proxy knows them.
    pub sessions: Option<u64>,
    /// Cumulative requests routed to the slot, when the proxy counts them.
    pub requests: Option<u64>,
    /// Cumulative error counter (5xx, failed connections...), when the proxy has one.
    pub errors: Option<u64>,
    /// The proxy's own average response time for the slot, in milliseconds, when it keeps one
    /// (HAProxy's `rtime`: the average over its last 1024 requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// The proxy's latency percentiles for the slot over its last few seconds, when it keeps
    /// them (the embedded proxy: the last 10 to 12 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentiles: Option<Percentiles>,
    /// The proxy's own health-check verdict, as it words it ("UP", "L4CON"...).
    pub check: Option<String>,
    /// Whether the proxy's own health checks pass for every server of the slot: `None` when
    /// the proxy runs no checks on it. The gate takes a passing one as evidence (one probe of
    /// cutover's own then stands for three in a row).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks_up: Option<bool>,
    /// Per-node detail for slots with several servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeRoute>,
}

/// Latency percentiles of a slot's recent answers, as a router reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Half the answers took at most this long, in microseconds (rounded up to the router's
    /// bucket).
    pub p50_us: u64,
    /// 99 % of the answers took at most this long, in microseconds.
    pub p99_us: u64,
    /// How many answers they were computed from.
    pub answers: u64,
}

/// Several checks' verdicts as one: `Some(true)` when every checked one passes, `Some(false)`
/// when one fails, `None` when none was checked.
pub fn all_checks_up(verdicts: impl IntoIterator<Item = Option<bool>>) -> Option<bool> {
    verdicts
        .into_iter()
        .flatten()
        .fold(None, |acc, up| Some(acc.unwrap_or(true) && up))
}

/// How maintenance is served when it is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum MaintenanceMode {
    /// A 503 maintenance page with Retry-After.
    #[default]
    Page,
    /// Traffic goes to another slot instead (seed 004's redirect to the other server).
    Redirect { to: String },
}

impl fmt::Display for MaintenanceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MaintenanceMode::Page => f.write_str("503 page"),
            MaintenanceMode::Redirect { to } => write!(f, "redirect to {to}"),
        }
    }
}

/// Everything one `observe()` of a router returned.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouterState {
    /// The slot that serves the public (live) traffic.
    pub live: Option<String>,
    /// The slot behind the preview / staging / next URL.
    pub preview: Option<String>,
    /// Per-slot state, keyed by slot name.
    pub slots: BTreeMap<String, SlotRoute>,
    /// Whether the live traffic is under maintenance (page or redirect).
    pub maintenance: Option<MaintenanceMode>,
    /// Free-form facts the driver wants the operator to see ("map live -> be_green").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Why this router cannot do its job as configured: its config names a backend, an
    /// `@id` or a member the proxy does not have, so a swap would be refused (or worse,
    /// accepted and answer 503). `cutover check` fails on any, `status` prints them, and the
    /// screen counts them as warnings. The router was read; these are not read errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
    /// The current split of the live traffic between the live slot and a canary slot, when
    /// the router supports weights and a canary share is set (absent at 0 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Weights>,
    /// The preview route through the public URL, when the router has one and a preview slot
    /// is set (it is armed): how a tester reaches the preview slot there
    /// (`header X-Cutover-Preview or cookie cutover_preview=1 → green`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview_route: Option<String>,
    /// Request pausing, for a router that can hold requests (the embedded proxy): whether
    /// it holds new live requests now, how many it holds, and how many got 503 since the
    /// last pause began (over `pause_max_held` or `pause_timeout`). Absent for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseState>,
}

/// What a router that can pause requests reports about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PauseState {
    /// New live requests are held until a resume.
    pub paused: bool,
    /// Requests held right now.
    pub held: u64,
    /// Requests answered 503 since the last pause began: over its bound in count or time.
    pub refused: u64,
}

impl fmt::Display for PauseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.paused {
            write!(f, "paused, {} held", self.held)?;
        } else {
            f.write_str("not paused")?;
        }
        if self.refused > 0 {
            write!(f, ", {} refused (503) since the pause began", self.refused)?;
        }
        Ok(())
    }
}

/// A split of the live traffic: `canary_percent` % to `canary`, the rest to `live`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights {
    pub live: String,
    pub canary: String,
    pub canary_percent: u8,
}

impl fmt::Display for Weights {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} % / {} {} %",
            self.live,
            100 - u16::from(self.canary_percent.min(100)),
            self.canary,
            self.canary_percent
        )
    }
}

/// One step of a canary plan: a share of the live traffic for the canary slot, or a pause that
/// holds the share of the step before until the operator resumes or promotes (Argo's
/// `pause: {}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CanaryStep {
    Weight(u8),
    Pause,
}

impl CanaryStep {
    /// The share this step sets, `None` for a pause.
    pub fn percent(self) -> Option<u8> {
        match self {
            CanaryStep::Weight(p) => Some(p),
            CanaryStep::Pause => None,
        }
    }
}

impl fmt::Display for CanaryStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CanaryStep::Weight(p) => write!(f, "{p}"),
            CanaryStep::Pause => f.write_str("pause"),
        }
    }
}

impl RouterState {
    /// The role of a slot as this router reports it.
    pub fn role_of(&self, slot: &str) -> Role {
        let admin = self.slots.get(slot).map(|s| s.admin).unwrap_or_default();
        match admin {
            AdminState::Maint => return Role::Maintenance,
            AdminState::Drain => return Role::Draining,
            _ => {}
        }
        if self.live.as_deref() == Some(slot) {
            if self.maintenance.is_some() {
                Role::Maintenance
            } else {
                Role::Live
            }
        } else if self.preview.as_deref() == Some(slot) {
            Role::Preview
        } else if self.slots.contains_key(slot) || self.live.is_some() {
            Role::Idle
        } else {
            Role::Unknown
        }
    }
}

/// The kind of a failed probe, shown on screen in a word.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeError {
    Timeout,
    Refused,
    /// Any other connection failure (DNS, reset, TLS...), with its text.
    Connect(String),
    /// An unexpected HTTP status.
    Status(u16),
    /// The body could not be read or parsed (malformed JSON, missing field, too big).
    Body(String),
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProbeError::Timeout => f.write_str("timeout"),
            ProbeError::Refused => f.write_str("refused"),
            ProbeError::Connect(e) => write!(f, "connect: {e}"),
            ProbeError::Status(s) => write!(f, "HTTP {s}"),
            ProbeError::Body(e) => write!(f, "body: {e}"),
        }
    }
}

/// Health of a slot as cutover's own probe saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    /// Answers correctly but slower than `degraded_after`.
    Degraded,
    Down,
    #[default]
    Unknown,
}

impl Health {
    pub fn label(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Degraded => "degraded",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
    pub fn symbol(self) -> &'static str {
        match self {
            Health::Up => "✔",
            Health::Degraded => "~",
            Health::Down => "✘",
            Health::Unknown => "…",
        }
    }
    /// Whether a slot in this health may take live traffic.
    pub fn is_serving(self) -> bool {
        matches!(self, Health::Up | Health::Degraded)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// What a version endpoint said.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built: Option<String>,
}

/// One poll of a slot (health and version together).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeResult {
    #[serde(with = "crate::timefmt::serde_system_time")]
    pub at: SystemTime,
    pub health: Health,
    /// HTTP status of the health endpoint, when it answered.
    pub status: Option<u16>,
    #[serde(with = "crate::timefmt::serde_opt_duration_ms")]
    pub latency: Option<Duration>,
    pub error: Option<ProbeError>,
    /// The version, when the version endpoint answered and parsed.
    pub version: Option<VersionInfo>,
    /// Why the version is missing, when it is.
    pub version_error: Option<ProbeError>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(live: &str, preview: &str) -> RouterState {
        let mut s = RouterState {
            live: Some(live.into()),
            preview: Some(preview.into()),
            ..Default::default()
        };
        for n in ["blue", "green", "staging"] {
            s.slots.insert(
                n.into(),
                SlotRoute {
                    admin: AdminState::Ready,
                    ..Default::default()
                },
            );
        }
        s
    }

    #[test]
    fn roles_come_from_the_router_state() {
        let mut s = state("blue", "green");
        assert_eq!(s.role_of("blue"), Role::Live);
        assert_eq!(s.role_of("green"), Role::Preview);
        assert_eq!(s.role_of("staging"), Role::Idle);
        if let Some(r) = s.slots.get_mut("staging") {
            r.admin = AdminState::Drain;
        }
        assert_eq!(s.role_of("staging"), Role::Draining);
        s.maintenance = Some(MaintenanceMode::Page);
        assert_eq!(s.role_of("blue"), Role::Maintenance);
        assert_eq!(RouterState::default().role_of("blue"), Role::Unknown);
    }

    #[test]
    fn every_role_and_health_has_a_distinct_symbol_and_label() {
        let roles = [
            Role::Live,
            Role::Preview,
            Role::Idle,
            Role::Draining,
            Role::Maintenance,
            Role::Unknown,
        ];
        let mut symbols: Vec<_> = roles.iter().map(|r| r.symbol()).collect();
        symbols.sort();
        symbols.dedup();
        assert_eq!(symbols.len(), roles.len());
        let healths = [Health::Up, Health::Degraded, Health::Down, Health::Unknown];
        let mut hs: Vec<_> = healths.iter().map(|h| h.symbol()).collect();
        hs.sort();
        hs.dedup();
        assert_eq!(hs.len(), healths.len());
    }
}
