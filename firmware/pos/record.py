# The payment record: what the terminal stores in its journal for each approved
# payment and later uploads (PROTOCOL.md section 9). Canonical TLV:
#
#   41  AUTHORIZE request data exactly as sent (tags 21..28)
#   42  AUTHORIZE response data as received (tags 31..34)
#   43  the till's reference
#   44  the journal's upload cursor when the payment was taken (u32): the
#       acquirer sums a wallet's offline spend from there (docs/upload.md)
#
# encode() builds one into a preallocated buffer; summary() reads the few fields
# boot needs without parsing the credential, so replaying a full journal stays
# within the watchdog's patience on the device.

from micropython import const

from pos import till, tlv, token

MAX = const(1400)
T_REQUEST = const(0x41)
T_RESPONSE = const(0x42)
T_REFERENCE = const(0x43)
T_CURSOR = const(0x44)
SPEC = ((T_REQUEST, 1, token.MAX_REQUEST, True),
        (T_RESPONSE, 1, token.MAX_RESPONSE, True),
        (T_REFERENCE, 0, till.MAX_REF, True),
        (T_CURSOR, 4, 4, False))
_REQ_MIN = const(56)   # tags 21..28 with a 1-byte merchant id
_CRED_HEAD = const(49)  # 01 01 01 | 02 08 kid | 03 01 alg | 04 10 wallet id | 05 08 serial | 06 01 | 07 LL


def encode(buf, request, response, ref, cursor):
    """Write a record into bytearray `buf`; returns its length. TLVError when
    it does not fit."""
    if 2 + len(request) + 4 + len(response) + 2 + len(ref) + 6 > len(buf):
        raise tlv.TLVError("record too large")
    pos = tlv.put(buf, 0, T_REQUEST, request)
    pos = tlv.put(buf, pos, T_RESPONSE, response)
    pos = tlv.put(buf, pos, T_REFERENCE, ref)
    return tlv.put_uint(buf, pos, T_CURSOR, cursor, 4)


def decode(payload, out=None):
    """[request, response, reference, cursor-or-None] views of a record."""
    return tlv.decode(payload, SPEC, out or [None] * 4)


def _u32(b, i):
    return (b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]


def summary(payload, f):
    """(issuer kid, wallet id, serial, not-before, counter, amount, terminal
    time, reference) of a record; views and ints. `f` is a 4-slot scratch
    list. The outer TLV is checked in full; the request and the credential's
    fields are read at the offsets version 1 puts them, each tag checked,
    instead of decoding the whole credential (the journal's CRC already
    vouches for the bytes). TLVError if anything is not where it belongs."""
    tlv.decode(payload, SPEC, f)
    q = f[0]
    if len(q) < _REQ_MIN or q[0] != token.T_VERSION or q[3] != token.T_TERMINAL_ID \
            or q[13] != token.T_MERCHANT_ID:
        raise tlv.TLVError("request layout")
    a = 15 + q[14]  # after the merchant id
    if len(q) != a + 40 or q[a] != token.T_AMOUNT or q[a + 28] != token.T_TIME:
        raise tlv.TLVError("request layout")
    r = f[1]
    # 31 <len> credential ... 32 04 counter 33 01 alg 34 40 sig: the counter
    # sits 75 bytes before the end.
    n = len(r)
    c = 2 if r[1] < 0x80 else r[1] - 0x7E  # 31 LL | 31 81 LL | 31 82 HH LL
    if n < c + _CRED_HEAD + 75 or r[0] != token.T_CREDENTIAL or r[n - 75] != token.T_COUNTER \
            or r[c + 3] != token.T_ISSUER_KID or r[c + 16] != token.T_WALLET_ID \
            or r[c + 34] != token.T_SERIAL or r[c + 47] != token.T_DEVICE_KEY:
        raise tlv.TLVError("response layout")
    k = c + 49 + r[c + 48]  # after the device key: 08, 09, 0A, then 0B not-before
    if k + 22 > n - 75 or r[k + 16] != token.T_NOT_BEFORE:
        raise tlv.TLVError("response layout")
    return (r[c + 5:c + 13], r[c + 18:c + 34], r[c + 36:c + 44], _u32(r, k + 18),
            _u32(r, n - 73), _u32(q, a + 2), _u32(q, a + 30), f[2])
