# heap: 160k  (pos.rules and the sig modules are compiled from source here; a device loads .mpy)
# pos.sig / pos.p256 internals, inside the unix port (run by tests/test_firmware_unit.py).
# Bulk correctness (Wycheproof, cross-checks against `cryptography`) lives in tests/test_sig.py.
import os
import sys

import unit
from pos import p256
from pos.sig import is_warm, verify, warm

# Recorded at import, before any test runs: the result does not depend on the
# order the tests run in.
_GTAB_AT_IMPORT = "pos.p256_gtab" in sys.modules
# Then the 16 KB G table now, while the heap is in one piece (as app.py does at
# boot), so that where it lands does not depend on which test verifies first.
from pos import p256_gtab  # noqa: E402,F401

# Wycheproof ecdsa_secp256r1_sha256_p1363 tcId 1.
PUB = bytes.fromhex(
    "042927b10512bae3eddcfe467828128bad2903269919f7086069c8c4df6c732838"
    "c7787964eaac00e5921fb1498a60f4606766b3d9685001558d1a974e7341513e"
)
MSG = bytes.fromhex("313233343030")
SIG = bytes.fromhex(
    "2ba3a8be6b94d5ec80a6d9d1190a436effe50d85a1eee859b8cc6af9bd5c2e18"
    "4cd60b855d442f5b3c7b11eb6c4e0ae7525fe710fab9aa7c77a67f79e6fadd76"
)
GX = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
GY = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5


def compressed(pub):
    return bytes([2 + (pub[64] & 1)]) + pub[1:33]


def sec1(entry):
    # A table entry (affine x || y, little-endian) as an uncompressed SEC1 point.
    x = int.from_bytes(entry[:32], "little")
    y = int.from_bytes(entry[32:64], "little")
    return b"\x04" + x.to_bytes(32, "big") + y.to_bytes(32, "big")


def g_multiples():
    # Distinct valid public keys without a key generator: the odd multiples
    # of G that the Q-table builder produces for G itself.
    t = p256._table(GX, GY)
    return [sec1(t[o : o + 64]) for o in range(0, len(t), 64)]


def fresh():
    # Each test starts from an empty key cache, no pinned keys and no reserved
    # tables (a test may fail half way, or run first or last).
    p256.shed()
    del p256._pinned[:]
    import gc
    gc.collect()


def test_import_is_light():
    # The G table is imported on first ES256 verify, not with pos.sig.
    assert not _GTAB_AT_IMPORT


def test_known_vector_and_compressed_key():
    fresh()
    bad = bytearray(SIG)
    bad[63] ^= 1
    p256._cache.clear()
    # Cold: a first verify builds no table; warm(): the same answers from the table.
    for state in ("cold", "warm"):
        assert verify("ES256", PUB, MSG, SIG) is True, state
        assert verify("ES256", compressed(PUB), MSG, SIG) is True, state
        assert verify("ES256", PUB, MSG + b"!", SIG) is False, state
        assert verify("ES256", PUB, MSG, bad) is False, state
        assert is_warm("ES256", PUB) is (state == "warm")
        warm("ES256", PUB)


def test_warm_api():
    fresh()
    p256._cache.clear()
    pub = g_multiples()[5]
    assert not is_warm("ES256", pub)
    assert warm("ES256", pub) is True
    assert is_warm("ES256", pub)
    assert warm("ES256", b"\x04" + bytes(64)) is False
    assert warm("RS256", pub) is False
    assert is_warm("ES256", None) is False


def test_cache_is_bounded_lru():
    fresh()
    keys = g_multiples()
    first = keys[0]
    for k in keys[: p256.CACHE_KEYS]:
        assert warm("ES256", k)
    warm("ES256", first)  # most recently used now
    for k in keys[p256.CACHE_KEYS : p256.CACHE_KEYS + 3]:
        warm("ES256", k)
    assert len(p256._cache) == p256.CACHE_KEYS
    assert is_warm("ES256", first)
    assert not is_warm("ES256", keys[1])


def test_table_matches_decoded_point():
    # Entry 0 of chunk 0 is Q itself; entry 1 is 3Q; chunk k starts at 2^(L*k) Q.
    fresh()
    pub = g_multiples()[3]
    t = p256.key_table(pub)
    assert sec1(t[:64]) == pub
    t3 = p256._table(GX, GY)
    per_chunk = 1 << (p256.Q_WINDOW - 2)
    # 2^L * G is the first entry of G's chunk 1 in the committed G table.
    from pos import p256_gtab

    assert bytes(t3[64 * per_chunk : 64 * per_chunk + 64]) == p256_gtab.G[1][:64]
    # ... and 3G is G's entry 1.
    assert bytes(t3[64:128]) == p256_gtab.G[0][64:128]


def hints_of(pub):
    # 2^64 Q, 2^128 Q, 2^192 Q from the key's own table (chunks of p256._L bits).
    t = p256._table(*p256.decode_point(pub))
    from pos import p256_gtab
    per = (1 << (p256.Q_WINDOW - 2)) * (64 // p256_gtab.L)
    return b"".join(sec1(t[64 * per * k:64 * per * k + 64]) for k in (1, 2, 3))


def test_with_hints_a_cold_verify_is_cut_and_bad_hints_fail_it():
    fresh()
    p256._cache.clear()
    h = hints_of(PUB)
    assert verify("ES256", PUB, MSG, SIG, h) is True
    assert verify("ES256", PUB, MSG + b"!", SIG, h) is False
    assert not is_warm("ES256", PUB)  # hints build no table either
    swapped = h[65:130] + h[:65] + h[130:]  # on the curve, in the wrong places
    assert verify("ES256", PUB, MSG, SIG, swapped) is False
    assert verify("ES256", PUB, MSG, SIG, h[:-65]) is False  # too short
    assert verify("ES256", PUB, MSG, SIG, h[:65] + compressed(h[65:130]) + h[130:] + bytes(32)) is False
    off = bytearray(h)
    off[100] ^= 1  # second point off the curve
    assert verify("ES256", PUB, MSG, SIG, bytes(off)) is False
    assert verify("ES256", PUB, MSG, SIG, "not bytes") is False
    # A key with a table ignores hints: the table is the key's own.
    warm("ES256", PUB)
    assert verify("ES256", PUB, MSG, SIG, swapped) is True
    assert p256.hints_match(PUB, h) is True and p256.hints_match(PUB, swapped) is False
    p256._cache.clear()
    assert p256.hints_match(PUB, h) is None


class _Cred:
    def __init__(self, key, hints):
        self.device_key, self.device_hints, self.issuer_kid = key, hints, b"ISSUER01"


def test_warm_in_the_verifier_checks_hints_against_the_key():
    fresh()
    from pos import rules
    v = rules.Verifier(rules.Policy())
    pub = g_multiples()[9]
    p256._cache.clear()
    assert v.warm(_Cred(pub, hints_of(pub))) is True and is_warm("ES256", pub)
    assert v.no_hints == set()
    p256._cache.clear()
    h = hints_of(pub)
    assert v.warm(_Cred(pub, h[65:130] + h[:65] + h[130:])) is False
    assert v.no_hints == {b"ISSUER01"}  # that issuer's hints are not used again
    assert v.warm(_Cred(pub, None)) is True  # already warm: nothing to check


def test_pinned_keys_stay_and_have_wider_tables():
    fresh()
    p256._cache.clear()
    del p256._pinned[:]
    keys = g_multiples()
    assert warm("ES256", keys[20]) and warm("ES256", keys[20], True)  # re-built wider
    assert len(p256._pinned) == 1 and len(p256._pinned[0][1]) == 2 * len(p256._table(GX, GY))
    assert all(e[0] != keys[20] for e in p256._cache)
    for k in keys[: p256.CACHE_KEYS + 2]:
        warm("ES256", k)
    assert is_warm("ES256", keys[20])  # not evicted by the LRU
    p256._cache.clear()
    import gc
    gc.collect()  # this test heap holds the code too: room for 4 KB tables
    for k in keys[21 : 21 + p256.PIN_KEYS]:
        warm("ES256", k, True)
    assert len(p256._pinned) == p256.PIN_KEYS  # bounded: the last one went to the LRU
    del p256._pinned[:]


def test_reserved_tables_are_reused_and_shed_frees_them():
    fresh()
    p256.shed()
    import gc
    gc.collect()
    p256.reserve()
    spare = [id(t) for t in p256._spare]
    assert len(spare) == p256.CACHE_KEYS
    keys = g_multiples()
    for k in keys[: p256.CACHE_KEYS + 3]:
        warm("ES256", k)
    # Every table the LRU holds is one of the reserved buffers: no new ones.
    assert sorted(id(e[1]) for e in p256._cache) == sorted(spare)
    assert verify("ES256", keys[p256.CACHE_KEYS + 2], b"x", bytes(64)) is False
    p256.shed()
    assert p256._cache == [] and p256._spare == []
    from pos import rules
    v = rules.Verifier(rules.Policy())
    v.cache[b"h"] = object()
    warm("ES256", keys[0])
    v.shed()
    assert v.cache == {} and not is_warm("ES256", keys[0])


def test_inverse():
    for m in (p256._P, p256._N):
        for _ in range(20):
            a = int.from_bytes(os.urandom(32), "big") % m or 1
            assert a * p256._inv(a, m) % m == 1
    unit.raises(ValueError, p256._inv, 0, p256._N)


def test_decode_point_rejects():
    p = p256._P
    assert p256.decode_point(PUB) is not None
    assert p256.decode_point(b"\x04" + (p + 1).to_bytes(32, "big") + PUB[33:]) is None  # x >= p
    off = bytearray(PUB)
    off[64] ^= 1
    assert p256.decode_point(bytes(off)) is None  # not on the curve
    assert p256.decode_point(b"\x02" + p.to_bytes(32, "big")) is None
    assert p256.decode_point(b"\x00") is None  # infinity has no place here


def test_compressed_parity():
    pub = g_multiples()[7]
    c = compressed(pub)
    assert p256.decode_point(c) == p256.decode_point(pub)
    flipped = bytes([c[0] ^ 1]) + c[1:]
    x, y = p256.decode_point(flipped)
    assert y == p256._P - int.from_bytes(pub[33:], "big")


unit.run(globals())
