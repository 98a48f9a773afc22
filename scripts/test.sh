#!/usr/bin/env bash
# test.sh: the README's test command. Installs what the tests need
# (scripts/setup.sh), makes a Docker engine available, builds, and runs the
# whole suite against the built binaries.
#
#   bash scripts/test.sh [extra cargo test arguments]
#
# With CI=true (set by .ci/run) every test that needs Docker, rpm, the AWS
# CLI or botocore fails instead of skipping when its tool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/setup.sh
source scripts/setup.sh
if [ -n "${CI:-}" ]; then
    export ECS_WARDEN_REQUIRE_DOCKER=1
fi
export DOCKER_HOST

cargo build --features failpoints --bins
cargo test --features failpoints "$@"
