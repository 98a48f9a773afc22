//! The update's part of the status document (`update` in `GET /v1/status`,
//! and the answer to every update request), as typed values.

use std::collections::BTreeMap;

use serde::Serialize;

use super::journal::{Failure, HistoryLine, Origin, Record, State};
use super::quarantine::Entry;
use crate::error::EcsErrorName;

/// A request refused before it became an update: kept for `status`
/// (`update.lastRefusal`) and answered with its ECS error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal {
    pub name: EcsErrorName,
    pub message: String,
    pub at: String,
}

/// An update the agent is downloading itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgentStaging {
    /// Its file in the download directory.
    pub file: String,
    pub since: String,
}

/// Results since the warden started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub updates: Results,
    pub downloaded_bytes: u64,
    pub last_update_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Results {
    #[serde(rename = "UPDATED")]
    pub updated: u64,
    #[serde(rename = "FAILED")]
    pub failed: u64,
}

/// The update in flight or the last one, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateStatus {
    /// `null` when there has been no update.
    pub state: Option<State>,
    #[serde(flatten)]
    pub record: Option<RecordView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_done: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_total: Option<u64>,
    pub last_refusal: Option<Refusal>,
    pub counters: Counters,
    /// The agent is downloading an update itself (its file appeared in
    /// its download directory); shown until the warden takes it in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_staging: Option<AgentStaging>,
    pub quarantined: BTreeMap<String, Entry>,
    pub history: Vec<HistoryLine>,
}

/// The record's fields in the status document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordView {
    pub id: String,
    pub step: &'static str,
    pub origin: Origin,
    pub target: String,
    pub target_sha256: String,
    pub target_url: String,
    pub source: String,
    pub previous_version: Option<String>,
    pub perform: bool,
    pub attempts: u32,
    /// How many tasks were RUNNING before the switch.
    pub tasks_before: usize,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub error: Option<Failure>,
}

impl RecordView {
    pub fn of(r: &Record) -> RecordView {
        RecordView {
            id: r.id.clone(),
            step: r.step.as_str(),
            origin: r.origin,
            target: r.target.version.clone(),
            target_sha256: r.target.sha256.clone(),
            target_url: r.target.url.to_string(),
            source: r.source.clone(),
            previous_version: r.previous_version.clone(),
            perform: r.perform,
            attempts: r.attempts,
            tasks_before: r.tasks_before.len(),
            created_at: r.created_at.clone(),
            updated_at: r.updated_at.clone(),
            finished_at: r.finished_at.clone(),
            error: r.error.clone(),
        }
    }
}
