//! The shared store on etcd: the operation lock, each environment's memory, the operation
//! journal, takeover requests and the audit records, for a team whose operators run cutover
//! from their own machines (`[settings.store] etcd = [...]`).
//!
//! It speaks etcd's v3 JSON gateway (plain HTTP POSTs; keys and values base64) with reqwest,
//! which is already in the tree. A gRPC client crate (etcd-client) would bring tonic, prost and
//! their code generation: minutes more of every clean build on two cores, for the same calls.
//!
//! Keys, under the prefix (`/cutover/` by default), per environment:
//! - `<env>/lock` — the holder record ([`LockInfo`]), created in a transaction only when the key
//!   is absent (`create_revision == 0`) and attached to a lease with a TTL that a background
//!   task keeps alive while the operation runs. Its create revision is the **fencing token**.
//! - `<env>/state` — the memory ([`EnvMemory`]); `<env>/journal` — a running operation's
//!   journal. Both written only in a transaction that compares the lock key's create revision
//!   with the writer's token, so a holder whose lease expired (its key is gone, or another
//!   holder's key has another revision) cannot write.
//! - `<env>/takeover` — another operator's request to take the lock over.
//! - `<env>/audit/<time> <id> <result>` — the audit records, put only when absent (append-only).
//! - `<env>/activity` — what the running (or last) operation is doing, step by step, written
//!   (fenced) by its holder; every other cutover follows it with a watch ([`Etcd::follow`]).
//!
//! Every call runs on this store's own runtime thread, so the synchronous contract of
//! [`crate::state::Store`] works from any caller, async or not; each has a deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::state::{Activity, EnvMemory, Journal, LockError, LockInfo};

/// `[settings.store]` when it names an etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSettings {
    /// Client URLs of the cluster's members (`http://127.0.0.1:2379`); tried in order.
    pub etcd: Vec<String>,
    /// Every key cutover writes starts with it.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The lock's lease: a holder that stops renewing it loses the lock after this long.
    #[serde(default = "default_ttl", with = "crate::timefmt::serde_duration")]
    pub lease_ttl: Duration,
    /// Timeout of one request to one member.
    #[serde(default = "default_timeout", with = "crate::timefmt::serde_duration")]
    pub timeout: Duration,
    /// The environment variable holding the etcd user name (when etcd has auth enabled).
    #[serde(default)]
    pub user_env: Option<String>,
    /// The environment variable holding that user's password (never logged).
    #[serde(default)]
    pub password_env: Option<String>,
}

fn default_prefix() -> String {
    "/cutover/".into()
}
fn default_ttl() -> Duration {
    Duration::from_secs(10)
}
fn default_timeout() -> Duration {
    Duration::from_secs(2)
}

impl EtcdSettings {
    /// What is wrong with these settings, if anything (checked when the config loads).
    pub fn problem(&self) -> Option<String> {
        if self.etcd.is_empty() {
            return Some("`etcd` lists no member; give at least one client URL".into());
        }
        if let Some(u) = self
            .etcd
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Some(format!(
                "`{u}` is not an http:// or https:// client URL of an etcd member"
            ));
        }
        if self.lease_ttl < Duration::from_secs(2) || self.lease_ttl > Duration::from_secs(300) {
            return Some("`lease_ttl` must be between 2s and 300s".into());
        }
        if self.timeout.is_zero() {
            return Some("`timeout` must be more than zero".into());
        }
        if self.user_env.is_some() != self.password_env.is_some() {
            return Some("`user_env` and `password_env` go together".into());
        }
        None
    }
}

/// The members as a message names them.
fn members(endpoints: &[String]) -> String {
    endpoints.join(", ")
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CallError {
    /// No member answered.
    Unreachable(String),
    /// A member answered with an error.
    Refused(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unreachable(m) => write!(f, "etcd at {m} unreachable"),
            CallError::Refused(m) => write!(f, "etcd refused: {m}"),
        }
    }
}

/// The HTTP side: members, credentials, one JSON POST.
struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    /// (user, password) read from the environment when the store was opened.
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
}

impl Client {
    async fn post(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let mut authenticated = false;
        if self.credentials.is_some() && self.token.lock().is_ok_and(|t| t.is_none()) {
            self.authenticate().await?;
            authenticated = true;
        }
        loop {
            match self.post_once(path, body).await {
                // An expired or revoked token: authenticate again, once.
                Err(CallError::Refused(m))
                    if !authenticated
                        && self.credentials.is_some()
                        && (m.contains("token") || m.contains("auth")) =>
                {
                    self.authenticate().await?;
                    authenticated = true;
                }
                other => return other,
            }
        }
    }

    async fn authenticate(&self) -> Result<(), CallError> {
        let Some((user, password)) = &self.credentials else {
            return Ok(());
        };
        if let Ok(mut t) = self.token.lock() {
            *t = None;
        }
        let v = self
            .post_once(
                "/v3/auth/authenticate",
                &json!({"name": user, "password": password}),
            )
            .await?;
        let token = v["token"].as_str().map(str::to_string);
        if let Ok(mut t) = self.token.lock() {
            *t = token;
        }
        Ok(())
    }

    async fn post_once(&self, path: &str, body: &Value) -> Result<Value, CallError> {
        let token = self.token.lock().ok().and_then(|t| t.clone());
        for base in &self.endpoints {
            let mut req = self
                .http
                .post(format!("{}{path}", base.trim_end_matches('/')))
                .json(body);
            if let Some(t) = &token {
                req = req.header("Authorization", t);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!("etcd member {base}: {e}");
                    continue;
                }
            };
            let status = resp.status();
            let Ok(text) = resp.text().await else {
                continue;
            };
            let v: Value = serde_json::from_str(text.lines().next().unwrap_or_default())
                .unwrap_or(Value::Null);
            // A member without a leader answers 503 or an error saying so: ask the next one.
            let err = v["error"]
                .as_str()
                .or(v["message"].as_str())
                .map(str::to_string);
            if status.is_server_error()
                && err.as_deref().is_none_or(|e| {
                    e.contains("leader") || e.contains("timed out") || e.contains("unavailable")
                })
            {
                continue;
            }
            if !status.is_success() || err.is_some() {
                return Err(CallError::Refused(
                    err.unwrap_or_else(|| format!("HTTP {status}")),
                ));
            }
            return Ok(v);
        }
        Err(CallError::Unreachable(members(&self.endpoints)))
    }
}

/// A key's value as the gateway returns it.
#[derive(Debug, Deserialize)]
struct Kv {
    #[serde(default)]
    value: String,
    #[serde(default)]
    create_revision: Value,
}

fn b64(s: &str) -> String {
    B64.encode(s.as_bytes())
}

/// One key past every key that starts with `prefix`: the end of a prefix range.
fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    while let Some(last) = b.pop() {
        if last < 0xff {
            b.push(last + 1);
            return B64.encode(&b);
        }
    }
    B64.encode([0u8])
}

fn kvs(v: &Value) -> Vec<Kv> {
    serde_json::from_value(v["kvs"].clone()).unwrap_or_default()
}

fn value<T: serde::de::DeserializeOwned>(kv: &Kv) -> Option<T> {
    let bytes = B64.decode(&kv.value).ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The store on etcd. Cheap to share (`Arc`); its runtime thread ends when it is dropped.
pub struct Etcd {
    client: Arc<Client>,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
    rt: tokio::runtime::Handle,
    /// The takeover requests for the locks this process holds, by environment, kept fresh in
    /// the background so that an operation's safe points never wait for etcd.
    asked: Mutex<std::collections::HashMap<String, Asked>>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

type Asked = Arc<Mutex<Option<Takeover>>>;

/// How often a holder looks for a takeover request (as the file store's watch does).
const TAKEOVER_POLL: Duration = Duration::from_millis(250);

impl std::fmt::Debug for Etcd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the credentials.
        write!(
            f,
            "Etcd({} {})",
            members(&self.client.endpoints),
            self.prefix
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Takeover {
    target_op_id: String,
    by: LockInfo,
}

impl Etcd {
    /// Open the store (no request is made yet: an unreachable cluster shows on first use).
    pub fn open(s: &EtcdSettings) -> color_eyre::eyre::Result<Etcd> {
        use color_eyre::eyre::{WrapErr, eyre};
        let credentials = match (&s.user_env, &s.password_env) {
            (Some(u), Some(p)) => {
                let user = std::env::var(u).map_err(|_| {
                    eyre!("[settings.store]: `user_env = \"{u}\"` but ${u} is not set")
                })?;
                let password = std::env::var(p).map_err(|_| {
                    eyre!("[settings.store]: `password_env = \"{p}\"` but ${p} is not set")
                })?;
                Some((user, password))
            }
            _ => None,
        };
        let http = crate::http_client()
            .timeout(s.timeout)
            .connect_timeout(s.timeout)
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")))
            .build()
            .wrap_err("cannot build the HTTP client for etcd")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .wrap_err("cannot start the etcd client's runtime")?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("cutover-etcd".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })
            .wrap_err("cannot start the etcd client's thread")?;
        Ok(Etcd {
            client: Arc::new(Client {
                http,
                endpoints: s.etcd.clone(),
                credentials,
                token: Mutex::new(None),
            }),
            prefix: s.prefix.clone(),
            ttl: s.lease_ttl,
            timeout: s.timeout,
            rt: handle,
            asked: Mutex::new(std::collections::HashMap::new()),
            _stop: stop,
        })
    }

    /// True when a member answers a linearizable read (the cluster has a leader).
    pub fn ready(&self) -> bool {
        self.call("/v3/kv/range", json!({"key": b64(&self.prefix)}))
            .is_ok()
    }

    /// The members, for messages.
    pub fn members(&self) -> String {
        members(&self.client.endpoints)
    }

    fn key(&self, env: &str, what: &str) -> String {
        format!("{}{env}/{what}", self.prefix)
    }

    /// Run one request on the store's thread and wait for it (every member tried once,
    /// twice when a token had to be renewed).
    fn call(&self, path: &'static str, body: Value) -> Result<Value, CallError> {
        let client = self.client.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(async move {
            let _ = tx.send(client.post(path, &body).await);
        });
        let n = self.client.endpoints.len() as u32 * 2 + 1;
        rx.recv_timeout(self.timeout * n)
            .unwrap_or_else(|_| Err(CallError::Unreachable(self.members())))
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CallError> {
        let v = self.call("/v3/kv/range", json!({"key": b64(key)}))?;
        Ok(kvs(&v).first().and_then(value))
    }

    /// Take the lock of `env`: a lease, then the key created only if absent.
    pub fn lock(&self, env: &str, me: &LockInfo) -> Result<Held, LockError> {
        let unreachable = |e: CallError| match e {
            CallError::Unreachable(m) => LockError::Io(format!(
                "cannot take the lock: etcd at {m} unreachable; nothing was changed"
            )),
            CallError::Refused(m) => LockError::Io(format!(
                "cannot take the lock: etcd refused ({m}); nothing was changed"
            )),
        };
        let grant = self
            .call("/v3/lease/grant", json!({"TTL": self.ttl.as_secs().max(1)}))
            .map_err(unreachable)?;
        let lease = int(&grant["ID"]);
        let key = self.key(env, "lock");
        let holder = serde_json::to_string(me).unwrap_or_default();
        let txn = json!({
            "compare": [{"key": b64(&key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": b64(&key), "value": b64(&holder), "lease": lease.to_string()}}],
            "failure": [{"request_range": {"key": b64(&key)}}],
        });
        let answer = self.call("/v3/kv/txn", txn);
        let revoke = || {
            let _ = self.call("/v3/lease/revoke", json!({"ID": lease.to_string()}));
        };
        let v = match answer {
            Ok(v) => v,
            Err(e) => {
                revoke();
                return Err(unreachable(e));
            }
        };
        let current = kvs(&v["responses"][0]["response_range"]);
        let mine = current
            .first()
            .and_then(value::<LockInfo>)
            .is_some_and(|h| h.op_id == me.op_id && h.pid == me.pid);
        let token = if v["succeeded"].as_bool() == Some(true) {
            int(&v["header"]["revision"])
        } else if mine {
            // Our own key: a member applied the transaction but its answer was lost (a leader
            // change), and the next member was asked again. It is ours, with its revision.
            current.first().map_or(0, |kv| int(&kv.create_revision))
        } else {
            revoke();
            let info = current.first().and_then(value).unwrap_or_else(|| LockInfo {
                holder: "another cutover".into(),
                pid: 0,
                operation: "an operation".into(),
                op_id: String::new(),
                since: "now".into(),
            });
            return Err(LockError::Held(info));
        };
        let lost = Arc::new(Mutex::new(None));
        let (stop, stopped) = tokio::sync::oneshot::channel();
        self.rt.spawn(keep_alive(
            self.client.clone(),
            lease,
            self.ttl,
            lost.clone(),
            stopped,
        ));
        let asked: Asked = Arc::new(Mutex::new(None));
        if let Ok(mut m) = self.asked.lock() {
            m.insert(env.to_string(), asked.clone());
        }
        let (stop_polling, polling_stopped) = tokio::sync::oneshot::channel();
        self.rt.spawn(poll_takeover(
            self.client.clone(),
            self.key(env, "takeover"),
            asked,
            polling_stopped,
        ));
        let activity = Activity::of(me);
        let (publish, latest) = tokio::sync::watch::channel(activity.clone());
        let (published, flushed) = std::sync::mpsc::sync_channel(1);
        self.rt.spawn(publish_activity(
            self.client.clone(),
            key.clone(),
            token,
            self.key(env, "activity"),
            latest,
            published,
        ));
        Ok(Held {
            env: env.to_string(),
            key,
            lease,
            token,
            lost,
            activity: Mutex::new(activity),
            publish: Some(publish),
            flushed,
            _stop: stop,
            _stop_polling: stop_polling,
        })
    }

    /// The live holder of `env`'s lock (the key lives only as long as its lease).
    pub fn holder(&self, env: &str) -> Option<LockInfo> {
        self.get(&self.key(env, "lock")).ok().flatten()
    }

    /// Let go of a lock: the last activity is written first (while the lock still fences
    /// it), then revoking the lease deletes the key at once.
    pub fn release(&self, mut held: Held) {
        if let Ok(mut m) = self.asked.lock() {
            m.remove(&held.env);
        }
        drop(held.publish.take());
        let _ = held.flushed.recv_timeout(self.timeout * 2);
        let _ = self.call("/v3/lease/revoke", json!({"ID": held.lease.to_string()}));
    }

    /// A write that happens only while `held` is still the lock: the lock key must exist and
    /// carry the holder's create revision (its fencing token).
    pub fn fenced(&self, held: &Held, ops: Vec<Value>) -> color_eyre::eyre::Result<()> {
        fenced_txn(self, &held.key, held.token, ops).inspect_err(|e| {
            if let Ok(mut l) = held.lost.lock()
                && l.is_none()
            {
                *l = Some(format!("{e}"));
            }
        })
    }

    pub fn env(&self, env: &str) -> EnvMemory {
        self.get(&self.key(env, "state"))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Every environment's memory.
    pub fn all(&self) -> Vec<(String, EnvMemory)> {
        let Ok(v) = self.call(
            "/v3/kv/range",
            json!({"key": b64(&self.prefix), "range_end": prefix_end(&self.prefix)}),
        ) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        let raw: Vec<Value> = v["kvs"].as_array().cloned().unwrap_or_default();
        for kv in raw {
            let key = kv["key"]
                .as_str()
                .and_then(|k| B64.decode(k).ok())
                .map(|k| String::from_utf8_lossy(&k).to_string())
                .unwrap_or_default();
            let Some(env) = key
                .strip_prefix(&self.prefix)
                .and_then(|k| k.strip_suffix("/state"))
            else {
                continue;
            };
            if let Ok(kv) = serde_json::from_value::<Kv>(kv.clone())
                && let Some(m) = value(&kv)
            {
                out.push((env.to_string(), m));
            }
        }
        out
    }

    pub fn put_op(&self, env: &str, what: &str, v: &impl Serialize) -> Value {
        let text = serde_json::to_string(v).unwrap_or_default();
        json!({"request_put": {"key": b64(&self.key(env, what)), "value": b64(&text)}})
    }

    pub fn delete_op(&self, env: &str, what: &str) -> Value {
        json!({"request_delete_range": {"key": b64(&self.key(env, what))}})
    }

    pub fn journal(&self, env: &str) -> Option<Journal> {
        self.get(&self.key(env, "journal")).ok().flatten()
    }

    pub fn request_takeover(&self, env: &str, target_op_id: &str, by: &LockInfo) {
        let t = Takeover {
            target_op_id: target_op_id.to_string(),
            by: by.clone(),
        };
        let op = self.put_op(env, "takeover", &t);
        let _ = self.call("/v3/kv/txn", json!({"success": [op]}));
    }

    pub fn clear_takeover(&self, env: &str) {
        let op = self.delete_op(env, "takeover");
        let _ = self.call("/v3/kv/txn", json!({"success": [op]}));
    }

    pub fn takeover_request(&self, env: &str, op_id: &str) -> Option<LockInfo> {
        let cached = self.asked.lock().ok().and_then(|m| m.get(env).cloned());
        let t: Takeover = match cached {
            Some(asked) => asked.lock().ok().and_then(|t| t.clone())?,
            None => self.get(&self.key(env, "takeover")).ok().flatten()?,
        };
        (t.target_op_id == op_id).then_some(t.by)
    }

    /// Append an audit record (a key written only when absent: records are never replaced).
    pub fn audit(&self, env: &str, time: &str, id: &str, result: &str, line: &str) {
        let key = self.key(env, &format!("audit/{time} {id} {result}"));
        let txn = json!({
            "compare": [{"key": b64(&key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": [{"request_put": {"key": b64(&key), "value": b64(line)}}],
        });
        if let Err(e) = self.call("/v3/kv/txn", txn) {
            tracing::error!("cannot write the audit record to the shared store: {e}");
        }
    }

    /// The audit records of `env` in the shared store, oldest first (JSON lines).
    pub fn audit_records(&self, env: &str) -> Vec<String> {
        let p = self.key(env, "audit/");
        let Ok(v) = self.call(
            "/v3/kv/range",
            json!({"key": b64(&p), "range_end": prefix_end(&p),
                   "sort_order": "ASCEND", "sort_target": "CREATE"}),
        ) else {
            return Vec::new();
        };
        kvs(&v)
            .iter()
            .filter_map(|kv| B64.decode(&kv.value).ok())
            .map(|b| String::from_utf8_lossy(&b).to_string())
            .collect()
    }
}

fn fenced_txn(
    etcd: &Etcd,
    lock_key: &str,
    token: i64,
    ops: Vec<Value>,
) -> color_eyre::eyre::Result<()> {
    let txn = json!({
        "compare": [{"key": b64(lock_key), "target": "CREATE", "result": "EQUAL", "create_revision": token.to_string()}],
        "success": ops,
    });
    match etcd.call("/v3/kv/txn", txn) {
        Ok(v) if v["succeeded"].as_bool() == Some(true) => Ok(()),
        Ok(_) => Err(color_eyre::eyre::eyre!(
            "the lock was lost (its lease expired or another cutover holds it now); the write \
             with fencing token {token} was refused"
        )),
        Err(e) => Err(color_eyre::eyre::eyre!("{e}")),
    }
}

/// Write with a fencing token of one's choosing: what a holder whose lease expired would do
/// (tests show it is refused).
pub fn write_with_token(
    etcd: &Etcd,
    env: &str,
    token: i64,
    memory: &EnvMemory,
) -> color_eyre::eyre::Result<()> {
    let op = etcd.put_op(env, "state", memory);
    fenced_txn(etcd, &etcd.key(env, "lock"), token, vec![op])
}

/// A lock held on etcd: its key, lease and fencing token; `lost` is set when the lease could
/// not be kept alive or a fenced write was refused.
#[derive(Debug)]
pub struct Held {
    env: String,
    key: String,
    lease: i64,
    /// The lock key's create revision.
    pub token: i64,
    lost: Arc<Mutex<Option<String>>>,
    /// The operation's activity, and the channel its publisher writes the newest of.
    activity: Mutex<Activity>,
    publish: Option<tokio::sync::watch::Sender<Activity>>,
    /// Told when the publisher wrote the last activity and ended.
    flushed: std::sync::mpsc::Receiver<()>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _stop_polling: tokio::sync::oneshot::Sender<()>,
}

/// Read the takeover request of a held lock every [`TAKEOVER_POLL`] until stopped.
async fn poll_takeover(
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
async fn publish_activity(
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

/// What a follower of an environment sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Lines to show ("swap #a1b2c3d4 by alice@laptop-2: verify ok ...").
    Line(String),
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
fn theirs(holder: &str, pid: u32) -> bool {
    pid != std::process::id() || holder != crate::paths::user_at_host()
}

async fn follow(
    client: Arc<Client>,
    dir: String,
    members: String,
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
) {
    let say = |l: String| tx.send(Seen::Line(l)).is_ok();
    let (activity_key, lock_key) = (format!("{dir}activity"), format!("{dir}lock"));
    let mut shown: Option<Activity> = None;
    let mut holder: Option<LockInfo> = None;
    let mut down = false;
    loop {
        // Where things stand, at one revision; then every change after it.
        let snapshot = json!({"success": [
            {"request_range": {"key": b64(&activity_key)}},
            {"request_range": {"key": b64(&lock_key)}},
        ]});
        let failed = match client.post("/v3/kv/txn", &snapshot).await {
            Ok(v) => {
                if down {
                    down = false;
                    say(format!("shared store: etcd at {members} answers again"));
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
            down = true;
            say(format!(
                "shared store: {failed}; operations are refused until it answers"
            ));
        }
        // A pause before asking again, not a synchronisation.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

type FollowState<'a> = (&'a mut Option<Activity>, &'a mut Option<LockInfo>);

fn seen_activity(st: &mut FollowState, a: Option<Activity>, say: &impl Fn(String) -> bool) {
    let Some(a) = a else { return };
    if theirs(&a.holder, a.pid) {
        for l in a.lines_since(st.0.as_ref()) {
            say(l);
        }
    }
    *st.0 = Some(a);
}

fn seen_holder(st: &mut FollowState, h: Option<LockInfo>, say: &impl Fn(String) -> bool) {
    if *st.1 == h {
        return;
    }
    match &h {
        Some(h) if theirs(&h.holder, h.pid) => {
            say(format!("lock taken by {}", h.describe()));
        }
        None if st.1.as_ref().is_some_and(|o| theirs(&o.holder, o.pid)) => {
            say("lock free".to_string());
        }
        _ => {}
    }
    *st.1 = h;
}

/// Stream the changes under `dir` from revision `from`; returns why the stream ended.
async fn watch(
    client: &Client,
    dir: &str,
    from: i64,
    st: &mut FollowState<'_>,
    say: &impl Fn(String) -> bool,
    activity_key: &str,
    lock_key: &str,
) -> String {
    let body = json!({"create_request": {
        "key": b64(dir), "range_end": prefix_end(dir), "start_revision": from.to_string(),
    }});
    let token = client.token.lock().ok().and_then(|t| t.clone());
    let mut resp = None;
    for base in &client.endpoints {
        let mut req = client
            .http
            .post(format!("{}/v3/watch", base.trim_end_matches('/')))
            // A stream: no overall deadline (the client's is for single answers).
            .timeout(Duration::from_secs(24 * 3600))
            .json(&body);
        if let Some(t) = &token {
            req = req.header("Authorization", t);
        }
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

/// Renew the lease every third of its TTL until stopped. The lock counts as lost when etcd
/// says the lease is gone, or when no renewal succeeded for a whole TTL (the lease may have
/// expired on the server by then).
async fn keep_alive(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_past_every_key_of_the_prefix() {
        assert_eq!(prefix_end("/cutover/"), B64.encode("/cutover0"));
        assert_eq!(int(&json!("42")), 42);
        assert_eq!(int(&json!(7)), 7);
    }
}
