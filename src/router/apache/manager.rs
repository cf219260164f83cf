//! Talking to the balancer-manager: reading balancers, sending member changes, undoing them.

use super::*;

impl Apache {
    pub(super) fn request(
        &self,
        method: reqwest::Method,
        url: &str,
        referer: bool,
    ) -> reqwest::RequestBuilder {
        let mut r = self.client.request(method, url);
        if referer {
            r = r.header(reqwest::header::REFERER, &self.cfg.manager_url);
        }
        if let Some(u) = &self.cfg.username {
            r = r.basic_auth(u, self.password.as_deref());
        }
        r
    }

    /// Send a request to the manager and return the body of a 2xx answer.
    pub(super) async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<String> {
        let resp = req.send().await.map_err(|e| {
            eyre!(
                "cannot reach Apache's balancer-manager ({what}): {}; is Apache running and \
                 is manager_url `{}` right?",
                crate::load::error_chain(&e),
                self.cfg.manager_url
            )
        })?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| {
            eyre!(
                "Apache's balancer-manager ({what}) answered HTTP {status} but the body could \
                 not be read: {}",
                crate::load::error_chain(&e)
            )
        })?;
        if !status.is_success() {
            let hint = match status.as_u16() {
                401 => {
                    "the manager wants basic auth: set `username` and `password_env` or \
                     `password_file` (or check them)"
                }
                403 => "the manager's `Require` must allow the address cutover connects from",
                404 => "manager_url must be the `SetHandler balancer-manager` location",
                _ => "see Apache's error log",
            };
            let excerpt: String = body.chars().take(200).collect();
            bail!(
                "Apache's balancer-manager answered HTTP {status} ({what}): {:?}; {hint}",
                excerpt.trim()
            );
        }
        Ok(body)
    }

    pub(super) async fn read_all(&self) -> Result<Vec<Balancer>> {
        let body = self
            .send(
                "reading the balancers",
                self.request(reqwest::Method::GET, &self.xml_url, true),
            )
            .await?;
        parse_xml(&body)
    }

    pub(super) async fn read_one(&self, balancer: &str) -> Result<Balancer> {
        let url = balancer_url(&self.cfg.manager_url, balancer);
        let body = self
            .send(
                &format!("reading balancer://{balancer}"),
                self.request(reqwest::Method::GET, &url, true),
            )
            .await?;
        let all = parse_xml(&body)?;
        all.into_iter()
            .find(|b| b.name == balancer)
            .ok_or_else(|| self.no_balancer(balancer, &[]))
    }

    pub(super) fn no_balancer(
        &self,
        balancer: &str,
        have: &[Balancer],
    ) -> color_eyre::eyre::Report {
        let names: Vec<_> = have
            .iter()
            .map(|b| format!("balancer://{}", b.name))
            .collect();
        eyre!(
            "Apache has no balancer `balancer://{balancer}`{}; check the router's \
             live_balancer/preview_balancer and the <Proxy balancer://...> sections, and that \
             the balancer-manager is in the same server (not another <VirtualHost>) as the \
             balancer: each virtual host has its own copy of the balancers",
            if names.is_empty() {
                String::new()
            } else {
                format!(" (it has {})", names.join(", "))
            }
        )
    }

    /// Whether `BalancerPersist` is on, from the manager's HTML page.
    pub(super) async fn read_persist(&self) -> Option<bool> {
        let body = self
            .send(
                "reading the manager page",
                self.request(reqwest::Method::GET, &self.cfg.manager_url, false),
            )
            .await
            .ok()?;
        if body.contains("will NOT be persisted") {
            Some(false)
        } else if body.contains("will be persisted") {
            Some(true)
        } else {
            None
        }
    }

    /// Change one member's flags, read it back, and retry once with a fresh nonce when the
    /// change did not happen and the nonce had changed. Returns the balancer as re-read.
    pub(super) async fn apply(
        &self,
        balancer: &str,
        worker: &str,
        set: &[(MemberFlag, bool)],
        nonce: &str,
        fault: Fault,
    ) -> Result<Balancer> {
        let fields: Vec<(String, String)> = set
            .iter()
            .map(|(f, on)| {
                let v = if *on { "1" } else { "0" };
                (format!("w_status_{}", f.letter()), v.to_string())
            })
            .collect();
        let done = |w: &Worker| set.iter().all(|(f, on)| w.status.has(*f) == *on);
        let after = self
            .post_member(
                balancer,
                worker,
                &describe(set),
                &fields,
                done,
                nonce,
                fault,
            )
            .await?;
        self.remember(balancer, worker, set);
        Ok(after)
    }

    /// Post `fields` for one member with the balancer's nonce and the Referer, read the
    /// balancer back until `done` holds for the member, and retry once with a fresh nonce
    /// when it does not and the nonce had changed. Returns the balancer as re-read.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn post_member(
        &self,
        balancer: &str,
        worker: &str,
        change: &str,
        fields: &[(String, String)],
        done: impl Fn(&Worker) -> bool,
        nonce: &str,
        fault: Fault,
    ) -> Result<Balancer> {
        let mut nonce = nonce.to_string();
        let mut retried = false;
        loop {
            let (used, referer) = fault.request(&nonce, retried);
            let form = change_form(balancer, worker, &used, fields);
            let req = self
                .request(reqwest::Method::POST, &self.cfg.manager_url, referer)
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form);
            let what = format!("{change} on {worker} in balancer://{balancer}");
            self.send(&what, req).await?;
            let after = self.read_one(balancer).await.wrap_err_with(|| {
                format!("Apache took the change ({what}) but it could not be read back")
            })?;
            let Some(w) = after.worker(worker) else {
                let have: Vec<_> = after.workers.iter().map(|w| w.url.as_str()).collect();
                bail!(
                    "Apache answered HTTP 200 to {what}, but balancer://{balancer} has no member \
                     `{worker}` (it has: {}), so nothing changed. Map the slot to one of these \
                     with a [[member]] entry, or fix the BalancerMember URL",
                    have.join(", ")
                );
            };
            if done(w) {
                return Ok(after);
            }
            if !retried && after.nonce != used {
                retried = true;
                nonce = after.nonce.clone();
                continue;
            }
            bail!(
                "Apache answered HTTP 200 to {what}, but the member still shows `{}` (load \
                 factor {:.2}){}: nothing changed. Apache's balancer-manager ignores a change \
                 without an error when the Referer's host is not the one it is reached by \
                 (AH10187 in its error log), when the nonce is wrong, when a value is out of \
                 range, or when the worker is unknown. Check Apache's error log and that \
                 manager_url uses the host name Apache is reached by",
                w.status_text,
                f64::from(w.lf) / 100.0,
                if retried {
                    " even after a retry with the fresh nonce"
                } else {
                    ""
                }
            );
        }
    }

    pub(super) fn remember(&self, balancer: &str, worker: &str, set: &[(MemberFlag, bool)]) {
        if let Ok(mut m) = self.memory.lock() {
            let e = m
                .set
                .entry((balancer.to_string(), worker.to_string()))
                .or_insert_with(|| (BTreeMap::new(), SystemTime::now()));
            for (f, on) in set {
                e.0.insert(*f, *on);
            }
            e.1 = SystemTime::now();
        }
    }

    /// Apply changes in order; when one fails, undo the ones made (last first) and say
    /// whether that worked.
    pub(super) async fn apply_all(
        &self,
        mut nonces: BTreeMap<String, String>,
        changes: Vec<Change>,
    ) -> Result<()> {
        let mut done: Vec<Done> = Vec::new();
        for (bal, worker, set, undo) in changes {
            let nonce = nonces.get(&bal).cloned().unwrap_or_default();
            match self.apply(&bal, &worker, &set, &nonce, Fault::None).await {
                Ok(after) => {
                    nonces.insert(bal.clone(), after.nonce);
                    done.push(Done {
                        balancer: bal,
                        worker,
                        undo,
                    });
                }
                Err(e) => {
                    let undone = self.undo(&mut nonces, done).await;
                    return Err(e.wrap_err(undone));
                }
            }
        }
        Ok(())
    }

    pub(super) async fn undo(
        &self,
        nonces: &mut BTreeMap<String, String>,
        done: Vec<Done>,
    ) -> String {
        if done.is_empty() {
            return "nothing was changed".into();
        }
        let mut failed = Vec::new();
        for d in done.into_iter().rev() {
            let nonce = nonces.get(&d.balancer).cloned().unwrap_or_default();
            match self
                .apply(&d.balancer, &d.worker, &d.undo, &nonce, Fault::None)
                .await
            {
                Ok(after) => {
                    nonces.insert(d.balancer.clone(), after.nonce);
                }
                Err(e) => failed.push(format!("{} in balancer://{}: {e}", d.worker, d.balancer)),
            }
        }
        crate::router::undo_outcome(&failed, "the changes already made were undone", |f| {
            format!("undoing the changes already made failed too, check the balancer-manager: {f}")
        })
    }
}

/// The form of one member change: `b`, `w`, `nonce` and the fields (`w_status_X=0|1`,
/// `w_lf=25.00`).
fn change_form(balancer: &str, worker: &str, nonce: &str, fields: &[(String, String)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("b", balancer)
        .append_pair("w", worker)
        .append_pair("nonce", nonce);
    for (k, v) in fields {
        form.append_pair(k, v);
    }
    form.finish()
}
