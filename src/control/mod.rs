//! The control API: typed actions, their routes, and the error shape.
//!
//! Requests arrive on the unix socket (`run/ecs-warden/control.sock`,
//! mode 0600) as small JSON-over-HTTP calls. `route` turns `(method, path,
//! body)` into an `Action`; the server hands the action to the main loop
//! (the one owner of state) and writes back its `Reply`. Adding an
//! operation is one line in `ROUTES` plus one arm where the main loop
//! answers it.

pub mod client;
pub mod server;

use crate::config::Config;
use crate::error::{ApiError, EcsErrorName};
use crate::event::Action;
use crate::http::Request;
use crate::update::journal::Origin;
use crate::update::request::{self, Params};

/// Body size cap for control requests.
pub const MAX_BODY: usize = 64 * 1024;

/// Parses a request into its action. Runs on the connection's thread, so
/// it may take its time (fetching a manifest) without holding anyone up.
type Parse = fn(&Request, &Config) -> Result<Action, ApiError>;

/// The route table: `(method, path, parse)`.
const ROUTES: &[(&str, &str, Parse)] = &[
    ("POST", "/v1/stop", |_, _| Ok(Action::Stop)),
    ("POST", "/v1/reexec", |_, _| Ok(Action::Reexec)),
    ("POST", "/v1/agent/stage", agent_stage),
    ("POST", "/v1/agent/perform", |r, c| {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct P {
            signature: String,
        }
        let p: P = json_body(r)?;
        request::updates_enabled(c)?;
        Ok(Action::AgentPerform {
            signature: signature(&p.signature)?,
        })
    }),
    ("POST", "/v1/update", |r, c| update(r, c, true)),
    ("POST", "/v1/stage", |r, c| update(r, c, false)),
    ("POST", "/v1/rollback", |r, c| {
        #[derive(serde::Deserialize, Default)]
        #[serde(deny_unknown_fields, rename_all = "camelCase")]
        struct P {
            #[serde(default)]
            keep_data: bool,
        }
        let p: P = json_body(r)?;
        request::updates_enabled(c)?;
        Ok(Action::Rollback {
            keep_data: p.keep_data,
        })
    }),
];

fn signature(s: &str) -> Result<String, ApiError> {
    if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(ApiError::ecs(
            EcsErrorName::InvalidParameterException,
            format!("signature must be a SHA-256 in 64 hex digits, not {s:?}"),
        ))
    }
}

fn agent_stage(req: &Request, cfg: &Config) -> Result<Action, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct P {
        location: String,
        signature: String,
        #[serde(default)]
        version: Option<String>,
    }
    let p: P = json_body(req)?;
    request::updates_enabled(cfg)?;
    let invalid = |m: String| ApiError::ecs(EcsErrorName::InvalidParameterException, m);
    let location = crate::source::checked(&p.location, cfg.update.allow_http)
        .map_err(|m| invalid(format!("location {}: {m}", p.location)))?;
    let version = match p.version.filter(|v| !v.is_empty()) {
        Some(v) => Some(
            crate::store::parse_version(&v)
                .map_err(|m| invalid(format!("version: {m}")))?
                .to_string(),
        ),
        None => None,
    };
    Ok(Action::AgentStage {
        location,
        signature: signature(&p.signature)?,
        version,
    })
}

fn update(req: &Request, cfg: &Config, perform: bool) -> Result<Action, ApiError> {
    let params: Params = json_body(req)?;
    Ok(match request::resolve(cfg, &params, Origin::Cli, perform) {
        Ok(r) => Action::Update(r),
        Err(e) => Action::Refuse(e),
    })
}

/// Match a request to its action.
pub fn route(req: &Request, cfg: &Config) -> Result<Action, ApiError> {
    let mut path_known = false;
    for (method, path, parse) in ROUTES {
        if *path == req.path {
            path_known = true;
            if *method == req.method {
                return parse(req, cfg);
            }
        }
    }
    if path_known {
        Err(ApiError::protocol(
            405,
            "MethodNotAllowed",
            format!("{} is not allowed on {}", req.method, req.path),
        ))
    } else {
        Err(ApiError::protocol(
            404,
            "NotFound",
            format!("no such control endpoint: {} {}", req.method, req.path),
        ))
    }
}

/// Parse a JSON body into `T`, with the ECS error for bad input.
pub fn json_body<T: serde::de::DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let body: &[u8] = if req.body.is_empty() {
        b"{}"
    } else {
        &req.body
    };
    serde_json::from_slice(body).map_err(|e| {
        ApiError::ecs(
            EcsErrorName::InvalidParameterException,
            format!("invalid request body: {e}"),
        )
    })
}
