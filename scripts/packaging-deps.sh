#!/usr/bin/env bash
# packaging-deps.sh: install what scripts/build-rpm.sh and tests/slow/packaging.rs
# need, on Debian/Ubuntu, as root. Idempotent; quiet unless something fails.
#
#   bash scripts/packaging-deps.sh
#
#   rpm                       rpmbuild, and rpm --root for the install tests
#   rpmlint                   the lint test
#   musl-tools musl-dev       musl-gcc and musl's headers, for ring's C code
#                             (x86_64 static build)
#   gcc-aarch64-linux-gnu     cross compiler and linker (aarch64 static build)
#   binutils-aarch64-linux-gnu  aarch64-linux-gnu-ar, for ring's archive
#   libc6-dev-arm64-cross     the headers ring's C includes for aarch64
#                             (bits/libc-header-start.h): only recommended
#                             by the cross compiler, so named here
#   busybox-static            /bin/sh and friends inside the test chroots
#   systemd                   systemd-analyze, for `verify` of ecs.service
# (checked and installed by scripts/apt-install.sh), and the rustup targets
# x86_64- and aarch64-unknown-linux-musl.
# Optional, not installed here: qemu-user-static (the aarch64 test then also
# runs the aarch64 binary).

set -euo pipefail
die() { echo "packaging-deps.sh: $*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }

bash "$(dirname "$0")/apt-install.sh" rpm rpmlint musl-tools musl-dev \
    gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross \
    busybox-static systemd

if have rustup; then
    installed=$(rustup target list --installed)
    for t in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t" >/dev/null 2>&1 \
            || die "rustup target add $t failed"
    done
fi
