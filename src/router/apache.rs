//! The `apache` driver: mod_proxy_balancer's balancer-manager over HTTP, and flag files for
//! the maintenance redirect of seed 004 (`RewriteCond FLAG -f`).
//!
//! What it is built on, measured on Debian's Apache 2.4 (docs/apache.md has the commands):
//! - `MANAGER?xml=1` (or `?b=NAME&xml=1`) lists the balancers, each with its nonce, and each
//!   member (worker) with its status flags (`Init Dis`, `Init Drn Ok`...) and its busy count.
//! - A change is one POST per member: `b`, `w` (the exact worker URL), `nonce`,
//!   `w_status_D|N|S|H=0|1`. Apache needs a `Referer` whose host matches, or it ignores every
//!   parameter (AH10187).
//! - A wrong nonce, a missing Referer or an unknown worker still answer 200 and change
//!   nothing. So every change is read back; when it did not happen and the nonce had changed
//!   (Apache restarted), it is sent once more with the fresh nonce; otherwise it fails.
//! - Without `BalancerPersist On` a (graceful) restart returns the members to the config's
//!   states; `observe()` compares with what this driver last set and says so in a note.
//!
//! Members map to slots (and nodes) by `[[member]]` entries (URL or route), or by default
//! when a member's URL is the slot's address (or one of its nodes' addresses).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use serde::Deserialize;

use crate::config::{Environment, Slot};
use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute};
use crate::router::{BoxFuture, Router, Target, Verb, no_such_slot};
use crate::timefmt::serde_duration;
mod xml;
use xml::*;
mod flags;
use flags::*;
pub use xml::parse_balancer_manager;

/// The request header the Apache config sets on a redirected request (the loop guard).
pub const REDIRECTED_HEADER: &str = "X-Cutover-Redirected";
/// The response header the Apache config sets while maintenance is served (`redirect`/`page`).
pub const MAINTENANCE_HEADER: &str = "X-Cutover-Maintenance";
/// The request header that reaches the server's own backend during maintenance.
pub const BYPASS_HEADER: &str = "X-Cutover-Bypass";

fn default_timeout() -> Duration {
    Duration::from_secs(3)
}
fn default_bypass() -> String {
    "cutover_bypass".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The router's name in its environment (defaults to the kind).
    #[serde(default)]
    pub name: Option<String>,
    /// This router's own public URL, when it has a frontend of its own (a fleet of proxies
    /// behind DNS): verify probes it as well as the environment's `public_url`.
    #[serde(default)]
    pub public_url: Option<String>,
    /// The balancer-manager page, e.g. `http://127.0.0.1:8080/balancer-manager`. The host
    /// must be the one Apache is reached by: it is also sent as the Referer.
    pub manager_url: String,
    /// The balancer behind the public URL: `live` for `balancer://live`.
    pub live_balancer: String,
    /// The balancer behind the preview URL, when there is one.
    #[serde(default)]
    pub preview_balancer: Option<String>,
    /// Basic-auth user for the balancer-manager.
    #[serde(default)]
    pub username: Option<String>,
    /// The environment variable that holds the basic-auth password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// Or a file that holds it (its first line), e.g. a mounted secret.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Timeout of each request to Apache.
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    /// Which balancer members belong to which slot (and node), when the default (a member
    /// whose URL is the slot's or node's address) does not fit.
    #[serde(default, rename = "member")]
    pub members: Vec<Member>,
    /// The file whose existence turns the maintenance redirect on (`RewriteCond FILE -f`).
    #[serde(default)]
    pub maintenance_flag: Option<PathBuf>,
    /// The slot the Apache config's redirect sends traffic to.
    #[serde(default)]
    pub maintenance_to: Option<String>,
    /// The file whose existence turns the 503 maintenance page on.
    #[serde(default)]
    pub maintenance_page_flag: Option<PathBuf>,
    /// The redirect flags of the servers this one redirects to: while one of them exists,
    /// turning this redirect on is refused (it would leave no serving node).
    #[serde(default)]
    pub maintenance_peer_flags: Vec<PathBuf>,
    /// A URL served by this Apache; after each maintenance change cutover checks that its
    /// answers carry (or no longer carry) `X-Cutover-Maintenance`.
    #[serde(default)]
    pub maintenance_verify_url: Option<String>,
    /// The cookie name the Apache config lets through to this server during maintenance.
    #[serde(default = "default_bypass")]
    pub bypass_cookie: String,
    /// How long a member's `busy` and `elected` counts must stand still before what `busy`
    /// still counts is taken as left over by Apache, not as requests in flight. Apache
    /// updates `busy` without atomics, so under concurrent load it can keep 1–4 with no
    /// request running (docs/apache.md, "Busy").
    #[serde(default = "default_idle_after", with = "serde_duration")]
    pub idle_after: Duration,
}

fn default_idle_after() -> Duration {
    Duration::from_secs(10)
}

/// One balancer member mapped to a slot (and node): by its worker URL or its route.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub slot: String,
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
}

fn is_http(u: &str) -> bool {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    rest.is_some_and(|r| !r.is_empty() && !r.starts_with('/'))
}

fn balancer_name(s: &str) -> &str {
    s.strip_prefix("balancer://")
        .unwrap_or(s)
        .trim_end_matches('/')
}

impl Config {
    pub fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        if !is_http(&self.manager_url) || self.manager_url.contains('?') {
            return Err(format!(
                "`manager_url` = `{}` must be the balancer-manager's http(s) URL without a query, \
                 like \"http://127.0.0.1:8080/balancer-manager\"",
                self.manager_url
            ));
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
                (Some(u), None) if is_http(u) => {}
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
            if !is_http(u) {
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

/// A status flag of a balancer member that the balancer-manager can set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberFlag {
    /// `D`: takes no traffic.
    Disabled,
    /// `N`: takes no new traffic; in-flight requests finish.
    Drain,
    /// `S`: stopped.
    Stopped,
    /// `H`: hot standby, used only when no other member can serve.
    HotStandby,
}

impl MemberFlag {
    fn letter(self) -> char {
        match self {
            MemberFlag::Disabled => 'D',
            MemberFlag::Drain => 'N',
            MemberFlag::Stopped => 'S',
            MemberFlag::HotStandby => 'H',
        }
    }
    fn label(self) -> &'static str {
        match self {
            MemberFlag::Disabled => "disabled",
            MemberFlag::Drain => "drain",
            MemberFlag::Stopped => "stopped",
            MemberFlag::HotStandby => "hot-standby",
        }
    }
}

fn describe(set: &[(MemberFlag, bool)]) -> String {
    set.iter()
        .map(|(f, on)| format!("{}{}", if *on { "+" } else { "-" }, f.label()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A deliberately broken change request, for the tests that check how the driver reports
/// what Apache does with one. Not for use outside tests.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Send the POST without a Referer.
    NoReferer,
    /// Send a nonce Apache never issued, on every attempt.
    WrongNonce,
    /// Send a nonce Apache never issued on the first attempt only (as after a restart).
    StaleNonceOnce,
}

const BOGUS_NONCE: &str = "00000000-0000-0000-0000-000000000000";

/// A slot as the driver maps members to it.
#[derive(Debug, Clone)]
struct SlotMap {
    name: String,
    address: String,
    /// (node name, normalized address)
    nodes: Vec<(String, String)>,
}

/// Who a member belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    slot: String,
    node: Option<String>,
}

#[derive(Debug, Default)]
struct Memory {
    /// What this driver last set, per (balancer, worker URL): each flag and when.
    set: BTreeMap<(String, String), (BTreeMap<MemberFlag, bool>, SystemTime)>,
    /// The last nonce seen per balancer (it changes when Apache restarts without persist).
    nonces: BTreeMap<String, String>,
    /// Whether `BalancerPersist` is on, as the manager page says.
    persist: Option<bool>,
    /// Per (balancer, worker URL): how its busy and elected counts moved.
    busy: BTreeMap<(String, String), BusyTrack>,
}

/// A member's busy and elected counts as last read, since when they stand still, and what
/// of busy is left over.
#[derive(Debug, Clone)]
struct BusyTrack {
    nonce: String,
    busy: u64,
    elected: u64,
    still_since: Instant,
    leftover: u64,
}

impl BusyTrack {
    fn new(nonce: &str, w: &Worker, now: Instant) -> BusyTrack {
        BusyTrack {
            nonce: nonce.to_string(),
            busy: w.busy,
            elected: w.elected,
            still_since: now,
            leftover: 0,
        }
    }

    /// Take a new reading. No request started (`elected` still) and none ended (`busy`
    /// still) for `idle_after`: whatever busy counts then is left over, not in flight.
    /// The leftover never exceeds busy, and a restart (a new nonce) forgets it.
    fn read(&mut self, nonce: &str, w: &Worker, now: Instant, idle_after: Duration) {
        if self.nonce != nonce {
            *self = BusyTrack::new(nonce, w, now);
            return;
        }
        if (self.busy, self.elected) != (w.busy, w.elected) {
            self.busy = w.busy;
            self.elected = w.elected;
            self.still_since = now;
        } else if now.duration_since(self.still_since) >= idle_after {
            self.leftover = w.busy;
        }
        self.leftover = self.leftover.min(w.busy);
    }
}

pub struct Driver {
    name: String,
    env: String,
    cfg: Config,
    live: String,
    preview: Option<String>,
    password: Option<String>,
    slots: Vec<SlotMap>,
    client: reqwest::Client,
    memory: Mutex<Memory>,
}

/// One planned change: balancer, worker URL, the flags to set, and the flags that undo it.
type Change = (
    String,
    String,
    Vec<(MemberFlag, bool)>,
    Vec<(MemberFlag, bool)>,
);

/// One change already made, and how to undo it.
struct Done {
    balancer: String,
    worker: String,
    undo: Vec<(MemberFlag, bool)>,
}

impl Driver {
    pub fn new(name: String, env: &Environment, cfg: &Config) -> Result<Self> {
        let password = match (&cfg.password_env, &cfg.password_file) {
            (Some(var), _) => Some(std::env::var(var).map_err(|_| {
                eyre!(
                    "router `{name}`: the environment variable `{var}` (password_env) is not \
                     set; export it with the balancer-manager's basic-auth password"
                )
            })?),
            (None, Some(file)) => Some(
                std::fs::read_to_string(file)
                    .wrap_err_with(|| {
                        format!(
                            "router `{name}`: cannot read password_file {}",
                            file.display()
                        )
                    })?
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            ),
            (None, None) => None,
        };
        // No idle connections kept: Apache closes them on a (graceful) restart, and a request
        // sent on one just then fails with "connection closed before message completed".
        let client = crate::http_client()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .pool_max_idle_per_host(0)
            .build()
            .wrap_err("cannot build the HTTP client for Apache's balancer-manager")?;
        let slots = env
            .slots
            .iter()
            .map(|s| SlotMap {
                name: s.name.clone(),
                address: norm_url(&s.address),
                nodes: s
                    .nodes
                    .iter()
                    .map(|n| (n.name.clone(), norm_url(&n.address)))
                    .collect(),
            })
            .collect();
        Ok(Driver {
            live: balancer_name(&cfg.live_balancer).to_string(),
            preview: cfg
                .preview_balancer
                .as_deref()
                .map(|p| balancer_name(p).to_string()),
            name,
            env: env.name.clone(),
            cfg: cfg.clone(),
            password,
            slots,
            client,
            memory: Mutex::new(Memory::default()),
        })
    }

    fn managed(&self) -> Vec<&str> {
        std::iter::once(self.live.as_str())
            .chain(self.preview.as_deref())
            .collect()
    }

    /// The slot (and node) a member belongs to: the first `[[member]]` that matches its URL or
    /// route, else the slot or node whose address is its URL.
    fn owner(&self, w: &Worker) -> Option<Owner> {
        let url = norm_url(&w.url);
        for m in &self.cfg.members {
            let hit = match (&m.url, &m.route) {
                (Some(u), _) => norm_url(u) == url,
                (None, Some(r)) => !w.route.is_empty() && *r == w.route,
                (None, None) => false,
            };
            if hit {
                return Some(Owner {
                    slot: m.slot.clone(),
                    node: m.node.clone(),
                });
            }
        }
        for s in &self.slots {
            if let Some((n, _)) = s.nodes.iter().find(|(_, a)| *a == url) {
                return Some(Owner {
                    slot: s.name.clone(),
                    node: Some(n.clone()),
                });
            }
        }
        self.slots.iter().find(|s| s.address == url).map(|s| Owner {
            slot: s.name.clone(),
            node: None,
        })
    }

    fn belongs(&self, w: &Worker, slot: &str, node: Option<&str>) -> bool {
        match self.owner(w) {
            Some(o) => o.slot == slot && (node.is_none() || o.node.as_deref() == node),
            None => false,
        }
    }

    fn request(
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
    async fn send(&self, what: &str, req: reqwest::RequestBuilder) -> Result<String> {
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

    async fn read_all(&self) -> Result<Vec<Balancer>> {
        let url = format!("{}?xml=1", self.cfg.manager_url);
        let body = self
            .send(
                "reading the balancers",
                self.request(reqwest::Method::GET, &url, true),
            )
            .await?;
        parse_xml(&body)
    }

    async fn read_one(&self, balancer: &str) -> Result<Balancer> {
        let url = format!("{}?b={}&xml=1", self.cfg.manager_url, enc(balancer));
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

    fn no_balancer(&self, balancer: &str, have: &[Balancer]) -> color_eyre::eyre::Report {
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
    async fn read_persist(&self) -> Option<bool> {
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
    async fn apply(
        &self,
        balancer: &str,
        worker: &str,
        set: &[(MemberFlag, bool)],
        nonce: &str,
        fault: Fault,
    ) -> Result<Balancer> {
        let mut nonce = nonce.to_string();
        let mut retried = false;
        loop {
            let used = match fault {
                Fault::WrongNonce => BOGUS_NONCE.to_string(),
                Fault::StaleNonceOnce if !retried => BOGUS_NONCE.to_string(),
                _ => nonce.clone(),
            };
            let mut form = format!("b={}&w={}&nonce={}", enc(balancer), enc(worker), enc(&used));
            for (f, on) in set {
                form.push_str(&format!("&w_status_{}={}", f.letter(), u8::from(*on)));
            }
            let req = self
                .request(
                    reqwest::Method::POST,
                    &self.cfg.manager_url,
                    fault != Fault::NoReferer,
                )
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(form);
            let what = format!("{} on {worker} in balancer://{balancer}", describe(set));
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
            if set.iter().all(|(f, on)| w.status.has(*f) == *on) {
                self.remember(balancer, worker, set);
                return Ok(after);
            }
            if !retried && after.nonce != used {
                retried = true;
                nonce = after.nonce.clone();
                continue;
            }
            bail!(
                "Apache answered HTTP 200 to {what}, but the member still shows `{}`{}: nothing \
                 changed. Apache's balancer-manager ignores a change without an error when the \
                 Referer's host is not the one it is reached by (AH10187 in its error log), \
                 when the nonce is wrong, or when the worker is unknown. Check Apache's error \
                 log and that manager_url uses the host name Apache is reached by",
                w.status_text,
                if retried {
                    " even after a retry with the fresh nonce"
                } else {
                    ""
                }
            );
        }
    }

    fn remember(&self, balancer: &str, worker: &str, set: &[(MemberFlag, bool)]) {
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

    /// Change one member's flags as a test would, with an optional deliberate fault. The
    /// verbs use the same path with `Fault::None`.
    #[doc(hidden)]
    pub async fn change_member(
        &self,
        balancer: &str,
        worker: &str,
        set: &[(MemberFlag, bool)],
        fault: Fault,
    ) -> Result<()> {
        let b = self.read_one(balancer_name(balancer)).await?;
        self.apply(&b.name, worker, set, &b.nonce, fault)
            .await
            .map(|_| ())
    }

    /// Apply changes in order; when one fails, undo the ones made (last first) and say
    /// whether that worked.
    async fn apply_all(
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

    async fn undo(&self, nonces: &mut BTreeMap<String, String>, done: Vec<Done>) -> String {
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
        if failed.is_empty() {
            "the changes already made were undone".into()
        } else {
            format!(
                "undoing the changes already made failed too, check the balancer-manager: {}",
                failed.join("; ")
            )
        }
    }

    fn slot(&self, name: &str) -> Result<&SlotMap> {
        self.slots.iter().find(|s| s.name == name).ok_or_else(|| {
            no_such_slot(name, &self.env, self.slots.iter().map(|s| s.name.as_str()))
        })
    }

    /// Make `to` the only slot in rotation in `balancer`: enable its members first, check
    /// one serves, then disable the other slots' members.
    async fn swap(&self, balancer: &str, to: &str) -> Result<()> {
        self.slot(to)?;
        let bal = self.read_one(balancer).await?;
        let new: Vec<&Worker> = bal
            .workers
            .iter()
            .filter(|w| self.belongs(w, to, None))
            .collect();
        if new.is_empty() {
            let have: Vec<_> = bal.workers.iter().map(|w| w.url.as_str()).collect();
            bail!(
                "balancer://{balancer} has no member for slot `{to}` (members: {}); add a \
                 BalancerMember with the slot's address, or map one with a [[member]] entry",
                have.join(", ")
            );
        }
        let mut nonces = BTreeMap::from([(bal.name.clone(), bal.nonce.clone())]);
        // 1. Enable the new slot's members.
        let enable: Vec<Change> = new
            .iter()
            .filter(|w| w.status.disabled || w.status.drain)
            .map(|w| {
                (
                    bal.name.clone(),
                    w.url.clone(),
                    vec![(MemberFlag::Disabled, false), (MemberFlag::Drain, false)],
                    vec![
                        (MemberFlag::Disabled, w.status.disabled),
                        (MemberFlag::Drain, w.status.drain),
                    ],
                )
            })
            .collect();
        self.apply_all(nonces.clone(), enable.clone())
            .await
            .wrap_err_with(|| format!("enabling `{to}` in balancer://{balancer} failed"))?;
        // 2. The new slot must really take traffic before the old one is disabled.
        let now = self.read_one(balancer).await?;
        nonces.insert(now.name.clone(), now.nonce.clone());
        let serving = now
            .workers
            .iter()
            .any(|w| self.belongs(w, to, None) && w.status.serving());
        if !serving {
            let undone = self.revert(nonces, &enable).await;
            let states: Vec<_> = now
                .workers
                .iter()
                .filter(|w| self.belongs(w, to, None))
                .map(|w| format!("{} `{}`", w.url, w.status_text))
                .collect();
            bail!(
                "no member of `{to}` in balancer://{balancer} can take traffic ({}): a swap \
                 does not clear Stopped or Hot-standby; {undone}",
                states.join(", ")
            );
        }
        // 3. Disable the other slots' members (members that belong to no slot are left alone).
        let disable: Vec<Change> = now
            .workers
            .iter()
            .filter(|w| !w.status.disabled && !self.belongs(w, to, None))
            .filter(|w| self.owner(w).is_some())
            .map(|w| {
                (
                    now.name.clone(),
                    w.url.clone(),
                    vec![(MemberFlag::Disabled, true)],
                    vec![(MemberFlag::Disabled, false)],
                )
            })
            .collect();
        if let Err(e) = self.apply_all(nonces.clone(), disable).await {
            let undone = self.revert(nonces, &enable).await;
            return Err(e.wrap_err(format!(
                "disabling the other slots in balancer://{balancer} failed; then {undone}"
            )));
        }
        Ok(())
    }

    /// Undo changes already made, last first. Says what happened, for an error message.
    async fn revert(&self, nonces: BTreeMap<String, String>, made: &[Change]) -> String {
        let back: Vec<Change> = made
            .iter()
            .rev()
            .map(|(b, w, set, undo)| (b.clone(), w.clone(), undo.clone(), set.clone()))
            .collect();
        if back.is_empty() {
            return "nothing was changed".into();
        }
        match self.apply_all(nonces, back).await {
            Ok(()) => "the members it had enabled were put back as they were".into(),
            Err(e) => format!(
                "putting back the members it had enabled failed too ({e:#}); check the \
                 balancer-manager"
            ),
        }
    }

    /// The members of a target in the managed balancers, with their balancer.
    async fn target_members(&self, t: &Target) -> Result<(Vec<Balancer>, Vec<(String, Worker)>)> {
        let slot = self.slot(&t.slot)?;
        if let Some(n) = &t.node
            && !slot.nodes.iter().any(|(x, _)| x == n)
        {
            let known: Vec<_> = slot.nodes.iter().map(|(x, _)| x.as_str()).collect();
            bail!(
                "slot `{}` has no node `{n}` (nodes: {})",
                t.slot,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
        let all = self.read_all().await?;
        let mut out = Vec::new();
        let mut bals = Vec::new();
        for name in self.managed() {
            let b = all
                .iter()
                .find(|b| b.name == name)
                .ok_or_else(|| self.no_balancer(name, &all))?;
            for w in &b.workers {
                if self.belongs(w, &t.slot, t.node.as_deref()) {
                    out.push((b.name.clone(), w.clone()));
                }
            }
            bals.push(b.clone());
        }
        if out.is_empty() {
            bail!(
                "no member of {} belongs to `{t}`; members map to slots by URL (the slot's or \
                 node's address) or by [[member]] entries",
                self.managed()
                    .iter()
                    .map(|b| format!("balancer://{b}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            );
        }
        Ok((bals, out))
    }

    /// Drain (`on`) or undrain the target's members in the managed balancers.
    async fn set_drain(&self, t: &Target, on: bool) -> Result<()> {
        let (bals, members) = self.target_members(t).await?;
        // Never drain the last serving member of the live balancer.
        if on && let Some(live) = bals.iter().find(|b| b.name == self.live) {
            let serving_before = live.workers.iter().filter(|w| w.status.serving()).count();
            let serving_after = live
                .workers
                .iter()
                .filter(|w| {
                    w.status.serving()
                        && !members
                            .iter()
                            .any(|(b, m)| *b == live.name && m.url == w.url)
                })
                .count();
            if serving_before > 0 && serving_after == 0 {
                bail!(
                    "refusing to drain `{t}`: balancer://{} would have no member left to take \
                     new requests. Switch live to another slot first, or undrain another node",
                    live.name
                );
            }
        }
        let nonces = bals
            .iter()
            .map(|b| (b.name.clone(), b.nonce.clone()))
            .collect();
        let changes = members
            .iter()
            .filter(|(_, w)| w.status.drain != on)
            .map(|(b, w)| {
                (
                    b.clone(),
                    w.url.clone(),
                    vec![(MemberFlag::Drain, on)],
                    vec![(MemberFlag::Drain, !on)],
                )
            })
            .collect();
        self.apply_all(nonces, changes).await.wrap_err_with(|| {
            format!(
                "{} `{t}` failed",
                if on { "draining" } else { "undraining" }
            )
        })
    }

    async fn observe_inner(&self) -> Result<RouterState> {
        let all = self.read_all().await?;
        let live = all
            .iter()
            .find(|b| b.name == self.live)
            .ok_or_else(|| self.no_balancer(&self.live, &all))?;
        let preview = match &self.preview {
            Some(p) => Some(
                all.iter()
                    .find(|b| b.name == *p)
                    .ok_or_else(|| self.no_balancer(p, &all))?,
            ),
            None => None,
        };
        let (live, preview) = (
            self.count_in_flight(live),
            preview.map(|p| self.count_in_flight(p)),
        );
        let (live, preview) = (&live, preview.as_ref());
        let managed: Vec<&Balancer> = std::iter::once(live).chain(preview).collect();

        // Apache restarted (or first look): find out again whether changes persist.
        let restarted = {
            let m = self
                .memory
                .lock()
                .map_err(|_| eyre!("driver state poisoned"))?;
            m.persist.is_none()
                || managed
                    .iter()
                    .any(|b| m.nonces.get(&b.name).is_some_and(|n| *n != b.nonce))
        };
        let persist = if restarted {
            let p = self.read_persist().await;
            if let Ok(mut m) = self.memory.lock() {
                m.persist = p;
            }
            p
        } else {
            self.memory.lock().ok().and_then(|m| m.persist)
        };

        let mut st = RouterState::default();
        for s in &self.slots {
            let of = |b: &Balancer| -> Vec<(Worker, Option<String>)> {
                b.workers
                    .iter()
                    .filter_map(|w| {
                        self.owner(w)
                            .filter(|o| o.slot == s.name)
                            .map(|o| (w.clone(), o.node))
                    })
                    .collect()
            };
            let in_live = of(live);
            let in_preview = preview.map(of).unwrap_or_default();
            let admin_from = if in_live.is_empty() {
                &in_preview
            } else {
                &in_live
            };
            let everywhere: Vec<&(Worker, Option<String>)> =
                in_live.iter().chain(&in_preview).collect();
            let nodes = s
                .nodes
                .iter()
                .map(|(n, _)| {
                    let mine = |v: &Vec<(Worker, Option<String>)>| -> Vec<Worker> {
                        v.iter()
                            .filter(|(_, o)| o.as_deref() == Some(n.as_str()))
                            .map(|(w, _)| w.clone())
                            .collect()
                    };
                    let (l, p) = (mine(&in_live), mine(&in_preview));
                    let admin_src = if l.is_empty() { &p } else { &l };
                    let found = !l.is_empty() || !p.is_empty();
                    NodeRoute {
                        name: n.clone(),
                        admin: aggregate(admin_src.iter()),
                        sessions: found.then(|| l.iter().chain(&p).map(|w| w.busy).sum()),
                        check: check_text(admin_src.iter()),
                    }
                })
                .collect();
            let found = !everywhere.is_empty();
            if !found {
                st.problems.push(format!(
                    "slot `{}` has no member in {}: a swap to it will be refused; add a \
                     BalancerMember with the slot's address, or map one with a [[member]] entry",
                    s.name,
                    managed
                        .iter()
                        .map(|b| format!("balancer://{}", b.name))
                        .collect::<Vec<_>>()
                        .join(" or ")
                ));
            }
            st.slots.insert(
                s.name.clone(),
                SlotRoute {
                    admin: aggregate(admin_from.iter().map(|(w, _)| w)),
                    sessions: found.then(|| everywhere.iter().map(|(w, _)| w.busy).sum()),
                    requests: found.then(|| everywhere.iter().map(|(w, _)| w.elected).sum()),
                    errors: None,
                    latency_ms: None,
                    check: check_text(admin_from.iter().map(|(w, _)| w)),
                    nodes,
                },
            );
        }

        let (l, mut notes) = self.in_rotation(live);
        st.live = l;
        st.notes.append(&mut notes);
        if let Some(p) = preview {
            let (p, mut notes) = self.in_rotation(p);
            st.preview = p;
            st.notes.append(&mut notes);
        }

        // Driver-specific drift: what Apache shows vs what this driver last set.
        let set = {
            let m = self
                .memory
                .lock()
                .map_err(|_| eyre!("driver state poisoned"))?;
            m.set.clone()
        };
        for ((bal, worker), (flags, when)) in &set {
            let Some(b) = managed.iter().find(|b| b.name == *bal) else {
                continue;
            };
            let Some(w) = b.worker(worker) else {
                st.notes.push(format!(
                    "drift: member {worker} of balancer://{bal}, which cutover changed at {}, \
                     is gone (the Apache config changed?)",
                    crate::timefmt::clock(*when)
                ));
                continue;
            };
            let differ: Vec<_> = flags
                .iter()
                .filter(|(f, on)| w.status.has(**f) != **on)
                .map(|(f, on)| format!("{} {}", if *on { "set" } else { "cleared" }, f.label()))
                .collect();
            if !differ.is_empty() {
                let why = match persist {
                    Some(false) => {
                        "BalancerPersist is Off, so an Apache restart (even graceful) returned \
                         the member to the config's state; run the operation again, or set \
                         `BalancerPersist On`"
                    }
                    Some(true) => {
                        "someone changed it in the balancer-manager, or Apache's config changed"
                    }
                    None => "Apache restarted, or someone changed it in the balancer-manager",
                };
                st.notes.push(format!(
                    "drift: balancer://{bal} member {worker} ({}) shows `{}`, but cutover {} at \
                     {}: {why}",
                    self.owner(w)
                        .map(|o| match o.node {
                            Some(n) => format!("{}/{n}", o.slot),
                            None => o.slot,
                        })
                        .unwrap_or_else(|| "no slot".into()),
                    w.status_text,
                    differ.join(", "),
                    crate::timefmt::clock(*when)
                ));
            }
        }
        if persist == Some(false) {
            st.notes.push(
                "BalancerPersist is Off: an Apache restart returns every member to the \
                 config's state"
                    .into(),
            );
        }
        for b in &managed {
            for w in &b.workers {
                if self.owner(w).is_none() {
                    st.notes.push(format!(
                        "balancer://{} member {} (`{}`) belongs to no slot",
                        b.name, w.url, w.status_text
                    ));
                }
            }
        }
        if let Ok(mut m) = self.memory.lock() {
            for b in &managed {
                m.nonces.insert(b.name.clone(), b.nonce.clone());
            }
        }

        // Maintenance: the flag files are what Apache's RewriteCond tests on every request.
        let redirect_on = match &self.cfg.maintenance_flag {
            Some(f) => exists(f).await?,
            None => false,
        };
        let page_on = match &self.cfg.maintenance_page_flag {
            Some(f) => exists(f).await?,
            None => false,
        };
        if redirect_on {
            st.maintenance = Some(MaintenanceMode::Redirect {
                to: self.cfg.maintenance_to.clone().unwrap_or_default(),
            });
            if page_on {
                st.notes.push(
                    "both maintenance flags exist; the redirect comes first in the Apache config"
                        .into(),
                );
            }
            for p in &self.cfg.maintenance_peer_flags {
                if exists(p).await? {
                    st.notes.push(format!(
                        "the peer is in maintenance too ({} exists): the loop guard ({}) serves \
                         redirected requests from the peer's own backend",
                        p.display(),
                        REDIRECTED_HEADER
                    ));
                }
            }
        } else if page_on {
            st.maintenance = Some(MaintenanceMode::Page);
        }
        if st.maintenance.is_some()
            && let Some(note) = self.bypass_note().await
        {
            st.notes.push(note);
        }
        Ok(st)
    }

    /// While maintenance is on: whether the bypass really reaches this server's own backend,
    /// tried on `maintenance_verify_url` with one request without the cookie (it must get
    /// the maintenance) and one with it (it must not). Never claimed untried.
    async fn bypass_note(&self) -> Option<String> {
        let url = self.cfg.maintenance_verify_url.as_deref()?;
        let marker = |cookie: Option<String>| {
            let mut req = self.client.get(url);
            if let Some(c) = cookie {
                req = req.header(reqwest::header::COOKIE, c);
            }
            async move {
                let r = req.send().await.map_err(|e| crate::load::error_chain(&e))?;
                Ok::<_, String>(
                    r.headers()
                        .get(MAINTENANCE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string),
                )
            }
        };
        let cookie = format!("{}=1", self.cfg.bypass_cookie);
        let (plain, bypass) = tokio::join!(marker(None), marker(Some(cookie.clone())));
        Some(match (plain, bypass) {
            (Ok(Some(_)), Ok(None)) => format!(
                "maintenance bypass: a request with the cookie `{cookie}` reached this \
                 server's own backend ({url} answered it without {MAINTENANCE_HEADER})"
            ),
            (Ok(Some(_)), Ok(Some(m))) => format!(
                "no maintenance bypass: a request with the cookie `{cookie}` got the \
                 maintenance too ({url} answered it with {MAINTENANCE_HEADER}: {m}); the \
                 Apache config's maintenance rule has no `RewriteCond %{{HTTP_COOKIE}}` for \
                 `{}` (see docs/apache.md)",
                self.cfg.bypass_cookie
            ),
            (Ok(None), _) => format!(
                "maintenance bypass not checked: {url} answered without {MAINTENANCE_HEADER}, \
                 so it is not under this maintenance"
            ),
            (Err(e), _) | (_, Err(e)) => {
                format!("maintenance bypass not checked: {url} did not answer ({e})")
            }
        })
    }

    /// The balancer with each member's busy count turned into requests in flight: Apache's
    /// count less what it left over (see `idle_after` and [`BusyTrack`]).
    fn count_in_flight(&self, b: &Balancer) -> Balancer {
        let mut b = b.clone();
        let now = Instant::now();
        let Ok(mut m) = self.memory.lock() else {
            return b;
        };
        for w in &mut b.workers {
            let t = m
                .busy
                .entry((b.name.clone(), w.url.clone()))
                .or_insert_with(|| BusyTrack::new(&b.nonce, w, now));
            t.read(&b.nonce, w, now, self.cfg.idle_after);
            w.leftover = t.leftover;
            w.busy = w.busy.saturating_sub(t.leftover);
        }
        b
    }

    /// The slot a balancer sends to: the one whose members are in rotation.
    fn in_rotation(&self, b: &Balancer) -> (Option<String>, Vec<String>) {
        let mut slots: Vec<String> = b
            .workers
            .iter()
            .filter(|w| w.status.in_rotation())
            .filter_map(|w| self.owner(w).map(|o| o.slot))
            .collect();
        slots.sort();
        slots.dedup();
        match slots.len() {
            0 => (
                None,
                vec![format!("balancer://{} has no member in rotation", b.name)],
            ),
            1 => (slots.pop(), vec![]),
            _ => (
                None,
                vec![format!(
                    "balancer://{} sends to several slots: {}",
                    b.name,
                    slots.join(", ")
                )],
            ),
        }
    }

    async fn maintenance_inner(&self, on: bool, mode: &MaintenanceMode) -> Result<()> {
        let redirect = self.cfg.maintenance_flag.as_deref();
        let page = self.cfg.maintenance_page_flag.as_deref();
        if !on {
            for f in redirect.iter().chain(page.iter()) {
                remove_flag(f).await?;
            }
            return self.verify_maintenance(None).await;
        }
        let (flag, other, want) = match mode {
            MaintenanceMode::Redirect { to } => {
                let Some(flag) = redirect else {
                    bail!(
                        "router `{}` has no `maintenance_flag`: add it (and the RewriteCond \
                         from docs/apache.md) to redirect maintenance traffic",
                        self.name
                    );
                };
                let configured = self.cfg.maintenance_to.as_deref().unwrap_or_default();
                if to != configured {
                    bail!(
                        "this Apache's maintenance redirect goes to `{configured}` \
                         (maintenance_to), not `{to}`; change the redirect balancer in the \
                         Apache config and `maintenance_to` together"
                    );
                }
                for p in &self.cfg.maintenance_peer_flags {
                    if exists(p).await? {
                        bail!(
                            "refusing to redirect: the server this one redirects to is itself in \
                             maintenance ({} exists), so no node would be left serving. Turn \
                             its maintenance off first",
                            p.display()
                        );
                    }
                }
                (flag, page, "redirect")
            }
            MaintenanceMode::Page => {
                let Some(flag) = page else {
                    bail!(
                        "router `{}` has no `maintenance_page_flag`: add it (and the RewriteCond \
                         from docs/apache.md) to serve the maintenance page",
                        self.name
                    );
                };
                (flag, redirect, "page")
            }
        };
        let had_other = match other {
            Some(o) => exists(o).await?,
            None => false,
        };
        let note = format!(
            "cutover router `{}`: maintenance {want} since {}\n",
            self.name,
            crate::timefmt::rfc3339(SystemTime::now())
        );
        create_flag(flag, &note).await?;
        if let Some(o) = other {
            remove_flag(o).await?;
        }
        if let Err(e) = self.verify_maintenance(Some(want)).await {
            let _ = remove_flag(flag).await;
            if let (Some(o), true) = (other, had_other) {
                let _ = create_flag(o, &note).await;
            }
            return Err(e.wrap_err(format!(
                "maintenance {want} did not take effect; {} was removed again",
                flag.display()
            )));
        }
        Ok(())
    }

    /// When `maintenance_verify_url` is set, wait (up to `timeout`) until its answers carry
    /// `X-Cutover-Maintenance: WANT` (or no such header).
    async fn verify_maintenance(&self, want: Option<&str>) -> Result<()> {
        let Some(url) = &self.cfg.maintenance_verify_url else {
            return Ok(());
        };
        let deadline = Instant::now() + self.cfg.timeout;
        let mut last;
        loop {
            match self.client.get(url).send().await {
                Ok(r) => {
                    let got = r
                        .headers()
                        .get(MAINTENANCE_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    if got.as_deref() == want {
                        return Ok(());
                    }
                    last = format!(
                        "HTTP {} with {MAINTENANCE_HEADER}: {}",
                        r.status().as_u16(),
                        got.as_deref().unwrap_or("(none)")
                    );
                }
                Err(e) => last = crate::load::error_chain(&e),
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!(
            "{url} answered {last}, not {}, within {}: the Apache config does not test this \
             flag file (see docs/apache.md for the RewriteCond), or Apache cannot see the file",
            match want {
                Some(w) => format!("{MAINTENANCE_HEADER}: {w}"),
                None => format!("without {MAINTENANCE_HEADER}"),
            },
            crate::timefmt::millis(self.cfg.timeout)
        )
    }
}

impl Router for Driver {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "apache"
    }
    fn supports(&self, verb: Verb) -> bool {
        match verb {
            Verb::SetPreview => self.preview.is_some(),
            Verb::Maintenance => {
                self.cfg.maintenance_flag.is_some() || self.cfg.maintenance_page_flag.is_some()
            }
            Verb::Observe | Verb::SwitchLive | Verb::Drain | Verb::Undrain => true,
            Verb::Weights => false,
        }
    }
    fn observe(&self) -> BoxFuture<'_, Result<RouterState>> {
        Box::pin(self.observe_inner())
    }
    fn switch_live<'a>(&'a self, to: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let live = self.live.clone();
            self.swap(&live, to).await
        })
    }
    fn set_preview<'a>(&'a self, slot: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Some(p) = self.preview.clone() else {
                bail!(
                    "router `{}` has no `preview_balancer`; add one (a second <Proxy \
                     balancer://...> behind the preview URL) to set the preview slot",
                    self.name
                );
            };
            self.swap(&p, slot).await
        })
    }
    fn drain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.set_drain(t, true))
    }
    fn undrain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.set_drain(t, false))
    }
    fn maintenance<'a>(&'a self, on: bool, mode: &'a MaintenanceMode) -> BoxFuture<'a, Result<()>> {
        Box::pin(self.maintenance_inner(on, mode))
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    const XML: &str = "<?xml version='1.0' encoding='UTF-8' ?>
<httpd:manager xmlns:httpd='http://httpd.apache.org'>
  <httpd:balancers>
    <httpd:balancer>
      <httpd:name>balancer://live</httpd:name>
      <httpd:nonce>a940d02b</httpd:nonce>
      <httpd:workers>
        <httpd:worker>
          <httpd:name>http://127.0.0.1:19001</httpd:name>
          <httpd:status>Init Drn Ok </httpd:status>
          <httpd:elected>3</httpd:elected>
          <httpd:route>blue</httpd:route>
          <httpd:busy>2</httpd:busy>
        </httpd:worker>
        <httpd:worker>
          <httpd:name>http://127.0.0.1:19002</httpd:name>
          <httpd:status>Init Dis </httpd:status>
          <httpd:route>green</httpd:route>
          <httpd:busy>0</httpd:busy>
        </httpd:worker>
      </httpd:workers>
    </httpd:balancer>
  </httpd:balancers>
</httpd:manager>";

    #[test]
    fn the_manager_xml_is_read() {
        let b = parse_xml(XML).expect("parses");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].name, "live");
        assert_eq!(b[0].nonce, "a940d02b");
        let w = &b[0].workers;
        assert_eq!(w[0].url, "http://127.0.0.1:19001");
        assert_eq!(w[0].route, "blue");
        assert_eq!((w[0].busy, w[0].elected), (2, 3));
        assert!(w[0].status.drain && w[0].status.in_rotation() && !w[0].status.serving());
        assert_eq!(w[0].status.admin(), AdminState::Drain);
        assert!(w[1].status.disabled && !w[1].status.in_rotation());
        assert_eq!(w[1].status.admin(), AdminState::Disabled);
    }

    #[test]
    fn an_html_answer_is_explained() {
        let e = parse_xml("<html><title>Balancer Manager</title>").expect_err("not xml");
        assert!(e.to_string().contains("AH10187"), "{e}");
    }

    fn worker(url: &str, route: &str) -> Worker {
        Worker {
            url: url.into(),
            route: route.into(),
            status_text: "Init Ok".into(),
            status: Status::default(),
            busy: 0,
            elected: 0,
            leftover: 0,
        }
    }

    #[test]
    fn a_busy_count_that_stands_still_with_no_new_request_is_left_over() {
        let t0 = Instant::now();
        let idle = Duration::from_secs(10);
        let at = |s| t0 + Duration::from_secs(s);
        let w = |busy, elected| Worker {
            busy,
            elected,
            ..worker("http://h:1", "")
        };
        let mut t = BusyTrack::new("n1", &w(3, 100), t0);
        t.read("n1", &w(3, 100), at(5), idle);
        assert_eq!(t.leftover, 0, "still for less than idle_after: in flight");
        t.read("n1", &w(2, 100), at(6), idle);
        t.read("n1", &w(2, 100), at(15), idle);
        assert_eq!(t.leftover, 0, "a request ended 9 s ago");
        t.read("n1", &w(2, 100), at(16), idle);
        assert_eq!(t.leftover, 2, "nothing moved for 10 s: left over");
        // New requests count on top of it; when busy falls below it, so does the leftover.
        t.read("n1", &w(4, 102), at(17), idle);
        assert_eq!(t.leftover, 2);
        t.read("n1", &w(1, 102), at(18), idle);
        assert_eq!(t.leftover, 1);
        // A restart (new nonce) forgets it.
        t.read("n2", &w(1, 0), at(19), idle);
        assert_eq!(t.leftover, 0);
    }

    #[test]
    fn members_map_to_slots_and_nodes() {
        let src = r#"
[[environment]]
name = "shop"
[[environment.slot]]
name = "blue"
address = "http://10.0.0.1:9001/"
[[environment.slot]]
name = "green"
address = "http://10.0.0.2:9001"
nodes = [{ name = "g1", address = "http://10.0.0.21:9001" }, { name = "g2", address = "http://10.0.0.22:9001" }]
[[environment.router]]
kind = "apache"
manager_url = "http://127.0.0.1:8080/balancer-manager"
live_balancer = "balancer://live"
[[environment.router.member]]
slot = "green"
node = "g2"
route = "second"
[[environment.router.member]]
slot = "blue"
url = "http://blue.internal:80"
"#;
        let c = crate::config::parse(src, Path::new("t.toml")).expect("valid");
        let env = &c.environments[0];
        let crate::router::RouterConfig::Apache(cfg) = &env.routers[0] else {
            panic!("apache")
        };
        let d = Driver::new("apache".into(), env, cfg).expect("driver");
        assert_eq!(d.live, "live");
        let own = |url: &str, route: &str| {
            d.owner(&worker(url, route))
                .map(|o| format!("{}/{}", o.slot, o.node.unwrap_or_default()))
        };
        // By default: the slot's address (trailing slash and case do not matter)...
        assert_eq!(own("http://10.0.0.1:9001", "").as_deref(), Some("blue/"));
        // ...or a node's address.
        assert_eq!(
            own("HTTP://10.0.0.21:9001/", "").as_deref(),
            Some("green/g1")
        );
        // [[member]] entries, by route or URL, come first.
        assert_eq!(
            own("http://10.9.9.9:1", "second").as_deref(),
            Some("green/g2")
        );
        assert_eq!(
            own("http://blue.internal:80/", "x").as_deref(),
            Some("blue/")
        );
        assert_eq!(own("http://10.9.9.9:1", "").as_deref(), None);
        // A member entry naming a node the slot does not have is refused.
        let e = crate::config::parse(
            &src.replace("node = \"g2\"", "node = \"g9\""),
            Path::new("t.toml"),
        )
        .expect_err("bad node");
        assert!(e.to_string().contains("`member.node` = `g9`"), "{e}");
    }

    #[test]
    fn form_values_are_encoded() {
        assert_eq!(enc("http://a:1/x y"), "http%3A%2F%2Fa%3A1%2Fx%20y");
    }
}
