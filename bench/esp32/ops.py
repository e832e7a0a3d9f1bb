# The firmware's hot operations, timed inside the ESP32 estimator's emulation
# (bench/esp32/run.py prepares /rom/data and runs this; see its docstring).
# Prints one line per operation:
#   ROW <name>|<median virtual us>|<median virtual us inside the C-bound part>|<samples>
# where the C-bound part is the time spent in the native field engine (the
# viper functions of pos.p256_viper) and in RSA verification (pos.rsa.verify_digest: 17
# big-int modular multiplications, nothing else); and for part "tap", TAPHEAP
# (heap free before the first tap, the probe's us per phase), a TAP line per tap
# and TAPLOG lines for anything the terminal logged (see tap()).
import gc
import time

from pos import p256, p256_gtab, p256_viper, reason, rsa, rules, sig  # noqa: F401 (the G table first, as the app does)
from ramdev import RamDev  # bench/esp32/mp/ramdev.py

with open("/rom/data/backend.txt") as _f:
    BACKEND = p256.use(_f.read().strip())  # "native" as the ESP32 board selects it
us = time.ticks_us
diff = time.ticks_diff
D = "/rom/data/"

# Time inside the C-bound code: wrappers around the entry points that
# p256_native and sig look up on every use. Only the second pass of each row
# runs with them, so their own cost stays out of the totals.
_in_engine = [0]
_rsa = rsa.verify_digest
_viper = {}  # the engine's entry points (viper functions), unwrapped


def _wrap(f):
    def timed(*a):
        t = us()
        r = f(*a)
        _in_engine[0] += diff(us(), t)
        return r
    return timed


for _name in ("run", "inv", "wnaf", "order", "addr"):
    _viper[_name] = getattr(p256_viper, _name)


def instrument(on):
    for name, f in _viper.items():
        setattr(p256_viper, name, _wrap(f) if on else f)
    rsa.verify_digest = _wrap(_rsa) if on else _rsa


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def row(name, total, inside, n):
    print("ROW %s|%d|%d|%d" % (name, total, inside, n))


def measure(name, setup, op, n, all_c=False):
    """Two passes of n samples: plain (totals), then instrumented (engine time)."""
    res = ([], [])
    for instrumented in (False, True):
        instrument(instrumented)
        for i in range(n):
            a = setup(i)
            gc.collect()
            _in_engine[0] = 0
            t = us()
            op(a)
            dt = diff(us(), t)
            res[instrumented].append(_in_engine[0] if instrumented else dt)
    instrument(False)
    total = median(res[0])
    row(name, total, total if all_c else min(total, median(res[1])), n)


def lines(name):
    with open(D + name) as f:
        return [[bytes.fromhex(w) for w in ln.split()] for ln in f if ln.strip()]


def clear():
    p256._cache.clear()
    del p256._pinned[:]


def es256_mpz():
    # The same rows on the big-int backend (run in a process of its own, the
    # engine never loaded), for comparison; big-int bound as a whole.
    es256(" (mpz)", 3, True)


def es256(suffix="", n=None, all_c=False):
    V = lines("es256.txt")  # pub msg sig hints
    n = n or len(V)

    def cold(i):
        clear()
        return V[i]

    def warmed(i, pin=False):
        clear()
        sig.warm("ES256", V[i][0], pin)
        return V[i]

    verify = lambda v: sig.verify("ES256", v[0], v[1], v[2])  # noqa: E731
    measure("ES256 cold" + suffix, cold, verify, n, all_c)
    measure("ES256 hinted" + suffix, cold, lambda v: sig.verify("ES256", v[0], v[1], v[2], v[3]), n, all_c)
    measure("ES256 warm" + suffix, warmed, verify, n, all_c)
    measure("ES256 warm, pinned key" + suffix, lambda i: warmed(i, True), verify, n, all_c)
    measure("warm()" + suffix, cold, lambda v: sig.warm("ES256", v[0]), n, all_c)
    clear()


def rs256():
    V = lines("rs256.txt")  # modulus msg sig
    measure("RS256-2048", lambda i: V[i], lambda v: sig.verify("RS256", v[0], v[1], v[2]), len(V))


def decisions():
    # rules.Verifier.check as bench/bench_decision.py runs it, on its scenario.
    import json
    with open(D + "decision.txt") as f:
        head = json.loads(f.readline())
    out = {}
    for instrumented in (False, True):
        clear()
        p256.shed()
        v = rules.Verifier(rules.Policy.from_config(head["policy"]))
        for iss in v.policy.issuers.values():
            if iss.alg == 1:  # token.ALG_ES256
                sig.warm("ES256", iss.key, True)  # as the app does at boot
        instrument(instrumented)
        with open(D + "decision.txt") as f:
            f.readline()
            for line in f:
                kind, req_hex, resp_hex = line.split()
                req = rules.Request()
                req.amount, req.currency, req.time = 100, 978, head["now"]
                req.data = memoryview(bytes.fromhex(req_hex))
                resp = bytes.fromhex(resp_hex)
                req_hex = resp_hex = line = None
                gc.collect()
                _in_engine[0] = 0
                t = us()
                r = v.check(req, resp)
                dt = diff(us(), t)
                if r != reason.APPROVED:
                    raise AssertionError(kind + " " + reason.name(r))
                inside = _in_engine[0]
                instrument(False)
                v.commit(v.cred.wallet_id, v.counter, req.amount)
                sig.warm("ES256", v.cred.device_key)  # as the terminal's idle work does
                instrument(instrumented)
                if kind != "warmup":
                    out.setdefault(kind, ([], []))[instrumented].append(inside if instrumented else dt)
        instrument(False)
    for kind, name in (("first", "decision, first-seen"), ("returning", "decision, returning"),
                       ("first-nohints", "decision, first-seen, no key hints"),
                       ("first-rsa", "decision, first-seen, RS256-2048 issuer")):
        if kind in out:
            total = median(out[kind][0])
            row(name, total, min(total, median(out[kind][1])), len(out[kind][0]))


class RomDev(RamDev):
    """The full journal image from /rom/data, read-only (reads go to the file,
    as reads go to flash on the device; the image is too big for the heap)."""

    def __init__(self, path, bs=4096):
        import os
        self.f = open(path, "rb")
        self.bs = bs
        self.blocks = os.stat(path)[6] // bs

    def readblocks(self, block, buf, off=0):
        self.f.seek(block * self.bs + off)
        self.f.readinto(buf)

    def writeblocks(self, block, buf, off=0):
        raise OSError(30)  # EROFS: boot must not write

    def ioctl(self, op, arg):
        if op == 6:
            raise OSError(30)
        return RamDev.ioctl(self, op, arg)


def persist():
    # One journal append of a real tap record (journal.append on a RAM block
    # device: the flash driver and the chip are not in the figure).
    from pos import record
    from pos.journal import Journal, JournalFull
    clear()
    p256.shed()
    gc.collect()
    req, resp = lines("record.txt")[0]
    buf = bytearray(record.MAX)
    rec = memoryview(buf)[:record.encode(buf, req, resp, b"BENCH-REF-0001", 0)]
    j = Journal(RamDev(5))  # the fewest blocks a journal takes
    j.open()
    j.prepare()

    def setup(i):
        try:
            j.prepare()
        except JournalFull:
            pass
        if j.pending() > 6:
            j.mark_uploaded(j.next_rid() - 1)
            j.prepare()
        return rec

    measure("persist (journal append)", setup, j.append, 15)


def boot():
    # Boot with a full journal: open it and replay it (pos.app.restore as it
    # is now) into a fresh verifier.
    import json
    import sys
    # The qemu port's time module has no time(), which pos.terminal (imported
    # by pos.app) needs at import; the ESP32's has. A stand-in while pos.app
    # loads; restore() does not use it.
    real = time
    shim = type("time", (), {})()
    for a in dir(real):
        if not a.startswith("__"):
            setattr(shim, a, getattr(real, a))
    shim.time = lambda: 1764000000
    sys.modules["time"] = shim
    try:
        from pos import app
    finally:
        sys.modules["time"] = real
    from pos.journal import Journal
    clear()
    p256.shed()
    gc.collect()
    with open(D + "boot.json") as f:
        head = json.loads(f.read())
    dev = RomDev(D + "journal.img")
    res = []
    for instrumented in (False, True):
        v = rules.Verifier(rules.Policy.from_config(head["policy"]), rules.WalletTable(256))
        instrument(instrumented)
        gc.collect()
        _in_engine[0] = 0
        t = us()
        j = Journal(dev)
        j.open()
        n = app.restore(v, j)
        res.append(_in_engine[0] if instrumented else diff(us(), t))
        instrument(False)
    n = n[0] if isinstance(n, tuple) else n
    row("boot, full journal (%d records, %d blocks)" % (n, dev.blocks), res[0], res[1], 1)


def tap():
    # Whole taps through pos.terminal.Terminal.charge() (bench/esp32/mp/tap_session.py),
    # replaying the session run.py recorded against the PN532 simulator: a
    # plain pass (totals), then an instrumented one (engine time), each with a
    # fresh terminal, as its own process starts after boot.
    import tap_session
    pool = bytearray(tap_session.POOL_BLOCKS * 4096)  # the journal's flash, first: run.py adds it to the heap
    import json
    with open(D + "tap_plan.txt") as f:
        plan = f.read().split()
    with open(D + "tap_policy.json") as f:
        pol = json.loads(f.read())
    res = []
    for instrumented in (False, True):
        instrument(instrumented)
        res.append(tap_session.session(tap_session.ReplayUART(D + "tap.bin"), plan, pol, pool,
                                       _in_engine if instrumented else None))
        instrument(False)
    (plain, free, cost), (inst, _, _) = res
    print("TAPHEAP", free, cost)
    for i, (a, b) in enumerate(zip(plain, inst)):
        # i|kind|whole-tap firmware us|of which engine|phases (firmware us)|persist flash|byref
        print("TAP %d|%s|%d|%d|%s|%s|%s" % (i, a[0], a[2], min(a[2], b[3]), ",".join(str(x) for x in a[4]),
                                          a[5], a[6]))


print("BACKEND", BACKEND, "heap_free", gc.mem_free())
with open(D + "parts.txt") as _f:
    _parts = _f.read().split()
for _part in _parts:
    globals()[_part]()
