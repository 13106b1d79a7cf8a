//! Applying a reloaded configuration: validate, reconcile run-time overrides, publish, and say
//! what happened to each run-time setting (kept or dropped) in the events.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::dns::{dns_names, resolve_all};
use super::{Control, ReloadError};
use crate::config;
use crate::events::EventKind;
use crate::pool::{Member, Presence};
use crate::state::Shared;

impl Control {
    /// Loads, validates and applies the configuration; the old one keeps serving on error.
    pub(super) async fn reload(&mut self) -> Result<bool, ReloadError> {
        let loaded = match &self.file {
            Some(f) => config::load(f),
            None => Err(config::ConfigError::Load(
                "no config file to reload (started without one)".into(),
            )),
        };
        if let Ok(next) = &loaded {
            // A name the new config introduces is resolved before the swap, so its pool is not
            // published empty while the new watcher makes its first lookup.
            let new: Vec<(String, u16)> = dns_names(next)
                .into_iter()
                .filter(|k| !self.found.contains_key(k))
                .collect();
            let fresh = resolve_all(new, &self.resolver, Duration::from_secs(2)).await;
            self.found.extend(fresh);
        }
        let at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let mut status = self
            .shared
            .reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        status.at = at;
        match loaded {
            Err(e) => {
                let msg = e.to_string();
                status.ok = false;
                status.error = Some(msg.clone());
                status.rejected += 1;
                drop(status);
                tracing::error!(error = %msg, "config reload rejected; the previous config keeps serving");
                self.shared
                    .events
                    .push(EventKind::Reload, None, None, format!("rejected: {msg}"));
                Err(ReloadError::Rejected(msg))
            }
            Ok(next) => {
                status.ok = true;
                status.error = None;
                if next == *self.settings {
                    status.unchanged += 1;
                }
                drop(status);
                if next == *self.settings {
                    tracing::info!("config reloaded: unchanged");
                    return Ok(false);
                }
                if next.listen != self.settings.listen
                    || next.admin_listen != self.settings.admin_listen
                {
                    tracing::warn!(
                        "listener addresses changed: that takes a restart; the rest is applied"
                    );
                }
                let weights = runtime_weights(&self.shared);
                for (pool, msg) in self.overrides.reconcile(&next) {
                    tracing::info!(pool = %pool, "reload: {msg}");
                    self.shared
                        .events
                        .push(EventKind::Reload, Some(&pool), None, msg);
                }
                self.publish_overrides();
                self.settings = Arc::new(next);
                self.update_watchers();
                self.publish();
                say_runtime_weights(&self.shared, weights);
                self.shared
                    .reload
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .applied += 1;
                let version = self.shared.snapshot().version;
                self.shared.events.push(
                    EventKind::Reload,
                    None,
                    None,
                    format!("applied (snapshot {version})"),
                );
                Ok(true)
            }
        }
    }

    /// Shows the run-time algorithms on the status page.
    pub(super) fn publish_overrides(&self) {
        *self
            .shared
            .overrides
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self.overrides.clone();
    }
}

/// Members whose weight was set at run time, with that weight, before a reload.
fn runtime_weights(shared: &Shared) -> Vec<(Arc<str>, Arc<Member>, u32)> {
    let snap = shared.snapshot();
    snap.pools
        .iter()
        .flat_map(|p| {
            p.members
                .iter()
                .filter(|m| m.weight() != m.config_weight())
                .map(|m| (Arc::clone(&p.settings.name), Arc::clone(m), m.weight()))
        })
        .collect()
}

/// After a reload: says, for each run-time weight, whether it was kept (the file's weight for
/// the member did not change) or dropped (it did), as [`overrides`] does for algorithms.
fn say_runtime_weights(shared: &Shared, before: Vec<(Arc<str>, Arc<Member>, u32)>) {
    for (pool, m, w) in before {
        if m.presence() != Presence::Listed {
            continue;
        }
        let file = m.config_weight();
        let msg = if m.weight() == w {
            format!("run-time weight {w} kept: the file still says {file}")
        } else {
            format!("run-time weight {w} dropped: the file now says {file}")
        };
        shared.events.push(
            EventKind::Reload,
            Some(&pool),
            Some(&m.addr.to_string()),
            msg,
        );
    }
}
