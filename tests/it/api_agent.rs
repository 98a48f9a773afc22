//! The agent-facing calls: `POST /v1/agent/stage` and `/v1/agent/perform`
//! on the control socket, as the agent makes them on an update message
//! (the sample agent's `POST /sample/request-update`), and directly.

use std::fs;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::api::*;
use crate::harness::server::Server;
use crate::harness::*;
use ecs_warden::http::percent_encode;

/// `POST /sample/request-update` on the sample agent; its answer
/// `{"stage": STEP, "perform": STEP|null}`.
fn request_update(host: &Host, location: &str, signature: &str, version: Option<&str>) -> Value {
    let mut path = format!(
        "/sample/request-update?location={}&signature={signature}",
        percent_encode(location)
    );
    if let Some(v) = version {
        path.push_str(&format!("&version={v}"));
    }
    host.post(&path)
        .unwrap_or_else(|e| panic!("request-update: {e}\n{}", host.log()))
}

fn stage(host: &Host, location: &str, signature: &str, version: Option<&str>) -> Resp {
    let mut body = json!({"location": location, "signature": signature});
    if let Some(v) = version {
        body["version"] = json!(v);
    }
    control(host, "POST", "/v1/agent/stage", Some(&body))
}

fn perform(host: &Host, signature: &str) -> Resp {
    control(
        host,
        "POST",
        "/v1/agent/perform",
        Some(&json!({"signature": signature})),
    )
}

fn agent_pid(host: &Host) -> i64 {
    status_doc(host).unwrap()["supervisor"]["agentPid"]
        .as_i64()
        .unwrap()
}

/// The agent asks for 1.1.0 (file:// location, its SHA-256, its version):
/// the warden stages and performs, the agent comes back as 1.1.0 with its
/// task untouched. Asking again changes nothing.
#[test]
fn request_update_stages_and_performs() {
    let mut host = Host::builder().api().build();
    let arn = start_and_register(&mut host);
    let task = host.start_task("web");
    let (p11, sha) = build(&host, "1.1.0");
    let location = format!("file://{}", p11.display());
    let pid0 = agent_pid(&host);

    let out = request_update(&host, &location, &sha, Some("1.1.0"));
    assert_eq!(out["stage"]["status"], 200, "{out}");
    let staged = &out["stage"]["body"];
    assert_eq!(staged["target"], "1.1.0", "{out}");
    assert_eq!(staged["targetSha256"], sha.as_str());
    assert_eq!(staged["origin"], "agent");
    assert_eq!(staged["perform"], false, "stage alone does not perform");
    assert_eq!(out["perform"]["status"], 200, "{out}");
    assert_eq!(out["perform"]["body"]["perform"], true, "{out}");
    let id = staged["id"].as_str().unwrap().to_string();

    let d = wait_update_state(&host, "UPDATED", Duration::from_secs(60));
    assert_eq!(d["update"]["id"], id.as_str());
    assert_eq!(d["update"]["target"], "1.1.0");
    assert_eq!(d["update"]["previousVersion"], "1.0.0");
    assert_eq!(d["update"]["tasksBefore"], 1);
    host.wait_agent("1.1.0");
    let d = wait_for("connected on 1.1.0", Duration::from_secs(10), || {
        status_doc(&host).filter(|d| d["agentConnected"] == true)
    });
    assert_eq!(d["agentUpdateStatus"], "UPDATED");
    assert_eq!(d["versionInfo"]["agentVersion"], "1.1.0");
    assert_eq!(d["containerInstanceArn"], arn.as_str());
    let pid1 = d["supervisor"]["agentPid"].as_i64().unwrap();
    assert_ne!(pid1, pid0, "a new agent process");
    let tasks = host.tasks();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0]["Arn"], task["Arn"]);
    assert_eq!(tasks[0]["KnownStatus"], "RUNNING");
    assert_eq!(tasks[0]["Containers"], task["Containers"]);

    // The same request again: no second update. An agent that re-sends a
    // stage and perform whose answers it lost gets the same answers (200,
    // the finished update), and nothing changes.
    let before = fingerprint(&host);
    let again = request_update(&host, &location, &sha, Some("1.1.0"));
    assert_eq!(again["stage"]["status"], 200, "{again}");
    assert_eq!(again["stage"]["body"]["state"], "UPDATED", "{again}");
    assert_eq!(again["perform"]["status"], 200, "{again}");
    assert_eq!(again["perform"]["body"]["state"], "UPDATED", "{again}");
    assert_eq!(fingerprint(&host), before);
    assert_eq!(agent_pid(&host), pid1);
    assert_eq!(
        status_doc(&host).unwrap()["update"]["counters"]["updates"]["UPDATED"],
        1
    );
}

/// Direct stage/perform calls while a slow download is in flight: the same
/// stage again is idempotent (200, same update, one download); a different
/// stage is `UpdateInProgressException`; a perform with another signature
/// is `InvalidParameterException`; stage stops at STAGED until the right
/// perform.
#[test]
fn stage_is_idempotent_conflicts_and_wrong_performs_are_refused() {
    let mut host = Host::builder().api().build();
    start_and_register(&mut host);
    let pid0 = agent_pid(&host);
    let (p11, sha11) = build(&host, "1.1.0");
    let (p12, sha12) = build(&host, "1.2.0");
    let slow = Server::start();
    let slow_url = slow.slow_file("/agent", &p11, true);

    let r = stage(&host, &slow_url, &sha11, Some("1.1.0"));
    assert_eq!(r.status, 200, "{}", r.text());
    let first = r.json();
    let id = first["id"].as_str().unwrap().to_string();
    assert_eq!(first["target"], "1.1.0");
    assert_eq!(first["origin"], "agent");
    assert!(
        ["PENDING", "STAGING"].contains(&first["state"].as_str().unwrap()),
        "{first}"
    );
    wait_for("the download to start", Duration::from_secs(10), || {
        (slow.gets("/agent") == 1).then_some(())
    });

    // The same stage again, while downloading.
    let r = stage(&host, &slow_url, &sha11, Some("1.1.0"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str(), "the same update");
    assert_eq!(r.json()["state"], "STAGING");

    // A different build while one is in flight.
    let f12 = format!("file://{}", p12.display());
    let (status, name, message) = stage(&host, &f12, &sha12, Some("1.2.0")).error();
    assert_eq!(
        (status, name.as_str()),
        (400, "UpdateInProgressException"),
        "{message}"
    );
    assert!(message.contains("1.1.0"), "{message}");
    // A perform for something else.
    let (status, name, message) = perform(&host, &sha12).error();
    assert_eq!(
        (status, name.as_str()),
        (400, "InvalidParameterException"),
        "{message}"
    );
    assert!(message.contains("does not match"), "{message}");
    let d = status_doc(&host).unwrap();
    assert_eq!(d["update"]["id"], id.as_str());
    assert_eq!(d["update"]["targetSha256"], sha11.as_str());
    assert_eq!(d["update"]["state"], "STAGING");
    assert_eq!(d["update"]["perform"], false);
    assert_eq!(
        d["update"]["lastRefusal"]["name"],
        "InvalidParameterException"
    );
    assert_eq!(d["supervisor"]["agentPid"], pid0);

    // Downloaded: STAGED, and it stays there.
    slow.release();
    wait_update_state(&host, "STAGED", Duration::from_secs(60));
    assert!(host
        .path("var/lib/ecs-warden/agents/1.1.0/ecs-agent")
        .is_file());
    let r = stage(&host, &slow_url, &sha11, Some("1.1.0"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["id"], id.as_str());
    assert_eq!(r.json()["state"], "STAGED");
    let (status, name, _) = perform(&host, &sha12).error();
    assert_eq!((status, name.as_str()), (400, "InvalidParameterException"));
    // (Refusals are decided on the spot: nothing to wait for.)
    let d = status_doc(&host).unwrap();
    assert_eq!(d["update"]["state"], "STAGED", "nothing performed it");
    assert_eq!(d["supervisor"]["agentPid"], pid0);
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
    assert_eq!(slow.gets("/agent"), 1, "one download");

    // The right perform.
    let r = perform(&host, &sha11);
    assert_eq!(r.status, 200, "{}", r.text());
    let d = wait_update_state(&host, "UPDATED", Duration::from_secs(60));
    assert_eq!(d["update"]["id"], id.as_str());
    host.wait_agent("1.1.0");
    assert_eq!(slow.gets("/agent"), 1);

    // Performing it again (an agent that lost the answer): the same
    // finished update, nothing done twice.
    let before = fingerprint(&host);
    let r = perform(&host, &sha11);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().contains("\"UPDATED\""), "{}", r.text());
    assert_eq!(fingerprint(&host), before);
    // A perform of something never staged is refused.
    let (status, name, message) = perform(&host, &"ab".repeat(32)).error();
    assert_eq!(
        (status, name.as_str()),
        (400, "InvalidParameterException"),
        "{message}"
    );
    assert!(message.contains("is staged"), "{message}");
    assert_eq!(fingerprint(&host), before);
}

/// A stage without a version learns it from the downloaded build: the same
/// version as runs fails as `NoUpdateAvailableException`, a wrong
/// signature fails verification, both without touching the agent; a newer
/// build over loopback http goes through.
#[test]
fn stage_without_version_learns_it_from_the_build() {
    let mut host = Host::builder().api().build();
    start_and_register(&mut host);
    let pid0 = agent_pid(&host);

    // 1.0.0 again, without saying so.
    let p10 = host.path("srv/agent-1.0.0");
    fs::copy(host.path("var/cache/ecs/ecs-agent"), &p10).unwrap();
    let sha10 = sha256_hex(&fs::read(&p10).unwrap());
    // (Stage alone: the download may fail before a perform would arrive.)
    let r = stage(&host, &format!("file://{}", p10.display()), &sha10, None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["target"], "", "the version is not known yet");
    let d = wait_update_state(&host, "FAILED", Duration::from_secs(60));
    assert_eq!(d["update"]["target"], "1.0.0", "learned from the build");
    assert_eq!(
        d["update"]["error"]["name"], "NoUpdateAvailableException",
        "{}",
        d["update"]
    );
    assert_eq!(d["supervisor"]["agentPid"], pid0);

    // 1.1.0 with a signature that is not its SHA-256.
    let (p11, sha11) = build(&host, "1.1.0");
    let server = Server::start();
    let server_url = server.slow_file("/agent", &p11, false);
    let wrong = sha256_hex(b"not the build");
    let out = request_update(&host, &server_url, &wrong, None);
    assert_eq!(out["stage"]["status"], 200, "{out}");
    let d = wait_for("the bad download to fail", Duration::from_secs(60), || {
        status_doc(&host).filter(|d| {
            d["update"]["state"] == "FAILED" && d["update"]["targetSha256"] == wrong.as_str()
        })
    });
    let err = &d["update"]["error"];
    assert_eq!(err["name"], "ClientException", "{err}");
    assert!(
        err["message"].as_str().unwrap().contains(&sha11)
            || err["message"].as_str().unwrap().contains("SHA-256")
            || err["message"].as_str().unwrap().contains("sha256"),
        "{err}"
    );
    assert_eq!(d["supervisor"]["agentPid"], pid0);
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
    assert!(!host.path("var/lib/ecs-warden/agents/1.1.0").exists());

    // 1.1.0 over loopback http, no version given.
    let out = request_update(&host, &server_url, &sha11, None);
    assert_eq!(out["stage"]["status"], 200, "{out}");
    assert_eq!(out["perform"]["status"], 200, "{out}");
    let d = wait_update_state(&host, "UPDATED", Duration::from_secs(60));
    assert_eq!(d["update"]["target"], "1.1.0", "learned from the build");
    assert_eq!(d["update"]["targetSha256"], sha11.as_str());
    host.wait_agent("1.1.0");
    let d = status_doc(&host).unwrap();
    assert_eq!(d["update"]["counters"]["updates"]["UPDATED"], 1);
    assert_eq!(d["update"]["counters"]["updates"]["FAILED"], 2);
}
