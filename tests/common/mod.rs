//! Test harness: whole hosts in temporary roots, running the real binaries.
//!
//! A `Host` is a temporary root with a config, a bundled sample agent and,
//! once started, a real `ecs-warden start` process whose log goes to
//! `<root>/warden.log`. Dropping a host stops everything it started: the
//! warden, the agent, task processes and task containers.

#![allow(dead_code)]

pub mod server;

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

/// Whether a Docker engine answers. With `ECS_WARDEN_REQUIRE_DOCKER=1`
/// (set by CI) a missing engine fails the test instead of skipping it.
pub fn docker_available(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        if std::env::var("ECS_WARDEN_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("{test}: a Docker engine is required (ECS_WARDEN_REQUIRE_DOCKER=1) but none answers; run scripts/docker-env.sh");
        }
        eprintln!(
            "\n!!!! SKIPPING {test}: no Docker engine answers (run scripts/docker-env.sh) !!!!\n"
        );
    }
    ok
}

/// Make sure the task image exists (CI imports it in scripts/docker-env.sh).
pub fn ensure_task_image() {
    let have = Command::new("docker")
        .args(["image", "inspect", "ecs-warden-task:latest"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have {
        let st = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/docker-env.sh"
            ))
            .status()
            .expect("run scripts/docker-env.sh");
        assert!(st.success(), "scripts/docker-env.sh failed");
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
    pub port: u16,
    pub warden: Option<Child>,
}

impl Host {
    /// A root with the sample agent 1.0.0 bundled and a config for tests:
    /// its own introspection port, fast health checks, process tasks.
    pub fn new() -> Host {
        Host::with_runtime("process")
    }

    pub fn with_runtime(runtime: &str) -> Host {
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
            warden: None,
        };
        host.stamp("1.0.0", None, &host.root.join("var/cache/ecs/ecs-agent"));
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
            ("SAMPLE_AGENT_TASK_RUNTIME", runtime),
        ]);
        host
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
        let mut c = Command::new(WARDEN);
        c.arg("--root").arg(&self.root);
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

// ----- update helpers (tests/update.rs, faults.rs, crash_matrix.rs) -----

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

    /// Replace the bundled 1.0.0 by a small one (before `start`).
    pub fn small_bundled(&self) {
        self.stamp_small("1.0.0", None, &self.path("var/cache/ecs/ecs-agent"));
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

    /// Agent processes running a build of this root (task processes,
    /// which re-execute the same binary, are left out).
    pub fn agent_processes(&self) -> Vec<i32> {
        let store = self.path("var/lib/ecs-warden/agents");
        let mut pids = Vec::new();
        for e in fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(exe) = fs::read_link(e.path().join("exe")) else {
                continue;
            };
            if !exe.starts_with(&store) {
                continue;
            }
            let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
            let argv: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            if argv.iter().any(|a| a.starts_with(b"task-process"))
                || argv[0].starts_with(b"sample-agent-task")
            {
                continue;
            }
            pids.push(pid);
        }
        pids
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
