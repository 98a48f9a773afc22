# shellcheck shell=bash
# docker-env.sh: make a container engine and the sample task image available
# to ecs-warden's tests, demo and benchmarks.
#
#   source scripts/docker-env.sh   # exports DOCKER_HOST; returns non-zero on failure
#   bash scripts/docker-env.sh     # prints the DOCKER_HOST to use
#
# Steps, each skipped when already done (so it is idempotent and quiet):
# 1. use the engine that answers `docker info` (DOCKER_HOST, or the default
#    socket, or a private engine this script started earlier); otherwise, as
#    root, install Debian's docker.io (and apparmor when the kernel enforces
#    it) if dockerd is missing, and start a private dockerd under
#    /tmp/ecs-warden-dockerd, waiting up to 60 s;
# 2. install busybox-static if /bin/busybox is missing or not static;
# 3. import the image ecs-warden-task:latest (a rootfs of busybox with sh and
#    sleep) if the engine does not have it.

ECS_WARDEN_DOCKERD_DIR=${ECS_WARDEN_DOCKERD_DIR:-/tmp/ecs-warden-dockerd}
ECS_WARDEN_TASK_IMAGE=${ECS_WARDEN_TASK_IMAGE:-ecs-warden-task:latest}

_ew_fail() {
    echo "docker-env: $*" >&2
    return 1
}

_ew_answers() { # HOST: does an engine answer there?
    DOCKER_HOST=$1 timeout 10 docker info >/dev/null 2>&1
}

_EW_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

_ew_apt_install() { # PACKAGE...
    bash "$_EW_SCRIPTS/apt-install.sh" "$@" || {
        _ew_fail "cannot install $*"
        return 1
    }
}

_ew_engine() {
    local private="unix://$ECS_WARDEN_DOCKERD_DIR/docker.sock"
    local default="unix:///var/run/docker.sock"
    if command -v docker >/dev/null 2>&1; then
        if [ -n "${DOCKER_HOST:-}" ] && _ew_answers "$DOCKER_HOST"; then
            export DOCKER_HOST
            return 0
        fi
        local host
        for host in "$default" "$private"; do
            if _ew_answers "$host"; then
                export DOCKER_HOST="$host"
                return 0
            fi
        done
    fi

    # No engine answers: start a private one.
    if [ "$(id -u)" != 0 ]; then
        _ew_fail "no docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset}); start one, or run this as root to start a private one"
        return 1
    fi
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
        # docker.io brings dockerd, the CLI, containerd, runc and iptables.
        # Of what it recommends only apparmor matters here: with AppArmor
        # on in the kernel, dockerd needs apparmor_parser to start any
        # container. (git and xz-utils serve builds and pulls, not this.)
        local pkgs=(docker.io)
        [ "$(cat /sys/module/apparmor/parameters/enabled 2>/dev/null)" = Y ] && pkgs+=(apparmor)
        _ew_apt_install "${pkgs[@]}" || return 1
    fi
    mkdir -p "$ECS_WARDEN_DOCKERD_DIR" || {
        _ew_fail "cannot create $ECS_WARDEN_DOCKERD_DIR"
        return 1
    }
    local pidfile="$ECS_WARDEN_DOCKERD_DIR/docker.pid"
    local log="$ECS_WARDEN_DOCKERD_DIR/dockerd.log"
    if ! { [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; }; then
        rm -f "$pidfile" "$ECS_WARDEN_DOCKERD_DIR/docker.sock"
        setsid dockerd \
            --host "$private" \
            --data-root "$ECS_WARDEN_DOCKERD_DIR/data" \
            --exec-root "$ECS_WARDEN_DOCKERD_DIR/exec" \
            --pidfile "$pidfile" \
            </dev/null >>"$log" 2>&1 &
        disown 2>/dev/null || true
    fi
    local i
    for i in $(seq 1 60); do
        if _ew_answers "$private"; then
            export DOCKER_HOST="$private"
            return 0
        fi
        sleep 1
    done
    _ew_fail "the private dockerd did not answer within 60s; see $log"
    return 1
}

_ew_busybox() {
    # The image needs a static busybox: a dynamic one cannot run in an
    # otherwise empty root file system.
    if [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then
        return 0
    fi
    _ew_apt_install busybox-static || return 1
    [ -x /bin/busybox ] || {
        _ew_fail "busybox-static is installed but /bin/busybox is missing"
        return 1
    }
}

_ew_image() {
    if docker image inspect "$ECS_WARDEN_TASK_IMAGE" >/dev/null 2>&1; then
        return 0
    fi
    local root
    root=$(mktemp -d "${TMPDIR:-/tmp}/ecs-warden-rootfs.XXXXXX") || {
        _ew_fail "cannot create a temporary directory"
        return 1
    }
    mkdir -p "$root/bin" "$root/tmp" &&
        cp /bin/busybox "$root/bin/busybox" &&
        ln -s busybox "$root/bin/sh" &&
        ln -s busybox "$root/bin/sleep" &&
        tar -C "$root" -c . | docker import - "$ECS_WARDEN_TASK_IMAGE" >/dev/null
    local status=$?
    rm -rf "$root"
    [ "$status" = 0 ] || {
        _ew_fail "cannot import $ECS_WARDEN_TASK_IMAGE into the engine at $DOCKER_HOST"
        return 1
    }
}

ecs_warden_docker_env() {
    _ew_engine && _ew_busybox && _ew_image
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    # Run, not sourced.
    ecs_warden_docker_env || exit 1
    echo "$DOCKER_HOST"
else
    ecs_warden_docker_env
fi
