# The terminal's recent APDU exchanges: a bounded debug log for reproducing a
# field problem on a desk (`offpay logs` pulls it, `offpay replay session`
# plays it back through the emulated terminal).
#
#   log = ApduLog(4096)       # preallocated once, at boot
#   log.add(capdu, rapdu)     # one call per exchange, in the reader path
#   log.note("TAP TIMEOUT ref=R1 ms=700")   # what the terminal said, in sequence
#   log.entries()             # [{"t": ms, "c": hex, "r": hex} or {"t": ms, "note": text}, ...]
#
# One preallocated byte ring: each entry is stored as a 6-byte header
# (C length, R length, ticks_ms & 0xFFFF) and both APDUs, each cut to _MAX_APDU;
# the oldest entries are overwritten. add() allocates nothing. A note is an
# entry with an empty C-APDU (the terminal never sends one): pos.console
# copies the terminal's "TAP ..." log lines here, so the exchanges and the
# terminal's words about them (a decision, "AUTHORIZE not answered within
# 600 ms", a protocol fault) keep their order for `offpay replay session`.
import time

from micropython import const

_MAX_APDU = const(1200)
_HDR = const(6)
_MAX_ENTRIES = const(64)
_MAX_NOTE = const(64)  # "TAP <REASON> ref=<32-byte ref>" and the detail lines fit
_REBASE = const(0x10000000)

current = None  # the app's log, for `offpay logs`


class ApduLog:
    def __init__(self, size=4096):
        global current
        self._buf = bytearray(size)
        self._size = size
        self._start = [0] * _MAX_ENTRIES  # ring of entry offsets
        self._first = 0
        self._count = 0
        self._end = 0  # total bytes written (the ring's head is _end % size)
        self._hdr = bytearray(_HDR)
        current = self

    def _put(self, data, n):
        size = self._size
        buf = self._buf
        pos = self._end % size
        k = n if n < size - pos else size - pos
        buf[pos:pos + k] = data[:k]
        if n > k:
            buf[0:n - k] = data[k:n]
        self._end += n

    def add(self, capdu, rapdu):
        nc = min(len(capdu), _MAX_APDU)
        nr = min(len(rapdu), _MAX_APDU)
        total = _HDR + nc + nr
        if total > self._size:
            return
        if self._end >= _REBASE:
            # Offsets stay small ints (30 bits on the ESP32): move the origin
            # by whole rings, which keeps every position in the buffer.
            d = (self._end // self._size - 2) * self._size
            self._end -= d
            st = self._start
            for i in range(_MAX_ENTRIES):
                st[i] -= d
        # Forget the entries this one overwrites.
        while self._count and self._end + total - self._start[self._first] > self._size:
            self._first = (self._first + 1) % _MAX_ENTRIES
            self._count -= 1
        if self._count == _MAX_ENTRIES:
            self._first = (self._first + 1) % _MAX_ENTRIES
            self._count -= 1
        self._start[(self._first + self._count) % _MAX_ENTRIES] = self._end
        self._count += 1
        t = time.ticks_ms() & 0xFFFF
        h = self._hdr
        h[0], h[1], h[2], h[3], h[4], h[5] = nc >> 8, nc & 0xFF, nr >> 8, nr & 0xFF, t >> 8, t & 0xFF
        self._put(h, _HDR)
        self._put(memoryview(capdu), nc)
        self._put(memoryview(rapdu), nr)

    def note(self, text):
        """Keep a line the terminal said (cut to _MAX_NOTE bytes) in order
        with the exchanges."""
        b = text.encode() if isinstance(text, str) else bytes(text)
        self.add(b"", b[:_MAX_NOTE])

    def _get(self, off, n):
        size = self._size
        out = bytearray(n)
        for i in range(n):
            out[i] = self._buf[(off + i) % size]
        return out

    def entries(self):
        """The kept exchanges, oldest first (technician use: allocates)."""
        out = []
        for i in range(self._count):
            off = self._start[(self._first + i) % _MAX_ENTRIES]
            h = self._get(off, _HDR)
            nc, nr = h[0] << 8 | h[1], h[2] << 8 | h[3]
            t = h[4] << 8 | h[5]
            r = self._get(off + _HDR + nc, nr)
            if nc == 0:
                try:
                    out.append({"t": t, "note": r.decode()})
                except UnicodeError:  # a multi-byte character cut at _MAX_NOTE
                    out.append({"t": t, "note": repr(bytes(r))})
                continue
            out.append({"t": t, "c": self._get(off + _HDR, nc).hex(), "r": r.hex()})
        return out
