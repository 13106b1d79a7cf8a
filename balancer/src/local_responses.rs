//! Responses the balancer made itself (no member answered), counted by pool and status for
//! `/metrics`.
//!
//! Counting is one relaxed atomic add: a 503 storm must not serialize the proxy workers on a
//! lock. The statuses form a closed set ([`CODES`]), so each pool has a fixed array of counters.
//! The list of pools only grows (a pool a reload removes keeps its series, as Prometheus
//! counters must), and the control task adds a pool before publishing the snapshot that names
//! it, so the request path always finds the pool it routed to without taking a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

/// Every status the balancer answers with itself, ascending: the [`crate::error::ProxyError`]
/// statuses and hyper's own 400, 414 and 431 for a head it could not parse.
pub(crate) const CODES: [u16; 9] = [400, 404, 408, 413, 414, 431, 502, 503, 504];

/// The pool label of a response made before any route matched.
pub(crate) const UNROUTED: &str = "-";

/// The counters of one pool, one per status of [`CODES`].
#[derive(Debug)]
struct PoolCounts {
    pool: Arc<str>,
    by_code: [AtomicU64; CODES.len()],
}

impl PoolCounts {
    fn new(pool: &str) -> Self {
        PoolCounts {
            pool: pool.into(),
            by_code: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// One non-zero counter, as `/metrics` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalCount {
    /// Pool name, or [`UNROUTED`].
    pub(crate) pool: Arc<str>,
    /// Status code.
    pub(crate) code: u16,
    /// Responses since start.
    pub(crate) count: u64,
}

/// Local responses of every pool seen since start.
#[derive(Debug)]
pub(crate) struct LocalResponses {
    pools: ArcSwap<Vec<Arc<PoolCounts>>>,
}

impl Default for LocalResponses {
    fn default() -> Self {
        LocalResponses {
            pools: ArcSwap::from_pointee(vec![Arc::new(PoolCounts::new(UNROUTED))]),
        }
    }
}

/// The index of `code` in [`CODES`].
fn slot(code: u16) -> Option<usize> {
    CODES.binary_search(&code).ok()
}

impl LocalResponses {
    /// Makes sure every pool of `names` has counters (control task, before a publish).
    pub(crate) fn add_pools<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        for name in names {
            if !self.pools.load().iter().any(|p| &*p.pool == name) {
                self.add(name);
            }
        }
    }

    fn add(&self, name: &str) {
        self.pools.rcu(|pools| {
            let mut next = Vec::clone(pools);
            if !next.iter().any(|p| &*p.pool == name) {
                next.push(Arc::new(PoolCounts::new(name)));
            }
            next
        });
    }

    /// Counts a response with `status` made for `pool` ([`UNROUTED`] before routing).
    pub(crate) fn count(&self, pool: &str, status: u16) {
        // Every status made locally is in CODES (unit-tested below).
        let Some(i) = slot(status) else {
            return;
        };
        if let Some(p) = self.pools.load().iter().find(|p| &*p.pool == pool) {
            p.by_code[i].fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Not reached: every routed pool was added before its snapshot was published.
        self.add(pool);
        self.count(pool, status);
    }

    /// The non-zero counters, by pool name then status.
    pub(crate) fn snapshot(&self) -> Vec<LocalCount> {
        let pools = self.pools.load();
        let mut sorted: Vec<&Arc<PoolCounts>> = pools.iter().collect();
        sorted.sort_by(|a, b| a.pool.cmp(&b.pool));
        sorted
            .into_iter()
            .flat_map(|p| {
                CODES.iter().zip(&p.by_code).filter_map(|(code, n)| {
                    let count = n.load(Ordering::Relaxed);
                    (count > 0).then(|| LocalCount {
                        pool: Arc::clone(&p.pool),
                        code: *code,
                        count,
                    })
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProxyError;

    #[test]
    fn every_status_the_balancer_makes_has_a_counter() {
        let errors = [
            ProxyError::BadRequest,
            ProxyError::RequestTimeout,
            ProxyError::BodyTooLarge,
            ProxyError::NoRoute,
            ProxyError::NoBackend,
            ProxyError::UpstreamFailed,
            ProxyError::UpstreamTimeout,
        ];
        for e in errors {
            assert!(slot(e.status().as_u16()).is_some(), "{e:?}");
        }
        for parser in [400, 414, 431] {
            assert!(slot(parser).is_some(), "{parser}");
        }
        assert!(CODES.is_sorted(), "slot() searches them");
    }

    #[test]
    fn counts_come_out_by_pool_then_status_without_zeros() {
        let l = LocalResponses::default();
        l.add_pools(["static", "dynamic"]);
        l.count("static", 503);
        l.count("static", 503);
        l.count("dynamic", 504);
        l.count("static", 404);
        l.count(UNROUTED, 414);
        let got: Vec<(String, u16, u64)> = l
            .snapshot()
            .into_iter()
            .map(|c| (c.pool.to_string(), c.code, c.count))
            .collect();
        assert_eq!(
            got,
            [
                ("-".to_owned(), 414, 1),
                ("dynamic".to_owned(), 504, 1),
                ("static".to_owned(), 404, 1),
                ("static".to_owned(), 503, 2),
            ]
        );
    }

    #[test]
    fn a_pool_keeps_its_counts_when_added_again_and_an_unknown_one_is_added() {
        let l = LocalResponses::default();
        l.add_pools(["a"]);
        l.count("a", 502);
        l.add_pools(["a", "b"]);
        l.count("late", 503);
        let pools: Vec<(String, u64)> = l
            .snapshot()
            .into_iter()
            .map(|c| (c.pool.to_string(), c.count))
            .collect();
        assert_eq!(pools, [("a".to_owned(), 1), ("late".to_owned(), 1)]);
    }
}
