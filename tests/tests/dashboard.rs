//! The balancer's dashboard as a lab instrument, in headless Chromium against the real stack:
//! a load run started from the page fills the live chart and the shares, a replica killed
//! during the load leaves the chart, switching the algorithm with one replica slowed lowers
//! its share (slowed by its fault knob through the admin API, then by the experiment panel), and the
//! page fits 1280 px and a phone without sideways scrolling.
//!
//! One stack (with an admin token) and one browser for all steps; each step saves a
//! screenshot under `target/browser-screenshots/dashboard/`. Without docker, chromium or
//! chromedriver the test prints why and passes, except under CI (`CI=true`), where it fails.

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use fantoccini::Locator;
use lab_tests::browser::{self, Browser};
use lab_tests::stack::Stack;
use lab_tests::{docker, http};
use serde_json::Value;

const API_REPLICAS: usize = 3;
const TOKEN: &str = "dashboard-test-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_drives_load_and_shows_it_in_headless_chromium() {
    if !browser::available_or_skip("the_dashboard_drives_load_and_shows_it_in_headless_chromium") {
        return;
    }
    let started = Instant::now();
    let stack = Stack::new("dashboard").unwrap();
    stack.setup_with(&env(), &[]).unwrap();
    scale_api(&stack, API_REPLICAS);
    eprintln!("stack ready in {:.1}s", started.elapsed().as_secs_f64());

    let mut b = Browser::start_with_screenshots("dashboard", Some("dashboard"))
        .await
        .unwrap();
    b.client
        .goto(&format!("http://127.0.0.1:{}/", stack.admin_port))
        .await
        .unwrap();
    set_token(&b).await;

    a_load_started_from_the_page_fills_the_chart_and_the_shares(&mut b).await;
    the_page_fits_1280px_and_a_phone_while_the_load_runs(&mut b).await;
    a_replica_killed_during_the_load_leaves_the_chart(&mut b, &stack).await;
    scale_api(&stack, API_REPLICAS);
    a_slowed_replica_loses_share_when_the_algorithm_switches(&mut b, &stack).await;
    the_experiment_panel_compares_algorithms_with_one_replica_slow(&mut b).await;

    eprintln!(
        "screenshots in {}; whole test {:.1}s",
        b.screenshots_dir().display(),
        started.elapsed().as_secs_f64()
    );
    b.close().await.unwrap();
}

fn scale_api(stack: &Stack, n: usize) {
    stack
        .setup_with(&env(), &["scale", &n.to_string()])
        .unwrap();
    stack
        .wait_for_pool("dynamic", n, Duration::from_secs(40))
        .unwrap();
}

/// The stack's settings: an admin token, and hedging off, so that a slowed replica's share is
/// the algorithm's alone (with hedging on, its first late answers are also sent to the others
/// until its hedge delay has learnt how slow it is: lab.md chapters 3 and 10).
fn env() -> [(&'static str, String); 2] {
    [
        ("BALANCER_ADMIN_TOKEN", TOKEN.into()),
        ("BALANCER_HEDGE", "false".into()),
    ]
}

async fn set_token(b: &Browser) {
    let input = b.client.find(Locator::Css("#token")).await.unwrap();
    input.send_keys(TOKEN).await.unwrap();
    b.client
        .find(Locator::Css("#token-form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Fills the load form and starts a run.
async fn start_load(b: &Browser, path: &str, concurrency: u32, rate: Option<u32>, seconds: u32) {
    let set = format!(
        "var f = document.getElementById('load-form').elements;
         f.path.value = {path:?}; f.concurrency.value = '{concurrency}';
         f.rate.value = '{}'; f.seconds.value = '{seconds}'; return null;",
        rate.map_or(String::new(), |r| r.to_string())
    );
    b.js(&set).await.unwrap();
    b.client
        .find(Locator::Css("#load-start"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// `{member: share %}` of the dynamic pool's chart legend (the last minute).
async fn legend(b: &Browser) -> Vec<(String, u64, bool)> {
    let v = b
        .js("return Array.from(document.querySelectorAll('[data-chart=dynamic] .legend li[data-member]'))
               .map(function (li) { return [li.dataset.member, Number(li.dataset.share),
                                             li.classList.contains('gone')]; });")
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_owned(),
                e[1].as_u64().unwrap(),
                e[2].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The load report's `{member: share %}` and its state.
async fn report(b: &Browser) -> Value {
    b.js("var box = document.getElementById('load-report');
          return { state: box.dataset.state || '', run: box.dataset.run || '',
                   shares: Array.from(box.querySelectorAll('.shares li')).map(function (li) {
                     return [li.dataset.member, Number(li.dataset.share)]; }) };")
        .await
        .unwrap()
}

/// The newest second of the chart in which `member` has a bar, and the newest of all.
async fn last_bars(b: &Browser, member: &str) -> (u64, u64) {
    let v = b
        .js(&format!(
            "var rects = Array.from(document.querySelectorAll('[data-chart=dynamic] svg.bars rect[data-member]'));
             var t = function (r) {{ return Number(r.dataset.t); }};
             return [Math.max.apply(null, [0].concat(rects.filter(function (r) {{
                       return r.dataset.member === {member:?}; }}).map(t))),
                     Math.max.apply(null, [0].concat(rects.map(t)))];"
        ))
        .await
        .unwrap();
    (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
}

async fn a_load_started_from_the_page_fills_the_chart_and_the_shares(b: &mut Browser) {
    start_load(b, "/api/student", 6, None, 120).await;
    let shares = b
        .wait_until(
            Duration::from_secs(20),
            "three members sharing the load in the chart and the report",
            || async {
                let l = legend(b).await;
                let r = report(b).await;
                let reported = r["shares"].as_array().map_or(0, Vec::len);
                let drawn = l.iter().filter(|(_, share, _)| *share > 0).count();
                Ok(
                    (r["state"] == "running" && drawn == API_REPLICAS && reported == API_REPLICAS)
                        .then_some(l),
                )
            },
        )
        .await
        .unwrap();
    // Round-robin: each a third, give or take the last seconds' rounding.
    for (m, share, _) in &shares {
        assert!(
            (20..=46).contains(share),
            "{m} has {share}% of the minute: {shares:?}"
        );
    }
    let rects = b
        .js("return document.querySelectorAll('[data-chart=dynamic] svg.bars rect').length;")
        .await
        .unwrap();
    assert!(rects.as_u64().unwrap() >= 3, "bars drawn: {rects}");
    b.screenshot("load-running").await.unwrap();
}

async fn the_page_fits_1280px_and_a_phone_while_the_load_runs(b: &mut Browser) {
    for (w, h, shot) in [(1280, 1000, "fits-1280"), (390, 844, "fits-phone")] {
        b.client.set_window_size(w, h).await.unwrap();
        b.js("window.scrollTo(0, 0); return null;").await.unwrap();
        // Let a poll redraw at the new width.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        b.dashboard_fits(w.into()).await.unwrap();
        b.screenshot(shot).await.unwrap();
    }
    b.js("document.getElementById('controls').scrollIntoView(); return null;")
        .await
        .unwrap();
    b.screenshot("fits-phone-controls").await.unwrap();
    b.client.set_window_size(1280, 1000).await.unwrap();
    b.js("window.scrollTo(0, 0); return null;").await.unwrap();
}

/// The address (in the compose network) of a container.
fn address(container: &str) -> String {
    docker::inspect(
        container,
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    )
    .unwrap()
}

async fn a_replica_killed_during_the_load_leaves_the_chart(b: &mut Browser, stack: &Stack) {
    let victim = stack.containers("student-api").unwrap().remove(0);
    let addr = format!("{}:3000", address(&victim));
    assert!(
        legend(b)
            .await
            .iter()
            .any(|(m, _, gone)| *m == addr && !gone)
    );
    docker::docker(&["kill", &victim]).unwrap();
    let killed = Instant::now();
    b.wait_until(
        Duration::from_secs(30),
        "the killed replica struck through in the legend and no bar of it for 3 s",
        || async {
            let gone = legend(b)
                .await
                .iter()
                .any(|(m, _, gone)| *m == addr && *gone);
            let (its, newest) = last_bars(b, &addr).await;
            Ok((gone && newest >= its + 3).then_some(()))
        },
    )
    .await
    .unwrap();
    eprintln!(
        "killed replica {addr} left the chart after {:.1}s",
        killed.elapsed().as_secs_f64()
    );
    let events = b.text("#events").await.unwrap();
    assert!(events.contains(&addr), "the event feed names it: {events}");
    b.screenshot("replica-killed").await.unwrap();
}

/// The balancer's `/api/status` over the published admin port.
fn status(stack: &Stack) -> Value {
    serde_json::from_slice(&http::get(stack.admin_port, "/api/status").unwrap().body).unwrap()
}

async fn choose_algorithm(b: &Browser, algorithm: &str) {
    b.js(&format!(
        "var f = document.querySelector('[data-chart=dynamic] form.algo');
         f.querySelector('select').value = {algorithm:?};
         f.querySelector('button:not([type=button])').click(); return null;"
    ))
    .await
    .unwrap();
}

/// Share (%) of `member` in a finished load run of `seconds`, started from the page.
async fn share_under_load(b: &Browser, member: &str, seconds: u32) -> u64 {
    let before = report(b).await["run"].clone();
    start_load(b, "/api/student", 8, None, seconds).await;
    let r = b
        .wait_until(
            Duration::from_secs(u64::from(seconds) + 20),
            "the load run to end",
            || async {
                let r = report(b).await;
                Ok((r["run"] != before && r["state"] == "ended").then_some(r))
            },
        )
        .await
        .unwrap();
    r["shares"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s[0] == member)
        .map_or(0, |s| s[1].as_u64().unwrap())
}

async fn a_slowed_replica_loses_share_when_the_algorithm_switches(b: &mut Browser, stack: &Stack) {
    // Stop the long run of the first steps.
    b.client
        .find(Locator::Css("#load-stop"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let slow = stack.containers("student-api").unwrap().remove(0);
    let addr = format!("{}:3000", address(&slow));
    // A steady 50 ms (the replica's fault knob, through the balancer's relay) makes it slow
    // without failing its health checks, as the lab's chapter 10 does.
    set_delay(b, &addr, 50).await;
    choose_algorithm(b, "round-robin").await;
    let fair = share_under_load(b, &addr, 8).await;
    b.screenshot("slow-replica-round-robin").await.unwrap();
    choose_algorithm(b, "least-connections").await;
    b.wait_until(Duration::from_secs(10), "the switch", || async {
        let s = status(stack);
        let p = s["pools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "dynamic")
            .cloned();
        Ok(p.filter(|p| {
            p["algorithm"] == "least-connections" && p["file_algorithm"] == "round-robin"
        }))
    })
    .await
    .unwrap();
    let aware = share_under_load(b, &addr, 8).await;
    eprintln!("slow replica's share: round-robin {fair}%, least-connections {aware}%");
    assert!(
        (25..=40).contains(&fair),
        "round-robin gives the slow replica its third: {fair}%"
    );
    assert!(
        aware * 2 < fair,
        "least-connections sends the slow replica much less: {aware}% vs {fair}%"
    );
    let about = b.text("[data-chart=dynamic] .about").await.unwrap();
    assert!(about.contains("run-time; file: round-robin"), "{about}");
    b.screenshot("slow-replica-least-connections")
        .await
        .unwrap();
    set_delay(b, &addr, 0).await;
}

/// Sets `member`'s `delay_ms` knob through the admin relay, from the page (it has the token).
async fn set_delay(b: &Browser, member: &str, ms: u32) {
    let status = b
        .js(&format!(
            "return fetch('/api/pools/dynamic/members/{member}/fault', {{method: 'PUT',
               headers: {{'Authorization': 'Bearer {TOKEN}', 'Content-Type': 'application/json'}},
               body: JSON.stringify({{delay_ms: {ms}}})}}).then(r => r.status);"
        ))
        .await
        .unwrap();
    let ok = status.as_u64().is_some_and(|s| (200..300).contains(&s));
    assert!(ok, "the fault relay for {member} answered {status}");
}

async fn click(b: &Browser, css: &str) {
    b.client
        .find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The experiment's result row of `algorithm`: the slow member's share, once its trial ended.
async fn trial(b: &Browser, algorithm: &str) -> u64 {
    click(b, &format!("#experiment [data-algo={algorithm:?}]")).await;
    b.wait_until(
        Duration::from_secs(60),
        "the trial's row in the results",
        || async {
            let v = b
                .js(&format!(
                    "var tr = document.querySelector('#results tr[data-algorithm={algorithm:?}]');
                     return tr ? Number(tr.dataset.share) : null;"
                ))
                .await?;
            Ok(v.as_u64())
        },
    )
    .await
    .unwrap()
}

async fn the_experiment_panel_compares_algorithms_with_one_replica_slow(b: &mut Browser) {
    b.js("document.getElementById('experiment').scrollIntoView(); return null;")
        .await
        .unwrap();
    click(b, "#experiment [data-step=slow]").await;
    b.wait_until(Duration::from_secs(10), "the fault knob set", || async {
        let said = b.text("#say").await?;
        Ok(said.contains("one replica: done").then_some(()))
    })
    .await
    .unwrap();
    let fair = trial(b, "round-robin").await;
    let aware = trial(b, "least-connections").await;
    eprintln!(
        "experiment: the slow replica's share, round-robin {fair}%, least-connections {aware}%"
    );
    assert!((25..=40).contains(&fair), "round-robin: {fair}%");
    assert!(aware * 2 < fair, "least-connections: {aware}% vs {fair}%");
    b.screenshot("experiment").await.unwrap();
    click(b, "#experiment [data-step=reset]").await;
    b.wait_until(Duration::from_secs(10), "the experiment reset", || async {
        let said = b.text("#say").await?;
        Ok(said.contains("experiment reset: done").then_some(()))
    })
    .await
    .unwrap();
}
