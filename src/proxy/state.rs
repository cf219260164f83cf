//! The proxy's routing state: which slot is live and preview, what is drained, whether
//! maintenance is on, and the per-slot and per-node counters.
//!
//! Requests read the routing with single atomic loads, so a switch never blocks traffic and
//! each request picks its upstream when it arrives. Changes are serialized by one lock,
//! checked, written to the state file (atomically) and only then applied: a change that
//! cannot be saved is refused and the proxy keeps serving what it served before.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use color_eyre::eyre::{Result, WrapErr, bail};
use hyper::body::{Bytes, Incoming};
use hyper::http::uri::{Authority, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::{Deserialize, Serialize};

use super::metrics::{ErrorKind, LocalAnswers, NodeMetrics};
use super::recent::RecentLatency;
use crate::model::EnvSlots;
use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute};
use crate::prom::Histogram;
use crate::router::embedded;

/// The client to the slots' servers (one pool per proxy).
pub(crate) type Upstream = Client<HttpConnector, Incoming>;

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    Live,
    Preview,
}

/// The maintenance page's body. Built once per proxy: under maintenance every request gets it.
pub(crate) fn maintenance_html(retry_after: u64) -> Bytes {
    Bytes::from(format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Down for maintenance</title></head>\n<body style=\"font-family:sans-serif;\
         max-width:36em;margin:4em auto\"><h1>Down for maintenance</h1>\n<p>This service is \
         being updated and will be back shortly. Please try again in {retry_after} seconds.</p>\
         </body></html>\n"
    ))
}

mod changes;
mod persist;

const NONE: usize = usize::MAX;
const MAINT_OFF: usize = 0;
const MAINT_PAGE: usize = 1;
/// `MAINT_REDIRECT + i` redirects live traffic to slot `i`.
const MAINT_REDIRECT: usize = 2;

/// One upstream server: a node of a slot, or the slot's own address.
pub(crate) struct NodeRt {
    pub name: String,
    pub address: String,
    pub scheme: Scheme,
    pub authority: Authority,
    pub draining: AtomicBool,
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// A moving average (1/16 weight to the newest) of the time the node took to answer
    /// with its response headers, in microseconds; 0 before the first answer.
    pub latency_us: AtomicU64,
    /// Answers by status class and errors by kind, for `/metrics`.
    pub metrics: NodeMetrics,
    /// The proxy's own health check of a node of a slot with several (see `proxy::checks`):
    /// the URL and the status it must answer; none for a slot of one server.
    pub check: Option<(String, u16)>,
    /// The check failed `node_check_fall` times in a row: new requests go to the slot's
    /// other nodes while any of them is up.
    pub down: AtomicBool,
}

impl NodeRt {
    /// Count one answer's time into the moving average.
    pub fn record_latency(&self, took: std::time::Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .latency_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    us
                } else {
                    // old + (us - old) / 16, in signed arithmetic.
                    (old as i128 + (us as i128 - old as i128) / 16).max(1) as u64
                })
            });
    }
}

pub(crate) struct SlotRt {
    pub name: String,
    /// True when the slot lists `nodes`; otherwise `nodes` holds the slot's address alone.
    pub has_nodes: bool,
    pub nodes: Vec<NodeRt>,
    pub draining: AtomicBool,
    rr: AtomicUsize,
    /// How long the slot's answers took, for `/metrics`.
    pub latency: Histogram,
    /// The same, over the last few seconds only: p50 and p99 for `/state`.
    pub recent: RecentLatency,
}

impl SlotRt {
    fn ready_nodes(&self) -> usize {
        if self.draining.load(Ordering::SeqCst) {
            return 0;
        }
        self.nodes
            .iter()
            .filter(|n| !n.draining.load(Ordering::SeqCst))
            .count()
    }
}

/// A change refused or failed, with the HTTP status the admin API answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminError {
    pub status: u16,
    pub message: String,
}

impl AdminError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        AdminError {
            status,
            message: message.into(),
        }
    }
}

/// A drained slot or node, as the state file keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Drained {
    pub slot: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// What the state file holds, and what every change is computed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Saved {
    #[serde(default)]
    pub environment: String,
    pub live: String,
    pub preview: Option<String>,
    #[serde(default)]
    pub drained: Vec<Drained>,
    pub maintenance: Option<MaintenanceMode>,
    /// The canary split of the live traffic, when one is set (never at 0 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
}

/// `percent` % of the live traffic goes to `slot` (1..=100).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Canary {
    pub slot: String,
    pub percent: u8,
}

/// The canary split packed in one word, so a request reads slot and share together:
/// `slot index << 8 | percent`; a percent of 0 is no canary.
fn pack_canary(slot: usize, percent: u8) -> u64 {
    ((slot as u64) << 8) | u64::from(percent)
}

fn unpack_canary(v: u64) -> Option<(usize, u8)> {
    let percent = (v & 0xff) as u8;
    (percent > 0).then_some(((v >> 8) as usize, percent))
}

/// Whether the `n`th request of a split goes to the canary. Multiplying by 37 (coprime with
/// 100) spreads the canary's share evenly over every 100 requests instead of in one run, so
/// any window of requests carries close to `percent` % whatever its length.
pub(crate) fn goes_to_canary(n: u64, percent: u8) -> bool {
    (n.wrapping_mul(37) % 100) < u64::from(percent)
}

/// Settings the request path reads.
pub(crate) struct Options {
    pub retry_after: u64,
    /// The maintenance page's body (it only depends on `retry_after`).
    pub maintenance_page: hyper::body::Bytes,
    /// The environment's name as the value of the redirected-request header (`None` when
    /// the name cannot be a header value).
    pub redirected_as: Option<hyper::header::HeaderValue>,
    pub bypass_cookie: String,
    pub bypass_header: hyper::header::HeaderName,
    /// The canary's pinning cookie (`None`: off).
    pub sticky_cookie: Option<String>,
    /// The header and the cookie that reach the preview slot through the live listener.
    pub preview_header: Option<hyper::header::HeaderName>,
    pub preview_cookie: Option<String>,
    pub upstream_timeout: std::time::Duration,
    pub pause_timeout: std::time::Duration,
    pub pause_max_held: u64,
    pub upgrade_drain_timeout: Option<std::time::Duration>,
}

pub(crate) struct Shared {
    pub env: String,
    pub slots: Vec<SlotRt>,
    live: AtomicUsize,
    preview: AtomicUsize,
    maint: AtomicUsize,
    /// [`pack_canary`]; 0 when no canary share is set.
    canary: AtomicU64,
    /// Counts the live requests a canary split has decided, for [`goes_to_canary`].
    split_seq: AtomicU64,
    pub opts: Options,
    pub token: Option<String>,
    pub state_file: PathBuf,
    /// Facts found while loading the state file (ignored entries), shown in observe().
    load_notes: Vec<String>,
    changes: tokio::sync::Mutex<()>,
    /// Requests answered by the proxy itself, for `/metrics`.
    pub local: LocalAnswers,
    /// The pooled upstream client shared by every slot.
    pub client: Upstream,
    /// Where each request's line goes, when `access_log` is set.
    pub access_log: Option<super::access_log::Sink>,
    /// The TLS listeners' certificates (`tls`, then `preview_tls`), reloaded by the admin API.
    pub tls: Vec<Arc<super::tls::Certs>>,
    /// True while `POST /pause` holds new live requests (read once per request; the watch
    /// below is only subscribed to while paused).
    pub paused: AtomicBool,
    pause: tokio::sync::watch::Sender<bool>,
    /// Requests held by the pause right now.
    pub held: AtomicU64,
    /// Requests refused (503) since the last pause began.
    pub pause_refused: AtomicU64,
    /// Bumped after each change of the routing, for upgraded connections that watch it.
    routing: tokio::sync::watch::Sender<u64>,
    /// The TLS port each plain listener (live, preview) redirects to, when its TLS table has
    /// `redirect = true`.
    pub redirect_to_https: [Option<u16>; 2],
}

/// One held request, counted in `held` until it is released or refused.
struct HeldGuard<'a>(&'a AtomicU64);

impl Drop for HeldGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A request counted against one node; the in-flight gauge falls when it is dropped
/// (when the response body has been sent, or the client went away).
pub(crate) struct Lease {
    shared: Arc<Shared>,
    pub slot: usize,
    pub node: usize,
    since: std::time::Instant,
}

impl Lease {
    pub fn node(&self) -> &NodeRt {
        &self.shared.slots[self.slot].nodes[self.node]
    }
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
    pub fn slot_name(&self) -> &str {
        &self.shared.slots[self.slot].name
    }
    /// Count a failed request (`errors` and its kind).
    pub fn count_error(&self, kind: ErrorKind) {
        let node = self.node();
        node.errors.fetch_add(1, Ordering::Relaxed);
        node.metrics.failed(kind);
    }
    /// Count the answer's status class and how long it took since the lease was taken.
    pub fn answered(&self, status: u16) {
        self.node().metrics.answered(status);
        let now = std::time::Instant::now();
        let took = now.saturating_duration_since(self.since);
        let slot = &self.shared.slots[self.slot];
        slot.latency.observe(took);
        slot.recent.record(took, now);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.node().in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long the proxy tries to connect to a slot before answering 502.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

fn upstream_client() -> Upstream {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(15))
        .build(connector)
}

fn parse_upstream(name: &str, address: &crate::model::Address) -> Result<NodeRt> {
    if address.is_https() {
        bail!("`{address}` (of `{name}`): the embedded proxy forwards over plain http:// only");
    }
    let authority = Authority::try_from(address.authority())
        .wrap_err_with(|| format!("`{address}` (of `{name}`) has no usable host"))?;
    let scheme = Scheme::HTTP;
    Ok(NodeRt {
        name: name.to_string(),
        address: address.to_string(),
        scheme,
        authority,
        draining: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latency_us: AtomicU64::new(0),
        metrics: NodeMetrics::default(),
        check: None,
        down: AtomicBool::new(false),
    })
}

impl Shared {
    pub fn new(env: EnvSlots<'_>, cfg: &embedded::Config, token: Option<String>) -> Result<Shared> {
        let mut slots = Vec::new();
        for s in env.slots {
            let nodes = if s.nodes.is_empty() {
                vec![parse_upstream(&s.name, &s.address)?]
            } else {
                // The slot's health path on each node, checked by the proxy itself.
                let path = url::Url::parse(&s.health_url)
                    .map(|u| u[url::Position::BeforePath..].to_string())
                    .unwrap_or_else(|_| "/health".into());
                s.nodes
                    .iter()
                    .map(|n| {
                        let mut node = parse_upstream(&n.name, &n.address)?;
                        node.check = Some((n.address.join(&path), s.expect_status));
                        Ok(node)
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            slots.push(SlotRt {
                name: s.name.clone(),
                has_nodes: !s.nodes.is_empty(),
                nodes,
                draining: AtomicBool::new(false),
                rr: AtomicUsize::new(0),
                latency: Histogram::default(),
                recent: RecentLatency::default(),
            });
        }
        if slots.is_empty() {
            bail!("environment `{}` has no slots to proxy to", env.name);
        }
        let bypass_header = hyper::header::HeaderName::from_bytes(cfg.bypass_header.as_bytes())
            .wrap_err_with(|| {
                format!(
                    "`bypass_header = \"{}\"` is not a header name",
                    cfg.bypass_header
                )
            })?;
        let preview_header = cfg
            .preview_header
            .as_deref()
            .map(|h| {
                hyper::header::HeaderName::from_bytes(h.as_bytes())
                    .wrap_err_with(|| format!("`preview_header = \"{h}\"` is not a header name"))
            })
            .transpose()?;
        let state_file = cfg.state_path(env.name);
        let mut shared = Shared {
            env: env.name.to_string(),
            slots,
            live: AtomicUsize::new(0),
            preview: AtomicUsize::new(NONE),
            maint: AtomicUsize::new(MAINT_OFF),
            canary: AtomicU64::new(0),
            split_seq: AtomicU64::new(0),
            opts: Options {
                retry_after: cfg.retry_after,
                maintenance_page: maintenance_html(cfg.retry_after),
                redirected_as: hyper::header::HeaderValue::from_str(env.name).ok(),
                bypass_cookie: cfg.bypass_cookie.clone(),
                bypass_header,
                sticky_cookie: Some(cfg.sticky_cookie.clone()).filter(|c| !c.is_empty()),
                preview_header,
                preview_cookie: cfg.preview_cookie.clone(),
                upstream_timeout: std::time::Duration::from_secs(cfg.upstream_timeout),
                pause_timeout: std::time::Duration::from_secs(cfg.pause_timeout),
                pause_max_held: cfg.pause_max_held,
                upgrade_drain_timeout: cfg
                    .upgrade_drain_timeout
                    .map(std::time::Duration::from_secs),
            },
            token,
            state_file,
            load_notes: Vec::new(),
            changes: tokio::sync::Mutex::new(()),
            local: LocalAnswers::default(),
            client: upstream_client(),
            access_log: None,
            tls: Vec::new(),
            paused: AtomicBool::new(false),
            pause: tokio::sync::watch::Sender::new(false),
            held: AtomicU64::new(0),
            pause_refused: AtomicU64::new(0),
            routing: tokio::sync::watch::Sender::new(0),
            redirect_to_https: [None, None],
        };
        let initial = shared.initial(cfg);
        let (saved, notes) = shared.load(initial)?;
        shared.load_notes = notes;
        shared.apply(&saved);
        Ok(shared)
    }

    pub fn index(&self, slot: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == slot)
    }

    fn known(&self) -> String {
        crate::router::comma_list(self.slots.iter().map(|s| s.name.as_str()))
    }

    fn unknown_slot(&self, slot: &str) -> AdminError {
        AdminError::new(
            404,
            format!("unknown slot `{slot}`; this proxy knows: {}", self.known()),
        )
    }

    fn slot_of(&self, slot: &str) -> Result<(usize, &SlotRt), AdminError> {
        let i = self.index(slot).ok_or_else(|| self.unknown_slot(slot))?;
        Ok((i, &self.slots[i]))
    }

    /// Told after each change of the routing.
    pub fn routing_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.routing.subscribe()
    }

    /// Whether `node` of `slot` still takes new requests of `listener`: neither is drained,
    /// and the slot is the listener's (live, or the maintenance redirect target; preview).
    pub fn serving(&self, listener: Listener, slot: usize, node: usize) -> bool {
        let Some(s) = self.slots.get(slot) else {
            return false;
        };
        let drained = s.draining.load(Ordering::SeqCst)
            || s.nodes
                .get(node)
                .is_none_or(|n| n.draining.load(Ordering::SeqCst));
        let chosen = match listener {
            Listener::Live => self.live() == slot || self.maint() == Some(Some(slot)),
            Listener::Preview => self.preview() == Some(slot),
        };
        chosen && !drained
    }

    /// The TLS port the plain `listener` redirects to, if it does.
    pub fn https_redirect(&self, listener: Listener) -> Option<u16> {
        self.redirect_to_https[match listener {
            Listener::Live => 0,
            Listener::Preview => 1,
        }]
    }

    pub fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// The canary slot and its share of the live traffic, when one is set.
    pub fn canary(&self) -> Option<(usize, u8)> {
        unpack_canary(self.canary.load(Ordering::SeqCst))
    }

    /// The slot a new live request goes to: the live slot, or the canary slot for its share.
    /// Atomics only: one load of the split and one counter increment.
    pub fn live_or_canary(&self) -> usize {
        match self.canary() {
            Some((slot, percent)) => {
                let n = self.split_seq.fetch_add(1, Ordering::Relaxed);
                if goes_to_canary(n, percent) {
                    slot
                } else {
                    self.live()
                }
            }
            None => self.live(),
        }
    }

    pub fn preview(&self) -> Option<usize> {
        Some(self.preview.load(Ordering::SeqCst)).filter(|&i| i != NONE)
    }

    /// `None`: off; `Some(None)`: the page; `Some(Some(i))`: redirect to slot `i`.
    pub fn maint(&self) -> Option<Option<usize>> {
        match self.maint.load(Ordering::SeqCst) {
            MAINT_OFF => None,
            MAINT_PAGE => Some(None),
            k => Some(Some(k - MAINT_REDIRECT)),
        }
    }

    pub fn maintenance(&self) -> Option<MaintenanceMode> {
        self.maint().map(|m| match m {
            None => MaintenanceMode::Page,
            Some(i) => MaintenanceMode::Redirect {
                to: self
                    .slots
                    .get(i)
                    .map(|s| s.name.clone())
                    .unwrap_or_default(),
            },
        })
    }

    /// Count a new request against a ready node of `slot` (round-robin), or `None` when the
    /// slot has no ready node. The drain flags are checked again after the gauge went up, so
    /// a drain that observe() has shown at zero in-flight never gets a late request.
    pub fn acquire(self: &Arc<Self>, slot: usize) -> Option<Lease> {
        let s = self.slots.get(slot)?;
        if s.draining.load(Ordering::SeqCst) {
            return None;
        }
        let n = s.nodes.len();
        let start = s.rr.fetch_add(1, Ordering::Relaxed);
        // Nodes the proxy's checks found down only when no other ready node is up: a check
        // that is wrong about every node must not turn the slot off.
        let any_up = s
            .nodes
            .iter()
            .any(|n| !n.down.load(Ordering::Relaxed) && !n.draining.load(Ordering::SeqCst));
        for k in 0..n {
            let i = (start + k) % n;
            let node = &s.nodes[i];
            if node.draining.load(Ordering::SeqCst) || (any_up && node.down.load(Ordering::Relaxed))
            {
                continue;
            }
            node.in_flight.fetch_add(1, Ordering::SeqCst);
            if node.draining.load(Ordering::SeqCst) || s.draining.load(Ordering::SeqCst) {
                node.in_flight.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            node.requests.fetch_add(1, Ordering::Relaxed);
            return Some(Lease {
                shared: self.clone(),
                slot,
                node: i,
                since: std::time::Instant::now(),
            });
        }
        None
    }

    // --- what the admin API reads and changes ------------------------------------------

    /// How a request on the live listener reaches the preview slot, when that is armed.
    fn preview_route(&self) -> Option<String> {
        let slot = self.slots.get(self.preview()?)?;
        let header = self
            .opts
            .preview_header
            .as_ref()
            .map(|h| format!("header {h}"));
        let cookie = self
            .opts
            .preview_cookie
            .as_ref()
            .map(|c| format!("cookie {c}=1"));
        let how: Vec<String> = header.into_iter().chain(cookie).collect();
        (!how.is_empty()).then(|| format!("{} → {}", how.join(" or "), slot.name))
    }

    pub fn observe(&self) -> RouterState {
        let mut state = RouterState {
            live: self.slots.get(self.live()).map(|s| s.name.clone()),
            preview: self
                .preview()
                .and_then(|i| self.slots.get(i))
                .map(|s| s.name.clone()),
            maintenance: self.maintenance(),
            notes: self.load_notes.clone(),
            weights: self.canary().and_then(|(i, percent)| {
                Some(crate::model::Weights {
                    live: self.slots.get(self.live())?.name.clone(),
                    canary: self.slots.get(i)?.name.clone(),
                    canary_percent: percent,
                })
            }),
            preview_route: self.preview_route(),
            ..Default::default()
        };
        let pause = crate::model::PauseState {
            paused: self.paused.load(Ordering::SeqCst),
            held: self.held.load(Ordering::SeqCst),
            refused: self.pause_refused.load(Ordering::SeqCst),
        };
        state.pause = Some(pause);
        if pause.paused {
            state.notes.push(format!(
                "paused: {} requests held (each up to {}s, at most {}; POST /resume releases them)",
                pause.held,
                self.opts.pause_timeout.as_secs(),
                self.opts.pause_max_held
            ));
        }
        let admin = |draining: bool| {
            if draining {
                AdminState::Drain
            } else {
                AdminState::Ready
            }
        };
        let now = std::time::Instant::now();
        for s in &self.slots {
            let sum = |f: fn(&NodeRt) -> &AtomicU64| {
                s.nodes
                    .iter()
                    .map(|n| f(n).load(Ordering::SeqCst))
                    .sum::<u64>()
            };
            let all_nodes_drained =
                s.has_nodes && s.nodes.iter().all(|n| n.draining.load(Ordering::SeqCst));
            let nodes = if s.has_nodes {
                s.nodes
                    .iter()
                    .map(|n| NodeRoute {
                        name: n.name.clone(),
                        admin: admin(n.draining.load(Ordering::SeqCst)),
                        sessions: Some(n.in_flight.load(Ordering::SeqCst)),
                        check: n.check.as_ref().map(|_| {
                            if n.down.load(Ordering::Relaxed) {
                                "DOWN".to_string()
                            } else {
                                "UP".to_string()
                            }
                        }),
                    })
                    .collect()
            } else {
                Vec::new()
            };
            state.slots.insert(
                s.name.clone(),
                SlotRoute {
                    admin: admin(s.draining.load(Ordering::SeqCst) || all_nodes_drained),
                    sessions: Some(sum(|n| &n.in_flight)),
                    requests: Some(sum(|n| &n.requests)),
                    errors: Some(sum(|n| &n.errors)),
                    latency_ms: {
                        // The nodes' moving averages, averaged over the nodes that answered.
                        let seen: Vec<u64> = s
                            .nodes
                            .iter()
                            .map(|n| n.latency_us.load(Ordering::Relaxed))
                            .filter(|&us| us > 0)
                            .collect();
                        (!seen.is_empty())
                            .then(|| seen.iter().sum::<u64>() / seen.len() as u64 / 1000)
                    },
                    percentiles: s.recent.percentiles(now),
                    check: None,
                    checks_up: None,
                    nodes,
                },
            );
        }
        state
    }

    /// Whether live, preview or a maintenance redirect sends traffic to `slot`, and as what.
    fn serving_role(&self, next: &Saved, slot: &str) -> Option<&'static str> {
        if next.live == slot {
            Some("live")
        } else if next.preview.as_deref() == Some(slot) {
            Some("the preview slot")
        } else if next.canary.as_ref().is_some_and(|c| c.slot == slot) {
            Some("the canary slot")
        } else if matches!(&next.maintenance, Some(MaintenanceMode::Redirect { to }) if to == slot)
        {
            Some("the maintenance redirect target")
        } else {
            None
        }
    }

    fn must_take_traffic(&self, slot: &SlotRt, as_what: &str) -> Result<(), AdminError> {
        if slot.draining.load(Ordering::SeqCst) {
            return Err(AdminError::new(
                409,
                format!(
                    "slot `{}` is draining, so it cannot become {as_what}; undrain it first",
                    slot.name
                ),
            ));
        }
        if slot.ready_nodes() == 0 {
            return Err(AdminError::new(
                409,
                format!(
                    "every node of slot `{}` is drained, so it cannot become {as_what}; undrain a node first",
                    slot.name
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
