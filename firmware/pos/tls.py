# TLS plumbing for the uplink: certificates from the provisioned PEM, their
# notBefore (the clock's hint for certificate checks before its first trusted
# time), and the raw socket as mbedTLS sees it.
#
# Paced: MicroPython's ssl runs mbedTLS's handshake inside socket reads and
# writes, and mbedTLS goes on from one handshake message to the next for as
# long as the socket lets it, so the whole handshake's public-key work (two
# ECDSA verifies, ECDHE, an ECDSA signature: about 13 ms in the unix port,
# estimated 0.8-1.1 s on the ESP32) would run in one call with the event loop
# stopped. Paced makes the socket answer "would block" once after each
# successful read or write, so every call returns after one message and the
# event loop runs between the public-key steps (each about 3.7 ms here).

import asyncio
import binascii
import errno
import io
import select

from micropython import const

POLLIN = const(1)
POLLOUT = const(4)
_EINVAL = const(22)
_IOCTL_POLL = const(3)
_IOCTL_CLOSE = const(4)
_IOCTL_FILENO = const(10)
_EPOCH_DAYS = const(719468)  # days from 0000-03-01 to 1970-01-01


def pem_der(pem):
    """The DER bytes of the first PEM block in `pem` (str or bytes).
    MicroPython's ssl takes DER reliably; PEM needs a NUL terminator that a
    bytes object does not promise."""
    if isinstance(pem, str):
        pem = pem.encode()
    if not isinstance(pem, (bytes, bytearray)):
        raise ValueError("pem")
    a = pem.find(b"-----BEGIN ")
    a = pem.find(b"-----", a + 11) if a >= 0 else -1
    b = pem.find(b"-----END ", a + 5) if a >= 0 else -1
    if b < 0:
        raise ValueError("pem")
    try:
        der = binascii.a2b_base64(pem[a + 5:b].replace(b"\r", b"").replace(b"\n", b""))
    except ValueError:
        raise ValueError("pem")
    if len(der) < 2 or der[0] != 0x30:  # a2b_base64 skips what is not base64: check it is DER
        raise ValueError("pem")
    return der


def _days(y, m, d):
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    # days_from_civil): time.mktime counts from 2000 on the ESP32 port.
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - _EPOCH_DAYS


def _tl(der, i):
    # (tag, content start, content end) of the DER element at i.
    tag = der[i]
    n = der[i + 1]
    i += 2
    if n & 0x80:
        k = n & 0x7F
        if not 1 <= k <= 3:
            raise ValueError
        n = int.from_bytes(der[i:i + k], "big")
        i += k
    if i + n > len(der):
        raise ValueError
    return tag, i, i + n


def not_before(der):
    """A DER certificate's notBefore as unix seconds, 0 if it does not parse."""
    try:
        _, i, _ = _tl(der, 0)            # Certificate
        _, i, _ = _tl(der, i)            # tbsCertificate
        tag, s, e = _tl(der, i)
        if tag == 0xA0:                  # [0] version
            i = e
        for _ in range(3):               # serialNumber, signature, issuer
            i = _tl(der, i)[2]
        _, i, _ = _tl(der, i)            # validity
        tag, s, e = _tl(der, i)
        t = bytes(der[s:e])
        if tag == 0x17 and e - s == 13:      # UTCTime YYMMDDHHMMSSZ
            y = int(t[0:2])
            y += 2000 if y < 50 else 1900
            t = t[2:]
        elif tag == 0x18 and e - s == 15:    # GeneralizedTime YYYYMMDDHHMMSSZ
            y = int(t[0:4])
            t = t[4:]
        else:
            return 0
        return (_days(y, int(t[0:2]), int(t[2:4])) * 86400 + int(t[4:6]) * 3600
                + int(t[6:8]) * 60 + int(t[8:10]))
    except (ValueError, IndexError):
        return 0


class Paced(io.IOBase):
    """The raw socket as mbedTLS sees it: after each successful read or write
    the next one answers "would block" once, so every call into the TLS
    library returns after one handshake message and the event loop runs in
    between. `need` is the direction the last "would block" was about."""

    def __init__(self, s, hold=True):
        self.s = s
        self.hold = hold
        self.need = POLLOUT
        self._hold_r = False
        self._hold_w = False
        self._poll = select.poll()
        self._poll.register(s, POLLIN | POLLOUT)

    def readinto(self, b):
        if self._hold_r:
            self._hold_r = False
            self.need = POLLIN
            return None
        try:
            n = self.s.readinto(b)
        except OSError as e:
            if e.args[0] == errno.EAGAIN:
                self.need = POLLIN
                return None
            return -e.args[0]
        if n is None:
            self.need = POLLIN
            return None
        self._hold_r = self.hold
        return n

    def write(self, b):
        if self._hold_w:
            self._hold_w = False
            self.need = POLLOUT
            return None
        try:
            n = self.s.write(b)
        except OSError as e:
            if e.args[0] == errno.EAGAIN:
                self.need = POLLOUT
                return None
            return -e.args[0]
        if n is None:
            self.need = POLLOUT
            return None
        self._hold_w = self.hold
        return n

    def setblocking(self, flag):
        pass  # the raw socket stays non-blocking

    def readable(self):
        for _, ev in self._poll.ipoll(0):
            return ev & (POLLIN | 0x18) != 0  # data, ERR or HUP
        return False

    def ioctl(self, req, arg):
        if req == _IOCTL_POLL:
            for _, ev in self._poll.ipoll(0):
                return ev & (arg | 0x38)  # plus ERR, HUP, NVAL
            return 0
        if req == _IOCTL_FILENO:
            f = getattr(self.s, "fileno", None)
            return f() if f else -_EINVAL  # unix: poll the fd; esp32: poll via ioctl
        if req == _IOCTL_CLOSE:
            self._poll.unregister(self.s)
            self.s.close()
            return 0
        return -_EINVAL


def ready(s, ev):
    # Wait until stream s can make progress in direction ev (Stream's way).
    # asyncio.core._io_queue is how asyncio's own Stream waits for a socket.
    yield (asyncio.core._io_queue.queue_read if ev == POLLIN else asyncio.core._io_queue.queue_write)(s)
