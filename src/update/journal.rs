//! The update journal: `var/lib/ecs-warden/state.json` holds the update in
//! flight (or the last one), `history.jsonl` every transition.
//!
//! Protocol: before a step starts, the record naming that step is written
//! durably (`durable::write_json`), then one line is appended to the
//! history. After a crash, the record names the step that may be half done;
//! every step is written so that doing it again, or undoing it, is safe.
//! Only this module writes these two files.

use std::fs;
use std::io;

use serde::{Deserialize, Serialize};

use crate::durable;
use crate::error::{EcsErrorName, Error, Result};
use crate::paths::Paths;
use crate::source::Source;
use crate::store::now_rfc3339;

/// ECS `agentUpdateStatus` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    Pending,
    Staging,
    Staged,
    Updating,
    Updated,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Staging => "STAGING",
            State::Staged => "STAGED",
            State::Updating => "UPDATING",
            State::Updated => "UPDATED",
            State::Failed => "FAILED",
        }
    }

    /// UPDATED and FAILED end an update.
    pub fn is_terminal(self) -> bool {
        matches!(self, State::Updated | State::Failed)
    }
}

/// The step an update has reached. The step implies the state (see
/// `Step::state`); on disk both are written, as before, with `"done"` for
/// the two terminal steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// PENDING: accepted, nothing done yet.
    Accepted,
    /// STAGING: bytes are being fetched into the partial file.
    Downloading,
    /// STAGED: the verified build is in the store.
    Staged,
    /// UPDATING, in order:
    Reverify,
    RecordTasks,
    /// Stop the old agent, snapshot its data, switch, start the new one.
    StopOld,
    HealthGate,
    /// Rolling back, in order:
    RollbackStop,
    RollbackSwitch,
    RollbackRestore,
    RollbackStart,
    RollbackGate,
    /// UPDATED.
    Updated,
    /// FAILED.
    Failed,
}

impl Step {
    /// Every step, in order (for tables and tests).
    pub const ALL: [Step; 14] = [
        Step::Accepted,
        Step::Downloading,
        Step::Staged,
        Step::Reverify,
        Step::RecordTasks,
        Step::StopOld,
        Step::HealthGate,
        Step::RollbackStop,
        Step::RollbackSwitch,
        Step::RollbackRestore,
        Step::RollbackStart,
        Step::RollbackGate,
        Step::Updated,
        Step::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Step::Accepted => "accepted",
            Step::Downloading => "downloading",
            Step::Staged => "staged",
            Step::Reverify => "reverify",
            Step::RecordTasks => "record-tasks",
            Step::StopOld => "stop-old",
            Step::HealthGate => "health-gate",
            Step::RollbackStop => "rollback-stop",
            Step::RollbackSwitch => "rollback-switch",
            Step::RollbackRestore => "rollback-restore",
            Step::RollbackStart => "rollback-start",
            Step::RollbackGate => "rollback-gate",
            Step::Updated | Step::Failed => "done",
        }
    }

    /// The ECS state this step is part of.
    pub fn state(self) -> State {
        match self {
            Step::Accepted => State::Pending,
            Step::Downloading => State::Staging,
            Step::Staged => State::Staged,
            Step::Reverify
            | Step::RecordTasks
            | Step::StopOld
            | Step::HealthGate
            | Step::RollbackStop
            | Step::RollbackSwitch
            | Step::RollbackRestore
            | Step::RollbackStart
            | Step::RollbackGate => State::Updating,
            Step::Updated => State::Updated,
            Step::Failed => State::Failed,
        }
    }

    /// The step a journal line names: `(state, step)` as written on disk.
    pub fn from_parts(state: State, step: &str) -> Option<Step> {
        let s = match step {
            "done" => match state {
                State::Updated => Step::Updated,
                State::Failed => Step::Failed,
                _ => return None,
            },
            other => *Step::ALL
                .iter()
                .find(|s| s.as_str() == other && !s.is_terminal())?,
        };
        (s.state() == state).then_some(s)
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Step::Updated | Step::Failed)
    }

    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            Step::RollbackStop
                | Step::RollbackSwitch
                | Step::RollbackRestore
                | Step::RollbackStart
                | Step::RollbackGate
        )
    }
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A step on disk: the two fields `"state"` and `"step"`, as the journal
/// and the history have always been written (`#[serde(flatten, with)]`).
mod step_parts {
    use super::{State, Step};
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Parts {
        state: State,
        step: String,
    }

    pub fn serialize<S: Serializer>(step: &Step, s: S) -> Result<S::Ok, S::Error> {
        Parts {
            state: step.state(),
            step: step.as_str().to_string(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Step, D::Error> {
        let p = Parts::deserialize(d)?;
        Step::from_parts(p.state, &p.step).ok_or_else(|| {
            D::Error::custom(format!(
                "step {:?} is not a step of state {}",
                p.step,
                p.state.as_str()
            ))
        })
    }
}

/// What is being installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_hash: Option<String>,
    /// Where the bytes come from (a URL string in the journal).
    pub url: Source,
    pub sha256: String,
    pub size: u64,
}

impl Target {
    /// Name of its partial download: the version, or the digest while the
    /// version is unknown (an agent's stage call without one).
    pub fn key(&self) -> String {
        if self.version.is_empty() {
            format!("sha256-{}", &self.sha256[..16.min(self.sha256.len())])
        } else {
            self.version.clone()
        }
    }
}

/// Who asked for the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    /// `ecs-warden update` / `stage` over the control socket.
    Cli,
    /// `UpdateContainerAgent` over the ECS JSON API.
    Api,
    /// The agent's stage/perform calls.
    Agent,
    /// The agent staged a file itself (`desired-image`), to be performed
    /// when it exits 42.
    Exit42,
    /// `ecs-warden rollback`.
    Rollback,
}

/// A task the agent reported RUNNING before the switch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskRecord {
    pub arn: String,
    /// Container Docker IDs, sorted.
    pub containers: Vec<String>,
}

/// Why an update failed: the machine-readable `error.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The bytes could not be fetched.
    Download,
    /// The bytes are not what was promised (size, digest, format, version).
    Verify,
    /// The disk is full or the store unwritable.
    Disk,
    /// A different build of the same version is installed.
    Conflict,
    /// The target turned out not acceptable once its version was known.
    Refused,
    /// The warden was stopped or killed too often in the middle.
    Interrupted,
    /// A step could not be recorded in the journal.
    Journal,
    /// `current` could not be switched.
    Switch,
    /// The new build could not be started.
    Start,
    /// The agent's data could not be snapshotted.
    Snapshot,
    /// The running agent's tasks could not be read before the switch.
    RecordTasks,
    /// The new build failed its health gate.
    HealthGate,
    /// The new build exited during its health gate.
    Crash,
    /// The rollback did not complete.
    Rollback,
    /// A worker thread panicked (a bug): the update was stopped.
    Panic,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Download => "download",
            Reason::Verify => "verify",
            Reason::Disk => "disk",
            Reason::Conflict => "conflict",
            Reason::Refused => "refused",
            Reason::Interrupted => "interrupted",
            Reason::Journal => "journal",
            Reason::Switch => "switch",
            Reason::Start => "start",
            Reason::Snapshot => "snapshot",
            Reason::RecordTasks => "record-tasks",
            Reason::HealthGate => "health-gate",
            Reason::Crash => "crash",
            Reason::Rollback => "rollback",
            Reason::Panic => "panic",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// ECS error name.
    pub name: EcsErrorName,
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(name: EcsErrorName, reason: Reason, message: impl Into<String>) -> Failure {
        Failure {
            name,
            reason,
            message: message.into(),
        }
    }
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Unique per update, to tell stale worker reports from current ones.
    pub id: String,
    #[serde(flatten, with = "step_parts")]
    pub step: Step,
    pub origin: Origin,
    pub target: Target,
    /// The manifest, file or call the target came from.
    pub source: String,
    /// Perform after staging (`update`), or stop at STAGED (`stage`).
    pub perform: bool,
    /// Quarantine overridden by the operator.
    #[serde(default)]
    pub force: bool,
    /// The build that ran when the update started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_version: Option<String>,
    /// The build `agents/previous` named when the update started; a
    /// rollback points `previous` back at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_link: Option<String>,
    /// Times the UPDATING sequence was (re)started.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub tasks_before: Vec<TaskRecord>,
    /// `tasks_before` came from the engine (the agent was down).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub tasks_from_engine: bool,
    /// Restore the data snapshot on rollback.
    #[serde(default = "yes")]
    pub restore_data: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

fn yes() -> bool {
    true
}

impl Record {
    pub fn new(origin: Origin, target: Target, source: String, perform: bool) -> Record {
        let now = now_rfc3339();
        let mut rnd = [0u8; 4];
        let _ = getrandom::getrandom(&mut rnd);
        Record {
            id: format!(
                "{}-{}",
                now.replace([':', '-', '.'], "").trim_end_matches('Z'),
                crate::store::hex(&rnd)
            ),
            step: Step::Accepted,
            origin,
            target,
            source,
            perform,
            force: false,
            previous_version: None,
            previous_link: None,
            attempts: 0,
            tasks_before: Vec::new(),
            tasks_from_engine: false,
            restore_data: true,
            error: None,
            created_at: now.clone(),
            updated_at: now,
            finished_at: None,
        }
    }

    /// Whether an update is in flight (not finished).
    pub fn in_flight(&self) -> bool {
        !self.step.is_terminal()
    }

    pub fn state(&self) -> State {
        self.step.state()
    }
}

/// A line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryLine {
    pub at: String,
    pub id: String,
    #[serde(flatten, with = "step_parts")]
    pub step: Step,
    pub target: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Failure>,
}

impl HistoryLine {
    pub fn of(rec: &Record) -> HistoryLine {
        HistoryLine {
            at: rec.updated_at.clone(),
            id: rec.id.clone(),
            step: rec.step,
            target: rec.target.version.clone(),
            error: rec.error.clone(),
        }
    }
}

pub struct Journal {
    paths: Paths,
}

impl Journal {
    pub fn new(paths: &Paths) -> Journal {
        Journal {
            paths: paths.clone(),
        }
    }

    /// The record on disk, if any. A corrupt file is an error: the warden
    /// must not guess what was in flight.
    pub fn load(&self) -> Result<Option<Record>> {
        let path = self.paths.state();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::Other(format!(
                    "{}: the update journal is not valid ({e}); move it aside to start without it",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read update journal", &path)(e)),
        }
    }

    /// Durably record `rec` as it is (the machine stamps its times), then
    /// append its history line.
    pub fn write(&self, rec: &Record) -> Result<()> {
        durable::write_json("update journal", &self.paths.state(), rec)?;
        let text = serde_json::to_string(&HistoryLine::of(rec)).unwrap_or_default();
        if let Err(e) = durable::append_line("update history", &self.paths.history(), &text) {
            // History is for people; the journal above is what recovery reads.
            log::warn!("{e}");
        }
        Ok(())
    }

    /// The last `n` history lines (a torn last line is skipped). Reads
    /// only the file's tail, however long the history grows.
    pub fn history(&self, n: usize) -> Vec<HistoryLine> {
        use std::io::{Read, Seek, SeekFrom};
        const TAIL: u64 = 64 * 1024;
        let Ok(mut f) = fs::File::open(self.paths.history()) else {
            return Vec::new();
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let start = len.saturating_sub(TAIL);
        let mut text = String::new();
        if f.seek(SeekFrom::Start(start)).is_err() || f.read_to_string(&mut text).is_err() {
            return Vec::new();
        }
        let mut lines_iter = text.lines();
        if start > 0 {
            lines_iter.next(); // a partial first line
        }
        let lines: Vec<HistoryLine> = lines_iter
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let skip = lines.len().saturating_sub(n);
        lines.into_iter().skip(skip).collect()
    }
}
