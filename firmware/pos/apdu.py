# Terminal side of the wallet's APDU interface (ISO 7816-4): SELECT by AID,
# AUTHORIZE, and response chaining with 61xx / GET RESPONSE and 6Cxx. The transport is a
# callable exchange(command) -> response-with-SW supplied by the NFC driver.

from micropython import const

from pos import tlv, token

# Proprietary AID: category F (unregistered proprietary, ISO 7816-5) + "OFFPAY" + v1.
AID = b"\xF0OFFPAY\x01"

CLA_ISO = const(0x00)
CLA_PROP = const(0x80)
INS_SELECT = const(0xA4)
INS_AUTHORIZE = const(0xA0)
INS_GET_RESPONSE = const(0xC0)

SW_OK = const(0x9000)
SW_WRONG_LENGTH = const(0x6700)
SW_SECURITY = const(0x6982)
SW_CONDITIONS = const(0x6985)
SW_WRONG_DATA = const(0x6A80)
SW_FUNC_NOT_SUPPORTED = const(0x6A81)
SW_NOT_FOUND = const(0x6A82)
SW_WRONG_P1P2 = const(0x6A86)
SW_INS = const(0x6D00)
SW_CLA = const(0x6E00)
SW_UNKNOWN = const(0x6F00)

# PROTOCOL.md 5.3 (normative): at most 16 R-APDUs in one exchange (the first
# answer and 15 follow-ups), each carrying at most 256 data bytes.
_MAX_ROUNDS = const(16)
_MAX_PART = const(256)

SELECT = bytes((CLA_ISO, INS_SELECT, 0x04, 0x00, len(AID))) + AID + b"\x00"
_SELECT_SPEC = ((0x01, 1, 8, True),)

# Credential by reference (PROTOCOL.md 5.7). A wallet that can do it lists 81
# beside version 01 in its SELECT answer: a terminal that predates it looks only
# for 01, so nothing new reaches a terminal that cannot read it. The terminal
# then asks with P1 = 01 (a wallet that did not list 81 would answer 6A 86).
OPT_BY_REFERENCE = const(0x81)
P1_BY_REFERENCE = const(0x01)


class APDUError(Exception):
    """The wallet broke the APDU protocol (not a decline by the wallet itself)."""


def sw_of(resp):
    n = len(resp)
    if n < 2:
        raise APDUError("response shorter than a status word")
    return (resp[n - 2] << 8) | resp[n - 1]


def parse_select(resp):
    """Check the SELECT answer; returns None if the wallet speaks our version,
    else raises APDUError (bad framing) or returns the status word (declined)."""
    sw = sw_of(resp)
    if sw != SW_OK:
        return sw
    f = tlv.decode(memoryview(resp)[:len(resp) - 2], _SELECT_SPEC, [None])
    if token.VERSION not in bytes(f[0]):
        return SW_FUNC_NOT_SUPPORTED
    return None


def offers(resp, option):
    """Whether a SELECT answer that parse_select() accepted lists `option`
    (an entry 80..FF of tag 01: an option of the version, not a version)."""
    f = tlv.decode(memoryview(resp)[:len(resp) - 2], _SELECT_SPEC, [None])
    return option in bytes(f[0])


def build_authorize(buf, terminal_id, merchant_id, amount, currency, un, ttime, seq, p1=0):
    """Write a short AUTHORIZE APDU into `buf`; returns (apdu_len, data memoryview).
    p1: P1_BY_REFERENCE asks for the credential by reference (not signed: it
    changes only the answer's layout, and the signature covers the credential's
    hash either way)."""
    buf[0] = CLA_PROP
    buf[1] = INS_AUTHORIZE
    buf[2] = p1
    buf[3] = 0
    end = token.encode_request(buf, 5, terminal_id, merchant_id, amount, currency,
                               un, ttime, seq)
    buf[4] = end - 5
    buf[end] = 0  # Le = 256: "as much as you have"; the rest arrives by chaining
    mv = memoryview(buf)
    return end + 1, mv[5:end]


class Chained:
    """Collects a chained response (ISO 7816-4: 61xx / GET RESPONSE, 6Cxx) into a
    preallocated buffer. The rules live in one generator, _chain(); exchange()
    drives it with a blocking transport, exchange_async() with an awaitable one.

    stop(data) -> bool, if given, is asked after every part that a 61 xx
    follows: True ends the exchange there as complete (status 90 00, and
    `stopped` is True), without the GET RESPONSE: a terminal that already holds
    the rest (a credential by reference, PROTOCOL.md 5.7) does not fetch it."""

    def __init__(self, size=token.MAX_RESPONSE):
        self.buf = bytearray(size)
        self.stopped = False
        self._get = bytearray(b"\x00\xC0\x00\x00\x00")
        self._again = bytearray(262)  # a command repeated with a new Le (6Cxx)

    def _with_le(self, cmd, le):
        # ISO 7816-4: 6C xx asks for the same command again with Le = xx. Only a
        # short case-2 (header + Le) or case-4 (header + Lc + data + Le) command
        # has an Le to correct.
        n = len(cmd)
        if n < 5 or not (n == 5 or (n > 6 and n == 6 + cmd[4])):
            raise APDUError("6Cxx to a command without Le")
        a = self._again
        if n > len(a):
            raise APDUError("command too long to repeat")
        a[:n] = cmd
        a[n - 1] = le
        return memoryview(a)[:n]

    def _chain(self, command, stop):
        # Generator: yields each command to send and is sent its R-APDU; returns
        # (status word, data memoryview). Raises APDUError on any violation.
        self.stopped = False
        buf = self.buf
        cap = len(buf)
        n = 0
        cmd = command
        again = False
        for _ in range(_MAX_ROUNDS):
            resp = yield cmd
            k = len(resp) - 2
            if k < 0:
                raise APDUError("response shorter than a status word")
            if k > _MAX_PART:
                raise APDUError("response part over 256 bytes")
            sw1 = resp[k]
            sw2 = resp[k + 1]
            if sw1 == 0x6C:
                # One correction per command: a wallet that answers the repeat
                # with 6C again would have the terminal ask it to sign forever.
                if k or again:
                    raise APDUError("6Cxx with data" if k else "6Cxx to a repeated command")
                cmd = self._with_le(cmd, sw2)
                again = True
                continue
            again = False
            if k:
                if n + k > cap:
                    raise APDUError("response too long")
                buf[n:n + k] = memoryview(resp)[:k]
                n += k
            if sw1 == 0x61:
                if stop is not None and stop(memoryview(buf)[:n]):
                    self.stopped = True
                    return SW_OK, memoryview(buf)[:n]
                self._get[4] = sw2  # 61 00: 256 or more remain, ask for 256
                cmd = self._get
                continue
            return (sw1 << 8) | sw2, memoryview(buf)[:n]
        raise APDUError("more than 16 response rounds")

    def exchange(self, xfer, command, stop=None):
        """Send `command` via xfer(command) -> R-APDU, following the chaining
        rules. Returns (status word, data memoryview)."""
        g = self._chain(command, stop)
        cmd = next(g)
        try:
            while True:
                cmd = g.send(xfer(cmd))
        except StopIteration as e:
            return e.value

    async def exchange_async(self, xfer, command, stop=None):
        """exchange() with `await xfer(command)`: the event loop keeps running
        while the phone computes its answer."""
        g = self._chain(command, stop)
        cmd = next(g)
        try:
            while True:
                cmd = g.send(await xfer(cmd))
        except StopIteration as e:
            return e.value
