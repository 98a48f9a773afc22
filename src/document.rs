//! The status document and the metrics, as typed values.
//!
//! `Snapshot` is the main loop's part, taken on the main loop. The
//! connection's thread adds what the agent's introspection API says right
//! now (with a short timeout, so a slow agent cannot slow status down: it
//! shows as `agentConnected: false`, with the task counts last seen) and
//! builds the `StatusDoc`.
//!
//! The document is shaped like ECS's `containerInstance`
//! (`containerInstanceArn`, `agentConnected`, `agentUpdateStatus`,
//! `versionInfo`, `runningTasksCount`, `pendingTasksCount`, `status`,
//! `statusReason`) plus the warden's own sections: `update` (target, step,
//! progress, error, history), `supervisor` (agent PID, uptime, restarts,
//! last exit, backoff) and `warden`.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::config::Config;
use crate::introspection::{self, Metadata, Task};
use crate::update::journal::State;
use crate::update::status::UpdateStatus;

/// Budget for each introspection call made while answering status.
pub const INTROSPECTION_BUDGET: Duration = Duration::from_millis(40);

/// The main loop's part of the status document.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub warden: Warden,
    pub supervisor: Supervision,
    pub build: Option<BuildInfo>,
    /// The configured cluster (the document shows the agent's).
    #[serde(skip)]
    pub configured_cluster: String,
    pub introspection: String,
    pub agent_update_status: Option<State>,
    pub observed: Observed,
    pub update: UpdateStatus,
    /// Running and pending tasks last seen (tasks outlive the agent, so
    /// while it does not answer these are the best account of them).
    #[serde(skip)]
    pub last_task_counts: (usize, usize),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Warden {
    pub pid: u32,
    pub version: &'static str,
    pub root: String,
    pub started_at: String,
    pub exe: String,
    pub execs: u64,
}

/// The agent's lifecycle as the supervisor sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Supervision {
    /// `RUNNING`, `STOPPING`, `BACKOFF` or `STOPPED`.
    pub agent_state: &'static str,
    pub agent_pid: Option<i32>,
    pub agent_version: Option<String>,
    pub agent_uptime_seconds: Option<u64>,
    pub restarts: u64,
    pub consecutive_failures: u32,
    pub backoff_ms: u64,
    pub next_start_in_ms: Option<u64>,
    pub last_exit: Option<LastExit>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastExit {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub description: String,
    pub at: String,
    pub ran_for_ms: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    pub version: String,
    pub git_hash: Option<String>,
    pub sha256: String,
    pub installed_at: String,
}

/// What the main loop has learned about the agent and its host.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    pub container_instance_arn: Option<String>,
    pub cluster: Option<String>,
    pub docker_version: Option<String>,
}

/// The whole status document (`GET /v1/status`, `ecs-warden status`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDoc {
    #[serde(flatten)]
    pub snapshot: Snapshot,
    pub container_instance_arn: Option<String>,
    pub agent_connected: bool,
    pub version_info: VersionInfo,
    pub running_tasks_count: usize,
    pub pending_tasks_count: usize,
    pub status: &'static str,
    pub status_reason: Option<String>,
    pub cluster: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub agent_version: Option<String>,
    pub agent_hash: Option<String>,
    pub docker_version: Option<String>,
}

/// What the agent reports now (both calls run in parallel).
pub struct Observation {
    pub metadata: Option<Metadata>,
    pub tasks: Option<Vec<Task>>,
}

pub fn observe(cfg: &Config, budget: Duration) -> Observation {
    std::thread::scope(|s| {
        let md = s.spawn(|| introspection::metadata(&cfg.introspection, budget).ok());
        let tasks = introspection::tasks(&cfg.introspection, budget).ok();
        Observation {
            metadata: md.join().ok().flatten(),
            tasks,
        }
    })
}

impl Observation {
    /// Running and pending task counts, when the agent answered.
    pub fn task_counts(&self) -> Option<(usize, usize)> {
        let tasks = self.tasks.as_ref()?;
        let running = tasks.iter().filter(|t| t.known_status == "RUNNING").count();
        let pending = tasks
            .iter()
            .filter(|t| t.known_status != "RUNNING" && t.desired_status == "RUNNING")
            .count();
        Some((running, pending))
    }
}

/// The agent's cluster: what it reports, else the configured one.
pub fn cluster(snapshot: &Snapshot, obs: &Observation) -> String {
    obs.metadata
        .as_ref()
        .and_then(|m| m.cluster.clone())
        .filter(|c| !c.is_empty())
        .or_else(|| snapshot.observed.cluster.clone())
        .unwrap_or_else(|| snapshot.configured_cluster.clone())
}

/// The instance ARN: what the agent reports, else the last one seen.
pub fn instance_arn(snapshot: &Snapshot, obs: &Observation) -> Option<String> {
    obs.metadata
        .as_ref()
        .and_then(|m| m.arn().map(String::from))
        .or_else(|| snapshot.observed.container_instance_arn.clone())
}

/// Build the status document from the snapshot and the observation.
pub fn status(snapshot: Snapshot, obs: &Observation) -> StatusDoc {
    let agent_running = snapshot.supervisor.agent_state == "RUNNING";
    let connected = agent_running && obs.metadata.is_some();
    let (running, pending) = obs.task_counts().unwrap_or(snapshot.last_task_counts);
    let (agent_version, agent_hash) = match obs.metadata.as_ref().and_then(|m| m.parsed_version()) {
        Some((v, h)) => (Some(v), h),
        None => match &snapshot.build {
            Some(b) => (Some(b.version.clone()), b.git_hash.clone()),
            None => (None, None),
        },
    };
    let status_reason = if connected {
        None
    } else if agent_running {
        Some("the agent does not answer on its introspection endpoint".to_string())
    } else {
        Some(format!(
            "the agent is {}",
            snapshot.supervisor.agent_state.to_ascii_lowercase()
        ))
    };
    StatusDoc {
        container_instance_arn: instance_arn(&snapshot, obs),
        cluster: cluster(&snapshot, obs),
        agent_connected: connected,
        version_info: VersionInfo {
            agent_version,
            agent_hash,
            docker_version: snapshot.observed.docker_version.clone(),
        },
        running_tasks_count: running,
        pending_tasks_count: pending,
        status: "ACTIVE",
        status_reason,
        snapshot,
    }
}

/// One metric family in the Prometheus text exposition.
struct Family<'a> {
    name: &'a str,
    help: &'a str,
    kind: &'a str,
}

fn family(out: &mut String, f: Family, samples: &[(String, f64)]) {
    let _ = write!(
        out,
        "# HELP {} {}\n# TYPE {} {}\n",
        f.name, f.help, f.name, f.kind
    );
    for (labels, v) in samples {
        let _ = writeln!(out, "{}{labels} {v}", f.name);
    }
}

fn one(v: f64) -> [(String, f64); 1] {
    [(String::new(), v)]
}

/// Prometheus text exposition (format 0.0.4) of the snapshot.
pub fn metrics(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let sup = &snapshot.supervisor;
    let gauge = |name, help| Family {
        name,
        help,
        kind: "gauge",
    };
    let counter = |name, help| Family {
        name,
        help,
        kind: "counter",
    };
    let up = if sup.agent_state == "RUNNING" {
        1.0
    } else {
        0.0
    };
    family(
        &mut out,
        gauge(
            "ecs_warden_agent_up",
            "1 when the agent process is running.",
        ),
        &one(up),
    );
    family(
        &mut out,
        counter(
            "ecs_warden_agent_restarts_total",
            "Agent restarts since the warden started.",
        ),
        &one(sup.restarts as f64),
    );
    family(
        &mut out,
        gauge(
            "ecs_warden_agent_uptime_seconds",
            "Seconds the current agent process has run.",
        ),
        &one(sup.agent_uptime_seconds.unwrap_or(0) as f64),
    );
    family(
        &mut out,
        gauge(
            "ecs_warden_agent_consecutive_failures",
            "Failed agent runs in a row (resets after a stable run).",
        ),
        &one(sup.consecutive_failures as f64),
    );
    let c = &snapshot.update.counters;
    let results = [("UPDATED", c.updates.updated), ("FAILED", c.updates.failed)]
        .map(|(r, n)| (format!("{{result=\"{r}\"}}"), n as f64));
    family(
        &mut out,
        counter(
            "ecs_warden_updates_total",
            "Updates finished since the warden started, by result.",
        ),
        &results,
    );
    let state = snapshot.update.state;
    let states = [
        State::Pending,
        State::Staging,
        State::Staged,
        State::Updating,
        State::Updated,
        State::Failed,
    ]
    .map(|s| {
        (
            format!("{{state=\"{}\"}}", s.as_str()),
            if Some(s) == state { 1.0 } else { 0.0 },
        )
    });
    family(
        &mut out,
        gauge(
            "ecs_warden_update_state",
            "1 for the state of the current or last update.",
        ),
        &states,
    );
    family(
        &mut out,
        counter(
            "ecs_warden_download_bytes_total",
            "Bytes of agent builds downloaded since the warden started.",
        ),
        &one(c.downloaded_bytes as f64),
    );
    family(
        &mut out,
        gauge(
            "ecs_warden_last_update_duration_seconds",
            "Duration of the last finished update, from acceptance to UPDATED or FAILED.",
        ),
        &one(c.last_update_seconds.unwrap_or(0.0)),
    );
    out
}
