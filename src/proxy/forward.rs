//! The live and preview listeners: pick the upstream for each request as it arrives, forward
//! it with streamed bodies, and answer maintenance, 502 and 504 locally.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::PathAndQuery;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use super::access_log::{Pending, Served};
use super::metrics::{ErrorKind, LocalReason};
use super::state::{Lease, Listener, NodeRt, Shared};

mod route;
use route::{Route, pin_cookie, route};

pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// Marks a request this proxy redirected under maintenance; such a request is never
/// redirected again (by this proxy or another cutover proxy), which breaks redirect loops.
pub const REDIRECTED_HEADER: &str = "x-cutover-redirected";

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

fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never: Infallible| match never {})
        .boxed()
}

fn text(status: StatusCode, msg: String) -> Response<ProxyBody> {
    local(status, "text/plain; charset=utf-8", format!("{msg}\n"))
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

/// Serve one request on the live or preview listener. `stopped` turns true when the proxy
/// stops; an upgraded connection (a WebSocket) spliced to a slot ends then.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    listener: Listener,
    req: Request<Incoming>,
    peer: SocketAddr,
    https: bool,
    stopped: &watch::Receiver<bool>,
) -> Response<ProxyBody> {
    let via = Via { listener, stopped };
    if shared.access_log.is_none() {
        return answer(&shared, req, peer, https, via).await;
    }
    let pending = Pending::of(&req, peer);
    let resp = answer(&shared, req, peer, https, via).await;
    pending.finish(&shared, resp)
}

async fn answer(
    shared: &Arc<Shared>,
    req: Request<Incoming>,
    peer: SocketAddr,
    https: bool,
    via: Via<'_>,
) -> Response<ProxyBody> {
    let listener = via.listener;
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
    if !https && let Some(port) = shared.https_redirect(listener) {
        shared.local.count(LocalReason::HttpsRedirect);
        return to_https(req.uri(), req.headers(), port);
    }
    if listener == Listener::Live
        && shared.paused.load(std::sync::atomic::Ordering::SeqCst)
        && let Err(why) = shared.wait_while_paused().await
    {
        shared.local.count(LocalReason::Paused);
        let mut r = text(StatusCode::SERVICE_UNAVAILABLE, why);
        r.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(shared.opts.retry_after),
        );
        return r;
    }
    // A request picks its upstream now, from one read of the routing. If a switch and a
    // drain land between the read and the count, route again.
    let mut chosen = None;
    let mut last_slot = None;
    for _ in 0..3 {
        match route(shared, listener, req.headers()) {
            Route::Page(why) => {
                shared.local.count(LocalReason::Maintenance);
                return maintenance_page(shared, why);
            }
            Route::NoPreview => {
                shared.local.count(LocalReason::NoPreview);
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "cutover proxy: no preview slot is set (POST /preview on the admin API)".into(),
                );
            }
            Route::Slot {
                slot,
                redirected,
                pin,
            } => {
                last_slot = Some(slot);
                if let Some(lease) = shared.acquire(slot) {
                    chosen = Some((lease, redirected, pin));
                    break;
                }
            }
        }
    }
    let Some((lease, redirected, pin)) = chosen else {
        shared.local.count(LocalReason::NoReadyNode);
        let name = last_slot
            .and_then(|i| shared.slots.get(i))
            .map_or("?", |s| s.name.as_str());
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cutover proxy: slot `{name}` has no ready node (all drained)"),
        );
    };
    let served = Served {
        slot: lease.slot,
        node: lease.node,
    };
    let mut resp = forward(shared, lease, redirected, req, peer, https, via).await;
    if let Some(c) = pin_cookie(shared, pin) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    if shared.access_log.is_some() {
        resp.extensions_mut().insert(served);
    }
    resp
}

/// A `308` to the same host and path on the TLS listener's `port`.
fn to_https(uri: &Uri, headers: &HeaderMap, port: u16) -> Response<ProxyBody> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| uri.host().map(str::to_string));
    let Some(host) = host else {
        return text(
            StatusCode::BAD_REQUEST,
            "cutover proxy: this listener redirects to HTTPS, which needs a Host header".into(),
        );
    };
    // The host without its port ([v6] addresses keep their brackets).
    let name = match host.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host.as_str(),
    };
    let authority = if port == 443 {
        name.to_string()
    } else {
        format!("{name}:{port}")
    };
    let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let location = format!("https://{authority}{pq}");
    let mut r = text(
        StatusCode::PERMANENT_REDIRECT,
        format!("cutover proxy: this service is served over HTTPS: {location}"),
    );
    match HeaderValue::try_from(location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
            r
        }
        Err(_) => text(
            StatusCode::BAD_REQUEST,
            "cutover proxy: this request's Host cannot be redirected to HTTPS".into(),
        ),
    }
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

fn add_forwarded(h: &mut HeaderMap, peer: SocketAddr, https: bool) {
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
        HeaderValue::from_static(if https { "https" } else { "http" }),
    );
    if let Some(host) = h.get(header::HOST).cloned() {
        h.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
}

/// Where a request goes on `node`: its scheme and authority, then the request's own path and
/// query (shared, not copied; an address has no path: see [`crate::model::Address`]).
fn upstream_uri(node: &NodeRt, uri: &Uri) -> Result<Uri, hyper::http::Error> {
    let path_and_query = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder()
        .scheme(node.scheme.clone())
        .authority(node.authority.clone())
        .path_and_query(path_and_query)
        .build()
}

/// The protocol an HTTP/1.1 request asks to switch to (`Upgrade: websocket` with
/// `Connection: upgrade`), if it asks.
fn upgrade_asked(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let upgrade = headers.get(header::UPGRADE)?;
    let listed = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    listed.then(|| upgrade.clone())
}

/// Put back the two headers that ask for (or agree to) an upgrade after the hop-by-hop ones
/// were stripped.
fn keep_upgrade(h: &mut HeaderMap, protocol: HeaderValue) {
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(header::UPGRADE, protocol);
}

/// The listener a request came in on and the proxy's stop signal, for an upgraded
/// connection that outlives the request.
#[derive(Clone, Copy)]
pub(crate) struct Via<'a> {
    listener: Listener,
    stopped: &'a watch::Receiver<bool>,
}

/// A WebSocket close frame from the server side: 1001 "going away".
const WEBSOCKET_GOING_AWAY: [u8; 4] = [0x88, 0x02, 0x03, 0xe9];

/// When an upgraded connection is to be closed, after its node was found `serving` (or not)
/// at `now`: never while it serves; `grace` after it stopped, counted from the first time it
/// was found not serving (a switch back cancels it).
fn close_at(
    deadline: Option<tokio::time::Instant>,
    serving: bool,
    now: tokio::time::Instant,
    grace: std::time::Duration,
) -> Option<tokio::time::Instant> {
    match (serving, deadline) {
        (true, _) => None,
        (false, Some(d)) => Some(d),
        (false, None) => Some(now + grace),
    }
}

/// Splice the client's upgraded connection to the slot's, both ways, until either side
/// closes or the proxy stops. The lease is held all that time, so the connection counts as
/// one request in flight on the node it started on (a switch does not move it; a drain
/// shows it in `sessions` until it closes). With `upgrade_drain_timeout`, a connection whose
/// node no longer takes new requests of its listener (a switch, a drain) is closed that long
/// after, a WebSocket with a close frame first; a switch back before then keeps it.
fn splice(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    websocket: bool,
    lease: Lease,
    via: Via<'_>,
) {
    let (listener, mut stopped) = (via.listener, via.stopped.clone());
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(slot = lease.slot_name(), "upgrade did not complete: {e}");
                return;
            }
        };
        let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
        let shared = lease.shared().clone();
        let grace = shared.opts.upgrade_drain_timeout;
        let mut routing = shared.routing_changes();
        let serving = || shared.serving(listener, lease.slot, lease.node);
        let now = tokio::time::Instant::now;
        let mut deadline = grace.and_then(|g| close_at(None, serving(), now(), g));
        let timed_out = {
            let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
            tokio::pin!(copy);
            loop {
                tokio::select! {
                    r = copy.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(slot = lease.slot_name(), "upgraded connection ended: {e}");
                        }
                        break false;
                    }
                    _ = async { let _ = stopped.wait_for(|s| *s).await; } => break false,
                    changed = routing.changed(), if grace.is_some() => {
                        if changed.is_err() {
                            break false;
                        }
                        if let Some(g) = grace {
                            deadline = close_at(deadline, serving(), now(), g);
                        }
                    }
                    _ = async {
                        match deadline {
                            Some(d) => tokio::time::sleep_until(d).await,
                            None => std::future::pending().await,
                        }
                    } => break true,
                }
            }
        };
        if timed_out {
            tracing::info!(
                slot = lease.slot_name(),
                "closing an upgraded connection: upgrade_drain_timeout passed since its slot stopped taking new requests"
            );
            if websocket {
                let _ = client.write_all(&WEBSOCKET_GOING_AWAY).await;
            }
            let _ = client.shutdown().await;
            let _ = upstream.shutdown().await;
        }
        drop(lease);
    });
}

async fn forward(
    shared: &Shared,
    lease: Lease,
    redirected: bool,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    https: bool,
    via: Via<'_>,
) -> Response<ProxyBody> {
    let node = lease.node();
    let upgrade = upgrade_asked(req.version(), req.headers())
        .map(|protocol| (protocol, hyper::upgrade::on(&mut req)));
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
    // An HTTP/2 request names its host in `:authority`, not `Host`: the slot gets it as Host.
    if !parts.headers.contains_key(header::HOST)
        && let Some(a) = parts.uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        parts.headers.insert(header::HOST, v);
    }
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Some((protocol, _)) = &upgrade {
        keep_upgrade(&mut parts.headers, protocol.clone());
    }
    add_forwarded(&mut parts.headers, peer, https);
    if redirected && let Some(v) = &shared.opts.redirected_as {
        parts
            .headers
            .insert(HeaderName::from_static(REDIRECTED_HEADER), v.clone());
    }
    let upstream = shared.client.request(Request::from_parts(parts, body));
    let sent = std::time::Instant::now();
    let answer = tokio::time::timeout(shared.opts.upstream_timeout, upstream).await;
    match answer {
        Ok(Ok(mut resp)) => {
            node.record_latency(sent.elapsed());
            if resp.status().is_server_error() {
                lease.count_error(ErrorKind::Status5xx);
            }
            lease.answered(resp.status().as_u16());
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some((_, client)) = upgrade
            {
                let agreed = resp.headers().get(header::UPGRADE).cloned();
                let websocket = agreed
                    .as_ref()
                    .is_some_and(|p| p.as_bytes().eq_ignore_ascii_case(b"websocket"));
                let upstream = hyper::upgrade::on(&mut resp);
                let (mut parts, _) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                if let Some(protocol) = agreed {
                    keep_upgrade(&mut parts.headers, protocol);
                }
                splice(client, upstream, websocket, lease, via);
                return Response::from_parts(parts, empty());
            }
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            // The body holds the request's lease until it has been sent (or dropped).
            let body = body.map_frame(move |frame| {
                let _held = &lease;
                frame
            });
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
    fn an_upgrade_is_asked_only_with_connection_upgrade_on_http_1_1() {
        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert_eq!(
            upgrade_asked(Version::HTTP_11, &h),
            None,
            "no Connection token"
        );
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(
            upgrade_asked(Version::HTTP_11, &h),
            Some(HeaderValue::from_static("websocket"))
        );
        assert_eq!(upgrade_asked(Version::HTTP_10, &h), None);
        h.remove("upgrade");
        assert_eq!(
            upgrade_asked(Version::HTTP_11, &h),
            None,
            "no Upgrade header"
        );
    }

    #[test]
    fn an_upgraded_connection_is_closed_grace_after_its_node_first_stopped_serving() {
        let t0 = tokio::time::Instant::now();
        let grace = std::time::Duration::from_secs(5);
        let later = t0 + std::time::Duration::from_secs(2);
        assert_eq!(close_at(None, true, t0, grace), None);
        let due = close_at(None, false, t0, grace);
        assert_eq!(due, Some(t0 + grace));
        assert_eq!(
            close_at(due, false, later, grace),
            due,
            "counted from the first time"
        );
        assert_eq!(
            close_at(due, true, later, grace),
            None,
            "a switch back cancels it"
        );
        assert_eq!(
            close_at(None, false, later, grace),
            Some(later + grace),
            "and a new switch starts again"
        );
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.9"));
        h.insert("host", HeaderValue::from_static("shop.example"));
        add_forwarded(&mut h, SocketAddr::from(([127, 0, 0, 1], 5000)), false);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        add_forwarded(&mut h, SocketAddr::from(([127, 0, 0, 1], 5000)), true);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.example");
    }
}
