//! The wrapper every driver gets: [`Driven`] makes a [`Proxy`] a [`Router`], with the error
//! context, one change at a time and a time limit per change; and the macros that declare
//! what drivers share (their router table's common fields, the verbs of a pointer driver and
//! of a driver with server flags).

use std::future::Future;
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, eyre};

use super::{BoxFuture, DEFAULT_OBSERVE_TIMEOUT, Router, Target, Verb};
use crate::model::{EnvSlots, MaintenanceMode, RouterState, Slot};

/// A driver's router table: `pub struct Config { ... }` with the fields every router has
/// (`name`, `public_url`) first, deserialized with unknown fields refused, and its
/// `validate(slots)` as [`Table`]'s. (Not `#[serde(flatten)]`: serde cannot refuse unknown
/// fields through a flatten.)
macro_rules! router_table {
    ($(#[$attr:meta])* pub struct Config { $($fields:tt)* }) => {
        $(#[$attr])*
        #[derive(Debug, Clone, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Config {
            /// The router's name in its environment (defaults to the kind).
            pub name: Option<String>,
            /// This router's own public URL, when it has a frontend of its own (a fleet of
            /// proxies behind DNS): verify probes it as well as the environment's `public_url`.
            pub public_url: Option<String>,
            $($fields)*
        }

        impl $crate::router::Table for Config {
            fn validate(&self, slots: &[$crate::model::Slot]) -> std::result::Result<(), String> {
                Config::validate(self, slots)
            }
        }
    };
}
pub(crate) use router_table;

/// A driver's router table: what [`Driven::new`] checks against the environment's slots
/// before it builds the driver (the table's own `validate`, through [`router_table!`]).
pub trait Table {
    /// The message names the field; it is shown after the router (or the table's place).
    fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String>;
}

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
    type Config: Table;
    /// Build the driver from a table that [`Table::validate`] accepted.
    fn new(name: &str, env: EnvSlots<'_>, cfg: &Self::Config) -> Result<Self>;
    /// See [`Router::supports`].
    fn supports(&self, verb: Verb) -> bool {
        !matches!(verb, Verb::Weights | Verb::Pause)
    }
    /// See [`Router::observe_timeout`].
    fn observe_timeout(&self) -> Duration {
        DEFAULT_OBSERVE_TIMEOUT
    }
    /// See [`Router::caveat`].
    fn caveat(&self) -> Option<&'static str> {
        None
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
                 supports weights (see the README's canary table)"
            ))
        }
    }
    /// See [`Router::pause`]; only for a driver whose `supports(Verb::Pause)`.
    fn pause(&self, on: bool) -> impl Future<Output = Result<()>> + Send {
        let _ = on;
        async {
            Err(eyre!(
                "this router cannot hold requests; pausing needs the embedded router"
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
    /// Build the driver named `name` for `env` from its router table, refused (naming the
    /// router) when the table does not fit the environment's slots.
    pub fn new<'a>(name: String, env: impl Into<EnvSlots<'a>>, cfg: &P::Config) -> Result<Self> {
        let env = env.into();
        cfg.validate(env.slots)
            .map_err(|e| eyre!("{} router `{name}`: {e}", P::KIND))?;
        let proxy = P::new(&name, env, cfg)?;
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
/// per server (nginx, Caddy), from its `observe_inner`, `point(Pointer, slot)` and the
/// methods [`server_verbs`] takes.
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
        $crate::router::server_verbs!();
    };
}
pub(crate) use pointer_verbs;

/// [`Proxy`]'s verbs on servers, maintenance and weights for a driver that has them as
/// `set_drained(target, bool)`, `set_maintenance(on, mode)` and
/// `set_split(live, canary, percent)` (Apache, nginx, Caddy).
macro_rules! server_verbs {
    () => {
        async fn drain(&self, t: &Target) -> Result<()> {
            self.set_drained(t, true).await
        }
        async fn undrain(&self, t: &Target) -> Result<()> {
            self.set_drained(t, false).await
        }
        async fn maintenance(&self, on: bool, m: &MaintenanceMode) -> Result<()> {
            self.set_maintenance(on, m).await
        }
        async fn set_weights(&self, live: &str, canary: &str, percent: u8) -> Result<()> {
            self.set_split(live, canary, percent).await
        }
    };
}
pub(crate) use server_verbs;

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
    fn caveat(&self) -> Option<&'static str> {
        self.proxy.caveat()
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
        // Checked here once for every driver: none is asked for a share that cannot be.
        if percent > 100 {
            return Box::pin(async move {
                Err(eyre!(
                    "a canary share is 0 to 100 %, not {percent}; nothing was changed"
                ))
            });
        }
        Box::pin(self.changing(
            format!("send {percent} % of the live traffic of {live} to {canary}"),
            self.proxy.set_weights(live, canary, percent),
        ))
    }
    fn pause(&self, on: bool) -> BoxFuture<'_, Result<()>> {
        let what = if on {
            "pause requests"
        } else {
            "resume requests"
        };
        Box::pin(self.changing(what.to_string(), self.proxy.pause(on)))
    }
}
