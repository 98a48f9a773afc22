//! The update state machine, driven by the supervisor's main loop.
//!
//! Every step is announced in the journal before it starts; long work
//! (download, hashing, snapshot, health gate) runs on a worker thread that
//! reports back with an `UpdateEvent` carrying the update's id, so a report
//! from an abandoned attempt is ignored. The steps, in order:
//!
//! 1. PENDING/accepted: the request was validated, its target is newer
//!    than what runs, not quarantined, nothing else in flight.
//! 2. STAGING/downloading: stream into `agents/.<version>.partial`,
//!    verify, install into `agents/<version>/` (marker written last).
//! 3. STAGED/staged: stop here for `stage`; go on for `update`.
//! 4. UPDATING/reverify: hash the staged executable again.
//! 5. UPDATING/record-tasks: the tasks `/v1/tasks` reports RUNNING.
//! 6. UPDATING/stop-old: the agent's downtime, one journal record for all
//!    of it: SIGTERM (then SIGKILL) to the old agent's PID; copy
//!    `var/lib/ecs/data` beside the old build; `current` -> new build (one
//!    rename), `previous` -> old build; start the new build. Recovery tells
//!    how far it got from where `current` points.
//! 7. UPDATING/health-gate (see `gate`).
//! 8. UPDATED, or on any failure from step 6 on, the rollback:
//!    rollback-stop, rollback-switch, rollback-restore (the snapshot),
//!    rollback-start, rollback-gate, then FAILED with the error, and the
//!    failed version is quarantined.
//!
//! After a crash, `recover` reads the journal: before step 6 the old agent
//! is started and the step is redone; from step 6 on the sequence continues
//! from the recorded step (each is idempotent); an update whose new build
//! was started three times without passing its gate is rolled back.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::download::{self, DlError};
use super::gate;
use super::journal::{Failure, Journal, Origin, Record, State, Step, Target, TaskRecord};
use super::quarantine;
use super::request::Request;
use super::snapshot::{self, SNAPSHOT_DIR};
use crate::control::{ApiError, Reply};
use crate::error::EcsErrorName::{self, *};
use crate::error::Result;
use crate::paths::Paths;
use crate::store::{self, parse_version, Artifact, Store};
use crate::supervisor::{Event, StopFor, Supervisor};

/// Starts of the new build (warden restarts included) before giving up.
const MAX_ATTEMPTS: u32 = 3;
/// History lines in the status document.
const HISTORY_LINES: usize = 10;

/// Reports from worker threads.
#[derive(Debug)]
pub enum UpdateEvent {
    Progress {
        id: String,
        done: u64,
        total: u64,
    },
    /// The build is in the store; the target as learned (version and
    /// size, when the request did not know them).
    Staged {
        id: String,
        result: std::result::Result<Target, Failure>,
    },
    Reverified {
        id: String,
        result: std::result::Result<(), Failure>,
    },
    Tasks {
        id: String,
        result: std::result::Result<Vec<TaskRecord>, String>,
    },
    Snapshot {
        id: String,
        result: std::result::Result<(), String>,
    },
    Restored {
        id: String,
        result: std::result::Result<(), String>,
    },
    /// What the agent staged before it exited 42, checked and hashed.
    Exit42 {
        result: std::result::Result<Option<Target>, String>,
    },
    Gate {
        id: String,
        seq: u64,
        result: std::result::Result<(), String>,
    },
}

/// The update machine's state, owned by the supervisor.
pub struct Updater {
    journal: Journal,
    /// The update in flight, or the last one.
    pub record: Option<Record>,
    /// Bytes on disk and total, while STAGING.
    progress: Option<(u64, u64)>,
    /// Bumped per gate run; older gate reports are ignored.
    gate_seq: u64,
    /// The last request refused before it became an update.
    last_refusal: Option<Value>,
    /// Bytes reported by the download in flight, for the byte counter.
    progress_seen: u64,
    /// Metrics since the warden started.
    counters: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    updated: u64,
    failed: u64,
    downloaded_bytes: u64,
    last_update_seconds: Option<f64>,
}

impl Updater {
    pub fn load(paths: &Paths) -> Result<Updater> {
        let journal = Journal::new(paths);
        let record = journal.load()?;
        Ok(Updater {
            journal,
            record,
            progress: None,
            gate_seq: 0,
            last_refusal: None,
            progress_seen: 0,
            counters: Counters::default(),
        })
    }
}

fn failure(name: EcsErrorName, reason: &str, message: impl Into<String>) -> Failure {
    Failure {
        name,
        reason: reason.to_string(),
        message: message.into(),
    }
}

impl Supervisor {
    fn rec(&self) -> &Record {
        self.update.record.as_ref().expect("an update is in flight")
    }

    fn rec_mut(&mut self) -> &mut Record {
        self.update.record.as_mut().expect("an update is in flight")
    }

    /// Whether `id` is the update in flight (worker reports may be stale).
    fn current_id(&self, id: &str) -> bool {
        self.update
            .record
            .as_ref()
            .is_some_and(|r| r.id == id && r.in_flight())
    }

    /// Announce a step durably. A journal that cannot be written stops the
    /// update where it is safest (see `journal_failed`).
    fn advance(&mut self, state: State, step: Step) -> bool {
        let rec = self.rec_mut();
        rec.state = state;
        rec.step = step;
        let mut rec = rec.clone();
        if state.is_terminal() {
            match state {
                State::Updated => self.update.counters.updated += 1,
                _ => self.update.counters.failed += 1,
            }
            self.update.counters.last_update_seconds = humantime::parse_rfc3339(&rec.created_at)
                .ok()
                .and_then(|t| t.elapsed().ok())
                .map(|d| d.as_secs_f64());
        }
        match self.update.journal.write(&mut rec) {
            Ok(()) => {
                log::info!(
                    "update {} -> {}: {} ({})",
                    rec.previous_version.as_deref().unwrap_or("?"),
                    rec.target.version,
                    state.as_str(),
                    step.as_str()
                );
                self.update.record = Some(rec);
                true
            }
            Err(e) => {
                log::error!("update journal: {e}");
                self.update.record = Some(rec);
                false
            }
        }
    }

    fn spawn_worker<F>(&self, name: &str, f: F)
    where
        F: FnOnce() -> UpdateEvent + Send + 'static,
    {
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("update-{name}"))
            .spawn(move || {
                let _ = tx.send(Event::Update(f()));
            });
        if let Err(e) = spawned {
            log::error!("start update worker {name}: {e}");
        }
    }

    /// Whether an update is between stopping the old agent and its end (a
    /// re-exec waits for that).
    pub(crate) fn update_busy(&self) -> bool {
        self.update
            .record
            .as_ref()
            .is_some_and(|r| r.in_flight() && r.state == State::Updating)
    }

    // ----- requests -------------------------------------------------------

    /// Remember a refusal for the status document.
    pub(crate) fn note_refusal(&mut self, err: &ApiError) {
        self.update.last_refusal = Some(json!({
            "name": err.name,
            "message": err.message,
            "at": store::now_rfc3339(),
        }));
    }

    fn in_flight_error(&self) -> Option<ApiError> {
        let r = self.update.record.as_ref()?;
        r.in_flight().then(|| {
            ApiError::ecs(
                UpdateInProgressException,
                format!(
                    "an update to {} is already {} ({}) since {}",
                    r.target.version,
                    r.state.as_str(),
                    r.step.as_str(),
                    r.created_at
                ),
            )
        })
    }

    /// The running build's version, or `MissingVersionException`.
    fn running_version(&self) -> std::result::Result<(String, semver::Version), ApiError> {
        let store = Store::new(&self.paths);
        let Some(build) = store.current() else {
            return Err(ApiError::ecs(
                MissingVersionException,
                "no agent build is current, so its version is unknown",
            ));
        };
        let v = parse_version(build.version()).map_err(|m| {
            ApiError::ecs(
                MissingVersionException,
                format!("the current agent build has no usable version: {m}"),
            )
        })?;
        Ok((build.version().to_string(), v))
    }

    /// Check a target against what runs and the quarantine.
    fn check_target(&self, target: &Target, force: bool) -> std::result::Result<String, ApiError> {
        let (cur_name, cur) = self.running_version()?;
        let tv = parse_version(&target.version)
            .map_err(|m| ApiError::ecs(InvalidParameterException, m))?;
        if tv.cmp_precedence(&cur) != std::cmp::Ordering::Greater {
            return Err(ApiError::ecs(
                NoUpdateAvailableException,
                format!("the agent already runs {cur}; the available build {tv} is not newer"),
            ));
        }
        if !force {
            if let Some(q) = quarantine::get(&self.paths, &target.version) {
                return Err(ApiError::ecs(
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

    /// Accept an update request: PENDING, then staging.
    pub(crate) fn begin_update(&mut self, req: Request) -> Reply {
        let result = self.try_begin_update(req);
        if let Err(e) = &result {
            self.note_refusal(e);
        }
        result
    }

    fn try_begin_update(&mut self, req: Request) -> Reply {
        if self.shutting_down {
            return Err(ApiError::ecs(ServerException, "the warden is stopping"));
        }
        if let Some(r) = &self.update.record {
            if r.in_flight() && r.state == State::Staged && r.target == req.target && req.perform {
                // `update` after `stage` of the same build: perform it.
                self.rec_mut().perform = true;
                self.begin_perform();
                return Ok(self.update_status());
            }
        }
        if let Some(e) = self.in_flight_error() {
            return Err(e);
        }
        let previous = if req.target.version.is_empty() {
            // An agent's stage call without a version: checked once the
            // build is downloaded and its version known.
            self.running_version()?.0
        } else {
            self.check_target(&req.target, req.force)?
        };
        let mut rec = Record::new(req.origin, req.target, req.source, req.perform);
        rec.force = req.force;
        rec.previous_version = Some(previous);
        self.update.record = Some(rec);
        self.update.progress = None;
        if !self.advance(State::Pending, Step::Accepted) {
            self.update.record = self.update.journal.load().ok().flatten();
            return Err(ApiError::ecs(
                ServerException,
                "cannot write the update journal; see the warden's log",
            ));
        }
        self.failpoint("after-pending");
        self.start_staging();
        Ok(self.update_status())
    }

    /// `ecs-warden rollback`: back to the previous build.
    pub(crate) fn begin_operator_rollback(&mut self, keep_data: bool) -> Reply {
        let result = self.try_operator_rollback(keep_data);
        if let Err(e) = &result {
            self.note_refusal(e);
        }
        result
    }

    fn try_operator_rollback(&mut self, keep_data: bool) -> Reply {
        if let Some(e) = self.in_flight_error() {
            return Err(e);
        }
        let store = Store::new(&self.paths);
        let (cur_name, _) = self.running_version()?;
        let prev = store
            .previous()
            .filter(|p| p.version() != cur_name)
            .ok_or_else(|| {
                ApiError::ecs(
                    InvalidParameterException,
                    "there is no previous build to roll back to",
                )
            })?;
        let target = Target {
            version: prev.version().to_string(),
            git_hash: prev.artifact.git_hash.clone(),
            url: format!("file://{}", prev.executable().display()),
            sha256: prev.artifact.sha256.clone(),
            size: prev.artifact.size,
        };
        let mut rec = Record::new(Origin::Rollback, target, "rollback".into(), true);
        rec.previous_version = Some(cur_name);
        rec.restore_data = !keep_data;
        self.update.record = Some(rec);
        if !self.advance(State::Pending, Step::Accepted) {
            return Err(ApiError::ecs(
                ServerException,
                "cannot write the update journal; see the warden's log",
            ));
        }
        self.rec_mut().attempts += 1;
        self.record_tasks();
        Ok(self.update_status())
    }

    /// The agent's stage call: download `location`, verify it against
    /// `signature` (a SHA-256), stop at STAGED. Repeating the same call is
    /// idempotent, also once that update is UPDATED (an agent re-sending a
    /// stage whose answer it lost gets the same answer); a different one
    /// while an update is in flight is refused.
    pub(crate) fn begin_agent_stage(
        &mut self,
        location: String,
        signature: String,
        version: Option<String>,
    ) -> Reply {
        if let Some(r) = &self.update.record {
            let same = r.origin == Origin::Agent && r.target.sha256 == signature;
            if same && (r.in_flight() || r.state == State::Updated) {
                return Ok(self.update_status());
            }
        }
        let target = Target {
            version: version.unwrap_or_default(),
            git_hash: None,
            url: location,
            sha256: signature,
            size: 0,
        };
        let req = Request {
            source: "the agent's stage call".into(),
            target,
            origin: Origin::Agent,
            perform: false,
            force: false,
        };
        self.begin_update(req)
    }

    /// The agent's perform call: perform what it staged (same signature).
    pub(crate) fn agent_perform(&mut self, signature: String) -> Reply {
        let staged = self.update.record.as_ref().filter(|r| {
            r.origin == Origin::Agent
                && r.target.sha256 == signature
                && (r.in_flight() || r.state == State::Updated)
        });
        let Some(r) = staged else {
            let e = ApiError::ecs(
                InvalidParameterException,
                match &self.update.record {
                    Some(r) if r.in_flight() => format!(
                        "signature {signature} does not match the update in flight ({}, sha256 {})",
                        r.state.as_str(),
                        r.target.sha256
                    ),
                    _ => format!("no update with signature {signature} is staged"),
                },
            );
            self.note_refusal(&e);
            return Err(e);
        };
        match r.state {
            State::Staged => {
                self.rec_mut().perform = true;
                self.begin_perform();
            }
            State::Pending | State::Staging => {
                // Perform as soon as the download is verified.
                self.rec_mut().perform = true;
                let mut rec = self.rec().clone();
                if let Err(e) = self.update.journal.write(&mut rec) {
                    log::error!("update journal: {e}");
                }
                self.update.record = Some(rec);
            }
            _ => {} // already performing
        }
        Ok(self.update_status())
    }

    // ----- staging --------------------------------------------------------

    fn start_staging(&mut self) {
        let target = self.rec().target.clone();
        if let Some(b) = Store::new(&self.paths)
            .build(&target.version)
            .filter(|_| !target.version.is_empty())
        {
            if b.artifact.sha256 == target.sha256 {
                log::info!("build {} is already in the store", target.version);
                if self.advance(State::Staged, Step::Staged) {
                    self.after_staged();
                }
                return;
            }
            // The install would refuse it after the whole download.
            return self.fail(failure(
                ClientException,
                "conflict",
                format!(
                    "build {} is already installed at {} with a different sha256 ({}, the manifest says {}); publish the change as a new version, or remove that directory first",
                    target.version,
                    self.paths.display_rel(&b.dir),
                    b.artifact.sha256,
                    target.sha256
                ),
            ));
        }
        if !self.advance(State::Staging, Step::Downloading) {
            return self.fail(failure(
                ServerException,
                "journal",
                "cannot write the update journal",
            ));
        }
        let id = self.rec().id.clone();
        let source = self.rec().source.clone();
        let paths = self.paths.clone();
        let cfg = self.cfg.clone();
        let tx = self.tx.clone();
        self.update.progress = Some((0, target.size));
        self.update.progress_seen = 0;
        self.spawn_worker("download", move || {
            let partial = paths.partial(&target.key());
            let mut job = download::Job {
                partial: partial.clone(),
                target: target.clone(),
                proxy: &cfg.proxy,
                cfg: &cfg.update,
            };
            let progress_id = id.clone();
            let mut progress = |done: u64, total: u64| {
                if done * 2 >= total && done < total {
                    crate::failpoint::hit("mid-download");
                }
                let _ = tx.send(Event::Update(UpdateEvent::Progress {
                    id: progress_id.clone(),
                    done,
                    total,
                }));
            };
            let result = download::run(&mut job, &mut progress)
                .map_err(|e| match e {
                    DlError::Fatal(m) => failure(ClientException, "download", m),
                    DlError::Disk(m) => failure(ServerException, "disk", m),
                    DlError::Retry(m) => failure(ServerException, "download", m),
                })
                .and_then(|size| {
                    let mut learned = target.clone();
                    learned.size = size;
                    if learned.version.is_empty() {
                        let (v, h) = probe_partial(&partial)
                            .map_err(|m| failure(ClientException, "verify", m))?;
                        learned.version = v;
                        learned.git_hash = learned.git_hash.or(h);
                    }
                    let artifact = Artifact {
                        version: learned.version.clone(),
                        git_hash: learned.git_hash.clone(),
                        sha256: learned.sha256.clone(),
                        size: learned.size,
                        source: format!("{} ({})", learned.url, source),
                        installed_at: store::now_rfc3339(),
                    };
                    Store::new(&paths)
                        .install(&partial, &artifact, true)
                        .map(|_| learned)
                        .map_err(|e| failure(ServerException, "disk", e.to_string()))
                });
            UpdateEvent::Staged { id, result }
        });
    }

    fn after_staged(&mut self) {
        self.failpoint("after-staged");
        self.update.progress = None;
        if self.rec().perform {
            self.begin_perform();
        } else {
            log::info!(
                "build {} is staged; waiting for perform",
                self.rec().target.version
            );
        }
    }

    // ----- perform --------------------------------------------------------

    fn begin_perform(&mut self) {
        self.rec_mut().attempts += 1;
        if self.rec().attempts > MAX_ATTEMPTS {
            return self.fail(failure(
                ServerException,
                "interrupted",
                format!(
                    "the update was interrupted {MAX_ATTEMPTS} times before the switch; giving up"
                ),
            ));
        }
        if !self.advance(State::Updating, Step::Reverify) {
            return self.fail(failure(
                ServerException,
                "journal",
                "cannot write the update journal",
            ));
        }
        let id = self.rec().id.clone();
        let target = self.rec().target.clone();
        let exe = self
            .paths
            .build_dir(&target.version)
            .join(crate::paths::AGENT_FILE);
        self.spawn_worker("reverify", move || {
            let result = match store::hash_file(&exe) {
                Ok((sha, size)) if sha == target.sha256 && size == target.size => Ok(()),
                Ok((sha, size)) => Err(failure(
                    ClientException,
                    "verify",
                    format!(
                        "the staged build {} changed on disk: {size} bytes hashing to {sha}, expected {} bytes hashing to {}",
                        exe.display(),
                        target.size,
                        target.sha256
                    ),
                )),
                Err(e) => Err(failure(ServerException, "verify", e.to_string())),
            };
            UpdateEvent::Reverified { id, result }
        });
    }

    fn record_tasks(&mut self) {
        if !self.advance(State::Updating, Step::RecordTasks) {
            return self.fail(failure(
                ServerException,
                "journal",
                "cannot write the update journal",
            ));
        }
        let id = self.rec().id.clone();
        if !self.agent_running() {
            log::warn!(
                "the agent is not running, so its tasks cannot be recorded before the update"
            );
            let _ = self.tx.send(Event::Update(UpdateEvent::Tasks {
                id,
                result: Ok(Vec::new()),
            }));
            return;
        }
        let ep = self.cfg.introspection.clone();
        let timeout = self.cfg.update.health_timeout;
        self.spawn_worker("tasks", move || UpdateEvent::Tasks {
            id,
            result: gate::record_tasks(&ep, timeout),
        });
    }

    fn after_tasks(&mut self, tasks: Vec<TaskRecord>) {
        log::info!("{} task(s) RUNNING before the switch", tasks.len());
        self.rec_mut().tasks_before = tasks;
        if self.rec().origin == Origin::Rollback {
            return self.rollback_stop();
        }
        if !self.advance(State::Updating, Step::StopOld) {
            return self.fail(failure(
                ServerException,
                "journal",
                "cannot write the update journal",
            ));
        }
        if !self.stop_agent(StopFor::Update) {
            self.on_agent_stopped_for(StopFor::Update);
        }
    }

    /// The old (or, rolling back, the new) agent has exited.
    pub(crate) fn on_agent_stopped_for(&mut self, purpose: StopFor) {
        if self.shutting_down {
            // Leave the journal where it is; the next start resumes.
            self.exit = Some(crate::exit::Exit::Ok);
            return;
        }
        match purpose {
            StopFor::Update => {
                self.failpoint("after-stop-old");
                self.take_snapshot();
            }
            StopFor::Rollback => self.rollback_switch(),
            StopFor::Shutdown => {}
        }
    }

    fn snapshot_path(&self, version: &str) -> PathBuf {
        self.paths.build_dir(version).join(SNAPSHOT_DIR)
    }

    /// Snapshot the data of the stopped old agent. Part of the `stop-old`
    /// step: no journal write of its own (see `switch_and_start`).
    fn take_snapshot(&mut self) {
        let id = self.rec().id.clone();
        let prev = self.rec().previous_version.clone().unwrap_or_default();
        let data = self.paths.data_dir.clone();
        let dest = self.snapshot_path(&prev);
        self.spawn_worker("snapshot", move || UpdateEvent::Snapshot {
            id,
            result: snapshot::take(&data, &dest).map_err(|e| e.to_string()),
        });
    }

    /// Switch `current` to the new build and start it.
    ///
    /// The `stop-old` record, written before the old agent was signalled,
    /// announces the whole window: stop, snapshot, switch, start. Each part
    /// is idempotent and where it got to is visible on disk (`current` is
    /// switched by one rename, and only after the snapshot is complete), so
    /// recovery needs no record per part, and the agent's downtime holds no
    /// journal write at all. The store's directory is fsynced once the new
    /// agent runs, before the gate can pass.
    fn switch_and_start(&mut self) {
        self.failpoint("after-snapshot");
        let target = self.rec().target.version.clone();
        let store = Store::new(&self.paths);
        if store.link_name(&self.paths.current()).as_deref() != Some(target.as_str()) {
            if let Err(e) = store.switch_current_unsynced(&target) {
                return self.rollback(failure(ServerException, "switch", e.to_string()));
            }
        }
        self.failpoint("after-switch");
        self.start_agent();
        if let Err(e) = Store::new(&self.paths).sync() {
            log::error!("{e}");
        }
        if !self.agent_running() {
            return self.rollback(failure(
                ServerException,
                "start",
                format!("build {target} could not be started"),
            ));
        }
        self.failpoint("after-start-new");
        self.run_gate(Step::HealthGate, target);
    }

    /// Rolling back: start the build rolled back to and run its gate.
    fn rollback_start(&mut self, version: String) {
        if !self.advance(State::Updating, Step::RollbackStart) {
            log::error!("rollback: the journal could not be written; going on");
        }
        self.start_agent();
        if !self.agent_running() {
            return self.finish_rollback(Err(format!("build {version} could not be started")));
        }
        self.failpoint("after-rollback-start");
        self.run_gate(Step::RollbackGate, version);
    }

    /// Announce `gate_step` and run the health gate for `version`.
    fn run_gate(&mut self, gate_step: Step, version: String) {
        if !self.advance(State::Updating, gate_step) {
            return self.rollback(failure(
                ServerException,
                "journal",
                "cannot write the update journal",
            ));
        }
        self.update.gate_seq += 1;
        let seq = self.update.gate_seq;
        let id = self.rec().id.clone();
        let spec = gate::Spec {
            endpoint: self.cfg.introspection.clone(),
            version,
            tasks_before: self.rec().tasks_before.clone(),
            timeout: self.cfg.update.health_timeout,
            stable: self.cfg.update.health_stable,
        };
        self.spawn_worker("gate", move || UpdateEvent::Gate {
            id,
            seq,
            result: gate::run(&spec),
        });
        self.failpoint(if gate_step == Step::HealthGate {
            "during-gate"
        } else {
            "during-rollback-gate"
        });
    }

    fn updated(&mut self) {
        let (target, force, origin, left) = {
            let r = self.rec();
            (
                r.target.version.clone(),
                r.force,
                r.origin,
                r.previous_version.clone(),
            )
        };
        if !self.advance(State::Updated, Step::Done) {
            log::error!("the update succeeded but its journal could not be written");
        }
        if force {
            let _ = quarantine::remove(&self.paths, &target);
        }
        if origin == Origin::Rollback {
            if let Some(left) = left {
                if let Err(e) = quarantine::add(&self.paths, &left, "rolled back by the operator") {
                    log::warn!("{e}");
                }
            }
            log::info!("rollback to {target} complete");
        } else {
            log::info!("update to {target} complete: UPDATED");
        }
        self.housekeeping();
    }

    /// Fail before anything changed on the host: FAILED, no rollback.
    fn fail(&mut self, f: Failure) {
        log::error!("update failed: {}: {}", f.name, f.message);
        let partial = self.paths.partial(&self.rec().target.key());
        self.rec_mut().error = Some(f);
        self.advance(State::Failed, Step::Done);
        let _ = fs::remove_file(partial);
        self.update.progress = None;
        if !self.shutting_down {
            self.ensure_agent();
        }
        self.housekeeping();
    }

    // ----- rollback -------------------------------------------------------

    /// Something failed after the old agent was stopped: undo.
    fn rollback(&mut self, f: Failure) {
        log::error!(
            "update to {} failed: {}; rolling back to {}",
            self.rec().target.version,
            f.message,
            self.rec().previous_version.as_deref().unwrap_or("?")
        );
        self.rec_mut().error = Some(f);
        self.rollback_stop();
    }

    fn rollback_stop(&mut self) {
        self.advance(State::Updating, Step::RollbackStop);
        if !self.stop_agent(StopFor::Rollback) {
            self.on_agent_stopped_for(StopFor::Rollback);
        }
    }

    /// The version the rollback goes back to.
    fn rollback_version(&self) -> String {
        let r = self.rec();
        if r.origin == Origin::Rollback {
            r.target.version.clone()
        } else {
            r.previous_version.clone().unwrap_or_default()
        }
    }

    fn rollback_switch(&mut self) {
        self.advance(State::Updating, Step::RollbackSwitch);
        self.failpoint("during-rollback");
        let back_to = self.rollback_version();
        let store = Store::new(&self.paths);
        let result = if self.rec().origin == Origin::Rollback {
            // Swap: the build we leave becomes `previous`.
            let leaving = self.rec().previous_version.clone().unwrap_or_default();
            store
                .point_current(&back_to)
                .and_then(|_| store.point_previous(&leaving))
        } else {
            store.point_current(&back_to)
        };
        if let Err(e) = result {
            // Without a switch there is nothing sensible left to try: keep
            // supervising whatever `current` is and report.
            log::error!("rollback: {e}");
            return self.finish_rollback(Err(format!("could not switch back to {back_to}: {e}")));
        }
        self.advance(State::Updating, Step::RollbackRestore);
        let id = self.rec().id.clone();
        let snap = self.snapshot_path(&back_to);
        if !self.rec().restore_data || !snap.is_dir() {
            let _ = self
                .tx
                .send(Event::Update(UpdateEvent::Restored { id, result: Ok(()) }));
            return;
        }
        let data = self.paths.data_dir.clone();
        self.spawn_worker("restore", move || UpdateEvent::Restored {
            id,
            result: snapshot::restore(&snap, &data).map_err(|e| e.to_string()),
        });
    }

    fn after_restore(&mut self, result: std::result::Result<(), String>) {
        if let Err(e) = result {
            log::error!("rollback: the data snapshot could not be restored: {e}");
            let rec = self.rec_mut();
            if let Some(err) = &mut rec.error {
                err.message
                    .push_str(&format!("; the data snapshot could not be restored: {e}"));
            }
        }
        let back_to = self.rollback_version();
        self.rollback_start(back_to);
    }

    /// The rollback's gate reported (or the rollback could not go on).
    fn finish_rollback(&mut self, gate: std::result::Result<(), String>) {
        let origin = self.rec().origin;
        if origin == Origin::Rollback && gate.is_ok() && self.rec().error.is_none() {
            return self.updated();
        }
        let failed = self.rec().target.version.clone();
        let rec = self.rec_mut();
        let mut err = rec.error.clone().unwrap_or_else(|| {
            failure(ServerException, "rollback", "the rollback did not complete")
        });
        if let Err(e) = &gate {
            err.message.push_str(&format!(
                "; after the rollback the previous build is not healthy either: {e}"
            ));
        }
        rec.error = Some(err.clone());
        self.advance(State::Failed, Step::Done);
        if origin != Origin::Rollback {
            if let Err(e) = quarantine::add(
                &self.paths,
                &failed,
                &format!("{}: {}", err.reason, err.message),
            ) {
                log::warn!("{e}");
            }
            log::error!("update to {failed} FAILED and was rolled back; {failed} is quarantined");
        }
        self.housekeeping();
    }

    // ----- events ---------------------------------------------------------

    pub(crate) fn on_update_event(&mut self, ev: UpdateEvent) {
        match ev {
            UpdateEvent::Exit42 { result } => self.on_exit_42_target(result),
            UpdateEvent::Progress { id, done, total } => {
                if self.current_id(&id) {
                    if done > self.update.progress_seen {
                        self.update.counters.downloaded_bytes += done - self.update.progress_seen;
                    }
                    self.update.progress_seen = done;
                    self.update.progress = Some((done, total));
                }
            }
            UpdateEvent::Staged { id, result } => {
                if !self.current_id(&id) || self.rec().step != Step::Downloading {
                    return;
                }
                match result {
                    Ok(learned) => {
                        let was_unknown = self.rec().target.version.is_empty();
                        self.rec_mut().target = learned.clone();
                        if was_unknown {
                            // Only now is the version known: the checks a
                            // request with a version gets up front.
                            if let Err(e) = self.check_target(&learned, self.rec().force) {
                                return self.fail(failure(
                                    EcsErrorName::parse(&e.name).unwrap_or(ClientException),
                                    "refused",
                                    e.message,
                                ));
                            }
                        }
                        if self.advance(State::Staged, Step::Staged) {
                            self.after_staged();
                        } else {
                            self.fail(failure(
                                ServerException,
                                "journal",
                                "cannot write the update journal",
                            ));
                        }
                    }
                    Err(f) => self.fail(f),
                }
            }
            UpdateEvent::Reverified { id, result } => {
                if !self.current_id(&id) || self.rec().step != Step::Reverify {
                    return;
                }
                match result {
                    Ok(()) => self.record_tasks(),
                    Err(f) => {
                        let dir = self.paths.build_dir(&self.rec().target.version);
                        let _ = fs::remove_dir_all(dir);
                        self.fail(f)
                    }
                }
            }
            UpdateEvent::Tasks { id, result } => {
                if !self.current_id(&id) || self.rec().step != Step::RecordTasks {
                    return;
                }
                match result {
                    Ok(tasks) => self.after_tasks(tasks),
                    Err(e) => self.fail(failure(
                        ServerException,
                        "record-tasks",
                        format!("cannot read the running agent's tasks: {e}"),
                    )),
                }
            }
            UpdateEvent::Snapshot { id, result } => {
                if !self.current_id(&id) || self.rec().step != Step::StopOld {
                    return;
                }
                match result {
                    Ok(()) => self.switch_and_start(),
                    Err(e) => self.rollback(failure(ServerException, "snapshot", e)),
                }
            }
            UpdateEvent::Restored { id, result } => {
                if !self.current_id(&id) || self.rec().step != Step::RollbackRestore {
                    return;
                }
                self.after_restore(result);
            }
            UpdateEvent::Gate { id, seq, result } => {
                if !self.current_id(&id) || seq != self.update.gate_seq {
                    return;
                }
                match (self.rec().step, result) {
                    (Step::HealthGate, Ok(())) => self.updated(),
                    (Step::HealthGate, Err(e)) => {
                        self.rollback(failure(ServerException, "health-gate", e))
                    }
                    (Step::RollbackGate, r) => self.finish_rollback(r),
                    _ => {}
                }
            }
        }
    }

    /// The agent exited on its own while an update was in flight. Returns
    /// true when the machine took it over.
    pub(crate) fn on_agent_exit_during_update(
        &mut self,
        version: &str,
        ended: crate::supervisor::Ended,
    ) -> bool {
        let Some(r) = &self.update.record else {
            return false;
        };
        if !r.in_flight() {
            return false;
        }
        match r.step {
            Step::StopOld | Step::HealthGate => {
                self.update.gate_seq += 1; // the running gate is moot
                self.rollback(failure(
                    ServerException,
                    "crash",
                    format!("the new agent {version} {ended} during the health gate"),
                ));
                true
            }
            Step::RollbackStart | Step::RollbackGate => {
                self.update.gate_seq += 1;
                self.finish_rollback(Err(format!("agent {version} {ended}")));
                false
            }
            _ => false,
        }
    }

    /// Exit code 42: the agent staged an update itself (`desired-image`).
    /// The file check and hash run on a worker (a build may be large); the
    /// agent stays down meanwhile, as it asked.
    pub(crate) fn on_exit_42(&mut self) {
        if !self.paths.desired_image().exists() {
            log::info!(
                "no update is staged (no {}); restarting the agent",
                self.paths.display_rel(&self.paths.desired_image())
            );
            return self.start_agent();
        }
        let paths = self.paths.clone();
        self.spawn_worker("exit-42", move || UpdateEvent::Exit42 {
            result: exit_42_target(&paths),
        });
    }

    fn on_exit_42_target(&mut self, result: std::result::Result<Option<Target>, String>) {
        if self.shutting_down || !matches!(self.agent, crate::supervisor::AgentState::Down) {
            return;
        }
        match result {
            Ok(Some(target)) => {
                let file = target.url.clone();
                let req = Request {
                    target,
                    source: format!("desired-image ({file})"),
                    origin: Origin::Exit42,
                    perform: true,
                    force: false,
                };
                match self.begin_update(req) {
                    Ok(_) => {}
                    Err(e) => {
                        log::error!(
                            "the agent's staged update is refused: {}: {}",
                            e.name,
                            e.message
                        );
                        self.consume_desired_image();
                        self.start_agent();
                    }
                }
            }
            Ok(None) => {
                log::info!(
                    "no update is staged (no {}); restarting the agent",
                    self.paths.display_rel(&self.paths.desired_image())
                );
                self.start_agent();
            }
            Err(e) => {
                log::error!("the agent's staged update is unusable: {e}");
                self.consume_desired_image();
                self.start_agent();
            }
        }
    }

    fn consume_desired_image(&self) {
        let desired = self.paths.desired_image();
        if let Ok(name) = fs::read_to_string(&desired) {
            let name = name.trim();
            if !name.is_empty() && !name.contains('/') {
                let _ = fs::remove_file(self.paths.cache_dir.join(name));
            }
        }
        let _ = fs::remove_file(desired);
    }

    // ----- recovery -------------------------------------------------------

    /// Start the agent unless one runs (after a re-exec it is adopted).
    fn ensure_agent(&mut self) {
        if matches!(self.agent, crate::supervisor::AgentState::Down) {
            self.start_agent();
        }
    }

    /// Resume or undo what a previous warden left in flight. Returns true
    /// when the caller should start the agent as usual.
    pub(crate) fn recover(&mut self) -> bool {
        let Some(rec) = self.update.record.clone() else {
            self.housekeeping();
            return true;
        };
        if !rec.in_flight() {
            self.housekeeping();
            return true;
        }
        log::warn!(
            "resuming the update to {} interrupted at {} ({})",
            rec.target.version,
            rec.state.as_str(),
            rec.step.as_str()
        );
        match (rec.state, rec.step) {
            (State::Pending | State::Staging, _) => {
                self.ensure_agent();
                self.start_staging();
            }
            (State::Staged, _) => {
                self.ensure_agent();
                if rec.perform {
                    self.begin_perform();
                }
            }
            (_, Step::Reverify | Step::RecordTasks | Step::Accepted) => {
                self.ensure_agent();
                if rec.origin == Origin::Rollback {
                    self.rec_mut().attempts += 1;
                    if rec.attempts >= MAX_ATTEMPTS {
                        self.fail(failure(
                            ServerException,
                            "interrupted",
                            "the rollback was interrupted too often",
                        ));
                    } else {
                        self.record_tasks();
                    }
                } else {
                    self.begin_perform();
                }
            }
            (_, Step::StopOld | Step::HealthGate) => {
                let target = rec.target.version.clone();
                let store = Store::new(&self.paths);
                if store.link_name(&self.paths.current()).as_deref() != Some(target.as_str()) {
                    // Not switched yet: the old agent is stopped (an orphan
                    // was stopped at start); snapshot, switch, start.
                    self.take_snapshot();
                } else {
                    self.rec_mut().attempts += 1;
                    if self.rec().attempts > MAX_ATTEMPTS {
                        self.rollback(failure(
                            ServerException,
                            "interrupted",
                            format!(
                                "the warden stopped {MAX_ATTEMPTS} times while the new build was being checked"
                            ),
                        ));
                    } else {
                        self.start_agent();
                        if self.agent_running() {
                            self.run_gate(Step::HealthGate, target);
                        } else {
                            self.rollback(failure(
                                ServerException,
                                "start",
                                format!("build {target} could not be started"),
                            ));
                        }
                    }
                }
            }
            (_, Step::RollbackStop | Step::RollbackSwitch) => self.rollback_switch(),
            (_, Step::RollbackRestore) => self.rollback_switch(),
            (_, Step::RollbackStart | Step::RollbackGate) => {
                let v = self.rollback_version();
                self.rollback_start(v);
            }
            (_, Step::Downloading | Step::Staged | Step::Done) => {
                self.ensure_agent();
                self.start_staging();
            }
        }
        false
    }

    // ----- housekeeping ---------------------------------------------------

    /// Keep `current`, `previous` and the build in flight; remove other
    /// builds, leftovers of interrupted installs, stale partial files and
    /// consumed files in `var/cache/ecs`.
    pub(crate) fn housekeeping(&self) {
        let store = Store::new(&self.paths);
        let mut keep: Vec<String> = [self.paths.current(), self.paths.previous()]
            .iter()
            .filter_map(|l| store.link_name(l))
            .collect();
        let in_flight = self.update.record.as_ref().filter(|r| r.in_flight());
        if let Some(r) = in_flight {
            keep.push(r.target.version.clone());
            if let Some(p) = &r.previous_version {
                keep.push(p.clone());
            }
        }
        let Ok(rd) = fs::read_dir(&self.paths.agents_dir) else {
            return;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "current" || name == "previous" {
                continue;
            }
            let path = e.path();
            let stale = if let Some(v) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".partial"))
            {
                in_flight.is_none_or(|r| r.target.version != v)
            } else if name.starts_with('.') {
                // Leftovers: temporary build directories and symlinks.
                in_flight.is_none() || name.contains(".tmp-") || name.contains(".link.")
            } else {
                !keep.contains(&name)
            };
            if stale {
                let r = if path.is_dir() && !path.is_symlink() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                match r {
                    Ok(()) => log::info!("housekeeping: removed {}", self.paths.display_rel(&path)),
                    Err(e) => log::warn!("housekeeping: remove {}: {e}", path.display()),
                }
            }
        }
        if in_flight.is_none() {
            self.consume_desired_image();
            // Update files the agent downloaded and nothing refers to.
            if let Ok(rd) = fs::read_dir(&self.paths.cache_dir) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.contains(".ecs-update.") {
                        let _ = fs::remove_file(e.path());
                        log::info!(
                            "housekeeping: removed {}",
                            self.paths.display_rel(&e.path())
                        );
                    }
                }
            }
        }
    }

    // ----- status ---------------------------------------------------------

    pub(crate) fn update_status(&self) -> Value {
        let history = self.update.journal.history(HISTORY_LINES);
        let quarantined = quarantine::all(&self.paths);
        let mut doc = match &self.update.record {
            None => json!({"state": null}),
            Some(r) => json!({
                "id": r.id,
                "state": r.state.as_str(),
                "step": r.step.as_str(),
                "origin": r.origin,
                "target": r.target.version,
                "targetSha256": r.target.sha256,
                "targetUrl": r.target.url,
                "source": r.source,
                "previousVersion": r.previous_version,
                "perform": r.perform,
                "attempts": r.attempts,
                "tasksBefore": r.tasks_before.len(),
                "createdAt": r.created_at,
                "updatedAt": r.updated_at,
                "finishedAt": r.finished_at,
                "error": r.error,
            }),
        };
        if let Some((done, total)) = self.update.progress {
            doc["bytesDone"] = json!(done);
            doc["bytesTotal"] = json!(total);
        }
        doc["lastRefusal"] = self.update.last_refusal.clone().unwrap_or(Value::Null);
        doc["counters"] = json!({
            "updates": {"UPDATED": self.update.counters.updated, "FAILED": self.update.counters.failed},
            "downloadedBytes": self.update.counters.downloaded_bytes,
            "lastUpdateSeconds": self.update.counters.last_update_seconds,
        });
        doc["quarantined"] = json!(quarantined);
        doc["history"] = json!(history);
        doc
    }
}

/// The version a downloaded (verified) executable reports.
fn probe_partial(
    partial: &std::path::Path,
) -> std::result::Result<(String, Option<String>), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(partial, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", partial.display()))?;
    store::probe_version(partial).map_err(|e| e.to_string())
}

/// Read `desired-image`, check the file it names, and describe it (on a
/// worker thread: hashing a build takes a while).
fn exit_42_target(paths: &Paths) -> std::result::Result<Option<Target>, String> {
    let desired = paths.desired_image();
    let name = match fs::read_to_string(&desired) {
        Ok(s) => s.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("read {}: {e}", desired.display())),
    };
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(format!(
            "{} names {name:?}, not a file in {}",
            desired.display(),
            paths.cache_dir.display()
        ));
    }
    let file = paths.cache_dir.join(&name);
    let meta = fs::symlink_metadata(&file)
        .map_err(|e| format!("{} names {}: {e}", desired.display(), file.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", file.display()));
    }
    let (sha256, size) = store::hash_file(&file).map_err(|e| e.to_string())?;
    // The agent stages a download (0644, like its image tarballs), but
    // the version probe executes it: give the owner the execute bit.
    let mode = meta.permissions().mode();
    if mode & 0o100 == 0 {
        fs::set_permissions(&file, fs::Permissions::from_mode(mode | 0o100))
            .map_err(|e| format!("make {} executable: {e}", file.display()))?;
    }
    let (version, git_hash) = store::probe_version(&file).map_err(|e| e.to_string())?;
    Ok(Some(Target {
        version,
        git_hash,
        url: format!("file://{}", file.display()),
        sha256,
        size,
    }))
}
