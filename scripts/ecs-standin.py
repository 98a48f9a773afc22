#!/usr/bin/env python3
"""ecs-standin: a loopback stand-in for the ECS control plane, for tests.

The real ECS agent cannot run without a control plane. This program is the
smallest one it accepts, run inside the test's network namespace (loopback
only), so the agent registers, opens its ACS and TCS websockets, takes
updates and tasks, and reports their states. Everything it sees is recorded
and can be read, and waited on, from outside the namespace through a unix
socket (unix sockets are not network-namespaced).

What it serves, all on 127.0.0.1 of the namespace it runs in:

1. The ECS JSON API (`POST /`, `X-Amz-Target:
   AmazonEC2ContainerServiceV20141113.<Op>`, `application/x-amz-json-1.1`)
   on the API port: `RegisterContainerInstance` echoes the request's
   attributes (the agent exits 5 when they are missing) and returns the
   instance ARN (the request's own one when it re-registers),
   `DiscoverPollEndpoint` points ACS and TCS at the websocket port, the
   state-change submissions are acknowledged, and every other operation
   gets 200 with an empty-but-well-formed answer. Signatures are not
   checked. Every call is recorded.
2. Files from `--files DIR` at `GET /files/<name>` on the API port (the
   location of a `StageUpdateMessage`); each download is recorded with its
   byte count and duration.
3. ACS at `GET /ws?...` and TCS at `GET /tcs/ws?...` on the websocket
   port, in the wire form `{"type": "<Name>", "message": {...}}`. Both get a
   `HeartbeatMessage` every `--heartbeat` seconds, as the real services
   send, so the agent keeps the session; TCS publications (each one a
   signed block: HTTP headers, a blank line, the JSON) are acknowledged.
   Every message from the agent (`AckRequest`, `NackRequest`,
   `HeartbeatAckRequest`, ...) is recorded, and so are connects and closes.
4. The control socket (`--control PATH`): one JSON object per line in, one
   per line out (`{"ok": true, ...}` or `{"ok": false, "error": "..."}`).
   Operations:
   - `info`: ports, URLs, cluster and instance ARNs, file directory;
   - `events` (`kind`, `type`, `target`, `after`): the recorded events;
   - `wait` (the same filters, `match`, `timeout`): block until one exists;
   - `send` (`type`, `message`): send any message on the newest ACS session
     (waiting up to `timeout` for one), with `messageId`, `clusterArn` and
     `containerInstanceArn` filled in when absent;
   - `stage_update` (`file` in the file directory, or `location` and
     `signature`), `perform_update`, `payload` (`tasks`) and `task` (one
     task built from `image`, `command`, ...): the messages tests need;
   - `close_acs`: close the ACS session (the agent reconnects);
   - `shutdown`.

Each recorded event has a `seq` (increasing from 1), `t` (seconds since the
stand-in started), `kind` (`call`, `download`, `acs`, `tcs`, `connect`,
`close`, `sent`) and its details. `after: N` keeps events with `seq > N`;
`match` keeps events whose fields (dotted paths into the event, e.g.
`body.status`) equal the given values.

Needs Python 3.8+ and `websockets` 13 or newer (its threaded `sync` API);
scripts/setup.sh installs it.
"""

import argparse
import hashlib
import http.server
import json
import os
import signal
import socket
import socketserver
import sys
import threading
import time
import uuid

try:
    from websockets.sync.server import serve as ws_serve
    from websockets.exceptions import ConnectionClosed
except ImportError:  # pragma: no cover - reported to the caller
    sys.stderr.write(
        "ecs-standin: the python module 'websockets' (13 or newer) is missing;"
        " run scripts/setup.sh or: python3 -m pip install 'websockets>=13'\n"
    )
    sys.exit(3)

TARGET_PREFIX = "AmazonEC2ContainerServiceV20141113."
ACCOUNT = "123456789012"


class Recorder:
    """Every event, in order, with a condition to wait on."""

    def __init__(self, log):
        self.start = time.monotonic()
        self.events = []
        self.cond = threading.Condition()
        self.log = log

    def add(self, kind, **fields):
        with self.cond:
            ev = {"seq": len(self.events) + 1, "t": round(time.monotonic() - self.start, 4), "kind": kind}
            ev.update(fields)
            self.events.append(ev)
            self.cond.notify_all()
        if self.log:
            brief = {k: v for k, v in ev.items() if k not in ("body", "message", "response")}
            self.log.write(json.dumps(brief) + "\n")
            self.log.flush()
        return ev

    def select(self, flt):
        return [e for e in self.events if matches(e, flt)]

    def wait(self, flt, timeout):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = self.select(flt)
                if found:
                    return found[0]
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)


def lookup(obj, path):
    for part in path.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return KeyError
    return obj


def matches(ev, flt):
    for key in ("kind", "type", "target", "channel"):
        want = flt.get(key)
        if want is not None and ev.get(key) != want:
            return False
    if ev["seq"] <= int(flt.get("after") or 0):
        return False
    for path, want in (flt.get("match") or {}).items():
        if lookup(ev, path) != want:
            return False
    return True


class Standin:
    def __init__(self, args):
        self.args = args
        self.host = args.host
        self.cluster = args.cluster
        self.region = args.region
        self.cluster_arn = "arn:aws:ecs:%s:%s:cluster/%s" % (self.region, ACCOUNT, self.cluster)
        self.instance_arn = args.instance_arn or "arn:aws:ecs:%s:%s:container-instance/%s/%s" % (
            self.region,
            ACCOUNT,
            self.cluster,
            uuid.uuid4().hex,
        )
        self.files = os.path.abspath(args.files) if args.files else None
        self.log = open(args.log, "a") if args.log else None
        self.rec = Recorder(self.log)
        self.lock = threading.Lock()
        self.acs = []  # open ACS connections, newest last
        self.tcs = []
        self.seq_num = 0
        self.last_update = None
        self.sha_cache = {}
        self.stopping = threading.Event()

    # ---- the ECS JSON API -------------------------------------------------

    def api_answer(self, op, body):
        if op == "RegisterContainerInstance":
            arn = body.get("containerInstanceArn") or self.instance_arn
            return {
                "containerInstance": {
                    "containerInstanceArn": arn,
                    "ec2InstanceId": "i-0standin%08x" % (hash(arn) & 0xFFFFFFFF),
                    "attributes": body.get("attributes") or [],
                    "status": "ACTIVE",
                    "agentConnected": False,
                    "registeredResources": body.get("totalResources") or [],
                    "remainingResources": body.get("totalResources") or [],
                    "versionInfo": body.get("versionInfo") or {},
                }
            }
        if op == "DiscoverPollEndpoint":
            base = "http://%s:%d/" % (self.host, self.ws_port)
            return {
                "endpoint": base,
                "telemetryEndpoint": base + "tcs/",
                "serviceConnectEndpoint": base + "sc/",
                "systemLogsEndpoint": base + "logs/",
            }
        if op in ("SubmitTaskStateChange", "SubmitContainerStateChange", "SubmitAttachmentStateChanges"):
            return {"acknowledgment": "ACK"}
        if op == "CreateCluster":
            name = body.get("clusterName") or self.cluster
            return {"cluster": {"clusterName": name, "clusterArn": self.cluster_arn, "status": "ACTIVE"}}
        if op == "ListTagsForResource":
            return {"tags": []}
        if op in ("UpdateContainerInstancesState", "DescribeContainerInstances"):
            return {"containerInstances": [], "failures": []}
        if op == "DeregisterContainerInstance":
            return {"containerInstance": {"containerInstanceArn": self.instance_arn, "status": "INACTIVE"}}
        if op == "PutAttributes":
            return {"attributes": body.get("attributes") or []}
        return {}

    def make_http_handler(self):
        standin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            server_version = "ecs-standin"

            def log_message(self, fmt, *a):  # quiet: events are recorded instead
                pass

            def reply(self, code, payload, ctype="application/x-amz-json-1.1"):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                target = self.headers.get("X-Amz-Target") or ""
                op = target[len(TARGET_PREFIX):] if target.startswith(TARGET_PREFIX) else target
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    standin.rec.add("call", target=op, bad_body=raw[:200].decode("latin-1"))
                    self.reply(400, {"__type": "SerializationException", "message": "body is not JSON"})
                    return
                answer = standin.api_answer(op, body)
                standin.rec.add("call", target=op, body=body, response=answer)
                self.reply(200, answer)

            def do_GET(self):
                if self.path == "/ping":
                    self.reply(200, {"ok": True}, "application/json")
                    return
                if not self.path.startswith("/files/") or not standin.files:
                    self.reply(404, {"message": "no such path: " + self.path}, "application/json")
                    return
                name = self.path[len("/files/"):].split("?")[0]
                path = os.path.join(standin.files, os.path.basename(name))
                try:
                    f = open(path, "rb")
                except OSError as e:
                    standin.rec.add("download", path=name, status=404, error=str(e))
                    self.reply(404, {"message": "cannot open %s: %s" % (name, e)}, "application/json")
                    return
                with f:
                    size = os.fstat(f.fileno()).st_size
                    started = time.monotonic()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/x-tar")
                    self.send_header("Content-Length", str(size))
                    self.end_headers()
                    sent = 0
                    try:
                        while True:
                            chunk = f.read(1 << 20)
                            if not chunk:
                                break
                            self.wfile.write(chunk)
                            sent += len(chunk)
                    finally:
                        standin.rec.add(
                            "download",
                            path=name,
                            status=200,
                            bytes=sent,
                            size=size,
                            seconds=round(time.monotonic() - started, 4),
                        )

        return Handler

    # ---- websockets (ACS and TCS) ------------------------------------------

    def ws_handler(self, conn):
        path = conn.request.path
        channel = "tcs" if path.startswith("/tcs/") else "acs" if path.startswith("/ws") else None
        if channel is None:
            self.rec.add("connect", channel="unknown", path=path)
            conn.close(1008, "unknown path")
            return
        entry = {"conn": conn, "lock": threading.Lock(), "id": uuid.uuid4().hex[:8]}
        with self.lock:
            getattr(self, channel).append(entry)
        self.rec.add("connect", channel=channel, path=path, session=entry["id"])
        beat = threading.Thread(target=self.heartbeats, args=(channel, entry), daemon=True)
        beat.start()
        reason = "closed"
        try:
            for raw in conn:
                if isinstance(raw, bytes):
                    raw = raw.decode("utf-8", "replace")
                # TCS signs each message: HTTP headers, a blank line, then
                # the JSON. Signatures are not checked.
                if channel == "tcs" and not raw.lstrip().startswith("{") and "\r\n\r\n" in raw:
                    raw = raw.split("\r\n\r\n", 1)[1]
                try:
                    msg = json.loads(raw)
                except ValueError:
                    self.rec.add(channel, type="<not json>", raw=str(raw)[:200], session=entry["id"])
                    continue
                mtype = msg.get("type")
                body = msg.get("message")
                if channel == "tcs":
                    # Metrics can be large: keep the type, not the payload.
                    self.rec.add("tcs", type=mtype, session=entry["id"])
                    ack = {
                        "PublishMetricsRequest": "AckPublishMetric",
                        "PublishHealthRequest": "AckPublishHealth",
                        "PublishInstanceStatusRequest": "AckPublishInstanceStatus",
                    }.get(mtype)
                    if ack:
                        self.ws_send(entry, ack, {"message": "ok"})
                else:
                    self.rec.add("acs", type=mtype, message=body, session=entry["id"])
        except ConnectionClosed as e:
            reason = "connection closed: %s" % e
        finally:
            with self.lock:
                lst = getattr(self, channel)
                if entry in lst:
                    lst.remove(entry)
            self.rec.add("close", channel=channel, session=entry["id"], reason=reason)

    def ws_send(self, entry, mtype, message):
        data = json.dumps({"type": mtype, "message": message})
        with entry["lock"]:
            entry["conn"].send(data)

    def heartbeats(self, channel, entry):
        while not self.stopping.wait(self.args.heartbeat):
            with self.lock:
                if entry not in getattr(self, channel):
                    return
            msg = {"healthy": True}
            if channel == "acs":
                msg["messageId"] = str(uuid.uuid4())
            try:
                self.ws_send(entry, "HeartbeatMessage", msg)
            except Exception:
                return

    def newest_acs(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if self.acs:
                    return self.acs[-1]
            if time.monotonic() > deadline:
                raise RuntimeError("no ACS session within %ss: is the agent running and registered?" % timeout)
            time.sleep(0.05)

    def send_acs(self, mtype, message, timeout):
        message = dict(message or {})
        message.setdefault("messageId", str(uuid.uuid4()))
        message.setdefault("clusterArn", self.cluster_arn)
        message.setdefault("containerInstanceArn", self.instance_for_messages())
        entry = self.newest_acs(timeout)
        self.ws_send(entry, mtype, message)
        self.rec.add("sent", channel="acs", type=mtype, message=message, session=entry["id"])
        return {"messageId": message["messageId"], "session": entry["id"], "message": message}

    def instance_for_messages(self):
        # The ARN the agent registered with (a restored agent re-registers
        # with the ARN it saved), else ours.
        with self.rec.cond:
            for ev in reversed(self.rec.events):
                if ev["kind"] == "call" and ev.get("target") == "RegisterContainerInstance":
                    return ev["response"]["containerInstance"]["containerInstanceArn"]
        return self.instance_arn

    # ---- control operations ------------------------------------------------

    def sha256(self, path):
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        if key not in self.sha_cache:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            self.sha_cache[key] = h.hexdigest()
        return self.sha_cache[key]

    def build_task(self, req):
        arn = req.get("arn") or "arn:aws:ecs:%s:%s:task/%s/%s" % (self.region, ACCOUNT, self.cluster, uuid.uuid4().hex)
        container = {
            "name": req.get("name", "sleeper"),
            "image": req.get("image", "ecs-warden-task:latest"),
            "command": req.get("command", ["/bin/sleep", "3600"]),
            "essential": True,
            "cpu": int(req.get("cpu", 0)),
            "memory": int(req.get("memory", 64)),
            "containerArn": "arn:aws:ecs:%s:%s:container/%s/%s" % (self.region, ACCOUNT, self.cluster, uuid.uuid4()),
            "portMappings": [],
            "mountPoints": [],
            "volumesFrom": [],
            "environment": req.get("environment", {}),
            "links": [],
            "dockerConfig": {},
        }
        if req.get("entryPoint") is not None:
            container["entryPoint"] = req["entryPoint"]
        return {
            "arn": arn,
            "taskClusterArn": self.cluster_arn,
            "family": req.get("family", "ecs-warden-sleeper"),
            "version": str(req.get("version", "1")),
            "desiredStatus": req.get("desiredStatus", "RUNNING"),
            "networkMode": req.get("networkMode", "none"),
            "launchType": "EC2",
            "taskDefinitionAccountId": ACCOUNT,
            "containers": [container],
            "volumes": [],
            "associations": [],
            "attachments": [],
            "elasticNetworkInterfaces": [],
        }

    def control(self, req):
        op = req.get("op")
        timeout = float(req.get("timeout", 30))
        if op == "info":
            return {
                "api_port": self.api_port,
                "ws_port": self.ws_port,
                "api_url": "http://%s:%d" % (self.host, self.api_port),
                "acs_url": "http://%s:%d/" % (self.host, self.ws_port),
                "files_url": "http://%s:%d/files/" % (self.host, self.api_port),
                "files": self.files,
                "cluster": self.cluster,
                "cluster_arn": self.cluster_arn,
                "instance_arn": self.instance_arn,
                "region": self.region,
                "pid": os.getpid(),
            }
        if op == "events":
            with self.rec.cond:
                return {"events": self.rec.select(req)}
        if op == "wait":
            ev = self.rec.wait(req, timeout)
            if ev is None:
                flt = {k: v for k, v in req.items() if k not in ("op",)}
                raise RuntimeError("timed out after %ss waiting for an event %s" % (timeout, json.dumps(flt)))
            return {"event": ev}
        if op == "send":
            return self.send_acs(req["type"], req.get("message"), timeout)
        if op == "stage_update":
            if req.get("file"):
                if not self.files:
                    raise RuntimeError("stage_update with a file needs --files")
                path = os.path.join(self.files, req["file"])
                if not os.path.isfile(path):
                    raise RuntimeError("no such file to stage: %s" % path)
                location = "http://%s:%d/files/%s" % (self.host, self.api_port, req["file"])
                signature = req.get("signature") or self.sha256(path)
            else:
                location, signature = req["location"], req["signature"]
            info = {"location": location, "signature": signature}
            self.last_update = info
            return self.send_acs("StageUpdateMessage", {"updateInfo": info}, timeout)
        if op == "perform_update":
            info = req.get("updateInfo") or self.last_update or {}
            return self.send_acs("PerformUpdateMessage", {"updateInfo": info}, timeout)
        if op in ("payload", "task"):
            tasks = req.get("tasks") if op == "payload" else [self.build_task(req)]
            with self.lock:
                self.seq_num += 1
                seq = self.seq_num
            msg = {"tasks": tasks, "generatedAt": int(time.time()), "seqNum": seq}
            out = self.send_acs("PayloadMessage", msg, timeout)
            out["tasks"] = tasks
            return out
        if op == "close_acs":
            with self.lock:
                entries = list(self.acs)
            for e in entries:
                e["conn"].close(1000, "ConnectionExpired: Reconnect to continue")
            return {"closed": len(entries)}
        if op == "shutdown":
            threading.Thread(target=self.shutdown, daemon=True).start()
            return {}
        raise RuntimeError("unknown op %r (info, events, wait, send, stage_update, perform_update, payload, task, close_acs, shutdown)" % op)

    def make_control_handler(self):
        standin = self

        class Control(socketserver.StreamRequestHandler):
            def handle(self):
                for line in self.rfile:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        req = json.loads(line)
                        out = standin.control(req)
                        out["ok"] = True
                    except Exception as e:  # every failure becomes an answer
                        out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
                    self.wfile.write((json.dumps(out) + "\n").encode())
                    self.wfile.flush()

        return Control

    # ---- life cycle ---------------------------------------------------------

    def run(self):
        http.server.ThreadingHTTPServer.daemon_threads = True
        self.api = http.server.ThreadingHTTPServer((self.host, self.args.api_port), self.make_http_handler())
        self.api_port = self.api.server_address[1]
        self.ws = ws_serve(
            self.ws_handler,
            self.host,
            self.args.ws_port,
            ping_interval=None,
            max_size=64 << 20,
        )
        self.ws_port = self.ws.socket.getsockname()[1]
        if os.path.exists(self.args.control):
            os.unlink(self.args.control)
        socketserver.ThreadingUnixStreamServer.daemon_threads = True
        self.ctl = socketserver.ThreadingUnixStreamServer(self.args.control, self.make_control_handler())
        for target in (self.api.serve_forever, self.ws.serve_forever, self.ctl.serve_forever):
            threading.Thread(target=target, daemon=True).start()
        info = self.control({"op": "info"})
        if self.args.ready:
            tmp = self.args.ready + ".tmp"
            with open(tmp, "w") as f:
                json.dump(info, f)
            os.rename(tmp, self.args.ready)
        sys.stderr.write("ecs-standin: ready %s\n" % json.dumps(info))
        sys.stderr.flush()
        self.stopping.wait()

    def shutdown(self):
        self.stopping.set()
        for s in (self.api, self.ws, self.ctl):
            try:
                s.shutdown()
            except Exception:
                pass


def call(path, request):
    """Client mode, for shell scripts: one request, the answer on stdout."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.sendall(json.dumps(json.loads(request)).encode() + b"\n")
    answer = s.makefile("rb").readline()
    sys.stdout.write(answer.decode())
    return 0 if json.loads(answer).get("ok") else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--control", required=True, help="unix socket for the control interface")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback)")
    p.add_argument("--api-port", type=int, default=0, help="ECS JSON API and file port (0: any)")
    p.add_argument("--ws-port", type=int, default=0, help="ACS/TCS websocket port (0: any)")
    p.add_argument("--files", help="directory served at /files/")
    p.add_argument("--cluster", default="ecs-warden-test")
    p.add_argument("--region", default="us-west-2")
    p.add_argument("--instance-arn", help="container instance ARN to hand out")
    p.add_argument("--heartbeat", type=float, default=20.0, help="seconds between heartbeats")
    p.add_argument("--log", help="append a line per event to this file")
    p.add_argument("--ready", help="write the info JSON here once listening")
    p.add_argument("--call", metavar="JSON", help="be a client: send one request to --control, print the answer")
    args = p.parse_args()
    if args.call is not None:
        sys.exit(call(args.control, args.call))
    if not args.host.startswith("127.") and args.host != "::1":
        p.error("--host must be a loopback address, not %s" % args.host)
    standin = Standin(args)
    signal.signal(signal.SIGTERM, lambda *_: standin.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: standin.stopping.set())
    standin.run()
    if os.path.exists(args.control):
        os.unlink(args.control)


if __name__ == "__main__":
    main()
