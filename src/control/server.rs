//! Serves the control socket. Each request is routed to an `Action`, sent
//! to the main loop with a reply channel, and answered with what comes back.
//! Nothing here touches state.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Duration;

use std::net::TcpListener;
use std::time::SystemTime;

use super::{route, MAX_BODY};
use crate::api::credentials::Credentials;
use crate::api::{ecs, sigv4, status};
use crate::config::Config;
use crate::document;
use crate::error::{ApiError, Error, Result};
use crate::event::{self, Event};
use crate::http::{self, Handler, Limits, ReadError, Request, Response};

/// Connections with a thread at once, per listener (`http` module doc): the
/// control socket serves the CLI and the agent; the TCP port, which any
/// local user can reach, gets fewer.
const CONTROL_MAX_CONNS: usize = 128;
const API_MAX_CONNS: usize = 64;
/// Requests that fetch a manifest, answered at once per listener; more wait
/// up to `http::SLOW_WAIT`, then get 503. One update runs at a time anyway.
const MAX_SLOW: usize = 8;

struct Control {
    tx: Sender<Event>,
    cfg: Config,
    /// The host's key pair; TCP requests must be signed with it.
    creds: Option<Credentials>,
}

pub fn respond<T: serde::Serialize>(reply: Result<T, ApiError>) -> Response {
    match reply {
        Ok(v) => Response::json(200, &v),
        Err(e) => Response::json(e.status, &e.body()),
    }
}

impl Handler for Control {
    fn handle(&self, req: Request) -> Response {
        if req.tcp {
            let Some(creds) = &self.creds else {
                return respond::<()>(Err(ApiError::protocol(
                    500,
                    "ServerException",
                    "no credentials",
                )));
            };
            if let Err(e) = sigv4::verify(&req, creds, SystemTime::now()) {
                log::info!(
                    "refused an unauthenticated API call: {}: {}",
                    e.name(),
                    e.message()
                );
                return respond::<()>(Err(ApiError::protocol(e.status(), e.name(), e.message())))
                    .set_header("Content-Type", ecs::CONTENT_TYPE);
            }
        }
        if req.header("X-Amz-Target").is_some() {
            return ecs::handle(&req, &self.tx, &self.cfg);
        }
        match (req.method.as_str(), req.path.as_str()) {
            ("GET", "/v1/status") => respond(status::status(&self.tx, &self.cfg)),
            ("GET", "/metrics") => match status::snapshot(&self.tx) {
                Ok(snap) => {
                    Response::new(200, "text/plain; version=0.0.4", document::metrics(&snap))
                }
                Err(e) => respond::<()>(Err(e)),
            },
            _ => respond(route(&req, &self.cfg).and_then(|action| event::ask(&self.tx, action))),
        }
    }

    fn reject(&self, err: &ReadError) -> Response {
        reject(err)
    }

    /// The requests that resolve a manifest (a network fetch of up to
    /// `fetch::probe_deadline`) before the main loop sees them.
    fn is_slow(&self, req: &Request) -> bool {
        match req.header("X-Amz-Target") {
            Some(t) => t.ends_with(".UpdateContainerAgent"),
            None => req.method == "POST" && matches!(req.path.as_str(), "/v1/update" | "/v1/stage"),
        }
    }

    fn busy(&self, why: &str) -> Response {
        let mut resp = respond::<()>(Err(ApiError::protocol(503, "ServiceUnavailable", why)));
        if self.creds.is_some() {
            resp.headers[0].1 = ecs::CONTENT_TYPE.into();
        }
        resp
    }
}

/// The answer to a request that could not be read.
pub fn reject(err: &ReadError) -> Response {
    let (status, name) = match err {
        ReadError::Timeout => (408, "RequestTimeout"),
        ReadError::BodyTooLarge { .. } => (413, "RequestEntityTooLarge"),
        ReadError::HeadTooLarge => (431, "RequestHeaderFieldsTooLarge"),
        ReadError::LengthRequired => (411, "LengthRequired"),
        _ => (400, "BadRequest"),
    };
    respond::<()>(Err(ApiError::protocol(status, name, err.to_string())))
}

/// Serve the ECS JSON API (and the control routes) on 127.0.0.1:`port`;
/// every request must be signed with `creds`.
pub fn spawn_tcp(port: u16, tx: Sender<Event>, cfg: &Config, creds: Credentials) -> Result<()> {
    let addr = format!("127.0.0.1:{port}");
    let listener = TcpListener::bind(&addr).map_err(Error::io("bind the API port", &addr))?;
    http::serve(
        "api",
        http::Listener::Tcp(listener),
        Limits {
            max_conns: API_MAX_CONNS,
            max_slow: MAX_SLOW,
            max_body: ecs::MAX_BODY,
            request_timeout: Duration::from_secs(10),
        },
        Arc::new(Control {
            tx,
            cfg: cfg.clone(),
            creds: Some(creds),
        }),
    );
    log::info!("ECS API listening on {addr} (SigV4 with the host's credentials)");
    Ok(())
}

/// Bind the control socket (mode 0600) and serve it on its own threads.
pub fn spawn(socket: &Path, tx: Sender<Event>, cfg: &Config) -> Result<()> {
    // We hold the root's lock, so any socket file here is stale.
    match fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove stale control socket", socket)(e)),
    }
    let listener = UnixListener::bind(socket).map_err(Error::io("bind control socket", socket))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o600))
        .map_err(Error::io("set mode of control socket", socket))?;
    http::serve(
        "control",
        http::Listener::Unix(listener),
        Limits {
            max_conns: CONTROL_MAX_CONNS,
            max_slow: MAX_SLOW,
            max_body: MAX_BODY,
            request_timeout: Duration::from_secs(10),
        },
        Arc::new(Control {
            tx,
            cfg: cfg.clone(),
            creds: None,
        }),
    );
    Ok(())
}
