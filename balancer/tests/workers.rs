//! Several proxy workers: connections are spread evenly over them however the kernel placed
//! them, the admin API shows each worker's share, and a connection one worker handed to
//! another is served to the end, through a graceful shutdown too.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use common::{Backend, Conf, Lb, raw_round_trip, raw_status, wait_until};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: lab\r\n\r\n";

/// Two workers where every connection reaches the first: the second one's listener is on a
/// port nobody connects to, the worst split `SO_REUSEPORT`'s hash could make.
fn two_workers_one_door(b: &Backend) -> Lb {
    let door = TcpListener::bind("127.0.0.1:0").unwrap();
    let unused = TcpListener::bind("127.0.0.1:0").unwrap();
    Conf::new(&[b.member()]).start_on(vec![door, unused])
}

/// `n` connections opened one after another, each kept open after a first request.
fn served_connections(lb: &Lb, n: usize) -> Vec<TcpStream> {
    (0..n)
        .map(|i| {
            let mut c = TcpStream::connect(lb.running.proxy_addr).unwrap();
            let resp = raw_round_trip(&mut c, GET, Duration::from_secs(5));
            assert_eq!(raw_status(&resp), 200, "first request on connection {i}");
            c
        })
        .collect()
}

fn client_connections(lb: &Lb) -> Vec<u64> {
    let status = common::runtime().block_on(common::admin_status(
        &common::client(),
        lb.running.admin_addr,
    ));
    status["client_connections"]
        .as_array()
        .expect("client_connections is a list")
        .iter()
        .map(|n| n.as_u64().expect("a count"))
        .collect()
}

#[test]
fn connections_accepted_by_one_worker_are_shared_with_the_other() {
    let b = Backend::start("b");
    let lb = two_workers_one_door(&b);
    let mut conns = served_connections(&lb, 20);
    let shares = client_connections(&lb);
    assert_eq!(shares.len(), 2);
    assert_eq!(
        shares.iter().sum::<u64>(),
        20,
        "every open connection counted once"
    );
    assert!(
        shares[0].abs_diff(shares[1]) <= 2,
        "the shares are even, not 20/0: {shares:?}"
    );
    for (i, c) in conns.iter_mut().enumerate() {
        let resp = raw_round_trip(c, GET, Duration::from_secs(5));
        assert_eq!(raw_status(&resp), 200, "second request on connection {i}");
    }
    assert_eq!(b.hits(), 40);
    drop(conns);
    assert!(
        wait_until(Duration::from_secs(5), || client_connections(&lb) == [0, 0]),
        "closed connections leave the counts: {:?}",
        client_connections(&lb)
    );
}

#[test]
fn handed_over_connections_finish_their_requests_through_a_graceful_shutdown() {
    let b = Backend::start("b");
    let lb = two_workers_one_door(&b);
    let clients: Vec<_> = (0..6)
        .map(|_| {
            let addr = lb.running.proxy_addr;
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(addr).unwrap();
                raw_round_trip(
                    &mut c,
                    b"GET /slow?ms=1000 HTTP/1.1\r\nHost: lab\r\n\r\n",
                    Duration::from_secs(10),
                )
            })
        })
        .collect();
    assert!(
        b.wait_in_flight(6),
        "the six slow requests reached the member"
    );
    let shares = client_connections(&lb);
    assert!(
        shares[1] >= 2,
        "some connections were handed over: {shares:?}"
    );
    lb.running.shutdown();
    for c in clients {
        let resp = c.join().unwrap();
        assert_eq!(
            raw_status(&resp),
            200,
            "in-flight request finished: {resp:?}"
        );
        assert!(resp.ends_with("\r\n\r\nb"), "with its body: {resp:?}");
    }
}

#[test]
fn idle_connections_on_every_worker_are_closed_at_shutdown() {
    let b = Backend::start("b");
    let lb = two_workers_one_door(&b);
    let mut conns = served_connections(&lb, 3);
    assert_eq!(client_connections(&lb), [2, 1], "the third was handed over");
    lb.running.shutdown();
    for (i, c) in conns.iter_mut().enumerate() {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut byte = [0u8; 1];
        assert_eq!(
            std::io::Read::read(c, &mut byte).unwrap(),
            0,
            "idle connection {i} closed"
        );
    }
    lb.running.wait().expect("the balancer stops");
}
