# RSASSA-PKCS1-v1_5 / SHA-256 verification, e = 65537, 2048..4096-bit moduli.
#
# The encoded block is rebuilt from the digest and compared whole against
# s^e mod n: the padding is never parsed, so none of the classic
# Bleichenbacher-style parser laxities (short padding, trailing garbage,
# DigestInfo variants such as a missing NULL) can be accepted.
from micropython import const

_MIN_BITS = const(2048)
_MAX_BITS = const(4096)
# DER DigestInfo prefix for SHA-256 (with the NULL parameters).
_DI = b"\x30\x31\x30\x0d\x06\x09\x60\x86\x48\x01\x65\x03\x04\x02\x01\x05\x00\x04\x20"


def verify_digest(key, h, sig):
    """key: big-endian modulus bytes (leading zero bytes allowed); h: 32-byte SHA-256 digest."""
    if len(h) != 32 or len(key) > 1024:
        return False
    i = 0
    while i < len(key) and key[i] == 0:
        i += 1
    k = len(key) - i  # modulus length in bytes
    if k * 8 < _MIN_BITS or k * 8 > _MAX_BITS or len(sig) != k:
        return False
    n = int.from_bytes(key, "big")
    if n < 1 << (_MIN_BITS - 1) or not n & 1:
        return False  # fewer than 2048 bits, or even (not an RSA modulus)
    s = int.from_bytes(sig, "big")
    if s >= n:
        return False
    # s^65537 by 16 squarings and a multiply; written out because the
    # generic 3-argument pow() is slower here.
    x = s
    for _ in range(16):
        x = x * x % n
    x = x * s % n
    em = b"\x00\x01" + b"\xff" * (k - 3 - len(_DI) - 32) + b"\x00" + _DI + h
    return x.to_bytes(k, "big") == em
