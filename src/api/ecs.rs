//! The ECS JSON protocol (`POST /`, `X-Amz-Target:
//! AmazonEC2ContainerServiceV20141113.<Operation>`,
//! `application/x-amz-json-1.1`), so the AWS CLI and SDKs work against a
//! host. Operations:
//! - `UpdateContainerAgent {cluster?, containerInstance}`: starts stage +
//!   perform and answers at once with the `containerInstance` document;
//! - `DescribeContainerInstances {cluster?, containerInstances}`;
//! - `DescribeTasks {cluster?, tasks}` and `ListTasks`, from the agent's
//!   `/v1/tasks`.
//!
//! The instance may be named by its full ARN or its id; a cluster that is
//! not the agent's gives `ClusterNotFoundException` (an absent cluster is
//! `default`, as in ECS); another instance gives
//! `InvalidParameterException`. Errors are `{"__type", "message"}` with
//! HTTP 400 (500 for `ServerException`).

use std::sync::mpsc::Sender;
use std::time::Duration;

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::config::Config;
use crate::document::{self, Observation, Snapshot};
use crate::error::ApiError;
use crate::error::EcsErrorName::*;
use crate::event::{ask, Action, Event};
use crate::http::{Request, Response};
use crate::introspection::Task;
use crate::update::journal::Origin;
use crate::update::request::{self, Params};

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Requests larger than this are refused.
pub const MAX_BODY: usize = 64 * 1024;
/// Budget for each introspection call an operation makes. Operations
/// answer with the agent's data (its tasks, their counts), so a busy agent
/// gets more time than the status document gives it
/// (`document::INTROSPECTION_BUDGET`, 40 ms): one slow answer must not turn
/// `ListTasks` into a `ServerException`. A stopped or hung agent still
/// fails them within this.
pub const INTROSPECTION_BUDGET: Duration = Duration::from_secs(1);

// ----- the answers' shapes (the ECS API's own) ------------------------------

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct ContainerInstance {
    container_instance_arn: Option<String>,
    agent_connected: bool,
    agent_update_status: Option<&'static str>,
    version_info: document::VersionInfo,
    running_tasks_count: usize,
    pending_tasks_count: usize,
    status: &'static str,
    status_reason: Option<String>,
    attributes: [(); 0],
    registered_resources: [(); 0],
    remaining_resources: [(); 0],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskContainer<'a> {
    name: &'a str,
    runtime_id: &'a str,
    last_status: &'a str,
    task_arn: &'a str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TaskDoc<'a> {
    task_arn: &'a str,
    last_status: &'a str,
    desired_status: &'a str,
    task_definition_arn: String,
    containers: Vec<TaskContainer<'a>>,
    cluster_arn: String,
    container_instance_arn: Option<&'a str>,
}

/// A name the request asked for that is not here.
#[derive(Debug, Serialize)]
struct Missing<'a> {
    arn: &'a str,
    reason: &'static str,
}

fn missing(arn: &str) -> Missing<'_> {
    Missing {
        arn,
        reason: "MISSING",
    }
}

fn answer<T: Serialize>(v: T) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::ecs(ServerException, e.to_string()))
}

fn err(status: u16, name: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::protocol(status, name, message)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::ecs(InvalidParameterException, message)
}

/// Answer one ECS JSON request.
pub fn handle(req: &Request, tx: &Sender<Event>, cfg: &Config) -> Response {
    let result = dispatch(req, tx, cfg);
    let resp = match result {
        Ok(v) => Response::json(200, &v),
        Err(e) => Response::json(e.status, &e.body()),
    };
    resp.set_header("Content-Type", CONTENT_TYPE)
        .header("x-amzn-RequestId", &request_id())
}

fn request_id() -> String {
    let mut b = [0u8; 16];
    let _ = getrandom::getrandom(&mut b);
    let h = crate::store::hex(&b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn dispatch(req: &Request, tx: &Sender<Event>, cfg: &Config) -> Result<Value, ApiError> {
    if req.method != "POST" || req.path != "/" {
        return Err(err(
            404,
            "UnknownOperationException",
            format!("ECS operations are POST /, not {} {}", req.method, req.path),
        ));
    }
    let target = req.header("X-Amz-Target").unwrap_or("");
    let Some(op) = target.strip_prefix(TARGET_PREFIX) else {
        return Err(err(
            400,
            "UnknownOperationException",
            format!("X-Amz-Target {target:?} is not an {TARGET_PREFIX}<Operation>"),
        ));
    };
    let ctype = req.header("Content-Type").unwrap_or("");
    if !(ctype.starts_with("application/x-amz-json") || ctype.starts_with("application/json")) {
        return Err(err(
            400,
            "SerializationException",
            format!("Content-Type {ctype:?} is not {CONTENT_TYPE}"),
        ));
    }
    let body: Value = if req.body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&req.body).map_err(|e| {
            err(
                400,
                "SerializationException",
                format!("the body is not valid JSON: {e}"),
            )
        })?
    };
    let Some(body) = body.as_object() else {
        return Err(err(
            400,
            "SerializationException",
            "the body must be a JSON object",
        ));
    };
    match op {
        "UpdateContainerAgent" => update_container_agent(body, tx, cfg),
        "DescribeContainerInstances" => describe_container_instances(body, tx, cfg),
        "DescribeTasks" => describe_tasks(body, tx, cfg),
        "ListTasks" => list_tasks(body, tx, cfg),
        other => Err(err(
            400,
            "UnknownOperationException",
            format!("operation {other} is not supported by ecs-warden (UpdateContainerAgent, DescribeContainerInstances, DescribeTasks, ListTasks are)"),
        )),
    }
}

// ----- parameters ---------------------------------------------------------

fn opt_string(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(err(
            400,
            "SerializationException",
            format!("{key} must be a string, not {}", kind(other)),
        )),
    }
}

fn req_string(body: &Map<String, Value>, key: &str) -> Result<String, ApiError> {
    opt_string(body, key)?
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(format!("{key} is required")))
}

fn string_list(
    body: &Map<String, Value>,
    key: &str,
    required: bool,
) -> Result<Vec<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) if required => Err(invalid(format!("{key} is required"))),
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => {
            if a.len() > 100 {
                return Err(invalid(format!(
                    "{key} holds {} items; at most 100 are allowed",
                    a.len()
                )));
            }
            a.iter()
                .map(|v| {
                    v.as_str().map(String::from).ok_or_else(|| {
                        err(
                            400,
                            "SerializationException",
                            format!("{key} must hold strings, not {}", kind(v)),
                        )
                    })
                })
                .collect()
        }
        Some(other) => Err(err(
            400,
            "SerializationException",
            format!("{key} must be a list of strings, not {}", kind(other)),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

// ----- identity -----------------------------------------------------------

/// This host's identity as ECS names it.
struct Host {
    snapshot: Snapshot,
    obs: Observation,
    cluster: String,
    arn: Option<String>,
    region: String,
    account: String,
}

fn host(tx: &Sender<Event>, cfg: &Config) -> Result<Host, ApiError> {
    let (snapshot, obs) = super::status::observe(tx, cfg, INTROSPECTION_BUDGET)?;
    let cluster = document::cluster(&snapshot, &obs);
    let arn = document::instance_arn(&snapshot, &obs);
    // arn:aws:ecs:REGION:ACCOUNT:container-instance/CLUSTER/ID
    let parts: Vec<&str> = arn.as_deref().unwrap_or("").split(':').collect();
    let (region, account) = if parts.len() >= 6 {
        (parts[3].to_string(), parts[4].to_string())
    } else {
        ("us-east-1".to_string(), "000000000000".to_string())
    };
    Ok(Host {
        snapshot,
        obs,
        cluster,
        arn,
        region,
        account,
    })
}

impl Host {
    fn cluster_arn(&self) -> String {
        format!(
            "arn:aws:ecs:{}:{}:cluster/{}",
            self.region, self.account, self.cluster
        )
    }

    /// `cluster` names this host's cluster (short name or ARN; absent is
    /// `default`), else `ClusterNotFoundException`.
    fn check_cluster(&self, cluster: Option<&str>) -> Result<(), ApiError> {
        let given = cluster.unwrap_or("default");
        let name = given
            .rsplit_once(":cluster/")
            .map(|(_, n)| n)
            .unwrap_or(given);
        if name == self.cluster {
            Ok(())
        } else {
            Err(ApiError::ecs(
                ClusterNotFoundException,
                format!(
                    "Cluster not found: {given:?} is not this host's cluster {:?}{}",
                    self.cluster,
                    if cluster.is_none() {
                        " (no cluster given means \"default\"; pass --cluster)"
                    } else {
                        ""
                    }
                ),
            ))
        }
    }

    /// Whether `name` (full ARN or id) is this host's container instance.
    fn is_me(&self, name: &str) -> bool {
        let Some(arn) = &self.arn else { return false };
        let id = arn.rsplit('/').next().unwrap_or("");
        name == arn || (!id.is_empty() && name == id)
    }

    fn check_instance(&self, name: &str) -> Result<(), ApiError> {
        if self.arn.is_none() {
            return Err(ApiError::ecs(
                ServerException,
                "the agent has not reported its container instance ARN yet; try again shortly",
            ));
        }
        if self.is_me(name) {
            Ok(())
        } else {
            Err(invalid(format!(
                "containerInstance {name:?} is not this host's container instance ({})",
                self.arn.as_deref().unwrap_or("")
            )))
        }
    }

    fn instance_doc(&self) -> ContainerInstance {
        let doc = document::status(self.snapshot.clone(), &self.obs);
        ContainerInstance {
            container_instance_arn: doc.container_instance_arn,
            agent_connected: doc.agent_connected,
            agent_update_status: doc.snapshot.agent_update_status.map(|s| s.as_str()),
            version_info: doc.version_info,
            running_tasks_count: doc.running_tasks_count,
            pending_tasks_count: doc.pending_tasks_count,
            status: doc.status,
            status_reason: doc.status_reason,
            attributes: [],
            registered_resources: [],
            remaining_resources: [],
        }
    }

    fn task_doc<'a>(&'a self, t: &'a Task) -> TaskDoc<'a> {
        TaskDoc {
            task_arn: &t.arn,
            last_status: &t.known_status,
            desired_status: &t.desired_status,
            task_definition_arn: format!(
                "arn:aws:ecs:{}:{}:task-definition/{}:{}",
                self.region, self.account, t.family, t.version
            ),
            containers: t
                .containers
                .iter()
                .map(|c| TaskContainer {
                    name: &c.name,
                    runtime_id: &c.docker_id,
                    last_status: &t.known_status,
                    task_arn: &t.arn,
                })
                .collect(),
            cluster_arn: self.cluster_arn(),
            container_instance_arn: self.arn.as_deref(),
        }
    }

    fn tasks(&self) -> Result<&[Task], ApiError> {
        self.obs.tasks.as_deref().ok_or_else(|| {
            ApiError::ecs(
                ServerException,
                "the agent's introspection API does not answer; tasks are unknown right now",
            )
        })
    }
}

// ----- operations ---------------------------------------------------------

fn update_container_agent(
    body: &Map<String, Value>,
    tx: &Sender<Event>,
    cfg: &Config,
) -> Result<Value, ApiError> {
    let cluster = opt_string(body, "cluster")?;
    let instance = req_string(body, "containerInstance")?;
    let h = host(tx, cfg)?;
    h.check_cluster(cluster.as_deref())?;
    h.check_instance(&instance)?;
    let action = match request::resolve(cfg, &Params::default(), Origin::Api, true) {
        Ok(r) => Action::Update(r),
        Err(e) => Action::Refuse(e),
    };
    ask(tx, action)?;
    let after = host(tx, cfg)?;
    let mut doc = after.instance_doc();
    // ECS answers an accepted request with PENDING, whatever step the
    // warden has already moved on to.
    doc.agent_update_status = Some("PENDING");
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer {
        container_instance: ContainerInstance,
    }
    answer(Answer {
        container_instance: doc,
    })
}

fn describe_container_instances(
    body: &Map<String, Value>,
    tx: &Sender<Event>,
    cfg: &Config,
) -> Result<Value, ApiError> {
    let cluster = opt_string(body, "cluster")?;
    let names = string_list(body, "containerInstances", true)?;
    if names.is_empty() {
        return Err(invalid("containerInstances must not be empty"));
    }
    let h = host(tx, cfg)?;
    h.check_cluster(cluster.as_deref())?;
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for n in &names {
        if h.is_me(n) {
            if found.is_empty() {
                found.push(h.instance_doc());
            }
        } else {
            failures.push(missing(n));
        }
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer<'a> {
        container_instances: Vec<ContainerInstance>,
        failures: Vec<Missing<'a>>,
    }
    answer(Answer {
        container_instances: found,
        failures,
    })
}

fn describe_tasks(
    body: &Map<String, Value>,
    tx: &Sender<Event>,
    cfg: &Config,
) -> Result<Value, ApiError> {
    let cluster = opt_string(body, "cluster")?;
    let names = string_list(body, "tasks", true)?;
    if names.is_empty() {
        return Err(invalid("tasks must not be empty"));
    }
    let h = host(tx, cfg)?;
    h.check_cluster(cluster.as_deref())?;
    let tasks = h.tasks()?;
    let mut found = Vec::new();
    let mut failures = Vec::new();
    for n in &names {
        let hit = tasks
            .iter()
            .find(|t| t.arn == *n || t.arn.rsplit('/').next() == Some(n.as_str()));
        match hit {
            Some(t) => found.push(h.task_doc(t)),
            None => failures.push(missing(n)),
        }
    }
    #[derive(Serialize)]
    struct Answer<'a> {
        tasks: Vec<TaskDoc<'a>>,
        failures: Vec<Missing<'a>>,
    }
    answer(Answer {
        tasks: found,
        failures,
    })
}

fn list_tasks(
    body: &Map<String, Value>,
    tx: &Sender<Event>,
    cfg: &Config,
) -> Result<Value, ApiError> {
    let cluster = opt_string(body, "cluster")?;
    let instance = opt_string(body, "containerInstance")?;
    let family = opt_string(body, "family")?;
    let desired = opt_string(body, "desiredStatus")?.unwrap_or_else(|| "RUNNING".into());
    if !matches!(desired.as_str(), "RUNNING" | "PENDING" | "STOPPED") {
        return Err(invalid(format!(
            "desiredStatus must be RUNNING, PENDING or STOPPED, not {desired:?}"
        )));
    }
    let h = host(tx, cfg)?;
    h.check_cluster(cluster.as_deref())?;
    if let Some(i) = &instance {
        h.check_instance(i)?;
    }
    let arns: Vec<&str> = h
        .tasks()?
        .iter()
        .filter(|t| t.desired_status == desired)
        .filter(|t| family.as_deref().is_none_or(|f| t.family == f))
        .map(|t| t.arn.as_str())
        .collect();
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Answer<'a> {
        task_arns: Vec<&'a str>,
    }
    answer(Answer { task_arns: arns })
}
