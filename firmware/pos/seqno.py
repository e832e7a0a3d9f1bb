# The terminal's AUTHORIZE sequence numbers (PROTOCOL.md tag 28): strictly
# increasing for the terminal's whole life, never reused after a reboot, also
# for taps that were declined and so left no journal record.
#
# A small file on the terminal's file system holds a reservation: every number
# below it may have been used. Numbers are handed out below the reservation,
# which is moved ahead (one atomic file replace) while the terminal is idle, so
# a tap never waits for the file system; if a burst of taps does use the whole
# reservation, the tap that needs more writes it first.

from micropython import const
import os

_STEP = const(64)
_LOW = const(16)  # idle work moves the reservation when fewer are left


class SeqError(OSError):
    pass


class Sequence:
    def __init__(self, path, floor=0):
        """`floor`: a number known to be used (e.g. the journal's next record
        id), in case the file is missing or was lost."""
        self.path = path
        self._limit = self._load()
        self.last = self._limit if self._limit > floor else floor
        self._limit = self.last  # nothing at or below it may be handed out again

    def _load(self):
        try:
            with open(self.path) as f:
                v = int(f.read(12))
            return v if 0 <= v <= 0xFFFFFFFF else 0
        except (OSError, ValueError):
            return 0

    def _reserve(self, upto):
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                f.write("%d" % upto)
            os.rename(tmp, self.path)
        except OSError as e:
            raise SeqError("sequence reservation not stored: %s" % (e,))
        self._limit = upto

    def next(self):
        """The next sequence number; SeqError if it cannot be made durable."""
        n = self.last + 1
        if n > self._limit:
            self._reserve(n + _STEP)
        self.last = n
        return n

    def idle(self):
        """Move the reservation ahead while nobody waits."""
        if self._limit - self.last < _LOW:
            self._reserve(self.last + _STEP)
