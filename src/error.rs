//! The crate's one error type. Every variant carries its subject (the path,
//! the URL, the key) so a message never needs guessing; `Error::exit` maps
//! each to its exit code in one place.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::exit::Exit;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// ECS error names: the wire names clients already know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EcsErrorName {
    NoUpdateAvailableException,
    MissingVersionException,
    UpdateInProgressException,
    InvalidParameterException,
    ClusterNotFoundException,
    ClientException,
    ServerException,
    /// Not an ECS name: updates are switched off on this host
    /// (`ECS_UPDATES_ENABLED=false`). ECS itself reports this as a
    /// `ClientException`; the warden keeps it distinct for tooling.
    UpdatesDisabledException,
    /// The update ran and failed; the previous build was restored.
    UpdateFailedException,
}

impl EcsErrorName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NoUpdateAvailableException => "NoUpdateAvailableException",
            Self::MissingVersionException => "MissingVersionException",
            Self::UpdateInProgressException => "UpdateInProgressException",
            Self::InvalidParameterException => "InvalidParameterException",
            Self::ClusterNotFoundException => "ClusterNotFoundException",
            Self::ClientException => "ClientException",
            Self::ServerException => "ServerException",
            Self::UpdatesDisabledException => "UpdatesDisabledException",
            Self::UpdateFailedException => "UpdateFailedException",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "NoUpdateAvailableException" => Self::NoUpdateAvailableException,
            "MissingVersionException" => Self::MissingVersionException,
            "UpdateInProgressException" => Self::UpdateInProgressException,
            "InvalidParameterException" => Self::InvalidParameterException,
            "ClusterNotFoundException" => Self::ClusterNotFoundException,
            "ClientException" => Self::ClientException,
            "ServerException" => Self::ServerException,
            "UpdatesDisabledException" => Self::UpdatesDisabledException,
            "UpdateFailedException" => Self::UpdateFailedException,
            _ => return None,
        })
    }

    pub fn exit(self) -> Exit {
        match self {
            Self::NoUpdateAvailableException => Exit::NoUpdateAvailable,
            Self::UpdateInProgressException => Exit::UpdateInProgress,
            Self::MissingVersionException => Exit::MissingVersion,
            Self::InvalidParameterException => Exit::InvalidParameter,
            Self::UpdatesDisabledException => Exit::UpdatesDisabled,
            Self::UpdateFailedException => Exit::UpdateFailed,
            Self::ClusterNotFoundException | Self::ClientException | Self::ServerException => {
                Exit::EcsError
            }
        }
    }

    /// HTTP status on the wire: 500 for server faults, 400 otherwise.
    pub fn http_status(self) -> u16 {
        match self {
            Self::ServerException => 500,
            _ => 400,
        }
    }
}

impl fmt::Display for EcsErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// A file-system or socket operation failed; `what` names the step.
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    /// A config line is malformed or a warden key has a bad value.
    Config {
        file: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    /// The command line is wrong; the message says how.
    Usage(String),
    /// Another warden holds the lock for this root.
    AlreadyRunning { lock: PathBuf, pid: Option<i32> },
    /// No warden answers on the control socket.
    NotRunning { socket: PathBuf },
    /// No usable agent build under `agents/current` and none is bundled.
    /// `current` says what is wrong with `agents/current` (None when only
    /// the bundled agent was asked for).
    NoAgent {
        current: Option<String>,
        bundled: PathBuf,
    },
    /// The running warden answered with an ECS error.
    Ecs { name: EcsErrorName, message: String },
    /// Talking to a peer (the warden, the agent, a server) failed.
    Peer { peer: String, message: String },
    /// A host tool (`iptables`, `ip`) is missing or failed; `tool` names it
    /// with its arguments, `message` says what happened.
    Tool { tool: String, message: String },
    /// Anything else, with enough words to act on.
    Other(String),
}

impl Error {
    /// `map_err` helper: `.map_err(Error::io("create directory", &path))`.
    pub fn io(what: impl Into<String>, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> Error {
        let what = what.into();
        let path = path.as_ref().to_path_buf();
        move |source| Error::Io { what, path, source }
    }

    pub fn ecs(name: EcsErrorName, message: impl Into<String>) -> Error {
        Error::Ecs {
            name,
            message: message.into(),
        }
    }

    pub fn exit(&self) -> Exit {
        match self {
            Error::Usage(_) => Exit::Usage,
            Error::Config { .. } => Exit::Config,
            Error::AlreadyRunning { .. } => Exit::AlreadyRunning,
            Error::NotRunning { .. } => Exit::NotRunning,
            Error::NoAgent { .. } => Exit::NoAgent,
            Error::Ecs { name, .. } => name.exit(),
            Error::Io { .. } | Error::Peer { .. } | Error::Tool { .. } | Error::Other(_) => {
                Exit::Failure
            }
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { what, path, source } => {
                write!(f, "{what} {}: {source}", path.display())
            }
            Error::Config {
                file,
                line,
                key,
                message,
            } => {
                if key.is_empty() {
                    write!(f, "{}:{line}: {message}", file.display())
                } else {
                    write!(f, "{}:{line}: {key}: {message}", file.display())
                }
            }
            Error::Usage(m) => write!(f, "{m}"),
            Error::AlreadyRunning { lock, pid } => match pid {
                Some(pid) => write!(
                    f,
                    "another ecs-warden (pid {pid}) is already running for this root (lock {})",
                    lock.display()
                ),
                None => write!(
                    f,
                    "another ecs-warden is already running for this root (lock {})",
                    lock.display()
                ),
            },
            Error::NotRunning { socket } => write!(
                f,
                "no ecs-warden is running for this root (nothing answers on {})",
                socket.display()
            ),
            Error::NoAgent {
                current: Some(why),
                bundled,
            } => write!(
                f,
                "{why}; and no agent is bundled at {} to install instead: place the agent there, or point agents/current at a complete build, and start again",
                bundled.display()
            ),
            Error::NoAgent {
                current: None,
                bundled,
            } => write!(f, "no agent is bundled at {}", bundled.display()),
            Error::Ecs { name, message } => write!(f, "{name}: {message}"),
            Error::Peer { peer, message } => write!(f, "{peer}: {message}"),
            Error::Tool { tool, message } => write!(f, "{tool}: {message}"),
            Error::Other(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The name of an error answer (`__type` on the wire): an ECS error name,
/// or a protocol-level one (`NotFound`, `RequestTimeout`, SigV4's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorName {
    Ecs(EcsErrorName),
    Protocol(&'static str),
}

impl ErrorName {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorName::Ecs(n) => n.as_str(),
            ErrorName::Protocol(n) => n,
        }
    }
}

impl fmt::Display for ErrorName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ErrorName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error answer of the control socket or the ECS API: HTTP status,
/// error name, message. On the wire: `{"__type": name, "message": ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub name: ErrorName,
    pub message: String,
}

/// The wire form of an `ApiError`.
#[derive(Debug, serde::Serialize)]
pub struct ApiErrorBody<'a> {
    #[serde(rename = "__type")]
    pub name: ErrorName,
    pub message: &'a str,
}

impl ApiError {
    pub fn ecs(name: EcsErrorName, message: impl Into<String>) -> ApiError {
        ApiError {
            status: name.http_status(),
            name: ErrorName::Ecs(name),
            message: message.into(),
        }
    }

    pub fn protocol(status: u16, name: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            name: ErrorName::Protocol(name),
            message: message.into(),
        }
    }

    /// The ECS error name, when it is one.
    pub fn ecs_name(&self) -> Option<EcsErrorName> {
        match self.name {
            ErrorName::Ecs(n) => Some(n),
            ErrorName::Protocol(_) => None,
        }
    }

    pub fn body(&self) -> ApiErrorBody<'_> {
        ApiErrorBody {
            name: self.name,
            message: &self.message,
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> ApiError {
        match e {
            Error::Ecs { name, message } => ApiError::ecs(name, message),
            other => ApiError::ecs(EcsErrorName::ServerException, other.to_string()),
        }
    }
}
