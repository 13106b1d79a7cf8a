//! Members leaving by DNS, through the proxy with a scripted resolver: a name with no
//! addresses empties its pool at once (503) while a failing resolver keeps the members, a
//! replica that is gone is seen going down before it leaves, and nothing is said about a
//! member after it left.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use balancer::discovery::LookupError;
use balancer::events::Event;
use common::{Backend, Conf, Lb, client, runtime, wait_until};

/// `n` backends on 127.0.0.1..=n sharing one port, as replicas behind one DNS name are.
fn replicas(n: u8) -> (u16, Vec<Backend>) {
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let started: Result<Vec<Backend>, _> = (1..=n)
            .map(|i| Backend::start_at(&format!("r{i}"), SocketAddr::from(([127, 0, 0, i], port))))
            .collect();
        if let Ok(b) = started {
            return (port, b);
        }
    }
}

fn ips(last_octets: &[u8]) -> Result<Vec<IpAddr>, LookupError> {
    Ok(last_octets
        .iter()
        .map(|i| IpAddr::from([127, 0, 0, *i]))
        .collect())
}

/// A balancer whose `dynamic` pool is `api.test:port`, resolved every 250 ms, with checks on
/// (`health` lines go under `[pools.dynamic.health]`), answering with `ips(listed)`.
fn balancer(port: u16, health: &[&str], listed: &[u8]) -> Lb {
    let mut conf = Conf::new(&[format!("api.test:{port}")])
        .top("discovery_interval = \"250ms\"")
        .health_checks()
        .pool("[pools.dynamic.health]");
    for line in health {
        conf = conf.pool(line);
    }
    let lb = conf.start();
    lb.resolver.set("api.test", ips(listed));
    lb
}

/// GETs `/` once: status, `Retry-After`, `X-Backend`.
async fn get(c: &reqwest::Client, lb: &Lb) -> (u16, Option<String>, Option<String>) {
    let r = c.get(lb.url("/")).send().await.unwrap();
    let header = |n: &str| r.headers().get(n).map(|v| v.to_str().unwrap().to_owned());
    (
        r.status().as_u16(),
        header("retry-after"),
        header("x-backend"),
    )
}

/// Waits until the next requests are served by exactly `names`.
async fn served_by(c: &reqwest::Client, lb: &Lb, names: &[&str]) -> bool {
    common::wait_until_async_with(common::EVENTUALLY, async || {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3 * names.len() {
            if let (200, _, Some(b)) = get(c, lb).await {
                seen.insert(b);
            }
        }
        seen.iter().eq(names.iter().copied())
    })
    .await
}

/// The events about `member`, oldest first.
fn events_of(lb: &Lb, member: SocketAddr) -> Vec<Event> {
    let m = member.to_string();
    lb.running
        .shared
        .events
        .recent()
        .into_iter()
        .filter(|e| e.member.as_deref() == Some(m.as_str()))
        .collect()
}

fn is_left(e: &Event) -> bool {
    e.kind == balancer::events::EventKind::Membership && e.message.starts_with("member left")
}

#[test]
fn a_name_with_no_addresses_answers_503_at_once_and_a_failing_resolver_keeps_the_members() {
    let (port, mut backends) = replicas(2);
    let lb = balancer(port, &["interval = \"100ms\""], &[1, 2]);
    let rt = runtime();
    let c = client();
    assert!(rt.block_on(served_by(&c, &lb, &["r1", "r2"])), "both serve");

    // A resolver that fails says nothing about the members: they keep serving.
    lb.resolver
        .set("api.test", Err(LookupError::Failed("timed out".into())));
    let seen = lb.resolver.lookups();
    assert!(wait_until(Duration::from_secs(10), || lb
        .resolver
        .lookups()
        >= seen + 3));
    assert!(
        rt.block_on(served_by(&c, &lb, &["r1", "r2"])),
        "a failed lookup keeps the last set"
    );

    // `scale 0`: the replicas stop and the name stops existing. One such answer is the truth
    // (the resolver fails again after it): the pool is empty, so 503 with Retry-After at
    // once rather than attempts at addresses nobody listens on.
    for b in &mut backends {
        b.kill();
    }
    lb.resolver.queue("api.test", Err(LookupError::NoRecords));
    let emptied = rt.block_on(common::wait_until_async_with(
        common::EVENTUALLY,
        async || get(&c, &lb).await.0 == 503,
    ));
    assert!(emptied, "a name with no addresses never emptied the pool");
    for _ in 0..10 {
        let (status, retry_after, _) = rt.block_on(get(&c, &lb));
        assert_eq!(status, 503);
        assert_eq!(retry_after.as_deref(), Some("1"));
    }
}

#[test]
fn a_replica_that_is_gone_is_seen_down_before_it_leaves_and_nothing_is_said_after() {
    let (port, mut backends) = replicas(2);
    // Checks too rare to notice the kill themselves: the probe on leaving must.
    let lb = balancer(port, &["interval = \"60s\""], &[1, 2]);
    let rt = runtime();
    let c = client();
    assert!(rt.block_on(served_by(&c, &lb, &["r1", "r2"])), "both serve");
    let gone = backends[0].addr;

    // `docker kill`: the replica dies and Docker's DNS stops listing it.
    backends[0].kill();
    lb.resolver.set("api.test", ips(&[2]));
    assert!(
        wait_until(Duration::from_secs(10), || events_of(&lb, gone)
            .iter()
            .any(is_left)),
        "never left: {:?}",
        events_of(&lb, gone)
    );
    assert!(rt.block_on(served_by(&c, &lb, &["r2"])));

    let events = events_of(&lb, gone);
    let left = events.iter().position(is_left).unwrap();
    let down = events.iter().position(|e| {
        e.kind == balancer::events::EventKind::Health && e.message.contains("-> down")
    });
    assert!(
        down.is_some_and(|d| d < left),
        "not seen down before it left: {events:?}"
    );
    assert_eq!(left, events.len() - 1, "events after it left: {events:?}");
}

#[test]
fn a_request_that_fails_after_its_member_left_reports_nothing_about_it() {
    let (port, mut backends) = replicas(2);
    // Without checks a member discovery drops leaves at once.
    let lb = Conf::new(&[format!("api.test:{port}")])
        .top("discovery_interval = \"250ms\"")
        .start();
    lb.resolver.set("api.test", ips(&[1, 2]));
    let rt = runtime();
    let c = client();
    assert!(rt.block_on(served_by(&c, &lb, &["r1", "r2"])), "both serve");
    let gone = backends[0].addr;
    let member = lb.member(gone).unwrap();

    // A POST held by r1 (POSTs are not retried, so its failure is charged to r1).
    let held = rt.block_on(async {
        for _ in 0..4 {
            let req = c.post(lb.url("/slow?ms=600000")).body("x");
            tokio::spawn(async move {
                let _ = req.send().await;
            });
            let r1 = &backends[0].state.in_flight;
            let reached = common::wait_until_async(Duration::from_secs(5), || {
                r1.load(std::sync::atomic::Ordering::SeqCst) == 1
            })
            .await;
            if reached {
                return true;
            }
        }
        false
    });
    assert!(held, "no request reached r1");

    lb.resolver.set("api.test", ips(&[2]));
    assert!(wait_until(Duration::from_secs(10), || events_of(&lb, gone)
        .iter()
        .any(is_left)));
    // The replica dies under the request that was in flight when it left.
    let failures = member.stats.failures();
    backends[0].kill();
    assert!(
        wait_until(Duration::from_secs(10), || member.stats.failures()
            > failures),
        "the held request's failure was never recorded"
    );

    let events = events_of(&lb, gone);
    let left = events.iter().position(is_left).unwrap();
    assert_eq!(left, events.len() - 1, "events after it left: {events:?}");
}
