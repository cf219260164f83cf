//! The `embedded` router table and its validation.

use super::*;

fn default_admin() -> String {
    "127.0.0.1:8089".into()
}
fn default_live_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_bypass_cookie() -> String {
    "cutover_bypass".into()
}
fn default_bypass_header() -> String {
    "X-Cutover-Bypass".into()
}
fn default_sticky_cookie() -> String {
    "cutover_slot".into()
}
fn default_upstream_timeout() -> u64 {
    60
}
fn default_node_check_interval() -> u64 {
    2
}
fn default_node_check_fall() -> u32 {
    2
}
fn default_node_check_rise() -> u32 {
    2
}
fn default_pause_timeout() -> u64 {
    30
}
fn default_pause_max_held() -> u64 {
    1000
}

crate::router::router_table! {
    /// An `[[environment.router]]` table with `kind = "embedded"`.
    pub struct Config {
        /// Where the admin API listens (`host:port`); loopback unless `token_env` is set.
        #[serde(default = "default_admin")]
        pub admin: String,
        /// Where the live (public) listener listens.
        #[serde(default = "default_live_listen")]
        pub live_listen: String,
        /// Where the preview (staging / next) listener listens; none when absent.
        pub preview_listen: Option<String>,
        /// Name of an environment variable holding a bearer token the admin API then requires.
        pub token_env: Option<String>,
        /// Where the proxy keeps its state (default `proxy-<env>.json` in `settings.state_dir`).
        pub state_file: Option<PathBuf>,
        /// The live slot on a first start (default: the first slot).
        pub initial_live: Option<String>,
        /// The preview slot on a first start (default: the first slot that is not live).
        pub initial_preview: Option<String>,
        /// Seconds sent in `Retry-After` by the maintenance page.
        #[serde(default = "crate::router::default_retry_after")]
        pub retry_after: u64,
        /// A request with this cookie set to `1` reaches the slot under maintenance.
        #[serde(default = "default_bypass_cookie")]
        pub bypass_cookie: String,
        /// A request with this header (any value but empty or `0`) reaches the slot under maintenance.
        #[serde(default = "default_bypass_header")]
        pub bypass_header: String,
        /// While a canary splits the live traffic, the cookie that pins a client to the slot
        /// it was first sent to (its value is the slot's name); without a split a request that
        /// carries it is routed as any other and the cookie is cleared. `""` turns it off.
        #[serde(default = "default_sticky_cookie")]
        pub sticky_cookie: String,
        /// A request on the live listener with this header (any value but empty or `0`)
        /// reaches the preview slot: testers reach it through the public URL before any
        /// weight moves. Off when absent.
        #[serde(default)]
        pub preview_header: Option<String>,
        /// A request on the live listener with this cookie set to `1` reaches the preview
        /// slot. Off when absent.
        #[serde(default)]
        pub preview_cookie: Option<String>,
        /// Seconds the proxy waits for a slot's response headers before answering 504.
        #[serde(default = "default_upstream_timeout")]
        pub upstream_timeout: u64,
        /// Where the access log goes: a file (appended to) or `-` for stderr; off when absent.
        pub access_log: Option<String>,
        /// Seconds between the proxy's own health checks of each node of a slot with several
        /// (the slot's health path and expected status, on the node); 0 turns them off. A node
        /// that fails `node_check_fall` checks in a row gets no new request while another node
        /// of its slot is up, and is back after `node_check_rise` good ones.
        #[serde(default = "default_node_check_interval")]
        pub node_check_interval: u64,
        /// Failed checks in a row that take a node out.
        #[serde(default = "default_node_check_fall")]
        pub node_check_fall: u32,
        /// Good checks in a row that bring it back.
        #[serde(default = "default_node_check_rise")]
        pub node_check_rise: u32,
        /// Seconds a request waits while the proxy is paused before it gets 503.
        #[serde(default = "default_pause_timeout")]
        pub pause_timeout: u64,
        /// How many requests a pause holds at once; more get 503 at once.
        #[serde(default = "default_pause_max_held")]
        pub pause_max_held: u64,
        /// Seconds an upgraded connection (a WebSocket) may stay open after its slot stopped
        /// taking new requests (a switch, a drain); then it is closed. Never when absent.
        pub upgrade_drain_timeout: Option<u64>,
        /// A TLS listener for live traffic; none when absent.
        pub tls: Option<TlsConfig>,
        /// A TLS listener for preview traffic; none when absent.
        #[serde(default)]
        pub preview_tls: Option<TlsConfig>,
        /// The host names this environment answers on its listeners (`Host`, or SNI for
        /// the certificate), when several environments share a listener address; empty:
        /// every host no other environment on the address names.
        #[serde(default)]
        pub hosts: Vec<String>,
        /// Only requests whose path starts with this (`/blog`: `/blog` and `/blog/...`) come
        /// to this environment on a shared listener; forwarded with the path unchanged.
        #[serde(default)]
        pub path_prefix: Option<String>,
    }
}

/// `tls = { listen = "...", cert = "...", key = "..." }` (or `preview_tls`) on an embedded
/// router.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Where the TLS listener listens (`host:port`); it serves the live slot (`tls`) or the
    /// preview slot (`preview_tls`).
    pub listen: String,
    /// The certificate chain, PEM, leaf first (e.g. Let's Encrypt's `fullchain.pem`).
    pub cert: PathBuf,
    /// The certificate's private key, PEM.
    pub key: PathBuf,
    /// When true, the plain listener (live for `tls`, preview for `preview_tls`) answers
    /// every request with a `308` to HTTPS.
    #[serde(default)]
    pub redirect: bool,
    /// Offer HTTP/2 by ALPN (clients that speak it get it; the slots are reached over
    /// HTTP/1.1 either way). On unless set to false.
    #[serde(default = "yes")]
    pub http2: bool,
}

fn yes() -> bool {
    true
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: None,
            public_url: None,
            admin: default_admin(),
            live_listen: default_live_listen(),
            preview_listen: None,
            token_env: None,
            state_file: None,
            initial_live: None,
            initial_preview: None,
            retry_after: crate::router::default_retry_after(),
            bypass_cookie: default_bypass_cookie(),
            bypass_header: default_bypass_header(),
            sticky_cookie: default_sticky_cookie(),
            preview_header: None,
            preview_cookie: None,
            upstream_timeout: default_upstream_timeout(),
            access_log: None,
            node_check_interval: default_node_check_interval(),
            node_check_fall: default_node_check_fall(),
            node_check_rise: default_node_check_rise(),
            pause_timeout: default_pause_timeout(),
            pause_max_held: default_pause_max_held(),
            upgrade_drain_timeout: None,
            tls: None,
            preview_tls: None,
            hosts: Vec::new(),
            path_prefix: None,
        }
    }
}

impl Config {
    /// Checks that need the environment's slots; the message names the field.
    pub fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
        for (field, v) in [
            ("initial_live", &self.initial_live),
            ("initial_preview", &self.initial_preview),
        ] {
            if let Some(v) = v
                && !names.contains(&v.as_str())
            {
                return Err(format!(
                    "field `{field}`: there is no slot `{v}` in this environment; it has: {}",
                    names.join(", ")
                ));
            }
        }
        let mut addrs: Vec<(&str, SocketAddr)> = Vec::new();
        let listeners = [
            ("admin", Some(&self.admin)),
            ("live_listen", Some(&self.live_listen)),
            ("preview_listen", self.preview_listen.as_ref()),
            ("tls.listen", self.tls.as_ref().map(|t| &t.listen)),
            (
                "preview_tls.listen",
                self.preview_tls.as_ref().map(|t| &t.listen),
            ),
        ];
        for (field, v) in listeners {
            let Some(v) = v else { continue };
            let a: SocketAddr = v.parse().map_err(|_| {
                format!("field `{field}`: `{v}` is not an address like \"127.0.0.1:8080\"")
            })?;
            if a.port() != 0
                && let Some((other, _)) = addrs.iter().find(|(_, b)| *b == a)
            {
                return Err(format!(
                    "field `{field}`: `{v}` is already used by `{other}`; give each listener its own port"
                ));
            }
            addrs.push((field, a));
        }
        if let Some((_, admin)) = addrs.first()
            && !admin.ip().is_loopback()
            && self.token_env.is_none()
        {
            return Err(format!(
                "field `admin`: `{}` is reachable from other machines and no `token_env` is set, so \
                 anyone who reaches it could switch live; set `token_env` or listen on 127.0.0.1",
                self.admin
            ));
        }
        if let Some(t) = &self.token_env
            && (t.is_empty() || t.contains('='))
        {
            return Err(format!(
                "field `token_env`: `{t}` is not an environment variable name"
            ));
        }
        for h in &self.hosts {
            let ok = !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c));
            if !ok {
                return Err(format!(
                    "field `hosts`: `{h}` is not a host name (letters, digits, - _ . ; no scheme, \
                     port or path), e.g. \"shop.example.com\""
                ));
            }
        }
        if let Some(p) = &self.path_prefix
            && (!p.starts_with('/') || p.contains(['?', '#', ' ']))
        {
            return Err(format!(
                "field `path_prefix`: `{p}` is not a path starting with /, e.g. \"/blog\""
            ));
        }
        if self.retry_after == 0 {
            return Err("field `retry_after`: must be at least 1 second".into());
        }
        if self.upstream_timeout == 0 {
            return Err("field `upstream_timeout`: must be at least 1 second".into());
        }
        if self.pause_timeout == 0 {
            return Err("field `pause_timeout`: must be at least 1 second".into());
        }
        if self
            .access_log
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            return Err(
                "field `access_log`: empty; give a file path, \"-\" for stderr, or remove it"
                    .into(),
            );
        }
        let token_char = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
        let cookies = [
            ("bypass_cookie", Some(&self.bypass_cookie)),
            ("preview_cookie", self.preview_cookie.as_ref()),
        ];
        let sticky = Some(&self.sticky_cookie).filter(|c| !c.is_empty());
        for (field, v) in cookies.into_iter().chain([("sticky_cookie", sticky)]) {
            if let Some(v) = v
                && (v.is_empty() || !v.chars().all(token_char))
            {
                return Err(format!(
                    "field `{field}`: `{v}` is not a cookie name (letters, digits, - _ .)"
                ));
            }
        }
        let header_char = |c: char| c.is_ascii_alphanumeric() || c == '-';
        for (field, v) in [
            ("bypass_header", Some(&self.bypass_header)),
            ("preview_header", self.preview_header.as_ref()),
        ] {
            if let Some(v) = v
                && (v.is_empty() || !v.chars().all(header_char))
            {
                return Err(format!(
                    "field `{field}`: `{v}` is not a header name (letters, digits, -)"
                ));
            }
        }
        for s in slots {
            let mut addrs = vec![(None, s.address.as_str())];
            addrs.extend(s.nodes.iter().map(|n| (Some(&n.name), n.address.as_str())));
            for (node, a) in addrs {
                if !a.starts_with("http://") {
                    let what = match node {
                        Some(n) => format!("node `{n}` of slot `{}`", s.name),
                        None => format!("slot `{}`", s.name),
                    };
                    return Err(format!(
                        "{what} has address `{a}`, but the embedded proxy forwards over plain \
                         http:// only; put the slot's plain-http address here"
                    ));
                }
            }
            let mut seen = Vec::new();
            for n in &s.nodes {
                if seen.contains(&&n.name) {
                    return Err(format!(
                        "slot `{}` has two nodes called `{}`; give each node its own name",
                        s.name, n.name
                    ));
                }
                seen.push(&n.name);
            }
        }
        Ok(())
    }

    /// The state file this router uses in `env`: `state_file`, else `proxy-<env>[-<name>].json`
    /// in `state_dir`. Config loading fills `state_file` in from `settings.state_dir`.
    pub fn state_path_in(&self, env: &str, state_dir: &Path) -> PathBuf {
        if let Some(p) = &self.state_file {
            return p.clone();
        }
        // The config allows only safe names; the file name is made safe again here, so the
        // path stays inside the state dir whatever the names are.
        let file = match self.name.as_deref() {
            Some(n) if n != "embedded" => format!("proxy-{env}-{n}.json"),
            _ => format!("proxy-{env}.json"),
        };
        state_dir.join(crate::paths::safe_file_name(&file))
    }

    /// [`Self::state_path_in`] the default state dir.
    pub fn state_path(&self, env: &str) -> PathBuf {
        self.state_path_in(env, &crate::paths::state_dir())
    }
}
