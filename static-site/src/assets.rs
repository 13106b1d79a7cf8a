//! The stylesheet and script, compiled into the binary and served under content-hashed
//! names: a new build gets new URLs, so browsers may cache each one forever.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One embedded file.
#[derive(Debug, Clone)]
pub struct Asset {
    /// URL path, with the content hash in the name.
    pub path: String,
    /// `Content-Type` to send.
    pub content_type: &'static str,
    /// The file itself.
    pub bytes: &'static [u8],
    /// Strong ETag: the content hash, quoted.
    pub etag: String,
}

/// FNV-1a, 64-bit: tiny, `const`, and plenty to tell two builds of a file apart.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

const CSS: &[u8] = include_bytes!("../assets/app.css");
const JS: &[u8] = include_bytes!("../assets/app.js");
const CSS_HASH: u64 = fnv1a(CSS);
const JS_HASH: u64 = fnv1a(JS);

/// All embedded assets, with paths computed once at startup.
#[derive(Debug, Clone)]
pub struct Assets {
    /// The stylesheet.
    pub css: Asset,
    /// The page script.
    pub js: Asset,
}

impl Assets {
    /// Builds the table of hashed paths.
    pub fn new() -> Self {
        Self {
            css: Asset {
                path: format!("/assets/app.{CSS_HASH:016x}.css"),
                content_type: "text/css; charset=utf-8",
                bytes: CSS,
                etag: format!("\"{CSS_HASH:016x}\""),
            },
            js: Asset {
                path: format!("/assets/app.{JS_HASH:016x}.js"),
                content_type: "text/javascript; charset=utf-8",
                bytes: JS,
                etag: format!("\"{JS_HASH:016x}\""),
            },
        }
    }
}

impl Default for Assets {
    fn default() -> Self {
        Self::new()
    }
}

impl Asset {
    /// Serves the asset: immutable caching, ETag, and 304 on a matching `If-None-Match`.
    pub fn respond(&self, request_headers: &HeaderMap) -> Response {
        let etag = HeaderValue::from_str(&self.etag).unwrap_or(HeaderValue::from_static("\"\""));
        let matches = request_headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/") == self.etag
            });
        let cache = HeaderValue::from_static("public, max-age=31536000, immutable");
        if matches {
            return (
                StatusCode::NOT_MODIFIED,
                [(header::ETAG, etag), (header::CACHE_CONTROL, cache)],
            )
                .into_response();
        }
        (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(self.content_type),
                ),
                (header::ETAG, etag),
                (header::CACHE_CONTROL, cache),
            ],
            Body::from(self.bytes),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_names_change_with_content() {
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        let a = Assets::new();
        assert!(a.js.path.starts_with("/assets/app.") && a.js.path.ends_with(".js"));
        assert!(a.css.path.ends_with(".css"));
    }
}
