//! The runtime seam: how the agent is started, stopped and watched. The
//! supervisor and the update machine speak of "start build V", "stop the
//! agent", "the agent ended with code C or signal S"; a runtime turns that
//! into processes (`native`) or containers.
//!
//! Each start gets a run number; news a runtime sends from its own threads
//! (`event::AgentEvent`) carries it, so news of an earlier run is ignored.
//! A runtime also owns what a previous warden left behind (an orphaned
//! agent) and what crosses a re-exec.

pub mod docker_config;
pub mod native;
pub mod orphan;
pub mod output;

use std::sync::mpsc::Sender;
use std::time::Instant;

use crate::config::Config;
use crate::error::Result;
use crate::event::Event;
use crate::exit::Ended;
use crate::paths::Paths;
use crate::reexec::AgentHandoff;
use crate::store::Build;

/// A started agent.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its process ID on this host, when there is one to show.
    pub pid: Option<i32>,
    /// How log lines name it (`pid 123`).
    pub what: String,
}

/// The runtimes. One enum, matched in each method, rather than a trait
/// object: there are two, and each call site stays readable.
pub enum Runtime {
    Native(native::Native),
}

impl Runtime {
    pub fn new(paths: &Paths, cfg: &Config, tx: Sender<Event>) -> Runtime {
        Runtime::Native(native::Native::new(paths, cfg.stop_timeout, tx))
    }

    /// Which runtime this is, as `status` and `version` show it.
    pub fn kind(&self) -> &'static str {
        match self {
            Runtime::Native(_) => "native",
        }
    }

    /// Before the first start: stop what a previous warden left running.
    pub fn clear_leftovers(&mut self) {
        match self {
            Runtime::Native(n) => n.clear_leftovers(),
        }
    }

    /// Start `build` with `env` as run `run`.
    pub fn start(&mut self, run: u64, build: &Build, env: &[(String, String)]) -> Result<Started> {
        match self {
            Runtime::Native(n) => n.start(run, build, env),
        }
    }

    /// Ask the agent to stop; a runtime that escalates does so at
    /// `deadline`.
    pub fn stop(&mut self) {
        match self {
            Runtime::Native(n) => n.stop(),
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        match self {
            Runtime::Native(n) => n.deadline(),
        }
    }

    pub fn on_deadline(&mut self, now: Instant) {
        match self {
            Runtime::Native(n) => n.on_deadline(now),
        }
    }

    /// SIGCHLD arrived: the run that ended, if the agent did.
    pub fn reap(&mut self) -> Option<(u64, Ended)> {
        match self {
            Runtime::Native(n) => n.reap(),
        }
    }

    /// The agent's output of `run` ended.
    pub fn output_closed(&mut self, run: u64) {
        match self {
            Runtime::Native(n) => n.output_closed(run),
        }
    }

    /// The agent's process ID, for `status`.
    pub fn pid(&self) -> Option<i32> {
        match self {
            Runtime::Native(n) => n.pid(),
        }
    }

    /// The agent's part of a re-exec hand-off, and the descriptors that
    /// must survive the exec.
    pub fn handoff(&self, uptime_ms: u64) -> Option<AgentHandoff> {
        match self {
            Runtime::Native(n) => n.handoff().map(|a| AgentHandoff {
                pid: a.pid,
                version: a.version,
                uptime_ms,
                output_fd: a.output_fd,
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
        }
    }
}

/// The environment the agent sees on top of the warden's own: every key of
/// the merged config, and the locations it needs under the root unless the
/// config sets them.
pub fn agent_environment(paths: &Paths, cfg: &Config) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = cfg
        .agent_env()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut set_default = |k: &str, v: String| {
        if !cfg.env.contains_key(k) {
            env.push((k.to_string(), v));
        }
    };
    set_default("ECS_DATADIR", paths.data_dir.display().to_string());
    set_default(
        "ECS_UPDATE_DOWNLOAD_DIR",
        paths.cache_dir.display().to_string(),
    );
    set_default(
        "ECS_WARDEN_CONTROL_SOCKET",
        paths.control_socket().display().to_string(),
    );
    // What ecs-init decides from the host's state, over the config.
    for (k, v) in crate::host::agent_env_overrides(paths, cfg) {
        env.retain(|(have, _)| *have != k);
        env.push((k, v));
    }
    env
}
