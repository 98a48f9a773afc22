//! The environment, read once at start into [`Config`] and passed down.
//!
//! Nothing below `main` reads the environment; the docker CLI inherits it
//! (`DOCKER_HOST`) as a child process does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fault::Fault;

pub const DEFAULT_URL: &str = "http://127.0.0.1:51678";
pub const DEFAULT_PORT: u16 = 51678;
pub const DEFAULT_IMAGE: &str = "ecs-warden-task:latest";

/// Which runtime runs the containers of new tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeChoice {
    Docker,
    Process,
    /// Docker if the engine answers `docker version` within 5 s.
    Auto,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// Where the introspection API listens (always a loopback address).
    pub listen: SocketAddr,
    pub cluster: String,
    pub region: String,
    pub account: String,
    pub data_dir: PathBuf,
    /// `SAMPLE_AGENT_FAULT`, parsed.
    pub fault: Option<Fault>,
    /// `SAMPLE_AGENT_FAULT_VERSION`: the env fault applies only to this version.
    pub fault_version: Option<String>,
    /// `SAMPLE_AGENT_EXIT_AFTER`: delay before the `exit:N` fault fires.
    pub exit_after: Duration,
    pub runtime: RuntimeChoice,
    pub task_image: String,
    /// `ECS_WARDEN_CONTROL_SOCKET`: where update requests are sent.
    pub control_socket: Option<PathBuf>,
    /// `ECS_UPDATE_DOWNLOAD_DIR`: where `stage-local` puts a build.
    pub update_download_dir: Option<PathBuf>,
}

impl Config {
    pub fn from_env() -> Result<Config> {
        Config::from_lookup(|name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned()))
    }

    /// Builds the config from any variable lookup; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config> {
        let var = |name: &str| lookup(name).filter(|v| !v.is_empty());

        let url = var("ECS_WARDEN_INTROSPECTION_URL").unwrap_or_else(|| DEFAULT_URL.to_string());
        let listen = parse_listen_url(&url).map_err(|message| Error::Env {
            var: "ECS_WARDEN_INTROSPECTION_URL",
            message,
        })?;

        let fault = var("SAMPLE_AGENT_FAULT")
            .map(|s| s.parse::<Fault>())
            .transpose()
            .map_err(|message| Error::Env {
                var: "SAMPLE_AGENT_FAULT",
                message,
            })?;

        let exit_after = match var("SAMPLE_AGENT_EXIT_AFTER") {
            None => Duration::ZERO,
            Some(s) => humantime::parse_duration(&s).map_err(|e| Error::Env {
                var: "SAMPLE_AGENT_EXIT_AFTER",
                message: format!("{s:?} is not a duration like 200ms or 2s: {e}"),
            })?,
        };

        let runtime = match var("SAMPLE_AGENT_TASK_RUNTIME").as_deref() {
            None | Some("auto") => RuntimeChoice::Auto,
            Some("docker") => RuntimeChoice::Docker,
            Some("process") => RuntimeChoice::Process,
            Some(other) => {
                return Err(Error::Env {
                    var: "SAMPLE_AGENT_TASK_RUNTIME",
                    message: format!("{other:?} is not one of docker, process, auto"),
                })
            }
        };

        Ok(Config {
            listen,
            cluster: var("ECS_CLUSTER").unwrap_or_else(|| "default".into()),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-west-2".into()),
            account: var("SAMPLE_AGENT_ACCOUNT").unwrap_or_else(|| "012345678910".into()),
            data_dir: var("ECS_DATADIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("data")),
            fault,
            fault_version: var("SAMPLE_AGENT_FAULT_VERSION"),
            exit_after,
            runtime,
            task_image: var("SAMPLE_AGENT_TASK_IMAGE").unwrap_or_else(|| DEFAULT_IMAGE.into()),
            control_socket: var("ECS_WARDEN_CONTROL_SOCKET").map(PathBuf::from),
            update_download_dir: var("ECS_UPDATE_DOWNLOAD_DIR").map(PathBuf::from),
        })
    }
}

/// Parses `http://HOST[:PORT][/]` into a loopback socket address.
///
/// Only loopback hosts are accepted (`127.0.0.0/8`, `::1`, `localhost`), and
/// no name is resolved: the sample agent must never listen on a real network.
fn parse_listen_url(url: &str) -> std::result::Result<SocketAddr, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?} must start with http://"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('@') || authority.is_empty() {
        return Err(format!("{url:?} must be http://HOST:PORT with no path"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?} has an unclosed [ in its host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url:?} has a bad port {p:?}"))?,
    };
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>()
            .map_err(|_| format!("{url:?}: host {host:?} is not a loopback address"))?
    };
    if !ip.is_loopback() {
        return Err(format!(
            "{url:?}: refusing to listen on non-loopback host {host} (use 127.0.0.1 or [::1])"
        ));
    }
    Ok(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_urls() {
        assert_eq!(
            parse_listen_url("http://127.0.0.1:51678").unwrap(),
            "127.0.0.1:51678".parse().unwrap()
        );
        assert_eq!(
            parse_listen_url("http://localhost:8080/").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_listen_url("http://[::1]:9").unwrap(),
            "[::1]:9".parse().unwrap()
        );
        assert_eq!(
            parse_listen_url("http://127.0.0.2").unwrap(),
            "127.0.0.2:51678".parse().unwrap()
        );
        assert!(parse_listen_url("http://0.0.0.0:51678").is_err());
        assert!(parse_listen_url("http://10.0.0.1:51678").is_err());
        assert!(parse_listen_url("http://example.com:51678").is_err());
        assert!(parse_listen_url("https://127.0.0.1:51678").is_err());
        assert!(parse_listen_url("http://127.0.0.1:51678/v1").is_err());
    }

    #[test]
    fn defaults() {
        let config = Config::from_lookup(|_| None).unwrap();
        assert_eq!(config.cluster, "default");
        assert_eq!(config.region, "us-west-2");
        assert_eq!(config.account, "012345678910");
        assert_eq!(config.runtime, RuntimeChoice::Auto);
        assert_eq!(config.listen, "127.0.0.1:51678".parse().unwrap());
    }
}
