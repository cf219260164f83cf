//! The shared store on a real etcd member (Debian's `etcd-server`, started here on loopback
//! ports with its data in a temp dir, stopped by PID): two cutovers with their own state dirs
//! share one lock and one memory; racing processes never both hold the lock; a killed holder's
//! lease expires and its late write is fenced off; a lost lease stops an operation; etcd down
//! refuses operations and changes nothing.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{ChildGuard, printed};
use cutover::config::Settings;
use cutover::ops::{OpKind, Verdict};
use cutover::router::RouterConfig;
use cutover::state::{LockError, LockInfo, Store};

const TOKEN: &str = "s3cr3t-admin-token-for-etcd-tests";

/// One etcd member on loopback, killed by PID when dropped.
struct Member {
    url: String,
    guard: ChildGuard,
    _dir: tempfile::TempDir,
}

/// Start a member, or `None` (the test returns, loudly) when etcd is not installed.
fn etcd(test: &str) -> Option<Member> {
    cluster(test, 1).and_then(|mut c| c.pop())
}

/// Start an `n`-member cluster on loopback and wait until it has a leader.
fn cluster(test: &str, n: usize) -> Option<Vec<Member>> {
    let bin = common::require_binary(test, "etcd")?;
    let ports: Vec<(u16, u16)> = (0..n)
        .map(|_| (common::free_port(), common::free_port()))
        .collect();
    let initial: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
        .collect();
    let token = format!("cutover-test-{}-{}", std::process::id(), ports[0].0);
    let mut members = Vec::new();
    for (i, (client, peer)) in ports.iter().enumerate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log");
        let guard = ChildGuard::spawn(
            "etcd",
            Command::new(&bin)
                .args(["--name", &format!("m{i}"), "--data-dir"])
                .arg(dir.path().join("data"))
                .args(["--listen-client-urls", &url])
                .args(["--advertise-client-urls", &url])
                .args(["--listen-peer-urls", &peer_url])
                .args(["--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", &token])
                .stdout(Stdio::null())
                .stderr(log),
        );
        members.push(Member {
            url,
            guard,
            _dir: dir,
        });
    }
    // Ready when a linearizable read answers on every member (there is a leader).
    for m in &members {
        let store = store_of(&settings(&m.url, "/ready/", 10, Path::new("/nonexistent")));
        let ready = common::wait_until(Duration::from_secs(30), || {
            store.shared().expect("etcd store").ready()
        });
        assert!(ready, "etcd at {} not ready in 30 s", m.url);
    }
    Some(members)
}

/// `url` may be several, comma-separated: `a", "b`.
fn store_toml(url: &str, prefix: &str, ttl_s: u64) -> String {
    format!(
        "[settings.store]\netcd = [\"{url}\"]\nprefix = \"{prefix}\"\nlease_ttl = \"{ttl_s}s\"\n\
         timeout = \"1s\"\n"
    )
}

fn settings(url: &str, prefix: &str, ttl_s: u64, state: &Path) -> Settings {
    let text = format!(
        "[settings]\nstate_dir = \"{}\"\n{}\n[[environment]]\nname = \"shop\"\n\
         [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:1\"\n",
        state.display(),
        store_toml(url, prefix, ttl_s)
    );
    cutover::config::parse(&text, Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .settings
}

fn store_of(s: &Settings) -> Store {
    s.open_store().expect("open the etcd store")
}

// ---------------------------------------------------------------------------------------
// Child processes: this test binary again, run by the tests below.
// ---------------------------------------------------------------------------------------

/// The child side: hold the lock (printing `held TOKEN`) until killed, or take it `n` times
/// and increment a counter file inside it.
#[test]
#[ignore = "a child process of the etcd tests"]
fn etcd_child() {
    let Ok(url) = std::env::var("CUTOVER_ETCD_URL") else {
        return;
    };
    let dir = PathBuf::from(std::env::var("CUTOVER_ETCD_DIR").expect("dir"));
    let ttl: u64 = std::env::var("CUTOVER_ETCD_TTL")
        .expect("ttl")
        .parse()
        .expect("ttl");
    // Each child has its own state dir: another operator's machine.
    let own = dir.join(format!("state-{}", std::process::id()));
    let store = store_of(&settings(&url, "/race/", ttl, &own));
    let me = LockInfo::me("swap", &format!("p{}", std::process::id()));
    if std::env::var("CUTOVER_ETCD_HOLD").is_ok() {
        let g = store.lock("shop", &me).expect("lock");
        println!("held {}", g.fencing_token().expect("token"));
        // Hold it until killed (the test's kill -9), or until the test is gone (its end of
        // stdin closes).
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        return;
    }
    let n: usize = std::env::var("CUTOVER_ETCD_N")
        .expect("n")
        .parse()
        .expect("n");
    let deadline = Instant::now() + Duration::from_secs(240);
    let mut done = 0;
    while done < n {
        assert!(Instant::now() < deadline, "{done} of {n} in 240 s");
        match store.lock("shop", &me) {
            Ok(g) => {
                let last = format!("{}-{done}", std::process::id());
                common::race_turn(&dir.join("inside"), &dir.join("counter"), || {
                    store
                        .update(&g, |m| {
                            m.previous_live = Some(last.clone());
                            let n: u64 = m
                                .last_set_preview
                                .as_deref()
                                .and_then(|s| s.parse().ok())
                                .unwrap_or(0);
                            m.last_set_preview = Some((n + 1).to_string());
                        })
                        .expect("fenced state write");
                });
                drop(g);
                done += 1;
            }
            Err(LockError::Held(_)) => std::thread::yield_now(),
            Err(e) => panic!("{e}"),
        }
    }
}

fn child(url: &str, dir: &Path, ttl: u64, n: usize, hold: bool) -> std::process::Child {
    let env = [
        ("CUTOVER_ETCD_URL", url.to_string()),
        ("CUTOVER_ETCD_DIR", dir.display().to_string()),
        ("CUTOVER_ETCD_TTL", ttl.to_string()),
        ("CUTOVER_ETCD_N", n.to_string()),
    ];
    common::test_child("etcd_child", &env, hold.then_some("CUTOVER_ETCD_HOLD"))
}

#[test]
fn racing_processes_with_their_own_state_dirs_never_both_hold_the_lock() {
    let Some(m) = etcd("racing_processes_never_both_hold_the_lock") else {
        return;
    };
    let d = tempfile::tempdir().expect("tempdir");
    let kids: Vec<_> = (0..2)
        .map(|_| child(&m.url, d.path(), 10, 100, false))
        .collect();
    for k in kids {
        let o = k.wait_with_output().expect("child");
        assert!(o.status.success(), "a child failed: {}", printed(&o));
    }
    let count: u64 = std::fs::read_to_string(d.path().join("counter"))
        .expect("counter")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(count, 200, "an increment was lost: two holders");
    // The shared memory was incremented inside the lock too, by fenced writes: none lost.
    let store = store_of(&settings(&m.url, "/race/", 10, d.path()));
    assert_eq!(
        store.env("shop").last_set_preview.as_deref(),
        Some("200"),
        "a fenced state write was lost"
    );
    assert_eq!(store.holder("shop"), None, "the last holder let go");
    // Every environment's memory at once (what a TUI reads when it starts).
    let all = store.load().environments;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all["shop"].last_set_preview.as_deref(), Some("200"));
}

#[test]
fn a_killed_holders_lease_expires_within_the_ttl_and_its_late_write_is_refused() {
    let m = common::or_skip!(etcd());
    const TTL: u64 = 3;
    let d = tempfile::tempdir().expect("tempdir");
    let mut kid = child(&m.url, d.path(), TTL, 0, true);
    let mut out = std::io::BufReader::new(kid.stdout.take().expect("stdout"));
    let mut line = String::new();
    while !line.starts_with("held ") {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("read") > 0,
            "the child ended"
        );
    }
    let token: i64 = line["held ".len()..].trim().parse().expect("token");
    let store = store_of(&settings(&m.url, "/race/", TTL, &d.path().join("mine")));
    let me = LockInfo::me("swap", "parent");
    // Held by the other process: refused, naming it.
    let e = store.lock("shop", &me).expect_err("the child holds it");
    assert!(
        matches!(&e, LockError::Held(h) if h.pid == kid.id()),
        "{e:?}"
    );
    assert!(e.to_string().contains("locked by"), "{e}");
    // The lease outlives a holder that stops renewing it by at most the TTL: kept alive
    // every TTL/3, it has at most the TTL left when the holder dies.
    kid.kill().expect("kill -9");
    kid.wait().expect("reaped");
    let killed = Instant::now();
    let mut taken = None;
    let free = common::wait_until(Duration::from_secs(TTL + 2), || {
        match store.lock("shop", &me) {
            Ok(g) => taken = Some(g),
            Err(LockError::Held(_)) => {}
            Err(e) => panic!("{e}"),
        }
        taken.is_some()
    });
    let took = killed.elapsed();
    assert!(free, "still held {took:?} after the holder was killed");
    let guard = taken.expect("the lock");
    // The TTL, plus etcd's expiry sweep (every 500 ms) and the poll's 20 ms.
    assert!(took <= Duration::from_secs(TTL + 1), "{took:?}");
    assert!(guard.fencing_token().expect("token") > token);
    // A late write with the killed holder's token is refused; the new holder's goes through.
    let late = cutover::state::EnvMemory {
        previous_live: Some("from-the-dead".into()),
        ..Default::default()
    };
    let e = cutover::etcd::write_with_token(store.shared().expect("etcd"), "shop", token, &late)
        .expect_err("a stale fencing token must be refused");
    assert!(e.to_string().contains("fencing token"), "{e}");
    store
        .update(&guard, |m| m.previous_live = Some("blue".into()))
        .expect("the holder writes");
    assert_eq!(store.env("shop").previous_live.as_deref(), Some("blue"));
    drop(guard);
    // Without the lock at all (the key is gone), the last holder's token is refused too.
    let e =
        cutover::etcd::write_with_token(store.shared().expect("etcd"), "shop", token + 1, &late)
            .expect_err("no lock, no write");
    assert!(e.to_string().contains("fencing token"), "{e}");
    assert_eq!(store.env("shop").previous_live.as_deref(), Some("blue"));
}

// ---------------------------------------------------------------------------------------
// Two cutover processes (two operators' machines) against one etcd, on a real proxy.
// ---------------------------------------------------------------------------------------

struct Rig {
    dir: tempfile::TempDir,
    _slots: Vec<common::SlotServer>,
    _proxy: cutover::proxy::ProxyHandle,
    live: u16,
    /// The environment's text ([[environment]] with its slots and router).
    env_text: String,
}

impl Rig {
    async fn start(watch: &str) -> Rig {
        unsafe { std::env::set_var("CUTOVER_ETCD_TEST_TOKEN", TOKEN) };
        let slots = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let [live, preview, admin] = common::free_ports();
        let mut env_text = format!(
            "[[environment]]\nname = \"shop\"\npublic_url = \"http://127.0.0.1:{live}/\"\n\
             watch = \"{watch}\"\nverify_timeout = \"3s\"\n\n"
        );
        env_text.push_str(&common::versioned_slot_tables(&slots));
        env_text.push_str(&format!(
            "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{admin}\"\n\
             live_listen = \"127.0.0.1:{live}\"\npreview_listen = \"127.0.0.1:{preview}\"\n\
             initial_live = \"blue\"\ninitial_preview = \"green\"\n\
             token_env = \"CUTOVER_ETCD_TEST_TOKEN\"\nstate_file = \"{}\"\n",
            dir.path().join("proxy.json").display()
        ));
        let text = format!("[settings]\n\n{env_text}");
        let config = cutover::config::parse(&text, Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        let env = &config.environments[0];
        let Some(RouterConfig::Embedded(pc)) = env.routers.first() else {
            panic!("no embedded router")
        };
        let proxy = cutover::proxy::start(env, pc).await.expect("start proxy");
        common::wait_port(live, Duration::from_secs(5)).await;
        Rig {
            dir,
            _slots: slots,
            _proxy: proxy,
            live,
            env_text,
        }
    }

    /// The config of operator `who`: their own state dir, the shared store at `url`.
    fn config(&self, who: &str, url: &str) -> PathBuf {
        let home = self.dir.path().join(who);
        std::fs::create_dir_all(&home).expect("home");
        let text = format!(
            "[settings]\npoll_interval = \"200ms\"\ntimeout = \"500ms\"\ngate_checks = 2\n\
             state_dir = \"{}\"\n{}\n{}",
            home.join("state").display(),
            store_toml(url, "/team/", 10),
            self.env_text
        );
        let path = home.join("cutover.toml");
        std::fs::write(&path, text).expect("config");
        path
    }

    /// A store of the team's (etcd at `url`, prefix `/team/`) with its own state dir: what
    /// a third cutover sees.
    fn observer(&self, url: &str) -> Store {
        store_of(&settings(
            url,
            "/team/",
            10,
            &self.dir.path().join("observer"),
        ))
    }

    /// alice's config (etcd at `url`) with a lease of 2 s instead of 10 s: its text.
    fn short_lease_config(&self, url: &str) -> String {
        let text = std::fs::read_to_string(self.config("alice", url)).expect("config");
        assert!(text.contains("lease_ttl = \"10s\""), "{text}");
        text.replace("lease_ttl = \"10s\"", "lease_ttl = \"2s\"")
    }

    /// alice's `cutover swap shop --yes` (config `alice`), started with its watch: the
    /// process, whose output goes to `stdout` and `stderr`.
    fn alice_swaps(&self, alice: &Path, stdout: Stdio, stderr: Stdio) -> ChildGuard {
        let mut c = self.command(alice, &["swap", "shop", "--yes"]);
        ChildGuard::spawn("cutover (alice)", c.stdout(stdout).stderr(stderr))
    }

    fn command(&self, config: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
        c.arg("--config")
            .arg(config)
            .args(args)
            .env("CUTOVER_ETCD_TEST_TOKEN", TOKEN)
            .env("XDG_STATE_HOME", config.parent().expect("home").join("xdg"))
            .env_remove("CUTOVER_CONFIG")
            .stdin(Stdio::null());
        c
    }

    async fn cli(&self, config: &Path, args: &[&str]) -> std::process::Output {
        let mut c = self.command(config, args);
        tokio::task::spawn_blocking(move || c.output().expect("run cutover"))
            .await
            .expect("join")
    }

    async fn serving(&self) -> String {
        common::get(&format!("http://127.0.0.1:{}/", self.live))
            .await
            .1
    }
}

/// Wait (off the async threads) until `f` holds, at most `within`.
async fn until(within: Duration, f: impl Fn() -> bool + Send + 'static) -> bool {
    tokio::task::spawn_blocking(move || common::wait_until(within, f))
        .await
        .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_operators_share_the_lock_the_rollback_target_and_the_audit_trail() {
    let m = common::or_skip!(etcd());
    let rig = Rig::start("60s").await;
    let (alice, bob) = (rig.config("alice", &m.url), rig.config("bob", &m.url));
    // Alice swaps and stays in her watch, holding the lock.
    let mut a = rig.alice_swaps(&alice, Stdio::null(), Stdio::null());
    let shared = Arc::new(rig.observer(&m.url));
    let s = shared.clone();
    let pid = a.pid();
    assert!(
        until(Duration::from_secs(30), move || s
            .holder("shop")
            .is_some_and(|h| h.pid == pid && h.operation == "swap"))
        .await,
        "alice's cutover never held the lock"
    );
    let s = shared.clone();
    assert!(
        until(Duration::from_secs(30), move || s
            .env("shop")
            .previous_live
            .as_deref()
            == Some("blue"))
        .await,
        "alice's swap was not remembered in etcd"
    );
    assert_eq!(rig.serving().await, "green");
    // Bob, with his own state dir, is refused, naming alice's cutover.
    let o = rig
        .cli(&bob, &["rollback", "shop", "--yes", "--no-watch"])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", printed(&o));
    assert!(
        printed(&o).contains("locked by") && printed(&o).contains(&format!("pid {pid}")),
        "{}",
        printed(&o)
    );
    assert_eq!(rig.serving().await, "green");
    // Alice's cutover ends (SIGTERM: its watch is abandoned and it lets go).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || {
        let st = a.child.wait();
        drop(a);
        st
    })
    .await
    .expect("join")
    .expect("wait");
    assert!(status.code().is_some(), "{status:?}");
    assert_eq!(shared.holder("shop"), None);
    // Bob's rollback goes back to what alice swapped from, though his own machine never saw it.
    let o = rig
        .cli(&bob, &["rollback", "shop", "--yes", "--no-watch"])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert_eq!(rig.serving().await, "blue");
    assert!(!rig.dir.path().join("bob/state/shop.state.json").exists());
    // Both operators' records are in the shared audit trail (and each in their own file).
    let records = shared.shared().expect("etcd").audit_records("shop");
    let by_op = |op: &str, result: &str| {
        records.iter().any(|r| {
            let v: serde_json::Value = serde_json::from_str(r).expect("json");
            v["operation"] == op && v["result"] == result
        })
    };
    assert!(by_op("swap", "started"), "{records:#?}");
    assert!(by_op("rollback", "started"), "{records:#?}");
    assert!(by_op("rollback", "done"), "{records:#?}");
    // In the order they were written: each operation's intent before its result.
    let results: Vec<String> = records
        .iter()
        .map(|r| {
            let v: serde_json::Value = serde_json::from_str(r).expect("json");
            format!(
                "{} {}",
                v["operation"].as_str().unwrap_or("?"),
                v["result"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let at = |x: &str| results.iter().position(|r| r == x).unwrap_or(usize::MAX);
    assert!(at("swap started") < at("rollback started"), "{results:?}");
    assert!(at("rollback started") < at("rollback done"), "{results:?}");
    assert!(!records.iter().any(|r| r.contains(TOKEN)), "{records:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_unreachable_operations_are_refused_and_nothing_changes() {
    let rig = Rig::start("0s").await;
    let port = common::free_port(); // nothing listens there
    let cfg = rig.config("alice", &format!("http://127.0.0.1:{port}"));
    let o = rig
        .cli(&cfg, &["swap", "shop", "--yes", "--no-watch"])
        .await;
    let unreachable =
        format!("cannot take the lock: etcd at http://127.0.0.1:{port} unreachable: ");
    common::assert_exit(
        &o,
        1,
        "swap",
        &[&unreachable, "Connection refused", "; nothing was changed"],
    );
    assert_eq!(rig.serving().await, "blue");
}

/// A swap to the preview on the config `text`, run in the background by the operations
/// engine (`watch`: with its watch): the running operation and the world's store.
fn swap_in_background(
    text: &str,
    watch: bool,
) -> (
    tokio::task::JoinHandle<(cutover::ops::Outcome, Vec<String>)>,
    Store,
) {
    let cfg = cutover::config::parse(text, Path::new("t.toml")).expect("config");
    let world = cutover::world::World::build(cfg, None).expect("world");
    let engine = world.engines[0].clone();
    let run = tokio::spawn(async move {
        common::run_op(&engine, OpKind::Swap { to: None }, false, watch).await
    });
    (run, world.store.clone())
}

/// Wait (30 s at most) until a swap run by `swap_in_background` is watching: it has switched
/// and remembered the slot it left.
async fn until_watching(shared: &Store) {
    let s = shared.clone();
    assert!(
        until(Duration::from_secs(30), move || s
            .env("shop")
            .previous_live
            .is_some())
        .await,
        "the swap never got to its watch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_whose_lease_is_lost_stops_and_says_so() {
    let m = common::or_skip!(etcd());
    let rig = Rig::start("60s").await;
    // A short lease, so that losing it shows quickly.
    let text = rig.short_lease_config(&m.url);
    let (run, shared) = swap_in_background(&text, true);
    until_watching(&shared).await;
    // Its lease ends on the server (what etcd does to a holder cut off for a TTL): the
    // keepalive finds out, and the watch ends at its next safe point.
    let out = stopped_by_losing_the_lock(&m.url, run).await;
    common::assert_contains(&out.message, "LOCK LOST");
    assert_eq!(rig.serving().await, "green");
}

/// Revoke the lease a key is attached to, straight through the gateway.
/// The lease of the lock of `shop` (team `/team/`) at `url` ends on the server: the running
/// operation `run` stops (within 30 s), cancelled. Its outcome.
async fn stopped_by_losing_the_lock(
    url: &str,
    run: tokio::task::JoinHandle<(cutover::ops::Outcome, Vec<String>)>,
) -> cutover::ops::Outcome {
    revoke_the_lease_of(url, "/team/shop/lock").await;
    let (out, _) = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the operation did not stop after losing its lock")
        .expect("join");
    common::assert_verdict(&out, Verdict::Cancelled);
    out
}

async fn revoke_the_lease_of(url: &str, key: &str) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let c = cutover::http_client().build().expect("client");
    let v: serde_json::Value = c
        .post(format!("{url}/v3/kv/range"))
        .json(&serde_json::json!({"key": b64.encode(key)}))
        .send()
        .await
        .expect("range")
        .json()
        .await
        .expect("json");
    let lease = v["kvs"][0]["lease"]
        .as_str()
        .expect("a lock key with a lease")
        .to_string();
    let r = c
        .post(format!("{url}/v3/lease/revoke"))
        .json(&serde_json::json!({"ID": lease}))
        .send()
        .await
        .expect("revoke");
    assert!(r.status().is_success(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cutover_watch_shows_another_operators_operation_step_by_step() {
    let m = common::or_skip!(etcd());
    let rig = Rig::start("0s").await;
    let (alice, bob) = (rig.config("alice", &m.url), rig.config("bob", &m.url));
    let mut w = rig.command(&bob, &["watch", "shop"]);
    let mut w = ChildGuard::spawn(
        "cutover watch (bob)",
        w.stdout(Stdio::piped()).stderr(Stdio::null()),
    );
    let out = w.child.stdout.take().expect("stdout");
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                return;
            }
        }
    });
    let o = rig.cli(&alice, &["swap", "shop", "--yes"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    // Whether bob's watch started before alice's swap or after it, it shows every step.
    let want = [
        ": started ",
        ": plan ok blue → green",
        ": gate ok ",
        ": apply ok ",
        ": verify ok ",
        ": ended done: `green` is live",
    ];
    let seen = tokio::task::spawn_blocking(move || {
        let end = Instant::now() + Duration::from_secs(20);
        let mut seen: Vec<String> = Vec::new();
        while !want.iter().all(|w| {
            seen.iter()
                .any(|l| l.contains("shop swap #") && l.contains(w))
        }) {
            let left = end.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("bob's watch did not show {want:?}; it printed {seen:#?}"),
            }
        }
        seen
    })
    .await
    .expect("join");
    // In order: started, then the steps, then the verdict.
    let at = |w: &str| seen.iter().position(|l| l.contains(w)).expect("seen");
    assert!(at(": started ") < at(": apply ok "), "{seen:#?}");
    assert!(at(": apply ok ") < at(": ended done"), "{seen:#?}");
    assert!(!seen.iter().any(|l| l.contains(TOKEN)), "{seen:#?}");
}

/// Which member leads, by asking each one's status.
async fn leader(members: &[Member]) -> usize {
    let c = cutover::http_client()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("client");
    for (i, m) in members.iter().enumerate() {
        let v: serde_json::Value = c
            .post(format!("{}/v3/maintenance/status", m.url))
            .json(&serde_json::json!({}))
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("json");
        if v["leader"].is_string() && v["leader"] == v["header"]["member_id"] {
            return i;
        }
    }
    panic!("no member says it leads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_during_an_operation_loses_nothing_and_records_nothing_twice() {
    let mut members = common::or_skip!(cluster(3));
    let rig = Rig::start("6s").await;
    // The leader first in the list: cutover is talking to it when it dies.
    let l = leader(&members).await;
    members.swap(0, l);
    let urls: Vec<String> = members.iter().map(|m| m.url.clone()).collect();
    let urls_text = urls.join(", ");
    let cfg_path = rig.config("alice", &urls.join("\", \""));
    let text = std::fs::read_to_string(&cfg_path).expect("config");
    let (run, shared) = swap_in_background(&text, true);
    until_watching(&shared).await;
    // kill -9 the leader in the middle of the watch.
    let mut dead = members.remove(0);
    dead.guard.child.kill().expect("kill -9 the leader");
    dead.guard.child.wait().expect("reaped");
    let (out, _) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the operation neither completed nor stopped")
        .expect("join");
    eprintln!(
        "leader killed: the operation ended {:?}: {}",
        out.verdict, out.message
    );
    // It completes (the lease was kept alive through the election), or stops cleanly saying
    // it lost the lock; either way the switch it made stands and is remembered once.
    assert!(
        out.verdict == Verdict::Done
            || (out.verdict == Verdict::Cancelled && out.message.contains("LOCK LOST")),
        "{:?}: {}",
        out.verdict,
        out.message
    );
    assert_eq!(rig.serving().await, "green");
    let survivors = rig.observer(&format!("{}\", \"{}", members[0].url, members[1].url));
    assert_eq!(survivors.env("shop").previous_live.as_deref(), Some("blue"));
    assert_eq!(survivors.journal("shop"), None, "the journal was closed");
    let s = Arc::new(survivors);
    let s2 = s.clone();
    assert!(
        until(Duration::from_secs(15), move || s2.holder("shop").is_none()).await,
        "the lock was not let go"
    );
    let records = s.shared().expect("etcd").audit_records("shop");
    let of_op: Vec<String> = records
        .iter()
        .map(|r| serde_json::from_str::<serde_json::Value>(r).expect("json"))
        .filter(|v| v["id"] == out.record.id.as_str())
        .map(|v| v["result"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(
        of_op,
        ["started".to_string(), out.record.result.clone()],
        "{records:#?}"
    );
    // All members down: refused, naming every member, and nothing changes.
    drop(members);
    let o = rig
        .cli(&cfg_path, &["rollback", "shop", "--yes", "--no-watch"])
        .await;
    let unreachable = format!("cannot take the lock: etcd at {urls_text} unreachable: ");
    common::assert_exit(&o, 1, "rollback", &[&unreachable, "; nothing was changed"]);
    assert_eq!(rig.serving().await, "green");
}

#[test]
fn with_etcd_auth_the_documented_role_is_enough_and_no_credentials_are_refused() {
    let m = common::or_skip!(etcd());
    let etcdctl = common::or_skip!(common::require_binary("etcdctl"));
    let ctl = |args: &[&str]| {
        let o = Command::new(&etcdctl)
            .args(["--endpoints", &m.url])
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl");
        assert!(o.status.success(), "etcdctl {args:?}: {}", printed(&o));
    };
    // The permissions README lists, for the prefix /team/.
    ctl(&["user", "add", "root", "--new-user-password=Zq7-root-pw"]);
    ctl(&["user", "grant-role", "root", "root"]);
    ctl(&["auth", "enable"]);
    let root = ["--user", "root:Zq7-root-pw"];
    ctl(&[&root[..], &["role", "add", "cutover"]].concat());
    ctl(&[
        &root[..],
        &[
            "role",
            "grant-permission",
            "cutover",
            "--prefix=true",
            "readwrite",
            "/team/",
        ],
    ]
    .concat());
    ctl(&[
        &root[..],
        &[
            "user",
            "add",
            "cutover",
            "--new-user-password=Zq7-cutover-etcd-pw",
        ],
    ]
    .concat());
    ctl(&[&root[..], &["user", "grant-role", "cutover", "cutover"]].concat());

    let d = tempfile::tempdir().expect("tempdir");
    // Without credentials: refused, and said so.
    let anonymous = store_of(&settings(&m.url, "/team/", 10, d.path()));
    let e = anonymous
        .lock("shop", &LockInfo::me("swap", "anon"))
        .expect_err("no credentials, no lock");
    assert!(
        e.to_string().contains("cannot take the lock: etcd refused")
            && e.to_string().contains("user name"),
        "{e}"
    );
    // With them (read from the environment): the whole contract works.
    unsafe {
        std::env::set_var("CUTOVER_TEST_ETCD_USER", "cutover");
        std::env::set_var("CUTOVER_TEST_ETCD_PASSWORD", "Zq7-cutover-etcd-pw");
    }
    let text = format!(
        "[settings]\nstate_dir = \"{}\"\n{}user_env = \"CUTOVER_TEST_ETCD_USER\"\n\
         password_env = \"CUTOVER_TEST_ETCD_PASSWORD\"\n\n[[environment]]\nname = \"shop\"\n\
         [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:1\"\n",
        d.path().display(),
        store_toml(&m.url, "/team/", 10)
    );
    let s = cutover::config::parse(&text, Path::new("t.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"))
        .settings;
    let store = store_of(&s);
    assert!(!format!("{store:?}").contains("Zq7-cutover-etcd-pw"));
    let g = store
        .lock("shop", &LockInfo::me("swap", "auth1"))
        .expect("lock with credentials");
    store
        .update(&g, |m| m.previous_live = Some("blue".into()))
        .expect("fenced write");
    assert_eq!(store.holder("shop").map(|h| h.op_id), Some("auth1".into()));
    drop(g); // revoking the lease deletes the lock key: the role covers it
    assert_eq!(store.holder("shop"), None);
    assert_eq!(store.env("shop").previous_live.as_deref(), Some("blue"));
    let _again = store
        .lock("shop", &LockInfo::me("swap", "auth2"))
        .expect("free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_operator_takes_the_lock_over_through_the_store() {
    let m = common::or_skip!(etcd());
    let rig = Rig::start("60s").await;
    let (alice, bob) = (rig.config("alice", &m.url), rig.config("bob", &m.url));
    let a = rig.alice_swaps(&alice, Stdio::piped(), Stdio::piped());
    let shared = Arc::new(rig.observer(&m.url));
    let (s, pid) = (shared.clone(), a.pid());
    assert!(
        until(Duration::from_secs(30), move || s
            .env("shop")
            .previous_live
            .is_some()
            && s.holder("shop").is_some_and(|h| h.pid == pid))
        .await,
        "alice's swap never got to its watch"
    );
    // Bob asks for the lock: alice's watch ends, she records who took over, bob rolls back.
    let o = rig
        .cli(
            &bob,
            &["rollback", "shop", "--yes", "--no-watch", "--take-over"],
        )
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    assert!(
        printed(&o).contains("took the lock over from"),
        "{}",
        printed(&o)
    );
    assert_eq!(rig.serving().await, "blue");
    // Alice's cutover ends by itself; what it printed says who took over.
    let alice_out = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut a = a;
        let mut text = String::new();
        for pipe in [
            a.child.stderr.take().map(|p| Box::new(p) as Box<dyn Read>),
            a.child.stdout.take().map(|p| Box::new(p) as Box<dyn Read>),
        ]
        .into_iter()
        .flatten()
        {
            let mut pipe = pipe;
            pipe.read_to_string(&mut text).expect("read");
        }
        a.child.wait().expect("alice ends");
        text
    })
    .await
    .expect("join");
    common::assert_contains(&alice_out, "took the lock over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tui_following_the_store_gets_another_operators_steps_and_new_memory() {
    let m = common::or_skip!(etcd());
    let rig = Rig::start("0s").await;
    let (alice, bob) = (rig.config("alice", &m.url), rig.config("bob", &m.url));
    // Bob's TUI, without a terminal: its background tasks and the events they send.
    let cfg = cutover::config::load(&bob).expect("bob's config");
    let world = cutover::world::World::build(cfg, None).expect("world");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (_stop, stop) = tokio::sync::watch::channel(false);
    world.spawn_watchers(tx, stop);
    let o = rig.cli(&alice, &["swap", "shop", "--yes"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let mut lines = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(ev) = rx.recv().await {
            match ev {
                cutover::envview::Seen::Shared { text, .. } => lines.push(text),
                cutover::envview::Seen::Memory { memory, .. }
                    if memory.previous_live.as_deref() == Some("blue") =>
                {
                    return memory;
                }
                _ => {}
            }
        }
        panic!("the events ended");
    })
    .await
    .unwrap_or_else(|_| panic!("no new memory after alice's swap; lines: {lines:#?}"));
    assert_eq!(got.last_set_live.as_deref(), Some("green"));
    assert!(lines.iter().any(|l| l.contains("ended done")), "{lines:#?}");
}

/// The shared store's state is what the header shows: it answers (quietly: no line for the
/// first answer), then it is gone (a line, and the indicator turns), then back (a line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tui_knows_whether_the_shared_store_answers() {
    let mut m = common::or_skip!(etcd());
    let rig = Rig::start("0s").await;
    let cfg = cutover::config::load(&rig.config("bob", &m.url)).expect("bob's config");
    let world = cutover::world::World::build(cfg, None).expect("world");
    let mut view = cutover::envview::EnvView::new(&world.engines[0].env, Default::default());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (_stop, stop) = tokio::sync::watch::channel(false);
    world.spawn_watchers(tx, stop);
    let mut next_store = async |view: &mut cutover::envview::EnvView| {
        let within = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(ev) = rx.recv().await {
                if let cutover::envview::Seen::Store { .. } = ev {
                    let said = view.apply(ev, std::time::SystemTime::now(), 10);
                    return said.lines.into_iter().map(|(_, t)| t).collect::<Vec<_>>();
                }
            }
            panic!("the events ended");
        })
        .await;
        within.expect("a store event within 30 s")
    };
    assert_eq!(next_store(&mut view).await, Vec::<String>::new());
    assert_eq!(view.store_up, Some(true));
    m.guard.child.kill().expect("kill etcd");
    let lines = next_store(&mut view).await;
    assert_eq!(view.store_up, Some(false));
    assert!(
        lines.len() == 1 && lines[0].contains("operations are refused until it answers"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_lost_before_the_switch_stops_the_operation_with_nothing_changed() {
    let m = common::or_skip!(etcd());
    let rig = Rig::start("0s").await;
    // A long gate (20 fresh probes, 300 ms apart) and a short lease: the lease is lost while
    // the gate runs, before any router command.
    let text = rig
        .short_lease_config(&m.url)
        .replace("gate_checks = 2", "gate_checks = 20");
    let (run, shared) = swap_in_background(&text, false);
    let s = shared.clone();
    assert!(
        until(Duration::from_secs(10), move || s.holder("shop").is_some()).await,
        "the swap never took the lock"
    );
    let out = stopped_by_losing_the_lock(&m.url, run).await;
    assert!(
        out.message.contains("nothing changed") && out.message.contains("LOCK LOST"),
        "{}",
        out.message
    );
    assert_eq!(rig.serving().await, "blue");
    assert_eq!(shared.env("shop").previous_live, None);
    assert_eq!(
        shared.journal("shop"),
        None,
        "no journal: nothing was begun"
    );
}

/// A cluster on TLS with a private CA and client certificates (etcd's `--client-cert-auth`):
/// with `ca_file`, `cert_file` and `key_file` the store works (the lock is taken and seen);
/// without the client certificate, or without the CA, it is refused with the reason.
#[test]
fn a_store_over_tls_with_a_private_ca_and_a_client_certificate() {
    let test = "a_store_over_tls_with_a_private_ca_and_a_client_certificate";
    let Some(bin) = common::require_binary(test, "etcd") else {
        return;
    };
    let Some(openssl) = common::require_binary(test, "openssl") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let ssl = |args: &[&str]| {
        let o = Command::new(&openssl)
            .args(args)
            .current_dir(d)
            .output()
            .expect("openssl");
        assert!(o.status.success(), "openssl {args:?}: {}", printed(&o));
    };
    ssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=cutover test CA",
    ]);
    // The server's certificate is a client's too: etcd's JSON gateway dials etcd's own gRPC
    // with it when client certificates are required.
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
        ),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ] {
        std::fs::write(d.join(format!("{name}.ext")), ext).expect("ext");
        ssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        ssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
    let (client, peer) = (common::free_port(), common::free_port());
    let url = format!("https://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(d.join("etcd.log")).expect("log");
    let _etcd = ChildGuard::spawn(
        "etcd",
        Command::new(&bin)
            .args(["--name", "tls", "--data-dir"])
            .arg(d.join("data"))
            .args(["--listen-client-urls", &url])
            .args(["--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("tls={peer_url}")])
            .arg("--cert-file")
            .arg(d.join("server.pem"))
            .arg("--key-file")
            .arg(d.join("server.key"))
            .arg("--trusted-ca-file")
            .arg(d.join("ca.pem"))
            .arg("--client-cert-auth")
            .stdout(Stdio::null())
            .stderr(log),
    );
    let store_with = |extra: &str| {
        let text = format!(
            "[settings]\nstate_dir = \"{}\"\n{}{extra}\n[[environment]]\nname = \"shop\"\n\
             [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:1\"\n",
            d.join("state").display(),
            store_toml(&url, "/tls/", 10),
        );
        cutover::config::parse(&text, Path::new("t.toml"))
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .settings
            .open_store()
            .expect("open the store")
    };
    let files = |names: &[(&str, &str)]| -> String {
        names
            .iter()
            .map(|(k, f)| format!("{k} = \"{}\"\n", d.join(f).display()))
            .collect()
    };
    let good = store_with(&files(&[
        ("ca_file", "ca.pem"),
        ("cert_file", "client.pem"),
        ("key_file", "client.key"),
    ]));
    let ready = common::wait_until(Duration::from_secs(30), || {
        good.shared().expect("etcd store").ready()
    });
    assert!(
        ready,
        "etcd over TLS not ready in 30 s: {:?}\n{}",
        good.lock("shop", &LockInfo::me("swap", "probe")).err(),
        std::fs::read_to_string(d.join("etcd.log")).unwrap_or_default()
    );
    let me = LockInfo::me("swap", "tls00001");
    let guard = good.lock("shop", &me).expect("the lock over TLS");
    assert_eq!(
        good.holder("shop").map(|h| h.op_id),
        Some("tls00001".into())
    );
    drop(guard);

    // No client certificate: etcd refuses the connection; the lock says why.
    let no_cert = store_with(&files(&[("ca_file", "ca.pem")]));
    let e = no_cert
        .lock("shop", &me)
        .expect_err("refused without a client certificate");
    assert!(e.to_string().contains("127.0.0.1"), "{e}");
    // No CA: cutover does not trust the members' certificate.
    let no_ca = store_with(&files(&[
        ("cert_file", "client.pem"),
        ("key_file", "client.key"),
    ]));
    let e = no_ca.lock("shop", &me).expect_err("refused without the CA");
    eprintln!("without the CA: {e}");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
}

/// While an operation waits on a silent store (the etcd member stopped with SIGSTOP, its
/// requests unanswered for as long as the store's `timeout`), the runtime's other tasks go
/// on: on a runtime with one worker, a task still answers every message sent to it. (With the
/// store call blocking the worker, as before `ops::off_worker`, that worker and the runtime's
/// timers stall with it: the round fails once the two minutes are out.)
#[test]
fn a_silent_store_does_not_stall_the_runtimes_other_tasks() {
    let m = common::or_skip!(etcd());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let rig = Rig::start("0s").await;
        let text = std::fs::read_to_string(rig.config("alice", &m.url)).expect("config");
        // A store request now waits two minutes for the stopped member, and the gate takes
        // 20 fresh probes (300 ms apart): the member is stopped while the lock is held, before
        // the journal is written.
        let text = text
            .replacen("timeout = \"1s\"\n", "timeout = \"120s\"\n", 1)
            .replace("gate_checks = 2", "gate_checks = 20");
        common::assert_contains(&text, "timeout = \"120s\"");
        let cfg = cutover::config::parse(&text, Path::new("t.toml")).expect("config");
        let world = cutover::world::World::build(cfg, None).expect("world");
        let (engine, store) = (world.engines[0].clone(), world.store.clone());
        let (tx, mut progress) = tokio::sync::mpsc::unbounded_channel();
        let (_cancel, cancelled) = tokio::sync::watch::channel(cutover::ops::Interrupt::None);
        let req = cutover::ops::OpRequest::new(OpKind::Swap { to: None });
        let run = tokio::spawn(async move {
            engine
                .run(req, cutover::ops::GateSource::ProbeNow, tx, cancelled)
                .await
        });
        let s = store.clone();
        assert!(
            until(Duration::from_secs(30), move || s.holder("shop").is_some()).await,
            "the swap never took the lock"
        );
        // Something else on the runtime: it answers what it is sent.
        let (ask, mut asked) =
            tokio::sync::mpsc::unbounded_channel::<tokio::sync::oneshot::Sender<()>>();
        tokio::spawn(async move {
            while let Some(reply) = asked.recv().await {
                let _ = reply.send(());
            }
        });
        let pid = m.guard.pid() as i32;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        // The gate passed and the apply step began: the operation reads the routers once,
        // then writes the journal to the stopped member, which will not answer for two
        // minutes.
        let applying = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(p) = progress.recv().await {
                if let cutover::ops::Progress::Step {
                    step: cutover::ops::Step::Apply,
                    ok: None,
                    ..
                } = p
                {
                    return true;
                }
            }
            false
        })
        .await;
        if !matches!(applying, Ok(true)) {
            unsafe { libc::kill(pid, libc::SIGCONT) };
            panic!("the swap never began its apply step: {applying:?}");
        }
        // Rounds paced by requests through the proxy (real I/O, like the operation's own
        // router read), not by sleeps.
        let public = format!("http://127.0.0.1:{}/", rig.live);
        let client = cutover::http_client().build().expect("client");
        for round in 0..20 {
            let (reply, answered) = tokio::sync::oneshot::channel();
            ask.send(reply).expect("the other task is there");
            let got = tokio::time::timeout(Duration::from_secs(30), answered).await;
            if got.is_err() {
                unsafe { libc::kill(pid, libc::SIGCONT) };
                panic!("round {round}: the other task did not answer within 30 s");
            }
            let _ = client.get(&public).send().await;
        }
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
        run.abort();
    });
    rt.shutdown_timeout(Duration::from_secs(5));
}

/// Every value under `prefix` in etcd at `url`, decoded and joined by newlines.
async fn stored_under(url: &str, prefix: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let c = cutover::http_client().build().expect("client");
    let Ok(r) = c
        .post(format!("{url}/v3/kv/range"))
        .json(&serde_json::json!({"key": b64.encode(prefix), "range_end": b64.encode(&end)}))
        .send()
        .await
    else {
        return String::new();
    };
    let v: serde_json::Value = r.json().await.unwrap_or_default();
    v["kvs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|kv| b64.decode(kv["value"].as_str()?).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// What an operation shares through the store (its steps and its verdict, which another
/// operator's screen shows) is redacted: a check's error that carries a URL's password or a
/// registered secret is stored masked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_operation_shares_through_the_store_is_redacted() {
    let m = common::or_skip!(etcd());
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_of(&settings(&m.url, "/redact/", 10, dir.path()));
    cutover::redact::register_secret("tok-3f9a1c7e55");
    let g = store
        .lock("shop", &LockInfo::me("canary", "op-redact"))
        .expect("lock");
    g.share_step(
        "watch",
        None,
        "check failed: http://ops:pa55w0rd-x@prom:9090 answered 401 to tok-3f9a1c7e55",
    );
    g.share_result(
        "failed",
        "aborted: http://ops:pa55w0rd-x@prom:9090 unreachable",
    );
    let shared = |s: &str| s.contains("check failed") && s.contains("aborted");
    let written = common::eventually(Duration::from_secs(30), || async {
        shared(&stored_under(&m.url, "/redact/").await)
    })
    .await;
    let stored = stored_under(&m.url, "/redact/").await;
    assert!(
        written && shared(&stored),
        "the step and the verdict were never stored: {stored}"
    );
    assert!(
        !stored.contains("pa55w0rd-x") && !stored.contains("tok-3f9a1c7e55"),
        "a credential reached the store: {stored}"
    );
    assert!(stored.contains("***"), "{stored}");
    drop(g);
}
