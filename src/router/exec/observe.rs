//! What an observe command prints, read into a RouterState (JSON or `key=value` lines).

use super::*;

/// Read what an `observe` command printed: a JSON object when the output starts with `{`,
/// otherwise `key=value` lines. Slot and node names are checked against the environment.
/// The error says which format was expected and quotes the start of the output.
pub fn parse_observe(out: &str, slots: &[Slot]) -> std::result::Result<RouterState, String> {
    let t = out.trim_start_matches('\u{feff}').trim();
    if t.is_empty() {
        return Err(
            "it printed nothing; expected a JSON object or key=value lines such as \
             `live=blue` (docs/exec.md describes both)"
                .into(),
        );
    }
    let mut b = Builder {
        slots,
        state: RouterState::default(),
        seen_live: false,
    };
    if t.starts_with('{') {
        b.json(t).map_err(|e| {
            format!(
                "expected a JSON object in the observe schema (the output starts with `{{`): \
                 {e}; it printed: {}",
                quote_head(out)
            )
        })?;
    } else {
        b.lines(t).map_err(|e| {
            format!(
                "expected key=value lines such as `live=blue` (or a JSON object starting with \
                 `{{`): {e}; it printed: {}",
                quote_head(out)
            )
        })?;
    }
    if let Some(w) = &mut b.state.weights
        && w.live.is_empty()
    {
        match &b.state.live {
            Some(l) => w.live = l.clone(),
            None => {
                return Err("it reports weights but no live slot whose traffic they split".into());
            }
        }
    }
    if !b.seen_live {
        return Err(format!(
            "it did not say which slot is live: print `live=SLOT` (or JSON \"live\": \"SLOT\", \
             or null when no slot is live); it printed: {}",
            quote_head(out)
        ));
    }
    Ok(b.state)
}

/// The first bytes of some output, on one line, control characters escaped.
pub(super) fn quote_head(s: &str) -> String {
    let mut end = s.len().min(QUOTE_BYTES);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let mut q: String = s[..end]
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect();
    if end < s.len() {
        q.push('…');
    }
    format!("`{q}`")
}

pub(super) struct Builder<'a> {
    pub(super) slots: &'a [Slot],
    pub(super) state: RouterState,
    /// Whether the output said which slot is live (a slot, or JSON null).
    pub(super) seen_live: bool,
}

pub(super) fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(super) fn opt_str(v: &Value) -> std::result::Result<Option<&str>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s)),
        other => Err(type_name(other)),
    }
}

/// A JSON field value as text (null: absent); objects and lists are refused.
pub(super) fn scalar(v: &Value) -> std::result::Result<Option<String>, &'static str> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        other => Err(type_name(other)),
    }
}

pub(super) fn parse_state(v: &str) -> std::result::Result<AdminState, String> {
    Ok(match v.trim().to_ascii_lowercase().as_str() {
        "ready" => AdminState::Ready,
        "drain" | "draining" => AdminState::Drain,
        "maint" | "maintenance" => AdminState::Maint,
        "disabled" => AdminState::Disabled,
        "unknown" => AdminState::Unknown,
        other => {
            return Err(format!(
                "state `{other}` is not one of ready, drain, maint, disabled, unknown"
            ));
        }
    })
}

pub(super) fn parse_count(v: &str) -> std::result::Result<u64, String> {
    v.trim()
        .parse::<u64>()
        .map_err(|_| format!("`{v}` is not a whole number of zero or more"))
}

impl Builder<'_> {
    pub(super) fn known_slot(&self, what: &str, name: &str) -> std::result::Result<String, String> {
        if self.slots.iter().any(|s| s.name == name) {
            return Ok(name.to_string());
        }
        Err(format!(
            "{what} `{name}` is not a slot of this environment (its slots: {})",
            crate::router::comma_list(self.slots.iter().map(|s| s.name.as_str()))
        ))
    }

    pub(super) fn slot_mut(&mut self, name: &str) -> std::result::Result<&mut SlotRoute, String> {
        let name = self.known_slot("slot", name)?;
        Ok(self.state.slots.entry(name).or_default())
    }

    pub(super) fn node_mut(
        &mut self,
        slot: &str,
        node: &str,
    ) -> std::result::Result<&mut NodeRoute, String> {
        let configured: Vec<String> = self
            .slots
            .iter()
            .find(|s| s.name == slot)
            .map(|s| s.nodes.iter().map(|n| n.name.clone()).collect())
            .unwrap_or_default();
        if !configured.is_empty() && !configured.iter().any(|n| n == node) {
            return Err(format!(
                "node `{node}` is not a node of slot `{slot}` (its nodes: {})",
                configured.join(", ")
            ));
        }
        let route = self.slot_mut(slot)?;
        if let Some(i) = route.nodes.iter().position(|n| n.name == node) {
            return Ok(&mut route.nodes[i]);
        }
        route.nodes.push(NodeRoute {
            name: node.to_string(),
            ..Default::default()
        });
        let last = route.nodes.len() - 1;
        Ok(&mut route.nodes[last])
    }

    /// `live` or `preview`. `None` is an explicit JSON null. An empty live slot is refused:
    /// it is what a script prints when the command that finds the slot failed quietly.
    pub(super) fn role(&mut self, key: &str, v: Option<&str>) -> std::result::Result<(), String> {
        let v = match v.map(str::trim) {
            None => None,
            Some("") if key == "live" => {
                return Err(
                    "`live` is empty; print the live slot's name (if the router really \
                     sends the public traffic to no slot, print JSON with \"live\": null)"
                        .into(),
                );
            }
            Some("") => None,
            Some(name) => Some(self.known_slot(key, name)?),
        };
        self.seen_live |= key == "live";
        if key == "live" {
            self.state.live = v;
        } else {
            self.state.preview = v;
        }
        Ok(())
    }

    pub(super) fn maintenance_str(
        &self,
        s: &str,
    ) -> std::result::Result<Option<MaintenanceMode>, String> {
        let t = s.trim();
        match t.to_ascii_lowercase().as_str() {
            "" | "off" | "false" => Ok(None),
            "on" | "true" | "page" => Ok(Some(MaintenanceMode::Page)),
            _ => match t.split_once(':') {
                Some((m, to)) if m.trim().eq_ignore_ascii_case("redirect") => {
                    Ok(Some(MaintenanceMode::Redirect {
                        to: self.known_slot("the maintenance redirect's slot", to.trim())?,
                    }))
                }
                _ => Err(format!(
                    "maintenance `{t}` is not one of off, on, page, redirect:SLOT"
                )),
            },
        }
    }

    // --- JSON

    pub(super) fn json(&mut self, text: &str) -> std::result::Result<(), String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let Value::Object(top) = v else {
            return Err("the top level is not an object".into());
        };
        for (k, v) in &top {
            match k.as_str() {
                "live" | "preview" => {
                    let s =
                        opt_str(v).map_err(|t| format!("`{k}` is {t}, not a slot name or null"))?;
                    self.role(k, s)?;
                }
                "maintenance" => {
                    self.state.maintenance = self.json_maintenance(v)?;
                }
                "weights" => {
                    self.state.weights = self.json_weights(v)?;
                }
                "slots" => {
                    let Value::Object(slots) = v else {
                        return Err(format!(
                            "`slots` is {}, not an object keyed by slot name",
                            type_name(v)
                        ));
                    };
                    for (name, s) in slots {
                        self.json_slot(name, s)?;
                    }
                }
                "notes" | "problems" => {
                    let list = if k == "notes" {
                        &mut self.state.notes
                    } else {
                        &mut self.state.problems
                    };
                    match v {
                        Value::Array(a) => {
                            for n in a {
                                match n {
                                    Value::String(s) => list.push(s.clone()),
                                    other => {
                                        return Err(format!(
                                            "`{k}` holds {}, not a string",
                                            type_name(other)
                                        ));
                                    }
                                }
                            }
                        }
                        Value::String(s) => list.push(s.clone()),
                        Value::Null => {}
                        other => {
                            return Err(format!(
                                "`{k}` is {}, not a list of strings",
                                type_name(other)
                            ));
                        }
                    }
                }
                other => {
                    return Err(format!("unknown key `{other}` (the keys are {TOP_KEYS})"));
                }
            }
        }
        Ok(())
    }

    pub(super) fn json_maintenance(
        &self,
        v: &Value,
    ) -> std::result::Result<Option<MaintenanceMode>, String> {
        match v {
            Value::Null | Value::Bool(false) => Ok(None),
            Value::Bool(true) => Ok(Some(MaintenanceMode::Page)),
            Value::String(s) => self.maintenance_str(s),
            Value::Object(o) => {
                let mode = o.get("mode").and_then(Value::as_str).unwrap_or("page");
                for k in o.keys() {
                    if k != "mode" && k != "to" {
                        return Err(format!(
                            "unknown key `maintenance.{k}` (the keys are mode, to)"
                        ));
                    }
                }
                match mode {
                    "page" => Ok(Some(MaintenanceMode::Page)),
                    "redirect" => {
                        let to = o.get("to").and_then(Value::as_str).ok_or(
                            "`maintenance` is a redirect without `to` (the slot it goes to)",
                        )?;
                        Ok(Some(MaintenanceMode::Redirect {
                            to: self.known_slot("the maintenance redirect's slot", to)?,
                        }))
                    }
                    m => Err(format!("maintenance mode `{m}` is not page or redirect")),
                }
            }
            other => Err(format!(
                "`maintenance` is {}; write false, true, \"page\", \"redirect:SLOT\" or \
                 {{\"mode\":\"redirect\",\"to\":\"SLOT\"}}",
                type_name(other)
            )),
        }
    }

    /// `weights`: `"green:25"`, `{"canary": "green", "canary_percent": 25}` (with an optional
    /// `live`), or null / 0 % for no split. The live slot defaults to the observed one.
    pub(super) fn json_weights(&self, v: &Value) -> std::result::Result<Option<Weights>, String> {
        match v {
            Value::Null => Ok(None),
            Value::String(s) => self.weights_str(s),
            Value::Object(o) => {
                for k in o.keys() {
                    if !["live", "canary", "canary_percent"].contains(&k.as_str()) {
                        return Err(format!(
                            "unknown key `weights.{k}` (the keys are live, canary, canary_percent)"
                        ));
                    }
                }
                let canary = o
                    .get("canary")
                    .and_then(Value::as_str)
                    .ok_or("`weights` has no `canary` (the slot that gets the share)")?;
                let percent = o
                    .get("canary_percent")
                    .and_then(Value::as_u64)
                    .filter(|p| *p <= 100)
                    .ok_or("`weights.canary_percent` must be a whole number from 0 to 100")?;
                let live = match o.get("live").and_then(Value::as_str) {
                    Some(l) => self.known_slot("the weights' live slot", l)?,
                    None => String::new(),
                };
                Ok((percent > 0).then_some(Weights {
                    live,
                    canary: self.known_slot("the canary", canary)?,
                    canary_percent: percent as u8,
                }))
            }
            other => Err(format!(
                "`weights` is {}; write \"SLOT:PERCENT\", {{\"canary\":\"SLOT\",\"canary_percent\":N}} \
                 or null",
                type_name(other)
            )),
        }
    }

    /// `weights=green:25` (the canary and its share), or `off` / `0` / empty for no split.
    pub(super) fn weights_str(&self, s: &str) -> std::result::Result<Option<Weights>, String> {
        let t = s.trim();
        if matches!(t.to_ascii_lowercase().as_str(), "" | "off" | "none" | "0") {
            return Ok(None);
        }
        let Some((canary, percent)) = t.split_once(':') else {
            return Err(format!(
                "weights `{t}` is not CANARY:PERCENT (like `green:25`) or off"
            ));
        };
        let percent: u8 = percent
            .trim()
            .trim_end_matches('%')
            .trim()
            .parse()
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| {
                format!("weights `{t}`: the share must be a whole number from 0 to 100")
            })?;
        Ok((percent > 0).then(|| Weights {
            live: String::new(),
            canary: canary.trim().to_string(),
            canary_percent: percent,
        }))
        .and_then(|w| match w {
            Some(w) => Ok(Some(Weights {
                canary: self.known_slot("the canary", &w.canary)?,
                ..w
            })),
            None => Ok(None),
        })
    }

    pub(super) fn json_slot(&mut self, name: &str, v: &Value) -> std::result::Result<(), String> {
        let Value::Object(o) = v else {
            return Err(format!("`slots.{name}` is {}, not an object", type_name(v)));
        };
        self.slot_mut(name)?;
        for (k, val) in o {
            let at = format!("slots.{name}.{k}");
            if k == "nodes" {
                let Value::Object(nodes) = val else {
                    return Err(format!(
                        "`{at}` is {}, not an object keyed by node name",
                        type_name(val)
                    ));
                };
                for (node, nv) in nodes {
                    self.json_node(name, node, nv)?;
                }
                continue;
            }
            let text = scalar(val).map_err(|t| format!("`{at}` is {t}"))?;
            if let Some(text) = text {
                self.slot_attr(name, k, &text)
                    .map_err(|e| format!("`{at}`: {e}"))?;
            }
        }
        Ok(())
    }

    pub(super) fn json_node(
        &mut self,
        slot: &str,
        node: &str,
        v: &Value,
    ) -> std::result::Result<(), String> {
        let Value::Object(o) = v else {
            return Err(format!(
                "`slots.{slot}.nodes.{node}` is {}, not an object",
                type_name(v)
            ));
        };
        self.node_mut(slot, node)?;
        for (k, val) in o {
            let at = format!("slots.{slot}.nodes.{node}.{k}");
            let text = scalar(val).map_err(|t| format!("`{at}` is {t}"))?;
            if let Some(text) = text {
                self.node_attr(slot, node, k, &text)
                    .map_err(|e| format!("`{at}`: {e}"))?;
            }
        }
        Ok(())
    }

    // --- shared by both formats

    pub(super) fn slot_attr(
        &mut self,
        slot: &str,
        key: &str,
        v: &str,
    ) -> std::result::Result<(), String> {
        let r = self.slot_mut(slot)?;
        match key {
            "state" => r.admin = parse_state(v)?,
            "sessions" => r.sessions = Some(parse_count(v)?),
            "requests" => r.requests = Some(parse_count(v)?),
            "errors" => r.errors = Some(parse_count(v)?),
            "check" => r.check = Some(v.to_string()),
            other => return Err(unknown_field("slot", other, SLOT_KEYS)),
        }
        Ok(())
    }

    pub(super) fn node_attr(
        &mut self,
        slot: &str,
        node: &str,
        key: &str,
        v: &str,
    ) -> std::result::Result<(), String> {
        let n = self.node_mut(slot, node)?;
        match key {
            "state" => n.admin = parse_state(v)?,
            "sessions" => n.sessions = Some(parse_count(v)?),
            "check" => n.check = Some(v.to_string()),
            other => return Err(unknown_field("node", other, NODE_KEYS)),
        }
        Ok(())
    }

    // --- key=value lines

    pub(super) fn lines(&mut self, text: &str) -> std::result::Result<(), String> {
        let mut seen = BTreeSet::new();
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(format!("line {n} `{}` is not key=value", cut(line, 80)));
            };
            let (k, v) = (k.trim(), unquote(v.trim()));
            if k.is_empty() {
                return Err(format!("line {n} has no key before `=`"));
            }
            if k != "note" && k != "problem" && !seen.insert(k.to_string()) {
                return Err(format!("line {n}: `{k}` is given twice"));
            }
            let at = |e: String| format!("line {n}: {e}");
            match k {
                "live" | "preview" => self.role(k, Some(v)).map_err(at)?,
                "maintenance" => self.state.maintenance = self.maintenance_str(v).map_err(at)?,
                "weights" => self.state.weights = self.weights_str(v).map_err(at)?,
                "note" | "notes" => self.state.notes.push(v.to_string()),
                "problem" | "problems" => self.state.problems.push(v.to_string()),
                _ => {
                    let Some((owner, field)) = k.rsplit_once('.') else {
                        return Err(at(format!(
                            "unknown key `{k}` (the keys are live, preview, maintenance, weights, \
                             note, problem, SLOT.FIELD and SLOT/NODE.FIELD)"
                        )));
                    };
                    match owner.split_once('/') {
                        Some((slot, node)) => self.node_attr(slot, node, field, v).map_err(at)?,
                        None => self.slot_attr(owner, field, v).map_err(at)?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// The error for a key that is not a field of a slot or a node.
fn unknown_field(of: &str, key: &str, fields: &str) -> String {
    format!("unknown {of} field `{key}` (the fields are {fields})")
}
