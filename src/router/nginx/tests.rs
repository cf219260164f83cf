use super::*;

#[test]
fn upstream_blocks_are_read_back_with_down_flags() {
    let t = "# c\nupstream a { server 127.0.0.1:1; server 127.0.0.1:2 down max_fails=3; }\n\
             upstream b {\n server \"h:3\" weight=2;  # node x\n}\nmap $x $y { default \"\"; }";
    let u = parse_upstreams(t);
    assert_eq!(
        u["a"],
        vec![
            ServerLine {
                addr: "127.0.0.1:1".into(),
                down: false
            },
            ServerLine {
                addr: "127.0.0.1:2".into(),
                down: true
            }
        ]
    );
    assert_eq!(u["b"][0].addr, "h:3");
    assert_eq!(u.len(), 2);
}

#[test]
fn tokens_skip_comments_and_unquote() {
    assert_eq!(
        tokenize("return 503 \"a \\\"b\\\" # c\"; # gone\nproxy_pass x;"),
        vec!["return", "503", "a \"b\" # c", ";", "proxy_pass", "x", ";"]
    );
}

#[test]
fn a_split_is_read_back_from_the_blocks_it_writes() {
    let slots = ["blue", "green"].map(|n| {
        Slot::new(
            n,
            crate::model::Address::parse(&format!("http://127.0.0.1:{}", 9000 + n.len())).unwrap(),
        )
    });
    for method in [Method::Include, Method::Realpath] {
        let cfg: Config = toml::from_str(&format!(
            "dir = \"/srv/cutover/shop\"\nmethod = \"{}\"",
            method.name()
        ))
        .unwrap();
        let env = EnvSlots {
            name: "shop",
            slots: &slots,
        };
        let n = Nginx::new("nginx", env, &cfg).unwrap();
        for percent in [1u8, 5, 25, 50, 99, 100] {
            let w = Weights {
                live: "blue".into(),
                canary: "green".into(),
                canary_percent: percent,
            };
            let text = n.render_split(&w).unwrap();
            let mut read = n.parse_split(&text).unwrap();
            if method == Method::Realpath {
                assert_eq!(read.live, "", "the realpath map follows the live link");
                read.live = "blue".into();
            }
            assert_eq!(read, w, "{text}");
        }
        assert_eq!(n.parse_split("upstream a { server 127.0.0.1:1; }"), None);
    }
}
