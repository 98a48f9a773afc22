//! The control socket cannot be locked out: while 200 connections are held
//! open against it (idle sockets, slowloris heads that dribble a byte a
//! second, and `update --source` calls whose manifest trickles), and the
//! flood reconnects whatever the warden cuts off, `ecs-warden status`
//! answers within 1 s and `ecs-warden stop` works. And every fetch of a
//! manifest, and every `HEAD` probe of a build, ends by an overall
//! deadline however slowly the server trickles.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::server::{Fault, Server};
use crate::harness::*;
use serde_json::json;

const IDLE: usize = 68;
const SLOWLORIS: usize = 68;
const UPDATES: usize = 64;

/// A manifest that trickles one byte a second (it would take minutes).
fn trickling_manifest(srv: &Server) -> String {
    let doc = json!({"schemaVersion": 1, "agents": [], "padding": "x".repeat(300)});
    let url = srv.manifest(&doc);
    srv.script(
        "/manifest.json",
        &[],
        Fault::Dribble {
            chunk: 1,
            pause: Duration::from_secs(1),
        },
    );
    url
}

/// Hold one connection to `sock` until `stop`, reconnecting (after a short
/// pause) whenever the warden closes it. `dribble`: send a request head a
/// byte a second that never ends; else send nothing at all.
fn hold(sock: PathBuf, dribble: bool, stop: Arc<AtomicBool>, cut: Arc<AtomicUsize>) {
    let head = b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\nX-Slow: ";
    while !stop.load(Ordering::SeqCst) {
        let Ok(mut s) = UnixStream::connect(&sock) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut sent = 0usize;
        let mut next = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            if dribble && Instant::now() >= next {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                if s.write_all(&[byte]).is_err() {
                    break;
                }
                sent += 1;
                next += Duration::from_secs(1);
            }
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => {} // an answer (408, 503): the close follows
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
        }
        cut.fetch_add(1, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Keep `UPDATES` `update --source URL` calls running until `stop`,
/// starting a new one whenever one ends; returns how each ended.
fn keep_updating(
    host_root: PathBuf,
    url: String,
    stop: Arc<AtomicBool>,
) -> Vec<(Option<i32>, String)> {
    let spawn = || {
        std::process::Command::new(WARDEN)
            .arg("--root")
            .arg(&host_root)
            .args(["update", "--source", &url])
            .env_remove("ECS_WARDEN_ROOT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut running: Vec<Child> = (0..UPDATES).map(|_| spawn()).collect();
    let mut ended = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        for c in running.iter_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                let mut err = String::new();
                let _ = c.stderr.take().unwrap().read_to_string(&mut err);
                ended.push((st.code(), err));
                *c = spawn();
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for mut c in running {
        let _ = c.kill();
        let _ = c.wait();
    }
    ended
}

fn threads_of(pid: i32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn status_and_stop_answer_through_a_flood_of_200_connections() {
    let srv = Server::start();
    let url = trickling_manifest(&srv);
    let mut host = Host::builder().small().build();
    host.start();
    host.wait_agent("1.0.0");
    let sock = host.path("run/ecs-warden/control.sock");
    let warden = host.warden_pid();

    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicUsize::new(0));
    let mut holders = Vec::new();
    for i in 0..IDLE + SLOWLORIS {
        let (sock, stop, cut) = (sock.clone(), stop.clone(), cut.clone());
        holders.push(std::thread::spawn(move || hold(sock, i >= IDLE, stop, cut)));
    }
    let updates = {
        let (root, url, stop) = (host.root.clone(), url.clone(), stop.clone());
        std::thread::spawn(move || keep_updating(root, url, stop))
    };
    // Let the flood build up: every connection open, the update calls
    // waiting on their manifest.
    std::thread::sleep(Duration::from_secs(3));
    let threads_flooded = threads_of(warden);
    let fds_flooded = open_fds(warden);

    let mut took = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let out = run_bounded(
            {
                let mut c = host.cmd();
                c.args(["status", "--json"]);
                c
            },
            Duration::from_secs(20),
        );
        let dt = t.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(0),
            "status during the flood: {stderr}"
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["supervisor"]["agentState"], "RUNNING");
        took.push(dt);
        std::thread::sleep(Duration::from_millis(200));
    }
    let slowest = took.iter().max().unwrap();
    eprintln!(
        "flood: status took {:?} at most ({:?}); warden threads {threads_flooded}, fds {fds_flooded}; {} flood connections cut so far",
        slowest,
        took,
        cut.load(Ordering::SeqCst)
    );
    assert!(
        *slowest < Duration::from_secs(1),
        "status answers within 1 s during the flood: {took:?}"
    );
    // The flood is bounded on the warden's side.
    assert!(threads_flooded < 400, "{threads_flooded} threads");
    assert!(fds_flooded < 600, "{fds_flooded} open descriptors");

    // stop works during the flood.
    let t = Instant::now();
    let out = run_bounded(
        {
            let mut c = host.cmd();
            c.arg("stop");
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stop during the flood: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(host.wait_exit(Duration::from_secs(10)), 0);
    eprintln!("flood: stop took {:?}", t.elapsed());
    assert!(host.agent_processes().is_empty(), "the agent was stopped");

    stop.store(true, Ordering::SeqCst);
    for h in holders {
        h.join().unwrap();
    }
    let ended = updates.join().unwrap();
    // An update call that ended before the stop got an answer: the
    // manifest's deadline, or "busy" (503), never a broken pipe.
    for (code, err) in &ended {
        assert!(!err.contains("Broken pipe"), "{code:?}: {err}");
        assert!(!err.contains("reset by peer"), "{code:?}: {err}");
    }
    let mut kinds = std::collections::BTreeMap::new();
    for (code, err) in &ended {
        let head: String = err.chars().take(90).collect();
        *kinds.entry((*code, head)).or_insert(0) += 1;
    }
    eprintln!(
        "flood: {} update calls ended during it: {kinds:#?}",
        ended.len()
    );
}

/// A manifest that trickles, and a build whose `HEAD` answer trickles,
/// end at the deadline (here connect 1 s + read 2 s = 3 s), not when the
/// server is done.
#[test]
fn a_trickling_manifest_or_head_probe_ends_by_a_deadline() {
    let srv = Server::start();
    let url = trickling_manifest(&srv);
    let mut host = Host::builder().small().build();
    host.write_config(&[
        ("ECS_WARDEN_DOWNLOAD_CONNECT_TIMEOUT", "1s"),
        ("ECS_WARDEN_DOWNLOAD_READ_TIMEOUT", "2s"),
    ]);
    host.start();
    host.wait_agent("1.0.0");

    let t = Instant::now();
    let ran = host.run(&["update", "--source", &url]);
    let took = t.elapsed();
    eprintln!("trickling manifest: {took:?}: {}", ran.stderr.trim());
    assert_eq!(ran.code, 13, "{ran:?}");
    assert!(ran.stderr.contains("manifest"), "{ran:?}");
    assert!(ran.stderr.contains("3s"), "names the deadline: {ran:?}");
    assert!(
        took < Duration::from_secs(8),
        "the fetch ended at its deadline: {took:?}"
    );

    // A HEAD answer that dribbles its head a byte every 300 ms.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    let trickler = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        while !d2.load(Ordering::SeqCst) {
            let Ok((mut c, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
            for b in head {
                if d2.load(Ordering::SeqCst) || c.write_all(&[*b]).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(300));
            }
        }
    });
    let body = json!({
        "location": format!("http://127.0.0.1:{port}/agents/1.1.0"),
        "signature": "0".repeat(64),
    })
    .to_string();
    let req = format!(
        "POST /v1/agent/stage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = UnixStream::connect(host.path("run/ecs-warden/control.sock")).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let t = Instant::now();
    let u = host.wait_update_end(Duration::from_secs(60));
    let took = t.elapsed();
    done.store(true, Ordering::SeqCst);
    trickler.join().unwrap();
    assert_eq!(u["state"], "FAILED", "{u:#}");
    let msg = u["error"]["message"].as_str().unwrap_or_default();
    eprintln!("trickling HEAD: {took:?}: {msg}");
    assert!(msg.contains("3s"), "names the deadline: {u:#}");
    assert!(
        took < Duration::from_secs(10),
        "the probe ended at its deadline: {took:?}"
    );
}
