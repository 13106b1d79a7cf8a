//! The lab's fault knobs: make a replica **slow** (extra latency per request), **busy** (CPU
//! work per request), **failing** (a share of 500s) or **unhealthy** (`/healthz` fails), so a
//! student can see what each balancing algorithm does with a replica that is worse than its
//! siblings.
//!
//! Set at start by `LAB_DELAY`, `LAB_CPU`, `LAB_ERROR_RATE` and `LAB_UNHEALTHY` (or the file
//! keys `lab_delay`, ...), and at run time through `PUT /fault` ([`endpoint`]), which needs
//! the replica's `BALANCER_ADMIN_TOKEN`. The current knobs show in `/healthz`.
//!
//! What each knob touches, and why:
//! - delay, CPU and errors apply to every route but `/healthz` and `/fault`: they model the
//!   *application* going bad while its health check still passes (the gray failure that
//!   health checks miss and load-aware balancing exists for), and an error rate of 1.0 must
//!   not lock the operator out of `/fault`. Only `unhealthy` changes `/healthz`.
//! - The order is delay, then CPU, then the error decision: with only an error rate set the
//!   500s come back fast, the case that fools latency-based balancing.
//! - The CPU work spins on the worker thread for the given wall time, as a CPU-bound handler
//!   would: it competes for the host's cores, and it lengthens the response time that the
//!   load report (`crate::load`) turns into utilization.
//! - Errors are spread evenly, not drawn at random: with a rate of 0.2 exactly every fifth
//!   request fails, so short experiments and tests see the configured share.
//!
//! Each knob is its own atomic: a request reads them without a lock, and a change of several
//! knobs at once may be seen half-applied by requests already under way.

pub mod endpoint;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::Serialize;
use serde_json::json;

use crate::config::BadValue;
use crate::register::Token;
use crate::web::json_response;

/// Where the knobs are read and changed.
pub const PATH: &str = "/fault";
/// Set on the 500s the error knob makes, so they are told apart from real ones.
pub static X_LAB_FAULT: HeaderName = HeaderName::from_static("x-lab-fault");
/// Longest accepted delay: a minute is longer than any balancer's timeout.
pub const MAX_DELAY_MS: u32 = 60_000;
/// Longest accepted CPU work per request.
pub const MAX_CPU_MS: u32 = 1_000;
const PPM: u64 = 1_000_000;

/// The knobs' values, as `/healthz` and `/fault` show them.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Knobs {
    /// Extra latency per request, in milliseconds.
    pub delay_ms: u32,
    /// CPU work per request, in milliseconds of spinning.
    pub cpu_ms: u32,
    /// Share of requests answered 500, 0.0..=1.0.
    pub error_rate: f64,
    /// Whether `/healthz` fails.
    pub unhealthy: bool,
}

impl Knobs {
    /// Whether any knob is turned.
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

/// The knobs a replica runs with and the token that may change them. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Faults(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    delay_ms: AtomicU32,
    cpu_ms: AtomicU32,
    error_ppm: AtomicU32,
    unhealthy: AtomicBool,
    /// Requests seen while an error rate was set: the even spread counts along it.
    counted: AtomicU64,
    token: Option<Token>,
}

impl Faults {
    /// Knobs set to `knobs`; `token` may change them at run time (`None`: nobody may).
    pub fn new(knobs: Knobs, token: Option<Token>) -> Self {
        let faults = Self(Arc::new(Inner {
            token,
            ..Inner::default()
        }));
        faults.set(&knobs);
        faults
    }

    /// The current values.
    pub fn knobs(&self) -> Knobs {
        let i = &self.0;
        Knobs {
            delay_ms: i.delay_ms.load(Ordering::Relaxed),
            cpu_ms: i.cpu_ms.load(Ordering::Relaxed),
            error_rate: f64::from(i.error_ppm.load(Ordering::Relaxed)) / PPM as f64,
            unhealthy: i.unhealthy.load(Ordering::Relaxed),
        }
    }

    /// Whether `/healthz` should fail.
    pub fn unhealthy(&self) -> bool {
        self.0.unhealthy.load(Ordering::Relaxed)
    }

    fn set(&self, k: &Knobs) {
        let i = &self.0;
        i.delay_ms
            .store(k.delay_ms.min(MAX_DELAY_MS), Ordering::Relaxed);
        i.cpu_ms.store(k.cpu_ms.min(MAX_CPU_MS), Ordering::Relaxed);
        let ppm = (k.error_rate.clamp(0.0, 1.0) * PPM as f64).round() as u32;
        i.error_ppm.store(ppm, Ordering::Relaxed);
        i.unhealthy.store(k.unhealthy, Ordering::Relaxed);
    }

    fn token(&self) -> Option<&Token> {
        self.0.token.as_ref()
    }

    /// Whether the next request is one of the failing share.
    fn next_fails(&self) -> bool {
        let ppm = u64::from(self.0.error_ppm.load(Ordering::Relaxed));
        if ppm == 0 {
            return false;
        }
        spread_fails(self.0.counted.fetch_add(1, Ordering::Relaxed), ppm)
    }
}

/// Whether request number `n` fails when `ppm` per million do: the failures fall where the
/// running total `n × rate` crosses a whole number, so any run of requests has the share
/// give or take one.
fn spread_fails(n: u64, ppm: u64) -> bool {
    (n.wrapping_add(1)).wrapping_mul(ppm) / PPM > n.wrapping_mul(ppm) / PPM
}

/// Applies the knobs to every request but `/healthz` and `/fault` (see the module doc).
pub async fn inject(State(faults): State<Faults>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/healthz" || path == PATH {
        return next.run(req).await;
    }
    let i = &faults.0;
    let delay = i.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay.into())).await;
    }
    let cpu = i.cpu_ms.load(Ordering::Relaxed);
    if cpu > 0 {
        spin(Duration::from_millis(cpu.into()));
    }
    if faults.next_fails() {
        let mut res = json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"error": "injected fault: LAB_ERROR_RATE / error_rate of this replica"}),
        );
        res.headers_mut()
            .insert(X_LAB_FAULT.clone(), HeaderValue::from_static("error"));
        return res;
    }
    next.run(req).await
}

/// Keeps this thread's CPU busy for `d` of wall time.
fn spin(d: Duration) {
    let start = Instant::now();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while start.elapsed() < d {
        for _ in 0..256 {
            // xorshift: real work the optimizer cannot drop, thanks to black_box.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
        }
        std::hint::black_box(x);
    }
}

/// Accepted delays and CPU times, as `LAB_DELAY` and `LAB_CPU` name them.
const DELAY_EXPECTED: &str = "a duration in whole milliseconds from 0ms to 60s, such as 50ms";
const CPU_EXPECTED: &str = "a duration in whole milliseconds from 0ms to 1s, such as 5ms";
const RATE_EXPECTED: &str = "a share of requests from 0 to 1, such as 0.2";
const FLAG_EXPECTED: &str = "1, 0, true, false, yes, no, on or off";

fn whole_ms(d: &Duration, max_ms: u32) -> bool {
    d.subsec_nanos().is_multiple_of(1_000_000) && d.as_millis() <= u128::from(max_ms)
}

/// `parse_env` for `LAB_DELAY`.
pub fn parse_delay(s: &str) -> Result<Duration, BadValue> {
    crate::config::parse_duration(s)
        .ok()
        .filter(|d| whole_ms(d, MAX_DELAY_MS))
        .ok_or_else(|| BadValue::new(s, DELAY_EXPECTED))
}

/// `parse_env` for `LAB_CPU`.
pub fn parse_cpu(s: &str) -> Result<Duration, BadValue> {
    crate::config::parse_duration(s)
        .ok()
        .filter(|d| whole_ms(d, MAX_CPU_MS))
        .ok_or_else(|| BadValue::new(s, CPU_EXPECTED))
}

/// `parse_env` for `LAB_ERROR_RATE`.
pub fn parse_error_rate(s: &str) -> Result<f64, BadValue> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|r| (0.0..=1.0).contains(r))
        .ok_or_else(|| BadValue::new(s, RATE_EXPECTED))
}

/// `parse_env` for `LAB_UNHEALTHY`.
pub fn parse_flag(s: &str) -> Result<bool, BadValue> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(BadValue::new(s, FLAG_EXPECTED)),
    }
}

/// confique `validate` for `lab_delay` from a file.
pub fn check_delay(d: &Duration) -> Result<(), &'static str> {
    whole_ms(d, MAX_DELAY_MS)
        .then_some(())
        .ok_or(DELAY_EXPECTED)
}

/// confique `validate` for `lab_cpu` from a file.
pub fn check_cpu(d: &Duration) -> Result<(), &'static str> {
    whole_ms(d, MAX_CPU_MS).then_some(()).ok_or(CPU_EXPECTED)
}

/// confique `validate` for `lab_error_rate` from a file.
pub fn check_error_rate(r: &f64) -> Result<(), &'static str> {
    (0.0..=1.0).contains(r).then_some(()).ok_or(RATE_EXPECTED)
}

/// The knobs from config values already checked by the parsers above.
pub fn knobs_from(delay: Duration, cpu: Duration, error_rate: f64, unhealthy: bool) -> Knobs {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    Knobs {
        delay_ms: ms(delay),
        cpu_ms: ms(cpu),
        error_rate,
        unhealthy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_spread_to_the_exact_share() {
        let fails = |ppm| (0..1000).filter(|&n| spread_fails(n, ppm)).count();
        assert_eq!(fails(200_000), 200);
        assert_eq!(fails(PPM), 1000);
        assert_eq!(fails(1), 0);
        // Every fifth, not the first four.
        let first: Vec<bool> = (0..5).map(|n| spread_fails(n, 200_000)).collect();
        assert_eq!(first, [false, false, false, false, true]);
    }

    #[test]
    fn env_values_name_what_was_expected() {
        assert_eq!(parse_delay("50ms").unwrap(), Duration::from_millis(50));
        assert_eq!(parse_cpu("0s").unwrap(), Duration::ZERO);
        for (bad, parse) in [
            (
                "1.5ms",
                parse_delay as fn(&str) -> Result<Duration, BadValue>,
            ),
            ("2m", parse_delay),
            ("slow", parse_delay),
            ("2s", parse_cpu),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains(bad) && err.contains("whole milliseconds"),
                "{err}"
            );
        }
        assert_eq!(parse_error_rate("0.2").unwrap(), 0.2);
        for bad in ["1.5", "-0.1", "NaN", "20%"] {
            assert!(parse_error_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_flag("1").unwrap() && !parse_flag("off").unwrap());
        assert!(
            parse_flag("maybe")
                .unwrap_err()
                .to_string()
                .contains("maybe")
        );
    }

    #[test]
    fn knobs_round_trip_through_the_atomics() {
        let k = Knobs {
            delay_ms: 50,
            cpu_ms: 5,
            error_rate: 0.2,
            unhealthy: true,
        };
        assert_eq!(Faults::new(k, None).knobs(), k);
        assert!(!Faults::default().knobs().any());
    }
}
