//! The load report every response carries, for the balancer's load-aware algorithms: the ORCA
//! header `endpoint-load-metrics: TEXT application_utilization=..,rps_fractional=..,eps=..`
//! (the text form Envoy parses, gRFC A51's fields).
//!
//! # What the numbers mean
//!
//! - `rps_fractional`: responses per second over the last ~2 s (every route, `/healthz` too:
//!   the replica served them).
//! - `eps`: of those, the 5xx answers per second (4xx are the client's errors, not ours).
//! - `application_utilization`: the mean number of requests in flight over the same window,
//!   divided by `LOAD_CAPACITY`, the number this replica counts as fully used. The mean comes
//!   from Little's law: the sum of the response times of the requests that finished in the
//!   window, divided by the window's length.
//!
//! # Why in-flight requests and not measured CPU
//!
//! A replica made slow (waiting on a database, or the lab's `LAB_DELAY`) burns no CPU: its CPU
//! utilization looks as idle as its fast siblings', and gRFC A58's weight `qps / utilization`
//! would not move. Mean concurrency does move: by Little's law it is `rps × mean latency`, so
//! the balancer's weight `rps / (concurrency / capacity)` is `capacity / mean latency`, the
//! replica's real speed, whether the time goes to waiting or to computing (`LAB_CPU`'s spinning
//! lengthens the response time too, and shows). CPU figures would also need a host-wide view:
//! in the compose lab all replicas share the host's cores, so a process's CPU share says little
//! about its headroom. Capacity only scales the figure; replicas with the same capacity compare
//! by latency alone.
//!
//! # Cost
//!
//! Per request: two or three atomic adds into the current 200 ms bucket of a ring (no lock),
//! then a shared pointer load of the header value, cached. One request per 100 ms (whichever
//! wins a compare-and-swap) sums the ring and formats a new header value. A request counts in
//! the bucket where it finished, with its whole duration.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

use crate::config::BadValue;

/// The ORCA load report header (text form).
pub static ENDPOINT_LOAD_METRICS: HeaderName = HeaderName::from_static("endpoint-load-metrics");

/// `LOAD_CAPACITY` when unset: a round figure near what container platforms default to as a
/// replica's concurrency limit (Cloud Run's is 80). Only the ratio between replicas matters.
pub const DEFAULT_CAPACITY: u32 = 100;
/// Accepted capacities.
pub const CAPACITIES: std::ops::RangeInclusive<u32> = 1..=1_000_000;

/// Length of one bucket of the ring.
const BUCKET_US: u64 = 200_000;
/// Ten full buckets and the one filling: a window of 2.0 to 2.2 s. Short enough to follow a
/// knob turned at run time within seconds, long enough that a replica answering a few hundred
/// requests a second reports a steady figure.
const BUCKETS: usize = 11;
/// How stale the cached header may get.
const REFRESH_US: u64 = 100_000;
/// The high bits of each bucket word hold the bucket's index (mod 2^24, 39 days of buckets),
/// the low 40 bits its count; a word whose tag is not the index being added to is stale and
/// starts over. Keeping both in one word makes the roll-over a single compare-and-swap.
const COUNT_BITS: u32 = 40;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const TAG_MASK: u64 = (1 << 24) - 1;

/// Measures what this replica serves and keeps the header value current. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LoadMeter(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    start: Instant,
    capacity: f64,
    buckets: [Bucket; BUCKETS],
    next_refresh_us: AtomicU64,
    header: ArcSwap<HeaderValue>,
}

#[derive(Debug, Default)]
struct Bucket {
    requests: AtomicU64,
    errors: AtomicU64,
    busy_us: AtomicU64,
}

/// One load report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Mean requests in flight over the window, divided by the capacity.
    pub utilization: f64,
    /// Responses per second.
    pub rps: f64,
    /// 5xx responses per second.
    pub eps: f64,
}

impl Report {
    /// The header value: `TEXT application_utilization=U,rps_fractional=R,eps=E`.
    pub fn text(&self) -> String {
        let mut s = String::with_capacity(80);
        s.push_str("TEXT application_utilization=");
        push_number(&mut s, self.utilization);
        s.push_str(",rps_fractional=");
        push_number(&mut s, self.rps);
        s.push_str(",eps=");
        push_number(&mut s, self.eps);
        s
    }
}

impl LoadMeter {
    /// A meter counting `capacity` concurrent requests as full utilization.
    pub fn new(capacity: u32) -> Self {
        let idle = Report {
            utilization: 0.0,
            rps: 0.0,
            eps: 0.0,
        };
        Self(Arc::new(Inner {
            start: Instant::now(),
            capacity: f64::from(capacity.max(1)),
            buckets: Default::default(),
            next_refresh_us: AtomicU64::new(0),
            header: ArcSwap::from_pointee(header_value(&idle)),
        }))
    }

    /// Records a response that took `took` (`error`: a 5xx) and returns the header to send.
    pub fn record(&self, took: Duration, error: bool) -> HeaderValue {
        let now_us = self.now_us();
        self.record_at(now_us, micros(took), error);
        let due = self.0.next_refresh_us.load(Ordering::Relaxed);
        if now_us >= due
            && self
                .0
                .next_refresh_us
                .compare_exchange(
                    due,
                    now_us + REFRESH_US,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            self.0
                .header
                .store(Arc::new(header_value(&self.report_at(now_us))));
        }
        HeaderValue::clone(&self.0.header.load())
    }

    /// The report as of now.
    pub fn report(&self) -> Report {
        self.report_at(self.now_us())
    }

    fn now_us(&self) -> u64 {
        micros(self.0.start.elapsed())
    }

    fn record_at(&self, now_us: u64, busy_us: u64, error: bool) {
        let index = now_us / BUCKET_US;
        let bucket = &self.0.buckets[slot(index)];
        add(&bucket.requests, index, 1);
        add(&bucket.busy_us, index, busy_us);
        if error {
            add(&bucket.errors, index, 1);
        }
    }

    fn report_at(&self, now_us: u64) -> Report {
        let newest = now_us / BUCKET_US;
        let (mut requests, mut errors, mut busy_us) = (0, 0, 0);
        for index in newest.saturating_sub(BUCKETS as u64 - 1)..=newest {
            let bucket = &self.0.buckets[slot(index)];
            requests += read(&bucket.requests, index);
            errors += read(&bucket.errors, index);
            busy_us += read(&bucket.busy_us, index);
        }
        // The full buckets plus the part of the newest one that has elapsed. Before the first
        // window has passed this still divides by the whole window: the figures start low
        // rather than jumpy, and rps and utilization, scaled alike, keep their ratio (the
        // balancer's weight).
        let window_us = (BUCKETS as u64 - 1) * BUCKET_US + now_us % BUCKET_US;
        let secs = window_us as f64 / 1e6;
        Report {
            utilization: busy_us as f64 / window_us as f64 / self.0.capacity,
            rps: requests as f64 / secs,
            eps: errors as f64 / secs,
        }
    }
}

/// Adds the response's duration and status to `meter` and puts the load report on it.
pub async fn report(State(meter): State<LoadMeter>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let mut res = next.run(req).await;
    let value = meter.record(start.elapsed(), res.status().is_server_error());
    res.headers_mut()
        .insert(ENDPOINT_LOAD_METRICS.clone(), value);
    res
}

/// `parse_env` for `LOAD_CAPACITY`: a whole number of concurrent requests.
pub fn parse_capacity(s: &str) -> Result<u32, BadValue> {
    s.trim()
        .parse()
        .ok()
        .filter(|c| CAPACITIES.contains(c))
        .ok_or_else(|| BadValue::new(s, CAPACITY_EXPECTED))
}

/// What `LOAD_CAPACITY` accepts.
pub const CAPACITY_EXPECTED: &str =
    "a whole number of concurrent requests from 1 to 1000000, such as 100";

/// confique `validate` for the capacity from a file.
pub fn check_capacity(capacity: &u32) -> Result<(), &'static str> {
    if CAPACITIES.contains(capacity) {
        Ok(())
    } else {
        Err(CAPACITY_EXPECTED)
    }
}

fn slot(index: u64) -> usize {
    (index % BUCKETS as u64) as usize
}

fn micros(d: Duration) -> u64 {
    // A request that took less than a microsecond still occupied the replica.
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Adds `delta` to the count of bucket `index` in `word`, starting the bucket over when the
/// word still holds an older one. A writer so late that the slot already holds a newer bucket
/// drops its count rather than spoil that bucket.
fn add(word: &AtomicU64, index: u64, delta: u64) {
    let tag = index & TAG_MASK;
    let mut current = word.load(Ordering::Relaxed);
    loop {
        let held = current >> COUNT_BITS;
        let next = if held == tag {
            (tag << COUNT_BITS) | ((current & COUNT_MASK).saturating_add(delta)).min(COUNT_MASK)
        } else if held.wrapping_sub(tag) & TAG_MASK < (TAG_MASK >> 1) {
            return;
        } else {
            (tag << COUNT_BITS) | delta.min(COUNT_MASK)
        };
        match word.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(actual) => current = actual,
        }
    }
}

/// The count of bucket `index` in `word`; 0 if the word holds another bucket.
fn read(word: &AtomicU64, index: u64) -> u64 {
    let current = word.load(Ordering::Relaxed);
    if current >> COUNT_BITS == index & TAG_MASK {
        current & COUNT_MASK
    } else {
        0
    }
}

fn header_value(report: &Report) -> HeaderValue {
    // Only digits, letters, '.', ',', '=', '_' and a space: always a valid header value.
    HeaderValue::from_str(&report.text()).unwrap_or_else(|_| HeaderValue::from_static("TEXT"))
}

/// Four significant digits without an exponent, trailing zeros dropped: `0.004213`, `120.5`.
/// Fixed decimals would round a light load's utilization to 0, which a balancer must read as
/// "no report" (gRFC A58 ignores a zero utilization).
fn push_number(out: &mut String, x: f64) {
    use std::fmt::Write;
    if !x.is_finite() || x <= 0.0 {
        out.push('0');
        return;
    }
    let magnitude = x.log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 12) as usize;
    let start = out.len();
    let _ = write!(out, "{x:.decimals$}");
    if out[start..].contains('.') {
        let trimmed = out.trim_end_matches('0').trim_end_matches('.').len();
        out.truncate(trimmed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(x: f64) -> String {
        let mut s = String::new();
        push_number(&mut s, x);
        s
    }

    #[test]
    fn numbers_keep_four_significant_digits_without_exponent() {
        assert_eq!(text(0.0), "0");
        assert_eq!(text(120.5), "120.5");
        assert_eq!(text(2.0), "2");
        assert_eq!(text(0.42), "0.42");
        assert_eq!(text(0.000_041_234), "0.00004123");
        assert_eq!(text(12_345.6), "12346");
        assert_eq!(text(f64::NAN), "0");
    }

    #[test]
    fn the_header_has_the_three_fields_in_text_form() {
        let r = Report {
            utilization: 0.42,
            rps: 120.5,
            eps: 2.1,
        };
        assert_eq!(
            r.text(),
            "TEXT application_utilization=0.42,rps_fractional=120.5,eps=2.1"
        );
    }

    #[test]
    fn rates_cover_the_window_and_forget_older_buckets() {
        let meter = LoadMeter::new(10);
        // 40 requests of 50 ms each, one in ten a 5xx, spread over one second.
        for i in 0..40u64 {
            meter.record_at(i * 25_000, 50_000, i % 10 == 0);
        }
        let now = 1_000_000;
        let r = meter.report_at(now);
        let window = 2.0;
        assert!((r.rps - 40.0 / window).abs() < 1e-9, "{r:?}");
        assert!((r.eps - 4.0 / window).abs() < 1e-9, "{r:?}");
        // 40 × 50 ms busy over 2 s = 1 request in flight on average, of a capacity of 10.
        assert!((r.utilization - 0.1).abs() < 1e-9, "{r:?}");

        // Three seconds later the window holds none of them.
        let later = meter.report_at(now + 3_000_000);
        assert_eq!(later.rps, 0.0);
        assert_eq!(later.utilization, 0.0);
    }

    #[test]
    fn a_slot_reused_by_a_newer_bucket_starts_over() {
        let meter = LoadMeter::new(1);
        meter.record_at(0, 1, false);
        // Same slot, BUCKETS buckets later: the old count must not leak in.
        let reuse = BUCKETS as u64 * BUCKET_US;
        meter.record_at(reuse, 1, false);
        let r = meter.report_at(reuse);
        assert!((r.rps - 1.0 / 2.0).abs() < 1e-9, "{r:?}");
        // A late writer for the old bucket does not touch the newer one.
        meter.record_at(0, 1, false);
        assert_eq!(meter.report_at(reuse), r);
    }

    #[test]
    fn capacity_is_bounded_and_named_in_the_error() {
        assert_eq!(parse_capacity(" 100 ").unwrap(), 100);
        for bad in ["0", "-1", "lots", "2000000"] {
            let err = parse_capacity(bad).unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains("1 to 1000000"), "{err}");
        }
    }
}
