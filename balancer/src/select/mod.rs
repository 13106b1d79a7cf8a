//! Choosing a member of a pool for one request.
//!
//! Every algorithm sees the pool's immutable member list (one config snapshot) and a
//! [`PickContext`]; it returns the index of the chosen member, or `None` when no member is
//! usable. Mutable selection state (round-robin counters, smooth-WRR scores, atomics only)
//! lives inside the selector, which is rebuilt with the member list on every membership change.

mod hash;
mod least_conn;
mod p2c;
mod peak_ewma;
mod random;
mod reported_load;
mod round_robin;
mod weighted;

#[cfg(test)]
mod load_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::balancing::Balancing;
use crate::pool::Member;

pub use hash::{rendezvous_pick, stable_hash};

/// The selection algorithms a pool can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Each usable member in turn, ignoring weights.
    RoundRobin,
    /// Smooth weighted round-robin, as nginx does it.
    WeightedRoundRobin,
    /// Fewest in-flight requests relative to weight; ties by smooth weighted round-robin.
    LeastConnections,
    /// Power of two random choices on in-flight requests.
    P2c,
    /// Uniformly random (weighted).
    Random,
    /// Consistent hashing on the client IP.
    IpHash,
    /// Consistent hashing on a request header (see the pool's `hash_header`).
    HeaderHash,
    /// Power of two choices on peak-EWMA latency x (in-flight + 1), as Linkerd balances.
    PeakEwma,
    /// Smooth weighted round-robin over the weights members' ORCA load reports give them
    /// (gRPC's weighted_round_robin, gRFC A58).
    ReportedLoad,
}

impl Algorithm {
    /// Every algorithm (the tests run each one; the dashboard offers each).
    pub(crate) const ALL: [Algorithm; 9] = [
        Algorithm::RoundRobin,
        Algorithm::WeightedRoundRobin,
        Algorithm::LeastConnections,
        Algorithm::P2c,
        Algorithm::Random,
        Algorithm::IpHash,
        Algorithm::HeaderHash,
        Algorithm::PeakEwma,
        Algorithm::ReportedLoad,
    ];

    /// The config spelling (`round-robin`, ...).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Algorithm::RoundRobin => "round-robin",
            Algorithm::WeightedRoundRobin => "weighted-round-robin",
            Algorithm::LeastConnections => "least-connections",
            Algorithm::P2c => "p2c",
            Algorithm::Random => "random",
            Algorithm::IpHash => "ip-hash",
            Algorithm::HeaderHash => "header-hash",
            Algorithm::PeakEwma => "peak-ewma",
            Algorithm::ReportedLoad => "reported-load",
        }
    }

    /// Whether the algorithm needs a request key (client IP or header hash).
    #[cfg(test)]
    pub(crate) fn is_hashing(self) -> bool {
        matches!(self, Algorithm::IpHash | Algorithm::HeaderHash)
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a selector may look at besides the members.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// [`crate::clock::now_ms`] read once for this request.
    pub now_ms: u64,
    /// Slow-start duration of the pool in ms (0 = off); selectors use
    /// [`Member::selection_weight`] with it.
    pub slow_start_ms: u64,
    /// Hash of the request key for hashing algorithms (client IP or header); `None` when the
    /// key is absent, in which case hashing algorithms fall back to round-robin.
    pub key: Option<u64>,
    /// Indices already tried by this request (retries go to a different member).
    pub exclude: &'a [usize],
}

impl PickContext<'_> {
    /// Whether member `i` may be chosen for this request.
    pub(crate) fn usable(&self, i: usize, m: &Member) -> bool {
        m.is_available(self.now_ms) && !self.exclude.contains(&i)
    }

    /// Selection weight of a member for this request (slow start included), in
    /// 1/[`crate::pool::WEIGHT_SCALE`] units.
    pub(crate) fn weight(&self, m: &Member) -> u32 {
        m.selection_weight(self.now_ms, self.slow_start_ms)
    }
}

/// The last resort when no member is available: of the members that failing checks or
/// passive detection took out (drained and leaving ones stay out), the one that failed least
/// recently, as the likeliest to have recovered. Rather than failing at once, a pool whose
/// members are all out still tries one, so a one-replica lab keeps working through a blip.
pub(crate) fn least_recently_failed(
    members: &[Arc<Member>],
    cx: &PickContext<'_>,
) -> Option<usize> {
    members
        .iter()
        .enumerate()
        .filter(|&(i, m)| m.is_last_resort() && !cx.exclude.contains(&i))
        .min_by_key(|(_, m)| m.last_fail())
        .map(|(i, _)| i)
}

/// One pool's selection algorithm with its state.
pub(crate) trait Select: Send + Sync + std::fmt::Debug {
    /// Chooses a usable member, or `None` if there is none.
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize>;

    /// Where a rotating selector stands, so a rebuilt one continues the rotation instead of
    /// starting over (every membership change rebuilds the selectors of every pool).
    fn rotation(&self) -> usize {
        0
    }
}

/// Builds the selector for `algorithm` over a member list of length `n`; rotating selectors
/// continue from `rotation` (the previous selector's [`Select::rotation`]); the load-aware
/// ones read the pool's `balancing` settings.
pub(crate) fn build(
    algorithm: Algorithm,
    balancing: &Balancing,
    n: usize,
    rotation: usize,
) -> Arc<dyn Select> {
    match algorithm {
        Algorithm::RoundRobin => Arc::new(round_robin::RoundRobin::starting_at(rotation)),
        Algorithm::WeightedRoundRobin => Arc::new(weighted::SmoothWeighted::new(n)),
        Algorithm::LeastConnections => Arc::new(least_conn::LeastConnections::new(n)),
        Algorithm::P2c => Arc::new(p2c::PowerOfTwo),
        Algorithm::Random => Arc::new(random::WeightedRandom),
        Algorithm::IpHash | Algorithm::HeaderHash => Arc::new(hash::Consistent::default()),
        Algorithm::PeakEwma => Arc::new(peak_ewma::PeakEwma::new(*balancing)),
        Algorithm::ReportedLoad => Arc::new(reported_load::ReportedLoad::new(n, *balancing)),
    }
}
