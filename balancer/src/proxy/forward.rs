//! The attempts of one request: sends it to members as the retry state machine
//! ([`super::retry`]) decides, races a hedge beside an attempt that is slow to answer
//! ([`super::hedge`]), and hands the first response head on.
//!
//! Up to two attempts are out at once, each a future polled by this task (no spawned task, no
//! channel). The first lives in the request's own future; the second, needed only once a
//! hedge goes, is boxed then, so a request that is never hedged pays for one timer and
//! nothing else. Dropping an attempt's future cancels it: its connection is closed, never
//! returned to the idle list.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use http::Response;

use super::access_log::{HedgeOutcome, Unanswered};
use super::body::RespBody;
use super::plan::{Picked, Plan, Prepared, choose, prepare};
use super::retry::{Attempts, Decision};
use super::upstream::{self, FailKind, Outgoing};
use super::{ClientBody, Proxy, hedge};
use crate::clock;
use crate::pool::{InFlight, Member};
use crate::stats;

/// An attempt on its way.
struct Flight<'p> {
    idx: usize,
    member: &'p Arc<Member>,
    /// Its number among the request's attempts (1 for the first).
    n: u32,
    /// Counts it in the member's in-flight requests until it ends.
    guard: InFlight,
    sent_at: Instant,
    /// The member's response count when a hedge went beside this attempt.
    answered_before_hedge: u64,
}

/// Which of the two attempt slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The first slot, in the request's own future.
    A,
    /// The second, boxed when a hedge needs it.
    B,
}

/// What woke the request up.
enum Event<T> {
    /// The attempt in a slot ended.
    Done(Side, T),
    /// The hedge delay ran out.
    HedgeTimer,
}

impl Proxy {
    /// Sends the request to members until one answers or the retry policy ([`super::retry`])
    /// gives up, and streams the answer back.
    pub(super) async fn forward(
        &self,
        req: http::Request<ClientBody>,
        plan: Plan<'_>,
        mut log: Unanswered<'_>,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<RespBody> {
        let ps = &plan.pool.settings;
        let (req, how) = prepare(req, &plan);
        let mut attempt = how.attempt(&plan);
        let fwd = Prepared::forwarding(&plan);
        let hedging = ps.hedge.enabled && how.hedgeable() && plan.pool.members.len() > 1;
        let mut attempts = Attempts::new(ps.retries, plan.start + ps.retry_budget, hedging);
        // A request without a body stays here and is lent to each attempt (two at once when
        // hedged); one with a body travels with its attempt and comes back on failure.
        let (lent, mut given) = if how.direct {
            (Some(req), None)
        } else {
            (None, Some(req))
        };
        let mut a = pin!(None);
        let mut b = None;
        let (mut fa, mut fb): (Option<Flight<'_>>, Option<Flight<'_>>) = (None, None);
        let mut timer = pin!(None::<tokio::time::Sleep>);
        let mut send = true;
        let err = loop {
            if std::mem::take(&mut send) {
                let outgoing = match (&lent, given.take()) {
                    (Some(r), _) => Some(Outgoing::Lent(r, fwd)),
                    (None, r) => r.map(Outgoing::Given),
                };
                // A retry beside an attempt still out goes elsewhere too.
                if let Some(other) = fa.as_ref().or(fb.as_ref()) {
                    attempts.leave_out(other.idx);
                }
                let now_ms = clock::now_ms();
                let (Some(idx), Some(outgoing)) = (choose(&plan, &attempts, now_ms), outgoing)
                else {
                    if attempts.outstanding() == 0 {
                        break attempts.exhausted();
                    }
                    // No member for the hedge: wait on the attempt out.
                    attempts.hedge_unsent();
                    continue;
                };
                let member = &plan.pool.members[idx];
                let n = attempts.begin();
                if attempts.hedged() == Some(n) {
                    member.hedge.add_sent(stats::coarse_second());
                } else if n > 1 {
                    member.stats.add_retry();
                }
                let guard = member.begin_request();
                // Named before the answer, so a client that leaves meanwhile is logged against
                // the member it was waiting for, and a final failure against the last one tried.
                if let Some(l) = log.as_mut() {
                    l.upstream = Some(member.addr);
                    l.attempts = n;
                }
                let mut this = attempt;
                this.fresh = attempts.fresh();
                let fut = upstream::send(member.addr, outgoing, this);
                let flight = Some(Flight {
                    idx,
                    member,
                    n,
                    guard,
                    sent_at: Instant::now(),
                    answered_before_hedge: 0,
                });
                if fa.is_none() {
                    a.set(Some(fut));
                    fa = flight;
                } else {
                    b = Some(Box::pin(fut));
                    fb = flight;
                }
                if attempts.hedge_pending() {
                    let delay = hedge::delay(plan.pool, member);
                    timer.set(Some(tokio::time::sleep(delay)));
                }
            }
            let event = std::future::poll_fn(|cx| {
                if let Some(f) = a.as_mut().as_pin_mut()
                    && let Poll::Ready(r) = f.poll(cx)
                {
                    return Poll::Ready(Event::Done(Side::A, r));
                }
                if let Some(f) = b.as_mut()
                    && let Poll::Ready(r) = Pin::as_mut(f).poll(cx)
                {
                    return Poll::Ready(Event::Done(Side::B, r));
                }
                if let Some(t) = timer.as_mut().as_pin_mut()
                    && t.poll(cx).is_ready()
                {
                    return Poll::Ready(Event::HedgeTimer);
                }
                Poll::Pending
            })
            .await;
            let (side, result) = match event {
                Event::HedgeTimer => {
                    timer.set(None);
                    let Some(out) = fa.as_mut().or(fb.as_mut()) else {
                        continue;
                    };
                    let budget = hedge::budget_allows(plan.pool);
                    if attempts.on_hedge_timer(out.idx, budget, Instant::now()) != Decision::Hedge {
                        continue;
                    }
                    out.answered_before_hedge = out.member.stats.total_responses();
                    if lent.is_none() {
                        // A body goes again only from the kept copy, once it has all arrived.
                        given = how.replay.as_ref().and_then(|r| r.request());
                        if given.is_none() {
                            attempts.hedge_unsent();
                            continue;
                        }
                        attempt.sent = None;
                    }
                    send = true;
                    continue;
                }
                Event::Done(side, result) => (side, result),
            };
            let flight = match side {
                Side::A => {
                    a.set(None);
                    fa.take()
                }
                Side::B => {
                    b = None;
                    fb.take()
                }
            };
            let Some(Flight {
                idx,
                member,
                n,
                guard,
                sent_at,
                ..
            }) = flight
            else {
                continue;
            };
            let failure = match result {
                Ok(mut answer) => {
                    member.record_success();
                    let micros = sent_at.elapsed().as_micros() as u64;
                    let status = answer.status();
                    member.stats.record_response(status.as_u16(), micros);
                    // Strips the member's load report (never for clients), whichever path or
                    // attempt (hedge or not) answered, and feeds the pool's algorithm; see
                    // `pool::load`.
                    let (algorithm, bal) = (ps.algorithm, &ps.balancing);
                    let at = clock::now_ms();
                    let headers = answer.headers_mut();
                    member
                        .load
                        .observe(algorithm, bal, headers, status, micros, at);
                    // The other attempt is cancelled here (its future dropped, its connection
                    // closed). If it was the one the hedge overtook, its member learns how
                    // long it kept the request, and is charged as for a timeout if it looks
                    // hung rather than slow (`hedge` module doc).
                    let loser = fa.take().or(fb.take());
                    a.set(None);
                    drop(b.take());
                    let outcome = match (attempts.hedged(), loser) {
                        (Some(h), loser) if h == n => {
                            member.hedge.add_won();
                            if let Some(l) = loser.filter(|l| {
                                l.member.hedge.overtaken(
                                    l.sent_at.elapsed(),
                                    l.member.stats.total_responses(),
                                    l.answered_before_hedge,
                                )
                            }) {
                                let now_ms = clock::now_ms();
                                self.record_failure(plan.pool, l.member, FailKind::Timeout, now_ms);
                            }
                            HedgeOutcome::Won
                        }
                        (Some(_), _) => HedgeOutcome::Lost,
                        (None, _) => HedgeOutcome::None,
                    };
                    if let Some(l) = log.as_mut() {
                        l.upstream = Some(member.addr);
                        l.attempts = attempts.made();
                        l.hedge = outcome;
                    }
                    let picked = Picked { idx, member };
                    return self.respond(answer, picked, &plan, guard, log.take(), client_upgrade);
                }
                Err(failure) => failure,
            };
            drop(guard);
            let came_back = match (&lent, failure.request) {
                (Some(_), _) => failure.came_back,
                (None, Some(r)) => {
                    given = Some(r);
                    true
                }
                (None, None) => {
                    given = how.replay.as_ref().and_then(|r| r.request());
                    // The copy is all here: the member's time starts when it is sent, not
                    // when the client's last byte came in for the first attempt.
                    attempt.sent = None;
                    given.is_some()
                }
            };
            let kind = failure.kind;
            let decision = attempts.on_failure(idx, kind, came_back, Instant::now());
            if decision.charges_member() {
                self.record_failure(plan.pool, member, kind, clock::now_ms());
            }
            match decision {
                Decision::Resend => send = true,
                Decision::Retry => {
                    tracing::debug!(member = %member.addr, ?kind, attempts = n, "retrying on another member");
                    send = true;
                }
                Decision::Answer(e) => {
                    return self.local(e, &ps.name, &plan.rid, log.take(), true);
                }
                Decision::GiveUp(e) => break e,
                Decision::Await | Decision::Hedge | Decision::Wait => {}
            }
        };
        if let Some(l) = log.as_mut() {
            l.attempts = attempts.made();
            l.hedge = match attempts.hedged() {
                Some(_) => HedgeOutcome::Lost,
                None => HedgeOutcome::None,
            };
        }
        self.local(err, &ps.name, &plan.rid, log.take(), false)
    }
}
