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

use serde_json::Value;

use crate::config::Config;
use crate::error::EcsErrorName;
use crate::http::Request;
use crate::source::Source;
use crate::update::journal::Origin;
use crate::update::request::{self, Params};

/// Body size cap for control requests.
pub const MAX_BODY: usize = 64 * 1024;

/// What a caller asks of the running warden.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The status document.
    Status,
    /// Stop the agent gracefully, then the warden.
    Stop,
    /// Stage (and, when `perform`, perform) a resolved update.
    Update(request::Request),
    /// Roll back to the previous build.
    Rollback { keep_data: bool },
    /// A request refused before it reached the machine: recorded for
    /// status, answered with the error.
    Refuse(ApiError),
    /// The agent's stage call (`StageUpdate`).
    AgentStage {
        location: Source,
        signature: String,
        version: Option<String>,
    },
    /// The agent's perform call (`PerformUpdate`).
    AgentPerform { signature: String },
    /// What a connection thread learned from the agent, for the cache.
    Observe(Observation),
    /// Replace the program image with the installed binary, keeping the agent.
    Reexec,
}

/// Facts about the agent and its host seen outside the main loop.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    pub container_instance_arn: Option<String>,
    pub cluster: Option<String>,
    pub docker_version: Option<String>,
}

/// An error answer: HTTP status, error name (`__type`), message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: u16,
    pub name: String,
    pub message: String,
}

impl ApiError {
    pub fn ecs(name: EcsErrorName, message: impl Into<String>) -> ApiError {
        ApiError {
            status: name.http_status(),
            name: name.as_str().to_string(),
            message: message.into(),
        }
    }

    pub fn new(status: u16, name: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            name: name.to_string(),
            message: message.into(),
        }
    }

    pub fn body(&self) -> Value {
        serde_json::json!({"__type": self.name, "message": self.message})
    }
}

impl From<crate::error::Error> for ApiError {
    fn from(e: crate::error::Error) -> ApiError {
        match e {
            crate::error::Error::Ecs { name, message } => ApiError::ecs(name, message),
            other => ApiError::ecs(EcsErrorName::ServerException, other.to_string()),
        }
    }
}

/// What the main loop answers.
pub type Reply = Result<Value, ApiError>;

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
        Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{} is not allowed on {}", req.method, req.path),
        ))
    } else {
        Err(ApiError::new(
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
