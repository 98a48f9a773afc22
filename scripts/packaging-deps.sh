#!/usr/bin/env bash
# packaging-deps.sh: install what scripts/build-rpm.sh and tests/slow/packaging.rs
# need, on Debian/Ubuntu, as root. Idempotent; quiet unless something fails.
#
#   bash scripts/packaging-deps.sh
#
#   rpm                    rpmbuild, and rpm --root for the install tests
#   rpmlint                the lint test
#   musl-tools             musl-gcc, for ring's C code (x86_64 static build)
#   gcc-aarch64-linux-gnu  cross compiler and linker (aarch64 static build)
#   busybox-static         /bin/sh and friends inside the test chroots
#   systemd                systemd-analyze, for `verify` of ecs.service
# and the rustup targets x86_64- and aarch64-unknown-linux-musl.
# Optional, not installed here: qemu-user-static (the aarch64 test then also
# runs the aarch64 binary).

set -euo pipefail
die() { echo "packaging-deps.sh: $*" >&2; exit 1; }

missing=()
have() { command -v "$1" >/dev/null 2>&1; }
have rpmbuild || missing+=(rpm)
have rpmlint || missing+=(rpmlint)
have musl-gcc || missing+=(musl-tools)
have aarch64-linux-gnu-gcc || missing+=(gcc-aarch64-linux-gnu)
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || missing+=(busybox-static)
have systemd-analyze || missing+=(systemd)

if [ ${#missing[@]} -gt 0 ]; then
    have apt-get || die "cannot install ${missing[*]}: no apt-get"
    [ "$(id -u)" = 0 ] || die "cannot install ${missing[*]}: not root"
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    if ! { apt-get update && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "apt-get install ${missing[*]} failed"
    fi
fi

if have rustup; then
    installed=$(rustup target list --installed)
    for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t" >/dev/null 2>&1 \
            || die "rustup target add $t failed"
    done
fi
