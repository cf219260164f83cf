//! Text shaping shared by both faces (the TUI's columns, the CLI's tables).

/// Cut a string to `n` characters, marking the cut with `…`.
pub fn fit(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else if n == 0 {
        String::new()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// The last `n` non-empty lines of `text` (each without its trailing blanks), and how many
/// non-empty lines came before them: the end of a command's output, which says why it failed.
pub fn last_lines(text: &str, n: usize) -> (usize, Vec<&str>) {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .filter(|l| !l.trim().is_empty())
        .collect();
    let skip = lines.len().saturating_sub(n);
    (skip, lines[skip..].to_vec())
}
