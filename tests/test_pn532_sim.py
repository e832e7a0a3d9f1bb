"""host_tools.pn532_sim at byte level (CPython raw socket client), plus the Adafruit
CircuitPython PN532 library as an independent cross-check of the simulator."""
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT
from host_tools.pn532_sim import ACK, ERROR_FRAME, NACK, EchoPhone, PN532Sim, frame

WAKE = b"\x55\x55" + bytes(14)


def cmd_frame(cmd, params=b""):
    data = bytes([0xD4, cmd]) + bytes(params)
    n = len(data)
    if n > 255:
        hi, lo = n >> 8, n & 0xFF
        head = bytes([0, 0, 0xFF, 0xFF, 0xFF, hi, lo, (-(hi + lo)) & 0xFF])
    else:
        head = bytes([0, 0, 0xFF, n, (-n) & 0xFF])
    return head + data + bytes([(-sum(data)) & 0xFF, 0])


class Raw:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.s.settimeout(0.05)
        self.buf = b""

    def send(self, b):
        self.s.sendall(b)

    def recv(self, n, timeout=1.0):
        end = time.monotonic() + timeout
        while len(self.buf) < n and time.monotonic() < end:
            try:
                d = self.s.recv(4096)
            except socket.timeout:
                continue
            if not d:
                break
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def quiet(self, t=0.1):
        return self.recv(1, timeout=t) == b""

    def call(self, cmd, params=b"", resp_len=None):
        self.send(cmd_frame(cmd, params))
        assert self.recv(6) == ACK
        hdr = self.recv(5)
        assert hdr[:3] == b"\x00\x00\xff", hdr
        if hdr[3] == 0xFF and hdr[4] == 0xFF:
            ext = self.recv(3)
            n = ext[0] << 8 | ext[1]
            body = self.recv(n + 2)
        else:
            n = hdr[3]
            body = self.recv(n + 2)
        assert (sum(body[:-1])) & 0xFF == 0
        assert body[0] == 0xD5 and body[1] == cmd + 1
        return body[2:n]

    def close(self):
        self.s.close()


@pytest.fixture
def sim():
    s = PN532Sim(0, seed=5).start()
    yield s
    s.stop()


@pytest.fixture
def raw(sim):
    r = Raw(sim.port)
    r.send(WAKE)
    yield r
    r.close()


def test_firmware_version_byte_exact(raw):
    raw.send(b"\x00\x00\xff\x02\xfe\xd4\x02\x2a\x00")
    assert raw.recv(19) == ACK + b"\x00\x00\xff\x06\xfa\xd5\x03\x32\x01\x06\x07\xe8\x00"


def test_asleep_until_wakeup(sim):
    r = Raw(sim.port)
    r.send(cmd_frame(0x02))
    assert r.quiet()
    r.send(WAKE + cmd_frame(0x02))
    assert r.recv(6) == ACK
    r.close()


def test_bad_checksum_ignored_unknown_command_error_frame(raw):
    bad = bytearray(cmd_frame(0x02))
    bad[-2] ^= 1
    raw.send(bytes(bad))
    assert raw.quiet()
    raw.send(cmd_frame(0x7E))
    assert raw.recv(6 + 8) == ACK + ERROR_FRAME
    raw.send(cmd_frame(0x14, b"\x09"))  # bad SAM mode
    assert raw.recv(6 + 8) == ACK + ERROR_FRAME


def test_nack_resends_last_response(raw):
    fw = raw.call(0x02)
    raw.send(NACK)
    assert raw.recv(13) == frame(b"\xd5\x03" + fw)


def test_host_ack_aborts_pending_poll(sim, raw):
    raw.send(cmd_frame(0x4A, b"\x01\x00"))
    assert raw.recv(6) == ACK
    assert raw.quiet(0.1)  # pending: MaxRetries 0xFF and no phone
    raw.send(ACK)
    assert sim.wait_until(lambda: sim.stats["host_acks"] >= 1)  # the abort is processed
    sim.add_phone(EchoPhone())
    assert raw.quiet(0.1) and sim.stats["aborted"] == 1


def test_pending_poll_completes_when_phone_arrives(sim, raw):
    raw.send(cmd_frame(0x4A, b"\x01\x00"))
    assert raw.recv(6) == ACK
    threading.Timer(0.05, sim.add_phone, (EchoPhone(uid=b"\x08\x01\x02\x03"),)).start()
    hdr = raw.recv(5, timeout=2)
    assert hdr[:3] == b"\x00\x00\xff"
    body = raw.recv(hdr[3] + 2)
    assert body[:8] == b"\xd5\x4b\x01\x01\x00\x04\x20\x04" and body[8:12] == b"\x08\x01\x02\x03"


def test_finite_retries_no_target(sim, raw):
    raw.call(0x32, b"\x05\xff\x01\x02")
    assert raw.call(0x4A, b"\x01\x00") == b"\x00"


def test_extended_frames_and_chaining(sim, raw):
    ph = EchoPhone()
    sim.add_phone(ph)
    raw.call(0x4A, b"\x01\x00")
    body = bytes(i & 0xFF for i in range(300))
    capdu = b"\x00\xd6\x00\x00\x00\x01\x2c" + body
    # 262-byte data part with MI -> extended command frame (LEN 265)
    assert raw.call(0x40, b"\x41" + capdu[:262]) == b"\x00"
    r = raw.call(0x40, b"\x01" + capdu[262:])
    assert ph.apdus[-1] == capdu
    assert r[0] == 0x40 and len(r) == 263  # MI set, extended response frame (LEN 265)
    r2 = raw.call(0x40, b"\x01")
    assert r2[0] == 0x00 and r[1:] + r2[1:] == body + b"\x90\x00"


def test_indataexchange_without_target(raw):
    assert raw.call(0x40, b"\x01\x00\xa4\x04\x00") == b"\x27"


def test_corrupt_then_nack_gives_good_frame(sim, raw):
    sim.corrupt_responses(1)
    raw.send(cmd_frame(0x02))
    assert raw.recv(6) == ACK
    bad = raw.recv(13)
    assert bad[:-2] == frame(b"\xd5\x03\x32\x01\x06\x07")[:-2] and bad[-2] != 0xE8
    raw.send(NACK)
    assert raw.recv(13) == frame(b"\xd5\x03\x32\x01\x06\x07")


def test_nack_and_silence_faults(sim, raw):
    sim.nack_commands(1)
    raw.send(cmd_frame(0x02))
    assert raw.recv(6) == NACK
    sim.silence(1)
    raw.send(cmd_frame(0x02))
    assert raw.quiet()
    sim.silence(1, ack=True)
    raw.send(cmd_frame(0x02))
    assert raw.recv(6) == ACK and raw.quiet()
    assert raw.call(0x02) == b"\x32\x01\x06\x07"


def test_garbage_fault(sim, raw):
    sim.garbage(b"\x13\x37")
    raw.send(cmd_frame(0x02))
    assert raw.recv(8) == b"\x13\x37" + ACK


def test_power_down_and_wedge(sim, raw):
    assert raw.call(0x16, b"\x10") == b"\x00"
    assert sim.asleep
    raw.send(cmd_frame(0x02))
    assert raw.quiet()
    raw.send(WAKE)
    assert raw.call(0x02) == b"\x32\x01\x06\x07"
    sim.wedge()
    raw.send(cmd_frame(0x02))
    assert raw.quiet()
    raw.send(WAKE)
    assert raw.call(0x02) == b"\x32\x01\x06\x07"


def test_phone_removed_after_k(sim, raw):
    ph = EchoPhone()
    sim.add_phone(ph)
    raw.call(0x4A, b"\x01\x00")
    sim.remove_phone_after(1)
    assert raw.call(0x40, b"\x01\x00\xa4\x04\x00") == b"\x00\x90\x00"
    assert raw.call(0x40, b"\x01\x00\xa4\x04\x00") == b"\x01"
    assert sim.phones == [] and raw.call(0x00, b"\x06") == b"\x01"


def test_two_phones(sim, raw):
    a, b = EchoPhone(uid=b"\x08\x00\x00\x01"), EchoPhone(uid=b"\x08\x00\x00\x02")
    sim.add_phone(a)
    sim.add_phone(b)
    r = raw.call(0x4A, b"\x01\x00")
    assert r[0] == 1 and r[6:10] == b"\x08\x00\x00\x01"  # bit 0 of byte 3 collides: '1' wins
    r = raw.call(0x4A, b"\x02\x00")
    assert r[0] == 2
    assert raw.call(0x40, b"\x02\x00\xa4\x04\x00") == b"\x00\x90\x00"
    assert b.apdus and not a.apdus


def test_seven_byte_uid_and_air_time(sim, raw):
    sim.add_phone(EchoPhone(uid=b"\x04\x11\x22\x33\x44\x55\x66"))
    r = raw.call(0x4A, b"\x01\x00")
    assert r[2:4] == b"\x00\x44" and r[5] == 7 and r[6:13] == b"\x04\x11\x22\x33\x44\x55\x66"
    seven = sim.totals("activation")["air_us"]
    sim.reset_clock()
    sim.clear()
    sim.add_phone(EchoPhone(uid=b"\x08\x01\x02\x03"))
    raw.call(0x4A, b"\x01\x00")
    four = sim.totals("activation")["air_us"]
    assert 2000 < four < seven < 8000, (four, seven)


def test_clock_accounting(sim, raw):
    sim.add_phone(EchoPhone(processing_us=5000))
    sim.reset_clock()
    raw.call(0x02)
    t = sim.totals("reader")
    # 9-byte command + 6-byte ACK + 13-byte response at 115200 baud, 10 bits per byte
    assert t["uart_us"] == pytest.approx(28 * 10e6 / 115200)
    assert t["air_us"] == 0 and t["reader_us"] == sim.reader_us
    raw.call(0x4A, b"\x01\x00")
    raw.call(0x40, b"\x01\x00\xa4\x04\x00\x02\xa0\x01")
    sim.set_phase("authorize")
    raw.call(0x40, b"\x01\x80\x10\x00\x00\x01\x00")
    sim.set_phase(None)
    ph = sim.phases()
    assert set(ph) == {"reader", "activation", "select", "authorize"}
    assert ph["select"]["phone_us"] == 5000 and ph["authorize"]["commands"] == 1
    sel_air = ph["select"]["air_us"]
    # I-block 1+9+2 bytes out, 1+2+2 back, two frame delays: ~ 1.6 ms
    assert 1000 < sel_air < 3000
    assert sim.totals()["total_us"] == pytest.approx(sum(p["total_us"] for p in ph.values()))


def test_concurrent_add_remove_while_polling(sim, raw):
    raw.call(0x32, b"\x05\xff\x01\x01")
    stop = threading.Event()
    ph = EchoPhone()

    def flap():
        while not stop.is_set():
            sim.add_phone(ph)
            time.sleep(0.001)
            sim.remove_phone(ph)

    t = threading.Thread(target=flap)
    t.start()
    try:
        seen = set()
        for _ in range(100):
            r = raw.call(0x4A, b"\x01\x00")
            seen.add(r[0])
            if r[0]:
                st = raw.call(0x40, b"\x01\x00\xa4\x04\x00")
                assert st in (b"\x00\x90\x00", b"\x01")
    finally:
        stop.set()
        t.join()
    assert seen <= {0, 1}


def test_control_commands():
    with PN532Sim(0, control_port=0) as sim:
        c = socket.create_connection(("127.0.0.1", sim.control_port))
        f = c.makefile("rwb")
        for line, want in ((b"add echo 08010203", b"ok 1"), (b"corrupt 2", b"ok"),
                           (b"bogus", b"err")):
            f.write(line + b"\n")
            f.flush()
            assert f.readline().strip().startswith(want)
        assert sim.uid_of(sim.phones[0]) == b"\x08\x01\x02\x03" and sim._f_corrupt == 2
        c.close()


def test_cli_prints_port():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-m", "host_tools.pn532_sim", "--port", "0",
                        "--duration", "0.3", "--phone", "echo", "--control-port", "0"],
                       capture_output=True, text=True, timeout=20, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    port = int(p.stdout.split("PORT=")[1].split()[0])
    assert 0 < port < 65536 and "CONTROL=" in p.stdout


# ---- Adafruit CircuitPython PN532 as an independent client -------------------------------
class SocketUART:
    """The attributes adafruit_pn532.uart.PN532_UART uses: read(n), write(b),
    reset_input_buffer(), in_waiting."""

    def __init__(self, port, timeout=0.1):
        self.s = socket.create_connection(("127.0.0.1", port))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.buf = b""

    def _pull(self, wait):
        self.s.settimeout(wait)
        try:
            d = self.s.recv(4096)
            self.buf += d
        except (socket.timeout, BlockingIOError):
            pass

    @property
    def in_waiting(self):
        self._pull(0.001)
        return len(self.buf)

    def read(self, n):
        end = time.monotonic() + self.timeout
        while len(self.buf) < n and time.monotonic() < end:
            self._pull(max(0.001, end - time.monotonic()))
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def write(self, b):
        self.s.sendall(bytes(b))

    def reset_input_buffer(self):
        self._pull(0.001)
        self.buf = b""

    def close(self):
        self.s.close()


def adafruit_check(uart, sim):
    from adafruit_pn532.uart import PN532_UART

    pn = PN532_UART(uart, debug=False)  # wakes it and sends SAMConfiguration
    assert pn.firmware_version == (0x32, 0x01, 0x06, 0x07)
    assert pn.read_passive_target(timeout=0.2) is None
    tx = sim.stats["tx_bytes"]
    sim.add_phone(EchoPhone(uid=b"\x08\xde\xad\x01"))
    # Adafruit does not abort the timed-out InListPassiveTarget, so (as on a real PN532) it
    # completes now that a phone is there; wait until that late frame has arrived, so
    # that the next command's reset_input_buffer() drops it
    assert sim.wait_until(lambda: sim.stats["activations"] >= 1)
    late = sim.stats["tx_bytes"] - tx
    end = time.monotonic() + 5
    while uart.in_waiting < late and time.monotonic() < end:
        time.sleep(0.001)
    assert uart.in_waiting >= late > 0
    assert bytes(pn.read_passive_target(timeout=1.0)) == b"\x08\xde\xad\x01"
    # a 7-byte UID card too
    sim.clear()
    sim.add_phone(EchoPhone(uid=b"\x04\x01\x02\x03\x04\x05\x06"))
    assert bytes(pn.read_passive_target(timeout=1.0)) == b"\x04\x01\x02\x03\x04\x05\x06"


def test_adafruit_over_socket_adapter():
    with PN532Sim(0, seed=1) as sim:
        u = SocketUART(sim.port)
        try:
            adafruit_check(u, sim)
        finally:
            u.close()


def test_adafruit_over_pty_with_pyserial():
    serial = pytest.importorskip("serial")
    with PN532Sim(0, pty=True, seed=2) as sim:
        ser = serial.Serial(sim.pty_path, 115200, timeout=0.1)
        try:
            adafruit_check(ser, sim)
        finally:
            ser.close()
