//! XDG paths for config, state and logs.

use std::path::{Path, PathBuf};

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
    let uid = rustix::process::getuid().as_raw();
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

/// Whether `s` may name an environment, slot, node or router. These names become parts of
/// file names (the embedded proxy's `proxy-<env>.json`, lock files) and of proxy configs, so
/// they are kept to a safe set: 1 to 64 ASCII letters, digits, `-`, `_` and `.`, starting
/// with a letter or a digit, and without `..`.
pub fn is_safe_name(s: &str) -> bool {
    s.len() <= 64
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.contains("..")
}

/// What [`is_safe_name`] accepts, for messages.
pub const SAFE_NAME_RULE: &str = "1 to 64 ASCII letters, digits, `-`, `_` or `.`, starting with a \
                                  letter or a digit, without `..`";

/// `Ok` when `name`, of a `what` (environment, slot, node, router), is a safe name; the
/// refusal gives the rule, after `used_in`: why the name matters ("it is used in file names,
/// so ").
pub fn check_name(what: &str, name: &str, used_in: &str) -> Result<(), String> {
    if is_safe_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{what} name `{name}` is not allowed: {used_in}it must be {SAFE_NAME_RULE}"
        ))
    }
}

/// `dir/name` when `name` is one plain file name (no separator, not `.` or `..`), so the path
/// stays inside `dir`; `None` otherwise.
pub fn file_in(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut c = Path::new(name).components();
    match (c.next(), c.next()) {
        (Some(std::path::Component::Normal(n)), None) if n == name => Some(dir.join(n)),
        _ => None,
    }
}

/// `s` with every character [`is_safe_name`] does not allow replaced by `_`, and a leading
/// `.` too: a file name that stays in its directory whatever `s` is.
pub fn safe_file_name(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.contains("..") {
        out = out.replace("..", "_.");
    }
    if out.starts_with('.') || out.is_empty() {
        out.insert(0, '_');
    }
    out
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

    use super::*;

    #[test]
    fn names_from_the_config_stay_in_their_directory() {
        for good in ["shop", "shop-prod", "eu_west.1", "v2"] {
            assert!(is_safe_name(good), "{good}");
        }
        for bad in [
            "",
            "../../evil",
            "..",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "a..b",
            "é",
        ] {
            assert!(!is_safe_name(bad), "{bad}");
        }
        assert!(!is_safe_name(&"a".repeat(65)));
        let dir = Path::new("/state");
        assert_eq!(
            file_in(dir, "proxy-shop.json"),
            Some(dir.join("proxy-shop.json"))
        );
        for bad in ["../x", "..", ".", "a/b", "/etc/passwd", ""] {
            assert_eq!(file_in(dir, bad), None, "{bad}");
        }
        for s in ["../../evil", "..", "a/../../b", ".x", "", "a\0b"] {
            let f = safe_file_name(s);
            assert_eq!(file_in(dir, &f), Some(dir.join(&f)), "{s} -> {f}");
            assert!(!f.starts_with('.'), "{s} -> {f}");
        }
    }
}
