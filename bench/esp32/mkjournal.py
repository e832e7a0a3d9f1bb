# Fill a journal partition with tap records (run in the unix port by
# bench/esp32/run.py): argv = records file ("<request hex> <response hex>" per
# line), image path, block count. Appends until the journal is full (nothing
# uploaded), with the firmware's own Journal and record encoding.
import sys

from pos import record
from pos.journal import Journal, JournalFull


class RamDev:
    def __init__(self, blocks, bs=4096):
        self.bs = bs
        self.blocks = blocks
        self.buf = bytearray(blocks * bs)
        ff = b"\xff" * bs
        for i in range(blocks):
            self.buf[i * bs:(i + 1) * bs] = ff

    def readblocks(self, block, buf, off=0):
        o = block * self.bs + off
        buf[:] = self.buf[o:o + len(buf)]

    def writeblocks(self, block, buf, off=0):
        o = block * self.bs + off
        self.buf[o:o + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.bs
        if op == 6:
            self.buf[arg * self.bs:(arg + 1) * self.bs] = b"\xff" * self.bs
            return 0
        return None


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
