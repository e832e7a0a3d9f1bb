# The receiver's 200 answer (docs/upload.md section 3), taken apart where it
# lies: {"ack": N, "bundle": "<bundle JSON text, escaped>", "sig": "<hex>"}.
#
# json.loads of the whole answer would copy the bundle text (up to 16 KB) into
# a new string, in one piece, from a heap that a day of taps and an exchange's
# TLS session have cut up: with a 100-entry deny list a terminal found no 6 KB
# in one piece among 33 KB free and retried for ever. Here the bundle string
# is decoded in place, inside the uplink's receive buffer, and only the rest
# of the answer (about 200 bytes: the bundle string replaced by 0) goes to
# json.loads. Every step is a C-level find or copy: no loop per byte.

import json

from micropython import const

_KEY = b'"bundle"'
_SCRATCH = const(256)
_BACKSLASH = const(0x5C)
# JSON's two-character escapes -> the byte they stand for.
_ESC = {0x22: 0x22, 0x5C: 0x5C, 0x2F: 0x2F, 0x62: 0x08, 0x66: 0x0C, 0x6E: 0x0A, 0x72: 0x0D, 0x74: 0x09}


class AnswerError(ValueError):
    # args[0]: a short reason for the log
    pass


def _string_end(buf, i, end):
    # The closing quote of the JSON string whose content starts at i.
    while True:
        q = buf.find(b'"', i, end)
        if q < 0:
            raise AnswerError("bundle string not closed")
        k = q - 1
        while k >= i and buf[k] == _BACKSLASH:
            k -= 1
        if (q - 1 - k) % 2 == 0:  # an even run of backslashes: the quote is not escaped
            return q
        i = q + 1


def _unescape(buf, a, b, scratch):
    # The JSON string content buf[a:b] decoded in place (escapes only shrink
    # it); returns its new end. The bundle text is ASCII (docs/upload.md), so
    # \uXXXX is taken only below 0x80. Runs move through `scratch`, never
    # between overlapping parts of buf.
    mv = memoryview(buf)
    sv = memoryview(scratch)
    w = r = a
    while True:
        e = buf.find(b"\\", r, b)
        n = (e if e >= 0 else b) - r
        if w != r:
            off = 0
            while off < n:
                k = n - off if n - off < _SCRATCH else _SCRATCH
                sv[:k] = mv[r + off:r + off + k]
                mv[w + off:w + off + k] = sv[:k]
                off += k
        w += n
        if e < 0:
            return w
        if e + 1 >= b:
            raise AnswerError("bad escape")
        c = buf[e + 1]
        if c == 0x75:  # \uXXXX
            if e + 6 > b:
                raise AnswerError("bad escape")
            h = bytes(mv[e + 2:e + 6])
            for x in h:
                if not (0x30 <= x <= 0x39 or 0x41 <= x <= 0x46 or 0x61 <= x <= 0x66):
                    raise AnswerError("bad escape")
            v = int(h, 16)
            if v >= 0x80:
                raise AnswerError("bundle not ASCII")
            r = e + 6
        else:
            v = _ESC.get(c)
            if v is None:
                raise AnswerError("bad escape")
            r = e + 2
        buf[w] = v
        w += 1


def parse(buf, start, stop, scratch):
    """The answer in buf[start:stop] (a bytearray: the uplink's buffer):
    (ack, bundle text as a memoryview of buf, sig hex str). Only the ack is
    checked for shape here; text and sig are None when the answer has no
    bundle string. The bundle's bytes in buf are overwritten by its decoded
    form. scratch: a bytearray of at least 256 bytes. AnswerError if the
    answer is not that object."""
    k = buf.find(_KEY, start, stop)
    text = None
    rest = None
    if k >= 0:
        i = k + len(_KEY)
        while i < stop and buf[i] in b" \t\r\n":
            i += 1
        if i < stop and buf[i] == 0x3A:  # ':'
            i += 1
            while i < stop and buf[i] in b" \t\r\n":
                i += 1
            if i < stop and buf[i] == 0x22:  # the value is a string
                q = _string_end(buf, i + 1, stop)
                # The rest of the answer, with the string replaced by 0: json.loads
                # then says whether it was the top-level "bundle" value.
                mv = memoryview(buf)
                rest = bytes(mv[start:i]) + b"0" + bytes(mv[q + 1:stop])
                text = (i + 1, q)
    if rest is None:
        rest = bytes(memoryview(buf)[start:stop])
    try:
        d = json.loads(rest)
    except ValueError:
        raise AnswerError("response not json")
    ack = d.get("ack") if isinstance(d, dict) else None
    if not isinstance(ack, int) or isinstance(ack, bool) or ack < 0:
        raise AnswerError("response without ack")
    if text is None or d.get("bundle") != 0 or isinstance(d.get("bundle"), bool):
        return ack, None, None
    sig = d.get("sig")
    end = _unescape(buf, text[0], text[1], scratch)
    return ack, memoryview(buf)[text[0]:end], sig if isinstance(sig, str) else None
