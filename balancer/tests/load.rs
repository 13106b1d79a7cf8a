//! The built-in load generator end to end: `/api/load` on a balancer started in-process on
//! port 0, real requests through its public listener to in-process backends, and what the
//! run reports checked against what the backends saw.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

mod common;
use common::{Backend, BackendOpts, Conf, eventually, eventually_within, temp_dir};

const TOKEN: &str = "load-test-token";

/// Sends an admin request to `/api/load`; `token` None sends no Authorization header.
async fn load(
    admin: SocketAddr,
    method: reqwest::Method,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = common::client().request(method, format!("http://{admin}/api/load"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn start(admin: SocketAddr, body: Value) -> (u16, Value) {
    load(admin, reqwest::Method::POST, Some(TOKEN), Some(body)).await
}

async fn report(admin: SocketAddr) -> Value {
    let (status, v) = load(admin, reqwest::Method::GET, Some(TOKEN), None).await;
    assert_eq!(status, 200, "{v}");
    v
}

/// Waits until the run has ended and returns its report.
async fn ended(admin: SocketAddr) -> Value {
    let mut last = Value::Null;
    eventually_within(Duration::from_secs(20), "the load run to end", async || {
        last = report(admin).await;
        last["state"] == "ended"
    })
    .await;
    last
}

fn conf(members: &[&Backend]) -> Conf {
    let members: Vec<String> = members.iter().map(|b| b.member()).collect();
    // No X-Upstream for clients: the run must learn its members through its own mark.
    Conf::new(&members)
        .without_upstream_header()
        .top(&format!("admin_token = \"{TOKEN}\""))
}

#[test]
fn a_paced_run_sends_its_requests_and_reports_each_members_share() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = conf(&[&a, &b]).start();
    let admin = lb.running.admin_addr;
    common::runtime().block_on(async {
        let (status, v) = start(
            admin,
            json!({"path": "/work", "concurrency": 4, "rate": 100, "seconds": 1}),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        assert_eq!(v["spec"]["path"], "/work");
        let r = ended(admin).await;
        assert_eq!(r["end"], "finished", "{r}");
        // 100 per second for 1 s: every one due before the end is sent, and each answered.
        assert_eq!(r["sent"], 100, "{r}");
        assert_eq!(r["responses"], 100, "{r}");
        assert_eq!(r["statuses"], json!({"200": 100}), "{r}");
        assert_eq!(r["errors"], 0, "{r}");
        assert_eq!(
            a.hits() + b.hits(),
            100,
            "the backends saw the same requests"
        );
        // Round-robin alternates: the shares are the backends' own counts, by address.
        let members = r["members"].as_object().unwrap();
        assert_eq!(members.len(), 2, "{r}");
        assert_eq!(members[&a.member()]["requests"], a.hits(), "{r}");
        assert_eq!(members[&b.member()]["requests"], b.hits(), "{r}");
        assert_eq!(members[&a.member()]["share"], 0.5, "{r}");
        let lat = &r["latency"];
        assert!(
            lat["p50_ms"].as_f64().unwrap() <= lat["p99_ms"].as_f64().unwrap(),
            "{r}"
        );
    });
}

#[test]
fn only_the_active_runs_requests_learn_their_member() {
    let slow = Backend::start_with(
        "slow",
        BackendOpts {
            delay: Duration::from_millis(50),
        },
    );
    let lb = conf(&[&slow]).start();
    let admin = lb.running.admin_addr;
    common::runtime().block_on(async {
        let http = common::client();
        let upstream = async |mark: Option<&str>| {
            let mut req = http.get(lb.url("/x"));
            if let Some(m) = mark {
                req = req.header("x-lab-load", m);
            }
            let r = req.send().await.unwrap();
            r.headers()
                .get("x-upstream")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        assert_eq!(upstream(None).await, None);
        let (status, v) = start(
            admin,
            json!({"path": "/x", "concurrency": 1, "seconds": 30}),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        let run = v["run"].as_str().unwrap().to_owned();
        assert_eq!(run.len(), 16, "{v}");
        assert_eq!(upstream(None).await, None, "a client without the mark");
        assert_eq!(
            upstream(Some("0123456789abcdef")).await,
            None,
            "a guessed id"
        );
        assert_eq!(
            upstream(Some(&run)).await,
            Some(slow.member()),
            "the run's own id"
        );
        let (status, v) = load(admin, reqwest::Method::DELETE, Some(TOKEN), None).await;
        assert_eq!(status, 200, "{v}");
        let r = ended(admin).await;
        assert_eq!(r["end"], "stopped", "{r}");
        assert_eq!(upstream(Some(&run)).await, None, "the run is over");
    });
}

#[test]
fn one_run_at_a_time_and_delete_stops_it() {
    let a = Backend::start("a");
    let lb = conf(&[&a]).start();
    let admin = lb.running.admin_addr;
    common::runtime().block_on(async {
        let (status, v) = load(admin, reqwest::Method::GET, Some(TOKEN), None).await;
        assert_eq!((status, &v), (200, &json!({"run": null})));
        let (status, v) = load(admin, reqwest::Method::DELETE, Some(TOKEN), None).await;
        assert_eq!(status, 404, "nothing to stop: {v}");
        let long = json!({"path": "/", "concurrency": 2, "rate": 50, "seconds": 60});
        let (status, first) = start(admin, long.clone()).await;
        assert_eq!(status, 202, "{first}");
        let (status, v) = start(admin, long.clone()).await;
        assert_eq!(status, 409, "{v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains(first["run"].as_str().unwrap()),
            "names the run: {msg}"
        );
        eventually("the run to send requests", async || {
            report(admin).await["responses"].as_u64().unwrap() > 0
        })
        .await;
        let (status, v) = load(admin, reqwest::Method::DELETE, Some(TOKEN), None).await;
        assert_eq!(status, 200, "{v}");
        let r = ended(admin).await;
        assert_eq!(r["end"], "stopped", "{r}");
        assert!(r["elapsed_seconds"].as_f64().unwrap() < 60.0, "{r}");
        let hits = a.hits();
        assert_eq!(r["responses"], hits, "{r}");
        // Stopped means stopped: nothing more arrives, and a new run may start.
        let (status, v) = start(admin, json!({"path": "/", "seconds": 1, "rate": 10})).await;
        assert_eq!(status, 202, "{v}");
        assert_ne!(v["run"], first["run"]);
        let r = ended(admin).await;
        assert_eq!(r["responses"], 10, "{r}");
        assert_eq!(a.hits(), hits + 10);
    });
}

#[test]
fn load_actions_need_the_admin_token() {
    let a = Backend::start("a");
    let with_token = conf(&[&a]).start();
    let without = Conf::new(&[a.member()]).start();
    common::runtime().block_on(async {
        let body = json!({"path": "/", "seconds": 1});
        let admin = with_token.running.admin_addr;
        for method in [
            reqwest::Method::POST,
            reqwest::Method::GET,
            reqwest::Method::DELETE,
        ] {
            let (status, v) = load(admin, method.clone(), None, Some(body.clone())).await;
            assert_eq!(status, 401, "{method} without a token: {v}");
            let (status, v) = load(admin, method.clone(), Some("wrong"), Some(body.clone())).await;
            assert_eq!(status, 401, "{method} with a wrong token: {v}");
            let (status, v) = load(
                without.running.admin_addr,
                method.clone(),
                Some(TOKEN),
                Some(body.clone()),
            )
            .await;
            assert_eq!(status, 403, "{method} with no token configured: {v}");
        }
        assert_eq!(a.hits(), 0, "no run started");
    });
}

#[test]
fn a_run_beyond_the_bounds_is_refused_naming_the_bound() {
    let a = Backend::start("a");
    let lb = conf(&[&a])
        .top("[load]\nmax_concurrency = 4\nmax_rate = 100\nmax_seconds = 5")
        .start();
    let admin = lb.running.admin_addr;
    common::runtime().block_on(async {
        let cases = [
            (
                json!({"path": "/", "concurrency": 5}),
                "load.max_concurrency",
            ),
            (
                json!({"path": "/", "concurrency": 0}),
                "load.max_concurrency",
            ),
            (json!({"path": "/", "rate": 101}), "load.max_rate"),
            (json!({"path": "/", "rate": 0}), "load.max_rate"),
            (
                json!({"path": "/", "concurrency": 4, "seconds": 6}),
                "load.max_seconds",
            ),
            (json!({"path": "api/student"}), "`path`"),
            (json!({"path": "/", "host": "a b"}), "`host`"),
            (
                json!({"path": "/", "threads": 2}),
                "unknown field `threads`",
            ),
            (json!({"concurrency": 2}), "missing field `path`"),
        ];
        for (body, says) in cases {
            let (status, v) = start(admin, body.clone()).await;
            assert_eq!(status, 400, "{body}: {v}");
            let msg = v["error"].as_str().unwrap();
            assert!(msg.contains(says), "{body}: {msg}");
        }
        assert_eq!(a.hits(), 0);
        let (status, v) = start(
            admin,
            json!({"path": "/", "concurrency": 4, "rate": 100, "seconds": 1}),
        )
        .await;
        assert_eq!(status, 202, "at the bounds: {v}");
    });
}

#[test]
fn a_reload_changing_the_bounds_stops_the_run_and_shutdown_stops_it_too() {
    let a = Backend::start("a");
    let dir = temp_dir("load-reload");
    let file = dir.path().join("balancer.toml");
    let base = conf(&[&a]).toml();
    std::fs::write(&file, &base).unwrap();
    let settings = balancer::config::load(&balancer::config::FileChoice {
        path: file.clone(),
        explicit: true,
    })
    .unwrap();
    let running = balancer::start(
        settings,
        Some(balancer::config::FileChoice {
            path: file.clone(),
            explicit: true,
        }),
        balancer::Listeners {
            proxy: vec![std::net::TcpListener::bind("127.0.0.1:0").unwrap()],
            admin: std::net::TcpListener::bind("127.0.0.1:0").unwrap(),
        },
        Some(std::sync::Arc::new(
            balancer::discovery::StaticResolver::default(),
        )),
    )
    .unwrap();
    let admin = running.admin_addr;
    let rt = common::runtime();
    let long = json!({"path": "/", "concurrency": 2, "rate": 50, "seconds": 60});
    rt.block_on(async {
        assert_eq!(start(admin, long.clone()).await.0, 202);
    });
    // A reload that leaves [load] alone leaves the run alone.
    std::fs::write(&file, format!("{base}\n# touched\n")).unwrap();
    running.reload().unwrap();
    rt.block_on(async {
        assert_eq!(report(admin).await["state"], "running");
    });
    std::fs::write(&file, format!("{base}\n[load]\nmax_rate = 60\n")).unwrap();
    assert!(running.reload().unwrap());
    rt.block_on(async {
        let r = ended(admin).await;
        assert_eq!(r["end"], "reloaded", "{r}");
        assert_eq!(start(admin, long.clone()).await.0, 202);
    });
    running.shutdown();
    rt.block_on(async {
        let r = ended(admin).await;
        assert_eq!(r["end"], "shutdown", "{r}");
        let (status, v) = start(admin, long).await;
        assert_eq!(status, 503, "{v}");
    });
}
