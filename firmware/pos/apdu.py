# Terminal side of the wallet's APDU interface (ISO 7816-4): SELECT by AID,
# AUTHORIZE, and response chaining with 61xx / GET RESPONSE. The transport is a
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

_MAX_ROUNDS = const(16)  # GET RESPONSE rounds: 16 * 256 bytes is above MAX_RESPONSE

SELECT = bytes((CLA_ISO, INS_SELECT, 0x04, 0x00, len(AID))) + AID + b"\x00"
_SELECT_SPEC = ((0x01, 1, 8, True),)


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


def build_authorize(buf, terminal_id, merchant_id, amount, currency, un, ttime, seq):
    """Write a short AUTHORIZE APDU into `buf`; returns (apdu_len, data memoryview)."""
    buf[0] = CLA_PROP
    buf[1] = INS_AUTHORIZE
    buf[2] = 0
    buf[3] = 0
    end = token.encode_request(buf, 5, terminal_id, merchant_id, amount, currency,
                               un, ttime, seq)
    buf[4] = end - 5
    buf[end] = 0  # Le = 256: "as much as you have"; the rest arrives by chaining
    mv = memoryview(buf)
    return end + 1, mv[5:end]


class Chained:
    """Collects a chained response into a preallocated buffer."""

    def __init__(self, size=token.MAX_RESPONSE):
        self.buf = bytearray(size)
        self._get = bytearray(b"\x00\xC0\x00\x00\x00")

    def exchange(self, xfer, command):
        """Send `command` via xfer(); follow 61xx with GET RESPONSE and honour 6Cxx.

        Returns (status word, data memoryview). Raises APDUError when the wallet
        chains forever or sends more than the buffer holds."""
        buf = self.buf
        cap = len(buf)
        n = 0
        resp = xfer(command)
        for _ in range(_MAX_ROUNDS):
            sw = sw_of(resp)
            k = len(resp) - 2
            if k:
                if n + k > cap:
                    raise APDUError("response too long")
                buf[n:n + k] = memoryview(resp)[:k]
                n += k
            sw1 = sw >> 8
            if sw1 == 0x61:
                self._get[4] = sw & 0xFF
                resp = xfer(self._get)
            elif sw1 == 0x6C and not k:
                # Wrong Le: ISO 7816-4 says repeat the command with Le = SW2.
                if len(command) < 5:
                    raise APDUError("6Cxx to a command without Le")
                command = bytearray(command)
                command[len(command) - 1] = sw & 0xFF
                resp = xfer(command)
            else:
                return sw, memoryview(buf)[:n]
        raise APDUError("too many response rounds")
