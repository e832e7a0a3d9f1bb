"""Boot with a full journal: the ESP32's 1 MiB partition filled with genuine
payment records (host_tools.fill_journal), then what boot does with it in the
unix port with 128k of heap for data: Journal.open() (scan every block) and
app.restore() (wallet counters and spend, the reference index). The watchdog
is fed along the way; "gap" is the longest stretch between two feeds.

ESP32 estimate: the firmware's unix time x 100-130, the calibrated ratio for interpreted
code with this much flash access (the instruction-counted figure is in
`make bench-esp32`). The ESP32's watchdog fires after 8 s without a feed.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host_tools import wallet_sim as ws  # noqa: E402
from host_tools.build import build  # noqa: E402
from host_tools.emulator import code_footprint, heap_bytes, micropython  # noqa: E402
from host_tools.fill_journal import fill  # noqa: E402

SCRIPT = r"""
import gc, sys, time
import flash
from pos import app, rules
from pos.journal import Journal
from pos.outcomes import Outcomes
gc.collect()
dev = flash.setup(sys.argv[1], "/flash", 320)
gap = [0, time.ticks_us()]
def tick():
    now = time.ticks_us()
    d = time.ticks_diff(now, gap[1])
    if d > gap[0]:
        gap[0] = d
    gap[1] = now
j = Journal(dev)
v = rules.Verifier(rules.Policy(), rules.WalletTable(256))
o = Outcomes(j)
replay = app.Replay(v, o, tick)
t0 = time.ticks_us()
j.open(tick, replay)
t1 = time.ticks_us()
tick()
busy = flash.device.busy_us
gc.collect()
print(replay.n, time.ticks_diff(t1, t0), busy, gap[0], gc.mem_free())
"""


def main():
    issuer = ws.Issuer(alg="ES256")
    out = build("unix")
    code = code_footprint(out, ["pos.app", "flash"])
    heap = "%dk" % ((heap_bytes("128k") + code + 1023) // 1024)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        image = Path(d) / "flash.img"
        records = fill(image, issuer, blocks=320)
        env = dict(os.environ, MICROPYPATH=":".join((".frozen", str(out))))
        for _ in range(3):
            r = subprocess.run([micropython(), "-X", "heapsize=" + heap, "-c", SCRIPT, str(image)],
                               env=env, capture_output=True, text=True, timeout=300)
            if r.returncode:
                print(r.stdout + r.stderr)
                return 1
            rows.append([int(x) for x in r.stdout.split()])
    rows.sort(key=lambda r: r[1])
    n, t_boot, busy, gap, free = rows[len(rows) // 2]
    fw = t_boot - busy  # the emulated chip's own time is C and silicon on a device
    print("journal: 1 MiB partition (256 blocks), %d records, 40 wallets; heap %s "
          "(128k data + %d KB code)" % (records, heap, code // 1024))
    print("| boot replay (Journal.open with app.Replay) | unix port | ESP32 estimate |")
    print("|---|---|---|")
    print("| whole | %.1f ms | |" % (t_boot / 1000))
    print("| of it in the emulated flash chip | %.1f ms | (SPI flash reads: not scaled) |"
          % (busy / 1000))
    print("| **firmware** | **%.1f ms** | **%.1f-%.1f s** (x100-130) |" % (
        fw / 1000, fw / 1e4, fw * 130 / 1e6))
    print("| longest gap between watchdog feeds | %.1f ms | %.2f-%.2f s (the watchdog: 8 s) |" % (
        gap / 1000, gap / 1e4, gap * 130 / 1e6))
    print("restored %d records; heap free after a collection: %d bytes (median of 3 runs)"
          % (n, free))
    return 0


if __name__ == "__main__":
    sys.exit(main())
