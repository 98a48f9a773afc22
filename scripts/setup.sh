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
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, by name (scripts/apt-install.sh says why not by command).
# A fresh Debian 12 has only the Essential and "required" packages; these
# are what the build and the tests call beyond those:
#   gcc libc6-dev          cargo's linker (cc) and ring's C code: the
#                          compiler, and the headers and crt files, which
#                          gcc only recommends
#   binutils               strip (the tests' small agent builds), ar, ld
#   procps                 kill (tests/sample_agent.rs)
#   mount e2fsprogs        mount/umount of a tmpfs, chattr (tests/faults.rs)
#   iptables iproute2      the host network tests, in network namespaces
#   util-linux             they make (unshare, nsenter)
#   busybox-static         the task image, the packaging tests' chroots
#   ca-certificates curl   https for pip; curl for demo.sh and bench.sh
#   python3 python3-pip    the AWS CLI and boto3/botocore, below
# and with --bench what scripts/bench.sh runs as peers:
#   nginx-light s6 runit openssl time
want=(gcc libc6-dev binutils procps mount e2fsprogs iptables iproute2 util-linux
    busybox-static ca-certificates curl)
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
