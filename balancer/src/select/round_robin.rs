//! Round-robin: each usable member in turn, weights ignored.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::RngExt;

use super::{PickContext, Select};
use crate::pool::Member;

/// Plain round-robin over usable members.
#[derive(Debug, Default)]
pub(super) struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// A rotation that continues from turn `n`.
    pub(super) fn starting_at(n: usize) -> Self {
        RoundRobin {
            next: AtomicUsize::new(n),
        }
    }
}

impl Select for RoundRobin {
    fn rotation(&self) -> usize {
        self.next.load(Ordering::Relaxed)
    }

    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        // Count turns over the usable members only: skipping an unusable member by moving to
        // its neighbour would hand that neighbour a double share.
        let usable = |i: usize| cx.usable(i, &members[i]) && cx.weight(&members[i]) > 0;
        let count = (0..members.len()).filter(|&i| usable(i)).count();
        if count == 0 {
            return None;
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut nth = (0..members.len()).filter(|&i| usable(i)).cycle().skip(turn);
        let first = nth.next()?;
        // Slow start: a ramping member takes its turn only with probability weight-now /
        // full-weight (else the turn passes on), so a fresh replica is eased in.
        let mut rng = rand::rng();
        for i in std::iter::once(first).chain(nth.take(count - 1)) {
            let m = &members[i];
            let full = m.weight() * crate::pool::WEIGHT_SCALE;
            let now = cx.weight(m);
            if now >= full || rng.random_range(0..full) < now {
                return Some(i);
            }
        }
        Some(first)
    }
}

/// The first usable member at or after `start` (mod n).
pub(super) fn scan_from(
    members: &[Arc<Member>],
    cx: &PickContext<'_>,
    start: usize,
) -> Option<usize> {
    let n = members.len();
    (0..n)
        .map(|k| (start.wrapping_add(k)) % n)
        .find(|&i| cx.usable(i, &members[i]) && cx.weight(&members[i]) > 0)
}
