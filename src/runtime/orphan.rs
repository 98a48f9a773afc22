//! An agent left behind by a warden that died (SIGKILL, crash, OOM).
//!
//! The warden records the agent's PID and kernel start time in
//! `run/ecs-warden/agent.json` each time it starts one. A new warden that
//! finds that process still alive cannot wait for it (it is not its child)
//! and the process has lost the reader of its output pipe, so it stops it
//! the same way as always: SIGTERM to that PID only, SIGKILL to that PID
//! after the stop timeout. Tasks are not the agent's children and are not
//! touched.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::Result;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub pid: i32,
    pub start_time: u64,
    pub version: String,
}

/// Field 22 of `/proc/PID/stat`: start time in clock ticks since boot.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn alive(rec: &Record) -> bool {
    start_time(rec.pid) == Some(rec.start_time)
}

pub fn record(path: &Path, pid: i32, version: &str) -> Result<()> {
    let rec = Record {
        pid,
        start_time: start_time(pid).unwrap_or(0),
        version: version.to_string(),
    };
    let bytes = serde_json::to_vec(&rec).unwrap_or_default();
    durable::write_volatile("agent record", path, &bytes, 0o600)
}

pub fn clear(path: &Path) {
    let _ = fs::remove_file(path);
}

/// Stop a recorded agent that outlived its warden. Returns its record if
/// there was one.
pub fn stop_orphan(path: &Path, stop_timeout: Duration) -> Option<Record> {
    let rec: Record = serde_json::from_slice(&fs::read(path).ok()?).ok()?;
    if rec.pid <= 1 || !alive(&rec) {
        clear(path);
        return None;
    }
    log::warn!(
        "agent {} (pid {}) outlived the previous warden; stopping it before starting a supervised one",
        rec.version,
        rec.pid
    );
    let pid = Pid::from_raw(rec.pid);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = Instant::now() + stop_timeout;
    while alive(&rec) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if alive(&rec) {
        log::warn!(
            "orphaned agent (pid {}) ignored SIGTERM; sending SIGKILL",
            rec.pid
        );
        let _ = kill(pid, Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(&rec) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    clear(path);
    Some(rec)
}
