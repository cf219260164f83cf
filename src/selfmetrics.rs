//! cutover's own metrics (`--metrics-listen ADDR`): what the TUI sees, for Prometheus. It
//! reads the same [`Seen`]s the application state is built from (probes, router reads, lock
//! checks, finished operations), so it never asks anything itself and costs nothing when it
//! is not scraped but one short lock per event.
//!
//! Served at `GET /metrics` (text format 0.0.4) on its own listener: loopback by default; any
//! other address needs a bearer token in `$CUTOVER_METRICS_TOKEN` (which a loopback listener
//! also requires when it is set).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, ConfigProblem};
use crate::envview::Seen;
use crate::model::Health;
use crate::ops::Progress;
use crate::prom::{CONTENT_TYPE, Histogram, Out, esc};
use crate::state::LockInfo;

/// The variable holding the metrics listener's bearer token.
pub const TOKEN_ENV: &str = "CUTOVER_METRICS_TOKEN";

#[derive(Default)]
struct SlotM {
    health: Health,
    version: Option<String>,
    probes: u64,
    latency: Histogram,
}

#[derive(Default)]
struct RouterM {
    reads: u64,
    read_errors: u64,
    up: bool,
    live: Option<String>,
}

#[derive(Default)]
struct OpM {
    count: u64,
    seconds: f64,
}

struct EnvM {
    name: String,
    slots: Vec<(String, SlotM)>,
    routers: Vec<(String, RouterM)>,
    /// (operation, verdict) → count and total duration.
    ops: BTreeMap<(String, String), OpM>,
    lock: Option<LockInfo>,
}

/// See the module's documentation.
pub struct SelfMetrics {
    envs: Mutex<Vec<EnvM>>,
    /// Events seen, by kind: the poller's own work.
    events: Mutex<BTreeMap<&'static str, u64>>,
}

impl SelfMetrics {
    pub fn new(config: &Config) -> SelfMetrics {
        let envs = config
            .environments
            .iter()
            .map(|e| EnvM {
                name: e.name.clone(),
                slots: e
                    .slots
                    .iter()
                    .map(|s| (s.name.clone(), SlotM::default()))
                    .collect(),
                routers: e
                    .routers
                    .iter()
                    .map(|r| (r.name().to_string(), RouterM::default()))
                    .collect(),
                ops: BTreeMap::new(),
                lock: None,
            })
            .collect();
        SelfMetrics {
            envs: Mutex::new(envs),
            events: Mutex::new(BTreeMap::new()),
        }
    }

    /// Take in one event (before the application state does).
    pub fn observe(&self, ev: &Seen) {
        let kind = match ev {
            Seen::Probe { .. } => "probe",
            Seen::Url { .. } => "url",
            Seen::Router { .. } => "router",
            Seen::Lock { .. } | Seen::Stored { .. } => "lock",
            Seen::Op { .. } => "operation",
            _ => return,
        };
        if let Ok(mut e) = self.events.lock() {
            *e.entry(kind).or_default() += 1;
        }
        let Ok(mut envs) = self.envs.lock() else {
            return;
        };
        match ev {
            Seen::Probe { env, slot, result } => {
                if let Some((_, s)) = envs.get_mut(*env).and_then(|e| e.slots.get_mut(*slot)) {
                    s.health = result.health;
                    s.probes += 1;
                    if let Some(v) = &result.version {
                        s.version = Some(v.version.clone());
                    }
                    if let Some(l) = result.latency {
                        s.latency.observe(l);
                    }
                }
            }
            Seen::Router {
                env,
                router,
                result,
                ..
            } => {
                if let Some((_, r)) = envs.get_mut(*env).and_then(|e| e.routers.get_mut(*router)) {
                    r.reads += 1;
                    match result {
                        Ok(state) => {
                            r.up = true;
                            r.live = state.live.clone();
                        }
                        Err(_) => {
                            r.up = false;
                            r.read_errors += 1;
                        }
                    }
                }
            }
            Seen::Lock { env, holder, .. } | Seen::Stored { env, holder, .. } => {
                if let Some(e) = envs.get_mut(*env) {
                    e.lock = holder.clone();
                }
            }
            Seen::Op {
                env,
                progress: Progress::Finished(out),
                ..
            } => {
                if let Some(e) = envs.get_mut(*env) {
                    let ms: u64 = out.record.steps.iter().map(|s| s.ms).sum();
                    let key = (
                        out.record.operation.clone(),
                        out.verdict.label().to_string(),
                    );
                    let m = e.ops.entry(key).or_default();
                    m.count += 1;
                    m.seconds += ms as f64 / 1000.0;
                }
            }
            _ => {}
        }
    }

    /// The whole exposition.
    pub fn render(&self) -> String {
        let mut o = Out::default();
        let Ok(envs) = self.envs.lock() else {
            return o.text;
        };
        let healths = [
            (Health::Up, "up"),
            (Health::Degraded, "degraded"),
            (Health::Down, "down"),
            (Health::Unknown, "unknown"),
        ];
        let slot_health = (
            "cutover_slot_health",
            "gauge",
            "1 for the slot's health from its last probe (up, degraded, down, unknown), 0 for the others.",
        );
        per_slot(&mut o, &envs, slot_health, |o, _, labels, s| {
            for (h, label) in healths {
                let l = [labels[0], labels[1], ("state", label)];
                o.sample(slot_health.0, &l, u8::from(s.health == h));
            }
        });
        let probes = (
            "cutover_slot_probes_total",
            "counter",
            "Health probes of the slot.",
        );
        per_slot(&mut o, &envs, probes, |o, _, labels, s| {
            o.sample(probes.0, labels, s.probes);
        });
        let duration = (
            "cutover_slot_probe_duration_seconds",
            "histogram",
            "How long the slot's health endpoint took to answer.",
        );
        per_slot(&mut o, &envs, duration, |o, _, labels, s| {
            s.latency.write(o, duration.0, labels);
        });
        let version = (
            "cutover_slot_version_info",
            "gauge",
            "1, with the version the slot's version endpoint last reported.",
        );
        per_slot(&mut o, &envs, version, |o, _, labels, s| {
            if let Some(v) = &s.version {
                o.sample(version.0, &[labels[0], labels[1], ("version", &esc(v))], 1);
            }
        });
        let live = (
            "cutover_slot_live",
            "gauge",
            "1 for the slot the routers report live (when they agree), 0 for the others.",
        );
        per_slot(&mut o, &envs, live, |o, (e, slot), labels, _| {
            let is_live = agreed_live(e).as_deref() == Some(slot);
            o.sample(live.0, labels, u8::from(is_live));
        });
        per_env(
            &mut o,
            &envs,
            (
                "cutover_routers_agree",
                "gauge",
                "1 when every router of the environment answered its last read with the same live slot.",
            ),
            |e| agreed_live(e).is_some(),
        );
        for (name, help) in [
            ("cutover_router_reads_total", "Reads of the router's state."),
            (
                "cutover_router_read_errors_total",
                "Reads of the router's state that failed.",
            ),
            ("cutover_router_up", "1 when the router's last read worked."),
        ] {
            let kind = if name.ends_with("_total") {
                "counter"
            } else {
                "gauge"
            };
            o.head(name, kind, help);
            for e in envs.iter() {
                let env = esc(&e.name);
                for (rname, r) in &e.routers {
                    let v = match name {
                        "cutover_router_reads_total" => r.reads,
                        "cutover_router_read_errors_total" => r.read_errors,
                        _ => u64::from(r.up),
                    };
                    o.sample(name, &[("env", &env), ("router", &esc(rname))], v);
                }
            }
        }
        o.head(
            "cutover_operation_duration_seconds",
            "summary",
            "Operations this cutover ran, by kind and verdict: how many and how long they took.",
        );
        for e in envs.iter() {
            let env = esc(&e.name);
            for ((op, verdict), m) in &e.ops {
                let l = [
                    ("env", env.as_str()),
                    ("operation", op),
                    ("verdict", verdict),
                ];
                o.sample("cutover_operation_duration_seconds_sum", &l, m.seconds);
                o.sample("cutover_operation_duration_seconds_count", &l, m.count);
            }
        }
        per_env(
            &mut o,
            &envs,
            (
                "cutover_lock_held",
                "gauge",
                "1 while some cutover holds the environment's operation lock.",
            ),
            |e| e.lock.is_some(),
        );
        o.head(
            "cutover_lock_holder_info",
            "gauge",
            "1, with who holds the environment's lock and for which operation.",
        );
        for e in envs.iter() {
            if let Some(l) = &e.lock {
                o.sample(
                    "cutover_lock_holder_info",
                    &[
                        ("env", &esc(&e.name)),
                        ("holder", &esc(&l.holder)),
                        ("operation", &esc(&l.operation)),
                    ],
                    1,
                );
            }
        }
        drop(envs);
        o.head(
            "cutover_events_total",
            "counter",
            "Poll results and operation reports handled, by kind: the poller's own work.",
        );
        if let Ok(ev) = self.events.lock() {
            for kind in ["probe", "url", "router", "lock", "operation"] {
                o.sample(
                    "cutover_events_total",
                    &[("kind", kind)],
                    ev.get(kind).copied().unwrap_or(0),
                );
            }
        }
        o.text
    }
}

/// A metric's name, type and help text.
type Head = (&'static str, &'static str, &'static str);

/// The head of a metric, then `each` for every slot of every environment: given the
/// environment and the slot's name, the labels `env` and `slot` (escaped), and the slot.
fn per_slot(
    o: &mut Out,
    envs: &[EnvM],
    (name, kind, help): Head,
    mut each: impl FnMut(&mut Out, (&EnvM, &str), &[(&str, &str); 2], &SlotM),
) {
    o.head(name, kind, help);
    for e in envs {
        let env = esc(&e.name);
        for (slot, s) in &e.slots {
            let escaped = esc(slot);
            each(o, (e, slot), &[("env", &env), ("slot", &escaped)], s);
        }
    }
}

/// The head of a gauge, then one sample per environment: 1 where `yes` holds, 0 elsewhere.
fn per_env(o: &mut Out, envs: &[EnvM], (name, kind, help): Head, yes: impl Fn(&EnvM) -> bool) {
    o.head(name, kind, help);
    for e in envs {
        o.sample(name, &[("env", &esc(&e.name))], u8::from(yes(e)));
    }
}

/// The live slot every router reported on its last read, if they all answered and agree.
fn agreed_live(e: &EnvM) -> Option<String> {
    let mut live: Option<&String> = None;
    for (_, r) in &e.routers {
        let l = r.live.as_ref().filter(|_| r.up)?;
        if live.is_some_and(|x| x != l) {
            return None;
        }
        live = Some(l);
    }
    live.cloned()
}

/// Bind the metrics listener: `addr` must be loopback unless `$CUTOVER_METRICS_TOKEN` is set.
/// The token, when set, is required on every scrape.
pub async fn bind(addr: &str) -> Result<(TcpListener, Option<String>), ConfigProblem> {
    let parsed: SocketAddr = addr.parse().map_err(|_| {
        ConfigProblem(format!(
            "--metrics-listen {addr}: not an address like 127.0.0.1:9464"
        ))
    })?;
    let token = std::env::var(TOKEN_ENV)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    if !parsed.ip().is_loopback() && token.is_none() {
        return Err(ConfigProblem(format!(
            "--metrics-listen {addr} is not a loopback address: export a bearer token in \
             ${TOKEN_ENV} (Prometheus sends it with `authorization: {{credentials_file: ...}}`), \
             or listen on 127.0.0.1"
        )));
    }
    if let Some(t) = &token {
        crate::redact::register_secret(t);
    }
    let l = TcpListener::bind(parsed).await.map_err(|e| {
        ConfigProblem(format!(
            "--metrics-listen {parsed}: cannot listen: {e}; choose a free port"
        ))
    })?;
    Ok((l, token))
}

fn answer(
    status: StatusCode,
    ctype: &'static str,
    body: String,
) -> Response<http_body_util::Full<Bytes>> {
    let mut r = Response::new(http_body_util::Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}

/// Compare without stopping at the first different byte.
fn same(given: &[u8], want: &[u8]) -> bool {
    let mut diff = given.len() ^ want.len();
    for (i, w) in want.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ w);
    }
    diff == 0
}

/// Serve `GET /metrics` on `listener` until `stop` flips.
pub fn serve(
    listener: TcpListener,
    metrics: Arc<SelfMetrics>,
    token: Option<String>,
    stop: watch::Receiver<bool>,
) {
    let token = token.map(|t| format!("Bearer {t}"));
    tokio::spawn(async move {
        let mut stop_accept = stop.clone();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop_accept.changed() => return,
            };
            let Ok((stream, _)) = accepted else { continue };
            let (metrics, token, mut stop) = (metrics.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let ok_token = match &token {
                        None => true,
                        Some(t) => req
                            .headers()
                            .get(hyper::header::AUTHORIZATION)
                            .is_some_and(|v| same(v.as_bytes(), t.as_bytes())),
                    };
                    let r = if !ok_token {
                        answer(
                            StatusCode::UNAUTHORIZED,
                            "text/plain; charset=utf-8",
                            format!("needs `Authorization: Bearer ${TOKEN_ENV}`\n"),
                        )
                    } else if req.method() == Method::GET && req.uri().path() == "/metrics" {
                        answer(StatusCode::OK, CONTENT_TYPE, metrics.render())
                    } else {
                        answer(
                            StatusCode::NOT_FOUND,
                            "text/plain; charset=utf-8",
                            "only GET /metrics is served here\n".into(),
                        )
                    };
                    async move { Ok::<_, Infallible>(r) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(std::time::Duration::from_secs(30))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
                tokio::select! {
                    _ = conn => {}
                    _ = stop.changed() => {}
                }
            });
        }
    });
}
