//! Connections to members are pooled per worker: sequential requests reuse one keep-alive
//! connection, HEAD and empty bodies return it too, and an abandoned body does not poison it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use balancer::config::{Origin, Settings, from_toml_str};
use balancer::discovery::StaticResolver;
use balancer::{Listeners, Running};
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// A member that counts the TCP connections it accepted.
async fn counting_backend() -> (SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let conns = Arc::new(AtomicU64::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = l.accept().await.unwrap();
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = match req.uri().path() {
                        "/empty" => Bytes::new(),
                        "/big" => Bytes::from(vec![b'x'; 64 << 20]),
                        _ => Bytes::from_static(b"hello"),
                    };
                    Ok::<_, Infallible>(Response::new(Full::new(body)))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, conns)
}

async fn start(member: SocketAddr) -> Running {
    tokio::task::spawn_blocking(move || {
        let toml = format!(
            "workers = 1\n[pools.dynamic]\nmembers = [\"{member}\"]\n[pools.dynamic.health]\nenabled = false\n\
             [pools.static]\nmembers = [\"{member}\"]\n[pools.static.health]\nenabled = false\n"
        );
        let settings = Settings::build(&from_toml_str(&toml).unwrap(), &Origin::default()).unwrap();
        let proxy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let resolver = Arc::new(StaticResolver::default());
        balancer::start(settings, None, Listeners { proxy: vec![proxy], admin }, Some(resolver)).unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn sequential_requests_reuse_one_member_connection() {
    let (member, conns) = counting_backend().await;
    let lb = start(member).await;
    let c = reqwest::Client::new();
    for path in ["/a", "/empty", "/b", "/empty", "/c"] {
        for _ in 0..10 {
            let r = c
                .get(format!("http://{}{path}", lb.proxy_addr))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    }
    for _ in 0..10 {
        let r = c
            .head(format!("http://{}/a", lb.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "60 sequential exchanges over one connection"
    );
}

#[tokio::test]
async fn an_abandoned_body_closes_its_member_connection_and_the_next_request_works() {
    let (member, conns) = counting_backend().await;
    let lb = start(member).await;
    let c = reqwest::Client::new();
    // Read only the head of a 64 MiB body (more than socket buffers hold), then drop it: that member connection has bytes in
    // flight and must not serve another request.
    let r = c
        .get(format!("http://{}/big", lb.proxy_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(r);
    let c2 = reqwest::Client::new();
    for _ in 0..5 {
        let r = c2
            .get(format!("http://{}/a", lb.proxy_addr))
            .send()
            .await
            .unwrap();
        assert_eq!(r.text().await.unwrap(), "hello");
    }
    assert_eq!(
        conns.load(Ordering::SeqCst),
        2,
        "the abandoned connection was replaced once"
    );
}
