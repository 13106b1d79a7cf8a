//! Shared helpers for the balancer's integration tests: in-process test backends that can be
//! killed like `kill -9`, a balancer started from TOML text on port 0, and small clients.
//!
//! Every backend runs on its own thread with its own current-thread runtime; killing it stops
//! the accept loop and drops that runtime, which drops every live connection task and so closes
//! its sockets, as a crashed process would.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use balancer::config::{Origin, Settings};
use balancer::discovery::StaticResolver;
use balancer::{Listeners, Running};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// Body type of the test backends' responses.
pub(crate) type BackendBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A server running on its own thread and runtime, killable.
#[derive(Debug)]
struct ServerThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `accept_loop` on a fresh thread until [`ServerThread::kill`].
    fn spawn<F, Fut>(name: &str, accept_loop: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = ()>,
    {
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("backend-{name}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("backend runtime");
                rt.block_on(async move {
                    tokio::select! {
                        () = accept_loop() => {}
                        _ = rx => {}
                    }
                });
                // Dropping the runtime drops every connection task: sockets close at once.
                rt.shutdown_background();
            })
            .expect("backend thread");
        ServerThread {
            stop: Some(tx),
            thread: Some(thread),
        }
    }

    fn kill(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Counters a backend keeps.
#[derive(Debug, Default)]
pub(crate) struct BackendState {
    /// Requests other than `/healthz`.
    pub hits: AtomicU64,
    /// `/healthz` requests.
    pub health_hits: AtomicU64,
    /// Requests currently being handled (other than `/healthz`).
    pub in_flight: AtomicU64,
    /// Request body bytes read by `/count`.
    pub body_bytes: AtomicU64,
    /// POST requests.
    pub posts: AtomicU64,
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// What `/healthz` answers (a [`Health`] as `u8`).
    health: AtomicU8,
    /// The `endpoint-load-metrics` value put on every answer (see [`BackendState::report`]).
    report: std::sync::Mutex<Option<String>>,
    /// Status every answer other than `/healthz` gets instead of its own (0 = none).
    fail_with: std::sync::atomic::AtomicU16,
    /// Extra delay before every answer other than `/healthz`, ms (see [`BackendState::slow`]).
    slow_ms: AtomicU64,
}

/// What a backend's `/healthz` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Health {
    /// 200 `{"status":"ok"}`.
    Ok = 0,
    /// 503 `{"status":"draining"}`, as a draining app answers.
    Draining = 1,
    /// 500: a failing check.
    Broken = 2,
}

impl BackendState {
    /// Makes `/healthz` answer `health` from now on.
    pub(crate) fn set_health(&self, health: Health) {
        self.health.store(health as u8, Ordering::SeqCst);
    }

    /// Puts `value` as the ORCA `endpoint-load-metrics` header on every answer from now on
    /// (`None`: no header).
    pub(crate) fn report(&self, value: Option<&str>) {
        *self.report.lock().unwrap_or_else(|e| e.into_inner()) = value.map(str::to_owned);
    }

    /// Makes every answer other than `/healthz` a `status` (0: back to normal), at once.
    pub(crate) fn fail_with(&self, status: u16) {
        self.fail_with.store(status, Ordering::SeqCst);
    }

    /// Delays every answer other than `/healthz` by `by` from now on (a replica turned slow).
    pub(crate) fn slow(&self, by: Duration) {
        self.slow_ms.store(by.as_millis() as u64, Ordering::SeqCst);
    }

    fn healthz(&self) -> Response<BackendBody> {
        let (status, body) = match self.health.load(Ordering::SeqCst) {
            0 => (StatusCode::OK, r#"{"status":"ok"}"#),
            1 => (StatusCode::SERVICE_UNAVAILABLE, r#"{"status":"draining"}"#),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "broken"),
        };
        let mut r = Response::new(full(body));
        *r.status_mut() = status;
        r
    }
}

/// Options of a test backend.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackendOpts {
    /// Delay before every answer other than `/healthz`.
    pub delay: Duration,
}

/// An in-process HTTP/1.1 backend.
///
/// Paths: `/healthz` (200 unless [`BackendState::set_health`] says otherwise), `/echo`
/// (request as JSON), `.../slow?ms=N` (N ms, default 1000), `.../status/NNN` (that status),
/// `/count` (reads the body,
/// answers its length; `?pause_ms_per_mib=N` reads slowly), `/bytes?n=N` (N generated bytes),
/// `/trailers` (reads the body, answers its trailers as `name=value` lines), `/upgrade` (101,
/// then echoes bytes), `/hop` (answers with hop-by-hop headers), anything else
/// answers the backend's name. Every answer carries `X-Backend: <name>`.
#[derive(Debug)]
pub(crate) struct Backend {
    /// Name, in `X-Backend` and the body.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its counters.
    pub state: Arc<BackendState>,
    server: ServerThread,
}

impl Backend {
    /// Starts a backend on 127.0.0.1:0.
    pub(crate) fn start(name: &str) -> Self {
        Self::start_with(name, BackendOpts::default())
    }

    /// Starts a backend with options.
    pub(crate) fn start_with(name: &str, opts: BackendOpts) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind backend");
        Self::serve(name, listener, opts)
    }

    /// Starts a backend on `addr`, if it is free (replicas behind one DNS name share a port,
    /// each on its own 127.0.0.N).
    pub(crate) fn start_at(name: &str, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr)?;
        Ok(Self::serve(name, listener, BackendOpts::default()))
    }

    fn serve(name: &str, listener: TcpListener, opts: BackendOpts) -> Self {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(BackendState::default());
        let ctx = Arc::new(Ctx {
            name: name.to_owned(),
            state: Arc::clone(&state),
            opts,
        });
        let server = ServerThread::spawn(name, move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                ctx.state.connections.fetch_add(1, Ordering::SeqCst);
                let ctx = Arc::clone(&ctx);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let ctx = Arc::clone(&ctx);
                        async move { Ok::<_, Infallible>(handle(ctx, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        Backend {
            name: name.to_owned(),
            addr,
            state,
            server,
        }
    }

    /// Requests served so far (without health checks).
    pub(crate) fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Waits up to 5 s until exactly `n` requests are being handled.
    pub(crate) fn wait_in_flight(&self, n: u64) -> bool {
        wait_until(Duration::from_secs(5), || {
            self.state.in_flight.load(Ordering::SeqCst) == n
        })
    }

    /// Kills the backend: closes the listener and every live connection.
    pub(crate) fn kill(&mut self) {
        self.server.kill();
    }

    /// `"127.0.0.1:PORT"`.
    pub(crate) fn member(&self) -> String {
        self.addr.to_string()
    }
}

struct Ctx {
    name: String,
    state: Arc<BackendState>,
    opts: BackendOpts,
}

fn query_u64(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

fn full(text: impl Into<Bytes>) -> BackendBody {
    http_body_util::Full::new(text.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// The status a `.../status/NNN` path asks for.
fn status_path(path: &str) -> Option<StatusCode> {
    let (_, code) = path.rsplit_once("/status/")?;
    StatusCode::from_u16(code.parse().ok()?).ok()
}

struct InFlightGuard(Arc<BackendState>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn handle(ctx: Arc<Ctx>, mut req: Request<Incoming>) -> Response<BackendBody> {
    let path = req.uri().path().to_owned();
    if path == "/healthz" {
        ctx.state.health_hits.fetch_add(1, Ordering::SeqCst);
        return ctx.state.healthz();
    }
    ctx.state.hits.fetch_add(1, Ordering::SeqCst);
    if req.method() == http::Method::POST {
        ctx.state.posts.fetch_add(1, Ordering::SeqCst);
    }
    ctx.state.in_flight.fetch_add(1, Ordering::SeqCst);
    let _guard = InFlightGuard(Arc::clone(&ctx.state));
    let report = ctx
        .state
        .report
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let report = report.and_then(|r| http::HeaderValue::from_str(&r).ok());
    let fail_with = ctx.state.fail_with.load(Ordering::SeqCst);
    if let Ok(status) = StatusCode::from_u16(fail_with) {
        let mut r = Response::new(full(ctx.name.clone()));
        *r.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(&ctx.name) {
            r.headers_mut().insert("x-backend", v);
        }
        if let Some(v) = report {
            r.headers_mut().insert("endpoint-load-metrics", v);
        }
        return r;
    }
    let slow = Duration::from_millis(ctx.state.slow_ms.load(Ordering::SeqCst));
    if !(ctx.opts.delay + slow).is_zero() {
        tokio::time::sleep(ctx.opts.delay + slow).await;
    }
    let mut resp = match path.as_str() {
        "/echo" => {
            let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (k, v) in req.headers() {
                headers
                    .entry(k.as_str().to_owned())
                    .or_default()
                    .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
            }
            let body = serde_json::json!({
                "backend": ctx.name,
                "method": req.method().as_str(),
                "uri": req.uri().to_string(),
                "headers": headers,
            });
            Response::new(full(body.to_string()))
        }
        p if p.ends_with("/slow") => {
            let ms = query_u64(&req, "ms").unwrap_or(1000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(ctx.name.clone()))
        }
        "/trailers" => {
            let mut body = req.into_body();
            let mut seen = String::new();
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(t) = frame.trailers_ref() {
                    for (k, v) in t {
                        seen.push_str(&format!("{k}={}\n", v.to_str().unwrap_or("?")));
                    }
                }
            }
            Response::new(full(seen))
        }
        "/count" => {
            let pause = query_u64(&req, "pause_ms_per_mib").unwrap_or(0);
            let mut body = req.into_body();
            let mut n = 0u64;
            let mut next_pause = 1u64 << 20;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else {
                    let mut r = Response::new(full("client body failed"));
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    return r;
                };
                if let Some(d) = frame.data_ref() {
                    n += d.len() as u64;
                    ctx.state
                        .body_bytes
                        .fetch_add(d.len() as u64, Ordering::SeqCst);
                }
                if pause > 0 && n >= next_pause {
                    next_pause += 1 << 20;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
            }
            Response::new(full(n.to_string()))
        }
        "/bytes" => {
            let n = query_u64(&req, "n").unwrap_or(0);
            let mut r = Response::new(GenBody::new(n).boxed_unsync());
            r.headers_mut()
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
            r
        }
        "/upgrade" => {
            let on = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(up) = on.await {
                    let mut io = TokioIo::new(up);
                    let mut buf = [0u8; 4096];
                    loop {
                        match io.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if io.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }
            });
            let mut r = Response::new(full(Bytes::new()));
            *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = r.headers_mut();
            h.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            h.insert(
                http::header::UPGRADE,
                http::HeaderValue::from_static("echo"),
            );
            r
        }
        "/hop" => {
            let mut r = Response::new(full(ctx.name.clone()));
            let h = r.headers_mut();
            h.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("x-hop-secret"),
            );
            h.insert("x-hop-secret", http::HeaderValue::from_static("1"));
            h.insert("keep-alive", http::HeaderValue::from_static("timeout=5"));
            h.insert("x-end-to-end", http::HeaderValue::from_static("kept"));
            r
        }
        p if status_path(p).is_some() => {
            let mut r = Response::new(full(ctx.name.clone()));
            *r.status_mut() = status_path(p).unwrap_or(StatusCode::BAD_REQUEST);
            r
        }
        _ => Response::new(full(ctx.name.clone())),
    };
    if let Ok(v) = http::HeaderValue::from_str(&ctx.name) {
        resp.headers_mut().insert("x-backend", v);
    }
    if let Some(v) = report {
        resp.headers_mut().insert("endpoint-load-metrics", v);
    }
    resp
}

/// A body of `n` generated bytes in 64 KiB frames, never held in memory at once.
pub(crate) struct GenBody {
    remaining: u64,
    chunk: Bytes,
}

impl GenBody {
    /// `n` bytes.
    pub(crate) fn new(n: u64) -> Self {
        GenBody {
            remaining: n,
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
        }
    }
}

impl Body for GenBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }
}

/// A raw TCP "backend" that reads a whole request (sized or chunked), counts it, then resets the connection
/// without answering: a member that accepted the request and crashed.
#[derive(Debug)]
pub(crate) struct ResetBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests read completely.
    pub requests: Arc<AtomicU64>,
    server: ServerThread,
}

impl ResetBackend {
    /// Starts it on 127.0.0.1:0.
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let requests = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&requests);
        let server = ServerThread::spawn("reset", move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = stream.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(end) = find(&buf, b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            let chunked = head.contains("transfer-encoding: chunked");
                            if chunked && buf.ends_with(b"0\r\n\r\n")
                                || !chunked && buf.len() >= end + 4 + len
                            {
                                break;
                            }
                        }
                    }
                    count.fetch_add(1, Ordering::SeqCst);
                    let _ = stream.set_zero_linger();
                    drop(stream);
                });
            }
        });
        ResetBackend {
            addr,
            requests,
            server,
        }
    }

    /// `"127.0.0.1:PORT"`.
    pub(crate) fn member(&self) -> String {
        self.addr.to_string()
    }
}

/// A raw TCP "backend" that accepts and reads requests but never answers: a member whose
/// process froze (SIGSTOP, a long GC pause) or whose host was cut off without a reset.
#[derive(Debug)]
pub(crate) struct FrozenBackend {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its counters.
    pub(crate) state: Arc<FrozenState>,
    server: ServerThread,
}

/// What a [`FrozenBackend`] saw.
#[derive(Debug, Default)]
pub(crate) struct FrozenState {
    /// Connections accepted.
    pub(crate) connections: AtomicU64,
    /// Connections the peer closed.
    pub(crate) closed: AtomicU64,
    /// Request heads read (whatever the method).
    pub(crate) requests: AtomicU64,
    /// POST request heads read.
    pub(crate) posts: AtomicU64,
    /// Connections that carried more than one request head.
    pub(crate) reused: AtomicU64,
}

impl FrozenBackend {
    /// Starts it on 127.0.0.1:0.
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(FrozenState::default());
        let st = Arc::clone(&state);
        let server = ServerThread::spawn("frozen", move || async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                st.connections.fetch_add(1, Ordering::SeqCst);
                let st = Arc::clone(&st);
                tokio::spawn(async move {
                    let (mut buf, mut heads) = (Vec::new(), 0);
                    let mut chunk = [0u8; 4096];
                    loop {
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        // Heads only: what reaches a frozen member is never answered, so a
                        // second head on one connection means the connection was reused.
                        while let Some(end) = find(&buf, b"\r\n\r\n") {
                            if buf.starts_with(b"POST ") {
                                st.posts.fetch_add(1, Ordering::SeqCst);
                            }
                            st.requests.fetch_add(1, Ordering::SeqCst);
                            heads += 1;
                            if heads == 2 {
                                st.reused.fetch_add(1, Ordering::SeqCst);
                            }
                            buf.drain(..end + 4);
                        }
                    }
                    st.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        FrozenBackend {
            addr,
            state,
            server,
        }
    }

    /// Request heads it read.
    pub(crate) fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// `"127.0.0.1:PORT"`.
    pub(crate) fn member(&self) -> String {
        self.addr.to_string()
    }
}

/// Position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An address where nothing listens (connections are refused).
pub(crate) fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a
}

/// Builds the TOML of a balancer whose `dynamic` pool serves every path.
#[derive(Debug, Clone)]
pub(crate) struct Conf {
    members: Vec<String>,
    top: Vec<String>,
    pool: Vec<String>,
    health: bool,
    default_routes: bool,
}

impl Conf {
    /// A config with `dynamic` = `members`, `upstream_header = true` and health checks off.
    pub(crate) fn new<S: AsRef<str>>(members: &[S]) -> Self {
        Conf {
            members: members.iter().map(|m| m.as_ref().to_owned()).collect(),
            top: vec!["upstream_header = true".into()],
            pool: Vec::new(),
            health: false,
            default_routes: false,
        }
    }

    /// Leaves `upstream_header` unset, i.e. at its default (off).
    pub(crate) fn without_upstream_header(mut self) -> Self {
        self.top.retain(|l| l != "upstream_header = true");
        self
    }

    /// Leaves the routes at their defaults (`/api/student` and `/api/...` to `dynamic`, the
    /// rest to `static`) instead of sending every path to `dynamic`.
    pub(crate) fn default_routes(mut self) -> Self {
        self.default_routes = true;
        self
    }

    /// Adds a key to `[pools.dynamic]` (`algorithm = "p2c"`).
    pub(crate) fn pool(mut self, line: &str) -> Self {
        self.pool.push(line.to_owned());
        self
    }

    /// Adds a top-level key (before any table).
    pub(crate) fn top(mut self, line: &str) -> Self {
        self.top.push(line.to_owned());
        self
    }

    /// Keeps the default active health checks of the dynamic pool.
    pub(crate) fn health_checks(mut self) -> Self {
        self.health = true;
        self
    }

    /// The TOML text.
    pub(crate) fn toml(&self) -> String {
        let members = self
            .members
            .iter()
            .map(|m| format!("{m:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut t = String::new();
        for l in &self.top {
            t.push_str(l);
            t.push('\n');
        }
        t.push_str("\n[pools.static]\nmembers = [\"static.invalid:80\"]\n");
        t.push_str("[pools.static.health]\nenabled = false\n");
        t.push_str(&format!("\n[pools.dynamic]\nmembers = [{members}]\n"));
        for l in &self.pool {
            t.push_str(l);
            t.push('\n');
        }
        if !self.health {
            t.push_str("[pools.dynamic.health]\nenabled = false\n");
        }
        if !self.default_routes {
            t.push_str("\n[[routes]]\npath = \"/\"\npool = \"dynamic\"\n");
        }
        t
    }

    /// The validated settings.
    pub(crate) fn settings(&self) -> Settings {
        let raw = balancer::config::from_toml_str(&self.toml())
            .unwrap_or_else(|e| panic!("bad test config: {e}\n{}", self.toml()));
        Settings::build(&raw, &Origin::default())
            .unwrap_or_else(|e| panic!("invalid test config: {e}\n{}", self.toml()))
    }

    /// Starts a balancer with one worker; call outside any async runtime.
    pub(crate) fn start(&self) -> Lb {
        let proxy = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        self.start_on(vec![proxy])
    }

    /// Starts a balancer with a worker for each of `proxy` (the first is `Lb::base`).
    pub(crate) fn start_on(&self, proxy: Vec<TcpListener>) -> Lb {
        let settings = self.settings();
        let sticky_key = settings.sticky_key;
        let admin = TcpListener::bind("127.0.0.1:0").expect("bind admin");
        let resolver = Arc::new(StaticResolver::default());
        let running = balancer::start(
            settings,
            None,
            Listeners { proxy, admin },
            Some(Arc::clone(&resolver) as _),
        )
        .expect("balancer starts");
        let base = format!("http://{}", running.proxy_addr);
        Lb {
            running,
            base,
            sticky_key,
            resolver,
        }
    }
}

/// Starts a balancer from any TOML text, resolving names with `resolver`; call outside any
/// async runtime (or through `spawn_blocking`).
pub(crate) fn start_toml(toml: &str, resolver: Arc<StaticResolver>) -> Running {
    let raw = balancer::config::from_toml_str(toml)
        .unwrap_or_else(|e| panic!("bad test config: {e}\n{toml}"));
    let settings = Settings::build(&raw, &Origin::default())
        .unwrap_or_else(|e| panic!("invalid test config: {e}\n{toml}"));
    let listeners = Listeners {
        proxy: vec![TcpListener::bind("127.0.0.1:0").expect("bind proxy")],
        admin: TcpListener::bind("127.0.0.1:0").expect("bind admin"),
    };
    balancer::start(settings, None, listeners, Some(resolver)).expect("balancer starts")
}

/// A running balancer and its base URL.
#[derive(Debug)]
pub(crate) struct Lb {
    /// The balancer.
    pub running: Running,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The sticky key its settings derived.
    pub sticky_key: [u8; 16],
    /// The scripted DNS it resolves names with (`static.invalid` is the static pool's member).
    pub resolver: Arc<StaticResolver>,
}

impl Lb {
    /// `base` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The `dynamic` pool's member at `addr` in the current snapshot.
    pub(crate) fn member(&self, addr: SocketAddr) -> Option<Arc<balancer::pool::Member>> {
        let snap = self.running.shared.snapshot();
        let idx = snap.settings.pool_index("dynamic")?;
        snap.pools[idx]
            .members
            .iter()
            .find(|m| m.addr == addr)
            .cloned()
    }
}

/// A multi-thread runtime for a test's client side.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("test runtime")
}

/// A plain-HTTP client that ignores proxy env vars.
pub(crate) fn client() -> reqwest::Client {
    client_builder().build().expect("client")
}

/// The builder behind [`client`], for extra options.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address works on loopback).
pub(crate) fn client_from(ip: IpAddr) -> reqwest::Client {
    client_builder().local_address(ip).build().expect("client")
}

/// The `X-Upstream` header of a response.
pub(crate) fn upstream(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}

/// How many times longer than written every deadline in these tests is: `LAB_TEST_PATIENCE`
/// (a positive number, default 1), for slow or loaded machines. Only deadlines scale: a test
/// never waits longer when what it waits for happens on time.
pub(crate) fn patience() -> f64 {
    static PATIENCE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *PATIENCE.get_or_init(|| {
        let Ok(raw) = std::env::var("LAB_TEST_PATIENCE") else {
            return 1.0;
        };
        match raw.trim().parse::<f64>() {
            Ok(f) if f.is_finite() && f > 0.0 => f,
            _ => panic!("LAB_TEST_PATIENCE={raw:?}: expected a positive number such as 3"),
        }
    })
}

/// `limit` times [`patience`].
pub(crate) fn patient(limit: Duration) -> Duration {
    limit.mul_f64(patience())
}

/// How often the `wait_*` helpers and [`eventually`] look again.
const POLL: Duration = Duration::from_millis(20);

/// The deadline [`eventually`] gives a condition (times [`patience`]).
pub(crate) const EVENTUALLY: Duration = Duration::from_secs(10);

/// Polls `cond` until it holds or `limit` (times [`patience`]) passes; returns whether it held.
pub(crate) fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + patient(limit);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// Async [`wait_until`].
pub(crate) async fn wait_until_async(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + patient(limit);
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`wait_until_async`] for an async condition: whether it held within `limit` (times
/// [`patience`]).
pub(crate) async fn wait_until_async_with(
    limit: Duration,
    mut cond: impl AsyncFnMut() -> bool,
) -> bool {
    let end = Instant::now() + patient(limit);
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls the async `check` until it holds; fails the test naming `what` if it does not within
/// [`EVENTUALLY`] (times [`patience`]).
pub(crate) async fn eventually(what: &str, check: impl AsyncFnMut() -> bool) {
    eventually_within(EVENTUALLY, what, check).await;
}

/// [`eventually`] with its own deadline (times [`patience`]).
pub(crate) async fn eventually_within(
    limit: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> bool,
) {
    let end = Instant::now() + patient(limit);
    while !check().await {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        tokio::time::sleep(POLL).await;
    }
}

/// The admin API's `/api/status` document.
pub(crate) async fn admin_status(client: &reqwest::Client, admin: SocketAddr) -> serde_json::Value {
    client
        .get(format!("http://{admin}/api/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A raw HTTP/1.1 exchange: writes `request`, reads until the peer closes or `limit` passes
/// (a balancer answering an error closes), returns what came back.
pub(crate) fn raw_exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> String {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    raw_round_trip(&mut s, request, limit)
}

/// [`raw_exchange`] on a connection the caller keeps: reads until one whole response with a
/// `Content-Length` body, a close, or `limit`.
pub(crate) fn raw_round_trip(
    s: &mut std::net::TcpStream,
    request: &[u8],
    limit: Duration,
) -> String {
    s.set_read_timeout(Some(limit)).expect("timeout");
    s.write_all(request).expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let end = Instant::now() + limit;
    while Instant::now() < end && !complete_response(&out) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `out` holds a whole response with a `Content-Length` body.
fn complete_response(out: &[u8]) -> bool {
    let Some(end) = find(out, b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
    head.lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .is_some_and(|len| out.len() >= end + 4 + len)
}

/// The status code on the first line of a raw response, 0 if none.
pub(crate) fn raw_status(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Counts how many responses each backend name gave.
pub(crate) fn tally<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n.clone()).or_insert(0) += 1;
    }
    m
}

/// A fresh directory under the system temp dir, named after `name`; removed when dropped.
pub(crate) fn temp_dir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("balancer-test-{name}-"))
        .tempdir()
        .expect("temp dir")
}
