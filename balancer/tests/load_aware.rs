//! The load-aware algorithms through real sockets: members' ORCA reports are read (TEXT and
//! JSON, `=` and `:`), a malformed one is ignored and counted, the header never reaches a
//! client; reported-load's weights follow the reports with their blackout and expiry; a new
//! member is not flooded; peak-ewma prefers the fast member and not the one failing fast.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Backend, BackendOpts, Conf, Lb, admin_status, client, eventually, patient, runtime};
use serde_json::Value;

/// `n` sequential GETs of `path`; how many each backend (`X-Backend`) answered. Checks that no
/// answer carries the load report.
async fn spread(lb: &Lb, path: &str, n: usize) -> BTreeMap<String, usize> {
    let c = client();
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        let resp = c.get(lb.url(path)).send().await.expect("request");
        assert!(
            resp.headers().get("endpoint-load-metrics").is_none(),
            "the load report reached the client"
        );
        let name = resp.headers()["x-backend"].to_str().unwrap().to_owned();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

/// The `load` object of the dynamic pool's member `addr` in `/api/status`.
async fn load_of(lb: &Lb, addr: &str) -> Value {
    let status = admin_status(&client(), lb.running.admin_addr).await;
    let pool = status["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "dynamic")
        .unwrap()
        .clone();
    pool["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["addr"] == addr)
        .map(|m| m["load"].clone())
        .unwrap_or(Value::Null)
}

fn conf(bs: &[&Backend], algorithm: &str) -> Conf {
    Conf::new(&bs.iter().map(|b| b.member()).collect::<Vec<_>>())
        .pool(&format!("algorithm = \"{algorithm}\""))
}

#[test]
fn reports_in_every_form_are_read_and_never_reach_clients() {
    let a = Backend::start("a");
    let lb = conf(&[&a], "reported-load")
        .pool("blackout_period = \"0s\"")
        .start();
    let forms = [
        (
            "TEXT application_utilization=0.5,rps_fractional=11,eps=1",
            11.0,
        ),
        (
            "TEXT application_utilization:0.5,rps_fractional:12,eps:1",
            12.0,
        ),
        ("TEXT cpu_utilization=0.4, rps_fractional = 13", 13.0),
        (
            r#"JSON {"application_utilization":0.5,"rps_fractional":14}"#,
            14.0,
        ),
        (r#"JSON {"cpuUtilization":0.5,"rpsFractional":15}"#, 15.0),
    ];
    runtime().block_on(async {
        for (form, rps) in forms {
            a.state.report(Some(form));
            spread(&lb, "/", 2).await;
            let load = load_of(&lb, &a.member()).await;
            assert_eq!(load["report"]["rps"], rps, "{form}: {load}");
            assert_eq!(load["malformed_reports"], 0, "{form}: {load}");
        }
        // The hyper path (a request with a body) strips it too.
        let resp = client()
            .post(lb.url("/count"))
            .body("12345")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("endpoint-load-metrics").is_none());
        assert_eq!(resp.text().await.unwrap(), "5");
    });
}

#[test]
fn the_report_is_stripped_whatever_the_algorithm() {
    let a = Backend::start("a");
    a.state
        .report(Some("TEXT application_utilization=0.5,rps_fractional=3"));
    for algorithm in ["round-robin", "peak-ewma", "least-connections"] {
        let lb = conf(&[&a], algorithm).start();
        runtime().block_on(async {
            spread(&lb, "/", 3).await;
            let resp = client()
                .post(lb.url("/count"))
                .body("x")
                .send()
                .await
                .unwrap();
            assert!(
                resp.headers().get("endpoint-load-metrics").is_none(),
                "{algorithm}"
            );
            // Other pools still sample one report a second for the dashboard.
            assert_eq!(load_of(&lb, &a.member()).await["report"]["rps"], 3.0);
        });
    }
}

#[test]
fn a_malformed_report_is_ignored_and_counted() {
    let a = Backend::start("a");
    let lb = conf(&[&a], "reported-load")
        .pool("blackout_period = \"0s\"")
        .start();
    runtime().block_on(async {
        a.state
            .report(Some("TEXT application_utilization=0.5,rps_fractional=7"));
        spread(&lb, "/", 1).await;
        for bad in [
            "TEXT rps_fractional=lots",
            "TEXT eps=1,eps=2",
            "BIN AAAA",
            "JSON {",
        ] {
            a.state.report(Some(bad));
            assert_eq!(
                spread(&lb, "/", 2).await["a"],
                2,
                "answers still flow ({bad})"
            );
        }
        let load = load_of(&lb, &a.member()).await;
        assert_eq!(load["malformed_reports"], 8, "{load}");
        assert_eq!(load["reports"], 1, "{load}");
        assert_eq!(
            load["report"]["rps"], 7.0,
            "the last valid report stands: {load}"
        );
        let metrics = client()
            .get(format!("http://{}/metrics", lb.running.admin_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = format!(
            "balancer_orca_reports_total{{pool=\"dynamic\",member=\"{}\",result=\"malformed\"}} 8",
            a.member()
        );
        assert!(metrics.contains(&line), "{line} not in\n{metrics}");
    });
}

const BUSY: &str = "TEXT application_utilization=0.9,rps_fractional=100";
const IDLE: &str = "TEXT application_utilization=0.1,rps_fractional=100";

#[test]
fn weights_follow_the_reports() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = conf(&[&a, &b], "reported-load")
        .pool("blackout_period = \"0s\"")
        .pool("weight_update_period = \"100ms\"")
        .start();
    runtime().block_on(async {
        a.state.report(Some(BUSY));
        b.state.report(Some(IDLE));
        // Weights 111 and 1000: a gets about 1 in 10.
        eventually("the busy member gets a small share", async || {
            spread(&lb, "/", 100).await.get("a").copied().unwrap_or(0) <= 20
        })
        .await;
        let load = load_of(&lb, &a.member()).await;
        assert_eq!(load["weight_state"], "fresh", "{load}");
        a.state.report(Some(IDLE));
        b.state.report(Some(BUSY));
        eventually("the shares follow the new reports", async || {
            spread(&lb, "/", 100).await.get("b").copied().unwrap_or(0) <= 20
        })
        .await;
    });
}

#[test]
fn weights_wait_out_the_blackout() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = conf(&[&a, &b], "reported-load")
        .pool("blackout_period = \"10m\"")
        .pool("weight_update_period = \"100ms\"")
        .start();
    a.state.report(Some(BUSY));
    b.state.report(Some(IDLE));
    runtime().block_on(async {
        // In blackout both count as the mean: plain alternation.
        for _ in 0..5 {
            let counts = spread(&lb, "/", 20).await;
            assert_eq!((counts["a"], counts["b"]), (10, 10), "{counts:?}");
        }
        let load = load_of(&lb, &a.member()).await;
        assert_eq!(load["weight_state"], "blackout", "{load}");
        assert!(load["reported_weight"].as_f64().unwrap() > 100.0, "{load}");
    });
}

#[test]
fn weights_expire_without_reports() {
    let (a, b) = (Backend::start("a"), Backend::start("b"));
    let lb = conf(&[&a, &b], "reported-load")
        .pool("blackout_period = \"0s\"")
        .pool("weight_expiration_period = \"300ms\"")
        .pool("weight_update_period = \"100ms\"")
        .start();
    a.state.report(Some(BUSY));
    b.state.report(Some(IDLE));
    runtime().block_on(async {
        eventually("the busy member gets a small share", async || {
            spread(&lb, "/", 100).await.get("a").copied().unwrap_or(0) <= 20
        })
        .await;
        a.state.report(None);
        b.state.report(None);
        eventually("without reports the weights expire", async || {
            load_of(&lb, &a.member()).await["weight_state"] == "stale"
        })
        .await;
        eventually("and every member counts alike again", async || {
            let counts = spread(&lb, "/", 20).await;
            counts.get("a") == Some(&10)
        })
        .await;
        let metrics = client()
            .get(format!("http://{}/metrics", lb.running.admin_addr))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains("balancer_wrr_rr_fallback{pool=\"dynamic\"} 1"),
            "{metrics}"
        );
    });
}

/// Registers `addr` in the dynamic pool through the admin API.
async fn register(lb: &Lb, addr: &str) {
    let url = format!(
        "http://{}/api/pools/dynamic/members/{addr}?ttl=600",
        lb.running.admin_addr
    );
    let r = client().put(url).bearer_auth("t0ken").send().await.unwrap();
    assert_eq!(r.status(), 200);
    eventually("the new member is listed", async || {
        !load_of(lb, addr).await.is_null()
    })
    .await;
}

#[test]
fn reported_load_does_not_flood_a_member_that_just_joined() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let blackout = patient(Duration::from_secs(3));
    let lb = conf(&[&a, &b], "reported-load")
        .top("admin_token = \"t0ken\"")
        .pool(&format!("blackout_period = \"{}ms\"", blackout.as_millis()))
        .pool("weight_update_period = \"100ms\"")
        .start();
    a.state.report(Some(BUSY));
    b.state.report(Some(BUSY));
    // The newcomer reports being nearly idle: weight 90x the others'.
    c.state
        .report(Some("TEXT application_utilization=0.01,rps_fractional=100"));
    runtime().block_on(async {
        eventually_fresh(&lb, &[&a, &b]).await;
        register(&lb, &c.member()).await;
        let counts = spread(&lb, "/", 60).await;
        let load = load_of(&lb, &c.member()).await;
        assert_eq!(
            load["weight_state"], "blackout",
            "precondition: still in blackout"
        );
        let got = counts.get("c").copied().unwrap_or(0);
        assert!(
            (15..=25).contains(&got),
            "the newcomer counts as the mean: {counts:?}"
        );
    });
}

async fn eventually_fresh(lb: &Lb, bs: &[&Backend]) {
    eventually_within_patience("reported weights become fresh", async || {
        spread(lb, "/", 4).await;
        let mut fresh = true;
        for b in bs {
            fresh &= load_of(lb, &b.member()).await["weight_state"] == "fresh";
        }
        fresh
    })
    .await;
}

async fn eventually_within_patience(what: &str, check: impl AsyncFnMut() -> bool) {
    common::eventually_within(Duration::from_secs(30), what, check).await;
}

#[test]
fn peak_ewma_prefers_the_fast_member() {
    let slow = Backend::start_with(
        "slow",
        BackendOpts {
            // Far above any scheduling hiccup of a loaded test machine, which would make the
            // fast member look slow for a moment (a peak).
            delay: Duration::from_millis(200),
        },
    );
    let fast = Backend::start("fast");
    let lb = conf(&[&slow, &fast], "peak-ewma").start();
    runtime().block_on(async {
        // Both get measured, then the fast one takes (nearly) everything.
        eventually("the fast member takes nearly every request", async || {
            spread(&lb, "/", 50).await.get("slow").copied().unwrap_or(0) <= 2
        })
        .await;
        let est = load_of(&lb, &slow.member()).await["ewma_ms"]
            .as_f64()
            .unwrap();
        assert!(
            est >= 10.0,
            "the slow member's estimate shows its delay: {est}"
        );
    });
}

#[test]
fn peak_ewma_does_not_prefer_a_member_that_fails_fast() {
    let failing = Backend::start("failing");
    let ok = Backend::start_with(
        "ok",
        BackendOpts {
            delay: Duration::from_millis(5),
        },
    );
    failing.state.fail_with(500);
    let lb = conf(&[&failing, &ok], "peak-ewma")
        .pool("max_fails = 0")
        .start();
    runtime().block_on(async {
        eventually("the failing member gets (nearly) nothing", async || {
            spread(&lb, "/", 50)
                .await
                .get("failing")
                .copied()
                .unwrap_or(0)
                <= 2
        })
        .await;
    });
}

#[test]
fn peak_ewma_does_not_flood_a_member_that_just_joined() {
    let (a, b, c) = (
        Backend::start("a"),
        Backend::start("b"),
        Backend::start("c"),
    );
    let lb = conf(&[&a, &b], "peak-ewma")
        .top("admin_token = \"t0ken\"")
        .start();
    runtime().block_on(async {
        eventually("both members are measured at about 500 ms", async || {
            spread(&lb, "/slow?ms=500", 1).await;
            !load_of(&lb, &a.member()).await["ewma_ms"].is_null()
                && !load_of(&lb, &b.member()).await["ewma_ms"].is_null()
        })
        .await;
        register(&lb, &c.member()).await;
        // One wave of 30 concurrent requests, all picked before any answers: costed as the
        // member it is compared with, the newcomer takes its third (10). With a default
        // estimate (30 ms) below the others' real ones it would win every draw it is in
        // until it had 16 in flight: 15 to 22 of the 30 when measured.
        let wave: Vec<_> = (0..30)
            .map(|_| {
                let url = lb.url("/slow?ms=1000");
                tokio::spawn(async move {
                    let r = client().get(url).send().await.unwrap();
                    r.headers()["x-backend"].to_str().unwrap().to_owned()
                })
            })
            .collect();
        let mut to_c = 0;
        for t in wave {
            to_c += usize::from(t.await.unwrap() == "c");
        }
        assert!(
            to_c <= 12,
            "the newcomer took {to_c} of 30 concurrent requests"
        );
    });
}

#[test]
fn the_report_is_stripped_from_a_hedge_that_wins() {
    // The frozen member never answers, so every request that goes to it first is answered by
    // a hedge to `live`, which reports its load: the hedge's answer must lose the header too.
    let frozen = common::FrozenBackend::start();
    let live = Backend::start("live");
    live.state
        .report(Some("TEXT application_utilization=0.5,rps_fractional=3"));
    let lb = Conf::new(&[frozen.member(), live.member()])
        .pool("max_fails = 0")
        .pool(r#"response_timeout = "500ms""#)
        .pool(r#"hedge = { delay_min = "50ms", delay_max = "100ms", budget = 100 }"#)
        .start();
    let won = || lb.member(live.addr).unwrap().hedge.won();
    runtime().block_on(async {
        let c = client();
        // GET goes the direct path, a PUT with a kept body through hyper; of four requests in
        // a row, round robin sends at least one to the frozen member first.
        for method in ["GET", "PUT"] {
            let before = won();
            for i in 0..4 {
                let resp = match method {
                    "GET" => c.get(lb.url("/")).send().await.unwrap(),
                    _ => c.put(lb.url("/count")).body("x").send().await.unwrap(),
                };
                assert_eq!(resp.status(), 200, "{method} {i}");
                assert_eq!(resp.headers()["x-backend"], "live", "{method} {i}");
                assert!(
                    resp.headers().get("endpoint-load-metrics").is_none(),
                    "{method} {i}"
                );
            }
            assert!(won() > before, "{method}: a hedge answered at least one");
        }
    });
}
