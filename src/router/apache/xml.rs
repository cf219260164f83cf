//! The balancer-manager's XML and form encoding.

use super::*;

/// A member's flags as the balancer-manager words them (`Init Drn Ok`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Status {
    pub(super) disabled: bool,
    pub(super) drain: bool,
    pub(super) stopped: bool,
    pub(super) standby: bool,
    pub(super) error: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Worker {
    pub(super) url: String,
    pub(super) route: String,
    pub(super) status_text: String,
    pub(super) status: Status,
    /// Apache's busy count; after `Apache::count_in_flight`, the requests in flight.
    pub(super) busy: u64,
    pub(super) elected: u64,
    /// What Apache's busy count holds beyond the requests in flight (see `idle_after`).
    pub(super) leftover: u64,
}

#[derive(Debug, Clone)]
pub(super) struct Balancer {
    /// Without the `balancer://` prefix.
    pub(super) name: String,
    pub(super) nonce: String,
    pub(super) workers: Vec<Worker>,
}

pub(super) fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The text of the first `<httpd:TAG>` in `s`.
pub(super) fn tag(s: &str, name: &str) -> Option<String> {
    let open = format!("<httpd:{name}>");
    let close = format!("</httpd:{name}>");
    let start = s.find(&open)? + open.len();
    let end = s[start..].find(&close)? + start;
    Some(unescape(&s[start..end]))
}

/// Every `<httpd:TAG>...</httpd:TAG>` block of `s`.
pub(super) fn blocks<'a>(s: &'a str, name: &str) -> Vec<&'a str> {
    let open = format!("<httpd:{name}>");
    let close = format!("</httpd:{name}>");
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(&open) {
        let body = &rest[i + open.len()..];
        let Some(j) = body.find(&close) else { break };
        out.push(&body[..j]);
        rest = &body[j + close.len()..];
    }
    out
}

/// Read a balancer-manager XML answer; how many balancers it holds. For the property tests
/// (tests/proptests.rs).
#[doc(hidden)]
pub fn parse_balancer_manager(text: &str) -> Result<usize> {
    parse_xml(text).map(|b| b.len())
}

pub(super) fn parse_xml(text: &str) -> Result<Vec<Balancer>> {
    if !text.contains("<httpd:manager") {
        let start: String = text.chars().take(120).collect();
        bail!(
            "the balancer-manager did not answer XML (it answered: {:?}...). Apache ignores \
             the parameters when the Referer's host differs from manager_url's (AH10187 in its \
             error log), or manager_url is not a `SetHandler balancer-manager` location",
            start.trim()
        );
    }
    let mut out = Vec::new();
    for b in blocks(text, "balancer") {
        let head = b.split("<httpd:workers>").next().unwrap_or(b);
        let name = tag(head, "name").unwrap_or_default();
        let workers = blocks(b, "worker")
            .into_iter()
            .map(|w| {
                let status_text = tag(w, "status").unwrap_or_default().trim().to_string();
                Worker {
                    url: tag(w, "name").unwrap_or_default(),
                    route: tag(w, "route").unwrap_or_default(),
                    status: Status::parse(&status_text),
                    status_text,
                    busy: tag(w, "busy")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0),
                    elected: tag(w, "elected")
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0),
                    leftover: 0,
                }
            })
            .collect();
        out.push(Balancer {
            name: balancer_name(&name).to_string(),
            nonce: tag(head, "nonce").unwrap_or_default(),
            workers,
        });
    }
    Ok(out)
}

/// `application/x-www-form-urlencoded` / query encoding of one value.
pub(super) fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(super) fn norm_url(u: &str) -> String {
    u.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl Status {
    pub(super) fn parse(text: &str) -> Status {
        let mut s = Status::default();
        for w in text.split_whitespace() {
            match w {
                "Dis" => s.disabled = true,
                "Drn" => s.drain = true,
                "Stop" => s.stopped = true,
                "Stby" => s.standby = true,
                "Err" | "HcFl" => s.error = true,
                _ => {}
            }
        }
        s
    }
    pub(super) fn has(&self, f: MemberFlag) -> bool {
        match f {
            MemberFlag::Disabled => self.disabled,
            MemberFlag::Drain => self.drain,
            MemberFlag::Stopped => self.stopped,
            MemberFlag::HotStandby => self.standby,
        }
    }
    /// Part of the rotation (serving or draining): the member's slot is the one this
    /// balancer sends to.
    pub(super) fn in_rotation(&self) -> bool {
        !self.disabled && !self.stopped && !self.standby
    }
    /// Takes new requests.
    pub(super) fn serving(&self) -> bool {
        self.in_rotation() && !self.drain
    }
    pub(super) fn admin(&self) -> AdminState {
        if self.stopped {
            AdminState::Maint
        } else if self.drain {
            AdminState::Drain
        } else if self.disabled {
            AdminState::Disabled
        } else {
            AdminState::Ready
        }
    }
}

impl Balancer {
    pub(super) fn worker(&self, url: &str) -> Option<&Worker> {
        self.workers.iter().find(|w| w.url == url)
    }
}
