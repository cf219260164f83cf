use super::*;
use crate::model::{Address, Node};

fn slots() -> Vec<Slot> {
    ["blue", "green"]
        .iter()
        .map(|n| Slot {
            nodes: if *n == "blue" {
                vec![Node {
                    name: "web1".into(),
                    address: Address::parse("http://10.0.0.1:80").expect("valid"),
                }]
            } else {
                vec![]
            },
            ..Slot::new(
                n,
                Address::parse(&format!("http://{n}.example.org:8080")).expect("valid"),
            )
        })
        .collect()
}

fn phs(arg: &str) -> Vec<&str> {
    placeholders_in(arg)
}

#[test]
fn placeholders_are_words_in_single_braces() {
    assert_eq!(phs("--slot={to}"), vec!["to"]);
    assert_eq!(phs("{from}->{to}"), vec!["from", "to"]);
    assert!(phs(r#"{"spec":{"selector":{"slot":"x"}}}"#).is_empty());
    assert_eq!(phs(r#"{"spec":{"selector":{"slot":"{to}"}}}"#), vec!["to"]);
    assert!(phs("{{if eq .metadata.name \"shop\"}}live{{end}}").is_empty());
    assert!(phs("echo ${HOME} ${1}").is_empty());
    assert!(phs("awk '{ print }' {} {1x}").is_empty());
    assert_eq!(phs("{foo}"), vec!["foo"]);
}

#[test]
fn render_fills_values_and_explains_missing_ones() {
    let mut v = Values::new("shop");
    v.set("to", "green");
    v.missing("node", "whole slot");
    let argv = vec![r#"{"slot":"{to}"}"#.to_string(), "{env}".into()];
    let out = render(Cmd::SwitchLive, &argv, &v).expect("renders");
    assert_eq!(out, vec![r#"{"slot":"green"}"#, "shop"]);
    let e = render(Cmd::Drain, &["{node}".to_string()], &v).expect_err("no node");
    assert!(
        e.to_string().contains("`{node}`") && e.to_string().contains("whole slot"),
        "{e}"
    );
}

/// What both observe formats' examples say: blue live, green the preview, and maintenance
/// redirecting to green.
fn assert_blue_live_green_preview_redirect(s: &RouterState) {
    assert_eq!(s.live.as_deref(), Some("blue"));
    assert_eq!(s.preview.as_deref(), Some("green"));
    assert_eq!(
        s.maintenance,
        Some(MaintenanceMode::Redirect { to: "green".into() })
    );
}

#[test]
fn json_schema_reads_every_field() {
    let out = r#"{"live":"blue","preview":"green","maintenance":{"mode":"redirect","to":"green"},
        "slots":{"blue":{"state":"Ready","sessions":3,"requests":"10","errors":0,"check":"UP",
                         "nodes":{"web1":{"state":"draining","sessions":1,"check":"L7OK"}}},
                 "green":{"state":"maint","sessions":null}},
        "notes":["alias TTL is 60s"]}"#;
    let s = parse_observe(out, &slots()).expect("parses");
    assert_blue_live_green_preview_redirect(&s);
    let b = &s.slots["blue"];
    assert_eq!(
        (b.admin, b.sessions, b.requests, b.errors),
        (AdminState::Ready, Some(3), Some(10), Some(0))
    );
    assert_eq!(b.check.as_deref(), Some("UP"));
    assert_eq!(b.nodes[0].name, "web1");
    assert_eq!(b.nodes[0].admin, AdminState::Drain);
    assert_eq!(s.slots["green"].admin, AdminState::Maint);
    assert_eq!(s.slots["green"].sessions, None);
    assert_eq!(s.notes, vec!["alias TTL is 60s"]);
}

#[test]
fn key_value_lines_read_the_same_state() {
    let out = "# from the test\nlive = blue\npreview=\"green\"\nmaintenance=redirect:green\n\
               blue.state=ready\nblue.sessions=3\nblue/web1.state=drain\nnote=one\nnote=two\n";
    let s = parse_observe(out, &slots()).expect("parses");
    assert_blue_live_green_preview_redirect(&s);
    assert_eq!(s.slots["blue"].sessions, Some(3));
    assert_eq!(s.slots["blue"].nodes[0].admin, AdminState::Drain);
    assert_eq!(s.notes, vec!["one", "two"]);
    let s = parse_observe("live=blue\npreview=\nmaintenance=on", &slots()).expect("parses");
    assert_eq!(s.preview, None);
    assert_eq!(s.maintenance, Some(MaintenanceMode::Page));
    let s = parse_observe(r#"{"live":null,"maintenance":true}"#, &slots()).expect("parses");
    assert_eq!(s.live, None);
}

#[test]
fn problems_are_read_in_both_forms() {
    let s = parse_observe(
        "live=blue\nproblem=no alias `www`\nproblem=no zone\nnote=ttl 60s\n",
        &slots(),
    )
    .expect("parses");
    assert_eq!(s.problems, vec!["no alias `www`", "no zone"]);
    assert_eq!(s.notes, vec!["ttl 60s"]);
    let s = parse_observe(r#"{"live":"blue","problems":"no zone"}"#, &slots()).expect("parses");
    assert_eq!(s.problems, vec!["no zone"]);
    let s = parse_observe(r#"{"live":"blue","problems":["a","b"]}"#, &slots()).expect("parses");
    assert_eq!(s.problems, vec!["a", "b"]);
    let e = parse_observe(r#"{"live":"blue","problems":[1]}"#, &slots()).expect_err("a number");
    assert!(e.contains("`problems` holds"), "{e}");
}

#[test]
fn mistakes_in_observe_output_are_named() {
    let e = |out: &str| parse_observe(out, &slots()).expect_err(out);
    assert!(e("live=purple").contains("`purple` is not a slot"));
    assert!(e("live=\npreview=green").contains("`live` is empty"));
    assert!(e(r#"{"live":""}"#).contains("`live` is empty"));
    assert!(e("preview=green").contains("did not say which slot is live"));
    assert!(e(r#"{"preview":"green"}"#).contains("did not say which slot is live"));
    assert!(e("live=blue\nlive=green").contains("given twice"));
    assert!(e("lvie=blue").contains("unknown key `lvie`"));
    assert!(e("blue.state=reddy").contains("state `reddy`"));
    assert!(e("blue.sessions=-1").contains("whole number"));
    assert!(e("blue/web9.state=ready").contains("node `web9`"));
    assert!(e(r#"{"live":"blue","lvie":1}"#).contains("unknown key `lvie`"));
    assert!(e(r#"{"live":3}"#).contains("`live` is a number"));
    assert!(e(r#"{"slots":{"blue":{"weight":3}}}"#).contains("`slots.blue.weight`"));
    assert!(e(r#"{"maintenance":"sometimes"}"#).contains("maintenance `sometimes`"));
    assert!(e("").contains("printed nothing"));
    let long = format!("{{\"live\": \"blue\", {}", "x".repeat(500));
    let m = e(&long);
    assert!(m.contains("expected a JSON object"), "{m}");
    assert!(
        m.contains("`{\"live\": \"blue\", xxx") && m.contains("…`"),
        "{m}"
    );
}

fn cfg(extra: &str) -> Config {
    let src = format!("observe = [\"cat\", \"state\"]\n{extra}");
    toml::from_str(&src).expect("config parses")
}

#[test]
fn validate_explains_each_mistake() {
    let err = |extra: &str| cfg(extra).validate(&slots()).expect_err(extra);
    assert!(cfg("").validate(&slots()).is_ok());
    let c: Config = toml::from_str("switch_live = [\"x\"]").expect("parses");
    assert!(
        c.validate(&slots())
            .expect_err("no observe")
            .contains("needs `observe`")
    );
    assert!(err("switch_live = []").contains("`switch_live = []` is empty"));
    assert!(err("switch_live = [\"\"]").contains("first element"));
    let m = err("switch_live = [\"x\", \"--to={foo}\"]");
    assert!(
        m.contains("unknown placeholder `{foo}`") && m.contains("argument 2"),
        "{m}"
    );
    let m = err("drain = [\"x\", \"{to}\"]\nundrain = [\"x\"]");
    assert!(m.contains("`{to}` has no value in drain"), "{m}");
    assert!(err("drain = [\"x\"]").contains("without `undrain`"));
    assert!(err("maintenance_off = [\"x\"]").contains("without `maintenance_on`"));
    assert!(err("timeout = \"0s\"").contains("more than zero"));
    assert!(err("cwd = \"rel/dir\"").contains("absolute"));
    assert!(err("env = { \"A=B\" = \"x\" }").contains("not a variable name"));
    assert!(err("env = { A = \"x\" }\npass_env = [\"A\"]").contains("both in `env`"));
}

#[test]
fn stderr_tail_keeps_the_last_lines() {
    let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
    let t = tail_lines(&text);
    assert!(t.starts_with("… (10 earlier lines)"), "{t}");
    assert!(t.contains("line 11") && t.ends_with("line 30"));
    assert!(!t.contains("line 10\n"));
}

#[test]
fn observe_reads_the_canary_split_in_both_formats() {
    let s = slots();
    let want = Some(Weights {
        live: "blue".into(),
        canary: "green".into(),
        canary_percent: 25,
    });
    let lines = parse_observe("live=blue\nweights=green:25\n", &s).expect("lines");
    assert_eq!(lines.weights, want);
    let json = r#"{"live":"blue","weights":{"canary":"green","canary_percent":25}}"#;
    assert_eq!(parse_observe(json, &s).expect("json").weights, want);
    let short = r#"{"weights":"green:25","live":"blue"}"#;
    assert_eq!(parse_observe(short, &s).expect("string").weights, want);
    for none in [
        "live=blue\nweights=off\n",
        "live=blue\nweights=green:0\n",
        "live=blue\n",
    ] {
        assert_eq!(
            parse_observe(none, &s).expect("no split").weights,
            None,
            "{none}"
        );
    }
    let e = parse_observe("live=blue\nweights=purple:25\n", &s).expect_err("no such slot");
    assert!(e.contains("line 2") && e.contains("purple"), "{e}");
    let e = parse_observe("live=blue\nweights=green:125\n", &s).expect_err("over 100");
    assert!(e.contains("0 to 100"), "{e}");
}

#[test]
fn the_weights_command_takes_its_own_placeholders() {
    let base = Config {
        name: None,
        public_url: None,
        observe: Some(vec!["obs".into()]),
        switch_live: None,
        set_preview: None,
        drain: None,
        undrain: None,
        maintenance_on: None,
        maintenance_off: None,
        weights: Some(vec![
            "lb".into(),
            "{live}".into(),
            "{canary}".into(),
            "{weight}".into(),
        ]),
        timeout: DEFAULT_TIMEOUT,
        observe_timeout: None,
        env: BTreeMap::new(),
        pass_env: Vec::new(),
        cwd: None,
    };
    assert_eq!(base.validate(&slots()), Ok(()));
    let wrong = Config {
        weights: Some(vec!["lb".into(), "{slot}".into()]),
        ..base
    };
    let e = wrong
        .validate(&slots())
        .expect_err("{slot} has no value in weights");
    assert!(e.contains("weights"), "{e}");
}
