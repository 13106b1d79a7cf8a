//! Errors on the request path, classified by who is at fault, each mapped to one status and a
//! short body that never leaks internals.

use http::StatusCode;

/// Why a request was not (fully) proxied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
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
    /// The balancer is shutting down.
    #[error("shutting down")]
    ShuttingDown,
}

impl ProxyError {
    /// The status sent to the client.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::NoBackend | ProxyError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::UpstreamFailed => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The short plain-text body sent to the client.
    pub fn body(self) -> &'static str {
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
            ProxyError::ShuttingDown => {
                "503 Service Unavailable: the balancer is restarting, try again\n"
            }
        }
    }
}
