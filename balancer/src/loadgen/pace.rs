//! Pacing of a rate-limited run: request `k` (0-based, counted over all connections) is due
//! `k / rate` seconds after the start. Connections take numbers from one shared counter, so
//! the rate holds however many there are; one that falls behind sends at once (no burst is
//! skipped, as wrk2 does: the schedule, not the connections, sets the rate). Pure.

use std::time::Duration;

/// A fixed-rate schedule.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pacer {
    rate: u32,
}

impl Pacer {
    /// A schedule of `rate` requests per second (at least 1).
    pub(super) fn new(rate: u32) -> Self {
        Pacer { rate: rate.max(1) }
    }

    /// When request `k` is due, from the start.
    pub(super) fn due(&self, k: u64) -> Duration {
        let rate = u64::from(self.rate);
        // Whole seconds and the rest apart, so nanoseconds never overflow.
        let secs = k / rate;
        let nanos = (k % rate) * 1_000_000_000 / rate;
        Duration::new(secs, nanos as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_spread_evenly_over_each_second() {
        let p = Pacer::new(4);
        let due: Vec<u64> = (0..6).map(|k| p.due(k).as_millis() as u64).collect();
        assert_eq!(due, [0, 250, 500, 750, 1000, 1250]);
        // A 3 s run sends 12: the 13th is due at its end.
        assert!(p.due(11) < Duration::from_secs(3));
        assert_eq!(p.due(12), Duration::from_secs(3));
    }

    #[test]
    fn a_high_rate_and_a_late_request_do_not_overflow() {
        let p = Pacer::new(100_000);
        assert_eq!(p.due(100_000 * 3600), Duration::from_secs(3600));
        assert_eq!(Pacer::new(0).due(1), Duration::from_secs(1));
    }
}
