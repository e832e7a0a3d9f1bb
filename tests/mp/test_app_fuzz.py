# heap: 512k  (compiling app.py and its imports from source; the device loads .mpy)
# The tap path (APDU chaining, parsing, rules) under 10,000 random and mutated
# wallet answers: every one ends in a decline or retry code, never an exception.
import gc
import json
import os
import sys
sys.path.insert(0, ".frozen")
import unit
from pos import reason, rules, terminal


class Journal:
    def __init__(self):
        self.records = []

    def next_rid(self):
        return 1

    def append(self, rec):
        self.records.append(bytes(rec))
        return len(self.records)

    def pending(self):
        return len(self.records)


class Feedback:
    def led(self, c):
        pass

    beep = show = led


class FuzzNFC:
    """Answers SELECT properly, then AUTHORIZE/GET RESPONSE with whatever `script` says."""

    def __init__(self):
        self.script = []
        self.idle_us = 0

    def apdu(self, cmd):
        if cmd[1] == 0xA4:
            return b"\x01\x01\x01\x90\x00"
        if self.script:
            return self.script.pop(0)
        return b"\x6f\x00"

    def release(self):
        return True

    def recover(self):
        return True


def vector():
    with open(sys.argv[1] if len(sys.argv) > 1 and sys.argv[1].endswith(".json") else "tests/vectors/protocol_v1.json") as f:
        return json.load(f)["vectors"][0]


def make():
    v = vector()
    cfg = {"terminal_id": v["terminal"]["terminal_id"], "merchant_id": "M", "currency": 978,
           "issuers": [v["issuer"]]}
    nfc = FuzzNFC()
    ver = rules.Verifier(rules.Policy.from_config(cfg))
    t = terminal.Terminal(nfc, Journal(), ver, cfg, Feedback(), clock=lambda: v["terminal"]["time"],
                     log=lambda *a: None)
    return t, nfc, bytes.fromhex(v["response_data"])


def test_ten_thousand_hostile_answers():
    t, nfc, good = make()
    seen = {}
    gc.collect()
    before = gc.mem_free()
    for i in range(10000):
        r = os.urandom(4)
        if i % 10 == 0:
            # mutated genuine answer (full verification path)
            b = bytearray(good)
            for _ in range(1 + r[0] % 3):
                x = os.urandom(2)
                b[(x[0] << 1 | x[1]) % len(b)] = os.urandom(1)[0]
            body = bytes(b[: len(b) - r[1] % 5])
            nfc.script = [body[:240] + b"\x61" + bytes((max(0, len(body) - 240),)), body[240:] + b"\x90\x00"]
        elif i % 10 == 1:
            # endless or oversized chaining
            nfc.script = [os.urandom(200) + b"\x61\x00"] * 20
        elif i % 10 == 2:
            nfc.script = [os.urandom(1)]  # shorter than a status word
        else:
            nfc.script = [os.urandom(r[2] % 300) + (b"\x90\x00" if r[0] & 1 else os.urandom(2))]
        code, rid = t._tap(100 + r[3], 978, b"FUZZ")
        assert code != reason.APPROVED, "hostile answer approved"
        seen[code] = seen.get(code, 0) + 1
        if i % 1000 == 999:
            gc.collect()
            assert before - gc.mem_free() < 8192, "tap path leaks memory"
    print("decisions:", sorted((reason.name(k), n) for k, n in seen.items()))
    assert reason.MALFORMED in seen and reason.PROTOCOL in seen


def test_genuine_answer_still_approved_after_fuzz():
    t, nfc, good = make()
    # The terminal's request differs from the vector's (fresh UN), so a genuine
    # replayed answer must fail the device signature, not pass.
    nfc.script = [good[:240] + b"\x61" + bytes((len(good) - 240,)), good[240:] + b"\x90\x00"]
    code, rid = t._tap(1250, 978, b"R1")
    assert code == reason.DEVICE_SIG, reason.name(code)


unit.run(globals())
