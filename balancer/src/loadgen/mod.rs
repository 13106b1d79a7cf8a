//! The built-in load generator: `POST /api/load` starts a run that sends real HTTP requests
//! to the balancer's own public listener (so they take exactly a client's path: routing,
//! selection, retries, counters, access log), `GET /api/load` reports it, `DELETE` stops it.
//!
//! - [`spec`]: the request body and its bounds (`[load]` in the config) — pure.
//! - `pace`: the schedule of a rate-limited run — pure.
//! - [`tally`]: statuses, per-member counts and a fine latency histogram — pure.
//! - [`mark`]: the `X-Lab-Load: <run id>` header that marks the run's requests (shown in the
//!   access log) and makes the proxy name the serving member in `X-Upstream` for them only.
//! - `drive`: the run itself, on its own thread and runtime, so a busy run never slows the
//!   admin API or the control loop, and the proxy workers see it as just another client.
//!
//! One run at a time. A run ends when its time is up, on `DELETE /api/load`, when the
//! balancer shuts down, or when a reload changes the `[load]` bounds it was checked
//! against; other reloads leave it running, and its traffic follows the new configuration.

mod drive;
pub(crate) mod mark;
mod pace;
pub(crate) mod spec;
pub(crate) mod tally;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use self::spec::Spec;
use self::tally::{LatencySummary, MemberShare, Tally};
use crate::config::load::LoadLimits;
use crate::events::EventKind;
use crate::state::Shared;

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum End {
    /// Its time was up.
    Finished,
    /// `DELETE /api/load`.
    Stopped,
    /// The balancer began shutting down.
    Shutdown,
    /// A reload changed the `[load]` bounds.
    Reloaded,
}

impl End {
    fn words(self) -> &'static str {
        match self {
            End::Finished => "finished",
            End::Stopped => "stopped by operator",
            End::Shutdown => "stopped: shutting down",
            End::Reloaded => "stopped: a reload changed the [load] bounds",
        }
    }
}

/// One load run: its description, counters and end.
#[derive(Debug)]
pub(crate) struct Run {
    /// Random, never 0; sent in `X-Lab-Load`.
    pub id: u64,
    /// What it does.
    pub spec: Spec,
    /// The bounds it was checked against (a reload changing them ends it).
    limits: LoadLimits,
    /// Unix time of the start, seconds.
    started_at: f64,
    started: Instant,
    stop: CancellationToken,
    /// Why and when it ended (first reason wins).
    end: Mutex<Option<(End, Duration)>>,
    /// Set once every connection has finished.
    done: AtomicBool,
    /// Requests sent.
    sent: AtomicU64,
    /// One tally per connection: each locks only its own.
    shards: Vec<Mutex<Tally>>,
}

impl Run {
    fn new(spec: Spec, limits: LoadLimits) -> Self {
        let shards = (0..spec.concurrency)
            .map(|_| Mutex::new(Tally::default()))
            .collect();
        Run {
            id: rand::random::<u64>().max(1),
            spec,
            limits,
            started_at: std::time::SystemTime::now()
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
            started: Instant::now(),
            stop: CancellationToken::new(),
            end: Mutex::new(None),
            done: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            shards,
        }
    }

    /// Ends the run for `why` unless it already ended; its connections stop at once.
    fn end(&self, why: End) {
        let mut end = self.end.lock().unwrap_or_else(PoisonError::into_inner);
        if end.is_none() {
            *end = Some((why, self.started.elapsed()));
        }
        self.stop.cancel();
    }

    /// Whether its connections are still at work.
    pub(crate) fn is_active(&self) -> bool {
        !self.done.load(Ordering::Acquire)
    }

    /// Progress or results.
    pub(crate) fn report(&self) -> Report {
        let mut all = Tally::default();
        for s in &self.shards {
            all.merge(&s.lock().unwrap_or_else(PoisonError::into_inner));
        }
        let end = *self.end.lock().unwrap_or_else(PoisonError::into_inner);
        let active = self.is_active();
        let elapsed = match end {
            Some((_, at)) => at,
            None => self.started.elapsed(),
        };
        let responses = all.responses();
        // Read after the tallies: a request is counted as sent before it is tallied.
        let sent = self.sent.load(Ordering::Relaxed);
        let secs = elapsed.as_secs_f64();
        Report {
            run: mark::format_id(self.id),
            state: match (active, end) {
                (true, None) => "running",
                (true, Some(_)) => "stopping",
                (false, _) => "ended",
            },
            end: end.map(|(e, _)| e),
            spec: self.spec.clone(),
            started_at: self.started_at,
            elapsed_seconds: secs,
            sent,
            unanswered: sent.saturating_sub(responses + all.errors),
            responses,
            errors: all.errors,
            statuses: all
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            requests_per_second: if secs > 0.0 {
                responses as f64 / secs
            } else {
                0.0
            },
            latency: all.latency.summary(),
            members: all.shares(),
            instances: all.instances,
        }
    }
}

/// `GET /api/load`'s document: a run's progress, or its results once ended.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// The run's id, as sent in `X-Lab-Load`.
    pub run: String,
    /// `running`, `stopping` (ended, requests still finishing) or `ended`.
    pub state: &'static str,
    /// Why it ended: `finished`, `stopped`, `shutdown` or `reloaded`; `null` while running.
    pub end: Option<End>,
    /// What it was asked to do.
    pub spec: Spec,
    /// Unix time of the start.
    pub started_at: f64,
    /// Seconds it ran (so far).
    pub elapsed_seconds: f64,
    /// Requests sent: `responses + errors + unanswered`.
    pub sent: u64,
    /// Responses received, whatever their status.
    pub responses: u64,
    /// Requests that got no response (connection refused or reset).
    pub errors: u64,
    /// Requests in flight (while running) or cut off by a stop (once ended).
    pub unanswered: u64,
    /// Responses by status code.
    pub statuses: BTreeMap<String, u64>,
    /// Responses per second over the run.
    pub requests_per_second: f64,
    /// Latency from sending to the last body byte; `null` before the first response.
    pub latency: Option<LatencySummary>,
    /// Responses by the member that served them (`-`: the balancer answered itself).
    pub members: BTreeMap<String, MemberShare>,
    /// The instance name (`X-Instance`) each member gave, if it gave one.
    pub instances: BTreeMap<String, String>,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// Another run is active.
    #[error("load run {0} is still running: stop it first (DELETE /api/load)")]
    Busy(String),
    /// The balancer is shutting down.
    #[error("shutting down")]
    ShuttingDown,
    /// The run's thread could not start.
    #[error("could not start the load run: {0}")]
    Thread(std::io::Error),
}

/// The load generator: at most one run at a time, the last one kept for its report.
#[derive(Debug)]
pub(crate) struct LoadGen {
    target: SocketAddr,
    shared: Arc<Shared>,
    current: Mutex<Option<Arc<Run>>>,
    /// Instance names earlier runs learned, by member address.
    known: Mutex<BTreeMap<String, String>>,
}

impl LoadGen {
    /// A generator aiming at the public listener `listen` (an unspecified address means
    /// loopback).
    pub(crate) fn new(listen: SocketAddr, shared: Arc<Shared>) -> Self {
        let ip = match listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        LoadGen {
            target: SocketAddr::new(ip, listen.port()),
            shared,
            current: Mutex::new(None),
            known: Mutex::new(BTreeMap::new()),
        }
    }

    /// Starts a run of `spec` unless one is active.
    pub(crate) fn start(&self, spec: Spec) -> Result<Arc<Run>, StartError> {
        if self.shared.shutting_down() {
            return Err(StartError::ShuttingDown);
        }
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(r) = current.as_ref().filter(|r| r.is_active()) {
            return Err(StartError::Busy(mark::format_id(r.id)));
        }
        if let Some(last) = current.take() {
            self.known
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend(last.report().instances);
        }
        let limits = self.shared.snapshot().settings.load;
        let run = Arc::new(Run::new(spec, limits));
        self.shared.load_mark.set(run.id);
        if let Err(e) = drive::spawn(Arc::clone(&run), self.target, Arc::clone(&self.shared)) {
            self.shared.load_mark.clear(run.id);
            return Err(StartError::Thread(e));
        }
        let s = &run.spec;
        let msg = format!(
            "load run {} started: GET {} · {} connection(s) · {} · {} s",
            mark::format_id(run.id),
            s.path,
            s.concurrency,
            s.rate
                .map_or("open loop".to_owned(), |r| format!("{r} req/s")),
            s.seconds
        );
        tracing::info!(target: "balancer::loadgen", "{msg}");
        self.shared.events.push(EventKind::Admin, None, None, msg);
        *current = Some(Arc::clone(&run));
        Ok(run)
    }

    /// Stops the active run, if any; returns it.
    pub(crate) fn stop(&self) -> Option<Arc<Run>> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let run = current.as_ref().filter(|r| r.is_active())?;
        run.end(End::Stopped);
        Some(Arc::clone(run))
    }

    /// Every instance name (`X-Instance`) load runs have seen, by member address.
    pub(crate) fn instances(&self) -> BTreeMap<String, String> {
        let mut all = self
            .known
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(run) = self.current() {
            all.extend(run.report().instances);
        }
        all
    }

    /// The active or last run.
    pub(crate) fn current(&self) -> Option<Arc<Run>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
