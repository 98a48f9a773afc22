//! Injected faults: the ways a build of the sample agent can misbehave on
//! purpose, so the supervisor's failure paths can be exercised for real.
//!
//! A fault comes from `SAMPLE_AGENT_FAULT` or from the stamp trailer of the
//! binary; [`effective`] decides which one applies to this run.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    None,
    /// Abort (SIGABRT) at start, before serving.
    Crash,
    /// Exit with this code right after serving starts (after
    /// `SAMPLE_AGENT_EXIT_AFTER`).
    Exit(i32),
    /// Serve, but never register: `ContainerInstanceArn` is `""`.
    Unhealthy,
    /// Leave the tasks adopted from a previous run out of `/v1/tasks`.
    DropTasks,
    /// Ignore SIGTERM, so only SIGKILL stops the agent.
    IgnoreSigterm,
    /// Sleep this long before binding the port.
    SlowStart(Duration),
}

impl FromStr for Fault {
    type Err = String;

    fn from_str(s: &str) -> Result<Fault, String> {
        let fault = match s {
            "none" | "" => Fault::None,
            "crash" => Fault::Crash,
            "unhealthy" => Fault::Unhealthy,
            "drop-tasks" => Fault::DropTasks,
            "ignore-sigterm" => Fault::IgnoreSigterm,
            _ => {
                if let Some(code) = s.strip_prefix("exit:") {
                    let code = code
                        .parse::<u8>()
                        .map_err(|_| format!("exit code in {s:?} must be 0..=255"))?;
                    Fault::Exit(i32::from(code))
                } else if let Some(duration) = s.strip_prefix("slow-start:") {
                    let duration = humantime::parse_duration(duration)
                        .map_err(|e| format!("duration in {s:?}: {e}"))?;
                    Fault::SlowStart(duration)
                } else {
                    return Err(format!(
                        "unknown fault {s:?} (expected none, crash, exit:N, unhealthy, \
                         drop-tasks, ignore-sigterm or slow-start:DURATION)"
                    ));
                }
            }
        };
        Ok(fault)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::None => write!(f, "none"),
            Fault::Crash => write!(f, "crash"),
            Fault::Exit(code) => write!(f, "exit:{code}"),
            Fault::Unhealthy => write!(f, "unhealthy"),
            Fault::DropTasks => write!(f, "drop-tasks"),
            Fault::IgnoreSigterm => write!(f, "ignore-sigterm"),
            Fault::SlowStart(d) => write!(f, "slow-start:{}", humantime::format_duration(*d)),
        }
    }
}

/// The fault for this run.
///
/// `SAMPLE_AGENT_FAULT` wins over the stamped fault, but only when it applies
/// to this build: with `SAMPLE_AGENT_FAULT_VERSION` set, only a binary of
/// exactly that version takes the env fault (so one environment can make only
/// the new build fail). The stamped fault belongs to the build and always
/// applies unless the env fault overrides it.
pub fn effective(
    env: Option<&Fault>,
    env_version: Option<&str>,
    stamped: Option<&Fault>,
    version: &str,
) -> Fault {
    let env_applies = env_version.is_none_or(|v| v == version);
    match (env, stamped) {
        (Some(env), _) if env_applies => env.clone(),
        (_, Some(stamped)) => stamped.clone(),
        _ => Fault::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for s in [
            "none",
            "crash",
            "exit:3",
            "unhealthy",
            "drop-tasks",
            "ignore-sigterm",
            "slow-start:200ms",
        ] {
            assert_eq!(s.parse::<Fault>().unwrap().to_string(), s);
        }
        assert!("exit:256".parse::<Fault>().is_err());
        assert!("explode".parse::<Fault>().is_err());
    }

    #[test]
    fn env_fault_is_gated_by_version() {
        let crash = Fault::Crash;
        let unhealthy = Fault::Unhealthy;
        assert_eq!(effective(Some(&crash), None, None, "1.0.0"), Fault::Crash);
        assert_eq!(
            effective(Some(&crash), Some("2.0.0"), None, "1.0.0"),
            Fault::None
        );
        assert_eq!(
            effective(Some(&crash), Some("2.0.0"), None, "2.0.0"),
            Fault::Crash
        );
        assert_eq!(
            effective(Some(&crash), None, Some(&unhealthy), "1.0.0"),
            Fault::Crash
        );
        assert_eq!(
            effective(Some(&crash), Some("9.9.9"), Some(&unhealthy), "1.0.0"),
            Fault::Unhealthy
        );
    }
}
