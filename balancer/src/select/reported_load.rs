//! Reported load: gRPC's `weighted_round_robin` (gRFC A58) over the ORCA reports members send
//! in `endpoint-load-metrics`, with smooth weighted round-robin as the scheduler.
//!
//! Each report gives a member the weight `rps / (utilization + eps / rps x penalty)` (see
//! [`crate::pool::load`]). Every `weight_update_period` (1 s) the weights in use are rebuilt
//! from the members' latest ones, as A58 rebuilds its picker:
//! - a weight is used only after `blackout_period` (10 s) of reports, and dropped after
//!   `weight_expiration_period` (3 min) without one — so a member that just joined, or just
//!   came back, counts as the mean and is never flooded on its first enthusiastic report;
//! - a member without a usable weight counts as the mean of those with one; with fewer than
//!   two usable weights every member is equal (A58's fallback to round-robin);
//! - weights are clamped to 0.01x..10x the mean (grpc's `static_stride_scheduler.cc`), so one
//!   report can neither starve a member for good nor hand it everything.
//!
//! Static weights (and slow start) still scale the result: the smooth-WRR weight of a member
//! is its reported factor times its configured weight.
//!
//! No lock and no background task: the weights in use are atomics in the selector, and the
//! first pick after a period is over (one compare-and-swap decides which) recomputes them —
//! an O(members) pass once a period — while concurrent picks use the previous ones. A
//! selector rebuilt with a new member list computes its first weights on its first pick.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::weighted::Scores;
use super::{PickContext, Select};
use crate::config::balancing::Balancing;
use crate::pool::Member;

/// The factor of the member with the largest weight.
const SCALE: f64 = 100_000.0;
/// Clamps relative to the mean (grpc `kMinRatio`, `kMaxRatio`).
const MIN_RATIO: f64 = 0.01;
const MAX_RATIO: f64 = 10.0;

/// The weights a scheduler uses, from the members' usable weights (0 = none): zeros become
/// the mean of the others, and everything is clamped to 0.01x..10x the mean. Returns whether
/// fewer than two members had a weight (every member is then equal: A58's fallback).
pub(crate) fn scheduler_weights(weights: &mut [f64]) -> bool {
    let (sum, n) = weights
        .iter()
        .filter(|w| **w > 0.0)
        .fold((0.0, 0usize), |(s, n), w| (s + w, n + 1));
    if n < 2 {
        weights.iter_mut().for_each(|w| *w = 1.0);
        return true;
    }
    let mean = sum / n as f64;
    for w in weights.iter_mut() {
        *w = if *w > 0.0 {
            w.clamp(mean * MIN_RATIO, mean * MAX_RATIO)
        } else {
            mean
        };
    }
    false
}

/// Smooth WRR over reported weights.
#[derive(Debug)]
pub(crate) struct ReportedLoad {
    settings: Balancing,
    scores: Scores,
    /// Each member's weight relative to the largest, x[`SCALE`].
    factors: Box<[AtomicU32]>,
    /// When the weights are next recomputed (ms); 0 = at the first pick.
    next_update: AtomicU64,
}

impl ReportedLoad {
    /// State for `n` members.
    pub(crate) fn new(n: usize, settings: Balancing) -> Self {
        ReportedLoad {
            settings,
            scores: Scores::new(n),
            factors: (0..n).map(|_| AtomicU32::new(SCALE as u32)).collect(),
            next_update: AtomicU64::new(0),
        }
    }

    /// Recomputes the factors from the members' reports.
    fn update(&self, members: &[Arc<Member>], now: u64) {
        let mut weights: Vec<f64> = members
            .iter()
            .map(|m| {
                if m.is_available(now) {
                    m.load.usable_weight(now, &self.settings)
                } else {
                    0.0
                }
            })
            .collect();
        scheduler_weights(&mut weights);
        // Integer factors relative to the largest weight: the clamps keep every weight within
        // 1000x of it, so [`SCALE`] leaves at least 100 steps for the smallest.
        let max = weights.iter().copied().fold(0.0, f64::max);
        for ((m, w), f) in members.iter().zip(&weights).zip(self.factors.iter()) {
            m.load.set_in_use(*w);
            let factor = if max > 0.0 {
                (w / max * SCALE).round().max(1.0)
            } else {
                SCALE
            };
            f.store(factor as u32, Ordering::Relaxed);
        }
    }
}

impl Select for ReportedLoad {
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        let due = self.next_update.load(Ordering::Relaxed);
        if cx.now_ms >= due {
            let next = cx.now_ms + self.settings.weight_update_period.as_millis() as u64;
            if self
                .next_update
                .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
            {
                self.update(members, cx.now_ms);
            }
        }
        self.scores.pick_by(
            members,
            cx,
            |_| true,
            |i, m| {
                let factor = self.factors.get(i).map_or(0, |f| f.load(Ordering::Relaxed));
                i64::from(factor) * i64::from(cx.weight(m))
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::scheduler_weights;

    #[test]
    fn members_without_weight_count_as_the_mean() {
        let mut w = [100.0, 300.0, 0.0];
        assert!(!scheduler_weights(&mut w));
        assert_eq!(w, [100.0, 300.0, 200.0]);
    }

    #[test]
    fn weights_are_clamped_around_the_mean() {
        let mut w = [1.0, 10_000.0, 10_000.0, 10_000.0];
        scheduler_weights(&mut w);
        let mean = 30_001.0 / 4.0;
        assert_eq!(w[0], mean * 0.01);
        let mut w = [
            1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1000.0,
        ];
        scheduler_weights(&mut w);
        let mean = 1011.0 / 12.0;
        assert_eq!(w[11], mean * 10.0);
    }

    #[test]
    fn fewer_than_two_weights_fall_back_to_equal() {
        let mut w = [0.0, 50.0, 0.0];
        assert!(scheduler_weights(&mut w));
        assert_eq!(w, [1.0, 1.0, 1.0]);
        let mut none: [f64; 0] = [];
        assert!(scheduler_weights(&mut none));
    }
}
