# PN532 driver core: codec + commands + error handling over a hand-written fake chip/UART.
# Also the fake chip + fake UART used by the other tests/mp/test_pn532_*.py files.
import gc
import time

import unit
from pos import pn532
from pos.pn532 import (PN532, FrameError, PN532Error, PN532Timeout, StatusError, TargetLost,
                       decode, encode)
from pos.pn532_hsu import PN532_HSU

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERR = b"\x00\x00\xff\x01\xff\x7f\x81\x00"
None_ERR = object()


def nosleep(ms):
    pass


def mkframe(payload):
    """PN532 -> host frame, written independently of the driver's encoder."""
    n = len(payload)
    dcs = (256 - (sum(payload) & 0xFF)) & 0xFF
    if n > 255:
        hi, lo = n >> 8, n & 0xFF
        head = bytes([0, 0, 0xFF, 0xFF, 0xFF, hi, lo, (256 - ((hi + lo) & 0xFF)) & 0xFF])
    else:
        head = bytes([0, 0, 0xFF, n, (256 - n) & 0xFF])
    return head + bytes(payload) + bytes([dcs, 0])


class FakeChip:
    """PN532 behaviour at frame level: ACK + response per command, NACK -> resend,
    host ACK -> abort. Knobs: target, exchange(), asleep, and one-shot faults."""

    def __init__(self):
        self.out = []  # frames waiting to go to the host
        self.inbuf = bytearray()
        self.cmds = []  # (cmd, params) received
        self.last = None
        self.asleep = False
        self.wakes = 0
        self.acks = 0
        self.nacks = 0
        self.target = bytes([1, 1, 0x00, 0x04, 0x20, 4, 8, 1, 2, 3, 5, 0x78, 0x80, 0x70, 0x02])
        self.inlist_pending = False  # no target: leave InListPassiveTarget unanswered
        self.faults = []  # per command: None | "silence" | "noresp" | "nack" | "badack" | bytes
        self.corrupt = 0  # bad DCS in next n responses
        self.exchange = self.echo
        self.chain = []  # pending response parts
        self.sent_parts = []

    def echo(self, tg, data):
        return b"\x00" + bytes(data) + b"\x90\x00"

    def receive(self, data):
        self.inbuf += data
        buf = self.inbuf
        while buf:
            if self.asleep:
                i = buf.find(b"\x55")
                if i < 0:
                    buf[:] = b""
                    return
                buf[:] = buf[i + 1:]
                self.asleep = False
                self.wakes += 1
                continue
            i = buf.find(b"\x00\xff")
            if i < 0 or len(buf) < i + 4:
                return
            buf[:] = buf[i:]
            ln, lcs = buf[2], buf[3]
            if ln == 0 and lcs == 0xFF:
                self.acks += 1
                buf[:] = buf[4:]
                continue
            if ln == 0xFF and lcs == 0:
                self.nacks += 1
                buf[:] = buf[4:]
                if self.last:
                    self._emit(self.last)
                continue
            h = 4
            if ln == 0xFF and lcs == 0xFF:
                ln, h = buf[4] << 8 | buf[5], 7
            if len(buf) < h + ln + 1:
                return
            body = bytes(buf[h:h + ln])
            assert (sum(body) + buf[h + ln]) & 0xFF == 0, "host frame DCS"
            buf[:] = buf[h + ln + 1:]
            self.command(body)

    def _emit(self, fr):
        if self.corrupt:
            self.corrupt -= 1
            fr = bytearray(fr)
            fr[-2] ^= 0xA5
            fr = bytes(fr)
        self.out.append(fr)

    def command(self, body):
        assert body[0] == 0xD4
        cmd, p = body[1], body[2:]
        self.cmds.append((cmd, p))
        if len(self.cmds) > 40:
            self.cmds[:] = self.cmds[-20:]
        f = self.faults.pop(0) if self.faults else None
        if isinstance(f, bytes):
            self.out.append(ACK)
            self.last = f
            self.out.append(f)
            return
        if f == "silence":
            return
        if f == "nack":
            self.out.append(NACK)
            return
        self.out.append(b"\x00\x00\xff\x00\x00\x00" if f == "badack" else ACK)
        if f == "noresp":
            return
        r = self.respond(cmd, p)
        if r is None:
            return
        fr = ERR if r is None_ERR else mkframe(bytes([0xD5, cmd + 1]) + r)
        self.last = fr
        self._emit(fr)

    def respond(self, cmd, p):
        if cmd == 0x02:
            return b"\x32\x01\x06\x07"
        if cmd in (0x14, 0x32):
            return b""
        if cmd == 0x4A:
            if self.target:
                return self.target
            return None if self.inlist_pending else b"\x00"
        if cmd == 0x40:
            tg, data = p[0], p[1:]
            if self.chain and not data:
                part = self.chain.pop(0)
                return bytes([0x40 if self.chain else 0]) + part
            if tg & 0x40:
                self.sent_parts.append(bytes(data))
                return b"\x00"
            if self.sent_parts:
                data = b"".join(self.sent_parts) + data
                self.sent_parts = []
            r = self.exchange(tg, data)
            if isinstance(r, list):  # chained response
                self.chain = r[1:]
                return bytes([0x40]) + r[0]
            return r
        if cmd in (0x52, 0x00):
            return b"\x00"
        if cmd == 0x16:
            return b"\x00"
        return None_ERR


class FakeUART:
    """machine.UART-shaped: write/any/readinto, fed by a FakeChip."""

    def __init__(self, chip):
        self.chip = chip
        self.rx = bytearray()
        self.written = bytearray()

    def _pull(self):
        while self.chip.out:
            self.rx += self.chip.out.pop(0)

    def write(self, b):
        self.written += b
        if len(self.written) > 600:
            self.written[:] = self.written[-300:]
        self.chip.receive(bytes(b))
        return len(b)

    def any(self):
        self._pull()
        return len(self.rx)

    def readinto(self, buf):
        self._pull()
        n = min(len(buf), len(self.rx))
        if not n:
            return None
        buf[:n] = self.rx[:n]
        self.rx[:] = self.rx[n:]
        return n


def make(chip=None, **kw):
    chip = chip or FakeChip()
    uart = FakeUART(chip)
    nfc = PN532(PN532_HSU(uart, timeout_ms=5, sleep_ms=nosleep), sleep_ms=nosleep, **kw)
    return chip, uart, nfc


def ready(chip=None, **kw):
    chip, uart, nfc = make(chip, **kw)
    nfc.begin()
    chip.cmds.clear()
    return chip, uart, nfc


# ---- codec ---------------------------------------------------------------------------
def test_encode_normal_frame():
    buf = bytearray(300)
    n = encode(buf, 0x02)
    assert bytes(buf[:n]) == b"\x00\x00\xff\x02\xfe\xd4\x02\x2a\x00", bytes(buf[:n])
    n = encode(buf, 0x14, b"\x01\x14\x01")
    assert bytes(buf[:n]) == b"\x00\x00\xff\x05\xfb\xd4\x14\x01\x14\x01\x02\x00"


def test_encode_extended_frame_roundtrip():
    buf = bytearray(300)
    data = bytes(i & 0xFF for i in range(262))
    n = encode(buf, 0x40, b"\x41", data)
    assert buf[3] == 0xFF and buf[4] == 0xFF and (buf[5] << 8 | buf[6]) == 265
    assert (buf[5] + buf[6] + buf[7]) & 0xFF == 0
    kind, off, ln = decode(buf, n)
    assert kind == pn532.DATA and ln == 265
    assert bytes(buf[off:off + 3]) == b"\xd4\x40\x41" and bytes(buf[off + 3:off + ln]) == data
    unit.raises(ValueError, encode, buf, 0x40, b"\x41", data + b"x")


def test_decode_ack_nack_error_garbage():
    assert decode(ACK, 6)[0] == pn532.ACK
    assert decode(NACK, 6)[0] == pn532.NACK
    k, off, ln = decode(ERR, len(ERR))
    assert k == pn532.DATA and ln == 1 and ERR[off] == 0x7F
    fr = b"\x12\x34\x00" + mkframe(b"\xd5\x03\x32\x01\x06\x07")
    k, off, ln = decode(fr, len(fr))
    assert k == pn532.DATA and fr[off:off + ln] == b"\xd5\x03\x32\x01\x06\x07"


def test_decode_rejects_bad_frames():
    good = mkframe(b"\xd5\x03\x32\x01\x06\x07")
    bad_lcs = bytearray(good)
    bad_lcs[4] ^= 1
    bad_dcs = bytearray(good)
    bad_dcs[-2] ^= 1
    ext_big = b"\x00\x00\xff\xff\xff\x01\x20\xdf" + bytes(300)
    for f in (bad_lcs, bad_dcs, good[:-3], good[:4], b"\x00\x00\x00", b"", ext_big,
              b"\x00\x00\xff\x00\x00\x00"):
        unit.raises(FrameError, decode, f, len(f))


# ---- commands ------------------------------------------------------------------------
def test_begin_wakes_and_configures():
    chip, uart, nfc = make()
    chip.asleep = True
    assert nfc.begin() == (0x32, 1, 6, 7)
    assert chip.wakes == 1
    assert uart.written.startswith(b"\x55\x55\x00\x00")
    assert [c for c, p in chip.cmds] == [0x02, 0x14, 0x32, 0x32]
    assert chip.cmds[3][1] == b"\x05\xff\x01\xff"  # MaxRetries, passive = infinite


def test_poll_returns_target():
    chip, uart, nfc = ready()
    t = nfc.poll(50)
    assert t.tg == 1 and t.sens_res == 0x0004 and t.sel_res == 0x20
    assert t.uid == b"\x08\x01\x02\x03" and t.ats == b"\x05\x78\x80\x70\x02"
    assert chip.cmds[-1] == (0x4A, b"\x01\x00")
    assert nfc.target is t


def test_poll_no_target_pending_is_aborted():
    chip, uart, nfc = ready()
    chip.target = None
    chip.inlist_pending = True
    t0 = time.ticks_ms()
    assert nfc.poll(30) is None
    assert time.ticks_diff(time.ticks_ms(), t0) < 500
    assert chip.acks == 1  # the pending InListPassiveTarget was aborted with an ACK


def test_poll_no_target_response():
    chip, uart, nfc = ready()
    chip.target = None
    assert nfc.poll(20) is None
    assert len(chip.cmds) >= 1 and nfc.target is None


def test_poll_rejects_bad_uid_length():
    chip, uart, nfc = ready()
    chip.target = bytes([1, 1, 0, 4, 0x20, 11]) + bytes(11)
    unit.raises(FrameError, nfc.poll, 20)


def test_apdu_short():
    chip, uart, nfc = ready()
    nfc.poll(20)
    assert nfc.apdu(b"\x00\xa4\x04\x00\x01\xaa") == b"\x00\xa4\x04\x00\x01\xaa\x90\x00"
    assert chip.cmds[-1][1][0] == 1


def test_apdu_without_target():
    chip, uart, nfc = ready()
    e = None
    try:
        nfc.apdu(b"\x00\xa4\x04\x00")
    except TargetLost as x:
        e = x
    assert e is not None and e.status == 0x27


def test_apdu_long_command_chained():
    chip, uart, nfc = ready()
    nfc.poll(20)
    got = []
    chip.exchange = lambda tg, d: got.append(bytes(d)) or b"\x00\x90\x00"
    big = bytes(i & 0xFF for i in range(700))
    assert nfc.apdu(big) == b"\x90\x00"
    assert got == [big]
    tgs = [p[0] for c, p in chip.cmds if c == 0x40]
    assert tgs == [0x41, 0x41, 0x01], tgs
    assert [len(p) - 1 for c, p in chip.cmds if c == 0x40] == [262, 262, 176]


def test_apdu_long_response_chained():
    chip, uart, nfc = ready()
    nfc.poll(20)
    body = bytes(i & 0xFF for i in range(600)) + b"\x90\x00"
    chip.exchange = lambda tg, d: [body[:262], body[262:524], body[524:]]
    assert nfc.apdu(b"\x00\xb0\x00\x00\x00") == body
    assert [p for c, p in chip.cmds if c == 0x40][1:] == [b"\x01", b"\x01"]


def test_apdu_response_bound():
    chip, uart, nfc = ready(max_response=300)
    nfc.poll(20)
    chip.exchange = lambda tg, d: [bytes(262), bytes(262)]
    unit.raises(FrameError, nfc.apdu, b"\x00\xb0\x00\x00\x00")


def test_status_errors_map_to_exceptions():
    chip, uart, nfc = ready()
    for st, cls in ((0x01, TargetLost), (0x13, TargetLost), (0x27, TargetLost),
                    (0x29, TargetLost), (0x0E, StatusError), (0x10, StatusError)):
        nfc.poll(20)
        chip.exchange = lambda tg, d, st=st: bytes([st])
        e = None
        try:
            nfc.apdu(b"\x00\xa4\x04\x00")
        except StatusError as x:
            e = x
        assert e is not None and type(e) is cls and e.status == st, (st, e)
        assert (nfc.target is None) == (cls is TargetLost)


def test_error_frame():
    chip, uart, nfc = ready()
    chip.faults = [ERR]
    e = None
    try:
        nfc.firmware_version()
    except StatusError as x:
        e = x
    assert e is not None and e.status == 0x7F


def test_checksum_error_nack_retry():
    chip, uart, nfc = ready()
    nfc.poll(20)
    chip.corrupt = 2
    assert nfc.apdu(b"\x00\x01\x02\x03\x01\x55") == b"\x00\x01\x02\x03\x01\x55\x90\x00"
    assert chip.nacks == 2
    assert len([c for c, p in chip.cmds if c == 0x40]) == 1  # the APDU ran once
    chip.corrupt = 3
    unit.raises(FrameError, nfc.apdu, b"\x00\x01\x02\x03")


def test_nack_from_reader_resends_command():
    chip, uart, nfc = ready()
    chip.faults = ["nack"]
    assert nfc.firmware_version() == (0x32, 1, 6, 7)
    assert [c for c, p in chip.cmds] == [0x02, 0x02]
    chip.faults = ["nack"] * 5
    unit.raises(FrameError, nfc.firmware_version)


def test_no_ack_times_out():
    chip, uart, nfc = ready()
    chip.faults = ["silence"]
    unit.raises(PN532Timeout, nfc.firmware_version)


def test_no_response_times_out_and_aborts():
    chip, uart, nfc = ready()
    nfc.poll(20)
    chip.faults = ["noresp"]
    unit.raises(PN532Timeout, nfc.apdu, b"\x00\xa4\x04\x00", 20)
    assert chip.acks == 1


def test_garbled_ack_then_response():
    chip, uart, nfc = ready()
    chip.faults = ["badack"]
    assert nfc.firmware_version() == (0x32, 1, 6, 7)


def test_stale_frame_skipped():
    chip, uart, nfc = ready()
    chip.out.append(mkframe(b"\xd5\x4b\x00"))  # late answer of an aborted poll
    assert nfc.firmware_version() == (0x32, 1, 6, 7)


def test_garbage_before_frames():
    chip, uart, nfc = ready()
    chip.out.append(b"\x13\x37\xff\x00\x55\xaa")
    assert nfc.firmware_version() == (0x32, 1, 6, 7)


def test_recover_wedged_reader():
    chip, uart, nfc = ready()
    nfc.poll(20)
    chip.asleep = True  # wedged: ignores everything until a 0x55 wake byte
    unit.raises(PN532Timeout, nfc.apdu, b"\x00\xa4\x04\x00", 20)
    assert nfc.recover() is True
    assert nfc.target is None
    assert [c for c, p in chip.cmds[-3:]] == [0x14, 0x32, 0x32]
    assert nfc.poll(20) is not None


def test_recover_gives_up():
    chip, uart, nfc = ready()
    chip.faults = ["silence"] * 10
    unit.raises(PN532Timeout, nfc.recover)


def test_power_down_then_wake():
    chip, uart, nfc = ready()
    nfc.power_down()
    assert chip.cmds[-1] == (0x16, b"\x10")
    chip.asleep = True
    n = len(uart.written)
    assert nfc.firmware_version() == (0x32, 1, 6, 7)
    assert uart.written[n:n + 2] == b"\x55\x55"


def test_release_and_present():
    chip, uart, nfc = ready()
    nfc.poll(20)
    assert nfc.present() is True
    assert chip.cmds[-1] == (0x00, b"\x06")
    assert nfc.release() is True
    assert chip.cmds[-1] == (0x52, b"\x01") and nfc.target is None
    assert nfc.present() is True  # short poll + release
    assert chip.cmds[-1][0] == 0x52
    chip.target = None
    assert nfc.present() is False


def test_async_variants():
    import sys

    if ".frozen" not in sys.path:  # MICROPYPATH replaces the default path
        sys.path.append(".frozen")
    import asyncio

    chip, uart, nfc = ready()

    async def main():
        t = await nfc.poll_async(20)
        r = await nfc.apdu_async(b"\x00\xa4\x04\x00\x01\x01")
        p = await nfc.present_async()
        return t, r, p

    t, r, p = asyncio.run(main())
    assert t.uid == b"\x08\x01\x02\x03" and r[-2:] == b"\x90\x00" and p


def test_async_poll_does_not_block_the_loop():
    import sys

    if ".frozen" not in sys.path:
        sys.path.append(".frozen")
    import asyncio

    chip, uart, nfc = ready()
    chip.target = None
    chip.inlist_pending = True
    ticks = [0]
    done = [False]

    async def ticker():
        while not done[0]:
            ticks[0] += 1
            await asyncio.sleep_ms(1)

    async def main():
        task = asyncio.create_task(ticker())
        t = await nfc.poll_async(60)
        done[0] = True
        await task
        return t

    assert asyncio.run(main()) is None
    assert ticks[0] >= 15, ticks  # the loop ran all along the 60 ms wait
    assert chip.acks == 1


def test_exceptions_hierarchy():
    for c in (PN532Timeout, FrameError, StatusError, TargetLost):
        assert issubclass(c, PN532Error)
    assert issubclass(TargetLost, StatusError)


def test_apdu_loop_memory_stable():
    chip, uart, nfc = ready()
    nfc.poll(20)
    cmd = b"\x00\x01\x02\x03\x04\x01\x02\x03\x04"
    for _ in range(20):
        nfc.apdu(cmd)
    gc.collect()
    before = gc.mem_free()
    for _ in range(200):
        nfc.apdu(cmd)
    gc.collect()
    after = gc.mem_free()
    assert before - after < 2048, (before, after)


if __name__ == "__main__":
    unit.run(globals())
