//! The binary as a script uses it: exit codes and messages.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{assert_exit, printed};

fn cutover(dir: &Path, args: &[&str]) -> Output {
    common::cutover_sync(dir, args)
}

fn config_with(dir: &Path, slot_base: &str) -> String {
    let p = dir.join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[settings]\ntimeout = \"300ms\"\n\n[[environment]]\nname = \"shop\"\n\n\
             [[environment.slot]]\nname = \"blue\"\naddress = \"{slot_base}\"\n\n\
             [[environment.router]]\nkind = \"exec\"\nobserve = [\"sh\", \"-c\", \"echo live=blue\"]\n"
        ),
    )
    .expect("write");
    p.to_string_lossy().into_owned()
}

#[test]
fn a_bad_config_exits_2_naming_file_line_column_and_field() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("bad.toml");
    std::fs::write(&p, "[settings]\npoll_interval = 5\n").expect("write");
    let o = cutover(d.path(), &["--config", p.to_str().expect("utf8"), "status"]);
    assert_exit(&o, 2, "status", &["bad.toml:2:17", "poll_interval"]);
}

#[test]
fn a_missing_config_says_how_to_make_one() {
    let d = tempfile::tempdir().expect("tempdir");
    let o = cutover(d.path(), &["status"]);
    assert_exit(&o, 2, "status", &["cutover init"]);
}

#[test]
fn init_writes_a_valid_config_and_refuses_to_overwrite() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("new.toml");
    let ps = p.to_str().expect("utf8");
    let o = cutover(d.path(), &["init", ps]);
    assert_exit(&o, 0, "init", &[]);
    let written = std::fs::read_to_string(&p).expect("written");
    assert!(cutover::config::parse(&written, &p).is_ok());
    std::fs::write(&p, "mine").expect("write");
    let o = cutover(d.path(), &["init", ps]);
    assert_exit(&o, 1, "init again", &["not overwriting"]);
    assert_eq!(
        std::fs::read_to_string(&p).expect("read"),
        "mine",
        "init must not overwrite"
    );
}

#[test]
fn check_exits_1_when_an_endpoint_fails_and_names_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let port = common::free_port();
    let c = config_with(d.path(), &format!("http://127.0.0.1:{port}"));
    let o = cutover(d.path(), &["--config", &c, "check"]);
    assert_exit(&o, 1, "check", &["FAIL", "slot blue health", "refused"]);
}

#[tokio::test]
async fn check_exits_0_when_everything_answers() {
    let s = common::slots(&[("blue", "1.0.0")]).await;
    let d = tempfile::tempdir().expect("tempdir");
    let c = config_with(d.path(), &s[0].url());
    let dir = d.path().to_path_buf();
    let o = tokio::task::spawn_blocking(move || cutover(&dir, &["--config", &c, "check"]))
        .await
        .expect("join");
    assert_exit(&o, 0, "check", &["0 failed"]);
}

#[test]
fn an_unknown_environment_is_a_usage_error() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = config_with(d.path(), "http://127.0.0.1:9");
    let o = cutover(d.path(), &["--config", &c, "swap", "nope", "--yes"]);
    assert_exit(&o, 2, "swap nope", &["no environment `nope`", "shop"]);
}

#[test]
fn swap_without_yes_and_without_a_terminal_refuses_instead_of_hanging() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = config_with(d.path(), "http://127.0.0.1:9");
    let o = cutover(d.path(), &["--config", &c, "swap", "shop"]);
    assert_exit(&o, 1, "swap", &["without --yes"]);
}

#[test]
fn read_only_refuses_every_operation() {
    let d = tempfile::tempdir().expect("tempdir");
    let c = config_with(d.path(), "http://127.0.0.1:9");
    for args in [
        vec!["swap", "shop", "--yes"],
        vec!["rollback", "shop", "--yes"],
        vec!["drain", "shop", "blue"],
        vec!["undrain", "shop", "blue"],
        vec!["maintenance", "shop", "on", "--yes"],
        vec!["preview", "shop", "blue"],
    ] {
        let mut all = vec!["--config", c.as_str(), "--read-only"];
        all.extend(args.iter().copied());
        let o = cutover(d.path(), &all);
        assert_exit(&o, 1, &format!("{args:?}"), &["read-only"]);
    }
}

#[test]
fn usage_errors_exit_2() {
    let d = tempfile::tempdir().expect("tempdir");
    let o = cutover(d.path(), &["swap"]);
    assert_eq!(o.status.code(), Some(2));
    let o = cutover(d.path(), &["--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn completions_version_and_config_path() {
    let d = tempfile::tempdir().expect("tempdir");
    let o = cutover(d.path(), &["completions", "bash"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("_cutover"));
    let o = cutover(d.path(), &["--version"]);
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("cutover "));
    let o = cutover(d.path(), &["man"]);
    assert_eq!(o.status.code(), Some(0));
    let man = String::from_utf8_lossy(&o.stdout);
    assert!(
        man.contains(".TH cutover") && man.contains("rollback"),
        "{man}"
    );
    let o = cutover(d.path(), &["config", "path"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        d.path()
            .join("config/cutover/config.toml")
            .to_string_lossy()
    );
}

#[test]
fn the_demo_prints_the_config_it_is_described_by() {
    let d = tempfile::tempdir().expect("tempdir");
    let o = cutover(
        d.path(),
        &["demo", "--print-config", "--live-port", "18080"],
    );
    assert_eq!(o.status.code(), Some(0), "{}", printed(&o));
    let src = String::from_utf8_lossy(&o.stdout).into_owned();
    let c = cutover::config::parse(&src, Path::new("demo.toml"))
        .unwrap_or_else(|e| panic!("{e}\n{src}"));
    let e = &c.environments[0];
    let slots: Vec<&str> = e.slots.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(slots, ["blue", "green", "staging"]);
    assert_eq!(e.routers[0].kind(), "embedded");
    assert_eq!(e.public_url.as_deref(), Some("http://127.0.0.1:18080/"));
}

#[test]
fn a_demo_port_in_use_is_named() {
    let d = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port().to_string();
    let o = cutover(d.path(), &["demo", "--no-tui", "--live-port", &port]);
    assert_exit(&o, 1, "the message names the port", &[&port]);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn secrets_reach_no_output_no_log_and_no_audit_line() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("c.toml");
    // An exec router whose command takes a password in argv and prints credentials, and an
    // environment variable that the config names as a credential.
    std::fs::write(
        &p,
        "[settings]\ntimeout = \"300ms\"\n\n[[environment]]\nname = \"shop\"\n\n\
         [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:9\"\n\n\
         [[environment.slot]]\nname = \"green\"\naddress = \"http://127.0.0.1:9\"\n\n\
         [[environment.router]]\nkind = \"exec\"\nname = \"lb\"\npass_env = [\"LB_TOKEN\"]\n\
         observe = [\"sh\", \"-c\", \"echo 'Authorization: Bearer tok-AAA'; \
         echo password=pw-BBB token=tk-DDD >&2; echo env $LB_TOKEN >&2; exit 3\", \
         \"sh\", \"--password\", \"argv-CCC\"]\n\
         switch_live = [\"true\", \"--password=argv-FFF\"]\n",
    )
    .expect("write");
    let ps = p.to_str().expect("utf8");
    let secrets = [
        "tok-AAA", "pw-BBB", "argv-CCC", "tk-DDD", "env-EEE", "argv-FFF",
    ];
    let run = |args: &[&str]| {
        let mut all = vec!["--config", ps];
        all.extend_from_slice(args);
        Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(&all)
            .env("XDG_STATE_HOME", d.path().join("state"))
            .env("LB_TOKEN", "env-EEE")
            .env_remove("CUTOVER_CONFIG")
            .stdin(Stdio::null())
            .output()
            .expect("run cutover")
    };
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["check", "--json"],
        &["check"],
        &[
            "swap", "shop", "--to", "green", "--yes", "--force", "--json",
        ],
        &["swap", "shop", "--to", "green", "--yes", "--force"],
    ] {
        let o = run(args);
        let t = printed(&o);
        assert!(
            t.contains("exit code 3"),
            "{args:?}: the failure is shown: {t}"
        );
        for s in secrets {
            assert!(!t.contains(s), "{args:?} printed {s}: {t}");
        }
    }
    let state = d.path().join("state/cutover");
    let files = files_under(&state);
    let log = files
        .iter()
        .find(|f| f.to_string_lossy().contains("cutover.log."))
        .unwrap_or_else(|| panic!("no debug log in {files:?}"));
    let text = std::fs::read_to_string(log).expect("read log");
    assert!(
        text.contains("--password ***"),
        "the command is logged: {text}"
    );
    let audit = files
        .iter()
        .find(|f| f.to_string_lossy().contains("audit."))
        .unwrap_or_else(|| panic!("no audit log in {files:?}"));
    assert!(
        std::fs::read_to_string(audit)
            .expect("read audit")
            .contains("exit code 3"),
        "the swap is audited"
    );
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        for s in secrets {
            assert!(!text.contains(s), "{} holds {s}:\n{text}", f.display());
        }
        let mode = std::fs::metadata(f).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is {mode:o}", f.display());
    }
    let mode = std::fs::metadata(&state)
        .expect("meta")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "the state dir is {mode:o}");
}

#[test]
fn config_mistakes_exit_2_and_say_what_is_wrong_and_where() {
    let d = tempfile::tempdir().expect("tempdir");
    let dir = d.path().to_str().expect("utf8");
    let o = cutover(d.path(), &["--config", dir, "status"]);
    let t = assert_exit(&o, 2, "a directory", &["is a directory, not a config file"]);
    common::assert_lacks(&t, ":0:0");

    let p = d.path().join("c.toml");
    let good = std::fs::read_to_string(config_with(d.path(), "http://127.0.0.1:9")).expect("read");
    let (no_router, _) = good.split_once("[[environment.router]]").expect("a router");
    std::fs::write(&p, no_router).expect("write");
    let ps = p.to_str().expect("utf8");
    let o = cutover(d.path(), &["--config", ps, "status"]);
    assert_exit(
        &o,
        2,
        "no router",
        &[
            "c.toml:5:8: field `router`",
            "has no [[environment.router]]",
        ],
    );

    std::fs::write(
        &p,
        good.replace("timeout = \"300ms\"", "theme = \"no-such\""),
    )
    .expect("write");
    let o = cutover(d.path(), &["--config", ps, "status"]);
    assert_exit(
        &o,
        2,
        "unknown theme",
        &["c.toml:2:9: field `theme`: unknown theme `no-such`"],
    );

    // A token variable the config names but the environment lacks.
    let embedded = good.replace(
        "kind = \"exec\"\nobserve = [\"sh\", \"-c\", \"echo live=blue\"]\n",
        "kind = \"embedded\"\ntoken_env = \"CUTOVER_TEST_CLI_UNSET_TOKEN\"\n",
    );
    std::fs::write(&p, embedded).expect("write");
    for args in [&["--config", ps, "status"][..], &["--config", ps, "proxy"]] {
        let o = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(args)
            .env("XDG_STATE_HOME", d.path().join("state"))
            .env_remove("CUTOVER_TEST_CLI_UNSET_TOKEN")
            .stdin(Stdio::null())
            .output()
            .expect("run cutover");
        let what = format!("{args:?}");
        assert_exit(&o, 2, &what, &["$CUTOVER_TEST_CLI_UNSET_TOKEN is not set"]);
    }
}

#[test]
fn demo_port_mistakes_are_usage_errors() {
    let d = tempfile::tempdir().expect("tempdir");
    for (args, want) in [
        (
            &["demo", "--no-tui", "--slot-port", "65534"][..],
            "--slot-port 65534 is too high",
        ),
        (
            &[
                "demo",
                "--no-tui",
                "--live-port",
                "18080",
                "--preview-port",
                "18080",
            ],
            "--live-port and --preview-port are both port 18080",
        ),
        (
            &["demo", "--no-tui", "--slot-port", "8080"],
            "--live-port and slot `blue`",
        ),
    ] {
        let o = cutover(d.path(), args);
        assert_exit(&o, 2, &format!("{args:?}"), &[want]);
    }
}
