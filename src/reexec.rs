//! Self re-exec: the running warden replaces its program image with the
//! installed binary (`execve(2)`), keeping its PID, its lock and its agent
//! child, so a package upgrade never restarts the agent.
//!
//! 1. The old image waits until no update is UPDATING (a switch in progress
//!    finishes first; downloads simply resume afterwards).
//! 2. It clears close-on-exec on the lock and on the agent's output pipe,
//!    and writes `run/ecs-warden/handoff.json`: those descriptors, the
//!    agent's PID, version and uptime, the backoff and counters.
//! 3. It execs `<binary> --root ROOT start` with `ECS_WARDEN_HANDOFF`
//!    naming that file.
//! 4. The new image reads and deletes the file, adopts the lock and the
//!    pipe, and supervises the same agent PID (still its child: `execve`
//!    keeps children). The journal carries any update in flight.
//!
//! If the exec fails, the old image undoes step 2 and goes on.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{Error, Result};

/// Environment variable naming the hand-off file.
pub const HANDOFF_ENV: &str = "ECS_WARDEN_HANDOFF";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AgentHandoff {
    pub pid: i32,
    pub version: String,
    pub uptime_ms: u64,
    /// Read end of the output pipe, if still open (native).
    pub output_fd: Option<i32>,
    /// The agent's container (Docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastExitHandoff {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub ran_for_ms: u64,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Handoff {
    pub lock_fd: i32,
    /// The running agent, if one runs.
    pub agent: Option<AgentHandoff>,
    /// Backoff left before the next start, when waiting.
    pub waiting_ms: Option<u64>,
    pub restarts: u64,
    pub failures: u32,
    pub last_exit: Option<LastExitHandoff>,
    pub started_at: String,
    /// Re-execs so far, this one included.
    pub execs: u64,
}

pub fn write(path: &Path, h: &Handoff) -> Result<()> {
    let bytes = serde_json::to_vec(h).map_err(|e| Error::Other(format!("hand-off: {e}")))?;
    durable::write_volatile("re-exec hand-off", path, &bytes, 0o600)
}

/// Read and delete the hand-off file.
pub fn take(path: &Path) -> Result<Handoff> {
    let bytes = std::fs::read(path).map_err(Error::io("read re-exec hand-off", path))?;
    let _ = std::fs::remove_file(path);
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::Other(format!("{}: invalid re-exec hand-off: {e}", path.display())))
}

/// Replace this process's image. Returns only on failure.
pub fn exec(exe: &Path, root: &Path, handoff: &Path) -> std::io::Error {
    Command::new(exe)
        .arg("--root")
        .arg(root)
        .arg("start")
        .env(HANDOFF_ENV, handoff)
        .exec()
}
