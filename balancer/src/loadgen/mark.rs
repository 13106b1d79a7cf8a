//! The mark on a load run's requests: `X-Lab-Load: <run id>` (16 hex digits). The request path
//! reads it only while a run is active (one relaxed load otherwise), and a request that
//! carries the active run's id gets `X-Upstream` on its response, which is how the load
//! generator learns which member served it without the header being on for every client.
//! The id is random, so an outside client cannot guess its way to member addresses.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{HeaderMap, HeaderName, HeaderValue};

/// `X-Lab-Load`.
pub(crate) static X_LAB_LOAD: HeaderName = HeaderName::from_static("x-lab-load");

/// The active run's id, 0 when none.
#[derive(Debug, Default)]
pub struct Mark(AtomicU64);

impl Mark {
    /// Run `id` (never 0) is active.
    pub(crate) fn set(&self, id: u64) {
        self.0.store(id, Ordering::Relaxed);
    }

    /// Run `id` is over (a newer run's id stays).
    pub(crate) fn clear(&self, id: u64) {
        let _ = self
            .0
            .compare_exchange(id, 0, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The active run's id if `headers` carry it.
    pub fn run_of(&self, headers: &HeaderMap) -> Option<u64> {
        let id = self.0.load(Ordering::Relaxed);
        if id == 0 {
            return None;
        }
        let v = headers.get(&X_LAB_LOAD)?;
        (parse(v) == Some(id)).then_some(id)
    }
}

/// The header value of run `id`.
pub(crate) fn header_value(id: u64) -> HeaderValue {
    HeaderValue::from_str(&format_id(id)).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// A run id as shown: 16 hex digits.
pub(crate) fn format_id(id: u64) -> String {
    RunId(id).to_string()
}

/// Displays a run id as 16 hex digits, without allocating (for the access log).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunId(pub u64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

fn parse(v: &HeaderValue) -> Option<u64> {
    let s = v.to_str().ok()?;
    if s.len() != 16 {
        return None;
    }
    u64::from_str_radix(s, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_active_runs_id_is_recognised() {
        let m = Mark::default();
        let mut h = HeaderMap::new();
        h.insert(&X_LAB_LOAD, header_value(0xabc));
        assert_eq!(m.run_of(&h), None, "no run active");
        m.set(0xabc);
        assert_eq!(m.run_of(&h), Some(0xabc));
        h.insert(&X_LAB_LOAD, header_value(0xabd));
        assert_eq!(m.run_of(&h), None, "another id");
        h.insert(&X_LAB_LOAD, HeaderValue::from_static("abc"));
        assert_eq!(m.run_of(&h), None, "not 16 digits");
        m.clear(0xdef);
        h.insert(&X_LAB_LOAD, header_value(0xabc));
        assert_eq!(m.run_of(&h), Some(0xabc), "another run's end leaves it");
        m.clear(0xabc);
        assert_eq!(m.run_of(&h), None);
    }
}
