//! Starting the native agent and forwarding its output.
//!
//! 1. The agent runs from its build directory's `ecs-agent` with the merged
//!    config as environment, plus the locations it needs under the root.
//! 2. It gets its own process group (so a terminal's ^C or a signal meant
//!    for the warden's group does not reach it); the warden still signals
//!    only its PID, never the group.
//! 3. stdout and stderr share one pipe; a thread forwards each line to the
//!    warden's stderr as `ecs-agent[PID]: ...` and keeps the last lines,
//!    which it hands to the main loop when the pipe closes.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::paths::Paths;
use crate::store::Build;
use crate::supervisor::Event;

/// Lines of agent output kept for the exit-code-2 report.
pub const TAIL_LINES: usize = 20;
/// Longest line forwarded in one piece.
const MAX_LINE: usize = 16 * 1024;

/// A started agent.
pub struct Started {
    pub pid: i32,
    /// Read end of the output pipe (owned by the forwarder thread).
    pub output_fd: RawFd,
}

/// The environment the agent sees on top of the warden's own.
pub fn environment(paths: &Paths, cfg: &Config) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = cfg
        .agent_env()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut set_default = |k: &str, v: String| {
        if !cfg.env.contains_key(k) {
            env.push((k.to_string(), v));
        }
    };
    set_default("ECS_DATADIR", paths.data_dir.display().to_string());
    set_default(
        "ECS_UPDATE_DOWNLOAD_DIR",
        paths.cache_dir.display().to_string(),
    );
    set_default(
        "ECS_WARDEN_CONTROL_SOCKET",
        paths.control_socket().display().to_string(),
    );
    env
}

/// Start `build`'s executable. The caller owns the PID from here on.
pub fn spawn(paths: &Paths, cfg: &Config, build: &Build, tx: Sender<Event>) -> Result<Started> {
    let exe = build.executable();
    let (reader, writer) = io::pipe().map_err(Error::io("create output pipe for", &exe))?;
    let writer2 = writer
        .try_clone()
        .map_err(Error::io("duplicate output pipe for", &exe))?;
    let mut cmd = Command::new(&exe);
    // systemd's notification variables are the warden's, not the agent's.
    for k in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        cmd.env_remove(k);
    }
    cmd.envs(environment(paths, cfg))
        .current_dir(&build.dir)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .process_group(0);
    let child = cmd.spawn().map_err(Error::io("start agent", &exe))?;
    // Our copies of the write end were moved into `cmd` and are dropped
    // with it, so the reader sees EOF when the agent (and anything it
    // handed the pipe to) is gone.
    drop(cmd);
    let pid = child.id() as i32;
    // The Child handle is dropped without waiting: the main loop reaps the
    // PID itself with waitpid(2).
    drop(child);
    let fd: OwnedFd = reader.into();
    let output_fd = fd.as_raw_fd();
    forward(pid, File::from(fd), tx);
    Ok(Started { pid, output_fd })
}

/// Resume forwarding from the pipe's read end inherited across `reexec`.
/// Returns false when the descriptor is not open.
pub fn adopt_output(pid: i32, fd: RawFd, tx: Sender<Event>) -> bool {
    match crate::sys::adopt_fd(fd) {
        Some(file) => {
            let _ = crate::sys::close_on_exec(fd);
            forward(pid, file, tx);
            true
        }
        None => false,
    }
}

fn forward(pid: i32, mut pipe: File, tx: Sender<Event>) {
    let spawned = std::thread::Builder::new()
        .name(format!("agent-output-{pid}"))
        .spawn(move || {
            let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
            let mut line: Vec<u8> = Vec::with_capacity(256);
            let mut buf = [0u8; 8192];
            let emit = |line: &mut Vec<u8>, tail: &mut VecDeque<String>| {
                let text = String::from_utf8_lossy(line).into_owned();
                let _ = writeln!(io::stderr().lock(), "ecs-agent[{pid}]: {text}");
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(text);
                line.clear();
            };
            loop {
                let n = match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                for &b in &buf[..n] {
                    if b == b'\n' {
                        emit(&mut line, &mut tail);
                    } else {
                        line.push(b);
                        if line.len() >= MAX_LINE {
                            emit(&mut line, &mut tail);
                        }
                    }
                }
            }
            if !line.is_empty() {
                emit(&mut line, &mut tail);
            }
            let _ = tx.send(Event::OutputClosed {
                pid,
                tail: tail.into(),
            });
        });
    if let Err(e) = spawned {
        log::error!("start output thread for agent {pid}: {e}");
    }
}
