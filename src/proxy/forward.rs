//! The live and preview listeners: pick the upstream for each request as it arrives, forward
//! it with streamed bodies, and answer maintenance, 502 and 504 locally.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Bytes, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;

use super::metrics::{ErrorKind, LocalReason};
use super::state::{Lease, NodeRt, Shared};

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;
pub(crate) type Upstream = Client<HttpConnector, Incoming>;

/// Marks a request this proxy redirected under maintenance; such a request is never
/// redirected again (by this proxy or another cutover proxy), which breaks redirect loops.
pub const REDIRECTED_HEADER: &str = "x-cutover-redirected";

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listener {
    Live,
    Preview,
}

/// A response made by the proxy itself.
pub(crate) fn local(
    status: StatusCode,
    ctype: &'static str,
    body: impl Into<Bytes>,
) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(body.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ctype));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn text(status: StatusCode, msg: String) -> Response<ProxyBody> {
    local(status, "text/plain; charset=utf-8", format!("{msg}\n"))
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

fn maintenance_page(shared: &Shared, why: &'static str) -> Response<ProxyBody> {
    let mut r = local(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/html; charset=utf-8",
        shared.opts.maintenance_page.clone(),
    );
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(shared.opts.retry_after),
    );
    r.headers_mut().insert(
        HeaderName::from_static("x-cutover-maintenance"),
        HeaderValue::from_static(why),
    );
    r
}

/// Whether the request carries the bypass cookie (`NAME=1`) or the bypass header.
fn bypasses(shared: &Shared, headers: &HeaderMap) -> bool {
    let header_on = headers
        .get(&shared.opts.bypass_header)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| !v.trim().is_empty() && v.trim() != "0");
    header_on
        || headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k.trim() == shared.opts.bypass_cookie && v.trim() == "1")
}

enum Route {
    Slot { slot: usize, redirected: bool },
    Page(&'static str),
    NoPreview,
}

fn route(shared: &Shared, listener: Listener, headers: &HeaderMap) -> Route {
    if listener == Listener::Preview {
        return match shared.preview() {
            Some(slot) => Route::Slot {
                slot,
                redirected: false,
            },
            None => Route::NoPreview,
        };
    }
    let live = shared.live();
    let Some(mode) = shared.maint() else {
        return Route::Slot {
            slot: shared.live_or_canary(),
            redirected: false,
        };
    };
    if bypasses(shared, headers) {
        return Route::Slot {
            slot: live,
            redirected: false,
        };
    }
    match mode {
        None => Route::Page("page"),
        // The loop guard: a request some cutover proxy already redirected stays here.
        Some(_) if headers.contains_key(REDIRECTED_HEADER) => Route::Page("loop-guard"),
        Some(to) => Route::Slot {
            slot: to,
            redirected: true,
        },
    }
}

/// Why a request's Host is missing or ambiguous, if it is: no `Host` in an HTTP/1.1 request,
/// several `Host` lines, or a `Host` that names another authority than an absolute-form target
/// (`GET http://a/ HTTP/1.1` + `Host: b`). Two parties that each pick a different one (a cache
/// and the app, a WAF and the router) is how request smuggling and cache poisoning start, so
/// such a request is refused with 400, as nginx and HAProxy do (RFC 9112 §3.2). HTTP/1.0 had
/// no Host, so a 1.0 request without one is still served.
pub(crate) fn ambiguous_host(
    version: Version,
    uri: &Uri,
    headers: &HeaderMap,
) -> Option<&'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Some("several Host headers");
    }
    if first.is_none() && version == Version::HTTP_11 {
        return Some("no Host header (HTTP/1.1 requires one)");
    }
    if let (Some(authority), Some(host)) = (uri.authority(), first) {
        let default_port = match uri.scheme_str() {
            Some("https") => "443",
            _ => "80",
        };
        let norm = |s: &str| {
            let s = s.trim().to_ascii_lowercase();
            match s.rsplit_once(':') {
                Some((h, p)) if p == default_port && !h.is_empty() => h.to_string(),
                _ => s,
            }
        };
        let same = host
            .to_str()
            .is_ok_and(|h| norm(h) == norm(authority.as_str()));
        if !same {
            return Some("a Host header that differs from the request target's host");
        }
    }
    None
}

/// Serve one request on the live or preview listener.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    listener: Listener,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    if let Some(why) = ambiguous_host(req.version(), req.uri(), req.headers()) {
        shared.local.count(LocalReason::BadRequest);
        let mut r = text(
            StatusCode::BAD_REQUEST,
            format!("cutover proxy: bad request: {why}"),
        );
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    // A request picks its upstream now, from one read of the routing. If a switch and a
    // drain land between the read and the count, route again.
    let mut chosen = None;
    let mut last_slot = None;
    for _ in 0..3 {
        match route(&shared, listener, req.headers()) {
            Route::Page(why) => {
                shared.local.count(LocalReason::Maintenance);
                return maintenance_page(&shared, why);
            }
            Route::NoPreview => {
                shared.local.count(LocalReason::NoPreview);
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cutover proxy: no preview slot is set (POST /preview on the admin API)".into(),
                );
            }
            Route::Slot { slot, redirected } => {
                last_slot = Some(slot);
                if let Some(lease) = shared.acquire(slot) {
                    chosen = Some((lease, redirected));
                    break;
                }
            }
        }
    }
    let Some((lease, redirected)) = chosen else {
        shared.local.count(LocalReason::NoReadyNode);
        let name = last_slot
            .and_then(|i| shared.slots.get(i))
            .map_or("?", |s| s.name.as_str());
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cutover proxy: slot `{name}` has no ready node (all drained)"),
        );
    };
    forward(&shared, lease, redirected, req, peer).await
}

/// Headers that belong to one connection and are never forwarded.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        h.remove(name);
    }
    for name in HOP_BY_HOP {
        h.remove(name);
    }
}

fn add_forwarded(h: &mut HeaderMap, peer: SocketAddr) {
    let ip = peer.ip();
    let xff = match h.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if !prev.trim().is_empty() => format!("{prev}, {ip}"),
        _ => ip.to_string(),
    };
    if let Ok(v) = HeaderValue::try_from(xff) {
        h.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    h.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
}

/// Where a request goes on `node`: its scheme and authority, its path prefix, then the
/// request's path and query (shared, not copied, when the node has no prefix).
fn upstream_uri(node: &NodeRt, uri: &Uri) -> Result<Uri, hyper::http::Error> {
    let pq = uri.path_and_query();
    let path_and_query = match pq {
        Some(pq) if node.prefix.is_empty() => pq.clone(),
        _ => PathAndQuery::try_from(format!(
            "{}{}",
            node.prefix,
            pq.map_or("/", PathAndQuery::as_str)
        ))?,
    };
    Uri::builder()
        .scheme(node.scheme.clone())
        .authority(node.authority.clone())
        .path_and_query(path_and_query)
        .build()
}

async fn forward(
    shared: &Shared,
    lease: Lease,
    redirected: bool,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<ProxyBody> {
    let node = lease.node();
    let (mut parts, body) = req.into_parts();
    let uri = match upstream_uri(node, &parts.uri) {
        Ok(u) => u,
        Err(e) => {
            lease.answered(400);
            return text(
                StatusCode::BAD_REQUEST,
                format!("cutover proxy: cannot forward this request path: {e}"),
            );
        }
    };
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, peer);
    if redirected && let Some(v) = &shared.opts.redirected_as {
        parts
            .headers
            .insert(HeaderName::from_static(REDIRECTED_HEADER), v.clone());
    }
    let upstream = shared.client.request(Request::from_parts(parts, body));
    let sent = std::time::Instant::now();
    let answer = tokio::time::timeout(shared.opts.upstream_timeout, upstream).await;
    match answer {
        Ok(Ok(resp)) => {
            node.record_latency(sent.elapsed());
            if resp.status().is_server_error() {
                lease.count_error(ErrorKind::Status5xx);
            }
            lease.answered(resp.status().as_u16());
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            let body = Tracked {
                inner: body,
                _lease: lease,
            };
            Response::from_parts(parts, body.boxed())
        }
        Ok(Err(e)) => {
            lease.count_error(if e.is_connect() {
                ErrorKind::Connect
            } else {
                ErrorKind::Reset
            });
            lease.answered(502);
            let why = crate::load::error_chain(&e);
            tracing::warn!(env = %shared.env, slot = lease.slot_name(), upstream = %node.address, "upstream failed: {why}");
            text(
                StatusCode::BAD_GATEWAY,
                format!(
                    "cutover proxy: slot `{}` ({}) did not answer: {why}",
                    lease.slot_name(),
                    node.address
                ),
            )
        }
        Err(_) => {
            lease.count_error(ErrorKind::Timeout);
            lease.answered(504);
            text(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "cutover proxy: slot `{}` ({}) sent no answer within {}s",
                    lease.slot_name(),
                    node.address,
                    shared.opts.upstream_timeout.as_secs()
                ),
            )
        }
    }
}

/// A response body that holds the request's lease until it has been sent (or dropped).
struct Tracked {
    inner: Incoming,
    _lease: Lease,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_the_ones_connection_names_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert("host", HeaderValue::from_static("shop.example"));
        add_forwarded(&mut h, SocketAddr::from(([127, 0, 0, 1], 5000)));
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "shop.example");
    }
}
