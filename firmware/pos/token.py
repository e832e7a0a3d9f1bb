# The signed wallet token: the AUTHORIZE request the terminal sends, the wallet's
# answer (issuer credential + counter + device signature), and the exact byte
# strings each signature covers. Layouts are specified in PROTOCOL.md.

from micropython import const

from pos import tlv

VERSION = const(1)
ALG_ES256 = const(1)
ALG_RS256 = const(2)

# Domain separation: a credential signature can never be replayed as a tap
# signature or vice versa, and a future version cannot be confused with this one.
CRED_DOMAIN = b"OFFPAY-CRED-V1\x00"
AUTH_DOMAIN = b"OFFPAY-AUTH-V1\x00"

# Credential fields (tags 0x01..0x1F).
T_CRED_VERSION = const(0x01)
T_ISSUER_KID = const(0x02)
T_ISSUER_ALG = const(0x03)
T_WALLET_ID = const(0x04)
T_SERIAL = const(0x05)
T_DEVICE_ALG = const(0x06)
T_DEVICE_KEY = const(0x07)
T_TAP_LIMIT = const(0x08)
T_OFFLINE_LIMIT = const(0x09)
T_CRED_CURRENCY = const(0x0A)
T_NOT_BEFORE = const(0x0B)
T_NOT_AFTER = const(0x0C)
T_DEVICE_HINTS = const(0x0D)  # optional: 2^64, 2^128, 2^192 times the device key
T_ISSUER_SIG = const(0x1F)

# AUTHORIZE command data (0x21..0x28).
T_VERSION = const(0x21)
T_TERMINAL_ID = const(0x22)
T_MERCHANT_ID = const(0x23)
T_AMOUNT = const(0x24)
T_CURRENCY = const(0x25)
T_UN = const(0x26)
T_TIME = const(0x27)
T_SEQ = const(0x28)

# AUTHORIZE response data (0x31..0x34); 0x35 is in the signed message, and in
# the answer by reference (P1 = 01, PROTOCOL.md 5.7): 32, 33, 34, 35, then the
# credential as 0x36, last, so a terminal that holds it can stop reading.
T_CREDENTIAL = const(0x31)
T_COUNTER = const(0x32)
T_SIG_ALG = const(0x33)
T_DEVICE_SIG = const(0x34)
T_CRED_HASH = const(0x35)
T_REF_CREDENTIAL = const(0x36)

MAX_CREDENTIAL = const(1024)
HINTS_LEN = const(195)  # three uncompressed SEC1 points
MAX_MERCHANT_ID = const(16)
TERMINAL_ID_LEN = const(8)
UN_LEN = const(16)
WALLET_ID_LEN = const(16)
MAX_REQUEST = const(80)      # largest AUTHORIZE data field (see PROTOCOL.md)
MAX_RESPONSE = const(1200)   # largest AUTHORIZE response data we will accept
MAX_SIGNED = const(160)      # domain + request + counter/alg/hash fields
SIGNED_FIELDS = const(75)    # 32 04 counter | 33 01 alg | 34 40 signature
REF_HEAD = const(109)        # SIGNED_FIELDS | 35 20 credential hash: the fixed start of an answer by reference

CRED_SPEC = (
    (T_CRED_VERSION, 1, 1, True),
    (T_ISSUER_KID, 8, 8, True),
    (T_ISSUER_ALG, 1, 1, True),
    (T_WALLET_ID, 16, 16, True),
    (T_SERIAL, 8, 8, True),
    (T_DEVICE_ALG, 1, 1, True),
    (T_DEVICE_KEY, 33, 65, True),
    (T_TAP_LIMIT, 4, 4, True),
    (T_OFFLINE_LIMIT, 4, 4, True),
    (T_CRED_CURRENCY, 2, 2, True),
    (T_NOT_BEFORE, 4, 4, True),
    (T_NOT_AFTER, 4, 4, True),
    (T_DEVICE_HINTS, HINTS_LEN, HINTS_LEN, False),
    (T_ISSUER_SIG, 64, 512, True),
)

RESPONSE_SPEC = (
    (T_CREDENTIAL, 1, MAX_CREDENTIAL, True),
    (T_COUNTER, 4, 4, True),
    (T_SIG_ALG, 1, 1, True),
    (T_DEVICE_SIG, 64, 64, True),
)

REF_RESPONSE_SPEC = (
    (T_COUNTER, 4, 4, True),
    (T_SIG_ALG, 1, 1, True),
    (T_DEVICE_SIG, 64, 64, True),
    (T_CRED_HASH, 32, 32, True),
    (T_REF_CREDENTIAL, 1, MAX_CREDENTIAL, True),
)

REQUEST_SPEC = (
    (T_VERSION, 1, 1, True),
    (T_TERMINAL_ID, 8, 8, True),
    (T_MERCHANT_ID, 1, 16, True),
    (T_AMOUNT, 4, 4, True),
    (T_CURRENCY, 2, 2, True),
    (T_UN, 16, 16, True),
    (T_TIME, 4, 4, True),
    (T_SEQ, 4, 4, True),
)


class Credential:
    """A parsed issuer credential. Holds its own copy of the bytes, so it can be
    cached after the receive buffer is reused."""

    def __init__(self, raw):
        self.raw = bytes(raw)
        f = tlv.decode(self.raw, CRED_SPEC, [None] * len(CRED_SPEC))
        if f[0][0] != VERSION:
            raise tlv.TLVError("credential version")
        self.issuer_kid = bytes(f[1])
        self.issuer_alg = f[2][0]
        self.wallet_id = bytes(f[3])
        if self.wallet_id == bytes(WALLET_ID_LEN):
            raise tlv.TLVError("zero wallet id")  # reserved: marks a free table slot
        self.serial = bytes(f[4])
        self.device_alg = f[5][0]
        self.device_key = bytes(f[6])
        self.tap_limit = tlv.uint(f[7])
        self.offline_limit = tlv.uint(f[8])
        self.currency = tlv.uint(f[9])
        self.not_before = tlv.uint(f[10])
        self.not_after = tlv.uint(f[11])
        self.device_hints = f[12]  # a view into raw (or None): cached credentials stay small
        sig = f[13]
        self.issuer_sig = bytes(sig)
        # The signature is the last field, so the signed body is everything before it.
        self.body_len = len(self.raw) - tlv.header_len(len(sig)) - len(sig)

    def signed_bytes(self):
        return CRED_DOMAIN + self.raw[:self.body_len]


def encode_request(buf, pos, terminal_id, merchant_id, amount, currency, un, ttime, seq):
    """Write the AUTHORIZE data field into `buf` at `pos`; returns the end."""
    pos = tlv.put_uint(buf, pos, T_VERSION, VERSION, 1)
    pos = tlv.put(buf, pos, T_TERMINAL_ID, terminal_id)
    pos = tlv.put(buf, pos, T_MERCHANT_ID, merchant_id)
    pos = tlv.put_uint(buf, pos, T_AMOUNT, amount, 4)
    pos = tlv.put_uint(buf, pos, T_CURRENCY, currency, 2)
    pos = tlv.put(buf, pos, T_UN, un)
    pos = tlv.put_uint(buf, pos, T_TIME, ttime, 4)
    return tlv.put_uint(buf, pos, T_SEQ, seq, 4)


def ref_head(data):
    """The credential hash an answer by reference starts with (a view), or None
    when `data` does not start with 32 04 | 33 01 | 34 40 | 35 20 in full. The
    fields have fixed lengths, so their headers sit at fixed offsets."""
    if len(data) < REF_HEAD or data[0] != T_COUNTER or data[1] != 4 or data[6] != T_SIG_ALG \
            or data[7] != 1 or data[9] != T_DEVICE_SIG or data[10] != 64 \
            or data[75] != T_CRED_HASH or data[76] != 32:
        return None
    return data[77:REF_HEAD]


def unreference(buf, n, credential, scratch):
    """Turn the answer by reference in bytearray `buf`[:n] into the version-1
    response it stands for (31 credential | 32 | 33 | 34), in place, and
    return its length: no second 1.2 KB buffer. `credential`: its bytes when
    the answer stopped after tag 35 (the terminal holds them), or None to use
    the answer's own tag 36, which the caller has decoded and checked.
    `scratch`: 75 bytes for the signed fields while the credential moves."""
    mv = memoryview(buf)
    scratch[:SIGNED_FIELDS] = mv[:SIGNED_FIELDS]
    if credential is None:
        # 36 LL <credential> ends the answer at REF_HEAD + m; tag 31 has the
        # same length header, so the block moves to the front and only the
        # tag byte changes. Moved in pieces no longer than the distance, so
        # no piece overlaps its own copy (slice assignment may be a memcpy).
        m = n - REF_HEAD
        dst = 0
        while dst < m:
            k = REF_HEAD if m - dst > REF_HEAD else m - dst
            mv[dst:dst + k] = mv[REF_HEAD + dst:REF_HEAD + dst + k]
            dst += k
        buf[0] = T_CREDENTIAL
    else:
        m = tlv.put(buf, 0, T_CREDENTIAL, credential)
    buf[m:m + SIGNED_FIELDS] = scratch
    return m + SIGNED_FIELDS


def signed_message(buf, request, counter, alg, cred_hash):
    """The exact bytes the device signs, built into `buf`; returns the length.

    AUTH_DOMAIN || request data (as sent) || counter || alg || SHA-256(credential).
    """
    n = len(AUTH_DOMAIN)
    buf[0:n] = AUTH_DOMAIN
    m = len(request)
    buf[n:n + m] = request
    pos = tlv.put_uint(buf, n + m, T_COUNTER, counter, 4)
    pos = tlv.put_uint(buf, pos, T_SIG_ALG, alg, 1)
    return tlv.put(buf, pos, T_CRED_HASH, cred_hash)
