//! A bounded HTTP load generator: the engine behind `cutover drill` and the zero-failure
//! tests. Every run is bounded in request count *and* time, and only ever targets the URL it
//! is given (tests and drills use loopback addresses).
//!
//! Hand-written on purpose: load tools (oha, goose, drill...) are programs or frameworks
//! with their own runtimes and reports; cutover needs a few hundred lines on the hyper client
//! it already has, counting failures per request and slot the way drills judge them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{Mutex, watch};

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub url: String,
    pub concurrency: usize,
    /// Stop after this many requests in all.
    pub max_requests: u64,
    /// Stop after this long, whatever the count.
    pub max_duration: Duration,
    pub keep_alive: bool,
    /// Per-request timeout.
    pub timeout: Duration,
}

impl LoadOptions {
    pub fn new(url: impl Into<String>) -> Self {
        LoadOptions {
            url: url.into(),
            concurrency: 16,
            max_requests: 10_000,
            max_duration: Duration::from_secs(30),
            keep_alive: true,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Failed requests by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Failures {
    pub connect: u64,
    pub reset: u64,
    pub timeout: u64,
    /// Answers whose status was not 2xx, by status.
    pub status: BTreeMap<u16, u64>,
}

impl Failures {
    pub fn total(&self) -> u64 {
        self.connect + self.reset + self.timeout + self.status.values().sum::<u64>()
    }
}

/// Why a load run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ended {
    /// Its caller stopped it (or it never started a worker).
    #[default]
    Stopped,
    /// It had sent `max_requests`.
    Requests,
    /// It had run for `max_duration`.
    Duration,
}

/// One answered request: when (since start) and which slot answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample {
    pub at_ms: u64,
    pub slot: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    pub sent: u64,
    pub ok: u64,
    pub failures: Failures,
    /// Successful answers per slot (the `X-Slot` header, or `?`).
    pub by_slot: BTreeMap<String, u64>,
    pub elapsed_ms: u64,
    /// Which bound ended the run.
    pub ended: Ended,
    /// Latencies of successful requests, in microseconds, sorted.
    #[serde(skip)]
    pub latencies_us: Vec<u64>,
    /// Every successful answer in order of completion (for switch-latency analysis).
    #[serde(skip)]
    pub samples: Vec<Sample>,
    /// Up to 10 failure descriptions, for the message of a failing test or drill.
    pub first_errors: Vec<String>,
}

impl LoadReport {
    pub fn failed(&self) -> u64 {
        self.failures.total()
    }
    pub fn percentile_us(&self, p: f64) -> Option<u64> {
        if self.latencies_us.is_empty() {
            return None;
        }
        let i = ((self.latencies_us.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_us.get(i).copied()
    }
    pub fn rps(&self) -> f64 {
        self.sent as f64 / (self.elapsed_ms.max(1) as f64 / 1000.0)
    }
}

/// What a running load has seen so far, for a caller that waits on it (a drill waits for each
/// switch to reach the clients).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    /// When (ms since the start, as [`Sample::at_ms`]) each slot last answered successfully.
    pub last_answer_ms: BTreeMap<String, u64>,
    /// Set once every worker has stopped: no answer comes after it.
    pub ended: Option<Ended>,
}

impl Progress {
    /// Has `slot` answered at or after `since_ms`?
    pub fn answered_since(&self, slot: &str, since_ms: u64) -> bool {
        self.last_answer_ms
            .get(slot)
            .is_some_and(|t| *t >= since_ms)
    }
}

/// Counters a running load updates as answers come in (for live charts), and its
/// [`Progress`] to wait on.
#[derive(Debug, Default)]
pub struct Live {
    pub failed: AtomicU64,
    /// Successful answers per slot so far.
    pub by_slot: std::sync::Mutex<BTreeMap<String, u64>>,
    progress: watch::Sender<Progress>,
}

impl Live {
    pub fn snapshot(&self) -> (BTreeMap<String, u64>, u64) {
        let by = self.by_slot.lock().map(|g| g.clone()).unwrap_or_default();
        (by, self.failed.load(Ordering::Relaxed))
    }

    /// The run's progress; `wait_for` on it wakes when a slot answers in a new millisecond or
    /// the run ends.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    fn answered(&self, slot: &str, at_ms: u64) {
        if let Ok(mut by) = self.by_slot.lock() {
            count(&mut by, slot);
        }
        self.progress
            .send_if_modified(|p| match p.last_answer_ms.get_mut(slot) {
                Some(t) if *t >= at_ms => false,
                Some(t) => {
                    *t = at_ms;
                    true
                }
                None => {
                    p.last_answer_ms.insert(slot.to_string(), at_ms);
                    true
                }
            });
    }
}

/// A load run in the background; `stop()` ends it early, `finish()` waits for the report.
pub struct LoadRun {
    /// When the run started; `Sample::at_ms` counts from here.
    pub started: Instant,
    pub live: Arc<Live>,
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    task: tokio::sync::oneshot::Receiver<LoadReport>,
}

impl LoadRun {
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
    pub async fn finish(mut self) -> LoadReport {
        self.stop();
        (&mut self.task).await.unwrap_or_default()
    }
    /// Wait until the run ends by its own bounds.
    pub async fn wait(mut self) -> LoadReport {
        (&mut self.task).await.unwrap_or_default()
    }
}

/// A run nobody waits for any more (its caller failed) stops: its threads are not the
/// caller's runtime, which would have ended it.
impl Drop for LoadRun {
    fn drop(&mut self) {
        self.stop();
    }
}

struct Shared {
    report: Mutex<LoadReport>,
}

/// Start a load run in the background.
pub fn start(opts: LoadOptions) -> LoadRun {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    let started = Instant::now();
    let live = Arc::new(Live::default());
    let live2 = live.clone();
    let (done, task) = tokio::sync::oneshot::channel();
    let run = run_inner(opts, stop2, sent2, started, live2);
    // Its own runtime and threads, as an external generator has: on the caller's runtime, the
    // connections' tasks queued ahead of the caller's own (a drill's operation waited behind
    // 64 of them: 1.7 ms to read a router that answers in 0.2).
    // Built and dropped on its own thread, never in the caller's async context.
    let spawned = std::thread::Builder::new()
        .name("cutover-load".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
                .thread_name("cutover-load")
                .enable_all()
                .build();
            match rt {
                Ok(rt) => {
                    let _ = done.send(rt.block_on(run));
                }
                // The report is then empty: nothing was sent.
                Err(e) => tracing::error!("cannot start the load's runtime: {e}"),
            }
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the load's thread: {e}");
    }
    LoadRun {
        started,
        live,
        stop,
        sent,
        task,
    }
}

/// Run a load to its bounds and return the report.
pub async fn run(opts: LoadOptions) -> LoadReport {
    start(opts).wait().await
}

async fn run_inner(
    opts: LoadOptions,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    started: Instant,
    live: Arc<Live>,
) -> LoadReport {
    // None: a duration too long to add to a clock reading never ends the run.
    let deadline = started.checked_add(opts.max_duration);
    let shared = Arc::new(Shared {
        report: Mutex::new(LoadReport::default()),
    });
    // The first bound a worker meets is why the run ended.
    let ended = Arc::new(std::sync::OnceLock::new());
    let mut workers = Vec::new();
    for _ in 0..opts.concurrency.max(1) {
        let mut b = crate::http_client()
            .timeout(opts.timeout)
            .http1_only()
            .pool_max_idle_per_host(if opts.keep_alive { 1 } else { 0 });
        if !opts.keep_alive {
            b = b.pool_idle_timeout(Duration::from_millis(0));
        }
        let client = match b.build() {
            Ok(c) => c,
            Err(_) => continue,
        };
        let (opts, stop, sent, shared, live, ended) = (
            opts.clone(),
            stop.clone(),
            sent.clone(),
            shared.clone(),
            live.clone(),
            ended.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut local = LoadReport::default();
            loop {
                if stop.load(Ordering::Relaxed) {
                    let _ = ended.set(Ended::Stopped);
                    break;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let _ = ended.set(Ended::Duration);
                    break;
                }
                let n = sent.fetch_add(1, Ordering::SeqCst);
                if n >= opts.max_requests {
                    sent.fetch_sub(1, Ordering::SeqCst);
                    let _ = ended.set(Ended::Requests);
                    break;
                }
                local.sent += 1;
                let t0 = Instant::now();
                match get(&client, &opts).await {
                    Ok((status, slot, _)) if (200..300).contains(&status) => {
                        local.ok += 1;
                        local.latencies_us.push(t0.elapsed().as_micros() as u64);
                        count(&mut local.by_slot, &slot);
                        let at_ms = started.elapsed().as_millis() as u64;
                        live.answered(&slot, at_ms);
                        local.samples.push(Sample { at_ms, slot });
                    }
                    Ok((status, _, body)) => {
                        live.failed.fetch_add(1, Ordering::Relaxed);
                        *local.failures.status.entry(status).or_default() += 1;
                        if local.first_errors.len() < 10 {
                            local.first_errors.push(format!(
                                "at {} ms: HTTP {status}: {}",
                                started.elapsed().as_millis(),
                                String::from_utf8_lossy(&body[..body.len().min(120)]).trim()
                            ));
                        }
                    }
                    Err(e) => {
                        live.failed.fetch_add(1, Ordering::Relaxed);
                        record_error(&mut local, &e, started);
                    }
                }
            }
            let mut r = shared.report.lock().await;
            merge(&mut r, local);
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let mut r = std::mem::take(&mut *shared.report.lock().await);
    r.elapsed_ms = started.elapsed().as_millis() as u64;
    r.ended = ended.get().copied().unwrap_or_default();
    live.progress.send_modify(|p| p.ended = Some(r.ended));
    r.latencies_us.sort_unstable();
    r.samples.sort_by_key(|s| s.at_ms);
    r
}

/// One request, body read to the end: (status, the `X-Slot` header or `?`, body).
async fn get(
    client: &reqwest::Client,
    opts: &LoadOptions,
) -> Result<(u16, String, hyper::body::Bytes), reqwest::Error> {
    let mut req = client.get(&opts.url);
    if !opts.keep_alive {
        req = req.header("connection", "close");
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let slot = resp
        .headers()
        .get("x-slot")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("?")
        .to_string();
    Ok((status, slot, resp.bytes().await?))
}

/// One more answer from `slot` (the key is copied only the first time).
fn count(by_slot: &mut BTreeMap<String, u64>, slot: &str) {
    match by_slot.get_mut(slot) {
        Some(n) => *n += 1,
        None => {
            by_slot.insert(slot.to_string(), 1);
        }
    }
}

fn record_error(local: &mut LoadReport, e: &reqwest::Error, started: Instant) {
    let text = format!(
        "at {} ms: {}",
        started.elapsed().as_millis(),
        error_chain(e)
    );
    if e.is_timeout() {
        local.failures.timeout += 1;
    } else if e.is_connect() {
        local.failures.connect += 1;
    } else {
        local.failures.reset += 1;
    }
    if local.first_errors.len() < 10 {
        local.first_errors.push(text);
    }
}

/// The whole source chain of an error, on one line.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn merge(into: &mut LoadReport, from: LoadReport) {
    into.sent += from.sent;
    into.ok += from.ok;
    into.failures.connect += from.failures.connect;
    into.failures.reset += from.failures.reset;
    into.failures.timeout += from.failures.timeout;
    for (k, v) in from.failures.status {
        *into.failures.status.entry(k).or_default() += v;
    }
    for (k, v) in from.by_slot {
        *into.by_slot.entry(k).or_default() += v;
    }
    into.latencies_us.extend(from.latencies_us);
    into.samples.extend(from.samples);
    for e in from.first_errors {
        if into.first_errors.len() < 10 {
            into.first_errors.push(e);
        }
    }
}
