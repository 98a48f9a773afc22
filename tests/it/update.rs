//! The update issue's happy paths, against the real binaries and a real
//! loopback server: PENDING → STAGING → STAGED → UPDATING → UPDATED with a
//! Docker task that keeps its container, two updates in a row and an
//! operator rollback; `stage` then `update`; progress while a slow download
//! runs; `--no-wait`; housekeeping; a pinned version; the agent's own
//! staging through exit code 42, good and bad.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::harness::server::{self, Fault, Server};
use crate::harness::*;
use serde_json::Value;

const LIFECYCLE: [&str; 5] = ["PENDING", "STAGING", "STAGED", "UPDATING", "UPDATED"];

fn host_for(srv: &Server, runtime: &str, extra: &[(&str, &str)]) -> Host {
    Host::builder()
        .runtime(runtime)
        .updates_from(srv)
        .config(extra)
        .start()
}

fn build(host: &Host, version: &str) -> PathBuf {
    host.stamp_small(version, None, &host.path(&format!("srv/{version}")))
}

/// `update --json` (or another verb) succeeded; its final document.
fn ok(host: &Host, args: &[&str]) -> Value {
    let ran = host.run(args);
    assert_eq!(ran.code, 0, "{args:?}: {ran:?}\nlog:\n{}", host.log());
    ran.json()
}

/// Names in the store, sorted.
fn store_names(host: &Host) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(host.path("var/lib/ecs-warden/agents"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn container_of(task: &Value) -> String {
    task["Containers"][0]["DockerId"]
        .as_str()
        .expect("a container id")
        .to_string()
}

/// The task is reported RUNNING with exactly these containers.
fn assert_task_kept(host: &Host, task: &Value) {
    let now = host.tasks();
    let t = now
        .iter()
        .find(|t| t["Arn"] == task["Arn"])
        .unwrap_or_else(|| panic!("task {} is gone: {now:?}", task["Arn"]));
    assert_eq!(t["KnownStatus"], "RUNNING");
    assert_eq!(t["Containers"], task["Containers"]);
}

#[test]
fn docker_task_keeps_its_container_through_two_updates_and_a_rollback() {
    let test = "docker_task_keeps_its_container";
    if !docker_available(test) {
        return;
    }
    ensure_task_image();
    let srv = Server::start();
    // Its own cluster: the engine is shared, and a warden performing an
    // exit-42 update beside it checks the task containers of `default`.
    let host = host_for(&srv, "docker", &[("ECS_CLUSTER", "update-docker-test")]);
    let task = host.start_task("web");
    let cid = container_of(&task);
    let started_at = docker_inspect(&cid, "{{.State.StartedAt}}").expect("container exists");
    let container_unchanged = || {
        assert_eq!(
            docker_inspect(&cid, "{{.State.Running}} {{.State.StartedAt}}").as_deref(),
            Some(format!("true {started_at}").as_str()),
            "container {cid} was restarted or stopped"
        );
        assert_task_kept(&host, &task);
    };
    let (b110, b120) = (build(&host, "1.1.0"), build(&host, "1.2.0"));

    srv.publish(&[("1.1.0", &b110)]);
    let u = ok(&host, &["update", "--json"]);
    assert_eq!(u["state"], "UPDATED");
    assert_eq!(u["tasksBefore"], 1, "the gate checked the task");
    assert_eq!(host.states_of(u["id"].as_str().unwrap()), LIFECYCLE);
    host.assert_intact("1.1.0");
    container_unchanged();

    srv.publish(&[("1.1.0", &b110), ("1.2.0", &b120)]);
    let u = ok(&host, &["update", "--json"]);
    assert_eq!(u["target"], "1.2.0");
    assert_eq!(u["previousVersion"], "1.1.0");
    assert_eq!(host.states_of(u["id"].as_str().unwrap()), LIFECYCLE);
    host.assert_intact("1.2.0");
    container_unchanged();

    let u = ok(&host, &["rollback", "--json"]);
    assert_eq!(u["state"], "UPDATED");
    assert_eq!(u["origin"], "rollback");
    host.assert_intact("1.1.0");
    container_unchanged();
    assert!(
        u["quarantined"]["1.2.0"].is_object(),
        "the version rolled back from is quarantined: {u:#}"
    );
    let prev = fs::read_link(host.path("var/lib/ecs-warden/agents/previous")).unwrap();
    assert_eq!(
        prev,
        PathBuf::from("1.2.0"),
        "previous is the build we left"
    );
}

#[test]
fn stage_stops_at_staged_then_update_performs_it() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[]);
    let task = host.start_task("web");
    let pid = host.agent_pid().unwrap();
    srv.publish(&[("1.1.0", &build(&host, "1.1.0"))]);

    let staged = ok(&host, &["stage", "--json"]);
    assert_eq!(staged["state"], "STAGED");
    assert_eq!(host.journal().unwrap()["state"], "STAGED");
    let dir = host.path("var/lib/ecs-warden/agents/1.1.0");
    assert!(dir.join("artifact.json").is_file() && dir.join("ecs-agent").is_file());
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o755
    );
    assert_eq!(
        fs::metadata(dir.join("ecs-agent"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    // Nothing was performed: same agent, same build.
    assert_eq!(host.agent_pid(), Some(pid));
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
    let cur = fs::read_link(host.path("var/lib/ecs-warden/agents/current")).unwrap();
    assert_eq!(cur, PathBuf::from("1.0.0"));

    // The staged update survives a restart of the warden.
    let mut host = host;
    assert_eq!(host.run(&["stop"]).code, 0);
    assert_eq!(host.wait_exit(Duration::from_secs(20)), 0);
    host.start();
    host.wait_agent("1.0.0");
    assert_eq!(host.update_doc()["state"], "STAGED");

    let fetched = srv.seen_at("/agents/1.1.0").len();
    let u = ok(&host, &["update", "--json"]);
    assert_eq!(u["id"], staged["id"], "the staged update was performed");
    assert_eq!(
        srv.seen_at("/agents/1.1.0").len(),
        fetched,
        "not fetched again"
    );
    assert_eq!(host.states_of(u["id"].as_str().unwrap()), LIFECYCLE);
    host.assert_intact("1.1.0");
    assert_task_kept(&host, &task);
}

#[test]
fn no_wait_returns_at_once_and_status_shows_progress() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[]);
    srv.publish(&[("1.1.0", &build(&host, "1.1.0"))]);
    // About 1 MB/s: a few seconds for the build.
    let slow = Fault::Dribble {
        chunk: 16 * 1024,
        pause: Duration::from_millis(16),
    };
    srv.script("/agents/1.1.0", &[], slow);

    let t = Instant::now();
    let ran = host.run(&["update", "--no-wait", "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    // The download alone takes seconds: the CLI did not wait for it.
    let state = host.journal().unwrap()["state"].clone();
    assert!(
        matches!(state.as_str(), Some("PENDING" | "STAGING")),
        "{state}"
    );
    let accepted = ran.json();
    assert!(
        matches!(accepted["state"].as_str(), Some("PENDING" | "STAGING")),
        "{accepted:#}"
    );

    let (done, total) = wait_for("progress in status", Duration::from_secs(20), || {
        let u = host.update_doc();
        let done = u["bytesDone"].as_u64()?;
        let total = u["bytesTotal"].as_u64()?;
        (u["state"] == "STAGING" && done > 0 && done < total).then_some((done, total))
    });
    let size = fs::metadata(host.path("srv/1.1.0")).unwrap().len();
    assert_eq!(total, size);
    // It moves on.
    wait_for("more progress", Duration::from_secs(20), || {
        let u = host.update_doc();
        (u["bytesDone"].as_u64().unwrap_or(u64::MAX) > done || u["state"] != "STAGING")
            .then_some(())
    });
    let u = host.wait_update_end(Duration::from_secs(60));
    assert_eq!(u["state"], "UPDATED", "{u:#}");
    assert!(u.get("bytesDone").is_none(), "progress is gone once staged");
    host.assert_intact("1.1.0");
}

#[test]
fn housekeeping_keeps_current_previous_and_staged() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[]);
    let builds: Vec<(String, PathBuf)> = ["1.1.0", "1.2.0", "1.3.0", "1.4.0"]
        .iter()
        .map(|v| (v.to_string(), build(&host, v)))
        .collect();
    let publish = |n: usize| {
        let list: Vec<(&str, &std::path::Path)> = builds[..n]
            .iter()
            .map(|(v, p)| (v.as_str(), p.as_path()))
            .collect();
        srv.publish(&list);
    };
    publish(1);
    ok(&host, &["update", "--json"]);
    publish(2);
    ok(&host, &["update", "--json"]);
    // Leftovers a crash or an old warden could leave behind.
    let agents = host.path("var/lib/ecs-warden/agents");
    fs::create_dir_all(agents.join("0.5.0")).unwrap();
    fs::write(agents.join("0.5.0/ecs-agent"), b"old").unwrap();
    fs::write(agents.join("0.5.0/artifact.json"), b"{}").unwrap();
    fs::write(agents.join(".9.9.9.partial"), b"half").unwrap();
    fs::create_dir_all(agents.join(".1.3.0.tmp-4242")).unwrap();
    let cache = host.path("var/cache/ecs");
    fs::write(cache.join("0a1b2c.ecs-update.bin"), b"consumed").unwrap();

    publish(3);
    ok(&host, &["update", "--json"]);
    assert_eq!(
        store_names(&host),
        ["1.2.0", "1.3.0", "current", "previous"]
    );
    assert!(!cache.join("0a1b2c.ecs-update.bin").exists());
    assert!(cache.join("ecs-agent").is_file(), "the bundled agent stays");
    host.assert_intact("1.3.0");

    // A staged build is kept beside current and previous.
    publish(4);
    let s = ok(&host, &["stage", "--json"]);
    assert_eq!(s["state"], "STAGED");
    assert_eq!(
        store_names(&host),
        ["1.2.0", "1.3.0", "1.4.0", "current", "previous"]
    );
}

#[test]
fn rollback_restores_the_data_snapshot_unless_keep_data() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[]);
    let task = host.start_task("web");
    let data = host.path("var/lib/ecs/data");
    srv.publish(&[("1.1.0", &build(&host, "1.1.0"))]);
    ok(&host, &["update", "--json"]);
    fs::write(data.join("written-by-1.1.0"), "x").unwrap();

    let u = ok(&host, &["rollback", "--json"]);
    assert_eq!(u["target"], "1.0.0");
    assert_eq!(
        host.states_of(u["id"].as_str().unwrap()),
        ["PENDING", "UPDATING", "UPDATED"]
    );
    host.assert_intact("1.0.0");
    assert!(
        !data.join("written-by-1.1.0").exists(),
        "the snapshot was restored"
    );
    assert_task_kept(&host, &task);

    // 1.1.0 is quarantined by the rollback: forced back, then rolled back
    // again keeping the data.
    let ran = host.run(&["update"]);
    assert_eq!(ran.code, 10, "{ran:?}");
    ok(&host, &["update", "--force", "--json"]);
    host.assert_intact("1.1.0");
    fs::write(data.join("written-by-1.1.0"), "y").unwrap();
    ok(&host, &["rollback", "--keep-data", "--json"]);
    host.assert_intact("1.0.0");
    assert_eq!(
        fs::read_to_string(data.join("written-by-1.1.0")).unwrap(),
        "y"
    );
    assert_task_kept(&host, &task);
}

#[test]
fn file_manifest_source() {
    let host = Host::builder().small().start();
    let b = build(&host, "1.1.0");
    let src = host.file_manifest(&[("1.1.0", &b)]);
    assert!(src.starts_with("file:///"));
    let u = ok(&host, &["update", "--source", &src, "--json"]);
    assert_eq!(u["source"], src);
    assert_eq!(u["targetUrl"], format!("file://{}", b.display()));
    host.assert_intact("1.1.0");
}

#[test]
fn highest_version_for_this_arch_is_chosen() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[]);
    let (b12, b110) = (build(&host, "1.2.0"), build(&host, "1.10.0"));
    let bytes = |p: &PathBuf| fs::read(p).unwrap();
    srv.file("/agents/1.2.0", bytes(&b12));
    srv.file("/agents/1.10.0", bytes(&b110));
    let mut other = server::entry("9.0.0", &bytes(&b12), "agents/9.0.0");
    other["arch"] = serde_json::json!("s390x-elsewhere");
    srv.manifest(&serde_json::json!({"schemaVersion": 1, "agents": [
        server::entry("1.2.0", &bytes(&b12), "agents/1.2.0"),
        other,
        server::entry("1.10.0", &bytes(&b110), "agents/1.10.0"),
    ]}));
    let u = ok(&host, &["stage", "--json"]);
    assert_eq!(u["target"], "1.10.0", "semver order, this arch only");
    assert_eq!(srv.seen_at("/agents/1.10.0").len(), 1);
    assert!(srv.seen_at("/agents/1.2.0").is_empty() && srv.seen_at("/agents/9.0.0").is_empty());
}

#[test]
fn pinned_version_is_installed_not_the_newest() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[("ECS_WARDEN_AGENT_VERSION", "1.1.0")]);
    let (b110, b120) = (build(&host, "1.1.0"), build(&host, "1.2.0"));
    srv.publish(&[("1.2.0", &b120), ("1.1.0", &b110)]);
    let u = ok(&host, &["update", "--json"]);
    assert_eq!(u["target"], "1.1.0");
    host.assert_intact("1.1.0");
    assert!(srv.seen_at("/agents/1.2.0").is_empty());
    // Pinned and there: nothing newer is taken.
    let ran = host.run(&["update"]);
    assert_eq!(ran.code, 10, "{ran:?}");
    assert!(ran.stderr.contains("NoUpdateAvailableException"), "{ran:?}");
    // An explicit --version still wins over the pin.
    let u = ok(&host, &["update", "--version", "1.2.0", "--json"]);
    assert_eq!(u["target"], "1.2.0");
    host.assert_intact("1.2.0");
}

#[test]
fn exit_42_performs_the_build_the_agent_staged() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[]);
    let task = host.start_task("web");
    let b = build(&host, "1.1.0");
    let answer = host
        .post(&format!("/sample/stage-local?file={}", b.display()))
        .expect("stage-local answers");
    let staged_name = fs::read_to_string(host.path("var/cache/ecs/desired-image"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| answer.to_string());
    let u = host.wait_update_end(Duration::from_secs(60));
    assert_eq!(u["state"], "UPDATED", "{u:#}\n{}", host.log());
    assert_eq!(u["origin"], "exit42");
    assert_eq!(u["target"], "1.1.0");
    assert_eq!(u["targetSha256"], sha256_fast(&fs::read(&b).unwrap()));
    assert_eq!(host.states_of(u["id"].as_str().unwrap()), LIFECYCLE);
    host.assert_intact("1.1.0");
    assert_task_kept(&host, &task);
    // Consumed: desired-image and the staged file.
    let cache = host.path("var/cache/ecs");
    assert!(!cache.join("desired-image").exists());
    assert!(!staged_name.is_empty() && !cache.join(&staged_name).exists());
    let left = update_files_left(&cache);
    assert!(left.is_empty(), "{left:?}");
    assert!(srv.seen().is_empty(), "no server was asked");
}

#[test]
fn exit_42_with_a_build_that_crashes_is_rolled_back() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[]);
    let b = host.stamp_small("1.1.0", Some("crash"), &host.path("srv/1.1.0-crash"));
    host.post(&format!("/sample/stage-local?file={}", b.display()))
        .expect("stage-local answers");
    let u = host.wait_update_end(Duration::from_secs(60));
    assert_eq!(u["state"], "FAILED", "{u:#}");
    assert_eq!(u["origin"], "exit42");
    assert_eq!(u["error"]["reason"], "crash");
    assert!(u["quarantined"]["1.1.0"].is_object());
    host.assert_intact("1.0.0");
    assert!(!host.path("var/cache/ecs/desired-image").exists());
}

/// Make the agent exit 42 with `trigger`; the warden must log `said`,
/// consume what was staged, and restart the old agent without an update.
fn bad_exit_42(host: &Host, what: &str, trigger: impl Fn(), said: &str) {
    let cache = host.path("var/cache/ecs");
    let pid = host.agent_pid().unwrap();
    let log_before = host.log().len();
    trigger();
    wait_for(
        &format!("{what}: the old agent to be restarted"),
        Duration::from_secs(20),
        || {
            let p = host.agent_pid()?;
            (p != pid && host.agent_version().as_deref() == Some("1.0.0")).then_some(())
        },
    );
    let log = host.log()[log_before..].to_string();
    assert!(log.contains(said), "{what}: the log lacks {said:?}:\n{log}");
    assert!(!cache.join("desired-image").exists(), "{what}");
    let left = update_files_left(&cache);
    assert!(left.is_empty(), "{what}: {left:?}");
    assert!(host.journal().is_none(), "{what}: no update was recorded");
}

#[test]
fn exit_42_with_a_bad_staged_file_restarts_the_old_agent() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[]);
    let garbage = host.path("srv/garbage");
    fs::write(&garbage, vec![0x5a; 100_000]).unwrap();
    let same = build(&host, "1.0.0");
    let stage_local = |file: &std::path::Path| {
        host.post(&format!("/sample/stage-local?file={}", file.display()))
            .expect("stage-local answers");
    };

    bad_exit_42(&host, "corrupt", || stage_local(&garbage), "unusable");
    let missing = || {
        let desired = host.path("var/cache/ecs/desired-image");
        fs::write(desired, "nothere.ecs-update.bin\n").unwrap();
        host.post("/sample/exit?code=42").expect("exit answers");
    };
    bad_exit_42(&host, "missing", missing, "unusable");
    bad_exit_42(
        &host,
        "not newer",
        || stage_local(&same),
        "refused: NoUpdateAvailableException",
    );
    host.assert_intact("1.0.0");
}

/// Agent-downloaded update files still in `var/cache/ecs`.
fn update_files_left(cache: &std::path::Path) -> Vec<String> {
    fs::read_dir(cache)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".ecs-update."))
        .collect()
}

/// The agent's own download, seen as it happens (inotify on its download
/// directory): a `<hex>.ecs-update.tar` appearing there is an update the
/// agent is STAGING, in `status` and in the ECS shape, before any
/// `desired-image`; nothing is journaled for it, and when the file goes
/// away unperformed (the agent gave up), so does the STAGING.
#[test]
fn the_agents_own_download_shows_as_staging() {
    let srv = Server::start();
    let host = host_for(&srv, "process", &[]);
    let partial = host.path("var/cache/ecs/0123456789abcdef.ecs-update.tar");
    fs::write(&partial, b"the first bytes").unwrap();
    let st = host.wait_status(
        "status shows the agent staging",
        Duration::from_secs(10),
        |s| s["agentUpdateStatus"] == "STAGING",
    );
    assert_eq!(
        st["update"]["agentStaging"]["file"], "0123456789abcdef.ecs-update.tar",
        "{st:#}"
    );
    let human = host.cli(&["status"]);
    let human = String::from_utf8_lossy(&human.stdout).to_string();
    assert!(
        human.contains("STAGING by the agent (0123456789abcdef.ecs-update.tar"),
        "{human}"
    );
    assert!(
        !host.path("var/lib/ecs-warden/state.json").exists()
            || !fs::read_to_string(host.path("var/lib/ecs-warden/state.json"))
                .unwrap()
                .contains("STAGING"),
        "the agent's download is not journaled"
    );
    fs::remove_file(&partial).unwrap();
    host.wait_status(
        "the STAGING goes with the file",
        Duration::from_secs(10),
        |s| s["agentUpdateStatus"].is_null() && s["update"]["agentStaging"].is_null(),
    );
    host.assert_intact("1.0.0");
}
