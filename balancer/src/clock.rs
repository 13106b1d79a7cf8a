//! The process clock in milliseconds, cheap enough to read once per request, and the lazily
//! armed idle timer the streams of the request path share.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

static START: OnceLock<Instant> = OnceLock::new();

/// Milliseconds since the process first asked; never 0 so that 0 can mean "never".
pub(crate) fn now_ms() -> u64 {
    let start = *START.get_or_init(Instant::now);
    start.elapsed().as_millis() as u64 + 1
}

thread_local! {
    /// The `Date` value of the current second, made once a second per thread.
    static DATE: std::cell::RefCell<(u64, [u8; 29])> = const { std::cell::RefCell::new((0, [0; 29])) };
}

/// Now as an HTTP date (`Sun, 22 Nov 2026 05:30:57 GMT`), for responses that lack one.
pub(crate) fn http_date() -> [u8; 29] {
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                d.1.copy_from_slice(text.as_bytes());
                d.0 = secs;
            }
        }
        d.1
    })
}

/// An idle timer armed lazily: nothing while the stream it guards keeps producing, one timer
/// (kept for reuse) from the first wait after progress.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    /// The longest pause allowed.
    pub(crate) fn limit(&self) -> Duration {
        self.limit
    }

    /// A timer for pauses of at most `limit`.
    pub(crate) fn new(limit: Duration) -> Self {
        IdleTimer {
            limit,
            timer: None,
            armed: false,
        }
    }

    /// The stream produced something: the next wait starts a new period.
    pub(crate) fn progressed(&mut self) {
        self.armed = false;
    }

    /// Call while the stream is pending: ready once it has waited `limit` since progress.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.armed {
            self.armed = true;
            let deadline = tokio::time::Instant::now() + self.limit;
            match &mut self.timer {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        self.timer
            .as_mut()
            .map_or(Poll::Pending, |t| t.as_mut().poll(cx))
    }
}
