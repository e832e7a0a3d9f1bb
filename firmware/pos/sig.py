# Signature verification for credentials: verify(alg, public_key, message, signature) -> bool.
#
# Malformed input of any kind (wrong type, length, encoding, unknown alg)
# yields False; only conditions that are not about the input (e.g. running
# out of memory) propagate.
import hashlib

from pos import p256, rsa


def _bytes(x):
    # bytes(int) would make a zero buffer and bytes(str) needs an encoding:
    # accept only real byte buffers.
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    return None


def _args(alg, public_key, message, signature, hints):
    # (key, msg, sig, hints) as bytes, or None for malformed input (the alg is
    # checked for str first: bytes == str makes MicroPython print a warning).
    # Hints matter to ES256 only; other algorithms pass them through unread.
    key = _bytes(public_key)
    msg = _bytes(message)
    sig = _bytes(signature)
    if key is None or msg is None or sig is None or not isinstance(alg, str):
        return None
    if alg == "ES256" and hints is not None:
        hints = _bytes(hints)
        if hints is None:
            return None
    return key, msg, sig, hints


def verify(alg, public_key, message, signature, hints=None):
    """True iff `signature` is valid for `message` (hashed here with SHA-256).

    ES256: ECDSA P-256, signature r||s (64 bytes), key SEC1 uncompressed (65)
    or compressed (33); s and n - s both verify, as ECDSA defines. RS256:
    PKCS#1 v1.5, e = 65537, key = big-endian modulus of 2048..4096 bits,
    signature exactly the modulus length; strict (e.g. a DigestInfo without
    the NULL parameters is rejected). Bytes arguments may be bytes, bytearray
    or memoryview; anything else gives False.

    hints (ES256 only): the credential's issuer-signed multiples of the key
    (PROTOCOL.md, tag 0D), or None. Trust them only when they come from a
    credential whose issuer signature has been verified.
    """
    a = _args(alg, public_key, message, signature, hints)
    if a is None:
        return False
    try:
        if alg == "ES256":
            return p256.verify_digest(a[0], hashlib.sha256(a[1]).digest(), a[2], a[3])
        if alg == "RS256":
            return rsa.verify_digest(a[0], hashlib.sha256(a[1]).digest(), a[2])
    except (ValueError, TypeError, IndexError, OverflowError):
        # Defensive: the checks above should leave nothing to raise.
        return False
    return False


def verify_pair(a, b):
    """Two verify() calls, a and b each (alg, public_key, message, signature,
    hints): (ok_a, ok_b), the same answers. When both are ES256 they share
    one modular inversion (~80 us in the unix port)."""
    pa = _args(*a)
    pb = _args(*b)
    if pa is None or pb is None or a[0] != "ES256" or b[0] != "ES256":
        return verify(*a), verify(*b)  # each answers for itself
    try:
        return p256.verify_digests((pa[0], hashlib.sha256(pa[1]).digest(), pa[2], pa[3]),
                                   (pb[0], hashlib.sha256(pb[1]).digest(), pb[2], pb[3]))
    except (ValueError, TypeError, IndexError, OverflowError):
        return verify(*a), verify(*b)


def warm(alg, public_key, pin=False):
    """Build and cache the per-key tables now (e.g. while idle). True if the key is usable.
    pin: keep them for good, wider (issuer keys; see p256.key_table)."""
    key = _bytes(public_key)
    if key is None or not isinstance(alg, str) or alg != "ES256":
        return False
    return p256.key_table(key, pin) is not None


def is_warm(alg, public_key):
    key = _bytes(public_key)
    return key is not None and isinstance(alg, str) and alg == "ES256" and p256.is_warm(key)
