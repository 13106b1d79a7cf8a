//! The admin listener end to end: real traffic through the proxy to in-process backends, then
//! `/api/status`, `/metrics` (checked against a small exposition-format parser), the dashboard,
//! and the token-protected runtime actions, including a drain observed on the data path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use balancer::config::{FileChoice, Origin, Settings};
use balancer::discovery::StaticResolver;
use balancer::{Listeners, Running};
use serde_json::Value;

mod common;
#[path = "admin/exposition.rs"]
mod exposition;
use common::{Backend, eventually_within};
use exposition::Exposition;

// ---------------------------------------------------------------- harness

/// A balancer started in-process on port 0.
struct Lb {
    running: Option<Running>,
    proxy: String,
    admin: String,
    http: reqwest::Client,
}

impl Lb {
    /// Starts from TOML text; `file` makes it the config file that reloads re-read.
    async fn start(toml: String, file: Option<std::path::PathBuf>) -> Lb {
        let running = tokio::task::spawn_blocking(move || {
            let raw = balancer::config::from_toml_str(&toml).expect("test TOML parses");
            let origin = match &file {
                Some(p) => Origin::from_toml(p.to_str().unwrap(), &toml),
                None => Origin::default(),
            };
            let settings = Settings::build(&raw, &origin).expect("test config is valid");
            let listeners = Listeners {
                proxy: vec![std::net::TcpListener::bind("127.0.0.1:0").unwrap()],
                admin: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
            };
            let file = file.map(|path| FileChoice {
                path,
                explicit: true,
            });
            balancer::start(
                settings,
                file,
                listeners,
                Some(Arc::new(StaticResolver::default())),
            )
            .expect("balancer starts")
        })
        .await
        .unwrap();
        Lb {
            proxy: format!("http://{}", running.proxy_addr),
            admin: format!("http://{}", running.admin_addr),
            running: Some(running),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.proxy))
            .send()
            .await
            .unwrap()
    }

    async fn admin_get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.admin))
            .send()
            .await
            .unwrap()
    }

    async fn status(&self) -> Value {
        let r = self.admin_get("/api/status").await;
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    async fn metrics(&self) -> Exposition {
        let r = self.admin_get("/metrics").await;
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
        let text = r.text().await.unwrap();
        Exposition::parse(&text).unwrap_or_else(|e| panic!("invalid exposition: {e}\n{text}"))
    }

    /// Sends an admin action; `token` None sends no Authorization header.
    async fn action(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.admin));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_owned());
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

impl Drop for Lb {
    fn drop(&mut self) {
        // The balancer owns a runtime: drop it off the test's async worker thread.
        if let Some(r) = self.running.take() {
            std::thread::spawn(move || drop(r));
        }
    }
}

/// Config with `dynamic` = `members` (checks every 100 ms), `static` = `statics` (no checks).
fn config(dynamic: &[SocketAddr], statics: &[SocketAddr], extra: &str) -> String {
    let list = |a: &[SocketAddr]| {
        a.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{extra}\nupstream_header = true\n\n\
         [pools.dynamic]\nmembers = [{}]\n\
         [pools.dynamic.health]\ninterval = \"100ms\"\n\n\
         [pools.static]\nmembers = [{}]\n\
         [pools.static.health]\nenabled = false\n",
        list(dynamic),
        list(statics)
    )
}

fn pool<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pool {name} in {status:#}"))
}

fn member<'a>(status: &'a Value, pool_name: &str, addr: SocketAddr) -> &'a Value {
    pool(status, pool_name)["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["addr"] == addr.to_string())
        .unwrap_or_else(|| panic!("no member {addr} in {status:#}"))
}

// ---------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_count_the_traffic_that_was_sent() {
    let (a, b, s) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("s"),
    );
    let lb = Lb::start(config(&[a.addr, b.addr], &[s.addr], ""), None).await;
    for _ in 0..20 {
        assert_eq!(lb.get("/api/hello").await.status(), 200);
    }
    for _ in 0..6 {
        assert_eq!(lb.get("/api/status/404").await.status(), 404);
    }
    for _ in 0..3 {
        assert_eq!(lb.get("/api/status/500").await.status(), 500);
    }
    for _ in 0..5 {
        assert_eq!(lb.get("/index.html").await.status(), 200);
    }
    let served = a.hits() + b.hits();
    assert_eq!(served, 29);
    assert_eq!(s.hits(), 5);

    // Health checks run every 100 ms: wait for a result on both dynamic members.
    eventually_within(
        Duration::from_secs(5),
        "a health check on each member",
        async || {
            let st = lb.status().await;
            [a.addr, b.addr]
                .iter()
                .all(|&m| member(&st, "dynamic", m)["last_check"]["result"] == "pass")
        },
    )
    .await;

    let st = lb.status().await;
    assert!(st["version"].as_u64().unwrap() >= 1);
    assert_eq!(st["config_file"], Value::Null);
    assert_eq!(st["actions_enabled"], false);
    let dynamic = pool(&st, "dynamic");
    assert_eq!(dynamic["requests"], 29);
    let sum = |class: usize| -> u64 {
        dynamic["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["responses"][class].as_u64().unwrap())
            .sum()
    };
    assert_eq!((sum(1), sum(3), sum(4)), (20, 6, 3));
    for (addr, backend) in [(a.addr, &a), (b.addr, &b)] {
        let m = member(&st, "dynamic", addr);
        assert_eq!(m["state"], "up");
        assert_eq!(m["in_rotation"], true);
        assert_eq!(m["requests"], backend.hits());
        assert_eq!(m["active"], 0);
        assert_eq!(m["retries"], 0);
        assert_eq!(m["weight"], 1);
        let lat = &m["latency"];
        assert_eq!(lat["samples"], m["requests"], "{m:#}");
        let (p50, p99) = (
            lat["p50_ms"].as_f64().unwrap(),
            lat["p99_ms"].as_f64().unwrap(),
        );
        assert!(p50 > 0.0 && p50 <= p99, "{lat}");
        assert!(m["last_check"]["age_seconds"].as_f64().unwrap() < 5.0);
    }
    assert_eq!(member(&st, "static", s.addr)["responses"][1], 5);
    assert_eq!(member(&st, "static", s.addr)["last_check"], Value::Null);
    assert!(
        st["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["pool"] == "dynamic")
    );

    let m = lb.metrics().await;
    let d = [("pool", "dynamic")];
    assert_eq!(
        m.sum("balancer_requests_total", &[d[0], ("code", "2xx")]),
        20.0
    );
    assert_eq!(
        m.sum("balancer_requests_total", &[d[0], ("code", "4xx")]),
        6.0
    );
    assert_eq!(
        m.sum("balancer_requests_total", &[d[0], ("code", "5xx")]),
        3.0
    );
    assert_eq!(m.sum("balancer_requests_total", &[("pool", "static")]), 5.0);
    assert_eq!(m.sum("balancer_request_duration_seconds_count", &d), 29.0);
    let a_label = a.addr.to_string();
    let inf = [d[0], ("member", a_label.as_str()), ("le", "+Inf")];
    assert_eq!(
        m.sum("balancer_request_duration_seconds_bucket", &inf),
        a.hits() as f64
    );
    assert!(m.sum("balancer_request_duration_seconds_sum", &d) > 0.0);
    assert_eq!(m.sum("balancer_member_up", &d), 2.0);
    assert_eq!(m.sum("balancer_member_active_requests", &[]), 0.0);
    assert_eq!(m.sum("balancer_retries_total", &[]), 0.0);
    assert_eq!(m.sum("balancer_upstream_failures_total", &[]), 0.0);
    assert_eq!(
        m.sum("balancer_member_state", &[d[0], ("state", "up")]),
        2.0
    );
    assert_eq!(m.sum("balancer_member_last_check_success", &d), 2.0);
    assert_eq!(m.sum("balancer_config_reloads_total", &[]), 0.0);
    assert_eq!(m.sum("balancer_build_info", &[]), 1.0);
    assert!(m.has("balancer_membership_events_total"));
    assert!(m.has("balancer_response_bytes_total"));
    assert_eq!(m.types["balancer_request_duration_seconds"], "histogram");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_every_action_is_refused_and_pages_stay_open() {
    let a = Backend::start("a");
    let lb = Lb::start(config(&[a.addr], &[a.addr], ""), None).await;
    let member = format!("/api/pools/dynamic/members/{}", a.addr);
    use reqwest::Method;
    for (method, path, body) in [
        (Method::POST, format!("{member}/drain"), None),
        (Method::POST, format!("{member}/enable"), None),
        (
            Method::PUT,
            format!("{member}/weight"),
            Some(r#"{"weight": 3}"#),
        ),
        (Method::POST, "/api/reload".to_owned(), None),
        (Method::PUT, member.clone(), None),
    ] {
        for token in [None, Some("anything")] {
            let (code, body) = lb.action(method.clone(), &path, token, body).await;
            assert_eq!(code, 403, "{method} {path}");
            let msg = body["error"].as_str().unwrap();
            assert!(msg.contains("BALANCER_ADMIN_TOKEN"), "{msg}");
        }
    }
    let st = lb.status().await;
    assert_eq!(member_state(&st, a.addr), "up", "nothing changed");
    for path in [
        "/",
        "/api/status",
        "/metrics",
        "/healthz",
        "/assets/dashboard.js",
    ] {
        assert_eq!(lb.admin_get(path).await.status(), 200, "{path}");
    }
}

fn member_state(st: &Value, addr: SocketAddr) -> String {
    member(st, "dynamic", addr)["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_right_token_and_valid_input() {
    use reqwest::Method;
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Lb::start(
        config(&[a.addr, b.addr], &[a.addr], "admin_token = \"secret\""),
        None,
    )
    .await;
    let drain = format!("/api/pools/dynamic/members/{}/drain", a.addr);
    let (code, body) = lb.action(Method::POST, &drain, None, None).await;
    assert_eq!(code, 401);
    assert!(body["error"].as_str().unwrap().contains("Bearer"));
    let (code, _) = lb.action(Method::POST, &drain, Some("wrong"), None).await;
    assert_eq!(code, 401);
    assert_eq!(member_state(&lb.status().await, a.addr), "up");

    let ok = Some("secret");
    let (code, _) = lb
        .action(
            Method::POST,
            "/api/pools/nope/members/1.2.3.4:5/drain",
            ok,
            None,
        )
        .await;
    assert_eq!(code, 404);
    let (code, body) = lb
        .action(
            Method::POST,
            "/api/pools/dynamic/members/10.9.9.9:1/drain",
            ok,
            None,
        )
        .await;
    assert_eq!(code, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&a.addr.to_string())
    );

    // Weight: JSON body or query; out of range and malformed input are 400.
    let weight = format!("/api/pools/dynamic/members/{}/weight", a.addr);
    for bad in [
        r#"{"weight": 1001}"#,
        r#"{"weight": -1}"#,
        r#"{"w": 2}"#,
        "3",
    ] {
        let (code, _) = lb.action(Method::PUT, &weight, ok, Some(bad)).await;
        assert_eq!(code, 400, "{bad}");
    }
    let (code, _) = lb.action(Method::PUT, &weight, ok, None).await;
    assert_eq!(code, 400, "no weight at all");
    let (code, _) = lb
        .action(Method::PUT, &format!("{weight}?weight=x"), ok, None)
        .await;
    assert_eq!(code, 400);
    let (code, body) = lb
        .action(Method::PUT, &weight, ok, Some(r#"{"weight": 7}"#))
        .await;
    assert_eq!((code, &body["weight"]), (200, &Value::from(7)));
    let (code, body) = lb
        .action(Method::PUT, &format!("{weight}?weight=0"), ok, None)
        .await;
    assert_eq!((code, &body["weight"]), (200, &Value::from(0)));

    // Weight 0: never picked, so everything goes to b.
    let before = a.hits();
    for _ in 0..10 {
        lb.get("/api/x").await;
    }
    assert_eq!(a.hits(), before);
    let st = lb.status().await;
    assert_eq!(member(&st, "dynamic", a.addr)["weight"], 0);
    let m = lb.metrics().await;
    let a_label = a.addr.to_string();
    assert_eq!(
        m.sum(
            "balancer_member_weight",
            &[("member", a_label.as_str()), ("pool", "dynamic")]
        ),
        0.0
    );
    assert!(
        st["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "admin" && e["message"].as_str().unwrap().contains("7 -> 0"))
    );

    // Reload without a config file: rejected, with the reason, and counted.
    let (code, body) = lb.action(Method::POST, "/api/reload", ok, None).await;
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["result"], "rejected");
    assert!(body["error"].as_str().unwrap().contains("no config file"));
    let m = lb.metrics().await;
    assert_eq!(
        m.sum("balancer_config_reloads_total", &[("result", "rejected")]),
        1.0
    );
    assert_eq!(m.sum("balancer_config_last_reload_success", &[]), 0.0);
    assert_eq!(lb.status().await["reload"]["ok"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_action_applies_the_changed_file() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let dir = common::temp_dir("admin-reload");
    let path = dir.path().join("balancer.toml");
    let first = config(&[a.addr], &[a.addr], "admin_token = \"secret\"");
    std::fs::write(&path, &first).unwrap();
    let lb = Lb::start(first, Some(path.clone())).await;
    let st = lb.status().await;
    assert!(
        st["config_source"]
            .as_str()
            .unwrap()
            .contains("balancer.toml")
    );
    let version = st["version"].as_u64().unwrap();

    std::fs::write(
        &path,
        config(&[a.addr, b.addr], &[a.addr], "admin_token = \"secret\""),
    )
    .unwrap();
    let (code, body) = lb
        .action(reqwest::Method::POST, "/api/reload", Some("secret"), None)
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["result"], "applied");
    assert!(body["version"].as_u64().unwrap() > version);
    let st = lb.status().await;
    assert_eq!(pool(&st, "dynamic")["members"].as_array().unwrap().len(), 2);
    assert_eq!(st["reload"]["ok"], true);
    let m = lb.metrics().await;
    assert_eq!(
        m.sum("balancer_config_reloads_total", &[("result", "applied")]),
        1.0
    );
    assert_eq!(
        m.sum(
            "balancer_membership_events_total",
            &[("pool", "dynamic"), ("kind", "joined")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_drained_member_finishes_in_flight_work_and_gets_nothing_new() {
    use reqwest::Method;
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = Arc::new(
        Lb::start(
            config(&[a.addr, b.addr], &[a.addr], "admin_token = \"secret\""),
            None,
        )
        .await,
    );
    // A slow request lands on one member; drain exactly that one while it is in flight.
    let slow = {
        let lb = Arc::clone(&lb);
        tokio::spawn(async move {
            let r = lb.get("/api/slow?ms=1500").await;
            let upstream = r.headers()["x-upstream"].to_str().unwrap().to_owned();
            (r.status().as_u16(), upstream, r.text().await.unwrap())
        })
    };
    let mut busy = None;
    eventually_within(
        Duration::from_secs(5),
        "the slow request in flight",
        async || {
            let st = lb.status().await;
            busy = [&a, &b]
                .into_iter()
                .find(|m| member(&st, "dynamic", m.addr)["active"] == 1);
            busy.is_some()
        },
    )
    .await;
    let busy = busy.unwrap();
    let (drained, other) = if busy.addr == a.addr {
        (a.addr, b.addr)
    } else {
        (b.addr, a.addr)
    };
    let (code, body) = lb
        .action(
            Method::POST,
            &format!("/api/pools/dynamic/members/{drained}/drain"),
            Some("secret"),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["admin_state"], "drained");
    assert_eq!(body["active"], 1);
    let st = lb.status().await;
    assert_eq!(member_state(&st, drained), "drained");
    assert_eq!(member(&st, "dynamic", drained)["in_rotation"], false);

    // Nothing new reaches the drained member, the in-flight request completes normally.
    for _ in 0..20 {
        let r = lb.get("/api/x").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-upstream"], other.to_string().as_str());
    }
    let (status, upstream, text) = slow.await.unwrap();
    assert_eq!(
        (status, upstream.as_str(), text.as_str()),
        (200, drained.to_string().as_str(), busy.name.as_str())
    );
    let m = lb.metrics().await;
    let drained_label = drained.to_string();
    let labels = [("pool", "dynamic"), ("member", drained_label.as_str())];
    assert_eq!(m.sum("balancer_member_up", &labels), 0.0);
    assert_eq!(m.sum("balancer_requests_total", &labels), 1.0);
    assert_eq!(
        m.sum(
            "balancer_member_state",
            &[labels[0], labels[1], ("state", "drained")]
        ),
        1.0
    );

    // Enabled again: back in rotation.
    let (code, body) = lb
        .action(
            Method::POST,
            &format!("/api/pools/dynamic/members/{drained}/enable"),
            Some("secret"),
            None,
        )
        .await;
    assert_eq!((code, &body["admin_state"]), (200, &Value::from("enabled")));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = lb.get("/api/x").await;
        seen.insert(r.headers()["x-upstream"].to_str().unwrap().to_owned());
    }
    assert!(seen.contains(&drained.to_string()), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_lists_the_members_and_needs_nothing_external() {
    let (a, b, s) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("s"),
    );
    let lb = Lb::start(config(&[a.addr, b.addr], &[s.addr], ""), None).await;
    lb.get("/api/x").await;
    let r = lb.admin_get("/").await;
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = r.text().await.unwrap();
    for addr in [a.addr, b.addr, s.addr] {
        assert!(
            html.contains(&format!("data-member=\"{addr}\"")),
            "{addr} missing"
        );
    }
    for name in [
        "data-pool=\"dynamic\"",
        "data-pool=\"static\"",
        "id=\"events\"",
        "id=\"clients\"",
    ] {
        assert!(html.contains(name), "{name} missing");
    }
    assert!(
        !html.contains("<script>") && !html.contains("style="),
        "inline code"
    );
    let css = lb.admin_get("/assets/dashboard.css").await;
    assert!(
        css.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    let css = css.text().await.unwrap();
    let js = lb.admin_get("/assets/dashboard.js").await;
    assert!(
        js.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    let js = js.text().await.unwrap();
    assert!(js.contains("/api/status"));
    for text in [&html, &css, &js] {
        assert!(
            !text.contains("http://") && !text.contains("https://") && !text.contains("@import")
        );
    }
}
