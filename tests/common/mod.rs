//! Support shared by the integration tests: free loopback ports, slot servers, real proxies
//! started as child processes (stopped by PID), and the rule that a test needing a missing
//! proxy says so loudly, and fails when `CUTOVER_REQUIRE_PROXIES=1`.
#![allow(dead_code)]
#![allow(clippy::expect_used)] // tests fail loudly on purpose

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use cutover::slotserver::SlotServer;

/// The name of the function this stands in (a test's name, as `require_binary` prints it).
#[allow(unused_macros)]
macro_rules! test_name {
    () => {{
        fn here() {}
        let path = std::any::type_name_of_val(&here);
        path.rsplit("::")
            .find(|p| *p != "here" && !p.starts_with('{'))
            .unwrap_or(path)
    }};
}
#[allow(unused_imports)]
pub(crate) use test_name;

/// `let rig = common::or_skip!(Rig::start(Kind::Embedded).await);`: what
/// `Rig::start(test name, Kind::Embedded).await` found, or the test ends here, skipped (a
/// binary it needs is missing, which `require_binary` said loudly; with
/// `CUTOVER_REQUIRE_PROXIES=1` it failed instead). Also without `.await`:
/// `common::or_skip!(require_binary("apache2"))`.
#[allow(unused_macros)]
macro_rules! or_skip {
    ($($f:ident)::+ ($($arg:expr),* $(,)?) $(.$wait:tt)?) => {
        match $($f)::+(crate::common::test_name!(), $($arg),*) $(.$wait)? {
            Some(found) => found,
            None => return,
        }
    };
}
#[allow(unused_imports)]
pub(crate) use or_skip;

/// A port that was free a moment ago on 127.0.0.1, and that this test process has not handed
/// out before. It comes from below the kernel's ephemeral range (10000 and up, under the
/// range's start; e2e_tmux's demo slot ports take 20000 and up): a port from that range, free
/// when picked, could be given to a parallel test's outgoing connection before the proxy that
/// was to listen on it binds it ("cannot bind socket (Address already in use)", seen with
/// HAProxy). Where the ephemeral range leaves no room below it, the kernel picks as before.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let below: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let top = below.min(20_000);
    if top > 11_000 {
        let span = top - 10_000;
        let start = std::process::id() * 37 % span;
        for _ in 0..span {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let port = (10_000 + (start + n) % span) as u16;
            if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return port;
            }
        }
    }
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// `N` ports from [`free_port`].
pub fn free_ports<const N: usize>() -> [u16; N] {
    std::array::from_fn(|_| free_port())
}

/// One turn of a lock-race child inside the lock: it claims the marker `inside` (a second
/// holder at once fails the test), adds one to the count in `counter`, writes its state
/// (`write_state`), and leaves.
pub fn race_turn(inside: &Path, counter: &Path, write_state: impl FnOnce()) {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(inside)
        .expect("two holders of one lock at once");
    let c: u64 = std::fs::read_to_string(counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    std::fs::write(counter, (c + 1).to_string()).expect("counter");
    write_state();
    std::fs::remove_file(inside).expect("marker");
}

/// This test binary again, running only the ignored test `test` (a child process of a race),
/// with `env`, and `hold` set to 1 where given: piped stdin and stdout, the child's stderr on
/// the test's.
pub fn test_child(test: &str, env: &[(&str, String)], hold: Option<&str>) -> std::process::Child {
    let mut c = Command::new(std::env::current_exe().expect("test binary"));
    c.args(["--exact", test, "--ignored", "--nocapture", "-q"])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .envs(hold.map(|h| (h, "1")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    c.spawn().expect("spawn child")
}

pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Start slot servers on free loopback ports: `slots(&[("blue","1.0.0"),("green","2.0.0")])`.
pub async fn slots(specs: &[(&str, &str)]) -> Vec<SlotServer> {
    let mut v = Vec::new();
    for (name, version) in specs {
        v.push(slot_server(name, version).await);
    }
    v
}

/// One slot server named `name` serving `version`, on the slots' runtime.
pub async fn slot_server(name: &str, version: &str) -> SlotServer {
    let (name, version) = (name.to_string(), version.to_string());
    slot_runtime()
        .spawn(async move { SlotServer::start(&name, &version, loopback(0)).await })
        .await
        .expect("the slot runtime runs")
        .expect("start slot server")
}

/// Where the slot servers run: a runtime of their own (two workers), as slots are other
/// programs. On the test's runtime, a load's answers queued ahead of what the test itself
/// does (an operation's reads and commands), which no real deployment does.
fn slot_runtime() -> &'static tokio::runtime::Handle {
    static RT: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("slots")
            .enable_all()
            .build()
            .expect("a runtime for the slot servers");
        let handle = rt.handle().clone();
        std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
        handle
    })
}

/// Find a proxy binary (PATH, then /usr/sbin and /usr/bin). When it is missing: with
/// `CUTOVER_REQUIRE_PROXIES=1` the test fails; otherwise it prints a loud SKIPPED line and
/// the caller returns.
pub fn require_binary(test: &str, bin: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(bin))
        .find(|p| p.is_file());
    if found.is_none() {
        if std::env::var("CUTOVER_REQUIRE_PROXIES").as_deref() == Ok("1") {
            panic!(
                "{test}: `{bin}` is not installed and CUTOVER_REQUIRE_PROXIES=1; \
                 scripts/test installs it"
            );
        }
        eprintln!(
            "\n*** SKIPPED {test}: `{bin}` is not installed. Run scripts/test to install the \
             proxies and run every test. ***\n"
        );
    }
    found
}

/// The Apache modules the tests' servers load (Debian's apache2 package has them all).
pub const APACHE_MODULES: &[&str] = &[
    "mpm_event",
    "authz_core",
    "authz_host",
    "proxy",
    "proxy_http",
    "proxy_balancer",
    "slotmem_shm",
    "lbmethod_byrequests",
    "rewrite",
    "headers",
    "auth_basic",
    "authn_core",
    "authn_file",
    "authz_user",
];

/// The first fenced block of language `lang` after `<!-- MARKER -->` in docs/apache.md.
pub fn apache_doc_block(marker: &str, lang: &str) -> String {
    const DOC: &str = include_str!("../../docs/apache.md");
    let start = DOC
        .find(&format!("<!-- {marker} -->"))
        .unwrap_or_else(|| panic!("docs/apache.md has no <!-- {marker} -->"));
    fenced_blocks(&DOC[start..])
        .into_iter()
        .find(|(info, _)| info == lang)
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("no ```{lang} block after <!-- {marker} --> in docs/apache.md"))
}

/// Start apache2 in the foreground, in its own process group, on a config of the test's own:
/// its server root is `dir` (with `run/`, `flags/` and `htdocs/` made), it listens on
/// 127.0.0.1 at `public` and `preview`, loads APACHE_MODULES (and `BalancerPersist On` when
/// `persist`), defines `CUTOVER_FLAGS` (dir/flags), `CUTOVER_PREVIEW_PORT` and `defines`, then
/// reads `body`. Its output goes to dir/stderr.log, its errors to dir/error.log.
pub fn spawn_apache(
    bin: &Path,
    dir: &Path,
    (public, preview): (u16, u16),
    persist: bool,
    defines: &[(&str, String)],
    body: &str,
) -> ChildGuard {
    use std::os::unix::process::CommandExt;
    for sub in ["run", "flags", "htdocs"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    let root = dir.display();
    let mut conf = format!(
        "ServerRoot \"{root}\"\nServerName 127.0.0.1\nListen 127.0.0.1:{public}\n\
         Listen 127.0.0.1:{preview}\nPidFile {root}/run/httpd.pid\n\
         DefaultRuntimeDir {root}/run\nMutex file:{root}/run default\n\
         ErrorLog {root}/error.log\nLogLevel warn\nDocumentRoot {root}/htdocs\n\
         Define CUTOVER_FLAGS {root}/flags\nDefine CUTOVER_PREVIEW_PORT {preview}\n"
    );
    for m in APACHE_MODULES {
        conf += &format!("LoadModule {m}_module /usr/lib/apache2/modules/mod_{m}.so\n");
    }
    // The worker sizing docs/apache.md tells users to paste (without it the event MPM resets
    // keep-alive connections under load).
    conf += &apache_doc_block("cutover-apache-mpm", "apache");
    if persist {
        conf += "BalancerPersist On\n";
    }
    for (k, v) in defines {
        conf += &format!("Define {k} {v}\n");
    }
    conf += body;
    let conf_path = dir.join("httpd.conf");
    std::fs::write(&conf_path, conf).expect("write httpd.conf");
    let out = std::fs::File::create(dir.join("stderr.log")).expect("stderr.log");
    ChildGuard::spawn(
        "apache2",
        Command::new(bin)
            .arg("-d")
            .arg(dir)
            .arg("-f")
            .arg(&conf_path)
            .arg("-DFOREGROUND")
            .process_group(0)
            .stdout(out.try_clone().expect("dup"))
            .stderr(out),
    )
}

/// A child process killed by PID when dropped.
pub struct ChildGuard {
    pub child: Child,
    pub name: String,
}

impl ChildGuard {
    pub fn spawn(name: &str, cmd: &mut Command) -> ChildGuard {
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
        }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildGuard {
    /// SIGTERM first (a master process then stops its workers), SIGKILL after 5 s.
    fn drop(&mut self) {
        // Already reaped (a test waited for it): its pid may belong to someone else by now.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = self.child.id() as i32;
        unsafe {
            libc_kill(pid, 15);
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kill a daemon whose PID is in a file (nginx, apache2 daemonize themselves).
pub struct PidFileGuard(pub PathBuf);

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        if let Ok(s) = std::fs::read_to_string(&self.0)
            && let Ok(pid) = s.trim().parse::<i32>()
        {
            unsafe {
                libc_kill(pid, 15);
            }
            let t = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists()
                && t.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            unsafe {
                libc_kill(pid, 9);
            }
        }
    }
}

unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

/// Wait until something accepts TCP connections on `port`.
pub async fn wait_port(port: u16, within: Duration) {
    let t = Instant::now();
    while t.elapsed() < within {
        if tokio::net::TcpStream::connect(loopback(port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on 127.0.0.1:{port} after {within:?}");
}

/// Wait until something accepts TCP connections on each of `ports`, each within `within`.
pub async fn wait_ports(ports: &[u16], within: Duration) {
    for port in ports {
        wait_port(*port, within).await;
    }
}

/// GET a URL (a 5 s limit): the response.
async fn fetch(url: &str) -> reqwest::Response {
    let c = cutover::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    c.get(url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The value of a response's header, if it is text.
pub fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// GET a URL: (status, x-slot header), or None when nothing answers.
pub async fn try_get(url: &str) -> Option<(u16, String)> {
    let c = cutover::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let r = c.get(url).send().await.ok()?;
    Some((
        r.status().as_u16(),
        header(&r, "x-slot").unwrap_or_default(),
    ))
}

/// GET a URL and return (status, x-slot header, body).
pub async fn get(url: &str) -> (u16, String, String) {
    let r = fetch(url).await;
    let (status, slot) = (r.status().as_u16(), header(&r, "x-slot"));
    (
        status,
        slot.unwrap_or_default(),
        r.text().await.unwrap_or_default(),
    )
}

/// GET a URL with one extra request header (`Cookie: …`, a preview header): (x-slot,
/// Set-Cookie) of the answer, which must be a 200.
pub async fn get_with(url: &str, header: (&str, &str)) -> (String, Option<String>) {
    let c = cutover::http_client()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client");
    let r = c
        .get(url)
        .header(header.0, header.1)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert_eq!(r.status().as_u16(), 200, "GET {url} with {header:?}");
    (
        self::header(&r, "x-slot").unwrap_or_default(),
        self::header(&r, "set-cookie"),
    )
}

/// An answer as a person would look at a maintenance page: status, `Retry-After`,
/// `Content-Type` and body.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub retry_after: Option<String>,
    pub content_type: String,
    pub body: String,
}

/// GET a URL and return it as a Page.
pub async fn page(url: &str) -> Page {
    let r = fetch(url).await;
    Page {
        status: r.status().as_u16(),
        retry_after: header(&r, "retry-after"),
        content_type: header(&r, "content-type").unwrap_or_default(),
        body: r.text().await.unwrap_or_default(),
    }
}

/// The maintenance page at `url`: a 503 that says so and asks to retry after 30 s.
pub async fn maintenance_page(url: &str) -> Page {
    let p = page(url).await;
    assert_eq!((p.status, p.retry_after.as_deref()), (503, Some("30")));
    assert!(p.body.contains("Down for maintenance"), "{p:?}");
    p
}

/// Poll `f` until it returns true or `within` passes.
/// [`eventually`] for blocking checks (a test off the async runtime, a child process): `f`
/// polled until it holds, at most `within`. The tests' one blocking polling loop.
pub fn wait_until(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    loop {
        if f() {
            return true;
        }
        if t.elapsed() >= within {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub async fn eventually<F, Fut>(within: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = Instant::now();
    while t.elapsed() < within {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Wait until the load run has sent `n` more requests (30 s at most); `step` names what
/// comes next, for the failure.
pub async fn more_requests(run: &cutover::load::LoadRun, n: u64, step: &str) {
    let target = run.sent.load(std::sync::atomic::Ordering::SeqCst) + n;
    let ok = eventually(Duration::from_secs(30), || async {
        run.sent.load(std::sync::atomic::Ordering::SeqCst) >= target
    })
    .await;
    assert!(ok, "the load stopped sending before {step}");
}

/// Run an operation through the engine (gate from fresh probes), collecting the messages of the
/// steps that finished: (outcome, messages).
pub async fn run_op(
    engine: &cutover::ops::Engine,
    kind: cutover::ops::OpKind,
    force: bool,
    watch: bool,
) -> (cutover::ops::Outcome, Vec<String>) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let collect = tokio::spawn(async move {
        let mut lines = Vec::new();
        while let Some(p) = rx.recv().await {
            if let cutover::ops::Progress::Step {
                ok: Some(_),
                message,
                ..
            } = p
            {
                lines.push(message);
            }
        }
        lines
    });
    let (_cancel, cancelled) = tokio::sync::watch::channel(cutover::ops::Interrupt::None);
    let req = cutover::ops::OpRequest {
        force,
        watch,
        ..cutover::ops::OpRequest::new(kind)
    };
    let out = engine
        .run(req, cutover::ops::GateSource::ProbeNow, tx, cancelled)
        .await;
    (out, collect.await.unwrap_or_default())
}

/// `text` contains `needle` (a failure shows the whole text).
#[track_caller]
pub fn assert_contains(text: &str, needle: &str) {
    assert!(text.contains(needle), "no `{needle}` in:\n{text}");
}

/// `text` does not contain `needle` (a failure shows the whole text).
#[track_caller]
pub fn assert_lacks(text: &str, needle: &str) {
    assert!(!text.contains(needle), "`{needle}` in:\n{text}");
}

/// `text` contains every one of `needles` (a failure names the first missing one and shows the
/// whole text).
#[track_caller]
pub fn assert_contains_all(text: &str, needles: &[&str]) {
    for needle in needles {
        assert_contains(text, needle);
    }
}

/// A run of the binary exited with `code` (`what` says which run) and printed every one of
/// `needles`: what it printed.
#[track_caller]
pub fn assert_exit(o: &std::process::Output, code: i32, what: &str, needles: &[&str]) -> String {
    let text = printed(o);
    assert_eq!(o.status.code(), Some(code), "{what}: {text}");
    for needle in needles {
        assert!(text.contains(needle), "{what}: no `{needle}` in:\n{text}");
    }
    text
}

/// The router's reading names a problem (not a note) that contains `needle`.
#[track_caller]
pub fn assert_problem(state: &cutover::model::RouterState, needle: &str) {
    assert!(
        state.problems.iter().any(|n| n.contains(needle)),
        "no problem saying `{needle}` (a problem, not a note): {:?}",
        state.problems
    );
}

/// The operation ended in `verdict` (a failure shows its message).
#[track_caller]
pub fn assert_verdict(out: &cutover::ops::Outcome, verdict: cutover::ops::Verdict) {
    assert_eq!(out.verdict, verdict, "{}", out.message);
}

/// The operation ended in `verdict` (a failure shows its message and what it said on the way,
/// `seen`).
#[track_caller]
pub fn assert_verdict_seen(
    out: &cutover::ops::Outcome,
    verdict: cutover::ops::Verdict,
    seen: &impl std::fmt::Debug,
) {
    assert_eq!(out.verdict, verdict, "{}\n{seen:#?}", out.message);
}

/// The operation that swaps the live slot to `slot`.
pub fn swap_to(slot: &str) -> cutover::ops::OpKind {
    cutover::ops::OpKind::Swap {
        to: Some(slot.into()),
    }
}

/// Start `kind` in the background; its progress comes on the returned channel.
pub fn start_op(
    e: &std::sync::Arc<cutover::ops::Engine>,
    kind: cutover::ops::OpKind,
) -> (
    tokio::task::JoinHandle<cutover::ops::Outcome>,
    tokio::sync::mpsc::UnboundedReceiver<cutover::ops::Progress>,
    tokio::sync::watch::Sender<cutover::ops::Interrupt>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (cancel, cancelled) = tokio::sync::watch::channel(cutover::ops::Interrupt::None);
    let e = e.clone();
    let task = tokio::spawn(async move {
        let req = cutover::ops::OpRequest {
            watch: false,
            ..cutover::ops::OpRequest::new(kind)
        };
        e.run(req, cutover::ops::GateSource::ProbeNow, tx, cancelled)
            .await
    });
    (task, rx, cancel)
}

/// Wait (at most 30 s) for a finished step whose message contains `needle`.
pub async fn step_done(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<cutover::ops::Progress>,
    needle: &str,
) {
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(p) = rx.recv().await {
            if let cutover::ops::Progress::Step {
                ok: Some(true),
                message,
                ..
            } = &p
                && message.contains(needle)
            {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no finished step saying `{needle}`");
}

/// The step `name` of an operation's audit record (a failure lists the steps it has).
#[track_caller]
pub fn step<'a>(out: &'a cutover::ops::Outcome, name: &str) -> &'a cutover::audit::StepRecord {
    let steps = &out.record.steps;
    steps
        .iter()
        .find(|s| s.step == name)
        .unwrap_or_else(|| panic!("no step `{name}` in {steps:#?}"))
}

/// [`run_op`] without force or watch, which must end in `verdict`: (outcome, messages).
pub async fn run_op_ends(
    engine: &cutover::ops::Engine,
    kind: cutover::ops::OpKind,
    verdict: cutover::ops::Verdict,
) -> (cutover::ops::Outcome, Vec<String>) {
    let (out, lines) = run_op(engine, kind, false, false).await;
    assert_eq!(out.verdict, verdict, "{}: {lines:#?}", out.message);
    (out, lines)
}

/// `r` must be an error (`what` says why) whose message (`{e:#}`, with its causes) contains
/// `needle`: that message.
#[track_caller]
pub fn fails_with<T, E: std::fmt::Display>(r: Result<T, E>, what: &str, needle: &str) -> String {
    let e = match r {
        Ok(_) => panic!("succeeded, but must fail: {what}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains(needle), "{what}: {e}");
    e
}

/// [`fails_with`] for every one of `needles`: the message.
#[track_caller]
pub fn fails_with_all<T, E: std::fmt::Display>(
    r: Result<T, E>,
    what: &str,
    needles: &[&str],
) -> String {
    let e = fails_with(r, what, needles.first().copied().unwrap_or_default());
    for needle in needles {
        assert!(e.contains(needle), "{what}: no `{needle}` in: {e}");
    }
    e
}

/// Run the `cutover` binary on a config (written to `dir/cutover.toml`, with its state and
/// XDG directories in `dir`), off the async runtime: its output.
pub async fn cutover_cli(dir: &Path, config: &str, args: &[&str]) -> std::process::Output {
    let path = dir.join("cutover.toml");
    std::fs::write(&path, config).expect("write cutover.toml");
    let mut argv = vec!["--config".to_string(), path.display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || cutover_sync(&dir, &argv))
        .await
        .expect("join")
}

/// Run the `cutover` binary with `args`, its state and XDG directories in `dir`: its output.
pub fn cutover_sync(dir: &Path, args: &[impl AsRef<std::ffi::OsStr>]) -> std::process::Output {
    cutover_with_env(dir, args, &[])
}

/// [`cutover_sync`] with the variables `env` set (or removed, where the value is `None`).
pub fn cutover_with_env(
    dir: &Path,
    args: &[impl AsRef<std::ffi::OsStr>],
    env: &[(&str, Option<&str>)],
) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.args(args)
        .env("XDG_STATE_HOME", dir.join("state"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env_remove("CUTOVER_CONFIG")
        .stdin(Stdio::null());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    cmd.output().expect("run cutover")
}

/// Run `cmd` (`what` names it), which must succeed (a failure shows what it printed): its
/// output.
#[track_caller]
pub fn run_ok(cmd: &mut Command, what: &str) -> std::process::Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what} does not run: {e}"));
    assert!(out.status.success(), "{what} failed:\n{}", printed(&out));
    out
}

/// `promtool check metrics` on an exposition: its verdict and what it said.
pub fn promtool_check(promtool: &Path, text: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool ends");
    (out.status.success(), printed(&out))
}

/// Every metric an exposition declares (`# TYPE name kind`) is in README's Metrics table.
pub fn assert_metrics_in_readme(text: &str) {
    let readme = include_str!("../../README.md");
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).expect("# TYPE name kind");
        assert!(
            readme.contains(&format!("| `{name}` |")),
            "README's Metrics table does not document {name}"
        );
    }
}

/// `cutover check` passes on `toml`, and once `from` is replaced by `to` both `check` and
/// `status` exit 1: check's line about router `router` (which must be a FAIL) and status's
/// output, for the caller to look for the proxy's words in.
pub async fn check_and_status_fail_after(
    toml: &str,
    from: &str,
    to: &str,
    router: &str,
) -> (String, String) {
    let dir = tempfile::tempdir().expect("dir");
    let o = cutover_cli(dir.path(), toml, &["check"]).await;
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let wrong = toml.replace(from, to);
    assert_ne!(wrong, toml, "no `{from}` in the config");
    let o = cutover_cli(dir.path(), &wrong, &["check"]).await;
    let line = failed_check(&o, &format!("router {router}"), "");
    let o = cutover_cli(dir.path(), &wrong, &["status"]).await;
    let status = printed(&o);
    assert_eq!(o.status.code(), Some(1), "{status}");
    (line, status)
}

/// `cutover check` exited 1 with a `FAIL` row about `what` that contains `why`: that row.
#[track_caller]
pub fn failed_check(o: &std::process::Output, what: &str, why: &str) -> String {
    let out = printed(o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let row = out
        .lines()
        .find(|l| l.contains(what))
        .unwrap_or_else(|| panic!("no row about {what}:\n{out}"));
    assert!(row.starts_with("FAIL") && row.contains(why), "{row}");
    row.to_string()
}

/// What a finished process printed: its stdout, then its stderr.
pub fn printed(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The fenced blocks of a Markdown text, in order: (info string, body). Every line of a body
/// ends in a newline.
pub fn fenced_blocks(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut lines = text.lines();
    while let Some(l) = lines.next() {
        if let Some(info) = l.strip_prefix("```") {
            let mut body = String::new();
            for b in lines.by_ref() {
                if b.starts_with("```") {
                    break;
                }
                body.push_str(b);
                body.push('\n');
            }
            out.push((info.trim_end().to_string(), body));
        }
    }
    out
}

/// The first environment of a test's cutover config; a config cutover refuses fails the test
/// with its error and the text.
pub fn environment(toml: &str) -> cutover::config::Environment {
    match cutover::config::parse(toml, Path::new("test.toml")) {
        Ok(mut c) => c.environments.remove(0),
        Err(e) => panic!("{e}\n{toml}"),
    }
}

/// The operations engine of the first environment of a whole config (`[settings]` included).
pub fn engine(text: &str) -> std::sync::Arc<cutover::ops::Engine> {
    let cfg = cutover::config::parse(text, Path::new("test.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    let world = cutover::world::World::build(cfg, None).expect("world");
    world.engines[0].clone()
}

/// The `[[environment.slot]]` tables of (name, address) pairs.
pub fn slot_tables(slots: &[(&str, &str)]) -> String {
    slots
        .iter()
        .map(|(n, a)| format!("[[environment.slot]]\nname = \"{n}\"\naddress = \"{a}\"\n"))
        .collect()
}

/// The `[[environment.slot]]` tables of slot servers, each read for its version at `/version`.
pub fn versioned_slot_tables<'a>(servers: impl IntoIterator<Item = &'a SlotServer>) -> String {
    server_slot_tables(servers, "version_pointer = \"/version\"\n")
}

/// The `[[environment.slot]]` tables of slot servers (named as their slot), each with `extra`
/// keys.
pub fn server_slot_tables<'a>(
    servers: impl IntoIterator<Item = &'a SlotServer>,
    extra: &str,
) -> String {
    servers
        .into_iter()
        .map(|s| {
            format!(
                "[[environment.slot]]\nname = \"{}\"\naddress = \"{}\"\n{extra}\n",
                s.controls.name,
                s.url()
            )
        })
        .collect()
}

/// The config of one environment `shop` (no watch, then `env_extra`) with the slot servers
/// (versions at `/version`) behind an embedded router listening on `live`, its admin API on
/// `admin`, blue live and green the preview (then `router_extra`): polled every `poll`,
/// gate_checks = 2, the state and the proxy's state file in `dir`.
pub fn embedded_shop_config(
    dir: &Path,
    slots: &[SlotServer],
    poll: &str,
    (live, admin): (u16, u16),
    env_extra: &str,
    router_extra: &str,
) -> String {
    let mut text = format!(
        "[settings]\npoll_interval = \"{poll}\"\ntimeout = \"500ms\"\ngate_checks = 2\n\
         state_dir = \"{}\"\n\n[[environment]]\nname = \"shop\"\nwatch = \"0s\"\n{env_extra}\n",
        dir.join("state").display()
    );
    text += &versioned_slot_tables(slots);
    text += &format!(
        "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{admin}\"\n\
         live_listen = \"127.0.0.1:{live}\"\ninitial_live = \"blue\"\n\
         initial_preview = \"green\"\nstate_file = \"{}\"\n{router_extra}",
        dir.join("proxy.json").display()
    );
    text
}

/// A temp dir holding one file, `name`, with `text` in it: the dir and the file's path.
pub fn temp_file(name: &str, text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write");
    (dir, path)
}

/// The `[[environment.router]]` table of an nginx router switching by `method`, for the
/// nginx binary `bin` run with the prefix `t` (its config, pid file and error log there);
/// reloads bounded at 3 s.
pub fn nginx_router_table(bin: &Path, t: &Path, method: &str) -> String {
    let td = t.display();
    let args = format!("\"-p\", \"{td}\", \"-c\", \"{td}/nginx.conf\", \"-e\", \"{td}/error.log\"");
    format!(
        "[[environment.router]]\nkind = \"nginx\"\nmethod = \"{method}\"\ndir = \"{td}/cutover\"\n\
         nginx = \"{}\"\nnginx_args = [{args}]\npid_file = \"{td}/nginx.pid\"\n\
         error_log = \"{td}/error.log\"\nreload_timeout = \"3s\"\n",
        bin.display()
    )
}

/// Write `text` to `dir/cutover.toml`, load it (a config cutover refuses fails the test), and
/// start the proxy of its first environment's first router, which must be embedded.
pub async fn start_embedded(
    dir: &Path,
    text: &str,
) -> (cutover::config::Config, cutover::proxy::ProxyHandle) {
    let path = dir.join("cutover.toml");
    std::fs::write(&path, text).expect("write config");
    let config = cutover::config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let env = &config.environments[0];
    let Some(cutover::router::RouterConfig::Embedded(pc)) = env.routers.first() else {
        panic!("no embedded router")
    };
    let proxy = cutover::proxy::start(env, pc).await.expect("start proxy");
    (config, proxy)
}

/// Slot servers for `names` (version 1.0.0) and their `[[environment.slot]]` tables. A slot in
/// `nodes` gets that many more servers and a `nodes` list: its own server is `n1`, the others
/// `n2`, `n3`, .... The servers: one per name in order, then the extra nodes; every server
/// answers with its slot's name.
pub async fn slots_with_nodes(
    names: &[&str],
    nodes: &[(&str, usize)],
) -> (Vec<SlotServer>, String) {
    let specs: Vec<(&str, &str)> = names.iter().map(|n| (*n, "1.0.0")).collect();
    let mut servers = slots(&specs).await;
    let mut toml = String::new();
    for (i, n) in names.iter().enumerate() {
        let addr = servers[i].url();
        toml.push_str(&format!(
            "[[environment.slot]]\nname = \"{n}\"\naddress = \"{addr}\"\n"
        ));
        if let Some((_, extra)) = nodes.iter().find(|(s, _)| s == n) {
            let mut list = vec![format!("{{ name = \"n1\", address = \"{addr}\" }}")];
            for k in 0..*extra {
                let s = slot_server(n, "1.0.0").await;
                list.push(format!(
                    "{{ name = \"n{}\", address = \"{}\" }}",
                    k + 2,
                    s.url()
                ));
                servers.push(s);
            }
            toml.push_str(&format!("nodes = [{}]\n", list.join(", ")));
        }
    }
    (servers, toml)
}

/// Requests each of `servers` served while `n` requests went to `url`, each answered 200.
pub async fn served_during(servers: &[SlotServer], url: &str, n: usize) -> Vec<u64> {
    use std::sync::atomic::Ordering::SeqCst;
    let before: Vec<u64> = servers
        .iter()
        .map(|s| s.controls.served.load(SeqCst))
        .collect();
    for _ in 0..n {
        assert_eq!(get(url).await.0, 200);
    }
    servers
        .iter()
        .zip(before)
        .map(|(s, b)| s.controls.served.load(SeqCst) - b)
        .collect()
}

/// Poll `r.observe()` until `f` holds and return that state; after `within` the test fails
/// with `what` and the last state.
pub async fn observe_until(
    r: &dyn cutover::router::Router,
    within: Duration,
    what: &str,
    f: impl Fn(&cutover::model::RouterState) -> bool,
) -> cutover::model::RouterState {
    let t = Instant::now();
    loop {
        let st = r
            .observe()
            .await
            .unwrap_or_else(|e| panic!("observe failed: {e:#}"));
        if f(&st) {
            return st;
        }
        if t.elapsed() > within {
            panic!("{what}: not seen within {within:?}: {st:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node of a slot as observe() reports it.
pub fn node<'a>(
    st: &'a cutover::model::RouterState,
    slot: &str,
    node: &str,
) -> &'a cutover::model::NodeRoute {
    st.slots[slot]
        .nodes
        .iter()
        .find(|n| n.name == node)
        .unwrap_or_else(|| panic!("no node {slot}/{node} in {st:#?}"))
}

/// How many times the answering slot changed from one answer to the next.
pub fn slot_changes(r: &cutover::load::LoadReport) -> usize {
    r.samples
        .windows(2)
        .filter(|w| w[0].slot != w[1].slot)
        .count()
}

/// A load run's report has no failed request; the failures and the first errors otherwise.
pub fn assert_none_failed(r: &cutover::load::LoadReport) {
    assert_eq!(r.failed(), 0, "{:?} {:?}", r.failures, r.first_errors);
}

/// Every one of `slots` answered some of a load's requests (`by_slot`: answers by slot).
#[track_caller]
pub fn assert_served_by(by_slot: &std::collections::BTreeMap<String, u64>, slots: &[&str]) {
    for slot in slots {
        assert!(
            by_slot.get(*slot).is_some_and(|n| *n > 0),
            "`{slot}` served none of the load: {by_slot:?}"
        );
    }
}

/// A window of load on `url`, bounded in count and time, two at a time (not a benchmark): at
/// most 200,000 requests or 10 s.
pub async fn load_window(url: String) -> cutover::load::LoadReport {
    cutover::load::run(cutover::load::LoadOptions {
        url,
        concurrency: 2,
        max_requests: 200_000,
        max_duration: Duration::from_secs(10),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    })
    .await
}

/// The proxy (`proxy`) counted `counted` requests on `slot` over a load window whose own count
/// of `slot`'s answers is in `report` (over 100, none failed): the two within 5 %.
#[track_caller]
pub fn assert_counted_as_the_load(
    proxy: &str,
    slot: &str,
    counted: u64,
    report: &cutover::load::LoadReport,
) {
    let answered = report.by_slot.get(slot).copied().unwrap_or(0);
    assert!(answered > 100, "the load got too few answers: {report:?}");
    assert_eq!(report.failed(), 0, "{report:?}");
    let off = (counted as f64 - answered as f64).abs() / answered as f64;
    eprintln!(
        "{proxy} counted {counted}, the load {answered}: {:.2} % apart",
        off * 100.0
    );
    assert!(
        off <= 0.05,
        "{proxy} counted {counted} requests on `{slot}`, the load {answered} ({:.1} % apart)",
        off * 100.0
    );
}

/// `pairs` swap+rollback pairs (green, then blue; 100 ms apart) under 16 keep-alive
/// connections of load on `url`: the load's report.
pub async fn swap_pairs_under_load(
    driver: &dyn cutover::router::Router,
    url: &str,
    pairs: usize,
) -> cutover::load::LoadReport {
    let mut o = cutover::load::LoadOptions::new(url);
    o.concurrency = 16;
    o.max_requests = 100_000;
    o.max_duration = Duration::from_secs(40);
    o.keep_alive = true;
    let run = cutover::load::start(o);
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..pairs {
        driver.switch_live("green").await.expect("swap");
        tokio::time::sleep(Duration::from_millis(100)).await;
        driver.switch_live("blue").await.expect("rollback");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    run.finish().await
}

/// The `MEASURED` line of a run of `swap_pairs_under_load` with 20 pairs (docs/nginx.md and
/// docs/caddy.md quote them).
pub fn print_measured(proxy: &str, label: &str, rep: &cutover::load::LoadReport) {
    println!(
        "MEASURED {proxy} {label}: 40 switches (20 swap+rollback pairs), 16 keep-alive \
         connections: sent={} ok={} failed={} (reset {}, connect {}, timeout {}, status {:?}) \
         by_slot={:?} in {} ms; first errors: {:?}",
        rep.sent,
        rep.ok,
        rep.failed(),
        rep.failures.reset,
        rep.failures.connect,
        rep.failures.timeout,
        rep.failures.status,
        rep.by_slot,
        rep.elapsed_ms,
        rep.first_errors.iter().take(2).collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------
// Benchmarks: `#[ignore]`d tests named `bench_*` that scripts/bench runs with
// `cargo test --release -- --ignored bench_`. They print `BENCH` lines that scripts/bench
// turns into BENCHMARKS.md's tables; numbers are printed, never asserted.

/// The engine a drill runs on: `env_toml` (environments only) with one gate check and a state
/// directory of its own, kept as long as the returned guard.
pub fn drill_engine(env_toml: &str) -> (tempfile::TempDir, std::sync::Arc<cutover::ops::Engine>) {
    let state = tempfile::tempdir().expect("state dir");
    let text = format!(
        "[settings]\ngate_checks = 1\nstate_dir = \"{}\"\n\n{env_toml}",
        state.path().display()
    );
    (state, engine(&text))
}

/// `cutover drill` as the issue's benchmark runs it: 64 keep-alive connections sending for as
/// long as 20 swap+rollback pairs take (600 ms apart; a million requests or three minutes at
/// most), through the operations engine. `env_toml` is the environment's config without `[settings]`; it must not be a
/// production environment.
pub async fn bench_drill(kind: &str, env_toml: &str) -> cutover::drill::DrillReport {
    let (_state, engine) = drill_engine(env_toml);
    let opts = cutover::drill::DrillOptions {
        concurrency: 64,
        // Bounded by time and count; HAProxy answers over 1,000,000 in the 20 pairs.
        requests: 5_000_000,
        duration: Duration::from_secs(180),
        pairs: 20,
        keep_alive: true,
        path: "/".into(),
        pause: Duration::from_millis(600),
        yes_really: false,
        canary: None,
    };
    let r = cutover::drill::run(&engine, &opts)
        .await
        .unwrap_or_else(|e| panic!("drill on {kind}: {e:#}"));
    let mut first: Vec<u64> = r.switches.iter().filter_map(|s| s.first_new_ms).collect();
    let mut last: Vec<u64> = r.switches.iter().filter_map(|s| s.last_old_ms).collect();
    let pct = |v: &mut Vec<u64>, p| {
        cutover::drill::DrillReport::percentile(v, p)
            .map(|x| x.to_string())
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "BENCH drill | {kind} | {} | {} | {} | {} | {:.0} | {} / {} ms | {} ms | {} / {} ms | {} |",
        r.concurrency,
        r.sent,
        r.failed,
        r.switches.len(),
        r.rps,
        pct(&mut first, 0.5),
        pct(&mut first, 0.99),
        r.command_to_first_answer_p50()
            .map_or_else(|| "-".into(), |ms| format!("{ms:.1}")),
        pct(&mut last, 0.5),
        pct(&mut last, 0.99),
        if r.passed() {
            "-".to_string()
        } else {
            format!(
                "{:?} {:?} {:?}",
                r.failures, r.failed_operations, r.unobserved
            )
        }
    );
    let steps: Vec<String> = r
        .breakdown()
        .iter()
        .map(|(m, ms)| format!("{m} {ms:.1}"))
        .collect();
    println!("BENCH breakdown | {kind} | {} |", steps.join(" · "));
    if r.failed > 0 {
        eprintln!("{kind}: first errors {:#?}", r.first_errors);
        eprintln!(
            "{kind}: switches issued at (ms) {:?}",
            r.switches.iter().map(|s| s.issued_ms).collect::<Vec<_>>()
        );
    }
    r
}

/// Throughput and latency of one path: 64 keep-alive connections, 100,000 requests (one
/// minute at most), the load generator in this process.
pub async fn bench_load(path: &str, url: &str) {
    let opts = |max_requests, secs| cutover::load::LoadOptions {
        url: url.to_string(),
        concurrency: 64,
        max_requests,
        max_duration: Duration::from_secs(secs),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    };
    // Warm the path (connections, the proxy's upstream pool) before measuring.
    cutover::load::run(opts(5_000, 10)).await;
    let r = cutover::load::run(opts(100_000, 60)).await;
    let ms = |us: Option<u64>| {
        us.map(|v| format!("{:.2} ms", v as f64 / 1000.0))
            .unwrap_or_else(|| "-".into())
    };
    println!(
        "BENCH load | {path} | {} | {} | {:.0} | {} | {} |",
        r.sent,
        r.failed(),
        r.rps(),
        ms(r.percentile_us(0.5)),
        ms(r.percentile_us(0.99)),
    );
}

/// The embedded proxy in front of `live` (and `preview`), for comparing it with another proxy
/// on the same slots: the running proxy and its live URL.
async fn bench_embedded(
    live: &SlotServer,
    preview: &SlotServer,
    dir: &Path,
) -> (cutover::proxy::ProxyHandle, String) {
    let (port, admin) = (free_port(), free_port());
    let text = format!(
        "[[environment]]\nname = \"bench\"\n\
         [[environment.slot]]\nname = \"{}\"\naddress = \"{}\"\n\
         [[environment.slot]]\nname = \"{}\"\naddress = \"{}\"\n\
         [[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{admin}\"\n\
         live_listen = \"127.0.0.1:{port}\"\nstate_file = \"{}\"\n",
        live.controls.name,
        live.url(),
        preview.controls.name,
        preview.url(),
        dir.join("embedded.json").display()
    );
    let env = environment(&text);
    let cutover::router::RouterConfig::Embedded(pc) = &env.routers[0] else {
        panic!("embedded")
    };
    let proxy = cutover::proxy::start(&env, pc)
        .await
        .expect("embedded proxy");
    wait_port(port, Duration::from_secs(5)).await;
    (proxy, format!("http://127.0.0.1:{port}/"))
}

/// The same load straight to `live`, through an embedded proxy in front of `live` and
/// `preview`, and through the proxy under test (`label`, at `url`).
pub async fn bench_three_ways(
    live: &SlotServer,
    preview: &SlotServer,
    dir: &Path,
    label: &str,
    url: &str,
) {
    let (_embedded, embedded_url) = bench_embedded(live, preview, dir).await;
    bench_load("direct to the slot", &format!("{}/", live.url())).await;
    bench_load("through the embedded proxy", &embedded_url).await;
    bench_load(label, url).await;
}

/// Send `n` requests to `url` through `canary_share_under_load`, and check that none failed
/// and that `canary` served `percent` % of them, within 3 points.
pub async fn assert_canary_share(
    servers: &[&SlotServer],
    canary: &str,
    url: &str,
    n: u64,
    percent: u8,
) {
    let (report, share) = canary_share_under_load(servers, canary, url, n).await;
    assert_eq!(
        report.failed(),
        0,
        "{percent} %: {:?} {:?}",
        report.failures,
        report.first_errors
    );
    assert!(
        (share - f64::from(percent)).abs() <= 3.0,
        "at {percent} % the canary served {share:.1} % of {} answers",
        report.sent
    );
}

/// Wait (60 s at most) for an operation `task` to end while 4 keep-alive connections send
/// requests to `url` (20,000 or 30 s at most): its result.
pub async fn under_load<T>(url: String, task: tokio::task::JoinHandle<T>) -> T {
    let load = cutover::load::start(cutover::load::LoadOptions {
        url,
        concurrency: 4,
        max_requests: 20_000,
        max_duration: Duration::from_secs(30),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    });
    let out = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the operation ends")
        .expect("task");
    let _ = load.finish().await;
    out
}

/// Send `n` requests to `url` (8 keep-alive connections, at most 60 s) and return the load's
/// report and the share, in percent, of the answers that `canary` served, counted by the slot
/// servers themselves (every server of `servers` counts as one side or the other).
pub async fn canary_share_under_load(
    servers: &[&SlotServer],
    canary: &str,
    url: &str,
    n: u64,
) -> (cutover::load::LoadReport, f64) {
    use std::sync::atomic::Ordering::SeqCst;
    let before: Vec<u64> = servers
        .iter()
        .map(|s| s.controls.served.load(SeqCst))
        .collect();
    let report = cutover::load::run(cutover::load::LoadOptions {
        url: url.to_string(),
        concurrency: 8,
        max_requests: n,
        max_duration: Duration::from_secs(60),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    })
    .await;
    let mut canary_served = 0;
    let mut all = 0;
    for (s, b) in servers.iter().zip(before) {
        let d = s.controls.served.load(SeqCst) - b;
        all += d;
        if s.controls.name == canary {
            canary_served += d;
        }
    }
    assert!(
        all > 0,
        "no slot server answered the load on {url}: {report:?}"
    );
    (report, canary_served as f64 * 100.0 / all as f64)
}

// ---------------------------------------------------------------------------------------
// TLS: certificates made by `openssl req` at test time, and clients that trust them.

/// A self-signed server certificate for `localhost` and 127.0.0.1 from `openssl req`, written to
/// `dir/NAME.crt` and `dir/NAME.key`; its PEM.
pub fn self_signed(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>) {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let mut req = Command::new("openssl");
    req.args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        // A server certificate, not a CA (webpki refuses a CA as the end entity).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert);
    run_ok(&mut req, "openssl req (Debian package openssl)");
    let pem = std::fs::read(&cert).expect("read the certificate");
    (cert, key, pem)
}

/// A client that trusts `pem` and reaches `localhost` at `addr`; no pooled connections shared
/// with any other client.
pub fn tls_client(pem: &[u8], addr: std::net::SocketAddr) -> reqwest::Client {
    cutover::http_client()
        .add_root_certificate(reqwest::Certificate::from_pem(pem).expect("a PEM certificate"))
        .resolve("localhost", addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// `app` drawn on a `w`×`h` test terminal: the screen's text (a line per row) and its cells.
pub fn draw_screen(
    app: &mut cutover::app::App,
    w: u16,
    h: u16,
) -> (String, ratatui::buffer::Buffer) {
    app.update(cutover::app::Event::Resize(w, h));
    let backend = ratatui::backend::TestBackend::new(w, h);
    let mut term = ratatui::Terminal::new(backend).expect("terminal");
    term.draw(|f| cutover::ui::draw(f, app)).expect("draw");
    let buf = term.backend().buffer().clone();
    let mut s = String::new();
    for y in 0..h {
        for x in 0..w {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    (s, buf)
}

/// A `prometheus` server of the test's own (unprivileged, on a free loopback port, its data in
/// `dir`) scraping `target` (`host:port`, path `/metrics`) every second as job `job`, with the
/// bearer token in `token_file` when given: the guard and its base URL. Its log is
/// dir/prometheus.log.
pub fn spawn_prometheus(
    bin: &Path,
    dir: &Path,
    job: &str,
    target: &str,
    token_file: Option<&Path>,
) -> (ChildGuard, String) {
    let auth = token_file.map_or(String::new(), |f| {
        format!(
            "    authorization:\n      credentials_file: {}\n",
            f.display()
        )
    });
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
             scrape_configs:\n  - job_name: {job}\n    metrics_path: /metrics\n{auth}    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .expect("write prometheus.yml");
    let port = free_port();
    let log = std::fs::File::create(dir.join("prometheus.log")).expect("log file");
    let guard = ChildGuard::spawn(
        "prometheus",
        Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(log),
    );
    (guard, format!("http://127.0.0.1:{port}"))
}

/// What a running load's clients see, for a test that waits on it instead of sleeping: each
/// wait ends when a slot answers a request that started after the wait began, or fails after
/// a generous deadline saying what the clients saw.
pub struct LoadSeen {
    started: std::time::Instant,
    progress: tokio::sync::watch::Receiver<cutover::load::Progress>,
}

impl LoadSeen {
    pub fn of(run: &cutover::load::LoadRun) -> LoadSeen {
        LoadSeen {
            started: run.started,
            progress: run.live.progress(),
        }
    }

    /// Wait until `slot` answers from now on (the change before it reached the clients).
    pub async fn answered_by(&mut self, slot: &str) {
        let since = self.started.elapsed().as_millis() as u64;
        let _ = tokio::time::timeout(
            Duration::from_secs(30),
            self.progress
                .wait_for(|p| p.ended.is_some() || p.answered_since(slot, since)),
        )
        .await;
        let p = self.progress.borrow().clone();
        assert!(
            p.answered_since(slot, since),
            "the load's clients never got an answer from `{slot}` after {since} ms: {p:?}"
        );
    }
}
