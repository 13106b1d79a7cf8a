//! Service discovery: DNS names among the members are re-resolved on an interval and every
//! address in the answer is a member, so `student-api:3000` stands for every replica that
//! `docker compose --scale` starts. A failed lookup keeps the last good set (logged once per
//! outage); a name that stops existing empties its set after a few consecutive answers.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::Command;

/// Consecutive "no such name" answers before a name's members are dropped: a single empty
/// answer during a container restart must not empty the pool.
const EMPTY_AFTER: u32 = 3;

/// Why a lookup gave no addresses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    /// The name exists nowhere (NXDOMAIN / no records): zero replicas.
    #[error("no such name")]
    NoRecords,
    /// The resolver failed (timeout, unreachable, bad config): keep what we had.
    #[error("lookup failed: {0}")]
    Failed(String),
}

/// Boxed future returned by [`Resolve::lookup`].
pub type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, LookupError>> + Send + 'a>>;

/// Turns a host name into addresses; the seam tests replace with a scripted fake.
pub trait Resolve: Send + Sync + std::fmt::Debug + 'static {
    /// Every address the name has now.
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a>;
}

/// The real resolver: hickory, reading /etc/resolv.conf and /etc/hosts (works in a scratch
/// image), with its cache cleared before each lookup because Docker's DNS answers with a
/// 600 s TTL and replicas come and go much faster than that.
#[derive(Debug)]
pub struct DnsResolver {
    inner: hickory_resolver::TokioResolver,
}

impl DnsResolver {
    /// Reads the system configuration.
    pub fn from_system() -> Result<Self, String> {
        let inner = hickory_resolver::Resolver::builder_tokio()
            .map_err(|e| format!("cannot read the system DNS configuration: {e}"))?
            .build()
            .map_err(|e| format!("cannot build the DNS resolver: {e}"))?;
        Ok(DnsResolver { inner })
    }
}

impl Resolve for DnsResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        Box::pin(async move {
            self.inner.clear_cache();
            match self.inner.lookup_ip(host).await {
                Ok(answer) => {
                    let mut ips: Vec<IpAddr> = answer.iter().collect();
                    ips.sort();
                    ips.dedup();
                    if ips.is_empty() {
                        Err(LookupError::NoRecords)
                    } else {
                        Ok(ips)
                    }
                }
                Err(e) if e.is_no_records_found() || e.is_nx_domain() => {
                    Err(LookupError::NoRecords)
                }
                Err(e) => Err(LookupError::Failed(e.to_string())),
            }
        })
    }
}

/// Resolves `host` every `interval` and reports changed address sets to the control loop.
pub async fn watch(
    resolver: Arc<dyn Resolve>,
    host: String,
    port: u16,
    interval: Duration,
    tx: mpsc::Sender<Command>,
    stop: CancellationToken,
) {
    let mut last: Option<Vec<IpAddr>> = None;
    let mut outage = false;
    let mut empty_streak = 0u32;
    loop {
        let result = resolver.lookup(&host).await;
        let next = match result {
            Ok(ips) => {
                if outage {
                    tracing::info!(%host, "DNS resolution recovered");
                    outage = false;
                }
                empty_streak = 0;
                Some(ips)
            }
            Err(LookupError::NoRecords) => {
                empty_streak += 1;
                (empty_streak >= EMPTY_AFTER || last.is_none()).then(Vec::new)
            }
            Err(LookupError::Failed(e)) => {
                if !outage {
                    tracing::warn!(%host, error = %e, "DNS resolution failed; keeping the last known members");
                    outage = true;
                }
                None
            }
        };
        if let Some(ips) = next
            && last.as_ref() != Some(&ips)
        {
            {
                let cmd = Command::Found {
                    host: host.clone(),
                    port,
                    ips: ips.clone(),
                };
                if tx.send(cmd).await.is_err() {
                    return;
                }
                last = Some(ips);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// A resolver for tests and fixed setups: answers from a table that the caller can change.
#[derive(Debug, Default)]
pub struct StaticResolver {
    table: std::sync::Mutex<std::collections::HashMap<String, Result<Vec<IpAddr>, LookupError>>>,
    /// How long each answer takes (milliseconds), to play a slow DNS server.
    delay_ms: std::sync::atomic::AtomicU64,
}

impl StaticResolver {
    /// Makes every answer take `d`.
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms
            .store(d.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// Sets the answer for `host`.
    pub fn set(&self, host: &str, answer: Result<Vec<IpAddr>, LookupError>) {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(host.to_owned(), answer);
    }
}

impl Resolve for StaticResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        let answer = self
            .table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(host)
            .cloned()
            .unwrap_or(Err(LookupError::NoRecords));
        let delay = Duration::from_millis(self.delay_ms.load(std::sync::atomic::Ordering::Relaxed));
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            answer
        })
    }
}
