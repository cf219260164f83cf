//! The `embedded` driver: cutover's own reverse proxy ([`crate::proxy`]), commanded through
//! its admin API over HTTP.
//!
//! The proxy runs in `cutover proxy --config FILE` or `cutover demo`; this driver is only a
//! client of its admin API (`GET /state`, `POST /live`, `/preview`, `/drain`, `/undrain`,
//! `/maintenance`). Every answer that is not a success becomes an error that carries the
//! API's status and its `{"error": "..."}` text.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use serde::Deserialize;
use serde_json::json;

use crate::model::{EnvSlots, Slot};
use crate::model::{MaintenanceMode, RouterState};
use crate::router::{Driven, Proxy, Target, Verb};

mod config;
pub use config::*;

/// Talks to a running embedded proxy's admin API.
/// The embedded router: a [`Driven`] [`Embedded`].
pub type Driver = Driven<Embedded>;

pub struct Embedded {
    base: String,
    token_env: Option<String>,
    client: reqwest::Client,
}

impl Embedded {
    /// The admin API's base URL.
    pub fn admin_url(&self) -> &str {
        &self.base
    }

    fn token(&self) -> Result<Option<String>> {
        let Some(var) = &self.token_env else {
            return Ok(None);
        };
        match std::env::var(var) {
            Ok(t) if !t.is_empty() => Ok(Some(t)),
            _ => bail!(
                "the embedded proxy's admin API needs the token in ${var} (`token_env`), but \
                 ${var} is not set for cutover; export it and try again"
            ),
        }
    }

    /// One admin API call; a non-2xx answer becomes an error with its status and text.
    async fn call(
        &self,
        what: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.client.request(method.clone(), &url);
        if let Some(t) = self.token()? {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| {
            eyre!(
                "cannot reach the embedded proxy's admin API at {} ({method} {path}) to {what}: {}; \
                 is the proxy running (`cutover proxy --config FILE` or `cutover demo`) with \
                 `admin = \"{}\"`?",
                self.base,
                crate::load::error_chain(&e),
                self.base.trim_start_matches("http://"),
            )
        })?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| {
            eyre!(
                "the embedded proxy's admin API at {} answered {status} to {method} {path} but \
                 its body could not be read: {}",
                self.base,
                crate::load::error_chain(&e)
            )
        })?;
        if status.is_success() {
            return Ok(text);
        }
        let said = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.trim().chars().take(300).collect());
        bail!(
            "the embedded proxy refused to {what}: it answered {status} to {method} {path}: {said}"
        )
    }

    async fn post(&self, what: &str, path: &str, body: serde_json::Value) -> Result<()> {
        self.call(what, reqwest::Method::POST, path, Some(body))
            .await
            .map(|_| ())
    }
}

fn target_body(t: &Target) -> serde_json::Value {
    match &t.node {
        Some(n) => json!({"slot": t.slot, "node": n}),
        None => json!({"slot": t.slot}),
    }
}

impl Proxy for Embedded {
    const KIND: &'static str = "embedded";
    type Config = Config;
    fn new(name: &str, _env: EnvSlots<'_>, cfg: &Config) -> Result<Self> {
        if let Some(var) = &cfg.token_env
            && !std::env::var(var).is_ok_and(|t| !t.trim().is_empty())
        {
            return Err(crate::model::ConfigProblem(format!(
                "router `{name}`: `token_env = \"{var}\"` but ${var} is not set (or empty) for \
                 cutover; export the embedded proxy's admin token in ${var}"
            ))
            .into());
        }
        let addr: SocketAddr = cfg.admin.parse().map_err(|_| {
            eyre!(
                "the embedded router's `admin` is `{}`, not an address like \"127.0.0.1:8089\"",
                cfg.admin
            )
        })?;
        // A proxy listening on every address is reached on loopback.
        let addr = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
            }
            IpAddr::V6(ip) if ip.is_unspecified() => {
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), addr.port())
            }
            _ => addr,
        };
        let client = crate::http_client()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .build()
            .wrap_err("cannot build the HTTP client for the embedded proxy's admin API")?;
        Ok(Embedded {
            base: format!("http://{addr}"),
            token_env: cfg.token_env.clone(),
            client,
        })
    }
    fn supports(&self, _verb: Verb) -> bool {
        true
    }
    async fn observe(&self) -> Result<RouterState> {
        let text = self
            .call("read its state", reqwest::Method::GET, "/state", None)
            .await?;
        serde_json::from_str(&text).wrap_err_with(|| {
            format!(
                "the embedded proxy at {} answered GET /state with something that is not its \
                 state (is another program listening on that port?): {}",
                self.base,
                text.chars().take(200).collect::<String>()
            )
        })
    }
    async fn switch_live(&self, to: &str) -> Result<()> {
        self.post(&format!("make `{to}` live"), "/live", json!({"slot": to}))
            .await
    }
    async fn set_preview(&self, slot: &str) -> Result<()> {
        self.post(
            &format!("point preview at `{slot}`"),
            "/preview",
            json!({"slot": slot}),
        )
        .await
    }
    async fn drain(&self, t: &Target) -> Result<()> {
        self.post(&format!("drain `{t}`"), "/drain", target_body(t))
            .await
    }
    async fn undrain(&self, t: &Target) -> Result<()> {
        self.post(&format!("undrain `{t}`"), "/undrain", target_body(t))
            .await
    }
    async fn maintenance(&self, on: bool, m: &MaintenanceMode) -> Result<()> {
        let what = if on {
            format!("turn maintenance on ({m})")
        } else {
            "turn maintenance off".to_string()
        };
        self.post(&what, "/maintenance", json!({"on": on, "mode": m}))
            .await
    }
    async fn set_weights(&self, live: &str, canary: &str, percent: u8) -> Result<()> {
        self.post(
            &format!("send {percent} % of the live traffic of `{live}` to `{canary}`"),
            "/weights",
            json!({"live": live, "canary": canary, "canary_percent": percent}),
        )
        .await
    }
    async fn pause(&self, on: bool) -> Result<()> {
        let (what, path) = if on {
            ("hold new live requests", "/pause")
        } else {
            ("release the held requests", "/resume")
        };
        self.post(what, path, json!({})).await
    }
}
