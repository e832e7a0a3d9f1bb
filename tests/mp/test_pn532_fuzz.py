# Bad input: >= 10,000 random and mutated frames thrown at the PN532 frame parser (decode()
# and the driver's stream reader), plus garbage answers to whole commands. Only the driver's
# own PN532Error classes may escape; nothing hangs; memory stays flat.
import gc
import random
import time

import unit
from pos.pn532 import ACK as K_ACK, DATA, NACK as K_NACK, PN532, PN532Error, decode
from pos.pn532_hsu import PN532_HSU
from test_pn532_core import ACK, ERR, NACK, FakeChip, FakeUART, mkframe, nosleep

N_FRAMES = 10000  # per parser: 2 x 10,000 frames


class StreamT:
    """Transport over a fixed byte string (no timing): the core parser in isolation."""

    WAKE_SOURCE = 0x10

    def __init__(self):
        self.mv = memoryview(b"")
        self.pos = 0

    def feed(self, data):
        self.mv = memoryview(data)
        self.pos = 0

    def ready(self):
        return self.pos < len(self.mv)

    def read(self, mv):
        n = min(len(mv), len(self.mv) - self.pos)
        mv[0:n] = self.mv[self.pos:self.pos + n]
        self.pos += n
        return n

    def write(self, b):
        pass

    def read_begin(self):
        pass

    def read_end(self):
        pass

    def drain(self):
        pass

    def wakeup(self):
        pass

    def reset(self):
        pass


def rbytes(n):
    return bytes(random.getrandbits(8) for _ in range(n))


def valid_frame():
    r = random.getrandbits(3)
    if r == 0:
        return ACK, K_ACK, None
    if r == 1:
        return NACK, K_NACK, None
    if r == 2:
        return ERR, DATA, b"\x7f"
    n = random.randint(1, 265) if r == 3 else random.randint(1, 40)
    p = rbytes(n)
    return mkframe(p), DATA, p


def mutate(fr):
    b = bytearray(fr)
    for _ in range(random.randint(1, 3)):
        m = random.getrandbits(3)
        if m == 0 and b:  # flip a byte
            b[random.randint(0, len(b) - 1)] ^= 1 << random.getrandbits(3)
        elif m == 1 and b:  # truncate
            b = b[:random.randint(0, len(b) - 1)]
        elif m == 2:  # insert a byte
            i = random.randint(0, len(b))
            b = b[:i] + bytes([random.getrandbits(8)]) + b[i:]
        elif m == 3 and len(b) > 4:  # forge the length byte(s)
            b[3] = random.getrandbits(8)
            if b[3] == 0xFF and len(b) > 6:
                b[4] = 0xFF
                b[5] = random.getrandbits(8)
        elif m == 4:  # garbage prefix
            b = bytearray(rbytes(random.randint(1, 20))) + b
        elif m == 5:  # two frames back to back
            b = b + valid_frame()[0]
        elif m == 6:  # drop a byte
            if b:
                i = random.randint(0, len(b) - 1)
                b = b[:i] + b[i + 1:]
        else:  # pure noise
            b = bytearray(rbytes(random.randint(0, 40)))
    return bytes(b)


def cases(n):
    for i in range(n):
        fr, kind, payload = valid_frame()
        if i % 4 == 0:
            yield fr, kind, payload
        else:
            yield mutate(fr), None, None


def test_decode_fuzz():
    random.seed(1234)
    ok = bad = 0
    gc.collect()
    before = gc.mem_free()
    for data, kind, payload in cases(N_FRAMES):
        try:
            k, off, ln = decode(data, len(data))
            assert 0 <= off and off + ln <= len(data)
            if kind is not None:
                assert k == kind
                if payload is not None:
                    assert data[off:off + ln] == payload
            ok += 1
        except PN532Error:
            assert kind is None, data
            bad += 1
    gc.collect()
    assert abs(before - gc.mem_free()) < 4096, (before, gc.mem_free())
    assert ok > N_FRAMES // 4 and bad > N_FRAMES // 4, (ok, bad)
    print("  decode: %d ok, %d rejected" % (ok, bad))


def test_stream_reader_fuzz():
    random.seed(99)
    t = StreamT()
    nfc = PN532(t, sleep_ms=nosleep)
    frames = errors = 0
    gc.collect()
    before = gc.mem_free()
    for data, kind, payload in cases(N_FRAMES):
        t.feed(data)
        first = True
        guard = 0
        while t.ready():
            guard += 1
            assert guard <= len(data) + 1, "no progress"
            pos = t.pos
            try:
                k, ln = nfc._recv()
                assert 0 <= ln <= 265
                if first and kind is not None:
                    assert k == kind, (data, k)
                    if payload is not None:
                        assert bytes(nfc._rx[:ln]) == payload
                frames += 1
            except PN532Error:
                assert kind is None or not first, data
                errors += 1
            assert t.pos > pos, "parser did not consume input"
            first = False
    gc.collect()
    assert abs(before - gc.mem_free()) < 4096, (before, gc.mem_free())
    assert frames > 1000 and errors > 1000, (frames, errors)
    print("  stream reader: %d frames, %d errors" % (frames, errors))


def test_commands_with_garbage_answers():
    # whole commands over the HSU transport; the chip ACKs and answers with junk
    random.seed(7)
    chip = FakeChip()
    uart = FakeUART(chip)
    nfc = PN532(PN532_HSU(uart, timeout_ms=0, sleep_ms=nosleep), sleep_ms=nosleep)
    nfc.begin()
    outcomes = {}
    t0 = time.ticks_ms()
    before = None
    for i in range(400):
        if i == 100:  # fake chip's bounded logs are full by now: measure from here
            gc.collect()
            before = gc.mem_free()
        good = mkframe(b"\xd5\x41\x00" + rbytes(random.randint(0, 30)))
        chip.faults = [mutate(good) if i % 3 else rbytes(random.randint(0, 30))]
        nfc.target = nfc.target or _tgt()
        uart.rx[:] = b""
        try:
            nfc.apdu(b"\x00\xa4\x04\x00", 2)
            r = "ok"
        except PN532Error as e:
            r = type(e).__name__
        outcomes[r] = outcomes.get(r, 0) + 1
    gc.collect()
    assert abs(before - gc.mem_free()) < 4096, (before, gc.mem_free())
    assert time.ticks_diff(time.ticks_ms(), t0) < 20000
    assert len(outcomes) >= 2, outcomes
    print("  outcomes", outcomes)
    chip.faults = []
    uart.rx[:] = b""
    assert nfc.recover() and nfc.firmware_version() == (0x32, 1, 6, 7)


def _tgt():
    from pos.pn532 import Target

    return Target(1, 4, 0x20, b"\x08\x01\x02\x03", b"")


if __name__ == "__main__":
    unit.run(globals())
