//! The engine client's errors. Each names the operation, the object it was
//! about (container, image, file) and, when the engine answered, its own
//! message and HTTP status, so a caller can tell "no such container" (404)
//! from "name in use" (409) without parsing words.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// Nothing answers on the socket (missing, refused, permission denied).
    Connect {
        op: String,
        socket: PathBuf,
        source: io::Error,
    },
    /// The connection broke or a file could not be read during `op`.
    Io {
        op: String,
        object: String,
        source: io::Error,
    },
    /// A read or write reached the call's deadline.
    Timeout { op: String, object: String },
    /// The engine refused the call: its HTTP status and its message.
    Api {
        op: String,
        object: String,
        status: u16,
        message: String,
    },
    /// The engine accepted the call, then reported that the operation
    /// failed (an `errorDetail` in the `load` progress stream).
    Failed {
        op: String,
        object: String,
        message: String,
    },
    /// The engine's answer could not be understood.
    Protocol {
        op: String,
        object: String,
        message: String,
    },
    /// The engine's API versions and ours do not overlap.
    Unsupported { socket: PathBuf, message: String },
}

impl EngineError {
    pub(crate) fn io(op: &str, object: &str, source: io::Error) -> EngineError {
        if source.kind() == io::ErrorKind::TimedOut {
            EngineError::Timeout {
                op: op.into(),
                object: object.into(),
            }
        } else {
            EngineError::Io {
                op: op.into(),
                object: object.into(),
                source,
            }
        }
    }

    pub(crate) fn protocol(op: &str, object: &str, message: impl Into<String>) -> EngineError {
        EngineError::Protocol {
            op: op.into(),
            object: object.into(),
            message: message.into(),
        }
    }

    /// The engine's HTTP status, when it answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            EngineError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// 404: no such container or image.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// 409: a name in use, a container not running (kill), an image in use.
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, EngineError::Timeout { .. })
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn subject(op: &str, object: &str) -> String {
            if object.is_empty() {
                op.to_string()
            } else {
                format!("{op} {object}")
            }
        }
        match self {
            EngineError::Connect { op, socket, source } => write!(
                f,
                "docker engine: {op}: cannot connect to {}: {source} (is dockerd running? DOCKER_HOST selects another socket)",
                socket.display()
            ),
            EngineError::Io { op, object, source } => {
                write!(f, "docker engine: {}: {source}", subject(op, object))
            }
            EngineError::Timeout { op, object } => write!(
                f,
                "docker engine: {}: no answer before the deadline",
                subject(op, object)
            ),
            EngineError::Api {
                op,
                object,
                status,
                message,
            } => write!(
                f,
                "docker engine: {}: {message} (HTTP {status})",
                subject(op, object)
            ),
            EngineError::Failed {
                op,
                object,
                message,
            } => write!(f, "docker engine: {}: {message}", subject(op, object)),
            EngineError::Protocol {
                op,
                object,
                message,
            } => write!(
                f,
                "docker engine: {}: unexpected answer: {message}",
                subject(op, object)
            ),
            EngineError::Unsupported { socket, message } => {
                write!(f, "docker engine at {}: {message}", socket.display())
            }
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::Connect { source, .. } | EngineError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<EngineError> for crate::error::Error {
    fn from(e: EngineError) -> Self {
        let message = e.to_string();
        crate::error::Error::Peer {
            peer: "docker engine".into(),
            message: message
                .strip_prefix("docker engine: ")
                .unwrap_or(&message)
                .to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_op_object_and_engine_words() {
        let e = EngineError::Api {
            op: "create container".into(),
            object: "ecs-agent".into(),
            status: 409,
            message: "Conflict. The container name \"/ecs-agent\" is already in use".into(),
        };
        assert!(e.is_conflict() && !e.is_not_found());
        assert_eq!(
            e.to_string(),
            "docker engine: create container ecs-agent: Conflict. The container name \"/ecs-agent\" is already in use (HTTP 409)"
        );
        let crate_err: crate::error::Error = e.into();
        assert_eq!(
            crate_err.to_string(),
            "docker engine: create container ecs-agent: Conflict. The container name \"/ecs-agent\" is already in use (HTTP 409)"
        );
        let t = EngineError::io(
            "wait for container",
            "x",
            io::Error::new(io::ErrorKind::TimedOut, "t"),
        );
        assert!(t.is_timeout());
    }
}
