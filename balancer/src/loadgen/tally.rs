//! What a load run counts: statuses, transport errors, the member that served each response
//! and a latency histogram fine enough to compare with an outside tool's percentiles
//! (64 buckets per power of two: a percentile is within ~1.6% of the truth). Each connection
//! keeps its own [`Tally`]; a report merges them. Pure.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Highest power of two kept apart (2^36 µs is ~19 hours); above it, the last bucket.
const MAX_OCTAVE: u32 = 36;
/// Buckets: values below [`SUB`] µs exactly, then [`SUB`] per octave.
const BUCKETS: usize = (SUB + (MAX_OCTAVE + 1 - SUB_BITS) as u64 * SUB) as usize;

/// Latencies in microseconds, log-linear buckets.
#[derive(Debug, Clone)]
pub(crate) struct Histogram {
    counts: Box<[u64; BUCKETS]>,
    total: u64,
    sum_us: u64,
    max_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new([0; BUCKETS]),
            total: 0,
            sum_us: 0,
            max_us: 0,
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB {
        return us as usize;
    }
    let octave = (63 - us.leading_zeros()).min(MAX_OCTAVE);
    if octave == MAX_OCTAVE && us >> octave > 1 {
        return BUCKETS - 1;
    }
    let shift = octave - SUB_BITS;
    let mantissa = (us >> shift) - SUB; // 0..SUB
    (SUB + u64::from(shift) * SUB + mantissa) as usize
}

/// The middle of bucket `i`, µs.
fn value(i: usize) -> f64 {
    let i = i as u64;
    if i < SUB {
        return i as f64;
    }
    let shift = (i - SUB) / SUB;
    let mantissa = (i - SUB) % SUB + SUB;
    let lo = mantissa << shift;
    lo as f64 + ((1u64 << shift) as f64 - 1.0) / 2.0
}

impl Histogram {
    /// Counts one latency.
    pub(crate) fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u128::from(u64::MAX)) as u64;
        self.counts[bucket(us)] += 1;
        self.total += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.max_us = self.max_us.max(us);
    }

    /// Adds another histogram's counts.
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
        self.max_us = self.max_us.max(other.max_us);
    }

    /// How many latencies.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// The `q`-quantile (0..=1), µs; `None` when empty. The sample of rank ⌈q·n⌉, as wrk and
    /// HdrHistogram report it.
    pub(crate) fn quantile_us(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(value(i).min(self.max_us as f64));
            }
        }
        Some(self.max_us as f64)
    }

    /// Percentiles, mean and max in milliseconds; `None` when empty.
    pub(crate) fn summary(&self) -> Option<LatencySummary> {
        let ms = |q| self.quantile_us(q).map(|us| us / 1000.0);
        Some(LatencySummary {
            p50_ms: ms(0.50)?,
            p95_ms: ms(0.95)?,
            p99_ms: ms(0.99)?,
            mean_ms: self.sum_us as f64 / self.total as f64 / 1000.0,
            max_ms: self.max_us as f64 / 1000.0,
        })
    }
}

/// Latency percentiles of a run (time from sending a request to its last body byte).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct LatencySummary {
    /// Median.
    pub p50_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Slowest.
    pub max_ms: f64,
}

/// The key under which responses the balancer made itself (no member answered) are counted.
pub(crate) const NO_MEMBER: &str = "-";

/// What one connection (or a merge of all) counted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tally {
    /// Responses by status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Requests that got no response (connect refused, reset, timeout).
    pub errors: u64,
    /// Responses by the member that served them (`X-Upstream`), [`NO_MEMBER`] for none.
    pub members: BTreeMap<String, u64>,
    /// Latency of answered requests.
    pub latency: Histogram,
    /// Each member's instance name (`X-Instance`), as its first response gave it.
    pub instances: BTreeMap<String, String>,
}

impl Tally {
    /// One response: its status, who served it (`None`: the balancer itself) with the
    /// instance name it gave, and its time.
    pub(crate) fn response(
        &mut self,
        status: u16,
        member: Option<&str>,
        instance: Option<&str>,
        took: Duration,
    ) {
        *self.statuses.entry(status).or_default() += 1;
        let key = member.unwrap_or(NO_MEMBER);
        // Looked up before inserting: a member's key is allocated once, not per response.
        match self.members.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                self.members.insert(key.to_owned(), 1);
                if let (Some(m), Some(i)) = (member, instance) {
                    self.instances.insert(m.to_owned(), i.to_owned());
                }
            }
        }
        self.latency.record(took);
    }

    /// One request that got no response.
    pub(crate) fn error(&mut self) {
        self.errors += 1;
    }

    /// Responses counted.
    pub(crate) fn responses(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Adds another tally.
    pub(crate) fn merge(&mut self, other: &Tally) {
        for (s, n) in &other.statuses {
            *self.statuses.entry(*s).or_default() += n;
        }
        for (m, n) in &other.members {
            *self.members.entry(m.clone()).or_default() += n;
        }
        self.errors += other.errors;
        self.latency.merge(&other.latency);
        for (m, i) in &other.instances {
            self.instances.entry(m.clone()).or_insert_with(|| i.clone());
        }
    }

    /// Each member's responses and share of all responses (0..=1), by address.
    pub(crate) fn shares(&self) -> BTreeMap<String, MemberShare> {
        let total = self.responses();
        self.members
            .iter()
            .map(|(m, &n)| {
                let share = if total == 0 {
                    0.0
                } else {
                    n as f64 / total as f64
                };
                (m.clone(), MemberShare { requests: n, share })
            })
            .collect()
    }
}

/// A member's part of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub(crate) struct MemberShare {
    /// Responses it served.
    pub requests: u64,
    /// Its fraction of all responses, 0..=1.
    pub share: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_within_two_percent() {
        let mut last = 0;
        for us in (1..5_000_000u64).step_by(997) {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let v = value(b);
            assert!(
                (v - us as f64).abs() <= us as f64 * 0.016 + 0.5,
                "{us} -> {v}"
            );
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
        assert!(bucket(1 << MAX_OCTAVE) < BUCKETS);
    }

    #[test]
    fn percentiles_are_the_samples_of_their_rank() {
        let mut h = Histogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.summary().unwrap();
        assert!((s.p50_ms - 50.0).abs() < 0.8, "{s:?}");
        assert!((s.p95_ms - 95.0).abs() < 1.5, "{s:?}");
        assert!((s.p99_ms - 99.0).abs() < 1.6, "{s:?}");
        assert_eq!(s.max_ms, 100.0);
        assert!((s.mean_ms - 50.5).abs() < 1e-9);
        assert!(Histogram::default().summary().is_none());
    }

    #[test]
    fn merged_tallies_add_up_and_shares_sum_to_one() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        let d = Duration::from_millis(1);
        a.response(200, Some("10.0.0.1:80"), Some("one"), d);
        a.response(200, Some("10.0.0.2:80"), None, d);
        b.response(200, Some("10.0.0.1:80"), Some("one"), d);
        b.response(503, None, None, d);
        b.error();
        a.merge(&b);
        assert_eq!(a.responses(), 4);
        assert_eq!(a.errors, 1);
        assert_eq!(a.statuses[&200], 3);
        let shares = a.shares();
        assert_eq!(shares["10.0.0.1:80"].requests, 2);
        assert_eq!(shares[NO_MEMBER].requests, 1);
        let sum: f64 = shares.values().map(|s| s.share).sum();
        assert!((sum - 1.0).abs() < 1e-9);
        assert_eq!(a.latency.count(), 4);
        assert_eq!(a.instances.len(), 1);
        assert_eq!(a.instances["10.0.0.1:80"], "one");
    }
}
