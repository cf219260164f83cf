//! The benchmarks behind scripts/bench (not part of the test suite). Prints markdown sections;
//! numbers are printed, never asserted.
//!
//! cargo run --release --example bench -- [render|first-frame|proxy|poller]...
//! (scripts/bench runs the drill and throughput sections from the `bench_*` tests.)

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use cutover::app::{App, Event};
use cutover::config;
use cutover::envview::Seen;
use cutover::load::{self, LoadOptions};
use cutover::model::{Health, ProbeResult, RouterState, SlotRoute, VersionInfo};
use cutover::router::RouterConfig;
use cutover::slotserver::SlotServer;
use cutover::theme::Theme;
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A port free now, not handed out before by this process, and below the ephemeral range
/// (32768 and up): the proxies started before a chosen port is bound connect out to thousands
/// of slots (node checks, probes), and the kernel may give one of those connections a port
/// picked from the ephemeral range before its listener binds it (seen at 10,000 slots).
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 100) as u16 * 100;
    loop {
        let port = 20_000 + start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A `[[environment.slot]]` table for a running slot server.
fn slot_toml(s: &SlotServer) -> String {
    format!(
        "[[environment.slot]]\nname = \"{}\"\naddress = \"{}\"\n",
        s.controls.name,
        s.url()
    )
}

/// An embedded `[[environment.router]]` on free loopback ports (every environment needs a
/// router: cutover reads each switch back from one).
fn embedded_router_toml() -> String {
    format!(
        "[[environment.router]]\nkind = \"embedded\"\nadmin = \"127.0.0.1:{}\"\nlive_listen = \"127.0.0.1:{}\"\n",
        free_port(),
        free_port()
    )
}

/// Write `text` to `path`, load it, and start every environment's embedded proxy in this
/// process, so the cutover under test reads real routers.
async fn start_proxies(path: &Path, text: &str) -> Option<Vec<cutover::proxy::ProxyHandle>> {
    if let Err(e) = std::fs::write(path, text) {
        println!("cannot write {}: {e}", path.display());
        return None;
    }
    let cfg = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            println!("the bench's config is refused: {e:#}");
            return None;
        }
    };
    let mut proxies = Vec::new();
    for env in &cfg.environments {
        for r in &env.routers {
            if let RouterConfig::Embedded(pc) = r {
                match cutover::proxy::start(env, pc).await {
                    Ok(p) => proxies.push(p),
                    Err(e) => {
                        println!("cannot start the proxy of {}: {e:#}", env.name);
                        return None;
                    }
                }
            }
        }
    }
    Some(proxies)
}

/// Requests the slot servers have answered so far.
fn served(servers: &[SlotServer]) -> u64 {
    servers
        .iter()
        .map(|s| s.controls.served.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(((v.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// 50 environments x 3 slots, drawn on a TestBackend at 160x48.
fn render() {
    let mut text = String::new();
    for e in 0..50 {
        text.push_str(&format!(
            "[[environment]]\nname = \"env-{e:02}\"\npublic_url = \"http://127.0.0.1:1/\"\n"
        ));
        for s in ["blue", "green", "staging"] {
            text.push_str(&format!(
                "[[environment.slot]]\nname = \"{s}\"\naddress = \"http://127.0.0.1:1\"\n"
            ));
        }
        text.push_str(&embedded_router_toml());
    }
    let cfg = match config::parse(&text, Path::new("bench.toml")) {
        Ok(c) => c,
        Err(e) => {
            println!("render: the bench's config is refused: {e:#}");
            return;
        }
    };
    let now = SystemTime::now();
    let mut app = App::new(cfg, Theme::dark(), vec![], now);
    for e in 0..50 {
        app.envs[e].routers.push(cutover::app::RouterView {
            name: "edge".into(),
            kind: "embedded".into(),
            state: None,
            error: None,
            at: None,
        });
        let mut st = RouterState {
            live: Some("blue".into()),
            preview: Some("green".into()),
            ..Default::default()
        };
        for s in ["blue", "green", "staging"] {
            st.slots.insert(
                s.into(),
                SlotRoute {
                    requests: Some(100),
                    sessions: Some(2),
                    ..Default::default()
                },
            );
        }
        app.update(Event::Seen(Seen::Router {
            env: e,
            router: 0,
            result: Ok(st),
            at: now,
        }));
        for i in 0..60u64 {
            for s in 0..3 {
                app.update(Event::Seen(Seen::Probe {
                    env: e,
                    slot: s,
                    result: ProbeResult {
                        at: now,
                        health: Health::Up,
                        status: Some(200),
                        latency: Some(Duration::from_millis(2 + i % 7)),
                        error: None,
                        version: Some(VersionInfo {
                            version: "1.2.3".into(),
                            commit: Some("abc1234".into()),
                            built: None,
                        }),
                        version_error: None,
                    },
                }));
            }
        }
    }
    let Ok(mut term) = Terminal::new(TestBackend::new(160, 48));
    let mut times = Vec::new();
    for i in 0..500 {
        app.selected_env = i % 50;
        let t = Instant::now();
        let _ = term.draw(|f| cutover::ui::draw(f, &app));
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!("## Rendering\n");
    println!("| frame | mean | p50 | p99 |\n|---|---|---|---|");
    println!(
        "| 50 environments x 3 slots, 160x48, TestBackend, 500 frames | {mean:.3} ms | {:.3} ms | {:.3} ms |\n",
        pct(&mut times.clone(), 0.5),
        pct(&mut times, 0.99)
    );
}

fn cutover_bin() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/release/examples/bench -> target/release/cutover
    exe.parent()
        .and_then(Path::parent)
        .map(|p| p.join("cutover"))
        .unwrap_or_default()
}

fn proc_cpu_ticks(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = s.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn proc_rss_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// 1,000 slots polled at 1 Hz, and 10,000 at 0.1 Hz, by `cutover watch`: its CPU and RSS.
async fn poller() {
    println!("## Poller scale\n");
    println!(
        "`cutover watch` on a config of N environments x 100 slots, each environment behind its own \
         embedded proxy (started by the bench; cutover reads it and probes its public URL each poll). \
         CPU is the cutover process's user + system time over the measured span.\n"
    );
    println!(
        "| slots | interval | requests/s seen by the slots | CPU (% of one core) | RSS |\n|---|---|---|---|---|"
    );
    poller_row(10, Duration::from_secs(1), Duration::from_secs(20)).await;
    poller_row(100, Duration::from_secs(10), Duration::from_secs(40)).await;
    println!();
}

/// Slot servers in child processes (`bench slot-host FIRST N`), a few thousand each: 10,000
/// listeners and their connections are more open files than one process may hold here.
struct SlotHosts {
    hosts: Vec<(
        std::process::Child,
        std::io::BufReader<std::process::ChildStdout>,
    )>,
}

impl SlotHosts {
    /// `total` slot servers named `s0`.. in hosts of at most 3,000; their (name, url).
    fn start(total: usize) -> Result<(SlotHosts, Vec<(String, String)>), String> {
        use std::io::BufRead;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut hosts = SlotHosts { hosts: Vec::new() };
        let mut slots = Vec::new();
        for first in (0..total).step_by(3000) {
            let n = 3000.min(total - first);
            let mut child = Command::new(&exe)
                .args(["slot-host", &first.to_string(), &n.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| format!("cannot start a slot host: {e}"))?;
            let Some(out) = child.stdout.take() else {
                return Err("a slot host has no stdout".into());
            };
            let mut out = std::io::BufReader::new(out);
            loop {
                let mut line = String::new();
                if out.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                    return Err("a slot host ended before it was ready".into());
                }
                match line.trim().split_once(' ') {
                    Some((name, url)) => slots.push((name.to_string(), url.to_string())),
                    None if line.trim() == "ready" => break,
                    None => return Err(format!("a slot host said {line:?}")),
                }
            }
            hosts.hosts.push((child, out));
        }
        Ok((hosts, slots))
    }

    /// Requests all the hosts' slot servers have answered so far.
    fn served(&mut self) -> u64 {
        use std::io::{BufRead, Write};
        let mut total = 0;
        for (child, out) in &mut self.hosts {
            let Some(stdin) = child.stdin.as_mut() else {
                continue;
            };
            let _ = writeln!(stdin, "count");
            let _ = stdin.flush();
            let mut line = String::new();
            let _ = out.read_line(&mut line);
            total += line.trim().parse::<u64>().unwrap_or(0);
        }
        total
    }
}

impl Drop for SlotHosts {
    fn drop(&mut self) {
        for (child, _) in &mut self.hosts {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `bench slot-host FIRST N`: N slot servers; prints `name url` per server, then `ready`, then
/// the requests served so far for every `count` line on stdin, until stdin closes.
async fn slot_host(first: usize, n: usize) {
    use std::io::BufRead;
    let mut servers = Vec::new();
    for i in first..first + n {
        match SlotServer::start(&format!("s{i}"), "1.0.0", any_port()).await {
            Ok(s) => {
                println!("s{i} {}", s.url());
                servers.push(s);
            }
            Err(e) => {
                println!("error: slot {i}: {e:#}");
                return;
            }
        }
    }
    println!("ready");
    let lines = tokio::task::spawn_blocking(move || {
        for line in std::io::stdin().lock().lines() {
            if line.is_err() {
                return;
            }
            println!("{}", served(&servers));
        }
    });
    let _ = lines.await;
}

/// One row: `envs` x 100 slot servers polled every `interval`, measured over `span`.
async fn poller_row(envs: usize, interval: Duration, span: Duration) {
    let slots = envs * 100;
    let (mut hosts, servers) = match SlotHosts::start(slots) {
        Ok(h) => h,
        Err(e) => {
            println!("| {slots} | {e} | | | |");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("cutover-bench-{}-{slots}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut text = format!(
        "[settings]\npoll_interval = \"{}s\"\ntimeout = \"1s\"\nstate_dir = \"{}\"\n",
        interval.as_secs(),
        dir.display()
    );
    for (e, chunk) in servers.chunks(100).enumerate() {
        text.push_str(&format!("[[environment]]\nname = \"env{e}\"\n"));
        for (name, url) in chunk {
            text.push_str(&format!(
                "[[environment.slot]]\nname = \"{name}\"\naddress = \"{url}\"\n"
            ));
        }
        text.push_str(&embedded_router_toml());
    }
    let cfg = dir.join("poller.toml");
    let Some(proxies) = start_proxies(&cfg, &text).await else {
        return;
    };
    let Ok(mut child) = Command::new(cutover_bin())
        .arg("--config")
        .arg(&cfg)
        .args(["watch", "env0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!(
            "| {slots} | cannot start {} | | | |",
            cutover_bin().display()
        );
        return;
    };
    let pid = child.id();
    // Warm up: every slot polled at least once (connections open, pools filled).
    let warm = Instant::now();
    while hosts.served() < 2 * slots as u64
        && warm.elapsed() < 4 * interval + Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(interval).await;
    let served0 = hosts.served();
    let t0 = Instant::now();
    let c0 = proc_cpu_ticks(pid).unwrap_or(0);
    tokio::time::sleep(span).await;
    let c1 = proc_cpu_ticks(pid).unwrap_or(0);
    let secs = t0.elapsed().as_secs_f64();
    let served1 = hosts.served();
    let rss = proc_rss_kb(pid).unwrap_or(0);
    let exited = child.try_wait().ok().flatten();
    let _ = child.kill();
    let out = child
        .wait_with_output()
        .map(|o| o.stderr)
        .unwrap_or_default();
    if let Some(status) = exited {
        println!(
            "| {slots} | cutover exited early ({status}): {} | | | |",
            String::from_utf8_lossy(&out).trim()
        );
        return;
    }
    for p in proxies {
        p.stop().await;
    }
    let ticks = 100.0; // USER_HZ
    let cpu = (c1 - c0) as f64 / ticks / secs * 100.0;
    println!(
        "| {} ({envs} environments x 100) | {} s (health + version: 2 requests per slot) | {:.0} | {cpu:.1} % | {:.1} MB |",
        thousands(slots),
        interval.as_secs(),
        (served1 - served0) as f64 / secs,
        rss as f64 / 1024.0
    );
}

fn thousands(n: usize) -> String {
    if n >= 1000 {
        format!("{},{:03}", n / 1000, n % 1000)
    } else {
        n.to_string()
    }
}

/// Time from starting `cutover` to its first frame, in tmux.
async fn first_frame() {
    let servers = [
        SlotServer::start("blue", "1.0.0", any_port()).await,
        SlotServer::start("green", "2.0.0", any_port()).await,
    ];
    let dir = std::env::temp_dir().join(format!("cutover-ff-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let mut text = format!(
        "[settings]\nstate_dir = \"{}\"\n[[environment]]\nname = \"shop\"\n",
        dir.display()
    );
    for s in servers.iter().flatten() {
        text.push_str(&slot_toml(s));
    }
    text.push_str(&embedded_router_toml());
    let cfg = dir.join("ff.toml");
    let Some(_proxies) = start_proxies(&cfg, &text).await else {
        return;
    };
    let mut times = Vec::new();
    // A session that outlives the runs: killing the last session ends tmux's server, and a
    // `new-session` that reaches the server while it exits fails ("server exited
    // unexpectedly"), which lost one run of ten.
    let keep = format!("cutover-ff-{}-keep", std::process::id());
    let _ = Command::new("tmux")
        .args(["new-session", "-d", "-s", &keep, "sleep 600"])
        .status();
    for i in 0..10 {
        let sess = format!("cutover-ff-{}-{i}", std::process::id());
        let t = Instant::now();
        let _ = Command::new("tmux")
            .args(["new-session", "-d", "-s", &sess, "-x", "120", "-y", "40"])
            .arg(format!(
                "{} --config {}",
                cutover_bin().display(),
                cfg.display()
            ))
            .status();
        let mut seen = None;
        while t.elapsed() < Duration::from_secs(5) {
            let o = Command::new("tmux")
                .args(["capture-pane", "-p", "-t", &sess])
                .output();
            if o.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("Traffic")) {
                seen = Some(t.elapsed());
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &sess])
            .status();
        if let Some(s) = seen {
            times.push(s.as_secs_f64() * 1e3);
        }
    }
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &keep])
        .status();
    println!("## Start to first frame\n");
    println!("| runs | p50 | max | includes |\n|---|---|---|---|");
    println!(
        "| {} | {:.0} ms | {:.0} ms | tmux starting the process, config load, terminal setup, first draw (polled every 2 ms) |\n",
        times.len(),
        pct(&mut times.clone(), 0.5),
        pct(&mut times, 1.0)
    );
}

async fn load_row(name: &str, url: &str) {
    let r = load::run(LoadOptions {
        url: url.to_string(),
        concurrency: 64,
        max_requests: 100_000,
        max_duration: Duration::from_secs(30),
        keep_alive: true,
        timeout: Duration::from_secs(5),
    })
    .await;
    println!(
        "| {name} | {} | {} | {:.0} | {:.2} ms | {:.2} ms |",
        r.sent,
        r.failed(),
        r.rps(),
        r.percentile_us(0.5).unwrap_or(0) as f64 / 1e3,
        r.percentile_us(0.99).unwrap_or(0) as f64 / 1e3
    );
}

/// Direct to a slot vs through the embedded proxy, 64 keep-alive connections.
async fn proxy() {
    let Ok(slot) = SlotServer::start("blue", "1.0.0", any_port()).await else {
        return;
    };
    let Ok(green) = SlotServer::start("green", "2.0.0", any_port()).await else {
        return;
    };
    let (live, admin) = (free_port(), free_port());
    let dir = std::env::temp_dir().join(format!("cutover-px-{}", std::process::id()));
    let text = format!(
        "[[environment]]\nname = \"shop\"\n[[environment.slot]]\nname = \"blue\"\naddress = \"{}\"\n\
         [[environment.slot]]\nname = \"green\"\naddress = \"{}\"\n[[environment.router]]\nkind = \"embedded\"\n\
         admin = \"127.0.0.1:{admin}\"\nlive_listen = \"127.0.0.1:{live}\"\nstate_file = \"{}/p.json\"\n",
        slot.url(),
        green.url(),
        dir.display()
    );
    let Ok(cfg) = config::parse(&text, Path::new("px.toml")) else {
        return;
    };
    let env = &cfg.environments[0];
    let Some(RouterConfig::Embedded(pc)) = env.routers.first() else {
        return;
    };
    let Ok(_proxy) = cutover::proxy::start(env, pc).await else {
        return;
    };
    println!("## Throughput: direct vs through the embedded proxy\n");
    println!("64 keep-alive connections, 100,000 requests, load generator in the same process.\n");
    println!("| path | requests | failed | req/s | p50 | p99 |\n|---|---|---|---|---|---|");
    load_row("direct to the slot", &format!("{}/", slot.url())).await;
    load_row(
        "through the embedded proxy",
        &format!("http://127.0.0.1:{live}/"),
    )
    .await;
    println!();
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let all = args.is_empty();
    let want = |s: &str| {
        (all || args.iter().any(|a| a == s)) && args.first().is_none_or(|a| a != "slot-host")
    };
    if want("render") {
        render();
    }
    if want("first-frame") {
        first_frame().await;
    }
    if want("proxy") {
        proxy().await;
    }
    if want("poller") {
        poller().await;
    }
    if let [cmd, first, n] = &args[..]
        && cmd == "slot-host"
    {
        slot_host(first.parse().unwrap_or(0), n.parse().unwrap_or(0)).await;
    }
}
