//! The CLI's side of the control socket.

use std::io;
use std::time::Duration;

use serde_json::Value;

use crate::error::{EcsErrorName, Error, Result};
use crate::http;
use crate::paths::Paths;

/// Call the running warden; map "nobody listens" to `NotRunning` and error
/// answers to their ECS names.
pub fn call(paths: &Paths, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
    let socket = paths.control_socket();
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap_or_default())
        .unwrap_or_default();
    let resp = http::unix_request(&socket, method, path, &bytes, Duration::from_secs(30)).map_err(
        |e| match e.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => Error::NotRunning {
                socket: socket.clone(),
            },
            _ => Error::Peer {
                peer: format!("control socket {}", socket.display()),
                message: e.to_string(),
            },
        },
    )?;
    let value: Value = serde_json::from_slice(&resp.body).map_err(|e| Error::Peer {
        peer: format!("control socket {}", socket.display()),
        message: format!(
            "answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&resp.body)
        ),
    })?;
    if (200..300).contains(&resp.status) {
        return Ok(value);
    }
    let name = value.get("__type").and_then(Value::as_str).unwrap_or("");
    let message = value
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    Err(match EcsErrorName::parse(name) {
        Some(name) => Error::Ecs { name, message },
        None => Error::Peer {
            peer: "ecs-warden".into(),
            message: format!("{name} (HTTP {}): {message}", resp.status),
        },
    })
}
