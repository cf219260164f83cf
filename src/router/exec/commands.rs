//! Command lines: placeholders, their values and how they are shown (quoted, cut, redacted).

use super::*;

pub(super) fn check_env_name(k: &str) -> std::result::Result<(), String> {
    if k.is_empty() || k.contains('=') || k.contains('\0') {
        return Err(format!(
            "`{k}` is not a variable name (empty, or contains `=` or NUL)"
        ));
    }
    Ok(())
}

pub(super) fn list_placeholders(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn meaning(name: &str) -> &'static str {
    match name {
        "env" => "the environment's name",
        "from" => "the live slot as observed just before the command",
        "to" => "the new live slot, or the slot a maintenance redirect goes to",
        "slot" => "the slot the verb acts on",
        "node" => "the node of a slot a drain or undrain acts on",
        "address" => "the address of the slot or node acted on",
        "host" => "the host name of `address`",
        "mode" => "the maintenance mode, `page` or `redirect`",
        "live" => "the live slot whose traffic a canary splits",
        "canary" => "the canary slot that gets `weight` % of the live traffic",
        "weight" => "the canary's share of the live traffic in percent, 0 to 100",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------------------
// Templates

pub(super) fn uses(argv: &[String], name: &str) -> bool {
    argv.iter().any(|a| placeholders_in(a).contains(&name))
}

/// The values of one command's placeholders: a value, or why there is none.
pub(super) struct Values(BTreeMap<&'static str, std::result::Result<String, String>>);

pub(super) fn render(cmd: Cmd, argv: &[String], values: &Values) -> Result<Vec<String>> {
    fill_with(argv, |n| match values.0.get(n) {
        Some(Ok(v)) => Ok(Some(v.as_str())),
        Some(Err(why)) => Err(eyre!(
            "`{}` uses `{{{n}}}`, which has no value here: {why}; nothing was run",
            cmd.key()
        )),
        None => Err(eyre!(
            "`{}` uses `{{{n}}}`, which has no value in this command; nothing was run",
            cmd.key()
        )),
    })
}

/// Fill each `{name}` placeholder of `argv` with what `value` gives for `name` (`None` leaves
/// the placeholder as it is); the first error `value` gives is the answer.
pub(crate) fn fill_with<'v, E>(
    argv: &[String],
    mut value: impl FnMut(&str) -> std::result::Result<Option<&'v str>, E>,
) -> std::result::Result<Vec<String>, E> {
    argv.iter()
        .map(|arg| {
            let mut s = String::with_capacity(arg.len());
            for p in pieces(arg) {
                match p {
                    Piece::Text(t) => s.push_str(t),
                    Piece::Placeholder(n) => match value(n)? {
                        Some(v) => s.push_str(v),
                        None => {
                            s.push('{');
                            s.push_str(n);
                            s.push('}');
                        }
                    },
                }
            }
            Ok(s)
        })
        .collect()
}

/// An argv as an operator could paste it into a shell (for messages).
pub fn display_argv(argv: &[String]) -> String {
    let s = argv
        .iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%{}".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    cut(&s, 400)
}

pub(super) fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

// ---------------------------------------------------------------------------------------
// Errors

impl Values {
    pub(super) fn new(env: &str) -> Self {
        let mut m = BTreeMap::new();
        m.insert("env", Ok(env.to_string()));
        Values(m)
    }
    pub(super) fn set(&mut self, name: &'static str, v: impl Into<String>) {
        self.0.insert(name, Ok(v.into()));
    }
    pub(super) fn missing(&mut self, name: &'static str, why: impl Into<String>) {
        self.0.insert(name, Err(why.into()));
    }
    /// `{address}` and `{host}` of a slot or node address.
    pub(super) fn address(&mut self, address: &Address) {
        self.set("address", address.as_str());
        self.set("host", address.bare_host());
    }
}

pub(crate) enum Piece<'a> {
    Text(&'a str),
    Placeholder(&'a str),
}

/// Split an argument into text and `{name}` placeholders.
///
/// `{name}` (a letter or `_`, then letters, digits, `_`) is a placeholder. Every other brace
/// is text: `{"spec":...}` (JSON), `{{.x}}` (a run of braces: Go templates), `${HOME}` (a
/// brace after `$`: shell expansion), `{ print }` (spaces).
pub(crate) fn pieces(arg: &str) -> Vec<Piece<'_>> {
    let b = arg.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'{' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'{') {
            while i < b.len() && b[i] == b'{' {
                i += 1;
            }
            continue;
        }
        if i > 0 && b[i - 1] == b'$' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        let ident_start = b
            .get(i + 1)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
        if ident_start && b.get(j) == Some(&b'}') {
            if start < i {
                out.push(Piece::Text(&arg[start..i]));
            }
            out.push(Piece::Placeholder(&arg[i + 1..j]));
            i = j + 1;
            start = i;
        } else {
            i += 1;
        }
    }
    if start < b.len() {
        out.push(Piece::Text(&arg[start..]));
    }
    out
}

pub(crate) fn placeholders_in(arg: &str) -> Vec<&str> {
    pieces(arg)
        .into_iter()
        .filter_map(|p| match p {
            Piece::Placeholder(n) => Some(n),
            Piece::Text(_) => None,
        })
        .collect()
}

/// Checks of one command made when the config is loaded (an exec router's and a hook's), over
/// the placeholders `vars` it may use; the message names the problem.
pub fn validate_command(argv: &[String], vars: &[&str]) -> Result<(), String> {
    match argv.first() {
        None => return Err("is empty: give the program and its arguments, or remove it".into()),
        Some(p) if p.trim().is_empty() => {
            return Err("the first element must name the program to run; it is empty".into());
        }
        _ => {}
    }
    for (i, arg) in argv.iter().enumerate() {
        if arg.contains('\0') {
            return Err(format!("argument {} contains a NUL byte", i + 1));
        }
        for name in placeholders_in(arg) {
            if !vars.contains(&name) {
                return Err(format!(
                    "unknown placeholder `{{{name}}}` in argument {} (`{arg}`); this command \
                     knows {}. Text that must reach the command as a literal `{{word}}` \
                     belongs in a script file",
                    i + 1,
                    vars.iter()
                        .map(|v| format!("{{{v}}}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Ok(())
}
