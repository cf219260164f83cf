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
