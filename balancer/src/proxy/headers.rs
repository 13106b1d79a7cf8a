//! Header rules: hop-by-hop removal in both directions, `X-Forwarded-*` and `Forwarded`,
//! request ids.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{BufMut, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::http1::{self, Digits, field};

/// `X-Request-Id`.
pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Upstream`.
pub(crate) static X_UPSTREAM: HeaderName = HeaderName::from_static("x-upstream");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1). `Trailer` is
/// end-to-end: it stays, and hyper sends on only the trailer fields it declares.
fn fixed_hop_by_hop() -> [&'static HeaderName; 7] {
    [
        &header::CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::TE,
        &header::TRANSFER_ENCODING,
        &header::UPGRADE,
        &header::PROXY_AUTHORIZATION,
    ]
}

/// Removes hop-by-hop headers and every header named in `Connection`. Returns whether the
/// message asked for a protocol upgrade (`Connection: upgrade` + `Upgrade`), and in that case
/// keeps `Upgrade` and sets `Connection: upgrade` so the upgrade can pass through.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) -> bool {
    // One pass over the names present (no hashing), then removals of only those found: most
    // messages carry one or none of these (a member's `Connection: keep-alive`).
    let hop = fixed_hop_by_hop();
    let mut present = 0u16;
    for k in headers.keys() {
        if let Some(i) = hop.iter().position(|h| *h == k) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return false;
    }
    let mut upgrade = false;
    // `hop[0]` is `Connection`.
    if present & 1 != 0 {
        let mut named: Vec<HeaderName> = Vec::new();
        for v in headers.get_all(header::CONNECTION) {
            for t in http1::tokens(v.as_bytes()) {
                if t.eq_ignore_ascii_case(b"upgrade") {
                    upgrade = true;
                } else if !t.is_empty()
                    && !t.eq_ignore_ascii_case(b"keep-alive")
                    && !t.eq_ignore_ascii_case(b"close")
                    && let Ok(n) = HeaderName::from_bytes(t)
                {
                    // Removed after the loop: the map is borrowed while its values are read.
                    named.push(n);
                }
            }
        }
        for n in named {
            headers.remove(n);
        }
    }
    let upgrade_to = if upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    };
    for (i, h) in hop.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(*h);
        }
    }
    match upgrade_to {
        Some(proto) => {
            headers.insert(header::UPGRADE, proto);
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            true
        }
        None => false,
    }
}

/// Adds `X-Forwarded-For` (appended), `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`.
/// One buffer serves both computed values, so this costs one allocation.
pub(crate) fn add_forwarded(headers: &mut HeaderMap, client: IpAddr) {
    let host = headers.get(header::HOST).cloned();
    let mut buf = BytesMut::with_capacity(160);
    let mut prior = false;
    for v in headers.get_all(&X_FORWARDED_FOR) {
        if prior {
            buf.put_slice(b", ");
        }
        buf.put_slice(v.as_bytes());
        prior = true;
    }
    if prior {
        buf.put_slice(b", ");
    }
    write_ip(&mut buf, client, false);
    let xff = buf.split().freeze();
    forwarded_value(&mut buf, client, host.as_ref());
    let fwd = buf.split().freeze();
    if let Ok(v) = HeaderValue::from_maybe_shared(xff) {
        headers.insert(&X_FORWARDED_FOR, v);
    }
    if let Ok(v) = HeaderValue::from_maybe_shared(fwd) {
        headers.append(header::FORWARDED, v);
    }
    headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    if let Some(h) = host {
        headers.insert(&X_FORWARDED_HOST, h);
    }
}

/// What the proxy adds to a request it forwards: the client's address and the request id.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Forwarding<'a> {
    /// The client's address.
    pub(crate) client: IpAddr,
    /// The request's id.
    pub(crate) request_id: &'a HeaderValue,
}

/// Writes `headers` as HTTP/1.1 field lines with the same rules as [`add_forwarded`] plus the
/// request id, without building them into the map first: the connections the proxy drives
/// itself write their heads with this.
pub(crate) fn write_fields(dst: &mut Vec<u8>, headers: &HeaderMap, fwd: &Forwarding<'_>) {
    let mut prior_xff = false;
    for (name, value) in headers {
        if name == X_FORWARDED_FOR {
            prior_xff = true;
        } else if name != X_FORWARDED_PROTO && name != X_FORWARDED_HOST && name != X_REQUEST_ID {
            field(dst, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    dst.put_slice(b"x-forwarded-for: ");
    if prior_xff {
        for v in headers.get_all(&X_FORWARDED_FOR) {
            dst.put_slice(v.as_bytes());
            dst.put_slice(b", ");
        }
    }
    write_ip(dst, fwd.client, false);
    dst.put_slice(b"\r\nforwarded: ");
    let host = headers.get(header::HOST);
    forwarded_value(dst, fwd.client, host);
    dst.put_slice(b"\r\n");
    field(dst, b"x-forwarded-proto", b"http");
    if let Some(h) = host {
        field(dst, b"x-forwarded-host", h.as_bytes());
    }
    field(dst, b"x-request-id", fwd.request_id.as_bytes());
}

/// `for=<client>;proto=http[;host="<host>"]` (RFC 7239).
fn forwarded_value(buf: &mut impl BufMut, client: IpAddr, host: Option<&HeaderValue>) {
    buf.put_slice(b"for=");
    write_ip(buf, client, true);
    buf.put_slice(b";proto=http");
    if let Some(h) = host.filter(|h| is_token_safe(h.as_bytes())) {
        buf.put_slice(b";host=\"");
        buf.put_slice(h.as_bytes());
        buf.put_slice(b"\"");
    }
}

fn is_token_safe(b: &[u8]) -> bool {
    b.iter()
        .all(|c| c.is_ascii_graphic() && *c != b'"' && *c != b'\\')
}

fn write_ip(buf: &mut impl BufMut, ip: IpAddr, forwarded_syntax: bool) {
    use std::fmt::Write;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        // Every request writes the client address twice; `fmt` costs ten times this.
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf.put_u8(b'.');
                }
                // Byte by byte: a `put_slice` of one to three bytes is a `memcpy` call.
                for d in Digits::decimal(u64::from(octet)).as_bytes() {
                    buf.put_u8(*d);
                }
            }
        }
        // RFC 7239: IPv6 in Forwarded is quoted and bracketed.
        IpAddr::V6(v6) if forwarded_syntax => {
            let _ = write!(BufWriter(buf), "\"[{v6}]\"");
        }
        IpAddr::V6(v6) => {
            let _ = write!(BufWriter(buf), "{v6}");
        }
    }
}

struct BufWriter<'a, B>(&'a mut B);

impl<B: BufMut> std::fmt::Write for BufWriter<'_, B> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.put_slice(s.as_bytes());
        Ok(())
    }
}

/// Whether the request's `Host` is acceptable (RFC 9112 3.2): exactly one on HTTP/1.1, at
/// most one on HTTP/1.0, and a plausible authority. Routing reads the first `Host` while a
/// member might read another, so two are refused, as nginx does.
pub(crate) fn host_is_valid(headers: &HeaderMap, version: http::Version) -> bool {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => false,
        (None, _) => version == http::Version::HTTP_10,
        (Some(h), None) => {
            let b = h.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| {
                    c.is_ascii_graphic() && !matches!(c, b'/' | b'\\' | b'?' | b'#' | b'@')
                })
        }
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The request's id: the client's `X-Request-Id` if it is sane, else a new unique one.
/// Returns whether it was generated.
pub(crate) fn request_id(headers: &HeaderMap, seed: u64) -> (HeaderValue, bool) {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return (v.clone(), false);
        }
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut buf = [0u8; 32];
    http1::hex_fixed(&mut buf[..16], seed);
    http1::hex_fixed(&mut buf[16..], n);
    // Only hex digits: always a valid header value.
    let v = HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0"));
    (v, true)
}

#[cfg(test)]
mod tests {
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
}
