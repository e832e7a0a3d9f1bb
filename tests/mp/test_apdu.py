# APDU layer: SELECT parsing, AUTHORIZE building, 61xx/6Cxx chaining, bounds.
import unit
from pos import apdu, token


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
