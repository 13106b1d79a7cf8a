//! A throwaway PostgreSQL server for tests, from Debian's `postgresql` binaries
//! (`/usr/lib/postgresql/*/bin`, else `initdb` on PATH): `initdb` into a fresh temp dir, then
//! `postgres` on a free loopback port (and any extra addresses), trusting local connections
//! and the networks the caller lists. PostgreSQL refuses to run as root, so as root it runs as
//! the `postgres` user the Debian package creates; its directory is under the system's temp
//! dir, which that user can enter (a checkout's folders may be closed to it).
//!
//! `postgres` runs under a small `sh` that holds a pipe from the test process: when the test
//! process ends, however it ends, the pipe closes and the shell stops the server (and, with
//! [`Options::cleanup_on_exit`], removes its files). Dropping a [`PgServer`] stops it and
//! removes its files at once.
//!
//! Used by student-api's store tests and the whole-stack swarm test (`lab-tests`).

use std::io::{BufRead, BufReader};
use std::net::Ipv4Addr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a server could not be made or started (the reason, with the server's log if any).
#[derive(Debug)]
pub struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl From<String> for Error {
    fn from(s: String) -> Self {
        Error(s)
    }
}

impl From<&str> for Error {
    fn from(s: &str) -> Self {
        Error(s.to_owned())
    }
}

/// How to start a server; [`Options::default`] is loopback only, superuser `postgres`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The superuser role `initdb` makes (trust authentication, no password).
    pub superuser: String,
    /// Addresses to listen on besides 127.0.0.1.
    pub extra_listen: Vec<Ipv4Addr>,
    /// Networks (CIDRs) trusted besides the local ones.
    pub trusted: Vec<String>,
    /// Leave the files to the wrapper, which removes them when the test process ends (for a
    /// server kept in a `static`, never dropped).
    pub cleanup_on_exit: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            superuser: "postgres".into(),
            extra_listen: Vec::new(),
            trusted: Vec::new(),
            cleanup_on_exit: false,
        }
    }
}

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
#[derive(Debug)]
pub struct PgServer {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    run_as: Option<(u32, u32)>,
    options: Options,
    running: Mutex<Option<Running>>,
}

#[derive(Debug)]
struct Running {
    wrapper: Child,
    stdin: ChildStdin,
    postmaster: u32,
}

impl PgServer {
    /// Makes a cluster in a fresh temp dir and starts it; `Err` says why it cannot.
    pub fn start(options: Options) -> Result<Self, Error> {
        let bin = bin_dir().ok_or(
            "no PostgreSQL binaries (looked for /usr/lib/postgresql/*/bin/initdb and initdb \
             on PATH; Debian: apt-get install postgresql)",
        )?;
        let run_as = run_as()?;
        let dir =
            std::env::temp_dir().join(format!("pg-harness-{}-{}", std::process::id(), unique()));
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
            options,
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
        Err(last.into())
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `db` on this server, as the superuser, at 127.0.0.1.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{db}",
            self.options.superuser, self.port
        )
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Runs `sql` with `psql` on database `db`, as the superuser.
    pub fn psql(&self, db: &str, sql: &str) -> Result<(), Error> {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
            .args(["-p", &self.port.to_string(), "-U", &self.options.superuser])
            .args(["-d", db, "-c", sql])
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if !out.status.success() {
            return Err(format!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(())
    }

    /// Stops the server at once (SIGQUIT: immediate shutdown, like a crash: clients are cut
    /// off and the next start replays the WAL) and waits until it is gone.
    pub fn stop(&self) {
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
    pub fn restart(&self) -> Result<(), Error> {
        Ok(self.launch()?)
    }

    /// Freezes every process of the server (SIGSTOP): connections hang, nothing is refused.
    pub fn pause(&self) {
        self.signal_all("STOP");
    }

    /// Undoes [`PgServer::pause`].
    pub fn resume(&self) {
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
            .args(["-U", &self.options.superuser, "-A", "trust", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync", "--no-instructions"])
            .output()
            .map_err(|e| format!("running initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if self.options.trusted.is_empty() {
            return Ok(());
        }
        let hba = self.data().join("pg_hba.conf");
        let mut conf =
            std::fs::read_to_string(&hba).map_err(|e| format!("reading pg_hba.conf: {e}"))?;
        for net in &self.options.trusted {
            conf.push_str(&format!("host all all {net} trust\n"));
        }
        std::fs::write(&hba, conf).map_err(|e| format!("writing pg_hba.conf: {e}"))
    }

    fn launch(&self) -> Result<(), String> {
        let listen: Vec<String> = std::iter::once("127.0.0.1".to_owned())
            .chain(self.options.extra_listen.iter().map(ToString::to_string))
            .collect();
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
            .arg("-c")
            .arg(format!("listen_addresses={}", listen.join(",")))
            // The tests check what a client sees (201 only after COMMIT), not the disk.
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .env("PG_LOG", self.log())
            .env(
                "PG_CLEANUP",
                if self.options.cleanup_on_exit {
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
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-U",
                    &self.options.superuser,
                    "-t",
                    "1",
                ])
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

/// A name part no other server of this process has (pid + counter, the clock for processes
/// that reuse a pid).
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{n}-{nanos:08x}")
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

/// Whether a server can be started here; `Err` says why not.
pub fn available() -> Result<(), Error> {
    bin_dir().map(|_| ()).ok_or_else(|| {
        "no PostgreSQL binaries (looked for /usr/lib/postgresql/*/bin/initdb and initdb on \
         PATH; Debian: apt-get install postgresql)"
            .into()
    })
}
