//! Health and version polling.
//!
//! One probe task per slot (and per public/preview URL) polls on the configured interval.
//! Every request has the configured timeout and a capped body, so a hung or slow endpoint
//! only ever delays its own task; results go to the app as events.

use std::time::{Duration, Instant, SystemTime};

use color_eyre::eyre::{Result, WrapErr};
use serde::Serialize;

use crate::config::{Environment, Settings, Slot};
use crate::model::{Health, ProbeError, ProbeResult, VersionInfo};

mod keepalive;

pub use keepalive::SlotPoll;

/// A GET's answer: (status, body, the `X-Slot` header, time to the answer's head).
type Answer = (u16, Vec<u8>, Option<String>, Duration);
type Fetched = Result<Answer, ProbeError>;

#[derive(Clone)]
pub struct Prober {
    client: reqwest::Client,
    timeout: Duration,
    degraded_after: Duration,
    max_body: usize,
}

/// What a GET of the public (or preview) URL's version endpoint showed: the version users get.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UrlProbe {
    pub url: String,
    pub status: Option<u16>,
    pub version: Option<VersionInfo>,
    /// The `X-Slot` header, when the slot (or the demo) sends one.
    pub slot_header: Option<String>,
    pub error: Option<ProbeError>,
    /// When the request was sent (a router reading taken after it has counted it).
    #[serde(skip)]
    pub at: SystemTime,
}

impl Prober {
    pub fn new(settings: &Settings) -> Result<Self> {
        let client = crate::http_client()
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .build()
            .wrap_err("cannot build the HTTP client for probes")?;
        Ok(Prober {
            client,
            timeout: settings.timeout,
            degraded_after: settings.degraded_after,
            max_body: settings.max_body,
        })
    }

    /// Poll one slot.
    ///
    /// Health, then version, on the same pooled connection: one connection per slot instead
    /// of two.
    pub async fn probe_slot(&self, slot: &Slot) -> ProbeResult {
        let health = self.fetch(&slot.health_url).await;
        let version = self.fetch(&slot.version_url).await;
        self.result(slot, health, version)
    }

    /// What a slot's health and version answers say.
    fn result(&self, slot: &Slot, health: Fetched, version: Fetched) -> ProbeResult {
        let (health_state, status, error, latency) = match health {
            Ok((status, _, _, took)) if status == slot.expect_status => {
                let h = if took > self.degraded_after {
                    Health::Degraded
                } else {
                    Health::Up
                };
                (h, Some(status), None, Some(took))
            }
            Ok((status, _, _, took)) => (
                Health::Down,
                Some(status),
                Some(ProbeError::Status(status)),
                Some(took),
            ),
            Err(e) => (Health::Down, None, Some(e), None),
        };
        let (version, version_error) = match version {
            Ok((s, body, _, _)) if (200..300).contains(&s) => {
                match parse_version(&body, slot.version_pointer.as_deref()) {
                    Ok(v) => (Some(v), None),
                    Err(e) => (None, Some(e)),
                }
            }
            Ok((s, ..)) => (None, Some(ProbeError::Status(s))),
            Err(e) => (None, Some(e)),
        };
        ProbeResult {
            at: SystemTime::now(),
            health: health_state,
            status,
            latency,
            error,
            version,
            version_error,
        }
    }

    /// GET a public URL's version endpoint.
    pub async fn probe_url(&self, url: &str, pointer: Option<&str>) -> UrlProbe {
        let sent = SystemTime::now();
        let r = self.fetch(url).await;
        let mut p = UrlProbe {
            url: url.to_string(),
            status: None,
            version: None,
            slot_header: None,
            error: None,
            at: sent,
        };
        match r {
            Ok((status, body, slot, _)) => {
                p.status = Some(status);
                p.slot_header = slot;
                if (200..300).contains(&status) {
                    match parse_version(&body, pointer) {
                        Ok(v) => p.version = Some(v),
                        Err(e) => p.error = Some(e),
                    }
                } else {
                    p.error = Some(ProbeError::Status(status));
                }
            }
            Err(e) => p.error = Some(e),
        }
        p
    }

    /// GET with a capped body: (status, body, x-slot, time to headers).
    async fn fetch(&self, url: &str) -> Fetched {
        let t0 = Instant::now();
        let mut resp = self.client.get(url).send().await.map_err(classify)?;
        let took = t0.elapsed();
        let status = resp.status().as_u16();
        let slot = slot_header(resp.headers());
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_big(self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body, slot, took))
    }
}

fn classify(e: reqwest::Error) -> ProbeError {
    let chain = crate::load::error_chain(&e);
    if e.is_timeout() {
        ProbeError::Timeout
    } else if e.is_body() || e.is_decode() {
        ProbeError::Body(short(&chain))
    } else {
        not_connected(&e)
    }
}

/// A request that got no answer: refused, or another connection failure with its text.
fn not_connected(e: &(dyn std::error::Error + 'static)) -> ProbeError {
    if io_kind(e) == Some(std::io::ErrorKind::ConnectionRefused) {
        ProbeError::Refused
    } else {
        ProbeError::Connect(short(&crate::load::error_chain(e)))
    }
}

/// The kind of the I/O error in `e`'s source chain, if there is one.
fn io_kind(e: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    std::iter::successors(Some(e), |e| e.source())
        .find_map(|e| e.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind)
}

/// The `X-Slot` header of an answer, when the slot (or the demo) sends one.
fn slot_header(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get("x-slot")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn too_big(max_body: usize) -> ProbeError {
    ProbeError::Body(format!("larger than {max_body} bytes (settings.max_body)"))
}

fn short(s: &str) -> String {
    let s = s.rsplit(": ").next().unwrap_or(s);
    s.chars().take(60).collect()
}

/// Read a version from a body: a JSON pointer when configured; otherwise a JSON object's
/// `version` field, or the first line of plain text.
pub fn parse_version(body: &[u8], pointer: Option<&str>) -> Result<VersionInfo, ProbeError> {
    use serde_json::Value;
    let text = String::from_utf8_lossy(body);
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let scalar = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let field = |v: &Value, names: &[&str]| names.iter().find_map(|n| v.get(*n).and_then(scalar));
    let info = |v: &Value, version| VersionInfo {
        version,
        commit: field(v, &["commit", "git_commit", "sha"]),
        built: field(v, &["built", "build_time", "buildTime"]),
    };
    if let Some(ptr) = pointer {
        let Some(v) = json else {
            return Err(ProbeError::Body(format!(
                "not JSON (version_pointer {ptr} needs JSON): {}",
                text.chars().take(40).collect::<String>().trim()
            )));
        };
        return match v.pointer(ptr).map(scalar) {
            Some(Some(version)) => checked(info(&v, version)),
            Some(None) => Err(ProbeError::Body(format!("{ptr} is not a string"))),
            None => Err(ProbeError::Body(format!("no field at {ptr}"))),
        };
    }
    if let Some(v) = json.as_ref().filter(|v| v.is_object()) {
        if let Some(version) = field(v, &["version", "Version"]) {
            return checked(info(v, version));
        }
        return Err(ProbeError::Body(
            "JSON without a `version` field; set version_pointer".into(),
        ));
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        return Err(ProbeError::Body("malformed JSON".into()));
    }
    // The first line, which must be UTF-8: `v\xff\xfe` is no version (not `v��`).
    let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = match std::str::from_utf8(first) {
        Ok(l) => l.trim(),
        Err(e) => {
            return Err(ProbeError::Body(format!(
                "the version is not UTF-8 text (invalid byte at offset {}); answer with a \
                 UTF-8 version string",
                e.valid_up_to()
            )));
        }
    };
    if line.is_empty() {
        return Err(ProbeError::Body("empty version".into()));
    }
    checked(VersionInfo {
        version: line.chars().take(64).collect(),
        commit: None,
        built: None,
    })
}

/// A version with control characters (terminal escapes...) is refused, not shown.
fn checked(v: VersionInfo) -> Result<VersionInfo, ProbeError> {
    let bad = |s: &str| s.chars().any(char::is_control);
    if bad(&v.version)
        || v.commit.as_deref().is_some_and(bad)
        || v.built.as_deref().is_some_and(bad)
    {
        return Err(ProbeError::Body(
            "the version holds control characters; answer with plain text".into(),
        ));
    }
    Ok(v)
}

impl Prober {
    /// Probe the version served behind a public or preview URL of `env`: the slots' version
    /// path on that host, read with the first slot's version pointer.
    pub async fn probe_behind(&self, env: &Environment, url: &str) -> UrlProbe {
        let pointer = env.slots.first().and_then(|s| s.version_pointer.as_deref());
        self.probe_url(&version_url_behind(env, url), pointer).await
    }
}

/// The URL that shows which version the public (or preview) URL serves: the public URL with
/// the slots' version path (read once, when the config loaded).
pub fn version_url_behind(env: &Environment, base: &str) -> String {
    let path = env
        .slots
        .first()
        .map_or("/version", |s| s.version_path.as_str());
    format!("{}{}", base.trim_end_matches('/'), path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_json_pointer_json_and_text() {
        let v = parse_version(br#"{"build":{"v":"2.1"}}"#, Some("/build/v")).expect("ok");
        assert_eq!(v.version, "2.1");
        let v = parse_version(br#"{"version":"1.4.2","commit":"abc"}"#, None).expect("ok");
        assert_eq!(
            (v.version.as_str(), v.commit.as_deref()),
            ("1.4.2", Some("abc"))
        );
        let v = parse_version(b"v9.9.9\nextra", None).expect("ok");
        assert_eq!(v.version, "v9.9.9");
        assert!(matches!(
            parse_version(b"{\"version\": ", None),
            Err(ProbeError::Body(m)) if m.contains("malformed")
        ));
        assert!(matches!(
            parse_version(b"v\xff\xfe\n", None),
            Err(ProbeError::Body(m)) if m.contains("not UTF-8") && m.contains("offset 1")
        ));
        assert!(matches!(
            parse_version(b"{\"version\": \"1\\u001b[2J\"}", None),
            Err(ProbeError::Body(m)) if m.contains("control characters")
        ));
        // Bytes after the first line do not matter.
        assert_eq!(parse_version(b"v1\n\xff", None).expect("ok").version, "v1");
        assert!(matches!(
            parse_version(b"{}", Some("/version")),
            Err(ProbeError::Body(m)) if m.contains("no field at /version")
        ));
    }
}
