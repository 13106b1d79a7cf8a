//! A throwaway PostgreSQL for the tests, and one fresh database per test.
//!
//! `STUDENT_TEST_DATABASE_URL` (a superuser or a role with CREATEDB) names a server to use;
//! otherwise each test binary starts its own from Debian's binaries
//! (`/usr/lib/postgresql/*/bin`): `initdb` into a temp dir, then `postgres` on a free
//! loopback port, as the `postgres` user when the tests run as root (PostgreSQL refuses
//! root). Without binaries the PostgreSQL tests are skipped with the reason printed, unless
//! `CI=true`, where they fail.
//!
//! `postgres` runs under a small `sh` that holds a pipe from the test process: when the test
//! process ends, however it ends, the pipe closes and the shell stops the server (and, for
//! the binary's shared server, removes its files). Tests that stop or pause a server get one
//! of their own ([`PgServer::start`]); the others share one ([`shared_admin_url`]).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_postgres::NoTls;

/// Runs postgres (`$0 "$@"`) in the background, prints its pid, and when stdin closes
/// stops it with SIGQUIT (immediate shutdown; woken first should a test have frozen it:
/// postgres then SIGKILLs its still frozen children after 5 s), waits, and removes
/// `$PG_CLEANUP` if set.
const WRAPPER: &str = r#"
"$0" "$@" </dev/null >>"$PG_LOG" 2>&1 &
pg=$!
echo "$pg"
read _ignored
kill -QUIT "$pg" 2>/dev/null
kill -CONT "$pg" 2>/dev/null
wait "$pg"
[ -z "$PG_CLEANUP" ] || rm -rf "$PG_CLEANUP"
"#;

/// A PostgreSQL server of this test process, on 127.0.0.1, trusting local connections.
pub(crate) struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    /// Whether the wrapper removes `dir` on exit (the shared server, never dropped).
    cleanup_by_wrapper: bool,
    running: Mutex<Option<Running>>,
}

struct Running {
    wrapper: Child,
    stdin: ChildStdin,
    postmaster: u32,
}

impl PgServer {
    /// Makes a cluster in a fresh temp dir and starts it; `Err` says why it cannot.
    pub(crate) fn start() -> Result<Self, String> {
        Self::start_with(false)
    }

    fn start_with(cleanup_by_wrapper: bool) -> Result<Self, String> {
        let bin = bin_dir().ok_or(
            "no PostgreSQL binaries (looked for /usr/lib/postgresql/*/bin/initdb and initdb \
             on PATH; Debian: apt-get install postgresql)",
        )?;
        let run_as = run_as()?;
        let dir = std::env::temp_dir().join(format!(
            "student-api-pg-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .map_err(|e| format!("chown {}: {e}", dir.display()))?;
        }
        let mut server = Self {
            dir,
            bin,
            port: 0,
            run_as,
            cleanup_by_wrapper,
            running: Mutex::new(None),
        };
        server.initdb()?;
        let mut last = String::new();
        for _ in 0..3 {
            server.port = free_port();
            match server.launch() {
                Ok(()) => return Ok(server),
                // Another process may have taken the port between our probe and postgres.
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// A URL for database `db` on this server, as the superuser `postgres`.
    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown, like a crash: clients are cut
    /// off and the next start replays the WAL) and waits until it is gone.
    pub(crate) fn stop(&self) {
        let Some(mut run) = self.lock().take() else {
            return;
        };
        signal("QUIT", &run.postmaster.to_string());
        drop(run.stdin);
        let deadline = Instant::now() + Duration::from_secs(20);
        while run.wrapper.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                signal("KILL", &format!("-{}", run.wrapper.id()));
                let _ = run.wrapper.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the stopped server again, on the same port and data.
    pub(crate) fn restart(&self) -> Result<(), String> {
        self.launch()
    }

    /// Freezes every process of the server (SIGSTOP): connections hang, nothing is refused.
    pub(crate) fn pause(&self) {
        self.signal_all("STOP");
    }

    /// Undoes [`PgServer::pause`].
    pub(crate) fn resume(&self) {
        self.signal_all("CONT");
    }

    /// Signals the postmaster and its children. Not a process group: each backend leads a
    /// session of its own (postgres calls `setsid`).
    fn signal_all(&self, sig: &str) {
        let Some(postmaster) = self.lock().as_ref().map(|r| r.postmaster) else {
            return;
        };
        signal(sig, &postmaster.to_string());
        for child in children(postmaster) {
            signal(sig, &child.to_string());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("postgres.log")
    }

    /// `program` from the PostgreSQL bin dir, as the user PostgreSQL runs as.
    fn command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        match self.run_as {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .arg("--clear-groups")
                    .arg(program);
                cmd
            }
            None => Command::new(program),
        }
    }

    fn initdb(&self) -> Result<(), String> {
        let out = self
            .command("initdb")
            .arg("-D")
            .arg(self.data())
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
            .args(["--no-sync", "--no-instructions"])
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    fn launch(&self) -> Result<(), String> {
        let mut cmd = match self.run_as {
            Some((uid, gid)) => {
                let mut cmd = Command::new("setpriv");
                cmd.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={gid}"))
                    .args(["--clear-groups", "sh"]);
                cmd
            }
            None => Command::new("sh"),
        };
        cmd.arg("-c")
            .arg(WRAPPER)
            .arg(self.bin.join("postgres"))
            .arg("-D")
            .arg(self.data())
            .arg("-k")
            .arg(&self.dir)
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            // The tests check what a client sees (201 only after COMMIT), not the disk.
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .env("PG_LOG", self.log())
            .env(
                "PG_CLEANUP",
                if self.cleanup_by_wrapper {
                    &*self.dir
                } else {
                    Path::new("")
                },
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group: a Ctrl-C of the tests reaches it only through the pipe.
            .process_group(0);
        let mut wrapper = cmd.spawn().map_err(|e| format!("starting postgres: {e}"))?;
        let stdin = wrapper.stdin.take().ok_or("no stdin")?;
        let mut line = String::new();
        let stdout = wrapper.stdout.take().ok_or("no stdout")?;
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("reading the postmaster pid: {e}"))?;
        let postmaster = line
            .trim()
            .parse()
            .map_err(|_| format!("no postmaster pid from the wrapper: {line:?}"))?;
        *self.lock() = Some(Running {
            wrapper,
            stdin,
            postmaster,
        });
        self.wait_ready()
    }

    fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-U", "postgres", "-t", "1"])
                .args(["-p", &self.port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return Ok(());
            }
            let exited = self
                .lock()
                .as_mut()
                .is_none_or(|r| r.wrapper.try_wait().ok().flatten().is_some());
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                self.stop();
                return Err(format!("postgres did not start:\n{log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.resume();
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The PostgreSQL bin dir: the newest `/usr/lib/postgresql/N/bin`, else `initdb`'s on PATH.
fn bin_dir() -> Option<PathBuf> {
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    debian.sort();
    debian.pop().map(|(_, bin)| bin).or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path).find(|d| d.join("initdb").exists())
    })
}

/// The uid and gid to run PostgreSQL as: none when not root, `postgres` when root.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|id| id.parse::<u32>().ok());
    if euid != Some(0) {
        return Ok(None);
    }
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    match (id("-u"), id("-g")) {
        (Some(uid), Some(gid)) => Ok(Some((uid, gid))),
        _ => Err("running as root and there is no `postgres` user to run PostgreSQL as".into()),
    }
}

/// The pids whose parent is `pid`, from `/proc`.
fn children(pid: u32) -> Vec<u32> {
    let parent_of = |stat: &str| -> Option<u32> {
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after its `)`.
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| parent_of(&s))
                == Some(pid)
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn signal(sig: &str, target: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, "--", target])
        .stderr(Stdio::null())
        .status();
}

/// Says (once per test binary, past the output capture) why the PostgreSQL tests are
/// skipped; with `CI=true` fails the test instead.
pub(crate) fn unavailable(reason: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("PostgreSQL tests cannot run: {reason} (CI=true: not skipping)");
    }
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        let _ = writeln!(
            std::io::stderr(),
            "skipping PostgreSQL tests: {reason}; set STUDENT_TEST_DATABASE_URL or install \
             PostgreSQL to run them"
        );
    });
}

/// The shared server's URL for its `postgres` database (or `STUDENT_TEST_DATABASE_URL`);
/// `None` (after [`unavailable`]) when there is none.
pub(crate) fn shared_admin_url() -> Option<&'static str> {
    static SHARED: OnceLock<Result<(String, Option<PgServer>), String>> = OnceLock::new();
    let shared = SHARED.get_or_init(|| {
        if let Some(url) = std::env::var("STUDENT_TEST_DATABASE_URL")
            .ok()
            .filter(|u| !u.is_empty())
        {
            return Ok((url, None));
        }
        // Never dropped: the wrapper stops it and removes its files when the process ends.
        let server = PgServer::start_with(true)?;
        Ok((server.url("postgres"), Some(server)))
    });
    match shared {
        Ok((url, _)) => Some(url),
        Err(reason) => {
            unavailable(reason);
            None
        }
    }
}

/// A database of its own for one test, dropped afterwards.
pub(crate) struct TestDb {
    /// Its URL.
    pub url: String,
    admin_url: String,
    name: String,
}

impl TestDb {
    /// Creates a database named after `tag` on the server `admin_url` points to.
    pub(crate) fn create(admin_url: &str, tag: &str) -> Self {
        let mut name: String = format!("t_{tag}")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        name.push_str(&format!(
            "_{}_{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        admin_sql(admin_url, format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        Self {
            url: with_database(admin_url, &name),
            admin_url: admin_url.to_owned(),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = admin_sql(
            &self.admin_url,
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Runs `sql` on a connection of its own, on a thread of its own (callers may be inside a
/// runtime already), giving up after 10 s (a test may have stopped or frozen the server).
fn admin_sql(admin_url: &str, sql: String) -> Result<(), String> {
    let url = admin_url.to_owned();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let work = async {
            let (client, conn) = tokio_postgres::connect(&url, NoTls)
                .await
                .map_err(|e| format!("{e:?}"))?;
            tokio::spawn(conn);
            client
                .batch_execute(&sql)
                .await
                .map_err(|e| format!("{e:?}"))
        };
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), work)
                .await
                .unwrap_or_else(|_| Err("no answer within 10 s".into()))
        })
    })
    .join()
    .unwrap_or_else(|_| Err("admin thread panicked".into()))
}

/// `url` with its database (the path) replaced by `db`, query kept.
pub(crate) fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority_at = base.find("://").map_or(0, |i| i + 3);
    let authority_at = base
        .rfind('@')
        .map_or(authority_at, |i| i.max(authority_at));
    let host_end = base[authority_at..]
        .find('/')
        .map_or(base.len(), |i| authority_at + i);
    format!("{}/{db}{query}", &base[..host_end])
}

/// Every id in the `students` table of `url`.
pub(crate) async fn stored_ids(url: &str) -> Vec<String> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
        .query("SELECT id FROM students", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}
