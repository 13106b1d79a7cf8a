//! The client side of the wire, where the balancer's own loop serves plain requests and hands
//! the rest of a connection to hyper: HTTP/1.0 and keep-alive, pipelining across the handover,
//! HEAD, a head dribbled slower than the idle timeout, malformed heads, framing hidden behind
//! a trailer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{Backend, Conf, Lb};

fn proxy_addr(lb: &Lb) -> SocketAddr {
    lb.running.proxy_addr
}

/// Writes `request`, then reads until the balancer closes or `limit` passes.
fn exchange(lb: &Lb, request: &[u8], limit: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(proxy_addr(lb)).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// Sends each of `heads` on its own connection: each must get a 400 and a closed connection.
fn assert_each_is_400_and_closed(lb: &Lb, heads: &[&[u8]]) {
    for bad in heads {
        let (out, closed) = exchange(lb, bad, Duration::from_secs(5));
        assert!(
            out.starts_with("HTTP/1.1 400"),
            "{:?} -> {out}",
            String::from_utf8_lossy(bad)
        );
        assert!(
            closed,
            "{:?} left the connection open",
            String::from_utf8_lossy(bad)
        );
    }
}

fn statuses(out: &str) -> Vec<&str> {
    out.match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect()
}

#[test]
fn http_1_0_is_answered_and_closed_unless_it_asks_for_keep_alive() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    let (out, closed) = exchange(
        &lb,
        b"GET /echo HTTP/1.0\r\nHost: lab\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("connection: close"),
        "{out}"
    );
    assert!(
        closed,
        "an HTTP/1.0 connection without keep-alive stays open"
    );

    let (out, closed) = exchange(
        &lb,
        b"GET /echo HTTP/1.0\r\nHost: lab\r\nConnection: keep-alive\r\n\r\n",
        Duration::from_millis(500),
    );
    assert!(
        out.to_ascii_lowercase().contains("connection: keep-alive"),
        "{out}"
    );
    assert!(!closed, "a keep-alive HTTP/1.0 connection was closed");
}

#[test]
fn pipelined_requests_are_answered_in_order_across_the_handover_to_hyper() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    // Two plain requests, then one with a body (served by hyper), then a plain one again.
    let (out, closed) = exchange(
        &lb,
        b"GET /echo?n=1 HTTP/1.1\r\nHost: lab\r\n\r\n\
          HEAD /echo?n=2 HTTP/1.1\r\nHost: lab\r\n\r\n\
          POST /count HTTP/1.1\r\nHost: lab\r\nContent-Length: 5\r\n\r\nhello\
          GET /echo?n=4 HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(closed, "Connection: close was not honoured:\n{out}");
    assert_eq!(statuses(&out), ["200", "200", "200", "200"], "{out}");
    let n1 = out.find("n=1").unwrap();
    let counted = out.find("\r\n\r\n5").expect("the POST's body was counted");
    let n4 = out.find("n=4").unwrap();
    assert!(n1 < counted && counted < n4, "answers out of order:\n{out}");
    // The HEAD answer carried no body: exactly one JSON body between the first two heads'.
    assert_eq!(out.matches("\"method\":\"HEAD\"").count(), 0, "{out}");
}

#[test]
fn an_ambiguous_request_behind_a_bare_lf_trailer_line_is_still_refused() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    // hyper reads a bare LF as part of a trailer line, so the request after it is trailer
    // text and the ambiguous one inside its "body" is the connection's second request.
    let ambiguous = "POST /count HTTP/1.1\r\nHost: lab\r\nContent-Length: 5\r\n\
                     Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let request = format!(
        "POST /count HTTP/1.1\r\nHost: lab\r\nTransfer-Encoding: chunked\r\n\r\n\
         0\r\nX-T: 1\n\r\n\
         POST /count HTTP/1.1\r\nHost: lab\r\nContent-Length: {}\r\n\r\n{ambiguous}",
        ambiguous.len()
    );
    let (out, _) = exchange(&lb, request.as_bytes(), Duration::from_secs(5));
    assert_eq!(statuses(&out), ["200", "400"], "{out}");
}

#[test]
fn a_head_dribbled_slower_than_the_idle_timeout_is_cut_off() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()])
        .top("[timeouts]\nclient_idle = \"300ms\"")
        .start();
    let mut s = TcpStream::connect(proxy_addr(&lb)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let started = Instant::now();
    let mut closed = false;
    // One byte every 100 ms: each read comes well within the idle timeout, the head never.
    for byte in b"GET /echo HTTP/1.1\r\nHost: lab\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*byte]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        if let Ok(0) = s.read(&mut buf) {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(closed, "a dribbled head kept the connection open");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn heads_that_are_not_http_get_400_and_close() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    assert_each_is_400_and_closed(
        &lb,
        &[
            b"GET /echo HTTP/1.1\r\nHost: lab\r\nbad header\r\n\r\n",
            b"GET /echo HTTP/1.1\r\nHost: lab\r\n folded: x\r\n\r\n",
            b"GET /e cho HTTP/1.1\r\nHost: lab\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ],
    );
    assert_eq!(b.hits(), 0, "a malformed head reached the member");
}

#[test]
fn close_wins_over_keep_alive_whatever_the_order() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    let (out, closed) = exchange(
        &lb,
        b"GET /echo HTTP/1.0\r\nHost: lab\r\nConnection: close\r\nConnection: keep-alive\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(closed, "Connection: close was overridden by keep-alive");
}

#[test]
fn a_missing_or_doubled_host_is_400() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    assert_each_is_400_and_closed(
        &lb,
        &[
            b"GET /echo HTTP/1.1\r\n\r\n",
            b"GET /echo HTTP/1.1\r\nHost: lab\r\nHost: evil\r\n\r\n",
            b"GET /echo HTTP/1.1\r\nHost: a b\r\n\r\n",
        ],
    );
    assert_eq!(b.hits(), 0);
}

#[test]
fn a_client_that_hangs_up_releases_its_member_at_once() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    let mut s = TcpStream::connect(proxy_addr(&lb)).unwrap();
    s.write_all(b"GET /slow?ms=20000 HTTP/1.1\r\nHost: lab\r\n\r\n")
        .unwrap();
    let m = lb.member(b.addr).unwrap();
    assert!(common::wait_until(Duration::from_secs(5), || m.in_flight() == 1));
    drop(s);
    // The member would answer in 20 s; the request is dropped when the client leaves.
    assert!(
        common::wait_until(Duration::from_secs(5), || m.in_flight() == 0),
        "the request outlived its client"
    );
}
