//! The access log: one line per request, written when its response body ends, or when the
//! request is dropped unanswered ([`Unanswered`]: the client left, or the shutdown grace ran
//! out), or for bytes refused before they made a request ([`log_refused`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use http::{HeaderValue, Method, Uri};

/// Whether access-log lines are wanted (the `access` target is enabled at info).
pub(crate) fn enabled() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// What the access log says about one request; written when the response body ends.
#[derive(Debug)]
pub(crate) struct AccessLog {
    /// Request method.
    pub(crate) method: Method,
    /// Request target.
    pub(crate) uri: Uri,
    /// Request id.
    pub(crate) request_id: HeaderValue,
    /// When the request arrived.
    pub(crate) start: Instant,
    /// Response status.
    pub(crate) status: u16,
    /// Pool name.
    pub(crate) pool: Arc<str>,
    /// Member address, if one answered.
    pub(crate) upstream: Option<SocketAddr>,
    /// Attempts made.
    pub(crate) attempts: u32,
    /// Whether the request was hedged, and which attempt won.
    pub(crate) hedge: HedgeOutcome,
    /// The built-in load run the request belongs to (`X-Lab-Load`), if any.
    pub(crate) load_run: Option<u64>,
}

/// What hedging did for a request, as the access log's `hedge` field says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum HedgeOutcome {
    /// Not hedged (`-`).
    #[default]
    None,
    /// Hedged, and the hedge answered first (`won`).
    Won,
    /// Hedged, and the first attempt answered first, or neither answered (`lost`).
    Lost,
}

impl HedgeOutcome {
    /// The access log's word for it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HedgeOutcome::None => "-",
            HedgeOutcome::Won => "won",
            HedgeOutcome::Lost => "lost",
        }
    }
}

impl AccessLog {
    pub(crate) fn write(&self, bytes: u64, outcome: &'static str) {
        let ms = self.start.elapsed().as_secs_f64() * 1000.0;
        let rid = self.request_id.to_str().unwrap_or("-");
        // Only a load run's requests carry the field: nothing is added to other lines.
        let load = self
            .load_run
            .map(|id| tracing::field::display(crate::loadgen::mark::RunId(id)));
        match self.upstream {
            Some(up) => tracing::info!(
                target: "access",
                method = %self.method, path = %self.uri, status = self.status,
                pool = &*self.pool, upstream = %up, attempts = self.attempts, hedge = self.hedge.as_str(),
                ms = format_args!("{ms:.2}"), bytes, request_id = rid, outcome, load,
            ),
            None => tracing::info!(
                target: "access",
                method = %self.method, path = %self.uri, status = self.status,
                pool = &*self.pool, upstream = "-", attempts = self.attempts, hedge = self.hedge.as_str(),
                ms = format_args!("{ms:.2}"), bytes, request_id = rid, outcome, load,
            ),
        }
    }
}

/// nginx's status for a request whose client went away before it was answered.
pub(crate) const CLIENT_CLOSED: u16 = 499;

/// An access-log record not yet handed to a response. Dropped while still holding it, the
/// request's future was given up: by its client, which went away first (nginx's 499), or by
/// the balancer (the shutdown grace ran out, or a panic).
#[derive(Debug)]
pub(crate) struct Unanswered<'a> {
    log: Option<Box<AccessLog>>,
    /// The worker's: tells the two apart.
    grace: &'a Grace,
}

impl<'a> Unanswered<'a> {
    /// Holds `log` (`None` when access logging is off) for a request of the worker whose
    /// shutdown `grace` says who gave up.
    pub(crate) fn new(log: Option<Box<AccessLog>>, grace: &'a Grace) -> Self {
        Unanswered { log, grace }
    }

    /// The record, to fill in as the request goes.
    pub(crate) fn as_mut(&mut self) -> Option<&mut AccessLog> {
        self.log.as_deref_mut()
    }

    /// Hands the record to the response, which writes it when its body ends.
    pub(crate) fn take(&mut self) -> Option<Box<AccessLog>> {
        self.log.take()
    }
}

/// Whether a worker's shutdown grace ran out: the requests its runtime drops from then on
/// were abandoned by the balancer, not by their clients. One per worker, read only when a
/// request is dropped unanswered.
#[derive(Debug, Default)]
pub(crate) struct Grace(AtomicBool);

impl Grace {
    /// The grace is over: unanswered requests dropped from now on are the balancer's doing.
    pub(crate) fn run_out(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_over(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        let Some(l) = self.log.as_mut() else {
            return;
        };
        if self.grace.is_over() || std::thread::panicking() {
            // Nothing was sent: the connection just closes.
            l.status = 0;
            l.write(0, "abandoned");
        } else {
            l.status = CLIENT_CLOSED;
            l.write(0, "client-closed");
        }
    }
}

/// The access-log line for bytes refused before they made a request (no method or path to
/// name): a head that does not parse or is over the limit.
pub(crate) fn log_refused(status: u16, bytes: u64, request_id: &str) {
    tracing::info!(
        target: "access",
        method = "-", path = "-", status, pool = "-", upstream = "-", attempts = 0u32, hedge = "-",
        ms = "0.00", bytes, request_id, outcome = "refused",
    );
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What `f` logs at info, as text.
    fn logged(f: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let writer = sink.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let bytes = sink.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn record() -> Option<Box<AccessLog>> {
        Some(Box::new(AccessLog {
            method: Method::GET,
            uri: Uri::from_static("/waiting"),
            request_id: HeaderValue::from_static("rid-1"),
            start: Instant::now(),
            status: 0,
            pool: Arc::from("dynamic"),
            upstream: None,
            attempts: 1,
            hedge: HedgeOutcome::None,
            load_run: None,
        }))
    }

    #[test]
    fn a_record_dropped_unanswered_names_who_gave_up() {
        let grace = Grace::default();
        let line = logged(|| drop(Unanswered::new(record(), &grace)));
        assert!(
            line.contains("status=499") && line.contains("client-closed"),
            "{line}"
        );

        let line = logged(|| {
            let mut handed = Unanswered::new(record(), &grace);
            let _kept = handed.take();
        });
        assert!(
            line.is_empty(),
            "a record handed to a response is its to write: {line}"
        );

        // The grace is per worker, as the worker's runtime drops its own tasks.
        let other_worker = Grace::default();
        grace.run_out();
        let line = logged(|| drop(Unanswered::new(record(), &grace)));
        assert!(
            line.contains("status=0") && line.contains("abandoned"),
            "{line}"
        );
        let line = logged(|| drop(Unanswered::new(record(), &other_worker)));
        assert!(
            line.contains("status=499") && line.contains("client-closed"),
            "{line}"
        );
    }

    #[test]
    fn the_line_says_whether_the_request_was_hedged_and_which_attempt_won() {
        let mut r = record().unwrap();
        r.upstream = Some("127.0.0.1:9".parse().unwrap());
        let line = logged(|| r.write(0, "ok"));
        assert!(
            line.contains("hedge=\"-\"") || line.contains("hedge=-"),
            "{line}"
        );
        r.attempts = 2;
        r.hedge = HedgeOutcome::Won;
        let line = logged(|| r.write(0, "ok"));
        assert!(
            line.contains("attempts=2") && line.contains("won"),
            "{line}"
        );
    }
}
