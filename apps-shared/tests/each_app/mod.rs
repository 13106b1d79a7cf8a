//! Test helpers both apps' integration tests use: private temp dirs, an HTTP client, the real
//! binary (described by a [`Bin`]) as a guarded child process, and a fake balancer.
//!
//! Included with `#[path]` by each app's `tests/common/mod.rs`, which adds what is its own
//! (config, in-process server, the `BIN` for its binary): these tests start the app's binary,
//! and only a test target of the app's own package can (`CARGO_BIN_EXE_<name>`). The tests
//! every app binary must pass are here too, in `binary.rs`, `registration.rs` and `faults.rs`,
//! which each app's `tests/binary.rs`, `tests/register.rs` and `tests/faults.rs` include. They live in a subdirectory so
//! that cargo does not take them for test targets of `apps-shared` itself.

// Each test binary of an app compiles this module and uses a different part of it.
#![allow(dead_code)]

pub(crate) mod fake_balancer;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fake_balancer::FakeBalancer;
use tokio::sync::oneshot;

/// What the shared tests need to know about an app's binary.
#[derive(Debug)]
pub(crate) struct Bin {
    /// Path of the binary, `env!("CARGO_BIN_EXE_<name>")`.
    pub exe: &'static str,
    /// Its listen-address variable.
    pub listen_env: &'static str,
    /// Its config-file variable.
    pub config_env: &'static str,
    /// Its own variables for a run whose files live in the given directory.
    pub own_env: fn(&Path) -> Vec<(&'static str, PathBuf)>,
    /// A path it answers with 200 (checked while it drains).
    pub serves: &'static str,
    /// A request whose access-log line the tests look for.
    pub logged: &'static str,
    /// Its pool on the balancer (`dynamic`, `static`).
    pub pool: &'static str,
    /// Variables `--help` must name besides the ones both apps read.
    pub help_vars: &'static [&'static str],
}

impl Bin {
    /// The binary with no arguments and the inherited environment.
    pub(crate) fn bare(&self) -> Command {
        Command::new(self.exe)
    }

    /// The binary with a clean, explicit environment for the variables it reads.
    pub(crate) fn command(&self, dir: &Path, instance: &str, grace: &str) -> Command {
        let mut cmd = self.bare();
        cmd.env(self.listen_env, "127.0.0.1:0")
            .envs((self.own_env)(dir))
            .env("INSTANCE_NAME", instance)
            .env("DRAIN_GRACE", grace)
            .env_remove(self.config_env)
            .env_remove("BALANCER_REGISTER_URL")
            .env_remove("BALANCER_ADMIN_TOKEN")
            .env_remove("REGISTER_ADVERTISE")
            .env_remove("REGISTER_INTERVAL")
            .env_remove("LOAD_CAPACITY")
            .env_remove("LAB_DELAY")
            .env_remove("LAB_CPU")
            .env_remove("LAB_ERROR_RATE")
            .env_remove("LAB_UNHEALTHY")
            .env_remove("RUST_LOG");
        cmd
    }
}

/// A directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(tempfile::TempDir);

impl TempDir {
    /// A fresh directory named after the app under test and `tag`.
    pub(crate) fn new(tag: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-{tag}-", env!("CARGO_PKG_NAME")))
            .tempdir()
            .unwrap();
        Self(dir)
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }

    /// A path inside the directory.
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

/// A client with a timeout, so a hung server fails the test instead of hanging it.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Polls `GET {base}/healthz` until it answers `status`, for at most `within` (a drain
/// grace, say, after which the server is gone); returns that answer.
pub(crate) async fn healthz_answering(
    base: &str,
    status: u16,
    within: Duration,
) -> reqwest::Response {
    let deadline = Instant::now() + within;
    loop {
        let res = client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .unwrap();
        if res.status() == status {
            return res;
        }
        assert!(
            Instant::now() < deadline,
            "/healthz never answered {status}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An in-process server; dropping `stop` (or sending on it) starts draining.
pub(crate) struct Server<E> {
    pub url: String,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<Result<(), E>>,
}

impl<E: Send + 'static> Server<E> {
    /// Spawns `serve(listener, shutdown)` on a task, `shutdown` resolving on `stop`.
    pub(crate) fn spawn<F>(
        listener: tokio::net::TcpListener,
        serve: impl FnOnce(tokio::net::TcpListener, oneshot::Receiver<()>) -> F,
    ) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        Self {
            url,
            stop: Some(tx),
            task: tokio::spawn(serve(listener, rx)),
        }
    }
}

/// The real binary as a child process; killed on drop.
pub(crate) struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns `cmd`, waits for its `listening on <addr>` line, and keeps draining its stdout.
pub(crate) fn spawn(mut cmd: Command) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("no `listening on` line");
        if let Some(a) = line.strip_prefix("listening on ") {
            break a.trim().parse().unwrap();
        }
    };
    Proc {
        child,
        addr,
        lines: rx,
    }
}

/// Sends SIGTERM to `child`.
pub(crate) fn kill_term(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The binary with registration pointed at `fake`.
pub(crate) fn registering(
    bin: &Bin,
    dir: &TempDir,
    fake: &FakeBalancer,
    grace: &str,
    interval: &str,
) -> Command {
    let mut cmd = bin.command(dir.path(), "reg-bin", grace);
    cmd.env("BALANCER_REGISTER_URL", fake.url(bin.pool))
        .env("BALANCER_ADMIN_TOKEN", "t0k")
        .env("REGISTER_INTERVAL", interval);
    cmd
}
