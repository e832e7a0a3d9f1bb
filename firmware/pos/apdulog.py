# The terminal's recent APDU exchanges: a bounded debug log for reproducing a
# field problem on a desk (`offpay logs` pulls it, `offpay replay --session`
# plays it back through the emulated terminal).
#
#   log = ApduLog(4096)       # preallocated once, at boot
#   log.add(capdu, rapdu)     # one call per exchange, in the reader path
#   log.entries()             # [{"t": ms, "c": hex, "r": hex}, ...], oldest first
#
# One preallocated byte ring: each exchange is stored as a 6-byte header
# (C length, R length, ticks_ms & 0xFFFF) and both APDUs, each cut to _MAX_APDU;
# the oldest exchanges are overwritten. add() allocates nothing.
import time

from micropython import const

_MAX_APDU = const(1200)
_HDR = const(6)
_MAX_ENTRIES = const(64)

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
        hdr = bytes((nc >> 8, nc & 0xFF, nr >> 8, nr & 0xFF, t >> 8, t & 0xFF))
        self._put(hdr, _HDR)
        self._put(memoryview(capdu), nc)
        self._put(memoryview(rapdu), nr)

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
            out.append({"t": h[4] << 8 | h[5], "c": self._get(off + _HDR, nc).hex(),
                        "r": self._get(off + _HDR + nc, nr).hex()})
        return out
