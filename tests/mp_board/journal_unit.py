# Journal behaviour on real littlefs (vfs.VfsLfs2 on boards/unix/flash.py).
# Run by tests/test_journal.py with boards/unix on MICROPYPATH.
import os
import random
import time

import flash
import unit
from pos import journal
from pos.journal import Journal, JournalFull, RecordTooLarge, JournalError

TMP = os.getenv("POS_TEST_TMP") or "/tmp"
IMG = TMP + "/journal_test.img"
MNT = "/flash"
DIR = MNT + "/journal"

_dev = None


def fresh(blocks=64):
    global _dev
    unmount()
    try:
        os.remove(IMG)
    except OSError:
        pass
    _dev = flash.FlashDevice(IMG, blocks, strict=True)
    flash.mount(_dev, MNT)
    return _dev


def remount(blocks=64):
    # What a reboot does: forget every in-memory state, mount the image again.
    global _dev
    unmount()
    _dev = flash.FlashDevice(IMG, blocks, strict=True)
    flash.mount(_dev, MNT)
    return _dev


def unmount():
    global _dev
    if _dev is not None:
        flash.umount(MNT)
        assert _dev.violations == 0, "littlefs programmed over programmed bits"
        _dev.close()
        _dev = None


def rec(i, n=None):
    n = 1 + (i * 37) % 300 if n is None else n
    return bytes((i + k) & 0xFF for k in range(n))


def seg_files():
    return sorted(n for n in os.listdir(DIR) if n.endswith(".seg"))


def test_append_iterate_restart():
    fresh()
    j = Journal(DIR)
    assert j.open() == []
    ids = [j.append(rec(i)) for i in range(50)]
    assert ids == list(range(1, 51))
    assert j.append(b"") == 51  # empty payload is legal, the app decides
    assert [r for r in j.records()] == [(i + 1, rec(i)) for i in range(50)] + [(51, b"")]
    remount()
    j = Journal(DIR)
    assert j.open() == []
    assert j.next_rid() == 52 and j.pending() == 51
    assert list(j.records(49)) == [(49, rec(48)), (50, rec(49)), (51, b"")]
    assert j.append(b"x") == 52
    unmount()


def test_max_record_and_too_large():
    fresh()
    j = Journal(DIR)
    j.open()
    big = bytes(range(256)) * 6
    assert len(big) == journal.MAX_RECORD
    rid = j.append(big)
    unit.raises(RecordTooLarge, j.append, big + b"!")
    assert list(j.records()) == [(rid, big)]
    assert j.next_rid() == rid + 1  # a refused record costs no id
    unmount()


def test_not_open():
    fresh()
    j = Journal(DIR)
    unit.raises(JournalError, j.append, b"x")
    unit.raises(JournalError, j.mark_uploaded, 1)
    unmount()


def test_rotation_and_records_from_rid():
    fresh()
    j = Journal(DIR, segment_size=1024)
    j.open()
    for i in range(40):
        j.append(rec(i, 100))
    segs = seg_files()
    assert len(segs) == 5, segs  # 112-byte frames, 9 per 1 KiB segment
    # Names carry the first id of each segment.
    assert [int(s[:8], 16) for s in segs] == [1, 10, 19, 28, 37]
    for size in (os.stat(DIR + "/" + s)[6] for s in segs):
        assert size <= 1024
    for start in (1, 9, 10, 11, 37, 40, 41, 99):
        assert [r for r, _ in j.records(start)] == list(range(start, 41))
    unmount()


def test_upload_cursor_persists_and_deletes_uploaded_segments():
    fresh()
    j = Journal(DIR, segment_size=1024)
    j.open()
    for i in range(40):
        j.append(rec(i, 100))
    j.mark_uploaded(20)
    assert j.cursor() == 20 and j.pending() == 20
    # Segments 1..9 and 10..18 are fully uploaded; 19..27 still holds 21..27.
    assert [int(s[:8], 16) for s in seg_files()] == [19, 28, 37]
    j.mark_uploaded(20)  # idempotent
    j.mark_uploaded(5)  # going back is ignored
    assert j.cursor() == 20
    unit.raises(JournalError, j.mark_uploaded, 41)  # never issued
    assert "cursor.tmp" not in os.listdir(DIR)
    remount()
    j = Journal(DIR, segment_size=1024)
    assert j.open() == []
    assert j.cursor() == 20 and j.pending() == 20
    assert [r for r, _ in j.records(j.cursor() + 1)] == list(range(21, 41))
    # Everything uploaded: only the newest segment stays, ids keep counting.
    j.mark_uploaded(40)
    assert j.pending() == 0 and seg_files() == ["00000025.seg"]
    remount()
    j = Journal(DIR, segment_size=1024)
    j.open()
    assert j.append(b"next") == 41
    unmount()


def test_uploading_while_iterating():
    fresh()
    j = Journal(DIR, segment_size=512)
    j.open()
    for i in range(30):
        j.append(rec(i, 60))
    seen = []
    for rid, r in j.records(1):
        assert r == (rec(rid - 1, 60) if rid <= 30 else b"late")
        seen.append(rid)
        j.mark_uploaded(rid)  # deletes segments behind the reader
        if rid == 15:
            j.append(b"late")  # appended while iterating: still yielded
    assert seen == list(range(1, 32)), seen
    assert j.pending() == 0
    unmount()


def test_leftover_cursor_tmp_is_ignored():
    fresh()
    j = Journal(DIR)
    j.open()
    for i in range(5):
        j.append(rec(i))
    j.mark_uploaded(2)
    with open(DIR + "/cursor.tmp", "wb") as f:
        f.write(b"CUR1\x05\x00")  # a cursor write cut short
    remount()
    j = Journal(DIR)
    assert j.open() == []
    assert j.cursor() == 2 and "cursor.tmp" not in os.listdir(DIR)
    unmount()


def test_corrupt_cursor_means_reupload_not_loss():
    fresh()
    j = Journal(DIR)
    j.open()
    for i in range(5):
        j.append(rec(i))
    j.mark_uploaded(3)
    with open(DIR + "/cursor", "wb") as f:
        f.write(b"CUR1\x05\x00\x00\x00\x00\x00\x00\x00")
    remount()
    j = Journal(DIR)
    report = j.open()
    assert report == [("cursor", 0, 12, "bad-cursor")], report
    assert j.cursor() == 0 and j.pending() == 5
    unmount()


def test_journal_full_then_upload_frees_space():
    fresh(blocks=24)  # 96 KiB of flash
    j = Journal(DIR, segment_size=4096, reserve=16384)
    j.open()
    acked = []  # (rid, i): the records themselves would not fit in 128k
    try:
        for i in range(1000):
            acked.append((j.append(rec(i, 700)), i))
    except JournalFull:
        pass
    else:
        raise AssertionError("never full")
    assert len(acked) > 20, len(acked)
    st = j.stats()
    assert st["free"] >= 0 and st["pending"] == len(acked)
    unit.raises(JournalFull, j.append, b"y" * 700)  # still full, still refusing
    remount(24)
    j = Journal(DIR, segment_size=4096, reserve=16384)
    assert j.open() == []
    n = 0
    for rid, r in j.records():  # nothing lost on the way to full
        assert (rid, r) == (acked[n][0], rec(acked[n][1], 700)), rid
        n += 1
    assert n == len(acked)
    unit.raises(JournalFull, j.append, rec(0, 700))
    j.mark_uploaded(acked[-1][0])
    rid = j.append(b"after upload")
    assert rid == acked[-1][0] + 1
    unmount()


def test_stats():
    fresh()
    j = Journal(DIR, segment_size=1024)
    j.open()
    for i in range(12):
        j.append(rec(i, 88))  # 100-byte frames
    j.mark_uploaded(4)
    st = j.stats()
    assert st["records"] == 12 and st["pending"] == 8 and st["cursor"] == 4
    assert st["next_rid"] == 13 and st["segments"] == 2 and st["bytes"] == 1200
    assert st["dropped"] == 0 and st["free"] > 100000
    unmount()


# -- corrupt input --------------------------------------------------------------


def write_file(name, data):
    with open(DIR + "/" + name, "wb") as f:
        f.write(data)


def frame(rid, payload, magic=0xA5):
    import struct
    from binascii import crc32
    h = bytearray(struct.pack("<BBHI", magic, 1, len(payload), rid))
    return bytes(h) + struct.pack("<I", crc32(payload, crc32(h))) + payload


def test_frame_format_is_documented_one():
    fresh()
    j = Journal(DIR)
    j.open()
    j.append(b"abc")
    with open(DIR + "/00000001.seg", "rb") as f:
        assert f.read() == frame(1, b"abc")
    unmount()


def test_torn_tail_dropped_and_reported():
    fresh()
    j = Journal(DIR)
    j.open()
    for i in range(3):
        j.append(rec(i, 50))
    good = frame(1, rec(0, 50)) + frame(2, rec(1, 50)) + frame(3, rec(2, 50))
    cases = [
        (frame(4, b"hello")[:7], "short-header"),
        (frame(4, b"hello")[:14], "short-payload"),
        (frame(4, b"hello")[:-1] + b"X", "bad-crc"),
        (frame(4, b"hello", magic=0x5A), "bad-magic"),
        (frame(2, b"hello"), "bad-rid"),
        (b"\xa5\x01\xff\xff" + b"\x00" * 8, "bad-length"),
        (b"\xff" * 40, "bad-magic"),
    ]
    for tail, reason in cases:
        write_file("00000001.seg", good + tail)
        j = Journal(DIR)
        report = j.open()
        assert report == [("00000001.seg", len(good), len(tail), reason)], (reason, report)
        assert [r for r, _ in j.records()] == [1, 2, 3]
        # New records never go behind the garbage, and skip ids that the
        # garbage might have held.
        rid = j.append(b"new")
        assert rid > 4 and seg_files()[-1] == "%08x.seg" % rid, (rid, seg_files())
        assert [r for r, _ in j.records()] == [1, 2, 3, rid]
        os.remove(DIR + "/%08x.seg" % rid)
    unmount()


def test_corruption_in_middle_segment_keeps_later_ones():
    fresh()
    j = Journal(DIR, segment_size=512)
    j.open()
    for i in range(20):
        j.append(rec(i, 88))
    segs = seg_files()
    assert len(segs) >= 3
    name = segs[1]
    with open(DIR + "/" + name, "rb") as f:
        data = bytearray(f.read())
    data[120] ^= 0x40  # bit rot in the 2nd frame's payload
    write_file(name, data)
    j = Journal(DIR, segment_size=512)
    report = j.open()
    assert report == [(name, 100, len(data) - 100, "bad-crc")], report
    rids = [r for r, _ in j.records()]
    first = int(name[:8], 16)
    assert first in rids and first + 1 not in rids  # dropped from the bad frame on
    assert rids[-1] == 20  # later segments intact
    assert j.append(b"x") == 21  # the newest segment was clean: no skip
    unmount()


def test_random_garbage_never_raises_foreign_exceptions():
    fresh()
    os.mkdir(DIR)
    random.seed(1234)
    for trial in range(60):
        for n in os.listdir(DIR):
            os.remove(DIR + "/" + n)
        kind = trial % 4
        if kind == 0:  # pure noise
            data = bytes(random.getrandbits(8) for _ in range(random.getrandbits(9)))
        else:  # valid frames, then truncated / mutated
            data = bytearray()
            for r in range(1, 6):
                data += frame(r, rec(r, random.getrandbits(6)))
            if kind == 1:
                data = data[:random.getrandbits(8) % len(data)]
            elif kind == 2:
                for _ in range(1 + random.getrandbits(2)):
                    data[random.getrandbits(16) % len(data)] ^= 1 << random.getrandbits(3)
            else:
                data += bytes(random.getrandbits(8) for _ in range(30))
        write_file("00000001.seg", data)
        if trial % 3 == 0:
            write_file("cursor", bytes(random.getrandbits(8) for _ in range(trial % 14)))
        if trial % 5 == 0:
            write_file("zzzzzzzz.seg", b"junk")  # unparsable name
        j = Journal(DIR)
        try:
            report = j.open()
            seen = list(j.records())
            rid = j.append(b"after")
            assert list(j.records(rid)) == [(rid, b"after")]
            j.mark_uploaded(rid)
        except JournalError as e:
            raise AssertionError("trial %d: %r" % (trial, e))
        # What was kept plus what was reported dropped is the whole file.
        kept = sum(12 + len(r) for _, r in seen)
        dropped = sum(d for n, _, d, _ in report if n == "00000001.seg")
        assert kept + dropped == len(data), (trial, kept, dropped, len(data), report)
    unmount()


# -- latency ----------------------------------------------------------------------


def test_append_latency():
    fresh(256)
    j = Journal(DIR)
    j.open()
    r = rec(1, 200)
    n = 200
    t = time.ticks_us()
    for _ in range(n):
        j.append(r)
    dt = time.ticks_diff(time.ticks_us(), t)
    ops = _dev.ops
    t = time.ticks_us()
    k = 0
    for _ in j.records():
        k += 1
    dr = time.ticks_diff(time.ticks_us(), t)
    remount(256)
    j = Journal(DIR)
    t = time.ticks_us()
    j.open()
    do = time.ticks_diff(time.ticks_us(), t)
    print("BENCH append %d us/record (200 B), %d flash ops/record; records() %d us/record; open() %d us for %d records"
          % (dt // n, ops // n, dr // k, do, n))
    unmount()


unit.run(globals())
