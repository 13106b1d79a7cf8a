//! lab-stack's student API: random students from a roster shared by all replicas (a file,
//! or PostgreSQL for replicas on several hosts).
//!
//! # Layout
//!
//! - [`config`]: confique config (env, optional TOML file, defaults) and value parsers.
//! - [`student`]: the record and its validation (every bad field listed at once).
//! - [`generate`]: made-up students for seeding and for running without a data dir.
//! - [`roster`]: the JSONL file: locked fsynced appends, incremental re-reads, torn lines.
//! - [`store`]: what the handlers call: the roster file or PostgreSQL (`store::postgres`).
//! - [`api`]: the `/api/student` handlers.
//!
//! Shared with static-site (the `apps-shared` crate, re-exported here):
//!
//! - [`web`]: `X-Instance`, access log, `/healthz` and draining, JSON 404/405.
//! - [`load`]: the ORCA `endpoint-load-metrics` header on every response.
//! - [`faults`]: the lab's knobs (slow, busy, failing, unhealthy) and `/fault`.
//! - [`healthcheck`]: the tiny HTTP client behind `--healthcheck`.
//! - [`register`]: heartbeats to the balancer's admin API and the DELETE on shutdown.
//! - [`cli`]: the binary's `main` (arguments, tracing, runtime, signals).
//!
//! [`app`] builds the router from an [`AppState`]; [`run`] serves an already-bound listener,
//! registers with the balancer when configured, and when `shutdown` resolves deregisters,
//! drains for `drain_grace`, then shuts down gracefully.

pub mod api;
pub mod config;
pub mod generate;
pub mod roster;
pub mod store;
pub mod student;

pub use apps_shared::{cli, faults, healthcheck, load, register, web};

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef};
use axum::middleware::from_fn_with_state;
use axum::routing::get;
use tokio::net::TcpListener;

pub use config::Config;
use faults::Faults;
use load::LoadMeter;
use roster::Roster;
use store::Store;
use web::{Draining, Identity};

/// Largest accepted request body: a student is a few hundred bytes.
const BODY_LIMIT: usize = 16 * 1024;

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The instance name cannot be sent as a header value.
    #[error("instance name {0:?} is not a valid header value")]
    InstanceName(String),
    /// Opening the roster file panicked or was cancelled.
    #[error("roster setup failed")]
    Setup(#[from] tokio::task::JoinError),
    /// Serving failed.
    #[error("server error")]
    Io(#[from] std::io::Error),
}

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Where the students live.
    pub store: Store,
    /// `X-Instance` value and the draining flag.
    pub identity: Identity,
    /// The lab's fault knobs and who may turn them.
    pub faults: Faults,
    /// What the load report on every response is computed from.
    pub load: LoadMeter,
}

impl AppState {
    /// Opens (and if needed seeds) the store named in `config`; a database that does not
    /// answer yet is not an error (see [`Store::open`]).
    pub async fn open(config: &Config) -> Result<Self, Error> {
        let store = Store::open(config).await?;
        let mut state = Self::with_store(&config.instance(), store)?;
        state.faults = config.faults();
        state.load = LoadMeter::new(config.load_capacity);
        Ok(state)
    }

    /// A state around an existing roster file, named `instance`.
    pub fn with_roster(instance: &str, roster: Roster) -> Result<Self, Error> {
        Self::with_store(instance, Store::File(Arc::new(roster)))
    }

    /// A state around an existing store, named `instance`, no fault knobs (and none can be
    /// turned: no token), the default load capacity.
    pub fn with_store(instance: &str, store: Store) -> Result<Self, Error> {
        Ok(Self {
            store,
            identity: Identity::new(instance)
                .ok_or_else(|| Error::InstanceName(instance.to_owned()))?,
            faults: Faults::default(),
            load: LoadMeter::new(load::DEFAULT_CAPACITY),
        })
    }
}

impl FromRef<AppState> for Store {
    fn from_ref(state: &AppState) -> Self {
        state.store.clone()
    }
}

impl FromRef<AppState> for Faults {
    fn from_ref(state: &AppState) -> Self {
        state.faults.clone()
    }
}

impl FromRef<AppState> for Draining {
    fn from_ref(state: &AppState) -> Self {
        state.identity.draining.clone()
    }
}

/// The whole HTTP surface of the service.
pub fn app(state: AppState) -> Router {
    let student = get(api::list).post(api::create);
    Router::new()
        .route("/api/student", student.clone())
        .route("/api/student/", student)
        .route("/api/student/{id}", get(api::get_one))
        .route("/healthz", get(web::healthz))
        .route(
            faults::PATH,
            get(faults::endpoint::show).put(faults::endpoint::change),
        )
        .method_not_allowed_fallback(web::method_not_allowed)
        .fallback(web::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(from_fn_with_state(state.faults.clone(), faults::inject))
        .layer(from_fn_with_state(state.load.clone(), load::report))
        .layer(from_fn_with_state(
            state.identity.clone(),
            web::identify_and_log,
        ))
        .with_state(state)
}

/// Serves `listener` (announcing it to the balancer when configured) until `shutdown`
/// resolves, then deregisters, reports draining for `config.drain_grace` while still
/// serving, then stops accepting and finishes in-flight requests.
pub async fn run<F>(listener: TcpListener, config: Config, shutdown: F) -> Result<(), Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    let state = AppState::open(&config).await?;
    tracing::info!(instance = ?state.identity.instance, store = %state.store.describe(), %config, "serving");
    let shutdown = apps_shared::serve::deregistering_first(
        config.registration(),
        listener.local_addr()?,
        shutdown,
    );
    serve(listener, state, config.drain_grace, shutdown).await
}

/// Like [`run`] with a ready-made state (tests use it to share one store).
pub async fn serve<F>(
    listener: TcpListener,
    state: AppState,
    drain_grace: std::time::Duration,
    shutdown: F,
) -> Result<(), Error>
where
    F: Future<Output = ()> + Send + 'static,
{
    let draining = state.identity.draining.clone();
    apps_shared::serve::draining(listener, app(state), draining, drain_grace, shutdown).await?;
    Ok(())
}
