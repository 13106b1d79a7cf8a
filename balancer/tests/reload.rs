//! Hot reload under continuous load: twenty reloads alternating algorithms, weights and
//! members lose no request; a broken file changes nothing; surviving members keep their state;
//! a member removed by a reload finishes what it was doing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use balancer::config::{self, FileChoice};
use balancer::discovery::StaticResolver;
use balancer::{Listeners, Running};
use common::{Backend, Conf, client, runtime, temp_dir, upstream};

/// `text` as `balancer.toml` in a fresh directory, which is removed when the first half drops.
fn config_file(name: &str, text: &str) -> (tempfile::TempDir, FileChoice) {
    let dir = temp_dir(&format!("reload-{name}"));
    let path: PathBuf = dir.path().join("balancer.toml");
    std::fs::write(&path, text).unwrap();
    let file = FileChoice {
        path,
        explicit: true,
    };
    (dir, file)
}

fn start(file: &FileChoice) -> Running {
    start_with(file, Arc::new(StaticResolver::default()))
}

fn start_with(file: &FileChoice, resolver: Arc<StaticResolver>) -> Running {
    let settings = config::load(file).unwrap();
    let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    balancer::start(
        settings,
        Some(file.clone()),
        Listeners {
            proxy: vec![proxy],
            admin,
        },
        Some(resolver),
    )
    .unwrap()
}

fn member_arc(lb: &Running, addr: std::net::SocketAddr) -> Arc<balancer::pool::Member> {
    let snap = lb.shared.snapshot();
    let pool = snap
        .pools
        .iter()
        .find(|p| &*p.settings.name == "dynamic")
        .unwrap();
    Arc::clone(pool.members.iter().find(|m| m.addr == addr).unwrap())
}

#[test]
fn twenty_reloads_under_load_lose_nothing_and_keep_surviving_members() {
    let bs = [
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    ];
    let (a, b, c) = (bs[0].member(), bs[1].member(), bs[2].member());
    let algorithms = [
        "round-robin",
        "least-connections",
        "p2c",
        "weighted-round-robin",
        "random",
        "ip-hash",
    ];
    let variant = |i: usize| {
        let members: Vec<String> = match i % 3 {
            0 => vec![a.clone(), b.clone(), c.clone()],
            1 => vec![format!("{a}*3"), b.clone()],
            _ => vec![a.clone(), format!("{c}*2")],
        };
        Conf::new(&members)
            .pool(&format!(
                "algorithm = \"{}\"",
                algorithms[i % algorithms.len()]
            ))
            .toml()
    };
    let (_dir, file) = config_file("twenty", &variant(0));
    let lb = start(&file);
    let url = format!("http://{}/", lb.proxy_addr);
    let rt = runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let reasons = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
            let reasons = reasons.clone();
            rt.spawn(async move {
                let c = client();
                while !stop.load(Ordering::SeqCst) {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            ok.fetch_add(1, Ordering::SeqCst);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            let why = match other {
                                Ok(r) => format!("status {}", r.status()),
                                Err(e) => format!("{e:?}"),
                            };
                            reasons.lock().unwrap().push(why);
                        }
                    }
                }
            })
        })
        .collect();
    let a_before = member_arc(&lb, bs[0].addr);
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            a_before.stats.total_responses() > 0
        }),
        "no load reached a"
    );
    let served_before = a_before.stats.total_responses();
    for i in 1..=20 {
        std::fs::write(&file.path, variant(i)).unwrap();
        assert_eq!(lb.reload(), Ok(true), "reload {i} applies");
        // Deliberate spacing: each snapshot serves some of the load before the next.
        std::thread::sleep(Duration::from_millis(60));
    }
    let version = lb.shared.snapshot().version;
    std::fs::write(&file.path, "[pools.dynamic]\nmembers = \"nohost\"\n").unwrap();
    let err = lb.reload().unwrap_err().to_string();
    assert!(
        err.contains("pools.dynamic") || err.contains("host:port"),
        "{err}"
    );
    assert_eq!(
        lb.shared.snapshot().version,
        version,
        "a broken file changes nothing"
    );
    // Deliberately some more load on the kept config before the clients stop.
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for h in clients {
            h.await.unwrap();
        }
    });
    assert!(
        ok.load(Ordering::SeqCst) > 200,
        "too little load: {}",
        ok.load(Ordering::SeqCst)
    );
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "requests failed during reloads: {:?}",
        reasons.lock().unwrap()
    );
    let a_after = member_arc(&lb, bs[0].addr);
    assert!(
        Arc::ptr_eq(&a_before, &a_after),
        "a surviving member is the same member"
    );
    assert!(
        a_after.stats.total_responses() > served_before,
        "its counters carried on"
    );
}

#[test]
fn a_member_removed_by_reload_finishes_its_in_flight_request() {
    let slow = Backend::start("slow");
    let fresh = Backend::start("fresh");
    let (_dir, file) = config_file("drain", &Conf::new(&[slow.member()]).toml());
    let lb = start(&file);
    let url = format!("http://{}", lb.proxy_addr);
    let rt = runtime();
    let in_flight = rt.spawn({
        let url = url.clone();
        async move {
            client()
                .get(format!("{url}/slow?ms=1500"))
                .send()
                .await
                .unwrap()
        }
    });
    assert!(slow.wait_in_flight(1));
    std::fs::write(&file.path, Conf::new(&[fresh.member()]).toml()).unwrap();
    assert_eq!(lb.reload(), Ok(true));
    rt.block_on(async {
        let r = client().get(format!("{url}/")).send().await.unwrap();
        assert_eq!(
            upstream(&r),
            fresh.addr.to_string(),
            "new requests go to the new member"
        );
        let r = in_flight.await.unwrap();
        assert_eq!(
            r.status(),
            200,
            "the removed member's request was drained, not cut"
        );
        assert_eq!(upstream(&r), slow.addr.to_string());
    });
}

#[test]
fn a_reload_that_names_a_new_dns_member_serves_from_it_at_once() {
    let b = Backend::start("b");
    let port = b.addr.port();
    let resolver = Arc::new(StaticResolver::default());
    resolver.set("one.test", Ok(vec![b.addr.ip()]));
    resolver.set("two.test", Ok(vec![b.addr.ip()]));
    let (_dir, file) = config_file("newname", &Conf::new(&[format!("one.test:{port}")]).toml());
    let lb = start_with(&file, resolver.clone());
    // A slow DNS server: the new name's first answer takes a while.
    resolver.set_delay(Duration::from_millis(400));
    std::fs::write(&file.path, Conf::new(&[format!("two.test:{port}")]).toml()).unwrap();
    assert_eq!(lb.reload(), Ok(true));
    let rt = runtime();
    rt.block_on(async {
        let r = client()
            .get(format!("http://{}/", lb.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "the pool was published before its new name resolved"
        );
    });
}

#[test]
fn turning_checks_off_by_reload_brings_a_failing_member_back() {
    let b = Backend::start("b");
    let failing = Conf::new(&[b.member()])
        .health_checks()
        .pool("[pools.dynamic.health]\ninterval = \"100ms\"\nexpect_status = 204");
    let (_dir, file) = config_file("checks-off", &failing.toml());
    let lb = start(&file);
    let member = member_arc(&lb, b.addr);
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            member.health() == balancer::pool::Health::Down
        }),
        "the member answers 200 where 204 is expected: down"
    );
    std::fs::write(&file.path, Conf::new(&[b.member()]).toml()).unwrap();
    assert_eq!(lb.reload(), Ok(true));
    assert!(
        common::wait_until(Duration::from_secs(5), || {
            member.health() == balancer::pool::Health::Unknown
        }),
        "with checks off, the old verdict no longer keeps it out"
    );
}

#[test]
fn a_file_rewritten_in_place_is_applied_only_once_whole() {
    use std::io::Write;
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let text = |m: &Backend| Conf::new(&[m.member()]).toml();
    let (_dir, file) = config_file("in-place", &text(&a));
    let lb = start(&file);
    let url = format!("http://{}/", lb.proxy_addr);
    let rt = runtime();
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, failed) = (url.clone(), stop.clone(), failed.clone());
            rt.spawn(async move {
                let c = client();
                while !stop.load(Ordering::SeqCst) {
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {}
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    // `cat > file` by a slow writer: truncated (an empty file is valid TOML that routes `/`
    // elsewhere) for 100 ms, then the whole text. No explicit reload: only the watcher sees it.
    for i in 0..12 {
        let mut f = std::fs::File::create(&file.path).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let next = if i % 2 == 0 { &b } else { &a };
        f.write_all(text(next).as_bytes()).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(20));
    }
    // The last text names `a`; the watcher applies it once it holds still.
    assert!(common::wait_until(Duration::from_secs(5), || {
        member_arc_opt(&lb, a.addr).is_some() && member_arc_opt(&lb, b.addr).is_none()
    }));
    stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        for h in clients {
            h.await.unwrap();
        }
    });
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "a half-written file was applied"
    );
}

fn member_arc_opt(lb: &Running, addr: std::net::SocketAddr) -> Option<Arc<balancer::pool::Member>> {
    let snap = lb.shared.snapshot();
    let pool = snap.pools.iter().find(|p| &*p.settings.name == "dynamic")?;
    pool.members.iter().find(|m| m.addr == addr).cloned()
}

#[test]
fn an_edit_while_the_balancer_starts_is_applied() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let (_dir, file) = config_file("while-starting", &Conf::new(&[a.member()]).toml());
    let settings = config::load(&file).unwrap();
    // The edit lands after the file was read and before the watcher first looks at it, as
    // when a busy machine schedules the watcher late. Renamed into place, as editors do.
    let tmp = file.path.with_extension("tmp");
    std::fs::write(&tmp, Conf::new(&[b.member()]).toml()).unwrap();
    std::fs::rename(&tmp, &file.path).unwrap();
    let lb = balancer::start(
        settings,
        Some(file.clone()),
        Listeners {
            proxy: vec![std::net::TcpListener::bind("127.0.0.1:0").unwrap()],
            admin: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        },
        Some(Arc::new(StaticResolver::default())),
    )
    .unwrap();
    assert!(
        member_arc_opt(&lb, a.addr).is_some(),
        "starts with what it read"
    );
    // No explicit reload: only the watcher can notice the edit.
    assert!(
        common::wait_until(Duration::from_secs(10), || {
            member_arc_opt(&lb, b.addr).is_some() && member_arc_opt(&lb, a.addr).is_none()
        }),
        "the edit made while starting was never applied"
    );
}
