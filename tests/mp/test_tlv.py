# Canonical TLV codec, in the unix port: round trips, strictness, bounds, fuzz.
import os
import gc
import unit
from pos import tlv

SPEC = ((0x01, 1, 1, True), (0x02, 0, 300, False), (0x05, 4, 4, True))


def dec(b):
    return tlv.decode(b, SPEC, [None] * 3)


def test_round_trip_all_length_forms():
    for n in (0, 1, 127, 128, 255, 256, 300):
        b = tlv.encode(((0x01, b"\x07"), (0x02, b"x" * n), (0x05, b"abcd")))
        f = dec(b)
        assert bytes(f[0]) == b"\x07" and len(f[1]) == n and bytes(f[2]) == b"abcd"


def test_header_forms_are_minimal():
    assert tlv.encode(((1, b"a" * 127),))[:2] == b"\x01\x7f"
    assert tlv.encode(((1, b"a" * 128),))[:3] == b"\x01\x81\x80"
    assert tlv.encode(((1, b"a" * 256),))[:4] == b"\x01\x82\x01\x00"


def test_optional_field_may_be_absent():
    f = dec(b"\x01\x01\x07\x05\x04abcd")
    assert f[1] is None


def test_rejects_non_minimal_length():
    unit.raises(tlv.TLVError, dec, b"\x01\x81\x01\x07\x05\x04abcd")
    unit.raises(tlv.TLVError, dec, b"\x01\x01\x07\x02\x82\x00\x10" + b"x" * 16 + b"\x05\x04abcd")


def test_rejects_order_repeat_unknown_missing():
    unit.raises(tlv.TLVError, dec, b"\x05\x04abcd\x01\x01\x07")           # order
    unit.raises(tlv.TLVError, dec, b"\x01\x01\x07\x01\x01\x07\x05\x04abcd")  # repeat
    unit.raises(tlv.TLVError, dec, b"\x01\x01\x07\x03\x00\x05\x04abcd")    # unknown
    unit.raises(tlv.TLVError, dec, b"\x01\x01\x07")                        # missing


def test_rejects_bounds_and_overrun():
    unit.raises(tlv.TLVError, dec, b"\x01\x02\x07\x07\x05\x04abcd")  # too long for field
    unit.raises(tlv.TLVError, dec, b"\x01\x01\x07\x05\x03abc")       # too short for field
    unit.raises(tlv.TLVError, dec, b"\x01\x01\x07\x05\x04ab")        # overrun
    unit.raises(tlv.TLVError, dec, b"\x01\x01\x07\x02\x83\x00\x00\x01")  # length form
    unit.raises(tlv.TLVError, dec, b"\x01")                          # truncated header


def test_values_are_views_not_copies():
    b = bytearray(b"\x01\x01\x07\x05\x04abcd")
    f = dec(b)
    b[6] = ord("Z")
    assert bytes(f[2]) == b"aZcd"


def test_put_uint_and_bounds():
    buf = bytearray(8)
    assert tlv.put_uint(buf, 0, 0x24, 1250, 4) == 6
    assert bytes(buf[:6]) == b"\x24\x04\x00\x00\x04\xe2"
    unit.raises(tlv.TLVError, tlv.put_uint, buf, 0, 0x24, 1 << 32, 4)
    unit.raises(tlv.TLVError, tlv.put_uint, buf, 0, 0x24, -1, 4)
    assert tlv.uint(memoryview(buf)[2:6]) == 1250


def test_random_and_mutated_input_never_escapes():
    good = tlv.encode(((0x01, b"\x07"), (0x02, b"y" * 200), (0x05, b"abcd")))
    out = [None] * 3
    gc.collect()
    before = gc.mem_free()
    for i in range(6000):
        if i & 1:
            b = bytearray(good)
            for _ in range(1 + i % 4):
                r = os.urandom(2)
                b[r[0] % len(b)] = r[1]
            b = b[: len(b) - (i % 7)]
        else:
            b = os.urandom(i % 64)
        try:
            tlv.decode(b, SPEC, out)
        except tlv.TLVError:
            pass
    gc.collect()
    assert before - gc.mem_free() < 4096, "decoder leaks memory"


unit.run(globals())
