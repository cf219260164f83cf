//! Parsers for HAProxy's `show` answers: `show stat` (CSV), `show servers state`,
//! `show map`, `show backend`. Each refuses text it does not recognise, quoting it.

use std::collections::HashMap;

use crate::model::{AdminState, SlotRoute};

use super::socket::quote;

/// One row of `show stat`: a frontend, a backend (`svname` = `BACKEND`) or a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub proxy: String,
    pub name: String,
    /// `UP`, `DOWN`, `MAINT`, `DRAIN`, `no check`, `UP 1/3`...
    pub status: String,
    /// `L4OK`, `L7OK`, `L4CON`, `L7STS`... (empty when there is no check).
    pub check_status: String,
    pub counts: Counts,
}

/// What HAProxy counts for a row, in the terms of a slot's route ([`crate::model::SlotRoute`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Current sessions (`scur`).
    pub sessions: Option<u64>,
    /// Requests for HTTP proxies (`req_tot`), sessions otherwise (`stot`).
    pub requests: Option<u64>,
    /// 5xx answers (`hrsp_5xx`, HTTP) or connection and response errors (`econ` + `eresp`, TCP).
    pub errors: Option<u64>,
    /// Average response time (ms) over the last 1024 requests (`rtime`).
    pub latency_ms: Option<u64>,
}

impl Counts {
    /// Read from a row's numeric columns, `n(column)`.
    fn read(n: impl Fn(&str) -> Option<u64>) -> Counts {
        Counts {
            sessions: n("scur"),
            requests: n("req_tot").or(n("stot")),
            errors: n("hrsp_5xx").or_else(|| match (n("econ"), n("eresp")) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            }),
            latency_ms: n("rtime"),
        }
    }
    /// A slot's route with these counts (and nothing else set).
    pub fn route(self) -> SlotRoute {
        SlotRoute {
            sessions: self.sessions,
            requests: self.requests,
            errors: self.errors,
            latency_ms: self.latency_ms,
            ..SlotRoute::default()
        }
    }
}

impl Stat {
    pub fn is_backend(&self) -> bool {
        self.name == "BACKEND"
    }
    /// The health check as HAProxy words it: `UP (L7OK)`, `DOWN (L4CON)`, `MAINT`.
    pub fn check_text(&self) -> String {
        if self.check_status.is_empty() {
            self.status.clone()
        } else {
            format!("{} ({})", self.status, self.check_status)
        }
    }
    /// Whether HAProxy's health checks pass for the server: `None` when it checks nothing.
    pub fn checks_up(&self) -> Option<bool> {
        (!self.check_status.is_empty())
            .then(|| self.status == "UP" && self.check_status.ends_with("OK"))
    }
    /// HAProxy's checks have confirmed the server (not a transitional `UP 1/3`).
    pub fn confirmed_up(&self) -> bool {
        self.status == "UP" || self.status == "no check"
    }
}

/// Split one CSV line as HAProxy writes it (fields with a comma or quote are quoted).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Parse `show stat`.
pub fn parse_stat(text: &str) -> Result<Vec<Stat>, String> {
    let mut lines = text.lines();
    let header = lines
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .ok_or_else(|| format!("`show stat` answered \"{}\"", quote(text)))?;
    let cols: HashMap<&str, usize> = header.split(',').enumerate().map(|(i, n)| (n, i)).collect();
    for need in ["pxname", "svname", "status", "scur"] {
        if !cols.contains_key(need) {
            return Err(format!(
                "`show stat` has no `{need}` column: \"{}\"",
                quote(text)
            ));
        }
    }
    let mut rows = Vec::new();
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let f = split_csv(line);
        let s = |n: &str| {
            cols.get(n)
                .and_then(|&i| f.get(i))
                .cloned()
                .unwrap_or_default()
        };
        rows.push(Stat {
            proxy: s("pxname"),
            name: s("svname"),
            status: s("status"),
            check_status: s("check_status").trim_start_matches('*').to_string(),
            counts: Counts::read(|name| s(name).parse::<u64>().ok()),
        });
    }
    Ok(rows)
}

// srv_admin_state bits (HAProxy's SRV_ADMF_*). CMAINT (0x04, "disabled" in haproxy.cfg) and
// HMAINT (0x40) only say where a state came from: a `disabled` server set ready keeps 0x04.
const ADMF_FMAINT: u32 = 0x01;
const ADMF_IMAINT: u32 = 0x02;
const ADMF_CMAINT: u32 = 0x04;
const ADMF_FDRAIN: u32 = 0x08;
const ADMF_IDRAIN: u32 = 0x10;
const ADMF_RMAINT: u32 = 0x20;
const ADMF_MAINT: u32 = ADMF_FMAINT | ADMF_IMAINT | ADMF_RMAINT;
const ADMF_DRAIN: u32 = ADMF_FDRAIN | ADMF_IDRAIN;

/// One row of `show servers state`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerState {
    pub backend: String,
    pub server: String,
    /// 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u32,
    /// SRV_ADMF_* bits.
    pub admin_state: u32,
    /// Seconds since the server's state last changed.
    pub since: u64,
    /// `(srv_uweight, srv_iweight)`: the weight now and the one haproxy.cfg gives it, when
    /// HAProxy reports them.
    pub weight: Option<(u32, u32)>,
}

impl ServerState {
    pub fn admin(&self) -> AdminState {
        admin_of(self.admin_state)
    }
    /// Takes new traffic now: not in maint or drain, and up by HAProxy's checks.
    pub fn serving(&self) -> bool {
        self.admin() == AdminState::Ready && matches!(self.op_state, 1 | 2)
    }
    /// `disabled` in haproxy.cfg (the bit stays after the server is set ready).
    pub fn config_disabled(&self) -> bool {
        self.admin_state & ADMF_CMAINT != 0
    }
    /// Down by HAProxy's health checks (not by an admin state).
    pub fn checked_down(&self) -> bool {
        self.op_state == 0 && self.admin() != AdminState::Maint
    }
}

pub fn admin_of(bits: u32) -> AdminState {
    if bits & ADMF_MAINT != 0 {
        AdminState::Maint
    } else if bits & ADMF_DRAIN != 0 {
        AdminState::Drain
    } else {
        AdminState::Ready
    }
}

/// The `set server ... state` word for an admin state.
pub fn state_word(a: AdminState) -> &'static str {
    match a {
        AdminState::Drain => "drain",
        AdminState::Maint | AdminState::Disabled => "maint",
        AdminState::Ready | AdminState::Unknown => "ready",
    }
}

/// Parse `show servers state` (format version 1).
pub fn parse_servers_state(text: &str) -> Result<Vec<ServerState>, String> {
    parse_state_text(text, ("`show servers state`", "answered"))
}

/// Parse a server-state file: the same text `show servers state` answers. The error says
/// what the file holds, not what the socket answered.
pub fn parse_servers_state_file(text: &str) -> Result<Vec<ServerState>, String> {
    parse_state_text(text, ("it", "holds"))
}

/// `(who, verb)` start the errors: ("`show servers state`", "answered"), ("it", "holds").
fn parse_state_text(text: &str, (who, verb): (&str, &str)) -> Result<Vec<ServerState>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("1") {
        return Err(format!(
            "{who} {verb} \"{}\" (expected format version 1)",
            quote(text)
        ));
    }
    let header = lines
        .next()
        .and_then(|l| l.strip_prefix("# "))
        .ok_or_else(|| format!("{who} has no header: \"{}\"", quote(text)))?;
    let cols: HashMap<&str, usize> = header
        .split_whitespace()
        .enumerate()
        .map(|(i, n)| (n, i))
        .collect();
    let col = |n: &str| {
        cols.get(n)
            .copied()
            .ok_or_else(|| format!("{who} has no `{n}` column: \"{}\"", quote(text)))
    };
    let (be, srv, op, adm) = (
        col("be_name")?,
        col("srv_name")?,
        col("srv_op_state")?,
        col("srv_admin_state")?,
    );
    let since = cols.get("srv_time_since_last_change").copied();
    let weights = cols
        .get("srv_uweight")
        .copied()
        .zip(cols.get("srv_iweight").copied());
    let mut rows = Vec::new();
    for line in lines {
        if line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| f.get(i).copied().unwrap_or("");
        rows.push(ServerState {
            backend: get(be).to_string(),
            server: get(srv).to_string(),
            op_state: get(op).parse().unwrap_or(0),
            admin_state: get(adm).parse().unwrap_or(0),
            since: since.and_then(|i| get(i).parse().ok()).unwrap_or(u64::MAX),
            weight: weights.and_then(|(u, i)| get(u).parse().ok().zip(get(i).parse().ok())),
        });
    }
    Ok(rows)
}

/// Parse `show map <map>`: lines of `0xADDR key value`.
pub fn parse_map(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, ' ');
        let (addr, key) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        if !addr.starts_with("0x") || key.is_empty() {
            return Err(format!("`show map` answered \"{}\"", quote(text)));
        }
        out.push((
            key.to_string(),
            parts.next().unwrap_or("").trim().to_string(),
        ));
    }
    Ok(out)
}

/// Parse `show backend`: `# name` then one backend per line.
pub fn parse_backends(text: &str) -> Result<Vec<String>, String> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    if lines.next() != Some("# name") {
        return Err(format!("`show backend` answered \"{}\"", quote(text)));
    }
    Ok(lines.map(str::to_string).collect())
}

/// The value of a key in map entries (the first, as HAProxy's lookup does).
pub fn map_get<'a>(entries: &'a [(String, String)], key: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    // Captured from HAProxy 2.6.12 (columns cut to the first 45 and the tail).
    const STAT: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,check_desc\n\
public,FRONTEND,,,0,0,9982,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,\n\
be_blue,blue,0,0,1,1,,7,0,0,,0,,0,0,0,0,DRAIN,1,1,0,1,1,3,2,,1,4,1,,0,,2,0,,0,L4OK,,0,0,7,0,0,0,0,,,,,\"Layer7 wrong status, code: 503\"\n\
be_blue,BACKEND,0,0,1,1,1,7,0,0,0,0,,2,1,0,0,DOWN,0,0,0,,1,2,2,,1,4,0,,0,,1,0,,0,,,,0,0,0,0,3,0,,,,9,\n";

    #[test]
    fn show_stat_rows_are_read_by_column_name() {
        let rows = parse_stat(STAT).expect("parses");
        assert_eq!(rows.len(), 3);
        let s = &rows[1];
        assert_eq!((s.proxy.as_str(), s.name.as_str()), ("be_blue", "blue"));
        assert_eq!(s.status, "DRAIN");
        assert_eq!(s.counts.sessions, Some(1));
        assert_eq!(s.check_text(), "DRAIN (L4OK)");
        let b = &rows[2];
        assert!(b.is_backend());
        assert_eq!(b.counts.requests, Some(9));
        assert_eq!(b.counts.errors, Some(3));
        assert!(parse_stat("Permission denied\n").is_err());
    }

    #[test]
    fn quoted_csv_fields_keep_their_commas() {
        assert_eq!(split_csv("a,\"b, c\",d"), vec!["a", "b, c", "d"]);
        assert_eq!(split_csv("a,,\"x\"\"y\""), vec!["a", "", "x\"y"]);
    }

    #[test]
    fn server_state_bits_become_admin_states() {
        let text = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight\n\
4 be_blue 1 blue 127.0.0.1 2 8 1\n4 be_blue 2 b2 127.0.0.1 0 1 1\n4 be_blue 3 b3 127.0.0.1 0 5 1\n4 be_blue 4 b4 127.0.0.1 2 4 1\n4 be_blue 5 b5 127.0.0.1 0 0 1\n";
        let rows = parse_servers_state(text).expect("parses");
        let admin: Vec<_> = rows.iter().map(|r| r.admin()).collect();
        assert_eq!(
            admin,
            [
                AdminState::Drain,
                AdminState::Maint,
                AdminState::Maint,
                AdminState::Ready,
                AdminState::Ready
            ]
        );
        assert!(rows[3].serving());
        assert!(!rows[0].serving());
        assert!(rows[4].checked_down());
        assert!(!rows[1].checked_down());
        assert!(parse_servers_state("No such backend.\n").is_err());
    }

    #[test]
    fn map_and_backend_lists_parse() {
        let m = parse_map("0x55d live be_blue\n0x55e preview be_green\n\n").expect("parses");
        assert_eq!(map_get(&m, "live"), Some("be_blue"));
        assert_eq!(map_get(&m, "preview"), Some("be_green"));
        assert_eq!(map_get(&m, "nope"), None);
        assert!(parse_map("Unknown map identifier. Please use #<id> or <file>.\n").is_err());
        assert_eq!(
            parse_backends("# name\nbe_blue\nbe_green\n\n").expect("parses"),
            ["be_blue", "be_green"]
        );
    }
}
