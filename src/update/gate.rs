//! The health gate a new build must pass, run on a worker thread:
//! 1. within the timeout, `/v1/metadata` reports the target version and a
//!    non-empty `ContainerInstanceArn`;
//! 2. every task that was RUNNING before is RUNNING, with the same
//!    container IDs;
//! 3. after the stable period the metadata still holds.
//!
//! The main loop watches the process itself: an exit during the gate fails
//! it at once, whatever this thread is doing.

use std::time::{Duration, Instant};

use super::journal::TaskRecord;
use crate::config::Endpoint;
use crate::introspection;

pub struct Spec {
    pub endpoint: Endpoint,
    pub version: String,
    pub tasks_before: Vec<TaskRecord>,
    /// `tasks_before` are the engine's running task containers (recorded
    /// while the agent was down): each must still run, on this engine, and
    /// be among its task's containers in `/v1/tasks`.
    pub engine: Option<std::path::PathBuf>,
    pub timeout: Duration,
    pub stable: Duration,
}

const POLL: Duration = Duration::from_millis(50);
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Check the metadata once: `Ok` when version and ARN are as required.
fn metadata_ok(spec: &Spec) -> Result<(), String> {
    let md = introspection::metadata(&spec.endpoint, CALL_TIMEOUT)?;
    let reported = md.parsed_version().map(|(v, _)| v).ok_or_else(|| {
        format!(
            "/v1/metadata reports no parsable version ({:?})",
            md.version
        )
    })?;
    if reported != spec.version {
        return Err(format!(
            "/v1/metadata reports version {reported}, expected {}",
            spec.version
        ));
    }
    if md.arn().is_none() {
        return Err("/v1/metadata reports no ContainerInstanceArn (not registered)".into());
    }
    Ok(())
}

/// Compare the tasks now with the tasks before.
pub fn tasks_ok(before: &[TaskRecord], now: &[introspection::Task]) -> Result<(), String> {
    for t in before {
        let Some(cur) = now.iter().find(|n| n.arn == t.arn) else {
            return Err(format!("task {} is no longer reported", t.arn));
        };
        if cur.known_status != "RUNNING" {
            return Err(format!(
                "task {} is {}, not RUNNING",
                t.arn, cur.known_status
            ));
        }
        let mut ids: Vec<String> = cur.containers.iter().map(|c| c.docker_id.clone()).collect();
        ids.sort();
        if ids != t.containers {
            return Err(format!(
                "task {} has containers {:?}, before {:?}",
                t.arn, ids, t.containers
            ));
        }
    }
    Ok(())
}

/// The engine's task containers recorded before: still running, and each
/// listed among its task's containers by the agent (RUNNING).
fn engine_tasks_ok(
    socket: &std::path::Path,
    before: &[TaskRecord],
    now: &[introspection::Task],
) -> Result<(), String> {
    if before.is_empty() {
        return Ok(());
    }
    let engine = crate::engine::Engine::connect(socket, CALL_TIMEOUT).map_err(|e| e.to_string())?;
    for t in before {
        for id in &t.containers {
            let running = engine
                .container_inspect(id)
                .map_err(|e| e.to_string())?
                .is_some_and(|c| c.state.running);
            if !running {
                return Err(format!(
                    "container {} of task {} is not running any more",
                    &id[..12.min(id.len())],
                    t.arn
                ));
            }
        }
        let Some(cur) = now.iter().find(|n| n.arn == t.arn) else {
            return Err(format!("task {} is not reported by the new agent", t.arn));
        };
        if cur.known_status != "RUNNING" {
            return Err(format!(
                "task {} is {}, not RUNNING",
                t.arn, cur.known_status
            ));
        }
        for id in &t.containers {
            if !cur.containers.iter().any(|c| &c.docker_id == id) {
                return Err(format!(
                    "the new agent does not list container {} in task {}",
                    &id[..12.min(id.len())],
                    t.arn
                ));
            }
        }
    }
    Ok(())
}

/// Poll `check` until it passes or `deadline`; the error is the last seen.
fn until<F: FnMut() -> Result<(), String>>(deadline: Instant, mut check: F) -> Result<(), String> {
    loop {
        let r = check();
        if r.is_ok() || Instant::now() >= deadline {
            return r;
        }
        std::thread::sleep(POLL);
    }
}

pub fn run(spec: &Spec) -> Result<(), String> {
    let start = Instant::now();
    let deadline = start + spec.timeout;
    let within = humantime::format_duration(spec.timeout);
    until(deadline, || metadata_ok(spec))
        .map_err(|e| format!("not healthy within {within}: {e}"))?;
    until(deadline, || {
        let now = introspection::tasks(&spec.endpoint, CALL_TIMEOUT)?;
        match &spec.engine {
            None => tasks_ok(&spec.tasks_before, &now),
            Some(socket) => engine_tasks_ok(socket, &spec.tasks_before, &now),
        }
    })
    .map_err(|e| format!("tasks not intact within {within}: {e}"))?;
    std::thread::sleep(spec.stable);
    metadata_ok(spec).map_err(|e| {
        format!(
            "healthy at first, but not after {}: {e}",
            humantime::format_duration(spec.stable)
        )
    })
}

/// The RUNNING tasks the agent reports now, for the journal. Retries until
/// the agent answers or `timeout` passes (it may have just started).
pub fn record_tasks(ep: &Endpoint, timeout: Duration) -> Result<Vec<TaskRecord>, String> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    until(deadline, || {
        let tasks = introspection::tasks(ep, CALL_TIMEOUT)?;
        out = tasks
            .into_iter()
            .filter(|t| t.known_status == "RUNNING")
            .map(|t| {
                let mut containers: Vec<String> =
                    t.containers.into_iter().map(|c| c.docker_id).collect();
                containers.sort();
                TaskRecord {
                    arn: t.arn,
                    containers,
                }
            })
            .collect();
        Ok(())
    })?;
    Ok(out)
}
