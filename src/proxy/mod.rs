//! cutover's own reverse proxy (the `embedded` router): a live listener, an optional preview
//! listener and an admin API, on hyper.
//!
//! - Each request picks its upstream when it arrives, from an atomic read of the routing, so
//!   a switch loses no request: in-flight requests finish on the old slot, new ones go to the
//!   new slot, and client keep-alive connections keep working across the switch.
//! - Upstreams are reached through one pooled client; bodies stream both ways; hop-by-hop
//!   headers are dropped and `X-Forwarded-For/-Proto/-Host` added.
//! - Drain, maintenance (503 page or redirect to another slot, with a bypass cookie/header and
//!   a loop guard) and the state file are in [`state`]; the admin API is in [`admin`].
//!
//! Used by `cutover proxy --config FILE` ([`run_from_config`]) and `cutover demo` ([`start`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::config::{self, Environment};
use crate::model::EnvSlots;
use crate::model::RouterState;
use crate::router::{RouterConfig, embedded};

mod access_log;
mod admin;
mod checks;
mod forward;
mod hosts;
mod listen;
mod metrics;
mod recent;
mod state;
mod tls;

pub use forward::REDIRECTED_HEADER;

use state::Listener;
use state::Shared;

/// How long a stopping proxy lets in-flight requests finish.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// A running proxy. Dropping it stops the listeners (in-flight requests still finish).
pub struct ProxyHandle {
    env: String,
    live: SocketAddr,
    preview: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    preview_tls: Option<SocketAddr>,
    admin: SocketAddr,
    shared: Arc<Shared>,
    /// Shared by the handles of one [`start_many`].
    shutdown: Arc<watch::Sender<bool>>,
    /// Closed when every listener and connection task has ended (held by the first handle
    /// of a [`start_many`]).
    done: Option<mpsc::Receiver<()>>,
}

impl ProxyHandle {
    /// The environment this proxy serves.
    pub fn environment(&self) -> &str {
        &self.env
    }
    /// Where the live listener is bound.
    pub fn live_addr(&self) -> SocketAddr {
        self.live
    }
    /// Where the preview listener is bound, when there is one.
    pub fn preview_addr(&self) -> Option<SocketAddr> {
        self.preview
    }
    /// Where the TLS listener is bound, when there is one.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }
    /// Where the preview TLS listener is bound, when there is one.
    pub fn preview_tls_addr(&self) -> Option<SocketAddr> {
        self.preview_tls
    }
    /// Re-read the TLS certificates and keys (as `POST /tls/reload` and SIGHUP do): new
    /// handshakes get the new certificate, open connections keep theirs. Without `tls` or
    /// `preview_tls` this does nothing; on an error the certificate in use stays.
    pub async fn reload_tls(&self) -> Result<()> {
        tls::reload_all(&self.shared.tls).await
    }
    /// Where the admin API is bound.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }
    /// The state file the proxy writes.
    pub fn state_file(&self) -> &std::path::Path {
        &self.shared.state_file
    }
    /// The routing and counters, read in-process (the driver reads the same over the API).
    pub fn state(&self) -> RouterState {
        self.shared.observe()
    }
    /// Stop accepting connections; in-flight requests finish, idle connections close.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
    /// Stop, and wait until the listeners are closed and in-flight requests have finished
    /// (at most 10 s).
    pub async fn stop(mut self) {
        self.shutdown();
        if let Some(done) = self.done.as_mut() {
            let _ = tokio::time::timeout(STOP_GRACE, done.recv()).await;
        }
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn bind(what: &str, field: &str, addr: &str) -> Result<TcpListener> {
    let parsed: SocketAddr = addr
        .parse()
        .map_err(|_| eyre!("`{field} = \"{addr}\"` is not an address like \"127.0.0.1:8080\""))?;
    TcpListener::bind(parsed).await.map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "address in use".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        eyre!("the {what} cannot bind {parsed}: {why}; set {field} to a free port")
    })
}

/// Start a proxy for `env` as configured by `cfg`: bind the listeners, load the state file,
/// and serve until the handle is stopped or dropped.
pub async fn start<'a>(
    env: impl Into<EnvSlots<'a>>,
    cfg: &embedded::Config,
) -> Result<ProxyHandle> {
    let mut v = start_many(&[(env.into(), cfg)]).await?;
    v.pop().ok_or_else(|| eyre!("no proxy was started"))
}

/// The environment's own part of a proxy, before its listeners are bound: its routing state
/// and counters, admin token and access log.
async fn prepare(env: EnvSlots<'_>, cfg: &embedded::Config) -> Result<Shared> {
    cfg.validate(env.slots).map_err(|m| {
        eyre!(
            "the embedded router of environment `{}` is misconfigured: {m}",
            env.name
        )
    })?;
    let token = match &cfg.token_env {
        None => None,
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
            _ => {
                return Err(crate::model::ConfigProblem(format!(
                    "`token_env = \"{var}\"` but ${var} is not set (or empty); export the admin \
                     token in ${var}, or remove `token_env` to run the admin API without one"
                ))
                .into());
            }
        },
    };
    let context = || {
        format!(
            "cannot start the embedded proxy of environment `{}`",
            env.name
        )
    };
    let mut shared = Shared::new(env, cfg, token).wrap_err_with(context)?;
    if let Some(spec) = &cfg.access_log {
        let names = shared
            .slots
            .iter()
            .map(|s| {
                (
                    s.name.clone(),
                    s.nodes.iter().map(|n| n.name.clone()).collect(),
                )
            })
            .collect();
        let sink = access_log::open(spec, names).await.wrap_err_with(context)?;
        shared.access_log = Some(sink);
    }
    Ok(shared)
}

/// Start the proxies of several environments at once (`cutover proxy`): environments whose
/// routers name the same address for a listener share it, routed by `hosts` and
/// `path_prefix`; each has its own admin API, state and handle. The handles of one call stop
/// together: stopping or dropping one stops them all.
pub async fn start_many(items: &[(EnvSlots<'_>, &embedded::Config)]) -> Result<Vec<ProxyHandle>> {
    let mut shared = Vec::new();
    for (env, cfg) in items {
        shared.push(prepare(*env, cfg).await?);
    }
    let names: Vec<&str> = items.iter().map(|(e, _)| e.name).collect();
    let cfgs: Vec<&embedded::Config> = items.iter().map(|(_, c)| *c).collect();
    let groups = listen::plan(&names, &cfgs, &mut shared).await?;
    let mut bound = Vec::new();
    for g in &groups {
        let (l, a) = listen::bind(g).await?;
        if g.tls {
            for &m in &g.members {
                let table = match g.listener {
                    Listener::Live => &cfgs[m].tls,
                    Listener::Preview => &cfgs[m].preview_tls,
                };
                if table.as_ref().is_some_and(|t| t.redirect) {
                    shared[m].redirect_to_https[usize::from(g.listener == Listener::Preview)] =
                        Some(a.port());
                }
            }
        }
        bound.push((l, a));
    }
    let shared: Vec<Arc<Shared>> = shared.into_iter().map(Arc::new).collect();
    let mut admins = Vec::new();
    for cfg in &cfgs {
        let l = bind("admin API", "admin", &cfg.admin).await?;
        let a = l.local_addr().wrap_err("cannot read a bound address")?;
        admins.push((l, a));
    }

    let (shutdown, stopped) = watch::channel(false);
    let shutdown = Arc::new(shutdown);
    let (alive, done) = mpsc::channel::<()>(1);
    let mut handles: Vec<ProxyHandle> = items
        .iter()
        .zip(&shared)
        .zip(&admins)
        .map(|(((env, _), s), (_, admin))| ProxyHandle {
            env: env.name.to_string(),
            live: *admin,
            preview: None,
            tls: None,
            preview_tls: None,
            admin: *admin,
            shared: s.clone(),
            shutdown: shutdown.clone(),
            done: None,
        })
        .collect();
    for (g, (l, a)) in groups.iter().zip(bound) {
        for &m in &g.members {
            let h = &mut handles[m];
            match (g.listener, g.tls) {
                (Listener::Live, false) => h.live = a,
                (Listener::Preview, false) => h.preview = Some(a),
                (Listener::Live, true) => h.tls = Some(a),
                (Listener::Preview, true) => h.preview_tls = Some(a),
            }
        }
        let acceptor = if g.tls {
            let config = tls::server_config(g.certs.clone(), g.http2)?;
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
        } else {
            None
        };
        let routes = Arc::new(listen::routes(g, &cfgs, &shared));
        let kind = Kind::Serve(g.listener, acceptor, routes);
        spawn_listener(l, kind, &stopped, &alive);
    }
    spawn_admins(
        admins.into_iter().map(|(l, _)| l),
        &shared,
        &stopped,
        &alive,
    )?;
    for (s, cfg) in shared.iter().zip(&cfgs) {
        checks::spawn(s, cfg, &stopped);
    }
    if let Some(first) = handles.first_mut() {
        first.done = Some(done);
    }
    Ok(handles)
}

/// What a listener serves: live or preview traffic of the environments it routes to (over
/// TLS when it has an acceptor), or an environment's admin API.
#[derive(Clone)]
enum Kind {
    Serve(
        Listener,
        Option<tokio_rustls::TlsAcceptor>,
        Arc<hosts::Routes>,
    ),
    Admin(Arc<Shared>),
}

/// How long a client may take over its TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serve the admin APIs on a thread of their own, with a runtime of its own: a switch, a
/// drain or the driver's reading is then answered at once, not after the requests queued on
/// the proxy's workers (under 64 saturating connections, the switch command took 5 ms to be
/// answered and the state read 2 ms; see BENCHMARKS.md), and the state file's flush blocks no
/// worker. The thread ends once its listeners and connections have (after `stopped` flips).
fn spawn_admins(
    listeners: impl Iterator<Item = TcpListener>,
    shared: &[Arc<Shared>],
    stopped: &watch::Receiver<bool>,
    alive: &mpsc::Sender<()>,
) -> Result<()> {
    // Held by every admin task (beside `alive`, which `stop` waits for): the thread runs
    // until the last one ends (or, should this fail half-way, until this one is dropped).
    let (admin_alive, mut admin_done) = mpsc::channel::<()>(1);
    let rt = crate::runtime_thread("cutover-admin", async move {
        let _ = admin_done.recv().await;
    })
    .wrap_err("cannot start the admin API's thread")?;
    let _on_admin_rt = rt.enter();
    for (l, s) in listeners.zip(shared) {
        // Registered again on the admin runtime, whose thread then does its I/O.
        let l = l
            .into_std()
            .and_then(TcpListener::from_std)
            .wrap_err("cannot move the admin API's listener to its thread")?;
        let alive = (alive.clone(), admin_alive.clone());
        spawn_listener(l, Kind::Admin(s.clone()), stopped, &alive);
    }
    Ok(())
}

/// Accept on `listener` (on the current runtime) until `stopped` flips; each task holds a
/// clone of `alive` until it ends.
fn spawn_listener<A: Clone + Send + 'static>(
    listener: TcpListener,
    kind: Kind,
    stopped: &watch::Receiver<bool>,
    alive: &A,
) {
    let (mut stopped, alive) = (stopped.clone(), alive.clone());
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = async { let _ = stopped.wait_for(|s| *s).await; } => break,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little, keep serving.
                    tracing::warn!(addr = ?listener.local_addr().ok(), "accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (stopped, alive) = (stopped.clone(), alive.clone());
            let kind = kind.clone();
            tokio::spawn(async move {
                let _alive = alive;
                match kind {
                    Kind::Serve(l, Some(acceptor), routes) => {
                        let shake =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        match shake.await {
                            Ok(Ok(tls)) => {
                                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                                let how = Conn {
                                    https: true,
                                    h2,
                                    peer,
                                };
                                let kind = Kind::Serve(l, None, routes);
                                serve(TokioIo::new(tls), kind, how, stopped).await;
                            }
                            Ok(Err(e)) => tracing::debug!(%peer, "TLS handshake failed: {e}"),
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    }
                    kind => {
                        let how = Conn {
                            https: false,
                            h2: false,
                            peer,
                        };
                        serve(TokioIo::new(stream), kind, how, stopped).await;
                    }
                }
            });
        }
    });
}

/// How a connection came in: over TLS or not, HTTP/2 (agreed by ALPN) or HTTP/1.1, and from
/// where.
#[derive(Clone, Copy)]
struct Conn {
    https: bool,
    h2: bool,
    peer: SocketAddr,
}

/// Serve a connection until it ends, or until the proxy stops: then shut it down
/// gracefully (in-flight requests finish, at most [`STOP_GRACE`]).
macro_rules! until_stopped {
    ($conn:expr, $stopped:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = async { let _ = $stopped.wait_for(|s| *s).await; } => {
                conn.as_mut().graceful_shutdown();
                let _ = tokio::time::timeout(STOP_GRACE, conn.as_mut()).await;
            }
        }
    }};
}

/// Serve one accepted connection (its TLS handshake done, if any) until it closes or the
/// proxy stops. The slots are always reached over HTTP/1.1, whatever the client spoke.
async fn serve<IO>(io: TokioIo<IO>, kind: Kind, how: Conn, mut stopped: watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let stop = stopped.clone();
    let svc = service_fn(move |req: hyper::Request<Incoming>| {
        let (stop, kind) = (stop.clone(), kind.clone());
        async move {
            let resp = match kind {
                Kind::Serve(l, _, routes) => match routes.pick(req.uri(), req.headers()) {
                    Some(shared) => {
                        let shared = shared.clone();
                        forward::handle(shared, l, req, how.peer, how.https, &stop).await
                    }
                    None => routes.not_found(req.uri(), req.headers()),
                },
                Kind::Admin(shared) => admin::handle(shared, req).await,
            };
            Ok::<_, Infallible>(resp)
        }
    });
    if how.h2 {
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .serve_connection(io, svc);
        until_stopped!(conn, stopped);
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(io, svc)
            .with_upgrades();
        until_stopped!(conn, stopped);
    }
}

/// `cutover proxy --config FILE [ENV]`: start a proxy for every embedded router (or those of
/// environment `env`), say what listens where, and run until Ctrl-C or SIGTERM.
pub async fn run_from_config(cfg: &config::Config, env: Option<&str>) -> Result<()> {
    // Listen for the stop signals before anything serves, so none is missed.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).wrap_err("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).wrap_err("cannot listen for Ctrl-C")?;
    let mut hup = signal(SignalKind::hangup()).wrap_err("cannot listen for SIGHUP")?;
    let envs: Vec<&Environment> = match env {
        None => cfg.environments.iter().collect(),
        Some(name) => {
            let e = cfg
                .environments
                .iter()
                .find(|e| e.name == name)
                .ok_or_else(|| {
                    eyre!(
                        "there is no environment `{name}` in {}; it has: {}",
                        cfg.path.display(),
                        crate::router::comma_list(cfg.environments.iter().map(|e| e.name.as_str()))
                    )
                })?;
            vec![e]
        }
    };
    let routers: Vec<(&Environment, &RouterConfig, &embedded::Config)> = envs
        .iter()
        .flat_map(|e| {
            e.routers.iter().filter_map(move |r| match r {
                RouterConfig::Embedded(c) => Some((*e, r, c)),
                _ => None,
            })
        })
        .collect();
    let items: Vec<(EnvSlots<'_>, &embedded::Config)> =
        routers.iter().map(|(e, _, c)| (e.routed(), *c)).collect();
    // Every embedded router at once: routers that name one address share its listener.
    let handles = start_many(&items).await?;
    for ((e, r, _), h) in routers.iter().zip(&handles) {
        {
            let st = h.state();
            tracing::info!(
                env = %e.name,
                router = r.name(),
                live = %h.live_addr(),
                live_slot = st.live.as_deref().unwrap_or("-"),
                preview = %h.preview_addr().map_or("-".to_string(), |a| a.to_string()),
                preview_slot = st.preview.as_deref().unwrap_or("-"),
                admin = %h.admin_addr(),
                state_file = %h.state_file().display(),
                "embedded proxy listening"
            );
        }
    }
    if handles.is_empty() {
        bail!(
            "no environment in {}{} has a router with kind = \"embedded\"; add \
             [[environment.router]] kind = \"embedded\" to it",
            cfg.path.display(),
            env.map(|e| format!(" named `{e}`")).unwrap_or_default()
        );
    }
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => {
                for h in &handles {
                    match h.reload_tls().await {
                        Ok(()) if h.tls_addr().is_some() => {
                            tracing::info!(env = %h.environment(), "SIGHUP: TLS certificate reloaded");
                        }
                        Ok(()) => {}
                        Err(e) => tracing::error!(
                            env = %h.environment(),
                            "SIGHUP: the TLS certificate was not reloaded (the one in use stays): {e:#}"
                        ),
                    }
                }
            }
        }
    }
    tracing::info!("stopping: in-flight requests finish (at most 10 s)");
    for h in handles {
        h.stop().await;
    }
    Ok(())
}
