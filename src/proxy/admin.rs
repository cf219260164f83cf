//! The admin API: how the `embedded` driver (and an operator with curl) reads and changes the
//! proxy's routing.
//!
//! - `GET /state` → [`crate::model::RouterState`] as JSON
//! - `GET /metrics` → Prometheus text format 0.0.4 ([`super::metrics`])
//! - `POST /live {"slot":"green"}`, `POST /preview {"slot":"staging"}`
//! - `POST /drain {"slot":"blue"}` or `{"slot":"blue","node":"b1"}`, `POST /undrain {...}`
//! - `POST /maintenance {"on":true,"mode":{"mode":"page"}}` or
//!   `{"on":true,"mode":{"mode":"redirect","to":"green"}}`, `{"on":false}`
//! - `POST /weights {"live":"blue","canary":"green","canary_percent":25}`: 25 % of the live
//!   traffic to green, chosen per request; `0` puts it all back on the live slot
//!
//! Successful changes answer 200 with the new state. Refusals answer 4xx with
//! `{"error": "..."}` naming the problem; when a token is configured every call needs
//! `Authorization: Bearer TOKEN` (401 otherwise), `/metrics` included: Prometheus sends it
//! with `authorization: {credentials_file: ...}` in the scrape config.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::forward::{ProxyBody, local};
use super::state::{AdminError, Shared};
use crate::model::MaintenanceMode;

const MAX_BODY: usize = 16 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SlotBody {
    slot: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetBody {
    slot: String,
    #[serde(default)]
    node: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightsBody {
    live: String,
    canary: String,
    canary_percent: u8,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    on: bool,
    #[serde(default)]
    mode: Option<MaintenanceMode>,
}

fn json(status: StatusCode, v: &impl serde::Serialize) -> Response<ProxyBody> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    local(status, "application/json", body)
}

fn error(e: AdminError) -> Response<ProxyBody> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    json(status, &serde_json::json!({ "error": e.message }))
}

/// Compare without stopping at the first different byte.
fn same_token(given: &[u8], want: &[u8]) -> bool {
    let mut diff = given.len() ^ want.len();
    for (i, w) in want.iter().enumerate() {
        diff |= usize::from(given.get(i).copied().unwrap_or(0) ^ w);
    }
    diff == 0
}

fn authorized(shared: &Shared, req: &Request<Incoming>) -> bool {
    let Some(token) = &shared.token else {
        return true;
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .and_then(|v| v.strip_prefix(b"Bearer "))
        .unwrap_or_default();
    same_token(given, token.as_bytes())
}

async fn read<T: DeserializeOwned>(req: Request<Incoming>, example: &str) -> Result<T, AdminError> {
    let what = format!("{} {}", req.method(), req.uri().path());
    let body = Limited::new(req.into_body(), MAX_BODY).collect();
    let bytes = match tokio::time::timeout(Duration::from_secs(10), body).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            return Err(AdminError::new(
                400,
                format!("cannot read the body of {what} (at most {MAX_BODY} bytes): {e}"),
            ));
        }
        Err(_) => {
            return Err(AdminError::new(
                408,
                format!("the body of {what} did not arrive within 10s"),
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|e| {
        AdminError::new(
            400,
            format!("the body of {what} must be JSON like {example}: {e}"),
        )
    })
}

pub(crate) async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<ProxyBody> {
    if !authorized(&shared, &req) {
        let mut r = error(AdminError::new(
            401,
            "this admin API needs `Authorization: Bearer TOKEN` with the token from the \
             variable named by `token_env`",
        ));
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"cutover\""),
        );
        return r;
    }
    let path = req.uri().path().trim_end_matches('/').to_string();
    let method = req.method().clone();
    let done = |r: Result<(), AdminError>, shared: &Shared| match r {
        Ok(()) => json(StatusCode::OK, &shared.observe()),
        Err(e) => error(e),
    };
    let endpoints = "GET /state, GET /metrics, POST /live, POST /preview, POST /drain, POST /undrain, \
                     POST /maintenance, POST /pause, POST /resume, POST /tls/reload, POST /weights";
    match (method, path.as_str()) {
        (Method::GET, "/state") => json(StatusCode::OK, &shared.observe()),
        (Method::GET, "/metrics") => local(
            StatusCode::OK,
            super::metrics::CONTENT_TYPE,
            super::metrics::render(&shared),
        ),
        (Method::POST, "/live") => match read::<SlotBody>(req, r#"{"slot":"green"}"#).await {
            Ok(b) => done(shared.switch_live(&b.slot).await, &shared),
            Err(e) => error(e),
        },
        (Method::POST, "/preview") => match read::<SlotBody>(req, r#"{"slot":"green"}"#).await {
            Ok(b) => done(shared.set_preview(&b.slot).await, &shared),
            Err(e) => error(e),
        },
        (Method::POST, "/drain") => {
            match read::<TargetBody>(req, r#"{"slot":"blue","node":"b1"}"#).await {
                Ok(b) => done(shared.drain(&b.slot, b.node.as_deref()).await, &shared),
                Err(e) => error(e),
            }
        }
        (Method::POST, "/undrain") => {
            match read::<TargetBody>(req, r#"{"slot":"blue","node":"b1"}"#).await {
                Ok(b) => done(shared.undrain(&b.slot, b.node.as_deref()).await, &shared),
                Err(e) => error(e),
            }
        }
        (Method::POST, "/maintenance") => {
            let example = r#"{"on":true,"mode":{"mode":"redirect","to":"green"}}"#;
            match read::<MaintenanceBody>(req, example).await {
                Ok(b) => done(shared.set_maintenance(b.on, b.mode).await, &shared),
                Err(e) => error(e),
            }
        }
        (Method::POST, "/pause") => {
            shared.pause();
            json(StatusCode::OK, &shared.observe())
        }
        (Method::POST, "/resume") => {
            shared.resume();
            json(StatusCode::OK, &shared.observe())
        }
        (Method::POST, "/tls/reload") if shared.tls.is_empty() => error(AdminError::new(
            409,
            "this proxy has no TLS listener; add `tls = { listen, cert, key }` to its router",
        )),
        (Method::POST, "/tls/reload") => match super::tls::reload_all(&shared.tls).await {
            Ok(()) => {
                tracing::info!(env = %shared.env, "TLS certificates reloaded");
                json(StatusCode::OK, &shared.observe())
            }
            Err(e) => error(AdminError::new(
                422,
                format!("{e:#}; the certificate in use stays"),
            )),
        },
        (Method::POST, "/weights") => {
            let example = r#"{"live":"blue","canary":"green","canary_percent":25}"#;
            match read::<WeightsBody>(req, example).await {
                Ok(b) => done(
                    shared
                        .set_weights(&b.live, &b.canary, b.canary_percent)
                        .await,
                    &shared,
                ),
                Err(e) => error(e),
            }
        }
        (
            m,
            "/state" | "/metrics" | "/live" | "/preview" | "/drain" | "/undrain" | "/maintenance"
            | "/pause" | "/resume" | "/tls/reload" | "/weights",
        ) => error(AdminError::new(
            405,
            format!("{m} is not allowed on {path}; the endpoints are {endpoints}"),
        )),
        (m, p) => error(AdminError::new(
            404,
            format!("no endpoint {m} {p}; the endpoints are {endpoints}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::same_token;

    #[test]
    fn tokens_compare_whole() {
        assert!(same_token(b"s3cret", b"s3cret"));
        assert!(!same_token(b"s3cre", b"s3cret"));
        assert!(!same_token(b"s3cretX", b"s3cret"));
        assert!(!same_token(b"", b"s3cret"));
    }
}
