//! Service discovery: DNS names among the members are re-resolved on an interval and every
//! address in the answer is a member, so `student-api:3000` stands for every replica that
//! `docker compose --scale` starts.
//!
//! Two kinds of empty answer are told apart, as linkerd and nginx's resolver do. An answer that
//! the name does not exist or has no address (NXDOMAIN, no records: Docker's DNS after
//! `scale 0`) is the truth: the set is empty now, so its members leave and requests get 503 at
//! once instead of waiting on dead addresses. A resolver that fails (timeout, SERVFAIL,
//! refused, unreachable) says nothing about the members: the last set stays. Each is logged
//! once per spell.
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::control::Command;

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
pub(crate) type LookupFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Vec<IpAddr>, LookupError>> + Send + 'a>>;

/// Turns a host name into addresses; the seam tests replace with a scripted fake.
pub trait Resolve: Send + Sync + std::fmt::Debug + 'static {
    /// Every address the name has now.
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a>;
}

/// Why the system resolver could not be set up.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResolverError {
    /// /etc/resolv.conf (or the platform's equivalent) could not be read.
    #[error("cannot read the system DNS configuration: {0}")]
    SystemConfig(hickory_resolver::net::NetError),
    /// The resolver could not be built from it.
    #[error("cannot build the DNS resolver: {0}")]
    Build(hickory_resolver::net::NetError),
}

/// The real resolver: hickory, reading /etc/resolv.conf and /etc/hosts (works in a scratch
/// image), with its cache cleared before each lookup because Docker's DNS answers with a
/// 600 s TTL and replicas come and go much faster than that.
#[derive(Debug)]
pub(crate) struct DnsResolver {
    inner: hickory_resolver::TokioResolver,
}

impl DnsResolver {
    /// Reads the system configuration.
    pub(crate) fn from_system() -> Result<Self, ResolverError> {
        let inner = hickory_resolver::Resolver::builder_tokio()
            .map_err(ResolverError::SystemConfig)?
            .build()
            .map_err(ResolverError::Build)?;
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

/// What the answers so far mean for one name: the set last reported and whether the resolver
/// is failing. Pure, so the rules are unit-tested apart from the timer and the channel.
#[derive(Debug, Default)]
struct Spell {
    /// The set last reported to the control loop (`None` before the first).
    last: Option<Vec<IpAddr>>,
    /// The resolver failed last time (logged once per outage).
    failing: bool,
}

/// Something worth one log line, said once when it starts.
#[derive(Debug, PartialEq, Eq)]
enum Note {
    /// Answers again after failing.
    Recovered,
    /// The name has no address now: its members leave.
    Empty,
    /// The resolver fails: the members stay.
    Failing(String),
}

impl Spell {
    /// Takes one answer; returns the set to report (only when it changed) and what to log.
    fn answer(
        &mut self,
        answer: Result<Vec<IpAddr>, LookupError>,
    ) -> (Option<Vec<IpAddr>>, Option<Note>) {
        let was_failing = std::mem::replace(&mut self.failing, false);
        let (set, note) = match answer {
            Ok(ips) => (ips, was_failing.then_some(Note::Recovered)),
            Err(LookupError::NoRecords) => {
                let news = self.last.as_ref().is_none_or(|l| !l.is_empty());
                let note = if news {
                    Some(Note::Empty)
                } else {
                    was_failing.then_some(Note::Recovered)
                };
                (Vec::new(), note)
            }
            Err(LookupError::Failed(e)) => {
                self.failing = true;
                return (None, (!was_failing).then_some(Note::Failing(e)));
            }
        };
        if self.last.as_ref() == Some(&set) {
            return (None, note);
        }
        self.last = Some(set.clone());
        (Some(set), note)
    }
}

/// Resolves `host` every `interval` and reports changed address sets to the control loop.
pub(crate) async fn watch(
    resolver: Arc<dyn Resolve>,
    host: String,
    port: u16,
    interval: Duration,
    tx: mpsc::Sender<Command>,
    stop: CancellationToken,
) {
    let mut spell = Spell::default();
    loop {
        let (set, note) = spell.answer(resolver.lookup(&host).await);
        match note {
            Some(Note::Recovered) => tracing::info!(%host, "DNS resolution recovered"),
            Some(Note::Empty) => {
                tracing::info!(%host, "DNS name has no address now; its members leave")
            }
            Some(Note::Failing(e)) => {
                tracing::warn!(%host, error = %e, "DNS resolution failed; keeping the last known members")
            }
            None => {}
        }
        if let Some(ips) = set {
            let cmd = Command::Found {
                host: host.clone(),
                port,
                ips,
            };
            if tx.send(cmd).await.is_err() {
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One answer of a lookup.
type Answer = Result<Vec<IpAddr>, LookupError>;

/// A resolver for tests and fixed setups: answers from a table that the caller can change.
#[derive(Debug, Default)]
pub struct StaticResolver {
    table: std::sync::Mutex<std::collections::HashMap<String, Answer>>,
    /// Answers given once each, before the table's, in order.
    queued: std::sync::Mutex<std::collections::HashMap<String, std::collections::VecDeque<Answer>>>,
    /// Lookups answered so far.
    lookups: std::sync::atomic::AtomicU64,
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

    /// Answers the next lookup of `host` with `answer`, once (after any queued before it);
    /// then the answer from [`StaticResolver::set`] holds again.
    pub fn queue(&self, host: &str, answer: Result<Vec<IpAddr>, LookupError>) {
        self.queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(host.to_owned())
            .or_default()
            .push_back(answer);
    }

    /// How many lookups have been answered.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The table's answer for `host` (no entry: no such name).
    fn answer(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        self.table
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(host)
            .cloned()
            .unwrap_or(Err(LookupError::NoRecords))
    }
}

impl Resolve for StaticResolver {
    fn lookup<'a>(&'a self, host: &'a str) -> LookupFuture<'a> {
        let queued = self
            .queued
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get_mut(host)
            .and_then(std::collections::VecDeque::pop_front);
        let answer = queued.unwrap_or_else(|| self.answer(host));
        let delay = Duration::from_millis(self.delay_ms.load(std::sync::atomic::Ordering::Relaxed));
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            self.lookups
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(octets: &[u8]) -> Vec<IpAddr> {
        octets
            .iter()
            .map(|i| IpAddr::from([10, 0, 0, *i]))
            .collect()
    }

    fn failed() -> Result<Vec<IpAddr>, LookupError> {
        Err(LookupError::Failed("timed out".into()))
    }

    #[test]
    fn a_failing_resolver_keeps_the_set_and_is_logged_once() {
        let mut s = Spell::default();
        assert_eq!(s.answer(Ok(set(&[1, 2]))), (Some(set(&[1, 2])), None));
        assert_eq!(
            s.answer(failed()),
            (None, Some(Note::Failing("timed out".into())))
        );
        assert_eq!(s.answer(failed()), (None, None));
        assert_eq!(s.answer(Ok(set(&[1, 2]))), (None, Some(Note::Recovered)));
        assert_eq!(s.answer(Ok(set(&[2]))), (Some(set(&[2])), None));
    }

    #[test]
    fn no_such_name_empties_the_set_at_once_and_is_logged_once() {
        let mut s = Spell::default();
        s.answer(Ok(set(&[1])));
        assert_eq!(
            s.answer(Err(LookupError::NoRecords)),
            (Some(Vec::new()), Some(Note::Empty))
        );
        assert_eq!(s.answer(Err(LookupError::NoRecords)), (None, None));
        // A failure in between says nothing: the set stays empty.
        s.answer(failed());
        assert_eq!(
            s.answer(Err(LookupError::NoRecords)),
            (None, Some(Note::Recovered))
        );
        assert_eq!(s.answer(Ok(set(&[3]))), (Some(set(&[3])), None));
    }

    #[test]
    fn a_name_that_never_existed_is_reported_empty_once() {
        let mut s = Spell::default();
        assert_eq!(
            s.answer(Err(LookupError::NoRecords)),
            (Some(Vec::new()), Some(Note::Empty))
        );
        assert_eq!(s.answer(Err(LookupError::NoRecords)), (None, None));
    }
}
