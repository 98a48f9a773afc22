//! Words that are not UTF-8, through the real binary: a root (`--root`,
//! `--root=`, `$ECS_WARDEN_ROOT`) is a path, taken byte for byte; any other
//! word is a usage error (exit 2) that says which word. Nothing panics.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::harness::*;

fn raw(bytes: &[u8]) -> OsString {
    OsStr::from_bytes(bytes).to_os_string()
}

/// A root whose last component is the byte 0xff, under a temporary dir.
fn odd_root(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join(OsStr::from_bytes(b"root-\xff"))
}

fn warden() -> Command {
    let mut c = Command::new(WARDEN);
    c.env_remove("ECS_WARDEN_ROOT").env_remove("NOTIFY_SOCKET");
    c
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn a_root_that_is_not_utf8_is_a_path() {
    let dir = tempfile::tempdir().unwrap();
    let root = odd_root(&dir);
    // pre-start lays out that very directory and installs the bundled build.
    std::fs::create_dir_all(root.join("var/cache/ecs")).unwrap();
    let sample = std::fs::read(small_sample()).unwrap();
    let bundled = root.join("var/cache/ecs/ecs-agent");
    std::fs::write(&bundled, &sample).unwrap();
    std::fs::set_permissions(
        &bundled,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = warden()
        .arg("--root")
        .arg(&root)
        .arg("pre-start")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let current = root.join("var/lib/ecs-warden/agents/current/ecs-agent");
    assert_eq!(
        std::fs::read(&current).unwrap(),
        sample,
        "installed under the root as given"
    );

    // status: nothing runs there (exit 3), whichever way the root is given.
    let mut eq = OsString::from("--root=");
    eq.push(&root);
    for cmd in [
        warden().arg("--root").arg(&root).arg("status").output(),
        warden().arg(&eq).arg("status").output(),
        warden()
            .env("ECS_WARDEN_ROOT", &root)
            .args(["status", "--json"])
            .output(),
    ] {
        let out = cmd.unwrap();
        assert_eq!(out.status.code(), Some(3), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("root-\u{fffd}"),
            "names the root: {}",
            text(&out)
        );
    }
}

#[test]
fn any_other_word_that_is_not_utf8_is_a_usage_error() {
    let cases: &[(&[&[u8]], &str)] = &[
        (
            &[b"st\xffatus"],
            r#"argument "st\xFFatus" is not valid UTF-8"#,
        ),
        (
            &[b"update", b"--source", b"http://127.0.0.1/\xff"],
            r#"the value of --source "http://127.0.0.1/\xFF" is not valid UTF-8"#,
        ),
        (
            &[b"update", b"--version=1.\xff"],
            r#"argument "--version=1.\xFF" is not valid UTF-8"#,
        ),
        (&[b"status", b"--js\xffon"], "is not valid UTF-8"),
    ];
    for (args, needle) in cases {
        let out = warden().args(args.iter().map(|a| raw(a))).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.contains("Usage: ecs-warden"), "usage follows: {err}");
        assert!(!err.contains("panicked"), "{err}");
    }
}
