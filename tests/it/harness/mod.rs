//! Test harness: whole hosts in temporary roots, running the real binaries.
//!
//! A `Host` is a temporary root with a config, a bundled sample agent and,
//! once started, a real `ecs-warden start` process whose log goes to
//! `<root>/warden.log`. `Host::new()` is the default one; `Host::builder()`
//! makes the variants (task runtime, small bundled agent, update source,
//! loopback API, extra config) and can start it. Dropping a host stops
//! everything it started: the warden, the agent, task processes and task
//! containers.
//!
//! The parts, each the only one of its kind in the tests:
//! - this file: `Host`, `wait_for`, processes, ports, logs, the update
//!   helpers (journal, history, `assert_intact`);
//! - `server`: the loopback HTTP server that misbehaves on purpose
//!   (routes, scripted faults, dribbling, holding, request and byte counts);
//! - `client`: the raw HTTP client (unix socket or loopback TCP);
//! - `tools`: the CI switch: a missing tool fails the test when `CI` is
//!   set, else skips it loudly;
//! - `api`: the API tests' helpers (signed ECS calls, fingerprints,
//!   timing, the AWS CLI and boto3), `sign` their SigV4 signer;
//! - `real_agent`: the real agent's fixtures and loopback-only sandboxes.

#![allow(dead_code)]

pub mod api;
pub mod client;
pub mod real_agent;
pub mod real_host;
pub mod server;
pub mod sign;
pub mod tools;

pub use client::*;
pub use tools::*;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const WARDEN: &str = env!("CARGO_BIN_EXE_ecs-warden");
pub const SAMPLE: &str = env!("CARGO_BIN_EXE_sample-agent");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Poll `f` until it returns `Some`, or panic with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn docker_inspect(id: &str, format: &str) -> Option<String> {
    let out = Command::new("docker")
        .args(["inspect", "--format", format, id])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub struct Host {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    /// The agent's introspection port.
    pub port: u16,
    /// The loopback ECS API's port, on hosts built with `api()`.
    pub api: Option<u16>,
    pub warden: Option<Child>,
    /// Words run before the warden's path in every command (e.g. an
    /// `nsenter` into the real agent's sandbox), and environment added.
    pub prefix: Vec<std::ffi::OsString>,
    pub env: Vec<(String, String)>,
}

/// The cluster of hosts built with `HostBuilder::api`.
pub const CLUSTER: &str = "prod";

/// How a test's host differs from the default one; `Host::builder()`.
///
/// 1. `build()` makes the root: `etc/ecs`, `var/cache/ecs`, `srv/`; the
///    bundled sample agent 1.0.0 (the small, stripped one with `small()`);
///    `etc/ecs/ecs.config` with the test defaults (own introspection port,
///    fast health checks and backoff, the task runtime), then the
///    builder's options, then `config` lines in order (later lines win).
/// 2. `start()` also starts the warden and waits for agent 1.0.0 to answer.
pub struct HostBuilder {
    runtime: String,
    small: bool,
    api: bool,
    config: Vec<(String, String)>,
}

impl HostBuilder {
    /// The sample agent's task runtime: `process` (default) or `docker`.
    pub fn runtime(mut self, runtime: &str) -> Self {
        self.runtime = runtime.to_string();
        self
    }

    /// Bundle the small (stripped) sample agent: what update tests
    /// download, hash and install, so their builds are small too.
    pub fn small(mut self) -> Self {
        self.small = true;
        self
    }

    /// Update from `srv`'s `/manifest.json`, with the small bundled agent.
    pub fn updates_from(self, srv: &server::Server) -> Self {
        self.small()
            .config(&[("ECS_WARDEN_UPDATE_SOURCE", &srv.url("/manifest.json"))])
    }

    /// The loopback ECS API on its own port (`Host::api_port`), cluster
    /// `prod`, and a download read timeout long enough that a download a
    /// test holds (`Fault::Hold`) is not a stall.
    pub fn api(mut self) -> Self {
        self.api = true;
        self
    }

    /// Config lines, after the defaults and the options.
    pub fn config(mut self, kv: &[(&str, &str)]) -> Self {
        self.config
            .extend(kv.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        self
    }

    /// The root, not started.
    pub fn build(self) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("ecs-warden-test-")
            .tempdir()
            .unwrap();
        let root = dir.path().to_path_buf();
        for d in ["etc/ecs", "var/cache/ecs", "srv"] {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        let port = free_port();
        let host = Host {
            dir,
            root,
            port,
            api: self.api.then(free_port),
            warden: None,
            prefix: Vec::new(),
            env: Vec::new(),
        };
        let bundled = host.path("var/cache/ecs/ecs-agent");
        if self.small {
            host.stamp_small("1.0.0", None, &bundled);
        } else {
            host.stamp("1.0.0", None, &bundled);
        }
        host.write_config(&[
            (
                "ECS_WARDEN_INTROSPECTION_URL",
                &format!("http://127.0.0.1:{port}"),
            ),
            ("ECS_WARDEN_RESTART_BACKOFF_MIN", "50ms"),
            ("ECS_WARDEN_RESTART_BACKOFF_MAX", "400ms"),
            ("ECS_WARDEN_STOP_TIMEOUT", "5s"),
            ("ECS_WARDEN_HEALTH_TIMEOUT", "10s"),
            ("ECS_WARDEN_HEALTH_STABLE", "300ms"),
            ("ECS_WARDEN_DOWNLOAD_RETRY_DELAY", "50ms"),
            ("SAMPLE_AGENT_TASK_RUNTIME", &self.runtime),
        ]);
        if let Some(api) = host.api {
            host.write_config(&[
                ("ECS_WARDEN_API_PORT", &api.to_string()),
                ("ECS_CLUSTER", CLUSTER),
                ("ECS_WARDEN_DOWNLOAD_READ_TIMEOUT", "120s"),
            ]);
        }
        let extra: Vec<(&str, &str)> = self
            .config
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        host.write_config(&extra);
        host
    }

    /// The root, its warden started and agent 1.0.0 answering.
    pub fn start(self) -> Host {
        self.start_with_env(&[])
    }

    /// `start`, with `env` in the warden's environment.
    pub fn start_with_env(self, env: &[(&str, &str)]) -> Host {
        let mut host = self.build();
        host.start_with_env(env);
        host.wait_agent("1.0.0");
        host
    }
}

impl Host {
    /// The default host, not started: a root with the sample agent 1.0.0
    /// bundled and a config for tests (its own introspection port, fast
    /// health checks, process tasks).
    pub fn new() -> Host {
        Host::builder().build()
    }

    /// A host that differs from the default one.
    pub fn builder() -> HostBuilder {
        HostBuilder {
            runtime: "process".to_string(),
            small: false,
            api: false,
            config: Vec::new(),
        }
    }

    /// The loopback ECS API's port (hosts built with `api()`).
    pub fn api_port(&self) -> u16 {
        self.api.expect("a host built with HostBuilder::api")
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// Append lines to `etc/ecs/ecs.config` (later lines win).
    pub fn write_config(&self, kv: &[(&str, &str)]) {
        let p = self.path("etc/ecs/ecs.config");
        let mut text = fs::read_to_string(&p).unwrap_or_default();
        for (k, v) in kv {
            text.push_str(&format!("{k}={v}\n"));
        }
        fs::write(p, text).unwrap();
    }

    /// A copy of the sample agent that reports `version` (and `fault`).
    pub fn stamp(&self, version: &str, fault: Option<&str>, out: &Path) -> PathBuf {
        let mut cmd = Command::new(SAMPLE);
        cmd.args(["stamp", version]).arg(out);
        if let Some(f) = fault {
            cmd.args(["--fault", f]);
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "stamp {version}");
        out.to_path_buf()
    }

    pub fn cmd(&self) -> Command {
        let mut c = match self.prefix.split_first() {
            None => Command::new(WARDEN),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(WARDEN);
                c
            }
        };
        c.arg("--root").arg(&self.root);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c.env_remove("ECS_WARDEN_ROOT");
        c.env_remove("NOTIFY_SOCKET");
        c
    }

    /// Run a CLI verb to completion.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// `ecs-warden start` in the background; its stderr goes to warden.log.
    pub fn start(&mut self) {
        self.start_with_env(&[]);
    }

    pub fn start_with_env(&mut self, env: &[(&str, &str)]) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path("warden.log"))
            .unwrap();
        let mut c = self.cmd();
        c.arg("start")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        self.warden = Some(c.spawn().unwrap());
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.path("warden.log")).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        let resp = ureq::get(&self.url(path))
            .timeout(Duration::from_secs(2))
            .call()
            .ok()?;
        serde_json::from_str(&resp.into_string().ok()?).ok()
    }

    pub fn post(&self, path: &str) -> Result<Value, String> {
        match ureq::post(&self.url(path))
            .timeout(Duration::from_secs(30))
            .call()
        {
            Ok(r) => r
                .into_string()
                .map_err(|e| e.to_string())
                .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// The agent's reported version, once it answers.
    pub fn agent_version(&self) -> Option<String> {
        let md = self.get("/v1/metadata")?;
        let v = md["Version"].as_str()?;
        let v = v.split(" - v").nth(1)?.split(' ').next()?;
        Some(v.to_string())
    }

    pub fn wait_agent(&self, version: &str) {
        wait_for(
            &format!("agent {version} to answer"),
            Duration::from_secs(20),
            || (self.agent_version().as_deref() == Some(version)).then_some(()),
        );
    }

    /// The status document from `ecs-warden status --json`.
    pub fn status(&self) -> Option<Value> {
        let out = self.cli(&["status", "--json"]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    pub fn agent_pid(&self) -> Option<i32> {
        self.status()?["supervisor"]["agentPid"]
            .as_i64()
            .map(|p| p as i32)
    }

    /// Start a task through the sample agent; its JSON.
    pub fn start_task(&self, family: &str) -> Value {
        self.post(&format!("/sample/tasks?family={family}"))
            .unwrap_or_else(|e| panic!("start task: {e}"))
    }

    pub fn tasks(&self) -> Vec<Value> {
        self.get("/v1/tasks")
            .and_then(|v| v["Tasks"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Wait for the warden process to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        let child = self.warden.as_mut().expect("warden started");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.warden = None;
                return st.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                panic!(
                    "warden did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn signal_warden(&self, sig: nix::sys::signal::Signal) {
        let pid = self.warden.as_ref().expect("warden started").id() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).unwrap();
    }

    /// Make a manifest at `srv/manifest.json` listing the given builds
    /// (files in `srv/`); returns its file:// URL.
    pub fn file_manifest(&self, builds: &[(&str, &Path)]) -> String {
        let agents: Vec<Value> = builds
            .iter()
            .map(|(v, p)| {
                let bytes = fs::read(p).unwrap();
                serde_json::json!({
                    "version": v,
                    "arch": std::env::consts::ARCH,
                    "url": p.file_name().unwrap().to_string_lossy(),
                    "sha256": sha256_hex(&bytes),
                    "size": bytes.len(),
                })
            })
            .collect();
        let m = serde_json::json!({"schemaVersion": 1, "agents": agents});
        let p = self.path("srv/manifest.json");
        fs::write(&p, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
        format!("file://{}", p.display())
    }

    /// Stop everything this host started.
    pub fn cleanup(&mut self) {
        if let Some(mut w) = self.warden.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(w.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while w.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = w.kill();
            let _ = w.wait();
        }
        // An agent the warden left behind (e.g. after a SIGKILL test).
        if let Ok(b) = fs::read(self.path("run/ecs-warden/agent.json")) {
            if let Ok(v) = serde_json::from_slice::<Value>(&b) {
                if let Some(pid) = v["pid"].as_i64() {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        // Task processes and containers the sample agent recorded.
        if let Ok(b) = fs::read(self.path("var/lib/ecs/data/sample-agent.json")) {
            let text = String::from_utf8_lossy(&b).to_string();
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                kill_tasks(&v);
            }
        }
        // Last resort: anything still running from this root's executables
        // (an agent whose warden was killed before recording it).
        for pid in processes_under(&self.root, true) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn kill_tasks(v: &Value) {
    // Walk the document: any object with a "pid" is a process task's
    // container; any 64-hex "docker_id"/"DockerId" may be a container.
    match v {
        Value::Object(m) => {
            if let Some(pid) = m.get("pid").and_then(Value::as_i64) {
                if pid > 1 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            for key in ["docker_id", "DockerId", "id"] {
                if let Some(id) = m.get(key).and_then(Value::as_str) {
                    if id.len() == 64 && id.bytes().all(|c| c.is_ascii_hexdigit()) {
                        let _ = Command::new("docker")
                            .args(["rm", "-f", id])
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status();
                    }
                }
            }
            for v in m.values() {
                kill_tasks(v);
            }
        }
        Value::Array(a) => a.iter().for_each(kill_tasks),
        _ => {}
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.cleanup();
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------
// Processes, ports and logs: what the supervisor, config and CLI tests look at.

/// Whether `pid` is a live process (not a zombie).
pub fn pid_alive(pid: i32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    match stat.rfind(')') {
        Some(i) => !matches!(stat[i + 1..].trim_start().chars().next(), Some('Z' | 'X')),
        None => false,
    }
}

/// The start time of a live (not zombie) process, in clock ticks since
/// boot (field 22 of `/proc/PID/stat`): with the pid, who it is.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
    if matches!(fields.first(), Some(&("Z" | "X"))) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The process group of `pid` (field 5 of `/proc/PID/stat`).
pub fn pgid_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(2)?.parse().ok()
}

/// The environment of a running process, from `/proc/PID/environ`.
pub fn environ_of(pid: i32) -> std::collections::BTreeMap<String, String> {
    let raw = fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    raw.split(|b| *b == 0)
        .filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect()
}

/// Live processes whose executable lies under `dir`, task processes of the
/// sample agent (which re-executes itself) left out: the agents started
/// from a root.
pub fn agent_processes_under(dir: &Path) -> Vec<i32> {
    processes_under(dir, false)
}

/// Live processes whose executable lies under `dir`, task processes
/// included when `tasks`.
pub fn processes_under(dir: &Path, tasks: bool) -> Vec<i32> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(exe) = fs::read_link(e.path().join("exe")) else {
            continue;
        };
        if !exe.starts_with(&dir) || !pid_alive(pid) {
            continue;
        }
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !tasks && String::from_utf8_lossy(&cmdline).contains("task-process") {
            continue;
        }
        out.push(pid);
    }
    out.sort_unstable();
    out
}

/// Whether something accepts connections on `127.0.0.1:port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(300),
    )
    .is_ok()
}

/// Milliseconds in a `humantime` duration as the warden logs it
/// (`53ms`, `1s 200ms`, `0s`).
pub fn parse_humantime_ms(s: &str) -> Option<f64> {
    let mut total = 0f64;
    for tok in s.split_whitespace() {
        let split = tok.find(|c: char| !c.is_ascii_digit())?;
        let n: f64 = tok[..split].parse().ok()?;
        total += n * match &tok[split..] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1000.0,
            "ms" => 1.0,
            "us" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
    }
    Some(total)
}

/// A process placed in another process's group; killed when dropped.
pub struct Decoy(pub Child);

impl Decoy {
    /// `sleep 600` in process group `pgid` (same session as the test).
    pub fn in_group(pgid: i32) -> Decoy {
        use std::os::unix::process::CommandExt;
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::null())
            .process_group(pgid)
            .spawn()
            .expect("spawn decoy sleep");
        Decoy(child)
    }

    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }

    /// Whether it still runs (reaping it if it died).
    pub fn alive(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Host {
    /// Append lines to `var/lib/ecs/ecs.config` (the packaged defaults).
    pub fn write_var_config(&self, kv: &[(&str, &str)]) {
        let p = self.path("var/lib/ecs/ecs.config");
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut text = fs::read_to_string(&p).unwrap_or_default();
        for (k, v) in kv {
            text.push_str(&format!("{k}={v}\n"));
        }
        fs::write(p, text).unwrap();
    }

    /// Append raw text to `etc/ecs/ecs.config`; the 1-based number of the
    /// first appended line.
    pub fn append_config_text(&self, text: &str) -> usize {
        let p = self.path("etc/ecs/ecs.config");
        let mut cur = fs::read_to_string(&p).unwrap_or_default();
        let line = cur.lines().count() + 1;
        cur.push_str(text);
        fs::write(p, cur).unwrap();
        line
    }

    /// The running warden's pid.
    pub fn warden_pid(&self) -> i32 {
        self.warden.as_ref().expect("warden started").id() as i32
    }

    /// Agents started from this root that are alive now.
    pub fn agent_processes(&self) -> Vec<i32> {
        agent_processes_under(&self.root)
    }

    /// Wait until the warden log contains `needle`; the log.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        wait_for(&format!("{needle:?} in the warden log"), timeout, || {
            let log = self.log();
            log.contains(needle).then_some(log)
        })
    }

    /// Poll the status document until `pred` accepts it.
    pub fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        wait_for(what, timeout, || self.status().filter(|s| pred(s)))
    }

    /// Wait for a running agent other than `not` that answers; its pid.
    pub fn wait_new_agent(&self, not: Option<i32>, timeout: Duration) -> i32 {
        let st = self.wait_status("a (new) running agent", timeout, |s| {
            s["supervisor"]["agentState"] == "RUNNING"
                && s["supervisor"]["agentPid"].as_i64().map(|p| p as i32) != not
        });
        let pid = st["supervisor"]["agentPid"].as_i64().unwrap() as i32;
        wait_for("the agent to answer", timeout, || self.get("/v1/metadata"));
        pid
    }

    /// Warden log lines containing `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// Run `cmd` to completion, killing it (and failing) after `timeout`: a
/// verb that should exit at once must not hang the suite when it does not.
pub fn run_bounded(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn command");
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not exit within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

impl Host {
    /// A CLI verb that must finish within 20 s.
    pub fn cli_bounded(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        run_bounded(c, Duration::from_secs(20))
    }
}

// ----- update helpers (update, faults, crash_matrix) -----

/// The sample agent without its debug info (2-3 MB instead of ~18): the
/// builds the update tests download, hash and install. Made once per test
/// process with `strip`; the full binary where that fails.
pub fn small_sample() -> &'static Path {
    static SMALL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    SMALL.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let tmp = dir.join(format!("sample-agent.{}.stripped", std::process::id()));
        let out = dir.join("sample-agent.stripped");
        let ok = Command::new("strip")
            .arg("-o")
            .arg(&tmp)
            .arg(SAMPLE)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok && fs::rename(&tmp, &out).is_ok() {
            out
        } else {
            let _ = fs::remove_file(&tmp);
            PathBuf::from(SAMPLE)
        }
    })
}

/// What a CLI verb did.
#[derive(Debug)]
pub struct Ran {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// stdout parsed as JSON (`--json` verbs).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

impl Host {
    /// Like `stamp`, from `small_sample()`.
    pub fn stamp_small(&self, version: &str, fault: Option<&str>, out: &Path) -> PathBuf {
        let mut cmd = Command::new(small_sample());
        cmd.args(["stamp", version]).arg(out);
        if let Some(f) = fault {
            cmd.args(["--fault", f]);
        }
        let st = cmd.status().unwrap();
        assert!(st.success(), "stamp {version}");
        out.to_path_buf()
    }

    /// Run a CLI verb; panic (with the warden's log) if it takes over 60 s.
    pub fn run(&self, args: &[&str]) -> Ran {
        let child = self
            .cmd()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        let out = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(out) => out.unwrap(),
            Err(_) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                panic!("`ecs-warden {}` hung; log:\n{}", args.join(" "), self.log());
            }
        };
        Ran {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The update journal (`var/lib/ecs-warden/state.json`), parsed.
    pub fn journal(&self) -> Option<Value> {
        let bytes = fs::read(self.path("var/lib/ecs-warden/state.json")).ok()?;
        Some(serde_json::from_slice(&bytes).expect("state.json is valid JSON"))
    }

    /// Every line of `history.jsonl` (a torn last line is skipped).
    pub fn history(&self) -> Vec<Value> {
        fs::read_to_string(self.path("var/lib/ecs-warden/history.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The states update `id` went through, repeats folded.
    pub fn states_of(&self, id: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for l in self.history().iter().filter(|l| l["id"] == id) {
            let s = l["state"].as_str().unwrap_or("?").to_string();
            if out.last() != Some(&s) {
                out.push(s);
            }
        }
        out
    }

    /// The `update` part of `status --json`.
    pub fn update_doc(&self) -> Value {
        self.status()
            .map(|s| s["update"].clone())
            .unwrap_or(Value::Null)
    }

    /// Wait until the update in the journal has ended (UPDATED or FAILED)
    /// and the warden answers; its `update` status document.
    pub fn wait_update_end(&self, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let u = self.update_doc();
            if matches!(u["state"].as_str(), Some("UPDATED" | "FAILED")) {
                return u;
            }
            if Instant::now() > deadline {
                panic!(
                    "the update did not end within {timeout:?}: {u:#}\nlog:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The host is whole and runs `version`: `current` points at a complete
    /// build of it, the agent answers with it, exactly one agent process
    /// runs, the journal parses and nothing is in flight, no partial
    /// download is left.
    pub fn assert_intact(&self, version: &str) {
        let agents = self.path("var/lib/ecs-warden/agents");
        let cur = fs::read_link(agents.join("current")).expect("agents/current is a symlink");
        let dir = agents.join(&cur);
        let marker: Value = serde_json::from_slice(
            &fs::read(dir.join("artifact.json"))
                .unwrap_or_else(|e| panic!("{}/artifact.json: {e}", dir.display())),
        )
        .expect("artifact.json parses");
        assert_eq!(marker["version"], version, "artifact.json of current");
        assert!(
            dir.join("ecs-agent").is_file(),
            "current has its executable"
        );
        let exe = fs::read(dir.join("ecs-agent")).unwrap();
        assert_eq!(
            marker["sha256"],
            sha256_fast(&exe),
            "current's executable is whole"
        );
        self.wait_agent(version);
        wait_for("exactly one agent process", Duration::from_secs(10), || {
            (self.agent_processes().len() == 1).then_some(())
        });
        if let Some(j) = self.journal() {
            let state = j["state"].as_str().unwrap_or("?");
            assert!(
                matches!(state, "UPDATED" | "FAILED"),
                "journal still in flight: {j:#}"
            );
        }
        let partials: Vec<String> = fs::read_dir(&agents)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".partial") || n.contains(".tmp-"))
            .collect();
        assert!(partials.is_empty(), "leftovers in the store: {partials:?}");
    }
}

/// SHA-256 (hex) of `bytes` through coreutils' `sha256sum` (the crate's
/// sha2 is unoptimised in test builds and takes seconds per build), or
/// `sha256_hex` where that is missing.
pub fn sha256_fast(bytes: &[u8]) -> String {
    use std::io::Write;
    let child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return sha256_hex(bytes);
    };
    let mut stdin = child.stdin.take().unwrap();
    let fed = stdin.write_all(bytes);
    drop(stdin);
    match child.wait_with_output() {
        Ok(out) if out.status.success() && fed.is_ok() => String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string(),
        _ => sha256_hex(bytes),
    }
}
