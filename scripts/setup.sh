#!/usr/bin/env bash
# setup.sh: install everything ecs-warden's tests, demo and benchmarks need,
# on a Debian machine, idempotently. Quiet when there is nothing to do.
#
#   bash scripts/setup.sh            # test dependencies
#   bash scripts/setup.sh --bench    # plus the benchmark peers
#
# 1. Debian packages that are missing (apt-get, as root).
# 2. The AWS CLI v1 and boto3 (pip) when `aws` or `import boto3` fail.
# 3. The packaging tools and musl targets (scripts/packaging-deps.sh).
# 4. A Docker engine and the task image (scripts/docker-env.sh).
# 5. What the real-agent tests use (scripts/real-agent.sh deps: iproute2,
#    util-linux, xz-utils, fuse-overlayfs, docker.io, python's websockets);
#    in CI, proof that a loopback-only network namespace can be made here
#    (the real agent runs nowhere else), and the real-agent fixtures.
set -euo pipefail
cd "$(dirname "$0")/.."

# iptables, iproute2, util-linux (unshare, nsenter) and mount: the host
# network tests, in network namespaces they make; xz-utils and
# fuse-overlayfs: the real-agent fixtures and their private engines.
want=(busybox-static python3 python3-pip curl ca-certificates iptables iproute2 util-linux mount xz-utils fuse-overlayfs)
if [ "${1:-}" = "--bench" ]; then
    want+=(nginx-light s6 runit openssl hyperfine)
fi

missing=()
for p in "${want[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# python3/pip may come from elsewhere (pyenv): only the commands matter.
if command -v python3 >/dev/null 2>&1; then
    missing=("${missing[@]/python3}")
    python3 -m pip --version >/dev/null 2>&1 && missing=("${missing[@]/python3-pip}")
fi
read -r -a missing <<<"${missing[*]:-}"
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]}; install them or run as root" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}" >&2
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        echo "setup: apt-get install failed; see $log" >&2
        tail -20 "$log" >&2
        exit 1
    fi
    rm -f "$log"
fi

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
