//! The host network for tasks (`pre-start`/`post-stop`), through the real
//! binary and the real `iptables`/`ip6tables`/`ip`, each test in network
//! namespaces it makes itself. The machine's own tables and sysctls are
//! never touched: every namespace is checked to differ from the test's own
//! before anything runs in it, and the warden reaches `/proc` only through
//! `ROOT/proc`, a link the tests create for the warden to follow from inside
//! its namespace (net sysctls are per namespace).
//!
//! Traffic is checked with small listeners standing in for the agent's
//! ports (51678 introspection, 51679 credentials), served from threads that
//! `setns(2)` into a namespace, and clients in a second namespace joined by
//! a veth pair (another host, or a task).

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::harness::*;

// ---- namespaces ----------------------------------------------------------

/// A network namespace held open by a `sleep` (never named under
/// `/run/netns`, so nothing on the machine changes), with lo up.
struct Netns {
    holder: Child,
    path: PathBuf,
}

impl Netns {
    fn new() -> Result<Netns, String> {
        let mut holder = Command::new("unshare")
            .args(["--net", "--", "sh", "-c", "echo ready; exec sleep 3600"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let mut out = holder.stdout.take().unwrap();
        let mut ready = [0u8; 6];
        if out.read_exact(&mut ready).is_err() {
            let _ = holder.kill();
            let mut err = String::new();
            let _ = holder.stderr.take().unwrap().read_to_string(&mut err);
            let _ = holder.wait();
            return Err(format!("unshare --net failed: {}", err.trim()));
        }
        let path = PathBuf::from(format!("/proc/{}/ns/net", holder.id()));
        let ns = Netns { holder, path };
        let mine = fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(
            fs::read_link(&ns.path).unwrap(),
            mine,
            "the holder must be in a new network namespace"
        );
        ns.sh("ip link set lo up");
        Ok(ns)
    }

    fn pid(&self) -> u32 {
        self.holder.id()
    }

    /// `nsenter --net=NS cmd...`.
    fn command(&self, program: &str) -> Command {
        // By its path: a test may give the warden a PATH without it.
        let mut c = Command::new(which("nsenter").expect("nsenter"));
        c.arg(format!("--net={}", self.path.display()))
            .arg("--")
            .arg(program);
        c
    }

    fn try_sh(&self, script: &str) -> Output {
        let mut c = self.command("sh");
        c.args(["-c", script]);
        run_bounded(c, Duration::from_secs(30))
    }

    /// Run a shell script in the namespace; its stdout. Panics on failure.
    fn sh(&self, script: &str) -> String {
        let out = self.try_sh(script);
        assert!(
            out.status.success(),
            "in netns: {script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn sysctl(&self, key: &str) -> String {
        self.sh(&format!("cat /proc/sys/{}", key.replace('.', "/")))
            .trim()
            .to_string()
    }

    /// Every table of `tool` (`iptables-save`, `ip6tables-save`), without
    /// comments and counters, and without tables that hold nothing (a table
    /// our rules made appear, empty again after post-stop, is no change).
    fn tables(&self, tool: &str) -> String {
        normalize(&self.sh(tool))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

fn normalize(saved: &str) -> String {
    let mut out = String::new();
    let mut table: Vec<String> = Vec::new();
    for line in saved.lines() {
        if line.starts_with('#') {
            continue;
        }
        let line = match line.rfind(" [") {
            Some(i) if line.starts_with(':') => line[..i].to_string(),
            _ => line.to_string(),
        };
        table.push(line.clone());
        if line == "COMMIT" {
            let holds = table
                .iter()
                .any(|l| l.starts_with("-A") || (l.starts_with(':') && !l.ends_with(" ACCEPT")));
            if holds {
                out.push_str(&table.join("\n"));
                out.push('\n');
            }
            table.clear();
        }
    }
    out
}

/// Two namespaces or a loud skip (a failure in CI).
fn netns_or_skip(test: &str, n: usize) -> Option<Vec<Netns>> {
    let made: Result<Vec<Netns>, String> = (0..n).map(|_| Netns::new()).collect();
    let tools = ["nsenter", "ip", "iptables-save", "ip6tables-save"]
        .iter()
        .find(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .map(|o| !o.status.success())
                .unwrap_or(true)
        })
        .map(|t| format!("{t} is not installed (scripts/setup.sh installs it)"));
    let why = match (made, tools) {
        (Ok(v), None) => return Some(v),
        (_, Some(t)) => t,
        (Err(e), None) => e,
    };
    let what = format!("network namespaces ({why})");
    require(
        test,
        false,
        &what,
        "run the tests as root; scripts/setup.sh",
    );
    None
}

/// Join `a` and `b` with a veth pair: `a` is 192.0.2.1 / fd00:ec5::1,
/// `b` is .2 / ::2 (documentation and ULA ranges, inside the namespaces
/// only).
fn veth(a: &Netns, b: &Netns) {
    a.sh(&format!(
        "ip link add vh type veth peer name vo netns {} && \
         ip addr add 192.0.2.1/24 dev vh && ip -6 addr add fd00:ec5::1/64 dev vh nodad && \
         ip link set vh up",
        b.pid()
    ));
    b.sh(
        "ip addr add 192.0.2.2/24 dev vo && ip -6 addr add fd00:ec5::2/64 dev vo nodad && \
         ip link set vo up",
    );
}

// ---- listeners and clients in a namespace --------------------------------

/// A tiny HTTP responder bound in a namespace, answering `tag`.
struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn enter(ns: &Path) {
    let f = File::open(ns).unwrap();
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

fn listen(ns: &Netns, addr: &str, tag: &'static str) -> Listener {
    let path = ns.path.clone();
    let addr: SocketAddr = addr.parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let flag = stop.clone();
    let thread = std::thread::spawn(move || {
        enter(&path);
        let l = TcpListener::bind(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !flag.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((mut s, _)) => {
                    let _ = s.set_nonblocking(false);
                    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let _ = s.write_all(
                        format!(
                            "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{tag}",
                            tag.len()
                        )
                        .as_bytes(),
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("listener ready");
    Listener {
        stop,
        thread: Some(thread),
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// GET / from inside `ns`: the body, or why not (a DROP is a timeout).
fn fetch(ns: &Netns, addr: &str) -> Result<String, String> {
    let path = ns.path.clone();
    let addr: SocketAddr = addr.parse().unwrap();
    std::thread::spawn(move || {
        enter(&path);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(1500))
            .map_err(|e| format!("{:?}: {e}", e.kind()))?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(b"GET / HTTP/1.0\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        Ok(text.split("\r\n\r\n").nth(1).unwrap_or("").to_string())
    })
    .join()
    .unwrap()
}

fn assert_answers(ns: &Netns, addr: &str, tag: &str, what: &str) {
    assert_eq!(fetch(ns, addr).as_deref(), Ok(tag), "{what}: {addr}");
}

fn assert_dropped(ns: &Netns, addr: &str, what: &str) {
    match fetch(ns, addr) {
        Err(e) if e.starts_with("TimedOut") => {}
        other => panic!("{what}: {addr} should be dropped (time out), got {other:?}"),
    }
}

// ---- the warden in a namespace -------------------------------------------

/// A host root whose `proc` is the namespace's (`ROOT/proc -> /proc`, read
/// by the warden from inside `ns`).
fn host_in(config: &[(&str, &str)]) -> Host {
    let host = Host::new();
    std::os::unix::fs::symlink("/proc", host.path("proc")).unwrap();
    host.write_config(config);
    host
}

fn warden(ns: &Netns, host: &Host, args: &[&str]) -> Output {
    warden_with(ns, host, args, |_| {})
}

fn warden_with(ns: &Netns, host: &Host, args: &[&str], f: impl FnOnce(&mut Command)) -> Output {
    let mut c = ns.command(WARDEN);
    c.arg("--root").arg(&host.root).args(args);
    c.env_remove("ECS_WARDEN_ROOT").env_remove("NOTIFY_SOCKET");
    f(&mut c);
    run_bounded(c, Duration::from_secs(60))
}

fn ok(out: &Output, what: &str) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{what}: stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What `iptables-save` shows of ours after `pre-start` with the default
/// config, in its own normalized spelling.
const OURS_V4: &[&str] = &[
    ":ECS-WARDEN-INPUT -",
    "-A INPUT -j ECS-WARDEN-INPUT",
    "-A ECS-WARDEN-INPUT -i docker0 -p tcp -m tcp --dport 51678 -j ACCEPT",
    "-A ECS-WARDEN-INPUT ! -i lo -p tcp -m tcp --dport 51678 -j DROP",
    "-A ECS-WARDEN-INPUT ! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP",
    ":ECS-WARDEN-OUTPUT -",
    ":ECS-WARDEN-PREROUTING -",
    "-A PREROUTING -j ECS-WARDEN-PREROUTING",
    "-A OUTPUT -j ECS-WARDEN-OUTPUT",
    "-A ECS-WARDEN-OUTPUT -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j REDIRECT --to-ports 51679",
    "-A ECS-WARDEN-PREROUTING -d 169.254.170.2/32 -p tcp -m tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679",
];
const OURS_V6: &[&str] = &[
    ":ECS-WARDEN-INPUT -",
    "-A INPUT -j ECS-WARDEN-INPUT",
    "-A ECS-WARDEN-INPUT -i docker0 -p tcp -m tcp --dport 51678 -j ACCEPT",
    "-A ECS-WARDEN-INPUT ! -i lo -p tcp -m tcp --dport 51678 -j DROP",
];

/// Every line of ours appears exactly once, and nothing else of ours.
fn assert_ours_once(saved: &str, want: &[&str], what: &str) {
    let ours: Vec<&str> = saved.lines().filter(|l| l.contains("ECS-WARDEN")).collect();
    for w in want {
        let n = ours.iter().filter(|l| *l == w).count();
        assert_eq!(n, 1, "{what}: {w:?} appears {n} times in:\n{saved}");
    }
    assert_eq!(ours.len(), want.len(), "{what}: exactly ours:\n{saved}");
}

/// Rules that are not ours, set up before the warden runs: they must stay.
fn foreign_rules(ns: &Netns) {
    ns.sh("iptables -A INPUT -p tcp --dport 22 -j ACCEPT && \
         iptables -t nat -A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE && \
         ip6tables -A INPUT -p tcp --dport 22 -j ACCEPT");
}

// ---- tests ---------------------------------------------------------------

#[test]
fn pre_start_twice_then_post_stop_restores_the_tables_and_sysctl() {
    let Some(ns) = netns_or_skip("pre_start_twice_then_post_stop", 1) else {
        return;
    };
    let ns = &ns[0];
    foreign_rules(ns);
    let before4 = ns.tables("iptables-save");
    let before6 = ns.tables("ip6tables-save");
    assert_eq!(ns.sysctl("net.ipv4.conf.all.route_localnet"), "0");
    let host = host_in(&[]);

    for i in 1..=2 {
        let said = ok(&warden(ns, &host, &["pre-start"]), "pre-start");
        assert!(
            said.contains("host network: net.ipv4.conf.all.route_localnet=1"),
            "#{i}: {said}"
        );
    }
    let after4 = ns.sh("iptables-save");
    let after6 = ns.sh("ip6tables-save");
    eprintln!("iptables-save after two pre-starts:\n{after4}\nip6tables-save:\n{after6}");
    let after4 = normalize(&after4);
    let after6 = normalize(&after6);
    assert_ours_once(&after4, OURS_V4, "IPv4");
    assert_ours_once(&after6, OURS_V6, "IPv6");
    for foreign in [
        "-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT",
        "-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE",
    ] {
        assert!(after4.contains(foreign), "{foreign} kept:\n{after4}");
    }
    let input: Vec<&str> = after4
        .lines()
        .filter(|l| l.starts_with("-A INPUT "))
        .collect();
    assert_eq!(
        input[0], "-A INPUT -j ECS-WARDEN-INPUT",
        "our jump is first, as ecs-init inserts"
    );
    assert_eq!(ns.sysctl("net.ipv4.conf.all.route_localnet"), "1");
    // No IPv4 default route here: ecs-init's IPv6-only case.
    assert!(ns
        .sh("ip -4 route show")
        .contains("169.254.170.2 dev lo scope link"));
    assert!(host.path("mnt/ecs/ebs").is_dir(), "the EBS mount point");
    assert!(host.path("run/ecs-warden/hostnet.json").is_file());

    let t = Instant::now();
    let said = ok(&warden(ns, &host, &["post-stop"]), "post-stop");
    eprintln!("post-stop took {:?}: {said}", t.elapsed());
    let end4 = ns.sh("iptables-save");
    let end6 = ns.sh("ip6tables-save");
    eprintln!("iptables-save after post-stop:\n{end4}\nip6tables-save:\n{end6}");
    assert_eq!(normalize(&end4), before4, "IPv4 tables as before");
    assert_eq!(normalize(&end6), before6, "IPv6 tables as before");
    assert_eq!(
        ns.sysctl("net.ipv4.conf.all.route_localnet"),
        "0",
        "restored"
    );
    assert!(
        !ns.sh("ip -4 route show").contains("169.254.170.2"),
        "route removed"
    );
    assert!(!host.path("run/ecs-warden/hostnet.json").exists());

    let said = ok(&warden(ns, &host, &["post-stop"]), "a second post-stop");
    assert!(said.contains("host network: nothing to undo"), "{said}");
    assert_eq!(normalize(&ns.sh("iptables-save")), before4);
}

#[test]
fn ten_pre_starts_one_copy_and_config_changes_take_effect() {
    let Some(ns) = netns_or_skip("ten_pre_starts_one_copy", 1) else {
        return;
    };
    let ns = &ns[0];
    // A value other than the kernel default, and a default route: the
    // record keeps the value from before the first pre-start, and no lo
    // route is added on a host with IPv4.
    ns.sh("echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet && \
         ip link add d0 type veth peer name d1 && ip addr add 198.51.100.1/24 dev d0 && \
         ip link set d0 up && ip link set d1 up && ip route add default via 198.51.100.254");
    let host = host_in(&[]);
    for _ in 0..10 {
        ok(&warden(ns, &host, &["pre-start"]), "pre-start");
    }
    assert_ours_once(&ns.tables("iptables-save"), OURS_V4, "IPv4 after 10");
    assert_ours_once(&ns.tables("ip6tables-save"), OURS_V6, "IPv6 after 10");
    assert!(
        !ns.sh("ip -4 route show").contains("169.254.170.2"),
        "{}",
        ns.sh("ip route")
    );

    // ecs-init#360: a rule the config turned off goes on the next pre-start.
    host.write_config(&[("ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS", "true")]);
    ok(
        &warden(ns, &host, &["pre-start"]),
        "pre-start, off-host access allowed",
    );
    let v4 = ns.tables("iptables-save");
    assert!(!v4.contains("51678"), "{v4}");
    assert!(v4.contains("127.0.0.0/8"), "the martian filter stays: {v4}");
    assert!(
        !ns.tables("ip6tables-save").contains("ECS-WARDEN"),
        "nothing left for IPv6"
    );

    host.write_config(&[("ECS_SKIP_LOCALHOST_TRAFFIC_FILTER", "true")]);
    ok(
        &warden(ns, &host, &["pre-start"]),
        "pre-start, no martian filter",
    );
    let v4 = ns.tables("iptables-save");
    assert!(!v4.contains("ECS-WARDEN-INPUT"), "filter chain gone: {v4}");
    assert!(v4.contains("ECS-WARDEN-PREROUTING"), "{v4}");

    host.write_config(&[
        ("ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS", "false"),
        ("ECS_SKIP_LOCALHOST_TRAFFIC_FILTER", "false"),
    ]);
    ok(
        &warden(ns, &host, &["pre-start"]),
        "pre-start, back to defaults",
    );
    assert_ours_once(&ns.tables("iptables-save"), OURS_V4, "IPv4 back");
    assert_ours_once(&ns.tables("ip6tables-save"), OURS_V6, "IPv6 back");

    ok(&warden(ns, &host, &["post-stop"]), "post-stop");
    assert_eq!(
        ns.sysctl("net.ipv4.conf.all.route_localnet"),
        "1",
        "the value from before the first pre-start, not ecs-init's default"
    );
    assert!(!ns
        .sh("iptables-save; ip6tables-save")
        .contains("ECS-WARDEN"));
}

#[test]
fn introspection_is_closed_to_other_hosts_and_open_locally() {
    let Some(v) = netns_or_skip("introspection_is_closed_to_other_hosts", 2) else {
        return;
    };
    let (ns, other) = (&v[0], &v[1]);
    veth(ns, other);
    // The real agent listens on *:51678 (both families).
    let _agent = listen(ns, "[::]:51678", "introspection");
    let v4 = "192.0.2.1:51678";
    let v6 = "[fd00:ec5::1]:51678";
    assert_answers(
        other,
        v4,
        "introspection",
        "before pre-start, the other host",
    );
    assert_answers(other, v6, "introspection", "before pre-start, over IPv6");

    let host = host_in(&[]);
    ok(&warden(ns, &host, &["pre-start"]), "pre-start");
    assert_dropped(other, v4, "the other host over IPv4");
    assert_dropped(other, v6, "the other host over IPv6");
    assert_answers(ns, "127.0.0.1:51678", "introspection", "locally");
    assert_answers(ns, "[::1]:51678", "introspection", "locally over IPv6");

    host.write_config(&[("ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS", "true")]);
    ok(
        &warden(ns, &host, &["pre-start"]),
        "pre-start, off-host access allowed",
    );
    assert_answers(other, v4, "introspection", "allowed, IPv4");
    assert_answers(other, v6, "introspection", "allowed, IPv6");

    host.write_config(&[("ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS", "false")]);
    ok(
        &warden(ns, &host, &["pre-start"]),
        "pre-start, closed again",
    );
    assert_dropped(other, v4, "closed again");
    ok(&warden(ns, &host, &["post-stop"]), "post-stop");
    assert_answers(other, v4, "introspection", "after post-stop");
}

#[test]
fn tasks_reach_the_credentials_endpoint_through_redirect_and_dnat() {
    let Some(v) = netns_or_skip("tasks_reach_the_credentials_endpoint", 2) else {
        return;
    };
    let (ns, task) = (&v[0], &v[1]);
    veth(ns, task);
    // A task in bridge mode: its route to 169.254.170.2 is the host.
    task.sh("ip route add 169.254.170.2/32 via 192.0.2.1");
    let _agent = listen(ns, "127.0.0.1:51679", "credentials");
    let endpoint = "169.254.170.2:80";
    assert!(
        fetch(task, endpoint).is_err(),
        "nothing routes it before pre-start"
    );

    let host = host_in(&[]);
    ok(&warden(ns, &host, &["pre-start"]), "pre-start");
    assert_answers(
        ns,
        endpoint,
        "credentials",
        "a host-network task (OUTPUT REDIRECT)",
    );
    assert_answers(
        task,
        endpoint,
        "credentials",
        "a bridge task (PREROUTING DNAT)",
    );

    ok(&warden(ns, &host, &["post-stop"]), "post-stop");
    assert!(fetch(ns, endpoint).is_err(), "no redirect after post-stop");
    assert!(fetch(task, endpoint).is_err(), "no DNAT after post-stop");
}

#[test]
fn the_martian_filter_keeps_other_hosts_off_loopback_services() {
    let Some(v) = netns_or_skip("the_martian_filter", 2) else {
        return;
    };
    let (ns, other) = (&v[0], &v[1]);
    veth(ns, other);
    // The attacker's side sends to 127.0.0.2 over the wire: its own lo is
    // down (so 127/8 is not local there) and its veth allows loopback
    // addresses out.
    other.sh(
        "ip link set lo down && echo 1 > /proc/sys/net/ipv4/conf/all/route_localnet && \
         ip route add 127.0.0.2/32 via 192.0.2.1 dev vo",
    );
    let _svc = listen(ns, "127.0.0.2:9999", "loopback-only");
    let target = "127.0.0.2:9999";

    let host = host_in(&[("ECS_SKIP_LOCALHOST_TRAFFIC_FILTER", "true")]);
    ok(
        &warden(ns, &host, &["pre-start"]),
        "pre-start without the filter",
    );
    assert_answers(
        other,
        target,
        "loopback-only",
        "route_localnet=1 alone lets other hosts in",
    );

    host.write_config(&[("ECS_SKIP_LOCALHOST_TRAFFIC_FILTER", "false")]);
    ok(
        &warden(ns, &host, &["pre-start"]),
        "pre-start with the filter",
    );
    assert_dropped(other, target, "the martian filter");
    assert_answers(ns, target, "loopback-only", "locally");
    ok(&warden(ns, &host, &["post-stop"]), "post-stop");
}

#[test]
fn post_stop_without_docker_is_fast_and_leaves_no_rule() {
    let Some(ns) = netns_or_skip("post_stop_without_docker", 1) else {
        return;
    };
    let ns = &ns[0];
    let host = host_in(&[]);
    let no_docker = |c: &mut Command| {
        c.env("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    };
    ok(
        &warden_with(ns, &host, &["pre-start"], no_docker),
        "pre-start",
    );
    assert!(ns.sh("iptables-save").contains("ECS-WARDEN"));
    let t = Instant::now();
    let out = warden_with(ns, &host, &["post-stop"], no_docker);
    let took = t.elapsed();
    ok(&out, "post-stop");
    assert!(took < Duration::from_secs(1), "post-stop took {took:?}");
    let left = ns.sh("iptables-save; ip6tables-save");
    assert!(!left.contains("ECS-WARDEN"), "{left}");
}

/// A directory of links to the host tools, for a `PATH` that lacks some
/// or swaps a backend.
fn tool_dir(host: &Host, links: &[(&str, &str)]) -> PathBuf {
    let dir = host.path("tools");
    fs::create_dir_all(&dir).unwrap();
    for (name, target) in links {
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    }
    dir
}

fn which(tool: &str) -> Option<String> {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[test]
fn a_missing_iptables_is_named() {
    let Some(ns) = netns_or_skip("a_missing_iptables_is_named", 1) else {
        return;
    };
    let ns = &ns[0];
    let host = host_in(&[]);
    let dir = tool_dir(&host, &[("ip", &which("ip").unwrap())]);
    let out = warden_with(ns, &host, &["pre-start"], |c| {
        c.env("PATH", &dir);
    });
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("iptables-save: not found in PATH; install iptables"),
        "{err}"
    );
    // post-stop still succeeds: nothing can have been set up.
    let out = warden_with(ns, &host, &["post-stop"], |c| {
        c.env("PATH", &dir);
    });
    ok(&out, "post-stop without iptables");
    assert_eq!(ns.sysctl("net.ipv4.conf.all.route_localnet"), "0");
}

#[test]
fn the_legacy_backend_works_the_same() {
    let Some(ns) = netns_or_skip("the_legacy_backend", 1) else {
        return;
    };
    let ns = &ns[0];
    let host = host_in(&[]);
    let mut links = vec![("ip", which("ip").unwrap())];
    for (name, legacy) in [
        ("iptables-save", "iptables-legacy-save"),
        ("iptables-restore", "iptables-legacy-restore"),
        ("ip6tables-save", "ip6tables-legacy-save"),
        ("ip6tables-restore", "ip6tables-legacy-restore"),
    ] {
        match which(legacy) {
            Some(p) => links.push((name, p)),
            None => {
                let what = format!("`{legacy}`");
                require(
                    "the_legacy_backend",
                    false,
                    &what,
                    "Debian's iptables package has it",
                );
                return;
            }
        }
    }
    let links: Vec<(&str, &str)> = links.iter().map(|(n, p)| (*n, p.as_str())).collect();
    let dir = tool_dir(&host, &links);
    let path = |c: &mut Command| {
        c.env("PATH", &dir);
    };
    ns.sh("iptables-legacy -A INPUT -p tcp --dport 22 -j ACCEPT");
    let before = ns.tables("iptables-legacy-save");
    ok(&warden_with(ns, &host, &["pre-start"], path), "pre-start");
    ok(
        &warden_with(ns, &host, &["pre-start"], path),
        "pre-start again",
    );
    assert_ours_once(&ns.tables("iptables-legacy-save"), OURS_V4, "legacy IPv4");
    assert_ours_once(&ns.tables("ip6tables-legacy-save"), OURS_V6, "legacy IPv6");
    assert!(
        !ns.sh("iptables-save").contains("ECS-WARDEN"),
        "nothing in nft"
    );
    ok(&warden_with(ns, &host, &["post-stop"], path), "post-stop");
    assert_eq!(ns.tables("iptables-legacy-save"), before);
    assert!(!ns.sh("ip6tables-legacy-save").contains("ECS-WARDEN"));
}

#[test]
fn a_relocated_root_never_touches_the_machines_network() {
    // Run in the machine's own namespace on purpose, but with nothing that
    // could change it if the interlock failed: a fake `proc` tree of plain
    // files, and `iptables-save`/`ip` that only record that they ran.
    let host = Host::new();
    let knob = host.path("proc/sys/net/ipv4/conf/all/route_localnet");
    fs::create_dir_all(knob.parent().unwrap()).unwrap();
    fs::write(&knob, "0\n").unwrap();
    let ran = host.path("tool-ran");
    let fake = host.path("tools");
    fs::create_dir_all(&fake).unwrap();
    for tool in [
        "iptables-save",
        "iptables-restore",
        "ip6tables-save",
        "ip6tables-restore",
        "ip",
    ] {
        let p = fake.join(tool);
        fs::write(
            &p,
            format!("#!/bin/sh\necho {tool} >> {}\nexit 1\n", ran.display()),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut c = host.cmd();
    c.arg("pre-start").env("PATH", &fake);
    let out = run_bounded(c, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("refusing to change this machine's own network"),
        "{err}"
    );
    assert!(!ran.exists(), "no tool ran");
    assert_eq!(fs::read_to_string(&knob).unwrap(), "0\n", "no knob written");

    // Without `proc` the root has no network: skipped, and post-stop too.
    fs::remove_dir_all(host.path("proc")).unwrap();
    let mut c = host.cmd();
    c.arg("pre-start").env("PATH", &fake);
    let said = ok(&run_bounded(c, Duration::from_secs(60)), "pre-start");
    assert!(said.contains("host network: skipped"), "{said}");
    let mut c = host.cmd();
    c.arg("post-stop").env("PATH", &fake);
    ok(&run_bounded(c, Duration::from_secs(60)), "post-stop");
    assert!(!ran.exists(), "no tool ran");
}

// ---- with the real agent ---------------------------------------------------

/// The first line of an HTTP answer to `GET path` at `addr`, from inside
/// `ns` (a network namespace handle), or why there was none.
fn status_line(ns: &Path, addr: &str, path: &str) -> Result<String, String> {
    let ns = ns.to_path_buf();
    let addr: SocketAddr = addr.parse().unwrap();
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n");
    std::thread::spawn(move || {
        enter(&ns);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(1500))
            .map_err(|e| format!("{:?}: {e}", e.kind()))?;
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text.lines()
            .next()
            .filter(|l| l.starts_with("HTTP/1."))
            .map(str::to_string)
            .ok_or_else(|| format!("no HTTP answer: {text:?}"))
    })
    .join()
    .unwrap()
}

/// The same rules in front of the REAL agent (Docker runtime, the container
/// on the sandbox's engine, host network). The sandbox's namespace is the
/// host; a second namespace joined to it by a veth pair (and to nothing
/// else) is another host on the VPC, and a bridge-mode task when it routes
/// 169.254.170.2 through the host. Its connection to the agent's 51678 is
/// dropped while the agent answers locally; 169.254.170.2:80 reaches the
/// agent's credentials endpoint on 51679 (whatever it answers, it is the
/// agent's answer); after `ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS=true` and
/// a restart (stop, post-stop, pre-start, start), the other host gets the
/// agent's metadata.
#[test]
fn the_real_agent_behind_the_rules() {
    use crate::harness::real_agent::OLD;
    use crate::harness::real_host::RealHost;
    let test = "hostnet::the_real_agent_behind_the_rules";
    let Some(mut h) = RealHost::new(test, "docker") else {
        return;
    };
    let Some(v) = netns_or_skip(test, 1) else {
        return;
    };
    let other = &v[0];
    let ns = h.ns.path();
    let out =
        h.ns.command("sh")
            .args([
                "-c",
                &format!(
                    "ip link add vh type veth peer name vo netns {} && \
                 ip addr add 192.0.2.1/24 dev vh && ip link set vh up",
                    other.pid()
                ),
            ])
            .output()
            .unwrap();
    assert!(out.status.success(), "veth: {out:?}");
    other.sh("ip addr add 192.0.2.2/24 dev vo && ip link set vo up && \
         ip route add 169.254.170.2/32 via 192.0.2.1");
    std::os::unix::fs::symlink("/proc", h.path("proc")).unwrap();

    ok(&h.host.cli(&["pre-start"]), "pre-start");
    h.start();
    let metadata = "127.0.0.1:51678";
    let remote = "192.0.2.1:51678";
    let ok200 = |r: Result<String, String>| r.map(|l| l.contains(" 200 "));
    assert_eq!(
        ok200(status_line(&ns, metadata, "/v1/metadata")),
        Ok(true),
        "the real agent answers locally"
    );
    match status_line(&other.path, remote, "/v1/metadata") {
        Err(e) if e.starts_with("TimedOut") => {}
        other => panic!("another host reached the agent's introspection: {other:?}"),
    }
    // The credentials endpoint: the agent's own answer there, directly and
    // through 169.254.170.2 from the task namespace.
    let creds = "/v2/credentials/no-such-id";
    let direct = status_line(&ns, "127.0.0.1:51679", creds).expect("the agent's 51679");
    let routed = status_line(&other.path, "169.254.170.2:80", creds)
        .expect("a task reaches 169.254.170.2:80");
    assert_eq!(routed, direct, "169.254.170.2:80 is the agent's 51679");
    eprintln!("the agent's credentials endpoint answered a task: {routed}");

    // Open introspection to other hosts; restart.
    assert!(h.host.cli_bounded(&["stop"]).status.success());
    assert_eq!(h.host.wait_exit(Duration::from_secs(60)), 0);
    ok(&h.host.cli(&["post-stop"]), "post-stop");
    h.host
        .write_config(&[("ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS", "true")]);
    ok(&h.host.cli(&["pre-start"]), "pre-start, off-host allowed");
    h.start();
    h.wait_version(OLD, Duration::from_secs(60));
    assert_eq!(
        ok200(status_line(&other.path, remote, "/v1/metadata")),
        Ok(true),
        "with ECS_ALLOW_OFFHOST_INTROSPECTION_ACCESS=true another host gets the metadata"
    );
    assert!(h.host.cli_bounded(&["stop"]).status.success());
    assert_eq!(h.host.wait_exit(Duration::from_secs(60)), 0);
    ok(&h.host.cli(&["post-stop"]), "post-stop");
}
