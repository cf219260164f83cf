use super::*;

const XML: &str = "<?xml version='1.0' encoding='UTF-8' ?>
<httpd:manager xmlns:httpd='http://httpd.apache.org'>
  <httpd:balancers>
<httpd:balancer>
  <httpd:name>balancer://live</httpd:name>
  <httpd:nonce>a940d02b</httpd:nonce>
  <httpd:workers>
    <httpd:worker>
      <httpd:name>http://127.0.0.1:19001</httpd:name>
      <httpd:status>Init Drn Ok </httpd:status>
      <httpd:elected>3</httpd:elected>
      <httpd:route>blue</httpd:route>
      <httpd:busy>2</httpd:busy>
    </httpd:worker>
    <httpd:worker>
      <httpd:name>http://127.0.0.1:19002</httpd:name>
      <httpd:status>Init Dis </httpd:status>
      <httpd:route>green</httpd:route>
      <httpd:busy>0</httpd:busy>
    </httpd:worker>
  </httpd:workers>
</httpd:balancer>
  </httpd:balancers>
</httpd:manager>";

#[test]
fn the_manager_xml_is_read() {
    let b = parse_xml(XML).expect("parses");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].name, "live");
    assert_eq!(b[0].nonce, "a940d02b");
    let w = &b[0].workers;
    assert_eq!(w[0].url, "http://127.0.0.1:19001");
    assert_eq!(w[0].route, "blue");
    assert_eq!((w[0].busy, w[0].elected), (2, 3));
    assert!(w[0].status.drain && w[0].status.in_rotation() && !w[0].status.serving());
    assert_eq!(w[0].status.admin(), AdminState::Drain);
    assert!(w[1].status.disabled && !w[1].status.in_rotation());
    assert_eq!(w[1].status.admin(), AdminState::Disabled);
}

#[test]
fn an_html_answer_is_explained() {
    let e = parse_xml("<html><title>Balancer Manager</title>").expect_err("not xml");
    assert!(e.to_string().contains("AH10187"), "{e}");
}

fn worker(url: &str, route: &str) -> Worker {
    Worker {
        url: url.into(),
        key: worker_url(url),
        route: route.into(),
        status_text: "Init Ok".into(),
        status: Status::default(),
        busy: 0,
        elected: 0,
        lf: 100,
        leftover: 0,
    }
}

#[test]
fn a_busy_count_that_stands_still_with_no_new_request_is_left_over() {
    let t0 = Instant::now();
    let idle = Duration::from_secs(10);
    let at = |s| t0 + Duration::from_secs(s);
    let w = |busy, elected| Worker {
        busy,
        elected,
        ..worker("http://h:1", "")
    };
    let mut t = BusyTrack::new("n1", &w(3, 100), t0);
    t.read("n1", &w(3, 100), at(5), idle);
    assert_eq!(t.leftover, 0, "still for less than idle_after: in flight");
    t.read("n1", &w(2, 100), at(6), idle);
    t.read("n1", &w(2, 100), at(15), idle);
    assert_eq!(t.leftover, 0, "a request ended 9 s ago");
    t.read("n1", &w(2, 100), at(16), idle);
    assert_eq!(t.leftover, 2, "nothing moved for 10 s: left over");
    // New requests count on top of it; when busy falls below it, so does the leftover.
    t.read("n1", &w(4, 102), at(17), idle);
    assert_eq!(t.leftover, 2);
    t.read("n1", &w(1, 102), at(18), idle);
    assert_eq!(t.leftover, 1);
    // A restart (new nonce) forgets it.
    t.read("n2", &w(1, 0), at(19), idle);
    assert_eq!(t.leftover, 0);
}

#[test]
fn members_map_to_slots_and_nodes() {
    let src = include_str!("testdata/members.toml");
    let c = crate::config::parse(src, Path::new("t.toml")).expect("valid");
    let env = &c.environments[0];
    let crate::router::RouterConfig::Apache(cfg) = &env.routers[0] else {
        panic!("apache")
    };
    let d = Driver::new("apache".into(), env.routed(), cfg).expect("driver");
    assert_eq!(d.live, "live");
    let own = |url: &str, route: &str| {
        d.owner(&worker(url, route))
            .map(|o| format!("{}/{}", o.slot, o.node.unwrap_or_default()))
    };
    // By default: the slot's address (trailing slash and case do not matter)...
    assert_eq!(own("http://10.0.0.1:9001", "").as_deref(), Some("blue/"));
    // ...or a node's address.
    assert_eq!(
        own("HTTP://10.0.0.21:9001/", "").as_deref(),
        Some("green/g1")
    );
    // [[member]] entries, by route or URL, come first.
    assert_eq!(
        own("http://10.9.9.9:1", "second").as_deref(),
        Some("green/g2")
    );
    assert_eq!(
        own("http://blue.internal:80/", "x").as_deref(),
        Some("blue/")
    );
    assert_eq!(own("http://10.9.9.9:1", "").as_deref(), None);
    // A member entry naming a node the slot does not have is refused.
    let e = crate::config::parse(
        &src.replace("node = \"g2\"", "node = \"g9\""),
        Path::new("t.toml"),
    )
    .expect_err("bad node");
    assert!(e.to_string().contains("`member.node` = `g9`"), "{e}");
}

#[test]
fn manager_urls_are_encoded() {
    assert_eq!(
        balancer_url("http://h:1/balancer-manager", "a b&c"),
        "http://h:1/balancer-manager?b=a+b%26c&xml=1"
    );
}

#[test]
fn entities_and_cdata_in_the_manager_xml_are_read() {
    let xml = XML
        .replace(
            "<httpd:route>blue</httpd:route>",
            "<httpd:route>b&#38;l&#x75;e&amp;</httpd:route>",
        )
        .replace(
            "<httpd:nonce>a940d02b</httpd:nonce>",
            "<httpd:nonce><![CDATA[a940]]>d02b</httpd:nonce>",
        );
    let b = parse_xml(&xml).expect("parses");
    assert_eq!(b[0].workers[0].route, "b&lue&");
    assert_eq!(b[0].nonce, "a940d02b");
}

#[test]
fn file_mode_is_checked_field_by_field() {
    let src = include_str!("testdata/members.toml");
    let err = |from: &str, to: &str| match crate::config::parse(
        &src.replace(from, to),
        Path::new("t.toml"),
    ) {
        Ok(_) => panic!("accepted with {to}"),
        Err(e) => e.to_string(),
    };
    let live = "live_balancer = \"balancer://live\"";
    let file = "mode = \"file\"\nflag_dir = \"/var/lib/cutover\"";
    assert!(crate::config::parse(&src.replace(live, file), Path::new("t.toml")).is_ok());
    let e = err(live, "mode = \"file\"");
    assert!(e.contains("mode = \"file\" needs `flag_dir`"), "{e}");
    let e = err(live, "mode = \"file\"\nflag_dir = \"flags\"");
    assert!(
        e.contains("`flag_dir` = `flags` must be an absolute path"),
        "{e}"
    );
    let e = err(live, &format!("{file}\n{live}"));
    assert!(
        e.contains("`live_balancer`/`preview_balancer` are for mode = \"manager\""),
        "{e}"
    );
    let e = err(live, &format!("{live}\nflag_dir = \"/var/lib/cutover\""));
    assert!(e.contains("`flag_dir` is for mode = \"file\""), "{e}");
    let e = err(live, "mode = \"flags\"");
    assert!(e.contains("unknown variant `flags`"), "{e}");
}
