//! The supervisor: the main loop and the one owner of mutable state.
//!
//! Threads that listen (signals, the control socket, the runtime's
//! watchers, update workers) send `Event`s here and, where they need an
//! answer, wait for it on a reply channel. The loop blocks on its channel
//! with a timeout equal to the next deadline (a restart after backoff, the
//! runtime's stop escalation, a backoff reset, a watchdog ping, a re-exec,
//! a journal retry); when the agent is healthy and nothing is pending
//! there is no deadline and it sleeps until an event arrives.
//!
//! The ecs-init exit-code contract, applied when the agent exits:
//! - 0: the warden stops and exits 0;
//! - 5: terminal; the warden exits 5 and does not restart it;
//! - 42: an update was requested; perform a staged update, else restart;
//! - 2: log the agent's last output lines, then restart with backoff;
//! - anything else, or death by a signal: restart with backoff.
//!
//! Updates are the update machine's (`update::machine`): the supervisor
//! feeds it events and executes the effects it returns (`drive`).

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::control;
use crate::document::{self, BuildInfo, Observed, Snapshot, Supervision, Warden};
use crate::error::{ApiError, Error, Result};
use crate::event::{self, Action, AgentEvent, Answer, Event, Observation, Reply};
use crate::exit::{Ended, Exit};
use crate::failpoint;
use crate::host;
use crate::lock::Lock;
use crate::notify::Notifier;
use crate::paths::Paths;
use crate::reexec;
use crate::runtime::Runtime;
use crate::store::Store;
use crate::sys;
use crate::update::housekeeping;
use crate::update::journal::{Journal, Step};
use crate::update::machine::{Built, Effect, Input, Link, Machine, Report, World};
use crate::update::quarantine::Quarantine;
use crate::update::worker;

#[derive(Debug, Clone)]
struct LastExit {
    ended: Ended,
    at: SystemTime,
    ran_for: Duration,
}

/// Why the agent is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopFor {
    /// The warden is stopping.
    Shutdown,
    /// The update machine asked.
    Machine,
}

enum AgentState {
    Running {
        run: u64,
        since: Instant,
        version: String,
        /// How log lines name it (`pid 123`, `container 0123abcd`).
        what: String,
    },
    Stopping {
        run: u64,
        since: Instant,
        version: String,
        what: String,
        purpose: StopFor,
    },
    /// Waiting out the backoff before the next start.
    Waiting { until: Instant },
    /// Not running, and no start is due.
    Down,
}

pub struct Supervisor {
    paths: Paths,
    cfg: Config,
    notifier: Notifier,
    tx: Sender<Event>,
    runtime: Runtime,
    agent: AgentState,
    /// The last start's number (see `runtime`).
    runs: u64,
    machine: Machine,
    journal: Journal,
    backoff: Backoff,
    restarts: u64,
    last_exit: Option<LastExit>,
    started_at: SystemTime,
    /// A stop was requested: do not restart the agent.
    shutting_down: bool,
    /// Set when the loop should end, with the warden's exit code.
    exit: Option<Exit>,
    /// The last output lines of a run whose output ended.
    tail: Option<(u64, Vec<String>)>,
    /// A run that exited 2 whose last lines are still to be logged, and
    /// how to name it.
    want_tail: Option<(u64, String)>,
    watchdog_at: Option<Instant>,
    /// The agent's identity and the engine version, as last seen.
    observed: Observed,
    task_counts: (usize, usize),
    /// The binary `reexec` runs, the lock's descriptor, re-execs so far.
    exe: PathBuf,
    lock_fd: RawFd,
    execs: u64,
    /// A re-exec is due once no update is switching; `reexec_at` gives the
    /// answer to the requester a moment to leave before the image goes.
    reexec_pending: bool,
    reexec_at: Option<Instant>,
    /// When the update machine wants its journal write retried.
    journal_retry_at: Option<Instant>,
}

/// How this warden process came to be.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The installed binary, re-executed by `reexec`.
    pub exe: PathBuf,
    /// The hand-off file when this image was started by `reexec`.
    pub handoff: Option<PathBuf>,
}

/// Run the warden for this root until it is stopped or the agent ends it.
pub fn run(paths: &Paths, cfg: &Config, notifier: Notifier, launch: Launch) -> Result<Exit> {
    host::prepare_layout(paths)?;
    let handoff = match &launch.handoff {
        Some(p) => Some(reexec::take(p)?),
        None => None,
    };
    let lock = match &handoff {
        Some(h) => Lock::adopt(h.lock_fd, &paths.lock())?,
        None => Lock::acquire(&paths.lock())?,
    };
    // What a warden killed in the middle of a durable write left behind.
    for dir in [&paths.warden_dir, &paths.agents_dir] {
        for p in crate::durable::remove_stale_temps(dir) {
            log::info!("removed the leftover {}", paths.display_rel(&p));
        }
    }
    Store::new(paths).ensure_current()?;
    let (tx, rx) = mpsc::channel();
    spawn_signal_thread(tx.clone())?;
    let mut sup = Supervisor::new(paths.clone(), cfg.clone(), notifier, tx.clone())?;
    sup.exe = launch.exe;
    sup.lock_fd = lock.raw_fd();
    match handoff {
        Some(h) => sup.adopt(h),
        None => sup.runtime.clear_leftovers(),
    }
    let creds = crate::api::credentials::load_or_create(&paths.credentials())?;
    control::server::spawn(&paths.control_socket(), tx.clone(), cfg)?;
    if let Some(port) = cfg.api_port {
        control::server::spawn_tcp(port, tx.clone(), cfg, creds)?;
    }
    let watch_tx = tx.clone();
    crate::update::watch::spawn(&paths.cache_dir, move |news| {
        use crate::update::watch::CacheNews;
        let event = match news {
            CacheNews::Appeared(name) => Event::CacheFile(name),
            CacheNews::Gone(name) => Event::CacheFileGone(name),
        };
        watch_tx.send(event).is_ok()
    });
    spawn_docker_probe(tx, cfg);
    // Resume or undo an update a previous warden left in flight; the
    // machine starts the agent itself when the update needs it down.
    let in_flight = sup.machine.in_flight();
    sup.drive(Input::Recovered);
    if !in_flight && matches!(sup.agent, AgentState::Down) {
        let _ = sup.start_agent();
    }
    sup.notifier.ready("supervising the ECS agent");
    let code = sup.run_loop(rx);
    let _ = std::fs::remove_file(paths.control_socket());
    // The answer to `stop` (or another request the loop answered last) is
    // still being written on its connection's thread.
    crate::http::wait_for_answers(Duration::from_secs(1));
    drop(lock);
    Ok(code)
}

/// Ask the container engine its version once, in the background, for the
/// status document's `versionInfo.dockerVersion`.
fn spawn_docker_probe(tx: Sender<Event>, cfg: &Config) {
    let Ok(socket) = crate::runtime::docker::socket(cfg) else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("docker-version".into())
        .spawn(move || {
            if let Ok(e) = crate::engine::Engine::connect(socket, Duration::from_secs(5)) {
                let v = e.server_version().version.clone();
                if !v.is_empty() {
                    let obs = Observation {
                        docker_version: Some(format!("DockerVersion: {v}")),
                        ..Observation::default()
                    };
                    event::tell(&tx, Action::Observe(obs));
                }
            }
        });
}

fn spawn_signal_thread(tx: Sender<Event>) -> Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([SIGCHLD, SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| Error::Other(format!("install signal handlers: {e}")))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(Event::Signal(sig)).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| Error::Other(format!("start signal thread: {e}")))?;
    Ok(())
}

/// The host as the update machine may see it: the store and the agent's
/// state, read-only.
struct View<'a> {
    paths: &'a Paths,
    agent: &'a AgentState,
    stopping: bool,
}

fn built(paths: &Paths, b: crate::store::Build) -> Built {
    Built {
        url: crate::source::Source::file(&b.executable()),
        dir: paths.display_rel(&b.dir),
        version: b.artifact.version,
        git_hash: b.artifact.git_hash,
        sha256: b.artifact.sha256,
        size: b.artifact.size,
    }
}

impl World for View<'_> {
    fn current(&self) -> Option<Built> {
        Store::new(self.paths)
            .current()
            .map(|b| built(self.paths, b))
    }
    fn previous(&self) -> Option<Built> {
        Store::new(self.paths)
            .previous()
            .map(|b| built(self.paths, b))
    }
    fn current_is(&self, version: &str) -> bool {
        Store::new(self.paths)
            .link_name(&self.paths.current())
            .as_deref()
            == Some(version)
    }
    fn build(&self, version: &str) -> Option<Built> {
        Store::new(self.paths)
            .build(version)
            .map(|b| built(self.paths, b))
    }
    fn snapshot_by(&self, version: &str) -> Option<String> {
        crate::update::snapshot::marker(&worker::snapshot_path(self.paths, version))
            .map(|m| m.update_id)
    }
    fn agent_running(&self) -> bool {
        matches!(self.agent, AgentState::Running { .. })
    }
    fn agent_down(&self) -> bool {
        matches!(self.agent, AgentState::Down)
    }
    fn stopping(&self) -> bool {
        self.stopping
    }
    fn desired_image(&self) -> bool {
        self.paths.desired_image().exists()
    }
    fn desired_image_path(&self) -> String {
        self.paths.display_rel(&self.paths.desired_image())
    }
}

impl Supervisor {
    pub fn new(
        paths: Paths,
        cfg: Config,
        notifier: Notifier,
        tx: Sender<Event>,
    ) -> Result<Supervisor> {
        let watchdog_at = notifier.watchdog_interval.map(|i| Instant::now() + i);
        let journal = Journal::new(&paths);
        let machine = Machine::new(
            journal.load()?,
            Quarantine::load(&paths),
            journal.history(crate::update::machine::HISTORY_LINES),
        );
        Ok(Supervisor {
            runtime: Runtime::new(&paths, &cfg, tx.clone())?,
            machine,
            journal,
            backoff: Backoff::new(cfg.backoff),
            paths,
            cfg,
            notifier,
            tx,
            agent: AgentState::Down,
            runs: 0,
            restarts: 0,
            last_exit: None,
            started_at: SystemTime::now(),
            shutting_down: false,
            exit: None,
            tail: None,
            want_tail: None,
            watchdog_at,
            observed: Observed::default(),
            task_counts: (0, 0),
            exe: PathBuf::new(),
            lock_fd: -1,
            execs: 0,
            reexec_pending: false,
            reexec_at: None,
            journal_retry_at: None,
        })
    }

    // ----- the update machine ---------------------------------------------

    /// Feed `input` to the update machine and execute what it returns,
    /// feeding each outcome back, until nothing follows. Returns the answer
    /// for the request being handled, if the machine gave one.
    fn drive(&mut self, input: Input) -> Option<Reply> {
        let mut queue = VecDeque::from([input]);
        let mut answer = None;
        while let Some(input) = queue.pop_front() {
            let view = View {
                paths: &self.paths,
                agent: &self.agent,
                stopping: self.shutting_down,
            };
            let effects = self.machine.handle(input, &view);
            for effect in effects {
                match self.execute(effect, &mut answer) {
                    Outcome::Nothing => {}
                    Outcome::Next(i) => queue.push_back(i),
                    Outcome::Failed(i) => {
                        queue.push_back(i);
                        break;
                    }
                }
            }
        }
        answer.map(
            |a: std::result::Result<(), crate::update::status::Refusal>| match a {
                Ok(()) => Ok(Answer::Update(Box::new(self.machine.status()))),
                Err(r) => Err(ApiError::ecs(r.name, r.message)),
            },
        )
    }

    fn execute(
        &mut self,
        effect: Effect,
        answer: &mut Option<std::result::Result<(), crate::update::status::Refusal>>,
    ) -> Outcome {
        let store = Store::new(&self.paths);
        match effect {
            Effect::Record(rec) => {
                failpoint::before_record(match rec.step {
                    Step::Updated => "updated",
                    Step::Failed => "failed",
                    s => s.as_str(),
                });
                return match self.journal.write(&rec) {
                    Ok(()) => Outcome::Next(Input::Recorded),
                    Err(e) => {
                        log::error!("update journal: {e}");
                        Outcome::Failed(Input::NotRecorded(e.to_string()))
                    }
                };
            }
            Effect::Work(work) => self.spawn_worker(work),
            Effect::StopAgent => {
                if !self.stop_agent(StopFor::Machine) {
                    return Outcome::Next(Input::AgentStopped);
                }
            }
            Effect::StartAgent => {
                return Outcome::Next(match self.start_agent() {
                    Ok(()) => Input::AgentStarted,
                    Err(e) => Input::AgentStartFailed(e),
                })
            }
            Effect::EnsureAgent => {
                if matches!(self.agent, AgentState::Down) {
                    let _ = self.start_agent();
                }
            }
            Effect::Switch {
                current,
                previous,
                durable,
            } => {
                let result = (|| {
                    match &previous {
                        Link::Keep => {}
                        Link::Set(p) => store.point_previous(p, durable)?,
                        Link::Remove => store.remove_previous()?,
                    }
                    store.point_current(&current, durable)
                })();
                return match result {
                    Ok(()) => Outcome::Next(Input::Switched),
                    Err(e) => {
                        log::error!("switch to {current}: {e}");
                        Outcome::Failed(Input::SwitchFailed(e.to_string()))
                    }
                };
            }
            Effect::SyncStore => {
                if let Err(e) = store.sync() {
                    log::error!("{e}");
                }
            }
            Effect::RemoveBuild(v) => {
                let dir = self.paths.build_dir(&v);
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    log::warn!("remove {}: {e}", dir.display());
                }
            }
            Effect::RemovePartial(key) => {
                let _ = std::fs::remove_file(self.paths.partial(&key));
            }
            Effect::SaveQuarantine(q) => {
                if let Err(e) = q.save(&self.paths) {
                    log::warn!("{e}");
                }
            }
            Effect::Housekeeping => {
                housekeeping::run(&self.paths);
                if let Some(socket) = self.runtime.engine_socket() {
                    let keep = [self.paths.current(), self.paths.previous()]
                        .iter()
                        .filter_map(|l| store.link_name(l))
                        .collect();
                    crate::agent_image::housekeeping(socket, keep);
                }
            }
            Effect::ConsumeDesiredImage => housekeeping::consume_desired_image(&self.paths),
            Effect::RetryJournalIn(d) => self.journal_retry_at = Some(Instant::now() + d),
            Effect::RestartLater => {
                if matches!(self.agent, AgentState::Down) && !self.shutting_down {
                    self.schedule_restart();
                }
            }
            Effect::Failpoint(name) => failpoint::hit(name),
            Effect::Answer => *answer = Some(Ok(())),
            Effect::Refuse(r) => *answer = Some(Err(r)),
        }
        Outcome::Nothing
    }

    fn spawn_worker(&self, work: crate::update::machine::Work) {
        let name = worker::name(&work);
        let id = worker::id(&work);
        let ctx = worker::Ctx {
            paths: self.paths.clone(),
            cfg: self.cfg.clone(),
            engine: self.runtime.engine_socket(),
            tasks_engine: crate::runtime::docker::socket(&self.cfg)
                .ok()
                .filter(|s| s.exists()),
        };
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("update-{name}"))
            .spawn(move || {
                let progress_tx = tx.clone();
                let progress = move |r: Report| {
                    let _ = progress_tx.send(Event::Update(r));
                };
                let report = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    worker::run(work, &ctx, &progress)
                }))
                .unwrap_or_else(|p| Report::Panicked {
                    id,
                    work: name,
                    message: panic_message(&p),
                });
                let _ = tx.send(Event::Update(report));
            });
        if let Err(e) = spawned {
            log::error!("start update worker {name}: {e}");
        }
    }

    // ----- re-exec --------------------------------------------------------

    /// Take over what the previous program image handed over.
    fn adopt(&mut self, h: reexec::Handoff) {
        self.restarts = h.restarts;
        self.execs = h.execs;
        self.backoff.set_failures(h.failures);
        if let Ok(t) = humantime::parse_rfc3339(&h.started_at) {
            self.started_at = t;
        }
        self.last_exit = h.last_exit.map(|e| LastExit {
            ended: match (e.code, e.signal) {
                (Some(c), _) => Ended::Code(c),
                (None, Some(s)) => Ended::Signal(s),
                _ => Ended::Code(-1),
            },
            at: humantime::parse_rfc3339(&e.at).unwrap_or_else(|_| SystemTime::now()),
            ran_for: Duration::from_millis(e.ran_for_ms),
        });
        if let Some(a) = h.agent {
            let since = Instant::now()
                .checked_sub(Duration::from_millis(a.uptime_ms))
                .unwrap_or_else(Instant::now);
            log::info!(
                "re-executed ({} so far); supervising agent {} ({}) again",
                self.execs,
                a.version,
                Runtime::describe(&a)
            );
            self.runs += 1;
            let run = self.runs;
            self.runtime.adopt(run, &a);
            self.agent = AgentState::Running {
                run,
                since,
                what: Runtime::describe(&a),
                version: a.version,
            };
            // It may have exited while the image was replaced.
            self.reap();
        } else if let Some(ms) = h.waiting_ms {
            self.agent = AgentState::Waiting {
                until: Instant::now() + Duration::from_millis(ms),
            };
        }
    }

    /// Replace this process's image with the installed binary (see
    /// `reexec`), keeping the agent. Deferred while an update is switching.
    fn reexec_now(&mut self) {
        self.reexec_at = None;
        if self.shutting_down {
            return;
        }
        if self.machine.switching() || matches!(self.agent, AgentState::Stopping { .. }) {
            self.reexec_pending = true;
            return;
        }
        self.reexec_pending = false;
        let now = Instant::now();
        let agent = match &self.agent {
            AgentState::Running { since, version, .. } => self
                .runtime
                .handoff(version, (now - *since).as_millis() as u64),
            _ => None,
        };
        let handoff = reexec::Handoff {
            lock_fd: self.lock_fd,
            waiting_ms: match &self.agent {
                AgentState::Waiting { until } => {
                    Some(until.saturating_duration_since(now).as_millis() as u64)
                }
                _ => None,
            },
            agent,
            restarts: self.restarts,
            failures: self.backoff.failures(),
            last_exit: self.last_exit.as_ref().map(|e| reexec::LastExitHandoff {
                code: match e.ended {
                    Ended::Code(c) => Some(c),
                    _ => None,
                },
                signal: match e.ended {
                    Ended::Signal(s) => Some(s),
                    _ => None,
                },
                ran_for_ms: e.ran_for.as_millis() as u64,
                at: humantime::format_rfc3339_millis(e.at).to_string(),
            }),
            started_at: humantime::format_rfc3339_millis(self.started_at).to_string(),
            execs: self.execs + 1,
        };
        let fds: Vec<RawFd> = std::iter::once(self.lock_fd)
            .chain(handoff.agent.as_ref().and_then(|a| a.output_fd))
            .collect();
        let path = self.paths.handoff();
        let prepared = fds
            .iter()
            .try_for_each(|fd| sys::keep_on_exec(*fd).map_err(|e| e.to_string()))
            .and_then(|_| reexec::write(&path, &handoff).map_err(|e| e.to_string()));
        let err = match prepared {
            Ok(()) => {
                log::info!("re-executing {}", self.exe.display());
                reexec::exec(&self.exe, &self.paths.root, &path).to_string()
            }
            Err(e) => e,
        };
        // Still here: the exec failed. Undo and go on.
        log::error!("re-exec of {} failed: {err}; going on", self.exe.display());
        for fd in fds {
            let _ = sys::close_on_exec(fd);
        }
        let _ = std::fs::remove_file(path);
    }

    // ----- the loop -------------------------------------------------------

    fn run_loop(&mut self, rx: Receiver<Event>) -> Exit {
        loop {
            if let Some(code) = self.exit {
                return code;
            }
            let event = match self.next_deadline() {
                None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(at) => rx.recv_timeout(at.saturating_duration_since(Instant::now())),
            };
            match event {
                Ok(ev) => self.handle(ev),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return Exit::Failure,
            }
            self.on_deadlines(Instant::now());
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let agent = match &self.agent {
            AgentState::Running { since, .. } if self.backoff.failures() > 0 => {
                Some(*since + self.backoff.stable_after())
            }
            AgentState::Stopping { .. } => self.runtime.deadline(),
            AgentState::Waiting { until } => Some(*until),
            _ => None,
        };
        [
            agent,
            self.watchdog_at,
            self.reexec_at,
            self.journal_retry_at,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn on_deadlines(&mut self, now: Instant) {
        if self.reexec_at.is_some_and(|at| at <= now)
            || (self.reexec_pending && self.reexec_at.is_none() && !self.machine.switching())
        {
            self.reexec_now();
        }
        if let Some(at) = self.watchdog_at {
            if at <= now {
                self.notifier.watchdog();
                self.watchdog_at = self.notifier.watchdog_interval.map(|i| now + i);
            }
        }
        if self.journal_retry_at.is_some_and(|at| at <= now) {
            self.journal_retry_at = None;
            self.drive(Input::RetryJournal);
        }
        match &self.agent {
            AgentState::Running { since, .. }
                if self.backoff.failures() > 0 && *since + self.backoff.stable_after() <= now =>
            {
                log::info!(
                    "agent has run for {}; restart backoff reset",
                    humantime::format_duration(self.backoff.stable_after())
                );
                self.backoff.reset();
            }
            AgentState::Stopping { .. } => self.runtime.on_deadline(now),
            AgentState::Waiting { until } if *until <= now => {
                self.restarts += 1;
                let _ = self.start_agent();
            }
            _ => {}
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Signal(SIGCHLD) => self.reap(),
            Event::Signal(sig @ (SIGTERM | SIGINT)) => {
                log::info!(
                    "received {}; stopping",
                    if sig == SIGTERM { "SIGTERM" } else { "SIGINT" }
                );
                self.request_stop();
            }
            Event::Signal(SIGHUP) => {
                log::info!("received SIGHUP: re-executing the installed binary");
                self.reexec_at = Some(Instant::now());
            }
            Event::Signal(_) => {}
            Event::Control(action, reply) => {
                let answer = self.answer(action);
                let _ = reply.send(answer);
            }
            Event::Update(report) => {
                if !self.shutting_down {
                    self.drive(Input::Report(report));
                }
            }
            Event::CacheFile(name) => {
                self.drive(Input::CacheFile(name));
            }
            Event::CacheFileGone(name) => {
                self.drive(Input::CacheFileGone(name));
            }
            Event::Agent(AgentEvent::Exited { run, ended }) => {
                self.runtime.exited(run);
                self.on_agent_exit(run, ended)
            }
            Event::Agent(AgentEvent::OutputClosed { run, tail }) => {
                self.runtime.output_closed(run);
                if let Some((_, what)) = self.want_tail.take_if(|(r, _)| *r == run) {
                    log_tail(&what, &tail);
                } else {
                    self.tail = Some((run, tail));
                }
            }
        }
    }

    fn answer(&mut self, action: Action) -> Reply {
        let machine = |sup: &mut Supervisor, input: Input| {
            sup.drive(input).unwrap_or_else(|| {
                Err(ApiError::ecs(
                    crate::error::EcsErrorName::ServerException,
                    "the update machine gave no answer",
                ))
            })
        };
        match action {
            Action::Status => Ok(Answer::Snapshot(Box::new(self.snapshot()))),
            Action::Stop => {
                log::info!("stop requested over the control socket");
                self.request_stop();
                Ok(Answer::Stopping { stopping: true })
            }
            Action::Update(req) => machine(self, Input::Update(req)),
            Action::Rollback { keep_data } => machine(self, Input::Rollback { keep_data }),
            Action::AgentStage {
                location,
                signature,
                version,
            } => machine(
                self,
                Input::AgentStage {
                    location,
                    signature,
                    version,
                },
            ),
            Action::AgentPerform { signature } => machine(self, Input::AgentPerform { signature }),
            Action::Refuse(err) => {
                self.machine.note_refusal(&err);
                Err(err)
            }
            Action::Reexec => {
                let deferred = self.machine.switching();
                log::info!(
                    "re-exec requested{}",
                    if deferred {
                        "; waiting for the update to finish switching"
                    } else {
                        ""
                    }
                );
                // Give the answer a moment to reach the caller first.
                self.reexec_at = Some(Instant::now() + Duration::from_millis(50));
                Ok(Answer::Reexec {
                    reexec: true,
                    deferred,
                    execs: self.execs,
                })
            }
            Action::Observe(o) => {
                let cache = &mut self.observed;
                if o.container_instance_arn.is_some() {
                    cache.container_instance_arn = o.container_instance_arn;
                }
                if o.cluster.is_some() {
                    cache.cluster = o.cluster;
                }
                if o.docker_version.is_some() {
                    cache.docker_version = o.docker_version;
                }
                if let Some(c) = o.task_counts {
                    self.task_counts = c;
                }
                Ok(Answer::Nothing)
            }
        }
    }

    // ----- the agent's lifecycle ------------------------------------------

    /// Start the current build; on failure, schedule a retry.
    fn start_agent(&mut self) -> std::result::Result<(), String> {
        if self.shutting_down {
            self.agent = AgentState::Down;
            return Err("the warden is stopping".into());
        }
        let store = Store::new(&self.paths);
        let Some(build) = store.current() else {
            let e = format!(
                "no complete agent build at {}",
                self.paths.display_rel(&self.paths.current())
            );
            log::error!("{e}; retrying");
            self.schedule_restart();
            return Err(e);
        };
        self.runs += 1;
        let run = self.runs;
        match self.runtime.start(run, &build, &self.paths, &self.cfg) {
            Ok(started) => {
                log::info!("started agent {} ({})", build.version(), started.what);
                self.notifier
                    .status(&format!("agent {} running", build.version()));
                self.agent = AgentState::Running {
                    run,
                    since: Instant::now(),
                    version: build.version().to_string(),
                    what: started.what,
                };
                Ok(())
            }
            Err(e) => {
                log::error!("{e}");
                self.schedule_restart();
                Err(e.to_string())
            }
        }
    }

    fn schedule_restart(&mut self) {
        let delay = self.backoff.next_delay();
        log::info!(
            "restarting the agent in {} (failure {} in a row)",
            humantime::format_duration(Duration::from_millis(delay.as_millis() as u64)),
            self.backoff.failures()
        );
        self.agent = AgentState::Waiting {
            until: Instant::now() + delay,
        };
    }

    /// SIGCHLD: collect the agent if it has exited.
    fn reap(&mut self) {
        if let Some((run, ended)) = self.runtime.reap() {
            self.on_agent_exit(run, ended);
        }
    }

    fn on_agent_exit(&mut self, run: u64, ended: Ended) {
        let (since, version, what, purpose) = match &self.agent {
            AgentState::Running {
                run: r,
                since,
                version,
                what,
            } if *r == run => (*since, version.clone(), what.clone(), None),
            AgentState::Stopping {
                run: r,
                since,
                version,
                what,
                purpose,
            } if *r == run => (*since, version.clone(), what.clone(), Some(*purpose)),
            _ => return,
        };
        let ran_for = since.elapsed();
        self.last_exit = Some(LastExit {
            ended,
            at: SystemTime::now(),
            ran_for,
        });
        self.agent = AgentState::Down;
        if ended == Ended::Code(2) {
            match self.tail.take() {
                Some((r, tail)) if r == run => log_tail(&what, &tail),
                _ => self.want_tail = Some((run, what.clone())),
            }
        }
        match purpose {
            Some(StopFor::Shutdown) => {
                log::info!("agent {version} ({what}) {ended}; stopped");
                self.exit = Some(Exit::Ok);
                return;
            }
            Some(StopFor::Machine) if self.shutting_down => {
                // Leave the journal where it is; the next start resumes.
                self.exit = Some(Exit::Ok);
                return;
            }
            Some(StopFor::Machine) => {
                log::info!("agent {version} ({what}) {ended}; stopped for the update");
                self.drive(Input::AgentStopped);
                return;
            }
            None => {}
        }
        if self.shutting_down {
            self.exit = Some(Exit::Ok);
            return;
        }
        // An exit while the update machine watches the new build is the
        // machine's to handle.
        if self.machine.takes_agent_exit() {
            self.drive(Input::AgentExited(ended));
            return;
        }
        let ran = humantime::format_duration(Duration::from_millis(ran_for.as_millis() as u64));
        match ended {
            Ended::Code(0) => {
                log::info!("agent {version} ({what}) exited with code 0 after {ran}; stopping");
                self.exit = Some(Exit::Ok);
            }
            Ended::Code(5) => {
                log::error!(
                    "agent {version} ({what}) exited with code 5 (terminal) after {ran}; not restarting it"
                );
                self.exit = Some(Exit::AgentTerminal);
            }
            Ended::Code(42) => {
                log::info!("agent {version} ({what}) exited with code 42: update requested");
                self.restarts += 1;
                self.drive(Input::Exit42);
            }
            Ended::Code(2) => {
                log::error!("agent {version} ({what}) exited with code 2 after {ran}");
                self.schedule_restart();
            }
            other => {
                log::warn!("agent {version} ({what}) {other} after {ran}");
                self.schedule_restart();
            }
        }
    }

    /// Stop the agent for `purpose`. Returns false when no agent runs
    /// (nothing to wait for).
    fn stop_agent(&mut self, purpose: StopFor) -> bool {
        match &mut self.agent {
            AgentState::Running {
                run,
                since,
                version,
                what,
            } => {
                let (run, since, version, what) = (*run, *since, version.clone(), what.clone());
                self.runtime.stop();
                self.agent = AgentState::Stopping {
                    run,
                    since,
                    version,
                    what,
                    purpose,
                };
                true
            }
            AgentState::Stopping { purpose: p, .. } => {
                // Already stopping: a shutdown takes over any other purpose.
                if purpose == StopFor::Shutdown {
                    *p = StopFor::Shutdown;
                }
                true
            }
            AgentState::Waiting { .. } | AgentState::Down => {
                self.agent = AgentState::Down;
                false
            }
        }
    }

    /// Stop gracefully, then exit 0. An update in flight stays in the
    /// journal and is resumed or undone by the next start.
    fn request_stop(&mut self) {
        self.shutting_down = true;
        self.notifier.stopping();
        if !self.stop_agent(StopFor::Shutdown) {
            self.exit = Some(Exit::Ok);
        }
    }

    // ----- status ---------------------------------------------------------

    /// The main loop's part of the status document.
    fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let (state, version, uptime) = match &self.agent {
            AgentState::Running { since, version, .. } => {
                ("RUNNING", Some(version.clone()), Some(now - *since))
            }
            AgentState::Stopping { since, version, .. } => {
                ("STOPPING", Some(version.clone()), Some(now - *since))
            }
            AgentState::Waiting { .. } => ("BACKOFF", None, None),
            AgentState::Down => ("STOPPED", None, None),
        };
        let next_start = match &self.agent {
            AgentState::Waiting { until } => {
                Some(until.saturating_duration_since(now).as_millis() as u64)
            }
            _ => None,
        };
        let build = Store::new(&self.paths).current();
        let update = self.machine.status();
        Snapshot {
            warden: Warden {
                pid: std::process::id(),
                version: env!("CARGO_PKG_VERSION"),
                root: self.paths.root.display().to_string(),
                started_at: humantime::format_rfc3339_seconds(self.started_at).to_string(),
                exe: self.exe.display().to_string(),
                execs: self.execs,
            },
            supervisor: Supervision {
                runtime: self.runtime.kind().as_str(),
                agent_state: state,
                agent_pid: version.as_ref().and(self.runtime.pid()),
                agent_version: version,
                agent_uptime_seconds: uptime.map(|d| d.as_secs()),
                restarts: self.restarts,
                consecutive_failures: self.backoff.failures(),
                backoff_ms: self.backoff.current().as_millis() as u64,
                next_start_in_ms: next_start,
                last_exit: self.last_exit.as_ref().map(|e| document::LastExit {
                    code: match e.ended {
                        Ended::Code(c) => Some(c),
                        _ => None,
                    },
                    signal: match e.ended {
                        Ended::Signal(s) => Some(s),
                        _ => None,
                    },
                    description: e.ended.to_string(),
                    at: humantime::format_rfc3339_seconds(e.at).to_string(),
                    ran_for_ms: e.ran_for.as_millis() as u64,
                }),
            },
            build: build.map(|b| BuildInfo {
                version: b.artifact.version,
                git_hash: b.artifact.git_hash,
                sha256: b.artifact.sha256,
                installed_at: b.artifact.installed_at,
            }),
            configured_cluster: self.cfg.cluster.clone(),
            introspection: self.cfg.introspection.base_url(),
            agent_update_status: self.machine.ecs_state(),
            observed: self.observed.clone(),
            update,
            last_task_counts: self.task_counts,
        }
    }
}

/// What an effect led to.
enum Outcome {
    Nothing,
    /// Feed this to the machine next.
    Next(Input),
    /// Feed this to the machine next, and drop the rest of the batch.
    Failed(Input),
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

fn log_tail(what: &str, tail: &[String]) {
    if tail.is_empty() {
        log::error!("agent ({what}) printed nothing before it exited");
        return;
    }
    log::error!("last {} lines of agent ({what}) output:", tail.len());
    for line in tail {
        log::error!("  | {line}");
    }
}
