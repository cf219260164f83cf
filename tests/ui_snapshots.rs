//! Whole-screen snapshots of every panel state, drawn on ratatui's TestBackend with an injected
//! time and screen size. The text is snapshotted with insta; colours are checked on the cells.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::time::{Duration, SystemTime};

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use cutover::app::{App, Event, RouterView};
use cutover::config;
use cutover::envview::Seen;
use cutover::model::{
    AdminState, Health, ProbeError, ProbeResult, Role, RouterState, SlotRoute, VersionInfo,
};
use cutover::probe::UrlProbe;
use cutover::state::EnvMemory;
use cutover::theme::Theme;

const CONFIG: &str = r#"
[[environment]]
name = "shop-prod"
public_url = "http://127.0.0.1:8080/"
preview_url = "http://127.0.0.1:8081/"

[[environment.slot]]
name = "blue"
address = "http://127.0.0.1:9101"
version_pointer = "/version"

[[environment.slot]]
name = "green"
address = "http://127.0.0.1:9102"
version_pointer = "/version"

[[environment.slot]]
name = "staging"
address = "http://127.0.0.1:9103"
version_pointer = "/version"

[[environment]]
name = "api-prod"

[[environment.slot]]
name = "blue"
address = "http://127.0.0.1:9201"
"#;

fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

fn up(version: &str, ms: u64) -> ProbeResult {
    ProbeResult {
        at: t0(),
        health: Health::Up,
        status: Some(200),
        latency: Some(Duration::from_millis(ms)),
        error: None,
        version: Some(VersionInfo {
            version: version.into(),
            commit: Some("3f9a2c1".into()),
            built: None,
        }),
        version_error: None,
    }
}

fn down(version: &str) -> ProbeResult {
    ProbeResult {
        health: Health::Down,
        status: Some(500),
        error: Some(ProbeError::Status(500)),
        ..up(version, 4)
    }
}

fn router_state(live: &str, preview: &str) -> RouterState {
    let mut s = RouterState {
        live: Some(live.into()),
        preview: Some(preview.into()),
        ..Default::default()
    };
    for (n, inflight, req) in [("blue", 3, 1204), ("green", 0, 87), ("staging", 0, 0)] {
        s.slots.insert(
            n.into(),
            SlotRoute {
                admin: AdminState::Ready,
                sessions: Some(inflight),
                requests: Some(req),
                errors: Some(0),
                ..Default::default()
            },
        );
    }
    s
}

/// An app as it looks after a few polls: blue live, green preview, staging idle.
fn app_with(memory: EnvMemory) -> App {
    let mut app = fresh_app_with(memory);
    for i in 0..12u64 {
        app.update(Event::Tick(t0() + Duration::from_secs(i)));
        seen_probe(&mut app, 0, up("1.4.2", 2 + i % 4));
        seen_probe(&mut app, 1, up("1.5.0", 3 + i % 3));
        seen_probe(&mut app, 2, up("1.6.0-rc1", 5));
    }
    seen_public_url(
        &mut app,
        "http://127.0.0.1:8080/version",
        Some("1.4.2"),
        t0(),
    );
    app.update(Event::Tick(t0() + Duration::from_secs(75)));
    app
}

/// Router `router` of the first environment answered `result` at `at`.
fn seen_router(app: &mut App, router: usize, result: Result<RouterState, String>, at: SystemTime) {
    app.update(Event::Seen(Seen::Router {
        env: 0,
        router,
        result,
        at,
    }));
}

/// Slot `slot` of the first environment was probed: `result`.
fn seen_probe(app: &mut App, slot: usize, result: ProbeResult) {
    app.update(Event::Seen(Seen::Probe {
        env: 0,
        slot,
        result,
    }));
}

/// The first environment's public URL `url` answered 200 from blue (with `version`, where
/// given) at `at`.
fn seen_public_url(app: &mut App, url: &str, version: Option<&str>, at: SystemTime) {
    let version = version.map(|v| VersionInfo {
        version: v.into(),
        commit: None,
        built: None,
    });
    app.update(Event::Seen(Seen::Url {
        env: 0,
        preview: false,
        result: UrlProbe {
            url: url.into(),
            status: Some(200),
            version,
            slot_header: Some("blue".into()),
            error: None,
            at,
        },
    }));
}

/// The current requests/s of slot `slot` of the first environment.
fn rps(app: &App, slot: usize) -> Option<f64> {
    app.envs[0].slots[slot].traffic.current().map(|c| c.rps)
}

/// Another router in the first environment, not read yet.
fn add_router(app: &mut App, name: &str, kind: &str) {
    app.envs[0].routers.push(RouterView {
        name: name.into(),
        kind: kind.into(),
        state: None,
        error: None,
        at: None,
    });
}

/// [`app_with`] a fresh memory, with the swap dialog open (`s`).
fn swap_dialog() -> App {
    let mut app = app_with(EnvMemory::default());
    key(&mut app, 's');
    app
}

fn screen(app: &mut App, w: u16, h: u16) -> (String, ratatui::buffer::Buffer) {
    common::draw_screen(app, w, h)
}

fn key(app: &mut App, c: char) {
    app.update(Event::Key(KeyEvent::new(
        KeyCode::Char(c),
        KeyModifiers::NONE,
    )));
}

/// The position of the first occurrence of `needle` on screen.
fn find(text: &str, needle: &str) -> Option<(u16, u16)> {
    for (y, line) in text.lines().enumerate() {
        if let Some(bx) = line.find(needle) {
            let x = line[..bx].chars().count();
            return Some((x as u16, y as u16));
        }
    }
    None
}

/// The screen of `size` (width, height), which must show every one of `needles`: its text.
#[track_caller]
fn shows(app: &mut App, (w, h): (u16, u16), needles: &[&str]) -> String {
    let (text, _) = screen(app, w, h);
    common::assert_contains_all(&text, needles);
    text
}

/// The screen of `size`, whose text with its white space folded (lines joined, as a wrapped
/// line reads) shows every one of `needles`: the screen's text.
#[track_caller]
fn shows_wrapped(app: &mut App, (w, h): (u16, u16), needles: &[&str]) -> String {
    let (text, _) = screen(app, w, h);
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for needle in needles {
        assert!(flat.contains(needle), "missing {needle}:\n{text}");
    }
    text
}

/// `rights` presses of → on the 80x24 screen: the page then shows the slots `names` and every
/// one of `needles`. The screen's text.
#[track_caller]
fn page_after(app: &mut App, rights: usize, names: [&str; 3], needles: &[&str]) -> String {
    for _ in 0..rights {
        press(app, KeyCode::Right);
    }
    let (text, _) = screen(app, 80, 24);
    let shown: Vec<String> = slot_columns(&text).into_iter().map(|(n, _)| n).collect();
    assert_eq!(shown, names, "{text}");
    common::assert_contains_all(&text, needles);
    text
}

/// [`shows`], and the screen is the snapshot `name`: its text.
#[track_caller]
fn snapshot_shows(app: &mut App, size: (u16, u16), needles: &[&str], name: &str) -> String {
    let text = shows(app, size, needles);
    insta::assert_snapshot!(name, text.clone());
    text
}

/// The foreground colour of the first occurrence of `needle` on screen.
fn fg_of(text: &str, buf: &ratatui::buffer::Buffer, needle: &str) -> ratatui::style::Color {
    let (x, y) = find(text, needle).unwrap_or_else(|| panic!("no `{needle}` on screen:\n{text}"));
    buf[(x, y)].fg
}

/// The dark theme's colour of the live role.
fn live_fg() -> ratatui::style::Color {
    Theme::dark().role(Role::Live).fg.expect("colour")
}

#[test]
fn healthy_environment_shows_three_columns_with_roles_health_versions() {
    let mut app = app_with(EnvMemory::default());
    let (text, buf) = screen(&mut app, 120, 40);
    common::assert_contains_all(
        &text,
        &[
            "● LIVE",
            "◐ PREVIEW",
            "○ IDLE",
            "✔ up",
            "v1.4.2",
            "v1.5.0",
            "v1.6.0-rc1",
            "→ v1.4.2",
        ],
    );
    // Colour is a second signal, not the only one: LIVE carries the live role's style.
    assert_eq!(fg_of(&text, &buf, "LIVE"), live_fg());
    insta::assert_snapshot!("healthy", text);
}

#[test]
fn a_down_slot_is_shown_with_its_status_and_logged() {
    let mut app = app_with(EnvMemory::default());
    seen_probe(&mut app, 1, down("1.5.0"));
    let (text, buf) = screen(&mut app, 120, 40);
    common::assert_contains(&text, "✘ down 500");
    common::assert_contains(&text, "green health up → down (HTTP 500)");
    assert_eq!(
        fg_of(&text, &buf, "✘ down"),
        Theme::dark().health(Health::Down).fg.expect("colour")
    );
    insta::assert_snapshot!("one_slot_down", text);
}

#[test]
fn drift_is_a_visible_warning() {
    let mut app = app_with(EnvMemory {
        previous_live: Some("blue".into()),
        last_set_live: Some("green".into()),
        ..Default::default()
    });
    snapshot_shows(
        &mut app,
        (120, 40),
        &[
            "DRIFT: the router sends live traffic to `blue`, but cutover last set `green`",
            "⚠ 1 warning",
        ],
        "drift",
    );
}

#[test]
fn routers_that_disagree_are_a_loud_warning() {
    let mut app = app_with(EnvMemory::default());
    add_router(&mut app, "edge-2", "haproxy");
    seen_router(&mut app, 1, Ok(router_state("green", "blue")), t0());
    snapshot_shows(
        &mut app,
        (120, 40),
        &[
            "ROUTERS DISAGREE: `edge` → blue, `edge-2` → green",
            "edge-2 (haproxy)  live=green",
        ],
        "fleet_disagreement",
    );
}

#[test]
fn narrow_terminal_folds_the_environment_list_and_keeps_the_roles() {
    let mut app = app_with(EnvMemory::default());
    let (text, _) = screen(&mut app, 80, 24);
    common::assert_lacks(&text, "Environments");
    common::assert_contains_all(&text, &["LIVE", "PREVIEW", "IDLE", "shop-prod"]);
    insta::assert_snapshot!("narrow_80x24", text);
}

#[test]
fn before_the_first_poll_everything_is_unknown() {
    let cfg = config::parse(CONFIG, std::path::Path::new("snap.toml")).expect("config");
    let mut app = App::new(cfg, Theme::dark(), vec![], t0());
    snapshot_shows(
        &mut app,
        (120, 40),
        &["? UNKNOWN", "… unknown", "waiting for the first answer"],
        "startup",
    );
}

#[test]
fn help_overlay_lists_every_key_from_the_keymap() {
    let mut app = app_with(EnvMemory::default());
    key(&mut app, '?');
    let (text, _) = screen(&mut app, 120, 40);
    for a in cutover::keymap::Action::ALL.iter().filter(|a| !a.is_demo()) {
        assert!(text.contains(a.name()), "help misses {}:\n{text}", a.name());
    }
    insta::assert_snapshot!("help", text);
    key(&mut app, 'x');
    let (text, _) = screen(&mut app, 120, 40);
    assert!(!text.contains("Reading the screen"), "help did not close");
}

#[test]
fn swap_asks_with_from_to_versions_and_the_gate() {
    let mut app = swap_dialog();
    snapshot_shows(
        &mut app,
        (120, 40),
        &[
            "Swap: blue → green",
            "✔ health: last 3 checks healthy",
            "y/Enter confirm",
        ],
        "confirm_swap",
    );
    // Esc cancels and nothing runs.
    let fx = app.update(Event::Key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE)));
    assert!(fx.is_empty());
}

#[test]
fn a_refusing_gate_offers_force_and_y_does_nothing() {
    let mut app = app_with(EnvMemory::default());
    seen_probe(&mut app, 1, down("1.5.0"));
    key(&mut app, 's');
    let text = shows(
        &mut app,
        (120, 40),
        &["✘ health: `green` needs 3 healthy checks in a row"],
    );
    assert!(
        text.contains("F forces it (logged as FORCED)") && text.contains("n/Esc cancels"),
        "{text}"
    );
    insta::assert_snapshot!("confirm_refused", text);
    let fx = app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('y'),
        KeyModifiers::NONE,
    )));
    assert!(fx.is_empty(), "y must not run a refused swap");
    let fx = app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('F'),
        KeyModifiers::SHIFT,
    )));
    match fx.as_slice() {
        [cutover::app::Effect::RunOp { req, .. }] => assert!(req.force),
        other => panic!("F should run a forced swap, got {other:?}"),
    }
}

#[test]
fn read_only_refuses_every_action_key() {
    let mut app = app_with(EnvMemory::default());
    app.read_only = true;
    for c in ['s', 'r', 'd', 'm'] {
        let fx = {
            key(&mut app, c);
            matches!(app.overlay, cutover::app::Overlay::None)
        };
        assert!(fx, "key {c} opened a dialog in read-only mode");
        let (text, _) = screen(&mut app, 120, 40);
        assert!(text.contains("read-only"), "key {c}:\n{text}");
    }
}

#[test]
fn type_name_confirmation_needs_the_exact_name() {
    let mut app = app_with(EnvMemory::default());
    app.envs[0].config.production = true;
    key(&mut app, 's');
    let enter = || Event::Key(KeyEvent::new(KeyCode::Enter, KeyModifiers::NONE));
    assert!(
        app.update(enter()).is_empty(),
        "Enter without the name must not act"
    );
    for c in "shop-prod".chars() {
        key(&mut app, c);
    }
    shows(
        &mut app,
        (120, 40),
        &["type the environment's name: shop-prod"],
    );
    assert_eq!(app.update(enter()).len(), 1, "the typed name confirms");
}

#[test]
fn light_theme_draws_with_its_own_colours() {
    let mut app = app_with(EnvMemory::default());
    app.theme = Theme::load("light").expect("light");
    let (text, buf) = screen(&mut app, 120, 40);
    let light = Theme::load("light").expect("light");
    let live = fg_of(&text, &buf, "LIVE");
    assert_eq!(live, light.role(Role::Live).fg.expect("colour"));
    assert_ne!(live, live_fg());
}

fn press(app: &mut App, code: KeyCode) -> Vec<cutover::app::Effect> {
    app.update(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// Open the command line (`:`) or the filter (`/`), type `s` and complete it with Tab.
fn complete(app: &mut App, opener: char, s: &str) {
    key(app, opener);
    typed(app, s);
    press(app, KeyCode::Tab);
}

fn typed(app: &mut App, s: &str) {
    for c in s.chars() {
        key(app, c);
    }
}

#[test]
fn command_mode_completes_with_tab_and_runs() {
    let mut app = app_with(EnvMemory::default());
    complete(&mut app, ':', "en");
    assert_eq!(app.command.text.as_deref(), Some("env "));
    typed(&mut app, "ap");
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.command.text.as_deref(), Some("env api-prod "));
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.selected_env, 1);
    // Ambiguous prefixes list the choices on the command line.
    app.selected_env = 0;
    complete(&mut app, ':', "r");
    shows(&mut app, (120, 40), &[":roll▏   rollback  rolling"]);
    press(&mut app, KeyCode::Esc);
    // :swap SLOT opens the confirm dialog for that slot.
    key(&mut app, ':');
    typed(&mut app, "swap staging");
    press(&mut app, KeyCode::Enter);
    shows(&mut app, (120, 40), &["Swap: blue → staging"]);
    press(&mut app, KeyCode::Esc);
    key(&mut app, ':');
    typed(&mut app, "frobnicate");
    press(&mut app, KeyCode::Enter);
    shows(&mut app, (120, 40), &["unknown command `:frobnicate`"]);
}

#[test]
fn the_filter_narrows_the_environment_list_and_completes() {
    let mut app = app_with(EnvMemory::default());
    complete(&mut app, '/', "ap");
    assert_eq!(app.filter.text, "api-prod");
    let text = shows(&mut app, (120, 40), &[" /api-prod▏ "]);
    common::assert_lacks(&text, "›shop-prod");
    assert_eq!(app.selected_env, 1, "selection follows the filter");
}

#[test]
fn user_key_bindings_drive_the_keys_and_the_help() {
    let src = format!("[keys]\nswap = [\"S\", \"F5\"]\nhelp = \"h\"\nleft = \"Left\"\n{CONFIG}");
    let cfg = config::parse(&src, std::path::Path::new("snap.toml")).expect("config");
    let mut app = App::new(cfg, Theme::dark(), vec![], t0());
    key(&mut app, 'h');
    let (text, _) = screen(&mut app, 120, 40);
    assert!(text.contains("S F5"), "help shows the user's keys:\n{text}");
    let bad = format!("[keys]\nswapp = \"x\"\n{CONFIG}");
    let e = config::parse(&bad, std::path::Path::new("snap.toml")).expect_err("bad keys");
    assert_eq!((e.line, e.field.as_deref()), (1, Some("keys")), "{e}");
    assert!(e.message.contains("`swapp` is not an action"), "{e}");
}

/// One reading of the first router at `t0 + secs`: `live`, and each slot's cumulative
/// (requests, errors).
fn reading(app: &mut App, secs: u64, live: &str, counts: [(u64, u64); 3]) {
    let at = t0() + Duration::from_secs(secs);
    app.update(Event::Tick(at));
    let preview = if live == "blue" { "green" } else { "blue" };
    let mut s = router_state(live, preview);
    for (name, (req, err)) in ["blue", "green", "staging"].into_iter().zip(counts) {
        if let Some(r) = s.slots.get_mut(name) {
            r.requests = Some(req);
            r.errors = Some(err);
        }
    }
    seen_router(app, 0, Ok(s), at);
}

/// Blue live under 40 requests/s for 30 s, then `s` + `y`: green takes the 40/s, one error
/// in the seconds after the switch, and the swap's watch is running.
fn swapped_under_load() -> App {
    use cutover::ops::{Progress, Step};
    let mut app = app_with(EnvMemory::default());
    let (mut blue, mut green) = (1204, 87);
    for i in 1..=30 {
        blue += 40;
        reading(&mut app, 75 + i, "blue", [(blue, 0), (green, 0), (0, 0)]);
    }
    let id = started(&mut app, 's');
    step(&mut app, &id, Step::Plan, Some(true), "blue → green");
    step(&mut app, &id, Step::Apply, Some(true), "routers switched");
    step(&mut app, &id, Step::Verify, Some(true), "ok");
    step(&mut app, &id, Step::Watch, None, "watching `green` for 30s");
    for i in 31..=45 {
        green += 40;
        let err = u64::from(i >= 35);
        reading(&mut app, 75 + i, "green", [(blue, 0), (green, err), (0, 0)]);
    }
    seen_op(
        &mut app,
        id,
        Progress::Watching {
            remaining: Duration::from_secs(16),
            detail: "green up · 1 new err · 14 checks".into(),
            errors: 1,
            checks: 14,
            passed: 14,
        },
    );
    app
}

#[test]
fn traffic_moving_during_a_swap_is_charted_with_the_swap_marked() {
    let mut app = swapped_under_load();
    assert_eq!((rps(&app, 0), rps(&app, 1)), (Some(0.0), Some(40.0)));
    assert_eq!(app.envs[0].markers.len(), 1);
    let (text, buf) = screen(&mut app, 120, 40);
    common::assert_contains_all(
        &text,
        &[
            "Requests/s by slot",
            "┊swap",
            "● green       40/s",
            "◐ blue         0/s",
            "40 req/s · 0.0% err",
            "0 req/s · 0.0% err",
            "errors since switch: 1 of 5 allowed",
            "health checks passed 14 of 14",
            "Watch swap · 16s left",
            "err/s",
            "Events",
        ],
    );
    // The error beneath the chart, after the swap marker, in green's style.
    let err_row = text
        .lines()
        .find(|l| l.contains("err/s"))
        .expect("errors row");
    let swap_row = text
        .lines()
        .find(|l| l.contains("┊swap"))
        .expect("marker row");
    let col = |l: &str, c: &str| l.find(c).map(|b| l[..b].chars().count());
    assert!(col(err_row, "█") > col(swap_row, "┊swap"), "{text}");
    let by = text
        .lines()
        .position(|l| l.contains("err/s"))
        .expect("errors row");
    let bx = col(err_row, "█").expect("the error bar");
    assert_eq!(buf[(bx as u16, by as u16)].fg, live_fg());
    // Each slot's figure (green's here) is in its role's style.
    assert_eq!(fg_of(&text, &buf, "40 req/s"), live_fg());
    // Operation ids are random.
    let id = app.envs[0].op.as_ref().expect("op").id.clone();
    insta::assert_snapshot!("traffic_swap_120x40", text.replace(&id, "<id>"));
}

#[test]
fn at_80x24_the_chart_collapses_to_each_slots_figure() {
    let mut app = swapped_under_load();
    let (text, _) = screen(&mut app, 80, 24);
    common::assert_lacks(&text, "Requests/s by slot");
    common::assert_contains(&text, "40 req/s");
    common::assert_contains(&text, "0 req/s");
    let id = app.envs[0].op.as_ref().expect("op").id.clone();
    insta::assert_snapshot!("traffic_swap_80x24", text.replace(&id, "<id>"));
}

#[test]
fn probes_of_the_public_url_are_not_counted_as_user_traffic() {
    let mut app = app_with(EnvMemory::default());
    // Two probes of the public URL went through the router to blue; no user request did.
    for i in 0..2u64 {
        seen_public_url(
            &mut app,
            "http://127.0.0.1:8080/",
            None,
            t0() + Duration::from_secs(i),
        );
    }
    // app_with's own probe, and these two: three requests the router counted on blue.
    reading(&mut app, 76, "blue", [(1204 + 3, 0), (87, 0), (0, 0)]);
    assert_eq!(rps(&app, 0), Some(0.0));
    // A user request is counted.
    reading(&mut app, 77, "blue", [(1204 + 4, 0), (87, 0), (0, 0)]);
    assert_eq!(rps(&app, 0), Some(1.0));
    // A probe sent before a reading and answered after it: the reading counted it, and it
    // comes off that reading's rates when its answer arrives.
    reading(&mut app, 78, "blue", [(1204 + 6, 0), (87, 0), (0, 0)]);
    assert_eq!(rps(&app, 0), Some(2.0));
    seen_public_url(
        &mut app,
        "http://127.0.0.1:8080/",
        None,
        t0() + Duration::from_millis(77_900),
    );
    assert_eq!(rps(&app, 0), Some(1.0));
    // The next reading owes it nothing.
    reading(&mut app, 79, "blue", [(1204 + 7, 0), (87, 0), (0, 0)]);
    assert_eq!(rps(&app, 0), Some(1.0));
}

#[test]
fn a_router_without_per_slot_counters_says_so_and_shows_the_probes() {
    let mut app = app_with(EnvMemory::default());
    app.envs[0].routers[0].kind = "nginx".into();
    let mut s = router_state("blue", "green");
    for r in s.slots.values_mut() {
        r.requests = None;
        r.errors = None;
        r.sessions = None;
    }
    for i in 0..20u64 {
        let at = t0() + Duration::from_secs(76 + i);
        app.update(Event::Tick(at));
        seen_public_url(&mut app, "http://127.0.0.1:8080/", Some("1.4.2"), at);
        seen_router(&mut app, 0, Ok(s.clone()), at);
    }
    let text = shows(
        &mut app,
        (120, 40),
        &[
            "no per-slot counters from nginx: showing cutover's own probes of the public URL",
            "no per-slot counters (nginx)",
        ],
    );
    assert!(!text.contains("req/s"), "no misleading zero: {text}");
    insta::assert_snapshot!("traffic_no_counters", text);
}

#[test]
fn a_drill_shows_a_live_chart_per_slot_and_its_counters() {
    use std::collections::BTreeMap;
    let mut app = app_with(EnvMemory::default());
    key(&mut app, 'D');
    shows(
        &mut app,
        (120, 40),
        &["Drill: 3 swap+rollback pairs under load"],
    );
    let fx = app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('y'),
        KeyModifiers::NONE,
    )));
    assert!(
        matches!(fx.as_slice(), [cutover::app::Effect::RunDrill { env: 0 }]),
        "{fx:?}"
    );
    let mut by = BTreeMap::new();
    for (i, (b, g)) in [(500u64, 0u64), (1000, 0), (1000, 600), (1000, 1300)]
        .into_iter()
        .enumerate()
    {
        by.insert("blue".to_string(), b);
        by.insert("green".to_string(), g);
        app.update(Event::Seen(Seen::DrillTick {
            env: 0,
            tick: cutover::drill::DrillTick {
                elapsed: Duration::from_millis(500 * (i as u64 + 1)),
                by_slot: by.clone(),
                failed: 0,
                switches: i / 2,
            },
        }));
    }
    let text = shows(
        &mut app,
        (120, 40),
        &["2300 answered · 0 failed · 1/6 switches"],
    );
    assert!(
        text.contains("1400/s"),
        "green's last rate (700 in half a second): {text}"
    );
    common::assert_contains(&text, "Drill (running)");
    // The drill's switch is marked on the traffic chart's time axis too.
    let marks: Vec<&str> = app.envs[0].markers.iter().map(|(_, l)| *l).collect();
    assert_eq!(marks, ["drill"], "one switch so far");
    insta::assert_snapshot!("drill_running", text);
}

/// A fresh app with only the router's first answer: no health history yet (the demo's first
/// second).
fn fresh_app() -> App {
    fresh_app_with(EnvMemory::default())
}

fn fresh_app_with(memory: EnvMemory) -> App {
    let cfg = config::parse(CONFIG, std::path::Path::new("snap.toml")).expect("config");
    let mut app = App::new(cfg, Theme::dark(), vec![memory], t0());
    add_router(&mut app, "edge", "embedded");
    seen_router(&mut app, 0, Ok(router_state("blue", "green")), t0());
    app
}

fn probe(app: &mut App, slot: usize, r: ProbeResult) {
    seen_probe(app, slot, r);
}

/// The swap dialog and the canary's (green selected, `c`) both show the gate and follow the
/// polls while open.
#[test]
fn the_confirm_dialogs_gate_follows_the_polls_while_it_is_open() {
    for opens in [&['s'][..], &['l', 'c'][..]] {
        let open = |app: &mut App| opens.iter().for_each(|c| key(app, *c));
        let mut app = fresh_app();
        for _ in 0..2 {
            probe(&mut app, 0, up("1.4.2", 5));
            probe(&mut app, 1, up("1.5.0", 5));
        }
        open(&mut app);
        shows(&mut app, (120, 40), &["2 of 3 so far"]);
        assert!(
            press(&mut app, KeyCode::Char('y')).is_empty(),
            "{opens:?}: the gate refuses yet"
        );
        // The third healthy check arrives while the dialog is open: y goes through at once.
        probe(&mut app, 1, up("1.5.0", 5));
        shows(&mut app, (120, 40), &["✔ health: last 3 checks healthy"]);
        let fx = press(&mut app, KeyCode::Char('y'));
        assert!(
            matches!(fx.as_slice(), [cutover::app::Effect::RunOp { .. }]),
            "{opens:?}: {fx:?}"
        );

        // The reverse: opened while the gate passes, then the slot goes down: y stops working.
        let mut app = fresh_app();
        for _ in 0..3 {
            probe(&mut app, 0, up("1.4.2", 5));
            probe(&mut app, 1, up("1.5.0", 5));
        }
        open(&mut app);
        probe(&mut app, 1, down("1.5.0"));
        shows(&mut app, (120, 40), &["✘ health"]);
        assert!(press(&mut app, KeyCode::Char('y')).is_empty(), "{opens:?}");
    }
}

#[test]
fn dialog_keys_come_from_the_key_map() {
    let mut km = std::collections::BTreeMap::new();
    km.insert("confirm".to_string(), vec!["o".to_string()]);
    km.insert("cancel".to_string(), vec!["x".to_string()]);
    let mut app = app_with(EnvMemory::default());
    app.keymap = cutover::keymap::Keymap::with_overrides(&km).expect("keys");
    key(&mut app, 's');
    shows(&mut app, (120, 40), &["o confirm · x cancel"]);
    assert!(
        press(&mut app, KeyCode::Char('y')).is_empty(),
        "y is not bound any more"
    );
    let fx = press(&mut app, KeyCode::Char('o'));
    assert!(
        matches!(fx.as_slice(), [cutover::app::Effect::RunOp { .. }]),
        "{fx:?}"
    );
}

/// A swap confirmed in the dialog and planned (blue → green), and its gate passed if `gated`:
/// the app and the operation's id.
fn swap_planned(gated: bool) -> (App, String) {
    use cutover::ops::Step;
    let mut app = swap_dialog();
    let id = confirmed(&mut app);
    step(&mut app, &id, Step::Plan, Some(true), "blue → green");
    if gated {
        step(&mut app, &id, Step::Gate, Some(true), "all checks passed");
    }
    (app, id)
}

/// `key` opens an operation's dialog and `y` confirms it: the id of the operation started.
fn started(app: &mut App, key_: char) -> String {
    key(app, key_);
    confirmed(app)
}

/// `y` in the open dialog: the id of the operation it starts.
fn confirmed(app: &mut App) -> String {
    op_id(&press(app, KeyCode::Char('y')))
}

fn op_id(fx: &[cutover::app::Effect]) -> String {
    match fx {
        [cutover::app::Effect::RunOp { req, .. }] => req.id.clone(),
        other => panic!("no operation started: {other:?}"),
    }
}

/// The operation `id` is switching the live slot to green (its apply step under way).
fn switching_to_green(app: &mut App, id: &str) {
    let apply = cutover::ops::Step::Apply;
    step(app, id, apply, None, "switching live to `green`");
}

/// The operation `id` switched the routers to green (its apply step done).
fn switched_to_green(app: &mut App, id: &str) {
    let apply = cutover::ops::Step::Apply;
    step(app, id, apply, Some(true), "routers switched to `green`");
}

/// The operation `id` of the first environment said `progress`.
fn seen_op(app: &mut App, id: impl Into<String>, progress: cutover::ops::Progress) {
    app.update(Event::Seen(Seen::Op {
        env: 0,
        id: id.into(),
        progress,
    }));
}

fn step(app: &mut App, id: &str, step: cutover::ops::Step, ok: Option<bool>, msg: &str) {
    seen_op(
        app,
        id,
        cutover::ops::Progress::Step {
            step,
            ok,
            message: msg.into(),
        },
    );
}

#[test]
fn q_during_apply_waits_for_the_step_and_a_second_q_quits_now() {
    use cutover::ops::Step;
    let (mut app, id) = swap_planned(false);
    switching_to_green(&mut app, &id);
    assert!(press(&mut app, KeyCode::Char('q')).is_empty());
    assert!(!app.should_quit);
    let status = app.status.clone().expect("status").1;
    common::assert_contains(&status, "quits when that step ends");
    // The step ends (verify, then the watch begins): cutover quits.
    step(&mut app, &id, Step::Apply, Some(true), "routers switched");
    step(&mut app, &id, Step::Verify, None, "reading back");
    assert!(
        !app.should_quit,
        "verify belongs to the change: a failed one switches back"
    );
    step(&mut app, &id, Step::Verify, Some(true), "ok");
    step(&mut app, &id, Step::Watch, None, "watching");
    assert!(app.should_quit);

    // A second q quits at once.
    let mut app = swap_dialog();
    let id = confirmed(&mut app);
    step(&mut app, &id, Step::Apply, None, "switching");
    press(&mut app, KeyCode::Char('q'));
    let fx = press(&mut app, KeyCode::Char('q'));
    assert!(
        matches!(fx.as_slice(), [cutover::app::Effect::QuitNow]),
        "{fx:?}"
    );
}

#[test]
fn a_rollback_during_a_watch_shows_only_its_own_steps() {
    use cutover::ops::{Outcome, Progress, Step, Verdict};
    let mut app = app_with(EnvMemory {
        previous_live: Some("green".into()),
        ..Default::default()
    });
    let swap = started(&mut app, 's');
    step(
        &mut app,
        &swap,
        Step::Watch,
        None,
        "watching `green` for 60s",
    );
    let rollback = started(&mut app, 'r');
    assert_ne!(swap, rollback);
    // The superseded swap's last words arrive after the rollback started.
    let record = cutover::audit::AuditRecord::default();
    seen_op(
        &mut app,
        swap.clone(),
        Progress::Finished(Outcome {
            verdict: Verdict::Cancelled,
            message: format!("`green` is live; watch superseded by rollback #{rollback}"),
            record,
            marks: Vec::new(),
        }),
    );
    step(&mut app, &rollback, Step::Plan, Some(true), "green → blue");
    let op = app.envs[0].op.as_ref().expect("op");
    assert_eq!(op.id, rollback);
    assert!(op.verdict.is_none(), "the rollback is still running");
    assert!(app.envs[0].op_running());
    let (text, _) = screen(&mut app, 120, 40);
    common::assert_lacks(&text, "DRIFT");
    let events: Vec<&str> = app.log.lines.iter().map(|l| l.text.as_str()).collect();
    let superseded = events
        .iter()
        .position(|l| l.contains(&format!("#{swap} cancelled")) && l.starts_with("Swap"))
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert!(
        !events
            .iter()
            .any(|l| l.starts_with("Rollback") && l.contains("watch superseded")),
        "the swap's result is never written under the rollback's title: {events:#?}"
    );
    assert!(superseded > 0);
}

/// What cutover remembers right after a swap from green to blue `ago` before t0, green then
/// serving `served`.
fn after_swap(ago: Duration, served: &str) -> EnvMemory {
    EnvMemory {
        previous_live: Some("green".into()),
        previous_live_version: Some(served.into()),
        last_set_live: Some("blue".into()),
        switched_at: Some(
            (t0() - ago)
                .duration_since(SystemTime::UNIX_EPOCH)
                .expect("t")
                .as_secs(),
        ),
        last_switch: Some("swap".into()),
        ..Default::default()
    }
}

#[test]
fn rollback_is_one_key_inside_the_window_when_the_way_back_is_safe() {
    let mut app = app_with(after_swap(Duration::from_secs(120), "1.5.0"));
    let (text, _) = screen(&mut app, 120, 40);
    assert_eq!(
        text.matches("r ROLLBACK → green v1.5.0 (no confirmation) · 7m left")
            .count(),
        2,
        "the key bar and the Traffic pane say it:\n{text}"
    );
    insta::assert_snapshot!("one_key_hint", text);
    let fx = app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('r'),
        KeyModifiers::NONE,
    )));
    match fx.as_slice() {
        [cutover::app::Effect::RunOp { req, .. }] => {
            assert!(req.one_key, "marked as one-key");
            assert_eq!(req.kind, cutover::ops::OpKind::Rollback);
        }
        other => panic!("r alone must roll back: {other:?}"),
    }
    let status = app.status.clone().expect("status").1;
    common::assert_contains(&status, "ROLLING BACK to green (v1.5.0)");
    assert!(
        app.log
            .lines
            .iter()
            .any(|l| l.text.contains("One-key rollback: blue → green"))
    );
    // Pressed twice: one rollback.
    let fx = app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('r'),
        KeyModifiers::NONE,
    )));
    assert!(fx.is_empty(), "{fx:?}");
    assert!(
        app.status
            .clone()
            .expect("status")
            .1
            .contains("already rolling back")
    );
}

#[test]
fn rollback_asks_and_says_why_outside_the_window_or_when_the_old_slot_changed() {
    for (memory, why) in [
        (
            after_swap(Duration::from_secs(20 * 60), "1.5.0"),
            "outside the rollback window",
        ),
        (
            after_swap(Duration::from_secs(60), "1.4.9"),
            "`green` now runs 1.5.0, not the 1.4.9 it served",
        ),
        (
            EnvMemory {
                last_switch: Some("rollback".into()),
                ..after_swap(Duration::from_secs(60), "1.5.0")
            },
            "the last switch was a rollback",
        ),
    ] {
        let mut app = app_with(memory);
        let (text, _) = screen(&mut app, 120, 40);
        common::assert_lacks(&text, "no confirmation");
        let fx = app.update(Event::Key(KeyEvent::new(
            KeyCode::Char('r'),
            KeyModifiers::NONE,
        )));
        assert!(fx.is_empty(), "{fx:?}");
        let text = shows(&mut app, (120, 40), &["Rollback: blue → green"]);
        assert!(text.contains(why), "{why}:\n{text}");
    }
    // one_key_rollback = false: the dialog, always.
    let mut app = app_with(after_swap(Duration::from_secs(60), "1.5.0"));
    app.envs[0].config.one_key_rollback = false;
    let fx = app.update(Event::Key(KeyEvent::new(
        KeyCode::Char('r'),
        KeyModifiers::NONE,
    )));
    assert!(fx.is_empty(), "{fx:?}");
    shows(&mut app, (120, 40), &["Rollback: blue → green"]);
}

#[test]
fn a_router_error_with_credentials_is_drawn_redacted() {
    let mut app = app_with(EnvMemory::default());
    seen_router(
        &mut app,
        0,
        Err("lbctl --password argv-CCC: Authorization: Bearer tok-AAA".into()),
        t0(),
    );
    let text = shows(&mut app, (160, 40), &["lbctl --password ***"]);
    for secret in ["argv-CCC", "tok-AAA"] {
        assert!(!text.contains(secret), "{secret} is on screen:\n{text}");
    }
}

#[test]
fn the_op_line_shows_the_warmup_and_smoke_steps_and_the_event_pane_their_output() {
    use cutover::ops::Step;
    let (mut app, id) = swap_planned(true);
    step(
        &mut app,
        &id,
        Step::Warmup,
        Some(true),
        "2 paths warmed on 1 address (4 requests in 120ms); warmup_command: caches primed",
    );
    switched_to_green(&mut app, &id);
    step(
        &mut app,
        &id,
        Step::Verify,
        Some(true),
        "routers show `green` live",
    );
    step(&mut app, &id, Step::Smoke, None, "smoke-testing `green`");
    shows(&mut app, (120, 40), &["warm-up ✔ apply ✔ verify ✔ smoke …"]);
    step(
        &mut app,
        &id,
        Step::Smoke,
        Some(false),
        "smoke: `./login-test` exited with 1: login failed for alice",
    );
    let text = shows(&mut app, (120, 40), &["smoke ✘", "login failed for alice"]);
    // The operation's id is new on every run.
    let text = text.replace(&format!("#{id}"), "#op-id000");
    insta::assert_snapshot!("op_with_warmup_and_smoke", text);
}

#[test]
fn after_a_failed_warmup_the_dialog_offers_force_past_it() {
    use cutover::ops::{Outcome, Progress, Step, Verdict};
    let mut app = swap_dialog();
    let (text, _) = screen(&mut app, 120, 40);
    common::assert_lacks(&text, "failed warm-up");
    assert!(
        press(&mut app, KeyCode::Char('F')).is_empty(),
        "the gate passes: nothing to force yet"
    );
    let id = confirmed(&mut app);
    step(
        &mut app,
        &id,
        Step::Warmup,
        Some(false),
        "refused: the warm-up of `green` failed",
    );
    seen_op(
        &mut app,
        id.clone(),
        Progress::Finished(Outcome {
            verdict: Verdict::Refused,
            message: "refused: the warm-up of `green` failed".into(),
            record: cutover::audit::AuditRecord::default(),
            marks: Vec::new(),
        }),
    );
    key(&mut app, 's');
    shows(
        &mut app,
        (120, 40),
        &["F forces past the failed warm-up (logged as FORCED)"],
    );
    match press(&mut app, KeyCode::Char('F')).as_slice() {
        [cutover::app::Effect::RunOp { req, .. }] => assert!(req.force, "{req:?}"),
        other => panic!("F did not force: {other:?}"),
    }
}

/// An environment of 16 slots (s01 live, s02 preview, the rest idle), all up, polled a few times.
fn sixteen_slots() -> App {
    let mut text = String::from("[[environment]]\nname = \"fleet\"\n");
    for i in 1..=16 {
        text.push_str(&format!(
            "\n[[environment.slot]]\nname = \"s{i:02}\"\naddress = \"http://127.0.0.1:{}\"\n",
            9300 + i
        ));
    }
    let cfg = config::parse(&text, std::path::Path::new("snap.toml")).expect("config");
    let mut app = App::new(cfg, Theme::dark(), vec![EnvMemory::default()], t0());
    add_router(&mut app, "edge", "embedded");
    let mut state = RouterState {
        live: Some("s01".into()),
        preview: Some("s02".into()),
        ..Default::default()
    };
    for i in 1..=16 {
        state.slots.insert(
            format!("s{i:02}"),
            SlotRoute {
                admin: AdminState::Ready,
                sessions: Some(i),
                requests: Some(100 * i),
                errors: Some(0),
                ..Default::default()
            },
        );
    }
    seen_router(&mut app, 0, Ok(state), t0());
    for s in 0..16 {
        for _ in 0..3 {
            probe(&mut app, s, up(&format!("2.{s}.0"), 4));
        }
    }
    app.update(Event::Tick(t0() + Duration::from_secs(75)));
    app
}

/// The slot columns drawn on the screen's second line: each title's name and the column's width.
fn slot_columns(text: &str) -> Vec<(String, usize)> {
    let row = text.lines().nth(1).expect("a slot row");
    row.split('┐')
        .filter(|c| c.contains('┌'))
        .map(|c| {
            let name = c
                .trim_start_matches(|ch: char| ch != '┌')
                .trim_matches(|ch: char| "┌─ ▸".contains(ch))
                .to_string();
            (name, c.chars().count() + 1)
        })
        .filter(|(name, _)| !name.starts_with("Environments"))
        .collect()
}

#[test]
fn sixteen_slots_are_paged_with_the_selection_never_shrunk() {
    let mut app = sixteen_slots();
    let (text, _) = screen(&mut app, 80, 24);
    let cols = slot_columns(&text);
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["s01", "s02", "s03"], "{text}");
    for (name, w) in &cols {
        assert!(
            *w >= cutover::ui::SLOT_MIN_WIDTH as usize,
            "{name} is {w} wide:\n{text}"
        );
    }
    common::assert_contains_all(
        &text,
        &[
            "● LIVE",
            "◐ PREVIEW",
            "○ IDLE",
            "✔ up 200 4ms",
            "v2.0.0",
            "v2.2.0",
            "router ready",
            "slots 1–3 of 16   ▸",
        ],
    );
    insta::assert_snapshot!("sixteen_slots_80x24", text);

    // → onto the fourth slot turns the page; the selection is drawn on it.
    let text = page_after(
        &mut app,
        4,
        ["s04", "s05", "s06"],
        &["▸ s05", "slots 4–6 of 16 ◂ ▸"],
    );
    insta::assert_snapshot!("sixteen_slots_80x24_page_2", text);

    // The last page is whole: it ends at the last slot.
    page_after(
        &mut app,
        20,
        ["s14", "s15", "s16"],
        &["▸ s16", "slots 14–16 of 16 ◂  "],
    );

    // A click selects the slot under it, not the one at that index from the start.
    let click = cutover::ui::click(
        &app,
        crossterm::event::MouseEvent {
            kind: crossterm::event::MouseEventKind::Down(crossterm::event::MouseButton::Left),
            column: 2,
            row: 3,
            modifiers: KeyModifiers::NONE,
        },
    )
    .expect("a click on a slot column");
    app.update(click);
    assert_eq!(app.selected_slot, 13);

    // At 120 columns (the issue's case: 4-character columns) the environment list stays and
    // three readable columns are shown; at 40 one.
    let (text, _) = screen(&mut app, 120, 40);
    let cols = slot_columns(&text);
    assert!(cols.iter().all(|(_, w)| *w >= 26), "{cols:?}\n{text}");
    common::assert_contains(&text, "slots 13–15 of 16 ◂ ▸");
    let text = shows(&mut app, (40, 24), &["slot 14 of 16 ◂ ▸"]);
    assert_eq!(slot_columns(&text), [("s14".to_string(), 40)], "{text}");
}

#[test]
fn at_40x10_the_confirm_dialog_keeps_its_keys() {
    let mut app = swap_dialog();
    snapshot_shows(
        &mut app,
        (40, 10),
        &[
            "Swap: blue → green",
            "from blue      v1.4.2",
            "✔ health: last 3 checks healthy",
            "y/Enter confirm · n/Esc cancel",
        ],
        "confirm_40x10",
    );

    // A refusing gate: the failing check and the longer key line (wrapped) stay; passing
    // checks are counted on one line instead.
    seen_probe(&mut app, 1, down("1.5.0"));
    let text = shows_wrapped(
        &mut app,
        (40, 10),
        &[
            "✘ health: `green` needs 3",
            "F forces it",
            "(logged as FORCED)",
            "n/Esc cancels",
        ],
    );
    insta::assert_snapshot!("confirm_refused_40x10", text);

    // Production: the name to type and the keys.
    let mut app = app_with(EnvMemory::default());
    app.envs[0].config.production = true;
    key(&mut app, 's');
    for c in "shop".chars() {
        key(&mut app, c);
    }
    shows_wrapped(
        &mut app,
        (40, 10),
        &[
            "type the environment's name: shop▏",
            "type the name, then y/Enter confirm",
            "n/Esc cancel",
        ],
    );
}

#[test]
fn at_40x10_the_main_screen_draws_every_panel_without_garbling() {
    let mut app = app_with(EnvMemory::default());
    snapshot_shows(
        &mut app,
        (40, 10),
        &[
            "shop-prod",
            "11:07:55 UTC",
            "● LIVE",
            "✔ up",
            "v1.4.2",
            "slot 1 of 3",
            "Events",
            "s swap",
            "? help",
            "q quit",
        ],
        "main_40x10",
    );

    // Warnings take the clock's place rather than cutting it.
    let mut app = app_with(EnvMemory {
        previous_live: Some("blue".into()),
        last_set_live: Some("green".into()),
        ..Default::default()
    });
    app.envs[0].config.production = true;
    let (text, _) = screen(&mut app, 40, 10);
    let header = text.lines().next().expect("header");
    common::assert_contains_all(header, &["shop-prod", "PRODUCTION", "⚠ 1 warning"]);
    assert!(!header.contains("UTC"), "a cut clock:\n{text}");
}

#[test]
fn no_screen_size_panics_or_loses_the_dialogs_keys() {
    for (w, h) in (1..=127u16)
        .step_by(9)
        .flat_map(|w| (1..=26u16).map(move |h| (w, h)))
    {
        let mut fleet = sixteen_slots();
        for _ in 0..7 {
            press(&mut fleet, KeyCode::Right);
        }
        screen(&mut fleet, w, h);
        let mut app = app_with(EnvMemory::default());
        screen(&mut app, w, h);
        key(&mut app, '?');
        screen(&mut app, w, h);
        key(&mut app, 'x');
        key(&mut app, 's');
        let (text, _) = screen(&mut app, w, h);
        if w >= 34 && h >= 3 {
            let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                flat.contains("y/Enter confirm · n/Esc cancel"),
                "{w}x{h}:\n{text}"
            );
        }
    }
}

#[test]
fn the_swap_dialog_says_when_the_live_version_is_unknown() {
    let mut app = app_with(EnvMemory::default());
    app.update(Event::Seen(Seen::Probe {
        env: 0,
        slot: 0,
        result: ProbeResult {
            version: None,
            version_error: Some(ProbeError::Body("no /version in the body".into())),
            ..up("", 4)
        },
    }));
    key(&mut app, 's');
    let text = shows(
        &mut app,
        (120, 40),
        &["✔ new version: live slot's version unknown: cannot compare"],
    );
    common::assert_lacks(&text, "differs from live");
}

#[test]
fn a_router_that_counts_no_errors_shows_a_question_mark_not_zero() {
    let mut app = app_with(EnvMemory::default());
    app.envs[0].routers[0].kind = "apache".into();
    for (i, req) in [(76u64, 1204u64 + 10), (77, 1204 + 30)] {
        let at = t0() + Duration::from_secs(i);
        app.update(Event::Tick(at));
        let mut s = router_state("blue", "green");
        for r in s.slots.values_mut() {
            r.errors = None;
        }
        if let Some(r) = s.slots.get_mut("blue") {
            r.requests = Some(req);
            r.latency_ms = Some(0);
        }
        if let Some(r) = s.slots.get_mut("green") {
            r.latency_ms = Some(12);
        }
        seen_router(&mut app, 0, Ok(s), at);
    }
    let text = shows(
        &mut app,
        (120, 40),
        &["20 req/s · ? err · <1ms", "0 req/s · ? err · 12ms"],
    );
    common::assert_lacks(&text, "0.0% err");
}

#[test]
fn when_the_router_stops_answering_the_figures_say_so_instead_of_standing_still() {
    let mut app = swapped_under_load();
    seen_router(
        &mut app,
        0,
        Err("connection refused".into()),
        t0() + Duration::from_secs(121),
    );
    let (text, _) = screen(&mut app, 120, 40);
    common::assert_lacks(&text, "40 req/s");
    common::assert_contains(&text, "req/s ? (router not read)");
    // It answers again: the rates start from a fresh baseline, not from before the gap.
    let mut s = router_state("green", "blue");
    if let Some(r) = s.slots.get_mut("green") {
        r.requests = Some(1_000_000);
    }
    for i in [122u64, 123] {
        seen_router(&mut app, 0, Ok(s.clone()), t0() + Duration::from_secs(i));
    }
    let green = &app.envs[0].slots[1].traffic;
    assert!(!green.stale);
    assert_eq!(green.current().map(|c| c.rps), Some(0.0));
}

/// The screen (120×40) after the first router of a fresh app reported `st`.
fn drawn_after(st: cutover::model::RouterState) -> String {
    let mut app = app_with(EnvMemory::default());
    seen_router(&mut app, 0, Ok(st), t0());
    screen(&mut app, 120, 40).0
}

/// A pause of the live traffic: the held requests counted on screen, and the 503s once the
/// pause's bound was passed.
#[test]
fn a_pause_shows_its_held_and_refused_requests() {
    let mut st = router_state("blue", "green");
    st.pause = Some(cutover::model::PauseState {
        paused: true,
        held: 17,
        refused: 3,
    });
    let text = drawn_after(st);
    common::assert_contains(&text, "PAUSED: 17 requests held; H resumes");
    common::assert_contains(&text, "3 requests got 503");
    insta::assert_snapshot!("state_paused", text);
}

/// Every state an operator can meet during a cutover, snapshotted: maintenance on, the lock
/// held by another operator, an interrupted operation, and a swap that failed, rolled back by
/// itself, or raised the alarm.
#[test]
fn the_states_an_operator_meets_are_drawn() {
    use cutover::ops::{Outcome, Progress, Verdict};
    // Maintenance on.
    let mut st = router_state("blue", "green");
    st.maintenance = Some(cutover::model::MaintenanceMode::Page);
    let text = drawn_after(st);
    common::assert_contains(&text, "MAINTENANCE is on");
    insta::assert_snapshot!("state_maintenance", text);

    // The lock held by another operator, and what a dead one left half-done.
    let mut app = app_with(EnvMemory::default());
    app.update(Event::Seen(Seen::Lock {
        env: 0,
        holder: Some(cutover::state::LockInfo {
            holder: "alice@laptop-2".into(),
            pid: 4242,
            operation: "swap".into(),
            op_id: "a1b2c3d4".into(),
            since: "2026-11-20T09:30:00Z".into(),
        }),
        interrupted: Some(cutover::state::Journal {
            op_id: "0badf00d".into(),
            operation: "swap".into(),
            action: "swap blue → green".into(),
            environment: "shop-prod".into(),
            user: "bob@bastion".into(),
            pid: 77,
            started: "2026-11-20T03:12:40Z".into(),
            slots: cutover::state::FromTo {
                from: Some("blue".into()),
                to: Some("green".into()),
            },
            target: None,
            routers: vec![cutover::state::JournalRouter {
                name: "edge".into(),
                before: Some("blue".into()),
                result: "changed".into(),
            }],
        }),
    }));
    snapshot_shows(
        &mut app,
        (120, 40),
        &[
            "LOCKED by alice@laptop-2",
            "INTERRUPTED swap blue → green at 03:12:40",
        ],
        "state_locked_and_interrupted",
    );
    key(&mut app, 's');
    shows(&mut app, (120, 40), &["T takes the lock over"]);

    // A swap's three bad endings.
    for (verdict, message, name) in [
        (
            Verdict::Failed,
            "the router accepted the switch but did not change: `edge` shows blue live after 10.0s",
            "state_failed",
        ),
        (
            Verdict::RolledBack,
            "`green` failed 2 health checks in a row (HTTP 500); rolled back to `blue` automatically",
            "state_rolled_back",
        ),
        (
            Verdict::Alarm,
            "`green` failed 2 health checks in a row (HTTP 500); roll back to `blue`: `cutover rollback shop-prod` (in the TUI: the rollback key)",
            "state_alarm",
        ),
    ] {
        let (mut app, id) = swap_planned(true);
        switched_to_green(&mut app, &id);
        seen_op(
            &mut app,
            id.clone(),
            Progress::Finished(Outcome {
                verdict,
                message: message.into(),
                record: cutover::audit::AuditRecord::default(),
                marks: Vec::new(),
            }),
        );
        let (text, _) = screen(&mut app, 120, 40);
        assert!(text.contains(&verdict.label().to_uppercase()), "{text}");
        if verdict == Verdict::Alarm {
            common::assert_contains(&text, "press r to roll back");
        }
        // An automatic rollback is marked on the traffic chart's time axis, as a swap is.
        let marks: Vec<&str> = app.envs[0].markers.iter().map(|(_, l)| *l).collect();
        let want: &[&str] = if verdict == Verdict::RolledBack {
            &["swap", "rollback"]
        } else {
            &["swap"]
        };
        assert_eq!(marks, want, "{verdict:?}");
        insta::assert_snapshot!(name, text.replace(&format!("#{id}"), "#<id>"));
    }
}

/// `:canary SLOT STEPS INTERVAL` opens the canary's dialog with the plan typed, and starts
/// that plan; a plan that cannot run is refused on the status line, naming what is wrong.
#[test]
fn the_canary_command_asks_with_the_plan_typed() {
    use cutover::model::CanaryStep::{Pause, Weight};
    let mut app = app_with(EnvMemory::default());
    command(&mut app, "canary green 10,pause,100 30s");
    let req = run_from_dialog(
        &mut app,
        "Canary to `green`: 10 % → pause → 100 %, 30.0s per step",
    );
    assert_eq!(
        req.kind,
        cutover::ops::OpKind::Canary {
            to: "green".into(),
            steps: vec![Weight(10), Pause, Weight(100)],
            interval: Some(std::time::Duration::from_secs(30)),
        }
    );
    command(&mut app, "canary green 10,50");
    shows(
        &mut app,
        (120, 40),
        &[":canary green: the last step must be 100%"],
    );
}

/// The dialog saying `title` is open; `y` starts its operation: the request.
fn run_from_dialog(app: &mut App, title: &str) -> cutover::ops::OpRequest {
    shows(app, (120, 40), &[title]);
    match press(app, KeyCode::Char('y')).as_slice() {
        [cutover::app::Effect::RunOp { req, .. }] => req.clone(),
        other => panic!("no operation started: {other:?}"),
    }
}

/// Type `:LINE` and Enter.
fn command(app: &mut App, line: &str) {
    key(app, ':');
    typed(app, line);
    press(app, KeyCode::Enter);
}

#[test]
fn c_asks_for_a_canary_on_the_selected_slot_and_the_rollback_key_aborts_it() {
    use cutover::ops::Step;
    let mut app = app_with(EnvMemory::default());
    key(&mut app, 'l'); // green
    key(&mut app, 'c');
    let req = run_from_dialog(&mut app, "Canary to `green`: 5 % → 25 % → 50 % → 100 %");
    assert_eq!(
        req.kind,
        cutover::ops::OpKind::Canary {
            to: "green".into(),
            steps: vec![],
            interval: None,
        }
    );
    let id = req.id;
    step(&mut app, &id, Step::Plan, Some(true), "canary blue → green");
    step(
        &mut app,
        &id,
        Step::Watch,
        None,
        "step 1/4 (5 %): analysing `green` for 1m",
    );
    seen_op(
        &mut app,
        id.clone(),
        cutover::ops::Progress::Watching {
            remaining: std::time::Duration::from_secs(42),
            detail: "step 1/4 (5 %) · green up · 0 err / 120 req".into(),
            errors: 0,
            checks: 3,
            passed: 3,
        },
    );
    let (text, _) = screen(&mut app, 120, 40);
    assert!(
        text.contains("step 1/4 (5 %)"),
        "the op line shows the step: {text}"
    );
    // During the steps, r aborts the canary (no rollback to some older slot).
    let fx = press(&mut app, KeyCode::Char('r'));
    assert!(
        matches!(fx.as_slice(), [cutover::app::Effect::StopOp { env: 0 }]),
        "{fx:?}"
    );
    // Once its swap has begun, r is a rollback as after any swap.
    switching_to_green(&mut app, &id);
    let fx = press(&mut app, KeyCode::Char('r'));
    assert!(
        !matches!(fx.as_slice(), [cutover::app::Effect::StopOp { .. }]),
        "{fx:?}"
    );
}

/// A canary at its second step: 25 % of blue's live traffic to green, 40 requests/s in all
/// for 30 s, the step's analysis running.
fn canary_step() -> App {
    use cutover::ops::{Progress, Step};
    let mut app = app_with(EnvMemory::default());
    key(&mut app, 'l'); // green
    let id = started(&mut app, 'c');
    step(
        &mut app,
        &id,
        Step::Plan,
        Some(true),
        "canary blue → green: 5 % → 25 % → 50 % → 100 %, 60.0s per step",
    );
    step(&mut app, &id, Step::Gate, Some(true), "all checks passed");
    step(
        &mut app,
        &id,
        Step::Watch,
        None,
        "step 2/4 (25 %): analysing `green` for 1m",
    );
    let (mut blue, mut green) = (1204u64, 87u64);
    for i in 1..=30u64 {
        blue += 30;
        green += 10;
        let at = t0() + Duration::from_secs(75 + i);
        app.update(Event::Tick(at));
        let mut s = router_state("blue", "green");
        s.weights = Some(cutover::model::Weights {
            live: "blue".into(),
            canary: "green".into(),
            canary_percent: 25,
        });
        for (name, req) in [("blue", blue), ("green", green)] {
            if let Some(r) = s.slots.get_mut(name) {
                r.requests = Some(req);
                r.percentiles = Some(cutover::model::Percentiles {
                    p50_us: if name == "blue" { 2_047 } else { 3_071 },
                    p99_us: if name == "blue" { 9_215 } else { 14_335 },
                    answers: 300,
                });
            }
        }
        seen_router(&mut app, 0, Ok(s), at);
    }
    seen_op(
        &mut app,
        id,
        Progress::Watching {
            remaining: Duration::from_secs(42),
            detail:
                "step 2/4 (25 %) · green up 5ms · 0 err / 300 req (0.0 %; blue 0.0 %) · 0 of 2 \
                     failed checks"
                    .into(),
            errors: 0,
            checks: 18,
            passed: 18,
        },
    );
    app
}

#[test]
fn a_canary_step_shows_the_weights_and_the_traffic_split() {
    let mut app = canary_step();
    let (b, g) = (
        rps(&app, 0).expect("blue's rate"),
        rps(&app, 1).expect("green's rate"),
    );
    assert_eq!((b, g), (30.0, 10.0));
    assert_eq!(g / (b + g), 0.25, "the canary's measured share");
    let (text, _) = screen(&mut app, 120, 40);
    let id = app.envs[0].op.as_ref().expect("op").id.clone();
    common::assert_contains_all(
        &text,
        &[
            "canary: blue 75 % / green 25 %",
            "◐ PREVIEW · canary 25 %",
            "30 req/s · 0.0% err",
            "10 req/s · 0.0% err",
            "p50 3.1ms p99 14ms",
            "● blue        30/s",
            "◐ green       10/s",
            "step 2/4 (25 %)",
            // A step is judged on the canary's error rate, not on a swap's error budget.
            "Watch canary · 42s left · aborts > 1.0 % err",
            // The slot columns: configured weight and the share served; the step timeline and
            // the analysis as it comes.
            "weight 75 % · served 75 %",
            "weight 25 % · served 25 %",
            "✔ 5 %  ▶ 25 %  · 50 %  · 100 %",
            "analysis: green up 5ms",
            "0 err / 300 req (0.0 %; blue 0.0 %)",
            "0 of 2 failed checks",
        ],
    );
    common::assert_lacks(&text, "errors since switch");
    insta::assert_snapshot!("canary_step_120x40", text.replace(&id, "<id>"));
    let text = shows(&mut app, (80, 24), &["canary 25 %", "30 req/s", "10 req/s"]);
    insta::assert_snapshot!("canary_step_80x24", text.replace(&id, "<id>"));
}

#[test]
fn a_fleet_where_one_router_counts_nothing_sums_the_others_and_says_so() {
    let mut app = app_with(EnvMemory::default());
    add_router(&mut app, "edge-2", "nginx");
    let mut nginx = router_state("blue", "green");
    for r in nginx.slots.values_mut() {
        r.requests = None;
        r.errors = None;
        r.sessions = None;
    }
    let mut blue = 1204;
    for i in 1..=10 {
        blue += 40;
        reading(&mut app, 75 + i, "blue", [(blue, 0), (87, 0), (0, 0)]);
        seen_router(
            &mut app,
            1,
            Ok(nginx.clone()),
            t0() + Duration::from_secs(75 + i),
        );
    }
    assert_eq!(
        app.envs[0].slots[0].traffic.current().map(|c| c.rps),
        Some(40.0)
    );
    shows(
        &mut app,
        (120, 40),
        &[
            "ⓘ no per-slot counters from `edge-2` (nginx): requests/s are the other router's, without its share",
            "1 of 2 routers (the others not read or without counters)",
            "40 req/s",
        ],
    );
}

#[test]
fn at_80x24_a_columns_latency_goes_before_its_build_time() {
    let mut app = app_with(EnvMemory::default());
    let mut built = up("1.4.2", 3);
    if let Some(v) = built.version.as_mut() {
        v.built = Some("2026-11-20T09:30:00Z".into());
    }
    probe(&mut app, 0, built);
    let mut blue = 1204;
    for i in 1..=3 {
        blue += 40;
        let at = t0() + Duration::from_secs(75 + i);
        app.update(Event::Tick(at));
        let mut s = router_state("blue", "green");
        if let Some(r) = s.slots.get_mut("blue") {
            r.requests = Some(blue);
            r.percentiles = Some(cutover::model::Percentiles {
                p50_us: 2_047,
                p99_us: 9_215,
                answers: 120,
            });
        }
        seen_router(&mut app, 0, Ok(s), at);
    }
    shows(
        &mut app,
        (120, 40),
        &["built 2026-11-20T09:30:00Z", "p50 2.0ms p99 9.2ms"],
    );
    let text = shows(&mut app, (80, 24), &["40 req/s", "p50 2.0ms p99 9.2ms"]);
    common::assert_lacks(&text, "built");
}

/// The header says whether the shared store answers: `etcd ✔` while it does, `etcd ✘
/// unreachable` (and a red line in the event pane) when it does not; nothing without one.
#[test]
fn the_header_shows_the_shared_stores_state() {
    let mut app = app_with(EnvMemory::default());
    let (text, _) = screen(&mut app, 120, 40);
    assert!(
        !text.lines().next().unwrap_or_default().contains("etcd"),
        "{text}"
    );
    app.update(Event::Seen(Seen::Store {
        env: 0,
        up: true,
        text: None,
    }));
    let (text, _) = screen(&mut app, 120, 40);
    assert!(
        text.lines().next().unwrap_or_default().contains("etcd ✔"),
        "{text}"
    );
    app.update(Event::Seen(Seen::Store {
        env: 0,
        up: false,
        text: Some("shared store: etcd at 127.0.0.1:2379 does not answer; operations are refused until it answers".into()),
    }));
    let (text, _) = screen(&mut app, 120, 40);
    assert!(
        text.lines()
            .next()
            .unwrap_or_default()
            .contains("etcd ✘ unreachable"),
        "{text}"
    );
    common::assert_contains(&text, "operations are refused until it answers");
}
