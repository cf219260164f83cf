//! The proxy's own health checks of the nodes of a slot with several: a dead node stops
//! getting new requests within `node_check_interval × node_check_fall`, before an operator
//! could see it and drain it. cutover's probes stay the operator's view of the slots; these
//! only steer the proxy's round-robin (and show as each node's `check` in `/state`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::watch;

use super::state::Shared;
use crate::router::embedded;

/// One task per environment that has a slot with several nodes, checking each of them every
/// `node_check_interval` until the proxy stops.
pub(super) fn spawn(shared: &Arc<Shared>, cfg: &embedded::Config, stopped: &watch::Receiver<bool>) {
    let checked = shared
        .slots
        .iter()
        .any(|s| s.nodes.iter().any(|n| n.check.is_some()));
    if cfg.node_check_interval == 0 || !checked {
        return;
    }
    let every = Duration::from_secs(cfg.node_check_interval);
    let (fall, rise) = (cfg.node_check_fall.max(1), cfg.node_check_rise.max(1));
    let Ok(client) = crate::http_client()
        .timeout(every.min(Duration::from_secs(2)))
        .pool_max_idle_per_host(1)
        .build()
    else {
        tracing::warn!("the embedded proxy's node checks are off: no HTTP client");
        return;
    };
    let (shared, mut stopped) = (shared.clone(), stopped.clone());
    tokio::spawn(async move {
        // Failed (negative) or good (positive) checks in a row, per slot and node.
        let mut runs: Vec<Vec<i64>> = shared
            .slots
            .iter()
            .map(|s| vec![0; s.nodes.len()])
            .collect();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stopped.wait_for(|s| *s) => return,
            }
            for (si, slot) in shared.slots.iter().enumerate() {
                for (ni, node) in slot.nodes.iter().enumerate() {
                    let Some((url, want)) = &node.check else {
                        continue;
                    };
                    let ok = client
                        .get(url)
                        .send()
                        .await
                        .is_ok_and(|r| r.status().as_u16() == *want);
                    let run = &mut runs[si][ni];
                    *run = match (ok, *run) {
                        (true, r) if r > 0 => r + 1,
                        (true, _) => 1,
                        (false, r) if r < 0 => r - 1,
                        (false, _) => -1,
                    };
                    let down = node.down.load(Ordering::Relaxed);
                    if !down && *run <= -i64::from(fall) {
                        node.down.store(true, Ordering::Relaxed);
                        tracing::warn!(
                            slot = %slot.name, node = %node.name,
                            "node check: {url} failed {fall} times in a row; no new requests until it answers again"
                        );
                    } else if down && *run >= i64::from(rise) {
                        node.down.store(false, Ordering::Relaxed);
                        tracing::info!(slot = %slot.name, node = %node.name, "node check: {url} answers again");
                    }
                }
            }
        }
    });
}
