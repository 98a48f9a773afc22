# scripts/bench/real.sh: sections 6-10 of scripts/bench.sh, measured with
# the REAL ECS agent (1.105.1, updated to 1.105.2) and, beside ecs-warden,
# the REAL ecs-init 1.105.1, from ../shared/real-agent/ (fixtures built by
# `scripts/real-agent.sh fixtures` into target/real-agent/). Sourced by
# bench.sh (it uses its helpers: row, median, pct, fmt, ratio, ok, track,
# stop_pid, say, info, die, missing, $W, $BT, $T, $QUICK).
#
# Network safety: the real agent, ecs-init and every engine whose host-network
# containers run it run only inside a sandbox of scripts/real-agent.sh (a
# network namespace holding nothing but loopback, with a private dockerd in a
# mount-namespace jail); every sandbox made here is deleted on exit.
#
#  6 real update   /v1/metadata unreachable during 1.105.1 → 1.105.2, Docker
#                  runtime: warden CLI update, warden agent-driven (exit 42),
#                  real ecs-init (exit 42); the agent's cold start in a container
#  7 real native   the same two warden updates with ECS_WARDEN_RUNTIME=native
#  8 real restart  the agent container's exit → the next container's start
#  9 real idle     RSS, CPU and wake-ups of the warden (and of ecs-init) idling
#                  beside a healthy agent container
# 10 real load     peak RSS and wall time of staging + loading the 1.105.2
#                  tarball into the engine, beside `docker load -i`

RA=$REPO/scripts/real-agent.sh
REAL_OLD=1.105.1
REAL_NEW=1.105.2
REAL_PORT=51678
REAL_SB_BASE=${ECS_WARDEN_SANDBOX_BASE:-/tmp/ecs-warden-sandboxes}
if [ "$QUICK" = 1 ]; then
    REAL_UPDATES=2
    REAL_COLD=2
    REAL_RESTARTS=2
    REAL_IDLE_SECS=3
    REAL_IDLE_WARMUP=2
    REAL_LOADS=1
else
    REAL_UPDATES=${BENCH_REAL_UPDATES:-10}
    REAL_COLD=${BENCH_REAL_COLD:-10}
    REAL_RESTARTS=${BENCH_REAL_RESTARTS:-20}
    REAL_IDLE_SECS=30
    REAL_IDLE_WARMUP=10
    REAL_LOADS=${BENCH_REAL_LOADS:-5}
fi

REAL_SBS=()
REAL_TMP=
# Called by bench.sh's cleanup: delete every sandbox made here (their
# engines, containers, stand-ins and any process left inside), then the
# roots.
real_cleanup() {
    local n
    for n in "${REAL_SBS[@]}"; do
        bash "$RA" netns-down "$n" >/dev/null 2>&1 || echo "bench: could not delete sandbox $n" >&2
    done
    REAL_SBS=()
    [ -z "$REAL_TMP" ] || [ -n "${KEEP:-}" ] || rm -rf "$REAL_TMP"
}

# The fixtures, once; 1 when they cannot be had (rows say "missing").
REAL_FX=
REAL_BAD=
real_ready() {
    [ -z "$REAL_BAD" ] || return 1
    [ -n "$REAL_FX" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        REAL_BAD=1
        missing "root (the real agent runs only in a network namespace with a private dockerd)"
        return 1
    fi
    if ! REAL_FX=$(bash "$RA" fixtures 2>"$T/real-fixtures.log"); then
        REAL_BAD=1
        tail -5 "$T/real-fixtures.log" >&2
        missing "the real-agent fixtures (scripts/real-agent.sh fixtures: ../shared/real-agent/ and a Docker engine)"
        return 1
    fi
    REAL_NEW_ID=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["Id"])' "$REAL_FX/images/ecs-agent-v$REAL_NEW.inspect.json")
    # Roots the jail can see: /var is an overlay in there, /work is not.
    REAL_TMP=$(mktemp -d "$REPO/target/ecs-warden-bench-real.XXXXXX")
    return 0
}
real_missing_rows() { # SECTION LABEL...
    local s=$1 l
    shift
    for l in "$@"; do row "$s" "$l" "missing" "" "" "" ""; done
}

sha_of() { awk -v f="$1" '$2 == f {print $1}' "$REAL_FX/images/SHA256SUMS"; }
jget() { python3 -c 'import json, sys
d = json.load(sys.stdin)
for k in sys.argv[1].split("."):
    d = d.get(k) if isinstance(d, dict) else None
print("" if d is None else (json.dumps(d) if isinstance(d, (dict, list)) else d))' "$1"; }
# ns_ms A B: (B - A) in ms, both ns stamps.
ns_ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f\n", (b - a) / 1e6}'; }
rfc_ns() { date -d "$1" +%s%N; }

# ----- sandboxes --------------------------------------------------------------

# real_sandbox: a loopback-only namespace with a private engine and an event
# log of it; sets SB, SBDIR, DH (DOCKER_HOST), DPID, EVENTS.
real_sandbox() {
    SB=$(bash "$RA" netns-up --owner $$) || die "cannot make a sandbox"
    REAL_SBS+=("$SB")
    SBDIR=$REAL_SB_BASE/$SB
    # Ephemeral ports above the agent's fixed 51678/51679: a poller's
    # connect() to a port nobody listens on yet could otherwise be given
    # that very port as its source (a TCP self-connect) and hold it.
    in_ns sh -c 'echo "52000 60999" >/proc/sys/net/ipv4/ip_local_port_range' || die "cannot set the port range in $SB"
    DH=$(bash "$RA" dockerd-up "$SB") || die "no private engine in $SB"
    DPID=$(cat "$SBDIR/docker.pid")
    EVENTS=$REAL_TMP/$SB.events
    docker -H "$DH" events --filter type=container --filter type=image \
        --format '{{.TimeNano}} {{.Type}} {{.Action}} {{index .Actor.Attributes "name"}} {{.Actor.ID}} {{index .Actor.Attributes "signal"}}' >"$EVENTS" 2>/dev/null &
    EVPID=$!
    track "$EVPID"
}
real_sandbox_down() {
    stop_pid "$EVPID"
    bash "$RA" netns-down "$SB" >/dev/null 2>&1 || true
    local out=() n
    for n in "${REAL_SBS[@]}"; do [ "$n" = "$SB" ] || out+=("$n"); done
    REAL_SBS=("${out[@]}")
}
D() { docker -H "$DH" "$@"; }
# in_ns CMD...: in the sandbox's namespace; in_jail: also in its jail.
in_ns() { bash "$RA" enter "$SB" -- "$@"; }
in_jail() { bash "$RA" enter "$SB" --jail -- "$@"; }
# The same in the background, $! being the program itself (a function run
# with & would be a subshell, its program a grandchild: not what we stop).
bg_ns() { (exec bash "$RA" enter "$SB" -- "$@") & }
bg_jail() { (exec bash "$RA" enter "$SB" --jail -- "$@") & }

# real_standin FILES_DIR: the control-plane stand-in in the sandbox; sets
# SIN (its control socket), SIN_API, SIN_REGION, SIN_CLUSTER.
real_standin() {
    local info
    info=$(bash "$RA" standin-up "$SB" --files "$1") || die "no stand-in in $SB"
    SIN=$SBDIR/standin.sock
    SIN_API=$(jget api_url <<<"$info")
    SIN_REGION=$(jget region <<<"$info")
    SIN_CLUSTER=$(jget cluster <<<"$info")
}
sin() { python3 "$REPO/scripts/ecs-standin.py" --control "$SIN" --call "$1"; }
sin_last_seq() { sin '{"op": "events"}' | python3 -c 'import json, sys; e = json.load(sys.stdin)["events"]; print(e[-1]["seq"] if e else 0)'; }

# The agent's offline configuration against the stand-in (as the tests'
# agent_env), one KEY=VALUE a line; DOCKER_HOST as the agent sees it.
real_agent_env() { # DOCKER_HOST
    cat <<EOF
ECS_EXTERNAL=true
AWS_ACCESS_KEY_ID=AKIDECSWARDENBENCH
AWS_SECRET_ACCESS_KEY=ecs-warden-bench-secret
AWS_DEFAULT_REGION=$SIN_REGION
ECS_CLUSTER=$SIN_CLUSTER
ECS_BACKEND_HOST=$SIN_API
ECS_LOGLEVEL=info
ECS_CHECKPOINT=true
ECS_UPDATES_ENABLED=true
ECS_ENABLE_TASK_CPU_MEM_LIMIT=false
ECS_IMAGE_PULL_BEHAVIOR=prefer-cached
DOCKER_HOST=$1
EOF
}

# ----- a warden host running the real agent --------------------------------------

# real_root DIR RUNTIME [EXTRA_CONFIG...]: 1.105.1 bundled as AWS ships it
# (var/cache/ecs/ecs-agent.tar), a manifest of 1.105.1 and 1.105.2 on file://
# in srv/, the agent's offline configuration.
real_root() {
    local r=$1 rt=$2 v
    shift 2
    rm -rf "$r"
    mkdir -p "$r/etc/ecs" "$r/var/cache/ecs" "$r/srv"
    cp "$REAL_FX/images/ecs-agent-v$REAL_OLD.tar" "$r/var/cache/ecs/"
    ln -s "ecs-agent-v$REAL_OLD.tar" "$r/var/cache/ecs/ecs-agent.tar"
    local agents=()
    for v in "$REAL_OLD" "$REAL_NEW"; do
        ln -s "$REAL_FX/images/ecs-agent-v$v.tar" "$r/srv/ecs-agent-v$v.tar"
        agents+=("$(printf '{"version": "%s", "arch": "%s", "url": "ecs-agent-v%s.tar", "sha256": "%s", "size": %d}' \
            "$v" "$(uname -m)" "$v" "$(sha_of "ecs-agent-v$v.tar")" "$(stat -L -c %s "$REAL_FX/images/ecs-agent-v$v.tar")")")
    done
    printf '{"schemaVersion": 1, "agents": [%s, %s]}\n' "${agents[0]}" "${agents[1]}" >"$r/srv/manifest.json"
    {
        echo "ECS_WARDEN_INTROSPECTION_URL=http://127.0.0.1:$REAL_PORT"
        echo "ECS_WARDEN_RUNTIME=$rt"
        echo "ECS_WARDEN_HEALTH_TIMEOUT=60s"
        echo "ECS_WARDEN_HEALTH_STABLE=1s"
        echo "ECS_WARDEN_STOP_TIMEOUT=10s"
        real_agent_env "$DH"
        printf '%s\n' "$@"
    } >"$r/etc/ecs/ecs.config"
}
# real_warden ROOT: start it in the sandbox (namespace and jail, the private
# engine's DOCKER_HOST), wait until 1.105.1 answers; sets WPID.
real_warden() {
    local r=$1
    bg_jail env DOCKER_HOST="$DH" "$W" --root "$r" start </dev/null >>"$r/warden.log" 2>&1
    WPID=$!
    track "$WPID"
    wait_for 30 "the warden's control socket in $r" test -S "$r/run/ecs-warden/control.sock"
    in_ns "$BT" wait-answer "$REAL_PORT" "$REAL_OLD" 120 >/dev/null || { tail -30 "$r/warden.log" >&2; die "the real agent $REAL_OLD did not answer under the warden"; }
}
wcli() { # ROOT ARGS...
    local r=$1
    shift
    in_jail env DOCKER_HOST="$DH" "$W" --root "$r" "$@"
}
wstatus() { "$W" --root "$1" status --json 2>/dev/null; }
# wait_status ROOT SECONDS WHAT PYTHON_CONDITION_ON_s
wait_status() {
    local r=$1 secs=$2 what=$3 cond=$4 i
    for i in $(seq 1 $((secs * 10))); do
        if wstatus "$r" | python3 -c "import json, sys
s = json.load(sys.stdin)
sys.exit(0 if ($cond) else 1)" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    wstatus "$r" >&2 || true
    tail -30 "$r/warden.log" >&2
    die "timed out after ${secs}s waiting for $what"
}
# breakdown POLL_OUT: from the poller's stamps, the engine's events and the
# new container's State.StartedAt, one line "stop supervisor cold" (ms): the
# last old answer → the old container's die; die → the new container's
# StartedAt (the supervisor's work and the engine's create and start); StartedAt
# → the first new answer (the agent's own cold start).
breakdown() {
    local a b started
    read -r _ _ _ _ _ a _ b <"$1"
    started=$(rfc_ns "$(D inspect -f '{{.State.StartedAt}}' ecs-agent 2>/dev/null)" 2>/dev/null) || started=0
    awk -v a="$a" -v b="$b" -v st="$started" '
        $2 == "container" && $4 == "ecs-agent" && $3 == "die" && $1 >= a - 1e9 && !die {die = $1}
        END { if (!die || !st) print "nan nan nan"; else printf "%.3f %.3f %.3f\n", (die - a) / 1e6, (st - die) / 1e6, (b - st) / 1e6 }' "$EVENTS"
}

# real_updates RUNTIME MODE N OUT: N updates 1.105.1 → 1.105.2, each on a
# fresh warden host (a version cannot be updated back to; a rollback would
# quarantine 1.105.2), by the CLI (MODE cli) or by the agent (MODE agent:
# stage and perform through the stand-in); the gaps (ms) to OUT.gap, the
# breakdowns to OUT.parts, each run's warden log to OUT.N.log.
real_updates() {
    local rt=$1 mode=$2 n=$3 out=$4 i poller msg r seq0
    : >"$out.gap"
    : >"$out.parts"
    for i in $(seq 1 "$n"); do
        r=$REAL_TMP/root-$rt-$mode
        real_root "$r" "$rt"
        seq0=$(sin_last_seq)
        real_warden "$r"
        if [ "$mode" = agent ]; then
            sin "{\"op\": \"wait\", \"kind\": \"connect\", \"channel\": \"acs\", \"after\": $seq0, \"timeout\": 90}" >/dev/null ||
                die "the agent never opened its ACS session"
            msg=$(sin "{\"op\": \"stage_update\", \"file\": \"ecs-agent-v$REAL_NEW.tar\", \"timeout\": 90}" | jget messageId) ||
                die "stage_update failed"
            sin "{\"op\": \"wait\", \"kind\": \"acs\", \"type\": \"AckRequest\", \"match\": {\"message.messageId\": \"$msg\"}, \"timeout\": 120}" >/dev/null ||
                die "the agent did not acknowledge StageUpdateMessage"
            wait_status "$r" 120 "the agent's staged update" 's["agentUpdateStatus"] == "STAGED"'
        fi
        bg_ns "$BT" poll-update "$REAL_PORT" "$REAL_NEW" 180 >"$REAL_TMP/poll.out" 2>>"$REAL_TMP/poll.log"
        poller=$!
        track "$poller"
        sleep 0.3
        if [ "$mode" = cli ]; then
            wcli "$r" update --source "file://$r/srv/manifest.json" >"$REAL_TMP/update.out" 2>&1 ||
                { cat "$REAL_TMP/update.out" >&2; tail -30 "$r/warden.log" >&2; die "ecs-warden update failed"; }
        else
            sin '{"op": "perform_update", "timeout": 30}' >/dev/null || die "perform_update failed"
        fi
        wait "$poller" || { tail -30 "$r/warden.log" >&2; die "the poller did not see $REAL_NEW"; }
        untrack "$poller"
        wait_status "$r" 120 "the update's end" "s['update']['state'] in ('UPDATED', 'FAILED')"
        [ "$(wstatus "$r" | jget update.state)" = UPDATED ] || { tail -30 "$r/warden.log" >&2; die "the update did not end UPDATED"; }
        awk '{print $2}' "$REAL_TMP/poll.out" >>"$out.gap"
        if [ "$rt" = docker ]; then breakdown "$REAL_TMP/poll.out" >>"$out.parts"; else echo "nan nan nan" >>"$out.parts"; fi
        info "$rt $mode update $i: $(awk '{print $2}' "$REAL_TMP/poll.out") ms (stop, supervisor, start→answer: $(tail -1 "$out.parts"))"
        stop_pid "$WPID"
        cp "$r/warden.log" "$out.$i.log"
        if [ "$rt" = docker ]; then
            # The next run starts from the same engine state: 1.105.2 absent.
            D rm -f ecs-agent >/dev/null 2>&1 || true
            D rmi -f "$REAL_NEW_ID" >/dev/null 2>&1 || true
        fi
        rm -rf "$r"
    done
}

# ----- the real ecs-init ---------------------------------------------------------

# real_init_host: the jail as the ecs-init RPM leaves a host: the 1.105.1
# tarball cached (state 1), the agent's configuration in /etc/ecs/ecs.config.
real_init_host() {
    local jail=/proc/$DPID/root
    mkdir -p "$jail/var/cache/ecs" "$jail/etc/ecs"
    rm -f "$jail/var/cache/ecs/"*
    cp "$REAL_FX/images/ecs-agent-v$REAL_OLD.tar" "$jail/var/cache/ecs/"
    ln -s "ecs-agent-v$REAL_OLD.tar" "$jail/var/cache/ecs/ecs-agent.tar"
    echo 1 >"$jail/var/cache/ecs/state"
    real_agent_env unix:///var/run/docker.sock >"$jail/etc/ecs/ecs.config"
    INIT=$REAL_FX/bin/amazon-ecs-init-1.105.1
}
ecs_init() { # ACTION: the real ecs-init in the sandbox's namespace and jail
    in_jail env -i PATH="$PATH" HOME=/root DOCKER_HOST="$DH" ECS_EXTERNAL=true AWS_DEFAULT_REGION="$SIN_REGION" "$INIT" "$@"
}
# init_start LOG: `amazon-ecs-init start` in the background; sets IPID.
init_start() {
    bg_jail env -i PATH="$PATH" HOME=/root DOCKER_HOST="$DH" ECS_EXTERNAL=true AWS_DEFAULT_REGION="$SIN_REGION" "$INIT" start </dev/null >>"$1" 2>&1
    IPID=$!
    track "$IPID"
}
# init_stop: `amazon-ecs-init stop` (the agent exits 0, start returns).
init_stop() {
    ecs_init stop >>"$REAL_TMP/init-stop.log" 2>&1 || true
    local i
    for i in $(seq 1 600); do kill -0 "$IPID" 2>/dev/null || break; sleep 0.05; done
    stop_pid "$IPID"
}

# ===== 6. update downtime, Docker runtime ==========================================

section_real_update() {
    say "6. update downtime with the real agent, Docker runtime ($REAL_UPDATES updates each; $REAL_COLD cold starts)"
    local S6="6 real update"
    if ! real_ready; then
        real_missing_rows "$S6" "unreachable, ecs-warden \`update\` (CLI)" "unreachable, agent-driven" "cold start in a container"
        return
    fi
    local d=$REAL_TMP/up
    mkdir -p "$d"
    real_sandbox
    real_standin "$REAL_FX/images"

    # The agent's own cold start in a container: a fresh container like the
    # warden's and ecs-init's (host network, --init, the engine's socket, a
    # data directory kept across runs), from `POST /containers/ID/start` (and
    # from its `State.StartedAt`) to the first 200 of /v1/metadata.
    D load -q -i "$REAL_FX/images/ecs-agent-v$REAL_OLD.tar" >/dev/null
    mkdir -p "$d/cold/data" "$d/cold/log" "$d/cold/cache"
    local envargs=() kv i
    while read -r kv; do envargs+=(-e "$kv"); done < <(real_agent_env unix:///var/run/docker.sock
        echo ECS_DATADIR=/data
        echo ECS_LOGFILE=/log/ecs-agent.log
        echo ECS_UPDATE_DOWNLOAD_DIR=/var/cache/ecs)
    : >"$d/cold.ms"
    : >"$d/cold-api.ms"
    for i in $(seq 1 "$REAL_COLD"); do
        D rm -f ecs-agent-cold >/dev/null 2>&1 || true
        D create --name ecs-agent-cold --net host --init "${envargs[@]}" \
            -v "$SBDIR/docker.sock:/var/run/docker.sock" -v "$d/cold/data:/data" -v "$d/cold/log:/log" \
            -v "$d/cold/cache:/var/cache/ecs" "amazon/amazon-ecs-agent:latest" >/dev/null
        bg_ns "$BT" wait-answer "$REAL_PORT" - 120 >"$d/answer"
        local poller=$! t0
        track "$poller"
        sleep 0.2
        # The start request as the warden sends it (the Engine API, no CLI).
        t0=$(date +%s%N)
        curl -sf --unix-socket "$SBDIR/docker.sock" -X POST http://localhost/containers/ecs-agent-cold/start ||
            die "POST /containers/ecs-agent-cold/start failed"
        wait "$poller" || die "the agent container never answered"
        untrack "$poller"
        local at started
        at=$(awk '{print $2}' "$d/answer")
        started=$(rfc_ns "$(D inspect -f '{{.State.StartedAt}}' ecs-agent-cold)")
        ns_ms "$started" "$at" >>"$d/cold.ms"
        ns_ms "$t0" "$at" >>"$d/cold-api.ms"
        D stop -t 10 ecs-agent-cold >/dev/null
    done
    D rm -f ecs-agent-cold >/dev/null
    info "cold starts (start request → answer, ms): $(tr '\n' ' ' <"$d/cold-api.ms"); from StartedAt: $(tr '\n' ' ' <"$d/cold.ms")"

    # ecs-warden, Docker runtime: CLI updates, then agent-driven ones.
    real_updates docker cli "$REAL_UPDATES" "$d/cli"
    real_updates docker agent "$REAL_UPDATES" "$d/agent"

    # The real ecs-init 1.105.1: pre-start loads the cached image; each run a
    # `start`, the agent staged over ACS, then PerformUpdateMessage: the agent
    # exits 42 and ecs-init loads the staged tarball and starts the new one.
    # Between runs: `stop`, and 1.105.1 loaded back as :latest (unmeasured).
    real_init_host
    ecs_init pre-start >"$d/init-prestart.log" 2>&1 || { cat "$d/init-prestart.log" >&2; die "ecs-init pre-start failed"; }
    : >"$d/init.gap"
    : >"$d/init.parts"
    local msg jail=/proc/$DPID/root
    for i in $(seq 1 "$REAL_UPDATES"); do
        local seq0
        seq0=$(sin_last_seq)
        init_start "$d/init-start.log"
        in_ns "$BT" wait-answer "$REAL_PORT" "$REAL_OLD" 120 >/dev/null || { tail -20 "$d/init-start.log" >&2; die "1.105.1 did not answer under ecs-init"; }
        sin "{\"op\": \"wait\", \"kind\": \"connect\", \"channel\": \"acs\", \"after\": $seq0, \"timeout\": 90}" >/dev/null || die "no ACS session under ecs-init"
        msg=$(sin "{\"op\": \"stage_update\", \"file\": \"ecs-agent-v$REAL_NEW.tar\", \"timeout\": 90}" | jget messageId) || die "stage_update failed"
        sin "{\"op\": \"wait\", \"kind\": \"acs\", \"type\": \"AckRequest\", \"match\": {\"message.messageId\": \"$msg\"}, \"timeout\": 120}" >/dev/null ||
            die "the agent under ecs-init did not acknowledge StageUpdateMessage"
        [ -s "$jail/var/cache/ecs/desired-image" ] || die "the agent under ecs-init staged nothing (no desired-image)"
        bg_ns "$BT" poll-update "$REAL_PORT" "$REAL_NEW" 180 >"$REAL_TMP/poll.out" 2>>"$REAL_TMP/poll.log"
        local poller=$!
        track "$poller"
        sleep 0.3
        sin '{"op": "perform_update", "timeout": 30}' >/dev/null || die "perform_update failed"
        wait "$poller" || { tail -30 "$d/init-start.log" >&2; die "the poller did not see $REAL_NEW under ecs-init"; }
        untrack "$poller"
        awk '{print $2}' "$REAL_TMP/poll.out" >>"$d/init.gap"
        breakdown "$REAL_TMP/poll.out" >>"$d/init.parts"
        info "ecs-init update $i: $(awk '{print $2}' "$REAL_TMP/poll.out") ms (stop, supervisor, start→answer: $(tail -1 "$d/init.parts"))"
        init_stop
        rm -f "$jail/var/cache/ecs/desired-image" "$jail/var/cache/ecs/"*.ecs-update.tar
        D load -q -i "$REAL_FX/images/ecs-agent-v$REAL_OLD.tar" >/dev/null
        D rmi -f "$REAL_NEW_ID" >/dev/null 2>&1 || true
    done
    real_sandbox_down

    local cold coldst
    cold=$(median "$d/cold-api.ms")
    coldst=$(median "$d/cold.ms")
    local wc wa ei
    wc=$(median "$d/cli.gap")
    wa=$(median "$d/agent.gap")
    ei=$(median "$d/init.gap")
    local cell_init
    cell_init="$(fmt "$ei" 1) (p90 $(fmt "$(pct "$d/init.gap" 90)" 1))"
    row "$S6" "/v1/metadata unreachable, ecs-warden \`update\` (CLI), ms (median of $REAL_UPDATES; p90)" \
        "$(fmt "$wc" 1) (p90 $(fmt "$(pct "$d/cli.gap" 90)" 1))" "real ecs-init 1.105.1 (exit 42)" "$cell_init" "$(ratio "$wc" "$ei")" \
        "≤ 0.5 × ecs-init: $(ok 'b == "nan" ? 0 : a <= 0.5 * b' "$wc" "$ei")"
    row "$S6" "/v1/metadata unreachable, agent-driven (StageUpdate, PerformUpdate, exit 42), ms (median of $REAL_UPDATES; p90)" \
        "$(fmt "$wa" 1) (p90 $(fmt "$(pct "$d/agent.gap" 90)" 1))" "real ecs-init 1.105.1 (exit 42)" "$cell_init" "$(ratio "$wa" "$ei")" \
        "≤ 0.5 × ecs-init: $(ok 'b == "nan" ? 0 : a <= 0.5 * b' "$wa" "$ei")"
    row "$S6" "real agent alone: cold start in a container, \`POST /containers/ID/start\` → /v1/metadata answers, ms (median of $REAL_COLD)" "" \
        "agent container, no supervisor" "$(fmt "$cold" 1) (from State.StartedAt: $(fmt "$coldst" 1))" "" ""
    local m
    for m in cli agent init; do
        local added name target=""
        added=$(awk -v g="$(median "$d/$m.gap")" -v c="$cold" 'BEGIN {print g - c}')
        case $m in
        cli) name="ecs-warden, CLI update" target="< 50 ms: $(ok 'a < 50' "$added" 0)" ;;
        agent) name="ecs-warden, agent-driven" target="< 50 ms: $(ok 'a < 50' "$added" 0)" ;;
        init) name="real ecs-init 1.105.1" ;;
        esac
        local parts
        parts=$(awk '$1 != "nan" {s += $1; v += $2; a += $3; n++} END {if (n) printf "%.1f / %.1f / %.1f", s / n, v / n, a / n; else print "n/a"}' "$d/$m.parts")
        if [ "$m" = init ]; then
            row "$S6" "added downtime = unreachable − cold start, ms; mean of: last answer → exit (die) / exit → next StartedAt / StartedAt → answer" "" \
                "$name" "$(fmt "$added" 1); $parts" "" ""
        else
            row "$S6" "added downtime = unreachable − cold start, ms ($name); mean of: last answer → exit (die) / exit → next StartedAt / StartedAt → answer" \
                "$(fmt "$added" 1); $parts" "" "" "" "$target"
        fi
    done
}

# ===== 7. update downtime, native runtime ==========================================

section_real_native() {
    say "7. update downtime with the real agent, native runtime ($REAL_UPDATES updates each; $REAL_COLD cold starts)"
    local S7="7 real native"
    if ! real_ready; then
        real_missing_rows "$S7" "unreachable, ecs-warden \`update\` (CLI)" "unreachable, agent-driven" "cold start"
        return
    fi
    local d=$REAL_TMP/native
    mkdir -p "$d/cold/data" "$d/cold/log" "$d/cold/cache"
    real_sandbox
    real_standin "$REAL_FX/images"
    # The agent's own cold start natively: exec → /v1/metadata answers.
    local envs=()
    mapfile -t envs < <(real_agent_env "$DH"
        echo "ECS_DATADIR=$d/cold/data"
        echo "ECS_LOGFILE=$d/cold/log/ecs-agent.log"
        echo "ECS_UPDATE_DOWNLOAD_DIR=$d/cold/cache")
    # Only its own environment (as the warden gives it; e.g. an AWS_CA_BUNDLE
    # from the caller makes it fail).
    in_jail env -i PATH="$PATH" HOME=/root "${envs[@]}" BENCH_PORT=$REAL_PORT "$BT" coldstart "$REAL_COLD" "$REAL_FX/bin/amazon-ecs-agent-$REAL_OLD" \
        >"$d/cold.out" 2>>"$d/cold.log" || { tail -5 "$d/cold.log" >&2; die "the native agent's cold start failed"; }
    awk '{print $2}' "$d/cold.out" >"$d/cold.ms"
    info "native cold starts (ms): $(tr '\n' ' ' <"$d/cold.ms")"

    real_updates native cli "$REAL_UPDATES" "$d/cli"
    real_updates native agent "$REAL_UPDATES" "$d/agent"
    real_sandbox_down

    local cold wc wa
    cold=$(median "$d/cold.ms")
    wc=$(median "$d/cli.gap")
    wa=$(median "$d/agent.gap")
    # Section 6's figures, when it ran, for the runtimes side by side.
    local dc=nan da=nan
    [ -s "$REAL_TMP/up/cli.gap" ] && dc=$(median "$REAL_TMP/up/cli.gap")
    [ -s "$REAL_TMP/up/agent.gap" ] && da=$(median "$REAL_TMP/up/agent.gap")
    row "$S7" "/v1/metadata unreachable, ecs-warden \`update\` (CLI), native, ms (median of $REAL_UPDATES; p90)" \
        "$(fmt "$wc" 1) (p90 $(fmt "$(pct "$d/cli.gap" 90)" 1))" "ecs-warden, Docker runtime (section 6)" \
        "$( [ "$dc" = nan ] && echo "not run" || fmt "$dc" 1)" "$(ratio "$wc" "$dc")" ""
    row "$S7" "/v1/metadata unreachable, agent-driven (exit 42), native, ms (median of $REAL_UPDATES; p90)" \
        "$(fmt "$wa" 1) (p90 $(fmt "$(pct "$d/agent.gap" 90)" 1))" "ecs-warden, Docker runtime (section 6)" \
        "$( [ "$da" = nan ] && echo "not run" || fmt "$da" 1)" "$(ratio "$wa" "$da")" ""
    row "$S7" "real agent alone: cold start natively, exec → /v1/metadata answers, ms (median of $REAL_COLD)" "" \
        "native agent, no supervisor" "$(fmt "$cold" 1)" "" ""
    local m added
    for m in cli agent; do
        added=$(awk -v g="$(median "$d/$m.gap")" -v c="$cold" 'BEGIN {print g - c}')
        row "$S7" "added downtime = unreachable − native cold start, ms ($([ "$m" = cli ] && echo "CLI update" || echo agent-driven))" \
            "$(fmt "$added" 1)" "" "" "" "< 50 ms: $(ok 'a < 50' "$added" 0)"
    done
}

# ===== 8. restart reaction, Docker runtime ==========================================

agent_starts() { awk '$2 == "container" && $3 == "start" && $4 == "ecs-agent"' "$EVENTS" | wc -l; }
wait_starts() { # N SECONDS
    local deadline=$((SECONDS + $2))
    while [ "$(agent_starts)" -lt "$1" ]; do
        [ "$SECONDS" -lt "$deadline" ] || die "timed out waiting for start $1 of the agent container"
        sleep 0.05
    done
}
# die_to_start FROM_N: (ms) from each die of ecs-agent to the next start,
# for the starts after the first FROM_N.
die_to_start() {
    awk '$2 == "container" && $4 == "ecs-agent" && $3 == "die" {die = $1}
         $2 == "container" && $4 == "ecs-agent" && $3 == "start" {n++; if (die && n > 1) printf "%.3f\n", ($1 - die) / 1e6; die = 0}' "$EVENTS"
}

section_real_restart() {
    say "8. restart reaction with the real agent, Docker runtime ($REAL_RESTARTS \`docker kill\`s each)"
    local S8="8 real restart"
    if ! real_ready; then
        real_missing_rows "$S8" "exit → next start"
        return
    fi
    local d=$REAL_TMP/restart i n
    mkdir -p "$d"
    real_sandbox
    real_standin "$REAL_FX/images"

    # ecs-warden, no backoff (a 1.5 s run resets it: each restart is a first).
    local r=$d/root
    real_root "$r" docker ECS_WARDEN_RESTART_BACKOFF_MIN=0 ECS_WARDEN_RESTART_BACKOFF_MAX=0 ECS_WARDEN_RESTART_STABLE=1s
    real_warden "$r"
    n=$(agent_starts)
    for i in $(seq 1 "$REAL_RESTARTS"); do
        sleep 1.5
        D kill ecs-agent >/dev/null || die "docker kill ecs-agent failed"
        wait_starts $((n + i)) 60
    done
    stop_pid "$WPID"
    die_to_start | tail -n "$REAL_RESTARTS" >"$d/warden.ms"
    info "ecs-warden (ms): $(tr '\n' ' ' <"$d/warden.ms")"
    D rm -f ecs-agent >/dev/null 2>&1 || true

    # ecs-init: its backoff (500 ms ± 10 %, doubling up to 15 s, never reset
    # while `start` runs; no setting) is hard-wired, so each kill is the
    # first of a fresh `start`; the backoff it logs is subtracted too.
    real_init_host
    ecs_init pre-start >"$d/init-prestart.log" 2>&1 || { cat "$d/init-prestart.log" >&2; die "ecs-init pre-start failed"; }
    : >"$d/init-backoff.ms"
    local mark
    mark=$(date +%s%N)
    for i in $(seq 1 "$REAL_RESTARTS"); do
        n=$(agent_starts)
        : >"$d/init-start.log"
        init_start "$d/init-start.log"
        wait_starts $((n + 1)) 60
        sleep 1.5
        D kill ecs-agent >/dev/null || die "docker kill ecs-agent failed (ecs-init)"
        wait_starts $((n + 2)) 60
        # Stopped only once it serves: a SIGTERM before the agent handles it
        # is not an exit 0, and ecs-init would restart it after 1 s more.
        in_ns "$BT" wait-answer "$REAL_PORT" "$REAL_OLD" 120 >/dev/null || die "the restarted agent did not answer under ecs-init"
        sed -n 's/.*retrying in \([0-9.]*\)\(ms\|s\).*/\1 \2/p' "$d/init-start.log" | head -1 |
            awk '{print ($2 == "s") ? $1 * 1000 : $1}' >>"$d/init-backoff.ms"
        init_stop
    done
    # Only the die → start pairs within one `start` (not stop → next start).
    awk -v mark="$mark" '$1 < mark {next} $2 == "container" && $4 == "ecs-agent" && $3 == "kill" {k = ($6 == 9)}
        $2 == "container" && $4 == "ecs-agent" && $3 == "die" {die = $1; killed = k; k = 0}
        $2 == "container" && $4 == "ecs-agent" && $3 == "start" {if (die && killed) printf "%.3f\n", ($1 - die) / 1e6; die = 0; killed = 0}' "$EVENTS" >"$d/init.ms"
    info "ecs-init (ms): $(tr '\n' ' ' <"$d/init.ms"); its logged backoffs (ms): $(tr '\n' ' ' <"$d/init-backoff.ms")"
    paste "$d/init.ms" "$d/init-backoff.ms" | awk 'NF == 2 {printf "%.3f\n", $1 - $2}' >"$d/init-net.ms"
    real_sandbox_down

    local wm im inet
    wm=$(median "$d/warden.ms")
    im=$(median "$d/init.ms")
    inet=$(median "$d/init-net.ms")
    row "$S8" "agent container's exit (die) → next container's start, ms (engine events; median of $REAL_RESTARTS; p90)" \
        "$(fmt "$wm" 1) (p90 $(fmt "$(pct "$d/warden.ms" 90)" 1); backoff 0)" "real ecs-init 1.105.1 (first restart of a \`start\`)" \
        "$(fmt "$im" 1) (p90 $(fmt "$(pct "$d/init.ms" 90)" 1))" "$(ratio "$wm" "$im")" ""
    row "$S8" "the same, ecs-init's logged backoff (500 ms ± 10 %, hard-wired) subtracted, ms (median)" \
        "$(fmt "$wm" 1)" "real ecs-init 1.105.1, less its backoff" "$(fmt "$inet" 1)" "$(ratio "$wm" "$inet")" \
        "no slower than ecs-init: $(ok 'b == "nan" ? 0 : a <= b' "$wm" "$inet")"
}

# ===== 9. idle cost, Docker runtime ==================================================

# threads PID: "TID COMM VOLUNTARY NONVOLUNTARY" per thread.
threads() {
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s %s\n' "${t##*/}" "$(tr ' ' _ <"$t/comm" 2>/dev/null)" \
            "$(awk '/^voluntary_ctxt_switches/ {v = $2} /^nonvoluntary_ctxt_switches/ {n = $2} END {print v, n}' "$t/status" 2>/dev/null)"
    done
}
# real_idle PID OUT: after the warm-up, a window; OUT gets "rss_kib cpu_ms
# voluntary nonvoluntary threads", OUT.threads "COMM VOLUNTARY" per thread.
real_idle() {
    local pid=$1 out=$2 c0 c1
    sleep "$REAL_IDLE_WARMUP"
    threads "$pid" >"$out.0"
    c0=$(cpu_ticks "$pid")
    sleep "$REAL_IDLE_SECS"
    c1=$(cpu_ticks "$pid")
    threads "$pid" >"$out.1"
    echo "$(vm "$pid" RssAnon) $(vm "$pid" RssFile)" >"$out.split"
    awk -v rss="$(vm "$pid" VmRSS)" -v cpu=$(((c1 - c0) * 1000 / CLK)) \
        'NR == FNR {v0[$1] = $3; n0[$1] = $4; next}
         {v += $3 - v0[$1]; n += $4 - n0[$1]; t++}
         END {print rss, cpu, v, n, t}' "$out.0" "$out.1" >"$out"
    awk 'NR == FNR {v0[$1] = $3; next} {printf "%s(%s) %d\n", $2, $1, $3 - v0[$1]}' "$out.0" "$out.1" >"$out.threads"
}

section_real_idle() {
    say "9. idle cost with the real agent, Docker runtime (${REAL_IDLE_SECS}s window after ${REAL_IDLE_WARMUP}s)"
    local S9="9 real idle"
    if ! real_ready; then
        real_missing_rows "$S9" "RSS" "wake-ups"
        return
    fi
    # The binary the RPM ships (static musl), when it was built: what a host
    # runs. (Dynamic scope: the helpers below start this W.)
    local W=${MUSL:-$W} which="the static (musl) binary the RPM ships"
    [ -n "${MUSL:-}" ] || which="the release build (glibc: no musl build)"
    local d=$REAL_TMP/idle
    mkdir -p "$d"
    real_sandbox
    real_standin "$REAL_FX/images"
    local r=$d/root
    real_root "$r" docker
    real_warden "$r"
    real_idle "$WPID" "$d/warden"
    local waiter
    waiter=$(awk '{print $2}' "$d/warden.1" | grep -x 'docker-wait' || true)
    stop_pid "$WPID"
    D rm -f ecs-agent >/dev/null 2>&1 || true
    info "ecs-warden: $(cat "$d/warden") (rss KiB, cpu ms, voluntary, involuntary, threads); per thread: $(tr '\n' ' ' <"$d/warden.threads")"

    # The peer: the real ecs-init's `start` (a Go program) holding its wait.
    real_init_host
    ecs_init pre-start >"$d/init-prestart.log" 2>&1 || { cat "$d/init-prestart.log" >&2; die "ecs-init pre-start failed"; }
    init_start "$d/init-start.log"
    in_ns "$BT" wait-answer "$REAL_PORT" "$REAL_OLD" 120 >/dev/null || die "1.105.1 did not answer under ecs-init"
    real_idle "$IPID" "$d/init"
    init_stop
    info "ecs-init start: $(cat "$d/init") (rss KiB, cpu ms, voluntary, involuntary, threads)"
    real_sandbox_down

    local w_rss w_cpu w_vol w_thr i_rss i_cpu i_vol i_thr
    read -r w_rss w_cpu w_vol _ w_thr <"$d/warden"
    read -r i_rss i_cpu i_vol _ i_thr <"$d/init"
    local wr ir
    wr=$(awk -v k="$w_rss" 'BEGIN {print k / 1024}')
    ir=$(awk -v k="$i_rss" 'BEGIN {print k / 1024}')
    local woke
    woke=$(awk '$2 > 0 {printf "%s%s %d", sep, $1, $2; sep = ", "}' "$d/warden.threads")
    local wanon wfile
    read -r wanon wfile <"$d/warden.split"
    row "$S9" "RSS at the end of the window, MiB, $which (warden: $w_thr threads, anon $(fmt "$(awk -v k="$wanon" 'BEGIN {print k / 1024}')" 2) + file $(fmt "$(awk -v k="$wfile" 'BEGIN {print k / 1024}')" 2); ecs-init: $i_thr threads)" "$(fmt "$wr" 2)" \
        "real ecs-init 1.105.1 \`start\`" "$(fmt "$ir" 2)" "$(ratio "$wr" "$ir")" "< 4 MiB: $(ok 'a < 4' "$wr" 0)"
    row "$S9" "CPU time (utime+stime) over ${REAL_IDLE_SECS}s, ms" "$w_cpu" "real ecs-init 1.105.1 \`start\`" "$i_cpu" "$(ratio "$w_cpu" "$i_cpu")" ""
    row "$S9" "wake-ups (voluntary context switches, all threads) over ${REAL_IDLE_SECS}s${woke:+ (warden: $woke)}" "$w_vol" \
        "real ecs-init 1.105.1 \`start\`" "$i_vol" "$(ratio "$w_vol" "$i_vol")" "0: $(ok 'a == 0' "$w_vol" 0)"
    row "$S9" "the thread holding the container's wait open (\`POST /containers/ID/wait\`, blocked in read)" \
        "${waiter:-not found} (src/runtime/docker.rs \`watch\`)" "" "" "" ""
}

# ===== 10. loading an image ==========================================================

section_real_load() {
    say "10. staging and loading the real agent image ($REAL_LOADS runs)"
    local S10="10 real load"
    if ! real_ready; then
        real_missing_rows "$S10" "peak RSS" "wall time"
        return
    fi
    local d=$REAL_TMP/load i
    mkdir -p "$d"
    real_sandbox
    real_standin "$REAL_FX/images"
    local tar=$REAL_FX/images/ecs-agent-v$REAL_NEW.tar id
    id=$(jget 0.Id <"$REAL_FX/images/ecs-agent-v$REAL_NEW.inspect.json" 2>/dev/null || true)
    [ -n "$id" ] || id=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))[0]["Id"])' "$REAL_FX/images/ecs-agent-v$REAL_NEW.inspect.json")
    local mib
    mib=$(awk -v b="$(stat -L -c %s "$tar")" 'BEGIN {printf "%.0f", b / 1048576}')
    local r=$d/root
    for i in $(seq 1 "$REAL_LOADS"); do
        # 1.105.2 absent from the engine (its layers but /agent are 1.105.1's).
        D rmi -f "$id" >/dev/null 2>&1 || true
        real_root "$r" docker
        real_warden "$r"
        local hwm0 c0 t0 t1
        hwm0=$(vm "$WPID" VmHWM)
        c0=$(cpu_ticks "$WPID")
        t0=$(now_us)
        wcli "$r" stage --source "file://$r/srv/manifest.json" --version "$REAL_NEW" >"$d/stage.out" 2>&1 ||
            { cat "$d/stage.out" >&2; tail -20 "$r/warden.log" >&2; die "ecs-warden stage failed"; }
        t1=$(now_us)
        D image inspect "$id" >/dev/null 2>&1 || die "the staged image is not in the engine"
        vm "$WPID" VmHWM >>"$d/w-hwm"
        echo "$hwm0" >>"$d/w-hwm0"
        echo $((($(cpu_ticks "$WPID") - c0) * 1000 / CLK)) >>"$d/w-cpu"
        echo $(((t1 - t0) / 1000)) >>"$d/w-e2e"
        python3 - "$r/var/lib/ecs-warden/history.jsonl" >>"$d/w-ms" <<'PY'
import json, sys
from datetime import datetime
at = {}
for line in open(sys.argv[1]):
    h = json.loads(line)
    at.setdefault(h["state"], datetime.fromisoformat(h["at"].replace("Z", "+00:00")))
print((at["STAGED"] - at["STAGING"]).total_seconds() * 1000)
PY
        grep -o 'loaded [^ ]* into the engine in [0-9]* ms' "$r/warden.log" | tail -1 | awk '{print $(NF - 1)}' >>"$d/w-load"
        stop_pid "$WPID"
        D rm -f ecs-agent >/dev/null 2>&1 || true

        # The staging's floor on this disk: the same bytes copied and synced.
        rm -f "$d/copy"
        t0=$(now_us)
        cp "$tar" "$d/copy" && sync "$d/copy"
        t1=$(now_us)
        echo $(((t1 - t0) / 1000)) >>"$d/cp-ms"
        rm -f "$d/copy"

        # docker load -i of the same file, the image absent the same way.
        D rmi -f "$id" >/dev/null 2>&1 || true
        t0=$(now_us)
        if [ -n "$GTIME" ]; then
            "$GTIME" -f '%M %U %S' -o "$d/rss.tmp" docker -H "$DH" load -q -i "$tar" >/dev/null
            awk '{print $1}' "$d/rss.tmp" >>"$d/dl-rss"
        else
            D load -q -i "$tar" >/dev/null
        fi
        t1=$(now_us)
        echo $(((t1 - t0) / 1000)) >>"$d/dl-ms"
    done
    real_sandbox_down
    info "warden STAGING → STAGED (ms): $(tr '\n' ' ' <"$d/w-ms"); of which the load: $(tr '\n' ' ' <"$d/w-load"); docker load -i (ms): $(tr '\n' ' ' <"$d/dl-ms")"

    local hwm hwm0 wms wload dl
    hwm=$(awk -v k="$(median "$d/w-hwm")" 'BEGIN {print k / 1024}')
    hwm0=$(awk -v k="$(median "$d/w-hwm0")" 'BEGIN {print k / 1024}')
    wms=$(median "$d/w-ms")
    wload=$(median "$d/w-load")
    dl=$(median "$d/dl-ms")
    local dlrss=nan
    [ -s "$d/dl-rss" ] && dlrss=$(awk -v k="$(median "$d/dl-rss")" 'BEGIN {print k / 1024}')
    row "$S10" "peak RSS (VmHWM) of the warden after staging and loading the $mib MiB 1.105.2 tarball, MiB (median of $REAL_LOADS; before: $(fmt "$hwm0" 1))" \
        "$(fmt "$hwm" 1)" "\`docker load -i FILE\` (the CLI; the engine does the work)" "$( [ "$dlrss" = nan ] && echo missing || fmt "$dlrss" 1)" "$(ratio "$hwm" "$dlrss")" \
        "< 16 MiB: $(ok 'a < 16' "$hwm" 0)"
    row "$S10" "wall time: STAGING → STAGED (copy from file://, sha256, fsync, load into the engine), ms (median of $REAL_LOADS)" \
        "$(fmt "$wms" 0)" "\`docker load -i FILE\`" "$(fmt "$dl" 0)" "$(ratio "$wms" "$dl")" ""
    row "$S10" "wall time: the load alone (the warden's \`POST /images/load\`, from its log), ms" \
        "$(fmt "$wload" 0)" "\`docker load -i FILE\`" "$(fmt "$dl" 0)" "$(ratio "$wload" "$dl")" ""
    local stg cpm
    stg=$(awk -v a="$wms" -v b="$wload" 'BEGIN {print a - b}')
    cpm=$(median "$d/cp-ms")
    row "$S10" "wall time: the staging before the load (STAGING → STAGED less the load: copy, sha256, fsync, install), ms" \
        "$(fmt "$stg" 0)" "\`cp FILE DEST && sync DEST\`" "$(fmt "$cpm" 0)" "$(ratio "$stg" "$cpm")" ""
    row "$S10" "\`ecs-warden stage\` end to end (CLI, with its polling), ms; warden CPU (user+sys) over it, ms" \
        "$(fmt "$(median "$d/w-e2e")" 0); CPU $(fmt "$(median "$d/w-cpu")" 0)" "" "" "" ""
}
