//! Sticky sessions: the cookie's shape, pinning, failover to a new member with a new cookie,
//! and balancers that agree on where an orphaned cookie goes; sticky ip-hash.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use balancer::pool::Member;
use balancer::select::{PickContext, rendezvous_pick, stable_hash};
use balancer::sticky::member_id;
use common::{Backend, Conf, client, client_from, runtime, upstream};

fn cookie_conf(bs: &[Backend]) -> Conf {
    Conf::new(&bs.iter().map(Backend::member).collect::<Vec<_>>()).pool("sticky = \"cookie\"")
}

fn three() -> Vec<Backend> {
    vec![
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ]
}

/// The `lb_dynamic` value of a response's `Set-Cookie`, if any.
fn set_cookie(resp: &reqwest::Response) -> Option<String> {
    let all: Vec<&str> = resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(all.len() <= 1, "one Set-Cookie at most: {all:?}");
    all.first().map(|v| (*v).to_owned())
}

fn cookie_value(header: &str) -> String {
    header
        .split(';')
        .next()
        .and_then(|kv| kv.strip_prefix("lb_dynamic="))
        .unwrap_or_else(|| panic!("not an lb_dynamic cookie: {header}"))
        .to_owned()
}

#[test]
fn first_response_sets_an_opaque_sticky_cookie() {
    let bs = three();
    let lb = cookie_conf(&bs).start();
    runtime().block_on(async {
        let resp = client().get(lb.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let header = set_cookie(&resp).expect("first response sets the sticky cookie");
        let value = cookie_value(&header);
        assert_eq!(
            header,
            format!("lb_dynamic={value}; Path=/; HttpOnly; SameSite=Lax")
        );
        assert_eq!(value.len(), 16, "{header}");
        assert!(value.bytes().all(|b| b.is_ascii_hexdigit()), "{header}");
        for b in &bs {
            let port = b.addr.port().to_string();
            assert!(
                !header.contains(&port) && !header.contains("127.0.0.1"),
                "{header}"
            );
        }
    });
}

#[test]
fn requests_with_the_cookie_stick_to_one_member() {
    let bs = three();
    let lb = cookie_conf(&bs).start();
    runtime().block_on(async {
        let c = client();
        let first = c.get(lb.url("/")).send().await.unwrap();
        let pinned = upstream(&first);
        let cookie = format!("lb_dynamic={}", cookie_value(&set_cookie(&first).unwrap()));
        let cookies = format!("theme=dark; {cookie}");
        stays_pinned(&c, &lb.url("/"), &cookies, &pinned, 30).await;
        // Without the cookie the pool still spreads requests.
        let mut seen = BTreeSet::new();
        for _ in 0..6 {
            seen.insert(upstream(&c.get(lb.url("/")).send().await.unwrap()));
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
    });
}

#[test]
fn a_configured_cookie_name_and_max_age_shape_the_cookie_and_it_sticks() {
    let bs = three();
    let lb = cookie_conf(&bs)
        .pool("cookie_name = \"pin.id\"")
        .pool("cookie_max_age = \"2h\"")
        .start();
    runtime().block_on(async {
        let c = client();
        let first = c.get(lb.url("/")).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let pinned = upstream(&first);
        let header = set_cookie(&first).expect("first response sets the sticky cookie");
        let mut parts = header.split("; ");
        let value = parts
            .next()
            .and_then(|kv| kv.strip_prefix("pin.id="))
            .unwrap_or_else(|| panic!("not named pin.id: {header}"))
            .to_owned();
        let attrs: BTreeSet<&str> = parts.collect();
        assert_eq!(
            attrs,
            BTreeSet::from(["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=7200"]),
            "{header}"
        );
        // The keyed id of the member that answered, not its address.
        let addr: SocketAddr = pinned.parse().unwrap();
        assert_eq!(
            value,
            member_id(&lb.sticky_key, addr).to_string(),
            "{header}"
        );
        assert!(
            !value.contains(&addr.port().to_string()) && !value.contains("127.0.0.1"),
            "{header}"
        );
        let cookies = format!("lb_dynamic=0; pin.id={value}");
        stays_pinned(&c, &lb.url("/"), &cookies, &pinned, 20).await;
        // The default name means nothing to this pool: no pin, so a cookie is issued.
        let resp = c
            .get(lb.url("/"))
            .header("cookie", format!("lb_dynamic={value}"))
            .send()
            .await
            .unwrap();
        let header = set_cookie(&resp).expect("a request without pin.id gets one");
        assert!(header.starts_with("pin.id="), "{header}");
    });
}

#[test]
fn killed_sticky_member_fails_over_with_a_new_cookie() {
    let mut bs = three();
    let lb = cookie_conf(&bs).start();
    let rt = runtime();
    let (pinned, cookie) = rt.block_on(async {
        let first = client().get(lb.url("/")).send().await.unwrap();
        (upstream(&first), cookie_value(&set_cookie(&first).unwrap()))
    });
    bs.iter_mut()
        .find(|b| b.member() == pinned)
        .expect("pinned backend")
        .kill();
    rt.block_on(async {
        let c = client();
        let resp = c
            .get(lb.url("/"))
            .header("cookie", format!("lb_dynamic={cookie}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            200,
            "the request survives its member's death"
        );
        let moved_to = upstream(&resp);
        assert_ne!(moved_to, pinned);
        let new_cookie = cookie_value(&set_cookie(&resp).expect("a new cookie is issued"));
        assert_ne!(new_cookie, cookie);
        for _ in 0..10 {
            let resp = c
                .get(lb.url("/"))
                .header("cookie", format!("lb_dynamic={new_cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(
                upstream(&resp),
                moved_to,
                "the new cookie pins the new member"
            );
        }
    });
}

/// Where an orphaned cookie should go: the rendezvous winner among the survivors.
fn rendezvous_expectation(key: &[u8; 16], survivors: &[SocketAddr], cookie: &str) -> SocketAddr {
    let members: Vec<Arc<Member>> = survivors
        .iter()
        .map(|a| Arc::new(Member::new(*a, a.to_string().into(), member_id(key, *a), 1)))
        .collect();
    let cx = PickContext {
        now_ms: balancer::pool::now_ms(),
        slow_start_ms: 0,
        key: None,
        exclude: &[],
    };
    let i = rendezvous_pick(&members, &cx, stable_hash(cookie.as_bytes())).expect("a survivor");
    survivors[i]
}

#[test]

fn balancers_sharing_a_secret_send_an_orphaned_cookie_to_the_same_member() {
    let mut bs = three();
    // Three balancers with the same default secret and members, and different histories
    // (0, 1 and 2 earlier requests), as real replicas of a balancer would have.
    let lbs: Vec<_> = (0..3).map(|_| cookie_conf(&bs).start()).collect();
    let rt = runtime();
    rt.block_on(async {
        for (i, lb) in lbs.iter().enumerate() {
            for _ in 0..i {
                assert_eq!(
                    client().get(lb.url("/")).send().await.unwrap().status(),
                    200
                );
            }
        }
    });
    let key = lbs[0].sticky_key;
    let dead = bs[1].addr;
    let cookie = member_id(&key, dead).to_string();
    bs[1].kill();
    let survivors = [bs[0].addr, bs[2].addr];
    let expected = rendezvous_expectation(&key, &survivors, &cookie).to_string();
    rt.block_on(async {
        let mut got = Vec::new();
        for lb in &lbs {
            let resp = client()
                .get(lb.url("/"))
                .header("cookie", format!("lb_dynamic={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            got.push(upstream(&resp));
        }
        assert!(
            got.iter().all(|g| *g == expected),
            "every balancer should move the orphaned cookie to {expected}, got {got:?}"
        );
        // Once the dead member is known to be out, the same holds on later requests.
        for lb in &lbs {
            let resp = client()
                .get(lb.url("/"))
                .header("cookie", format!("lb_dynamic={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(upstream(&resp), expected, "second request");
        }
    });
}

#[test]
fn balancers_agree_on_an_orphaned_cookie_once_the_member_is_known_down() {
    let mut bs = three();
    let lbs: Vec<_> = (0..2).map(|_| cookie_conf(&bs).start()).collect();
    let key = lbs[0].sticky_key;
    let dead = bs[2].addr;
    let cookie = member_id(&key, dead).to_string();
    bs[2].kill();
    let expected = rendezvous_expectation(&key, &[bs[0].addr, bs[1].addr], &cookie).to_string();
    runtime().block_on(async {
        for lb in &lbs {
            // Without a cookie, round-robin reaches the dead member within 3 requests and
            // passive detection ejects it; every request still succeeds.
            for _ in 0..3 {
                assert_eq!(
                    client().get(lb.url("/")).send().await.unwrap().status(),
                    200
                );
            }
            let resp = client()
                .get(lb.url("/"))
                .header("cookie", format!("lb_dynamic={cookie}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(upstream(&resp), expected);
        }
    });
}

#[test]
fn sticky_ip_hash_keeps_each_client_ip_on_one_member() {
    let bs = three();
    let lb = Conf::new(&bs.iter().map(Backend::member).collect::<Vec<_>>())
        .pool("sticky = \"ip-hash\"")
        .start();
    runtime().block_on(async {
        let mut used = BTreeSet::new();
        for i in 30..46 {
            let c = client_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)));
            let mut seen = BTreeSet::new();
            for _ in 0..5 {
                let resp = c.get(lb.url("/")).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                assert_eq!(set_cookie(&resp), None, "ip-hash mode sets no cookie");
                seen.insert(upstream(&resp));
            }
            assert_eq!(seen.len(), 1, "127.0.0.{i} went to {seen:?}");
            used.extend(seen);
        }
        assert!(used.len() >= 2, "16 client IPs should spread: {used:?}");
    });
}

/// Sends `n` GETs carrying `cookies`; each must reach `pinned`, with no cookie re-issued.
async fn stays_pinned(c: &reqwest::Client, url: &str, cookies: &str, pinned: &str, n: usize) {
    for i in 0..n {
        let resp = c.get(url).header("cookie", cookies).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            upstream(&resp),
            pinned,
            "request {i} left the pinned member"
        );
        assert_eq!(set_cookie(&resp), None, "a valid cookie is not re-issued");
    }
}
