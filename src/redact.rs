//! Credentials never leave cutover in clear: [`redact`] is the one function every text passes
//! through before it is written anywhere (the audit log, the debug log, the event pane, the
//! headless commands' output and their `--json`).
//!
//! What it hides (each value becomes `***`):
//! - the values of the environment variables the config names as credentials (`token_env`,
//!   `password_env`) and the contents of `password_file`, wherever they appear; they are
//!   collected when the config is loaded ([`register_secret`]), and values shorter than
//!   [`MIN_SECRET_LEN`] bytes are not collected (they would hide ordinary words);
//! - URL user-info: `http://user:pass@host` → `http://***@host`;
//! - `Authorization:` and `Proxy-Authorization:` header values (the scheme word, `Bearer` or
//!   `Basic`, is kept) to the end of the line, and the word after `Bearer`;
//! - `KEY=VALUE`, `KEY: VALUE` and `"KEY": "VALUE"` where KEY ends with one of [`KEYWORDS`]
//!   (`password=`, `db_password=`, `--password=`, `X-Auth-Token:`, `"client_secret": "…"`);
//! - the argument after a flag that ends with one of [`KEYWORDS`]: `--password X`,
//!   `--token X`, `--client-secret X`. Short flags such as `-p` are not treated as secret:
//!   they mean a port as often as a password (`ssh -p 22`); write `--password` or pass the
//!   password through the environment.

use std::io::Write;
use std::sync::RwLock;

/// Names that mark the value after them as a credential, matched at the end of a key or flag
/// (case-insensitive).
pub const KEYWORDS: [&str; 12] = [
    "proxy-authorization",
    "authorization",
    "credentials",
    "private_key",
    "access_key",
    "credential",
    "password",
    "api_key",
    "api-key",
    "passwd",
    "secret",
    "apikey",
];
/// `token` is matched too, but kept apart: it is also an ordinary word in messages.
const TOKEN: &str = "token";

/// Secret values shorter than this are not collected.
pub const MIN_SECRET_LEN: usize = 4;

const MASK: &str = "***";

static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Remember a credential's value, so that it is hidden wherever it appears from now on.
pub fn register_secret(value: &str) {
    let v = value.trim();
    if v.len() < MIN_SECRET_LEN {
        return;
    }
    let mut s = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    if !s.iter().any(|x| x == v) {
        s.push(v.to_string());
        // Longest first, so a secret that contains another is hidden whole.
        s.sort_by_key(|x| std::cmp::Reverse(x.len()));
    }
}

/// Remember the value of environment variable `var`, if it is set.
pub fn register_env(var: &str) {
    if let Some(v) = std::env::var_os(var) {
        register_secret(&v.to_string_lossy());
    }
}

/// `s` with every credential replaced by `***` (the rules are in the module's documentation).
pub fn redact(s: &str) -> String {
    let mut out = s.to_string();
    {
        let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
        for v in secrets.iter() {
            if out.contains(v.as_str()) {
                out = out.replace(v.as_str(), MASK);
            }
        }
    }
    let out = userinfo(&out);
    keywords(&out)
}

/// A JSON value with every string (keys too) passed through [`redact`].
pub fn redact_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(redact(s)),
        Value::Array(a) => Value::Array(a.iter().map(redact_json).collect()),
        Value::Object(o) => {
            let mut m = serde_json::Map::new();
            for (k, v) in o {
                let v = if is_secret_key(k) && !v.is_null() {
                    Value::String(MASK.into())
                } else {
                    redact_json(v)
                };
                m.insert(redact(k), v);
            }
            Value::Object(m)
        }
        other => other.clone(),
    }
}

/// Pretty JSON of `v`, redacted: what `--json` prints.
pub fn to_json_pretty<T: serde::Serialize>(v: &T) -> serde_json::Result<String> {
    let value = serde_json::to_value(v)?;
    serde_json::to_string_pretty(&redact_json(&value))
}

fn is_secret_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    KEYWORDS.iter().any(|w| k.ends_with(w)) || k.ends_with(TOKEN)
}

/// `scheme://user:pass@host` → `scheme://***@host`.
fn userinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| {
                c.is_whitespace() || matches!(c, '/' | '?' | '#' | '"' | '\'' | '<' | '>' | '`')
            })
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) if at > 0 => {
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Where a plain (unquoted) value ends.
fn value_end(b: &[u8], from: usize) -> usize {
    let mut i = from;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace()
            || matches!(
                c,
                b'&' | b',' | b';' | b'"' | b'\'' | b')' | b']' | b'}' | b'<' | b'>' | b'`'
            )
        {
            break;
        }
        i += 1;
    }
    i
}

/// Where a value ends: the closing quote of a quoted one (not included), else [`value_end`].
/// Returns (start, end) of the part to hide.
fn value_span(b: &[u8], from: usize) -> (usize, usize) {
    match b.get(from) {
        Some(&q @ (b'"' | b'\'')) => {
            let mut i = from + 1;
            while i < b.len() && b[i] != q {
                if b[i] == b'\\' && q == b'"' {
                    i += 1;
                }
                i += 1;
            }
            (from + 1, i.min(b.len()))
        }
        _ => (from, value_end(b, from)),
    }
}

fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// The keyword that ends at `i + len`, matched at `i` in the lower-cased text.
fn keyword_at(lower: &[u8], i: usize) -> Option<&'static str> {
    KEYWORDS
        .iter()
        .copied()
        .chain(std::iter::once(TOKEN))
        .find(|k| lower[i..].starts_with(k.as_bytes()))
}

/// The `[start, end)` of the credential that keyword `k` at `i..j` introduces, if any.
fn secret_after(b: &[u8], lower: &[u8], i: usize, j: usize, k: &str) -> Option<(usize, usize)> {
    let next = *b.get(j)?;
    let header = k.ends_with("authorization");
    match next {
        b'=' => Some(value_span(b, j + 1)),
        b'"' => {
            // "key": "value"
            let c = skip_blanks(b, j + 1);
            if b.get(c) != Some(&b':') {
                return None;
            }
            let v = skip_blanks(b, c + 1);
            (b.get(v) == Some(&b'"')).then(|| value_span(b, v))
        }
        b':' => {
            if b.get(j + 1) == Some(&b'/') {
                return None; // a URL scheme, not a header
            }
            let mut v = skip_blanks(b, j + 1);
            if v == j + 1 && !header {
                return None; // `token:x` is not a key and a value
            }
            if header {
                let word_end = value_end(b, v);
                let scheme = &lower[v..word_end];
                let is_scheme =
                    [&b"bearer"[..], b"basic", b"digest", b"token", b"negotiate"].contains(&scheme);
                // A scheme is a word of its own: `Bearer` glued to punctuation is the value.
                if is_scheme && matches!(b.get(word_end), Some(b' ' | b'\t')) {
                    v = skip_blanks(b, word_end);
                }
                let end = b[v..]
                    .iter()
                    .position(|&c| matches!(c, b'\n' | b'\r' | b'"' | b'\''))
                    .map_or(b.len(), |p| v + p);
                return Some((v, end));
            }
            Some(value_span(b, v))
        }
        b' ' | b'\t' => {
            // A flag: `--password VALUE`. The keyword ends the word, which starts with `-`.
            let word_start = b[..i]
                .iter()
                .rposition(|c| c.is_ascii_whitespace())
                .map_or(0, |p| p + 1);
            if b.get(word_start) != Some(&b'-') || b.get(word_start + 1) != Some(&b'-') {
                return None;
            }
            let v = skip_blanks(b, j);
            if v >= b.len() || b[v] == b'-' || b[v] == b'\n' {
                return None;
            }
            Some(value_span(b, v))
        }
        _ => None,
    }
}

fn keywords(s: &str) -> String {
    let b = s.as_bytes();
    let lower = s.to_ascii_lowercase().into_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    let mut copied = 0;
    while i < b.len() {
        // `Bearer X` anywhere, as a word.
        let left_ok = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if left_ok && lower[i..].starts_with(b"bearer ") {
            let v = skip_blanks(b, i + 7);
            let (vs, ve) = value_span(b, v);
            if ve > vs && !b[vs..ve].starts_with(MASK.as_bytes()) {
                out.extend_from_slice(&b[copied..vs]);
                out.extend_from_slice(MASK.as_bytes());
                copied = ve;
                i = ve.max(i + 1);
                continue;
            }
        }
        if let Some(k) = keyword_at(&lower, i) {
            let j = i + k.len();
            if let Some((vs, ve)) = secret_after(b, &lower, i, j, k)
                && ve > vs
                && &b[vs..ve] != MASK.as_bytes()
            {
                out.extend_from_slice(&b[copied..vs]);
                out.extend_from_slice(MASK.as_bytes());
                copied = ve;
                i = ve;
                continue;
            }
            i = j;
            continue;
        }
        i += 1;
    }
    out.extend_from_slice(&b[copied..]);
    // Every cut is at an ASCII byte or an end, so the text stays UTF-8.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A [`tracing_subscriber::fmt::MakeWriter`] whose writers pass each log line through
/// [`redact`] before handing it on.
pub struct Redacting<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Redacting<M>
{
    type Writer = RedactingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            inner: self.0.make_writer(),
            buf: Vec::new(),
        }
    }
}

/// Buffers one event's text; redacts and writes it on flush or drop.
pub struct RedactingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let text = redact(&String::from_utf8_lossy(&self.buf));
            self.buf.clear();
            self.inner.write_all(text.as_bytes())?;
        }
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_flags_headers_pairs_and_urls_are_hidden() {
        let cases = [
            (
                "lbctl --password argv-CCC switch",
                "lbctl --password *** switch",
            ),
            ("lbctl --password=argv-CCC", "lbctl --password=***"),
            ("lbctl --db-password 'a b' x", "lbctl --db-password '***' x"),
            (
                "lbctl --token tok-1 --secret s-2",
                "lbctl --token *** --secret ***",
            ),
            (
                "lbctl --password-file /run/pw",
                "lbctl --password-file /run/pw",
            ),
            ("ssh -p 22 host", "ssh -p 22 host"),
            ("Authorization: Bearer abc.def", "Authorization: Bearer ***"),
            (
                "authorization: Basic dXNlcjpw\nnext",
                "authorization: Basic ***\nnext",
            ),
            ("Authorization: custom-xyz", "Authorization: ***"),
            // Found by tests/proptests.rs: a scheme glued to punctuation is no scheme.
            ("Authorization: Bearer` t", "Authorization: ***"),
            (
                "curl -H 'Authorization: Bearer abc' u",
                "curl -H 'Authorization: Bearer ***' u",
            ),
            (
                "password=hunter2 token=xyz&a=1",
                "password=*** token=***&a=1",
            ),
            ("DB_PASSWORD=p1 secret=s", "DB_PASSWORD=*** secret=***"),
            (
                r#"{"client_secret": "c-s", "n": 1}"#,
                r#"{"client_secret": "***", "n": 1}"#,
            ),
            ("X-Auth-Token: t-1 rest", "X-Auth-Token: *** rest"),
            (
                "see http://admin:hunter2@10.0.0.1/bm",
                "see http://***@10.0.0.1/bm",
            ),
            ("no token was given", "no token was given"),
            ("tokens=3 passwordless=yes", "tokens=3 passwordless=yes"),
            ("plain text", "plain text"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "input: {input}");
        }
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        let once = redact("--password x Authorization: Bearer y password=z http://u:p@h/");
        assert_eq!(redact(&once), once);
    }

    #[test]
    fn registered_values_are_hidden_anywhere() {
        register_secret("Zq7-registered-value");
        register_secret("ab"); // too short: not collected
        let s = redact("got Zq7-registered-value back, ab");
        assert_eq!(s, "got *** back, ab");
    }

    #[test]
    fn json_strings_and_secret_keys_are_hidden() {
        let v = serde_json::json!({"message": "token=abc", "password": "p", "n": [ "Bearer q" ]});
        let r = redact_json(&v);
        assert_eq!(r["message"], "token=***");
        assert_eq!(r["password"], "***");
        assert_eq!(r["n"][0], "Bearer ***");
    }

    #[test]
    fn the_log_writer_redacts_each_event() {
        let mut sink = Vec::new();
        {
            let mut w = RedactingWriter {
                inner: &mut sink,
                buf: Vec::new(),
            };
            w.write_all(b"command=lbctl --password argv-CCC\n")
                .expect("write");
        }
        assert_eq!(
            String::from_utf8_lossy(&sink),
            "command=lbctl --password ***\n"
        );
    }
}
