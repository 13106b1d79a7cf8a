use super::*;

#[test]
fn hop_by_hop_and_connection_listed_are_removed() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, x-secret"),
    );
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert("x-kept", HeaderValue::from_static("1"));
    assert!(!strip_hop_by_hop(&mut h));
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("x-kept"));
}

#[test]
fn upgrade_is_kept_when_asked_for() {
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    assert!(strip_hop_by_hop(&mut h));
    assert_eq!(h[header::UPGRADE], "websocket");
    assert_eq!(h[header::CONNECTION], "upgrade");
}

#[test]
fn forwarded_headers_append() {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("lab:8888"));
    h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
    add_forwarded(&mut h, "10.0.0.9".parse().unwrap());
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "lab:8888");
    assert_eq!(h["forwarded"], "for=10.0.0.9;proto=http;host=\"lab:8888\"");
    let mut h6 = HeaderMap::new();
    add_forwarded(&mut h6, "::1".parse().unwrap());
    assert_eq!(h6["forwarded"], "for=\"[::1]\";proto=http");
    assert_eq!(h6["x-forwarded-for"], "::1");
    for ip in [
        "0.0.0.0",
        "9.10.99.100",
        "255.255.255.255",
        "::ffff:172.18.0.5",
    ] {
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, ip.parse().unwrap());
        let v4 = ip.trim_start_matches("::ffff:");
        assert_eq!(h["x-forwarded-for"], v4);
        assert_eq!(h["forwarded"], format!("for={v4};proto=http").as_str());
    }
}

/// The fields of a head written by [`write_fields`], sorted.
fn written(h: &HeaderMap, client: &str, rid: &HeaderValue) -> Vec<String> {
    let mut out = Vec::new();
    let fwd = Forwarding {
        client: client.parse().unwrap(),
        request_id: rid,
    };
    write_fields(&mut out, h, &fwd);
    let mut lines: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

#[test]
fn written_fields_follow_the_same_rules_as_the_map() {
    let rid = HeaderValue::from_static("rid-1");
    for client in ["10.0.0.9", "::1", "::ffff:172.18.0.5"] {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("lab:8888"));
        h.append("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.append("x-forwarded-for", HeaderValue::from_static("5.6.7.8"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("spoofed"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        h.insert(&X_REQUEST_ID, HeaderValue::from_static("old"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let direct = written(&h, client, &rid);
        add_forwarded(&mut h, client.parse().unwrap());
        h.insert(&X_REQUEST_ID, rid.clone());
        let mut mapped: Vec<String> = h
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect();
        mapped.sort();
        assert_eq!(direct, mapped, "client {client}");
    }
}

#[test]
fn only_the_hop_by_hop_headers_present_go() {
    let mut h = HeaderMap::new();
    h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.append(header::CONNECTION, HeaderValue::from_static("X-A , x-b"));
    h.insert("x-a", HeaderValue::from_static("1"));
    h.insert("x-b", HeaderValue::from_static("1"));
    h.insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    assert!(!strip_hop_by_hop(&mut h));
    assert_eq!(h.keys().collect::<Vec<_>>(), [header::CONTENT_TYPE]);
}

#[test]
fn host_must_be_single_and_plausible() {
    let v11 = http::Version::HTTP_11;
    let mut h = HeaderMap::new();
    assert!(!host_is_valid(&h, v11), "missing on HTTP/1.1");
    assert!(host_is_valid(&h, http::Version::HTTP_10));
    h.insert(header::HOST, HeaderValue::from_static("lab:8888"));
    assert!(host_is_valid(&h, v11));
    h.append(header::HOST, HeaderValue::from_static("other"));
    assert!(!host_is_valid(&h, v11), "two hosts");
    for bad in ["", "a b", "a/b", "user@host"] {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_str(bad).unwrap());
        assert!(!host_is_valid(&h, v11), "{bad:?}");
    }
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("[::1]:80"));
    assert!(host_is_valid(&h, v11));
}

#[test]
fn request_ids_are_kept_or_generated_unique() {
    let mut h = HeaderMap::new();
    let (a, gen_a) = request_id(&h, 7);
    let (b, _) = request_id(&h, 7);
    assert!(gen_a);
    assert_ne!(a, b);
    assert_eq!(a.len(), 32);
    h.insert(&X_REQUEST_ID, HeaderValue::from_static("abc-123"));
    assert_eq!(
        request_id(&h, 7),
        (HeaderValue::from_static("abc-123"), false)
    );
}
