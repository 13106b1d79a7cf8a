//! Smooth weighted round-robin, as nginx does it: every pick adds each member's weight to its
//! current score, takes the highest, and subtracts the total from the winner. Weights 5,1,1 give
//! `a a b a c a a` instead of `a a a a a b c`.
//!
//! The scores are atomics, not a locked vector: every worker thread picks from the same
//! selector, and a pick only ever adds to and subtracts from scores, so concurrent picks keep
//! the scores' sum and the cycle stays fair (two racing picks may take the same member once,
//! which the next picks make up for). [`Scores`] is also least-connections' tie-breaker.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use super::{PickContext, Select};
use crate::pool::Member;

/// One smooth-WRR score per member (the selector is rebuilt with its member list).
#[derive(Debug)]
pub(super) struct Scores {
    current: Box<[AtomicI64]>,
}

impl Scores {
    /// Scores for `n` members, all 0.
    pub(super) fn new(n: usize) -> Self {
        Scores {
            current: (0..n).map(|_| AtomicI64::new(0)).collect(),
        }
    }

    /// One smooth-WRR step over the usable members for which `candidate(i)` holds.
    pub(super) fn pick(
        &self,
        members: &[Arc<Member>],
        cx: &PickContext<'_>,
        candidate: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        self.pick_by(members, cx, candidate, |_, m| i64::from(cx.weight(m)))
    }

    /// [`Scores::pick`] with the weight of member `i` given by `weight(i, member)`.
    pub(crate) fn pick_by(
        &self,
        members: &[Arc<Member>],
        cx: &PickContext<'_>,
        candidate: impl Fn(usize) -> bool,
        weight: impl Fn(usize, &Member) -> i64,
    ) -> Option<usize> {
        let mut total = 0i64;
        let mut best: Option<(usize, i64)> = None;
        for (i, m) in members.iter().enumerate() {
            // A score per member: a list longer than the selector's has no slot for the rest.
            let Some(score) = self.current.get(i) else {
                break;
            };
            if !candidate(i) || !cx.usable(i, m) {
                continue;
            }
            let w = weight(i, m);
            if w == 0 {
                continue;
            }
            let now = score.fetch_add(w, Ordering::Relaxed) + w;
            total += w;
            if best.is_none_or(|(_, b)| now > b) {
                best = Some((i, now));
            }
        }
        let (winner, _) = best?;
        self.current[winner].fetch_sub(total, Ordering::Relaxed);
        Some(winner)
    }
}

/// Smooth WRR over every usable member.
#[derive(Debug)]
pub(super) struct SmoothWeighted {
    scores: Scores,
}

impl SmoothWeighted {
    /// State for `n` members.
    pub(super) fn new(n: usize) -> Self {
        SmoothWeighted {
            scores: Scores::new(n),
        }
    }
}

impl Select for SmoothWeighted {
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        self.scores.pick(members, cx, |_| true)
    }
}
