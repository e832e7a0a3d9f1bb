"""Register (till) link: line protocol parser and formatters.

ASCII lines, each ended by LF (a CR before the LF is ignored), at most
MAX_LINE bytes without the LF.  Fields are separated by one or more spaces;
only printable ASCII (0x21..0x7E) is allowed inside fields.  Keywords are
upper case.  Full description: docs/till.md.

Till -> terminal:
    CHARGE <amount> <currency> <reference>
        amount     minor units, decimal digits, 1..999999999, no sign, no
                   leading zero
        currency   ISO 4217 numeric code, exactly 3 digits, 001..999
        reference  1..MAX_REF of A-Z a-z 0-9 - _ . / :   (echoed back)
    STATUS
    CANCEL
    QUERY <reference>

Terminal -> till:
    RESULT <reference> APPROVED <record-id>
    RESULT <reference> DECLINED <REASON> [<record-id>]
    STATUS <state> <pending-uploads> up|down
    CANCELLED <reference>
    OUTCOME <reference> APPROVED <record-id> | DECLINED <REASON> | IN-PROGRESS | UNKNOWN
    ERR <reason>

parse() turns one line into a tuple:
    ("CHARGE", amount:int, currency:int, reference:bytes)
    ("STATUS",)
    ("CANCEL",)
    ("QUERY", reference:bytes)
or raises TillError whose .reason is the token to send back as "ERR <reason>":
    line-too-long empty-line bad-char unknown-command bad-args bad-amount
    bad-currency bad-reference
(The app adds its own: busy, nothing-to-cancel, too-late.)

read_line() is the only I/O here: it reads from an asyncio stream one byte
at a time into a fixed buffer, so a till that never sends LF costs nothing
but time; an overlong line is discarded up to its LF and reported once.
"""
from micropython import const

MAX_LINE = const(128)
MAX_REF = const(32)
MAX_AMOUNT = const(999999999)
_MAX_AMOUNT_DIGITS = const(9)
_MAX_TOKEN = const(24)

CHARGE = "CHARGE"
STATUS = "STATUS"
CANCEL = "CANCEL"
QUERY = "QUERY"

_REF_PUNCT = b"-_./:"


class TillError(Exception):
    # args[0]: the protocol reason token, e.g. "bad-amount".
    @property
    def reason(self):
        return self.args[0]


def _digits(b):
    if not b:
        return False
    for c in b:
        if c < 0x30 or c > 0x39:
            return False
    return True


def _ref_ok(b):
    if not 0 < len(b) <= MAX_REF:
        return False
    for c in b:
        if not (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c in _REF_PUNCT):
            return False
    return True


def parse(line):
    """One received line (bytes-like, LF already removed) -> command tuple."""
    line = bytes(line)
    n = len(line)
    if n and line[n - 1] == 0x0D:
        n -= 1
        line = line[:n]
    if n > MAX_LINE:
        raise TillError("line-too-long")
    for c in line:
        if (c < 0x20 or c > 0x7E):
            raise TillError("bad-char")
    f = line.split()
    if not f:
        raise TillError("empty-line")
    cmd = f[0]
    if cmd == b"CHARGE":
        if len(f) != 4:
            raise TillError("bad-args")
        a, cur, ref = f[1], f[2], f[3]
        if not _digits(a) or len(a) > _MAX_AMOUNT_DIGITS or a[0] == 0x30:
            raise TillError("bad-amount")
        if len(cur) != 3 or not _digits(cur) or cur == b"000":
            raise TillError("bad-currency")
        if not _ref_ok(ref):
            raise TillError("bad-reference")
        return (CHARGE, int(a), int(cur), ref)
    if cmd == b"STATUS":
        if len(f) != 1:
            raise TillError("bad-args")
        return (STATUS,)
    if cmd == b"CANCEL":
        if len(f) != 1:
            raise TillError("bad-args")
        return (CANCEL,)
    if cmd == b"QUERY":
        if len(f) != 2:
            raise TillError("bad-args")
        if not _ref_ok(f[1]):
            raise TillError("bad-reference")
        return (QUERY, f[1])
    raise TillError("unknown-command")


# -- formatters: each returns one complete line (bytes, LF included) ------------


def _b(x):
    return x if isinstance(x, (bytes, bytearray)) else str(x).encode()


def _token(x):
    # Words the terminal puts on the line must not be able to break it.
    t = _b(x)
    if not 0 < len(t) <= _MAX_TOKEN:
        raise ValueError("bad token")
    for c in t:
        if not (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c in b"-_"):
            raise ValueError("bad token")
    return t


def _ref(ref):
    r = _b(ref)
    if not _ref_ok(r):
        raise ValueError("bad reference")
    return r


def _rid(rid):
    if not 0 <= rid <= 0xFFFFFFFF:
        raise ValueError("bad record id")
    return b"%d" % rid


def approved(ref, rid):
    return b"RESULT " + _ref(ref) + b" APPROVED " + _rid(rid) + b"\n"


def declined(ref, reason, rid=None):
    line = b"RESULT " + _ref(ref) + b" DECLINED " + _token(reason)
    if rid is not None:
        line += b" " + _rid(rid)
    return line + b"\n"


def status(state, pending, link_up):
    # State names may contain spaces in the app ("waiting for removal").
    st = _token(_b(state).replace(b" ", b"-"))
    return b"STATUS " + st + b" %d " % pending + (b"up" if link_up else b"down") + b"\n"


def cancelled(ref):
    return b"CANCELLED " + _ref(ref) + b"\n"


def outcome(ref, what, detail=None):
    """what: "APPROVED" (detail: record id), "DECLINED" (detail: reason name),
    "IN-PROGRESS" or "UNKNOWN"."""
    line = b"OUTCOME " + _ref(ref) + b" " + _b(what)
    if what == "APPROVED":
        line += b" " + _rid(detail)
    elif what == "DECLINED":
        line += b" " + _token(detail)
    elif what not in ("IN-PROGRESS", "UNKNOWN"):
        raise ValueError("bad outcome")
    return line + b"\n"


def error(reason):
    return b"ERR " + _token(reason) + b"\n"


# -- input ------------------------------------------------------------------------


async def read_line(reader, maxlen=MAX_LINE, buf=None):
    """Next line from an asyncio stream, without its LF (bytes).

    Returns None at end of stream (a partial last line is dropped: it was
    never a complete command).  A line longer than maxlen is read to its LF
    and thrown away, then TillError("line-too-long") is raised, so the
    caller answers ERR and the next call starts at the next line."""
    if buf is None:
        buf = bytearray(maxlen + 1)  # + room for a CR before the LF
    n = 0
    over = False
    while True:
        b = await reader.read(1)
        if not b:
            return None
        c = b[0]
        if c == 0x0A:
            if over:
                raise TillError("line-too-long")
            return bytes(buf[:n])
        if over:
            continue
        if n == len(buf) or (n == maxlen and c != 0x0D):
            over = True
            continue
        buf[n] = c
        n += 1
