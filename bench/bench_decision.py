"""The full offline decision (pos.rules.Verifier.check: parse, issuer key, credential
signature or cache, validity, limits, device signature, counter, spend) in the unix
port with 128k of heap for data (plus the imported code, which the ESP32 keeps in
flash), for a first-seen and a returning wallet.

first-seen = a wallet the terminal has never seen: its credential's issuer signature
verified warm (the app warms issuer keys at boot), its device signature with the
credential's key hints (PROTOCOL.md, tag 0D: 64 doublings); the extra rows have a
credential without them (256 doublings), and one signed by an RS256-2048 issuer.
returning  = the same wallet again: credential found in the cache by its hash, device
key warm (the terminal builds its table while idle after the first payment), so one
warm ES256 verify.
free = smallest heap free before a decision (after imports, the caches and tables
so far); the signature checks' own peak working sets are in the sig table
(bisection of -X heapsize). The gap between these medians and the sig table's
(warm 1.6 ms, cold 4.1 ms) is hashing, parsing and, mostly, garbage collection:
an ES256 verify makes ~0.5 MB of short-lived big ints, and every collection
also marks the imported code (~45 KB here; the ESP32 keeps it in flash).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host_tools import wallet_sim as ws  # noqa: E402
from host_tools.build import build  # noqa: E402
from host_tools.emulator import code_footprint, micropython  # noqa: E402

N = 40
NOW = 1764000000

IMPORTS = """
import gc, sys, time
from pos import p256_gtab  # the G table while the heap is in one piece, as the app does
from pos import p256, reason, rules, sig
import json
assert p256.use(sys.argv[2]) == sys.argv[2], "backend not available"
"""

MP = IMPORTS + r"""
with open(sys.argv[1]) as f:
    head = json.loads(f.readline())
v = rules.Verifier(rules.Policy.from_config(head["policy"]))
for iss in v.policy.issuers.values():
    if iss.alg == 1:  # token.ALG_ES256
        sig.warm("ES256", iss.key, True)  # as app.run does at boot
res = {}
with open(sys.argv[1]) as f:
    f.readline()
    for line in f:
        kind, req_hex, resp_hex = line.split()
        req = rules.Request()
        req.amount, req.currency, req.time = 100, 978, head["now"]
        req.data = memoryview(bytes.fromhex(req_hex))
        resp = bytes.fromhex(resp_hex)
        req_hex = resp_hex = line = None
        gc.collect()
        f0 = gc.mem_free()
        t0 = time.ticks_us()
        r = v.check(req, resp)
        dt = time.ticks_diff(time.ticks_us(), t0)
        assert r == reason.APPROVED, reason.name(r)
        v.commit(v.cred.wallet_id, v.counter, req.amount)
        sig.warm("ES256", v.cred.device_key)  # as Terminal.idle_work() does after a payment
        gc.collect()
        if kind != "warmup":
            ms, free, kept = res.setdefault(kind, ([], [], []))
            ms.append(dt)
            free.append(f0)
            kept.append(f0 - gc.mem_free())
print(json.dumps(res))
"""


def request(amount, seq):
    _, data = ws.authorize_apdu(b"TERM0001", b"BENCH", amount, 978, os.urandom(16), NOW, seq)
    return data


def answer(phone, data):
    ws.run_tap(phone, ws.SELECT_APDU)
    apdu = bytes((0x80, 0xA0, 0, 0, len(data))) + data + b"\x00"
    out, sw = ws.run_tap(phone, apdu)
    return out


def scenario():
    iss = ws.Issuer(alg="ES256", not_before=NOW - 10, not_after=NOW + 10)
    rsa_iss = ws.Issuer(alg="RS256", not_before=NOW - 10, not_after=NOW + 10)
    seq = 0
    taps = {"warmup": [], "first": [], "returning": [], "first-nohints": [], "first-rsa": []}
    regular = ws.Phone(iss)
    # warm-up: one unrelated wallet, then the regular wallet's first visit
    # (after which its key is warmed, as the terminal does while idle), so
    # the returning series finds it known
    for kind, phones in (("warmup", [ws.Phone(iss), regular]),
                         ("first", [ws.Phone(iss) for _ in range(N)]),
                         ("first-nohints", [ws.Phone(iss, hints=False) for _ in range(N)]),
                         ("first-rsa", [ws.Phone(rsa_iss) for _ in range(N)]),
                         ("returning", [regular] * N)):
        for phone in phones:
            seq += 1
            d = request(100, seq)
            taps[kind].append((d.hex(), answer(phone, d).hex(), 100))
    lines = [json.dumps({"policy": {"issuers": [iss.config(), rsa_iss.config()]}, "now": NOW})]
    for kind in ("warmup", "first", "first-nohints", "first-rsa", "returning"):
        lines += ["%s %s %s" % (kind, q, a) for q, a, _ in taps[kind]]
    return "\n".join(lines) + "\n"


def measure(backend="mpz"):
    """{"first"/"returning": ([us], [heap free before], [heap kept])}; RuntimeError on failure.
    backend: the P-256 field arithmetic (pos.p256.use)."""
    out = build("unix")
    with tempfile.TemporaryDirectory() as tmp:
        p = Path(tmp) / "sc.json"
        p.write_text(scenario())
        script = Path(tmp) / "bench.py"
        script.write_text(MP)
        env = dict(os.environ, MICROPYPATH=".frozen:" + str(out))
        # 128k for data, as the emulated terminal gets; the code's footprint on top
        # (the ESP32 keeps it in flash), measured as the emulator measures its own.
        mods = ["pos.p256_gtab", "pos.reason", "pos.rules", "pos.sig", "json"]
        if backend == "native":
            mods += ["pos.p256_native", "pos.p256_viper"]
        code_kb = -(-code_footprint(out, mods) // 1024)
        r = subprocess.run([micropython(), "-X", "heapsize=%dk" % (128 + code_kb), str(script), str(p), backend],
                           capture_output=True, text=True, env=env, timeout=300)
    if r.returncode:
        raise RuntimeError(r.stdout + r.stderr)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res["heapsize"] = "%dk" % (128 + code_kb)
    return res


def main():
    res = {}
    for backend in ("mpz", "native"):
        try:
            res[backend] = measure(backend)
        except RuntimeError as e:
            print(e)
            return 1
    print(__doc__.split("\n\n")[0])
    print("\nHeap: 128k for data plus the imported code's measured footprint "
          "(-X heapsize=%s with mpz, %s with the native engine), as the emulated terminal gets."
          % (res["mpz"]["heapsize"], res["native"]["heapsize"]))
    print("backend = the P-256 field arithmetic (pos.p256.use). The ESP32 column scales the mpz figure;"
          " the native one's ESP32 estimate comes from the emulation (make bench-esp32).")
    print("\n| wallet | backend | median ms (unix port) | ESP32 estimate (70-90x) | heap free before |")
    print("|---|---|---|---|---|")
    for backend in ("mpz", "native"):
        for kind, label in (("first", "first-seen"), ("returning", "returning"),
                            ("first-nohints", "first-seen, credential without key hints"),
                            ("first-rsa", "first-seen, RS256-2048 issuer")):
            ms, alloc, kept = res[backend][kind]
            m = statistics.median(ms) / 1000
            esp = "%.0f-%.0f ms" % (m * 70, m * 90) if backend == "mpz" else "n/a: make bench-esp32"
            print("| %s | %s | %.2f (n=%d) | %s | %.1f KB |" % (label, backend, m, len(ms), esp, min(alloc) / 1024))
    return 0


if __name__ == "__main__":
    sys.exit(main())
