//! Rigs for the driver contract suite (tests/contract.rs): every router kind set up the same
//! way in front of its real proxy, started by the test on loopback in its own temp dir.
//!
//! Every rig has the slots `blue` (live at the start; nodes `n1` and `n2` where the kind can
//! route to nodes) and `green` (the preview where the kind has a preview), and knows how to
//! make the three faults of the contract on its proxy for real: a change by hand on the
//! proxy itself, a proxy that refuses the next change, and a proxy that hangs (SIGSTOP).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cutover::router::{self, Router, Target};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{
    ChildGuard, PidFileGuard, SlotServer, eventually, free_port, wait_port, wait_until,
};

/// The header and the cookie that reach the preview slot through the public URL, where the
/// proxy's documented config has that rule (HAProxy's map setup, nginx, Apache).
pub const PREVIEW_HEADER: &str = "X-Cutover-Preview";
pub const PREVIEW_COOKIE: &str = "cutover_preview";

/// The router kinds and modes the contract runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    HaproxyMap,
    HaproxyServers,
    /// nginx with `method = "include"`.
    Nginx,
    /// nginx with `method = "symlink"`.
    NginxSymlink,
    /// nginx with `method = "realpath"` (the default).
    NginxRealpath,
    Apache,
    /// Apache with `mode = "file"`: flag files pick a balancer per slot.
    ApacheFile,
    CaddyApi,
    CaddyFile,
    Exec,
    /// Two routers in one environment (two HAProxies in the map setup).
    Fleet,
}

impl Kind {
    /// The programs the kind needs (the embedded proxy is cutover itself).
    fn binaries(self) -> &'static [&'static str] {
        match self {
            Kind::Embedded => &[],
            Kind::Exec => &["curl", "jq"],
            Kind::HaproxyMap | Kind::HaproxyServers | Kind::Fleet => &["haproxy"],
            Kind::Nginx | Kind::NginxSymlink | Kind::NginxRealpath => &["nginx"],
            Kind::Apache | Kind::ApacheFile => &["apache2"],
            Kind::CaddyApi | Kind::CaddyFile => &["caddy"],
        }
    }
    /// Whether slot `blue` has the nodes `n1` and `n2` (else one server and no nodes).
    fn has_nodes(self) -> bool {
        !matches!(self, Kind::HaproxyServers | Kind::Apache | Kind::ApacheFile)
    }
}

/// The slot servers of a rig: blue's (node n1), green's, and blue's second node n2.
pub struct Servers {
    pub all: Vec<SlotServer>,
    pub nodes: bool,
}

impl Servers {
    async fn start(nodes: bool) -> Servers {
        let mut specs = vec![("blue", "1.0.0"), ("green", "2.0.0")];
        if nodes {
            specs.push(("blue", "1.0.0"));
        }
        Servers {
            all: crate::common::slots(&specs).await,
            nodes,
        }
    }
    pub fn blue(&self) -> &SlotServer {
        &self.all[0]
    }
    pub fn green(&self) -> &SlotServer {
        &self.all[1]
    }
    pub fn blue2(&self) -> Option<&SlotServer> {
        self.all.get(2)
    }
    /// The `[[environment.slot]]` tables.
    fn toml(&self) -> String {
        let blue = self.blue().url();
        let mut t = format!("[[environment.slot]]\nname = \"blue\"\naddress = \"{blue}\"\n");
        if let Some(n2) = self.blue2() {
            t += &format!(
                "nodes = [{{ name = \"n1\", address = \"{blue}\" }}, {{ name = \"n2\", address = \"{}\" }}]\n",
                n2.url()
            );
        }
        t + &format!(
            "\n[[environment.slot]]\nname = \"green\"\naddress = \"{}\"\n",
            self.green().url()
        )
    }
}

/// One running proxy and what the contract does to it behind cutover's back.
enum Proxy {
    Haproxy {
        guard: ChildGuard,
        admin: u16,
        /// The map (map setup) or the backend (servers setup).
        map: Option<String>,
        /// The directory of the file cutover keeps in sync (the map or the server-state file).
        synced_dir: PathBuf,
    },
    Nginx {
        guard: PidFileGuard,
        pid_file: PathBuf,
        /// The operator's own include: a mistake there makes `nginx -t` refuse.
        extra: PathBuf,
        live_conf: PathBuf,
        reload: Vec<String>,
    },
    Caddy {
        guard: ChildGuard,
        admin: u16,
        /// File mode: the flag directory.
        flags: Option<PathBuf>,
        /// The config of the API mode whose handlers have other @ids (or no file routes).
        refusing: Value,
    },
    Embedded {
        guard: ChildGuard,
        admin: u16,
        /// The directory of the proxy's state file.
        state_dir: PathBuf,
    },
    Apache {
        guard: ChildGuard,
        manager: String,
        /// The members of blue and green (their slot servers' URLs).
        blue: String,
        green: String,
        /// File mode: the flag directory.
        flags: Option<PathBuf>,
    },
}

/// A rig: the environment's config, its routers, the slot servers and the proxies.
pub struct Rig {
    pub kind: Kind,
    /// The whole cutover config (`[settings]` with a state dir in the rig's temp dir).
    pub toml: String,
    pub routers: Vec<Arc<dyn Router>>,
    pub servers: Servers,
    /// Each proxy's public URL (a fleet has two).
    pub public: Vec<String>,
    /// The preview URL, where the kind has one.
    pub preview: Option<String>,
    /// A header that reaches the live slot while maintenance is on, where the proxy has one.
    pub bypass: Option<(&'static str, &'static str)>,
    /// Whether maintenance can redirect the live traffic to another slot.
    pub redirect: bool,
    proxies: Vec<Proxy>,
    dir: TempDir,
}

/// Processes stopped with SIGSTOP, continued when dropped (also when a test panics).
pub struct Stopped(Vec<i32>);

impl Drop for Stopped {
    fn drop(&mut self) {
        for p in &self.0 {
            unsafe { libc::kill(*p, libc::SIGCONT) };
        }
    }
}

impl Rig {
    /// The rig of `kind`, or None (a loud SKIPPED) when its proxy is not installed.
    pub async fn start(test: &str, kind: Kind) -> Option<Rig> {
        let mut found = Vec::new();
        for b in kind.binaries() {
            found.push(crate::common::require_binary(test, b)?);
        }
        let bin = found.into_iter().next().unwrap_or_default();
        let dir = TempDir::new().expect("temp dir");
        // nginx's and Apache's workers run as `nobody` when the tests run as root.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
        let servers = Servers::start(kind.has_nodes()).await;
        let d = dir.path();
        let mut parts = Vec::new();
        match kind {
            Kind::HaproxyMap => parts.push(haproxy(&bin, &d.join("a"), &servers, true, None).await),
            Kind::HaproxyServers => {
                parts.push(haproxy(&bin, &d.join("a"), &servers, false, None).await)
            }
            Kind::Fleet => {
                parts.push(haproxy(&bin, &d.join("a"), &servers, true, Some("edge-a")).await);
                parts.push(haproxy(&bin, &d.join("b"), &servers, true, Some("edge-b")).await);
            }
            Kind::Nginx => parts.push(nginx(&bin, d, &servers, "include").await),
            Kind::NginxSymlink => parts.push(nginx(&bin, d, &servers, "symlink").await),
            Kind::NginxRealpath => parts.push(nginx(&bin, d, &servers, "realpath").await),
            Kind::CaddyApi => parts.push(caddy(&bin, d, &servers, false).await),
            Kind::CaddyFile => parts.push(caddy(&bin, d, &servers, true).await),
            Kind::Embedded => parts.push(embedded(d, &servers, false).await),
            Kind::Exec => parts.push(embedded(d, &servers, true).await),
            Kind::Apache => parts.push(apache(&bin, d, &servers, false).await),
            Kind::ApacheFile => parts.push(apache(&bin, d, &servers, true).await),
        }
        let public: Vec<String> = parts.iter().map(|p| p.public.clone()).collect();
        // Ready when blue answers through every proxy: a port that accepts is not enough (an
        // nginx master listens before its worker is there to answer).
        for u in &public {
            let up = eventually(Duration::from_secs(15), || async {
                crate::common::try_get(u)
                    .await
                    .is_some_and(|(s, slot)| (s, slot.as_str()) == (200, "blue"))
            })
            .await;
            assert!(up, "{kind:?}: {u} does not answer from blue");
        }
        let preview = parts[0].preview.clone();
        let mut toml = format!(
            "[settings]\nstate_dir = \"{}\"\ngate_checks = 1\n\n[[environment]]\nname = \"shop\"\n\
             public_url = \"{}\"\nwatch = \"0s\"\n{}",
            d.join("state").display(),
            public[0],
            if kind == Kind::Fleet {
                "fleet = \"sequential\"\n"
            } else {
                ""
            }
        );
        if let Some(p) = &preview {
            toml += &format!("preview_url = \"{p}\"\n");
        }
        toml += &servers.toml();
        for p in &parts {
            toml += &format!("\n{}", p.router);
        }
        let env = match cutover::config::parse(&toml, Path::new("contract.toml")) {
            Ok(mut c) => c.environments.remove(0),
            Err(e) => panic!("{e}\n{toml}"),
        };
        let routers: Vec<Arc<dyn Router>> = env
            .routers
            .iter()
            .map(|c| router::build(&env, c).unwrap_or_else(|e| panic!("{e:#}\n{toml}")))
            .collect();
        let bypass = matches!(
            kind,
            Kind::Embedded | Kind::Exec | Kind::Apache | Kind::ApacheFile
        )
        .then_some(("X-Cutover-Bypass", "1"));
        Some(Rig {
            kind,
            toml,
            routers,
            servers,
            public,
            preview,
            bypass,
            redirect: !matches!(kind, Kind::HaproxyServers | Kind::Exec),
            proxies: parts.into_iter().map(|p| p.proxy).collect(),
            dir,
        })
    }

    /// What the contract drains: blue's node n2, or where the kind has no nodes, the slot
    /// green (which then serves no public traffic either way).
    pub fn drain_target(&self) -> Target {
        if self.servers.nodes {
            Target::node("blue", "n2")
        } else {
            Target::slot("green")
        }
    }

    /// The slot server the drain target stops.
    pub fn drained_server(&self) -> &SlotServer {
        self.servers.blue2().unwrap_or(self.servers.green())
    }

    /// The proxy the faults are made on: the last one (in a fleet, the second router's).
    fn faulty(&self) -> &Proxy {
        self.proxies.last().expect("a proxy")
    }

    /// Make `to` live on the proxy by hand, behind cutover's back, and wait until the proxy
    /// serves it.
    pub async fn hand_switch(&self, to: &str) {
        let addr = if to == "green" {
            self.servers.green()
        } else {
            self.servers.blue()
        };
        match self.faulty() {
            Proxy::Haproxy { admin, map, .. } => match (map, self.kind) {
                (Some(m), Kind::HaproxyMap | Kind::Fleet) => {
                    let reply = socket(*admin, &format!("set map {m} live be_{to}")).await;
                    assert_eq!(reply.trim(), "", "set map by hand: {reply}");
                }
                _ => {
                    let other = if to == "green" { "blue" } else { "green" };
                    for (server, state) in [(to, "ready"), (other, "maint")] {
                        let reply =
                            socket(*admin, &format!("set server be_app/{server} state {state}"))
                                .await;
                        assert_eq!(reply.trim(), "", "set server by hand: {reply}");
                    }
                }
            },
            Proxy::Nginx {
                live_conf, reload, ..
            } => {
                let link = live_conf.parent().expect("dir");
                if link.is_symlink() {
                    // symlink method: the `live` link is pointed at the other slot's directory.
                    let target = std::fs::read_link(link).expect("live link");
                    let other = target.display().to_string().replace("blue", to);
                    std::fs::remove_file(link).expect("rm link");
                    std::os::unix::fs::symlink(other, link).expect("link");
                } else {
                    std::fs::write(live_conf, format!("proxy_pass {};\n", addr.url()))
                        .expect("edit live.conf");
                }
                run(reload);
            }
            Proxy::Caddy { admin, flags, .. } => match flags {
                Some(f) => std::fs::rename(f.join("live=blue"), f.join(format!("live={to}")))
                    .expect("rename the live flag"),
                None => {
                    caddy_admin(
                        *admin,
                        "PATCH",
                        "/id/shop_live/upstreams",
                        json!([{ "dial": addr.addr.to_string() }]),
                    )
                    .await
                }
            },
            Proxy::Embedded { admin, .. } => {
                let r = cutover::http_client()
                    .build()
                    .expect("client")
                    .post(format!("http://127.0.0.1:{admin}/live"))
                    .body(json!({ "slot": to }).to_string())
                    .send()
                    .await
                    .expect("POST /live");
                assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
            }
            Proxy::Apache { flags: Some(f), .. } => {
                std::fs::rename(f.join("live=blue"), f.join(format!("live={to}")))
                    .expect("rename the live flag")
            }
            Proxy::Apache {
                manager,
                blue,
                green,
                ..
            } => {
                let (on, off) = if to == "green" {
                    (green, blue)
                } else {
                    (blue, green)
                };
                apache_by_hand(manager, "live", on, &[("D", 0)]).await;
                apache_by_hand(manager, "live", off, &[("D", 1)]).await;
            }
        }
        let url = self.public.last().expect("url").clone();
        let served = eventually(Duration::from_secs(10), || {
            let url = url.clone();
            async move { crate::common::get(&url).await.1 == to }
        })
        .await;
        assert!(
            served,
            "the proxy does not serve {to} after the change by hand"
        );
    }

    /// Make the proxy refuse the next change, leaving what it serves alone.
    pub async fn make_refuse(&mut self) {
        match self.proxies.last_mut().expect("a proxy") {
            // The file cutover keeps in sync with HAProxy cannot be written: its directory is
            // a regular file now (a mode would not stop root).
            Proxy::Haproxy { synced_dir, .. } => {
                std::fs::rename(&*synced_dir, synced_dir.with_extension("moved")).expect("mv");
                std::fs::write(&*synced_dir, "not a directory\n").expect("write");
            }
            // A mistake in the operator's own include: `nginx -t` fails.
            Proxy::Nginx { extra, .. } => {
                std::fs::write(extra, "bogus_directive on;\n").expect("break the config")
            }
            // Caddy loads a config that serves the same but has none of the handlers (or file
            // routes) cutover changes.
            Proxy::Caddy {
                admin, refusing, ..
            } => caddy_admin(*admin, "POST", "/load", refusing.clone()).await,
            // The proxy's state file cannot be written (its directory is a regular file now):
            // the proxy saves a change before it applies it, so it refuses every change.
            Proxy::Embedded { state_dir, .. } => {
                std::fs::rename(&*state_dir, state_dir.with_extension("moved")).expect("mv");
                std::fs::write(&*state_dir, "not a directory\n").expect("write");
            }
            // Green's member is stopped by hand on the balancer-manager: it cannot take
            // traffic, so enabling it is refused.
            // (In file mode, green's member of balancer://green.)
            Proxy::Apache {
                manager,
                green,
                flags,
                ..
            } => {
                let b = if flags.is_some() { "green" } else { "live" };
                apache_by_hand(manager, b, green, &[("S", 1)]).await
            }
        }
    }

    /// Stop the proxy's processes (SIGSTOP) until the returned guard is dropped: it accepts
    /// connections (the kernel does) and answers nothing.
    pub fn hang(&self) -> Stopped {
        let pids: Vec<i32> = match self.faulty() {
            Proxy::Haproxy { guard, .. }
            | Proxy::Caddy { guard, .. }
            | Proxy::Embedded { guard, .. } => vec![guard.pid() as i32],
            Proxy::Apache { guard, .. } => vec![-(guard.pid() as i32)],
            Proxy::Nginx { pid_file, .. } => {
                let pid = std::fs::read_to_string(pid_file).expect("nginx.pid");
                vec![pid.trim().parse().expect("pid")]
            }
        };
        for p in &pids {
            assert_eq!(unsafe { libc::kill(*p, libc::SIGSTOP) }, 0, "SIGSTOP {p}");
        }
        // The signal is delivered when the process next runs: wait until it is stopped.
        for p in &pids {
            let stat = format!("/proc/{}/stat", p.abs());
            let stopped = wait_until(Duration::from_secs(10), || {
                std::fs::read_to_string(&stat)
                    .unwrap_or_default()
                    .rsplit(')')
                    .next()
                    .is_some_and(|rest| rest.trim_start().starts_with('T'))
            });
            assert!(stopped, "{p} did not stop");
        }
        Stopped(pids)
    }

    /// Which slot answers on every public URL (each must agree).
    pub async fn public_slot(&self) -> String {
        let mut seen = Vec::new();
        for u in &self.public {
            let (status, slot, body) = crate::common::get(u).await;
            assert_eq!(status, 200, "{u}: {body}");
            seen.push(slot);
        }
        assert!(
            seen.windows(2).all(|w| w[0] == w[1]),
            "the public URLs answer from different slots: {seen:?}"
        );
        seen.remove(0)
    }
}

/// A started proxy's part of the rig.
struct Part {
    /// The `[[environment.router]]` table.
    router: String,
    proxy: Proxy,
    public: String,
    preview: Option<String>,
}

/// Every path below `dir` (links with their targets), for a failure's message.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        match std::fs::read_link(&p) {
            Ok(t) => out.push(format!("{} -> {}", p.display(), t.display())),
            Err(_) if p.is_dir() => out.extend(walk(&p)),
            Err(_) => out.push(p.display().to_string()),
        }
    }
    out
}

fn url(port: u16) -> String {
    format!("http://127.0.0.1:{port}/")
}

fn run(argv: &[String]) {
    let o = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    assert!(
        o.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A command on HAProxy's TCP admin socket: its answer (empty when the socket is not up).
async fn socket(port: u16, cmd: &str) -> String {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    if s.write_all(format!("{cmd}\n").as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out)).await;
    out
}

/// HAProxy in the map setup (one backend a slot, a map picks them) or the servers setup
/// (one backend, a server a slot), in the foreground, stopped by PID.
async fn haproxy(bin: &Path, dir: &Path, s: &Servers, map_setup: bool, name: Option<&str>) -> Part {
    let synced = dir.join("synced");
    std::fs::create_dir_all(&synced).expect("mkdir");
    let d = dir.display();
    let [public, preview, admin] = crate::common::free_ports();
    let (blue, green) = (s.blue().addr, s.green().addr);
    let head = format!(
        "global\n    stats socket ipv4@127.0.0.1:{admin} level admin\n    \
         server-state-file {d}/synced/server-state\n\n\
         defaults\n    mode http\n    timeout connect 2s\n    timeout client 30s\n    \
         timeout server 30s\n    load-server-state-from-file global\n\n"
    );
    let map = format!("{d}/synced/slots.map");
    let name_line = name
        .map(|n| format!("name = \"{n}\"\npublic_url = \"{}\"\n", url(public)))
        .unwrap_or_default();
    let (cfg, router) = if map_setup {
        let blue_servers = match s.blue2() {
            Some(n2) => format!("    server n1 {blue}\n    server n2 {}\n", n2.addr),
            None => format!("    server blue {blue}\n"),
        };
        std::fs::write(&map, "live be_blue\npreview be_green\n").expect("write map");
        (
            format!(
                "{head}frontend public\n    bind 127.0.0.1:{public}\n    \
                 use_backend %[str(preview),map({map},be_green)] if {{ req.hdr({PREVIEW_HEADER}) -m found }} || {{ req.cook({PREVIEW_COOKIE}) -m found }}\n    \
                 http-request set-var(txn.canary_weight) str(canary.weight),map({map},0)\n    \
                 http-request set-var(txn.canary_be) str(canary),map({map},none)\n    \
                 http-request set-var(txn.live_be) str(live),map({map},be_blue)\n    \
                 use_backend %[var(txn.canary_be)] if {{ var(txn.canary_weight) -m int gt 0 }} {{ req.cook(cutover_slot),strcmp(txn.canary_be) eq 0 }}\n    \
                 use_backend %[var(txn.live_be)] if {{ var(txn.canary_weight) -m int gt 0 }} {{ req.cook(cutover_slot),strcmp(txn.live_be) eq 0 }}\n    \
                 use_backend %[str(canary),map({map},be_blue)] if {{ rand(100),sub(txn.canary_weight) lt 0 }}\n    \
                 http-response add-header Set-Cookie \"cutover_slot=%[be_name]; Path=/; HttpOnly\" if {{ var(txn.canary_weight) -m int gt 0 }}\n    \
                 use_backend %[str(live),map({map},be_blue)]\n\n\
                 frontend preview\n    bind 127.0.0.1:{preview}\n    \
                 use_backend %[str(preview),map({map},be_green)]\n\n\
                 backend be_blue\n{blue_servers}\n\
                 backend be_green\n    server green {green}\n\n\
                 backend be_maintenance\n    http-request return status 503 content-type \
                 text/plain string \"Down for maintenance\" hdr Retry-After 120\n"
            ),
            format!(
                "[[environment.router]]\nkind = \"haproxy\"\n{name_line}\
                 socket = \"127.0.0.1:{admin}\"\nmode = \"map\"\nmap = \"{map}\"\n\
                 map_file = \"{map}\"\nlive_key = \"live\"\npreview_key = \"preview\"\n\
                 canary_key = \"canary\"\n\
                 backends = {{ blue = \"be_blue\", green = \"be_green\" }}\n\
                 maintenance_backend = \"be_maintenance\"\n\
                 server_state_file = \"{d}/synced/server-state\"\ntimeout = \"2s\"\n"
            ),
        )
    } else {
        (
            format!(
                "{head}frontend public\n    bind 127.0.0.1:{public}\n    \
                 default_backend be_app\n\n\
                 backend be_app\n    http-request return status 503 content-type text/plain \
                 string \"Down for maintenance\" hdr Retry-After 120 if {{ nbsrv(be_app) eq 0 }}\n    \
                 use-server blue if {{ req.cook(cutover_slot) -m str blue }} {{ nbsrv(be_app) gt 1 }}\n    \
                 use-server green if {{ req.cook(cutover_slot) -m str green }} {{ nbsrv(be_app) gt 1 }}\n    \
                 http-response add-header Set-Cookie \"cutover_slot=%[srv_name]; Path=/; HttpOnly\" if {{ nbsrv(be_app) gt 1 }}\n    \
                 server blue {blue}\n    server green {green} disabled\n"
            ),
            format!(
                "[[environment.router]]\nkind = \"haproxy\"\n{name_line}\
                 socket = \"127.0.0.1:{admin}\"\nmode = \"servers\"\nbackend = \"be_app\"\n\
                 servers = {{ blue = \"blue\", green = \"green\" }}\n\
                 server_state_file = \"{d}/synced/server-state\"\ntimeout = \"2s\"\n"
            ),
        )
    };
    let cfg_path = dir.join("haproxy.cfg");
    std::fs::write(&cfg_path, cfg).expect("write haproxy.cfg");
    let log = std::fs::File::create(dir.join("haproxy.log")).expect("log");
    let guard = ChildGuard::spawn(
        "haproxy",
        Command::new(bin)
            .arg("-f")
            .arg(&cfg_path)
            .arg("-db")
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    );
    let started = eventually(Duration::from_secs(15), || async {
        socket(admin, "show cli level").await.trim() == "admin"
    })
    .await;
    assert!(
        started,
        "haproxy did not start: {}",
        std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default()
    );
    wait_port(public, Duration::from_secs(10)).await;
    Part {
        router,
        proxy: Proxy::Haproxy {
            guard,
            admin,
            map: map_setup.then_some(map),
            synced_dir: synced,
        },
        public: url(public),
        preview: map_setup.then(|| url(preview)),
    }
}

/// The driver of a file-owning router (`$variant` of RouterConfig, built with `$driver`) for
/// the environment of `$servers`, with its files written for blue live and green the preview.
macro_rules! installed {
    ($servers:expr, $router:expr, $variant:ident, $driver:ident) => {{
        let env = crate::common::environment(&format!(
            "[[environment]]\nname = \"shop\"\n{}\n{}",
            $servers.toml(),
            $router
        ));
        let cutover::router::RouterConfig::$variant(c) = &env.routers[0] else {
            panic!("not a {} router", stringify!($variant))
        };
        let name = env.routers[0].name().to_string();
        let driver = $driver::new(name, &env, c).expect("driver");
        let installed = driver.install("blue", Some("green")).await;
        installed.expect("install");
        driver
    }};
}

/// nginx with `method` `include` or `symlink` (every change is tested with `nginx -t` and
/// reloaded).
async fn nginx(bin: &Path, t: &Path, s: &Servers, method: &str) -> Part {
    use cutover::router::nginx::{Driver, Pointer};
    std::fs::create_dir_all(t.join("tmp")).expect("mkdir");
    let (public, preview) = (free_port(), free_port());
    let td = t.display();
    let router = format!(
        "{}timeout = \"3s\"\n",
        crate::common::nginx_router_table(bin, t, method)
    );
    let driver = installed!(s, &router, Nginx, Driver);
    let extra = t.join("operator-extra.conf");
    std::fs::write(&extra, "# the operator's own directives\n").expect("write extra");
    let conf = format!(
        "worker_processes 1;\npid {td}/nginx.pid;\nerror_log {td}/error.log;\n\
         events {{ worker_connections 1024; }}\nhttp {{\n    access_log off;\n    \
         client_body_temp_path {td}/tmp/body;\n    proxy_temp_path {td}/tmp/proxy;\n    \
         fastcgi_temp_path {td}/tmp/fastcgi;\n    uwsgi_temp_path {td}/tmp/uwsgi;\n    \
         scgi_temp_path {td}/tmp/scgi;\n    include {up};\n    include {extra};\n    \
         server {{ listen 127.0.0.1:{public};\n        \
         location / {{ error_page 418 = @cutover_preview;\n            \
         if ($http_x_cutover_preview) {{ return 418; }}\n            \
         if ($cookie_{PREVIEW_COOKIE}) {{ return 418; }}\n            \
         include {live}; }}\n        \
         location @cutover_preview {{ include {next}; }} }}\n    \
         server {{ listen 127.0.0.1:{preview}; location / {{ include {next}; }} }}\n}}\n",
        up = driver.http_include_path().display(),
        extra = extra.display(),
        live = driver.include_path(Pointer::Live).display(),
        next = driver.include_path(Pointer::Next).display(),
    );
    std::fs::write(t.join("nginx.conf"), conf).expect("write nginx.conf");
    let argv = |more: &[&str]| -> Vec<String> {
        let mut v = vec![bin.display().to_string()];
        for a in ["-p", &td.to_string(), "-c", &format!("{td}/nginx.conf")] {
            v.push(a.to_string());
        }
        v.extend(["-e".to_string(), format!("{td}/error.log")]);
        v.extend(more.iter().map(|m| m.to_string()));
        v
    };
    run(&argv(&[]));
    let guard = PidFileGuard(t.join("nginx.pid"));
    crate::common::wait_ports(&[public, preview], Duration::from_secs(10)).await;
    Part {
        router,
        proxy: Proxy::Nginx {
            guard,
            pid_file: t.join("nginx.pid"),
            extra,
            live_conf: driver.include_path(Pointer::Live),
            reload: argv(&["-s", "reload"]),
        },
        public: url(public),
        preview: Some(url(preview)),
    }
}

/// A request to Caddy's admin API that must answer 200.
async fn caddy_admin(admin: u16, method: &str, path: &str, body: Value) {
    let c = cutover::http_client()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
    let r = c
        .request(m, format!("http://127.0.0.1:{admin}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    assert_eq!(
        r.status().as_u16(),
        200,
        "{method} {path}: {:?}",
        r.text().await
    );
}

/// Caddy with `mode = "api"` (cutover changes the upstreams of handlers by @id) or
/// `mode = "file"` (Caddy's routes test for flag files that cutover renames).
async fn caddy(bin: &Path, t: &Path, s: &Servers, file_mode: bool) -> Part {
    use cutover::router::caddy::{Driver, Pointer};
    let [public, preview, admin] = crate::common::free_ports();
    let flags = t.join("flags");
    let router = if file_mode {
        format!(
            "[[environment.router]]\nkind = \"caddy\"\nmode = \"file\"\n\
             admin = \"http://127.0.0.1:{admin}\"\nflag_dir = \"{}\"\ntimeout = \"2s\"\n",
            flags.display()
        )
    } else {
        format!(
            "[[environment.router]]\nkind = \"caddy\"\nmode = \"api\"\n\
             admin = \"http://127.0.0.1:{admin}\"\nlive_id = \"shop_live\"\n\
             preview_id = \"shop_preview\"\ntimeout = \"2s\"\n"
        )
    };
    let mut blue = vec![s.blue().addr.to_string()];
    blue.extend(s.blue2().map(|n| n.addr.to_string()));
    let green = vec![s.green().addr.to_string()];
    let server = |port: u16, routes: Value| json!({"listen": [format!("127.0.0.1:{port}")], "routes": routes});
    let handler = |id: &str, dials: &[String]| {
        let ups: Vec<Value> = dials.iter().map(|d| json!({ "dial": d })).collect();
        json!([{"handle": [{"handler": "reverse_proxy", "@id": id, "upstreams": ups}]}])
    };
    // Preview through the public URL (docs/caddy.md): the header or the cookie is proxied to
    // Caddy's own preview listener, which follows the preview route.
    let by_header = json!({
        "match": [
            {"header": {PREVIEW_HEADER: ["*"]}},
            {"header_regexp": {"Cookie": {"pattern": format!("(^|;\\s*){PREVIEW_COOKIE}=")}}},
        ],
        "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": format!("127.0.0.1:{preview}")}]}],
        "terminal": true,
    });
    let config = |public_routes: Value, preview_routes: Value| {
        let mut public_routes = public_routes;
        if let Some(r) = public_routes.as_array_mut() {
            r.insert(0, by_header.clone());
        }
        json!({
            "admin": {"listen": format!("127.0.0.1:{admin}"), "config": {"persist": false}},
            "apps": {"http": {"servers": {
                "public": server(public, public_routes),
                "preview": server(preview, preview_routes),
            }}}
        })
    };
    // The same traffic under other @ids: cutover's next change finds nothing to change.
    let refusing = config(
        handler("other_live", &blue),
        handler("other_preview", &green),
    );
    let first = if file_mode {
        let driver = installed!(s, &router, Caddy, Driver);
        config(
            driver.file_mode_routes(Pointer::Live).expect("routes"),
            driver.file_mode_routes(Pointer::Next).expect("routes"),
        )
    } else {
        // Sticky during a canary (docs/caddy.md): the cookie names the upstream a client had.
        let mut live = handler("shop_live", &blue);
        live[0]["handle"][0]["load_balancing"] =
            json!({"selection_policy": {"policy": "cookie", "name": "cutover_slot"}});
        config(live, handler("shop_preview", &green))
    };
    let conf = t.join("caddy.json");
    std::fs::write(&conf, first.to_string()).expect("write caddy.json");
    let log = std::fs::File::create(t.join("caddy.log")).expect("log");
    let guard = ChildGuard::spawn(
        "caddy",
        Command::new(bin)
            .args(["run", "--config", &conf.display().to_string()])
            .env("XDG_DATA_HOME", t.join("data"))
            .env("XDG_CONFIG_HOME", t.join("config"))
            .env("HOME", t)
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    );
    for p in [admin, public, preview] {
        wait_port(p, Duration::from_secs(10)).await;
    }
    Part {
        router,
        proxy: Proxy::Caddy {
            guard,
            admin,
            flags: file_mode.then_some(flags),
            refusing,
        },
        public: url(public),
        preview: Some(url(preview)),
    }
}

/// `cutover proxy` on `config`, in its own process (so that it can be stopped), its output in
/// `dir/proxy.log`.
fn start_cutover_proxy(config: &Path, dir: &Path) -> ChildGuard {
    let log = std::fs::File::create(dir.join("proxy.log")).expect("log");
    ChildGuard::spawn(
        "cutover proxy",
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .arg("--config")
            .arg(config)
            .arg("proxy")
            .env("XDG_STATE_HOME", dir.join("xdg-state"))
            .env("XDG_CONFIG_HOME", dir.join("xdg-config"))
            .env_remove("CUTOVER_CONFIG")
            .stdout(log.try_clone().expect("log"))
            .stderr(log),
    )
}

/// The exec router's one script: the embedded proxy's admin API through curl, and its state
/// as key=value lines through jq. curl has no timeout of its own: the exec router's `timeout`
/// is what ends a call to a hung proxy.
const PROXYCTL: &str = r#"#!/bin/sh
# proxyctl.sh VERB [SLOT [NODE]]
api=http://127.0.0.1:ADMIN_PORT
post() { exec curl -sSf -X POST -d "$2" "$api/$1"; }
case "$1" in
observe)
  state=$(curl -sSf "$api/state") || exit 1
  printf '%s' "$state" | jq -r '
    "live=\(.live // "")",
    "preview=\(.preview // "")",
    "maintenance=\(if .maintenance == null then "off" elif .maintenance.mode == "page" then "page" else "redirect:\(.maintenance.to)" end)",
    "weights=\(if .weights == null then "off" else "\(.weights.canary):\(.weights.canary_percent)" end)",
    (.slots | to_entries[] | .key as $s | "\($s).state=\(.value.admin)",
      (.value.nodes[]? | "\($s)/\(.name).state=\(.admin)"))'
  exit ;;
live | preview) post "$1" "{\"slot\":\"$2\"}" ;;
drain | undrain)
  if [ -n "$3" ]; then post "$1" "{\"slot\":\"$2\",\"node\":\"$3\"}"; fi
  post "$1" "{\"slot\":\"$2\"}" ;;
on) post maintenance "{\"on\":true,\"mode\":{\"mode\":\"$2\"}}" ;;
weights) post weights "{\"live\":\"$2\",\"canary\":\"$3\",\"canary_percent\":$4}" ;;
off) post maintenance '{"on":false}' ;;
esac
exit 2
"#;

/// The embedded proxy run by `cutover proxy`; driven by the embedded driver, or (`exec`) by
/// an exec router whose commands call the proxy's admin API with curl.
async fn embedded(t: &Path, s: &Servers, exec: bool) -> Part {
    let [public, preview, admin] = crate::common::free_ports();
    let state_dir = t.join("proxy-state");
    std::fs::create_dir_all(&state_dir).expect("mkdir");
    let embedded = format!(
        "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{admin}\"\n\
         live_listen = \"127.0.0.1:{public}\"\npreview_listen = \"127.0.0.1:{preview}\"\n\
         state_file = \"{}\"\npreview_header = \"X-Cutover-Preview\"\n\
         preview_cookie = \"cutover_preview\"\n",
        state_dir.join("state.json").display()
    );
    let config = t.join("proxy.toml");
    std::fs::write(
        &config,
        format!("[[environment]]\nname = \"shop\"\n{}\n{embedded}", s.toml()),
    )
    .expect("write proxy.toml");
    let guard = start_cutover_proxy(&config, t);
    wait_port(admin, Duration::from_secs(20)).await;
    wait_port(public, Duration::from_secs(10)).await;
    let router = if exec {
        let ctl = t.join("proxyctl.sh");
        // curl without a timeout of its own: the exec router's `timeout` is what ends it.
        std::fs::write(&ctl, PROXYCTL.replace("ADMIN_PORT", &admin.to_string()))
            .expect("write proxyctl.sh");
        let c = |args: &str| format!("[\"sh\", \"{}\", {args}]", ctl.display());
        format!(
            "[[environment.router]]\nkind = \"exec\"\nobserve = {}\nswitch_live = {}\n\
             set_preview = {}\ndrain = {}\nundrain = {}\nmaintenance_on = {}\n\
             maintenance_off = {}\nweights = {}\ntimeout = \"3s\"\n",
            c("\"observe\""),
            c("\"live\", \"{to}\""),
            c("\"preview\", \"{slot}\""),
            c("\"drain\", \"{slot}\", \"{node}\""),
            c("\"undrain\", \"{slot}\", \"{node}\""),
            c("\"on\", \"{mode}\""),
            c("\"off\""),
            c("\"weights\", \"{live}\", \"{canary}\", \"{weight}\""),
        )
    } else {
        embedded.clone()
    };
    Part {
        router,
        proxy: Proxy::Embedded {
            guard,
            admin,
            state_dir,
        },
        public: url(public),
        preview: Some(url(preview)),
    }
}

/// apache2 with the blue/green server of docs/apache.md (balancers `live` and `preview`
/// driven through the balancer-manager, maintenance by flag files), in its own process group;
/// with `file`, the file-mode server (a balancer per slot, `live=blue` and `next=green` flags).
async fn apache(bin: &Path, t: &Path, s: &Servers, file: bool) -> Part {
    let marker = if file {
        "cutover-apache-file-config"
    } else {
        "cutover-apache-config"
    };
    let body = crate::common::apache_doc_block(marker, "apache");
    let flags = t.join("flags");
    if file {
        std::fs::create_dir_all(&flags).expect("mkdir flags");
        for f in ["live=blue", "next=green"] {
            std::fs::write(flags.join(f), "").expect("the first flags");
        }
    }
    let (public, preview) = (free_port(), free_port());
    let (blue, green) = (s.blue().url(), s.green().url());
    let defines = [
        ("CUTOVER_SERVER", "web1".to_string()),
        ("CUTOVER_BLUE", blue.clone()),
        ("CUTOVER_GREEN", green.clone()),
        ("CUTOVER_PEER", green.clone()),
    ];
    let guard = crate::common::spawn_apache(bin, t, (public, preview), true, &defines, &body);
    let manager = format!("http://127.0.0.1:{public}/balancer-manager");
    let up = eventually(Duration::from_secs(15), || async {
        !apache_manager_xml(&manager).await.is_empty()
    })
    .await;
    assert!(
        up,
        "apache2 did not come up: {}",
        std::fs::read_to_string(t.join("error.log")).unwrap_or_default()
    );
    let balancers = if file {
        format!("mode = \"file\"\nflag_dir = \"{}\"\n", flags.display())
    } else {
        "live_balancer = \"live\"\npreview_balancer = \"preview\"\n".to_string()
    };
    let router = format!(
        "[[environment.router]]\nkind = \"apache\"\nmanager_url = \"{manager}\"\n\
         {balancers}timeout = \"2s\"\n\
         maintenance_flag = \"{f}/maintenance.redirect\"\nmaintenance_to = \"green\"\n\
         maintenance_page_flag = \"{f}/maintenance.page\"\nmaintenance_verify_url = \"{}\"\n",
        url(public),
        f = flags.display(),
    );
    Part {
        router,
        proxy: Proxy::Apache {
            guard,
            manager,
            blue,
            green,
            flags: file.then_some(flags),
        },
        public: url(public),
        preview: Some(url(preview)),
    }
}

/// The balancer-manager's XML (empty while Apache does not answer).
async fn apache_manager_xml(manager: &str) -> String {
    let c = cutover::http_client()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    match c
        .get(format!("{manager}?xml=1"))
        .header("referer", manager)
        .send()
        .await
    {
        Ok(r) => r
            .text()
            .await
            .ok()
            .filter(|t| t.contains("<httpd:manager"))
            .unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Set the flags of one member of `balancer` (`live`) on the balancer-manager page, as a person
/// with a browser would: `flags` like `[("D", 1)]` (disabled) or `[("S", 1)]` (stopped).
async fn apache_by_hand(manager: &str, balancer: &str, worker: &str, flags: &[(&str, u8)]) {
    let xml = apache_manager_xml(manager).await;
    let live = xml
        .find(&format!("<httpd:name>balancer://{balancer}</httpd:name>"))
        .expect("the balancer in the manager's XML");
    let nonce = xml[live..]
        .split("<httpd:nonce>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .expect("the balancer's nonce");
    let mut form = format!("b={balancer}&w={worker}&nonce={nonce}");
    for (f, v) in flags {
        form += &format!("&w_status_{f}={v}");
    }
    let r = cutover::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
        .post(manager)
        .header("referer", manager)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .expect("POST to the balancer-manager");
    assert!(r.status().is_success(), "balancer-manager: {}", r.status());
}
