//! `/api/live`: the compact feed behind the dashboard's charts. A sampler reads every
//! member's counters once a second (the request path is not touched: it only ever bumps its
//! atomics) and keeps the last [`SECONDS`] seconds per pool: each member's responses in that
//! second, errors, requests in flight and the pool's p50/p99 of that second. A page opened
//! mid-run thus draws the whole last minute at once.
//!
//! Shape (numbers per second, oldest first; `n[i]` belongs to `keys[i]`):
//! `{"t": 1733475600, "pools": [{"name": "dynamic", "algorithm": "round-robin",
//!   "keys": ["10.0.0.3:3000", ...], "samples": [{"t": ..., "n": [12, 11], "e": 0, "a": 3,
//!   "p50": 1.2, "p99": 4.8}, ...]}], "instances": {"10.0.0.3:3000": "a1b2c3"}}`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::AdminCtx;
use crate::state::Shared;
use crate::stats::{self, Window};

/// Seconds of history per pool.
pub(crate) const SECONDS: usize = 60;

/// One member's counters at a tick.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    /// Address.
    pub addr: SocketAddr,
    /// Responses since it joined.
    pub responses: u64,
    /// 5xx responses since it joined.
    pub errors: u64,
    /// Requests in flight now.
    pub active: u32,
}

/// One second of a pool.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    t: u64,
    by: Vec<(SocketAddr, u64)>,
    errors: u64,
    active: u32,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
}

/// A pool's last minute, and the counters the next deltas start from.
#[derive(Debug, Default)]
pub(crate) struct PoolHistory {
    last: HashMap<SocketAddr, (u64, u64)>,
    last_local: u64,
    samples: VecDeque<Sample>,
}

impl PoolHistory {
    /// Records second `t` from the members' counters, the pool's local 5xx total and the
    /// latencies of the second. A member seen for the first time counts from 0 (it is new:
    /// its counters started with it); one whose counters went back is a new member at the
    /// same address.
    pub(crate) fn observe(&mut self, t: u64, members: &[Reading], local_errors: u64, lat: &Window) {
        let mut by = Vec::with_capacity(members.len());
        let mut errors = local_errors.saturating_sub(self.last_local);
        self.last_local = local_errors;
        let mut active = 0;
        let mut next = HashMap::with_capacity(members.len());
        for m in members {
            let (r0, e0) = self.last.get(&m.addr).copied().unwrap_or((0, 0));
            let delta = |now: u64, before: u64| if now >= before { now - before } else { now };
            by.push((m.addr, delta(m.responses, r0)));
            errors += delta(m.errors, e0);
            active += m.active;
            next.insert(m.addr, (m.responses, m.errors));
        }
        self.last = next;
        let ms = |q| lat.quantile_us(q).map(|us| us / 1000.0);
        self.samples.push_back(Sample {
            t,
            by,
            errors,
            active,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
        });
        while self.samples.len() > SECONDS {
            self.samples.pop_front();
        }
    }

    fn feed(&self, name: &str, algorithm: String) -> PoolFeed {
        let mut keys: Vec<SocketAddr> = Vec::new();
        for s in &self.samples {
            for (a, _) in &s.by {
                if !keys.contains(a) {
                    keys.push(*a);
                }
            }
        }
        let samples = self
            .samples
            .iter()
            .map(|s| SampleFeed {
                t: s.t,
                n: keys
                    .iter()
                    .map(|k| s.by.iter().find(|(a, _)| a == k).map_or(0, |(_, n)| *n))
                    .collect(),
                e: s.errors,
                a: s.active,
                p50: s.p50_ms.map(round2),
                p99: s.p99_ms.map(round2),
            })
            .collect();
        PoolFeed {
            name: name.to_owned(),
            algorithm,
            keys: keys.iter().map(SocketAddr::to_string).collect(),
            samples,
        }
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The histories of every pool.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pools: Mutex<BTreeMap<Arc<str>, PoolHistory>>,
}

impl Live {
    /// Takes one sample of every pool of the current snapshot; pools gone are forgotten.
    pub(crate) fn sample(&self, shared: &Shared) {
        let snap = shared.snapshot();
        let second = stats::current_second();
        let local = shared.local_responses();
        let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        pools.retain(|name, _| snap.pools.iter().any(|p| p.settings.name == *name));
        for p in &snap.pools {
            let readings: Vec<Reading> = p
                .members
                .iter()
                .map(|m| Reading {
                    addr: m.addr,
                    responses: m.stats.total_responses(),
                    errors: m.stats.responses(4),
                    active: m.in_flight(),
                })
                .collect();
            // The last whole second: the current one is still being written.
            let mut lat = Window::empty();
            for m in &p.members {
                lat.add(&m.stats.recent.second(second.saturating_sub(1)));
            }
            let local_errors = local
                .iter()
                .filter(|c| c.pool == p.settings.name && c.code >= 500)
                .map(|c| c.count)
                .sum();
            pools
                .entry(Arc::clone(&p.settings.name))
                .or_default()
                .observe(second, &readings, local_errors, &lat);
        }
    }

    fn feed(&self, shared: &Shared) -> Vec<PoolFeed> {
        let snap = shared.snapshot();
        let pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
        snap.pools
            .iter()
            .filter_map(|p| {
                let h = pools.get(&p.settings.name)?;
                Some(h.feed(&p.settings.name, p.settings.algorithm.to_string()))
            })
            .collect()
    }
}

/// Samples every second until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, live: Arc<Live>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => live.sample(&shared),
            () = stop.cancelled() => return,
        }
    }
}

#[derive(Debug, Serialize)]
struct Feed {
    t: u64,
    pools: Vec<PoolFeed>,
    /// Instance names (`X-Instance`) by member address, as load runs learned them.
    instances: BTreeMap<String, String>,
    /// Every algorithm a pool can be switched to.
    algorithms: Vec<&'static str>,
}

#[derive(Debug, Serialize)]
struct PoolFeed {
    name: String,
    algorithm: String,
    keys: Vec<String>,
    samples: Vec<SampleFeed>,
}

#[derive(Debug, Serialize)]
struct SampleFeed {
    t: u64,
    n: Vec<u64>,
    e: u64,
    a: u32,
    p50: Option<f64>,
    p99: Option<f64>,
}

pub(super) async fn handler(State(s): State<AdminCtx>) -> Response {
    let feed = Feed {
        t: stats::current_second(),
        pools: s.live.feed(&s.shared),
        instances: s.load.instances(),
        algorithms: crate::select::Algorithm::ALL
            .iter()
            .map(|a| a.as_str())
            .collect(),
    };
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(feed),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(port: u16, responses: u64, errors: u64) -> Reading {
        Reading {
            addr: SocketAddr::from(([10, 0, 0, 1], port)),
            responses,
            errors,
            active: 1,
        }
    }

    #[test]
    fn each_second_holds_the_responses_of_that_second() {
        let mut h = PoolHistory::default();
        let w = Window::empty();
        h.observe(1, &[r(1, 5, 0), r(2, 3, 0)], 0, &w);
        h.observe(2, &[r(1, 9, 1), r(2, 3, 0)], 2, &w);
        let f = h.feed("p", "round-robin".into());
        assert_eq!(f.keys, ["10.0.0.1:1", "10.0.0.1:2"]);
        assert_eq!(f.samples[0].n, [5, 3]);
        assert_eq!(f.samples[1].n, [4, 0]);
        // One member 5xx and two the balancer answered itself.
        assert_eq!(f.samples[1].e, 3);
        assert_eq!(f.samples[1].a, 2);
        assert_eq!(f.samples[1].p50, None);
    }

    #[test]
    fn members_that_join_and_leave_keep_their_columns_while_in_the_window() {
        let mut h = PoolHistory::default();
        let w = Window::empty();
        h.observe(1, &[r(1, 5, 0)], 0, &w);
        h.observe(2, &[r(1, 6, 0), r(2, 4, 0)], 0, &w);
        h.observe(3, &[r(2, 7, 0)], 0, &w);
        // Back at the same address as a new member: its counters start again.
        h.observe(4, &[r(1, 2, 0), r(2, 8, 0)], 0, &w);
        let f = h.feed("p", "x".into());
        let n: Vec<&[u64]> = f.samples.iter().map(|s| s.n.as_slice()).collect();
        assert_eq!(n, [&[5, 0][..], &[1, 4], &[0, 3], &[2, 1]]);
        for t in 5..(5 + SECONDS as u64) {
            h.observe(t, &[r(2, 8, 0)], 0, &w);
        }
        let f = h.feed("p", "x".into());
        assert_eq!(f.samples.len(), SECONDS);
        assert_eq!(f.keys, ["10.0.0.1:2"], "a member out of the window is gone");
    }
}
