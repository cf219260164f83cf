//! XDG paths for config, state and logs.

use std::path::PathBuf;

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => home().join(fallback),
    }
}

/// `$XDG_CONFIG_HOME/cutover`
pub fn config_dir() -> PathBuf {
    xdg("XDG_CONFIG_HOME", ".config").join("cutover")
}

/// `$XDG_STATE_HOME/cutover`: state files, locks, audit log and debug log.
pub fn state_dir() -> PathBuf {
    xdg("XDG_STATE_HOME", ".local/state").join("cutover")
}

/// `user@host` for the audit log and locks. The user is `$USER` (or `$LOGNAME`), else the
/// name of this process's uid in /etc/passwd (root under a service manager or cron has no
/// `$USER`), else `uid<N>`.
pub fn user_at_host() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| std::env::var("LOGNAME").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(user_of_uid);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    format!("{user}@{host}")
}

/// The name of this process's uid, from /etc/passwd.
fn user_of_uid() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let id: u32 = f.nth(1)?.parse().ok()?;
            (id == uid).then(|| name.to_string())
        })
        .unwrap_or_else(|| format!("uid{uid}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_user_comes_from_the_uid_without_user_or_logname() {
        // This process's uid has a name in /etc/passwd on every machine the tests run on.
        let name = super::user_of_uid();
        assert!(!name.is_empty() && !name.starts_with("uid"), "{name}");
        assert_ne!(name, "unknown");
    }
}
