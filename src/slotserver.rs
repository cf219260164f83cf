//! A small HTTP server that plays one slot: the demo's blue/green/staging, and every test's
//! backend. It answers `/health`, `/version`, `/slow?ms=N`, `/headers`, `POST /deploy?version=V`
//! (changes its version, as a deploy would) and anything else with
//! a line naming the slot and version (plus `X-Slot` / `X-Version` headers), and its health
//! and speed can be changed while it runs.
//!
//! Hand-written on purpose: a few handlers on the hyper server cutover already compiles;
//! a web framework would add build time and dependencies for nothing these tests need.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Live controls of a running slot server.
#[derive(Debug)]
pub struct SlotControls {
    pub name: String,
    version: std::sync::Mutex<String>,
    healthy: AtomicBool,
    /// Extra delay on every answer, in ms (the demo's "slow" key).
    delay_ms: AtomicU64,
    /// Requests served, all paths.
    pub served: AtomicU64,
    /// Requests being served right now.
    pub in_flight: AtomicU64,
    /// Requests received per path (query left out).
    hits: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl SlotControls {
    pub fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::SeqCst);
    }
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::SeqCst)
    }
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::SeqCst);
    }
    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.delay_ms.load(Ordering::SeqCst))
    }
    pub fn set_version(&self, v: &str) {
        if let Ok(mut g) = self.version.lock() {
            *g = v.to_string();
        }
    }
    pub fn version(&self) -> String {
        self.version.lock().map(|g| g.clone()).unwrap_or_default()
    }
    /// How many requests for `path` this slot received.
    pub fn hits(&self, path: &str) -> u64 {
        self.hits
            .lock()
            .map(|h| h.get(path).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

/// A running slot server; stops when dropped.
pub struct SlotServer {
    pub addr: SocketAddr,
    pub controls: Arc<SlotControls>,
    stop: watch::Sender<bool>,
}

impl SlotServer {
    /// Start on `addr` (`127.0.0.1:0` for any free port).
    pub async fn start(name: &str, version: &str, addr: SocketAddr) -> Result<SlotServer> {
        let listener = TcpListener::bind(addr)
            .await
            .wrap_err_with(|| format!("slot `{name}` cannot listen on {addr} (port in use?)"))?;
        let addr = listener.local_addr()?;
        let controls = Arc::new(SlotControls {
            name: name.to_string(),
            version: std::sync::Mutex::new(version.to_string()),
            healthy: AtomicBool::new(true),
            delay_ms: AtomicU64::new(0),
            served: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            hits: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        });
        let (stop, mut stopped) = watch::channel(false);
        let c = controls.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped.changed() => break,
                };
                let Ok((stream, _)) = accepted else { continue };
                let c = c.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| serve(c.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::select! {
                        _ = conn => {}
                        _ = stopped.changed() => {}
                    }
                });
            }
        });
        Ok(SlotServer {
            addr,
            controls,
            stop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for SlotServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct InFlight<'a>(&'a AtomicU64);
impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn serve(
    c: Arc<SlotControls>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    c.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlight(&c.in_flight);
    c.served.fetch_add(1, Ordering::Relaxed);
    let delay = c.delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = req.uri().path().to_string();
    if let Ok(mut h) = c.hits.lock() {
        *h.entry(path.clone()).or_insert(0) += 1;
    }
    // A deploy, as the demo and the rolling-deploy tests do it: POST /deploy?version=X.
    if path == "/deploy"
        && req.method() == hyper::Method::POST
        && let Some(v) = req.uri().query().and_then(|q| q.strip_prefix("version="))
    {
        c.set_version(v);
    }
    let version = c.version();
    let (status, ctype, body) = match path.as_str() {
        "/health" => {
            if c.healthy() {
                (
                    StatusCode::OK,
                    "application/json",
                    r#"{"status":"ok"}"#.to_string(),
                )
            } else {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "application/json",
                    r#"{"status":"failing"}"#.to_string(),
                )
            }
        }
        "/version" => (
            StatusCode::OK,
            "application/json",
            serde_json::json!({
                "version": version,
                "commit": commit_of(&c.name, &version),
                "built": "2026-11-20T09:30:00Z",
            })
            .to_string(),
        ),
        "/slow" => {
            let ms = req
                .uri()
                .query()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1000)
                .min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            (
                StatusCode::OK,
                "text/plain",
                format!("slow answer from {} v{version}\n", c.name),
            )
        }
        "/deploy" => (
            StatusCode::OK,
            "text/plain",
            format!("{} now runs {version}\n", c.name),
        ),
        "/headers" => {
            let map: serde_json::Map<String, serde_json::Value> = req
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                    )
                })
                .collect();
            (
                StatusCode::OK,
                "application/json",
                serde_json::Value::Object(map).to_string(),
            )
        }
        _ if !c.healthy() => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{} v{version} is failing\n", c.name),
        ),
        _ => (
            StatusCode::OK,
            "text/plain",
            format!("Hello from {} v{version}\n", c.name),
        ),
    };
    let resp = Response::builder()
        .status(status)
        .header("content-type", ctype)
        .header("x-slot", c.name.as_str())
        .header("x-version", version.as_str())
        .body(Full::new(Bytes::from(body)));
    Ok(resp.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// A stable fake commit id so the demo shows one.
fn commit_of(name: &str, version: &str) -> String {
    let mut h: u32 = 2_166_136_261;
    for b in name.bytes().chain(version.bytes()) {
        h = (h ^ u32::from(b)).wrapping_mul(16_777_619);
    }
    format!("{h:07x}").chars().take(7).collect()
}
