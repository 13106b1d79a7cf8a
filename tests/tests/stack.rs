//! Whole-stack tests: the three images built by `./setup.sh`, run by compose, reached through
//! the balancer's published port like a person's browser would.
//!
//! Each test owns a stack under its own compose project and free ports (see `lab_tests::stack`)
//! and runs alone (`serial()`); its `Stack` guard always runs `./setup.sh down --volumes`.
//! Without docker these tests print why and pass, except under CI, where they fail.

use std::time::{Duration, Instant};

use lab_tests::docker::{self, available_or_skip};
use lab_tests::http::Client;
use lab_tests::load::Load;
use lab_tests::stack::{Stack, image, instances_within, serial, setup_sh, wait_for};

/// Each image is one static binary on `scratch`. The balancer grew past 5 MB in session 9
/// (hedging, the load generator, the live dashboard and its client): 5.7 MB.
const IMAGE_LIMIT_BYTES: u64 = 7_000_000;
const SERVICES: [&str; 3] = ["balancer", "static-site", "student-api"];

#[test]
fn images_are_small_non_root_scratch_images_without_a_shell() {
    let _serial = serial();
    if !available_or_skip("images_are_small_non_root_scratch_images_without_a_shell") {
        return;
    }
    setup_sh(&[], &["build"]).unwrap();
    for svc in SERVICES {
        let image = image(svc);
        let size: u64 = docker::inspect(&image, "{{.Size}}")
            .unwrap()
            .parse()
            .unwrap();
        assert!(size < IMAGE_LIMIT_BYTES, "{image} is {size} bytes");
        assert_eq!(
            docker::inspect(&image, "{{.Config.User}}").unwrap(),
            "65534:65534"
        );
        let health = docker::inspect(&image, "{{json .Config.Healthcheck.Test}}").unwrap();
        assert!(
            health.contains("--healthcheck"),
            "{image} healthcheck: {health}"
        );
        for label in ["title", "version", "source"] {
            let v = docker::inspect(
                &image,
                &format!("{{{{index .Config.Labels \"org.opencontainers.image.{label}\"}}}}"),
            )
            .unwrap();
            assert!(!v.is_empty(), "{image} lacks the OCI label {label}");
        }
        let layers = docker::inspect(&image, "{{len .RootFS.Layers}}").unwrap();
        assert!(
            layers.parse::<u32>().unwrap() <= 4,
            "{image}: {layers} layers, not scratch?"
        );
        for shell in ["/bin/sh", "/bin/bash", "/busybox"] {
            let ran = docker::docker(&["run", "--rm", "--entrypoint", shell, &image, "-c", "true"]);
            assert!(ran.is_err(), "{image} runs {shell}");
        }
    }
}

#[test]
fn fresh_stack_serves_the_page_and_the_api_through_the_published_port() {
    let _serial = serial();
    if !available_or_skip("fresh_stack_serves_the_page_and_the_api_through_the_published_port") {
        return;
    }
    let stack = Stack::up("serves").unwrap();
    let page = stack.get("/").unwrap();
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    let api = stack.get("/api/student").unwrap();
    assert_eq!(api.status, 200);
    assert!(api.text().trim_start().starts_with('['), "{}", api.text());
    assert!(api.header("x-instance").is_some(), "{:?}", api.headers);
    // compose.yaml turns the X-Upstream header on for the lab.
    assert!(api.header("x-upstream").is_some(), "{:?}", api.headers);

    // The non-root balancer can write its access log on the named volume.
    let balancer = stack.containers("balancer").unwrap()[0].clone();
    let copy = stack.conf_dir.with_file_name("access.log");
    wait_for(Duration::from_secs(5), || {
        docker::docker(&[
            "cp",
            &format!("{balancer}:/var/log/balancer/access.log"),
            &copy.display().to_string(),
        ])?;
        Ok(std::fs::read_to_string(&copy)?.contains("/api/student"))
    })
    .expect("no access log line for /api/student in /var/log/balancer/access.log");
}

#[test]
fn stats_dashboard_answers_on_the_admin_port_published_on_loopback_only() {
    let _serial = serial();
    if !available_or_skip("stats_dashboard_answers_on_the_admin_port_published_on_loopback_only") {
        return;
    }
    let stack = Stack::up("stats").unwrap();
    let page = lab_tests::http::get(stack.admin_port, "/").unwrap();
    assert_eq!(page.status, 200);
    let published = docker::docker(&["port", &stack.containers("balancer").unwrap()[0]]).unwrap();
    let admin: Vec<_> = published
        .lines()
        .filter(|l| l.starts_with("1936"))
        .collect();
    assert!(!admin.is_empty(), "{published}");
    assert!(
        admin.iter().all(|l| l.contains("127.0.0.1:")),
        "{published}"
    );
}

#[test]
fn setup_run_twice_in_a_row_succeeds_and_keeps_the_containers() {
    let _serial = serial();
    if !available_or_skip("setup_run_twice_in_a_row_succeeds_and_keeps_the_containers") {
        return;
    }
    let stack = Stack::up("twice").unwrap();
    let before = stack.containers("balancer").unwrap();
    let started = Instant::now();
    let out = stack.setup(&[]).unwrap();
    let took = started.elapsed();
    assert!(
        out.contains(&format!("http://localhost:{}/", stack.http_port)),
        "{out}"
    );
    assert_eq!(
        stack.containers("balancer").unwrap(),
        before,
        "the re-run recreated the balancer"
    );
    assert!(
        took < Duration::from_secs(30),
        "the re-run took {took:?}:\n{out}"
    );
}

#[test]
fn scaled_to_three_the_api_answers_from_three_instances_within_5s() {
    let _serial = serial();
    if !available_or_skip("scaled_to_three_the_api_answers_from_three_instances_within_5s") {
        return;
    }
    let stack = Stack::up("scale3").unwrap();
    stack.scale_api(3).unwrap();
    let ids = stack.containers("student-api").unwrap();
    let seen = instances_within(stack.http_port, 3, Duration::from_secs(5));
    assert_eq!(seen.len(), 3, "saw {seen:?} from containers {ids:?}");
}

#[test]
fn killing_a_replica_under_load_fails_no_request() {
    let _serial = serial();
    if !available_or_skip("killing_a_replica_under_load_fails_no_request") {
        return;
    }
    let stack = Stack::up("kill").unwrap();
    stack.scale_api(3).unwrap();
    // How fast new replicas join is the scale test's; this one needs all three serving.
    stack
        .wait_for_pool("dynamic", 3, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        instances_within(stack.http_port, 3, Duration::from_secs(10)).len(),
        3
    );

    let load = Load::start(stack.http_port, 16, 0);
    std::thread::sleep(Duration::from_secs(2));
    let victim = stack.containers("student-api").unwrap()[0].clone();
    docker::docker(&["kill", &victim]).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let report = load.stop();

    assert!(
        report.ok > 100,
        "too little load to mean anything: {report:?}"
    );
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed after killing {victim}; first: {:#?}",
        report.failures.len(),
        report.ok + report.failures.len() as u64,
        &report.failures[..report.failures.len().min(10)]
    );
}

#[test]
fn scaling_3_to_1_under_load_fails_no_request_and_keeps_every_post() {
    let _serial = serial();
    if !available_or_skip("scaling_3_to_1_under_load_fails_no_request_and_keeps_every_post") {
        return;
    }
    let stack = Stack::up("scaledown").unwrap();
    stack.scale_api(3).unwrap();
    // How fast new replicas join is the scale test's; this one needs all three serving.
    stack
        .wait_for_pool("dynamic", 3, Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        instances_within(stack.http_port, 3, Duration::from_secs(10)).len(),
        3
    );

    let load = Load::start(stack.http_port, 12, 4);
    std::thread::sleep(Duration::from_secs(2));
    stack.scale_api(1).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let report = load.stop();

    assert!(
        report.ok > 100,
        "too little load to mean anything: {report:?}"
    );
    assert!(!report.acknowledged.is_empty(), "no POST was acknowledged");
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed while scaling down; first: {:#?}",
        report.failures.len(),
        report.ok + report.failures.len() as u64,
        &report.failures[..report.failures.len().min(10)]
    );
    // Every acknowledged POST is in the shared roster, read straight off the volume.
    let survivor = stack.containers("student-api").unwrap()[0].clone();
    let copy = stack.conf_dir.with_file_name("students.jsonl");
    docker::docker(&[
        "cp",
        &format!("{survivor}:/data/students.jsonl"),
        &copy.display().to_string(),
    ])
    .unwrap();
    let roster = std::fs::read_to_string(&copy).unwrap();
    let missing: Vec<_> = report
        .acknowledged
        .iter()
        .filter(|email| !roster.contains(&format!("\"{email}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged POSTs are missing from the roster, e.g. {:?}",
        missing.len(),
        report.acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
}

#[test]
fn editing_the_mounted_config_applies_without_restarting_the_balancer() {
    let _serial = serial();
    if !available_or_skip("editing_the_mounted_config_applies_without_restarting_the_balancer") {
        return;
    }
    let stack = Stack::up("reload").unwrap();
    let balancer = stack.containers("balancer").unwrap()[0].clone();
    let started_at = docker::inspect(&balancer, "{{.State.StartedAt}}").unwrap();
    let upstream_port = |path: &str| {
        let r = stack.get(path).unwrap();
        r.header("x-upstream")
            .unwrap_or_default()
            .rsplit(':')
            .next()
            .unwrap_or("")
            .to_owned()
    };
    // By default only /api/ goes to the student API; everything else to the static site.
    assert_eq!(upstream_port("/reload-probe"), "8080");

    // Save the way an editor does: write a new file, rename it over the old one.
    let conf = stack.conf_dir.join("balancer.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(
        r#"
[[routes]]
path = "/reload-probe"
pool = "dynamic"

[[routes]]
path = "/api/"
pool = "dynamic"

[[routes]]
path = "/"
pool = "static"
"#,
    );
    let tmp = stack.conf_dir.join("balancer.toml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &conf).unwrap();

    wait_for(Duration::from_secs(10), || {
        Ok(upstream_port("/reload-probe") == "3000")
    })
    .expect("the edited route was not applied");
    assert_eq!(stack.get("/api/student").unwrap().status, 200);
    assert_eq!(
        docker::inspect(&balancer, "{{.State.StartedAt}}").unwrap(),
        started_at
    );
    assert_eq!(stack.containers("balancer").unwrap(), vec![balancer]);
}

/// Runs docker commands when dropped (best effort): removes what a test created by hand.
struct Cleanup(Vec<Vec<String>>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for args in &self.0 {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let _ = docker::docker(&args);
        }
    }
}

#[test]
fn student_api_image_stores_posts_on_a_fresh_named_volume_as_non_root() {
    let _serial = serial();
    if !available_or_skip("student_api_image_stores_posts_on_a_fresh_named_volume_as_non_root") {
        return;
    }
    setup_sh(&[], &["build", "student-api"]).unwrap();
    let name = format!("labtest-{}-api-volume", std::process::id());
    let _cleanup = Cleanup(vec![
        vec!["rm".into(), "-f".into(), name.clone()],
        vec!["volume".into(), "rm".into(), "-f".into(), name.clone()],
    ]);
    docker::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--read-only",
        "-v",
        &format!("{name}:/data"),
        "-p",
        "127.0.0.1::3000",
        &image("student-api"),
    ])
    .unwrap();
    let port: u16 = docker::docker(&["port", &name, "3000/tcp"])
        .unwrap()
        .lines()
        .next()
        .and_then(|l| l.rsplit(':').next())
        .and_then(|p| p.trim().parse().ok())
        .unwrap();
    let mut client = Client::new(port);
    wait_for(Duration::from_secs(15), || {
        Ok(client.get("/healthz").is_ok_and(|r| r.status == 200))
    })
    .unwrap();
    let email = format!("volume-{}@example.org", std::process::id());
    let body = format!(
        r#"{{"firstName":"Vol","lastName":"Ume","gender":"other","birthday":"2000-01-01","email":"{email}","city":"Dock"}}"#
    );
    let r = client.post_json("/api/student", &body).unwrap();
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(r.header("x-instance").is_some(), "{:?}", r.headers);

    let dir = lab_tests::stack::workspace_root()
        .join("target/lab-tests")
        .join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("students.jsonl");
    docker::docker(&[
        "cp",
        &format!("{name}:/data/students.jsonl"),
        &copy.display().to_string(),
    ])
    .unwrap();
    let roster = std::fs::read_to_string(&copy).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(roster.contains(&email), "{roster}");
    let health = wait_for(Duration::from_secs(15), || {
        Ok(docker::inspect(&name, "{{.State.Health.Status}}")? == "healthy")
    });
    assert!(
        health.is_ok(),
        "the image's HEALTHCHECK never reported healthy: {health:?}"
    );
}
