//! Where a config error is: line and column of a key or value, and the closest known key.

use super::*;

pub(super) fn check_url(u: &str) -> Result<(), String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(|| format!("`{u}` is not an http:// or https:// URL"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("`{u}` has no host"));
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && !host.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("`{u}` has a bad port `{port}`"));
    }
    Ok(())
}

/// The path of a checked http(s) URL (`/version` for `http://h:1/version`; `/` when none).
pub(super) fn path_of_url(u: &str) -> String {
    let rest = u.split_once("://").map_or(u, |(_, r)| r);
    rest.find('/')
        .map_or_else(|| "/".into(), |i| rest[i..].to_string())
}

/// 1-based line and column of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before.chars().count(), |i| before[i + 1..].chars().count())
        + 1;
    (line, col)
}

/// The key on the line holding `offset`, if that line is `key = value`.
pub(super) fn key_at(src: &str, offset: usize) -> Option<String> {
    let offset = offset.min(src.len());
    let start = src[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = src[offset..].find('\n').map_or(src.len(), |i| offset + i);
    let line = &src[start..end];
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && !key.starts_with('[') && !key.starts_with('#')).then(|| key.to_string())
}

/// 1-based line and column of byte `offset` in text that may not be UTF-8 after it.
pub(super) fn line_col_bytes(b: &[u8], offset: usize) -> (usize, usize) {
    let before = String::from_utf8_lossy(&b[..offset.min(b.len())]);
    line_col(&before, before.len())
}

/// The span of `key`'s value in `[settings]`.
pub(super) fn settings_value(src: &str, key: &str) -> Option<Range<usize>> {
    table_value(src, "settings", key)
}

/// Line and column of `key` in `[settings]` of the config file `c` came from, for messages
/// about a setting found wrong after loading (an unknown theme).
pub fn setting_position(c: &Config, key: &str) -> Option<(usize, usize)> {
    let src = std::fs::read_to_string(&c.path).ok()?;
    settings_value(&src, key).map(|r| line_col(&src, r.start))
}

/// The text between `prefix` and the next backtick.
pub(super) fn quoted_after<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = &s[s.find(prefix)? + prefix.len()..];
    rest.split('`').next()
}

/// The backticked words after `prefix`: serde's "expected one of `a`, `b`".
pub(super) fn quoted_list<'a>(s: &'a str, prefix: &str) -> Vec<&'a str> {
    s.find(prefix).map_or_else(Vec::new, |i| {
        s[i + prefix.len()..]
            .split('`')
            .skip(1)
            .step_by(2)
            .collect()
    })
}

pub(super) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The span of the value of `key` in the table whose header or first key is at `from`: the
/// line `key = value` before the next table header. For errors about one key of a table.
pub(super) fn find_value_in(src: &str, from: usize, key: &str) -> Option<Range<usize>> {
    let from = from.min(src.len());
    // Back to the table's header (or the start of the file).
    let mut off = src[..from].rfind('\n').map_or(0, |i| i + 1);
    let header = |o: usize| {
        src[o..]
            .lines()
            .next()
            .is_some_and(|l| l.trim_start().starts_with('['))
    };
    while off > 0 && !header(off) {
        off = src[..off - 1].rfind('\n').map_or(0, |i| i + 1);
    }
    for (i, line) in src[off..].split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with('[') {
            return None;
        }
        if let Some(rest) = t.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            let eq = line.find('=').unwrap_or(0);
            let value = line[eq + 1..].len() - line[eq + 1..].trim_start().len();
            let start = off + eq + 1 + value;
            return Some(start..start + line.trim_end().len().saturating_sub(eq + 1 + value));
        }
        off += line.len();
    }
    None
}

/// The first line of `src` that starts with `key`, as a span: where an error about a
/// top-level duration key points when its value's own span is gone.
pub(super) fn find_key(src: &str, key: &str) -> Option<Range<usize>> {
    let mut off = 0;
    for line in src.split_inclusive('\n') {
        if line.trim_start().starts_with(key) {
            let i = off + line.find(key).unwrap_or(0);
            return Some(i..i + key.len());
        }
        off += line.len();
    }
    None
}
