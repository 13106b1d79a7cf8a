//! `GET /`: the lab page, rendered by askama with this replica's name, the hashed asset URLs
//! and whether the request carried the balancer's sticky cookie. Everything the script needs
//! travels in `data-` attributes (no inline script).
//!
//! `POST /forget`: clears the sticky cookie and sends the browser back to `/`. The cookie is
//! `HttpOnly` (set by the balancer), so the page's script can neither read nor clear it: the
//! server reads it from the `Cookie` header, and a response's `Set-Cookie` clears it (the
//! balancer passes the backend's `Set-Cookie` through).

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;

/// Path the page polls and posts to (same origin: the balancer routes it to the API).
pub const API_PATH: &str = "/api/student";
/// Poll period in milliseconds.
pub const POLL_INTERVAL_MS: u32 = 2000;
/// Students requested per poll.
pub const POLL_COUNT: u32 = 5;
/// Longest cookie value shown on the page (the balancer's are 16 hex digits).
const MAX_SHOWN_COOKIE: usize = 64;

/// What the page says about the balancer in front of it.
#[derive(Debug, Clone)]
pub struct LabSettings {
    /// Name of the static pool's sticky cookie.
    pub sticky_cookie: String,
    /// Link to the balancer's stats dashboard.
    pub dashboard_url: String,
}

impl Default for LabSettings {
    fn default() -> Self {
        Self {
            sticky_cookie: "lb_static".to_owned(),
            dashboard_url: "http://localhost:1936/".to_owned(),
        }
    }
}

/// The page template's inputs.
#[derive(Template, WebTemplate)]
#[template(path = "index.html")]
pub struct Page<'a> {
    /// Name of the static replica rendering the page.
    pub instance: &'a str,
    /// Hashed stylesheet URL.
    pub css: &'a str,
    /// Hashed script URL.
    pub js: &'a str,
    /// API path the script polls.
    pub api: &'a str,
    /// Poll period, ms.
    pub interval_ms: u32,
    /// Students per poll.
    pub count: u32,
    /// Name of the sticky cookie.
    pub sticky_cookie: &'a str,
    /// Its value in this request, if the browser sent it.
    pub sticky_value: Option<&'a str>,
    /// Link to the stats dashboard.
    pub dashboard_url: &'a str,
}

/// Renders the page; `no-cache` so a reload shows which static replica answered.
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    let sticky_value = find_cookie(&headers, &state.lab.sticky_cookie);
    let page = Page {
        instance: &state.instance,
        css: &state.assets.css.path,
        js: &state.assets.js.path,
        api: API_PATH,
        interval_ms: POLL_INTERVAL_MS,
        count: POLL_COUNT,
        sticky_cookie: &state.lab.sticky_cookie,
        sticky_value,
        dashboard_url: &state.lab.dashboard_url,
    };
    let html = page.into_response();
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        html,
    )
}

/// `POST /forget`: 303 to `/` with a `Set-Cookie` that deletes the sticky cookie, so the next
/// page load is a new session that the balancer places afresh.
pub async fn forget(State(state): State<AppState>) -> Response {
    let clear = format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
        state.lab.sticky_cookie
    );
    let mut res = StatusCode::SEE_OTHER.into_response();
    let h = res.headers_mut();
    h.insert(header::LOCATION, HeaderValue::from_static("/"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // The name was validated as a cookie token at startup, so this cannot fail; if it ever
    // did, a redirect without the header is still a harmless answer.
    if let Ok(v) = HeaderValue::from_str(&clear) {
        h.insert(header::SET_COOKIE, v);
    }
    res
}

/// The value of cookie `name` in the request's `Cookie` headers, if present, non-empty and
/// short enough to show.
pub fn find_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .filter(|v| !v.is_empty() && v.len() <= MAX_SHOWN_COOKIE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookies(values: &[&'static str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::COOKIE, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn finds_the_sticky_cookie_among_others() {
        let h = cookies(&["theme=dark; lb_static=00000000000000ff", "x=1"]);
        assert_eq!(find_cookie(&h, "lb_static"), Some("00000000000000ff"));
        let h = cookies(&["a=1", "lb_static=\"abc\""]);
        assert_eq!(find_cookie(&h, "lb_static"), Some("abc"));
    }

    #[test]
    fn a_missing_empty_or_lookalike_cookie_is_none() {
        assert_eq!(find_cookie(&cookies(&[]), "lb_static"), None);
        assert_eq!(find_cookie(&cookies(&["lb_static="]), "lb_static"), None);
        assert_eq!(find_cookie(&cookies(&["xlb_static=1"]), "lb_static"), None);
        assert_eq!(find_cookie(&cookies(&["lb_dynamic=1"]), "lb_static"), None);
    }
}
