//! Hedged requests: when an idempotent request has had no response head from its member for
//! the **hedge delay**, the same request goes to another member and the first response head
//! wins; the other attempt is dropped, which closes its connection (a [`super::lease::Lease`]
//! dropped unfinished never goes back to the idle list). This module owns the two numbers that
//! decide it, per member and per pool, lock-free: the delay ([`MemberHedge::delay`]) and the
//! budget ([`budget_allows`]); the decision itself is the retry state machine's
//! ([`super::retry::Attempts::on_hedge_timer`]) and the racing of two attempts the driver's
//! ([`super::Proxy::forward`]).
//!
//! What the mature implementations do, and what we took:
//! - **gRPC (A6 `hedgingPolicy`)**: a fixed `hedgingDelay`, up to `maxAttempts` (≤ 5) copies
//!   in flight, the first non-fatal answer wins, the rest are cancelled; retries and hedges are
//!   throttled by one token bucket that failures drain and successes refill, and no hedge goes
//!   while it is below half. A hung member produces no failures until its timeout, so a
//!   failure-driven throttle would not see the load hedging adds: we count the hedges
//!   themselves instead (below).
//! - **Envoy (`hedge_on_per_try_timeout`)**: when an attempt's per-try timeout fires, another
//!   attempt starts without cancelling the first, and the first good response wins; retries
//!   are bounded by a retry budget (a percentage of active requests, with a small minimum
//!   concurrency). We take the "do not cancel the slow one" race, and a budget as a percentage
//!   with a minimum.
//! - **Finagle (`BackupRequestFilter`)**: one backup request, sent once the request has taken
//!   longer than a latency percentile of recent requests (chosen so that about
//!   `maxExtraLoad` of them get one), with a floor (`minSendBackupAfterMs`), and a budget that
//!   caps backups at `maxExtraLoad` of requests over a sliding window.
//!   We take the adaptive delay and the single backup.
//!
//! Our choices:
//! - **One hedge per request** (Finagle): at most twice the load for one request, and the
//!   case that matters (a member that hangs) is answered by any other member.
//! - **The delay adapts to the member the request is waiting on**:
//!   [`DELAY_FACTOR`] × its p99 time to response head over the last
//!   [`crate::stats::WINDOW_SECS`] seconds (the dashboard's recent percentiles, recomputed at
//!   most once a second per member, so the request path reads two atomics), clamped to the
//!   pool's `hedge_delay_min` and `hedge_delay_max`. A normally fast member hedges at the
//!   floor (tens of ms); a member whose answers are slow has a long delay and is not doubled.
//!   A member with no recent answers keeps its last p99 (a hung one stops answering, and must
//!   not look fast or slow because of it); one never seen answering waits the ceiling. Per
//!   member rather than per pool, because members of one pool may differ (a slower host).
//! - **The budget** (Finagle's `maxExtraLoad`, Envoy's budget): hedges sent to a pool's
//!   members over the last [`crate::stats::WINDOW_SECS`] seconds stay under `hedge_budget`
//!   percent of the responses its members gave in that window, plus [`MIN_HEDGES`] so that a
//!   quiet pool can still hedge. An overloaded pool is therefore never doubled: at 10 % it
//!   gets at most 10 % more requests. Checked only when a hedge timer fires.
//! - **Any response head wins**, 5xx included (gRPC waits for a non-fatal status): the
//!   balancer never retries on a status either, and a member that answers is not hung.
//! - **The loser is cancelled**: its future is dropped, its connection closed, never reused.
//!   Its answer is never seen, so the p99 would never learn that the member turned slow: how
//!   long it had waited when overtaken counts as a lower bound of the member's latency
//!   ([`MemberHedge::overtaken`]) until a window of its answers says better, and the next
//!   delay is at least twice that. A member that turned uniformly 50 ms slow is hedged once
//!   at 50 ms, then waited on for 100 ms and answers in time: it keeps its share, as the
//!   algorithm decides, instead of losing every race.
//! - **A hung member is charged, a slow one is not**: if the member the hedge overtook
//!   answered nothing at all while the hedge was out, and nothing since it was last overtaken
//!   so, it is charged a failure (passive detection, as for a timeout); active checks take it
//!   out as before. One silent loss alone is not enough: a member that just turned slow and
//!   has one request at a time (a quiet lab) answers nothing while its first request is
//!   overtaken, and with `max_fails = 1` would be ejected for it. Nor is a member that kept
//!   answering other requests meanwhile: it is alive and was only slow on this one (the tail
//!   hedging is for). Telling them apart costs one read of its response counters when the
//!   hedge goes, nothing on the request path.
//! - **Only what a retry could resend is hedged**: GET, HEAD, OPTIONS (and PUT, DELETE,
//!   TRACE) without a body, or with a small body the balancer kept whole
//!   ([`super::replay`]). A POST is never hedged: to a hung member it waits for the pool's
//!   `response_timeout` and gets 504, as in nginx and HAProxy.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::pool::{Member, Pool};
use crate::stats::{self, MemberStats, WINDOW_SECS};

/// The hedge delay is this multiple of the member's recent p99: a member answering as usual
/// is hedged for well under 1 % of its requests.
pub(crate) const DELAY_FACTOR: u64 = 2;

/// Hedges a pool may always send per window, whatever its traffic: a quiet pool with a hung
/// member still gets a few of its requests answered elsewhere.
pub(crate) const MIN_HEDGES: u64 = 5;

/// Ring slots: more than the window, so a slot being reused left it long ago.
const SLOTS: usize = WINDOW_SECS as usize + 2;

/// `p99_us` before any p99 was seen: the largest value, so no floor taken with `max` hides it.
const UNKNOWN: u64 = u64::MAX;

/// Silent losses in a row (overtaken with nothing answered meanwhile nor since the last one)
/// that charge the member: the second, so that a member that merely turned slow is not
/// charged for the one race it loses before its delay learns.
const SILENT_LOSSES_TO_CHARGE: u64 = 2;

/// A member's hedging counters and its cached p99. Written only when a hedge is sent or won,
/// and the p99 at most once a second: nothing here costs the request path more than two
/// relaxed loads.
#[derive(Debug)]
pub struct MemberHedge {
    /// Hedges sent to this member (it was the second member asked).
    sent: AtomicU64,
    /// Hedges sent to this member that answered first.
    won: AtomicU64,
    /// Hedges sent to this member per second, for the budget: (second, count) pairs.
    recent: [(AtomicU64, AtomicU64); SLOTS],
    /// The member's recent p99 (µs) when last computed; [`UNKNOWN`] before any.
    p99_us: AtomicU64,
    /// The coarse second `p99_us` was computed in.
    p99_second: AtomicU64,
    /// The longest a request had waited on this member when a hedge overtook it (µs): a floor
    /// under `p99_us` until a window of answers replaces it (kept while the member answers
    /// nothing, like `p99_us`, so that a member ejected for being slow comes back with the
    /// longer delay it had learnt); 0 when none.
    overtaken_us: AtomicU64,
    /// The coarse second its window first had answers since it was last overtaken.
    answering_since: AtomicU64,
    /// Silent losses in a row, and the member's response count at the last one.
    silent_losses: AtomicU64,
    silent_at: AtomicU64,
}

impl Default for MemberHedge {
    fn default() -> Self {
        MemberHedge {
            sent: AtomicU64::new(0),
            won: AtomicU64::new(0),
            recent: std::array::from_fn(|_| (AtomicU64::new(u64::MAX), AtomicU64::new(0))),
            p99_us: AtomicU64::new(UNKNOWN),
            p99_second: AtomicU64::new(u64::MAX),
            overtaken_us: AtomicU64::new(0),
            answering_since: AtomicU64::new(u64::MAX),
            silent_losses: AtomicU64::new(0),
            silent_at: AtomicU64::new(u64::MAX),
        }
    }
}

impl MemberHedge {
    /// Hedges sent to this member.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Hedges sent to this member that won the race.
    pub fn won(&self) -> u64 {
        self.won.load(Ordering::Relaxed)
    }

    /// Counts a hedge sent to this member in second `now`.
    pub fn add_sent(&self, now: u64) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let (second, count) = &self.recent[(now % SLOTS as u64) as usize];
        if second.load(Ordering::Relaxed) != now && second.swap(now, Ordering::Relaxed) != now {
            // First hedge of a new second in this slot; a racing count may be lost, which
            // only errs towards one hedge more.
            count.store(0, Ordering::Relaxed);
        }
        count.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a hedge to this member that answered first.
    pub fn add_won(&self) {
        self.won.fetch_add(1, Ordering::Relaxed);
    }

    /// Its window has answers in second `now`: once they have for a whole window since it
    /// was last overtaken, they tell how slow it is, and the floor goes.
    fn answering(&self, now: u64) {
        if self.overtaken_us.load(Ordering::Relaxed) == 0 {
            return;
        }
        let since = self.answering_since.load(Ordering::Relaxed);
        if since == u64::MAX {
            self.answering_since.store(now, Ordering::Relaxed);
        } else if now.saturating_sub(since) >= WINDOW_SECS {
            self.overtaken_us.store(0, Ordering::Relaxed);
        }
    }

    /// A hedge overtook a request that had waited `waited` on this member; `answered` is the
    /// member's response count now, `before` when the hedge went. Returns whether to charge
    /// the member (see the module doc). Relaxed: two workers racing here can only miscount
    /// one loss.
    pub(crate) fn overtaken(&self, waited: Duration, answered: u64, before: u64) -> bool {
        let waited_us = waited.as_micros().min(u128::from(u64::MAX)) as u64;
        self.answering_since.store(u64::MAX, Ordering::Relaxed);
        self.overtaken_us.fetch_max(waited_us, Ordering::Relaxed);
        if answered != before {
            self.silent_losses.store(0, Ordering::Relaxed);
            return false;
        }
        let in_a_row = if self.silent_at.swap(answered, Ordering::Relaxed) == answered {
            self.silent_losses.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.silent_losses.store(1, Ordering::Relaxed);
            1
        };
        in_a_row >= SILENT_LOSSES_TO_CHARGE
    }

    /// Hedges sent to this member in the window ending at second `now`.
    pub fn recent(&self, now: u64) -> u64 {
        self.recent
            .iter()
            .filter(|(s, _)| {
                let s = s.load(Ordering::Relaxed);
                s <= now && now - s < WINDOW_SECS
            })
            .map(|(_, c)| c.load(Ordering::Relaxed))
            .sum()
    }

    /// How long a request waits on this member before it is hedged, at second `now`:
    /// [`DELAY_FACTOR`] × its recent p99 within `floor..=ceiling`.
    pub fn delay(
        &self,
        stats: &MemberStats,
        now: u64,
        floor: Duration,
        ceiling: Duration,
    ) -> Duration {
        if self.p99_second.load(Ordering::Relaxed) != now {
            self.p99_second.store(now, Ordering::Relaxed);
            if let Some(p99) = stats.recent.window(now).quantile_us(0.99) {
                self.p99_us.store(p99 as u64, Ordering::Relaxed);
                self.answering(now);
            }
        }
        // UNKNOWN is the largest value: a member never seen answering keeps the ceiling.
        let p99 = self
            .p99_us
            .load(Ordering::Relaxed)
            .max(self.overtaken_us.load(Ordering::Relaxed));
        delay_for(p99, floor, ceiling)
    }
}

/// The delay for a member whose recent p99 is `p99_us` ([`UNKNOWN`]: never answered).
fn delay_for(p99_us: u64, floor: Duration, ceiling: Duration) -> Duration {
    if p99_us == UNKNOWN {
        return ceiling.max(floor);
    }
    Duration::from_micros(p99_us.saturating_mul(DELAY_FACTOR)).clamp(floor, ceiling.max(floor))
}

/// Whether `hedges` more than... sent in a window with `responses` stay within `percent`.
fn within(hedges: u64, responses: u64, percent: u32) -> bool {
    hedges < MIN_HEDGES + responses * u64::from(percent) / 100
}

/// Whether the pool's hedge budget allows one more hedge now: hedges to its members over the
/// window stay under `hedge_budget` percent of their responses, plus [`MIN_HEDGES`]. Reads
/// every member's window (a few thousand relaxed loads): only when a hedge timer fires.
pub(crate) fn budget_allows(pool: &Pool) -> bool {
    let now = stats::current_second();
    let (mut hedges, mut responses) = (0, 0);
    for m in &pool.members {
        hedges += m.hedge.recent(now);
        responses += m.stats.recent.window(now).count();
    }
    within(hedges, responses, pool.settings.hedge.budget_percent)
}

/// The hedge delay of a request waiting on `member` in `pool`.
pub(crate) fn delay(pool: &Pool, member: &Member) -> Duration {
    let h = &pool.settings.hedge;
    member.hedge.delay(
        &member.stats,
        stats::coarse_second(),
        h.delay_min,
        h.delay_max,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_delay_is_a_multiple_of_the_p99_within_floor_and_ceiling() {
        let (floor, ceiling) = (20 * MS, 1000 * MS);
        assert_eq!(
            delay_for(1_000, floor, ceiling),
            floor,
            "fast member: the floor"
        );
        assert_eq!(delay_for(30_000, floor, ceiling), 60 * MS);
        assert_eq!(
            delay_for(900_000, floor, ceiling),
            ceiling,
            "slow member: the ceiling"
        );
        assert_eq!(
            delay_for(UNKNOWN, floor, ceiling),
            ceiling,
            "never answered"
        );
        assert_eq!(
            delay_for(1, 50 * MS, 10 * MS),
            50 * MS,
            "floor above ceiling"
        );
    }

    #[test]
    fn the_delay_follows_recent_answers_and_keeps_the_last_p99_when_they_stop() {
        let (stats, hedge) = (MemberStats::default(), MemberHedge::default());
        let (floor, ceiling) = (MS, 10_000 * MS);
        assert_eq!(hedge.delay(&stats, 100, floor, ceiling), ceiling);
        for _ in 0..100 {
            stats.recent.record(101, 50_000);
        }
        let d = hedge.delay(&stats, 101, floor, ceiling);
        assert!(d >= 90 * MS && d <= 120 * MS, "{d:?}");
        // A hung member: nothing in the window any more, the last p99 stays.
        assert_eq!(hedge.delay(&stats, 200, floor, ceiling), d);
    }

    #[test]
    fn an_overtaken_request_raises_the_delay_for_a_window() {
        let (stats, hedge) = (MemberStats::default(), MemberHedge::default());
        let (floor, ceiling) = (20 * MS, 500 * MS);
        for _ in 0..100 {
            stats.recent.record(100, 1_000);
        }
        assert_eq!(hedge.delay(&stats, 100, floor, ceiling), floor, "fast");
        // It turned 50 ms slow: overtaken after 51 ms of waiting.
        hedge.overtaken(51 * MS, 100, 100);
        assert_eq!(hedge.delay(&stats, 100, floor, ceiling), 102 * MS);
        assert_eq!(
            hedge.delay(&stats, 130, floor, ceiling),
            102 * MS,
            "no answers since: the floor stays"
        );
        for s in 131..=140 {
            stats.recent.record(s, 1_000);
            assert_eq!(
                hedge.delay(&stats, s, floor, ceiling),
                102 * MS,
                "second {s}"
            );
        }
        stats.recent.record(141, 1_000);
        assert_eq!(
            hedge.delay(&stats, 141, floor, ceiling),
            floor,
            "a window of fast answers since"
        );
    }

    #[test]
    fn only_the_second_silent_loss_in_a_row_charges() {
        let h = MemberHedge::default();
        let waited = 60 * MS;
        assert!(!h.overtaken(waited, 7, 7), "first silent loss");
        assert!(
            h.overtaken(waited, 7, 7),
            "second, nothing answered between"
        );
        assert!(h.overtaken(waited, 7, 7), "and every one after");
        assert!(!h.overtaken(waited, 9, 8), "it answered during the race");
        assert!(
            !h.overtaken(waited, 12, 12),
            "silent, but it answered since"
        );
        assert!(h.overtaken(waited, 12, 12));
    }

    #[test]
    fn the_budget_is_a_share_of_responses_plus_a_minimum() {
        assert!(within(0, 0, 10));
        assert!(within(MIN_HEDGES - 1, 0, 10));
        assert!(!within(MIN_HEDGES, 0, 10), "a quiet pool gets the minimum");
        assert!(within(MIN_HEDGES + 9, 100, 10));
        assert!(!within(MIN_HEDGES + 10, 100, 10), "10 % of 100 responses");
        assert!(!within(MIN_HEDGES, 1_000_000, 0), "0 % is the minimum only");
    }

    #[test]
    fn hedges_leave_the_window_after_it() {
        let h = MemberHedge::default();
        h.add_sent(100);
        h.add_sent(100);
        h.add_sent(105);
        assert_eq!(h.recent(105), 3);
        assert_eq!(h.recent(110), 1, "second 100 left the window");
        assert_eq!(h.sent(), 3);
        h.add_sent(100 + SLOTS as u64);
        // The slot of second 100 is reused: its two old hedges are gone, 105 still counts.
        assert_eq!(h.recent(100 + SLOTS as u64), 2);
    }
}
