//! `[[environment.canary_query]]`: Prometheus queries the canary's analysis judges, checked.

use super::*;
use crate::model::{CanaryQuery, Pass};

fn default_query_timeout() -> Duration {
    Duration::from_secs(5)
}

/// One `[[environment.canary_query]]` table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQuery {
    name: Option<String>,
    url: Spanned<String>,
    query: Spanned<String>,
    pass: Spanned<String>,
    #[serde(default = "default_query_timeout", with = "serde_duration")]
    timeout: Duration,
}

/// The queries, each with a Prometheus URL (http or https, with a host), a query and a `pass`
/// comparison; an error names the field at fault.
pub(super) fn parse_queries(
    src: &str,
    raw: Vec<RawQuery>,
    at: &impl Fn(Range<usize>, Option<&str>, String) -> ConfigError,
) -> Result<Vec<CanaryQuery>, ConfigError> {
    raw.into_iter()
        .map(|r| {
            let url = url::Url::parse(r.url.get_ref().trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
                .ok_or_else(|| {
                    at(
                        r.url.span(),
                        Some("url"),
                        format!(
                            "`{}` is not a Prometheus URL (http://host:9090)",
                            r.url.get_ref()
                        ),
                    )
                })?;
            let query = r.query.get_ref().trim().to_string();
            if query.is_empty() {
                return Err(at(r.query.span(), Some("query"), "is empty".into()));
            }
            let pass: Pass = r
                .pass
                .get_ref()
                .parse()
                .map_err(|m| at(r.pass.span(), Some("pass"), m))?;
            if r.timeout.is_zero() {
                return Err(at(
                    find_value_in(src, r.url.span().start, "timeout").unwrap_or(r.url.span()),
                    Some("timeout"),
                    "must be more than zero".into(),
                ));
            }
            Ok(CanaryQuery {
                name: r.name.unwrap_or_else(|| query.clone()),
                url,
                query,
                pass,
                timeout: r.timeout,
            })
        })
        .collect()
}
