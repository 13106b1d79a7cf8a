//! Smooth weighted round-robin, as nginx does it: every pick adds each member's weight to its
//! current score, takes the highest, and subtracts the total from the winner. Weights 5,1,1 give
//! `a a b a c a a` instead of `a a a a a b c`.

use std::sync::{Arc, Mutex};

use super::{PickContext, Select};
use crate::pool::Member;

/// Smooth WRR; the current scores are behind a mutex held only for the arithmetic.
#[derive(Debug)]
pub struct SmoothWeighted {
    current: Mutex<Vec<i64>>,
}

impl SmoothWeighted {
    /// State for `n` members.
    pub fn new(n: usize) -> Self {
        SmoothWeighted {
            current: Mutex::new(vec![0; n]),
        }
    }
}

impl Select for SmoothWeighted {
    fn pick(&self, members: &[Arc<Member>], cx: &PickContext<'_>) -> Option<usize> {
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current.len() != members.len() {
            current.resize(members.len(), 0);
        }
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, m) in members.iter().enumerate() {
            if !cx.usable(i, m) {
                continue;
            }
            let w = i64::from(cx.weight(m));
            if w == 0 {
                continue;
            }
            current[i] += w;
            total += w;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        if let Some(b) = best {
            current[b] -= total;
        }
        best
    }
}
