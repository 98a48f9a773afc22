//! The messages of the main loop: everything it reacts to (`Event`), what
//! callers ask of it (`Action`) and what it answers (`Reply`), and `ask`,
//! the one way for another thread to ask and wait.
//!
//! A leaf: the supervisor, the runtimes, the update workers and the API
//! threads all speak through these types, and none of them is imported
//! here.

use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use serde::Serialize;

use crate::document::Snapshot;
use crate::error::{ApiError, EcsErrorName};
use crate::exit::Ended;
use crate::update::machine::Report;
use crate::update::request::Request;
use crate::update::status::UpdateStatus;

/// How long a caller waits for the main loop's answer.
const MAIN_LOOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the main loop reacts to.
pub enum Event {
    /// A signal delivered to the warden.
    Signal(i32),
    /// A control request and where to send the answer.
    Control(Action, Sender<Reply>),
    /// A runtime's news about the agent it runs.
    Agent(AgentEvent),
    /// A report from an update worker thread.
    Update(Report),
    /// A file appeared or was written in the agent's download directory.
    CacheFile(String),
    /// A file left the agent's download directory (removed, moved away).
    CacheFileGone(String),
}

/// What a runtime reports from its own threads. `run` names one start of
/// the agent, so news about an earlier one is ignored.
#[derive(Debug)]
pub enum AgentEvent {
    /// The agent ended.
    Exited { run: u64, ended: Ended },
    /// The agent's output ended; its last lines.
    OutputClosed { run: u64, tail: Vec<String> },
}

/// What a caller asks of the running warden.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The main loop's part of the status document.
    Status,
    /// Stop the agent gracefully, then the warden.
    Stop,
    /// Stage (and, when `perform`, perform) a resolved update.
    Update(Request),
    /// Roll back to the previous build.
    Rollback { keep_data: bool },
    /// A request refused before it reached the machine: recorded for
    /// status, answered with the error.
    Refuse(ApiError),
    /// The agent's stage call (`StageUpdate`).
    AgentStage {
        location: crate::source::Source,
        signature: String,
        version: Option<String>,
    },
    /// The agent's perform call (`PerformUpdate`).
    AgentPerform { signature: String },
    /// What a connection thread learned from the agent, for the cache.
    Observe(Observation),
    /// Replace the program image with the installed binary, keeping the agent.
    Reexec,
}

/// Facts about the agent and its host seen outside the main loop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub container_instance_arn: Option<String>,
    pub cluster: Option<String>,
    pub docker_version: Option<String>,
    /// Running and pending tasks, as the agent reported them.
    pub task_counts: Option<(usize, usize)>,
}

/// What the main loop answers.
pub type Reply = Result<Answer, ApiError>;

/// The main loop's answers, in their wire shapes.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Answer {
    Snapshot(Box<Snapshot>),
    Update(Box<UpdateStatus>),
    Stopping {
        stopping: bool,
    },
    Reexec {
        reexec: bool,
        deferred: bool,
        execs: u64,
    },
    Nothing,
}

/// Ask the main loop and wait for its reply.
pub fn ask(tx: &Sender<Event>, action: Action) -> Reply {
    let (rtx, rrx) = mpsc::channel();
    tx.send(Event::Control(action, rtx))
        .map_err(|_| ApiError::ecs(EcsErrorName::ServerException, "the warden is shutting down"))?;
    rrx.recv_timeout(MAIN_LOOP_TIMEOUT).unwrap_or_else(|_| {
        Err(ApiError::ecs(
            EcsErrorName::ServerException,
            "the warden's main loop did not answer in time",
        ))
    })
}

/// Tell the main loop without waiting for its answer.
pub fn tell(tx: &Sender<Event>, action: Action) {
    let (rtx, _) = mpsc::channel();
    let _ = tx.send(Event::Control(action, rtx));
}
