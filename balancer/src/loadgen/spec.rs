//! What a load run is asked to do (`POST /api/load`'s body) and its check against the
//! configured bounds ([`LoadLimits`]). Pure: no I/O.

use http::HeaderValue;
use http::uri::PathAndQuery;
use serde::{Deserialize, Serialize};

use crate::config::load::LoadLimits;

/// Connections of a run when the body does not say.
pub(crate) const DEFAULT_CONCURRENCY: u32 = 8;
/// Length of a run when the body does not say, seconds.
pub(crate) const DEFAULT_SECONDS: u32 = 10;

/// The body of `POST /api/load`, as sent.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StartRequest {
    /// Path (and query) to GET, e.g. `/api/student`.
    pub path: String,
    /// Connections, each with one request at a time (default 8, or the bound if lower).
    pub concurrency: Option<u32>,
    /// Requests per second over all connections; `null` = as fast as they allow.
    pub rate: Option<u32>,
    /// How long the run lasts, seconds (default 10, or the bound if lower).
    pub seconds: Option<u32>,
    /// `Host` header to send (for host routes); default the listener's address.
    pub host: Option<String>,
}

/// A checked run description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Spec {
    /// Request target.
    #[serde(serialize_with = "as_str")]
    pub path: PathAndQuery,
    /// Connections.
    pub concurrency: u32,
    /// Paced rate; `None` = open throttle.
    pub rate: Option<u32>,
    /// Duration, seconds.
    pub seconds: u32,
    /// `Host` header, if not the listener's address.
    #[serde(serialize_with = "opt_header")]
    pub host: Option<HeaderValue>,
}

fn as_str<S: serde::Serializer>(p: &PathAndQuery, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(p.as_str())
}

fn opt_header<S: serde::Serializer>(h: &Option<HeaderValue>, s: S) -> Result<S::Ok, S::Error> {
    match h.as_ref().and_then(|h| h.to_str().ok()) {
        Some(v) => s.serialize_some(v),
        None => s.serialize_none(),
    }
}

/// Why a run was refused; the message is the 400's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SpecError {
    /// `path` is not an origin-form target.
    #[error("`path` must be a request path starting with `/` (like \"/api/student\"), got {0:?}")]
    Path(String),
    /// `concurrency` out of bounds.
    #[error("`concurrency` must be 1 to {max} (load.max_concurrency), got {given}")]
    Concurrency {
        /// Asked for.
        given: u32,
        /// The bound.
        max: u32,
    },
    /// `rate` out of bounds.
    #[error(
        "`rate` must be 1 to {max} requests per second (load.max_rate), or null for as fast as the connections allow, got {given}"
    )]
    Rate {
        /// Asked for.
        given: u32,
        /// The bound.
        max: u32,
    },
    /// `seconds` out of bounds.
    #[error("`seconds` must be 1 to {max} (load.max_seconds), got {given}")]
    Seconds {
        /// Asked for.
        given: u32,
        /// The bound.
        max: u32,
    },
    /// `host` is not a header value.
    #[error("`host` must be a host name with an optional port, got {0:?}")]
    Host(String),
}

impl StartRequest {
    /// Checks the request against `limits`.
    pub(crate) fn check(&self, limits: &LoadLimits) -> Result<Spec, SpecError> {
        let path = Some(self.path.as_str())
            .filter(|p| p.starts_with('/'))
            .and_then(|p| p.parse::<PathAndQuery>().ok())
            .ok_or_else(|| SpecError::Path(self.path.clone()))?;
        // A default never exceeds a bound set lower than it.
        let concurrency = self
            .concurrency
            .unwrap_or(DEFAULT_CONCURRENCY.min(limits.max_concurrency));
        if !(1..=limits.max_concurrency).contains(&concurrency) {
            return Err(SpecError::Concurrency {
                given: concurrency,
                max: limits.max_concurrency,
            });
        }
        if let Some(r) = self.rate
            && !(1..=limits.max_rate).contains(&r)
        {
            return Err(SpecError::Rate {
                given: r,
                max: limits.max_rate,
            });
        }
        let seconds = self
            .seconds
            .unwrap_or(DEFAULT_SECONDS.min(limits.max_seconds));
        if !(1..=limits.max_seconds).contains(&seconds) {
            return Err(SpecError::Seconds {
                given: seconds,
                max: limits.max_seconds,
            });
        }
        let host = match &self.host {
            None => None,
            Some(h) => Some(
                Some(h.as_str())
                    .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
                    .and_then(|h| HeaderValue::from_str(h).ok())
                    .ok_or_else(|| SpecError::Host(h.clone()))?,
            ),
        };
        Ok(Spec {
            path,
            concurrency,
            rate: self.rate,
            seconds,
            host,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str) -> StartRequest {
        StartRequest {
            path: path.into(),
            concurrency: None,
            rate: None,
            seconds: None,
            host: None,
        }
    }

    #[test]
    fn defaults_fill_what_the_body_leaves_out() {
        let s = req("/api/student?x=1")
            .check(&LoadLimits::default())
            .unwrap();
        assert_eq!(s.path.as_str(), "/api/student?x=1");
        assert_eq!((s.concurrency, s.rate, s.seconds), (8, None, 10));
    }

    #[test]
    fn each_bound_is_refused_by_name() {
        let l = LoadLimits {
            max_concurrency: 4,
            max_rate: 100,
            max_seconds: 5,
        };
        let mut r = req("/");
        r.concurrency = Some(5);
        assert_eq!(
            r.check(&l),
            Err(SpecError::Concurrency { given: 5, max: 4 })
        );
        r.concurrency = Some(0);
        assert!(matches!(r.check(&l), Err(SpecError::Concurrency { .. })));
        r.concurrency = Some(4);
        r.rate = Some(101);
        assert_eq!(
            r.check(&l),
            Err(SpecError::Rate {
                given: 101,
                max: 100
            })
        );
        r.rate = Some(0);
        assert!(matches!(r.check(&l), Err(SpecError::Rate { .. })));
        r.rate = Some(100);
        r.seconds = Some(6);
        let e = r.check(&l).unwrap_err();
        assert!(e.to_string().contains("load.max_seconds"), "{e}");
        r.seconds = Some(5);
        assert!(r.check(&l).is_ok());
    }

    #[test]
    fn a_path_must_be_origin_form_and_a_host_a_header_value() {
        for bad in ["", "api", "http://x/", "/a b"] {
            assert!(
                matches!(
                    req(bad).check(&LoadLimits::default()),
                    Err(SpecError::Path(_))
                ),
                "{bad}"
            );
        }
        let mut r = req("/");
        r.host = Some("bad host".into());
        assert!(matches!(
            r.check(&LoadLimits::default()),
            Err(SpecError::Host(_))
        ));
        r.host = Some("lab.test:8888".into());
        assert!(r.check(&LoadLimits::default()).is_ok());
    }
}
