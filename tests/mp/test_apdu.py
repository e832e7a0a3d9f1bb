# APDU layer: SELECT parsing, AUTHORIZE building, 61xx/6Cxx chaining, bounds.
import unit
from pos import apdu, tlv, token


class Wallet:
    """Serves `data` in chunks of `chunk` bytes with 61xx, like an HCE wallet."""

    def __init__(self, data, chunk=240, sw=b"\x90\x00"):
        self.data, self.chunk, self.sw = data, chunk, sw
        self.pending = b""
        self.calls = []

    def __call__(self, cmd):
        cmd = bytes(cmd)
        self.calls.append(cmd)
        if cmd[1] == 0xC0:
            out = self.pending
        else:
            out = self.data
        head, self.pending = out[:self.chunk], out[self.chunk:]
        if self.pending:
            n = len(self.pending)
            return head + bytes((0x61, n if n < 256 else 0))
        return head + self.sw


def test_select_command_bytes():
    assert apdu.SELECT == b"\x00\xa4\x04\x00\x08\xf0OFFPAY\x01\x00"


def test_parse_select():
    assert apdu.parse_select(b"\x01\x01\x01\x90\x00") is None
    assert apdu.parse_select(b"\x01\x02\x02\x03\x90\x00") == apdu.SW_FUNC_NOT_SUPPORTED
    assert apdu.parse_select(b"\x6a\x82") == 0x6A82
    unit.raises(apdu.APDUError, apdu.parse_select, b"\x90")


def test_select_options():
    # PROTOCOL.md 5.7: 81 beside 01 offers credential by reference; a list
    # without 01 is still refused, whatever options it names.
    assert apdu.parse_select(b"\x01\x02\x01\x81\x90\x00") is None
    assert apdu.offers(b"\x01\x02\x01\x81\x90\x00", apdu.OPT_BY_REFERENCE)
    assert not apdu.offers(b"\x01\x01\x01\x90\x00", apdu.OPT_BY_REFERENCE)
    assert not apdu.offers(b"\x01\x02\x01\x82\x90\x00", apdu.OPT_BY_REFERENCE)
    assert apdu.parse_select(b"\x01\x01\x81\x90\x00") == apdu.SW_FUNC_NOT_SUPPORTED
    unit.raises(tlv.TLVError, apdu.parse_select, b"\x01\x09" + b"\x01" * 9 + b"\x90\x00")  # over 8 entries
    # parse_select is version 1's, unchanged: it takes the option byte, and it
    # refuses any other field, which is why a hash cannot ride in the SELECT answer.
    unit.raises(tlv.TLVError, apdu.parse_select, b"\x01\x01\x01\x35\x20" + b"\xab" * 32 + b"\x90\x00")


def test_build_authorize_p1():
    buf = bytearray(96)
    n, data = apdu.build_authorize(buf, b"TERM0001", b"M-42", 1, 978, b"\x11" * 16, 1, 7,
                                   apdu.P1_BY_REFERENCE)
    assert bytes(buf[:4]) == b"\x80\xa0\x01\x00"
    again = bytearray(96)
    m, data2 = apdu.build_authorize(again, b"TERM0001", b"M-42", 1, 978, b"\x11" * 16, 1, 7)
    assert m == n and bytes(data) == bytes(data2) and again[2] == 0  # the request data is the same


def test_build_authorize_layout():
    buf = bytearray(96)
    n, data = apdu.build_authorize(buf, b"TERM0001", b"M-42", 1250, 978, b"\x11" * 16, 1764000000, 7)
    assert bytes(buf[:4]) == b"\x80\xa0\x00\x00"
    assert buf[4] == len(data) == n - 6
    assert buf[n - 1] == 0
    f = [None] * len(token.REQUEST_SPEC)
    from pos import tlv
    tlv.decode(data, token.REQUEST_SPEC, f)
    assert tlv.uint(f[3]) == 1250 and tlv.uint(f[4]) == 978 and bytes(f[2]) == b"M-42"


def test_chaining_reassembles_long_response():
    data = bytes(range(256)) * 3
    w = Wallet(data)
    c = apdu.Chained()
    sw, out = c.exchange(w, b"\x80\xa0\x00\x00\x01\x00\x00")
    assert sw == 0x9000 and bytes(out) == data
    assert len(w.calls) == 4 and w.calls[1][:4] == b"\x00\xc0\x00\x00"


def test_stop_ends_the_exchange_after_a_part():
    # A terminal that holds the rest (a credential by reference) sends no
    # GET RESPONSE once stop() says so; the exchange counts as complete.
    data = bytes(range(200)) * 3
    seen = []

    def stop(part):
        seen.append(len(part))
        return len(part) >= 240
    w = Wallet(data)
    c = apdu.Chained()
    sw, out = c.exchange(w, b"\x80\xa0\x01\x00\x01\x00\x00", stop)
    assert sw == 0x9000 and c.stopped and bytes(out) == data[:240] and len(w.calls) == 1
    assert seen == [240]
    # Not yet enough: asked again after every part, never after the last (90 00).
    seen.clear()
    w = Wallet(data)
    sw, out = c.exchange(w, b"\x80\xa0\x01\x00\x01\x00\x00", lambda part: seen.append(len(part)))
    assert sw == 0x9000 and not c.stopped and bytes(out) == data and seen == [240, 480]
    # Without stop the flag stays down; a wallet error is still an error.
    sw, out = c.exchange(Wallet(data), b"\x80\xa0\x00\x00\x01\x00\x00")
    assert not c.stopped and bytes(out) == data
    sw, out = c.exchange(lambda cmd: b"\x69\x82", b"\x80\xa0\x01\x00\x01\x00\x00", lambda p: True)
    assert sw == 0x6982 and not c.stopped


def test_unreference_in_place():
    # An answer by reference (32 | 33 | 34 | 35 | 36) becomes the version-1
    # response (31 | 32 | 33 | 34) in the same buffer, for every length form of
    # the credential's header, from the answer's tag 36 or from a held copy.
    sig = bytes(range(64))
    fields = tlv.encode(((0x32, b"\x00\x00\x00\x07"), (0x33, b"\x01"), (0x34, sig)))
    assert len(fields) == token.SIGNED_FIELDS
    scratch = bytearray(token.SIGNED_FIELDS)
    for size in (1, 74, 75, 76, 109, 127, 128, 200, 255, 256, 700, 1024):
        cred = bytes((i * 7 + size) & 0xFF for i in range(size))
        answer = fields + tlv.encode(((0x35, b"\x55" * 32), (0x36, cred)))
        want = tlv.encode(((0x31, cred),)) + fields
        buf = bytearray(token.MAX_RESPONSE)
        buf[:len(answer)] = answer
        n = token.unreference(buf, len(answer), None, scratch)
        assert bytes(buf[:n]) == want, size
        buf = bytearray(b"\xee" * token.MAX_RESPONSE)  # only the first part arrived
        buf[:token.REF_HEAD] = answer[:token.REF_HEAD]
        n = token.unreference(buf, token.REF_HEAD, cred, scratch)
        assert bytes(buf[:n]) == want, size
    assert token.ref_head(memoryview(answer)[:token.REF_HEAD]) == b"\x55" * 32
    assert token.ref_head(memoryview(answer)[:token.REF_HEAD - 1]) is None
    assert token.ref_head(b"\x31" + answer[1:]) is None
    assert token.ref_head(answer[:75] + b"\x35\x1f" + answer[77:]) is None


def test_chaining_overflow_is_refused():
    w = Wallet(b"x" * 5000)
    unit.raises(apdu.APDUError, apdu.Chained().exchange, w, b"\x80\xa0\x00\x00\x01\x00\x00")


def test_endless_chaining_is_refused():
    unit.raises(apdu.APDUError, apdu.Chained(8192).exchange, lambda c: b"\x00\x61\x01",
                b"\x80\xa0\x00\x00\x01\x00\x00")


def test_wrong_le_is_retried():
    calls = []

    def xfer(c):
        calls.append(bytes(c))
        return b"\x6c\x05" if len(calls) == 1 else b"hello\x90\x00"
    sw, out = apdu.Chained().exchange(xfer, b"\x00\xca\x00\x00\x00")
    assert sw == 0x9000 and bytes(out) == b"hello" and calls[1][-1] == 5


def test_error_status_passes_through():
    sw, out = apdu.Chained().exchange(lambda c: b"\x69\x82", b"\x80\xa0\x00\x00\x01\x00\x00")
    assert sw == 0x6982 and len(out) == 0


def test_short_response_is_protocol_error():
    unit.raises(apdu.APDUError, apdu.Chained().exchange, lambda c: b"\x90", b"\x00\xa4")


unit.run(globals())
