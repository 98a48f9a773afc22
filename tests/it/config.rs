//! Configuration through the real binaries: the precedence of the two files
//! over the built-in defaults, seen in the agent's own environment, and
//! every kind of config error, each of which must exit 4, name the file,
//! line and key, and start nothing.

use std::path::Path;
use std::time::Duration;

use crate::harness::*;

#[test]
fn defaults_then_packaged_file_then_operator_file() {
    let mut host = Host::new();
    host.write_var_config(&[
        ("ECS_CLUSTER", "from-var"),
        ("AWS_REGION", "eu-west-3"),
        ("ECS_LOGLEVEL", "debug"),
        // A bad packaged value the operator's file overrides is no error:
        // the files merge first, then the result is validated.
        ("ECS_WARDEN_RESTART_STABLE", "forever"),
    ]);
    host.append_config_text(
        "# the operator's file wins\n\
         export ECS_CLUSTER=\"from-etc\"\n\
         ECS_WARDEN_RESTART_STABLE='45s'\n",
    );
    host.start();
    let pid = host.wait_new_agent(None, Duration::from_secs(20));

    let md = host.get("/v1/metadata").expect("metadata");
    assert_eq!(md["Cluster"], "from-etc", "etc/ecs/ecs.config wins: {md}");
    let arn = md["ContainerInstanceArn"].as_str().unwrap_or_default();
    assert!(
        arn.contains(":eu-west-3:"),
        "a key only in var/lib/ecs/ecs.config reaches the agent: {arn}"
    );

    let env = environ_of(pid);
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(get("ECS_CLUSTER"), Some("from-etc"));
    assert_eq!(get("AWS_REGION"), Some("eu-west-3"));
    assert_eq!(
        get("ECS_LOGLEVEL"),
        Some("debug"),
        "var/lib overrides a default"
    );
    assert_eq!(get("ECS_WARDEN_RESTART_STABLE"), Some("45s"));
    assert_eq!(
        get("ECS_WARDEN_DOWNLOAD_ATTEMPTS"),
        Some("5"),
        "a built-in default no file sets reaches the agent"
    );
    assert_eq!(
        get("ECS_DATADIR").map(Path::new),
        Some(host.path("var/lib/ecs/data").as_path()),
        "the agent's data dir is under the root"
    );

    let st = host.status().expect("status");
    assert_eq!(st["cluster"], "from-etc", "the warden reads the same merge");
}

#[test]
fn lenient_syntax_and_edge_values_are_accepted() {
    let host = Host::new();
    host.append_config_text(&format!(
        "\n   # indented comment\n\
         export ECS_UPDATES_ENABLED=F\n\
         ECS_WARDEN_ALLOW_HTTP = 1\n\
         ECS_WARDEN_UPDATE_SOURCE=http://example.com/manifest.json\n\
         HTTPS_PROXY=\"http://proxy.example:3128\"\n\
         NO_PROXY=169.254.169.254,localhost\n\
         ECS_WARDEN_AGENT_VERSION=v1.2.3\n\
         ECS_WARDEN_INTROSPECTION_URL=http://localhost:{}/\n\
         ECS_WARDEN_RESTART_BACKOFF_MIN=1s\n\
         ECS_WARDEN_RESTART_BACKOFF_MAX=1s\n\
         ECS_WARDEN_STOP_TIMEOUT=1m30s\n\
         EMPTY=\n",
        host.port
    ));
    let out = host.cli_bounded(&["pre-start"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What a config error must look like, and that nothing started.
fn assert_config_error(host: &Host, file: &Path, line: usize, key: &str, says: &str) {
    let out = host.cli_bounded(&["start"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(4),
        "start exits 4; stderr:\n{stderr}"
    );
    let at = if key.is_empty() {
        format!("{}:{line}: ", file.display())
    } else {
        format!("{}:{line}: {key}: ", file.display())
    };
    assert!(stderr.contains(&at), "stderr names {at:?}:\n{stderr}");
    assert!(stderr.contains(says), "stderr says {says:?}:\n{stderr}");
    assert!(stderr.contains("nothing was started"), "{stderr}");
    assert_nothing_started(host);

    // pre-start validates the same way.
    let out = host.cli_bounded(&["pre-start"]);
    assert_eq!(out.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&at));
    assert_nothing_started(host);
}

fn assert_nothing_started(host: &Host) {
    assert_eq!(host.agent_processes(), Vec::<i32>::new(), "no agent runs");
    assert!(!host.path("run/ecs-warden/control.sock").exists());
    assert!(!host.path("run/ecs-warden/agent.json").exists());
    assert!(
        !host.path("var/lib/ecs-warden").exists(),
        "nothing was even prepared"
    );
    assert!(!port_open(host.port), "nothing listens on {}", host.port);
}

/// Append one bad line to etc/ecs/ecs.config and check the error.
fn bad_line(text: &str, key: &str, says: &str) {
    let host = Host::new();
    let line = host.append_config_text(&format!("{text}\n"));
    let file = host.path("etc/ecs/ecs.config");
    assert_config_error(&host, &file, line, key, says);
}

// Lines ecs-init would skip or pass on are warnings for its and the
// agent's keys (`config_compat`); the warden's own stay strict.
#[test]
fn malformed_line() {
    bad_line(
        "ECS_WARDEN_STOP_TIMEOUT 30s",
        "",
        "expected KEY=VALUE, found \"ECS_WARDEN_STOP_TIMEOUT 30s\"",
    );
}

#[test]
fn bad_key() {
    bad_line(
        "ECS_WARDEN_STOP-TIMEOUT=30s",
        "",
        "invalid key \"ECS_WARDEN_STOP-TIMEOUT\"",
    );
}

#[test]
fn unterminated_quote() {
    bad_line(
        "ECS_WARDEN_UPDATE_SOURCE=\"file:///x",
        "ECS_WARDEN_UPDATE_SOURCE",
        "unterminated \" quote",
    );
}

#[test]
fn bad_boolean() {
    bad_line(
        "ECS_UPDATES_ENABLED=maybe",
        "ECS_UPDATES_ENABLED",
        "expected true or false",
    );
}

#[test]
fn bad_duration() {
    bad_line(
        "ECS_WARDEN_STOP_TIMEOUT=30",
        "ECS_WARDEN_STOP_TIMEOUT",
        "expected a duration",
    );
}

#[test]
fn non_loopback_introspection_url() {
    bad_line(
        "ECS_WARDEN_INTROSPECTION_URL=http://10.0.0.1:51678",
        "ECS_WARDEN_INTROSPECTION_URL",
        "10.0.0.1 is not a loopback address",
    );
}

#[test]
fn backoff_max_below_min() {
    let host = Host::new();
    let line = host.append_config_text(
        "ECS_WARDEN_RESTART_BACKOFF_MIN=2s\nECS_WARDEN_RESTART_BACKOFF_MAX=1s\n",
    );
    let file = host.path("etc/ecs/ecs.config");
    assert_config_error(
        &host,
        &file,
        line + 1,
        "ECS_WARDEN_RESTART_BACKOFF_MAX",
        "must not be below ECS_WARDEN_RESTART_BACKOFF_MIN",
    );
}

#[test]
fn plain_http_update_source_without_allow_http() {
    bad_line(
        "ECS_WARDEN_UPDATE_SOURCE=http://example.com/manifest.json",
        "ECS_WARDEN_UPDATE_SOURCE",
        "ECS_WARDEN_ALLOW_HTTP",
    );
}

#[test]
fn bad_pinned_version() {
    bad_line(
        "ECS_WARDEN_AGENT_VERSION=1.2",
        "ECS_WARDEN_AGENT_VERSION",
        "expected a version such as",
    );
}

#[test]
fn error_in_the_packaged_file_names_that_file() {
    let host = Host::new();
    // A key the harness's etc/ecs/ecs.config does not set, so no override.
    host.write_var_config(&[
        ("ECS_CLUSTER", "a"),
        ("ECS_WARDEN_DOWNLOAD_STALL_WINDOW", "soon"),
    ]);
    let file = host.path("var/lib/ecs/ecs.config");
    assert_config_error(
        &host,
        &file,
        2,
        "ECS_WARDEN_DOWNLOAD_STALL_WINDOW",
        "expected a duration",
    );
}

#[test]
fn unreadable_or_non_utf8_config_file() {
    let host = Host::new();
    let file = host.path("etc/ecs/ecs.config");
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    assert_config_error(&host, &file, 0, "", "cannot read the file");

    let host = Host::new();
    let file = host.path("var/lib/ecs/ecs.config");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"ECS_CLUSTER=\xff\n").unwrap();
    assert_config_error(&host, &file, 0, "", "file is not valid UTF-8");
}
