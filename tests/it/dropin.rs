//! The drop-in swap from ecs-init (Docker runtime), with the real ecs-init
//! 1.105.1: it loads the cached image and starts the container `ecs-agent`,
//! which registers; then ecs-init dies hard (SIGKILL: its container keeps
//! running, as after a `dnf swap` that never stopped the service), and
//! `ecs-warden pre-start && start` takes the host over with no config
//! change. Afterwards exactly one `ecs-agent` container runs, and it is
//! ecs-warden's (its binds are under the warden's root; killing it makes
//! the warden start another).
//!
//! Two hosts: one that still bundles the tarball ecs-init left
//! (`var/cache/ecs/ecs-agent.tar`, a link, and `state`), and one where the
//! swap erased it, so the only copy is the image loaded in the engine: the
//! warden's `pre-start` adopts `amazon/amazon-ecs-agent:latest`.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::real_agent::*;
use crate::harness::real_host::RealHost;

const T: Duration = Duration::from_secs(120);
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn swap(test: &str, keep_tarball: bool) {
    let Some(mut h) = RealHost::new(test, "docker") else {
        return;
    };

    // The host as ecs-init's RPM leaves it, inside the jail (ecs-init's
    // paths are absolute; the jail keeps them off the machine).
    let cache = h.docker.jail_path("/var/cache/ecs");
    fs::create_dir_all(&cache).unwrap();
    fs::copy(h.fx.image(OLD), cache.join("ecs-agent-v1.105.1.tar")).unwrap();
    std::os::unix::fs::symlink("ecs-agent-v1.105.1.tar", cache.join("ecs-agent.tar")).unwrap();
    fs::write(cache.join("state"), "1").unwrap();
    let etc = h.docker.jail_path("/etc/ecs");
    fs::create_dir_all(&etc).unwrap();
    let config: String = agent_env(&h.standin, &container_paths())
        .iter()
        .filter(|(k, _)| {
            !["ECS_DATADIR", "ECS_LOGFILE", "ECS_UPDATE_DOWNLOAD_DIR"].contains(&k.as_str())
        })
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    fs::write(etc.join("ecs.config"), config).unwrap();
    let init = |action: &str| {
        let mut c = h.docker.jail_command(h.fx.init_bin());
        c.arg(action)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("DOCKER_HOST", h.docker.host())
            .env("ECS_EXTERNAL", "true")
            .env(
                "AWS_DEFAULT_REGION",
                h.standin.info()["region"].as_str().unwrap(),
            );
        c
    };
    let out = init("pre-start").output().unwrap();
    assert!(
        out.status.success(),
        "ecs-init pre-start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = fs::File::create(h.ns.state_dir().join("ecs-init-start.out")).unwrap();
    let mut ecs_init = init("start")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    h.standin.wait_register(0, T);
    h.wait_version(OLD, T);
    let theirs = h.agent_containers();
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert!(theirs[0].1, "ecs-init's agent container runs: {theirs:?}");
    let theirs = theirs[0].0.clone();

    // ecs-init dies without stopping its agent.
    ecs_init.kill().unwrap();
    ecs_init.wait().unwrap();
    assert!(
        h.container(&theirs).0,
        "ecs-init's container keeps running after SIGKILL"
    );

    // The warden's root as the swap leaves it.
    fs::write(h.path("var/cache/ecs/state"), "1").unwrap();
    if !keep_tarball {
        fs::remove_file(h.path("var/cache/ecs/ecs-agent.tar")).unwrap();
        fs::remove_file(h.path("var/cache/ecs/ecs-agent-v1.105.1.tar")).unwrap();
    }
    let registered = h.standin.last_seq();
    let out = h.host.cli(&["pre-start"]);
    assert!(
        out.status.success(),
        "ecs-warden pre-start: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if !keep_tarball {
        assert!(
            said.contains("amazon/amazon-ecs-agent:latest"),
            "pre-start names the image it adopted: {said}"
        );
    }
    let t0 = Instant::now();
    h.host.start();
    h.standin.wait_register(registered, T);
    h.wait_version(OLD, T);
    eprintln!(
        "timing: drop-in swap (tarball kept: {keep_tarball}): warden start to the agent registered again: {:.3} s",
        t0.elapsed().as_secs_f64()
    );

    // Exactly one ecs-agent, and it is the warden's.
    let now = h.agent_containers();
    assert_eq!(now.len(), 1, "one ecs-agent container: {now:?}");
    let (ours, running, _) = now[0].clone();
    assert!(running);
    assert_ne!(ours, theirs, "ecs-init's container was replaced");
    let inspect: Value = serde_json::from_str(&h.docker.docker_ok(&["inspect", &ours])).unwrap();
    let binds = inspect[0]["HostConfig"]["Binds"].to_string();
    let root = h.host.root.display().to_string();
    assert!(
        binds.contains(&format!("{root}/var/log/ecs")),
        "the agent's log directory is under the warden's root: {binds}"
    );
    let st = h.host.status().unwrap();
    assert_eq!(st["supervisor"]["runtime"], "docker", "{st:#}");
    assert_eq!(st["supervisor"]["agentVersion"], OLD, "{st:#}");
    let builds = fs::read_dir(h.path("var/lib/ecs-warden/agents"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect::<Vec<_>>();
    assert!(builds.contains(&OLD.to_string()), "{builds:?}");

    // It supervises it: a killed container is followed by a new one.
    h.docker.docker_ok(&["kill", &ours]);
    let deadline = Instant::now() + T;
    loop {
        // `ps` alone: a container may go between a `ps` and an `inspect`
        // (the warden removes the dead one before it creates the next).
        let out = h
            .docker
            .docker()
            .args(["ps", "-q", "--no-trunc", "--filter", "name=^/ecs-agent$"])
            .args(["--filter", "status=running"])
            .output()
            .unwrap();
        let c: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(str::to_string)
            .collect();
        if c.len() == 1 && c[0] != ours {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new ecs-agent after the kill: {c:?}\n{}",
            h.host.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    h.wait_version(OLD, T);
    assert_eq!(h.agent_containers().len(), 1);
}

#[test]
fn swap_with_the_tarball_kept() {
    swap("dropin::swap_with_the_tarball_kept", true);
}

#[test]
fn swap_after_the_tarball_was_erased() {
    swap("dropin::swap_after_the_tarball_was_erased", false);
}
