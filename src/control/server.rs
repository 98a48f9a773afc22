//! Serves the control socket. Each request is routed to an `Action`, sent
//! to the main loop with a reply channel, and answered with what comes back.
//! Nothing here touches state.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

use super::{route, Action, ApiError, Reply, MAX_BODY};
use crate::config::Config;
use crate::error::{EcsErrorName, Error, Result};
use crate::http::{self, Handler, Limits, ReadError, Request, Response};
use crate::supervisor::Event;

/// How long a handler waits for the main loop's answer.
const MAIN_LOOP_TIMEOUT: Duration = Duration::from_secs(10);

struct Control {
    tx: Sender<Event>,
    cfg: Config,
}

/// Ask the main loop and wait for its reply.
pub fn ask(tx: &Sender<Event>, action: Action) -> Reply {
    let (rtx, rrx) = mpsc::channel();
    tx.send(Event::Control(action, rtx))
        .map_err(|_| ApiError::ecs(EcsErrorName::ServerException, "the warden is shutting down"))?;
    rrx.recv_timeout(MAIN_LOOP_TIMEOUT).unwrap_or_else(|_| {
        Err(ApiError::ecs(
            EcsErrorName::ServerException,
            "the warden's main loop did not answer in time",
        ))
    })
}

pub fn respond(reply: Reply) -> Response {
    match reply {
        Ok(v) => Response::json(200, &v),
        Err(e) => Response::json(e.status, &e.body()),
    }
}

impl Handler for Control {
    fn handle(&self, req: Request) -> Response {
        respond(route(&req, &self.cfg).and_then(|action| ask(&self.tx, action)))
    }

    fn reject(&self, err: &ReadError) -> Response {
        reject(err)
    }
}

/// The answer to a request that could not be read.
pub fn reject(err: &ReadError) -> Response {
    let (status, name) = match err {
        ReadError::Timeout => (408, "RequestTimeout"),
        ReadError::BodyTooLarge { .. } => (413, "RequestEntityTooLarge"),
        ReadError::HeadTooLarge => (431, "RequestHeaderFieldsTooLarge"),
        _ => (400, "BadRequest"),
    };
    respond(Err(ApiError::new(status, name, err.to_string())))
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
            max_conns: 64,
            max_body: MAX_BODY,
            request_timeout: Duration::from_secs(10),
        },
        Arc::new(Control {
            tx,
            cfg: cfg.clone(),
        }),
    );
    Ok(())
}
