//! The feed of recent membership, health and reload events, kept for the admin page, with
//! running totals for `/metrics` (the feed forgets, the totals do not).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

/// How many events the feed keeps.
pub const CAPACITY: usize = 200;

/// One thing that happened to the balancer's view of the world.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the Unix epoch.
    pub at: f64,
    /// `membership`, `health`, `passive`, `reload`, `admin`.
    pub kind: &'static str,
    /// Pool name, if the event concerns one.
    pub pool: Option<String>,
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
pub struct Totals {
    /// Events by kind.
    pub by_kind: BTreeMap<&'static str, u64>,
    /// Membership changes by (pool, `joined` | `left`).
    pub membership: BTreeMap<(String, &'static str), u64>,
}

impl EventLog {
    /// Records an event and logs it at info.
    pub fn push(
        &self,
        kind: &'static str,
        pool: Option<&str>,
        member: Option<&str>,
        message: String,
    ) {
        tracing::info!(
            target: "balancer::events",
            kind,
            pool = pool.unwrap_or("-"),
            member = member.unwrap_or("-"),
            "{message}"
        );
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let ev = Event {
            at,
            kind,
            pool: pool.map(Into::into),
            member: member.map(Into::into),
            message,
        };
        *self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .by_kind
            .entry(kind)
            .or_default() += 1;
        let mut q = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if q.len() == CAPACITY {
            q.pop_front();
        }
        q.push_back(ev);
    }

    /// The events, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        let q = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        q.iter().cloned().collect()
    }

    /// Counts a member joining or leaving `pool` (`change` is `joined` or `left`).
    pub fn count_membership(&self, pool: &str, change: &'static str) {
        *self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .membership
            .entry((pool.to_owned(), change))
            .or_default() += 1;
    }

    /// Event counts since start.
    pub fn totals(&self) -> Totals {
        self.totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}
