//! The nginx driver against Debian's real nginx, started unprivileged on loopback ports with
//! every file in a temp dir, and stopped by the PID in its pid file.
//!
//! Run: `cargo test --test nginx -- --nocapture` (the MEASURED lines are the numbers in
//! docs/nginx.md).

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use common::{PidFileGuard, SlotServer};
use cutover::load::LoadReport;
use cutover::model::{AdminState, MaintenanceMode, Role};
use cutover::router::nginx::{self, Method, Pointer};
use cutover::router::{Router, RouterConfig, Target};

/// Load tests run one at a time so their counts do not depend on each other.
static LOAD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Rig {
    driver: nginx::Driver,
    /// The environment's cutover config.
    toml: String,
    public: u16,
    preview: u16,
    /// An include of the operator's own, in `http {}`: tests break the config through it.
    extra: PathBuf,
    error_log: PathBuf,
    slots: Vec<SlotServer>,
    // Dropped in this order: nginx first, then its directory.
    _nginx: PidFileGuard,
    tmp: tempfile::TempDir,
}

/// The nginx.conf an operator writes (docs/nginx.md shows this one), with the test's paths.
fn nginx_conf(t: &Path, driver: &nginx::Driver, public: u16, preview: u16, extra: &Path) -> String {
    let t = t.display();
    format!(
        r#"worker_processes 1;
pid {t}/nginx.pid;
error_log {t}/error.log;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {t}/tmp/body;
    proxy_temp_path {t}/tmp/proxy;
    fastcgi_temp_path {t}/tmp/fastcgi;
    uwsgi_temp_path {t}/tmp/uwsgi;
    scgi_temp_path {t}/tmp/scgi;

    include {upstreams};
    include {extra};

    server {{
        listen 127.0.0.1:{public};
        location / {{
            include {live};
        }}
    }}
    server {{
        listen 127.0.0.1:{preview};
        location / {{
            include {next};
        }}
    }}
}}
"#,
        upstreams = driver.http_include_path().display(),
        extra = extra.display(),
        live = driver.include_path(Pointer::Live).display(),
        next = driver.include_path(Pointer::Next).display(),
    )
}

/// `nodes`: slot name -> extra node servers (the slot's own server is node `n1`).
async fn rig(
    test: &str,
    method: Method,
    names: &[&str],
    nodes: &[(&str, usize)],
    extra_router: &str,
) -> Option<Rig> {
    let bin = common::require_binary(test, "nginx")?;
    let tmp = tempfile::tempdir().expect("tempdir");
    // nginx's workers run as `nobody` when the tests run as root: let them read the layout.
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let t = tmp.path().to_path_buf();
    std::fs::create_dir_all(t.join("tmp")).expect("mkdir");
    let (slots, slot_tables) = common::slots_with_nodes(names, nodes).await;
    let (public, preview) = (common::free_port(), common::free_port());
    let mut toml = format!(
        "[[environment]]\nname = \"shop\"\npublic_url = \"http://127.0.0.1:{public}/\"\n\
         preview_url = \"http://127.0.0.1:{preview}/\"\n{slot_tables}"
    );
    let method_name = match method {
        Method::Realpath => "realpath",
        Method::Symlink => "symlink",
        Method::Include => "include",
    };
    toml.push_str(&common::nginx_router_table(&bin, &t, method_name));
    toml.push_str(&format!("{extra_router}\n"));
    let env = common::environment(&toml);
    let RouterConfig::Nginx(c) = &env.routers[0] else {
        panic!("not an nginx router")
    };
    let driver = nginx::Driver::new("nginx".into(), &env, c).expect("driver");
    driver
        .install(names[0], Some(names[1]))
        .await
        .expect("install");
    let extra = t.join("operator-extra.conf");
    std::fs::write(&extra, "# the operator's own directives\n").expect("write extra");
    std::fs::write(
        t.join("nginx.conf"),
        nginx_conf(&t, &driver, public, preview, &extra),
    )
    .expect("write nginx.conf");
    let log = std::fs::File::create(t.join("startup.log")).expect("log");
    let status = std::process::Command::new(&bin)
        .args([
            "-p",
            &t.display().to_string(),
            "-c",
            &t.join("nginx.conf").display().to_string(),
            "-e",
            &t.join("error.log").display().to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .status()
        .expect("run nginx");
    let guard = PidFileGuard(t.join("nginx.pid"));
    assert!(
        status.success(),
        "nginx did not start: {}\n{}",
        std::fs::read_to_string(t.join("startup.log")).unwrap_or_default(),
        std::fs::read_to_string(t.join("error.log")).unwrap_or_default()
    );
    common::wait_ports(&[public, preview], Duration::from_secs(5)).await;
    Some(Rig {
        driver,
        toml,
        public,
        preview,
        extra,
        error_log: t.join("error.log"),
        slots,
        _nginx: guard,
        tmp,
    })
}

/// The rig most tests use: blue live, green the preview, no nodes, no extra router settings.
async fn blue_green(test: &str, method: Method) -> Option<Rig> {
    rig(test, method, &["blue", "green"], &[], "").await
}

impl Rig {
    fn public_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.public)
    }
    fn preview_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.preview)
    }
    async fn public_slot(&self) -> String {
        common::get(&self.public_url()).await.1
    }
    /// Switch the live slot to `to` (`what` names the step): the public port then serves it.
    async fn switch(&self, to: &str, what: &str) {
        self.driver
            .switch_live(to)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e:#}"));
        assert_eq!(self.public_slot().await, to, "{what}");
    }
    /// A switch to `to` is refused (`what` says why) with an error naming `needle`, and the
    /// public port still serves `still`.
    async fn switch_refused(&self, to: &str, what: &str, needle: &str, still: &str) {
        common::fails_with(self.driver.switch_live(to).await, what, needle);
        assert_eq!(self.public_slot().await, still, "{what}");
    }
    async fn preview_slot(&self) -> String {
        common::get(&self.preview_url()).await.1
    }
    fn dir(&self) -> PathBuf {
        self.tmp.path().join("cutover")
    }
    /// Every file and link under cutover's directory: path -> (content or link target, mtime).
    fn snapshot(&self) -> BTreeMap<PathBuf, (String, SystemTime)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![self.dir()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("read dir") {
                let p = e.expect("entry").path();
                let m = std::fs::symlink_metadata(&p).expect("meta");
                let what = if m.file_type().is_symlink() {
                    format!("-> {}", std::fs::read_link(&p).expect("link").display())
                } else if m.is_dir() {
                    stack.push(p.clone());
                    "dir".into()
                } else {
                    std::fs::read_to_string(&p).expect("read")
                };
                out.insert(p, (what, m.modified().expect("mtime")));
            }
        }
        out
    }
}

// The include and symlink methods (every change tested with `nginx -t` and reloaded) run the
// driver contract in tests/contract.rs. The realpath method (the default) switches without
// nginx, so a refused or hung nginx cannot stop its swaps: its cycles are here.

async fn swap_cycle(test: &str, method: Method) {
    let Some(r) = rig(test, method, &["blue", "green", "staging"], &[], "").await else {
        return;
    };
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"));
    assert_eq!(s.preview.as_deref(), Some("green"));
    assert_eq!(s.maintenance, None);
    assert!(
        s.notes.is_empty(),
        "a fresh install has no drift: {:?}",
        s.notes
    );
    assert_eq!(s.role_of("blue"), Role::Live);
    assert_eq!(s.role_of("green"), Role::Preview);
    assert_eq!(s.role_of("staging"), Role::Idle);
    assert_eq!(r.public_slot().await, "blue");
    assert_eq!(r.preview_slot().await, "green");

    r.driver.switch_live("green").await.expect("swap");
    assert_eq!(
        r.public_slot().await,
        "green",
        "the public port serves green right after the swap"
    );
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("green"));
    assert!(s.notes.is_empty(), "{:?}", s.notes);

    r.driver.set_preview("staging").await.expect("preview");
    assert_eq!(r.preview_slot().await, "staging");
    assert_eq!(r.public_slot().await, "green");
    assert_eq!(
        r.driver
            .observe()
            .await
            .expect("observe")
            .preview
            .as_deref(),
        Some("staging")
    );

    r.switch("blue", "rollback").await;
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"));
    assert_eq!(s.preview.as_deref(), Some("staging"));
    assert!(s.notes.is_empty(), "{:?}", s.notes);

    r.switch_refused("purple", "unknown slot", "not a slot", "blue")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swap_rollback_preview_realpath() {
    swap_cycle("swap_rollback_preview_realpath", Method::Realpath).await;
}

async fn maintenance_cycle(test: &str, method: Method) {
    let Some(r) = blue_green(test, method).await else {
        return;
    };
    r.driver
        .maintenance(true, &MaintenanceMode::Page)
        .await
        .expect("maintenance on");
    let p = common::maintenance_page(&r.public_url()).await;
    assert!(p.content_type.starts_with("text/html"), "{p:?}");
    assert_eq!(
        r.preview_slot().await,
        "green",
        "the preview route is untouched"
    );
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.maintenance, Some(MaintenanceMode::Page));
    assert_eq!(
        s.live.as_deref(),
        Some("blue"),
        "the live slot is remembered"
    );
    assert_eq!(s.role_of("blue"), Role::Maintenance);
    assert!(s.notes.is_empty(), "{:?}", s.notes);

    let to_green = MaintenanceMode::Redirect { to: "green".into() };
    r.driver
        .maintenance(true, &to_green)
        .await
        .expect("redirect");
    assert_eq!(r.public_slot().await, "green");
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.maintenance, Some(to_green.clone()));
    assert_eq!(s.live.as_deref(), Some("blue"));

    common::fails_with(
        r.driver.switch_live("green").await,
        "green is the redirect target",
        "maintenance",
    );

    r.driver
        .maintenance(false, &MaintenanceMode::Page)
        .await
        .expect("maintenance off");
    assert_eq!(r.public_slot().await, "blue");
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.maintenance, None);
    assert_eq!(s.live.as_deref(), Some("blue"));
    assert!(s.notes.is_empty(), "{:?}", s.notes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_page_and_redirect_realpath() {
    maintenance_cycle("maintenance_page_and_redirect_realpath", Method::Realpath).await;
}

/// Requests each slot server served while `n` requests went to the public port.
async fn served_during(r: &Rig, n: usize) -> Vec<u64> {
    common::served_during(&r.slots, &r.public_url(), n).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_marks_a_node_down_and_never_the_last_routed_one() {
    // slots[0] = blue n1, slots[1] = green, slots[2] = blue n2.
    let r = common::or_skip!(rig(Method::Realpath, &["blue", "green"], &[("blue", 1)], "").await);
    let s = r.driver.observe().await.expect("observe");
    let blue = &s.slots["blue"];
    assert_eq!(blue.nodes.len(), 2);
    assert!(blue.nodes.iter().all(|n| n.admin == AdminState::Ready));
    let served = served_during(&r, 20).await;
    assert!(
        served[0] > 0 && served[2] > 0,
        "both nodes serve: {served:?}"
    );

    r.driver
        .drain(&Target::node("blue", "n1"))
        .await
        .expect("drain n1");
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(common::node(&s, "blue", "n1").admin, AdminState::Drain);
    assert_eq!(common::node(&s, "blue", "n2").admin, AdminState::Ready);
    assert_eq!(s.slots["blue"].admin, AdminState::Ready);
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    let served = served_during(&r, 20).await;
    assert_eq!(served[0], 0, "drained n1 takes no new requests: {served:?}");
    assert_eq!(served[2], 20, "n2 takes them all: {served:?}");

    // Refused: the live slot's last node, and the whole live slot.
    for (target, why) in [
        (
            Target::node("blue", "n2"),
            "refusing to mark every server of blue down",
        ),
        (Target::slot("blue"), "blue is live"),
    ] {
        common::fails_with(r.driver.drain(&target).await, &format!("{target:?}"), why);
    }
    assert_eq!(served_during(&r, 5).await[2], 5, "blue still serves on n2");

    r.driver
        .undrain(&Target::node("blue", "n1"))
        .await
        .expect("undrain");
    let served = served_during(&r, 20).await;
    assert!(
        served[0] > 0 && served[2] > 0,
        "both nodes serve again: {served:?}"
    );

    // An idle slot may be drained whole; it then cannot go live until undrained.
    r.driver.set_preview("blue").await.expect("preview to blue");
    r.driver
        .drain(&Target::slot("green"))
        .await
        .expect("drain idle green");
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.slots["green"].admin, AdminState::Drain);
    assert_eq!(s.role_of("green"), Role::Draining);
    common::fails_with(
        r.driver.switch_live("green").await,
        "green is drained",
        "undrain it first",
    );
    r.driver
        .undrain(&Target::slot("green"))
        .await
        .expect("undrain green");
    r.switch("green", "swap").await;
    common::fails_with(
        r.driver.drain(&Target::node("green", "n1")).await,
        "green has no nodes",
        "no node",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_show_as_drift() {
    let r = common::or_skip!(blue_green(Method::Include).await);
    // Someone points live.conf at green's address by hand and does not reload.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let live_conf = r.dir().join("live.conf");
    std::fs::write(&live_conf, format!("proxy_pass {};\n", r.slots[1].url())).expect("edit");
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(
        s.live.as_deref(),
        Some("green"),
        "the file's directive is read back"
    );
    let notes = s.notes.join("\n");
    common::assert_contains(&notes, "live.conf was changed by hand");
    common::assert_contains(&notes, "after nginx last loaded its config");
    assert_eq!(r.public_slot().await, "blue", "nginx has not loaded it");
    // The next change rewrites the file and the notes go away.
    r.driver.switch_live("blue").await.expect("switch back");
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"));
    assert!(s.notes.is_empty(), "{:?}", s.notes);

    // realpath: a link pointing somewhere that is no slot.
    let r = common::or_skip!(blue_green(Method::Realpath).await);
    let link = r.dir().join("live");
    std::fs::remove_file(&link).expect("rm link");
    std::os::unix::fs::symlink("/nonexistent", &link).expect("link");
    let s = r.driver.observe().await.expect("observe");
    assert_eq!(s.live, None);
    let notes = s.notes.join("\n");
    common::assert_contains(&notes, "does not exist: nginx answers 500");
    common::assert_contains(&notes, "not a slot");
    r.switch("green", "repair by switching").await;
    assert!(r.driver.observe().await.expect("observe").notes.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewritten_files_and_links_keep_their_owner_group_and_mode() {
    use std::os::unix::fs::MetadataExt;
    let test = "rewritten_files_and_links_keep_their_owner_group_and_mode";
    let Some(r) = rig(
        test,
        Method::Realpath,
        &["blue", "green", "staging"],
        &[],
        "",
    )
    .await
    else {
        return;
    };
    if unsafe { libc::geteuid() } != 0 {
        panic!("{test} chowns files to `nobody`: run it as root (the CI container does)");
    }
    let (up, live) = (r.dir().join("upstreams.conf"), r.dir().join("live"));
    std::os::unix::fs::chown(&up, Some(65534), Some(65534)).expect("chown");
    std::fs::set_permissions(&up, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    std::os::unix::fs::lchown(&live, Some(65534), Some(65534)).expect("lchown");
    let before = std::fs::read_to_string(&up).expect("read");
    // A drain rewrites upstreams.conf (`down`); a swap replaces the live link.
    r.driver
        .drain(&Target::slot("staging"))
        .await
        .expect("drain staging");
    r.switch("green", "swap").await;
    assert_ne!(std::fs::read_to_string(&up).expect("read"), before);
    let m = std::fs::metadata(&up).expect("meta");
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (65534, 65534, 0o640));
    let l = std::fs::symlink_metadata(&live).expect("meta");
    assert!(l.file_type().is_symlink());
    assert_eq!((l.uid(), l.gid()), (65534, 65534), "the live link's owner");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_while_nginx_is_not_routed_by_cutovers_files() {
    let test = "check_fails_while_nginx_is_not_routed_by_cutovers_files";
    let Some(r) = blue_green(test, Method::Realpath).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let o = common::cutover_cli(dir.path(), &r.toml, &["check"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", common::printed(&o));
    // Without cutover's upstreams.conf (never set up, or removed), nginx is not switched by
    // these files: a problem, on the router's line.
    let up = r.dir().join("upstreams.conf");
    std::fs::rename(&up, r.dir().join("upstreams.conf.away")).expect("move away");
    let s = r.driver.observe().await.expect("observe");
    common::assert_problem(&s, "cutover setup shop");
    let o = common::cutover_cli(dir.path(), &r.toml, &["check"]).await;
    common::failed_check(&o, "router nginx", "upstreams.conf");
    std::fs::rename(r.dir().join("upstreams.conf.away"), &up).expect("move back");
    assert!(
        r.driver
            .observe()
            .await
            .expect("observe")
            .problems
            .is_empty()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_nginx_t_rejects_is_restored_and_nginx_keeps_serving() {
    for method in [Method::Symlink, Method::Include, Method::Realpath] {
        let r = common::or_skip!(rig(method, &["blue", "green", "staging"], &[], "").await);
        // The operator's own include gains a mistake (not reloaded yet).
        std::fs::write(&r.extra, "bogus_directive on;\n").expect("break config");
        let before = r.snapshot();
        let e = match method {
            // realpath switches without nginx -t; its reloads are for drains.
            Method::Realpath => r.driver.drain(&Target::slot("staging")).await,
            _ => r.driver.switch_live("green").await,
        }
        .expect_err("nginx -t fails");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("unknown directive \"bogus_directive\""),
            "{method:?}: {msg}"
        );
        common::assert_contains(&msg, "restored its files exactly");
        common::assert_contains(&msg, "nginx still serves what it served before");
        assert_eq!(
            r.snapshot(),
            before,
            "{method:?}: files, links and their times are as before"
        );
        assert_eq!(r.public_slot().await, "blue");
        let s = r.driver.observe().await.expect("observe");
        assert_eq!(s.live.as_deref(), Some("blue"));
        assert_eq!(s.slots["staging"].admin, AdminState::Ready);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_does_not_take_fails_the_operation() {
    for method in [Method::Include, Method::Symlink] {
        let r = common::or_skip!(blue_green(method).await);
        // Another process holds a port the new config wants: nginx -t passes, the reload cannot bind.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = busy.local_addr().expect("addr").port();
        std::fs::write(
            &r.extra,
            format!("server {{ listen 127.0.0.1:{port}; return 204; }}\n"),
        )
        .expect("write extra");
        let before = r.snapshot();
        common::fails_with_all(
            r.driver.switch_live("green").await,
            "the reload does not take",
            &[
                "nginx did not apply the new config",
                "Address already in use",
                "restored its files exactly",
            ],
        );
        assert_eq!(r.snapshot(), before, "{method:?}");
        assert_eq!(r.public_slot().await, "blue");
        let s = r.driver.observe().await.expect("observe");
        assert_eq!(s.live.as_deref(), Some("blue"));
        assert!(
            s.notes.is_empty(),
            "restored files are not drift: {:?}",
            s.notes
        );
        let log = std::fs::read_to_string(&r.error_log).expect("log");
        assert!(log.contains("Address already in use"));
        drop(busy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_by_signal_is_checked_too() {
    let r = common::or_skip!(
        rig(
            Method::Include,
            &["blue", "green"],
            &[],
            "reload = \"signal\""
        )
        .await
    );
    r.switch("green", "swap by SIGHUP").await;
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = busy.local_addr().expect("addr").port();
    std::fs::write(&r.extra, format!("server {{ listen 127.0.0.1:{port}; }}\n")).expect("extra");
    r.switch_refused("blue", "does not take", "Address already in use", "green")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_mistakes_name_the_field() {
    let base = "[[environment]]\nname = \"e\"\n[[environment.slot]]\nname = \"blue\"\n\
                address = \"http://127.0.0.1:9001\"\n[[environment.router]]\nkind = \"nginx\"\n";
    let e = cutover::config::parse(&format!("{base}dir = \"relative\"\n"), Path::new("c.toml"))
        .expect_err("relative dir");
    common::assert_contains(&e.to_string(), "`dir` must be an absolute path");
    assert_eq!(e.line, 6, "{e}");
    for (keys, mistake) in [
        ("method = \"copy\"\n", "unknown variant `copy`"),
        ("foo = 1\n", "unknown field `foo`"),
    ] {
        let text = format!("{base}dir = \"/x\"\n{keys}");
        common::fails_with(
            cutover::config::parse(&text, Path::new("c.toml")),
            &text,
            mistake,
        );
    }
    let ok =
        cutover::config::parse(&format!("{base}dir = \"/x\"\n"), Path::new("c.toml")).expect("ok");
    let RouterConfig::Nginx(c) = &ok.environments[0].routers[0] else {
        panic!()
    };
    assert_eq!(c.method, Method::Realpath, "the measured default");
    assert_eq!(c.pid_file, PathBuf::from("/run/nginx.pid"));
}

async fn measure(
    test: &str,
    method: Method,
    label: &str,
    server_extra: Option<&str>,
) -> Option<LoadReport> {
    let _serial = LOAD.lock().await;
    let r = blue_green(test, method).await?;
    if let Some(extra) = server_extra {
        // The operator's server block setting under test, then a reload to load it.
        let conf = r.tmp.path().join("nginx.conf");
        let text = std::fs::read_to_string(&conf).expect("conf");
        let text = text.replacen(
            &format!("listen 127.0.0.1:{};", r.public),
            &format!("listen 127.0.0.1:{};\n        {extra}", r.public),
            1,
        );
        std::fs::write(&conf, text).expect("conf");
        r.driver
            .switch_live("green")
            .await
            .expect("reload with the setting");
        r.driver.switch_live("blue").await.expect("back");
    }
    let rep = common::swap_pairs_under_load(&r.driver, &r.public_url(), 20).await;
    common::print_measured("nginx", label, &rep);
    common::assert_served_by(&rep.by_slot, &["blue", "green"]);
    assert_eq!(
        r.driver.observe().await.expect("observe").live.as_deref(),
        Some("blue")
    );
    Some(rep)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zero_failed_requests_with_the_default_method() {
    let rep = common::or_skip!(measure(Method::default(), "method=realpath (default)", None).await);
    assert_eq!(rep.failed(), 0, "first errors: {:?}", rep.first_errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_requests_symlink_reload() {
    measure(
        "failed_requests_symlink_reload",
        Method::Symlink,
        "method=symlink",
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_requests_include_reload() {
    measure(
        "failed_requests_include_reload",
        Method::Include,
        "method=include",
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_requests_symlink_reload_without_client_keepalive() {
    measure(
        "failed_requests_symlink_reload_without_client_keepalive",
        Method::Symlink,
        "method=symlink + keepalive_timeout 0",
        Some("keepalive_timeout 0;"),
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Benchmarks (scripts/bench): `cargo test --release --test nginx -- --ignored bench_ --nocapture`

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_drill_realpath() {
    let r = common::or_skip!(blue_green(Method::Realpath).await);
    common::bench_drill("nginx (realpath, the default)", &r.toml).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_throughput_direct_embedded_nginx() {
    let r = common::or_skip!(blue_green(Method::Realpath).await);
    let (live, preview) = (&r.slots[0], &r.slots[1]);
    let url = r.public_url();
    common::bench_three_ways(
        live,
        preview,
        r.tmp.path(),
        "through nginx (1 worker)",
        &url,
    )
    .await;
}

/// The worker processes of the nginx whose master is in `pid_file`: a reload replaces them.
fn workers(pid_file: &Path) -> std::collections::BTreeSet<u32> {
    let master = std::fs::read_to_string(pid_file).expect("nginx.pid");
    let master = master.trim();
    let mut out = std::collections::BTreeSet::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let after_name = stat.rsplit(')').next().unwrap_or_default();
        if after_name.split_whitespace().nth(1) == Some(master) {
            out.insert(e.file_name().to_string_lossy().parse().expect("pid"));
        }
    }
    out
}

/// One answer of the public URL: (slot, Set-Cookie, the operator's header).
async fn answer(url: &str) -> (String, Option<String>, Option<String>) {
    let r = cutover::http_client()
        .build()
        .expect("client")
        .get(url)
        .send()
        .await
        .expect("GET");
    assert_eq!(r.status().as_u16(), 200, "{url}");
    let h = |name: &str| common::header(&r, name);
    (
        h("x-slot").unwrap_or_default(),
        h("set-cookie"),
        h("x-operator"),
    )
}

/// The realpath method's canary steps rename bucket links: nginx's workers stay the same from
/// the first step to the abort (no reload), each step is read back with no drift note, new
/// clients get the sticky cookie only while the canary runs, and the operator's own
/// `add_header` (http level) is on every answer while no canary runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realpath_canary_steps_move_links_and_never_reload() {
    let r = common::or_skip!(blue_green(Method::Realpath).await);
    let pid_file = r.tmp.path().join("nginx.pid");
    std::fs::write(&r.extra, "add_header X-Operator kept always;\n").expect("write extra");
    // nginx's master accepts connections before it forks its first worker.
    let forked = common::wait_until(Duration::from_secs(30), || !workers(&pid_file).is_empty());
    assert!(forked, "nginx forked no worker");
    let before = workers(&pid_file);
    let bin = common::require_binary("realpath_canary_steps_move_links_and_never_reload", "nginx")
        .expect("nginx");
    let t = r.tmp.path();
    let reload = std::process::Command::new(bin)
        .args(["-p", &t.display().to_string()])
        .args(["-c", &t.join("nginx.conf").display().to_string()])
        .args(["-s", "reload"])
        .status()
        .expect("nginx -s reload");
    assert!(reload.success());
    let url = r.public_url();
    // Loaded once the old workers are gone (until then they still accept connections).
    let loaded = common::wait_until(Duration::from_secs(30), || {
        let now = workers(&pid_file);
        !now.is_empty() && now.is_disjoint(&before)
    });
    assert!(loaded, "nginx did not load the operator's add_header");
    assert_eq!(
        answer(&url).await,
        ("blue".into(), None, Some("kept".into()))
    );
    let loaded = workers(&pid_file);

    for percent in [5u8, 50, 100] {
        r.driver
            .set_weights("blue", "green", percent)
            .await
            .unwrap_or_else(|e| panic!("{percent} %: {e:#}"));
        let s = r.driver.observe().await.expect("observe");
        let w = s.weights.expect("a split");
        assert_eq!((w.live.as_str(), w.canary.as_str()), ("blue", "green"));
        assert_eq!(w.canary_percent, percent);
        assert!(s.notes.is_empty(), "{percent} %: {:?}", s.notes);
    }
    // At 100 % every new client reaches green and is pinned to it.
    for _ in 0..10 {
        let (slot, cookie, _) = answer(&url).await;
        assert_eq!(slot, "green");
        let cookie = cookie.expect("the sticky cookie during a canary");
        assert!(cookie.starts_with("cutover_shop=green; "), "{cookie}");
    }
    r.driver
        .set_weights("blue", "green", 0)
        .await
        .expect("abort");
    let s = r.driver.observe().await.expect("observe");
    assert_eq!((s.live.as_deref(), s.weights), (Some("blue"), None));
    assert!(s.notes.is_empty(), "{:?}", s.notes);
    for _ in 0..10 {
        assert_eq!(
            answer(&url).await,
            ("blue".into(), None, Some("kept".into()))
        );
    }
    assert_eq!(workers(&pid_file), loaded, "a canary step reloaded nginx");
}
