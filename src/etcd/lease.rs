//! A lock held on etcd: the lease kept alive, the takeover request polled, and the
//! operation's activity published, each by a task on the store's runtime.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::client::{Client, b64, int, kvs, value};
use super::{Asked, TAKEOVER_POLL};
use crate::records::Activity;

/// A lock held on etcd: its key, lease and fencing token; `lost` is set when the lease could
/// not be kept alive or a fenced write was refused.
#[derive(Debug)]
pub struct Held {
    pub(super) env: String,
    pub(super) key: String,
    pub(super) lease: i64,
    /// The lock key's create revision.
    pub token: i64,
    pub(super) lost: Arc<Mutex<Option<String>>>,
    /// The operation's activity, and the channel its publisher writes the newest of.
    pub(super) activity: Mutex<Activity>,
    pub(super) publish: Option<tokio::sync::watch::Sender<Activity>>,
    /// Told when the publisher wrote the last activity and ended.
    pub(super) flushed: std::sync::mpsc::Receiver<()>,
    pub(super) _stop: tokio::sync::oneshot::Sender<()>,
    pub(super) _stop_polling: tokio::sync::oneshot::Sender<()>,
}

/// Read the takeover request of a held lock every [`TAKEOVER_POLL`] until stopped.
pub(super) async fn poll_takeover(
    client: Arc<Client>,
    key: String,
    asked: Asked,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let range = json!({"key": b64(&key)});
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(TAKEOVER_POLL) => {}
        }
        let got = tokio::select! {
            _ = &mut stopped => return,
            r = client.post("/v3/kv/range", &range) => r,
        };
        if let Ok(v) = got
            && let Ok(mut a) = asked.lock()
        {
            *a = kvs(&v).first().and_then(value);
        }
    }
}

impl Held {
    /// Why this lock is no longer held, if it is not.
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    /// Change the shared activity; the publisher writes the newest state (never blocks).
    pub fn activity(&self, f: impl FnOnce(&mut Activity)) {
        if let Ok(mut a) = self.activity.lock() {
            f(&mut a);
            if let Some(p) = &self.publish {
                let _ = p.send(a.clone());
            }
        }
    }
}

/// Write the newest activity (fenced by the lock) each time it changes, in order, until the
/// lock is let go; then say so.
pub(super) async fn publish_activity(
    client: Arc<Client>,
    lock_key: String,
    token: i64,
    key: String,
    mut latest: tokio::sync::watch::Receiver<Activity>,
    flushed: std::sync::mpsc::SyncSender<()>,
) {
    // The first state (who, what, since) is written at once.
    latest.mark_changed();
    while latest.changed().await.is_ok() {
        let a = latest.borrow_and_update().clone();
        let text = serde_json::to_string(&a).unwrap_or_default();
        let txn = json!({
            "compare": [{"key": b64(&lock_key), "target": "CREATE", "result": "EQUAL", "create_revision": token.to_string()}],
            "success": [{"request_put": {"key": b64(&key), "value": b64(&text)}}],
        });
        if let Err(e) = client.post("/v3/kv/txn", &txn).await {
            tracing::warn!("cannot share the operation's activity: {e}");
        }
    }
    let _ = flushed.try_send(());
}

/// Renew the lease every third of its TTL until stopped. The lock counts as lost when etcd
/// says the lease is gone, or when no renewal succeeded for a whole TTL (the lease may have
/// expired on the server by then).
pub(super) async fn keep_alive(
    client: Arc<Client>,
    lease: i64,
    ttl: Duration,
    lost: Arc<Mutex<Option<String>>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut last_ok = Instant::now();
    let every = ttl / 3;
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tokio::time::sleep(every) => {}
        }
        let why = match client
            .post("/v3/lease/keepalive", &json!({"ID": lease.to_string()}))
            .await
        {
            Ok(v) if int(&v["result"]["TTL"]) > 0 => {
                last_ok = Instant::now();
                continue;
            }
            Ok(_) => "the lock's lease expired on etcd".to_string(),
            Err(e) if last_ok.elapsed() >= ttl => {
                format!("the lock's lease could not be renewed for {ttl:?}: {e}")
            }
            Err(e) => {
                tracing::warn!("cannot renew the lock's lease yet: {e}");
                continue;
            }
        };
        tracing::error!("{why}");
        if let Ok(mut l) = lost.lock() {
            *l = Some(why);
        }
        return;
    }
}
