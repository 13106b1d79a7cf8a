//! The docker CLI calls the tests make, and the rule for when docker is missing.
//!
//! Without docker a test may skip with a printed reason, except under CI (`CI=true`), where a
//! missing engine must fail the run: a green CI that skipped every container test proves nothing.

use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// Runs a command and returns its stdout, or an error carrying its stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    check(cmd, out)
}

/// Runs a command and returns its stdout and stderr together (what a person running it sees),
/// or an error that names it as `what` and carries that text.
pub fn run_combined(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{what} failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

fn check(cmd: &Command, out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `docker ARGS...`, returning stdout.
pub fn docker(args: &[&str]) -> Result<String> {
    run(Command::new("docker").args(args))
}

/// Whether this run is under CI (`CI` set to anything but `false` or `0`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Why docker cannot be used here, or `None` when the engine and a compose tool answer.
pub fn unavailable_reason() -> Option<String> {
    let ok = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok("docker", &["info"]) {
        return Some("the docker engine is not reachable (`docker info` failed)".into());
    }
    if !ok("docker", &["compose", "version"]) && !ok("docker-compose", &["version"]) {
        return Some("neither `docker compose` nor `docker-compose` is installed".into());
    }
    None
}

/// True when docker tests can run. Otherwise prints why and returns false, or panics under CI.
pub fn available_or_skip(test: &str) -> bool {
    match unavailable_reason() {
        None => true,
        Some(reason) if in_ci() => panic!("{test}: docker is required under CI: {reason}"),
        Some(reason) => {
            eprintln!("skipping {test}: {reason}");
            false
        }
    }
}

/// Ids of the running containers of one compose service.
pub fn containers(project: &str, service: &str) -> Result<Vec<String>> {
    compose_containers(project, service, "-q")
}

/// Ids of every container (running or not) of one compose service.
pub fn all_containers(project: &str, service: &str) -> Result<Vec<String>> {
    compose_containers(project, service, "-aq")
}

fn compose_containers(project: &str, service: &str, flags: &str) -> Result<Vec<String>> {
    let out = docker(&[
        "ps",
        flags,
        "--filter",
        &format!("label=com.docker.compose.project={project}"),
        "--filter",
        &format!("label=com.docker.compose.service={service}"),
    ])?;
    Ok(out.split_whitespace().map(str::to_owned).collect())
}

/// One `docker inspect -f FORMAT` value of a container or image.
pub fn inspect(what: &str, format: &str) -> Result<String> {
    Ok(docker(&["inspect", "-f", format, what])?.trim().to_owned())
}

/// The compose a person would type: `docker compose` (v2) when the plugin answers, else
/// `docker-compose` (v1).
pub fn compose_command() -> Command {
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    }
}

/// The compose project names of every container (running or not), one per container.
pub fn container_projects() -> Result<Vec<String>> {
    let out = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Label \"com.docker.compose.project\"}}",
    ])?;
    Ok(out.lines().map(str::to_owned).collect())
}
