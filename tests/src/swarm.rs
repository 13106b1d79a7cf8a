//! A real multi-node Docker Swarm on this machine for the tests: `./setup.sh cluster up` under
//! a test-only prefix and subnet (so a learner's own cluster is never touched), removed by
//! `Drop` and, before it starts, cleaned of whatever a crashed earlier run left.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::docker::{in_ci, run};
use crate::stack::{setup_sh, wait_for, workspace_root};

/// Names and addresses of the test cluster (a learner's default is `labsw` on 10.77.0.0/24).
pub const PREFIX: &str = "labswt";
/// The first three numbers of the test cluster's /24.
pub const SUBNET: &str = "10.78.0";
/// The stack `./setup.sh swarm` deploys.
pub const STACK: &str = "lab-stack";

/// A running cluster; `./setup.sh swarm down` and `cluster down` when dropped.
#[derive(Debug)]
pub struct Cluster {
    /// Number of nodes.
    pub nodes: usize,
}

/// Why a swarm cannot be made here, or `None`.
pub fn unavailable_reason() -> Option<String> {
    if !cfg!(target_os = "linux") {
        return Some("the test swarm needs Linux network namespaces".into());
    }
    if !run(Command::new("id").arg("-u")).is_ok_and(|u| u.trim() == "0") {
        return Some("the test swarm needs root (namespaces, bridge, iptables)".into());
    }
    for tool in [
        "dockerd",
        "docker",
        "docker-registry",
        "nsenter",
        "iptables",
    ] {
        if run(Command::new("sh").args(["-c", &format!("command -v {tool}")])).is_err() {
            return Some(format!("`{tool}` is missing"));
        }
    }
    if let Err(e) = crate::postgres::available() {
        return Some(e.to_string());
    }
    None
}

/// True when the swarm tests can run; otherwise prints why, or panics under CI.
pub fn available_or_skip(test: &str) -> bool {
    match unavailable_reason() {
        None => true,
        Some(reason) if in_ci() => panic!("{test}: a test swarm is required under CI: {reason}"),
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

fn cluster_env(cmd: &mut Command) -> &mut Command {
    cmd.env("LAB_CLUSTER_PREFIX", PREFIX)
        .env("LAB_CLUSTER_SUBNET", SUBNET)
        .env_remove("LAB_CLUSTER_DIR")
}

impl Cluster {
    /// `./setup.sh cluster up N` (which first removes leftovers of an earlier run).
    pub fn up(nodes: usize) -> Result<Self> {
        let cluster = Self { nodes };
        cluster.script(&["up", &nodes.to_string()])?;
        Ok(cluster)
    }

    /// `./setup.sh cluster ARGS` for this cluster.
    pub fn script(&self, args: &[&str]) -> Result<String> {
        let root = workspace_root();
        let mut cmd = Command::new(root.join("setup.sh"));
        cmd.arg("cluster").args(args).current_dir(&root);
        run(cluster_env(&mut cmd))
    }

    /// The manager's socket, for DOCKER_HOST.
    pub fn docker_host(&self) -> String {
        format!("unix:///var/tmp/{PREFIX}/n1/docker.sock")
    }

    /// The bridge address this machine has on the cluster's network.
    pub fn host_ip(&self) -> Ipv4Addr {
        format!("{SUBNET}.1")
            .parse()
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }

    /// Node `n`'s address (1-based).
    pub fn node_ip(&self, n: usize) -> String {
        format!("{SUBNET}.{}", 10 + n)
    }

    /// The registry every node pulls from.
    pub fn registry(&self) -> String {
        format!("{SUBNET}.1:5000")
    }

    /// `docker ARGS` against the manager.
    pub fn docker(&self, args: &[&str]) -> Result<String> {
        run(Command::new("docker")
            .env("DOCKER_HOST", self.docker_host())
            .args(args))
    }

    /// `./setup.sh swarm ARGS` against this cluster with extra environment (which may point
    /// DOCKER_HOST elsewhere).
    pub fn setup_swarm(&self, env: &[(&str, String)], args: &[&str]) -> Result<String> {
        let env: Vec<(&str, String)> = std::iter::once(("DOCKER_HOST", self.docker_host()))
            .chain(env.iter().cloned())
            .collect();
        let args: Vec<&str> = std::iter::once("swarm")
            .chain(args.iter().copied())
            .collect();
        setup_sh(&env, &args)
    }

    /// Running tasks of a stack service: (container id, node hostname).
    pub fn tasks(&self, service: &str) -> Result<Vec<(String, String)>> {
        let ids = self.docker(&[
            "service",
            "ps",
            "-q",
            "--filter",
            "desired-state=running",
            &format!("{STACK}_{service}"),
        ])?;
        let mut tasks = Vec::new();
        for id in ids.split_whitespace() {
            let line = self.docker(&[
                "inspect",
                "-f",
                "{{.Status.State}} {{.Status.ContainerStatus.ContainerID}} {{.NodeID}}",
                id,
            ])?;
            let mut parts = line.split_whitespace();
            let (Some("running"), Some(container), Some(node)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let host =
                self.docker(&["node", "inspect", "-f", "{{.Description.Hostname}}", node])?;
            tasks.push((container.to_owned(), host.trim().to_owned()));
        }
        Ok(tasks)
    }

    /// The balancer's published HTTP address (node 1: the stack places it on the manager).
    pub fn http_addr(&self, port: u16) -> SocketAddr {
        SocketAddr::new(
            self.node_ip(1)
                .parse()
                .unwrap_or(Ipv4Addr::UNSPECIFIED.into()),
            port,
        )
    }

    /// Waits until `service` has `n` running tasks.
    pub fn wait_tasks(&self, service: &str, n: usize, timeout: Duration) -> Result<Duration> {
        let started = Instant::now();
        wait_for(timeout, || Ok(self.tasks(service)?.len() == n))
            .with_context(|| format!("{service} did not reach {n} running tasks"))?;
        Ok(started.elapsed())
    }
}

/// What of a test cluster is still on this machine: namespaces, interfaces, the iptables
/// rule, its directory, processes that name it.
pub fn leftovers() -> Vec<String> {
    let mut left = Vec::new();
    let ok = |program: &str, args: &[&str]| run(Command::new(program).args(args));
    if let Ok(list) = ok("ip", &["netns", "list"]) {
        left.extend(
            list.lines()
                .filter(|l| l.starts_with(PREFIX))
                .map(|l| format!("network namespace {l}")),
        );
    }
    if let Ok(links) = ok("ip", &["-o", "link", "show"]) {
        left.extend(
            links
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .filter(|name| name.starts_with(PREFIX))
                .map(|name| format!("interface {name}")),
        );
    }
    let bridge = format!("{PREFIX}br0");
    if ok(
        "iptables",
        &[
            "-C",
            "DOCKER-USER",
            "-i",
            &bridge,
            "-o",
            &bridge,
            "-j",
            "ACCEPT",
        ],
    )
    .is_ok()
    {
        left.push("iptables rule in DOCKER-USER".into());
    }
    let dir = format!("/var/tmp/{PREFIX}");
    if std::path::Path::new(&dir).exists() {
        left.push(format!("directory {dir}"));
    }
    if let Ok(pids) = ok("pgrep", &["-af", &format!("{dir}/")]) {
        left.extend(pids.lines().map(|p| format!("process {p}")));
    }
    left
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        if let Err(e) = self.script(&["down"]) {
            eprintln!("cluster teardown failed: {e:#}");
        }
    }
}
