//! Proof that the real-agent test infrastructure works, using no ecs-warden
//! code: the loopback-only sandbox and its private engine, the stand-in for
//! the ECS control plane (JSON API, ACS, TCS), the real agent 1.105.1 and
//! 1.105.2 natively and as AWS's image, and the real ecs-init.
//!
//! Each test makes its own network namespace (the agent's port 51678 is
//! fixed and `ecs-agent` is one name per engine), so they run in parallel.
//! Timings are printed as `timing: ...` lines (`--nocapture` shows them).

use std::fs;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::real_agent::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

fn timing(what: &str, d: Duration) {
    eprintln!("timing: {what}: {:.3} s", d.as_secs_f64());
}

fn sigterm(child: &Child) {
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
}

/// Directories of a native agent, in a temporary directory.
struct NativeDirs {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
}

impl NativeDirs {
    fn new() -> NativeDirs {
        let tmp = tempfile::Builder::new()
            .prefix("ecs-warden-real-agent-")
            .tempdir()
            .unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["data", "log", "update"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        NativeDirs { _tmp: tmp, root }
    }
    fn path(&self, rel: &str) -> std::path::PathBuf {
        self.root.join(rel)
    }
    fn agent_paths(&self, docker: &PrivateDocker) -> AgentPaths {
        AgentPaths {
            data_dir: self.path("data").display().to_string(),
            log_file: self.path("log/ecs-agent.log").display().to_string(),
            update_dir: self.path("update").display().to_string(),
            docker_host: docker.host().to_string(),
        }
    }
}

/// The real agent run natively in the namespace and the engine's jail (so
/// whatever it writes outside its directories stays in the jail).
fn spawn_native(docker: &PrivateDocker, bin: &Path, env: &[(String, String)], out: &Path) -> Child {
    let log = fs::File::create(out).unwrap();
    docker
        .jail_command(bin)
        .env_clear()
        .env("PATH", PATH)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("spawn the real agent")
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn sha256_file(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// The inode of a process's network namespace.
fn net_ns_of(pid: u32) -> u64 {
    let link = fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    let link = link.to_string_lossy();
    link.trim_start_matches("net:[")
        .trim_end_matches(']')
        .parse()
        .unwrap()
}

fn net_ns_inode(handle: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(handle).unwrap().ino()
}

fn is_running(docker: &PrivateDocker, id: &str) -> bool {
    docker.docker_ok(&["inspect", "-f", "{{.State.Running}}", id]) == "true"
}

/// The namespace holds only `lo`, nothing leaves it, and dropping the
/// sandbox leaves no process, namespace, mount or file behind.
#[test]
fn sandbox_is_loopback_only_and_leaves_nothing_behind() {
    let test = "sandbox_is_loopback_only_and_leaves_nothing_behind";
    let Some(fx) = fixtures(test) else { return };
    let t0 = Instant::now();
    let Some(ns) = Netns::new(test) else { return };
    timing("make a loopback-only network namespace", t0.elapsed());

    let links = ns
        .command("ip")
        .args(["-o", "link", "show"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout).to_string();
    let names: Vec<&str> = links
        .lines()
        .map(|l| l.split(": ").nth(1).unwrap_or("?"))
        .collect();
    assert_eq!(names, ["lo"], "links in {}: {links}", ns.name());

    // Off-host addresses are unreachable (no route), loopback works.
    let host_ip = Command::new("hostname").arg("-I").output().unwrap();
    let host_ip = String::from_utf8_lossy(&host_ip.stdout)
        .split_whitespace()
        .next()
        .unwrap_or("10.0.0.1")
        .to_string();
    ns.run(|| {
        for addr in [
            "1.1.1.1:443",
            "169.254.169.254:80",
            &format!("{host_ip}:22"),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            let err = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                .expect_err(&format!("{addr} must be unreachable in the namespace"));
            assert!(
                matches!(
                    err.kind(),
                    ErrorKind::NetworkUnreachable | ErrorKind::HostUnreachable
                ),
                "connect {addr}: {err:?}"
            );
        }
        let udp = UdpSocket::bind("0.0.0.0:0").unwrap();
        assert!(
            udp.send_to(b"x", "8.8.8.8:53").is_err(),
            "UDP must not leave"
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        TcpStream::connect(l.local_addr().unwrap()).expect("loopback works");
    });

    let t0 = Instant::now();
    let docker = PrivateDocker::start(&ns);
    timing("start a private dockerd in a fresh namespace", t0.elapsed());
    let networks = docker.docker_ok(&["network", "ls", "--format", "{{.Name}}"]);
    let mut networks: Vec<&str> = networks.lines().collect();
    networks.sort();
    assert_eq!(networks, ["host", "none"], "the engine has no bridge");
    let t0 = Instant::now();
    docker.load(&fx.image(OLD));
    timing(
        "docker load ecs-agent-v1.105.1.tar (88 MB) into it",
        t0.elapsed(),
    );
    let t0 = Instant::now();
    docker.load(&fx.task_image());
    timing("docker load ecs-warden-task.tar into it", t0.elapsed());
    let images = docker.docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert!(
        images.contains(AGENT_IMAGE) && images.contains(TASK_IMAGE),
        "{images}"
    );

    // A task container with the engine's default network: none.
    let id = docker.docker_ok(&["run", "-d", TASK_IMAGE, "/bin/sleep", "600"]);
    assert!(is_running(&docker, &id));
    let ctr_pid: i32 = docker
        .docker_ok(&["inspect", "-f", "{{.State.Pid}}", &id])
        .parse()
        .unwrap();

    let dockerd = docker.pid();
    let state = ns.state_dir();
    let netns_path = ns.path();
    // The engine's mounts are in its jail, none in ours.
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*state.to_string_lossy()),
        "the engine's mounts leaked into the host's mount namespace"
    );

    let t0 = Instant::now();
    drop(docker);
    timing("stop the private dockerd (one container)", t0.elapsed());
    assert!(
        !Path::new(&format!("/proc/{dockerd}")).exists(),
        "dockerd {dockerd} still there"
    );
    assert!(
        !Path::new(&format!("/proc/{ctr_pid}")).exists(),
        "container process {ctr_pid} still there"
    );
    drop(ns);
    assert!(!netns_path.exists(), "{} still there", netns_path.display());
    assert!(!state.exists(), "{} still there", state.display());
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&*state.to_string_lossy()));
}

/// A sandbox whose owner died (a killed test run) is removed by `sweep`,
/// with what still ran inside.
#[test]
fn sweep_removes_sandboxes_of_dead_owners() {
    let test = "sweep_removes_sandboxes_of_dead_owners";
    if !nix::unistd::geteuid().is_root() {
        unavailable::<()>(test, "network namespaces need root");
        return;
    }
    let script = project_root().join("scripts/real-agent.sh");
    let mut owner = Command::new("sleep").arg("60").spawn().unwrap();
    let out = Command::new("bash")
        .arg(&script)
        .args(["netns-up", "--owner", &owner.id().to_string()])
        .env("ECS_WARDEN_SANDBOX_BASE", sandbox_base())
        .output()
        .unwrap();
    if !out.status.success() {
        let _ = owner.kill();
        let _ = owner.wait();
        unavailable::<()>(
            test,
            &format!("netns-up: {}", String::from_utf8_lossy(&out.stderr)),
        );
        return;
    }
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = Path::new("/var/run/netns").join(&name);
    let mut inside = Command::new("nsenter")
        .arg(format!("--net={}", path.display()))
        .args(["--", "sleep", "60"])
        .spawn()
        .unwrap();

    // The owner is alive: sweep leaves it alone.
    let sweep = || {
        let st = Command::new("bash")
            .arg(&script)
            .arg("sweep")
            .env("ECS_WARDEN_SANDBOX_BASE", sandbox_base())
            .status()
            .unwrap();
        assert!(st.success());
    };
    sweep();
    assert!(path.exists(), "sweep removed a live owner's sandbox");
    assert_eq!(inside.try_wait().unwrap(), None);

    owner.kill().unwrap();
    owner.wait().unwrap();
    sweep();
    assert!(!path.exists(), "sweep left {}", path.display());
    assert!(!sandbox_base().join(&name).exists());
    let code = wait_exit(&mut inside, Duration::from_secs(5));
    assert!(
        code.is_some(),
        "the process inside the swept namespace still runs"
    );
}

/// (a) The real agent 1.105.1, natively in the namespace: it registers with
/// the stand-in, `/v1/metadata` reports its version and the stand-in's ARN,
/// and SIGTERM ends it with 0.
#[test]
fn native_agent_registers_and_exits_0_on_sigterm() {
    let test = "native_agent_registers_and_exits_0_on_sigterm";
    let Some(fx) = fixtures(test) else { return };
    let Some(ns) = Netns::new(test) else { return };
    let docker = PrivateDocker::start(&ns);
    let standin = Standin::start(&ns, None);
    let dirs = NativeDirs::new();
    let cgroup_before = Path::new("/sys/fs/cgroup/cpu/ecs").exists();

    let env = agent_env(&standin, &dirs.agent_paths(&docker));
    let t0 = Instant::now();
    let mut agent = spawn_native(&docker, &fx.agent_bin(OLD), &env, &dirs.path("agent.out"));
    let meta = ns.wait_json(METADATA_URL, Duration::from_secs(30));
    timing("native agent: spawn to /v1/metadata", t0.elapsed());
    assert_eq!(
        meta["Version"], "Amazon ECS Agent - v1.105.1 (*a8b3e7d3)",
        "{meta}"
    );
    assert_eq!(meta["ContainerInstanceArn"], standin.instance_arn());
    assert_eq!(meta["Cluster"], standin.cluster());

    // What it called: registration (the attributes echoed), the poll
    // endpoint, and both websockets.
    let reg = standin.wait_register(0, Duration::from_secs(5));
    let sent = &reg["body"]["attributes"];
    assert!(sent.as_array().is_some_and(|a| !a.is_empty()), "{reg}");
    assert_eq!(&reg["response"]["containerInstance"]["attributes"], sent);
    standin.wait(
        json!({"kind": "call", "target": "DiscoverPollEndpoint"}),
        Duration::from_secs(10),
    );
    let acs = standin.wait(
        json!({"kind": "connect", "channel": "acs"}),
        Duration::from_secs(10),
    );
    assert!(
        acs["path"]
            .as_str()
            .unwrap()
            .contains("agentVersion=1.105.1"),
        "{acs}"
    );
    standin.wait(
        json!({"kind": "connect", "channel": "tcs"}),
        Duration::from_secs(10),
    );
    // It runs in the sandbox's network namespace, not the host's.
    assert_eq!(
        net_ns_of(agent.id()),
        net_ns_inode(&ns.path()),
        "the agent is not in the sandbox"
    );
    assert_ne!(net_ns_of(agent.id()), net_ns_of(std::process::id()));

    let t0 = Instant::now();
    sigterm(&agent);
    let code = wait_exit(&mut agent, Duration::from_secs(20));
    timing("native agent: SIGTERM to exit", t0.elapsed());
    assert_eq!(code, Some(0), "{}", tail(&dirs.path("agent.out")));
    assert!(
        dirs.path("data/agent.db").exists(),
        "no state in ECS_DATADIR"
    );
    if !cgroup_before {
        assert!(
            !Path::new("/sys/fs/cgroup/cpu/ecs").exists(),
            "the agent made the host's /ecs cgroup"
        );
    }
    eprintln!("native agent wrote in the jail: {:?}", docker.jail_writes());
}

/// (b) The same agent as AWS ships it, a container on the private engine:
/// host network, `--init`, the engine's socket mounted.
#[test]
fn container_agent_registers_on_the_private_engine() {
    let test = "container_agent_registers_on_the_private_engine";
    let Some(fx) = fixtures(test) else { return };
    let Some(ns) = Netns::new(test) else { return };
    let docker = PrivateDocker::start(&ns);
    let standin = Standin::start(&ns, None);
    docker.load(&fx.image(OLD));
    let dirs = NativeDirs::new();

    let env = agent_env(&standin, &container_paths());
    let args = agent_container_args(
        &docker,
        "ecs-agent",
        (&dirs.path("data"), &dirs.path("log"), &dirs.path("update")),
        &env,
        AGENT_IMAGE,
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    let id = docker.docker_ok(&args);
    let meta = ns.wait_json(METADATA_URL, Duration::from_secs(60));
    timing("container agent: docker run to /v1/metadata", t0.elapsed());
    assert_eq!(
        meta["Version"], "Amazon ECS Agent - v1.105.1 (*a8b3e7d3)",
        "{meta}"
    );
    assert_eq!(meta["ContainerInstanceArn"], standin.instance_arn());

    let inspect: Value = serde_json::from_str(&docker.docker_ok(&["inspect", &id])).unwrap();
    let c = &inspect[0];
    assert_eq!(c["HostConfig"]["NetworkMode"], "host");
    assert_eq!(c["HostConfig"]["Init"], true);
    assert_eq!(c["Config"]["Entrypoint"], json!(["/agent"]));
    assert_eq!(c["Name"], "/ecs-agent");
    assert!(
        dirs.path("log/ecs-agent.log").exists(),
        "no agent log in the mounted /log"
    );

    let t0 = Instant::now();
    docker.docker_ok(&["stop", "-t", "10", "ecs-agent"]);
    timing("container agent: docker stop", t0.elapsed());
    assert_eq!(
        docker.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &id]),
        "0"
    );
}

/// (c) Over ACS: `StageUpdateMessage` of the 1.105.2 tarball makes the
/// agent download it as `<hex>.ecs-update.tar`, write `desired-image` and
/// ack; `PerformUpdateMessage` makes it ack and exit 42.
#[test]
fn acs_stage_update_downloads_and_perform_exits_42() {
    let test = "acs_stage_update_downloads_and_perform_exits_42";
    let Some(fx) = fixtures(test) else { return };
    let Some(ns) = Netns::new(test) else { return };
    let docker = PrivateDocker::start(&ns);
    let standin = Standin::start(&ns, Some(&fx.images_dir()));
    let dirs = NativeDirs::new();
    let env = agent_env(&standin, &dirs.agent_paths(&docker));
    let mut agent = spawn_native(&docker, &fx.agent_bin(OLD), &env, &dirs.path("agent.out"));
    standin.wait(
        json!({"kind": "connect", "channel": "acs"}),
        Duration::from_secs(30),
    );

    let file = format!("ecs-agent-v{NEW}.tar");
    let t0 = Instant::now();
    let stage = standin.stage_update(&file);
    let ack = standin.wait_ack(&stage, Duration::from_secs(120));
    timing(
        "StageUpdateMessage to AckRequest (88 MB download)",
        t0.elapsed(),
    );
    assert_eq!(ack["message"]["containerInstance"], standin.instance_arn());
    let dl = standin.wait(
        json!({"kind": "download", "path": file}),
        Duration::from_secs(5),
    );
    assert_eq!(dl["status"], 200);
    assert_eq!(dl["bytes"], dl["size"]);
    timing(
        "stand-in: serving the tarball",
        Duration::from_secs_f64(dl["seconds"].as_f64().unwrap()),
    );

    let desired = fs::read_to_string(dirs.path("update/desired-image")).expect("desired-image");
    let staged = desired
        .strip_suffix('\n')
        .expect("desired-image ends with a newline");
    let hex = staged
        .strip_suffix(".ecs-update.tar")
        .expect("<hex>.ecs-update.tar");
    assert!(
        !hex.is_empty() && hex.chars().all(|c| c.is_ascii_hexdigit()),
        "{staged}"
    );
    assert_eq!(
        sha256_file(&dirs.path("update").join(staged)),
        fx.image_sha256(&file)
    );

    let perform = standin.perform_update();
    standin.wait_ack(&perform, Duration::from_secs(30));
    let code = wait_exit(&mut agent, Duration::from_secs(30));
    assert_eq!(code, Some(42), "{}", tail(&dirs.path("agent.out")));
    // The staged tarball is left for the supervisor.
    assert!(dirs.path("update").join(staged).exists());
}

/// The stand-in records refusals too: with updates off the agent nacks a
/// stage, and a perform with nothing staged.
#[test]
fn acs_updates_disabled_are_nacked() {
    let test = "acs_updates_disabled_are_nacked";
    let Some(fx) = fixtures(test) else { return };
    let Some(ns) = Netns::new(test) else { return };
    let docker = PrivateDocker::start(&ns);
    let standin = Standin::start(&ns, Some(&fx.images_dir()));
    let dirs = NativeDirs::new();
    let mut env = agent_env(&standin, &dirs.agent_paths(&docker));
    env.retain(|(k, _)| k != "ECS_UPDATES_ENABLED");
    let mut agent = spawn_native(&docker, &fx.agent_bin(OLD), &env, &dirs.path("agent.out"));
    standin.wait(
        json!({"kind": "connect", "channel": "acs"}),
        Duration::from_secs(30),
    );

    let stage = standin.stage_update(&format!("ecs-agent-v{NEW}.tar"));
    let nack = standin.wait(
        json!({"kind": "acs", "type": "NackRequest", "match": {"message.messageId": stage}}),
        Duration::from_secs(30),
    );
    assert_eq!(nack["message"]["reason"], "Updates are disabled", "{nack}");
    assert!(
        standin.events(json!({"kind": "download"})).is_empty(),
        "it downloaded anyway"
    );
    let perform = standin.perform_update();
    standin.wait(
        json!({"kind": "acs", "type": "NackRequest", "match": {"message.messageId": perform}}),
        Duration::from_secs(30),
    );
    assert_eq!(
        agent.try_wait().unwrap(),
        None,
        "the agent exited on a refused perform"
    );
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), Some(0));
}

/// (d) A `PayloadMessage` task: the agent starts its container on the
/// private engine, reports it RUNNING, lists it; after a restart (as
/// 1.105.2, from the same data directory) the new agent lists the same
/// task with the same container, which never stopped.
#[test]
fn payload_task_runs_and_survives_an_agent_restart() {
    let test = "payload_task_runs_and_survives_an_agent_restart";
    let Some(fx) = fixtures(test) else { return };
    let Some(ns) = Netns::new(test) else { return };
    let docker = PrivateDocker::start(&ns);
    docker.load(&fx.task_image());
    let standin = Standin::start(&ns, None);
    let dirs = NativeDirs::new();
    let env = agent_env(&standin, &dirs.agent_paths(&docker));
    let mut agent = spawn_native(&docker, &fx.agent_bin(OLD), &env, &dirs.path("agent.out"));
    standin.wait(
        json!({"kind": "connect", "channel": "acs"}),
        Duration::from_secs(30),
    );

    let t0 = Instant::now();
    let (task_arn, msg) = standin.run_task(TASK_IMAGE, &["/bin/sleep", "3600"]);
    standin.wait_ack(&msg, Duration::from_secs(30));
    let change = standin.wait(
        json!({"kind": "call", "target": "SubmitTaskStateChange",
               "match": {"body.task": task_arn, "body.status": "RUNNING"}}),
        Duration::from_secs(60),
    );
    timing(
        "PayloadMessage to SubmitTaskStateChange RUNNING",
        t0.elapsed(),
    );
    let docker_id = change["body"]["containers"][0]["runtimeId"]
        .as_str()
        .expect("the RUNNING change names the container")
        .to_string();
    assert_eq!(change["body"]["containers"][0]["status"], "RUNNING");
    assert!(is_running(&docker, &docker_id));
    let started = docker.docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &docker_id]);
    let labels = docker.docker_ok(&[
        "inspect",
        "-f",
        "{{index .Config.Labels \"com.amazonaws.ecs.task-arn\"}}",
        &docker_id,
    ]);
    assert_eq!(labels, task_arn);

    let listed = |ns: &Netns| -> Value {
        let tasks = ns.wait_json(TASKS_URL, Duration::from_secs(30));
        tasks["Tasks"]
            .as_array()
            .and_then(|t| t.iter().find(|t| t["Arn"] == task_arn.as_str()).cloned())
            .unwrap_or_else(|| panic!("{task_arn} not in /v1/tasks: {tasks}"))
    };
    let t = listed(&ns);
    assert_eq!(t["KnownStatus"], "RUNNING");
    assert_eq!(t["Containers"][0]["DockerId"], docker_id.as_str());

    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), Some(0));
    assert!(
        is_running(&docker, &docker_id),
        "the task stopped with the agent"
    );

    let after = standin.last_seq();
    let t0 = Instant::now();
    let mut agent = spawn_native(&docker, &fx.agent_bin(NEW), &env, &dirs.path("agent2.out"));
    let meta = ns.wait_json(METADATA_URL, Duration::from_secs(30));
    timing(
        "restarted agent (1.105.2, restored state): spawn to /v1/metadata",
        t0.elapsed(),
    );
    assert_eq!(meta["Version"], "Amazon ECS Agent - v1.105.2 (*a8b3e7d3)");
    let reg = standin.wait_register(after, Duration::from_secs(5));
    assert_eq!(
        reg["body"]["containerInstanceArn"],
        standin.instance_arn(),
        "re-registers as itself"
    );
    let t = listed(&ns);
    assert_eq!(t["KnownStatus"], "RUNNING", "{t}");
    assert_eq!(t["Containers"][0]["DockerId"], docker_id.as_str());
    assert_eq!(
        docker.docker_ok(&["inspect", "-f", "{{.State.StartedAt}}", &docker_id]),
        started
    );
    assert!(is_running(&docker, &docker_id));
    sigterm(&agent);
    assert_eq!(wait_exit(&mut agent, Duration::from_secs(20)), Some(0));
}

/// (e) The real ecs-init 1.105.1, `pre-start` then `start`, in the
/// namespace and the jail: it loads the cached image (no S3), starts the
/// `ecs-agent` container, which registers with the stand-in; `stop` ends
/// it with 0 and `post-stop` removes its rules. The host's own iptables
/// and /var/cache/ecs are untouched.
#[test]
fn ecs_init_pre_start_and_start_run_the_agent_container() {
    let test = "ecs_init_pre_start_and_start_run_the_agent_container";
    let Some(fx) = fixtures(test) else { return };
    let Some(ns) = Netns::new(test) else { return };
    let docker = PrivateDocker::start(&ns);
    let standin = Standin::start(&ns, None);
    // ecs-init's rules name the credentials proxy and the agent's port; the
    // host's tables must not gain any (other rules may come and go: the
    // machine's engine is shared).
    let host_rules = || -> Vec<String> {
        let mut rules = Vec::new();
        for (cmd, table) in [
            ("iptables", "filter"),
            ("iptables", "nat"),
            ("ip6tables", "filter"),
        ] {
            let out = Command::new(cmd).args(["-t", table, "-S"]).output();
            let text = out
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            rules.extend(
                text.lines()
                    .filter(|l| {
                        l.contains("169.254.170.2") || l.contains("51678") || l.contains("51679")
                    })
                    .map(|l| format!("{cmd} {table}: {l}")),
            );
        }
        rules
    };
    let host_rules_before = host_rules();
    let host_cache_before = Path::new("/var/cache/ecs").exists();

    // The host as the ecs-init RPM leaves it, inside the jail.
    let cache = docker.jail_path("/var/cache/ecs");
    fs::create_dir_all(&cache).unwrap();
    fs::copy(fx.image(OLD), cache.join("ecs-agent-v1.105.1.tar")).unwrap();
    std::os::unix::fs::symlink("ecs-agent-v1.105.1.tar", cache.join("ecs-agent.tar")).unwrap();
    fs::write(cache.join("state"), "1").unwrap();
    let etc = docker.jail_path("/etc/ecs");
    fs::create_dir_all(&etc).unwrap();
    let config: String = agent_env(&standin, &container_paths())
        .iter()
        .filter(|(k, _)| {
            !["ECS_DATADIR", "ECS_LOGFILE", "ECS_UPDATE_DOWNLOAD_DIR"].contains(&k.as_str())
        })
        .map(|(k, v)| format!("{k}={v}\n"))
        .collect();
    fs::write(etc.join("ecs.config"), config).unwrap();

    let init = |action: &str| {
        let mut c = docker.jail_command(fx.init_bin());
        c.arg(action)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/root")
            .env("DOCKER_HOST", docker.host())
            .env("ECS_EXTERNAL", "true")
            .env(
                "AWS_DEFAULT_REGION",
                standin.info()["region"].as_str().unwrap(),
            );
        eprintln!("command: {c:?}");
        c
    };

    let t0 = Instant::now();
    let out = init("pre-start").output().unwrap();
    timing(
        "ecs-init pre-start (loads the cached 88 MB image)",
        t0.elapsed(),
    );
    assert!(
        out.status.success(),
        "pre-start: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(docker
        .docker_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
        .contains(AGENT_IMAGE));
    assert_eq!(fs::read_to_string(cache.join("state")).unwrap().trim(), "1");
    let rules = ns.command("iptables-save").output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout).to_string();
    assert!(
        rules.contains("169.254.170.2"),
        "no credentials-proxy rule in the namespace: {rules}"
    );

    let log = fs::File::create(ns.state_dir().join("ecs-init-start.out")).unwrap();
    let t0 = Instant::now();
    let mut start = init("start")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    standin.wait_register(0, Duration::from_secs(60));
    timing("ecs-init start to RegisterContainerInstance", t0.elapsed());
    let meta = ns.wait_json(METADATA_URL, Duration::from_secs(30));
    timing("ecs-init start to /v1/metadata", t0.elapsed());
    assert_eq!(meta["Version"], "Amazon ECS Agent - v1.105.1 (*a8b3e7d3)");
    assert_eq!(meta["ContainerInstanceArn"], standin.instance_arn());
    let inspect: Value =
        serde_json::from_str(&docker.docker_ok(&["inspect", "ecs-agent"])).unwrap();
    assert_eq!(inspect[0]["HostConfig"]["NetworkMode"], "host");
    assert_eq!(inspect[0]["State"]["Running"], true);
    let binds = inspect[0]["HostConfig"]["Binds"].to_string();
    assert!(
        binds.contains(&format!(
            "{}:/var/run/docker.sock",
            docker.socket().display()
        )),
        "{binds}"
    );
    eprintln!("ecs-init's agent container binds: {binds}");

    let t0 = Instant::now();
    let out = init("stop").output().unwrap();
    assert!(
        out.status.success(),
        "stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let code = wait_exit(&mut start, Duration::from_secs(30));
    timing("ecs-init stop to start's exit", t0.elapsed());
    assert_eq!(
        code,
        Some(0),
        "{}",
        tail(&ns.state_dir().join("ecs-init-start.out"))
    );
    let out = init("post-stop").output().unwrap();
    assert!(
        out.status.success(),
        "post-stop: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rules = ns.command("iptables-save").output().unwrap();
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("169.254.170.2"));

    assert_eq!(
        host_rules(),
        host_rules_before,
        "the host's iptables changed"
    );
    assert_eq!(
        Path::new("/var/cache/ecs").exists(),
        host_cache_before,
        "ecs-init wrote the host's /var/cache/ecs"
    );
    eprintln!(
        "ecs-init and its agent wrote in the jail: {:?}",
        docker.jail_writes()
    );
}

/// `tar xOf archive member`.
fn tar_member(archive: &Path, member: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("xOf")
        .arg(archive)
        .arg(member)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar xOf {} {member}",
        archive.display()
    );
    out.stdout
}

/// The files of each layer of a `docker save` archive, in order.
fn layer_files(archive: &Path) -> Vec<Vec<String>> {
    let manifest: Value = serde_json::from_slice(&tar_member(archive, "manifest.json")).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let layer = tar_member(archive, l.as_str().unwrap());
            let mut t = Command::new("tar")
                .arg("t")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            std::io::Write::write_all(t.stdin.as_mut().unwrap(), &layer).unwrap();
            drop(t.stdin.take());
            let out = t.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

/// The image tarballs are in AWS's form (one tag, entrypoint /agent, the
/// CA bundle, the binary in its own layer); the broken build prints its
/// version and otherwise exits 1, in a container and extracted.
#[test]
fn image_tarballs_are_in_aws_form_and_the_broken_one_cannot_run() {
    let test = "image_tarballs_are_in_aws_form_and_the_broken_one_cannot_run";
    let Some(fx) = fixtures(test) else { return };
    for v in [OLD, NEW, BROKEN] {
        let tar = fx.image(v);
        let manifest: Value = serde_json::from_slice(&tar_member(&tar, "manifest.json")).unwrap();
        assert_eq!(manifest[0]["RepoTags"], json!([AGENT_IMAGE]), "{v}");
        let config: Value =
            serde_json::from_slice(&tar_member(&tar, manifest[0]["Config"].as_str().unwrap()))
                .unwrap();
        assert_eq!(config["config"]["Entrypoint"], json!(["/agent"]), "{v}");
        let layers = layer_files(&tar);
        let with = |f: &str| layers.iter().filter(|l| l.iter().any(|p| p == f)).count();
        assert_eq!(with("agent"), 1, "{v}: /agent in one layer: {layers:?}");
        assert_eq!(
            with("etc/ssl/certs/ca-certificates.crt"),
            1,
            "{v}: the CA bundle"
        );
        assert_eq!(with("tmp/"), 1, "{v}: the scratch base's /tmp");
    }
    assert_eq!(
        sha256_file(&fx.image(OLD)),
        fx.image_sha256(&format!("ecs-agent-v{OLD}.tar"))
    );

    // Extracted: the entrypoint of the broken image, run natively.
    let tmp = tempfile::tempdir().unwrap();
    let tar = fx.image(BROKEN);
    let manifest: Value = serde_json::from_slice(&tar_member(&tar, "manifest.json")).unwrap();
    let layers = layer_files(&tar);
    let i = layers
        .iter()
        .position(|l| l.iter().any(|p| p == "agent"))
        .unwrap();
    let layer = tmp.path().join("layer.tar");
    fs::write(
        &layer,
        tar_member(&tar, manifest[0]["Layers"][i].as_str().unwrap()),
    )
    .unwrap();
    let st = Command::new("tar")
        .arg("xf")
        .arg(&layer)
        .arg("-C")
        .arg(tmp.path())
        .arg("agent")
        .status()
        .unwrap();
    assert!(st.success());
    let agent = tmp.path().join("agent");
    let out = Command::new(&agent).arg("-version").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Amazon ECS Agent:\n\tVersion: 1.105.3\n\tCommit: a8b3e7d3\n\tDirty: true\n"
    );
    let out = Command::new(&agent).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot run"));

    // In a container, on a private engine.
    let Some(ns) = Netns::new(test) else { return };
    let docker = PrivateDocker::start(&ns);
    docker.load(&fx.image(BROKEN));
    let out = docker
        .docker()
        .args(["run", "--rm", AGENT_IMAGE, "--version"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("\tVersion: 1.105.3\n"));
    let st = docker
        .docker()
        .args(["run", "--rm", "--net", "host", AGENT_IMAGE])
        .output()
        .unwrap();
    assert_eq!(st.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&st.stderr).contains("cannot run"));
}
