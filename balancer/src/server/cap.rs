//! The connection cap (`max_connections`): how many client connections the balancer holds at
//! most, all workers together, and what it does at the cap.
//!
//! At the cap a worker still accepts, and closes the connection that has waited longest for a
//! request head (an idle keep-alive connection, or one dribbling its head) to make room
//! ([`super::idle`]): a flood of idle or slow connections then cannot lock real clients out,
//! because each new arrival pushes the oldest waiter out. This is nginx's answer (it reuses
//! idle keep-alive connections when `worker_connections` runs out). Only when no connection is
//! waiting (every one is in the middle of a request) does the worker stop accepting, as
//! HAProxy's `maxconn` does, and the kernel's backlog holds new connections until one closes.
//!
//! Why one cap for the whole balancer rather than per worker: the workers' shares of the
//! connections are kept even (`spread`), so the cap per worker would only add a number to
//! tune. Reached and cleared are logged once per episode, not per connection; the counters go
//! to `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// What a worker does about its next accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Accept {
    /// Accept: below the cap, or at it (`at_cap`) with a waiting connection to close for the
    /// newcomer.
    Yes {
        /// Whether the balancer is at the cap: the worker looks again shortly, in case the
        /// waiting connections turn busy meanwhile.
        at_cap: bool,
    },
    /// At the cap with no connection waiting for a head: leave new ones in the backlog.
    Pause,
}

/// Decides the next accept. `open`: client connections of every worker; `closing`: those of
/// them already chosen to close; `waiting`: this worker's connections waiting for a head.
pub(crate) fn before_accept(open: usize, closing: usize, waiting: usize, max: usize) -> Accept {
    let at_cap = open.saturating_sub(closing) >= max;
    if !at_cap || waiting > 0 {
        Accept::Yes { at_cap }
    } else {
        Accept::Pause
    }
}

/// After an accept (`open` counts the newcomer): how many waiting connections to close so the
/// balancer is back at the cap.
pub(crate) fn to_close(open: usize, closing: usize, max: usize) -> usize {
    open.saturating_sub(closing).saturating_sub(max)
}

/// Whether the balancer is far enough below the cap to call an episode over: 90 % (and at
/// least one below), so that a load hovering at the cap does not log an episode per connection.
pub(crate) fn cleared(open: usize, max: usize) -> bool {
    open < max && open <= max - max / 10
}

/// Warns when the descriptor limit is below the cap: the cap would never be reached, and
/// accepts would fail for want of descriptors instead (nginx warns alike about
/// `worker_connections`).
pub(crate) fn warn_if_over_fd_limit(max: usize) {
    let Some(limit) = open_files_limit() else {
        return;
    };
    if limit < max as u64 + 64 {
        tracing::warn!(
            max_connections = max,
            open_files_limit = limit,
            "max_connections exceeds the open-files limit (ulimit -n): raise the limit or lower \
             max_connections (BALANCER_MAX_CONNECTIONS)"
        );
    }
}

/// The soft `RLIMIT_NOFILE` from `/proc/self/limits` (no `unsafe` getrlimit); `None` if
/// unlimited or unknown.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What the cap did, for `/metrics`, and whether it is at the cap now.
#[derive(Debug, Default)]
pub struct CapCounters {
    capped: AtomicBool,
    reached: AtomicU64,
    closed: AtomicU64,
    head_timeouts: AtomicU64,
}

impl CapCounters {
    /// The balancer is at the cap (`open` connections): logs and counts an episode's start.
    pub(crate) fn reached(&self, open: usize, max: usize, closing_idle: bool) {
        if !self.capped.swap(true, Ordering::Relaxed) {
            self.reached.fetch_add(1, Ordering::Relaxed);
            if closing_idle {
                tracing::warn!(
                    open,
                    max_connections = max,
                    "connection cap reached: closing the connections idle longest to make room"
                );
            } else {
                tracing::warn!(
                    open,
                    max_connections = max,
                    "connection cap reached with every connection busy: new connections wait in the backlog"
                );
            }
        }
    }

    /// Ends an episode when `open` is well below the cap (logged once).
    pub(crate) fn check_cleared(&self, open: usize, max: usize) {
        if self.capped.load(Ordering::Relaxed)
            && cleared(open, max)
            && self.capped.swap(false, Ordering::Relaxed)
        {
            tracing::info!(
                open,
                max_connections = max,
                closed_for_cap = self.closed(),
                "below the connection cap again"
            );
        }
    }

    /// `n` waiting connections were closed to make room.
    pub(crate) fn add_closed(&self, n: usize) {
        self.closed.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A client's request head did not arrive within the head timeout.
    pub(crate) fn add_head_timeout(&self) {
        self.head_timeouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether the balancer is at the cap now (an episode is under way).
    pub fn capped(&self) -> bool {
        self.capped.load(Ordering::Relaxed)
    }

    /// Episodes of reaching the cap since start.
    pub fn times_reached(&self) -> u64 {
        self.reached.load(Ordering::Relaxed)
    }

    /// Connections closed to make room since start.
    pub fn closed(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }

    /// Request heads cut at the head timeout since start.
    pub fn head_timeouts(&self) -> u64 {
        self.head_timeouts.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_cap_or_with_someone_to_close_a_worker_accepts() {
        assert_eq!(before_accept(9, 0, 0, 10), Accept::Yes { at_cap: false });
        assert_eq!(
            before_accept(10, 0, 3, 10),
            Accept::Yes { at_cap: true },
            "one idle to close"
        );
        assert_eq!(before_accept(10, 0, 0, 10), Accept::Pause, "every one busy");
        assert_eq!(
            before_accept(11, 2, 0, 10),
            Accept::Yes { at_cap: false },
            "two on their way out"
        );
    }

    #[test]
    fn after_an_accept_over_the_cap_the_excess_is_closed() {
        assert_eq!(to_close(11, 0, 10), 1);
        assert_eq!(to_close(11, 1, 10), 0, "one already closing");
        assert_eq!(to_close(10, 0, 10), 0);
        assert_eq!(to_close(3, 5, 10), 0);
    }

    #[test]
    fn the_open_files_limit_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(open_files_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn an_episode_is_counted_once_and_ends_at_90_percent() {
        let c = CapCounters::default();
        c.reached(10, 10, true);
        c.reached(10, 10, true);
        assert_eq!(c.times_reached(), 1);
        c.check_cleared(10, 10);
        assert!(c.capped());
        c.check_cleared(9, 10);
        assert!(!c.capped());
        c.reached(10, 10, false);
        assert_eq!(c.times_reached(), 2);
        assert!(cleared(0, 1) && !cleared(1, 1));
    }
}
