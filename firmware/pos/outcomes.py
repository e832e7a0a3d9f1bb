# What became of each till reference, so a till that lost its connection (or
# re-sends a CHARGE) learns the truth instead of charging the customer again.
#
# Approved payments are answered from the journal itself: every record still in
# it has its reference's CRC-32 in a compact index (4 bytes a record, in
# journal order), and a hit is confirmed by reading that record back from flash,
# so a colliding reference can only cost a flash read, never a wrong answer.
# Declines are kept in a small ring in RAM: they charged nobody, and after a
# reboot "unknown" is the truthful answer for them.

from binascii import crc32
from micropython import const

from pos import record

_PAGE = const(1024)      # index bytes per page: 256 records
_RECENT = const(16)      # declines remembered


class Outcomes:
    def __init__(self, journal):
        self.journal = journal
        self.current = None      # reference of the charge in progress
        self._pages = []
        self._n = 0              # index entries, in journal order
        self._off = 0            # leading entries whose records are erased
        self._recent = []        # (reference bytes, reason code)
        self._f = [None] * 4

    # -- the index of approved payments -------------------------------------

    def add(self, ref):
        """Index the reference of the journal's newest record."""
        i = self._n % (_PAGE // 4)
        if i == 0:
            self._pages.append(bytearray(_PAGE))
        self._pages[-1][4 * i:4 * i + 4] = crc32(ref).to_bytes(4, "little")
        self._n += 1

    def trim(self, remaining):
        """The journal erased its oldest records and holds `remaining` now:
        forget theirs (erasing always takes the oldest block first)."""
        live = self._n - self._off
        if remaining < live:
            self._off += live - remaining
        per = _PAGE // 4
        while self._off >= per:
            self._pages.pop(0)
            self._off -= per
            self._n -= per

    def approved(self, ref):
        """Record id of the approved payment stored under `ref`, or None."""
        h = crc32(ref).to_bytes(4, "little")
        per = _PAGE // 4
        last = len(self._pages) - 1
        for p, page in enumerate(self._pages):
            used = self._n - p * per if p == last else per
            start = 4 * self._off if p == 0 else 0
            while True:
                k = page.find(h, start, 4 * used)
                if k < 0:
                    break
                start = k + 1
                if k % 4:
                    continue
                got = self.journal.nth(p * per + k // 4 - self._off)
                if got is None:
                    continue
                try:
                    if bytes(record.decode(got[1], self._f)[2]) == ref:
                        return got[0]
                except ValueError:  # TLVError: not a record of ours
                    pass
        return None

    # -- charges ------------------------------------------------------------

    def begin(self, ref):
        self.current = ref

    def end(self, ref, code, rid):
        self.current = None
        if code == 0:  # APPROVED: its record is in the journal
            self.add(ref)
            return
        r = self._recent
        for i in range(len(r)):
            if r[i][0] == ref:
                r.pop(i)
                break
        if len(r) >= _RECENT:
            r.pop(0)
        r.append((bytes(ref), code))

    def query(self, ref):
        """("in-progress",), ("approved", rid), ("declined", code) or None."""
        if self.current is not None and self.current == ref:
            return ("in-progress",)
        rid = self.approved(ref)
        if rid is not None:
            return ("approved", rid)
        for r, code in self._recent:
            if r == ref:
                return ("declined", code)
        return None
