//! Least-connections (weighted), as nginx's `least_conn` does it: the members with the fewest
//! in-flight requests per unit of weight, and among those tied, smooth weighted round-robin.
//! Idle members are all tied at zero, so sequential requests spread in proportion to weight
//! (3,1,1,1,1 gives the first member 3 of every 7) instead of all going to the heaviest.

use std::sync::Arc;

use super::weighted::Scores;
use super::{PickContext, Select};
use crate::pool::Member;

/// Weighted least-connections; ties are broken by smooth weighted round-robin.
#[derive(Debug)]
pub(super) struct LeastConnections {
    scores: Scores,
}

impl LeastConnections {
    /// State for `n` members.
    pub(super) fn new(n: usize) -> Self {
        LeastConnections {
            scores: Scores::new(n),
        }
    }
}

/// In-flight requests and selection weight of member `i`.
fn load(members: &[Arc<Member>], cx: &PickContext<'_>, i: usize) -> (u32, u32) {
    (members[i].in_flight(), cx.weight(&members[i]))
}

/// `a.0 / a.1` compared with `b.0 / b.1` (in flight per weight), by cross-multiplying.
fn cmp_load(a: (u32, u32), b: (u32, u32)) -> std::cmp::Ordering {
    (u64::from(a.0) * u64::from(b.1)).cmp(&(u64::from(b.0) * u64::from(a.1)))
}

impl Select for LeastConnections {
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        let mut best: Option<(usize, (u32, u32))> = None;
        let mut tied = false;
        for (i, m) in members.iter().enumerate() {
            if !cx.usable(i, m) {
                continue;
            }
            let l = load(members, cx, i);
            if l.1 == 0 {
                continue;
            }
            match best.map(|(_, b)| cmp_load(l, b)) {
                None | Some(std::cmp::Ordering::Less) => {
                    best = Some((i, l));
                    tied = false;
                }
                Some(std::cmp::Ordering::Equal) => tied = true,
                Some(std::cmp::Ordering::Greater) => {}
            }
        }
        let (first, least) = best?;
        if !tied {
            return Some(first);
        }
        // Counts move while we look; if none is still at the least load, the first stands.
        let at_least = |i: usize| cmp_load(load(members, cx, i), least).is_eq();
        Some(self.scores.pick(members, cx, at_least).unwrap_or(first))
    }
}
