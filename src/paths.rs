//! Every location ecs-warden touches, derived from one root directory.
//!
//! Nothing else in the crate builds an absolute path: tests, the demo and
//! the benchmarks run whole hosts side by side in temporary roots.

use std::path::{Path, PathBuf};

/// The host layout, relative to the configured root (default `/`).
#[derive(Debug, Clone)]
pub struct Paths {
    pub root: PathBuf,
    /// `etc/ecs/ecs.config`: the operator's config (wins).
    pub etc_config: PathBuf,
    /// `var/lib/ecs/ecs.config`: the packaged defaults.
    pub var_config: PathBuf,
    /// `var/lib/ecs/data/`: the agent's own state (`ECS_DATADIR`).
    pub data_dir: PathBuf,
    /// `var/lib/ecs-warden/`: the warden's durable state.
    pub warden_dir: PathBuf,
    /// `var/lib/ecs-warden/agents/`: one directory per build.
    pub agents_dir: PathBuf,
    /// `var/cache/ecs/`: downloads, the bundled agent, `desired-image`.
    pub cache_dir: PathBuf,
    /// `run/ecs-warden/`: lock and control socket (volatile).
    pub run_dir: PathBuf,
    /// `var/log/ecs/`: where ECS tools collect logs from.
    pub log_dir: PathBuf,
    /// `proc/`: the kernel's knobs for this host's network (`/proc` on a
    /// real host; a test root links it to `/proc` inside its own network
    /// namespace, see `hostnet.rs`).
    pub proc_dir: PathBuf,
}

impl Paths {
    pub fn new(root: impl Into<PathBuf>) -> Paths {
        let root = root.into();
        let warden_dir = root.join("var/lib/ecs-warden");
        Paths {
            etc_config: root.join("etc/ecs/ecs.config"),
            var_config: root.join("var/lib/ecs/ecs.config"),
            data_dir: root.join("var/lib/ecs/data"),
            agents_dir: warden_dir.join("agents"),
            warden_dir,
            cache_dir: root.join("var/cache/ecs"),
            run_dir: root.join("run/ecs-warden"),
            log_dir: root.join("var/log/ecs"),
            proc_dir: root.join("proc"),
            root,
        }
    }

    /// `agents/current`: symlink to the running build's directory.
    pub fn current(&self) -> PathBuf {
        self.agents_dir.join("current")
    }

    /// `agents/previous`: symlink to the build `current` replaced.
    pub fn previous(&self) -> PathBuf {
        self.agents_dir.join("previous")
    }

    /// `agents/<version>/`.
    pub fn build_dir(&self, version: &str) -> PathBuf {
        self.agents_dir.join(version)
    }

    /// The executable the supervisor starts: `agents/current/ecs-agent`.
    pub fn current_agent(&self) -> PathBuf {
        self.current().join(AGENT_FILE)
    }

    /// The agent shipped with the package: `var/cache/ecs/ecs-agent`.
    pub fn bundled_agent(&self) -> PathBuf {
        self.cache_dir.join(AGENT_FILE)
    }

    /// `var/cache/ecs/desired-image`: written by the agent before exit 42.
    pub fn desired_image(&self) -> PathBuf {
        self.cache_dir.join("desired-image")
    }

    /// Download in progress for `version`, beside the store (same file
    /// system, so installing it is a rename).
    pub fn partial(&self, version: &str) -> PathBuf {
        self.agents_dir.join(format!(".{version}.partial"))
    }

    /// PID and start time of the agent the warden started last.
    pub fn agent_record(&self) -> PathBuf {
        self.run_dir.join("agent.json")
    }

    /// State passed from one program image to the next by `reexec`.
    pub fn handoff(&self) -> PathBuf {
        self.run_dir.join("handoff.json")
    }

    pub fn lock(&self) -> PathBuf {
        self.run_dir.join("lock")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.run_dir.join("control.sock")
    }

    /// The update journal: `var/lib/ecs-warden/state.json`.
    pub fn state(&self) -> PathBuf {
        self.warden_dir.join("state.json")
    }

    /// Every journal transition, one JSON object a line.
    pub fn history(&self) -> PathBuf {
        self.warden_dir.join("history.jsonl")
    }

    /// Versions that failed their health gate and are refused.
    pub fn quarantine(&self) -> PathBuf {
        self.warden_dir.join("quarantine.json")
    }

    /// `var/log/ecs/ecs-init.log`: the warden's own log, where ecs-init kept
    /// its own (ECS log collectors read it).
    pub fn init_log(&self) -> PathBuf {
        self.log_dir.join("ecs-init.log")
    }

    /// `mnt/ecs/ebs/`: the EBS task-attach mount point ecs-init creates.
    pub fn ebs_mount_dir(&self) -> PathBuf {
        self.root.join("mnt/ecs/ebs")
    }

    /// `run/ecs-warden/hostnet.json`: what `pre-start` changed on the host's
    /// network that `post-stop` must put back (volatile, like the network).
    pub fn hostnet_record(&self) -> PathBuf {
        self.run_dir.join("hostnet.json")
    }

    /// `etc/ecs-warden/credentials`: the local key pair for the TCP API.
    pub fn credentials(&self) -> PathBuf {
        self.root.join("etc/ecs-warden/credentials")
    }

    /// Render a path as the operator sees it on the host (relative to root).
    pub fn display_rel(&self, p: &Path) -> String {
        match p.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => p.display().to_string(),
        }
    }
}

/// The places ecs-init's agent container and default environment use
/// (`ecs-init/config/common.go`), under the root.
impl Paths {
    /// `etc/ecs/`: the operator's config directory, bind-mounted into the
    /// agent's container at `/etc/ecs`.
    pub fn etc_dir(&self) -> PathBuf {
        self.root.join("etc/ecs")
    }

    /// `etc/ecs/ecs.config.json`: the agent's JSON config
    /// (`ECS_AGENT_CONFIG_FILE_PATH`).
    pub fn agent_json_config(&self) -> PathBuf {
        self.root.join("etc/ecs/ecs.config.json")
    }

    /// `var/lib/ecs/`: the instance config directory (packaged defaults,
    /// the agent's data), bind-mounted at `/var/lib/ecs`.
    pub fn instance_config_dir(&self) -> PathBuf {
        self.root.join("var/lib/ecs")
    }

    /// `var/log/ecs/ecs-agent.log`: the agent's own log file (`ECS_LOGFILE`).
    pub fn agent_log(&self) -> PathBuf {
        self.log_dir.join("ecs-agent.log")
    }

    /// `var/log/ecs/exec/`: ECS Exec's logs (`/log/exec` in the container).
    pub fn exec_log_dir(&self) -> PathBuf {
        self.log_dir.join("exec")
    }

    /// `var/lib/ecs/deps/`: managed agents (ECS Exec's binaries), mounted
    /// read-only at `/managed-agents`.
    pub fn managed_deps_dir(&self) -> PathBuf {
        self.instance_config_dir().join("deps")
    }

    /// `var/lib/ecs/gpu/`: the GPU information the agent reads.
    pub fn gpu_info_dir(&self) -> PathBuf {
        self.instance_config_dir().join("gpu")
    }

    /// `root/.aws/`: rotating credentials on external (ECS Anywhere)
    /// hosts, mounted read-only at `/rotatingcreds`.
    pub fn external_creds_dir(&self) -> PathBuf {
        self.root.join("root/.aws")
    }

    /// `etc/os-release`: read for `ECS_DETAILED_OS_FAMILY`.
    pub fn os_release(&self) -> PathBuf {
        self.root.join("etc/os-release")
    }
}

/// File name of the agent executable inside a build directory.
pub const AGENT_FILE: &str = "ecs-agent";
/// Completion marker of a build directory, written last.
pub const ARTIFACT_FILE: &str = "artifact.json";
