//! The exec driver, driven with small shell scripts written by each test into its own temp
//! dir. The scripts keep the "router" state in a file: a fake DNS alias (seed 000) and a fake
//! production/staging slot swap (seed 001). Every check reads the state back through the
//! router's own `observe` command, as cutover does.
#![allow(clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cutover::config;
use cutover::model::{AdminState, MaintenanceMode};
use cutover::router::exec::{Cmd, ExecError, Failure, parse_observe};
use cutover::router::{self, Router, RouterConfig, Target, Verb};
use tempfile::TempDir;

/// Every test ends well within this, or fails instead of hanging.
const BOUND: Duration = Duration::from_secs(30);

/// Environment `shop-prod` (names are kept to a safe set: no spaces, see paths::is_safe_name) with
/// slots blue (two nodes) and green.
const ENVIRONMENT: &str = r#"
[[environment]]
name = "shop-prod"

[[environment.slot]]
name = "blue"
address = "http://vm-blue.example.edu:8080"
nodes = [
  { name = "web1", address = "http://10.0.0.11:8081" },
  { name = "web2", address = "http://10.0.0.12:8081" },
]

[[environment.slot]]
name = "green"
address = "http://vm-green.example.edu:8080"
"#;

/// A complete config: the environment above and one exec router with the given fields.
fn config_text(router_fields: &str) -> String {
    format!(
        "{ENVIRONMENT}\n[[environment.router]]\nkind = \"exec\"\nname = \"alias\"\n{router_fields}\n"
    )
}

/// Parse the config exactly as cutover does, and build the router from it.
fn build(dir: &Path, router_fields: &str) -> Arc<dyn Router> {
    let src = config_text(router_fields);
    let cfg = config::parse(&src, &dir.join("cutover.toml"))
        .unwrap_or_else(|e| panic!("config refused: {e}\n{src}"));
    let env = &cfg.environments[0];
    router::build(env, &env.routers[0]).unwrap_or_else(|e| panic!("driver refused: {e:#}"))
}

/// A TOML array of strings (JSON strings are valid TOML basic strings).
fn argv(parts: &[&str]) -> String {
    serde_json::to_string(parts).expect("json")
}

fn write_script(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write script");
    p.display().to_string()
}

fn exec_error(e: &color_eyre::eyre::Report) -> &ExecError {
    e.chain()
        .find_map(|c| c.downcast_ref::<ExecError>())
        .unwrap_or_else(|| panic!("not an ExecError: {e:#}"))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, f)
        .await
        .expect("the driver call did not return within the test's bound")
}

// ---------------------------------------------------------------------------------------
// A fake production/staging slot swap (seed 001). The state file says which slot holds
// production and which staging; `swap.sh STATE FROM TO` refuses unless FROM is in
// production and TO in staging, like a swap that must know what it swaps.

const SWAP_OBSERVE: &str = r#"
. "$1"
printf '{"live":"%s","preview":"%s","slots":{"%s":{"state":"ready","sessions":3},"%s":{"state":"ready","sessions":0}}}\n' \
  "$prod" "$stage" "$prod" "$stage"
"#;

const SWAP: &str = r#"
state=$1; from=$2; to=$3
. "$state"
if [ "$prod" != "$from" ] || [ "$stage" != "$to" ]; then
  echo "ERROR: cannot swap $from -> $to: production holds $prod, staging holds $stage" >&2
  exit 4
fi
printf 'prod=%s\nstage=%s\n' "$to" "$from" > "$state.tmp" && mv "$state.tmp" "$state"
echo "swap $from $to" >> "$state.log"
"#;

struct SwapFixture {
    dir: TempDir,
    state: PathBuf,
    observe: String,
    swap: String,
}

impl SwapFixture {
    fn new() -> Self {
        let dir = TempDir::new().expect("tempdir");
        let state = dir.path().join("slots.state");
        std::fs::write(&state, "prod=blue\nstage=green\n").expect("state");
        let observe = write_script(dir.path(), "observe.sh", SWAP_OBSERVE);
        let swap = write_script(dir.path(), "swap.sh", SWAP);
        SwapFixture {
            dir,
            state,
            observe,
            swap,
        }
    }
    fn s(&self) -> String {
        self.state.display().to_string()
    }
    fn observe_field(&self) -> String {
        format!("observe = {}", argv(&["sh", &self.observe, &self.s()]))
    }
    /// The swap script as a command: `sh swap.sh STATE {from} {to}`.
    fn swap_argv(&self) -> String {
        argv(&["sh", &self.swap, &self.s(), "{from}", "{to}"])
    }
    /// The exec router that observes the state file and swaps with the swap script.
    fn router(&self) -> Arc<dyn Router> {
        let fields = format!(
            "{}\nswitch_live = {}",
            self.observe_field(),
            self.swap_argv()
        );
        build(self.dir.path(), &fields)
    }
    fn swap_log(&self) -> String {
        read(&self.state.with_extension("state.log"))
    }
}

#[tokio::test]
async fn slot_swap_and_rollback_read_back_through_observe() {
    let f = SwapFixture::new();
    let r = f.router();
    assert!(r.supports(Verb::Observe) && r.supports(Verb::SwitchLive));

    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"));
    assert_eq!(s.preview.as_deref(), Some("green"));
    assert_eq!(s.slots["blue"].admin, AdminState::Ready);
    assert_eq!(s.slots["blue"].sessions, Some(3));

    let t = Instant::now();
    bounded(r.switch_live("green"))
        .await
        .expect("swap to green");
    let swap_took = t.elapsed();
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("green"), "{s:?}");
    assert_eq!(s.preview.as_deref(), Some("blue"), "{s:?}");
    assert_eq!(f.swap_log(), "swap blue green\n");

    // Asking for the slot that is already live runs nothing: a swap-style command would
    // otherwise swap it away again.
    bounded(r.switch_live("green")).await.expect("no-op");
    assert_eq!(f.swap_log(), "swap blue green\n");
    assert_eq!(
        bounded(r.observe()).await.expect("observe").live.as_deref(),
        Some("green")
    );

    // Rollback.
    bounded(r.switch_live("blue"))
        .await
        .expect("rollback to blue");
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"));
    assert_eq!(s.preview.as_deref(), Some("green"));
    assert_eq!(f.swap_log(), "swap blue green\nswap green blue\n");

    // A slot the environment does not have is refused before anything runs.
    common::fails_with(
        bounded(r.switch_live("purple")).await,
        "unknown slot",
        "no slot `purple`",
    );
    assert_eq!(f.swap_log().lines().count(), 2);
    eprintln!("measured: switch_live (observe + swap script) took {swap_took:?}");
    let t = Instant::now();
    for _ in 0..20 {
        bounded(r.observe()).await.expect("observe");
    }
    eprintln!(
        "measured: one observe took {:?} (mean of 20)",
        t.elapsed() / 20
    );
}

// ---------------------------------------------------------------------------------------
// A fake DNS alias (seed 000): a zone file with `www` (live) and `next` (preview) pointing
// at a VM's host name; `alias.sh ZONE NAME TARGET` moves one; `observe` maps the targets
// back to slot names and prints key=value lines.

#[tokio::test]
async fn dns_alias_switch_with_key_value_observe() {
    let (dir, zone) = common::temp_file(
        "zone",
        "www vm-blue.example.edu.\nnext vm-green.example.edu.\n",
    );
    let observe = write_script(
        dir.path(),
        "where-is-www",
        r##"#!/bin/sh
set -e
slot_of() {
  case "$1" in
    vm-blue.example.edu.) echo blue ;;
    vm-green.example.edu.) echo green ;;
    *) echo "alias points at $1, which is not a slot" >&2; exit 1 ;;
  esac
}
www=$(awk '$1 == "www" { print $2 }' "$1")
next=$(awk '$1 == "next" { print $2 }' "$1")
# One assignment per line, so that `set -e` stops the script when slot_of fails
# (a failure inside `echo "live=$(...)"` would not).
live=$(slot_of "$www")
preview=$(slot_of "$next")
echo "# read from $1"
echo "live=$live"
echo "preview=$preview"
echo "blue.state=ready"
echo "green.state=ready"
echo "note=www -> $www"
"##,
    );
    let mut perm = std::fs::metadata(&observe).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&observe, perm).expect("chmod");
    let alias = write_script(
        dir.path(),
        "alias.sh",
        r#"zone=$1; name=$2; target=$3
awk -v n="$name" -v t="$target" '$1 == n { $2 = t } { print }' "$zone" > "$zone.tmp" && mv "$zone.tmp" "$zone"
"#,
    );
    let z = zone.display().to_string();
    let r = build(
        dir.path(),
        &format!(
            "observe = {}\nswitch_live = {}\nset_preview = {}\ntimeout = \"10s\"",
            argv(&[&observe, &z]),
            argv(&["sh", &alias, &z, "www", "{host}."]),
            argv(&["sh", &alias, &z, "next", "{host}."]),
        ),
    );
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(
        (s.live.as_deref(), s.preview.as_deref()),
        (Some("blue"), Some("green"))
    );
    assert_eq!(s.notes, vec!["www -> vm-blue.example.edu."]);

    bounded(r.switch_live("green")).await.expect("move www");
    bounded(r.set_preview("blue")).await.expect("move next");
    assert_eq!(
        read(&zone),
        "www vm-green.example.edu.\nnext vm-blue.example.edu.\n"
    );
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(
        (s.live.as_deref(), s.preview.as_deref()),
        (Some("green"), Some("blue"))
    );

    // Rollback: move the alias back.
    bounded(r.switch_live("blue")).await.expect("move www back");
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"));

    // Someone points the alias somewhere else by hand: observe fails and says so.
    std::fs::write(
        &zone,
        "www vm-old.example.edu.\nnext vm-blue.example.edu.\n",
    )
    .expect("zone");
    let e = bounded(r.observe()).await.expect_err("unknown target");
    let m = format!("{e:#}");
    common::assert_contains(&m, "exit code 1");
    common::assert_contains(&m, "alias points at vm-old.example.edu.");
}

// ---------------------------------------------------------------------------------------

fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie has been killed; it only waits for a parent to reap it.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test]
async fn a_hanging_command_times_out_and_is_killed_with_its_group() {
    let f = SwapFixture::new();
    let pids = f.dir.path().join("pids");
    // Ignores SIGTERM (so only SIGKILL ends it) and leaves a child in its group.
    let hang = write_script(
        f.dir.path(),
        "hang.sh",
        r#"trap '' TERM
echo $$ > "$1"
sleep 300 &
echo $! >> "$1"
echo "waiting for the swap lock held by another deploy" >&2
wait
"#,
    );
    let r = build(
        f.dir.path(),
        &format!(
            "{}\nswitch_live = {}\ntimeout = \"1s\"",
            f.observe_field(),
            argv(&["sh", &hang, &pids.display().to_string()])
        ),
    );
    let t = Instant::now();
    let e = bounded(r.switch_live("green"))
        .await
        .expect_err("must time out");
    let took = t.elapsed();
    let x = exec_error(&e);
    assert!(x.is_timeout(), "{e:#}");
    assert_eq!(x.failure, Failure::Timeout(Duration::from_secs(1)));
    let m = format!("{e:#}");
    eprintln!("operator sees:\n{m}");
    common::assert_contains(&m, "`switch_live` timed out after 1s");
    assert!(m.contains("hang.sh"), "the message names the command: {m}");
    assert!(
        m.contains("waiting for the swap lock"),
        "what it printed before it hung is shown: {m}"
    );

    let pids = read(&pids);
    let pids: Vec<&str> = pids.lines().collect();
    assert_eq!(pids.len(), 2, "the script wrote its pid and its child's");
    let all_gone = common::eventually(Duration::from_secs(5), || async {
        pids.iter().all(|p| gone(p))
    })
    .await;
    assert!(all_gone, "processes still alive: {pids:?}");

    // Nothing changed.
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"));
    eprintln!("measured: a 1s timeout (SIGTERM ignored) returned after {took:?}");

    // A hanging observe is bounded by `observe_timeout`.
    let r = build(
        f.dir.path(),
        &format!(
            "observe = {}\nobserve_timeout = \"1s\"",
            argv(&["sleep", "300"])
        ),
    );
    let e = bounded(r.observe()).await.expect_err("observe hangs");
    let m = format!("{e:#}");
    common::assert_contains(&m, "`observe` timed out after 1s");
    common::assert_contains(&m, "observe_timeout");
}

#[tokio::test]
async fn a_failing_command_shows_its_exit_code_and_stderr_and_changes_nothing() {
    let f = SwapFixture::new();
    let fail = write_script(
        f.dir.path(),
        "fail.sh",
        r#"i=1
while [ $i -le 30 ]; do echo "swap step $i" >&2; i=$((i + 1)); done
echo "ERROR: slot 'green' is stopped; start it before swapping" >&2
exit 3
"#,
    );
    let stdout_only = write_script(
        f.dir.path(),
        "stdout-only.sh",
        "echo 'Error from server (NotFound): services \"shop-preview\" not found'\nexit 1\n",
    );
    let r = build(
        f.dir.path(),
        &format!(
            "{}\nswitch_live = {}\nset_preview = {}",
            f.observe_field(),
            argv(&["sh", &fail, "{to}"]),
            argv(&["sh", &stdout_only]),
        ),
    );
    let e = bounded(r.switch_live("green")).await.expect_err("fails");
    let x = exec_error(&e);
    assert_eq!(x.exit_code(), Some(3));
    assert_eq!(x.output_from, "stderr");
    let m = format!("{e:#}");
    eprintln!("operator sees:\n{m}");
    common::assert_contains(&m, "`switch_live` failed with exit code 3");
    common::assert_contains(&m, "ERROR: slot 'green' is stopped");
    assert!(
        m.contains("swap step 30") && m.contains("swap step 12"),
        "{m}"
    );
    // Only the last 20 lines are kept.
    assert!(
        !m.contains("swap step 11\n") && m.contains("(11 earlier lines)"),
        "{m}"
    );
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"), "state unchanged");

    // A tool that explains itself on stdout only: stdout is shown.
    let e = bounded(r.set_preview("blue")).await.expect_err("fails");
    let x = exec_error(&e);
    assert_eq!((x.exit_code(), x.output_from), (Some(1), "stdout"));
    assert!(format!("{e:#}").contains("services \"shop-preview\" not found"));

    // A program that does not exist.
    let r = build(
        f.dir.path(),
        &format!(
            "{}\nswitch_live = {}",
            f.observe_field(),
            argv(&["/nonexistent/bin/az", "webapp"])
        ),
    );
    let e = bounded(r.switch_live("green"))
        .await
        .expect_err("cannot start");
    assert!(matches!(exec_error(&e).failure, Failure::Spawn(_)));
    let m = format!("{e:#}");
    assert!(
        m.contains("cannot start `switch_live`") && m.contains("/nonexistent/bin/az"),
        "{m}"
    );
}

#[tokio::test]
async fn observe_output_that_cannot_be_read_is_an_error_that_quotes_it() {
    let f = SwapFixture::new();
    let swap = f.swap_argv();
    let with_observe = |script: &str| {
        build(
            f.dir.path(),
            &format!(
                "observe = {}\nswitch_live = {swap}",
                argv(&["sh", "-c", script])
            ),
        )
    };

    // Malformed JSON.
    let r = with_observe(r#"printf '{"live": "blue", "preview": '"#);
    let e = bounded(r.observe()).await.expect_err("malformed JSON");
    assert!(matches!(exec_error(&e).failure, Failure::BadOutput(_)));
    let m = format!("{e:#}");
    eprintln!("operator sees:\n{m}");
    common::assert_contains(&m, "`observe` printed output cutover cannot read");
    common::assert_contains(&m, "expected a JSON object");
    assert!(m.contains(r#"`{"live": "blue", "preview": `"#), "{m}");
    // A switch never runs blind: with observe broken, nothing is swapped.
    let e = bounded(r.switch_live("green")).await.expect_err("refused");
    let m = format!("{e:#}");
    common::assert_contains(&m, "cannot read which slot is live");
    assert_eq!(f.swap_log(), "");

    // Not JSON, not key=value: a tool's error message on stdout.
    let r = with_observe("echo 'Please run az login to setup account.'");
    let m = format!(
        "{:#}",
        bounded(r.observe()).await.expect_err("not key=value")
    );
    common::assert_contains(&m, "expected key=value lines");
    common::assert_contains(&m, "`Please run az login to setup account.\\n`");

    // Valid JSON naming a slot the environment does not have.
    let r = with_observe(r#"echo '{"live":"purple"}'"#);
    let m = format!(
        "{:#}",
        bounded(r.observe()).await.expect_err("unknown slot")
    );
    common::assert_contains(&m, "`purple` is not a slot");

    // Nothing at all.
    let r = with_observe("true");
    let m = format!("{:#}", bounded(r.observe()).await.expect_err("empty"));
    common::assert_contains(&m, "printed nothing");

    // Far too much (the cap is 1 MiB).
    let r = with_observe("echo live=blue; head -c 3000000 /dev/zero | tr '\\0' x");
    let m = format!("{:#}", bounded(r.observe()).await.expect_err("too big"));
    common::assert_contains(&m, "more than the 1048576");

    // Warnings on stderr of a good observe become a note.
    let r = with_observe("echo 'WARNING: az 2.60 is deprecated' >&2; echo live=blue");
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"));
    assert_eq!(
        s.notes,
        vec!["observe wrote to stderr: WARNING: az 2.60 is deprecated"]
    );
}

#[tokio::test]
async fn key_value_observe_reports_slots_nodes_and_maintenance() {
    let dir = TempDir::new().expect("tempdir");
    let r = build(
        dir.path(),
        &format!(
            "observe = {}",
            argv(&[
                "printf",
                "live=green\\npreview=blue\\nmaintenance=redirect:blue\\nblue.state=drain\\n\
                 blue.sessions=4\\nblue/web1.state=maint\\nblue/web2.sessions=2\\n\
                 green.errors=7\\ngreen.check=UP\\n",
            ])
        ),
    );
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("green"));
    assert_eq!(s.preview.as_deref(), Some("blue"));
    assert_eq!(
        s.maintenance,
        Some(MaintenanceMode::Redirect { to: "blue".into() })
    );
    let blue = &s.slots["blue"];
    assert_eq!((blue.admin, blue.sessions), (AdminState::Drain, Some(4)));
    assert_eq!(blue.nodes.len(), 2);
    assert_eq!(blue.nodes[0].name, "web1");
    assert_eq!(blue.nodes[0].admin, AdminState::Maint);
    assert_eq!(blue.nodes[1].sessions, Some(2));
    assert_eq!(s.slots["green"].errors, Some(7));
    assert_eq!(s.slots["green"].check.as_deref(), Some("UP"));
}

#[tokio::test]
async fn a_verb_that_is_not_configured_is_unavailable_not_faked() {
    let f = SwapFixture::new();
    let r = f.router();
    for v in [
        Verb::SetPreview,
        Verb::Drain,
        Verb::Undrain,
        Verb::Maintenance,
    ] {
        assert!(!r.supports(v), "{v:?} is not configured");
    }
    let e = bounded(r.drain(&Target::slot("green")))
        .await
        .expect_err("drain is not configured");
    assert_eq!(exec_error(&e).failure, Failure::NotConfigured);
    let m = format!("{e:#}");
    eprintln!("operator sees:\n{m}");
    assert!(
        m.contains(
            "`drain` is not configured: add `drain = [...]` and `undrain = [...]` to the router"
        ),
        "{m}"
    );
    let m = format!(
        "{:#}",
        bounded(r.maintenance(true, &MaintenanceMode::Page))
            .await
            .expect_err("not configured")
    );
    common::assert_contains(&m, "add `maintenance_on = [...]`");
    let m = format!(
        "{:#}",
        bounded(r.set_preview("green"))
            .await
            .expect_err("not configured")
    );
    common::assert_contains(&m, "add `set_preview = [...]`");
    // And nothing ran.
    assert_eq!(f.swap_log(), "");
    let s = bounded(r.observe()).await.expect("observe");
    assert_eq!(s.live.as_deref(), Some("blue"));
}

#[tokio::test]
async fn every_placeholder_is_templated_into_argv_without_a_shell() {
    let dir = TempDir::new().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    // Writes its working directory, then each argument on its own line.
    let rec = write_script(
        dir.path(),
        "record.sh",
        "f=$1; shift; { pwd -P; printf '%s\\n' \"$@\"; } > \"$f\"\n",
    );
    let o = |n: &str| out.join(n).display().to_string();
    let cwd = dir.path().canonicalize().expect("canonical");
    let fields = format!(
        "observe = {}\nswitch_live = {}\nset_preview = {}\ndrain = {}\nundrain = {}\n\
         maintenance_on = {}\nmaintenance_off = {}\ncwd = {}",
        argv(&["printf", "live=blue\\npreview=green\\n"]),
        argv(&[
            "sh",
            &rec,
            &o("switch"),
            "{env}",
            "{from}",
            "{to}",
            "{slot}",
            "{address}",
            "{host}",
            r#"{"spec":{"selector":{"slot":"{to}"}}}"#,
            "{{.spec.selector.slot}}",
            "two words; $(touch pwned) ${HOME}",
        ]),
        argv(&["sh", &rec, &o("preview"), "{slot}", "{address}", "{from}"]),
        argv(&[
            "sh",
            &rec,
            &o("drain"),
            "{slot}",
            "{node}",
            "{address}",
            "{host}"
        ]),
        argv(&["sh", &rec, &o("undrain"), "{slot}/{node}"]),
        argv(&[
            "sh",
            &rec,
            &o("mon"),
            "{mode}",
            "--to={to}",
            "{host}",
            "{from}"
        ]),
        argv(&["sh", &rec, &o("moff"), "{mode}"]),
        serde_json::to_string(&cwd.display().to_string()).expect("json"),
    );
    let r = build(dir.path(), &fields);
    let c = cwd.display().to_string();
    let lines = |n: &str| read(&out.join(n));

    bounded(r.switch_live("green")).await.expect("switch");
    assert_eq!(
        lines("switch"),
        format!(
            "{c}\nshop-prod\nblue\ngreen\ngreen\nhttp://vm-green.example.edu:8080\n\
             vm-green.example.edu\n{{\"spec\":{{\"selector\":{{\"slot\":\"green\"}}}}}}\n\
             {{{{.spec.selector.slot}}}}\ntwo words; $(touch pwned) ${{HOME}}\n"
        )
    );
    assert!(
        !dir.path().join("pwned").exists(),
        "an argument is never run through a shell"
    );

    // Each call succeeds and its command saw these arguments (one a line, after its cwd).
    let ran = |done: color_eyre::Result<()>, command: &str, args: &str| {
        done.unwrap_or_else(|e| panic!("{command}: {e:#}"));
        assert_eq!(lines(command), format!("{c}\n{args}"), "{command}");
    };
    let (web1, web2) = (Target::node("blue", "web1"), Target::node("blue", "web2"));
    ran(
        bounded(r.set_preview("blue")).await,
        "preview",
        "blue\nhttp://vm-blue.example.edu:8080\nblue\n",
    );
    ran(
        bounded(r.drain(&web2)).await,
        "drain",
        "blue\nweb2\nhttp://10.0.0.12:8081\n10.0.0.12\n",
    );
    ran(bounded(r.undrain(&web1)).await, "undrain", "blue/web1\n");
    // The command uses {node}: a whole slot has none, so it is refused, not guessed.
    let e = bounded(r.drain(&Target::slot("blue")))
        .await
        .expect_err("whole slot");
    let m = format!("{e:#}");
    assert!(m.contains("`{node}`") && m.contains("whole slot"), "{m}");
    let e = bounded(r.drain(&Target::node("blue", "web9")))
        .await
        .expect_err("no such node");
    assert!(format!("{e:#}").contains("no node `web9`"));

    bounded(r.maintenance(true, &MaintenanceMode::Redirect { to: "green".into() }))
        .await
        .expect("maintenance on");
    assert_eq!(
        lines("mon"),
        format!("{c}\nredirect\n--to=green\nvm-green.example.edu\nblue\n")
    );
    common::fails_with(
        bounded(r.maintenance(true, &MaintenanceMode::Page)).await,
        "page has no {to}",
        "503 page",
    );
    bounded(r.maintenance(false, &MaintenanceMode::Page))
        .await
        .expect("maintenance off");
    assert_eq!(lines("moff"), format!("{c}\npage\n"));
}

/// The secret is put in this test's own environment by re-running the test binary with it
/// set (setting variables in a running multi-threaded test process is not sound).
#[tokio::test]
async fn commands_get_a_clean_environment() {
    const SECRET: &str = "CUTOVER_EXEC_TEST_SECRET";
    const PASSED: &str = "CUTOVER_EXEC_TEST_PASSED";
    if std::env::var_os(SECRET).is_none() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "commands_get_a_clean_environment",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SECRET, "hunter2-token")
            .env(PASSED, "passed-on-purpose")
            .output()
            .expect("re-run the test binary");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "inner run failed:\n{stdout}\n{stderr}"
        );
        assert!(
            stderr.contains("clean environment checked"),
            "the inner test did not run:\n{stdout}\n{stderr}"
        );
        return;
    }
    // The inner run: the secret is in this process's environment.
    assert_eq!(std::env::var(SECRET).as_deref(), Ok("hunter2-token"));
    let dir = TempDir::new().expect("tempdir");
    let seen = dir.path().join("env.txt");
    let r = build(
        dir.path(),
        &format!(
            "observe = {}\nswitch_live = {}\nenv = {{ GIVEN = \"set in the router table\" }}\n\
             pass_env = [\"{PASSED}\"]",
            argv(&["printf", "live=blue\\n"]),
            argv(&[
                "sh",
                "-c",
                "env > \"$1\"",
                "sh",
                &seen.display().to_string()
            ]),
        ),
    );
    bounded(r.switch_live("green")).await.expect("switch");
    let env = read(&seen);
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(!env.contains("hunter2"), "the secret leaked:\n{env}");
    assert!(!names.contains(&SECRET));
    common::assert_contains(&env, "GIVEN=set in the router table");
    assert!(
        env.contains(&format!("{PASSED}=passed-on-purpose")),
        "{env}"
    );
    assert!(names.contains(&"PATH"), "{env}");
    if std::env::var_os("HOME").is_some() {
        assert!(names.contains(&"HOME"), "{env}");
    }
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("CARGO") || n.starts_with("RUST")),
        "cutover's own environment leaked: {names:?}"
    );
    eprintln!("clean environment checked; the command saw: {names:?}");
}

#[test]
fn config_mistakes_are_located_and_explained() {
    let dir = TempDir::new().expect("tempdir");
    let err = |fields: &str| {
        let src = config_text(fields);
        match config::parse(&src, &dir.path().join("cutover.toml")) {
            Ok(_) => panic!("accepted:\n{src}"),
            Err(e) => e.to_string(),
        }
    };
    let m = err("switch_live = [\"true\"]");
    assert!(
        m.contains("cutover.toml:17:1") && m.contains("needs `observe`"),
        "{m}"
    );
    let m = err("observe = [\"cat\"]\nswitch_live = [\"az\", \"--slot\", \"{form}\"]");
    common::assert_contains(&m, "unknown placeholder `{form}`");
    let m = err("observe = [\"cat\"]\ndrain = []");
    common::assert_contains(&m, "`drain = []` is empty");
    let m = err("observe = [\"cat\"]\nmaintenance_on = [\"true\"]");
    common::assert_contains(&m, "without `maintenance_off`");
    let m = err("observe = [\"cat\"]\ntimeout = \"soon\"");
    common::assert_contains(&m, "not a duration");
    let m = err("observe = [\"cat\"]\nshell = true");
    common::assert_contains(&m, "unknown field `shell`");
}

// ---------------------------------------------------------------------------------------
// docs/exec.md: every example is a valid config, every script in it parses, and the observe
// examples parse.

const DOCS: &str = include_str!("../docs/exec.md");

/// The fenced blocks of docs/exec.md with this info string.
fn doc_blocks(lang: &str) -> Vec<String> {
    common::fenced_blocks(DOCS)
        .into_iter()
        .filter(|(info, _)| info == lang)
        .map(|(_, body)| body)
        .collect()
}

/// Every config in docs/exec.md, parsed as cutover parses a config file.
fn doc_configs() -> Vec<config::Config> {
    doc_blocks("toml")
        .iter()
        .map(|b| {
            let src = if b.contains("[[environment]]") {
                b.clone()
            } else {
                format!("{ENVIRONMENT}\n{b}")
            };
            config::parse(&src, Path::new("docs/exec.md"))
                .unwrap_or_else(|e| panic!("a docs example is refused: {e}\n{src}"))
        })
        .collect()
}

fn exec_config(rc: &RouterConfig) -> &cutover::router::exec::Config {
    match rc {
        RouterConfig::Exec(c) => c,
        other => panic!("not an exec router: {}", other.kind()),
    }
}

#[test]
fn the_examples_in_the_docs_are_valid_and_their_scripts_parse() {
    let configs = doc_configs();
    assert_eq!(configs.len(), 4, "the reference table and three examples");
    let mut scripts = 0;
    for cfg in &configs {
        for env in &cfg.environments {
            for rc in &env.routers {
                let r = router::build(env, rc).unwrap_or_else(|e| panic!("{e:#}"));
                assert!(r.supports(Verb::Observe) && r.supports(Verb::SwitchLive));
                let c = exec_config(rc);
                for cmd in Cmd::ALL {
                    let Some(argv) = c.command(cmd) else { continue };
                    if argv.len() >= 3 && argv[0] == "sh" && argv[1] == "-c" {
                        let out = std::process::Command::new("sh")
                            .args(["-n", "-c", &argv[2]])
                            .output()
                            .expect("sh -n");
                        assert!(
                            out.status.success(),
                            "{} `{}` of {}: {}",
                            env.name,
                            cmd.key(),
                            rc.name(),
                            String::from_utf8_lossy(&out.stderr)
                        );
                        scripts += 1;
                    }
                }
            }
        }
    }
    assert_eq!(
        scripts, 6,
        "the Azure, DNS and Kubernetes scripts were all checked"
    );

    let envs: Vec<&str> = configs
        .iter()
        .flat_map(|c| c.environments.iter().map(|e| e.name.as_str()))
        .collect();
    assert!(
        envs.contains(&"shop-azure") && envs.contains(&"swarm-www") && envs.contains(&"shop-k8s")
    );

    let slots = &configs[0].environments[0].slots;
    for b in doc_blocks("json").iter().chain(doc_blocks("ini").iter()) {
        let s = parse_observe(b, slots).unwrap_or_else(|e| panic!("docs observe example: {e}"));
        assert_eq!(s.live.as_deref(), Some("blue"));
        assert_eq!(s.preview.as_deref(), Some("green"));
        assert_eq!(s.slots["blue"].nodes[0].admin, AdminState::Drain);
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// The Kubernetes example's selector patch, templated by cutover and applied by the real
/// kubectl to a Service kept in a file (`kubectl patch --local`: no cluster needed), read back
/// with the example's jsonpath.
#[tokio::test]
async fn kubernetes_example_patch_applied_by_real_kubectl() {
    let Some(_) = find_program("kubectl") else {
        eprintln!(
            "\n*** SKIPPED kubernetes_example_patch_applied_by_real_kubectl: `kubectl` is not \
             installed (apt-get install kubectl). ***\n"
        );
        return;
    };
    let configs = doc_configs();
    let k8s = configs
        .iter()
        .flat_map(|c| c.environments.iter())
        .find(|e| e.name == "shop-k8s")
        .expect("the Kubernetes example");
    let doc = exec_config(&k8s.routers[0]);
    let patch = |argv: &[String]| -> String {
        let i = argv.iter().position(|a| a == "--patch").expect("--patch");
        argv[i + 1].clone()
    };
    let live_patch = patch(doc.switch_live.as_deref().expect("switch_live"));
    common::assert_contains(&live_patch, "{to}");

    let dir = TempDir::new().expect("tempdir");
    let svc = dir.path().join("service.yaml");
    std::fs::write(
        &svc,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: shop\n  namespace: shop\nspec:\n  \
         selector:\n    app: shop\n    slot: blue\n  ports:\n  - port: 80\n    targetPort: 8080\n",
    )
    .expect("service");
    let svc = svc.display().to_string();
    let observe = r#"set -e
live=$(kubectl patch --local -f "$1" --type merge --patch '{}' --output 'jsonpath={.spec.selector.slot}')
echo "live=$live""#;
    let apply = r#"kubectl patch --local -f "$1" --type merge --patch "$2" --output yaml > "$1.new" && mv "$1.new" "$1""#;
    let fields = |p: &str| {
        format!(
            "observe = {}\nswitch_live = {}\ntimeout = \"20s\"",
            argv(&["sh", "-c", observe, "sh", &svc]),
            argv(&["sh", "-c", apply, "sh", &svc, p]),
        )
    };
    let r = build(dir.path(), &fields(&live_patch));
    assert_eq!(
        bounded(r.observe()).await.expect("observe").live.as_deref(),
        Some("blue")
    );
    let t = Instant::now();
    bounded(r.switch_live("green"))
        .await
        .expect("patch to green");
    let took = t.elapsed();
    assert_eq!(
        bounded(r.observe()).await.expect("observe").live.as_deref(),
        Some("green")
    );
    assert!(
        read(Path::new(&svc)).contains("app: shop"),
        "the rest of the selector is kept"
    );
    bounded(r.switch_live("blue"))
        .await
        .expect("patch back to blue");
    assert_eq!(
        bounded(r.observe()).await.expect("observe").live.as_deref(),
        Some("blue")
    );
    eprintln!("measured: switch_live through kubectl (observe + patch) took {took:?}");

    // The same without quotes around {to}: kubectl refuses it, cutover shows why, and the
    // Service is unchanged.
    let r = build(
        dir.path(),
        &fields(r#"{"spec":{"selector":{"slot":{to}}}}"#),
    );
    let e = bounded(r.switch_live("green"))
        .await
        .expect_err("invalid patch");
    let m = format!("{e:#}");
    eprintln!("operator sees:\n{m}");
    assert_eq!(exec_error(&e).exit_code(), Some(1), "{m}");
    assert!(m.contains("error:"), "kubectl's own message is shown: {m}");
    assert_eq!(
        bounded(r.observe()).await.expect("observe").live.as_deref(),
        Some("blue")
    );
}
