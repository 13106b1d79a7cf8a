//! Weighted random choice among usable members.

use std::sync::Arc;

use rand::RngExt;

use super::{PickContext, Select};
use crate::pool::Member;

/// Random, proportional to effective weight.
#[derive(Debug, Default)]
pub(super) struct WeightedRandom;

impl Select for WeightedRandom {
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        let weight = |i: usize, m: &Member| {
            if cx.usable(i, m) {
                u64::from(cx.weight(m))
            } else {
                0
            }
        };
        let total: u64 = members.iter().enumerate().map(|(i, m)| weight(i, m)).sum();
        if total == 0 {
            return None;
        }
        let mut r = rand::rng().random_range(0..total);
        for (i, m) in members.iter().enumerate() {
            let w = weight(i, m);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}
