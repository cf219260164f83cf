//! The router contract and the factory that builds a driver from config.
//!
//! A router is whatever sits in front of the slots and decides where traffic goes: the
//! embedded proxy, HAProxy, nginx, Apache, Caddy, or commands (`exec`). Each kind has one
//! directory here (`config.rs` its router table and validation, then its protocol client,
//! state parsing and changes), the only place that knows its proxy's protocol.
//!
//! A driver implements [`Proxy`]: its constructor and its verbs, bare. [`Driven`] makes it a
//! [`Router`] and adds, the same for every driver, the check of its table against the slots
//! ([`Table`]), the error context (`KIND router `NAME`: cannot WHAT`), one change at a time
//! and a time limit per change. A new driver is a new directory with a
//! `Proxy` impl, a variant of [`RouterConfig`] and a line in [`build`].
//!
//! The contract:
//! - `observe()` reads the proxy's real state back; roles are never assumed.
//! - Every change either completes (a following `observe()` shows it) or fails with an error
//!   that says what the proxy answered, leaving the proxy serving what it served before.
//! - A driver never leaves a proxy with no live backend: it enables the new before it
//!   disables the old.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use color_eyre::eyre::{Report, Result, eyre};
use serde::Deserialize;

use crate::model::{EnvSlots, Slot};
use crate::model::{MaintenanceMode, RouterState};

mod observe;
pub use observe::observe_within;
pub mod apache;
pub mod caddy;
pub mod embedded;
pub mod exec;
pub mod haproxy;
pub mod nginx;

mod driven;
pub use driven::{DEFAULT_CHANGE_TIMEOUT, Driven, Install, Proxy, Table};
pub(crate) use driven::{pointer_verbs, router_table, server_verbs};
mod files;
pub(crate) use files::{
    default_retry_after, flags, maintenance_html, set_flag, sync_file_and_dir, temp_sibling,
    write_atomic, write_visible,
};

/// `N` seconds: a router table's default duration, given where the field is declared
/// (`#[serde(default = "crate::router::secs::<10>", with = "serde_duration")]`).
pub(crate) fn secs<const N: u64>() -> Duration {
    Duration::from_secs(N)
}

/// How long a caller waits for a router's `observe()` unless the driver says otherwise.
pub const DEFAULT_OBSERVE_TIMEOUT: Duration = Duration::from_secs(10);

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a drain, undrain or maintenance applies to: a whole slot or one node of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub slot: String,
    pub node: Option<String>,
}

impl Target {
    pub fn slot(slot: impl Into<String>) -> Self {
        Target {
            slot: slot.into(),
            node: None,
        }
    }
    pub fn node(slot: impl Into<String>, node: impl Into<String>) -> Self {
        Target {
            slot: slot.into(),
            node: Some(node.into()),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.node {
            Some(n) => write!(f, "{}/{}", self.slot, n),
            None => f.write_str(&self.slot),
        }
    }
}

/// The verbs a router may offer. A driver that cannot do one says so (and the UI shows it
/// as unavailable) rather than faking it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    Observe,
    SwitchLive,
    SetPreview,
    Drain,
    Undrain,
    Maintenance,
    /// Split the public traffic between the live slot and a canary slot by percentage.
    Weights,
    /// Hold new live requests while the live slot restarts in place, then release them.
    Pause,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Observe => "observe",
            Verb::SwitchLive => "switch_live",
            Verb::SetPreview => "set_preview",
            Verb::Drain => "drain",
            Verb::Undrain => "undrain",
            Verb::Maintenance => "maintenance",
            Verb::Weights => "weights",
            Verb::Pause => "pause",
        }
    }
}

pub trait Router: Send + Sync {
    /// The router's name in this environment (the kind unless configured).
    fn name(&self) -> &str;
    /// `embedded`, `haproxy`, `nginx`, `apache`, `caddy`, `exec`.
    fn kind(&self) -> &'static str;
    /// Whether the driver can do this verb with the configuration it was given. Weights and
    /// pausing are opt-in: a driver that implements [`Router::set_weights`] or
    /// [`Router::pause`] says so.
    fn supports(&self, verb: Verb) -> bool {
        !matches!(verb, Verb::Weights | Verb::Pause)
    }
    /// How long a caller waits for one `observe()` before giving up on it. Drivers whose
    /// observe limit is configured (exec's `observe_timeout`) return theirs, so a limit is
    /// honoured as written.
    fn observe_timeout(&self) -> Duration {
        DEFAULT_OBSERVE_TIMEOUT
    }
    /// What an operator must know before trusting this router with live traffic, measured on
    /// the real proxy (Caddy's api mode resets connections on every switch). `cutover check`
    /// and the drill print it. [`Driven`] asks its driver ([`Proxy::caveat`], none by default).
    fn caveat(&self) -> Option<&'static str>;
    /// Read the proxy's real state.
    fn observe(&self) -> BoxFuture<'_, Result<RouterState>>;
    /// Make `to` the live slot.
    fn switch_live<'a>(&'a self, to: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Point the preview route at `slot`.
    fn set_preview<'a>(&'a self, slot: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Stop sending new traffic to the target; in-flight work finishes.
    fn drain<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>>;
    /// Put the target back in service.
    fn undrain<'a>(&'a self, target: &'a Target) -> BoxFuture<'a, Result<()>>;
    /// Turn maintenance on (with the mode) or off for the live traffic.
    fn maintenance<'a>(&'a self, on: bool, mode: &'a MaintenanceMode) -> BoxFuture<'a, Result<()>>;
    /// Send `canary_percent` % of the live traffic to `canary_slot` and the rest to
    /// `live_slot`, which must be the live slot already. 0 puts everything back on
    /// `live_slot` in one command; 100 sends everything to the canary while `live_slot` stays
    /// the live slot (the switch itself is [`Router::switch_live`]). A following `observe()`
    /// reports the split in [`RouterState::weights`].
    fn set_weights<'a>(
        &'a self,
        live_slot: &'a str,
        canary_slot: &'a str,
        canary_percent: u8,
    ) -> BoxFuture<'a, Result<()>> {
        let _ = (live_slot, canary_slot, canary_percent);
        Box::pin(async move {
            Err(eyre!(
                "{} router `{}` cannot split traffic by weight; a canary needs a router that \
                 supports weights (see the README's canary table)",
                self.kind(),
                self.name()
            ))
        })
    }
    /// Hold new live requests (`on`), bounded in count and time by the router, or release
    /// them to the live slot. A following `observe()` reports it in [`RouterState::pause`].
    fn pause(&self, on: bool) -> BoxFuture<'_, Result<()>> {
        let _ = on;
        Box::pin(async move {
            Err(eyre!(
                "{} router `{}` cannot hold requests; pausing needs the embedded router",
                self.kind(),
                self.name()
            ))
        })
    }
}

/// One `[[environment.router]]` table. `kind` picks the driver; each driver owns its fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only add noise
pub enum RouterConfig {
    Embedded(embedded::Config),
    // Boxed: the haproxy table has many fields (clippy::large_enum_variant).
    Haproxy(Box<haproxy::Config>),
    Nginx(nginx::Config),
    Apache(apache::Config),
    Caddy(caddy::Config),
    Exec(exec::Config),
}

impl RouterConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            RouterConfig::Embedded(_) => "embedded",
            RouterConfig::Haproxy(_) => "haproxy",
            RouterConfig::Nginx(_) => "nginx",
            RouterConfig::Apache(_) => "apache",
            RouterConfig::Caddy(_) => "caddy",
            RouterConfig::Exec(_) => "exec",
        }
    }

    /// The configured name, or the kind.
    pub fn name(&self) -> &str {
        let n = match self {
            RouterConfig::Embedded(c) => &c.name,
            RouterConfig::Haproxy(c) => &c.name,
            RouterConfig::Nginx(c) => &c.name,
            RouterConfig::Apache(c) => &c.name,
            RouterConfig::Caddy(c) => &c.name,
            RouterConfig::Exec(c) => &c.name,
        };
        n.as_deref().unwrap_or(self.kind())
    }

    /// This router's own public URL, if it has one.
    pub fn public_url(&self) -> Option<&str> {
        match self {
            RouterConfig::Embedded(c) => c.public_url.as_deref(),
            RouterConfig::Haproxy(c) => c.public_url.as_deref(),
            RouterConfig::Nginx(c) => c.public_url.as_deref(),
            RouterConfig::Apache(c) => c.public_url.as_deref(),
            RouterConfig::Caddy(c) => c.public_url.as_deref(),
            RouterConfig::Exec(c) => c.public_url.as_deref(),
        }
    }

    /// Checks that need the environment's slots (a slot named in the router must exist...).
    /// The message is shown after the router table's file:line:col.
    pub fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        match self {
            RouterConfig::Embedded(c) => c.validate(slots),
            RouterConfig::Haproxy(c) => c.validate(slots),
            RouterConfig::Nginx(c) => c.validate(slots),
            RouterConfig::Apache(c) => c.validate(slots),
            RouterConfig::Caddy(c) => c.validate(slots),
            RouterConfig::Exec(c) => c.validate(slots),
        }
    }
}

/// Build the driver for one router of an environment.
pub fn build<'a>(env: impl Into<EnvSlots<'a>>, cfg: &RouterConfig) -> Result<Arc<dyn Router>> {
    let env = env.into();
    let name = cfg.name().to_string();
    Ok(match cfg {
        RouterConfig::Embedded(c) => Arc::new(embedded::Driver::new(name, env, c)?),
        RouterConfig::Haproxy(c) => Arc::new(haproxy::Driver::new(name, env, c)?),
        RouterConfig::Nginx(c) => Arc::new(nginx::Driver::new(name, env, c)?),
        RouterConfig::Apache(c) => Arc::new(apache::Driver::new(name, env, c)?),
        RouterConfig::Caddy(c) => Arc::new(caddy::Driver::new(name, env, c)?),
        RouterConfig::Exec(c) => Arc::new(exec::Driver::new(name, env, c)?),
    })
}

/// Build every router of an environment.
pub fn build_all(env: EnvSlots<'_>, configs: &[RouterConfig]) -> Result<Vec<Arc<dyn Router>>> {
    configs.iter().map(|c| build(env, c)).collect()
}

// --- shared by the drivers ------------------------------------------------------------------

/// The error for a slot name the environment does not have, naming the ones it has.
pub(crate) fn no_such_slot<'a>(
    name: &str,
    env: &str,
    slots: impl IntoIterator<Item = &'a str>,
) -> Report {
    eyre!(
        "`{name}` is not a slot of environment `{env}` (slots: {})",
        comma_list(slots)
    )
}

/// `a, b, c`: the names a message lists (the slots there are, the nodes of a slot...).
pub(crate) fn comma_list<S: AsRef<str>>(names: impl IntoIterator<Item = S>) -> String {
    let mut list = String::new();
    for (i, n) in names.into_iter().enumerate() {
        if i > 0 {
            list.push_str(", ");
        }
        list.push_str(n.as_ref());
    }
    list
}

/// How undoing a failed change went, for its error: `undone` when every step was undone,
/// else `failed(the failures joined with "; ")`.
pub(crate) fn undo_outcome(
    failures: &[String],
    undone: &str,
    failed: impl FnOnce(&str) -> String,
) -> String {
    if failures.is_empty() {
        undone.to_string()
    } else {
        failed(&failures.join("; "))
    }
}

/// Characters that are safe unquoted in proxy config, file names and variable names.
pub(crate) fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// One server of a slot's upstream: the node it is (the slot's name when the slot has no
/// nodes) and its `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Server {
    pub node: String,
    pub addr: String,
}

/// A slot as the upstream of a proxy whose config names servers by `host:port` (nginx, Caddy).
#[derive(Debug, Clone)]
pub(crate) struct Upstream {
    pub name: String,
    pub scheme: &'static str,
    /// In config order.
    pub servers: Vec<Server>,
    pub has_nodes: bool,
}

fn scheme_of(a: &crate::model::Address) -> &'static str {
    if a.is_https() { "https" } else { "http" }
}

impl Upstream {
    pub(crate) fn of(s: &Slot) -> std::result::Result<Upstream, String> {
        let scheme = scheme_of(&s.address);
        let addr = s.address.authority();
        let mut servers = Vec::new();
        for n in &s.nodes {
            let (sch, addr) = (scheme_of(&n.address), n.address.authority());
            if sch != scheme {
                return Err(format!(
                    "node `{}` is {sch} but the slot's address is {scheme}; one upstream has one \
                     scheme",
                    n.name
                ));
            }
            servers.push(Server {
                node: n.name.clone(),
                addr,
            });
        }
        if servers.is_empty() {
            servers.push(Server {
                node: s.name.clone(),
                addr,
            });
        }
        Ok(Upstream {
            name: s.name.clone(),
            scheme,
            servers,
            has_nodes: !s.nodes.is_empty(),
        })
    }

    /// The upstream of every slot of an environment.
    pub(crate) fn all(env: EnvSlots<'_>) -> std::result::Result<Vec<Upstream>, String> {
        env.slots.iter().map(Upstream::of).collect()
    }

    /// The upstream of slot `name` of environment `env`.
    pub(crate) fn find<'a>(all: &'a [Upstream], env: &str, name: &str) -> Result<&'a Upstream> {
        all.iter()
            .find(|u| u.name == name)
            .ok_or_else(|| no_such_slot(name, env, all.iter().map(|u| u.name.as_str())))
    }

    pub(crate) fn addrs(&self) -> Vec<String> {
        self.servers.iter().map(|s| s.addr.clone()).collect()
    }

    pub(crate) fn owns(&self, addr: &str) -> bool {
        self.servers.iter().any(|s| s.addr == addr)
    }

    /// The servers a drain or undrain acts on: every one, or the target node's.
    pub(crate) fn servers_of(&self, target: &Target) -> Result<Vec<&Server>> {
        let Some(n) = &target.node else {
            return Ok(self.servers.iter().collect());
        };
        let s = self
            .servers
            .iter()
            .find(|s| self.has_nodes && s.node == *n)
            .ok_or_else(|| {
                eyre!(
                    "slot {} has no node `{n}` (nodes: {})",
                    self.name,
                    if self.has_nodes {
                        comma_list(self.servers.iter().map(|s| s.node.as_str()))
                    } else {
                        "none; drain the whole slot".into()
                    }
                )
            })?;
        Ok(vec![s])
    }
}

/// A split is between the live slot and another: refused (nothing changed) when `live` is not
/// the live slot the router shows (`now_live`), or when the canary is the live slot itself.
pub(crate) fn check_split(live: &str, now_live: &str, canary: &str) -> Result<()> {
    if now_live != live {
        color_eyre::eyre::bail!(
            "`{live}` is not the live slot ({now_live} is); a split is between the live slot and \
             a canary; nothing was changed"
        );
    }
    if canary == live {
        color_eyre::eyre::bail!("`{canary}` is the live slot; a canary is another slot");
    }
    Ok(())
}
