//! Integration tests of the `sample-agent` binary: each test runs the real
//! built binary in its own temporary directory, on a free loopback port
//! (the agent binds port 0 and its start line tells which port it got).
//!
//! Task processes and containers outlive the agent by design, so every test
//! that starts tasks cleans them up with a guard (by pid and start time for
//! processes, by label for containers).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::harness::{docker_available, ensure_task_image, http, start_time, wait_for, SAMPLE};

const START_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- harness

/// A temporary directory holding the data dir of a sample agent run alone
/// (no warden, no root layout: the harness's `Host` is a whole host).
struct AgentDir {
    dir: tempfile::TempDir,
}

impl AgentDir {
    fn new() -> AgentDir {
        AgentDir {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn data_dir(&self) -> PathBuf {
        self.path().join("data")
    }

    /// A clean environment: nothing leaks in from the test runner's.
    fn command(&self, exe: &Path, extra: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(exe);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("ECS_DATADIR", self.data_dir())
            .env("ECS_WARDEN_INTROSPECTION_URL", "http://127.0.0.1:0")
            .env("SAMPLE_AGENT_TASK_RUNTIME", "process");
        if let Some(host) = std::env::var_os("DOCKER_HOST") {
            cmd.env("DOCKER_HOST", host);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    }

    fn start(&self, extra: &[(&str, &str)]) -> Agent {
        self.start_exe(Path::new(SAMPLE), extra)
    }

    fn start_exe(&self, exe: &Path, extra: &[(&str, &str)]) -> Agent {
        let agent = self.spawn_exe(exe, extra);
        agent.wait_serving();
        agent
    }

    /// Spawns without waiting for the start line.
    fn spawn_exe(&self, exe: &Path, extra: &[(&str, &str)]) -> Agent {
        let mut child = self
            .command(exe, extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let log2 = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(port) = parse_port(&line) {
                    let _ = port_tx.send(port);
                }
                let mut log = log2.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Agent {
            child,
            port: Mutex::new(None),
            port_rx: Mutex::new(port_rx),
            log,
        }
    }

    fn stamp(&self, version: &str, extra_args: &[&str]) -> PathBuf {
        let out = self.path().join(format!("agent-{version}"));
        let status = Command::new(SAMPLE)
            .args(["stamp", version])
            .arg(&out)
            .args(extra_args)
            .status()
            .unwrap();
        assert!(status.success(), "stamp {version} failed: {status}");
        out
    }

    fn saved_state(&self) -> Value {
        let bytes = std::fs::read(self.data_dir().join("sample-agent.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }
}

/// `...serving on 127.0.0.1:PORT, instance ARN ...` → PORT
fn parse_port(line: &str) -> Option<u16> {
    let rest = line.split_once("serving on ")?.1;
    let addr = rest.split(',').next()?;
    addr.rsplit_once(':')?.1.parse().ok()
}

struct Agent {
    child: Child,
    port: Mutex<Option<u16>>,
    port_rx: Mutex<mpsc::Receiver<u16>>,
    log: Arc<Mutex<String>>,
}

impl Agent {
    fn wait_serving(&self) -> u16 {
        if let Some(port) = *self.port.lock().unwrap() {
            return port;
        }
        match self.port_rx.lock().unwrap().recv_timeout(START_TIMEOUT) {
            Ok(port) => {
                *self.port.lock().unwrap() = Some(port);
                port
            }
            Err(_) => panic!("agent did not start serving; log:\n{}", self.log()),
        }
    }

    fn port(&self) -> u16 {
        self.wait_serving()
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn request(&self, method: &str, path: &str) -> (u16, String) {
        http(self.port(), method, path)
    }

    fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.request("GET", path);
        assert_eq!(status, 200, "GET {path}: {body}\nlog:\n{}", self.log());
        serde_json::from_str(&body).unwrap()
    }

    fn post_json(&self, path: &str) -> Value {
        let (status, body) = self.request("POST", path);
        assert_eq!(status, 200, "POST {path}: {body}\nlog:\n{}", self.log());
        serde_json::from_str(&body).unwrap()
    }

    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread catch the last lines.
                thread::sleep(Duration::from_millis(50));
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "agent did not exit within {timeout:?}; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn sigkill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn version_banner(exe: &Path) -> String {
    let out = Command::new(exe).arg("--version").output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Kills the task processes recorded in a data dir when dropped.
struct ProcessTasks(PathBuf);

impl Drop for ProcessTasks {
    fn drop(&mut self) {
        let Ok(bytes) = std::fs::read(self.0.join("sample-agent.json")) else {
            return;
        };
        let state: Value = serde_json::from_slice(&bytes).unwrap_or_default();
        for (pid, start) in task_pids(&state) {
            if start_time(pid) == Some(start) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

fn task_pids(state: &Value) -> Vec<(i32, u64)> {
    let mut pids = Vec::new();
    for task in state["tasks"].as_array().into_iter().flatten() {
        for c in task["containers"].as_array().into_iter().flatten() {
            if let (Some(pid), Some(start)) = (c["pid"].as_i64(), c["start_time"].as_u64()) {
                pids.push((pid as i32, start));
            }
        }
    }
    pids
}

// ------------------------------------------------------------ the tests

#[test]
fn metadata_has_the_real_shape() {
    let host = AgentDir::new();
    let agent = host.start(&[
        ("ECS_CLUSTER", "blue"),
        ("AWS_REGION", "eu-west-1"),
        ("SAMPLE_AGENT_ACCOUNT", "111122223333"),
    ]);
    let meta = agent.get_json("/v1/metadata");
    assert_eq!(meta["Cluster"], "blue");
    let arn = meta["ContainerInstanceArn"].as_str().unwrap();
    let id = arn
        .strip_prefix("arn:aws:ecs:eu-west-1:111122223333:container-instance/blue/")
        .unwrap_or_else(|| panic!("bad ARN {arn}"));
    assert!(is_hex(id, 32), "bad instance id in {arn}");

    let version = meta["Version"].as_str().unwrap();
    let hash = version
        .strip_prefix("Amazon ECS Agent - v1.0.0 (")
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("bad Version {version}"));
    assert!(is_hex(hash, 8), "{version}");
    assert_eq!(version_banner(Path::new(SAMPLE)), version);
    assert_eq!(meta.as_object().unwrap().len(), 3, "{meta}");

    assert!(agent
        .log()
        .contains(&format!("serving on 127.0.0.1:{}", agent.port())));
    assert!(agent.log().contains(arn), "{}", agent.log());

    assert_eq!(agent.request("GET", "/v2/metadata").0, 404);
    assert_eq!(agent.request("POST", "/v1/metadata").0, 405);
    assert_eq!(agent.request("GET", "/sample/exit").0, 405);
    let (status, body) = agent.request("GET", "/v1/tasks");
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::json!({"Tasks": []})
    );
}

#[test]
fn instance_arn_survives_restart_and_build_switch() {
    let host = AgentDir::new();
    let mut agent = host.start(&[]);
    let arn = agent.get_json("/v1/metadata")["ContainerInstanceArn"].clone();

    agent.signal("TERM");
    let status = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "SIGTERM must exit 0");
    assert!(agent.log().contains("exiting"), "{}", agent.log());

    let agent = host.start(&[]);
    assert_eq!(agent.get_json("/v1/metadata")["ContainerInstanceArn"], arn);
    agent.sigkill();

    let v2 = host.stamp("2.0.0", &[]);
    let agent = host.start_exe(&v2, &[]);
    let meta = agent.get_json("/v1/metadata");
    assert_eq!(meta["ContainerInstanceArn"], arn);
    assert!(
        meta["Version"].as_str().unwrap().contains("v2.0.0"),
        "{meta}"
    );
}

#[test]
fn cluster_mismatch_is_terminal() {
    let host = AgentDir::new();
    host.start(&[("ECS_CLUSTER", "blue")]).sigkill();
    let mut agent = host.spawn_exe(Path::new(SAMPLE), &[("ECS_CLUSTER", "green")]);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(5), "{}", agent.log());
    assert!(agent.log().contains("cluster"), "{}", agent.log());
}

#[test]
fn stamp_sets_version_and_changes_bytes() {
    let host = AgentDir::new();
    let a = host.stamp("1.2.3", &[]);
    let b = host.stamp("1.2.4-rc.1", &["--hash", "deadbeef"]);

    let expected_hash: String = Sha256::digest(b"1.2.3")[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        version_banner(&a),
        format!("Amazon ECS Agent - v1.2.3 ({expected_hash})")
    );
    assert_eq!(
        version_banner(&b),
        "Amazon ECS Agent - v1.2.4-rc.1 (deadbeef)"
    );

    let bytes_a = std::fs::read(&a).unwrap();
    let bytes_b = std::fs::read(&b).unwrap();
    assert_ne!(bytes_a, bytes_b);
    let mode = std::fs::metadata(&a).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o755);
    let trailer = format!("\n#sample-agent-version:1.2.3:{expected_hash}:\n");
    assert!(bytes_a.ends_with(trailer.as_bytes()));

    // Stamping from a stamped build strips the old trailer first.
    let original = std::fs::read(SAMPLE).unwrap();
    let out = host.path().join("restamped");
    let status = Command::new(&b)
        .args(["stamp", "1.2.3"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), bytes_a);
    assert_eq!(bytes_a.len(), original.len() + trailer.len());

    for bad in [
        &["stamp", "1.2", "x"][..],
        &["stamp", "v1.2.3", "x"],
        &["stamp", "1.2.3"],
    ] {
        let out = Command::new(SAMPLE)
            .current_dir(host.path())
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!out.stderr.is_empty());
        assert!(!host.path().join("x").exists());
    }
    let out = Command::new(SAMPLE).arg("--frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
    let out = Command::new(SAMPLE).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "SAMPLE_AGENT_FAULT",
        "stage-local",
        "stamp",
        "/v1/tasks",
        "ECS_DATADIR",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn process_tasks_are_listed_found_and_readopted() {
    let host = AgentDir::new();
    let _cleanup = ProcessTasks(host.data_dir());
    let agent = host.start(&[]);

    let task = agent.post_json("/sample/tasks?family=web&containers=2");
    let arn = task["Arn"].as_str().unwrap().to_string();
    assert!(arn.starts_with("arn:aws:ecs:us-west-2:012345678910:task/default/"));
    assert!(is_hex(arn.rsplit('/').next().unwrap(), 32));
    assert_eq!(task["KnownStatus"], "RUNNING");
    assert_eq!(task["DesiredStatus"], "RUNNING");
    assert_eq!(task["Family"], "web");
    assert_eq!(task["Version"], "1");
    let containers = task["Containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    for c in containers {
        assert!(is_hex(c["DockerId"].as_str().unwrap(), 64), "{c}");
        assert!(
            c["DockerName"].as_str().unwrap().starts_with("ecs-web-1-"),
            "{c}"
        );
        assert_eq!(c.as_object().unwrap().len(), 3);
    }
    let docker_id = containers[0]["DockerId"].as_str().unwrap().to_string();

    // Persisted before the answer.
    let pids = task_pids(&host.saved_state());
    assert_eq!(pids.len(), 2);
    for (pid, start) in &pids {
        assert_eq!(start_time(*pid), Some(*start), "task process {pid} runs");
    }

    let all = agent.get_json("/v1/tasks");
    assert_eq!(all["Tasks"].as_array().unwrap().len(), 1);
    assert_eq!(all["Tasks"][0], task);
    assert_eq!(agent.get_json(&format!("/v1/tasks?taskarn={arn}")), task);
    assert_eq!(
        agent.get_json(&format!("/v1/tasks?dockerid={docker_id}")),
        task
    );
    assert_eq!(
        agent.get_json(&format!("/v1/tasks?dockerid={}", &docker_id[..12])),
        task
    );
    assert_eq!(
        agent
            .request("GET", &format!("/v1/tasks?dockerid={}", &docker_id[..11]))
            .0,
        404
    );
    assert_eq!(agent.request("GET", "/v1/tasks?taskarn=arn:nope").0, 404);
    assert_eq!(
        agent
            .request(
                "GET",
                &format!("/v1/tasks?taskarn={arn}&dockerid={docker_id}")
            )
            .0,
        400
    );
    assert_eq!(agent.request("POST", "/sample/tasks?containers=0").0, 400);

    // A SIGKILLed agent leaves its tasks running; the next one adopts them.
    agent.sigkill();
    for (pid, start) in &pids {
        assert_eq!(start_time(*pid), Some(*start), "task {pid} survived");
    }
    let agent = host.start(&[]);
    assert_eq!(agent.get_json("/v1/tasks")["Tasks"][0], task);
    assert!(agent.log().contains("adopted 1 task"), "{}", agent.log());

    // A container that dies shows the task STOPPED on the next read.
    let second = agent.post_json("/sample/tasks?family=db");
    let second_arn = second["Arn"].as_str().unwrap().to_string();
    let state = host.saved_state();
    let (pid, _) = *task_pids(&state).last().unwrap();
    Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    wait_for(
        "the killed task to read STOPPED",
        Duration::from_secs(5),
        || {
            (agent.get_json(&format!("/v1/tasks?taskarn={second_arn}"))["KnownStatus"] == "STOPPED")
                .then_some(())
        },
    );

    // Stopping a task ends its processes.
    let stopped = agent.post_json(&format!("/sample/tasks/stop?taskarn={arn}"));
    assert_eq!(stopped["KnownStatus"], "STOPPED");
    assert_eq!(stopped["DesiredStatus"], "STOPPED");
    for (pid, start) in &pids {
        assert_ne!(start_time(*pid), Some(*start), "task {pid} stopped");
    }
    assert_eq!(
        agent
            .request("POST", "/sample/tasks/stop?taskarn=arn:nope")
            .0,
        404
    );
    let saved = host.saved_state();
    assert_eq!(saved["tasks"][0]["desired_status"], "STOPPED");
}

#[test]
fn exit_request_exits_with_that_code() {
    let host = AgentDir::new();
    let mut agent = host.start(&[]);
    let body = agent.post_json("/sample/exit?code=7");
    assert_eq!(body["exiting"], 7);
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(7));
}

#[test]
fn fault_exit_n_fires_after_serving() {
    let host = AgentDir::new();
    let mut agent = host.start(&[
        ("SAMPLE_AGENT_FAULT", "exit:3"),
        ("SAMPLE_AGENT_EXIT_AFTER", "1s"),
    ]);
    let started = Instant::now();
    agent.get_json("/v1/metadata");
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(3));
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[test]
fn fault_crash_aborts_before_serving() {
    let host = AgentDir::new();
    let mut agent = host.spawn_exe(Path::new(SAMPLE), &[("SAMPLE_AGENT_FAULT", "crash")]);
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.signal(), Some(6), "SIGABRT, got {status}");
    assert!(!agent.log().contains("serving on"), "{}", agent.log());
}

#[test]
fn fault_unhealthy_and_the_unhealthy_request() {
    let host = AgentDir::new();
    let agent = host.start(&[("SAMPLE_AGENT_FAULT", "unhealthy")]);
    let meta = agent.get_json("/v1/metadata");
    assert_eq!(meta["ContainerInstanceArn"], "");
    assert_eq!(meta["Cluster"], "default");
    agent.sigkill();

    let agent = host.start(&[]);
    let arn = agent.get_json("/v1/metadata")["ContainerInstanceArn"].clone();
    assert!(arn.as_str().unwrap().starts_with("arn:aws:ecs:"));
    agent.post_json("/sample/unhealthy");
    assert_eq!(agent.get_json("/v1/metadata")["ContainerInstanceArn"], "");
}

#[test]
fn fault_version_gates_the_env_fault_and_stamped_faults_apply() {
    let host = AgentDir::new();
    let v2 = host.stamp("2.0.0", &[]);
    let gate = [
        ("SAMPLE_AGENT_FAULT", "crash"),
        ("SAMPLE_AGENT_FAULT_VERSION", "2.0.0"),
    ];
    // The old build (1.0.0) is unaffected...
    host.start(&gate).get_json("/v1/metadata");
    // ...the new one crashes.
    let mut agent = host.spawn_exe(&v2, &gate);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).signal(), Some(6));

    // A fault baked into a build applies without any env...
    let faulty = host.stamp("3.0.0", &["--fault", "exit:4"]);
    let mut agent = host.spawn_exe(&faulty, &[]);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(4));
    // ...and the env overrides it.
    let agent = host.start_exe(&faulty, &[("SAMPLE_AGENT_FAULT", "none")]);
    thread::sleep(Duration::from_millis(300));
    agent.get_json("/v1/metadata");

    // A bad fault is a bad environment.
    let mut agent = host.spawn_exe(Path::new(SAMPLE), &[("SAMPLE_AGENT_FAULT", "explode")]);
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(
        agent.log().contains("SAMPLE_AGENT_FAULT"),
        "{}",
        agent.log()
    );
}

#[test]
fn fault_drop_tasks_hides_adopted_tasks() {
    let host = AgentDir::new();
    let _cleanup = ProcessTasks(host.data_dir());
    let agent = host.start(&[]);
    let old = agent.post_json("/sample/tasks");
    agent.sigkill();

    let agent = host.start(&[("SAMPLE_AGENT_FAULT", "drop-tasks")]);
    assert_eq!(agent.get_json("/v1/tasks")["Tasks"], serde_json::json!([]));
    let old_arn = old["Arn"].as_str().unwrap();
    assert_eq!(
        agent
            .request("GET", &format!("/v1/tasks?taskarn={old_arn}"))
            .0,
        404
    );
    let new = agent.post_json("/sample/tasks");
    assert_eq!(
        agent.get_json("/v1/tasks")["Tasks"],
        serde_json::json!([new])
    );
}

#[test]
fn fault_ignore_sigterm_needs_sigkill() {
    let host = AgentDir::new();
    let mut agent = host.start(&[("SAMPLE_AGENT_FAULT", "ignore-sigterm")]);
    agent.signal("TERM");
    thread::sleep(Duration::from_millis(300));
    agent.get_json("/v1/metadata");
    assert!(agent.child.try_wait().unwrap().is_none());
    agent.signal("INT");
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(0));
}

#[test]
fn fault_slow_start_delays_binding() {
    let host = AgentDir::new();
    let started = Instant::now();
    let agent = host.start(&[("SAMPLE_AGENT_FAULT", "slow-start:600ms")]);
    assert!(started.elapsed() >= Duration::from_millis(600));
    agent.get_json("/v1/metadata");
}

#[test]
fn refuses_a_non_loopback_address() {
    let host = AgentDir::new();
    let mut agent = host.spawn_exe(
        Path::new(SAMPLE),
        &[("ECS_WARDEN_INTROSPECTION_URL", "http://0.0.0.0:51678")],
    );
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(1));
    assert!(agent.log().contains("loopback"), "{}", agent.log());
}

#[test]
fn stage_local_writes_desired_image_and_exits_42() {
    let host = AgentDir::new();
    let build = host.stamp("1.5.0", &[]);

    let agent = host.start(&[]);
    let (status, body) = agent.request(
        "POST",
        &format!("/sample/stage-local?file={}", build.display()),
    );
    assert_eq!(status, 400, "no ECS_UPDATE_DOWNLOAD_DIR: {body}");
    agent.sigkill();

    let cache = host.path().join("cache/ecs");
    let mut agent = host.start(&[("ECS_UPDATE_DOWNLOAD_DIR", cache.to_str().unwrap())]);
    let (status, _) = agent.request("POST", "/sample/stage-local?file=/no/such/file");
    assert_eq!(status, 400);
    let answer = agent.post_json(&format!("/sample/stage-local?file={}", build.display()));
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(42));

    let desired = std::fs::read_to_string(cache.join("desired-image")).unwrap();
    let name = desired.strip_suffix('\n').expect("ends with a newline");
    assert!(
        !name.contains('/') && name.ends_with(".ecs-update.bin"),
        "{desired:?}"
    );
    assert_eq!(
        std::fs::read(cache.join(name)).unwrap(),
        std::fs::read(&build).unwrap()
    );
    assert_eq!(answer["staged"], cache.join(name).to_str().unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// A fake warden on a unix socket that records what it is sent.
fn fake_warden(
    socket: &Path,
    stage_status: u16,
) -> mpsc::Receiver<(String, String, Option<String>, Value)> {
    let server = tiny_http::Server::http_unix(socket).unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = String::new();
            request.as_reader().read_to_string(&mut body).unwrap();
            let content_type = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Content-Type"))
                .map(|h| h.value.to_string());
            let path = request.url().to_string();
            let status = if path == "/v1/agent/stage" {
                stage_status
            } else {
                200
            };
            let answer = format!("{{\"answered\": \"{path}\"}}");
            let _ = tx.send((
                request.method().to_string(),
                path,
                content_type,
                serde_json::from_str(&body).unwrap_or(Value::Null),
            ));
            let _ =
                request.respond(tiny_http::Response::from_string(answer).with_status_code(status));
        }
    });
    rx
}

#[test]
fn request_update_stages_then_performs_over_the_control_socket() {
    let host = AgentDir::new();
    let socket = host.path().join("control.sock");
    let seen = fake_warden(&socket, 200);
    let agent = host.start(&[("ECS_WARDEN_CONTROL_SOCKET", socket.to_str().unwrap())]);

    let sig = "ab".repeat(32);
    let answer = agent.post_json(&format!(
        "/sample/request-update?location=http%3A%2F%2F127.0.0.1%3A9%2Fagent.tar&signature={sig}&version=1.2.3"
    ));
    assert_eq!(answer["stage"]["status"], 200, "{answer}");
    assert_eq!(answer["stage"]["body"]["answered"], "/v1/agent/stage");
    assert_eq!(answer["perform"]["status"], 200, "{answer}");

    let (method, path, content_type, body) = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        (method.as_str(), path.as_str()),
        ("POST", "/v1/agent/stage")
    );
    assert_eq!(content_type.as_deref(), Some("application/json"));
    assert_eq!(
        body,
        serde_json::json!({
            "location": "http://127.0.0.1:9/agent.tar",
            "signature": sig,
            "version": "1.2.3",
        })
    );
    let (_, path, _, body) = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(path, "/v1/agent/perform");
    assert_eq!(body, serde_json::json!({ "signature": sig }));
}

#[test]
fn request_update_does_not_perform_after_a_failed_stage() {
    let host = AgentDir::new();
    let socket = host.path().join("control.sock");
    let seen = fake_warden(&socket, 409);
    let agent = host.start(&[("ECS_WARDEN_CONTROL_SOCKET", socket.to_str().unwrap())]);
    let answer = agent.post_json("/sample/request-update?location=x&signature=y");
    assert_eq!(answer["stage"]["status"], 409, "{answer}");
    assert_eq!(answer["perform"], Value::Null, "{answer}");
    let (_, _, _, body) = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(
        body,
        serde_json::json!({ "location": "x", "signature": "y" })
    );
    assert!(
        seen.recv_timeout(Duration::from_millis(300)).is_err(),
        "no perform"
    );

    // No socket at all: a gateway error, not a hang.
    drop(agent);
    let agent = host.start(&[(
        "ECS_WARDEN_CONTROL_SOCKET",
        host.path().join("absent.sock").to_str().unwrap(),
    )]);
    let (status, body) = agent.request("POST", "/sample/request-update?location=x&signature=y");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("cannot connect"), "{body}");
}

// --------------------------------------------------------------- docker

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker").args(args).output().unwrap()
}

/// Removes every container an agent started, by its label, when dropped.
struct Containers(String);

impl Drop for Containers {
    fn drop(&mut self) {
        let out = docker(&[
            "ps",
            "-aq",
            "--filter",
            &format!("label=ecs-warden.sample-agent={}", self.0),
        ]);
        let ids = String::from_utf8_lossy(&out.stdout);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            docker(&args);
        }
    }
}

fn inspect(id: &str, format: &str) -> String {
    let out = docker(&["inspect", "--format", format, id]);
    assert!(out.status.success(), "docker inspect {id}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn docker_tasks_keep_running_across_agent_sigkill() {
    if !docker_available("sample_agent::docker_tasks_keep_running_across_agent_sigkill") {
        return;
    }
    ensure_task_image();
    let host = AgentDir::new();
    // A cluster of its own: a warden performing an exit-42 update in a test
    // running beside this one lists the engine's task containers of its
    // cluster (`default`), and this test kills one of these.
    let runtime = [
        ("SAMPLE_AGENT_TASK_RUNTIME", "docker"),
        ("ECS_CLUSTER", "sample-agent-docker-test"),
    ];
    let agent = host.start(&runtime);
    let arn = agent.get_json("/v1/metadata")["ContainerInstanceArn"]
        .as_str()
        .unwrap()
        .to_string();
    let instance_id = arn.rsplit('/').next().unwrap().to_string();
    let _cleanup = Containers(instance_id.clone());

    let task = agent.post_json("/sample/tasks?family=web&containers=2");
    let task_arn = task["Arn"].as_str().unwrap().to_string();
    assert_eq!(task["KnownStatus"], "RUNNING");
    let ids: Vec<String> = task["Containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["DockerId"].as_str().unwrap().to_string())
        .collect();
    let mut started_at = Vec::new();
    for (id, c) in ids.iter().zip(task["Containers"].as_array().unwrap()) {
        assert!(is_hex(id, 64), "{id}");
        assert_eq!(inspect(id, "{{.State.Running}}"), "true");
        assert_eq!(
            format!("/{}", c["DockerName"].as_str().unwrap()),
            inspect(id, "{{.Name}}")
        );
        assert_eq!(
            inspect(
                id,
                "{{index .Config.Labels \"com.amazonaws.ecs.task-arn\"}}"
            ),
            task_arn
        );
        assert_eq!(
            inspect(id, "{{index .Config.Labels \"ecs-warden.sample-agent\"}}"),
            instance_id
        );
        started_at.push(inspect(id, "{{.State.StartedAt}}"));
    }

    agent.sigkill();
    let agent = host.start(&runtime);
    let adopted = agent.get_json(&format!("/v1/tasks?taskarn={task_arn}"));
    assert_eq!(adopted, task, "re-adopted unchanged");
    for (id, started) in ids.iter().zip(&started_at) {
        assert_eq!(inspect(id, "{{.State.Running}}"), "true");
        assert_eq!(
            &inspect(id, "{{.State.StartedAt}}"),
            started,
            "not restarted"
        );
    }

    // A container killed behind the agent's back shows after a refresh.
    assert!(docker(&["kill", &ids[1]]).status.success());
    agent.post_json("/sample/tasks/refresh");
    let refreshed = agent.get_json(&format!("/v1/tasks?taskarn={task_arn}"));
    assert_eq!(refreshed["KnownStatus"], "STOPPED");

    let other = agent.post_json("/sample/tasks?family=db");
    let other_id = other["Containers"][0]["DockerId"]
        .as_str()
        .unwrap()
        .to_string();
    let stopped = agent.post_json(&format!(
        "/sample/tasks/stop?taskarn={}",
        other["Arn"].as_str().unwrap()
    ));
    assert_eq!(stopped["KnownStatus"], "STOPPED");
    assert_eq!(inspect(&other_id, "{{.State.Running}}"), "false");
}
