"""ESP32 estimate of the uplink's synchronous steps with ../shared/esp32est
(MicroPython's qemu port counting instructions; see its README). Each step
runs between two awaits of the event loop, so each is a wait that a charge
arriving mid-upload could see: building a batch from the journal, reading and
parsing a response, checking the bundle (ES256 verify + parse), trimming the
journal.

Run: .venv/bin/python bench/esp32_uplink.py   (about 30 s; the first run
builds the emulator, see the estimator's README)

The qemu port has neither sockets nor TLS, so socket and ssl are stand-ins
(the steps timed here use neither) and asyncio comes from the MicroPython
source next to the estimator. mbedTLS cannot run there: the TLS handshake's
steps are estimated in bench/bench_uplink.py instead.
"""
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("POS_SHARED", ROOT.parent / "shared"))
ESTIMATE = SHARED / "esp32est" / "estimate"
sys.path[:0] = [str(ROOT / "tests")]

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from uplink_receiver import sign  # noqa: E402

MP_SCRIPT = r'''
# ESP32 estimate of the uplink's synchronous steps (each runs between two
# awaits of the event loop): batch build, response read + parse, bundle
# verify, journal trim. Virtual us (1 per 1,000 Cortex-M3 instructions).
import gc, json, time
from pos.journal import Journal
from pos import answer, http, sig, p256_gtab
from pos.uplink import build
from pos.bundle import Store
from ramdev import RamDev  # bench/esp32/mp/ramdev.py

meta = json.load(open("/rom/data/meta.json"))
KEY = bytes.fromhex(meta["key"])
NONCE = bytes.fromhex(meta["nonce"])


def us(f, *a):
    gc.collect()
    t = time.ticks_us()
    r = f(*a)
    return time.ticks_diff(time.ticks_us(), t), r


sync_dev = RamDev(24)  # the sync of 100's journal, first, while the heap is in one piece
j = Journal(RamDev(12))
j.open()
rec = b"r" * 700  # a payment record is ~600-900 bytes (credential with key hints)
for _ in range(50):
    j.append(rec)
buf = bytearray(http.MAX_HEAD + 16384)
t, r = us(build, j, buf, NONCE, 3, 16384)
print("build batch: %d records, %d bytes: %d virtual us" % (r[2], r[0], t))
t, _ = us(j.mark_uploaded, r[3])
print("journal trim (mark_uploaded): %d virtual us" % t)


def fake_recv(data):
    pos = [0]

    async def recv(mv):
        n = min(4096, len(mv), len(data) - pos[0])
        mv[:n] = data[pos[0]:pos[0] + n]
        pos[0] += n
        return n
    return recv


def drive(coro):
    # read_response with a recv that never waits: run the coroutine by hand.
    try:
        while True:
            coro.send(None)
    except StopIteration as e:
        return e.value


j = None
gc.collect()
store = Store("/", KEY, "5445524d30303031")
from pos.bundle import parse, DOMAIN
for name in ("small", "large"):
    data = open("/rom/data/resp_%s.bin" % name, "rb").read()
    t, (st, body) = us(lambda: drive(http.read_response(fake_recv(data), buf, 16384)))
    print("%s response (%d bytes): read + head parse %d virtual us" % (name, len(data), t))
    start = buf.find(b"\r\n\r\n") + 4
    t, (ack, text, sg) = us(answer.parse, buf, start, start + len(body))
    print("  answer parse (pos.answer, bundle decoded in place): %d virtual us" % t)
    text = bytes(text)
    s = bytes.fromhex(sg)
    t, b = us(store.check, text, s, NONCE)
    print("  bundle check, cold key (verify + parse): %d virtual us, version %d, %d deny" % (t, b.version, len(b.wallets())))
    t, ok = us(sig.verify, "ES256", KEY, DOMAIN + text, s)
    print("  of which verify (cold): %d virtual us %s" % (t, ok))
    t, _ = us(parse, text, s)
    print("  of which parse: %d virtual us" % t)
    t, _ = us(json.loads, text)
    print("  of which bundle json.loads: %d virtual us" % t)
    d = b = body = None
sig.warm("ES256", KEY, True)
gc.collect()
t, ok = us(sig.verify, "ES256", KEY, DOMAIN + text, s)
print("verify, key pinned at boot (sig.warm pin=True): %d virtual us %s" % (t, ok))

# A whole sync of 100 records, everything the uplink does between awaits:
# each exchange builds its batch, reads and takes apart the answer, checks
# the bundle (the first one verified: new content; the rest parsed and
# skipped, same content, the clock's time fresh), trims the journal.
text = s = None
gc.collect()
j = Journal(sync_dev)
j.open()
for _ in range(100):
    j.append(b"r" * 600)  # a record's size with its credential by reference, about
small = open("/rom/data/resp_small.bin", "rb").read()
h0 = small.find(b"\r\n\r\n") + 4
tail = small[h0 + small[h0:].find(b","):]  # ',"bundle":...,"sig":...}'
exchanges = 0
total = 0
store = Store("/", KEY, "5445524d30303031")
while j.pending():
    gc.collect()
    t0 = time.ticks_us()
    n, after, count, last = build(j, memoryview(buf)[256:], NONCE, store.version, 16384)
    body = b'{"ack":%d' % last + tail
    data = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body
    st, bd = drive(http.read_response(fake_recv(data), buf, 16384))
    start = buf.find(b"\r\n\r\n") + 4
    ack, text, sg = answer.parse(buf, start, start + len(bd))
    b = store.check(text, bytes.fromhex(sg), NONCE, need_time=exchanges == 0)
    if b is not None:
        store.version, store.held = b.version, True
    j.mark_uploaded(ack)
    total += time.ticks_diff(time.ticks_us(), t0)
    exchanges += 1
    text = b = bd = body = data = None
print("whole sync of 100 records of 600 bytes: %d exchanges, the firmware's work %d virtual us = %d-%d ms "
      "@240 MHz (k 7.2-14.1); add %d TLS handshakes (mbedTLS: bench/bench_uplink.py) and the network"
      % (exchanges, total, total * 72 // 10000, total * 141 // 10000, exchanges))
'''


def data(d):
    key = ec.generate_private_key(ec.SECP256R1())
    pub = key.public_key().public_bytes(serialization.Encoding.X962,
                                        serialization.PublicFormat.UncompressedPoint).hex()
    nonce = bytes(range(16))
    meta = {"key": pub, "nonce": nonce.hex()}
    # A small bundle, and one near the 16 KB answer limit (330 deny entries).
    for name, ndeny in (("small", 10), ("large", 330)):
        b = {"v": 1, "version": 7, "terminal_id": "5445524d30303031", "nonce": nonce.hex(),
             "time": 1764000000,
             "deny": {"wallets": [os.urandom(16).hex() for _ in range(ndeny)], "serials": []},
             "issuers": [{"kid": os.urandom(8).hex(), "alg": "ES256", "key": "04" + os.urandom(64).hex(),
                          "not_before": 1700000000, "not_after": 1900000000} for _ in range(4)],
             "risk": {"max_offline_age_s": 259200}}
        text = json.dumps(b, separators=(",", ":")).encode()
        body = json.dumps({"ack": 64, "bundle": text.decode(), "sig": sign(key, text)},
                          separators=(",", ":")).encode()
        assert len(body) <= 16384
        (d / ("resp_%s.bin" % name)).write_bytes(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"server: uvicorn\r\n\r\n" % len(body) + body)
    (d / "meta.json").write_text(json.dumps(meta))


def main():
    if not ESTIMATE.exists():
        raise SystemExit("esp32_uplink: %s not found" % ESTIMATE)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        stubs, dat = tmp / "stubs", tmp / "data"
        stubs.mkdir()
        dat.mkdir()
        shutil.copy(ROOT / "bench" / "esp32" / "mp" / "ramdev.py", stubs / "ramdev.py")
        (stubs / "socket.py").write_text("# stand-in: the qemu port has no sockets\n")
        (stubs / "ssl.py").write_text("# stand-in: no TLS in the qemu port\nPROTOCOL_TLS_CLIENT = 0\nCERT_REQUIRED = 2\n")
        with tarfile.open(SHARED / "esp32est" / "micropython-src.tar.xz") as t:
            members = [m for m in t.getmembers() if m.name.lstrip("./").startswith("extmod/asyncio/")
                       and m.name.endswith(".py") and not m.name.endswith("manifest.py")]
            t.extractall(tmp / "src", members)
        shutil.copytree(tmp / "src" / "extmod" / "asyncio", stubs / "asyncio")
        data(dat)
        script = tmp / "est_uplink.py"
        script.write_text(MP_SCRIPT)
        # 320k: the firmware's 128k data budget plus the RAM "flash" the journals are built on here (96 KB for the sync of 100).
        sys.exit(subprocess.call([str(ESTIMATE), "--heap", "320k", "--mpy-dir", str(ROOT / "firmware"),
                                  "--mpy-dir", str(stubs), "--data", str(dat), str(script)]))


if __name__ == "__main__":
    main()
