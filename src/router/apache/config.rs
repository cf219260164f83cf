//! The `apache` router table and its validation.

use super::*;

/// How the live slot is picked (docs/apache.md, "Which mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One `live` balancer whose members are enabled and disabled through the
    /// balancer-manager (and canary weights by load factor).
    #[default]
    Manager,
    /// A `balancer://SLOT` per slot, the live one picked by `RewriteCond FLAG_DIR/live=SLOT -f`
    /// on every request: a swap is one atomic rename.
    File,
}

fn default_bypass() -> String {
    "cutover_bypass".into()
}

crate::router::router_table! {
    pub struct Config {
        /// The balancer-manager page, e.g. `http://127.0.0.1:8080/balancer-manager`. The host
        /// must be the one Apache is reached by: it is also sent as the Referer.
        pub manager_url: String,
        /// `"manager"` (the default) or `"file"`.
        #[serde(default)]
        pub mode: Mode,
        /// file mode: the directory of the `live=SLOT` and `next=SLOT` flag files the
        /// RewriteConds test (absolute, on the Apache host).
        pub flag_dir: Option<PathBuf>,
        /// manager mode: the balancer behind the public URL: `live` for `balancer://live`.
        #[serde(default)]
        pub live_balancer: String,
        /// The balancer behind the preview URL, when there is one.
        pub preview_balancer: Option<String>,
        /// Basic-auth user for the balancer-manager.
        pub username: Option<String>,
        /// The environment variable that holds the basic-auth password.
        pub password_env: Option<String>,
        /// Or a file that holds it (its first line), e.g. a mounted secret.
        pub password_file: Option<PathBuf>,
        /// Timeout of each request to Apache.
        #[serde(default = "crate::router::secs::<3>", with = "serde_duration")]
        pub timeout: Duration,
        /// Which balancer members belong to which slot (and node), when the default (a member
        /// whose URL is the slot's or node's address) does not fit.
        #[serde(default, rename = "member")]
        pub members: Vec<Member>,
        /// The file whose existence turns the maintenance redirect on (`RewriteCond FILE -f`).
        pub maintenance_flag: Option<PathBuf>,
        /// The slot the Apache config's redirect sends traffic to.
        pub maintenance_to: Option<String>,
        /// The file whose existence turns the 503 maintenance page on.
        pub maintenance_page_flag: Option<PathBuf>,
        /// The redirect flags of the servers this one redirects to: while one of them exists,
        /// turning this redirect on is refused (it would leave no serving node).
        #[serde(default)]
        pub maintenance_peer_flags: Vec<PathBuf>,
        /// A URL served by this Apache; after each maintenance change cutover checks that its
        /// answers carry (or no longer carry) `X-Cutover-Maintenance`.
        pub maintenance_verify_url: Option<String>,
        /// The cookie name the Apache config lets through to this server during maintenance.
        #[serde(default = "default_bypass")]
        pub bypass_cookie: String,
        /// How long a member's `busy` and `elected` counts must stand still before what `busy`
        /// still counts is taken as left over by Apache, not as requests in flight. Apache
        /// updates `busy` without atomics, so under concurrent load it can keep 1–4 with no
        /// request running (docs/apache.md, "Busy").
        #[serde(default = "crate::router::secs::<10>", with = "serde_duration")]
        pub idle_after: Duration,
    }
}

/// One balancer member mapped to a slot (and node): by its worker URL or its route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub slot: String,
    pub node: Option<String>,
    pub url: Option<String>,
    pub route: Option<String>,
}

/// An http(s) URL with a host, parsed by the `url` crate.
pub(super) fn http_url(u: &str) -> Option<url::Url> {
    let url = url::Url::parse(u.trim()).ok()?;
    (matches!(url.scheme(), "http" | "https") && url.host_str().is_some_and(|h| !h.is_empty()))
        .then_some(url)
}

/// A worker URL as Apache shows it (`http://10.0.0.1:9001`, perhaps with a path), in the
/// form it is compared in: case, a default port and a trailing `/` do not matter. A slot's
/// [`Address`] is already in that form ([`Address::url`]).
pub(super) fn worker_url(u: &str) -> Option<url::Url> {
    let mut url = http_url(u)?;
    let path = url.path().trim_end_matches('/').to_string();
    url.set_path(&path);
    Some(url)
}

pub(super) fn balancer_name(s: &str) -> &str {
    s.strip_prefix("balancer://")
        .unwrap_or(s)
        .trim_end_matches('/')
}

impl Config {
    pub fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        if http_url(&self.manager_url).is_none_or(|u| u.query().is_some()) {
            return Err(format!(
                "`manager_url` = `{}` must be the balancer-manager's http(s) URL without a query, \
                 like \"http://127.0.0.1:8080/balancer-manager\"",
                self.manager_url
            ));
        }
        match (self.mode, &self.flag_dir) {
            (Mode::Manager, Some(_)) => {
                return Err("`flag_dir` is for mode = \"file\"; remove it or set the mode".into());
            }
            (Mode::Manager, None) => {}
            (Mode::File, None) => {
                return Err(
                    "mode = \"file\" needs `flag_dir`: the directory of the live=SLOT flag files \
                     the Apache config's RewriteConds test"
                        .into(),
                );
            }
            (Mode::File, Some(d)) if !d.is_absolute() => {
                return Err(format!(
                    "`flag_dir` = `{}` must be an absolute path (Apache's RewriteCond -f tests \
                     the same path)",
                    d.display()
                ));
            }
            (Mode::File, Some(_)) => {
                if !self.live_balancer.is_empty() || self.preview_balancer.is_some() {
                    return Err(
                        "`live_balancer`/`preview_balancer` are for mode = \"manager\": in file \
                         mode each slot has its own balancer://SLOT, picked by flag files"
                            .into(),
                    );
                }
                return self.validate_common(slots);
            }
        }
        if balancer_name(&self.live_balancer).is_empty() {
            return Err("`live_balancer` must name a balancer, like \"live\"".into());
        }
        if let Some(p) = &self.preview_balancer
            && (balancer_name(p).is_empty()
                || balancer_name(p) == balancer_name(&self.live_balancer))
        {
            return Err(format!(
                "`preview_balancer` = `{p}` must name a balancer other than `live_balancer`"
            ));
        }
        self.validate_common(slots)
    }

    /// What both modes check: credentials, timeouts, members, maintenance flags.
    fn validate_common(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        if (self.password_env.is_some() || self.password_file.is_some()) && self.username.is_none()
        {
            return Err("`password_env` and `password_file` need `username`".into());
        }
        if self.password_env.is_some() && self.password_file.is_some() {
            return Err("give `password_env` or `password_file`, not both".into());
        }
        if self.timeout.is_zero() {
            return Err("`timeout` must be more than zero".into());
        }
        if self.idle_after.is_zero() {
            return Err("`idle_after` must be more than zero".into());
        }
        let slot = |name: &str, field: &str| -> std::result::Result<&Slot, String> {
            slots.iter().find(|s| s.name == name).ok_or_else(|| {
                let known: Vec<_> = slots.iter().map(|s| s.name.as_str()).collect();
                format!(
                    "`{field}` = `{name}` is not a slot of this environment (slots: {})",
                    known.join(", ")
                )
            })
        };
        for m in &self.members {
            let s = slot(&m.slot, "member.slot")?;
            if let Some(n) = &m.node
                && !s.nodes.iter().any(|x| &x.name == n)
            {
                return Err(format!(
                    "`member.node` = `{n}` is not a node of slot `{}`",
                    m.slot
                ));
            }
            match (&m.url, &m.route) {
                (Some(u), None) if worker_url(u).is_some() => {}
                (Some(u), None) => {
                    return Err(format!(
                        "`member.url` = `{u}` must be the worker's http(s) URL as Apache shows it"
                    ));
                }
                (None, Some(r)) if !r.is_empty() => {}
                _ => {
                    return Err(format!(
                        "a [[member]] of slot `{}` needs exactly one of `url` or `route`",
                        m.slot
                    ));
                }
            }
        }
        match (&self.maintenance_flag, &self.maintenance_to) {
            (Some(_), Some(to)) => {
                slot(to, "maintenance_to")?;
            }
            (Some(_), None) => {
                return Err(
                    "`maintenance_flag` needs `maintenance_to`: the slot the Apache config's \
                     redirect sends traffic to"
                        .into(),
                );
            }
            (None, Some(_)) => {
                return Err("`maintenance_to` needs `maintenance_flag`".into());
            }
            (None, None) => {}
        }
        if !self.maintenance_peer_flags.is_empty() && self.maintenance_flag.is_none() {
            return Err("`maintenance_peer_flags` needs `maintenance_flag`".into());
        }
        for f in self
            .maintenance_flag
            .iter()
            .chain(&self.maintenance_page_flag)
            .chain(&self.maintenance_peer_flags)
        {
            if !f.is_absolute() {
                return Err(format!(
                    "maintenance flag `{}` must be an absolute path (Apache's RewriteCond -f \
                     tests the same path)",
                    f.display()
                ));
            }
        }
        if let Some(u) = &self.maintenance_verify_url {
            if http_url(u).is_none() {
                return Err(format!(
                    "`maintenance_verify_url` = `{u}` is not an http(s) URL"
                ));
            }
            if self.maintenance_flag.is_none() && self.maintenance_page_flag.is_none() {
                return Err(
                    "`maintenance_verify_url` needs `maintenance_flag` or `maintenance_page_flag`"
                        .into(),
                );
            }
        }
        if self.bypass_cookie.is_empty() || self.bypass_cookie.contains([';', '=', ' ']) {
            return Err(format!(
                "`bypass_cookie` = `{}` must be a cookie name",
                self.bypass_cookie
            ));
        }
        Ok(())
    }
}
