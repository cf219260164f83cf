//! A canary analysis check answered by Prometheus: `[[environment.canary_query]]`.

use std::fmt;
use std::time::Duration;

/// One PromQL query judged at every analysis check of a canary step.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryQuery {
    /// The name the event pane and the audit use (`name`, or the query itself).
    pub name: String,
    /// The Prometheus server, e.g. `http://127.0.0.1:9090` (its `/api/v1/query` is asked).
    pub url: url::Url,
    /// PromQL; `{canary}` and `{stable}` are replaced by the slots' names.
    pub query: String,
    /// What every sample of the answer must satisfy.
    pub pass: Pass,
    /// How long one query may take; a query that does not answer in time fails the check.
    pub timeout: Duration,
}

impl CanaryQuery {
    /// The query as sent, with the slots' names in.
    pub fn text(&self, canary: &str, stable: &str) -> String {
        self.query
            .replace("{canary}", canary)
            .replace("{stable}", stable)
    }
}

/// `< 0.01`, `<= 0.5`, `> 0`, `>= 1`, `== 1`, `!= 0`: a comparison with a number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pass {
    pub op: Cmp,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

impl Cmp {
    const ALL: [(Cmp, &'static str); 6] = [
        (Cmp::Le, "<="),
        (Cmp::Ge, ">="),
        (Cmp::Eq, "=="),
        (Cmp::Ne, "!="),
        (Cmp::Lt, "<"),
        (Cmp::Gt, ">"),
    ];
    fn symbol(self) -> &'static str {
        Cmp::ALL
            .iter()
            .find(|(c, _)| *c == self)
            .map_or("?", |(_, s)| s)
    }
}

impl Pass {
    /// Whether `v` passes. NaN (a rate over no requests, 0/0) passes nothing.
    pub fn holds(&self, v: f64) -> bool {
        match self.op {
            Cmp::Lt => v < self.value,
            Cmp::Le => v <= self.value,
            Cmp::Gt => v > self.value,
            Cmp::Ge => v >= self.value,
            Cmp::Eq => v == self.value,
            Cmp::Ne => v != self.value && !v.is_nan(),
        }
    }
}

impl std::str::FromStr for Pass {
    type Err = String;
    fn from_str(s: &str) -> Result<Pass, String> {
        let s = s.trim();
        let (op, rest) = Cmp::ALL
            .iter()
            .find_map(|(c, sym)| s.strip_prefix(sym).map(|rest| (*c, rest)))
            .ok_or_else(|| {
                format!("`{s}` is not a comparison: write `< 0.01` (or <=, >, >=, ==, !=)")
            })?;
        let value: f64 = rest
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite())
            .ok_or_else(|| format!("`{}` in `{s}` is not a number", rest.trim()))?;
        Ok(Pass { op, value })
    }
}

impl fmt::Display for Pass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.op.symbol(), self.value)
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_reads_each_comparison_and_refuses_the_rest() {
        for (text, v, holds) in [
            ("< 0.01", 0.005, true),
            ("<0.01", 0.01, false),
            ("<= 0.01", 0.01, true),
            ("> 0", 0.0, false),
            (">= 1", 1.0, true),
            ("== 1", 1.0, true),
            ("!= 0", 0.0, false),
            ("< 0.01", f64::NAN, false),
            ("!= 0", f64::NAN, false),
        ] {
            let p: Pass = text.parse().expect(text);
            assert_eq!(p.holds(v), holds, "{text} on {v}");
        }
        assert_eq!(
            "<= 0.5".parse::<Pass>().expect("parse").to_string(),
            "<= 0.5"
        );
        for bad in ["0.01", "< low", "=< 1", "< NaN", ""] {
            assert!(bad.parse::<Pass>().is_err(), "{bad}");
        }
    }
}
