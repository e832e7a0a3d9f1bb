# Fill a journal partition with tap records (run in the unix port by
# bench/esp32/run.py): argv = records file ("<request hex> <response hex>" per
# line), image path, block count. Appends until the journal is full (nothing
# uploaded), with the firmware's own Journal and record encoding.
import sys

from pos import record
from pos.journal import Journal, JournalFull
from ramdev import RamDev  # bench/esp32/mp/ramdev.py


src, out, blocks = sys.argv[1], sys.argv[2], int(sys.argv[3])
taps = []
with open(src) as f:
    for ln in f:
        w = ln.split()
        taps.append((bytes.fromhex(w[0]), bytes.fromhex(w[1])))
dev = RamDev(blocks)
j = Journal(dev)
j.open()
buf = bytearray(record.MAX)
n = 0
try:
    while True:
        req, resp = taps[n % len(taps)]
        j.append(memoryview(buf)[:record.encode(buf, req, resp, b"REF%07d" % n, 0)])
        n += 1
        j.prepare()
except JournalFull:
    pass
with open(out, "wb") as f:
    f.write(dev.buf)
print("RECORDS", n)
