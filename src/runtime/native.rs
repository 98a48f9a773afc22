//! The native runtime: the agent is an executable, run as the warden's
//! child.
//!
//! 1. It runs from its build directory's `ecs-agent` with the agent
//!    environment, in its own process group (so a terminal's ^C or a
//!    signal meant for the warden's group does not reach it); the warden
//!    still signals only its PID, never the group.
//! 2. stdout and stderr share one pipe, forwarded by `output`.
//! 3. Its PID and start time go to `run/ecs-warden/agent.json`, so a
//!    warden that starts after this one died stops it (`orphan`).
//! 4. Stop: SIGTERM to the PID, SIGKILL to the PID after the stop timeout.
//!    The exit is collected with `waitpid` on the PID only, on SIGCHLD.
//! 5. Re-exec: the PID (still our child after `execve`) and the pipe's
//!    read end are handed to the next image.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{orphan, output, Started};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::exit::Ended;
use crate::paths::Paths;
use crate::store::Build;

/// `PATH` for the agent unless the config sets one (the agent image's).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The child the warden runs.
struct Child {
    run: u64,
    pid: i32,
    version: String,
    /// Read end of the output pipe while it is open (for a re-exec).
    output_fd: Option<RawFd>,
}

pub struct Native {
    paths: Paths,
    stop_timeout: Duration,
    tx: Sender<Event>,
    child: Option<Child>,
    /// When SIGKILL follows the SIGTERM sent.
    kill_at: Option<Instant>,
}

/// The agent a previous image handed over across `reexec`.
pub struct Adopted {
    pub pid: i32,
    pub version: String,
    pub output_fd: Option<RawFd>,
}

impl Native {
    pub fn new(paths: &Paths, stop_timeout: Duration, tx: Sender<Event>) -> Native {
        Native {
            paths: paths.clone(),
            stop_timeout,
            tx,
            child: None,
            kill_at: None,
        }
    }

    /// An agent that outlived a previous warden is stopped (by PID).
    pub fn clear_leftovers(&mut self) {
        orphan::stop_orphan(&self.paths.agent_record(), self.stop_timeout);
    }

    pub fn start(&mut self, run: u64, build: &Build, env: &[(String, String)]) -> Result<Started> {
        let exe = build.executable();
        let (reader, writer) = io::pipe().map_err(Error::io("create output pipe for", &exe))?;
        let writer2 = writer
            .try_clone()
            .map_err(Error::io("duplicate output pipe for", &exe))?;
        let mut cmd = Command::new(&exe);
        // Only the agent's environment, as in ecs-init's container: none of
        // the warden's own (systemd's notify socket, a shell's leftovers).
        cmd.env_clear()
            .env("PATH", DEFAULT_PATH)
            .envs(env.iter().map(|(k, v)| (k, v)))
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
        // The Child handle is dropped without waiting: `reap` collects the
        // PID itself with waitpid(2).
        drop(child);
        let fd: OwnedFd = reader.into();
        let output_fd = fd.as_raw_fd();
        output::forward(run, pid.to_string(), File::from(fd), self.tx.clone());
        // So a next warden can stop this agent if we die first.
        if let Err(e) = orphan::record(&self.paths.agent_record(), pid, build.version()) {
            log::warn!("{e}");
        }
        self.child = Some(Child {
            run,
            pid,
            version: build.version().to_string(),
            output_fd: Some(output_fd),
        });
        self.kill_at = None;
        Ok(Started {
            pid: Some(pid),
            what: format!("pid {pid}"),
        })
    }

    /// Take over the agent a previous image of this process handed over.
    pub fn adopt(&mut self, run: u64, a: Adopted) {
        let mut output_fd = None;
        if let Some(fd) = a.output_fd {
            if let Some(file) = crate::sys::adopt_fd(fd) {
                let _ = crate::sys::close_on_exec(fd);
                output::forward(run, a.pid.to_string(), file, self.tx.clone());
                output_fd = Some(fd);
            }
        }
        self.child = Some(Child {
            run,
            pid: a.pid,
            version: a.version,
            output_fd,
        });
    }

    /// What to hand to the next image: the PID and the pipe's read end.
    pub fn handoff(&self) -> Option<Adopted> {
        self.child.as_ref().map(|c| Adopted {
            pid: c.pid,
            version: c.version.clone(),
            output_fd: c.output_fd,
        })
    }

    /// The pipe of `run` closed (its forwarder is done with it).
    pub fn output_closed(&mut self, run: u64) {
        if let Some(c) = self.child.as_mut().filter(|c| c.run == run) {
            c.output_fd = None;
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.pid)
    }

    /// SIGTERM to the agent's PID; SIGKILL follows after the stop timeout.
    pub fn stop(&mut self) {
        if let Some(c) = &self.child {
            log::info!("sending SIGTERM to agent {} (pid {})", c.version, c.pid);
            let _ = kill(Pid::from_raw(c.pid), Signal::SIGTERM);
            self.kill_at = Some(Instant::now() + self.stop_timeout);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.kill_at
    }

    pub fn on_deadline(&mut self, now: Instant) {
        if let (Some(at), Some(c)) = (self.kill_at, &self.child) {
            if at <= now {
                log::warn!(
                    "agent (pid {}) did not exit within {}; sending SIGKILL to pid {}",
                    c.pid,
                    humantime::format_duration(self.stop_timeout),
                    c.pid
                );
                let _ = kill(Pid::from_raw(c.pid), Signal::SIGKILL);
                self.kill_at = None;
            }
        }
    }

    /// Collect the agent if it has exited. Only the agent's PID is waited
    /// for, so helpers spawned elsewhere keep their own exit statuses.
    pub fn reap(&mut self) -> Option<(u64, Ended)> {
        let c = self.child.as_ref()?;
        let ended = match waitpid(Pid::from_raw(c.pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Ended::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Ended::Signal(sig as i32),
            Ok(_) => return None,
            Err(nix::errno::Errno::ECHILD) => {
                log::error!(
                    "agent pid {} is not our child any more; treating it as gone",
                    c.pid
                );
                Ended::Signal(Signal::SIGKILL as i32)
            }
            Err(e) => {
                log::error!("waitpid({}): {e}", c.pid);
                return None;
            }
        };
        let run = c.run;
        self.child = None;
        self.kill_at = None;
        orphan::clear(&self.paths.agent_record());
        Some((run, ended))
    }
}
