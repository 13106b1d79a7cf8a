//! A throwaway PostgreSQL server from Debian's `postgresql` binaries, for tests that need the
//! database an operator would provide (the swarm lab's shared roster).
//!
//! `initdb` into a directory under `target/`, `postgres` on the given addresses and a free
//! port, trust authentication for the listed networks; stopped (fast shutdown) and removed by
//! `Drop`. PostgreSQL refuses to run as root, so as root it runs as the `postgres` user the
//! Debian package creates.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::docker::run;
use crate::stack::wait_for;

/// A running server; stopped and its directory removed when dropped.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    dir: PathBuf,
    /// The port it listens on.
    pub port: u16,
}

/// Where Debian put the newest server binaries (`/usr/lib/postgresql/<version>/bin`).
pub fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    dirs.sort_by_key(|d| {
        d.parent()
            .and_then(Path::file_name)
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    dirs.pop()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

/// `program` as the `postgres` user when we are root. `setpriv` execs it in place, so the
/// child's pid is the server's own and a signal reaches it. It runs in the temp dir, not the
/// checkout's folder, which that user may not enter.
fn as_server_user(program: &Path) -> Command {
    let mut c = if is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        c
    } else {
        Command::new(program)
    };
    c.current_dir(std::env::temp_dir());
    c
}

impl Postgres {
    /// Starts a server listening on 127.0.0.1 and `extra_listen`, trusting connections from
    /// loopback and `trusted` (CIDRs). Its only role is `lab`, a superuser; the database is
    /// `lab`.
    pub fn start(name: &str, extra_listen: &[Ipv4Addr], trusted: &[&str]) -> Result<Self> {
        let bin = bin_dir().context(
            "PostgreSQL's server binaries are missing (Debian: apt-get install postgresql)",
        )?;
        // Under the system's temp dir, not the checkout: the server runs as `postgres`, which
        // may not enter the folders above a clone (a `mktemp -d` one is 0700).
        let dir = std::env::temp_dir().join(format!("lab-tests-pg-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        if is_root() {
            run(Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir))?;
        }
        let data = dir.join("data");
        run(as_server_user(&bin.join("initdb"))
            .args(["-U", "lab", "--auth=trust", "-E", "UTF8", "-D"])
            .arg(&data))?;
        let mut hba = String::new();
        for net in trusted {
            hba.push_str(&format!("host all all {net} trust\n"));
        }
        let hba_file = data.join("pg_hba.conf");
        let mut conf = std::fs::read_to_string(&hba_file)?;
        conf.push_str(&hba);
        std::fs::write(&hba_file, conf)?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let listen: Vec<String> = std::iter::once("127.0.0.1".to_owned())
            .chain(extra_listen.iter().map(ToString::to_string))
            .collect();
        let child = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&dir)
            .args(["-p", &port.to_string(), "-c"])
            .arg(format!("listen_addresses={}", listen.join(",")))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(dir.join("server.log"))?))
            .spawn()
            .context("cannot start postgres")?;
        let server = Self { child, dir, port };
        let ready = bin.join("pg_isready");
        wait_for(Duration::from_secs(30), || {
            Ok(Command::new(&ready)
                .args(["-h", "127.0.0.1", "-U", "lab", "-p", &port.to_string()])
                .output()
                .is_ok_and(|o| o.status.success()))
        })
        .context("postgres did not become ready")?;
        run(Command::new(bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "lab"])
            .args(["-d", "postgres", "-c", "CREATE DATABASE lab"]))?;
        Ok(server)
    }

    /// The URL a client at `host` uses.
    pub fn url(&self, host: &str) -> String {
        format!("postgres://lab@{host}:{}/lab", self.port)
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's fast shutdown: clients are disconnected, nothing waits.
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        if wait_for(Duration::from_secs(10), || {
            Ok(self.child.try_wait()?.is_some())
        })
        .is_err()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether PostgreSQL can be started here; `Err` says why not.
pub fn available() -> Result<()> {
    if bin_dir().is_none() {
        bail!("PostgreSQL's server binaries are missing (Debian: apt-get install postgresql)");
    }
    Ok(())
}
