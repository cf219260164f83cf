//! Operations through the exec driver (commands that keep their state in a file): verify
//! catches a router that accepts a switch but does not change, and a fleet whose second router
//! fails is switched back.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use cutover::config;
use cutover::ops::{OpKind, Verdict};
use cutover::world::World;

/// A config with blue/green slot servers and exec routers whose state lives in files.
/// `routers` is a list of (name, switch command as a shell snippet).
async fn setup(routers: &[(&str, &str)]) -> (tempfile::TempDir, World, Vec<common::SlotServer>) {
    let slots = common::slots(&[("blue", "1.0.0"), ("green", "2.0.0")]).await;
    let d = tempfile::tempdir().expect("tempdir");
    let mut text = format!(
        "[settings]\ngate_checks = 1\nstate_dir = \"{}\"\n\n[[environment]]\nname = \"shop\"\nwatch = \"0s\"\nverify_timeout = \"1s\"\n\n",
        d.path().join("state").display()
    );
    for s in &slots {
        text.push_str(&format!(
            "[[environment.slot]]\nname = \"{}\"\naddress = \"{}\"\n\n",
            s.controls.name,
            s.url()
        ));
    }
    for (name, switch) in routers {
        let file = d.path().join(format!("{name}.live"));
        std::fs::write(&file, "blue").expect("state");
        let f = file.display();
        text.push_str(&format!(
            "[[environment.router]]\nkind = \"exec\"\nname = \"{name}\"\n\
             observe = [\"sh\", \"-c\", \"echo live=$(cat {f})\"]\n\
             switch_live = [\"sh\", \"-c\", \"{}\", \"sh\", \"{{to}}\"]\n\n",
            switch.replace("FILE", &f.to_string())
        ));
    }
    let path = d.path().join("c.toml");
    std::fs::write(&path, &text).expect("write");
    let cfg = config::load(&path).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let world = World::build(cfg, None).expect("world");
    (d, world, slots)
}

async fn swap(world: &World, to: &str) -> cutover::ops::Outcome {
    let kind = OpKind::Swap {
        to: Some(to.into()),
    };
    common::run_op(&world.engines[0], kind, false, false)
        .await
        .0
}

#[tokio::test]
async fn a_router_that_accepts_but_does_not_change_fails_the_operation() {
    // The switch command exits 0 and changes nothing (like an nginx reload that kept the old
    // config, or a balancer-manager answering 200 to a rejected change).
    let (_d, world, _s) = setup(&[("lb", "true")]).await;
    let o = swap(&world, "green").await;
    assert_eq!(o.verdict, Verdict::Failed, "{}", o.message);
    common::assert_contains(&o.message, "accepted the switch but did not change");
    common::assert_contains(&o.message, "`lb` shows blue");
    let verify = common::step(&o, "verify");
    assert!(!verify.ok);
}

#[tokio::test]
async fn a_fleet_whose_second_router_fails_is_switched_back() {
    let (d, world, _s) = setup(&[
        ("edge-1", "echo $1 > FILE"),
        (
            "edge-2",
            "echo 'backend edge-2 refused: permission denied' >&2; exit 3",
        ),
    ])
    .await;
    let o = swap(&world, "green").await;
    assert_eq!(o.verdict, Verdict::Failed, "{}", o.message);
    common::assert_contains(&o.message, "router `edge-2` refused the switch to `green`");
    assert!(
        o.message.contains("permission denied"),
        "the proxy's answer is shown: {}",
        o.message
    );
    common::assert_contains(&o.message, "`edge-1` switched back to `blue`");
    // Both routers agree again: blue everywhere.
    let states = world.engines[0].observe_all().await.expect("observe");
    assert!(
        states.iter().all(|s| s.live.as_deref() == Some("blue")),
        "{states:?}"
    );
    assert_eq!(
        std::fs::read_to_string(d.path().join("edge-1.live"))
            .expect("read")
            .trim(),
        "blue"
    );
}

#[tokio::test]
async fn a_fleet_switches_every_router() {
    let (_d, world, _s) =
        setup(&[("edge-1", "echo $1 > FILE"), ("edge-2", "echo $1 > FILE")]).await;
    let o = swap(&world, "green").await;
    assert_eq!(o.verdict, Verdict::Done, "{}", o.message);
    let states = world.engines[0].observe_all().await.expect("observe");
    assert!(states.iter().all(|s| s.live.as_deref() == Some("green")));
}

#[tokio::test]
async fn a_parallel_fleet_is_compensated_too() {
    let (d, world, _s) = setup(&[
        ("edge-1", "echo $1 > FILE"),
        ("edge-2", "echo 'no such backend' >&2; exit 1"),
        ("edge-3", "echo $1 > FILE"),
    ])
    .await;
    let mut cfg = world.config.clone();
    cfg.environments[0].fleet = cutover::config::FleetOrder::Parallel;
    let world = World::build(cfg, None).expect("world");
    let o = swap(&world, "green").await;
    assert_eq!(o.verdict, Verdict::Failed, "{}", o.message);
    assert!(
        o.message.contains("`edge-2`") && o.message.contains("no such backend"),
        "{}",
        o.message
    );
    for r in ["edge-1", "edge-3"] {
        assert!(
            o.message
                .contains(&format!("`{r}` switched back to `blue`")),
            "{}",
            o.message
        );
        let live = std::fs::read_to_string(d.path().join(format!("{r}.live"))).expect("read");
        assert_eq!(live.trim(), "blue");
    }
}

/// A router that never answers `observe` and asks callers to wait `limit` for it.
struct Silent {
    limit: std::time::Duration,
}

impl cutover::router::Router for Silent {
    fn name(&self) -> &str {
        "silent"
    }
    fn kind(&self) -> &'static str {
        "exec"
    }
    fn observe_timeout(&self) -> std::time::Duration {
        self.limit
    }
    fn caveat(&self) -> Option<&'static str> {
        None
    }
    fn observe(
        &self,
    ) -> cutover::router::BoxFuture<'_, color_eyre::Result<cutover::model::RouterState>> {
        Box::pin(std::future::pending())
    }
    fn switch_live<'a>(
        &'a self,
        _: &'a str,
    ) -> cutover::router::BoxFuture<'a, color_eyre::Result<()>> {
        Box::pin(std::future::pending())
    }
    fn set_preview<'a>(
        &'a self,
        _: &'a str,
    ) -> cutover::router::BoxFuture<'a, color_eyre::Result<()>> {
        Box::pin(std::future::pending())
    }
    fn drain<'a>(
        &'a self,
        _: &'a cutover::router::Target,
    ) -> cutover::router::BoxFuture<'a, color_eyre::Result<()>> {
        Box::pin(std::future::pending())
    }
    fn undrain<'a>(
        &'a self,
        _: &'a cutover::router::Target,
    ) -> cutover::router::BoxFuture<'a, color_eyre::Result<()>> {
        Box::pin(std::future::pending())
    }
    fn maintenance<'a>(
        &'a self,
        _: bool,
        _: &'a cutover::model::MaintenanceMode,
    ) -> cutover::router::BoxFuture<'a, color_eyre::Result<()>> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn operations_wait_for_a_router_as_long_as_the_router_says() {
    let (_d, world, _s) = setup(&[("lb", "true")]).await;
    let e = &world.engines[0];
    let engine = cutover::ops::Engine {
        env: e.env.clone(),
        routers: vec![std::sync::Arc::new(Silent {
            limit: std::time::Duration::from_millis(150),
        })],
        prober: e.prober.clone(),
        store: e.store.clone(),
        audit: None,
        notifier: None,
        probe_spacing: e.probe_spacing,
    };
    let started = std::time::Instant::now();
    let err = engine
        .observe_all()
        .await
        .expect_err("a silent router fails");
    assert!(
        format!("{err:#}").contains("no answer within 150ms"),
        "{err:#}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn an_exec_observe_timeout_longer_than_ten_seconds_is_honoured() {
    let d = tempfile::tempdir().expect("tempdir");
    let text = "[[environment]]\nname = \"shop\"\n\n[[environment.slot]]\nname = \"blue\"\n\
                address = \"http://127.0.0.1:9\"\n\n[[environment.router]]\nkind = \"exec\"\n\
                observe = [\"true\"]\nobserve_timeout = \"60s\"\n";
    let cfg = config::parse(text, &d.path().join("c.toml")).unwrap_or_else(|e| panic!("{e}"));
    let env = &cfg.environments[0];
    let r = cutover::router::build(env, &env.routers[0]).expect("driver");
    let limit = r.observe_timeout();
    assert!(
        limit >= std::time::Duration::from_secs(60) && limit <= std::time::Duration::from_secs(65),
        "{limit:?}"
    );
    // Without observe_timeout, `timeout` is the limit; a router kind without a setting waits
    // the default.
    let text = text.replace("observe_timeout = \"60s\"", "timeout = \"45s\"");
    let cfg = config::parse(&text, &d.path().join("c.toml")).unwrap_or_else(|e| panic!("{e}"));
    let env = &cfg.environments[0];
    let r = cutover::router::build(env, &env.routers[0]).expect("driver");
    assert!(r.observe_timeout() >= std::time::Duration::from_secs(45));
}
