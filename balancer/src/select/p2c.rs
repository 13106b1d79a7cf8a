//! Power of two choices: two random usable members, the less loaded one wins. Nearly as good
//! as least-connections with no scan over the whole pool.

use std::sync::Arc;

use rand::RngExt;

use super::{PickContext, Select, round_robin};
use crate::pool::Member;

/// Whether `a` (in flight, weight) is less loaded than `b` once this request is added:
/// (a+1)/wa < (b+1)/wb. Counting the new request lets a heavier member win between two idle
/// ones, so P2C's draws lean toward weight.
fn less_loaded(a: (u32, u32), b: (u32, u32)) -> bool {
    (u64::from(a.0) + 1) * u64::from(b.1) < (u64::from(b.0) + 1) * u64::from(a.1)
}

/// Two usable members drawn at random, distinct when two are usable (`a == b` when only one
/// is); `None` when none is.
pub(super) fn two_choices(members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<(usize, usize)> {
    let n = members.len();
    if n == 0 {
        return None;
    }
    let mut rng = rand::rng();
    let a = round_robin::scan_from(members, cx, rng.random_range(0..n))?;
    let b = match round_robin::scan_from(members, cx, rng.random_range(0..n)) {
        Some(b) if b != a => b,
        // Only one usable member, or both draws landed on it.
        _ => round_robin::scan_from(members, cx, a + 1).unwrap_or(a),
    };
    Some((a, b))
}

/// P2C on in-flight requests per unit of weight.
#[derive(Debug, Default)]
pub(super) struct PowerOfTwo;

impl Select for PowerOfTwo {
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        let (a, b) = two_choices(members, cx)?;
        let load = |i: usize| (members[i].in_flight(), cx.weight(&members[i]));
        Some(if less_loaded(load(b), load(a)) { b } else { a })
    }
}
