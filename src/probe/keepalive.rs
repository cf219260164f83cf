//! The poll loop's own HTTP/1.1 client: one kept-alive connection per slot, driven inside
//! the slot's polling task, with each request's URI and headers made once.
//!
//! reqwest is the right client for one-off requests, but a poll of 1,000 slots a second spent
//! most of its CPU in what a poll does not need: parsing the URL again, the pool's checkout,
//! the redirect and retry layers, and a task per connection woken for every request (see
//! BENCHMARKS.md, "Poller scale"). Here a poll is the request, its answer, and nothing else.
//! Slots it cannot serve this way (https, credentials in the URL, health and version on
//! different hosts) are polled with the [`Prober`]'s reqwest client, as every one-off probe is.

use std::future::Future;
use std::pin::Pin;
use std::time::Instant;

use futures_util::FutureExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::client::conn::http1;
use hyper::header::{HOST, HeaderValue, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Answer, Fetched, Prober};
use crate::config::Slot;
use crate::model::{ProbeError, ProbeResult};

/// One slot's polls: where they go, and the connection they keep.
pub struct SlotPoll {
    prober: Prober,
    target: Option<Target>,
    conn: Option<Conn>,
}

/// A slot's two requests, made once.
struct Target {
    /// `host:port`, to connect to.
    authority: String,
    host: HeaderValue,
    health: Uri,
    version: Uri,
}

type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, Empty<Bytes>>>>;

struct Conn {
    send: http1::SendRequest<Empty<Bytes>>,
    /// The connection's state machine, polled only while a request is on it.
    driver: Driver,
    /// False once the driver has ended (the slot closed the connection).
    alive: bool,
}

/// How an exchange failed: before the answer's head (worth one more try on a new connection
/// when the kept one was closed by the slot meanwhile), or after it.
enum Failed {
    BeforeHead(ProbeError),
    After(ProbeError),
}

const UA: &str = concat!("cutover/", env!("CARGO_PKG_VERSION"));

impl SlotPoll {
    pub fn new(prober: Prober, slot: &Slot) -> SlotPoll {
        SlotPoll {
            target: Target::of(slot),
            prober,
            conn: None,
        }
    }

    /// Poll the slot: health, then version, on the kept connection.
    pub async fn poll(&mut self, slot: &Slot) -> ProbeResult {
        let SlotPoll {
            prober,
            target,
            conn,
        } = self;
        let Some(target) = target.as_ref() else {
            return prober.probe_slot(slot).await;
        };
        let health = get(prober, target, &target.health, conn).await;
        let version = get(prober, target, &target.version, conn).await;
        prober.result(slot, health, version)
    }
}

/// One GET of `uri` on `conn` (made when there is none) within the prober's timeout; a
/// connection that timed out or failed is not used again.
async fn get(prober: &Prober, target: &Target, uri: &Uri, conn: &mut Option<Conn>) -> Fetched {
    let t0 = Instant::now();
    // A kept connection the slot has closed since the last poll ends as soon as it is polled:
    // drop it rather than send a request on it.
    if let Some(c) = conn.as_mut()
        && c.driver.as_mut().now_or_never().is_some()
    {
        *conn = None;
    }
    let once = async {
        loop {
            let fresh = conn.is_none();
            let c = match conn {
                Some(c) => c,
                None => conn.insert(connect(&target.authority).await?),
            };
            let mut req = Request::new(Empty::new());
            *req.uri_mut() = uri.clone();
            req.headers_mut().insert(HOST, target.host.clone());
            req.headers_mut()
                .insert(USER_AGENT, HeaderValue::from_static(UA));
            let r = exchange(c, req, t0, prober.max_body).await;
            if !c.alive || r.is_err() {
                *conn = None;
            }
            match r {
                Ok(fetched) => return Ok(fetched),
                // The kept connection was closed by the slot since the last poll: once more,
                // on a new one (a GET may be sent again).
                Err(Failed::BeforeHead(_)) if !fresh => continue,
                Err(Failed::BeforeHead(e) | Failed::After(e)) => return Err(e),
            }
        }
    };
    match tokio::time::timeout(prober.timeout, once).await {
        Ok(r) => r,
        Err(_) => {
            *conn = None;
            Err(ProbeError::Timeout)
        }
    }
}

impl Target {
    /// The slot's requests, when both go over plain HTTP to one host and port.
    fn of(slot: &Slot) -> Option<Target> {
        use url::{Position, Url};
        let health = Url::parse(&slot.health_url).ok()?;
        let version = Url::parse(&slot.version_url).ok()?;
        let plain =
            |u: &Url| u.scheme() == "http" && u.username().is_empty() && u.password().is_none();
        if !plain(&health)
            || !plain(&version)
            || health[Position::BeforeHost..Position::AfterPort]
                != version[Position::BeforeHost..Position::AfterPort]
        {
            return None;
        }
        let path = |u: &Url| Uri::try_from(&u[Position::BeforePath..Position::AfterQuery]).ok();
        Some(Target {
            authority: format!("{}:{}", health.host_str()?, health.port_or_known_default()?),
            host: HeaderValue::from_str(&health[Position::BeforeHost..Position::AfterPort]).ok()?,
            health: path(&health)?,
            version: path(&version)?,
        })
    }
}

async fn connect(authority: &str) -> Result<Conn, ProbeError> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(|e| super::not_connected(&e))?;
    let _ = stream.set_nodelay(true);
    let (send, driver) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| hyper_error(&e))?;
    Ok(Conn {
        send,
        driver: Box::pin(driver),
        alive: true,
    })
}

/// Send `req` on `c` and read the answer, its body capped at `max_body`.
async fn exchange(
    c: &mut Conn,
    req: Request<Empty<Bytes>>,
    t0: Instant,
    max_body: usize,
) -> Result<Answer, Failed> {
    let Conn {
        send,
        driver,
        alive,
    } = c;
    let closed = || Failed::BeforeHead(ProbeError::Connect("connection closed".into()));
    let before = |e: hyper::Error| Failed::BeforeHead(hyper_error(&e));
    beside(driver, alive, send.ready())
        .await
        .ok_or_else(closed)?
        .map_err(before)?;
    let resp = beside(driver, alive, send.send_request(req))
        .await
        .ok_or_else(closed)?
        .map_err(before)?;
    let took = t0.elapsed();
    let status = resp.status().as_u16();
    let slot = super::slot_header(resp.headers());
    let mut body = resp.into_body();
    let mut bytes = Vec::new();
    let cut = || Failed::After(ProbeError::Body("the connection closed mid-body".into()));
    while let Some(frame) = beside(driver, alive, body.frame()).await.ok_or_else(cut)? {
        let frame =
            frame.map_err(|e| Failed::After(ProbeError::Body(super::short(&e.to_string()))))?;
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > max_body {
                return Err(Failed::After(super::too_big(max_body)));
            }
            bytes.extend_from_slice(&data);
        }
    }
    Ok((status, bytes, slot, took))
}

/// Await `fut`, polling the connection's `driver` meanwhile (it does the reading and writing);
/// `None` when the connection ended first and `fut` is not ready.
async fn beside<T>(
    driver: &mut Driver,
    alive: &mut bool,
    fut: impl Future<Output = T>,
) -> Option<T> {
    tokio::pin!(fut);
    if *alive {
        tokio::select! {
            biased;
            out = &mut fut => return Some(out),
            _ = driver.as_mut() => *alive = false,
        }
    }
    // The connection has ended: what `fut` waits for has been delivered by now, or never will
    // be (while the driver is kept, a request it never took would wait for good).
    fut.now_or_never()
}

fn hyper_error(e: &hyper::Error) -> ProbeError {
    ProbeError::Connect(super::short(&crate::load::error_chain(e)))
}
