//! The supervisor through the real binaries: the ecs-init exit-code
//! contract, restart backoff (growth, cap, reset), graceful and forced
//! stops that signal only the agent's PID, one warden per root, and the
//! agent a SIGKILLed warden leaves behind.
//!
//! Timing is asserted from the warden's own log (its timestamps and the
//! delays it announces) and its status document, with wide margins, never
//! from tight wall-clock windows.

use std::fs;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::*;

const T: Duration = Duration::from_secs(20);

/// When a warden log line was written (its RFC 3339 prefix).
fn logged_at(line: &str) -> SystemTime {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    humantime::parse_rfc3339(stamp).unwrap_or_else(|e| panic!("no time stamp in {line:?}: {e}"))
}

fn ms_between(a: &str, b: &str) -> f64 {
    logged_at(b)
        .duration_since(logged_at(a))
        .unwrap_or_default()
        .as_secs_f64()
        * 1000.0
}

/// The announced delays of "restarting the agent in D (failure N in a
/// row)" lines: (N, D in ms, the line).
fn restart_lines(host: &Host) -> Vec<(u32, f64, String)> {
    host.log_lines("restarting the agent in ")
        .into_iter()
        .map(|l| {
            let rest = l.split("restarting the agent in ").nth(1).unwrap();
            let (delay, rest) = rest.split_once(" (failure ").unwrap();
            let n = rest.split_whitespace().next().unwrap().parse().unwrap();
            let ms = parse_humantime_ms(delay).unwrap_or_else(|| panic!("delay in {l:?}"));
            (n, ms, l.clone())
        })
        .collect()
}

/// The "started agent V (pid N)" line for `pid`.
fn started_line(host: &Host, pid: i32) -> String {
    host.log_lines(&format!("started agent 1.0.0 (pid {pid})"))
        .pop()
        .unwrap_or_else(|| panic!("no start line for pid {pid}:\n{}", host.log()))
}

fn sample_exit(host: &Host, code: i32) {
    host.post(&format!("/sample/exit?code={code}"))
        .unwrap_or_else(|e| panic!("POST /sample/exit?code={code}: {e}"));
}

fn kill_pid(pid: i32, sig: Signal) {
    kill(Pid::from_raw(pid), sig).unwrap_or_else(|e| panic!("kill {pid} {sig}: {e}"));
}

fn wait_gone(pid: i32, what: &str) {
    wait_for(what, T, || (!pid_alive(pid)).then_some(()));
}

fn started(host: &mut Host) -> i32 {
    host.start();
    host.wait_new_agent(None, T)
}

// ---------------------------------------------------------------------------
// The exit-code contract.

#[test]
fn agent_exit_0_stops_the_warden_with_0() {
    let mut host = Host::new();
    let pid = started(&mut host);
    sample_exit(&host, 0);
    assert_eq!(host.wait_exit(T), 0, "log:\n{}", host.log());
    wait_gone(pid, "the agent to be gone");
    let log = host.log();
    assert!(
        log.contains(&format!("agent 1.0.0 (pid {pid}) exited with code 0 after")),
        "{log}"
    );
    assert_eq!(host.log_lines("started agent").len(), 1, "not restarted");
    assert!(host.agent_processes().is_empty());
    assert!(!host.path("run/ecs-warden/control.sock").exists());
}

#[test]
fn agent_exit_5_is_terminal() {
    let mut host = Host::new();
    let pid = started(&mut host);
    sample_exit(&host, 5);
    assert_eq!(host.wait_exit(T), 5, "log:\n{}", host.log());
    let log = host.log();
    assert!(
        log.contains(&format!(
            "agent 1.0.0 (pid {pid}) exited with code 5 (terminal)"
        )),
        "{log}"
    );
    assert_eq!(host.log_lines("started agent").len(), 1, "not restarted");
    assert!(host.agent_processes().is_empty());
}

#[test]
fn a_cluster_mismatch_is_terminal_too() {
    // The sample agent, like the real one, exits 5 when its data dir
    // belongs to another cluster: the warden must not crash-loop it.
    let mut host = Host::new();
    started(&mut host);
    let out = host.cli_bounded(&["stop"]);
    assert!(out.status.success(), "stop: {out:?}\nlog:\n{}", host.log());
    assert_eq!(host.wait_exit(T), 0);
    host.write_config(&[("ECS_CLUSTER", "another-cluster")]);
    host.start();
    assert_eq!(host.wait_exit(T), 5, "log:\n{}", host.log());
    assert_eq!(host.log_lines("started agent").len(), 2, "not restarted");
    assert!(host.log().contains("exited with code 5 (terminal)"));
    assert!(host.agent_processes().is_empty());
}

#[test]
fn agent_exit_42_without_a_staged_update_restarts_at_once() {
    let mut host = Host::new();
    // A backoff far longer than the test waits: a restart within it is
    // not a backoff restart.
    host.write_config(&[
        ("ECS_WARDEN_RESTART_BACKOFF_MIN", "30s"),
        ("ECS_WARDEN_RESTART_BACKOFF_MAX", "30s"),
    ]);
    let pid = started(&mut host);
    assert!(!host.path("var/cache/ecs/desired-image").exists());
    sample_exit(&host, 42);
    let new = host.wait_new_agent(Some(pid), Duration::from_secs(10));
    assert_ne!(new, pid);
    let log = host.log();
    assert!(
        log.contains(&format!(
            "agent 1.0.0 (pid {pid}) exited with code 42: update requested"
        )),
        "{log}"
    );
    assert!(
        log.contains("no update is staged (no /var/cache/ecs/desired-image); restarting the agent"),
        "{log}"
    );
    assert!(restart_lines(&host).is_empty(), "no backoff: {log}");
    let st = host.status().unwrap();
    assert_eq!(st["supervisor"]["consecutiveFailures"], 0);
    assert_eq!(st["supervisor"]["restarts"], 1);
    assert_eq!(st["supervisor"]["lastExit"]["code"], 42);
}

#[test]
fn agent_exit_2_logs_its_last_lines_then_restarts() {
    let mut host = Host::new();
    let pid = started(&mut host);
    sample_exit(&host, 2);
    let new = host.wait_new_agent(Some(pid), T);
    let log = host.wait_log(&format!("lines of agent (pid {pid}) output:"), T);
    assert!(
        log.contains(&format!("agent 1.0.0 (pid {pid}) exited with code 2 after")),
        "{log}"
    );
    // The block: a header, then the agent's own lines, its last one last.
    let lines: Vec<&str> = log.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.contains(&format!("lines of agent (pid {pid}) output:")))
        .unwrap();
    let block: Vec<&str> = lines[header + 1..]
        .iter()
        .take_while(|l| l.contains(" ERROR:   | "))
        .map(|l| l.split(" ERROR:   | ").nth(1).unwrap())
        .collect();
    assert!(
        block
            .first()
            .is_some_and(|l| l.contains("v1.0.0") && l.contains("serving on")),
        "the block starts with the agent's start line: {block:?}"
    );
    assert!(
        block
            .last()
            .is_some_and(|l| l.contains("exiting with code 2")),
        "the block ends with the agent's last line: {block:?}"
    );
    // Then the restart.
    let start = lines
        .iter()
        .position(|l| l.contains(&format!("started agent 1.0.0 (pid {new})")))
        .unwrap();
    assert!(
        header < start,
        "the last lines come before the restart:\n{log}"
    );
}

#[test]
fn other_exit_codes_restart_with_backoff() {
    let mut host = Host::new();
    let mut pid = started(&mut host);
    for (i, code) in [1, 77].into_iter().enumerate() {
        sample_exit(&host, code);
        let new = host.wait_new_agent(Some(pid), T);
        let log = host.log();
        assert!(
            log.contains(&format!(
                "agent 1.0.0 (pid {pid}) exited with code {code} after"
            )),
            "{log}"
        );
        let restarts = restart_lines(&host);
        assert_eq!(restarts.len(), i + 1, "{log}");
        let (n, _, _) = restarts[i];
        assert_eq!(n, i as u32 + 1, "failures count up: {log}");
        let st = host.status().unwrap();
        assert_eq!(st["supervisor"]["lastExit"]["code"], code);
        assert_eq!(st["supervisor"]["restarts"], i as u64 + 1);
        assert_eq!(st["supervisor"]["consecutiveFailures"], i as u64 + 1);
        pid = new;
    }
}

#[test]
fn death_by_a_signal_restarts_with_backoff() {
    let mut host = Host::new();
    let pid = started(&mut host);
    kill_pid(pid, Signal::SIGKILL);
    let new = host.wait_new_agent(Some(pid), T);
    let log = host.log();
    assert!(
        log.contains(&format!(
            "agent 1.0.0 (pid {pid}) was killed by SIGKILL after"
        )),
        "{log}"
    );
    let restarts = restart_lines(&host);
    assert_eq!(restarts.len(), 1, "{log}");
    assert_eq!(restarts[0].0, 1);
    let st = host.status().unwrap();
    assert_eq!(st["supervisor"]["lastExit"]["signal"], 9);
    assert_eq!(st["supervisor"]["lastExit"]["code"], Value::Null);
    assert_eq!(st["supervisor"]["agentPid"], new);
    assert_eq!(st["supervisor"]["consecutiveFailures"], 1);
}

// ---------------------------------------------------------------------------
// Backoff.

/// 50 ms doubling to 400 ms (the harness's config), ±10 % jitter.
fn base_ms(failure: u32) -> f64 {
    (50.0 * f64::from(1u32 << (failure - 1).min(10))).min(400.0)
}

#[test]
fn backoff_grows_to_the_cap_while_the_agent_keeps_failing() {
    let mut host = Host::new();
    host.write_config(&[
        ("SAMPLE_AGENT_FAULT", "exit:1"),
        ("SAMPLE_AGENT_EXIT_AFTER", "20ms"),
        ("ECS_WARDEN_RESTART_STABLE", "30s"),
    ]);
    host.start();
    let want = 7;
    // One restart more than checked: the start after each checked restart
    // is then in the log (it comes before the next restart's line).
    wait_for("8 restarts after failures", T, || {
        (restart_lines(&host).len() > want).then_some(())
    });
    let st = host.status().unwrap();
    let sup = &st["supervisor"];
    let failures = sup["consecutiveFailures"].as_u64().unwrap() as u32;
    assert!(failures >= want as u32, "{sup}");
    assert_eq!(sup["backoffMs"], base_ms(failures) as u64, "{sup}");
    assert!(
        sup["restarts"].as_u64().unwrap() >= want as u64 - 1,
        "{sup}"
    );
    assert_eq!(sup["lastExit"]["code"], 1, "{sup}");

    let restarts = restart_lines(&host);
    let lines: Vec<String> = host.log().lines().map(str::to_string).collect();
    let mut prev = 0.0;
    for (i, (n, ms, line)) in restarts.iter().take(want).enumerate() {
        let n = *n;
        assert_eq!(n, i as u32 + 1, "consecutive failures count up: {line}");
        let base = base_ms(n);
        // The announced delay is jittered ±10 %, never above the cap, and
        // truncated to whole milliseconds.
        assert!(
            *ms >= base * 0.9 - 1.0 && *ms <= (base * 1.1).min(400.0),
            "failure {n}: {ms} ms for a base of {base} ms: {line}"
        );
        if base < 400.0 {
            assert!(*ms > prev, "delays grow until the cap: {restarts:?}");
        } else {
            assert!(*ms >= 360.0 - 1.0, "at the cap: {line}");
        }
        prev = *ms;
        // And the warden really waited that long before the next start.
        let at = lines.iter().position(|l| l == line).unwrap();
        let next = lines[at..]
            .iter()
            .find(|l| l.contains("started agent"))
            .unwrap_or_else(|| panic!("no start after {line:?}:\n{}", host.log()));
        let waited = ms_between(line, next);
        assert!(
            waited + 2.0 >= *ms,
            "waited {waited} ms, announced {ms} ms: {line}"
        );
    }
}

#[test]
fn backoff_resets_after_a_stable_run() {
    let mut host = Host::new();
    host.write_config(&[("ECS_WARDEN_RESTART_STABLE", "2500ms")]);
    let mut pid = started(&mut host);
    // Three quick failures, driven by the test.
    for n in 1..=3u64 {
        sample_exit(&host, 1);
        pid = host.wait_new_agent(Some(pid), T);
        let st = host.status().unwrap();
        assert_eq!(st["supervisor"]["consecutiveFailures"], n, "{st}");
        assert_eq!(st["supervisor"]["backoffMs"], base_ms(n as u32) as u64);
    }
    assert!(host.log_lines("restart backoff reset").is_empty());
    // Now the agent runs; after RESTART_STABLE the counter resets.
    let st = host.wait_status("the backoff to reset", T, |s| {
        s["supervisor"]["consecutiveFailures"] == 0
    });
    assert_eq!(st["supervisor"]["backoffMs"], 0);
    assert_eq!(st["supervisor"]["agentPid"], pid, "the same run");
    let reset = host
        .log_lines("restart backoff reset")
        .pop()
        .expect("the reset is logged");
    let ran = ms_between(&started_line(&host, pid), &reset);
    assert!(
        ran >= 2490.0,
        "reset after {ran} ms of a 2500 ms stable run"
    );
    // The next failure starts again from the minimum.
    sample_exit(&host, 1);
    host.wait_new_agent(Some(pid), T);
    let (n, ms, line) = restart_lines(&host).pop().unwrap();
    assert_eq!(n, 1, "{line}");
    assert!(ms <= 55.0, "{line}");
}

// ---------------------------------------------------------------------------
// Stopping.

/// The pid of the first process container the sample agent recorded.
fn task_pid(host: &Host) -> (i32, u64) {
    let v: Value =
        serde_json::from_slice(&fs::read(host.path("var/lib/ecs/data/sample-agent.json")).unwrap())
            .unwrap();
    let c = &v["tasks"][0]["containers"][0];
    (
        c["pid"].as_i64().expect("a process task") as i32,
        c["start_time"].as_u64().unwrap(),
    )
}

#[test]
fn sigterm_to_the_warden_stops_only_the_agent() {
    let mut host = Host::new();
    let pid = started(&mut host);
    let task = host.start_task("web");
    let arn = task["Arn"].as_str().unwrap().to_string();
    let (tpid, tstart) = task_pid(&host);
    assert!(pid_alive(tpid));

    host.signal_warden(Signal::SIGTERM);
    assert_eq!(host.wait_exit(T), 0, "log:\n{}", host.log());
    let log = host.log();
    assert!(log.contains("received SIGTERM; stopping"), "{log}");
    assert!(
        log.contains(&format!("sending SIGTERM to agent 1.0.0 (pid {pid})")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "agent 1.0.0 (pid {pid}) exited with code 0; stopped"
        )),
        "the agent exits 0 on SIGTERM: {log}"
    );
    assert!(!log.contains("SIGKILL"), "{log}");
    wait_gone(pid, "the agent to be gone");
    assert!(!host.path("run/ecs-warden/control.sock").exists());
    assert!(!port_open(host.port));
    assert!(pid_alive(tpid), "the task process survives the stop");
    assert_eq!(start_time(tpid), Some(tstart), "the same task process");

    // The next warden's agent finds it still running.
    let pid2 = started(&mut host);
    assert_ne!(pid, pid2);
    let tasks = host.tasks();
    let t = tasks.iter().find(|t| t["Arn"] == arn.as_str()).unwrap();
    assert_eq!(t["KnownStatus"], "RUNNING", "{t}");
}

#[test]
fn sigkill_follows_when_the_agent_ignores_sigterm() {
    let mut host = Host::new();
    host.write_config(&[
        ("SAMPLE_AGENT_FAULT", "ignore-sigterm"),
        ("ECS_WARDEN_STOP_TIMEOUT", "600ms"),
    ]);
    let pid = started(&mut host);
    let t0 = Instant::now();
    host.signal_warden(Signal::SIGTERM);
    assert_eq!(host.wait_exit(T), 0, "log:\n{}", host.log());
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(550),
        "the agent got its stop timeout: {took:?}"
    );
    assert!(
        took <= Duration::from_millis(600) + Duration::from_secs(4),
        "SIGKILL came within the timeout plus a margin: {took:?}"
    );
    wait_gone(pid, "the agent to be gone");
    let log = host.log();
    assert!(log.contains("ignoring SIGTERM"), "{log}");
    let kill_line = host
        .log_lines(&format!(
            "did not exit within 600ms; sending SIGKILL to pid {pid}"
        ))
        .pop()
        .unwrap_or_else(|| panic!("the SIGKILL is logged:\n{log}"));
    let term_line = host
        .log_lines(&format!("sending SIGTERM to agent 1.0.0 (pid {pid})"))
        .pop()
        .unwrap();
    let waited = ms_between(&term_line, &kill_line);
    assert!(waited >= 595.0, "SIGKILL {waited} ms after SIGTERM");
    assert!(
        log.contains(&format!(
            "agent 1.0.0 (pid {pid}) was killed by SIGKILL; stopped"
        )),
        "{log}"
    );
}

#[test]
fn the_warden_never_signals_the_agents_process_group() {
    let mut host = Host::new();
    // Both signals of a stop: SIGTERM (ignored), then SIGKILL.
    host.write_config(&[
        ("SAMPLE_AGENT_FAULT", "ignore-sigterm"),
        ("ECS_WARDEN_STOP_TIMEOUT", "300ms"),
    ]);
    let pid = started(&mut host);
    let pgid = pgid_of(pid).unwrap();
    assert_eq!(pgid, pid, "the agent leads its own process group");
    assert_ne!(pgid_of(host.warden_pid()), Some(pgid));
    let mut decoy = Decoy::in_group(pgid);
    wait_for("the decoy to join the group", T, || {
        (pgid_of(decoy.pid()) == Some(pgid)).then_some(())
    });

    host.signal_warden(Signal::SIGTERM);
    assert_eq!(host.wait_exit(T), 0, "log:\n{}", host.log());
    wait_gone(pid, "the agent to be gone");
    assert!(
        host.log().contains("sending SIGKILL"),
        "both signals were sent"
    );
    assert!(
        decoy.alive(),
        "a process in the agent's group survives the stop"
    );
}

#[test]
fn a_stop_during_backoff_exits_at_once_and_starts_nothing() {
    let mut host = Host::new();
    host.write_config(&[
        ("ECS_WARDEN_RESTART_BACKOFF_MIN", "30s"),
        ("ECS_WARDEN_RESTART_BACKOFF_MAX", "30s"),
    ]);
    let pid = started(&mut host);
    kill_pid(pid, Signal::SIGKILL);
    let st = host.wait_status("the warden to wait out its backoff", T, |s| {
        s["supervisor"]["agentState"] == "BACKOFF"
    });
    assert!(st["supervisor"]["nextStartInMs"].as_u64().unwrap() > 20_000);
    let t0 = Instant::now();
    host.signal_warden(Signal::SIGINT);
    assert_eq!(host.wait_exit(T), 0, "log:\n{}", host.log());
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the stop does not wait out the backoff"
    );
    assert!(host.log().contains("received SIGINT; stopping"));
    assert_eq!(host.log_lines("started agent").len(), 1, "no new agent");
    assert!(host.agent_processes().is_empty());
}

// ---------------------------------------------------------------------------
// One warden per root; a broken config; an orphaned agent.

#[test]
fn a_second_start_is_refused_at_once() {
    let mut host = Host::new();
    let pid = started(&mut host);
    let warden = host.warden_pid();
    let t0 = Instant::now();
    let out = host.cli_bounded(&["start"]);
    assert!(t0.elapsed() < Duration::from_secs(5), "refused at once");
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "another ecs-warden (pid {warden}) is already running"
        )),
        "{err}"
    );
    // The running warden and its agent are untouched.
    assert!(host.warden.as_mut().unwrap().try_wait().unwrap().is_none());
    assert_eq!(host.agent_pid(), Some(pid));
    assert_eq!(host.agent_processes(), vec![pid]);
    assert!(host.get("/v1/metadata").is_some());
}

#[test]
fn a_broken_config_starts_nothing() {
    let host = Host::new();
    assert_eq!(host.cli_bounded(&["pre-start"]).status.code(), Some(0));
    host.append_config_text("ECS_WARDEN_STOP_TIMEOUT=soon\n");
    let out = host.cli_bounded(&["start"]);
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(out.status.code(), Some(4));
    assert!(host.agent_processes().is_empty());
    assert!(!host.path("run/ecs-warden/control.sock").exists());
    assert!(!port_open(host.port));
}

#[test]
fn the_next_start_stops_an_agent_a_killed_warden_left_behind() {
    let mut host = Host::new();
    let orphan = started(&mut host);
    let mut decoy = Decoy::in_group(orphan);
    host.signal_warden(Signal::SIGKILL);
    host.wait_exit(T);
    assert!(pid_alive(orphan), "the agent outlives a SIGKILLed warden");
    assert!(host.get("/v1/metadata").is_some(), "and keeps serving");
    let record: Value =
        serde_json::from_slice(&fs::read(host.path("run/ecs-warden/agent.json")).unwrap()).unwrap();
    assert_eq!(record["pid"], orphan, "the warden recorded its agent");

    let before = host.log().len();
    host.start();
    let pid = host.wait_new_agent(Some(orphan), T);
    assert_ne!(pid, orphan);
    assert!(!pid_alive(orphan), "the orphan was stopped");
    let log = host.log()[before..].to_string();
    assert!(
        log.contains(&format!(
            "agent 1.0.0 (pid {orphan}) outlived the previous warden"
        )),
        "{log}"
    );
    assert_eq!(host.agent_processes(), vec![pid], "exactly one agent runs");
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
    assert!(decoy.alive(), "only the orphan's pid was signalled");
}

#[test]
fn an_orphan_that_ignores_sigterm_is_killed_by_the_next_start() {
    let mut host = Host::new();
    host.write_config(&[
        ("SAMPLE_AGENT_FAULT", "ignore-sigterm"),
        ("ECS_WARDEN_STOP_TIMEOUT", "300ms"),
    ]);
    let orphan = started(&mut host);
    host.signal_warden(Signal::SIGKILL);
    host.wait_exit(T);
    assert!(pid_alive(orphan));
    host.start();
    let pid = host.wait_new_agent(Some(orphan), T);
    assert!(!pid_alive(orphan), "the orphan was killed");
    assert!(
        host.log().contains(&format!(
            "orphaned agent (pid {orphan}) ignored SIGTERM; sending SIGKILL"
        )),
        "{}",
        host.log()
    );
    assert_eq!(host.agent_processes(), vec![pid]);
}
