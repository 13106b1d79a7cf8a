//! Sticky sessions by cookie: member <-> opaque id (a keyed hash of the address, never the
//! address itself), cookie parsing, and the `Set-Cookie` value.

use std::hash::Hasher;
use std::net::SocketAddr;
use std::time::Duration;

use http::HeaderMap;
use http::header::COOKIE;
use siphasher::sip::SipHasher13;

use crate::pool::MemberId;

/// The opaque id of the member at `addr` under `key`; the same on every balancer sharing the
/// sticky secret.
pub fn member_id(key: &[u8; 16], addr: SocketAddr) -> MemberId {
    let mut h = SipHasher13::new_with_key(key);
    match addr.ip() {
        std::net::IpAddr::V4(ip) => h.write(&ip.octets()),
        std::net::IpAddr::V6(ip) => h.write(&ip.octets()),
    }
    h.write_u16(addr.port());
    MemberId(h.finish())
}

/// The raw value of cookie `name` in the request, if present.
pub(crate) fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// Parses a cookie value written by [`set_cookie`]; `None` for anything else.
pub(crate) fn parse_id(value: &str) -> Option<MemberId> {
    if value.len() != 16 {
        return None;
    }
    u64::from_str_radix(value, 16).ok().map(MemberId)
}

/// The `Set-Cookie` header value pinning a client to `id`.
pub(crate) fn set_cookie(name: &str, id: MemberId, max_age: Option<Duration>) -> String {
    let mut v = format!("{name}={id}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        v.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn id_is_opaque_stable_and_keyed() {
        let a: SocketAddr = "10.0.0.1:8080".parse().unwrap();
        let k1 = [1u8; 16];
        let k2 = [2u8; 16];
        assert_eq!(member_id(&k1, a), member_id(&k1, a));
        assert_ne!(member_id(&k1, a), member_id(&k2, a));
        let text = member_id(&k1, a).to_string();
        assert_eq!(text.len(), 16);
        assert!(!text.contains("10.0.0.1") && !text.contains("8080"));
        assert_eq!(parse_id(&text), Some(member_id(&k1, a)));
    }

    #[test]
    fn finds_cookie_among_others_and_rejects_garbage() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; lb_static=00000000000000ff"),
        );
        h.append(COOKIE, HeaderValue::from_static("theme=dark"));
        assert_eq!(find_cookie(&h, "lb_static"), Some("00000000000000ff"));
        assert_eq!(find_cookie(&h, "theme"), Some("dark"));
        assert_eq!(find_cookie(&h, "missing"), None);
        assert_eq!(parse_id("zz"), None);
        assert_eq!(parse_id("not-hex-not-hex!"), None);
    }

    #[test]
    fn cookie_attributes() {
        let c = set_cookie("lb", MemberId(255), Some(Duration::from_secs(60)));
        assert_eq!(
            c,
            "lb=00000000000000ff; Path=/; HttpOnly; SameSite=Lax; Max-Age=60"
        );
    }
}
