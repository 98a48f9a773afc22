//! Self re-exec (`ecs-warden reexec`, SIGHUP): the running warden execs a
//! different build of itself in place, keeping its PID and its agent; the
//! new image supervises that agent (restarts it when killed), the task is
//! untouched, and an update in flight carries on.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::harness::server::{Fault, Server};
use crate::harness::*;
use nix::sys::signal::Signal;

/// Install the warden binary at `<root>/usr/bin/ecs-warden` (a copy,
/// `extra` bytes appended so the bytes differ per build).
fn install_build(host: &Host, extra: &str) -> PathBuf {
    let dir = host.path("usr/bin");
    fs::create_dir_all(&dir).unwrap();
    let mut bytes = fs::read(WARDEN).unwrap();
    bytes.extend_from_slice(extra.as_bytes());
    let tmp = dir.join(".ecs-warden.new");
    fs::write(&tmp, &bytes).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).unwrap();
    let dest = dir.join("ecs-warden");
    // As rpm does: the new file replaces the old by rename.
    fs::rename(&tmp, &dest).unwrap();
    dest
}

/// Start the installed warden (not the cargo-built path).
fn start_installed(host: &mut Host, exe: &Path) {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(host.path("warden.log"))
        .unwrap();
    let child = std::process::Command::new(exe)
        .arg("--root")
        .arg(&host.root)
        .arg("start")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("ECS_WARDEN_ROOT")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    host.warden = Some(child);
}

fn exe_sha(pid: i32) -> String {
    sha256_hex(&fs::read(format!("/proc/{pid}/exe")).unwrap())
}

/// The first task the sample agent recorded: its ARN and, per container,
/// the process and its start time, each checked to be running now (a
/// recorded start time alone would not show a killed task).
fn task_identity(host: &Host) -> (String, Vec<(i32, u64)>) {
    let saved: serde_json::Value =
        serde_json::from_slice(&fs::read(host.path("var/lib/ecs/data/sample-agent.json")).unwrap())
            .unwrap();
    let t = &saved["tasks"][0];
    let procs: Vec<(i32, u64)> = t["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let pid = c["pid"].as_i64().expect("a process task's pid") as i32;
            let start = c["start_time"].as_u64().expect("its start time");
            assert_eq!(start_time(pid), Some(start), "task process {pid} runs: {c}");
            (pid, start)
        })
        .collect();
    assert!(!procs.is_empty(), "the task has containers: {t}");
    (t["arn"].as_str().unwrap().to_string(), procs)
}

#[test]
fn reexec_keeps_the_agent_and_the_task() {
    let mut host = Host::new();
    let exe = install_build(&host, "");
    start_installed(&mut host, &exe);
    host.wait_agent("1.0.0");
    host.start_task("web");
    let task_before = task_identity(&host);
    let warden = host.warden_pid();
    let agent = host.agent_pid().unwrap();
    let old_sha = exe_sha(warden);

    // A different build replaces the installed binary.
    let exe = install_build(&host, "\n# build 2\n");
    let new_sha = sha256_hex(&fs::read(&exe).unwrap());
    assert_ne!(old_sha, new_sha);
    let out = host.cli_bounded(&["reexec"]);
    assert!(
        out.status.success(),
        "reexec: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let st = host.status().expect("the new image answers");
    assert_eq!(
        st["warden"]["pid"].as_i64(),
        Some(warden as i64),
        "same warden PID"
    );
    assert_eq!(st["warden"]["execs"], 1);
    assert_eq!(
        st["supervisor"]["agentPid"].as_i64(),
        Some(agent as i64),
        "same agent"
    );
    assert_eq!(exe_sha(warden), new_sha, "the warden runs the new build");
    assert!(pid_alive(agent));
    let agents: Vec<i32> = host
        .agent_processes()
        .into_iter()
        .filter(|p| *p != warden)
        .collect();
    assert_eq!(agents, vec![agent], "exactly one agent");
    assert_eq!(task_identity(&host), task_before);
    // The agent never went away.
    assert!(host.log_lines("started agent").len() == 1, "{}", host.log());

    // The new image supervises that same child: kill it, it comes back.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(agent), Signal::SIGKILL).unwrap();
    let next = host.wait_new_agent(Some(agent), Duration::from_secs(20));
    assert_ne!(next, agent);
    let st = host.status().unwrap();
    assert_eq!(st["supervisor"]["lastExit"]["signal"], 9, "{st}");
    assert_eq!(task_identity(&host), task_before, "the task is untouched");
    let tasks = host.tasks();
    assert_eq!(tasks[0]["KnownStatus"], "RUNNING");

    // SIGHUP does the same.
    host.signal_warden(Signal::SIGHUP);
    let st = host.wait_status("a second re-exec", Duration::from_secs(20), |s| {
        s["warden"]["execs"] == 2
    });
    assert_eq!(st["supervisor"]["agentPid"].as_i64(), Some(next as i64));

    // And it still stops cleanly, with the lock it inherited.
    let out = host.cli_bounded(&["stop"]);
    assert!(
        out.status.success(),
        "stop: {} {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        host.log()
    );
    assert_eq!(host.wait_exit(Duration::from_secs(20)), 0);
}

#[test]
fn reexec_during_a_download_resumes_it() {
    let mut host = Host::builder().small().build();
    let build = host.stamp_small("1.1.0", None, &host.path("srv/ecs-agent-1.1.0"));
    let bytes = fs::read(&build).unwrap();
    let server = Server::start();
    let manifest = server.publish(&[("1.1.0", &build)]);
    // Held until the re-exec has landed, so that it lands mid-download
    // however slow the machine (a dribble could finish first).
    server.hold();
    server.script("/agents/1.1.0", &[], Fault::Hold);
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &manifest)]);
    let exe = install_build(&host, "");
    start_installed(&mut host, &exe);
    host.wait_agent("1.0.0");
    host.start_task("web");
    let task_before = task_identity(&host);
    let agent = host.agent_pid().unwrap();

    let out = host.cli_bounded(&["update", "--no-wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Past the first 1 MiB chunk, so some bytes are on disk.
    assert!(bytes.len() > 2 * 1024 * 1024, "the build is big enough");
    host.wait_status("the first MiB on disk", Duration::from_secs(20), |s| {
        s["update"]["state"] == "STAGING"
            && s["update"]["bytesDone"].as_u64().unwrap_or(0) > 3 * 512 * 1024
    });
    install_build(&host, "\n# build 2\n");
    let out = host.cli_bounded(&["reexec"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The new image adopted the running agent (the update then went on
    // and replaced it, as updates do).
    let log = host.log();
    assert!(
        log.contains(&format!("supervising agent 1.0.0 (pid {agent}) again")),
        "{log}"
    );
    assert_eq!(log.matches("started agent 1.0.0").count(), 1, "{log}");
    assert!(
        !log.contains("STAGED (staged)"),
        "the re-exec landed mid-download: {log}"
    );
    server.release();

    let end = host.wait_status("the update to end", Duration::from_secs(60), |s| {
        matches!(s["update"]["state"].as_str(), Some("UPDATED" | "FAILED"))
    });
    assert_eq!(end["update"]["state"], "UPDATED", "{end}");
    host.wait_agent("1.1.0");
    // The download resumed where it stopped instead of starting over.
    let seen = server.seen_at("/agents/1.1.0");
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen[1..].iter().any(|s| s
            .range
            .as_deref()
            .is_some_and(|r| r.starts_with("bytes=") && r != "bytes=0-")),
        "a ranged request after the re-exec: {seen:?}"
    );
    let installed = fs::read(host.path("var/lib/ecs-warden/agents/1.1.0/ecs-agent")).unwrap();
    assert_eq!(sha256_hex(&installed), sha256_hex(&bytes));
    assert_eq!(task_identity(&host), task_before, "the task is untouched");
}
