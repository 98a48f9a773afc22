//! The loopback ECS API with the real clients: the AWS CLI (v1) and boto3,
//! pointed at a host with `--endpoint-url` and the host's own key pair.
//!
//! Without `aws` (or boto3) these tests fail when `CI` is set and are
//! skipped, loudly, otherwise (`bash scripts/setup.sh` installs both).

use std::collections::BTreeSet;
use std::fs;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::api::*;
use crate::harness::server::Server;
use crate::harness::*;

fn task_arns(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

/// `aws ecs` end to end: list and describe tasks and the instance, update
/// 1.0.0 -> 1.1.0 with `update-container-agent`, follow it with
/// `describe-container-instances` to UPDATED, and find the same tasks
/// still running.
#[test]
fn aws_cli_lists_describes_and_updates() {
    if !aws_available("aws_cli_lists_describes_and_updates") {
        return;
    }
    let mut host = Host::builder().api().build();
    let port = host.api_port();
    let (p11, _) = build(&host, "1.1.0");
    let src = host.file_manifest(&[("1.1.0", &p11)]);
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &src)]);
    let arn = start_and_register(&mut host);
    let id = arn.rsplit('/').next().unwrap().to_string();
    let web = host.start_task("web");
    let worker = host.start_task("worker");
    let web_arn = web["Arn"].as_str().unwrap().to_string();
    let worker_arn = worker["Arn"].as_str().unwrap().to_string();
    let worker_id = worker_arn.rsplit('/').next().unwrap().to_string();
    let home = host.path("home");
    fs::create_dir_all(&home).unwrap();
    let cf = host.path("etc/ecs-warden/credentials");
    let aws = |args: &[&str]| aws(&home, &cf, port, args);

    // list-tasks: both, then filtered by family.
    let all = aws(&["list-tasks", "--cluster", CLUSTER]).json();
    assert_eq!(
        task_arns(&all["taskArns"]),
        BTreeSet::from([web_arn.clone(), worker_arn.clone()])
    );
    // (Filters, over the socket: no need for another CLI start-up.)
    let only_web = ecs_call(
        &To::Unix(socket(&host)),
        None,
        "ListTasks",
        &json!({"cluster": CLUSTER, "family": "web"}),
    )
    .json();
    assert_eq!(
        task_arns(&only_web["taskArns"]),
        BTreeSet::from([web_arn.clone()])
    );

    // describe-tasks by ARN and by id; an unknown one is a failure.
    let missing = "0123456789abcdef0123456789abcdef";
    let described = aws(&[
        "describe-tasks",
        "--cluster",
        CLUSTER,
        "--tasks",
        &web_arn,
        &worker_id,
        missing,
    ])
    .json();
    let tasks = described["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{described}");
    let containers_before: Vec<Value> = tasks.iter().map(|t| t["containers"].clone()).collect();
    for t in tasks {
        assert_eq!(t["lastStatus"], "RUNNING", "{t}");
        assert_eq!(t["desiredStatus"], "RUNNING", "{t}");
        assert_eq!(t["containerInstanceArn"], arn.as_str());
        assert_eq!(
            t["clusterArn"],
            "arn:aws:ecs:us-west-2:012345678910:cluster/prod"
        );
        assert!(
            t["taskDefinitionArn"]
                .as_str()
                .unwrap()
                .contains(":task-definition/"),
            "{t}"
        );
    }
    assert_eq!(
        described["failures"],
        json!([{"arn": missing, "reason": "MISSING"}])
    );

    // describe-container-instances by id.
    let ci = aws(&[
        "describe-container-instances",
        "--cluster",
        CLUSTER,
        "--container-instances",
        &id,
    ])
    .json();
    let inst = &ci["containerInstances"][0];
    assert_eq!(inst["containerInstanceArn"], arn.as_str(), "{ci}");
    assert_eq!(inst["versionInfo"]["agentVersion"], "1.0.0");
    assert_eq!(inst["agentConnected"], true);
    assert_eq!(inst["status"], "ACTIVE");
    assert_eq!(inst["runningTasksCount"], 2);
    assert_eq!(ci["failures"], json!([]));

    // update-container-agent by ARN: accepted as PENDING.
    let started = Instant::now();
    let up = aws(&[
        "update-container-agent",
        "--cluster",
        CLUSTER,
        "--container-instance",
        &arn,
    ])
    .json();
    assert_eq!(
        up["containerInstance"]["agentUpdateStatus"], "PENDING",
        "{up}"
    );
    assert_eq!(
        up["containerInstance"]["containerInstanceArn"],
        arn.as_str()
    );

    // Follow it with describe-container-instances.
    let mut seen = Vec::new();
    let done = loop {
        let ci = aws(&[
            "describe-container-instances",
            "--cluster",
            CLUSTER,
            "--container-instances",
            &arn,
        ])
        .json();
        let inst = ci["containerInstances"][0].clone();
        seen.push(format!(
            "{}/{}",
            inst["agentUpdateStatus"], inst["versionInfo"]["agentVersion"]
        ));
        if inst["agentUpdateStatus"] == "UPDATED" && inst["versionInfo"]["agentVersion"] == "1.1.0"
        {
            break inst;
        }
        assert_ne!(inst["agentUpdateStatus"], "FAILED", "{ci}\n{}", host.log());
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no UPDATED after 60 s; seen {seen:?}\n{}",
            host.log()
        );
    };
    assert_eq!(done["agentConnected"], true);
    assert_eq!(done["runningTasksCount"], 2, "{done}");
    assert_eq!(host.agent_version().as_deref(), Some("1.1.0"));

    // The same tasks, with the same containers, still run.
    let after = aws(&[
        "describe-tasks",
        "--cluster",
        CLUSTER,
        "--tasks",
        &web_arn,
        &worker_arn,
    ])
    .json();
    let tasks = after["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{after}");
    for (t, before) in tasks.iter().zip(&containers_before) {
        assert_eq!(t["lastStatus"], "RUNNING", "{t}");
        assert_eq!(&t["containers"], before);
    }

    // Nothing newer now (the other error names: boto3_raises_modeled_exceptions).
    aws(&[
        "update-container-agent",
        "--cluster",
        CLUSTER,
        "--container-instance",
        &id,
    ])
    .assert_error("NoUpdateAvailableException");
    let st = status_doc(&host).unwrap();
    assert_eq!(st["update"]["counters"]["updates"]["UPDATED"], 1);
}

/// Unsigned, wrongly signed and foreign-key calls are refused with the AWS
/// error names, and change nothing.
#[test]
fn aws_cli_unsigned_and_wrongly_signed_calls_are_refused() {
    if !aws_available("aws_cli_unsigned_and_wrongly_signed_calls_are_refused") {
        return;
    }
    let mut host = Host::builder().api().build();
    let port = host.api_port();
    let (p11, _) = build(&host, "1.1.0");
    let src = host.file_manifest(&[("1.1.0", &p11)]);
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &src)]);
    let arn = start_and_register(&mut host);
    let home = host.path("home");
    fs::create_dir_all(&home).unwrap();
    let good = host.path("etc/ecs-warden/credentials");
    let real = creds(&host);
    let wrong_secret = home.join("wrong-secret");
    fs::write(
        &wrong_secret,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            real.access_key_id,
            "A".repeat(40)
        ),
    )
    .unwrap();
    let foreign = home.join("foreign");
    fs::write(
        &foreign,
        "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n",
    )
    .unwrap();
    let before = fingerprint(&host);
    let update = [
        "update-container-agent",
        "--cluster",
        CLUSTER,
        "--container-instance",
        arn.as_str(),
    ];

    let mut unsigned = update.to_vec();
    unsigned.push("--no-sign-request");
    aws(&home, &good, port, &unsigned).assert_error("MissingAuthenticationTokenException");
    aws(&home, &wrong_secret, port, &update).assert_error("InvalidSignatureException");
    aws(&home, &foreign, port, &update).assert_error("UnrecognizedClientException");
    aws(
        &home,
        &wrong_secret,
        port,
        &["list-tasks", "--cluster", CLUSTER],
    )
    .assert_error("InvalidSignatureException");

    assert_eq!(
        fingerprint(&host),
        before,
        "a refused call changed the host"
    );
    let st = status_doc(&host).unwrap();
    assert_eq!(st["update"]["state"], Value::Null, "{}", st["update"]);
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
    assert!(
        host.log().contains("refused an unauthenticated API call"),
        "{}",
        host.log()
    );
    // The right key still works.
    let ok = aws(
        &home,
        &good,
        port,
        &[
            "describe-container-instances",
            "--cluster",
            CLUSTER,
            "--container-instances",
            &arn,
        ],
    )
    .json();
    assert_eq!(
        ok["containerInstances"][0]["containerInstanceArn"],
        arn.as_str()
    );
}

fn expect_caught(r: &Value, name: &str) {
    assert_eq!(r["caught"], name, "expected {name}: {r}");
    assert_eq!(r["class"], name, "{r}");
    assert_eq!(r["code"], name, "{r}");
    assert_eq!(r["status"], 400, "{r}");
}

/// boto3 raises the modeled exceptions: `NoUpdateAvailableException`,
/// `ClusterNotFoundException`, `InvalidParameterException`, and
/// `UpdateInProgressException` while a slow download is in flight.
#[test]
fn boto3_raises_modeled_exceptions() {
    if !boto3_available("boto3_raises_modeled_exceptions") {
        return;
    }
    let mut host = Host::builder().api().build();
    let port = host.api_port();
    // At first the manifest offers only what runs.
    let p10 = host.path("srv/agent-1.0.0");
    fs::copy(host.path("var/cache/ecs/ecs-agent"), &p10).unwrap();
    let src = host.file_manifest(&[("1.0.0", &p10)]);
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &src)]);
    let arn = start_and_register(&mut host);
    let home = host.path("home");
    fs::create_dir_all(&home).unwrap();
    let cf = host.path("etc/ecs-warden/credentials");
    let update = |cluster: &str, instance: &str| {
        json!({"op": "update_container_agent",
               "params": {"cluster": cluster, "containerInstance": instance}})
    };
    let with = |mut case: Value, expect: &str| {
        case["expect"] = json!(expect);
        case
    };

    let before = fingerprint(&host);
    let r = boto3_calls(
        &home,
        &cf,
        port,
        &[
            with(update(CLUSTER, &arn), "NoUpdateAvailableException"),
            with(update("nope", &arn), "ClusterNotFoundException"),
            with(
                json!({"op": "describe_container_instances",
                       "params": {"cluster": "nope", "containerInstances": [arn]}}),
                "ClusterNotFoundException",
            ),
            with(
                json!({"op": "list_tasks", "params": {}}),
                "ClusterNotFoundException",
            ),
            with(
                update(CLUSTER, "not-this-host"),
                "InvalidParameterException",
            ),
        ],
    );
    expect_caught(&r[0], "NoUpdateAvailableException");
    assert!(
        r[0]["message"].as_str().unwrap().contains("1.0.0"),
        "{}",
        r[0]
    );
    expect_caught(&r[1], "ClusterNotFoundException");
    expect_caught(&r[2], "ClusterNotFoundException");
    expect_caught(&r[3], "ClusterNotFoundException");
    expect_caught(&r[4], "InvalidParameterException");
    assert_eq!(
        fingerprint(&host),
        before,
        "a refused call changed the host"
    );

    // Now 1.1.0, served slowly: the first call is accepted, the second
    // finds it in flight.
    let (p11, _) = build(&host, "1.1.0");
    let slow = Server::start();
    let slow_url = slow.slow_file("/agent", &p11, true);
    manifest_with_urls(&host, &[("1.1.0", &slow_url, &p11)]);
    let r = boto3_calls(
        &home,
        &cf,
        port,
        &[
            update(CLUSTER, &arn),
            with(update(CLUSTER, &arn), "UpdateInProgressException"),
        ],
    );
    assert_eq!(r[0]["ok"], true, "{}", r[0]);
    assert_eq!(
        r[0]["response"]["containerInstance"]["agentUpdateStatus"],
        "PENDING"
    );
    expect_caught(&r[1], "UpdateInProgressException");
    let st = status_doc(&host).unwrap();
    assert_eq!(st["update"]["state"], "STAGING", "{}", st["update"]);
    assert!(slow.sent() < fs::metadata(&p11).unwrap().len());

    slow.release();
    wait_update_state(&host, "UPDATED", Duration::from_secs(60));
    host.wait_agent("1.1.0");
    assert_eq!(slow.gets("/agent"), 1, "one download");
    let r = boto3_calls(
        &home,
        &cf,
        port,
        &[with(update(CLUSTER, &arn), "NoUpdateAvailableException")],
    );
    expect_caught(&r[0], "NoUpdateAvailableException");
}
