//! The control loop's side of discovery: a watcher per DNS name in the config, the first
//! resolution before the first snapshot, and the one probe of each member discovery stopped
//! listing.

use std::sync::Arc;
use std::time::Duration;

use super::{Command, Control};
use crate::config::Settings;
use crate::discovery::{self, Resolve};
use crate::events::EventKind;
use crate::health;
use crate::pool::Presence;
use crate::state::Discovered;

impl Control {
    /// Starts the one probe of each member that has just turned leaving.
    pub(super) fn probe_departures(&mut self) {
        let snap = self.shared.snapshot();
        for pool in &snap.pools {
            let Some(h) = &pool.settings.health else {
                continue;
            };
            let name = &pool.settings.name;
            for m in &pool.members {
                if m.presence() != Presence::Leaving
                    || !self.probing.insert((Arc::clone(name), m.addr))
                {
                    continue;
                }
                self.shared.events.push_member(
                    EventKind::Membership,
                    name,
                    m,
                    format!(
                        "member leaving ({} no longer lists it): no new requests; probing it once",
                        m.origin
                    ),
                );
                let (tx, stop, h) = (self.tx.clone(), self.stop.clone(), h.clone());
                let (pool, member) = (Arc::clone(name), Arc::clone(m));
                tokio::spawn(async move {
                    let probe = tokio::select! {
                        p = health::probe(member.addr, &h) => p,
                        () = stop.cancelled() => return,
                    };
                    let _ = tx
                        .send(Command::Departed {
                            pool,
                            member,
                            probe,
                        })
                        .await;
                });
            }
        }
    }

    /// Starts a watcher for every DNS name in the config and stops those no longer named.
    pub(super) fn update_watchers(&mut self) {
        let wanted: std::collections::HashSet<(String, u16)> =
            dns_names(&self.settings).into_iter().collect();
        self.watchers.retain(|k, token| {
            let keep = wanted.contains(k);
            if !keep {
                token.cancel();
            }
            keep
        });
        self.found.retain(|k, _| wanted.contains(k));
        for (host, port) in wanted {
            if self.watchers.contains_key(&(host.clone(), port)) {
                continue;
            }
            let token = self.stop.child_token();
            tokio::spawn(discovery::watch(
                Arc::clone(&self.resolver),
                host.clone(),
                port,
                self.settings.discovery_interval,
                self.tx.clone(),
                token.clone(),
            ));
            self.watchers.insert((host, port), token);
        }
    }
}

/// Every (DNS name, port) among the configured members.
pub(crate) fn dns_names(settings: &Settings) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = settings
        .pools
        .iter()
        .flat_map(|p| p.members.iter())
        .filter(|m| m.ip_addr().is_none())
        .map(|m| (m.host.clone(), m.port))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Resolves every DNS name once (in parallel, bounded by `limit`) for the first snapshot.
pub(crate) async fn initial_resolution(
    settings: &Settings,
    resolver: &Arc<dyn Resolve>,
    limit: Duration,
) -> Discovered {
    resolve_all(dns_names(settings), resolver, limit).await
}

/// Resolves `names` once, in parallel, each bounded by `limit`; failures are logged and left
/// out (their watcher keeps trying).
pub(super) async fn resolve_all(
    names: Vec<(String, u16)>,
    resolver: &Arc<dyn Resolve>,
    limit: Duration,
) -> Discovered {
    let mut set = tokio::task::JoinSet::new();
    for (host, port) in names {
        let r = Arc::clone(resolver);
        set.spawn(async move {
            let ips = tokio::time::timeout(limit, r.lookup(&host)).await;
            (host, port, ips)
        });
    }
    let mut found = Discovered::new();
    while let Some(Ok((host, port, ips))) = set.join_next().await {
        match ips {
            Ok(Ok(ips)) => {
                found.insert((host, port), ips);
            }
            Ok(Err(e)) => {
                tracing::warn!(%host, error = %e, "not resolvable yet; discovery keeps trying")
            }
            Err(_) => {
                tracing::warn!(%host, "DNS lookup timed out; discovery keeps trying")
            }
        }
    }
    found
}
