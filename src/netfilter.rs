//! The netfilter rules ecs-warden owns, applied and removed idempotently
//! with the host's own `iptables-save`/`iptables-restore` (and the
//! `ip6tables-` pair), whichever backend (nft or legacy) they drive.
//!
//! The rules are ecs-init 1.105.1's, kept in ecs-warden's own chains, each
//! reached by exactly one jump from a built-in chain:
//!
//! | family | table | chain | jump | rules |
//! |---|---|---|---|---|
//! | IPv4 | nat | `ECS-WARDEN-PREROUTING` | end of PREROUTING | DNAT `169.254.170.2:80` to `127.0.0.1:51679` |
//! | IPv4 | nat | `ECS-WARDEN-OUTPUT` | end of OUTPUT | REDIRECT `169.254.170.2:80` to port 51679 |
//! | IPv4, IPv6 | filter | `ECS-WARDEN-INPUT` | top of INPUT | ACCEPT docker0 to 51678, DROP not-lo to 51678; IPv4 also the 127/8 martian DROP |
//!
//! ecs-init appends its nat rules and inserts its filter rules at the top
//! of the built-in chains; the jumps sit where its rules sat, and the rules
//! keep its order, so the effect is the same.
//!
//! Sync, per family and table:
//! 1. read the table (`iptables-save -t TABLE`): which of our chains exist
//!    and how many jumps lead to each from its built-in chain;
//! 2. write one `iptables-restore --noflush` transaction: a chain that must
//!    hold rules is declared (created, or kept), flushed, refilled, and left
//!    with one jump (a missing one inserted, extra ones deleted); a chain
//!    that must hold none loses its jumps and is deleted;
//! 3. when there is nothing to change (removing what is absent), nothing
//!    runs.
//!
//! Each table changes in one transaction; no other chain or rule is read
//! for anything but our jumps, and none is written.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Write};
use std::process::{Command, Stdio};

use crate::config::HostNetConfig;
use crate::error::Error;

/// The task-credentials endpoint containers call, and where the agent
/// serves it.
pub const CREDENTIALS_IP: &str = "169.254.170.2";
pub const CREDENTIALS_PORT: u16 = 80;
pub const AGENT_CREDENTIALS_PORT: u16 = 51679;
/// The agent's introspection API (all interfaces, fixed port).
pub const INTROSPECTION_PORT: u16 = 51678;
/// Docker's default bridge. ecs-init asks Docker for its name and adds the
/// ACCEPT only when Docker reports one; ecs-warden always adds it, since it
/// matches nothing while no such interface exists and needs no Docker.
pub const DOCKER_BRIDGE: &str = "docker0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn save_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }

    fn restore_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
}

/// Where the jump into one of our chains sits in its built-in chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    Top,
    End,
}

/// One of ecs-warden's chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub table: &'static str,
    pub name: &'static str,
    /// The built-in chain that jumps to it.
    pub from: &'static str,
    at: At,
}

pub const NAT_PREROUTING: Chain = Chain {
    table: "nat",
    name: "ECS-WARDEN-PREROUTING",
    from: "PREROUTING",
    at: At::End,
};
pub const NAT_OUTPUT: Chain = Chain {
    table: "nat",
    name: "ECS-WARDEN-OUTPUT",
    from: "OUTPUT",
    at: At::End,
};
pub const FILTER_INPUT: Chain = Chain {
    table: "filter",
    name: "ECS-WARDEN-INPUT",
    from: "INPUT",
    at: At::Top,
};

/// Every chain ecs-warden may own in `family`.
pub fn chains(family: Family) -> &'static [Chain] {
    match family {
        Family::V4 => &[NAT_PREROUTING, NAT_OUTPUT, FILTER_INPUT],
        Family::V6 => &[FILTER_INPUT],
    }
}

/// What one chain must hold; no rules means the chain must not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub chain: Chain,
    pub rules: Vec<String>,
}

/// The rules ecs-init 1.105.1 sets up, for `family`, as `cfg` asks; with
/// `cfg` `None`, every chain empty (removal).
pub fn wanted(family: Family, cfg: Option<&HostNetConfig>) -> Vec<Want> {
    chains(family)
        .iter()
        .map(|&chain| Want {
            chain,
            rules: cfg.map(|c| rules(family, chain, c)).unwrap_or_default(),
        })
        .collect()
}

fn rules(family: Family, chain: Chain, cfg: &HostNetConfig) -> Vec<String> {
    let mut out = Vec::new();
    if chain == NAT_PREROUTING {
        out.push(format!(
            "-d {CREDENTIALS_IP}/32 -p tcp --dport {CREDENTIALS_PORT} -j DNAT --to-destination 127.0.0.1:{AGENT_CREDENTIALS_PORT}"
        ));
    } else if chain == NAT_OUTPUT {
        out.push(format!(
            "-d {CREDENTIALS_IP}/32 -p tcp --dport {CREDENTIALS_PORT} -j REDIRECT --to-ports {AGENT_CREDENTIALS_PORT}"
        ));
    } else if chain == FILTER_INPUT {
        if !cfg.allow_offhost_introspection {
            out.push(format!(
                "-i {DOCKER_BRIDGE} -p tcp --dport {INTROSPECTION_PORT} -j ACCEPT"
            ));
            out.push(format!(
                "! -i lo -p tcp --dport {INTROSPECTION_PORT} -j DROP"
            ));
        }
        if family == Family::V4 && !cfg.skip_localhost_filter {
            // Packets to 127/8 from elsewhere, unless they belong to a
            // connection (or were DNATed there by the rule above): with
            // route_localnet=1 they would otherwise reach loopback services.
            out.push(
                "! -s 127.0.0.0/8 -d 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
                    .to_string(),
            );
        }
    }
    out
}

/// Why a sync did not happen.
#[derive(Debug)]
pub enum SyncError {
    /// The family's tools are not installed (not found in `PATH`).
    Missing {
        tool: &'static str,
    },
    Failed(Error),
}

impl From<Error> for SyncError {
    fn from(e: Error) -> Self {
        SyncError::Failed(e)
    }
}

/// Make `family`'s tables hold exactly `wants` in our chains. Returns the
/// transactions it ran (empty when nothing had to change).
pub fn sync(family: Family, wants: &[Want]) -> Result<Vec<String>, SyncError> {
    let mut tables: BTreeMap<&str, Vec<&Want>> = BTreeMap::new();
    for w in wants {
        tables.entry(w.chain.table).or_default().push(w);
    }
    let mut ran = Vec::new();
    for (table, wants) in tables {
        let saved = run(family.save_tool(), &["-t", table], None)?;
        let state = TableState::parse(&saved, table);
        if let Some(script) = plan(&state, table, &wants) {
            run(
                family.restore_tool(),
                &["--noflush", "--wait=5"],
                Some(&script),
            )?;
            ran.push(script);
        }
    }
    Ok(ran)
}

/// Our chains and jumps in one table, as `iptables-save` shows them.
#[derive(Debug, Default)]
struct TableState {
    chains: BTreeSet<String>,
    /// (built-in chain, target) -> how many plain `-j target` rules.
    jumps: BTreeMap<(String, String), usize>,
}

impl TableState {
    fn parse(saved: &str, table: &str) -> TableState {
        let mut st = TableState::default();
        let mut inside = false;
        for line in saved.lines().map(str::trim) {
            if let Some(name) = line.strip_prefix('*') {
                inside = name == table;
            } else if !inside || line.starts_with('#') {
                continue;
            } else if line == "COMMIT" {
                inside = false;
            } else if let Some(decl) = line.strip_prefix(':') {
                if let Some(name) = decl.split_whitespace().next() {
                    st.chains.insert(name.to_string());
                }
            } else {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let ["-A", from, "-j", target] = words[..] {
                    *st.jumps
                        .entry((from.to_string(), target.to_string()))
                        .or_default() += 1;
                }
            }
        }
        st
    }

    fn jumps(&self, chain: &Chain) -> usize {
        self.jumps
            .get(&(chain.from.to_string(), chain.name.to_string()))
            .copied()
            .unwrap_or(0)
    }
}

/// The `iptables-restore --noflush` input that brings `state` to `wants`,
/// or `None` when it already matches in structure and nothing is to be
/// removed. Chains that keep rules are always refilled (a flush and the
/// same rules), which is what makes a changed config take effect.
fn plan(state: &TableState, table: &str, wants: &[&Want]) -> Option<String> {
    let mut declare = Vec::new();
    let mut fill = Vec::new();
    let mut remove = Vec::new();
    for w in wants {
        let c = &w.chain;
        let jumps = state.jumps(c);
        if w.rules.is_empty() {
            if !state.chains.contains(c.name) {
                continue;
            }
            for _ in 0..jumps {
                remove.push(format!("-D {} -j {}", c.from, c.name));
            }
            remove.push(format!("-F {}", c.name));
            remove.push(format!("-X {}", c.name));
            continue;
        }
        declare.push(format!(":{} - [0:0]", c.name));
        fill.push(format!("-F {}", c.name));
        for r in &w.rules {
            fill.push(format!("-A {} {r}", c.name));
        }
        match jumps {
            0 => fill.push(match c.at {
                At::Top => format!("-I {} 1 -j {}", c.from, c.name),
                At::End => format!("-A {} -j {}", c.from, c.name),
            }),
            n => {
                for _ in 1..n {
                    fill.push(format!("-D {} -j {}", c.from, c.name));
                }
            }
        }
    }
    if declare.is_empty() && remove.is_empty() {
        return None;
    }
    let mut script = format!("*{table}\n");
    for line in declare.iter().chain(&fill).chain(&remove) {
        script.push_str(line);
        script.push('\n');
    }
    script.push_str("COMMIT\n");
    Some(script)
}

/// Run a host tool; its stdout, or an error naming it with its arguments
/// and quoting what it said.
fn run(tool: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, SyncError> {
    let shown = format!("{tool} {}", args.join(" "));
    let mut child = match Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(SyncError::Missing { tool }),
        Err(e) => {
            return Err(SyncError::Failed(Error::Tool {
                tool: shown,
                message: format!("cannot run it: {e}"),
            }))
        }
    };
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A tool that exits early closes the pipe; its status says why.
        let _ = pipe.write_all(text.as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| Error::Tool {
        tool: shown.clone(),
        message: format!("wait: {e}"),
    })?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stderr);
        let said = said.trim();
        let mut message = format!("failed ({})", out.status);
        if !said.is_empty() {
            message.push_str(&format!(": {said}"));
        }
        if let Some(script) = stdin {
            message.push_str(&format!("; its input was:\n{script}"));
        }
        return Err(SyncError::Failed(Error::Tool {
            tool: shown,
            message,
        }));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_ON: HostNetConfig = HostNetConfig {
        allow_offhost_introspection: false,
        skip_localhost_filter: false,
    };

    fn plan_for(
        saved: &str,
        family: Family,
        cfg: Option<&HostNetConfig>,
        table: &str,
    ) -> Option<String> {
        let wants = wanted(family, cfg);
        let wants: Vec<&Want> = wants.iter().filter(|w| w.chain.table == table).collect();
        plan(&TableState::parse(saved, table), table, &wants)
    }

    #[test]
    fn fresh_table_gets_chains_and_one_jump_each() {
        let s = plan_for("", Family::V4, Some(&ALL_ON), "nat").unwrap();
        assert_eq!(
            s,
            "*nat\n:ECS-WARDEN-PREROUTING - [0:0]\n:ECS-WARDEN-OUTPUT - [0:0]\n\
             -F ECS-WARDEN-PREROUTING\n\
             -A ECS-WARDEN-PREROUTING -d 169.254.170.2/32 -p tcp --dport 80 -j DNAT --to-destination 127.0.0.1:51679\n\
             -A PREROUTING -j ECS-WARDEN-PREROUTING\n\
             -F ECS-WARDEN-OUTPUT\n\
             -A ECS-WARDEN-OUTPUT -d 169.254.170.2/32 -p tcp --dport 80 -j REDIRECT --to-ports 51679\n\
             -A OUTPUT -j ECS-WARDEN-OUTPUT\nCOMMIT\n"
        );
        let f = plan_for("", Family::V4, Some(&ALL_ON), "filter").unwrap();
        assert!(f.contains("-I INPUT 1 -j ECS-WARDEN-INPUT\n"), "{f}");
        assert_eq!(f.matches("-A ECS-WARDEN-INPUT").count(), 3, "{f}");
        let f6 = plan_for("", Family::V6, Some(&ALL_ON), "filter").unwrap();
        assert_eq!(f6.matches("-A ECS-WARDEN-INPUT").count(), 2, "{f6}");
        assert!(!f6.contains("127.0.0.0/8"), "{f6}");
    }

    const SAVED: &str = "# Generated by iptables-save v1.8.9 (nf_tables)\n\
        *filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        :ECS-WARDEN-INPUT - [0:0]\n\
        -A INPUT -j ECS-WARDEN-INPUT\n-A INPUT -p tcp -m tcp --dport 22 -j ACCEPT\n\
        -A INPUT -j ECS-WARDEN-INPUT\n\
        -A ECS-WARDEN-INPUT ! -i lo -p tcp -m tcp --dport 51678 -j DROP\nCOMMIT\n\
        *nat\n:PREROUTING ACCEPT [0:0]\n-A PREROUTING -j ECS-WARDEN-INPUT\nCOMMIT\n";

    #[test]
    fn existing_chain_is_refilled_and_extra_jumps_go() {
        let st = TableState::parse(SAVED, "filter");
        assert_eq!(st.jumps(&FILTER_INPUT), 2, "the nat section does not count");
        let f = plan_for(SAVED, Family::V4, Some(&ALL_ON), "filter").unwrap();
        assert!(!f.contains("-I INPUT"), "no second jump: {f}");
        assert_eq!(f.matches("-D INPUT -j ECS-WARDEN-INPUT").count(), 1, "{f}");
        assert!(f.contains("-F ECS-WARDEN-INPUT\n"), "{f}");
    }

    #[test]
    fn a_rule_turned_off_is_gone_and_an_empty_chain_removed() {
        let offhost = HostNetConfig {
            allow_offhost_introspection: true,
            skip_localhost_filter: false,
        };
        let f = plan_for(SAVED, Family::V4, Some(&offhost), "filter").unwrap();
        assert!(!f.contains("51678"), "{f}");
        let both = HostNetConfig {
            allow_offhost_introspection: true,
            skip_localhost_filter: true,
        };
        let f = plan_for(SAVED, Family::V4, Some(&both), "filter").unwrap();
        assert_eq!(
            f,
            "*filter\n-D INPUT -j ECS-WARDEN-INPUT\n-D INPUT -j ECS-WARDEN-INPUT\n\
             -F ECS-WARDEN-INPUT\n-X ECS-WARDEN-INPUT\nCOMMIT\n"
        );
    }

    #[test]
    fn removing_what_is_absent_runs_nothing() {
        assert_eq!(plan_for("", Family::V4, None, "nat"), None);
        assert_eq!(plan_for(SAVED, Family::V4, None, "nat"), None);
        assert!(plan_for(SAVED, Family::V4, None, "filter").is_some());
    }
}
