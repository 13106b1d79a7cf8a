//! `PUT/GET /api/pools/{pool}/members/{member}/fault`: the admin API relays a member's fault
//! knobs to that replica's `/fault`, with the balancer's token, and answers with what the
//! replica said. The replicas here are small stubs that record what reached them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::routing::any;
use serde_json::{Value, json};

mod common;
use common::{Conf, client, refused_addr, runtime};

const TOKEN: &str = "relay-s3cret";

/// What one stub replica received: method, `Authorization`, body.
type Seen = Arc<Mutex<Vec<(Method, String, String)>>>;

/// A replica stub answering `/fault` with `status` and `{"replica": name, "got": body}`.
struct Stub {
    addr: SocketAddr,
    seen: Seen,
}

impl Stub {
    fn start(rt: &tokio::runtime::Runtime, name: &'static str, status: StatusCode) -> Stub {
        let seen: Seen = Arc::default();
        let app = Router::new()
            .route(
                "/fault",
                any(
                    move |State(seen): State<Seen>,
                          method: Method,
                          headers: HeaderMap,
                          body: Bytes| async move {
                        let auth = headers
                            .get("authorization")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        let body = String::from_utf8(body.to_vec()).unwrap();
                        seen.lock().unwrap().push((method, auth, body.clone()));
                        (status, axum::Json(json!({"replica": name, "got": body})))
                    },
                ),
            )
            .with_state(Arc::clone(&seen));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
        Stub { addr, seen }
    }

    fn seen(&self) -> Vec<(Method, String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

/// A balancer with an admin token over `members`, and its admin base URL.
fn balancer(members: &[SocketAddr]) -> (common::Lb, String) {
    let members: Vec<String> = members.iter().map(ToString::to_string).collect();
    let lb = Conf::new(&members)
        .top(&format!("admin_token = {TOKEN:?}"))
        .start();
    let admin = format!("http://{}", lb.running.admin_addr);
    (lb, admin)
}

async fn relay(admin: &str, member: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let url = format!("{admin}/api/pools/dynamic/members/{member}/fault");
    let mut req = client().put(url).body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap())
}

/// The change reaches the named member only, with the balancer's token and the body as sent,
/// and its answer comes back; `GET` reads the knobs the same way.
#[test]
fn the_relay_reaches_the_named_member_with_the_token() {
    let rt = runtime();
    let a = Stub::start(&rt, "a", StatusCode::OK);
    let b = Stub::start(&rt, "b", StatusCode::OK);
    let (_lb, admin) = balancer(&[a.addr, b.addr]);
    rt.block_on(async {
        let body = r#"{"delay_ms": 50}"#;
        let (status, answer) = relay(&admin, &b.addr.to_string(), Some(TOKEN), body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer, json!({"replica": "b", "got": body}));

        let url = format!("{admin}/api/pools/dynamic/members/{}/fault", b.addr);
        let res = client().get(url).bearer_auth(TOKEN).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Value>().await.unwrap()["replica"], "b");
    });
    let bearer = format!("Bearer {TOKEN}");
    assert_eq!(
        b.seen(),
        [
            (
                Method::PUT,
                bearer.clone(),
                r#"{"delay_ms": 50}"#.to_owned()
            ),
            (Method::GET, bearer, String::new()),
        ]
    );
    assert!(a.seen().is_empty(), "{:?}", a.seen());
}

/// No token or a wrong one: 401; an unknown pool or member: 404; nothing reaches a replica.
#[test]
fn the_relay_needs_the_token_and_a_known_member() {
    let rt = runtime();
    let a = Stub::start(&rt, "a", StatusCode::OK);
    let (_lb, admin) = balancer(&[a.addr]);
    rt.block_on(async {
        let member = a.addr.to_string();
        assert_eq!(relay(&admin, &member, None, "{}").await.0, 401);
        assert_eq!(relay(&admin, &member, Some("wrong"), "{}").await.0, 401);
        let (status, answer) = relay(&admin, "127.0.0.1:1", Some(TOKEN), "{}").await;
        assert_eq!(status, 404, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(&member),
            "{answer}"
        );
        let url = format!("{admin}/api/pools/nope/members/{member}/fault");
        let res = client()
            .put(url)
            .bearer_auth(TOKEN)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
    });
    assert!(a.seen().is_empty(), "{:?}", a.seen());
}

/// The replica's verdict on a bad body comes back as is (422); a replica that refuses the
/// balancer's token or cannot be reached is the balancer's upstream failing: 502.
#[test]
fn replica_failures_are_told_apart() {
    let rt = runtime();
    let picky = Stub::start(&rt, "picky", StatusCode::UNPROCESSABLE_ENTITY);
    let other_token = Stub::start(&rt, "other-token", StatusCode::UNAUTHORIZED);
    let gone = refused_addr();
    let (_lb, admin) = balancer(&[picky.addr, other_token.addr, gone]);
    rt.block_on(async {
        let (status, answer) = relay(&admin, &picky.addr.to_string(), Some(TOKEN), "{}").await;
        assert_eq!(status, 422, "{answer}");
        assert_eq!(answer["replica"], "picky");

        let member = other_token.addr.to_string();
        let (status, answer) = relay(&admin, &member, Some(TOKEN), "{}").await;
        assert_eq!(status, 502, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("token"),
            "{answer}"
        );

        let (status, answer) = relay(&admin, &gone.to_string(), Some(TOKEN), "{}").await;
        assert_eq!(status, 502, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("cannot reach"),
            "{answer}"
        );
    });
}
