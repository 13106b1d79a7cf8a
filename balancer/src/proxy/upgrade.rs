//! Protocol upgrades (WebSocket): once the member answers 101, the two upgraded connections
//! are joined and bytes flow both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::pool::InFlight;

/// Joins the client's and the member's upgraded connections in a background task; the member
/// counts the tunnel as in flight until it closes.
pub(super) fn bridge(client: OnUpgrade, upstream: OnUpgrade, guard: InFlight) {
    tokio::spawn(async move {
        let _guard = guard;
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}
