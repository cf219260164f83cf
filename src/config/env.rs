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
    if s.gate_checks == 0 || s.gate_checks > MAX_GATE_CHECKS {
        return Err(at(
            setting("gate_checks"),
            Some("gate_checks"),
            format!("must be between 1 and {MAX_GATE_CHECKS}"),
        ));
    }
    if s.history == 0 || s.history > MAX_HISTORY {
        return Err(at(
            setting("history"),
            Some("history"),
            format!(
                "must be between 1 and {MAX_HISTORY} (polls kept for the sparkline); it is {}",
                s.history
            ),
        ));
    }
    if s.max_body == 0 || s.max_body > MAX_BODY {
        return Err(at(
            setting("max_body"),
            Some("max_body"),
            format!(
                "must be between 1 and {MAX_BODY} bytes (16 MiB); it is {}",
                s.max_body
            ),
        ));
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
        if !crate::paths::is_safe_name(&sname) {
            return Err(at(
                rs.name.span(),
                Some("name"),
                format!(
                    "slot name `{sname}` is not allowed: it is used in file names and proxy \
                     configs, so it must be {}",
                    crate::paths::SAFE_NAME_RULE
                ),
            ));
        }
        for n in &rs.nodes {
            if !crate::paths::is_safe_name(&n.name) {
                let span =
                    find_value_in(src, rs.name.span().start, "nodes").unwrap_or(rs.name.span());
                return Err(at(
                    span,
                    Some("nodes"),
                    format!(
                        "node name `{}` is not allowed: it must be {}",
                        n.name,
                        crate::paths::SAFE_NAME_RULE
                    ),
                ));
            }
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
        if rc.name() != rc.kind() && !crate::paths::is_safe_name(rc.name()) {
            return Err(at(
                find_value_in(src, span.start, "name").unwrap_or(span.clone()),
                Some("name"),
                format!(
                    "router name `{}` is not allowed: it is used in file names, so it must \
                     be {}",
                    rc.name(),
                    crate::paths::SAFE_NAME_RULE
                ),
            ));
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
