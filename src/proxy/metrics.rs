//! The embedded proxy's Prometheus metrics: counters kept with atomics on the request path
//! (no lock per request), written out in the text exposition format 0.0.4 on `GET /metrics`
//! of the admin API.
//!
//! Every series carries `env` and `slot` (and `node` where a node is meant), so a canary can
//! be compared with stable. The README's "Metrics" section lists every metric.

use std::sync::atomic::{AtomicU64, Ordering};

use super::state::{NodeRt, Shared, SlotRt};

pub(crate) use crate::prom::CONTENT_TYPE;
use crate::prom::{Out, esc};

/// Status classes, `code="1xx"` to `code="5xx"`.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a request forwarded to a node failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// No connection to the node (refused, unreachable, connect timeout).
    Connect = 0,
    /// The connection broke before a whole answer head came back.
    Reset = 1,
    /// No answer within `upstream_timeout`.
    Timeout = 2,
    /// The node answered 5xx.
    Status5xx = 3,
}

const ERROR_KINDS: [&str; 4] = ["connect", "reset", "timeout", "5xx"];

/// Per-node counters beside [`NodeRt`]'s `requests`, `errors` and `in_flight`.
#[derive(Debug, Default)]
pub(crate) struct NodeMetrics {
    /// Answers by status class (index 0 = 1xx); answers the proxy made itself (502, 504)
    /// for a request sent to this node count here too.
    codes: [AtomicU64; 5],
    errors: [AtomicU64; 4],
}

impl NodeMetrics {
    pub fn answered(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.codes[class].fetch_add(1, Ordering::Relaxed);
    }
    pub fn failed(&self, kind: ErrorKind) {
        self.errors[kind as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Requests the proxy answered itself without choosing a slot.
#[derive(Debug, Default)]
pub(crate) struct LocalAnswers {
    counts: [AtomicU64; 6],
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum LocalReason {
    /// The maintenance page (503).
    Maintenance = 0,
    /// The preview listener with no preview slot set (503).
    NoPreview = 1,
    /// The chosen slot has no ready node (503).
    NoReadyNode = 2,
    /// An ambiguous `Host` (400).
    BadRequest = 3,
    /// The plain live listener's redirect to HTTPS (308), with `tls.redirect`.
    HttpsRedirect = 4,
    /// Paused for longer than `pause_timeout`, or with `pause_max_held` requests held (503).
    Paused = 5,
}

const LOCAL_REASONS: [&str; 6] = [
    "maintenance",
    "no_preview",
    "no_ready_node",
    "bad_request",
    "https_redirect",
    "paused",
];

impl LocalAnswers {
    pub fn count(&self, why: LocalReason) {
        self.counts[why as usize].fetch_add(1, Ordering::Relaxed);
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Every slot, with its escaped name.
fn slots(shared: &Shared) -> impl Iterator<Item = (String, &SlotRt)> {
    shared.slots.iter().map(|s| (esc(&s.name), s))
}

/// Every node of every slot, with escaped slot and node names.
fn nodes(shared: &Shared) -> Vec<(String, String, &NodeRt)> {
    shared
        .slots
        .iter()
        .flat_map(|s| s.nodes.iter().map(move |n| (esc(&s.name), esc(&n.name), n)))
        .collect()
}

/// A counter per node and per value of `label`: `counts(node)[i]` is the count for
/// `values[i]`.
fn per_node_counter(
    o: &mut Out,
    (env, nodes): (&str, &[(String, String, &NodeRt)]),
    (name, help): (&str, &str),
    (label, values): (&str, &[&str]),
    counts: impl Fn(&NodeRt) -> &[AtomicU64],
) {
    o.head(name, "counter", help);
    for (slot, node, n) in nodes {
        for (value, c) in values.iter().zip(counts(n)) {
            let labels = [("env", env), ("slot", slot), ("node", node), (label, value)];
            o.sample(name, &labels, load(c));
        }
    }
}

/// A gauge per slot: `value(i)` for the slot at index `i`.
fn per_slot_gauge(
    o: &mut Out,
    (env, shared): (&str, &Shared),
    (name, help): (&str, &str),
    value: impl Fn(usize) -> u64,
) {
    o.head(name, "gauge", help);
    for (i, (slot, _)) in slots(shared).enumerate() {
        o.sample(name, &[("env", env), ("slot", &slot)], value(i));
    }
}

/// A metric with one sample, labelled with the environment only.
fn env_sample(o: &mut Out, env: &str, (name, kind, help): (&str, &str, &str), value: u64) {
    o.head(name, kind, help);
    o.sample(name, &[("env", env)], value);
}

/// The whole exposition, read from the atomics now.
pub(crate) fn render(shared: &Shared) -> String {
    let env = esc(&shared.env);
    let env = env.as_str();
    let mut o = Out::default();
    let nodes = nodes(shared);

    per_node_counter(
        &mut o,
        (env, &nodes),
        (
            "cutover_proxy_requests_total",
            "Requests forwarded to a slot's node, by the status class of their answer.",
        ),
        ("code", &CLASSES),
        |n| &n.metrics.codes,
    );
    per_node_counter(
        &mut o,
        (env, &nodes),
        (
            "cutover_proxy_upstream_errors_total",
            "Requests to a node that failed, by kind: connect, reset, timeout, 5xx.",
        ),
        ("kind", &ERROR_KINDS),
        |n| &n.metrics.errors,
    );

    o.head(
        "cutover_proxy_in_flight_requests",
        "gauge",
        "Requests sent to a node whose answer has not been fully sent back yet.",
    );
    for (slot, node, n) in &nodes {
        o.sample(
            "cutover_proxy_in_flight_requests",
            &[("env", env), ("slot", slot), ("node", node)],
            load(&n.in_flight),
        );
    }

    o.head(
        "cutover_proxy_request_duration_seconds",
        "histogram",
        "Time from choosing a node to the answer's head, per slot.",
    );
    for (slot, s) in slots(shared) {
        s.latency.write(
            &mut o,
            "cutover_proxy_request_duration_seconds",
            &[("env", env), ("slot", &slot)],
        );
    }

    o.head(
        "cutover_proxy_recent_latency_seconds",
        "gauge",
        "p50 and p99 of the slot's answers over the last 10 to 12 s (what the traffic view shows); absent without answers.",
    );
    let now = std::time::Instant::now();
    for (slot, s) in slots(shared) {
        let Some(p) = s.recent.percentiles(now) else {
            continue;
        };
        for (q, us) in [("p50", p.p50_us), ("p99", p.p99_us)] {
            o.sample(
                "cutover_proxy_recent_latency_seconds",
                &[("env", env), ("slot", &slot), ("percentile", q)],
                us as f64 / 1e6,
            );
        }
    }

    let live = shared.live();
    let preview = shared.preview();
    let maint = shared.maint();
    per_slot_gauge(
        &mut o,
        (env, shared),
        (
            "cutover_proxy_live",
            "1 for the slot the live listener sends traffic to, 0 for the others.",
        ),
        |i| u64::from(i == live),
    );
    // The live listener's split: 100 on the live slot, or the canary's share and the rest.
    let canary = shared.canary();
    per_slot_gauge(
        &mut o,
        (env, shared),
        (
            "cutover_proxy_weight_percent",
            "The share of the live listener's traffic each slot gets, in % (a canary splits it).",
        ),
        |i| match canary {
            Some((c, p)) if i == c => u64::from(p),
            Some((_, p)) if i == live => 100 - u64::from(p),
            None if i == live => 100,
            _ => 0,
        },
    );
    per_slot_gauge(
        &mut o,
        (env, shared),
        (
            "cutover_proxy_preview",
            "1 for the slot the preview listener sends traffic to, 0 for the others.",
        ),
        |i| u64::from(preview == Some(i)),
    );
    o.head(
        "cutover_proxy_draining",
        "gauge",
        "1 for a drained slot or node (node=\"\" for the slot itself).",
    );
    for (slot, s) in slots(shared) {
        o.sample(
            "cutover_proxy_draining",
            &[("env", env), ("slot", &slot), ("node", "")],
            u8::from(s.draining.load(Ordering::SeqCst)),
        );
        for n in s.nodes.iter().filter(|_| s.has_nodes) {
            let node = esc(&n.name);
            o.sample(
                "cutover_proxy_draining",
                &[("env", env), ("slot", &slot), ("node", &node)],
                u8::from(n.draining.load(Ordering::SeqCst)),
            );
        }
    }
    env_sample(
        &mut o,
        env,
        (
            "cutover_proxy_maintenance",
            "gauge",
            "1 while maintenance is on (the 503 page, or a redirect to another slot).",
        ),
        u64::from(maint.is_some()),
    );
    per_slot_gauge(
        &mut o,
        (env, shared),
        (
            "cutover_proxy_maintenance_redirect",
            "1 for the slot that maintenance redirects live traffic to, 0 for the others.",
        ),
        |i| u64::from(maint == Some(Some(i))),
    );

    o.head(
        "cutover_proxy_local_responses_total",
        "counter",
        "Requests the proxy answered itself without a slot, by reason.",
    );
    for (why, n) in LOCAL_REASONS.iter().zip(&shared.local.counts) {
        o.sample(
            "cutover_proxy_local_responses_total",
            &[("env", env), ("reason", why)],
            load(n),
        );
    }
    env_sample(
        &mut o,
        env,
        (
            "cutover_proxy_paused",
            "gauge",
            "1 while POST /pause holds new live requests.",
        ),
        u64::from(shared.paused.load(Ordering::SeqCst)),
    );
    env_sample(
        &mut o,
        env,
        (
            "cutover_proxy_held_requests",
            "gauge",
            "Requests held by a pause right now.",
        ),
        load(&shared.held),
    );
    if let Some(log) = &shared.access_log {
        env_sample(
            &mut o,
            env,
            (
                "cutover_proxy_access_log_dropped_total",
                "counter",
                "Access log lines dropped because the writer fell behind (requests are never slowed for it).",
            ),
            load(&log.dropped),
        );
    }
    o.text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        let m = NodeMetrics::default();
        for s in [101, 200, 204, 302, 404, 502, 599, 42] {
            m.answered(s);
        }
        let got: Vec<u64> = m.codes.iter().map(load).collect();
        assert_eq!(got, vec![2, 2, 1, 1, 2]);
    }
}
