"""PN532 over I2C. Thin transport for pos.pn532.PN532.

    PN532_I2C(i2c, addr=0x24, *, sleep_ms=None, reset=None)

`i2c` is machine.I2C-shaped: writeto(addr, buf), readfrom_into(addr, buf).
Every I2C read starts with the PN532 status byte (bit 0 = ready) followed by the
frame from its start. The first read of a frame fetches a short header; if the
frame turns out longer, a NACK makes the PN532 send the same frame again and it is
re-read with the needed length (the frame is never read byte by byte).
"""
from micropython import const

from pos.pn532 import hard_reset
import time

_FIRST = const(24)  # covers ACK and short responses in one transaction
_SLACK = const(2)
_BUF_LEN = const(280)
_NACK = b"\x00\x00\xff\xff\x00\x00"


class PN532_I2C:
    WAKE_SOURCE = 0x80  # PowerDown WakeUpEnable bit for I2C

    def __init__(self, i2c, addr=0x24, *, sleep_ms=None, reset=None, ready_ms=20):
        self._i2c = i2c
        self._addr = addr
        self._sleep = sleep_ms or time.sleep_ms
        self._reset = reset
        self.ready_ms = ready_ms
        self._buf = bytearray(_BUF_LEN)
        self._mv = memoryview(self._buf)
        self._st = bytearray(1)
        self._pos = 0
        self._end = 0

    def reset(self):
        hard_reset(self._reset, self._sleep)

    def set_baudrate(self, baud):
        raise ValueError("SetSerialBaudRate is for HSU only")

    def wakeup(self):
        # an address match wakes the PN532; it may NAK that first transaction
        try:
            self._i2c.writeto(self._addr, b"\x00")
        except OSError:
            pass
        self._sleep(2)

    def drain(self):
        pass  # I2C frames are consumed by reading them; nothing is buffered host-side

    def write(self, buf):
        self._i2c.writeto(self._addr, buf)

    def ready(self):
        try:
            self._i2c.readfrom_into(self._addr, self._st)
        except OSError:
            return False
        return bool(self._st[0] & 1)

    def read_begin(self):
        self._pos = 0
        self._end = 0

    def read_end(self):
        pass

    def _fetch(self, need):
        if self._end:
            # ask for the same frame again, this time read far enough
            self._i2c.writeto(self._addr, _NACK)
            start = time.ticks_ms()
            while not self.ready():
                if time.ticks_diff(time.ticks_ms(), start) > self.ready_ms:
                    return False
                self._sleep(1)
        want = need + _SLACK
        if want < _FIRST:
            want = _FIRST
        if want > _BUF_LEN - 1:
            want = _BUF_LEN - 1
        self._i2c.readfrom_into(self._addr, self._mv[0:want + 1])
        if not self._buf[0] & 1:
            return False
        self._end = want
        return True

    def read(self, mv):
        n = len(mv)
        need = self._pos + n
        if need > _BUF_LEN - 1:
            return 0
        if need > self._end and not self._fetch(need):
            return 0
        mv[:] = self._mv[1 + self._pos:1 + need]
        self._pos = need
        return n
