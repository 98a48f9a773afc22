//! Every way an update can go wrong, against the real binaries and a real
//! loopback server that misbehaves on purpose: HTTP failures, short, long
//! and lying bodies, stalls and resets, a full or unwritable disk, bad
//! manifests, new builds that crash, never register or lose a task, and the
//! refusals with their exit codes.
//!
//! Each test ends with the old agent running (or restored), nothing lost
//! (`Host::assert_intact`: the journal parses and is settled, `current`
//! points at a complete build, one agent process), a clear error in
//! `status --json` (`update.error` or `update.lastRefusal`) and the CLI's
//! exit code.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::server::{self, Fault, Server};
use crate::harness::*;
use serde_json::{json, Value};

const ART: &str = "/agents/1.1.0";

/// Exit codes (src/exit.rs).
const NO_UPDATE: i32 = 10;
const IN_PROGRESS: i32 = 11;
const MISSING_VERSION: i32 = 12;
const INVALID: i32 = 13;
const DISABLED: i32 = 14;
const FAILED: i32 = 15;

/// A started host whose update source is `srv`, with short download
/// limits, plus `extra` config lines.
fn host_for(srv: &Server, extra: &[(&str, &str)]) -> Host {
    Host::builder()
        .updates_from(srv)
        .config(&[
            ("ECS_WARDEN_DOWNLOAD_ATTEMPTS", "3"),
            ("ECS_WARDEN_DOWNLOAD_READ_TIMEOUT", "2s"),
            ("ECS_WARDEN_DOWNLOAD_CONNECT_TIMEOUT", "2s"),
        ])
        .config(extra)
        .start()
}

/// Stamp a build into the host's `srv/`.
fn build(host: &Host, version: &str, fault: Option<&str>) -> PathBuf {
    host.stamp_small(
        version,
        fault,
        &host.path(&format!("srv/{version}-{}", fault.unwrap_or("ok"))),
    )
}

/// Size of a stamped build.
fn build_size() -> u64 {
    fs::metadata(small_sample()).unwrap().len()
}

/// Publish a good 1.1.0 whose download follows `script`, then `then`.
fn publish_110(host: &Host, srv: &Server, script: &[Fault], then: Fault) -> u64 {
    let b = build(host, "1.1.0", None);
    srv.publish(&[("1.1.0", &b)]);
    srv.script(ART, script, then);
    fs::metadata(b).unwrap().len()
}

/// The update FAILED with `reason` and a message containing `needle`; the
/// CLI said so with exit 15; 1.0.0 still runs, untouched.
fn assert_failed(host: &Host, ran: &Ran, reason: &str, needle: &str) -> Value {
    assert_eq!(ran.code, FAILED, "exit code: {ran:?}\nlog:\n{}", host.log());
    let u = host.update_doc();
    assert_eq!(u["state"], "FAILED", "{u:#}");
    assert_eq!(u["error"]["reason"], reason, "{u:#}");
    let msg = u["error"]["message"].as_str().unwrap_or("");
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "error message {msg:?} lacks {needle:?}"
    );
    assert_eq!(u["state"], host.journal().unwrap()["state"]);
    host.assert_intact("1.0.0");
    u
}

/// The request was refused before it became an update: exit `code`,
/// `lastRefusal` names `name`, nothing in the journal changed.
fn assert_refused(host: &Host, ran: &Ran, code: i32, name: &str, needle: &str) {
    assert_eq!(ran.code, code, "exit code: {ran:?}");
    assert!(ran.stderr.contains(name), "stderr names {name}: {ran:?}");
    let u = host.update_doc();
    assert_eq!(u["lastRefusal"]["name"], name, "{u:#}");
    let msg = u["lastRefusal"]["message"].as_str().unwrap_or("");
    assert!(
        msg.to_lowercase().contains(&needle.to_lowercase()),
        "refusal {msg:?} lacks {needle:?}"
    );
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
}

fn update(host: &Host) -> Ran {
    host.run(&["update", "--json"])
}

fn ranges(srv: &Server) -> Vec<Option<String>> {
    srv.seen_at(ART).into_iter().map(|s| s.range).collect()
}

// ----- HTTP status ----------------------------------------------------------

#[test]
fn http_404_fails_at_once() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    publish_110(&host, &srv, &[], Fault::Status(404));
    let ran = update(&host);
    assert_failed(&host, &ran, "download", "HTTP 404");
    assert_eq!(host.update_doc()["error"]["name"], "ClientException");
    assert_eq!(srv.seen_at(ART).len(), 1, "a 4xx is never retried");
}

#[test]
fn http_500_twice_then_success() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    publish_110(
        &host,
        &srv,
        &[Fault::Status(500), Fault::Status(503)],
        Fault::Serve,
    );
    let ran = update(&host);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", host.log());
    assert_eq!(srv.seen_at(ART).len(), 3, "two failures, one success");
    host.assert_intact("1.1.0");
    assert!(
        host.log().contains("attempt 2 of 3"),
        "the retries are logged"
    );
}

#[test]
fn http_500_forever_gives_up() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    publish_110(&host, &srv, &[], Fault::Status(500));
    let ran = update(&host);
    assert_failed(&host, &ran, "download", "gave up after 3 attempts");
    assert_eq!(
        srv.seen_at(ART).len(),
        3,
        "exactly ECS_WARDEN_DOWNLOAD_ATTEMPTS"
    );
}

// ----- bodies ---------------------------------------------------------------

#[test]
fn truncated_body_resumes_with_range() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let k = build_size() / 3;
    publish_110(&host, &srv, &[Fault::Truncate(k)], Fault::Serve);
    let ran = update(&host);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", host.log());
    assert_eq!(
        ranges(&srv),
        vec![None, Some(format!("bytes={k}-"))],
        "the retry resumes where the body ended"
    );
    host.assert_intact("1.1.0");
}

#[test]
fn short_body_without_content_length_resumes_with_range() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let k = build_size() / 4;
    publish_110(
        &host,
        &srv,
        &[Fault::CloseAfter(k), Fault::CloseAfter(k)],
        Fault::Serve,
    );
    let ran = update(&host);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", host.log());
    assert_eq!(
        ranges(&srv),
        vec![
            None,
            Some(format!("bytes={k}-")),
            Some(format!("bytes={}-", 2 * k))
        ]
    );
    assert!(host.log().contains("the body ended after"));
    host.assert_intact("1.1.0");
}

#[test]
fn truncated_body_with_a_server_that_ignores_ranges_starts_over() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let k = build_size() / 2;
    publish_110(&host, &srv, &[Fault::Truncate(k)], Fault::IgnoreRange);
    let ran = update(&host);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", host.log());
    assert_eq!(ranges(&srv), vec![None, Some(format!("bytes={k}-"))]);
    assert!(host.log().contains("ignored the range request"));
    host.assert_intact("1.1.0");
}

#[test]
fn wrong_hash_fails_and_leaves_no_partial() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let b = build(&host, "1.1.0", None);
    let bytes = fs::read(&b).unwrap();
    srv.file(ART, bytes.clone());
    let mut e = server::entry("1.1.0", &bytes, "agents/1.1.0");
    e["sha256"] = json!(sha256_hex(b"something else"));
    srv.manifest(&json!({"schemaVersion": 1, "agents": [e]}));
    let ran = update(&host);
    assert_failed(&host, &ran, "download", "sha256 mismatch");
    assert_eq!(
        srv.seen_at(ART).len(),
        1,
        "a digest mismatch is not retried"
    );
    assert!(!host.path("var/lib/ecs-warden/agents/1.1.0").exists());
}

/// Largest regular file anywhere under the store.
fn largest_in_store(host: &Host) -> u64 {
    fn walk(p: &Path, max: &mut u64) {
        for e in fs::read_dir(p).into_iter().flatten().flatten() {
            let m = fs::symlink_metadata(e.path()).unwrap();
            if m.is_dir() {
                walk(&e.path(), max);
            } else if m.is_file() {
                *max = (*max).max(m.len());
            }
        }
    }
    let mut max = 0;
    walk(&host.path("var/lib/ecs-warden/agents"), &mut max);
    max
}

#[test]
fn more_bytes_than_the_manifest_size_are_never_stored() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let size = publish_110(&host, &srv, &[], Fault::Overflow(4 << 20));
    let ran = update(&host);
    assert_failed(&host, &ran, "download", "more than the declared");
    assert_eq!(
        srv.seen_at(ART).len(),
        1,
        "an oversized body is not retried"
    );
    assert!(largest_in_store(&host) <= size);
}

#[test]
fn content_length_above_the_manifest_size_fails_fast() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    publish_110(&host, &srv, &[], Fault::OverflowDeclared(1000));
    let ran = update(&host);
    assert_failed(&host, &ran, "download", "Content-Length");
    assert_eq!(srv.seen_at(ART).len(), 1);
}

#[test]
fn lying_content_length_fails_fast() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    publish_110(&host, &srv, &[], Fault::LieLength(1234));
    let ran = update(&host);
    let u = assert_failed(&host, &ran, "download", "Content-Length 1234 disagrees");
    assert_eq!(u["error"]["name"], "ClientException");
    assert_eq!(srv.seen_at(ART).len(), 1);
}

// ----- stalls and resets ----------------------------------------------------

#[test]
fn stall_mid_body_is_retried_from_where_it_stopped() {
    let srv = Server::start();
    let host = host_for(&srv, &[("ECS_WARDEN_DOWNLOAD_READ_TIMEOUT", "500ms")]);
    let k = build_size() / 2;
    publish_110(&host, &srv, &[Fault::Stall(k)], Fault::Serve);
    let t = Instant::now();
    let ran = update(&host);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", host.log());
    assert_eq!(ranges(&srv), vec![None, Some(format!("bytes={k}-"))]);
    assert!(host.log().contains("stalled at"), "the stall is logged");
    assert!(t.elapsed() < Duration::from_secs(20));
    host.assert_intact("1.1.0");
}

#[test]
fn stall_forever_gives_up() {
    let srv = Server::start();
    let host = host_for(&srv, &[("ECS_WARDEN_DOWNLOAD_READ_TIMEOUT", "300ms")]);
    let k = build_size() / 4;
    publish_110(&host, &srv, &[], Fault::Stall(k));
    let ran = update(&host);
    assert_failed(&host, &ran, "download", "no data for 300ms");
    let r = ranges(&srv);
    assert_eq!(r.len(), 3, "{r:?}");
    assert_eq!(r[1], Some(format!("bytes={k}-")));
    assert_eq!(r[2], Some(format!("bytes={}-", 2 * k)));
}

#[test]
fn throughput_below_the_minimum_is_a_stall() {
    let srv = Server::start();
    let host = host_for(
        &srv,
        &[
            ("ECS_WARDEN_DOWNLOAD_MIN_RATE", "1000000"),
            ("ECS_WARDEN_DOWNLOAD_STALL_WINDOW", "500ms"),
        ],
    );
    let slow = Fault::Dribble {
        chunk: 4096,
        pause: Duration::from_millis(20),
    };
    publish_110(&host, &srv, &[slow], Fault::Serve);
    let ran = update(&host);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", host.log());
    assert!(host.log().contains("below the minimum"), "{}", host.log());
    let r = ranges(&srv);
    assert_eq!(r.len(), 2, "{r:?}");
    assert!(
        r[1].as_deref()
            .is_some_and(|v| v.starts_with("bytes=") && v != "bytes=0-"),
        "the retry resumes: {r:?}"
    );
    host.assert_intact("1.1.0");
}

#[test]
fn connection_reset_is_retried_with_range() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let k = build_size() / 3;
    publish_110(&host, &srv, &[Fault::Reset(k)], Fault::Serve);
    let ran = update(&host);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", host.log());
    // The bytes read before the reset are kept (an RST may drop some that
    // were still in flight, never more than K).
    let r = ranges(&srv);
    assert_eq!(r.len(), 2, "{r:?}");
    let from: u64 = r[1]
        .as_deref()
        .and_then(|v| v.strip_prefix("bytes=")?.strip_suffix('-')?.parse().ok())
        .unwrap_or_else(|| panic!("the retry resumes with a range: {r:?}"));
    assert!(
        from > 0 && from <= k,
        "resumed from {from}, reset after {k}"
    );
    host.assert_intact("1.1.0");
}

#[test]
fn connection_refused_is_retried_with_backoff() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let b = build(&host, "1.1.0", None);
    let bytes = fs::read(&b).unwrap();
    // A loopback port nothing listens on.
    let dead = format!("http://127.0.0.1:{}/agents/1.1.0", free_port());
    let e = server::entry("1.1.0", &bytes, &dead);
    srv.manifest(&json!({"schemaVersion": 1, "agents": [e]}));
    let ran = update(&host);
    assert_failed(&host, &ran, "download", "gave up after 3 attempts");
    let log = host.log();
    let a = log.find("(attempt 1 of 3)").expect("first retry logged");
    let b = log.find("(attempt 2 of 3)").expect("second retry logged");
    assert!(a < b);
    assert!(log[a..b].contains("retrying in 50ms"), "{log}");
    assert!(
        log[b..].contains("retrying in 100ms"),
        "the delay doubles: {log}"
    );
}

// ----- the disk -------------------------------------------------------------

/// A tmpfs mounted over a directory, lazily unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mount, or `None` where mounting is not allowed (the harness's
    /// switch: a skip on a developer machine, a failure in CI).
    fn mount(dir: &Path, bytes: u64, test: &str) -> Option<Tmpfs> {
        fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0755"))
            .arg("tmpfs")
            .arg(dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Some(Tmpfs(dir.to_path_buf())),
            other => {
                let what = format!("a tmpfs mount ({other:?})");
                require(test, false, &what, "run the tests as root");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A host whose store is a tmpfs with `room` bytes beside the bundled agent.
fn host_on_tmpfs(srv: &Server, room: u64, test: &str) -> Option<(Host, Tmpfs)> {
    let mut host = Host::builder().updates_from(srv).build();
    let bundled = fs::metadata(host.path("var/cache/ecs/ecs-agent"))
        .unwrap()
        .len();
    let mnt = Tmpfs::mount(
        &host.path("var/lib/ecs-warden/agents"),
        bundled + room,
        test,
    )?;
    host.start();
    host.wait_agent("1.0.0");
    Some((host, mnt))
}

#[test]
fn full_disk_is_refused_by_the_free_space_check() {
    let srv = Server::start();
    let Some((host, _mnt)) = host_on_tmpfs(&srv, 2 << 20, "full_disk") else {
        return;
    };
    publish_110(&host, &srv, &[], Fault::Serve);
    let ran = update(&host);
    let u = assert_failed(&host, &ran, "disk", "not enough free space");
    assert_eq!(u["error"]["name"], "ServerException");
    assert!(
        srv.seen_at(ART).is_empty(),
        "nothing is fetched without room"
    );
}

#[test]
fn disk_filling_up_during_the_download_fails_cleanly() {
    let srv = Server::start();
    // Room for the download and the warden's head room (16 MiB).
    let Some((host, _mnt)) = host_on_tmpfs(&srv, 24 << 20, "disk_fills") else {
        return;
    };
    let dribble = Fault::Dribble {
        chunk: 16 * 1024,
        pause: Duration::from_millis(20),
    };
    publish_110(&host, &srv, &[], dribble);
    let started = host.run(&["update", "--no-wait"]);
    assert_eq!(started.code, 0, "{started:?}");
    let partial = host.path("var/lib/ecs-warden/agents/.1.1.0.partial");
    wait_for("the download to start", Duration::from_secs(20), || {
        (fs::metadata(&partial).map(|m| m.len()).unwrap_or(0) > 256 << 10).then_some(())
    });
    // Eat every free byte.
    let filler = host.path("var/lib/ecs-warden/agents/filler");
    let mut f = fs::File::create(&filler).unwrap();
    let block = vec![0u8; 1 << 20];
    while std::io::Write::write_all(&mut f, &block).is_ok() {}
    drop(f);
    let u = host.wait_update_end(Duration::from_secs(30));
    assert_eq!(u["state"], "FAILED", "{u:#}");
    assert_eq!(u["error"]["reason"], "disk", "{u:#}");
    let msg = u["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no space left on device"), "{msg}");
    let _ = fs::remove_file(&filler);
    host.assert_intact("1.0.0");
}

/// `chattr +i` on a directory (root ignores modes); undone on drop.
struct Immutable(PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn unwritable_store_fails_cleanly() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    publish_110(&host, &srv, &[], Fault::Serve);
    let store = host.path("var/lib/ecs-warden/agents");
    let ok = Command::new("chattr")
        .arg("+i")
        .arg(&store)
        .status()
        .is_ok_and(|s| s.success());
    if !require(
        "unwritable_store_fails_cleanly",
        ok,
        "`chattr +i` on the store",
        "run the tests as root on a filesystem with the immutable flag",
    ) {
        return;
    }
    let guard = Immutable(store);
    let ran = update(&host);
    let u = assert_failed(&host, &ran, "disk", "operation not permitted");
    assert!(u["error"]["message"]
        .as_str()
        .unwrap()
        .contains(".1.1.0.partial"));
    drop(guard);
}

// ----- manifests --------------------------------------------------------------

#[test]
fn bad_manifests_are_refused_with_invalid_parameter() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let b = build(&host, "1.1.0", None);
    let bytes = fs::read(&b).unwrap();
    srv.file(ART, bytes.clone());
    let good = server::entry("1.1.0", &bytes, "agents/1.1.0");
    let with = |k: &str, v: Value| {
        let mut e = good.clone();
        e[k] = v;
        json!({"schemaVersion": 1, "agents": [e]})
    };
    let without = |k: &str| {
        let mut e = good.clone();
        e.as_object_mut().unwrap().remove(k);
        json!({"schemaVersion": 1, "agents": [e]})
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"<html>oops</html>".to_vec(), "not valid JSON"),
        ("no agents", br#"{"schemaVersion":1}"#.to_vec(), "agents"),
        ("no sha256", ser(&without("sha256")), "sha256"),
        ("no size", ser(&without("size")), "size"),
        ("no url", ser(&without("url")), "url"),
        (
            "bad hex",
            ser(&with("sha256", json!("zz".repeat(32)))),
            "64 hex",
        ),
        ("short hex", ser(&with("sha256", json!("abcd"))), "64 hex"),
        (
            "non-semver",
            ser(&with("version", json!("1.1"))),
            "semantic version",
        ),
        (
            "slash",
            ser(&with("version", json!("1.1.0/x"))),
            "not a valid version",
        ),
        (
            "dotdot",
            ser(&with("version", json!("../1.1.0"))),
            "not a valid version",
        ),
        (
            "newer schema",
            ser(&json!({"schemaVersion": 2, "agents": []})),
            "upgrade ecs-warden",
        ),
        (
            "other arch",
            ser(&with("arch", json!("s390x-nope"))),
            "no build for architecture",
        ),
        (
            "plain http elsewhere",
            ser(&with("url", json!("http://example.com/a"))),
            "plain http",
        ),
    ];
    for (what, text, needle) in cases {
        srv.manifest_text(&text);
        let ran = update(&host);
        assert_refused(&host, &ran, INVALID, "InvalidParameterException", needle);
        assert!(host.journal().is_none(), "{what}: no update was recorded");
    }
    // A source that is not allowed.
    let ran = host.run(&["update", "--source", "http://example.com/manifest.json"]);
    assert_refused(
        &host,
        &ran,
        INVALID,
        "InvalidParameterException",
        "plain http",
    );
    let ran = host.run(&["update", "--source", "ftp://127.0.0.1/manifest.json"]);
    assert_refused(
        &host,
        &ran,
        INVALID,
        "InvalidParameterException",
        "expected an https://",
    );
    // A manifest that is not there at all.
    srv.route("/manifest.json", vec![], &[], Fault::Status(404));
    let ran = update(&host);
    assert_refused(
        &host,
        &ran,
        INVALID,
        "InvalidParameterException",
        "HTTP 404",
    );
    assert!(srv.seen_at(ART).is_empty(), "no build was fetched");
    host.assert_intact("1.0.0");
}

fn ser(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

// ----- new builds that misbehave -----------------------------------------------

/// Update to a 1.1.0 stamped with `fault`; it must fail its health gate
/// with a message containing `needle`, and be rolled back.
fn bad_build(
    fault: &str,
    needle: &str,
    extra: &[(&str, &str)],
    task: bool,
) -> (Host, Server, Value) {
    let srv = Server::start();
    let host = host_for(&srv, extra);
    let before = task.then(|| host.start_task("web"));
    let b = build(&host, "1.1.0", Some(fault));
    srv.publish(&[("1.1.0", &b)]);
    let ran = update(&host);
    let u = assert_failed(&host, &ran, "health-gate", needle);
    if let Some(t) = before {
        let arn = t["Arn"].as_str().unwrap();
        let now: Vec<Value> = host.tasks();
        let same = now.iter().find(|n| n["Arn"] == arn).expect("task kept");
        assert_eq!(same["KnownStatus"], "RUNNING");
        assert_eq!(same["Containers"], t["Containers"], "same containers");
    }
    // Rolled back: the history shows it, in this order; 1.1.0 is
    // quarantined.
    let id = u["id"].as_str().unwrap();
    let steps: Vec<String> = host
        .history()
        .iter()
        .filter(|l| l["id"] == id)
        .map(|l| l["step"].as_str().unwrap().to_string())
        .collect();
    let mut after = 0;
    for s in [
        "stop-old",
        "health-gate",
        "rollback-switch",
        "rollback-gate",
    ] {
        let at = steps[after..]
            .iter()
            .position(|x| x == s)
            .unwrap_or_else(|| panic!("{s} after {:?} in {steps:?}", &steps[..after]));
        after += at + 1;
    }
    assert!(u["quarantined"]["1.1.0"].is_object(), "{u:#}");
    (host, srv, u)
}

#[test]
fn new_build_that_crashes_is_rolled_back() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let b = build(&host, "1.1.0", Some("crash"));
    srv.publish(&[("1.1.0", &b)]);
    let ran = update(&host);
    let u = assert_failed(&host, &ran, "crash", "killed by SIGABRT");
    assert!(u["quarantined"]["1.1.0"].is_object(), "{u:#}");
    assert!(ran.stdout.contains("FAILED"), "{ran:?}");
}

#[test]
fn new_build_that_never_registers_is_rolled_back() {
    let timeout = [("ECS_WARDEN_HEALTH_TIMEOUT", "2s")];
    let (_host, _srv, u) = bad_build("unhealthy", "ContainerInstanceArn", &timeout, false);
    let msg = u["error"]["message"].as_str().unwrap();
    assert!(msg.contains("ContainerInstanceArn"), "exactly so: {msg}");
}

#[test]
fn failed_gate_restores_the_data_snapshot() {
    let srv = Server::start();
    let host = host_for(&srv, &[("ECS_WARDEN_HEALTH_TIMEOUT", "2s")]);
    let data = host.path("var/lib/ecs/data");
    fs::write(data.join("kept-by-1.0.0"), "v1").unwrap();
    let b = build(&host, "1.1.0", Some("unhealthy"));
    srv.publish(&[("1.1.0", &b)]);
    assert_eq!(host.run(&["update", "--no-wait"]).code, 0);
    wait_for("the health gate", Duration::from_secs(30), || {
        (host.journal()?["step"] == "health-gate").then_some(())
    });
    // What the new build does to the data while it is tried.
    fs::write(data.join("kept-by-1.0.0"), "migrated").unwrap();
    fs::write(data.join("written-by-1.1.0"), "new").unwrap();
    let u = host.wait_update_end(Duration::from_secs(30));
    assert_eq!(u["state"], "FAILED", "{u:#}");
    assert_eq!(u["error"]["reason"], "health-gate");
    assert_eq!(
        fs::read_to_string(data.join("kept-by-1.0.0")).unwrap(),
        "v1"
    );
    assert!(!data.join("written-by-1.1.0").exists());
    assert!(
        data.join("sample-agent.json").is_file(),
        "the agent's own state"
    );
    host.assert_intact("1.0.0");
}

#[test]
fn new_build_that_turns_unhealthy_within_the_stable_period_is_rolled_back() {
    let srv = Server::start();
    let host = host_for(&srv, &[("ECS_WARDEN_HEALTH_STABLE", "5s")]);
    srv.publish(&[("1.1.0", &build(&host, "1.1.0", None))]);
    assert_eq!(host.run(&["update", "--no-wait"]).code, 0);
    wait_for("1.1.0 in its health gate", Duration::from_secs(30), || {
        let j = host.journal()?;
        (j["step"] == "health-gate" && host.agent_version()? == "1.1.0").then_some(())
    });
    // The gate polls every 50 ms: give it time to see the new agent healthy
    // (on a loaded machine it may not have yet), well inside the 5 s it
    // then watches.
    std::thread::sleep(Duration::from_millis(1500));
    host.post("/sample/unhealthy")
        .expect("the new agent answers");
    let u = host.wait_update_end(Duration::from_secs(30));
    assert_eq!(u["state"], "FAILED", "{u:#}");
    assert_eq!(u["error"]["reason"], "health-gate");
    let msg = u["error"]["message"].as_str().unwrap();
    assert!(msg.contains("healthy at first, but not after 5s"), "{msg}");
    host.assert_intact("1.0.0");
}

#[test]
fn new_build_that_drops_a_task_is_rolled_back() {
    let timeout = [("ECS_WARDEN_HEALTH_TIMEOUT", "2s")];
    let (_host, _srv, u) = bad_build("drop-tasks", "no longer reported", &timeout, true);
    let msg = u["error"]["message"].as_str().unwrap();
    assert!(msg.contains("no longer reported"), "exactly so: {msg}");
}

// ----- refusals -----------------------------------------------------------------

#[test]
fn same_or_older_version_is_no_update() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let same = build(&host, "1.0.0", None);
    let older = build(&host, "0.9.0", None);
    srv.publish(&[("1.0.0", &same), ("0.9.0", &older)]);
    let ran = update(&host);
    assert_refused(
        &host,
        &ran,
        NO_UPDATE,
        "NoUpdateAvailableException",
        "not newer",
    );
    let ran = host.run(&["update", "--version", "0.9.0"]);
    assert_refused(
        &host,
        &ran,
        NO_UPDATE,
        "NoUpdateAvailableException",
        "not newer",
    );
    assert!(host.journal().is_none());
    assert!(srv.seen_at("/agents/1.0.0").is_empty() && srv.seen_at("/agents/0.9.0").is_empty());
    host.assert_intact("1.0.0");
}

#[test]
fn quarantined_version_is_refused_unless_forced() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let crash = build(&host, "1.1.0", Some("crash"));
    srv.publish(&[("1.1.0", &crash)]);
    assert_eq!(update(&host).code, FAILED);
    // The same version again: refused, without a download.
    let fixed = build(&host, "1.1.0", None);
    srv.publish(&[("1.1.0", &fixed)]);
    let fetched = srv.seen_at(ART).len();
    let ran = update(&host);
    assert_refused(
        &host,
        &ran,
        NO_UPDATE,
        "NoUpdateAvailableException",
        "quarantined",
    );
    assert!(
        ran.stderr.contains("--force"),
        "says how to override: {ran:?}"
    );
    assert_eq!(srv.seen_at(ART).len(), fetched);
    host.assert_intact("1.0.0");
    // Forced: accepted, installed, and no longer quarantined.
    let ran = host.run(&["update", "--force", "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", host.log());
    host.assert_intact("1.1.0");
    assert!(host.update_doc()["quarantined"].get("1.1.0").is_none());
}

#[test]
fn newer_version_is_not_held_back_by_a_quarantined_one() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let crash = build(&host, "1.1.0", Some("crash"));
    srv.publish(&[("1.1.0", &crash)]);
    assert_eq!(update(&host).code, FAILED);
    let next = build(&host, "1.2.0", None);
    srv.publish(&[("1.1.0", &crash), ("1.2.0", &next)]);
    let ran = update(&host);
    assert_eq!(ran.code, 0, "{ran:?}");
    host.assert_intact("1.2.0");
}

#[test]
fn other_bytes_under_an_installed_version_fail_before_the_download() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    srv.publish(&[("1.1.0", &build(&host, "1.1.0", None))]);
    assert_eq!(update(&host).code, 0);
    // Rolled back: 1.1.0 stays in the store as `previous`.
    assert_eq!(host.run(&["rollback"]).code, 0);
    host.assert_intact("1.0.0");
    srv.publish(&[("1.1.0", &build(&host, "1.1.0", Some("drop-tasks")))]);
    let fetched = srv.seen_at(ART).len();
    let ran = host.run(&["update", "--force", "--json"]);
    let u = assert_failed(&host, &ran, "conflict", "already installed");
    assert_eq!(u["error"]["name"], "ClientException");
    assert_eq!(srv.seen_at(ART).len(), fetched, "nothing was downloaded");
    let prev = host.path("var/lib/ecs-warden/agents/previous/ecs-agent");
    assert_eq!(
        sha256_fast(&fs::read(prev).unwrap()),
        sha256_fast(&fs::read(host.path("srv/1.1.0-ok")).unwrap()),
        "the installed build is untouched"
    );
}

#[test]
fn updates_disabled_refuses_every_verb() {
    let srv = Server::start();
    let host = host_for(&srv, &[("ECS_UPDATES_ENABLED", "false")]);
    publish_110(&host, &srv, &[], Fault::Serve);
    for verb in [&["update"][..], &["stage"], &["rollback"]] {
        let ran = host.run(verb);
        assert_refused(
            &host,
            &ran,
            DISABLED,
            "UpdatesDisabledException",
            "disabled",
        );
    }
    assert!(srv.seen().is_empty(), "not even the manifest is fetched");
    assert!(host.journal().is_none());
    host.assert_intact("1.0.0");
}

#[test]
fn unknown_running_version_is_missing_version() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    publish_110(&host, &srv, &[], Fault::Serve);
    let marker = host.path("var/lib/ecs-warden/agents/current/artifact.json");
    let mut a: Value = serde_json::from_slice(&fs::read(&marker).unwrap()).unwrap();
    a["version"] = json!("custom-build");
    fs::write(&marker, serde_json::to_vec(&a).unwrap()).unwrap();
    let ran = update(&host);
    assert_refused(
        &host,
        &ran,
        MISSING_VERSION,
        "MissingVersionException",
        "custom-build",
    );
    assert!(host.journal().is_none());
    assert!(srv.seen_at(ART).is_empty());
    assert_eq!(host.agent_processes().len(), 1);
}

#[test]
fn second_update_while_one_is_in_flight_is_refused() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let slow = Fault::Dribble {
        chunk: 256 * 1024,
        pause: Duration::from_millis(40),
    };
    publish_110(&host, &srv, &[], slow);
    let first = host.run(&["update", "--no-wait", "--json"]);
    assert_eq!(first.code, 0, "{first:?}");
    let ran = host.run(&["update"]);
    assert_refused(
        &host,
        &ran,
        IN_PROGRESS,
        "UpdateInProgressException",
        "already",
    );
    let ran = host.run(&["rollback"]);
    assert_eq!(ran.code, IN_PROGRESS, "{ran:?}");
    let u = host.wait_update_end(Duration::from_secs(30));
    assert_eq!(u["state"], "UPDATED", "the first update was not disturbed");
    assert_eq!(u["id"], first.json()["id"]);
    host.assert_intact("1.1.0");
}

#[test]
fn rollback_without_a_previous_build_is_invalid() {
    let srv = Server::start();
    let host = host_for(&srv, &[]);
    let ran = host.run(&["rollback"]);
    assert_refused(
        &host,
        &ran,
        INVALID,
        "InvalidParameterException",
        "no previous build",
    );
    host.assert_intact("1.0.0");
}
