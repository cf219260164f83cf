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
//!
//! Files: `mod.rs` the store's operations; `client.rs` the gateway's HTTP side; `lease.rs` a
//! held lock (lease renewal, takeover polling, the activity it publishes); `follow.rs` the
//! watch other cutovers follow an environment with.

mod client;
mod follow;
mod lease;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::records::{Activity, EnvMemory, Journal, LockError, LockInfo};
use client::{B64, CallError, Client, b64, int, kvs, members, prefix_end, value};
pub use follow::Seen;
pub use lease::Held;
use lease::{keep_alive, poll_takeover, publish_activity};

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
    pub user_env: Option<String>,
    /// The environment variable holding that user's password (never logged).
    pub password_env: Option<String>,
    /// PEM file of the CA that signed the members' certificates (`https://` URLs), when the
    /// system does not trust it already.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM client certificate (and `key_file`, its key), for members that ask for one
    /// (etcd's `--client-cert-auth`).
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
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
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Some("`cert_file` and `key_file` go together".into());
        }
        let tls = self.ca_file.is_some() || self.cert_file.is_some();
        if tls && let Some(u) = self.etcd.iter().find(|u| u.starts_with("http://")) {
            return Some(format!(
                "`{u}` is plain http://, but `ca_file`/`cert_file` are for https:// members"
            ));
        }
        None
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

pub(super) type Asked = Arc<Mutex<Option<Takeover>>>;

/// How often a holder looks for a takeover request (as the file store's watch does).
pub(super) const TAKEOVER_POLL: Duration = Duration::from_millis(250);

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
pub(super) struct Takeover {
    pub(super) target_op_id: String,
    pub(super) by: LockInfo,
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
        let mut builder = crate::http_client()
            .timeout(s.timeout)
            .connect_timeout(s.timeout)
            .user_agent(concat!("cutover/", env!("CARGO_PKG_VERSION")));
        let read = |what: &str, p: &std::path::Path| {
            std::fs::read(p)
                .wrap_err_with(|| format!("[settings.store]: cannot read `{what}` {}", p.display()))
        };
        if let Some(ca) = &s.ca_file {
            let pem = read("ca_file", ca)?;
            // Unreadable as PEM or without a certificate: the same mistake, one message.
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| {
                    eyre!(
                        "[settings.store]: `ca_file` {} holds no PEM certificate",
                        ca.display()
                    )
                })?;
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if let (Some(cert), Some(key)) = (&s.cert_file, &s.key_file) {
            let mut pem = read("cert_file", cert)?;
            pem.push(b'\n');
            pem.extend(read("key_file", key)?);
            let id = reqwest::Identity::from_pem(&pem).wrap_err_with(|| {
                format!(
                    "[settings.store]: `cert_file` {} with `key_file` {} is not a PEM certificate \
                     and its private key",
                    cert.display(),
                    key.display()
                )
            })?;
            builder = builder.identity(id);
        }
        let http = builder
            .build()
            .wrap_err("cannot build the HTTP client for etcd")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let handle = crate::runtime_thread("cutover-etcd", async {
            let _ = stopped.await;
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
        rx.recv_timeout(self.timeout * n).unwrap_or_else(|_| {
            Err(CallError::Unreachable {
                members: self.members(),
                why: None,
            })
        })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CallError> {
        let v = self.call("/v3/kv/range", json!({"key": b64(key)}))?;
        Ok(kvs(&v).first().and_then(value))
    }

    /// Take the lock of `env`: a lease, then the key created only if absent.
    pub fn lock(&self, env: &str, me: &LockInfo) -> Result<Held, LockError> {
        let unreachable = |e: CallError| match e {
            e @ CallError::Unreachable { .. } => {
                LockError::Io(format!("cannot take the lock: {e}; nothing was changed"))
            }
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
        // Keys only first: the prefix also holds every audit record ever written.
        let Ok(v) = self.call(
            "/v3/kv/range",
            json!({"key": b64(&self.prefix), "range_end": prefix_end(&self.prefix), "keys_only": true}),
        ) else {
            return Vec::new();
        };
        let envs: Vec<String> = v["kvs"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter_map(|kv| kv["key"].as_str().and_then(|k| B64.decode(k).ok()))
            .map(|k| String::from_utf8_lossy(&k).to_string())
            .filter_map(|k| {
                k.strip_prefix(&self.prefix)
                    .and_then(|k| k.strip_suffix("/state"))
                    .map(str::to_string)
            })
            .collect();
        if envs.is_empty() {
            return Vec::new();
        }
        let reads: Vec<Value> = envs
            .iter()
            .map(|e| json!({"request_range": {"key": b64(&self.key(e, "state"))}}))
            .collect();
        let Ok(v) = self.call("/v3/kv/txn", json!({"success": reads})) else {
            return Vec::new();
        };
        envs.into_iter()
            .zip(v["responses"].as_array().cloned().unwrap_or_default())
            .filter_map(|(e, r)| {
                let m = kvs(&r["response_range"]).first().and_then(value)?;
                Some((e, m))
            })
            .collect()
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

pub(super) fn fenced_txn(
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
