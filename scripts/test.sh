#!/usr/bin/env bash
# test.sh: the README's test command. Installs what the tests need
# (scripts/setup.sh), makes a Docker engine available, builds, and runs the
# whole suite against the built binaries.
#
#   bash scripts/test.sh [extra cargo test arguments]
#
# With CI set to a non-empty value (.ci/run exports CI=true) every test that
# needs Docker, rpm, the AWS CLI, boto3 or botocore fails instead of
# skipping when its tool is missing (tests/it/harness/tools.rs); CI is
# passed on to the tests as it is. The run covers both test targets: the
# fast suite (tests/it) and the slow one (tests/slow: RPM and benchmark
# builds).
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
export DOCKER_HOST

cargo build --features failpoints --bins
cargo test --features failpoints "$@"
