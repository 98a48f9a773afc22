#!/usr/bin/env bash
# real-agent.sh: run the REAL ECS agent and ecs-init safely, for the tests,
# the demo and the benchmarks. Two jobs:
#
# Fixtures (`fixtures`): from ../shared/real-agent/ (read-only), a cache in
# target/real-agent/ (or $ECS_WARDEN_REAL_AGENT_CACHE), rebuilt only when the
# inputs or the recipe change, under a lock (parallel callers wait):
#   1. bin/: the three binaries, decompressed and checked against SHA256SUMS,
#      plus amazon-ecs-agent-1.105.3-broken (prints a 1.105.3 banner for
#      -version/--version, otherwise exits 1 at once);
#   2. images/: `docker save` tarballs built in a private engine (so no tag
#      ever appears on the machine's engine): ecs-agent-v1.105.1.tar and
#      ecs-agent-v1.105.2.tar (AWS's form: amazon/amazon-ecs-agent:latest,
#      entrypoint /agent, CA bundle at /etc/ssl/certs/ca-certificates.crt,
#      layers as upstream's Dockerfile.release), ecs-agent-v1.105.3.tar (the
#      broken entrypoint), ecs-warden-task.tar (ecs-warden-task:latest, a
#      busybox rootfs); SHA256SUMS and `docker inspect` JSON beside them.
#
# Sandboxes: the agent only ever runs in a network namespace that has
# nothing but loopback, and so does every engine whose host-network
# containers run it. A sandbox is one such namespace, `ewt-<owner>-<rand>`,
# with its state in /tmp/ecs-warden-sandboxes/<name>/ (or
# $ECS_WARDEN_SANDBOX_BASE), tied to an owner process:
#   netns-up [--owner PID]  make it (lo up, checked to hold only lo); prints NAME
#   dockerd-exec NAME       exec a private dockerd in it (foreground), inside
#                           a private mount namespace (the "jail") whose
#                           /etc /usr /var /root /mnt are overlays, so
#                           nothing the engine or ecs-init writes there (bind
#                           sources, /var/cache/ecs ...) reaches the host
#   dockerd-up NAME         the same in the background; waits; prints DOCKER_HOST
#   standin-up NAME [--files DIR] [args]  the control-plane stand-in
#                           (scripts/ecs-standin.py) in it; prints its info JSON
#   enter NAME [--jail] -- CMD...  exec CMD in the namespace (and the jail)
#   dockerd-down NAME       remove every container, stop the engine
#   netns-down NAME         stop everything in it, delete it and its state
#   sweep                   netns-down every sandbox whose owner is gone
#   check                   can a sandbox be made here? (CI fails if not)
#   deps                    install (as root, by name) what all this uses
#
# Nothing here leaks: processes are found by namespace and by container
# cgroup, mounts live in namespaces that die with their processes, and the
# only host mount (the /run/netns/NAME handle) goes with `ip netns delete`.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SELF="$ROOT/scripts/real-agent.sh"
CACHE=${ECS_WARDEN_REAL_AGENT_CACHE:-$ROOT/target/real-agent}
BASE=${ECS_WARDEN_SANDBOX_BASE:-/tmp/ecs-warden-sandboxes}
# Bump when the images' recipe changes: the cache is rebuilt.
RECIPE=4
AGENT_VERSIONS=(1.105.1 1.105.2)
BROKEN_VERSION=1.105.3
JAIL_DIRS=(etc usr var root mnt)

die() {
    echo "real-agent: $*" >&2
    exit 1
}
note() { echo "real-agent: $*" >&2; }

# ---- dependencies -------------------------------------------------------

_apt() { # PACKAGE...: install by name, as root
    [ "$(id -u)" = 0 ] || die "missing $*; install it (apt-get install $*) or run as root"
    command -v apt-get >/dev/null 2>&1 || die "missing $* and there is no apt-get"
    local log="${TMPDIR:-/tmp}/ecs-warden-apt-real-agent.log"
    note "installing $*"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"; } >"$log" 2>&1; then
        tail -20 "$log" >&2
        die "apt-get install $* failed; see $log"
    fi
}

_need() { # COMMAND PACKAGE
    command -v "$1" >/dev/null 2>&1 || _apt "$2"
}

python_bin() {
    # The real interpreter, not a pyenv shim (a shim forks: its $! is not
    # the server's PID).
    python3 -c 'import sys; print(sys.executable)'
}

deps() {
    _need ip iproute2
    _need nsenter util-linux
    _need unshare util-linux
    _need flock util-linux
    _need xz xz-utils
    _need sha256sum coreutils
    _need python3 python3
    _need fuse-overlayfs fuse-overlayfs
    [ -e /dev/fuse ] || note "warning: /dev/fuse is missing; fuse-overlayfs engines will fail (ECS_WARDEN_SANDBOX_STORAGE=overlay2 avoids it)"
    [ -s /etc/ssl/certs/ca-certificates.crt ] || _apt ca-certificates
    if ! [ -x /bin/busybox ] || ldd /bin/busybox >/dev/null 2>&1; then _apt busybox-static; fi
    if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then _apt docker.io; fi
    if ! python3 -c 'import websockets.sync.server' >/dev/null 2>&1; then
        note "installing the python module websockets (>=13) with pip"
        python3 -m pip install -q 'websockets>=13' 2>/dev/null ||
            python3 -m pip install -q --break-system-packages 'websockets>=13' ||
            die "cannot install the python module websockets"
    fi
}

# ---- fixtures -------------------------------------------------------------

shared_dir() {
    # ../shared/real-agent from the project root; from a git worktree, the
    # one beside the main checkout.
    local c common
    for c in "${ECS_WARDEN_REAL_AGENT_DIR:-}" "$ROOT/../shared/real-agent"; do
        [ -n "$c" ] && [ -f "$c/SHA256SUMS" ] && { (cd "$c" && pwd); return 0; }
    done
    if common=$(git -C "$ROOT" rev-parse --path-format=absolute --git-common-dir 2>/dev/null); then
        c="$(dirname "$common")/../shared/real-agent"
        [ -f "$c/SHA256SUMS" ] && { (cd "$c" && pwd); return 0; }
    fi
    # A clone deeper in the same tree (a CI checkout under the work dir):
    # the nearest ancestor holding shared/real-agent.
    c=$(dirname "$ROOT")
    while [ "$c" != / ]; do
        c=$(dirname "$c")
        [ -f "$c/shared/real-agent/SHA256SUMS" ] && { (cd "$c/shared/real-agent" && pwd); return 0; }
    done
    # A clone of a local checkout elsewhere (`git clone . /tmp/fresh`): the
    # one beside the checkout it was cloned from.
    if common=$(git -C "$ROOT" remote get-url origin 2>/dev/null) && [ -d "$common" ]; then
        c="$common/../shared/real-agent"
        [ -f "$c/SHA256SUMS" ] && { (cd "$c" && pwd); return 0; }
    fi
    return 1
}

fixtures_stamp() { # SHARED
    printf 'recipe %s\n' "$RECIPE"
    cat "$1/SHA256SUMS"
}

fixtures_complete() { # SHARED
    local v f
    [ -f "$CACHE/stamp" ] && [ "$(cat "$CACHE/stamp")" = "$(fixtures_stamp "$1")" ] || return 1
    for v in "${AGENT_VERSIONS[@]}"; do
        for f in "bin/amazon-ecs-agent-$v" "images/ecs-agent-v$v.tar"; do [ -s "$CACHE/$f" ] || return 1; done
    done
    for f in bin/amazon-ecs-init-1.105.1 "bin/amazon-ecs-agent-$BROKEN_VERSION-broken" \
        "images/ecs-agent-v$BROKEN_VERSION.tar" images/ecs-warden-task.tar images/SHA256SUMS; do
        [ -s "$CACHE/$f" ] || return 1
    done
}

fixtures() {
    local shared
    shared=$(shared_dir) || die "no fixtures: ../shared/real-agent/SHA256SUMS not found from $ROOT (set ECS_WARDEN_REAL_AGENT_DIR)"
    mkdir -p "$CACHE"
    fixtures_complete "$shared" && { echo "$CACHE"; return 0; }
    exec 9>"$CACHE/.lock"
    flock 9
    # Someone else may have built it while we waited.
    fixtures_complete "$shared" && { echo "$CACHE"; return 0; }
    deps
    local t0=$SECONDS
    rm -rf "$CACHE/bin" "$CACHE/images" "$CACHE/stamp"
    mkdir -p "$CACHE/bin.tmp" "$CACHE/images.tmp"
    unpack "$shared" "$CACHE/bin.tmp"
    build_images "$shared" "$CACHE/bin.tmp" "$CACHE/images.tmp"
    mv "$CACHE/bin.tmp" "$CACHE/bin"
    mv "$CACHE/images.tmp" "$CACHE/images"
    fixtures_stamp "$shared" >"$CACHE/stamp"
    note "fixtures ready in $CACHE ($((SECONDS - t0)) s)"
    echo "$CACHE"
}

unpack() { # SHARED OUT
    local shared=$1 out=$2 name
    while read -r _ name; do
        [ -f "$shared/$name.xz" ] || die "$shared/SHA256SUMS names $name but $name.xz is missing"
        xz -dc "$shared/$name.xz" >"$out/$name.part" || die "cannot decompress $shared/$name.xz"
        chmod 0755 "$out/$name.part"
        mv "$out/$name.part" "$out/$name"
    done <"$shared/SHA256SUMS"
    (cd "$out" && sha256sum --quiet -c "$shared/SHA256SUMS") ||
        die "the decompressed binaries do not match $shared/SHA256SUMS"
    broken_agent >"$out/amazon-ecs-agent-$BROKEN_VERSION-broken"
    chmod 0755 "$out/amazon-ecs-agent-$BROKEN_VERSION-broken"
}

broken_agent() {
    # An agent build that cannot run: it knows its version, nothing else.
    # /bin/sh is the host's natively and busybox's in its image.
    cat <<EOF
#!/bin/sh
# ecs-warden test fixture: an agent build that cannot run.
case "\${1:-}" in
-version | --version)
    printf 'Amazon ECS Agent:\n\tVersion: $BROKEN_VERSION\n\tCommit: a8b3e7d3\n\tDirty: true\n'
    exit 0
    ;;
esac
echo "amazon-ecs-agent $BROKEN_VERSION (test fixture): this build cannot run" >&2
exit 1
EOF
}

build_images() { # SHARED BIN OUT
    local shared=$1 bin=$2 out=$3 ctx name host v
    ctx=$(mktemp -d "${TMPDIR:-/tmp}/ecs-warden-image-ctx.XXXXXX")
    name=$(netns_up "$$")
    # shellcheck disable=SC2064
    trap "rm -rf '$ctx'; '$SELF' netns-down '$name' >/dev/null 2>&1 || true" EXIT
    # Kernel overlay builds faster; fuse-overlayfs where it is refused.
    host=$(export ECS_WARDEN_SANDBOX_STORAGE=${ECS_WARDEN_FIXTURE_STORAGE:-overlay2}; dockerd_up "$name" 2>/dev/null) ||
        host=$(export ECS_WARDEN_SANDBOX_STORAGE=fuse-overlayfs; dockerd_up "$name")
    local D=(docker -H "$host")

    # The layers of upstream's scripts/dockerfiles/Dockerfile.release: the
    # amazon-ecs-scratch base (empty /tmp, /images, /amazon-ecs-cni-plugins),
    # /agent, LICENSE and NOTICE, the CA bundle. Not here: the pause image
    # tarball and the CNI plugins (so no awsvpc), THIRD_PARTY.
    mkdir -p "$ctx/base/tmp" "$ctx/base/images" "$ctx/base/amazon-ecs-cni-plugins" "$ctx/bin"
    cp "$shared/LICENSE" "$shared/NOTICE" "$ctx/"
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/ca-certificates.crt"
    cp /bin/busybox "$ctx/bin/busybox"
    ln -s busybox "$ctx/bin/sh"
    for v in "${AGENT_VERSIONS[@]}" "$BROKEN_VERSION"; do
        if [ "$v" = "$BROKEN_VERSION" ]; then
            cp "$bin/amazon-ecs-agent-$v-broken" "$ctx/agent"
            extra='COPY bin/ /bin/'
        else
            cp "$bin/amazon-ecs-agent-$v" "$ctx/agent"
            extra=
        fi
        cat >"$ctx/Dockerfile" <<EOF
FROM scratch
COPY base/ /
COPY agent /agent
$extra
COPY LICENSE NOTICE /
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
EXPOSE 51678 51679
HEALTHCHECK CMD ["/agent", "--healthcheck"]
ENV PATH /host/sbin:\$PATH
ENTRYPOINT ["/agent"]
EOF
        DOCKER_BUILDKIT=0 "${D[@]}" build -q -t amazon/amazon-ecs-agent:latest "$ctx" >/dev/null 2>"$ctx/build.log" ||
            { cat "$ctx/build.log" >&2; die "docker build of the $v image failed"; }
        "${D[@]}" save -o "$out/ecs-agent-v$v.tar" amazon/amazon-ecs-agent:latest ||
            die "docker save of the $v image failed"
        "${D[@]}" image inspect amazon/amazon-ecs-agent:latest >"$out/ecs-agent-v$v.inspect.json"
    done

    # The task image: busybox's sh and sleep in an otherwise empty root.
    mkdir -p "$ctx/task/bin" "$ctx/task/tmp"
    cp /bin/busybox "$ctx/task/bin/busybox"
    ln -s busybox "$ctx/task/bin/sh"
    ln -s busybox "$ctx/task/bin/sleep"
    tar -C "$ctx/task" -c . | "${D[@]}" import - ecs-warden-task:latest >/dev/null ||
        die "docker import of the task image failed"
    "${D[@]}" save -o "$out/ecs-warden-task.tar" ecs-warden-task:latest
    "${D[@]}" image inspect ecs-warden-task:latest >"$out/ecs-warden-task.inspect.json"
    chmod 0644 "$out"/*.tar
    (cd "$out" && sha256sum -- *.tar >SHA256SUMS)

    "$SELF" netns-down "$name" >/dev/null 2>&1 || true
    rm -rf "$ctx"
    trap - EXIT
}

# ---- sandboxes -------------------------------------------------------------

starttime() { # PID: the kernel's start time of PID (tells PID reuse apart)
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086
    set -- $stat
    echo "${20}"
}

valid_name() { [[ "$1" =~ ^ewt-[0-9]+-[0-9a-f]{6}$ ]] || die "not a sandbox name: '$1'"; }

state_dir() { echo "$BASE/$1"; }

netns_up() { # OWNER_PID: prints NAME
    local owner=$1 name dir st tmp
    [ "$(id -u)" = 0 ] || die "making a network namespace needs root"
    command -v ip >/dev/null 2>&1 || _apt iproute2
    st=$(starttime "$owner") || die "owner process $owner does not exist"
    name="ewt-$owner-$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')"
    dir=$(state_dir "$name")
    # The directory appears with its owner file (a rename), so a
    # concurrent sweep never sees it ownerless.
    mkdir -p "$BASE"
    tmp=$(mktemp -d "$BASE/.new.XXXXXX")
    echo "$owner $st" >"$tmp/owner"
    mv "$tmp" "$dir"
    ip netns add "$name" 2>"$dir/ip.err" || die "cannot make a network namespace ($name): $(cat "$dir/ip.err")"
    echo "$name" >"$dir/netns"
    ip -n "$name" link set lo up || die "cannot bring lo up in $name"
    # Nothing but loopback: one link, lo; no route that leaves it.
    local links routes
    links=$(ip -n "$name" -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
    [ "$links" = "lo " ] || die "namespace $name has links other than lo: $links"
    routes=$(ip -n "$name" route show; ip -n "$name" -6 route show | grep -v '^::1 ' || true)
    [ -z "$routes" ] || die "namespace $name has routes off loopback: $routes"
    echo "$name"
}

netns_path() { echo "/var/run/netns/$1"; }

jail_pid() { # NAME: the pid whose mount namespace is the jail, checked
    local dir pid want got
    dir=$(state_dir "$1")
    pid=$(cat "$dir/docker.pid" 2>/dev/null) || die "$1 has no private engine (no $dir/docker.pid)"
    want=$(cat "$dir/jail-mnt" 2>/dev/null) || die "$1 has no jail (no $dir/jail-mnt)"
    got=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null) || die "the private engine of $1 (pid $pid) is gone"
    [ "$got" = "$want" ] || die "pid $pid is not the private engine of $1 any more (mount ns $got, want $want)"
    [ "$got" != "$(readlink /proc/self/ns/mnt)" ] || die "the jail of $1 is the host's mount namespace"
    echo "$pid"
}

enter() { # NAME [--jail] -- CMD...
    local name=$1 jail=
    shift
    valid_name "$name"
    [ "${1:-}" = --jail ] && { jail=1; shift; }
    [ "${1:-}" = -- ] && shift
    [ $# -gt 0 ] || die "enter $name: no command"
    [ -e "$(netns_path "$name")" ] || die "no network namespace $name"
    if [ -n "$jail" ]; then
        # --wd=.: keep the working directory (entering a mount namespace
        # otherwise moves to its root).
        exec nsenter --net="$(netns_path "$name")" --mount="/proc/$(jail_pid "$name")/ns/mnt" --wd=. -- "$@"
    fi
    exec nsenter --net="$(netns_path "$name")" -- "$@"
}

jail_init() { # NAME CMD...: run inside `unshare --mount`; overlays, then exec
    local name=$1 dir d
    shift
    dir=$(state_dir "$name")
    mount --make-rprivate /
    for d in "${JAIL_DIRS[@]}"; do
        mkdir -p "$dir/jail/$d/up" "$dir/jail/$d/work"
        mount -t overlay "ewt-jail-$d" -o "lowerdir=/$d,upperdir=$dir/jail/$d/up,workdir=$dir/jail/$d/work" "/$d" 2>/dev/null ||
            fuse-overlayfs -o "lowerdir=/$d,upperdir=$dir/jail/$d/up,workdir=$dir/jail/$d/work" "/$d" ||
            die "cannot overlay /$d in the jail of $name (neither kernel overlay nor fuse-overlayfs)"
    done
    readlink /proc/self/ns/mnt >"$dir/jail-mnt"
    exec "$@"
}

dockerd_args() { # NAME
    local dir
    dir=$(state_dir "$1")
    echo '{}' >"$dir/daemon.json"
    printf '%s\n' \
        --host "unix://$dir/docker.sock" \
        --data-root "$dir/data" \
        --exec-root "$dir/exec" \
        --pidfile "$dir/docker.pid" \
        --config-file "$dir/daemon.json" \
        --storage-driver "${ECS_WARDEN_SANDBOX_STORAGE:-fuse-overlayfs}" \
        --bridge=none --iptables=false --ip6tables=false \
        --shutdown-timeout 5
}

dockerd_exec() { # NAME
    local name=$1 dir args
    valid_name "$name"
    dir=$(state_dir "$name")
    [ -e "$(netns_path "$name")" ] || die "no network namespace $name"
    command -v dockerd >/dev/null 2>&1 || _apt docker.io
    [ "${ECS_WARDEN_SANDBOX_STORAGE:-fuse-overlayfs}" != fuse-overlayfs ] || _need fuse-overlayfs fuse-overlayfs
    mapfile -t args < <(dockerd_args "$name")
    rm -f "$dir/docker.sock" "$dir/docker.pid" "$dir/jail-mnt"
    exec nsenter --net="$(netns_path "$name")" -- \
        unshare --mount --propagation private -- bash "$SELF" _jail "$name" dockerd "${args[@]}"
}

docker_answers() { docker -H "$1" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

dockerd_wait() { # NAME PID: wait until the engine answers (or its process died)
    local name=$1 pid=$2 host i
    host="unix://$(state_dir "$name")/docker.sock"
    for i in $(seq 1 600); do
        docker_answers "$host" && { echo "$host"; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    tail -20 "$(state_dir "$name")/dockerd.log" >&2 || true
    die "the private engine of $name did not answer (see $(state_dir "$name")/dockerd.log)"
}

dockerd_up() { # NAME: prints DOCKER_HOST
    local name=$1 dir pid
    valid_name "$name"
    dir=$(state_dir "$name")
    command -v docker >/dev/null 2>&1 || _apt docker.io
    setsid "$SELF" dockerd-exec "$name" </dev/null >>"$dir/dockerd.log" 2>&1 9>&- &
    pid=$!
    dockerd_wait "$name" "$pid"
}

dockerd_down() { # NAME
    local name=$1 dir host pid i ids
    valid_name "$name"
    dir=$(state_dir "$name")
    host="unix://$dir/docker.sock"
    pid=$(cat "$dir/docker.pid" 2>/dev/null || true)
    if [ -S "$dir/docker.sock" ] && docker_answers "$host"; then
        ids=$(docker -H "$host" ps -aq 2>/dev/null || true)
        # shellcheck disable=SC2086
        [ -z "$ids" ] || docker -H "$host" rm -f $ids >/dev/null 2>&1 || true
    fi
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)" = "$(cat "$dir/jail-mnt" 2>/dev/null)" ]; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 1 200); do
            [ -e "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    kill_containers "$name"
}

kill_containers() { # NAME: processes of the engine's containers, by cgroup
    local dir id pids
    dir=$(state_dir "$1")
    [ -d "$dir/data/containers" ] || return 0
    for id in $(ls "$dir/data/containers" 2>/dev/null); do
        [[ "$id" =~ ^[0-9a-f]{64}$ ]] || continue
        pids=$(grep -l -- "$id" /proc/[0-9]*/cgroup 2>/dev/null | cut -d/ -f3 || true)
        # shellcheck disable=SC2086
        [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        find /sys/fs/cgroup -depth -type d -name "*$id*" -exec rmdir {} + 2>/dev/null || true
    done
}

netns_pids() { # NAME: every process in the namespace but us
    ip netns pids "$1" 2>/dev/null | grep -v -x -e "$$" -e "${BASHPID:-$$}" || true
}

netns_down() { # NAME
    local name=$1 dir pids i
    valid_name "$name"
    dir=$(state_dir "$name")
    if [ -e "$(netns_path "$name")" ]; then
        [ -f "$dir/docker.pid" ] && dockerd_down "$name"
        pids=$(netns_pids "$name")
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null || true
            for i in $(seq 1 60); do
                [ -n "$(netns_pids "$name")" ] || break
                sleep 0.05
            done
            pids=$(netns_pids "$name")
            # shellcheck disable=SC2086
            [ -z "$pids" ] || kill -KILL $pids 2>/dev/null || true
        fi
        kill_containers "$name"
        ip netns delete "$name" 2>/dev/null || true
    fi
    kill_containers "$name"
    [ -d "$dir" ] && rm -rf --one-file-system "$dir"
    return 0
}

owner_alive() { # NAME
    local dir pid st
    dir=$(state_dir "$1")
    read -r pid st <"$dir/owner" 2>/dev/null || return 1
    [ "$(starttime "$pid" 2>/dev/null)" = "$st" ]
}

sweep() {
    local d name swept=0
    for d in "$BASE"/ewt-*; do
        [ -d "$d" ] || continue
        name=${d##*/}
        owner_alive "$name" && continue
        note "sweeping stale sandbox $name"
        netns_down "$name"
        swept=$((swept + 1))
    done
    # Namespaces whose state directory is gone.
    for name in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^ewt-[0-9]+-[0-9a-f]{6}$' || true); do
        [ -d "$(state_dir "$name")" ] && continue
        note "sweeping stale namespace $name"
        mkdir -p "$(state_dir "$name")"
        netns_down "$name"
        swept=$((swept + 1))
    done
    [ "$swept" = 0 ] || note "swept $swept stale sandbox(es)"
}

standin_up() { # NAME [--files DIR] [stand-in args]: prints the info JSON
    local name=$1 dir py i
    shift
    valid_name "$name"
    dir=$(state_dir "$name")
    python3 -c 'import websockets.sync.server' 2>/dev/null || deps
    py=$(python_bin)
    rm -f "$dir/standin.ready" "$dir/standin.sock"
    setsid nsenter --net="$(netns_path "$name")" -- "$py" "$ROOT/scripts/ecs-standin.py" \
        --control "$dir/standin.sock" --ready "$dir/standin.ready" --log "$dir/standin.events" "$@" \
        </dev/null >>"$dir/standin.log" 2>&1 9>&- &
    echo $! >"$dir/standin.pid"
    for i in $(seq 1 200); do
        [ -s "$dir/standin.ready" ] && { cat "$dir/standin.ready"; echo; return 0; }
        kill -0 "$(cat "$dir/standin.pid")" 2>/dev/null || break
        sleep 0.05
    done
    cat "$dir/standin.log" >&2
    die "the stand-in of $name did not start (see $dir/standin.log)"
}

check() {
    deps
    local name
    name=$(netns_up "$$")
    "$SELF" netns-down "$name"
    echo "ok: network namespaces with only loopback can be made here"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
fixtures) fixtures ;;
deps) deps ;;
check) check ;;
shared-dir) shared_dir || die "../shared/real-agent not found" ;;
netns-up)
    owner=$PPID
    [ "${1:-}" = --owner ] && { owner=$2; shift 2; }
    netns_up "$owner"
    ;;
netns-down) netns_down "$1" ;;
dockerd-exec) dockerd_exec "$1" ;;
dockerd-up) dockerd_up "$1" ;;
dockerd-down) dockerd_down "$1" ;;
standin-up) standin_up "$@" ;;
enter) enter "$@" ;;
sweep) sweep ;;
_jail) jail_init "$@" ;;
*)
    sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac
