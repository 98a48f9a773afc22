//! ecs-warden running the real ECS agent (1.105.1, updated to 1.105.2) as
//! AWS ships it, an image tarball, in both runtimes: the container
//! `ecs-agent` on a private Docker engine (`docker`) and the program
//! extracted from the same tarball (`native`). Everything runs in a
//! loopback-only sandbox (`harness::real_host`); the control plane is the
//! stand-in.

use std::fs;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::api::aws_env;
use crate::harness::real_agent::*;
use crate::harness::real_host::RealHost;
use crate::harness::tools::aws_available;
use crate::harness::*;

const T: Duration = Duration::from_secs(120);

fn started(test: &str, runtime: &'static str) -> Option<RealHost> {
    let mut h = RealHost::new(test, runtime)?;
    let t = Instant::now();
    h.start();
    eprintln!(
        "timing: {runtime}: warden start to the real agent registered: {:.3} s",
        t.elapsed().as_secs_f64()
    );
    Some(h)
}

/// Start on a host bundling the real 1.105.1: `/v1/metadata` reports the
/// real version and the stand-in's instance ARN; `status` shows both, and
/// the runtime.
fn starts_the_real_agent(test: &str, runtime: &'static str) {
    let Some(h) = started(test, runtime) else {
        return;
    };
    let md = h.metadata().unwrap();
    assert_eq!(md["ContainerInstanceArn"], h.standin.instance_arn());
    assert!(md["Version"].as_str().unwrap().contains("v1.105.1"), "{md}");
    let st = h
        .host
        .wait_status("status shows the registered agent", T, |s| {
            s["agentConnected"] == true
        });
    assert_eq!(st["containerInstanceArn"], h.standin.instance_arn());
    assert_eq!(st["versionInfo"]["agentVersion"], OLD);
    assert_eq!(st["supervisor"]["runtime"], runtime);
    assert_eq!(st["build"]["version"], OLD);
    assert_eq!(st["agent"]["registered"], true);
    let containers = h.agent_containers();
    match runtime {
        "docker" => {
            assert_eq!(containers.len(), 1, "{containers:?}");
            assert!(containers[0].1, "ecs-agent runs");
            // ecs-init's host config, as the engine keeps it.
            let hc = h.docker.docker_ok(&[
                "inspect",
                "-f",
                "{{.HostConfig.NetworkMode}} {{.HostConfig.Init}} {{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}}",
                "ecs-agent",
            ]);
            assert_eq!(hc, "host true json-file 16m", "{hc}");
            let image = h
                .docker
                .docker_ok(&["inspect", "-f", "{{.Config.Image}}", "ecs-agent"]);
            assert_eq!(image, AGENT_IMAGE);
        }
        _ => assert!(containers.is_empty(), "no agent container natively"),
    }
    // The agent's log is where ecs-init arranges it.
    assert!(
        h.agent_log().contains("Registered container instance")
            || h.agent_log().contains("Registration completed"),
        "var/log/ecs/ecs-agent.log: {}",
        h.agent_log()
    );
    let v = h.host.cli(&["version"]);
    assert!(
        String::from_utf8_lossy(&v.stdout).contains(&format!("runtime {runtime}")),
        "{v:?}"
    );
}

/// SIGKILL the agent (the container, for Docker): it is restarted with
/// backoff and the new one answers.
fn a_killed_agent_is_restarted(test: &str, runtime: &'static str) {
    let Some(h) = started(test, runtime) else {
        return;
    };
    let pid = h.agent_pid().expect("the agent's pid");
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
    h.host.wait_status("a new agent", T, |s| {
        s["supervisor"]["agentPid"]
            .as_i64()
            .is_some_and(|p| p != pid as i64)
            && s["agentConnected"] == true
    });
    h.wait_version(OLD, T);
    let st = h.host.status().unwrap();
    assert!(
        st["supervisor"]["restarts"].as_u64().unwrap() >= 1,
        "{st:#}"
    );
    assert!(
        h.host.log().contains("restarting the agent in"),
        "with backoff"
    );
    if runtime == "docker" {
        assert_eq!(h.agent_containers().len(), 1, "one ecs-agent container");
    }
}

/// `ecs-warden update` from 1.105.1 to 1.105.2 with image tarballs and a
/// manifest served over loopback http: UPDATED, every state in the
/// history, and a task container started before the update untouched.
fn updates_to_the_new_build(test: &str, runtime: &'static str) {
    let Some(h) = started(test, runtime) else {
        return;
    };
    let task = h.plain_task("plain-task");
    let before = h.container(&task);
    let source = h.manifest(&[OLD, NEW]);
    let t = Instant::now();
    let ran = h.host.run(&["update", "--source", &source, "--json"]);
    let took = t.elapsed();
    assert_eq!(ran.code, 0, "{ran:?}\n{}", h.host.log());
    eprintln!(
        "timing: {runtime}: update 1.105.1 -> 1.105.2 wall time: {:.3} s",
        took.as_secs_f64()
    );
    let u = ran.json();
    assert_eq!(u["state"], "UPDATED", "{u:#}");
    h.wait_version(NEW, T);
    let id = u["id"].as_str().unwrap();
    assert_eq!(
        h.host.states_of(id),
        ["PENDING", "STAGING", "STAGED", "UPDATING", "UPDATED"]
    );
    assert_eq!(
        h.container(&task),
        before,
        "the task container is untouched"
    );
    let st = h.host.status().unwrap();
    assert_eq!(st["versionInfo"]["agentVersion"], NEW);
    if runtime == "docker" {
        let c = h.agent_containers();
        assert_eq!(c.len(), 1, "{c:?}");
        // :latest follows current; the old image stays for a rollback.
        let latest = h
            .docker
            .docker_ok(&["image", "inspect", "-f", "{{.Id}}", AGENT_IMAGE]);
        let new = h.docker.docker_ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Id}}",
            &format!("amazon/amazon-ecs-agent:v{NEW}"),
        ]);
        assert_eq!(latest, new);
        h.docker.docker_ok(&[
            "image",
            "inspect",
            &format!("amazon/amazon-ecs-agent:v{OLD}"),
        ]);
        assert!(
            h.host.log().contains("loaded") && !h.host.log().contains("ERROR"),
            "{}",
            h.host.log()
        );
    }
    // And back, with the agent's data.
    let ran = h.host.run(&["rollback", "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", h.host.log());
    h.wait_version(OLD, T);
    assert_eq!(
        h.container(&task),
        before,
        "the task container is untouched"
    );
}

/// A new build that cannot run (its entrypoint exits 1), and a tarball
/// whose digest is not the manifest's: FAILED, the old build running.
fn a_build_that_cannot_run_fails(test: &str, runtime: &'static str) {
    let Some(h) = started(test, runtime) else {
        return;
    };
    let source = h.manifest(&[BROKEN]);
    let ran = h.host.run(&["update", "--source", &source, "--json"]);
    assert_eq!(ran.code, 15, "{ran:?}\n{}", h.host.log());
    let u = ran.json();
    assert_eq!(u["state"], "FAILED");
    assert!(u["quarantined"][BROKEN].is_object(), "{u:#}");
    h.wait_version(OLD, T);
    // A wrong digest: refused while staging, nothing stopped.
    let pid = h.agent_pid();
    let text = fs::read_to_string(h.files.join("manifest.json")).unwrap();
    let good = h.fx.image_sha256(&format!("ecs-agent-v{NEW}.tar"));
    let manifest = h.manifest(&[NEW]);
    let bad = fs::read_to_string(h.files.join("manifest.json"))
        .unwrap()
        .replace(&good, &"0".repeat(64));
    fs::write(h.files.join("manifest.json"), bad).unwrap();
    let _ = text;
    let ran = h.host.run(&["update", "--source", &manifest, "--json"]);
    assert_eq!(ran.code, 15, "{ran:?}");
    let u = ran.json();
    assert!(
        u["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("sha256 mismatch"),
        "{u:#}"
    );
    assert_eq!(h.agent_pid(), pid, "the old agent was never stopped");
    h.wait_version(OLD, T);
    if runtime == "docker" {
        assert_eq!(h.agent_containers().len(), 1);
    }
}

/// `ecs-warden stop` stops the agent and leaves task containers running;
/// `start` again leaves exactly one `ecs-agent`.
fn stop_leaves_tasks_and_start_adopts_nothing(test: &str, runtime: &'static str) {
    let Some(mut h) = started(test, runtime) else {
        return;
    };
    let task = h.plain_task("plain-task");
    let before = h.container(&task);
    let out = h.host.cli_bounded(&["stop"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(h.host.wait_exit(T), 0);
    assert!(h.metadata().is_none(), "the agent is stopped");
    if runtime == "docker" {
        let c = h.agent_containers();
        assert!(c.iter().all(|c| !c.1), "no ecs-agent runs: {c:?}");
    }
    assert_eq!(
        h.container(&task),
        before,
        "the task container keeps running"
    );
    h.start();
    if runtime == "docker" {
        let c = h.agent_containers();
        assert_eq!(c.len(), 1, "exactly one ecs-agent: {c:?}");
        assert!(c[0].1);
    }
    assert_eq!(h.container(&task), before);
}

/// `aws ecs update-container-agent --endpoint-url ...` against the warden
/// with the real agent: UPDATED.
fn the_aws_cli_updates_the_real_agent(test: &str, runtime: &'static str) {
    if !aws_available(test) {
        return;
    }
    let Some(mut h) = RealHost::new(test, runtime) else {
        return;
    };
    let port = free_port();
    let source = h.manifest(&[OLD, NEW]);
    h.host.write_config(&[
        ("ECS_WARDEN_API_PORT", &port.to_string()),
        ("ECS_WARDEN_UPDATE_SOURCE", &source),
    ]);
    h.start();
    let home = h.path("aws-home");
    fs::create_dir_all(&home).unwrap();
    let creds = h.path("etc/ecs-warden/credentials");
    let mut cmd = h.ns.command("aws");
    aws_env(&mut cmd, &home, &creds);
    let out = cmd
        .args(["ecs", "update-container-agent"])
        .args(["--endpoint-url", &format!("http://127.0.0.1:{port}")])
        .args(["--cluster", h.standin.cluster()])
        .args(["--container-instance", h.standin.instance_arn()])
        .args(["--output", "json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        h.host.log()
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["containerInstance"]["agentUpdateStatus"], "PENDING");
    let u = h.host.wait_update_end(T);
    assert_eq!(u["state"], "UPDATED", "{u:#}");
    assert_eq!(u["origin"], "api");
    h.wait_version(NEW, T);
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod docker {
            $( #[test] fn $name() { super::$name(concat!("real_agent::docker::", stringify!($name)), "docker"); } )*
        }
        mod native {
            $( #[test] fn $name() { super::$name(concat!("real_agent::native::", stringify!($name)), "native"); } )*
        }
    };
}

both!(
    starts_the_real_agent,
    a_killed_agent_is_restarted,
    updates_to_the_new_build,
    a_build_that_cannot_run_fails,
    stop_leaves_tasks_and_start_adopts_nothing,
    the_aws_cli_updates_the_real_agent,
);
