#!/usr/bin/env bash
# build-rpm.sh: build the ecs-warden RPM from this source tree, in one command.
#
#   bash scripts/build-rpm.sh [--release N] [--arch x86_64|aarch64] [--out DIR]
#
# 1. Installs what is missing (Debian/Ubuntu, as root): the rustup target
#    <arch>-unknown-linux-musl, musl-tools (ring's C code for x86_64),
#    gcc-aarch64-linux-gnu with libc6-dev-arm64-cross (ring's C code and
#    the linker for aarch64), rpm.
# 2. Builds the static binary:
#      cargo build --release --target <arch>-unknown-linux-musl --bin ecs-warden
# 3. Packs it with packaging/ecs.service, packaging/ecs-warden.tmpfiles,
#    packaging/ecs.config (and README.md, LICENSE when present) into the
#    source tarball, and runs rpmbuild -bb on rpm/ecs-warden.spec in a
#    temporary _topdir. rpmbuild never runs cargo.
# 4. Copies the package to DIR (default dist/) and prints its path, e.g.
#      dist/ecs-warden-0.1.0-1.x86_64.rpm
#    and nothing else on success. On failure it prints the failing step's
#    log and exits non-zero.
#
# Options:
#   --release N  RPM release number (default $ECS_WARDEN_RPM_RELEASE, else 1).
#                The version always comes from Cargo.toml.
#   --arch A     x86_64 (default) or aarch64 (cross-built with
#                gcc-aarch64-linux-gnu).
#   --out DIR    where to put the RPM (default dist/ in the source tree).
#   --packaging-dir DIR
#                take ecs.service, ecs-warden.tmpfiles and ecs.config from DIR
#                (default packaging/); the tests build a release with changed
#                defaults this way.
#   --no-install never run apt-get or rustup; fail if something is missing.
#   -h, --help   this text.
#
# Environment: ECS_WARDEN_RPM_RELEASE (as --release), ECS_WARDEN_RPM_PACKAGER
# (the Packager tag), CARGO_TARGET_DIR (honoured), TMPDIR.
#
# The test-only tools (rpmlint, busybox-static, systemd-analyze) are
# installed by scripts/packaging-deps.sh.

set -euo pipefail

usage() { sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0"; }
die() { echo "build-rpm.sh: $*" >&2; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
release=${ECS_WARDEN_RPM_RELEASE:-1}
arch=x86_64
out=$repo/dist
packaging=$repo/packaging
install_missing=1

while [ $# -gt 0 ]; do
    case $1 in
        --release) [ $# -ge 2 ] || die "--release needs a number"; release=$2; shift 2 ;;
        --release=*) release=${1#*=}; shift ;;
        --arch) [ $# -ge 2 ] || die "--arch needs x86_64 or aarch64"; arch=$2; shift 2 ;;
        --arch=*) arch=${1#*=}; shift ;;
        --out) [ $# -ge 2 ] || die "--out needs a directory"; out=$2; shift 2 ;;
        --out=*) out=${1#*=}; shift ;;
        --packaging-dir) [ $# -ge 2 ] || die "--packaging-dir needs a directory"; packaging=$2; shift 2 ;;
        --packaging-dir=*) packaging=${1#*=}; shift ;;
        --no-install) install_missing=0; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
done

[[ $release =~ ^[1-9][0-9]*$ ]] || die "release must be a positive integer, not '$release'"
case $arch in
    x86_64|aarch64) ;;
    *) die "arch must be x86_64 or aarch64, not '$arch'" ;;
esac
target=$arch-unknown-linux-musl
for f in ecs.service ecs-warden.tmpfiles ecs.config; do
    [ -f "$packaging/$f" ] || die "missing $packaging/$f"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/ecs-warden-rpm.XXXXXX")
trap 'rm -rf "$work"' EXIT
log=$work/build.log

# Run a step quietly; on failure show its output and stop.
step() {
    local what=$1; shift
    if ! "$@" >"$log" 2>&1; then
        echo "build-rpm.sh: $what failed: $*" >&2
        tail -n 60 "$log" >&2
        exit 1
    fi
}

apt_updated=0
apt_install() {
    [ "$install_missing" = 1 ] || die "missing $* (run without --no-install, or: apt-get install $*)"
    command -v apt-get >/dev/null || die "missing $*, and no apt-get to install it with"
    [ "$(id -u)" = 0 ] || die "missing $*; installing it needs root (apt-get install $*)"
    if [ "$apt_updated" = 0 ]; then
        step "apt-get update" apt-get update
        apt_updated=1
    fi
    step "apt-get install $*" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
}

# 1. Tools.
command -v cargo >/dev/null || die "cargo not found (install Rust with rustup)"
if ! rustc --print sysroot >/dev/null 2>&1 \
    || [ ! -d "$(rustc --print sysroot)/lib/rustlib/$target" ]; then
    [ "$install_missing" = 1 ] || die "the Rust target $target is not installed (rustup target add $target)"
    command -v rustup >/dev/null || die "the Rust target $target is not installed, and rustup is not available"
    step "rustup target add $target" rustup target add "$target"
fi
if [ "$arch" = x86_64 ]; then
    command -v musl-gcc >/dev/null || apt_install musl-tools
else
    # The cross compiler only recommends the headers ring's C includes
    # (bits/libc-header-start.h): check the packages, not the command.
    cross=()
    for p in gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross; do
        [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || cross+=("$p")
    done
    [ "${#cross[@]}" = 0 ] || apt_install "${cross[@]}"
    # ring compiles C (and assembly) for the target; the glibc cross compiler
    # is enough for that, and links the static musl binary.
    export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
    export AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
fi
command -v rpmbuild >/dev/null || apt_install rpm

# 2. The static binary.
version=$(awk '
    /^\[/ { in_pkg = ($0 == "[package]") }
    in_pkg && /^version[ \t]*=/ { gsub(/.*=[ \t]*"|".*/, ""); print; exit }
' "$repo/Cargo.toml")
[ -n "$version" ] || die "no version in [package] of $repo/Cargo.toml"

step "cargo build" cargo build --manifest-path "$repo/Cargo.toml" --locked \
    --release --target "$target" --bin ecs-warden
target_dir=$(cargo metadata --manifest-path "$repo/Cargo.toml" --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=${target_dir:-$repo/target}/$target/release/ecs-warden
[ -x "$bin" ] || die "cargo build succeeded but $bin is missing"

# 3. Source tarball and rpmbuild.
name=ecs-warden-$version
mkdir -p "$work/SOURCES" "$work/stage/$name"
cp "$bin" "$work/stage/$name/ecs-warden"
cp "$packaging/ecs.service" "$packaging/ecs-warden.tmpfiles" \
    "$packaging/ecs.config" "$work/stage/$name/"
defines=()
if [ -f "$repo/README.md" ]; then
    cp "$repo/README.md" "$work/stage/$name/"
    defines+=(--define "have_readme 1")
fi
if [ -f "$repo/LICENSE" ]; then
    cp "$repo/LICENSE" "$work/stage/$name/"
    defines+=(--define "have_license 1")
fi
# Reproducible: file times and the build time come from the last commit.
epoch=$(git -C "$repo" log -1 --format=%ct 2>/dev/null || true)
export SOURCE_DATE_EPOCH=${epoch:-$(date +%s)}
step "tar" tar -C "$work/stage" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="@$SOURCE_DATE_EPOCH" -czf "$work/SOURCES/$name-$arch.tar.gz" "$name"

step "rpmbuild" rpmbuild -bb \
    --target "$arch-linux" \
    --define "_topdir $work" \
    --define "warden_version $version" \
    --define "warden_release $release" \
    --define "warden_arch $arch" \
    --define "packager ${ECS_WARDEN_RPM_PACKAGER:-ecs-warden developers}" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    "${defines[@]}" \
    "$repo/rpm/ecs-warden.spec"

# 4. Deliver.
rpm=$work/RPMS/$arch/$name-$release.$arch.rpm
[ -f "$rpm" ] || { tail -n 60 "$log" >&2; die "rpmbuild did not produce $rpm"; }
mkdir -p "$out"
cp "$rpm" "$out/"
out_abs=$(cd "$out" && pwd)
case $out_abs in
    "$PWD"/*) echo "${out_abs#"$PWD"/}/$(basename "$rpm")" ;;
    *) echo "$out_abs/$(basename "$rpm")" ;;
esac
