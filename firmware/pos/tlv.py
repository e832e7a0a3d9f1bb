# Compact deterministic TLV, the encoding of every wallet-protocol message.
#
# A BER-TLV subset as in EMV: one-byte tags, definite lengths in minimal form
# (0..127 in one byte, 0x81 LL, 0x82 HH LL), tags strictly ascending so there is
# exactly one encoding of a message and a signed blob can be re-derived byte for
# byte. Every length is checked against the field's bounds before anything is
# sliced, and decoding returns memoryview slices of the caller's buffer: no copy,
# no allocation proportional to the input.

from micropython import const

_MAX_LEN = const(0xFFFF)


class TLVError(ValueError):
    pass


def header_len(n):
    if n < 0x80:
        return 2
    if n < 0x100:
        return 3
    return 4


def put(buf, pos, tag, value):
    """Write tag/length/value into bytearray `buf` at `pos`; returns the new end."""
    n = len(value)
    if n > _MAX_LEN:
        raise TLVError("value too long")
    buf[pos] = tag
    if n < 0x80:
        buf[pos + 1] = n
        pos += 2
    elif n < 0x100:
        buf[pos + 1] = 0x81
        buf[pos + 2] = n
        pos += 3
    else:
        buf[pos + 1] = 0x82
        buf[pos + 2] = n >> 8
        buf[pos + 3] = n & 0xFF
        pos += 4
    buf[pos:pos + n] = value
    return pos + n


def put_uint(buf, pos, tag, value, size):
    """Fixed-width big-endian unsigned integer field."""
    if value < 0 or value >> (8 * size):
        raise TLVError("integer out of range")
    buf[pos] = tag
    buf[pos + 1] = size
    pos += 2
    i = size
    while i:
        i -= 1
        buf[pos + i] = value & 0xFF
        value >>= 8
    return pos + size


def encode(fields):
    """fields: sequence of (tag, bytes) in ascending tag order -> bytes."""
    total = 0
    last = -1
    for tag, value in fields:
        if not last < tag <= 0xFF:
            raise TLVError("tags not strictly ascending")
        last = tag
        total += header_len(len(value)) + len(value)
    buf = bytearray(total)
    pos = 0
    for tag, value in fields:
        pos = put(buf, pos, tag, value)
    return bytes(buf)


def decode(data, spec, out):
    """Parse canonical TLV `data` against `spec` into the list `out`.

    spec is a tuple of (tag, min_len, max_len, required) sorted by tag; out has one
    slot per spec entry and receives a memoryview of the value (or None).
    Unknown, repeated or out-of-order tags, non-minimal lengths, lengths beyond the
    field's bounds or the buffer, and missing required fields raise TLVError.
    """
    mv = memoryview(data)
    end = len(mv)
    n = len(spec)
    for i in range(n):
        out[i] = None
    pos = 0
    si = 0
    while pos < end:
        if end - pos < 2:
            raise TLVError("truncated header")
        tag = mv[pos]
        ln = mv[pos + 1]
        pos += 2
        if ln >= 0x80:
            if ln == 0x81:
                if pos >= end:
                    raise TLVError("truncated length")
                ln = mv[pos]
                pos += 1
                if ln < 0x80:
                    raise TLVError("non-minimal length")
            elif ln == 0x82:
                if end - pos < 2:
                    raise TLVError("truncated length")
                ln = (mv[pos] << 8) | mv[pos + 1]
                pos += 2
                if ln < 0x100:
                    raise TLVError("non-minimal length")
            else:
                raise TLVError("bad length form")
        while si < n and spec[si][0] < tag:
            si += 1
        if si == n or spec[si][0] != tag:
            raise TLVError("unexpected tag %02x" % tag)
        if out[si] is not None:
            raise TLVError("repeated tag %02x" % tag)
        s = spec[si]
        if ln < s[1] or ln > s[2]:
            raise TLVError("bad length for tag %02x" % tag)
        if ln > end - pos:
            raise TLVError("value overruns buffer")
        out[si] = mv[pos:pos + ln]
        pos += ln
        si += 1
    for i in range(n):
        if out[i] is None and spec[i][3]:
            raise TLVError("missing tag %02x" % spec[i][0])
    return out


def uint(v):
    """Big-endian unsigned integer from a (short) memoryview/bytes."""
    x = 0
    for b in v:
        x = (x << 8) | b
    return x
