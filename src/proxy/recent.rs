//! Per-slot latency percentiles over the last few seconds, for the traffic view (`GET /state`
//! gives p50 and p99 per slot; `/metrics` gives them as gauges beside the cumulative histogram).
//!
//! A ring of [`WINDOWS`] sub-windows of [`TICK`] each, every one a fixed log-linear histogram
//! of atomics (8 buckets per power of two of microseconds: a bucket is at most 12.5 % wide).
//! A request adds one to one bucket: a clock read it already makes, one load and one
//! `fetch_add`, no lock. The first request of a new tick claims the oldest sub-window with a
//! compare-exchange and zeroes it; a request that lands in the sub-window while it is being
//! zeroed may be lost, which only thins the sample. Readers (the admin API, off the request
//! path) sum the sub-windows of the last [`WINDOWS`] ticks: the current, partial one and the
//! full ones before it, so the percentiles cover the last 10 to 12 seconds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::model::Percentiles;

/// One sub-window.
pub(crate) const TICK: Duration = Duration::from_secs(2);
/// Sub-windows kept (and read): the current one and the ones before it.
pub(crate) const WINDOWS: usize = 6;
/// Buckets per power of two, as bits.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Exact below `2 * SUB` µs, then `SUB` per power of two up to 2^27 µs (134 s); longer
/// lands in the last bucket.
const BUCKETS: usize = 200;

/// The bucket of a time of `us` microseconds.
fn bucket(us: u64) -> usize {
    if us < 2 * SUB {
        return us as usize;
    }
    let msb = 63 - us.leading_zeros();
    let sub = (us >> (msb - SUB_BITS)) & (SUB - 1);
    let i = SUB * u64::from(msb - SUB_BITS + 1) + sub;
    (i as usize).min(BUCKETS - 1)
}

/// The largest time, in microseconds, that lands in bucket `i`.
fn upper(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let (k, sub) = (i / SUB, i % SUB);
    let msb = k + u64::from(SUB_BITS) - 1;
    ((SUB + sub + 1) << (msb - u64::from(SUB_BITS))) - 1
}

struct Window {
    /// The tick this sub-window counts (1-based; 0: never used).
    tick: AtomicU64,
    counts: [AtomicU64; BUCKETS],
}

/// One slot's recent latencies.
pub(crate) struct RecentLatency {
    start: Instant,
    windows: [Window; WINDOWS],
}

impl Default for RecentLatency {
    fn default() -> Self {
        RecentLatency {
            start: Instant::now(),
            windows: std::array::from_fn(|_| Window {
                tick: AtomicU64::new(0),
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
        }
    }
}

impl RecentLatency {
    fn tick(&self, now: Instant) -> u64 {
        let ms = now.saturating_duration_since(self.start).as_millis();
        u64::try_from(ms / TICK.as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Count an answer that took `took`, seen at `now`.
    pub fn record(&self, took: Duration, now: Instant) {
        let tick = self.tick(now);
        let w = &self.windows[(tick % WINDOWS as u64) as usize];
        let seen = w.tick.load(Ordering::Acquire);
        if seen != tick {
            if seen > tick {
                return; // a straggler: its sub-window already counts a later tick
            }
            if w.tick
                .compare_exchange(seen, tick, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                for c in &w.counts {
                    c.store(0, Ordering::Relaxed);
                }
            }
        }
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        w.counts[bucket(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// p50 and p99 of the answers of the last [`WINDOWS`] ticks as of `now`; `None` when
    /// there were none.
    pub fn percentiles(&self, now: Instant) -> Option<Percentiles> {
        let tick = self.tick(now);
        let mut sum = [0u64; BUCKETS];
        for w in &self.windows {
            let t = w.tick.load(Ordering::Acquire);
            if t == 0 || t > tick || t + WINDOWS as u64 <= tick {
                continue;
            }
            for (s, c) in sum.iter_mut().zip(&w.counts) {
                *s += c.load(Ordering::Relaxed);
            }
        }
        let n: u64 = sum.iter().sum();
        if n == 0 {
            return None;
        }
        // The value at rank ceil(q * n), rounded up to its bucket's top.
        let at = |q: f64| {
            let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
            let mut seen = 0;
            for (i, c) in sum.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return upper(i);
                }
            }
            upper(BUCKETS - 1)
        };
        Some(Percentiles {
            p50_us: at(0.50),
            p99_us: at(0.99),
            answers: n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_at_most_an_eighth_wide() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(15), 15);
        assert_eq!(bucket(16), 16);
        let mut prev_top = None;
        for i in 0..BUCKETS - 1 {
            let top = upper(i);
            if let Some(p) = prev_top {
                assert_eq!(bucket(p + 1), i, "bucket {i} starts after {p}");
            }
            assert_eq!(bucket(top), i, "the top of bucket {i} ({top}) lands in it");
            assert_eq!(bucket(top + 1), i + 1);
            let low = prev_top.map_or(0, |p| p + 1);
            assert!(
                low < 16 || (top - low + 1) * 8 <= low,
                "bucket {i} [{low}, {top}] is too wide"
            );
            prev_top = Some(top);
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert!(upper(BUCKETS - 1) > 120_000_000, "two minutes fit");
    }

    #[test]
    fn percentiles_of_a_slow_tail() {
        let r = RecentLatency::default();
        let now = r.start;
        for _ in 0..980 {
            r.record(Duration::from_millis(2), now);
        }
        for _ in 0..20 {
            r.record(Duration::from_millis(300), now);
        }
        let p = r.percentiles(now).expect("answers");
        assert_eq!(p.answers, 1000);
        assert!((2_000..2_250).contains(&p.p50_us), "{p:?}");
        assert!((300_000..337_500).contains(&p.p99_us), "{p:?}");
    }

    /// What a request pays: `cargo test --release --lib -- --ignored --nocapture
    /// recent::tests::cost`.
    #[test]
    #[ignore]
    fn cost_of_a_record_on_the_request_path() {
        const N: u32 = 5_000_000;
        let r = std::sync::Arc::new(RecentLatency::default());
        let t = Instant::now();
        for _ in 0..N {
            std::hint::black_box(Instant::now());
        }
        let clock = t.elapsed().as_nanos() as f64 / f64::from(N);
        println!("a clock read alone (the request path makes it anyway): {clock:.1} ns");
        for threads in [1u32, 2] {
            let t = Instant::now();
            std::thread::scope(|s| {
                for k in 0..threads {
                    let r = r.clone();
                    s.spawn(move || {
                        for i in 0..N {
                            let now = Instant::now();
                            r.record(Duration::from_micros(u64::from(i % 5_000 + k)), now);
                        }
                    });
                }
            });
            // Each thread made N records in that time: what one request waited for.
            let per = t.elapsed().as_nanos() as f64 / f64::from(N);
            println!(
                "{threads} thread(s) on one slot: {per:.1} ns per record (a clock read included)"
            );
        }
        let t = Instant::now();
        let p = r.percentiles(Instant::now());
        println!("one read of the percentiles: {:?} ({p:?})", t.elapsed());
    }

    #[test]
    fn old_ticks_drop_out_and_a_reused_sub_window_starts_from_zero() {
        let r = RecentLatency::default();
        let t0 = r.start;
        r.record(Duration::from_millis(500), t0);
        let later = |ticks: u32| t0 + TICK * ticks;
        assert!(r.percentiles(later(WINDOWS as u32 - 1)).is_some());
        assert_eq!(
            r.percentiles(later(WINDOWS as u32)),
            None,
            "out of the window"
        );
        // The same sub-window, reused by a later tick, counts only the new answer.
        r.record(Duration::from_millis(1), later(WINDOWS as u32));
        let p = r.percentiles(later(WINDOWS as u32)).expect("one answer");
        assert_eq!(p.answers, 1);
        assert!(p.p99_us < 1_200, "{p:?}");
        // A straggler from the old tick is not counted in the new one.
        r.record(Duration::from_secs(9), t0);
        assert_eq!(
            r.percentiles(later(WINDOWS as u32)).map(|p| p.answers),
            Some(1)
        );
    }
}
