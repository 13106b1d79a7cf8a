//! What every app binary does for load-aware balancing and the lab: the ORCA load report on
//! every response, and the fault knobs, set by `LAB_*` at start or through `PUT /fault` with
//! the admin token.
//!
//! Each app's `tests/faults.rs` includes this file with `#[path]`, so these tests run against
//! that app's binary, described by its `common::BIN`. No test here times anything: a knob's
//! effect is checked by what it changes in the answers.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{BIN, Proc, TempDir, client, spawn};

const TOKEN: &str = "t0k-faults";

/// The binary with `env` added to its clean environment.
fn start(tag: &str, env: &[(&str, &str)]) -> (TempDir, Proc) {
    let dir = TempDir::new(tag);
    let mut cmd = BIN.command(dir.path(), tag, "0s");
    cmd.envs(env.iter().copied());
    let proc = spawn(cmd);
    (dir, proc)
}

fn url(proc: &Proc, path: &str) -> String {
    format!("http://{}{path}", proc.addr)
}

/// The fields of an `endpoint-load-metrics` TEXT header; panics if it is not one.
fn load_report(res: &reqwest::Response) -> BTreeMap<String, f64> {
    let value = res
        .headers()
        .get("endpoint-load-metrics")
        .unwrap_or_else(|| panic!("no load report on {}", res.url()))
        .to_str()
        .unwrap();
    let fields = value
        .strip_prefix("TEXT ")
        .unwrap_or_else(|| panic!("not the TEXT form: {value:?}"));
    let mut report = BTreeMap::new();
    for field in fields.split(',') {
        let (key, number) = field
            .split_once('=')
            .unwrap_or_else(|| panic!("{field:?} in {value:?}"));
        let number: f64 = number.parse().unwrap_or_else(|_| panic!("{value:?}"));
        assert!(number.is_finite() && number >= 0.0, "{value:?}");
        assert!(report.insert(key.to_owned(), number).is_none(), "{value:?}");
    }
    let keys: Vec<&str> = report.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["application_utilization", "eps", "rps_fractional"],
        "{value:?}"
    );
    report
}

async fn put_fault(proc: &Proc, token: Option<&str>, body: &str) -> (u16, Value) {
    let mut req = client().put(url(proc, "/fault")).body(body.to_owned());
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

async fn healthz(proc: &Proc) -> (u16, Value) {
    let res = client().get(url(proc, "/healthz")).send().await.unwrap();
    (res.status().as_u16(), res.json().await.unwrap())
}

/// The app's page or API, `/healthz`, a 404 and `/fault` all carry a well-formed report, and
/// it counts the request it rides on.
#[tokio::test]
async fn every_response_carries_a_load_report() {
    let (_dir, proc) = start("orca", &[]);
    for path in [BIN.serves, "/healthz", "/no-such-page", "/fault"] {
        let res = client().get(url(&proc, path)).send().await.unwrap();
        let report = load_report(&res);
        assert!(report["rps_fractional"] > 0.0, "{path}: {report:?}");
        assert!(
            report["application_utilization"] > 0.0,
            "{path}: {report:?}"
        );
    }
}

/// `LAB_*` at start: `/healthz` shows the knobs, an error rate of 1 answers every request 500
/// (marked as injected, and counted in `eps`), while `/healthz` itself still passes.
#[tokio::test]
async fn knobs_from_the_environment_show_in_healthz_and_apply() {
    let env = [
        ("LAB_DELAY", "20ms"),
        ("LAB_CPU", "2ms"),
        ("LAB_ERROR_RATE", "1"),
    ];
    let (_dir, proc) = start("knobs-env", &env);
    let (status, body) = healthz(&proc).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["faults"],
        json!({"delay_ms": 20, "cpu_ms": 2, "error_rate": 1.0, "unhealthy": false})
    );
    // The report is cached for up to 100 ms: the 500s show in `eps` within a few requests.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = client().get(url(&proc, BIN.serves)).send().await.unwrap();
        assert_eq!(res.status(), 500);
        assert_eq!(res.headers()["x-lab-fault"], "error");
        if load_report(&res)["eps"] > 0.0 {
            break;
        }
        assert!(Instant::now() < deadline, "the 500s never showed in eps");
    }
    // The knobs are readable without a token, and no token means no changes.
    let res = client().get(url(&proc, "/fault")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap()["delay_ms"], 20);
    let (status, body) = put_fault(&proc, Some(TOKEN), r#"{"error_rate": 0}"#).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("BALANCER_ADMIN_TOKEN")
    );
}

/// `LAB_UNHEALTHY=1`: `/healthz` answers 503 `unhealthy`; the app itself still serves.
#[tokio::test]
async fn unhealthy_at_start_fails_healthz_only() {
    let (_dir, proc) = start("knobs-sick", &[("LAB_UNHEALTHY", "1")]);
    let (status, body) = healthz(&proc).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "unhealthy");
    assert_eq!(body["faults"]["unhealthy"], true);
    let res = client().get(url(&proc, BIN.serves)).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

/// `PUT /fault` with the token turns knobs at run time (a subset at a time), `/healthz` and
/// the answers follow, and turning them back restores the replica.
#[tokio::test]
async fn knobs_turn_at_run_time_with_the_token() {
    let (_dir, proc) = start("knobs-put", &[("BALANCER_ADMIN_TOKEN", TOKEN)]);
    let (status, body) = put_fault(&proc, Some(TOKEN), r#"{"error_rate": 1.0}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"delay_ms": 0, "cpu_ms": 0, "error_rate": 1.0, "unhealthy": false})
    );
    let res = client().get(url(&proc, BIN.serves)).send().await.unwrap();
    assert_eq!(res.status(), 500);

    let (status, body) =
        put_fault(&proc, Some(TOKEN), r#"{"unhealthy": true, "delay_ms": 5}"#).await;
    assert_eq!(status, 200, "{body}");
    let (status, health) = healthz(&proc).await;
    assert_eq!(status, 503);
    assert_eq!(
        health["faults"],
        json!({"delay_ms": 5, "cpu_ms": 0, "error_rate": 1.0, "unhealthy": true})
    );

    let reset = r#"{"delay_ms": 0, "cpu_ms": 0, "error_rate": 0, "unhealthy": false}"#;
    assert_eq!(put_fault(&proc, Some(TOKEN), reset).await.0, 200);
    assert_eq!(healthz(&proc).await.0, 200);
    let res = client().get(url(&proc, BIN.serves)).send().await.unwrap();
    assert_eq!(res.status(), 200);
}

/// Without the token, or with a wrong one, nothing changes (401); bad bodies are 400 and bad
/// values 422, naming what is wrong.
#[tokio::test]
async fn run_time_changes_are_refused_without_the_token_or_with_bad_values() {
    let (_dir, proc) = start("knobs-deny", &[("BALANCER_ADMIN_TOKEN", TOKEN)]);
    let change = r#"{"error_rate": 1}"#;
    for token in [None, Some("wrong")] {
        let res = client()
            .put(url(&proc, "/fault"))
            .body(change)
            .header(
                "authorization",
                token.map_or(String::new(), |t| format!("Bearer {t}")),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{token:?}");
        assert_eq!(res.headers()["www-authenticate"], "Bearer");
    }
    let (status, body) = put_fault(&proc, Some(TOKEN), "error_rate=1").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) =
        put_fault(&proc, Some(TOKEN), r#"{"error_rate": 2, "cpu_ms": 5000}"#).await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("error_rate 2") && message.contains("cpu_ms 5000"),
        "{message}"
    );
    let (status, body) = put_fault(&proc, Some(TOKEN), r#"{"slow": true}"#).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("slow"), "{body}");

    // None of it changed anything.
    let (status, health) = healthz(&proc).await;
    assert_eq!(status, 200);
    assert_eq!(health["faults"]["error_rate"], 0.0);
    let res = client().get(url(&proc, BIN.serves)).send().await.unwrap();
    assert_eq!(res.status(), 200);
}
