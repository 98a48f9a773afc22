//! Helpers for the API tests (`api_cli`, `api_protocol`, `api_agent`), on
//! top of the rest of the harness: signed ECS calls and control calls
//! through the raw client, "nothing changed" fingerprints, timing, and the
//! AWS CLI / boto3 runners.

#![allow(dead_code)]

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use super::sign as sigv4;
use super::*;
use ecs_warden::api::credentials::{self, Credentials};

pub const TARGET_PREFIX: &str = "AmazonEC2ContainerServiceV20141113.";
pub const AMZ_JSON: &str = "application/x-amz-json-1.1";

// ----- hosts ----------------------------------------------------------------

/// Start the warden and wait until the agent registered (has an ARN and
/// the warden's status shows it); returns the instance ARN.
pub fn start_and_register(host: &mut Host) -> String {
    host.start();
    host.wait_agent("1.0.0");
    wait_for(
        "the instance ARN in the status",
        Duration::from_secs(20),
        || {
            status_doc(host)
                .and_then(|d| d["containerInstanceArn"].as_str().map(String::from))
                .filter(|a| a.contains(":container-instance/"))
        },
    )
}

pub fn socket(host: &Host) -> PathBuf {
    host.path("run/ecs-warden/control.sock")
}

pub fn creds(host: &Host) -> Credentials {
    credentials::load_or_create(&host.path("etc/ecs-warden/credentials")).unwrap()
}

/// A stamped build of `version` under `srv/`; its path and SHA-256.
pub fn build(host: &Host, version: &str) -> (PathBuf, String) {
    let p = host.stamp(version, None, &host.path(&format!("srv/agent-{version}")));
    let sha = sha256_hex(&fs::read(&p).unwrap());
    (p, sha)
}

/// A manifest at `srv/manifest.json` with one entry per `(version, url,
/// file)`: the url as given (absolute), size and hash of the file.
pub fn manifest_with_urls(host: &Host, builds: &[(&str, &str, &Path)]) -> String {
    let agents: Vec<Value> = builds
        .iter()
        .map(|(v, url, p)| {
            let bytes = fs::read(p).unwrap();
            json!({
                "version": v,
                "arch": std::env::consts::ARCH,
                "url": url,
                "sha256": sha256_hex(&bytes),
                "size": bytes.len(),
            })
        })
        .collect();
    let p = host.path("srv/manifest.json");
    let tmp = host.path("srv/.manifest.json.tmp");
    fs::write(
        &tmp,
        serde_json::to_vec(&json!({"schemaVersion": 1, "agents": agents})).unwrap(),
    )
    .unwrap();
    fs::rename(tmp, &p).unwrap();
    format!("file://{}", p.display())
}

// ----- ECS calls over the raw client ------------------------------------------

/// The headers of an ECS JSON call to `to` (signed when over TCP).
pub fn ecs_headers(
    to: &To,
    method: &str,
    creds: Option<&Credentials>,
    target: &str,
    content_type: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    let host = match to {
        To::Unix(_) => "localhost".to_string(),
        To::Tcp(port) => format!("127.0.0.1:{port}"),
    };
    let mut headers = vec![
        ("Host".to_string(), host),
        ("X-Amz-Target".to_string(), target.to_string()),
        ("Content-Type".to_string(), content_type.to_string()),
    ];
    if let (To::Tcp(_), Some(c)) = (to, creds) {
        let auth = sigv4::sign(
            method,
            "/",
            "",
            &headers,
            body,
            c,
            "us-west-2",
            SystemTime::now(),
        );
        headers.extend(auth);
    }
    headers
}

/// One ECS JSON call, signed with `creds` when it goes over TCP.
pub fn ecs_call(to: &To, creds: Option<&Credentials>, op: &str, body: &Value) -> Resp {
    let body = serde_json::to_vec(body).unwrap();
    let target = format!("{TARGET_PREFIX}{op}");
    let headers = ecs_headers(to, "POST", creds, &target, AMZ_JSON, &body);
    raw(
        to,
        &request_bytes("POST", "/", &headers, None, &body),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{op} over {to:?}: {e}"))
}

/// A plain JSON call on the control socket.
pub fn control(host: &Host, method: &str, path: &str, body: Option<&Value>) -> Resp {
    let body = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let headers = vec![
        ("Host".to_string(), "localhost".to_string()),
        ("Content-Type".to_string(), "application/json".to_string()),
    ];
    raw(
        &To::Unix(socket(host)),
        &request_bytes(method, path, &headers, None, &body),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// `GET /v1/status` on the control socket (no CLI process in between).
pub fn status_doc(host: &Host) -> Option<Value> {
    let headers = vec![("Host".to_string(), "localhost".to_string())];
    let r = raw(
        &To::Unix(socket(host)),
        &request_bytes("GET", "/v1/status", &headers, None, b""),
        Duration::from_secs(10),
    )
    .ok()?;
    (r.status == 200).then(|| serde_json::from_slice(&r.body).ok())?
}

pub fn metrics_text(host: &Host) -> String {
    let r = control(host, "GET", "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// Wait for the update to reach `state` (panics on FAILED when waiting
/// for something else); the status document.
pub fn wait_update_state(host: &Host, state: &str, timeout: Duration) -> Value {
    let mut last = Value::Null;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(d) = status_doc(host) {
            let s = d["update"]["state"].as_str().unwrap_or("").to_string();
            if s == state {
                return d;
            }
            if s == "FAILED" && state != "FAILED" {
                panic!(
                    "the update FAILED while waiting for {state}: {}\nlog:\n{}",
                    d["update"],
                    host.log()
                );
            }
            last = d;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for update state {state}; last update: {}\nlog:\n{}",
                last["update"],
                host.log()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ----- nothing changed ---------------------------------------------------------

/// What must not move when a request is refused.
#[derive(Debug, PartialEq)]
pub struct Fingerprint {
    pub state_json: Option<Vec<u8>>,
    pub history: Option<Vec<u8>>,
    pub current: Option<PathBuf>,
    pub agent_pid: Option<i64>,
    pub builds: Vec<String>,
}

pub fn fingerprint(host: &Host) -> Fingerprint {
    let mut builds: Vec<String> = fs::read_dir(host.path("var/lib/ecs-warden/agents"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    builds.sort();
    Fingerprint {
        state_json: fs::read(host.path("var/lib/ecs-warden/state.json")).ok(),
        history: fs::read(host.path("var/lib/ecs-warden/history.jsonl")).ok(),
        current: fs::read_link(host.path("var/lib/ecs-warden/agents/current")).ok(),
        agent_pid: status_doc(host).and_then(|d| d["supervisor"]["agentPid"].as_i64()),
        builds,
    }
}

// ----- timing -------------------------------------------------------------------

/// Median and maximum of durations, in milliseconds.
pub fn median_max(samples: &[Duration]) -> (f64, f64) {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = if ms.len() % 2 == 1 {
        ms[ms.len() / 2]
    } else {
        (ms[ms.len() / 2 - 1] + ms[ms.len() / 2]) / 2.0
    };
    (median, *ms.last().unwrap())
}

/// Time 20 `GET /v1/status` and 20 `GET /metrics` on the control socket
/// (each must answer 200); assert median < 100 ms and max < 500 ms, print
/// the figures under `label`, and return the status documents.
pub fn assert_responsive(host: &Host, label: &str) -> Vec<Value> {
    let mut st = Vec::new();
    let mut mt = Vec::new();
    let mut docs = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let r = control(host, "GET", "/v1/status", None);
        st.push(t.elapsed());
        assert_eq!(r.status, 200, "status: {}", r.text());
        docs.push(r.json());
        let t = Instant::now();
        let r = control(host, "GET", "/metrics", None);
        mt.push(t.elapsed());
        assert_eq!(r.status, 200, "metrics: {}", r.text());
    }
    let (sm, sx) = median_max(&st);
    let (mm, mx) = median_max(&mt);
    report(&format!(
        "RESPONSE TIMES [{label}]: status median {sm:.1} ms max {sx:.1} ms; metrics median {mm:.1} ms max {mx:.1} ms (20 calls each)"
    ));
    assert!(
        sm < 100.0 && sx < 500.0,
        "[{label}] status too slow: median {sm:.1} ms, max {sx:.1} ms"
    );
    assert!(
        mm < 100.0 && mx < 500.0,
        "[{label}] metrics too slow: median {mm:.1} ms, max {mx:.1} ms"
    );
    docs
}

/// A line on the real stderr (not captured), and in
/// `$CARGO_TARGET_TMPDIR/api-timings.txt` for the report.
pub fn report(line: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{line}");
    if let Ok(mut f) = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(Path::new(env!("CARGO_TARGET_TMPDIR")).join("api-timings.txt"))
    {
        let _ = writeln!(f, "{line}");
    }
}

// ----- AWS CLI and boto3 --------------------------------------------------------

/// An environment for AWS tools that sees only `creds_file`: `HOME` and
/// the config file are the test's own, every AWS_* variable of ours is
/// dropped, instance metadata is off.
pub fn aws_env(cmd: &mut Command, home: &Path, creds_file: &Path) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(k);
        }
    }
    let config = home.join("aws-config");
    if !config.exists() {
        fs::write(&config, "").unwrap();
    }
    cmd.env("HOME", home)
        .env("AWS_CONFIG_FILE", config)
        .env("AWS_SHARED_CREDENTIALS_FILE", creds_file)
        .env("AWS_DEFAULT_REGION", "us-west-2")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_PAGER", "")
        .env("AWS_MAX_ATTEMPTS", "1")
        .env("AWS_RETRY_MODE", "standard");
}

/// The outcome of one `aws` run.
#[derive(Debug)]
pub struct Aws {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Aws {
    pub fn json(&self) -> Value {
        assert_eq!(self.code, 0, "aws failed: {}\n{}", self.stderr, self.stdout);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("aws output is not JSON ({e}): {}", self.stdout))
    }

    /// Assert it failed with the error `name`.
    pub fn assert_error(&self, name: &str) {
        assert_ne!(
            self.code, 0,
            "aws should have failed with {name}: {}",
            self.stdout
        );
        assert!(
            self.stderr.contains(&format!("An error occurred ({name})")),
            "expected {name}, got: {}",
            self.stderr
        );
    }
}

/// `aws ecs ARGS --endpoint-url http://127.0.0.1:PORT` with `creds_file`.
pub fn aws(home: &Path, creds_file: &Path, port: u16, args: &[&str]) -> Aws {
    let mut cmd = Command::new("aws");
    aws_env(&mut cmd, home, creds_file);
    cmd.arg("ecs")
        .args(args)
        .args(["--endpoint-url", &format!("http://127.0.0.1:{port}")])
        .args(["--output", "json"]);
    let out: Output = cmd.output().expect("run aws");
    Aws {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Run `tests/it/harness/ecs_calls.py` with boto3: each case is `{"op", "params",
/// "expect"?}`; one JSON result per case.
pub fn boto3_calls(home: &Path, creds_file: &Path, port: u16, cases: &[Value]) -> Vec<Value> {
    let mut cmd = Command::new("python3");
    aws_env(&mut cmd, home, creds_file);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/harness/ecs_calls.py"
    ))
    .arg(format!("http://127.0.0.1:{port}"))
    .arg("us-west-2")
    .arg(serde_json::to_string(cases).unwrap());
    let out = cmd.output().expect("run python3");
    assert!(
        out.status.success(),
        "ecs_calls.py failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}
