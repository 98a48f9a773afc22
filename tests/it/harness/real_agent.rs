//! Real-agent test support: the fixtures, loopback-only sandboxes with a
//! private Docker engine, and the control-plane stand-in.
//!
//! Apart from the skip/fail switch it uses nothing else from the harness.
//! Everything is done by `scripts/real-agent.sh` and
//! `scripts/ecs-standin.py`, which the demo and the benchmarks use too; this
//! module owns the Rust side: values that clean up when dropped, even when
//! the test panics.
//!
//! 1. `fixtures(test)` builds (once, cached in `target/real-agent/`) the
//!    binaries and image tarballs, or skips or fails the test: the one
//!    switch is `CI` (non-empty: a missing fixture or tool fails the test;
//!    otherwise it skips with a loud `!!!! SKIPPING ... !!!!`).
//! 2. `Netns::new(test)` makes a network namespace holding only `lo`
//!    (sweeping first, once per process, the sandboxes of dead test runs).
//!    The real agent runs only in there: `Netns::command` for a process,
//!    `Netns::run` for code of this process (a thread that `setns`es).
//! 3. `PrivateDocker::start(&netns)` runs a private `dockerd` in it, in a
//!    private mount namespace (the "jail") whose /etc, /usr, /var, /root
//!    and /mnt are overlays, so nothing the engine, ecs-init or a native
//!    agent writes there reaches the host. `jail_command` runs a process
//!    in the namespace and the jail; `jail_path` reaches a file in it.
//! 4. `Standin::start(&netns, files)` runs the ECS control-plane stand-in
//!    in it; tests drive it over its unix socket (not network-namespaced).
//! 5. Declare the `Netns` first: locals drop in reverse order, so the
//!    stand-in and the engine stop before the namespace is deleted (which
//!    also kills anything still inside).

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The project root (where `scripts/` is).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn script() -> PathBuf {
    project_root().join("scripts/real-agent.sh")
}

/// Where the fixtures are cached (`ECS_WARDEN_REAL_AGENT_CACHE` overrides).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("ECS_WARDEN_REAL_AGENT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target/real-agent"))
}

/// Where sandboxes keep their state (`ECS_WARDEN_SANDBOX_BASE` overrides).
pub fn sandbox_base() -> PathBuf {
    std::env::var_os("ECS_WARDEN_SANDBOX_BASE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/ecs-warden-sandboxes"))
}

/// The harness's one skip/fail switch (`tools::unavailable`): with `CI`
/// set (non-empty) a missing fixture or tool fails the test; elsewhere the
/// test skips, loudly. Returns `None`
/// so callers can write `let Some(x) = ... else { return };`.
pub fn unavailable<T>(test: &str, why: &str) -> Option<T> {
    super::tools::unavailable(test, why);
    None
}

fn run_script(args: &[&str]) -> Result<String, String> {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .env("ECS_WARDEN_REAL_AGENT_CACHE", cache_dir())
        .env("ECS_WARDEN_SANDBOX_BASE", sandbox_base())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "real-agent.sh {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ---- fixtures ---------------------------------------------------------------

/// The versions of the real builds.
pub const OLD: &str = "1.105.1";
pub const NEW: &str = "1.105.2";
/// The build whose entrypoint only knows its version.
pub const BROKEN: &str = "1.105.3";
/// The task image inside `task_image()`.
pub const TASK_IMAGE: &str = "ecs-warden-task:latest";
/// The tag of every agent image tarball, as AWS ships it.
pub const AGENT_IMAGE: &str = "amazon/amazon-ecs-agent:latest";

/// Paths into the fixture cache (`target/real-agent/`).
#[derive(Debug, Clone)]
pub struct Fixtures {
    pub dir: PathBuf,
}

impl Fixtures {
    /// The native agent binary of `version` (OLD or NEW); for BROKEN, the
    /// script that is the broken image's entrypoint.
    pub fn agent_bin(&self, version: &str) -> PathBuf {
        if version == BROKEN {
            return self
                .dir
                .join(format!("bin/amazon-ecs-agent-{BROKEN}-broken"));
        }
        self.dir.join(format!("bin/amazon-ecs-agent-{version}"))
    }
    /// ecs-init 1.105.1.
    pub fn init_bin(&self) -> PathBuf {
        self.dir.join("bin/amazon-ecs-init-1.105.1")
    }
    /// `ecs-agent-v<version>.tar`, the `docker save` of `AGENT_IMAGE`.
    pub fn image(&self, version: &str) -> PathBuf {
        self.images_dir().join(format!("ecs-agent-v{version}.tar"))
    }
    /// `ecs-warden-task.tar`, the `docker save` of `TASK_IMAGE`.
    pub fn task_image(&self) -> PathBuf {
        self.images_dir().join("ecs-warden-task.tar")
    }
    /// The image tarballs (a directory the stand-in can serve).
    pub fn images_dir(&self) -> PathBuf {
        self.dir.join("images")
    }
    /// The SHA-256 of a tarball in `images_dir()`, from its SHA256SUMS.
    pub fn image_sha256(&self, file: &str) -> String {
        let sums = std::fs::read_to_string(self.images_dir().join("SHA256SUMS"))
            .expect("read images/SHA256SUMS");
        sums.lines()
            .find_map(|l| {
                let (sum, name) = l.split_once("  ")?;
                (name == file).then(|| sum.to_string())
            })
            .unwrap_or_else(|| panic!("{file} is not in images/SHA256SUMS"))
    }
}

/// The fixtures, built on first use (about a minute, once; milliseconds
/// after). Needs root and ../shared/real-agent/.
pub fn fixtures(test: &str) -> Option<&'static Fixtures> {
    static FIX: OnceLock<Result<Fixtures, String>> = OnceLock::new();
    let got = FIX.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return Err("the real-agent fixtures need root (namespaces, dockerd)".into());
        }
        run_script(&["fixtures"]).map(|dir| Fixtures {
            dir: PathBuf::from(dir),
        })
    });
    match got {
        Ok(f) => Some(f),
        Err(e) => unavailable(test, e),
    }
}

// ---- network namespaces ------------------------------------------------------

/// A network namespace with nothing but loopback, and its state directory.
/// Dropping it kills everything still inside and deletes it.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Make one, or skip (fail in CI) when this machine cannot.
    pub fn new(test: &str) -> Option<Netns> {
        static SWEPT: OnceLock<()> = OnceLock::new();
        if !nix::unistd::geteuid().is_root() {
            return unavailable(test, "a network namespace needs root");
        }
        SWEPT.get_or_init(|| {
            if let Err(e) = run_script(&["sweep"]) {
                eprintln!("real-agent: sweep failed: {e}");
            }
        });
        let owner = std::process::id().to_string();
        match run_script(&["netns-up", "--owner", &owner]) {
            Ok(name) => Some(Netns { name }),
            Err(e) => unavailable(
                test,
                &format!("cannot make a loopback-only network namespace: {e}"),
            ),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The namespace handle, for `nsenter --net=` or `setns`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }

    /// Where this sandbox keeps its state (sockets, the engine's data).
    pub fn state_dir(&self) -> PathBuf {
        sandbox_base().join(&self.name)
    }

    /// `program` run inside the namespace (`nsenter --net`, which execs it:
    /// the child's PID is the program's).
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        c
    }

    /// Run `f` on a thread that has entered the namespace: its sockets (and
    /// any process it spawns) are in there.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.path();
        std::thread::scope(|s| {
            s.spawn(move || {
                let ns = std::fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
                    .unwrap_or_else(|e| panic!("setns into {}: {e}", path.display()));
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `GET url` from inside the namespace: (status, body), or why not.
    pub fn http_get(&self, url: &str) -> Result<(u16, String), String> {
        self.run(|| {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(3))
                .build();
            match agent.get(url).call() {
                Ok(r) => {
                    let code = r.status();
                    Ok((code, r.into_string().unwrap_or_default()))
                }
                Err(ureq::Error::Status(code, r)) => {
                    Ok((code, r.into_string().unwrap_or_default()))
                }
                Err(e) => Err(format!("GET {url}: {e}")),
            }
        })
    }

    /// Poll `GET url` inside the namespace until it answers 200 with JSON.
    pub fn wait_json(&self, url: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last: String;
        loop {
            match self.http_get(url) {
                Ok((200, body)) => match serde_json::from_str(&body) {
                    Ok(v) => return v,
                    Err(e) => last = format!("not JSON ({e}): {body}"),
                },
                Ok((code, body)) => last = format!("{code}: {body}"),
                Err(e) => last = e,
            }
            if Instant::now() > deadline {
                panic!(
                    "{url} did not answer within {timeout:?} in {}: {last}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run_script(&["netns-down", &self.name]) {
            eprintln!("real-agent: {e}");
        }
    }
}

// ---- the private engine -------------------------------------------------------

/// A private `dockerd` inside a `Netns`, in its own mount namespace (the
/// jail). Dropping it removes every container and stops the engine.
#[derive(Debug)]
pub struct PrivateDocker {
    netns: String,
    netns_path: PathBuf,
    dir: PathBuf,
    child: Child,
    host: String,
}

impl PrivateDocker {
    /// Start it (storage driver: `ECS_WARDEN_SANDBOX_STORAGE`, default
    /// fuse-overlayfs) and wait until it answers.
    pub fn start(netns: &Netns) -> PrivateDocker {
        let dir = netns.state_dir();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("dockerd.log"))
            .expect("open dockerd.log");
        let child = Command::new("bash")
            .arg(script())
            .args(["dockerd-exec", netns.name()])
            .env("ECS_WARDEN_SANDBOX_BASE", sandbox_base())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn real-agent.sh dockerd-exec");
        let host = format!("unix://{}", dir.join("docker.sock").display());
        let mut d = PrivateDocker {
            netns: netns.name().to_string(),
            netns_path: netns.path(),
            dir,
            child,
            host,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = d
                .docker()
                .args(["version", "--format", "{{.Server.Version}}"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return d;
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!(
                    "the private dockerd of {} exited ({st}): {}",
                    d.netns,
                    d.log_tail()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "the private dockerd of {} did not answer in 60s: {}",
                    d.netns,
                    d.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `DOCKER_HOST` for this engine (`unix://...`).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The engine's socket: mount it as /var/run/docker.sock for the agent.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// The engine's PID (also the jail's).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `docker -H <this engine>` (a unix socket: works from any namespace).
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H").arg(&self.host).env_remove("DOCKER_CONTEXT");
        c
    }

    /// Run `docker ARGS` on this engine; its trimmed stdout, or a panic
    /// with its stderr.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker().args(args).output().expect("run docker");
        assert!(
            out.status.success(),
            "docker {} on {} failed: {}",
            args.join(" "),
            self.netns,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `docker load -i tar`.
    pub fn load(&self, tar: &Path) {
        self.docker_ok(&["load", "-q", "-i", &tar.to_string_lossy()]);
    }

    /// The jail's PID, checked to still be this engine in its own mount
    /// namespace (never the host's).
    fn jail_pid(&self) -> u32 {
        let pid = self.child.id();
        let want = std::fs::read_to_string(self.dir.join("jail-mnt")).expect("read jail-mnt");
        let got = std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .unwrap_or_else(|e| panic!("the private dockerd of {} is gone: {e}", self.netns));
        let host = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        assert_eq!(
            got.to_string_lossy(),
            want.trim(),
            "pid {pid} left its jail"
        );
        assert_ne!(
            got, host,
            "the jail of {} is the host's mount namespace",
            self.netns
        );
        pid
    }

    /// A path as processes in the jail see it (`/proc/<pid>/root/...`).
    pub fn jail_path(&self, abs: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.jail_pid())).join(abs.trim_start_matches('/'))
    }

    /// `program` run in the namespace and the jail (for ecs-init, or a
    /// native agent that would write to /var or /etc).
    pub fn jail_command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.netns_path.display()))
            .arg(format!("--mount=/proc/{}/ns/mnt", self.jail_pid()))
            // Keep the working directory (entering a mount namespace
            // otherwise moves to its root).
            .arg("--wd=.")
            .arg("--")
            .arg(program);
        c
    }

    /// What the jail's processes wrote under the jailed directories
    /// (files, and empty directories with a trailing `/`), from the
    /// overlays' upper layers.
    pub fn jail_writes(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in ["etc", "usr", "var", "root", "mnt"] {
            let up = self.dir.join("jail").join(d).join("up");
            walk(&up, &mut |p| {
                let rel = p.strip_prefix(&up).unwrap();
                if !rel.as_os_str().is_empty() {
                    let slash = if p.is_dir() { "/" } else { "" };
                    out.push(format!("/{d}/{}{slash}", rel.display()));
                }
            });
        }
        out.sort();
        out
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut empty = true;
    for e in rd.flatten() {
        empty = false;
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
    // An empty directory is a write too (a bind source Docker created).
    if empty {
        f(dir);
    }
}

impl Drop for PrivateDocker {
    fn drop(&mut self) {
        if let Err(e) = run_script(&["dockerd-down", &self.netns]) {
            eprintln!("real-agent: {e}");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- the control-plane stand-in -------------------------------------------------

/// The interpreter the stand-in runs under: the real one, not a pyenv shim
/// (a shim forks, so the child's PID would not be the server's).
pub fn python() -> &'static str {
    static PY: OnceLock<String> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("run python3");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    })
}

/// The ECS control-plane stand-in (`scripts/ecs-standin.py`) inside a
/// `Netns`. Dropping it stops it.
#[derive(Debug)]
pub struct Standin {
    child: Child,
    sock: PathBuf,
    info: Value,
}

impl Standin {
    /// Start it in `netns`, serving `files` at `/files/` when given.
    pub fn start(netns: &Netns, files: Option<&Path>) -> Standin {
        Standin::start_with(netns, files, &[])
    }

    /// The same with more arguments (`--heartbeat 1`, `--instance-arn A`...).
    pub fn start_with(netns: &Netns, files: Option<&Path>, args: &[&str]) -> Standin {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = netns.state_dir();
        let sock = dir.join(format!("standin-{n}.sock"));
        let ready = dir.join(format!("standin-{n}.ready"));
        let log = std::fs::File::create(dir.join(format!("standin-{n}.log"))).unwrap();
        let mut cmd = netns.command(python());
        cmd.arg(project_root().join("scripts/ecs-standin.py"))
            .arg("--control")
            .arg(&sock)
            .arg("--ready")
            .arg(&ready)
            .arg("--log")
            .arg(dir.join(format!("standin-{n}.events")));
        if let Some(f) = files {
            cmd.arg("--files").arg(f);
        }
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn the stand-in");
        let deadline = Instant::now() + Duration::from_secs(20);
        let info = loop {
            if let Ok(text) = std::fs::read_to_string(&ready) {
                if let Ok(v) = serde_json::from_str::<Value>(&text) {
                    break v;
                }
            }
            if let Ok(Some(st)) = child.try_wait() {
                let log = std::fs::read_to_string(dir.join(format!("standin-{n}.log")));
                panic!("the stand-in exited ({st}): {}", log.unwrap_or_default());
            }
            assert!(
                Instant::now() < deadline,
                "the stand-in did not start in 20s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Standin { child, sock, info }
    }

    /// Ports, URLs, ARNs (see the stand-in's `info` operation).
    pub fn info(&self) -> &Value {
        &self.info
    }
    /// `ECS_BACKEND_HOST` for the agent.
    pub fn api_url(&self) -> &str {
        self.info["api_url"].as_str().unwrap()
    }
    /// The container instance ARN it hands out.
    pub fn instance_arn(&self) -> &str {
        self.info["instance_arn"].as_str().unwrap()
    }
    pub fn cluster(&self) -> &str {
        self.info["cluster"].as_str().unwrap()
    }
    /// The URL of a file it serves from its `files` directory.
    pub fn file_url(&self, name: &str) -> String {
        format!("{}{name}", self.info["files_url"].as_str().unwrap())
    }

    /// One control request; the answer or the stand-in's error.
    pub fn call(&self, req: Value) -> Result<Value, String> {
        let timeout = req["timeout"].as_f64().unwrap_or(30.0);
        let mut s = UnixStream::connect(&self.sock)
            .map_err(|e| format!("connect {}: {e}", self.sock.display()))?;
        s.set_read_timeout(Some(Duration::from_secs_f64(timeout + 10.0)))
            .unwrap();
        let mut line = serde_json::to_vec(&req).unwrap();
        line.push(b'\n');
        s.write_all(&line).map_err(|e| format!("write: {e}"))?;
        let mut answer = String::new();
        BufReader::new(s)
            .read_line(&mut answer)
            .map_err(|e| format!("read: {e}"))?;
        let v: Value =
            serde_json::from_str(&answer).map_err(|e| format!("bad answer {answer:?}: {e}"))?;
        if v["ok"] == json!(true) {
            Ok(v)
        } else {
            Err(v["error"].as_str().unwrap_or("?").to_string())
        }
    }

    /// The recorded events matching `filter` (`kind`, `type`, `target`,
    /// `after`, `match`).
    pub fn events(&self, filter: Value) -> Vec<Value> {
        let mut req = filter;
        req["op"] = json!("events");
        self.call(req).expect("events")["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `seq` of the newest event (0 when none): pass as `after` to
    /// wait for something new.
    pub fn last_seq(&self) -> u64 {
        self.events(json!({}))
            .last()
            .map_or(0, |e| e["seq"].as_u64().unwrap())
    }

    /// Wait for the first event matching `filter`; panics (with the recent
    /// events) after `timeout`.
    pub fn wait(&self, filter: Value, timeout: Duration) -> Value {
        let mut req = filter.clone();
        req["op"] = json!("wait");
        req["timeout"] = json!(timeout.as_secs_f64());
        match self.call(req) {
            Ok(v) => v["event"].clone(),
            Err(e) => {
                let recent: Vec<String> = self
                    .events(json!({}))
                    .iter()
                    .rev()
                    .take(15)
                    .map(|e| {
                        format!(
                            "{} {} {}",
                            e["seq"],
                            e["kind"],
                            e.get("type").or(e.get("target")).unwrap_or(&Value::Null)
                        )
                    })
                    .collect();
                panic!(
                    "stand-in: {e}\nrecent events (newest first):\n{}",
                    recent.join("\n")
                );
            }
        }
    }

    /// Wait for the agent's `AckRequest` of `message_id`.
    pub fn wait_ack(&self, message_id: &str, timeout: Duration) -> Value {
        self.wait(
            json!({"kind": "acs", "type": "AckRequest", "match": {"message.messageId": message_id}}),
            timeout,
        )
    }

    /// Wait for a `RegisterContainerInstance` after event `after`.
    pub fn wait_register(&self, after: u64, timeout: Duration) -> Value {
        self.wait(
            json!({"kind": "call", "target": "RegisterContainerInstance", "after": after}),
            timeout,
        )
    }

    /// Send `StageUpdateMessage` for `file` (in the served directory, its
    /// SHA-256 as the signature); returns the message ID.
    pub fn stage_update(&self, file: &str) -> String {
        let v = self
            .call(json!({"op": "stage_update", "file": file}))
            .unwrap_or_else(|e| panic!("stage_update {file}: {e}"));
        v["messageId"].as_str().unwrap().to_string()
    }

    /// Send `PerformUpdateMessage` (for the last staged update).
    pub fn perform_update(&self) -> String {
        let v = self
            .call(json!({"op": "perform_update"}))
            .unwrap_or_else(|e| panic!("perform_update: {e}"));
        v["messageId"].as_str().unwrap().to_string()
    }

    /// Send a `PayloadMessage` with one task: one essential container of
    /// `image` running `command` (network mode none). Returns (task ARN,
    /// message ID).
    pub fn run_task(&self, image: &str, command: &[&str]) -> (String, String) {
        let v = self
            .call(json!({"op": "task", "image": image, "command": command}))
            .unwrap_or_else(|e| panic!("task: {e}"));
        (
            v["tasks"][0]["arn"].as_str().unwrap().to_string(),
            v["messageId"].as_str().unwrap().to_string(),
        )
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

// ---- the agent's configuration ------------------------------------------------------

/// Where an agent keeps its state, as the agent sees the paths (host paths
/// natively; container paths in a container).
#[derive(Debug, Clone)]
pub struct AgentPaths {
    pub data_dir: String,
    pub log_file: String,
    pub update_dir: String,
    /// `DOCKER_HOST` as the agent sees it.
    pub docker_host: String,
}

/// The environment the real agent needs to run offline against `standin`:
/// no EC2 metadata (`ECS_EXTERNAL`), static credentials, the stand-in as
/// its backend, state kept across restarts (`ECS_CHECKPOINT`), updates on,
/// no `/ecs` cgroup (so a native agent does not create one on the host),
/// and images never pulled when they are present.
pub fn agent_env(standin: &Standin, paths: &AgentPaths) -> Vec<(String, String)> {
    [
        ("ECS_EXTERNAL", "true"),
        ("AWS_ACCESS_KEY_ID", "AKIDECSWARDENTEST"),
        ("AWS_SECRET_ACCESS_KEY", "ecs-warden-test-secret"),
        (
            "AWS_DEFAULT_REGION",
            standin.info()["region"].as_str().unwrap(),
        ),
        ("ECS_CLUSTER", standin.cluster()),
        ("ECS_BACKEND_HOST", standin.api_url()),
        ("ECS_DATADIR", &paths.data_dir),
        ("ECS_LOGFILE", &paths.log_file),
        ("ECS_LOGLEVEL", "info"),
        ("ECS_CHECKPOINT", "true"),
        ("ECS_UPDATES_ENABLED", "true"),
        ("ECS_UPDATE_DOWNLOAD_DIR", &paths.update_dir),
        ("ECS_ENABLE_TASK_CPU_MEM_LIMIT", "false"),
        ("ECS_IMAGE_PULL_BEHAVIOR", "prefer-cached"),
        ("DOCKER_HOST", &paths.docker_host),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// `docker run` arguments for the agent container as the tests run it:
/// host network, `--init`, the engine's socket as /var/run/docker.sock,
/// the data, log and update directories bind-mounted from `host_dirs`
/// (data, log, update), and `env` (from `agent_env` with the container
/// paths /data, /log/ecs-agent.log, /var/cache/ecs and
/// unix:///var/run/docker.sock).
pub fn agent_container_args(
    docker: &PrivateDocker,
    name: &str,
    host_dirs: (&Path, &Path, &Path),
    env: &[(String, String)],
    image: &str,
) -> Vec<String> {
    let mut a: Vec<String> = ["run", "-d", "--name", name, "--net", "host", "--init"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (k, v) in env {
        a.push("-e".into());
        a.push(format!("{k}={v}"));
    }
    for (host, inside) in [
        (docker.socket().as_path(), "/var/run/docker.sock"),
        (host_dirs.0, "/data"),
        (host_dirs.1, "/log"),
        (host_dirs.2, "/var/cache/ecs"),
    ] {
        a.push("-v".into());
        a.push(format!("{}:{inside}", host.display()));
    }
    a.push(image.into());
    a
}

/// The container paths that go with `agent_container_args`.
pub fn container_paths() -> AgentPaths {
    AgentPaths {
        data_dir: "/data".into(),
        log_file: "/log/ecs-agent.log".into(),
        update_dir: "/var/cache/ecs".into(),
        docker_host: "unix:///var/run/docker.sock".into(),
    }
}

/// The agent's introspection endpoint (fixed port), inside its namespace.
pub const METADATA_URL: &str = "http://127.0.0.1:51678/v1/metadata";
pub const TASKS_URL: &str = "http://127.0.0.1:51678/v1/tasks";

/// Wait for the child to exit, up to `timeout`; its exit code (or -signal).
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Some(st.code().unwrap_or_else(|| -st.signal().unwrap_or(0)));
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
