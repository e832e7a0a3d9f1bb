# heap: 512k  (compiling app.py and its imports from source; the device loads .mpy)
# The tap path (APDU chaining, parsing, rules) under 10,000 random and mutated
# wallet answers and every chaining shape of PROTOCOL.md 5.3: each ends in a
# decline within 16 R-APDUs, never an exception or a loop; and afterwards the
# same terminal still approves the genuine answer (its state was not touched).
import asyncio
import gc
import json
import os
import sys
import time
sys.path.insert(0, ".frozen")
import unit
from pos import reason, rules, terminal


class Journal:
    def __init__(self):
        self.records = []

    def next_rid(self):
        return len(self.records) + 1

    def cursor(self):
        return 0

    def append(self, rec):
        self.records.append(bytes(rec))
        return len(self.records)

    def pending(self):
        return len(self.records)


class Feedback:
    def led(self, c):
        pass

    beep = show = led


class Seq:
    def __init__(self):
        self.n = 100
        self.fixed = None

    def next(self):
        self.n += 1
        return self.fixed if self.fixed is not None else self.n

    def idle(self):
        pass


class FixedOS:
    """terminal's `os`: urandom gives the vector's unpredictable number when set."""

    def __init__(self):
        self.un = None

    def urandom(self, n):
        return self.un if self.un is not None else os.urandom(n)


class FuzzNFC:
    """Answers SELECT properly, then AUTHORIZE/GET RESPONSE with whatever `script`
    says; counts the commands of each tap."""

    def __init__(self):
        self.script = []
        self.idle_us = 0
        self.sent = 0

    async def apdu_async(self, cmd, timeout_ms=None):
        self.sent += 1
        if cmd[1] == 0xA4:
            return b"\x01\x01\x01\x90\x00"
        if self.script:
            return self.script.pop(0)
        return b"\x6f\x00"

    async def release_async(self):
        return True

    async def recover_async(self):
        return True


def vectors():
    with open("tests/vectors/protocol_v1.json") as f:
        return json.load(f)["vectors"]


V, V2 = vectors()[:2]  # the version-1 vectors: ES256 and RS256 (chains with 61 00)
CFG = dict(V["config"])
CFG["issuers"] = [V["issuer"], V2["issuer"]]  # vector 2's answer (680 bytes) chains with 61 00
FIXED = FixedOS()
terminal.os = FIXED  # the terminal's UN source, so the vector's request can be rebuilt
NFC = FuzzNFC()
SEQ = Seq()
T = terminal.Terminal(NFC, Journal(), rules.Verifier(rules.Policy.from_config(CFG)),
                      CFG, Feedback(), clock=lambda: V["terminal"]["time"],
                      log=lambda *a: None, seq=SEQ)
GENUINE = [bytes.fromhex(e["response"]) for e in V["exchanges"][1:]]


def tap(amount, ref=b"FUZZ"):
    NFC.sent = 0
    code, rid = asyncio.run(T._tap(amount, 978, ref, time.ticks_ms()))
    # SELECT + at most 16 R-APDUs of the AUTHORIZE exchange, never more.
    assert NFC.sent <= 17, ("commands in one tap", NFC.sent)
    return code


def parts(body, size, final=b"\x90\x00"):
    # `body` chained in parts of `size` bytes with 61 xx, as a wallet would.
    out = []
    for i in range(0, len(body), size):
        rest = len(body) - i - size
        out.append(body[i:i + size] + (bytes((0x61, rest if rest < 256 else 0)) if rest > 0 else final))
    return out


def test_1_ten_thousand_hostile_answers():
    good = bytes.fromhex(V["response_data"])
    seen = {}
    before = None
    for i in range(10000):
        r = os.urandom(4)
        if i % 10 == 0:
            # mutated genuine answer (full verification path)
            b = bytearray(good)
            for _ in range(1 + r[0] % 3):
                x = os.urandom(2)
                b[(x[0] << 1 | x[1]) % len(b)] = os.urandom(1)[0]
            NFC.script = parts(bytes(b[: len(b) - r[1] % 5]), 240)
        elif i % 10 == 1:
            # endless or oversized chaining
            NFC.script = [os.urandom(200) + b"\x61\x00"] * 20
        elif i % 10 == 2:
            NFC.script = [os.urandom(1)]  # shorter than a status word
        elif i % 10 == 3:
            # random status words and parts at every step of a chain
            NFC.script = [os.urandom(r[2] % 260) + bytes((0x61 if j % 3 else 0x6C, r[j % 4]))
                          for j in range(1 + r[0] % 18)]
        else:
            NFC.script = [os.urandom(r[2] % 300) + (b"\x90\x00" if r[0] & 1 else os.urandom(2))]
        code = tap(100 + r[3])
        assert code != reason.APPROVED, "hostile answer approved"
        seen[code] = seen.get(code, 0) + 1
        if i % 1000 == 999:
            # After the first thousand (the P-256 table and the caches are in
            # by then) the heap in use must not grow.
            gc.collect()
            if before is None:
                before = gc.mem_free()
            assert before - gc.mem_free() < 4096, ("tap path leaks memory", i, before - gc.mem_free())
    print("decisions:", sorted((reason.name(k), n) for k, n in seen.items()))
    assert reason.MALFORMED in seen and reason.PROTOCOL in seen


def test_2_every_chaining_violation_is_a_protocol_decline():
    good = bytes.fromhex(V["response_data"])
    shapes = {
        "1-byte parts": parts(good, 1),                            # 242 rounds needed
        "17 rounds": parts(good[:17], 1),                          # one more than allowed
        "part of 257 bytes": [good[:257] + b"\x61\x10", good[257:] + b"\x90\x00"],
        "final part of 257 bytes": [good[:10] + b"\x61\x00", (good[10:] + bytes(257))[:257] + b"\x90\x00"],
        "over 1200 bytes": parts(good + bytes(1201 - len(good)), 250),
        "6C with data": [good[:8] + b"\x6c\x10"],
        "6C to every repeat": [b"\x6c\xf0"] * 20,
        "61 00 forever": [good[:200] + b"\x61\x00"] * 20,
    }
    for name, script in shapes.items():
        NFC.script = list(script)
        code = tap(1250)
        assert code == reason.PROTOCOL, (name, reason.name(code))


def test_3_legal_chaining_shapes_are_followed():
    # Parts of 256 bytes with 61 00, a 6C at each step, and exactly 16 R-APDUs
    # with the last one final: the terminal gets the whole answer each time (a
    # stale UN makes it DEVICE_SIG, not PROTOCOL or MALFORMED).
    good = bytes.fromhex(V["response_data"])
    big = bytes.fromhex(V2["response_data"])
    sixc = []
    for p in parts(good, 100):
        sixc += [bytes((0x6C, len(p) - 2)), p]
    shapes = {
        "256-byte parts, 61 00": parts(big, 256),
        "6C at each step": sixc,
        "16 R-APDUs": parts(good, -(-len(good) // 16)),
    }
    assert len(shapes["16 R-APDUs"]) == 16 and parts(big, 256)[0][-2:] == b"\x61\x00"
    for name, script in shapes.items():
        NFC.script = list(script)
        code = tap(1250)
        assert code == reason.DEVICE_SIG and not NFC.script, (name, reason.name(code), NFC.script)


def test_4_genuine_answer_approved_by_the_same_terminal_after_the_fuzz():
    # Named to run last: the terminal that took every hostile answer above (its
    # credential cache and wallet table included) still approves the genuine
    # one, once the request it sends is the vector's, and only once.
    t = V["terminal"]
    FIXED.un = bytes.fromhex(t["un"])
    SEQ.fixed = t["seq"]
    try:
        for ref, want in ((b"R1", reason.APPROVED), (b"R2", reason.COUNTER_REPLAY)):
            NFC.script = list(GENUINE)
            code = tap(t["amount"], ref)
            assert code == want, (ref, reason.name(code))
        FIXED.un = None  # a fresh challenge: the old answer no longer fits
        NFC.script = list(GENUINE)
        code = tap(t["amount"], b"R3")
        assert code == reason.DEVICE_SIG, reason.name(code)
    finally:
        FIXED.un = None
        SEQ.fixed = None


unit.run(globals())
