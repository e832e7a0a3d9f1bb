"""Append-only payment journal on a littlefs directory.

The app approves a payment only after `append()` has returned: by then the
record is committed to flash.  A power cut at any instant leaves every record
either whole or absent.

Layout of `dirpath` (the journal never mounts anything; it only creates its
own directory):

    0000002a.seg   segment file; the name is the hex rid its first record has
                   (or will have, if the file is still empty)
    cursor         upload cursor: last rid the host has acknowledged
    cursor.tmp     a cursor write that was cut short; ignored and removed

Segment = a sequence of frames, little-endian:

    off size
     0   1   magic 0xA5
     1   1   version 1
     2   2   payload length n (<= MAX_RECORD)
     4   4   record id (u32)
     8   4   CRC-32 (binascii.crc32, zip polynomial) of bytes 0..7 + payload
    12   n   payload (opaque bytes, encoded by the app)

Cursor file: b"CUR1", u32 rid, u32 CRC-32 of the first 8 bytes.

Durability: append() opens the newest segment for append, writes header and
payload, and closes it.  littlefs is copy-on-write and commits a file's new
size and blocks only at close/sync, so after a power cut the file reads back
as it was before or after the append, never in between.  The length + CRC
framing is a second line of defence (bit rot, an image written by something
else, a future file system): open() verifies every frame, stops a segment at
its first bad frame and reports what it dropped.  A segment with a dropped
tail is never appended to again: new records go to a fresh segment so they
can not hide behind garbage.

Record ids: assigned by the journal, u32, strictly increasing, starting at 1,
never reused for a record that was ever acknowledged.  A record whose append()
did not return (power cut) may be absent, and then its id is handed out
again: nobody was told about it.  After a dropped tail in the newest segment
the journal skips ids (one per HEADER bytes dropped, plus one) so a record
lost to corruption can never share an id with a new one: ids may have gaps.

Upload cursor: mark_uploaded(rid) persists "every record <= rid is on the
host" atomically (write cursor.tmp, then rename over cursor: a littlefs
rename is atomic).  Segments whose records are all uploaded are deleted;
the newest segment is always kept, so the next id survives.

Checksum choice: binascii.crc32.  It is in every ESP32 build
(MICROPY_PY_BINASCII_CRC32 follows the EXTRA_FEATURES ROM level the esp32
port uses) and costs far less than sha256; the threat here is torn writes
and bit rot, not forgery (the payload carries its own signature).  A small
pure-Python CRC-32 stands in on a build without it, same values.
"""
from micropython import const
import os
import struct

try:
    from binascii import crc32 as _crc32
except ImportError:  # build without MICROPY_PY_BINASCII_CRC32
    _crc32 = None

MAX_RECORD = const(1536)  # the app's records reach 1400 bytes (app.RECORD_MAX)
HEADER = const(12)
SEGMENT_SIZE = const(32768)
RESERVE = const(16384)

_MAGIC = const(0xA5)
_VERSION = const(1)
_U32_MAX = const(0xFFFFFFFF)
_BATCH = const(2048)  # payload bytes records() buffers per file open
_RECHECK = const(32)  # appends between real free-space checks
_ENOENT = const(2)
_EEXIST = const(17)
_ENOSPC = const(28)
_S_IFDIR = const(0x4000)

_SEG_SUFFIX = ".seg"
_CURSOR = "cursor"
_CURSOR_TMP = "cursor.tmp"
_CURSOR_MAGIC = b"CUR1"

# Segment bookkeeping lives in small lists indexed by these.
_FIRST = const(0)  # rid in the file name
_SIZE = const(1)  # bytes in the file
_GOOD = const(2)  # bytes of valid frames from the start
_COUNT = const(3)  # valid records
_LAST = const(4)  # rid of the last valid record (FIRST - 1 when empty)


class JournalError(Exception):
    pass


class JournalFull(JournalError):
    # Flash is nearly full: decline new payments, never lose old ones.
    pass


class RecordTooLarge(JournalError):
    pass


class JournalIOError(JournalError):
    # The file system failed; args[1] is the OSError errno.
    pass


def crc32(data, crc=0):
    if _crc32 is not None:
        return _crc32(data, crc)
    crc ^= _U32_MAX
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0xEDB88320 & -(crc & 1))
    return crc ^ _U32_MAX


def _errno(e):
    return e.args[0] if e.args else 0


class Journal:
    def __init__(self, dirpath, segment_size=SEGMENT_SIZE, reserve=RESERVE):
        self.dir = dirpath.rstrip("/")
        self.segment_size = segment_size
        self.reserve = reserve
        self.report = []
        self._segs = []
        self._next = 1
        self._cursor = 0
        self._pending = 0
        self._open = False
        self._free = 0
        self._since_check = 0
        self._block = 4096
        self._dropped = 0
        self.read_errors = 0
        self._hdr = bytearray(HEADER)
        self._hmv = memoryview(self._hdr)
        self._buf = bytearray(MAX_RECORD)
        self._bmv = memoryview(self._buf)

    # -- paths ----------------------------------------------------------------

    def _path(self, name):
        return self.dir + "/" + name

    def _seg_path(self, first):
        return "%s/%08x%s" % (self.dir, first, _SEG_SUFFIX)

    # -- open / recovery ------------------------------------------------------

    def open(self):
        """Scan and recover.  Returns (and keeps in .report) a list of
        (file name, offset, bytes dropped, reason) for everything discarded;
        an empty list means the journal was clean."""
        self.report = []
        self._segs = []
        self._dropped = 0
        try:
            st = os.stat(self.dir)
            if not st[0] & _S_IFDIR:
                raise JournalError("not a directory", self.dir)
        except OSError as e:
            if _errno(e) != _ENOENT:
                raise JournalIOError("stat", _errno(e))
            self._mkdir()
        try:
            os.remove(self._path(_CURSOR_TMP))
        except OSError:
            pass  # normally absent: only a cut cursor write leaves it
        self._cursor = self._read_cursor()
        firsts = []
        try:
            for ent in os.ilistdir(self.dir):
                name = ent[0]
                if len(name) == 12 and name.endswith(_SEG_SUFFIX):
                    try:
                        firsts.append(int(name[:8], 16))
                    except ValueError:
                        self.report.append((name, 0, 0, "bad-name"))
        except OSError as e:
            raise JournalIOError("listdir", _errno(e))
        firsts.sort()
        prev = 0
        pending = 0
        for first in firsts:
            seg = self._scan(first, prev)
            self._segs.append(seg)
            if seg[_COUNT]:
                prev = seg[_LAST]
            pending += self._count_after(seg, self._cursor)
        self._pending = pending
        nxt = prev + 1
        if self._segs:
            newest = self._segs[-1]
            if newest[_FIRST] > nxt:
                nxt = newest[_FIRST]
            lost = newest[_SIZE] - newest[_GOOD]
            if lost:
                # Unknown records may have been in the dropped bytes: never
                # give their ids to new records.
                nxt += lost // HEADER + 1
        if self._cursor + 1 > nxt:
            nxt = self._cursor + 1
        self._next = nxt
        self._open = True
        self._refresh_free()
        self._gc()
        return self.report

    def _mkdir(self):
        # Creates only the last path component; the parent (the mount) exists.
        try:
            os.mkdir(self.dir)
        except OSError as e:
            if _errno(e) != _EEXIST:
                raise JournalIOError("mkdir", _errno(e))

    def _read_cursor(self):
        b = self._hdr
        try:
            with open(self._path(_CURSOR), "rb") as f:
                n = f.readinto(self._hmv)
        except OSError as e:
            if _errno(e) != _ENOENT:
                self.report.append((_CURSOR, 0, 0, "unreadable"))
            return 0
        if n != HEADER or b[0:4] != _CURSOR_MAGIC or \
                struct.unpack_from("<I", b, 8)[0] != crc32(b[0:8]):
            # Re-uploading is safe (the host dedupes by rid); skipping is not.
            self.report.append((_CURSOR, 0, n, "bad-cursor"))
            return 0
        return struct.unpack_from("<I", b, 4)[0]

    def _read_header(self, f, first, prev):
        # Reads one frame header at the current position.  Returns (rid, n),
        # None at a clean end of file, or a reason string for a bad frame.
        got = f.readinto(self._hmv)
        if not got:
            return None
        if got != HEADER:
            return "short-header"
        magic, ver, n, rid = struct.unpack_from("<BBHI", self._hdr, 0)
        if magic != _MAGIC or ver != _VERSION:
            return "bad-magic"
        if n > MAX_RECORD:
            return "bad-length"
        if rid < first or rid <= prev:
            return "bad-rid"
        return rid, n

    def _read_body(self, f, n):
        # Payload into the shared buffer, checked against the header's CRC
        # (the header must still be in self._hdr).  Returns a reason or None.
        body = self._bmv[:n]
        if f.readinto(body) != n:
            return "short-payload"
        if crc32(body, crc32(self._hmv[:8])) != struct.unpack_from("<I", self._hdr, 8)[0]:
            return "bad-crc"
        return None

    def _scan(self, first, prev):
        name = "%08x%s" % (first, _SEG_SUFFIX)
        seg = [first, 0, 0, 0, first - 1]
        good = 0
        reason = None
        try:
            seg[_SIZE] = os.stat(self._seg_path(first))[6]
            with open(self._seg_path(first), "rb") as f:
                while True:
                    r = self._read_header(f, first, prev)
                    if r is None:
                        break
                    if not isinstance(r, tuple):
                        reason = r
                        break
                    reason = self._read_body(f, r[1])
                    if reason is not None:
                        break
                    prev = r[0]
                    good += HEADER + r[1]
                    seg[_COUNT] += 1
                    seg[_LAST] = prev
        except OSError:
            reason = "unreadable"
        seg[_GOOD] = good
        if reason is not None or good != seg[_SIZE]:
            dropped = seg[_SIZE] - good
            self._dropped += dropped
            self.report.append((name, good, dropped, reason or "trailing"))
        return seg

    def _count_after(self, seg, rid):
        # Records in seg with id > rid; reads headers only when rid falls
        # inside the segment.
        if seg[_COUNT] == 0 or seg[_LAST] <= rid:
            return 0
        if seg[_FIRST] > rid:
            return seg[_COUNT]
        n = 0
        try:
            with open(self._seg_path(seg[_FIRST]), "rb") as f:
                off = 0
                prev = 0
                while off < seg[_GOOD]:
                    r = self._read_header(f, seg[_FIRST], prev)
                    if not isinstance(r, tuple):
                        break
                    f.seek(r[1], 1)
                    prev = r[0]
                    off += HEADER + r[1]
                    if prev > rid:
                        n += 1
        except OSError as e:
            raise JournalIOError("read", _errno(e))
        return n

    def _check(self):
        if not self._open:
            raise JournalError("journal not open")

    # -- free space -----------------------------------------------------------

    def _refresh_free(self):
        try:
            st = os.statvfs(self.dir)
        except OSError as e:
            raise JournalIOError("statvfs", _errno(e))
        self._block = st[0]
        self._free = st[0] * st[3]
        self._since_check = 0

    def _ensure_space(self, need):
        # Cheap estimate between real checks (statvfs walks the whole
        # littlefs tree); a real check whenever the estimate gets close.
        if self._free - need < self.reserve or self._since_check >= _RECHECK:
            self._refresh_free()
            if self._free - need < self.reserve:
                raise JournalFull(self._free)
        # Copy-on-write: an append can cost its bytes plus one block.
        self._free -= need + self._block
        self._since_check += 1

    # -- append ---------------------------------------------------------------

    def append(self, record):
        """Store one record; returns its id once it is committed to flash."""
        self._check()
        n = len(record)
        if n > MAX_RECORD:
            raise RecordTooLarge(n)
        rid = self._next
        if rid > _U32_MAX:
            raise JournalFull("record ids exhausted")
        frame = HEADER + n
        segs = self._segs
        seg = segs[-1] if segs else None
        if seg is None or seg[_GOOD] != seg[_SIZE] or \
                (seg[_SIZE] and seg[_SIZE] + frame > self.segment_size):
            seg = None
        self._ensure_space(frame)
        h = self._hdr
        struct.pack_into("<BBHI", h, 0, _MAGIC, _VERSION, n, rid)
        struct.pack_into("<I", h, 8, crc32(record, crc32(self._hmv[:8])))
        first = rid if seg is None else seg[_FIRST]
        try:
            f = open(self._seg_path(first), "ab")
            try:
                w = f.write(h)
                w += f.write(record)
            finally:
                f.close()  # the littlefs commit point
        except OSError as e:
            self._after_failed_append(seg, first)
            if _errno(e) == _ENOSPC:
                raise JournalFull("no space")
            raise JournalIOError("append", _errno(e))
        if w != frame:
            self._after_failed_append(seg, first)
            raise JournalIOError("short write", w)
        if seg is None:
            seg = [first, 0, 0, 0, first - 1]
            segs.append(seg)
        seg[_SIZE] += frame
        seg[_GOOD] += frame
        seg[_COUNT] += 1
        seg[_LAST] = rid
        self._next = rid + 1
        self._pending += 1
        return rid

    def _after_failed_append(self, seg, first):
        # What is on flash now is unknown: rescan that segment so that the
        # next append starts a fresh one if it holds anything unexpected.
        segs = self._segs
        if seg is None:
            prev = segs[-1][_LAST] if segs else 0
        else:
            segs.pop()
            prev = segs[-1][_LAST] if segs else 0
        try:
            os.stat(self._seg_path(first))
        except OSError:
            if seg is not None:
                segs.append(seg)
            return  # a new segment that was never created
        fresh = self._scan(first, prev)
        segs.append(fresh)
        if fresh[_COUNT] and fresh[_LAST] >= self._next:
            # The append landed after all (only close() failed, say).
            self._pending += fresh[_LAST] - self._next + 1
            self._next = fresh[_LAST] + 1
        if fresh[_SIZE] != fresh[_GOOD]:
            self._next += (fresh[_SIZE] - fresh[_GOOD]) // HEADER + 1

    # -- reading --------------------------------------------------------------

    def records(self, from_rid=1):
        """Yield (rid, bytes) for every stored record with id >= from_rid, in
        order.  Memory stays bounded (a few KiB) whatever the journal size;
        no file is held open between yields, so the caller may append or
        mark_uploaded while iterating."""
        self._check()
        last = from_rid - 1
        while True:
            seg = None
            for s in self._segs:
                if s[_COUNT] and s[_LAST] > last:
                    seg = s
                    break
            if seg is None:
                return
            batch = self._read_batch(seg, last)
            if not batch:
                # Unreadable now (bit rot since open): skip the rest of it.
                last = seg[_LAST]
                continue
            for item in batch:
                last = item[0]
                yield item

    def _read_batch(self, seg, last):
        # Up to _BATCH payload bytes of records after `last`, read with the
        # file open and returned after it is closed.
        out = []
        total = 0
        prev = 0
        try:
            with open(self._seg_path(seg[_FIRST]), "rb") as f:
                off = 0
                while off < seg[_GOOD] and total < _BATCH:
                    r = self._read_header(f, seg[_FIRST], prev)
                    if not isinstance(r, tuple):
                        self.read_errors += 1
                        break
                    rid, n = r
                    if rid > last:
                        if self._read_body(f, n) is not None:
                            self.read_errors += 1
                            break
                        out.append((rid, bytes(self._bmv[:n])))
                        total += n + HEADER
                    else:
                        f.seek(n, 1)
                    prev = rid
                    off += HEADER + n
        except OSError:
            # Deleted by mark_uploaded between batches, or unreadable.
            pass
        return out

    # -- upload cursor ----------------------------------------------------------

    def cursor(self):
        """Id of the last record the host has acknowledged (0: none)."""
        return self._cursor

    def next_rid(self):
        """Id the next append() will return (unless a power cut intervenes)."""
        return self._next

    def pending(self):
        """Number of stored records not yet acknowledged by the host."""
        return self._pending

    def mark_uploaded(self, upto_rid):
        """Persist that every record with id <= upto_rid is on the host, then
        delete segments that hold nothing else.  Idempotent."""
        self._check()
        if upto_rid <= self._cursor:
            return
        if upto_rid >= self._next:
            raise JournalError("rid not issued", upto_rid)
        b = self._hdr
        b[0:4] = _CURSOR_MAGIC
        struct.pack_into("<I", b, 4, upto_rid)
        struct.pack_into("<I", b, 8, crc32(self._hmv[:8]))
        tmp = self._path(_CURSOR_TMP)
        try:
            with open(tmp, "wb") as f:
                f.write(b)
            os.rename(tmp, self._path(_CURSOR))
        except OSError as e:
            raise JournalIOError("cursor", _errno(e))
        pending = 0
        for s in self._segs:
            pending += self._count_after(s, upto_rid)
        self._pending = pending
        self._cursor = upto_rid
        self._gc()

    def _gc(self):
        segs = self._segs
        freed = False
        while len(segs) > 1 and segs[0][_LAST] <= self._cursor:
            try:
                os.remove(self._seg_path(segs[0][_FIRST]))
            except OSError as e:
                if _errno(e) != _ENOENT:
                    raise JournalIOError("remove", _errno(e))
            segs.pop(0)
            freed = True
        if freed:
            self._refresh_free()

    # -- introspection ----------------------------------------------------------

    def stats(self):
        self._check()
        self._refresh_free()
        size = count = 0
        for s in self._segs:
            size += s[_SIZE]
            count += s[_COUNT]
        return {
            "records": count,
            "pending": self._pending,
            "cursor": self._cursor,
            "next_rid": self._next,
            "segments": len(self._segs),
            "bytes": size,
            "dropped": self._dropped,
            "free": self._free,
            "reserve": self.reserve,
        }

    def close(self):
        self._open = False
