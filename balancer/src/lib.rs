//! lab-stack's balancer: a dynamic HTTP/1.1 reverse proxy for the load-balancing lab.
//!
//! # Layout
//! - [`config`]: file + env configuration (confique), validation, `--check-config`, file watch.
//! - [`routes`]: host + path prefix -> pool.
//! - [`pool`]: members and their shared state (health, passive failures, in-flight count,
//!   what their answers say about their load).
//! - [`select`]: the selection algorithms, one file each.
//! - [`sticky`]: sticky-cookie ids and parsing.
//! - [`state`]: the one snapshot the request path reads, rebuilt and swapped atomically.
//! - [`control`]: the loop that applies reloads, discovery answers and registrations.
//! - [`discovery`]: DNS re-resolution behind the [`discovery::Resolve`] trait.
//! - [`health`]: active checks and the pure rise/fall tracker.
//! - [`proxy`]: forwarding one request (headers, retries, bodies, upgrades).
//! - [`server`]: listeners, per-core runtimes, the connection cap, the connection loop that
//!   serves plain requests itself (hyper serves the rest of a connection from its first request
//!   with a body or an upgrade), graceful shutdown.
//! - `http1`: the HTTP/1 wire primitives (heads, lengths, chunk sizes, token lists, writers),
//!   strict in one place, used by the plain server loop, the direct member connection and
//!   [`framing`]; checked against httparse and hyper's rules by a differential test.
//! - `orca`: parsing the ORCA load reports members send in `endpoint-load-metrics`.
//! - [`framing`]: refuses ambiguous request framing that hyper would normalize.
//! - [`admin`]: the admin listener (status API, registration).
//! - [`loadgen`]: the built-in load generator (`/api/load`), a client of the public listener.
//! - [`local_responses`]: lock-free counts of the answers the balancer makes itself.
//! - [`error`], [`events`], [`stats`], [`clock`]: small shared pieces.
//!
//! One request: [`server`] accepts -> [`proxy::Proxy::handle`] reads the [`state::Snapshot`] ->
//! [`routes`] picks the pool -> [`sticky`] or [`select`] picks a member -> [`proxy::upstream`]
//! sends it (a request without a body over a connection the request's task drives itself,
//! [`proxy::direct`]; the rest through hyper's client) -> on a failure before any response
//! byte, the pure retry state machine `proxy::retry` decides: resend, another member (an
//! idempotent request's small body from the copy `proxy::replay` kept) or an answer -> the
//! body streams back through [`proxy::body::RespBody`], and `proxy::access_log` writes the
//! line when it ends.

pub mod admin;
pub(crate) mod clock;
pub mod config;
pub mod control;
pub mod discovery;
pub(crate) mod error;
pub mod events;
pub(crate) mod framing;
pub(crate) mod health;
pub(crate) mod http1;
pub(crate) mod loadgen;
pub(crate) mod local_responses;
pub(crate) mod orca;
pub mod pool;
pub(crate) mod proxy;
pub(crate) mod routes;
pub mod select;
pub mod server;
pub mod state;
pub(crate) mod stats;
pub mod sticky;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{FileChoice, Settings};
use crate::control::{Command, Control, ReloadError};
use crate::discovery::Resolve;
use crate::state::Shared;

/// Already-bound sockets: tests bind port 0, `main` binds the configured addresses.
#[derive(Debug)]
pub struct Listeners {
    /// Public listeners, one worker thread each (SO_REUSEPORT siblings or a single socket).
    pub proxy: Vec<std::net::TcpListener>,
    /// Admin listener.
    pub admin: std::net::TcpListener,
}

/// A running balancer.
#[derive(Debug)]
pub struct Running {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Shared state (for tests and the admin API).
    pub shared: Arc<Shared>,
    control: mpsc::Sender<Command>,
    shutdown: CancellationToken,
    background: CancellationToken,
    server: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

/// Starts everything: first DNS resolution, snapshot, control loop, health checks, admin API,
/// config watch, and the proxy workers. Call from outside any async runtime.
pub fn start(
    settings: Settings,
    file: Option<FileChoice>,
    listeners: Listeners,
    resolver: Option<Arc<dyn Resolve>>,
) -> anyhow::Result<Running> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("balancer-control")
        .enable_all()
        .build()?;
    let resolver: Arc<dyn Resolve> = match resolver {
        Some(r) => r,
        None => Arc::new(runtime.block_on(async { discovery::DnsResolver::from_system() })?),
    };
    let settings = Arc::new(settings);
    let found = runtime.block_on(control::initial_resolution(
        &settings,
        &resolver,
        Duration::from_secs(2),
    ));
    let first = state::build(Arc::clone(&settings), &found, &Default::default(), None, 1);
    let shared = Shared::new(first, listeners.proxy.len());
    let proxy_addr = listeners
        .proxy
        .first()
        .ok_or_else(|| anyhow::anyhow!("no proxy listener"))?
        .local_addr()?;
    let admin_addr = listeners.admin.local_addr()?;
    let background = CancellationToken::new();
    let shutdown = shared.shutdown_token().clone();
    let (tx, rx) = mpsc::channel(256);
    let watch_path = file.as_ref().map(|f| f.path.clone());
    let loaded_version = settings.file_version.clone();
    let ctl = Control::new(
        Arc::clone(&shared),
        file,
        Arc::clone(&settings),
        found,
        resolver,
        tx.clone(),
        background.clone(),
    );
    runtime.spawn(ctl.run(rx));
    runtime.spawn(health::run(Arc::clone(&shared), background.clone()));
    if let Some(path) = watch_path {
        runtime.spawn(config::reload::watch_file(
            path,
            loaded_version,
            Duration::from_secs(1),
            tx.clone(),
            background.clone(),
        ));
    }
    let admin = {
        let _guard = runtime.enter();
        listeners.admin.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(listeners.admin)?
    };
    let live = Arc::new(admin::live::Live::default());
    runtime.spawn(admin::live::run(
        Arc::clone(&shared),
        Arc::clone(&live),
        background.clone(),
    ));
    let app = admin::app(admin::AdminCtx {
        shared: Arc::clone(&shared),
        control: tx.clone(),
        load: Arc::new(loadgen::LoadGen::new(proxy_addr, Arc::clone(&shared))),
        live,
    });
    let stop_admin = background.clone();
    runtime.spawn(async move {
        let served = axum::serve(admin, app)
            .with_graceful_shutdown(async move { stop_admin.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin listener failed");
        }
    });
    let limits = server::ServerLimits {
        max_header_bytes: settings.max_header_bytes,
        idle_timeout: settings.client_idle_timeout,
    };
    let (sh, sd) = (Arc::clone(&shared), shutdown.clone());
    let server = std::thread::Builder::new()
        .name("proxy-main".into())
        .spawn(move || server::serve(listeners.proxy, sh, limits, sd))?;
    Ok(Running {
        proxy_addr,
        admin_addr,
        shared,
        control: tx,
        shutdown,
        background,
        server: Some(server),
        runtime: Some(runtime),
    })
}

impl Running {
    /// Reloads the configuration; `Ok(true)` when something changed. Blocking.
    pub fn reload(&self) -> Result<bool, ReloadError> {
        let (tx, rx) = oneshot::channel();
        self.control
            .blocking_send(Command::Reload(Some(tx)))
            .map_err(|_| ReloadError::Stopped)?;
        rx.blocking_recv().map_err(|_| ReloadError::Stopped)?
    }

    /// A sender to the control loop (signals, tests).
    pub fn control(&self) -> mpsc::Sender<Command> {
        self.control.clone()
    }

    /// Begins a graceful shutdown: stop accepting, finish in-flight requests.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// A token that, when cancelled, begins the graceful shutdown (for signal handlers).
    pub fn stopper(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The runtime of the background tasks (signal handlers run here).
    pub fn runtime(&self) -> Option<&tokio::runtime::Runtime> {
        self.runtime.as_ref()
    }

    /// Waits until the proxy has drained after [`Running::shutdown`], then stops the rest.
    pub fn wait(mut self) -> std::io::Result<()> {
        let r = match self.server.take() {
            Some(t) => t
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("proxy thread panicked"))),
            None => Ok(()),
        };
        self.background.cancel();
        r
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
        self.background.cancel();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
