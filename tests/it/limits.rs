//! Values that look valid but cannot work, and the smaller points of issue
//! 13, through the real binaries: SemVer build metadata never makes a
//! build newer, the message for a current build without its marker, what
//! `stop --help` says about an update in flight, config values that
//! validate but cannot work (zero timeouts, an environment too large for
//! execve, a NUL), a zero restart backoff that still backs off, an absurd
//! manifest `size`, and a small download that resumes after a re-exec.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::harness::server::{self, Fault, Server};
use crate::harness::*;
use serde_json::{json, Value};

/// A manifest at `srv/<name>` with these entries; its file:// URL.
fn manifest_file(host: &Host, name: &str, agents: Vec<Value>) -> String {
    let p = host.path(&format!("srv/{name}"));
    let doc = json!({"schemaVersion": 1, "agents": agents});
    fs::write(&p, serde_json::to_vec_pretty(&doc).unwrap()).unwrap();
    format!("file://{}", p.display())
}

/// A running warden with the small sample agent 1.0.0.
fn running_host(extra: &[(&str, &str)]) -> Host {
    let mut host = Host::builder().small().build();
    host.write_config(extra);
    host.start();
    host.wait_agent("1.0.0");
    host
}

// ----- SemVer build metadata ------------------------------------------------

#[test]
fn build_metadata_does_not_make_a_build_newer() {
    let host = running_host(&[]);
    let bytes = b"never downloaded".to_vec();
    fs::write(host.path("srv/blob"), &bytes).unwrap();
    let src = manifest_file(
        &host,
        "meta.json",
        vec![server::entry("1.0.0+rebuild.2", &bytes, "blob")],
    );
    let ran = host.run(&["update", "--source", &src]);
    assert_eq!(ran.code, 10, "NoUpdateAvailableException: {ran:?}");
    assert!(ran.stderr.contains("NoUpdateAvailableException"), "{ran:?}");
    assert!(ran.stderr.contains("not newer"), "{ran:?}");
    assert_eq!(host.journal(), None, "nothing was journaled");
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
}

#[test]
fn reload_cache_does_not_take_build_metadata_as_newer() {
    let host = Host::builder().small().build();
    let out = host.cli_bounded(&["pre-start"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    // A bundled agent that calls itself 1.0.0+rebuild.
    let bundled = host.path("var/cache/ecs/ecs-agent");
    fs::write(
        &bundled,
        "#!/bin/sh\necho 'Amazon ECS Agent - v1.0.0+rebuild (0123abcd)'\n",
    )
    .unwrap();
    fs::set_permissions(&bundled, fs::Permissions::from_mode(0o755)).unwrap();
    let out = host.cli_bounded(&["reload-cache"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stdout.contains("is not newer"), "{stdout}");
    let cur = fs::read_link(host.path("var/lib/ecs-warden/agents/current")).unwrap();
    assert_eq!(cur, Path::new("1.0.0"), "current is unchanged");
}

// ----- a current build without its marker -----------------------------------

/// `agents/current` points at a build whose install was interrupted (no
/// `artifact.json`), and nothing is bundled: the error says so, not that
/// `agents/current/ecs-agent` is missing (it is there).
#[test]
fn current_build_without_its_marker_is_named_as_such() {
    let host = Host::new();
    let out = host.cli_bounded(&["pre-start"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let agents = host.path("var/lib/ecs-warden/agents");
    fs::remove_file(agents.join("1.0.0/artifact.json")).unwrap();
    fs::remove_file(host.path("var/cache/ecs/ecs-agent")).unwrap();
    assert!(agents.join("current/ecs-agent").is_file());
    for verb in ["pre-start", "start"] {
        let out = host.cli_bounded(&[verb]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{verb}: {stderr}");
        assert!(!stderr.contains("is missing"), "{verb}: {stderr}");
        assert!(
            stderr.contains("points at 1.0.0, which has no completion marker"),
            "{verb}: {stderr}"
        );
        assert!(stderr.contains("artifact.json"), "{verb}: {stderr}");
        assert!(stderr.contains("interrupted"), "{verb}: {stderr}");
        assert!(
            stderr.contains(&host.path("var/cache/ecs/ecs-agent").display().to_string()),
            "{verb} names where a bundled agent would be: {stderr}"
        );
    }
    // A dangling link and no link at all each get their own words.
    fs::remove_dir_all(agents.join("1.0.0")).unwrap();
    let out = host.cli_bounded(&["pre-start"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(
        stderr.contains("points at 1.0.0, which does not exist"),
        "{stderr}"
    );
    fs::remove_file(agents.join("current")).unwrap();
    let out = host.cli_bounded(&["pre-start"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{stderr}");
    assert!(stderr.contains("no agent build is installed"), "{stderr}");
}

// ----- what `stop` does during an update ------------------------------------

#[test]
fn stop_help_says_what_happens_to_an_update_in_flight() {
    let host = Host::new();
    let out = host.cli_bounded(&["stop", "--help"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout).replace('\n', " ");
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    for says in [
        "During an update",
        "the agent is stopped in every case",
        "journal",
        "next start resumes or undoes",
        "download resumes",
        "rollback",
    ] {
        assert!(help.contains(says), "stop --help lacks {says:?}: {help}");
    }
    // The README says the same.
    let readme = include_str!("../../README.md").replace('\n', " ");
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        readme.contains("`stop` during an update"),
        "README explains stop during an update"
    );
}

// ----- a download smaller than one chunk resumes ----------------------------

/// Stage a 600 KiB build (under the download's 1 MiB chunk) that the server
/// dribbles; interrupt the warden mid-download with `interrupt`; the next
/// request for the build must resume with `Range: bytes=K-`, K > 0, and
/// the staged build must be whole.
fn small_download_resumes_after(interrupt: impl FnOnce(&mut Host)) {
    let srv = Server::start();
    let bytes: Vec<u8> = (0..600 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    srv.route(
        "/agents/1.1.0",
        bytes.clone(),
        &[Fault::Dribble {
            chunk: 8 * 1024,
            pause: Duration::from_millis(50),
        }],
        Fault::Serve,
    );
    let src = srv.manifest(&json!({"schemaVersion": 1, "agents": [
        server::entry("1.1.0", &bytes, "agents/1.1.0")
    ]}));
    let mut host = running_host(&[]);
    let ran = host.run(&["stage", "--no-wait", "--source", &src]);
    assert_eq!(ran.code, 0, "{ran:?}");
    host.wait_status("some bytes in", Duration::from_secs(20), |s| {
        s["update"]["state"] == "STAGING"
            && s["update"]["bytesDone"].as_u64().unwrap_or(0) >= 200 * 1024
    });
    interrupt(&mut host);
    let st = host.wait_status("STAGED", Duration::from_secs(60), |s| {
        matches!(s["update"]["state"].as_str(), Some("STAGED" | "FAILED"))
    });
    assert_eq!(st["update"]["state"], "STAGED", "{st:#}\n{}", host.log());
    let seen = srv.seen_at("/agents/1.1.0");
    let gets: Vec<_> = seen.iter().filter(|s| s.method == "GET").collect();
    assert!(gets.len() >= 2, "{seen:?}");
    let start: Option<u64> = gets[1]
        .range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse().ok());
    assert!(
        start.is_some_and(|k| k > 0),
        "the request after the interruption resumes with a range: {seen:?}"
    );
    let staged = fs::read(host.path("var/lib/ecs-warden/agents/1.1.0/ecs-agent")).unwrap();
    assert!(staged == bytes, "the staged build is whole");
}

#[test]
fn small_download_resumes_after_a_reexec() {
    small_download_resumes_after(|host| {
        let out = host.cli_bounded(&["reexec"]);
        assert!(out.status.success(), "{out:?}");
    });
}

#[test]
fn small_download_resumes_after_a_restart() {
    small_download_resumes_after(|host| {
        host.signal_warden(nix::sys::signal::Signal::SIGKILL);
        host.wait_exit(Duration::from_secs(10));
        host.start();
    });
}

// ----- config values that validate but cannot work --------------------------

/// `pre-start` and `start` both refuse the config: exit 4, the message
/// names `file:line: KEY:` and says `says`; nothing was started.
fn assert_config_error(host: &Host, line: usize, key: &str, says: &str) {
    let file = host.path("etc/ecs/ecs.config");
    let at = format!("{}:{line}: {key}: ", file.display());
    for verb in ["pre-start", "start"] {
        let out = host.cli_bounded(&[verb]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let shown: String = stderr.chars().take(2000).collect();
        assert_eq!(out.status.code(), Some(4), "{verb} exits 4: {shown}");
        assert!(stderr.contains(&at), "{verb} names {at:?}: {shown}");
        assert!(stderr.contains(says), "{verb} says {says:?}: {shown}");
        assert!(stderr.len() < 4096, "{verb}: a short message: {shown}");
    }
    assert!(host.agent_processes().is_empty(), "no agent runs");
    assert!(!host.path("run/ecs-warden/control.sock").exists());
}

#[test]
fn zero_download_timeouts_are_config_errors() {
    for key in [
        "ECS_WARDEN_DOWNLOAD_CONNECT_TIMEOUT",
        "ECS_WARDEN_DOWNLOAD_READ_TIMEOUT",
    ] {
        let host = Host::new();
        let line = host.append_config_text(&format!("{key}=0\n"));
        assert_config_error(&host, line, key, "must be above 0");
        let host = Host::new();
        let line = host.append_config_text(&format!("{key}=0ms\n"));
        assert_config_error(&host, line, key, "must be above 0");
    }
}

#[test]
fn an_environment_too_large_for_execve_is_a_config_error() {
    // 100,000 keys: the key that takes the environment over the bound.
    let host = Host::new();
    let first = host.append_config_text("");
    let text: String = (0..100_000).map(|i| format!("K{i:06}=1\n")).collect();
    host.append_config_text(&text);
    let out = host.cli_bounded(&["pre-start"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(stderr.contains("execve"), "{stderr}");
    assert!(stderr.len() < 4096, "one short message");
    // It names one line of the file and its key.
    let file = host.path("etc/ecs/ecs.config").display().to_string();
    let rest = stderr
        .split(&format!("{file}:"))
        .nth(1)
        .expect("names the file");
    let (line, rest) = rest.split_once(": ").unwrap();
    let line: usize = line.parse().unwrap();
    assert!(line >= first && line < first + 100_000, "{stderr}");
    let key = rest.split(':').next().unwrap();
    assert_eq!(key, format!("K{:06}", line - first), "{stderr}");
    assert_config_error(&host, line, key, "execve");

    // One value of 200 KiB: over the 128 KiB an entry may have.
    let host = Host::new();
    let line = host.append_config_text(&format!("BIG_VALUE={}\n", "v".repeat(200 * 1024)));
    assert_config_error(&host, line, "BIG_VALUE", "131072");
}

#[test]
fn a_nul_inside_a_value_is_a_config_error() {
    for (key, value) in [("ECS_CLUSTER", "pro\0d"), ("SOME_AGENT_KEY", "\0")] {
        let host = Host::new();
        let line = host.append_config_text(&format!("{key}={value}\n"));
        assert_config_error(&host, line, key, "NUL");
    }
    // Also in the packaged file.
    let host = Host::new();
    host.write_var_config(&[("ECS_AVAILABLE_LOGGING_DRIVERS", "[\"json\0\"]")]);
    let out = host.cli_bounded(&["pre-start"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let at = format!(
        "{}:1: ECS_AVAILABLE_LOGGING_DRIVERS: ",
        host.path("var/lib/ecs/ecs.config").display()
    );
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains(&at) && stderr.contains("NUL"), "{stderr}");
}

/// With `ECS_WARDEN_RESTART_BACKOFF_MIN=0`, an agent that crashes at once
/// is restarted at once the first time, then with a growing delay: a
/// handful of starts in 2 s, not hundreds.
#[test]
fn zero_backoff_min_restarts_at_once_then_backs_off() {
    let mut host = Host::builder().small().build();
    host.write_config(&[
        ("ECS_WARDEN_RESTART_BACKOFF_MIN", "0"),
        ("ECS_WARDEN_RESTART_BACKOFF_MAX", "1s"),
        ("SAMPLE_AGENT_FAULT", "crash"),
    ]);
    host.start();
    host.wait_log("started agent 1.0.0", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    let starts = host.log_lines("started agent 1.0.0").len();
    let delays: Vec<String> = host
        .log_lines("restarting the agent in ")
        .iter()
        .map(|l| {
            let d = l.split("restarting the agent in ").nth(1).unwrap();
            d.split(" (").next().unwrap().to_string()
        })
        .collect();
    assert!(
        (3..=10).contains(&starts),
        "{starts} starts in about 2 s; delays {:?}",
        &delays[..delays.len().min(20)]
    );
    assert_eq!(delays.first().map(String::as_str), Some("0s"), "{delays:?}");
    let ms: Vec<f64> = delays
        .iter()
        .map(|d| parse_humantime_ms(d).unwrap())
        .collect();
    assert!(ms[1] >= 90.0, "the second delay is the floor: {delays:?}");
    for w in ms.windows(2).skip(1) {
        assert!(w[1] >= w[0] * 0.8, "delays grow: {delays:?}");
    }
}

// ----- request framing (RFC 9112 §6.3) ----------------------------------------

/// Send `bytes` on a fresh connection (the harness's raw client) and read
/// the whole answer: its status and body.
fn send(to: &To, bytes: &[u8]) -> (u16, String) {
    let r = raw(to, bytes, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{to:?}: {e}"));
    (r.status, r.text())
}

#[test]
fn request_framing_follows_rfc_9112() {
    let port = free_port();
    let host = running_host(&[("ECS_WARDEN_API_PORT", &port.to_string())]);
    let sock = host.path("run/ecs-warden/control.sock");
    // (what, head fields, body, expected status, words in the answer)
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        (
            "a signed length",
            "Content-Length: +2\r\n",
            "{}",
            400,
            "Content-Length",
        ),
        (
            "a negative length",
            "Content-Length: -2\r\n",
            "{}",
            400,
            "Content-Length",
        ),
        (
            "a hex length",
            "Content-Length: 0x2\r\n",
            "{}",
            400,
            "Content-Length",
        ),
        (
            "an empty length",
            "Content-Length: \r\n",
            "",
            400,
            "Content-Length",
        ),
        (
            "two conflicting fields",
            "Content-Length: 2\r\nContent-Length: 3\r\n",
            "{}x",
            400,
            "Content-Length",
        ),
        (
            "a list that disagrees",
            "Content-Length: 2, 3\r\n",
            "{}x",
            400,
            "Content-Length",
        ),
        (
            "a list with junk",
            "Content-Length: 2, x\r\n",
            "{}",
            400,
            "Content-Length",
        ),
        (
            "Transfer-Encoding with Content-Length",
            "Transfer-Encoding: chunked\r\nContent-Length: 2\r\n",
            "{}",
            400,
            "Transfer-Encoding",
        ),
        (
            "chunked not last",
            "Transfer-Encoding: chunked, gzip\r\n",
            "",
            400,
            "Transfer-Encoding",
        ),
        (
            "identity coding",
            "Transfer-Encoding: identity\r\n",
            "",
            400,
            "Transfer-Encoding",
        ),
        (
            "a chunked body",
            "Transfer-Encoding: chunked\r\n",
            "2\r\n{}\r\n0\r\n\r\n",
            411,
            "Content-Length",
        ),
        (
            "a length beyond any cap",
            "Content-Length: 99999999999999999999999\r\n",
            "{}",
            413,
            "request body over",
        ),
        // RFC 9112 §6.3 (5): the same valid value repeated is that value.
        (
            "a list of one value",
            "Content-Length: 2, 2\r\n",
            "{}",
            200,
            "\"agentUpdateStatus\"",
        ),
        (
            "the same field twice",
            "Content-Length: 2\r\nContent-Length: 2\r\n",
            "{}",
            200,
            "\"agentUpdateStatus\"",
        ),
        (
            "a plain length",
            "Content-Length: 2\r\n",
            "{}",
            200,
            "\"agentUpdateStatus\"",
        ),
    ];
    for to in [To::Unix(sock.clone()), To::Tcp(port)] {
        for (what, fields, body, want, says) in cases {
            // Over TCP only the framing errors are checked: a framed
            // request is refused later, unsigned.
            if matches!(to, To::Tcp(_)) && *want == 200 {
                continue;
            }
            let req = format!(
                "GET /v1/status HTTP/1.1\r\nHost: x\r\n{fields}Connection: close\r\n\r\n{body}"
            );
            let (status, answer) = send(&to, req.as_bytes());
            assert_eq!(status, *want, "{what} over {to:?}: {answer}");
            assert!(answer.contains(says), "{what} over {to:?}: {answer}");
        }
    }
    assert_eq!(host.status().unwrap()["supervisor"]["restarts"], 0);
}

// ----- the size of a build --------------------------------------------------

#[test]
fn an_absurd_manifest_size_is_refused_up_front() {
    let srv = Server::start();
    let bytes = b"not really an agent".to_vec();
    srv.file("/agents/1.1.0", bytes.clone());
    let mut e = server::entry("1.1.0", &bytes, "agents/1.1.0");
    e["size"] = json!(u64::MAX);
    let src = srv.manifest(&json!({"schemaVersion": 1, "agents": [
        server::entry("1.0.5", &bytes, "agents/1.1.0"), e
    ]}));
    let host = running_host(&[]);
    let ran = host.run(&["update", "--no-wait", "--source", &src]);
    assert_eq!(ran.code, 13, "InvalidParameterException: {ran:?}");
    for says in [
        "InvalidParameterException",
        "agents[1]",
        "1.1.0",
        "18446744073709551615",
        "ECS_WARDEN_MAX_BUILD_SIZE",
    ] {
        assert!(ran.stderr.contains(says), "says {says:?}: {ran:?}");
    }
    assert_eq!(host.journal(), None, "nothing was journaled");
    assert!(
        srv.seen_at("/agents/1.1.0").is_empty(),
        "nothing was downloaded"
    );
    let st = host.status().unwrap();
    assert_eq!(st["update"]["state"], Value::Null, "{st}");
    assert_eq!(host.agent_version().as_deref(), Some("1.0.0"));
}

#[test]
fn the_build_size_bound_is_configured_and_applies_to_agent_stage_calls() {
    let srv = Server::start();
    let bytes = vec![7u8; 2000];
    srv.file("/agents/1.1.0", bytes.clone());
    let src = srv.manifest(&json!({"schemaVersion": 1, "agents": [
        server::entry("1.1.0", &bytes, "agents/1.1.0")
    ]}));
    let host = running_host(&[("ECS_WARDEN_MAX_BUILD_SIZE", "1999")]);
    let ran = host.run(&["update", "--no-wait", "--source", &src]);
    assert_eq!(ran.code, 13, "{ran:?}");
    assert!(ran.stderr.contains("2000"), "{ran:?}");
    assert!(
        ran.stderr.contains("ECS_WARDEN_MAX_BUILD_SIZE (1999"),
        "{ran:?}"
    );

    // The agent's stage call gives no size: the server's answer to HEAD is
    // held to the same bound, before any byte is fetched.
    let body =
        json!({"location": srv.url("/agents/1.1.0"), "signature": sha256_hex(&bytes)}).to_string();
    let req = format!(
        "POST /v1/agent/stage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, answer) = send(
        &To::Unix(host.path("run/ecs-warden/control.sock")),
        req.as_bytes(),
    );
    assert_eq!(status, 200, "{answer}");
    let u = host.wait_update_end(Duration::from_secs(30));
    assert_eq!(u["state"], "FAILED", "{u:#}");
    let msg = u["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("ECS_WARDEN_MAX_BUILD_SIZE"), "{u:#}");
    assert!(msg.contains("2000"), "{u:#}");
    let gets = srv
        .seen_at("/agents/1.1.0")
        .into_iter()
        .filter(|s| s.method == "GET")
        .count();
    assert_eq!(gets, 0, "nothing was downloaded");
}

#[test]
fn a_bad_build_size_bound_is_a_config_error() {
    for bad in ["0", "1GiB", "-1", "99999999999999999999"] {
        let host = Host::new();
        let line = host.append_config_text(&format!("ECS_WARDEN_MAX_BUILD_SIZE={bad}\n"));
        assert_config_error(
            &host,
            line,
            "ECS_WARDEN_MAX_BUILD_SIZE",
            "expected a whole number",
        );
    }
}
