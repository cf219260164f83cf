//! The balancer-manager's XML, read with roxmltree, and its URLs.

use super::*;

/// A member's flags as the balancer-manager words them (`Init Drn Ok`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Status {
    pub(super) disabled: bool,
    pub(super) drain: bool,
    pub(super) stopped: bool,
    pub(super) standby: bool,
    pub(super) error: bool,
    /// `Ok`: Apache has found nothing wrong with the member (no failed request, no failed
    /// health check where mod_proxy_hcheck runs).
    pub(super) ok: bool,
}

#[derive(Debug, Clone)]
pub(super) struct Worker {
    pub(super) url: String,
    /// The URL as compared with slot addresses and `[[member]]` URLs ([`worker_url`]).
    pub(super) key: Option<url::Url>,
    pub(super) route: String,
    pub(super) status_text: String,
    pub(super) status: Status,
    /// Apache's busy count; after `Apache::count_in_flight`, the requests in flight.
    pub(super) busy: u64,
    pub(super) elected: u64,
    /// The load factor (`lbfactor`) in hundredths: Apache 2.4 shows `25.00` (older: `25`).
    pub(super) lf: u32,
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

/// Read a balancer-manager XML answer; how many balancers it holds. For the property tests
/// (tests/proptests.rs).
#[doc(hidden)]
pub fn parse_balancer_manager(text: &str) -> Result<usize> {
    parse_xml(text).map(|b| b.len())
}

/// The `httpd` namespace of the balancer-manager's XML.
const HTTPD: &str = "http://httpd.apache.org";

/// The `<httpd:NAME>` children of `n`.
fn children<'a, 'i>(
    n: roxmltree::Node<'a, 'i>,
    name: &'static str,
) -> impl Iterator<Item = roxmltree::Node<'a, 'i>> {
    n.children().filter(move |c| c.has_tag_name((HTTPD, name)))
}

/// The text of the first `<httpd:NAME>` child of `n`, entities resolved.
fn text_of(n: roxmltree::Node<'_, '_>, name: &'static str) -> String {
    children(n, name)
        .next()
        .map(|c| {
            c.descendants()
                .filter(|d| d.is_text())
                .filter_map(|d| d.text())
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn parse_xml(text: &str) -> Result<Vec<Balancer>> {
    let doc = roxmltree::Document::parse(text).ok();
    let Some(root) = doc
        .as_ref()
        .map(|d| d.root_element())
        .filter(|r| r.has_tag_name((HTTPD, "manager")))
    else {
        let start: String = text.chars().take(120).collect();
        bail!(
            "the balancer-manager did not answer XML (it answered: {:?}...). Apache ignores \
             the parameters when the Referer's host differs from manager_url's (AH10187 in its \
             error log), or manager_url is not a `SetHandler balancer-manager` location",
            start.trim()
        );
    };
    let count = |n, name| text_of(n, name).trim().parse().unwrap_or(0);
    let balancers = children(root, "balancers").flat_map(|b| children(b, "balancer"));
    Ok(balancers
        .map(|b| Balancer {
            name: balancer_name(&text_of(b, "name")).to_string(),
            nonce: text_of(b, "nonce"),
            workers: children(b, "workers")
                .flat_map(|ws| children(ws, "worker"))
                .map(|w| {
                    let url = text_of(w, "name");
                    let status_text = text_of(w, "status").trim().to_string();
                    Worker {
                        key: worker_url(&url),
                        url,
                        route: text_of(w, "route"),
                        status: Status::parse(&status_text),
                        status_text,
                        busy: count(w, "busy"),
                        elected: count(w, "elected"),
                        lf: text_of(w, "loadfactor")
                            .trim()
                            .parse::<f64>()
                            .map_or(100, |f| (f * 100.0).round() as u32),
                        leftover: 0,
                    }
                })
                .collect(),
        })
        .collect())
}

/// `MANAGER?b=BALANCER&xml=1`: one balancer.
pub(super) fn balancer_url(manager: &str, balancer: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("b", balancer)
        .append_pair("xml", "1")
        .finish();
    format!("{manager}?{query}")
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
                "Ok" => s.ok = true,
                _ => {}
            }
        }
        s
    }
    /// The member status as a check's verdict: `Ok` passes, `Err`/`HcFl` fails.
    pub(super) fn checks_up(&self) -> Option<bool> {
        (self.ok || self.error).then_some(self.ok && !self.error)
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
