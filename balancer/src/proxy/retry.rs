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
//! Hedging ([`super::hedge`] says when and why): while the one attempt out has not answered
//! by the hedge delay, the driver reports [`Attempts::on_hedge_timer`]; the answer is
//! [`Decision::Hedge`] (send the same request to another member, the first answer wins) at
//! most once per request, only for a request built with hedging on, within the retry budget's
//! time and when the pool's hedge budget allows. With two attempts out, a failed one is
//! charged and either replaced on a third member ([`Decision::Retry`], within `retries`) or
//! just left ([`Decision::Await`]): the other may still answer. A hedge does not use up one
//! of the `retries`: it is a second opinion, not a second chance.

use std::time::Instant;

use super::upstream::FailKind;
use crate::error::ProxyError;

/// Resends of a request whose pooled connection turned out closed; these are not the member's
/// fault and do not use the retry budget.
pub(crate) const MAX_STALE_RESENDS: u32 = 3;
/// Bound on members excluded by one request (retries are capped well below this).
const MAX_TRIED: usize = 12;

/// What the driver does after a failed attempt or a hedge timer.
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
    /// Charge the member and keep waiting for the attempt still out.
    Await,
    /// Send the same request to another member beside the one still out (a hedge).
    Hedge,
    /// Nothing to do: keep waiting.
    Wait,
}

impl Decision {
    /// Whether the failed member is charged with the failure (passive health, stats).
    pub(crate) fn charges_member(self) -> bool {
        matches!(
            self,
            Decision::Retry | Decision::GiveUp(_) | Decision::Await
        )
    }
}

/// The attempts made for one request, and what may still be tried.
#[derive(Debug)]
pub(crate) struct Attempts {
    /// Attempts allowed after the first (the pool's `retries`).
    retries: u32,
    /// No retry or hedge starts after this (the pool's retry budget from the request's
    /// arrival).
    deadline: Instant,
    /// Attempts counted (stale resends excluded): what the access log reports.
    made: u32,
    stale: u32,
    /// Attempts sent and not yet answered or failed.
    out: u32,
    /// Whether this request may be hedged at all (idempotent and sendable twice, pool on).
    may_hedge: bool,
    /// The number of the attempt sent as a hedge, 0 while none was.
    hedge: u32,
    /// Whether the request's one hedge was decided (sent, or found no member to go to).
    hedge_done: bool,
    /// Members left out of later picks (failed, or still out when the hedge went), in order.
    tried: [usize; MAX_TRIED],
    n_tried: usize,
    /// The answer if nothing succeeds.
    last_err: ProxyError,
}

impl Attempts {
    /// No attempt yet: `retries` more after the first, none starting after `deadline`, and a
    /// hedge possible when `may_hedge`.
    pub(crate) fn new(retries: u32, deadline: Instant, may_hedge: bool) -> Self {
        Attempts {
            retries,
            deadline,
            made: 0,
            stale: 0,
            out: 0,
            may_hedge,
            hedge: 0,
            hedge_done: false,
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
        self.out += 1;
        self.made
    }

    /// Attempts counted so far.
    pub(crate) fn made(&self) -> u32 {
        self.made
    }

    /// Attempts sent and not yet answered or failed.
    pub(crate) fn outstanding(&self) -> u32 {
        self.out
    }

    /// The number of the attempt that went as a hedge, if one did.
    pub(crate) fn hedged(&self) -> Option<u32> {
        (self.hedge != 0).then_some(self.hedge)
    }

    /// Whether a hedge timer is worth arming now: hedging on, none sent yet, one attempt out.
    pub(crate) fn hedge_pending(&self) -> bool {
        self.may_hedge && !self.hedge_done && self.out == 1
    }

    /// The answer when no member can be picked: 503 before any attempt, else the last
    /// failure's.
    pub(crate) fn exhausted(&self) -> ProxyError {
        self.last_err
    }

    /// The hedge delay ran out with the attempt on `member` still unanswered; `budget` says
    /// whether the pool's hedge budget allows one more. [`Decision::Hedge`] or
    /// [`Decision::Wait`].
    pub(crate) fn on_hedge_timer(&mut self, member: usize, budget: bool, now: Instant) -> Decision {
        if !self.hedge_pending() || !budget || now >= self.deadline {
            return Decision::Wait;
        }
        // The hedge goes elsewhere; the member still out keeps its attempt.
        self.leave_out(member);
        self.hedge_done = true;
        self.hedge = self.made + 1;
        Decision::Hedge
    }

    /// The hedge decided by [`Attempts::on_hedge_timer`] could not be sent (no other member
    /// to pick): the request keeps waiting on the one attempt out.
    pub(crate) fn hedge_unsent(&mut self) {
        if self.hedge == self.made + 1 {
            self.hedge = 0;
        }
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
        self.out = self.out.saturating_sub(1);
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
        self.leave_out(member);
        // A hedge is not one of the `retries`.
        let retried = self.made - u32::from(self.hedge != 0);
        let more = came_back && retried <= self.retries && now < self.deadline;
        match (more, self.out) {
            (true, _) => Decision::Retry,
            (false, 0) => Decision::GiveUp(self.last_err),
            (false, _) => Decision::Await,
        }
    }

    /// Leaves `member` out of this request's later picks.
    pub(crate) fn leave_out(&mut self, member: usize) {
        if self.n_tried < MAX_TRIED && !self.exclude().contains(&member) {
            self.tried[self.n_tried] = member;
            self.n_tried += 1;
        }
    }
}

#[cfg(test)]
mod tests;
