//! Writing the Prometheus text exposition format (0.0.4) by hand: label escaping, `# HELP` /
//! `# TYPE` heads, samples, and a lock-free latency histogram. Used by the embedded proxy's
//! `/metrics` and by cutover's own (`--metrics-listen`).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Upper bounds of the latency histograms' buckets, in microseconds (1 ms to 10 s).
pub const BUCKETS_US: [u64; 13] = [
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000,
];

/// A label value as the format wants it: `\`, `"` and newlines escaped.
pub fn esc(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// An exposition being written.
#[derive(Default)]
pub struct Out {
    pub text: String,
}

impl Out {
    pub fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }
    /// One sample; `labels` are (name, already escaped value).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{k}=\"{v}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }
}

/// A latency histogram: one atomic per bucket (not cumulative; made cumulative when written).
#[derive(Debug, Default)]
pub struct Histogram {
    /// `BUCKETS_US.len()` buckets, then `+Inf`.
    buckets: [AtomicU64; 14],
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = BUCKETS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(BUCKETS_US.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The `_bucket`, `_sum` and `_count` samples of `name` (its head is the caller's).
    /// `_count` is the sum of the buckets read, so the two always agree.
    pub fn write(&self, o: &mut Out, name: &str, labels: &[(&str, &str)]) {
        let mut cumulative = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            cumulative += b.load(Ordering::Relaxed);
            let le = match BUCKETS_US.get(i) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let mut l = labels.to_vec();
            l.push(("le", &le));
            o.sample(&format!("{name}_bucket"), &l, cumulative);
        }
        o.sample(
            &format!("{name}_sum"),
            labels,
            self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        );
        o.sample(&format!("{name}_count"), labels, cumulative);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(esc("x\ny"), "x\\ny");
    }

    #[test]
    fn latencies_land_in_the_first_bucket_that_holds_them() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(1_000));
        h.observe(Duration::from_micros(1_001));
        h.observe(Duration::from_secs(60));
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(load(&h.buckets[0]), 1);
        assert_eq!(load(&h.buckets[1]), 1);
        assert_eq!(load(&h.buckets[13]), 1);
        assert_eq!(load(&h.sum_us), 60_002_001);
        let mut o = Out::default();
        h.write(&mut o, "x_seconds", &[("slot", "blue")]);
        assert!(
            o.text
                .contains("x_seconds_bucket{slot=\"blue\",le=\"0.001\"} 1\n")
        );
        assert!(
            o.text
                .contains("x_seconds_bucket{slot=\"blue\",le=\"+Inf\"} 3\n")
        );
        assert!(o.text.contains("x_seconds_count{slot=\"blue\"} 3\n"));
    }
}
