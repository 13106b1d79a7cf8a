//! The retry policy of one request, as a pure state machine: the I/O driver
//! ([`super::Proxy::forward`]) reports each failed attempt with [`Attempts::on_failure`] and
//! does what the returned [`Decision`] says; nothing here touches a socket or a clock.
//!
//! The rules (nginx's `proxy_next_upstream`, HAProxy's `retries` and `redispatch`):
//! - A pooled connection the member had already closed is not the member's fault: the request
//!   is sent again by the same selection rules ([`Decision::Resend`]), on a fresh connection, up
//!   to [`MAX_STALE_RESENDS`] times, and the resend does not count as an attempt.
//! - A failure that is the client's (body too large, broken or stalled upload) is answered at
//!   once ([`Decision::Answer`]): another member would get the same body.
//! - Any other failure is the member's: it is charged, excluded from this request's later
//!   picks, and the request goes to another member ([`Decision::Retry`]) while it came back
//!   (provably unsent, resendable, or replayable), `retries` allows another attempt and the
//!   retry budget has time left; otherwise [`Decision::GiveUp`] with 504 if the last failure
//!   was a timeout (connect or response), 502 if not.
//!
//! Which member comes next (the sticky one first, then the pool's algorithm, and when every
//! member is out the least recently failed) is the selection's business; this type only says
//! which members to leave out ([`Attempts::exclude`]) and whether a pick is the first.
//!
//! Events in, decisions out, so another policy is another state or decision, not another local
//! in the driver: hedging (gRPC's A6 `hedgingPolicy`: send again after a delay without waiting
//! for the first answer) adds an `on_hedge_timer` event answered by a `Decision::Hedge` while
//! fewer than `max_attempts` are out, and counts outstanding attempts beside `made`.

use std::time::Instant;

use super::upstream::FailKind;
use crate::error::ProxyError;

/// Resends of a request whose pooled connection turned out closed; these are not the member's
/// fault and do not use the retry budget.
pub(crate) const MAX_STALE_RESENDS: u32 = 3;
/// Bound on members excluded by one request (retries are capped well below this).
const MAX_TRIED: usize = 12;

/// What the driver does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Send the request again by the same rules; the member is not charged.
    Resend,
    /// Charge the member and try another one.
    Retry,
    /// Answer the client with this error now (its own fault); the member is not charged.
    Answer(ProxyError),
    /// Charge the member and answer the client with this error.
    GiveUp(ProxyError),
}

impl Decision {
    /// Whether the failed member is charged with the failure (passive health, stats).
    pub(crate) fn charges_member(self) -> bool {
        matches!(self, Decision::Retry | Decision::GiveUp(_))
    }
}

/// The attempts made for one request, and what may still be tried.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// Attempts allowed after the first (the pool's `retries`).
    retries: u32,
    /// No retry starts after this (the pool's retry budget from the request's arrival).
    deadline: Instant,
    /// Attempts counted (stale resends excluded): what the access log reports.
    made: u32,
    stale: u32,
    /// Members that failed this request, in order.
    tried: [usize; MAX_TRIED],
    n_tried: usize,
    /// The answer if nothing succeeds.
    last_err: ProxyError,
}

impl Attempts {
    /// No attempt yet: `retries` more after the first, none starting after `deadline`.
    pub(crate) fn new(retries: u32, deadline: Instant) -> Self {
        Attempts {
            retries,
            deadline,
            made: 0,
            stale: 0,
            tried: [usize::MAX; MAX_TRIED],
            n_tried: 0,
            last_err: ProxyError::NoBackend,
        }
    }

    /// Whether no attempt has been counted yet (the sticky member is picked only then).
    pub(crate) fn is_first(&self) -> bool {
        self.made == 0
    }

    /// Members the next pick leaves out.
    pub(crate) fn exclude(&self) -> &[usize] {
        &self.tried[..self.n_tried]
    }

    /// Whether the next attempt opens a new connection: after a reused one closed under the
    /// request, so a request that itself kills the member is charged on the next try instead
    /// of being resent on every pooled connection.
    pub(crate) fn fresh(&self) -> bool {
        self.stale > 0
    }

    /// Counts an attempt about to be sent; returns its number (1 for the first).
    pub(crate) fn begin(&mut self) -> u32 {
        self.made += 1;
        self.made
    }

    /// Attempts counted so far.
    pub(crate) fn made(&self) -> u32 {
        self.made
    }

    /// The answer when no member can be picked: 503 before any attempt, else the last
    /// failure's.
    pub(crate) fn exhausted(&self) -> ProxyError {
        self.last_err
    }

    /// The attempt on `member` failed with `kind`; `came_back` says whether the request can
    /// be sent again, `now` is when the failure was seen.
    pub(crate) fn on_failure(
        &mut self,
        member: usize,
        kind: FailKind,
        came_back: bool,
        now: Instant,
    ) -> Decision {
        match kind {
            FailKind::TooLarge => return Decision::Answer(ProxyError::BodyTooLarge),
            FailKind::ClientBody => return Decision::Answer(ProxyError::BadRequest),
            FailKind::ClientStalled => return Decision::Answer(ProxyError::RequestTimeout),
            FailKind::Stale if self.stale < MAX_STALE_RESENDS => {
                self.stale += 1;
                self.made -= 1;
                return Decision::Resend;
            }
            _ => {}
        }
        self.last_err = match kind {
            FailKind::Timeout | FailKind::ConnectTimeout => ProxyError::UpstreamTimeout,
            _ => ProxyError::UpstreamFailed,
        };
        if self.n_tried < MAX_TRIED {
            self.tried[self.n_tried] = member;
            self.n_tried += 1;
        }
        if !came_back || self.made > self.retries || now >= self.deadline {
            return Decision::GiveUp(self.last_err);
        }
        Decision::Retry
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(60)
    }

    /// Attempts after `n` were begun.
    fn begun(retries: u32, n: u32) -> Attempts {
        let mut a = Attempts::new(retries, later());
        for _ in 0..n {
            a.begin();
        }
        a
    }

    #[test]
    fn a_member_failure_retries_on_another_member_and_excludes_it() {
        let mut a = begun(2, 1);
        assert_eq!(
            a.on_failure(3, FailKind::Connect, true, Instant::now()),
            Decision::Retry
        );
        assert_eq!(a.exclude(), &[3]);
        assert!(!a.is_first());
        assert_eq!(a.begin(), 2);
    }

    #[test]
    fn retries_stop_after_the_configured_count_with_the_last_error() {
        let mut a = begun(1, 1);
        assert_eq!(
            a.on_failure(0, FailKind::Reset, true, Instant::now()),
            Decision::Retry
        );
        a.begin();
        assert_eq!(
            a.on_failure(1, FailKind::Reset, true, Instant::now()),
            Decision::GiveUp(ProxyError::UpstreamFailed)
        );
        assert_eq!(a.made(), 2);
        assert_eq!(a.exclude(), &[0, 1]);
    }

    #[test]
    fn no_retries_configured_means_the_first_failure_is_final() {
        let mut a = begun(0, 1);
        assert_eq!(
            a.on_failure(0, FailKind::Connect, true, Instant::now()),
            Decision::GiveUp(ProxyError::UpstreamFailed)
        );
    }

    #[test]
    fn a_request_that_did_not_come_back_is_not_retried() {
        let mut a = begun(3, 1);
        assert_eq!(
            a.on_failure(0, FailKind::Reset, false, Instant::now()),
            Decision::GiveUp(ProxyError::UpstreamFailed)
        );
    }

    #[test]
    fn the_retry_budget_ends_retries_once_it_is_spent() {
        let start = Instant::now();
        let mut a = Attempts::new(5, start + Duration::from_millis(100));
        a.begin();
        assert_eq!(
            a.on_failure(
                0,
                FailKind::Connect,
                true,
                start + Duration::from_millis(99)
            ),
            Decision::Retry
        );
        a.begin();
        assert_eq!(
            a.on_failure(
                1,
                FailKind::Connect,
                true,
                start + Duration::from_millis(100)
            ),
            Decision::GiveUp(ProxyError::UpstreamFailed)
        );
    }

    #[test]
    fn timeouts_answer_504_and_other_member_failures_502() {
        for (kind, err) in [
            (FailKind::Timeout, ProxyError::UpstreamTimeout),
            (FailKind::ConnectTimeout, ProxyError::UpstreamTimeout),
            (FailKind::Connect, ProxyError::UpstreamFailed),
            (FailKind::Reset, ProxyError::UpstreamFailed),
            (FailKind::Invalid, ProxyError::UpstreamFailed),
        ] {
            let mut a = begun(0, 1);
            assert_eq!(
                a.on_failure(0, kind, true, Instant::now()),
                Decision::GiveUp(err),
                "{kind:?}"
            );
            assert_eq!(a.exhausted(), err);
        }
    }

    #[test]
    fn the_last_failure_decides_the_status_when_no_member_is_left() {
        let mut a = begun(3, 1);
        a.on_failure(0, FailKind::Timeout, true, Instant::now());
        a.begin();
        a.on_failure(1, FailKind::Connect, true, Instant::now());
        assert_eq!(a.exhausted(), ProxyError::UpstreamFailed);
    }

    #[test]
    fn with_no_attempt_made_the_answer_is_no_backend() {
        let a = Attempts::new(3, later());
        assert!(a.is_first());
        assert_eq!(a.exhausted(), ProxyError::NoBackend);
        assert_eq!(a.made(), 0);
    }

    #[test]
    fn client_faults_are_answered_at_once_without_charging_the_member() {
        for (kind, err) in [
            (FailKind::TooLarge, ProxyError::BodyTooLarge),
            (FailKind::ClientBody, ProxyError::BadRequest),
            (FailKind::ClientStalled, ProxyError::RequestTimeout),
        ] {
            let mut a = begun(3, 1);
            let d = a.on_failure(0, kind, true, Instant::now());
            assert_eq!(d, Decision::Answer(err), "{kind:?}");
            assert!(!d.charges_member());
            assert!(a.exclude().is_empty());
        }
    }

    #[test]
    fn a_stale_connection_is_resent_uncounted_on_a_fresh_connection() {
        let mut a = begun(0, 1);
        assert!(!a.fresh());
        let d = a.on_failure(0, FailKind::Stale, true, Instant::now());
        assert_eq!(d, Decision::Resend);
        assert!(!d.charges_member());
        assert!(a.fresh());
        assert!(a.is_first(), "a resend keeps the first pick's rules");
        assert!(a.exclude().is_empty());
        assert_eq!(a.begin(), 1, "a resend is not another attempt");
    }

    #[test]
    fn stale_resends_are_bounded_then_charged_like_a_member_failure() {
        let mut a = begun(0, 1);
        for _ in 0..MAX_STALE_RESENDS {
            assert_eq!(
                a.on_failure(0, FailKind::Stale, true, Instant::now()),
                Decision::Resend
            );
            a.begin();
        }
        let d = a.on_failure(0, FailKind::Stale, true, Instant::now());
        assert_eq!(d, Decision::GiveUp(ProxyError::UpstreamFailed));
        assert!(d.charges_member());
        assert_eq!(a.made(), 1);
    }

    #[test]
    fn stale_resends_do_not_use_up_retries() {
        let mut a = begun(1, 1);
        a.on_failure(0, FailKind::Stale, true, Instant::now());
        a.begin();
        assert_eq!(
            a.on_failure(0, FailKind::Connect, true, Instant::now()),
            Decision::Retry
        );
    }

    #[test]
    fn exclusions_are_bounded() {
        let mut a = begun(100, 0);
        for i in 0..20 {
            a.begin();
            a.on_failure(i, FailKind::Connect, true, Instant::now());
        }
        assert_eq!(a.exclude(), &(0..MAX_TRIED).collect::<Vec<_>>()[..]);
    }
}
