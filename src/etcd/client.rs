//! The gateway's HTTP side: members tried in order, credentials, one JSON POST, and the
//! base64 and number encodings of its answers.

use std::sync::Mutex;

use base64::Engine as _;
pub(super) use base64::engine::general_purpose::STANDARD as B64;
use serde::Deserialize;
use serde_json::{Value, json};

/// The members as a message names them.
pub(super) fn members(endpoints: &[String]) -> String {
    endpoints.join(", ")
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum CallError {
    /// No member answered.
    /// No member answered: the members, and why the last one did not (a refused
    /// connection, a certificate cutover does not trust...).
    Unreachable {
        members: String,
        why: Option<String>,
    },
    /// A member answered with an error.
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable { members, why } => {
                write!(f, "etcd at {members} unreachable")?;
                match why {
                    Some(w) => write!(f, ": {w}"),
                    None => Ok(()),
                }
            }
            CallError::Refused(m) => write!(f, "etcd refused: {m}"),
        }
    }
}

/// The HTTP side: members, credentials, one JSON POST.
pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) endpoints: Vec<String>,
    /// (user, password) read from the environment when the store was opened.
    pub(super) credentials: Option<(String, String)>,
    pub(super) token: Mutex<Option<String>>,
}

impl Client {
    pub(super) async fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut authenticated = false;
        if self.credentials.is_some() && self.token.lock().is_ok_and(|t| t.is_none()) {
            self.authenticate().await?;
            authenticated = true;
        }
        loop {
            match self.post_once(path, body).await {
                // An expired or revoked token: authenticate again, once.
                Err(CallError::Refused(m))
                    if !authenticated
                        && self.credentials.is_some()
                        && (m.contains("token") || m.contains("auth")) =>
                {
                    self.authenticate().await?;
                    authenticated = true;
                }
                other => return other,
            }
        }
    }

    async fn authenticate(&self) -> Result<(), CallError> {
        let Some((user, password)) = &self.credentials else {
            return Ok(());
        };
        if let Ok(mut t) = self.token.lock() {
            *t = None;
        }
        let v = self
            .post_once(
                "/v3/auth/authenticate",
                &json!({"name": user, "password": password}),
            )
            .await?;
        let token = v["token"].as_str().map(str::to_string);
        if let Ok(mut t) = self.token.lock() {
            *t = token;
        }
        Ok(())
    }

    /// A POST of `body` to `path` on the member at `base`, with the auth token when there is
    /// one.
    pub(super) fn post_to(&self, base: &str, path: &str, body: &Value) -> reqwest::RequestBuilder {
        let req = self
            .http
            .post(format!("{}{path}", base.trim_end_matches('/')))
            .json(body);
        match self.token.lock().ok().and_then(|t| t.clone()) {
            Some(t) => req.header("Authorization", t),
            None => req,
        }
    }

    async fn post_once(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        // Why the last member could not be reached (a refused connection, a certificate
        // cutover does not trust...), for the message.
        let mut why = None;
        for base in &self.endpoints {
            let resp = match self.post_to(base, path, body).send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("etcd member {base}: {e}");
                    why = Some(crate::load::error_chain(&e));
                    continue;
                }
            };
            let status = resp.status();
            let Ok(text) = resp.text().await else {
                continue;
            };
            let v: Value = serde_json::from_str(text.lines().next().unwrap_or_default())
                .unwrap_or(Value::Null);
            // A member without a leader answers 503 or an error saying so: ask the next one.
            let err = v["error"]
                .as_str()
                .or(v["message"].as_str())
                .map(str::to_string);
            if status.is_server_error()
                && err.as_deref().is_none_or(|e| {
                    e.contains("leader") || e.contains("timed out") || e.contains("unavailable")
                })
            {
                continue;
            }
            if !status.is_success() || err.is_some() {
                return Err(CallError::Refused(
                    err.unwrap_or_else(|| format!("HTTP {status}")),
                ));
            }
            return Ok(v);
        }
        Err(CallError::Unreachable {
            members: members(&self.endpoints),
            why: why.map(|w| crate::redact::redact(&w)),
        })
    }
}

/// A key's value as the gateway returns it.
#[derive(Debug, Deserialize)]
pub(super) struct Kv {
    #[serde(default)]
    pub(super) value: String,
    #[serde(default)]
    pub(super) create_revision: Value,
}

pub(super) fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// One key past every key that starts with `prefix`: the end of a prefix range.
pub(super) fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return B64.encode(&b);
        }
    }
    B64.encode([0u8])
}

pub(super) fn kvs(v: &Value) -> Vec<Kv> {
    serde_json::from_value(v["kvs"].clone()).unwrap_or_default()
}

pub(super) fn value<T: serde::de::DeserializeOwned>(kv: &Kv) -> Option<T> {
    let bytes = B64.decode(&kv.value).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub(super) fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}
