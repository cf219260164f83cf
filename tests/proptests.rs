//! Property tests: the parsers that read outside input never panic, whatever they are given.
//! Each input is either arbitrary text or a valid sample with a random slice replaced by
//! arbitrary text (which reaches deeper into a parser than noise does). Case counts are kept
//! at 256 per property so the file runs in seconds.
//!
//! The inputs: the config loader, version bodies (JSON pointer and plain text), HAProxy's
//! `show stat` / `show servers state` / `show map` answers and map files, Apache's
//! balancer-manager XML, a Caddy config document, exec `observe` output, key names and
//! `[keys]` tables, and the redaction every written text goes through.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

/// 256 cases per property; `PROPTEST_CASES=N` runs more, for a longer local search.
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `sample` with the bytes in `at..at+len` (clamped to char boundaries) replaced by `insert`.
fn mutate(sample: &str, at: usize, len: usize, insert: &str) -> String {
    let mut start = at % (sample.len() + 1);
    while !sample.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + len).min(sample.len());
    while !sample.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{insert}{}", &sample[..start], &sample[end..])
}

/// Arbitrary text, or one of `samples` mutated.
fn text_like(samples: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        (0..samples.len(), any::<usize>(), 0usize..40, "(?s).{0,24}")
            .prop_map(|(i, at, len, ins)| mutate(samples[i], at, len, &ins)),
    ]
}

/// Config samples (fixtures: TOML files, so that they are read as data).
const CONFIGS: &[&str] = &[
    include_str!("fixtures/proptest-config.toml"),
    include_str!("fixtures/proptest-config-exec.toml"),
];

const VERSIONS: &[&str] = &[
    r#"{"version":"1.4.2","commit":"abc","built":"2026-01-01"}"#,
    r#"{"build":{"v":"2.1"}}"#,
    "v9.9.9\nextra",
];

const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,check_desc\n\
public,FRONTEND,,,0,0,9982,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,\n\
be_blue,blue,0,0,1,1,,7,0,0,,0,,0,0,0,0,DRAIN,1,1,0,1,1,3,2,,1,4,1,,0,,2,0,,0,L4OK,,0,0,7,0,0,0,0,,,,,\"Layer7 wrong status, code: 503\"\n\
be_blue,BACKEND,0,0,1,1,1,7,0,0,0,0,,2,1,0,0,DOWN,0,0,0,,1,2,2,,1,4,0,,0,,1,0,,0,,,,0,0,0,0,3,0,,,,9,\n";

const SERVERS_STATE: &str = "1\n\
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n\
3 be_blue 1 blue 127.0.0.1 2 1 1 1 12 6 3 4 6 0 0 0 - 9001 - 0 0 - - 0\n\
4 be_green 1 green 127.0.0.1 2 0 1 1 12 6 3 4 6 0 0 0 - 9002 - 0 0 - - 0\n";

const MAPS: &[&str] = &[
    "0x55d1c0a1b2c0 live be_blue\n0x55d1c0a1b2d0 preview be_green\n",
    "# managed by cutover\nlive be_blue\npreview be_green\n",
    "be_blue\nbe_green\n",
];

const XML: &str = include_str!("fixtures/apache-manager-one.xml");

const CADDY: &str = r#"{"apps":{"http":{"servers":{"srv0":{"listen":[":8080"],"routes":[
{"@id":"shop_route","handle":[{"@id":"shop_live","handler":"reverse_proxy",
"upstreams":[{"dial":"127.0.0.1:9001"}]}]},
{"handle":[{"@id":"shop_preview","handler":"reverse_proxy","upstreams":[{"dial":"127.0.0.1:9002"}]}]}
]}}}}}"#;

const OBSERVE: &[&str] = &[
    r#"{"live":"blue","preview":"green","maintenance":null,"slots":{"blue":{"admin":"ready"}}}"#,
    "live=blue\npreview=green\nmaintenance=off\nblue.admin=drain\n",
];

const KEYS: &[&str] = &[
    "Ctrl-r", "F5", "S", "Enter", "Esc", "Tab", "Up", "?", "ctrl-x", "Space",
];

/// The environment the router-level parsers are given: slots blue and green.
fn environment() -> cutover::config::Environment {
    let text = include_str!("fixtures/proptest-caddy-env.toml");
    cutover::config::parse(text, Path::new("p.toml"))
        .expect("valid")
        .environments
        .remove(0)
}

/// A JSON document: arbitrary text parsed when it is JSON, or a generated value.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| Value::Number(n.into())),
        prop_oneof![
            Just("reverse_proxy".to_string()),
            Just("static_response".to_string()),
            Just("shop_live".to_string()),
            Just("127.0.0.1:9001".to_string()),
            ".{0,12}"
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("@id".to_string()),
                        Just("handler".to_string()),
                        Just("upstreams".to_string()),
                        Just("dial".to_string()),
                        Just("handle".to_string()),
                        Just("routes".to_string()),
                        "[a-z]{1,6}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_config_loader_never_panics(src in text_like(CONFIGS)) {
        let _ = cutover::config::parse(&src, Path::new("p.toml"));
        let _ = cutover::config::parse_strict(&src, Path::new("p.toml"));
    }

    #[test]
    fn version_bodies_never_panic(
        body in prop_oneof![
            any::<Vec<u8>>(),
            text_like(VERSIONS).prop_map(String::into_bytes),
        ],
        pointer in prop_oneof![
            Just(None),
            Just(Some("/version".to_string())),
            Just(Some("/build/v".to_string())),
            "/.{0,10}".prop_map(Some),
        ],
    ) {
        if let Ok(v) = cutover::probe::parse_version(&body, pointer.as_deref()) {
            // What is accepted is printable text.
            prop_assert!(!v.version.is_empty());
            prop_assert!(!v.version.chars().any(char::is_control));
        }
    }

    #[test]
    fn haproxy_answers_never_panic(
        stat in text_like(&[STAT]),
        state in text_like(&[SERVERS_STATE]),
        map in text_like(MAPS),
    ) {
        use cutover::router::haproxy;
        let _ = haproxy::parse_stat(&stat);
        let _ = haproxy::parse_servers_state(&state);
        let _ = haproxy::parse_map(&map);
        let _ = haproxy::parse_backends(&map);
        let _ = haproxy::read_map(&map);
    }

    #[test]
    fn apache_balancer_manager_xml_never_panics(xml in text_like(&[XML])) {
        let _ = cutover::router::apache::parse_balancer_manager(&xml);
    }

    #[test]
    fn a_caddy_config_document_never_panics(
        doc in prop_oneof![
            json_value(),
            // The sample with small cuts: still JSON now and then, a string otherwise.
            (any::<usize>(), 0usize..6, "[\\[\\]{}\",:a-z0-9@ ]{0,4}").prop_map(|(at, len, ins)| {
                let t = mutate(CADDY, at, len, &ins);
                serde_json::from_str(&t).unwrap_or(serde_json::Value::String(t))
            }),
        ]
    ) {
        let env = environment();
        let cutover::router::RouterConfig::Caddy(c) = &env.routers[0] else {
            panic!("caddy router")
        };
        let d = cutover::router::caddy::Driver::new("caddy".into(), &env, c).expect("driver");
        let _ = d.read_config(&doc);
    }

    #[test]
    fn exec_observe_output_never_panics(out in text_like(OBSERVE)) {
        let env = environment();
        let _ = cutover::router::exec::parse_observe(&out, &env.slots);
    }

    #[test]
    fn key_names_and_key_tables_never_panic(
        key in text_like(KEYS),
        table in prop::collection::btree_map(
            prop_oneof![Just("swap".to_string()), Just("rollback".to_string()), ".{0,8}"],
            prop::collection::vec(text_like(KEYS), 0..3),
            0..4,
        ),
    ) {
        let _ = cutover::keymap::parse_key(&key);
        let _ = cutover::keymap::Keymap::with_overrides(&table.into_iter().collect::<BTreeMap<_, _>>());
    }

    #[test]
    fn redaction_never_panics_and_is_stable(
        text in prop_oneof![
            any::<String>(),
            (
                prop_oneof![
                    Just("--password x"), Just("Authorization: Bearer t"), Just("token=a&b"),
                    Just("http://u:p@h/"), Just("\"secret\": \"s\""), Just("X-Api-Key: k"),
                ],
                any::<usize>(),
                0usize..8,
                ".{0,8}",
            )
                .prop_map(|(s, at, len, ins)| mutate(s, at, len, &ins)),
        ]
    ) {
        let once = cutover::redact::redact(&text);
        prop_assert_eq!(cutover::redact::redact(&once), once);
    }
}
