//! What clients get when things go wrong (statuses, bodies, nothing forwarded), and the header
//! rules on the way to a member and back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::time::Duration;

use common::{Backend, Conf, client, raw_exchange, raw_status, refused_addr, runtime};

/// Asserts an error body is short and names no internal address.
fn short_and_opaque(body: &str, hidden: &[String]) {
    assert!(body.len() < 120, "error bodies are short: {body:?}");
    assert!(!body.contains("127.0.0.1"), "no internal address: {body:?}");
    for h in hidden {
        assert!(!body.contains(h.as_str()), "no internal address: {body:?}");
    }
}

/// The admin's `/metrics` text.
async fn metrics(lb: &common::Lb) -> String {
    let url = format!("http://{}/metrics", lb.running.admin_addr);
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[test]
fn every_member_refusing_gives_502_after_trying_each() {
    let dead: Vec<String> = (0..3).map(|_| refused_addr().to_string()).collect();
    let lb = Conf::new(&dead).pool("retries = 2").start();
    runtime().block_on(async {
        let resp = client().get(lb.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 502);
        let body = resp.text().await.unwrap();
        short_and_opaque(&body, &dead);
    });
    for d in &dead {
        let m = lb.member(d.parse().unwrap()).unwrap();
        let failures = m.stats.failures();
        assert_eq!(
            failures, 1,
            "{d} was tried once (1 attempt + 2 retries over 3 members)"
        );
    }
}

#[test]
fn pool_with_no_members_gives_503_with_retry_after() {
    let lb = Conf::new(&["ghost.invalid:8080"]).start();
    runtime().block_on(async {
        let resp = client().get(lb.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(
            resp.headers().get("retry-after").map(|v| v.as_bytes()),
            Some(&b"1"[..]),
            "{:?}",
            resp.headers()
        );
        assert!(resp.headers().contains_key("x-request-id"));
        let body = resp.text().await.unwrap();
        short_and_opaque(&body, &["ghost.invalid".into()]);
        assert!(body.starts_with("503 Service Unavailable"), "{body:?}");
        let metrics = metrics(&lb).await;
        assert!(
            metrics.contains("balancer_local_responses_total{pool=\"dynamic\",code=\"503\"} 1"),
            "{metrics}"
        );
    });
}

#[test]
fn a_path_no_route_covers_gives_404_and_reaches_no_member() {
    let member = Backend::start("routed");
    let lb = Conf::new(&[member.member()])
        .default_routes()
        .top(r#"routes = [{ path = "/api/", pool = "dynamic" }]"#)
        .start();
    runtime().block_on(async {
        let resp = client().get(lb.url("/elsewhere")).send().await.unwrap();
        assert_eq!(resp.status(), 404);
        assert!(resp.headers().contains_key("x-request-id"));
        assert!(!resp.headers().contains_key("retry-after"));
        let body = resp.text().await.unwrap();
        assert_eq!(body, "404 Not Found: no route for this request\n");
        let resp = client().get(lb.url("/api/x")).send().await.unwrap();
        assert_eq!(resp.status(), 200, "the route that exists still works");
    });
    assert_eq!(
        member.hits(),
        1,
        "only the routed request reached the member"
    );
}

#[test]
fn member_slower_than_response_timeout_gives_504() {
    let slow = Backend::start("slow");
    let lb = Conf::new(&[slow.member()])
        .pool("response_timeout = \"300ms\"")
        .start();
    runtime().block_on(async {
        // The member would answer 200 after 5 s; a 504 can only come from the timeout.
        let resp = client().get(lb.url("/slow?ms=5000")).send().await.unwrap();
        assert_eq!(resp.status(), 504);
        short_and_opaque(&resp.text().await.unwrap(), &[slow.member()]);
    });
}

/// Sends a POST with a 30-byte body in three parts `gap` apart, then reads the answer.
fn slow_upload(lb: &common::Lb, gap: Duration, parts: usize) -> String {
    use std::io::{Read, Write};
    let addr = lb.running.proxy_addr;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /count HTTP/1.1\r\nHost: lab\r\nConnection: close\r\nContent-Length: 30\r\n\r\n",
    )
    .unwrap();
    for _ in 0..parts {
        std::thread::sleep(gap);
        s.write_all(&[b'x'; 10]).unwrap();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn a_slow_upload_is_not_a_member_timeout() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()])
        .pool("response_timeout = \"400ms\"")
        .top("[timeouts]\nclient_idle = \"2s\"")
        .start();
    // 900 ms of upload against a 400 ms response timeout: the member answers at once after.
    let resp = slow_upload(&lb, Duration::from_millis(300), 3);
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.ends_with("30"), "the member counted 30 bytes: {resp}");
    let m = lb.member(b.addr).unwrap();
    assert_eq!(m.stats.failures(), 0);
}

#[test]
fn a_stalled_upload_gives_408_and_does_not_charge_the_member() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()])
        .pool("response_timeout = \"10s\"")
        .top("[timeouts]\nclient_idle = \"300ms\"")
        .start();
    // One part of three, then silence.
    let resp = slow_upload(&lb, Duration::from_millis(50), 1);
    assert_eq!(raw_status(&resp), 408, "{resp}");
    short_and_opaque(resp.split("\r\n\r\n").nth(1).unwrap_or(""), &[b.member()]);
    let m = lb.member(b.addr).unwrap();
    assert_eq!(m.stats.failures(), 0, "the member is not at fault");
    assert!(m.is_available(balancer::pool::now_ms()));
}

#[test]
fn a_member_that_stops_reading_the_body_gives_504() {
    use std::io::{Read, Write};
    // Accepts connections and never reads from them: the upload fills the socket buffers.
    let deaf = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let deaf_addr = deaf.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in deaf.incoming().flatten() {
            held.push(s);
        }
    });
    let lb = Conf::new(&[deaf_addr.to_string()])
        .pool("response_timeout = \"500ms\"\nretries = 0\nmax_body = \"1GiB\"")
        .start();
    let mut s = std::net::TcpStream::connect(lb.running.proxy_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let len = 64 << 20;
    write!(
        s,
        "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n"
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 1 << 16];
        for _ in 0..(len >> 16) {
            if writer.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let mut head = [0u8; 64];
    let n = s.read(&mut head).unwrap();
    let head = String::from_utf8_lossy(&head[..n]);
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
}

#[test]
fn a_chunked_body_with_trailers_still_gets_a_response_timeout() {
    let slow = Backend::start("slow");
    let lb = Conf::new(&[slow.member()])
        .pool("response_timeout = \"300ms\"\nretries = 0")
        .start();
    let resp = raw_exchange(
        lb.running.proxy_addr,
        b"POST /slow?ms=5000 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\nX-Checksum: 1\r\n\r\n",
        Duration::from_secs(3),
    );
    assert_eq!(raw_status(&resp), 504, "{resp}");
}

#[test]
fn head_limits_off_hypers_8_kib_buffer_steps_are_exact() {
    for (limit, under, over) in [("2KiB", 1_500, 2_600), ("12KiB", 11_000, 14_000)] {
        let b = Backend::start("b");
        let lb = Conf::new(&[b.member()])
            .top(&format!("[limits]\nmax_header_bytes = \"{limit}\""))
            .start();
        runtime().block_on(async {
            let c = client();
            for (size, want) in [(under, 200), (over, 431)] {
                // A body sends the request down hyper's path, a bare GET down the plain one.
                for post in [false, true] {
                    let req = if post {
                        c.post(lb.url("/")).body("x")
                    } else {
                        c.get(lb.url("/"))
                    };
                    let resp = req.header("x-big", "a".repeat(size)).send().await.unwrap();
                    assert_eq!(
                        resp.status(),
                        want,
                        "{limit}: {size}-byte header, post {post}"
                    );
                }
            }
        });
        assert_eq!(
            b.hits(),
            2,
            "{limit}: only the requests under the limit arrived"
        );
    }
}

#[test]
fn a_uri_over_64_kib_is_414_from_hyper_and_counted() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()])
        .top("[limits]\nmax_header_bytes = \"1MiB\"")
        .start();
    // A body sends it down hyper's path, whose URI limit is 64 KiB (too long for reqwest).
    let head = format!(
        "POST /{} HTTP/1.1\r\nHost: lb\r\nContent-Length: 1\r\n\r\nx",
        "u".repeat(70_000)
    );
    let resp = raw_exchange(
        lb.running.proxy_addr,
        head.as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(raw_status(&resp), 414, "{}", &resp[..resp.len().min(200)]);
    runtime().block_on(async {
        let counted = "balancer_local_responses_total{pool=\"-\",code=\"414\"} 1";
        // Counted when hyper ends the connection, just after the answer.
        common::eventually(&format!("{counted} in the metrics"), async || {
            metrics(&lb).await.contains(counted)
        })
        .await;
    });
    assert_eq!(b.hits(), 0);
}

#[test]
fn request_head_over_the_limit_gives_431() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()])
        .top("[limits]\nmax_header_bytes = \"8KiB\"")
        .start();
    runtime().block_on(async {
        let c = client();
        let small = c
            .get(lb.url("/"))
            .header("x-big", "a".repeat(4_000))
            .send()
            .await
            .unwrap();
        assert_eq!(small.status(), 200, "a 4 KB header is within 8 KiB");
        for size in [10_000, 20_000] {
            let resp = c
                .get(lb.url("/"))
                .header("x-big", "a".repeat(size))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 431, "{size}-byte header");
        }
    });
    assert_eq!(b.hits(), 1, "only the small request reached the member");
}

#[test]
fn a_route_body_limit_overrides_its_pool_limit() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()])
        .pool("max_body = \"1KiB\"")
        .top("[[routes]]\npath = \"/count\"\npool = \"dynamic\"\nmax_body = \"8KiB\"")
        .start();
    runtime().block_on(async {
        let c = client();
        let big = c
            .post(lb.url("/count"))
            .body(vec![b'x'; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(big.status(), 200, "the route allows 8 KiB");
        let other = c
            .post(lb.url("/other"))
            .body(vec![b'x'; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 413, "elsewhere the pool's 1 KiB holds");
        let huge = c
            .post(lb.url("/count"))
            .body(vec![b'x'; 9000])
            .send()
            .await
            .unwrap();
        assert_eq!(huge.status(), 413);
    });
}

#[test]
fn body_over_max_body_with_content_length_gives_413_and_is_not_forwarded() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).pool("max_body = \"1KiB\"").start();
    runtime().block_on(async {
        let c = client();
        let ok = c
            .post(lb.url("/count"))
            .body(vec![b'x'; 1024])
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "exactly the limit passes");
        assert_eq!(ok.text().await.unwrap(), "1024");
        let resp = c
            .post(lb.url("/count"))
            .body(vec![b'x'; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413);
        short_and_opaque(&resp.text().await.unwrap(), &[b.member()]);
    });
    assert_eq!(
        b.hits(),
        1,
        "the oversized request never reached the member"
    );
}

#[test]

fn chunked_request_body_reaches_the_member() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    runtime().block_on(async {
        let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 512])));
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let resp = client()
            .post(lb.url("/count"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "4096", "bytes the member read");
    });
}

#[test]

fn chunked_body_over_max_body_gives_413() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).pool("max_body = \"1KiB\"").start();
    runtime().block_on(async {
        let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 512])));
        let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
        let resp = client()
            .post(lb.url("/count"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413);
    });
}

/// Sends a raw request and checks the balancer answers 400 without forwarding anything.
fn rejected_as_bad_request(request: &str) {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    let resp = raw_exchange(
        lb.running.proxy_addr,
        request.as_bytes(),
        Duration::from_secs(3),
    );
    assert_eq!(raw_status(&resp), 400, "response: {resp:?}");
    assert_eq!(
        b.hits(),
        0,
        "nothing reached the member; response: {resp:?}"
    );
}

#[test]
fn content_length_with_transfer_encoding_is_rejected() {
    rejected_as_bad_request(
        "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn transfer_encoding_with_content_length_is_rejected() {
    rejected_as_bad_request(
        "POST /count HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
}

#[test]
fn ambiguous_framing_with_bare_lf_line_ends_is_rejected() {
    rejected_as_bad_request(
        "POST /count HTTP/1.1\nHost: t\nContent-Length: 5\nContent-Length: 5\n\nhello",
    );
}

#[test]
fn a_refused_upgrade_leaves_the_framing_checks_on() {
    use std::io::{Read, Write};
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    let mut s = std::net::TcpStream::connect(lb.running.proxy_addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The member answers the upgrade request 200, not 101: the connection stays HTTP.
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n\
          POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    )
    .unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    let statuses: Vec<&str> = out
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &out[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{out}");
    assert_eq!(b.hits(), 1, "only the upgrade request reached the member");
}

#[test]
fn two_different_content_lengths_are_rejected() {
    rejected_as_bad_request(
        "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    );
}

#[test]
fn two_equal_content_lengths_are_rejected() {
    rejected_as_bad_request(
        "POST /count HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    );
}

#[test]
fn garbage_request_line_is_rejected() {
    rejected_as_bad_request("THIS IS NOT HTTP AT ALL\r\n\r\n");
}

/// The headers the echo backend saw, by lower-case name.
async fn echoed(req: reqwest::RequestBuilder) -> (reqwest::header::HeaderMap, serde_json::Value) {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    let json: serde_json::Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap();
    (headers, json["headers"].clone())
}

fn one(seen: &serde_json::Value, name: &str) -> Option<String> {
    let values = seen.get(name)?.as_array()?;
    assert_eq!(values.len(), 1, "{name} appears once: {values:?}");
    values[0].as_str().map(str::to_owned)
}

#[test]
fn forwarding_headers_are_added_and_host_is_preserved() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    runtime().block_on(async {
        let req = client()
            .get(lb.url("/echo"))
            .header("host", "lab.example:8888")
            .header("x-forwarded-for", "203.0.113.9");
        let (_, seen) = echoed(req).await;
        assert_eq!(
            one(&seen, "x-forwarded-for").as_deref(),
            Some("203.0.113.9, 127.0.0.1")
        );
        assert_eq!(one(&seen, "x-forwarded-proto").as_deref(), Some("http"));
        assert_eq!(
            one(&seen, "x-forwarded-host").as_deref(),
            Some("lab.example:8888")
        );
        assert_eq!(one(&seen, "host").as_deref(), Some("lab.example:8888"));
        let fwd = one(&seen, "forwarded").expect("Forwarded");
        assert!(
            fwd.contains("for=127.0.0.1") && fwd.contains("proto=http"),
            "{fwd}"
        );
        assert!(fwd.contains("host=\"lab.example:8888\""), "{fwd}");
    });
}

#[test]
fn request_id_is_generated_when_absent_and_kept_when_present() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    runtime().block_on(async {
        let (resp_h, seen) = echoed(client().get(lb.url("/echo"))).await;
        let generated = resp_h["x-request-id"].to_str().unwrap().to_owned();
        assert!(!generated.is_empty());
        assert_eq!(
            one(&seen, "x-request-id"),
            Some(generated.clone()),
            "same id at the member"
        );
        let (resp_h2, _) = echoed(client().get(lb.url("/echo"))).await;
        assert_ne!(
            resp_h2["x-request-id"],
            generated.as_str(),
            "ids are unique"
        );

        let req = client()
            .get(lb.url("/echo"))
            .header("x-request-id", "abc-123");
        let (resp_h, seen) = echoed(req).await;
        assert_eq!(resp_h["x-request-id"], "abc-123");
        assert_eq!(one(&seen, "x-request-id").as_deref(), Some("abc-123"));
    });
}

#[test]
fn declared_request_trailers_reach_the_member() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    let resp = raw_exchange(
        lb.running.proxy_addr,
        b"POST /trailers HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
          5\r\nhello\r\n0\r\nX-Checksum: 42\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&resp), 200, "{resp}");
    assert!(resp.ends_with("x-checksum=42\n"), "{resp}");
}

#[test]
fn hop_by_hop_request_headers_are_not_forwarded() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    let resp = raw_exchange(
        lb.running.proxy_addr,
        b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, x-private\r\nX-Private: secret\r\n\
Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic dXNlcjpwdw==\r\n\
Proxy-Connection: keep-alive\r\nX-Kept: yes\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let json = &resp[resp.find("\r\n\r\n").unwrap() + 4..];
    let seen: serde_json::Value = serde_json::from_str(json).unwrap();
    let seen = &seen["headers"];
    for h in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(seen.get(h).is_none(), "{h} reached the member: {seen}");
    }
    if let Some(c) = one(seen, "connection") {
        assert!(!c.contains("x-private"), "{c}");
    }
    assert_eq!(one(seen, "x-kept").as_deref(), Some("yes"));
}

#[test]
fn hop_by_hop_response_headers_are_removed() {
    let b = Backend::start("b");
    let lb = Conf::new(&[b.member()]).start();
    let resp = raw_exchange(
        lb.running.proxy_addr,
        b"GET /hop HTTP/1.1\r\nHost: t\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(raw_status(&resp), 200, "{resp}");
    let head = resp[..resp.find("\r\n\r\n").unwrap()].to_ascii_lowercase();
    assert!(!head.contains("x-hop-secret"), "{head}");
    assert!(!head.contains("keep-alive: timeout"), "{head}");
    assert!(head.contains("x-end-to-end: kept"), "{head}");
}
