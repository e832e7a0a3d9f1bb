# One step of the power-cut sweep (driven by tests/test_journal_powercut.py).
#
# A step is one process: it first checks the image the previous step's
# process left behind when it was killed (POS_STEP_VERIFY=1), then copies
# the base image and runs the journal workload on a device that SIGKILLs
# this process at program/erase op POS_FLASH_CUT_AT (flash.from_env).  What
# the outside world was told (ids handed back, cursors persisted) goes to an
# unbuffered log on the host file system, which the cut does not touch.
#
# Env: POS_TEST_TMP (work dir), POS_STEP=base|run, POS_STEP_VERIFY=1,
# POS_FLASH_CUT_AT / _MODE / _TORN (see boards/unix/flash.py).
import os

import flash
from pos.journal import Journal

TMP = os.getenv("POS_TEST_TMP") or "/tmp"
BASE = TMP + "/base.img"
WORK = TMP + "/work.img"
LOG = TMP + "/acks.log"
BLOCKS = 6  # 4 ring blocks + 2 cursor blocks, 2 KB each: the workload wraps both
BS = 2048
PRELOAD = 166  # acknowledged one by one: 164 cursor frames, the first cursor block nearly full


def rec(i):
    # Varied sizes so frames end anywhere in a block.
    n = 20 + (i * 97) % 180
    b = bytearray(n)
    for k in range(n):
        b[k] = (i * 31 + k) & 0xFF
    return bytes(b)


def copy(src, dst):
    buf = bytearray(4096)
    with open(src, "rb") as s, open(dst, "wb") as d:
        while True:
            n = s.readinto(buf)
            if not n:
                break
            d.write(memoryview(buf)[:n])


def make_base():
    for p in (BASE, WORK, LOG):
        try:
            os.remove(p)
        except OSError:
            pass
    dev = flash.FlashDevice(BASE, BLOCKS, BS, strict=True)
    j = Journal(dev)
    j.open()
    for i in range(PRELOAD):
        j.append(rec(i))
        if i >= 2:
            j.mark_uploaded(i - 1)
        j.prepare()
    dev.close()


def run():
    copy(BASE, WORK)
    log = open(LOG, "w")

    def note(*a):
        log.write(" ".join(str(x) for x in a) + "\n")

    dev = flash.from_env(WORK, BLOCKS, BS, strict=True)
    j = Journal(dev)
    j.open()
    note("N", j.next_rid(), j.cursor())
    for i in range(300, 360):
        note("S", j.next_rid(), i)  # in flight
        rid = j.append(rec(i))
        note("A", rid, i)  # the till would now print APPROVED
        if i % 5 == 4:
            note("T", rid - 2)
            j.mark_uploaded(rid - 2)
            note("C", rid - 2)
        j.prepare()  # idle: erases the next block once it is uploaded
    log.close()
    # The workload did what the sweep is for: wrapped the ring, moved the cursor.
    assert dev.erases >= 4 and j._cblk == j.ring + 1, (dev.erases, j._cblk)
    print("COMPLETED", dev.ops, dev.violations)


def verify():
    base_next = cursor = cursor_try = 0
    acked = {}
    sent = {}
    with open(LOG) as f:
        for line in f:
            p = line.split()
            if p[0] == "N":
                base_next, cursor = int(p[1]), int(p[2])
                cursor_try = cursor
            elif p[0] == "S":
                sent[int(p[1])] = rec(int(p[2]))
            elif p[0] == "A":
                acked[int(p[1])] = rec(int(p[2]))
            elif p[0] == "T":
                cursor_try = int(p[1])
            elif p[0] == "C":
                cursor = int(p[1])
    torn = os.getenv("POS_FLASH_CUT_TORN") == "1"
    # Strict even after a torn op: the journal must never program flash it
    # has not erased, whatever a cut left behind.
    dev = flash.FlashDevice(WORK, BLOCKS, BS, strict=True)
    j = Journal(dev)
    report = j.open()
    # A dropped op leaves nothing to report; a torn one at most the one
    # frame, header or block it was writing or erasing.
    assert report == [] or (torn and len(report) == 1), report
    cur = j.cursor()
    assert cursor <= cur <= max(cursor, cursor_try), ("cursor", cur, cursor, cursor_try)
    got = {}
    prev = 0
    for rid, r in j.records():
        assert rid > prev, ("order", rid)
        prev = rid
        got[rid] = r
    for rid, r in acked.items():
        if rid > cur:  # the host may already have (and we deleted) older ones
            assert got.get(rid) == r, ("lost acknowledged record", rid)
    in_flight = max(list(acked) + [base_next - 1]) + 1
    for rid, r in got.items():
        if rid <= PRELOAD:
            assert r == rec(rid - 1), ("preload damaged", rid)
        elif rid in acked:
            assert r == acked[rid], ("acknowledged record changed", rid)
        else:
            # Only the record in flight may show up, and only whole.
            assert rid == in_flight, ("unexpected record", rid)
            assert r == sent.get(rid), ("partial record", rid)
    assert j.pending() == len([r for r in got if r > cur]), "pending"
    rid = j.append(b"after-the-cut")
    assert rid > max(list(got) + list(acked) + [cur]), ("id reused", rid)
    last = None
    for last in j.records(rid):
        pass
    assert last == (rid, b"after-the-cut"), last
    assert dev.violations == 0
    dev.close()
    print("VERIFIED", len(got), "records, cursor", cur, "in-flight present", in_flight in got)


step = os.getenv("POS_STEP")
if step == "base":
    make_base()
    print("BASE")
else:
    if os.getenv("POS_STEP_VERIFY") == "1":
        verify()
    if step == "run":
        run()
