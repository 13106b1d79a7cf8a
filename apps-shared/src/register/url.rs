//! The two config values registration needs that have no std type: the balancer's member
//! collection URL and the admin bearer token. Both parse strictly at config load.

use std::fmt;
use std::str::FromStr;

/// A plain-HTTP URL `http://host[:port]/path` naming a balancer pool's member collection,
/// such as `http://balancer:1936/api/pools/dynamic/members`.
#[derive(Clone, PartialEq, Eq)]
pub struct RegisterUrl {
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port; 80 when the URL names none.
    pub port: u16,
    /// Path without a trailing `/`; the member `ip:port` is appended after a `/`.
    pub path: String,
}

/// Why a register URL or token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// `https://`: the apps carry no TLS client, to stay small.
    #[error(
        "invalid value {0:?}: https:// is not supported (the apps have no TLS client); \
         expected a plain http://host[:port]/path URL in BALANCER_REGISTER_URL"
    )]
    Https(String),
    /// Anything else that is not `http://host[:port]/path`.
    #[error("invalid value {value:?}: {why}; expected http://host[:port]/path")]
    Malformed {
        /// The value as given.
        value: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The token cannot travel in an `Authorization` header.
    #[error("expected an admin token of 1 to 1024 visible ASCII characters without spaces")]
    Token,
}

impl RegisterUrl {
    /// `host[:port]` as sent in the `Host` header.
    pub fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == 80 {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl FromStr for RegisterUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let value = s.trim();
        let malformed = |why| UrlError::Malformed {
            value: value.to_owned(),
            why,
        };
        let (scheme, rest) = value.split_once("://").ok_or(malformed("no scheme"))?;
        if scheme.eq_ignore_ascii_case("https") {
            return Err(UrlError::Https(value.to_owned()));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(malformed("the scheme must be http"));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(malformed("spaces and non-ASCII characters are not allowed"));
        }
        if value.contains(['?', '#']) {
            return Err(malformed("a query or fragment is not allowed"));
        }
        let slash = rest.find('/').ok_or(malformed("the path is missing"))?;
        let (authority, path) = rest.split_at(slash);
        if authority.contains('@') {
            return Err(malformed("user info is not allowed"));
        }
        let (host, port) = split_host_port(authority).ok_or(malformed("bad host or port"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
            path: path.trim_end_matches('/').to_owned(),
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`; the host must be a plausible name or an IP.
fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        v6.parse::<std::net::Ipv6Addr>().ok()?;
        (v6, after.strip_prefix(':'))
    } else {
        let (host, port) = match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        let name_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        name_ok.then_some((host, port))?
    };
    let port = match port {
        None => 80,
        Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok().filter(|&p| p != 0)?
        }
        Some(_) => return None,
    };
    Some((host, port))
}

impl fmt::Display for RegisterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority(), self.path)
    }
}

impl fmt::Debug for RegisterUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl<'de> serde::Deserialize<'de> for RegisterUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The admin bearer token. Its `Debug` is redacted so a logged config never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The token itself, for the `Authorization` header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Token {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, UrlError> {
        let s = s.trim();
        let ok = !s.is_empty() && s.len() <= 1024 && s.bytes().all(|b| b.is_ascii_graphic());
        ok.then(|| Self(s.to_owned())).ok_or(UrlError::Token)
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl<'de> serde::Deserialize<'de> for Token {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// `parse_env` for `BALANCER_REGISTER_URL`.
pub fn parse_url(s: &str) -> Result<RegisterUrl, UrlError> {
    s.parse()
}

/// `parse_env` for `BALANCER_ADMIN_TOKEN`.
pub fn parse_token(s: &str) -> Result<Token, UrlError> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Result<RegisterUrl, UrlError> {
        s.parse()
    }

    #[test]
    fn a_full_url_splits_into_host_port_and_path() {
        let u = url("http://balancer:1936/api/pools/dynamic/members/").unwrap();
        assert_eq!(u.host, "balancer");
        assert_eq!(u.port, 1936);
        assert_eq!(u.path, "/api/pools/dynamic/members");
        assert_eq!(u.authority(), "balancer:1936");
        assert_eq!(
            u.to_string(),
            "http://balancer:1936/api/pools/dynamic/members"
        );
    }

    #[test]
    fn the_port_defaults_to_80_and_ipv6_keeps_brackets_in_host_header() {
        let u = url("http://10.0.0.2/m").unwrap();
        assert_eq!((u.port, u.authority().as_str()), (80, "10.0.0.2"));
        let u = url("http://[::1]:1936/m").unwrap();
        assert_eq!(
            (u.host.as_str(), u.authority().as_str()),
            ("::1", "[::1]:1936")
        );
    }

    #[test]
    fn https_is_refused_naming_the_variable() {
        let err = url("https://balancer:1936/api").unwrap_err().to_string();
        assert!(err.contains("BALANCER_REGISTER_URL"), "{err}");
        assert!(err.contains("https"), "{err}");
    }

    #[test]
    fn anything_but_http_host_port_path_is_refused() {
        for bad in [
            "balancer:1936/api",
            "ftp://balancer/api",
            "http://balancer:1936",
            "http:///api",
            "http://balancer:/api",
            "http://balancer:0/api",
            "http://balancer:99999/api",
            "http://user@balancer/api",
            "http://balancer/api?x=1",
            "http://bal ancer/api",
            "http://[nope]/api",
        ] {
            assert!(url(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn tokens_must_fit_a_header_and_never_show_in_debug() {
        assert!("".parse::<Token>().is_err());
        assert!("two words".parse::<Token>().is_err());
        let t: Token = "s3cret".parse().unwrap();
        assert_eq!(t.expose(), "s3cret");
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
