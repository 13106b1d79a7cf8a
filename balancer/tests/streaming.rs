//! Bodies stream through the balancer without being held in memory, and upgraded connections
//! are tunnelled both ways.
//!
//! The balancer, the backend and the client all live in this test process, so memory is
//! measured as the growth of the whole process's resident set while 100 MB pass through a
//! reader slower than the writer: any layer that buffered the body would show it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Backend, Conf, client, find, runtime};
use futures_util::StreamExt;

const TOTAL: u64 = 100_000_000;
/// Streaming grows the process by 1.5 to 3.5 MiB here; a layer that held even a sixth of
/// the body would show.
const ALLOWED_GROWTH_KIB: u64 = 16 * 1024;

/// The two 100 MB tests must not overlap, or each would see the other's memory.
static SERIAL: Mutex<()> = Mutex::new(());

static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Samples the resident set every 10 ms until dropped; `peak` is the highest seen.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(rss_kib()));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_kib(), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        RssWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// `n` bytes as a stream of 64 KiB frames that share one static buffer.
fn zero_stream(n: u64) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> {
    futures_util::stream::unfold(n, |left| async move {
        if left == 0 {
            return None;
        }
        let k = left.min(ZEROS.len() as u64) as usize;
        Some((Ok(Bytes::from_static(&ZEROS[..k])), left - k as u64))
    })
}

#[test]
fn hundred_megabyte_request_body_streams_to_a_slow_member_in_bounded_memory() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let b = Backend::start("sink");
    let lb = Conf::new(&[b.member()]).start();
    let rt = runtime();
    let before = rss_kib();
    let watch = RssWatch::start();
    let answer = rt.block_on(async {
        let resp = client()
            .post(lb.url("/count?pause_ms_per_mib=5"))
            .header("content-length", TOTAL.to_string())
            .body(reqwest::Body::wrap_stream(zero_stream(TOTAL)))
            .send()
            .await
            .expect("upload");
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    });
    let peak = watch.peak();
    assert_eq!(answer, TOTAL.to_string(), "bytes the member read");
    let growth = peak.saturating_sub(before);
    assert!(
        growth < ALLOWED_GROWTH_KIB,
        "resident set grew by {growth} KiB while streaming 100 MB up"
    );
}

#[test]
fn hundred_megabyte_response_body_streams_to_a_slow_client_in_bounded_memory() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let b = Backend::start("source");
    let lb = Conf::new(&[b.member()]).start();
    let rt = runtime();
    let before = rss_kib();
    let watch = RssWatch::start();
    let received = rt.block_on(async {
        let resp = client()
            .get(lb.url(&format!("/bytes?n={TOTAL}")))
            .send()
            .await
            .expect("download");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.content_length(), Some(TOTAL));
        let mut stream = resp.bytes_stream();
        let mut n = 0u64;
        let mut next_pause = 1u64 << 20;
        while let Some(chunk) = stream.next().await {
            n += chunk.expect("body chunk").len() as u64;
            if n >= next_pause {
                // A slow reader: the balancer must wait, not buffer.
                next_pause += 1 << 20;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        n
    });
    let peak = watch.peak();
    assert_eq!(received, TOTAL);
    let growth = peak.saturating_sub(before);
    assert!(
        growth < ALLOWED_GROWTH_KIB,
        "resident set grew by {growth} KiB while streaming 100 MB down"
    );
}

#[test]
fn upgraded_connection_echoes_bytes_both_ways() {
    let b = Backend::start("ws");
    let lb = Conf::new(&[b.member()]).start();
    let mut s = std::net::TcpStream::connect(lb.running.proxy_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /upgrade HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while find(&head, b"\r\n\r\n").is_none() {
        let n = s.read(&mut byte).expect("response head");
        assert_eq!(n, 1, "connection closed during the head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: echo"), "{head}");
    for round in 0..3 {
        let msg: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8 + round).collect();
        s.write_all(&msg).unwrap();
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).expect("echo");
        assert!(back == msg, "round {round}: echoed bytes differ");
    }
    // The tunnel counts as in flight on its member, and as an open client connection on its
    // worker, until it closes.
    let m = lb.member(b.addr).unwrap();
    assert_eq!(m.in_flight(), 1);
    assert_eq!(lb.running.shared.clients.open(), [1]);
    drop(s);
    assert!(
        common::wait_until(Duration::from_secs(5), || m.in_flight() == 0
            && lb.running.shared.clients.open() == [0]),
        "closing the client ends the tunnel"
    );
}
