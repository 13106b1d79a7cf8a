//! Responses framed every way HTTP/1.1 allows reach the client intact over the connections
//! the proxy drives itself (requests without a body): chunked with extensions and trailers,
//! read-to-close, interim 1xx, heads in pieces; malformed heads become 502; a keep-alive
//! connection the member closed while idle is retried as stale, not charged to the member.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Conf, client, runtime};

/// What the scripted member answers to a path; `close` ends the connection after it.
fn script(path: &str) -> (Vec<u8>, bool) {
    let (text, close): (String, bool) = match path {
        "/chunked" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n"
                .into(),
            false,
        ),
        "/to-close" => ("HTTP/1.1 200 OK\r\n\r\nuntil the end".into(), true),
        "/early" => (
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                .into(),
            false,
        ),
        "/garbage" => ("SSH-2.0-OpenSSH\r\n\r\n".into(), true),
        "/huge-head" => (
            format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
                "a".repeat(70_000)
            ),
            true,
        ),
        "/then-idle-close" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce".into(),
            false,
        ),
        "/then-stray" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".into(),
            false,
        ),
        "/empty-size-line" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n\r\n\r\n5\r\nworld\r\n0\r\n\r\n"
                .into(),
            false,
        ),
        "/die" => (String::new(), true),
        "/no-content" => (
            "HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n".into(),
            false,
        ),
        "/two-lengths" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello".into(),
            false,
        ),
        "/stall-body" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".into(),
            false,
        ),
        _ => (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain".into(),
            false,
        ),
    };
    (text.into_bytes(), close)
}

/// A member that answers from [`script`], writing each answer in small pieces; counts the
/// connections it accepted and the `/die` requests it saw. After `/then-idle-close` it closes
/// that connection 50 ms later, without having said so, as a member's keep-alive timer does;
/// 30 ms after `/then-stray` it sends a whole unasked response; `/die` closes unanswered.
/// Stray responses the scripted members have written (only one test asks for them), so that
/// test can wait until the bytes are on the proxy's socket instead of sleeping and hoping.
static STRAYS_SENT: AtomicU64 = AtomicU64::new(0);

fn scripted_member() -> (SocketAddr, Arc<AtomicU64>, Arc<AtomicU64>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicU64::new(0));
    let deaths = Arc::new(AtomicU64::new(0));
    let (c, d) = (Arc::clone(&conns), Arc::clone(&deaths));
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            let d = Arc::clone(&d);
            std::thread::spawn(move || serve(s, &d));
        }
    });
    (addr, conns, deaths)
}

fn serve(mut s: TcpStream, deaths: &AtomicU64) {
    let _ = s.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let Some(end) = common::find(&buf, b"\r\n\r\n") else {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        if path == "/die" {
            deaths.fetch_add(1, Ordering::SeqCst);
        }
        let (mut answer, close) = script(&path);
        if head.starts_with("HEAD ")
            && let Some(end) = common::find(&answer, b"\r\n\r\n")
        {
            answer.truncate(end + 4);
        }
        for piece in answer.chunks(7) {
            if s.write_all(piece).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        if close {
            return;
        }
        if path == "/then-idle-close" {
            std::thread::sleep(Duration::from_millis(50));
            return;
        }
        if path == "/stall-body" {
            // Holds the connection with the body unfinished.
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        if path == "/then-stray" {
            std::thread::sleep(Duration::from_millis(30));
            let stray = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nEVIL";
            if s.write_all(stray).is_err() {
                return;
            }
            STRAYS_SENT.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn every_response_framing_reaches_the_client_intact() {
    let (member, conns, _) = scripted_member();
    let lb = Conf::new(&[member.to_string()]).top("workers = 1").start();
    let rt = runtime();
    rt.block_on(async {
        let c = client();
        let r = c.get(lb.url("/chunked")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "hello world");

        let r = c.get(lb.url("/early")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");

        // Chunked and interim answers left the connection reusable.
        assert_eq!(
            conns.load(Ordering::SeqCst),
            1,
            "member connection not reused"
        );

        let r = c.get(lb.url("/to-close")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "until the end");

        let r = c.get(lb.url("/plain")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "plain");
        // A read-to-close body cannot share its connection: the next request opened another.
        assert_eq!(conns.load(Ordering::SeqCst), 2);

        let r = c.head(lb.url("/plain")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-length"], "5");
        let r = c.get(lb.url("/plain")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "plain");
        assert_eq!(
            conns.load(Ordering::SeqCst),
            2,
            "a HEAD answer broke the connection"
        );
    });
}

#[test]
fn malformed_or_oversized_heads_are_502_with_a_short_body() {
    let (member, _, _) = scripted_member();
    let lb = Conf::new(&[member.to_string()]).pool("retries = 0").start();
    let rt = runtime();
    rt.block_on(async {
        let c = client();
        for path in ["/garbage", "/huge-head"] {
            let r = c.get(lb.url(path)).send().await.unwrap();
            assert_eq!(r.status(), 502, "{path}");
            let body = r.text().await.unwrap();
            assert!(
                !body.contains("127.0.0.1"),
                "{path}: leaks the member: {body}"
            );
        }
        // The member still serves well-formed answers afterwards.
        let r = c.get(lb.url("/plain")).send().await.unwrap();
        assert_eq!(r.text().await.unwrap(), "plain");
    });
}

#[test]
fn a_connection_the_member_closed_while_idle_is_retried_and_not_charged() {
    let (member, conns, _) = scripted_member();
    let lb = Conf::new(&[member.to_string()])
        .top("workers = 1")
        .pool("retries = 0")
        .start();
    let rt = runtime();
    rt.block_on(async {
        let c = client();
        for round in 0..5 {
            let r = c.get(lb.url("/then-idle-close")).send().await.unwrap();
            assert_eq!(r.status(), 200, "round {round}");
            assert_eq!(r.text().await.unwrap(), "once");
            // The member closes that connection now; the proxy learns it only by using it.
            // Deliberate: longer than the member's 50 ms before it closes, and nothing could
            // be polled for it without using that very connection.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    let m = lb.member(member).expect("member in the pool");
    assert_eq!(
        m.stats.failures(),
        0,
        "a stale connection was charged to the member"
    );
    assert_eq!(conns.load(Ordering::SeqCst), 5);
}

#[test]
fn bytes_a_member_sends_after_a_response_never_answer_the_next_request() {
    let (member, _, _) = scripted_member();
    let lb = Conf::new(&[member.to_string()]).top("workers = 1").start();
    let rt = runtime();
    rt.block_on(async {
        let c = client();
        for round in 1..=3 {
            let r = c.get(lb.url("/then-stray")).send().await.unwrap();
            assert_eq!(r.text().await.unwrap(), "hello");
            // The stray bytes (sent 30 ms after the answer) are on the proxy's idle connection
            // before the next request, which must not take them for its answer: wait for the
            // member to have written them (loopback delivers a write at once) rather than
            // sleeping and hoping, which a loaded machine defeated.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while STRAYS_SENT.load(Ordering::SeqCst) < round {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the member never sent its stray response"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let r = c.get(lb.url("/plain")).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(r.text().await.unwrap(), "plain");
        }
    });
}

#[test]
fn an_empty_chunk_size_line_is_an_error_not_the_end_of_the_body() {
    let (member, _, _) = scripted_member();
    let lb = Conf::new(&[member.to_string()]).start();
    let rt = runtime();
    rt.block_on(async {
        let c = client();
        let r = c.get(lb.url("/empty-size-line")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // The body breaks off: the client must not see a complete "hello".
        assert!(
            r.text().await.is_err(),
            "a truncated body was delivered as complete"
        );
    });
}

#[test]
fn a_request_that_kills_the_member_is_not_resent_on_every_pooled_connection() {
    let (member, _, deaths) = scripted_member();
    let lb = Conf::new(&[member.to_string()])
        .top("workers = 1")
        .pool("retries = 0")
        .start();
    let rt = runtime();
    rt.block_on(async {
        // Warm the pool with several idle connections.
        let c = client();
        let warm: Vec<_> = (0..4).map(|_| c.get(lb.url("/plain")).send()).collect();
        for r in futures_util::future::join_all(warm).await {
            assert_eq!(r.unwrap().text().await.unwrap(), "plain");
        }
        let r = c.get(lb.url("/die")).send().await.unwrap();
        assert_eq!(r.status(), 502);
    });
    let seen = deaths.load(Ordering::SeqCst);
    assert!(seen <= 2, "the member saw the killing request {seen} times");
}

#[test]
fn a_member_that_stalls_mid_body_is_cut_off_after_the_response_timeout() {
    let (member, _, _) = scripted_member();
    let lb = Conf::new(&[member.to_string()])
        .pool("response_timeout = \"300ms\"")
        .start();
    let rt = runtime();
    rt.block_on(async {
        let r = client().get(lb.url("/stall-body")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        // The member holds the body for 30 s; the client must learn far sooner that it broke.
        let body = tokio::time::timeout(Duration::from_secs(10), r.bytes()).await;
        assert!(
            matches!(body, Ok(Err(_))),
            "the client was left waiting on a stalled body"
        );
    });
    let m = lb.member(member).expect("member in the pool");
    assert_eq!(m.stats.failures(), 1);
}

#[test]
fn framing_fields_reach_the_client_once_and_only_where_allowed() {
    let (member, _, _) = scripted_member();
    let lb = Conf::new(&[member.to_string()]).start();
    let addr = lb.running.proxy_addr;
    let get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: lab\r\nConnection: close\r\n\r\n");
        common::raw_exchange(addr, req.as_bytes(), Duration::from_secs(5)).to_ascii_lowercase()
    };
    let out = get("/no-content");
    assert!(out.starts_with("http/1.1 204"), "{out}");
    assert!(
        !out.contains("content-length"),
        "a 204 carried a length: {out}"
    );
    let out = get("/two-lengths");
    assert_eq!(out.matches("content-length").count(), 1, "{out}");
    assert!(out.ends_with("hello"), "{out}");
}
