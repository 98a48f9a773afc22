//! A synchronous client for the Docker Engine API on its unix socket: what
//! the Docker runtime needs to load, tag, run, wait for, stop and remove the
//! agent's image and container. No `docker` CLI, no async runtime.
//!
//! Using it:
//! 1. `Engine::connect(socket, timeout)` asks `GET /version` and settles on
//!    an API version: the engine's newest, capped at `MAX_API`, refused
//!    below `MIN_API` or below the engine's own minimum. Every later path
//!    is `/v1.NN/...`. The caller picks the socket
//!    (`socket_from_docker_host` turns a `DOCKER_HOST` value into one).
//! 2. Each call opens its own connection and has a deadline: the client's
//!    `timeout`, or the caller's for `image_load` and `container_stop`
//!    (the engine answers a stop only after the container's grace period).
//! 3. Calls that block by design have no deadline once the engine's answer
//!    has begun: `container_wait` (the engine sends the head at once and the
//!    body when the container exits, possibly days later) and following
//!    logs. Both can be cut short from another thread with a `Canceller`.
//! 4. An engine error answer becomes `EngineError::Api` with its status and
//!    message; `load`'s `errorDetail` becomes `EngineError::Failed`.
//!
//! The client holds no connection and no state beyond the negotiated
//! version, so it is cheap to clone onto worker threads.

mod error;
mod logs;
mod types;
mod wire;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use error::EngineError;
pub use logs::{LogLine, Stream, MAX_LINE};
pub use types::{
    ContainerConfig, ContainerCreate, ContainerInspect, ContainerState, ContainerSummary, Created,
    HostConfig, ImageConfig, ImageDeleted, ImageInspect, ImageSummary, LogConfig, RestartPolicy,
    Version, WaitError, WaitExit,
};

use logs::LogReader;
use types::{ApiMessage, LoadMessage};
use wire::{Body, Conn};

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// The engine's default socket.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// Oldest API version used: 1.30 is where `wait` answers its head at once
/// and reports `Error` (Docker 17.06).
pub const MIN_API: ApiVersion = ApiVersion {
    major: 1,
    minor: 30,
};
/// Newest API version asked for (Docker 27). Newer engines speak it too;
/// Docker 29 accepts nothing below 1.44, so the cap must not be lower.
pub const MAX_API: ApiVersion = ApiVersion {
    major: 1,
    minor: 47,
};

/// Error answers and JSON documents larger than this are refused.
const MAX_DOC: u64 = 16 * 1024 * 1024;

/// An Engine API version, `1.41`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (a, b) = s.trim().split_once('.')?;
        Some(ApiVersion {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The socket a `DOCKER_HOST` value names: unset or empty means the
/// default socket; only `unix://` is supported.
pub fn socket_from_docker_host(docker_host: Option<&str>) -> Result<PathBuf, String> {
    match docker_host.map(str::trim) {
        None | Some("") => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(h) => match h.strip_prefix("unix://") {
            Some(p) if p.starts_with('/') => Ok(PathBuf::from(p)),
            Some(_) => Err(format!(
                "DOCKER_HOST={h}: the socket path must be absolute (unix:///path)"
            )),
            None => Err(format!(
                "DOCKER_HOST={h}: only unix:// sockets are supported (unix:///var/run/docker.sock)"
            )),
        },
    }
}

/// What `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    /// Returns at once for a container that is not running.
    NotRunning,
    /// The next exit, even of a container not started yet: register the
    /// wait before `start` to never miss a quick exit.
    NextExit,
    /// Also waits for the container's removal.
    Removed,
}

impl WaitCondition {
    fn as_str(self) -> &'static str {
        match self {
            WaitCondition::NotRunning => "not-running",
            WaitCondition::NextExit => "next-exit",
            WaitCondition::Removed => "removed",
        }
    }
}

/// Which logs to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// The last N lines; `None` for all.
    pub tail: Option<usize>,
    /// Keep reading until the container stops.
    pub follow: bool,
    /// Only lines since this time (seconds since the epoch).
    pub since: Option<i64>,
    /// Prefix each line with the engine's RFC 3339 time stamp.
    pub timestamps: bool,
}

/// What `image_load` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    /// `repo:tag` names, or `sha256:` IDs for untagged images, as the
    /// engine announced them.
    pub images: Vec<String>,
}

/// What `run_to_completion` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub status_code: i64,
    pub output: Vec<LogLine>,
}

/// Ends a blocked `wait` or log follow from another thread: the blocked
/// call returns an error.
#[derive(Debug)]
pub struct Canceller(UnixStream);

impl Canceller {
    pub fn cancel(&self) {
        let _ = self.0.shutdown(Shutdown::Both);
    }
}

/// A `wait` whose head the engine has answered; `finish` blocks for the exit.
pub struct PendingWait {
    resp: wire::Response,
    object: String,
}

impl PendingWait {
    pub fn canceller(&self) -> Result<Canceller> {
        self.resp
            .body
            .shutdown_handle()
            .map(Canceller)
            .map_err(|e| EngineError::io("wait for container", &self.object, e))
    }

    /// Block until the container exits (or `deadline`, when given).
    pub fn finish(mut self, deadline: Option<Instant>) -> Result<WaitExit> {
        self.resp.body.set_deadline(deadline);
        let body = self
            .resp
            .read_body(MAX_DOC)
            .map_err(|e| EngineError::io("wait for container", &self.object, e))?;
        serde_json::from_slice(&body).map_err(|e| {
            EngineError::protocol(
                "wait for container",
                &self.object,
                format!("{e}: {}", String::from_utf8_lossy(&body)),
            )
        })
    }
}

/// Lines of a container's output; see `Engine::logs`.
pub struct LogStream {
    reader: LogReader<wire::BodyReader>,
    object: String,
}

impl LogStream {
    pub fn canceller(&self) -> Result<Canceller> {
        self.reader
            .get_ref()
            .shutdown_handle()
            .map(Canceller)
            .map_err(|e| EngineError::io("read logs of container", &self.object, e))
    }
}

impl Iterator for LogStream {
    type Item = Result<LogLine>;

    fn next(&mut self) -> Option<Self::Item> {
        self.reader
            .next()
            .map(|r| r.map_err(|e| EngineError::io("read logs of container", &self.object, e)))
    }
}

/// The client. See the module comment.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
    timeout: Duration,
    api: ApiVersion,
    server: Version,
}

impl Engine {
    /// Ask the engine on `socket` for its version and settle on the API
    /// version. `timeout` bounds every ordinary call.
    pub fn connect(socket: impl Into<PathBuf>, timeout: Duration) -> Result<Engine> {
        let socket = socket.into();
        let op = "ask version";
        let deadline = Some(Instant::now() + timeout);
        let conn = Conn::connect(&socket, deadline).map_err(|source| EngineError::Connect {
            op: op.into(),
            socket: socket.clone(),
            source,
        })?;
        let resp = wire::call(conn, "GET", "/version", None, Body::Empty)
            .map_err(|e| EngineError::io(op, "", e))?;
        let server: Version = read_ok_json(resp, op, "")?;
        let unsupported = |message: String| EngineError::Unsupported {
            socket: socket.clone(),
            message,
        };
        let newest = ApiVersion::parse(&server.api_version).ok_or_else(|| {
            unsupported(format!(
                "engine {} reports API version {:?}, which is not a version",
                server.version, server.api_version
            ))
        })?;
        let api = newest.min(MAX_API);
        if api < MIN_API {
            return Err(unsupported(format!(
                "engine {} speaks API {newest}; ecs-warden needs at least {MIN_API} (Docker 17.06)",
                server.version
            )));
        }
        if let Some(oldest) = ApiVersion::parse(&server.min_api_version) {
            if api < oldest {
                return Err(unsupported(format!(
                    "engine {} accepts API {oldest} and newer; ecs-warden speaks up to {MAX_API}",
                    server.version
                )));
            }
        }
        Ok(Engine {
            socket,
            timeout,
            api,
            server,
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The API version in use.
    pub fn api_version(&self) -> ApiVersion {
        self.api
    }

    /// The engine's version as of `connect` (`.version` is what
    /// `versionInfo.dockerVersion` reports).
    pub fn server_version(&self) -> &Version {
        &self.server
    }

    /// `GET /_ping`.
    pub fn ping(&self) -> Result<()> {
        let mut resp = self.call("ping", "", "GET", "/_ping", None, Body::Empty, None)?;
        let _ = resp.read_body(1024);
        Ok(())
    }

    /// `GET /version`, asked again.
    pub fn version(&self) -> Result<Version> {
        let resp = self.call(
            "ask version",
            "",
            "GET",
            "/version",
            None,
            Body::Empty,
            None,
        )?;
        read_ok_json(resp, "ask version", "")
    }

    // ---- images ----

    /// `GET /images/{reference}/json`; `None` when the engine has no such image.
    pub fn image_inspect(&self, reference: &str) -> Result<Option<ImageInspect>> {
        let op = "inspect image";
        let path = format!("/images/{}/json", image_ref(op, reference)?);
        match self.call(op, reference, "GET", &path, None, Body::Empty, None) {
            Ok(resp) => read_ok_json(resp, op, reference).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `POST /images/{source}/tag`: give `source` the name `target`
    /// (`repo[:tag]`, `latest` when no tag), moving the name if another
    /// image had it.
    pub fn image_tag(&self, source: &str, target: &str) -> Result<()> {
        let op = "tag image";
        let object = format!("{source} as {target}");
        let (repo, tag) = split_tag(target);
        let path = format!(
            "/images/{}/tag?repo={}&tag={}",
            image_ref(op, source)?,
            query(repo),
            query(tag)
        );
        let mut resp = self.call(op, &object, "POST", &path, None, Body::Empty, None)?;
        let _ = resp.read_body(MAX_DOC);
        Ok(())
    }

    /// `DELETE /images/{reference}`: untag, and delete when no name is
    /// left. `force` also removes an image that stopped containers use.
    /// 404 when absent, 409 when a container uses it (see `EngineError`).
    pub fn image_remove(&self, reference: &str, force: bool) -> Result<Vec<ImageDeleted>> {
        let op = "remove image";
        let path = format!(
            "/images/{}?force={}&noprune=0",
            image_ref(op, reference)?,
            flag(force)
        );
        let resp = self.call(op, reference, "DELETE", &path, None, Body::Empty, None)?;
        read_ok_json(resp, op, reference)
    }

    /// `GET /images/json`, only those matching `reference` when given
    /// (`amazon/amazon-ecs-agent` matches every tag of it).
    pub fn images(&self, reference: Option<&str>) -> Result<Vec<ImageSummary>> {
        let op = "list images";
        let mut path = "/images/json".to_string();
        if let Some(r) = reference {
            path.push_str(&format!("?filters={}", filters(&[("reference", r)])));
        }
        let resp = self.call(
            op,
            reference.unwrap_or(""),
            "GET",
            &path,
            None,
            Body::Empty,
            None,
        )?;
        read_ok_json(resp, op, reference.unwrap_or(""))
    }

    /// `POST /images/load`, streaming `tarball` from disk as the body (its
    /// size as `Content-Length`; never held in memory). `timeout` bounds
    /// the whole call. An `errorDetail` in the engine's progress stream is
    /// an error.
    pub fn image_load(&self, tarball: &Path, timeout: Duration) -> Result<Loaded> {
        let op = "load image from";
        let object = tarball.display().to_string();
        let mut f = File::open(tarball).map_err(|e| EngineError::io(op, &object, e))?;
        let len = f
            .metadata()
            .map_err(|e| EngineError::io(op, &object, e))?
            .len();
        let deadline = Some(Instant::now() + timeout);
        let resp = self.call(
            op,
            &object,
            "POST",
            "/images/load?quiet=1",
            Some("application/x-tar"),
            Body::File(&mut f, len),
            deadline,
        )?;
        let mut loaded = Loaded::default();
        let body = BufReader::new(resp.body.take(MAX_DOC));
        for msg in serde_json::Deserializer::from_reader(body).into_iter::<LoadMessage>() {
            let msg = msg.map_err(|e| {
                if e.is_io() {
                    EngineError::io(op, &object, e.into())
                } else {
                    EngineError::protocol(op, &object, e.to_string())
                }
            })?;
            if let Some(message) = msg
                .error_detail
                .map(|d| d.message)
                .filter(|m| !m.is_empty())
                .or(msg.error)
            {
                return Err(EngineError::Failed {
                    op: op.into(),
                    object,
                    message,
                });
            }
            if let Some(s) = msg.stream {
                for line in s.lines() {
                    if let Some(name) = line
                        .strip_prefix("Loaded image: ")
                        .or_else(|| line.strip_prefix("Loaded image ID: "))
                    {
                        loaded.images.push(name.trim().to_string());
                    }
                }
            }
        }
        Ok(loaded)
    }

    // ---- containers ----

    /// `POST /containers/create?name=NAME`. 409 when the name is taken,
    /// 404 when the image is missing.
    pub fn container_create(&self, name: &str, body: &ContainerCreate) -> Result<Created> {
        let op = "create container";
        let json = serde_json::to_vec(body)
            .map_err(|e| EngineError::protocol(op, name, format!("serialize the body: {e}")))?;
        let path = format!("/containers/create?name={}", query(name));
        let resp = self.call(
            op,
            name,
            "POST",
            &path,
            Some("application/json"),
            Body::Json(json),
            None,
        )?;
        read_ok_json(resp, op, name)
    }

    /// `POST /containers/{id}/start`; false when it was already running.
    pub fn container_start(&self, id: &str) -> Result<bool> {
        let op = "start container";
        let path = format!("/containers/{}/start", segment(op, id)?);
        let mut resp = self.call(op, id, "POST", &path, None, Body::Empty, None)?;
        let _ = resp.read_body(MAX_DOC);
        Ok(resp.status != 304)
    }

    /// `POST /containers/{id}/wait`: block until the container exits, with
    /// no deadline. Run it on a worker thread.
    pub fn container_wait(&self, id: &str, condition: WaitCondition) -> Result<WaitExit> {
        self.begin_wait(id, condition)?.finish(None)
    }

    /// Register a wait and return once the engine has answered its head
    /// (within the client's timeout), so that a missing container is an
    /// error here; `PendingWait::finish` then blocks for the exit.
    pub fn begin_wait(&self, id: &str, condition: WaitCondition) -> Result<PendingWait> {
        let op = "wait for container";
        let path = format!(
            "/containers/{}/wait?condition={}",
            segment(op, id)?,
            condition.as_str()
        );
        let mut resp = self.call(op, id, "POST", &path, None, Body::Empty, None)?;
        resp.body.clear_deadline();
        Ok(PendingWait {
            resp,
            object: id.to_string(),
        })
    }

    /// `POST /containers/{id}/stop?t=N`: SIGTERM (or the image's stop
    /// signal), SIGKILL after `grace_secs`. False when it was not running.
    pub fn container_stop(&self, id: &str, grace_secs: u32) -> Result<bool> {
        let op = "stop container";
        let path = format!("/containers/{}/stop?t={grace_secs}", segment(op, id)?);
        let deadline = Instant::now() + Duration::from_secs(grace_secs.into()) + self.timeout;
        let mut resp = self.call(op, id, "POST", &path, None, Body::Empty, Some(deadline))?;
        let _ = resp.read_body(MAX_DOC);
        Ok(resp.status != 304)
    }

    /// `POST /containers/{id}/kill?signal=SIG` (`KILL`, `TERM`, ...).
    /// 409 when it is not running.
    pub fn container_kill(&self, id: &str, signal: &str) -> Result<()> {
        let op = "kill container";
        let path = format!(
            "/containers/{}/kill?signal={}",
            segment(op, id)?,
            query(signal)
        );
        let mut resp = self.call(op, id, "POST", &path, None, Body::Empty, None)?;
        let _ = resp.read_body(MAX_DOC);
        Ok(())
    }

    /// `DELETE /containers/{id}?force=&v=`: `force` kills a running one
    /// first; `volumes` removes its anonymous volumes. 404 when absent.
    pub fn container_remove(&self, id: &str, force: bool, volumes: bool) -> Result<()> {
        let op = "remove container";
        let path = format!(
            "/containers/{}?force={}&v={}",
            segment(op, id)?,
            flag(force),
            flag(volumes)
        );
        let mut resp = self.call(op, id, "DELETE", &path, None, Body::Empty, None)?;
        let _ = resp.read_body(MAX_DOC);
        Ok(())
    }

    /// `GET /containers/{id}/json`; `None` when there is no such container.
    pub fn container_inspect(&self, id: &str) -> Result<Option<ContainerInspect>> {
        let op = "inspect container";
        let path = format!("/containers/{}/json", segment(op, id)?);
        match self.call(op, id, "GET", &path, None, Body::Empty, None) {
            Ok(resp) => read_ok_json(resp, op, id).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `GET /containers/json`: `all` includes stopped ones; each filter is
    /// `(key, value)`, e.g. `("label", "a=b")`, `("name", "ecs-agent")`.
    /// The engine's `name` filter matches substrings: use
    /// `container_by_name` for one exact name.
    pub fn containers(&self, all: bool, filter: &[(&str, &str)]) -> Result<Vec<ContainerSummary>> {
        let op = "list containers";
        let mut path = format!("/containers/json?all={}", flag(all));
        if !filter.is_empty() {
            path.push_str(&format!("&filters={}", filters(filter)));
        }
        let object = filter
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let resp = self.call(op, &object, "GET", &path, None, Body::Empty, None)?;
        read_ok_json(resp, op, &object)
    }

    /// The container named exactly `name`, running or not.
    pub fn container_by_name(&self, name: &str) -> Result<Option<ContainerSummary>> {
        let anchored = format!("^/{}$", regex_escape(name));
        Ok(self
            .containers(true, &[("name", &anchored)])?
            .into_iter()
            .find(|c| c.has_name(name)))
    }

    /// `GET /containers/{id}/logs?stdout=1&stderr=1...` as lines (the
    /// stream framing undone when the container has no TTY). With
    /// `follow`, the stream has no deadline and ends when the container
    /// stops.
    pub fn logs(&self, id: &str, opts: &LogOptions) -> Result<LogStream> {
        let op = "read logs of container";
        let tty = match self.container_inspect(id)? {
            Some(c) => c.config.tty,
            None => {
                return Err(EngineError::Api {
                    op: op.into(),
                    object: id.into(),
                    status: 404,
                    message: format!("No such container: {id}"),
                })
            }
        };
        let mut path = format!(
            "/containers/{}/logs?stdout=1&stderr=1&follow={}&timestamps={}&tail={}",
            segment(op, id)?,
            flag(opts.follow),
            flag(opts.timestamps),
            opts.tail
                .map(|n| n.to_string())
                .unwrap_or_else(|| "all".into())
        );
        if let Some(since) = opts.since {
            path.push_str(&format!("&since={since}"));
        }
        let mut resp = self.call(op, id, "GET", &path, None, Body::Empty, None)?;
        if opts.follow {
            resp.body.clear_deadline();
        }
        Ok(LogStream {
            reader: LogReader::new(resp.body, tty),
            object: id.to_string(),
        })
    }

    /// The last `lines` lines of a container's output.
    pub fn logs_tail(&self, id: &str, lines: usize) -> Result<Vec<LogLine>> {
        self.logs(
            id,
            &LogOptions {
                tail: Some(lines),
                ..Default::default()
            },
        )?
        .collect()
    }

    /// Create, start and wait for a throw-away container named `name`, and
    /// return its exit code and output; the container is removed whatever
    /// happens. After `timeout` it is killed. For one-shot probes such as
    /// asking an image's entrypoint for its version.
    pub fn run_to_completion(
        &self,
        name: &str,
        body: &ContainerCreate,
        timeout: Duration,
    ) -> Result<RunOutput> {
        let created = self.container_create(name, body)?;
        let result = (|| {
            let deadline = Instant::now() + timeout;
            let pending = self.begin_wait(&created.id, WaitCondition::NextExit)?;
            self.container_start(&created.id)?;
            let exit = match pending.finish(Some(deadline)) {
                Ok(exit) => exit,
                Err(e) if e.is_timeout() => {
                    let _ = self.container_kill(&created.id, "KILL");
                    return Err(EngineError::Timeout {
                        op: "run container".into(),
                        object: name.into(),
                    });
                }
                Err(e) => return Err(e),
            };
            let output = self
                .logs(&created.id, &LogOptions::default())?
                .collect::<Result<Vec<_>>>()?;
            Ok(RunOutput {
                status_code: exit.status_code,
                output,
            })
        })();
        let removed = self.container_remove(&created.id, true, true);
        let out = result?;
        removed?;
        Ok(out)
    }

    // ---- plumbing ----

    /// One call: connect, send, read the head; an error status becomes
    /// `EngineError::Api`. `deadline` defaults to now + the client's timeout.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        op: &str,
        object: &str,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Body<'_>,
        deadline: Option<Instant>,
    ) -> Result<wire::Response> {
        let deadline = deadline.unwrap_or_else(|| Instant::now() + self.timeout);
        let conn =
            Conn::connect(&self.socket, Some(deadline)).map_err(|source| EngineError::Connect {
                op: format!("{op} {object}").trim_end().to_string(),
                socket: self.socket.clone(),
                source,
            })?;
        let full = format!("/v{}{path}", self.api);
        let mut resp = wire::call(conn, method, &full, content_type, body)
            .map_err(|e| EngineError::io(op, object, e))?;
        if resp.status >= 400 || resp.status < 200 {
            let raw = resp.read_body(64 * 1024).unwrap_or_default();
            let message = serde_json::from_slice::<ApiMessage>(&raw)
                .ok()
                .map(|m| m.message)
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| {
                    let text = String::from_utf8_lossy(&raw).trim().to_string();
                    if text.is_empty() {
                        format!("status {}", resp.status)
                    } else {
                        text
                    }
                });
            return Err(EngineError::Api {
                op: op.into(),
                object: object.into(),
                status: resp.status,
                message,
            });
        }
        Ok(resp)
    }
}

fn read_ok_json<T: serde::de::DeserializeOwned>(
    mut resp: wire::Response,
    op: &str,
    object: &str,
) -> Result<T> {
    if resp.status >= 400 {
        return Err(EngineError::protocol(
            op,
            object,
            format!("status {}", resp.status),
        ));
    }
    let body = resp
        .read_body(MAX_DOC)
        .map_err(|e| EngineError::io(op, object, e))?;
    serde_json::from_slice(&body).map_err(|e| {
        let text = String::from_utf8_lossy(&body);
        let shown: String = text.chars().take(200).collect();
        EngineError::protocol(op, object, format!("{e} in {shown:?}"))
    })
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// `repo[:tag]` → (repo, tag); a colon inside the registry's host:port is
/// not a tag separator.
fn split_tag(reference: &str) -> (&str, &str) {
    match reference.rfind(':') {
        Some(i) if !reference[i + 1..].contains('/') => (&reference[..i], &reference[i + 1..]),
        _ => (reference, "latest"),
    }
}

/// A container ID or name as a path segment: the engine's names are
/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, so nothing needs escaping and anything
/// else is refused.
fn segment<'a>(op: &str, id: &'a str) -> Result<&'a str> {
    let ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(id)
    } else {
        Err(EngineError::protocol(
            op,
            id,
            "not a container name or ID (letters, digits, '_', '.', '-')",
        ))
    }
}

/// An image reference in a path: the engine routes `/images/{name:.*}`, so
/// `/`, `:` and `@` stay as they are; characters no reference has are
/// refused.
fn image_ref<'a>(op: &str, reference: &'a str) -> Result<&'a str> {
    let ok = !reference.is_empty()
        && !reference.starts_with('/')
        && reference
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-/:@".contains(&b));
    if ok {
        Ok(reference)
    } else {
        Err(EngineError::protocol(
            op,
            reference,
            "not an image reference",
        ))
    }
}

/// Percent-encode a query value.
fn query(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The engine's `filters` parameter: `{"key":["value",...]}`, encoded.
fn filters(pairs: &[(&str, &str)]) -> String {
    let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k).or_default().push(v);
    }
    query(&serde_json::to_string(&map).unwrap_or_default())
}

/// Escape a name for the engine's regular-expression name filter.
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_values() {
        assert_eq!(
            socket_from_docker_host(None).unwrap(),
            PathBuf::from("/var/run/docker.sock")
        );
        assert_eq!(
            socket_from_docker_host(Some("")).unwrap(),
            PathBuf::from("/var/run/docker.sock")
        );
        assert_eq!(
            socket_from_docker_host(Some("unix:///tmp/d/docker.sock")).unwrap(),
            PathBuf::from("/tmp/d/docker.sock")
        );
        let e = socket_from_docker_host(Some("tcp://127.0.0.1:2375")).unwrap_err();
        assert!(e.contains("only unix://"), "{e}");
        assert!(socket_from_docker_host(Some("unix://rel.sock")).is_err());
    }

    #[test]
    fn api_versions_order_and_parse() {
        assert_eq!(
            ApiVersion::parse("1.41"),
            Some(ApiVersion {
                major: 1,
                minor: 41
            })
        );
        assert!(ApiVersion::parse("1.9").unwrap() < ApiVersion::parse("1.10").unwrap());
        assert_eq!(ApiVersion::parse("x"), None);
        assert_eq!(MAX_API.to_string(), "1.47");
    }

    #[test]
    fn tags_paths_and_filters() {
        assert_eq!(
            split_tag("amazon/amazon-ecs-agent:latest"),
            ("amazon/amazon-ecs-agent", "latest")
        );
        assert_eq!(
            split_tag("localhost:5000/agent"),
            ("localhost:5000/agent", "latest")
        );
        assert_eq!(
            split_tag("localhost:5000/agent:v2"),
            ("localhost:5000/agent", "v2")
        );
        assert!(segment("op", "ecs-agent").is_ok());
        assert!(segment("op", "../etc").is_err());
        assert!(segment("op", "a?b").is_err());
        assert!(image_ref("op", "amazon/amazon-ecs-agent:latest").is_ok());
        assert!(image_ref("op", "sha256:0d3b").is_ok());
        assert!(image_ref("op", "a b").is_err());
        assert_eq!(
            filters(&[("name", "^/ecs-agent$"), ("label", "a=b")]),
            query(r#"{"label":["a=b"],"name":["^/ecs-agent$"]}"#)
        );
        assert_eq!(regex_escape("ecs.agent"), "ecs\\.agent");
    }
}
