//! Several environments on one listener: each request goes to the environment whose `hosts`
//! name its `Host` (and whose `path_prefix`, if set, starts its path); an environment without
//! `hosts` takes every host no other one names. A request no environment takes gets a 404 page
//! that says so.

use std::sync::Arc;

use hyper::header::{self, HeaderMap};
use hyper::{StatusCode, Uri};

use super::forward::{ProxyBody, local};
use super::state::Shared;

/// One environment's part of a listener.
pub(crate) struct Route {
    /// Lower-case host names without a port; empty: any host.
    pub hosts: Vec<String>,
    /// A path prefix such as `/blog`; `None`: any path.
    pub prefix: Option<String>,
    pub shared: Arc<Shared>,
}

/// The environments one listener serves.
pub(crate) struct Routes(pub Vec<Route>);

/// The host a request names, lower-case and without its port: its `Host` header, else the
/// authority of its target (HTTP/2's `:authority`).
fn host_of<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Option<String> {
    let raw = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))?;
    let raw = raw.trim();
    // `[v6]:port` keeps its brackets; `name:port` loses its port.
    let name = match raw.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

/// Whether `path` is under `prefix` (`/blog` takes `/blog`, `/blog/` and `/blog/x`, not
/// `/blogs`).
fn under(path: &str, prefix: &str) -> bool {
    let p = prefix.trim_end_matches('/');
    p.is_empty()
        || path == p
        || path
            .strip_prefix(p)
            .is_some_and(|rest| rest.starts_with('/'))
}

impl Routes {
    /// The environment that serves this request, if any: among those whose hosts name it,
    /// else among those without hosts, the one with the longest matching path prefix.
    pub fn pick(&self, uri: &Uri, headers: &HeaderMap) -> Option<&Arc<Shared>> {
        if let [only] = &self.0[..]
            && only.hosts.is_empty()
            && only.prefix.is_none()
        {
            return Some(&only.shared);
        }
        let host = host_of(uri, headers);
        let path = uri.path();
        let best = |named: bool| {
            self.0
                .iter()
                .filter(|r| {
                    if named {
                        host.as_ref().is_some_and(|h| r.hosts.contains(h))
                    } else {
                        r.hosts.is_empty()
                    }
                })
                .filter(|r| r.prefix.as_deref().is_none_or(|p| under(path, p)))
                .max_by_key(|r| r.prefix.as_deref().map_or(0, str::len))
        };
        best(true).or_else(|| best(false)).map(|r| &r.shared)
    }

    /// The 404 page for a request no environment takes.
    pub fn not_found(&self, uri: &Uri, headers: &HeaderMap) -> hyper::Response<ProxyBody> {
        let host = host_of(uri, headers).unwrap_or_else(|| "(none)".into());
        // The host is the client's own text: only safe characters go back into the page.
        let shown: String = host
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(*c))
            .take(253)
            .collect();
        local(
            StatusCode::NOT_FOUND,
            "text/html; charset=utf-8",
            format!(
                "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
                 <title>Unknown site</title></head>\n<body style=\"font-family:sans-serif;\
                 max-width:36em;margin:4em auto\"><h1>Unknown site</h1>\n<p>No site is served \
                 for <code>{shown}</code> at this address. Check the address you typed.</p>\
                 </body></html>\n"
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn hosts_lose_their_port_and_case_and_prefixes_match_whole_segments() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("Shop.Example:8443"));
        let uri: Uri = "/x".parse().expect("uri");
        assert_eq!(host_of(&uri, &h).as_deref(), Some("shop.example"));
        h.insert("host", HeaderValue::from_static("[::1]:80"));
        assert_eq!(host_of(&uri, &h).as_deref(), Some("[::1]"));
        let h2: Uri = "https://blog.example/a".parse().expect("uri");
        assert_eq!(
            host_of(&h2, &HeaderMap::new()).as_deref(),
            Some("blog.example")
        );
        assert!(under("/blog", "/blog"));
        assert!(under("/blog/post", "/blog/"));
        assert!(!under("/blogs", "/blog"));
        assert!(under("/anything", "/"));
    }
}
