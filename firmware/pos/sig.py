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


def verify(alg, public_key, message, signature):
    key = _bytes(public_key)
    msg = _bytes(message)
    sig = _bytes(signature)
    if key is None or msg is None or sig is None:
        return False
    try:
        if alg == "ES256":
            return p256.verify_digest(key, hashlib.sha256(msg).digest(), sig)
        if alg == "RS256":
            return rsa.verify_digest(key, hashlib.sha256(msg).digest(), sig)
    except (ValueError, TypeError, IndexError, OverflowError):
        # Defensive: the checks above should leave nothing to raise.
        return False
    return False


def warm(alg, public_key):
    """Build and cache the per-key tables now (e.g. while idle). True if the key is usable."""
    key = _bytes(public_key)
    if alg != "ES256" or key is None:
        return False
    return p256.key_table(key) is not None


def is_warm(alg, public_key):
    key = _bytes(public_key)
    return alg == "ES256" and key is not None and p256.is_warm(key)
