//! The real `balancer` binary as a server: hot reload (file change, SIGHUP, an invalid file
//! keeps the old config) without losing requests, the access log file, draining on SIGTERM,
//! the default pools from `STATIC_BACKEND`/`DYNAMIC_BACKEND`, and no failed request when a
//! backend process is SIGKILLed under load.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use common::{Backend, eventually, temp_dir, wait_until};

const BIN: &str = env!("CARGO_BIN_EXE_balancer");

/// Replaces a file the way editors do: write a sibling, rename over.
fn replace_file(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A backend that names itself in every answer and has a /healthz.
async fn backend(name: &'static str) -> SocketAddr {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .fallback(move || async move { ([("x-backend", name)], name) });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    addr
}

/// The binary, killed on drop.
struct Proc {
    child: Child,
    proxy: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_balancer(config: &Path) -> Proc {
    spawn_balancer_with(config, &[])
}

/// The binary with only `config`, loopback listeners and `env` in its environment.
fn spawn_balancer_with(config: &Path, env: &[(&str, String)]) -> Proc {
    let child = Command::new(BIN)
        .env_clear()
        .env("BALANCER_CONFIG", config)
        .env("BALANCER_LISTEN", "127.0.0.1:0")
        .env("BALANCER_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn balancer");
    // Killed on drop from here on, also if it never says where it listens.
    let mut p = Proc {
        child,
        proxy: ([0, 0, 0, 0], 0).into(),
        admin: ([0, 0, 0, 0], 0).into(),
    };
    let stdout = p.child.stdout.take().unwrap();
    // Log lines may come first (a name not resolvable yet): skip to the listeners.
    let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
    let mut listening = || -> SocketAddr {
        let line = lines
            .find_map(|l| l.strip_prefix("listening on ").map(str::to_owned))
            .expect("balancer exited before listening");
        line.trim_end_matches("(admin)").trim().parse().unwrap()
    };
    p.proxy = listening();
    p.admin = listening();
    p
}

/// [`spawn_balancer`] from a test runtime: it blocks until the binary prints its addresses,
/// so it runs on a blocking thread.
async fn spawn_balancer_async(config: &Path) -> Proc {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || spawn_balancer(&config))
        .await
        .unwrap()
}

async fn upstream_of(client: &reqwest::Client, proxy: SocketAddr) -> String {
    let r = client
        .get(format!("http://{proxy}/api/student"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.headers()["x-backend"].to_str().unwrap().to_owned()
}

async fn wait_for_upstream(client: &reqwest::Client, proxy: SocketAddr, want: &str) {
    eventually(&format!("a switch to {want}"), async || {
        upstream_of(client, proxy).await == want
    })
    .await;
}

#[tokio::test]
async fn static_backend_and_dynamic_backend_fill_the_default_pools_behind_the_default_routes() {
    let site = backend("site").await;
    let (api1, api2) = (backend("api1").await, backend("api2").await);
    let dir = temp_dir("env-pools");
    let file = dir.path().join("empty.toml");
    std::fs::write(&file, "").unwrap();
    let env = [
        // A DNS name for the static pool, two addresses for the dynamic one.
        ("STATIC_BACKEND", format!("localhost:{}", site.port())),
        ("DYNAMIC_BACKEND", format!("{api1} {api2}")),
    ];
    let p = tokio::task::spawn_blocking(move || spawn_balancer_with(&file, &env))
        .await
        .unwrap();
    let (client, proxy) = (reqwest::Client::new(), p.proxy);
    let backend_of = |path: &'static str| {
        let client = client.clone();
        async move {
            let r = client
                .get(format!("http://{proxy}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.headers()["x-backend"].to_str().unwrap().to_owned()
        }
    };
    for path in ["/", "/index.html", "/api", "/apix", "/static/api/student"] {
        assert_eq!(backend_of(path).await, "site", "{path} is static");
    }
    let mut seen = std::collections::BTreeSet::new();
    for path in [
        "/api/student",
        "/api/student",
        "/api/other",
        "/api/student/7",
    ] {
        let b = backend_of(path).await;
        assert!(b == "api1" || b == "api2", "{path} is dynamic, went to {b}");
        seen.insert(b);
    }
    assert_eq!(
        seen.len(),
        2,
        "round-robin over both DYNAMIC_BACKEND members"
    );
}

fn pool_config(member: SocketAddr) -> String {
    format!("[pools.dynamic]\nmembers = [\"{member}\"]\n[pools.static]\nmembers = [\"{member}\"]\n")
}

/// [`pool_config`] with health checks off, for a member that answers only what it is told.
fn unchecked_pool_config(member: SocketAddr) -> String {
    pool_config(member)
        + "[pools.dynamic.health]\nenabled = false\n[pools.static.health]\nenabled = false\n"
}

#[tokio::test]
async fn editing_the_file_reloads_without_restart_and_a_bad_edit_keeps_the_old_config() {
    let a = backend("a").await;
    let b = backend("b").await;
    let dir = temp_dir("reload");
    let file = dir.path().join("balancer.toml");
    std::fs::write(&file, pool_config(a)).unwrap();
    let p = spawn_balancer_async(&file).await;
    let client = reqwest::Client::new();
    assert_eq!(upstream_of(&client, p.proxy).await, "a");

    // Requests keep flowing through every reload.
    let load = {
        let client = client.clone();
        let proxy = p.proxy;
        tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut total = 0;
            let end = Instant::now() + Duration::from_secs(4);
            while Instant::now() < end {
                let r = client
                    .get(format!("http://{proxy}/api/student"))
                    .send()
                    .await;
                total += 1;
                match r {
                    Ok(r) if r.status() == 200 => {}
                    Ok(r) => failures.push(format!(
                        "status {} from {:?}",
                        r.status(),
                        r.headers().get("x-upstream")
                    )),
                    Err(e) => failures.push(format!("{e:?}")),
                }
            }
            (total, failures)
        })
    };

    replace_file(&file, &pool_config(b));
    wait_for_upstream(&client, p.proxy, "b").await;

    replace_file(&file, "[pools.dynamic]\nalgoritm = \"random\"\n");
    let mut s = serde_json::Value::Null;
    eventually("the bad edit reported", async || {
        s = common::admin_status(&client, p.admin).await;
        s["reload"]["ok"] == false
    })
    .await;
    assert!(
        s["reload"]["error"].as_str().unwrap().contains("algoritm"),
        "{s}"
    );
    assert_eq!(
        upstream_of(&client, p.proxy).await,
        "b",
        "old config must keep serving"
    );

    let (total, failures) = load.await.unwrap();
    assert!(total > 10);
    assert!(
        failures.is_empty(),
        "{} of {total} requests failed during reloads: {failures:?}",
        failures.len()
    );
}

#[tokio::test]
async fn sighup_reloads() {
    let a = backend("a").await;
    let dir = temp_dir("sighup");
    let file = dir.path().join("balancer.toml");
    std::fs::write(&file, pool_config(a)).unwrap();
    let p = spawn_balancer_async(&file).await;
    let client = reqwest::Client::new();
    assert_eq!(
        common::admin_status(&client, p.admin).await["reload"]["at"],
        0.0
    );
    let ok = Command::new("kill")
        .args(["-HUP", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    eventually("a reload after SIGHUP", async || {
        common::admin_status(&client, p.admin).await["reload"]["at"] != 0.0
    })
    .await;
    assert_eq!(
        common::admin_status(&client, p.admin).await["reload"]["ok"],
        true
    );
    assert_eq!(upstream_of(&client, p.proxy).await, "a");
}

#[test]
fn the_access_log_records_a_retried_request() {
    let live = Backend::start("live");
    let dead = common::refused_addr();
    let dir = temp_dir("access-log");
    let log = dir.path().join("access.log");
    let file = dir.path().join("balancer.toml");
    // Weighted least-connections with the refused member at weight 3: with nothing in flight
    // it is always the least loaded, so the request goes there first, then to `live`.
    std::fs::write(
        &file,
        format!(
            "access_log = \"{}\"\n\
             [pools.dynamic]\nmembers = [\"{dead}*3\", \"{live}\"]\n\
             algorithm = \"least-connections\"\nmax_fails = 0\n\
             [pools.dynamic.health]\nenabled = false\n\
             [pools.static]\nmembers = [\"{live}\"]\n",
            log.display(),
            live = live.member(),
        ),
    )
    .unwrap();
    let p = spawn_balancer(&file);
    let body = common::runtime().block_on(async {
        let resp = common::client()
            .get(format!("http://{}/api/student?probe=1", p.proxy))
            .header("x-request-id", "access-log-probe-42")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    });
    assert_eq!(body, "live");
    let entry = log_lines(&log, 1, |l| l.contains("access-log-probe-42")).remove(0);
    let line = entry.to_string();
    let f = &entry["fields"];
    assert_eq!(f["method"], "GET", "{line}");
    assert_eq!(f["path"], "/api/student?probe=1", "{line}");
    assert_eq!(f["status"], 200, "{line}");
    assert_eq!(f["pool"], "dynamic", "{line}");
    assert_eq!(
        f["upstream"],
        live.member(),
        "the member that answered: {line}"
    );
    assert_eq!(f["attempts"], 2, "refused, then answered: {line}");
    assert_eq!(f["bytes"], body.len(), "{line}");
    assert_eq!(f["request_id"], "access-log-probe-42", "{line}");
    assert_eq!(f["outcome"], "ok", "{line}");
    let ms = f["ms"].as_str().and_then(|v| v.parse::<f64>().ok());
    assert!(ms.is_some_and(|ms| ms >= 0.0), "a duration in ms: {line}");
}

/// The access-log lines (JSON) of `log` once `want` of them match `pick`.
fn log_lines(log: &Path, want: usize, pick: impl Fn(&str) -> bool) -> Vec<serde_json::Value> {
    let mut found = Vec::new();
    let complete = wait_until(Duration::from_secs(10), || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        found = text
            .lines()
            .filter(|l| pick(l))
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        found.len() >= want
    });
    assert!(
        complete,
        "{} of {want} lines in {}",
        found.len(),
        log.display()
    );
    found
}

#[test]
fn a_client_gone_before_its_answer_and_refused_heads_are_logged_too() {
    let (member, arrived, release) = held_member();
    let dir = temp_dir("access-log-499");
    let log = dir.path().join("access.log");
    let file = dir.path().join("balancer.toml");
    std::fs::write(
        &file,
        format!(
            "access_log = \"{}\"\n{}",
            log.display(),
            unchecked_pool_config(member)
        ),
    )
    .unwrap();
    let p = spawn_balancer(&file);
    let mut client = std::net::TcpStream::connect(p.proxy).unwrap();
    client
        .write_all(b"GET /api/student HTTP/1.1\r\nHost: lb\r\nX-Request-Id: left-early\r\n\r\n")
        .unwrap();
    arrived
        .recv_timeout(Duration::from_secs(10))
        .expect("the request reached the member");
    drop(client);
    let gone = &log_lines(&log, 1, |l| l.contains("left-early"))[0]["fields"];
    assert_eq!(gone["status"], 499, "{gone}");
    assert_eq!(gone["outcome"], "client-closed", "{gone}");
    assert_eq!(
        gone["upstream"],
        member.to_string(),
        "the member it waited for"
    );
    assert_eq!(gone["attempts"], 1, "{gone}");
    let _ = release.send(());

    // Heads the parser refuses get a line each (no method, path or id to name) and count.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: lb\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    for (head, status) in [
        (b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400),
        (huge.into_bytes(), 431),
    ] {
        let resp = common::raw_exchange(p.proxy, &head, Duration::from_secs(10));
        assert_eq!(common::raw_status(&resp), status, "{resp}");
    }
    let refused = log_lines(&log, 2, |l| l.contains("\"refused\""));
    // Each is written when its connection ends, possibly on different workers: any order.
    let mut statuses: Vec<_> = refused
        .iter()
        .map(|e| e["fields"]["status"].as_u64().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [400, 431], "{refused:?}");
    assert!(
        refused.iter().all(|e| e["fields"]["method"] == "-"),
        "{refused:?}"
    );
    let metrics = common::raw_exchange(
        p.admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    for code in [400, 431] {
        let counted = format!("balancer_local_responses_total{{pool=\"-\",code=\"{code}\"}} 1");
        assert!(metrics.contains(&counted), "{counted} in {metrics}");
    }
}

/// A member that takes one request and holds its answer until `release` sends: says when the
/// request has arrived.
fn held_member() -> (SocketAddr, mpsc::Receiver<()>, mpsc::Sender<()>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (arrived_tx, arrived) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let (mut head, mut buf) = (Vec::new(), [0u8; 1024]);
        while common::find(&head, b"\r\n\r\n").is_none() {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = arrived_tx.send(());
        if release_rx.recv().is_ok() {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld");
        }
    });
    (addr, arrived, release)
}

#[test]
fn sigterm_stops_accepting_finishes_the_request_in_flight_and_exits_0() {
    let (member, arrived, release) = held_member();
    let dir = temp_dir("sigterm");
    let file = dir.path().join("balancer.toml");
    std::fs::write(&file, unchecked_pool_config(member)).unwrap();
    let mut p = spawn_balancer(&file);
    let proxy = p.proxy;
    let in_flight = std::thread::spawn(move || {
        let req = b"GET /api/student HTTP/1.1\r\nHost: lb\r\n\r\n";
        common::raw_exchange(proxy, req, Duration::from_secs(30))
    });
    arrived
        .recv_timeout(Duration::from_secs(10))
        .expect("the request reached the member");
    let ok = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    // The member still holds the answer: the balancer is draining, not gone.
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(proxy).is_err()
        }),
        "new connections are refused while the request is in flight"
    );
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "the balancer waits for the request in flight"
    );
    release.send(()).unwrap();
    let resp = in_flight.join().unwrap();
    assert_eq!(common::raw_status(&resp), 200, "{resp}");
    assert!(resp.ends_with("held"), "{resp}");
    let mut exit = None;
    assert!(
        wait_until(Duration::from_secs(10), || {
            exit = p.child.try_wait().unwrap();
            exit.is_some()
        }),
        "the balancer exits once drained"
    );
    assert_eq!(exit.unwrap().code(), Some(0));
}

/// Set in the environment of [`child_backend`] when a test starts it as a separate process.
const CHILD_BACKEND: &str = "BALANCER_TEST_CHILD_BACKEND";

/// Not a test on its own: with [`CHILD_BACKEND`] set, this test binary becomes a backend
/// process (the `backend` app), prints its address and serves until it is killed.
#[test]
#[ignore = "run as a child process by killing_a_backend_process_under_load_fails_no_request"]
fn child_backend() {
    let Ok(name) = std::env::var(CHILD_BACKEND) else {
        return;
    };
    let name: &'static str = Box::leak(name.into_boxed_str());
    // Gone with the parent: its end of stdin closes however it dies.
    std::thread::spawn(|| {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        std::process::exit(0);
    });
    common::runtime().block_on(async {
        println!("child-backend {}", backend(name).await);
        std::future::pending::<()>().await;
    });
}

/// A backend in its own process, SIGKILLed on drop.
struct ChildBackend {
    child: Child,
    addr: SocketAddr,
}

impl ChildBackend {
    fn start(name: &str) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_backend", "--ignored", "--nocapture"])
            .env(CHILD_BACKEND, name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn a backend process");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = lines
            .map_while(Result::ok)
            .find_map(|l| l.strip_prefix("child-backend ").map(str::to_owned))
            .expect("the backend process printed its address")
            .parse()
            .unwrap();
        ChildBackend { child, addr }
    }
}

impl Drop for ChildBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn killing_a_backend_process_under_load_fails_no_request() {
    let mut bs: Vec<_> = ["a", "b", "c"]
        .into_iter()
        .map(ChildBackend::start)
        .collect();
    let dir = temp_dir("kill-9");
    let file = dir.path().join("balancer.toml");
    let members: Vec<_> = bs.iter().map(|b| format!("\"{}\"", b.addr)).collect();
    // The lab's dynamic pool as shipped (round-robin, retries, health checks), three members.
    std::fs::write(
        &file,
        format!(
            "[pools.dynamic]\nmembers = [{m}]\n[pools.static]\nmembers = [{m}]\n",
            m = members.join(", ")
        ),
    )
    .unwrap();
    let p = spawn_balancer(&file);
    let url = format!("http://{}/api/student", p.proxy);
    let rt = common::runtime();
    let end = Instant::now() + Duration::from_secs(3);
    let killed = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..16)
        .map(|_| {
            let (url, killed) = (url.clone(), Arc::clone(&killed));
            rt.spawn(async move {
                let c = common::client();
                let (mut after_kill, mut errors) = (BTreeMap::<String, u64>::new(), Vec::new());
                while Instant::now() < end {
                    let was_killed = killed.load(Ordering::SeqCst);
                    match c.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            let who = r.headers()["x-backend"].to_str().unwrap().to_owned();
                            match r.text().await {
                                Ok(_) if was_killed => *after_kill.entry(who).or_default() += 1,
                                Ok(_) => {}
                                Err(e) => errors.push(format!("body: {e}")),
                            }
                        }
                        Ok(r) => errors.push(format!("status {}", r.status())),
                        Err(e) => errors.push(format!("error: {e}")),
                    }
                }
                (after_kill, errors)
            })
        })
        .collect();
    // Deliberately a second of load on all three before the kill, so the kill lands mid-stream.
    std::thread::sleep(Duration::from_secs(1));
    // SIGKILL: the process gets no chance to close anything itself.
    bs[1].child.kill().unwrap();
    bs[1].child.wait().unwrap();
    killed.store(true, Ordering::SeqCst);
    let (mut served, mut errors) = (BTreeMap::<String, u64>::new(), Vec::new());
    for c in clients {
        let (s, e) = rt.block_on(c).unwrap();
        for (who, n) in s {
            *served.entry(who).or_default() += n;
        }
        errors.extend(e);
    }
    assert!(
        errors.is_empty(),
        "{} requests failed: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(
        !served.contains_key("b"),
        "the killed process answered: {served:?}"
    );
    for who in ["a", "c"] {
        assert!(
            served.get(who).is_some_and(|&n| n > 50),
            "{who} kept serving after the kill: {served:?}"
        );
    }
}

/// `--healthcheck` (the image's HEALTHCHECK) probes the admin `/healthz` of the configured
/// admin address, a wildcard on loopback: exit 0 while the balancer runs, 1 naming the
/// address and the cause once it is gone.
#[test]
fn healthcheck_exits_0_while_running_and_1_naming_the_cause_when_not() {
    let dir = temp_dir("healthcheck");
    let file = dir.path().join("empty.toml");
    std::fs::write(&file, "").unwrap();
    let p = spawn_balancer(&file);
    let admin = format!("0.0.0.0:{}", p.admin.port());
    let healthcheck = || {
        Command::new(BIN)
            .env_clear()
            .env("BALANCER_CONFIG", &file)
            .env("BALANCER_ADMIN_LISTEN", &admin)
            .arg("--healthcheck")
            .output()
            .unwrap()
    };
    let up = healthcheck();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    drop(p);
    let down = healthcheck();
    assert_eq!(down.status.code(), Some(1));
    let err = String::from_utf8_lossy(&down.stderr);
    assert!(
        err.starts_with(&format!(
            "balancer: unhealthy: cannot reach 127.0.0.1:{}: ",
            &admin[8..]
        )),
        "{err}"
    );
}

#[test]
fn a_load_runs_requests_are_marked_in_the_access_log() {
    let live = Backend::start("live");
    let dir = temp_dir("access-log-load");
    let log = dir.path().join("access.log");
    let file = dir.path().join("balancer.toml");
    std::fs::write(
        &file,
        format!(
            "access_log = \"{}\"\nadmin_token = \"t\"\n\
             [pools.dynamic]\nmembers = [\"{live}\"]\n\
             [pools.dynamic.health]\nenabled = false\n\
             [pools.static]\nmembers = [\"{live}\"]\n",
            log.display(),
            live = live.member(),
        ),
    )
    .unwrap();
    let p = spawn_balancer(&file);
    let run = common::runtime().block_on(async {
        let http = common::client();
        let ok = http
            .get(format!("http://{}/api/student?plain=1", p.proxy))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
        let r = http
            .post(format!("http://{}/api/load", p.admin))
            .bearer_auth("t")
            .json(&serde_json::json!({"path": "/api/student?load=1", "rate": 5, "seconds": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        let v: serde_json::Value = r.json().await.unwrap();
        v["run"].as_str().unwrap().to_owned()
    });
    let lines = log_lines(&log, 5, |l| l.contains("load=1"));
    for entry in &lines {
        assert_eq!(entry["fields"]["load"], run.as_str(), "{entry}");
        assert_eq!(entry["fields"]["upstream"], live.member(), "{entry}");
    }
    let plain = log_lines(&log, 1, |l| l.contains("plain=1")).remove(0);
    assert!(plain["fields"].get("load").is_none(), "{plain}");
}
