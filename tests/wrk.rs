//! Throughput with an external load generator: `wrk` (Debian's) pinned to one core with
//! `taskset`, the proxy under test (and the slot servers, which live in this process) on the
//! other, so that the rows compare proxies and not schedulers. Every proxy is started after
//! this process pinned itself to core 0, so it sees one core: nginx runs one worker, HAProxy
//! one thread, the embedded proxy (`cutover proxy`) one runtime worker.
//!
//! A benchmark, not a test: `scripts/bench wrk` runs it (ignored in `cargo test`); it prints
//! `BENCH wrk` rows and asserts nothing about speed.

#![allow(clippy::expect_used)]

mod common;
#[path = "common/rig.rs"]
mod rig;

use std::process::Command;

use rig::{Kind, Rig};

/// Each connection's pause between an answer and its next request in the paced rows (wrk's
/// `delay()`): the same offered load on every path, about 64 / (5 ms + latency), far below
/// each one's limit, so that the p99s compare the hop and not how far each is saturated.
const PACE_MS: u32 = 5;

/// What `wrk --latency` printed, as a BENCHMARKS.md row; `pace`: wrk's script that pauses
/// [`PACE_MS`] between requests.
fn wrk_row(path: &str, url: &str, pace: Option<&std::path::Path>) -> String {
    let mut args: Vec<String> = [
        "-c",
        "1",
        "wrk",
        "-t1",
        "-c64",
        "-d10s",
        "--timeout",
        "5s",
        "--latency",
    ]
    .map(String::from)
    .to_vec();
    if let Some(script) = pace {
        args.extend(["-s".to_string(), script.display().to_string()]);
    }
    args.push(url.to_string());
    let out = Command::new("taskset").args(&args).output();
    let text = match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout).into_owned(),
        Ok(o) => {
            return format!(
                "| {path} | wrk failed: {} | | | | |",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Err(e) => return format!("| {path} | cannot run wrk: {e} | | | | |"),
    };
    let after = |key: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key).map(|r| r.trim().to_string()))
    };
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or("?")
        .to_string();
    // "Socket errors: connect 0, read 0, write 0, timeout 0" and "Non-2xx or 3xx responses: N".
    let socket: u64 = after("Socket errors:")
        .map(|r| {
            r.split(',')
                .filter_map(|p| p.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let status: u64 = after("Non-2xx or 3xx responses:")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    format!(
        "| {path} | {requests} | {} | {} | {} | {} |",
        socket + status,
        after("Requests/sec:").unwrap_or_else(|| "?".into()),
        after("50%").unwrap_or_else(|| "?".into()),
        after("99%").unwrap_or_else(|| "?".into()),
    )
}

/// Pin this process (every thread: the slot servers' runtime) to core 0; what it starts
/// from now on inherits that.
fn pin_to_core_0() -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", "0", &std::process::id().to_string()])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: scripts/bench wrk"]
async fn bench_wrk() {
    if common::require_binary("bench_wrk", "wrk").is_none()
        || common::require_binary("bench_wrk", "taskset").is_none()
    {
        return;
    }
    if !pin_to_core_0() {
        println!("BENCH wrk | cannot pin to core 0 (taskset -p failed) | | | | |");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pace = dir.path().join("pace.lua");
    std::fs::write(
        &pace,
        format!("function delay()\n  return {PACE_MS}\nend\n"),
    )
    .expect("pace script");
    let mut direct = false;
    for (kind, label) in [
        (
            Kind::Embedded,
            "through the embedded proxy (`cutover proxy`, 1 worker)",
        ),
        (Kind::HaproxyMap, "through HAProxy (map setup, 1 thread)"),
        (Kind::Nginx, "through nginx (1 worker)"),
        (Kind::Apache, "through Apache (event MPM, docs/apache.md)"),
        (Kind::CaddyFile, "through Caddy (file mode)"),
    ] {
        let Some(rig) = Rig::start("bench_wrk", kind).await else {
            println!("BENCH wrk | {label}: not installed | | | | |");
            continue;
        };
        // Each row twice: as fast as it goes (`wrk`), and at the same offered load (`paced`).
        for (tag, how) in [("wrk", None), ("paced", Some(pace.as_path()))] {
            if !direct {
                let row = wrk_row(
                    "direct to the slot",
                    &format!("{}/", rig.servers.green().url()),
                    how,
                );
                println!("BENCH {tag} {row}");
            }
            // The live slot is blue, whose rig may have two nodes: the proxy balances them.
            let row = wrk_row(label, &format!("{}/", rig.public[0]), how);
            println!("BENCH {tag} {row}");
        }
        direct = true;
    }
}
