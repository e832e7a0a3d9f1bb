"""host_tools.faultproxy: each fault does what it says, at the byte it says.
The backend here speaks bare TLS record framing (type, version, length,
payload), which is all the proxy looks at."""
import socket
import struct
import threading
import time

import pytest

from host_tools.faultproxy import Fault, FaultProxy, Meter


def rec(kind, n, fill=b"x"):
    return struct.pack(">BHH", kind, 0x0303, n) + fill * n


HANDSHAKE = rec(22, 40, b"h")
REQUEST = rec(23, 300, b"q")
RESPONSE = rec(22, 10, b"f") + rec(23, 200, b"r")


class Backend:
    """Reads until it has len(HANDSHAKE + REQUEST) bytes, then answers RESPONSE."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.got = []       # bytes received, per connection
        self.ended = []     # how each connection ended: "eof", "reset", "answered"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        buf = b""
        i = len(self.got)
        self.got.append(b"")
        self.ended.append(None)
        c.settimeout(5)
        try:
            while len(buf) < len(HANDSHAKE + REQUEST):
                d = c.recv(4096)
                if not d:
                    self.ended[i] = "eof"
                    return
                buf += d
                self.got[i] = buf
            c.sendall(RESPONSE)
            self.ended[i] = "answered"
        except ConnectionResetError:
            self.ended[i] = "reset"
        except OSError:
            self.ended[i] = "error"
        finally:
            c.close()

    def close(self):
        self.sock.close()


@pytest.fixture
def backend():
    b = Backend()
    yield b
    b.close()


def client(port, send=HANDSHAKE + REQUEST, timeout=2.0):
    """(bytes received, how it ended: "eof", "reset", "timeout")."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        s.sendall(send)
    except OSError:
        return b"", "reset"
    got = b""
    try:
        while True:
            d = s.recv(4096)
            if not d:
                return got, "eof"
            got += d
    except ConnectionResetError:
        return got, "reset"
    except socket.timeout:
        return got, "timeout"
    finally:
        s.close()


def wait(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.01)


def test_meter_counts_application_data_only():
    m = Meter()
    data = HANDSHAKE + REQUEST
    # Byte by byte, as TCP may deliver it: the count and the cut agree.
    taken = sum(m.take(data[i:i + 1], 120) for i in range(len(data)))
    assert taken == len(HANDSHAKE) + 5 + 120 and m.app == 120
    m = Meter()
    assert m.take(HANDSHAKE + rec(23, 10), 0) == len(HANDSHAKE)  # limit 0: not even the header


def test_pass_forwards_everything(backend):
    with FaultProxy([("127.0.0.1", backend.port)]) as px:
        got, how = client(px.port)
        assert got == RESPONSE and how == "eof"
        assert backend.got[0] == HANDSHAKE + REQUEST
        wait(lambda: px.connections[0].done.is_set())
        c = px.connections[0]
        assert (c.up.app, c.down.app, c.cut) == (300, 200, False)


def test_reset_mid_request_cuts_at_the_nth_application_byte(backend):
    with FaultProxy([("127.0.0.1", backend.port)]) as px:
        px.plan(Fault("reset_up", n=123))
        got, how = client(px.port)
        assert got == b"" and how == "reset"
        wait(lambda: backend.ended and backend.ended[0] is not None)
        assert backend.got[0] == HANDSHAKE + REQUEST[:5 + 123] and backend.ended[0] == "reset"
        assert px.connections[0].cut
        # The plan is used up: the next connection passes.
        assert client(px.port)[0] == RESPONSE


def test_reset_mid_response(backend):
    with FaultProxy([("127.0.0.1", backend.port)]) as px:
        px.plan(Fault("reset_down", n=50))
        got, how = client(px.port)
        assert backend.got[0] == HANDSHAKE + REQUEST  # the receiver had the whole request
        assert got == RESPONSE[:15 + 5 + 50] and how == "reset"


@pytest.mark.parametrize("how, ends", [("rst", "reset"), ("fin", "eof"), ("hold", "timeout")])
def test_ack_lost_drops_the_whole_response(backend, how, ends):
    with FaultProxy([("127.0.0.1", backend.port)]) as px:
        px.plan(Fault("ack_lost", how=how))
        got, ended = client(px.port, timeout=0.5)
        wait(lambda: backend.ended and backend.ended[0] is not None)
        assert backend.ended[0] == "answered"
        # Handshake records still pass; not one byte of application data does.
        assert got == RESPONSE[:15] and ended == ends


def test_stall_forwards_nothing(backend):
    with FaultProxy([("127.0.0.1", backend.port)]) as px:
        px.plan(Fault("stall"))
        got, how = client(px.port, timeout=0.5)
        assert (got, how) == (b"", "timeout") and backend.got == []


def test_slow_link_delivers_everything_late(backend):
    with FaultProxy([("127.0.0.1", backend.port)]) as px:
        px.plan(Fault("slow", chunk=64, delay=0.01))
        t = time.monotonic()
        got, how = client(px.port)
        ms = (time.monotonic() - t) * 1000
        assert got == RESPONSE and how == "eof"
        # 345 bytes up in 6 chunks, 215 down in 4: at least 10 delays of 10 ms.
        assert ms >= 100


def test_refused_until_reopened_on_the_same_port(backend):
    with FaultProxy([("127.0.0.1", backend.port)]) as px:
        port = px.port
        px.refuse()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=1)
        px.reopen()
        assert px.port == port and client(port)[0] == RESPONSE


def test_backends_alternate():
    a, b = Backend(), Backend()
    try:
        with FaultProxy([("127.0.0.1", a.port), ("127.0.0.1", b.port)]) as px:
            for _ in range(4):
                assert client(px.port)[0] == RESPONSE
            assert len(a.got) == 2 and len(b.got) == 2
            assert [c.backend for c in px.connections] == [0, 1, 0, 1]
    finally:
        a.close()
        b.close()
