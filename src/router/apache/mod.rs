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

use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute};
use crate::model::{EnvSlots, Slot};
use crate::router::{BoxFuture, Router, Target, Verb, no_such_slot};
use crate::timefmt::serde_duration;
mod xml;
use xml::*;
mod flags;
use flags::*;
pub use xml::parse_balancer_manager;
mod maintenance;
mod manager;
mod observe;

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
    pub fn new<'a>(name: String, env: impl Into<EnvSlots<'a>>, cfg: &Config) -> Result<Self> {
        let env = env.into();
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
                address: norm_url(s.address.as_str()),
                nodes: s
                    .nodes
                    .iter()
                    .map(|n| (n.name.clone(), norm_url(n.address.as_str())))
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
            env: env.name.to_string(),
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
        let d = Driver::new("apache".into(), env.routed(), cfg).expect("driver");
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
