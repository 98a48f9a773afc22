//! The crash matrix: the warden SIGKILLs itself at each fail point of the
//! update machine (`ECS_WARDEN_FAILPOINT`, built with `--features
//! failpoints`), is started again without it, and must resume or undo what
//! was in flight.
//!
//! For every point: at the crash the journal parses and names the step the
//! point follows, and `current` points at a complete build; after the
//! restart the update ends in UPDATED (or, for the rollback points, FAILED
//! with a reason) within a timeout, the agent runs a complete build and
//! answers with its version, exactly one agent process runs, the task kept
//! its containers, and a further update to a newer build succeeds.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::harness::server::{Fault, Server};
use crate::harness::*;
use serde_json::Value;

const ART: &str = "/agents/1.1.0";

/// `current` resolves to a directory with its marker and executable.
fn assert_current_complete(host: &Host, point: &str) {
    let agents = host.path("var/lib/ecs-warden/agents");
    let cur = fs::read_link(agents.join("current"))
        .unwrap_or_else(|e| panic!("{point}: agents/current is not a symlink: {e}"));
    let dir = agents.join(cur);
    assert!(
        dir.join("artifact.json").is_file() && dir.join("ecs-agent").is_file(),
        "{point}: current -> {} is not a complete build",
        dir.display()
    );
}

fn assert_task_kept(host: &Host, task: &Value, point: &str) {
    wait_for(
        &format!("{point}: task {} RUNNING", task["Arn"]),
        Duration::from_secs(10),
        || {
            host.tasks()
                .iter()
                .find(|t| t["Arn"] == task["Arn"])
                .filter(|t| t["KnownStatus"] == "RUNNING")
                .map(|t| assert_eq!(t["Containers"], task["Containers"], "{point}"))
        },
    );
}

/// Kill the warden at `point` (with the step the journal must name then),
/// restart it, check the host, update once more.
fn crash_at(point: &str, journal_step: &str) {
    crash_case(point, journal_step, None);
}

/// `crash_at`, with the artifact served as `after_restart` once the
/// warden is started again.
fn crash_case(point: &str, journal_step: &str, after_restart: Option<Fault>) {
    let rollback = point.contains("rollback");
    let srv = Server::start();
    let mut host = failpoint_host(&srv, point);
    let task = host.start_task("web");
    // The rollback points need a build that fails its gate.
    let fault = rollback.then_some("crash");
    let b110 = host.stamp_small("1.1.0", fault, &host.path("srv/1.1.0"));
    let size = fs::metadata(&b110).unwrap().len();
    srv.publish(&[("1.1.0", &b110)]);
    if point == "mid-download" {
        // Slow enough that a progress report lands past half way.
        let slow = Fault::Dribble {
            chunk: 32 * 1024,
            pause: Duration::from_millis(20),
        };
        srv.script(ART, &[], slow);
    }

    // The CLI may get no answer (after-pending dies before replying).
    let _ = host.run(&["update", "--no-wait"]);
    let code = host.wait_exit(Duration::from_secs(60));
    assert_eq!(code, -1, "{point}: the warden was killed by a signal");
    assert!(
        host.log().contains(&format!("fail point {point}")),
        "{point}: {}",
        host.log()
    );

    // At the crash: a parsable journal at the announced step.
    let j = host.journal().expect("state.json exists");
    assert_eq!(j["step"], journal_step, "{point}: journal {j:#}");
    assert_current_complete(&host, point);
    let partial = host.path("var/lib/ecs-warden/agents/.1.1.0.partial");
    if point == "mid-download" {
        let have = fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        assert!(have > 0 && have < size, "{point}: partial has {have} bytes");
    }
    let fetched = srv.seen_at(ART).len();
    let restart = history_len(&host, point);

    // Restart without the fail point: resumed or undone.
    let fresh = after_restart == Some(Fault::IgnoreRange);
    if let Some(f) = after_restart {
        srv.script(ART, &[], f);
    }
    host.start();
    let u = host.wait_update_end(Duration::from_secs(90));
    if rollback {
        assert_eq!(u["state"], "FAILED", "{point}: {u:#}");
        // The gate's verdict on the crashing build survives the restart.
        assert_eq!(
            u["error"]["reason"], "crash",
            "{point}: FAILED for the build's crash: {u:#}"
        );
        assert!(u["quarantined"]["1.1.0"].is_object(), "{point}: {u:#}");
        host.assert_intact("1.0.0");
    } else {
        assert_eq!(u["state"], "UPDATED", "{point}: {u:#}\n{}", host.log());
        host.assert_intact("1.1.0");
    }
    assert!(host.log().contains("resuming the update"), "{point}");
    assert_task_kept(&host, &task, point);
    if point == "mid-download" {
        let resumed = &srv.seen_at(ART)[fetched..];
        let from = resumed
            .first()
            .and_then(|s| s.range.clone())
            .unwrap_or_else(|| panic!("{point}: no Range after the restart: {resumed:?}"));
        let k: u64 = from
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{point}: Range {from:?}"));
        assert!(k > 0 && k < size, "{point}: resumed from {k}");
        assert_eq!(
            host.log().contains("ignored the range request"),
            fresh,
            "{point}: a fresh download exactly when ranges are ignored"
        );
    }

    // And the host still updates.
    let b120 = host.stamp_small("1.2.0", None, &host.path("srv/1.2.0"));
    srv.publish(&[("1.2.0", &b120)]);
    let ran = host.run(&["update", "--json"]);
    assert_eq!(ran.code, 0, "{point}: {ran:?}\n{}", host.log());
    host.assert_intact("1.2.0");
    assert_task_kept(&host, &task, point);
    check_history(&host, point, &[restart]);
}

/// Kill the warden at `point` during an operator's `ecs-warden rollback`
/// (after a good update to 1.1.0), restart it: the rollback completes.
fn rollback_crash_at(point: &str, journal_step: &str) {
    let srv = Server::start();
    let mut host = failpoint_host(&srv, point);
    let task = host.start_task("web");
    let b110 = host.stamp_small("1.1.0", None, &host.path("srv/1.1.0"));
    srv.publish(&[("1.1.0", &b110)]);
    let ran = host.run(&["update", "--json"]);
    assert_eq!(ran.code, 0, "{point}: {ran:?}\n{}", host.log());
    host.assert_intact("1.1.0");
    fs::write(host.path("var/lib/ecs/data/written-by-1.1.0"), "x").unwrap();

    let _ = host.run(&["rollback", "--no-wait"]);
    assert_eq!(host.wait_exit(Duration::from_secs(60)), -1, "{point}");
    let j = host.journal().expect("state.json exists");
    assert_eq!(j["step"], journal_step, "{point}: journal {j:#}");
    assert_eq!(j["origin"], "rollback");
    assert_current_complete(&host, point);
    let restart = history_len(&host, point);

    host.start();
    let u = host.wait_update_end(Duration::from_secs(60));
    assert_eq!(u["state"], "UPDATED", "{point}: {u:#}\n{}", host.log());
    assert_eq!(u["origin"], "rollback");
    host.assert_intact("1.0.0");
    assert!(
        !host.path("var/lib/ecs/data/written-by-1.1.0").exists(),
        "{point}: the data snapshot was restored"
    );
    let prev = fs::read_link(host.path("var/lib/ecs-warden/agents/previous")).unwrap();
    assert_eq!(
        prev,
        Path::new("1.1.0"),
        "{point}: previous is the build left"
    );
    assert_task_kept(&host, &task, point);

    let b120 = host.stamp_small("1.2.0", None, &host.path("srv/1.2.0"));
    srv.publish(&[("1.2.0", &b120)]);
    let ran = host.run(&["update", "--json"]);
    assert_eq!(ran.code, 0, "{point}: {ran:?}\n{}", host.log());
    host.assert_intact("1.2.0");
    assert_task_kept(&host, &task, point);
    check_history(&host, point, &[restart]);
}

#[test]
fn operator_rollback_during_rollback() {
    rollback_crash_at("during-rollback", "rollback-switch");
}

#[test]
fn operator_rollback_after_rollback_start() {
    rollback_crash_at("after-rollback-start", "rollback-start");
}

#[test]
fn operator_rollback_during_rollback_gate() {
    rollback_crash_at("during-rollback-gate", "rollback-gate");
}

/// The warden dies three times while the new build is being checked: the
/// next start gives up on it and rolls back.
#[test]
fn repeated_crashes_during_the_gate_roll_back() {
    let srv = Server::start();
    let armed = [("ECS_WARDEN_FAILPOINT", "during-gate")];
    let mut host = Host::builder().updates_from(&srv).start_with_env(&armed);
    let task = host.start_task("web");
    let b110 = host.stamp_small("1.1.0", None, &host.path("srv/1.1.0"));
    srv.publish(&[("1.1.0", &b110)]);
    let _ = host.run(&["update", "--no-wait"]);
    for attempt in 1..=3 {
        assert_eq!(
            host.wait_exit(Duration::from_secs(60)),
            -1,
            "kill {attempt}"
        );
        let j = host.journal().unwrap();
        assert_eq!(j["step"], "health-gate");
        assert_eq!(j["attempts"], attempt, "{j:#}");
        if attempt < 3 {
            host.start_with_env(&armed);
        }
    }
    host.start();
    let u = host.wait_update_end(Duration::from_secs(60));
    assert_eq!(u["state"], "FAILED", "{u:#}");
    assert_eq!(u["error"]["reason"], "interrupted", "{u:#}");
    assert!(u["quarantined"]["1.1.0"].is_object());
    host.assert_intact("1.0.0");
    assert_task_kept(&host, &task, "repeated");
}

/// A graceful stop in the middle of a download leaves the update in the
/// journal; the next start resumes it.
#[test]
fn stop_mid_download_resumes_on_the_next_start() {
    let srv = Server::start();
    let mut host = Host::builder().updates_from(&srv).start();
    let b110 = host.stamp_small("1.1.0", None, &host.path("srv/1.1.0"));
    srv.publish(&[("1.1.0", &b110)]);
    let slow = Fault::Dribble {
        chunk: 16 * 1024,
        pause: Duration::from_millis(20),
    };
    srv.script(ART, &[], slow);
    assert_eq!(host.run(&["update", "--no-wait"]).code, 0);
    let partial = host.path("var/lib/ecs-warden/agents/.1.1.0.partial");
    wait_for("the download to start", Duration::from_secs(20), || {
        (fs::metadata(&partial).ok()?.len() > 64 * 1024).then_some(())
    });
    assert_eq!(host.run(&["stop"]).code, 0);
    assert_eq!(host.wait_exit(Duration::from_secs(20)), 0);
    assert_eq!(host.journal().unwrap()["state"], "STAGING");
    assert!(
        host.agent_processes().is_empty(),
        "the agent stopped with the warden"
    );
    host.start();
    let u = host.wait_update_end(Duration::from_secs(60));
    assert_eq!(u["state"], "UPDATED", "{u:#}");
    host.assert_intact("1.1.0");
    let last = srv.seen_at(ART).pop().unwrap();
    assert!(last.range.is_some_and(|r| r != "bytes=0-"), "resumed");
}

/// The steps of an update in the order the machine takes them
/// (`journal::Step`), each with the state it implies; `done` ends an
/// update in UPDATED or FAILED.
const STEPS: [(&str, &[&str]); 13] = [
    ("accepted", &["PENDING"]),
    ("downloading", &["STAGING"]),
    ("staged", &["STAGED"]),
    ("reverify", &["UPDATING"]),
    ("record-tasks", &["UPDATING"]),
    ("stop-old", &["UPDATING"]),
    ("health-gate", &["UPDATING"]),
    ("rollback-stop", &["UPDATING"]),
    ("rollback-switch", &["UPDATING"]),
    ("rollback-restore", &["UPDATING"]),
    ("rollback-start", &["UPDATING"]),
    ("rollback-gate", &["UPDATING"]),
    ("done", &["UPDATED", "FAILED"]),
];

/// The number of history lines now (every one must parse): where the run
/// of a warden that is about to be restarted ends.
fn history_len(host: &Host, point: &str) -> usize {
    let text = fs::read_to_string(host.path("var/lib/ecs-warden/history.jsonl")).unwrap();
    for l in text.lines() {
        serde_json::from_str::<Value>(l)
            .unwrap_or_else(|e| panic!("{point}: history line {l:?}: {e}"));
    }
    text.lines().count()
}

/// Every history line parses, and each update's lines are in order:
/// - the lines of one update are contiguous (one update at a time) and
///   their timestamps never go back;
/// - an update starts `accepted` (PENDING), ends `done` (UPDATED or
///   FAILED) and has no line after that; every line's state is the one
///   its step implies;
/// - within the run of one warden the steps never go back (`STEPS`); only
///   at a restart (the history length at each one in `restarts`) may
///   recovery redo an earlier step;
/// - `state.json` names the last line's update, state and step.
fn check_history(host: &Host, point: &str, restarts: &[usize]) {
    let text = fs::read_to_string(host.path("var/lib/ecs-warden/history.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{point}: history line {l:?}: {e}"))
        })
        .collect();
    assert!(!lines.is_empty(), "{point}: an empty history");
    let rank = |l: &Value| -> usize {
        let step = l["step"].as_str().unwrap_or("?");
        let (i, (_, states)) = STEPS
            .iter()
            .enumerate()
            .find(|(_, (s, _))| *s == step)
            .unwrap_or_else(|| panic!("{point}: unknown step in {l}"));
        assert!(
            states.contains(&l["state"].as_str().unwrap_or("?")),
            "{point}: step {step} with the wrong state: {l}"
        );
        i
    };
    let mut ended: Vec<&str> = Vec::new();
    for (n, l) in lines.iter().enumerate() {
        let id = l["id"]
            .as_str()
            .unwrap_or_else(|| panic!("{point}: no id: {l}"));
        let r = rank(l);
        assert!(
            !ended.contains(&id),
            "{point}: line {} of update {id} after it ended or another began: {l}",
            n + 1
        );
        let prev = n.checked_sub(1).map(|p| &lines[p]);
        match prev.filter(|p| p["id"] == id) {
            None => assert_eq!(l["step"], "accepted", "{point}: update {id} begins: {l}"),
            Some(p) => {
                assert!(
                    p["at"].as_str() <= l["at"].as_str(),
                    "{point}: time goes back at line {}: {p} then {l}",
                    n + 1
                );
                assert!(
                    rank(p) <= r || restarts.contains(&n),
                    "{point}: step goes back at line {} without a restart: {p} then {l}",
                    n + 1
                );
            }
        }
        let next_same = lines.get(n + 1).is_some_and(|x| x["id"] == id);
        if l["step"] == "done" || !next_same {
            assert_eq!(l["step"], "done", "{point}: update {id} ends with {l}");
            ended.push(id);
        }
    }
    let last = lines.last().unwrap();
    let j = host.journal().expect("state.json exists");
    for key in ["id", "state", "step"] {
        assert_eq!(j[key], last[key], "{point}: state.json {j:#} vs. {last}");
    }
}

/// A restart mid-download against a server that ignores ranges: the
/// warden starts over instead of appending to its partial file.
#[test]
fn mid_download_then_a_server_that_ignores_ranges() {
    crash_case("mid-download", "downloading", Some(Fault::IgnoreRange));
}

macro_rules! matrix {
    ($($name:ident: $point:literal => $step:literal,)*) => {
        $(
            #[test]
            fn $name() {
                crash_at($point, $step);
            }
        )*
        /// Every fail point in `src/` (string literals named
        /// `after-*`, `during-*`, `mid-*`) has its test here.
        #[test]
        fn every_fail_point_is_covered() {
            fn walk(dir: &Path, found: &mut Vec<String>) {
                for e in fs::read_dir(dir).unwrap().flatten() {
                    let p = e.path();
                    if p.is_dir() && !p.ends_with("bin") {
                        walk(&p, found);
                    } else if p.extension().is_some_and(|x| x == "rs") {
                        let text = fs::read_to_string(&p).unwrap();
                        for lit in text.split('"').filter(|l| {
                            ["after-", "during-", "mid-"].iter().any(|pre| l.starts_with(pre))
                                && l.bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
                        }) {
                            if !found.iter().any(|f| f == lit) {
                                found.push(lit.to_string());
                            }
                        }
                    }
                }
            }
            let mut found = Vec::new();
            walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
            found.sort();
            let mut covered: Vec<String> = [$($point),*].iter().map(|s| s.to_string()).collect();
            covered.sort();
            assert_eq!(found, covered, "fail points in src/ vs. this matrix");
        }
    };
}

matrix! {
    after_pending: "after-pending" => "accepted",
    mid_download: "mid-download" => "downloading",
    after_staged: "after-staged" => "staged",
    after_stop_old: "after-stop-old" => "stop-old",
    after_snapshot: "after-snapshot" => "stop-old",
    after_switch: "after-switch" => "stop-old",
    after_start_new: "after-start-new" => "stop-old",
    during_gate: "during-gate" => "health-gate",
    during_rollback: "during-rollback" => "rollback-switch",
    after_rollback_start: "after-rollback-start" => "rollback-start",
    during_rollback_gate: "during-rollback-gate" => "rollback-gate",
}

/// A host on the small 1.0.0, updating from `srv`, whose warden dies at
/// fail point `point`; started and answering.
fn failpoint_host(srv: &Server, point: &str) -> Host {
    Host::builder()
        .updates_from(srv)
        .start_with_env(&[("ECS_WARDEN_FAILPOINT", point)])
}
