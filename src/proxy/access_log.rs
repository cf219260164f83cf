//! The access log (`access_log = "/path"` or `"-"` for stderr): one JSON line per request,
//! written by its own task so that the forward path never waits on a disk.
//!
//! A request's line is handed over through a bounded channel when its response body has been
//! sent (or the client went away while it was sent); when the writer falls behind, lines are
//! dropped and counted (`cutover_proxy_access_log_dropped_total`) rather than slowing requests
//! down. The path and query pass through [`crate::redact`] in the writer, so `?password=…`
//! or `?access_token=…` is never written. Bodies and headers are never logged.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use color_eyre::eyre::{Result, WrapErr};
use hyper::body::{Body, Bytes, Frame, SizeHint};
use hyper::http::uri::PathAndQuery;
use hyper::{Method, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::forward::ProxyBody;

/// Lines waiting for the writer; beyond this, new lines are dropped and counted.
const QUEUE: usize = 4096;

/// The slot and node that answered a request, left in the response's extensions by the
/// forward path for the access log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Served {
    pub slot: usize,
    pub node: usize,
}

/// A request as it arrived: what its line says about it before it is answered.
pub(crate) struct Arrival {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub method: Method,
    pub path: Option<PathAndQuery>,
}

/// One request, as the forward path knows it; formatted by the writer.
pub(crate) struct Entry {
    pub arrival: Arrival,
    pub status: u16,
    /// The slot and node that answered; `None` when the proxy answered itself.
    pub served: Option<Served>,
    pub bytes: u64,
    pub duration_us: u64,
}

impl Entry {
    /// The JSON line, with the path and query redacted; `names` are the slots' names, each
    /// with its nodes' names, in the proxy's order.
    fn line(&self, names: &[(String, Vec<String>)]) -> String {
        let a = &self.arrival;
        let path = a.path.as_ref().map_or("/", PathAndQuery::as_str);
        let (slot, node) = match self.served.and_then(|s| Some((names.get(s.slot)?, s.node))) {
            Some(((slot, nodes), n)) => (Some(slot.as_str()), nodes.get(n).map(String::as_str)),
            None => (None, None),
        };
        let v = serde_json::json!({
            "time": humantime::format_rfc3339_millis(a.time).to_string(),
            "client": a.client.ip().to_string(),
            "method": a.method.as_str(),
            "path": crate::redact::redact(path),
            "status": self.status,
            "slot": slot,
            "node": node,
            "bytes": self.bytes,
            "duration_ms": self.duration_us as f64 / 1000.0,
        });
        format!("{v}\n")
    }
}

/// The forward path's end of the access log.
pub(crate) struct Sink {
    tx: mpsc::Sender<Entry>,
    /// Lines dropped because the writer was behind (or gone).
    pub dropped: AtomicU64,
}

impl Sink {
    fn send(&self, e: Entry) {
        if self.tx.try_send(e).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Open `spec` (`-` is stderr; otherwise a file, appended to and created if missing) and
/// start its writer task. `names` are the slots' names, each with its nodes' names. The task
/// ends when the proxy's [`Sink`] is dropped.
pub(crate) async fn open(spec: &str, names: Vec<(String, Vec<String>)>) -> Result<Sink> {
    let mut out: Box<dyn tokio::io::AsyncWrite + Send + Unpin> = if spec == "-" {
        Box::new(tokio::io::stderr())
    } else {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec)
            .await
            .wrap_err_with(|| {
                format!(
                    "`access_log = \"{spec}\"` cannot be opened for appending; create its \
                     directory, fix its permissions, or use \"-\" for stderr"
                )
            })?;
        Box::new(file)
    };
    let (tx, mut rx) = mpsc::channel::<Entry>(QUEUE);
    tokio::spawn(async move {
        let mut buf = String::new();
        while let Some(first) = rx.recv().await {
            buf.clear();
            buf.push_str(&first.line(&names));
            // Whatever else is already queued goes out in the same write.
            while buf.len() < 64 * 1024
                && let Ok(e) = rx.try_recv()
            {
                buf.push_str(&e.line(&names));
            }
            let written = async {
                out.write_all(buf.as_bytes()).await?;
                out.flush().await
            };
            if let Err(e) = written.await {
                tracing::warn!("access log: cannot write: {e}");
            }
        }
    });
    Ok(Sink {
        tx,
        dropped: AtomicU64::new(0),
    })
}

/// What the forward path remembers about a request before it is answered.
pub(crate) struct Pending {
    arrival: Arrival,
    since: Instant,
}

impl Pending {
    /// `req`, arriving now from `client`.
    pub fn of<B>(req: &Request<B>, client: SocketAddr) -> Pending {
        Pending {
            arrival: Arrival {
                time: SystemTime::now(),
                client,
                method: req.method().clone(),
                path: req.uri().path_and_query().cloned(),
            },
            since: Instant::now(),
        }
    }

    /// Wrap `resp`'s body so that the request's line is sent when the body has been sent.
    pub fn finish(
        self,
        shared: &Arc<super::state::Shared>,
        resp: Response<ProxyBody>,
    ) -> Response<ProxyBody> {
        use http_body_util::BodyExt;
        let served = resp.extensions().get::<Served>().copied();
        let status = resp.status().as_u16();
        let (parts, inner) = resp.into_parts();
        let body = Logged {
            inner,
            bytes: 0,
            entry: Some((self, status, served)),
            shared: shared.clone(),
        };
        Response::from_parts(parts, body.boxed())
    }
}

/// A response body that counts its bytes and sends the request's line when it is dropped.
struct Logged {
    inner: ProxyBody,
    bytes: u64,
    entry: Option<(Pending, u16, Option<Served>)>,
    shared: Arc<super::state::Shared>,
}

impl Body for Logged {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &polled
            && let Some(d) = f.data_ref()
        {
            self.bytes += d.len() as u64;
        }
        polled
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        let (Some(sink), Some((p, status, served))) =
            (self.shared.access_log.as_ref(), self.entry.take())
        else {
            return;
        };
        sink.send(Entry {
            arrival: p.arrival,
            status,
            served,
            bytes: self.bytes,
            duration_us: u64::try_from(p.since.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            arrival: Arrival {
                time: SystemTime::UNIX_EPOCH,
                client: SocketAddr::from(([127, 0, 0, 1], 5000)),
                method: Method::GET,
                path: None,
            },
            status: 503,
            served: None,
            bytes: 0,
            duration_us: 0,
        }
    }

    #[test]
    fn a_full_queue_drops_lines_and_counts_them_instead_of_waiting() {
        let (tx, mut rx) = mpsc::channel(2);
        let sink = Sink {
            tx,
            dropped: AtomicU64::new(0),
        };
        for _ in 0..5 {
            sink.send(entry());
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 3);
        assert!(rx.try_recv().is_ok() && rx.try_recv().is_ok());
        let line = entry().line(&[]);
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(
            (&v["path"], &v["slot"]),
            (&"/".into(), &serde_json::Value::Null)
        );
    }

    #[test]
    fn a_line_is_json_with_the_query_secrets_redacted() {
        let mut e = entry();
        e.arrival.path = Some(PathAndQuery::from_static(
            "/cb?code=1&access_token=hunter22&x=2",
        ));
        (e.status, e.bytes, e.duration_us) = (200, 12, 1500);
        e.served = Some(Served { slot: 1, node: 0 });
        let names = vec![
            ("blue".to_string(), vec!["blue".to_string()]),
            (
                "green".to_string(),
                vec!["g1".to_string(), "g2".to_string()],
            ),
        ];
        let line = e.line(&names);
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["time"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["client"], "127.0.0.1");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["status"], 200);
        assert_eq!((&v["slot"], &v["node"]), (&"green".into(), &"g1".into()));
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["duration_ms"], 1.5);
        let path = v["path"].as_str().expect("path");
        assert!(!path.contains("hunter22"), "{path}");
        assert!(path.starts_with("/cb?code=1&access_token="), "{path}");
    }
}
