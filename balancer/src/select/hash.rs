//! Consistent hashing by weighted rendezvous (highest random weight).
//!
//! Every (key, member) pair gets a pseudo-random score; the highest usable score wins. When a
//! member joins or leaves only the keys whose winner changed move: about 1/N of them, and no
//! ring to rebuild. Sticky-cookie fallback uses the same function so every balancer sends an
//! orphaned session to the same new member.

use std::hash::Hasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use siphasher::sip::SipHasher13;

use super::{PickContext, Select, round_robin};
use crate::pool::Member;

/// A process-independent 64-bit hash of some bytes (the same on every balancer).
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(0x9e37_79b9_7f4a_7c15, 0x6a09_e667_f3bc_c909);
    h.write(bytes);
    h.finish()
}

fn score(key: u64, member: &Member, weight: u32) -> f64 {
    let mut h = SipHasher13::new_with_keys(key, 0x5bd1_e995);
    h.write_u64(member.id().0);
    // Map to (0, 1], then -w / ln(u): the weighted rendezvous score.
    let u = ((h.finish() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    -f64::from(weight) / u.ln()
}

/// The usable member with the highest rendezvous score for `key`.
pub fn rendezvous_pick(members: &[Arc<Member>], cx: &PickContext<'_>, key: u64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, m) in members.iter().enumerate() {
        if !cx.usable(i, m) {
            continue;
        }
        let w = cx.weight(m);
        if w == 0 {
            continue;
        }
        let s = score(key, m, w);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best.map(|(i, _)| i)
}

/// `ip-hash` and `header-hash`: rendezvous on the request key, round-robin when it is absent.
#[derive(Debug, Default)]
pub(super) struct Consistent {
    fallback: AtomicUsize,
}

impl Select for Consistent {
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        match cx.key {
            Some(key) => rendezvous_pick(members, cx, key),
            None => {
                let start = self.fallback.fetch_add(1, Ordering::Relaxed);
                round_robin::scan_from(members, cx, start)
            }
        }
    }
}
