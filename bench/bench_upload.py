"""Upload, end to end: the emulated terminal (the whole firmware in the unix
port, host_tools.emulator) uploads a backlog of genuine payments over mutual
TLS to the real receiver (host_tools/receiver, its own process, SQLite) on
loopback, and the terminal's heap while it uploads.

Run: .venv/bin/python bench/bench_upload.py   (or `make bench`)

Backlog: N genuine payments (wallet_sim phones, real ES256 signatures, 50
wallets, this terminal's id) appended to the terminal's journal on its flash
image before it boots, as a terminal that was offline would hold them. The
link comes up and the terminal uploads batch after batch (64 records or 16 KB
each) until its journal is acknowledged. Timed from the link coming up to the
terminal's last "SYNC acknowledged" line (arrival at this process, polled
every 5 ms). "in exchanges" divides by the sum of the terminal's own
exchange times (its "UPLINK sent ... ms=" lines: connect, TLS handshake,
request, the receiver's verification and commit, response); the rest is the
uplink task's waits between exchanges (poll_ms). Two settings: the unix
board's POS_UPLINK_FAST (poll 100 ms, quiet 300 ms, as the tests use) and
the firmware's defaults (poll 1 s, quiet 5 s: what a device does).

Heap, in the running terminal with the 128 KB data heap the demo and the
tests give it: the heap_free it logs at READY, and the free heap around each
exchange of a 64-record backlog (the terminal's own main.py with
pos.uplink's sync() wrapped: free before, the lowest seen after a collection
at each event-loop turn while it ran, after). A peak inside one synchronous
step (a TLS handshake step, the bundle's verify) falls between two turns, so
"used" is a lower bound. The upper bound: the smallest data heap (the
Emulator's `heap`: -X heapsize is that plus the code's measured footprint,
see README "Memory") with which the terminal boots to READY, and the
smallest with which it then uploads the backlog with no "UPLINK failed"
(bisection, 4 KB steps, each size run 2 or 3 times). In the unix port
mbedTLS allocates from the MicroPython heap; on the ESP32 it takes its
session from the ESP-IDF heap instead.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host_tools import demo  # noqa: E402
from host_tools import wallet_sim as ws  # noqa: E402
from host_tools.emulator import Emulator, heap_bytes, micropython  # noqa: E402
from host_tools.receiver import testing  # noqa: E402

TID = "5445524d30303031"
MERCHANT = "MARKET-7"
FAST = {"POS_UPLINK_FAST": "1"}

_APPEND = r"""
import sys
import flash
from pos import record
from pos.journal import Journal
dev = flash.setup(sys.argv[2], "/flash")
j = Journal(dev)
j.open()
buf = bytearray(record.MAX)
n = 0
for line in open(sys.argv[1]):
    req, resp = [bytes.fromhex(x) for x in line.split()]
    k = record.encode(buf, req, resp, b"B%d" % n, 0)
    j.append(memoryview(buf)[:k])
    n += 1
print(n)
"""


def payments(issuer, n, wallets=50):
    """(request data, response data) of n genuine taps at this terminal."""
    phones = [ws.Phone(issuer) for _ in range(wallets)]
    now = int(time.time())
    out = []
    for i in range(n):
        phone = phones[i % wallets]
        apdu, data = ws.authorize_apdu(bytes.fromhex(TID), MERCHANT.encode(), 100 + i % 50, 978,
                                       os.urandom(16), now - n + i, i + 1)
        ws.run_tap(phone, ws.SELECT_APDU)
        resp, sw = ws.run_tap(phone, apdu)
        assert sw == ws.SW_OK
        out.append((data, resp))
    return out


def append_records(image, pairs):
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for data, resp in pairs:
            f.write("%s %s\n" % (data.hex(), resp.hex()))
    try:
        env = dict(os.environ, MICROPYPATH=":".join((".frozen", str(ROOT / "boards" / "unix"),
                                                     str(ROOT / "firmware"))))
        r = subprocess.run([micropython(), "-X", "heapsize=512k", "-c", _APPEND, f.name, str(image)],
                           env=env, capture_output=True, text=True, timeout=600)
    finally:
        os.unlink(f.name)
    if r.returncode:
        raise RuntimeError("appending records failed:\n" + r.stdout + r.stderr)
    return int(r.stdout.split()[-1])


def terminal_config(rx, issuer):
    f = rx.terminal_cert(TID).files
    return {"terminal_id": TID, "merchant_id": MERCHANT, "currency": 978, "issuers": [issuer.config()],
            "update_key": rx.update_key,
            "uplink": {"url": rx.url + "/v1/upload", "ca": rx.ca_pem.read_text(),
                       "cert": f["cert_pem"].read_text(), "key": f["key_pem"].read_text()}}


class Backlog:
    """A provisioned terminal image holding n payments, copied for each run."""

    def __init__(self, tmp, rx, issuer, n):
        self.dir = Path(tmp) / ("backlog-%d" % n)
        self.cfg = terminal_config(rx, issuer)
        emu = Emulator(self.dir, self.cfg, heap=demo.HEAP)
        emu.provision()
        self.image = emu.image
        self.n = append_records(self.image, payments(issuer, n))

    def terminal(self, workdir, heap=demo.HEAP, env=None):
        workdir = Path(workdir)
        if workdir.exists():
            shutil.rmtree(workdir)
        workdir.mkdir(parents=True)
        shutil.copy(self.image, workdir / "flash.img")
        return Emulator(workdir, self.cfg, heap=heap, env=env)


def upload(emu, n, timeout=120):
    """Link up until every record is acknowledged: (wall s, [(sent, ms)], failures)."""
    start = len(emu.lines)
    emu.set_link(True)
    t0 = time.monotonic()
    seen, done = start, None
    batches, failures = [], []
    while done is None:
        if time.monotonic() - t0 > timeout or emu.proc.poll() is not None:
            raise RuntimeError("upload did not finish: %s" % emu.lines[-10:])
        while seen < len(emu.lines):
            ln = emu.lines[seen]
            seen += 1
            if ln.startswith("UPLINK sent="):
                f = dict(p.split("=", 1) for p in ln.split()[1:])
                batches.append((int(f["sent"]), int(f["ms"])))
                if int(f["ack"]) >= n:
                    done = time.monotonic()
            elif ln.startswith("UPLINK failed"):
                failures.append(ln)
        time.sleep(0.005)
    return done - t0, batches, failures


def throughput(tmp, backlog, env, label):
    with backlog.terminal(Path(tmp) / ("run-" + label), env=env) as emu:
        emu.start()
        wall, batches, failures = upload(emu, backlog.n)
    sent = sum(s for s, _ in batches)
    ms = sum(m for _, m in batches)
    return {"label": label, "wall": wall, "sent": sent, "batches": len(batches), "ms": ms,
            "per_batch": sent / len(batches), "failures": failures}


_PROBE = r"""
# bench/bench_upload.py: the terminal's own main.py, with pos.uplink's sync()
# wrapped to log the free heap around each exchange and, while it runs, after
# a collection at every event-loop turn.
import gc
import asyncio
from pos import uplink as _u
_orig = _u.Uplink.sync
_st = {"on": False, "min": 0, "task": None}


async def _sample():
    while True:
        if _st["on"]:
            gc.collect()
            f = gc.mem_free()
            if f < _st["min"]:
                _st["min"] = f
            await asyncio.sleep_ms(0)
        else:
            await asyncio.sleep_ms(20)


async def _sync(self):
    if _st["task"] is None:
        _st["task"] = asyncio.create_task(_sample())
    gc.collect()
    before = gc.mem_free()
    _st["min"] = before
    _st["on"] = True
    try:
        return await _orig(self)
    finally:
        _st["on"] = False
        gc.collect()
        print("HEAPPROBE before=%d min=%d after=%d" % (before, _st["min"], gc.mem_free()))

_u.Uplink.sync = _sync
exec(open(__file__.rsplit("/", 1)[0] + "/main_orig.py").read())
"""


def probe_build(emu, tmp):
    """A copy of the emulator's build (symlinks) whose main.py is _PROBE."""
    d = Path(tmp) / "probe-build"
    if not d.exists():
        d.mkdir()
        for p in emu.build_dir.iterdir():
            if p.name != "main.py":
                (d / p.name).symlink_to(p)
        shutil.copy(emu.build_dir / "main.py", d / "main_orig.py")
        (d / "main.py").write_text(_PROBE)
    emu.build_dir = d  # after Emulator() measured the real build's code footprint
    return emu


def exchange_heap(tmp, backlog):
    """[(before, lowest, after)] free bytes of each exchange in the running terminal."""
    emu = probe_build(backlog.terminal(Path(tmp) / "probe", env=FAST), tmp)
    with emu:
        emu.start()
        upload(emu, backlog.n)
        time.sleep(0.3)
        out = []
        for ln in emu.lines:
            if ln.startswith("HEAPPROBE"):
                f = dict(p.split("=") for p in ln.split()[1:])
                out.append((int(f["before"]), int(f["min"]), int(f["after"])))
    return out


def boots(backlog, tmp, heap, link, runs=1):
    """True if the terminal comes up in this data heap (and, with link,
    uploads the whole backlog with no failed exchange), `runs` times out of
    `runs`: near the edge the outcome varies from run to run (the heap's
    layout follows the order of I/O events)."""
    return all(_boots(backlog, tmp, heap, link, i) for i in range(runs))


def _boots(backlog, tmp, heap, link, i):
    emu = backlog.terminal(Path(tmp) / ("heap-%s-%d" % (heap, i)), heap=heap, env=FAST)
    try:
        emu.start(wait=20)
    except RuntimeError:
        return False
    try:
        if not link:
            time.sleep(1.0)
            return emu.proc.poll() is None
        try:
            wall, batches, failures = upload(emu, backlog.n, timeout=30)
        except RuntimeError:
            return False
        return not failures
    finally:
        emu.stop()


def smallest(ok, lo, hi, step=4096):
    """The smallest heap in [lo, hi] (bytes, multiples of step) for which ok(spec) holds."""
    lo, hi = lo // step, hi // step
    if not ok("%dk" % (hi * step // 1024)):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if ok("%dk" % (mid * step // 1024)):
            hi = mid
        else:
            lo = mid + 1
    return hi * step


def main():
    print(__doc__.split("\n\n")[0])
    issuer = ws.Issuer(alg="ES256", not_before=int(time.time()) - 86400, not_after=int(time.time()) + 86400)
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for k, (env, label) in enumerate(((FAST, "POS_UPLINK_FAST (poll 100 ms)"),
                                          (None, "firmware defaults (poll 1 s)"))):
            # Each run: its own receiver and database, so that every record is verified and stored.
            with testing.start_receiver(tmp, "sqlite:///%s/rx%d.db" % (tmp, k), issuers=[issuer.config()],
                                        name="rx%d" % k) as rx:
                t = time.monotonic()
                backlog = Backlog(Path(tmp) / str(k), rx, issuer, 500)
                made = time.monotonic() - t
                rows.append(throughput(tmp, backlog, env, label))
        print("\n(each backlog of %d genuine payments made and journaled in %.1f s, not timed)" % (backlog.n, made))
        print("\n| uplink settings | payments | exchanges | payments/exchange | wall, link up to last ack "
              "| payments/s (wall) | sum of exchange times | payments/s in exchanges | failed exchanges |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            print("| %s | %d | %d | %.1f | %.2f s | **%.0f** | %.2f s | %.0f | %d |" % (
                r["label"], r["sent"], r["batches"], r["per_batch"], r["wall"], r["sent"] / r["wall"],
                r["ms"] / 1000, r["sent"] * 1000 / max(r["ms"], 1), len(r["failures"])))
        for r in rows:
            for ln in r["failures"]:
                print("(%s: %s)" % (r["label"], ln))

        with testing.start_receiver(tmp, "sqlite:///%s/rx-heap.db" % tmp, issuers=[issuer.config()],
                                    name="rx-heap") as rx:
            # Every probe uploads the same 64 records (a copy of one image): the
            # receiver verifies them once and then finds them identical; the
            # terminal's side is the same each time.
            small = Backlog(Path(tmp) / "heap", rx, issuer, 64)
            with small.terminal(Path(tmp) / "ready") as emu:
                emu.start()
                ready = next(ln for ln in emu.lines if ln.startswith("READY"))
            free = int(ready.split("heap_free=")[1].split()[0])
            probes = exchange_heap(tmp, small)
            top = heap_bytes(demo.HEAP) * 2
            boot_min = smallest(lambda h: boots(small, tmp, h, False, 2), 64 * 1024, top)
            up_min = smallest(lambda h: boots(small, tmp, h, True, 3), boot_min or 64 * 1024, top)
        kb = lambda b: "%d KB" % (b // 1024) if b else "> %d KB" % (top // 1024)  # noqa: E731
        print("\n| terminal data heap (unix port) | |\n|---|---|")
        print("| heap_free at READY, data heap %s, 64 records pending | %d bytes |" % (demo.HEAP, free))
        for i, (before, low, after) in enumerate(probes):
            print("| exchange %d of the 64-record backlog, data heap %s: free before / lowest while it ran / after "
                  "| %d / %d / %d bytes: **%d used** |" % (i + 1, demo.HEAP, before, low, after, before - low))
        print("| smallest data heap that boots to READY (2 runs of 2) | %s |" % kb(boot_min))
        print("| smallest data heap that boots and uploads the 64 records with no failed exchange (3 runs of 3) "
              "| %s |" % kb(up_min))
        if boot_min and up_min:
            print("| what uploading needs in the running terminal (difference) | %d KB |"
                  % ((up_min - boot_min) // 1024))


if __name__ == "__main__":
    main()
