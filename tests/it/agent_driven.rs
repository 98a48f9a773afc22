//! The agent asks, the warden performs: updates and tasks that reach the
//! real agent through the control plane (the stand-in's ACS websocket), in
//! both runtimes. `StageUpdateMessage` makes the agent download and stage
//! the 1.105.2 tarball, `PerformUpdateMessage` makes it exit 42, and the
//! warden checks, stores, loads, switches, starts and gates it. Tasks come
//! as `PayloadMessage`s and must survive every way the agent is replaced.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::real_agent::*;
use crate::harness::real_host::RealHost;

const T: Duration = Duration::from_secs(120);

fn started(test: &str, runtime: &'static str) -> Option<RealHost> {
    let mut h = RealHost::new(test, runtime)?;
    h.start();
    h.standin.wait(
        json!({"kind": "connect", "channel": "acs"}),
        Duration::from_secs(60),
    );
    Some(h)
}

/// A task from the control plane, RUNNING: (task ARN, its container's ID,
/// the container's StartedAt).
fn ecs_task(h: &RealHost) -> (String, String, String) {
    let (arn, msg) = h.standin.run_task(TASK_IMAGE, &["/bin/sleep", "3600"]);
    h.standin.wait_ack(&msg, Duration::from_secs(30));
    let change = h.standin.wait(
        json!({"kind": "call", "target": "SubmitTaskStateChange",
               "match": {"body.task": arn, "body.status": "RUNNING"}}),
        Duration::from_secs(90),
    );
    let id = change["body"]["containers"][0]["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let (running, started) = h.container(&id);
    assert!(running);
    (arn, id, started)
}

/// The task is as it was: its container runs, never restarted, and the
/// agent lists it RUNNING with the same container.
fn assert_task_kept(h: &RealHost, task: &(String, String, String), after: &str) {
    let (arn, id, started) = task;
    assert_eq!(
        h.container(id),
        (true, started.clone()),
        "{after}: the task's container is untouched"
    );
    let deadline = Instant::now() + T;
    loop {
        let listed = h.tasks();
        let t = listed.iter().find(|t| t["Arn"] == arn.as_str());
        if let Some(t) = t {
            if t["KnownStatus"] == "RUNNING" {
                assert_eq!(t["Containers"][0]["DockerId"], id.as_str(), "{after}: {t}");
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{after}: /v1/tasks does not list {arn} RUNNING: {listed:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stage 1.105.2 over ACS, then perform: the agent exits 42 and the warden
/// takes it to UPDATED; the new agent registers again.
fn stage_and_perform(h: &RealHost, file: &str) -> Value {
    let stage = h.standin.stage_update(file);
    h.standin.wait_ack(&stage, T);
    // While the agent has staged, the warden already knows.
    let st = h
        .host
        .wait_status("status shows the agent's staged update", T, |s| {
            s["agentUpdateStatus"] == "STAGED"
        });
    assert_eq!(st["update"]["origin"], "exit42");
    let before = h.standin.last_seq();
    let t = Instant::now();
    let perform = h.standin.perform_update();
    h.standin.wait_ack(&perform, Duration::from_secs(30));
    let u = h.host.wait_update_end(T);
    eprintln!(
        "timing: {}: PerformUpdateMessage to the update's end: {:.3} s",
        h.runtime,
        t.elapsed().as_secs_f64()
    );
    if u["state"] == "UPDATED" {
        let reg = h.standin.wait_register(before, T);
        assert_eq!(
            reg["body"]["containerInstanceArn"],
            h.standin.instance_arn()
        );
    }
    u
}

/// The agent-driven update end to end.
fn an_agent_driven_update_reaches_updated(test: &str, runtime: &'static str) {
    let Some(h) = started(test, runtime) else {
        return;
    };
    let task = ecs_task(&h);
    let u = stage_and_perform(&h, &format!("ecs-agent-v{NEW}.tar"));
    assert_eq!(u["state"], "UPDATED", "{u:#}\n{}", h.host.log());
    h.wait_version(NEW, T);
    let id = u["id"].as_str().unwrap();
    assert_eq!(
        h.host.states_of(id),
        ["PENDING", "STAGING", "STAGED", "UPDATING", "UPDATED"],
        "{:#?}",
        h.host.history()
    );
    assert_eq!(u["tasksBefore"], 1, "the gate knew the task: {u:#}");
    // The build was hashed while the old agent ran; after exit 42 the
    // reverify only checked the file was that one, unchanged.
    let log = h.host.log();
    assert!(
        log.contains("while the agent that staged it runs")
            && (log.contains("not read again") || log.contains("stands for the reverify")),
        "{log}"
    );
    assert_task_kept(&h, &task, "the agent-driven update");
}

/// The staged build crashes: rolled back to 1.105.1, FAILED with the
/// reason, 1.105.2 quarantined; the old agent registers again; the same
/// staged version is refused the next time, until it is forced.
fn a_staged_build_that_crashes_is_rolled_back(test: &str, runtime: &'static str) {
    let Some(h) = started(test, runtime) else {
        return;
    };
    let task = ecs_task(&h);
    let u = stage_and_perform(&h, &format!("ecs-agent-v{BROKEN}.tar"));
    assert_eq!(u["state"], "FAILED", "{u:#}");
    assert!(u["quarantined"][BROKEN].is_object(), "{u:#}");
    let reason = u["error"]["reason"].as_str().unwrap();
    assert!(matches!(reason, "crash" | "health-gate"), "{u:#}");
    h.wait_version(OLD, T);
    assert_task_kept(&h, &task, "the rollback");
    // Again: refused (quarantined), the old agent restarted as it was.
    let before = h.standin.last_seq();
    let stage = h.standin.stage_update(&format!("ecs-agent-v{BROKEN}.tar"));
    h.standin.wait_ack(&stage, T);
    let perform = h.standin.perform_update();
    h.standin.wait_ack(&perform, Duration::from_secs(30));
    h.standin.wait_register(before, T);
    h.wait_version(OLD, T);
    let st = h.host.status().unwrap();
    let refusal = &st["update"]["lastRefusal"];
    assert_eq!(refusal["name"], "NoUpdateAvailableException", "{st:#}");
    assert!(
        refusal["message"].as_str().unwrap().contains("quarantined"),
        "{refusal}"
    );
    assert_task_kept(&h, &task, "the refused stage");
}

/// One ECS task through everything that replaces the agent: a CLI update,
/// a rollback (its data snapshot restored: the old agent gets its task
/// back), a crash and restart, and a re-exec of the warden. Its container
/// keeps its ID and start time, and each new agent lists it RUNNING.
fn a_task_survives_every_way_the_agent_is_replaced(test: &str, runtime: &'static str) {
    let Some(h) = started(test, runtime) else {
        return;
    };
    let task = ecs_task(&h);
    let source = h.manifest(&[OLD, NEW]);
    let ran = h.host.run(&["update", "--source", &source, "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", h.host.log());
    assert_eq!(ran.json()["tasksBefore"], 1);
    h.wait_version(NEW, T);
    assert_task_kept(&h, &task, "a CLI update");

    let ran = h.host.run(&["rollback", "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", h.host.log());
    h.wait_version(OLD, T);
    assert_task_kept(&h, &task, "a rollback");

    let pid = h.agent_pid().unwrap();
    match runtime {
        "docker" => {
            h.docker.docker_ok(&["kill", "ecs-agent"]);
        }
        _ => nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap(),
    }
    h.host.wait_status("the agent restarted", T, |s| {
        s["supervisor"]["agentPid"]
            .as_i64()
            .is_some_and(|p| p != pid as i64)
    });
    h.wait_version(OLD, T);
    assert_task_kept(&h, &task, "a crash and restart");

    let agent = h.agent_pid();
    let out = h.host.cli_bounded(&["reexec"]);
    assert!(out.status.success(), "{out:?}\n{}", h.host.log());
    assert_eq!(h.agent_pid(), agent, "the same agent after the re-exec");
    h.wait_version(OLD, T);
    assert_task_kept(&h, &task, "a re-exec");
    if runtime == "docker" {
        assert_eq!(h.agent_containers().len(), 1);
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod docker {
            $( #[test] fn $name() { super::$name(concat!("agent_driven::docker::", stringify!($name)), "docker"); } )*
        }
        mod native {
            $( #[test] fn $name() { super::$name(concat!("agent_driven::native::", stringify!($name)), "native"); } )*
        }
    };
}

both!(
    a_task_survives_every_way_the_agent_is_replaced,
    an_agent_driven_update_reaches_updated,
    a_staged_build_that_crashes_is_rolled_back,
);
