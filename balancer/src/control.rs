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

pub mod overrides;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{self, FileChoice, Settings};
use crate::discovery::{self, Resolve};
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

    /// Starts the one probe of each member that has just turned leaving.
    fn probe_departures(&mut self) {
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

    /// Loads, validates and applies the configuration; the old one keeps serving on error.
    async fn reload(&mut self) -> Result<bool, ReloadError> {
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
    fn publish_overrides(&self) {
        *self
            .shared
            .overrides
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = self.overrides.clone();
    }

    /// Starts a watcher for every DNS name in the config and stops those no longer named.
    fn update_watchers(&mut self) {
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
async fn resolve_all(
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
