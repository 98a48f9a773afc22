#!/usr/bin/env bash
# demo-real.sh: the README's main job with the REAL ECS agent as AWS ships
# it (`bash scripts/demo.sh --real-agent`). A whole ECS host in a temporary
# root, in a loopback-only sandbox (scripts/real-agent.sh): its own network
# namespace, a private Docker engine jailed in its own mount namespace, and
# the control-plane stand-in (scripts/ecs-standin.py) as ECS.
#
# 1. build ecs-warden; build the fixtures (the real agent 1.105.1 and 1.105.2
#    as image tarballs, from ../shared/real-agent); bundle 1.105.1 as
#    ecs-init's RPM does (var/cache/ecs/ecs-agent.tar);
# 2. start the warden (Docker runtime): it loads the image and runs the
#    container ecs-agent, which registers with the stand-in;
# 3. ECS starts a task on it (a PayloadMessage: busybox sleeping);
# 4. kill the agent's container: the warden starts a new one, the task runs on;
# 5. the update as ECS does it: StageUpdateMessage (the agent downloads and
#    stages 1.105.2), PerformUpdateMessage (the agent exits 42), the warden
#    performs it: PENDING -> STAGING -> STAGED -> UPDATING -> UPDATED;
# 6. show the status and that the task was untouched (same container ID and
#    start time), then stop cleanly and tear the sandbox down.
#
#   bash scripts/demo-real.sh       # KEEP=1 keeps the root
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
RA="$REPO/scripts/real-agent.sh"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
die() {
    echo "demo: $*" >&2
    exit 1
}
[ "$(id -u)" = 0 ] || die "the real agent runs in a network namespace of its own: run as root"

source scripts/docker-env.sh # an engine to build the fixtures with
bash scripts/apt-install.sh gcc libc6-dev binutils ca-certificates curl
bash "$RA" deps

say "building ecs-warden and the fixtures (the first time takes a minute)"
cargo build --quiet --bin ecs-warden
W=$REPO/target/debug/ecs-warden
FX=$(bash "$RA" fixtures)

ROOT=$(mktemp -d /tmp/ecs-warden-demo-real.XXXXXX)
NAME=
WARDEN_PID=
cleanup() {
    set +e
    if [ -n "$WARDEN_PID" ]; then
        kill "$WARDEN_PID" 2>/dev/null
        wait "$WARDEN_PID" 2>/dev/null
    fi
    [ -n "$NAME" ] && bash "$RA" netns-down "$NAME" >/dev/null 2>&1
    if [ -z "${KEEP:-}" ]; then rm -rf "$ROOT"; else echo "kept $ROOT"; fi
}
trap cleanup EXIT

say "a sandbox: network namespace, private Docker engine, the ECS stand-in"
NAME=$(bash "$RA" netns-up --owner $$)
DOCKER_HOST=$(bash "$RA" dockerd-up "$NAME")
export DOCKER_HOST
SOCK=${ECS_WARDEN_SANDBOX_BASE:-/tmp/ecs-warden-sandboxes}/$NAME/standin.sock
docker load -q -i "$FX/images/ecs-warden-task.tar"
mkdir -p "$ROOT/etc/ecs" "$ROOT/var/cache/ecs" "$ROOT/srv"
# The root's kernel knobs: /proc as the warden sees it from inside the
# sandbox, so pre-start sets up the sandbox's own network (never the
# machine's) and post-stop undoes it.
ln -s /proc "$ROOT/proc"
cp "$FX/images/ecs-agent-v1.105.1.tar" "$ROOT/var/cache/ecs/"
ln -s ecs-agent-v1.105.1.tar "$ROOT/var/cache/ecs/ecs-agent.tar"
ln -s "$FX/images/ecs-agent-v1.105.2.tar" "$ROOT/srv/ecs-agent-v1.105.2.tar"
INFO=$(bash "$RA" standin-up "$NAME" --files "$ROOT/srv")
field() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$INFO" "$1"; }
echo "ECS stand-in: $(field api_url) (cluster $(field cluster))"

# A request to the stand-in's control socket; prints the answer's JSON.
standin() {
    python3 - "$SOCK" "$1" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n")
answer = json.loads(s.makefile().readline())
if not answer.get("ok"):
    sys.exit("stand-in: %s" % answer.get("error"))
print(json.dumps(answer))
PY
}

cat >"$ROOT/etc/ecs/ecs.config" <<CFG
ECS_CLUSTER=$(field cluster)
ECS_EXTERNAL=true
AWS_ACCESS_KEY_ID=AKIDECSWARDENDEMO
AWS_SECRET_ACCESS_KEY=ecs-warden-demo-secret
AWS_DEFAULT_REGION=$(field region)
ECS_BACKEND_HOST=$(field api_url)
ECS_CHECKPOINT=true
ECS_ENABLE_TASK_CPU_MEM_LIMIT=false
ECS_IMAGE_PULL_BEHAVIOR=prefer-cached
ECS_WARDEN_RUNTIME=docker
ECS_WARDEN_HEALTH_STABLE=2s
ECS_WARDEN_RESTART_BACKOFF_MIN=200ms
CFG
cat "$ROOT/etc/ecs/ecs.config"

# Everything the warden runs, and every look at the agent, is inside the
# sandbox (its network namespace and its jail).
in_box() { bash "$RA" enter "$NAME" --jail -- "$@"; }
agent() { in_box curl -sf --max-time 2 "http://127.0.0.1:51678$1"; }
wait_for() { # DESCRIPTION SECONDS COMMAND...
    local what=$1 secs=$2 i
    shift 2
    for i in $(seq 1 $((secs * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    echo "--- warden log" >&2; tail -30 "$ROOT/warden.log" >&2
    die "timed out waiting for $what"
}
registered() { agent /v1/metadata | grep -q "\"Version\":\"Amazon ECS Agent - v$1" && agent /v1/metadata | grep -q '"ContainerInstanceArn":"arn:'; }

say "ecs-warden pre-start && ecs-warden start (log: $ROOT/warden.log)"
in_box "$W" --root "$ROOT" pre-start
in_box iptables -t nat -S | grep -i ecs-warden || true
in_box "$W" --root "$ROOT" start 2>"$ROOT/warden.log" &
WARDEN_PID=$!
wait_for "the real agent 1.105.1 to register" 120 registered 1.105.1
agent /v1/metadata; echo
docker ps --format 'container {{.Names}} {{.Image}} {{.Status}}'

say "ECS starts a task (PayloadMessage)"
TASK=$(standin '{"op":"task","image":"ecs-warden-task:latest","command":["sleep","3600"]}')
ARN=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["tasks"][0]["arn"])' "$TASK")
echo "task $ARN"
task_running() { agent /v1/tasks | python3 -c 'import json,sys; t=[t for t in json.load(sys.stdin)["Tasks"] if t["Arn"]==sys.argv[1]]; sys.exit(0 if t and t[0]["KnownStatus"]=="RUNNING" else 1)' "$ARN"; }
wait_for "the task to run" 120 task_running
TASK_ID=$(agent /v1/tasks | python3 -c 'import json,sys; print([t for t in json.load(sys.stdin)["Tasks"] if t["Arn"]==sys.argv[1]][0]["Containers"][0]["DockerId"])' "$ARN")
task_state() { docker inspect --format '{{.Id}} running={{.State.Running}} started={{.State.StartedAt}}' "$TASK_ID"; }
BEFORE=$(task_state)
echo "task container: $BEFORE"

say "kill the agent's container"
OLD_AGENT=$(docker inspect --format '{{.Id}}' ecs-agent)
docker kill ecs-agent >/dev/null
new_agent() { [ "$(docker inspect --format '{{.Id}} {{.State.Running}}' ecs-agent)" != "$OLD_AGENT true" ] && docker inspect --format '{{.State.Running}}' ecs-agent | grep -q true; }
wait_for "a new agent container" 60 new_agent
wait_for "the agent to answer again" 120 registered 1.105.1
grep -E "exited|restart|started agent" "$ROOT/warden.log" | tail -3
echo "task container: $(task_state)"

say "the update as ECS does it: StageUpdateMessage, then PerformUpdateMessage"
standin '{"op":"stage_update","file":"ecs-agent-v1.105.2.tar"}' >/dev/null
staged() { in_box "$W" --root "$ROOT" status --json | python3 -c 'import json,sys; d=json.load(sys.stdin); u=d["update"]; sys.exit(0 if u.get("agentStaging") or d.get("agentUpdateStatus") in ("STAGING","STAGED") else 1)'; }
wait_for "the agent to stage 1.105.2" 120 staged
in_box "$W" --root "$ROOT" status | grep -E "^update" || true
standin '{"op":"perform_update"}' >/dev/null
done_update() { in_box "$W" --root "$ROOT" status --json | python3 -c 'import json,sys; u=json.load(sys.stdin)["update"]; sys.exit(0 if u.get("state") in ("UPDATED","FAILED") and u.get("target")=="1.105.2" else 1)'; }
wait_for "the update to end" 240 done_update
grep -E "update .*->" "$ROOT/warden.log" | sed 's/^[^ ]* //'
wait_for "the real agent 1.105.2 to register" 120 registered 1.105.2

say "ecs-warden status"
in_box "$W" --root "$ROOT" status

AFTER=$(task_state)
say "the task, before and after"
echo "before: $BEFORE"
echo "after:  $AFTER"
[ "$BEFORE" = "$AFTER" ] || die "the task changed!"
task_running || die "the new agent does not list the task as RUNNING"
echo "the new agent lists $ARN as RUNNING"

say "ecs-warden stop && ecs-warden post-stop"
in_box "$W" --root "$ROOT" stop
wait "$WARDEN_PID" || true
WARDEN_PID=
in_box "$W" --root "$ROOT" post-stop
echo "done: the real agent was updated the way ECS updates it, the task kept running."
