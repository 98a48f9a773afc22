#!/usr/bin/env bash
# demo.sh: the README's main job. A whole ECS host in a temporary root:
#
# 1. build ecs-warden and the sample agent; bundle sample agent 1.0.0 and
#    publish 1.1.0 with a manifest on a loopback HTTP server;
# 2. start the warden; it installs 1.0.0 and starts it;
# 3. start a task (a real container when Docker answers, else a process);
# 4. crash the agent (SIGKILL): the warden restarts it, the task runs on;
# 5. `ecs-warden update`: PENDING -> STAGING -> STAGED -> UPDATING -> UPDATED;
# 6. show the status and that the task was untouched (same container ID and
#    start time), then stop cleanly.
#
#   bash scripts/demo.sh            # keeps nothing; KEEP=1 keeps the root
#   bash scripts/demo.sh --real-agent   # the same with the REAL ECS agent
#                                       # (scripts/demo-real.sh; as root)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
--real-agent) exec bash scripts/demo-real.sh ;;
"") ;;
*)
    echo "usage: bash scripts/demo.sh [--real-agent]" >&2
    exit 2
    ;;
esac

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

if ! source scripts/docker-env.sh 2>/dev/null; then
    echo "demo: no Docker engine; tasks will be plain processes" >&2
fi
# The build's C toolchain, curl and python3 (the manifest server); the
# rest of setup.sh (the test tools) is not needed here.
bash scripts/apt-install.sh gcc libc6-dev binutils ca-certificates curl
command -v python3 >/dev/null 2>&1 || bash scripts/apt-install.sh python3

say "building"
cargo build --quiet --bins
W=$PWD/target/debug/ecs-warden
S=$PWD/target/debug/sample-agent

ROOT=$(mktemp -d /tmp/ecs-warden-demo.XXXXXX)
SRV_PID=
cleanup() {
    set +e
    [ -n "${WARDEN_PID:-}" ] && kill "$WARDEN_PID" 2>/dev/null && wait "$WARDEN_PID" 2>/dev/null
    [ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null
    if [ -n "${TASK_ID:-}" ] && [ "$RUNTIME" = docker ]; then docker rm -f "$TASK_ID" >/dev/null 2>&1; fi
    if [ -n "${TASK_PID:-}" ]; then kill "$TASK_PID" 2>/dev/null; fi
    if [ -z "${KEEP:-}" ]; then rm -rf "$ROOT"; else echo "kept $ROOT"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
AGENT_PORT=$(free_port)
SRV_PORT=$(free_port)
RUNTIME=process
docker info >/dev/null 2>&1 && RUNTIME=docker

say "a host in $ROOT (task runtime: $RUNTIME)"
mkdir -p "$ROOT/etc/ecs" "$ROOT/var/cache/ecs" "$ROOT/srv"
"$S" stamp 1.0.0 "$ROOT/var/cache/ecs/ecs-agent"
"$S" stamp 1.1.0 "$ROOT/srv/ecs-agent-1.1.0"
python3 - "$ROOT/srv" <<'PY'
import hashlib, json, os, platform, sys
d = sys.argv[1]; f = os.path.join(d, "ecs-agent-1.1.0"); b = open(f, "rb").read()
m = {"schemaVersion": 1, "agents": [{"version": "1.1.0", "gitHash": hashlib.sha256(b"1.1.0").hexdigest()[:8],
     "arch": platform.machine(), "url": "ecs-agent-1.1.0", "sha256": hashlib.sha256(b).hexdigest(), "size": len(b)}]}
json.dump(m, open(os.path.join(d, "manifest.json"), "w"), indent=2)
PY
python3 -m http.server --bind 127.0.0.1 --directory "$ROOT/srv" "$SRV_PORT" >/dev/null 2>&1 &
SRV_PID=$!
cat >"$ROOT/etc/ecs/ecs.config" <<CFG
ECS_CLUSTER=demo
ECS_WARDEN_INTROSPECTION_URL=http://127.0.0.1:$AGENT_PORT
ECS_WARDEN_UPDATE_SOURCE=http://127.0.0.1:$SRV_PORT/manifest.json
ECS_WARDEN_HEALTH_STABLE=2s
SAMPLE_AGENT_TASK_RUNTIME=$RUNTIME
CFG
cat "$ROOT/etc/ecs/ecs.config"

wait_for() { # DESCRIPTION COMMAND...
    local what=$1; shift
    for _ in $(seq 1 200); do "$@" >/dev/null 2>&1 && return 0; sleep 0.05; done
    echo "demo: timed out waiting for $what" >&2; exit 1
}
agent() { curl -sf "http://127.0.0.1:$AGENT_PORT$1" "${@:2}"; }

say "ecs-warden start (log: $ROOT/warden.log)"
"$W" --root "$ROOT" start 2>"$ROOT/warden.log" &
WARDEN_PID=$!
wait_for "the agent" agent /v1/metadata
agent /v1/metadata; echo

say "start a task"
TASK=$(curl -sf -XPOST "http://127.0.0.1:$AGENT_PORT/sample/tasks?family=web")
echo "$TASK"
TASK_ID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Containers"][0]["DockerId"])' <<<"$TASK")
task_state() {
    if [ "$RUNTIME" = docker ]; then
        docker inspect --format '{{.Id}} running={{.State.Running}} started={{.State.StartedAt}}' "$TASK_ID"
    else
        python3 - "$ROOT/var/lib/ecs/data/sample-agent.json" <<'PY'
import json, sys
for t in json.load(open(sys.argv[1]))["tasks"]:
    for c in t["containers"]:
        print(c["docker_id"], "pid", c.get("pid"), "start", c.get("start_time"))
PY
    fi
}
[ "$RUNTIME" = process ] && TASK_PID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["tasks"][0]["containers"][0]["pid"])' "$ROOT/var/lib/ecs/data/sample-agent.json")
BEFORE=$(task_state); echo "task: $BEFORE"

say "crash the agent (SIGKILL)"
APID=$("$W" --root "$ROOT" status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["supervisor"]["agentPid"])')
kill -9 "$APID"
wait_for "the restarted agent" bash -c "\"$W\" --root \"$ROOT\" status --json | grep -q '\"agentPid\": [0-9]' && ! \"$W\" --root \"$ROOT\" status --json | grep -q '\"agentPid\": $APID\b' && curl -sf http://127.0.0.1:$AGENT_PORT/v1/metadata"
grep -E "killed by SIGKILL|restarting|started agent" "$ROOT/warden.log" | tail -3
echo "task: $(task_state)"

say "ecs-warden update"
"$W" --root "$ROOT" update
grep -E "update .*->" "$ROOT/warden.log" | sed 's/^[^ ]* //'

say "ecs-warden status"
"$W" --root "$ROOT" status

AFTER=$(task_state)
say "the task, before and after"
echo "before: $BEFORE"
echo "after:  $AFTER"
[ "$BEFORE" = "$AFTER" ] || { echo "demo: the task changed!" >&2; exit 1; }
agent "/v1/tasks" | python3 -m json.tool | head -20

say "ecs-warden stop"
"$W" --root "$ROOT" stop
wait "$WARDEN_PID"; WARDEN_PID=
echo "done: the update ran, the task kept running."
