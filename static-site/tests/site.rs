//! The lab page, its assets and headers, through a real client against the real router.

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{client, config, start};

/// The `src`/`href` value following `marker` in `html`.
fn attr_after<'a>(html: &'a str, marker: &str) -> &'a str {
    let rest = &html[html.find(marker).unwrap() + marker.len()..];
    &rest[..rest.find('"').unwrap()]
}

async fn page(url: &str) -> (reqwest::header::HeaderMap, String) {
    let res = client().get(format!("{url}/")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let headers = res.headers().clone();
    (headers, res.text().await.unwrap())
}

#[tokio::test]
async fn page_renders_with_the_instance_name_escaped() {
    let srv = start(config("web<1>")).await;
    let (headers, html) = page(&srv.url).await;
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["x-instance"], "web<1>");
    assert!(!html.contains("web<1>"), "instance must be HTML-escaped");
    let static_dd = &html[html.find("id=\"static-instance\"").unwrap()..];
    assert!(static_dd.contains("web&#60;1&#62;") || static_dd.contains("web&lt;1&gt;"));
}

#[tokio::test]
async fn page_has_the_stable_hooks_browser_tests_use() {
    let srv = start(config("web-1")).await;
    let (_, html) = page(&srv.url).await;
    for hook in [
        "id=\"students\"",
        "<tbody>",
        "id=\"api-instance\"",
        "id=\"static-instance\"",
        "id=\"poll-status\"",
        "id=\"poll-history\"",
        "id=\"student-form\"",
        "id=\"form-status\"",
        "data-api=\"/api/student\"",
        "data-interval-ms=\"2000\"",
    ] {
        assert!(html.contains(hook), "missing {hook}");
    }
    for field in [
        "firstName",
        "lastName",
        "gender",
        "birthday",
        "email",
        "city",
    ] {
        assert!(html.contains(&format!("name=\"{field}\"")), "input {field}");
        assert!(
            html.contains(&format!("data-error-for=\"{field}\"")),
            "error slot {field}"
        );
        assert!(
            html.contains(&format!("for=\"field-{field}\"")),
            "label {field}"
        );
    }
}

#[tokio::test]
async fn page_has_no_inline_script_and_no_external_assets() {
    let srv = start(config("web-1")).await;
    let (_, html) = page(&srv.url).await;
    let scripts: Vec<&str> = html.split("<script").skip(1).collect();
    assert_eq!(scripts.len(), 1);
    assert!(scripts[0].trim_start().starts_with("src=\"/assets/"));
    assert!(scripts[0].contains("></script>"), "no inline body");
    let handlers = html
        .split(" on")
        .skip(1)
        .filter(|rest| {
            let name: String = rest.chars().take_while(char::is_ascii_alphabetic).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        })
        .count();
    assert_eq!(handlers, 0, "no inline event handlers");
    assert!(!html.contains("<style"), "no inline styles");
    // Scripts, styles and images only from this origin; the one absolute URL is the link
    // (a navigation, not an asset) to the balancer's dashboard.
    let without_link = html.replace("href=\"http://localhost:1936/\"", "");
    assert!(
        !without_link.contains("http://") && !without_link.contains("https://"),
        "no external URL"
    );
}

#[tokio::test]
async fn security_headers_are_present_without_unsafe_inline() {
    let srv = start(config("web-1")).await;
    for path in ["/", "/healthz", "/missing"] {
        let res = client()
            .get(format!("{}{path}", srv.url))
            .send()
            .await
            .unwrap();
        let h = res.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert_eq!(h["x-instance"], "web-1", "{path}");
    }
}

#[tokio::test]
async fn assets_are_served_with_content_type_and_immutable_caching() {
    let srv = start(config("web-1")).await;
    let (_, html) = page(&srv.url).await;
    let js = attr_after(&html, "<script src=\"");
    let css = attr_after(&html, "rel=\"stylesheet\" href=\"");
    assert!(
        js.starts_with("/assets/app.") && js.ends_with(".js"),
        "{js}"
    );
    for (path, ctype) in [(js, "text/javascript"), (css, "text/css")] {
        let res = client()
            .get(format!("{}{path}", srv.url))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        let h = res.headers().clone();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(ctype),
            "{path}"
        );
        assert_eq!(h["cache-control"], "public, max-age=31536000, immutable");
        let etag = h["etag"].to_str().unwrap().to_owned();
        assert!(!res.bytes().await.unwrap().is_empty());

        let res = client()
            .get(format!("{}{path}", srv.url))
            .header("if-none-match", &etag)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 304, "{path}");
    }
    let res = client()
        .get(format!("{}/assets/app.js", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "only hashed names exist");
}

#[tokio::test]
async fn script_polls_every_2000_ms_with_a_single_timeout_chain() {
    let srv = start(config("web-1")).await;
    let (_, html) = page(&srv.url).await;
    let js_path = attr_after(&html, "<script src=\"");
    let js = client()
        .get(format!("{}{js_path}", srv.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(js.contains("DEFAULT_INTERVAL_MS = 2000"), "2000 ms default");
    assert!(js.contains("setTimeout(poll, Math.max(0, intervalMs - elapsed))"));
    assert!(
        !js.contains("setInterval"),
        "a chain, never overlapping polls"
    );
    assert!(js.contains("fetch(api + '?count='"));
    assert!(js.contains("X-Instance"));
    assert!(js.contains("API unavailable \\u2014 retrying\\u2026"));
    assert!(js.contains("method: 'POST'"));
    assert!(js.contains("res.status === 422"));
    assert!(
        !js.contains("innerHTML"),
        "student data is rendered as text only"
    );
}

#[tokio::test]
async fn unknown_path_is_json_404_and_wrong_method_is_405() {
    let srv = start(config("web-1")).await;
    let res = client()
        .get(format!("{}/nope", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["error"],
        "not found"
    );
    let res = client().post(format!("{}/", srv.url)).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert!(res.headers()["allow"].to_str().unwrap().contains("GET"));
}

#[tokio::test]
async fn healthz_turns_draining_after_the_signal_while_still_serving() {
    let mut cfg = config("web-1");
    cfg.drain_grace = std::time::Duration::from_secs(1);
    let mut srv = start(cfg).await;
    let res = client()
        .get(format!("{}/healthz", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    srv.stop.take().unwrap().send(()).unwrap();
    let res = common::healthz_answering(&srv.url, 503, std::time::Duration::from_secs(1)).await;
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["status"],
        "draining"
    );
    let (_, html) = page(&srv.url).await;
    assert!(
        html.contains("web-1"),
        "still serving the page while draining"
    );
    tokio::time::timeout(std::time::Duration::from_secs(5), srv.task)
        .await
        .expect("stops after the grace period")
        .unwrap()
        .unwrap();
}
