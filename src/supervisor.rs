//! The supervisor: the main loop and the one owner of mutable state.
//!
//! Threads that listen (signals, the control socket, the agent's output)
//! send `Event`s here and, where they need an answer, wait for it on a
//! reply channel. The loop blocks on its channel with a timeout equal to the
//! next deadline (a restart after backoff, a SIGKILL after the stop
//! timeout, a backoff reset, a watchdog ping); when the agent is healthy
//! and nothing is pending there is no deadline and it sleeps until an event
//! arrives.
//!
//! The ecs-init exit-code contract, applied when the agent exits:
//! - 0: the warden stops and exits 0;
//! - 5: terminal; the warden exits 5 and does not restart it;
//! - 42: an update was requested; perform a staged update, else restart;
//! - 2: log the agent's last output lines, then restart with backoff;
//! - anything else, or death by a signal: restart with backoff.
//!
//! Stopping: SIGTERM to the agent's PID only, SIGKILL to that PID after the
//! stop timeout, then exit 0. A process group is never signalled.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde_json::{json, Value};
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use crate::agent;
use crate::backoff::Backoff;
use crate::config::Config;
use crate::control::{self, Action, Observation, Reply};
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::failpoint;
use crate::host;
use crate::lock::Lock;
use crate::notify::Notifier;
use crate::orphan;
use crate::paths::Paths;
use crate::reexec;
use crate::store::Store;
use crate::sys;
use crate::update::machine::{UpdateEvent, Updater};

/// Everything the main loop reacts to.
pub enum Event {
    /// A signal delivered to the warden.
    Signal(i32),
    /// A control request and where to send the answer.
    Control(Action, Sender<Reply>),
    /// The agent's output pipe closed; its last lines.
    OutputClosed { pid: i32, tail: Vec<String> },
    /// A report from an update worker thread.
    Update(UpdateEvent),
}

/// How the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Code(c) => write!(f, "exited with code {c}"),
            Ended::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "was killed by {sig}"),
                Err(_) => write!(f, "was killed by signal {s}"),
            },
        }
    }
}

#[derive(Debug, Clone)]
struct LastExit {
    ended: Ended,
    at: SystemTime,
    ran_for: Duration,
}

/// Why the agent is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopFor {
    /// The warden is stopping.
    Shutdown,
    /// An update replaces it.
    Update,
    /// A rollback replaces it.
    Rollback,
}

pub enum AgentState {
    Running {
        pid: i32,
        since: Instant,
        version: String,
    },
    Stopping {
        pid: i32,
        since: Instant,
        version: String,
        /// When SIGKILL follows; `None` once sent.
        kill_at: Option<Instant>,
        purpose: StopFor,
    },
    /// Waiting out the backoff before the next start.
    Waiting { until: Instant },
    /// Not running and not coming back (the warden is exiting).
    Down,
}

pub struct Supervisor {
    pub(crate) paths: Paths,
    pub(crate) cfg: Config,
    notifier: Notifier,
    pub(crate) tx: Sender<Event>,
    pub(crate) agent: AgentState,
    pub(crate) update: Updater,
    backoff: Backoff,
    restarts: u64,
    last_exit: Option<LastExit>,
    started_at: SystemTime,
    /// A stop was requested: do not restart the agent.
    pub(crate) shutting_down: bool,
    /// Set when the loop should end, with the warden's exit code.
    pub(crate) exit: Option<Exit>,
    /// The last output lines of an agent whose pipe closed.
    tail: Option<(i32, Vec<String>)>,
    /// An agent that exited 2 whose last lines are still to be logged.
    want_tail: Option<i32>,
    watchdog_at: Option<Instant>,
    /// The agent's identity and the engine version, as last seen.
    observed: Observation,
    /// The binary `reexec` runs, the lock's descriptor, the agent's output
    /// pipe (pid, read end) while it is open, and re-execs so far.
    exe: PathBuf,
    lock_fd: RawFd,
    agent_output: Option<(i32, RawFd)>,
    execs: u64,
    /// A re-exec is due once no update is UPDATING; `reexec_at` gives the
    /// answer to the requester a moment to leave before the image goes.
    reexec_pending: bool,
    reexec_at: Option<Instant>,
}

/// Run the warden for this root until it is stopped or the agent ends it.
/// How this warden process came to be.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The installed binary, re-executed by `reexec`.
    pub exe: PathBuf,
    /// The hand-off file when this image was started by `reexec`.
    pub handoff: Option<PathBuf>,
}

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
    if handoff.is_none() {
        orphan::stop_orphan(&paths.agent_record(), cfg.stop_timeout);
    }
    Store::new(paths).ensure_current()?;
    let (tx, rx) = mpsc::channel();
    spawn_signal_thread(tx.clone())?;
    let mut sup = Supervisor::new(paths.clone(), cfg.clone(), notifier, tx.clone())?;
    sup.exe = launch.exe;
    sup.lock_fd = lock.raw_fd();
    if let Some(h) = handoff {
        sup.adopt(h);
    }
    let creds = crate::api::credentials::load_or_create(&paths.credentials())?;
    control::server::spawn(&paths.control_socket(), tx.clone(), cfg)?;
    if let Some(port) = cfg.api_port {
        control::server::spawn_tcp(port, tx.clone(), cfg, creds)?;
    }
    spawn_docker_probe(tx);
    // Resume or undo an update a previous warden left in flight; it starts
    // the agent itself when the update is past stopping the old one.
    if sup.recover() && matches!(sup.agent, AgentState::Down) {
        sup.start_agent();
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
fn spawn_docker_probe(tx: Sender<Event>) {
    let _ = std::thread::Builder::new()
        .name("docker-version".into())
        .spawn(move || {
            let out = std::process::Command::new("docker")
                .args(["version", "--format", "{{.Server.Version}}"])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output();
            if let Some(o) = out.ok().filter(|o| o.status.success()) {
                let v = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if !v.is_empty() {
                    let (rtx, _) = mpsc::channel();
                    let obs = Observation {
                        docker_version: Some(format!("DockerVersion: {v}")),
                        ..Observation::default()
                    };
                    let _ = tx.send(Event::Control(Action::Observe(obs), rtx));
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

impl Supervisor {
    pub fn new(
        paths: Paths,
        cfg: Config,
        notifier: Notifier,
        tx: Sender<Event>,
    ) -> Result<Supervisor> {
        let watchdog_at = notifier.watchdog_interval.map(|i| Instant::now() + i);
        Ok(Supervisor {
            update: Updater::load(&paths)?,
            backoff: Backoff::new(cfg.backoff),
            paths,
            cfg,
            notifier,
            tx,
            agent: AgentState::Down,
            restarts: 0,
            last_exit: None,
            started_at: SystemTime::now(),
            shutting_down: false,
            exit: None,
            tail: None,
            want_tail: None,
            watchdog_at,
            observed: Observation::default(),
            exe: PathBuf::new(),
            lock_fd: -1,
            agent_output: None,
            execs: 0,
            reexec_pending: false,
            reexec_at: None,
        })
    }

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
                "re-executed ({} so far); supervising agent {} (pid {}) again",
                self.execs,
                a.version,
                a.pid
            );
            self.agent = AgentState::Running {
                pid: a.pid,
                since,
                version: a.version,
            };
            if let Some(fd) = a.output_fd {
                if agent::adopt_output(a.pid, fd, self.tx.clone()) {
                    self.agent_output = Some((a.pid, fd));
                }
            }
            // It may have exited while the image was replaced.
            self.reap();
        } else if let Some(ms) = h.waiting_ms {
            self.agent = AgentState::Waiting {
                until: Instant::now() + Duration::from_millis(ms),
            };
        }
    }

    /// Replace this process's image with the installed binary (see
    /// `reexec`), keeping the agent. Deferred while an update is UPDATING.
    fn reexec_now(&mut self) {
        self.reexec_at = None;
        if self.shutting_down {
            return;
        }
        if self.update_busy() || matches!(self.agent, AgentState::Stopping { .. }) {
            self.reexec_pending = true;
            return;
        }
        self.reexec_pending = false;
        let now = Instant::now();
        let agent = match &self.agent {
            AgentState::Running {
                pid,
                since,
                version,
            } => Some(reexec::AgentHandoff {
                pid: *pid,
                version: version.clone(),
                uptime_ms: (now - *since).as_millis() as u64,
                output_fd: self
                    .agent_output
                    .filter(|(p, _)| p == pid)
                    .map(|(_, fd)| fd),
            }),
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
            AgentState::Stopping { kill_at, .. } => *kill_at,
            AgentState::Waiting { until } => Some(*until),
            _ => None,
        };
        [agent, self.watchdog_at, self.reexec_at]
            .into_iter()
            .flatten()
            .min()
    }

    fn on_deadlines(&mut self, now: Instant) {
        if self.reexec_at.is_some_and(|at| at <= now)
            || (self.reexec_pending && self.reexec_at.is_none() && !self.update_busy())
        {
            self.reexec_now();
        }
        if let Some(at) = self.watchdog_at {
            if at <= now {
                self.notifier.watchdog();
                self.watchdog_at = self.notifier.watchdog_interval.map(|i| now + i);
            }
        }
        match &mut self.agent {
            AgentState::Running { since, .. }
                if self.backoff.failures() > 0 && *since + self.backoff.stable_after() <= now =>
            {
                log::info!(
                    "agent has run for {}; restart backoff reset",
                    humantime::format_duration(self.backoff.stable_after())
                );
                self.backoff.reset();
            }
            AgentState::Stopping { pid, kill_at, .. } if kill_at.is_some_and(|k| k <= now) => {
                log::warn!(
                    "agent (pid {pid}) did not exit within {}; sending SIGKILL to pid {pid}",
                    humantime::format_duration(self.cfg.stop_timeout)
                );
                let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
                *kill_at = None;
            }
            AgentState::Waiting { until } if *until <= now => {
                self.restarts += 1;
                self.start_agent();
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
            Event::Update(ev) => self.on_update_event(ev),
            Event::OutputClosed { pid, tail } => {
                if self.agent_output.is_some_and(|(p, _)| p == pid) {
                    self.agent_output = None;
                }
                if self.want_tail == Some(pid) {
                    self.want_tail = None;
                    log_tail(pid, &tail);
                } else {
                    self.tail = Some((pid, tail));
                }
            }
        }
    }

    fn answer(&mut self, action: Action) -> Reply {
        match action {
            Action::Status => Ok(self.snapshot()),
            Action::Stop => {
                log::info!("stop requested over the control socket");
                self.request_stop();
                Ok(json!({"stopping": true}))
            }
            Action::Update(req) => self.begin_update(req),
            Action::Rollback { keep_data } => self.begin_operator_rollback(keep_data),
            Action::Refuse(err) => {
                self.note_refusal(&err);
                Err(err)
            }
            Action::AgentStage {
                location,
                signature,
                version,
            } => self.begin_agent_stage(location, signature, version),
            Action::AgentPerform { signature } => self.agent_perform(signature),
            Action::Reexec => {
                let deferred = self.update_busy();
                log::info!(
                    "re-exec requested{}",
                    if deferred {
                        "; waiting for the update to leave UPDATING"
                    } else {
                        ""
                    }
                );
                // Give the answer a moment to reach the caller first.
                self.reexec_at = Some(Instant::now() + Duration::from_millis(50));
                Ok(json!({"reexec": true, "deferred": deferred, "execs": self.execs}))
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
                Ok(Value::Null)
            }
        }
    }

    /// Start the current build; on failure, schedule a retry.
    pub(crate) fn start_agent(&mut self) {
        if self.shutting_down {
            self.agent = AgentState::Down;
            return;
        }
        let store = Store::new(&self.paths);
        let Some(build) = store.current() else {
            log::error!(
                "no complete agent build at {}; retrying",
                self.paths.current().display()
            );
            return self.schedule_restart();
        };
        match agent::spawn(&self.paths, &self.cfg, &build, self.tx.clone()) {
            Ok(started) => {
                log::info!("started agent {} (pid {})", build.version(), started.pid);
                // So a next warden can stop this agent if we die first.
                if let Err(e) =
                    orphan::record(&self.paths.agent_record(), started.pid, build.version())
                {
                    log::warn!("{e}");
                }
                self.notifier
                    .status(&format!("agent {} running", build.version()));
                self.agent = AgentState::Running {
                    pid: started.pid,
                    since: Instant::now(),
                    version: build.version().to_string(),
                };
                self.agent_output = Some((started.pid, started.output_fd));
            }
            Err(e) => {
                log::error!("{e}");
                self.schedule_restart();
            }
        }
    }

    pub(crate) fn schedule_restart(&mut self) {
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

    fn agent_pid(&self) -> Option<i32> {
        match &self.agent {
            AgentState::Running { pid, .. } | AgentState::Stopping { pid, .. } => Some(*pid),
            _ => None,
        }
    }

    /// Collect the agent if it has exited. Only the agent's PID is waited
    /// for, so helpers spawned elsewhere keep their own exit statuses.
    fn reap(&mut self) {
        let Some(pid) = self.agent_pid() else { return };
        let ended = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => Ended::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => Ended::Signal(sig as i32),
            Ok(_) => return,
            Err(nix::errno::Errno::ECHILD) => {
                log::error!("agent pid {pid} is not our child any more; treating it as gone");
                Ended::Signal(Signal::SIGKILL as i32)
            }
            Err(e) => {
                log::error!("waitpid({pid}): {e}");
                return;
            }
        };
        self.on_agent_exit(pid, ended);
    }

    fn on_agent_exit(&mut self, pid: i32, ended: Ended) {
        let (since, version, purpose) = match &self.agent {
            AgentState::Running { since, version, .. } => (*since, version.clone(), None),
            AgentState::Stopping {
                since,
                version,
                purpose,
                ..
            } => (*since, version.clone(), Some(*purpose)),
            _ => return,
        };
        let ran_for = since.elapsed();
        self.last_exit = Some(LastExit {
            ended,
            at: SystemTime::now(),
            ran_for,
        });
        self.agent = AgentState::Down;
        orphan::clear(&self.paths.agent_record());
        if ended == Ended::Code(2) {
            match self.tail.take() {
                Some((p, tail)) if p == pid => log_tail(pid, &tail),
                _ => self.want_tail = Some(pid),
            }
        }
        match purpose {
            Some(StopFor::Shutdown) => {
                log::info!("agent {version} (pid {pid}) {ended}; stopped");
                self.exit = Some(Exit::Ok);
                return;
            }
            Some(p) => {
                log::info!("agent {version} (pid {pid}) {ended}; stopped for the update");
                return self.on_agent_stopped_for(p);
            }
            None => {}
        }
        if self.shutting_down {
            self.exit = Some(Exit::Ok);
            return;
        }
        let ran = humantime::format_duration(Duration::from_millis(ran_for.as_millis() as u64));
        // An exit while the update machine is watching the agent (the
        // health gate) is the machine's to handle.
        if self.on_agent_exit_during_update(&version, ended) {
            return;
        }
        match ended {
            Ended::Code(0) => {
                log::info!("agent {version} (pid {pid}) exited with code 0 after {ran}; stopping");
                self.exit = Some(Exit::Ok);
            }
            Ended::Code(5) => {
                log::error!(
                    "agent {version} (pid {pid}) exited with code 5 (terminal) after {ran}; not restarting it"
                );
                self.exit = Some(Exit::AgentTerminal);
            }
            Ended::Code(42) => {
                log::info!("agent {version} (pid {pid}) exited with code 42: update requested");
                self.restarts += 1;
                self.on_exit_42();
            }
            Ended::Code(2) => {
                log::error!("agent {version} (pid {pid}) exited with code 2 after {ran}");
                self.schedule_restart();
            }
            other => {
                log::warn!("agent {version} (pid {pid}) {other} after {ran}");
                self.schedule_restart();
            }
        }
    }

    /// Stop the agent for `purpose`: SIGTERM to its PID, SIGKILL after the
    /// stop timeout. Returns false when no agent runs (nothing to wait for).
    pub(crate) fn stop_agent(&mut self, purpose: StopFor) -> bool {
        match &self.agent {
            AgentState::Running {
                pid,
                since,
                version,
            } => {
                let (pid, since, version) = (*pid, *since, version.clone());
                log::info!("sending SIGTERM to agent {version} (pid {pid})");
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                self.agent = AgentState::Stopping {
                    pid,
                    since,
                    version,
                    kill_at: Some(Instant::now() + self.cfg.stop_timeout),
                    purpose,
                };
                true
            }
            AgentState::Stopping { .. } => {
                // Already stopping: a shutdown takes over any other purpose.
                if let AgentState::Stopping { purpose: p, .. } = &mut self.agent {
                    if purpose == StopFor::Shutdown {
                        *p = StopFor::Shutdown;
                    }
                }
                true
            }
            AgentState::Waiting { .. } | AgentState::Down => {
                self.agent = AgentState::Down;
                false
            }
        }
    }

    pub(crate) fn agent_running(&self) -> bool {
        matches!(self.agent, AgentState::Running { .. })
    }

    pub(crate) fn failpoint(&self, name: &str) {
        failpoint::hit(name);
    }

    /// Stop gracefully: SIGTERM to the agent's PID, SIGKILL after the stop
    /// timeout, then exit 0. An update in flight stays in the journal and is
    /// resumed or undone by the next start.
    fn request_stop(&mut self) {
        self.shutting_down = true;
        self.notifier.stopping();
        if !self.stop_agent(StopFor::Shutdown) {
            self.exit = Some(Exit::Ok);
        }
    }

    /// The supervisor's part of the status document.
    pub(crate) fn snapshot(&self) -> Value {
        let now = Instant::now();
        let (state, pid, version, uptime) = match &self.agent {
            AgentState::Running {
                pid,
                since,
                version,
            } => (
                "RUNNING",
                Some(*pid),
                Some(version.clone()),
                Some(now - *since),
            ),
            AgentState::Stopping {
                pid,
                since,
                version,
                ..
            } => (
                "STOPPING",
                Some(*pid),
                Some(version.clone()),
                Some(now - *since),
            ),
            AgentState::Waiting { .. } => ("BACKOFF", None, None, None),
            AgentState::Down => ("STOPPED", None, None, None),
        };
        let next_start = match &self.agent {
            AgentState::Waiting { until } => {
                Some(until.saturating_duration_since(now).as_millis() as u64)
            }
            _ => None,
        };
        let build = Store::new(&self.paths).current();
        json!({
            "warden": {
                "pid": std::process::id(),
                "version": env!("CARGO_PKG_VERSION"),
                "root": self.paths.root.display().to_string(),
                "startedAt": humantime::format_rfc3339_seconds(self.started_at).to_string(),
                "exe": self.exe.display().to_string(),
                "execs": self.execs,
            },
            "supervisor": {
                "agentState": state,
                "agentPid": pid,
                "agentVersion": version,
                "agentUptimeSeconds": uptime.map(|d| d.as_secs()),
                "restarts": self.restarts,
                "consecutiveFailures": self.backoff.failures(),
                "backoffMs": self.backoff.current().as_millis() as u64,
                "nextStartInMs": next_start,
                "lastExit": self.last_exit.as_ref().map(|e| json!({
                    "code": match e.ended { Ended::Code(c) => Some(c), _ => None },
                    "signal": match e.ended { Ended::Signal(s) => Some(s), _ => None },
                    "description": e.ended.to_string(),
                    "at": humantime::format_rfc3339_seconds(e.at).to_string(),
                    "ranForMs": e.ran_for.as_millis() as u64,
                })),
            },
            "build": build.map(|b| json!({
                "version": b.artifact.version,
                "gitHash": b.artifact.git_hash,
                "sha256": b.artifact.sha256,
                "installedAt": b.artifact.installed_at,
            })),
            "cluster": self.cfg.cluster,
            "introspection": self.cfg.introspection.base_url(),
            "agentUpdateStatus": self.update.record.as_ref().map(|r| r.state.as_str()),
            "observed": {
                "containerInstanceArn": self.observed.container_instance_arn,
                "cluster": self.observed.cluster,
                "dockerVersion": self.observed.docker_version,
            },
            "update": self.update_status(),
        })
    }
}

fn log_tail(pid: i32, tail: &[String]) {
    if tail.is_empty() {
        log::error!("agent (pid {pid}) printed nothing before it exited");
        return;
    }
    log::error!("last {} lines of agent (pid {pid}) output:", tail.len());
    for line in tail {
        log::error!("  | {line}");
    }
}
