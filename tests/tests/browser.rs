//! The lab page in headless Chromium, against the real stack through the balancer.
//!
//! One stack and one browser for all steps (a stack takes seconds to start; the steps take
//! about a minute together). Each step is a function named after the behaviour it checks and
//! saves a screenshot under `target/browser-screenshots/`. Without docker, chromium or
//! chromedriver the test prints why and passes, except under CI (`CI=true`), where it fails.

// Helpers outside #[test] fns panic on setup failure too: that is the point in tests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use fantoccini::Locator;
use lab_tests::browser::{self, Browser};
use lab_tests::stack::Stack;
use lab_tests::{docker, http};
use serde_json::Value;

const API_REPLICAS: usize = 3;
const STATIC_REPLICAS: usize = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_page_in_headless_chromium() {
    if !browser::available_or_skip("the_lab_page_in_headless_chromium") {
        return;
    }
    let started = Instant::now();
    // Blocking docker calls on a worker thread of a multi-thread runtime: nothing else runs.
    let stack = Stack::up("browser").unwrap();
    stack.scale_api(API_REPLICAS).unwrap();
    browser::scale(&stack, "static-site", STATIC_REPLICAS).unwrap();
    stack
        .wait_for_pool("dynamic", API_REPLICAS, Duration::from_secs(30))
        .unwrap();
    stack
        .wait_for_pool("static", STATIC_REPLICAS, Duration::from_secs(30))
        .unwrap();
    eprintln!("stack ready in {:.1}s", started.elapsed().as_secs_f64());

    let mut b = Browser::start("lab-page").await.unwrap();
    let url = format!("http://127.0.0.1:{}/", stack.http_port);
    b.client.goto(&url).await.unwrap();

    table_updates_at_least_3_times_in_7s_without_overlapping_polls(&mut b).await;
    three_api_replicas_show_at_least_two_colours(&mut b).await;
    static_replica_is_sticky_until_forget_my_backend(&mut b).await;
    form_shows_validation_errors(&mut b).await;
    form_adds_a_student_that_every_replica_sees(&mut b).await;
    dashboard_fits_1280px_and_a_phone_without_sideways_scrolling(&mut b, &stack).await;
    b.client.goto(&url).await.unwrap();
    killed_replica_vanishes_from_the_bar(&mut b, &stack).await;
    page_fits_a_phone_width(&mut b).await;
    no_console_errors(&mut b).await;

    eprintln!(
        "screenshots in {}; whole test {:.1}s",
        b.screenshots_dir().display(),
        started.elapsed().as_secs_f64()
    );
    b.close().await.unwrap();
}

/// `[[start, end, ok, instance], ...]` from the page's hidden poll log, oldest first.
async fn poll_log(b: &Browser) -> Vec<(f64, f64, bool, String)> {
    let v = b
        .js(
            "return Array.from(document.querySelectorAll('#poll-log li')).map(function (li) {
               return [Number(li.dataset.start), Number(li.dataset.end),
                       li.dataset.ok === 'true', li.dataset.instance]; });",
        )
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_f64().unwrap(),
                e[1].as_f64().unwrap(),
                e[2].as_bool().unwrap(),
                e[3].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn assert_no_overlap(log: &[(f64, f64, bool, String)]) {
    for pair in log.windows(2) {
        let (_, end, _, _) = pair[0];
        let (start, _, _, _) = pair[1];
        assert!(
            end <= start,
            "a poll started at {start} ms before the previous one ended at {end} ms: {log:?}"
        );
    }
}

async fn table_updates_at_least_3_times_in_7s_without_overlapping_polls(b: &mut Browser) {
    // Count every replacement of the table body from now on.
    b.js("window.__tableUpdates = 0;
          new MutationObserver(function () { window.__tableUpdates += 1; })
            .observe(document.querySelector('#students tbody'), { childList: true });
          return null;")
        .await
        .unwrap();
    let before = poll_log(b).await.len();
    tokio::time::sleep(Duration::from_secs(7)).await;
    let updates = b.js("return window.__tableUpdates;").await.unwrap();
    let updates = updates.as_u64().unwrap();
    assert!(updates >= 3, "the table updated {updates} times in 7 s");
    let rows = b
        .client
        .find_all(Locator::Css("#students tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 5, "five students per poll");
    let log = poll_log(b).await;
    assert!(log.len() >= before + 3, "{log:?}");
    assert!(log.iter().all(|p| p.2), "a poll failed: {log:?}");
    assert_no_overlap(&log);
    b.screenshot("polling").await.unwrap();
}

/// `(instance, colour)` of each entry of the replica legend.
async fn legend(b: &Browser) -> Vec<(String, String)> {
    let v = b
        .js(
            "return Array.from(document.querySelectorAll('#replica-legend li')).map(function (li) {
               var chip = li.querySelector('.chip');
               return [li.dataset.instance, chip.dataset.colour || '',
                       getComputedStyle(chip).backgroundColor]; });",
        )
        .await
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_owned(),
                e[2].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn three_api_replicas_show_at_least_two_colours(b: &mut Browser) {
    let entries = b
        .wait_until(
            Duration::from_secs(15),
            "two API replicas in the legend",
            || async {
                let l = legend(b).await;
                Ok((l.len() >= 2).then_some(l))
            },
        )
        .await
        .unwrap();
    let colours: BTreeSet<&str> = entries.iter().map(|(_, c)| c.as_str()).collect();
    assert!(colours.len() >= 2, "one colour for {entries:?}");
    assert!(
        entries.iter().all(|(i, _)| !i.is_empty()),
        "no failed polls in the bar: {entries:?}"
    );
    // The bar has one coloured segment per replica in the legend.
    let segments = b
        .client
        .find_all(Locator::Css("#distribution .segment"))
        .await
        .unwrap();
    assert!(segments.len() >= entries.len().min(2));
    b.screenshot("three-api-replicas").await.unwrap();
}

/// Which static replica rendered the page, whether it was sticky, and the cookie it saw;
/// `None` while the page is between two loads (its elements are gone or not there yet).
/// One script reads all three, so a navigation cannot commit between the reads and pair the
/// old page's replica with the new page's stickiness.
async fn try_static_state(b: &Browser) -> Option<(String, String, String)> {
    let v = b
        .js("var i = document.getElementById('static-instance');
             var s = document.getElementById('sticky-status');
             if (!i || !s) { return null; }
             return [i.dataset.instance, s.dataset.sticky, s.dataset.cookie];")
        .await
        .ok()?;
    let [instance, sticky, cookie] = v.as_array()?.as_slice() else {
        return None;
    };
    Some((
        instance.as_str()?.to_owned(),
        sticky.as_str()?.to_owned(),
        cookie.as_str()?.to_owned(),
    ))
}

async fn static_state(b: &Browser) -> (String, String, String) {
    try_static_state(b)
        .await
        .expect("the page shows its static replica and stickiness")
}

async fn static_replica_is_sticky_until_forget_my_backend(b: &mut Browser) {
    // The first load carried no cookie; the balancer set one with its answer.
    let (first, sticky, _) = static_state(b).await;
    assert_eq!(sticky, "no", "a fresh profile has no sticky cookie");
    let mut cookie = String::new();
    for _ in 0..3 {
        b.client.refresh().await.unwrap();
        let (instance, sticky, value) = static_state(b).await;
        assert_eq!(sticky, "yes", "reloads send the cookie");
        assert_eq!(instance, first, "a sticky session keeps its static replica");
        assert_eq!(value.len(), 16, "the balancer's opaque id: {value}");
        cookie = value;
    }
    let text = b.text("#sticky-status").await.unwrap();
    assert!(text.contains(&format!("lb_static={cookie}")), "{text}");
    b.screenshot("sticky").await.unwrap();

    // Keyboard: focus the button and press Enter, as a keyboard user would.
    let forget = b.client.find(Locator::Id("forget")).await.unwrap();
    let enter = char::from(fantoccini::key::Key::Enter).to_string();
    forget.send_keys(&enter).await.unwrap();
    let (second, sticky) = b
        .wait_until(
            Duration::from_secs(10),
            "the page reloaded after forget",
            || async {
                // Mid-navigation the old page's elements go stale: just look again.
                let state = try_static_state(b).await;
                Ok(state.and_then(|(instance, sticky, _)| {
                    (sticky == "no").then_some((instance, sticky))
                }))
            },
        )
        .await
        .unwrap();
    assert_eq!(sticky, "no", "forget cleared the cookie");
    assert_ne!(
        second, first,
        "with {STATIC_REPLICAS} static replicas round-robin places a new session on the other"
    );
    b.screenshot("forgot-backend").await.unwrap();

    b.client.refresh().await.unwrap();
    let (again, sticky, value) = static_state(b).await;
    assert_eq!((again.as_str(), sticky.as_str()), (second.as_str(), "yes"));
    assert_ne!(value, cookie, "a new replica, a new cookie");
}

async fn field_error(b: &Browser, field: &str) -> String {
    b.text(&format!("[data-error-for=\"{field}\"]"))
        .await
        .unwrap()
}

async fn form_shows_validation_errors(b: &mut Browser) {
    b.client
        .find(Locator::Id("field-firstName"))
        .await
        .unwrap()
        .send_keys("Grace")
        .await
        .unwrap();
    b.client
        .find(Locator::Id("field-email"))
        .await
        .unwrap()
        .send_keys("not-an-email")
        .await
        .unwrap();
    b.client
        .find(Locator::Id("student-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_until(
        Duration::from_secs(10),
        "validation errors shown",
        || async {
            let state = b.attr("#form-status", "data-state").await?;
            Ok((state.as_deref() == Some("error")).then_some(()))
        },
    )
    .await
    .unwrap();
    assert!(!field_error(b, "email").await.is_empty(), "email message");
    assert!(
        !field_error(b, "lastName").await.is_empty(),
        "lastName message"
    );
    assert!(!field_error(b, "city").await.is_empty(), "city message");
    assert!(
        field_error(b, "firstName").await.is_empty(),
        "firstName was fine"
    );
    let invalid = b
        .attr("#field-email", "aria-invalid")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(invalid, "true");
    let focused = b
        .js("return document.activeElement && document.activeElement.id;")
        .await
        .unwrap();
    assert_eq!(
        focused, "field-lastName",
        "focus moves to the first bad field"
    );
    b.screenshot("validation-errors").await.unwrap();
}

async fn form_adds_a_student_that_every_replica_sees(b: &mut Browser) {
    for (id, value) in [
        ("field-firstName", "Grace"),
        ("field-lastName", "Hopper"),
        ("field-email", "grace.hopper@example.edu"),
        ("field-city", "Arlington"),
    ] {
        let el = b.client.find(Locator::Id(id)).await.unwrap();
        el.clear().await.unwrap();
        el.send_keys(value).await.unwrap();
    }
    b.client
        .find(Locator::Css("#field-gender option[value=\"female\"]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    // A date input's typed format depends on the locale; set the value as a date picker would.
    b.js("var d = document.getElementById('field-birthday');
          d.value = '1906-12-09'; d.dispatchEvent(new Event('input', { bubbles: true }));
          return null;")
        .await
        .unwrap();
    b.client
        .find(Locator::Id("student-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_until(
        Duration::from_secs(20),
        "the seen-by check finished",
        || async {
            let state = b.attr("#seen-by", "data-state").await?;
            Ok((state.as_deref() == Some("done")).then_some(()))
        },
    )
    .await
    .unwrap();
    let status = b.text("#form-status").await.unwrap();
    assert!(status.starts_with("Added Grace Hopper"), "{status}");
    for field in ["firstName", "lastName", "email", "city"] {
        assert!(field_error(b, field).await.is_empty(), "{field} error left");
    }
    let seen: Value = b
        .js(
            "return Array.from(document.querySelectorAll('#seen-by-list li')).map(function (li) {
               return [li.dataset.instance, li.dataset.found === 'true']; });",
        )
        .await
        .unwrap();
    let seen = seen.as_array().unwrap();
    assert!(
        seen.len() >= 2,
        "the lookups reached {} replica(s): {seen:?}",
        seen.len()
    );
    assert!(
        seen.iter().all(|e| e[1] == true),
        "a replica did not find the new student: {seen:?}"
    );
    assert_eq!(
        b.attr("#seen-by", "data-all").await.unwrap().as_deref(),
        Some("true")
    );
    b.js("document.getElementById('form-title').scrollIntoView(); return null;")
        .await
        .unwrap();
    b.screenshot("student-added-seen-by-every-replica")
        .await
        .unwrap();
}

async fn killed_replica_vanishes_from_the_bar(b: &mut Browser, stack: &Stack) {
    let ids = stack.containers("student-api").unwrap();
    let victim = &ids[0];
    // INSTANCE_NAME defaults to the hostname, which docker sets to the short container id.
    let name = docker::inspect(victim, "{{.Config.Hostname}}").unwrap();
    b.wait_until(
        Duration::from_secs(20),
        "the victim in the legend",
        || async {
            Ok(legend(b)
                .await
                .iter()
                .any(|(i, _)| *i == name)
                .then_some(()))
        },
    )
    .await
    .unwrap();
    docker::docker(&["kill", victim]).unwrap();
    let killed = Instant::now();
    b.wait_until(
        Duration::from_secs(30),
        "the killed replica left the bar",
        || async { Ok((!legend(b).await.iter().any(|(i, _)| *i == name)).then_some(())) },
    )
    .await
    .unwrap();
    eprintln!(
        "killed replica {name} left the bar after {:.1}s",
        killed.elapsed().as_secs_f64()
    );
    let log = poll_log(b).await;
    assert_no_overlap(&log);
    assert!(
        log.iter().all(|p| p.2),
        "a poll failed while a replica died: {log:?}"
    );
    b.js("window.scrollTo(0, 0); return null;").await.unwrap();
    b.screenshot("replica-killed").await.unwrap();
}

/// The balancer's last reload from its admin API: `Some(ok)`, or `None` before any reload.
fn last_reload_ok(stack: &Stack) -> anyhow::Result<Option<bool>> {
    let status: Value = serde_json::from_slice(&http::get(stack.admin_port, "/api/status")?.body)?;
    Ok(status["reload"]["ok"]
        .as_bool()
        .filter(|_| status["reload"]["at"] != 0.0))
}

/// Writes the stack's mounted `balancer.toml`, sends the balancer SIGHUP (its reload signal, so
/// the step does not hang on the file watch) and waits until a reload ended as `ok` says.
async fn reload_config(b: &Browser, stack: &Stack, toml: &str, ok: bool) {
    std::fs::write(stack.conf_dir.join("balancer.toml"), toml).unwrap();
    let balancer = stack.containers("balancer").unwrap();
    docker::docker(&["kill", "-s", "HUP", &balancer[0]]).unwrap();
    b.wait_until(Duration::from_secs(20), "the reload's outcome", || async {
        Ok((last_reload_ok(stack)? == Some(ok)).then_some(()))
    })
    .await
    .unwrap();
}

async fn dashboard_fits_1280px_and_a_phone_without_sideways_scrolling(
    b: &mut Browser,
    stack: &Stack,
) {
    // The longest text the dashboard shows: a rejected reload's error, in the header and in
    // the events (the lab guide's own example of a bad edit).
    let good = std::fs::read_to_string(stack.conf_dir.join("balancer.toml")).unwrap();
    let bad = good.replacen("algorithm = \"round-robin\"", "algorithm = \"fastest\"", 1);
    assert_ne!(
        bad, good,
        "the dynamic pool's algorithm line is in balancer.toml"
    );
    reload_config(b, stack, &bad, false).await;

    b.client.set_window_size(1280, 1000).await.unwrap();
    b.client
        .goto(&format!("http://127.0.0.1:{}/", stack.admin_port))
        .await
        .unwrap();
    b.wait_until(
        Duration::from_secs(15),
        "the live dashboard with every member and the rejected reload",
        || async {
            let v = b
                .js("return [document.getElementById('live').dataset.state,
                             document.querySelectorAll('[data-pool=dynamic] tr[data-member]').length,
                             document.getElementById('events').textContent.indexOf('rejected') >= 0];")
                .await?;
            Ok((v[0] == "live" && v[1] == API_REPLICAS && v[2] == true).then_some(()))
        },
    )
    .await
    .unwrap();
    b.dashboard_fits(1280).await.unwrap();
    // At 1280 px it is still a table: the last column's heading ("load seen", what the
    // load-aware algorithms read) is on screen.
    let heading = b
        .js(
            "var th = document.querySelectorAll('[data-pool=dynamic] th');
             var last = th[th.length - 1].getBoundingClientRect();
             return [th[th.length - 1].textContent, last.width, last.right <= window.innerWidth];",
        )
        .await
        .unwrap();
    assert!(
        heading[0] == "load seen" && heading[1].as_f64().unwrap() > 10.0 && heading[2] == true,
        "the LOAD SEEN heading is not shown at 1280 px: {heading}"
    );
    b.screenshot("dashboard-1280").await.unwrap();
    b.js("document.getElementById('events').scrollIntoView(); return null;")
        .await
        .unwrap();
    b.screenshot("dashboard-1280-events").await.unwrap();

    b.client.set_window_size(390, 844).await.unwrap();
    b.js("window.scrollTo(0, 0); return null;").await.unwrap();
    b.dashboard_fits(390).await.unwrap();
    b.screenshot("dashboard-phone").await.unwrap();
    b.js(
        "document.querySelector('[data-pool=dynamic] tr[data-member]').scrollIntoView();
          return null;",
    )
    .await
    .unwrap();
    b.screenshot("dashboard-phone-members").await.unwrap();
    b.js("document.getElementById('events').scrollIntoView(); return null;")
        .await
        .unwrap();
    b.screenshot("dashboard-phone-events").await.unwrap();

    b.client.set_window_size(1280, 1000).await.unwrap();
    reload_config(b, stack, &good, true).await;
}

async fn page_fits_a_phone_width(b: &mut Browser) {
    b.client.set_window_size(390, 844).await.unwrap();
    let v = b
        .js("return [document.documentElement.scrollWidth, window.innerWidth];")
        .await
        .unwrap();
    let (scroll, inner) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
    assert!(
        scroll <= inner,
        "horizontal scrolling at phone width: {scroll} > {inner}"
    );
    b.screenshot("phone-width").await.unwrap();
    b.js("document.getElementById('try-title').scrollIntoView(); return null;")
        .await
        .unwrap();
    b.screenshot("phone-width-try-this").await.unwrap();
    b.client.set_window_size(1280, 1000).await.unwrap();
}

async fn no_console_errors(b: &mut Browser) {
    b.read_console().await.unwrap();
    let errors: Vec<_> = b
        .console
        .iter()
        .filter(|e| e.level == "SEVERE")
        // The one answer the page means to get and handles: the 422 of the invalid form.
        // Chromium reports every non-2xx fetch as a network "error", whatever the page does.
        .filter(|e| !(e.source == "network" && e.message.contains("status of 422")))
        .collect();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    assert!(
        b.console
            .iter()
            .any(|e| e.source == "network" && e.message.contains("status of 422")),
        "the console log is read (the 422 of the validation step shows in it): {:#?}",
        b.console
    );
}
