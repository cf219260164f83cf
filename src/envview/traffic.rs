//! A slot's user traffic from the routers' own counters: rates between two readings, summed
//! over a fleet's routers, with cutover's own probes taken off.

use super::*;

/// Requests and errors per second on one slot between two router readings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficSample {
    /// When the later of the two readings was taken.
    pub at: SystemTime,
    pub rps: f64,
    /// Errors per second: what the router counts as errors (5xx answers, failed connections).
    pub eps: f64,
    /// The window the rates are over, and the user requests and errors counted in it.
    pub(crate) window: Duration,
    pub(crate) requests: u64,
    pub(crate) errors: u64,
}

impl TrafficSample {
    pub(crate) fn new(
        at: SystemTime,
        window: Duration,
        requests: u64,
        errors: u64,
    ) -> TrafficSample {
        let secs = window.as_secs_f64();
        TrafficSample {
            at,
            rps: requests as f64 / secs,
            eps: errors as f64 / secs,
            window,
            requests,
            errors,
        }
    }
}

/// What a change of a router's rates does to the chart of their sum.
#[derive(Debug, Clone, Copy)]
enum Sum {
    /// A router's reading at this time gave new rates: chart the sum as of then.
    New(SystemTime),
    /// A router's newest rates were corrected, or a router was lost (its last rates are
    /// old news): the newest sum is redone from the routers still read.
    Redo,
    /// Nothing new to chart.
    Keep,
}

/// A slot's user traffic as the router counts it, turned into rates by the App.
///
/// In a fleet each router carries part of the slot's traffic: each router's counters are
/// turned into rates on their own (in `parts`, by router), and the slot's figures are their sum
/// over the routers that count requests and were read; its latency is the slowest router's.
///
/// The public and preview URL probes of cutover go through the router and are counted there;
/// they are taken off again here (each probe answer is a debt on the slot that answered it), so
/// what is shown is user traffic only. Slot probes go to the slot's address and never reach the
/// router.
#[derive(Debug, Clone, Default)]
pub struct SlotTraffic {
    /// Rates of the last [`TRAFFIC_WINDOW`], oldest first.
    pub history: VecDeque<TrafficSample>,
    /// In-flight requests or sessions, as of the last reading.
    pub in_flight: Option<u64>,
    /// The router's own average latency for the slot, when it has one (in a fleet, the
    /// highest of the routers').
    pub latency_ms: Option<u64>,
    /// The router's p50 and p99 for the slot over its last few seconds, when it keeps them (in
    /// a fleet, those of the router with the highest p99).
    pub percentiles: Option<crate::model::Percentiles>,
    /// Whether the router counts this slot's requests at all.
    pub counted: bool,
    /// Whether it counts their errors (Apache's balancer-manager does not).
    pub errors_counted: bool,
    /// The router did not answer the last reading: the newest rates are old news.
    pub stale: bool,
    /// (when, requests, errors) of the previous reading.
    pub(crate) last: Option<(SystemTime, u64, u64)>,
    /// cutover's own probe requests (and failed ones) not yet taken off the counters.
    pub(crate) probe_debt: (u64, u64),
    /// Each router's own readings and rates, by the router's index in the environment.
    pub(crate) parts: Vec<SlotTraffic>,
}

impl SlotTraffic {
    /// The newest rates.
    pub fn current(&self) -> Option<&TrafficSample> {
        self.history.back()
    }

    /// The share of the newest requests that failed, when there were requests.
    pub fn error_rate(&self) -> Option<f64> {
        self.current()
            .filter(|s| s.rps > 0.0)
            .map(|s| (s.eps / s.rps).min(1.0))
    }

    /// Take a router reading: rates since the previous one, minus cutover's own probes.
    pub(crate) fn read(&mut self, route: Option<&crate::model::SlotRoute>, at: SystemTime) {
        self.stale = false;
        self.in_flight = route.and_then(|r| r.sessions);
        self.latency_ms = route.and_then(|r| r.latency_ms);
        self.percentiles = route.and_then(|r| r.percentiles);
        let Some(requests) = route.and_then(|r| r.requests) else {
            self.counted = false;
            self.last = None;
            self.history.clear();
            return;
        };
        self.counted = true;
        self.errors_counted = route.is_some_and(|r| r.errors.is_some());
        let errors = route.and_then(|r| r.errors).unwrap_or(0);
        if let Some((t, r0, e0)) = self.last
            && let Ok(dt) = at.duration_since(t)
            && !dt.is_zero()
        {
            // A counter that went back means the proxy restarted: count from zero.
            let mut dr = if requests >= r0 {
                requests - r0
            } else {
                requests
            };
            let mut de = if errors >= e0 { errors - e0 } else { errors };
            let taken = dr.min(self.probe_debt.0);
            dr -= taken;
            self.probe_debt.0 -= taken;
            let taken = de.min(self.probe_debt.1);
            de -= taken;
            self.probe_debt.1 -= taken;
            self.history.push_back(TrafficSample::new(at, dt, dr, de));
            while self
                .history
                .front()
                .is_some_and(|s| at.duration_since(s.at).unwrap_or_default() > TRAFFIC_WINDOW)
            {
                self.history.pop_front();
            }
        }
        if self.last.is_none_or(|(t, _, _)| at > t) {
            self.last = Some((at, requests, errors));
        }
    }

    /// The router did not answer: the rates stop until it does (from a fresh baseline, so
    /// a restarted proxy is not read as a burst).
    pub(crate) fn lost(&mut self) {
        self.stale = true;
        self.last = None;
        self.in_flight = None;
        self.probe_debt = (0, 0);
    }

    /// One of cutover's probes, started at `started`, went through the router to this slot.
    /// Started after the last reading, the next reading counts it: it is owed. Started
    /// before, the last reading (read while the probe was answered) counted it already: it
    /// comes off the newest rates, or, before the first rates, off nothing.
    ///
    /// In a fleet, a probe started before the last reading of every router that counts was
    /// counted by one of those readings; started after any of them, the next readings owe it.
    pub(crate) fn probed(&mut self, started: SystemTime, failed: bool) {
        let read: Vec<usize> = (0..self.parts.len())
            .filter(|&i| self.parts[i].counted && !self.parts[i].stale)
            .collect();
        let counted_already = !read.is_empty()
            && read
                .iter()
                .all(|&i| self.parts[i].last.is_some_and(|(t, _, _)| started < t));
        if counted_already {
            if read.iter().any(|&i| self.parts[i].unprobe(started, failed)) {
                self.combine(Sum::Redo);
            }
            return;
        }
        self.probe_debt.0 = (self.probe_debt.0 + 1).min(PROBE_DEBT_CAP);
        if failed {
            self.probe_debt.1 = (self.probe_debt.1 + 1).min(PROBE_DEBT_CAP);
        }
    }

    /// Take a probe started at `started` off this router's newest rates, when its last
    /// reading counted it: whether it did.
    fn unprobe(&mut self, started: SystemTime, failed: bool) -> bool {
        let Some((t, _, _)) = self.last else {
            return false;
        };
        if let Some(s) = self.history.back_mut()
            && s.at == t
            && started < t
            && t.duration_since(started).unwrap_or_default() <= s.window
            && s.requests > 0
        {
            let errors = if failed {
                s.errors.saturating_sub(1)
            } else {
                s.errors
            };
            *s = TrafficSample::new(s.at, s.window, s.requests - 1, errors);
            return true;
        }
        false
    }

    /// Take router `router`'s reading (of the `routers` of the environment): its rates since
    /// its previous reading, summed with the other routers' newest ones.
    pub(crate) fn read_router(
        &mut self,
        router: usize,
        routers: usize,
        route: Option<&crate::model::SlotRoute>,
        at: SystemTime,
    ) {
        self.parts
            .resize_with(routers.max(router + 1), SlotTraffic::default);
        let part = &mut self.parts[router];
        let before = part.current().map(|c| c.at);
        // The probes owed are owed by whichever router counted them: the next reading with
        // requests to spare pays them.
        part.probe_debt = std::mem::take(&mut self.probe_debt);
        part.read(route, at);
        self.probe_debt = std::mem::take(&mut part.probe_debt);
        let fresh = part.current().map(|c| c.at) != before;
        self.combine(if fresh { Sum::New(at) } else { Sum::Keep });
    }

    /// Router `router` did not answer: its share stops until it does; the others' go on.
    pub(crate) fn lost_router(&mut self, router: usize, routers: usize) {
        self.parts
            .resize_with(routers.max(router + 1), SlotTraffic::default);
        self.parts[router].lost();
        self.combine(Sum::Redo);
    }

    /// The slot's figures from its routers' (see the type's doc), and what to chart.
    fn combine(&mut self, chart: Sum) {
        let counting: Vec<&SlotTraffic> = self.parts.iter().filter(|p| p.counted).collect();
        let read: Vec<&SlotTraffic> = counting.iter().copied().filter(|p| !p.stale).collect();
        self.counted = !counting.is_empty();
        self.errors_counted = self.counted && counting.iter().all(|p| p.errors_counted);
        self.stale = self.counted && read.is_empty();
        if !self.counted {
            self.history.clear();
        }
        if self.stale {
            self.probe_debt = (0, 0);
        }
        self.in_flight = read.iter().filter_map(|p| p.in_flight).reduce(|a, b| a + b);
        self.latency_ms = read.iter().filter_map(|p| p.latency_ms).max();
        self.percentiles = read
            .iter()
            .filter_map(|p| p.percentiles)
            .max_by_key(|p| (p.p99_us, p.p50_us));
        // The sum, once every router read has rates (right after a start, one that has read
        // once only would be missing from it).
        let currents: Option<Vec<&TrafficSample>> = read.iter().map(|p| p.current()).collect();
        let Some(currents) = currents.filter(|c| !c.is_empty()) else {
            return;
        };
        let new = match chart {
            Sum::Keep => return,
            Sum::New(at) => Some(at),
            Sum::Redo => None,
        };
        let mut total = TrafficSample {
            at: new.unwrap_or(SystemTime::UNIX_EPOCH),
            rps: 0.0,
            eps: 0.0,
            window: Duration::ZERO,
            requests: 0,
            errors: 0,
        };
        for c in &currents {
            total.rps += c.rps;
            total.eps += c.eps;
            total.requests += c.requests;
            total.errors += c.errors;
            if new == Some(c.at) {
                total.window = c.window;
            }
        }
        match new {
            Some(at) => {
                self.history.push_back(total);
                while self
                    .history
                    .front()
                    .is_some_and(|s| at.duration_since(s.at).unwrap_or_default() > TRAFFIC_WINDOW)
                {
                    self.history.pop_front();
                }
            }
            None => {
                if let Some(last) = self.history.back_mut() {
                    *last = TrafficSample {
                        at: last.at,
                        window: last.window,
                        ..total
                    };
                }
            }
        }
    }
}
