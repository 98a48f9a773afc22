//! ecs-init's configuration and log file, through the real binaries: what
//! ecs-init accepts in `ecs.config` starts the host (with a warning where it
//! would skip a line), the warden's own keys stay strict, and the warden's
//! log lands in `var/log/ecs/ecs-init.log` in ecs-init's format, without
//! ever failing the warden when it cannot be written.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use crate::harness::*;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn init_log(host: &Host) -> String {
    fs::read_to_string(host.path("var/log/ecs/ecs-init.log")).unwrap_or_default()
}

/// `level=L time=YYYY-MM-DDTHH:MM:SSZ msg="..."`, ecs-init's logfmt.
fn is_ecs_init_logfmt(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("level=") else {
        return false;
    };
    let Some((level, rest)) = rest.split_once(" time=") else {
        return false;
    };
    let Some((time, msg)) = rest.split_once(" msg=") else {
        return false;
    };
    let t = time.as_bytes();
    ["trace", "debug", "info", "warn", "error"].contains(&level)
        && t.len() == 20
        && t[4] == b'-'
        && t[10] == b'T'
        && t[19] == b'Z'
        && humantime::parse_rfc3339(time).is_ok()
        && msg.len() >= 2
        && msg.starts_with('"')
        && msg.ends_with('"')
        && !msg[1..msg.len() - 1].replace("\\\"", "").contains('"')
}

#[test]
fn lines_ecs_init_skips_start_the_host_with_warnings() {
    let mut host = Host::new();
    let first = host.append_config_text(
        "this line has no equals sign\n\
         1ECS-BAD=x\n\
         MY_COMMENTED=a # not a comment\n\
         MY_OPEN=\"unterminated\n\
         MY_QUOTED=\"stripped\"\n",
    );
    host.start();
    let pid = host.wait_new_agent(None, Duration::from_secs(20));
    let env = environ_of(pid);
    let get = |k: &str| env.get(k).map(String::as_str);
    assert_eq!(
        get("MY_COMMENTED"),
        Some("a # not a comment"),
        "as ecs-init"
    );
    assert_eq!(get("MY_OPEN"), Some("\"unterminated"), "as ecs-init");
    assert_eq!(
        get("MY_QUOTED"),
        Some("stripped"),
        "the documented difference"
    );
    assert!(
        !env.keys().any(|k| k.contains("BAD") || k.contains(' ')),
        "{env:?}"
    );

    let file = host.path("etc/ecs/ecs.config");
    let log = host.log();
    for (line, says) in [
        (
            first,
            "expected KEY=VALUE, found \"this line has no equals sign\"",
        ),
        (first + 1, "invalid key \"1ECS-BAD\""),
        (first + 3, "MY_OPEN: unterminated \" quote"),
    ] {
        let at = format!("{}:{line}: {says}", file.display());
        assert_eq!(
            log.lines().filter(|l| l.contains(&at)).count(),
            1,
            "one warning {at:?} on stderr:\n{log}"
        );
        assert!(
            init_log(&host).contains(&at.replace('"', "\\\"")),
            "and in ecs-init.log"
        );
    }
    host.cleanup();
}

#[test]
fn the_wardens_own_keys_stay_strict() {
    for text in [
        "ECS_WARDEN_STOP_TIMEOUT 30s",
        "ECS_WARDEN_STOP_TIMEOUT=\"30s",
        "ECS_WARDEN_STOP-TIMEOUT=30s",
    ] {
        let host = Host::new();
        let line = host.append_config_text(&format!("{text}\n"));
        let out = host.cli_bounded(&["pre-start"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(4), "{text}: {err}");
        let at = format!("{}:{line}: ", host.path("etc/ecs/ecs.config").display());
        assert!(err.contains(&at), "{text}: {err}");
        assert!(
            !host.path("var/lib/ecs-warden").exists(),
            "nothing prepared"
        );
    }
}

#[test]
fn http_proxy_without_a_scheme_means_http() {
    // A proxy stand-in on loopback that records the first request line.
    let proxy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = proxy.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok((mut s, _)) = proxy.accept() {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).into_owned();
            let _ = s.write_all(
                b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = tx.send(head.lines().next().unwrap_or("").to_string());
        }
    });
    let mut host = Host::new();
    host.write_config(&[
        ("HTTP_PROXY", &format!("127.0.0.1:{port}")),
        ("ECS_WARDEN_ALLOW_HTTP", "true"),
    ]);
    host.start();
    host.wait_new_agent(None, Duration::from_secs(20));
    let out = host.cli_bounded(&[
        "update",
        "--source",
        "http://manifest.example/manifest.json",
    ]);
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the proxy saw no request; update: {}", stderr(&out)));
    eprintln!("the proxy saw: {line}");
    assert!(line.contains("manifest.example"), "{line}");
    assert_ne!(out.status.code(), Some(0), "the proxy answered 404");
    assert_eq!(
        environ_of(host.agent_pid().unwrap())
            .get("HTTP_PROXY")
            .map(String::as_str),
        Some(format!("127.0.0.1:{port}").as_str()),
        "the agent gets it as written (Go adds the scheme itself)"
    );
    host.cleanup();
}

#[test]
fn ecs_loglevel_takes_ecs_inits_levels() {
    for level in ["none", "crit", "critical", "verbose"] {
        let host = Host::new();
        host.write_config(&[("ECS_LOGLEVEL", level)]);
        let out = host.cli_bounded(&["pre-start"]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0), "ECS_LOGLEVEL={level}: {err}");
        let log = init_log(&host);
        match level {
            "none" => {
                assert_eq!(err, "", "none: the warden's log is off");
                assert_eq!(log, "", "none: nothing in ecs-init.log");
            }
            "crit" | "critical" => {
                assert!(
                    !err.contains("INFO") && !err.contains("WARN"),
                    "{level}: {err}"
                );
                assert!(!log.contains("level=info"), "{level}: {log}");
            }
            _ => {
                assert!(
                    err.contains("ECS_LOGLEVEL: unknown level \"verbose\""),
                    "{err}"
                );
                assert!(
                    err.contains("INFO"),
                    "unknown means info, as in ecs-init: {err}"
                );
            }
        }
    }
}

#[test]
fn the_wardens_log_is_ecs_init_log_in_its_format() {
    let mut host = Host::new();
    host.start();
    host.wait_new_agent(None, Duration::from_secs(20));
    assert!(host.cli_bounded(&["stop"]).status.success());
    host.wait_exit(Duration::from_secs(20));
    let log = init_log(&host);
    assert!(log.lines().count() >= 3, "{log}");
    for line in log.lines() {
        assert!(is_ecs_init_logfmt(line), "not ecs-init's logfmt: {line:?}");
    }
    assert!(log.contains("level=info "), "{log}");

    // The error a verb dies of is there too, as ecs-init's die() logs it.
    let host = Host::new();
    fs::remove_file(host.path("var/cache/ecs/ecs-agent")).unwrap();
    let out = host.cli_bounded(&["pre-start"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let log = init_log(&host);
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("level=error "))
        .collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(errors[0].contains("no agent build is installed"), "{log}");
}

#[test]
fn an_unwritable_log_is_a_warning_not_a_failure() {
    // Root writes anywhere: a directory where the file goes stops it.
    let mut host = Host::new();
    fs::create_dir_all(host.path("var/log/ecs/ecs-init.log")).unwrap();
    let out = host.cli_bounded(&["pre-start"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err.matches("warning: cannot write the log file").count(),
        1,
        "one warning per process: {err}"
    );
    host.start();
    host.wait_new_agent(None, Duration::from_secs(20));
    assert!(host.log().contains("warning: cannot write the log file"));
    host.cleanup();
}

#[test]
fn a_full_disk_for_the_log_is_a_warning_not_a_failure() {
    // A full file system under var/log/ecs, in a private mount namespace.
    let host = Host::new();
    let dir = host.path("var/log/ecs");
    fs::create_dir_all(&dir).unwrap();
    let script = format!(
        "mount --make-rprivate / && mount -t tmpfs -o size=16k tmpfs {dir} && \
         (dd if=/dev/zero of={dir}/filler bs=1k count=64 2>/dev/null; true) && \
         exec {warden} --root {root} pre-start",
        dir = dir.display(),
        warden = WARDEN,
        root = host.root.display()
    );
    let mut c = Command::new("unshare");
    c.args(["--mount", "--", "sh", "-c", &script]);
    let out = run_bounded(c, Duration::from_secs(60));
    let err = stderr(&out);
    let private = !(err.contains("unshare failed") || err.contains("mount:"));
    let what = format!("a private mount namespace ({err})");
    if !require(
        "a_full_disk_for_the_log",
        private,
        &what,
        "run the tests as root",
    ) {
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("warning: cannot write the log file"), "{err}");
    assert!(
        err.contains("No space left on device") || err.contains("storage full"),
        "{err}"
    );
    assert!(
        !Path::new(&dir).join("ecs-init.log").exists(),
        "the tmpfs went with its namespace"
    );
}

#[test]
fn ebs_task_attach_is_on_when_pre_start_made_its_mount_point() {
    let mut host = Host::new();
    host.write_config(&[("ECS_EBSTA_SUPPORTED", "true")]);
    host.start();
    let pid = host.wait_new_agent(None, Duration::from_secs(20));
    assert_eq!(
        environ_of(pid)
            .get("ECS_EBSTA_SUPPORTED")
            .map(String::as_str),
        Some("false"),
        "no mnt/ecs/ebs (no pre-start): off whatever the config says, as ecs-init"
    );
    host.cleanup();

    let mut host = Host::new();
    assert!(host.cli_bounded(&["pre-start"]).status.success());
    assert!(host.path("mnt/ecs/ebs").is_dir());
    host.start();
    let pid = host.wait_new_agent(None, Duration::from_secs(20));
    assert_eq!(
        environ_of(pid)
            .get("ECS_EBSTA_SUPPORTED")
            .map(String::as_str),
        Some("true"),
        "ecs-init's default once the mount point exists"
    );
    host.cleanup();
}
