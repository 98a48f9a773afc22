#!/usr/bin/env bash
# setup.sh: install everything ecs-warden's tests, demo and benchmarks need,
# on a Debian machine, idempotently. Quiet when there is nothing to do.
#
#   bash scripts/setup.sh            # test dependencies
#   bash scripts/setup.sh --bench    # plus the benchmark peers
#
# 1. Debian packages that are missing (scripts/apt-install.sh, as root).
# 2. The AWS CLI v1 and boto3 (pip) when `aws` or `import boto3` fail.
# 3. The packaging tools and musl targets (scripts/packaging-deps.sh).
# 4. A Docker engine and the task image (scripts/docker-env.sh).
# 5. What the real-agent tests use (scripts/real-agent.sh deps: iproute2,
#    util-linux, xz-utils, fuse-overlayfs, docker.io, python's websockets);
#    in CI, proof that a loopback-only network namespace can be made here
#    (the real agent runs nowhere else), and the real-agent fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, by name (scripts/apt-install.sh says why not by command).
# A fresh Debian 12 has only the Essential and "required" packages; these
# are what the build and the tests call beyond those:
#   gcc libc6-dev          cargo's linker (cc) and ring's C code: the
#                          compiler, and the headers and crt files, which
#                          gcc only recommends
#   binutils               strip (the tests' small agent builds), ar, ld
#   procps                 kill (tests/it/sample_agent.rs)
#   mount e2fsprogs        mount/umount of a tmpfs, chattr (tests/it/faults.rs)
#   iptables iproute2      the host network tests, in network namespaces
#   util-linux             they make (unshare, nsenter)
#   xz-utils               the real-agent fixtures and their private
#   fuse-overlayfs         engines
#   busybox-static         the task image, the packaging tests' chroots
#   ca-certificates curl   https for pip; curl for demo.sh and bench.sh
#   python3 python3-pip    the AWS CLI and boto3/botocore, below
# and with --bench what scripts/bench.sh runs as peers:
#   nginx-light s6 runit openssl time
want=(gcc libc6-dev binutils procps mount e2fsprogs iptables iproute2 util-linux
    xz-utils fuse-overlayfs busybox-static ca-certificates curl)
if [ "${1:-}" = "--bench" ]; then
    want+=(nginx-light s6 runit openssl time)
fi
# python3 and pip may come from elsewhere (pyenv), and then the AWS CLI
# goes there: for them only the commands matter.
command -v python3 >/dev/null 2>&1 || want+=(python3)
python3 -m pip --version >/dev/null 2>&1 || want+=(python3-pip)
bash scripts/apt-install.sh "${want[@]}"

if ! command -v aws >/dev/null 2>&1 || ! python3 -c 'import boto3' >/dev/null 2>&1; then
    echo "setup: installing awscli and boto3 with pip" >&2
    python3 -m pip install -q awscli boto3 2>/dev/null ||
        python3 -m pip install -q --break-system-packages awscli boto3
fi

bash scripts/packaging-deps.sh

# shellcheck source=scripts/docker-env.sh
if ! source scripts/docker-env.sh; then
    [ -n "${CI:-}" ] && exit 1
    echo "setup: !!! no Docker engine: the tests that need one will be SKIPPED !!!" >&2
fi

if ! bash scripts/real-agent.sh deps; then
    [ -n "${CI:-}" ] && exit 1
    echo "setup: !!! the real-agent tools are missing: the real-agent tests will be SKIPPED !!!" >&2
fi
if [ -n "${CI:-}" ]; then
    # The real agent may only run in a namespace that has nothing but
    # loopback: CI fails here if none can be made, and builds the fixtures
    # once before the tests (they are also built on first use).
    bash scripts/real-agent.sh check >/dev/null || {
        echo "setup: cannot make a loopback-only network namespace; the real agent must not run" >&2
        exit 1
    }
    bash scripts/real-agent.sh fixtures >/dev/null
fi
