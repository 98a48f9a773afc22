//! The ECS JSON protocol and the status surfaces, spoken directly over the
//! unix control socket (unsigned) and the loopback TCP port (signed by the
//! tests' signer, `harness/sign.rs`): bad input, concurrency, the status
//! document, the metrics, and how fast status answers while something is
//! slow.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::harness::api::*;
use crate::harness::server::Server;
use crate::harness::*;

/// A host with the API, cluster `prod`, and a manifest offering 1.1.0 (so
/// a request wrongly accepted would start an update and show).
fn host_with_update() -> (Host, u16, String) {
    let mut host = Host::builder().api().build();
    let port = host.api_port();
    let (p11, _) = build(&host, "1.1.0");
    let src = host.file_manifest(&[("1.1.0", &p11)]);
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &src)]);
    let arn = start_and_register(&mut host);
    (host, port, arn)
}

/// One malformed request and what it must get.
struct Case {
    what: &'static str,
    target: String,
    content_type: &'static str,
    method: &'static str,
    body: Vec<u8>,
    status: u16,
    error: &'static str,
    message: &'static str,
}

fn case(
    what: &'static str,
    op: &str,
    body: &str,
    status: u16,
    error: &'static str,
    message: &'static str,
) -> Case {
    Case {
        what,
        target: format!("{TARGET_PREFIX}{op}"),
        content_type: AMZ_JSON,
        method: "POST",
        body: body.as_bytes().to_vec(),
        status,
        error,
        message,
    }
}

fn bad_cases(arn: &str) -> Vec<Case> {
    let mut oversized = format!(r#"{{"cluster": "prod", "tasks": ["{arn}"]}}"#).into_bytes();
    oversized.resize(64 * 1024 + 1, b' ');
    vec![
        case(
            "malformed JSON",
            "DescribeContainerInstances",
            r#"{"containerInstances": ["#,
            400,
            "SerializationException",
            "not valid JSON",
        ),
        case(
            "a list where an object belongs",
            "DescribeTasks",
            r#"["prod"]"#,
            400,
            "SerializationException",
            "must be a JSON object",
        ),
        case(
            "a string where a list belongs",
            "DescribeContainerInstances",
            r#"{"cluster": "prod", "containerInstances": "x"}"#,
            400,
            "SerializationException",
            "containerInstances must be a list of strings, not a string",
        ),
        case(
            "a number where a string belongs",
            "UpdateContainerAgent",
            r#"{"cluster": "prod", "containerInstance": 7}"#,
            400,
            "SerializationException",
            "containerInstance must be a string, not a number",
        ),
        case(
            "numbers in a list of strings",
            "DescribeTasks",
            r#"{"cluster": "prod", "tasks": [1, 2]}"#,
            400,
            "SerializationException",
            "tasks must hold strings, not a number",
        ),
        case(
            "missing containerInstance",
            "UpdateContainerAgent",
            r#"{"cluster": "prod"}"#,
            400,
            "InvalidParameterException",
            "containerInstance is required",
        ),
        case(
            "missing tasks",
            "DescribeTasks",
            r#"{"cluster": "prod"}"#,
            400,
            "InvalidParameterException",
            "tasks is required",
        ),
        case(
            "empty containerInstances",
            "DescribeContainerInstances",
            r#"{"cluster": "prod", "containerInstances": []}"#,
            400,
            "InvalidParameterException",
            "containerInstances must not be empty",
        ),
        case(
            "bad desiredStatus",
            "ListTasks",
            r#"{"cluster": "prod", "desiredStatus": "SLEEPING"}"#,
            400,
            "InvalidParameterException",
            "desiredStatus must be RUNNING, PENDING or STOPPED",
        ),
        case(
            "unknown operation",
            "DeregisterContainerInstance",
            r#"{"cluster": "prod", "containerInstance": "x"}"#,
            400,
            "UnknownOperationException",
            "operation DeregisterContainerInstance is not supported",
        ),
        Case {
            target: "AmazonEC2ContainerServiceV20991231.UpdateContainerAgent".into(),
            ..case(
                "another service version",
                "",
                r#"{"cluster": "prod", "containerInstance": "x"}"#,
                400,
                "UnknownOperationException",
                "is not an AmazonEC2ContainerServiceV20141113.<Operation>",
            )
        },
        Case {
            content_type: "text/plain",
            ..case(
                "wrong Content-Type",
                "UpdateContainerAgent",
                &format!(r#"{{"cluster": "prod", "containerInstance": "{arn}"}}"#),
                400,
                "SerializationException",
                "Content-Type \"text/plain\" is not application/x-amz-json-1.1",
            )
        },
        Case {
            method: "GET",
            ..case(
                "GET instead of POST",
                "DescribeContainerInstances",
                "",
                404,
                "UnknownOperationException",
                "ECS operations are POST /, not GET /",
            )
        },
        Case {
            body: oversized,
            ..case(
                "body over 64 KiB",
                "DescribeTasks",
                "",
                413,
                "RequestEntityTooLarge",
                "request body over 65536 bytes",
            )
        },
    ]
}

/// Every kind of bad input, over both transports, gets its own error
/// (status, `__type`, message) and changes nothing.
#[test]
fn bad_input_gets_its_own_error_and_changes_nothing() {
    let (host, port, arn) = host_with_update();
    let creds = creds(&host);
    let before = fingerprint(&host);
    for to in [To::Unix(socket(&host)), To::Tcp(port)] {
        let mut seen = BTreeSet::new();
        for c in bad_cases(&arn) {
            let headers = ecs_headers(
                &to,
                c.method,
                Some(&creds),
                &c.target,
                c.content_type,
                &c.body,
            );
            let bytes = request_bytes(c.method, "/", &headers, None, &c.body);
            let r = raw(&to, &bytes, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{} over {to:?}: no answer: {e}", c.what));
            let (status, name, message) = r.error();
            assert_eq!(
                (status, name.as_str()),
                (c.status, c.error),
                "{} over {to:?}: {message}",
                c.what
            );
            assert!(
                message.contains(c.message),
                "{} over {to:?}: message {message:?} lacks {:?}",
                c.what,
                c.message
            );
            if c.status != 413 {
                assert_eq!(r.header("Content-Type"), Some(AMZ_JSON), "{}", c.what);
                assert!(r.header("x-amzn-RequestId").is_some(), "{}", c.what);
            }
            assert!(
                seen.insert((name.clone(), message.clone())),
                "{}: the same error as another case: {name}: {message}",
                c.what
            );
        }
    }
    // A client that sends its whole oversized body before reading must
    // still get the 413 (not a reset connection): again and again, and with
    // a body larger than the socket buffers.
    for to in [To::Unix(socket(&host)), To::Tcp(port)] {
        for (i, len) in [64 * 1024 + 1; 10]
            .into_iter()
            .chain([1024 * 1024; 2])
            .enumerate()
        {
            let body = vec![b' '; len];
            let target = format!("{TARGET_PREFIX}DescribeTasks");
            let headers = ecs_headers(&to, "POST", Some(&creds), &target, AMZ_JSON, &body);
            let r = raw(
                &to,
                &request_bytes("POST", "/", &headers, None, &body),
                Duration::from_secs(10),
            )
            .unwrap_or_else(|e| panic!("{len}-byte body #{i} over {to:?}: no answer: {e}"));
            assert_eq!(r.error().1, "RequestEntityTooLarge", "{}", r.text());
            assert_eq!(r.status, 413);
        }
    }

    // Heads that are too large or have too many fields.
    for to in [To::Unix(socket(&host)), To::Tcp(port)] {
        let body = br#"{"cluster": "prod"}"#;
        let target = format!("{TARGET_PREFIX}ListTasks");
        let mut big = ecs_headers(&to, "POST", Some(&creds), &target, AMZ_JSON, body);
        big.push(("X-Padding".into(), "p".repeat(32 * 1024)));
        let r = raw(
            &to,
            &request_bytes("POST", "/", &big, None, body),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("32 KiB head over {to:?}: no answer: {e}"));
        assert_eq!(
            (r.status, r.error().1.as_str()),
            (431, "RequestHeaderFieldsTooLarge"),
            "{}",
            r.text()
        );
        let mut many = ecs_headers(&to, "POST", Some(&creds), &target, AMZ_JSON, body);
        many.extend((0..100).map(|i| (format!("X-Extra-{i}"), "1".to_string())));
        let r = raw(
            &to,
            &request_bytes("POST", "/", &many, None, body),
            Duration::from_secs(10),
        )
        .unwrap_or_else(|e| panic!("100 header fields over {to:?}: no answer: {e}"));
        let (status, name, message) = r.error();
        assert_eq!((status, name.as_str()), (400, "BadRequest"), "{message}");
        assert!(message.contains("too many headers"), "{message}");
    }

    // The control routes refuse bad input too.
    let sock = To::Unix(socket(&host));
    let plain = |method: &str, path: &str, body: &str| {
        let headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        raw(
            &sock,
            &request_bytes(method, path, &headers, None, body.as_bytes()),
            Duration::from_secs(10),
        )
        .unwrap()
        .error()
    };
    let (s, n, m) = plain("POST", "/v1/agent/stage", "{not json");
    assert_eq!((s, n.as_str()), (400, "InvalidParameterException"), "{m}");
    let (s, n, m) = plain("POST", "/v1/agent/stage", r#"{"location": 5}"#);
    assert_eq!((s, n.as_str()), (400, "InvalidParameterException"), "{m}");
    let (s, n, m) = plain("POST", "/v1/agent/perform", r#"{}"#);
    assert_eq!((s, n.as_str()), (400, "InvalidParameterException"), "{m}");
    assert!(m.contains("signature"), "{m}");
    let (s, n, _) = plain("GET", "/v1/agent/stage", "");
    assert_eq!((s, n.as_str()), (405, "MethodNotAllowed"));
    let (s, n, _) = plain("GET", "/v1/nothing-here", "");
    assert_eq!((s, n.as_str()), (404, "NotFound"));
    let (s, n, m) = plain("POST", "/v1/update", r#"{"version": 1}"#);
    assert_eq!((s, n.as_str()), (400, "InvalidParameterException"), "{m}");
    // A request head that is not HTTP.
    let r = raw(
        &sock,
        b"\x16\x03\x01 hello\r\n\r\n",
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(r.error().0, 400);
    assert_eq!(r.error().1, "BadRequest");

    // Unsigned over TCP: refused before anything is parsed.
    let body = br#"{"cluster": "prod", "containerInstance": "x"}"#;
    let headers = ecs_headers(
        &To::Tcp(port),
        "POST",
        None,
        &format!("{TARGET_PREFIX}UpdateContainerAgent"),
        AMZ_JSON,
        body,
    );
    let r = raw(
        &To::Tcp(port),
        &request_bytes("POST", "/", &headers, None, body),
        Duration::from_secs(10),
    )
    .unwrap();
    assert_eq!(
        r.error().1,
        "MissingAuthenticationTokenException",
        "{}",
        r.text()
    );

    assert_eq!(fingerprint(&host), before, "bad input changed the host");
    let st = status_doc(&host).unwrap();
    assert_eq!(st["update"]["state"], Value::Null, "{}", st["update"]);
    assert_eq!(st["supervisor"]["restarts"], 0);
}

/// A client that sends the head and 10 of 100 body bytes and then holds
/// its connection is cut off with 408 after the request deadline; while it
/// holds, status, metrics and ECS calls answer promptly.
#[test]
fn half_sent_request_holds_nobody_up() {
    let (host, port, arn) = host_with_update();
    let creds = creds(&host);
    let before = fingerprint(&host);
    let mut held = Vec::new();
    for to in [To::Unix(socket(&host)), To::Tcp(port)] {
        let body = vec![b' '; 100];
        let headers = ecs_headers(
            &to,
            "POST",
            Some(&creds),
            &format!("{TARGET_PREFIX}UpdateContainerAgent"),
            AMZ_JSON,
            &body,
        );
        let mut bytes = request_bytes("POST", "/", &headers, Some(100), b"");
        bytes.extend_from_slice(b"{\"cluster\"");
        let mut s = Stream::connect(&to).unwrap();
        s.set_timeout(Duration::from_secs(20));
        s.send(&bytes).unwrap();
        held.push((to, s, Instant::now()));
    }

    // (c) a slow client holds a half request.
    assert_responsive(&host, "c: a client holds a half-sent request");
    let t = Instant::now();
    let r = ecs_call(
        &To::Tcp(port),
        Some(&creds),
        "DescribeContainerInstances",
        &json!({"cluster": CLUSTER, "containerInstances": [arn]}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );

    for (to, mut s, sent_at) in held {
        let r = s
            .response()
            .unwrap_or_else(|e| panic!("half request over {to:?}: no answer: {e}"));
        let waited = sent_at.elapsed();
        let (status, name, message) = r.error();
        assert_eq!(
            (status, name.as_str()),
            (408, "RequestTimeout"),
            "{to:?}: {message}"
        );
        assert!(message.contains("not received in time"), "{message}");
        assert!(
            waited < Duration::from_secs(15),
            "cut off only after {waited:?}"
        );
    }
    assert_eq!(
        fingerprint(&host),
        before,
        "a half request changed the host"
    );
    assert_eq!(status_doc(&host).unwrap()["update"]["state"], Value::Null);
}

/// 20 `UpdateContainerAgent` calls at once (10 on the socket, 10 signed on
/// TCP) while the download is slow: exactly one is accepted, 19 get
/// `UpdateInProgressException`; status stays fast during the download; one
/// download, one update.
#[test]
fn twenty_parallel_updates_exactly_one_accepted() {
    let mut host = Host::builder().api().build();
    let port = host.api_port();
    let (p11, _) = build(&host, "1.1.0");
    let size = std::fs::metadata(&p11).unwrap().len();
    let slow = Server::start();
    let slow_url = slow.slow_file("/agent", &p11, true);
    let src = manifest_with_urls(&host, &[("1.1.0", &slow_url, &p11)]);
    host.write_config(&[("ECS_WARDEN_UPDATE_SOURCE", &src)]);
    let arn = start_and_register(&mut host);
    let creds = creds(&host);
    let barrier = Arc::new(Barrier::new(20));
    let threads: Vec<_> = (0..20)
        .map(|i| {
            let to = if i % 2 == 0 {
                To::Unix(socket(&host))
            } else {
                To::Tcp(port)
            };
            let (barrier, creds, arn) = (barrier.clone(), creds.clone(), arn.clone());
            std::thread::spawn(move || {
                let body = json!({"cluster": CLUSTER, "containerInstance": arn});
                barrier.wait();
                ecs_call(&to, Some(&creds), "UpdateContainerAgent", &body)
            })
        })
        .collect();
    let answers: Vec<Resp> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &answers {
        let kind = if r.status == 200 {
            assert_eq!(
                r.json()["containerInstance"]["agentUpdateStatus"],
                "PENDING"
            );
            "accepted".to_string()
        } else {
            let (status, name, message) = r.error();
            assert_eq!(status, 400, "{name}: {message}");
            if name == "UpdateInProgressException" {
                assert!(message.contains("1.1.0"), "{message}");
            }
            name
        };
        *by_kind.entry(kind).or_default() += 1;
    }
    assert_eq!(
        by_kind,
        BTreeMap::from([
            ("accepted".to_string(), 1),
            ("UpdateInProgressException".to_string(), 19)
        ]),
        "{}",
        host.log()
    );

    // (a) status while the download is in progress.
    let docs = assert_responsive(&host, "a: a slow download is in progress");
    for d in &docs {
        assert_eq!(d["update"]["state"], "STAGING", "{}", d["update"]);
        assert_eq!(d["agentUpdateStatus"], "STAGING");
        assert_eq!(d["update"]["bytesTotal"], size);
    }
    wait_for("download progress", Duration::from_secs(10), || {
        let d = status_doc(&host)?;
        (d["update"]["bytesDone"].as_u64()? > 0).then_some(())
    });
    assert!(slow.sent() < size, "the download must still run");

    slow.release();
    wait_update_state(&host, "UPDATED", Duration::from_secs(60));
    host.wait_agent("1.1.0");
    assert_eq!(slow.gets("/agent"), 1, "exactly one download");
    let st = status_doc(&host).unwrap();
    assert_eq!(st["update"]["counters"]["updates"]["UPDATED"], 1);
    assert_eq!(st["update"]["counters"]["updates"]["FAILED"], 0);
}

/// Prometheus text: every line a `# HELP`/`# TYPE` line or `name{labels}
/// value`, each sample's name declared; the samples by `name{labels}`.
fn parse_prometheus(text: &str) -> BTreeMap<String, f64> {
    let mut typed = BTreeSet::new();
    let mut helped = BTreeSet::new();
    let mut samples = BTreeMap::new();
    let name_ok = |n: &str| {
        !n.is_empty()
            && n.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP name text");
            assert!(name_ok(name) && !help.is_empty(), "bad HELP line {line:?}");
            helped.insert(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(name_ok(name), "bad TYPE line {line:?}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "bad TYPE line {line:?}"
            );
            typed.insert(name.to_string());
            continue;
        }
        assert!(!line.starts_with('#'), "stray comment {line:?}");
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = match series.split_once('{') {
            None => series,
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for l in labels.split(',') {
                    let (k, v) = l.split_once('=').expect("label k=v");
                    assert!(name_ok(k), "bad label name in {line:?}");
                    assert!(
                        v.len() >= 2 && v.starts_with('"') && v.ends_with('"'),
                        "label value not quoted in {line:?}"
                    );
                }
                name
            }
        };
        assert!(name_ok(name), "bad metric name in {line:?}");
        assert!(typed.contains(name), "{name} has no # TYPE before it");
        assert!(helped.contains(name), "{name} has no # HELP before it");
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "duplicate series {series}"
        );
    }
    samples
}

fn metric(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series)
        .unwrap_or_else(|| panic!("no series {series} in {m:?}"))
}

/// The status document (ECS `containerInstance` fields plus update and
/// supervisor detail), `ecs-warden status`, and metrics that move after
/// an update and an agent restart.
#[test]
fn status_document_and_metrics_follow_an_update() {
    let (host, _port, arn) = host_with_update();
    let task = host.start_task("web");
    // Status gives the agent 40 ms: on a loaded machine one answer may
    // miss it, so wait for a document with the agent seen.
    let d = wait_for(
        "a status with the agent seen",
        Duration::from_secs(10),
        || status_doc(&host).filter(|d| d["agentConnected"] == true && d["runningTasksCount"] == 1),
    );
    for key in [
        "containerInstanceArn",
        "agentConnected",
        "agentUpdateStatus",
        "versionInfo",
        "runningTasksCount",
        "pendingTasksCount",
        "status",
        "statusReason",
        "update",
        "supervisor",
    ] {
        assert!(d.get(key).is_some(), "status lacks {key}: {d}");
    }
    assert_eq!(d["containerInstanceArn"], arn.as_str());
    assert_eq!(d["agentConnected"], true);
    assert_eq!(d["agentUpdateStatus"], Value::Null, "no update yet");
    assert_eq!(d["versionInfo"]["agentVersion"], "1.0.0");
    let hash = d["versionInfo"]["agentHash"].as_str().unwrap();
    assert!(
        hash.len() == 8 && hash.bytes().all(|c| c.is_ascii_hexdigit()),
        "{hash}"
    );
    assert!(d["versionInfo"].get("dockerVersion").is_some());
    assert_eq!(d["runningTasksCount"], 1);
    assert_eq!(d["pendingTasksCount"], 0);
    assert_eq!(d["status"], "ACTIVE");
    assert_eq!(d["statusReason"], Value::Null);
    assert_eq!(d["supervisor"]["agentState"], "RUNNING");
    let pid0 = d["supervisor"]["agentPid"].as_i64().unwrap();
    assert!(pid0 > 1);
    assert_eq!(d["supervisor"]["restarts"], 0);

    let m0 = parse_prometheus(&metrics_text(&host));
    assert_eq!(metric(&m0, "ecs_warden_agent_up"), 1.0);
    assert_eq!(metric(&m0, "ecs_warden_agent_restarts_total"), 0.0);
    assert_eq!(
        metric(&m0, r#"ecs_warden_updates_total{result="UPDATED"}"#),
        0.0
    );
    assert_eq!(
        metric(&m0, r#"ecs_warden_updates_total{result="FAILED"}"#),
        0.0
    );
    for s in [
        "PENDING", "STAGING", "STAGED", "UPDATING", "UPDATED", "FAILED",
    ] {
        assert_eq!(
            metric(&m0, &format!(r#"ecs_warden_update_state{{state="{s}"}}"#)),
            0.0
        );
    }
    assert_eq!(metric(&m0, "ecs_warden_download_bytes_total"), 0.0);
    assert_eq!(metric(&m0, "ecs_warden_last_update_duration_seconds"), 0.0);

    // An update through the socket's ECS protocol.
    let r = ecs_call(
        &To::Unix(socket(&host)),
        None,
        "UpdateContainerAgent",
        &json!({"cluster": CLUSTER, "containerInstance": arn}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    wait_update_state(&host, "UPDATED", Duration::from_secs(60));
    host.wait_agent("1.1.0");
    let d = wait_for("connected on 1.1.0", Duration::from_secs(10), || {
        status_doc(&host).filter(|d| {
            d["agentConnected"] == true
                && d["versionInfo"]["agentVersion"] == "1.1.0"
                && d["runningTasksCount"] == 1
        })
    });
    assert_eq!(d["agentUpdateStatus"], "UPDATED");
    assert_eq!(d["versionInfo"]["agentHash"].as_str().unwrap().len(), 8);
    assert_ne!(d["versionInfo"]["agentHash"], hash);
    assert_eq!(d["runningTasksCount"], 1);
    let u = &d["update"];
    assert_eq!(u["state"], "UPDATED");
    assert_eq!(u["target"], "1.1.0");
    assert_eq!(u["previousVersion"], "1.0.0");
    assert_eq!(u["origin"], "api");
    assert_eq!(u["tasksBefore"], 1);
    assert!(!u["history"].as_array().unwrap().is_empty(), "{u}");
    assert_ne!(d["supervisor"]["agentPid"], pid0);
    assert_eq!(d["supervisor"]["agentVersion"], "1.1.0");

    let size = std::fs::metadata(host.path("srv/agent-1.1.0"))
        .unwrap()
        .len() as f64;
    let m1 = parse_prometheus(&metrics_text(&host));
    assert_eq!(metric(&m1, "ecs_warden_agent_up"), 1.0);
    assert_eq!(
        metric(&m1, r#"ecs_warden_updates_total{result="UPDATED"}"#),
        1.0
    );
    assert_eq!(
        metric(&m1, r#"ecs_warden_updates_total{result="FAILED"}"#),
        0.0
    );
    assert_eq!(
        metric(&m1, r#"ecs_warden_update_state{state="UPDATED"}"#),
        1.0
    );
    assert_eq!(
        metric(&m1, r#"ecs_warden_update_state{state="STAGING"}"#),
        0.0
    );
    assert_eq!(metric(&m1, "ecs_warden_download_bytes_total"), size);
    let took = metric(&m1, "ecs_warden_last_update_duration_seconds");
    assert!(took > 0.0 && took < 60.0, "last update took {took} s");

    // The agent dies: one restart, counted.
    let pid1 = d["supervisor"]["agentPid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(pid1), Signal::SIGKILL).unwrap();
    wait_for("the agent restarted", Duration::from_secs(20), || {
        let d = status_doc(&host)?;
        let pid = d["supervisor"]["agentPid"].as_i64()?;
        (pid != pid1 as i64 && d["supervisor"]["agentState"] == "RUNNING").then_some(())
    });
    let m2 = parse_prometheus(&metrics_text(&host));
    assert_eq!(
        metric(&m2, "ecs_warden_agent_restarts_total"),
        metric(&m1, "ecs_warden_agent_restarts_total") + 1.0
    );
    assert_eq!(metric(&m2, "ecs_warden_agent_up"), 1.0);

    // `ecs-warden status`: a short summary for people.
    host.wait_agent("1.1.0");
    let out = host.cli(&["status"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().count() <= 10, "{text}");
    assert!(text.contains("agent:    RUNNING 1.1.0 (pid "), "{text}");
    assert!(text.contains(&format!("instance: {arn}")), "{text}");
    assert!(text.contains("tasks:    1 running"), "{text}");
    assert!(text.contains("update:   UPDATED -> 1.1.0"), "{text}");
    assert!(text.contains("restarts: "), "{text}");
    assert!(!text.contains('{'), "not JSON: {text}");
    let _ = task;
}

/// Stops the agent with SIGSTOP; SIGCONT when dropped.
struct Frozen(i32);

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

/// (b) A stopped agent (SIGSTOP) cannot slow status down: the
/// introspection call times out quickly and shows as disconnected.
#[test]
fn status_stays_fast_with_a_stopped_agent() {
    let (host, _port, arn) = host_with_update();
    host.start_task("web");
    let pid = status_doc(&host).unwrap()["supervisor"]["agentPid"]
        .as_i64()
        .unwrap() as i32;
    let frozen = Frozen(pid);
    kill(Pid::from_raw(pid), Signal::SIGSTOP).unwrap();
    let docs = assert_responsive(&host, "b: the agent is stopped (SIGSTOP)");
    for d in &docs {
        assert_eq!(d["agentConnected"], false, "{d}");
        assert_eq!(d["supervisor"]["agentState"], "RUNNING");
        assert_eq!(d["supervisor"]["agentPid"], pid);
        let reason = d["statusReason"].as_str().unwrap_or("");
        assert!(reason.contains("does not answer"), "{reason}");
        assert_eq!(d["containerInstanceArn"], arn.as_str(), "the last one seen");
        assert_eq!(d["runningTasksCount"], 1, "the task still runs: {d}");
    }
    // ECS calls that need the agent's tasks give it 1 s, then fail and
    // say why.
    let t = Instant::now();
    let r = ecs_call(
        &To::Unix(socket(&host)),
        None,
        "ListTasks",
        &json!({"cluster": CLUSTER}),
    );
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let (status, name, message) = r.error();
    assert_eq!(
        (status, name.as_str()),
        (500, "ServerException"),
        "{message}"
    );
    assert!(message.contains("introspection"), "{message}");

    // Hung for a moment only: ListTasks waits for the agent and answers.
    let sock = socket(&host);
    let call = std::thread::spawn(move || {
        let t = Instant::now();
        let r = ecs_call(
            &To::Unix(sock),
            None,
            "ListTasks",
            &json!({"cluster": CLUSTER}),
        );
        (r, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300)); // the agent's hiccup
    drop(frozen);
    let (r, took) = call.join().unwrap();
    assert_eq!(r.status, 200, "after {took:?}: {}", r.text());
    assert_eq!(r.json()["taskArns"].as_array().unwrap().len(), 1);
    assert!(took >= Duration::from_millis(250), "{took:?}");

    let d = wait_for("the agent answers again", Duration::from_secs(10), || {
        status_doc(&host).filter(|d| d["agentConnected"] == true)
    });
    assert_eq!(
        d["supervisor"]["agentPid"], pid,
        "the agent was not replaced"
    );
    assert_eq!(d["runningTasksCount"], 1);
    assert_eq!(d["statusReason"], Value::Null);
}
