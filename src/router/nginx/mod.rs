//! The `nginx` driver: seed 002's live/next layout on open-source nginx.
//!
//! cutover owns one directory (`dir`). The operator's nginx config includes two kinds of file
//! from it: `upstreams.conf` inside `http {}` (one `upstream` per slot, and for the `realpath`
//! method a `map`), and a route include inside the `location` of the public server and of the
//! preview ("next") server. How "live" points at a slot is the `method`:
//!
//! - `realpath` (the default): `live` and `next` are symlinks to per-slot directories, and nginx
//!   resolves them on every request (`root DIR/...;` + `map $realpath_root ...`). A switch is
//!   one atomic rename of a symlink and needs no reload, so keep-alive clients lose nothing.
//!   The live route resolves one of 100 bucket links that follow `live`; a canary step
//!   re-points buckets at the canary (buckets.rs), again without a reload.
//! - `symlink` (seed 002 exactly): `live`/`next` link to per-slot directories each holding a
//!   route include; a switch renames the link, runs `nginx -t` and reloads.
//! - `include`: `live.conf`/`next.conf` are rewritten (temp file + rename), tested, reloaded.
//!
//! Open-source nginx has no drain state: drain marks servers `down` in `upstreams.conf` and
//! reloads. Every reload is checked: `nginx -s reload` exits 0 even when the master could not
//! apply the new config (a port in use), so the driver waits for new worker processes and,
//! when none come, restores its files exactly and fails. A config that `nginx -t` rejects is
//! never reloaded: the files are restored and nginx's own words are in the error.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use serde::Deserialize;

use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute, Weights};
use crate::model::{EnvSlots, Slot};
use crate::router::{
    DEFAULT_CHANGE_TIMEOUT, Driven, Install, Proxy, Server, Target, Upstream, Verb, is_word,
    maintenance_html, pointer_verbs, temp_sibling, undo_outcome, write_atomic,
};
use crate::timefmt::serde_duration;
mod buckets;
mod config;
pub use config::*;
mod files;
mod read;
mod reload;
mod render;
mod weights;
use files::*;

/// A literal for a PCRE pattern inside an nginx quoted string.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let plain = c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-');
            (!plain).then_some('\\').into_iter().chain([c])
        })
        .collect()
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The nginx router: a [`Driven`] [`Nginx`].
pub type Driver = Driven<Nginx>;

pub struct Nginx {
    name: String,
    env: String,
    cfg: Config,
    slots: Vec<Upstream>,
    prefix: String,
    /// The `map` variable of the realpath method (without `$`).
    route_var: String,
    /// `cutover_<environment>`: the start of the canary split's variables.
    var_base: String,
}

/// The key of the maintenance page in `_maintenance/<live>/`.
const PAGE: &str = "_page";
const MAINT: &str = "_maintenance";

impl Nginx {
    // --- layout -------------------------------------------------------------------------

    fn dir(&self) -> &Path {
        &self.cfg.dir
    }
    fn upstreams_path(&self) -> PathBuf {
        self.dir().join("upstreams.conf")
    }
    fn link(&self, which: Pointer) -> PathBuf {
        self.dir().join(which.link_name())
    }
    /// The file the operator's `location` includes for the live or the next route.
    pub fn include_path(&self, which: Pointer) -> PathBuf {
        match self.cfg.method {
            Method::Realpath | Method::Include => self.dir().join(which.conf_name()),
            Method::Symlink => self.link(which).join("route.conf"),
        }
    }
    /// The file the operator's `http {}` includes.
    pub fn http_include_path(&self) -> PathBuf {
        self.upstreams_path()
    }
    fn slot(&self, name: &str) -> Result<&Upstream> {
        Upstream::find(&self.slots, &self.env, name)
    }
    fn upstream_name(&self, slot: &str) -> String {
        format!("{}{}", self.prefix, slot)
    }
    fn upstream_url(&self, slot: &Upstream) -> String {
        format!("{}://{}", slot.scheme, self.upstream_name(&slot.name))
    }
    /// Where a realpath-method `live` link points for a state.
    fn realpath_target(live: &str, maintenance: Option<&MaintenanceMode>) -> String {
        match maintenance {
            None => live.to_string(),
            Some(MaintenanceMode::Page) => format!("{MAINT}/{live}/{PAGE}"),
            Some(MaintenanceMode::Redirect { to }) => format!("{MAINT}/{live}/{to}"),
        }
    }

    // --- rendering ----------------------------------------------------------------------

    // --- reading back -------------------------------------------------------------------

    fn routed(&self, disk: &Disk, slot: &str) -> Option<&'static str> {
        if disk.live.as_deref() == Some(slot) {
            return Some("live");
        }
        if disk.preview.as_deref() == Some(slot) {
            return Some("the preview");
        }
        if let Some(MaintenanceMode::Redirect { to }) = &disk.maintenance
            && to == slot
        {
            return Some("the maintenance target");
        }
        if disk.split.as_ref().is_some_and(|w| w.canary == slot) {
            return Some("the canary");
        }
        None
    }

    /// A slot may take a route only when its upstream is written and has a server not down.
    fn check_routable(&self, disk: &Disk, slot: &str) -> Result<()> {
        let info = self.slot(slot)?;
        if info
            .servers
            .iter()
            .all(|s| disk.down.contains(&(slot.to_string(), s.addr.clone())))
        {
            bail!(
                "every server of slot {slot} is marked down (drained) in {}; undrain it first",
                self.upstreams_path().display()
            );
        }
        Ok(())
    }

    async fn point(&self, which: Pointer, slot: &str) -> Result<()> {
        let mut disk = self.read_disk();
        // A new live slot takes all the live traffic: the split ends with the switch.
        let mut split = disk.split.clone();
        if which == Pointer::Live && disk.live.as_deref() != Some(slot) {
            split = None;
        }
        self.check_routable(&disk, slot)?;
        if self.cfg.method != Method::Realpath {
            disk.split.clone_from(&split);
        }
        let base = self.base_changes(&disk, &disk.down)?;
        let maintenance = disk.maintenance.clone();
        if let Some(MaintenanceMode::Redirect { to }) = &maintenance
            && which == Pointer::Live
            && to == slot
        {
            bail!(
                "maintenance sends live traffic to {slot}; turn maintenance off before making \
                 {slot} live"
            );
        }
        let pointer = self.pointer_changes(which, slot, maintenance.as_ref())?;
        self.apply_route(base, pointer, split.as_ref()).await
    }

    /// Apply the base layout and a pointer change. With realpath the map and includes must
    /// be loaded before a link may point anywhere new; then the pointer and the bucket links
    /// for `split` move without a reload (the live link first: on a swap the buckets that
    /// follow it move with it). The other methods reload once.
    async fn apply_route(
        &self,
        base: Vec<Change>,
        pointer: Vec<Change>,
        split: Option<&Weights>,
    ) -> Result<()> {
        match self.cfg.method {
            Method::Realpath => {
                self.apply(base, true).await?;
                let links = pointer.into_iter().chain(self.bucket_changes(split));
                self.apply(links.collect(), false).await
            }
            Method::Symlink | Method::Include => {
                self.apply(base.into_iter().chain(pointer).collect(), true)
                    .await
            }
        }
    }

    async fn set_maintenance(&self, on: bool, mode: &MaintenanceMode) -> Result<()> {
        let disk = self.read_disk();
        let Some(live) = disk.live.clone() else {
            bail!(
                "cannot tell which slot is live from {} ({}); switch live to a slot first",
                self.dir().display(),
                disk.problems
                    .iter()
                    .chain(&disk.notes)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        };
        if on {
            self.refuse_during_split(&disk)?;
        }
        if on && let MaintenanceMode::Redirect { to } = mode {
            if *to == live {
                bail!("maintenance cannot redirect {live} to itself; pick another slot");
            }
            self.check_routable(&disk, to)?;
        }
        let base = self.base_changes(&disk, &disk.down)?;
        let pointer = self.pointer_changes(Pointer::Live, &live, on.then_some(mode))?;
        self.apply_route(base, pointer, disk.split.as_ref()).await
    }

    async fn set_drained(&self, target: &Target, down: bool) -> Result<()> {
        let disk = self.read_disk();
        let info = self.slot(&target.slot)?;
        let servers = info.servers_of(target)?;
        let mut new_down = disk.down.clone();
        for s in &servers {
            let key = (info.name.clone(), s.addr.clone());
            if down {
                new_down.insert(key);
            } else {
                new_down.remove(&key);
            }
        }
        if down
            && info
                .servers
                .iter()
                .all(|s| new_down.contains(&(info.name.clone(), s.addr.clone())))
            && let Some(role) = self.routed(&disk, &info.name)
        {
            bail!(
                "refusing to mark every server of {} down: {} is {role}, and nginx would answer \
                 502 for it (open-source nginx has no drain state; cutover drains by marking \
                 servers `down`). Drain one node at a time, or move {role} to another slot first.",
                info.name,
                info.name
            );
        }
        let changes = self.base_changes(&disk, &new_down)?;
        self.apply(changes, true).await
    }

    async fn observe_inner(&self) -> Result<RouterState> {
        let master = self.master_pid()?;
        let disk = self.read_disk();
        let mut state = RouterState {
            live: disk.live.clone(),
            preview: disk.preview.clone(),
            maintenance: disk.maintenance.clone(),
            weights: disk.split.clone(),
            notes: disk.notes.clone(),
            problems: disk.problems.clone(),
            ..RouterState::default()
        };
        state.notes.extend(self.unloaded_notes(master, &disk));
        for slot in &self.slots {
            let is_down = |s: &Server| disk.down.contains(&(slot.name.clone(), s.addr.clone()));
            let admin_of = |down: bool| {
                if !disk.present.contains(&slot.name) {
                    AdminState::Unknown
                } else if down {
                    AdminState::Drain
                } else {
                    AdminState::Ready
                }
            };
            let admin = admin_of(slot.servers.iter().all(is_down));
            let nodes = (slot.servers.iter())
                .filter(|_| slot.has_nodes)
                .map(|s| NodeRoute {
                    name: s.node.clone(),
                    admin: admin_of(is_down(s)),
                    ..NodeRoute::default()
                })
                .collect();
            state.slots.insert(
                slot.name.clone(),
                SlotRoute {
                    admin,
                    nodes,
                    ..SlotRoute::default()
                },
            );
        }
        Ok(state)
    }
}

/// The live route or the preview ("next") route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pointer {
    Live,
    Next,
}

impl Pointer {
    fn link_name(self) -> &'static str {
        match self {
            Pointer::Live => "live",
            Pointer::Next => "next",
        }
    }
    fn conf_name(self) -> &'static str {
        match self {
            Pointer::Live => "live.conf",
            Pointer::Next => "next.conf",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Route {
    Slot(String),
    Maintenance { live: String, mode: MaintenanceMode },
}

impl Proxy for Nginx {
    const KIND: &'static str = "nginx";
    type Config = Config;
    fn new(name: &str, env: EnvSlots<'_>, cfg: &Config) -> Result<Self> {
        let var = sanitize(env.name);
        Ok(Nginx {
            route_var: format!("cutover_{var}_route"),
            var_base: format!("cutover_{var}"),
            prefix: cfg
                .upstream_prefix
                .clone()
                .unwrap_or_else(|| format!("cutover_{var}_")),
            name: name.to_string(),
            env: env.name.to_string(),
            cfg: cfg.clone(),
            slots: Upstream::all(env).map_err(|e| eyre!("nginx router `{name}`: {e}"))?,
        })
    }
    fn change_timeout(&self) -> Duration {
        DEFAULT_CHANGE_TIMEOUT + 2 * (self.cfg.timeout + self.cfg.reload_timeout)
    }
    fn supports(&self, verb: Verb) -> bool {
        match verb {
            Verb::Weights => self.can_split(),
            Verb::Pause => false,
            _ => true,
        }
    }
    pointer_verbs!();
}

impl Install for Nginx {
    /// Write the whole layout for a first start (nginx must be started or reloaded after).
    async fn install(&self, live: &str, preview: Option<&str>) -> Result<()> {
        std::fs::create_dir_all(self.dir())
            .wrap_err_with(|| format!("cannot create {}", self.dir().display()))?;
        let disk = self.read_disk();
        let mut changes = self.base_changes(&disk, &disk.down)?;
        self.slot(live)?;
        changes.extend(self.pointer_changes(Pointer::Live, live, None)?);
        if let Some(p) = preview {
            self.slot(p)?;
            changes.extend(self.pointer_changes(Pointer::Next, p, None)?);
        }
        self.apply(changes, false).await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
