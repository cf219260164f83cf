use super::*;

#[test]
fn ids_are_found_with_their_path() {
    let c = json!({"apps": {"http": {"servers": {"a": {"routes": [
        {"handle": [{"@id": "x", "handler": "reverse_proxy", "upstreams": [{"dial": "h:1"}]}]}
    ]}}}}});
    let p = find_id(&c, "x").unwrap();
    assert_eq!(
        config_path(&p),
        "/config/apps/http/servers/a/routes/0/handle/0"
    );
    assert_eq!(
        dials_of(&get_path(&c, &p).unwrap()["upstreams"]),
        vec!["h:1"]
    );
    assert_eq!(find_id(&c, "y"), None);
}

/// A fake admin endpoint: the first `resets` connections are reset once the request
/// has arrived (as Caddy's closing admin listener does after a config change), later
/// ones get `{"ok": true}`. Returns the driver and a count of accepted connections.
async fn flaky_admin(resets: usize) -> (Driver, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let n = count.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            if n < resets {
                s.set_zero_linger().unwrap();
                drop(s);
            } else {
                let body = r#"{"ok":true}"#;
                let _ = s
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .await;
            }
        }
    });
    let toml = format!(
        "[[environment]]\nname = \"shop\"\n\
         [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:9001\"\n\
         [[environment.slot]]\nname = \"green\"\naddress = \"http://127.0.0.1:9002\"\n\
         [[environment.router]]\nkind = \"caddy\"\nmode = \"api\"\n\
         admin = \"http://127.0.0.1:{port}\"\nlive_id = \"live\"\n"
    );
    let cfg = crate::config::parse(&toml, Path::new("t.toml")).unwrap();
    let env = &cfg.environments[0];
    let crate::router::RouterConfig::Caddy(c) = &env.routers[0] else {
        panic!("not caddy")
    };
    (Driver::new("caddy".into(), env.routed(), c).unwrap(), seen)
}

#[tokio::test]
async fn a_read_survives_the_admin_endpoint_restarting() {
    let (d, seen) = flaky_admin(2).await;
    let a = d
        .call(&Call::get("/config/"))
        .await
        .expect("the read is retried past two reset connections");
    assert_eq!(a.status, 200);
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_change_that_was_sent_is_not_sent_twice() {
    let (d, seen) = flaky_admin(1).await;
    let e = d
        .call(&Call::change(
            hyper::Method::PATCH,
            "/id/live/upstreams",
            Some(&json!([{"dial": "127.0.0.1:9002"}])),
            "\"tag\"",
        ))
        .await
        .expect_err("a reset change is reported, not repeated");
    assert!(
        format!("{e:#}").contains("PATCH /id/live/upstreams"),
        "{e:#}"
    );
    assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[test]
fn admin_addresses() {
    let admin = |a: &str| {
        Config {
            admin: a.into(),
            ..serde_json::from_value(json!({"flag_dir": "/f"})).unwrap()
        }
        .admin_address()
        .map(|a| a.authority())
    };
    assert_eq!(admin("http://127.0.0.1:2019/").unwrap(), "127.0.0.1:2019");
    assert_eq!(admin("http://localhost").unwrap(), "localhost:80");
    assert!(admin("https://x:1").is_err());
    assert!(admin("unix//run/caddy.sock").is_err());
    assert!(admin("http://h:1/config").is_err());
}

/// A file-mode driver for blue and green with `extra` lines in its router table.
fn file_driver(extra: &str) -> Result<Driver> {
    let toml = format!(
        "[[environment]]\nname = \"shop\"\n\
         [[environment.slot]]\nname = \"blue\"\naddress = \"http://127.0.0.1:9001\"\n\
         [[environment.slot]]\nname = \"green\"\naddress = \"http://127.0.0.1:9002\"\n\
         [[environment.router]]\nkind = \"caddy\"\nflag_dir = \"/f\"\n{extra}"
    );
    let cfg = crate::config::parse(&toml, Path::new("t.toml")).map_err(|e| eyre!("{e}"))?;
    let env = &cfg.environments[0];
    let crate::router::RouterConfig::Caddy(c) = &env.routers[0] else {
        bail!("not caddy")
    };
    Driver::new("caddy".into(), env.routed(), c)
}

#[test]
fn the_live_routes_hold_the_split_and_the_sticky_cookie_unless_turned_off() {
    let text = |extra: &str| {
        let d = file_driver(extra).unwrap();
        d.file_mode_routes(Pointer::Live).unwrap().to_string()
    };
    let on = text("");
    assert!(
        on.contains("/split=green/{http.vars.cutover_bucket}"),
        "{on}"
    );
    assert!(
        on.contains("cutover_slot=green; Path=/; HttpOnly; SameSite=Lax"),
        "{on}"
    );
    assert!(on.contains(r#"(^|;\\s*)cutover_slot=green(;|$)"#), "{on}");
    let off = text("sticky_cookie = \"\"\n");
    assert!(
        off.contains("/split=green/{http.vars.cutover_bucket}"),
        "{off}"
    );
    assert!(
        !off.contains("Set-Cookie") && !off.contains("header_regexp"),
        "{off}"
    );
    let next = file_driver("").unwrap().file_mode_routes(Pointer::Next);
    assert!(
        !next.unwrap().to_string().contains("split"),
        "the preview route has none"
    );
    let bad = file_driver("sticky_cookie = \"a b\"\n").err().unwrap();
    assert!(format!("{bad:#}").contains("`sticky_cookie` = `a b` is not a cookie name"));
}
