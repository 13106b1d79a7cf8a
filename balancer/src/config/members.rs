//! Member lists as people write them: `host:port` entries separated by any whitespace, each
//! optionally followed by `*WEIGHT` (`static-site:8080 10.0.0.7:8080*3`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Largest weight accepted; keeps smooth-WRR arithmetic far from overflow.
pub(crate) const MAX_WEIGHT: u32 = 1000;

/// Why a member entry was refused; the message quotes the entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// The text after `*` is not a number.
    #[error("`{entry}`: weight `{weight}` is not a whole number")]
    WeightNotANumber {
        /// The whole entry.
        entry: String,
        /// The text after `*`.
        weight: String,
    },
    /// The weight is above [`MAX_WEIGHT`].
    #[error("`{entry}`: weight {weight} is above the maximum {MAX_WEIGHT}")]
    WeightTooHigh {
        /// The whole entry.
        entry: String,
        /// The weight.
        weight: u32,
    },
    /// No `:port`.
    #[error("`{0}`: expected host:port (e.g. student-api:3000)")]
    NoPort(String),
    /// The port is not a number from 1 to 65535.
    #[error("`{entry}`: port `{port}` is not a number from 1 to 65535")]
    BadPort {
        /// The whole entry.
        entry: String,
        /// The text after the last `:`.
        port: String,
    },
    /// Port 0.
    #[error("`{0}`: port 0 is not a valid port")]
    PortZero(String),
    /// Neither an IP address nor a DNS name.
    #[error("`{entry}`: `{host}` is not an IP address or DNS name")]
    BadHost {
        /// The whole entry.
        entry: String,
        /// The host part.
        host: String,
    },
}

/// One configured member: a host (IP or DNS name), a port and a weight.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MemberSpec {
    /// IP literal or DNS name.
    pub(crate) host: String,
    /// TCP port.
    pub(crate) port: u16,
    /// Relative weight (0..=1000); 0 takes the member out of selection.
    pub(crate) weight: u32,
}

impl MemberSpec {
    /// The address when `host` is an IP literal; DNS names need discovery.
    pub(crate) fn ip_addr(&self) -> Option<SocketAddr> {
        self.host
            .parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }

    /// `host:port` without the weight.
    pub(crate) fn authority(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

impl fmt::Display for MemberSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.authority())?;
        if self.weight != 1 {
            write!(f, "*{}", self.weight)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for MemberSpec {
    type Err = MemberError;

    fn from_str(s: &str) -> Result<Self, MemberError> {
        let (addr, weight) = match s.split_once('*') {
            Some((a, w)) => {
                let weight: u32 = w.parse().map_err(|_| MemberError::WeightNotANumber {
                    entry: s.to_owned(),
                    weight: w.to_owned(),
                })?;
                if weight > MAX_WEIGHT {
                    return Err(MemberError::WeightTooHigh {
                        entry: s.to_owned(),
                        weight,
                    });
                }
                (a, weight)
            }
            None => (s, 1),
        };
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| MemberError::NoPort(s.to_owned()))?;
        let port: u16 = port.parse().map_err(|_| MemberError::BadPort {
            entry: s.to_owned(),
            port: port.to_owned(),
        })?;
        if port == 0 {
            return Err(MemberError::PortZero(s.to_owned()));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let valid_host = !bare.is_empty()
            && (bare.parse::<IpAddr>().is_ok()
                || bare
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_'));
        if !valid_host {
            return Err(MemberError::BadHost {
                entry: s.to_owned(),
                host: host.to_owned(),
            });
        }
        Ok(MemberSpec {
            host: bare.to_owned(),
            port,
            weight,
        })
    }
}

/// A whitespace-separated member list, from a string or a TOML array of strings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberList(pub Vec<MemberSpec>);

impl MemberList {
    /// Parses `a:1 b:2*3` with any whitespace between entries.
    pub(crate) fn parse(s: &str) -> Result<Self, MemberError> {
        s.split_whitespace()
            .map(str::parse)
            .collect::<Result<Vec<_>, _>>()
            .map(MemberList)
    }
}

impl fmt::Display for MemberList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{m}")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for MemberList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // A visitor rather than an untagged enum, whose error would name the enum.
        struct Members;
        impl<'de> serde::de::Visitor<'de> for Members {
            type Value = MemberList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"host:port host:port*weight\" or an array of such strings")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<MemberList, E> {
                MemberList::parse(s).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<MemberList, A::Error> {
                let mut text = String::new();
                while let Some(entry) = seq.next_element::<String>()? {
                    text.push_str(&entry);
                    text.push(' ');
                }
                self.visit_str(&text)
            }
        }
        d.deserialize_any(Members)
    }
}

impl Serialize for MemberList {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(ToString::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_whitespace_and_weights() {
        let l = MemberList::parse("  a:1\t\tb.example:2*3 \n 10.0.0.1:80 ").unwrap();
        assert_eq!(l.0.len(), 3);
        assert_eq!(l.0[1].weight, 3);
        assert_eq!(l.0[2].ip_addr(), Some("10.0.0.1:80".parse().unwrap()));
        assert_eq!(l.0[0].ip_addr(), None);
    }

    #[test]
    fn ipv6_literal() {
        let l = MemberList::parse("[::1]:8080*2").unwrap();
        assert_eq!(l.0[0].ip_addr(), Some("[::1]:8080".parse().unwrap()));
        assert_eq!(l.0[0].to_string(), "[::1]:8080*2");
    }

    #[test]
    fn bad_entries_say_what_is_wrong() {
        let err = |s: &str| MemberList::parse(s).unwrap_err().to_string();
        assert!(err("nohost").contains("host:port"));
        assert!(err("a:http").contains("port"));
        assert!(err("a:1*x").contains("weight"));
        assert!(err("a:1*5000").contains("maximum"));
        assert!(MemberList::parse("a b:1").is_err());
        assert!(MemberList::parse("bad!host:1").is_err());
    }
}
