# The receiver's 200 answer (docs/upload.md section 3), taken apart where it
# lies: {"ack": N, "bundle": "<bundle JSON text, escaped>", "sig": "<hex>"}.
#
# json.loads of the whole answer would copy the bundle text (up to 16 KB) into
# a new string, in one piece, from a heap that a day of taps and an exchange's
# TLS session have cut up: with a 100-entry deny list a terminal found no 6 KB
# in one piece among 33 KB free and retried for ever. Here the bundle string
# is decoded in place, inside the uplink's receive buffer, and only the rest
# of the answer (about 200 bytes: the bundle string replaced by 0) goes to
# json.loads. The scans are viper (machine code): a Python step per escape
# held the event loop far too long on the ESP32 estimate (bench/esp32_uplink.py).

import json

import micropython

_KEY = b'"bundle"'


class AnswerError(ValueError):
    # args[0]: a short reason for the log
    pass


@micropython.viper
def _string_end(buf, i: int, end: int) -> int:
    # The closing quote of the JSON string whose content starts at i, or -1.
    # A bundle near 16 KB has over a thousand escaped quotes.
    p = ptr8(buf)
    while i < end:
        c = p[i]
        if c == 0x22:
            return i
        if c == 0x5C:
            i += 2
        else:
            i += 1
    return -1


@micropython.viper
def _hexval(h: int) -> int:
    if h >= 0x30 and h <= 0x39:
        return h - 0x30
    if h >= 0x41 and h <= 0x46:
        return h - 0x37
    if h >= 0x61 and h <= 0x66:
        return h - 0x57
    return -1


@micropython.viper
def _unescape(buf, a: int, b: int) -> int:
    # The JSON string content buf[a:b] decoded in place (escapes only shrink
    # it, and the write index never passes the read index); returns its new
    # end, -1 for a bad escape, -2 for a character past ASCII (the bundle
    # text is ASCII, docs/upload.md: \uXXXX is taken only below 0x80).
    p = ptr8(buf)
    w = a
    r = a
    while r < b:
        c = p[r]
        if c != 0x5C:
            p[w] = c
            w += 1
            r += 1
            continue
        if r + 1 >= b:
            return -1
        c = p[r + 1]
        r += 2
        if c == 0x22 or c == 0x5C or c == 0x2F:
            v = c
        elif c == 0x62:
            v = 0x08
        elif c == 0x66:
            v = 0x0C
        elif c == 0x6E:
            v = 0x0A
        elif c == 0x72:
            v = 0x0D
        elif c == 0x74:
            v = 0x09
        elif c == 0x75:
            if r + 4 > b:
                return -1
            v = 0
            k = r
            while k < r + 4:
                d = int(_hexval(p[k]))
                if d < 0:
                    return -1
                v = (v << 4) | d
                k += 1
            if v >= 0x80:
                return -2
            r += 4
        else:
            return -1
        p[w] = v
        w += 1
    return w


def parse(buf, start, stop):
    """The answer in buf[start:stop] (a bytearray: the uplink's buffer):
    (ack, bundle text as a memoryview of buf, sig hex str). Only the ack is
    checked for shape here; text and sig are None when the answer has no
    bundle string. The bundle's bytes in buf are overwritten by its decoded
    form. AnswerError if the answer is not that object."""
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
                if q < 0:
                    raise AnswerError("bundle string not closed")
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
    end = _unescape(buf, text[0], text[1])
    if end < 0:
        raise AnswerError("bad escape" if end == -1 else "bundle not ASCII")
    return ack, memoryview(buf)[text[0]:end], sig if isinstance(sig, str) else None
