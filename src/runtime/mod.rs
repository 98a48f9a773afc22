//! The runtime seam: how the agent is started, stopped and watched. The
//! supervisor and the update machine speak of "start build V", "stop the
//! agent", "the agent ended with code C or signal S"; a runtime turns that
//! into processes (`native`) or containers.
//!
//! Each start gets a run number; news a runtime sends from its own threads
//! (`event::AgentEvent`) carries it, so news of an earlier run is ignored.
//! A runtime also owns what a previous warden left behind (an orphaned
//! agent) and what crosses a re-exec.

pub mod docker;
pub mod docker_config;
pub mod native;
pub mod orphan;
pub mod output;

use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::config::{Config, RuntimeKind};
use crate::error::Result;
use crate::event::Event;
use crate::exit::Ended;
use crate::host_facts::HostFacts;
use crate::paths::Paths;
use crate::reexec::AgentHandoff;
use crate::store::{Build, Store};

/// A started agent.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its process ID on this host, when there is one to show.
    pub pid: Option<i32>,
    /// How log lines name it (`pid 123`, `container 0123456789ab`).
    pub what: String,
}

/// The runtimes. One enum, matched in each method, rather than a trait
/// object: there are two, and each call site stays readable. (One value
/// per process: the variants' sizes do not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Runtime {
    Native(native::Native),
    Docker(docker::Docker),
}

/// Which runtime runs the agent: `ECS_WARDEN_RUNTIME`, else the bundle
/// decides (an image tarball at `var/cache/ecs/ecs-agent.tar` means
/// Docker, an executable at `var/cache/ecs/ecs-agent` native), else the
/// current build (an image build means Docker), else native.
pub fn choose(cfg: &Config, paths: &Paths) -> RuntimeKind {
    if let Some(k) = cfg.runtime {
        return k;
    }
    if paths.bundled_tarball().is_file() {
        return RuntimeKind::Docker;
    }
    if paths.bundled_agent().is_file() {
        return RuntimeKind::Native;
    }
    match Store::new(paths).current() {
        Some(b) if b.artifact.image.is_some() => RuntimeKind::Docker,
        _ => RuntimeKind::Native,
    }
}

impl Runtime {
    pub fn new(paths: &Paths, cfg: &Config, tx: Sender<Event>) -> Result<Runtime> {
        Ok(match choose(cfg, paths) {
            RuntimeKind::Native => {
                Runtime::Native(native::Native::new(paths, cfg.stop_timeout, tx))
            }
            RuntimeKind::Docker => Runtime::Docker(docker::Docker::new(paths, cfg, tx)?),
        })
    }

    /// Which runtime this is, as `status` and `version` show it.
    pub fn kind(&self) -> RuntimeKind {
        match self {
            Runtime::Native(_) => RuntimeKind::Native,
            Runtime::Docker(_) => RuntimeKind::Docker,
        }
    }

    /// The engine's socket, for the Docker runtime.
    pub fn engine_socket(&self) -> Option<std::path::PathBuf> {
        match self {
            Runtime::Native(_) => None,
            Runtime::Docker(d) => Some(d.socket().to_path_buf()),
        }
    }

    /// Before the first start: stop what a previous warden left running.
    pub fn clear_leftovers(&mut self) {
        match self {
            Runtime::Native(n) => n.clear_leftovers(),
            Runtime::Docker(d) => d.clear_leftovers(),
        }
    }

    /// Start `build` as run `run`.
    pub fn start(
        &mut self,
        run: u64,
        build: &Build,
        paths: &Paths,
        cfg: &Config,
    ) -> Result<Started> {
        match self {
            Runtime::Native(n) => n.start(run, build, &native_environment(paths, cfg)),
            Runtime::Docker(d) => d.start(run, build),
        }
    }

    /// Ask the agent to stop; a runtime that escalates does so at
    /// `deadline` (the engine escalates a container's stop itself).
    pub fn stop(&mut self) {
        match self {
            Runtime::Native(n) => n.stop(),
            Runtime::Docker(d) => d.stop(),
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Runtime::Native(n) => n.deadline(),
            Runtime::Docker(_) => None,
        }
    }

    pub fn on_deadline(&mut self, now: Instant) {
        match self {
            Runtime::Native(n) => n.on_deadline(now),
            Runtime::Docker(_) => {}
        }
    }

    /// SIGCHLD arrived: the run that ended, if the agent did.
    pub fn reap(&mut self) -> Option<(u64, Ended)> {
        match self {
            Runtime::Native(n) => n.reap(),
            Runtime::Docker(_) => None,
        }
    }

    /// A runtime thread reported that run `run` ended.
    pub fn exited(&mut self, run: u64) {
        match self {
            Runtime::Native(_) => {}
            Runtime::Docker(d) => d.exited(run),
        }
    }

    /// The agent's output of `run` ended.
    pub fn output_closed(&mut self, run: u64) {
        match self {
            Runtime::Native(n) => n.output_closed(run),
            Runtime::Docker(_) => {}
        }
    }

    /// The agent's process ID, for `status`.
    pub fn pid(&self) -> Option<i32> {
        match self {
            Runtime::Native(n) => n.pid(),
            Runtime::Docker(d) => d.pid(),
        }
    }

    /// The agent's part of a re-exec hand-off (the descriptors in it must
    /// survive the exec).
    pub fn handoff(&self, version: &str, uptime_ms: u64) -> Option<AgentHandoff> {
        match self {
            Runtime::Native(n) => n.handoff().map(|a| AgentHandoff {
                pid: a.pid,
                version: a.version,
                uptime_ms,
                output_fd: a.output_fd,
                container: None,
            }),
            Runtime::Docker(d) => d.container_id().map(|id| AgentHandoff {
                pid: d.pid().unwrap_or(0),
                version: version.to_string(),
                uptime_ms,
                output_fd: None,
                container: Some(id.to_string()),
            }),
        }
    }

    /// Take over the agent of a re-exec hand-off as run `run`.
    pub fn adopt(&mut self, run: u64, h: &AgentHandoff) {
        match self {
            Runtime::Native(n) => n.adopt(
                run,
                native::Adopted {
                    pid: h.pid,
                    version: h.version.clone(),
                    output_fd: h.output_fd,
                },
            ),
            Runtime::Docker(d) => match &h.container {
                Some(id) => d.adopt(run, id, Some(h.pid).filter(|p| *p > 0)),
                None => log::error!("re-exec hand-off names no container for the Docker runtime"),
            },
        }
    }

    /// How log lines name the agent of a hand-off.
    pub fn describe(h: &AgentHandoff) -> String {
        match &h.container {
            Some(id) => format!("container {}", &id[..12.min(id.len())]),
            None => format!("pid {}", h.pid),
        }
    }
}

/// The environment a native agent gets: the merged config and ecs-init's
/// defaults with host paths under the root.
pub fn native_environment(paths: &Paths, cfg: &Config) -> Vec<(String, String)> {
    let mut config = docker::config_map(cfg);
    // The engine the warden was given is the agent's too.
    if let Some(h) = &cfg.docker_host {
        config
            .entry("DOCKER_HOST".to_string())
            .or_insert_with(|| h.clone());
    }
    let facts = HostFacts::probe(paths, &config, cfg.container_env.as_deref());
    crate::agent_env::environment(&config, crate::agent_env::Runtime::Native, paths, &facts)
}
