//! The real binary, driven in tmux as a user types: the demo at 120x40, 80x24 and 40x10, keys
//! sent, the screen read with capture-pane, and curl-like GETs against the live listener.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

struct Tmux {
    session: String,
    _state: tempfile::TempDir,
}

impl Tmux {
    fn start(name: &str, w: u16, h: u16, args: &[String]) -> Tmux {
        Tmux::start_with(name, w, h, args, &[])
    }

    fn start_with(name: &str, w: u16, h: u16, args: &[String], env: &[&str]) -> Tmux {
        let mut cmd = vec![env!("CARGO_BIN_EXE_cutover").to_string()];
        cmd.extend(args.iter().cloned());
        Tmux::spawn(name, w, h, &cmd.join(" "), env)
    }

    /// A session running `command` (a shell command line).
    fn spawn(name: &str, w: u16, h: u16, command: &str, env: &[&str]) -> Tmux {
        let state = tempfile::tempdir().expect("tempdir");
        let session = format!("cutover-e2e-{name}-{}", std::process::id());
        let st = Command::new("tmux")
            .args([
                "new-session",
                "-d",
                "-s",
                &session,
                "-x",
                &w.to_string(),
                "-y",
                &h.to_string(),
            ])
            .args(["-e", &format!("XDG_STATE_HOME={}", state.path().display())])
            .args(["-e", "TERM=xterm-256color"])
            .args(env.iter().flat_map(|e| ["-e", e]))
            .arg(command)
            .status()
            .expect("tmux");
        assert!(st.success(), "tmux new-session failed");
        Tmux {
            session,
            _state: state,
        }
    }

    fn screen(&self) -> String {
        self.capture(false)
    }

    /// The screen, with colour escapes when `styles`.
    fn capture(&self, styles: bool) -> String {
        let o = Command::new("tmux")
            .args(["capture-pane", "-p", "-t", &self.session])
            .args(if styles { &["-e"][..] } else { &[][..] })
            .output()
            .expect("capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let st = Command::new("tmux")
            .args(["send-keys", "-t", &self.session])
            .args(keys)
            .status()
            .expect("send-keys");
        assert!(st.success());
    }

    /// Wait until the screen shows `needle`; the screen is in the panic message otherwise.
    fn wait_for(&self, needle: &str, within: Duration) -> String {
        self.wait_until(&format!("{needle:?}"), within, |s| s.contains(needle))
    }

    /// Wait until `ok` holds for the screen; `what` and the screen are in the panic message
    /// otherwise. The one polling loop of these tests: it waits for what the screen shows,
    /// never for a time to be enough.
    fn wait_until(&self, what: &str, within: Duration, ok: impl Fn(&str) -> bool) -> String {
        let t = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if t.elapsed() > within {
                panic!("the screen never showed {what} within {within:?}:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Wait until the demo has drawn its first probes and its router's first answer (the
    /// roles): versions and `○ IDLE` on screen.
    fn wait_ready(&self) -> String {
        self.wait_for("v1.6.0-rc1", Duration::from_secs(30));
        self.wait_for("○ IDLE", Duration::from_secs(30))
    }

    /// Wait until the screen says `live=SLOT`; the public port (`live`) then serves `slot`
    /// (`what` says when): the screen.
    fn live_is(&self, slot: &str, live: u16, within: Duration, what: &str) -> String {
        let s = self.wait_for(&format!("live={slot}"), within);
        assert_eq!(served_by(live), slot, "{what}");
        s
    }

    /// Wait until the demo is drawn, which shows every one of `needles`: the screen.
    fn ready_showing(&self, needles: &[&str]) -> String {
        let s = self.wait_ready();
        common::assert_contains_all(&s, needles);
        s
    }

    /// Wait until the Op line shows `needle`.
    fn wait_op(&self, needle: &str, within: Duration) -> String {
        self.wait_until(&format!("{needle:?} on the Op line"), within, |s| {
            s.lines().any(|l| l.contains("│Op ") && l.contains(needle))
        })
    }

    /// Wait until the tmux session has ended (cutover quit).
    fn wait_gone(&self, within: Duration) -> bool {
        let t = Instant::now();
        while self.alive() && t.elapsed() < within {
            std::thread::sleep(Duration::from_millis(100));
        }
        !self.alive()
    }

    fn alive(&self) -> bool {
        Command::new("tmux")
            .args(["has-session", "-t", &self.session])
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .status();
    }
}

/// The demo in a tmux session `name` of `w`x`h` (where tmux is installed): the session and
/// the demo's public port.
fn demo_in_tmux(test: &str, name: &str, w: u16, h: u16) -> Option<(Tmux, u16)> {
    common::require_binary(test, "tmux")?;
    let (args, live) = demo_args();
    Some((Tmux::start(name, w, h, &args), live))
}

/// Three consecutive free ports for the demo's slots, below the kernel's ephemeral range
/// (32768 and up): a port `free_port()` hands a parallel test is never one of them, where
/// `p + 1` and `p + 2` next to an ephemeral `p` could be handed out after the check. Each call
/// in this process takes new ones; a port another process holds is skipped.
fn slot_ports() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = (std::process::id() % 400) as u16 * 30;
    loop {
        let p = 20_000 + start.wrapping_add(NEXT.fetch_add(3, Ordering::Relaxed)) % 12_000;
        let held: Vec<_> = (0..3)
            .filter_map(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).ok())
            .collect();
        if held.len() == 3 {
            return p;
        }
    }
}

fn demo_args() -> (Vec<String>, u16) {
    let [live, preview, admin] = common::free_ports();
    let slot = slot_ports();
    let args = [
        "demo",
        "--live-port",
        &live.to_string(),
        "--preview-port",
        &preview.to_string(),
        "--admin-port",
        &admin.to_string(),
        "--slot-port",
        &slot.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    (args, live)
}

fn served_by(port: u16) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async { common::get(&format!("http://127.0.0.1:{port}/")).await.1 })
}

#[test]
fn swap_rollback_drain_help_and_quit_as_a_user_types() {
    let (t, live) = common::or_skip!(demo_in_tmux("main", 120, 40));
    t.ready_showing(&["blue", "green", "staging", "● LIVE", "◐ PREVIEW", "○ IDLE"]);
    assert_eq!(served_by(live), "blue");

    // Pressed in the first seconds: the dialog's gate is re-checked on every poll, and `y`
    // works as soon as the third healthy check arrives.
    t.keys(&["s"]);
    let s = t.wait_for("y/Enter confirm", Duration::from_secs(20));
    assert!(
        s.contains("Swap: blue → green") && s.contains("v1.5.0"),
        "{s}"
    );
    t.keys(&["y"]);
    t.wait_for("verify ✔", Duration::from_secs(10));
    assert_eq!(
        served_by(live),
        "green",
        "curl to the live listener follows the swap"
    );
    let s = t.wait_for("live=green", Duration::from_secs(5));
    // The columns show the new roles: green is live, blue the preview.
    let row = s
        .lines()
        .find(|l| l.contains("LIVE"))
        .expect("a LIVE line")
        .to_string();
    assert!(
        row.find("◐ PREVIEW") < row.find("● LIVE"),
        "blue (left) should be PREVIEW now:\n{s}"
    );

    // Rollback during the swap's watch, as the README tells a user: the swap's watch is
    // superseded, and the screen shows the rollback's own steps, never the swap's result.
    let s = t.wait_for("watch ", Duration::from_secs(10));
    common::assert_contains(&s, "Op      Swap: blue → green");
    // (During a swap's watch, `r` is a one-key rollback: no dialog.)
    t.keys(&["r"]);
    t.wait_for("One-key rollback: green → blue", Duration::from_secs(5));
    t.live_is("blue", live, Duration::from_secs(10), "the public port");
    let s = t.wait_for("rollback: green → blue apply:", Duration::from_secs(10));
    common::assert_contains(&s, "watch superseded by rollback #");
    let superseded = s
        .lines()
        .find(|l| l.contains("watch superseded by rollback #"))
        .expect("the swap's own last line");
    common::assert_contains(superseded, "Swap: blue → green #");
    let op = s.lines().find(|l| l.contains("Op ")).expect("op line");
    common::assert_contains(op, "rollback: green → blue");
    common::assert_lacks(op, "green` is live");
    for l in s.lines().filter(|l| l.contains("rollback: green → blue")) {
        assert!(
            !l.contains("superseded") && !l.contains("`green` is live"),
            "a result of the swap under the rollback's title: {l}\n{s}"
        );
    }
    common::assert_lacks(&s, "DRIFT");
    // The rollback's own watch ends in its own result.
    t.wait_for("rollback: green → blue #", Duration::from_secs(60));
    t.wait_op(
        "DONE `blue` is live and stayed healthy",
        Duration::from_secs(60),
    );

    // Drain the idle staging slot (third column), then undrain it.
    t.keys(&["l", "l", "d"]);
    t.wait_for("Drain `staging`", Duration::from_secs(5));
    t.keys(&["y"]);
    t.wait_for("↓ DRAINING", Duration::from_secs(10));
    t.keys(&["d"]);
    t.wait_for("Undrain `staging`", Duration::from_secs(5));
    t.keys(&["y"]);
    t.wait_for("○ IDLE", Duration::from_secs(10));

    t.keys(&["?"]);
    t.wait_for("Reading the screen", Duration::from_secs(5));
    t.keys(&["Escape"]);
    t.keys(&["q"]);
    assert!(
        t.wait_gone(Duration::from_secs(30)),
        "q should end cutover (and with it the tmux session)"
    );
}

#[test]
fn at_80x24_nothing_important_is_cut_off() {
    let (t, _) = common::or_skip!(demo_in_tmux("narrow", 80, 24));
    let s = t.ready_showing(&[
        "● LIVE",
        "◐ PREVIEW",
        "○ IDLE",
        "v1.4.2",
        "v1.5.0",
        "Public",
        "s swap",
        "? help",
    ]);
    for line in s.lines() {
        assert!(
            line.chars().count() <= 80,
            "a line wider than the terminal: {line}"
        );
    }
}

#[test]
fn at_40x10_slots_page_and_the_dialog_keeps_its_keys() {
    let (t, _) = common::or_skip!(demo_in_tmux("tiny", 40, 10));
    let s = t.wait_for("slot 1 of 3", Duration::from_secs(20));
    common::assert_contains_all(&s, &["▸ blue", "? help", "q quit"]);
    t.wait_for("v1.4.2", Duration::from_secs(20));
    // → turns the page to green, whole and readable.
    t.keys(&["Right"]);
    let s = t.wait_for("slot 2 of 3 ◂ ▸", Duration::from_secs(5));
    common::assert_contains(&s, "▸ green");
    t.wait_for("v1.5.0", Duration::from_secs(20));
    t.keys(&["s"]);
    let s = t.wait_for("y/Enter confirm · n/Esc cancel", Duration::from_secs(10));
    common::assert_contains(&s, "Swap: blue → green");
    for line in s.lines() {
        assert!(
            line.chars().count() <= 40,
            "a line wider than the terminal: {line}"
        );
    }
    t.keys(&["Escape"]);
    t.wait_for("slot 2 of 3", Duration::from_secs(5));
}

#[test]
fn a_broken_slot_shows_down_and_the_gate_refuses_it() {
    let (t, live) = common::or_skip!(demo_in_tmux("broken", 120, 40));
    t.wait_ready();
    // Select green (second column) and break it with the demo key.
    t.keys(&["l", "b"]);
    let s = t.wait_for("✘ down 500", Duration::from_secs(5));
    common::assert_contains(&s, "green health up → down (HTTP 500)");
    t.keys(&["s"]);
    let s = t.wait_for("F forces it (logged as FORCED)", Duration::from_secs(5));
    common::assert_contains(&s, "✘ health: `green` needs 3 healthy checks in a row");
    t.keys(&["y"]);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        served_by(live),
        "blue",
        "y must not swap past a refusing gate"
    );
    t.keys(&["Escape"]);
}

#[test]
fn no_color_draws_without_colours_and_keeps_the_labels() {
    let (coloured, _) = common::or_skip!(demo_in_tmux("colour", 120, 40));
    coloured.wait_ready();
    assert!(
        coloured.capture(true).contains("38;5;"),
        "the default theme has colours"
    );
    drop(coloured);
    let (args, _) = demo_args();
    let t = Tmux::start_with("nocolor", 120, 40, &args, &["NO_COLOR=1"]);
    t.wait_ready();
    let styled = t.capture(true);
    assert!(
        !styled.contains("38;5;") && !styled.contains("38;2;"),
        "NO_COLOR still coloured:\n{styled}"
    );
    for needle in ["● LIVE", "◐ PREVIEW", "○ IDLE", "✔ up"] {
        assert!(t.screen().contains(needle), "missing {needle}");
    }
}

/// The audit lines of a demo run in this tmux session.
fn demo_audit(t: &Tmux) -> String {
    let dir = t._state.path().join("cutover").join("demo");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("audit"))
                .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn one_key_rollback_on_a_production_demo() {
    common::or_skip!(common::require_binary("tmux"));
    let (mut args, live) = demo_args();
    args.push("--production".into());
    let t = Tmux::start("onekey", 120, 40, &args);
    t.wait_ready();
    assert_eq!(served_by(live), "blue");
    // The way forward asks for the name, as always on production.
    t.keys(&["s"]);
    t.wait_for("type the environment's name", Duration::from_secs(5));
    t.keys(&["-l", "demo"]);
    t.wait_for("Enter confirm", Duration::from_secs(20));
    t.keys(&["Enter"]);
    t.wait_for("watch ", Duration::from_secs(15));
    let s = t.live_is("green", live, Duration::from_secs(15), "the public port");
    common::assert_contains(&s, "ROLLBACK → blue v1.4.2 (no confirmation)");
    // During the watch: one key, nothing else.
    t.keys(&["r"]);
    let s = t.wait_for(
        "One-key rollback: green → blue apply:",
        Duration::from_secs(15),
    );
    assert!(
        !s.contains("type the environment's name"),
        "no dialog:\n{s}"
    );
    common::assert_contains(&s, "one-key rollback");
    t.live_is(
        "blue",
        live,
        Duration::from_secs(15),
        "one r moved the traffic back",
    );
    let audit = demo_audit(&t);
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"operation\":\"rollback\"") && l.contains("\"one_key\":true")),
        "{audit}"
    );

    // Again after the watch, inside the window.
    t.wait_op(
        "DONE `blue` is live and stayed healthy",
        Duration::from_secs(60),
    );
    t.keys(&["s"]);
    t.wait_for("type the environment's name", Duration::from_secs(5));
    t.keys(&["-l", "demo"]);
    t.wait_for("Enter confirm", Duration::from_secs(20));
    t.keys(&["Enter"]);
    t.wait_op(
        "DONE `green` is live and stayed healthy",
        Duration::from_secs(60),
    );
    assert_eq!(served_by(live), "green");
    let s = t.wait_for("(no confirmation) · 10m left", Duration::from_secs(5));
    common::assert_contains(&s, "ROLLBACK → blue v1.4.2");
    t.keys(&["r"]);
    t.wait_op("One-key rollback: green → blue", Duration::from_secs(15));
    t.live_is("blue", live, Duration::from_secs(15), "the public port");
    // After a rollback, going back again is no longer one key: the dialog asks, saying why.
    t.wait_op(
        "DONE `blue` is live and stayed healthy",
        Duration::from_secs(60),
    );
    t.keys(&["r"]);
    let s = t.wait_for("asks because", Duration::from_secs(5));
    common::assert_contains(&s, "the last switch was a rollback");
    t.keys(&["Escape"]);
    assert_eq!(served_by(live), "blue");
}

#[test]
fn sighup_ends_cutover_and_restores_the_terminal() {
    common::or_skip!(common::require_binary("tmux"));
    // The SSH session drops: cutover gets SIGHUP. The shell after it records the terminal's
    // modes and says it got the screen back.
    let (args, _) = demo_args();
    let out = tempfile::tempdir().expect("tempdir");
    let stty = out.path().join("stty");
    let cmd = format!(
        "{} {}; stty -a > {}; echo SHELL-AGAIN; read _",
        env!("CARGO_BIN_EXE_cutover"),
        args.join(" "),
        stty.display()
    );
    let t = Tmux::spawn("hup", 120, 40, &cmd, &[]);
    t.wait_ready();
    let shell = Command::new("tmux")
        .args(["list-panes", "-t", &t.session, "-F", "#{pane_pid}"])
        .output()
        .expect("list-panes");
    let shell = String::from_utf8_lossy(&shell.stdout).trim().to_string();
    let kids = Command::new("pgrep")
        .args(["-P", &shell])
        .output()
        .expect("pgrep");
    let cutover = String::from_utf8_lossy(&kids.stdout)
        .split_whitespace()
        .next()
        .expect("cutover runs under the shell")
        .to_string();
    let st = Command::new("kill")
        .args(["-HUP", &cutover])
        .status()
        .expect("kill");
    assert!(st.success());
    let s = t.wait_for("SHELL-AGAIN", Duration::from_secs(30));
    assert!(
        !s.contains("Environments"),
        "the alternate screen is left:\n{s}"
    );
    let modes = std::fs::read_to_string(&stty).expect("stty ran after cutover");
    let words: Vec<&str> = modes.split_whitespace().collect();
    for on in ["icanon", "echo", "isig"] {
        assert!(
            words.contains(&on) && !words.contains(&format!("-{on}").as_str()),
            "the terminal is left in raw mode ({on}):\n{modes}"
        );
    }
}

/// A gentle, bounded load on the live listener (about 40 requests/s, at most 3600 requests
/// and 90 s), in its own thread until stopped: (answered, failed).
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(u64, u64)>>,
}

impl Load {
    fn start(port: u16) -> Load {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("rt");
            rt.block_on(async move {
                let c = cutover::http_client()
                    .timeout(Duration::from_secs(5))
                    .build()
                    .expect("client");
                let url = format!("http://127.0.0.1:{port}/");
                // Pacing, not synchronisation: one request every 25 ms.
                let mut tick = tokio::time::interval(Duration::from_millis(25));
                let end = Instant::now() + Duration::from_secs(90);
                let (mut ok, mut failed) = (0u64, 0u64);
                for _ in 0..3600 {
                    if stopped.load(Ordering::SeqCst) || Instant::now() > end {
                        break;
                    }
                    tick.tick().await;
                    match c.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let _ = r.bytes().await;
                            ok += 1;
                        }
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (u64, u64) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("load thread"))
            .unwrap_or_default()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Each slot column's requests/s, left to right, as the screen shows them ("40 req/s · …").
fn slot_rates(s: &str) -> Option<Vec<f64>> {
    let line = s.lines().find(|l| l.contains(" req/s · "))?;
    line.split('│')
        .filter(|seg| seg.contains(" req/s"))
        .map(|seg| seg.split_whitespace().next()?.parse::<f64>().ok())
        .collect()
}

impl Tmux {
    /// Check that the slot columns' requests/s satisfy `ok` on every screen drawn over
    /// `during` (several polls): a figure that only passes by through zero does not.
    fn holds(&self, what: &str, during: Duration, ok: impl Fn(&[f64]) -> bool) {
        let t = Instant::now();
        while t.elapsed() < during {
            let s = self.screen();
            if let Some(r) = slot_rates(&s).filter(|r| r.len() == 3) {
                assert!(ok(&r), "not {what}: {r:?}\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn under_load_the_traffic_moves_from_blue_to_green_at_the_swap_marker() {
    let (t, live) = common::or_skip!(demo_in_tmux("traffic", 120, 40));
    t.wait_ready();
    let load = Load::start(live);
    // Blue is live: its column counts the load; green and staging, nothing (cutover's own
    // probes of the public and preview URLs are never counted as traffic).
    let s = t.wait_until(
        "blue's requests/s above zero",
        Duration::from_secs(30),
        |s| slot_rates(s).is_some_and(|r| r.len() == 3 && r[0] > 0.0),
    );
    assert!(
        s.contains("Requests/s by slot"),
        "the chart is on screen:\n{s}"
    );
    assert!(s.contains("Events"), "beside the event pane:\n{s}");
    t.holds("green and staging at zero", Duration::from_secs(3), |r| {
        r[1] == 0.0 && r[2] == 0.0
    });
    t.keys(&["s"]);
    t.wait_for("y/Enter confirm", Duration::from_secs(20));
    t.keys(&["y"]);
    // Within a few polls (one a second in the demo) the traffic has moved: green counts it,
    // blue falls to zero, and the chart marks the swap.
    let s = t.wait_until(
        "green's requests/s above zero and blue's at zero",
        Duration::from_secs(20),
        |s| slot_rates(s).is_some_and(|r| r.len() == 3 && r[1] > 0.0 && r[0] == 0.0),
    );
    common::assert_contains(&s, "live=green");
    // And it stays there: blue serves the preview URL, whose probes the router counts and
    // cutover takes off again.
    t.holds("blue at zero", Duration::from_secs(3), |r| r[0] == 0.0);
    assert!(
        s.contains("┊swap") || s.contains("swap┊"),
        "the chart marks the swap:\n{s}"
    );
    let chart_row = s
        .lines()
        .find(|l| l.contains("● green") && l.contains("/s"))
        .expect("green's figure beside the chart");
    assert!(!chart_row.contains(" 0/s"), "{chart_row}\n{s}");
    let (answered, failed) = load.finish();
    assert!(answered > 0, "the load got answers");
    assert_eq!(failed, 0, "no request failed across the swap");
}
