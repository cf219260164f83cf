//! The `haproxy` driver against a real HAProxy (Debian's 2.6 package), started unprivileged
//! on loopback with the haproxy.cfg and cutover configs of docs/haproxy.md (paths and ports
//! replaced), with local slot servers as backends.
#![allow(clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::{ChildGuard, SlotServer, free_port, get, node, observe_until};
use cutover::load::{self, LoadOptions, LoadReport};
use cutover::model::{AdminState, MaintenanceMode, Role, RouterState};
use cutover::router::{self, Router, Target, Verb};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DOC: &str = include_str!("../docs/haproxy.md");

/// The fenced block of docs/haproxy.md whose first line holds `marker`.
fn doc_block(marker: &str) -> String {
    common::fenced_blocks(DOC)
        .into_iter()
        .map(|(_, body)| body)
        .find(|b| b.lines().next().is_some_and(|l| l.contains(marker)))
        .unwrap_or_else(|| panic!("docs/haproxy.md has no block marked `{marker}`"))
}

#[derive(Clone, Copy, PartialEq)]
enum Setup {
    Map,
    Servers,
}

/// A running HAProxy with its slot servers, files and configs in one temp dir.
struct Rig {
    dir: TempDir,
    bin: PathBuf,
    cfg: PathBuf,
    public: u16,
    preview: u16,
    admin: u16,
    slots: Vec<SlotServer>,
    cutover_toml: String,
    proxy: Option<ChildGuard>,
}

impl Rig {
    /// The rig of a test, if HAProxy is installed (see `common::require_binary`).
    async fn for_test(test: &str, setup: Setup) -> Option<Rig> {
        let bin = common::require_binary(test, "haproxy")?;
        Some(Rig::new(setup, bin).await)
    }

    /// The config of this rig's environment with `[settings]` (state in `state`) and `keys`
    /// added to the environment (after its `preview_url`).
    fn config_with(&self, state: &Path, keys: &str) -> String {
        let anchor = "preview_url = \"http://127.0.0.1:";
        let i = self.cutover_toml.find(anchor).expect("preview_url");
        let eol = i + self.cutover_toml[i..].find('\n').expect("end of line") + 1;
        let (head, tail) = self.cutover_toml.split_at(eol);
        format!(
            "[settings]\nstate_dir = \"{}\"\n\n{head}{keys}{tail}",
            state.display()
        )
    }

    /// This rig's `[[environment.router]]` table (and what follows), the router named `name`
    /// with `keys` after its kind.
    fn router_table(&self, name: &str, keys: &str) -> String {
        let i = self
            .cutover_toml
            .find("[[environment.router]]")
            .expect("router table");
        self.cutover_toml[i..].replacen(
            "kind = \"haproxy\"",
            &format!("kind = \"haproxy\"\nname = \"{name}\"{keys}"),
            1,
        )
    }

    /// The config of a fleet: this rig's environment (sequential, no watch, then `env_keys`)
    /// with `routers` (from [`Rig::router_table`]), gate_checks = 1, state in `state`.
    fn fleet_config(&self, state: &Path, env_keys: &str, routers: &[String]) -> String {
        let head = &self.cutover_toml[..self
            .cutover_toml
            .find("[[environment.router]]")
            .expect("router")];
        let head = head.replacen(
            "name = \"shop\"",
            &format!("name = \"shop\"\nfleet = \"sequential\"\nwatch = \"0s\"{env_keys}"),
            1,
        );
        format!(
            "[settings]\ngate_checks = 1\nstate_dir = \"{}\"\n\n{head}\n{}\n",
            state.display(),
            routers.join("\n")
        )
    }

    async fn new(setup: Setup, bin: PathBuf) -> Rig {
        let dir = TempDir::new().expect("temp dir");
        let d = dir.path().display().to_string();
        let specs: &[(&str, &str)] = match setup {
            // blue, green's two nodes g1 and g2, staging
            Setup::Map => &[
                ("blue", "1.0.0"),
                ("green", "2.0.0"),
                ("green", "2.0.0"),
                ("staging", "3.0.0"),
            ],
            Setup::Servers => &[("blue", "1.0.0"), ("green", "2.0.0"), ("staging", "3.0.0")],
        };
        let slots = common::slots(specs).await;
        let [public, preview, admin] = common::free_ports();
        let mut subst = vec![
            (
                "/run/haproxy/admin.sock".to_string(),
                format!("{d}/admin.sock"),
            ),
            ("127.0.0.1:9999".to_string(), format!("127.0.0.1:{admin}")),
            (
                "/etc/haproxy/slots.map".to_string(),
                format!("{d}/slots.map"),
            ),
            (
                "/var/lib/haproxy/server-state".to_string(),
                format!("{d}/server-state"),
            ),
            ("127.0.0.1:8080".to_string(), format!("127.0.0.1:{public}")),
            ("127.0.0.1:8081".to_string(), format!("127.0.0.1:{preview}")),
        ];
        let doc_ports: &[&str] = match setup {
            Setup::Map => &[
                "127.0.0.1:9001",
                "127.0.0.1:9002",
                "127.0.0.1:9003",
                "127.0.0.1:9004",
            ],
            Setup::Servers => &["127.0.0.1:9001", "127.0.0.1:9002", "127.0.0.1:9004"],
        };
        for (p, s) in doc_ports.iter().zip(&slots) {
            subst.push((p.to_string(), s.addr.to_string()));
        }
        let apply = |text: String| {
            subst
                .iter()
                .fold(text, |t, (from, to)| t.replace(from.as_str(), to))
        };
        let prefix = match setup {
            Setup::Map => "map setup",
            Setup::Servers => "servers setup",
        };
        // Two more sockets for the error tests: one below admin level, one nobody may open.
        let cfg_text = apply(doc_block(&format!("{prefix}: haproxy.cfg"))).replacen(
            "global\n",
            &format!(
                "global\n    stats socket {d}/operator.sock level operator\n    stats socket \
                 {d}/private.sock mode 000 level admin\n"
            ),
            1,
        );
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(&cfg, cfg_text).expect("write haproxy.cfg");
        if setup == Setup::Map {
            std::fs::write(
                dir.path().join("slots.map"),
                apply(doc_block("map setup: slots.map")),
            )
            .expect("write slots.map");
        }
        let cutover_toml = apply(doc_block(&format!("{prefix}: cutover.toml")));
        let mut rig = Rig {
            dir,
            bin,
            cfg,
            public,
            preview,
            admin,
            slots,
            cutover_toml,
            proxy: None,
        };
        rig.start().await;
        rig
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("haproxy.log")).unwrap_or_default()
    }

    /// Start HAProxy in the foreground (`-db`), stopped by PID when the rig is dropped.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("haproxy.log"))
            .expect("log file");
        let guard = ChildGuard::spawn(
            "haproxy",
            Command::new(&self.bin)
                .arg("-f")
                .arg(&self.cfg)
                .arg("-db")
                .stdout(log.try_clone().expect("log"))
                .stderr(log),
        );
        self.proxy = Some(guard);
        let t = Instant::now();
        loop {
            let up = tokio::net::TcpStream::connect(("127.0.0.1", self.public))
                .await
                .is_ok();
            if up && self.try_socat("show cli level").await.as_deref() == Some("admin\n\n") {
                return;
            }
            if t.elapsed() > Duration::from_secs(10) {
                panic!("haproxy did not start in 10s; its log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    }

    fn stop(&mut self) {
        self.proxy = None;
    }

    /// Write a raw command to the admin socket, as `socat` would.
    async fn try_socat(&self, cmd: &str) -> Option<String> {
        let mut s = tokio::net::UnixStream::connect(self.path("admin.sock"))
            .await
            .ok()?;
        s.write_all(format!("{cmd}\n").as_bytes()).await.ok()?;
        let mut out = String::new();
        tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
            .await
            .ok()?
            .ok()?;
        Some(out)
    }

    async fn socat(&self, cmd: &str) -> String {
        self.try_socat(cmd)
            .await
            .unwrap_or_else(|| panic!("`{cmd}` on the admin socket failed"))
    }

    fn driver_from(&self, toml_text: &str) -> Arc<dyn Router> {
        let env = common::environment(toml_text);
        router::build(&env, &env.routers[0]).unwrap_or_else(|e| panic!("{e:#}"))
    }

    /// The driver of the documented config.
    fn driver(&self) -> Arc<dyn Router> {
        self.driver_from(&self.cutover_toml)
    }

    /// The documented config with one line replaced.
    fn driver_with(&self, from: &str, to: &str) -> Arc<dyn Router> {
        assert!(
            self.cutover_toml.contains(from),
            "no `{from}` in the config"
        );
        self.driver_from(&self.cutover_toml.replace(from, to))
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.public)
    }

    fn preview_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.preview)
    }
}

async fn observe(r: &dyn Router) -> RouterState {
    r.observe()
        .await
        .unwrap_or_else(|e| panic!("observe failed: {e:#}"))
}

async fn ok(what: &str, f: impl std::future::Future<Output = color_eyre::Result<()>>) {
    if let Err(e) = f.await {
        panic!("{what} failed: {e:#}");
    }
}

async fn refused(
    what: &str,
    f: impl std::future::Future<Output = color_eyre::Result<()>>,
) -> String {
    match f.await {
        Ok(()) => panic!("{what} was accepted"),
        Err(e) => format!("{e:#}"),
    }
}

/// Which slot answers on a URL (and the status).
async fn who(url: &str) -> (u16, String) {
    let (status, slot, _) = get(url).await;
    (status, slot)
}

/// A slow request in the background: (status, slot) when it ends.
fn slow(url: String) -> tokio::task::JoinHandle<(u16, String)> {
    tokio::spawn(async move { who(&url).await })
}

/// A slow request (2.5 s) to the public URL, in flight on blue once observe shows its
/// session (within 3 s): its answer, to come.
async fn slow_request_on_blue(rig: &Rig, d: &dyn Router) -> tokio::task::JoinHandle<(u16, String)> {
    let req = slow(rig.url("/slow?ms=2500"));
    observe_until(d, Duration::from_secs(3), "a slow request on blue", |s| {
        sessions(s, "blue") >= 1
    })
    .await;
    req
}

/// The maintenance page on: the public URL answers 503 with the page, and the reading shows
/// the page with blue, the slot that comes back, in maintenance. The reading.
async fn maintenance_page_on(rig: &Rig, d: &dyn Router) -> RouterState {
    ok(
        "maintenance on",
        d.maintenance(true, &MaintenanceMode::Page),
    )
    .await;
    let (status, _, body) = get(&rig.url("/")).await;
    assert_eq!(status, 503);
    common::assert_contains(&body, "Down for maintenance");
    let st = observe(d).await;
    assert_eq!(st.maintenance, Some(MaintenanceMode::Page));
    assert_eq!(st.live.as_deref(), Some("blue"), "the slot that comes back");
    assert_eq!(st.role_of("blue"), Role::Maintenance);
    st
}

/// Maintenance off: blue answers again and the reading shows no maintenance. The reading.
async fn maintenance_off(rig: &Rig, d: &dyn Router) -> RouterState {
    ok(
        "maintenance off",
        d.maintenance(false, &MaintenanceMode::Page),
    )
    .await;
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));
    let st = observe(d).await;
    assert_eq!(st.maintenance, None);
    assert_eq!(st.live.as_deref(), Some("blue"));
    st
}

/// Two map-setup HAProxies (for a fleet) and a state dir, where HAProxy is installed.
async fn two_haproxies(test: &str) -> Option<(Rig, Rig, TempDir)> {
    let bin = common::require_binary(test, "haproxy")?;
    let one = Rig::new(Setup::Map, bin.clone()).await;
    let two = Rig::new(Setup::Map, bin).await;
    Some((one, two, TempDir::new().expect("state dir")))
}

/// Wait (10 s at most) until the reading counts at least one (`what`: requests or errors) on
/// `slot`: HAProxy counts an answer when its session ends, a moment after the client has it.
/// That reading.
async fn counted(
    d: &dyn Router,
    slot: &str,
    what: fn(&cutover::model::SlotRoute) -> Option<u64>,
) -> RouterState {
    let seen = common::eventually(Duration::from_secs(10), || async {
        what(&observe(d).await.slots[slot]).unwrap_or(0) >= 1
    })
    .await;
    let st = observe(d).await;
    assert!(seen, "nothing counted on {slot}: {st:#?}");
    st
}

/// Wait (30 s at most) until HAProxy's own checks find green's servers up.
async fn green_checks_up(d: &dyn Router) {
    let up = common::eventually(Duration::from_secs(30), || async {
        observe(d).await.slots["green"].checks_up == Some(true)
    })
    .await;
    assert!(up, "HAProxy's checks never passed: {:#?}", observe(d).await);
}

/// The router's reading right after a change made behind its back: it shows `live`.
async fn reads_back(d: &dyn Router, live: &str) -> RouterState {
    let st = observe(d).await;
    assert_eq!(
        st.live.as_deref(),
        Some(live),
        "observe reads the proxy back"
    );
    st
}

fn sessions(st: &RouterState, slot: &str) -> u64 {
    st.slots.get(slot).and_then(|s| s.sessions).unwrap_or(0)
}

/// 20 swap + rollback pairs under concurrent load; the report and how many times the
/// answering slot changed. After each switch the clients get answers from the new slot and
/// send 300 more requests before the next (no sleep is "long enough"); the load's ceilings
/// are far beyond any machine's need, and the test stops it once the last switch has reached
/// the clients.
async fn swaps_under_load(
    rig: &Rig,
    d: &Arc<dyn Router>,
    pairs: usize,
) -> (LoadReport, usize, u64) {
    let max_requests = 50_000_000;
    let run = load::start(LoadOptions {
        url: rig.url("/"),
        concurrency: 24,
        max_requests,
        max_duration: Duration::from_secs(240),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    });
    let mut seen = common::LoadSeen::of(&run);
    seen.answered_by("blue").await;
    let mut took = Vec::new();
    for _ in 0..pairs {
        for to in ["green", "blue"] {
            let t = Instant::now();
            ok("swap", d.switch_live(to)).await;
            took.push(t.elapsed().as_micros() as u64);
            seen.answered_by(to).await;
            // A few hundred requests on each side of every switch, however fast they come.
            common::more_requests(&run, 300, &format!("the switch after {to}")).await;
        }
    }
    took.sort_unstable();
    eprintln!(
        "switch_live under load: median {} us, max {} us over {} swaps",
        took[took.len() / 2],
        took[took.len() - 1],
        took.len()
    );
    let sent_at_last_swap = run.sent.load(SeqCst);
    let report = run.finish().await;
    let switches = common::slot_changes(&report);
    assert_eq!(
        report.ended,
        load::Ended::Stopped,
        "the load ended by its own bound ({sent_at_last_swap} requests at the last swap) before \
         the test stopped it"
    );
    (report, switches, sent_at_last_swap)
}

fn print_report(name: &str, r: &LoadReport, switches: usize) {
    eprintln!(
        "{name}: {} requests in {} ms ({:.0}/s), {} failed {:?}, by slot {:?}, answering slot \
         changed {switches} times, p50 {} us, p99 {} us, first errors {:?}",
        r.sent,
        r.elapsed_ms,
        r.rps(),
        r.failed(),
        r.failures,
        r.by_slot,
        r.percentile_us(0.5).unwrap_or(0),
        r.percentile_us(0.99).unwrap_or(0),
        r.first_errors
    );
}

// ---------------------------------------------------------------------------------------
// Map setup

// Reading the state, swapping and back, the preview, draining a node, maintenance, drift by
// hand, a refused swap and a hung HAProxy: tests/contract.rs, in both setups. Below: what is
// HAProxy's own.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_file_stays_in_sync_and_requests_and_errors_are_counted() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let d = rig.driver();
    assert_eq!((d.kind(), d.name()), ("haproxy", "haproxy"));
    let st = observe(d.as_ref()).await;
    let green = &st.slots["green"];
    assert_eq!(
        green
            .nodes
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>(),
        ["g1", "g2"],
        "the documented nodes"
    );

    ok("swap to green", d.switch_live("green")).await;
    assert_eq!(who(&rig.url("/")).await, (200, "green".into()));
    let map = std::fs::read_to_string(rig.path("slots.map")).expect("map file");
    assert!(
        map.contains("live be_green\n"),
        "map file not in sync:\n{map}"
    );
    assert!(map.starts_with("# map setup"), "comments kept:\n{map}");
    // Requests counted for the watch window.
    let st = counted(d.as_ref(), "green", |r| r.requests).await;
    assert_eq!(st.role_of("blue"), Role::Idle);

    // Errors are counted per slot, for the watch window.
    ok("preview staging", d.set_preview("staging")).await;
    rig.slots[3].controls.set_healthy(false);
    assert_eq!(who(&rig.preview_url()).await, (500, "staging".into()));
    let st = counted(d.as_ref(), "staging", |r| r.errors).await;
    assert_eq!(st.role_of("staging"), Role::Preview);
    assert_eq!(st.slots["blue"].errors, Some(0));
    rig.slots[3].controls.set_healthy(true);

    ok("rollback to blue", d.switch_live("blue")).await;
    let map = std::fs::read_to_string(rig.path("slots.map")).expect("map file");
    common::assert_contains(&map, "live be_blue\npreview be_staging\n");
}

/// (uid, gid, permission bits) of a file.
/// The request counter cutover reads from `show stat` for the live slot moves with the
/// traffic: over a 10 s load, it counts what the load itself counted, within 5 %.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_slots_request_counter_matches_the_loads_own_count() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let d = rig.driver();
    let before = observe(&*d).await;
    let live = before.live.clone().expect("a live slot");
    let count = |st: &RouterState, what: fn(&cutover::model::SlotRoute) -> Option<u64>| {
        st.slots
            .get(&live)
            .and_then(what)
            .unwrap_or_else(|| panic!("no counter for `{live}`: {st:?}"))
    };
    let (r0, e0) = (count(&before, |r| r.requests), count(&before, |r| r.errors));
    // Bounded in count and time, two at a time: a window of load, not a benchmark.
    let report = common::load_window(rig.url("/")).await;
    let after = observe(&*d).await;
    let (r1, e1) = (count(&after, |r| r.requests), count(&after, |r| r.errors));
    print_report("counters", &report, 0);
    common::assert_counted_as_the_load("HAProxy", &live, r1 - r0, &report);
    assert_eq!(e1 - e0, 0, "no errors were counted");
}

fn owner_and_mode(p: &Path) -> (u32, u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid(), m.mode() & 0o7777)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewritten_map_and_state_files_keep_their_owner_group_and_mode() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    // Giving a file away needs root; as another user the write is refused (and says why).
    if unsafe { libc::geteuid() } != 0 {
        panic!("this test chowns files to `nobody`: run it as root (the CI container does)");
    }
    let d = rig.driver();
    // The server-state file exists after the first server change.
    ok("drain staging", d.drain(&Target::slot("staging"))).await;
    let (map, state) = (rig.path("slots.map"), rig.path("server-state"));
    // As a packaged HAProxy has them: owned by its user (here `nobody`, 65534:65534).
    for (p, mode) in [(&map, 0o640), (&state, 0o600)] {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).expect("chown");
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .expect("chmod");
    }
    let (map_before, state_before) = (
        std::fs::read_to_string(&map).expect("map"),
        std::fs::read_to_string(&state).expect("state"),
    );
    ok("swap to green", d.switch_live("green")).await;
    ok("undrain staging", d.undrain(&Target::slot("staging"))).await;
    assert_ne!(std::fs::read_to_string(&map).expect("map"), map_before);
    assert_ne!(
        std::fs::read_to_string(&state).expect("state"),
        state_before
    );
    assert_eq!(
        owner_and_mode(&map),
        (65534, 65534, 0o640),
        "{}",
        map.display()
    );
    assert_eq!(
        owner_and_mode(&state),
        (65534, 65534, 0o600),
        "{}",
        state.display()
    );
    // And the swap is what HAProxy runs.
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("green"), "{st:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn check_and_status_fail_on_a_backend_haproxy_does_not_have() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    // The documented config checks out; a typo in `backends`: HAProxy has no `app_gren`.
    let (from, to) = ("green = \"be_green\"", "green = \"app_gren\"");
    let (line, status) =
        common::check_and_status_fail_after(&rig.cutover_toml, from, to, "haproxy").await;
    common::assert_contains(&line, "backend app_gren of slot `green` is not in HAProxy");
    // Plain status names it on the router's line.
    assert!(
        status
            .lines()
            .any(|l| l.contains("router haproxy (haproxy): PROBLEM backend app_gren")),
        "{status}"
    );
    let wrong = rig.cutover_toml.replace(from, to);
    let st = observe(rig.driver_from(&wrong).as_ref()).await;
    assert_eq!(st.problems.len(), 1, "{st:#?}");
}

/// HAProxy's own health checks (`check` in haproxy.cfg) vouch for the target: the headless
/// swap and rollback probe it once, not three times in a row, and say on what evidence; a
/// slot whose server HAProxy's checks find down gets no such pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxys_own_checks_vouch_for_the_target_and_the_cli_says_so() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    // The checks (`inter 1s`) have run once at least: green's servers read UP (L4OK).
    let d = rig.driver();
    green_checks_up(d.as_ref()).await;
    let dir = TempDir::new().expect("dir");
    for (args, to) in [
        (
            &["swap", "shop", "--to", "green", "--yes", "--no-watch"][..],
            "green",
        ),
        (&["rollback", "shop", "--yes", "--no-watch"][..], "blue"),
    ] {
        let o = common::cutover_cli(dir.path(), &rig.cutover_toml, args).await;
        let out = common::printed(&o);
        assert_eq!(o.status.code(), Some(0), "{out}");
        assert!(
            out.contains(
                "all checks passed (healthy now, and haproxy `haproxy`'s own checks say UP"
            ),
            "{args:?}: the gate names its evidence:\n{out}"
        );
        assert_eq!(who(&rig.url("/")).await.1, to);
    }

    // Green's second server stops: HAProxy's checks find it down, and the gate does not take
    // HAProxy's word: three fresh checks of cutover's own, in a row (green's address still
    // answers: it is its first server's).
    rig.slots[2].stop();
    let down = common::eventually(Duration::from_secs(30), || async {
        observe(d.as_ref()).await.slots["green"].checks_up == Some(false)
    })
    .await;
    assert!(down, "{:#?}", observe(d.as_ref()).await);
    let o = common::cutover_cli(
        dir.path(),
        &rig.cutover_toml,
        &["swap", "shop", "--to", "green", "--yes", "--no-watch"],
    )
    .await;
    let out = common::printed(&o);
    common::assert_lacks(&out, "own checks say");
    common::assert_contains(&out, "last 3 checks healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_empty_server_state_file_is_named_as_the_file() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let d = rig.driver();
    // No file before cutover's first change: no note.
    assert!(!rig.path("server-state").exists());
    let st = observe(d.as_ref()).await;
    assert!(st.notes.is_empty(), "{:?}", st.notes);
    // An empty one (`touch`ed): the note says the file is empty, not what the socket said.
    std::fs::write(rig.path("server-state"), "").expect("touch server-state");
    let st = observe(d.as_ref()).await;
    let empty: Vec<_> = st
        .notes
        .iter()
        .filter(|n| n.contains("server-state"))
        .collect();
    assert_eq!(empty.len(), 1, "{:?}", st.notes);
    assert!(empty[0].contains("server-state is empty"), "{empty:?}");
    assert!(!empty[0].contains("show servers state"), "{empty:?}");
    // The next server change writes it, and the note goes.
    ok("drain staging", d.drain(&Target::slot("staging"))).await;
    ok("undrain staging", d.undrain(&Target::slot("staging"))).await;
    let st = observe(d.as_ref()).await;
    assert!(st.notes.is_empty(), "{:?}", st.notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_drain_reaches_zero_sessions_for_a_slot_and_a_node() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let d = rig.driver();

    // A slow request in flight on blue, the live slot.
    let req = slow_request_on_blue(&rig, d.as_ref()).await;
    let e = refused("drain of the live slot", d.drain(&Target::slot("blue"))).await;
    common::assert_contains(&e, "takes the live traffic");
    assert_eq!(
        observe(d.as_ref()).await.slots["blue"].admin,
        AdminState::Ready
    );

    ok("swap to green", d.switch_live("green")).await;
    ok("drain blue", d.drain(&Target::slot("blue"))).await;
    let st = observe(d.as_ref()).await;
    assert_eq!(st.slots["blue"].admin, AdminState::Drain);
    assert_eq!(st.role_of("blue"), Role::Draining);
    assert!(
        sessions(&st, "blue") >= 1,
        "the slow request is still in flight: {st:#?}"
    );
    let st = observe_until(d.as_ref(), Duration::from_secs(5), "blue drained", |s| {
        sessions(s, "blue") == 0
    })
    .await;
    assert_eq!(st.slots["blue"].admin, AdminState::Drain);
    assert_eq!(req.await.expect("slow request"), (200, "blue".into()));
    // The drain is kept in the server-state file.
    let state = std::fs::read_to_string(rig.path("server-state")).expect("server-state file");
    common::assert_contains(&state, " be_blue ");

    // One node of the live slot: drain the node that holds a slow request.
    let req = slow(rig.url("/slow?ms=2500"));
    let in_flight = |i: usize| rig.slots[i].controls.in_flight.load(SeqCst);
    assert!(
        common::eventually(Duration::from_secs(3), || async {
            in_flight(1) + in_flight(2) >= 1
        })
        .await
    );
    // (node name, its slot server) for the busy node and the other one.
    let ((busy, busy_i), (idle, idle_i)) = if in_flight(1) >= 1 {
        (("g1", 1), ("g2", 2))
    } else {
        (("g2", 2), ("g1", 1))
    };
    let (busy_controls, idle_controls) = (&rig.slots[busy_i].controls, &rig.slots[idle_i].controls);
    ok("drain one node", d.drain(&Target::node("green", busy))).await;
    let st = observe(d.as_ref()).await;
    assert_eq!(node(&st, "green", busy).admin, AdminState::Drain, "{st:#?}");
    assert_eq!(node(&st, "green", idle).admin, AdminState::Ready);
    assert_eq!(
        st.slots["green"].admin,
        AdminState::Ready,
        "the slot still serves"
    );
    assert!(
        node(&st, "green", busy).sessions.unwrap_or(0) >= 1,
        "{st:#?}"
    );
    // New requests go to the other node only.
    let served_before = busy_controls.served.load(SeqCst);
    for _ in 0..10 {
        assert_eq!(who(&rig.url("/")).await, (200, "green".into()));
    }
    assert_eq!(
        busy_controls.served.load(SeqCst),
        served_before,
        "a drained node got new requests"
    );
    assert!(idle_controls.served.load(SeqCst) >= 10);
    let st = observe_until(
        d.as_ref(),
        Duration::from_secs(5),
        "the node drained",
        |s| node(s, "green", busy).sessions == Some(0),
    )
    .await;
    assert_eq!(node(&st, "green", busy).admin, AdminState::Drain);
    assert_eq!(req.await.expect("slow request"), (200, "green".into()));
    // The last node of the live slot cannot be drained.
    let e = refused(
        "drain of the last node",
        d.drain(&Target::node("green", idle)),
    )
    .await;
    common::assert_contains(&e, "no other server of backend be_green");
    ok("undrain node", d.undrain(&Target::node("green", busy))).await;
    let st = observe(d.as_ref()).await;
    assert_eq!(node(&st, "green", busy).admin, AdminState::Ready);

    // A swap back to the drained slot enables it first.
    ok("rollback to blue", d.switch_live("blue")).await;
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("blue"));
    assert_eq!(st.slots["blue"].admin, AdminState::Ready);
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_maintenance_page_and_redirect() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let d = rig.driver();

    let st = maintenance_page_on(&rig, d.as_ref()).await;
    assert!(st.notes.is_empty(), "{:?}", st.notes);
    let map = std::fs::read_to_string(rig.path("slots.map")).expect("map file");
    assert!(
        map.contains("live be_maintenance\n") && map.contains("live.resume be_blue\n"),
        "{map}"
    );
    let e = refused("swap during maintenance", d.switch_live("green")).await;
    common::assert_contains(&e, "maintenance is on");

    let st = maintenance_off(&rig, d.as_ref()).await;
    assert!(st.notes.is_empty(), "{:?}", st.notes);
    assert!(
        !rig.socat(&format!("show map {}", rig.path("slots.map").display()))
            .await
            .contains("resume")
    );

    // Redirect the live traffic to another slot while blue is worked on.
    let to_green = MaintenanceMode::Redirect { to: "green".into() };
    ok("redirect to green", d.maintenance(true, &to_green)).await;
    assert_eq!(who(&rig.url("/")).await, (200, "green".into()));
    let st = observe(d.as_ref()).await;
    assert_eq!(st.maintenance, Some(to_green.clone()));
    assert_eq!(st.live.as_deref(), Some("blue"));
    // Switching from the redirect to the page keeps the slot that comes back.
    ok("page instead", d.maintenance(true, &MaintenanceMode::Page)).await;
    assert_eq!(who(&rig.url("/")).await.0, 503);
    ok(
        "maintenance off",
        d.maintenance(false, &MaintenanceMode::Page),
    )
    .await;
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));
    ok("off twice", d.maintenance(false, &MaintenanceMode::Page)).await;
    let e = refused(
        "redirect to the live slot",
        d.maintenance(true, &MaintenanceMode::Redirect { to: "blue".into() }),
    )
    .await;
    common::assert_contains(&e, "live slot itself");

    // Maintenance turned on by hand (no resume key): observe shows it, and off says how out.
    assert_eq!(
        rig.socat(&format!(
            "set map {} live be_maintenance",
            rig.path("slots.map").display()
        ))
        .await,
        "\n"
    );
    let st = observe(d.as_ref()).await;
    assert_eq!(st.maintenance, Some(MaintenanceMode::Page));
    assert!(
        st.notes.iter().any(|n| n.contains("no `live.resume` key")),
        "{:?}",
        st.notes
    );
    let e = refused(
        "off without resume key",
        d.maintenance(false, &MaintenanceMode::Page),
    )
    .await;
    common::assert_contains(&e, "swap to the slot that should be live");
    ok("swap out of it", d.switch_live("blue")).await;
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));

    // Without a maintenance backend the page is refused, and nothing changes.
    let bare = rig.driver_with("maintenance_backend = \"be_maintenance\"\n", "");
    let e = refused(
        "page without backend",
        bare.maintenance(true, &MaintenanceMode::Page),
    )
    .await;
    common::assert_contains(&e, "no `maintenance_backend`");
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_drift_after_a_change_by_hand() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let d = rig.driver();
    // A first change through cutover writes the server-state file.
    ok("drain staging", d.drain(&Target::slot("staging"))).await;
    assert!(observe(d.as_ref()).await.notes.is_empty());

    // By hand, like `echo ... | socat - /run/haproxy/admin.sock`.
    let map = rig.path("slots.map").display().to_string();
    assert_eq!(
        rig.socat(&format!("set map {map} live be_green")).await,
        "\n"
    );
    assert_eq!(rig.socat("set server be_blue/blue state maint").await, "\n");
    let st = reads_back(d.as_ref(), "green").await;
    assert_eq!(st.slots["blue"].admin, AdminState::Maint);
    assert_eq!(who(&rig.url("/")).await, (200, "green".into()));
    let notes = st.notes.join("\n");
    assert!(
        notes.contains("drift: the map file") && notes.contains("`live` -> be_blue"),
        "{notes}"
    );
    common::assert_contains(&notes, "be_blue/blue is ready but HAProxy has it maint");

    // A change through cutover writes both files again.
    let e = refused(
        "swap to a slot whose servers are all in maint",
        d.switch_live("blue"),
    )
    .await;
    common::assert_contains(&e, "undrain `blue` first");
    ok("undrain blue", d.undrain(&Target::slot("blue"))).await;
    ok("swap to blue", d.switch_live("blue")).await;
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("blue"));
    assert!(st.notes.is_empty(), "{:?}", st.notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_state_survives_a_restart_and_observe_retries() {
    let mut rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let d = rig.driver();
    ok("swap to green", d.switch_live("green")).await;
    ok("preview blue", d.set_preview("blue")).await;
    ok("drain node g2", d.drain(&Target::node("green", "g2"))).await;

    rig.stop();
    let e = match d.observe().await {
        Ok(st) => panic!("observe answered with HAProxy stopped: {st:#?}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        e.contains("connection refused") && e.contains("restarting"),
        "{e}"
    );
    assert!(e.contains(&format!("127.0.0.1:{}", rig.admin)), "{e}");
    let e = refused("swap with HAProxy stopped", d.switch_live("blue")).await;
    common::assert_contains(&e, "connection refused");

    rig.start().await;
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("green"), "{st:#?}");
    assert_eq!(st.preview.as_deref(), Some("blue"));
    assert_eq!(node(&st, "green", "g2").admin, AdminState::Drain);
    assert_eq!(node(&st, "green", "g1").admin, AdminState::Ready);
    assert!(st.notes.is_empty(), "{:?}", st.notes);
    assert_eq!(who(&rig.url("/")).await, (200, "green".into()));
    assert_eq!(who(&rig.preview_url()).await, (200, "blue".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_refusals_quote_haproxy() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let map = rig.path("slots.map").display().to_string();

    // A backend HAProxy does not have: refused before `set map` is sent.
    let d = rig.driver_with("staging = \"be_staging\"", "staging = \"be_nowhere\"");
    let e = refused("swap to a missing backend", d.switch_live("staging")).await;
    assert!(
        e.contains("no backend `be_nowhere`") && e.contains("503"),
        "{e}"
    );
    let e = refused("preview on a missing backend", d.set_preview("staging")).await;
    common::assert_contains(&e, "no backend `be_nowhere`");
    assert!(
        rig.socat(&format!("show map {map}"))
            .await
            .contains("live be_blue")
    );
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));
    let st = observe(d.as_ref()).await;
    common::assert_problem(&st, "be_nowhere");

    // HAProxy's own error texts, quoted.
    let d = rig.driver();
    let e = refused(
        "drain of an unknown server",
        d.drain(&Target::node("blue", "ghost")),
    )
    .await;
    common::assert_contains(&e, "\"No such server.\"");
    let e = refused(
        "drain of an undeclared node",
        d.drain(&Target::node("green", "g9")),
    )
    .await;
    common::assert_contains(&e, "slot `green` has no node `g9`");
    let wrong_map = rig.driver_with(
        &format!("map = \"{map}\""),
        &format!("map = \"{map}.nope\""),
    );
    let e = match wrong_map.observe().await {
        Ok(st) => panic!("observe with a wrong map answered: {st:#?}"),
        Err(e) => format!("{e:#}"),
    };
    common::assert_contains(&e, "\"Unknown map identifier");
    common::assert_contains(&e, "map() converter");

    // No preview key: the verb is not offered.
    let d = rig.driver_with("preview_key = \"preview\"\n", "");
    assert!(!d.supports(Verb::SetPreview));
    let e = refused("preview without key", d.set_preview("blue")).await;
    common::assert_contains(&e, "no `preview_key`");

    // Nodes named differently from their servers.
    let renamed = rig
        .cutover_toml
        .replace("name = \"g1\"", "name = \"web1\"")
        .replace("name = \"g2\"", "name = \"web2\"")
        + "node_servers = { green = { web1 = \"g1\", web2 = \"g2\" } }\n";
    let d = rig.driver_from(&renamed);
    ok("drain web2", d.drain(&Target::node("green", "web2"))).await;
    let st = observe(d.as_ref()).await;
    assert_eq!(
        node(&st, "green", "web2").admin,
        AdminState::Drain,
        "{st:#?}"
    );
    assert_eq!(node(&st, "green", "web1").admin, AdminState::Ready);
    let raw = rig.socat("show servers state be_green").await;
    assert!(
        raw.contains(" g2 127.0.0.1 2 8 "),
        "server g2 drained:\n{raw}"
    );
    ok("undrain web2", d.undrain(&Target::node("green", "web2"))).await;

    // A slot the router does not know.
    let d = rig.driver_with(", staging = \"be_staging\"", "");
    let e = refused("swap to an unrouted slot", d.switch_live("staging")).await;
    common::assert_contains(&e, "slot `staging` has no backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn socket_faults_give_clear_errors() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let admin_line = format!("socket = \"127.0.0.1:{}\"", rig.admin);
    let fail = |d: Arc<dyn Router>| async move {
        match d.observe().await {
            Ok(st) => panic!("observe answered: {st:#?}"),
            Err(e) => format!("{e:#}"),
        }
    };

    // Missing socket file.
    let missing = rig.path("nope.sock").display().to_string();
    let e = fail(rig.driver_with(&admin_line, &format!("socket = \"{missing}\""))).await;
    assert!(e.contains("does not exist") && e.contains(&missing), "{e}");

    // Nothing listening.
    let port = free_port();
    let e = fail(rig.driver_with(&admin_line, &format!("socket = \"127.0.0.1:{port}\""))).await;
    common::assert_contains(&e, "connection refused");

    // Permission denied: a socket with `mode 000`, opened as an unprivileged user.
    let private = rig.path("private.sock").display().to_string();
    let d = rig.driver_with(&admin_line, &format!("socket = \"{private}\""));
    let e = std::thread::spawn(move || {
        // Root ignores file modes; an fsuid of nobody (this thread only) does not.
        if unsafe { libc::geteuid() } == 0 {
            unsafe { libc::setfsuid(65534) };
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(d.observe())
            .map(|_| ())
            .map_err(|e| format!("{e:#}"))
    })
    .join()
    .expect("thread")
    .expect_err("observe through a mode 000 socket");
    assert!(
        e.contains("permission denied") && e.contains(&private),
        "{e}"
    );

    // Not admin level: reading works, server changes are refused with HAProxy's text.
    let operator = rig.path("operator.sock").display().to_string();
    let d = rig.driver_with(&admin_line, &format!("socket = \"{operator}\""));
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("blue"));
    assert!(
        st.notes.iter().any(|n| n.contains("level `operator`")),
        "{:?}",
        st.notes
    );
    let e = refused("drain at operator level", d.drain(&Target::slot("staging"))).await;
    assert!(
        e.contains("\"Permission denied\"") && e.contains("level admin"),
        "{e}"
    );
    assert_eq!(
        observe(d.as_ref()).await.slots["staging"].admin,
        AdminState::Ready
    );

    // Something that accepts and never answers: the timeout ends it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let d = rig.driver_from(&rig.cutover_toml.replace(
        &admin_line,
        &format!("socket = \"127.0.0.1:{port}\"\ntimeout = \"300ms\""),
    ));
    let t = Instant::now();
    let e = fail(d).await;
    assert!(e.contains("did not answer") && e.contains("300ms"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    hold.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_zero_failed_requests_across_20_swap_rollback_pairs() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let d = rig.driver();
    let (report, switches, _) = swaps_under_load(&rig, &d, 20).await;
    print_report("map setup, 20 swap+rollback pairs", &report, switches);
    assert_eq!(report.failed(), 0, "{:?}", report.first_errors);
    common::assert_served_by(&report.by_slot, &["blue", "green"]);
    assert!(
        switches >= 20,
        "the answering slot changed only {switches} times"
    );
    assert_eq!(observe(d.as_ref()).await.live.as_deref(), Some("blue"));
}

// ---------------------------------------------------------------------------------------
// Servers setup

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_swap_rollback_drain_and_maintenance() {
    let rig = common::or_skip!(Rig::for_test(Setup::Servers).await);
    let d = rig.driver();
    assert!(!d.supports(Verb::SetPreview));
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("blue"), "{st:#?}");
    // `disabled` in haproxy.cfg (maint) with maintenance off: a standby, so idle, not
    // MAINTENANCE.
    for s in ["green", "staging"] {
        assert_eq!(st.slots[s].admin, AdminState::Disabled, "{s}: {st:#?}");
        assert_eq!(st.slots[s].check.as_deref(), Some("standby (maint)"), "{s}");
        assert_eq!(st.role_of(s), Role::Idle, "{s}");
    }
    assert_eq!(st.maintenance, None);
    assert!(st.notes.is_empty(), "{:?}", st.notes);
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));

    // Maintenance while green and staging are still `disabled` (also in maint): blue is the
    // one that comes back.
    ok(
        "maintenance on",
        d.maintenance(true, &MaintenanceMode::Page),
    )
    .await;
    assert_eq!(who(&rig.url("/")).await.0, 503);
    let st = observe(d.as_ref()).await;
    assert_eq!(st.maintenance, Some(MaintenanceMode::Page));
    assert_eq!(st.live.as_deref(), Some("blue"), "{st:#?}");
    assert_eq!(st.role_of("blue"), Role::Maintenance);
    assert_eq!(
        st.role_of("green"),
        Role::Idle,
        "a standby during maintenance"
    );
    assert!(st.notes.is_empty(), "{:?}", st.notes);
    ok(
        "maintenance off",
        d.maintenance(false, &MaintenanceMode::Page),
    )
    .await;
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));

    // Swap with a slow request in flight on blue: blue drains to zero sessions.
    let req = slow_request_on_blue(&rig, d.as_ref()).await;
    ok("swap to green", d.switch_live("green")).await;
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("green"));
    assert_eq!(st.slots["green"].admin, AdminState::Ready);
    assert_eq!(st.slots["blue"].admin, AdminState::Drain);
    assert!(sessions(&st, "blue") >= 1, "{st:#?}");
    for _ in 0..5 {
        assert_eq!(who(&rig.url("/")).await, (200, "green".into()));
    }
    observe_until(d.as_ref(), Duration::from_secs(5), "blue drained", |s| {
        sessions(s, "blue") == 0
    })
    .await;
    assert_eq!(req.await.expect("slow request"), (200, "blue".into()));
    let state = std::fs::read_to_string(rig.path("server-state")).expect("server-state file");
    common::assert_contains(&state, " be_app ");

    // Rollback.
    ok("rollback to blue", d.switch_live("blue")).await;
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("blue"));
    assert_eq!(st.slots["green"].admin, AdminState::Drain);
    assert!(st.notes.is_empty(), "{:?}", st.notes);

    // The only live slot cannot be drained.
    let e = refused("drain of the live slot", d.drain(&Target::slot("blue"))).await;
    common::assert_contains(&e, "only slot taking live traffic");
    let e = refused("drain of a node", d.drain(&Target::node("blue", "b1"))).await;
    common::assert_contains(&e, "mode = \"map\"");

    // A slot whose server is down: enabled, refused by HAProxy's check, put back in maint;
    // blue stays live.
    rig.slots[2].stop();
    let e = refused("swap to a down slot", d.switch_live("staging")).await;
    assert!(
        e.contains("health check failed") && e.contains("L4CON"),
        "{e}"
    );
    common::assert_contains(&e, "back to maint");
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("blue"));
    assert_eq!(st.slots["staging"].admin, AdminState::Disabled, "standby");
    assert_eq!(st.role_of("staging"), Role::Idle);
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));
    // Drained and down by checks: refused before anything changes.
    ok("undrain staging", d.undrain(&Target::slot("staging"))).await;
    ok("drain staging", d.drain(&Target::slot("staging"))).await;
    observe_until(
        d.as_ref(),
        Duration::from_secs(8),
        "staging down by checks",
        |s| {
            s.slots["staging"]
                .check
                .as_deref()
                .is_some_and(|c| c.starts_with("DOWN"))
        },
    )
    .await;
    let e = refused("swap to a drained down slot", d.switch_live("staging")).await;
    assert!(e.contains("is down") && e.contains("L4CON"), "{e}");
    common::assert_contains(&e, "nothing was changed");
    assert_eq!(observe(d.as_ref()).await.live.as_deref(), Some("blue"));

    // Maintenance: the page from haproxy.cfg, then back to blue.
    maintenance_page_on(&rig, d.as_ref()).await;
    let e = refused("swap during maintenance", d.switch_live("green")).await;
    common::assert_contains(&e, "maintenance is on");
    let e = refused(
        "redirect",
        d.maintenance(true, &MaintenanceMode::Redirect { to: "green".into() }),
    )
    .await;
    common::assert_contains(&e, "is a swap");
    maintenance_off(&rig, d.as_ref()).await;
    let e = refused("preview", d.set_preview("green")).await;
    common::assert_contains(&e, "no preview");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_drift_after_a_change_by_hand() {
    let mut rig = common::or_skip!(Rig::for_test(Setup::Servers).await);
    let d = rig.driver();
    ok("swap to green", d.switch_live("green")).await;
    assert!(observe(d.as_ref()).await.notes.is_empty());

    assert_eq!(rig.socat("set server be_app/blue state ready").await, "\n");
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live, None, "two slots take traffic: {st:#?}");
    let notes = st.notes.join("\n");
    common::assert_contains(&notes, "several slots take live traffic");
    common::assert_contains(&notes, "be_app/blue is drain but HAProxy has it ready");

    assert_eq!(rig.socat("set server be_app/green state drain").await, "\n");
    let st = reads_back(d.as_ref(), "blue").await;
    assert!(
        st.notes
            .iter()
            .any(|n| n.contains("be_app/green is ready but HAProxy has it drain"))
    );
    assert_eq!(who(&rig.url("/")).await, (200, "blue".into()));

    ok("swap to green", d.switch_live("green")).await;
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("green"));
    assert!(st.notes.is_empty(), "{:?}", st.notes);

    // A restart keeps the states from the server-state file (green was `disabled` in
    // haproxy.cfg).
    rig.stop();
    let e = format!("{:#}", d.observe().await.expect_err("HAProxy is stopped"));
    assert!(
        e.contains("connection refused") && e.contains("admin.sock"),
        "{e}"
    );
    rig.start().await;
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("green"), "{st:#?}");
    assert_eq!(st.slots["blue"].admin, AdminState::Drain);
    assert!(st.notes.is_empty(), "{:?}", st.notes);
    assert_eq!(who(&rig.url("/")).await, (200, "green".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_failed_requests_across_20_swap_rollback_pairs() {
    let rig = common::or_skip!(Rig::for_test(Setup::Servers).await);
    let d = rig.driver();
    // Green comes out of `disabled` once, before the measured run.
    ok("swap to green", d.switch_live("green")).await;
    ok("rollback to blue", d.switch_live("blue")).await;
    let (report, switches, _) = swaps_under_load(&rig, &d, 20).await;
    print_report("servers setup, 20 swap+rollback pairs", &report, switches);
    assert_eq!(report.failed(), 0, "{:?}", report.first_errors);
    assert!(report.by_slot.get("green").copied().unwrap_or(0) > 0);
    assert!(
        switches >= 20,
        "the answering slot changed only {switches} times"
    );
}

// ---------------------------------------------------------------------------------------
// Config

#[test]
fn config_mistakes_are_located_and_named() {
    let toml_text =
        doc_block("map setup: cutover.toml").replace("blue = \"be_blue\"", "purple = \"be_blue\"");
    let e = cutover::config::parse(&toml_text, Path::new("cutover.toml"))
        .expect_err("unknown slot in backends");
    let s = e.to_string();
    assert!(s.starts_with("cutover.toml:"), "{s}");
    common::assert_contains(&s, "`backends`: `purple` is not a slot of this environment");
    let toml_text = doc_block("servers setup: cutover.toml")
        .replace("mode = \"servers\"", "mode = \"weights\"");
    common::fails_with(
        cutover::config::parse(&toml_text, Path::new("cutover.toml")),
        "bad mode",
        "weights",
    );
}

/// Issue 7's fleet: two real HAProxy instances in front of one environment. The second refuses
/// its switch (its config lacks the target backend, a fleet that drifted apart): the first is
/// switched back, the operation names the router, and both agree again.
#[tokio::test]
async fn a_fleet_of_two_haproxies_is_switched_back_when_the_second_fails() {
    let (one, two, state) = common::or_skip!(two_haproxies().await);
    let broken = two
        .router_table("edge-2", "")
        .replace("green = \"be_green\"", "green = \"be_green_v2\"");
    let text = one.fleet_config(state.path(), "", &[one.router_table("edge-1", ""), broken]);
    let engine = common::engine(&text);
    let (out, _) = common::run_op_ends(
        &engine,
        common::swap_to("green"),
        cutover::ops::Verdict::Failed,
    )
    .await;
    common::assert_contains(
        &out.message,
        "router `edge-2` refused the switch to `green`",
    );
    assert!(
        out.message.contains("be_green_v2"),
        "HAProxy's side of it is named: {}",
        out.message
    );
    common::assert_contains(&out.message, "`edge-1` switched back to `blue`");
    // Both routers agree again, and both public listeners serve blue.
    let states = engine.observe_all().await.expect("observe");
    assert_eq!(
        states.iter().map(|s| s.live.as_deref()).collect::<Vec<_>>(),
        [Some("blue"), Some("blue")]
    );
    assert_eq!(who(&one.url("/")).await.1, "blue");
    assert_eq!(who(&two.url("/")).await.1, "blue");
}

/// Seed 003's rolling deploy on HAProxy: green's two servers are drained, deployed, smoke
/// tested and put back one at a time, and green keeps serving throughout.
#[tokio::test]
async fn a_rolling_deploy_over_greens_servers() {
    let bin = common::or_skip!(common::require_binary("haproxy"));
    let curl = common::or_skip!(common::require_binary("curl"));
    let rig = Rig::new(Setup::Map, bin).await;
    let driver = rig.driver();
    ok("make green live", driver.switch_live("green")).await;
    let state = TempDir::new().expect("state dir");
    let i = rig
        .cutover_toml
        .find("[[environment.slot]]")
        .expect("slots");
    let text = format!(
        "[settings]\nstate_dir = \"{}\"\n\n{}\n[environment.rolling]\ndeploy = [\"{}\", \"-sf\", \"-X\", \"POST\", \"{{address}}/deploy?version={{version}}\"]\n\
         drain_timeout = \"5s\"\nsmoke_timeout = \"3s\"\n\n{}",
        state.path().display(),
        &rig.cutover_toml[..i],
        curl.display(),
        &rig.cutover_toml[i..]
    );
    let engine = common::engine(&text);
    // Keep asking the public URL while the roll runs: green must answer every time.
    let load = load::start(LoadOptions {
        url: rig.url("/"),
        concurrency: 4,
        // Ceilings far beyond any machine's need: the test stops the load after the roll.
        max_requests: 50_000_000,
        max_duration: Duration::from_secs(240),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    });
    let (out, _) = common::run_op(
        &engine,
        cutover::ops::OpKind::Rolling {
            slot: "green".into(),
            version: Some("2.1.0".into()),
        },
        false,
        false,
    )
    .await;
    let report = load.finish().await;
    common::assert_verdict(&out, cutover::ops::Verdict::Done);
    common::assert_contains(&out.message, "all 2 nodes of `green`");
    let greens: Vec<&SlotServer> = rig
        .slots
        .iter()
        .filter(|s| s.controls.name == "green")
        .collect();
    assert!(
        greens.iter().all(|s| s.controls.version() == "2.1.0"),
        "both servers deployed"
    );
    let st = observe(driver.as_ref()).await;
    assert_eq!(node(&st, "green", "g1").admin, AdminState::Ready);
    assert_eq!(node(&st, "green", "g2").admin, AdminState::Ready);
    assert_eq!(
        report.failed(),
        0,
        "the roll dropped requests: {:?}",
        report.first_errors
    );
    assert!(report.sent > 0);
}

// ---------------------------------------------------------------------------------------
// Benchmarks (scripts/bench): `cargo test --release --test haproxy -- --ignored bench_ --nocapture`

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_drill_map() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    common::bench_drill("haproxy (map, the default)", &rig.cutover_toml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_drill_servers() {
    let rig = common::or_skip!(Rig::for_test(Setup::Servers).await);
    common::bench_drill("haproxy (server state)", &rig.cutover_toml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_throughput_direct_embedded_haproxy() {
    let rig = common::or_skip!(Rig::for_test(Setup::Servers).await);
    let (live, preview) = (&rig.slots[0], &rig.slots[1]);
    common::bench_three_ways(
        live,
        preview,
        rig.dir.path(),
        "through HAProxy",
        &rig.url("/"),
    )
    .await;
}

/// A fleet of this rig's HAProxy (`edge-1`) and an exec router (`edge-2`) whose live slot
/// lives in a file; `exec_extra` adds keys to the exec router. Written as a config file.
fn haproxy_and_exec_fleet(rig: &Rig, state: &Path, exec_extra: &str) -> (PathBuf, PathBuf) {
    let i = rig
        .cutover_toml
        .find("[[environment.router]]")
        .expect("router table");
    let head = rig.cutover_toml[..i].replacen(
        "name = \"shop\"",
        "name = \"shop\"\nfleet = \"sequential\"\nwatch = \"0s\"\nverify_timeout = \"5s\"",
        1,
    );
    let edge1 = rig.cutover_toml[i..].replacen(
        "kind = \"haproxy\"",
        "kind = \"haproxy\"\nname = \"edge-1\"",
        1,
    );
    let file = state.join("edge-2.live");
    std::fs::write(&file, "blue").expect("exec state");
    let f = file.display();
    let text = format!(
        "[settings]\ngate_checks = 1\nstate_dir = \"{}\"\n\n{head}\n{edge1}\n\
         [[environment.router]]\nkind = \"exec\"\nname = \"edge-2\"\n\
         observe = [\"sh\", \"-c\", \"echo live=$(cat {f})\"]\n{exec_extra}\n",
        state.display()
    );
    let path = state.join("cutover.toml");
    std::fs::write(&path, &text).expect("config");
    (path, file)
}

/// Run the cutover CLI off the test's runtime (which serves the slots meanwhile).
/// The map setup's rig behind a fleet of two (see haproxy_and_exec_fleet), for `test`: the rig,
/// the state dir, the config's path and edge-2's state file. `exec_extra` gets the state dir.
async fn fleet(
    test: &str,
    exec_extra: impl FnOnce(&Path) -> String,
) -> Option<(Rig, TempDir, PathBuf, PathBuf)> {
    let rig = Rig::for_test(test, Setup::Map).await?;
    let state = TempDir::new().expect("state");
    let extra = exec_extra(state.path());
    let (config, file) = haproxy_and_exec_fleet(&rig, state.path(), &extra);
    Some((rig, state, config, file))
}

/// A named pipe at `path`: a script's `read _ < path` blocks until the test writes to it (an
/// event, not a time), and ends at once when the script is killed.
fn fifo(path: &Path) -> &Path {
    let made = Command::new("mkfifo").arg(path).status();
    assert!(made.is_ok_and(|s| s.success()), "mkfifo {}", path.display());
    path
}

/// edge-2's `switch_live`: `script` run by sh with the slot as `$1`.
fn sh_switch(script: String) -> String {
    format!("switch_live = [\"sh\", \"-c\", \"{script}\", \"sh\", \"{{to}}\"]")
}

async fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
    c.arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null());
    tokio::task::spawn_blocking(move || c.output().expect("run cutover"))
        .await
        .expect("join")
}

/// Wait (generously) for a file the exec router's command writes when it starts.
async fn wait_file(path: &Path) -> String {
    let t = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(path)
            && !s.trim().is_empty()
        {
            return s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{} never written",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_fleet_swap_killed_between_routers_is_shown_interrupted_and_recovered() {
    // edge-2's switch is slow: it says it started (with its pid), then waits on a pipe no
    // one writes to, until the test kills it.
    let Some((rig, state, config, _)) = fleet(
        "a_fleet_swap_killed_between_routers_is_shown_interrupted_and_recovered",
        |d| {
            sh_switch(format!(
                "echo $$ > {}; read _ < {}; echo $1 > {}",
                d.join("started").display(),
                fifo(&d.join("never")).display(),
                d.join("edge-2.live").display()
            ))
        },
    )
    .await
    else {
        return;
    };
    let started = state.path().join("started");
    let mut swap = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .arg("--config")
        .arg(&config)
        .args(["swap", "shop", "--to", "green", "--yes", "--no-watch"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // edge-1 is switched, edge-2's command is running: kill -9 cutover (and the command it
    // left behind, so it cannot finish the switch later).
    let sh: i32 = wait_file(&started).await.trim().parse().expect("pid");
    assert_eq!(who(&rig.url("/")).await.1, "green", "edge-1 switched first");
    swap.kill().expect("kill -9");
    swap.wait().expect("reaped");
    let _ = Command::new("kill").args(["-9", &sh.to_string()]).status();

    let o = cli(&config, &["status", "shop"]).await;
    let out = common::printed(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    common::assert_contains(&out, "INTERRUPTED swap blue → green");
    common::assert_contains(&out, "router `edge-1` changed, router `edge-2` not changed");
    common::assert_contains(&out, "cutover recover shop");
    common::assert_contains(&out, "ROUTERS DISAGREE");
    // A new swap is refused until it is resolved.
    let o = cli(
        &config,
        &["swap", "shop", "--to", "green", "--yes", "--no-watch"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", common::printed(&o));
    assert!(common::printed(&o).contains("cutover recover shop"));

    let o = cli(&config, &["recover", "shop", "--yes"]).await;
    let out = common::printed(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    common::assert_contains(&out, "every router serves `blue`");
    assert_eq!(who(&rig.url("/")).await.1, "blue");
    let o = cli(&config, &["status", "shop"]).await;
    let out = common::printed(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(
        !out.contains("INTERRUPTED") && !out.contains("DISAGREE"),
        "{out}"
    );
    // The audit log holds the swap's intent and the recovery, in order.
    let audit: String = std::fs::read_dir(state.path())
        .expect("state")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("audit"))
        .map(|e| std::fs::read_to_string(e.path()).expect("audit"))
        .collect();
    let records: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let swap_intent = records
        .iter()
        .position(|r| r["operation"] == "swap" && r["result"] == "started")
        .unwrap_or_else(|| panic!("no swap intent: {audit}"));
    let recovered = records
        .iter()
        .position(|r| r["operation"] == "recover" && r["result"] == "done")
        .unwrap_or_else(|| panic!("no recovery: {audit}"));
    assert!(swap_intent < recovered, "{audit}");
}

#[tokio::test]
async fn a_fleet_drain_whose_second_router_fails_leaves_the_first_undrained() {
    let Some((_rig, state, config, _)) = fleet(
        "a_fleet_drain_whose_second_router_fails_leaves_the_first_undrained",
        |_| {
            "switch_live = [\"true\"]\n\
             drain = [\"sh\", \"-c\", \"echo 'pool {slot} is not known here' >&2; exit 3\"]\n\
             undrain = [\"true\"]"
                .to_string()
        },
    )
    .await
    else {
        return;
    };
    let o = cli(&config, &["drain", "shop", "green"]).await;
    let out = common::printed(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    common::assert_contains(&out, "router `edge-2` refused");
    assert!(
        out.contains("pool green is not known here"),
        "what it answered: {out}"
    );
    common::assert_contains(&out, "`edge-1` put back as it was");
    let engine = common::engine(&std::fs::read_to_string(&config).expect("config"));
    let st = observe(engine.routers[0].as_ref()).await;
    assert_eq!(st.slots["green"].admin, AdminState::Ready, "{st:?}");
    assert!(
        std::fs::read_dir(state.path())
            .expect("state")
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().ends_with(".journal.json")),
        "the journal is closed"
    );
}

#[tokio::test]
async fn sigint_during_a_fleet_switch_finishes_the_step_then_quits() {
    // edge-2's switch waits until the test releases it, after the signal.
    let Some((rig, state, config, file)) = fleet(
        "sigint_during_a_fleet_switch_finishes_the_step_then_quits",
        |d| {
            sh_switch(format!(
                "echo $$ > {s}; read _ < {r}; echo $1 > {f}",
                s = d.join("started").display(),
                r = fifo(&d.join("release")).display(),
                f = d.join("edge-2.live").display()
            ))
        },
    )
    .await
    else {
        return;
    };
    let started = state.path().join("started");
    let release = state.path().join("release");
    let mut swap = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .arg("--config")
        .arg(&config)
        .args(["swap", "shop", "--to", "green", "--yes"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let err = swap.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = Vec::new();
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l.clone());
            all.push(l);
        }
        all.join("\n")
    });
    wait_file(&started).await;
    let _ = Command::new("kill")
        .args(["-INT", &swap.id().to_string()])
        .status();
    // The step ends only when the test releases it, once cutover has said it will stop.
    let said = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Ok(l) = lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            if l.contains("stopping at the next safe point") {
                return true;
            }
        }
        false
    })
    .await
    .expect("join");
    assert!(said, "cutover did not acknowledge SIGINT");
    // Opening the pipe waits for the script's end of it (it is there, or about to be).
    let released = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || std::fs::write(&release, "go\n")),
    )
    .await;
    assert!(matches!(released, Ok(Ok(Ok(())))), "release: {released:?}");
    let o = tokio::task::spawn_blocking(move || swap.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let stderr = reader.join().expect("reader");
    let out = format!("{}{stderr}", common::printed(&o));
    common::assert_contains(&out, "stopping at the next safe point");
    // Both routers were switched: the step finished; nothing was left half-done.
    assert_eq!(
        std::fs::read_to_string(&file).expect("edge-2").trim(),
        "green",
        "{out}"
    );
    assert_eq!(who(&rig.url("/")).await.1, "green");
    assert!(!state.path().join("shop.journal.json").exists(), "{out}");
}

/// Issue #23 on a real proxy: the warm-up reaches both of green's servers directly before the
/// switch (never through HAProxy), then a smoke command that fails for green rolls the swap
/// back by itself.
#[tokio::test]
async fn warmup_reaches_greens_servers_before_the_switch_and_a_failed_smoke_test_rolls_back() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    assert_eq!(who(&rig.url("/")).await.1, "blue");
    let state = TempDir::new().expect("state dir");
    let hooks = "auto_rollback = true\nwatch = \"0s\"\n\
                 warmup_paths = [{ path = \"/warm\", times = 2 }]\n\
                 smoke = [\"sh\", \"-c\", \"echo smoke of $0 via $1; test \\\"$0\\\" != green\", \"{slot}\", \"{public_url}\"]\n";
    let text = rig.config_with(state.path(), hooks);
    let engine = common::engine(&text);
    let greens: Vec<Arc<cutover::slotserver::SlotControls>> = rig
        .slots
        .iter()
        .filter(|s| s.controls.name == "green")
        .map(|s| s.controls.clone())
        .collect();
    assert_eq!(greens.len(), 2);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (_c, cancel) = tokio::sync::watch::channel(cutover::ops::Interrupt::None);
    let req = cutover::ops::OpRequest {
        watch: false,
        ..cutover::ops::OpRequest::new(common::swap_to("green"))
    };
    let e = engine.clone();
    let task = tokio::spawn(async move {
        e.run(req, cutover::ops::GateSource::ProbeNow, tx, cancel)
            .await
    });
    let mut at_apply = None;
    let mut seen = Vec::new();
    while let Some(p) = rx.recv().await {
        if let cutover::ops::Progress::Step { step, ok, message } = p {
            if step == cutover::ops::Step::Apply && ok.is_none() && at_apply.is_none() {
                at_apply = Some(greens.iter().map(|g| g.hits("/warm")).collect::<Vec<u64>>());
            }
            seen.push(format!("{} {ok:?} {message}", step.label()));
        }
    }
    let out = task.await.expect("join");
    assert_eq!(
        at_apply,
        Some(vec![2, 2]),
        "each of green's servers was warmed before the switch: {seen:#?}"
    );
    let others: u64 = rig
        .slots
        .iter()
        .filter(|s| s.controls.name != "green")
        .map(|s| s.controls.hits("/warm"))
        .sum();
    assert_eq!(others, 0, "no warm-up request went through HAProxy");
    common::assert_verdict_seen(&out, cutover::ops::Verdict::RolledBack, &seen);
    common::assert_contains_all(
        &out.message,
        &[
            "the smoke test of `green` failed",
            "rolled back to `blue` automatically",
        ],
    );
    assert!(
        seen.iter()
            .any(|l| l.contains(&format!("smoke of green via {}", rig.url("/")))),
        "the smoke command's output is shown: {seen:#?}"
    );
    assert_eq!(
        who(&rig.url("/")).await.1,
        "blue",
        "traffic is back on blue"
    );
    let st = observe(rig.driver().as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("blue"));
}

#[tokio::test]
async fn a_fleet_router_that_switched_then_failed_is_put_back_and_where_each_ended_is_said() {
    // edge-2 renames its pointer, then its reload fails (the symlink + stopped nginx):
    // the switch took effect but the command reports failure.
    let Some((rig, state, config, file)) = fleet(
        "a_fleet_router_that_switched_then_failed_is_put_back_and_where_each_ended_is_said",
        |d| {
            sh_switch(format!(
                "echo $1 > {}; echo 'nginx: reload failed' >&2; exit 1",
                d.join("edge-2.live").display()
            ))
        },
    )
    .await
    else {
        return;
    };
    let o = cli(
        &config,
        &["swap", "shop", "--to", "green", "--yes", "--no-watch"],
    )
    .await;
    let out = common::printed(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    common::assert_contains(&out, "router `edge-2` refused the switch to `green`");
    assert!(out.contains("reload failed"), "what it answered: {out}");
    common::assert_contains(&out, "`edge-1` switched back to `blue`");
    common::assert_contains(&out, "`edge-2` switched back to `blue`");
    common::assert_contains(&out, "now `edge-1` → blue, `edge-2` → blue");
    common::assert_lacks(&out, "ROUTERS DISAGREE");
    assert_eq!(
        std::fs::read_to_string(&file).expect("edge-2").trim(),
        "blue"
    );
    assert_eq!(who(&rig.url("/")).await.1, "blue");

    // The same, but edge-2 cannot be put back: the verdict says so in its first words.
    let (config, _) = haproxy_and_exec_fleet(
        &rig,
        state.path(),
        &sh_switch(format!(
            "[ $1 = green ] && echo green > {}; exit 1",
            file.display()
        )),
    );
    let o = cli(
        &config,
        &[
            "swap",
            "shop",
            "--to",
            "green",
            "--yes",
            "--no-watch",
            "--json",
        ],
    )
    .await;
    let out = common::printed(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("json");
    let msg = v["message"].as_str().expect("message");
    assert!(
        msg.starts_with("ROUTERS DISAGREE (edge-2 not put back)"),
        "{msg}"
    );
    common::assert_contains(msg, "now `edge-1` → blue, `edge-2` → green");
    assert!(
        v["record"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("ROUTERS DISAGREE"))
    );
}

#[tokio::test]
async fn verify_probes_each_routers_own_public_url() {
    let (one, two, state) = common::or_skip!(two_haproxies().await);
    let public_url = |url: &str| format!("\npublic_url = \"{url}\"");
    let config = |edge2_public: &str| {
        let routers = [
            one.router_table("edge-1", &public_url(&one.url("/"))),
            two.router_table("edge-2", &public_url(edge2_public)),
        ];
        one.fleet_config(state.path(), "\nverify_timeout = \"2s\"", &routers)
    };
    // Each frontend is verified: both serve green's version.
    let engine = common::engine(&config(&two.url("/")));
    let (out, _) = common::run_op_ends(
        &engine,
        common::swap_to("green"),
        cutover::ops::Verdict::Done,
    )
    .await;
    let verify = common::step(&out, "verify");
    assert!(
        verify.detail.contains("all 2 public URLs serve 2.0.0"),
        "{verify:?}"
    );
    assert_eq!(who(&two.url("/")).await.1, "green");

    // A frontend that still serves the old version fails the verify, naming it, and the
    // fleet is switched back. (edge-2's "frontend" here is blue's own server.)
    let blue = one.slots[0].url();
    let engine = common::engine(&config(&format!("{blue}/")));
    common::run_op_ends(
        &engine,
        common::swap_to("blue"),
        cutover::ops::Verdict::Done,
    )
    .await;
    let (out, _) = common::run_op_ends(
        &engine,
        common::swap_to("green"),
        cutover::ops::Verdict::Failed,
    )
    .await;
    assert!(
        out.message.contains(&blue) && out.message.contains("(wanted 2.0.0)"),
        "{}",
        out.message
    );
    common::assert_contains(&out.message, "switched back to `blue`");
    assert_eq!(who(&one.url("/")).await.1, "blue");
}

/// Canary weights in either setup: each share read back, measured under a bounded load by the
/// slot servers' own counts, and 0 % puts everything back on the live slot; what a reload
/// would read is in the map file or the server-state file.
async fn canary_weights_split_the_live_traffic(setup: Setup) {
    let rig = common::or_skip!(Rig::for_test(setup).await);
    let d = rig.driver();
    assert!(d.supports(Verb::Weights));
    let servers: Vec<&SlotServer> = rig.slots.iter().collect();
    let url = rig.url("/");

    for percent in [5u8, 25, 50, 100, 0] {
        ok(
            &format!("weights {percent} %"),
            d.set_weights("blue", "green", percent),
        )
        .await;
        let st = observe(d.as_ref()).await;
        assert_eq!(st.live.as_deref(), Some("blue"), "a split is not a switch");
        assert_eq!(
            st.weights
                .as_ref()
                .map(|w| (w.live.as_str(), w.canary.as_str(), w.canary_percent)),
            (percent > 0).then_some(("blue", "green", percent)),
            "{st:#?}"
        );
        assert!(st.notes.is_empty(), "no drift: {:?}", st.notes);
        // HAProxy's rand(100) is random: 4000 answers keep 3 points above 3.5 sigma.
        common::assert_canary_share(&servers, "green", &url, 4_000, percent).await;
    }
    if setup == Setup::Map {
        let map = std::fs::read_to_string(rig.path("slots.map")).expect("map file");
        common::assert_contains(&map, "canary be_green");
        common::assert_contains(&map, "canary.weight 0");
    } else {
        // The abort: blue back at its weight from haproxy.cfg (1), green at 0 and drained.
        let file = std::fs::read_to_string(rig.path("server-state")).expect("state file");
        let states = router::haproxy::parse_servers_state(&file).expect("parses");
        let of = |srv: &str| {
            let st = states.iter().find(|s| s.server == srv).expect("server");
            (st.admin(), st.weight)
        };
        assert_eq!(of("blue"), (AdminState::Ready, Some((1, 1))));
        assert_eq!(of("green"), (AdminState::Drain, Some((0, 1))));
    }

    // While green has a share: its drain and maintenance are refused, a swap ends the split.
    ok("weights 25 %", d.set_weights("blue", "green", 25)).await;
    let e = refused("drain the canary", d.drain(&Target::slot("green"))).await;
    common::assert_contains(&e, "is the canary with 25 %");
    let e = refused(
        "maintenance during a canary",
        d.maintenance(true, &MaintenanceMode::Page),
    )
    .await;
    common::assert_contains(&e, "set its weight to 0");
    let e = refused(
        "a live slot that is not live",
        d.set_weights("green", "staging", 10),
    )
    .await;
    common::assert_contains(&e, "is not the live slot");
    ok("swap to the canary", d.switch_live("green")).await;
    let st = observe(d.as_ref()).await;
    assert_eq!(st.live.as_deref(), Some("green"));
    assert_eq!(st.weights, None, "{st:#?}");
    for _ in 0..20 {
        assert_eq!(who(&url).await, (200, "green".to_string()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn map_canary_weights_split_the_live_traffic() {
    canary_weights_split_the_live_traffic(Setup::Map).await;
}

/// In the servers setup the shares are server weights (`set server be_app/SRV weight N`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn servers_canary_weights_split_the_live_traffic() {
    canary_weights_split_the_live_traffic(Setup::Servers).await;
}

/// The canary operation on HAProxy's map setup: step 1 holds at 25 % (read back from the
/// map), green starts answering 500, and the analysis aborts back to 0 % on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_canary_on_haproxy_aborts_to_zero_when_green_fails() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let state = TempDir::new().expect("state dir");
    let extra = "canary_pause = \"60s\"\ncanary_max_error_rate = 0.01\nwatch = \"0s\"\n";
    let text = rig.config_with(state.path(), extra);
    let engine = common::engine(&text);
    let canary = cutover::ops::OpKind::Canary {
        to: "green".into(),
        steps: vec![
            cutover::model::CanaryStep::Weight(25),
            cutover::model::CanaryStep::Weight(100),
        ],
        interval: None,
    };
    let (task, mut rx, _cancel) = common::start_op(&engine, canary);
    // Step 1 verified.
    common::step_done(&mut rx, "every router sends 25 % to `green`").await;
    let d = rig.driver();
    let st = observe(d.as_ref()).await;
    assert_eq!(st.weights.map(|w| w.canary_percent), Some(25));
    for s in rig.slots.iter().filter(|s| s.controls.name == "green") {
        s.controls.set_healthy(false);
    }
    let out = common::under_load(rig.url("/health"), task).await;
    common::assert_verdict(&out, cutover::ops::Verdict::RolledBack);
    common::assert_contains_all(
        &out.message,
        &["step 1/2 (25 %) failed", "aborted; 100 % on blue after"],
    );
    let st = observe(d.as_ref()).await;
    assert_eq!((st.live.as_deref(), st.weights), (Some("blue"), None));
    for _ in 0..20 {
        assert_eq!(who(&rig.url("/")).await, (200, "blue".to_string()));
    }
}

/// The gate step of headless swaps and rollbacks, from their audit records: with HAProxy's own
/// checks vouching for the target (one fresh probe), and without (three in a row, 300 ms
/// apart: `disable health` on the socket takes HAProxy's checks away). Prints numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench gate"]
async fn bench_gate_time() {
    let rig = common::or_skip!(Rig::for_test(Setup::Map).await);
    let d = rig.driver();
    green_checks_up(d.as_ref()).await;
    let dir = TempDir::new().expect("dir");
    let gate_ms = |dir: &Path| -> Vec<u64> {
        let mut out = Vec::new();
        for e in walk(dir) {
            if !e
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("audit"))
            {
                continue;
            }
            for l in std::fs::read_to_string(&e).unwrap_or_default().lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                // The operation's last record (the intent record repeats the steps so far).
                if v["result"] != "done" {
                    continue;
                }
                if let Some(steps) = v["steps"].as_array() {
                    out.extend(
                        steps
                            .iter()
                            .filter(|s| s["step"] == "gate")
                            .filter_map(|s| s["ms"].as_u64()),
                    );
                }
            }
        }
        out
    };
    let mut rows = Vec::new();
    for vouched in [true, false] {
        if !vouched {
            for srv in ["be_blue/blue", "be_green/g1", "be_green/g2"] {
                use std::io::{Read, Write};
                let mut c = std::net::TcpStream::connect(("127.0.0.1", rig.admin)).expect("socket");
                c.write_all(format!("disable health {srv}\n").as_bytes())
                    .expect("send");
                let mut answer = String::new();
                let _ = c.read_to_string(&mut answer);
                assert!(answer.trim().is_empty(), "disable health {srv}: {answer}");
            }
            let off = common::eventually(Duration::from_secs(10), || async {
                observe(d.as_ref()).await.slots["green"].checks_up.is_none()
            })
            .await;
            assert!(off, "{:#?}", observe(d.as_ref()).await);
        }
        let before = gate_ms(dir.path()).len();
        for _ in 0..10 {
            for args in [
                &["swap", "shop", "--to", "green", "--yes", "--no-watch"][..],
                &["rollback", "shop", "--yes", "--no-watch"][..],
            ] {
                let o = common::cutover_cli(dir.path(), &rig.cutover_toml, args).await;
                assert_eq!(o.status.code(), Some(0), "{}", common::printed(&o));
            }
        }
        let mut ms: Vec<u64> = gate_ms(dir.path())[before..].to_vec();
        ms.sort_unstable();
        let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        rows.push(format!(
            "BENCH gate | haproxy (map) | {} | {} | {} ms | {} ms |",
            if vouched {
                "HAProxy's checks vouch: one fresh probe"
            } else {
                "no router checks: three probes in a row"
            },
            ms.len(),
            pick(0.5),
            pick(1.0)
        ));
    }
    for r in rows {
        println!("{r}");
    }
}

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
