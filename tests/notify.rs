//! `[[notify]]` webhooks, against local receivers (a tiny hyper server in the test): one
//! message per operation event with the documented fields, the chat format and the severity
//! filter, the bearer token, and that a receiver that hangs or answers 500 neither slows an
//! operation nor goes unrecorded (the audit log says so, without secrets).
//!
//! Operations run through the same engine the TUI and CLI use, against the embedded proxy and
//! slot servers on 127.0.0.1.

#![allow(clippy::expect_used)]

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, free_port};
use cutover::config::{self, Config};
use cutover::ops::{Engine, OpKind, Outcome, Verdict};
use cutover::proxy::ProxyHandle;
use cutover::router::RouterConfig;
use cutover::slotserver::SlotServer;
use cutover::world::World;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;

const ADMIN_TOKEN: &str = "notify-test-admin-token";
const HOOK_TOKEN: &str = "notify-test-webhook-token";

/// How a receiver answers.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ok,
    Fail500,
    /// Reads the request, never answers.
    Hang,
}

/// One request a receiver got: its Authorization header and JSON body.
#[derive(Debug, Clone)]
struct Got {
    auth: Option<String>,
    body: serde_json::Value,
}

struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

/// Two receivers (`Mode`, and the other keys of its `[[notify]]` table) and the rig that
/// notifies them.
async fn rig_with_two_hooks(
    (mode_a, keys_a): (Mode, &str),
    (mode_b, keys_b): (Mode, &str),
) -> (Receiver, Receiver, Rig) {
    let (a, b) = (Receiver::start(mode_a).await, Receiver::start(mode_b).await);
    let rig = Rig::start(&hooks(&[(&a, keys_a), (&b, keys_b)])).await;
    (a, b, rig)
}

/// A `[[notify]]` table for each receiver, with its other keys (lines).
fn hooks(tables: &[(&Receiver, &str)]) -> String {
    tables
        .iter()
        .map(|(r, keys)| format!("[[notify]]\nurl = \"{}\"\n{keys}\n\n", r.url()))
        .collect()
}

impl Receiver {
    async fn start(mode: Mode) -> Receiver {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let g = g.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let g = g.clone();
                            async move {
                                let auth = req
                                    .headers()
                                    .get("authorization")
                                    .and_then(|v| v.to_str().ok())
                                    .map(str::to_string);
                                let bytes = req
                                    .into_body()
                                    .collect()
                                    .await
                                    .map(|b| b.to_bytes())
                                    .unwrap_or_default();
                                let body = serde_json::from_slice(&bytes)
                                    .unwrap_or(serde_json::Value::Null);
                                g.lock().expect("lock").push(Got { auth, body });
                                let status = match mode {
                                    Mode::Ok => 200,
                                    Mode::Fail500 => 500,
                                    Mode::Hang => std::future::pending().await,
                                };
                                let mut r = hyper::Response::new(Full::new(Bytes::new()));
                                *r.status_mut() =
                                    hyper::StatusCode::from_u16(status).expect("status");
                                Ok::<_, Infallible>(r)
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        Receiver { addr, got }
    }

    /// The URL with a secret-looking path, as a chat webhook's is.
    fn url(&self) -> String {
        format!(
            "http://{}/hooks/T0SECRETPATH{}",
            self.addr,
            self.addr.port()
        )
    }

    fn got(&self) -> Vec<Got> {
        self.got.lock().expect("lock").clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Got> {
        let ok = eventually(within, || async { self.got().len() >= n }).await;
        assert!(ok, "the receiver got {:?}, waited for {n}", self.got());
        self.got()
    }
}

struct Rig {
    dir: tempfile::TempDir,
    config: Config,
    _slots: Vec<SlotServer>,
    _proxy: ProxyHandle,
}

impl Rig {
    /// blue (live) and green behind the embedded proxy, gate_checks = 2, no watch; `notify` is
    /// appended to the config.
    async fn start(notify: &str) -> Rig {
        // SAFETY: names only this file uses, always set to the same values.
        unsafe {
            std::env::set_var("CUTOVER_NOTIFY_TEST_ADMIN", ADMIN_TOKEN);
            std::env::set_var("CUTOVER_NOTIFY_TEST_HOOK", HOOK_TOKEN);
        }
        let slots = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let (live, admin) = (free_port(), free_port());
        let text = common::embedded_shop_config(
            dir.path(),
            &slots,
            "200ms",
            (live, admin),
            "verify_timeout = \"3s\"\n",
            &format!("token_env = \"CUTOVER_NOTIFY_TEST_ADMIN\"\n\n{notify}"),
        );
        let (config, proxy) = common::start_embedded(dir.path(), &text).await;
        Rig {
            dir,
            config,
            _slots: slots,
            _proxy: proxy,
        }
    }

    fn engine(&self, with_notify: bool) -> Arc<Engine> {
        let mut c = self.config.clone();
        if !with_notify {
            c.notify.clear();
        }
        World::build(c, None).expect("world").engines[0].clone()
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        audit_in(&self.dir.path().join("state"))
    }
}

fn audit_in(dir: &Path) -> Vec<serde_json::Value> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).expect("state dir").flatten() {
        if e.file_name().to_string_lossy().starts_with("audit") {
            let text = std::fs::read_to_string(e.path()).expect("audit");
            v.extend(
                text.lines()
                    .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line")),
            );
        }
    }
    v
}

async fn swap(engine: &Engine, to: &str) -> (Outcome, Duration) {
    let t = Instant::now();
    let out = common::run_op(
        engine,
        OpKind::Swap {
            to: Some(to.into()),
        },
        false,
        false,
    )
    .await
    .0;
    (out, t.elapsed())
}

/// Every queued notification has been delivered or given up on.
async fn flushed(engine: &Engine) {
    let n = engine.notifier.as_ref().expect("a notifier");
    assert!(
        n.flush(Duration::from_secs(30)).await,
        "notifications still pending after 30 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_operation_event_reaches_its_webhooks_once_with_the_documented_fields() {
    let (json, chat, rig) = rig_with_two_hooks(
        (
            Mode::Ok,
            "format = \"json\"\ntoken_env = \"CUTOVER_NOTIFY_TEST_HOOK\"",
        ),
        (Mode::Ok, "format = \"chat\"\nmin_severity = \"warning\""),
    )
    .await;
    let engine = rig.engine(true);

    // A swap that works: start, then done. The chat entry (warning and up) gets neither.
    let (out, _) = swap(&engine, "green").await;
    common::assert_verdict(&out, Verdict::Done);
    let got = json.wait_for(2, Duration::from_secs(20)).await;
    flushed(&engine).await;
    let got_after = json.got();
    assert_eq!(
        got_after.len(),
        2,
        "exactly one message per event: {got_after:?}"
    );
    let (start, done) = (&got[0].body, &got[1].body);
    println!("start: {start}\ndone: {done}");
    for (b, event, severity) in [(start, "start", "info"), (done, "done", "info")] {
        assert_eq!(b["event"], event, "{b}");
        assert_eq!(b["severity"], severity, "{b}");
        assert_eq!(b["operation_id"], out.record.id.as_str(), "{b}");
        assert_eq!(b["operation"], "swap", "{b}");
        assert_eq!(b["environment"], "shop", "{b}");
        assert_eq!(b["from"], "blue", "{b}");
        assert_eq!(b["to"], "green", "{b}");
        assert_eq!(b["forced"], false, "{b}");
        assert_eq!(b["step"], serde_json::Value::Null, "{b}");
        assert!(b["user"].as_str().is_some_and(|u| !u.is_empty()), "{b}");
        assert!(b["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{b}");
        assert!(b["message"].is_string(), "{b}");
        let keys: Vec<&String> = b.as_object().expect("object").keys().collect();
        assert_eq!(
            keys.len(),
            12,
            "the documented fields and no others: {keys:?}"
        );
    }
    assert_eq!(done["message"], "`green` is live");
    for g in &got {
        assert_eq!(
            g.auth.as_deref(),
            Some(format!("Bearer {HOOK_TOKEN}").as_str())
        );
    }
    assert!(chat.got().is_empty(), "{:?}", chat.got());

    // A swap the plan refuses: its failed step, then the verdict; both are warnings, so the
    // chat entry gets them too, as {"text": ...}.
    let (out, _) = swap(&engine, "purple").await;
    common::assert_verdict(&out, Verdict::Refused);
    let got = json.wait_for(4, Duration::from_secs(20)).await;
    let texts = chat.wait_for(2, Duration::from_secs(20)).await;
    flushed(&engine).await;
    assert_eq!(json.got().len(), 4, "{:?}", json.got());
    assert_eq!(chat.got().len(), 2, "{:?}", chat.got());
    assert_eq!(got[2].body["event"], "step-failed");
    assert_eq!(got[2].body["step"], "plan");
    assert_eq!(got[2].body["severity"], "warning");
    assert_eq!(got[3].body["event"], "refused");
    assert_eq!(got[3].body["operation_id"], out.record.id.as_str());
    let t0 = texts[0].body["text"].as_str().expect("text");
    let t1 = texts[1].body["text"].as_str().expect("text");
    println!("chat: {t0}\nchat: {t1}");
    assert_eq!(texts[0].body.as_object().map(|o| o.len()), Some(1));
    assert!(
        t0.starts_with(
            "[warning] cutover swap of shop: step plan failed — there is no slot `purple`"
        ),
        "{t0}"
    );
    assert!(
        t1.starts_with("[warning] cutover swap of shop: refused — "),
        "{t1}"
    );
    assert!(
        texts.iter().all(|g| g.auth.is_none()),
        "no token configured"
    );
    // Nothing failed, so the audit log has no notify-failed record.
    assert!(!rig.audit().iter().any(|r| r["result"] == "notify-failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_hangs_or_answers_500_does_not_slow_an_operation_and_is_audited() {
    let (hang, fail, rig) = rig_with_two_hooks(
        (Mode::Hang, "timeout = \"2s\"\nretries = 0"),
        (
            Mode::Fail500,
            "events = [\"start\", \"done\"]\nretries = 2\ntoken_env = \"CUTOVER_NOTIFY_TEST_HOOK\"",
        ),
    )
    .await;

    // The same swap there and back, without notifications and with them.
    let (out, plain) = swap(&rig.engine(false), "green").await;
    common::assert_verdict(&out, Verdict::Done);
    let engine = rig.engine(true);
    let (out, notified) = swap(&engine, "blue").await;
    common::assert_verdict(&out, Verdict::Done);
    println!("swap without notify: {plain:?}; with a hanging and a failing webhook: {notified:?}");
    // Each of the 2 events holds the hanging webhook for 2 s and the failing one for 1.5 s of
    // backoff: waiting for any of them would add seconds.
    assert!(
        notified < plain + Duration::from_millis(1500),
        "the operation took {notified:?} with notifications, {plain:?} without"
    );

    // Both webhooks got the events; the failing one 3 times each (1 + 2 retries).
    let failed = eventually(Duration::from_secs(30), || async {
        rig.audit()
            .iter()
            .filter(|r| r["result"] == "notify-failed")
            .count()
            >= 4
    })
    .await;
    let audit = rig.audit();
    assert!(failed, "{audit:#?}");
    flushed(&engine).await;
    assert_eq!(hang.got().len(), 2, "{:?}", hang.got());
    assert_eq!(fail.got().len(), 6, "{:?}", fail.got());
    let records: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|r| r["result"] == "notify-failed")
        .collect();
    assert_eq!(records.len(), 4, "{records:#?}");
    for r in &records {
        assert_eq!(r["id"], out.record.id.as_str(), "{r}");
        assert_eq!(r["environment"], "shop");
        assert_eq!(r["operation"], "swap");
    }
    let messages: Vec<&str> = records
        .iter()
        .filter_map(|r| r["message"].as_str())
        .collect();
    println!("{messages:#?}");
    let hang_host = format!("127.0.0.1:{}", hang.addr.port());
    let fail_host = format!("127.0.0.1:{}", fail.addr.port());
    assert!(messages.iter().any(|m| m.contains(&format!(
        "notification `start` to [[notify]] #1 ({hang_host}) failed: no answer within 2s (after 1 attempt)"
    ))));
    assert!(messages.iter().any(|m| m.contains(&format!(
        "notification `done` to [[notify]] #2 ({fail_host}) failed: HTTP 500 (after 3 attempts)"
    ))));
    let all = serde_json::to_string(&audit).expect("json");
    assert!(
        !all.contains("T0SECRETPATH"),
        "the webhook URL leaked: {all}"
    );
    assert!(!all.contains(HOOK_TOKEN), "the webhook token leaked");
    assert!(!all.contains(ADMIN_TOKEN), "the admin token leaked");
}

#[test]
fn notify_config_errors_name_file_line_column_and_field() {
    let base = "[[environment]]\nname = \"shop\"\n[[environment.slot]]\nname = \"blue\"\n\
                address = \"http://127.0.0.1:9001\"\n\n";
    let err = |notify: &str| {
        config::parse(&format!("{base}{notify}"), Path::new("c.toml"))
            .expect_err("refused")
            .to_string()
    };
    let e =
        err("[[notify]]\nurl = \"http://127.0.0.1:9/x\"\nevents = [\"start\", \"rolledback\"]\n");
    assert_eq!(
        e,
        "c.toml:9:20: field `events`: unknown event `rolledback`; did you mean `rolled-back`? \
         the events are: start, step-failed, done, refused, failed, rolled-back, alarm, cancelled, \
         drift, routers-disagree"
    );
    let e = err("[[notify]]\nurl = \"ftp://x\"\n");
    assert_eq!(
        e,
        "c.toml:8:7: field `url`: `ftp://x` is not an http:// or https:// URL"
    );
    let e = err(
        "[[notify]]\nurl = \"http://127.0.0.1:9/\"\nevents = [\"done\"]\nmin_severity = \"info\"\n",
    );
    assert!(
        e.starts_with("c.toml:10:16: field `min_severity`: give `events` or `min_severity`"),
        "{e}"
    );
    let e = err("[[notify]]\nurl = \"http://127.0.0.1:9/\"\nformat = \"slack\"\n");
    assert!(e.starts_with("c.toml:9:10: "), "{e}");
    assert!(e.contains("json") && e.contains("chat"), "{e}");
    let e = err("[[notify]]\nurl = \"http://127.0.0.1:9/\"\nretries = 50\n");
    assert!(
        e.starts_with("c.toml:9:11: field `retries`: must be at most 10"),
        "{e}"
    );
    let e = err("[[notify]]\nurl = \"http://127.0.0.1:9/\"\ntimout = \"1s\"\n");
    common::assert_contains(&e, "did you mean `timeout`?");
    let ok = config::parse(
        &format!(
            "{base}[[notify]]\nurl = \"https://hooks.example.com/x\"\nformat = \"chat\"\n\
             min_severity = \"critical\"\ntimeout = \"3s\"\n"
        ),
        Path::new("c.toml"),
    )
    .expect("parses");
    let n = &ok.notify[0];
    assert_eq!(n.retries, 3);
    assert_eq!(n.timeout, Duration::from_secs(3));
    assert!(n.wants(cutover::notify::EventKind::Ended(
        cutover::ops::Verdict::Alarm
    )));
    assert!(!n.wants(cutover::notify::EventKind::Ended(
        cutover::ops::Verdict::RolledBack
    )));
}

#[test]
fn the_readme_notify_example_parses() {
    let readme = include_str!("../README.md");
    let (_, block) = common::fenced_blocks(readme)
        .into_iter()
        .find(|(l, b)| l == "toml" && b.contains("[[notify]]"))
        .expect("a [[notify]] example in the README");
    let text = format!(
        "[[environment]]\nname = \"shop\"\n[[environment.slot]]\nname = \"blue\"\n\
         address = \"http://127.0.0.1:9001\"\n\n{block}"
    );
    let c = config::parse(&text, Path::new("README.md")).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.notify.len() >= 2, "{:?}", c.notify);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_delivers_its_notifications_before_it_exits() {
    let hook = Receiver::start(Mode::Ok).await;
    let rig = Rig::start(&hooks(&[(&hook, "format = \"chat\"\nevents = [\"done\"]")])).await;
    let path = rig.dir.path().join("cutover.toml");
    let xdg = rig.dir.path().join("xdg");
    let out = tokio::task::spawn_blocking(move || {
        let config = path.display().to_string();
        let swap = ["swap", "shop", "--to", "green", "--yes", "--no-watch"];
        let args = [&["--config", config.as_str()][..], &swap].concat();
        let env = [("CUTOVER_NOTIFY_TEST_ADMIN", Some(ADMIN_TOKEN))];
        common::cutover_with_env(&xdg, &args, &env)
    })
    .await
    .expect("join");
    assert!(out.status.success(), "{}", common::printed(&out));
    // No waiting: the command has exited, so the message must already be here.
    let got = hook.got();
    assert_eq!(got.len(), 1, "{got:?}");
    let text = got[0].body["text"].as_str().expect("text");
    assert!(
        text.starts_with("[info] cutover swap of shop blue → green: done — `green` is live"),
        "{text}"
    );
}

/// `cutover watch` (a separate process) tells the channels when drift begins — the router's
/// live slot changed by hand, not by cutover — once, as a `drift` warning; a channel that
/// fails says so on watch's own output (the event lines). A swap by another cutover process
/// is not drift: what it set is read back from the state files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_notifies_drift_once_and_prints_failed_deliveries() {
    let (ok, _failing, rig) = rig_with_two_hooks(
        (Mode::Ok, "events = [\"drift\", \"routers-disagree\"]"),
        (Mode::Fail500, "events = [\"drift\"]\nretries = 0"),
    )
    .await;
    let path = rig.dir.path().join("cutover.toml");
    let xdg = rig.dir.path().join("xdg");
    let cli = |args: &'static [&'static str]| {
        let (path, xdg) = (path.clone(), xdg.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_cutover"))
                .arg("--config")
                .arg(&path)
                .args(args)
                .env("CUTOVER_NOTIFY_TEST_ADMIN", ADMIN_TOKEN)
                .env("XDG_STATE_HOME", &xdg)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("run cutover")
        })
    };
    // cutover sets green live: that is what it last set.
    let o = cli(&["swap", "shop", "--to", "green", "--yes", "--no-watch"])
        .await
        .expect("join");
    assert!(o.status.success(), "{}", common::printed(&o));

    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let mut watch = std::process::Command::new(env!("CARGO_BIN_EXE_cutover"));
    watch
        .arg("--config")
        .arg(&path)
        .args(["watch", "shop"])
        .env("CUTOVER_NOTIFY_TEST_ADMIN", ADMIN_TOKEN)
        .env("XDG_STATE_HOME", &xdg)
        .stdout(std::process::Stdio::piped());
    let mut watch = common::ChildGuard::spawn("cutover watch", &mut watch);
    let out = watch.child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut seen = Vec::new();
    let mut wait_line = async |what: &str| {
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(l) = lines.recv().await {
                seen.push(l.clone());
                if l.contains(what) {
                    return true;
                }
            }
            false
        })
        .await;
        assert!(
            matches!(found, Ok(true)),
            "no line with {what:?} from cutover watch:\n{}",
            seen.join("\n")
        );
    };
    // watch has read the routers: green is live, as cutover set it.
    wait_line("`green` is live").await;

    // Another cutover process swaps back to blue: not drift.
    let o = cli(&["swap", "shop", "--to", "blue", "--yes", "--no-watch"])
        .await
        .expect("join");
    assert!(o.status.success(), "{}", common::printed(&o));
    wait_line("blue role PREVIEW → LIVE").await;

    // By hand, on the proxy's admin API: green live behind cutover's back.
    let admin = match &rig.config.environments[0].routers[0] {
        RouterConfig::Embedded(c) => c.admin.clone(),
        _ => panic!("embedded"),
    };
    let r = cutover::http_client()
        .build()
        .expect("client")
        .post(format!("http://{admin}/live"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"slot": "green"}))
        .send()
        .await
        .expect("admin answers");
    assert!(r.status().is_success(), "{}", r.status());

    let got = ok.wait_for(1, Duration::from_secs(30)).await;
    assert_eq!(got[0].body["event"], "drift", "{got:?}");
    assert_eq!(got[0].body["severity"], "warning");
    assert_eq!(got[0].body["environment"], "shop");
    let message = got[0].body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("`green`") && message.contains("cutover last set `blue`"),
        "{message}"
    );
    // The failing channel's delivery is on watch's output.
    wait_line("notification `drift` to [[notify]] #2").await;
    // Once: the drift goes on, and is not told again.
    let more = eventually(Duration::from_secs(3), || async { ok.got().len() > 1 }).await;
    assert!(!more, "told more than once: {:?}", ok.got());
    drop(watch);
}
