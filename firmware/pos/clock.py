# The terminal's trusted clock: unix seconds that never go back.
#
# Why not the RTC: the ESP32's restarts at 2000-01-01 on every power-up, and a
# clock that anyone can set decides which credentials are valid. This one is
# set only by the acquirer (the signed update bundle's time, bound to a nonce
# the terminal just sent) and held up by what the terminal itself wrote:
#
#   floor = max(last acquirer time, newest journal record's time, checkpoint)
#   now() = floor + seconds of ticks since the floor was taken
#
# so a power cut puts the clock back at its floor, never at 2000, and a
# reboot never moves it backwards. The floor is persisted in a small file
# (written to a temp name, then renamed: littlefs renames atomically).
#
# Ticks: ticks_ms wraps (2^30 ms, ~12 days, on the ports here) and ticks_diff
# is exact only within half of that, so now() folds elapsed ticks into whole
# seconds whenever an hour has passed; the app calls now() at least every few
# days (its idle loop calls it every second), so the wrap never bites.
#
# File (16 bytes, big-endian): b"PCK1", floor u32, acquirer time u32,
# CRC-32 of bytes 0..11. host_tools may write one at provisioning (the
# technician's clock as the first trusted time) with the same layout.

import os
import struct
import time

from micropython import const

from pos import reason
from pos.journal import crc32

# Until the acquirer's bundle says otherwise (risk.max_offline_age_s): 72 h,
# a long weekend without Wi-Fi. Past it the terminal declines: its deny list
# and issuer keys are that stale, and every wallet's unseen spending at other
# terminals has had that long to pile up.
DEFAULT_MAX_OFFLINE_AGE_S = const(259200)
_SANE_MIN = const(1735689600)  # 2025-01-01: an older time did not come from a trusted source
_U32_MAX = const(0xFFFFFFFF)
_REBASE_MS = const(3600000)
_MAGIC = b"PCK1"
_SIZE = const(16)
_NAME = "clock.bin"


def _u32(t):
    return isinstance(t, int) and _SANE_MIN <= t <= _U32_MAX


class Clock:
    """directory: where the floor is kept (littlefs). ticks: anything with
    ticks_ms, ticks_diff and ticks_add (the time module; a fake in tests)."""

    def __init__(self, directory, log=print, ticks=time):
        self._path = directory + "/" + _NAME
        self._tmp = self._path + ".tmp"
        self.log = log
        self._t = ticks
        self._base_s = 0          # trusted seconds at tick _base_t (0: never set)
        self._base_t = ticks.ticks_ms()
        self._acq = 0             # last acquirer-signed time (0: never synced)
        self._saved = 0           # floor on flash
        self._hint = 0            # lower bound for TLS certificate checks only

    # -- boot -----------------------------------------------------------------

    def load(self):
        """Read the persisted floor. True if a valid file was there; a missing
        or corrupt one leaves the clock unset (the terminal then takes no
        payment until it syncs: the safe side)."""
        try:
            with open(self._path, "rb") as f:
                b = f.read(_SIZE + 1)
        except OSError:
            return False
        if len(b) != _SIZE or b[:4] != _MAGIC or \
                struct.unpack_from(">I", b, 12)[0] != crc32(memoryview(b)[:12]):
            self.log("CLOCK file %s is corrupt: ignored" % self._path)
            return False
        floor, acq = struct.unpack_from(">II", b, 4)
        if _u32(floor):
            self._raise(floor)
            self._saved = floor
        if _u32(acq) and acq > self._acq:
            self._acq = acq
        return True

    # -- reading ----------------------------------------------------------------

    def now(self):
        """Trusted unix seconds, or 0 while the clock has never been set."""
        if not self._base_s:
            return 0
        t = self._t
        d = t.ticks_diff(t.ticks_ms(), self._base_t)
        if d >= _REBASE_MS:
            s = d // 1000
            self._base_s += s
            self._base_t = t.ticks_add(self._base_t, s * 1000)
            d -= s * 1000
        return self._base_s + d // 1000

    def is_set(self):
        return self._base_s != 0

    def acquirer_time(self):
        return self._acq

    def offline_age(self):
        """Seconds since the last acquirer time, None if there never was one."""
        if not self._acq:
            return None
        age = self.now() - self._acq
        return age if age > 0 else 0

    def gate(self, max_offline_age_s=DEFAULT_MAX_OFFLINE_AGE_S):
        """The clock's verdict on taking a payment now: reason.APPROVED (0),
        CLOCK_UNSET or OFFLINE_TOO_LONG."""
        if not self.is_set():
            return reason.CLOCK_UNSET
        age = self.offline_age()
        if age is None or age > max_offline_age_s:
            return reason.OFFLINE_TOO_LONG
        return reason.APPROVED

    def tls_time(self):
        """What the board's RTC should say for TLS certificate checks:
        now(), or before the first trusted time the hint (the newest
        notBefore of the pinned certificates), never 2000-01-01."""
        t = self.now()
        return t if t > self._hint else self._hint

    # -- raising the floor --------------------------------------------------------

    def _raise(self, t):
        if t > self.now():
            self._base_s = t
            self._base_t = self._t.ticks_ms()
            return True
        return False

    def set_acquirer(self, t):
        """A verified bundle's time (bound to this exchange's nonce). The
        clock moves forward to it, never back; persisted. False for a value
        that is not a plausible u32 time."""
        if not _u32(t):
            return False
        self._raise(t)
        if t > self._acq:
            self._acq = t
        self.save()
        return True

    def note_record(self, t):
        """A journal record's terminal time (at boot: the newest record's).
        Raises the floor; not written (the journal holds the record)."""
        if _u32(t):
            self._raise(t)

    def hint(self, t):
        """Lower bound for tls_time() only (e.g. a pinned certificate's
        notBefore): it never makes is_set() true."""
        if _u32(t) and t > self._hint:
            self._hint = t

    # -- persistence ------------------------------------------------------------

    def checkpoint(self, min_gain_s=600):
        """Persist now() as the floor if it gained min_gain_s since the last
        write, so a power cut costs at most that much. Call while idle; at
        most one small littlefs write per min_gain_s."""
        t = self.now()
        if t and t - self._saved >= min_gain_s:
            self.save()

    def save(self):
        t = self.now()
        if not t:
            return False
        b = bytearray(_SIZE)
        b[:4] = _MAGIC
        struct.pack_into(">II", b, 4, t, self._acq)
        struct.pack_into(">I", b, 12, crc32(memoryview(b)[:12]))
        try:
            with open(self._tmp, "wb") as f:
                f.write(b)
            os.rename(self._tmp, self._path)
        except OSError as e:
            self.log("CLOCK not saved: %s" % (e,))
            return False
        self._saved = t
        return True
