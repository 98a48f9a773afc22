//! The disk-fault matrix, the twin of the crash matrix: for every step of
//! an update and of a rollback, the state file system (`var/lib/ecs-warden`)
//! fails just before the journal records that step: full (a tmpfs filled
//! to the last page) or read-only (a bind mount remounted read-only). The
//! warden pauses there (`ECS_WARDEN_FAILPOINT=pause:record-STEP`, built
//! with `--features failpoints`) while the test breaks the disk.
//!
//! Each case then checks: exactly one agent runs, `current` names a
//! complete build, `status` answers and tells the truth; and once the
//! fault clears, the next update and the next rollback work.
//!
//! Needs root (mounts). Without it the tests fail under CI and skip
//! loudly elsewhere.

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::server::Server;
use crate::harness::*;
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    /// The state file system is full.
    Full,
    /// The state file system is read-only.
    ReadOnly,
}

fn can_mount(test: &str) -> bool {
    require(
        test,
        nix::unistd::geteuid().is_root(),
        "root, to mount file systems",
        "run the tests as root",
    )
}

fn sh(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The state directory on its own mount, unmounted when dropped.
struct StateMount {
    dir: PathBuf,
    fault: Fault,
}

impl StateMount {
    fn new(host: &Host, fault: Fault, tmpfs_size: &str) -> StateMount {
        let dir = host.path("var/lib/ecs-warden");
        fs::create_dir_all(&dir).unwrap();
        let d = dir.to_str().unwrap();
        match fault {
            Fault::Full => sh(
                "mount",
                &[
                    "-t",
                    "tmpfs",
                    "-o",
                    &format!("size={tmpfs_size},mode=0700"),
                    "tmpfs",
                    d,
                ],
            ),
            Fault::ReadOnly => sh("mount", &["--bind", d, d]),
        }
        StateMount { dir, fault }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Break it.
    fn fail(&self) {
        match self.fault {
            Fault::Full => {
                let mut f = fs::File::create(self.filler()).unwrap();
                for size in [1 << 20, 4096, 1] {
                    let chunk = vec![0u8; size];
                    while f.write_all(&chunk).is_ok() {}
                }
                // Not even an empty file can be made now? (inodes are
                // plentiful on tmpfs; a page for its data is what fails.)
                assert!(
                    fs::write(self.dir.join("probe"), b"x").is_err(),
                    "the tmpfs is full"
                );
            }
            Fault::ReadOnly => sh(
                "mount",
                &["-o", "remount,bind,ro", self.dir.to_str().unwrap()],
            ),
        }
    }

    /// Mend it.
    fn clear(&self) {
        match self.fault {
            Fault::Full => {
                let _ = fs::remove_file(self.filler());
                let _ = fs::remove_file(self.dir.join("probe"));
            }
            Fault::ReadOnly => sh(
                "mount",
                &["-o", "remount,bind,rw", self.dir.to_str().unwrap()],
            ),
        }
    }
}

impl Drop for StateMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A host whose state is on its own mount; dropping it stops the warden
/// first, then unmounts, then removes the root.
struct Mounted {
    host: Host,
    mount: Option<StateMount>,
}

impl Mounted {
    fn new(fault: Fault, tmpfs_size: &str) -> Mounted {
        let host = Host::builder().small().build();
        let mount = StateMount::new(&host, fault, tmpfs_size);
        Mounted {
            host,
            mount: Some(mount),
        }
    }

    fn mount(&self) -> &StateMount {
        self.mount.as_ref().unwrap()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.host.cleanup();
        self.mount.take();
    }
}

/// A host updating from `srv`, its state on a faulty mount, its warden
/// pausing before it records `step`.
fn host_pausing_at(srv: &Server, fault: Fault, point: &str) -> Mounted {
    let mut m = Mounted::new(fault, "256m");
    let host = &mut m.host;
    host.write_config(&[
        ("ECS_WARDEN_UPDATE_SOURCE", &srv.url("/manifest.json")),
        ("ECS_WARDEN_HEALTH_TIMEOUT", "3s"),
    ]);
    let pause = host.path("pause");
    host.start_with_env(&[
        ("ECS_WARDEN_FAILPOINT", &format!("pause:{point}")),
        ("ECS_WARDEN_FAILPOINT_PAUSE", pause.to_str().unwrap()),
    ]);
    host.wait_agent("1.0.0");
    m
}

/// The host holds together: one agent runs, `current` names a complete
/// build, and `status` answers at once.
fn assert_whole(host: &Host, case: &str) -> Value {
    wait_for(
        &format!("{case}: exactly one agent process"),
        Duration::from_secs(20),
        || (host.agent_processes().len() == 1).then_some(()),
    );
    let agents = host.path("var/lib/ecs-warden/agents");
    let cur = fs::read_link(agents.join("current")).expect("current is a symlink");
    let dir = agents.join(&cur);
    assert!(
        dir.join("artifact.json").is_file() && dir.join("ecs-agent").is_file(),
        "{case}: current -> {} is not a complete build",
        cur.display()
    );
    let t = Instant::now();
    let st = host
        .status()
        .unwrap_or_else(|| panic!("{case}: status answers"));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{case}: status is slow"
    );
    assert_eq!(st["supervisor"]["agentState"], "RUNNING", "{case}: {st:#}");
    st
}

/// Run one case of the matrix: an update to 1.1.0 (`bad`: one that fails
/// its gate, so the rollback runs), the disk failing before `point`.
fn case(fault: Fault, point: &str, bad: bool) {
    let name = format!("{fault:?} at {point}");
    if !can_mount(&name) {
        return;
    }
    let srv = Server::start();
    let m = host_pausing_at(&srv, fault, point);
    let (host, mount) = (&m.host, m.mount());
    let b110 = host.stamp_small("1.1.0", bad.then_some("unhealthy"), &host.path("srv/1.1.0"));
    srv.publish(&[("1.1.0", &b110)]);
    let pause = host.path("pause");
    let mut update = host.cmd();
    update
        .args(["update", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let update = update.spawn().unwrap();
    wait_for(
        &format!("{name}: the pause"),
        Duration::from_secs(60),
        || (fs::read_to_string(&pause).ok()? == point).then_some(()),
    );
    mount.fail();
    fs::remove_file(&pause).unwrap();
    let out = update.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or(-1);

    // While the disk is broken.
    let st = assert_whole(host, &name);
    let u = &st["update"];
    let log = host.log();
    if point == "record-accepted" {
        // The request never became an update.
        assert_eq!(code, 16, "{name}: ServerException: {out:?}");
        assert!(u["state"].is_null(), "{name}: no phantom update: {u:#}");
        assert_eq!(host.agent_version().as_deref(), Some("1.0.0"), "{name}");
    } else if point == "record-updated" {
        assert_eq!(u["state"], "UPDATED", "{name}: {u:#}");
        assert_eq!(host.agent_version().as_deref(), Some("1.1.0"), "{name}");
    } else {
        assert_eq!(u["state"], "FAILED", "{name}: {u:#}");
        let reason = u["error"]["reason"].as_str().unwrap_or("");
        let want = if point == "record-failed" {
            "health-gate"
        } else {
            "journal"
        };
        assert_eq!(reason, want, "{name}: {u:#}");
        assert_ne!(code, 0, "{name}");
        if point != "record-failed" {
            assert!(
                log.contains("the update stopped there"),
                "{name}: the log says where it stopped"
            );
        }
    }
    // Nothing was quarantined: no log line may claim it.
    assert!(!log.contains("quarantining"), "{name}:\n{log}");
    // No restart loop: the agent was started a handful of times at most.
    let starts = host.log_lines("started agent").len();
    assert!(starts <= 4, "{name}: {starts} agent starts:\n{log}");

    // The fault clears: the journal catches up, then updates and a
    // rollback work (two updates, so the build rolled back to is a good
    // one whatever ran when the disk failed).
    mount.clear();
    wait_for(
        &format!("{name}: the journal catches up"),
        Duration::from_secs(20),
        || {
            let Some(j) = host.journal() else {
                // Only the refused request never reached the journal.
                return (point == "record-accepted").then_some(());
            };
            matches!(j["state"].as_str(), Some("UPDATED" | "FAILED")).then_some(())
        },
    );
    for v in ["1.2.0", "1.3.0"] {
        let b = host.stamp_small(v, None, &host.path(&format!("srv/{v}")));
        srv.publish(&[(v, &b)]);
        let ran = host.run(&["update", "--json"]);
        assert_eq!(
            ran.code,
            0,
            "{name}: the next update: {ran:?}\n{}",
            host.log()
        );
        host.assert_intact(v);
    }
    let ran = host.run(&["rollback", "--json"]);
    assert_eq!(
        ran.code,
        0,
        "{name}: the next rollback: {ran:?}\n{}",
        host.log()
    );
    assert_eq!(ran.json()["target"], "1.2.0", "{name}");
    host.assert_intact("1.2.0");
}

macro_rules! matrix {
    ($($name:ident: $point:literal, $bad:literal;)*) => {
        mod full {
            use super::*;
            $( #[test] fn $name() { case(Fault::Full, $point, $bad); } )*
        }
        mod read_only {
            use super::*;
            $( #[test] fn $name() { case(Fault::ReadOnly, $point, $bad); } )*
        }
        /// Every step the journal records has its row.
        #[test]
        fn every_step_is_covered() {
            let mut covered = vec![$($point),*];
            covered.sort();
            let mut all: Vec<String> = [
                "accepted", "downloading", "staged", "reverify", "record-tasks", "stop-old",
                "health-gate", "updated", "rollback-stop", "rollback-switch", "rollback-restore",
                "rollback-start", "rollback-gate", "failed",
            ]
            .iter()
            .map(|s| format!("record-{s}"))
            .collect();
            all.sort();
            assert_eq!(covered, all);
        }
    };
}

matrix! {
    accepted: "record-accepted", false;
    downloading: "record-downloading", false;
    staged: "record-staged", false;
    reverify: "record-reverify", false;
    record_tasks: "record-record-tasks", false;
    stop_old: "record-stop-old", false;
    health_gate: "record-health-gate", false;
    updated: "record-updated", false;
    rollback_stop: "record-rollback-stop", true;
    rollback_switch: "record-rollback-switch", true;
    rollback_restore: "record-rollback-restore", true;
    rollback_start: "record-rollback-start", true;
    rollback_gate: "record-rollback-gate", true;
    failed: "record-failed", true;
}

/// The state directory on a small tmpfs and agent data larger than its
/// free space: the snapshot fails with ENOSPC. Its partial copy is removed,
/// so the rollback can record its steps; the update ends FAILED with the
/// old agent, restored data is not stale, and there is no restart loop.
#[test]
fn a_snapshot_that_fills_the_disk_is_undone() {
    if !can_mount("a_snapshot_that_fills_the_disk_is_undone") {
        return;
    }
    let srv = Server::start();
    let mut m = Mounted::new(Fault::Full, "24m");
    let host = &mut m.host;
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &srv.url("/manifest.json"))]);
    host.start();
    host.wait_agent("1.0.0");
    let data = host.path("var/lib/ecs/data");
    fs::write(data.join("big"), vec![7u8; 20 << 20]).unwrap();
    let b110 = host.stamp_small("1.1.0", None, &host.path("srv/1.1.0"));
    srv.publish(&[("1.1.0", &b110)]);
    let ran = host.run(&["update", "--json"]);
    assert_eq!(ran.code, 15, "{ran:?}\n{}", host.log());
    let u = ran.json();
    assert_eq!(u["state"], "FAILED");
    assert_eq!(u["error"]["reason"], "snapshot", "{u:#}");
    host.assert_intact("1.0.0");
    assert!(
        !host
            .path("var/lib/ecs-warden/agents/1.0.0/data-snapshot.tmp")
            .exists(),
        "the partial snapshot is gone"
    );
    assert!(data.join("big").is_file(), "the agent's data is untouched");
    assert!(host.log_lines("started agent").len() <= 3);
}

/// A worker that panics ends the update in FAILED, with the agent running.
#[test]
fn a_worker_that_panics_fails_the_update() {
    let srv = Server::start();
    let mut host = Host::builder().small().build();
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &srv.url("/manifest.json"))]);
    host.start_with_env(&[("ECS_WARDEN_FAILPOINT", "panic:mid-download")]);
    host.wait_agent("1.0.0");
    let b110 = host.stamp_small("1.1.0", None, &host.path("srv/1.1.0"));
    srv.publish(&[("1.1.0", &b110)]);
    // Slow enough for a progress report in the middle.
    srv.script(
        "/agents/1.1.0",
        &[],
        crate::harness::server::Fault::Dribble {
            chunk: 64 * 1024,
            pause: Duration::from_millis(20),
        },
    );
    let ran = host.run(&["update", "--json"]);
    assert_eq!(ran.code, 15, "{ran:?}");
    let u = ran.json();
    assert_eq!(u["error"]["reason"], "panic", "{u:#}");
    assert!(
        u["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("download worker panicked"),
        "{u:#}"
    );
    host.assert_intact("1.0.0");
    // Not stuck: nothing is in flight in the journal either.
    assert_eq!(host.journal().unwrap()["state"], "FAILED");
}

/// Build 1.0.0 is replaced twice: its first snapshot must not come back
/// when the second one fails (the data written in between would be lost).
#[test]
fn a_failed_snapshot_never_brings_back_an_older_one() {
    if !can_mount("a_failed_snapshot_never_brings_back_an_older_one") {
        return;
    }
    let srv = Server::start();
    let mut m = Mounted::new(Fault::Full, "24m");
    let host = &mut m.host;
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &srv.url("/manifest.json"))]);
    host.start();
    host.wait_agent("1.0.0");
    let data = host.path("var/lib/ecs/data");
    let b110 = host.stamp_small("1.1.0", None, &host.path("srv/1.1.0"));
    srv.publish(&[("1.1.0", &b110)]);
    assert_eq!(host.run(&["update", "--json"]).code, 0);
    // Back to 1.0.0 (its snapshot restored), then new data, too big to
    // snapshot, before the next update replaces 1.0.0 again.
    assert_eq!(host.run(&["rollback", "--json"]).code, 0);
    host.assert_intact("1.0.0");
    fs::write(data.join("written-later"), "keep me").unwrap();
    fs::write(data.join("big"), vec![7u8; 20 << 20]).unwrap();
    let b120 = host.stamp_small("1.2.0", None, &host.path("srv/1.2.0"));
    srv.publish(&[("1.2.0", &b120)]);
    let ran = host.run(&["update", "--json"]);
    assert_eq!(ran.code, 15, "{ran:?}\n{}", host.log());
    assert_eq!(ran.json()["error"]["reason"], "snapshot");
    host.assert_intact("1.0.0");
    assert_eq!(
        fs::read_to_string(data.join("written-later")).unwrap(),
        "keep me",
        "no older snapshot was restored over newer data"
    );
    assert!(host.log().contains("this update took no data snapshot"));
}

/// An operator rollback refused because the journal cannot be written
/// leaves nothing behind: the next request is not "in progress".
#[test]
fn a_refused_rollback_leaves_no_phantom_update() {
    if !can_mount("a_refused_rollback_leaves_no_phantom_update") {
        return;
    }
    let srv = Server::start();
    let mut m = Mounted::new(Fault::ReadOnly, "");
    m.host
        .write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &srv.url("/manifest.json"))]);
    m.host.start();
    m.host.wait_agent("1.0.0");
    let b110 = m.host.stamp_small("1.1.0", None, &m.host.path("srv/1.1.0"));
    srv.publish(&[("1.1.0", &b110)]);
    assert_eq!(m.host.run(&["update", "--json"]).code, 0);
    m.mount().fail();
    let ran = m.host.run(&["rollback", "--json"]);
    assert_eq!(ran.code, 16, "refused with ServerException: {ran:?}");
    assert!(
        ran.stderr.contains("cannot write the update journal"),
        "{ran:?}"
    );
    let u = m.host.update_doc();
    assert_eq!(
        u["state"], "UPDATED",
        "the last update, not a phantom: {u:#}"
    );
    m.mount().clear();
    let ran = m.host.run(&["rollback", "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", m.host.log());
    m.host.assert_intact("1.0.0");
}

/// Update 1.0.0 -> 1.1.0, then a failing 1.2.0 that is rolled back:
/// `previous` still names 1.0.0, housekeeping keeps it, and `rollback`
/// goes back to it.
#[test]
fn a_failed_update_keeps_the_build_before() {
    let srv = Server::start();
    let mut host = Host::builder().small().build();
    host.write_config(&[
        ("ECS_WARDEN_UPDATE_SOURCE", &srv.url("/manifest.json")),
        ("ECS_WARDEN_HEALTH_TIMEOUT", "2s"),
    ]);
    host.start();
    host.wait_agent("1.0.0");
    let b110 = host.stamp_small("1.1.0", None, &host.path("srv/1.1.0"));
    srv.publish(&[("1.1.0", &b110)]);
    assert_eq!(host.run(&["update", "--json"]).code, 0);
    let b120 = host.stamp_small("1.2.0", Some("unhealthy"), &host.path("srv/1.2.0"));
    srv.publish(&[("1.2.0", &b120)]);
    assert_eq!(host.run(&["update", "--json"]).code, 15);
    host.assert_intact("1.1.0");
    let agents = host.path("var/lib/ecs-warden/agents");
    assert_eq!(
        fs::read_link(agents.join("previous")).unwrap(),
        PathBuf::from("1.0.0")
    );
    assert!(agents.join("1.0.0/artifact.json").is_file(), "kept");
    let ran = host.run(&["rollback", "--json"]);
    assert_eq!(ran.code, 0, "{ran:?}\n{}", host.log());
    host.assert_intact("1.0.0");
}

/// A kill during a journal, quarantine or link write leaves its temporary
/// file; the next start removes those, and nothing else.
#[test]
fn leftover_temporary_files_are_removed_at_start() {
    let mut host = Host::builder().small().build();
    let state = host.path("var/lib/ecs-warden");
    fs::create_dir_all(state.join("agents")).unwrap();
    let left = [
        state.join(".state.json.tmp.4242.0badf00d"),
        state.join(".quarantine.json.tmp.17.deadbeef"),
        state.join("agents/.current.link.99.01234567"),
    ];
    for p in &left {
        fs::write(p, "{").unwrap();
    }
    let keep = state.join(".state.json.tmp.notours");
    fs::write(&keep, "x").unwrap();
    host.start();
    host.wait_agent("1.0.0");
    for p in &left {
        assert!(!p.exists(), "{} removed", p.display());
    }
    assert!(keep.exists(), "a name durable.rs never makes is left alone");
    assert!(host.log().contains("removed the leftover"));
}
