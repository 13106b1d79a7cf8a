//! One lab stack per test: its own compose project and free published ports, built and started
//! by `./setup.sh` itself (so the tests exercise the script a person runs), torn down by `Drop`.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::docker;
use crate::http::{self, Response};

/// Serialises the container tests of one test binary: they measure timings and share two cores,
/// so running their stacks side by side would only make both flaky.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The workspace root (where `setup.sh` and `compose.yaml` live).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// The image `setup.sh` builds for a service, honouring `LAB_IMAGE_PREFIX` and `LAB_IMAGE_TAG`
/// as compose.yaml does.
pub fn image(service: &str) -> String {
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    format!(
        "{}/{service}:{}",
        var("LAB_IMAGE_PREFIX", "lab-stack"),
        var("LAB_IMAGE_TAG", "latest")
    )
}

/// Runs `./setup.sh ARGS` with the given extra environment; returns its combined output, or an
/// error that carries it.
pub fn setup_sh(env: &[(&str, String)], args: &[&str]) -> Result<String> {
    let root = workspace_root();
    docker::run_combined(
        Command::new(root.join("setup.sh"))
            .args(args)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .current_dir(&root),
        &format!("./setup.sh {}", args.join(" ")),
    )
}

/// A running lab under its own compose project; `down -v --remove-orphans` when dropped.
#[derive(Debug)]
pub struct Stack {
    /// Compose project name (`labtest-<pid>-<test>`).
    pub project: String,
    /// Published HTTP port of the balancer.
    pub http_port: u16,
    /// Published admin port of the balancer (loopback).
    pub admin_port: u16,
    /// This stack's copy of `balancer/conf`, mounted at /etc/balancer.
    pub conf_dir: PathBuf,
}

impl Stack {
    /// Builds what changed and starts a stack with `./setup.sh`, which waits until `/` and
    /// `/api/student` answer 200 through the published port.
    pub fn up(test: &str) -> Result<Self> {
        let stack = Self::new(test)?;
        let started = Instant::now();
        stack.setup(&[])?;
        eprintln!(
            "{}: ./setup.sh up took {:.1}s",
            stack.project,
            started.elapsed().as_secs_f64()
        );
        Ok(stack)
    }

    /// A stack that is not started yet; its guard is armed already, so a failed start is
    /// cleaned up too.
    pub fn new(test: &str) -> Result<Self> {
        let slug: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .take(30)
            .collect();
        let project = format!("labtest-{}-{slug}", std::process::id());
        let (http_port, admin_port) = free_ports()?;
        let conf_dir = workspace_root()
            .join("target/lab-tests")
            .join(&project)
            .join("conf");
        std::fs::create_dir_all(&conf_dir)?;
        std::fs::copy(
            workspace_root().join("balancer/conf/balancer.toml"),
            conf_dir.join("balancer.toml"),
        )?;
        Ok(Self {
            project,
            http_port,
            admin_port,
            conf_dir,
        })
    }

    /// The environment that points `setup.sh` and compose at this stack.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("COMPOSE_PROJECT_NAME", self.project.clone()),
            ("LAB_HTTP_PORT", self.http_port.to_string()),
            ("LAB_ADMIN_PORT", self.admin_port.to_string()),
            ("LAB_BALANCER_CONF_DIR", self.conf_dir.display().to_string()),
            ("LAB_WAIT_SECS", "60".into()),
        ]
    }

    /// `./setup.sh ARGS` for this stack.
    pub fn setup(&self, args: &[&str]) -> Result<String> {
        setup_sh(&self.env(), args)
    }

    /// `./setup.sh ARGS` for this stack with some variables overridden (or added).
    pub fn setup_with(&self, extra: &[(&'static str, String)], args: &[&str]) -> Result<String> {
        let mut env = self.env();
        env.extend(extra.iter().cloned());
        setup_sh(&env, args)
    }

    /// Runs `n` student-api replicas and waits until that many are running.
    pub fn scale_api(&self, n: usize) -> Result<()> {
        self.setup(&["scale", &n.to_string()])?;
        wait_for(Duration::from_secs(30), || {
            Ok(self.containers("student-api")?.len() == n)
        })
        .with_context(|| format!("student-api did not reach {n} running replicas"))
    }

    /// Waits until the balancer's pool `pool` has `n` members in rotation (read from the
    /// admin API's `/api/status`).
    pub fn wait_for_pool(&self, pool: &str, n: usize, timeout: Duration) -> Result<()> {
        wait_for(timeout, || {
            let status: serde_json::Value =
                serde_json::from_slice(&http::get(self.admin_port, "/api/status")?.body)?;
            let in_rotation = status["pools"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["name"] == pool)
                .flat_map(|p| p["members"].as_array().into_iter().flatten())
                .filter(|m| m["in_rotation"] == true && m["state"] == "up")
                .count();
            Ok(in_rotation == n)
        })
        .with_context(|| format!("pool {pool} never had {n} members up"))
    }

    /// Ids of this stack's running containers of one service.
    pub fn containers(&self, service: &str) -> Result<Vec<String>> {
        docker::containers(&self.project, service)
    }

    /// `GET path` through the published HTTP port.
    pub fn get(&self, path: &str) -> Result<Response> {
        http::get(self.http_port, path)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        if let Err(e) = self.setup(&["down", "--volumes"]) {
            eprintln!("{}: teardown failed: {e:#}", self.project);
        }
        if let Some(dir) = self.conf_dir.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Distinct `X-Instance` values of `GET /api/student` on `127.0.0.1:port`, polled until `want`
/// are seen or `timeout` passes.
pub fn instances_within(port: u16, want: usize, timeout: Duration) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut client = http::Client::new(port);
    let deadline = Instant::now() + timeout;
    while seen.len() < want && Instant::now() < deadline {
        if let Ok(r) = client.get("/api/student")
            && r.status == 200
            && let Some(i) = r.header("x-instance")
        {
            seen.insert(i.to_owned());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    seen
}

/// Two distinct free TCP ports (held together while picked, so they differ).
pub fn free_ports() -> Result<(u16, u16)> {
    let a = TcpListener::bind("0.0.0.0:0")?;
    let b = TcpListener::bind("0.0.0.0:0")?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

/// Polls `check` every 100 ms until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() >= deadline {
            return match last {
                Some(e) => Err(e.context(format!("still not true after {timeout:?}"))),
                None => bail!("still not true after {timeout:?}"),
            };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
