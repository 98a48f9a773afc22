//! The `ecs-agent` container exactly as ecs-init creates it: a pure
//! function from the config, the agent's environment, the paths and the
//! host facts to the Engine API's `POST /containers/create` body.
//!
//! Host paths that are ecs-warden's (logs, data, config, cache, managed
//! agents...) are taken under the configured root; the operating system's
//! (`/proc`, `/sys/fs/cgroup`, `/lib`, the docker socket, plugin
//! directories) stay host paths. Keys ecs-init reads from its own process
//! environment (systemd fills it from `/etc/ecs/ecs.config`) are read from
//! the merged config.
//!
//! Each item and the ecs-init line it mirrors (upstream at the real
//! agent's commit; `docker.go` and `docker_config.go` are in
//! `ecs-init/docker/`, `common.go` in `ecs-init/config/`):
//!
//! | item | value | ecs-init |
//! |---|---|---|
//! | name | `ecs-agent` | common.go:36, docker.go:272 |
//! | image | `amazon/amazon-ecs-agent:latest` | common.go:33, docker.go:378 |
//! | environment | `agent_env::environment` (defaults, the user's files, forced values) | docker.go:311-382 |
//! | labels | `ECS_AGENT_LABELS` as a JSON object of strings; invalid or `{}`: none | docker.go:380, 384-398 |
//! | network mode | `host` | docker.go:55, docker_config.go:67 |
//! | user namespace mode | `host` | docker.go:57, docker_config.go:68 |
//! | capabilities | `NET_ADMIN`, `SYS_ADMIN`; none with `ECS_EXTERNAL=true` | docker.go:145,151, docker_config.go:56-62 |
//! | `Init` | `true` (API ≥ 1.25, always with this client) | docker_config.go:74-76 |
//! | AppArmor | `apparmor:<ECS_AGENT_APPARMOR_PROFILE or ecs-agent-default>` when the host supports AppArmor | docker_config.go:78-80, common.go:351-358 |
//! | privileged | only with `ECS_AGENT_RUN_PRIVILEGED=true` (exactly) | docker_config.go:82-84, common.go:340-343 |
//! | PID namespace | `host` when `ECS_AGENT_PID_NAMESPACE_HOST` parses (Go `ParseBool`) as true | docker_config.go:87-89, common.go:374-381 |
//! | log driver | `json-file`, `max-size=16m` (`ECS_INIT_DOCKER_LOG_FILE_SIZE`), `max-file=4` (`ECS_INIT_DOCKER_LOG_FILE_NUM`) unless `ECS_LOG_OPTS` is a JSON object; `ECS_LOG_DRIVER` from ecs-init's list, an unknown one falls back to the defaults | docker_config.go:54, common.go:58-83, 137-146, 285-326 |
//! | restart policy | `no`: the supervisor restarts the agent (ecs-init sets none, which the engine takes as `no`) | docker.go:271-275 |
//! | bind: docker socket | `/var/run:/var/run`; with `DOCKER_HOST=unix://S`: `S:` + the files' `DOCKER_HOST` path, else `/var/run/docker.sock` | docker.go:462, 534-546, common.go:231-238 |
//! | bind: logs | `<root>/var/log/ecs:/log` | docker.go:463 |
//! | bind: data | `<root>/var/lib/ecs/data:/data` | docker.go:464 |
//! | bind: config | `<root>/etc/ecs:/etc/ecs` | docker.go:465 |
//! | bind: cache | `<root>/var/cache/ecs:/var/cache/ecs` | docker.go:466 |
//! | bind: cgroups | `/sys/fs/cgroup:/sys/fs/cgroup` | docker.go:467, config_al2.go:20 |
//! | bind: instance config | `<root>/var/lib/ecs:/var/lib/ecs` | docker.go:469 |
//! | bind: exec logs | `<root>/var/log/ecs/exec:/log/exec` | docker.go:470 |
//! | bind: CA store | `/etc/pki:/etc/pki:ro` when the host has it | docker.go:474-477, config_al2.go:22 |
//! | bind: external credentials | `<root>/root/.aws:/rotatingcreds:ro` with `ECS_EXTERNAL=true` | docker.go:479-482, 95-97 |
//! | bind: GPU info | `<root>/var/lib/ecs/gpu:/var/lib/ecs/gpu` with `ECS_ENABLE_GPU_SUPPORT=true` and `/dev/nvidia*` | docker.go:485-490 |
//! | bind: gMSA socket | the credentials-fetcher socket, same path, with `ECS_GMSA_SUPPORTED=true` when it exists | docker.go:492-498, 510-524 |
//! | bind: plugins | `/run/docker/plugins`, `/etc/docker/plugins`, `/usr/lib/docker/plugins`, same paths, `:ro` | docker.go:501, 549-555 |
//! | bind: managed agents | `<root>/var/lib/ecs/deps:/managed-agents:ro` when it is a directory | docker.go:504, 562-565 |
//! | bind: ECS Exec config | `<root>/var/lib/ecs/deps/execute-command/config:/managed-agents/execute-command/config` when `execute-command` is a directory | docker.go:570-575 |
//! | bind: host proc | `/proc:/host/proc:ro` | docker_config.go:40 |
//! | bind: iptables and its libraries | `/usr/lib`, `/lib`, `/usr/lib64`, `/lib64`, `/etc/alternatives`, `/usr/sbin` (same paths) and `/sbin:/host/sbin`, all `:ro` | docker_config.go:41-47 |
//! | bind: lsblk | `/usr/bin/lsblk:/usr/bin/lsblk` (always: the engine creates a missing source as a directory) | docker_config.go:48 |
//! | bind: nsenter | `/usr/bin/nsenter`, same path, when present | docker_config.go:50, 96-105 |
//! | bind: modinfo | the first of `/sbin/modinfo`, `/usr/sbin/modinfo` present | docker_config.go:51, 109-126 |
//! | bind: cloud-init result | `/var/lib/cloud/data/result.json:...:ro` when present, not with `ECS_EXTERNAL=true` | docker_config.go:52, 130-146 |
//! | bind: warden control socket | `<root>/run/ecs-warden:/run/ecs-warden:ro` | ecs-warden's own (`ECS_WARDEN_CONTROL_SOCKET`) |

use std::collections::BTreeMap;
use std::path::Path;

use crate::agent_env::{CONTAINER_DATA_DIR, CONTAINER_LOG_DIR, CONTAINER_WARDEN_RUN_DIR};
use crate::engine::{ApiVersion, ContainerCreate, HostConfig, LogConfig, RestartPolicy};
use crate::host_facts::{credentials_fetcher_socket, HostFacts, CLOUD_INIT_RESULT, NSENTER};
use crate::paths::Paths;

pub const AGENT_CONTAINER_NAME: &str = "ecs-agent";
pub use crate::agent_image::AGENT_IMAGE;
pub const APPARMOR_DEFAULT_PROFILE: &str = "ecs-agent-default";
/// Log drivers ecs-init accepts in `ECS_LOG_DRIVER` (common.go:137-146).
pub const LOG_DRIVERS: &[&str] = &[
    "awslogs",
    "fluentd",
    "gelf",
    "json-file",
    "journald",
    "logentries",
    "syslog",
    "splunk",
];

/// What the container is made from.
#[derive(Debug, Clone)]
pub struct Inputs<'a> {
    pub paths: &'a Paths,
    /// The merged config (the user's files).
    pub config: &'a BTreeMap<String, String>,
    /// The agent's whole environment (`agent_env::environment` with
    /// `Runtime::Docker`).
    pub env: &'a [(String, String)],
    /// `DOCKER_HOST` in the warden's own environment, if set.
    pub docker_host: Option<&'a str>,
    /// The engine API version in use.
    pub api: ApiVersion,
    pub facts: &'a HostFacts,
}

/// The container to create.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentContainer {
    pub name: &'static str,
    pub create: ContainerCreate,
    /// Config values ecs-init would log and ignore (bad JSON, unknown
    /// driver), for the caller to log.
    pub warnings: Vec<String>,
}

/// The `ecs-agent` container's create body. See the module comment.
pub fn agent_container(i: &Inputs) -> AgentContainer {
    let mut warnings = Vec::new();
    let cfg = |k: &str| i.config.get(k).map(String::as_str);
    let external = cfg("ECS_EXTERNAL") == Some("true");
    let root = |p: &Path| p.display().to_string();

    let mut binds = vec![
        docker_socket_bind(i.docker_host, cfg("DOCKER_HOST")),
        format!("{}:{CONTAINER_LOG_DIR}", root(&i.paths.log_dir)),
        format!("{}:{CONTAINER_DATA_DIR}", root(&i.paths.data_dir)),
        same(&root(&i.paths.etc_dir()), "/etc/ecs"),
        same(&root(&i.paths.cache_dir), "/var/cache/ecs"),
        "/sys/fs/cgroup:/sys/fs/cgroup".to_string(),
        same(&root(&i.paths.instance_config_dir()), "/var/lib/ecs"),
        format!("{}:{CONTAINER_LOG_DIR}/exec", root(&i.paths.exec_log_dir())),
    ];
    if let Some(pki) = &i.facts.pki_dir {
        let pki = root(pki);
        binds.push(format!("{pki}:{pki}:ro"));
    }
    if external {
        binds.push(format!(
            "{}:/rotatingcreds:ro",
            root(&i.paths.external_creds_dir())
        ));
    }
    if cfg("ECS_ENABLE_GPU_SUPPORT") == Some("true") && i.facts.nvidia_gpus {
        binds.push(same(&root(&i.paths.gpu_info_dir()), "/var/lib/ecs/gpu"));
    }
    if cfg("ECS_GMSA_SUPPORTED") == Some("true") && i.facts.credentials_fetcher_socket {
        let sock = credentials_fetcher_socket(i.config);
        binds.push(format!("{sock}:{sock}"));
    }
    for dir in [
        "/run/docker/plugins",
        "/etc/docker/plugins",
        "/usr/lib/docker/plugins",
    ] {
        binds.push(format!("{dir}:{dir}:ro"));
    }
    if i.facts.managed_deps_dir {
        binds.push(format!(
            "{}:/managed-agents:ro",
            root(&i.paths.managed_deps_dir())
        ));
    }
    if i.facts.exec_capability_dir {
        binds.push(format!(
            "{}:/managed-agents/execute-command/config",
            root(&i.paths.managed_deps_dir().join("execute-command/config"))
        ));
    }
    binds.extend(
        [
            "/proc:/host/proc:ro",
            "/usr/lib:/usr/lib:ro",
            "/lib:/lib:ro",
            "/usr/lib64:/usr/lib64:ro",
            "/lib64:/lib64:ro",
            "/sbin:/host/sbin:ro",
            "/etc/alternatives:/etc/alternatives:ro",
            "/usr/sbin:/usr/sbin:ro",
            "/usr/bin/lsblk:/usr/bin/lsblk",
        ]
        .map(String::from),
    );
    if i.facts.nsenter {
        binds.push(format!("{NSENTER}:{NSENTER}"));
    }
    if let Some(m) = &i.facts.modinfo {
        let m = root(m);
        binds.push(format!("{m}:{m}"));
    }
    if !external && i.facts.cloud_init_result {
        binds.push(format!("{CLOUD_INIT_RESULT}:{CLOUD_INIT_RESULT}:ro"));
    }
    if let Some(run_dir) = i.paths.control_socket().parent() {
        binds.push(format!("{}:{CONTAINER_WARDEN_RUN_DIR}:ro", root(run_dir)));
    }

    let security_opt = if i.facts.apparmor {
        let profile = match cfg("ECS_AGENT_APPARMOR_PROFILE") {
            Some(p) if !p.trim().is_empty() => p.to_string(),
            _ => APPARMOR_DEFAULT_PROFILE.to_string(),
        };
        vec![format!("apparmor:{profile}")]
    } else {
        Vec::new()
    };
    let pid_host = cfg("ECS_AGENT_PID_NAMESPACE_HOST").and_then(go_parse_bool) == Some(true);

    let host_config = HostConfig {
        binds,
        network_mode: "host".into(),
        userns_mode: "host".into(),
        pid_mode: if pid_host {
            "host".into()
        } else {
            String::new()
        },
        cap_add: if external {
            Vec::new()
        } else {
            vec!["NET_ADMIN".into(), "SYS_ADMIN".into()]
        },
        init: (i.api
            >= ApiVersion {
                major: 1,
                minor: 25,
            })
        .then_some(true),
        privileged: cfg("ECS_AGENT_RUN_PRIVILEGED") == Some("true"),
        security_opt,
        log_config: Some(log_config(i.config, &mut warnings)),
        restart_policy: Some(RestartPolicy {
            name: "no".into(),
            maximum_retry_count: 0,
        }),
        auto_remove: false,
    };
    let labels_raw = i
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "ECS_AGENT_LABELS")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    AgentContainer {
        name: AGENT_CONTAINER_NAME,
        create: ContainerCreate {
            image: AGENT_IMAGE.into(),
            env: i.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            entrypoint: None,
            cmd: None,
            labels: labels(labels_raw, &mut warnings),
            tty: false,
            host_config,
        },
        warnings,
    }
}

fn same(host: &str, container: &str) -> String {
    format!("{host}:{container}")
}

/// ecs-init's `getDockerSocketBind`: the whole `/var/run` by default (so
/// a socket the engine re-creates stays visible); with `DOCKER_HOST` in
/// the environment, that socket, at the path the files' `DOCKER_HOST`
/// names (the agent reads it there) or at the default path.
fn docker_socket_bind(env_docker_host: Option<&str>, file_docker_host: Option<&str>) -> String {
    match env_docker_host.and_then(|h| h.strip_prefix("unix://")) {
        Some(source) => {
            let dest = file_docker_host
                .and_then(|h| h.strip_prefix("unix://"))
                .unwrap_or("/var/run/docker.sock");
            format!("{source}:{dest}")
        }
        None => "/var/run:/var/run".to_string(),
    }
}

/// ecs-init's `AgentDockerLogDriverConfiguration`.
fn log_config(config: &BTreeMap<String, String>, warnings: &mut Vec<String>) -> LogConfig {
    let get = |k: &str| config.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let mut driver = "json-file".to_string();
    let mut options = parse_log_opts(config.get("ECS_LOG_OPTS").map(String::as_str), warnings);
    if let Some(d) = get("ECS_LOG_DRIVER") {
        if LOG_DRIVERS.contains(&d) {
            driver = d.to_string();
        } else {
            warnings.push(format!(
                "ECS_LOG_DRIVER={d} is not a supported log driver ({}); using json-file with the default options",
                LOG_DRIVERS.join(", ")
            ));
            options = None;
        }
    }
    if driver == "json-file" && options.is_none() {
        options = Some(BTreeMap::from([
            (
                "max-size".to_string(),
                get("ECS_INIT_DOCKER_LOG_FILE_SIZE")
                    .unwrap_or("16m")
                    .to_string(),
            ),
            (
                "max-file".to_string(),
                get("ECS_INIT_DOCKER_LOG_FILE_NUM")
                    .unwrap_or("4")
                    .to_string(),
            ),
        ]));
    }
    LogConfig {
        kind: driver,
        config: options.unwrap_or_default(),
    }
}

/// `ECS_LOG_OPTS` as Go's `json.Decoder.Decode` into `map[string]string`
/// reads it: the first JSON value only; blank or `null` is no options; an
/// object keeps its string members even when others are not strings (Go
/// fills the map and reports the type error); anything else is no options.
/// Note that `{}` is options, empty: the rotation defaults are then not
/// applied, as in ecs-init.
fn parse_log_opts(
    raw: Option<&str>,
    warnings: &mut Vec<String>,
) -> Option<BTreeMap<String, String>> {
    let raw = raw.unwrap_or("");
    let mut values = serde_json::Deserializer::from_str(raw).into_iter::<serde_json::Value>();
    let bad = |warnings: &mut Vec<String>, why: String| {
        warnings.push(format!(
            "ECS_LOG_OPTS={raw}: {why}; expected a JSON object with string values"
        ));
    };
    match values.next() {
        None => None,
        Some(Err(e)) => {
            bad(warnings, e.to_string());
            None
        }
        Some(Ok(serde_json::Value::Null)) => None,
        Some(Ok(serde_json::Value::Object(members))) => {
            let mut out = BTreeMap::new();
            for (k, v) in members {
                match v {
                    serde_json::Value::String(s) => {
                        out.insert(k, s);
                    }
                    other => bad(warnings, format!("{k} is {other}, not a string")),
                }
            }
            Some(out)
        }
        Some(Ok(other)) => {
            bad(warnings, format!("{other} is not an object"));
            None
        }
    }
}

/// `ECS_AGENT_LABELS` as ecs-init's `setLabels` reads it.
fn labels(raw: &str, warnings: &mut Vec<String>) -> BTreeMap<String, String> {
    if raw.is_empty() {
        return BTreeMap::new();
    }
    match serde_json::from_str::<Option<BTreeMap<String, String>>>(raw) {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => {
            warnings.push(format!(
                "ECS_AGENT_LABELS={raw}: {e}; expected a JSON object with string values; the container gets no labels"
            ));
            BTreeMap::new()
        }
    }
}

/// Go's `strconv.ParseBool`.
fn go_parse_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_env::{environment, Runtime};
    use std::path::PathBuf;

    const API: ApiVersion = ApiVersion {
        major: 1,
        minor: 41,
    };

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn build(
        root: &str,
        config: &BTreeMap<String, String>,
        docker_host: Option<&str>,
        facts: &HostFacts,
    ) -> AgentContainer {
        let paths = Paths::new(root);
        let env = environment(config, Runtime::Docker, &paths, facts);
        agent_container(&Inputs {
            paths: &paths,
            config,
            env: &env,
            docker_host,
            api: API,
            facts,
        })
    }

    #[test]
    fn ecs_init_host_config_on_a_bare_host() {
        let c = build("/srv/r", &BTreeMap::new(), None, &HostFacts::default());
        assert_eq!(c.name, "ecs-agent");
        assert_eq!(c.create.image, "amazon/amazon-ecs-agent:latest");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        let h = &c.create.host_config;
        assert_eq!(h.network_mode, "host");
        assert_eq!(h.userns_mode, "host");
        assert_eq!(h.cap_add, vec!["NET_ADMIN", "SYS_ADMIN"]);
        assert_eq!(h.init, Some(true));
        assert!(!h.privileged);
        assert_eq!(h.pid_mode, "");
        assert!(h.security_opt.is_empty());
        assert_eq!(h.restart_policy.as_ref().unwrap().name, "no");
        let log = h.log_config.as_ref().unwrap();
        assert_eq!(log.kind, "json-file");
        assert_eq!(log.config, map(&[("max-file", "4"), ("max-size", "16m")]));
        assert_eq!(
            h.binds,
            vec![
                "/var/run:/var/run",
                "/srv/r/var/log/ecs:/log",
                "/srv/r/var/lib/ecs/data:/data",
                "/srv/r/etc/ecs:/etc/ecs",
                "/srv/r/var/cache/ecs:/var/cache/ecs",
                "/sys/fs/cgroup:/sys/fs/cgroup",
                "/srv/r/var/lib/ecs:/var/lib/ecs",
                "/srv/r/var/log/ecs/exec:/log/exec",
                "/run/docker/plugins:/run/docker/plugins:ro",
                "/etc/docker/plugins:/etc/docker/plugins:ro",
                "/usr/lib/docker/plugins:/usr/lib/docker/plugins:ro",
                "/proc:/host/proc:ro",
                "/usr/lib:/usr/lib:ro",
                "/lib:/lib:ro",
                "/usr/lib64:/usr/lib64:ro",
                "/lib64:/lib64:ro",
                "/sbin:/host/sbin:ro",
                "/etc/alternatives:/etc/alternatives:ro",
                "/usr/sbin:/usr/sbin:ro",
                "/usr/bin/lsblk:/usr/bin/lsblk",
                "/srv/r/run/ecs-warden:/run/ecs-warden:ro",
            ]
        );
        assert!(c.create.labels.is_empty());
        assert!(c
            .create
            .env
            .contains(&"ECS_LOGFILE=/log/ecs-agent.log".to_string()));
        assert!(c.create.env.contains(&"ECS_DATADIR=/data".to_string()));
        // The wire form the engine reads.
        let v = serde_json::to_value(&c.create).unwrap();
        assert_eq!(v["HostConfig"]["LogConfig"]["Config"]["max-size"], "16m");
        assert_eq!(v["HostConfig"]["CapAdd"][1], "SYS_ADMIN");
    }

    #[test]
    fn every_optional_part_of_a_full_host() {
        let facts = HostFacts {
            pki_dir: Some(PathBuf::from("/etc/pki")),
            certs_dir: Some(PathBuf::from("/etc/pki/tls/certs")),
            managed_deps_dir: true,
            exec_capability_dir: true,
            nsenter: true,
            modinfo: Some(PathBuf::from("/usr/sbin/modinfo")),
            cloud_init_result: true,
            nvidia_gpus: true,
            credentials_fetcher_socket: true,
            apparmor: true,
            ebs_mount_dir_ok: true,
            ..HostFacts::default()
        };
        let cfg = map(&[
            ("ECS_ENABLE_GPU_SUPPORT", "true"),
            ("ECS_GMSA_SUPPORTED", "true"),
            ("ECS_AGENT_RUN_PRIVILEGED", "true"),
            ("ECS_AGENT_PID_NAMESPACE_HOST", "T"),
            ("ECS_AGENT_APPARMOR_PROFILE", "  "),
            ("DOCKER_HOST", "unix:///var/run/docker.sock"),
        ]);
        let c = build("/", &cfg, Some("unix:///run/private/docker.sock"), &facts);
        let h = &c.create.host_config;
        let has = |b: &str| h.binds.iter().any(|x| x == b);
        assert_eq!(h.binds[0], "/run/private/docker.sock:/var/run/docker.sock");
        assert!(has("/var/log/ecs:/log"));
        assert!(has("/etc/pki:/etc/pki:ro"));
        assert!(has("/var/lib/ecs/gpu:/var/lib/ecs/gpu"));
        assert!(has(
            "/var/credentials-fetcher/socket/credentials_fetcher.sock:/var/credentials-fetcher/socket/credentials_fetcher.sock"
        ));
        assert!(has("/var/lib/ecs/deps:/managed-agents:ro"));
        assert!(has(
            "/var/lib/ecs/deps/execute-command/config:/managed-agents/execute-command/config"
        ));
        assert!(has("/usr/bin/nsenter:/usr/bin/nsenter"));
        assert!(has("/usr/sbin/modinfo:/usr/sbin/modinfo"));
        assert!(has(
            "/var/lib/cloud/data/result.json:/var/lib/cloud/data/result.json:ro"
        ));
        assert!(!h.binds.iter().any(|b| b.contains("rotatingcreds")));
        assert!(h.privileged);
        assert_eq!(h.pid_mode, "host");
        assert_eq!(h.security_opt, vec!["apparmor:ecs-agent-default"]);
        assert!(c
            .create
            .env
            .contains(&"SSL_CERT_DIR=/etc/pki/tls/certs".to_string()));
    }

    #[test]
    fn external_hosts_drop_capabilities_and_mount_credentials() {
        let facts = HostFacts {
            cloud_init_result: true,
            apparmor: true,
            ..HostFacts::default()
        };
        let cfg = map(&[
            ("ECS_EXTERNAL", "true"),
            ("ECS_AGENT_RUN_PRIVILEGED", "TRUE"),
            ("ECS_AGENT_PID_NAMESPACE_HOST", "yes"),
            ("ECS_AGENT_APPARMOR_PROFILE", "custom"),
        ]);
        let c = build("/srv/r", &cfg, None, &facts);
        let h = &c.create.host_config;
        assert!(h.cap_add.is_empty());
        assert!(h
            .binds
            .contains(&"/srv/r/root/.aws:/rotatingcreds:ro".to_string()));
        assert!(!h.binds.iter().any(|b| b.contains("cloud")));
        assert!(!h.privileged, "only the exact word true");
        assert_eq!(h.pid_mode, "", "not a Go boolean");
        assert_eq!(h.security_opt, vec!["apparmor:custom"]);
        assert!(c
            .create
            .env
            .contains(&"ECS_ENABLE_TASK_ENI=false".to_string()));
    }

    #[test]
    fn docker_socket_binds() {
        assert_eq!(docker_socket_bind(None, None), "/var/run:/var/run");
        assert_eq!(
            docker_socket_bind(None, Some("unix:///x.sock")),
            "/var/run:/var/run",
            "the files alone do not move the socket"
        );
        assert_eq!(
            docker_socket_bind(Some("unix:///tmp/d.sock"), None),
            "/tmp/d.sock:/var/run/docker.sock"
        );
        assert_eq!(
            docker_socket_bind(Some("unix:///tmp/d.sock"), Some("unix:///a/b.sock")),
            "/tmp/d.sock:/a/b.sock"
        );
        assert_eq!(
            docker_socket_bind(Some("tcp://1.2.3.4:2375"), None),
            "/var/run:/var/run"
        );
    }

    #[test]
    fn log_driver_and_options_as_ecs_init_parses_them() {
        let lc = |pairs: &[(&str, &str)]| {
            let mut w = Vec::new();
            let c = log_config(&map(pairs), &mut w);
            (c.kind, c.config, w.len())
        };
        assert_eq!(
            lc(&[
                ("ECS_INIT_DOCKER_LOG_FILE_SIZE", "1m"),
                ("ECS_INIT_DOCKER_LOG_FILE_NUM", "9")
            ]),
            (
                "json-file".into(),
                map(&[("max-size", "1m"), ("max-file", "9")]),
                0
            )
        );
        assert_eq!(
            lc(&[("ECS_LOG_OPTS", r#"{"max-size":"5m"}"#)]),
            ("json-file".into(), map(&[("max-size", "5m")]), 0)
        );
        // `{}` is empty options: no rotation defaults (ecs-init does the same).
        assert_eq!(
            lc(&[("ECS_LOG_OPTS", "{}")]),
            ("json-file".into(), map(&[]), 0)
        );
        assert_eq!(
            lc(&[("ECS_LOG_DRIVER", "journald")]),
            ("journald".into(), map(&[]), 0)
        );
        assert_eq!(
            lc(&[
                ("ECS_LOG_DRIVER", "syslog"),
                ("ECS_LOG_OPTS", r#"{"tag":"ecs","x":1} trailing"#)
            ]),
            ("syslog".into(), map(&[("tag", "ecs")]), 1)
        );
        assert_eq!(
            lc(&[
                ("ECS_LOG_DRIVER", "nope"),
                ("ECS_LOG_OPTS", r#"{"tag":"x"}"#)
            ]),
            (
                "json-file".into(),
                map(&[("max-size", "16m"), ("max-file", "4")]),
                1
            )
        );
        assert_eq!(
            lc(&[("ECS_LOG_OPTS", "{not json")]),
            (
                "json-file".into(),
                map(&[("max-size", "16m"), ("max-file", "4")]),
                1
            )
        );
        assert_eq!(
            lc(&[("ECS_LOG_OPTS", "null")]),
            (
                "json-file".into(),
                map(&[("max-size", "16m"), ("max-file", "4")]),
                0
            )
        );
    }

    #[test]
    fn agent_labels() {
        let mut w = Vec::new();
        assert_eq!(
            labels(r#"{"team":"infra","tier":"1"}"#, &mut w),
            map(&[("team", "infra"), ("tier", "1")])
        );
        assert!(labels("{}", &mut w).is_empty());
        assert!(labels("null", &mut w).is_empty());
        assert!(w.is_empty());
        assert!(labels(r#"{"n":1}"#, &mut w).is_empty());
        assert!(labels("[", &mut w).is_empty());
        assert_eq!(w.len(), 2);
        let c = build(
            "/",
            &map(&[("ECS_AGENT_LABELS", r#"{"a":"b"}"#)]),
            None,
            &HostFacts::default(),
        );
        assert_eq!(c.create.labels, map(&[("a", "b")]));
    }
}
