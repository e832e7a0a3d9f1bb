"""A fault-injecting TCP proxy on loopback, for the upload fault campaign
(tests/test_fault_campaign.py) and anyone who wants to see what a terminal
does when the network misbehaves.

The TLS session stays end to end (terminal <-> receiver); the proxy only
moves bytes. It reads the TLS record layer, which is plaintext (type,
version, length), so it can count the *application data* bytes that pass
each way and cut a connection at a chosen point of the request or of the
response, not somewhere in the handshake. That count assumes TLS 1.2, which
is what the terminal speaks (mbedTLS): in TLS 1.3 the encrypted handshake is
application data too.

    px = FaultProxy([("127.0.0.1", rx_port)])      # several backends: round robin
    px.plan(Fault("reset_up", n=700))              # the next connection's fault
    url = "https://127.0.0.1:%d/v1/upload" % px.port
    ...
    px.refuse(); ...; px.reopen()                  # connection refused meanwhile
    px.connections[-1]                             # what happened, per connection
    px.close()

Faults, per connection (a connection with no planned fault passes):
  pass           forward everything
  reset_up n     forward the request's first n application bytes, then reset
                 both sides (RST): the link dropped mid-body
  reset_down n   forward the whole request and the response's first n
                 application bytes (n >= 1), then reset both sides
  ack_lost how   forward the whole request; drop the response from its first
                 byte (the receiver committed before it answered), then
                 how = "rst" (reset the terminal), "fin" (close it cleanly)
                 or "hold" (keep the terminal waiting until it gives up)
  slow chunk,delay   forward at most `chunk` bytes each `delay` seconds, both
                 ways (a link the terminal may or may not outlast)
  stall          accept, connect nowhere, forward nothing; keep the terminal
                 waiting until it gives up (its timeouts)
and, for the listener rather than one connection, refuse()/reopen(): the
port is closed, so a connect is refused (RST), until reopen().
"""
import collections
import selectors
import socket
import struct
import threading
import time

KINDS = ("pass", "reset_up", "reset_down", "ack_lost", "slow", "stall")
_APP = 23          # TLS ContentType application_data
_HOLD_MAX_S = 120  # a held connection is closed after this even if the client waits on


class Fault:
    __slots__ = ("kind", "n", "how", "chunk", "delay")

    def __init__(self, kind="pass", n=0, how="rst", chunk=256, delay=0.01):
        if kind not in KINDS:
            raise ValueError("unknown fault %r" % (kind,))
        if kind == "reset_down" and n < 1:
            raise ValueError("reset_down needs n >= 1 (n = 0 is ack_lost)")
        if how not in ("rst", "fin", "hold"):
            raise ValueError("ack_lost how: rst, fin or hold")
        self.kind, self.n, self.how, self.chunk, self.delay = kind, n, how, chunk, delay

    def __repr__(self):
        extra = {"reset_up": "n=%d" % self.n, "reset_down": "n=%d" % self.n, "ack_lost": self.how,
                 "slow": "chunk=%d delay=%g" % (self.chunk, self.delay)}.get(self.kind, "")
        return "Fault(%s%s)" % (self.kind, " " + extra if extra else "")


class Meter:
    """Follows one direction's TLS records and counts application data bytes
    (record payloads of type 23)."""

    def __init__(self):
        self.hdr = b""
        self.left = 0     # payload bytes left in the current record
        self.type = None
        self.app = 0      # application data bytes that went through
        self.raw = 0

    def take(self, data, limit=None):
        """How many bytes of `data` may pass so that no more than `limit`
        application bytes have gone through in all (None: no limit). A record
        of application data that would start once the limit is reached is not
        begun: with limit = app, not even its header passes."""
        i, end = 0, len(data)
        while i < end:
            if self.left == 0:
                if not self.hdr and limit is not None and data[i] == _APP and self.app >= limit:
                    break
                k = min(5 - len(self.hdr), end - i)
                self.hdr += bytes(data[i:i + k])
                i += k
                if len(self.hdr) == 5:
                    self.type = self.hdr[0]
                    self.left = struct.unpack(">H", self.hdr[3:5])[0]
                    self.hdr = b""
                continue
            k = min(self.left, end - i)
            if self.type == _APP and limit is not None:
                k = min(k, limit - self.app)
                if k <= 0:
                    break
                self.app += k
            elif self.type == _APP:
                self.app += k
            self.left -= k
            i += k
        self.raw += i
        return i


class Connection:
    """What happened to one proxied connection (the campaign's statistics)."""

    def __init__(self, index, fault, backend):
        self.index, self.fault, self.backend = index, fault, backend
        self.up = Meter()      # terminal -> receiver
        self.down = Meter()    # receiver -> terminal
        self.cut = False       # the fault took effect (a pass or a slow link that carried all: False)
        self.end = None        # how it ended: "closed", "client-closed", "reset", "held", "backend-refused"
        self.t_open = time.monotonic()
        self.t_close = None
        self.done = threading.Event()

    def __repr__(self):
        return "<conn %d %r backend=%s up=%d down=%d cut=%s end=%s>" % (
            self.index, self.fault, self.backend, self.up.app, self.down.app, self.cut, self.end)


def _rst(sock):
    """Close with a TCP reset, not a FIN."""
    if sock is None:
        return
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def _close(sock):
    if sock is not None:
        sock.close()


class FaultProxy:
    def __init__(self, backends, host="127.0.0.1", port=0):
        self.backends = [tuple(b) for b in backends]
        if not self.backends:
            raise ValueError("no backend")
        self.host = host
        self._plan = collections.deque()
        self._lock = threading.Lock()
        self._next_backend = 0
        self.connections = []
        self._stop = threading.Event()
        self._listener = None
        self._refusing = False
        self.port = port
        self._listen()
        self._thread = threading.Thread(target=self._accept_loop, name="faultproxy", daemon=True)
        self._thread.start()

    # -- control ----------------------------------------------------------------
    def plan(self, *faults):
        """Faults for the next connections, in order (then: pass)."""
        with self._lock:
            self._plan.extend(faults)

    def clear_plan(self):
        with self._lock:
            self._plan.clear()

    def planned(self):
        with self._lock:
            return len(self._plan)

    def refuse(self):
        """Close the listening port: every connect is refused until reopen()."""
        with self._lock:
            self._refusing = True
            if self._listener is not None:
                self._listener.close()
                self._listener = None

    def reopen(self):
        with self._lock:
            self._refusing = False
            if self._listener is None:
                self._listen()

    def set_backends(self, backends):
        with self._lock:
            self.backends = [tuple(b) for b in backends]

    def open_connections(self):
        return [c for c in self.connections if not c.done.is_set()]

    def wait_quiet(self, timeout=30.0):
        """Wait until no connection is open; False if one still is."""
        deadline = time.monotonic() + timeout
        while self.open_connections():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def close(self):
        self._stop.set()
        with self._lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._thread.join(2)
        for c in self.connections:
            c.done.wait(2)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- serving -----------------------------------------------------------------
    def _listen(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(16)
        s.setblocking(False)
        self.port = s.getsockname()[1]
        self._listener = s

    def _accept_loop(self):
        while not self._stop.is_set():
            with self._lock:
                lst = self._listener
            if lst is None:
                time.sleep(0.005)
                continue
            try:
                sel = selectors.DefaultSelector()
                sel.register(lst, selectors.EVENT_READ)
                ready = sel.select(0.05)
                sel.close()
                if not ready:
                    continue
                client, _ = lst.accept()
            except (OSError, ValueError):  # the listener was closed under us (refuse())
                continue
            client.setblocking(True)
            with self._lock:
                fault = self._plan.popleft() if self._plan else Fault("pass")
                backend = self._next_backend % len(self.backends)
                self._next_backend += 1
                conn = Connection(len(self.connections), fault, backend)
                self.connections.append(conn)
                addr = self.backends[backend]
            threading.Thread(target=self._serve, args=(conn, client, addr), daemon=True).start()

    def _serve(self, conn, client, addr):
        server = None
        try:
            if conn.fault.kind == "stall":
                conn.cut = True
                conn.end = self._hold(client)
                return
            try:
                server = socket.create_connection(addr, timeout=5)
            except OSError:
                conn.end = "backend-refused"
                _rst(client)
                client = None
                return
            conn.end = self._relay(conn, client, server)
        finally:
            if conn.end in ("reset",):
                _rst(client)
                _rst(server)
            else:
                _close(client)
                _close(server)
            conn.t_close = time.monotonic()
            conn.done.set()

    def _hold(self, client):
        """Forward nothing; read and drop what the client sends until it
        closes (or _HOLD_MAX_S, or the proxy stops)."""
        deadline = time.monotonic() + _HOLD_MAX_S
        client.settimeout(0.05)
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                if not client.recv(65536):
                    return "client-closed"
            except socket.timeout:
                continue
            except OSError:
                return "client-closed"
        return "held"

    def _relay(self, conn, client, server):
        f = conn.fault
        up_limit = f.n if f.kind == "reset_up" else None
        down_limit = {"reset_down": f.n, "ack_lost": 0}.get(f.kind)
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, "up")
        sel.register(server, selectors.EVENT_READ, "down")
        open_dirs = {"up", "down"}
        try:
            while open_dirs and not self._stop.is_set():
                for key, _ in sel.select(0.2):
                    d = key.data
                    src, dst = (client, server) if d == "up" else (server, client)
                    meter = conn.up if d == "up" else conn.down
                    limit = up_limit if d == "up" else down_limit
                    try:
                        data = src.recv(65536)
                    except OSError:
                        return "reset"
                    if not data:
                        sel.unregister(src)
                        open_dirs.discard(d)
                        try:
                            dst.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        continue
                    k = meter.take(data, limit)
                    if not self._send(dst, data[:k], f):
                        return "reset"
                    # The cut point: the request's n-th byte (reset_up), or
                    # the response's first byte past n (reset_down, ack_lost).
                    if k < len(data) or (d == "up" and limit is not None and meter.app >= limit):
                        conn.cut = True
                        if f.kind == "ack_lost" and f.how == "fin":
                            _close(server)
                            return "closed"
                        if f.kind == "ack_lost" and f.how == "hold":
                            _close(server)
                            return self._hold(client)
                        return "reset"
            return "closed"
        finally:
            sel.close()

    def _send(self, dst, data, f):
        try:
            if f.kind != "slow":
                dst.sendall(data)
                return True
            for i in range(0, len(data), f.chunk):
                time.sleep(f.delay)
                dst.sendall(data[i:i + f.chunk])
            return True
        except OSError:
            return False
