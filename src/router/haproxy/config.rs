//! The `[[environment.router]]` table of `kind = "haproxy"`, and its checks against the
//! environment's slots.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::map::MapSetup;
use super::socket::Endpoint;
use crate::model::Slot;
use crate::timefmt::serde_duration;

/// How the slots are laid out in haproxy.cfg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One backend per slot, chosen through a map.
    Map,
    /// One server per slot in a single backend.
    Servers,
}

crate::router::router_table! {
    pub struct Config {
        /// The admin socket: a Unix path (`/run/haproxy/admin.sock`) or `HOST:PORT`
        /// (`stats socket ipv4@127.0.0.1:9999 level admin`).
        pub socket: String,
        /// Timeout of one socket command.
        #[serde(default = "crate::router::secs::<2>", with = "serde_duration")]
        pub timeout: Duration,
        pub mode: Mode,
        /// How long a server that was just enabled may take to pass HAProxy's health check
        /// before the old one is disabled (otherwise the change is undone and refused).
        #[serde(default = "crate::router::secs::<10>", with = "serde_duration")]
        pub ready_timeout: Duration,
        /// The file of haproxy.cfg's `server-state-file`: rewritten from `show servers state`
        /// after each server change, so a reload keeps drain/maint states.
        pub server_state_file: Option<PathBuf>,

        // mode = "map"
        /// The map as HAProxy names it: the file path used in the map() converter (or `#ID`).
        pub map: Option<String>,
        /// The map file on disk to keep in sync (usually the same path as `map`).
        pub map_file: Option<PathBuf>,
        /// The map key the public frontend looks up (default `live`).
        pub live_key: Option<String>,
        /// The map key the preview frontend looks up (no preview when absent).
        pub preview_key: Option<String>,
        /// The map key that holds the live backend while maintenance is on
        /// (default `<live_key>.resume`).
        pub resume_key: Option<String>,
        /// The map key naming the canary's backend; its weight (0-100) is under
        /// `<canary_key>.weight`. Canary weights are off when absent (docs/haproxy.md, "Canary").
        pub canary_key: Option<String>,
        /// Slot name -> backend name.
        pub backends: Option<BTreeMap<String, String>>,
        /// The backend that serves the maintenance page.
        pub maintenance_backend: Option<String>,
        /// Slot -> node -> server name, where a node's server is not named like the node.
        pub node_servers: Option<BTreeMap<String, BTreeMap<String, String>>>,

        // mode = "servers"
        /// The backend whose servers are the slots.
        pub backend: Option<String>,
        /// Slot name -> server name in `backend`.
        pub servers: Option<BTreeMap<String, String>>,
    }
}

fn one_word(field: &str, v: &str) -> std::result::Result<(), String> {
    if v.is_empty() || v.contains(char::is_whitespace) {
        Err(format!(
            "`{field}`: `{v}` must be one word (HAProxy names have no spaces)"
        ))
    } else {
        Ok(())
    }
}

fn distinct_values(field: &str, m: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (k, v) in m {
        one_word(field, v)?;
        if let Some(other) = seen.insert(v, k) {
            return Err(format!(
                "`{field}`: slots `{other}` and `{k}` both name `{v}`; each slot needs its own"
            ));
        }
    }
    Ok(())
}

impl Config {
    pub fn validate(&self, slots: &[Slot]) -> std::result::Result<(), String> {
        let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
        let known = |field: &str, slot: &str| {
            if names.contains(&slot) {
                Ok(())
            } else {
                Err(format!(
                    "`{field}`: `{slot}` is not a slot of this environment (slots: {})",
                    names.join(", ")
                ))
            }
        };
        Endpoint::parse(&self.socket).map_err(|e| format!("`socket`: {e}"))?;
        if self.timeout.is_zero() || self.ready_timeout.is_zero() {
            return Err("`timeout` and `ready_timeout` must be more than zero".into());
        }
        // A field of the other mode is refused, not ignored.
        let theirs = match self.mode {
            Mode::Map => vec![
                ("backend", self.backend.is_some()),
                ("servers", self.servers.is_some()),
            ],
            Mode::Servers => vec![
                ("map", self.map.is_some()),
                ("map_file", self.map_file.is_some()),
                ("live_key", self.live_key.is_some()),
                ("preview_key", self.preview_key.is_some()),
                ("resume_key", self.resume_key.is_some()),
                ("canary_key", self.canary_key.is_some()),
                ("backends", self.backends.is_some()),
                ("maintenance_backend", self.maintenance_backend.is_some()),
                ("node_servers", self.node_servers.is_some()),
            ],
        };
        if let Some((f, _)) = theirs.iter().find(|(_, set)| *set) {
            let (this, other) = match self.mode {
                Mode::Map => ("map", "servers"),
                Mode::Servers => ("servers", "map"),
            };
            return Err(format!(
                "`{f}` belongs to mode = \"{other}\"; this router has mode = \"{this}\""
            ));
        }
        match self.mode {
            Mode::Map => {
                let map = self.map.as_deref().ok_or(
                    "`map` is missing: mode = \"map\" needs the map's file path as haproxy.cfg's \
                     map() converter names it",
                )?;
                one_word("map", map)?;
                let backends = match &self.backends {
                    Some(b) if !b.is_empty() => b,
                    _ => {
                        return Err("`backends` is missing: mode = \"map\" needs each slot's \
                                    backend, like backends = { blue = \"be_blue\", green = \
                                    \"be_green\" }"
                            .into());
                    }
                };
                for slot in backends.keys() {
                    known("backends", slot)?;
                }
                distinct_values("backends", backends)?;
                if let Some(mb) = &self.maintenance_backend {
                    one_word("maintenance_backend", mb)?;
                    if let Some((slot, _)) = backends.iter().find(|(_, b)| *b == mb) {
                        return Err(format!(
                            "`maintenance_backend`: `{mb}` is slot `{slot}`'s backend; the \
                             maintenance page needs a backend of its own"
                        ));
                    }
                }
                let setup = MapSetup::from(self);
                let mut keys = vec![
                    ("live_key", &setup.live_key),
                    ("resume_key", &setup.resume_key),
                ];
                if let Some(p) = &setup.preview_key {
                    keys.push(("preview_key", p));
                }
                if let (Some(c), Some(w)) = (&setup.canary_key, &setup.canary_weight_key) {
                    keys.push(("canary_key", c));
                    keys.push(("canary_key (its `.weight` key)", w));
                }
                for (i, (f, k)) in keys.iter().enumerate() {
                    one_word(f, k)?;
                    if let Some((g, _)) = keys[..i].iter().find(|(_, o)| o == k) {
                        return Err(format!(
                            "`{f}` and `{g}` are both `{k}`; each needs its own"
                        ));
                    }
                }
                for (slot, nodes) in self.node_servers.iter().flatten() {
                    known("node_servers", slot)?;
                    if !backends.contains_key(slot) {
                        return Err(format!(
                            "`node_servers`: slot `{slot}` has no entry in `backends`"
                        ));
                    }
                    let declared: Vec<&str> = slots
                        .iter()
                        .find(|s| &s.name == slot)
                        .map(|s| s.nodes.iter().map(|n| n.name.as_str()).collect())
                        .unwrap_or_default();
                    for (node, server) in nodes {
                        if !declared.contains(&node.as_str()) {
                            return Err(format!(
                                "`node_servers`: slot `{slot}` has no node `{node}` (its nodes: \
                                 {})",
                                if declared.is_empty() {
                                    "none".to_string()
                                } else {
                                    declared.join(", ")
                                }
                            ));
                        }
                        one_word("node_servers", server)?;
                    }
                }
            }
            Mode::Servers => {
                let backend = self.backend.as_deref().ok_or(
                    "`backend` is missing: mode = \"servers\" needs the backend whose servers are \
                     the slots",
                )?;
                one_word("backend", backend)?;
                let servers = match &self.servers {
                    Some(s) if !s.is_empty() => s,
                    _ => {
                        return Err(
                            "`servers` is missing: mode = \"servers\" needs each slot's \
                                    server, like servers = { blue = \"blue\", green = \"green\" }"
                                .into(),
                        );
                    }
                };
                for slot in servers.keys() {
                    known("servers", slot)?;
                    if let Some(s) = slots.iter().find(|s| &s.name == slot)
                        && !s.nodes.is_empty()
                    {
                        return Err(format!(
                            "`servers`: slot `{slot}` has nodes, but in mode = \"servers\" each \
                             slot is one server; use mode = \"map\" (a backend per slot) for \
                             slots with several nodes"
                        ));
                    }
                }
                distinct_values("servers", servers)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
pub(super) mod tests {
    use super::*;
    use crate::model::{Address, Node};

    fn slot(name: &str, nodes: &[&str]) -> Slot {
        let at = |a: &str| Address::parse(a).expect("valid");
        Slot {
            nodes: nodes
                .iter()
                .map(|n| Node {
                    name: n.to_string(),
                    address: at("http://127.0.0.1:9009"),
                })
                .collect(),
            ..Slot::new(name, at("http://127.0.0.1:9001"))
        }
    }

    fn slots() -> Vec<Slot> {
        vec![slot("blue", &[]), slot("green", &["g1", "g2"])]
    }

    pub(in crate::router::haproxy) fn cfg(toml_text: &str) -> Config {
        match toml::from_str::<Config>(toml_text) {
            Ok(c) => c,
            Err(e) => panic!("{e}\n{toml_text}"),
        }
    }

    pub(in crate::router::haproxy) const MAP: &str = r#"
socket = "127.0.0.1:9999"
mode = "map"
map = "/etc/haproxy/slots.map"
backends = { blue = "be_blue", green = "be_green" }
"#;

    const SERVERS: &str = r#"
socket = "/run/haproxy/admin.sock"
mode = "servers"
backend = "be_app"
servers = { blue = "srv_blue" }
"#;

    fn err(text: &str, slots: &[Slot]) -> String {
        match cfg(text).validate(slots) {
            Ok(()) => panic!("accepted:\n{text}"),
            Err(e) => e,
        }
    }

    #[test]
    fn good_configs_validate_with_defaults() {
        let c = cfg(MAP);
        assert_eq!(c.validate(&slots()), Ok(()));
        assert_eq!(c.timeout, Duration::from_secs(2));
        let m = MapSetup::from(&c);
        assert_eq!(
            (m.live_key.as_str(), m.resume_key.as_str()),
            ("live", "live.resume")
        );
        assert_eq!(cfg(SERVERS).validate(&slots()), Ok(()));
    }

    #[test]
    fn slot_and_node_names_must_exist() {
        let e = err(
            &MAP.replace("blue = \"be_blue\"", "purple = \"be_blue\""),
            &slots(),
        );
        assert!(e.contains("`backends`: `purple` is not a slot"), "{e}");
        assert!(e.contains("blue, green"), "{e}");
        let e = err(
            &format!("{MAP}node_servers = {{ green = {{ g3 = \"web3\" }} }}\n"),
            &slots(),
        );
        assert!(
            e.contains("slot `green` has no node `g3` (its nodes: g1, g2)"),
            "{e}"
        );
        let ok = format!("{MAP}node_servers = {{ green = {{ g1 = \"web1\" }} }}\n");
        assert_eq!(cfg(&ok).validate(&slots()), Ok(()));
        let e = err(&SERVERS.replace("blue = ", "pink = "), &slots());
        assert!(e.contains("`servers`: `pink` is not a slot"), "{e}");
        let e = err(&SERVERS.replace("blue = ", "green = "), &slots());
        assert!(e.contains("slot `green` has nodes"), "{e}");
    }

    #[test]
    fn fields_of_the_other_mode_and_missing_fields_are_named() {
        let e = err(&format!("{MAP}backend = \"be_app\"\n"), &slots());
        assert!(e.contains("`backend` belongs to mode = \"servers\""), "{e}");
        let e = err(&format!("{SERVERS}map = \"/x.map\"\n"), &slots());
        assert!(e.contains("`map` belongs to mode = \"map\""), "{e}");
        let e = err(
            &MAP.replace("map = \"/etc/haproxy/slots.map\"\n", ""),
            &slots(),
        );
        assert!(e.starts_with("`map` is missing"), "{e}");
        let e = err(&SERVERS.replace("backend = \"be_app\"\n", ""), &slots());
        assert!(e.starts_with("`backend` is missing"), "{e}");
        let e = err(&MAP.replace("\"be_green\"", "\"be_blue\""), &slots());
        assert!(e.contains("both name `be_blue`"), "{e}");
        let e = err(
            &format!("{MAP}maintenance_backend = \"be_blue\"\n"),
            &slots(),
        );
        assert!(e.contains("`maintenance_backend`"), "{e}");
        let e = err(&format!("{MAP}preview_key = \"live\"\n"), &slots());
        assert!(
            e.contains("`preview_key` and `live_key` are both `live`"),
            "{e}"
        );
        let e = err(&MAP.replace("127.0.0.1:9999", "admin.sock"), &slots());
        assert!(e.starts_with("`socket`:"), "{e}");
        let e = err(&format!("{MAP}timeout = \"0s\"\n"), &slots());
        assert!(e.contains("more than zero"), "{e}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = toml::from_str::<Config>(&format!("{MAP}sockett = \"x\"\n"))
            .expect_err("unknown field");
        assert!(e.to_string().contains("unknown field `sockett`"), "{e}");
    }
}
