//! The process runtime: each "container" is a detached, long-lived process
//! (this binary re-executed as `task-process ARN NAME`, which only waits for
//! a signal), for hosts without a container engine.
//!
//! Starting one, with no `unsafe` and no zombie left to the agent:
//! 1. the agent spawns `task-process --detach ARN NAME` with stdout piped;
//! 2. that intermediate spawns `task-process ARN NAME` with stdio on
//!    `/dev/null`, prints the new pid and exits, so the task is re-parented
//!    to init (or the nearest subreaper) and outlives the agent;
//! 3. the task calls setsid(2): its own session and process group, so
//!    neither a terminal nor a signal to the agent's group reaches it;
//! 4. the agent reaps the intermediate and records the pid and its start
//!    time (field 22 of `/proc/PID/stat`), which tells the task from a later
//!    process that reuses the pid.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// The hidden subcommand that is a task process.
pub const SUBCOMMAND: &str = "task-process";
/// What `ps` shows for a task process.
const TASK_ARGV0: &str = "sample-agent-task";
/// The running executable, even after its path was replaced by another build.
const SELF_EXE: &str = "/proc/self/exe";
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);
const TERM_GRACE: Duration = Duration::from_secs(2);

/// Starts a detached task process; returns its pid and start time.
pub fn spawn(task_arn: &str, name: &str) -> Result<(i32, u64)> {
    let what = format!("{SELF_EXE} {SUBCOMMAND} --detach");
    let mut child = Command::new(SELF_EXE)
        .args([SUBCOMMAND, "--detach", task_arn, name])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::command(&what, e.to_string()))?;
    let deadline = Instant::now() + SPAWN_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::command(&what, "did not exit within 10s"));
            }
            Err(e) => return Err(Error::command(&what, e.to_string())),
        }
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read;
        let _ = stdout.read_to_string(&mut out);
    }
    if !status.success() {
        return Err(Error::command(&what, format!("{status}")));
    }
    let pid: i32 = out
        .trim()
        .parse()
        .map_err(|_| Error::command(&what, format!("printed {out:?}, not a pid")))?;
    let (_, start_time) = stat(pid)
        .ok_or_else(|| Error::command(&what, format!("task process {pid} exited at once")))?;
    Ok((pid, start_time))
}

/// Step 2: the intermediate. Spawns the task, prints its pid, returns.
pub fn detach(task_arn: &str, name: &str) -> Result<()> {
    let child = Command::new(SELF_EXE)
        .arg0(TASK_ARGV0)
        .args([SUBCOMMAND, task_arn, name])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| Error::command(format!("{SELF_EXE} {SUBCOMMAND}"), e.to_string()))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", child.id())
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::command(format!("{SUBCOMMAND} --detach"), e.to_string()))
    // `child` is dropped without waiting: the task must outlive us.
}

/// Step 3: the task itself. Never returns; ends on a signal.
pub fn run_task() -> ! {
    // Fails only if we already lead a process group, which a spawned child
    // does not; either way there is nothing better to do than to wait.
    let _ = nix::unistd::setsid();
    loop {
        nix::unistd::pause();
    }
}

/// The state letter and start time (clock ticks since boot) of a process.
fn stat(pid: i32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the
    // fields after its closing parenthesis start at field 3 (the state).
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let start_time = fields.nth(22 - 3 - 1)?.parse().ok()?;
    Some((state, start_time))
}

/// True when `pid` is the very process recorded, and it has not exited.
pub fn is_alive(pid: i32, start_time: u64) -> bool {
    matches!(stat(pid), Some((state, t)) if t == start_time && !matches!(state, 'Z' | 'X' | 'x'))
}

/// SIGTERM, then SIGKILL after a grace period; gone already is fine.
pub fn stop(pid: i32, start_time: u64) -> Result<()> {
    for (signal, grace) in [
        (Signal::SIGTERM, TERM_GRACE),
        (Signal::SIGKILL, Duration::from_secs(1)),
    ] {
        if !is_alive(pid, start_time) {
            return Ok(());
        }
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                return Err(Error::command(
                    format!("kill -{} {pid}", signal.as_str()),
                    e.to_string(),
                ))
            }
        }
        let deadline = Instant::now() + grace;
        while is_alive(pid, start_time) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
    if is_alive(pid, start_time) {
        return Err(Error::command(
            format!("kill -KILL {pid}"),
            "the task process is still alive",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_stat_is_readable() {
        let me = std::process::id() as i32;
        let (state, start) = stat(me).unwrap();
        assert!(matches!(state, 'R' | 'S'), "{state}");
        assert!(is_alive(me, start));
        assert!(!is_alive(me, start + 1));
    }
}
