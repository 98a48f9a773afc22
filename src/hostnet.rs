//! The host's network for tasks, set up as ecs-init 1.105.1 sets it up,
//! but idempotently, and undone by `post-stop` without Docker.
//!
//! `setup` (`pre-start`):
//! 1. decide whether this root has a network to change (`scope`): `/`
//!    always; a relocated root only when it has `proc/sys/net` (a test links
//!    `proc` to `/proc` from inside its own network namespace) and runs
//!    outside the machine's own network namespace;
//! 2. record `net.ipv4.conf.all.route_localnet` in `run/ecs-warden/
//!    hostnet.json`, unless a record exists (a second `pre-start` keeps the
//!    value from before the first), then set it to 1, so that DNAT to
//!    127.0.0.1 works for packets from containers;
//! 3. `net.ipv6.conf.docker0.accept_ra=0` when docker0 exists;
//! 4. on a host without an IPv4 default route (IPv6-only), the route
//!    `169.254.170.2 dev lo scope link`, recorded when this call added it;
//! 5. the netfilter chains (`netfilter.rs`), with the rules the config asks
//!    for; IPv6 only where the kernel has IPv6.
//!
//! `teardown` (`post-stop`), every step tried even when one fails:
//! 1. remove our chains and their jumps (IPv4 and IPv6);
//! 2. delete the route if the record says we added it;
//! 3. put `route_localnet` back to the recorded value;
//! 4. delete the record once 2 and 3 succeeded.
//!
//! `accept_ra` is not restored, as ecs-init does not: docker0 goes with
//! Docker, and router advertisements on it are never wanted.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::config::HostNetConfig;
use crate::durable;
use crate::error::{Error, Result};
use crate::netfilter::{self, Family, SyncError};
use crate::paths::Paths;

/// What `pre-start` changed that `post-stop` puts back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    /// `net.ipv4.conf.all.route_localnet` before the first `pre-start`.
    route_localnet: Option<String>,
    /// The TMDS route on lo was added by us (not found in place).
    tmds_route: bool,
}

/// The kernel knobs and tables under the root's `proc`.
struct Proc {
    dir: PathBuf,
}

impl Proc {
    fn sys(&self, key: &str) -> PathBuf {
        self.dir.join("sys").join(key.replace('.', "/"))
    }

    fn read(&self, key: &str) -> Result<String> {
        let p = self.sys(key);
        fs::read_to_string(&p)
            .map(|s| s.trim().to_string())
            .map_err(Error::io(format!("read sysctl {key} from"), &p))
    }

    /// IPv4, and IPv6 where the kernel has it (ecs-init's test: with
    /// `ipv6.disable=1` there is no `net/ipv6`, and `ip6tables` fails).
    fn families(&self) -> Vec<Family> {
        let mut f = vec![Family::V4];
        if self.dir.join("sys/net/ipv6").is_dir() {
            f.push(Family::V6);
        }
        f
    }

    /// Kernel knobs are not files to write durably: a plain write(2) is
    /// the interface, and the kernel applies it at once.
    fn write(&self, key: &str, value: &str) -> Result<()> {
        let p = self.sys(key);
        fs::write(&p, format!("{value}\n"))
            .map_err(Error::io(format!("set sysctl {key}={value} in"), &p))
    }
}

const ROUTE_LOCALNET: &str = "net.ipv4.conf.all.route_localnet";
const DOCKER_ACCEPT_RA: &str = "net.ipv6.conf.docker0.accept_ra";

/// Whether `paths` has a network this process may change; `Ok(None)` with
/// the reason when it has none (a relocated root without `proc`).
fn scope(paths: &Paths) -> Result<std::result::Result<Proc, String>> {
    let proc = Proc {
        dir: paths.proc_dir.clone(),
    };
    let net = proc.dir.join("sys/net");
    let relocated = paths.root != Path::new("/");
    if !net.is_dir() {
        if relocated {
            return Ok(Err(format!(
                "{} does not exist: this root has no network to set up",
                net.display()
            )));
        }
        return Err(Error::Other(format!(
            "{} does not exist: is /proc mounted? pre-start needs it to set up the task network",
            net.display()
        )));
    }
    if relocated {
        if let Some(why) = in_machine_netns() {
            return Err(Error::Other(format!(
                "refusing to change this machine's own network for the relocated root {} \
                 ({why}): run it inside its own network namespace (unshare --net or nsenter --net)",
                paths.root.display()
            )));
        }
    }
    Ok(Ok(proc))
}

/// Why this process may not be outside the machine's own network
/// namespace, or `None` when it provably is. A safety interlock for
/// relocated roots (tests), so it reads the machine's real `/proc`, not the
/// root's: a test root with a fake `proc` tree must still never reach the
/// machine's tables. The machine's namespace is kthreadd's (kernel threads
/// run in the initial one) and PID 1's; a namespace that cannot be
/// compared with either counts as the machine's.
fn in_machine_netns() -> Option<String> {
    let me = match fs::read_link("/proc/self/ns/net") {
        Ok(me) => me,
        Err(e) => return Some(format!("cannot read /proc/self/ns/net: {e}")),
    };
    let mut compared = false;
    for (pid, name) in [("2", Some("kthreadd")), ("1", None)] {
        let proc = Path::new("/proc").join(pid);
        if let Some(name) = name {
            let comm = fs::read_to_string(proc.join("comm")).unwrap_or_default();
            if comm.trim() != name {
                continue;
            }
        }
        if let Ok(theirs) = fs::read_link(proc.join("ns/net")) {
            if theirs == me {
                return Some(format!("this process shares PID {pid}'s network namespace"));
            }
            compared = true;
        }
    }
    (!compared).then(|| {
        "neither kthreadd's nor PID 1's network namespace can be read to compare".to_string()
    })
}

/// `pre-start`: set up the host's network for tasks (steps in the module
/// header). Returns one line for the operator.
pub fn setup(paths: &Paths, cfg: &HostNetConfig) -> Result<String> {
    let proc = match scope(paths)? {
        Ok(p) => p,
        Err(why) => {
            log::info!("host network set-up skipped: {why}");
            return Ok(format!("host network: skipped ({why})"));
        }
    };
    let path = paths.hostnet_record();
    let mut record = read_record(&path)?.unwrap_or_default();

    log::info!("pre-start: enabling loopback routing ({ROUTE_LOCALNET}=1)");
    if record.route_localnet.is_none() {
        record.route_localnet = Some(proc.read(ROUTE_LOCALNET)?);
        write_record(&path, &record)?;
    }
    proc.write(ROUTE_LOCALNET, "1")?;

    if proc.sys(DOCKER_ACCEPT_RA).exists() {
        log::info!("pre-start: disabling ipv6 router advertisements ({DOCKER_ACCEPT_RA}=0)");
        proc.write(DOCKER_ACCEPT_RA, "0")?;
    }

    let mut route = "";
    if !has_ipv4_default_route(&proc)? {
        log::info!(
            "pre-start: no IPv4 default route (IPv6-only host): routing {} through lo",
            netfilter::CREDENTIALS_IP
        );
        if add_tmds_route()? {
            record.tmds_route = true;
            write_record(&path, &record)?;
        }
        route = ", route to 169.254.170.2 via lo";
    }

    log::info!("pre-start: creating credentials proxy route and introspection firewall");
    let mut done = Vec::new();
    for family in proc.families() {
        let wants = netfilter::wanted(family, Some(cfg));
        match netfilter::sync(family, &wants) {
            Ok(_) => done.push(family.name()),
            Err(SyncError::Missing { tool }) if family == Family::V6 => {
                // ecs-init's choice: without ip6tables, assume no IPv6.
                log::warn!(
                    "{tool} not found: the IPv6 introspection firewall is not set up \
                     (install ip6tables to block port {} from other hosts over IPv6)",
                    netfilter::INTROSPECTION_PORT
                );
            }
            Err(SyncError::Missing { tool }) => return Err(missing(tool)),
            Err(SyncError::Failed(e)) => return Err(e),
        }
    }
    Ok(format!(
        "host network: {ROUTE_LOCALNET}=1{route}, rules in {} ({})",
        done.join(" and "),
        describe(cfg)
    ))
}

fn describe(cfg: &HostNetConfig) -> String {
    let mut parts = vec!["169.254.170.2:80 -> 127.0.0.1:51679"];
    if !cfg.allow_offhost_introspection {
        parts.push("port 51678 closed to other hosts");
    }
    if !cfg.skip_localhost_filter {
        parts.push("127.0.0.0/8 martian filter");
    }
    parts.join(", ")
}

fn missing(tool: &str) -> Error {
    Error::Tool {
        tool: tool.to_string(),
        message: "not found in PATH; install iptables (on Amazon Linux 2023 the \
                  iptables-nft package) so that tasks can reach their credentials"
            .into(),
    }
}

/// `post-stop`: undo `setup` (steps in the module header), without Docker.
pub fn teardown(paths: &Paths) -> Result<String> {
    let proc = match scope(paths)? {
        Ok(p) => p,
        Err(_) => return Ok("host network: nothing to undo".into()),
    };
    log::info!("post-stop: cleaning up the credentials endpoint and introspection firewall");
    let path = paths.hostnet_record();
    let record = read_record(&path)?;
    let mut errors = Vec::new();
    let mut did = Vec::new();

    for family in proc.families() {
        match netfilter::sync(family, &netfilter::wanted(family, None)) {
            Ok(ran) if !ran.is_empty() => did.push(format!("{} rules removed", family.name())),
            Ok(_) => {}
            // Without the tool nothing of ours can be in that table.
            Err(SyncError::Missing { tool }) => log::debug!("{tool} not found; nothing to remove"),
            Err(SyncError::Failed(e)) => errors.push(e.to_string()),
        }
    }
    let mut keep_record = false;
    if let Some(rec) = &record {
        if rec.tmds_route {
            match del_tmds_route() {
                Ok(()) => did.push("route to 169.254.170.2 via lo removed".into()),
                Err(e) => {
                    keep_record = true;
                    errors.push(e.to_string());
                }
            }
        }
        if let Some(v) = &rec.route_localnet {
            match proc.write(ROUTE_LOCALNET, v) {
                Ok(()) => did.push(format!("{ROUTE_LOCALNET} restored to {v}")),
                Err(e) => {
                    keep_record = true;
                    errors.push(e.to_string());
                }
            }
        }
        if !keep_record {
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => errors.push(Error::io("remove", &path)(e).to_string()),
            }
        }
    }
    if !did.is_empty() {
        log::info!("post-stop: {}", did.join(", "));
    }
    if !errors.is_empty() {
        return Err(Error::Other(format!(
            "post-stop could not undo all of the host network set-up: {}",
            errors.join("; ")
        )));
    }
    Ok(if did.is_empty() {
        "host network: nothing to undo".into()
    } else {
        format!("host network: {}", did.join(", "))
    })
}

fn read_record(path: &Path) -> Result<Option<Record>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::Other(format!(
                "{}: not a host network record ({e}); remove it if the network was reset",
                path.display()
            ))
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("read host network record", path)(e)),
    }
}

/// Written before the change it records, so a crash in between leaves
/// what `post-stop` needs. Volatile: `run/` and the network both go with
/// a reboot.
fn write_record(path: &Path, record: &Record) -> Result<()> {
    let mut bytes = serde_json::to_vec_pretty(record)
        .map_err(|e| Error::Other(format!("serialize host network record: {e}")))?;
    bytes.push(b'\n');
    durable::write_volatile("host network record", path, &bytes, 0o600)
}

/// ecs-init's test for an IPv6-only host: no IPv4 route to everywhere
/// with a gateway in the main table (`/proc/net/route` lists exactly that
/// table).
fn has_ipv4_default_route(proc: &Proc) -> Result<bool> {
    let p = proc.dir.join("net/route");
    let text = fs::read_to_string(&p).map_err(Error::io("read the IPv4 routes from", &p))?;
    Ok(default_route_in(&text))
}

fn default_route_in(text: &str) -> bool {
    const RTF_GATEWAY: u32 = 0x2;
    text.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        f.len() >= 8
            && f[1] == "00000000"
            && f[7] == "00000000"
            && u32::from_str_radix(f[3], 16).is_ok_and(|fl| fl & RTF_GATEWAY != 0)
    })
}

const TMDS_ROUTE: [&str; 5] = ["169.254.170.2/32", "dev", "lo", "scope", "link"];

/// Add the TMDS route; `false` when it was already there (then it is not
/// ours to remove, unless an earlier `pre-start` recorded it).
fn add_tmds_route() -> Result<bool> {
    match ip_route("add") {
        Ok(()) => Ok(true),
        Err((_, said)) if said.contains("File exists") => Ok(false),
        Err((e, _)) => Err(e),
    }
}

fn del_tmds_route() -> Result<()> {
    match ip_route("del") {
        Ok(()) => Ok(()),
        // Already gone (someone removed it, or the namespace was reset).
        Err((_, said)) if said.contains("No such process") => Ok(()),
        Err((e, _)) => Err(e),
    }
}

/// `ip -4 route VERB 169.254.170.2/32 dev lo scope link`; on failure the
/// error and what `ip` said.
fn ip_route(verb: &str) -> std::result::Result<(), (Error, String)> {
    let mut args = vec!["-4", "route", verb];
    args.extend(TMDS_ROUTE);
    let shown = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            let message = if e.kind() == io::ErrorKind::NotFound {
                "not found in PATH; install iproute2 (the iproute package on Amazon Linux)"
                    .to_string()
            } else {
                format!("cannot run it: {e}")
            };
            (
                Error::Tool {
                    tool: shown.clone(),
                    message,
                },
                String::new(),
            )
        })?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err((
        Error::Tool {
            tool: shown,
            message: format!("failed ({}): {said}", out.status),
        },
        said,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_route_needs_a_gateway() {
        let head =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";
        let with = format!("{head}eth0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert!(default_route_in(&with));
        let dev_only =
            format!("{head}eth0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert!(
            !default_route_in(&dev_only),
            "no gateway: not a default route for ecs-init"
        );
        let subnet = format!("{head}eth0\t0000000A\t00000000\t0001\t0\t0\t0\t000000FF\t0\t0\t0\n");
        assert!(!default_route_in(&subnet));
        assert!(!default_route_in(head));
    }

    #[test]
    fn relocated_root_without_proc_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::new(dir.path());
        let cfg = HostNetConfig::default();
        let said = setup(&paths, &cfg).unwrap();
        assert!(said.contains("skipped"), "{said}");
        assert_eq!(teardown(&paths).unwrap(), "host network: nothing to undo");
        assert!(!paths.hostnet_record().exists());
    }
}
