//! The `nginx` driver: seed 002's live/next layout on open-source nginx.
//!
//! cutover owns one directory (`dir`). The operator's nginx config includes two kinds of file
//! from it: `upstreams.conf` inside `http {}` (one `upstream` per slot, and for the `realpath`
//! method a `map`), and a route include inside the `location` of the public server and of the
//! preview ("next") server. How "live" points at a slot is the `method`:
//!
//! - `realpath` (the default): `live` and `next` are symlinks to per-slot directories, and nginx
//!   resolves them on every request (`root DIR/live;` + `map $realpath_root ...`). A switch is
//!   one atomic rename of a symlink and needs no reload, so keep-alive clients lose nothing.
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
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use color_eyre::eyre::{Result, WrapErr, bail, eyre};
use serde::Deserialize;

use crate::config::{Environment, Slot};
use crate::model::{AdminState, MaintenanceMode, NodeRoute, RouterState, SlotRoute};
use crate::router::{
    BoxFuture, Router, Server, Target, Upstream, in_context, is_word, maintenance_html,
    temp_sibling, write_atomic,
};
use crate::timefmt::serde_duration;
mod files;
use files::*;

/// How the live and next routes point at a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Symlinks resolved by nginx on every request; switching needs no reload.
    #[default]
    Realpath,
    /// Symlinks to per-slot directories holding the route include; switching reloads.
    Symlink,
    /// Include files rewritten by cutover; switching reloads.
    Include,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Realpath => "realpath",
            Method::Symlink => "symlink",
            Method::Include => "include",
        }
    }
}

/// How a reload is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReloadBy {
    /// Run `reload_command` (default `nginx [nginx_args] -s reload`).
    #[default]
    Command,
    /// Send SIGHUP to the master process named in `pid_file`.
    Signal,
}

fn default_nginx() -> String {
    "nginx".into()
}
fn default_pid_file() -> PathBuf {
    PathBuf::from("/run/nginx.pid")
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_reload_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_retry_after() -> u32 {
    30
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
    /// `realpath` (default), `symlink` or `include`.
    #[serde(default)]
    pub method: Method,
    /// The directory cutover owns: every file and link it writes is in here. Absolute.
    pub dir: PathBuf,
    /// The nginx binary used by the default test and reload commands.
    #[serde(default = "default_nginx")]
    pub nginx: String,
    /// Arguments given to nginx before `-t` / `-s reload`, e.g. `["-p", "/srv/ngx", "-c",
    /// "/srv/ngx/nginx.conf"]`.
    #[serde(default)]
    pub nginx_args: Vec<String>,
    /// The config test, as an argv list. Default: `[nginx, nginx_args..., "-t"]`.
    #[serde(default)]
    pub test_command: Option<Vec<String>>,
    /// The reload, as an argv list. Default: `[nginx, nginx_args..., "-s", "reload"]`.
    #[serde(default)]
    pub reload_command: Option<Vec<String>>,
    /// `command` (default) or `signal` (SIGHUP to the master in `pid_file`).
    #[serde(default)]
    pub reload: ReloadBy,
    /// nginx's pid file: the master process whose workers show that a reload took.
    #[serde(default = "default_pid_file")]
    pub pid_file: PathBuf,
    /// nginx's error log; when given, a failed reload's `[emerg]` lines are in the error.
    #[serde(default)]
    pub error_log: Option<PathBuf>,
    /// Prefix of the upstream names cutover writes (default `cutover_<environment>_`).
    #[serde(default)]
    pub upstream_prefix: Option<String>,
    /// Longest a test or reload command may run.
    #[serde(default = "default_timeout", with = "serde_duration")]
    pub timeout: Duration,
    /// How long to wait for nginx's new workers after a reload before calling it failed.
    #[serde(default = "default_reload_timeout", with = "serde_duration")]
    pub reload_timeout: Duration,
    /// An HTML file served (with status 503) while maintenance is on; a plain page otherwise.
    #[serde(default)]
    pub maintenance_page: Option<PathBuf>,
    /// The Retry-After header of the maintenance answer, in seconds.
    #[serde(default = "default_retry_after")]
    pub retry_after: u32,
}

impl Config {
    pub fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        if !self.dir.is_absolute() {
            return Err(format!(
                "`dir` must be an absolute path (nginx includes files from it), not `{}`",
                self.dir.display()
            ));
        }
        let d = self.dir.to_string_lossy();
        if d.chars()
            .any(|c| matches!(c, '"' | '\'' | '$' | '\\' | ';' | '{' | '}') || c.is_whitespace())
        {
            return Err(format!(
                "`dir` = `{d}` has a character nginx would read as syntax (quote, $, ;, braces or space)"
            ));
        }
        if let Some(p) = &self.upstream_prefix
            && !is_word(p)
        {
            return Err(format!(
                "`upstream_prefix` = `{p}` must be letters, digits, `-`, `_` or `.`"
            ));
        }
        for (field, cmd) in [
            ("test_command", &self.test_command),
            ("reload_command", &self.reload_command),
        ] {
            if let Some(c) = cmd
                && c.first().is_none_or(|p| p.trim().is_empty())
            {
                return Err(format!(
                    "`{field}` must name a program, like [\"nginx\", \"-t\"]"
                ));
            }
        }
        for s in slots {
            if !is_word(&s.name) || s.name.starts_with('_') || s.name.starts_with('.') {
                return Err(format!(
                    "slot `{}`: the nginx driver uses slot names as file and upstream names; use \
                     letters, digits, `-`, `_` or `.`, not starting with `_` or `.`",
                    s.name
                ));
            }
            Upstream::of(s).map_err(|e| format!("slot `{}`: {e}", s.name))?;
        }
        Ok(())
    }
}

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

pub struct Driver {
    name: String,
    env: String,
    cfg: Config,
    slots: Vec<Upstream>,
    prefix: String,
    /// The `map` variable of the realpath method (without `$`).
    route_var: String,
    /// One change at a time: each one reads, writes, tests and reloads as a unit.
    lock: tokio::sync::Mutex<()>,
}

/// The key of the maintenance page in `_maintenance/<live>/`.
const PAGE: &str = "_page";
const MAINT: &str = "_maintenance";

impl Driver {
    pub fn new(name: String, env: &Environment, cfg: &Config) -> Result<Self> {
        cfg.validate(&env.slots)
            .map_err(|e| eyre!("nginx router `{name}`: {e}"))?;
        let slots = Upstream::all(env).map_err(|e| eyre!("nginx router `{name}`: {e}"))?;
        let prefix = cfg
            .upstream_prefix
            .clone()
            .unwrap_or_else(|| format!("cutover_{}_", sanitize(&env.name)));
        Ok(Driver {
            route_var: format!("cutover_{}_route", sanitize(&env.name)),
            name,
            env: env.name.clone(),
            cfg: cfg.clone(),
            slots,
            prefix,
            lock: tokio::sync::Mutex::new(()),
        })
    }

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

    fn header(&self, what: &str) -> String {
        format!(
            "# Written by cutover: {what} of environment `{}` (nginx router `{}`, method {}).\n\
             # cutover rewrites this file; a hand edit shows as drift and is replaced by the next change.\n",
            self.env,
            self.name,
            self.cfg.method.name()
        )
    }

    fn render_upstreams(&self, down: &BTreeSet<(String, String)>, canon_dir: &Path) -> String {
        let mut s = self.header("the upstreams");
        for slot in &self.slots {
            s.push_str(&format!("upstream {} {{\n", self.upstream_name(&slot.name)));
            for srv in &slot.servers {
                let is_down = down.contains(&(slot.name.clone(), srv.addr.clone()));
                s.push_str(&format!(
                    "    server {}{};{}\n",
                    srv.addr,
                    if is_down { " down" } else { "" },
                    if slot.has_nodes {
                        format!("  # node {}", srv.node)
                    } else {
                        String::new()
                    }
                ));
            }
            s.push_str("}\n");
        }
        if self.cfg.method == Method::Realpath {
            // Regex keys: a hash of long paths would need map_hash_bucket_size tuning.
            let d = regex_escape(&canon_dir.to_string_lossy());
            s.push_str(&format!(
                "# nginx resolves the live/next links on every request: the real path of the\n\
                 # location's root names the route.\nmap $realpath_root ${} {{\n    default \"\";\n",
                self.route_var
            ));
            for slot in &self.slots {
                s.push_str(&format!(
                    "    \"~^{d}/{}$\" \"{}\";\n",
                    regex_escape(&slot.name),
                    self.upstream_url(slot)
                ));
            }
            for live in &self.slots {
                let l = regex_escape(&live.name);
                s.push_str(&format!(
                    "    \"~^{d}/{MAINT}/{l}/{PAGE}$\" \"maintenance\";\n"
                ));
                for to in self.slots.iter().filter(|t| t.name != live.name) {
                    s.push_str(&format!(
                        "    \"~^{d}/{MAINT}/{l}/{}$\" \"{}\";\n",
                        regex_escape(&to.name),
                        self.upstream_url(to)
                    ));
                }
            }
            s.push_str("}\n");
        }
        s
    }

    fn page_text(&self) -> Result<String> {
        let page = maintenance_html(self.cfg.maintenance_page.as_deref())?;
        // An nginx string: `$` would start a variable, so it goes in as an HTML entity.
        Ok(page
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "&#36;"))
    }

    fn render_page_answer(&self, indent: &str) -> Result<String> {
        Ok(format!(
            "{indent}add_header Retry-After {} always;\n{indent}return 503 \"{}\";\n",
            self.cfg.retry_after,
            self.page_text()?
        ))
    }

    /// The route include of the symlink and include methods for a plain slot.
    fn render_route(&self, slot: &str) -> Result<String> {
        let info = self.slot(slot)?;
        Ok(format!(
            "# cutover: route={slot}\n{}proxy_pass {};\n",
            self.header("a route"),
            self.upstream_url(info)
        ))
    }

    fn render_maintenance(&self, live: &str, mode: &MaintenanceMode) -> Result<String> {
        let head = self.header("the live route");
        Ok(match mode {
            MaintenanceMode::Page => format!(
                "# cutover: maintenance=page live={live}\n{head}default_type text/html;\n{}",
                self.render_page_answer("")?
            ),
            MaintenanceMode::Redirect { to } => format!(
                "# cutover: maintenance=redirect to={to} live={live}\n{head}proxy_pass {};\n",
                self.upstream_url(self.slot(to)?)
            ),
        })
    }

    /// The static location include of the realpath method.
    fn render_realpath_include(&self, which: Pointer) -> Result<String> {
        let mut s = self.header(match which {
            Pointer::Live => "the live route",
            Pointer::Next => "the preview route",
        });
        s.push_str(&format!(
            "# The `{}` link names the slot; switching it needs no reload.\nroot {};\n",
            which.link_name(),
            self.link(which).display()
        ));
        if which == Pointer::Live {
            s.push_str(&format!(
                "default_type text/html;\nif (${} = maintenance) {{\n{}}}\n",
                self.route_var,
                self.render_page_answer("    ")?
            ));
        }
        s.push_str(&format!("proxy_pass ${};\n", self.route_var));
        Ok(s)
    }

    /// Everything that must be in place whatever the pointers say: the upstreams (keeping the
    /// servers marked down as they are), the static includes and the slot directories.
    fn base_changes(&self, disk: &Disk, down: &BTreeSet<(String, String)>) -> Result<Vec<Change>> {
        let mut v = vec![Change::File(
            self.upstreams_path(),
            self.render_upstreams(down, &disk.canon_dir),
        )];
        match self.cfg.method {
            Method::Realpath => {
                for s in &self.slots {
                    v.push(Change::Dir(self.dir().join(&s.name)));
                    v.push(Change::Dir(self.dir().join(MAINT).join(&s.name).join(PAGE)));
                    for t in self.slots.iter().filter(|t| t.name != s.name) {
                        v.push(Change::Dir(
                            self.dir().join(MAINT).join(&s.name).join(&t.name),
                        ));
                    }
                }
                for p in [Pointer::Live, Pointer::Next] {
                    v.push(Change::File(
                        self.dir().join(p.conf_name()),
                        self.render_realpath_include(p)?,
                    ));
                }
            }
            Method::Symlink => {
                for s in &self.slots {
                    v.push(Change::Dir(self.dir().join(&s.name)));
                    v.push(Change::File(
                        self.dir().join(&s.name).join("route.conf"),
                        self.render_route(&s.name)?,
                    ));
                }
                v.push(Change::Dir(self.dir().join(MAINT)));
            }
            Method::Include => {}
        }
        Ok(v)
    }

    /// The changes that point `which` at `slot` (for live: under `maintenance` if on).
    fn pointer_changes(
        &self,
        which: Pointer,
        slot: &str,
        maintenance: Option<&MaintenanceMode>,
    ) -> Result<Vec<Change>> {
        let maintenance = if which == Pointer::Live {
            maintenance
        } else {
            None
        };
        Ok(match self.cfg.method {
            Method::Realpath => vec![Change::Link(
                self.link(which),
                Self::realpath_target(slot, maintenance),
            )],
            Method::Symlink => match maintenance {
                None => vec![Change::Link(self.link(which), slot.to_string())],
                Some(m) => vec![
                    Change::File(
                        self.dir().join(MAINT).join("route.conf"),
                        self.render_maintenance(slot, m)?,
                    ),
                    Change::Link(self.link(which), MAINT.to_string()),
                ],
            },
            Method::Include => vec![Change::File(
                self.dir().join(which.conf_name()),
                match maintenance {
                    None => self.render_route(slot)?,
                    Some(m) => self.render_maintenance(slot, m)?,
                },
            )],
        })
    }

    /// Write the whole layout for a first start (nginx must be started or reloaded after).
    pub async fn install(&self, live: &str, preview: Option<&str>) -> Result<()> {
        let _g = self.lock.lock().await;
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

    // --- reading back -------------------------------------------------------------------

    fn read_disk(&self) -> Disk {
        let mut disk = Disk {
            canon_dir: std::fs::canonicalize(self.dir()).unwrap_or_else(|_| self.dir().into()),
            ..Disk::default()
        };
        let up_path = self.upstreams_path();
        match std::fs::read_to_string(&up_path) {
            Ok(text) => {
                let parsed = parse_upstreams(&text);
                for slot in &self.slots {
                    let uname = self.upstream_name(&slot.name);
                    let Some(lines) = parsed.get(&uname) else {
                        disk.notes.push(format!(
                            "{} has no upstream `{uname}` for slot {}; the next change writes it",
                            up_path.display(),
                            slot.name
                        ));
                        continue;
                    };
                    disk.present.insert(slot.name.clone());
                    for l in lines {
                        if !slot.servers.iter().any(|s| s.addr == l.addr) {
                            disk.notes.push(format!(
                                "upstream `{uname}` in {} has server {} that slot {} does not list \
                                 (changed by hand?); the next change removes it",
                                up_path.display(),
                                l.addr,
                                slot.name
                            ));
                        }
                        if l.down {
                            disk.down.insert((slot.name.clone(), l.addr.clone()));
                        }
                    }
                    for s in &slot.servers {
                        if !lines.iter().any(|l| l.addr == s.addr) {
                            disk.notes.push(format!(
                                "upstream `{uname}` lacks server {} of slot {}; the next change adds it",
                                s.addr, slot.name
                            ));
                        }
                    }
                }
                if self.render_upstreams(&disk.down, &disk.canon_dir) != text {
                    disk.notes.push(format!(
                        "{} differs from what cutover writes (changed by hand, or the slots \
                         changed); the next change rewrites it",
                        up_path.display()
                    ));
                }
            }
            Err(e) => disk.problems.push(format!(
                "cannot read {}: {e}; nginx is not routed by cutover's files yet: run `cutover \
                 setup {} --live SLOT` and include them in the nginx config (docs/nginx.md)",
                up_path.display(),
                self.env
            )),
        }
        match self.cfg.method {
            Method::Realpath => self.read_realpath(&mut disk),
            Method::Symlink => self.read_symlink(&mut disk),
            Method::Include => self.read_include(&mut disk),
        }
        disk
    }

    fn read_realpath(&self, disk: &mut Disk) {
        for p in [Pointer::Live, Pointer::Next] {
            let conf = self.dir().join(p.conf_name());
            match (
                std::fs::read_to_string(&conf),
                self.render_realpath_include(p),
            ) {
                (Ok(text), Ok(want)) if text != want => disk.notes.push(format!(
                    "{} differs from what cutover writes (changed by hand?); the next change \
                     rewrites it",
                    conf.display()
                )),
                (Err(e), _) => disk
                    .notes
                    .push(format!("cannot read {}: {e}", conf.display())),
                _ => {}
            }
            let link = self.link(p);
            let Some((target, rel)) = self.read_pointer(p, disk) else {
                continue;
            };
            if !link.exists() {
                disk.notes.push(format!(
                    "link {} points to {}, which does not exist: nginx answers 500 on this route",
                    link.display(),
                    target.display()
                ));
            }
            let parts: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
            let known = |n: &str| self.slots.iter().any(|s| s.name == n);
            match (p, parts.as_slice()) {
                (Pointer::Live, [slot]) if known(slot) => disk.live = Some(slot.to_string()),
                (Pointer::Next, [slot]) if known(slot) => disk.preview = Some(slot.to_string()),
                (Pointer::Live, [m, live, what]) if *m == MAINT && known(live) => {
                    disk.live = Some(live.to_string());
                    disk.maintenance = if *what == PAGE {
                        Some(MaintenanceMode::Page)
                    } else if known(what) {
                        Some(MaintenanceMode::Redirect {
                            to: what.to_string(),
                        })
                    } else {
                        disk.notes.push(format!(
                            "link {} points to {rel}, which is not a maintenance state cutover writes",
                            link.display()
                        ));
                        None
                    };
                }
                _ => disk.notes.push(format!(
                    "link {} points to {} (changed by hand?): that is not a slot of {}",
                    link.display(),
                    target.display(),
                    self.env
                )),
            }
        }
    }

    /// Where the `which` link points: as read, and relative to `dir` (links cutover writes
    /// are relative). A missing next link is no news (there may be no preview); any other
    /// link that cannot be read is a note.
    fn read_pointer(&self, which: Pointer, disk: &mut Disk) -> Option<(PathBuf, String)> {
        let link = self.link(which);
        let target = match std::fs::read_link(&link) {
            Ok(t) => t,
            Err(e) => {
                if which == Pointer::Live || e.kind() != std::io::ErrorKind::NotFound {
                    disk.notes
                        .push(format!("cannot read link {}: {e}", link.display()));
                }
                return None;
            }
        };
        let rel = target
            .strip_prefix(self.dir())
            .or_else(|_| target.strip_prefix(&disk.canon_dir))
            .unwrap_or(&target)
            .to_string_lossy()
            .trim_end_matches('/')
            .to_string();
        Some((target, rel))
    }

    fn read_symlink(&self, disk: &mut Disk) {
        for p in [Pointer::Live, Pointer::Next] {
            let link = self.link(p);
            let Some((_, rel)) = self.read_pointer(p, disk) else {
                continue;
            };
            let file = link.join("route.conf");
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => {
                    disk.notes.push(format!(
                        "link {} points to {rel}, but {} cannot be read ({e}): nginx -t would fail",
                        link.display(),
                        file.display()
                    ));
                    continue;
                }
            };
            let route = self.read_route(&file, &text, &mut disk.notes);
            if let Some(Route::Slot(s)) = &route
                && *s != rel
            {
                disk.notes.push(format!(
                    "link {} points to directory {rel}, whose route.conf routes to {s} (changed by hand?)",
                    link.display()
                ));
            }
            self.set_route(disk, p, route);
        }
    }

    fn read_include(&self, disk: &mut Disk) {
        for p in [Pointer::Live, Pointer::Next] {
            let file = self.dir().join(p.conf_name());
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    let route = self.read_route(&file, &text, &mut disk.notes);
                    self.set_route(disk, p, route);
                }
                Err(e) => {
                    if p == Pointer::Live || e.kind() != std::io::ErrorKind::NotFound {
                        disk.notes
                            .push(format!("cannot read {}: {e}", file.display()));
                    }
                }
            }
        }
    }

    fn set_route(&self, disk: &mut Disk, p: Pointer, route: Option<Route>) {
        match (p, route) {
            (Pointer::Live, Some(Route::Slot(s))) => disk.live = Some(s),
            (Pointer::Live, Some(Route::Maintenance { live, mode })) => {
                disk.live = Some(live);
                disk.maintenance = Some(mode);
            }
            (Pointer::Next, Some(Route::Slot(s))) => disk.preview = Some(s),
            (Pointer::Next, Some(Route::Maintenance { live, .. })) => disk.preview = Some(live),
            (_, None) => {}
        }
    }

    /// What a route include (symlink and include methods) does: the marker cutover writes
    /// says what it meant; the directives say what nginx does. Where they disagree, the
    /// directives win and a note says so.
    fn read_route(&self, file: &Path, text: &str, notes: &mut Vec<String>) -> Option<Route> {
        let marker = text
            .lines()
            .find_map(|l| l.strip_prefix("# cutover:"))
            .map(|m| {
                m.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            })
            .unwrap_or_default();
        let meant = if let Some(s) = marker.get("route") {
            Some(Route::Slot(s.clone()))
        } else {
            match (
                marker.get("maintenance").map(String::as_str),
                marker.get("live"),
            ) {
                (Some("page"), Some(live)) => Some(Route::Maintenance {
                    live: live.clone(),
                    mode: MaintenanceMode::Page,
                }),
                (Some("redirect"), Some(live)) => marker.get("to").map(|to| Route::Maintenance {
                    live: live.clone(),
                    mode: MaintenanceMode::Redirect { to: to.clone() },
                }),
                _ => None,
            }
        };
        let expected = match &meant {
            Some(Route::Slot(s)) => self.render_route(s).ok(),
            Some(Route::Maintenance { live, mode }) => self.render_maintenance(live, mode).ok(),
            None => None,
        };
        if expected.as_deref() == Some(text) {
            return meant;
        }
        // Hand-edited or foreign: read the directives.
        let tokens = tokenize(text);
        let proxied = tokens
            .windows(2)
            .find(|w| w[0] == "proxy_pass")
            .map(|w| w[1].clone());
        let returns_503 = tokens.windows(2).any(|w| w[0] == "return" && w[1] == "503");
        let by_upstream = |url: &str| {
            let host = url.split("://").nth(1).unwrap_or(url).trim_end_matches('/');
            self.slots
                .iter()
                .find(|s| {
                    host == self.upstream_name(&s.name) || s.servers.iter().any(|v| v.addr == host)
                })
                .map(|s| s.name.clone())
        };
        let actual = match (&proxied, returns_503) {
            (_, true) => Some(Route::Maintenance {
                live: match &meant {
                    Some(Route::Maintenance { live, .. }) => live.clone(),
                    _ => String::new(),
                },
                mode: MaintenanceMode::Page,
            }),
            (Some(url), false) => match by_upstream(url) {
                Some(slot) => match &meant {
                    Some(Route::Maintenance { live, .. }) => Some(Route::Maintenance {
                        live: live.clone(),
                        mode: MaintenanceMode::Redirect { to: slot },
                    }),
                    _ => Some(Route::Slot(slot)),
                },
                None => {
                    notes.push(format!(
                        "{} proxies to {url}, which is no slot of {} (changed by hand?)",
                        file.display(),
                        self.env
                    ));
                    return None;
                }
            },
            (None, false) => {
                notes.push(format!(
                    "{} neither proxies to a slot nor answers 503 (changed by hand?)",
                    file.display()
                ));
                return None;
            }
        };
        notes.push(format!(
            "{} was changed by hand: it is not what cutover writes{}; cutover reports what \
             its directives do",
            file.display(),
            match &meant {
                Some(Route::Slot(s)) => format!(" for route={s}"),
                Some(Route::Maintenance { live, .. }) => format!(" for maintenance of {live}"),
                None => String::new(),
            }
        ));
        actual
    }

    // --- changing -----------------------------------------------------------------------

    /// Apply changes (skipping those already in place). With `reload`, run the test command
    /// and reload, and check the reload took; on any failure put every touched path back
    /// exactly as it was.
    async fn apply(&self, changes: Vec<Change>, reload: bool) -> Result<()> {
        let changes: Vec<Change> = changes.into_iter().filter(|c| !c.in_place()).collect();
        if changes.is_empty() {
            return Ok(());
        }
        let mut done: Vec<(Change, Entry)> = Vec::new();
        for c in changes {
            let before = Entry::read(c.path());
            if let Err(e) = c.perform() {
                let restored = restore(&done);
                return Err(e).wrap_err_with(|| {
                    format!("cutover could not write its nginx files{restored}")
                });
            }
            done.push((c, before));
        }
        if reload && let Err(e) = self.test_and_reload().await {
            let restored = restore(&done);
            return Err(e.wrap_err(format!(
                "the change was not applied{restored}; nginx still serves what it served before"
            )));
        }
        Ok(())
    }

    fn test_argv(&self) -> Vec<String> {
        self.cfg.test_command.clone().unwrap_or_else(|| {
            let mut v = vec![self.cfg.nginx.clone()];
            v.extend(self.cfg.nginx_args.iter().cloned());
            v.push("-t".into());
            v
        })
    }

    fn reload_argv(&self) -> Vec<String> {
        self.cfg.reload_command.clone().unwrap_or_else(|| {
            let mut v = vec![self.cfg.nginx.clone()];
            v.extend(self.cfg.nginx_args.iter().cloned());
            v.extend(["-s".to_string(), "reload".to_string()]);
            v
        })
    }

    async fn run(&self, argv: &[String]) -> Result<CmdOutput> {
        let shown = argv.join(" ");
        let Some((prog, args)) = argv.split_first() else {
            bail!("an empty command is configured");
        };
        let child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(self.cfg.timeout, child)
            .await
            .map_err(|_| {
                eyre!(
                    "`{shown}` did not finish within {}; it was stopped",
                    humantime::format_duration(self.cfg.timeout)
                )
            })?
            .wrap_err_with(|| {
                format!("cannot run `{shown}`; check the `nginx` path or the command")
            })?;
        let mut text = String::from_utf8_lossy(&out.stderr).trim().to_string();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !stdout.trim().is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(stdout.trim());
        }
        Ok(CmdOutput {
            shown,
            ok: out.status.success(),
            status: out.status.to_string(),
            text,
        })
    }

    fn master_pid(&self) -> Result<u32> {
        let p = &self.cfg.pid_file;
        let s = std::fs::read_to_string(p).wrap_err_with(|| {
            format!(
                "cannot read nginx's pid file {}: is nginx running, and is `pid_file` the path \
                 of nginx's `pid` directive?",
                p.display()
            )
        })?;
        let pid: u32 = s.trim().parse().map_err(|_| {
            eyre!(
                "nginx's pid file {} holds `{}`, not a process id",
                p.display(),
                s.trim()
            )
        })?;
        if !Path::new(&format!("/proc/{pid}")).exists() {
            bail!(
                "nginx is not running: its pid file {} names process {pid}, which does not exist",
                p.display()
            );
        }
        Ok(pid)
    }

    fn log_len(&self) -> u64 {
        self.cfg
            .error_log
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map_or(0, |m| m.len())
    }

    /// `[emerg]`/`[alert]`/`[crit]` lines the error log gained since `from`.
    fn log_errors_since(&self, from: u64) -> Option<String> {
        let p = self.cfg.error_log.as_ref()?;
        let bytes = std::fs::read(p).ok()?;
        let from = usize::try_from(from).ok()?.min(bytes.len());
        let lines: Vec<&str> = std::str::from_utf8(&bytes[from..])
            .ok()?
            .lines()
            .filter(|l| l.contains("[emerg]") || l.contains("[alert]") || l.contains("[crit]"))
            .collect();
        if lines.is_empty() {
            return None;
        }
        let n = lines.len();
        Some(lines[n.saturating_sub(5)..].join("\n"))
    }

    async fn test_and_reload(&self) -> Result<()> {
        let test = self.run(&self.test_argv()).await?;
        if !test.ok {
            bail!(
                "nginx rejected the new config (`{}` {}):\n{}",
                test.shown,
                test.status,
                test.text
            );
        }
        let master = self.master_pid()?;
        // A master that has just started may not have forked its workers yet; the check
        // below needs the old generation to compare with.
        let started = Instant::now();
        let before = loop {
            let now = children_of(master)
                .wrap_err("cannot list nginx's worker processes in /proc to check the reload")?;
            if !now.is_empty() {
                break now;
            }
            if started.elapsed() >= self.cfg.reload_timeout {
                bail!(
                    "nginx's master (pid {master}) has no worker processes; is it starting or \
                     stopping? Nothing was reloaded"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let log_from = self.log_len();
        match self.cfg.reload {
            ReloadBy::Command => {
                let out = self.run(&self.reload_argv()).await?;
                if !out.ok {
                    bail!(
                        "the reload failed (`{}` {}):\n{}",
                        out.shown,
                        out.status,
                        out.text
                    );
                }
            }
            ReloadBy::Signal => {
                let pid =
                    i32::try_from(master).map_err(|_| eyre!("pid {master} is out of range"))?;
                // SAFETY: kill(2) with a pid read from nginx's pid file and SIGHUP.
                if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
                    bail!(
                        "cannot send SIGHUP to nginx's master {master}: {}; run cutover as \
                         nginx's user or configure a reload_command (with sudo)",
                        std::io::Error::last_os_error()
                    );
                }
            }
        }
        let started = Instant::now();
        loop {
            // Took: new workers run, and every old one has stopped accepting (it retitles
            // itself "shutting down" before closing its listeners) or is gone. Until then old
            // workers still accept connections and serve the old config.
            let now = children_of(master).unwrap_or_default();
            if now.iter().any(|p| !before.contains(p))
                && before
                    .iter()
                    .filter(|p| now.contains(p))
                    .all(|p| shutting_down(*p))
            {
                return Ok(());
            }
            if let Some(lines) = self.log_errors_since(log_from) {
                bail!(
                    "nginx did not apply the new config although `nginx -t` passed; its error \
                     log says:\n{lines}"
                );
            }
            if started.elapsed() >= self.cfg.reload_timeout {
                bail!(
                    "nginx did not apply the new config: no new worker process within {} of the \
                     reload, so its master kept the old config (`nginx -s reload` exits 0 even \
                     then). nginx's error log says why (a port in use?){}",
                    humantime::format_duration(self.cfg.reload_timeout),
                    match &self.cfg.error_log {
                        Some(p) => format!(": {}", p.display()),
                        None => "; set `error_log` to see it here".into(),
                    }
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Files whose content nginx has not loaded yet: changed after the current workers started.
    fn unloaded_notes(&self, master: u32, disk: &Disk) -> Vec<String> {
        let Some(loaded_at) = newest_worker_start(master) else {
            return Vec::new();
        };
        let mut paths = vec![self.upstreams_path()];
        match self.cfg.method {
            Method::Realpath | Method::Include => {
                for p in [Pointer::Live, Pointer::Next] {
                    paths.push(self.dir().join(p.conf_name()));
                }
            }
            Method::Symlink => {
                paths.push(self.link(Pointer::Live));
                paths.push(self.link(Pointer::Next));
                for s in &self.slots {
                    paths.push(self.dir().join(&s.name).join("route.conf"));
                }
                if disk.maintenance.is_some() {
                    paths.push(self.dir().join(MAINT).join("route.conf"));
                }
            }
        }
        let mut notes = Vec::new();
        for p in paths {
            let Ok(m) = std::fs::symlink_metadata(&p).and_then(|m| m.modified()) else {
                continue;
            };
            // Process start times have a 10 ms grain; a second of slack avoids false alarms.
            if m > loaded_at + Duration::from_secs(1) {
                notes.push(format!(
                    "{} changed at {} after nginx last loaded its config ({}); nginx still serves \
                     the old content until a reload",
                    p.display(),
                    crate::timefmt::rfc3339(m),
                    crate::timefmt::rfc3339(loaded_at)
                ));
            }
        }
        notes
    }

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
        let _g = self.lock.lock().await;
        let disk = self.read_disk();
        self.check_routable(&disk, slot)?;
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
        self.apply_route(base, pointer).await
    }

    /// Apply the base layout and a pointer change. With realpath the map and includes must
    /// be loaded before the link may point anywhere new; the other methods reload once.
    async fn apply_route(&self, base: Vec<Change>, pointer: Vec<Change>) -> Result<()> {
        match self.cfg.method {
            Method::Realpath => {
                self.apply(base, true).await?;
                self.apply(pointer, false).await
            }
            Method::Symlink | Method::Include => {
                self.apply(base.into_iter().chain(pointer).collect(), true)
                    .await
            }
        }
    }

    async fn set_maintenance(&self, on: bool, mode: &MaintenanceMode) -> Result<()> {
        let _g = self.lock.lock().await;
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
        if on && let MaintenanceMode::Redirect { to } = mode {
            if *to == live {
                bail!("maintenance cannot redirect {live} to itself; pick another slot");
            }
            self.check_routable(&disk, to)?;
        }
        let base = self.base_changes(&disk, &disk.down)?;
        let pointer = self.pointer_changes(Pointer::Live, &live, on.then_some(mode))?;
        self.apply_route(base, pointer).await
    }

    async fn set_down(&self, target: &Target, down: bool) -> Result<()> {
        let _g = self.lock.lock().await;
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
            let nodes = if slot.has_nodes {
                slot.servers
                    .iter()
                    .map(|s| NodeRoute {
                        name: s.node.clone(),
                        admin: admin_of(is_down(s)),
                        sessions: None,
                        check: None,
                    })
                    .collect()
            } else {
                Vec::new()
            };
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

impl Router for Driver {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> &'static str {
        "nginx"
    }
    fn observe(&self) -> BoxFuture<'_, Result<RouterState>> {
        in_context(self, "observe".into(), self.observe_inner())
    }
    fn switch_live<'a>(&'a self, to: &'a str) -> BoxFuture<'a, Result<()>> {
        in_context(
            self,
            format!("make {to} live"),
            self.point(Pointer::Live, to),
        )
    }
    fn set_preview<'a>(&'a self, slot: &'a str) -> BoxFuture<'a, Result<()>> {
        in_context(
            self,
            format!("point the preview at {slot}"),
            self.point(Pointer::Next, slot),
        )
    }
    fn drain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        in_context(self, format!("drain {t}"), self.set_down(t, true))
    }
    fn undrain<'a>(&'a self, t: &'a Target) -> BoxFuture<'a, Result<()>> {
        in_context(self, format!("undrain {t}"), self.set_down(t, false))
    }
    fn maintenance<'a>(&'a self, on: bool, m: &'a MaintenanceMode) -> BoxFuture<'a, Result<()>> {
        in_context(
            self,
            format!("turn maintenance {}", if on { "on" } else { "off" }),
            self.set_maintenance(on, m),
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn upstream_blocks_are_read_back_with_down_flags() {
        let t = "# c\nupstream a { server 127.0.0.1:1; server 127.0.0.1:2 down max_fails=3; }\n\
                 upstream b {\n server \"h:3\" weight=2;  # node x\n}\nmap $x $y { default \"\"; }";
        let u = parse_upstreams(t);
        assert_eq!(
            u["a"],
            vec![
                ServerLine {
                    addr: "127.0.0.1:1".into(),
                    down: false
                },
                ServerLine {
                    addr: "127.0.0.1:2".into(),
                    down: true
                }
            ]
        );
        assert_eq!(u["b"][0].addr, "h:3");
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn tokens_skip_comments_and_unquote() {
        assert_eq!(
            tokenize("return 503 \"a \\\"b\\\" # c\"; # gone\nproxy_pass x;"),
            vec!["return", "503", "a \"b\" # c", ";", "proxy_pass", "x", ";"]
        );
    }
}
