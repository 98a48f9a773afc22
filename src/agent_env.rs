//! ecs-init's default agent environment, for both runtimes. A pure
//! function of the merged config, the runtime, the paths and the host
//! facts; the caller applies the list on top of the user's keys.
//!
//! ecs-init (`ecs-init/docker/docker.go` `getContainerConfig`,
//! `docker_config.go` `getPlatformSpecificEnvVariables`) builds the
//! agent's environment in this order, which `defaults` keeps:
//! 1. its defaults (table below);
//! 2. the user's files (`/var/lib/ecs/ecs.config`, then `/etc/ecs/ecs.config`)
//!    override any of them;
//! 3. then it forces two values whatever the files say:
//!    `ECS_ENABLE_TASK_ENI=false` on external hosts (`ECS_EXTERNAL=true`),
//!    and `ECS_EBSTA_SUPPORTED=false` when the EBS mount directory is not
//!    a directory. (A third, `ECS_ENABLE_TASK_ENI=false` below Docker API
//!    1.25, cannot arise: the engine client needs 1.30.)
//!
//! | key | Docker runtime (paths in the container) | native runtime | ecs-init source |
//! |---|---|---|---|
//! | `ECS_LOGFILE` | `/log/ecs-agent.log` | `<root>/var/log/ecs/ecs-agent.log` | docker.go:314 (`logDir + "/" + AgentLogFile`) |
//! | `ECS_DATADIR` | `/data` | `<root>/var/lib/ecs/data` | docker.go:315 |
//! | `ECS_AGENT_CONFIG_FILE_PATH` | `/etc/ecs/ecs.config.json` | `<root>/etc/ecs/ecs.config.json` | docker.go:316, common.go:174 |
//! | `ECS_UPDATE_DOWNLOAD_DIR` | `/var/cache/ecs` | `<root>/var/cache/ecs` | docker.go:317, common.go:193 |
//! | `ECS_UPDATES_ENABLED` | `true` | `true` | docker.go:318 |
//! | `ECS_AVAILABLE_LOGGING_DRIVERS` | `["json-file","syslog","awslogs","fluentd","none"]` | same | docker.go:319 |
//! | `ECS_ENABLE_TASK_IAM_ROLE` | `true` | `true` | docker.go:320 |
//! | `ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST` | `true` | `true` | docker.go:321 |
//! | `ECS_EBSTA_SUPPORTED` | `true`; forced `false` without `mnt/ecs/ebs` | same | docker.go:322, 365-370 |
//! | `ECS_AGENT_LABELS` | empty | empty | docker.go:323 |
//! | `ECS_VOLUME_PLUGIN_CAPABILITIES` | `["efsAuth"]` | same | docker.go:324 |
//! | `ECS_DETAILED_OS_FAMILY` | `<ID>_<VERSION_ID>` of os-release, else `linux` | same | docker.go:325, os_family.go |
//! | `SSL_CERT_DIR` | `/etc/pki/tls/certs` when the host has it | not set (the agent sees the host's store) | docker.go:329-331, config_al2.go |
//! | `CREDENTIALS_FETCHER_HOST_DIR` | `CREDENTIALS_FETCHER_HOST` without `unix://`, else the default socket | same | docker.go:334-337, common.go:241-255 |
//! | `ECS_ENABLE_TASK_ENI` | `true`; forced `false` with `ECS_EXTERNAL=true` | same | docker_config.go:31, docker.go:356-359 |
//! | `ECS_ENABLE_AWSLOGS_EXECUTIONROLE_OVERRIDE` | `true` | `true` | docker_config.go:32 |
//! | `ECS_DOMAIN_JOINED_LINUX_INSTANCE` | `true` with `ECS_GMSA_SUPPORTED=true` on a domain-joined host | same | docker.go:344-351 |
//! | `ECS_WARDEN_CONTROL_SOCKET` | `/run/ecs-warden/control.sock` (bind-mounted read-only) | `<root>/run/ecs-warden/control.sock` | ecs-warden's own |
//!
//! Where ecs-init reads a key from its process environment (`ECS_EXTERNAL`,
//! `ECS_GMSA_SUPPORTED`, `CREDENTIALS_FETCHER_HOST`; systemd fills it from
//! `/etc/ecs/ecs.config`), ecs-warden reads the merged config.

use std::collections::BTreeMap;
use std::path::Path;

use crate::host_facts::{credentials_fetcher_socket, HostFacts};
use crate::paths::Paths;

/// How the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// In the container `ecs-agent`, with ecs-init's bind mounts.
    Docker,
    /// As a child process of the warden.
    Native,
}

/// The agent's log directory inside its container (`ecs-init`'s `logDir`).
pub const CONTAINER_LOG_DIR: &str = "/log";
/// The agent's data directory inside its container (`dataDir`).
pub const CONTAINER_DATA_DIR: &str = "/data";
/// Where the warden's run directory (its control socket) is mounted in
/// the agent's container.
pub const CONTAINER_WARDEN_RUN_DIR: &str = "/run/ecs-warden";
/// ecs-init's `AgentLogFile`.
pub const AGENT_LOG_FILE: &str = "ecs-agent.log";
pub const AVAILABLE_LOGGING_DRIVERS: &str = r#"["json-file","syslog","awslogs","fluentd","none"]"#;
pub const VOLUME_PLUGIN_CAPABILITIES: &str = r#"["efsAuth"]"#;

/// The `(key, value)` pairs to set on top of the user's keys: the defaults
/// the user's config does not set, then the values ecs-init forces. See
/// the module comment for each.
pub fn defaults(
    config: &BTreeMap<String, String>,
    runtime: Runtime,
    paths: &Paths,
    facts: &HostFacts,
) -> Vec<(String, String)> {
    let docker = runtime == Runtime::Docker;
    let show = |p: &Path| p.display().to_string();
    let in_container = |container: &str, host: &Path| {
        if docker {
            container.to_string()
        } else {
            show(host)
        }
    };
    let control_socket = match paths.control_socket().file_name() {
        Some(name) if docker => format!("{CONTAINER_WARDEN_RUN_DIR}/{}", name.to_string_lossy()),
        _ => show(&paths.control_socket()),
    };

    let mut table: Vec<(&str, String)> = vec![
        (
            "ECS_LOGFILE",
            in_container(
                &format!("{CONTAINER_LOG_DIR}/{AGENT_LOG_FILE}"),
                &paths.agent_log(),
            ),
        ),
        (
            "ECS_DATADIR",
            in_container(CONTAINER_DATA_DIR, &paths.data_dir),
        ),
        (
            "ECS_AGENT_CONFIG_FILE_PATH",
            in_container("/etc/ecs/ecs.config.json", &paths.agent_json_config()),
        ),
        (
            "ECS_UPDATE_DOWNLOAD_DIR",
            in_container("/var/cache/ecs", &paths.cache_dir),
        ),
        ("ECS_UPDATES_ENABLED", "true".into()),
        (
            "ECS_AVAILABLE_LOGGING_DRIVERS",
            AVAILABLE_LOGGING_DRIVERS.into(),
        ),
        ("ECS_ENABLE_TASK_IAM_ROLE", "true".into()),
        ("ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST", "true".into()),
        ("ECS_EBSTA_SUPPORTED", "true".into()),
        ("ECS_AGENT_LABELS", String::new()),
        (
            "ECS_VOLUME_PLUGIN_CAPABILITIES",
            VOLUME_PLUGIN_CAPABILITIES.into(),
        ),
        ("ECS_DETAILED_OS_FAMILY", facts.os_family.clone()),
    ];
    if docker {
        if let Some(certs) = &facts.certs_dir {
            table.push(("SSL_CERT_DIR", show(certs)));
        }
    }
    table.push((
        "CREDENTIALS_FETCHER_HOST_DIR",
        credentials_fetcher_socket(config),
    ));
    table.push(("ECS_ENABLE_TASK_ENI", "true".into()));
    table.push(("ECS_ENABLE_AWSLOGS_EXECUTIONROLE_OVERRIDE", "true".into()));
    if config.get("ECS_GMSA_SUPPORTED").map(String::as_str) == Some("true") && facts.domain_joined {
        table.push(("ECS_DOMAIN_JOINED_LINUX_INSTANCE", "true".into()));
    }
    table.push(("ECS_WARDEN_CONTROL_SOCKET", control_socket));

    let mut out: Vec<(String, String)> = table
        .into_iter()
        .filter(|(k, _)| !config.contains_key(*k))
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    let mut force = |k: &str, v: &str| {
        out.retain(|(key, _)| key != k);
        out.push((k.to_string(), v.to_string()));
    };
    if config.get("ECS_EXTERNAL").map(String::as_str) == Some("true") {
        force("ECS_ENABLE_TASK_ENI", "false");
    }
    if !facts.ebs_mount_dir_ok {
        force("ECS_EBSTA_SUPPORTED", "false");
    }
    out
}

/// The agent's whole environment: the user's keys with `defaults` applied
/// on top, sorted by key.
pub fn environment(
    config: &BTreeMap<String, String>,
    runtime: Runtime,
    paths: &Paths,
    facts: &HostFacts,
) -> Vec<(String, String)> {
    let mut all = config.clone();
    all.extend(defaults(config, runtime, paths, facts));
    all.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }

    fn facts() -> HostFacts {
        HostFacts {
            os_family: "amzn_2023".into(),
            certs_dir: Some("/etc/pki/tls/certs".into()),
            ebs_mount_dir_ok: true,
            ..HostFacts::default()
        }
    }

    #[test]
    fn docker_defaults_are_container_paths() {
        let paths = Paths::new("/srv/root");
        let env = defaults(&BTreeMap::new(), Runtime::Docker, &paths, &facts());
        let expect = [
            ("ECS_LOGFILE", "/log/ecs-agent.log"),
            ("ECS_DATADIR", "/data"),
            ("ECS_AGENT_CONFIG_FILE_PATH", "/etc/ecs/ecs.config.json"),
            ("ECS_UPDATE_DOWNLOAD_DIR", "/var/cache/ecs"),
            ("ECS_UPDATES_ENABLED", "true"),
            (
                "ECS_AVAILABLE_LOGGING_DRIVERS",
                r#"["json-file","syslog","awslogs","fluentd","none"]"#,
            ),
            ("ECS_ENABLE_TASK_IAM_ROLE", "true"),
            ("ECS_ENABLE_TASK_IAM_ROLE_NETWORK_HOST", "true"),
            ("ECS_EBSTA_SUPPORTED", "true"),
            ("ECS_AGENT_LABELS", ""),
            ("ECS_VOLUME_PLUGIN_CAPABILITIES", r#"["efsAuth"]"#),
            ("ECS_DETAILED_OS_FAMILY", "amzn_2023"),
            ("SSL_CERT_DIR", "/etc/pki/tls/certs"),
            (
                "CREDENTIALS_FETCHER_HOST_DIR",
                "/var/credentials-fetcher/socket/credentials_fetcher.sock",
            ),
            ("ECS_ENABLE_TASK_ENI", "true"),
            ("ECS_ENABLE_AWSLOGS_EXECUTIONROLE_OVERRIDE", "true"),
            ("ECS_WARDEN_CONTROL_SOCKET", "/run/ecs-warden/control.sock"),
        ];
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn native_defaults_are_host_paths_under_the_root() {
        let paths = Paths::new("/srv/root");
        let env = defaults(&BTreeMap::new(), Runtime::Native, &paths, &facts());
        assert_eq!(
            get(&env, "ECS_LOGFILE"),
            Some("/srv/root/var/log/ecs/ecs-agent.log")
        );
        assert_eq!(get(&env, "ECS_DATADIR"), Some("/srv/root/var/lib/ecs/data"));
        assert_eq!(
            get(&env, "ECS_AGENT_CONFIG_FILE_PATH"),
            Some("/srv/root/etc/ecs/ecs.config.json")
        );
        assert_eq!(
            get(&env, "ECS_UPDATE_DOWNLOAD_DIR"),
            Some("/srv/root/var/cache/ecs")
        );
        assert_eq!(
            get(&env, "ECS_WARDEN_CONTROL_SOCKET"),
            Some("/srv/root/run/ecs-warden/control.sock")
        );
        assert_eq!(get(&env, "SSL_CERT_DIR"), None);
        assert_eq!(get(&env, "ECS_ENABLE_TASK_ENI"), Some("true"));
    }

    #[test]
    fn the_user_overrides_defaults_but_not_forced_values() {
        let paths = Paths::new("/");
        let cfg = map(&[
            ("ECS_DATADIR", "/elsewhere"),
            ("ECS_UPDATES_ENABLED", "false"),
            ("ECS_EXTERNAL", "true"),
            ("ECS_ENABLE_TASK_ENI", "true"),
            ("ECS_EBSTA_SUPPORTED", "true"),
        ]);
        let no_ebs = HostFacts {
            ebs_mount_dir_ok: false,
            ..facts()
        };
        let env = defaults(&cfg, Runtime::Docker, &paths, &no_ebs);
        assert_eq!(get(&env, "ECS_DATADIR"), None, "the user's value stays");
        assert_eq!(get(&env, "ECS_UPDATES_ENABLED"), None);
        assert_eq!(get(&env, "ECS_ENABLE_TASK_ENI"), Some("false"));
        assert_eq!(get(&env, "ECS_EBSTA_SUPPORTED"), Some("false"));
        let all = environment(&cfg, Runtime::Docker, &paths, &no_ebs);
        assert_eq!(get(&all, "ECS_DATADIR"), Some("/elsewhere"));
        assert_eq!(get(&all, "ECS_UPDATES_ENABLED"), Some("false"));
        assert_eq!(get(&all, "ECS_ENABLE_TASK_ENI"), Some("false"));
        assert_eq!(get(&all, "ECS_LOGFILE"), Some("/log/ecs-agent.log"));
        assert_eq!(
            all.iter()
                .filter(|(k, _)| k == "ECS_ENABLE_TASK_ENI")
                .count(),
            1
        );
    }

    #[test]
    fn gmsa_and_credentials_fetcher() {
        let paths = Paths::new("/");
        let cfg = map(&[
            ("ECS_GMSA_SUPPORTED", "true"),
            ("CREDENTIALS_FETCHER_HOST", "unix:///run/cf/cf.sock"),
        ]);
        let joined = HostFacts {
            domain_joined: true,
            ..facts()
        };
        let env = defaults(&cfg, Runtime::Native, &paths, &joined);
        assert_eq!(get(&env, "ECS_DOMAIN_JOINED_LINUX_INSTANCE"), Some("true"));
        assert_eq!(
            get(&env, "CREDENTIALS_FETCHER_HOST_DIR"),
            Some("/run/cf/cf.sock")
        );
        let env = defaults(&cfg, Runtime::Native, &paths, &facts());
        assert_eq!(get(&env, "ECS_DOMAIN_JOINED_LINUX_INSTANCE"), None);
    }
}
