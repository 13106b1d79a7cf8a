//! Least-connections (weighted): the member with the fewest in-flight requests per unit of
//! weight; ties rotate so equal members share the load.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{PickContext, Select};
use crate::pool::Member;

/// Weighted least-connections.
#[derive(Debug, Default)]
pub struct LeastConnections {
    rotate: AtomicUsize,
}

/// Whether `a` (in flight, weight) is less loaded than `b`: (a+1)/wa < (b+1)/wb.
pub fn less_loaded(a: (u32, u32), b: (u32, u32)) -> bool {
    (u64::from(a.0) + 1) * u64::from(b.1) < (u64::from(b.0) + 1) * u64::from(a.1)
}

impl Select for LeastConnections {
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        let n = members.len();
        let start = self.rotate.fetch_add(1, Ordering::Relaxed);
        let mut best: Option<(usize, (u32, u32))> = None;
        for k in 0..n {
            let i = start.wrapping_add(k) % n;
            let m = &members[i];
            if !cx.usable(i, m) {
                continue;
            }
            let load = (m.in_flight(), cx.weight(m));
            if load.1 == 0 {
                continue;
            }
            if best.is_none_or(|(_, b)| less_loaded(load, b)) {
                best = Some((i, load));
            }
        }
        best.map(|(i, _)| i)
    }
}
