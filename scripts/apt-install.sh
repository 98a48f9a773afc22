#!/usr/bin/env bash
# apt-install.sh: install the named Debian packages that are not installed,
# as root, without their recommendations; idempotent, quiet when there is
# nothing to do.
#
#   bash scripts/apt-install.sh PACKAGE...
#
# "Installed" is dpkg's own word for it (`${db:Status-Status}` is
# `installed`): not `dpkg -s`, which also succeeds for a package that was
# removed but left its config files, and not `command -v TOOL`, which says
# nothing of the files a package brings beside its tool (a cross compiler
# is there while its C library's headers are not). So every package a
# script relies on is named, recommendations included.
#
# No package may start a service while it is installed here (nginx on
# :80, a system dockerd): a policy-rc.d that refuses is in place for the
# install, unless the machine has its own.
#
# Exits non-zero, naming the packages, when some are missing and cannot be
# installed (not root, no apt-get, apt-get failed; its log's end is shown).
set -euo pipefail
die() { echo "apt-install.sh: $*" >&2; exit 1; }

missing=()
for p in "$@"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
[ "${#missing[@]}" -gt 0 ] || exit 0

command -v apt-get >/dev/null 2>&1 || die "missing Debian packages: ${missing[*]}; and no apt-get to install them"
[ "$(id -u)" = 0 ] || die "missing Debian packages: ${missing[*]}; install them, or run this as root"
echo "apt-install.sh: installing ${missing[*]}" >&2
log=$(mktemp "${TMPDIR:-/tmp}/ecs-warden-apt.XXXXXX")
guard=
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    guard=/usr/sbin/policy-rc.d
fi
trap 'rm -f "$log" $guard' EXIT
if ! { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    die "apt-get install ${missing[*]} failed"
fi
