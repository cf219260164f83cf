//! The `apache` driver: mod_proxy_balancer's balancer-manager over HTTP, and flag files for
//! the maintenance redirect of seed 004 (`RewriteCond FLAG -f`). In `mode = "file"` flag
//! files pick the live slot's balancer too (`files`).
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
use crate::router::{Driven, Proxy, Target, Verb, no_such_slot, server_verbs};
use crate::timefmt::serde_duration;
mod xml;
use xml::*;
mod flags;
use flags::*;
pub use xml::parse_balancer_manager;
mod change;
mod config;
pub use config::{Config, Member, Mode};
use config::{balancer_name, worker_url};
mod files;
mod maintenance;
mod manager;
mod observe;
mod weights;

/// The request header the Apache config sets on a redirected request (the loop guard).
pub const REDIRECTED_HEADER: &str = "X-Cutover-Redirected";
/// The response header the Apache config sets while maintenance is served (`redirect`/`page`).
pub const MAINTENANCE_HEADER: &str = "X-Cutover-Maintenance";
/// The request header that reaches the server's own backend during maintenance.
pub const BYPASS_HEADER: &str = "X-Cutover-Bypass";

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

#[cfg(feature = "fault-injection")]
mod fault;
#[cfg(feature = "fault-injection")]
pub use fault::Fault;

/// How a change request is sent. Without the test hooks (feature `fault-injection`) there is
/// one way: with the balancer's nonce and the Referer.
#[cfg(not(feature = "fault-injection"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
}

#[cfg(not(feature = "fault-injection"))]
impl Fault {
    /// The nonce to send, and whether to send the Referer.
    fn request(self, nonce: &str, _retried: bool) -> (String, bool) {
        (nonce.to_string(), true)
    }
}

/// A slot as the driver maps members to it.
#[derive(Debug, Clone)]
struct SlotMap {
    name: String,
    /// The slot's address as worker URLs are compared ([`worker_url`]).
    address: url::Url,
    /// (node name, its address as compared)
    nodes: Vec<(String, url::Url)>,
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

/// The apache router: a [`Driven`] [`Apache`].
pub type Driver = Driven<Apache>;

pub struct Apache {
    name: String,
    env: String,
    cfg: Config,
    live: String,
    preview: Option<String>,
    password: Option<String>,
    slots: Vec<SlotMap>,
    /// The `[[member]]` entries' URLs as compared ([`worker_url`]), one per entry.
    member_keys: Vec<Option<url::Url>>,
    /// `MANAGER?xml=1`: every balancer.
    xml_url: String,
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

impl Apache {
    /// The balancers whose members the driver reads and drains: `live` (and `preview`), or in
    /// file mode one per slot.
    fn managed(&self) -> Vec<&str> {
        if self.file_mode() {
            return self.slots.iter().map(|s| s.name.as_str()).collect();
        }
        std::iter::once(self.live.as_str())
            .chain(self.preview.as_deref())
            .collect()
    }

    /// The slot (and node) a member belongs to: the first `[[member]]` that matches its URL or
    /// route, else the slot or node whose address is its URL.
    fn owner(&self, w: &Worker) -> Option<Owner> {
        let url = w.key.as_ref();
        for (m, key) in self.cfg.members.iter().zip(&self.member_keys) {
            let hit = match (key, &m.route) {
                (Some(k), _) => url == Some(k),
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
            if let Some((n, _)) = s.nodes.iter().find(|(_, a)| Some(a) == url) {
                return Some(Owner {
                    slot: s.name.clone(),
                    node: Some(n.clone()),
                });
            }
        }
        self.slots
            .iter()
            .find(|s| Some(&s.address) == url)
            .map(|s| Owner {
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
}

impl Proxy for Apache {
    const KIND: &'static str = "apache";
    type Config = Config;
    fn new(name: &str, env: EnvSlots<'_>, cfg: &Config) -> Result<Self> {
        let name = name.to_string();
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
                address: s.address.url().clone(),
                nodes: s
                    .nodes
                    .iter()
                    .map(|n| (n.name.clone(), n.address.url().clone()))
                    .collect(),
            })
            .collect();
        Ok(Apache {
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
            member_keys: cfg
                .members
                .iter()
                .map(|m| m.url.as_deref().and_then(worker_url))
                .collect(),
            xml_url: format!("{}?xml=1", cfg.manager_url),
            client,
            memory: Mutex::new(Memory::default()),
        })
    }
    fn supports(&self, verb: Verb) -> bool {
        match verb {
            Verb::SetPreview => self.preview.is_some() || self.file_mode(),
            Verb::Maintenance => {
                self.cfg.maintenance_flag.is_some() || self.cfg.maintenance_page_flag.is_some()
            }
            Verb::Observe | Verb::SwitchLive | Verb::Drain | Verb::Undrain => true,
            Verb::Weights => self.preview.is_some() && !self.file_mode(),
            Verb::Pause => false,
        }
    }
    async fn observe(&self) -> Result<RouterState> {
        if self.file_mode() {
            return self.observe_files().await;
        }
        self.observe_inner().await
    }
    async fn switch_live(&self, to: &str) -> Result<()> {
        if self.file_mode() {
            return self.swap_flag(files::LIVE_FLAG, to).await;
        }
        self.swap(&self.live, to).await
    }
    async fn set_preview(&self, slot: &str) -> Result<()> {
        if self.file_mode() {
            return self.swap_flag(files::NEXT_FLAG, slot).await;
        }
        let Some(p) = &self.preview else {
            bail!(
                "there is no `preview_balancer`; add one (a second <Proxy balancer://...> behind \
                 the preview URL) to set the preview slot"
            );
        };
        self.swap(p, slot).await
    }
    server_verbs!();
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests;
