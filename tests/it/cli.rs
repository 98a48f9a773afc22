//! The command line through the real binary: help and usage errors, the
//! verbs that work without a warden (status, stop, version, pre-start,
//! post-stop, reload-cache), and `start` with no agent anywhere.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

const VERBS: &[&str] = &[
    "version",
    "pre-start",
    "start",
    "stop",
    "pre-stop",
    "post-stop",
    "reload-cache",
    "status",
    "update",
    "stage",
    "rollback",
];

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The first 8 hex digits of sha256(version): the sample agent's default hash.
fn stamp_hash(version: &str) -> String {
    sha256_hex(version.as_bytes())[..8].to_string()
}

#[test]
fn help_lists_every_verb() {
    let host = Host::new();
    for flag in ["--help", "-h"] {
        let out = host.cli_bounded(&[flag]);
        assert_exit(&out, 0);
        let text = stdout(&out);
        assert!(
            text.contains("Usage: ecs-warden [--root DIR] VERB"),
            "{text}"
        );
        for verb in VERBS {
            assert!(
                text.lines()
                    .any(|l| l.split_whitespace().next() == Some(verb)),
                "{flag} lists {verb}:\n{text}"
            );
        }
    }
}

#[test]
fn every_verb_has_its_own_help() {
    let host = Host::new();
    let flags: &[(&str, &[&str])] = &[
        ("version", &["--json"]),
        ("status", &["--json"]),
        (
            "update",
            &["--version", "--source", "--force", "--json", "--no-wait"],
        ),
        ("stage", &["--version", "--source", "--force", "--no-wait"]),
        ("rollback", &["--keep-data", "--no-wait"]),
    ];
    let mut seen = Vec::new();
    for verb in VERBS {
        let out = host.cli_bounded(&[verb, "--help"]);
        assert_exit(&out, 0);
        let text = stdout(&out);
        assert!(
            text.starts_with(&format!("Usage: ecs-warden [--root DIR] {verb}")),
            "{verb} --help:\n{text}"
        );
        for (v, fs) in flags {
            if v == verb {
                for f in *fs {
                    assert!(text.contains(f), "{verb} --help mentions {f}:\n{text}");
                }
            }
        }
        assert!(!seen.contains(&text), "{verb} has a help of its own");
        seen.push(text);
    }
    // Help must not have touched the root.
    assert!(!host.path("var/lib/ecs-warden").exists());
}

#[test]
fn unknown_verb_prints_usage_and_exits_2() {
    let host = Host::new();
    for args in [&["frobnicate"][..], &[][..], &["status", "extra"][..]] {
        let out = host.cli_bounded(args);
        assert_exit(&out, 2);
        let err = stderr(&out);
        assert!(err.contains("Usage: ecs-warden"), "{args:?}: {err}");
    }
    let err = stderr(&host.cli_bounded(&["frobnicate"]));
    assert!(err.contains("unknown verb \"frobnicate\""), "{err}");
}

#[test]
fn unknown_flag_prints_usage_and_exits_2() {
    let host = Host::new();
    let out = host.cli_bounded(&["status", "--bogus"]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(err.contains("unknown flag \"--bogus\" for status"), "{err}");
    assert!(err.contains("Usage: ecs-warden"), "{err}");
    // Without a verb the flag is still named.
    let out = host.cli_bounded(&["--bogus"]);
    assert_exit(&out, 2);
    let err = stderr(&out);
    assert!(
        err.contains("unknown option \"--bogus\", and no verb"),
        "{err}"
    );
    // A flag of another verb is unknown here, and nothing starts.
    let out = host.cli_bounded(&["start", "--json"]);
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("Usage: ecs-warden"));
    assert!(host.agent_processes().is_empty());
    // A value flag without its value.
    assert_exit(&host.cli_bounded(&["update", "--version"]), 2);
}

#[test]
fn status_without_a_warden_exits_3() {
    let host = Host::new();
    let out = host.cli_bounded(&["status"]);
    assert_exit(&out, 3);
    let text = stdout(&out);
    assert!(text.contains("ecs-warden is not running"), "{text}");
    assert!(text.contains(&host.root.display().to_string()), "{text}");

    let out = host.cli_bounded(&["status", "--json"]);
    assert_exit(&out, 3);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(doc["wardenRunning"], false, "{doc}");
    assert_eq!(doc["root"], host.root.display().to_string());
}

#[test]
fn stop_without_a_warden_succeeds() {
    let host = Host::new();
    for verb in ["stop", "pre-stop"] {
        let out = host.cli_bounded(&[verb]);
        assert_exit(&out, 0);
        assert!(stdout(&out).contains("not running"), "{}", stdout(&out));
    }
}

#[test]
fn version_before_and_after_pre_start() {
    let host = Host::new();
    let out = host.cli_bounded(&["version"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("agent: no build installed"));
    let doc: Value = serde_json::from_slice(&host.cli_bounded(&["version", "--json"]).stdout)
        .expect("version --json");
    assert_eq!(doc["agentVersion"], Value::Null);

    assert_exit(&host.cli_bounded(&["pre-start"]), 0);

    let out = host.cli_bounded(&["version"]);
    assert_exit(&out, 0);
    let text = stdout(&out);
    assert!(
        text.contains(&format!("ecs-warden {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("agent 1.0.0 ({})", stamp_hash("1.0.0"))),
        "{text}"
    );
    let out = host.cli_bounded(&["version", "--json"]);
    assert_exit(&out, 0);
    let doc: Value = serde_json::from_slice(&out.stdout).expect("version --json");
    assert_eq!(doc["wardenVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(doc["agentVersion"], "1.0.0");
    assert_eq!(doc["agentHash"], stamp_hash("1.0.0"));
}

#[test]
fn pre_start_installs_the_bundled_agent_with_tight_modes() {
    let host = Host::new();
    let out = host.cli_bounded(&["pre-start"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("agent 1.0.0 at /var/lib/ecs-warden/agents/current/ecs-agent"),
        "{}",
        stdout(&out)
    );

    let agents = host.path("var/lib/ecs-warden/agents");
    let build = agents.join("1.0.0");
    let bundled = fs::read(host.path("var/cache/ecs/ecs-agent")).unwrap();
    assert_eq!(
        fs::read(build.join("ecs-agent")).unwrap(),
        bundled,
        "the build is the bundled agent"
    );
    assert_eq!(mode(&build.join("ecs-agent")), 0o755);
    let artifact: Value =
        serde_json::from_slice(&fs::read(build.join("artifact.json")).expect("artifact.json"))
            .expect("artifact.json is JSON");
    assert_eq!(artifact["version"], "1.0.0");
    assert_eq!(artifact["gitHash"], stamp_hash("1.0.0"));
    assert_eq!(artifact["sha256"], sha256_hex(&bundled));
    assert_eq!(artifact["size"], bundled.len() as u64);
    let link = fs::read_link(agents.join("current")).expect("current is a symlink");
    assert_eq!(link, Path::new("1.0.0"), "current is a relative link");

    for (dir, want) in [
        ("var/lib/ecs-warden", 0o700),
        ("run/ecs-warden", 0o700),
        ("var/lib/ecs/data", 0o700),
    ] {
        assert_eq!(
            mode(&host.path(dir)),
            want,
            "mode of {dir} is {:o}",
            mode(&host.path(dir))
        );
    }
    assert!(
        host.agent_processes().is_empty(),
        "pre-start starts nothing"
    );

    // Idempotent, and never replaces an installed build, even with a
    // newer one bundled.
    host.stamp("2.0.0", None, &host.path("var/cache/ecs/ecs-agent"));
    assert_exit(&host.cli_bounded(&["pre-start"]), 0);
    assert_eq!(
        fs::read_link(agents.join("current")).unwrap(),
        Path::new("1.0.0")
    );
    assert!(!agents.join("2.0.0").exists());
}

#[test]
fn pre_start_tightens_private_directories_that_already_exist() {
    let host = Host::new();
    let dirs = ["var/lib/ecs-warden", "run/ecs-warden", "var/lib/ecs/data"];
    for dir in dirs {
        fs::create_dir_all(host.path(dir)).unwrap();
        fs::set_permissions(host.path(dir), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let out = host.cli_bounded(&["pre-start"]);
    assert_exit(&out, 0);
    for dir in dirs {
        assert_eq!(mode(&host.path(dir)), 0o700, "mode of {dir}");
    }
}

#[test]
fn start_with_no_agent_anywhere_exits_7() {
    let host = Host::new();
    fs::remove_file(host.path("var/cache/ecs/ecs-agent")).unwrap();
    let out = host.cli_bounded(&["start"]);
    assert_exit(&out, 7);
    let err = stderr(&out);
    assert!(err.contains("no agent build is installed"), "{err}");
    assert!(
        err.contains(&host.path("var/cache/ecs/ecs-agent").display().to_string()),
        "names where the bundled agent is expected: {err}"
    );
    assert!(!host.path("run/ecs-warden/control.sock").exists());
    assert!(!port_open(host.port));
    // And status agrees nothing runs.
    assert_exit(&host.cli_bounded(&["status"]), 3);
}

/// Leave a control socket file behind, as a warden killed with SIGKILL does.
fn stale_socket(host: &Host) -> std::path::PathBuf {
    let sock = host.path("run/ecs-warden/control.sock");
    fs::create_dir_all(sock.parent().unwrap()).unwrap();
    drop(UnixListener::bind(&sock).unwrap());
    assert!(sock.exists());
    sock
}

#[test]
fn post_stop_removes_a_stale_socket() {
    let host = Host::new();
    let out = host.cli_bounded(&["post-stop"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("nothing to clean"),
        "{}",
        stdout(&out)
    );

    let sock = stale_socket(&host);
    // Nothing answers on it: status and stop say no warden runs.
    assert_exit(&host.cli_bounded(&["status"]), 3);
    assert_exit(&host.cli_bounded(&["stop"]), 0);
    let out = host.cli_bounded(&["post-stop"]);
    assert_exit(&out, 0);
    assert!(!sock.exists(), "the stale socket is removed");
    assert!(
        stdout(&out).contains("removed /run/ecs-warden/control.sock"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn post_stop_does_nothing_while_a_warden_runs() {
    let mut host = Host::new();
    host.start();
    host.wait_new_agent(None, Duration::from_secs(20));
    let sock = host.path("run/ecs-warden/control.sock");
    assert!(sock.exists());
    let out = host.cli_bounded(&["post-stop"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("still running"), "{}", stdout(&out));
    assert!(sock.exists(), "the live socket is kept");
    assert!(host.status().is_some(), "the warden still answers");
}

fn current_link(host: &Host) -> String {
    fs::read_link(host.path("var/lib/ecs-warden/agents/current"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn reload_cache_installs_newer_and_never_downgrades() {
    let host = Host::new();
    let bundled = host.path("var/cache/ecs/ecs-agent");
    // On a fresh root it installs the bundled build and makes it current.
    let out = host.cli_bounded(&["reload-cache"]);
    assert_exit(&out, 0);
    assert_eq!(current_link(&host), "1.0.0");

    // The same version again: nothing to do.
    let out = host.cli_bounded(&["reload-cache"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("not newer"), "{}", stdout(&out));

    // A newer bundled build becomes current; the old one is `previous`.
    host.stamp("2.0.0", None, &bundled);
    let out = host.cli_bounded(&["reload-cache"]);
    assert_exit(&out, 0);
    assert!(
        stdout(&out).contains("agent 2.0.0 is now the current build"),
        "{}",
        stdout(&out)
    );
    assert_eq!(current_link(&host), "2.0.0");
    assert_eq!(
        fs::read_link(host.path("var/lib/ecs-warden/agents/previous"))
            .unwrap()
            .display()
            .to_string(),
        "1.0.0"
    );
    assert!(host
        .path("var/lib/ecs-warden/agents/2.0.0/artifact.json")
        .is_file());
    let doc: Value =
        serde_json::from_slice(&host.cli_bounded(&["version", "--json"]).stdout).unwrap();
    assert_eq!(doc["agentVersion"], "2.0.0");

    // An older bundled build (an RPM downgrade) changes nothing.
    host.stamp("1.5.0", None, &bundled);
    let out = host.cli_bounded(&["reload-cache"]);
    assert_exit(&out, 0);
    assert!(stdout(&out).contains("not newer"), "{}", stdout(&out));
    assert_eq!(current_link(&host), "2.0.0");
    assert!(!host.path("var/lib/ecs-warden/agents/1.5.0").exists());
}

#[test]
fn reload_cache_does_not_switch_under_a_running_warden() {
    let mut host = Host::new();
    host.start();
    let pid = host.wait_new_agent(None, Duration::from_secs(20));
    host.stamp("2.0.0", None, &host.path("var/cache/ecs/ecs-agent"));
    let out = host.cli_bounded(&["reload-cache"]);
    assert_exit(&out, 0);
    assert!(
        host.path("var/lib/ecs-warden/agents/2.0.0/artifact.json")
            .is_file(),
        "the newer build is installed in the store"
    );
    assert_eq!(current_link(&host), "1.0.0", "but not switched");
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
    assert_eq!(
        host.agent_pid(),
        Some(pid),
        "the running agent is untouched"
    );
}
