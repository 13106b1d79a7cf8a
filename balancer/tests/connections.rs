//! Client connections under pressure: the connection cap (`limits.max_connections`) holds
//! under a flood of idle and slow connections and a new client is still served; at the cap
//! with every connection busy a newcomer waits in the backlog and is served, not refused; a
//! head sent too slowly gets 408 and is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{Backend, Conf, Lb, raw_exchange, raw_status, wait_until};

fn proxy_addr(lb: &Lb) -> SocketAddr {
    lb.running.proxy_addr
}

fn open(lb: &Lb) -> usize {
    lb.running.shared.clients.total()
}

/// Whether the balancer closed `s` (EOF or reset) without answering anything.
fn closed_silently(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 64];
    let closed = match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    s.set_nonblocking(false).unwrap();
    closed
}

fn admin_metrics(lb: &Lb) -> String {
    raw_exchange(
        lb.running.admin_addr,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
}

fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn a_flood_of_idle_connections_holds_at_the_cap_and_a_new_client_is_served() {
    const CAP: usize = 20;
    let b = Backend::start("b");
    // Two workers: the cap counts both together.
    let listeners = balancer::server::bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
    let lb = Conf::new(&[b.member()])
        .top(&format!("[limits]\nmax_connections = {CAP}"))
        .start_on(listeners);
    let addr = proxy_addr(&lb);

    // The first connections of the flood: some silent, some sending a head slowly.
    let mut first: Vec<TcpStream> = (0..CAP)
        .map(|i| {
            let mut s = TcpStream::connect(addr).unwrap();
            if i % 2 == 0 {
                s.write_all(b"GET / HTTP/1.1\r\nHost: lab\r\nX-Slow: 1\r\n")
                    .unwrap();
            }
            s
        })
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || open(&lb) == CAP),
        "{} open",
        open(&lb)
    );
    // More of the flood: each newcomer pushes out the connection waiting longest.
    let _more: Vec<TcpStream> = (0..CAP * 2)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    assert!(
        wait_until(Duration::from_secs(10), || {
            lb.running.shared.clients.cap.closed() >= 2 * CAP as u64 && open(&lb) <= CAP
        }),
        "open {}, closed for the cap {}",
        open(&lb),
        lb.running.shared.clients.cap.closed()
    );
    // The oldest went first: every one of the first connections was closed, without a word.
    assert!(
        wait_until(Duration::from_secs(10), || first
            .iter_mut()
            .all(closed_silently)),
        "some of the oldest connections are still open"
    );

    // A real client during the flood is served.
    let resp = raw_exchange(
        addr,
        b"GET /hello HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(open(&lb) <= CAP + 1, "{} open", open(&lb));

    let m = admin_metrics(&lb);
    assert_eq!(
        metric(&m, "balancer_max_connections"),
        Some(CAP as u64),
        "{m}"
    );
    assert!(metric(&m, "balancer_connections_closed_for_cap_total").unwrap() >= 2 * CAP as u64);
    assert_eq!(
        metric(&m, "balancer_connection_cap_reached_total"),
        Some(1),
        "one episode, however many connections it closed"
    );
}

#[test]
fn at_the_cap_with_every_connection_busy_a_newcomer_waits_and_is_served() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()])
        .top("[limits]\nmax_connections = 1")
        .start();
    let addr = proxy_addr(&lb);
    // The one connection allowed is in the middle of a request: it may not be closed.
    let busy = std::thread::spawn(move || {
        raw_exchange(
            addr,
            b"GET /slow?ms=1500 HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n",
            Duration::from_secs(20),
        )
    });
    assert!(b.wait_in_flight(1), "the slow request did not arrive");
    assert!(
        wait_until(Duration::from_secs(10), || lb
            .running
            .shared
            .clients
            .cap
            .capped()),
        "the worker did not stop accepting"
    );
    // The kernel completes the handshake; the balancer accepts once the slow one is done.
    let late = raw_exchange(
        addr,
        b"GET /late HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n",
        Duration::from_secs(20),
    );
    assert_eq!(raw_status(&late), 200, "{late}");
    let slow = busy.join().unwrap();
    assert_eq!(
        raw_status(&slow),
        200,
        "the busy connection was cut: {slow}"
    );
    assert_eq!(lb.running.shared.clients.cap.closed(), 0);
    assert!(lb.running.shared.clients.cap.times_reached() >= 1);
}

#[test]
fn a_head_sent_too_slowly_gets_408_and_is_counted() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()])
        .top("[timeouts]\nclient_idle = \"300ms\"")
        .start();
    let mut s = TcpStream::connect(proxy_addr(&lb)).unwrap();
    s.write_all(b"GET /echo HTTP/1.1\r\nHost: lab\r\nX-Slow: a")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert_eq!(raw_status(&out), 408, "{out}");
    assert!(out.contains("request head did not arrive"), "{out}");
    assert_eq!(lb.running.shared.clients.cap.head_timeouts(), 1);
    let m = admin_metrics(&lb);
    assert_eq!(
        metric(&m, "balancer_client_head_timeouts_total"),
        Some(1),
        "{m}"
    );
    assert!(
        m.contains("balancer_local_responses_total{pool=\"-\",code=\"408\"} 1"),
        "{m}"
    );

    // A connection idle between requests just closes at the idle timeout: no 408, not counted.
    let mut idle = TcpStream::connect(proxy_addr(&lb)).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut out = Vec::new();
    let _ = idle.read_to_end(&mut out);
    assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    assert_eq!(lb.running.shared.clients.cap.head_timeouts(), 1);
}
