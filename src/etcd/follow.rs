//! Following an environment on the store: another cutover's operation step by step, its
//! lock, and the store going away and coming back, as lines.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::Etcd;
use super::client::{B64, Client, Kv, b64, int, kvs, members, prefix_end, value};
use crate::records::{Activity, LockInfo};

/// What a follower of an environment sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Lines to show ("swap #a1b2c3d4 by alice@laptop-2: verify ok ...").
    Line(String),
    /// Whether the store answers, with a line saying so; `quiet`: the first answer, not worth
    /// a line (only the indicator).
    Store { up: bool, text: String, quiet: bool },
    /// Another cutover's operation ended: what the store remembers may have changed.
    Ended,
}

impl Etcd {
    /// Follow `env` on the store: another cutover's operations step by step, its lock, and
    /// the store going away and coming back, as lines on `tx`, until `tx` is closed. This
    /// process's own operations are left out (it shows them already).
    pub fn follow(&self, env: &str, tx: tokio::sync::mpsc::UnboundedSender<Seen>) {
        let client = self.client.clone();
        let dir = format!("{}{env}/", self.prefix);
        let members = self.members();
        let quit = tx.clone();
        self.rt.spawn(async move {
            tokio::select! {
                _ = quit.closed() => {}
                _ = follow(client, dir, members, tx) => {}
            }
        });
    }
}

/// Someone else's: not this process.
pub(super) fn theirs(holder: &str, pid: u32) -> bool {
    pid != std::process::id() || holder != crate::paths::user_at_host()
}

pub(super) async fn follow(
    client: Arc<Client>,
    dir: String,
    members: String,
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
) {
    let say = |seen: Seen| tx.send(seen).is_ok();
    let (activity_key, lock_key) = (format!("{dir}activity"), format!("{dir}lock"));
    let mut shown: Option<Activity> = None;
    let mut holder: Option<LockInfo> = None;
    let mut down = false;
    // Whether the first answer (or failure) has been said.
    let mut told = false;
    loop {
        // Where things stand, at one revision; then every change after it.
        let snapshot = json!({"success": [
            {"request_range": {"key": b64(&activity_key)}},
            {"request_range": {"key": b64(&lock_key)}},
        ]});
        let failed = match client.post("/v3/kv/txn", &snapshot).await {
            Ok(v) => {
                if down || !told {
                    say(Seen::Store {
                        up: true,
                        text: format!("shared store: etcd at {members} answers again"),
                        quiet: !down,
                    });
                    (down, told) = (false, true);
                }
                let a: Option<Activity> = kvs(&v["responses"][0]["response_range"])
                    .first()
                    .and_then(value);
                let h: Option<LockInfo> = kvs(&v["responses"][1]["response_range"])
                    .first()
                    .and_then(value);
                let mut st = (&mut shown, &mut holder);
                seen_activity(&mut st, a, &say);
                seen_holder(&mut st, h, &say);
                let from = int(&v["header"]["revision"]) + 1;
                watch(&client, &dir, from, &mut st, &say, &activity_key, &lock_key).await
            }
            Err(e) => e.to_string(),
        };
        if tx.is_closed() {
            return;
        }
        if !down {
            (down, told) = (true, true);
            say(Seen::Store {
                up: false,
                text: format!("shared store: {failed}; operations are refused until it answers"),
                quiet: false,
            });
        }
        // A pause before asking again, not a synchronisation.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

pub(super) type FollowState<'a> = (&'a mut Option<Activity>, &'a mut Option<LockInfo>);

pub(super) fn seen_activity(
    st: &mut FollowState,
    a: Option<Activity>,
    say: &impl Fn(Seen) -> bool,
) {
    let Some(a) = a else { return };
    if theirs(&a.holder, a.pid) {
        for l in a.lines_since(st.0.as_ref()) {
            say(Seen::Line(l));
        }
        let before = st.0.as_ref().filter(|b| b.op_id == a.op_id);
        if a.result.is_some() && before.and_then(|b| b.result.as_ref()).is_none() {
            say(Seen::Ended);
        }
    }
    *st.0 = Some(a);
}

pub(super) fn seen_holder(st: &mut FollowState, h: Option<LockInfo>, say: &impl Fn(Seen) -> bool) {
    if *st.1 == h {
        return;
    }
    match &h {
        Some(h) if theirs(&h.holder, h.pid) => {
            say(Seen::Line(format!("lock taken by {}", h.describe())));
        }
        None if st.1.as_ref().is_some_and(|o| theirs(&o.holder, o.pid)) => {
            say(Seen::Line("lock free".to_string()));
        }
        _ => {}
    }
    *st.1 = h;
}

/// Stream the changes under `dir` from revision `from`; returns why the stream ended.
pub(super) async fn watch(
    client: &Client,
    dir: &str,
    from: i64,
    st: &mut FollowState<'_>,
    say: &impl Fn(Seen) -> bool,
    activity_key: &str,
    lock_key: &str,
) -> String {
    let body = json!({"create_request": {
        "key": b64(dir), "range_end": prefix_end(dir), "start_revision": from.to_string(),
    }});
    let mut resp = None;
    for base in &client.endpoints {
        let req = client
            .post_to(base, "/v3/watch", &body)
            // A stream: no overall deadline (the client's is for single answers).
            .timeout(Duration::from_secs(24 * 3600));
        if let Ok(r) = req.send().await
            && r.status().is_success()
        {
            resp = Some(r);
            break;
        }
    }
    let Some(mut resp) = resp else {
        return format!("etcd at {} unreachable", members(&client.endpoints));
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = match resp.chunk().await {
            Ok(Some(c)) => c,
            Ok(None) => return "the watch ended".into(),
            Err(e) => return format!("the watch broke: {e}"),
        };
        buf.extend_from_slice(&chunk);
        while let Some(end) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=end).collect();
            let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if v["error"].is_object() || v["result"]["canceled"].as_bool() == Some(true) {
                return "the watch was cancelled".into();
            }
            for ev in v["result"]["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let key = ev["kv"]["key"]
                    .as_str()
                    .and_then(|k| B64.decode(k).ok())
                    .map(|k| String::from_utf8_lossy(&k).to_string())
                    .unwrap_or_default();
                let deleted = ev["type"].as_str() == Some("DELETE");
                let kv: Option<Kv> = serde_json::from_value(ev["kv"].clone()).ok();
                if key == activity_key && !deleted {
                    seen_activity(st, kv.as_ref().and_then(value), say);
                } else if key == lock_key {
                    let h = if deleted {
                        None
                    } else {
                        kv.as_ref().and_then(value)
                    };
                    seen_holder(st, h, say);
                }
            }
        }
    }
}
