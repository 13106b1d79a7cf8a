//! The public listener: one current-thread runtime per worker thread, each accepting on its own
//! `SO_REUSEPORT` socket (or a clone of one listener), evening out the workers' shares of
//! connections (`spread`), serving HTTP/1.1 (plain requests in `plain`'s own loop, the rest
//! with hyper), holding at most `max_connections` (`cap`: at the cap the connection waiting
//! longest for a head is closed for the newcomer, `idle` keeps them in order), giving a
//! flood's memory back afterwards (`reclaim`), and shutting down gracefully: stop accepting,
//! let in-flight requests finish, then return.
//!
//! Why per-thread runtimes: a request then stays on one core from accept to response, the
//! per-thread connection pool needs no shared lock, and nothing is stolen between threads.
//! Measured faster than one multi-thread runtime for this workload (docs/benchmarks.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::framing;

mod backoff;
pub mod cap;
mod idle;
mod plain;
mod reclaim;
pub(crate) mod spread;
use crate::proxy::{ClientBody, Proxy, upstream};
use crate::state::Shared;

/// How long shutdown waits for in-flight requests before giving up on them.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Binds `n` sockets on `addr` with `SO_REUSEPORT`: the kernel places each new connection on one
/// by a hash of its addresses (`spread` evens out what that leaves uneven).
pub fn bind_reuseport(addr: SocketAddr, n: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut bound = addr;
    for _ in 0..n.max(1) {
        let domain = socket2::Domain::for_address(bound);
        let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&bound.into())?;
        s.listen(4096)?;
        s.set_nonblocking(true)?;
        let l: std::net::TcpListener = s.into();
        // Port 0: the others join the port the first one got.
        bound = l.local_addr()?;
        out.push(l);
    }
    Ok(out)
}

/// Settings of the HTTP server side.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerLimits {
    /// Largest request head; beyond it hyper answers 431.
    pub(crate) max_header_bytes: usize,
    /// Keep-alive idle timeout and header read timeout.
    pub(crate) idle_timeout: Duration,
}

/// Runs the proxy on `listeners` (one worker thread each) until `shutdown`, then drains.
/// Blocks the calling thread until every worker has finished.
pub(crate) fn serve(
    listeners: Vec<std::net::TcpListener>,
    shared: Arc<Shared>,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    cap::warn_if_over_fd_limit(shared.snapshot().settings.max_connections);
    let (spread, inboxes) = spread::Spread::new(Arc::clone(&shared.clients));
    let mut threads = Vec::new();
    for (i, (l, inbox)) in listeners.into_iter().zip(inboxes).enumerate() {
        let shared = Arc::clone(&shared);
        let shutdown = shutdown.clone();
        let spread = Arc::clone(&spread);
        let t = std::thread::Builder::new()
            .name(format!("proxy-{i}"))
            .spawn(move || {
                crate::stats::use_shard(i);
                idle::attach(Arc::clone(&shared.clients));
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let ctx = Worker {
                    me: i,
                    spread,
                    inbox,
                    shared,
                    limits,
                };
                rt.block_on(ctx.run(l, shutdown))
            })?;
        threads.push(t);
    }
    for t in threads {
        match t.join() {
            Ok(r) => r?,
            Err(_) => return Err(std::io::Error::other("a proxy worker panicked")),
        }
    }
    Ok(())
}

/// What one worker thread owns besides its listener.
struct Worker {
    me: usize,
    spread: Arc<spread::Spread>,
    inbox: tokio::sync::mpsc::UnboundedReceiver<spread::Handed>,
    shared: Arc<Shared>,
    limits: ServerLimits,
}

impl Worker {
    async fn run(
        mut self,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let serving = Serving {
            proxy: Arc::new(Proxy::new(Arc::clone(&self.shared))),
            builder: hyper_builder(self.limits),
            limits: self.limits,
            stop: shutdown.clone(),
            tracker: tokio_util::task::TaskTracker::new(),
        };
        let sweeper = tokio::spawn(sweep_idle(Arc::clone(&self.shared), self.me));
        let mut backoff = backoff::Backoff::default();
        loop {
            let (accepting, at_cap) = match self.room_for_one() {
                cap::Accept::Yes { at_cap } => (true, at_cap),
                cap::Accept::Pause => (false, true),
            };
            tokio::select! {
                r = listener.accept(), if accepting => match r {
                    Ok((stream, peer)) => {
                        let failures = backoff.succeeded();
                        if failures > 0 {
                            tracing::info!(failures, "accepting again");
                        }
                        let _ = stream.set_nodelay(true);
                        if let Some((stream, seat)) = self.spread.place(self.me, stream, peer) {
                            serving.spawn(stream, peer, seat);
                        }
                        self.make_room();
                    }
                    Err(e) => {
                        let pause = backoff.failed();
                        if pause.first {
                            tracing::warn!(error = %e, "accept failed; backing off until it works again");
                        } else {
                            tracing::debug!(error = %e, wait = ?pause.wait, "accept failed again");
                        }
                        // Up to a second: shutdown must not wait for it.
                        tokio::select! {
                            () = tokio::time::sleep(pause.wait) => {}
                            () = shutdown.cancelled() => {}
                        }
                    }
                },
                // At the cap: look again shortly. With every connection busy, a closing one
                // anywhere makes room (the kernel's backlog holds the newcomers meanwhile);
                // while accepting, the last waiting connection may turn busy.
                () = tokio::time::sleep(CAP_RECHECK), if at_cap => {}
                Some(handed) = self.inbox.recv() => serving.adopt(handed),
                () = shutdown.cancelled() => break,
            }
        }
        drop(listener);
        // Connections handed over before the inbox closed are served, not dropped.
        self.inbox.close();
        while let Some(handed) = self.inbox.recv().await {
            serving.adopt(handed);
        }
        sweeper.abort();
        serving.tracker.close();
        tokio::select! {
            () = serving.tracker.wait() => {}
            () = tokio::time::sleep(SHUTDOWN_GRACE) => {
                tracing::warn!("shutdown grace elapsed with requests still in flight");
                // Dropping the runtime drops them: they are logged as abandoned.
                serving.proxy.grace_ran_out();
            }
        }
        Ok(())
    }
}

impl Worker {
    /// Whether to accept now under the connection cap; logs the cap's episode.
    fn room_for_one(&self) -> cap::Accept {
        let load = &self.shared.clients;
        let max = self.shared.snapshot().settings.max_connections;
        let open = load.total();
        let waiting = idle::waiting();
        let verdict = cap::before_accept(open, load.closing(), waiting, max);
        match verdict {
            cap::Accept::Pause => load.cap.reached(open, max, false),
            cap::Accept::Yes { at_cap: false } => load.cap.check_cleared(open, max),
            cap::Accept::Yes { at_cap: true } => {}
        }
        verdict
    }

    /// After an accept: over the cap, closes the connections that have waited longest for a
    /// request head.
    fn make_room(&self) {
        let load = &self.shared.clients;
        let max = self.shared.snapshot().settings.max_connections;
        let excess = load.reserve_closing(max);
        if excess == 0 {
            return;
        }
        load.cap.reached(load.total(), max, true);
        let closed = idle::evict(excess);
        load.unreserve(excess - closed);
        load.cap.add_closed(closed);
    }
}

/// How often a worker at the cap with every connection busy looks again.
const CAP_RECHECK: Duration = Duration::from_millis(50);

fn hyper_builder(limits: ServerLimits) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .keep_alive(true)
        .header_read_timeout(limits.idle_timeout)
        // The head limit, exactly (431); the buffer only caps how much is read ahead, and
        // hyper refuses one under 8 KiB.
        .max_header_size(limits.max_header_bytes)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
}

/// What a worker serves its connections with.
struct Serving {
    proxy: Arc<Proxy>,
    builder: http1::Builder,
    limits: ServerLimits,
    stop: CancellationToken,
    tracker: tokio_util::task::TaskTracker,
}

impl Serving {
    /// Serves a connection another worker handed over.
    fn adopt(&self, handed: spread::Handed) {
        match tokio::net::TcpStream::from_std(handed.stream) {
            Ok(stream) => self.spawn(stream, handed.peer, handed.seat),
            Err(e) => {
                tracing::warn!(peer = %handed.peer, error = %e, "cannot adopt a handed-over connection")
            }
        }
    }

    /// Serves a connection until it ends; it counts on its worker's load until then.
    fn spawn(&self, stream: tokio::net::TcpStream, peer: SocketAddr, seat: spread::Seat) {
        let proxy = Arc::clone(&self.proxy);
        let builder = self.builder.clone();
        let stop = self.stop.clone();
        let limits = self.limits;
        self.tracker.spawn(async move {
            match plain::serve(stream, peer, &proxy, limits, &stop).await {
                plain::End::Closed => drop(seat),
                plain::End::Handover(stream, rest) => {
                    let io = spread::Seated::new(stream, seat);
                    // Boxed: hyper's connection state would otherwise size every
                    // connection's task, most of which never get here.
                    Box::pin(serve_hyper(io, rest, peer, proxy, &builder, &stop)).await;
                }
            }
        });
    }
}

/// Serves the rest of a connection with hyper, behind the framing guard.
/// `rest`: bytes the plain loop read and did not use, the start of the next request.
async fn serve_hyper(
    io: spread::Seated<tokio::net::TcpStream>,
    rest: bytes::Bytes,
    peer: SocketAddr,
    proxy: Arc<Proxy>,
    builder: &http1::Builder,
    stop: &CancellationToken,
) {
    let verdict = Arc::new(framing::Verdict::default());
    let io = TokioIo::new(framing::Guarded::with_prefix(
        io,
        Arc::clone(&verdict),
        rest,
    ));
    let proxy_for_errors = Arc::clone(&proxy);
    let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        let proxy = Arc::clone(&proxy);
        let verdict = Arc::clone(&verdict);
        let bad_framing = verdict.is_bad(verdict.next_request());
        let connect = req.method() == http::Method::CONNECT;
        async move {
            let req = req.map(ClientBody::Hyper);
            // Boxed: the request's future is several KB, and hyper moves what this
            // returns; moving a pointer is cheaper than copying the state machine.
            let resp = Box::pin(proxy.handle(req, peer, bad_framing)).await;
            let status = resp.status();
            if status == http::StatusCode::SWITCHING_PROTOCOLS || (connect && status.is_success()) {
                verdict.tunnel();
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    if stop.is_cancelled() {
        // Shutting down already: answer the request that was handed over, then close.
        let mut last = builder.clone();
        last.keep_alive(false);
        if let Err(e) = last.serve_connection(io, svc).await {
            ended_with(&e, peer, &proxy_for_errors);
        }
        return;
    }
    let conn = builder.serve_connection(io, svc).with_upgrades();
    let mut conn = std::pin::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            // Finish the request in flight, then close instead of keeping alive.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        ended_with(&e, peer, &proxy_for_errors);
    }
}

fn ended_with(e: &hyper::Error, peer: SocketAddr, proxy: &Proxy) {
    proxy.refused_by_parser(e);
    tracing::debug!(%peer, error = %e, "client connection ended with an error");
}

/// Closes this thread's idle member connections that expired or whose member left; ends a
/// connection cap episode when no accept came to notice it; gives a flood's memory back
/// (`reclaim`).
async fn sweep_idle(shared: Arc<Shared>, me: usize) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    let mut reclaim = reclaim::Reclaim::default();
    loop {
        tick.tick().await;
        let snap = shared.snapshot();
        let clients = &shared.clients;
        clients
            .cap
            .check_cleared(clients.total(), snap.settings.max_connections);
        if reclaim.sweep(clients.of(me)) {
            reclaim::collect();
        }
        let live = |addr: &SocketAddr| {
            snap.pools
                .iter()
                .any(|p| p.members.iter().any(|m| m.addr == *addr))
        };
        upstream::sweep(snap.settings.backend_idle_timeout, &live);
    }
}
