//! The command line, parsed before anything runs into a [`Command`].
//!
//! Parsing validates too (a stamp version, hash and fault), so a bad command
//! line fails with exit code 2 and touches nothing.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::fault::Fault;
use crate::ids;
use crate::process;
use crate::version::{self, StampRequest};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// No arguments: run the agent.
    Serve,
    Version,
    Help,
    Stamp(StampRequest),
    /// Hidden: a task process of the process runtime (see `process.rs`).
    TaskProcess {
        detach: bool,
        task_arn: String,
        name: String,
    },
}

pub const USAGE: &str = "usage: sample-agent [--version | --help | stamp VERSION OUTFILE [--hash HEX8] [--fault FAULT]]";

pub const HELP: &str = "\
sample-agent: a stand-in for the Amazon ECS container agent, for the tests,
demo and benchmarks of ecs-warden. Never shipped.

USAGE
    sample-agent                 serve the introspection API until SIGTERM/SIGINT
    sample-agent --version       print `Amazon ECS Agent - vVERSION (HASH)`
    sample-agent --help          this text
    sample-agent stamp VERSION OUTFILE [--hash HEX8] [--fault FAULT]
                                 write a copy of this binary that reports VERSION
                                 (X.Y.Z or X.Y.Z-pre), atomically, mode 0755.
                                 HASH8 defaults to the first 8 hex digits of
                                 sha256(VERSION); FAULT is baked into that build.

STAMP TRAILER
    The copy is the original binary plus one final line (at most 256 bytes):
        \\n#sample-agent-version:VERSION:HASH8:FAULT\\n   (FAULT may be empty)
    An unstamped binary is version 1.0.0 with a hash fingerprinting the file.

ENVIRONMENT (read once at start)
    ECS_WARDEN_INTROSPECTION_URL  http://HOST:PORT to serve on, loopback only
                                  (default http://127.0.0.1:51678; port 0 picks
                                  a free port, shown in the start line)
    ECS_CLUSTER                   cluster name (default `default`)
    AWS_REGION, AWS_DEFAULT_REGION  region in ARNs (default us-west-2)
    SAMPLE_AGENT_ACCOUNT          account in ARNs (default 012345678910)
    ECS_DATADIR                   data dir (default ./data); holds sample-agent.json:
                                  the instance ARN and the tasks
    SAMPLE_AGENT_FAULT            a fault (below); overrides a stamped fault
    SAMPLE_AGENT_FAULT_VERSION    apply SAMPLE_AGENT_FAULT only if this binary's
                                  version equals this
    SAMPLE_AGENT_EXIT_AFTER       delay before fault exit:N fires (e.g. 200ms, 2s)
    SAMPLE_AGENT_TASK_RUNTIME     docker | process | auto (default auto: docker if
                                  `docker version` answers within 5s)
    SAMPLE_AGENT_TASK_IMAGE       image of task containers (default
                                  ecs-warden-task:latest; never pulled)
    ECS_WARDEN_CONTROL_SOCKET     the warden's unix control socket (request-update)
    ECS_UPDATE_DOWNLOAD_DIR       where stage-local stages a build
    DOCKER_HOST                   inherited by the docker CLI

FAULTS
    none                 behave
    crash                abort (SIGABRT) at start, before serving
    exit:N               exit with code N once serving (after SAMPLE_AGENT_EXIT_AFTER)
    unhealthy            serve, but ContainerInstanceArn stays \"\" (never registers)
    drop-tasks           /v1/tasks leaves out the tasks adopted from a previous run
    ignore-sigterm       ignore SIGTERM (only SIGKILL stops it)
    slow-start:DURATION  sleep DURATION before binding the port

ENDPOINTS
    GET  /v1/metadata              {\"Cluster\", \"ContainerInstanceArn\", \"Version\"}
    GET  /v1/tasks                 {\"Tasks\": [task...]}
    GET  /v1/tasks?taskarn=ARN     one task; 404 if absent
    GET  /v1/tasks?dockerid=ID     the task holding that container (full id or a
                                   unique prefix of 12+); 404 if absent; 400 with
                                   both parameters or an ambiguous prefix
    POST /sample/tasks?family=NAME&containers=N&revision=R
                                   start a task (defaults sleeper, 1, 1); answers
                                   the task once it runs and is saved
    POST /sample/tasks/stop?taskarn=ARN    stop its containers; STOPPED
    POST /sample/tasks/refresh     re-check docker containers (one docker inspect)
    POST /sample/exit?code=N       answer, then exit N (default 0)
    POST /sample/unhealthy         behave as fault unhealthy from now on
    POST /sample/request-update?location=URL&signature=HEX[&version=V]
                                   POST /v1/agent/stage, then (if 2xx)
                                   /v1/agent/perform, to ECS_WARDEN_CONTROL_SOCKET;
                                   answers {\"stage\": STEP, \"perform\": STEP|null},
                                   STEP = {\"status\", \"body\"} or {\"error\"}
    POST /sample/stage-local?file=PATH
                                   copy PATH to ECS_UPDATE_DOWNLOAD_DIR as
                                   <random>.ecs-update.bin, write desired-image,
                                   answer, then exit 42 (as the real agent does)

TASKS
    Docker runtime: `docker run -d` of SAMPLE_AGENT_TASK_IMAGE, named
    ecs-FAMILY-REV-NAME-HEX, labelled com.amazonaws.ecs.task-arn,
    com.amazonaws.ecs.container-name and ecs-warden.sample-agent=INSTANCE_ID.
    Process runtime: a detached process in its own session. Either way, tasks
    outlive the agent (exit, crash, SIGKILL) and are re-adopted at start.
    KnownStatus is RUNNING when every container runs: process containers are
    checked on each read (pid alive with the recorded start time); docker
    containers at adoption, on start/stop, and on POST /sample/tasks/refresh.

LOG
    Lines on stderr, none while idle. At start:
        sample-agent: vVERSION (HASH) serving on HOST:PORT, instance ARN ARN
    At exit:
        sample-agent: exiting with code N (REASON)

EXIT CODES
    0 stopped by SIGTERM/SIGINT, or asked to   1 failure (bad environment, i/o)
    2 bad command line                         5 terminal: data dir of another cluster
    42 after stage-local                       N as asked by exit:N or /sample/exit
";

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command> {
    let args = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| usage(format!("argument {a:?} is not UTF-8")))
        })
        .collect::<Result<Vec<String>>>()?;
    let mut args = args.into_iter();
    let Some(first) = args.next() else {
        return Ok(Command::Serve);
    };
    let rest: Vec<String> = args.collect();
    let command = match first.as_str() {
        "--version" | "version" if rest.is_empty() => Command::Version,
        "--help" | "-h" | "help" if rest.is_empty() => Command::Help,
        "stamp" => Command::Stamp(parse_stamp(rest)?),
        process::SUBCOMMAND => parse_task_process(rest)?,
        _ => {
            let all: Vec<&str> = std::iter::once(first.as_str())
                .chain(rest.iter().map(String::as_str))
                .collect();
            return Err(usage(format!("unexpected arguments: {}", all.join(" "))));
        }
    };
    Ok(command)
}

fn parse_stamp(args: Vec<String>) -> Result<StampRequest> {
    let mut positional = Vec::new();
    let mut hash = None;
    let mut fault = None;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| {
            args.next()
                .ok_or_else(|| usage(format!("stamp: {flag} needs a value")))
        };
        match arg.as_str() {
            "--hash" => {
                let h = value("--hash")?;
                if !ids::is_lower_hex(&h, 8) {
                    return Err(usage(format!(
                        "stamp: --hash {h:?} must be 8 lowercase hex digits"
                    )));
                }
                hash = Some(h);
            }
            "--fault" => {
                let f = value("--fault")?;
                fault = Some(
                    f.parse::<Fault>()
                        .map_err(|e| usage(format!("stamp: --fault: {e}")))?,
                );
            }
            flag if flag.starts_with("--") => {
                return Err(usage(format!("stamp: unknown option {flag}")))
            }
            _ => positional.push(arg),
        }
    }
    let [version, out]: [String; 2] = positional.try_into().map_err(|p: Vec<String>| {
        usage(format!(
            "stamp takes VERSION and OUTFILE, got {} argument(s)",
            p.len()
        ))
    })?;
    version::check_version(&version).map_err(|e| usage(format!("stamp: {e}")))?;
    Ok(StampRequest {
        version,
        out: PathBuf::from(out),
        hash,
        fault,
    })
}

fn parse_task_process(args: Vec<String>) -> Result<Command> {
    let (detach, rest) = match args.split_first() {
        Some((flag, rest)) if flag == "--detach" => (true, rest),
        _ => (false, &args[..]),
    };
    match rest {
        [task_arn, name] => Ok(Command::TaskProcess {
            detach,
            task_arn: task_arn.clone(),
            name: name.clone(),
        }),
        _ => Err(usage(format!(
            "{} [--detach] TASK_ARN NAME",
            process::SUBCOMMAND
        ))),
    }
}

fn usage(message: String) -> Error {
    Error::Usage(format!("{message}\n{USAGE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn commands() {
        assert_eq!(parse_strs(&[]).unwrap(), Command::Serve);
        assert_eq!(parse_strs(&["--version"]).unwrap(), Command::Version);
        assert_eq!(parse_strs(&["--help"]).unwrap(), Command::Help);
        assert_eq!(
            parse_strs(&["stamp", "1.2.3", "out", "--fault", "exit:3"]).unwrap(),
            Command::Stamp(StampRequest {
                version: "1.2.3".into(),
                out: "out".into(),
                hash: None,
                fault: Some(Fault::Exit(3)),
            })
        );
        for bad in [
            &["--bogus"][..],
            &["--version", "x"],
            &["stamp", "1.2", "out"],
            &["stamp", "1.2.3"],
            &["stamp", "1.2.3", "out", "--hash", "xyz"],
            &["stamp", "1.2.3", "out", "--fault", "boom"],
            &["stamp", "1.2.3", "out", "--what"],
        ] {
            let err = parse_strs(bad).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad:?}");
        }
    }
}
