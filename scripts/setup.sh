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
set -euo pipefail
cd "$(dirname "$0")/.."

# iptables, iproute2, util-linux (unshare, nsenter) and mount: the host
# network tests, in network namespaces they make.
want=(busybox-static python3 python3-pip curl ca-certificates iptables iproute2 util-linux mount)
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
