//! What the page says about the balancer's sticky cookie, and `POST /forget` clearing it.

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{config, start};

/// A client that neither follows redirects nor keeps cookies: we look at each answer.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn page_with_cookie(url: &str, cookie: Option<&str>) -> String {
    let mut req = raw_client().get(format!("{url}/"));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

#[tokio::test]
async fn page_says_whether_the_request_carried_the_sticky_cookie() {
    let srv = start(config("web-1")).await;
    let html = page_with_cookie(&srv.url, None).await;
    assert!(html.contains("data-sticky=\"no\""), "{html}");
    assert!(html.contains("no cookie yet"));

    let html = page_with_cookie(&srv.url, Some("theme=dark; lb_static=00000000000000ff")).await;
    assert!(html.contains("data-sticky=\"yes\""));
    assert!(html.contains("data-cookie=\"00000000000000ff\""));
    assert!(html.contains("lb_static=00000000000000ff"));
}

#[tokio::test]
async fn the_cookie_name_comes_from_the_config_and_values_are_escaped() {
    let mut cfg = config("web-1");
    cfg.sticky_cookie = "lb_web".to_owned();
    cfg.dashboard_url = "http://127.0.0.1:4242/".to_owned();
    // The common helper builds its state from the instance name only; start one from config.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = static_site::AppState::from_config(&cfg).unwrap();
    tokio::spawn(static_site::serve(
        listener,
        state,
        cfg.drain_grace,
        std::future::pending(),
    ));

    let html = page_with_cookie(&url, Some("lb_static=aaaaaaaaaaaaaaaa")).await;
    assert!(html.contains("data-sticky=\"no\""), "another pool's cookie");
    let html = page_with_cookie(&url, Some("lb_web=<b>x</b>")).await;
    assert!(html.contains("data-sticky=\"yes\""));
    assert!(!html.contains("<b>x</b>"), "cookie values are HTML-escaped");
    assert!(
        html.contains("href=\"http://127.0.0.1:4242/\""),
        "dashboard link"
    );

    let res = raw_client()
        .post(format!("{url}/forget"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["set-cookie"],
        "lb_web=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
    );
}

#[tokio::test]
async fn forget_clears_the_cookie_and_redirects_home() {
    let srv = start(config("web-1")).await;
    let res = raw_client()
        .post(format!("{}/forget", srv.url))
        .header("cookie", "lb_static=00000000000000ff")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/");
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert_eq!(
        res.headers()["set-cookie"],
        "lb_static=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax"
    );
    assert_eq!(res.headers()["x-instance"], "web-1");

    let res = raw_client()
        .get(format!("{}/forget", srv.url))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405, "clearing the cookie takes a POST");
}

#[tokio::test]
async fn page_has_the_demo_hooks_the_browser_tests_use() {
    let srv = start(config("web-1")).await;
    let html = page_with_cookie(&srv.url, None).await;
    for hook in [
        "id=\"sticky-status\"",
        "id=\"forget-form\" method=\"post\" action=\"/forget\"",
        "id=\"forget\"",
        "id=\"distribution\"",
        "id=\"replica-legend\"",
        "id=\"poll-log\" hidden",
        "id=\"api-upstream\"",
        "id=\"seen-by\"",
        "id=\"seen-by-list\"",
        "id=\"dashboard-link\" href=\"http://localhost:1936/\"",
        "./setup.sh scale 5",
        "docker kill",
        "balancer/conf/balancer.toml",
    ] {
        assert!(html.contains(hook), "missing {hook}");
    }
}
