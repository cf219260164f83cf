//! The router contract and the factory that builds a driver from config.
//!
//! A router is whatever sits in front of the slots and decides where traffic goes: the
//! embedded proxy, HAProxy, nginx, Apache, Caddy, or commands (`exec`). Each kind has one
//! directory here (`config.rs` its router table and validation, then its protocol client,
//! state parsing and changes), the only place that knows its proxy's protocol.
//!
//! A driver implements [`Proxy`]: its verbs, bare. [`Driven`] makes it a [`Router`] and adds,
//! the same for every driver, the error context (`KIND router `NAME`: cannot WHAT`), one
//! change at a time and a time limit per change. A new driver is a new directory with a
//! `Proxy` impl, a variant of [`RouterConfig`] and a line in [`build`].
//!
//! The contract:
//! - `observe()` reads the proxy's real state back; roles are never assumed.
//! - Every change either completes (a following `observe()` shows it) or fails with an error
//!   that says what the proxy answered, leaving the proxy serving what it served before.
//! - A driver never leaves a proxy with no live backend: it enables the new before it
//!   disables the old.

use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use color_eyre::eyre::{Report, Result, WrapErr, eyre};
use serde::Deserialize;

use crate::model::{EnvSlots, Slot};
use crate::model::{MaintenanceMode, RouterState};

pub mod apache;
pub mod caddy;
pub mod embedded;
pub mod exec;
pub mod haproxy;
pub mod nginx;

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
        }
    }
}

pub trait Router: Send + Sync {
    /// The router's name in this environment (the kind unless configured).
    fn name(&self) -> &str;
    /// `embedded`, `haproxy`, `nginx`, `apache`, `caddy`, `exec`.
    fn kind(&self) -> &'static str;
    /// Whether the driver can do this verb with the configuration it was given. Weights are
    /// opt-in: a driver that implements [`Router::set_weights`] says so.
    fn supports(&self, verb: Verb) -> bool {
        verb != Verb::Weights
    }
    /// How long a caller waits for one `observe()` before giving up on it. Drivers whose
    /// observe limit is configured (exec's `observe_timeout`) return theirs, so a limit is
    /// honoured as written.
    fn observe_timeout(&self) -> Duration {
        DEFAULT_OBSERVE_TIMEOUT
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
                 supports weights (embedded, haproxy)",
                self.kind(),
                self.name()
            ))
        })
    }
}

/// A driver's router table: `pub struct Config { ... }` with the fields every router has
/// (`name`, `public_url`) first, deserialized with unknown fields refused. (Not
/// `#[serde(flatten)]`: serde cannot refuse unknown fields through a flatten.)
macro_rules! router_table {
    ($(#[$attr:meta])* pub struct Config { $($fields:tt)* }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Config {
            /// The router's name in its environment (defaults to the kind).
            #[serde(default)]
            pub name: Option<String>,
            /// This router's own public URL, when it has a frontend of its own (a fleet of
            /// proxies behind DNS): verify probes it as well as the environment's `public_url`.
            #[serde(default)]
            pub public_url: Option<String>,
            $($fields)*
        }
    };
}
pub(crate) use router_table;

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

/// How long one change may take, once it has its turn, unless the driver says otherwise.
/// Every driver also limits each request it sends; this is the backstop over the whole verb.
pub const DEFAULT_CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A driver's own part: its config, its proxy's protocol, one method per verb, bare.
/// [`Driven`] wraps it into a [`Router`] and adds what every driver needs, the same way for
/// all: the error context (`KIND router `NAME`: cannot WHAT`), one change at a time (observe
/// runs beside them) and a time limit per change.
pub trait Proxy: Send + Sync + Sized + 'static {
    /// `embedded`, `haproxy`, `nginx`, `apache`, `caddy`, `exec`.
    const KIND: &'static str;
    /// The driver's `[[environment.router]]` table.
    type Config;
    fn new(name: &str, env: EnvSlots<'_>, cfg: &Self::Config) -> Result<Self>;
    /// See [`Router::supports`].
    fn supports(&self, verb: Verb) -> bool {
        verb != Verb::Weights
    }
    /// See [`Router::observe_timeout`].
    fn observe_timeout(&self) -> Duration {
        DEFAULT_OBSERVE_TIMEOUT
    }
    /// How long a change may take once it has its turn: longer than the driver's own limits
    /// (its request timeouts, health waits), so that theirs are the errors reported.
    fn change_timeout(&self) -> Duration {
        DEFAULT_CHANGE_TIMEOUT
    }
    fn observe(&self) -> impl Future<Output = Result<RouterState>> + Send;
    fn switch_live(&self, to: &str) -> impl Future<Output = Result<()>> + Send;
    fn set_preview(&self, slot: &str) -> impl Future<Output = Result<()>> + Send;
    fn drain(&self, target: &Target) -> impl Future<Output = Result<()>> + Send;
    fn undrain(&self, target: &Target) -> impl Future<Output = Result<()>> + Send;
    fn maintenance(
        &self,
        on: bool,
        mode: &MaintenanceMode,
    ) -> impl Future<Output = Result<()>> + Send;
    /// See [`Router::set_weights`]; only for a driver whose `supports(Verb::Weights)`.
    fn set_weights(
        &self,
        live_slot: &str,
        canary_slot: &str,
        canary_percent: u8,
    ) -> impl Future<Output = Result<()>> + Send {
        let _ = (live_slot, canary_slot, canary_percent);
        async {
            Err(eyre!(
                "this router cannot split traffic by weight; a canary needs a router that \
                 supports weights (embedded, haproxy)"
            ))
        }
    }
}

/// A driver: its [`Proxy`] part, with the error context, the change lock and the time limits
/// every driver shares. Derefs to the proxy part for what is specific to it (`install`...).
pub struct Driven<P> {
    name: String,
    proxy: P,
    /// One change at a time through this router.
    change: tokio::sync::Mutex<()>,
}

impl<P: Proxy> Driven<P> {
    /// Build the driver named `name` for `env` from its router table.
    pub fn new<'a>(name: String, env: impl Into<EnvSlots<'a>>, cfg: &P::Config) -> Result<Self> {
        let proxy = P::new(&name, env.into(), cfg)?;
        Ok(Driven {
            name,
            proxy,
            change: tokio::sync::Mutex::new(()),
        })
    }

    fn context(&self, what: &str) -> String {
        format!("{} router `{}`: cannot {what}", P::KIND, self.name)
    }

    /// Run `fut` as a change: after the changes before it, within [`Proxy::change_timeout`],
    /// its error prefixed with what could not be done.
    pub(crate) async fn changing<T>(
        &self,
        what: String,
        fut: impl Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        let _one = self.change.lock().await;
        let limit = self.proxy.change_timeout();
        let r = match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(eyre!(
                "no answer within {}; whether it changed anything is unknown: observe the \
                 router before retrying",
                humantime::format_duration(limit)
            )),
        };
        r.wrap_err_with(|| self.context(&what))
    }
}

/// A driver that writes its proxy's first configuration (nginx, Caddy).
pub trait Install {
    fn install(&self, live: &str, preview: Option<&str>)
    -> impl Future<Output = Result<()>> + Send;
}

impl<P: Proxy + Install> Driven<P> {
    /// Write what the proxy reads for a first start, as a change (after any change in
    /// progress).
    pub async fn install(&self, live: &str, preview: Option<&str>) -> Result<()> {
        self.changing(
            "install the first configuration".into(),
            self.proxy.install(live, preview),
        )
        .await
    }
}

/// [`Proxy`]'s verbs for a driver whose proxy holds a live and a preview pointer and a flag
/// per server (nginx, Caddy), from its `observe_inner`, `point(Pointer, slot)`,
/// `set_drained(target, bool)` and `set_maintenance(on, mode)`.
macro_rules! pointer_verbs {
    () => {
        async fn observe(&self) -> Result<RouterState> {
            self.observe_inner().await
        }
        async fn switch_live(&self, to: &str) -> Result<()> {
            self.point(Pointer::Live, to).await
        }
        async fn set_preview(&self, slot: &str) -> Result<()> {
            self.point(Pointer::Next, slot).await
        }
        async fn drain(&self, t: &Target) -> Result<()> {
            self.set_drained(t, true).await
        }
        async fn undrain(&self, t: &Target) -> Result<()> {
            self.set_drained(t, false).await
        }
        async fn maintenance(&self, on: bool, m: &MaintenanceMode) -> Result<()> {
            self.set_maintenance(on, m).await
        }
    };
}
pub(crate) use pointer_verbs;

impl<P> std::ops::Deref for Driven<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.proxy
    }
}

impl<P: Proxy> Router for Driven<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        P::KIND
    }
    fn supports(&self, verb: Verb) -> bool {
        self.proxy.supports(verb)
    }
    fn observe_timeout(&self) -> Duration {
        self.proxy.observe_timeout()
    }
    fn observe(&self) -> BoxFuture<'_, Result<RouterState>> {
        Box::pin(async move {
            self.proxy
                .observe()
                .await
                .wrap_err_with(|| self.context("observe"))
        })
    }
    fn switch_live<'a>(&'a self, to: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.changing(format!("make {to} live"), self.proxy.switch_live(to)))
    }
    fn set_preview<'a>(&'a self, slot: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.changing(
            format!("point the preview at {slot}"),
            self.proxy.set_preview(slot),
        ))
    }
    fn drain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.changing(format!("drain {t}"), self.proxy.drain(t)))
    }
    fn undrain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.changing(format!("undrain {t}"), self.proxy.undrain(t)))
    }
    fn maintenance<'a>(&'a self, on: bool, m: &'a MaintenanceMode) -> BoxFuture<'a, Result<()>> {
        let what = if on {
            format!("turn maintenance on ({m})")
        } else {
            "turn maintenance off".to_string()
        };
        Box::pin(self.changing(what, self.proxy.maintenance(on, m)))
    }
    fn set_weights<'a>(
        &'a self,
        live: &'a str,
        canary: &'a str,
        percent: u8,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.changing(
            format!("send {percent} % of the live traffic of {live} to {canary}"),
            self.proxy.set_weights(live, canary, percent),
        ))
    }
}

/// The error for a slot name the environment does not have, naming the ones it has.
pub(crate) fn no_such_slot<'a>(
    name: &str,
    env: &str,
    slots: impl IntoIterator<Item = &'a str>,
) -> Report {
    eyre!(
        "`{name}` is not a slot of environment `{env}` (slots: {})",
        slots.into_iter().collect::<Vec<_>>().join(", ")
    )
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
                        self.servers
                            .iter()
                            .map(|s| s.node.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    } else {
                        "none; drain the whole slot".into()
                    }
                )
            })?;
        Ok(vec![s])
    }
}

/// The maintenance page: the operator's `maintenance_page` file, or a plain one.
pub(crate) fn maintenance_html(file: Option<&Path>) -> Result<String> {
    match file {
        Some(p) => std::fs::read_to_string(p).wrap_err_with(|| {
            format!(
                "cannot read maintenance_page {}; fix the path or remove the setting",
                p.display()
            )
        }),
        None => Ok(
            "<!doctype html>\n<html><head><title>Down for maintenance</title></head>\n\
             <body><h1>Down for maintenance</h1><p>We will be back shortly.</p></body></html>\n"
                .into(),
        ),
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh hidden name beside `p`, for a file or link renamed over it.
pub(crate) fn temp_sibling(p: &Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    p.with_file_name(format!(".{name}.cutover-{}-{n}", std::process::id()))
}

/// Write a file a proxy reads through a temporary sibling, fsync and a rename, so a reader
/// sees the old or the new content, never a part. The new file keeps the owner, group and
/// permissions of the file it replaces (`mode`, when given, replaces the permissions; a new
/// file gets 0644 and cutover's own user): a map file owned by `haproxy` stays owned by
/// `haproxy`.
pub(crate) fn write_atomic(p: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let tmp = temp_sibling(p);
    let old = std::fs::metadata(p).ok();
    let mode = mode.or_else(|| old.as_ref().map(|m| m.permissions().mode()));
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if let Some(m) = &old {
            keep_owner(&f, p, m.uid(), m.gid())?;
        }
        // After the chown: a chown clears the set-id bits.
        f.set_permissions(std::fs::Permissions::from_mode(
            mode.unwrap_or(0o644) & 0o7777,
        ))?;
        f.sync_all()?;
        std::fs::rename(&tmp, p)?;
        // The rename itself survives a crash once the directory is synced (best effort).
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.wrap_err_with(|| format!("cannot write {} (through {})", p.display(), tmp.display()))
}

/// Give the new file `f` (about to replace `p`) the owner and group of the old one. Only
/// root may give a file away: as another user, the owner cannot be kept (the group still is
/// when cutover's user is in it), and the write is refused rather than silently changing who
/// owns a file the proxy reads.
fn keep_owner(f: &std::fs::File, p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let now = f.metadata()?;
    if now.uid() == uid && now.gid() == gid {
        return Ok(());
    }
    std::os::unix::fs::fchown(f, Some(uid), Some(gid)).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot give the new {} the owner {uid}:{gid} of the file it replaces ({e}); \
                 run cutover as that user or as root, or chown the file to cutover's user",
                p.display()
            ),
        )
    })
}
