//! Caddy's admin API: requests with retries across its restarts, If-Match changes.

use super::*;

impl Caddy {
    /// One request on the admin API, retried when it is safe to.
    ///
    /// Caddy restarts its admin endpoint after every config change, so the request that
    /// follows a change can meet a listener that is closing: the connection is refused or
    /// reset. A read is retried on any such failure; a change only when the connection was
    /// never made, because a change that was sent may have been applied (every change
    /// carries If-Match, and the read-back that follows it shows what Caddy holds).
    pub(super) async fn call(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer> {
        const ATTEMPTS: u32 = 4;
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            match self.call_once(method.clone(), path, body, if_match).await {
                Ok(a) => return Ok(a),
                Err((stage, e)) => {
                    let safe = method == hyper::Method::GET || stage == Stage::Connect;
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
        method: hyper::Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> std::result::Result<Answer, (Stage, color_eyre::Report)> {
        let what = format!("{method} {path}");
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
            let bytes = match body {
                Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| exchange(e.into()))?),
                None => Bytes::new(),
            };
            let mut req = hyper::Request::builder()
                .method(method.clone())
                .uri(path)
                .header(hyper::header::HOST, &self.authority);
            if body.is_some() {
                // Caddy refuses a config change without it.
                req = req.header(hyper::header::CONTENT_TYPE, "application/json");
            }
            if let Some(tag) = if_match {
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
            let header_tag = resp
                .headers()
                .get(hyper::header::ETAG)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let collected = resp
                .into_body()
                .collect()
                .await
                .wrap_err("cannot read the answer of Caddy's admin API")
                .map_err(exchange)?;
            let trailer_tag = collected
                .trailers()
                .and_then(|t| t.get(hyper::header::ETAG))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
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
    pub(super) async fn call_ok(
        &self,
        method: hyper::Method,
        path: &str,
        body: Option<&Value>,
        if_match: Option<&str>,
    ) -> Result<Answer> {
        let a = self.call(method.clone(), path, body, if_match).await?;
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
                "Caddy's admin API answered {} to {method} {path}: {}{hint}",
                a.status,
                a.error_text()
            );
        }
        Ok(a)
    }

    /// The whole config and its ETag.
    pub(super) async fn get_config(&self) -> Result<(Value, String)> {
        let a = self
            .call_ok(hyper::Method::GET, "/config/", None, None)
            .await?;
        let v = a.json()?;
        let tag = a.etag.clone().ok_or_else(|| {
            eyre!("Caddy sent no ETag for its config; cutover needs Caddy 2.6 or later to refuse overwriting a concurrent change")
        })?;
        Ok((v, tag))
    }

    pub(super) async fn upstream_stats(&self) -> BTreeMap<String, (u64, u64)> {
        let Ok(a) = self
            .call_ok(hyper::Method::GET, "/reverse_proxy/upstreams", None, None)
            .await
        else {
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
