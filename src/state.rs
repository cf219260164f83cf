//! What cutover remembers between runs, and the per-environment operation lock.
//!
//! The state file (`state.json` in the state dir) keeps, per environment, the previous live
//! slot (so `r` works after a restart) and what cutover last set (to show drift). The lock file
//! (`<env>.lock`) keeps two operators, or a script and a person, from acting on the same
//! environment at once.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use color_eyre::eyre::{Result, WrapErr, bail};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvMemory {
    /// The slot that was live before the last switch: the rollback target.
    pub previous_live: Option<String>,
    /// The live slot cutover last set.
    pub last_set_live: Option<String>,
    /// The preview slot cutover last set.
    pub last_set_preview: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(default)]
    pub environments: BTreeMap<String, EnvMemory>,
}

/// The state directory and the files in it.
#[derive(Debug, Clone)]
pub struct Store {
    pub dir: PathBuf,
}

impl Store {
    pub fn new(dir: PathBuf) -> Self {
        Store { dir }
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    pub fn load(&self) -> Memory {
        std::fs::read(self.state_path())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn env(&self, env: &str) -> EnvMemory {
        self.load().environments.remove(env).unwrap_or_default()
    }

    /// Change one environment's memory and write the file atomically.
    pub fn update(&self, env: &str, f: impl FnOnce(&mut EnvMemory)) -> Result<()> {
        let mut m = self.load();
        f(m.environments.entry(env.to_string()).or_default());
        let json = serde_json::to_vec_pretty(&m)?;
        write_atomic(&self.state_path(), &json)
    }

    fn lock_path(&self, env: &str) -> PathBuf {
        let safe: String = env
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{safe}.lock"))
    }

    /// Take the operation lock of an environment, or say who holds it.
    pub fn lock(&self, env: &str, operation: &str) -> Result<LockGuard> {
        std::fs::create_dir_all(&self.dir)
            .wrap_err_with(|| format!("cannot create the state dir {}", self.dir.display()))?;
        let path = self.lock_path(env);
        let me = LockInfo {
            holder: crate::paths::user_at_host(),
            pid: std::process::id(),
            operation: operation.to_string(),
            since: crate::timefmt::rfc3339(SystemTime::now()),
        };
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    f.write_all(&serde_json::to_vec(&me)?)?;
                    return Ok(LockGuard { path, pid: me.pid });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    match self.holder(env) {
                        Some(h) if h.is_stale() => {
                            tracing::warn!(?h, "breaking a stale lock (its process is gone)");
                            match std::fs::remove_file(&path) {
                                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                                    return Err(e).wrap_err_with(|| {
                                        format!(
                                            "cannot break the stale lock {} (its process is gone); \
                                             remove it by hand",
                                            path.display()
                                        )
                                    });
                                }
                                _ => {}
                            }
                        }
                        Some(h) => bail!(
                            "environment `{env}` is locked by {} (pid {}, {} since {}); wait for it, \
                             or break it with `cutover unlock {env}`",
                            h.holder,
                            h.pid,
                            h.operation,
                            h.since
                        ),
                        None => {
                            // Unreadable: half-written by another process, or garbage.
                            bail!(
                                "environment `{env}` has an unreadable lock file {}; \
                                 break it with `cutover unlock {env}`",
                                path.display()
                            )
                        }
                    }
                }
                Err(e) => {
                    return Err(e).wrap_err_with(|| format!("cannot create {}", path.display()));
                }
            }
        }
        bail!(
            "could not take the lock of `{env}`: another cutover took it at the same moment; \
             try again"
        )
    }

    /// Who holds the lock of an environment, if anyone.
    pub fn holder(&self, env: &str) -> Option<LockInfo> {
        let b = std::fs::read(self.lock_path(env)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// Break a lock (the `cutover unlock` command). Returns who held it.
    pub fn break_lock(&self, env: &str) -> Result<Option<LockInfo>> {
        let h = self.holder(env);
        match std::fs::remove_file(self.lock_path(env)) {
            Ok(()) => Ok(h),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).wrap_err("cannot remove the lock file"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockInfo {
    pub holder: String,
    pub pid: u32,
    pub operation: String,
    pub since: String,
}

impl LockInfo {
    /// A lock held by a process of this host that no longer runs.
    pub fn is_stale(&self) -> bool {
        let host = crate::paths::user_at_host();
        let same_host = host.split('@').nth(1) == self.holder.split('@').nth(1);
        same_host && !Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

/// Removes the lock file when the operation ends.
#[derive(Debug)]
pub struct LockGuard {
    path: PathBuf,
    pid: u32,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        let mine = std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice::<LockInfo>(&b).ok())
            .is_some_and(|l| l.pid == self.pid);
        if mine {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Write a file by writing a temp file beside it and renaming it over, keeping the owner,
/// group and mode of the file it replaces (a new one is 0600), as the drivers' writer does.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).wrap_err_with(|| format!("cannot create {}", dir.display()))?;
    let new_mode = (!path.exists()).then_some(0o600);
    crate::router::write_atomic(path, bytes, new_mode)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_survives_a_new_store() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = Store::new(d.path().to_path_buf());
        s.update("shop", |m| m.previous_live = Some("blue".into()))
            .expect("write");
        let again = Store::new(d.path().to_path_buf());
        assert_eq!(again.env("shop").previous_live.as_deref(), Some("blue"));
    }

    #[test]
    fn a_held_lock_names_its_holder_and_a_dead_one_is_broken() {
        let d = tempfile::tempdir().expect("tempdir");
        let s = Store::new(d.path().to_path_buf());
        let g = s.lock("shop", "swap").expect("first lock");
        let e = s
            .lock("shop", "rollback")
            .expect_err("second lock must fail");
        let msg = e.to_string();
        assert!(msg.contains("locked by") && msg.contains("swap"), "{msg}");
        assert!(msg.contains("cutover unlock shop"), "{msg}");
        drop(g);
        // A lock whose pid does not exist on this host is stale.
        let dead = LockInfo {
            holder: crate::paths::user_at_host(),
            pid: 999_999_999,
            operation: "swap".into(),
            since: "then".into(),
        };
        std::fs::write(
            s.lock_path("shop"),
            serde_json::to_vec(&dead).expect("json"),
        )
        .expect("write");
        let _g = s.lock("shop", "swap").expect("stale lock is broken");
    }
}
