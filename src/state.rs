//! What cutover remembers between runs, the per-environment operation lock, and the
//! operation journal.
//!
//! Everything lives in the state dir, one set of files per environment (the name is checked
//! to be a safe file name when the config loads; [`Store`] maps it again to be sure):
//! - `<env>.lock` — the operation lock: an OS advisory lock (`flock`) held on this file's open
//!   descriptor for the whole operation. The kernel releases it when the holder exits, however
//!   it exits (kill -9 included), so there is no stale lock to break and no two processes can
//!   ever hold it. The holder writes who it is into the file; it empties the file before it
//!   lets go.
//! - `<env>.state.json` — the previous live slot (so `r` works after a restart) and what
//!   cutover last set (to show drift). Written atomically, only by the lock's holder, so two
//!   operations on two environments never lose each other's records. (`state.json`, one file
//!   for all environments, is still read for what older versions wrote.)
//! - `<env>.takeover` — another operator's request to take the lock over (see [`Store::request_takeover`]).
//! - `<env>.journal.json` — what a running operation is changing on the routers; removed when
//!   the routers are consistent again. One left behind by a dead process is an interrupted
//!   operation (`cutover recover`).
//!
//! The contract (lock, holder, takeover, memory, journal) is [`Coordination`]. With
//! `[settings.store] etcd = [...]` the same [`Store`] keeps all of it in etcd instead
//! ([`crate::etcd`]): the lock is a lease, every write is fenced by the lock's revision, and the
//! audit records are shared too (they still go to the local file).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use color_eyre::eyre::{Result, WrapErr, bail};
use serde::{Deserialize, Serialize};

use crate::etcd::{Etcd, EtcdSettings, Held};
pub use crate::records::{
    Activity, ActivityStep, EnvMemory, FromTo, Journal, JournalRouter, LockError, LockInfo, Memory,
    Versions,
};

/// The lock, state and journal contract, so that a shared store can stand in for the files.
pub trait Coordination: Send + Sync {
    /// Take the operation lock of `env`, or say who holds it.
    fn lock(&self, env: &str, me: &LockInfo) -> std::result::Result<LockGuard, LockError>;
    /// Who holds the lock of `env` now (a live holder only).
    fn holder(&self, env: &str) -> Option<LockInfo>;
    /// What cutover remembers of `env`.
    fn env(&self, env: &str) -> EnvMemory;
    /// Change `env`'s memory; only the lock's holder may.
    fn update(&self, guard: &LockGuard, f: &mut dyn FnMut(&mut EnvMemory)) -> Result<()>;
}

/// The state directory and the files in it, or the shared store on etcd.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
    /// The shared store, when `[settings.store]` names an etcd cluster: lock, memory,
    /// journal and takeover requests live there, not in `dir`.
    shared: Option<Arc<Etcd>>,
}

/// How long [`Store::lock`] keeps trying when the file is held for a moment by a reader or
/// a holder that is letting go (an empty holder record).
const LOCK_SETTLE: Duration = Duration::from_millis(500);

impl Store {
    pub fn new(dir: PathBuf) -> Self {
        Store { dir, shared: None }
    }

    /// The store the settings name: the state dir, or an etcd cluster (no request is made
    /// yet; an unreachable cluster shows when an operation takes the lock).
    pub fn open(dir: PathBuf, etcd: Option<&EtcdSettings>) -> Result<Self> {
        let mut s = Store::new(dir);
        if let Some(e) = etcd {
            s.shared = Some(Arc::new(Etcd::open(e)?));
        }
        Ok(s)
    }

    /// The etcd cluster this store shares, if it does.
    pub fn shared(&self) -> Option<&Etcd> {
        self.shared.as_deref()
    }

    /// Where the lock, memory and journal live, for messages.
    pub fn describe(&self) -> String {
        match &self.shared {
            Some(e) => format!("etcd at {}", e.members()),
            None => format!("state dir {}", self.dir.display()),
        }
    }

    /// A file name for an environment: its name with anything outside `[A-Za-z0-9._-]`
    /// replaced, and never `.`/`..`, so the path stays inside the state dir.
    fn file(&self, env: &str, suffix: &str) -> PathBuf {
        let mut safe: String = env
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if safe.starts_with('.') {
            safe.replace_range(0..1, "_");
        }
        self.dir.join(format!("{safe}{suffix}"))
    }

    fn legacy_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn ensure_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .wrap_err_with(|| format!("cannot create the state dir {}", self.dir.display()))?;
        set_mode(&self.dir, 0o700);
        Ok(())
    }

    /// Every environment's memory: what older versions wrote to `state.json`, overridden by
    /// the per-environment files.
    pub fn load(&self) -> Memory {
        if let Some(e) = &self.shared {
            return Memory {
                environments: e.all().into_iter().collect(),
            };
        }
        let mut m: Memory = std::fs::read(self.legacy_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for entry in dir.flatten() {
                let name = entry.file_name().to_string_lossy().to_string();
                let Some(env) = name.strip_suffix(".state.json") else {
                    continue;
                };
                if let Some(mem) = read_json::<StoredMemory>(&entry.path()) {
                    m.environments
                        .insert(mem.environment.unwrap_or(env.into()), mem.memory);
                }
            }
        }
        m
    }

    pub fn env(&self, env: &str) -> EnvMemory {
        if let Some(e) = &self.shared {
            return e.env(env);
        }
        match read_json::<StoredMemory>(&self.file(env, ".state.json")) {
            Some(m) => m.memory,
            None => self.load().environments.remove(env).unwrap_or_default(),
        }
    }

    /// Change one environment's memory and write its file atomically. The guard proves the
    /// caller holds that environment's lock.
    pub fn update(&self, guard: &LockGuard, f: impl FnOnce(&mut EnvMemory)) -> Result<()> {
        let mut m = self.env(&guard.env);
        f(&mut m);
        if let Some((e, held)) = &guard.shared {
            let op = e.put_op(&guard.env, "state", &m);
            return e.fenced(held, vec![op]);
        }
        let stored = StoredMemory {
            environment: Some(guard.env.clone()),
            memory: m,
        };
        self.ensure_dir()?;
        write_atomic(
            &self.file(&guard.env, ".state.json"),
            &serde_json::to_vec_pretty(&stored)?,
        )
    }

    /// Take the operation lock of an environment, or say who holds it.
    pub fn lock(&self, env: &str, me: &LockInfo) -> std::result::Result<LockGuard, LockError> {
        if let Some(e) = &self.shared {
            return e.lock(env, me).map(|held| LockGuard {
                file: None,
                shared: Some((e.clone(), held)),
                env: env.to_string(),
                info: me.clone(),
            });
        }
        self.ensure_dir()
            .map_err(|e| LockError::Io(format!("{e:#}")))?;
        let path = self.file(env, ".lock");
        let settle = Instant::now() + LOCK_SETTLE;
        loop {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(|e| LockError::Io(format!("cannot open {}: {e}", path.display())))?;
            set_mode(&path, 0o600);
            match file.try_lock() {
                Ok(()) => {
                    let json = serde_json::to_vec(me).unwrap_or_default();
                    // No fsync: the record names the holder to other processes, and
                    // the flock it describes does not outlive a reboot either.
                    let written = file
                        .set_len(0)
                        .and_then(|_| file.seek(SeekFrom::Start(0)))
                        .and_then(|_| file.write_all(&json));
                    if let Err(e) = written {
                        return Err(LockError::Io(format!(
                            "cannot write the holder into {}: {e}",
                            path.display()
                        )));
                    }
                    return Ok(LockGuard {
                        file: Some(file),
                        shared: None,
                        env: env.to_string(),
                        info: me.clone(),
                    });
                }
                Err(TryLockError::WouldBlock) => {
                    // Held. A holder that has written its record is a real one; an empty
                    // record is a holder letting go or a reader looking: try again shortly.
                    let mut buf = Vec::new();
                    let _ = file.read_to_end(&mut buf);
                    match serde_json::from_slice::<LockInfo>(&buf) {
                        Ok(h) if h.may_be_alive() => return Err(LockError::Held(h)),
                        parsed if Instant::now() >= settle => {
                            return Err(LockError::Held(parsed.unwrap_or_else(|_| LockInfo {
                                holder: "another cutover".into(),
                                pid: 0,
                                operation: "an operation".into(),
                                op_id: String::new(),
                                since: "now".into(),
                            })));
                        }
                        _ => {}
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::Error(e)) => {
                    return Err(LockError::Io(format!(
                        "cannot lock {}: {e}",
                        path.display()
                    )));
                }
            }
        }
    }

    /// Take the lock, asking its holder to hand it over first when it is held: the holder
    /// ends its watch (or finishes the router change it is in), records who took over, and
    /// lets go. Waits at most `wait`.
    pub fn take_over(
        &self,
        env: &str,
        me: &LockInfo,
        wait: Duration,
    ) -> std::result::Result<(LockGuard, Option<LockInfo>), LockError> {
        let holder = match self.lock(env, me) {
            Ok(g) => return Ok((g, None)),
            Err(LockError::Held(h)) => h,
            Err(e) => return Err(e),
        };
        let request = Takeover {
            target_op_id: holder.op_id.clone(),
            by: me.clone(),
        };
        let path = self.file(env, ".takeover");
        match &self.shared {
            Some(e) => e.request_takeover(env, &holder.op_id, me),
            None => write_atomic(&path, &serde_json::to_vec(&request).unwrap_or_default())
                .map_err(|e| LockError::Io(format!("{e:#}")))?,
        }
        let end = Instant::now() + wait;
        let result = loop {
            match self.lock(env, me) {
                Ok(g) => break Ok((g, Some(holder.clone()))),
                Err(LockError::Held(_)) if Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(LockError::Held(_)) => break Err(LockError::TakeoverTimedOut(holder, wait)),
                Err(e) => break Err(e),
            }
        };
        match &self.shared {
            Some(e) => e.clear_takeover(env),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        result
    }

    /// A takeover asked of the operation `op_id`, if any.
    pub fn takeover_request(&self, env: &str, op_id: &str) -> Option<LockInfo> {
        if let Some(e) = &self.shared {
            return e.takeover_request(env, op_id);
        }
        let t: Takeover = read_json(&self.file(env, ".takeover"))?;
        (t.target_op_id == op_id).then_some(t.by)
    }

    /// Who holds the lock of an environment now: a live process only (the kernel lets go of
    /// a dead one's lock).
    pub fn holder(&self, env: &str) -> Option<LockInfo> {
        if let Some(e) = &self.shared {
            return e.holder(env);
        }
        let path = self.file(env, ".lock");
        let file = File::open(&path).ok()?;
        let info: LockInfo = read_json(&path)?;
        match file.try_lock_shared() {
            Ok(()) => None, // nobody holds it: what the file says is left from a dead holder
            Err(_) => Some(info),
        }
    }

    /// `cutover unlock`: there is nothing to break while a live process holds the lock (the
    /// kernel ends it with that process); this clears what a dead holder left in the file.
    /// Returns the live holder instead, if there is one.
    pub fn clear_lock(&self, env: &str) -> Result<std::result::Result<bool, LockInfo>> {
        let me = LockInfo::me("unlock", "");
        match self.lock(env, &me) {
            Ok(guard) => {
                drop(guard);
                let had_journal = self.journal(env).is_some();
                Ok(Ok(had_journal))
            }
            Err(LockError::Held(h)) => Ok(Err(h)),
            Err(e) => bail!("{e}"),
        }
    }

    /// Write (or rewrite) the journal of a running operation. A local journal is in place for
    /// every process when this returns (what `recover` after a kill -9 needs) and reaches the
    /// disk on a thread of its own: the fsyncs (a few ms) run alongside the router command
    /// instead of before it. Only a power loss in those milliseconds can lose it, and then
    /// the routers read back at the next start still say where each one is.
    pub fn write_journal(&self, guard: &LockGuard, j: &Journal) -> Result<()> {
        if let Some((e, held)) = &guard.shared {
            let op = e.put_op(&guard.env, "journal", j);
            return e.fenced(held, vec![op]);
        }
        self.ensure_dir()?;
        let path = self.file(&guard.env, ".journal.json");
        crate::router::write_visible(&path, &serde_json::to_vec_pretty(j)?, private_if_new(&path))?;
        // The flush runs beside the router command (the journal is in place for every
        // process already); should no thread start, it runs here.
        let p = path.clone();
        let spawned = std::thread::Builder::new()
            .name("cutover-journal-sync".into())
            .spawn(move || flush_journal(&p));
        if spawned.is_err() {
            flush_journal(&path);
        }
        Ok(())
    }

    /// The routers are consistent again: close the journal.
    pub fn close_journal(&self, guard: &LockGuard) {
        if let Some((e, held)) = &guard.shared {
            let op = e.delete_op(&guard.env, "journal");
            if let Err(err) = e.fenced(held, vec![op]) {
                tracing::error!("cannot close the operation journal: {err:#}");
            }
            return;
        }
        let _ = std::fs::remove_file(self.file(&guard.env, ".journal.json"));
    }

    /// The journal left in the state dir, if any.
    pub fn journal(&self, env: &str) -> Option<Journal> {
        if let Some(e) = &self.shared {
            return e.journal(env);
        }
        read_json(&self.file(env, ".journal.json"))
    }

    /// An operation that a dead process left unfinished: a journal whose writer no longer
    /// holds the lock.
    pub fn interrupted(&self, env: &str) -> Option<Journal> {
        let j = self.journal(env)?;
        match self.holder(env) {
            Some(h) if h.op_id == j.op_id => None, // still running
            _ => Some(j),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredMemory {
    #[serde(default)]
    environment: Option<String>,
    #[serde(flatten)]
    memory: EnvMemory,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Takeover {
    target_op_id: String,
    by: LockInfo,
}

impl Coordination for Store {
    fn lock(&self, env: &str, me: &LockInfo) -> std::result::Result<LockGuard, LockError> {
        Store::lock(self, env, me)
    }
    fn holder(&self, env: &str) -> Option<LockInfo> {
        Store::holder(self, env)
    }
    fn env(&self, env: &str) -> EnvMemory {
        Store::env(self, env)
    }
    fn update(&self, guard: &LockGuard, f: &mut dyn FnMut(&mut EnvMemory)) -> Result<()> {
        Store::update(self, guard, |m| f(m))
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    let b = std::fs::read(path).ok()?;
    serde_json::from_slice(&b).ok()
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
}

/// An environment's operation lock, held until dropped (or until the process ends, however
/// it ends).
#[derive(Debug)]
pub struct LockGuard {
    file: Option<File>,
    /// The lock on etcd, with the store that lets go of it.
    shared: Option<(Arc<Etcd>, Held)>,
    pub env: String,
    pub info: LockInfo,
}

impl LockGuard {
    /// Why this lock is no longer held (its etcd lease was lost, or a fenced write was
    /// refused), if it is not. A file lock is never lost.
    pub fn lost(&self) -> Option<String> {
        self.shared.as_ref().and_then(|(_, h)| h.lost())
    }

    /// Share a step of the running operation with the other cutovers (a shared store only).
    pub fn share_step(&self, step: &str, ok: Option<bool>, message: &str) {
        if let Some((_, h)) = &self.shared {
            // Redacted here, the one way into the shared store: a note or a decision can
            // carry a check's error text (a URL with its credentials).
            let message = crate::redact::redact(message);
            h.activity(|a| a.step(step, ok, &message));
        }
    }

    /// Share the running operation's verdict (a shared store only).
    pub fn share_result(&self, result: &str, message: &str) {
        if let Some((_, h)) = &self.shared {
            h.activity(|a| {
                a.result = Some(result.to_string());
                a.message = Some(crate::redact::redact(message));
            });
        }
    }

    /// The fencing token of a lock on etcd (its key's create revision).
    pub fn fencing_token(&self) -> Option<i64> {
        self.shared.as_ref().map(|(_, h)| h.token)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some((e, held)) = self.shared.take() {
            e.release(held);
        }
        if let Some(f) = self.file.take() {
            // Empty the holder record first: a reader between this and the close sees
            // "letting go", never a stale name.
            let _ = f.set_len(0);
            let _ = f.unlock();
        }
    }
}

/// Write a file by writing a temp file beside it and renaming it over, keeping the owner,
/// group and mode of the file it replaces (a new one is 0600), as the drivers' writer does.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).wrap_err_with(|| format!("cannot create {}", dir.display()))?;
    crate::router::write_atomic(path, bytes, private_if_new(path))
}

/// The mode a state file gets when it is new (0600: only its user reads what cutover
/// remembers); `None` keeps an existing file's.
fn private_if_new(path: &Path) -> Option<u32> {
    (!path.exists()).then_some(0o600)
}

#[cfg(test)]
mod tests;

/// Flush the journal at `path` to disk; a failure is logged (the operation goes on: the
/// routers' own state still says where each one is).
fn flush_journal(path: &std::path::Path) {
    if let Err(e) = crate::router::sync_file_and_dir(path) {
        tracing::error!(
            "the operation journal {} was not flushed to disk; a power loss now could lose it: {e:#}",
            path.display()
        );
    }
}
