//! Errors on the request path, classified by who is at fault, each mapped to one status and a
//! short body that never leaks internals.

use http::StatusCode;

/// Why a request was not (fully) proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProxyError {
    /// The client sent ambiguous framing (CL with TE, repeated CL) or an unusable request.
    #[error("bad request")]
    BadRequest,
    /// The client paused its request body longer than the idle timeout.
    #[error("request body stalled")]
    RequestTimeout,
    /// The request body is larger than the route allows.
    #[error("request body too large")]
    BodyTooLarge,
    /// No route matched the request.
    #[error("no route")]
    NoRoute,
    /// The pool has no member that may take the request.
    #[error("no usable backend")]
    NoBackend,
    /// Every attempt failed to connect or was reset before a response.
    #[error("upstream failed")]
    UpstreamFailed,
    /// The member did not answer within the timeout.
    #[error("upstream timed out")]
    UpstreamTimeout,
}

impl ProxyError {
    /// The status sent to the client.
    pub(crate) fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short plain-text body sent to the client.
    pub(crate) fn body(self) -> &'static str {
        match self {
            ProxyError::BadRequest => "400 Bad Request: ambiguous or malformed request\n",
            ProxyError::RequestTimeout => {
                "408 Request Timeout: the request body stopped arriving\n"
            }
            ProxyError::BodyTooLarge => {
                "413 Payload Too Large: the request body exceeds this route's limit\n"
            }
            ProxyError::NoRoute => "404 Not Found: no route for this request\n",
            ProxyError::NoBackend => {
                "503 Service Unavailable: no backend is available, try again shortly\n"
            }
            ProxyError::UpstreamFailed => "502 Bad Gateway: the backend failed to answer\n",
            ProxyError::UpstreamTimeout => {
                "504 Gateway Timeout: the backend did not answer in time\n"
            }
        }
    }
}

/// Whether hyper refused a request head because its URI is too long (it answers 414; a head
/// over the size limit gets 431).
///
/// hyper 1.x has no public predicate for this: its `Parse` kinds are private, and
/// `is_parse_too_large()` is true for both `Parse::TooLarge` (431) and `Parse::UriTooLong` (414),
/// on purpose (hyperium/hyper#2706 folded the new kind into it). What tells them apart is the
/// `Display` text, which is exactly the kind's fixed description ("URI too long", hyper
/// `src/error.rs`). So this compares the whole text, without allocating; the 414-versus-431
/// tests in `tests/requests.rs` catch a hyper upgrade that changes it.
pub(crate) fn is_uri_too_long(e: &hyper::Error) -> bool {
    e.is_parse_too_large() && displays_as(e, "URI too long")
}

/// Whether `value` formats to exactly `expected`.
fn displays_as(value: &dyn std::fmt::Display, expected: &str) -> bool {
    /// Consumes `rest` as the text arrives; fails at the first difference.
    struct Match<'a> {
        rest: &'a str,
    }
    impl std::fmt::Write for Match<'_> {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.rest = self.rest.strip_prefix(s).ok_or(std::fmt::Error)?;
            Ok(())
        }
    }
    let mut m = Match { rest: expected };
    std::fmt::write(&mut m, format_args!("{value}")).is_ok() && m.rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::displays_as;

    #[test]
    fn displays_as_matches_the_whole_text_only() {
        assert!(displays_as(&"URI too long", "URI too long"));
        assert!(displays_as(
            &format_args!("{}{}", "URI ", "too long"),
            "URI too long"
        ));
        assert!(!displays_as(&"URI too long!", "URI too long"));
        assert!(!displays_as(&"URI too", "URI too long"));
        assert!(!displays_as(&"message head is too large", "URI too long"));
    }
}
