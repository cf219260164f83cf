//! Files a proxy reads: written atomically, keeping their owner; the maintenance page.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use color_eyre::eyre::{Result, WrapErr, bail};

/// The values of the `PREFIX=VALUE` flag files in `dir`, sorted: where a flag-file router
/// (Apache's and Caddy's file modes) points `prefix` (`live`, `next`, `maintenance`...).
pub(crate) fn flags(dir: &Path, prefix: &str) -> Result<Vec<String>> {
    let cannot = || format!("cannot read flag_dir {}", dir.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).wrap_err_with(cannot)? {
        let name = e.wrap_err_with(cannot)?.file_name();
        if let Some(v) = name
            .to_str()
            .and_then(|n| n.strip_prefix(prefix))
            .and_then(|n| n.strip_prefix('='))
        {
            out.push(v.to_string());
        }
    }
    out.sort();
    Ok(out)
}

/// Make `PREFIX=value` the one flag of its kind in `dir`, or leave none (`value` `None`): a
/// rename of the old flag (so at every instant exactly one exists), a create (through a
/// temporary file and a rename) when there was none, a remove; then read back. Several flags
/// of one kind (made by hand) are refused, and nothing changes.
pub(crate) fn set_flag(dir: &Path, prefix: &str, value: Option<&str>) -> Result<()> {
    let current = flags(dir, prefix)?;
    if current.len() > 1 {
        bail!(
            "{} holds several {prefix}= files ({}), made by hand? Remove all but one, then \
             retry; nothing was changed",
            dir.display(),
            current.join(", ")
        );
    }
    let path = |v: &str| dir.join(format!("{prefix}={v}"));
    let writable =
        "check that flag_dir is writable by cutover (and readable by the proxy), then retry";
    match (current.first(), value) {
        (Some(c), Some(v)) if c == v => return Ok(()),
        (Some(c), Some(v)) => std::fs::rename(path(c), path(v)).wrap_err_with(|| {
            format!(
                "cannot rename {} to {}; the proxy still follows `{c}`; {writable}",
                path(c).display(),
                path(v).display()
            )
        })?,
        (None, Some(v)) => write_atomic(&path(v), b"", None).wrap_err_with(|| {
            format!("cannot create flag file {}; {writable}", path(v).display())
        })?,
        (Some(c), None) => match std::fs::remove_file(path(c)) {
            Ok(()) => {}
            // Gone already: what was asked.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).wrap_err_with(|| {
                    format!(
                        "cannot remove {}; {writable}, or remove it by hand",
                        path(c).display()
                    )
                });
            }
        },
        (None, None) => return Ok(()),
    }
    let now = flags(dir, prefix)?;
    if now.iter().map(String::as_str).ne(value) {
        bail!(
            "after the change {} holds {prefix}= {:?}, not {:?}: someone else changed it; run \
             `cutover status`, then try again",
            dir.display(),
            now,
            value.unwrap_or("nothing")
        );
    }
    Ok(())
}

/// The `retry_after` a maintenance answer sends when the router table gives none, in seconds.
pub(crate) fn default_retry_after<T: From<u8>>() -> T {
    T::from(30)
}

/// The maintenance page: the operator's `maintenance_page` file, or a plain one.
pub(crate) fn maintenance_html(file: Option<&Path>) -> Result<String> {
    match file {
        Some(p) => std::fs::read_to_string(p).wrap_err_with(|| {
            format!(
                "cannot read maintenance_page {}; fix the path or remove the setting",
                p.display()
            )
        }),
        None => Ok(
            "<!doctype html>\n<html><head><title>Down for maintenance</title></head>\n\
             <body><h1>Down for maintenance</h1><p>We will be back shortly.</p></body></html>\n"
                .into(),
        ),
    }
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh hidden name beside `p`, for a file or link renamed over it.
pub(crate) fn temp_sibling(p: &Path) -> PathBuf {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    p.with_file_name(format!(".{name}.cutover-{}-{n}", std::process::id()))
}

/// Write a file a proxy reads through a temporary sibling, fsync and a rename, so a reader
/// sees the old or the new content, never a part. The new file keeps the owner, group and
/// permissions of the file it replaces (`mode`, when given, replaces the permissions; a new
/// file gets 0644 and cutover's own user): a map file owned by `haproxy` stays owned by
/// `haproxy`.
pub(crate) fn write_atomic(p: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    replace(p, bytes, mode, true)
}

/// [`write_atomic`] without the fsyncs: every process sees the old or the new content at
/// once (the page cache is shared), which is what a crash of the writing process needs; the
/// caller makes it durable on disk later with [`sync_file_and_dir`].
pub(crate) fn write_visible(p: &Path, bytes: &[u8], mode: Option<u32>) -> Result<()> {
    replace(p, bytes, mode, false)
}

/// fsync a file and the directory that holds its name. A file that is gone already (closed
/// by then) has nothing to flush; the directory's fsync is best effort.
pub(crate) fn sync_file_and_dir(p: &Path) -> std::io::Result<()> {
    match std::fs::File::open(p) {
        Ok(f) => f.sync_all()?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    sync_dir_of(p);
    Ok(())
}

/// fsync the directory that holds `p`'s name, so a rename to it survives a crash (best effort).
fn sync_dir_of(p: &Path) {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

fn replace(p: &Path, bytes: &[u8], mode: Option<u32>, durable: bool) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;
    let tmp = temp_sibling(p);
    let old = std::fs::metadata(p).ok();
    let mode = mode.or_else(|| old.as_ref().map(|m| m.permissions().mode()));
    let r = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        if let Some(m) = &old {
            keep_owner(&f, p, m.uid(), m.gid())?;
        }
        // After the chown: a chown clears the set-id bits.
        f.set_permissions(std::fs::Permissions::from_mode(
            mode.unwrap_or(0o644) & 0o7777,
        ))?;
        if durable {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, p)?;
        if durable {
            sync_dir_of(p);
        }
        Ok(())
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r.wrap_err_with(|| format!("cannot write {} (through {})", p.display(), tmp.display()))
}

/// Give the new file `f` (about to replace `p`) the owner and group of the old one. Only
/// root may give a file away: as another user, the owner cannot be kept (the group still is
/// when cutover's user is in it), and the write is refused rather than silently changing who
/// owns a file the proxy reads.
fn keep_owner(f: &std::fs::File, p: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let now = f.metadata()?;
    if now.uid() == uid && now.gid() == gid {
        return Ok(());
    }
    std::os::unix::fs::fchown(f, Some(uid), Some(gid)).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot give the new {} the owner {uid}:{gid} of the file it replaces ({e}); \
                 run cutover as that user or as root, or chown the file to cutover's user",
                p.display()
            ),
        )
    })
}
