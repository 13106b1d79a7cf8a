//! Giving a flood's memory back to the system once the flood is over.
//!
//! mimalloc (the global allocator, `main.rs`) keeps the pages a thread freed and hands them
//! back to the OS in its periodic collection, which runs every 10,000 allocations that take
//! its generic path (any over 1 KiB, and every small one that finds its page full). A busy
//! worker makes those all the time; a worker that just lost ten thousand idle connections makes
//! none, so without help its RSS stayed at the flood's peak for as long as it stayed quiet
//! (docs/benchmarks.md, flood). When a worker's connections fall by many since the last look,
//! it makes those allocations itself: twice, two sweeps apart, because the first collection
//! frees the empty pages and schedules their purge (mimalloc waits 1 s), the second purges.
//!
//! Cost: 10,000 allocations and frees of 2 KiB, well under a millisecond, once or twice per
//! flood; never in the request path.

/// A fall of at least this many connections counts as a flood ending.
const FALL: usize = 512;
/// Generic-path allocations between two mimalloc collections (its `generic_collect` option).
const COLLECT_EVERY: usize = 10_000;

/// When to make the allocator collect: pure, fed one worker's open connections each sweep.
#[derive(Debug, Default)]
pub(super) struct Reclaim {
    /// Most connections seen since the last collection.
    high: usize,
    /// A second collection is due at the next sweep.
    again: bool,
}

impl Reclaim {
    /// This sweep's count; whether to collect now.
    pub(super) fn sweep(&mut self, open: usize) -> bool {
        if self.high >= open + FALL {
            self.high = open;
            self.again = true;
            return true;
        }
        self.high = self.high.max(open);
        std::mem::take(&mut self.again)
    }
}

/// Makes this thread's mimalloc heap run its collection (see the module doc).
pub(super) fn collect() {
    for _ in 0..=COLLECT_EVERY {
        // black_box: the optimizer may remove an allocation nobody uses.
        drop(std::hint::black_box(Vec::<u8>::with_capacity(2048)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_fall_collects_twice_and_growth_or_small_falls_never() {
        let mut r = Reclaim::default();
        let seen: Vec<bool> = [
            0, 5000, 10_000, 9_900, 10_000, 300, 250, 200, 200, 1_000, 600,
        ]
        .into_iter()
        .map(|open| r.sweep(open))
        .collect();
        assert_eq!(
            seen,
            [
                false, false, false, false, false, true, true, false, false, false, false
            ]
        );
    }
}
