//! `sample-agent`: a stand-in for the Amazon ECS container agent, used by
//! ecs-warden's tests, demo and benchmarks (never shipped).
//!
//! It serves the agent's introspection API on loopback, runs sample tasks
//! that outlive it (docker containers or detached processes), keeps its
//! identity in a data dir, reports a version stamped into its own binary, and
//! misbehaves on demand (see `--help` and `fault.rs`).
//!
//! `main` only parses, sets up logging, dispatches, and maps an error to an
//! exit code.

#![forbid(unsafe_code)]

mod agent;
mod cli;
mod config;
mod docker;
mod durable;
mod error;
mod fault;
mod ids;
mod introspection;
mod process;
mod state;
mod tasks;
mod update;
mod version;

use std::io::Write;

use cli::Command;
use error::Result;

fn main() {
    let command = match cli::parse(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => fail(&e),
    };
    Logger::install();
    if let Err(e) = run(command) {
        fail(&e);
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Help => {
            print!("{}", cli::HELP);
            Ok(())
        }
        Command::Version => {
            println!("{}", version::Build::of_self()?.banner());
            Ok(())
        }
        Command::Stamp(request) => version::stamp(&request),
        Command::TaskProcess {
            detach: true,
            task_arn,
            name,
        } => process::detach(&task_arn, &name),
        Command::TaskProcess { detach: false, .. } => process::run_task(),
        Command::Serve => {
            let config = config::Config::from_env()?;
            let build = version::Build::of_self()?;
            agent::run(config, build)
        }
    }
}

fn fail(e: &error::Error) -> ! {
    let _ = writeln!(std::io::stderr(), "sample-agent: {e}");
    std::process::exit(e.exit_code());
}

/// Plain lines on stderr (a supervisor or journald adds the time stamps).
///
/// Write errors are ignored rather than panicking as `eprintln!` does: a
/// supervisor that closed our stderr must not be able to crash the agent.
struct Logger;

impl Logger {
    fn install() {
        static LOGGER: Logger = Logger;
        if log::set_logger(&LOGGER).is_ok() {
            log::set_max_level(log::LevelFilter::Info);
        }
    }
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::Level::Info && metadata.target().starts_with("sample_agent")
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        let _ = match record.level() {
            log::Level::Info => writeln!(stderr, "sample-agent: {}", record.args()),
            log::Level::Warn => writeln!(stderr, "sample-agent: warning: {}", record.args()),
            _ => writeln!(stderr, "sample-agent: error: {}", record.args()),
        };
    }

    fn flush(&self) {}
}
