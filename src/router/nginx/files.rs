//! nginx's files and processes: the upstreams file parsed, changes restored exactly, links, reload detection.

use super::*;

/// What cutover's files say, read back.
#[derive(Debug, Default, Clone)]
pub(super) struct Disk {
    pub(super) canon_dir: PathBuf,
    pub(super) live: Option<String>,
    pub(super) preview: Option<String>,
    pub(super) maintenance: Option<MaintenanceMode>,
    /// (slot, host:port) of servers marked `down`.
    pub(super) down: BTreeSet<(String, String)>,
    /// Slots whose upstream is in upstreams.conf.
    pub(super) present: BTreeSet<String>,
    /// The canary split `upstreams.conf` holds (`split_clients`), if any.
    pub(super) split: Option<Weights>,
    pub(super) notes: Vec<String>,
    /// Why nginx cannot be switched through these files (RouterState::problems).
    pub(super) problems: Vec<String>,
}

pub(super) struct CmdOutput {
    pub(super) shown: String,
    pub(super) ok: bool,
    pub(super) status: String,
    pub(super) text: String,
}

impl CmdOutput {
    /// `Ok` when the command succeeded; else `failed`, the command, its exit status and what
    /// it printed.
    pub(super) fn succeeded(&self, failed: &str) -> Result<()> {
        if !self.ok {
            bail!(
                "{failed} (`{}` {}):\n{}",
                self.shown,
                self.status,
                self.text
            );
        }
        Ok(())
    }
}

// --- nginx config reading ---------------------------------------------------------------

/// Words, quoted strings (unquoted), `{`, `}` and `;`, with comments removed.
pub(super) fn tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    let flush = |cur: &mut String, out: &mut Vec<String>| {
        if !cur.is_empty() {
            out.push(std::mem::take(cur));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '#' => {
                flush(&mut cur, &mut out);
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            '"' | '\'' => {
                flush(&mut cur, &mut out);
                let mut s = String::new();
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        if let Some(e) = chars.next() {
                            s.push(e);
                        }
                    } else if d == c {
                        break;
                    } else {
                        s.push(d);
                    }
                }
                out.push(s);
            }
            '{' | '}' | ';' => {
                flush(&mut cur, &mut out);
                out.push(c.to_string());
            }
            c if c.is_whitespace() => flush(&mut cur, &mut out),
            c => cur.push(c),
        }
    }
    flush(&mut cur, &mut out);
    out
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ServerLine {
    pub(super) addr: String,
    pub(super) down: bool,
}

/// `upstream NAME { server ADDR [params]; ... }` blocks, by name.
pub(super) fn parse_upstreams(text: &str) -> BTreeMap<String, Vec<ServerLine>> {
    let t = tokenize(text);
    let mut out = BTreeMap::new();
    let mut i = 0;
    while i < t.len() {
        if t[i] == "upstream" && t.get(i + 2).map(String::as_str) == Some("{") {
            let name = t[i + 1].clone();
            let mut servers = Vec::new();
            i += 3;
            let mut depth = 1;
            let mut stmt: Vec<String> = Vec::new();
            while i < t.len() && depth > 0 {
                match t[i].as_str() {
                    "{" => depth += 1,
                    "}" => depth -= 1,
                    ";" => {
                        if depth == 1
                            && stmt.first().map(String::as_str) == Some("server")
                            && let Some(addr) = stmt.get(1)
                        {
                            servers.push(ServerLine {
                                addr: addr.clone(),
                                down: stmt[2..].iter().any(|p| p == "down"),
                            });
                        }
                        stmt.clear();
                    }
                    w => stmt.push(w.to_string()),
                }
                i += 1;
            }
            out.insert(name, servers);
        } else {
            i += 1;
        }
    }
    out
}

// --- files --------------------------------------------------------------------------------

/// One thing cutover writes in its directory.
#[derive(Debug, Clone)]
pub(super) enum Change {
    Dir(PathBuf),
    File(PathBuf, String),
    /// A symlink at the path with this (relative) target.
    Link(PathBuf, String),
    /// Nothing at the path (a link removed).
    Absent(PathBuf),
}

/// A path as it was before a change, to put it back exactly.
#[derive(Debug)]
pub(super) enum Entry {
    Missing,
    File {
        bytes: Vec<u8>,
        mode: u32,
        modified: Option<SystemTime>,
    },
    Link {
        target: PathBuf,
        modified: Option<SystemTime>,
    },
    Dir,
}

/// Put back every performed change, last first. Returns a clause for the error message.
pub(super) fn restore(done: &[(Change, Entry)]) -> String {
    let mut failures = Vec::new();
    for (change, before) in done.iter().rev() {
        let p = change.path();
        let r = match before {
            Entry::Missing => match change {
                Change::Dir(_) => std::fs::remove_dir(p).or(Ok(())),
                _ => std::fs::remove_file(p),
            }
            .wrap_err_with(|| format!("cannot remove {}", p.display())),
            Entry::Dir => Ok(()),
            Entry::File {
                bytes,
                mode,
                modified,
            } => write_atomic(p, bytes, Some(*mode)).map(|_| {
                if let Some(t) = modified {
                    set_mtime(p, *t);
                }
            }),
            Entry::Link { target, modified } => replace_link(p, target).map(|_| {
                if let Some(t) = modified {
                    set_mtime(p, *t);
                }
            }),
        };
        if let Err(e) = r {
            failures.push(format!("{e:#}"));
        }
    }
    undo_outcome(
        &failures,
        "; cutover restored its files exactly as they were",
        |f| format!("; restoring cutover's files FAILED ({f}): check them before the next reload"),
    )
}

/// Point a symlink at `target` atomically (a new link renamed over the old, as `mv -T`). The
/// new link keeps the old one's owner and group (nginx's `disable_symlinks if_not_owner`
/// compares them), as rewritten files do.
pub(super) fn replace_link(p: &Path, target: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let tmp = temp_sibling(p);
    let old = std::fs::symlink_metadata(p).ok();
    let r = std::os::unix::fs::symlink(target, &tmp)
        .and_then(|_| match &old {
            Some(m) if m.file_type().is_symlink() => {
                let now = std::fs::symlink_metadata(&tmp)?;
                if (now.uid(), now.gid()) == (m.uid(), m.gid()) {
                    Ok(())
                } else {
                    std::os::unix::fs::lchown(&tmp, Some(m.uid()), Some(m.gid()))
                }
            }
            _ => Ok(()),
        })
        .and_then(|_| std::fs::rename(&tmp, p));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.wrap_err_with(|| format!("cannot point link {} at {}", p.display(), target.display()))
}

/// Set a path's modification time without following a symlink (best effort): a restored
/// file keeps its old time, so "changed after the last reload" stays true to the content.
pub(super) fn set_mtime(p: &Path, t: SystemTime) {
    let Ok(d) = t.duration_since(SystemTime::UNIX_EPOCH) else {
        return;
    };
    let t = rustix::fs::Timespec {
        tv_sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: d.subsec_nanos().into(),
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    let _ = rustix::fs::utimensat(
        rustix::fs::CWD,
        p,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    );
}

// --- processes ----------------------------------------------------------------------------

/// The fields of /proc/PID/stat after the command name. (Read by hand: the few fields used
/// here do not justify a procfs crate, and rustix does not read /proc text.)
pub(super) fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// Child processes of `ppid` (nginx's workers, cache manager...).
pub(super) fn children_of(ppid: u32) -> Result<Vec<u32>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").wrap_err("cannot read /proc")? {
        let Ok(e) = e else { continue };
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(f) = proc_stat(pid)
            && f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(ppid)
        {
            out.push(pid);
        }
    }
    Ok(out)
}

/// Whether an nginx worker has been told to stop (or is gone).
pub(super) fn shutting_down(pid: u32) -> bool {
    let exited =
        proc_stat(pid).is_none_or(|f| matches!(f.first().map(String::as_str), Some("Z" | "X")));
    exited
        || std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("shutting down"))
            .unwrap_or(true)
}

/// When the newest worker that is not shutting down started: when nginx last loaded its config.
pub(super) fn newest_worker_start(master: u32) -> Option<SystemTime> {
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let ticks = Some(rustix::param::clock_ticks_per_second()).filter(|t| *t > 0)?;
    children_of(master)
        .ok()?
        .into_iter()
        .filter(|pid| !shutting_down(*pid))
        .filter_map(|pid| proc_stat(pid)?.get(19)?.parse::<u64>().ok())
        .max()
        .map(|start| {
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(btime)
                + Duration::from_millis(start * 1000 / ticks)
        })
}

impl Change {
    pub(super) fn path(&self) -> &Path {
        match self {
            Change::Dir(p) | Change::File(p, _) | Change::Link(p, _) | Change::Absent(p) => p,
        }
    }
    pub(super) fn in_place(&self) -> bool {
        match self {
            Change::Dir(p) => p.is_dir(),
            Change::File(p, content) => {
                std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file())
                    && std::fs::read(p).is_ok_and(|b| b == content.as_bytes())
            }
            Change::Link(p, target) => std::fs::read_link(p).is_ok_and(|t| t == Path::new(target)),
            Change::Absent(p) => std::fs::symlink_metadata(p).is_err(),
        }
    }
    pub(super) fn perform(&self) -> Result<()> {
        match self {
            Change::Dir(p) => std::fs::create_dir_all(p)
                .wrap_err_with(|| format!("cannot create directory {}", p.display())),
            Change::File(p, content) => write_atomic(p, content.as_bytes(), None),
            Change::Link(p, target) => replace_link(p, Path::new(target)),
            Change::Absent(p) => {
                std::fs::remove_file(p).wrap_err_with(|| format!("cannot remove {}", p.display()))
            }
        }
    }
}

impl Entry {
    pub(super) fn read(p: &Path) -> Entry {
        match std::fs::symlink_metadata(p) {
            Err(_) => Entry::Missing,
            Ok(m) if m.file_type().is_symlink() => match std::fs::read_link(p) {
                Ok(target) => Entry::Link {
                    target,
                    modified: m.modified().ok(),
                },
                Err(_) => Entry::Missing,
            },
            Ok(m) if m.is_dir() => Entry::Dir,
            Ok(m) => Entry::File {
                bytes: std::fs::read(p).unwrap_or_default(),
                mode: m.permissions().mode(),
                modified: m.modified().ok(),
            },
        }
    }
}
