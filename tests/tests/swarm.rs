//! The lab on a real three-node Docker Swarm made on this machine (`./setup.sh cluster up`),
//! deployed with `./setup.sh swarm` through the cluster's registry, the roster in a PostgreSQL
//! server on this machine (the database an operator provides).
//!
//! One test walks every phase in order, because making the swarm and deploying costs more than
//! any phase: deploy; tasks spread over nodes; every API task answers through the balancer; a
//! student posted through one node's replica is read through another node's; scale 2 -> 6 -> 2
//! under GET+POST load; a rolling update under GET+POST load; a node crash under load (no GET
//! fails; a POST in flight on the dying node may, as it would behind nginx); a node cut off
//! under load (reported, not asserted: see docs/benchmarks.md). Every phase's duration is
//! printed, for the benchmarks page. Everything is removed by `Drop` guards, also on failure.

#![allow(clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lab_tests::http::Client;
use lab_tests::load::{Load, Report};
use lab_tests::postgres::Postgres;
use lab_tests::stack::wait_for;
use lab_tests::swarm::{self, Cluster};

const TOKEN: &str = "swarm-test-token";
const HTTP_PORT: u16 = 8888;

/// `X-Instance` of each answer to `n` GETs of `path` on fresh connections.
fn instances(addr: SocketAddr, path: &str, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        if let Ok(r) = Client::to(addr).get(path)
            && r.status == 200
            && let Some(i) = r.header("x-instance")
        {
            seen.insert(i.to_owned());
        }
    }
    seen
}

/// The 12-character container ids (the replicas' X-Instance) of a service's running tasks,
/// with the node each runs on.
fn task_nodes(cluster: &Cluster, service: &str) -> BTreeMap<String, String> {
    cluster
        .tasks(service)
        .unwrap_or_default()
        .into_iter()
        .map(|(id, node)| (id.chars().take(12).collect(), node))
        .collect()
}

/// Waits until every running API task answers through the balancer; returns how long it took.
fn all_tasks_answer(
    cluster: &Cluster,
    addr: SocketAddr,
    want: usize,
    timeout: Duration,
) -> Duration {
    let started = Instant::now();
    let mut last = (BTreeMap::new(), BTreeSet::new());
    let ok = wait_for(timeout, || {
        let tasks = task_nodes(cluster, "student-api");
        let seen = instances(addr, "/api/student", 4 * want.max(1));
        let done = tasks.len() == want && tasks.keys().all(|t| seen.contains(t));
        last = (tasks, seen);
        Ok(done)
    });
    assert!(
        ok.is_ok(),
        "not all {want} API tasks answered through the balancer within {timeout:?}: tasks {:?}, answered {:?}",
        last.0,
        last.1
    );
    started.elapsed()
}

fn assert_no_failures(phase: &str, report: &Report) {
    eprintln!(
        "{phase}: {} requests answered, {} failed, worst latency {:?}",
        report.ok,
        report.failures.len(),
        report.worst
    );
    assert!(report.ok > 0, "{phase}: no request was answered");
    assert!(
        report.failures.is_empty(),
        "{phase}: {} failed requests, e.g. {:#?}",
        report.failures.len(),
        report.failures.iter().take(5).collect::<Vec<_>>()
    );
}

/// Every acknowledged student can be read back by id.
fn assert_posts_kept(phase: &str, addr: SocketAddr, report: &Report) {
    assert!(!report.ids.is_empty(), "{phase}: no POST was acknowledged");
    let mut client = Client::to(addr);
    let missing: Vec<&String> = report
        .ids
        .iter()
        .filter(|id| {
            client
                .get(&format!("/api/student/{id}"))
                .map_or(true, |r| r.status != 200)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "{phase}: {} of {} acknowledged students are lost, e.g. {:?}",
        missing.len(),
        report.ids.len(),
        missing.iter().take(3).collect::<Vec<_>>()
    );
}

#[test]
fn the_lab_on_a_three_node_swarm_loses_nothing_when_scaled_updated_or_a_node_crashes() {
    if !swarm::available_or_skip("swarm") || !lab_tests::docker::available_or_skip("swarm") {
        return;
    }
    let _serial = lab_tests::stack::serial();
    let cluster = Cluster::up(3).expect("./setup.sh cluster up 3");
    let db = Postgres::start(&[cluster.host_ip()], &[&format!("{}.0/24", swarm::SUBNET)])
        .expect("a PostgreSQL server for the swarm's roster");
    let addr = cluster.http_addr(HTTP_PORT);

    // Refusals come before any build or deploy, each naming what to fix.
    let refused = |env: &[(&str, String)], says: &str| {
        let err = cluster
            .setup_swarm(env, &[])
            .expect_err("./setup.sh swarm should have refused");
        assert!(
            format!("{err:#}").contains(says),
            "expected {says:?} in: {err:#}"
        );
    };
    let worker = format!("unix:///var/tmp/{}/n2/docker.sock", swarm::PREFIX);
    refused(&[("DOCKER_HOST", worker)], "swarm worker, not a manager");
    refused(&[], "Push them through a registry: LAB_REGISTRY=host:port");
    refused(
        &[("LAB_REGISTRY", "not a registry".into())],
        "LAB_REGISTRY='not a registry' is not a registry address",
    );

    // Deploy through the registry.
    let started = Instant::now();
    let env = [
        ("LAB_REGISTRY", cluster.registry()),
        (
            "STUDENT_DATABASE_URL",
            db.url(&cluster.host_ip().to_string()),
        ),
        ("BALANCER_ADMIN_TOKEN", TOKEN.to_owned()),
        ("LAB_WAIT_SECS", "180".to_owned()),
    ];
    let out = cluster.setup_swarm(&env, &[]);
    let stack = StackGuard(&cluster);
    let out = out.unwrap_or_else(|e| panic!("{e:#}\npostgres log:\n{}", db.log()));
    eprintln!(
        "deploy: ./setup.sh swarm took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.contains(&format!("http://{}:{HTTP_PORT}/", cluster.node_ip(1))),
        "{out}"
    );

    // Tasks spread over nodes, every API task answers through the balancer.
    for service in ["student-api", "static-site"] {
        let nodes: BTreeSet<String> = task_nodes(&cluster, service).into_values().collect();
        assert!(
            nodes.len() >= 2,
            "{service}'s tasks run on {nodes:?}, not on two nodes:\n{}\n{}",
            cluster
                .docker(&["node", "ls"])
                .unwrap_or_else(|e| e.to_string()),
            cluster
                .docker(&[
                    "service",
                    "ps",
                    "--no-trunc",
                    &format!("{}_{service}", swarm::STACK)
                ])
                .unwrap_or_else(|e| e.to_string())
        );
    }
    all_tasks_answer(&cluster, addr, 2, Duration::from_secs(30));

    // A student posted through one node's replica is read through another node's.
    let body = r#"{"firstName":"Grace","lastName":"Hopper","gender":"female","birthday":"1990-12-09","email":"grace@example.org","city":"Arlington"}"#;
    let posted = Client::to(addr)
        .post_json("/api/student", body)
        .expect("POST");
    assert_eq!(posted.status, 201, "{}", posted.text());
    let nodes = task_nodes(&cluster, "student-api");
    let writer_node = posted
        .header("x-instance")
        .and_then(|i| nodes.get(i))
        .cloned();
    let id = serde_json::from_slice::<serde_json::Value>(&posted.body)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_owned))
        .expect("the stored student's id");
    let mut read_elsewhere = None;
    for _ in 0..20 {
        let r = Client::to(addr)
            .get(&format!("/api/student/{id}"))
            .expect("GET by id");
        let node = r.header("x-instance").and_then(|i| nodes.get(i)).cloned();
        if node.is_some() && node != writer_node {
            assert_eq!(
                r.status,
                200,
                "a replica on {node:?} does not know {id}: {}",
                r.text()
            );
            read_elsewhere = node;
            break;
        }
    }
    assert!(
        read_elsewhere.is_some(),
        "no replica on another node than {writer_node:?} answered; tasks: {nodes:?}"
    );

    // Scale 2 -> 6 -> 2 under GET and POST load.
    let load = Load::start_at(addr, 4, 1);
    let started = Instant::now();
    cluster
        .docker(&[
            "service",
            "scale",
            "--detach",
            &format!("{}_student-api=6", swarm::STACK),
        ])
        .expect("scale to 6");
    let took = all_tasks_answer(&cluster, addr, 6, Duration::from_secs(180));
    eprintln!(
        "scale 2->6: all six answered after {:.1}s",
        (started.elapsed().max(took)).as_secs_f64()
    );
    cluster
        .docker(&[
            "service",
            "scale",
            "--detach",
            &format!("{}_student-api=2", swarm::STACK),
        ])
        .expect("scale to 2");
    cluster
        .wait_tasks("student-api", 2, Duration::from_secs(120))
        .expect("back to two tasks");
    // Past the removed tasks' drain, so requests meet the smaller set.
    std::thread::sleep(Duration::from_secs(3));
    let report = load.stop();
    assert_no_failures("scale 2->6->2", &report);
    assert_posts_kept("scale 2->6->2", addr, &report);

    // A rolling update under GET and POST load.
    let load = Load::start_at(addr, 4, 2);
    let started = Instant::now();
    cluster
        .docker(&[
            "service",
            "update",
            "--force",
            "--quiet",
            &format!("{}_student-api", swarm::STACK),
        ])
        .expect("rolling update");
    eprintln!(
        "rolling update of student-api took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(3));
    let report = load.stop();
    assert_no_failures("rolling update", &report);
    assert_posts_kept("rolling update", addr, &report);

    // A node crash (daemon and containers killed) under load: the swarm reschedules. GETs
    // lose nothing: one that cannot connect or is reset is retried on another member. A POST
    // already sent to a task that dies is answered 502 and not resent (it may have been
    // stored: only the client can tell, as with nginx's and HAProxy's defaults), so the one
    // POST client may see at most the one POST it had in flight; what was acknowledged stays.
    let victim = crash_victim(&cluster);
    let load = Load::start_at(addr, 4, 0);
    let posts = Load::start_at(addr, 0, 1);
    std::thread::sleep(Duration::from_secs(1));
    let started = Instant::now();
    cluster
        .script(&["crash", &victim.to_string()])
        .expect("crash a node");
    let survivors_answer = || {
        let tasks = task_nodes(&cluster, "student-api");
        tasks.len() == 2
            && tasks
                .values()
                .all(|n| *n != format!("{}-node{victim}", swarm::PREFIX))
    };
    wait_for(Duration::from_secs(120), || Ok(survivors_answer()))
        .expect("the swarm rescheduled the crashed node's task");
    all_tasks_answer(&cluster, addr, 2, Duration::from_secs(60));
    eprintln!(
        "node {victim} crash: rescheduled and answering after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let report = load.stop();
    assert_no_failures("node crash", &report);
    let posted = posts.stop();
    eprintln!(
        "node crash: {} POSTs acknowledged, {} failed: {:?}",
        posted.ok,
        posted.failures.len(),
        posted.failures
    );
    assert!(
        posted.failures.len() <= 1 && posted.failures.iter().all(|f| f.contains("status 502")),
        "node crash: more POSTs failed than the one in flight: {:#?}",
        posted.failures
    );
    assert_posts_kept("node crash", addr, &posted);

    // A node cut off under load: in-flight requests to it hang. Reported, not asserted yet.
    if let Some(cut) = (2..=cluster.nodes).find(|n| {
        *n != victim
            && task_nodes(&cluster, "student-api")
                .values()
                .any(|node| *node == format!("{}-node{n}", swarm::PREFIX))
    }) {
        let load = Load::start_at(addr, 4, 0);
        std::thread::sleep(Duration::from_secs(1));
        cluster
            .script(&["cut", &cut.to_string()])
            .expect("cut a node");
        std::thread::sleep(Duration::from_secs(8));
        let report = load.stop();
        let _ = cluster.script(&["heal", &cut.to_string()]);
        eprintln!(
            "node {cut} cut off for 8s under 4 GET clients: {} answered, {} failed, worst latency {:.2}s",
            report.ok,
            report.failures.len(),
            report.worst.as_secs_f64()
        );
    }

    // `cluster down` cleans up after a crash: with node 1 killed as well (its daemon cannot
    // stop anything), nothing of the cluster may be left.
    drop(stack);
    cluster.script(&["crash", "1"]).expect("crash node 1");
    cluster.script(&["down"]).expect("cluster down");
    let leftovers = swarm::leftovers();
    assert!(leftovers.is_empty(), "cluster down left {leftovers:#?}");
}

/// A worker node (not the balancer's) that runs an API task.
fn crash_victim(cluster: &Cluster) -> usize {
    let nodes = task_nodes(cluster, "student-api");
    (2..=cluster.nodes)
        .find(|n| {
            nodes
                .values()
                .any(|node| *node == format!("{}-node{n}", swarm::PREFIX))
        })
        .expect("an API task on a worker node")
}

/// Removes the stack before the cluster goes, so its tasks stop cleanly.
struct StackGuard<'a>(&'a Cluster);

impl Drop for StackGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.0.setup_swarm(&[], &["down"]) {
            eprintln!("stack teardown failed: {e:#}");
        }
    }
}
