//! The update machine: a value that takes events and returns effects.
//!
//! It owns the journal record, the quarantine list and the update
//! counters, and nothing else: it never touches processes, threads, files
//! or the supervisor. The supervisor feeds it `Input`s (a request, a
//! worker's report, the agent stopped/started/exited, a journal write that
//! succeeded or failed, "recovered at this step") together with a
//! read-only view of the host (`World`), and executes the `Effect`s it
//! returns, in order. An effect that has an outcome (`Record`,
//! `StopAgent`, `StartAgent`, `Switch`) is the last of its batch; its
//! outcome comes back as the next input, so "announce the step, then do its
//! work" is always two transitions:
//!
//! 1. `announce(step)`: the record naming the step goes out as
//!    `Effect::Record`;
//! 2. `Input::Recorded`: the step is durable; `enter(step)` starts its work;
//! 3. the work's outcome (a report, `AgentStopped`, ...) leads to the next
//!    `announce`.
//!
//! Recovery after a crash is the same transitions: `Input::Recovered` at
//! the step the journal names resumes that step (each is idempotent).
//!
//! The steps, in order (the full table is `transition`):
//!
//! 1. PENDING/accepted: the request was validated, its target is newer
//!    than what runs, not quarantined, nothing else in flight.
//! 2. STAGING/downloading: a worker streams the build into the store.
//! 3. STAGED/staged: stop here for `stage`; go on for `update`.
//! 4. UPDATING/reverify: a worker hashes the staged build again. (An
//!    update the agent staged is hashed while the old agent still runs,
//!    at STAGED; at exit 42 the reverify then only checks that the file
//!    is the one hashed, unchanged: `Preverify`, `store::Seal`.)
//! 5. UPDATING/record-tasks: the tasks the agent reports RUNNING.
//! 6. UPDATING/stop-old: the agent's downtime, one record for all of it:
//!    stop the old agent, snapshot its data, switch `current`, start the
//!    new build.
//! 7. UPDATING/health-gate.
//! 8. UPDATED, or after a failure from step 6 on the rollback:
//!    rollback-stop, rollback-switch, rollback-restore, rollback-start,
//!    rollback-gate, then FAILED, and the failed version is quarantined.
//!
//! When a step cannot be recorded, the machine stops advancing: it keeps
//! (or gets) an agent running from whatever `current` names, reports FAILED
//! in memory, and retries the journal write with backoff.

use std::collections::VecDeque;
use std::time::Duration;

use super::journal::{Failure, HistoryLine, Origin, Reason, Record, Step, Target, TaskRecord};
use super::quarantine::Quarantine;
use super::request::Request;
use super::status::{AgentStaging, Counters, RecordView, Refusal, UpdateStatus};
use crate::error::EcsErrorName::{self, *};
use crate::exit::Ended;
use crate::store::{now_rfc3339, parse_version, Seal};

/// Starts of the new build (warden restarts included) before giving up.
pub const MAX_ATTEMPTS: u32 = 3;
/// History lines in the status document.
pub const HISTORY_LINES: usize = 10;
/// The first and the longest wait before writing an unwritable journal again.
const JOURNAL_RETRY_MIN: Duration = Duration::from_secs(1);
const JOURNAL_RETRY_MAX: Duration = Duration::from_secs(60);

/// A complete build in the store, as the machine needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    pub version: String,
    pub git_hash: Option<String>,
    pub sha256: String,
    pub size: u64,
    /// Where its artifact is, as a `file://` URL.
    pub url: crate::source::Source,
    /// Its directory, as the operator sees it (for messages).
    pub dir: String,
}

/// What the machine may ask about the host. Read-only.
pub trait World {
    /// The complete build `agents/current` names.
    fn current(&self) -> Option<Built>;
    /// The complete build `agents/previous` names.
    fn previous(&self) -> Option<Built>;
    /// Whether `agents/current` names `version` (complete or not).
    fn current_is(&self, version: &str) -> bool;
    /// The complete build of `version`, if installed.
    fn build(&self, version: &str) -> Option<Built>;
    /// The update that took build `version`'s data snapshot, if it has a
    /// complete one.
    fn snapshot_by(&self, version: &str) -> Option<String>;
    /// Whether the agent runs now.
    fn agent_running(&self) -> bool;
    /// Whether no agent runs and none is due (it exited and the warden
    /// has not decided what comes next).
    fn agent_down(&self) -> bool;
    /// Whether the warden is stopping.
    fn stopping(&self) -> bool;
    /// Whether the agent left `desired-image` (its staged update).
    fn desired_image(&self) -> bool;
    /// Where `desired-image` is, as the operator sees it (for messages).
    fn desired_image_path(&self) -> String;
}

/// Everything the machine reacts to.
#[derive(Debug)]
pub enum Input {
    /// A resolved `update`/`stage` (CLI, API).
    Update(Request),
    /// The agent's stage call (`StageUpdate`).
    AgentStage {
        location: crate::source::Source,
        signature: String,
        version: Option<String>,
    },
    /// The agent's perform call (`PerformUpdate`).
    AgentPerform { signature: String },
    /// `ecs-warden rollback`.
    Rollback { keep_data: bool },
    /// The warden started with the journal it found: resume or undo.
    Recovered,
    /// The last `Effect::Record` is durable.
    Recorded,
    /// The last `Effect::Record` could not be written.
    NotRecorded(String),
    /// Time to write a journal record that could not be written before.
    RetryJournal,
    /// A worker's report.
    Report(Report),
    /// The agent the machine asked to stop has stopped (or none ran).
    AgentStopped,
    /// The build `current` names was started as asked.
    AgentStarted,
    /// ... or could not be started.
    AgentStartFailed(String),
    /// The agent exited on its own.
    AgentExited(Ended),
    /// The agent exited 42: it may have staged an update itself.
    Exit42,
    /// A file appeared or was written in the agent's download directory
    /// (`*.ecs-update.tar`: the agent is downloading an update;
    /// `desired-image`: it has staged one).
    CacheFile(String),
    /// A file in the agent's download directory was removed or moved away
    /// (a download the agent gave up, or one it renamed).
    CacheFileGone(String),
    /// `Effect::Switch` done.
    Switched,
    /// `Effect::Switch` failed.
    SwitchFailed(String),
}

/// Reports from worker threads; `id` names the update they work for.
#[derive(Debug)]
pub enum Report {
    Progress {
        id: String,
        done: u64,
        total: u64,
    },
    /// The build is in the store; the target as learned (version and
    /// size, when the request did not know them).
    Staged {
        id: String,
        result: Result<Target, Failure>,
    },
    Reverified {
        id: String,
        result: Result<(), Failure>,
        /// The file as it was hashed, when it did not change meanwhile.
        seal: Option<Seal>,
    },
    Tasks {
        id: String,
        result: Result<Vec<TaskRecord>, String>,
    },
    Snapshot {
        id: String,
        result: Result<(), String>,
    },
    Restored {
        id: String,
        result: Result<(), String>,
    },
    Gate {
        id: String,
        seq: u64,
        result: Result<(), String>,
    },
    /// What `desired-image` names, checked and hashed: staged by a
    /// running agent (`perform` false), or before it exited 42.
    DesiredImage {
        perform: bool,
        result: Result<Option<Target>, String>,
    },
    /// A worker panicked (a bug): its update must not stay stuck.
    Panicked {
        id: Option<String>,
        work: &'static str,
        message: String,
    },
}

impl Report {
    fn id(&self) -> Option<&str> {
        match self {
            Report::Progress { id, .. }
            | Report::Staged { id, .. }
            | Report::Reverified { id, .. }
            | Report::Tasks { id, .. }
            | Report::Snapshot { id, .. }
            | Report::Restored { id, .. }
            | Report::Gate { id, .. } => Some(id),
            Report::Panicked { id, .. } => id.as_deref(),
            Report::DesiredImage { .. } => None,
        }
    }
}

/// Work for a worker thread, described as data.
#[derive(Debug, Clone, PartialEq)]
pub enum Work {
    /// Download `target` into the store (verified, marker last).
    Download {
        id: String,
        target: Target,
        source: String,
    },
    /// Hash the staged build again; with a `seal` from a full hash of
    /// this update (taken while the old agent still ran), a file that
    /// still matches it is not read again.
    Reverify {
        id: String,
        target: Target,
        seal: Option<Seal>,
    },
    /// The tasks RUNNING now: as the running agent reports them, or, with
    /// the agent down (it exited 42), as the engine runs them (containers
    /// labelled with their task's ARN).
    RecordTasks { id: String, from_engine: bool },
    /// Copy the stopped agent's data beside build `version`.
    Snapshot { id: String, version: String },
    /// Put build `version`'s data snapshot back.
    Restore { id: String, version: String },
    /// The health gate for `version`.
    Gate {
        id: String,
        seq: u64,
        version: String,
        tasks_before: Vec<TaskRecord>,
        /// The tasks came from the engine: check their containers run too.
        check_engine: bool,
    },
    /// Check and hash what `desired-image` names.
    DesiredImage { perform: bool },
}

/// Where `agents/previous` should point after a switch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    Keep,
    Set(String),
    Remove,
}

/// What the machine asks the supervisor to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Write this record durably (then its history line); the outcome is
    /// `Recorded` or `NotRecorded`.
    Record(Record),
    /// Run this on a worker thread; it reports with `Input::Report`.
    Work(Work),
    /// Stop the agent gracefully; `AgentStopped` follows (at once when none
    /// runs).
    StopAgent,
    /// Start the build `current` names; `AgentStarted` or
    /// `AgentStartFailed` follows.
    StartAgent,
    /// Start the agent unless one runs or a restart is due.
    EnsureAgent,
    /// Restart the agent after the backoff (it just crashed).
    RestartLater,
    /// Point `current` (and `previous`) at builds; `durable` fsyncs the
    /// store at once, else `SyncStore` follows later. `Switched` or
    /// `SwitchFailed` follows.
    Switch {
        current: String,
        previous: Link,
        durable: bool,
    },
    /// Make the store's directory entries durable.
    SyncStore,
    /// Remove a build whose bytes changed on disk.
    RemoveBuild(String),
    /// Remove the partial download of this target key.
    RemovePartial(String),
    /// Write the quarantine list.
    SaveQuarantine(Quarantine),
    /// Remove what no update needs any more (old builds, leftovers,
    /// consumed update files).
    Housekeeping,
    /// Remove `desired-image` and the file it names.
    ConsumeDesiredImage,
    /// Feed `RetryJournal` after this long.
    RetryJournalIn(Duration),
    /// Test-only fail point (see `failpoint`).
    Failpoint(&'static str),
    /// Answer the request being handled with the update's status (as it is
    /// once this input's effects are done).
    Answer,
    /// Refuse the request being handled.
    Refuse(Refusal),
}

/// The outcome the machine waits for (at most one at a time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// A record was handed out: entering `step`, amending the record in
    /// place, or retrying a record that could not be written.
    Record(Write),
    Stop,
    Start,
    Switch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Write {
    Enter(Step),
    Amend,
    Retry,
}

pub struct Machine {
    /// The update in flight, or the last one.
    rec: Option<Record>,
    /// The record last written durably: what a restart would read.
    durable: Option<Record>,
    wait: Option<Wait>,
    /// The wait the input being handled ended.
    settled: Option<Wait>,
    quarantine: Quarantine,
    /// Quarantine the target when the FAILED record is entered (it failed
    /// after the switch and was rolled back).
    quarantine_on_failure: bool,
    /// The last history lines, newest last.
    history: VecDeque<HistoryLine>,
    /// Bytes on disk and total, while STAGING.
    progress: Option<(u64, u64)>,
    /// Bytes reported by the download in flight, for the byte counter.
    progress_seen: u64,
    /// Bumped per gate run; older gate reports are ignored.
    gate_seq: u64,
    last_refusal: Option<Refusal>,
    counters: Counters,
    /// Set while the record could not be written: the next wait.
    journal_retry: Option<Duration>,
    /// What a new request replaced, put back if its first record fails.
    replaced: Option<(Option<Record>, Option<Duration>)>,
    /// The agent is downloading an update itself (a `*.ecs-update.tar`
    /// appeared) and no update is in flight.
    agent_staging: Option<AgentStaging>,
    /// The hash of an update the agent staged, done while it still runs
    /// (so that its exit 42 need not wait for it).
    preverify: Option<Preverify>,
}

/// The early hash of an agent-staged build (`Machine::preverify`).
#[derive(Debug, Clone, PartialEq)]
enum Preverify {
    /// Handed out for update `id`; its report stands for the reverify.
    Running { id: String },
    /// Done for update `id` before the reverify step began: passed (with
    /// the file as it was hashed, unless it changed meanwhile) or failed.
    Done {
        id: String,
        result: Result<Option<Seal>, Failure>,
    },
}

/// A pattern: no update in flight (none yet, or the last one ended).
macro_rules! idle {
    () => {
        None | Some(Step::Updated | Step::Failed)
    };
}

fn refusal(name: EcsErrorName, message: impl Into<String>) -> Refusal {
    Refusal {
        name,
        message: message.into(),
        at: now_rfc3339(),
    }
}

fn failure(name: EcsErrorName, reason: Reason, message: impl Into<String>) -> Failure {
    Failure::new(name, reason, message)
}

impl Machine {
    /// A machine with the journal's record, the quarantine list and the
    /// last history lines as found on disk.
    pub fn new(
        record: Option<Record>,
        quarantine: Quarantine,
        history: Vec<HistoryLine>,
    ) -> Machine {
        let skip = history.len().saturating_sub(HISTORY_LINES);
        Machine {
            durable: record.clone(),
            rec: record,
            wait: None,
            settled: None,
            quarantine,
            quarantine_on_failure: false,
            history: history.into_iter().skip(skip).collect(),
            progress: None,
            progress_seen: 0,
            gate_seq: 0,
            last_refusal: None,
            counters: Counters::default(),
            journal_retry: None,
            replaced: None,
            agent_staging: None,
            preverify: None,
        }
    }

    /// React to `input`; the effects to execute, in order.
    pub fn handle(&mut self, input: Input, w: &dyn World) -> Vec<Effect> {
        let mut fx = Vec::new();
        if self.admit(&input) {
            if matches!(
                input,
                Input::Recorded
                    | Input::NotRecorded(_)
                    | Input::AgentStopped
                    | Input::AgentStarted
                    | Input::AgentStartFailed(_)
                    | Input::Switched
                    | Input::SwitchFailed(_)
            ) {
                // The outcome waited for has come.
                self.settled = self.wait.take();
            }
            self.transition(input, w, &mut fx);
        } else {
            log::debug!("update machine: ignored {input:?}");
        }
        fx
    }

    /// Stale and unexpected inputs are dropped here, in one place: a report
    /// for another update or an older gate run, an outcome nobody waits for.
    fn admit(&self, input: &Input) -> bool {
        let waiting = |w: Wait| self.wait == Some(w);
        match input {
            Input::Recorded | Input::NotRecorded(_) => matches!(self.wait, Some(Wait::Record(_))),
            Input::AgentStopped => waiting(Wait::Stop),
            Input::AgentStarted | Input::AgentStartFailed(_) => waiting(Wait::Start),
            Input::Switched | Input::SwitchFailed(_) => waiting(Wait::Switch),
            Input::RetryJournal => self.journal_retry.is_some() && self.wait.is_none(),
            Input::Report(Report::Gate { seq, .. }) if *seq != self.gate_seq => false,
            Input::Report(r) => match r.id() {
                None => true,
                Some(id) => self
                    .rec
                    .as_ref()
                    .is_some_and(|rec| rec.id == id && rec.in_flight()),
            },
            _ => true,
        }
    }

    /// The table: every legal (step, input) and what it leads to. Anything
    /// not listed is ignored (an internal event) or refused (a request).
    fn transition(&mut self, input: Input, w: &dyn World, fx: &mut Vec<Effect>) {
        use Input as I;
        use Report as R;
        use Step::*;
        match (self.step(), input) {
            // ----- requests ---------------------------------------------
            (_, I::Update(_) | I::Rollback { .. } | I::AgentStage { .. }) if w.stopping() => {
                self.refuse(refusal(ServerException, "the warden is stopping"), fx)
            }
            (Some(Staged), I::Update(req)) if req.perform && req.target == self.rec().target => {
                // `update` after `stage` of the same build: perform it.
                self.rec_mut().perform = true;
                self.begin_perform(fx);
                fx.push(Effect::Answer);
            }
            (idle!(), I::Update(req)) => {
                if let Err(r) = self.accept(req, w, fx) {
                    self.refuse(r, fx);
                }
            }
            (idle!(), I::Rollback { keep_data }) => {
                if let Err(r) = self.accept_rollback(keep_data, w, fx) {
                    self.refuse(r, fx);
                }
            }
            (Some(_), I::AgentStage { signature, .. }) if self.is_agent_update(&signature) => {
                // The agent lost the answer and asks again: the same answer.
                fx.push(Effect::Answer)
            }
            (
                idle!(),
                I::AgentStage {
                    location,
                    signature,
                    version,
                },
            ) => {
                let req = Request::agent_stage(location, signature, version);
                if let Err(r) = self.accept(req, w, fx) {
                    self.refuse(r, fx);
                }
            }
            (Some(_), I::Update(_) | I::Rollback { .. } | I::AgentStage { .. }) => {
                let r = self.in_flight_refusal();
                self.refuse(r, fx)
            }
            (Some(Staged), I::AgentPerform { signature }) if self.is_agent_update(&signature) => {
                self.rec_mut().perform = true;
                self.begin_perform(fx);
                fx.push(Effect::Answer);
            }
            (Some(Accepted | Downloading), I::AgentPerform { signature })
                if self.is_agent_update(&signature) =>
            {
                // Perform as soon as the download is verified.
                self.rec_mut().perform = true;
                self.write(Write::Amend, fx);
                fx.push(Effect::Answer);
            }
            (Some(_), I::AgentPerform { signature }) if self.is_agent_update(&signature) => {
                fx.push(Effect::Answer) // already performing, or done
            }
            (_, I::AgentPerform { signature }) => {
                let r = self.perform_refusal(&signature);
                self.refuse(r, fx)
            }

            // ----- the journal ------------------------------------------
            (_, I::Recorded) => self.recorded(w, fx),
            (_, I::NotRecorded(e)) => self.not_recorded(e, w, fx),
            (_, I::RetryJournal) => self.write(Write::Retry, fx),

            // ----- recovery ---------------------------------------------
            (idle!(), I::Recovered) => self.housekeeping(w, fx),
            (Some(step), I::Recovered) => self.recover(step, w, fx),

            // ----- staging ----------------------------------------------
            (Some(Downloading), I::Report(R::Progress { done, total, .. })) => {
                if done > self.progress_seen {
                    self.counters.downloaded_bytes += done - self.progress_seen;
                }
                self.progress_seen = done;
                self.progress = Some((done, total));
            }
            (Some(Downloading), I::Report(R::Staged { result: Ok(t), .. })) => {
                self.staged(t, w, fx)
            }
            (Some(Downloading), I::Report(R::Staged { result: Err(f), .. })) => self.fail(f, fx),

            // ----- performing -------------------------------------------
            (Some(Staged | Reverify), I::Report(R::Reverified { id, result, seal }))
                if self.preverifying(&id) =>
            {
                // The early hash of an agent-staged build. It stands for
                // the reverify once that step is durable; until then
                // (waiting for exit 42, or for the step's record) it is
                // kept for it.
                if self.step() == Some(Reverify) && self.wait.is_none() {
                    self.preverify = None;
                    self.reverified(result, fx)
                } else {
                    let result = result.map(|()| seal);
                    self.preverify = Some(Preverify::Done { id, result });
                }
            }
            (Some(Reverify), I::Report(R::Reverified { result, .. })) => {
                self.reverified(result, fx)
            }
            (
                Some(RecordTasks),
                I::Report(R::Tasks {
                    result: Ok(tasks), ..
                }),
            ) => self.after_tasks(tasks, fx),
            (Some(RecordTasks), I::Report(R::Tasks { result: Err(e), .. })) => self.fail(
                failure(
                    ServerException,
                    Reason::RecordTasks,
                    format!("cannot read the running agent's tasks: {e}"),
                ),
                fx,
            ),
            (Some(StopOld), I::AgentStopped) => {
                fx.push(Effect::Failpoint("after-stop-old"));
                let id = self.rec().id.clone();
                let version = self.rec().previous_version.clone().unwrap_or_default();
                fx.push(Effect::Work(Work::Snapshot { id, version }));
            }
            (Some(StopOld), I::Report(R::Snapshot { result: Ok(()), .. })) => {
                fx.push(Effect::Failpoint("after-snapshot"));
                let target = self.rec().target.version.clone();
                if w.current_is(&target) {
                    self.start_new(fx);
                } else {
                    let previous = match w.current() {
                        Some(b) if b.version != target => Link::Set(b.version),
                        _ => Link::Keep,
                    };
                    self.expect(
                        Wait::Switch,
                        Effect::Switch {
                            current: target,
                            previous,
                            durable: false,
                        },
                        fx,
                    );
                }
            }
            (Some(StopOld), I::Report(R::Snapshot { result: Err(e), .. })) => {
                self.rollback(Reason::Snapshot, e, fx)
            }
            (Some(StopOld), I::Switched) => self.start_new(fx),
            (Some(StopOld), I::SwitchFailed(e)) => self.rollback(Reason::Switch, e, fx),
            (Some(StopOld | HealthGate), I::AgentStarted) => {
                fx.push(Effect::SyncStore);
                fx.push(Effect::Failpoint("after-start-new"));
                self.announce(HealthGate, fx);
            }
            (Some(StopOld | HealthGate), I::AgentStartFailed(e)) => {
                fx.push(Effect::SyncStore);
                let v = self.rec().target.version.clone();
                self.rollback(
                    Reason::Start,
                    format!("build {v} could not be started: {e}"),
                    fx,
                )
            }
            (Some(StopOld | HealthGate), I::AgentExited(ended)) => {
                self.gate_seq += 1; // the running gate is moot
                let v = self.rec().target.version.clone();
                self.rollback(
                    Reason::Crash,
                    format!("the new agent {v} {ended} during the health gate"),
                    fx,
                )
            }
            (Some(HealthGate), I::Report(R::Gate { result: Ok(()), .. })) => {
                self.announce(Updated, fx)
            }
            (Some(HealthGate), I::Report(R::Gate { result: Err(e), .. })) => {
                self.rollback(Reason::HealthGate, e, fx)
            }

            // ----- rolling back -----------------------------------------
            (Some(RollbackStop), I::AgentStopped) => self.announce(RollbackSwitch, fx),
            (Some(RollbackSwitch), I::Switched) => self.announce(RollbackRestore, fx),
            (Some(RollbackSwitch), I::SwitchFailed(e)) => {
                let back = self.rollback_version();
                self.finish_rollback(Err(format!("could not switch back to {back}: {e}")), fx)
            }
            (Some(RollbackRestore), I::Report(R::Restored { result, .. })) => {
                self.after_restore(result, fx)
            }
            (Some(RollbackStart), I::AgentStarted) => {
                fx.push(Effect::Failpoint("after-rollback-start"));
                self.announce(RollbackGate, fx);
            }
            (Some(RollbackStart), I::AgentStartFailed(e)) => {
                let v = self.rollback_version();
                self.finish_rollback(Err(format!("build {v} could not be started: {e}")), fx)
            }
            (Some(RollbackStart | RollbackGate), I::AgentExited(ended)) => {
                self.gate_seq += 1;
                fx.push(Effect::RestartLater);
                let v = self.rollback_version();
                self.finish_rollback(Err(format!("agent {v} {ended}")), fx)
            }
            (Some(RollbackGate), I::Report(R::Gate { result, .. })) => {
                self.finish_rollback(result, fx)
            }

            // ----- a worker panicked ------------------------------------
            (
                _,
                I::Report(R::Panicked {
                    id: None, message, ..
                }),
            ) => self.exit_42_target(Err(format!("its check panicked: {message}")), w, fx),
            (Some(s), I::Report(R::Panicked { work, message, .. })) => {
                let m = format!("the {work} worker panicked: {message}");
                log::error!("update: {m}");
                match s {
                    Accepted | Downloading | Staged | Reverify | RecordTasks => {
                        self.fail(failure(ServerException, Reason::Panic, m), fx)
                    }
                    StopOld | HealthGate => self.rollback(Reason::Panic, m, fx),
                    RollbackStop | RollbackSwitch | RollbackRestore | RollbackStart
                    | RollbackGate => {
                        self.set_error(failure(ServerException, Reason::Panic, m.clone()));
                        self.finish_rollback(Err(m), fx)
                    }
                    Updated | Failed => {}
                }
            }

            // ----- the agent stages and exits 42 -------------------------
            (_, I::CacheFile(name)) => self.cache_file(&name, w, fx),
            (_, I::CacheFileGone(name)) => {
                if self.agent_staging.as_ref().is_some_and(|a| a.file == name) {
                    log::info!("the agent's download {name} went away; it is not staging now");
                    self.agent_staging = None;
                }
            }
            (Some(Staged), I::Exit42) if self.staged_by_agent() => {
                // Staged while the agent ran: perform it now.
                self.rec_mut().perform = true;
                self.begin_perform(fx);
            }
            (Some(Accepted | Downloading), I::Exit42) if self.staged_by_agent() => {
                self.rec_mut().perform = true;
                self.write(Write::Amend, fx);
            }
            (_, I::Exit42) => {
                if w.desired_image() {
                    fx.push(Effect::Work(Work::DesiredImage { perform: true }));
                } else {
                    log::info!(
                        "no update is staged (no {}); restarting the agent",
                        w.desired_image_path()
                    );
                    fx.push(Effect::StartAgent);
                }
            }
            (
                _,
                I::Report(R::DesiredImage {
                    perform: true,
                    result,
                }),
            ) => self.exit_42_target(result, w, fx),
            (
                _,
                I::Report(R::DesiredImage {
                    perform: false,
                    result,
                }),
            ) => self.agent_staged(result, w, fx),

            // ----- anything else ----------------------------------------
            (_, other) => log::debug!("update machine: {other:?} is not expected now; ignored"),
        }
    }

    // ----- queries --------------------------------------------------------

    fn step(&self) -> Option<Step> {
        self.rec.as_ref().map(|r| r.step)
    }

    fn rec(&self) -> &Record {
        self.rec.as_ref().expect("an update is in flight")
    }

    fn rec_mut(&mut self) -> &mut Record {
        self.rec.as_mut().expect("an update is in flight")
    }

    /// The record as it is now (in memory).
    pub fn record(&self) -> Option<&Record> {
        self.rec.as_ref()
    }

    pub fn in_flight(&self) -> bool {
        self.rec.as_ref().is_some_and(|r| r.in_flight())
    }

    /// Whether an update is between stopping the old agent and its end (a
    /// re-exec waits for that).
    pub fn switching(&self) -> bool {
        self.rec
            .as_ref()
            .is_some_and(|r| r.in_flight() && r.step >= Step::StopOld)
    }

    /// Whether an exit of the agent now is the machine's to handle (the new
    /// build is being started or checked), rather than the exit-code
    /// contract's.
    pub fn takes_agent_exit(&self) -> bool {
        matches!(
            self.step(),
            Some(Step::StopOld | Step::HealthGate | Step::RollbackStart | Step::RollbackGate)
        )
    }

    /// Versions housekeeping must keep while an update is in flight.
    pub fn in_flight_versions(&self) -> Vec<String> {
        match &self.rec {
            Some(r) if r.in_flight() => std::iter::once(r.target.version.clone())
                .chain(r.previous_version.clone())
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn quarantine(&self) -> &Quarantine {
        &self.quarantine
    }

    /// A request refused before it reached the machine (a bad manifest, a
    /// bad source): shown in `status` as the last refusal.
    pub fn note_refusal(&mut self, e: &crate::error::ApiError) {
        if let Some(name) = e.ecs_name() {
            self.last_refusal = Some(refusal(name, e.message.clone()));
        }
    }

    /// The ECS `agentUpdateStatus`: the update's state, or STAGING while
    /// the agent downloads one itself.
    pub fn ecs_state(&self) -> Option<super::journal::State> {
        match (&self.rec, &self.agent_staging) {
            (Some(r), _) if r.in_flight() => Some(r.state()),
            (_, Some(_)) => Some(super::journal::State::Staging),
            (r, None) => r.as_ref().map(|r| r.state()),
        }
    }

    /// The update's part of the status document.
    pub fn status(&self) -> UpdateStatus {
        UpdateStatus {
            state: self.rec.as_ref().map(|r| r.state()),
            record: self.rec.as_ref().map(RecordView::of),
            bytes_done: self.progress.map(|p| p.0),
            bytes_total: self.progress.map(|p| p.1),
            last_refusal: self.last_refusal.clone(),
            counters: self.counters.clone(),
            agent_staging: self.agent_staging.clone(),
            quarantined: self.quarantine.versions().clone(),
            history: self.history.iter().cloned().collect(),
        }
    }

    fn is_agent_update(&self, signature: &str) -> bool {
        self.rec.as_ref().is_some_and(|r| {
            r.origin == Origin::Agent
                && r.target.sha256 == signature
                && (r.in_flight() || r.step == Step::Updated)
        })
    }

    fn in_flight_refusal(&self) -> Refusal {
        let r = self.rec();
        refusal(
            UpdateInProgressException,
            format!(
                "an update to {} is already {} ({}) since {}",
                r.target.version,
                r.state().as_str(),
                r.step.as_str(),
                r.created_at
            ),
        )
    }

    fn perform_refusal(&self, signature: &str) -> Refusal {
        refusal(
            InvalidParameterException,
            match &self.rec {
                Some(r) if r.in_flight() => format!(
                    "signature {signature} does not match the update in flight ({}, sha256 {})",
                    r.state().as_str(),
                    r.target.sha256
                ),
                _ => format!("no update with signature {signature} is staged"),
            },
        )
    }

    /// The running build's version, or `MissingVersionException`.
    fn running_version(&self, w: &dyn World) -> Result<(String, semver::Version), Refusal> {
        let Some(build) = w.current() else {
            return Err(refusal(
                MissingVersionException,
                "no agent build is current, so its version is unknown",
            ));
        };
        let v = parse_version(&build.version).map_err(|m| {
            refusal(
                MissingVersionException,
                format!("the current agent build has no usable version: {m}"),
            )
        })?;
        Ok((build.version, v))
    }

    /// Check a target against what runs and the quarantine.
    fn check_target(&self, target: &Target, force: bool, w: &dyn World) -> Result<String, Refusal> {
        let (cur_name, cur) = self.running_version(w)?;
        let tv =
            parse_version(&target.version).map_err(|m| refusal(InvalidParameterException, m))?;
        if tv.cmp_precedence(&cur) != std::cmp::Ordering::Greater {
            return Err(refusal(
                NoUpdateAvailableException,
                format!("the agent already runs {cur}; the available build {tv} is not newer"),
            ));
        }
        if !force {
            if let Some(q) = self.quarantine.get(&target.version) {
                return Err(refusal(
                    NoUpdateAvailableException,
                    format!(
                        "version {} is quarantined since {} ({}); publish a newer build or force it with --force",
                        target.version, q.at, q.reason
                    ),
                ));
            }
        }
        Ok(cur_name)
    }

    /// The version a rollback goes back to.
    fn rollback_version(&self) -> String {
        let r = self.rec();
        if r.origin == Origin::Rollback {
            r.target.version.clone()
        } else {
            r.previous_version.clone().unwrap_or_default()
        }
    }

    // ----- effects with an outcome ----------------------------------------

    fn expect(&mut self, wait: Wait, effect: Effect, fx: &mut Vec<Effect>) {
        debug_assert!(self.wait.is_none(), "already waiting for {:?}", self.wait);
        self.wait = Some(wait);
        fx.push(effect);
    }

    /// Announce `step`: its record goes out; `enter` follows once durable.
    fn announce(&mut self, step: Step, fx: &mut Vec<Effect>) {
        self.rec_mut().step = step;
        if step.is_terminal() {
            match step {
                Step::Updated => self.counters.updates.updated += 1,
                _ => self.counters.updates.failed += 1,
            }
            self.counters.last_update_seconds = humantime::parse_rfc3339(&self.rec().created_at)
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs_f64());
        }
        self.write(Write::Enter(step), fx);
    }

    /// Hand out the record (stamped) for writing.
    fn write(&mut self, kind: Write, fx: &mut Vec<Effect>) {
        if kind == Write::Retry && self.journal_retry.is_none() {
            return;
        }
        let rec = self.rec_mut();
        rec.updated_at = now_rfc3339();
        if rec.step.is_terminal() && rec.finished_at.is_none() {
            rec.finished_at = Some(rec.updated_at.clone());
        }
        let rec = rec.clone();
        self.expect(Wait::Record(kind), Effect::Record(rec), fx);
    }

    /// The record handed out is durable.
    fn recorded(&mut self, w: &dyn World, fx: &mut Vec<Effect>) {
        let Some(Wait::Record(kind)) = self.settled.take() else {
            return;
        };
        let rec = self.rec().clone();
        self.history.push_back(HistoryLine::of(&rec));
        while self.history.len() > HISTORY_LINES {
            self.history.pop_front();
        }
        self.durable = Some(rec.clone());
        match kind {
            Write::Enter(step) => {
                log::info!(
                    "update {} -> {}: {} ({})",
                    rec.previous_version.as_deref().unwrap_or("?"),
                    rec.target.version,
                    rec.state().as_str(),
                    rec.step.as_str()
                );
                self.enter(step, w, fx)
            }
            Write::Amend => {}
            Write::Retry => {
                self.journal_retry = None;
                log::info!(
                    "the update journal is writable again: recorded {} ({})",
                    rec.state().as_str(),
                    rec.step.as_str()
                );
                if !rec.in_flight() {
                    self.housekeeping(w, fx);
                }
            }
        }
    }

    /// The record handed out could not be written. A new request is
    /// refused as if it never came; otherwise the update stops where it
    /// is (see the module doc) and the write is retried.
    fn not_recorded(&mut self, err: String, w: &dyn World, fx: &mut Vec<Effect>) {
        let Some(Wait::Record(kind)) = self.settled.take() else {
            return;
        };
        let rec = self.rec().clone();
        match kind {
            Write::Enter(Step::Accepted) => {
                // Only a new request announces PENDING: as if it never came.
                log::error!("update journal: {err}; the request is refused");
                let (before, retry) = self.replaced.take().unwrap_or_default();
                self.rec = before;
                self.journal_retry = retry;
                if let Some(d) = retry {
                    fx.push(Effect::RetryJournalIn(d));
                }
                self.progress = None;
                self.refuse(
                    refusal(
                        ServerException,
                        format!("cannot write the update journal: {err}"),
                    ),
                    fx,
                );
                return;
            }
            Write::Retry => {
                let next = self
                    .journal_retry
                    .unwrap_or(JOURNAL_RETRY_MIN)
                    .saturating_mul(2)
                    .min(JOURNAL_RETRY_MAX);
                log::warn!("update journal: still not writable: {err}");
                self.journal_retry = Some(next);
                fx.push(Effect::RetryJournalIn(next));
                return;
            }
            Write::Enter(step) if step.is_terminal() => {
                log::error!(
                    "the update to {} ended {}, but the journal cannot record it: {err}; retrying",
                    rec.target.version,
                    rec.state().as_str()
                );
                if step == Step::Failed {
                    self.leave_failed(w, fx);
                }
            }
            Write::Enter(step) => self.stop_unrecorded(step, &err, w, fx),
            Write::Amend => self.stop_unrecorded(rec.step, &err, w, fx),
        }
        self.journal_retry = Some(JOURNAL_RETRY_MIN);
        fx.push(Effect::RetryJournalIn(JOURNAL_RETRY_MIN));
        fx.push(Effect::Refuse(refusal(
            ServerException,
            format!("cannot write the update journal: {err}"),
        )));
    }

    /// `step` could not be recorded: FAILED in memory, an agent running
    /// from whatever `current` names.
    fn stop_unrecorded(&mut self, step: Step, err: &str, w: &dyn World, fx: &mut Vec<Effect>) {
        let running = match w.current() {
            Some(b) => format!("; agent build {} (current) is kept running", b.version),
            None => String::new(),
        };
        let before = match &self.rec().error {
            Some(e) => format!(
                " (it was rolling back after {}: {})",
                e.reason.as_str(),
                e.message
            ),
            None => String::new(),
        };
        let f = failure(
            ServerException,
            Reason::Journal,
            format!(
                "cannot record step {} in the update journal: {err}; the update stopped there{running}{before}",
                step.as_str()
            ),
        );
        log::error!(
            "update to {} stopped: {}",
            self.rec().target.version,
            f.message
        );
        self.rec_mut().error = Some(f);
        self.rec_mut().step = Step::Failed;
        self.counters.updates.failed += 1;
        let rec = self.rec_mut();
        rec.updated_at = now_rfc3339();
        rec.finished_at = Some(rec.updated_at.clone());
        self.leave_failed(w, fx);
    }

    fn refuse(&mut self, r: Refusal, fx: &mut Vec<Effect>) {
        self.last_refusal = Some(r.clone());
        fx.push(Effect::Refuse(r));
    }

    fn set_error(&mut self, f: Failure) {
        let rec = self.rec_mut();
        if rec.error.is_none() {
            rec.error = Some(f);
        }
    }

    // ----- accepting ------------------------------------------------------

    fn accept(&mut self, req: Request, w: &dyn World, fx: &mut Vec<Effect>) -> Result<(), Refusal> {
        let previous = if req.target.version.is_empty() {
            // An agent's stage call without a version: checked once the
            // build is downloaded and its version known.
            self.running_version(w)?.0
        } else {
            self.check_target(&req.target, req.force, w)?
        };
        let mut rec = Record::new(req.origin, req.target, req.source, req.perform);
        rec.force = req.force;
        rec.previous_version = Some(previous);
        rec.previous_link = w.previous().map(|b| b.version);
        self.start(rec, fx);
        Ok(())
    }

    /// `ecs-warden rollback`: back to the previous build.
    fn accept_rollback(
        &mut self,
        keep_data: bool,
        w: &dyn World,
        fx: &mut Vec<Effect>,
    ) -> Result<(), Refusal> {
        let (cur_name, _) = self.running_version(w)?;
        let prev = w
            .previous()
            .filter(|p| p.version != cur_name)
            .ok_or_else(|| {
                refusal(
                    InvalidParameterException,
                    "there is no previous build to roll back to",
                )
            })?;
        let target = Target {
            version: prev.version.clone(),
            git_hash: prev.git_hash.clone(),
            url: prev.url.clone(),
            sha256: prev.sha256.clone(),
            size: prev.size,
        };
        let mut rec = Record::new(Origin::Rollback, target, "rollback".into(), true);
        rec.previous_version = Some(cur_name);
        rec.previous_link = Some(prev.version);
        rec.restore_data = !keep_data;
        self.start(rec, fx);
        Ok(())
    }

    fn start(&mut self, rec: Record, fx: &mut Vec<Effect>) {
        self.replaced = Some((self.rec.replace(rec), self.journal_retry.take()));
        self.agent_staging = None;
        self.progress = None;
        self.quarantine_on_failure = false;
        self.announce(Step::Accepted, fx);
    }

    /// What the agent staged before exiting 42, checked: update to it, or
    /// restart the agent as it was.
    fn exit_42_target(
        &mut self,
        result: Result<Option<Target>, String>,
        w: &dyn World,
        fx: &mut Vec<Effect>,
    ) {
        if w.stopping() || !w.agent_down() {
            return;
        }
        let refused = match result {
            Ok(Some(target))
                if self.staged_by_agent() && self.rec().target.sha256 == target.sha256 =>
            {
                // The same file, already on its way: perform it.
                self.rec_mut().perform = true;
                if self.step() == Some(Step::Staged) {
                    self.begin_perform(fx);
                } else {
                    self.write(Write::Amend, fx);
                }
                return;
            }
            Ok(Some(target)) => {
                let file = target.url.clone();
                let req = Request {
                    target,
                    source: format!("desired-image ({file})"),
                    origin: Origin::Exit42,
                    perform: true,
                    force: false,
                };
                match self.step() {
                    idle!() => match self.accept(req, w, fx) {
                        Ok(()) => return,
                        Err(r) => r,
                    },
                    Some(_) => self.in_flight_refusal(),
                }
            }
            Ok(None) => {
                log::info!(
                    "no update is staged (no {}); restarting the agent",
                    w.desired_image_path()
                );
                fx.push(Effect::StartAgent);
                return;
            }
            Err(e) => {
                log::error!("the agent's staged update is unusable: {e}");
                fx.push(Effect::ConsumeDesiredImage);
                fx.push(Effect::StartAgent);
                return;
            }
        };
        log::error!(
            "the agent's staged update is refused: {}: {}",
            refused.name,
            refused.message
        );
        fx.push(Effect::ConsumeDesiredImage);
        fx.push(Effect::StartAgent);
    }

    /// Whether the update in flight is one the agent staged itself and
    /// has not asked to perform yet.
    fn staged_by_agent(&self) -> bool {
        self.rec.as_ref().is_some_and(|r| {
            r.in_flight() && r.origin == Origin::Exit42 && !r.perform && r.step <= Step::Staged
        })
    }

    /// A file in the agent's download directory changed.
    fn cache_file(&mut self, name: &str, w: &dyn World, fx: &mut Vec<Effect>) {
        if w.stopping() {
            return;
        }
        if name == "desired-image" {
            fx.push(Effect::Work(Work::DesiredImage { perform: false }));
        } else if name.ends_with(".ecs-update.tar") && !self.in_flight() {
            log::info!("the agent is downloading an update ({name})");
            self.agent_staging = Some(AgentStaging {
                file: name.to_string(),
                since: now_rfc3339(),
            });
        }
    }

    /// The running agent staged an update (`desired-image`): take it in
    /// now, so that its perform (exit 42) only switches.
    fn agent_staged(
        &mut self,
        result: Result<Option<Target>, String>,
        w: &dyn World,
        fx: &mut Vec<Effect>,
    ) {
        if w.stopping() {
            return;
        }
        self.agent_staging = None;
        let target = match result {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                log::warn!("the agent's staged update is unusable: {e}");
                let r = refusal(
                    InvalidParameterException,
                    format!("the agent's staged update is unusable: {e}"),
                );
                self.last_refusal = Some(r);
                return;
            }
        };
        if let Some(r) = self.rec.as_ref().filter(|r| r.in_flight()) {
            if r.target.sha256 != target.sha256 {
                let refused = self.in_flight_refusal();
                log::warn!(
                    "the agent staged {} while {}",
                    target.version,
                    refused.message
                );
                self.last_refusal = Some(refused);
            }
            return;
        }
        let file = target.url.clone();
        let req = Request {
            target,
            source: format!("desired-image ({file})"),
            origin: Origin::Exit42,
            perform: false,
            force: false,
        };
        if let Err(r) = self.accept(req, w, fx) {
            log::warn!(
                "the agent's staged update is refused: {}: {}",
                r.name,
                r.message
            );
            self.last_refusal = Some(r);
        }
    }

    // ----- entering a recorded step ---------------------------------------

    /// `step` is durable: start its work.
    fn enter(&mut self, step: Step, w: &dyn World, fx: &mut Vec<Effect>) {
        use Step::*;
        let id = self.rec().id.clone();
        match step {
            Accepted => {
                if self.rec().origin == Origin::Rollback {
                    self.rec_mut().attempts += 1;
                    self.announce(RecordTasks, fx);
                } else {
                    fx.push(Effect::Failpoint("after-pending"));
                    self.begin_staging(w, fx);
                }
                fx.push(Effect::Answer);
            }
            Downloading => {
                let r = self.rec();
                let (target, source) = (r.target.clone(), r.source.clone());
                self.progress = Some((0, target.size));
                self.progress_seen = 0;
                fx.push(Effect::Work(Work::Download { id, target, source }));
            }
            Staged => {
                fx.push(Effect::Failpoint("after-staged"));
                self.progress = None;
                if self.rec().perform {
                    self.begin_perform(fx);
                } else {
                    log::info!(
                        "build {} is staged; waiting for perform",
                        self.rec().target.version
                    );
                    self.preverify(fx);
                }
            }
            Reverify => {
                let target = self.rec().target.clone();
                let seal = match self.preverify.take() {
                    // The early hash still runs: its report will do.
                    Some(Preverify::Running { id: p }) if p == id => {
                        log::info!(
                            "build {}: the hash begun at staging is still running; it stands for the reverify",
                            target.version
                        );
                        self.preverify = Some(Preverify::Running { id: p });
                        return;
                    }
                    Some(Preverify::Done { id: p, result }) if p == id => match result {
                        Ok(seal) => seal,
                        Err(f) => return self.reverified(Err(f), fx),
                    },
                    _ => None,
                };
                fx.push(Effect::Work(Work::Reverify { id, target, seal }));
            }
            RecordTasks => {
                // With the agent down (it exited 42), its tasks are the
                // engine's containers that carry a task's ARN.
                let from_engine = !w.agent_running();
                self.rec_mut().tasks_from_engine = from_engine;
                fx.push(Effect::Work(Work::RecordTasks { id, from_engine }));
            }
            StopOld | RollbackStop => self.expect(Wait::Stop, Effect::StopAgent, fx),
            HealthGate | RollbackGate => {
                self.gate_seq += 1;
                let version = if step == HealthGate {
                    self.rec().target.version.clone()
                } else {
                    self.rollback_version()
                };
                fx.push(Effect::Work(Work::Gate {
                    id,
                    seq: self.gate_seq,
                    version,
                    tasks_before: self.rec().tasks_before.clone(),
                    check_engine: self.rec().tasks_from_engine,
                }));
                fx.push(Effect::Failpoint(if step == HealthGate {
                    "during-gate"
                } else {
                    "during-rollback-gate"
                }));
            }
            RollbackSwitch => {
                fx.push(Effect::Failpoint("during-rollback"));
                let r = self.rec();
                let back = self.rollback_version();
                let previous = if r.origin == Origin::Rollback {
                    // Swap: the build we leave becomes `previous`.
                    Link::Set(r.previous_version.clone().unwrap_or_default())
                } else {
                    // As before the update.
                    match r.previous_link.clone() {
                        Some(p) if p != back => Link::Set(p),
                        _ => Link::Remove,
                    }
                };
                self.expect(
                    Wait::Switch,
                    Effect::Switch {
                        current: back,
                        previous,
                        durable: true,
                    },
                    fx,
                );
            }
            RollbackRestore => {
                let back = self.rollback_version();
                let r = self.rec();
                // A failed update restores only the snapshot it took itself
                // (an older one would lose the data written since); an
                // operator's rollback restores the one taken when the build
                // it goes back to was replaced.
                let restore = r.restore_data
                    && match w.snapshot_by(&back) {
                        Some(by) => r.origin == Origin::Rollback || by == r.id,
                        None => false,
                    };
                if restore {
                    fx.push(Effect::Work(Work::Restore { id, version: back }));
                } else {
                    if r.restore_data && r.origin != Origin::Rollback {
                        log::warn!(
                            "rollback: this update took no data snapshot of {back}; the agent's data is left as it is"
                        );
                    }
                    self.after_restore(Ok(()), fx);
                }
            }
            RollbackStart => self.expect(Wait::Start, Effect::StartAgent, fx),
            Updated => {
                self.updated(fx);
                self.housekeeping(w, fx);
            }
            Failed => {
                self.leave_failed(w, fx);
                if self.quarantine_on_failure {
                    let r = self.rec();
                    let (v, why) = match &r.error {
                        Some(e) => (
                            r.target.version.clone(),
                            format!("{}: {}", e.reason.as_str(), e.message),
                        ),
                        None => (r.target.version.clone(), "failed".to_string()),
                    };
                    self.quarantine.add(&v, now_rfc3339(), &why);
                    fx.push(Effect::SaveQuarantine(self.quarantine.clone()));
                    log::error!("update to {v} FAILED and was rolled back; quarantining {v}");
                }
                self.housekeeping(w, fx);
            }
        }
    }

    /// What FAILED leaves behind, written or not: no partial download, an
    /// agent running.
    fn leave_failed(&mut self, w: &dyn World, fx: &mut Vec<Effect>) {
        self.progress = None;
        fx.push(Effect::RemovePartial(self.rec().target.key()));
        if !w.stopping() {
            fx.push(Effect::EnsureAgent);
        }
    }

    fn begin_staging(&mut self, w: &dyn World, fx: &mut Vec<Effect>) {
        let target = self.rec().target.clone();
        if !target.version.is_empty() {
            if let Some(b) = w.build(&target.version) {
                if b.sha256 == target.sha256 {
                    log::info!("build {} is already in the store", target.version);
                    return self.announce(Step::Staged, fx);
                }
                // The install would refuse it after the whole download.
                return self.fail(
                    failure(
                        ClientException,
                        Reason::Conflict,
                        format!(
                            "build {} is already installed at {} with a different sha256 ({}, the manifest says {}); publish the change as a new version, or remove that directory first",
                            target.version, b.dir, b.sha256, target.sha256
                        ),
                    ),
                    fx,
                );
            }
        }
        self.announce(Step::Downloading, fx)
    }

    fn staged(&mut self, learned: Target, w: &dyn World, fx: &mut Vec<Effect>) {
        let was_unknown = self.rec().target.version.is_empty();
        self.rec_mut().target = learned.clone();
        if was_unknown {
            // Only now is the version known: the checks a request with a
            // version gets up front.
            if let Err(r) = self.check_target(&learned, self.rec().force, w) {
                return self.fail(failure(r.name, Reason::Refused, r.message), fx);
            }
        }
        self.announce(Step::Staged, fx)
    }

    /// An update the agent staged is performed when the agent exits 42,
    /// and its downtime starts then: hash the build now, while the old
    /// agent runs, so that the reverify at exit 42 only has to see that
    /// the file is the one hashed, unchanged (`Seal`).
    fn preverify(&mut self, fx: &mut Vec<Effect>) {
        let r = self.rec();
        if r.origin != Origin::Exit42 || r.perform {
            return;
        }
        let (id, target) = (r.id.clone(), r.target.clone());
        log::info!(
            "hashing build {} again now, while the agent that staged it runs",
            target.version
        );
        self.preverify = Some(Preverify::Running { id: id.clone() });
        fx.push(Effect::Work(Work::Reverify {
            id,
            target,
            seal: None,
        }));
    }

    /// Whether the early hash of update `id` is running.
    fn preverifying(&self, id: &str) -> bool {
        matches!(&self.preverify, Some(Preverify::Running { id: p }) if p == id)
    }

    /// The reverify's outcome.
    fn reverified(&mut self, result: Result<(), Failure>, fx: &mut Vec<Effect>) {
        match result {
            Ok(()) => self.announce(Step::RecordTasks, fx),
            Err(f) => {
                fx.push(Effect::RemoveBuild(self.rec().target.version.clone()));
                self.fail(f, fx)
            }
        }
    }

    fn begin_perform(&mut self, fx: &mut Vec<Effect>) {
        self.rec_mut().attempts += 1;
        if self.rec().attempts > MAX_ATTEMPTS {
            return self.fail(
                failure(
                    ServerException,
                    Reason::Interrupted,
                    format!("the update was interrupted {MAX_ATTEMPTS} times before the switch; giving up"),
                ),
                fx,
            );
        }
        self.announce(Step::Reverify, fx)
    }

    fn after_tasks(&mut self, tasks: Vec<TaskRecord>, fx: &mut Vec<Effect>) {
        log::info!("{} task(s) RUNNING before the switch", tasks.len());
        self.rec_mut().tasks_before = tasks;
        if self.rec().origin == Origin::Rollback {
            self.announce(Step::RollbackStop, fx)
        } else {
            self.announce(Step::StopOld, fx)
        }
    }

    /// Start the new build (`current` names it now).
    fn start_new(&mut self, fx: &mut Vec<Effect>) {
        fx.push(Effect::Failpoint("after-switch"));
        self.expect(Wait::Start, Effect::StartAgent, fx);
    }

    fn updated(&mut self, fx: &mut Vec<Effect>) {
        let r = self.rec().clone();
        let mut changed = false;
        if r.force {
            changed |= self.quarantine.remove(&r.target.version);
        }
        if r.origin == Origin::Rollback {
            if let Some(left) = &r.previous_version {
                self.quarantine
                    .add(left, now_rfc3339(), "rolled back by the operator");
                changed = true;
            }
            log::info!("rollback to {} complete", r.target.version);
        } else {
            log::info!("update to {} complete: UPDATED", r.target.version);
        }
        if changed {
            fx.push(Effect::SaveQuarantine(self.quarantine.clone()));
        }
    }

    /// Nothing in flight: old builds and files go, and so do quarantine
    /// entries for versions older than the one that runs.
    fn housekeeping(&mut self, w: &dyn World, fx: &mut Vec<Effect>) {
        if let Some(cur) = w.current() {
            let dropped = self.quarantine.prune(&cur.version);
            if !dropped.is_empty() {
                log::info!(
                    "quarantine: dropped {} (older than the current build {})",
                    dropped.join(", "),
                    cur.version
                );
                fx.push(Effect::SaveQuarantine(self.quarantine.clone()));
            }
        }
        fx.push(Effect::Housekeeping);
    }

    /// Fail before anything changed on the host: FAILED, no rollback.
    fn fail(&mut self, f: Failure, fx: &mut Vec<Effect>) {
        log::error!("update failed: {}: {}", f.name, f.message);
        self.rec_mut().error = Some(f);
        self.announce(Step::Failed, fx);
    }

    // ----- rolling back ---------------------------------------------------

    /// Something failed after the old agent was stopped: undo.
    fn rollback(&mut self, reason: Reason, message: String, fx: &mut Vec<Effect>) {
        log::error!(
            "update to {} failed: {message}; rolling back to {}",
            self.rec().target.version,
            self.rec().previous_version.as_deref().unwrap_or("?")
        );
        self.rec_mut().error = Some(failure(ServerException, reason, message));
        self.announce(Step::RollbackStop, fx);
    }

    fn after_restore(&mut self, result: Result<(), String>, fx: &mut Vec<Effect>) {
        if let Err(e) = result {
            log::error!("rollback: the data snapshot could not be restored: {e}");
            let note = format!("the data snapshot could not be restored: {e}");
            match &mut self.rec_mut().error {
                Some(err) => err.message.push_str(&format!("; {note}")),
                none => *none = Some(failure(ServerException, Reason::Snapshot, note)),
            }
        }
        self.announce(Step::RollbackStart, fx)
    }

    /// The rollback's gate reported (or the rollback could not go on).
    fn finish_rollback(&mut self, gate: Result<(), String>, fx: &mut Vec<Effect>) {
        let origin = self.rec().origin;
        if origin == Origin::Rollback && gate.is_ok() && self.rec().error.is_none() {
            return self.announce(Step::Updated, fx);
        }
        let rec = self.rec_mut();
        let mut err = rec.error.clone().unwrap_or_else(|| {
            failure(
                ServerException,
                Reason::Rollback,
                "the rollback did not complete",
            )
        });
        if let Err(e) = &gate {
            err.message.push_str(&format!(
                "; after the rollback the previous build is not healthy either: {e}"
            ));
        }
        rec.error = Some(err);
        self.quarantine_on_failure = origin != Origin::Rollback;
        self.announce(Step::Failed, fx)
    }

    // ----- recovery -------------------------------------------------------

    /// Resume or undo `step`, where a previous warden left the update.
    fn recover(&mut self, step: Step, w: &dyn World, fx: &mut Vec<Effect>) {
        use Step::*;
        let rec = self.rec().clone();
        log::warn!(
            "resuming the update to {} interrupted at {} ({})",
            rec.target.version,
            rec.state().as_str(),
            rec.step.as_str()
        );
        match step {
            Accepted | Downloading if rec.origin != Origin::Rollback => {
                fx.push(Effect::EnsureAgent);
                self.begin_staging(w, fx);
            }
            Staged => {
                fx.push(Effect::EnsureAgent);
                if rec.perform {
                    self.begin_perform(fx);
                } else {
                    self.preverify(fx);
                }
            }
            Accepted | Downloading | Reverify | RecordTasks => {
                fx.push(Effect::EnsureAgent);
                if rec.origin == Origin::Rollback {
                    self.rec_mut().attempts += 1;
                    if self.rec().attempts > MAX_ATTEMPTS {
                        self.fail(
                            failure(
                                ServerException,
                                Reason::Interrupted,
                                "the rollback was interrupted too often",
                            ),
                            fx,
                        );
                    } else {
                        self.announce(RecordTasks, fx);
                    }
                } else {
                    self.begin_perform(fx);
                }
            }
            StopOld | HealthGate => {
                if !w.current_is(&rec.target.version) {
                    // Not switched yet: the old agent is stopped (an orphan
                    // was stopped at start); snapshot, switch, start.
                    let version = rec.previous_version.clone().unwrap_or_default();
                    fx.push(Effect::Work(Work::Snapshot {
                        id: rec.id,
                        version,
                    }));
                } else {
                    self.rec_mut().attempts += 1;
                    if self.rec().attempts > MAX_ATTEMPTS {
                        self.rollback(
                            Reason::Interrupted,
                            format!("the warden stopped {MAX_ATTEMPTS} times while the new build was being checked"),
                            fx,
                        );
                    } else {
                        self.expect(Wait::Start, Effect::StartAgent, fx);
                    }
                }
            }
            RollbackStop | RollbackSwitch | RollbackRestore => self.announce(RollbackSwitch, fx),
            RollbackStart | RollbackGate => self.announce(RollbackStart, fx),
            Updated | Failed => self.housekeeping(w, fx),
        }
    }
}

#[cfg(test)]
mod tests;
