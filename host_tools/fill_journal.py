"""A full journal for tests and benches: genuine payment records (signed by
simulated wallets) appended in the unix port until the journal is full, on
the emulated chip's image, as a terminal that stayed offline would leave it.

    n = fill(image, blocks=320, wallets=40)   # 320: the ESP32's 1 MiB journal
"""
import os
import subprocess
import tempfile
import time
from pathlib import Path

from host_tools import wallet_sim as ws
from host_tools.emulator import micropython

ROOT = Path(__file__).resolve().parents[1]

_FILL = r"""
import sys
import flash
from pos import record
from pos.journal import Journal, JournalFull
pairs = [tuple(bytes.fromhex(x) for x in l.split()) for l in open(sys.argv[1])]
dev = flash.setup(sys.argv[2], "/flash", int(sys.argv[3]))
j = Journal(dev)
j.open()
buf = bytearray(record.MAX)
n = 0
try:
    while True:
        req, resp = pairs[n % len(pairs)]
        k = record.encode(buf, req, resp, b"FULL-%d" % n, 0)
        j.append(memoryview(buf)[:k])
        n += 1
except JournalFull:
    pass
print(n)
"""


def payments(issuer, wallets, now=None):
    """(request data, response data) of one genuine tap per wallet."""
    now = int(time.time()) if now is None else now
    out = []
    for i in range(wallets):
        phone = ws.Phone(issuer)
        apdu, data = ws.authorize_apdu(b"TERM0001", b"TEST", 100, 978, os.urandom(16), now, i + 1)
        phone.transceive(ws.SELECT_APDU)
        resp, _ = ws.run_tap(phone, apdu)
        out.append((data, resp))
    return out


def fill(image, issuer, blocks=320, wallets=40):
    """Fill the journal partition of `image` (created if missing); returns the
    number of records it took."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        for data, resp in payments(issuer, wallets):
            f.write("%s %s\n" % (data.hex(), resp.hex()))
        pairs = f.name
    try:
        env = dict(os.environ, MICROPYPATH=":".join(
            (".frozen", str(ROOT / "boards" / "unix"), str(ROOT / "firmware"))))
        r = subprocess.run([micropython(), "-X", "heapsize=512k", "-c", _FILL, pairs,
                            str(image), str(blocks)], env=env, capture_output=True, text=True,
                           timeout=600)
    finally:
        os.unlink(pairs)
    if r.returncode:
        raise RuntimeError("filling the journal failed:\n" + r.stdout + r.stderr)
    return int(r.stdout.split()[-1])
