"""A scriptable stand-in for the acquirer's receiver, for the uplink tests:
HTTPS with client-certificate verification (CPython ssl), the upload body of
docs/upload.md parsed strictly, the ack rule, and signed update bundles.

Each request takes the next behaviour from `script` (default "ok"), so a test
can make the receiver answer 500 before or after it commits, reset the
connection mid-body, stall, trickle, answer garbage or megabytes, or hand out
a bundle with a bad signature, an old version or the wrong nonce.
"""
import json
import os
import socket
import ssl
import struct
import threading
import time

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

DOMAIN = b"OFFPAY-BUNDLE-V1\x00"


def parse_upload(body):
    """(nonce, version, after, [(rid, payload)]) or ValueError."""
    if len(body) < 30 or body[:4] != b"OPU1":
        raise ValueError("magic")
    nonce = body[4:20]
    version, after, count = struct.unpack_from(">IIH", body, 20)
    if count > 64:
        raise ValueError("count")
    p, recs, prev = 30, [], after
    for _ in range(count):
        rid, n = struct.unpack_from(">IH", body, p)
        if rid <= prev or not 1 <= n <= 1536 or p + 6 + n > len(body):
            raise ValueError("record")
        recs.append((rid, bytes(body[p + 6:p + 6 + n])))
        p += 6 + n
        prev = rid
    if p != len(body):
        raise ValueError("trailing")
    return nonce, version, after, recs


def sign(key, text):
    r, s = decode_dss_signature(key.sign(DOMAIN + text, ec.ECDSA(hashes.SHA256())))
    return (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()


class Receiver:
    def __init__(self, server_cert, server_key, ca, update_key, terminal_id, port=0):
        self.update_key = update_key
        self.terminal_id = terminal_id
        self.script = []
        self.requests = []      # every parsed upload: dict
        self.held = {}          # rid -> payload, committed
        self.ack = 0
        self.version = 1
        self.deny = {"wallets": [], "serials": []}
        self.issuers = []
        self.risk = {"max_offline_age_s": 604800}
        self.time = 1764000000
        self.errors = []
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(server_cert, server_key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._serve, daemon=True)
        self._t.start()

    @property
    def url(self):
        return "https://127.0.0.1:%d/v1/upload" % self.port

    def close(self):
        self._stop = True
        self.sock.close()

    # -- bundles ----------------------------------------------------------------

    def bundle(self, nonce_, **over):
        d = {"v": 1, "version": self.version, "terminal_id": self.terminal_id,
             "nonce": nonce_.hex(), "time": self.time,
             "deny": self.deny, "issuers": self.issuers, "risk": self.risk}
        d.update(over)
        return json.dumps(d, separators=(",", ":")).encode()

    # -- serving -----------------------------------------------------------------

    def _serve(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _next(self):
        with self._lock:
            return self.script.pop(0) if self.script else {"do": "ok"}

    def _conn(self, raw):
        raw.settimeout(10)
        try:
            c = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self.errors.append("tls: %s" % (e,))
            raw.close()
            return
        try:
            self._handle(c)
        except (OSError, ValueError) as e:
            self.errors.append("conn: %r" % (e,))
        finally:
            try:
                c.close()
            except OSError:
                pass

    def _reset(self, c):
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()

    def _handle(self, c):
        act = self._next()
        do = act.get("do", "ok")
        cn = dict(x[0] for x in c.getpeercert()["subject"])["commonName"]
        head = b""
        while b"\r\n\r\n" not in head:
            k = c.recv(4096)
            if not k:
                return
            head += k
        head, _, body = head.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(b":") for ln in lines[1:])}
        n = int(hdrs[b"content-length"])
        if do == "early":  # answer on the head alone (e.g. 403, 413), never read the body
            self._send(c, act["status"], {"error": act.get("error", "revoked")})
            time.sleep(0.2)
            return
        if do == "reset-mid-body":
            while len(body) < n // 2:
                body += c.recv(4096)
            self._reset(c)
            return
        while len(body) < n:
            k = c.recv(65536)
            if not k:
                return
            body += k
        try:
            nonce, version, after, recs = parse_upload(body)
        except ValueError as e:
            self.errors.append("malformed upload: %s" % e)
            return self._send(c, 400, {"error": "malformed", "detail": str(e)})
        req = {"cn": cn, "after": after, "version": version, "rids": [r for r, _ in recs],
               "line": lines[0].decode(), "host": hdrs.get(b"host", b"").decode()}
        self.requests.append(req)
        if do == "500-before":
            return self._send(c, 500, {"error": "internal"})
        if after > self.ack:
            return self._send(c, 409, {"error": "gap", "ack": self.ack})
        for rid, p in recs:
            if self.held.get(rid, p) != p:
                return self._send(c, 409, {"error": "conflict"})
        for rid, p in recs:
            self.held[rid] = p
        last = recs[-1][0] if recs else after
        if last > self.ack:
            self.ack = last
        if do == "500-after":
            return self._send(c, 500, {"error": "internal"})
        if do == "stall":
            time.sleep(act.get("s", 5))
            return
        ack = act.get("ack", self.ack)
        text = self.bundle(nonce, **act.get("bundle", {}))
        sig = sign(act["key"], text) if "key" in act else sign(self.update_key, text)
        if act.get("flip"):
            text = text.replace(b'"time":', b'"time": ')
        resp = {"ack": ack, "bundle": text.decode(), "sig": sig}
        if do == "no-bundle":
            resp = {"ack": ack}
        data = json.dumps(resp).encode()
        if do == "reset-mid-response":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                      % len(data) + data[:len(data) // 2])
            time.sleep(0.05)
            return self._reset(c)
        if do == "garbage":
            c.sendall(os.urandom(act.get("n", 4096)))
            return
        if do == "huge-length":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n" + b"x" * 65536)
            return
        if do == "huge-stream":   # no Content-Length: runs to the end of the stream
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
            try:
                for _ in range(act.get("mb", 2) * 16):
                    c.sendall(b"[" * 65536)
            except OSError:
                pass  # the terminal hung up: what it should do
            return
        if do == "huge-head":
            try:
                c.sendall(b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"a" * 1000000 + b"\r\n\r\n")
            except OSError:
                pass
            return
        if do == "slow":
            msg = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" \
                % len(data) + data
            try:
                for i in range(0, len(msg), 8):
                    c.sendall(msg[i:i + 8])
                    time.sleep(act.get("gap", 0.2))
            except OSError:
                pass
            return
        return self._send(c, act.get("status", 200), resp)

    def _send(self, c, status, obj):
        data = json.dumps(obj).encode()
        c.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                  b"Connection: close\r\n\r\n" % (status, len(data)) + data)
