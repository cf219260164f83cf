//! Probes against local servers: what the operator sees for each way an endpoint can fail.

#![allow(clippy::expect_used)] // tests fail loudly on purpose

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cutover::config::{self, Settings, Slot};
use cutover::model::{Health, ProbeError, ProbeResult};
use cutover::probe::{Prober, SlotPoll};
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

/// One probe of the slot at `url`, with the test's settings, made twice: by the one-off
/// prober (reqwest) and by the poll loop's own kept-alive client, which must say the same.
async fn probe(url: &str) -> ProbeResult {
    let p = Prober::new(&settings()).expect("prober");
    let s = slot(url);
    let once = p.probe_slot(&s).await;
    let polled = SlotPoll::new(p, &s).poll(&s).await;
    // Up or degraded is the answer's time, which a busy machine changes between two requests.
    let seen = |r: &ProbeResult| {
        (
            match r.health {
                Health::Degraded => Health::Up,
                h => h,
            },
            r.status,
            r.error.clone(),
            r.version.clone(),
            r.version_error.clone(),
        )
    };
    assert_eq!(
        seen(&once),
        seen(&polled),
        "the one-off probe and the poll differ"
    );
    polled
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
    let s = slot(&url);
    for polled in [false, true] {
        let t = Instant::now();
        let r = if polled {
            SlotPoll::new(p.clone(), &s).poll(&s).await
        } else {
            p.probe_slot(&s).await
        };
        assert_eq!(r.health, Health::Down);
        assert_eq!(r.error, Some(ProbeError::Timeout));
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "took {:?} (polled: {polled})",
            t.elapsed()
        );
    }
}

/// A slot server that counts the connections it accepts and answers every request on them
/// with its version. Each bump of the returned `watch` closes the connections open then
/// (without saying so, as a restarted slot or an idle timeout does); each sends on the
/// returned channel once it has closed.
async fn counting_server() -> (
    String,
    Arc<AtomicUsize>,
    tokio::sync::watch::Sender<u32>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let (close, closing) = tokio::sync::watch::channel(0);
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (mut closing, closed) = (closing.clone(), closed_tx.clone());
            // Only bumps from now on close this one.
            closing.borrow_and_update();
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 2048];
                loop {
                    let n = tokio::select! {
                        r = s.read(&mut buf) => r.unwrap_or(0),
                        _ = closing.changed() => {
                            drop(s);
                            let _ = closed.send(());
                            return;
                        }
                    };
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&buf[..n]);
                    while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        seen.drain(..end + 4);
                        let body = "1.0.0";
                        let r = format!(
                            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(r.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (url, accepted, close, closed)
}

/// A poll of `s` that found it up, serving 1.0.0.
async fn poll_up(poll: &mut SlotPoll, s: &Slot) {
    let r = poll.poll(s).await;
    assert_eq!(r.health, Health::Up, "{:?}", r.error);
    assert_eq!(r.version.map(|v| v.version).as_deref(), Some("1.0.0"));
}

#[tokio::test]
async fn the_poll_keeps_one_connection_per_slot() {
    let (url, accepted, _close, _closed) = counting_server().await;
    let s = slot(&url);
    let mut poll = SlotPoll::new(Prober::new(&settings()).expect("prober"), &s);
    for _ in 0..3 {
        poll_up(&mut poll, &s).await;
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "3 polls, 6 requests");
}

#[tokio::test]
async fn a_connection_the_slot_closed_is_replaced_not_reported() {
    let (url, accepted, close, mut closed) = counting_server().await;
    let s = slot(&url);
    let mut poll = SlotPoll::new(Prober::new(&settings()).expect("prober"), &s);
    poll_up(&mut poll, &s).await;
    for n in 1..=2 {
        close.send_modify(|g| *g += 1);
        closed
            .recv()
            .await
            .expect("the server closed its connection");
        poll_up(&mut poll, &s).await;
        assert_eq!(accepted.load(Ordering::SeqCst), n + 1, "a new connection");
    }
}

#[tokio::test]
async fn a_poll_after_a_timeout_answers_on_a_new_connection() {
    let s = common::slots(&[("blue", "1.4.2")]).await;
    let slot = slot(&s[0].url());
    let mut poll = SlotPoll::new(Prober::new(&settings()).expect("prober"), &slot);
    s[0].controls.set_delay(Duration::from_secs(2));
    assert_eq!(poll.poll(&slot).await.error, Some(ProbeError::Timeout));
    s[0].controls.set_delay(Duration::ZERO);
    let r = poll.poll(&slot).await;
    assert_eq!(r.health, Health::Up, "{:?}", r.error);
    assert_eq!(r.version.map(|v| v.version).as_deref(), Some("1.4.2"));
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
