//! Peak-EWMA, as Linkerd balances (tower's `p2c` over `load::PeakEwma`): two random usable
//! members, the cheaper one wins, cost = latency estimate x (in-flight + 1) / weight.
//!
//! The estimate (see [`crate::pool::load`]) jumps to any slower answer at once and drifts
//! toward faster ones on the pool's `ewma_decay` (10 s); without answers it decays toward 0,
//! so a member left alone after a bad spell gets tried again.
//!
//! Two choices the references leave open, made here:
//! - Errors: a 5xx or a failed attempt is charged as an answer of at least 10x the default
//!   rtt, so a replica that fails fast looks slow, not fast (the known trap of latency-based
//!   balancing).
//! - Cold start (linkerd2#9652: a new endpoint's default estimate below the others' real ones
//!   drew all the traffic): a member with no answer yet is costed as the member it is
//!   compared with (the default rtt only when neither has answered). It is never cheaper, so
//!   it wins a draw only by having fewer requests in flight (or by the coin on a tie): it
//!   takes its share of the traffic at once — unlike a fixed pessimistic default, which would
//!   starve it at low concurrency — but never all of it, until its own answers speak for it.

use std::sync::Arc;

use super::{PickContext, Select, p2c};
use crate::config::balancing::Balancing;
use crate::pool::Member;

/// P2C over peak-EWMA cost.
#[derive(Debug)]
pub(crate) struct PeakEwma {
    settings: Balancing,
}

impl PeakEwma {
    /// With the pool's decay and default rtt.
    pub(crate) fn new(settings: Balancing) -> Self {
        PeakEwma { settings }
    }

    fn estimate(&self, m: &Member, now: u64) -> Option<f64> {
        m.load.ewma_ms(now, &self.settings)
    }
}

/// The cost of a member with estimate `rtt_ms`: latency x (in-flight + 1) per unit of weight.
pub(crate) fn cost(rtt_ms: f64, in_flight: u32, weight: u32) -> f64 {
    rtt_ms * (f64::from(in_flight) + 1.0) / f64::from(weight.max(1))
}

impl Select for PeakEwma {
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        let (a, b) = p2c::two_choices(members, cx)?;
        if a == b {
            return Some(a);
        }
        let (ma, mb) = (&members[a], &members[b]);
        let default = self.settings.ewma_default_rtt.as_secs_f64() * 1000.0;
        let (ea, eb) = (self.estimate(ma, cx.now_ms), self.estimate(mb, cx.now_ms));
        // An unmeasured member is as good as the one it is compared with, never better.
        let ea_or = ea.or(eb).unwrap_or(default);
        let eb_or = eb.or(ea).unwrap_or(default);
        let ca = cost(ea_or, ma.in_flight(), cx.weight(ma));
        let cb = cost(eb_or, mb.in_flight(), cx.weight(mb));
        Some(if cb < ca { b } else { a })
    }
}
