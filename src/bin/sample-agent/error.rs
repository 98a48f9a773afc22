//! The one error type of the sample agent.
//!
//! Every variant carries its subject (the file, the command, the variable) so
//! a message needs no guessing. `main` maps an error to an exit code with
//! [`Error::exit_code`], in one place.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit codes, as documented in `--help`.
pub mod exit {
    /// Runtime failure (bad environment, i/o error, port in use).
    pub const FAILURE: i32 = 1;
    /// Bad command line (unknown argument, bad stamp version).
    pub const USAGE: i32 = 2;
    /// Terminal: the real agent's `ExitTerminal`, e.g. a cluster mismatch.
    pub const TERMINAL: i32 = 5;
}

#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The command line is wrong; the message says what was expected.
    Usage(String),
    /// An environment variable holds a value we cannot use.
    Env { var: &'static str, message: String },
    /// A file-system operation failed on `path`; `what` names the step.
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    /// The persisted state file exists but cannot be understood.
    CorruptState { path: PathBuf, message: String },
    /// The data dir belongs to another cluster (the real agent refuses too).
    ClusterMismatch {
        path: PathBuf,
        saved: String,
        configured: String,
    },
    /// An external command (the docker CLI) failed or timed out.
    Command { command: String, message: String },
    /// Binding the introspection listener failed.
    Bind { addr: String, source: io::Error },
    /// A call to the warden's control socket failed below HTTP.
    Control { socket: PathBuf, message: String },
    /// The SIGTERM/SIGINT handlers could not be installed.
    Signals(io::Error),
}

impl Error {
    /// Wraps an i/o error with the step and the path it concerns.
    pub fn io(what: impl Into<String>, path: &Path, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            path: path.to_path_buf(),
            source,
        }
    }

    /// Wraps a failed external command; `command` is shown as typed.
    pub fn command(command: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Command {
            command: command.into(),
            message: message.into(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => exit::USAGE,
            Error::ClusterMismatch { .. } => exit::TERMINAL,
            _ => exit::FAILURE,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(message) => write!(f, "{message}"),
            Error::Env { var, message } => write!(f, "bad {var}: {message}"),
            Error::Io { what, path, source } => {
                write!(f, "cannot {what} {}: {source}", path.display())
            }
            Error::CorruptState { path, message } => write!(
                f,
                "state file {} is unreadable: {message} (move it away to start afresh)",
                path.display()
            ),
            Error::ClusterMismatch {
                path,
                saved,
                configured,
            } => write!(
                f,
                "data mismatch: {} belongs to cluster {saved:?} but ECS_CLUSTER is {configured:?}",
                path.display()
            ),
            Error::Command { command, message } => write!(f, "`{command}` failed: {message}"),
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Control { socket, message } => {
                write!(f, "control socket {}: {message}", socket.display())
            }
            Error::Signals(source) => {
                write!(f, "cannot install the SIGTERM/SIGINT handlers: {source}")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } | Error::Bind { source, .. } | Error::Signals(source) => {
                Some(source)
            }
            _ => None,
        }
    }
}
