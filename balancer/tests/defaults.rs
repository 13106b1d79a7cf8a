//! What the balancer does with settings left at their defaults: the default routes split
//! `/api/...` from everything else, and `X-Upstream` is not sent unless asked for.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failed test

mod common;

use common::{Backend, Conf, client, runtime};

#[test]
fn default_routes_send_api_paths_to_dynamic_and_everything_else_to_static() {
    let (stat, dynamic) = (Backend::start("STATIC"), Backend::start("DYNAMIC"));
    let lb = Conf::new(&[dynamic.member()])
        .top(&format!("static_backend = {:?}", stat.member()))
        .default_routes()
        .start();
    let cases = [
        ("/api/student", "DYNAMIC"),
        ("/api/student/", "DYNAMIC"),
        ("/api/student?id=7", "DYNAMIC"),
        ("/api/", "DYNAMIC"),
        ("/api/courses/3", "DYNAMIC"),
        ("/", "STATIC"),
        ("/index.html", "STATIC"),
        ("/api", "STATIC"),
        ("/apix", "STATIC"),
        ("/apix/student", "STATIC"),
        ("/student", "STATIC"),
    ];
    runtime().block_on(async {
        let c = client();
        for (path, want) in cases {
            let resp = c.get(lb.url(path)).send().await.unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(resp.headers()["x-backend"], want, "{path}");
        }
    });
}

#[test]
fn x_upstream_is_sent_only_when_upstream_header_is_on() {
    let b = Backend::start("a");
    let off = Conf::new(&[b.member()]).without_upstream_header().start();
    let on = Conf::new(&[b.member()]).start();
    runtime().block_on(async {
        let c = client();
        for _ in 0..3 {
            let resp = c.get(off.url("/")).send().await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers().get("x-upstream"), None, "off by default");
        }
        let resp = c.get(on.url("/")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-upstream"], b.member().as_str());
    });
}
