//! The end of an app's life, in the order the balancer needs: on shutdown deregister first,
//! then report draining while still serving, then stop accepting and finish in-flight requests.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::register::{Registration, Settings};
use crate::web::Draining;

/// Starts announcing `listen` to the balancer when `registration` is set, and returns a
/// shutdown future that, once `shutdown` resolves, deregisters before it resolves itself.
pub fn deregistering_first<F>(
    registration: Option<Settings>,
    listen: SocketAddr,
    shutdown: F,
) -> impl Future<Output = ()> + Send + 'static
where
    F: Future<Output = ()> + Send + 'static,
{
    let registration = registration.map(|settings| Registration::start(settings, listen));
    // Deregister before draining: the balancer stops routing here at once, instead of after
    // its health checks notice the 503s.
    async move {
        shutdown.await;
        if let Some(registration) = registration {
            registration.leave().await;
        }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then sets `draining` (so `/healthz`
/// answers 503) and keeps serving for `drain_grace`, then shuts down gracefully.
pub async fn draining<F>(
    listener: TcpListener,
    app: Router,
    draining: Draining,
    drain_grace: Duration,
    shutdown: F,
) -> std::io::Result<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    let signal = async move {
        shutdown.await;
        draining.start();
        tracing::info!(grace = ?drain_grace, "draining: /healthz reports 503, still serving");
        tokio::time::sleep(drain_grace).await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await?;
    tracing::info!("stopped");
    Ok(())
}
