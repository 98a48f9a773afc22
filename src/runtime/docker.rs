//! The Docker runtime: the agent is the container `ecs-agent`, run from
//! the image `amazon/amazon-ecs-agent:latest` with ecs-init's host config
//! (`docker_config`), through the Engine API (`engine`).
//!
//! 1. Images: a build that came as an image tarball is loaded into the
//!    engine while it is staged (`preload`), so `load` is never part of the
//!    downtime, and tagged `amazon/amazon-ecs-agent:vVERSION`. `:latest`
//!    names the build `current` names: it is moved back at once after a
//!    load (which moves it) and to the new build when it starts.
//! 2. Start: any container named `ecs-agent` is removed first (stopped
//!    first when it runs: ecs-init's, or one a dead warden left); the new
//!    one is created, a wait for its next exit is registered, and it is
//!    started. A thread holds that `wait` open (no polling) and reports the
//!    exit code; another follows its output.
//! 3. Stop: `POST /containers/ecs-agent/stop?t=N` on a thread; the engine
//!    sends SIGTERM, then SIGKILL after N seconds; the wait thread reports
//!    the exit.
//! 4. Re-exec: the container's ID crosses; the next image waits for it
//!    again (a container that exited meanwhile answers at once).
//! 5. Housekeeping: `vVERSION` tags of builds no longer in the store are
//!    removed (the engine deletes an image with no name left); never the
//!    running image or the one kept for rollback.
//!
//! The engine calls of a start (remove, create, start: some tens of
//! milliseconds) run on the main loop, each bounded by `CALL_TIMEOUT`;
//! loads, stops and waits never do.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::time::{Duration, Instant};

use super::docker_config::{self, AGENT_CONTAINER_NAME};
use super::{output, Started};
use crate::agent_env;
use crate::agent_image::{ensure_loaded, AGENT_IMAGE};
pub use crate::agent_image::{socket, version_tag, AGENT_REPO};
use crate::config::Config;
use crate::engine::{Engine, EngineError, LogOptions, LogStream, WaitCondition};
use crate::error::{Error, Result};
use crate::event::{AgentEvent, Event};
use crate::exit::Ended;
use crate::host_facts::HostFacts;
use crate::paths::Paths;
use crate::store::Build;

/// Bound of an ordinary engine call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
struct Container {
    run: u64,
    id: String,
    pid: Option<i32>,
}

pub struct Docker {
    paths: Paths,
    cfg: Config,
    socket: PathBuf,
    tx: Sender<Event>,
    engine: Option<Engine>,
    container: Option<Container>,
}

fn connect(socket: &Path) -> Result<Engine> {
    Engine::connect(socket, CALL_TIMEOUT).map_err(Error::from)
}

impl Docker {
    pub fn new(paths: &Paths, cfg: &Config, tx: Sender<Event>) -> Result<Docker> {
        Ok(Docker {
            paths: paths.clone(),
            cfg: cfg.clone(),
            socket: socket(cfg)?,
            tx,
            engine: None,
            container: None,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The engine, connected (again) when needed.
    fn engine(&mut self) -> Result<Engine> {
        if let Some(e) = &self.engine {
            if e.ping().is_ok() {
                return Ok(e.clone());
            }
        }
        let e = connect(&self.socket)?;
        self.engine = Some(e.clone());
        Ok(e)
    }

    /// An `ecs-agent` container left running (by ecs-init, or by a warden
    /// that died) is stopped and removed before the first start.
    pub fn clear_leftovers(&mut self) {
        let engine = match self.engine() {
            Ok(e) => e,
            Err(e) => {
                log::warn!("docker: {e}; the agent starts once the engine answers");
                return;
            }
        };
        if let Err(e) = remove_agent_container(&engine, self.stop_secs()) {
            log::warn!("docker: {e}");
        }
    }

    fn stop_secs(&self) -> u32 {
        self.cfg.stop_timeout.as_secs().clamp(1, u32::MAX as u64) as u32
    }

    /// The agent's environment in its container.
    pub fn environment(&self, facts: &HostFacts) -> Vec<(String, String)> {
        agent_env::environment(
            &config_map(&self.cfg),
            agent_env::Runtime::Docker,
            &self.paths,
            facts,
        )
    }

    pub fn start(&mut self, run: u64, build: &Build) -> Result<Started> {
        let engine = self.engine()?;
        let image = ensure_loaded(&engine, build)?;
        engine.image_tag(&image, AGENT_IMAGE).map_err(Error::from)?;
        remove_agent_container(&engine, self.stop_secs())?;
        let config = config_map(&self.cfg);
        let facts = HostFacts::probe(&self.paths, &config, self.cfg.container_env.as_deref());
        let env = self.environment(&facts);
        let c = docker_config::agent_container(&docker_config::Inputs {
            paths: &self.paths,
            config: &config,
            env: &env,
            docker_host: self.cfg.docker_host.as_deref(),
            api: engine.api_version(),
            facts: &facts,
        });
        for w in &c.warnings {
            log::warn!("docker: {w}");
        }
        let created = engine
            .container_create(c.name, &c.create)
            .map_err(Error::from)?;
        let id = created.id;
        let wait = engine
            .begin_wait(&id, WaitCondition::NextExit)
            .map_err(Error::from)?;
        if let Err(e) = engine.container_start(&id) {
            let _ = engine.container_remove(&id, true, true);
            return Err(e.into());
        }
        let pid = engine
            .container_inspect(&id)
            .ok()
            .flatten()
            .map(|i| i.state.pid as i32)
            .filter(|p| *p > 0);
        watch(engine.clone(), run, id.clone(), Some(wait), self.tx.clone());
        follow(engine, run, id.clone(), None, self.tx.clone());
        let short = id[..12.min(id.len())].to_string();
        self.container = Some(Container { run, id, pid });
        Ok(Started {
            pid,
            what: format!("container {short}"),
        })
    }

    /// Take over the container of a re-exec hand-off.
    pub fn adopt(&mut self, run: u64, id: &str, pid: Option<i32>) {
        self.container = Some(Container {
            run,
            id: id.to_string(),
            pid,
        });
        match self.engine() {
            Ok(engine) => {
                let since = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs() as i64)
                    .ok();
                watch(engine.clone(), run, id.to_string(), None, self.tx.clone());
                follow(engine, run, id.to_string(), since, self.tx.clone());
            }
            Err(e) => {
                log::error!("docker: {e}; treating the agent's container as gone");
                let _ = self.tx.send(Event::Agent(AgentEvent::Exited {
                    run,
                    ended: Ended::Signal(nix::sys::signal::Signal::SIGKILL as i32),
                }));
            }
        }
    }

    pub fn container_id(&self) -> Option<&str> {
        self.container.as_ref().map(|c| c.id.as_str())
    }

    pub fn pid(&self) -> Option<i32> {
        self.container.as_ref().and_then(|c| c.pid)
    }

    /// The agent's run `run` ended (its wait thread said so).
    pub fn exited(&mut self, run: u64) {
        if self.container.as_ref().is_some_and(|c| c.run == run) {
            self.container = None;
        }
    }

    /// `POST /containers/ID/stop?t=N` on a thread of its own.
    pub fn stop(&mut self) {
        let Some(c) = &self.container else { return };
        let (id, secs) = (c.id.clone(), self.stop_secs());
        let socket = self.socket.clone();
        log::info!(
            "stopping the agent's container {} (SIGTERM, SIGKILL after {secs}s)",
            &id[..12.min(id.len())]
        );
        let _ = std::thread::Builder::new()
            .name("docker-stop".into())
            .spawn(move || {
                let stopped = connect(&socket)
                    .and_then(|e| e.container_stop(&id, secs).map_err(Error::from).map(|_| e));
                if let Err(e) = stopped {
                    log::error!("docker: stop the agent's container: {e}");
                }
            });
    }
}

/// The merged config as plain strings.
pub fn config_map(cfg: &Config) -> BTreeMap<String, String> {
    cfg.agent_env()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Stop (when it runs) and remove the container named `ecs-agent`.
fn remove_agent_container(engine: &Engine, stop_secs: u32) -> Result<()> {
    let Some(c) = engine
        .container_by_name(AGENT_CONTAINER_NAME)
        .map_err(Error::from)?
    else {
        return Ok(());
    };
    if c.state == "running" {
        log::warn!(
            "a container {AGENT_CONTAINER_NAME} ({}, image {}) is running, not started by this warden; stopping it",
            &c.id[..12.min(c.id.len())],
            c.image
        );
        let deadline = Duration::from_secs(stop_secs as u64);
        let t = Instant::now();
        engine
            .container_stop(&c.id, stop_secs)
            .map_err(Error::from)?;
        log::info!(
            "stopped it in {} ms (limit {deadline:?})",
            t.elapsed().as_millis()
        );
    }
    match engine.container_remove(&c.id, true, true) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Hold a wait on the container open and report its exit. After an
/// engine restart the wait ends early: look again.
fn watch(
    engine: Engine,
    run: u64,
    id: String,
    pending: Option<crate::engine::PendingWait>,
    tx: Sender<Event>,
) {
    let _ = std::thread::Builder::new()
        .name("docker-wait".into())
        .spawn(move || {
            let mut pending = pending;
            let ended = loop {
                let p = match pending.take() {
                    Some(p) => Ok(p),
                    None => engine.begin_wait(&id, WaitCondition::NotRunning),
                };
                match p.and_then(|p| p.finish(None)) {
                    Ok(exit) => {
                        if let Some(m) = exit.error_message() {
                            log::warn!("docker: the agent's container: {m}");
                        }
                        break Ended::Code(exit.status_code as i32);
                    }
                    Err(e) if e.is_not_found() => {
                        log::error!("docker: the agent's container is gone");
                        break Ended::Signal(nix::sys::signal::Signal::SIGKILL as i32);
                    }
                    Err(e) => {
                        log::warn!("docker: waiting for the agent's container: {e}; again in 1s");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            };
            let _ = tx.send(Event::Agent(AgentEvent::Exited { run, ended }));
        });
}

/// Forward the container's output (from `since`, else all of it).
fn follow(engine: Engine, run: u64, id: String, since: Option<i64>, tx: Sender<Event>) {
    let opts = LogOptions {
        follow: true,
        since,
        ..LogOptions::default()
    };
    let label = id[..12.min(id.len())].to_string();
    match engine.logs(&id, &opts) {
        Ok(stream) => output::forward(run, label, Lines::new(stream), tx),
        Err(e) => {
            log::warn!("docker: cannot follow the agent's output: {e}");
        }
    }
}

/// A log stream as bytes, one line after the other.
struct Lines {
    stream: LogStream,
    buf: Vec<u8>,
    pos: usize,
}

impl Lines {
    fn new(stream: LogStream) -> Lines {
        Lines {
            stream,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for Lines {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.stream.next() {
                None => return Ok(0),
                Some(Err(EngineError::Io { source, .. })) => return Err(source),
                Some(Err(e)) => return Err(io::Error::other(e.to_string())),
                Some(Ok(line)) => {
                    self.buf.clear();
                    self.buf.extend_from_slice(line.text.as_bytes());
                    self.buf.push(b'\n');
                    self.pos = 0;
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
