//! What ecs-init learns by looking at the host before it starts the agent:
//! which optional files exist, the OS family, AppArmor. `probe` does that
//! I/O once; `agent_env` and `runtime::docker_config` are pure functions of
//! the result, so their tests need no host.
//!
//! Two kinds of paths are looked at:
//! - ours, under the configured root (`Paths`): the EBS mount directory,
//!   managed agents, `etc/os-release`;
//! - the operating system's, at their host paths (`/usr/bin/nsenter`,
//!   `/etc/pki`, `/dev/nvidia*`, ...): these are bind-mount sources the
//!   engine resolves on the host, so what matters is whether the host has
//!   them, whatever the root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::paths::Paths;

/// Host paths ecs-init checks (its al2 build constants).
pub const HOST_CERTS_DIR: &str = "/etc/pki/tls/certs";
pub const HOST_PKI_DIR: &str = "/etc/pki";
pub const NSENTER: &str = "/usr/bin/nsenter";
pub const MODINFO: [&str; 2] = ["/sbin/modinfo", "/usr/sbin/modinfo"];
pub const CLOUD_INIT_RESULT: &str = "/var/lib/cloud/data/result.json";
pub const DEFAULT_CREDENTIALS_FETCHER_SOCKET: &str =
    "/var/credentials-fetcher/socket/credentials_fetcher.sock";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// `ECS_DETAILED_OS_FAMILY`: `<ID>_<VERSION_ID>` of os-release, else `linux`.
    pub os_family: String,
    /// `/etc/pki/tls/certs` when the host has it (`SSL_CERT_DIR` in the container).
    pub certs_dir: Option<PathBuf>,
    /// `/etc/pki` when the host has it (bind-mounted read-only).
    pub pki_dir: Option<PathBuf>,
    /// The EBS mount directory (`mnt/ecs/ebs` under the root) is a
    /// directory; otherwise EBS task attach is switched off.
    pub ebs_mount_dir_ok: bool,
    /// `var/lib/ecs/deps` under the root is a directory.
    pub managed_deps_dir: bool,
    /// `var/lib/ecs/deps/execute-command` under the root is a directory.
    pub exec_capability_dir: bool,
    pub nsenter: bool,
    /// The first `modinfo` the host has.
    pub modinfo: Option<PathBuf>,
    pub cloud_init_result: bool,
    /// `/dev/nvidia*` exists.
    pub nvidia_gpus: bool,
    /// The credentials-fetcher socket (gMSA) exists.
    pub credentials_fetcher_socket: bool,
    /// AppArmor is enabled and usable (containerd's `HostSupports`).
    pub apparmor: bool,
    /// `realm list` names a realm (asked only with `ECS_GMSA_SUPPORTED=true`).
    pub domain_joined: bool,
}

impl Default for HostFacts {
    /// A host with none of the optional parts: what tests start from.
    fn default() -> Self {
        HostFacts {
            os_family: "linux".into(),
            certs_dir: None,
            pki_dir: None,
            ebs_mount_dir_ok: false,
            managed_deps_dir: false,
            exec_capability_dir: false,
            nsenter: false,
            modinfo: None,
            cloud_init_result: false,
            nvidia_gpus: false,
            credentials_fetcher_socket: false,
            apparmor: false,
            domain_joined: false,
        }
    }
}

impl HostFacts {
    /// Look at the host. `config` is the merged config (it selects the
    /// credentials-fetcher socket and whether to ask `realm`);
    /// `container_env` is the warden's `container` environment variable
    /// (set when it runs inside a container, where AppArmor is not ours).
    pub fn probe(
        paths: &Paths,
        config: &BTreeMap<String, String>,
        container_env: Option<&str>,
    ) -> HostFacts {
        let is_dir = |p: &Path| p.is_dir();
        let exists = |p: &str| Path::new(p).exists();
        let os_release = std::fs::read_to_string(paths.os_release()).ok();
        HostFacts {
            os_family: os_family(os_release.as_deref()),
            certs_dir: exists(HOST_CERTS_DIR).then(|| PathBuf::from(HOST_CERTS_DIR)),
            pki_dir: exists(HOST_PKI_DIR).then(|| PathBuf::from(HOST_PKI_DIR)),
            ebs_mount_dir_ok: is_dir(&paths.ebs_mount_dir()),
            managed_deps_dir: is_dir(&paths.managed_deps_dir()),
            exec_capability_dir: is_dir(&paths.managed_deps_dir().join("execute-command")),
            nsenter: exists(NSENTER),
            modinfo: MODINFO.iter().find(|p| exists(p)).map(PathBuf::from),
            cloud_init_result: exists(CLOUD_INIT_RESULT),
            nvidia_gpus: std::fs::read_dir("/dev")
                .map(|d| {
                    d.flatten()
                        .any(|e| e.file_name().to_string_lossy().starts_with("nvidia"))
                })
                .unwrap_or(false),
            credentials_fetcher_socket: Path::new(&credentials_fetcher_socket(config)).exists(),
            apparmor: apparmor_usable(container_env),
            domain_joined: config.get("ECS_GMSA_SUPPORTED").map(String::as_str) == Some("true")
                && realm_named(),
        }
    }
}

/// The credentials-fetcher socket: `CREDENTIALS_FETCHER_HOST` when it is
/// `unix://...`, else the default (`ecs-init/config/common.go`).
pub fn credentials_fetcher_socket(config: &BTreeMap<String, String>) -> String {
    config
        .get("CREDENTIALS_FETCHER_HOST")
        .and_then(|h| h.strip_prefix("unix://"))
        .map(str::to_string)
        .unwrap_or_else(|| DEFAULT_CREDENTIALS_FETCHER_SOCKET.to_string())
}

/// `<ID>_<VERSION_ID>` from os-release text, quotes and blanks trimmed;
/// `linux` when either is missing (`ecs-init/config/os_family.go`).
pub fn os_family(os_release: Option<&str>) -> String {
    let Some(text) = os_release else {
        return "linux".into();
    };
    let mut id = "";
    let mut version = "";
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("ID=") {
            id = v;
        } else if let Some(v) = line.strip_prefix("VERSION_ID=") {
            version = v;
        }
    }
    let clean = |v: &str| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string();
    let (id, version) = (clean(id), clean(version));
    if id.is_empty() || version.is_empty() {
        "linux".into()
    } else {
        format!("{id}_{version}")
    }
}

/// containerd's check: the securityfs entry, `apparmor_parser`, the module
/// enabled, and not inside a container.
fn apparmor_usable(container_env: Option<&str>) -> bool {
    if container_env.is_some_and(|c| !c.is_empty()) {
        return false;
    }
    Path::new("/sys/kernel/security/apparmor").exists()
        && Path::new("/sbin/apparmor_parser").exists()
        && std::fs::read("/sys/module/apparmor/parameters/enabled")
            .map(|b| b.len() > 1 && b[0] == b'Y')
            .unwrap_or(false)
}

/// `realm list` mentions `realm-name` (ecs-init's domain-join check).
fn realm_named() -> bool {
    std::process::Command::new("realm")
        .arg("list")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains("realm-name"))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_family_as_ecs_init_reads_it() {
        let al2023 = "NAME=\"Amazon Linux\"\nVERSION=\"2023\"\nID=\"amzn\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"2023\"\n";
        assert_eq!(os_family(Some(al2023)), "amzn_2023");
        assert_eq!(os_family(Some("ID=debian\nVERSION_ID='12'\n")), "debian_12");
        // `ID_LIKE=` must not be taken for `ID=`.
        assert_eq!(os_family(Some("ID_LIKE=x\nVERSION_ID=1\n")), "linux");
        assert_eq!(os_family(Some("ID=arch\n")), "linux");
        assert_eq!(os_family(None), "linux");
    }

    #[test]
    fn probe_reads_the_root() {
        let d = tempfile::tempdir().unwrap();
        let paths = Paths::new(d.path());
        std::fs::create_dir_all(paths.ebs_mount_dir()).unwrap();
        std::fs::create_dir_all(paths.managed_deps_dir()).unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(paths.os_release(), "ID=amzn\nVERSION_ID=\"2\"\n").unwrap();
        let f = HostFacts::probe(&paths, &BTreeMap::new(), Some("docker"));
        assert_eq!(f.os_family, "amzn_2");
        assert!(f.ebs_mount_dir_ok && f.managed_deps_dir && !f.exec_capability_dir);
        assert!(!f.apparmor, "never inside a container");
        assert!(!f.domain_joined);
    }

    #[test]
    fn credentials_fetcher_socket_from_config() {
        let mut c = BTreeMap::new();
        assert_eq!(
            credentials_fetcher_socket(&c),
            DEFAULT_CREDENTIALS_FETCHER_SOCKET
        );
        c.insert(
            "CREDENTIALS_FETCHER_HOST".into(),
            "unix:///run/cf.sock".into(),
        );
        assert_eq!(credentials_fetcher_socket(&c), "/run/cf.sock");
        c.insert("CREDENTIALS_FETCHER_HOST".into(), "/no/prefix".into());
        assert_eq!(
            credentials_fetcher_socket(&c),
            DEFAULT_CREDENTIALS_FETCHER_SOCKET
        );
    }
}
