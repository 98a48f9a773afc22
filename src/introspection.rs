//! Client for the agent's introspection API (`/v1/metadata`, `/v1/tasks`)
//! on the loopback endpoint from `ECS_WARDEN_INTROSPECTION_URL`.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;

use crate::config::Endpoint;

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Metadata {
    #[serde(rename = "Cluster", default)]
    pub cluster: Option<String>,
    #[serde(rename = "ContainerInstanceArn", default)]
    pub container_instance_arn: Option<String>,
    #[serde(rename = "Version", default)]
    pub version: Option<String>,
}

impl Metadata {
    /// `(version, hash)` from `Amazon ECS Agent - v1.2.3 (abcdef12)`.
    pub fn parsed_version(&self) -> Option<(String, Option<String>)> {
        self.version
            .as_deref()
            .and_then(crate::store::parse_version_banner)
    }

    pub fn arn(&self) -> Option<&str> {
        self.container_instance_arn
            .as_deref()
            .filter(|a| !a.is_empty())
    }
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct Container {
    #[serde(rename = "DockerId", default)]
    pub docker_id: String,
    #[serde(rename = "DockerName", default)]
    pub docker_name: String,
    #[serde(rename = "Name", default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
pub struct Task {
    #[serde(rename = "Arn", default)]
    pub arn: String,
    #[serde(rename = "DesiredStatus", default)]
    pub desired_status: String,
    #[serde(rename = "KnownStatus", default)]
    pub known_status: String,
    #[serde(rename = "Family", default)]
    pub family: String,
    #[serde(rename = "Version", default)]
    pub version: String,
    #[serde(rename = "Containers", default)]
    pub containers: Vec<Container>,
}

#[derive(Debug, Deserialize)]
struct TasksDoc {
    #[serde(rename = "Tasks", default)]
    tasks: Vec<Task>,
}

fn get(ep: &Endpoint, path: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let url = format!("{}{path}", ep.base_url());
    let agent = ureq::AgentBuilder::new()
        .timeout(timeout)
        .try_proxy_from_env(false)
        .build();
    let resp = agent.get(&url).call().map_err(|e| match e {
        ureq::Error::Status(code, _) => format!("{url}: HTTP {code}"),
        ureq::Error::Transport(t) => format!("{url}: {t}"),
    })?;
    let mut out = Vec::new();
    resp.into_reader()
        .take(16 * 1024 * 1024)
        .read_to_end(&mut out)
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(out)
}

pub fn metadata(ep: &Endpoint, timeout: Duration) -> Result<Metadata, String> {
    let body = get(ep, "/v1/metadata", timeout)?;
    serde_json::from_slice(&body).map_err(|e| format!("/v1/metadata is not valid JSON: {e}"))
}

pub fn tasks(ep: &Endpoint, timeout: Duration) -> Result<Vec<Task>, String> {
    let body = get(ep, "/v1/tasks", timeout)?;
    serde_json::from_slice::<TasksDoc>(&body)
        .map(|d| d.tasks)
        .map_err(|e| format!("/v1/tasks is not valid JSON: {e}"))
}
