//! The docker runtime: containers run by the local engine through the
//! `docker` CLI from `PATH` (which inherits `DOCKER_HOST`).
//!
//! Every call has a deadline; a CLI that hangs is killed and reported. The
//! agent never stops or removes a container on its own exit: containers are
//! children of the engine, not of the agent, and outlive it.

use std::collections::HashMap;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// Label that marks containers started by a sample agent (value: the
/// 32-hex container-instance id), so tests can clean up by label.
pub const OWNER_LABEL: &str = "ecs-warden.sample-agent";

/// A long-lived command that exists in a busybox image and stops at once on
/// SIGTERM (a plain `sleep` as PID 1 would ignore it until `docker stop`
/// gives up and kills it).
const TASK_COMMAND: &str = "trap 'exit 0' TERM; while :; do sleep 2147483647 & wait $!; done";

const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
const INSPECT_TIMEOUT: Duration = Duration::from_secs(15);
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerState {
    pub running: bool,
    pub started_at: String,
}

/// The engine's version, if it answers within 5 s.
pub fn engine_version() -> Result<String> {
    let out = docker(
        &["version", "--format", "{{.Server.Version}}"],
        VERSION_TIMEOUT,
    )?;
    Ok(out.trim().to_string())
}

/// `docker run -d` a task container; returns its full 64-hex id.
pub fn run(image: &str, name: &str, labels: &[(&str, &str)]) -> Result<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "-d".into(),
        "--pull=never".into(),
        "--name".into(),
        name.into(),
    ];
    for (key, value) in labels {
        args.push("--label".into());
        args.push(format!("{key}={value}"));
    }
    args.extend([
        image.to_string(),
        "/bin/sh".into(),
        "-c".into(),
        TASK_COMMAND.into(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = docker(&args, RUN_TIMEOUT)?.trim().to_string();
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::command(
            format!("docker run --name {name}"),
            format!("expected a 64-hex container id, got {id:?}"),
        ));
    }
    Ok(id)
}

/// Inspects containers by id with one CLI call. Containers the engine does
/// not know are absent from the map; an engine that does not answer is an
/// error.
pub fn inspect(ids: &[String]) -> Result<HashMap<String, ContainerState>> {
    let mut args = vec![
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.Id}} {{.State.Running}} {{.State.StartedAt}}",
    ];
    args.extend(ids.iter().map(String::as_str));
    let output = run_cli(&args, INSPECT_TIMEOUT)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    // `docker inspect` exits 1 when any id is unknown but still prints the
    // others; only an error other than "no such" means the engine is away.
    if !output.status.success() && !stderr.lines().all(is_no_such) {
        return Err(Error::command(
            describe(&args),
            format!("{}: {}", output.status, stderr.trim()),
        ));
    }
    let mut states = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let mut fields = line.split_whitespace();
        if let (Some(id), Some(running), Some(started_at)) =
            (fields.next(), fields.next(), fields.next())
        {
            states.insert(
                id.to_string(),
                ContainerState {
                    running: running == "true",
                    started_at: started_at.to_string(),
                },
            );
        }
    }
    Ok(states)
}

/// `docker stop -t 1`; a container that no longer exists counts as stopped.
pub fn stop(id: &str) -> Result<()> {
    ignore_no_such(docker(&["stop", "-t", "1", id], STOP_TIMEOUT))
}

/// `docker rm -f`; used only to undo a task whose start failed half-way.
pub fn remove(id: &str) -> Result<()> {
    ignore_no_such(docker(&["rm", "-f", id], STOP_TIMEOUT))
}

fn ignore_no_such(result: Result<String>) -> Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(Error::Command { message, .. }) if message.contains("No such") => Ok(()),
        Err(e) => Err(e),
    }
}

fn is_no_such(line: &str) -> bool {
    line.trim().is_empty() || line.contains("No such")
}

/// Runs the docker CLI; returns stdout, or an error holding stderr.
fn docker(args: &[&str], timeout: Duration) -> Result<String> {
    let output = run_cli(args, timeout)?;
    if !output.status.success() {
        return Err(Error::command(
            describe(args),
            format!(
                "{}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs `docker ARGS` with a deadline; on timeout the CLI is killed.
fn run_cli(args: &[&str], timeout: Duration) -> Result<Output> {
    let child = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::command(describe(args), format!("cannot run docker: {e}")))?;
    let pid = Pid::from_raw(child.id() as i32);
    // A helper thread waits so that this one can give up on a deadline.
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(result) => result.map_err(|e| Error::command(describe(args), e.to_string())),
        Err(_) => {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = rx.recv();
            Err(Error::command(
                describe(args),
                format!(
                    "no answer within {} (is the engine up? DOCKER_HOST is inherited)",
                    humantime::format_duration(timeout)
                ),
            ))
        }
    }
}

fn describe(args: &[&str]) -> String {
    let mut line = String::from("docker");
    for arg in args {
        line.push(' ');
        if arg.contains(char::is_whitespace) {
            line.push_str(&format!("'{arg}'"));
        } else {
            line.push_str(arg);
        }
    }
    line
}
