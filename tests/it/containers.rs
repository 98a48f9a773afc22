//! Task containers in a real Docker engine outlive everything that happens
//! to the agent: a crash (SIGKILL), a restart (exit 1), and a warden stop.
//! "Outlive" means the same container, never restarted: the same ID, the
//! same `.State.StartedAt`, still running, per `docker inspect`.
//!
//! Skips loudly without an engine; fails instead when `CI` is set
//! (`harness::tools`).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::*;

const T: Duration = Duration::from_secs(30);

/// What `docker inspect` says about a container: (id, StartedAt, Running).
fn inspect(id: &str) -> Option<(String, String, bool)> {
    let out = docker_inspect(id, "{{.Id}} {{.State.StartedAt}} {{.State.Running}}")?;
    let mut it = out.split_whitespace();
    Some((
        it.next()?.to_string(),
        it.next()?.to_string(),
        it.next()? == "true",
    ))
}

fn assert_untouched(host: &Host, arn: &str, before: &[(String, String, bool)], after: &str) {
    for b in before {
        let now = inspect(&b.0).unwrap_or_else(|| panic!("container {} is gone {after}", b.0));
        assert_eq!(&now, b, "container {} changed {after}", b.0);
        assert!(now.2, "container {} still runs {after}", b.0);
    }
    // The agent, when one runs, still sees its task with these containers.
    if host.warden.is_some() {
        host.post("/sample/tasks/refresh").expect("refresh");
        let tasks = host.tasks();
        let t = tasks
            .iter()
            .find(|t| t["Arn"] == arn)
            .unwrap_or_else(|| panic!("task {arn} is known {after}: {tasks:?}"));
        assert_eq!(t["KnownStatus"], "RUNNING", "{after}: {t}");
        let ids: Vec<&str> = t["Containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["DockerId"].as_str().unwrap())
            .collect();
        assert_eq!(ids, before.iter().map(|b| b.0.as_str()).collect::<Vec<_>>());
    }
}

#[test]
fn task_containers_survive_agent_crash_restart_and_warden_stop() {
    if !docker_available("task_containers_survive_agent_crash_restart_and_warden_stop") {
        return;
    }
    ensure_task_image();
    // Its own cluster: the engine is shared, and a warden performing an
    // exit-42 update records the task containers of its own cluster.
    let mut host = Host::builder()
        .runtime("docker")
        .config(&[("ECS_CLUSTER", "containers-test")])
        .build();
    host.start();
    let pid = host.wait_new_agent(None, T);

    let task: Value = host.post("/sample/tasks?family=web&containers=2").unwrap();
    let arn = task["Arn"].as_str().unwrap().to_string();
    let ids: Vec<String> = task["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["DockerId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{task}");
    let before: Vec<_> = ids
        .iter()
        .map(|id| inspect(id).expect("the container exists"))
        .collect();
    for b in &before {
        assert!(b.2, "{} runs", b.0);
        assert!(ids.contains(&b.0));
    }

    // 1. The agent crashes.
    kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let pid = host.wait_new_agent(Some(pid), T);
    assert_untouched(&host, &arn, &before, "after the agent was SIGKILLed");

    // 2. The agent exits 1 and is restarted.
    host.post("/sample/exit?code=1").unwrap();
    host.wait_new_agent(Some(pid), T);
    assert_untouched(&host, &arn, &before, "after the agent restarted");

    // 3. The warden stops.
    let out = host.cli_bounded(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(host.wait_exit(T), 0);
    assert!(host.agent_processes().is_empty());
    assert_untouched(&host, &arn, &before, "after the warden stopped");

    // The harness removes them (through the sample agent's data file).
    drop(host);
    for id in &ids {
        assert_eq!(inspect(id), None, "container {id} is removed by cleanup");
    }
}
