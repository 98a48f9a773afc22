//! The HTTP surface: the real agent's introspection endpoints and the
//! sample-only control endpoints under `/sample/`.
//!
//! A request is matched on (method, path) into an [`Action`] here; the agent
//! loop, which owns the state, performs it and answers with [`reply`].
//! Errors are answered as `{"error": "..."}` with the status they carry.
//! Unknown paths are 404, known paths with the wrong method 405.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;

use serde::Serialize;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::error::{Error, Result};

/// What a request asks for, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /v1/metadata`
    Metadata,
    /// `GET /v1/tasks[?taskarn=ARN | ?dockerid=ID]`
    Tasks(TaskFilter),
    /// `POST /sample/tasks?family=NAME&containers=N&revision=R`
    StartTask {
        family: String,
        containers: usize,
        revision: u32,
    },
    /// `POST /sample/tasks/stop?taskarn=ARN`
    StopTask { arn: String },
    /// `POST /sample/tasks/refresh`
    RefreshTasks,
    /// `POST /sample/exit?code=N`
    Exit { code: i32 },
    /// `POST /sample/unhealthy`
    Unhealthy,
    /// `POST /sample/request-update?location=URL&signature=HEX[&version=V]`
    RequestUpdate(UpdateParams),
    /// `POST /sample/stage-local?file=PATH`
    StageLocal { file: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskFilter {
    All,
    Arn(String),
    DockerId(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateParams {
    pub location: String,
    /// Passed through unchecked: the warden is the one that must validate it.
    pub signature: String,
    pub version: Option<String>,
}

/// An answer other than 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    allow: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            allow: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(404, message)
    }

    pub fn internal(e: &Error) -> ApiError {
        ApiError::new(500, e.to_string())
    }
}

/// Binds the loopback listener and wraps it in a tiny_http server.
pub fn listen(addr: SocketAddr) -> Result<(Server, SocketAddr)> {
    let bind_error = |source| Error::Bind {
        addr: addr.to_string(),
        source,
    };
    let listener = TcpListener::bind(addr).map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    let server = Server::from_listener(listener, None).map_err(|e| Error::Bind {
        addr: addr.to_string(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok((server, local))
}

/// Matches a request line to an [`Action`].
pub fn route(method: &Method, url: &str) -> std::result::Result<Action, ApiError> {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let (expected, allow) = match path {
        "/v1/metadata" | "/v1/tasks" => (Method::Get, "GET"),
        "/sample/tasks"
        | "/sample/tasks/stop"
        | "/sample/tasks/refresh"
        | "/sample/exit"
        | "/sample/unhealthy"
        | "/sample/request-update"
        | "/sample/stage-local" => (Method::Post, "POST"),
        _ => return Err(ApiError::not_found(format!("no such endpoint: {path}"))),
    };
    if *method != expected {
        return Err(ApiError {
            allow: Some(allow),
            ..ApiError::new(405, format!("{path} accepts {allow} only"))
        });
    }
    let query = Query::parse(query)?;
    let action = match path {
        "/v1/metadata" => Action::Metadata,
        "/v1/tasks" => match (query.get("taskarn")?, query.get("dockerid")?) {
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "give either taskarn or dockerid, not both",
                ))
            }
            (Some(arn), None) => Action::Tasks(TaskFilter::Arn(arn)),
            (None, Some(id)) => Action::Tasks(TaskFilter::DockerId(id)),
            (None, None) => Action::Tasks(TaskFilter::All),
        },
        "/sample/tasks" => {
            let family = query.get("family")?.unwrap_or_else(|| "sleeper".into());
            let valid = family.len() <= 255
                && family
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !valid {
                return Err(ApiError::bad_request(format!(
                    "family {family:?} must be 1 to 255 letters, digits, - or _"
                )));
            }
            Action::StartTask {
                family,
                containers: query.number("containers", 1, 1..=10)?,
                revision: query.number("revision", 1, 1..=1_000_000)?,
            }
        }
        "/sample/tasks/stop" => Action::StopTask {
            arn: query.require("taskarn")?,
        },
        "/sample/tasks/refresh" => Action::RefreshTasks,
        "/sample/exit" => Action::Exit {
            code: query.number("code", 0, 0..=255)?,
        },
        "/sample/unhealthy" => Action::Unhealthy,
        "/sample/request-update" => Action::RequestUpdate(UpdateParams {
            location: query.require("location")?,
            signature: query.require("signature")?,
            version: query.get("version")?,
        }),
        "/sample/stage-local" => Action::StageLocal {
            file: PathBuf::from(query.require("file")?),
        },
        _ => unreachable!("every path matched above has an action"),
    };
    Ok(action)
}

/// Decoded query parameters; a repeated name keeps its last value.
struct Query(HashMap<String, String>);

impl Query {
    fn parse(query: &str) -> std::result::Result<Query, ApiError> {
        let mut map = HashMap::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(decode(name)?, decode(value)?);
        }
        Ok(Query(map))
    }

    /// A parameter that, when given, must not be empty.
    fn get(&self, name: &str) -> std::result::Result<Option<String>, ApiError> {
        match self.0.get(name) {
            Some(v) if v.is_empty() => Err(ApiError::bad_request(format!(
                "query parameter {name} is empty"
            ))),
            other => Ok(other.cloned()),
        }
    }

    fn require(&self, name: &str) -> std::result::Result<String, ApiError> {
        self.get(name)?
            .ok_or_else(|| ApiError::bad_request(format!("query parameter {name} is required")))
    }

    fn number<T>(
        &self,
        name: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> std::result::Result<T, ApiError>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        let Some(raw) = self.get(name)? else {
            return Ok(default);
        };
        match raw.parse::<T>() {
            Ok(n) if range.contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(format!(
                "query parameter {name}={raw:?} must be a number from {} to {}",
                range.start(),
                range.end()
            ))),
        }
    }
}

/// Percent-decoding, with `+` as a space (form encoding, as `curl -G
/// --data-urlencode` and Go's `url.Values` produce).
fn decode(s: &str) -> std::result::Result<String, ApiError> {
    let bad = || ApiError::bad_request(format!("bad percent-encoding in {s:?}"));
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or_else(bad)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Answers with a JSON body. A client that went away is not our problem.
pub fn reply(request: Request, status: u16, body: &impl Serialize) {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let response = Response::from_data(bytes)
        .with_status_code(status)
        .with_header(json_header());
    let _ = request.respond(response);
}

pub fn reply_error(request: Request, error: &ApiError) {
    let body = serde_json::json!({ "error": error.message });
    let mut response = Response::from_data(serde_json::to_vec(&body).unwrap_or_default())
        .with_status_code(error.status)
        .with_header(json_header());
    if let Some(allow) = error.allow {
        if let Ok(header) = Header::from_bytes("Allow", allow) {
            response.add_header(header);
        }
    }
    let _ = request.respond(response);
}

fn json_header() -> Header {
    Header::from_bytes("Content-Type", "application/json").expect("a valid static header")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(route(&Method::Get, "/v1/metadata"), Ok(Action::Metadata));
        assert_eq!(
            route(&Method::Get, "/v1/tasks"),
            Ok(Action::Tasks(TaskFilter::All))
        );
        assert_eq!(
            route(&Method::Get, "/v1/tasks?taskarn=arn%3Aaws%3Aecs"),
            Ok(Action::Tasks(TaskFilter::Arn("arn:aws:ecs".into())))
        );
        assert_eq!(
            route(&Method::Get, "/v1/tasks?taskarn=a&dockerid=b")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(route(&Method::Post, "/v1/tasks").unwrap_err().status, 405);
        assert_eq!(route(&Method::Get, "/sample/exit").unwrap_err().status, 405);
        assert_eq!(route(&Method::Get, "/v2/metadata").unwrap_err().status, 404);
        assert_eq!(
            route(&Method::Post, "/sample/tasks"),
            Ok(Action::StartTask {
                family: "sleeper".into(),
                containers: 1,
                revision: 1
            })
        );
        assert_eq!(
            route(&Method::Post, "/sample/tasks?containers=11")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            route(&Method::Post, "/sample/tasks?family=a/b")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            route(&Method::Post, "/sample/exit?code=42"),
            Ok(Action::Exit { code: 42 })
        );
        assert_eq!(
            route(&Method::Post, "/sample/exit?code=300")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            route(
                &Method::Post,
                "/sample/request-update?location=http%3A%2F%2Fx%2Fa+b&signature=ab"
            ),
            Ok(Action::RequestUpdate(UpdateParams {
                location: "http://x/a b".into(),
                signature: "ab".into(),
                version: None
            }))
        );
        assert_eq!(
            route(&Method::Post, "/sample/request-update?location=x")
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(
            route(&Method::Post, "/sample/stage-local?file=%zz")
                .unwrap_err()
                .status,
            400
        );
    }
}
