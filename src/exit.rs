//! Exit codes: the one table every verb maps its outcome through.
//!
//! `5` is fixed by the ecs-init contract (`RestartPreventExitStatus=5`): the
//! agent asked not to be restarted. The refusals an update request can meet
//! get one code each so fleet tooling can branch without parsing text.

/// Every exit code ecs-warden uses. Documented in README.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done; for `start`, the agent exited 0 or the warden was asked to stop.
    Ok = 0,
    /// A runtime failure (I/O, spawn, an unexpected answer); the message says which.
    Failure = 1,
    /// Bad command line: unknown verb or flag, missing value.
    Usage = 2,
    /// No warden is running for this root (status, stop, update, ...).
    NotRunning = 3,
    /// The configuration is invalid; nothing was started.
    Config = 4,
    /// The agent exited 5 (terminal): do not restart (ecs-init contract).
    AgentTerminal = 5,
    /// Another warden already runs for this root.
    AlreadyRunning = 6,
    /// No agent build is installed and none is bundled.
    NoAgent = 7,
    /// `NoUpdateAvailableException`: the target is not newer than what runs.
    NoUpdateAvailable = 10,
    /// `UpdateInProgressException`: another update is in flight.
    UpdateInProgress = 11,
    /// `MissingVersionException`: the running agent's version is unknown.
    MissingVersion = 12,
    /// `InvalidParameterException`: bad version, source or argument.
    InvalidParameter = 13,
    /// Updates are disabled by `ECS_UPDATES_ENABLED=false`.
    UpdatesDisabled = 14,
    /// The update failed and was rolled back; the old build runs.
    UpdateFailed = 15,
    /// `ClusterNotFoundException`, `ClientException`, `ServerException` and
    /// other ECS errors without a more specific code.
    EcsError = 16,
}

impl Exit {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// How the agent ended: its exit code (for a container, the container's),
/// or the signal that killed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::Code(c) => write!(f, "exited with code {c}"),
            Ended::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "was killed by {sig}"),
                Err(_) => write!(f, "was killed by signal {s}"),
            },
        }
    }
}
