//! One function per verb. `run` is what `main` calls.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cli::{self, Cli, Command, Flags, Verb};
use crate::config::Config;
use crate::control::client;
use crate::error::{Error, Result};
use crate::exit::Exit;
use crate::host;
use crate::lock::Lock;
use crate::notify::Notifier;
use crate::paths::Paths;
use crate::status;
use crate::store::Store;
use crate::supervisor;

/// What `main` read from the process environment, once.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    pub notify_socket: Option<String>,
    pub watchdog_usec: Option<String>,
    /// Under systemd/journald: no timestamps in our log lines.
    pub journal: bool,
    /// This program's path, for `reexec`.
    pub exe: PathBuf,
    /// `$ECS_WARDEN_HANDOFF`: set when `reexec` started this image.
    pub handoff: Option<PathBuf>,
}

/// Whether a verb needs the configuration loaded (and so validated).
pub fn needs_config(cli: &Cli) -> bool {
    matches!(
        cli.command,
        Command::Run(Verb::Start | Verb::PreStart | Verb::ReloadCache, _)
    )
}

pub fn run(cli: &Cli, cfg: Option<&Config>, edge: &Edge) -> Result<Exit> {
    let paths = Paths::new(&cli.root);
    let (verb, flags) = match &cli.command {
        Command::Help(None) => {
            print!("{}", cli::usage());
            return Ok(Exit::Ok);
        }
        Command::Help(Some(v)) => {
            print!("{}", cli::verb_help(*v));
            return Ok(Exit::Ok);
        }
        Command::Run(v, f) => (*v, f),
    };
    match verb {
        Verb::Version => version(&paths, flags),
        Verb::PreStart => {
            let cfg = cfg.expect("pre-start loads the config");
            println!("{}", host::pre_start(&paths, cfg)?);
            Ok(Exit::Ok)
        }
        Verb::Start => {
            let cfg = cfg.expect("start loads the config");
            let notifier = Notifier::new(edge.notify_socket.clone(), edge.watchdog_usec.clone());
            let launch = supervisor::Launch {
                exe: edge.exe.clone(),
                handoff: edge.handoff.clone(),
            };
            supervisor::run(&paths, cfg, notifier, launch)
        }
        Verb::Stop | Verb::PreStop => stop(&paths),
        Verb::PostStop => {
            println!("{}", host::post_stop(&paths)?);
            Ok(Exit::Ok)
        }
        Verb::ReloadCache => {
            println!("{}", host::reload_cache(&paths)?);
            Ok(Exit::Ok)
        }
        Verb::Status => status(&paths, flags),
        Verb::Reexec => reexec(&paths),
        Verb::Update => update(&paths, flags, "/v1/update", true),
        Verb::Stage => update(&paths, flags, "/v1/stage", false),
        Verb::Rollback => {
            let body = json!({"keepData": flags.keep_data});
            let accepted = client::call(&paths, "POST", "/v1/rollback", Some(&body))?;
            wait_update(&paths, flags, accepted, true)
        }
    }
}

/// Ask the running warden to re-exec the installed binary; wait until the
/// new image answers.
fn reexec(paths: &Paths) -> Result<Exit> {
    let before = client::call(paths, "GET", "/v1/status", None)?;
    let execs = before["warden"]["execs"].as_u64().unwrap_or(0);
    let pid = before["warden"]["pid"].as_u64().unwrap_or(0);
    let answer = client::call(paths, "POST", "/v1/reexec", None)?;
    if answer["deferred"].as_bool() == Some(true) {
        eprintln!("an update is switching builds; the re-exec follows when it is done");
    }
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        match client::call(paths, "GET", "/v1/status", None) {
            Ok(doc) if doc["warden"]["execs"].as_u64().unwrap_or(0) > execs => {
                println!(
                    "ecs-warden re-executed (pid {}, now {} {}); agent pid {}",
                    doc["warden"]["pid"],
                    doc["warden"]["exe"].as_str().unwrap_or("?"),
                    doc["warden"]["version"].as_str().unwrap_or("?"),
                    doc["supervisor"]["agentPid"]
                );
                if doc["warden"]["pid"].as_u64().unwrap_or(0) != pid {
                    return Err(Error::Other(
                        "the warden's PID changed across the re-exec".into(),
                    ));
                }
                return Ok(Exit::Ok);
            }
            Ok(_) | Err(Error::NotRunning { .. }) | Err(Error::Peer { .. }) => {}
            Err(e) => return Err(e),
        }
        if start.elapsed() > Duration::from_secs(600) {
            return Err(Error::Other(
                "the warden did not come back from the re-exec within 10 minutes".into(),
            ));
        }
    }
}

fn update(paths: &Paths, flags: &Flags, path: &str, perform: bool) -> Result<Exit> {
    let mut body = json!({"force": flags.force});
    if let Some(v) = &flags.version {
        body["version"] = json!(v);
    }
    if let Some(s) = &flags.source {
        body["source"] = json!(s);
    }
    let accepted = client::call(paths, "POST", path, Some(&body))?;
    wait_update(paths, flags, accepted, perform)
}

/// Follow an accepted update until it ends (or is STAGED, for `stage`).
fn wait_update(paths: &Paths, flags: &Flags, accepted: Value, perform: bool) -> Result<Exit> {
    let id = accepted
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if flags.no_wait {
        print_update(&accepted, flags.json);
        return Ok(Exit::Ok);
    }
    let mut last_line = String::new();
    loop {
        let doc = match client::call(paths, "GET", "/v1/status", None) {
            Ok(d) => d,
            Err(Error::NotRunning { .. }) => {
                return Err(Error::Other(
                    "the warden stopped while the update was in flight; its next start resumes or undoes it".into(),
                ))
            }
            Err(e) => return Err(e),
        };
        let u = doc.get("update").cloned().unwrap_or(Value::Null);
        if u.get("id").and_then(Value::as_str) != Some(id.as_str()) {
            return Err(Error::Other(format!(
                "the update {id} is no longer the warden's current update"
            )));
        }
        let state = u.get("state").and_then(Value::as_str).unwrap_or("");
        if !flags.json {
            let line = status::update_line(&u);
            if line != last_line {
                eprint!("{line}");
                last_line = line;
            }
        }
        match state {
            "UPDATED" => {
                print_update(&u, flags.json);
                return Ok(Exit::Ok);
            }
            "FAILED" => {
                print_update(&u, flags.json);
                return Ok(Exit::UpdateFailed);
            }
            "STAGED" if !perform => {
                print_update(&u, flags.json);
                return Ok(Exit::Ok);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_update(u: &Value, as_json: bool) {
    if as_json {
        println!("{}", serde_json::to_string_pretty(u).unwrap_or_default());
        return;
    }
    let state = u.get("state").and_then(Value::as_str).unwrap_or("?");
    let target = u.get("target").and_then(Value::as_str).unwrap_or("?");
    match state {
        "FAILED" => {
            let e = &u["error"];
            println!(
                "update to {target} FAILED: {}: {}",
                e["name"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("?")
            );
        }
        _ => println!("update to {target}: {state}"),
    }
}

fn version(paths: &Paths, flags: &Flags) -> Result<Exit> {
    let build = Store::new(paths).current();
    if flags.json {
        println!(
            "{}",
            json!({
                "wardenVersion": env!("CARGO_PKG_VERSION"),
                "agentVersion": build.as_ref().map(|b| b.version().to_string()),
                "agentHash": build.as_ref().and_then(|b| b.artifact.git_hash.clone()),
            })
        );
    } else {
        println!("ecs-warden {}", env!("CARGO_PKG_VERSION"));
        match build {
            Some(b) => println!(
                "agent {}{}",
                b.version(),
                b.artifact
                    .git_hash
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default()
            ),
            None => println!("agent: no build installed"),
        }
    }
    Ok(Exit::Ok)
}

fn status(paths: &Paths, flags: &Flags) -> Result<Exit> {
    match client::call(paths, "GET", "/v1/status", None) {
        Ok(doc) => {
            if flags.json {
                println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else {
                print!("{}", status::human(&doc));
            }
            Ok(Exit::Ok)
        }
        Err(Error::NotRunning { socket }) => {
            if flags.json {
                println!(
                    "{}",
                    json!({"wardenRunning": false, "root": paths.root.display().to_string()})
                );
            } else {
                println!(
                    "ecs-warden is not running for root {} (nothing answers on {})",
                    paths.root.display(),
                    socket.display()
                );
            }
            Ok(Exit::NotRunning)
        }
        Err(e) => Err(e),
    }
}

fn stop(paths: &Paths) -> Result<Exit> {
    match client::call(paths, "POST", "/v1/stop", None) {
        Ok(_) => {}
        // The warden can exit before its answer is written (its agent
        // stopped at once); the lock below tells whether it is gone.
        Err(Error::Peer { .. }) => {}
        Err(Error::NotRunning { .. }) => {
            println!(
                "ecs-warden is not running for root {}",
                paths.root.display()
            );
            return Ok(Exit::Ok);
        }
        Err(e) => return Err(e),
    }
    // The warden holds its lock until its last moment; wait for it to go.
    // systemd's TimeoutStopSec bounds this from outside.
    let start = Instant::now();
    while Lock::is_held(&paths.lock()) {
        if start.elapsed() > Duration::from_secs(600) {
            return Err(Error::Other(
                "the warden did not exit within 10 minutes of the stop request".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("ecs-warden stopped");
    Ok(Exit::Ok)
}
