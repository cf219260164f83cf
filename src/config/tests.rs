#[test]
fn canary_steps_rise_to_100() {
    assert_eq!(
        parse_canary_steps(&["5%", "25%", "50%", "100%"]),
        Ok(DEFAULT_CANARY_STEPS.to_vec())
    );
    assert_eq!(
        parse_canary_steps(&["50", "pause", "100"]),
        Ok(vec![
            CanaryStep::Weight(50),
            CanaryStep::Pause,
            CanaryStep::Weight(100)
        ])
    );
    assert!(
        parse_canary_steps(&["25%", "5%", "100%"])
            .unwrap_err()
            .contains("rise")
    );
    assert!(
        parse_canary_steps(&["5%", "50%"])
            .unwrap_err()
            .contains("100%")
    );
    assert!(
        parse_canary_steps(&["0%", "100%"])
            .unwrap_err()
            .contains("1% to 100%")
    );
    assert!(parse_canary_steps::<&str>(&[]).is_err());
}

use super::*;

const GOOD: &str = include_str!("testdata/good.toml");

/// Where an error points: its line and column, and the field it names.
fn place(e: &ConfigError) -> (usize, usize, Option<&str>) {
    (e.line, e.column, e.field.as_deref())
}

/// Where an error points: its line, and the field it names.
fn line_and_field(e: &ConfigError) -> (usize, Option<&str>) {
    (e.line, e.field.as_deref())
}

/// The error of `GOOD` with `from` replaced by `to`, which must say `says`.
#[track_caller]
fn refused(from: &str, to: &str, says: &str) -> ConfigError {
    let e = err(&GOOD.replace(from, to));
    assert!(e.message.contains(says), "{e}");
    e
}

fn err(src: &str) -> ConfigError {
    match parse(src, Path::new("cutover.toml")) {
        Ok(_) => panic!("config was accepted:\n{src}"),
        Err(e) => e,
    }
}

#[test]
fn the_store_is_the_state_dir_or_an_etcd_cluster() {
    let c = parse(GOOD, Path::new("cutover.toml")).expect("good");
    assert_eq!(c.settings.store, StoreSetting::File);
    let file = GOOD.replace("poll_interval = \"1s\"\n", "store = \"file\"\n");
    let c = parse(&file, Path::new("cutover.toml")).expect("store = file");
    assert_eq!(c.settings.store, StoreSetting::File);
    let etcd = GOOD.replace(
        "poll_interval = \"1s\"\n",
        "[settings.store]\netcd = [\"http://127.0.0.1:2379\", \"http://127.0.0.1:22379\"]\n",
    );
    let c = parse(&etcd, Path::new("cutover.toml")).expect("etcd");
    let StoreSetting::Etcd(e) = &c.settings.store else {
        panic!("{:?}", c.settings.store)
    };
    assert_eq!(e.etcd.len(), 2);
    assert_eq!(e.prefix, "/cutover/");
    assert_eq!(e.lease_ttl, Duration::from_secs(10));
    let e = err(&GOOD.replace("poll_interval = \"1s\"\n", "store = \"consul\"\n"));
    assert!(e.message.contains("unknown store `consul`"), "{e}");
    let e = err(&GOOD.replace("poll_interval = \"1s\"\n", "[settings.store]\netcd = []\n"));
    assert_eq!(line_and_field(&e), (4, Some("store")), "{e}");
    assert!(e.message.contains("no member"), "{e}");
    let e = err(&GOOD.replace(
        "poll_interval = \"1s\"\n",
        "[settings.store]\netcd = [\"127.0.0.1:2379\"]\n",
    ));
    assert!(e.message.contains("not an http://"), "{e}");
    let e = err(&GOOD.replace(
        "poll_interval = \"1s\"\n",
        "[settings.store]\netcd = [\"http://127.0.0.1:2379\"]\nprefx = \"/x/\"\n",
    ));
    assert!(e.message.contains("did you mean `prefix`"), "{e}");
}

#[test]
fn the_embedded_proxy_keeps_its_state_in_the_state_dir() {
    let src = GOOD.replace(
        "poll_interval = \"1s\"\n",
        "poll_interval = \"1s\"\nstate_dir = \"/srv/cutover\"\n",
    ) + "[[environment.router]]\nkind = \"embedded\"\n";
    let c = parse(&src, Path::new("x.toml")).expect("valid");
    let crate::router::RouterConfig::Embedded(r) = &c.environments[0].routers[0] else {
        panic!("embedded")
    };
    assert_eq!(
        r.state_file.as_deref(),
        Some(Path::new("/srv/cutover/proxy-shop.json"))
    );
    // Whatever name it is given, the path stays in the state dir.
    let mut r = r.clone();
    r.state_file = None;
    let dir = Path::new("/srv/cutover");
    for env in ["../../evil", "..", "a/b", ".x"] {
        let p = r.state_path_in(env, dir);
        assert_eq!(p.parent(), Some(dir), "{env}: {}", p.display());
        let name = p.file_name().map(|n| n.to_string_lossy().to_string());
        assert!(name.is_some_and(|n| crate::paths::file_in(dir, &n).is_some()));
    }
}

#[test]
fn a_good_config_has_defaults_filled_in() {
    let c = parse(&with_router(""), Path::new("x.toml")).expect("valid");
    assert_eq!(c.settings.poll_interval, Duration::from_secs(1));
    assert_eq!(c.settings.timeout, Duration::from_secs(1));
    let e = &c.environments[0];
    assert_eq!(e.gate_checks, 3);
    assert_eq!(e.watch, Duration::from_secs(30));
    assert_eq!(e.slots[0].health_url, "http://127.0.0.1:9001/health");
    assert_eq!(e.slots[0].version_url, "http://127.0.0.1:9001/version");
    assert_eq!(e.slots[1].health_url, "http://127.0.0.1:9002/healthz");
    assert_eq!(e.slots[1].version_pointer.as_deref(), Some("/version"));
}

#[test]
fn unknown_key_names_line_column_and_field() {
    let src = GOOD.replace("poll_interval = \"1s\"", "poll_intervall = \"1s\"");
    let e = err(&src);
    assert_eq!((e.line, e.column), (3, 1), "{e}");
    assert!(e.to_string().starts_with("cutover.toml:3:1:"), "{e}");
    assert!(e.message.contains("unknown field `poll_intervall`"), "{e}");
    assert!(e.message.contains("did you mean `poll_interval`?"), "{e}");
}

#[test]
fn bad_duration_says_how_to_write_one() {
    let e = err(&GOOD.replace("\"1s\"", "\"fast\""));
    assert_eq!(e.line, 3);
    assert_eq!(e.field.as_deref(), Some("poll_interval"));
    assert!(e.message.contains("\"500ms\""), "{e}");
}

#[test]
fn wrong_type_is_located() {
    let e = err(&GOOD.replace("name = \"blue\"", "name = 7"));
    assert_eq!(e.line, 10, "{e}");
    assert_eq!(e.field.as_deref(), Some("name"));
}

#[test]
fn duplicate_slot_is_refused_at_the_second_one() {
    let e = refused(
        "name = \"green\"",
        "name = \"blue\"",
        "slot `blue` is defined twice",
    );
    assert_eq!(e.line, 14, "{e}");
}

#[test]
fn bad_url_is_refused() {
    let e = refused("http://127.0.0.1:9001", "127.0.0.1:9001", "not an http");
    assert_eq!(place(&e), (11, 11, Some("address")), "{e}");
    refused(
        "http://127.0.0.1:9001",
        "http://127.0.0.1:99999",
        "bad port",
    );
}

#[test]
fn bad_health_path_and_pointer_are_refused() {
    let e = err(&GOOD.replace("http://127.0.0.1:9002/healthz", "healthz"));
    assert_eq!(e.field.as_deref(), Some("health"));
    let e = err(&GOOD.replace("\"/version\"", "\"version\""));
    assert_eq!(e.field.as_deref(), Some("version_pointer"));
    assert!(e.message.contains("JSON pointer"));
}

#[test]
fn missing_environment_and_missing_slots_are_explained() {
    let e = err("[settings]\n");
    assert!(e.message.contains("cutover init"), "{e}");
    let e = err("[[environment]]\nname = \"x\"\n");
    assert_eq!(e.line, 2);
    assert!(e.message.contains("has no [[environment.slot]]"), "{e}");
}

#[test]
fn missing_required_field_is_named() {
    refused(
        "address = \"http://127.0.0.1:9001\"\n",
        "",
        "missing field `address`",
    );
}

#[test]
fn names_used_in_paths_are_refused_at_their_own_line() {
    let e = refused(
        "name = \"shop\"",
        "name = \"../../evil\"",
        "`../../evil` is not allowed",
    );
    assert_eq!(place(&e), (6, 8, Some("name")), "{e}");
    assert!(
        e.to_string().starts_with("cutover.toml:6:8: field `name`:"),
        "{e}"
    );
    let e = err(&GOOD.replace("name = \"blue\"", "name = \".blue\""));
    assert_eq!(line_and_field(&e), (10, Some("name")), "{e}");
    let e = err(&GOOD.replace("name = \"green\"", "name = \"gr een\""));
    assert_eq!(e.line, 14, "{e}");
    let src = format!("{GOOD}\n[[environment.router]]\nkind = \"embedded\"\n\nname = \"a/b\"\n");
    let e = err(&src);
    assert_eq!(place(&e), (22, 8, Some("name")), "{e}");
    assert!(e.message.contains("router name `a/b`"), "{e}");
    let src = GOOD.replace(
        "name = \"blue\"\n",
        "nodes = [{ name = \"..\", address = \"http://127.0.0.1:1\" }]\nname = \"blue\"\n",
    );
    let e = err(&src);
    assert_eq!(line_and_field(&e), (10, Some("nodes")), "{e}");
}

/// GOOD with an embedded router table holding `fields`; the table's header is line 19.
fn with_router(fields: &str) -> String {
    format!("{GOOD}\n[[environment.router]]\nkind = \"embedded\"\n{fields}")
}

#[test]
fn a_bad_router_value_is_named_at_its_own_line() {
    let e = err(&with_router(
        "live_listen = \"127.0.0.1:1\"\nretry_after = -3\n",
    ));
    assert_eq!(place(&e), (22, 15, Some("retry_after")), "{e}");
    assert!(
        e.to_string()
            .starts_with("cutover.toml:22:15: field `retry_after`: invalid value"),
        "{e}"
    );
}

#[test]
fn an_unknown_router_key_is_named_at_its_own_line_with_a_suggestion() {
    let e = err(&with_router(
        "live_listen = \"127.0.0.1:1\"\nretry_aftr = 3\n",
    ));
    assert_eq!(place(&e), (22, 1, Some("retry_aftr")), "{e}");
    assert!(e.message.contains("unknown field `retry_aftr`"), "{e}");
    assert!(e.message.contains("did you mean `retry_after`?"), "{e}");
    let src = GOOD.to_string() + "\n[[environment.router]]\nkindx = \"embedded\"\n";
    let e = err(&src);
    assert_eq!(place(&e), (20, 1, Some("kindx")), "{e}");
    assert!(e.message.contains("missing field `kind`"), "{e}");
    assert!(e.message.contains("did you mean `kind`?"), "{e}");
    let e = err(&(GOOD.to_string() + "\n[[environment.router]]\nkind = \"embeded\"\n"));
    assert_eq!(
        (e.line, e.column, e.field.as_deref()),
        (20, 8, Some("kind")),
        "{e}"
    );
    assert!(e.message.contains("did you mean `embedded`?"), "{e}");
}

#[test]
fn settings_out_of_range_are_refused_at_their_line() {
    for (line, field, text) in [
        (4, "max_body", "max_body = 0"),
        (4, "history", "history = 0"),
        (4, "history", "history = 100000000000"),
        (4, "gate_checks", "gate_checks = 0"),
        (4, "timeout", "timeout = \"0s\""),
    ] {
        let e = err(&GOOD.replace(
            "poll_interval = \"1s\"\n",
            &format!("poll_interval = \"1s\"\n{text}\n"),
        ));
        assert_eq!(e.line, line, "{text}: {e}");
        assert_eq!(e.field.as_deref(), Some(field), "{text}: {e}");
        assert!(e.message.contains("between") || e.message.contains("more than zero"));
    }
    let e = err(&GOOD.replace("\"1s\"", "\"8d\""));
    assert_eq!(line_and_field(&e), (3, Some("poll_interval")), "{e}");
    assert!(e.message.contains("7 days"), "{e}");
}

#[test]
fn an_environment_needs_a_router_and_a_verify_timeout() {
    let no_router = GOOD.to_string();
    let e = match parse_strict(&no_router, Path::new("cutover.toml")) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    assert_eq!(line_and_field(&e), (6, Some("router")), "{e}");
    assert!(e.message.contains("has no [[environment.router]]"), "{e}");
    let src = with_router("").replace(
        "name = \"shop\"\n",
        "name = \"shop\"\nverify_timeout = \"0s\"\n",
    );
    let e = err(&src);
    assert_eq!(place(&e), (7, 18, Some("verify_timeout")), "{e}");
}

#[test]
fn a_file_that_cannot_be_read_says_what_is_wrong() {
    let d = tempfile::tempdir().expect("tempdir");
    let e = load(d.path()).expect_err("a directory");
    assert!(e.to_string().contains("is a directory"), "{e}");
    assert!(!e.to_string().contains(":0:0"), "{e}");
    let e = load(&d.path().join("none.toml")).expect_err("missing");
    assert!(
        e.to_string()
            .contains("no such file; create one with `cutover init"),
        "{e}"
    );
    let p = d.path().join("latin1.toml");
    std::fs::write(&p, b"[settings]\ntheme = \"caf\xe9\"\n").expect("write");
    let e = load(&p).expect_err("not UTF-8");
    assert_eq!((e.line, e.column), (2, 13), "{e}");
    assert!(e.message.contains("not UTF-8"), "{e}");
}

#[test]
fn loading_hands_the_credentials_it_names_to_redaction() {
    let d = tempfile::tempdir().expect("tempdir");
    let p = d.path().join("c.toml");
    let src = GOOD.to_string()
        + "\n[[environment.router]]\nkind = \"exec\"\nobserve = [\"true\"]\n\
           env = { LB_TOKEN = \"cfg-secret-XYZ\", REGION = \"eu-west-1\" }\n";
    std::fs::write(&p, &src).expect("write");
    // Parsing alone registers nothing.
    parse(&src, &p).expect("valid");
    assert!(crate::redact::redact("cfg-secret-XYZ").contains("XYZ"));
    load(&p).expect("valid");
    assert_eq!(
        crate::redact::redact("lb said cfg-secret-XYZ in eu-west-1"),
        "lb said *** in eu-west-1"
    );
}

#[test]
fn hooks_parse_with_defaults_and_both_path_forms() {
    let src = GOOD.replace(
        "public_url = \"http://127.0.0.1:8080/\"\n",
        "public_url = \"http://127.0.0.1:8080/\"\n\
         warmup_paths = [\"/\", { path = \"/api\", times = 5, expect_status = 204 }]\n\
         smoke = [\"./login-test\", \"{public_url}\"]\n\
         smoke_paths = [{ path = \"/login\", body_contains = \"Sign in\" }]\n\
         on_done = [\"notify\", \"{env} {to} {version} {result}\"]\n",
    );
    let c = parse(&src, Path::new("x.toml")).expect("valid");
    let h = &c.environments[0].hooks;
    let warm = &h.warmup.paths;
    assert_eq!(warm.len(), 2);
    assert_eq!((warm[0].times, warm[0].expect_status), (1, 200));
    assert_eq!((warm[1].times, warm[1].expect_status), (5, 204));
    assert_eq!(h.smoke.paths[0].body_contains.as_deref(), Some("Sign in"));
    assert_eq!(h.smoke.timeout, crate::hooks::DEFAULT_SMOKE_TIMEOUT);
    assert!(h.has_warmup() && h.has_smoke());
    assert_eq!(h.commands().len(), 2);
    assert!(
        parse(GOOD, Path::new("x.toml"))
            .expect("valid")
            .environments[0]
            .hooks
            .commands()
            .is_empty()
    );
}

#[test]
fn bad_hooks_name_line_column_and_field() {
    let with = |line: &str| {
        GOOD.replace(
            "public_url = \"http://127.0.0.1:8080/\"\n",
            &format!("public_url = \"http://127.0.0.1:8080/\"\n{line}\n"),
        )
    };
    // Line 8: the line after public_url.
    let e = err(&with("smoke = [\"./t\", \"{public_ur}\"]"));
    assert_eq!(line_and_field(&e), (8, Some("smoke")), "{e}");
    assert!(
        e.message.contains("unknown placeholder `{public_ur}`"),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("cutover.toml:8:9: field `smoke`"),
        "{e}"
    );
    let e = err(&with("warmup_command = [\"./w\", \"{public_url}\"]"));
    assert_eq!(e.field.as_deref(), Some("warmup_command"), "{e}");
    let e = err(&with("on_failed = []"));
    assert_eq!(e.field.as_deref(), Some("on_failed"), "{e}");
    assert!(e.message.contains("empty"), "{e}");
    let e = err(&with("warmup_paths = [\"/ok\", \"api\"]"));
    assert_eq!(line_and_field(&e), (8, Some("warmup_paths")), "{e}");
    assert!(e.message.contains("starting with /"), "{e}");
    let e = err(&with("warmup_paths = [{ path = \"/\", times = 0 }]"));
    assert!(e.message.contains("at least 1"), "{e}");
    let e = err(&with(
        "smoke_paths = [{ path = \"/\", expect_status = 999 }]",
    ));
    assert_eq!(e.field.as_deref(), Some("smoke_paths"), "{e}");
    let e = err(&with("smoke_paths = [{ path = \"/\", body = \"x\" }]"));
    assert_eq!(e.line, 8, "{e}");
    assert!(e.message.contains("unknown field `body`"), "{e}");
    let e = err(&with("warmup_paths = [7]"));
    assert!(e.message.contains("a path"), "{e}");
    let e = err(&with("smoke_timeout = \"0s\""));
    assert_eq!(line_and_field(&e), (8, Some("smoke_timeout")), "{e}");
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(line_col("ab\ncd", 4), (2, 2));
    assert_eq!(line_col("ab", 0), (1, 1));
}

#[test]
fn a_canary_plan_in_the_config_is_checked_field_by_field() {
    let with = |lines: &str| {
        GOOD.replace(
            "public_url = \"http://127.0.0.1:8080/\"\n",
            &format!("public_url = \"http://127.0.0.1:8080/\"\n{lines}"),
        )
    };
    let ok = parse(
        &with(
            "canary_steps = [\"10%\", \"pause\", \"100%\"]\ncanary_max_latency = \"250ms\"\n\
             canary_max_error_rate_over_stable = 0.02\ncanary_failure_limit = 0\n",
        ),
        Path::new("cutover.toml"),
    )
    .expect("a canary plan");
    let e = &ok.environments[0];
    assert_eq!(
        e.canary.steps,
        [
            CanaryStep::Weight(10),
            CanaryStep::Pause,
            CanaryStep::Weight(100)
        ]
    );
    assert_eq!(
        (
            e.canary.max_latency,
            e.canary.max_error_rate_over_stable,
            e.canary.failure_limit
        ),
        (Some(Duration::from_millis(250)), Some(0.02), 0)
    );
    let bad = err(&with("canary_max_error_rate_over_stable = 2\n")).to_string();
    assert!(
        bad.contains("canary_max_error_rate_over_stable") && bad.contains("fraction"),
        "{bad}"
    );
    let bad = err(&with("canary_steps = [\"10%\", \"later\", \"100%\"]\n")).to_string();
    assert!(bad.contains("`later` is neither `pause`"), "{bad}");
    // A zero pause is refused when the config loads, not when a canary runs, at its line.
    let src = with("canary_pause = \"0s\"\n");
    let e = err(&src);
    assert_eq!(
        (e.field.as_deref(), e.line),
        (Some("canary_pause"), line_of(&src, "canary_pause")),
        "{e}"
    );
}

/// The line (from 1) of the last line of `src` that starts with `key`.
fn line_of(src: &str, key: &str) -> usize {
    src.lines()
        .enumerate()
        .filter(|(_, l)| l.starts_with(key))
        .last()
        .expect("the key is in the source")
        .0
        + 1
}

#[test]
fn a_canary_query_is_checked_field_by_field() {
    let with = |table: &str| format!("{GOOD}\n[[environment.canary_query]]\n{table}");
    let ok = parse(
        &with(
            "name = \"5xx\"\nurl = \"http://127.0.0.1:9090/prom\"\n\
             query = 'sum(rate(x{slot=\"{canary}\"}[1m])) or vector(0)'\npass = \"< 0.01\"\n",
        ),
        Path::new("cutover.toml"),
    )
    .expect("a canary query");
    let q = &ok.environments[0].canary.queries[0];
    assert_eq!(
        (q.name.as_str(), q.pass.to_string(), q.timeout),
        ("5xx", "< 0.01".to_string(), Duration::from_secs(5))
    );
    assert_eq!(
        q.text("green", "blue"),
        "sum(rate(x{slot=\"green\"}[1m])) or vector(0)"
    );
    let query = "query = \"up\"\n";
    for (table, field, says) in [
        (
            format!("url = \"http://p:9090\"\n{query}pass = \"0.01\"\n"),
            "pass",
            "not a comparison",
        ),
        (
            format!("url = \"p:9090\"\n{query}pass = \"< 1\"\n"),
            "url",
            "not a Prometheus URL",
        ),
        (
            "url = \"http://p:9090\"\nquery = \" \"\npass = \"< 1\"\n".into(),
            "query",
            "is empty",
        ),
        (
            format!("url = \"http://p:9090\"\n{query}pass = \"< 1\"\nwait = 1\n"),
            "wait",
            "unknown field",
        ),
    ] {
        let e = err(&with(&table));
        assert_eq!(e.field.as_deref(), Some(field), "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(e.line > 1, "{e}");
    }
    // A zero timeout is pointed at on its own line (not the url's).
    let src = with(&format!(
        "url = \"http://p:9090\"\n{query}pass = \"< 1\"\ntimeout = \"0s\"\n"
    ));
    let e = err(&src);
    assert_eq!(
        (e.field.as_deref(), e.line),
        (Some("timeout"), line_of(&src, "timeout")),
        "{e}"
    );
}
