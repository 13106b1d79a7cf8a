//! A fake balancer admin endpoint on 127.0.0.1:0 that records every request it gets.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    /// When it arrived.
    pub at: Instant,
    /// `PUT`, `DELETE`, ...
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Raw query, empty when none.
    pub query: String,
    /// The `Authorization` header.
    pub auth: Option<String>,
    /// For a DELETE: the app's `/healthz` status fetched while handling it.
    pub app_health: Option<u16>,
}

#[derive(Clone, Default)]
struct Shared {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// What PUTs are answered with.
    put_status: Arc<AtomicU16>,
    /// The app's base URL, probed during a DELETE.
    app: Arc<Mutex<Option<String>>>,
}

/// The running fake.
pub(crate) struct FakeBalancer {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Shared,
}

impl FakeBalancer {
    /// Starts answering PUTs with 200 and DELETEs with 204.
    pub(crate) async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Shared::default();
        shared.put_status.store(200, Ordering::SeqCst);
        let app = Router::new().fallback(record).with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, shared }
    }

    /// The `BALANCER_REGISTER_URL` of pool `pool` on this fake.
    pub(crate) fn url(&self, pool: &str) -> String {
        format!("http://{}/api/pools/{pool}/members", self.addr)
    }

    /// Answer later PUTs with `status`.
    pub(crate) fn answer_puts_with(&self, status: u16) {
        self.shared.put_status.store(status, Ordering::SeqCst);
    }

    /// Probe `base_url/healthz` whenever a DELETE arrives.
    pub(crate) fn probe_app_on_delete(&self, base_url: &str) {
        *self.shared.app.lock().unwrap() = Some(base_url.to_owned());
    }

    /// Everything recorded so far.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Waits (with a deadline) until `pred` holds for the recorded requests.
    pub(crate) async fn wait_for(&self, what: &str, pred: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let seen = self.seen();
            if pred(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {seen:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Counts requests with `method`.
pub(crate) fn count(seen: &[Seen], method: &str) -> usize {
    seen.iter().filter(|s| s.method == method).count()
}

async fn record(State(s): State<Shared>, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let app = s.app.lock().unwrap().clone();
    let app_health = match (method.as_str(), app) {
        ("DELETE", Some(app)) => Some(
            reqwest::get(format!("{app}/healthz"))
                .await
                .map_or(0, |r| r.status().as_u16()),
        ),
        _ => None,
    };
    let seen = Seen {
        at: Instant::now(),
        method,
        path: req.uri().path().to_owned(),
        query: req.uri().query().unwrap_or_default().to_owned(),
        auth: req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        app_health,
    };
    let is_put = seen.method == "PUT";
    s.seen.lock().unwrap().push(seen);
    if is_put {
        let status = StatusCode::from_u16(s.put_status.load(Ordering::SeqCst)).unwrap();
        (status, "{\"registered\":true}").into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}
