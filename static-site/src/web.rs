//! HTTP plumbing for every route: the security headers the page needs, on top of what both
//! apps share (re-exported here from `apps-shared`): `X-Instance`, the access log, `/healthz`
//! with draining, and JSON bodies for 404 and 405.

use axum::http::{HeaderValue, header};
use axum::response::Response;

pub use apps_shared::web::*;

/// The page loads only its own script and stylesheet and talks only to its own origin;
/// no inline script or style is allowed anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

/// Adds the security headers to every response (404s, 405s and `/healthz` included).
pub async fn security_headers(mut res: Response) -> Response {
    let headers = res.headers_mut();
    let fixed = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    res
}
