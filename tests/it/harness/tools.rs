//! The one switch for tests that need a tool this machine may lack (a
//! Docker engine, rpm, the AWS CLI, boto3, botocore, a tmpfs mount, ...).
//!
//! 1. The test checks its tool first: `if !docker_available(test) { return; }`.
//! 2. When the tool works, the check returns `true` and the test runs.
//! 3. When it does not and `CI` is set to a non-empty value (`.ci/run`
//!    exports `CI=true`), the check panics: in CI every test must run.
//! 4. Otherwise (a developer machine) it prints a loud
//!    `!!!! SKIPPING <test> ... !!!!` banner straight to stderr (not the
//!    captured test output, so it is seen even when the test passes) and
//!    returns `false`: the test returns without asserting anything.

use std::io::Write;
use std::process::{Command, Stdio};

/// Whether this is a CI run: `CI` set and not empty.
pub fn ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// `ok`, passed through; when it is `false`, fail the test in CI or say
/// loudly that it is skipped. `what` names the missing tool, `install`
/// how to get it.
pub fn require(test: &str, ok: bool, what: &str, install: &str) -> bool {
    if !ok {
        unavailable(test, &format!("{what} is missing; {install}"));
    }
    ok
}

/// `test` cannot run, for the reason `why`: fail it in CI, else say loudly
/// that it is skipped (the caller then returns).
pub fn unavailable(test: &str, why: &str) {
    if ci() {
        panic!("{test}: {why} (CI is set, so this fails instead of skipping)");
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "\n!!!! SKIPPING {test}: {why}; this test did NOT run !!!!\n"
    );
}

/// Whether `cmd` runs and exits 0 (its output discarded).
pub fn works(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether `docker ARGS` succeeds (output discarded).
pub fn docker_ok(args: &[&str]) -> bool {
    works(Command::new("docker").args(args))
}

/// Whether a Docker engine answers.
pub fn docker_available(test: &str) -> bool {
    require(
        test,
        docker_ok(&["version", "--format", "{{.Server.Version}}"]),
        "a Docker engine",
        "run scripts/docker-env.sh",
    )
}

/// Make sure the task image exists (scripts/docker-env.sh imports it; CI
/// runs that script before the tests).
pub fn ensure_task_image() {
    if !docker_ok(&["image", "inspect", "ecs-warden-task:latest"]) {
        let st = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/scripts/docker-env.sh"
            ))
            .status()
            .expect("run scripts/docker-env.sh");
        assert!(st.success(), "scripts/docker-env.sh failed");
    }
}

/// Whether the AWS CLI runs.
pub fn aws_available(test: &str) -> bool {
    require(
        test,
        works(Command::new("aws").arg("--version")),
        "the AWS CLI (`aws`)",
        "bash scripts/setup.sh (pip install awscli)",
    )
}

/// Whether python3 can import boto3.
pub fn boto3_available(test: &str) -> bool {
    require(
        test,
        works(Command::new("python3").args(["-c", "import boto3"])),
        "python3 with boto3",
        "bash scripts/setup.sh (pip install boto3)",
    )
}

/// Whether python3 can import botocore.
pub fn botocore_available(test: &str) -> bool {
    require(
        test,
        works(Command::new("python3").args(["-c", "import botocore"])),
        "python3 with botocore",
        "bash scripts/setup.sh (pip install botocore)",
    )
}
