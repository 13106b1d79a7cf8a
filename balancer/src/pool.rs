//! A pool's members and the per-member state they carry across config rebuilds.
//!
//! A [`Member`] is shared as `Arc<Member>`: the request path reads it lock-free (atomics only),
//! health checks, passive failure detection and the admin API flip its state, and a reload that
//! keeps the same address reuses the same `Arc`, so counters, health and sticky identity survive.
//!
//! A member also knows where it stands in its pool's membership ([`Presence`]): a member that
//! discovery stops listing is `Leaving` (no new requests) until a probe says whether it is gone,
//! and once a rebuild drops it, it is `Left`: requests still in flight on it finish, but nothing
//! they or a late probe see about it is recorded as an event any more.

pub(crate) mod load;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::clock;
use crate::stats::MemberStats;

mod states;

pub use states::Health;
pub(crate) use states::{AdminState, CheckResult, LastCheck, Presence};

/// Selection weights are in 1/100 of a configured weight unit (see [`Member::selection_weight`]).
pub(crate) const WEIGHT_SCALE: u32 = 100;

/// Opaque, stable identity of a member: a keyed hash of its address, safe to put in a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberId(pub u64);

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// One backend address in a pool, with everything the data path needs to decide on it.
#[derive(Debug)]
pub struct Member {
    /// Where connections go.
    pub addr: SocketAddr,
    /// The address as the config wrote it (`student-api:3000`), for logs and the admin page.
    pub(crate) origin: Arc<str>,
    /// Sticky identity, derived from `addr` with the sticky key; a reload with a new sticky
    /// secret re-derives it in place, so the member keeps its state.
    id: AtomicU64,
    /// `addr` ready to send as `X-Upstream`.
    pub(crate) upstream_header: http::HeaderValue,
    /// Weight in use (the admin API may change it); 0 means "never picked".
    weight: AtomicU32,
    /// Weight the config gave; a reload only overrides an admin change when this changes.
    config_weight: AtomicU32,
    /// Requests currently being forwarded to this member.
    in_flight: AtomicU32,
    /// Passive failure state: failures counted in the current window.
    fails: AtomicU32,
    /// Start of the current failure window, in [`clock::now_ms`] units.
    fail_window_start: AtomicU64,
    /// Passive ejection: the member is skipped until this instant (ms); 0 = not ejected.
    ejected_until: AtomicU64,
    /// When the last failure happened (ms): a failed attempt or a failed health probe. The
    /// least recently failed member is the last resort when none is available.
    last_fail: AtomicU64,
    health: AtomicU8,
    admin: AtomicU8,
    /// A [`Presence`].
    presence: AtomicU8,
    /// Slow start: when the member joined or recovered (ms); 0 = no ramp in progress.
    ramp_start: AtomicU64,
    /// Counters for the admin page and metrics.
    pub stats: MemberStats,
    /// Hedges sent to and won by this member, and its cached hedge delay.
    pub hedge: crate::proxy::hedge::MemberHedge,
    /// What its answers say about its load (latency estimate, ORCA reports).
    pub(crate) load: load::MemberLoad,
    /// The last active health probe, for the admin page. Only the checker writes it and only
    /// the admin API reads it, never the request path, so a mutex is fine.
    last_check: Mutex<Option<LastCheck>>,
}

/// Passive failure detection settings of a pool (nginx's `max_fails` / `fail_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PassivePolicy {
    /// Failures within `fail_timeout_ms` that eject a member; 0 disables ejection.
    pub(crate) max_fails: u32,
    /// Window for counting failures, and how long an ejected member stays out.
    pub(crate) fail_timeout_ms: u64,
}

impl Member {
    /// Sticky identity (see [`crate::sticky::member_id`]).
    pub(crate) fn id(&self) -> MemberId {
        MemberId(self.id.load(Ordering::Relaxed))
    }

    /// Re-derives the sticky identity (a new sticky secret).
    pub(crate) fn set_id(&self, id: MemberId) {
        self.id.store(id.0, Ordering::Relaxed);
    }

    /// A fresh member in rotation with the given weight.
    pub fn new(addr: SocketAddr, origin: Arc<str>, id: MemberId, weight: u32) -> Self {
        Member {
            addr,
            origin,
            id: AtomicU64::new(id.0),
            weight: AtomicU32::new(weight),
            config_weight: AtomicU32::new(weight),
            upstream_header: http::HeaderValue::from_str(&addr.to_string())
                .unwrap_or_else(|_| http::HeaderValue::from_static("unknown")),
            in_flight: AtomicU32::new(0),
            fails: AtomicU32::new(0),
            fail_window_start: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            last_fail: AtomicU64::new(0),
            health: AtomicU8::new(Health::Unknown as u8),
            admin: AtomicU8::new(AdminState::Enabled as u8),
            presence: AtomicU8::new(Presence::Listed as u8),
            ramp_start: AtomicU64::new(0),
            stats: MemberStats::default(),
            hedge: crate::proxy::hedge::MemberHedge::default(),
            load: load::MemberLoad::default(),
            last_check: Mutex::new(None),
        }
    }

    /// Records the outcome of an active health probe.
    pub(crate) fn record_check(&self, check: LastCheck) {
        *self
            .last_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(check);
    }

    /// The last active health probe, if any ran.
    pub(crate) fn last_check(&self) -> Option<LastCheck> {
        self.last_check
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Configured weight.
    pub(crate) fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

    /// The weight the config gives it (the one in use unless an admin action changed it).
    pub fn config_weight(&self) -> u32 {
        self.config_weight.load(Ordering::Relaxed)
    }

    /// Changes the weight in use (admin action).
    pub(crate) fn set_weight(&self, w: u32) {
        self.weight.store(w, Ordering::Relaxed);
    }

    /// Applies the weight from a (re)loaded config; an admin override survives a reload that
    /// did not change this member's configured weight.
    pub(crate) fn apply_config_weight(&self, w: u32) {
        if self.config_weight.swap(w, Ordering::Relaxed) != w {
            self.weight.store(w, Ordering::Relaxed);
        }
    }

    /// Weight used for selection right now, in 1/[`WEIGHT_SCALE`] units: the configured weight,
    /// ramped during slow start (the fine scale lets even a weight-1 member ramp smoothly).
    pub(crate) fn selection_weight(&self, now_ms: u64, slow_start_ms: u64) -> u32 {
        let full = self.weight() * WEIGHT_SCALE;
        let start = self.ramp_start.load(Ordering::Relaxed);
        if slow_start_ms == 0 || start == 0 || full == 0 {
            return full;
        }
        let elapsed = now_ms.saturating_sub(start);
        if elapsed >= slow_start_ms {
            return full;
        }
        // Never 0 while ramping, so a lone fresh member still gets traffic.
        ((u64::from(full) * elapsed / slow_start_ms) as u32).max(1)
    }

    /// Weight now in configured units (rounded up), for display.
    pub(crate) fn effective_weight(&self, now_ms: u64, slow_start_ms: u64) -> u32 {
        self.selection_weight(now_ms, slow_start_ms)
            .div_ceil(WEIGHT_SCALE)
    }

    /// Starts a slow-start ramp now (member joined or recovered).
    pub(crate) fn begin_ramp(&self, now_ms: u64) {
        self.ramp_start.store(now_ms.max(1), Ordering::Relaxed);
    }

    /// Whether a slow-start ramp is in progress.
    pub(crate) fn ramping(&self, now_ms: u64, slow_start_ms: u64) -> bool {
        let start = self.ramp_start.load(Ordering::Relaxed);
        slow_start_ms > 0 && start != 0 && now_ms.saturating_sub(start) < slow_start_ms
    }

    /// Requests in flight to this member.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the returned guard drops.
    pub(crate) fn begin_request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    /// Current health verdict.
    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    /// Records a new health verdict; returns the previous one.
    pub(crate) fn set_health(&self, h: Health) -> Health {
        Health::from_u8(self.health.swap(h as u8, Ordering::Relaxed))
    }

    /// Operator state.
    pub(crate) fn admin_state(&self) -> AdminState {
        match self.admin.load(Ordering::Relaxed) {
            1 => AdminState::Drained,
            _ => AdminState::Enabled,
        }
    }

    /// Sets the operator state.
    pub(crate) fn set_admin_state(&self, s: AdminState) {
        self.admin.store(s as u8, Ordering::Relaxed);
    }

    /// Where the member stands in its pool's membership.
    pub(crate) fn presence(&self) -> Presence {
        Presence::from_u8(self.presence.load(Ordering::Relaxed))
    }

    /// Moves the member to `p`; returns where it stood before.
    pub(crate) fn set_presence(&self, p: Presence) -> Presence {
        Presence::from_u8(self.presence.swap(p as u8, Ordering::Relaxed))
    }

    /// Discovery stopped listing the member: it turns `Leaving` unless a probe already found
    /// it gone. Returns whether it stays in the pool (as leaving).
    pub(crate) fn keep_leaving(&self) -> bool {
        self.presence
            .fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |p| match Presence::from_u8(p) {
                    Presence::Listed | Presence::Leaving => Some(Presence::Leaving as u8),
                    Presence::Gone | Presence::Left => None,
                },
            )
            .is_ok()
    }

    /// Listed again (back in DNS while leaving): back in rotation.
    pub(crate) fn relist(&self) {
        if matches!(self.presence(), Presence::Leaving | Presence::Gone) {
            self.set_presence(Presence::Listed);
        }
    }

    /// Whether passive detection currently has this member ejected.
    pub(crate) fn ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now_ms
    }

    /// When the member last failed (ms, 0 = never).
    pub(crate) fn last_fail(&self) -> u64 {
        self.last_fail.load(Ordering::Relaxed)
    }

    /// Whether the member may receive a new request: listed, enabled, not failing checks, not
    /// leaving, not passively ejected, and with a non-zero weight.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.presence() == Presence::Listed
            && self.admin_state() == AdminState::Enabled
            && matches!(self.health(), Health::Unknown | Health::Up)
            && !self.ejected(now_ms)
            && self.weight() > 0
    }

    /// Whether the member may still be tried as a last resort when nothing is available:
    /// only an operator's drain, a backend that announced it is leaving, or discovery no
    /// longer listing it rule it out.
    pub(crate) fn is_last_resort(&self) -> bool {
        self.presence() == Presence::Listed
            && self.admin_state() == AdminState::Enabled
            && self.health() != Health::Draining
            && self.weight() > 0
    }

    /// Notes when the member last failed, for the last-resort choice; an active probe that
    /// fails calls only this (checks have their own rise/fall counters).
    pub(crate) fn note_failure(&self, now_ms: u64) {
        self.last_fail.store(now_ms.max(1), Ordering::Relaxed);
    }

    /// Records a failed attempt (connect error, reset, timeout). Returns true when this failure
    /// ejected the member.
    pub(crate) fn record_failure(&self, now_ms: u64, policy: PassivePolicy) -> bool {
        self.note_failure(now_ms);
        if policy.max_fails == 0 {
            return false;
        }
        let window = self.fail_window_start.load(Ordering::Relaxed);
        let fails = if now_ms.saturating_sub(window) > policy.fail_timeout_ms {
            // A new window; a racing thread may reset too, which only undercounts by one.
            self.fail_window_start.store(now_ms, Ordering::Relaxed);
            self.fails.store(1, Ordering::Relaxed);
            1
        } else {
            self.fails.fetch_add(1, Ordering::Relaxed) + 1
        };
        if fails >= policy.max_fails && !self.ejected(now_ms) {
            self.ejected_until
                .store(now_ms + policy.fail_timeout_ms, Ordering::Relaxed);
            self.fails.store(0, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Records a successful exchange: clears an ejection that has run out.
    pub(crate) fn record_success(&self) {
        if self.fails.load(Ordering::Relaxed) != 0 {
            self.fails.store(0, Ordering::Relaxed);
        }
    }
}

/// RAII count of one in-flight request; least-connections and P2C read the count.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Member>);

impl InFlight {
    /// The member this request went to.
    pub(crate) fn member(&self) -> &Arc<Member> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One pool of one config snapshot: its settings, members and selector.
#[derive(Debug)]
pub struct Pool {
    /// Settings of this pool.
    pub settings: crate::config::PoolSettings,
    /// Members, in a stable order (the selector's indices).
    pub members: Vec<Arc<Member>>,
    /// The selection algorithm with its state; shared with the next snapshot while the pool's
    /// algorithm and member list stay the same, so unrelated changes don't reset it.
    pub(crate) selector: Arc<dyn crate::select::Select>,
    /// Passive failure detection policy.
    pub(crate) passive: PassivePolicy,
    /// With cookie stickiness, each member's `Set-Cookie` value (same order as `members`),
    /// made once per snapshot rather than once per response.
    pub(crate) cookies: Vec<Option<http::HeaderValue>>,
}

impl Pool {
    /// Index of the member with sticky id `id`.
    pub(crate) fn find(&self, id: MemberId) -> Option<usize> {
        self.members.iter().position(|m| m.id() == id)
    }
}

/// Milliseconds on the process clock (re-exported for selectors and tests).
pub fn now_ms() -> u64 {
    clock::now_ms()
}

#[cfg(test)]
mod tests;
