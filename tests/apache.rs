//! The Apache driver against a real apache2 (Debian's package), started unprivileged on
//! loopback ports with its own ServerRoot, PidFile, DefaultRuntimeDir, Mutex and logs in a
//! TempDir, and stopped by PID. The Apache config is the one docs/apache.md tells operators
//! to paste: the tests read it from there.
#![allow(clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant};

use common::*;
use cutover::config::Environment;
use cutover::load::{self, LoadOptions, LoadReport};
use cutover::model::{AdminState, MaintenanceMode};
use cutover::router::apache::{self, Fault, MemberFlag};
use cutover::router::{Router, RouterConfig, Target};

use common::apache_doc_block as doc_block;

/// A running apache2, in its own process group. Dropping it stops Apache by the PID of the
/// process the test started: SIGTERM (the parent stops its children), then SIGKILL to that
/// process group if it is still there. ChildGuard's SIGKILL alone would orphan the children.
/// Fields drop in order: the process is stopped before its files go.
struct Apache {
    guard: ChildGuard,
    public: u16,
    preview: u16,
    flags: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Drop for Apache {
    fn drop(&mut self) {
        let Ok(pid) = i32::try_from(self.guard.pid()) else {
            return;
        };
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.guard.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Whatever is left of the group this test started (the parent's PID is its id).
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
}

impl Apache {
    /// Start apache2 with the test's server basics, `CUTOVER_FLAGS` and `CUTOVER_PREVIEW_PORT`
    /// defined, the given defines, and `body` (a block from docs/apache.md).
    async fn start(
        bin: &Path,
        public: u16,
        defines: &[(&str, String)],
        body: &str,
        persist: bool,
    ) -> Apache {
        let dir = tempfile::TempDir::new().expect("temp dir");
        let d = dir.path();
        let preview = free_port();
        let guard = spawn_apache(bin, d, (public, preview), persist, defines, body);
        let a = Apache {
            guard,
            public,
            preview,
            flags: d.join("flags"),
            log: d.join("error.log"),
            dir,
        };
        // Ready when the balancer-manager answers (its XML, or a 401 when it has basic auth).
        let c = cutover::http_client()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        let ready = eventually(Duration::from_secs(15), || {
            let c = c.clone();
            let url = a.manager();
            async move {
                match c
                    .get(format!("{url}?xml=1"))
                    .header("referer", &url)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 401 => true,
                    Ok(r) => r.text().await.is_ok_and(|t| t.contains("<httpd:manager")),
                    Err(_) => false,
                }
            }
        })
        .await;
        assert!(ready, "apache2 did not come up:\n{}", a.logs());
        a
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.public)
    }
    fn preview_url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.preview)
    }
    fn manager(&self) -> String {
        format!("http://127.0.0.1:{}/balancer-manager", self.public)
    }
    fn flag(&self, name: &str) -> PathBuf {
        self.flags.join(name)
    }
    fn logs(&self) -> String {
        format!(
            "--- stderr ---\n{}\n--- error.log ---\n{}",
            std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default(),
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }
    fn error_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    /// `apache2 -k graceful`, as the foreground parent takes it: SIGUSR1. Returns once the
    /// new generation says it is serving.
    async fn graceful_restart(&self) {
        let before = self
            .error_log()
            .matches("resuming normal operations")
            .count();
        let pid = i32::try_from(self.guard.pid()).expect("pid");
        assert_eq!(unsafe { libc::kill(pid, libc::SIGUSR1) }, 0, "kill -USR1");
        let done = eventually(Duration::from_secs(10), || async {
            self.error_log()
                .matches("resuming normal operations")
                .count()
                > before
        })
        .await;
        assert!(done, "no graceful restart seen:\n{}", self.logs());
    }

    /// The server of docs/apache.md whose one balancer has the nodes web1, web2 and web3: the
    /// first three of `nodes`.
    async fn three_nodes(bin: &Path, nodes: &[SlotServer]) -> Apache {
        Apache::start(
            bin,
            free_port(),
            &[
                ("CUTOVER_WEB1", nodes[0].url()),
                ("CUTOVER_WEB2", nodes[1].url()),
                ("CUTOVER_WEB3", nodes[2].url()),
            ],
            &doc_block("cutover-apache-nodes", "apache"),
            true,
        )
        .await
    }

    /// The blue/green server of docs/apache.md, redirecting maintenance traffic to `peer`.
    async fn blue_green(
        bin: &Path,
        public: u16,
        blue: &str,
        green: &str,
        peer: &str,
        server: &str,
        persist: bool,
    ) -> Apache {
        let body = doc_block("cutover-apache-config", "apache");
        let defines = blue_green_defines(server, blue, green, peer);
        Apache::start(bin, public, &defines, &body, persist).await
    }
}

/// The defines of docs/apache.md's blue/green server `server`, whose maintenance redirect goes
/// to `peer`.
fn blue_green_defines(
    server: &str,
    blue: &str,
    green: &str,
    peer: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("CUTOVER_SERVER", server.to_string()),
        ("CUTOVER_BLUE", blue.to_string()),
        ("CUTOVER_GREEN", green.to_string()),
        ("CUTOVER_PEER", peer.to_string()),
    ]
}

/// Bounded load on `url` (16 connections; at most 60,000 requests or 40 s), answered by blue
/// before `changes` begin (they get what the clients see, to wait on each change): its report,
/// which must show the load outlasting the changes, no failed request and answers from both
/// blue and green; and what `changes` returned.
async fn under_bounded_load<T, F: std::future::Future<Output = T>>(
    url: String,
    changes: impl FnOnce(common::LoadSeen) -> F,
) -> (LoadReport, T) {
    let run = load::start(LoadOptions {
        url,
        concurrency: 16,
        // Ceilings far beyond any machine's need: the test stops the load after the changes.
        max_requests: 50_000_000,
        max_duration: Duration::from_secs(240),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    });
    let mut seen = common::LoadSeen::of(&run);
    seen.answered_by("blue").await;
    let out = changes(seen).await;
    let r = run.finish().await;
    assert_eq!(
        r.ended,
        load::Ended::Stopped,
        "the load ended by its own bound before the last change ({} sent)",
        r.sent
    );
    assert_eq!(r.failed(), 0, "failed requests: {:?}", r.first_errors);
    common::assert_served_by(&r.by_slot, &["blue", "green"]);
    (r, out)
}

/// Slot servers blue (1.0.0) and green (2.0.0), and the blue/green Apache of docs/apache.md in
/// front of them (maintenance redirects to green; balancer persistence on): apache2, the
/// servers, their URLs and Apache. `None` (after the loud skip) when apache2 is missing.
async fn blue_green_rig(test: &str) -> Option<(PathBuf, Vec<SlotServer>, String, String, Apache)> {
    let bin = require_binary(test, "apache2")?;
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (blue, green) = (s[0].url(), s[1].url());
    let a = Apache::blue_green(&bin, free_port(), &blue, &green, &green, "web1", true).await;
    Some((bin, s, blue, green, a))
}

fn driver_of(env: &Environment) -> apache::Driver {
    match &env.routers[0] {
        RouterConfig::Apache(c) => apache::Driver::new("apache".into(), env, c).expect("driver"),
        other => panic!("not an apache router: {other:?}"),
    }
}

/// The cutover config for the blue/green server (the same shape as the docs' TOML).
fn blue_green_toml(a: &Apache, blue: &str, green: &str, extra: &str) -> String {
    format!(
        r#"
[[environment]]
name = "shop"
public_url = "{public}"
preview_url = "{preview}"
{slots}
[[environment.router]]
kind = "apache"
manager_url = "{manager}"
live_balancer = "live"
preview_balancer = "preview"
timeout = "2s"
maintenance_flag = "{redirect}"
maintenance_to = "green"
maintenance_page_flag = "{page}"
maintenance_verify_url = "{public}"
{extra}
"#,
        public = a.url(),
        preview = a.preview_url(),
        manager = a.manager(),
        redirect = a.flag("maintenance.redirect").display(),
        page = a.flag("maintenance.page").display(),
        slots = slot_tables(&[("blue", blue), ("green", green)]),
    )
}

/// The file-mode server of docs/apache.md in front of blue (1.0.0) and green (2.0.0), its
/// first flags (`live=blue`, `next=green`) made, and the cutover config: the environment and
/// the router block of docs/apache.md with this server's paths and URLs.
async fn file_mode_rig(test: &str) -> Option<(Vec<SlotServer>, Apache, String)> {
    let bin = require_binary(test, "apache2")?;
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (blue, green) = (s[0].url(), s[1].url());
    let defines = blue_green_defines("web1", &blue, &green, &green);
    let body = doc_block("cutover-apache-file-config", "apache");
    let a = Apache::start(&bin, free_port(), &defines, &body, true).await;
    for f in ["live=blue", "next=green"] {
        std::fs::write(a.flag(f), "").expect("the first flags");
    }
    let router = doc_block("cutover-apache-file-toml", "toml")
        .replace("http://127.0.0.1:8080/balancer-manager", &a.manager())
        .replace("http://127.0.0.1:8080/", &a.url())
        .replace("/var/lib/cutover", &a.flags.display().to_string());
    let toml = format!(
        "[[environment]]\nname = \"shop\"\npublic_url = \"{}\"\npreview_url = \"{}\"\n{}\n{router}",
        a.url(),
        a.preview_url(),
        slot_tables(&[("blue", &blue), ("green", &green)]),
    );
    Some((s, a, toml))
}

/// The slot `prod` whose nodes web1, web2 and web3 are the first three of `nodes`, and the
/// router of the server `Apache::three_nodes` started (the same shape as the docs' TOML).
fn prod_nodes_toml(a: &Apache, nodes: &[SlotServer]) -> String {
    format!(
        r#"
[[environment.slot]]
name = "prod"
address = "{public}"
nodes = [
  {{ name = "web1", address = "{w1}" }},
  {{ name = "web2", address = "{w2}" }},
  {{ name = "web3", address = "{w3}" }},
]

[[environment.router]]
kind = "apache"
manager_url = "{manager}"
live_balancer = "live"
"#,
        public = a.url(),
        manager = a.manager(),
        w1 = nodes[0].url(),
        w2 = nodes[1].url(),
        w3 = nodes[2].url(),
    )
}

/// GET with optional extra headers: (status, X-Slot, X-Cutover-Maintenance, body).
async fn fetch(url: &str, headers: &[(&str, &str)]) -> (u16, String, String, String) {
    let c = cutover::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let mut req = c.get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let h = |n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (status, slot, maint) = (r.status().as_u16(), h("x-slot"), h("x-cutover-maintenance"));
    (status, slot, maint, r.text().await.unwrap_or_default())
}

/// Which slots answer `n` requests in a row.
async fn answers(url: &str, n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for _ in 0..n {
        let (status, slot, _, body) = fetch(url, &[]).await;
        assert_eq!(status, 200, "GET {url}: {body}");
        *m.entry(slot).or_default() += 1;
    }
    m
}

fn only(slot: &str, n: usize) -> BTreeMap<String, usize> {
    BTreeMap::from([(slot.to_string(), n)])
}

#[test]
fn the_documented_cutover_config_parses() {
    let toml = doc_block("cutover-apache-toml", "toml");
    let env = environment(&toml);
    let RouterConfig::Apache(c) = &env.routers[0] else {
        panic!("not apache")
    };
    assert_eq!(c.live_balancer, "live");
    assert_eq!(c.maintenance_to.as_deref(), Some("green"));
    // Mistakes are named.
    let bad = |from: &str, to: &str| match cutover::config::parse(
        &toml.replace(from, to),
        Path::new("x.toml"),
    ) {
        Ok(_) => panic!("accepted with {to}"),
        Err(e) => e.to_string(),
    };
    let e = bad("maintenance_to = \"green\"", "maintenance_to = \"purple\"");
    common::assert_contains(&e, "`maintenance_to` = `purple` is not a slot");
    let without: Vec<&str> = toml
        .lines()
        .filter(|l| !l.starts_with("maintenance_to"))
        .collect();
    let e = match cutover::config::parse(&without.join("\n"), Path::new("x.toml")) {
        Ok(_) => panic!("accepted without maintenance_to"),
        Err(e) => e.to_string(),
    };
    common::assert_contains(&e, "needs `maintenance_to`");
    let e = bad(
        "live_balancer = \"live\"",
        "live_balancer = \"live\"\nbalancer = \"x\"",
    );
    common::assert_contains(&e, "unknown field `balancer`");
}

#[test]
fn the_documented_apache_config_passes_apache2_configtest() {
    let bin = common::or_skip!(require_binary("apache2"));
    let dir = tempfile::TempDir::new().expect("temp dir");
    let d = dir.path();
    let mut conf = format!(
        "ServerRoot \"{r}\"\nServerName 127.0.0.1\nListen 127.0.0.1:{p}\nPidFile {r}/pid\n\
         DefaultRuntimeDir {r}\nMutex file:{r} default\nErrorLog {r}/error.log\n",
        r = d.display(),
        p = free_port()
    );
    for m in APACHE_MODULES {
        conf.push_str(&format!(
            "LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n"
        ));
    }
    conf.push_str(&doc_block("cutover-apache-defines", "apache"));
    conf.push_str(&doc_block("cutover-apache-config", "apache"));
    std::fs::write(d.join("httpd.conf"), conf).expect("write");
    let out = Command::new(bin)
        .arg("-t")
        .arg("-d")
        .arg(d)
        .arg("-f")
        .arg(d.join("httpd.conf"))
        .output()
        .expect("apache2 -t");
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success() && text.contains("Syntax OK"), "{text}");
}

/// File mode, as a user meets it: the documented config parses, the flags are read back, a
/// swap is a rename that the public URL follows, canary weights are refused naming the mode,
/// and a flag directory with two live flags is refused and noted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_mode_swaps_by_renaming_the_live_flag() {
    let (_s, a, toml) = common::or_skip!(file_mode_rig().await);
    let d = driver_of(&environment(&toml));
    let st = d.observe().await.expect("observe");
    assert_eq!(
        (st.live.as_deref(), st.preview.as_deref()),
        (Some("blue"), Some("green"))
    );
    assert!(st.problems.is_empty() && st.notes.is_empty(), "{st:#?}");
    d.switch_live("green").await.expect("swap");
    assert!(a.flag("live=green").exists() && !a.flag("live=blue").exists());
    assert_eq!(answers(&a.url(), 20).await, only("green", 20));
    assert_eq!(
        d.observe().await.expect("observe").live.as_deref(),
        Some("green")
    );
    d.set_preview("blue").await.expect("preview");
    assert_eq!(answers(&a.preview_url(), 10).await, only("blue", 10));
    let e = d
        .set_weights("green", "blue", 10)
        .await
        .expect_err("no weights");
    common::assert_contains(&format!("{e:#}"), "mode = \"file\" has no canary weights");
    common::assert_contains(&format!("{e:#}"), "use mode = \"manager\"");
    std::fs::write(a.flag("live=blue"), "").expect("a second flag by hand");
    let st = d.observe().await.expect("observe");
    assert_eq!(st.live, None);
    assert!(
        st.notes.iter().any(|n| n.contains("several live= files")),
        "{st:#?}"
    );
    let e = d.switch_live("blue").await.expect_err("refused");
    common::assert_contains(&format!("{e:#}"), "several live= files (blue, green)");
    assert_eq!(
        answers(&a.url(), 10).await,
        only("blue", 10),
        "the config's first rule"
    );
}

/// A drill through the file-mode server at a small load (16 connections, 5 pairs): not one
/// failed request, and every switch seen by the clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drill_on_apache_file_mode_loses_no_request() {
    let (_s, a, toml) = common::or_skip!(file_mode_rig().await);
    let (_state, engine) = common::drill_engine(&toml);
    // Bounds far beyond any machine's need: the drill stops the load after the last switch.
    let opts = cutover::drill::DrillOptions {
        concurrency: 16,
        requests: 50_000_000,
        duration: Duration::from_secs(240),
        ..Default::default()
    };
    let r = cutover::drill::run(&engine, &opts).await.expect("drill");
    eprintln!(
        "apache file mode: {} sent, {} failed, {} switches",
        r.sent,
        r.failed,
        r.switches.len()
    );
    assert_eq!(
        r.failed,
        0,
        "{:?} {:?}\n{}",
        r.failures,
        r.first_errors,
        a.error_log()
    );
    assert_eq!(r.switches.len(), 10, "5 pairs = 10 switches");
    assert!(r.unobserved.is_empty(), "{:?}", r.unobserved);
    common::assert_served_by(&r.by_slot, &["blue", "green"]);
    assert!(r.passed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swap_and_rollback_under_load_fail_no_request() {
    let (_bin, _s, blue, green, a) = common::or_skip!(blue_green_rig().await);
    let d = driver_of(&environment(&blue_green_toml(&a, &blue, &green, "")));

    let st = d.observe().await.expect("observe");
    assert_eq!(st.live.as_deref(), Some("blue"), "{st:?}");
    assert_eq!(st.preview.as_deref(), Some("green"), "{st:?}");
    assert_eq!(answers(&a.url(), 4).await, only("blue", 4));

    let (r, mut took) = under_bounded_load(a.url(), |mut seen| async move {
        let mut took = Vec::new();
        for _ in 0..10 {
            for to in ["green", "blue"] {
                let t = Instant::now();
                d.switch_live(to)
                    .await
                    .unwrap_or_else(|e| panic!("switch to {to}: {e:?}"));
                took.push(t.elapsed());
                let st = d.observe().await.expect("observe");
                assert_eq!(st.live.as_deref(), Some(to), "{st:?}");
                seen.answered_by(to).await;
            }
        }
        took
    })
    .await;
    took.sort();
    eprintln!(
        "apache: 20 switches under load ({} requests, {:.0} req/s, p99 {} us), 0 failed; \
         switch_live median {:?}, max {:?}",
        r.sent,
        r.rps(),
        r.percentile_us(0.99).unwrap_or(0),
        took[took.len() / 2],
        took[took.len() - 1]
    );
    // After the last rollback the public port answers blue only, and the preview is untouched.
    assert_eq!(answers(&a.url(), 6).await, only("blue", 6));
    assert_eq!(answers(&a.preview_url(), 4).await, only("green", 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_preview_and_the_swaps_that_are_refused() {
    let (_bin, _s, blue, green, a) = common::or_skip!(blue_green_rig().await);
    let toml = blue_green_toml(&a, &blue, &green, "").replace(
        "[[environment.router]]",
        "[[environment.slot]]\nname = \"staging\"\naddress = \"http://127.0.0.1:9\"\n\n\
         [[environment.router]]",
    );
    let d = driver_of(&environment(&toml));

    d.set_preview("blue").await.expect("set preview");
    let st = d.observe().await.expect("observe");
    assert_eq!(
        (st.live.as_deref(), st.preview.as_deref()),
        (Some("blue"), Some("blue"))
    );
    assert_eq!(answers(&a.preview_url(), 4).await, only("blue", 4));
    common::assert_problem(&st, "slot `staging` has no member");

    fails_with(
        d.switch_live("staging").await,
        "no member",
        "no member for slot `staging`",
    );
    fails_with(d.switch_live("purple").await, "no such slot", "not a slot");
    // Nothing moved.
    assert_eq!(answers(&a.url(), 4).await, only("blue", 4));

    // A slot whose only member is Stopped cannot take traffic: the swap is refused, and the
    // member it had enabled is disabled again.
    d.change_member("live", &green, &[(MemberFlag::Stopped, true)], Fault::None)
        .await
        .expect("stop green's member");
    let m = common::fails_with(
        d.switch_live("green").await,
        "green cannot serve",
        "can take traffic",
    );
    common::assert_contains(&m, "put back");
    let st = d.observe().await.expect("observe");
    assert_eq!(st.live.as_deref(), Some("blue"), "{st:?}");
    let check = st.slots["green"].check.clone().unwrap_or_default();
    assert!(check.contains("Dis") && check.contains("Stop"), "{check}");
    assert_eq!(answers(&a.url(), 4).await, only("blue", 4));
    d.change_member("live", &green, &[(MemberFlag::Stopped, false)], Fault::None)
        .await
        .expect("start green's member");
    d.set_preview("green").await.expect("set preview back");
    assert_eq!(answers(&a.preview_url(), 4).await, only("green", 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_apache_ignores_silently_are_reported_as_failures() {
    let (_bin, _s, blue, green, a) = common::or_skip!(blue_green_rig().await);
    let d = driver_of(&environment(&blue_green_toml(&a, &blue, &green, "")));
    let enable = [(MemberFlag::Disabled, false)];

    // A nonce Apache never issued: 200, nothing changes, the driver retries once, then fails.
    let e = d
        .change_member("live", &green, &enable, Fault::WrongNonce)
        .await
        .expect_err("a wrong nonce must fail");
    let m = format!("{e:#}");
    common::assert_contains(&m, "still shows `Init Dis`");
    common::assert_contains(&m, "even after a retry with the fresh nonce");

    // No Referer: Apache ignores every parameter (AH10187) and answers 200.
    let m = common::fails_with(
        d.change_member("live", &green, &enable, Fault::NoReferer)
            .await,
        "a missing Referer must fail",
        "still shows `Init Dis`",
    );
    common::assert_contains(&m, "AH10187");
    assert!(a.error_log().contains("AH10187"), "{}", a.logs());

    // A worker Apache does not know: 200 too.
    let e = d
        .change_member("live", "http://127.0.0.1:1", &enable, Fault::None)
        .await
        .expect_err("an unknown worker must fail");
    let m = format!("{e:#}");
    common::assert_contains(&m, "has no member `http://127.0.0.1:1`");

    // None of them changed anything.
    let st = d.observe().await.expect("observe");
    assert_eq!(st.live.as_deref(), Some("blue"), "{st:?}");
    assert_eq!(st.slots["green"].admin, AdminState::Disabled, "{st:?}");
    assert_eq!(answers(&a.url(), 4).await, only("blue", 4));

    // A stale nonce (as after a restart) is refetched and the change goes through.
    d.change_member(
        "live",
        &green,
        &[(MemberFlag::Drain, true)],
        Fault::StaleNonceOnce,
    )
    .await
    .expect("a stale nonce is retried with the fresh one");
    let st = d.observe().await.expect("observe");
    assert_eq!(st.slots["green"].admin, AdminState::Drain, "{st:?}");
    d.undrain(&Target::slot("green")).await.expect("undrain");
    let st = d.observe().await.expect("observe");
    assert_eq!(st.slots["green"].admin, AdminState::Disabled, "{st:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn draining_a_node_shows_its_busy_count_fall_to_zero() {
    let bin = common::or_skip!(require_binary("apache2"));
    let nodes = slots(&[("web1", "1.0.0"), ("web2", "1.0.0"), ("web3", "1.0.0")]).await;
    let a = Apache::three_nodes(&bin, &nodes).await;
    let toml = format!(
        "[[environment]]\nname = \"shop\"\npublic_url = \"{}\"\n{}",
        a.url(),
        prod_nodes_toml(&a, &nodes)
    );
    let d = driver_of(&environment(&toml));
    let st = d.observe().await.expect("observe");
    assert_eq!(st.live.as_deref(), Some("prod"), "{st:?}");
    let names: Vec<_> = st.slots["prod"]
        .nodes
        .iter()
        .map(|n| n.name.as_str())
        .collect();
    assert_eq!(names, ["web1", "web2", "web3"]);

    // Slow requests in flight on every node.
    let slow = format!("{}slow?ms=2500", a.url());
    let mut inflight = Vec::new();
    for _ in 0..6 {
        let u = slow.clone();
        inflight.push(tokio::spawn(async move { fetch(&u, &[]).await }));
    }
    let busy = |n: &SlotServer| n.controls.in_flight.load(SeqCst) > 0;
    let reached = eventually(Duration::from_secs(5), || async { nodes.iter().any(busy) }).await;
    assert!(reached, "no slow request reached a node");
    let i = nodes.iter().position(busy).expect("a busy node");
    let name = format!("web{}", i + 1);
    let target = Target::node("prod", &name);

    d.drain(&target).await.expect("drain");
    let st = d.observe().await.expect("observe");
    let n = node(&st, "prod", &name);
    assert_eq!(n.admin, AdminState::Drain, "{st:?}");
    assert!(
        n.sessions.unwrap_or(0) >= 1,
        "busy while a slow request runs: {n:?}"
    );
    assert_eq!(
        st.slots["prod"].admin,
        AdminState::Ready,
        "the other nodes serve"
    );
    assert_eq!(st.live.as_deref(), Some("prod"));

    // New requests go to the other nodes only.
    let served = nodes[i].controls.served.load(SeqCst);
    let got = answers(&a.url(), 12).await;
    assert!(
        !got.contains_key(&name),
        "{name} got new requests while draining: {got:?}"
    );
    assert_eq!(nodes[i].controls.served.load(SeqCst), served);

    // The busy count falls to zero as the slow requests finish.
    let t = Instant::now();
    observe_until(
        &d,
        Duration::from_secs(10),
        &format!("{name}'s busy count at 0"),
        |st| node(st, "prod", &name).sessions == Some(0),
    )
    .await;
    eprintln!(
        "apache: {name} drained to 0 busy {:?} after the drain",
        t.elapsed()
    );
    for h in inflight {
        let (status, _, _, body) = h.await.expect("join");
        assert_eq!(status, 200, "a slow request failed: {body}");
    }

    // Draining every node is refused at the last serving one.
    let others: Vec<String> = (1..=3)
        .map(|k| format!("web{k}"))
        .filter(|n| *n != name)
        .collect();
    d.drain(&Target::node("prod", &others[0]))
        .await
        .expect("drain a second node");
    fails_with(
        d.drain(&Target::node("prod", &others[1])).await,
        "the last serving node must not be drained",
        "no member left",
    );
    let st = d.observe().await.expect("observe");
    assert_eq!(
        node(&st, "prod", &others[1]).admin,
        AdminState::Ready,
        "{st:?}"
    );
    assert_eq!(answers(&a.url(), 4).await, only(&others[1], 4));
    fails_with(
        d.drain(&Target::node("prod", "web9")).await,
        "unknown node",
        "has no node `web9`",
    );

    // Undrain puts them back.
    d.undrain(&target).await.expect("undrain");
    d.undrain(&Target::node("prod", &others[0]))
        .await
        .expect("undrain");
    let st = d.observe().await.expect("observe");
    assert!(
        st.slots["prod"]
            .nodes
            .iter()
            .all(|n| n.admin == AdminState::Ready),
        "{st:?}"
    );
    assert_eq!(answers(&a.url(), 9).await.len(), 3);
}

/// The engine of the blue/green server's environment, with its state in `state`.
fn blue_green_engine(
    a: &Apache,
    blue: &str,
    green: &str,
    state: &Path,
) -> std::sync::Arc<cutover::ops::Engine> {
    common::engine(&format!(
        "[settings]\ngate_checks = 1\nstate_dir = \"{}\"\n{}",
        state.display(),
        blue_green_toml(a, blue, green, "")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undrain_of_an_idle_slot_succeeds_and_leaves_it_disabled() {
    let (_bin, _s, blue, green, a) = common::or_skip!(blue_green_rig().await);
    let state = tempfile::tempdir().expect("state dir");
    let engine = blue_green_engine(&a, &blue, &green, state.path());
    let green_slot = Target::slot("green");
    common::run_op_ends(
        &engine,
        cutover::ops::OpKind::Drain(green_slot.clone()),
        cutover::ops::Verdict::Done,
    )
    .await;
    let st = engine.observe_all().await.expect("observe").remove(0);
    assert_eq!(st.slots["green"].admin, AdminState::Drain, "{st:#?}");
    // The undrain clears Drain; green's member of balancer://live was disabled before (green
    // is idle) and stays so, as docs/apache.md says. That is what the verify step expects.
    common::run_op_ends(
        &engine,
        cutover::ops::OpKind::Undrain(green_slot),
        cutover::ops::Verdict::Done,
    )
    .await;
    let st = engine.observe_all().await.expect("observe").remove(0);
    assert_eq!(st.slots["green"].admin, AdminState::Disabled, "{st:#?}");
    assert_eq!(st.live.as_deref(), Some("blue"), "{st:#?}");
    assert_eq!(st.preview.as_deref(), Some("green"), "{st:#?}");
    assert_eq!(answers(&a.url(), 4).await, only("blue", 4));
    assert_eq!(answers(&a.preview_url(), 2).await, only("green", 2));
}

/// Maintenance `on` or off (`mode`) on `d`; then `n` requests to `url` all reach `slot`.
async fn maintenance_serves(
    d: &apache::Driver,
    on: bool,
    mode: &MaintenanceMode,
    url: &str,
    slot: &str,
    n: usize,
) {
    d.maintenance(on, mode)
        .await
        .unwrap_or_else(|e| panic!("maintenance on={on} {mode:?}: {e:#}"));
    assert_eq!(
        answers(url, n).await,
        only(slot, n),
        "after maintenance on={on}"
    );
}

/// Maintenance that redirects the live traffic to `slot`.
fn redirect_to(slot: &str) -> MaintenanceMode {
    MaintenanceMode::Redirect { to: slot.into() }
}

/// One of the reading's notes is `what` (or, if not `present`, none is): a failure shows the
/// notes.
#[track_caller]
fn assert_note(st: &cutover::model::RouterState, present: bool, what: impl Fn(&str) -> bool) {
    assert_eq!(st.notes.iter().any(|n| what(n)), present, "{:?}", st.notes);
}

/// Swap to green, then a graceful restart of Apache (`BalancerPersist` on if `persist`): the
/// reading after it, which shows `expect` live, as the public port's answers do.
async fn restart_after_swap(
    bin: &Path,
    persist: bool,
    expect: &str,
) -> cutover::model::RouterState {
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (blue, green) = (s[0].url(), s[1].url());
    let a = Apache::blue_green(bin, free_port(), &blue, &green, &green, "web1", persist).await;
    let d = driver_of(&environment(&blue_green_toml(&a, &blue, &green, "")));
    d.switch_live("green").await.expect("swap");
    let st = d.observe().await.expect("observe");
    assert_eq!(st.live.as_deref(), Some("green"), "{st:?}");
    assert_note(&st, false, |n| n.contains("drift"));
    a.graceful_restart().await;
    // The old children finish their requests after "resuming normal operations": wait
    // (generously) for the balancer-manager to answer from the new generation, which shows
    // `expect` live.
    eventually(Duration::from_secs(30), || async {
        d.observe()
            .await
            .is_ok_and(|st| st.live.as_deref() == Some(expect))
    })
    .await;
    let st = d.observe().await.expect("observe after restart");
    assert_eq!(st.live.as_deref(), Some(expect), "{st:?}");
    assert_eq!(answers(&a.url(), 4).await, only(expect, 4));
    st
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_without_balancer_persist_shows_as_drift() {
    let bin = common::or_skip!(require_binary("apache2"));
    // Apache goes back to the config's states: blue is live again, and observe says why.
    let st = restart_after_swap(&bin, false, "blue").await;
    eprintln!(
        "apache: after a graceful restart without BalancerPersist: {:?}",
        st.notes
    );
    assert_note(&st, true, |n| {
        n.starts_with("drift") && n.contains("(green)") && n.contains("BalancerPersist is Off")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_balancer_persist_a_graceful_restart_keeps_the_swap() {
    let bin = common::or_skip!(require_binary("apache2"));
    let st = restart_after_swap(&bin, true, "green").await;
    assert_note(&st, false, |n| n.contains("drift"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maintenance_redirect_on_and_off_under_load_fails_no_request() {
    // This server's maintenance redirect goes to green.
    let (_bin, _s, blue, green, a) = common::or_skip!(blue_green_rig().await);
    let d = driver_of(&environment(&blue_green_toml(&a, &blue, &green, "")));
    let redirect = redirect_to("green");

    // Time to take effect, one request at a time.
    let mut on_ms = Vec::new();
    let mut off_ms = Vec::new();
    for _ in 0..5 {
        // On: green answers, marked as the redirect; off: blue, unmarked.
        for (on, want) in [(true, ("green", "redirect")), (false, ("blue", ""))] {
            let t = Instant::now();
            d.maintenance(on, &redirect)
                .await
                .unwrap_or_else(|e| panic!("maintenance on={on}: {e:#}"));
            let (_, slot, maint, _) = fetch(&a.url(), &[]).await;
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if on {
                on_ms.push(ms)
            } else {
                off_ms.push(ms)
            }
            assert_eq!((slot.as_str(), maint.as_str()), want);
        }
    }
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    eprintln!(
        "apache: maintenance redirect on -> first redirected answer: max {:.1} ms; off -> first \
         own answer: max {:.1} ms (driver call with its verify GET + one request)",
        max(&on_ms),
        max(&off_ms)
    );

    // The mechanism alone: from the flag file appearing (or going) to the next answer.
    let flag = a.flag("maintenance.redirect");
    let mut raw_us = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        std::fs::write(&flag, "test\n").expect("flag");
        assert_eq!(fetch(&a.url(), &[]).await.1, "green");
        raw_us.push(t.elapsed().as_micros());
        let t = Instant::now();
        std::fs::remove_file(&flag).expect("rm flag");
        assert_eq!(fetch(&a.url(), &[]).await.1, "blue");
        raw_us.push(t.elapsed().as_micros());
    }
    eprintln!(
        "apache: flag file created/removed -> next answer already follows it: max {} us \
         (one request)",
        raw_us.iter().max().unwrap_or(&0)
    );

    // Under bounded concurrent load, toggled on and off.
    let (r, ()) = under_bounded_load(a.url(), |mut seen| async move {
        for _ in 0..8 {
            d.maintenance(true, &redirect)
                .await
                .expect("maintenance on");
            let st = d.observe().await.expect("observe");
            assert_eq!(st.maintenance, Some(redirect.clone()), "{st:?}");
            seen.answered_by("green").await;
            d.maintenance(false, &redirect)
                .await
                .expect("maintenance off");
            let st = d.observe().await.expect("observe");
            assert_eq!(st.maintenance, None, "{st:?}");
            seen.answered_by("blue").await;
        }
    })
    .await;
    eprintln!(
        "apache: 8 maintenance on/off cycles under load: {} requests ({:?}), 0 failed",
        r.sent, r.by_slot
    );
    assert!(!a.flag("maintenance.redirect").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bypass_cookie_reaches_the_server_in_maintenance() {
    let (_bin, _s, blue, green, a) = common::or_skip!(blue_green_rig().await);
    let d = driver_of(&environment(&blue_green_toml(&a, &blue, &green, "")));
    let redirect = redirect_to("green");

    d.maintenance(true, &redirect)
        .await
        .expect("maintenance on");
    let st = d.observe().await.expect("observe");
    assert_note(&st, true, |n| {
        n.contains("cookie `cutover_bypass=1`") && n.contains("reached this server's own backend")
    });
    assert_eq!(fetch(&a.url(), &[]).await.1, "green");
    let (status, slot, maint, _) =
        fetch(&a.url(), &[("cookie", "session=abc; cutover_bypass=1")]).await;
    assert_eq!((status, slot.as_str(), maint.as_str()), (200, "blue", ""));
    let (_, slot, _, _) = fetch(&a.url(), &[("x-cutover-bypass", "1")]).await;
    assert_eq!(slot, "blue");
    // A cookie whose name merely ends the same way does not bypass.
    let (_, slot, _, _) = fetch(&a.url(), &[("cookie", "no_cutover_bypass=1")]).await;
    assert_eq!(slot, "green");

    // The page mode replaces the redirect; the bypass works there too.
    d.maintenance(true, &MaintenanceMode::Page)
        .await
        .expect("page on");
    assert!(!a.flag("maintenance.redirect").exists());
    let st = d.observe().await.expect("observe");
    assert_eq!(st.maintenance, Some(MaintenanceMode::Page));
    let c = cutover::http_client().build().expect("client");
    let r = c.get(a.url()).send().await.expect("GET");
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("30")
    );
    let (status, slot, _, _) = fetch(&a.url(), &[("cookie", "cutover_bypass=1")]).await;
    assert_eq!((status, slot.as_str()), (200, "blue"));
    maintenance_serves(&d, false, &MaintenanceMode::Page, &a.url(), "blue", 3).await;

    // A redirect to a slot this Apache does not redirect to is refused.
    fails_with(
        d.maintenance(true, &redirect_to("blue")).await,
        "wrong target",
        "goes to `green`",
    );

    // A flag Apache does not test: the verify step sees no effect, fails, removes the flag.
    let wrong = a.dir.path().join("elsewhere.redirect");
    let toml = blue_green_toml(&a, &blue, &green, "").replace(
        &a.flag("maintenance.redirect").display().to_string(),
        &wrong.display().to_string(),
    );
    let d2 = driver_of(&environment(&toml));
    let m = common::fails_with(
        d2.maintenance(true, &redirect).await,
        "no effect",
        "did not take effect",
    );
    common::assert_contains(&m, "X-Cutover-Maintenance");
    assert!(!wrong.exists(), "the flag was left behind");
    assert_eq!(answers(&a.url(), 3).await, only("blue", 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maintenance_redirect_is_no_version_mismatch_and_a_missing_bypass_is_said() {
    let test = "a_maintenance_redirect_is_no_version_mismatch_and_a_missing_bypass_is_said";
    let Some(bin) = require_binary(test, "apache2") else {
        return;
    };
    // Seed 004: this server (blue, 1.2.3) redirects its maintenance traffic to the peer
    // (green, 1.2.4).
    let s = slots(&[("blue", "1.2.3"), ("green", "1.2.4")]).await;
    let (blue, green) = (s[0].url(), s[1].url());
    let a = Apache::blue_green(&bin, free_port(), &blue, &green, &green, "web1", true).await;
    let dir = tempfile::tempdir().expect("dir");
    let config = format!(
        "[settings]\nstate_dir = \"{}\"\n{}",
        dir.path().join("state").display(),
        blue_green_toml(&a, &blue, &green, "")
    );
    let status = || async {
        let o = cutover_cli(dir.path(), &config, &["status", "shop", "--json"]).await;
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", printed(&o)));
        (o.status.code(), v["environments"][0].clone())
    };
    let (code, env) = status().await;
    assert_eq!(code, Some(0), "{env:#}");
    assert_eq!(env["warnings"], serde_json::json!([]), "{env:#}");

    let d = driver_of(&environment(&config));
    let redirect = redirect_to("green");
    d.maintenance(true, &redirect).await.expect("redirect on");
    assert_eq!(fetch(&a.url(), &[]).await.1, "green");
    let (code, env) = status().await;
    assert_eq!(code, Some(0), "{env:#}");
    assert_eq!(env["maintenance"]["mode"], "redirect", "{env:#}");
    assert_eq!(env["public"]["version"]["version"], "1.2.4", "{env:#}");
    // The public URL serving green's 1.2.4 while blue is live is what the redirect means.
    assert_eq!(env["warnings"], serde_json::json!([]), "{env:#}");
    d.maintenance(false, &redirect).await.expect("redirect off");
    drop(a);

    // The same server whose redirect rule has no bypass condition: no bypass is claimed.
    let body = doc_block("cutover-apache-config", "apache");
    let no_bypass = body
        .lines()
        .filter(|l| !l.contains("cutover_bypass=") && !l.contains("X-Cutover-Bypass"))
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(no_bypass.lines().count(), body.lines().count());
    let defines = blue_green_defines("web1", &blue, &green, &green);
    let b = Apache::start(&bin, free_port(), &defines, &format!("{no_bypass}\n"), true).await;
    let d = driver_of(&environment(&blue_green_toml(&b, &blue, &green, "")));
    d.maintenance(true, &redirect).await.expect("redirect on");
    let (_, slot, _, _) = fetch(&b.url(), &[("cookie", "cutover_bypass=1")]).await;
    assert_eq!(slot, "green", "this config has no bypass");
    let st = d.observe().await.expect("observe");
    assert_note(&st, false, |n| {
        n.contains("reached this server's own backend")
    });
    assert_note(&st, true, |n| {
        n.starts_with("no maintenance bypass") && n.contains("cutover_bypass=1")
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loop_guard_stops_two_servers_redirecting_to_each_other() {
    let bin = common::or_skip!(require_binary("apache2"));
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (blue, green) = (s[0].url(), s[1].url());
    // Two servers: web1 serves blue and redirects to web2; web2 serves green and redirects
    // to web1 (each one's live balancer starts on its own slot).
    let (p1, p2) = (free_port(), free_port());
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let web1 = Apache::blue_green(&bin, p1, &blue, &green, &url(p2), "web1", true).await;
    let web2 = Apache::blue_green(&bin, p2, &blue, &green, &url(p1), "web2", true).await;
    let d1 = driver_of(&environment(&blue_green_toml(
        &web1,
        &blue,
        &green,
        &format!(
            "maintenance_peer_flags = [\"{}\"]",
            web2.flag("maintenance.redirect").display()
        ),
    )));
    let toml2 = blue_green_toml(
        &web2,
        &blue,
        &green,
        &format!(
            "maintenance_peer_flags = [\"{}\"]",
            web1.flag("maintenance.redirect").display()
        ),
    )
    .replace("maintenance_to = \"green\"", "maintenance_to = \"blue\"");
    let d2 = driver_of(&environment(&toml2));
    d2.switch_live("green").await.expect("web2 serves green");
    assert_eq!(answers(&web1.url(), 2).await, only("blue", 2));
    assert_eq!(answers(&web2.url(), 2).await, only("green", 2));

    // web1 into maintenance: its traffic goes through web2 to green.
    maintenance_serves(&d1, true, &redirect_to("green"), &web1.url(), "green", 3).await;

    // cutover refuses to put the last serving server into redirect.
    fails_with(
        d2.maintenance(true, &redirect_to("blue")).await,
        "both servers in redirect must be refused",
        "refusing to redirect",
    );
    assert!(!web2.flag("maintenance.redirect").exists());

    // Both flags on anyway (by hand): a redirected request is not redirected again.
    std::fs::write(web2.flag("maintenance.redirect"), "by hand\n").expect("flag");
    let (status, slot, maint, body) = fetch(&format!("{}headers", web1.url()), &[]).await;
    assert_eq!(
        (status, slot.as_str(), maint.as_str()),
        (200, "green", "redirect"),
        "{body}"
    );
    let headers: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(headers["x-cutover-redirected"], "web1", "{headers}");
    let (status, slot, _, body) = fetch(&format!("{}headers", web2.url()), &[]).await;
    assert_eq!((status, slot.as_str()), (200, "blue"), "{body}");
    let headers: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(headers["x-cutover-redirected"], "web2", "{headers}");
    let st = d1.observe().await.expect("observe");
    assert_note(&st, true, |n| n.contains("loop guard"));

    std::fs::remove_file(web2.flag("maintenance.redirect")).expect("rm");
    maintenance_serves(&d1, false, &MaintenanceMode::Page, &web1.url(), "blue", 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_behind_basic_auth() {
    let bin = common::or_skip!(require_binary("apache2"));
    let htpasswd = common::or_skip!(require_binary("htpasswd"));
    let s = slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let (blue, green) = (s[0].url(), s[1].url());
    let secrets = tempfile::TempDir::new().expect("temp dir");
    let users = secrets.path().join("htpasswd");
    let ok = Command::new(htpasswd)
        .args(["-cbB"])
        .arg(&users)
        .args(["cutover", "s3cret"])
        .output()
        .expect("htpasswd");
    assert!(ok.status.success(), "{ok:?}");
    let body = format!(
        "{}{}",
        doc_block("cutover-apache-config", "apache"),
        doc_block("cutover-apache-auth", "apache")
    );
    let mut defines = blue_green_defines("web1", &blue, &green, &green);
    defines.push(("CUTOVER_HTPASSWD", users.display().to_string()));
    let a = Apache::start(&bin, free_port(), &defines, &body, true).await;
    let base = blue_green_toml(&a, &blue, &green, "");

    // Without credentials: the 401 is reported with what to do.
    let e = driver_of(&environment(&base))
        .observe()
        .await
        .expect_err("401");
    let m = format!("{e:#}");
    assert!(m.contains("HTTP 401") && m.contains("username"), "{m}");

    // With a wrong password: 401 too, and nothing changes.
    let pw = secrets.path().join("password");
    std::fs::write(&pw, "wrong\n").expect("write");
    let auth = format!(
        "username = \"cutover\"\npassword_file = \"{}\"",
        pw.display()
    );
    fails_with(
        driver_of(&environment(&blue_green_toml(&a, &blue, &green, &auth)))
            .switch_live("green")
            .await,
        "401",
        "HTTP 401",
    );
    assert_eq!(answers(&a.url(), 2).await, only("blue", 2));

    // With the right one, the swap goes through.
    std::fs::write(&pw, "s3cret\n").expect("write");
    let d = driver_of(&environment(&blue_green_toml(&a, &blue, &green, &auth)));
    d.switch_live("green").await.expect("swap with basic auth");
    assert_eq!(
        d.observe().await.expect("observe").live.as_deref(),
        Some("green")
    );
    assert_eq!(answers(&a.url(), 2).await, only("green", 2));

    // password_env names a variable that is not set: the driver says so at build time.
    let toml = blue_green_toml(
        &a,
        &blue,
        &green,
        "username = \"cutover\"\npassword_env = \"CUTOVER_TEST_APACHE_PASSWORD_NOT_SET\"",
    );
    let env = environment(&toml);
    let RouterConfig::Apache(c) = &env.routers[0] else {
        panic!("not apache")
    };
    let e = apache::Driver::new("apache".into(), &env, c)
        .err()
        .expect("a missing variable is an error");
    assert!(
        e.to_string()
            .contains("CUTOVER_TEST_APACHE_PASSWORD_NOT_SET"),
        "{e}"
    );
}

/// The three-node server, its nodes, a state dir and the engine of a config whose rolling
/// deploy POSTs the new version to each node (`rolling` and `router` add lines to the
/// `[environment.rolling]` and router tables); None when apache2 or curl is missing.
async fn rolling_world(
    test: &str,
    rolling: &str,
    router: &str,
) -> Option<(
    Apache,
    Vec<SlotServer>,
    tempfile::TempDir,
    std::sync::Arc<cutover::ops::Engine>,
)> {
    let bin = require_binary(test, "apache2")?;
    let curl = require_binary(test, "curl")?;
    let nodes = slots(&[("web1", "1.0.0"), ("web2", "1.0.0"), ("web3", "1.0.0")]).await;
    let a = Apache::three_nodes(&bin, &nodes).await;
    let state = tempfile::tempdir().expect("state");
    let toml = format!(
        "[settings]\nstate_dir = \"{}\"\n\n[[environment]]\nname = \"shop\"\npublic_url = \"{}\"\n\n\
         [environment.rolling]\n\
         deploy = [\"{}\", \"-sf\", \"-X\", \"POST\", \"{{address}}/deploy?version={{version}}\"]\n\
         {rolling}{}{router}",
        state.path().display(),
        a.url(),
        curl.display(),
        prod_nodes_toml(&a, &nodes),
    );
    let engine = common::engine(&toml);
    Some((a, nodes, state, engine))
}

/// A rolling deploy of version 2.0.0 over `prod`: the outcome and its steps.
async fn roll_to_2(engine: &cutover::ops::Engine) -> (cutover::ops::Outcome, Vec<String>) {
    let kind = cutover::ops::OpKind::Rolling {
        slot: "prod".into(),
        version: Some("2.0.0".into()),
    };
    common::run_op(engine, kind, false, false).await
}

#[tokio::test]
async fn a_rolling_deploy_stops_at_the_node_whose_smoke_test_fails() {
    // The smoke command fails for web2, as a browser test that finds the login broken would.
    let Some((a, nodes, _state, engine)) = rolling_world(
        "a_rolling_deploy_stops_at_the_node_whose_smoke_test_fails",
        "smoke = [\"sh\", \"-c\", \"test {node} != web2 || { echo 'login page broken on web2' >&2; exit 1; }\"]\n\
         drain_timeout = \"5s\"\nsmoke_timeout = \"3s\"\n",
        "",
    )
    .await
    else {
        return;
    };
    let (out, lines) = roll_to_2(&engine).await;
    common::assert_verdict(&out, cutover::ops::Verdict::Failed);
    common::assert_contains(&out.message, "web2 (2/3): smoke command failed");
    common::assert_contains(&out.message, "login page broken on web2");
    common::assert_contains(&out.message, "`web2` stays drained");
    // Node by node: web1 went all the way round before web2 started.
    let pos = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in {lines:#?}"))
    };
    assert!(
        pos("web1 (1/3): back in service") < pos("web2 (2/3): drained"),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("web3")),
        "web3 must not be touched: {lines:#?}"
    );
    // What the operator checks: web1 and web3 serve, web2 is out; versions as deployed.
    let st = engine.observe_all().await.expect("observe").remove(0);
    let admin = |n: &str| node(&st, "prod", n).admin;
    assert_eq!(admin("web1"), AdminState::Ready);
    assert_eq!(admin("web2"), AdminState::Drain);
    assert_eq!(admin("web3"), AdminState::Ready);
    assert_eq!(nodes[0].controls.version(), "2.0.0");
    assert_eq!(nodes[1].controls.version(), "2.0.0");
    assert_eq!(nodes[2].controls.version(), "1.0.0");
    let seen = answers(&a.url(), 30).await;
    assert!(
        !seen.contains_key("web2"),
        "the drained node got traffic: {seen:?}"
    );
    assert!(
        seen.contains_key("web1") && seen.contains_key("web3"),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_count_standing_still_does_not_hold_up_a_rolling_deploy() {
    let (a, nodes, _state, engine) =
        common::or_skip!(rolling_world("drain_timeout = \"60s\"\n", "idle_after = \"1s\"\n").await);
    // Apache leaves `busy` above zero only when concurrent updates race (docs/apache.md,
    // "Busy"), which cannot be made to happen on demand. What cutover sees of it, a member
    // whose busy stays at 1 while no request is sent to it and none ends, is made here by one
    // request held open for 20 s. Without the leftover rule the deploy waits 60 s at that node.
    let slow = format!("{}slow?ms=20000", a.url());
    let held = tokio::spawn(async move { fetch(&slow, &[]).await });
    let busy = |n: &SlotServer| n.controls.in_flight.load(SeqCst) > 0;
    let reached = eventually(Duration::from_secs(5), || async { nodes.iter().any(busy) }).await;
    assert!(reached, "the held request reached no node");
    let i = nodes.iter().position(busy).expect("a busy node");
    let st = engine.observe_all().await.expect("observe").remove(0);
    assert_eq!(
        node(&st, "prod", &format!("web{}", i + 1)).sessions,
        Some(1),
        "{st:#?}"
    );

    let t = Instant::now();
    let (out, lines) = roll_to_2(&engine).await;
    let took = t.elapsed();
    assert_verdict_seen(&out, cutover::ops::Verdict::Done, &lines);
    assert!(
        took < Duration::from_secs(15),
        "the deploy took {took:?}, waiting on a count that stood still: {lines:#?}"
    );
    let name = format!("web{} (", i + 1);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(&name) && l.contains("drained (0 in flight)")),
        "{lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("after drain_timeout")),
        "{lines:#?}"
    );
    assert!(nodes.iter().all(|n| n.controls.version() == "2.0.0"));
    // The count Apache still shows is said, not hidden.
    let st = engine.observe_all().await.expect("observe").remove(0);
    let n = node(&st, "prod", &format!("web{}", i + 1));
    assert_eq!(n.sessions, Some(0), "{st:#?}");
    assert!(
        n.check
            .as_deref()
            .is_some_and(|c| c.contains("busy 1 left over")),
        "{n:?}"
    );
    held.abort();
}

// ---------------------------------------------------------------------------------------
// Benchmarks (scripts/bench): `cargo test --release --test apache -- --ignored bench_ --nocapture`

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_drill_balancer_manager() {
    let (_bin, _s, blue, green, a) = common::or_skip!(blue_green_rig().await);
    let r = common::bench_drill(
        "apache (balancer-manager)",
        &blue_green_toml(&a, &blue, &green, ""),
    )
    .await;
    if r.failed > 0 {
        let log = std::fs::read_to_string(&a.log).unwrap_or_default();
        // The first lines that say why, without the repeats of "All workers are in error state".
        let why: Vec<&str> = log
            .lines()
            .filter(|l| !l.contains("AH01170") && !l.contains("AH10187") && !l.contains("AH02155"))
            .take(30)
            .collect();
        eprintln!("apache's error log, first errors:\n{}", why.join("\n"));
    }
}

/// The drill through the file-mode server (`mode = "file"`): each switch is a rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_drill_flag() {
    let (_s, a, toml) = common::or_skip!(file_mode_rig().await);
    let r = common::bench_drill("apache (file mode: flag rename)", &toml).await;
    assert_eq!(r.failed, 0, "{}", a.error_log());
}

/// The same load without any switch: failures here are Apache's own, not the switches'.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: scripts/bench runs it"]
async fn bench_throughput_direct_embedded_apache() {
    let (_bin, s, _blue, _green, a) = common::or_skip!(blue_green_rig().await);
    let label = "through Apache (event MPM, defaults)";
    common::bench_three_ways(&s[0], &s[1], a.dir.path(), label, &a.url()).await;
}

/// The traffic view's figures come from the balancer-manager's `elected` counter: over a window
/// of load it matches the load's own count within 5 % (Apache updates it without a lock, and
/// loses a few under concurrency; see docs/apache.md "Busy").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_slots_elected_counter_matches_the_loads_own_count() {
    let (_bin, _s, blue, green, a) = common::or_skip!(blue_green_rig().await);
    let d = driver_of(&environment(&blue_green_toml(&a, &blue, &green, "")));
    let before = d.observe().await.expect("observe");
    let live = before.live.clone().expect("a live slot");
    let requests = |st: &cutover::model::RouterState| {
        st.slots
            .get(&live)
            .and_then(|r| r.requests)
            .unwrap_or_else(|| panic!("no counter for `{live}`: {st:?}"))
    };
    let r0 = requests(&before);
    // Bounded in count and time, two at a time: a window of load, not a benchmark.
    let report = common::load_window(a.url()).await;
    let after = d.observe().await.expect("observe");
    common::assert_counted_as_the_load("Apache", &live, requests(&after) - r0, &report);
}
