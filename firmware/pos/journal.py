"""Append-only payment journal, a log on a raw flash partition.

The app approves a payment only after `append()` has returned: by then the
record is programmed into flash.  A power cut at any instant leaves every
record either whole or absent.

Why raw flash and not littlefs: littlefs is copy-on-write, so every durable
append to a file allocates a fresh 4 KB block, erases it and copies the old
tail into it: one erase (45 ms typical, up to 400 ms on a W25Q32) inside
every approved tap, and ~10x write amplification.  Here an append is one
program op into flash erased beforehand; erasing happens in `prepare()`,
which the app calls while idle.

The device is a block device with the extended protocol (readblocks /
writeblocks with a byte offset, ioctl 4/5/6), e.g. an `esp32.Partition`, or
the unix board's view of its emulated chip.  Its last two blocks hold the
upload cursor; the others form a ring of record blocks used in order.

Record block = a block header, then frames, then erased bytes (0xFF):

    off size  block header (16 bytes)
     0   4    magic b"PJL1"
     4   4    seq (u32): 1 for the first block ever opened, +1 for each next
     8   4    base: the journal's next record id when the block was opened
    12   4    CRC-32 of bytes 0..11

    off size  frame (little-endian), never split across blocks
     0   1    magic 0xA5 (record) or 0xC5 (cursor)
     1   1    version 1
     2   2    payload length n (<= MAX_RECORD; 0 for a cursor)
     4   4    record id (u32) -- for a cursor: every id <= it is uploaded
     8   4    CRC-32 (binascii.crc32, zip polynomial) of bytes 0..7 + payload
    12   n    payload (opaque bytes, encoded by the app)

Cursor blocks hold only cursor frames, from offset 0; the valid frame with
the highest id wins.  When the current one is full the other is erased and
written next, so the newest cursor is always on flash.

Durability: a frame is one program op.  A cut op leaves a frame whose CRC
fails; open() stops the block there and reports what it dropped, and a block
whose tail is not erased is never appended to again.  Block headers order
the ring after a reboot; a block is erased only when every record in it is
uploaded (id <= cursor), so the journal refuses new records (JournalFull)
rather than overwrite one.

Record ids: assigned by the journal, u32, strictly increasing, starting at 1,
never reused for a record that was ever acknowledged.  A record whose append()
did not return (power cut) may be absent, and then its id may be handed out
again: nobody was told about it.  After a dropped tail in the newest block the
journal skips ids (one per HEADER bytes dropped, plus one) so a record lost to
corruption can never share an id with a new one: ids may have gaps.  Block
headers carry the next id, so ids keep counting after every record is
uploaded and erased.

Checksum choice: binascii.crc32.  It is in every ESP32 build and costs far
less than sha256; the threat here is torn writes and bit rot, not forgery
(the payload carries its own signature).  A small pure-Python CRC-32 stands
in on a build without it, same values.
"""
from array import array
from micropython import const
import struct

try:
    from binascii import crc32 as _crc32
except ImportError:  # build without MICROPY_PY_BINASCII_CRC32
    _crc32 = None

MAX_RECORD = const(1536)  # the app's records reach 1400 bytes (pos.record.MAX)
HEADER = const(12)
BLOCK_HEADER = const(16)

_REC = const(0xA5)
_CUR = const(0xC5)
_VERSION = const(1)
_U32_MAX = const(0xFFFFFFFF)
_BMAGIC = b"PJL1"
_CHUNK = const(256)  # erased-check reads
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)


class JournalError(Exception):
    pass


class JournalFull(JournalError):
    # Every block holds records not yet uploaded: decline new payments,
    # never lose old ones.
    pass


class RecordTooLarge(JournalError):
    pass


class JournalIOError(JournalError):
    # The flash failed; args[1] is the OSError errno.
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
    def __init__(self, dev):
        self.dev = dev
        self.report = []
        self.read_errors = 0
        self._open = False
        self._hdr = bytearray(BLOCK_HEADER)
        self._hmv = memoryview(self._hdr)
        self._buf = bytearray(HEADER + MAX_RECORD)  # one whole frame
        self._bmv = memoryview(self._buf)
        self._chk = bytearray(_CHUNK)
        self._ff = b"\xff" * _CHUNK
        self._visit = None

    # -- flash access ---------------------------------------------------------

    def _read(self, block, off, mv):
        try:
            self.dev.readblocks(block, mv, off)
        except OSError as e:
            raise JournalIOError("read", _errno(e))

    def _program(self, block, off, mv):
        self.dev.writeblocks(block, mv, off)

    def _erase(self, block):
        try:
            self.dev.ioctl(_IOCTL_BLOCK_ERASE, block)
        except OSError as e:
            raise JournalIOError("erase", _errno(e))

    def _erased(self, block, off):
        # True when bytes off..end of the block are all 0xFF. Whole chunks are
        # compared as buffers (memcmp), not byte by byte: open() checks every
        # free block, and a byte loop would cost seconds on the device.
        bs = self.bs
        c = self._chk
        while off < bs:
            m = bs - off
            if m >= _CHUNK:
                self._read(block, off, c)
                if c != self._ff:
                    return False
                off += _CHUNK
                continue
            mv = memoryview(c)[:m]
            self._read(block, off, mv)
            for b in mv:
                if b != 0xFF:
                    return False
            return True
        return True

    def _frame(self, block, off, prev, magic):
        # The frame header at off into self._buf. Returns (rid, n), None at
        # erased space, or a reason string for a bad frame.
        if off + HEADER > self.bs:
            return None
        h = self._bmv[:HEADER]
        self._read(block, off, h)
        if h[0] == 0xFF:
            return None
        m, ver, n, rid = struct.unpack_from("<BBHI", self._buf, 0)
        if m != magic or ver != _VERSION:
            return "bad-magic"
        if n > MAX_RECORD or off + HEADER + n > self.bs:
            return "bad-length"
        if rid <= prev:
            return "bad-rid"
        return rid, n

    def _body(self, block, off, n):
        # Payload after the header in self._buf, checked against its CRC.
        body = self._bmv[HEADER:HEADER + n]
        if n:
            self._read(block, off + HEADER, body)
        if crc32(body, crc32(self._bmv[:8])) != struct.unpack_from("<I", self._buf, 8)[0]:
            return "bad-crc"
        return None

    # -- open / recovery ------------------------------------------------------

    def open(self, tick=None, visit=None):
        """Scan and recover.  `tick()` is called as the scan goes (a watchdog);
        `visit(rid, payload, cursor)` for each good record, in order, with a
        view valid only during the call and the upload cursor: boot replays
        the journal in the same pass that checks it.  Returns (and keeps in
        .report) a list of
        (place, offset, bytes dropped, reason) for everything discarded; an
        empty list means the journal was clean."""
        dev = self.dev
        bs = dev.ioctl(_IOCTL_BLOCK_SIZE, 0)
        nb = dev.ioctl(_IOCTL_BLOCK_COUNT, 0)
        if not bs or bs < BLOCK_HEADER + HEADER + MAX_RECORD or not nb or nb < 5:
            raise JournalError("partition too small", nb, bs)
        self.bs = bs
        ring = self.ring = nb - 2
        self.report = []
        self._dropped = 0
        self._seq = array("I", bytes(4 * ring))  # 0: no valid header (free)
        self._base = array("I", bytes(4 * ring))
        self._first = array("I", bytes(4 * ring))
        self._last = array("I", bytes(4 * ring))
        self._count = array("H", bytes(2 * ring))
        self._used = array("H", bytes(2 * ring))
        hdr = self._hdr
        order = []
        bad = []
        for i in range(ring):
            if tick is not None and not i & 15:
                tick()  # e.g. the watchdog: a full partition takes a while
            self._read(i, 0, self._hmv)
            if hdr[0:4] == _BMAGIC and struct.unpack_from("<I", hdr, 12)[0] == crc32(self._hmv[:12]):
                seq, base = struct.unpack_from("<II", hdr, 4)
                if seq:
                    self._seq[i] = seq
                    self._base[i] = base
                    order.append(i)
                    continue
            if hdr[0] != 0xFF or not self._erased(i, 0):
                # A cut erase or header program, or rot: holds nothing usable.
                bad.append(i)
        if not order and bad and (bad != [0] or not self._erased(0, BLOCK_HEADER)):
            # No journal block at all, yet data (more than a first header cut
            # short): another format, maybe holding payments. Not ours to erase.
            raise JournalError("partition holds data that is not a journal")
        for i in bad:
            self._note("block %d" % i, 0, bs, "bad-header")
        order.sort(key=lambda i: self._seq[i])
        # The cursor first, so visit() knows what is uploaded; its notes go
        # after the blocks' in the report, as they always have.
        k = len(self.report)
        self._cursor, self._cblk, self._coff = self._scan_cursor()
        notes = self.report[k:]
        del self.report[k:]
        self._visit = visit
        prev = 0
        nxt = 1
        self._head = -1
        self._sealed = False
        for i in order:
            if tick is not None:
                tick()
            prev, tail = self._scan(i, prev)
            if self._base[i] > nxt:
                nxt = self._base[i]
            self._head = i
            self._sealed = tail > 0
        if prev + 1 > nxt:
            nxt = prev + 1
        if self._sealed:
            # Unknown records may have been in the dropped bytes: never give
            # their ids to new records.
            nxt += tail // HEADER + 1
        self._visit = None
        self.report.extend(notes)
        if self._cursor + 1 > nxt:
            nxt = self._cursor + 1
        self._next = nxt
        self._maxseq = self._seq[self._head] if self._head >= 0 else 0
        self._pending = 0
        for i in order:
            self._pending += self._count_after(i, self._cursor)
        n = (self._head + 1) % ring
        self._ready = self._seq[n] == 0 and self._erased(n, 0)
        self._open = True
        return self.report

    def _note(self, place, off, dropped, why):
        self._dropped += dropped
        self.report.append((place, off, dropped, why))

    def _scan(self, i, prev):
        # Frames of record block i. Returns (last good rid, bytes dropped).
        off = BLOCK_HEADER
        base = self._base[i]
        why = None
        while True:
            r = self._frame(i, off, prev, _REC)
            if r is None:
                break
            if not isinstance(r, tuple):
                why = r
                break
            if r[0] < base:
                why = "bad-rid"
                break
            why = self._body(i, off, r[1])
            if why is not None:
                break
            prev = r[0]
            if self._visit is not None:
                self._visit(prev, self._bmv[HEADER:HEADER + r[1]], self._cursor)
            if not self._count[i]:
                self._first[i] = prev
            self._last[i] = prev
            self._count[i] += 1
            off += HEADER + r[1]
        self._used[i] = off
        if why is None and self._erased(i, off):
            return prev, 0
        # Dropped: from off to the last byte that is not erased.
        end = self.bs
        while end > off:
            m = end - off if end - off < _CHUNK else _CHUNK
            mv = memoryview(self._chk)[:m]
            self._read(i, end - m, mv)
            k = m
            while k and mv[k - 1] == 0xFF:
                k -= 1
            if k:
                end -= m - k
                break
            end -= m
        self._note("block %d" % i, off, end - off, why or "trailing")
        return prev, end - off

    def _scan_cursor(self):
        # (cursor, block to write the next cursor frame in, offset there)
        best = 0
        where = (self.ring, 0)
        for b in (self.ring, self.ring + 1):
            off = 0
            prev = 0
            why = None
            while True:
                r = self._frame(b, off, 0, _CUR)
                if r is None:
                    break
                if not isinstance(r, tuple) or r[1]:
                    why = r if isinstance(r, str) else "bad-length"
                    break
                why = self._body(b, off, 0)
                if why is not None:
                    break
                if r[0] > prev:
                    prev = r[0]
                off += HEADER
            clean = why is None and self._erased(b, off)
            if not clean:
                self._note("cursor %d" % (b - self.ring), off, 0, why or "trailing")
            if prev > best or (prev == best and b == self.ring):
                best = prev
                # A block with a torn tail is not written again (-1: use the other).
                where = (b, off if clean else -1)
        return best, where[0], where[1]

    def _count_after(self, i, rid):
        # Records in block i with id > rid; reads headers only when rid falls
        # inside the block.
        if not self._count[i] or self._last[i] <= rid:
            return 0
        if self._first[i] > rid:
            return self._count[i]
        n = 0
        off = BLOCK_HEADER
        while off < self._used[i]:
            r = self._frame(i, off, 0, _REC)
            if not isinstance(r, tuple):
                break
            if r[0] > rid:
                n += 1
            off += HEADER + r[1]
        return n

    def _check(self):
        if not self._open:
            raise JournalError("journal not open")

    # -- space ------------------------------------------------------------------

    def _holds_pending(self, i):
        return self._seq[i] != 0 and self._count[i] and self._last[i] > self._cursor

    def prepare(self):
        """Erase the block the next switch will use, if it is free to erase.
        Call while idle: it is what keeps erases out of append().  True when a
        block is ready (now or already)."""
        self._check()
        if self._ready:
            return True
        n = (self._head + 1) % self.ring
        if self._holds_pending(n):
            return False
        if self._seq[n] or not self._erased(n, 0):
            self._erase(n)  # (a fresh chip's blocks are erased already: spare the wear)
        self._clear(n)
        self._ready = True
        return True

    def _clear(self, i):
        self._seq[i] = 0
        self._count[i] = 0
        self._used[i] = 0
        self._first[i] = 0
        self._last[i] = 0

    def _switch(self):
        # Open the next ring block as the head: erased already by prepare(),
        # or erased now (the slow path) if its records are all uploaded.
        n = (self._head + 1) % self.ring
        if not self._ready:
            if self._holds_pending(n):
                raise JournalFull("no block free")
            self._erase(n)
            self._clear(n)
        self._ready = False
        seq = self._maxseq + 1
        h = self._hdr
        h[0:4] = _BMAGIC
        struct.pack_into("<II", h, 4, seq, self._next)
        struct.pack_into("<I", h, 12, crc32(self._hmv[:12]))
        try:
            self._program(n, 0, self._hmv)
        except OSError as e:
            raise JournalIOError("header", _errno(e))
        self._maxseq = seq
        self._seq[n] = seq
        self._base[n] = self._next
        self._used[n] = BLOCK_HEADER
        self._head = n
        self._sealed = False
        return n

    # -- append ---------------------------------------------------------------

    def append(self, record):
        """Store one record; returns its id once it is programmed into flash."""
        self._check()
        n = len(record)
        if n > MAX_RECORD:
            raise RecordTooLarge(n)
        rid = self._next
        if rid > _U32_MAX:
            raise JournalFull("record ids exhausted")
        frame = HEADER + n
        i = self._head
        if i < 0 or self._sealed or self._used[i] + frame > self.bs:
            i = self._switch()
        b = self._buf
        struct.pack_into("<BBHI", b, 0, _REC, _VERSION, n, rid)
        self._bmv[HEADER:frame] = record
        struct.pack_into("<I", b, 8, crc32(self._bmv[HEADER:frame], crc32(self._bmv[:8])))
        off = self._used[i]
        try:
            self._program(i, off, self._bmv[:frame])
        except OSError as e:
            # The chip said no, but the frame may have landed anyway: settle
            # it by reading it back, never by guessing. A frame that reads
            # back whole is the record (a reboot would find it too); anything
            # else is not, and the block takes no more frames.
            self._sealed = True
            self._next = rid + frame // HEADER + 1
            if not self._landed(i, off, frame):
                raise JournalIOError("append", _errno(e))
        self._used[i] = off + frame
        if not self._count[i]:
            self._first[i] = rid
        self._last[i] = rid
        self._count[i] += 1
        if self._next <= rid:
            self._next = rid + 1
        self._pending += 1
        return rid

    def _landed(self, i, off, frame):
        # True when the frame in self._buf[:frame] is on flash at (i, off).
        # The buffer still holds it; compare a chunk at a time.
        c = self._chk
        done = 0
        try:
            while done < frame:
                m = frame - done
                if m > _CHUNK:
                    m = _CHUNK
                mv = memoryview(c)[:m]
                self._read(i, off + done, mv)
                if mv != self._bmv[done:done + m]:
                    return False
                done += m
        except JournalIOError:
            return False
        return True

    # -- reading --------------------------------------------------------------

    def records(self, from_rid=1):
        """Yield (rid, bytes) for every stored record with id >= from_rid, in
        order.  Memory stays bounded (one frame buffer) whatever the journal
        size.  The caller may append, mark_uploaded or prepare while
        iterating; records appended meanwhile may or may not be yielded."""
        self._check()
        last = from_rid - 1
        for i in self._order():
            seq = self._seq[i]
            if not self._count[i] or self._last[i] <= last:
                continue
            off = BLOCK_HEADER
            while self._seq[i] == seq and off < self._used[i]:
                r = self._frame(i, off, 0, _REC)
                if not isinstance(r, tuple):
                    # A header rotted since open(): where the next frame starts
                    # is lost with it, so the rest of this block is unreadable.
                    self.read_errors += 1
                    break
                rid, n = r
                if rid > last:
                    if self._body(i, off, n) is not None:
                        # Rot since open(), in this record only (its header
                        # still gives its length): skip it, never pass it on
                        # as good, and go on with the ones after it.
                        self.read_errors += 1
                        off += HEADER + n
                        continue
                    item = (rid, bytes(self._bmv[HEADER:HEADER + n]))
                    last = rid
                    yield item
                off += HEADER + n

    def count(self):
        """Records in the journal (uploaded ones included until erased)."""
        return sum(self._count)

    def nth(self, k):
        """(rid, bytes) of the k-th record in journal order (0: the oldest), or
        None. Reads at most one block's frame headers."""
        self._check()
        if k < 0:
            return None
        for i in self._order():
            c = self._count[i]
            if k >= c:
                k -= c
                continue
            off = BLOCK_HEADER
            while off < self._used[i]:
                r = self._frame(i, off, 0, _REC)
                if not isinstance(r, tuple):
                    return None
                if not k:
                    if self._body(i, off, r[1]) is not None:
                        return None
                    return r[0], bytes(self._bmv[HEADER:HEADER + r[1]])
                k -= 1
                off += HEADER + r[1]
            return None
        return None

    def _order(self):
        # Record blocks, oldest first.
        ring = self.ring
        start = -1
        for i in range(ring):
            if self._seq[i] and (start < 0 or self._seq[i] < self._seq[start]):
                start = i
        if start < 0:
            return
        prev = 0
        for k in range(ring):
            i = (start + k) % ring
            if self._seq[i] > prev:
                prev = self._seq[i]
                yield i

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
        """Persist that every record with id <= upto_rid is on the host; their
        blocks become free to erase.  Idempotent."""
        self._check()
        if upto_rid <= self._cursor:
            return
        if upto_rid >= self._next:
            raise JournalError("rid not issued", upto_rid)
        b, off = self._cblk, self._coff
        if off < 0 or off + HEADER > self.bs:
            # Full (or torn): continue in the other block. The newest cursor
            # stays in this one until the other holds a newer one.
            b = self.ring + 1 if b == self.ring else self.ring
            self._erase(b)
            off = 0
        buf = self._buf
        struct.pack_into("<BBHI", buf, 0, _CUR, _VERSION, 0, upto_rid)
        struct.pack_into("<I", buf, 8, crc32(self._bmv[:8]))
        try:
            self._program(b, off, self._bmv[:HEADER])
        except OSError as e:
            self._coff = -1
            raise JournalIOError("cursor", _errno(e))
        self._cblk, self._coff = b, off + HEADER
        self._cursor = upto_rid
        pending = 0
        for i in range(self.ring):
            if self._seq[i]:
                pending += self._count_after(i, upto_rid)
        self._pending = pending

    # -- introspection ----------------------------------------------------------

    def stats(self):
        self._check()
        count = size = used = free = 0
        room = self.bs - BLOCK_HEADER
        for i in range(self.ring):
            if self._seq[i]:
                used += 1
                count += self._count[i]
                size += self._used[i] - BLOCK_HEADER
                if not self._holds_pending(i) and i != self._head:
                    free += room
            else:
                free += room
        if self._head >= 0 and not self._sealed:
            free += self.bs - self._used[self._head]
        return {
            "records": count,
            "pending": self._pending,
            "cursor": self._cursor,
            "next_rid": self._next,
            "blocks": self.ring,
            "blocks_used": used,
            "bytes": size,
            "dropped": self._dropped,
            "free": free,
        }

    def close(self):
        self._open = False
