//! The Engine API's JSON documents, typed: only the fields ecs-warden uses.
//! Unknown fields are ignored when reading; absent ones take their default,
//! so the same structs read the answers of every API version from 1.25 on.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /version`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Version {
    /// The engine's release, e.g. `20.10.24+dfsg1` (what `versionInfo.dockerVersion` reports).
    pub version: String,
    /// The newest API version the engine speaks, e.g. `1.41`.
    pub api_version: String,
    /// The oldest API version the engine still accepts.
    #[serde(rename = "MinAPIVersion")]
    pub min_api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
}

/// `GET /images/{name}/json`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageInspect {
    /// The image ID, `sha256:<hex>`.
    pub id: String,
    #[serde(deserialize_with = "null_as_default")]
    pub repo_tags: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub repo_digests: Vec<String>,
    pub created: String,
    pub size: i64,
    pub architecture: String,
    pub os: String,
    #[serde(deserialize_with = "null_as_default")]
    pub config: ImageConfig,
}

/// The run configuration an image carries.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageConfig {
    #[serde(deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

/// One entry of `GET /images/json`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageSummary {
    pub id: String,
    #[serde(deserialize_with = "null_as_default")]
    pub repo_tags: Vec<String>,
    /// Seconds since the epoch.
    pub created: i64,
    pub size: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

/// One entry of the answer to `DELETE /images/{name}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageDeleted {
    pub untagged: Option<String>,
    pub deleted: Option<String>,
}

/// The body of `POST /containers/create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerCreate {
    pub image: String,
    /// `KEY=VALUE` strings.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: Vec<String>,
    /// `None` keeps the image's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `None` keeps the image's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    pub tty: bool,
    pub host_config: HostConfig,
}

/// `HostConfig` of a container: sent on create, read back on inspect.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct HostConfig {
    /// `host:container[:ro]`.
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub binds: Vec<String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub network_mode: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub userns_mode: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub pid_mode: String,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub cap_add: Vec<String>,
    /// `--init`: the engine's init process reaps the agent's children.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<bool>,
    pub privileged: bool,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub security_opt: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_config: Option<LogConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<RestartPolicy>,
    pub auto_remove: bool,
}

/// The container's log driver and its options.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Config", deserialize_with = "null_as_default")]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct RestartPolicy {
    /// `no`, `always`, `unless-stopped`, `on-failure`.
    pub name: String,
    pub maximum_retry_count: i64,
}

/// The answer to `POST /containers/create`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct Created {
    pub id: String,
    #[serde(deserialize_with = "null_as_default")]
    pub warnings: Vec<String>,
}

/// `GET /containers/{id}/json`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerInspect {
    pub id: String,
    /// With the engine's leading slash: `/ecs-agent`.
    pub name: String,
    /// The image ID the container runs, `sha256:<hex>`.
    pub image: String,
    pub created: String,
    pub state: ContainerState,
    pub config: ContainerConfig,
    pub host_config: HostConfig,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerState {
    /// `created`, `running`, `paused`, `restarting`, `removing`, `exited`, `dead`.
    pub status: String,
    pub running: bool,
    pub paused: bool,
    pub restarting: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub pid: i64,
    pub exit_code: i64,
    pub error: String,
    /// RFC 3339; `0001-01-01T00:00:00Z` when never started.
    pub started_at: String,
    pub finished_at: String,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerConfig {
    /// The image as it was named on create.
    pub image: String,
    #[serde(deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
    #[serde(deserialize_with = "null_as_default")]
    pub env: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub entrypoint: Vec<String>,
    #[serde(deserialize_with = "null_as_default")]
    pub cmd: Vec<String>,
    pub tty: bool,
}

/// One entry of `GET /containers/json`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ContainerSummary {
    pub id: String,
    /// With leading slashes: `["/ecs-agent"]`.
    #[serde(deserialize_with = "null_as_default")]
    pub names: Vec<String>,
    pub image: String,
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// `running`, `exited`, ...
    pub state: String,
    /// Human words: `Up 3 minutes`.
    pub status: String,
    pub created: i64,
    #[serde(deserialize_with = "null_as_default")]
    pub labels: BTreeMap<String, String>,
}

impl ContainerSummary {
    /// Whether `name` (without the slash) is one of the container's names.
    pub fn has_name(&self, name: &str) -> bool {
        self.names
            .iter()
            .any(|n| n.strip_prefix('/').unwrap_or(n) == name)
    }
}

/// The answer to `POST /containers/{id}/wait`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct WaitExit {
    pub status_code: i64,
    pub error: Option<WaitError>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase", default)]
pub struct WaitError {
    pub message: String,
}

impl WaitExit {
    /// The engine's error message, when it had one (empty ones are none).
    pub fn error_message(&self) -> Option<&str> {
        self.error
            .as_ref()
            .map(|e| e.message.as_str())
            .filter(|m| !m.is_empty())
    }
}

/// An error answer: `{"message": "..."}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ApiMessage {
    pub message: String,
}

/// One JSON object of the `POST /images/load` progress stream.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct LoadMessage {
    pub stream: Option<String>,
    pub error: Option<String>,
    #[serde(rename = "errorDetail")]
    pub error_detail: Option<ApiMessage>,
}

/// `null` where a collection was expected reads as empty.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_serializes_to_engine_names() {
        let body = ContainerCreate {
            image: "amazon/amazon-ecs-agent:latest".into(),
            env: vec!["A=1".into()],
            host_config: HostConfig {
                network_mode: "host".into(),
                userns_mode: "host".into(),
                cap_add: vec!["NET_ADMIN".into()],
                init: Some(true),
                log_config: Some(LogConfig {
                    kind: "json-file".into(),
                    config: [("max-size".to_string(), "16m".to_string())].into(),
                }),
                restart_policy: Some(RestartPolicy {
                    name: "no".into(),
                    maximum_retry_count: 0,
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["Image"], "amazon/amazon-ecs-agent:latest");
        assert_eq!(v["Env"][0], "A=1");
        assert!(v.get("Entrypoint").is_none() && v.get("Cmd").is_none());
        let hc = &v["HostConfig"];
        assert_eq!(hc["NetworkMode"], "host");
        assert_eq!(hc["UsernsMode"], "host");
        assert_eq!(hc["CapAdd"][0], "NET_ADMIN");
        assert_eq!(hc["Init"], true);
        assert_eq!(hc["LogConfig"]["Type"], "json-file");
        assert_eq!(hc["LogConfig"]["Config"]["max-size"], "16m");
        assert_eq!(hc["RestartPolicy"]["Name"], "no");
        assert!(hc.get("PidMode").is_none());
    }

    #[test]
    fn nulls_read_as_empty() {
        let s: ContainerSummary =
            serde_json::from_str(r#"{"Id":"x","Names":null,"Labels":null,"Extra":1}"#).unwrap();
        assert!(s.names.is_empty() && s.labels.is_empty());
        let i: ImageInspect =
            serde_json::from_str(r#"{"Id":"sha256:1","RepoTags":null,"Config":null}"#).unwrap();
        assert!(i.repo_tags.is_empty());
        let w: WaitExit = serde_json::from_str(r#"{"Error":null,"StatusCode":3}"#).unwrap();
        assert_eq!((w.status_code, w.error_message()), (3, None));
        let w: WaitExit =
            serde_json::from_str(r#"{"Error":{"Message":"boom"},"StatusCode":-1}"#).unwrap();
        assert_eq!(w.error_message(), Some("boom"));
    }
}
