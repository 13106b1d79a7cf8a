//! Self-registration with the balancer: heartbeat `PUT {url}/{ip}:{port}?ttl=N` while
//! serving, `DELETE` it first thing on shutdown so the balancer stops routing here before
//! draining begins.
//!
//! - [`url`]: the strictly parsed `http://host[:port]/path` and the redacted token.
//! - [`report`]: the pure "when to log" state machine (first success, outage, recovery).
//! - `http`: one hand-written HTTP/1.1 request (no client crate: the images stay small).

mod http;
pub mod report;
pub mod url;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, timeout};

use report::{Event, FailureKind, Reporter};
pub use url::{RegisterUrl, Token, UrlError, parse_token, parse_url};

/// Budget of one heartbeat, and of the final DELETE: the balancer is on the local network,
/// and shutdown must not wait long before draining starts.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);
/// Shortest TTL sent: a registration must survive a late heartbeat or two.
pub const MIN_TTL_SECS: u64 = 5;
/// Longest TTL the balancer accepts.
pub const MAX_TTL_SECS: u64 = 3600;
/// Accepted heartbeat intervals: below 100 ms is a busy loop, above 20 min the TTL overflows.
pub const INTERVALS: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(1200));

/// What registration needs, from config.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The pool's member collection; the member `ip:port` is appended.
    pub url: RegisterUrl,
    /// Bearer token for the balancer's admin API.
    pub token: Token,
    /// Address to announce; `None` = the listen port on the IP the balancer sees us from.
    pub advertise: Option<SocketAddr>,
    /// Time between heartbeats.
    pub interval: Duration,
}

/// The TTL announced for `interval`: three missed heartbeats, at least [`MIN_TTL_SECS`].
pub fn ttl_secs(interval: Duration) -> u64 {
    let ms = u64::try_from(interval.as_millis()).unwrap_or(u64::MAX);
    ms.saturating_mul(3)
        .div_ceil(1000)
        .clamp(MIN_TTL_SECS, MAX_TTL_SECS)
}

/// An interval that is not a duration within [`INTERVALS`].
#[derive(Debug, thiserror::Error)]
#[error("invalid value {0:?}: expected a duration between 100ms and 20m, such as 2s")]
pub struct BadInterval(String);

/// `parse_env` for `REGISTER_INTERVAL`: a human duration within [`INTERVALS`].
pub fn parse_interval(s: &str) -> Result<Duration, BadInterval> {
    humantime::parse_duration(s.trim())
        .ok()
        .filter(|d| check_interval(d).is_ok())
        .ok_or_else(|| BadInterval(s.to_owned()))
}

/// confique `validate` for the interval (the file path; env values meet [`parse_interval`]).
pub fn check_interval(interval: &Duration) -> Result<(), &'static str> {
    if (INTERVALS.0..=INTERVALS.1).contains(interval) {
        Ok(())
    } else {
        Err("expected a duration between 100ms and 20m, such as 2s")
    }
}

/// A running heartbeat task. [`Registration::leave`] stops it and deregisters.
#[derive(Debug)]
pub struct Registration {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Registration {
    /// Starts heartbeating for the server listening on `listen`; the first heartbeat goes out
    /// at once.
    pub fn start(settings: Settings, listen: SocketAddr) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(heartbeat_loop(settings, listen, stopped));
        Self { stop, task }
    }

    /// Stops heartbeating and sends the DELETE. Returns within [`REQUEST_TIMEOUT`] of the
    /// heartbeat in flight (if any) finishing: that one is awaited rather than cancelled, so
    /// it cannot reach the balancer after the DELETE and register us again.
    pub async fn leave(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "registration task failed");
        }
    }
}

/// Why a heartbeat or the DELETE failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} has no address usable from a {family} listener")]
    NoAddress { host: String, family: &'static str },
    #[error("cannot find this host's IP address towards {balancer}: {source}")]
    OwnAddress {
        balancer: SocketAddr,
        source: std::io::Error,
    },
    #[error("{balancer}: {source}")]
    Io {
        balancer: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the balancer answered {status} {body}")]
    Status { status: u16, body: String },
}

impl Failure {
    fn kind(&self) -> FailureKind {
        match self {
            Self::Status {
                status: 401 | 403, ..
            } => FailureKind::Auth,
            _ => FailureKind::Other,
        }
    }
}

/// Heartbeats every interval until `stopped` fires (or its sender is dropped), then deletes.
async fn heartbeat_loop(
    settings: Settings,
    listen: SocketAddr,
    mut stopped: oneshot::Receiver<()>,
) {
    let ttl = ttl_secs(settings.interval);
    // Fixed once known, so the DELETE names exactly what the heartbeats registered.
    let mut member = settings.advertise.or_else(|| concrete(listen));
    let mut reporter = Reporter::default();
    let mut ticker = tokio::time::interval(settings.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => break,
            _ = ticker.tick() => {}
        }
        let outcome = timeout(
            REQUEST_TIMEOUT,
            heartbeat(&settings, listen, &mut member, ttl),
        )
        .await
        .unwrap_or(Err(Failure::Timeout(REQUEST_TIMEOUT)));
        let event = reporter.record(outcome.as_ref().map(|_| ()).map_err(Failure::kind));
        if let Some(event) = event {
            log_event(event, &settings, member, ttl, outcome.err());
        }
    }
    deregister(&settings, member).await;
}

/// One `PUT`; learns our own address on the first resolvable attempt.
async fn heartbeat(
    settings: &Settings,
    listen: SocketAddr,
    member: &mut Option<SocketAddr>,
    ttl: u64,
) -> Result<(), Failure> {
    let balancer = resolve(&settings.url, listen.ip()).await?;
    let addr = match *member {
        Some(addr) => addr,
        None => {
            let ip = own_ip_towards(balancer)
                .map_err(|source| Failure::OwnAddress { balancer, source })?;
            *member.insert(SocketAddr::new(ip, listen.port()))
        }
    };
    let target = format!("{}/{addr}?ttl={ttl}", settings.url.path);
    send(settings, balancer, "PUT", &target).await.map(|_| ())
}

/// The final `DELETE`, bounded by [`REQUEST_TIMEOUT`]; a 404 means it had already lapsed.
async fn deregister(settings: &Settings, member: Option<SocketAddr>) {
    let url = &settings.url;
    let Some(addr) = member else {
        tracing::info!(balancer = %url, "never registered with the balancer: nothing to remove");
        return;
    };
    let delete = async {
        let balancer = resolve(url, addr.ip()).await?;
        send(
            settings,
            balancer,
            "DELETE",
            &format!("{}/{addr}", url.path),
        )
        .await
    };
    match timeout(REQUEST_TIMEOUT, delete).await {
        Ok(Ok(_)) => {
            tracing::info!(balancer = %url, member = %addr, "deregistered from the balancer")
        }
        Ok(Err(Failure::Status { status: 404, .. })) => {
            tracing::info!(balancer = %url, member = %addr, "was not registered with the balancer (lapsed)");
        }
        Ok(Err(e)) => {
            tracing::warn!(balancer = %url, member = %addr, error = %e, "deregistration failed; the balancer drops us when the TTL lapses");
        }
        Err(_) => {
            tracing::warn!(balancer = %url, member = %addr, "deregistration timed out after {REQUEST_TIMEOUT:?}; the balancer drops us when the TTL lapses");
        }
    }
}

/// Sends one request; anything but 2xx is a [`Failure::Status`].
async fn send(
    settings: &Settings,
    balancer: SocketAddr,
    method: &str,
    target: &str,
) -> Result<http::Response, Failure> {
    let res = http::request(
        balancer,
        method,
        &settings.url.authority(),
        target,
        settings.token.expose(),
    )
    .await
    .map_err(|source| Failure::Io { balancer, source })?;
    if (200..300).contains(&res.status) {
        Ok(res)
    } else {
        Err(Failure::Status {
            status: res.status,
            body: res.body,
        })
    }
}

/// Resolves the balancer host, preferring an address our listener's family can advertise:
/// an IPv4-only listener must be announced on an IPv4 address.
async fn resolve(url: &RegisterUrl, local: IpAddr) -> Result<SocketAddr, Failure> {
    let mut addrs = tokio::net::lookup_host((url.host.as_str(), url.port))
        .await
        .map_err(|source| Failure::Resolve {
            host: url.host.clone(),
            source,
        })?;
    let usable = |a: &SocketAddr| local.is_ipv6() || a.is_ipv4();
    addrs.find(usable).ok_or_else(|| Failure::NoAddress {
        host: url.host.clone(),
        family: if local.is_ipv4() { "IPv4" } else { "IPv6" },
    })
}

/// `listen` itself when it names a specific IP (not a wildcard).
fn concrete(listen: SocketAddr) -> Option<SocketAddr> {
    (!listen.ip().is_unspecified()).then_some(listen)
}

/// The source IP the kernel picks to reach `balancer`, which is the address the balancer
/// sees us from. Connecting a UDP socket only sets its default peer: no packet is sent.
fn own_ip_towards(balancer: SocketAddr) -> std::io::Result<IpAddr> {
    let any: IpAddr = match balancer {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = std::net::UdpSocket::bind((any, 0))?;
    socket.connect(balancer)?;
    Ok(socket.local_addr()?.ip())
}

fn log_event(
    event: Event,
    settings: &Settings,
    member: Option<SocketAddr>,
    ttl: u64,
    failure: Option<Failure>,
) {
    let url = &settings.url;
    let member = member.map_or_else(|| "unknown yet".to_owned(), |m| m.to_string());
    let every = humantime::format_duration(settings.interval);
    let error = failure.map(|f| f.to_string()).unwrap_or_default();
    match event {
        Event::Registered => {
            tracing::info!(balancer = %url, %member, ttl, "registered with the balancer; heartbeat every {every}");
        }
        Event::Recovered => {
            tracing::info!(balancer = %url, %member, ttl, "registration with the balancer recovered");
        }
        Event::Failing(FailureKind::Auth) => tracing::error!(
            balancer = %url, %member, %error,
            "configuration error: the balancer refused BALANCER_ADMIN_TOKEN (401: the tokens \
             differ; 403: the balancer has no token set); still serving, retrying every {every}"
        ),
        Event::Failing(FailureKind::Other) => tracing::warn!(
            balancer = %url, %member, %error,
            "cannot register with the balancer; still serving, retrying every {every}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_three_intervals_but_at_least_five_seconds() {
        assert_eq!(ttl_secs(Duration::from_secs(2)), 6);
        assert_eq!(ttl_secs(Duration::from_millis(500)), 5);
        assert_eq!(ttl_secs(Duration::from_millis(2100)), 7);
        assert_eq!(ttl_secs(Duration::from_secs(1200)), 3600);
    }

    #[test]
    fn intervals_outside_the_range_are_refused() {
        assert_eq!(parse_interval("2s").unwrap(), Duration::from_secs(2));
        let err = parse_interval("0s").unwrap_err().to_string();
        assert!(err.contains("\"0s\"") && err.contains("100ms"), "{err}");
        assert!(parse_interval("soon").is_err());
        assert!(check_interval(&Duration::from_secs(2)).is_ok());
        assert!(check_interval(&Duration::ZERO).is_err());
        assert!(check_interval(&Duration::from_secs(3600)).is_err());
    }

    #[test]
    fn a_specific_listen_ip_is_announced_as_is_and_a_wildcard_is_not() {
        let specific: SocketAddr = "10.1.2.3:3000".parse().unwrap();
        assert_eq!(concrete(specific), Some(specific));
        assert_eq!(concrete("0.0.0.0:3000".parse().unwrap()), None);
        assert_eq!(concrete("[::]:3000".parse().unwrap()), None);
    }

    #[test]
    fn own_ip_towards_loopback_is_loopback() {
        let ip = own_ip_towards("127.0.0.1:9".parse().unwrap()).unwrap();
        assert!(ip.is_loopback(), "{ip}");
    }

    #[test]
    fn only_auth_statuses_are_configuration_errors() {
        let status = |status| Failure::Status {
            status,
            body: String::new(),
        };
        assert_eq!(status(401).kind(), FailureKind::Auth);
        assert_eq!(status(403).kind(), FailureKind::Auth);
        assert_eq!(status(404).kind(), FailureKind::Other);
        assert_eq!(Failure::Timeout(REQUEST_TIMEOUT).kind(), FailureKind::Other);
    }
}
