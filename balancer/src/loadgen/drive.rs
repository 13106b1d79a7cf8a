//! A load run at work: its own thread and single-threaded runtime, one task per connection
//! (each with one request at a time, like wrk's connections), and a supervisor that ends the
//! run at its deadline, on shutdown or when a reload changes the `[load]` bounds.
//!
//! At the deadline no new request starts and those in flight have [`END_GRACE`] to finish
//! (so a run's numbers add up: sent = responses + errors + the few cut off); a stop, a
//! shutdown or a reload cuts them off at once.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

use super::pace::Pacer;
use super::{End, Run, mark};
use crate::events::EventKind;
use crate::proxy::headers::X_UPSTREAM;
use crate::state::Shared;

/// How often the supervisor compares the `[load]` bounds with the running config.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How long requests in flight at the deadline may still take.
const END_GRACE: Duration = Duration::from_secs(1);
/// Pause after a request that got no response: a refused connection must not spin a core.
const AFTER_ERROR: Duration = Duration::from_millis(10);

/// The lab apps name their replica in this header; the dashboard colours members by it, as
/// the lab page does.
const X_INSTANCE: &str = "x-instance";

type LoadClient = Client<HttpConnector, Empty<Bytes>>;

/// Starts `run` on its own thread; it marks itself done and clears the mark when it ends.
pub(super) fn spawn(run: Arc<Run>, target: SocketAddr, shared: Arc<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("balancer-load".into())
        .spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(drive(&run, target, &shared)),
                Err(e) => tracing::warn!(error = %e, "load run: no runtime"),
            }
            run.end(End::Finished);
            shared.load_mark.clear(run.id);
            run.done.store(true, Ordering::Release);
            let r = run.report();
            let msg = format!(
                "load run {} {}: {} responses, {} errors, {:.0} req/s",
                r.run,
                run.end
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .map_or("ended", |(e, _)| e.words()),
                r.responses,
                r.errors,
                r.requests_per_second
            );
            tracing::info!(target: "balancer::loadgen", "{msg}");
            shared.events.push(EventKind::Admin, None, None, msg);
        })
        .map(drop)
}

async fn drive(run: &Arc<Run>, target: SocketAddr, shared: &Shared) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: LoadClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(run.spec.concurrency as usize)
        .build(connector);
    let uri: Uri = match format!("http://{target}{}", run.spec.path).parse() {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(error = %e, "load run: no URI");
            return;
        }
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs(u64::from(run.spec.seconds));
    let tickets = Arc::new(AtomicU64::new(0));
    let mut conns = tokio::task::JoinSet::new();
    for i in 0..run.spec.concurrency as usize {
        let c = Conn {
            run: Arc::clone(run),
            client: client.clone(),
            uri: uri.clone(),
            pacer: run.spec.rate.map(Pacer::new),
            tickets: Arc::clone(&tickets),
            start,
            deadline,
            shard: i,
        };
        conns.spawn(c.work());
    }
    let mut watch = tokio::time::interval(WATCH_EVERY);
    let stop = run.stop.clone();
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => break,
            done = conns.join_next() => if done.is_none() { break },
            () = tokio::time::sleep_until(deadline + END_GRACE) => run.end(End::Finished),
            () = shared.shutdown_token().cancelled() => run.end(End::Shutdown),
            _ = watch.tick() => {
                if shared.snapshot().settings.load != run.limits {
                    run.end(End::Reloaded);
                }
            }
        }
    }
    // The connections see the stop at their next step.
    while conns.join_next().await.is_some() {}
}

/// One connection of a run.
struct Conn {
    run: Arc<Run>,
    client: LoadClient,
    uri: Uri,
    pacer: Option<Pacer>,
    tickets: Arc<AtomicU64>,
    start: Instant,
    deadline: Instant,
    shard: usize,
}

impl Conn {
    async fn work(self) {
        let stop = self.run.stop.clone();
        let mark = mark::header_value(self.run.id);
        loop {
            if stop.is_cancelled() {
                return;
            }
            if let Some(p) = self.pacer {
                let due = self.start + p.due(self.tickets.fetch_add(1, Ordering::Relaxed));
                if due >= self.deadline {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    () = stop.cancelled() => return,
                }
            } else if Instant::now() >= self.deadline {
                return;
            }
            // The deadline does not cut a request short: the supervisor's grace does.
            let ok = tokio::select! {
                ok = self.one(&mark) => ok,
                () = stop.cancelled() => return,
            };
            if !ok {
                tokio::select! {
                    () = tokio::time::sleep(AFTER_ERROR) => {}
                    () = stop.cancelled() => return,
                }
            }
        }
    }

    /// One request to its last body byte; `false` when it got no response.
    async fn one(&self, mark: &HeaderValue) -> bool {
        let mut req = Request::new(Empty::<Bytes>::new());
        *req.uri_mut() = self.uri.clone();
        let h = req.headers_mut();
        h.insert(&mark::X_LAB_LOAD, mark.clone());
        if let Some(host) = &self.run.spec.host {
            h.insert(header::HOST, host.clone());
        }
        self.run.sent.fetch_add(1, Ordering::Relaxed);
        let sent = std::time::Instant::now();
        let answer = match self.client.request(req).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                // Read to the end, as a client does: the time counts the whole body, and the
                // connection goes back to the pool for the next request.
                body.collect().await.ok().map(|_| parts)
            }
            Err(_) => None,
        };
        let mut tally = self.run.shards[self.shard]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match answer {
            Some(parts) => {
                let h = &parts.headers;
                let member = h.get(&X_UPSTREAM).and_then(|v| v.to_str().ok());
                let instance = h.get(X_INSTANCE).and_then(|v| v.to_str().ok());
                tally.response(parts.status.as_u16(), member, instance, sent.elapsed());
                true
            }
            None => {
                tally.error();
                false
            }
        }
    }
}
