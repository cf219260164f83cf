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
use hyper::Uri;
use hyper::http::uri::{Authority, Scheme};
use serde::{Deserialize, Serialize};

use super::metrics::{ErrorKind, LocalAnswers, NodeMetrics};
use crate::config::Environment;
use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute};
use crate::prom::Histogram;
use crate::router::embedded;

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
    /// A path prefix from the address (`http://host/app` → `/app`), without a trailing `/`.
    pub prefix: String,
    pub draining: AtomicBool,
    pub in_flight: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    /// A moving average (1/16 weight to the newest) of the time the node took to answer
    /// with its response headers, in microseconds; 0 before the first answer.
    pub latency_us: AtomicU64,
    /// Answers by status class and errors by kind, for `/metrics`.
    pub metrics: NodeMetrics,
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
    #[serde(default)]
    pub preview: Option<String>,
    #[serde(default)]
    pub drained: Vec<Drained>,
    #[serde(default)]
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
    pub client: super::forward::Upstream,
    /// Where each request's line goes, when `access_log` is set.
    pub access_log: Option<super::access_log::Sink>,
    /// The TLS listener's certificate, when `tls` is set (reloaded by the admin API).
    pub tls: Option<Arc<super::tls::Certs>>,
    /// True while `POST /pause` holds new live requests (read once per request; the watch
    /// below is only subscribed to while paused).
    pub paused: AtomicBool,
    pause: tokio::sync::watch::Sender<bool>,
    /// Requests held by the pause right now.
    pub held: AtomicU64,
    /// Bumped after each change of the routing, for upgraded connections that watch it.
    routing: tokio::sync::watch::Sender<u64>,
    /// `https://` and the TLS port, when `tls.redirect` is set: the plain live listener
    /// redirects there.
    pub redirect_to_https: Option<u16>,
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
        self.shared.slots[self.slot]
            .latency
            .observe(self.since.elapsed());
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.node().in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// How long the proxy tries to connect to a slot before answering 502.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

fn upstream_client() -> super::forward::Upstream {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    connector.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(std::time::Duration::from_secs(15))
        .build(connector)
}

fn parse_upstream(name: &str, address: &str) -> Result<NodeRt> {
    let uri: Uri = address
        .parse()
        .wrap_err_with(|| format!("`{address}` (of `{name}`) is not a URL"))?;
    let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned()) else {
        bail!("`{address}` (of `{name}`) needs a scheme and a host, like http://127.0.0.1:9001");
    };
    if scheme != Scheme::HTTP {
        bail!("`{address}` (of `{name}`): the embedded proxy forwards over plain http:// only");
    }
    Ok(NodeRt {
        name: name.to_string(),
        address: address.to_string(),
        scheme,
        authority,
        prefix: uri.path().trim_end_matches('/').to_string(),
        draining: AtomicBool::new(false),
        in_flight: AtomicU64::new(0),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        latency_us: AtomicU64::new(0),
        metrics: NodeMetrics::default(),
    })
}

impl Shared {
    pub fn new(env: &Environment, cfg: &embedded::Config, token: Option<String>) -> Result<Shared> {
        let mut slots = Vec::new();
        for s in &env.slots {
            let nodes = if s.nodes.is_empty() {
                vec![parse_upstream(&s.name, &s.address)?]
            } else {
                s.nodes
                    .iter()
                    .map(|n| parse_upstream(&n.name, &n.address))
                    .collect::<Result<Vec<_>>>()?
            };
            slots.push(SlotRt {
                name: s.name.clone(),
                has_nodes: !s.nodes.is_empty(),
                nodes,
                draining: AtomicBool::new(false),
                rr: AtomicUsize::new(0),
                latency: Histogram::default(),
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
        let state_file = cfg.state_path(&env.name);
        let mut shared = Shared {
            env: env.name.clone(),
            slots,
            live: AtomicUsize::new(0),
            preview: AtomicUsize::new(NONE),
            maint: AtomicUsize::new(MAINT_OFF),
            canary: AtomicU64::new(0),
            split_seq: AtomicU64::new(0),
            opts: Options {
                retry_after: cfg.retry_after,
                maintenance_page: super::forward::maintenance_html(cfg.retry_after),
                redirected_as: hyper::header::HeaderValue::from_str(&env.name).ok(),
                bypass_cookie: cfg.bypass_cookie.clone(),
                bypass_header,
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
            tls: None,
            paused: AtomicBool::new(false),
            pause: tokio::sync::watch::Sender::new(false),
            held: AtomicU64::new(0),
            routing: tokio::sync::watch::Sender::new(0),
            redirect_to_https: None,
        };
        let initial = shared.initial(cfg);
        let (saved, notes) = shared.load(initial)?;
        shared.load_notes = notes;
        shared.apply(&saved);
        Ok(shared)
    }

    fn initial(&self, cfg: &embedded::Config) -> Saved {
        let live = cfg
            .initial_live
            .clone()
            .unwrap_or_else(|| self.slots[0].name.clone());
        let preview = cfg.initial_preview.clone().or_else(|| {
            self.slots
                .iter()
                .find(|s| s.name != live)
                .map(|s| s.name.clone())
        });
        Saved {
            environment: self.env.clone(),
            live,
            preview,
            drained: Vec::new(),
            maintenance: None,
            canary: None,
        }
    }

    pub fn index(&self, slot: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.name == slot)
    }

    fn known(&self) -> String {
        self.slots
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
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

    /// Read the state file, keeping what still fits the config; returns warnings as notes.
    fn load(&self, initial: Saved) -> Result<(Saved, Vec<String>)> {
        let path = &self.state_file;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((initial, vec![])),
            Err(e) => {
                return Err(e).wrap_err_with(|| {
                    format!(
                        "cannot read the proxy's state file {}; fix its permissions or set \
                         `state_file` to another path",
                        path.display()
                    )
                });
            }
        };
        let loaded: Saved = serde_json::from_str(&text).wrap_err_with(|| {
            format!(
                "the proxy's state file {} is not valid; fix it, or delete it to start from \
                 initial_live / initial_preview",
                path.display()
            )
        })?;
        let mut notes = Vec::new();
        let mut warn = |m: String| {
            tracing::warn!(env = %self.env, "{m}");
            notes.push(m);
        };
        let from = path.display();
        let mut s = initial.clone();
        if self.index(&loaded.live).is_some() {
            s.live = loaded.live;
        } else {
            warn(format!(
                "state file {from}: live slot `{}` is no longer in the config; ignored, `{}` is live",
                loaded.live, s.live
            ));
        }
        match &loaded.preview {
            None => s.preview = None,
            Some(p) if self.index(p).is_some() => s.preview = Some(p.clone()),
            Some(p) => warn(format!(
                "state file {from}: preview slot `{p}` is no longer in the config; ignored"
            )),
        }
        for d in loaded.drained {
            let Some(i) = self.index(&d.slot) else {
                warn(format!(
                    "state file {from}: drained slot `{}` is no longer in the config; ignored",
                    d.slot
                ));
                continue;
            };
            let node_known = match &d.node {
                None => true,
                Some(n) => {
                    self.slots[i].has_nodes && self.slots[i].nodes.iter().any(|x| &x.name == n)
                }
            };
            if !node_known {
                warn(format!(
                    "state file {from}: drained node `{}/{}` is no longer in the config; ignored",
                    d.slot,
                    d.node.as_deref().unwrap_or_default()
                ));
                continue;
            }
            let serving = d.slot == s.live || s.preview.as_deref() == Some(&d.slot);
            if d.node.is_none() && serving {
                warn(format!(
                    "state file {from}: slot `{}` was drained but is live or preview; it serves",
                    d.slot
                ));
                continue;
            }
            if !s.drained.contains(&d) {
                s.drained.push(d);
            }
        }
        match loaded.maintenance {
            Some(MaintenanceMode::Redirect { to }) => {
                let drained = s.drained.iter().any(|d| d.slot == to && d.node.is_none());
                if self.index(&to).is_none() || to == s.live || drained {
                    warn(format!(
                        "state file {from}: maintenance redirect to `{to}` no longer fits the \
                         config; maintenance is off"
                    ));
                } else {
                    s.maintenance = Some(MaintenanceMode::Redirect { to });
                }
            }
            m => s.maintenance = m,
        }
        if let Some(c) = loaded.canary {
            let fits = c.slot != s.live
                && (1..=100).contains(&c.percent)
                && self.index(&c.slot).is_some()
                && !s
                    .drained
                    .iter()
                    .any(|d| d.slot == c.slot && d.node.is_none());
            if fits {
                s.canary = Some(c);
            } else {
                warn(format!(
                    "state file {from}: canary `{}` at {} % no longer fits the config; all the \
                     live traffic goes to `{}`",
                    c.slot, c.percent, s.live
                ));
            }
        }
        Ok((s, notes))
    }

    /// Write the state file atomically (a temp file in the same directory, then rename).
    fn save(&self, s: &Saved) -> Result<(), AdminError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            AdminError::new(
                500,
                format!(
                    "cannot {what} the state file {}: {e}; nothing was changed (fix the \
                     directory or set `state_file`)",
                    self.state_file.display()
                ),
            )
        };
        let dir = self
            .state_file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        crate::logs::create_private_dir(dir).map_err(|e| fail("create the directory of", &e))?;
        let json = serde_json::to_vec_pretty(s).map_err(|e| fail("encode", &e))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail("write", &e))?;
        tmp.write_all(&json)
            .and_then(|_| tmp.write_all(b"\n"))
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(|e| fail("write", &e))?;
        tmp.persist(&self.state_file)
            .map_err(|e| fail("replace", &e.error))?;
        Ok(())
    }

    /// The routing as it stands, in the state file's form.
    fn snapshot(&self) -> Saved {
        let mut drained = Vec::new();
        for s in &self.slots {
            if s.draining.load(Ordering::SeqCst) {
                drained.push(Drained {
                    slot: s.name.clone(),
                    node: None,
                });
            }
            if s.has_nodes {
                for n in &s.nodes {
                    if n.draining.load(Ordering::SeqCst) {
                        drained.push(Drained {
                            slot: s.name.clone(),
                            node: Some(n.name.clone()),
                        });
                    }
                }
            }
        }
        let name = |i: usize| self.slots.get(i).map(|s| s.name.clone());
        Saved {
            environment: self.env.clone(),
            live: name(self.live.load(Ordering::SeqCst)).unwrap_or_default(),
            preview: name(self.preview.load(Ordering::SeqCst)),
            drained,
            maintenance: self.maintenance(),
            canary: self.canary().and_then(|(i, percent)| {
                Some(Canary {
                    slot: self.slots.get(i)?.name.clone(),
                    percent,
                })
            }),
        }
    }

    /// Make the atomics say what `s` says. Undrains first and drains last, so no moment has
    /// fewer ready upstreams than either the old or the new state.
    fn apply(&self, s: &Saved) {
        let is_drained = |slot: &str, node: Option<&str>| {
            s.drained
                .iter()
                .any(|d| d.slot == slot && d.node.as_deref() == node)
        };
        for drain_pass in [false, true] {
            for slot in &self.slots {
                let want = is_drained(&slot.name, None);
                if want == drain_pass {
                    slot.draining.store(want, Ordering::SeqCst);
                }
                for n in slot.nodes.iter().filter(|_| slot.has_nodes) {
                    let want = is_drained(&slot.name, Some(&n.name));
                    if want == drain_pass {
                        n.draining.store(want, Ordering::SeqCst);
                    }
                }
            }
            if !drain_pass {
                if let Some(i) = self.index(&s.live) {
                    self.live.store(i, Ordering::SeqCst);
                }
                let p = s.preview.as_deref().and_then(|p| self.index(p));
                self.preview.store(p.unwrap_or(NONE), Ordering::SeqCst);
                let m = match &s.maintenance {
                    None => MAINT_OFF,
                    Some(MaintenanceMode::Page) => MAINT_PAGE,
                    Some(MaintenanceMode::Redirect { to }) => {
                        self.index(to).map_or(MAINT_OFF, |i| MAINT_REDIRECT + i)
                    }
                };
                self.maint.store(m, Ordering::SeqCst);
                let c = s
                    .canary
                    .as_ref()
                    .and_then(|c| Some(pack_canary(self.index(&c.slot)?, c.percent.min(100))));
                self.canary.store(c.unwrap_or(0), Ordering::SeqCst);
            }
        }
    }

    /// Check, save, apply. `f` edits a copy of the current state and refuses with a reason.
    async fn change(
        &self,
        what: &str,
        f: impl FnOnce(&Self, &mut Saved) -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        let _one_at_a_time = self.changes.lock().await;
        let before = self.snapshot();
        let mut next = before.clone();
        f(self, &mut next)?;
        if next == before {
            return Ok(());
        }
        self.save(&next)?;
        self.apply(&next);
        self.routing.send_modify(|g| *g = g.wrapping_add(1));
        tracing::info!(env = %self.env, "{what}");
        Ok(())
    }

    // --- what requests read -------------------------------------------------------------

    /// Told after each change of the routing.
    pub fn routing_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.routing.subscribe()
    }

    /// Whether `node` of `slot` still takes new requests of `listener`: neither is drained,
    /// and the slot is the listener's (live, or the maintenance redirect target; preview).
    pub fn serving(&self, listener: super::forward::Listener, slot: usize, node: usize) -> bool {
        let Some(s) = self.slots.get(slot) else {
            return false;
        };
        let drained = s.draining.load(Ordering::SeqCst)
            || s.nodes
                .get(node)
                .is_none_or(|n| n.draining.load(Ordering::SeqCst));
        let chosen = match listener {
            super::forward::Listener::Live => {
                self.live() == slot || self.maint() == Some(Some(slot))
            }
            super::forward::Listener::Preview => self.preview() == Some(slot),
        };
        chosen && !drained
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
        for k in 0..n {
            let i = (start + k) % n;
            let node = &s.nodes[i];
            if node.draining.load(Ordering::SeqCst) {
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
            ..Default::default()
        };
        if self.paused.load(Ordering::SeqCst) {
            state.notes.push(format!(
                "paused: {} requests held (each up to {}s, at most {}; POST /resume releases them)",
                self.held.load(Ordering::SeqCst),
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
                        check: None,
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
                    check: None,
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

    pub async fn switch_live(&self, to: &str) -> Result<(), AdminError> {
        let from = self.snapshot().live;
        self.change(&format!("live: {from} -> {to}"), |me, next| {
            let (_, slot) = me.slot_of(to)?;
            if next.live == to {
                return Ok(());
            }
            me.must_take_traffic(slot, "live")?;
            if let Some(MaintenanceMode::Redirect { to: r }) = &next.maintenance
                && r == to
            {
                return Err(AdminError::new(
                    409,
                    format!(
                        "maintenance redirects live traffic to `{to}`; turn maintenance off (or \
                         redirect elsewhere) before making `{to}` live"
                    ),
                ));
            }
            next.live = to.to_string();
            // A switch ends any split: the new live slot takes all the live traffic.
            next.canary = None;
            Ok(())
        })
        .await
    }

    /// Send `percent` % of the live traffic to `canary` and the rest to `live`, which must be
    /// the live slot. 0 puts it all back on `live`.
    pub async fn set_weights(
        &self,
        live: &str,
        canary: &str,
        percent: u8,
    ) -> Result<(), AdminError> {
        self.change(
            &format!(
                "weights: {live} {} % / {canary} {percent} %",
                100 - u16::from(percent.min(100))
            ),
            |me, next| {
                me.slot_of(live)?;
                let (_, c) = me.slot_of(canary)?;
                if percent > 100 {
                    return Err(AdminError::new(
                        400,
                        format!("a canary share is 0 to 100 %, not {percent}"),
                    ));
                }
                if next.live != live {
                    return Err(AdminError::new(
                        409,
                        format!(
                            "`{live}` is not the live slot (`{}` is); a split is between the live \
                             slot and a canary",
                            next.live
                        ),
                    ));
                }
                if canary == live {
                    return Err(AdminError::new(
                        409,
                        format!("`{canary}` is the live slot; a canary is another slot"),
                    ));
                }
                if percent == 0 {
                    next.canary = None;
                    return Ok(());
                }
                if next.canary.as_ref().is_none_or(|c| c.slot != canary) {
                    me.must_take_traffic(c, "the canary slot")?;
                }
                next.canary = Some(Canary {
                    slot: canary.to_string(),
                    percent,
                });
                Ok(())
            },
        )
        .await
    }

    pub async fn set_preview(&self, to: &str) -> Result<(), AdminError> {
        self.change(&format!("preview: -> {to}"), |me, next| {
            let (_, slot) = me.slot_of(to)?;
            if next.preview.as_deref() == Some(to) {
                return Ok(());
            }
            me.must_take_traffic(slot, "the preview slot")?;
            next.preview = Some(to.to_string());
            Ok(())
        })
        .await
    }

    pub async fn drain(&self, slot: &str, node: Option<&str>) -> Result<(), AdminError> {
        let label = match node {
            Some(n) => format!("{slot}/{n}"),
            None => slot.to_string(),
        };
        self.change(&format!("drain {label}"), |me, next| {
            let (_, s) = me.slot_of(slot)?;
            let entry = Drained {
                slot: slot.to_string(),
                node: node.map(str::to_string),
            };
            if next.drained.contains(&entry) {
                return Ok(());
            }
            let role = me.serving_role(next, slot);
            match node {
                None => {
                    if let Some(role) = role {
                        let how = match role {
                            "live" => "switch live to another slot first",
                            "the preview slot" => "point preview at another slot first",
                            "the canary slot" => "set its weight to 0 first",
                            _ => "turn maintenance off or redirect elsewhere first",
                        };
                        return Err(AdminError::new(
                            409,
                            format!(
                                "slot `{slot}` is {role}; draining it would leave that traffic \
                                 with no backend: {how}, then drain it"
                            ),
                        ));
                    }
                }
                Some(n) => {
                    me.node_of(s, n)?;
                    let ready_others = s
                        .nodes
                        .iter()
                        .filter(|x| x.name != n && !x.draining.load(Ordering::SeqCst))
                        .count();
                    if let Some(role) = role
                        && ready_others == 0
                    {
                        return Err(AdminError::new(
                            409,
                            format!(
                                "node `{n}` is the last ready node of slot `{slot}`, which is \
                                 {role}; undrain another node of `{slot}` first"
                            ),
                        ));
                    }
                }
            }
            next.drained.push(entry);
            Ok(())
        })
        .await
    }

    fn node_of<'a>(&self, s: &'a SlotRt, node: &str) -> Result<&'a NodeRt, AdminError> {
        if !s.has_nodes {
            return Err(AdminError::new(
                404,
                format!(
                    "slot `{}` has no nodes; drain or undrain the slot itself (leave out `node`)",
                    s.name
                ),
            ));
        }
        s.nodes.iter().find(|n| n.name == node).ok_or_else(|| {
            AdminError::new(
                404,
                format!(
                    "unknown node `{node}` of slot `{}`; it has: {}",
                    s.name,
                    s.nodes
                        .iter()
                        .map(|n| n.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    pub async fn undrain(&self, slot: &str, node: Option<&str>) -> Result<(), AdminError> {
        let label = match node {
            Some(n) => format!("{slot}/{n}"),
            None => slot.to_string(),
        };
        self.change(&format!("undrain {label}"), |me, next| {
            let (_, s) = me.slot_of(slot)?;
            if let Some(n) = node {
                me.node_of(s, n)?;
            }
            next.drained
                .retain(|d| !(d.slot == slot && d.node.as_deref() == node));
            Ok(())
        })
        .await
    }

    /// Hold new live requests until [`Self::resume`] (each up to `pause_timeout`).
    pub fn pause(&self) {
        self.pause.send_replace(true);
        self.paused.store(true, Ordering::SeqCst);
        tracing::info!(env = %self.env, "paused: new live requests are held");
    }

    /// Release the held requests to the live slot; new ones are served again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.pause.send_replace(false);
        tracing::info!(env = %self.env, "resumed: held requests go to the live slot");
    }

    /// Wait while paused: `Ok` once resumed, `Err` with what to answer when the pause holds
    /// `pause_max_held` requests already or did not end within `pause_timeout`.
    pub async fn wait_while_paused(&self) -> Result<(), String> {
        let mut resumed = self.pause.subscribe();
        if !*resumed.borrow_and_update() {
            return Ok(());
        }
        let held = self.held.fetch_add(1, Ordering::SeqCst) + 1;
        let _held = HeldGuard(&self.held);
        if held > self.opts.pause_max_held {
            return Err(format!(
                "cutover proxy: paused, and {} requests are held already; try again shortly",
                self.opts.pause_max_held
            ));
        }
        let waited = tokio::time::timeout(self.opts.pause_timeout, resumed.wait_for(|p| !*p)).await;
        match waited {
            Ok(Ok(_)) => Ok(()),
            _ => Err(format!(
                "cutover proxy: paused for longer than {}s; try again shortly",
                self.opts.pause_timeout.as_secs()
            )),
        }
    }

    pub async fn set_maintenance(
        &self,
        on: bool,
        mode: Option<MaintenanceMode>,
    ) -> Result<(), AdminError> {
        let what = match (&mode, on) {
            (_, false) => "maintenance off".to_string(),
            (Some(m), true) => format!("maintenance on: {m}"),
            (None, true) => "maintenance on: 503 page".to_string(),
        };
        self.change(&what, |me, next| {
            if !on {
                next.maintenance = None;
                return Ok(());
            }
            let mode = mode.unwrap_or_default();
            if let MaintenanceMode::Redirect { to } = &mode {
                let (_, s) = me.slot_of(to)?;
                if *to == next.live {
                    return Err(AdminError::new(
                        409,
                        format!(
                            "`{to}` is the live slot: redirecting its traffic to itself would \
                             leave no slot serving; redirect to another slot, or use the page"
                        ),
                    ));
                }
                if s.ready_nodes() == 0 {
                    return Err(AdminError::new(
                        409,
                        format!(
                            "slot `{to}` is draining (no ready node); refusing to redirect live \
                             traffic to it, which would leave no serving node; undrain it first"
                        ),
                    ));
                }
            }
            next.maintenance = Some(mode);
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests;
