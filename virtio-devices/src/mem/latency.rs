//! How long the device takes per request: count, total and maximum since the device was
//! created, and the median of the most recent [`LATENCY_WINDOW`] requests (for
//! `vm.counters` and the benchmark's "device time per request").
//!
//! Recording is O(1) (the device thread does it after each request); the median is computed
//! by whoever asks for a [`LatencySummary`], from a copy of the window.

/// How many recent samples the median is taken over.
pub const LATENCY_WINDOW: usize = 1024;

/// Request handling times, in nanoseconds.
#[derive(Clone, Debug)]
pub struct LatencyRecorder {
    count: u64,
    total_ns: u64,
    max_ns: u64,
    window: Box<[u64; LATENCY_WINDOW]>,
    /// Where the next sample goes in `window`.
    next: usize,
}

/// What [`LatencyRecorder::summary`] reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencySummary {
    /// Requests timed since the device was created.
    pub count: u64,
    /// Their total time (saturating).
    pub total_ns: u64,
    /// The longest one.
    pub max_ns: u64,
    /// The median of the last [`LATENCY_WINDOW`] (or fewer, if fewer were timed); 0 when none
    /// were. For an even number of samples, the lower middle one.
    pub median_ns: u64,
    /// How many samples the median is over.
    pub window: usize,
}

impl Default for LatencyRecorder {
    fn default() -> Self {
        LatencyRecorder {
            count: 0,
            total_ns: 0,
            max_ns: 0,
            window: Box::new([0; LATENCY_WINDOW]),
            next: 0,
        }
    }
}

impl LatencyRecorder {
    /// Nothing recorded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one request that took `ns` nanoseconds.
    pub fn record(&mut self, ns: u64) {
        self.count = self.count.saturating_add(1);
        self.total_ns = self.total_ns.saturating_add(ns);
        self.max_ns = self.max_ns.max(ns);
        self.window[self.next] = ns;
        self.next = (self.next + 1) % LATENCY_WINDOW;
    }

    /// The summary; sorts a copy of the window (a few microseconds).
    pub fn summary(&self) -> LatencySummary {
        let filled = usize::try_from(self.count)
            .unwrap_or(usize::MAX)
            .min(LATENCY_WINDOW);
        let mut recent = self.window[..filled].to_vec();
        let median_ns = if recent.is_empty() {
            0
        } else {
            let mid = (recent.len() - 1) / 2;
            *recent.select_nth_unstable(mid).1
        };
        LatencySummary {
            count: self.count,
            total_ns: self.total_ns,
            max_ns: self.max_ns,
            median_ns,
            window: filled,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty() {
        assert_eq!(LatencyRecorder::new().summary(), LatencySummary::default());
    }

    #[test]
    fn median_of_few() {
        let mut r = LatencyRecorder::new();
        for ns in [50, 10, 40, 20, 30] {
            r.record(ns);
        }
        let s = r.summary();
        assert_eq!((s.count, s.total_ns, s.max_ns), (5, 150, 50));
        assert_eq!((s.median_ns, s.window), (30, 5));
        r.record(60);
        assert_eq!(r.summary().median_ns, 30, "lower middle of six");
    }

    #[test]
    fn median_follows_the_recent_window() {
        let mut r = LatencyRecorder::new();
        for _ in 0..LATENCY_WINDOW {
            r.record(1_000_000);
        }
        for _ in 0..LATENCY_WINDOW / 2 + 1 {
            r.record(100);
        }
        let s = r.summary();
        assert_eq!(s.median_ns, 100);
        assert_eq!(s.max_ns, 1_000_000);
        assert_eq!(s.window, LATENCY_WINDOW);
        assert_eq!(s.count, (LATENCY_WINDOW + LATENCY_WINDOW / 2 + 1) as u64);
    }

    #[test]
    fn totals_saturate() {
        let mut r = LatencyRecorder::new();
        r.record(u64::MAX);
        r.record(5);
        assert_eq!(r.summary().total_ns, u64::MAX);
    }
}
