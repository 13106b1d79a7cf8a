//! Per-member counters: atomics bumped on the request path, read by the admin page and metrics.
//!
//! Two latency views are kept. The lifetime histogram ([`MemberStats::latency_bucket`]) has the fixed
//! Prometheus buckets of [`LATENCY_BUCKETS_MS`]. The recent one ([`Recent`]) answers "p50/p95/p99
//! over the last [`WINDOW_SECS`] seconds" for the dashboard: a ring of per-second slots of
//! log-scale buckets (four per power of two, so a percentile is within ~10% of the truth).
//!
//! The write side stays a handful of relaxed atomic operations and never reads a clock: the
//! current second comes from [`coarse_second`], a global that one background thread advances.
//! The read side does the work (summing up to [`WINDOW_SECS`] slots).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::clock;

/// Upper bounds (ms) of the latency histogram buckets; the last bucket is +Inf.
pub(crate) const LATENCY_BUCKETS_MS: [u64; 12] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

/// Seconds of history the recent-latency percentiles cover.
pub(crate) const WINDOW_SECS: u64 = 10;

/// Slots in the ring: more than the window, so the slot being written is never one being read
/// as "old" and a slot is always reused at least a second after it left the window.
const SLOTS: usize = WINDOW_SECS as usize + 2;

/// Log-scale buckets: index 0 holds < 16 µs, then 4 per power of two up to 2^24 µs (~16.8 s),
/// and the last one everything above.
const SUB_BITS: u32 = 2;
const MIN_OCTAVE: u32 = 4;
const MAX_OCTAVE: u32 = 24;
/// Number of recent-latency buckets.
pub(crate) const RECENT_BUCKETS: usize = ((MAX_OCTAVE - MIN_OCTAVE) << SUB_BITS) as usize + 2;

/// How many copies of the counters a member keeps: each proxy worker thread writes its own
/// (threads beyond this share), so two cores never fight over one cache line per request.
const SHARDS: usize = 4;

std::thread_local! {
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes the calling thread write counter shard `n` (proxy workers call this once).
pub(crate) fn use_shard(n: usize) {
    SHARD.with(|s| s.set(n % SHARDS));
}

/// The counters one thread writes, alone on their cache lines.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    responses: [AtomicU64; 5],
    failures: AtomicU64,
    retries: AtomicU64,
    bytes_out: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS_MS.len() + 1],
    latency_sum_us: AtomicU64,
}

/// Counters for one member. Writers bump their thread's shard; readers sum the shards.
#[derive(Debug, Default)]
pub struct MemberStats {
    shards: [Shard; SHARDS],
    /// Latencies of the last [`WINDOW_SECS`] seconds, for percentiles.
    pub(crate) recent: Recent,
}

impl MemberStats {
    fn mine(&self) -> &Shard {
        &self.shards[SHARD.with(std::cell::Cell::get)]
    }

    fn sum(&self, f: impl Fn(&Shard) -> &AtomicU64) -> u64 {
        self.shards
            .iter()
            .map(|s| f(s).load(Ordering::Relaxed))
            .sum()
    }

    /// Records one response with its status and time to headers.
    pub(crate) fn record_response(&self, status: u16, micros: u64) {
        let shard = self.mine();
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        shard.responses[class].fetch_add(1, Ordering::Relaxed);
        let ms = micros / 1000;
        let bucket = LATENCY_BUCKETS_MS
            .iter()
            .position(|&b| ms < b)
            .unwrap_or(LATENCY_BUCKETS_MS.len());
        shard.latency[bucket].fetch_add(1, Ordering::Relaxed);
        shard.latency_sum_us.fetch_add(micros, Ordering::Relaxed);
        self.recent.record(coarse_second(), micros);
    }

    /// Counts an attempt that failed before a response (connect error, reset, timeout).
    pub(crate) fn add_failure(&self) {
        self.mine().failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an attempt on this member that retried a request failed elsewhere.
    pub(crate) fn add_retry(&self) {
        self.mine().retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts response body bytes sent to a client.
    pub(crate) fn add_bytes_out(&self, n: u64) {
        self.mine().bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// Responses of status class `i` (0 = 1xx ... 4 = 5xx).
    pub(crate) fn responses(&self, i: usize) -> u64 {
        self.sum(|s| &s.responses[i])
    }

    /// Total responses of every class.
    pub fn total_responses(&self) -> u64 {
        (0..5).map(|i| self.responses(i)).sum()
    }

    /// Attempts that failed before a response.
    pub fn failures(&self) -> u64 {
        self.sum(|s| &s.failures)
    }

    /// Retry attempts made on this member.
    pub fn retries(&self) -> u64 {
        self.sum(|s| &s.retries)
    }

    /// Response body bytes sent.
    pub(crate) fn bytes_out(&self) -> u64 {
        self.sum(|s| &s.bytes_out)
    }

    /// Responses in latency bucket `i` of [`LATENCY_BUCKETS_MS`] (the last one is +Inf).
    pub(crate) fn latency_bucket(&self, i: usize) -> u64 {
        self.sum(|s| &s.latency[i])
    }

    /// Sum of latencies in microseconds.
    pub(crate) fn latency_sum_us(&self) -> u64 {
        self.sum(|s| &s.latency_sum_us)
    }
}

/// One second of latencies.
#[derive(Debug)]
struct Slot {
    /// The second (of [`coarse_second`]) these counts belong to; `u64::MAX` = never used.
    second: AtomicU64,
    counts: [AtomicU64; RECENT_BUCKETS],
}

impl Default for Slot {
    fn default() -> Self {
        Slot {
            second: AtomicU64::new(u64::MAX),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A ring of per-second latency histograms covering the last [`WINDOW_SECS`] seconds.
#[derive(Debug)]
pub(crate) struct Recent {
    slots: [Slot; SLOTS],
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            slots: std::array::from_fn(|_| Slot::default()),
        }
    }
}

impl Recent {
    /// Counts one latency in second `now`.
    pub(crate) fn record(&self, now: u64, micros: u64) {
        let slot = &self.slots[(now % SLOTS as u64) as usize];
        if slot.second.load(Ordering::Relaxed) != now {
            // First response of a new second in this slot: whoever wins the swap clears it.
            // A count racing with the clearing may be lost; percentiles do not mind.
            if slot.second.swap(now, Ordering::Relaxed) != now {
                for c in &slot.counts {
                    c.store(0, Ordering::Relaxed);
                }
            }
        }
        slot.counts[recent_bucket(micros)].fetch_add(1, Ordering::Relaxed);
    }

    /// The latencies of the window ending at second `now` (inclusive).
    pub(crate) fn window(&self, now: u64) -> Window {
        let mut counts = [0u64; RECENT_BUCKETS];
        for slot in &self.slots {
            let s = slot.second.load(Ordering::Relaxed);
            if s <= now && now - s < WINDOW_SECS {
                for (sum, c) in counts.iter_mut().zip(&slot.counts) {
                    *sum += c.load(Ordering::Relaxed);
                }
            }
        }
        Window { counts }
    }

    /// The latencies of second `s` alone (empty once its slot was reused), for the
    /// dashboard's per-second chart.
    pub(crate) fn second(&self, s: u64) -> Window {
        let slot = &self.slots[(s % SLOTS as u64) as usize];
        let mut counts = [0u64; RECENT_BUCKETS];
        if slot.second.load(Ordering::Relaxed) == s {
            for (sum, c) in counts.iter_mut().zip(&slot.counts) {
                *sum = c.load(Ordering::Relaxed);
            }
        }
        Window { counts }
    }
}

/// Recent latencies summed over the window, ready for percentiles.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    counts: [u64; RECENT_BUCKETS],
}

impl Window {
    /// Adds another window's counts (several members into one pool's figure).
    pub(crate) fn add(&mut self, other: &Window) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
    }

    /// An empty window.
    pub(crate) fn empty() -> Self {
        Window {
            counts: [0; RECENT_BUCKETS],
        }
    }

    /// How many responses the window holds.
    pub(crate) fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q`-quantile (0..=1) in microseconds, interpolated inside its bucket; `None` when the
    /// window is empty.
    pub(crate) fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        // Rank of the wanted sample, 1-based: p50 of 1..=100 is the 50th.
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if seen + c >= rank {
                let (lo, hi) = bucket_bounds(i);
                let frac = (rank - seen) as f64 / c as f64;
                return Some(lo + (hi - lo) * frac);
            }
            seen += c;
        }
        None
    }
}

/// Index of the recent bucket for a latency.
fn recent_bucket(micros: u64) -> usize {
    if micros < 1 << MIN_OCTAVE {
        return 0;
    }
    let octave = 63 - micros.leading_zeros();
    if octave >= MAX_OCTAVE {
        return RECENT_BUCKETS - 1;
    }
    let sub = (micros >> (octave - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    (((octave - MIN_OCTAVE) << SUB_BITS) as u64 + sub) as usize + 1
}

/// Lower and upper bound (µs) of recent bucket `i`.
fn bucket_bounds(i: usize) -> (f64, f64) {
    if i == 0 {
        return (0.0, f64::from(1u32 << MIN_OCTAVE));
    }
    if i >= RECENT_BUCKETS - 1 {
        let top = (1u64 << MAX_OCTAVE) as f64;
        return (top, top);
    }
    let j = (i - 1) as u32;
    let octave = MIN_OCTAVE + (j >> SUB_BITS);
    let sub = u64::from(j & ((1 << SUB_BITS) - 1));
    let step = 1u64 << (octave - SUB_BITS);
    let lo = (1u64 << octave) + sub * step;
    (lo as f64, (lo + step) as f64)
}

static SECOND: AtomicU64 = AtomicU64::new(0);
static TICKER: OnceLock<()> = OnceLock::new();

/// The current second of the process clock, as last published by the stats clock thread
/// (started on first use). One relaxed load: cheap enough for every response.
pub(crate) fn coarse_second() -> u64 {
    TICKER.get_or_init(|| {
        SECOND.store(clock::now_ms() / 1000, Ordering::Relaxed);
        let spawned = std::thread::Builder::new()
            .name("balancer-stats-clock".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_millis(100));
                    SECOND.store(clock::now_ms() / 1000, Ordering::Relaxed);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no stats clock thread: recent latencies stay in one slot");
        }
    });
    SECOND.load(Ordering::Relaxed)
}

/// The second [`coarse_second`] would give now, read from the clock (for the read side).
pub(crate) fn current_second() -> u64 {
    coarse_second();
    clock::now_ms() / 1000
}

#[cfg(test)]
mod tests;
