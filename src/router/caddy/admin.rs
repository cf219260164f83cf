//! Caddy's admin API: requests with retries across its restarts, If-Match changes.

use super::*;

/// One request on the admin API: a read, or a change that Caddy refuses (412) once its
/// config's ETag is no longer the one it was read with.
pub(super) struct Call<'a> {
    method: hyper::Method,
    path: &'a str,
    body: Option<&'a Value>,
    if_match: Option<&'a str>,
}

impl<'a> Call<'a> {
    pub(super) fn get(path: &'a str) -> Self {
        Call {
            method: hyper::Method::GET,
            path,
            body: None,
            if_match: None,
        }
    }
    pub(super) fn change(
        method: hyper::Method,
        path: &'a str,
        body: Option<&'a Value>,
        tag: &'a str,
    ) -> Self {
        Call {
            method,
            path,
            body,
            if_match: Some(tag),
        }
    }
}

impl Caddy {
    /// One request on the admin API, retried when it is safe to.
    ///
    /// Caddy restarts its admin endpoint after every config change, so the request that
    /// follows a change can meet a listener that is closing: the connection is refused or
    /// reset. A read is retried on any such failure; a change only when the connection was
    /// never made, because a change that was sent may have been applied (every change
    /// carries If-Match, and the read-back that follows it shows what Caddy holds).
    pub(super) async fn call(&self, c: &Call<'_>) -> Result<Answer> {
        const ATTEMPTS: u32 = 4;
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            match self.call_once(c).await {
                Ok(a) => return Ok(a),
                Err((stage, e)) => {
                    let safe = c.method == hyper::Method::GET || stage == Stage::Connect;
                    let pause = Duration::from_millis(50 << attempt);
                    if !safe || attempt >= ATTEMPTS || started.elapsed() + pause >= self.cfg.timeout
                    {
                        return Err(e);
                    }
                    tracing::debug!(router = %self.name, attempt, "Caddy admin API: {e:#}; retrying");
                    tokio::time::sleep(pause).await;
                    attempt += 1;
                }
            }
        }
    }

    pub(super) async fn call_once(
        &self,
        c: &Call<'_>,
    ) -> std::result::Result<Answer, (Stage, color_eyre::Report)> {
        let what = format!("{} {}", c.method, c.path);
        let fut = async {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .wrap_err_with(|| {
                    format!(
                        "cannot reach Caddy's admin API at {}: is Caddy running, and is `admin` \
                         its admin.listen address?",
                        self.cfg.admin
                    )
                })
                .map_err(|e| (Stage::Connect, e))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .wrap_err("HTTP handshake with Caddy's admin API failed")
                .map_err(|e| (Stage::Connect, e))?;
            let exchange = |e: color_eyre::Report| (Stage::Exchange, e);
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let bytes = match c.body {
                Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| exchange(e.into()))?),
                None => Bytes::new(),
            };
            let mut req = hyper::Request::builder()
                .method(c.method.clone())
                .uri(c.path)
                .header(hyper::header::HOST, &self.authority);
            if c.body.is_some() {
                // Caddy refuses a config change without it.
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            if let Some(tag) = c.if_match {
                req = req.header(hyper::header::IF_MATCH, tag);
            }
            let req = req
                .body(Full::new(bytes))
                .wrap_err("cannot build the request")
                .map_err(exchange)?;
            let resp = sender
                .send_request(req)
                .await
                .wrap_err("Caddy's admin API did not answer")
                .map_err(exchange)?;
            let status = resp.status().as_u16();
            let header_tag = etag(resp.headers());
            let collected = resp
                .into_body()
                .collect()
                .await
                .wrap_err("cannot read the answer of Caddy's admin API")
                .map_err(exchange)?;
            let trailer_tag = collected.trailers().and_then(etag);
            Ok::<_, (Stage, color_eyre::Report)>(Answer {
                status,
                body: collected.to_bytes(),
                etag: trailer_tag.or(header_tag),
            })
        };
        tokio::time::timeout(self.cfg.timeout, fut)
            .await
            .map_err(|_| {
                (
                    Stage::Exchange,
                    eyre!(
                        "Caddy's admin API at {} did not answer {what} within {}",
                        self.cfg.admin,
                        humantime::format_duration(self.cfg.timeout)
                    ),
                )
            })?
            .map_err(|(stage, e)| (stage, e.wrap_err(format!("{what} on Caddy's admin API"))))
    }

    /// A call whose 4xx/5xx answer becomes an error carrying Caddy's JSON error.
    pub(super) async fn call_ok(&self, c: &Call<'_>) -> Result<Answer> {
        let a = self.call(c).await?;
        if a.status >= 400 {
            let hint = match a.status {
                412 => {
                    " — someone changed Caddy's config since cutover read it; nothing was \
                        changed by cutover. Look at the change, then retry"
                }
                404 => " — check the @id in cutover's config against Caddy's config",
                _ => " — Caddy kept its previous config",
            };
            bail!(
                "Caddy's admin API answered {} to {} {}: {}{hint}",
                a.status,
                c.method,
                c.path,
                a.error_text()
            );
        }
        Ok(a)
    }

    /// The whole config and its ETag.
    pub(super) async fn get_config(&self) -> Result<(Value, String)> {
        let a = self.call_ok(&Call::get("/config/")).await?;
        let v = a.json()?;
        let tag = a.etag.clone().ok_or_else(|| {
            eyre!("Caddy sent no ETag for its config; cutover needs Caddy 2.6 or later to refuse overwriting a concurrent change")
        })?;
        Ok((v, tag))
    }

    /// The config a reading fetched less than [`CONFIG_FRESH`] ago, else fetched now.
    pub(super) async fn recent_config(&self) -> Result<Arc<Value>> {
        let read = self.read.lock().ok().and_then(|r| r.clone());
        match read {
            Some((at, config)) if at.elapsed() < CONFIG_FRESH => Ok(config),
            _ => Ok(Arc::new(self.get_config().await?.0)),
        }
    }

    pub(super) async fn upstream_stats(&self) -> BTreeMap<String, (u64, u64)> {
        let Ok(a) = self.call_ok(&Call::get("/reverse_proxy/upstreams")).await else {
            return BTreeMap::new();
        };
        let Ok(Value::Array(items)) = a.json() else {
            return BTreeMap::new();
        };
        items
            .iter()
            .filter_map(|u| {
                Some((
                    u.get("address")?.as_str()?.to_string(),
                    (
                        u.get("num_requests").and_then(Value::as_u64).unwrap_or(0),
                        u.get("fails").and_then(Value::as_u64).unwrap_or(0),
                    ),
                ))
            })
            .collect()
    }

    // --- config walking ---------------------------------------------------------------
}

/// The ETag in a head or in trailers.
fn etag(h: &hyper::HeaderMap) -> Option<String> {
    let v = h.get(hyper::header::ETAG)?;
    v.to_str().ok().map(str::to_string)
}
