//! A whole host running the real ECS agent under ecs-warden, safely: its
//! own loopback-only network namespace, a private Docker engine jailed in a
//! mount namespace of its own, the control-plane stand-in, and a `Host`
//! root whose warden (and every CLI call) runs inside that sandbox.
//!
//! 1. `RealHost::new(test, runtime)` builds it: the real agent 1.105.1
//!    bundled as AWS ships it (`var/cache/ecs/ecs-agent.tar`, a link to
//!    `ecs-agent-v1.105.1.tar`), the busybox task image loaded into the
//!    engine, the agent's offline configuration in `etc/ecs/ecs.config`,
//!    `ECS_WARDEN_RUNTIME` set.
//! 2. `start()` starts the warden and waits for 1.105.1 to register.
//! 3. Dropping it stops the warden, then the stand-in, the engine and the
//!    namespace (field order).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::real_agent::*;
use super::*;

pub struct RealHost {
    pub host: Host,
    pub standin: Standin,
    pub docker: PrivateDocker,
    pub fx: &'static Fixtures,
    /// `docker` or `native`.
    pub runtime: &'static str,
    /// Files the stand-in serves (`srv/` under the root).
    pub files: PathBuf,
    pub ns: Netns,
}

impl RealHost {
    /// A host with the real agent bundled, not started. `None` (after a
    /// loud skip) where the fixtures or a namespace are not available off CI.
    pub fn new(test: &str, runtime: &'static str) -> Option<RealHost> {
        let fx = fixtures(test)?;
        let ns = Netns::new(test)?;
        let docker = PrivateDocker::start(&ns);
        docker.load(&fx.task_image());
        let mut host = Host::builder()
            .config(&[
                ("ECS_WARDEN_INTROSPECTION_URL", "http://127.0.0.1:51678"),
                ("ECS_WARDEN_RUNTIME", runtime),
                ("ECS_WARDEN_HEALTH_TIMEOUT", "60s"),
                ("ECS_WARDEN_HEALTH_STABLE", "2s"),
                ("ECS_WARDEN_STOP_TIMEOUT", "10s"),
                ("ECS_WARDEN_RESTART_BACKOFF_MIN", "200ms"),
                ("ECS_WARDEN_RESTART_BACKOFF_MAX", "2s"),
            ])
            .build();
        fs::remove_file(host.path("var/cache/ecs/ecs-agent")).unwrap();
        let files = host.path("srv");
        for v in [OLD, NEW, BROKEN] {
            let name = format!("ecs-agent-v{v}.tar");
            std::os::unix::fs::symlink(fx.image(v), files.join(&name)).unwrap();
        }
        let bundled = host.path(&format!("var/cache/ecs/ecs-agent-v{OLD}.tar"));
        fs::copy(fx.image(OLD), &bundled).unwrap();
        std::os::unix::fs::symlink(
            bundled.file_name().unwrap(),
            host.path("var/cache/ecs/ecs-agent.tar"),
        )
        .unwrap();
        let standin = Standin::start(&ns, Some(&files));
        let paths = AgentPaths {
            data_dir: String::new(),
            log_file: String::new(),
            update_dir: String::new(),
            docker_host: docker.host().to_string(),
        };
        // The warden sets the agent's directories itself.
        let env: Vec<(String, String)> = agent_env(&standin, &paths)
            .into_iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "ECS_DATADIR" | "ECS_LOGFILE" | "ECS_UPDATE_DOWNLOAD_DIR"
                )
            })
            .collect();
        let kv: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        host.write_config(&kv);
        host.prefix = [
            "nsenter".to_string(),
            format!("--net={}", ns.path().display()),
            format!("--mount=/proc/{}/ns/mnt", docker.pid()),
            "--wd=.".to_string(),
            "--".to_string(),
        ]
        .into_iter()
        .map(Into::into)
        .collect();
        host.env = vec![("DOCKER_HOST".into(), docker.host().to_string())];
        Some(RealHost {
            host,
            standin,
            docker,
            fx,
            runtime,
            files,
            ns,
        })
    }

    /// Start the warden; wait until the agent answers as `OLD`, registered.
    pub fn start(&mut self) {
        self.host.start();
        self.wait_version(OLD, Duration::from_secs(90));
    }

    /// `/v1/metadata` now (inside the namespace).
    pub fn metadata(&self) -> Option<Value> {
        let (code, body) = self.ns.http_get(METADATA_URL).ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// The version `/v1/metadata` reports, registered (with an ARN).
    pub fn agent_version(&self) -> Option<String> {
        let md = self.metadata()?;
        if md["ContainerInstanceArn"].as_str().unwrap_or("").is_empty() {
            return None;
        }
        let v = md["Version"].as_str()?;
        Some(v.split(" - v").nth(1)?.split(' ').next()?.to_string())
    }

    pub fn wait_version(&self, version: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.agent_version().as_deref() == Some(version) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "agent {version} did not answer within {timeout:?} ({:?}); warden log:\n{}",
                    self.metadata(),
                    self.host.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `/v1/tasks`'s tasks.
    pub fn tasks(&self) -> Vec<Value> {
        self.ns
            .http_get(TASKS_URL)
            .ok()
            .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok())
            .and_then(|v| v["Tasks"].as_array().cloned())
            .unwrap_or_default()
    }

    /// A manifest in `srv/` listing the image tarballs `versions` (served by
    /// the stand-in over loopback http); its URL.
    pub fn manifest(&self, versions: &[&str]) -> String {
        let agents: Vec<Value> = versions
            .iter()
            .map(|v| {
                let name = format!("ecs-agent-v{v}.tar");
                let p = self.fx.image(v);
                json!({
                    "version": v,
                    "arch": std::env::consts::ARCH,
                    "url": self.standin.file_url(&name),
                    "sha256": self.fx.image_sha256(&format!("ecs-agent-v{v}.tar")),
                    "size": fs::metadata(&p).unwrap().len(),
                })
            })
            .collect();
        let doc = json!({"schemaVersion": 1, "agents": agents});
        fs::write(
            self.files.join("manifest.json"),
            serde_json::to_vec_pretty(&doc).unwrap(),
        )
        .unwrap();
        self.standin.file_url("manifest.json")
    }

    /// The `ecs-agent` containers on the engine: (id, running, started at).
    pub fn agent_containers(&self) -> Vec<(String, bool, String)> {
        let ids =
            self.docker
                .docker_ok(&["ps", "-aq", "--no-trunc", "--filter", "name=^/ecs-agent$"]);
        // One may be removed between the `ps` and its `inspect` (the
        // warden removes a dead `ecs-agent` before it creates the next):
        // it is gone, so it is not listed.
        ids.lines()
            .filter_map(|id| {
                let out = self
                    .docker
                    .docker()
                    .args([
                        "inspect",
                        "-f",
                        "{{.State.Running}} {{.State.StartedAt}}",
                        id,
                    ])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())?;
                let f = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let (r, at) = f.split_once(' ')?;
                Some((id.to_string(), r == "true", at.to_string()))
            })
            .collect()
    }

    /// A plain task container on the engine (busybox sleeping); its ID.
    pub fn plain_task(&self, name: &str) -> String {
        self.docker.docker_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            TASK_IMAGE,
            "sleep",
            "3600",
        ])
    }

    /// (ID, running, StartedAt) of a container.
    pub fn container(&self, id: &str) -> (bool, String) {
        let f = self.docker.docker_ok(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.StartedAt}}",
            id,
        ]);
        let (r, at) = f.split_once(' ').unwrap();
        (r == "true", at.to_string())
    }

    /// The agent's process ID (from `status`).
    pub fn agent_pid(&self) -> Option<i32> {
        self.host.agent_pid()
    }

    /// The real agent's own log under the root.
    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.host.path("var/log/ecs/ecs-agent.log")).unwrap_or_default()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.host.path(rel)
    }
}

/// A tarball at `dest` that is `src` with one byte changed (a wrong hash).
pub fn corrupt_copy(src: &Path, dest: &Path) {
    let mut bytes = fs::read(src).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xff;
    fs::write(dest, bytes).unwrap();
}
