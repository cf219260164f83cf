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
