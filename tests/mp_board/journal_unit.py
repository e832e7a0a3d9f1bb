# Journal behaviour on the emulated NOR chip (boards/unix/flash.py), strict:
# programming a bit from 0 back to 1 raises, so these tests also prove the
# journal only ever programs erased flash. Run by tests/test_journal.py with
# boards/unix on MICROPYPATH.
import os
import random
import struct
import time
from binascii import crc32

import flash
import unit
from pos.journal import Journal, JournalFull, RecordTooLarge, JournalError, MAX_RECORD

TMP = os.getenv("POS_TEST_TMP") or "/tmp"
IMG = TMP + "/journal_test.img"
BS = 4096

_dev = None


def fresh(blocks=16):
    global _dev
    close()
    try:
        os.remove(IMG)
    except OSError:
        pass
    _dev = flash.FlashDevice(IMG, blocks, strict=True)
    return _dev


def reboot(blocks=16):
    # Forget every in-memory state; the same flash, a new device object.
    global _dev
    close()
    _dev = flash.FlashDevice(IMG, blocks, strict=True)
    return _dev


def close():
    global _dev
    if _dev is not None:
        assert _dev.violations == 0
        _dev.close()
        _dev = None


def opened(blocks=None):
    j = Journal(_dev if blocks is None else reboot(blocks))
    j.open()
    return j


def rec(i, n=None):
    n = 1 + (i * 37) % 300 if n is None else n
    return bytes((i + k) & 0xFF for k in range(n))


def peek(block, off, n):
    b = bytearray(n)
    _dev.readblocks(block, b, off)
    return bytes(b)


def poke(block, off, data):
    # Bit rot / foreign writes: straight into the image, any bit either way.
    with open(IMG, "r+b") as f:
        f.seek(block * BS + off)
        f.write(data)


def frame(rid, payload, magic=0xA5):
    h = bytearray(struct.pack("<BBHI", magic, 1, len(payload), rid))
    return bytes(h) + struct.pack("<I", crc32(payload, crc32(h))) + payload


def block_header(seq, base):
    h = b"PJL1" + struct.pack("<II", seq, base)
    return h + struct.pack("<I", crc32(h))


def test_append_iterate_restart():
    fresh()
    j = opened()
    assert j.next_rid() == 1 and j.pending() == 0
    for i in range(10):
        assert j.append(rec(i)) == i + 1
    assert list(j.records()) == [(i + 1, rec(i)) for i in range(10)]
    j = opened(16)
    assert j.report == []
    assert list(j.records()) == [(i + 1, rec(i)) for i in range(10)]
    assert j.next_rid() == 11 and j.pending() == 10
    assert list(j.records(8)) == [(8, rec(7)), (9, rec(8)), (10, rec(9))]
    close()


def test_max_record_and_too_large():
    fresh()
    j = opened()
    big = bytes(range(256)) * 6
    assert len(big) == MAX_RECORD
    assert j.append(big) == 1
    unit.raises(RecordTooLarge, j.append, big + b"x")
    assert j.append(b"") == 2
    assert list(j.records()) == [(1, big), (2, b"")]
    close()


def test_not_open():
    fresh()
    j = Journal(_dev)
    unit.raises(JournalError, j.append, b"x")
    unit.raises(JournalError, j.prepare)
    close()


def test_frame_format_is_documented_one():
    fresh()
    j = opened()
    j.append(b"abc")
    assert peek(0, 0, 16 + 15) == block_header(1, 1) + frame(1, b"abc")
    assert peek(0, 31, 8) == b"\xff" * 8
    j.mark_uploaded(1)
    assert peek(14, 0, 12) == frame(1, b"", magic=0xC5)  # cursor block 0: the 2nd-last
    close()


def test_blocks_fill_in_order_and_prepare_keeps_erases_out_of_append():
    fresh()
    j = opened()
    assert j.prepare()  # block 0 was fresh: nothing to erase, already ready
    r = rec(1, 1000)  # 1012-byte frames: 4 per 4 KB block
    erases = []
    for i in range(12):
        e = _dev.erases
        p = _dev.programs
        j.append(r)
        erases.append(_dev.erases - e)
        # One program op per append, two when it opens a block (its header).
        assert _dev.programs - p == (2 if i % 4 == 0 else 1), (i, _dev.programs - p)
        j.prepare()  # idle work after each tap
    assert erases == [0] * 12, erases
    assert [peek(b, 0, 16) for b in range(3)] == [block_header(1, 1), block_header(2, 5),
                                                 block_header(3, 9)]
    assert [rid for rid, _ in j.records(6)] == [6, 7, 8, 9, 10, 11, 12]
    close()


def test_upload_cursor_persists_and_blocks_are_reused():
    fresh(6)  # 4 ring blocks + 2 cursor blocks
    j = opened()
    r = rec(3, 1000)
    for _ in range(12):
        j.append(r)
    j.mark_uploaded(5)
    assert j.cursor() == 5 and j.pending() == 7
    j = opened(6)
    assert j.cursor() == 5 and j.pending() == 7 and j.next_rid() == 13
    assert [rid for rid, _ in j.records()][0] == 1  # uploaded but not erased yet
    # Fill the ring: block 3 takes 13-16, block 0 (1-4, uploaded) is reused
    # for 17-20, block 1 (5-8) is not uploaded.
    for _ in range(8):
        j.prepare()
        j.append(r)
    assert not j.prepare()
    unit.raises(JournalFull, j.append, r)
    unit.raises(JournalFull, j.append, r)  # and again: nothing changed
    assert [rid for rid, _ in j.records()] == list(range(5, 21))
    j.mark_uploaded(8)
    assert j.prepare()
    assert j.append(r) == 21
    j = opened(6)
    assert j.cursor() == 8 and [rid for rid, _ in j.records()] == list(range(9, 22))
    # Everything uploaded and erased: ids keep counting.
    j.mark_uploaded(21)
    for _ in range(8):
        j.prepare()
        j.append(r)
    j = opened(6)
    assert j.next_rid() == 30 and j.pending() == 8
    close()


def test_cursor_blocks_alternate_and_survive_reboots():
    fresh(5)
    j = opened()
    # 341 cursor frames fit a 4 KB block: 800 acks cross into the other twice.
    for i in range(1, 801):
        j.append(b"r%d" % i)
        j.mark_uploaded(i)
        if i % 4 == 0:
            j.prepare()
        if i in (340, 341, 342, 682, 683):
            k = opened(5)
            assert k.cursor() == i and k.next_rid() == i + 1 and k.report == [], (i, k.report)
            j = k
    assert j.cursor() == 800 and j.pending() == 0
    close()


def test_uploading_while_iterating():
    fresh(8)
    j = opened()
    for i in range(20):
        j.append(rec(i, 700))
    seen = []
    for rid, payload in j.records():
        assert payload == (b"during" if rid == 21 else rec(rid - 1, 700)), rid
        seen.append(rid)
        j.mark_uploaded(rid)
        j.prepare()  # may erase a block already read
        if rid == 10:
            assert j.append(b"during") == 21
    # A record appended meanwhile may or may not be yielded; nothing else differs.
    assert seen == list(range(1, 21 + (seen[-1] == 21))), seen
    assert j.pending() == 21 - seen[-1]
    close()


def test_corrupt_newest_cursor_means_reupload_not_loss():
    fresh()
    j = opened()
    for i in range(5):
        j.append(rec(i))
    j.mark_uploaded(2)
    j.mark_uploaded(4)
    poke(14, 12 + 9, b"\x00")  # rot in the second cursor frame's CRC
    j = opened(16)
    assert j.cursor() == 2 and j.pending() == 3
    assert j.report == [("cursor 0", 12, 0, "bad-crc")], j.report
    j.mark_uploaded(4)  # lands in the other cursor block: this one has a bad tail
    j = opened(16)
    assert j.cursor() == 4 and j.pending() == 1
    close()


def test_stats():
    fresh(8)
    j = opened()
    for i in range(9):
        j.append(rec(i, 1000))
    j.mark_uploaded(4)
    st = j.stats()
    assert st["records"] == 9 and st["pending"] == 5 and st["cursor"] == 4, st
    assert st["next_rid"] == 10 and st["blocks"] == 6 and st["blocks_used"] == 3, st
    assert st["bytes"] == 9 * 1012 and st["dropped"] == 0, st
    # Block 0 is uploaded (free), blocks 3-5 empty, the head has 4096-16-1012 left.
    assert st["free"] == 4 * 4080 + 4096 - 16 - 1012, st
    close()


class Failing:
    # A device whose next program fails with EIO after `ok` more succeed.
    def __init__(self, dev, ok):
        self.dev = dev
        self.ok = ok

    def readblocks(self, *a):
        self.dev.readblocks(*a)

    def writeblocks(self, block, buf, off=None):
        if self.ok == 0:
            self.ok = -1
            self.dev.writeblocks(block, memoryview(buf)[:len(buf) // 2], off)  # half lands
            raise OSError(5)
        self.ok -= 1
        self.dev.writeblocks(block, buf, off)

    def ioctl(self, op, arg):
        return self.dev.ioctl(op, arg)


def test_failed_program_is_an_io_error_and_loses_nothing():
    fresh()
    j = Journal(Failing(_dev, 3))  # block header + 2 records, then a failing program
    j.open()
    assert j.append(b"one") == 1 and j.append(b"two") == 2
    try:
        j.append(b"three")
        raise AssertionError("no error")
    except JournalError as e:
        assert e.args[0] == "append" and e.args[1] == 5, e.args
    # Nothing goes behind the half-written frame, and its id is never reused.
    rid = j.append(b"four")
    assert rid > 3 and peek(1, 0, 16) == block_header(2, rid), rid
    j = opened(16)
    assert [r for r, _ in j.records()] == [1, 2, rid]
    assert j.report == [("block 0", 16 + 2 * 15, 17 // 2, "bad-crc")], j.report
    close()


# -- corrupt flash --------------------------------------------------------------


def test_torn_tail_dropped_and_reported():
    cases = [
        (frame(4, b"hello")[:7], "bad-crc"),  # cut in the header: the CRC is still erased
        (frame(4, b"hello")[:14], "bad-crc"),
        (frame(4, b"hello")[:-1] + b"X", "bad-crc"),
        (frame(4, b"hello", magic=0x5A), "bad-magic"),
        (frame(2, b"hello"), "bad-rid"),
        (b"\xa5\x01\xff\x7f" + b"\x00" * 8, "bad-length"),
        (b"\xff" * 40 + b"\x00", "trailing"),  # an erased-looking start, bits set further on
    ]
    for tail, why in cases:
        fresh()
        j = opened()
        for i in range(3):
            j.append(rec(i, 50))
        end = 16 + 3 * 62
        _dev.writeblocks(0, tail, end)
        j = opened(16)
        assert j.report == [("block 0", end, len(tail), why)], (why, j.report)
        assert [r for r, _ in j.records()] == [1, 2, 3]
        # New records never go behind the garbage, and skip ids that the
        # garbage might have held.
        rid = j.append(b"new")
        assert rid > 4 and peek(1, 0, 16) == block_header(2, rid), (why, rid)
        assert [r for r, _ in opened(16).records()] == [1, 2, 3, rid]
    close()


def test_corruption_in_middle_block_keeps_later_ones():
    fresh()
    j = opened()
    for i in range(20):
        j.append(rec(i, 988))  # 1000-byte frames, 4 per block
    poke(1, 16 + 1000 + 100, b"\x00")  # rot in block 1's 2nd frame (rid 6)
    j = opened(16)
    assert j.report == [("block 1", 1016, 3000, "bad-crc")], j.report
    rids = [r for r, _ in j.records()]
    assert rids == [1, 2, 3, 4, 5] + list(range(9, 21)), rids
    assert j.append(b"x") == 21  # the newest block was clean: no skip
    assert j.pending() == 18
    close()


def test_cut_erase_or_header_program_is_reported_and_reused():
    fresh(6)
    j = opened()
    for i in range(8):
        j.append(rec(i, 1000))
    j.mark_uploaded(8)
    poke(0, 0, b"PJL1\x00")  # block 0's erase was cut: garbage, no valid header
    j = opened(6)
    assert j.report == [("block 0", 0, 4096, "bad-header")], j.report
    assert j.cursor() == 8 and j.next_rid() == 9
    for i in range(12):
        j.prepare()
        j.append(b"again")
    assert [r for r, _ in opened(6).records()][-1] == 20
    close()


def test_foreign_data_is_refused_not_erased():
    fresh()
    poke(5, 100, b"littlefs or anything else")
    unit.raises(JournalError, opened)
    assert peek(5, 100, 8) == b"littlefs"
    # A first block header cut short on a fresh chip is not foreign.
    fresh()
    poke(0, 0, b"PJL1\x01")
    j = opened()
    assert j.report == [("block 0", 0, 4096, "bad-header")]
    assert j.append(b"x") == 1
    close()


def test_random_garbage_never_raises_foreign_exceptions():
    random.seed(1234)
    for trial in range(40):
        fresh(6)
        j = opened()
        for r in range(1, 6):
            j.append(rec(r, 300 + random.getrandbits(9)))
        j.mark_uploaded(2)
        kind = trial % 4
        blk = random.getrandbits(8) % 6
        if kind == 0:  # noise anywhere
            poke(blk, random.getrandbits(12), bytes(random.getrandbits(8) for _ in range(40)))
        elif kind == 1:  # flipped bits in the written part
            for _ in range(1 + random.getrandbits(2)):
                off = random.getrandbits(11)
                b = peek(0, off, 1)[0] ^ (1 << random.getrandbits(3))
                poke(0, off, bytes([b]))
        elif kind == 2:  # a whole block of noise
            poke(blk, 0, bytes(random.getrandbits(8) for _ in range(BS)))
        else:  # a plausible header with nonsense frames behind it
            poke(2, 0, block_header(7, 3) + bytes(random.getrandbits(8) for _ in range(64)))
        j = Journal(reboot(6))
        try:
            j.open()
        except JournalError:
            continue  # refused as foreign: allowed, nothing was touched
        try:
            seen = [rid for rid, _ in j.records()]
            assert seen == sorted(seen) and len(set(seen)) == len(seen)
            j.prepare()
            rid = j.append(b"after")
            assert rid > max(seen + [j.cursor()])
            assert list(j.records(rid)) == [(rid, b"after")]
            j.mark_uploaded(rid)
        except JournalFull:
            pass
        except JournalError as e:
            raise AssertionError("trial %d: %r" % (trial, e))
    close()


# -- latency ----------------------------------------------------------------------


def test_append_latency():
    fresh(192)  # the emulated terminal's journal partition
    t = time.ticks_us()
    j = opened()
    d0 = time.ticks_diff(time.ticks_us(), t)
    r = rec(1, 300)
    n = 200
    t = time.ticks_us()
    for _ in range(n):
        j.append(r)
        j.prepare()
    dt = time.ticks_diff(time.ticks_us(), t)
    ops = _dev.ops
    t = time.ticks_us()
    k = 0
    for _ in j.records():
        k += 1
    dr = time.ticks_diff(time.ticks_us(), t)
    t = time.ticks_us()
    opened(192)
    do = time.ticks_diff(time.ticks_us(), t)
    print("BENCH append+prepare %d us/record (300 B), %d flash ops/record; records() %d us/record; "
          "open() %d us empty, %d us with %d records (192 blocks)" % (dt // n, ops // n, dr // k, d0, do, n))
    close()


unit.run(globals())
