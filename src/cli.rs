//! The command line, parsed in two stages: the raw words (`OsString`s, as
//! `execve` passed them) into `Raw` (global options, the verb, its flags),
//! then `Raw` into a validated `Command`. A path (`--root`, and
//! `$ECS_WARDEN_ROOT`) is taken byte for byte; every other word must be
//! UTF-8. Nothing runs until both stages pass; a wrong word prints usage
//! and exits 2.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// A validated invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Cli {
    /// `--root DIR`, else `$ECS_WARDEN_ROOT`, else `/`.
    pub root: PathBuf,
    pub command: Command,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `--help` for the program or one verb.
    Help(Option<Verb>),
    Run(Verb, Flags),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Version,
    PreStart,
    Start,
    Stop,
    PreStop,
    PostStop,
    ReloadCache,
    Status,
    Update,
    Stage,
    Rollback,
    Reexec,
}

/// Flags a verb accepted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Flags {
    pub json: bool,
    pub no_wait: bool,
    pub force: bool,
    pub keep_data: bool,
    pub version: Option<String>,
    pub source: Option<String>,
}

/// Flags that take a value (`--flag VALUE` or `--flag=VALUE`).
const VALUE_FLAGS: &[&str] = &["--version", "--source"];

struct VerbSpec {
    verb: Verb,
    name: &'static str,
    flags: &'static [&'static str],
    summary: &'static str,
    help: &'static str,
}

const VERBS: &[VerbSpec] = &[
    VerbSpec {
        verb: Verb::Version,
        name: "version",
        flags: &["--json"],
        summary: "print the warden's and the current agent build's versions",
        help: "Prints the ecs-warden version and the version of the agent build that\n\
               `agents/current` points at.\n\n  --json   machine-readable output",
    },
    VerbSpec {
        verb: Verb::PreStart,
        name: "pre-start",
        flags: &[],
        summary: "prepare the host: config check, directories, task network, first agent build",
        help: "Validates the configuration, creates the directory layout under the root\n\
               with tight modes, sets up the host network for tasks as ecs-init does\n\
               (169.254.170.2:80 to the agent's 127.0.0.1:51679, port 51678 closed to other\n\
               hosts, route_localnet=1; idempotent, in ecs-warden's own iptables chains),\n\
               creates /mnt/ecs/ebs, and installs the bundled agent (var/cache/ecs/ecs-agent)\n\
               when no build is installed yet. Never replaces an installed build.",
    },
    VerbSpec {
        verb: Verb::Start,
        name: "start",
        flags: &[],
        summary: "run the supervisor in the foreground (systemd's ExecStart)",
        help: "Starts the agent from agents/current/ecs-agent and keeps it running:\n\
               exit 0 stops the warden (exit 0), 5 is terminal (the warden exits 5),\n\
               42 performs a staged update, 2 logs the agent's last lines and restarts,\n\
               anything else restarts with backoff. SIGTERM/SIGINT stop the agent\n\
               gracefully (SIGTERM, then SIGKILL after ECS_WARDEN_STOP_TIMEOUT) and exit 0.\n\
               One warden per root: a second start fails at once (exit 6).",
    },
    VerbSpec {
        verb: Verb::Stop,
        name: "stop",
        flags: &[],
        summary: "stop the running warden and its agent gracefully, and wait",
        help: "Asks the running warden (over its control socket) to stop the agent and\n\
               exit, then waits until it has. Succeeds when no warden is running.\n\n\
               During an update the agent is stopped in every case (whichever build runs)\n\
               and the warden exits without waiting for the update to end. The update\n\
               keeps its step in the journal, and the next start resumes or undoes it:\n\
               a download resumes from its partial file; a STAGED build stays staged;\n\
               before the old agent was stopped, the old build starts again and the step\n\
               is redone; once the new build was switched in, it is started and checked\n\
               again (at most 3 starts, then the rollback); a rollback goes on.",
    },
    VerbSpec {
        verb: Verb::PreStop,
        name: "pre-stop",
        flags: &[],
        summary: "same as stop (kept for ecs-init compatibility)",
        help: "ecs-init used pre-stop to stop the agent before the unit stops; ecs-warden\n\
               does the same as `stop`.",
    },
    VerbSpec {
        verb: Verb::PostStop,
        name: "post-stop",
        flags: &[],
        summary: "clean up after the warden has exited (systemd's ExecStopPost)",
        help: "Undoes the host network set-up of pre-start (ecs-warden's iptables chains,\n\
               the lo route it added, route_localnet back to its earlier value), without\n\
               Docker, and removes a stale control socket left by a warden that is gone.\n\
               Safe to run twice. Does nothing while a warden is running.",
    },
    VerbSpec {
        verb: Verb::ReloadCache,
        name: "reload-cache",
        flags: &[],
        summary: "install the bundled agent when it is newer than the current build",
        help: "Installs var/cache/ecs/ecs-agent into the build store when it is newer than\n\
               the current build, and makes it current when no warden is running. Never\n\
               downgrades.",
    },
    VerbSpec {
        verb: Verb::Status,
        name: "status",
        flags: &["--json"],
        summary: "show the warden's, the agent's and the update's state",
        help: "Asks the running warden for its status document. Exits 3 when no warden\n\
               is running for the root.\n\n  --json   print the whole status document as JSON",
    },
    VerbSpec {
        verb: Verb::Reexec,
        name: "reexec",
        flags: &[],
        summary: "make the running warden re-execute the installed binary in place",
        help: "Asks the running warden to execve(2) its installed binary, keeping its PID,\n\
               its lock and its agent child (the agent is not restarted, tasks are not\n\
               touched). Used by the package's %posttrans after an upgrade; SIGHUP does\n\
               the same. Waits until the new image answers. Exits 3 when no warden runs.",
    },
    VerbSpec {
        verb: Verb::Update,
        name: "update",
        flags: &["--version", "--source", "--force", "--json", "--no-wait"],
        summary: "download, verify, stage and switch to a newer agent build",
        help: "Asks the running warden to update the agent: resolve the target from the\n\
               manifest (the highest version for this architecture, or --version),\n\
               download and verify it (STAGING, STAGED), switch to it and check it is\n\
               healthy (UPDATING), and end in UPDATED, or roll back and end in FAILED.\n\
               Shows progress until then.\n\n\
               \x20 --version V    install exactly version V\n\
               \x20 --source URL   manifest URL (default ECS_WARDEN_UPDATE_SOURCE)\n\
               \x20 --force        install a quarantined version\n\
               \x20 --json         print the final update document as JSON\n\
               \x20 --no-wait      return once the request is accepted\n\n\
               Refusals: 10 NoUpdateAvailableException, 11 UpdateInProgressException,\n\
               12 MissingVersionException, 13 InvalidParameterException, 14 updates\n\
               disabled; 15 the update failed and was rolled back.",
    },
    VerbSpec {
        verb: Verb::Stage,
        name: "stage",
        flags: &["--version", "--source", "--force", "--json", "--no-wait"],
        summary: "download and verify a newer build, and stop at STAGED",
        help: "Like `update`, but stops once the build is verified and stored (STAGED).\n\
               A later `update` for the same build performs it.",
    },
    VerbSpec {
        verb: Verb::Rollback,
        name: "rollback",
        flags: &["--keep-data", "--json", "--no-wait"],
        summary: "switch back to the previous build and restore its data snapshot",
        help: "Stops the agent, switches agents/current back to agents/previous, restores\n\
               the agent data snapshot taken when the previous build was replaced, starts\n\
               it and checks it is healthy. The build rolled back from is quarantined.\n\n\
               \x20 --keep-data    do not restore the data snapshot",
    },
];

fn spec(verb: Verb) -> &'static VerbSpec {
    VERBS
        .iter()
        .find(|s| s.verb == verb)
        .expect("every verb has a spec")
}

/// The program's usage text.
pub fn usage() -> String {
    let mut s = String::from(
        "ecs-warden: supervises and updates the Amazon ECS container agent\n\n\
         Usage: ecs-warden [--root DIR] VERB [FLAGS]\n\n\
         Verbs:\n",
    );
    for v in VERBS {
        s.push_str(&format!("  {:<13} {}\n", v.name, v.summary));
    }
    s.push_str(
        "\nOptions:\n  --root DIR    relocate every path under DIR (default /, or $ECS_WARDEN_ROOT)\n  \
         -h, --help    show this help, or a verb's with `ecs-warden VERB --help`\n\n\
         Exit codes: 0 ok, 1 failure, 2 usage, 3 not running, 4 bad config,\n\
         5 agent terminal, 6 already running, 7 no agent build, 10-16 update\n\
         refusals and failures (see README.md).\n",
    );
    s
}

pub fn verb_help(verb: Verb) -> String {
    let s = spec(verb);
    format!(
        "Usage: ecs-warden [--root DIR] {}{}\n\n{}\n",
        s.name,
        if s.flags.is_empty() {
            String::new()
        } else {
            format!(" [{}]", s.flags.join("] ["))
        },
        s.help
    )
}

/// The words of stage one, sorted but not yet checked against the verb.
struct Raw {
    root: Option<PathBuf>,
    help: bool,
    verb: Option<&'static VerbSpec>,
    /// `(name, value)`: `--flag`, `--flag=VALUE` or `--flag VALUE`.
    flags: Vec<(String, Option<String>)>,
}

/// Parse argv (without the program name). `env_root` is `$ECS_WARDEN_ROOT`.
pub fn parse(args: &[OsString], env_root: Option<OsString>) -> Result<Cli> {
    validate(words(args)?, env_root)
}

/// A word that must be text.
fn utf8<'a>(word: &'a OsStr, what: &str) -> Result<&'a str> {
    word.to_str()
        .ok_or_else(|| Error::Usage(format!("{what} {word:?} is not valid UTF-8")))
}

/// Stage one: sort the words into the root, help, the verb and its flags.
fn words(args: &[OsString]) -> Result<Raw> {
    let mut raw = Raw {
        root: None,
        help: false,
        verb: None,
        flags: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let word = args[i].as_os_str();
        if word == "--root" {
            i += 1;
            let v = args
                .get(i)
                .ok_or_else(|| Error::Usage("--root needs a directory".into()))?;
            raw.root = Some(PathBuf::from(v));
        } else if let Some(v) = word.as_bytes().strip_prefix(b"--root=") {
            raw.root = Some(PathBuf::from(OsStr::from_bytes(v)));
        } else {
            let a = utf8(word, "argument")?;
            if a == "-h" || a == "--help" {
                raw.help = true;
            } else if let Some(name) = VALUE_FLAGS.iter().find(|f| **f == a) {
                i += 1;
                let v = args
                    .get(i)
                    .ok_or_else(|| Error::Usage(format!("{name} needs a value")))?;
                let v = utf8(v, &format!("the value of {name}"))?;
                raw.flags.push((name.to_string(), Some(v.to_string())));
            } else if a.starts_with('-') {
                raw.flags.push(match a.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (a.to_string(), None),
                });
            } else if raw.verb.is_none() {
                raw.verb = Some(
                    VERBS
                        .iter()
                        .find(|s| s.name == a)
                        .ok_or_else(|| Error::Usage(format!("unknown verb {a:?}")))?,
                );
            } else {
                return Err(Error::Usage(format!("unexpected argument {a:?}")));
            }
        }
        i += 1;
    }
    Ok(raw)
}

/// Stage two: the root, then the flags against what the verb accepts.
fn validate(raw: Raw, env_root: Option<OsString>) -> Result<Cli> {
    let root = raw
        .root
        .or_else(|| env_root.filter(|r| !r.is_empty()).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"));
    if root.as_os_str().is_empty() {
        return Err(Error::Usage("--root needs a directory".into()));
    }
    if raw.help {
        return Ok(Cli {
            root,
            command: Command::Help(raw.verb.map(|s| s.verb)),
        });
    }
    let Some(spec) = raw.verb else {
        return Err(Error::Usage(match raw.flags.first() {
            // `ecs-warden --bogus`: name the flag, not only the verb.
            Some((flag, _)) => format!("unknown option {flag:?}, and no verb"),
            None => "missing verb".into(),
        }));
    };
    let mut parsed = Flags::default();
    for (name, value) in raw.flags {
        let name = name.as_str();
        if !spec.flags.contains(&name) {
            return Err(Error::Usage(format!(
                "unknown flag {name:?} for {}",
                spec.name
            )));
        }
        let takes_value = VALUE_FLAGS.contains(&name);
        if takes_value != value.is_some() {
            return Err(Error::Usage(if takes_value {
                format!("{name} needs a value")
            } else {
                format!("{name} takes no value")
            }));
        }
        match name {
            "--json" => parsed.json = true,
            "--no-wait" => parsed.no_wait = true,
            "--force" => parsed.force = true,
            "--keep-data" => parsed.keep_data = true,
            "--version" => parsed.version = value,
            "--source" => parsed.source = value,
            _ => unreachable!("every flag in a spec is handled"),
        }
    }
    Ok(Cli {
        root,
        command: Command::Run(spec.verb, parsed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn p(args: &[&str]) -> Result<Cli> {
        parse(&os(args), None)
    }

    fn raw(bytes: &[u8]) -> OsString {
        OsStr::from_bytes(bytes).to_os_string()
    }

    #[test]
    fn verbs_flags_and_root() {
        let c = p(&["--root", "/tmp/x", "status", "--json"]).unwrap();
        assert_eq!(c.root, PathBuf::from("/tmp/x"));
        assert_eq!(
            c.command,
            Command::Run(
                Verb::Status,
                Flags {
                    json: true,
                    ..Flags::default()
                }
            )
        );
        let c = p(&[
            "update",
            "--version",
            "1.2.3",
            "--source=file:///m",
            "--no-wait",
        ])
        .unwrap();
        let Command::Run(Verb::Update, f) = c.command else {
            panic!("not an update")
        };
        assert_eq!(f.version.as_deref(), Some("1.2.3"));
        assert_eq!(f.source.as_deref(), Some("file:///m"));
        assert!(f.no_wait);
        assert!(matches!(p(&["update", "--version"]), Err(Error::Usage(_))));
        assert!(matches!(p(&["update", "--json=x"]), Err(Error::Usage(_))));
        let c = p(&["start", "--root=/r"]).unwrap();
        assert_eq!(c.root, PathBuf::from("/r"));
        assert_eq!(
            p(&["start", "--help"]).unwrap().command,
            Command::Help(Some(Verb::Start))
        );
    }

    #[test]
    fn rejects_unknown_words() {
        assert!(matches!(p(&["frobnicate"]), Err(Error::Usage(_))));
        assert!(matches!(p(&["start", "--json"]), Err(Error::Usage(_))));
        assert!(matches!(p(&["status", "--bogus"]), Err(Error::Usage(_))));
        assert!(matches!(p(&[]), Err(Error::Usage(_))));
        assert!(matches!(p(&["--root"]), Err(Error::Usage(_))));
        assert!(matches!(p(&["start", "extra"]), Err(Error::Usage(_))));
    }

    #[test]
    fn env_root_is_the_fallback() {
        let c = parse(&os(&["status"]), Some("/e".into())).unwrap();
        assert_eq!(c.root, PathBuf::from("/e"));
        let c = parse(&os(&["status"]), Some(raw(b"/tmp/\xff"))).unwrap();
        assert_eq!(c.root.as_os_str().as_bytes(), b"/tmp/\xff");
    }

    #[test]
    fn a_root_is_bytes_other_words_are_text() {
        let c = parse(&[raw(b"--root"), raw(b"/tmp/\xff"), raw(b"status")], None).unwrap();
        assert_eq!(c.root.as_os_str().as_bytes(), b"/tmp/\xff");
        let c = parse(&[raw(b"--root=/r/\xfe"), raw(b"status")], None).unwrap();
        assert_eq!(c.root.as_os_str().as_bytes(), b"/r/\xfe");
        let usage = |args: &[OsString]| match parse(args, None) {
            Err(Error::Usage(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = usage(&[raw(b"st\xffatus")]);
        assert_eq!(m, r#"argument "st\xFFatus" is not valid UTF-8"#);
        let m = usage(&[raw(b"update"), raw(b"--source"), raw(b"http://\xff/")]);
        assert!(
            m.contains("the value of --source") && m.contains("UTF-8"),
            "{m}"
        );
        let m = usage(&[raw(b"update"), raw(b"--version=1.\xff")]);
        assert!(m.contains("UTF-8"), "{m}");
    }
}
