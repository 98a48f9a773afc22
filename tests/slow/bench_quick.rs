//! `scripts/bench.sh --quick` still runs: it exits 0 and prints its table
//! with a row for every section, so the benchmark script cannot rot.
//!
//! A peer the script could neither find nor install (nginx, s6, runit, GNU
//! time, the musl target, the real-agent fixtures and their sandboxes, which
//! need root and a Docker engine) is reported loudly in the output; that
//! fails this test only when `CI` is set, where every peer must be there.

use std::process::Command;

use crate::harness::ci;

const SECTIONS: [&str; 10] = [
    "| 1 download",
    "| 2 restart",
    "| 3 idle",
    "| 4 update",
    "| 5 footprint",
    "| 6 real update",
    "| 7 real native",
    "| 8 real restart",
    "| 9 real idle",
    "| 10 real load",
];

#[test]
fn quick_benchmark_prints_every_section() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench.sh");
    let mut cmd = Command::new("bash");
    cmd.arg(script)
        .arg("--quick")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("NOTIFY_SOCKET")
        .env_remove("ECS_WARDEN_ROOT");
    // The script runs `cargo build --release`: give it the environment of a
    // shell, not the one cargo sets for tests, or the release build is
    // redone here and again on the next run from a shell.
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_BIN_")
            || matches!(
                k.as_ref(),
                "CARGO"
                    | "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "CARGO_RUSTC_CURRENT_DIR"
                    | "OUT_DIR"
            )
        {
            cmd.env_remove(&key);
        }
    }
    let out = cmd.output().expect("run bash scripts/bench.sh --quick");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench.sh --quick exited with {:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("| Section | Measure | ecs-warden | Peer |"),
        "no table header in:\n{stdout}"
    );
    for s in SECTIONS {
        let rows = stdout.lines().filter(|l| l.starts_with(s)).count();
        assert!(rows > 0, "no `{s}` row in the table:\n{stdout}");
    }
    // Every warden cell of the download and restart rows holds a number.
    for line in stdout
        .lines()
        .filter(|l| l.starts_with("| 1 download ") || l.starts_with("| 2 restart"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let warden = cells.get(3).copied().unwrap_or("");
        assert!(
            warden.starts_with(|c: char| c.is_ascii_digit()),
            "no figure for ecs-warden in: {line}"
        );
    }
    let missing: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("PEER MISSING"))
        .collect();
    if !missing.is_empty() {
        if ci() {
            panic!("benchmark peers are missing on CI:\n{}", missing.join("\n"));
        }
        eprintln!(
            "\n!!!! bench.sh --quick ran without some peers !!!!\n{}\n",
            missing.join("\n")
        );
    }
}
