//! Flag files (maintenance) and what several members' states add up to.

use super::*;

pub(super) fn aggregate<'a>(ws: impl Iterator<Item = &'a Worker>) -> AdminState {
    let states: Vec<AdminState> = ws.map(|w| w.status.admin()).collect();
    for s in [
        AdminState::Ready,
        AdminState::Drain,
        AdminState::Maint,
        AdminState::Disabled,
    ] {
        if states.contains(&s) {
            return s;
        }
    }
    AdminState::Unknown
}

/// The members' status words; a busy count left over by Apache is said, as it is not counted
/// in `sessions`.
pub(super) fn check_text<'a>(ws: impl Iterator<Item = &'a Worker>) -> Option<String> {
    let mut texts: Vec<String> = ws
        .map(|w| match w.leftover {
            0 => w.status_text.clone(),
            n => format!("{} (busy {n} left over, idle)", w.status_text),
        })
        .collect();
    texts.dedup();
    (!texts.is_empty()).then(|| texts.join(", "))
}

pub(super) async fn exists(p: &Path) -> Result<bool> {
    tokio::fs::try_exists(p).await.wrap_err_with(|| {
        format!(
            "cannot tell whether maintenance flag {} exists",
            p.display()
        )
    })
}

/// Create a flag file atomically (a temporary file beside it, then a rename); one that is
/// already there keeps its owner, group and mode.
pub(super) async fn create_flag(p: &Path, content: &str) -> Result<()> {
    let (path, bytes) = (p.to_path_buf(), content.as_bytes().to_vec());
    tokio::task::spawn_blocking(move || crate::router::write_atomic(&path, &bytes, None))
        .await
        .map_err(|e| eyre!("writing {} did not finish: {e}", p.display()))?
        .wrap_err_with(|| {
            format!(
                "cannot create flag file {}: its directory must exist and be writable by \
                 cutover (and readable by Apache)",
                p.display()
            )
        })
}

pub(super) async fn remove_flag(p: &Path) -> Result<()> {
    match tokio::fs::remove_file(p).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).wrap_err_with(|| {
            format!(
                "cannot remove maintenance flag {}; remove it by hand to end maintenance",
                p.display()
            )
        }),
    }
}
