//! Active health checks: a pure rise/fall counter ([`Tracker`], HAProxy semantics) apart from
//! the task that probes members and applies its verdicts.
//!
//! Only members their source still lists are checked here. A member that discovery stopped
//! listing gets one probe from the control loop instead ([`departure_probe`]): a failure takes it
//! `down` at once, whatever `fall` says, so a killed replica is seen going down before it leaves.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock;
use crate::config::HealthSettings;
use crate::events::EventKind;
use crate::pool::{CheckResult, Health, LastCheck, Member, Presence};
use crate::state::Shared;

/// What one probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The expected status.
    Pass,
    /// The member said it is shutting down (503 with `draining`).
    Draining,
    /// Anything else, with a short reason.
    Fail(String),
}

/// Consecutive-result counter for one member: `fall` failures take it down, `rise` passes
/// bring it back. A draining answer takes it out at once.
#[derive(Debug, Clone)]
pub(crate) struct Tracker {
    state: Health,
    /// Consecutive probes in one direction: positive passes, negative failures.
    streak: i64,
    rise: u32,
    fall: u32,
}

impl Tracker {
    /// A member not yet checked (treated as up until checks say otherwise).
    pub(crate) fn new(rise: u32, fall: u32) -> Self {
        Tracker {
            state: Health::Unknown,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    /// Current verdict.
    pub(crate) fn state(&self) -> Health {
        self.state
    }

    /// Records one probe; returns the new state when it changed.
    pub(crate) fn record(&mut self, probe: &Probe) -> Option<Health> {
        let next = match (probe, self.state) {
            (Probe::Draining, Health::Draining) => return None,
            (Probe::Draining, _) => Health::Draining,
            (Probe::Pass, Health::Up) => {
                self.streak = 0;
                return None;
            }
            // First verdict: one pass is enough for a member that was never down.
            (Probe::Pass, Health::Unknown) => Health::Up,
            (Probe::Pass, _) => {
                self.streak = self.streak.max(0) + 1;
                if self.streak < i64::from(self.rise) {
                    return None;
                }
                Health::Up
            }
            (Probe::Fail(_), Health::Down) => {
                self.streak = 0;
                return None;
            }
            (Probe::Fail(_), _) => {
                self.streak = self.streak.min(0) - 1;
                if -self.streak < i64::from(self.fall) {
                    return None;
                }
                Health::Down
            }
        };
        self.state = next;
        self.streak = 0;
        Some(next)
    }
}

/// GETs `path` on `addr` and classifies the answer.
pub(crate) async fn probe(addr: SocketAddr, h: &HealthSettings) -> Probe {
    match tokio::time::timeout(h.timeout, probe_once(addr, &h.path)).await {
        Ok(Ok((status, _))) if status.as_u16() == h.expect_status => Probe::Pass,
        Ok(Ok((StatusCode::SERVICE_UNAVAILABLE, body))) if body.contains("draining") => {
            Probe::Draining
        }
        Ok(Ok((status, _))) => Probe::Fail(format!("status {}", status.as_u16())),
        Ok(Err(e)) => Probe::Fail(e),
        Err(_) => Probe::Fail(format!("no answer within {:?}", h.timeout)),
    }
}

async fn probe_once(addr: SocketAddr, path: &str) -> Result<(StatusCode, String), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    let conn = tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, addr.to_string())
        .header(http::header::USER_AGENT, "lab-stack-balancer-health")
        .header(http::header::CONNECTION, "close")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    // Bodies of health endpoints are tiny; cap what is read anyway.
    let body = http_body_util::Limited::new(resp.into_body(), 4096)
        .collect()
        .await
        .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
        .unwrap_or_default();
    conn.abort();
    Ok((status, body))
}

struct Result_ {
    pool: Arc<str>,
    member: Arc<Member>,
    probe: Probe,
}

/// Probes every member of every pool with checks on, each at its pool's interval, and applies
/// transitions to the members. Runs until `stop`.
pub(crate) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    let (tx, mut rx) = mpsc::channel::<Result_>(256);
    let mut trackers: HashMap<(Arc<str>, SocketAddr), (Tracker, u64, bool)> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => schedule(&shared, &mut trackers, &tx),
            Some(r) = rx.recv() => apply(&shared, &mut trackers, r),
            () = stop.cancelled() => return,
        }
    }
}

fn schedule(
    shared: &Arc<Shared>,
    trackers: &mut HashMap<(Arc<str>, SocketAddr), (Tracker, u64, bool)>,
    tx: &mpsc::Sender<Result_>,
) {
    let snap = shared.snapshot();
    let now = clock::now_ms();
    let mut live = std::collections::HashSet::new();
    for pool in &snap.pools {
        let Some(h) = pool.settings.health.clone() else {
            // Checks turned off (by a reload): a verdict they left behind must not keep a
            // member out of rotation.
            for m in &pool.members {
                if m.health() != Health::Unknown {
                    m.set_health(Health::Unknown);
                }
            }
            continue;
        };
        for m in &pool.members {
            let key = (Arc::clone(&pool.settings.name), m.addr);
            live.insert(key.clone());
            if m.presence() != Presence::Listed {
                // Leaving: the control loop's single probe decides on it.
                continue;
            }
            let entry = trackers
                .entry(key)
                .or_insert_with(|| (Tracker::new(h.rise, h.fall), 0, false));
            let (_, last, busy) = entry;
            if *busy || now.saturating_sub(*last) < h.interval.as_millis() as u64 {
                continue;
            }
            *last = now;
            *busy = true;
            let (tx, member, pool_name, h) = (
                tx.clone(),
                Arc::clone(m),
                Arc::clone(&pool.settings.name),
                h.clone(),
            );
            tokio::spawn(async move {
                let probe = probe(member.addr, &h).await;
                let _ = tx
                    .send(Result_ {
                        pool: pool_name,
                        member,
                        probe,
                    })
                    .await;
            });
        }
    }
    // Members that left, or pools whose checks were turned off, forget their counters.
    trackers.retain(|k, _| live.contains(k));
}

fn apply(
    shared: &Arc<Shared>,
    trackers: &mut HashMap<(Arc<str>, SocketAddr), (Tracker, u64, bool)>,
    r: Result_,
) {
    let Some((tracker, _, busy)) = trackers.get_mut(&(Arc::clone(&r.pool), r.member.addr)) else {
        return;
    };
    *busy = false;
    let now_ms = clock::now_ms();
    note_probe(&r.member, &r.probe, now_ms);
    let before = tracker.state();
    let Some(next) = tracker.record(&r.probe) else {
        return;
    };
    r.member.set_health(next);
    if next == Health::Up && before == Health::Down {
        r.member.begin_ramp(now_ms);
    }
    let reason = match &r.probe {
        Probe::Pass => "check passed".to_owned(),
        Probe::Draining => "member reports draining".to_owned(),
        Probe::Fail(e) => e.clone(),
    };
    shared.events.push_member(
        EventKind::Health,
        &r.pool,
        &r.member,
        format!("{} -> {}: {reason}", health_name(before), health_name(next)),
    );
}

/// Records a probe's outcome on the member (last check, last failure).
fn note_probe(member: &Member, probe: &Probe, now_ms: u64) {
    let (result, detail) = match probe {
        Probe::Pass => (CheckResult::Pass, String::new()),
        Probe::Draining => (CheckResult::Draining, "member reports draining".to_owned()),
        Probe::Fail(e) => (CheckResult::Fail, e.clone()),
    };
    if matches!(probe, Probe::Fail(_)) {
        member.note_failure(now_ms);
    }
    member.record_check(LastCheck {
        at_ms: now_ms,
        result,
        detail,
    });
}

/// Applies the one probe of a member that discovery stopped listing: a failure marks it
/// `down` (with the reason, as an event, before it leaves); a pass or a draining answer is a
/// replica leaving in good order and is only noted.
pub(crate) fn departure_probe(shared: &Shared, pool: &str, member: &Member, probe: &Probe) {
    note_probe(member, probe, clock::now_ms());
    let Probe::Fail(reason) = probe else {
        return;
    };
    let before = member.set_health(Health::Down);
    if before != Health::Down {
        shared.events.push_member(
            EventKind::Health,
            pool,
            member,
            format!(
                "{} -> down: {reason} (no longer listed by discovery)",
                health_name(before)
            ),
        );
    }
}

/// Lower-case name of a health state, for logs and the admin API.
pub(crate) fn health_name(h: Health) -> &'static str {
    match h {
        Health::Unknown => "unknown",
        Health::Up => "up",
        Health::Down => "down",
        Health::Draining => "draining",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Probe {
        Probe::Fail("refused".into())
    }

    #[test]
    fn fall_takes_down_after_consecutive_failures() {
        let mut t = Tracker::new(2, 3);
        assert_eq!(t.record(&Probe::Pass), Some(Health::Up));
        assert_eq!(t.record(&fail()), None);
        assert_eq!(t.record(&fail()), None);
        assert_eq!(t.record(&fail()), Some(Health::Down));
        assert_eq!(t.record(&fail()), None);
    }

    #[test]
    fn a_pass_resets_the_failure_streak() {
        let mut t = Tracker::new(2, 2);
        t.record(&Probe::Pass);
        assert_eq!(t.record(&fail()), None);
        assert_eq!(t.record(&Probe::Pass), None);
        assert_eq!(t.record(&fail()), None);
        assert_eq!(t.record(&fail()), Some(Health::Down));
    }

    #[test]
    fn rise_brings_back_after_consecutive_passes() {
        let mut t = Tracker::new(2, 1);
        assert_eq!(t.record(&fail()), Some(Health::Down));
        assert_eq!(t.record(&Probe::Pass), None);
        assert_eq!(t.record(&fail()), None);
        assert_eq!(t.record(&Probe::Pass), None);
        assert_eq!(t.record(&Probe::Pass), Some(Health::Up));
    }

    #[test]
    fn draining_is_immediate_and_recovers_by_rising() {
        let mut t = Tracker::new(2, 3);
        t.record(&Probe::Pass);
        assert_eq!(t.record(&Probe::Draining), Some(Health::Draining));
        assert_eq!(t.record(&Probe::Draining), None);
        assert_eq!(t.record(&Probe::Pass), None);
        assert_eq!(t.record(&Probe::Pass), Some(Health::Up));
    }

    #[test]
    fn a_draining_member_needs_consecutive_passes_and_falls_on_failures() {
        let mut t = Tracker::new(2, 3);
        t.record(&Probe::Pass);
        t.record(&Probe::Draining);
        // Passes and failures do not add up: pass, fail, pass is no rise of 2.
        assert_eq!(t.record(&Probe::Pass), None);
        assert_eq!(t.record(&fail()), None);
        assert_eq!(t.record(&Probe::Pass), None);
        assert_eq!(t.record(&Probe::Pass), Some(Health::Up));
        t.record(&Probe::Draining);
        // A stopped replica stops answering: fall failures take it from draining to down.
        assert_eq!(t.record(&fail()), None);
        assert_eq!(t.record(&fail()), None);
        assert_eq!(t.record(&fail()), Some(Health::Down));
    }
}
