//! The router contract and the factory that builds a driver from config.
//!
//! A router is whatever sits in front of the slots and decides where traffic goes: the
//! embedded proxy, HAProxy, nginx, Apache, Caddy, or commands (`exec`). Each kind has one
//! file here, and that file is the only place that knows its proxy's protocol.
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

use color_eyre::eyre::Result;
use serde::Deserialize;

use crate::config::{Environment, Slot};
use crate::model::{MaintenanceMode, RouterState};

pub mod apache;
pub mod caddy;
pub mod embedded;
pub mod exec;
pub mod haproxy;
pub mod nginx;

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
        }
    }
}

pub trait Router: Send + Sync {
    /// The router's name in this environment (the kind unless configured).
    fn name(&self) -> &str;
    /// `embedded`, `haproxy`, `nginx`, `apache`, `caddy`, `exec`.
    fn kind(&self) -> &'static str;
    /// Whether the driver can do this verb with the configuration it was given.
    fn supports(&self, _verb: Verb) -> bool {
        true
    }
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
pub fn build(env: &Environment, cfg: &RouterConfig) -> Result<Arc<dyn Router>> {
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
pub fn build_all(env: &Environment) -> Result<Vec<Arc<dyn Router>>> {
    env.routers.iter().map(|c| build(env, c)).collect()
}
