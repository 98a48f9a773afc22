//! The status document and the metrics, assembled on the connection's
//! thread from the main loop's snapshot plus what the agent's introspection
//! API says right now (with a short timeout, so a slow agent cannot slow
//! status down: it shows as `agentConnected: false`).
//!
//! The document is shaped like ECS's `containerInstance`
//! (`containerInstanceArn`, `agentConnected`, `agentUpdateStatus`,
//! `versionInfo`, `runningTasksCount`, `pendingTasksCount`, `status`,
//! `statusReason`) plus the warden's own sections: `update` (target, step,
//! progress, error, history), `supervisor` (agent PID, uptime, restarts,
//! last exit, backoff) and `warden`.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Config;
use crate::introspection::{self, Metadata, Task};

/// Budget for each introspection call made while answering status.
pub const INTROSPECTION_BUDGET: Duration = Duration::from_millis(40);

/// What the agent reports now (both calls run in parallel).
pub struct Observed {
    pub metadata: Option<Metadata>,
    pub tasks: Option<Vec<Task>>,
}

pub fn observe(cfg: &Config, budget: Duration) -> Observed {
    std::thread::scope(|s| {
        let md = s.spawn(|| introspection::metadata(&cfg.introspection, budget).ok());
        let tasks = introspection::tasks(&cfg.introspection, budget).ok();
        Observed {
            metadata: md.join().ok().flatten(),
            tasks,
        }
    })
}

/// The agent's cluster: what it reports, else the configured one.
pub fn cluster(cfg: &Config, snapshot: &Value, obs: &Observed) -> String {
    obs.metadata
        .as_ref()
        .and_then(|m| m.cluster.clone())
        .filter(|c| !c.is_empty())
        .or_else(|| snapshot["observed"]["cluster"].as_str().map(String::from))
        .unwrap_or_else(|| cfg.cluster.clone())
}

/// The instance ARN: what the agent reports, else the last one seen.
pub fn instance_arn(snapshot: &Value, obs: &Observed) -> Option<String> {
    obs.metadata
        .as_ref()
        .and_then(|m| m.arn().map(String::from))
        .or_else(|| {
            snapshot["observed"]["containerInstanceArn"]
                .as_str()
                .map(String::from)
        })
}

/// Build the status document from the snapshot and the observation.
pub fn status(cfg: &Config, snapshot: &Value, obs: &Observed) -> Value {
    let mut doc = snapshot.clone();
    let agent_running = snapshot["supervisor"]["agentState"] == "RUNNING";
    let connected = agent_running && obs.metadata.is_some();
    let tasks = obs.tasks.as_deref().unwrap_or(&[]);
    let running = tasks.iter().filter(|t| t.known_status == "RUNNING").count();
    let pending = tasks
        .iter()
        .filter(|t| t.known_status != "RUNNING" && t.desired_status == "RUNNING")
        .count();
    let (agent_version, agent_hash) = match obs.metadata.as_ref().and_then(|m| m.parsed_version()) {
        Some((v, h)) => (Some(v), h),
        None => (
            snapshot["build"]["version"].as_str().map(String::from),
            snapshot["build"]["gitHash"].as_str().map(String::from),
        ),
    };
    let status_reason = if connected {
        Value::Null
    } else if agent_running {
        json!("the agent does not answer on its introspection endpoint")
    } else {
        json!(format!(
            "the agent is {}",
            snapshot["supervisor"]["agentState"]
                .as_str()
                .unwrap_or("down")
                .to_ascii_lowercase()
        ))
    };
    let obj = doc.as_object_mut().expect("snapshot is an object");
    obj.insert(
        "containerInstanceArn".into(),
        json!(instance_arn(snapshot, obs)),
    );
    obj.insert("agentConnected".into(), json!(connected));
    obj.insert(
        "versionInfo".into(),
        json!({
            "agentVersion": agent_version,
            "agentHash": agent_hash,
            "dockerVersion": snapshot["observed"]["dockerVersion"],
        }),
    );
    obj.insert("runningTasksCount".into(), json!(running));
    obj.insert("pendingTasksCount".into(), json!(pending));
    obj.insert("status".into(), json!("ACTIVE"));
    obj.insert("statusReason".into(), status_reason);
    obj.insert("cluster".into(), json!(cluster(cfg, snapshot, obs)));
    doc
}

fn line(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, f64)]) {
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    for (labels, v) in samples {
        out.push_str(&format!("{name}{labels} {v}\n"));
    }
}

/// Prometheus text exposition (format 0.0.4) of the snapshot.
pub fn metrics(snapshot: &Value) -> String {
    let mut out = String::new();
    let sup = &snapshot["supervisor"];
    let up = if sup["agentState"] == "RUNNING" {
        1.0
    } else {
        0.0
    };
    line(
        &mut out,
        "ecs_warden_agent_up",
        "1 when the agent process is running.",
        "gauge",
        &[(String::new(), up)],
    );
    line(
        &mut out,
        "ecs_warden_agent_restarts_total",
        "Agent restarts since the warden started.",
        "counter",
        &[(String::new(), sup["restarts"].as_f64().unwrap_or(0.0))],
    );
    line(
        &mut out,
        "ecs_warden_agent_uptime_seconds",
        "Seconds the current agent process has run.",
        "gauge",
        &[(
            String::new(),
            sup["agentUptimeSeconds"].as_f64().unwrap_or(0.0),
        )],
    );
    line(
        &mut out,
        "ecs_warden_agent_consecutive_failures",
        "Failed agent runs in a row (resets after a stable run).",
        "gauge",
        &[(
            String::new(),
            sup["consecutiveFailures"].as_f64().unwrap_or(0.0),
        )],
    );
    let m = &snapshot["update"]["counters"];
    let results: Vec<(String, f64)> = ["UPDATED", "FAILED"]
        .iter()
        .map(|r| {
            (
                format!("{{result=\"{r}\"}}"),
                m["updates"][*r].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    line(
        &mut out,
        "ecs_warden_updates_total",
        "Updates finished since the warden started, by result.",
        "counter",
        &results,
    );
    let state = snapshot["update"]["state"].as_str().unwrap_or("");
    let states: Vec<(String, f64)> = [
        "PENDING", "STAGING", "STAGED", "UPDATING", "UPDATED", "FAILED",
    ]
    .iter()
    .map(|s| {
        (
            format!("{{state=\"{s}\"}}"),
            if *s == state { 1.0 } else { 0.0 },
        )
    })
    .collect();
    line(
        &mut out,
        "ecs_warden_update_state",
        "1 for the state of the current or last update.",
        "gauge",
        &states,
    );
    line(
        &mut out,
        "ecs_warden_download_bytes_total",
        "Bytes of agent builds downloaded since the warden started.",
        "counter",
        &[(String::new(), m["downloadedBytes"].as_f64().unwrap_or(0.0))],
    );
    line(
        &mut out,
        "ecs_warden_last_update_duration_seconds",
        "Duration of the last finished update, from acceptance to UPDATED or FAILED.",
        "gauge",
        &[(
            String::new(),
            m["lastUpdateSeconds"].as_f64().unwrap_or(0.0),
        )],
    );
    out
}
