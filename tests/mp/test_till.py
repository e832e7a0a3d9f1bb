# Till line protocol (firmware/pos/till.py) in the unix port.
import random
import sys

# MICROPYPATH replaces the default sys.path, which held ".frozen" (asyncio).
if ".frozen" not in sys.path:
    sys.path.append(".frozen")
import asyncio  # noqa: E402

import unit
from pos import till
from pos.till import TillError


def reason(line):
    try:
        till.parse(line)
    except TillError as e:
        return e.reason
    return None


def test_valid_lines():
    assert till.parse(b"CHARGE 1250 978 REF001") == ("CHARGE", 1250, 978, b"REF001")
    assert till.parse(b"CHARGE 1 036 a-b_c.d/e:f\r") == ("CHARGE", 1, 36, b"a-b_c.d/e:f")
    assert till.parse(b"  CHARGE   999999999  840  X  ") == ("CHARGE", 999999999, 840, b"X")
    assert till.parse(b"STATUS") == ("STATUS",)
    assert till.parse(bytearray(b"CANCEL\r")) == ("CANCEL",)
    assert till.parse(memoryview(b"STATUS")) == ("STATUS",)
    assert till.parse(b"CHARGE 5 978 " + b"R" * till.MAX_REF)[3] == b"R" * till.MAX_REF


def test_malformed_lines():
    cases = [
        (b"", "empty-line"), (b"   ", "empty-line"), (b"\r", "empty-line"),
        (b"charge 1 978 R", "unknown-command"), (b"PAY 1 978 R", "unknown-command"),
        (b"CHARGE", "bad-args"), (b"CHARGE 1 978", "bad-args"), (b"CHARGE 1 978 R x", "bad-args"),
        (b"STATUS now", "bad-args"), (b"CANCEL R1", "bad-args"),
        (b"CHARGE 0 978 R", "bad-amount"), (b"CHARGE 012 978 R", "bad-amount"),
        (b"CHARGE -5 978 R", "bad-amount"), (b"CHARGE +5 978 R", "bad-amount"),
        (b"CHARGE 12.50 978 R", "bad-amount"), (b"CHARGE 1000000000 978 R", "bad-amount"),
        (b"CHARGE 1e3 978 R", "bad-amount"), (b"CHARGE 99999999999999999999999 978 R", "bad-amount"),
        (b"CHARGE 5 EUR R", "bad-currency"), (b"CHARGE 5 97 R", "bad-currency"),
        (b"CHARGE 5 9780 R", "bad-currency"), (b"CHARGE 5 000 R", "bad-currency"),
        (b"CHARGE 5 978 R" + b"x" * till.MAX_REF, "bad-reference"),
        (b"CHARGE 5 978 a,b", "bad-reference"), (b"CHARGE 5 978 \"x\"", "bad-reference"),
        (b"CHARGE\t5 978 R", "bad-char"), (b"CHARGE 5 978 R\x00", "bad-char"),
        (b"CHARGE 5 978 caf\xc3\xa9", "bad-char"), (b"STATUS\n", "bad-char"),
        (b"STATUS\r\r", "bad-char"),
        (b"X" * (till.MAX_LINE + 1), "line-too-long"),
    ]
    for line, why in cases:
        assert reason(line) == why, (line, reason(line), why)
    assert reason(b"STATUS" + b" " * (till.MAX_LINE - 6)) is None  # exactly MAX_LINE


def test_formatters():
    assert till.approved(b"REF001", 42) == b"RESULT REF001 APPROVED 42\n"
    assert till.approved("REF001", 0xFFFFFFFF) == b"RESULT REF001 APPROVED 4294967295\n"
    assert till.declined(b"R", "OVER_TAP_LIMIT") == b"RESULT R DECLINED OVER_TAP_LIMIT\n"
    assert till.declined(b"R", "STORAGE", 7) == b"RESULT R DECLINED STORAGE 7\n"
    assert till.status("idle", 3, True) == b"STATUS idle 3 up\n"
    assert till.status("waiting for removal", 0, False) == b"STATUS waiting-for-removal 0 down\n"
    assert till.cancelled(b"R9") == b"CANCELLED R9\n"
    assert till.error("nothing-to-cancel") == b"ERR nothing-to-cancel\n"
    for bad in (lambda: till.approved(b"a b", 1), lambda: till.approved(b"R", -1),
                lambda: till.declined(b"R", "TWO WORDS"), lambda: till.error("x\ny"),
                lambda: till.cancelled(b""), lambda: till.status("", 0, True)):
        unit.raises(ValueError, bad)
    # Every formatted line fits the line limit and parses as a single line.
    line = till.declined(b"R" * till.MAX_REF, "X" * 24, 0xFFFFFFFF)
    assert len(line) <= till.MAX_LINE + 1 and line.count(b"\n") == 1


def test_charge_round_trip():
    random.seed(7)
    chars = b"ABCxyz019-_./:"
    for _ in range(300):
        amount = 1 + random.getrandbits(29) % till.MAX_AMOUNT
        cur = 1 + random.getrandbits(10) % 999
        ref = bytes(chars[random.getrandbits(4) % len(chars)] for _ in range(1 + random.getrandbits(5)))
        line = b"CHARGE %d %03d " % (amount, cur) + ref
        assert till.parse(line) == ("CHARGE", amount, cur, ref), line


SEEDS = [b"CHARGE 1250 978 REF001", b"STATUS", b"CANCEL", b"CHARGE 1 036 a-b_c.d/e:f\r"]
REASONS = ("line-too-long", "empty-line", "bad-char", "unknown-command", "bad-args",
           "bad-amount", "bad-currency", "bad-reference")


def mutate(b):
    for _ in range(1 + random.getrandbits(2)):
        op = random.getrandbits(2)
        pos = random.getrandbits(8) % (len(b) + 1)
        if op == 0 and b:
            pos %= len(b)
            b = b[:pos] + bytes([random.getrandbits(8)]) + b[pos + 1:]
        elif op == 1:
            b = b[:pos] + bytes([random.getrandbits(8)]) + b[pos:]
        elif op == 2 and b:
            pos %= len(b)
            b = b[:pos] + b[pos + 1:]
        else:
            b = b[:pos] + b" " + b[:random.getrandbits(4)] + b[pos:]
    return b


def test_fuzz_random_and_mutated_lines():
    random.seed(2024)
    parsed = errors = 0
    for i in range(3000):
        if i % 3 == 0:
            line = bytes(random.getrandbits(8) for _ in range(random.getrandbits(8) % 160))
        elif i % 3 == 1:
            line = mutate(SEEDS[i % len(SEEDS)])
        else:
            line = bytes(0x20 + random.getrandbits(7) % 95 for _ in range(random.getrandbits(8) % 140))
        try:
            cmd = till.parse(line)
            assert cmd[0] in ("CHARGE", "STATUS", "CANCEL"), cmd
            if cmd[0] == "CHARGE":
                assert 0 < cmd[1] <= till.MAX_AMOUNT and 0 < cmd[2] < 1000
            parsed += 1
        except TillError as e:
            assert e.reason in REASONS, (line, e.reason)
            errors += 1
    assert parsed > 20 and errors > 2000, (parsed, errors)


class FakeReader:
    # Stands in for asyncio.StreamReader: read(1) at a time, like the UART/TCP.
    def __init__(self, data):
        self.data = data
        self.pos = 0

    async def read(self, n):
        await asyncio.sleep_ms(0)
        b = self.data[self.pos:self.pos + n]
        self.pos += len(b)
        return b


def read_all(data, maxlen=till.MAX_LINE):
    async def go():
        r = FakeReader(data)
        out = []
        buf = bytearray(maxlen + 1)
        while True:
            try:
                line = await till.read_line(r, maxlen, buf)
            except TillError as e:
                out.append(e.reason)
                continue
            if line is None:
                return out
            out.append(line)
    return asyncio.run(go())


def test_read_line_resyncs_after_overlong_line():
    data = b"STATUS\r\n" + b"Z" * 5000 + b"\nCANCEL\n" + b"A" * 128 + b"\n" + b"B" * 128 + b"\r\n" + b"C" * 129 + b"\npartial"
    assert read_all(data) == [b"STATUS\r", "line-too-long", b"CANCEL", b"A" * 128, b"B" * 128 + b"\r",
                              "line-too-long"]
    assert read_all(b"") == []
    assert read_all(b"\n\n") == [b"", b""]


def test_read_line_memory_is_bounded():
    import gc
    data = b"Q" * 20000 + b"\nSTATUS\n"
    gc.collect()
    before = gc.mem_alloc() if hasattr(gc, "mem_alloc") else 0
    r = read_all(data)
    assert r == ["line-too-long", b"STATUS"]
    gc.collect()
    if before:
        assert gc.mem_alloc() - before < 4096


unit.run(globals())
