//! What `./setup.sh` and the plain compose commands do for a newcomer: the checks before
//! anything starts, a clone under another folder name, rolling replacement, the replica count
//! kept across re-runs, a crash-looping service reported at once.
//!
//! The tests that start a stack run alone (`serial()`) and always tear down (`Drop` guards).
//! Without docker they print why and pass, except under CI, where they fail.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lab_tests::checkout::Checkout;
use lab_tests::docker::{self, available_or_skip};
use lab_tests::load::Load;
use lab_tests::stack::{Stack, instances_within, serial, wait_for};

#[test]
fn bad_lab_settings_stop_setup_before_it_builds_or_starts_anything() {
    let _serial = serial();
    let docker = docker::unavailable_reason().is_none();
    let stack = Stack::new("badenv").unwrap();
    let cases = [
        ("LAB_HTTP_PORT", "99999".to_owned()),
        ("LAB_ADMIN_PORT", "http".to_owned()),
        ("LAB_ADMIN_PORT", stack.http_port.to_string()),
        ("LAB_WAIT_SECS", "ten".to_owned()),
        ("LAB_IMAGE_PREFIX", "Lab Stack".to_owned()),
        ("LAB_IMAGE_TAG", "-latest".to_owned()),
        ("LAB_BALANCER_CONF_DIR", "/nonexistent/lab-conf".to_owned()),
        ("COMPOSE_PROJECT_NAME", "Lab.Stack".to_owned()),
    ];
    for (var, value) in cases {
        let err = match stack.setup_with(&[(var, value.clone())], &[]) {
            Ok(out) => panic!("{var}={value:?} was accepted:\n{out}"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            err.contains(&format!("{var}=\"{value}\"")) && err.contains("expected"),
            "{var}={value:?}: the message does not name the variable, the value and what is expected:\n{err}"
        );
        assert!(
            !err.contains("building"),
            "{var}={value:?}: setup.sh built before checking its input:\n{err}"
        );
        if docker {
            // compose would have normalised the bad project name to "labstack".
            let started = docker::container_projects().unwrap();
            assert!(
                !started
                    .iter()
                    .any(|p| *p == stack.project || p == "labstack"),
                "{var}={value:?}: containers were started"
            );
        }
    }
}

#[test]
fn down_volumes_when_nothing_is_left_says_so_without_errors() {
    let _serial = serial();
    if !available_or_skip("down_volumes_when_nothing_is_left_says_so_without_errors") {
        return;
    }
    let stack = Stack::new("downtwice").unwrap();
    for _ in 0..2 {
        let out = stack.setup(&["down", "--volumes"]).unwrap();
        assert!(
            !out.to_lowercase().contains("not found"),
            "down --volumes on an empty project alarmed:\n{out}"
        );
        assert!(out.contains("nothing to remove"), "{out}");
    }
}

#[test]
fn a_crash_looping_balancer_stops_setup_at_once_with_its_log_and_the_file_to_fix() {
    let _serial = serial();
    if !available_or_skip(
        "a_crash_looping_balancer_stops_setup_at_once_with_its_log_and_the_file_to_fix",
    ) {
        return;
    }
    let stack = Stack::new("crash").unwrap();
    let conf = stack.conf_dir.join("balancer.toml");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace(
            "algorithm = \"round-robin\"",
            "algorithm = \"fastest-please\"",
        ),
    )
    .unwrap();
    // Long enough that only the crash check, never the timeout, can end the wait.
    let err = match stack.setup_with(&[("LAB_WAIT_SECS", "120".into())], &[]) {
        Ok(out) => panic!("setup.sh succeeded with a broken balancer.toml:\n{out}"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        !err.contains("did not answer"),
        "setup.sh waited for the timeout instead of seeing the crash:\n{err}"
    );
    assert!(
        err.contains(&format!("{}/balancer.toml", stack.conf_dir.display())),
        "the message does not name the file to fix:\n{err}"
    );
    assert!(
        err.contains("fastest-please"),
        "the balancer's own log lines are not shown:\n{err}"
    );

    // compose's own table says "Up (health: starting)" between two restarts; status says more.
    let status = stack.setup(&["status"]).unwrap();
    let restarts: u32 = status
        .lines()
        .skip_while(|l| !l.starts_with("CONTAINER "))
        .find(|l| l.contains("balancer"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        restarts > 0 && status.contains("balancer has restarted"),
        "status does not show the balancer's restarts:\n{status}"
    );
}

#[test]
fn reruns_keep_the_chosen_replica_count_and_setup_roll_replaces_replicas_losslessly() {
    let _serial = serial();
    if !available_or_skip(
        "reruns_keep_the_chosen_replica_count_and_setup_roll_replaces_replicas_losslessly",
    ) {
        return;
    }
    let stack = Stack::up("roll").unwrap();

    // Two killed of four are still wanted: a re-run restarts them and keeps the others.
    stack.scale_api(4).unwrap();
    let four = stack.containers("student-api").unwrap();
    for id in &four[..2] {
        docker::docker(&["kill", id]).unwrap();
    }
    stack.setup(&[]).unwrap();
    let running: BTreeSet<String> = stack
        .containers("student-api")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(
        running,
        four.iter().cloned().collect(),
        "the re-run did not restart exactly the four replicas it had"
    );

    // Zero is a choice too.
    stack.setup(&["scale", "0"]).unwrap();
    stack.setup(&[]).unwrap();
    assert_eq!(
        docker::all_containers(&stack.project, "student-api").unwrap(),
        Vec::<String>::new(),
        "the re-run brought back API replicas after `scale 0`"
    );
    assert_eq!(stack.get("/").unwrap().status, 200);

    // lab.md §1: replace every replica under a request loop.
    stack.scale_api(3).unwrap();
    assert_eq!(
        instances_within(stack.http_port, 3, Duration::from_secs(10)).len(),
        3
    );
    let old: BTreeSet<String> = stack
        .containers("student-api")
        .unwrap()
        .into_iter()
        .collect();
    let load = Load::start(stack.http_port, 8, 0);
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    let out = stack.setup(&["roll", "student-api"]).unwrap();
    eprintln!("roll took {:.1}s", started.elapsed().as_secs_f64());
    std::thread::sleep(Duration::from_secs(1));
    let report = load.stop();
    assert!(
        report.ok > 100,
        "too little load to mean anything: {report:?}"
    );
    assert!(
        report.failures.is_empty(),
        "{} of {} requests failed during the roll; first: {:#?}\n{out}",
        report.failures.len(),
        report.ok + report.failures.len() as u64,
        &report.failures[..report.failures.len().min(10)]
    );
    let new: BTreeSet<String> = docker::all_containers(&stack.project, "student-api")
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(new.len(), 3, "the roll changed the replica count:\n{out}");
    assert!(
        new.iter()
            .all(|id| !old.iter().any(|o| o.starts_with(id.as_str()))),
        "old replicas are left: {old:?} -> {new:?}"
    );
}

#[test]
fn plain_compose_scale_in_a_clone_named_otherwise_scales_the_one_lab_and_conf_edits_recreate_nothing()
 {
    let _serial = serial();
    if !available_or_skip(
        "plain_compose_scale_in_a_clone_named_otherwise_scales_the_one_lab_and_conf_edits_recreate_nothing",
    ) {
        return;
    }
    let (clone, shipped_env) = Checkout::clone_as("lab-kit").unwrap();
    let before: BTreeSet<String> = docker::container_projects().unwrap().into_iter().collect();
    let started = Instant::now();
    clone.setup(&[]).unwrap();
    eprintln!(
        "{}: ./setup.sh in the clone took {:.1}s",
        clone.project,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(
        docker::containers(&clone.project, "balancer")
            .unwrap()
            .len(),
        1,
        "./setup.sh did not start the project that .env names"
    );

    // What the newcomer typed, in the clone's folder, with no -p.
    clone
        .compose(&["up", "-d", "--scale", "student-api=4"])
        .unwrap();
    // New projects since the start, but not other tests' stacks (`labtest-<their pid>-...`).
    let added: BTreeSet<String> = docker::container_projects()
        .unwrap()
        .into_iter()
        .filter(|p| !before.contains(p))
        .filter(|p| *p == clone.project || !p.starts_with("labtest-"))
        .collect();
    assert_eq!(
        added,
        BTreeSet::from([clone.project.clone()]),
        "setup.sh and the plain compose command did not act on one project"
    );
    wait_for(Duration::from_secs(30), || {
        Ok(docker::containers(&clone.project, "student-api")?.len() == 4)
    })
    .expect("the lab did not reach 4 API replicas");
    let seen = instances_within(clone.http_port, 4, Duration::from_secs(15));
    assert_eq!(
        seen.len(),
        4,
        "saw only {seen:?} through the published port"
    );

    // Editing the mounted config is a reload: the next ./setup.sh rebuilds and recreates nothing.
    let balancer = docker::containers(&clone.project, "balancer").unwrap();
    let conf = clone.path("balancer/conf/balancer.toml");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("\n# edited by a newcomer\n");
    std::fs::write(&conf, text).unwrap();
    let out = clone.setup(&[]).unwrap();
    assert_eq!(
        docker::containers(&clone.project, "balancer").unwrap(),
        balancer,
        "the balancer was recreated after a config edit:\n{out}"
    );
    assert!(
        !out.contains("building image"),
        "a config edit rebuilt an image:\n{out}"
    );
    assert_eq!(
        docker::containers(&clone.project, "student-api")
            .unwrap()
            .len(),
        4
    );
    // The clone's .env was rewritten above; the repository's own names the lab.
    assert!(
        shipped_env
            .lines()
            .any(|l| l == "COMPOSE_PROJECT_NAME=lab-stack"),
        "the repository's .env does not name the project:\n{shipped_env}"
    );
}
