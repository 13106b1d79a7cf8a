//! lab-stack's static site: the lab page that polls `/api/student` through the balancer.
//!
//! # Layout
//!
//! - [`config`]: confique config (env, optional TOML file, defaults) and value parsers.
//! - [`page`]: the askama page at `/` (this replica's name, whether the request carried the
//!   sticky cookie, settings in `data-`) and `POST /forget`, which clears the sticky cookie.
//! - [`assets`]: CSS and JS compiled in, served under content-hashed immutable URLs.
//! - [`web`]: the security headers, and (shared) `X-Instance`, access log, `/healthz` and
//!   draining, 404/405.
//!
//! Shared with student-api (the `apps-shared` crate, re-exported here):
//!
//! - [`healthcheck`]: the tiny HTTP client behind `--healthcheck`.
//! - [`load`]: the ORCA `endpoint-load-metrics` header on every response.
//! - [`faults`]: the lab's knobs (slow, busy, failing, unhealthy) and `/fault`: the code is
//!   shared, so the site takes the same `LAB_*` variables as the API.
//! - [`register`]: heartbeats to the balancer's admin API and the DELETE on shutdown.
//! - [`cli`]: the binary's `main` (arguments, tracing, runtime, signals).
//!
//! The page's behaviour (polling, rendering, the form) lives in `assets/app.js`; the markup
//! in `templates/index.html`. [`app`] builds the router from an [`AppState`]; [`run`] serves
//! an already-bound listener, registers with the balancer when configured, and when
//! `shutdown` resolves deregisters, drains for `drain_grace`, then shuts down gracefully.

pub mod assets;
pub mod config;
pub mod page;
pub mod web;

pub use apps_shared::{cli, faults, healthcheck, load, register};

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::http::HeaderMap;
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use tokio::net::TcpListener;

use assets::Assets;
pub use config::Config;
use faults::Faults;
use load::LoadMeter;
use web::{Draining, Identity};

/// Why the site could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The instance name cannot be sent as a header value.
    #[error("instance name {0:?} is not a valid header value")]
    InstanceName(String),
    /// Serving failed.
    #[error("server error")]
    Io(#[from] std::io::Error),
}

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// This replica's name, shown on the page.
    pub instance: Arc<str>,
    /// Embedded assets and their hashed paths.
    pub assets: Arc<Assets>,
    /// `X-Instance` value and the draining flag.
    pub identity: Identity,
    /// What the page shows about the balancer: sticky cookie name, dashboard link.
    pub lab: Arc<page::LabSettings>,
    /// The lab's fault knobs and who may turn them.
    pub faults: Faults,
    /// What the load report on every response is computed from.
    pub load: LoadMeter,
}

impl AppState {
    /// A state named `instance`, with the default lab settings (`lb_static`, dashboard on
    /// `http://localhost:1936/`), no fault knobs (none can be turned: no token), the default
    /// load capacity.
    pub fn new(instance: &str) -> Result<Self, Error> {
        let identity =
            Identity::new(instance).ok_or_else(|| Error::InstanceName(instance.to_owned()))?;
        Ok(Self {
            instance: instance.into(),
            assets: Arc::new(Assets::new()),
            identity,
            lab: Arc::new(page::LabSettings::default()),
            faults: Faults::default(),
            load: LoadMeter::new(load::DEFAULT_CAPACITY),
        })
    }

    /// The state `config` describes.
    pub fn from_config(config: &Config) -> Result<Self, Error> {
        let mut state = Self::new(&config.instance())?;
        state.lab = Arc::new(page::LabSettings {
            sticky_cookie: config.sticky_cookie.clone(),
            dashboard_url: config.dashboard_url.clone(),
        });
        state.faults = config.faults();
        state.load = LoadMeter::new(config.load_capacity);
        Ok(state)
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

/// The whole HTTP surface of the site.
pub fn app(state: AppState) -> Router {
    let css = state.assets.css.clone();
    let js = state.assets.js.clone();
    Router::new()
        .route("/", get(page::index))
        .route("/forget", post(page::forget))
        .route(
            &css.path.clone(),
            get(move |headers: HeaderMap| async move { css.respond(&headers) }),
        )
        .route(
            &js.path.clone(),
            get(move |headers: HeaderMap| async move { js.respond(&headers) }),
        )
        .route("/healthz", get(web::healthz))
        .route(
            faults::PATH,
            get(faults::endpoint::show).put(faults::endpoint::change),
        )
        .method_not_allowed_fallback(web::method_not_allowed)
        .fallback(web::not_found)
        .layer(from_fn_with_state(state.faults.clone(), faults::inject))
        .layer(axum::middleware::map_response(web::security_headers))
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
    let state = AppState::from_config(&config)?;
    tracing::info!(instance = %state.instance, js = %state.assets.js.path, %config, "serving");
    let shutdown = apps_shared::serve::deregistering_first(
        config.registration(),
        listener.local_addr()?,
        shutdown,
    );
    serve(listener, state, config.drain_grace, shutdown).await
}

/// Like [`run`] with a ready-made state.
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
