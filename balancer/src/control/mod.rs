//! The control loop: the one task that changes the snapshot. Reloads, discovery answers and
//! registrations all arrive here as [`Command`]s and are applied one at a time, so two changes
//! can never race to publish (several independent swaps would).
//!
//! After each publish it probes, once, every member that discovery stopped listing (they stay
//! in the snapshot as leaving, out of rotation; see [`crate::state`]): a member that fails the
//! probe is marked `down`, and either way the next publish drops it, recording that it left.
//! This is Envoy's rule for hosts removed from discovery (keep them until health checking
//! confirms they are gone) with one change: no new request goes to them meanwhile, since a
//! replica that Docker's DNS no longer lists is either dead or shutting down.

mod dns;
pub mod overrides;
mod reload;

pub(crate) use dns::initial_resolution;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{FileChoice, Settings};
use crate::discovery::Resolve;
use crate::events::EventKind;
use crate::health::{self, Probe};
use crate::pool::{Member, Presence};
use crate::select::Algorithm;
use crate::state::{Discovered, Registered, Shared};

/// Why a reload was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// The configuration was refused (the message names the value); the old one keeps
    /// serving. The message is rendered once: it also goes to the status page and the events.
    #[error("{0}")]
    Rejected(String),
    /// The control loop has stopped: the balancer is shutting down.
    #[error("control loop stopped")]
    Stopped,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The pool named in the request does not exist.
    #[error("no pool named `{0}`")]
    NoSuchPool(String),
}

/// A request to the control loop.
#[derive(Debug)]
pub enum Command {
    /// Reload the configuration (SIGHUP, file change, admin action); the reply says whether it
    /// was applied.
    Reload(Option<oneshot::Sender<Result<bool, ReloadError>>>),
    /// Discovery resolved `host` to `ips`.
    Found {
        /// DNS name.
        host: String,
        /// Port of the members it stands for.
        port: u16,
        /// Every address of the answer.
        ips: Vec<IpAddr>,
    },
    /// A member announced itself (heartbeat) for `ttl`.
    Register {
        /// Pool name.
        pool: String,
        /// Member address.
        addr: SocketAddr,
        /// Weight.
        weight: u32,
        /// How long the announcement holds.
        ttl: Duration,
        /// Whether the pool exists.
        reply: oneshot::Sender<Result<(), RegisterError>>,
    },
    /// The one probe of a member that discovery stopped listing has an answer.
    Departed {
        /// Pool name.
        pool: Arc<str>,
        /// The member.
        member: Arc<Member>,
        /// What the probe saw.
        probe: Probe,
    },
    /// Run pool `pool` on `algorithm` until a reload changes the file's (`None`: back to the
    /// file's); the reply is the algorithm now in use.
    SetAlgorithm {
        /// Pool name.
        pool: String,
        /// The algorithm, or `None` for the file's.
        algorithm: Option<Algorithm>,
        /// The algorithm in use, or why not.
        reply: oneshot::Sender<Result<Algorithm, overrides::OverrideError>>,
    },
    /// A member left cleanly.
    Deregister {
        /// Pool name.
        pool: String,
        /// Member address.
        addr: SocketAddr,
        /// Whether it was registered.
        reply: oneshot::Sender<bool>,
    },
}

/// A member's registration over the admin API.
#[derive(Debug, Clone, Copy)]
struct Registration {
    weight: u32,
    /// It lapses unless a heartbeat renews it before this.
    until: Instant,
}

/// State owned by the control loop.
#[derive(Debug)]
pub(crate) struct Control {
    shared: Arc<Shared>,
    file: Option<FileChoice>,
    settings: Arc<Settings>,
    found: Discovered,
    registered: HashMap<(String, SocketAddr), Registration>,
    resolver: Arc<dyn Resolve>,
    watchers: HashMap<(String, u16), CancellationToken>,
    /// Leaving members whose probe is under way, by (pool, address).
    probing: HashSet<(Arc<str>, SocketAddr)>,
    /// Run-time algorithms over the file's `settings`.
    overrides: overrides::Overrides,
    tx: mpsc::Sender<Command>,
    stop: CancellationToken,
}

impl Control {
    /// A control loop for `settings`; `file` is re-read on reload (None: reload re-reads env
    /// only).
    pub(crate) fn new(
        shared: Arc<Shared>,
        file: Option<FileChoice>,
        settings: Arc<Settings>,
        found: Discovered,
        resolver: Arc<dyn Resolve>,
        tx: mpsc::Sender<Command>,
        stop: CancellationToken,
    ) -> Self {
        Control {
            shared,
            file,
            settings,
            found,
            registered: HashMap::new(),
            resolver,
            watchers: HashMap::new(),
            probing: HashSet::new(),
            overrides: overrides::Overrides::default(),
            tx,
            stop,
        }
    }

    /// Runs until `stop`.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.update_watchers();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                Some(cmd) = rx.recv() => self.handle(cmd).await,
                _ = tick.tick() => self.expire_registrations(),
                () = self.stop.cancelled() => break,
            }
        }
        for t in self.watchers.values() {
            t.cancel();
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Reload(reply) => {
                let r = self.reload().await;
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Command::Found { host, port, ips } => {
                if !self.names(&host, port) {
                    // A watcher cancelled by a reload may still deliver one last answer.
                    return;
                }
                let key = (host, port);
                if self.found.get(&key) != Some(&ips) {
                    self.found.insert(key, ips);
                    self.publish();
                }
            }
            Command::Register {
                pool,
                addr,
                weight,
                ttl,
                reply,
            } => {
                if self.settings.pool_index(&pool).is_none() {
                    let _ = reply.send(Err(RegisterError::NoSuchPool(pool)));
                    return;
                }
                let fresh = self
                    .registered
                    .insert(
                        (pool, addr),
                        Registration {
                            weight,
                            until: Instant::now() + ttl,
                        },
                    )
                    .is_none_or(|old| old.weight != weight);
                if fresh {
                    self.publish();
                }
                let _ = reply.send(Ok(()));
            }
            Command::Departed {
                pool,
                member,
                probe,
            } => {
                self.probing.remove(&(Arc::clone(&pool), member.addr));
                // Listed again meanwhile (back in DNS): it stays, whatever the probe saw.
                if member.presence() == Presence::Leaving {
                    health::departure_probe(&self.shared, &pool, &member, &probe);
                    member.set_presence(Presence::Gone);
                    self.publish();
                }
            }
            Command::SetAlgorithm {
                pool,
                algorithm,
                reply,
            } => {
                let before = self.overrides.clone();
                let r = self.overrides.set(&self.settings, &pool, algorithm);
                if let Ok(now) = r
                    && self.overrides != before
                {
                    self.publish_overrides();
                    self.publish();
                    let file = self.overrides.get(&pool).map(|o| o.file);
                    let msg = match file {
                        Some(f) => format!("algorithm {now} at run time (the file says {f})"),
                        None => format!("algorithm back to the file's {now}"),
                    };
                    tracing::info!(pool = %pool, "{msg}");
                    self.shared
                        .events
                        .push(EventKind::Admin, Some(&pool), None, msg);
                }
                let _ = reply.send(r);
            }
            Command::Deregister { pool, addr, reply } => {
                let was = self.registered.remove(&(pool, addr)).is_some();
                if was {
                    self.publish();
                }
                let _ = reply.send(was);
            }
        }
    }

    fn expire_registrations(&mut self) {
        let now = Instant::now();
        let before = self.registered.len();
        self.registered.retain(|(pool, addr), r| {
            let keep = r.until > now;
            if !keep {
                tracing::info!(pool, %addr, "registration expired (no heartbeat within its TTL)");
            }
            keep
        });
        if self.registered.len() != before {
            self.publish();
        }
    }

    fn registered(&self) -> Registered {
        let mut out = Registered::new();
        for ((pool, addr), r) in &self.registered {
            out.entry(pool.clone()).or_default().push((*addr, r.weight));
        }
        for v in out.values_mut() {
            v.sort();
        }
        out
    }

    /// Whether the current config has a member written as `host:port`.
    fn names(&self, host: &str, port: u16) -> bool {
        self.watchers.contains_key(&(host.to_owned(), port))
    }

    fn publish(&mut self) {
        let registered = self.registered();
        let settings = self.overrides.apply(&self.settings);
        self.shared.rebuild(settings, &self.found, &registered);
        self.probe_departures();
    }
}
