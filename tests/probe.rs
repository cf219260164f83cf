//! Probes against local servers: what the operator sees for each way an endpoint can fail.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::time::{Duration, Instant};

use cutover::config::{self, Settings, Slot};
use cutover::model::{Health, ProbeError, ProbeResult};
use cutover::probe::Prober;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn settings() -> Settings {
    Settings {
        timeout: Duration::from_millis(400),
        degraded_after: Duration::from_millis(150),
        max_body: 1024,
        ..Settings::default()
    }
}

fn slot(base: &str) -> Slot {
    let src = format!(
        "[[environment]]\nname = \"t\"\n[[environment.slot]]\nname = \"s\"\naddress = \"{base}\"\n"
    );
    config::parse(&src, std::path::Path::new("t.toml"))
        .expect("config")
        .environments
        .remove(0)
        .slots
        .remove(0)
}

/// A server that answers every connection with `response` (raw HTTP), or never, if `None`.
async fn raw_server(response: Option<Vec<u8>>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 2048];
                let _ = s.read(&mut buf).await;
                match response {
                    Some(r) => {
                        let _ = s.write_all(&r).await;
                    }
                    None => tokio::time::sleep(Duration::from_secs(30)).await,
                }
            });
        }
    });
    format!("http://{addr}")
}

fn http(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// One probe of the slot at `url`, with the test's settings.
async fn probe(url: &str) -> ProbeResult {
    let p = Prober::new(&settings()).expect("prober");
    p.probe_slot(&slot(url)).await
}

/// A probe of a slot that answers `response` to everything: its version could not be read
/// because of its body, which the error says is `what`.
async fn body_refused(response: Vec<u8>, what: &str) -> ProbeResult {
    let r = probe(&raw_server(Some(response)).await).await;
    assert!(r.version.is_none());
    assert!(
        matches!(&r.version_error, Some(ProbeError::Body(m)) if m.contains(what)),
        "{:?}",
        r.version_error
    );
    r
}

#[tokio::test]
async fn a_healthy_slot_is_up_with_its_version_and_latency() {
    let s = common::slots(&[("blue", "1.4.2")]).await;
    let r = probe(&s[0].url()).await;
    assert_eq!(r.health, Health::Up);
    assert_eq!(r.status, Some(200));
    assert!(r.latency.is_some());
    let v = r.version.expect("version");
    assert_eq!(v.version, "1.4.2");
    assert!(v.commit.is_some(), "the demo slot reports a commit");
}

#[tokio::test]
async fn a_500_is_down_with_the_status() {
    let s = common::slots(&[("blue", "1.4.2")]).await;
    s[0].controls.set_healthy(false);
    let r = probe(&s[0].url()).await;
    assert_eq!(r.health, Health::Down);
    assert_eq!(r.status, Some(500));
    assert_eq!(r.error, Some(ProbeError::Status(500)));
    // The version endpoint still answers: the version is still known.
    assert_eq!(r.version.map(|v| v.version).as_deref(), Some("1.4.2"));
}

#[tokio::test]
async fn a_slow_slot_is_degraded() {
    let s = common::slots(&[("blue", "1.4.2")]).await;
    s[0].controls.set_delay(Duration::from_millis(250));
    let r = probe(&s[0].url()).await;
    assert_eq!(r.health, Health::Degraded);
}

#[tokio::test]
async fn a_hung_endpoint_times_out_within_the_timeout() {
    let url = raw_server(None).await;
    let p = Prober::new(&settings()).expect("prober");
    let t = Instant::now();
    let r = p.probe_slot(&slot(&url)).await;
    assert_eq!(r.health, Health::Down);
    assert_eq!(r.error, Some(ProbeError::Timeout));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let port = common::free_port();
    let r = probe(&format!("http://127.0.0.1:{port}")).await;
    assert_eq!(r.health, Health::Down);
    assert_eq!(r.error, Some(ProbeError::Refused));
}

#[tokio::test]
async fn malformed_version_json_is_reported_not_guessed() {
    let r = body_refused(http("200 OK", "{\"version\": 1.4"), "malformed").await;
    assert_eq!(r.health, Health::Up);
}

#[tokio::test]
async fn an_oversized_body_is_capped_and_reported() {
    let big = "x".repeat(10_000);
    body_refused(http("200 OK", &big), "larger than 1024 bytes").await;
}

#[tokio::test]
async fn one_hung_slot_does_not_delay_the_others() {
    let hung = raw_server(None).await;
    let s = common::slots(&[("blue", "1.4.2")]).await;
    let p = Prober::new(&settings()).expect("prober");
    let fast = slot(&s[0].url());
    let slow = slot(&hung);
    let t = Instant::now();
    let (a, _b) = tokio::join!(
        async {
            let r = p.probe_slot(&fast).await;
            (r, t.elapsed())
        },
        p.probe_slot(&slow)
    );
    assert_eq!(a.0.health, Health::Up);
    assert!(
        a.1 < Duration::from_millis(300),
        "healthy slot took {:?}",
        a.1
    );
}

/// `common::or_skip!` names the test it skips by the test's own function name.
#[test]
fn a_skipped_test_is_named_by_its_function() {
    assert_eq!(
        common::test_name!(),
        "a_skipped_test_is_named_by_its_function"
    );
}

#[tokio::test]
async fn an_async_skipped_test_is_named_by_its_function() {
    let name = async { common::test_name!() }.await;
    assert_eq!(name, "an_async_skipped_test_is_named_by_its_function");
}
