#!/usr/bin/env python3
"""A third-party client of chat-gateway, written from protocol-v1.md alone.

It shares no code with the gateway, the widget or the load tester: the WebSocket handshake and
framing are done here by hand (RFC 6455, Python's standard library only), and every frame is
built from the contract's field names. It starts a gateway (the binary given by GATEWAY_BIN),
then an operator and a visitor chat both ways on the demo site in manual ("who first") routing:

  visitor: POST /v1/visitor/session -> hello -> welcome -> start -> send
  operator: hello -> welcome -> status active -> sees the queue -> accept -> history -> send
  visitor: receives the operator's msg; both answer ping with pong; the visitor closes.

Exit status 0 when every step held, 1 with the step that failed otherwise.
"""

import base64
import hashlib
import json
import os
import tempfile
import re
import socket
import struct
import subprocess
import sys
import time
import urllib.request

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEADLINE = 20.0


class Failed(Exception):
    pass


class WebSocket:
    """The client side of RFC 6455 over a plain TCP socket: text frames, masked, no extensions."""

    def __init__(self, host, port, path, subprotocol):
        self.sock = socket.create_connection((host, port), timeout=DEADLINE)
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
        )
        self.sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise Failed("the handshake was cut")
            head += chunk
        lines = head.decode().split("\r\n")
        if " 101 " not in lines[0]:
            raise Failed(f"handshake answered {lines[0]!r}")
        headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
        accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != accept:
            raise Failed("bad Sec-WebSocket-Accept")
        if headers.get("sec-websocket-protocol") != subprotocol:
            raise Failed(f"subprotocol {headers.get('sec-websocket-protocol')!r}, asked {subprotocol}")
        self.close_code = None

    def _exact(self, n):
        out = b""
        while len(out) < n:
            chunk = self.sock.recv(n - len(out))
            if not chunk:
                raise Failed("connection closed")
            out += chunk
        return out

    def _send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, obj):
        self._send_frame(0x1, json.dumps(obj).encode())

    def recv(self):
        """The next JSON frame; control frames are handled here."""
        while True:
            b1, b2 = self._exact(2)
            opcode, n = b1 & 0x0F, b2 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", self._exact(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", self._exact(8))
            payload = self._exact(n)
            if opcode == 0x9:  # WebSocket ping
                self._send_frame(0xA, payload)
            elif opcode == 0x8:
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise Failed(f"closed by the server with {self.close_code}: {payload[2:].decode(errors='replace')}")
            elif opcode == 0x1:
                return json.loads(payload)

    def wait_for(self, what, pred):
        """Reads frames until one satisfies `pred`, answering application pings on the way."""
        end = time.monotonic() + DEADLINE
        while time.monotonic() < end:
            f = self.recv()
            if f.get("t") == "ping":
                self.send({"t": "pong"})
                continue
            if f.get("t") == "error" and pred(f) is False:
                raise Failed(f"{what}: error {f}")
            if pred(f):
                return f
        raise Failed(f"no {what} within {DEADLINE}s")

    def request(self, frame):
        """Sends a frame with a fresh rid and returns its ok (an error fails)."""
        rid = f"r{time.monotonic_ns()}"
        self.send(dict(frame, rid=rid))
        f = self.wait_for(f"answer to {frame['t']}", lambda f: f.get("rid") == rid)
        if f["t"] != "ok":
            raise Failed(f"{frame['t']} refused: {f}")
        return f

    def close(self):
        try:
            self._send_frame(0x8, struct.pack("!H", 1000))
        finally:
            self.sock.close()


def step(name):
    print(f"  - {name}", flush=True)


def main():
    gateway = os.environ.get("GATEWAY_BIN", "target/debug/gateway")
    secret = "third-party-secret-0123456789"
    data_dir = tempfile.mkdtemp(prefix="cg-thirdparty-")
    env = dict(os.environ, GATEWAY_LISTEN="127.0.0.1:0", GATEWAY_JWT_SECRET=secret, RUST_LOG="warn",
               GATEWAY_DATA_DIR=data_dir)
    env.pop("GATEWAY_REDIS_URL", None)
    env.pop("GATEWAY_SITES", None)
    proc = subprocess.Popen([gateway], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()
        m = re.match(r"listening on http://([0-9.]+):(\d+)", line)
        if not m:
            raise Failed(f"gateway printed {line!r}")
        host, port = m.group(1), int(m.group(2))
        base = f"http://{host}:{port}"
        print(f"gateway at {base}")

        step("an operator token from the CLI; the operator says hello and goes active")
        op_token = subprocess.run(
            [gateway, "token", "--role", "operator", "--sub", "tp-olga", "--name", "Olga"],
            env=dict(os.environ, GATEWAY_JWT_SECRET=secret), check=True, capture_output=True, text=True,
        ).stdout.strip()
        op = WebSocket(host, port, "/v1/ws", "chat.v1.json")
        op.send({"t": "hello", "token": op_token})
        w = op.wait_for("operator welcome", lambda f: f["t"] == "welcome")
        if w["me"]["role"] != "operator" or w["me"]["site"] != "demo":
            raise Failed(f"operator welcome {w['me']}")
        op.request({"t": "status", "status": "active"})

        step("a visitor session over HTTP; hello; start; send")
        body = json.dumps({"site": "demo"}).encode()
        req = urllib.request.Request(f"{base}/v1/visitor/session", body, {"Content-Type": "application/json"})
        session = json.load(urllib.request.urlopen(req, timeout=DEADLINE))
        vis = WebSocket(host, port, "/v1/ws", "chat.v1.json")
        vis.send({"t": "hello", "token": session["token"]})
        w = vis.wait_for("visitor welcome", lambda f: f["t"] == "welcome")
        if w["me"]["role"] != "visitor" or w["me"]["id"] != session["visitor_id"]:
            raise Failed(f"visitor welcome {w['me']}")
        conv = vis.request({"t": "start", "prechat": {"name": "Third Party"}})["conv"]
        if conv["state"] != "queued":
            raise Failed(f"a new conversation is {conv['state']}")
        ok = vis.request({"t": "send", "conv": conv["id"], "cid": "tp-1", "text": "Hello from outside"})
        if ok["seq"] < 1:
            raise Failed(f"send ok {ok}")
        again = vis.request({"t": "send", "conv": conv["id"], "cid": "tp-1", "text": "Hello from outside"})
        if again["seq"] != ok["seq"]:
            raise Failed(f"the same cid stored twice: {ok['seq']} then {again['seq']}")

        step("the operator sees it queued, accepts, reads the history and answers")
        op.wait_for("queue listing", lambda f: f["t"] == "queue" and any(c["id"] == conv["id"] for c in f["waiting"]))
        accepted = op.request({"t": "accept", "conv": conv["id"]})["conv"]
        if accepted["state"] != "active" or accepted["operator"]["id"] != "tp-olga":
            raise Failed(f"accepted {accepted}")
        hist = op.request({"t": "history", "conv": conv["id"]})
        texts = [m["text"] for m in hist["messages"] if m["from"]["role"] == "visitor"]
        if texts != ["Hello from outside"]:
            raise Failed(f"history shows {texts}")
        op.request({"t": "send", "conv": conv["id"], "cid": "tp-op-1", "text": "Hello, how can I help?"})

        step("the visitor receives the operator's message, in seq order")
        m = vis.wait_for("operator msg", lambda f: f["t"] == "msg" and f["from"]["role"] == "operator")
        if m["text"] != "Hello, how can I help?" or m["conv"] != conv["id"] or m["seq"] <= ok["seq"]:
            raise Failed(f"visitor got {m}")
        vis.request({"t": "send", "conv": conv["id"], "cid": "tp-2", "text": "Thanks!"})
        got = op.wait_for("visitor msg", lambda f: f["t"] == "msg" and f.get("text") == "Thanks!")
        if got["from"]["role"] != "visitor":
            raise Failed(f"operator got {got}")

        step("the visitor closes the conversation; both see it closed")
        vis.request({"t": "close", "conv": conv["id"]})
        op.wait_for("closed event", lambda f: f["t"] == "conv" and f["event"] == "closed" and f["conv"]["id"] == conv["id"])

        step("a forged token is closed with 4001")
        bad = WebSocket(host, port, "/v1/ws", "chat.v1.json")
        bad.send({"t": "hello", "token": op_token[:-4] + "AAAA"})
        try:
            bad.recv()
            raise Failed("a forged token was welcomed")
        except Failed:
            if bad.close_code != 4001:
                raise
        vis.close()
        op.close()
        print("third-party client: every step held")
        return 0
    except Failed as e:
        print(f"third-party client FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
