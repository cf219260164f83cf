//! The hook keys of an environment (warm-up, smoke test, after-hooks), checked.

use super::*;
use crate::hooks::CheckPath;

/// The hook keys of one `[[environment]]`, taken out of it.
pub(super) struct RawHooks {
    warmup_paths: Vec<Spanned<RawPath<WarmupPath>>>,
    warmup_command: Option<Spanned<Vec<String>>>,
    warmup_timeout: Duration,
    smoke: Option<Spanned<Vec<String>>>,
    smoke_paths: Vec<Spanned<RawPath<SmokePath>>>,
    smoke_timeout: Duration,
    on_done: Option<Spanned<Vec<String>>>,
    on_rollback: Option<Spanned<Vec<String>>>,
    on_failed: Option<Spanned<Vec<String>>>,
    hook_timeout: Duration,
    hook_pass_env: Vec<Spanned<String>>,
}

pub(super) fn re_hooks(re: &mut RawEnvironment) -> RawHooks {
    RawHooks {
        warmup_paths: std::mem::take(&mut re.warmup_paths),
        warmup_command: re.warmup_command.take(),
        warmup_timeout: re.warmup_timeout,
        smoke: re.smoke.take(),
        smoke_paths: std::mem::take(&mut re.smoke_paths),
        smoke_timeout: re.smoke_timeout,
        on_done: re.on_done.take(),
        on_rollback: re.on_rollback.take(),
        on_failed: re.on_failed.take(),
        hook_timeout: re.hook_timeout,
        hook_pass_env: std::mem::take(&mut re.hook_pass_env),
    }
}

/// The entries of `key` (`warmup_paths`, `smoke_paths`), each checked; an error
/// points at its own entry.
fn checked_paths<P: CheckPath>(
    raw: &mut Vec<Spanned<P>>,
    key: &str,
    at: &Locate<'_>,
) -> Result<Vec<P::Path>, ConfigError> {
    std::mem::take(raw)
        .into_iter()
        .map(|p| {
            let span = p.span();
            p.into_inner().check().map_err(|m| at(span, Some(key), m))
        })
        .collect()
}

/// Check the hook keys; every error names its key and where it is.
pub(super) fn parse_hooks(
    raw: &mut RawHooks,
    src: &str,
    at: &Locate<'_>,
) -> Result<crate::hooks::Hooks, ConfigError> {
    use crate::hooks::{AFTER_VARS, Hooks, SMOKE_VARS, WARMUP_VARS, validate_command};
    let mut h = Hooks::default();
    h.warmup.paths = checked_paths(&mut raw.warmup_paths, "warmup_paths", at)?;
    h.warmup.timeout = raw.warmup_timeout;
    h.smoke.paths = checked_paths(&mut raw.smoke_paths, "smoke_paths", at)?;
    h.smoke.timeout = raw.smoke_timeout;
    h.after.timeout = raw.hook_timeout;
    for (key, cmd, vars, into) in [
        (
            "warmup_command",
            raw.warmup_command.take(),
            WARMUP_VARS,
            &mut h.warmup.command,
        ),
        ("smoke", raw.smoke.take(), SMOKE_VARS, &mut h.smoke.command),
        (
            "on_done",
            raw.on_done.take(),
            AFTER_VARS,
            &mut h.after.on_done,
        ),
        (
            "on_rollback",
            raw.on_rollback.take(),
            AFTER_VARS,
            &mut h.after.on_rollback,
        ),
        (
            "on_failed",
            raw.on_failed.take(),
            AFTER_VARS,
            &mut h.after.on_failed,
        ),
    ] {
        let Some(c) = cmd else { continue };
        validate_command(c.get_ref(), vars).map_err(|m| at(c.span(), Some(key), m))?;
        *into = c.into_inner();
    }
    for (key, d) in [
        ("warmup_timeout", raw.warmup_timeout),
        ("smoke_timeout", raw.smoke_timeout),
        ("hook_timeout", raw.hook_timeout),
    ] {
        if d.is_zero() {
            return Err(at(
                find_key(src, key).unwrap_or(0..0),
                Some(key),
                "must be more than zero".into(),
            ));
        }
    }
    for k in std::mem::take(&mut raw.hook_pass_env) {
        let name = k.get_ref();
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(at(
                k.span(),
                Some("hook_pass_env"),
                format!("`{name}` is not a variable name (empty, or contains `=` or NUL)"),
            ));
        }
        h.pass_env.push(k.into_inner());
    }
    Ok(h)
}
