//! `[[notify]]` entries, and the credentials a config points at (for redaction).

use super::*;

/// One `[[notify]]` entry, checked.
pub(super) fn notify_from(
    src: &str,
    rn: Spanned<RawNotify>,
    at: &Locate<'_>,
) -> Result<crate::notify::NotifyConfig, ConfigError> {
    use crate::notify::{EventKind, MAX_RETRIES, NotifyConfig, Severity};
    let span = rn.span();
    let rn = rn.into_inner();
    let key = |k: &str| find_value_in(src, rn.url.span().start, k).unwrap_or(span.clone());
    check_url(rn.url.get_ref()).map_err(|m| at(rn.url.span(), Some("url"), m))?;
    let events = match &rn.events {
        None => None,
        Some(list) => {
            if rn.min_severity.is_some() {
                return Err(at(
                    key("min_severity"),
                    Some("min_severity"),
                    "give `events` or `min_severity`, not both: `events` lists exactly what this                      webhook gets"
                        .into(),
                ));
            }
            if list.get_ref().is_empty() {
                return Err(at(
                    list.span(),
                    Some("events"),
                    "is empty, so this webhook would get nothing; list events or remove the entry"
                        .into(),
                ));
            }
            let names: Vec<&str> = EventKind::ALL.iter().map(|k| k.name()).collect();
            let mut kinds = Vec::new();
            for e in list.get_ref() {
                let Some(k) = EventKind::from_name(e.get_ref()) else {
                    let hint = closest(e.get_ref(), &names)
                        .map(|c| format!("did you mean `{c}`? "))
                        .unwrap_or_default();
                    return Err(at(
                        e.span(),
                        Some("events"),
                        format!(
                            "unknown event `{}`; {hint}the events are: {}",
                            e.get_ref(),
                            names.join(", ")
                        ),
                    ));
                };
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            Some(kinds)
        }
    };
    if rn.retries > MAX_RETRIES {
        return Err(at(
            key("retries"),
            Some("retries"),
            format!(
                "must be at most {MAX_RETRIES} (attempts after the first); it is {}",
                rn.retries
            ),
        ));
    }
    if rn.timeout.is_zero() {
        return Err(at(
            key("timeout"),
            Some("timeout"),
            "must be more than zero: it is how long one delivery attempt may take".into(),
        ));
    }
    Ok(NotifyConfig {
        url: rn.url.into_inner(),
        format: rn.format,
        events,
        min_severity: rn.min_severity.unwrap_or(Severity::Info),
        token_env: rn.token_env,
        retries: rn.retries,
        timeout: rn.timeout,
    })
}

/// Tell [`crate::redact`] the credentials a router's config points at, so their values are
/// hidden wherever they appear: `token_env`, `password_env`, the first line of `password_file`,
/// and exec's `env` values and `pass_env` variables whose names look secret (`*_TOKEN`,
/// `*PASSWORD`...).
pub(super) fn register_secrets(r: &RouterConfig) {
    use crate::redact::{register_env, register_secret};
    let secret_name = |k: &str| {
        let k = k.to_ascii_lowercase();
        [
            "token",
            "password",
            "passwd",
            "secret",
            "apikey",
            "api_key",
            "credential",
        ]
        .iter()
        .any(|w| k.contains(w))
    };
    match r {
        RouterConfig::Embedded(c) => c.token_env.iter().for_each(|v| register_env(v)),
        RouterConfig::Apache(c) => {
            c.password_env.iter().for_each(|v| register_env(v));
            if let Some(f) = &c.password_file
                && let Ok(text) = std::fs::read_to_string(f)
            {
                register_secret(text.lines().next().unwrap_or_default());
            }
        }
        RouterConfig::Exec(c) => {
            for (k, v) in &c.env {
                if secret_name(k) {
                    register_secret(v);
                }
            }
            for k in c.pass_env.iter().filter(|k| secret_name(k)) {
                register_env(k);
            }
        }
        RouterConfig::Haproxy(_) | RouterConfig::Nginx(_) | RouterConfig::Caddy(_) => {}
    }
}
