//! The `ecs-warden` binary: read the edge (arguments, environment), load the
//! config when the verb needs it, set up logging, run, map to an exit code.

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::Write;

use ecs_warden::cli;
use ecs_warden::commands::{self, Edge};
use ecs_warden::config::Config;
use ecs_warden::error::Error;
use ecs_warden::exit::Exit;
use ecs_warden::paths::Paths;

fn main() {
    // Words and the root as the kernel passed them: a path need not be
    // UTF-8, and `cli` says which words must be.
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    ecs_warden::failpoint::arm(
        std::env::var("ECS_WARDEN_FAILPOINT").ok(),
        std::env::var_os("ECS_WARDEN_FAILPOINT_PAUSE").map(std::path::PathBuf::from),
    );
    let handoff = std::env::var_os(ecs_warden::reexec::HANDOFF_ENV).map(std::path::PathBuf::from);
    // Not for the agent's environment, nor for a later re-exec.
    std::env::remove_var(ecs_warden::reexec::HANDOFF_ENV);
    let edge = Edge {
        notify_socket: std::env::var("NOTIFY_SOCKET").ok(),
        watchdog_usec: std::env::var("WATCHDOG_USEC").ok(),
        journal: std::env::var_os("JOURNAL_STREAM").is_some(),
        exe: std::env::current_exe().unwrap_or_else(|_| "/usr/bin/ecs-warden".into()),
        handoff,
    };
    std::process::exit(real_main(&args, std::env::var_os("ECS_WARDEN_ROOT"), &edge).code());
}

fn real_main(args: &[OsString], env_root: Option<OsString>, edge: &Edge) -> Exit {
    let cli = match cli::parse(args, env_root) {
        // The agent starts from its build directory: every path must be
        // absolute, so a relative --root is resolved here, once.
        Ok(mut c) => {
            if let Ok(abs) = std::path::absolute(&c.root) {
                c.root = abs;
            }
            c
        }
        Err(e) => {
            eprintln!("ecs-warden: {e}\n\n{}", cli::usage());
            return e.exit();
        }
    };
    let cfg = if commands::needs_config(&cli) {
        match Config::load(&Paths::new(&cli.root)) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("ecs-warden: config error: {e}; nothing was started");
                return e.exit();
            }
        }
    } else {
        None
    };
    init_logging(
        cfg.as_ref()
            .map(|c| c.log_level)
            .unwrap_or(log::LevelFilter::Info),
        edge.journal,
        Paths::new(&cli.root).init_log(),
    );
    // Config is read before logging is set up; what it accepted with a
    // warning is told now, once.
    for w in cfg.iter().flat_map(|c| &c.warnings) {
        log::warn!("config: {w}");
    }
    match commands::run(&cli, cfg.as_ref(), edge) {
        Ok(code) => code,
        Err(e) => report(e),
    }
}

fn report(e: Error) -> Exit {
    eprintln!("ecs-warden: {e}");
    // ecs-init logs the error it dies of; ECS log collectors look there.
    ecs_warden::logfile::to_file(log::Level::Error, &e.to_string());
    e.exit()
}

/// Logs go to stderr (journald under systemd) and to `log_file`, ecs-init's
/// `var/log/ecs/ecs-init.log`, in ecs-init's format (see `logfile.rs`).
fn init_logging(level: log::LevelFilter, journal: bool, log_file: std::path::PathBuf) {
    let mut b = env_logger::Builder::new();
    b.filter_level(level).target(env_logger::Target::Stderr);
    b.format(move |f, record| {
        if journal {
            writeln!(f, "<{}>{}", syslog_prio(record.level()), record.args())
        } else {
            writeln!(
                f,
                "{} ecs-warden[{}] {}: {}",
                humantime::format_rfc3339_millis(std::time::SystemTime::now()),
                std::process::id(),
                record.level(),
                record.args()
            )
        }
    });
    ecs_warden::logfile::install(b.build(), Some(log_file));
}

/// sd-daemon priority prefixes, so journald records the level.
fn syslog_prio(l: log::Level) -> u8 {
    match l {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}
