//! The closed sets a [`super::Member`]'s atomics encode (operator state, health, presence in
//! its pool), and what its last active check saw.

/// Whether an operator took a member out of rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum AdminState {
    /// In rotation.
    Enabled = 0,
    /// Finishes in-flight work, gets nothing new.
    Drained = 1,
}

/// What active health checks last concluded about a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// No check configured or not yet decided: treated as up.
    Unknown = 0,
    /// Passing checks.
    Up = 1,
    /// Failing checks: gets no new requests until it rises.
    Down = 2,
    /// The backend said it is shutting down (503 `draining`): leaving, gets nothing new.
    Draining = 3,
}

impl Health {
    pub(super) fn from_u8(v: u8) -> Self {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            3 => Health::Draining,
            _ => Health::Unknown,
        }
    }
}

/// Where a member stands in its pool's membership (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Presence {
    /// Listed by its source (config, discovery, registration): may be picked.
    Listed = 0,
    /// Discovery no longer lists it: it gets nothing new while a probe decides whether it is
    /// gone (then `down`) or was still answering.
    Leaving = 1,
    /// The probe has spoken: the next rebuild drops it.
    Gone = 2,
    /// Dropped from the pool: events about it are no longer recorded.
    Left = 3,
}

impl Presence {
    pub(super) fn from_u8(v: u8) -> Self {
        match v {
            1 => Presence::Leaving,
            2 => Presence::Gone,
            3 => Presence::Left,
            _ => Presence::Listed,
        }
    }
}

/// What an active health probe concluded; serialized as its lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CheckResult {
    /// The member answered with the expected status.
    Pass,
    /// It did not (status, refused, timeout).
    Fail,
    /// It said it is shutting down (503 `draining`).
    Draining,
}

impl CheckResult {
    /// The lower-case name (API, dashboard).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CheckResult::Pass => "pass",
            CheckResult::Fail => "fail",
            CheckResult::Draining => "draining",
        }
    }
}

/// What the last active health probe of a member saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastCheck {
    /// When it completed, in [`crate::clock::now_ms`] units.
    pub(crate) at_ms: u64,
    /// What it concluded.
    pub(crate) result: CheckResult,
    /// What was seen (`status 500`, `connection refused`), empty on a pass.
    pub(crate) detail: String,
}
