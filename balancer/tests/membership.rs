//! Dynamic membership through the real proxy: DNS discovery (scripted resolver), active health
//! checks, draining members, self-registration with its token and TTL, and no lost request
//! while members leave under load.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use balancer::Running;
use balancer::discovery::{LookupError, StaticResolver};
use common::{Backend, Health, eventually};

/// Three backends on 127.0.0.1-3 sharing one port, as replicas behind one DNS name are; each
/// is named after its address.
fn replicas() -> (u16, Vec<Backend>) {
    loop {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = probe.local_addr().unwrap().port();
        drop(probe);
        let started: std::io::Result<Vec<Backend>> = (1..=3)
            .map(|i| {
                let addr = SocketAddr::from(([127, 0, 0, i], port));
                Backend::start_at(&addr.to_string(), addr)
            })
            .collect();
        if let Ok(backends) = started {
            return (port, backends);
        }
    }
}

fn ips(last_octets: &[u8]) -> Result<Vec<IpAddr>, LookupError> {
    Ok(last_octets
        .iter()
        .map(|i| IpAddr::from([127, 0, 0, *i]))
        .collect())
}

async fn start(toml: String, resolver: Arc<StaticResolver>) -> Running {
    tokio::task::spawn_blocking(move || common::start_toml(&toml, resolver))
        .await
        .unwrap()
}

/// The dynamic pool's members in the status: address and state.
fn dynamic_members(lb: &Running) -> Vec<(String, &'static str)> {
    balancer::admin::build_status(&lb.shared)
        .pools
        .into_iter()
        .find(|p| p.name == "dynamic")
        .expect("a dynamic pool")
        .members
        .into_iter()
        .map(|m| (m.addr, m.state.as_str()))
        .collect()
}

/// The state of the dynamic pool's member `addr`, `None` once it is gone.
fn state_of(lb: &Running, addr: &str) -> Option<&'static str> {
    dynamic_members(lb)
        .into_iter()
        .find(|(a, _)| a == addr)
        .map(|(_, state)| state)
}

fn config(port: u16, extra: &str) -> String {
    format!(
        "upstream_header = true\ndiscovery_interval = \"250ms\"\n\
         [pools.static]\nmembers = [\"unused.test:1\"]\n[pools.static.health]\nenabled = false\n\
         [pools.dynamic]\nmembers = [\"api.test:{port}\"]\n{extra}"
    )
}

/// Which backends answer the next `n` GETs.
async fn served_by(client: &reqwest::Client, proxy: SocketAddr, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let r = client
            .get(format!("http://{proxy}/api/student"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        seen.insert(r.headers()["x-backend"].to_str().unwrap().to_owned());
    }
    seen
}

fn names(port: u16, octets: &[u8]) -> BTreeSet<String> {
    octets
        .iter()
        .map(|i| format!("127.0.0.{i}:{port}"))
        .collect()
}

#[tokio::test]
async fn dns_discovery_follows_scale_up_down_and_keeps_the_last_set_on_failure() {
    let (port, _b) = replicas();
    let resolver = Arc::new(StaticResolver::default());
    resolver.set("api.test", ips(&[1]));
    let lb = start(
        config(port, "[pools.dynamic.health]\nenabled = false\n"),
        resolver.clone(),
    )
    .await;
    let c = reqwest::Client::new();
    assert_eq!(served_by(&c, lb.proxy_addr, 6).await, names(port, &[1]));

    resolver.set("api.test", ips(&[1, 2, 3]));
    eventually("scale up to 3", async || {
        served_by(&c, lb.proxy_addr, 9).await == names(port, &[1, 2, 3])
    })
    .await;

    resolver.set("api.test", ips(&[2]));
    eventually("scale down to 1", async || {
        served_by(&c, lb.proxy_addr, 6).await == names(port, &[2])
    })
    .await;

    resolver.set("api.test", Err(LookupError::Failed("timeout".into())));
    // Both names (api.test and unused.test) are looked up every round: six lookups are
    // three rounds that each saw the failure.
    let failed_from = resolver.lookups();
    eventually("three rounds of failed lookups", async || {
        resolver.lookups() >= failed_from + 6
    })
    .await;
    assert_eq!(
        served_by(&c, lb.proxy_addr, 6).await,
        names(port, &[2]),
        "a failed lookup keeps the last set"
    );

    resolver.set("api.test", Err(LookupError::NoRecords));
    eventually("a name that is gone empties the pool", async || {
        let r = c
            .get(format!("http://{}/api/student", lb.proxy_addr))
            .send()
            .await
            .unwrap();
        r.status() == 503 && r.headers().contains_key("retry-after")
    })
    .await;
    let events = balancer::admin::build_status(&lb.shared).events;
    assert!(
        events
            .iter()
            .any(|e| e.kind == balancer::events::EventKind::Membership
                && e.message.contains("joined"))
    );
    assert!(
        events.iter().any(
            |e| e.kind == balancer::events::EventKind::Membership && e.message.contains("left")
        )
    );
}

#[tokio::test]
async fn failing_checks_take_a_member_out_until_it_rises_again() {
    let (port, b) = replicas();
    let resolver = Arc::new(StaticResolver::default());
    resolver.set("api.test", ips(&[1, 2]));
    let health = "[pools.dynamic.health]\ninterval = \"100ms\"\nrise = 2\nfall = 1\n";
    let lb = start(config(port, health), resolver).await;
    let c = reqwest::Client::new();
    eventually("both serve", async || {
        served_by(&c, lb.proxy_addr, 6).await == names(port, &[1, 2])
    })
    .await;

    b[1].state.set_health(Health::Broken);
    eventually("failing member out", async || {
        served_by(&c, lb.proxy_addr, 8).await == names(port, &[1])
    })
    .await;
    let status = balancer::admin::build_status(&lb.shared);
    let m = status.pools[1]
        .members
        .iter()
        .find(|m| {
            m.addr.ends_with(".2:".to_owned().as_str()) || m.addr == format!("127.0.0.2:{port}")
        })
        .unwrap();
    assert_eq!(m.health, "down");

    b[1].state.set_health(Health::Ok);
    eventually("member back after rising", async || {
        served_by(&c, lb.proxy_addr, 8).await == names(port, &[1, 2])
    })
    .await;
    let events = balancer::admin::build_status(&lb.shared).events;
    assert!(
        events
            .iter()
            .any(|e| e.kind == balancer::events::EventKind::Health
                && e.message.starts_with("up -> down")),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e.kind == balancer::events::EventKind::Health
                && e.message.starts_with("down -> up")),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_member_reporting_draining_gets_nothing_new() {
    let (port, b) = replicas();
    let resolver = Arc::new(StaticResolver::default());
    resolver.set("api.test", ips(&[1, 2]));
    let lb = start(
        config(port, "[pools.dynamic.health]\ninterval = \"100ms\"\n"),
        resolver,
    )
    .await;
    let c = reqwest::Client::new();
    eventually("both serve", async || {
        served_by(&c, lb.proxy_addr, 6).await == names(port, &[1, 2])
    })
    .await;
    b[0].state.set_health(Health::Draining);
    eventually("draining member out", async || {
        served_by(&c, lb.proxy_addr, 8).await == names(port, &[2])
    })
    .await;
    let status = balancer::admin::build_status(&lb.shared);
    assert!(
        status.pools[1]
            .members
            .iter()
            .any(|m| m.state == balancer::admin::status::MemberState::Draining)
    );
}

#[tokio::test]
async fn registration_needs_the_token_and_lapses_without_heartbeats() {
    let (port, _b) = replicas();
    let resolver = Arc::new(StaticResolver::default());
    let cfg = format!(
        "admin_token = \"s3cret\"\n{}",
        config(port, "[pools.dynamic.health]\nenabled = false\n")
    );
    let lb = start(cfg, resolver).await;
    let c = reqwest::Client::new();
    let url = |m: &str| format!("http://{}/api/pools/dynamic/members/{m}", lb.admin_addr);
    let member = format!("127.0.0.3:{port}");

    let r = c.put(url(&member)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .put(url(&member))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .put(url("not-an-address"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .put(format!(
            "http://{}/api/pools/nope/members/{member}",
            lb.admin_addr
        ))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let r = c
        .put(format!("{}?ttl=1", url(&member)))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("registered member serves", async || {
        served_by(&c, lb.proxy_addr, 3).await == names(port, &[3])
    })
    .await;
    eventually("registration lapses", async || {
        c.get(format!("http://{}/api/student", lb.proxy_addr))
            .send()
            .await
            .unwrap()
            .status()
            == 503
    })
    .await;

    let r = c
        .put(format!("{}?ttl=30", url(&member)))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually("registered again", async || {
        served_by(&c, lb.proxy_addr, 3).await == names(port, &[3])
    })
    .await;
    let r = c
        .delete(url(&member))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("http://{}/api/student", lb.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503, "a clean leave takes effect at once");
    let r = c
        .delete(url(&member))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn registration_is_refused_without_a_configured_token() {
    let (port, _b) = replicas();
    let lb = start(config(port, ""), Arc::new(StaticResolver::default())).await;
    let r = reqwest::Client::new()
        .put(format!(
            "http://{}/api/pools/dynamic/members/127.0.0.1:{port}",
            lb.admin_addr
        ))
        .bearer_auth("anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("BALANCER_ADMIN_TOKEN")
    );
}

#[tokio::test]
async fn members_leaving_by_dns_health_and_registration_lose_no_request() {
    let (port, b) = replicas();
    let resolver = Arc::new(StaticResolver::default());
    resolver.set("api.test", ips(&[1, 2]));
    let cfg = format!(
        "admin_token = \"t\"\n{}",
        config(port, "[pools.dynamic.health]\ninterval = \"100ms\"\n")
    );
    let lb = start(cfg, resolver.clone()).await;
    let c = reqwest::Client::new();
    let reg = format!(
        "http://{}/api/pools/dynamic/members/127.0.0.3:{port}?ttl=30",
        lb.admin_addr
    );
    assert_eq!(
        c.put(&reg).bearer_auth("t").send().await.unwrap().status(),
        200
    );
    eventually("three serve", async || {
        served_by(&c, lb.proxy_addr, 9).await == names(port, &[1, 2, 3])
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let acked_posts = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..16 {
        let (c, stop, acked) = (c.clone(), stop.clone(), acked_posts.clone());
        let url = format!("http://{}/api/student", lb.proxy_addr);
        clients.push(tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let post = (n + i).is_multiple_of(4);
                let r = if post {
                    c.post(&url).body("{}").send().await
                } else {
                    c.get(&url).send().await
                };
                match r {
                    Ok(r) if r.status().is_success() => {
                        ok += 1;
                        if post {
                            acked.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                    Ok(r) => failed.push(r.status().to_string()),
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        }));
    }
    let served = || b.iter().map(Backend::hits).sum::<u64>();
    let before = served();
    eventually("load through all three", async || served() >= before + 50).await;

    let [one, two, three] = [1, 2, 3].map(|i| format!("127.0.0.{i}:{port}"));
    resolver.set("api.test", ips(&[1, 2])); // unchanged, then 1 leaves by DNS:
    resolver.set("api.test", ips(&[2]));
    eventually("1 left the pool by DNS", async || {
        state_of(&lb, &one).is_none()
    })
    .await;
    assert_eq!(
        state_of(&lb, &two),
        Some("up"),
        "{:?}",
        dynamic_members(&lb)
    );

    b[1].state.set_health(Health::Draining); // 2 leaves by health (draining)
    eventually("2 out of rotation by its health check", async || {
        state_of(&lb, &two) == Some("draining")
    })
    .await;
    let from_three = b[2].hits();
    eventually("3 alone serves the load", async || {
        b[2].hits() >= from_three + 50
    })
    .await;

    // 3 leaves by a clean deregistration; 2 comes back so someone is left to serve.
    b[1].state.set_health(Health::Ok);
    eventually("2 back in rotation", async || {
        state_of(&lb, &two) == Some("up")
    })
    .await;
    let del = format!(
        "http://{}/api/pools/dynamic/members/127.0.0.3:{port}",
        lb.admin_addr
    );
    assert_eq!(
        c.delete(&del)
            .bearer_auth("t")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    eventually("3 left the pool by deregistration", async || {
        state_of(&lb, &three).is_none()
    })
    .await;
    let from_two = b[1].hits();
    eventually("2 alone serves the load", async || {
        b[1].hits() >= from_two + 50
    })
    .await;
    assert_eq!(
        dynamic_members(&lb),
        [(two.clone(), "up")],
        "only 2 is left"
    );
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for h in clients {
        let (ok, failed) = h.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        total += ok;
    }
    assert!(total > 100, "too little load to mean anything: {total}");
    let served_posts: u64 = b.iter().map(|b| b.state.posts.load(Ordering::SeqCst)).sum();
    assert_eq!(
        served_posts,
        acked_posts.load(Ordering::SeqCst),
        "every acknowledged POST reached exactly one backend"
    );
}
