//! Packaging tests: the RPM that `scripts/build-rpm.sh` builds, checked the
//! way a host would meet it.
//!
//! 1. Once per run, install the tools when missing (`scripts/packaging-deps.sh`)
//!    and build two packages: release 1 from `packaging/`, and release 2 from a
//!    copy whose packaged defaults changed, for the upgrade tests.
//! 2. Read the packages: rpmlint (only the findings listed in
//!    `rpm/rpmlint-accepted.txt`), file list with modes, config flags,
//!    dependencies, scriptlets.
//! 3. Install, upgrade and erase them with `rpm --root DIR` into empty roots.
//!    rpm runs the scriptlets chrooted into DIR, so each root gets a static
//!    busybox as `/bin/sh` and a stand-in `systemctl`
//!    (`tests/slow/systemctl-standin.sh`) that records its calls and
//!    answers `is-active` from a file the test writes.
//! 4. `systemd-analyze verify` the unit as installed, with the installed
//!    binary in place (`--root`).
//!
//! A tool that is missing and cannot be installed skips the tests with a loud
//! message, or fails them when `CI` is set.

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::harness::require;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const SYSTEMCTL_STANDIN: &str = include_str!("systemctl-standin.sh");
/// Appended to the packaged defaults of release 2, so that upgrading over an
/// edited `/var/lib/ecs/ecs.config` has a new version to set aside.
const R2_DEFAULTS_LINE: &str = "# release 2 of the packaged defaults\nECS_WARDEN_TEST_R2=1\n";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn work_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("packaging")
}

// ---------------------------------------------------------------------------
// Running things

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Run and require exit 0; returns stdout.
fn ok(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

// ---------------------------------------------------------------------------
// ELF: enough of the header to tell the machine and whether there is an
// interpreter (a dynamically linked program names its loader in PT_INTERP).

const EM_X86_64: u16 = 62;
const EM_AARCH64: u16 = 183;

struct Elf {
    machine: u16,
    has_interp: bool,
}

fn read_elf(path: &Path) -> Elf {
    let b = fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        b.len() > 64 && &b[..4] == b"\x7fELF" && b[4] == 2 && b[5] == 1,
        "{} is not a 64-bit little-endian ELF file",
        path.display()
    );
    let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
    let phoff = u64_at(0x20) as usize;
    let phentsize = u16_at(0x36) as usize;
    let phnum = u16_at(0x38) as usize;
    const PT_INTERP: u32 = 3;
    Elf {
        machine: u16_at(0x12),
        has_interp: (0..phnum).any(|i| u32_at(phoff + i * phentsize) == PT_INTERP),
    }
}

// ---------------------------------------------------------------------------
// Tools and the two builds, once per run

struct Builds {
    r1: PathBuf,
    r2: PathBuf,
    busybox: PathBuf,
}

enum Setup {
    Ready(Builds),
    /// A tool is missing and could not be installed.
    Missing(String),
    /// The build failed: every test fails with this message.
    Failed(String),
}

/// A static busybox for the chroots (Debian's busybox-static).
fn static_busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file() && !read_elf(p).has_interp)
}

fn missing_tools() -> Vec<&'static str> {
    let mut missing: Vec<&'static str> = [
        "rpm",
        "rpmbuild",
        "rpmlint",
        "systemd-analyze",
        "musl-gcc",
        "aarch64-linux-gnu-gcc",
    ]
    .into_iter()
    .filter(|t| which(t).is_none())
    .collect();
    if static_busybox().is_none() {
        missing.push("busybox (static)");
    }
    missing
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        if !missing_tools().is_empty() {
            let out = run(Command::new("bash")
                .arg(repo().join("scripts/packaging-deps.sh"))
                .current_dir(repo()));
            if !out.status.success() {
                eprintln!(
                    "packaging-deps.sh failed ({}):\n{}",
                    out.status,
                    text(&out.stderr)
                );
            }
        }
        let missing = missing_tools();
        if !missing.is_empty() {
            return Setup::Missing(format!(
                "missing {} (scripts/packaging-deps.sh could not install them)",
                missing.join(", ")
            ));
        }
        let work = work_dir();
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).unwrap();

        let r1 = match build_rpm(&["--release", "1"], &work.join("r1"), "x86_64", 1) {
            Ok(p) => p,
            Err(e) => return Setup::Failed(e),
        };

        let pkg2 = work.join("packaging-r2");
        fs::create_dir_all(&pkg2).unwrap();
        for f in ["ecs.service", "ecs-warden.tmpfiles", "ecs.config"] {
            fs::copy(repo().join("packaging").join(f), pkg2.join(f)).unwrap();
        }
        let mut defaults = fs::read_to_string(pkg2.join("ecs.config")).unwrap();
        defaults.push_str(R2_DEFAULTS_LINE);
        fs::write(pkg2.join("ecs.config"), defaults).unwrap();
        let r2 = match build_rpm(
            &["--release", "2", "--packaging-dir", pkg2.to_str().unwrap()],
            &work.join("r2"),
            "x86_64",
            2,
        ) {
            Ok(p) => p,
            Err(e) => return Setup::Failed(e),
        };
        Setup::Ready(Builds {
            r1,
            r2,
            busybox: static_busybox().unwrap(),
        })
    })
}

/// Run build-rpm.sh; it must succeed and print exactly the package's path
/// (relative to the source tree it runs in) and nothing else.
fn build_rpm(args: &[&str], out_dir: &Path, arch: &str, release: u32) -> Result<PathBuf, String> {
    let out = run(Command::new("bash")
        .arg(repo().join("scripts/build-rpm.sh"))
        .args(args)
        .arg("--out")
        .arg(out_dir)
        .current_dir(repo()));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    if !out.status.success() {
        return Err(format!(
            "build-rpm.sh {args:?} failed ({}):\n{stdout}{stderr}",
            out.status
        ));
    }
    let expected = out_dir.join(format!("ecs-warden-{VERSION}-{release}.{arch}.rpm"));
    let printed = repo().join(stdout.trim_end_matches('\n'));
    if stdout.lines().count() != 1 || printed != expected || !stderr.is_empty() {
        return Err(format!(
            "build-rpm.sh {args:?} should print only the path of {}; it printed\n\
             stdout:\n{stdout}\nstderr:\n{stderr}",
            expected.display()
        ));
    }
    if !expected.is_file() {
        return Err(format!("{} is missing", expected.display()));
    }
    Ok(expected)
}

/// The builds, or `None` when tools are missing (the harness's switch: a
/// loud skip of `test` on a developer machine, a failure in CI).
fn builds(test: &str) -> Option<&'static Builds> {
    match setup() {
        Setup::Ready(b) => Some(b),
        Setup::Failed(why) => panic!("{why}"),
        Setup::Missing(why) => {
            require(test, false, why, "run scripts/packaging-deps.sh as root");
            None
        }
    }
}

// ---------------------------------------------------------------------------
// Roots for `rpm --root`

struct Root {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Root {
    /// An empty root with an rpm database; with `shell`, also busybox as
    /// /bin/sh, /dev/null and the stand-in systemctl, so scriptlets run.
    fn new(builds: &Builds, shell: bool) -> Root {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let root = Root { _tmp: tmp, dir };
        ok(root.rpm().arg("--initdb"));
        if shell {
            root.add_shell(&builds.busybox);
        }
        root
    }

    fn add_shell(&self, busybox: &Path) {
        let d = &self.dir;
        for sub in ["bin", "usr/bin", "dev", "tmp", "var/tmp"] {
            fs::create_dir_all(d.join(sub)).unwrap();
        }
        fs::copy(busybox, d.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "[", "test", "cat", "echo", "mkdir", "rm", "ls", "chmod",
        ] {
            symlink("busybox", d.join("bin").join(applet)).unwrap();
        }
        // Scriptlets redirect to /dev/null. A real device when we may make
        // one; else a plain file, which serves redirections just as well.
        let null = d.join("dev/null");
        let made = Command::new("mknod")
            .args(["-m", "0666"])
            .arg(&null)
            .args(["c", "1", "3"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !made {
            fs::write(&null, "").unwrap();
        }
        let systemctl = d.join("usr/bin/systemctl");
        fs::write(&systemctl, SYSTEMCTL_STANDIN).unwrap();
        fs::set_permissions(&systemctl, fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../usr/bin/systemctl", d.join("bin/systemctl")).unwrap();
        self.set_active(false);
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel.trim_start_matches('/'))
    }

    fn rpm(&self) -> Command {
        let mut c = Command::new("rpm");
        c.arg("--root")
            .arg(&self.dir)
            .args(["--dbpath", "/var/lib/rpm"]);
        c
    }

    /// Run rpm with these arguments; must succeed. Returns stdout and stderr
    /// together (scriptlets print to either), without Debian's rpm notice.
    fn rpm_ok(&self, args: &[&str], pkg: Option<&Path>) -> String {
        let mut c = self.rpm();
        c.args(args);
        if let Some(p) = pkg {
            c.arg(p);
        }
        let shown = format!("{c:?}");
        let out = run(&mut c);
        let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert!(
            out.status.success(),
            "{shown} failed ({}):\n{all}",
            out.status
        );
        all.lines()
            .filter(|l| {
                !l.starts_with("rpm: RPM should not be used directly")
                    && !l.starts_with("rpm: However assuming you know")
            })
            .map(|l| format!("{l}\n"))
            .collect()
    }

    fn set_active(&self, active: bool) {
        fs::write(
            self.path("systemctl.active"),
            if active { "active\n" } else { "inactive\n" },
        )
        .unwrap();
    }

    /// The systemctl calls recorded since the last call, one per line.
    fn take_systemctl_calls(&self) -> Vec<String> {
        let log = self.path("systemctl.log");
        let calls = fs::read_to_string(&log).unwrap_or_default();
        let _ = fs::remove_file(&log);
        calls.lines().map(str::to_string).collect()
    }

    fn mode(&self, rel: &str) -> u32 {
        fs::symlink_metadata(self.path(rel))
            .unwrap_or_else(|e| panic!("{rel}: {e}"))
            .permissions()
            .mode()
            & 0o7777
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
}

/// No recorded call restarts anything.
fn assert_no_restart(calls: &[String]) {
    for c in calls {
        let words: Vec<&str> = c.split_whitespace().collect();
        assert!(
            !words.iter().any(|w| w.ends_with("restart")),
            "systemctl was asked to restart: `{c}` (all calls: {calls:?})"
        );
    }
}

/// Whether the installed binary has the `reexec` verb yet (another branch
/// adds it); until then the scriptlet's call exits 2, "unknown verb".
fn knows_reexec(root: &Root) -> bool {
    Command::new(root.path("usr/bin/ecs-warden"))
        .arg("--root")
        .arg(&root.dir)
        .args(["reexec", "--help"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// The %posttrans tried `ecs-warden reexec` and reported how it went: with
/// no warden in the chroot that is exit 3 (or 2 while the verb is missing).
fn assert_reexec_attempted(root: &Root, rpm_output: &str) {
    assert!(
        rpm_output.contains("ecs-warden: ecs.service is active; running ecs-warden reexec"),
        "posttrans did not run reexec:\n{rpm_output}"
    );
    if knows_reexec(root) {
        assert!(
            rpm_output.contains("no warden runs in ecs.service (exit 3)"),
            "reexec in a root with no warden should exit 3:\n{rpm_output}"
        );
    } else {
        eprintln!(
            "note: the packaged ecs-warden has no `reexec` verb yet; \
             accepting its exit 2 (unknown verb) as proof the scriptlet called it"
        );
        // The scriptlet's report, and the binary's own words, which it passes on.
        assert!(
            rpm_output.contains("reexec failed (exit 2)")
                && rpm_output.contains("unknown verb \"reexec\""),
            "expected the scriptlet's report of `ecs-warden reexec` exiting 2:\n{rpm_output}"
        );
    }
}

// ---------------------------------------------------------------------------
// The package as built

/// rpmlint finds nothing beyond what `rpm/rpmlint-accepted.txt` lists.
fn assert_rpmlint_accepts(rpm: &Path, arch: &str) {
    let accepted_text = fs::read_to_string(repo().join("rpm/rpmlint-accepted.txt")).unwrap();
    let accepted: Vec<&str> = accepted_text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let out = run(Command::new("rpmlint").arg(rpm));
    let report = text(&out.stdout) + &text(&out.stderr);
    assert!(
        report.contains("1 packages and 0 specfiles checked"),
        "rpmlint did not run:\n{report}"
    );
    let prefix = format!("ecs-warden.{arch}: ");
    let unexpected: Vec<&str> = report
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|f| f.starts_with("E: ") || f.starts_with("W: "))
        .filter(|f| !accepted.contains(f))
        .collect();
    assert!(
        unexpected.is_empty(),
        "rpmlint findings not in rpm/rpmlint-accepted.txt:\n{}\n\nfull report:\n{report}",
        unexpected.join("\n")
    );
}

#[test]
fn rpmlint_reports_only_accepted_findings() {
    let Some(b) = builds("rpmlint_reports_only_accepted_findings") else {
        return;
    };
    assert_rpmlint_accepts(&b.r1, "x86_64");
}

#[test]
fn package_lists_the_files_with_their_modes() {
    let Some(b) = builds("package_lists_the_files_with_their_modes") else {
        return;
    };
    let listing = ok(Command::new("rpm").arg("-qlvp").arg(&b.r1));
    // path -> (mode string, symlink target)
    let mut files = std::collections::BTreeMap::new();
    for line in listing.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let mode = fields[0];
        let (path, target) = match fields.iter().position(|f| *f == "->") {
            Some(i) => (fields[i - 1], Some(fields[i + 1])),
            None => (*fields.last().unwrap(), None),
        };
        assert_eq!(fields[2..4], ["root", "root"], "owner of {path}");
        files.insert(
            path.to_string(),
            (mode.to_string(), target.map(str::to_string)),
        );
    }
    let expect = [
        ("/usr/bin/ecs-warden", "-rwxr-xr-x", None),
        (
            "/usr/libexec/amazon-ecs-init",
            "lrwxrwxrwx",
            Some("../bin/ecs-warden"),
        ),
        ("/usr/lib/systemd/system/ecs.service", "-rw-r--r--", None),
        ("/usr/lib/tmpfiles.d/ecs-warden.conf", "-rw-r--r--", None),
        ("/etc/ecs", "drwxr-xr-x", None),
        ("/etc/ecs/ecs.config", "-rw-r--r--", None),
        ("/etc/ecs-warden", "drwx------", None),
        ("/var/lib/ecs", "drwxr-xr-x", None),
        ("/var/lib/ecs/ecs.config", "-rw-r--r--", None),
        ("/var/lib/ecs/data", "drwx------", None),
        ("/var/lib/ecs-warden", "drwx------", None),
        ("/var/cache/ecs", "drwxr-xr-x", None),
        ("/run/ecs-warden", "drwx------", None),
    ];
    for (path, mode, target) in expect {
        let Some((m, t)) = files.get(path) else {
            panic!("{path} not in the package:\n{listing}")
        };
        assert_eq!(m, mode, "mode of {path}");
        assert_eq!(t.as_deref(), target, "symlink target of {path}");
    }
    // The docs, since README.md and LICENSE exist.
    for doc in [
        "/usr/share/doc/ecs-warden-0.1.0/README.md",
        "/usr/share/licenses/ecs-warden-0.1.0/LICENSE",
    ] {
        if !files.contains_key(doc) {
            let alt = doc.replace("-0.1.0", "");
            assert!(
                files.contains_key(&alt),
                "{doc} not in the package:\n{listing}"
            );
        }
    }
    // Nothing else but the docs and rpm's own build-id links.
    for path in files.keys() {
        assert!(
            expect.iter().any(|(p, _, _)| p == path)
                || path.starts_with("/usr/lib/.build-id")
                || path.starts_with("/usr/share/doc/ecs-warden")
                || path.starts_with("/usr/share/licenses/ecs-warden"),
            "unexpected file in the package: {path}"
        );
    }

    // Config and ghost flags.
    let flags = ok(Command::new("rpm")
        .args(["-qp", "--qf", "[%{FILEFLAGS:fflags} %{FILENAMES}\\n]"])
        .arg(&b.r1));
    let flag_of = |path: &str| -> String {
        flags
            .lines()
            .find_map(|l| {
                let (f, p) = l.split_once(' ').unwrap_or(("", l));
                (p == path).then(|| f.to_string())
            })
            .unwrap_or_else(|| panic!("{path} not in flags listing:\n{flags}"))
    };
    assert_eq!(
        flag_of("/var/lib/ecs/ecs.config"),
        "cn",
        "%config(noreplace)"
    );
    assert_eq!(
        flag_of("/etc/ecs/ecs.config"),
        "cng",
        "%ghost %config(noreplace)"
    );
    assert_eq!(flag_of("/run/ecs-warden"), "g", "%ghost dir");
    assert_eq!(flag_of("/usr/bin/ecs-warden"), "", "plain file");
}

#[test]
fn package_headers_name_version_conflicts_and_dependencies() {
    let Some(b) = builds("package_headers_name_version_conflicts_and_dependencies") else {
        return;
    };
    let info = ok(Command::new("rpm")
        .args([
            "-qp",
            "--qf",
            "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{LICENSE}\\n",
        ])
        .arg(&b.r1));
    assert_eq!(info, format!("ecs-warden|{VERSION}|1|x86_64|Apache-2.0\n"));

    let conflicts = ok(Command::new("rpm").args(["-qp", "--conflicts"]).arg(&b.r1));
    let conflicts: Vec<&str> = conflicts.lines().collect();
    assert!(conflicts.contains(&"ecs-init"), "{conflicts:?}");
    assert!(conflicts.contains(&"amazon-ecs-init"), "{conflicts:?}");

    let provides = ok(Command::new("rpm").args(["-qp", "--provides"]).arg(&b.r1));
    assert!(
        !provides.lines().any(|l| l.contains("ecs-init")),
        "the package must not claim to be ecs-init:\n{provides}"
    );

    // A static binary needs no libraries; only the scriptlets need a shell
    // and systemctl, and pre-start the host's iptables and ip.
    let requires = ok(Command::new("rpm").args(["-qp", "--requires"]).arg(&b.r1));
    for r in requires.lines() {
        assert!(
            r == "/bin/sh"
                || r == "systemd"
                || r == "iptables"
                || r == "iproute"
                || r.starts_with("rpmlib(")
                || r.starts_with("config(ecs-warden)"),
            "unexpected dependency {r:?}:\n{requires}"
        );
    }
}

/// The scriptlets as rpm stores them: name (e.g. "posttrans") -> body.
fn scriptlets(rpm: &Path) -> Vec<(String, String)> {
    let all = ok(Command::new("rpm").args(["-qp", "--scripts"]).arg(rpm));
    let mut out: Vec<(String, String)> = Vec::new();
    for line in all.lines() {
        if let Some(name) = line
            .split_once(" scriptlet (using ")
            .map(|(name, _)| name.to_string())
        {
            out.push((name, String::new()));
        } else if let Some((_, body)) = out.last_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

#[test]
fn scriptlets_enable_on_install_never_restart_and_reexec_after_upgrade() {
    let Some(b) = builds("scriptlets_enable_on_install_never_restart_and_reexec_after_upgrade")
    else {
        return;
    };
    let scripts = scriptlets(&b.r1);
    let names: Vec<&str> = scripts.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["postinstall", "preuninstall", "postuninstall", "posttrans"]
    );
    let body = |name: &str| -> String {
        let text = &scripts.iter().find(|(n, _)| n == name).unwrap().1;
        // Commands only: comments may mention what is deliberately not done.
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    };

    let post = body("postinstall");
    assert!(
        post.contains(r#"if [ "$1" -eq 1 ]; then"#)
            && post.contains("systemctl --no-reload enable ecs.service"),
        "%post enables the unit on first install:\n{post}"
    );
    let preun = body("preuninstall");
    assert!(
        preun.contains(r#"if [ "$1" -eq 0 ]; then"#)
            && preun.contains("systemctl --no-reload disable --now ecs.service"),
        "%preun stops and disables on erase only:\n{preun}"
    );
    let postun = body("postuninstall");
    assert!(postun.contains("systemctl daemon-reload"), "{postun}");
    let posttrans = body("posttrans");
    assert!(
        posttrans.contains("systemctl is-active --quiet ecs.service")
            && posttrans.contains("/usr/bin/ecs-warden reexec"),
        "%posttrans re-execs a running warden:\n{posttrans}"
    );

    for (name, _) in &scripts {
        for line in body(name).lines().filter(|l| l.contains("systemctl")) {
            let restarts = line
                .split_whitespace()
                .any(|w| w.ends_with("restart") || w == "condrestart");
            assert!(!restarts, "{name} restarts a unit: {line}");
        }
    }
}

// ---------------------------------------------------------------------------
// Install, upgrade, erase

const DIRS_AND_MODES: &[(&str, u32)] = &[
    ("usr/bin/ecs-warden", 0o755),
    ("usr/lib/systemd/system/ecs.service", 0o644),
    ("usr/lib/tmpfiles.d/ecs-warden.conf", 0o644),
    ("var/lib/ecs/ecs.config", 0o644),
    ("var/lib/ecs/data", 0o700),
    ("var/lib/ecs-warden", 0o700),
    ("var/cache/ecs", 0o755),
    ("etc/ecs", 0o755),
    ("etc/ecs-warden", 0o700),
    ("run/ecs-warden", 0o700),
];

#[test]
fn install_into_an_empty_root() {
    let Some(b) = builds("install_into_an_empty_root") else {
        return;
    };
    let root = Root::new(b, true);
    let out = root.rpm_ok(&["-i", "--nodeps"], Some(&b.r1));

    for (rel, mode) in DIRS_AND_MODES {
        assert_eq!(root.mode(rel), *mode, "mode of /{rel}");
    }
    assert_eq!(
        fs::read_link(root.path("usr/libexec/amazon-ecs-init")).unwrap(),
        PathBuf::from("../bin/ecs-warden")
    );
    assert_eq!(
        root.read("usr/lib/systemd/system/ecs.service"),
        fs::read_to_string(repo().join("packaging/ecs.service")).unwrap()
    );
    assert_eq!(
        root.read("var/lib/ecs/ecs.config"),
        fs::read_to_string(repo().join("packaging/ecs.config")).unwrap()
    );
    assert!(
        !root.path("etc/ecs/ecs.config").exists(),
        "the operator's config is %ghost: claimed, never created"
    );

    // Enabled on first install; the service was not active, so no reexec.
    let calls = root.take_systemctl_calls();
    assert_eq!(
        calls,
        [
            "--no-reload enable ecs.service",
            "is-active --quiet ecs.service"
        ]
    );
    assert!(!out.contains("reexec"), "{out}");

    // One static binary; it runs, also under ecs-init's name.
    let elf = read_elf(&root.path("usr/bin/ecs-warden"));
    assert_eq!(elf.machine, EM_X86_64);
    assert!(!elf.has_interp, "the binary must be statically linked");
    for program in ["usr/bin/ecs-warden", "usr/libexec/amazon-ecs-init"] {
        let v = ok(Command::new(root.path(program))
            .arg("--root")
            .arg(&root.dir)
            .arg("version"));
        assert!(
            v.starts_with(&format!("ecs-warden {VERSION}\n")),
            "{program} version: {v}"
        );
    }
}

#[test]
fn upgrade_keeps_edited_config_and_state_and_reexecs_instead_of_restarting() {
    let Some(b) = builds("upgrade_keeps_edited_config_and_state_and_reexecs_instead_of_restarting")
    else {
        return;
    };
    let root = Root::new(b, true);
    root.rpm_ok(&["-i", "--nodeps"], Some(&b.r1));
    root.take_systemctl_calls();

    let edited = format!(
        "{}ECS_LOGLEVEL=debug\n",
        root.read("var/lib/ecs/ecs.config")
    );
    root.write("var/lib/ecs/ecs.config", &edited);
    root.write("etc/ecs/ecs.config", "ECS_CLUSTER=prod\n");
    root.write("var/lib/ecs-warden/agents/1.2.3/ecs-agent", "agent build\n");
    root.write("var/lib/ecs-warden/state.json", "{\"state\":\"UPDATED\"}\n");
    root.write("var/lib/ecs/data/agent.db", "tasks\n");
    root.set_active(true);

    let out = root.rpm_ok(&["-U", "--nodeps"], Some(&b.r2));
    let version = ok(root
        .rpm()
        .args(["-q", "--qf", "%{VERSION}-%{RELEASE}", "ecs-warden"]));
    assert_eq!(version, format!("{VERSION}-2"));

    // %config(noreplace): the edited file stays, the new defaults go beside it.
    assert_eq!(root.read("var/lib/ecs/ecs.config"), edited);
    let rpmnew = root.read("var/lib/ecs/ecs.config.rpmnew");
    assert!(rpmnew.ends_with(R2_DEFAULTS_LINE), "{rpmnew}");
    assert_eq!(root.read("etc/ecs/ecs.config"), "ECS_CLUSTER=prod\n");
    assert_eq!(
        root.read("var/lib/ecs-warden/agents/1.2.3/ecs-agent"),
        "agent build\n"
    );
    assert_eq!(
        root.read("var/lib/ecs-warden/state.json"),
        "{\"state\":\"UPDATED\"}\n"
    );
    assert_eq!(root.read("var/lib/ecs/data/agent.db"), "tasks\n");
    for (rel, mode) in DIRS_AND_MODES {
        assert_eq!(root.mode(rel), *mode, "mode of /{rel} after upgrade");
    }

    // Reload unit files, ask whether the service runs, nothing else: no
    // restart, no stop, no re-enable over the operator's choice.
    let calls = root.take_systemctl_calls();
    assert_no_restart(&calls);
    assert_eq!(calls, ["daemon-reload", "is-active --quiet ecs.service"]);
    assert_reexec_attempted(&root, &out);
}

#[test]
fn upgrade_replaces_unedited_defaults_silently() {
    let Some(b) = builds("upgrade_replaces_unedited_defaults_silently") else {
        return;
    };
    let root = Root::new(b, true);
    root.rpm_ok(&["-i", "--nodeps"], Some(&b.r1));
    root.take_systemctl_calls();
    let out = root.rpm_ok(&["-U", "--nodeps"], Some(&b.r2));
    assert!(root
        .read("var/lib/ecs/ecs.config")
        .ends_with(R2_DEFAULTS_LINE));
    assert!(!root.path("var/lib/ecs/ecs.config.rpmnew").exists());
    // Not active: no reexec.
    assert!(!out.contains("reexec"), "{out}");
    let calls = root.take_systemctl_calls();
    assert_no_restart(&calls);
    assert_eq!(calls, ["daemon-reload", "is-active --quiet ecs.service"]);
}

#[test]
fn erase_removes_the_program_and_keeps_config_and_state() {
    let Some(b) = builds("erase_removes_the_program_and_keeps_config_and_state") else {
        return;
    };
    let root = Root::new(b, true);
    root.rpm_ok(&["-i", "--nodeps"], Some(&b.r1));
    root.take_systemctl_calls();
    root.write("etc/ecs/ecs.config", "ECS_CLUSTER=prod\n");
    root.write("var/lib/ecs-warden/agents/1.2.3/ecs-agent", "agent build\n");
    root.write("var/lib/ecs-warden/state.json", "{}\n");
    root.write("etc/ecs-warden/credentials", "secret\n");
    let edited = format!(
        "{}ECS_LOGLEVEL=debug\n",
        root.read("var/lib/ecs/ecs.config")
    );
    root.write("var/lib/ecs/ecs.config", &edited);
    root.set_active(true);

    root.rpm_ok(&["-e", "--nodeps", "ecs-warden"], None);

    for gone in [
        "usr/bin/ecs-warden",
        "usr/libexec/amazon-ecs-init",
        "usr/lib/systemd/system/ecs.service",
        "usr/lib/tmpfiles.d/ecs-warden.conf",
    ] {
        assert!(
            fs::symlink_metadata(root.path(gone)).is_err(),
            "/{gone} is still there after erase"
        );
    }
    assert_eq!(root.read("etc/ecs/ecs.config"), "ECS_CLUSTER=prod\n");
    assert_eq!(
        root.read("var/lib/ecs-warden/agents/1.2.3/ecs-agent"),
        "agent build\n"
    );
    assert_eq!(root.read("var/lib/ecs-warden/state.json"), "{}\n");
    assert_eq!(root.read("etc/ecs-warden/credentials"), "secret\n");
    assert_eq!(root.mode("var/lib/ecs-warden"), 0o700);
    // rpm's rule for an edited %config file on erase: kept as .rpmsave.
    assert_eq!(root.read("var/lib/ecs/ecs.config.rpmsave"), edited);

    // Stopped (the warden stops the agent) and disabled, then reloaded.
    let calls = root.take_systemctl_calls();
    assert_no_restart(&calls);
    assert_eq!(
        calls,
        ["--no-reload disable --now ecs.service", "daemon-reload"]
    );
}

// ---------------------------------------------------------------------------
// The unit

/// `systemd-analyze verify` of the unit as the package installs it, next to
/// the binary it installs: `--root` makes systemd look up the unit and check
/// its Exec paths inside the root. The root gets the host's standard targets
/// (sysinit.target and friends, which every service depends on by default);
/// docker.service and cloud-final.service are deliberately absent, as on a
/// host without them, which Wants=/After= tolerate.
#[test]
fn systemd_analyze_verifies_the_installed_unit() {
    let Some(b) = builds("systemd_analyze_verifies_the_installed_unit") else {
        return;
    };
    let root = Root::new(b, false);
    root.rpm_ok(&["-i", "--nodeps", "--noscripts"], Some(&b.r1));
    let units = root.path("usr/lib/systemd/system");
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .iter()
        .map(Path::new)
        .find(|d| d.join("sysinit.target").is_file())
        .expect("the host's systemd targets (the systemd package)");
    for entry in fs::read_dir(host_units).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "target") && p.is_file() {
            fs::copy(&p, units.join(p.file_name().unwrap())).unwrap();
        }
    }

    let verify = |unit: &str| -> (bool, String) {
        let out = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(format!("--root={}", root.dir.display()))
            .arg(unit));
        (out.status.success(), text(&out.stdout) + &text(&out.stderr))
    };
    let (passed, report) = verify("ecs.service");
    assert!(
        passed && report.trim().is_empty(),
        "systemd-analyze verify ecs.service:\n{report}"
    );

    // The check is not vacuous: the same unit with a bad value is reported.
    let broken = fs::read_to_string(units.join("ecs.service"))
        .unwrap()
        .replace("KillMode=process", "KillMode=processes");
    fs::write(units.join("ecs-broken.service"), broken).unwrap();
    let (_, report) = verify("ecs-broken.service");
    assert!(
        report.contains("ecs-broken.service:"),
        "systemd-analyze verify did not report the bad KillMode:\n{report}"
    );
}

#[test]
fn unit_keeps_the_ecs_init_contract() {
    let unit = fs::read_to_string(repo().join("packaging/ecs.service")).unwrap();
    let values = |key: &str| -> Vec<String> {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::to_string)
            .collect()
    };
    let one = |key: &str| -> String {
        let v = values(key);
        assert_eq!(v.len(), 1, "{key}= once: {v:?}");
        v[0].clone()
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("Restart"), "on-failure");
    assert_eq!(one("RestartPreventExitStatus"), "5");
    assert_eq!(one("KillMode"), "process");
    assert_eq!(one("ExecStartPre"), "/usr/bin/ecs-warden pre-start");
    assert_eq!(one("ExecStart"), "/usr/bin/ecs-warden start");
    assert_eq!(one("ExecStop"), "/usr/bin/ecs-warden stop");
    assert_eq!(one("ExecStopPost"), "/usr/bin/ecs-warden post-stop");
    assert_eq!(one("Wants"), "docker.service");
    assert_eq!(one("PartOf"), "docker.service");
    assert_eq!(values("After"), ["docker.service", "cloud-final.service"]);
    assert_eq!(one("WantedBy"), "multi-user.target");
    // Room for the warden's 30 s agent stop timeout, and then some.
    let stop = one("TimeoutStopSec");
    let secs: u64 = stop.trim_end_matches('s').parse().unwrap();
    assert!(secs >= 40, "TimeoutStopSec={stop} leaves no room after 30s");
    assert!(values("EnvironmentFile").is_empty());
}

// ---------------------------------------------------------------------------
// aarch64

/// The aarch64 package cross-builds (ring's C code with
/// gcc-aarch64-linux-gnu) and holds a static aarch64 binary; with
/// qemu-aarch64-static on the host, the binary also runs.
#[test]
fn aarch64_package_cross_builds() {
    let Some(b) = builds("aarch64_package_cross_builds") else {
        return;
    };
    let rpm = build_rpm(
        &["--arch", "aarch64", "--release", "1"],
        &work_dir().join("aarch64"),
        "aarch64",
        1,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let arch = ok(Command::new("rpm")
        .args(["-qp", "--qf", "%{ARCH}"])
        .arg(&rpm));
    assert_eq!(arch, "aarch64");
    assert_rpmlint_accepts(&rpm, "aarch64");
    let root = Root::new(b, false);
    root.rpm_ok(
        &["-i", "--nodeps", "--noscripts", "--ignorearch"],
        Some(&rpm),
    );
    let bin = root.path("usr/bin/ecs-warden");
    let elf = read_elf(&bin);
    assert_eq!(elf.machine, EM_AARCH64);
    assert!(
        !elf.has_interp,
        "the aarch64 binary must be statically linked"
    );
    match which("qemu-aarch64-static").or_else(|| which("qemu-aarch64")) {
        Some(qemu) => {
            let v = ok(Command::new(qemu)
                .arg(&bin)
                .arg("--root")
                .arg(&root.dir)
                .arg("version"));
            assert!(v.starts_with(&format!("ecs-warden {VERSION}\n")), "{v}");
        }
        None => eprintln!("note: no qemu-aarch64-static; the aarch64 binary was not run"),
    }
}
