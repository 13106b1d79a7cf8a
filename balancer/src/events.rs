//! The feed of recent membership, health and reload events, kept for the admin page, with
//! running totals for `/metrics` (the feed forgets, the totals do not).
//!
//! Events about a member go through [`EventLog::push_member`], which drops them once the
//! member has left its pool: marking a member [`Presence::Left`] and recording that it left
//! happen under the same lock as that check, so nothing about a member comes after its `left`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::pool::{Member, Presence};

/// How many events the feed keeps.
pub(crate) const CAPACITY: usize = 200;

/// What an event is about; serialized (API, logs, metrics labels) as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A member joined, is leaving or left a pool.
    Membership,
    /// An active health check changed a member's state.
    Health,
    /// Passive detection ejected a member.
    Passive,
    /// A config reload was applied or rejected.
    Reload,
    /// An admin action (enable, disable, drain, weight).
    Admin,
}

impl EventKind {
    /// Every kind, in the order `/metrics` lists them.
    pub(crate) const ALL: [EventKind; 5] = [
        EventKind::Membership,
        EventKind::Health,
        EventKind::Passive,
        EventKind::Reload,
        EventKind::Admin,
    ];

    /// The lower-case name (API, dashboard, metrics label).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventKind::Membership => "membership",
            EventKind::Health => "health",
            EventKind::Passive => "passive",
            EventKind::Reload => "reload",
            EventKind::Admin => "admin",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A change in a pool's membership, counted for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum MembershipChange {
    /// A member was added.
    Joined,
    /// A member was removed.
    Left,
}

impl MembershipChange {
    /// Both changes, in the order `/metrics` lists them.
    pub(crate) const ALL: [MembershipChange; 2] =
        [MembershipChange::Joined, MembershipChange::Left];

    /// The metrics label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MembershipChange::Joined => "joined",
            MembershipChange::Left => "left",
        }
    }
}

/// One thing that happened to the balancer's view of the world.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub(crate) at: f64,
    /// What it is about.
    pub kind: EventKind,
    /// Pool name, if the event concerns one.
    pub(crate) pool: Option<String>,
    /// Member address, if the event concerns one.
    pub member: Option<String>,
    /// Human-readable description (`up -> down: connection refused`).
    pub message: String,
}

/// A bounded, newest-last list of events.
#[derive(Debug, Default)]
pub struct EventLog {
    inner: Mutex<VecDeque<Event>>,
    totals: Mutex<Totals>,
}

/// Event counts since start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    /// Events by kind.
    pub(crate) by_kind: BTreeMap<EventKind, u64>,
    /// Membership changes by pool and change.
    pub(crate) membership: BTreeMap<(String, MembershipChange), u64>,
}

/// An event stamped now.
fn event(kind: EventKind, pool: Option<&str>, member: Option<&str>, message: String) -> Event {
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    Event {
        at,
        kind,
        pool: pool.map(Into::into),
        member: member.map(Into::into),
        message,
    }
}

impl EventLog {
    /// Records an event and logs it at info.
    pub(crate) fn push(
        &self,
        kind: EventKind,
        pool: Option<&str>,
        member: Option<&str>,
        message: String,
    ) {
        let ev = event(kind, pool, member, message);
        self.append(&mut self.lock(), ev);
    }

    /// Records an event about `member` of `pool`, unless the member has left it (an in-flight
    /// request or a probe that ends after that must not speak about it). Returns whether it
    /// was recorded.
    pub(crate) fn push_member(
        &self,
        kind: EventKind,
        pool: &str,
        member: &Member,
        message: String,
    ) -> bool {
        let ev = event(kind, Some(pool), Some(&member.addr.to_string()), message);
        let mut q = self.lock();
        if member.presence() == Presence::Left {
            return false;
        }
        self.append(&mut q, ev);
        true
    }

    /// Marks `member` as having left `pool` and records that (`message`) as a `membership`
    /// event: the last event about it.
    pub(crate) fn push_left(&self, pool: &str, member: &Member, message: String) {
        let ev = event(
            EventKind::Membership,
            Some(pool),
            Some(&member.addr.to_string()),
            message,
        );
        let mut q = self.lock();
        member.set_presence(Presence::Left);
        self.append(&mut q, ev);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn append(&self, q: &mut VecDeque<Event>, ev: Event) {
        tracing::info!(
            target: "balancer::events",
            kind = ev.kind.as_str(),
            pool = ev.pool.as_deref().unwrap_or("-"),
            member = ev.member.as_deref().unwrap_or("-"),
            "{}",
            ev.message
        );
        *self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_kind
            .entry(ev.kind)
            .or_default() += 1;
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back(ev);
    }

    /// The events, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        self.lock().iter().cloned().collect()
    }

    /// Counts a member joining or leaving `pool`.
    pub(crate) fn count_membership(&self, pool: &str, change: MembershipChange) {
        *self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .membership
            .entry((pool.to_owned(), change))
            .or_default() += 1;
    }

    /// Event counts since start.
    pub(crate) fn totals(&self) -> Totals {
        self.totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_about_a_member_is_recorded_after_it_left() {
        let log = EventLog::default();
        let m = Member::new(
            "127.0.0.1:1".parse().unwrap(),
            "x".into(),
            crate::pool::MemberId(1),
            1,
        );
        assert!(log.push_member(EventKind::Health, "p", &m, "up -> down".into()));
        log.push_left("p", &m, "member left".into());
        assert!(!log.push_member(EventKind::Passive, "p", &m, "ejected".into()));
        let kinds: Vec<_> = log.recent().iter().map(|e| e.message.clone()).collect();
        assert_eq!(kinds, ["up -> down", "member left"]);
    }

    #[test]
    fn kinds_are_written_as_their_lower_case_names() {
        for kind in EventKind::ALL {
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, kind.as_str());
            assert_eq!(kind.to_string(), kind.as_str());
        }
        assert_eq!(EventKind::Membership.as_str(), "membership");
    }
}
