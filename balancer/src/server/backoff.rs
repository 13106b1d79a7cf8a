//! How long a worker waits after a failed `accept`. Most failures (EMFILE, ENFILE, ENOBUFS)
//! last until some connection closes, so retrying at once would spin a core; a fixed long
//! wait would leave the listener idle well after they cleared. The wait starts short and
//! doubles up to a cap, and a successful accept resets it: Go's `net/http` server does
//! exactly this (5 ms doubling to 1 s). An episode of failures is logged once, at its start and end, so a
//! descriptor shortage does not flood the log.

use std::time::Duration;

/// The wait after the first failure of an episode.
pub(super) const FIRST: Duration = Duration::from_millis(5);
/// The longest wait.
pub(super) const MAX: Duration = Duration::from_secs(1);

/// The backoff state of one listener. Pure: the caller sleeps and logs.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    /// The wait after the next failure; `None` outside an episode.
    next: Option<Duration>,
    /// Failures in the current episode.
    failures: u64,
}

/// What to do after a failed accept.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Pause {
    /// How long to sleep before accepting again.
    pub(super) wait: Duration,
    /// The failure begins an episode (log it).
    pub(super) first: bool,
}

impl Backoff {
    /// An accept failed.
    pub(super) fn failed(&mut self) -> Pause {
        let wait = self.next.unwrap_or(FIRST);
        self.next = Some((wait * 2).min(MAX));
        self.failures += 1;
        Pause {
            wait,
            first: self.failures == 1,
        }
    }

    /// An accept succeeded; returns how many failures the episode it ends had (0: none).
    pub(super) fn succeeded(&mut self) -> u64 {
        self.next = None;
        std::mem::take(&mut self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waits(b: &mut Backoff, n: usize) -> Vec<u64> {
        (0..n).map(|_| b.failed().wait.as_millis() as u64).collect()
    }

    #[test]
    fn the_wait_doubles_from_5ms_to_a_1s_cap() {
        let mut b = Backoff::default();
        assert_eq!(
            waits(&mut b, 10),
            [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]
        );
    }

    #[test]
    fn a_success_ends_the_episode_and_restarts_at_5ms() {
        let mut b = Backoff::default();
        assert!(b.failed().first);
        assert!(!b.failed().first);
        assert!(!b.failed().first);
        assert_eq!(b.succeeded(), 3);
        assert_eq!(b.succeeded(), 0, "a quiet accept ends nothing");
        let again = b.failed();
        assert_eq!(
            again,
            Pause {
                wait: FIRST,
                first: true
            }
        );
    }
}
