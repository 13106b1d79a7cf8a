//! When to log: once when registration first succeeds, once per outage, once on recovery.
//! A pure state machine so the heartbeat loop can call it every tick without flooding logs.

/// What kind of failure a heartbeat met. A change of kind during an outage is logged again,
/// since the fix differs (start the balancer vs. fix the token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The balancer answered 401 or 403: a configuration error on one side or the other.
    Auth,
    /// Anything else: not resolvable, not reachable, timed out, another status.
    Other,
}

/// Something worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The first heartbeat that succeeded.
    Registered,
    /// Heartbeats started failing (or failed from the start, or changed kind of failure).
    Failing(FailureKind),
    /// A heartbeat succeeded again after failures.
    Recovered,
}

/// Where the registration stands, as far as the log is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Reporter {
    /// No heartbeat has succeeded or failed yet.
    #[default]
    Starting,
    /// The last heartbeat succeeded.
    Up,
    /// The last heartbeat failed with this kind.
    Down(FailureKind),
}

impl Reporter {
    /// Records one heartbeat's outcome; `Some` when it deserves a log line.
    pub fn record(&mut self, outcome: Result<(), FailureKind>) -> Option<Event> {
        let (next, event) = match (*self, outcome) {
            (Self::Starting, Ok(())) => (Self::Up, Some(Event::Registered)),
            (Self::Up, Ok(())) => (Self::Up, None),
            (Self::Down(_), Ok(())) => (Self::Up, Some(Event::Recovered)),
            (Self::Down(was), Err(kind)) if was == kind => (Self::Down(kind), None),
            (_, Err(kind)) => (Self::Down(kind), Some(Event::Failing(kind))),
        };
        *self = next;
        event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureKind::{Auth, Other};

    fn run(outcomes: &[Result<(), FailureKind>]) -> Vec<Option<Event>> {
        let mut r = Reporter::default();
        outcomes.iter().map(|&o| r.record(o)).collect()
    }

    #[test]
    fn first_success_is_logged_once() {
        assert_eq!(
            run(&[Ok(()), Ok(()), Ok(())]),
            [Some(Event::Registered), None, None]
        );
    }

    #[test]
    fn an_outage_is_logged_once_and_its_recovery_once() {
        assert_eq!(
            run(&[Ok(()), Err(Other), Err(Other), Err(Other), Ok(()), Ok(())]),
            [
                Some(Event::Registered),
                Some(Event::Failing(Other)),
                None,
                None,
                Some(Event::Recovered),
                None
            ]
        );
    }

    #[test]
    fn failing_from_the_start_then_succeeding_counts_as_recovery() {
        assert_eq!(
            run(&[Err(Other), Err(Other), Ok(())]),
            [Some(Event::Failing(Other)), None, Some(Event::Recovered)]
        );
    }

    #[test]
    fn a_new_kind_of_failure_is_logged_again() {
        assert_eq!(
            run(&[Err(Other), Err(Auth), Err(Auth), Err(Other)]),
            [
                Some(Event::Failing(Other)),
                Some(Event::Failing(Auth)),
                None,
                Some(Event::Failing(Other))
            ]
        );
    }
}
