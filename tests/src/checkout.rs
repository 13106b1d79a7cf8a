//! A fresh `git clone` of this repository under another folder name, used the way a newcomer
//! uses one: `./setup.sh` and plain compose commands typed in that folder, with nothing but the
//! clone's own `.env` telling them which project and ports to use.
//!
//! The clone's `.env` gets its own project name and free ports, so it never meets a lab that is
//! running on this machine; the test is that the plain commands find the project through `.env`.
//! The `Drop` guard takes the project down and deletes the clone, also when a test fails.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::docker;
use crate::stack::{free_ports, workspace_root};

/// Variables of the test's own environment that would override the clone's `.env`.
const OVERRIDES: [&str; 6] = [
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_FILE",
    "LAB_HTTP_PORT",
    "LAB_ADMIN_PORT",
    "LAB_BALANCER_CONF_DIR",
    "LAB_WAIT_SECS",
];

/// A clone of the repository's `HEAD` in a temporary folder named unlike the project.
#[derive(Debug)]
pub struct Checkout {
    /// The clone's root folder.
    pub dir: PathBuf,
    /// The project name its `.env` sets.
    pub project: String,
    /// The HTTP port its `.env` publishes.
    pub http_port: u16,
    /// The admin port its `.env` publishes.
    pub admin_port: u16,
}

impl Checkout {
    /// Clones `HEAD` (committed work only) into `<tmp>/<folder>-<pid>` and points its `.env`
    /// at a project and ports of its own; also returns the `.env` as the repository ships it.
    pub fn clone_as(folder: &str) -> Result<(Self, String)> {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("{folder}-{pid}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let project = format!("labtest-{pid}-checkout");
        let (http_port, admin_port) = free_ports()?;
        let checkout = Self {
            dir,
            project,
            http_port,
            admin_port,
        };
        docker::run(
            Command::new("git")
                .args(["clone", "--quiet", "--no-hardlinks"])
                .arg(workspace_root())
                .arg(&checkout.dir),
        )?;
        // Cargo rebuilds a workspace crate whose sources are newer than its last build, and
        // a fresh clone's are: dated back, the clone's build reuses the workspace's release
        // binaries (same target directory, same relative paths) instead of recompiling them,
        // and the workspace's next build stays fresh too.
        docker::run(
            Command::new("find")
                .arg(&checkout.dir)
                .args([
                    "-path", "*/.git", "-prune", "-o", "-exec", "touch", "-h", "-d",
                ])
                .args(["@946684800", "{}", "+"]),
        )?;
        let env_file = checkout.dir.join(".env");
        let shipped = std::fs::read_to_string(&env_file).unwrap_or_default();
        let mut text: String = shipped
            .lines()
            .filter(|l| !l.starts_with("COMPOSE_PROJECT_NAME="))
            .map(|l| format!("{l}\n"))
            .collect();
        text.push_str(&format!(
            "COMPOSE_PROJECT_NAME={}\nLAB_HTTP_PORT={http_port}\nLAB_ADMIN_PORT={admin_port}\nLAB_WAIT_SECS=90\n",
            checkout.project
        ));
        std::fs::write(&env_file, text)?;
        Ok((checkout, shipped))
    }

    /// The project a compose tool would name after the folder (what must never appear).
    pub fn folder_project(&self) -> String {
        self.dir
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect()
    }

    /// A command run in the clone with the test's overrides removed, so only `.env` speaks.
    /// The build shares the workspace's target directory so nothing compiles from scratch.
    fn command(&self, mut cmd: Command) -> Command {
        for var in OVERRIDES {
            cmd.env_remove(var);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| workspace_root().join("target"), PathBuf::from);
        cmd.env("CARGO_TARGET_DIR", target).current_dir(&self.dir);
        cmd
    }

    /// `./setup.sh ARGS` in the clone; its combined output, or an error that carries it.
    pub fn setup(&self, args: &[&str]) -> Result<String> {
        docker::run_combined(
            self.command(Command::new(self.dir.join("setup.sh")))
                .args(args),
            &format!("./setup.sh {} in {}", args.join(" "), self.dir.display()),
        )
    }

    /// A plain compose command typed in the clone (`docker compose ARGS` or `docker-compose
    /// ARGS`): no `-p`, no `-f`.
    pub fn compose(&self, args: &[&str]) -> Result<String> {
        let mut cmd = self.command(docker::compose_command());
        cmd.args(args);
        docker::run(&mut cmd)
    }

    /// A file of the clone.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }
}

impl Drop for Checkout {
    fn drop(&mut self) {
        // Never panic here: this also runs while a failed test unwinds.
        if let Err(e) = self.setup(&["down", "--volumes"]) {
            eprintln!("{}: teardown failed: {e:#}", self.project);
        }
        // Whatever a broken clone left behind, under either name.
        for project in [self.project.clone(), self.folder_project()] {
            remove_project_leftovers(&project);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a project's containers, networks and volumes with plain docker commands.
fn remove_project_leftovers(project: &str) {
    let label = format!("label=com.docker.compose.project={project}");
    for (list, remove) in [
        (vec!["ps", "-aq", "--filter", &label], vec!["rm", "-f"]),
        (
            vec!["network", "ls", "-q", "--filter", &label],
            vec!["network", "rm"],
        ),
        (
            vec!["volume", "ls", "-q", "--filter", &label],
            vec!["volume", "rm", "-f"],
        ),
    ] {
        let Ok(ids) = docker::docker(&list) else {
            continue;
        };
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let _ = docker::docker(&[remove.as_slice(), ids.as_slice()].concat());
        }
    }
}
