//! Tasks: the persisted record of each task, its introspection view, and the
//! two runtimes that run its containers ([`docker`](crate::docker) and
//! [`process`](crate::process)).
//!
//! How `KnownStatus` is kept true without per-request cost:
//! - process containers are checked on every read (`/proc/PID/stat` exists,
//!   is not a zombie, and its start time matches the one recorded);
//! - docker containers are checked with one `docker inspect` at adoption and
//!   on `POST /sample/tasks/refresh`; in between, the cached answer is used
//!   (set RUNNING when the agent starts a container, STOPPED when it stops
//!   one). No docker CLI call is made per `/v1/tasks` request.
//!
//! A task is `RUNNING` when all of its containers run, else `STOPPED` (every
//! container is essential, as in the default task definition).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::docker;
use crate::error::Result;
use crate::ids;
use crate::process;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Running,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Docker,
    Process,
}

impl RuntimeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Process => "process",
        }
    }
}

/// A task as persisted in the data dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub arn: String,
    pub family: String,
    pub version: String,
    pub desired_status: Status,
    pub runtime: RuntimeKind,
    pub containers: Vec<ContainerRecord>,
}

/// A container as persisted; `pid`/`start_time` for the process runtime,
/// `started_at` (docker's `State.StartedAt`) for the docker runtime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub name: String,
    pub docker_name: String,
    pub docker_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

/// One item of `/v1/tasks`, field names as the real agent spells them.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskView<'a> {
    pub arn: &'a str,
    pub desired_status: Status,
    pub known_status: Status,
    pub family: &'a str,
    pub version: &'a str,
    pub containers: Vec<ContainerView<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerView<'a> {
    pub docker_id: &'a str,
    pub docker_name: &'a str,
    pub name: &'a str,
}

/// Last known docker state, by full container id.
pub type DockerStates = HashMap<String, bool>;

impl TaskRecord {
    pub fn known_status(&self, docker: &DockerStates) -> Status {
        let running = |c: &ContainerRecord| match self.runtime {
            RuntimeKind::Process => match (c.pid, c.start_time) {
                (Some(pid), Some(start)) => process::is_alive(pid, start),
                _ => false,
            },
            RuntimeKind::Docker => docker.get(&c.docker_id).copied().unwrap_or(false),
        };
        if !self.containers.is_empty() && self.containers.iter().all(running) {
            Status::Running
        } else {
            Status::Stopped
        }
    }

    pub fn view(&self, docker: &DockerStates) -> TaskView<'_> {
        TaskView {
            arn: &self.arn,
            desired_status: self.desired_status,
            known_status: self.known_status(docker),
            family: &self.family,
            version: &self.version,
            containers: self
                .containers
                .iter()
                .map(|c| ContainerView {
                    docker_id: &c.docker_id,
                    docker_name: &c.docker_name,
                    name: &c.name,
                })
                .collect(),
        }
    }

    /// True when one of its containers has this full id, or starts with this
    /// prefix of at least 12 characters (as `docker ps` shows them).
    pub fn matches_docker_id(&self, id: &str) -> bool {
        self.containers
            .iter()
            .any(|c| c.docker_id == id || (id.len() >= 12 && c.docker_id.starts_with(id)))
    }
}

/// Everything a worker thread needs to start containers.
#[derive(Debug, Clone)]
pub struct Launcher {
    pub runtime: RuntimeKind,
    pub image: String,
    pub cluster: String,
    /// The 32-hex id of this container instance, for the docker label.
    pub instance_id: String,
}

/// The names of a task about to start: `ecs-<family>-<rev>-<name>-<20 hex>`.
pub fn plan(
    task_arn: String,
    family: &str,
    revision: u32,
    containers: usize,
    runtime: RuntimeKind,
) -> TaskRecord {
    let containers = (1..=containers)
        .map(|i| {
            let name = format!("c{i}");
            ContainerRecord {
                docker_name: format!("ecs-{family}-{revision}-{name}-{}", ids::random_hex(20)),
                name,
                docker_id: String::new(),
                pid: None,
                start_time: None,
                started_at: None,
            }
        })
        .collect();
    TaskRecord {
        arn: task_arn,
        family: family.to_string(),
        version: revision.to_string(),
        desired_status: Status::Running,
        runtime,
        containers,
    }
}

impl Launcher {
    /// Starts every container of a planned task and fills in their ids.
    ///
    /// If one container fails, the ones already started are stopped (and
    /// removed, for docker) so that no untracked container is left behind.
    pub fn start(&self, mut task: TaskRecord) -> Result<TaskRecord> {
        for i in 0..task.containers.len() {
            let started = match self.runtime {
                RuntimeKind::Docker => self.start_docker(&task, &task.containers[i]),
                RuntimeKind::Process => start_process(&task, &task.containers[i]),
            };
            match started {
                Ok(container) => task.containers[i] = container,
                Err(e) => {
                    for c in &task.containers[..i] {
                        let _ = stop_container(self.runtime, c);
                        if self.runtime == RuntimeKind::Docker {
                            let _ = docker::remove(&c.docker_id);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(task)
    }

    fn start_docker(&self, task: &TaskRecord, c: &ContainerRecord) -> Result<ContainerRecord> {
        let labels = [
            ("com.amazonaws.ecs.task-arn", task.arn.as_str()),
            ("com.amazonaws.ecs.container-name", c.name.as_str()),
            ("com.amazonaws.ecs.task-definition-family", &task.family),
            ("com.amazonaws.ecs.task-definition-version", &task.version),
            ("com.amazonaws.ecs.cluster", &self.cluster),
            (docker::OWNER_LABEL, &self.instance_id),
        ];
        let id = docker::run(&self.image, &c.docker_name, &labels)?;
        let started_at = docker::inspect(std::slice::from_ref(&id))?
            .remove(&id)
            .map(|state| state.started_at);
        Ok(ContainerRecord {
            docker_id: id,
            started_at,
            ..c.clone()
        })
    }
}

fn start_process(task: &TaskRecord, c: &ContainerRecord) -> Result<ContainerRecord> {
    let (pid, start_time) = process::spawn(&task.arn, &c.name)?;
    Ok(ContainerRecord {
        docker_id: ids::random_hex(64),
        pid: Some(pid),
        start_time: Some(start_time),
        ..c.clone()
    })
}

/// Stops every container of a task that still runs; already-gone containers
/// are fine.
pub fn stop(task: &TaskRecord) -> Result<()> {
    let mut first_error = None;
    for container in &task.containers {
        if let Err(e) = stop_container(task.runtime, container) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

fn stop_container(runtime: RuntimeKind, c: &ContainerRecord) -> Result<()> {
    match runtime {
        RuntimeKind::Docker if !c.docker_id.is_empty() => docker::stop(&c.docker_id),
        RuntimeKind::Process => match (c.pid, c.start_time) {
            (Some(pid), Some(start)) => process::stop(pid, start),
            _ => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Checks whether the docker containers among `tasks` run; one CLI call.
pub fn inspect_docker(tasks: &[TaskRecord]) -> Result<DockerStates> {
    let ids: Vec<String> = tasks
        .iter()
        .filter(|t| t.runtime == RuntimeKind::Docker)
        .flat_map(|t| t.containers.iter().map(|c| c.docker_id.clone()))
        .filter(|id| !id.is_empty())
        .collect();
    if ids.is_empty() {
        return Ok(DockerStates::new());
    }
    let found = docker::inspect(&ids)?;
    Ok(ids
        .into_iter()
        .map(|id| {
            let running = found.get(&id).is_some_and(|s| s.running);
            (id, running)
        })
        .collect())
}
