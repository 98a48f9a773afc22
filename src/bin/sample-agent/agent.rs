//! The running agent: one loop that owns all mutable state.
//!
//! Start-up, in order:
//! 1. install the SIGTERM/SIGINT handlers, then apply the start faults
//!    (`crash` aborts, `slow-start` waits, ending early on a signal);
//! 2. load or create the data dir state (instance ARN, tasks);
//! 3. bind the loopback listener and log the start line;
//! 4. start the listening threads (HTTP requests, signals) and one start-up
//!    thread that picks the task runtime and inspects docker containers;
//! 5. run the loop. Task requests that arrive before the start-up thread
//!    reports are held back and answered after adoption, so `/v1/tasks`
//!    never shows a task's status before it was checked.
//!
//! Threads that listen or do slow work (docker, the control socket) send an
//! [`Event`] to the loop; only the loop reads or changes the state. The agent
//! never stops a task on exit: whatever ends it, containers keep running.

use std::collections::HashSet;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::Duration;

use log::{error, info, warn};
use serde::Serialize;
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tiny_http::Request;

use crate::config::{Config, RuntimeChoice};
use crate::docker;
use crate::error::{Error, Result};
use crate::fault::{self, Fault};
use crate::ids;
use crate::introspection::{self, Action, ApiError, TaskFilter};
use crate::state::{SavedState, Store};
use crate::tasks::{self, DockerStates, Launcher, RuntimeKind, Status, TaskRecord, TaskView};
use crate::update;
use crate::version::Build;

/// How long SIGTERM waits for an update request in flight to be answered.
const HANDOFF_GRACE: Duration = Duration::from_secs(2);
/// The real agent's exit code after staging an update.
const EXIT_UPDATE: i32 = 42;

enum Event {
    Request(Request),
    Signal(i32),
    /// The start-up thread is done: runtime chosen, docker inspected.
    Ready {
        runtime: RuntimeKind,
        docker: Result<DockerStates>,
    },
    Started {
        request: Request,
        result: Result<TaskRecord>,
    },
    Stopped {
        request: Request,
        arn: String,
        result: Result<()>,
    },
    Refreshed {
        request: Request,
        result: Result<DockerStates>,
    },
    /// A `request-update` exchange has been answered.
    HandoffDone,
    Exit {
        code: i32,
        reason: String,
    },
}

/// `GET /v1/metadata`, field names as the real agent spells them.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Metadata<'a> {
    cluster: &'a str,
    container_instance_arn: &'a str,
    version: String,
}

/// `GET /v1/tasks`
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TasksView<'a> {
    tasks: Vec<TaskView<'a>>,
}

struct Agent {
    config: Config,
    build: Build,
    fault: Fault,
    store: Store,
    state: SavedState,
    docker: DockerStates,
    /// Tasks loaded from a previous run (what `drop-tasks` hides).
    adopted: HashSet<String>,
    /// `None` until the start-up thread reports.
    launcher: Option<Launcher>,
    held: Vec<(Request, Action)>,
    unhealthy: bool,
    handoffs: usize,
    exiting: bool,
    events: Sender<Event>,
}

/// Runs the agent; returns only on a start-up error.
pub fn run(config: Config, build: Build) -> Result<()> {
    let fault = fault::effective(
        config.fault.as_ref(),
        config.fault_version.as_deref(),
        build.fault.as_ref(),
        &build.version,
    );
    // Handlers first: a SIGTERM that comes right after the port is bound
    // (or during a slow start) must exit 0, not kill by default action.
    let (events, inbox) = mpsc::channel();
    spawn_signal_listener(events.clone())?;
    match fault {
        Fault::Crash => {
            error!("fault crash: aborting before serving");
            std::process::abort();
        }
        Fault::SlowStart(delay) => {
            if let Ok(Event::Signal(signal)) = inbox.recv_timeout(delay) {
                info!(
                    "exiting with code 0 (received {} while starting)",
                    signal_name(signal)
                );
                std::process::exit(0);
            }
        }
        _ => {}
    }

    let store = Store::new(&config.data_dir);
    let state = store.load_or_init(&config)?;
    let (server, addr) = introspection::listen(config.listen)?;
    info!(
        "v{} ({}) serving on {addr}, instance ARN {}",
        build.version, build.hash, state.container_instance_arn
    );
    if fault != Fault::None {
        info!("fault {fault} is active");
    }

    spawn_http_forwarder(server, events.clone());
    spawn_startup(&config, &state, events.clone());
    if let Fault::Exit(code) = fault {
        let delay = config.exit_after;
        let tx = events.clone();
        thread::spawn(move || {
            thread::sleep(delay);
            let _ = tx.send(Event::Exit {
                code,
                reason: format!("fault exit:{code}"),
            });
        });
    }

    let agent = Agent {
        adopted: state.tasks.iter().map(|t| t.arn.clone()).collect(),
        config,
        build,
        unhealthy: fault == Fault::Unhealthy,
        fault,
        store,
        state,
        docker: DockerStates::new(),
        launcher: None,
        held: Vec::new(),
        handoffs: 0,
        exiting: false,
        events,
    };
    agent.run(inbox)
}

fn spawn_http_forwarder(server: tiny_http::Server, events: Sender<Event>) {
    thread::spawn(move || {
        for request in server.incoming_requests() {
            if events.send(Event::Request(request)).is_err() {
                break;
            }
        }
    });
}

fn spawn_signal_listener(events: Sender<Event>) -> Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT]).map_err(Error::Signals)?;
    thread::spawn(move || {
        for signal in signals.forever() {
            if events.send(Event::Signal(signal)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Picks the runtime for new tasks and inspects the adopted docker
/// containers, off the loop so that binding never waits on the engine.
fn spawn_startup(config: &Config, state: &SavedState, events: Sender<Event>) {
    let choice = config.runtime;
    let tasks = state.tasks.clone();
    thread::spawn(move || {
        let runtime = match choice {
            RuntimeChoice::Docker => RuntimeKind::Docker,
            RuntimeChoice::Process => RuntimeKind::Process,
            RuntimeChoice::Auto => match docker::engine_version() {
                Ok(_) => RuntimeKind::Docker,
                Err(_) => RuntimeKind::Process,
            },
        };
        let docker = tasks::inspect_docker(&tasks);
        let _ = events.send(Event::Ready { runtime, docker });
    });
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGTERM => "SIGTERM",
        SIGINT => "SIGINT",
        _ => "a signal",
    }
}

impl Agent {
    fn run(mut self, inbox: Receiver<Event>) -> Result<()> {
        for event in inbox {
            self.handle(event);
        }
        // Every sender lives as long as its thread; the forwarder never ends.
        unreachable!("the event channel closed");
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Request(request) => {
                match introspection::route(request.method(), request.url()) {
                    Ok(action) => self.perform(request, action),
                    Err(e) => introspection::reply_error(request, &e),
                }
            }
            Event::Signal(signal) => self.on_signal(signal),
            Event::Ready { runtime, docker } => self.on_ready(runtime, docker),
            Event::Started { request, result } => self.on_started(request, result),
            Event::Stopped {
                request,
                arn,
                result,
            } => self.on_stopped(request, &arn, result),
            Event::Refreshed { request, result } => match result {
                Ok(states) => {
                    self.docker.extend(states);
                    self.reply_tasks(request, TaskFilter::All);
                }
                Err(e) => introspection::reply_error(request, &ApiError::internal(&e)),
            },
            Event::HandoffDone => {
                self.handoffs -= 1;
                if self.exiting && self.handoffs == 0 {
                    self.exit(0, "update request answered after SIGTERM");
                }
            }
            Event::Exit { code, reason } => self.exit(code, &reason),
        }
    }

    fn perform(&mut self, request: Request, action: Action) {
        let needs_tasks = matches!(
            action,
            Action::Tasks(_)
                | Action::StartTask { .. }
                | Action::StopTask { .. }
                | Action::RefreshTasks
        );
        if needs_tasks && self.launcher.is_none() {
            self.held.push((request, action));
            return;
        }
        match action {
            Action::Metadata => {
                let arn = if self.unhealthy {
                    ""
                } else {
                    self.state.container_instance_arn.as_str()
                };
                let body = Metadata {
                    cluster: &self.config.cluster,
                    container_instance_arn: arn,
                    version: self.build.banner(),
                };
                introspection::reply(request, 200, &body);
            }
            Action::Tasks(filter) => self.reply_tasks(request, filter),
            Action::StartTask {
                family,
                containers,
                revision,
            } => self.start_task(request, &family, containers, revision),
            Action::StopTask { arn } => self.stop_task(request, arn),
            Action::RefreshTasks => {
                let tasks = self.state.tasks.clone();
                let events = self.events.clone();
                thread::spawn(move || {
                    let result = tasks::inspect_docker(&tasks);
                    let _ = events.send(Event::Refreshed { request, result });
                });
            }
            Action::Exit { code } => {
                introspection::reply(request, 200, &json!({ "exiting": code }));
                self.exit(code, "asked by POST /sample/exit");
            }
            Action::Unhealthy => {
                self.unhealthy = true;
                info!("now unhealthy: ContainerInstanceArn is empty from here on");
                introspection::reply(request, 200, &json!({ "unhealthy": true }));
            }
            Action::RequestUpdate(params) => {
                let Some(socket) = self.config.control_socket.clone() else {
                    let e = ApiError::bad_request("ECS_WARDEN_CONTROL_SOCKET is not set");
                    return introspection::reply_error(request, &e);
                };
                info!(
                    "requesting an update to {} from the warden at {}",
                    params.location,
                    socket.display()
                );
                self.handoffs += 1;
                let events = self.events.clone();
                thread::spawn(move || {
                    let outcome = update::request_update(&socket, &params);
                    introspection::reply(request, outcome.http_status(), &outcome);
                    let _ = events.send(Event::HandoffDone);
                });
            }
            Action::StageLocal { file } => {
                let Some(dir) = self.config.update_download_dir.clone() else {
                    let e = ApiError::bad_request("ECS_UPDATE_DOWNLOAD_DIR is not set");
                    return introspection::reply_error(request, &e);
                };
                match update::stage_local(&file, &dir) {
                    Ok(staged) => {
                        info!("staged {} as {}", file.display(), staged.staged.display());
                        introspection::reply(request, 200, &staged);
                        self.exit(EXIT_UPDATE, "update staged");
                    }
                    Err(e) => introspection::reply_error(request, &e),
                }
            }
        }
    }

    fn visible(&self, task: &TaskRecord) -> bool {
        !(self.fault == Fault::DropTasks && self.adopted.contains(&task.arn))
    }

    fn reply_tasks(&self, request: Request, filter: TaskFilter) {
        let mut visible = self.state.tasks.iter().filter(|t| self.visible(t));
        let found = match filter {
            TaskFilter::All => {
                let tasks = visible.map(|t| t.view(&self.docker)).collect();
                return introspection::reply(request, 200, &TasksView { tasks });
            }
            TaskFilter::Arn(arn) => visible
                .find(|t| t.arn == arn)
                .ok_or_else(|| ApiError::not_found(format!("no task with ARN {arn}"))),
            TaskFilter::DockerId(id) => {
                let matching: Vec<_> = visible.filter(|t| t.matches_docker_id(&id)).collect();
                match matching[..] {
                    [task] => Ok(task),
                    [] => Err(ApiError::not_found(format!(
                        "no task has a container with docker id {id}"
                    ))),
                    _ => Err(ApiError::bad_request(format!(
                        "docker id prefix {id} matches containers of several tasks"
                    ))),
                }
            }
        };
        match found {
            Ok(task) => introspection::reply(request, 200, &task.view(&self.docker)),
            Err(e) => introspection::reply_error(request, &e),
        }
    }

    fn start_task(&mut self, request: Request, family: &str, containers: usize, revision: u32) {
        let launcher = self.launcher.clone().expect("held until start-up is done");
        let arn = format!(
            "arn:aws:ecs:{}:{}:task/{}/{}",
            self.config.region,
            self.config.account,
            self.config.cluster,
            ids::random_hex(32)
        );
        let task = tasks::plan(arn, family, revision, containers, launcher.runtime);
        let events = self.events.clone();
        thread::spawn(move || {
            let result = launcher.start(task);
            let _ = events.send(Event::Started { request, result });
        });
    }

    fn on_started(&mut self, request: Request, result: Result<TaskRecord>) {
        let task = match result {
            Ok(task) => task,
            Err(e) => {
                error!("cannot start a task: {e}");
                return introspection::reply_error(request, &ApiError::internal(&e));
            }
        };
        if task.runtime == RuntimeKind::Docker {
            for c in &task.containers {
                self.docker.insert(c.docker_id.clone(), true);
            }
        }
        info!(
            "started task {} ({} container(s), {})",
            task.arn,
            task.containers.len(),
            task.runtime.as_str()
        );
        self.state.tasks.push(task);
        if let Err(e) = self.store.save(&self.state) {
            error!("{e}");
            return introspection::reply_error(request, &ApiError::internal(&e));
        }
        let task = self.state.tasks.last().expect("just pushed");
        introspection::reply(request, 200, &task.view(&self.docker));
    }

    fn stop_task(&mut self, request: Request, arn: String) {
        let Some(task) = self.state.tasks.iter_mut().find(|t| t.arn == arn) else {
            let e = ApiError::not_found(format!("no task with ARN {arn}"));
            return introspection::reply_error(request, &e);
        };
        // Desired status first, as the real agent does: after a crash the
        // record says what was wanted.
        if task.desired_status != Status::Stopped {
            task.desired_status = Status::Stopped;
            if let Err(e) = self.store.save(&self.state) {
                error!("{e}");
                return introspection::reply_error(request, &ApiError::internal(&e));
            }
        }
        let task = self
            .state
            .tasks
            .iter()
            .find(|t| t.arn == arn)
            .expect("found above")
            .clone();
        let events = self.events.clone();
        thread::spawn(move || {
            let result = tasks::stop(&task);
            let _ = events.send(Event::Stopped {
                request,
                arn,
                result,
            });
        });
    }

    fn on_stopped(&mut self, request: Request, arn: &str, result: Result<()>) {
        if let Err(e) = result {
            error!("cannot stop task {arn}: {e}");
            return introspection::reply_error(request, &ApiError::internal(&e));
        }
        let Some(task) = self.state.tasks.iter().find(|t| t.arn == arn) else {
            return introspection::reply_error(request, &ApiError::not_found(arn));
        };
        if task.runtime == RuntimeKind::Docker {
            for c in &task.containers {
                self.docker.insert(c.docker_id.clone(), false);
            }
        }
        info!("stopped task {arn}");
        introspection::reply(request, 200, &task.view(&self.docker));
    }

    fn on_ready(&mut self, runtime: RuntimeKind, docker: Result<DockerStates>) {
        match docker {
            Ok(states) => self.docker = states,
            // The tasks stay STOPPED until a refresh finds them running.
            Err(e) => warn!("cannot check docker containers of adopted tasks: {e}"),
        }
        let adopted = self.state.tasks.len();
        if adopted > 0 {
            let running = self
                .state
                .tasks
                .iter()
                .filter(|t| t.known_status(&self.docker) == Status::Running)
                .count();
            info!(
                "adopted {adopted} task(s) from {}: {running} running",
                self.store.path().display()
            );
        }
        self.launcher = Some(Launcher {
            runtime,
            image: self.config.task_image.clone(),
            cluster: self.config.cluster.clone(),
            instance_id: self.state.instance_id().to_string(),
        });
        for (request, action) in std::mem::take(&mut self.held) {
            self.perform(request, action);
        }
    }

    fn on_signal(&mut self, signal: i32) {
        let name = if signal == SIGTERM {
            "SIGTERM"
        } else {
            "SIGINT"
        };
        if signal == SIGTERM && self.fault == Fault::IgnoreSigterm {
            warn!("ignoring SIGTERM (fault ignore-sigterm)");
            return;
        }
        if self.handoffs == 0 {
            self.exit(0, &format!("received {name}"));
        }
        // An update request to the warden is in flight: its answer is what
        // the caller is waiting for, and the warden stops us right after.
        info!("received {name}; answering the update request in flight first");
        self.exiting = true;
        let events = self.events.clone();
        thread::spawn(move || {
            thread::sleep(HANDOFF_GRACE);
            let _ = events.send(Event::Exit {
                code: 0,
                reason: format!("received {name}"),
            });
        });
    }

    /// Leaves at once. Tasks are deliberately left running.
    fn exit(&self, code: i32, reason: &str) -> ! {
        info!("exiting with code {code} ({reason})");
        std::process::exit(code);
    }
}
