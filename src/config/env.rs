//! The parts of an environment that take the most checking: its slots and its routers; and
//! the settings' limits.

use super::*;
use raw::RawSlot;

/// `[settings]`' numbers within their limits, and a usable store.
pub(super) fn check_settings(src: &str, s: &Settings, at: &Locate<'_>) -> Result<(), ConfigError> {
    for (key, d) in [("poll_interval", s.poll_interval), ("timeout", s.timeout)] {
        if d.is_zero() {
            return Err(at(
                settings_value(src, key).unwrap_or(0..0),
                Some(key),
                "must be more than zero".into(),
            ));
        }
    }
    let setting = |key: &str| settings_value(src, key).unwrap_or(0..0);
    if let StoreSetting::Etcd(e) = &s.store
        && let Some(m) = e.problem()
    {
        let span = table_value(src, "settings.store", "etcd").unwrap_or_else(|| setting("store"));
        return Err(at(span, Some("store"), m));
    }
    for (key, value, max, what) in [
        ("gate_checks", s.gate_checks, MAX_GATE_CHECKS, ""),
        (
            "history",
            s.history,
            MAX_HISTORY,
            " (polls kept for the sparkline)",
        ),
        ("max_body", s.max_body, MAX_BODY, " bytes (16 MiB)"),
    ] {
        if value == 0 || value > max {
            return Err(at(
                setting(key),
                Some(key),
                format!("must be between 1 and {max}{what}; it is {value}"),
            ));
        }
    }
    Ok(())
}

/// The slots of environment `name`: safe unique names, one [`Address`](crate::model::Address)
/// each (and per node), health and version URLs derived once.
pub(super) fn parse_slots(
    src: &str,
    name: &str,
    raw: Vec<RawSlot>,
    at: &Locate<'_>,
) -> Result<Vec<Slot>, ConfigError> {
    let mut slot_names = BTreeSet::new();
    let mut slots = Vec::new();
    for rs in raw {
        let sname = rs.name.get_ref().clone();
        let used_in = "it is used in file names and proxy configs, so ";
        crate::paths::check_name("slot", &sname, used_in)
            .map_err(|m| at(rs.name.span(), Some("name"), m))?;
        for n in &rs.nodes {
            crate::paths::check_name("node", &n.name, "").map_err(|m| {
                let span =
                    find_value_in(src, rs.name.span().start, "nodes").unwrap_or(rs.name.span());
                at(span, Some("nodes"), m)
            })?;
        }
        if !slot_names.insert(sname.clone()) {
            return Err(at(
                rs.name.span(),
                Some("name"),
                format!("slot `{sname}` is defined twice in environment `{name}`"),
            ));
        }
        let address = crate::model::Address::parse(rs.address.get_ref())
            .map_err(|m| at(rs.address.span(), None, m))?;
        let join = |p: &Spanned<String>| -> Result<String, ConfigError> {
            let v = p.get_ref();
            if v.starts_with("http://") || v.starts_with("https://") {
                check_url(v).map_err(|m| at(p.span(), None, m))?;
                Ok(v.clone())
            } else if v.starts_with('/') {
                Ok(address.join(v))
            } else {
                Err(at(
                    p.span(),
                    None,
                    format!("`{v}` must be a path starting with / or a full http(s) URL"),
                ))
            }
        };
        let health_url = join(&rs.health)?;
        let version_url = join(&rs.version)?;
        if let Some(p) = &rs.version_pointer {
            let v = p.get_ref();
            if !v.is_empty() && !v.starts_with('/') {
                return Err(at(
                    p.span(),
                    None,
                    format!(
                        "`{v}` is not a JSON pointer; write it like \"/version\" or \"/build/version\""
                    ),
                ));
            }
        }
        let mut nodes = Vec::new();
        for n in rs.nodes {
            let node_address = crate::model::Address::parse(&n.address).map_err(|m| {
                at(
                    rs.address.span(),
                    Some("nodes"),
                    format!("node `{}`: {m}", n.name),
                )
            })?;
            nodes.push(Node {
                name: n.name,
                address: node_address,
            });
        }
        let version_path = path_of_url(&version_url);
        slots.push(Slot {
            name: sname,
            address,
            health_url,
            version_url,
            version_path,
            version_pointer: rs.version_pointer.map(|p| p.into_inner()),
            expect_status: rs.expect_status,
            nodes,
        });
    }
    Ok(slots)
}

/// The routers of environment `name`, each checked against its slots by its own driver.
pub(super) fn parse_routers(
    src: &str,
    name: &str,
    raw: Vec<Spanned<RawTable>>,
    slots: &[Slot],
    state_dir: &Path,
    at: &Locate<'_>,
) -> Result<Vec<RouterConfig>, ConfigError> {
    let mut routers = Vec::new();
    let mut router_names = BTreeSet::new();
    for rr in raw {
        let span = rr.span();
        let mut rc = router_from(rr.into_inner(), span.clone(), &at)?;
        if rc.name() != rc.kind() {
            crate::paths::check_name("router", rc.name(), "it is used in file names, so ")
                .map_err(|m| {
                    let name_at = find_value_in(src, span.start, "name").unwrap_or(span.clone());
                    at(name_at, Some("name"), m)
                })?;
        }
        rc.validate(slots).map_err(|m| at(span.clone(), None, m))?;
        if let RouterConfig::Embedded(c) = &mut rc
            && c.state_file.is_none()
        {
            c.state_file = Some(c.state_path_in(name, state_dir));
        }
        if !router_names.insert(rc.name().to_string()) {
            return Err(at(
                span,
                Some("name"),
                format!(
                    "two routers of environment `{name}` are both called `{}`; give each a `name`",
                    rc.name()
                ),
            ));
        }
        routers.push(rc);
    }
    Ok(routers)
}
