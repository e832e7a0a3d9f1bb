"""PN532 over SPI (mode 0, <= 5 MHz, LSB first on the wire). Thin transport for pos.pn532.PN532.

    PN532_SPI(spi, cs, *, lsb_first=False, sleep_ms=None, reset=None)

`spi` is machine.SPI-shaped (write(buf), readinto(buf)); `cs` a Pin-like with value().
With lsb_first=False (the usual MSB-first bus) bytes are bit-reversed in software.
Each transaction starts with DW (0x01, data write), SR (0x02, status read) or
DR (0x03, data read); CS stays low for the whole frame while reading.
"""
from micropython import const

from pos.pn532 import hard_reset
import time

_DW = const(0x01)
_SR = const(0x02)
_DR = const(0x03)
_BUF_LEN = const(280)


class PN532_SPI:
    WAKE_SOURCE = 0x20  # PowerDown WakeUpEnable bit for SPI

    def __init__(self, spi, cs, *, lsb_first=False, sleep_ms=None, reset=None):
        self._spi = spi
        self._cs = cs
        self._sleep = sleep_ms or time.sleep_ms
        self._reset = reset
        self._rev = None
        if not lsb_first:
            t = bytearray(256)
            for i in range(256):
                r = 0
                for b in range(8):
                    if i & (1 << b):
                        r |= 0x80 >> b
                t[i] = r
            self._rev = t
        self._buf = bytearray(_BUF_LEN)
        self._op = bytearray(1)
        cs.value(1)

    def _byte(self, b):
        return self._rev[b] if self._rev else b

    def reset(self):
        hard_reset(self._reset, self._sleep)

    def set_baudrate(self, baud):
        raise ValueError("SetSerialBaudRate is for HSU only")

    def wakeup(self):
        # CS low for > 1 ms wakes the PN532
        self._cs.value(0)
        self._sleep(2)
        self._op[0] = 0
        self._spi.write(self._op)
        self._cs.value(1)
        self._sleep(2)

    def drain(self):
        pass

    def write(self, buf):
        n = len(buf)
        if n + 1 > _BUF_LEN:
            raise ValueError("frame too long")
        b = self._buf
        b[0] = self._byte(_DW)
        rev = self._rev
        for i in range(n):
            b[i + 1] = rev[buf[i]] if rev else buf[i]
        self._cs.value(0)
        try:
            self._spi.write(memoryview(b)[0:n + 1])
        finally:
            self._cs.value(1)

    def ready(self):
        op = self._op
        self._cs.value(0)
        try:
            op[0] = self._byte(_SR)
            self._spi.write(op)
            self._spi.readinto(op)
        finally:
            self._cs.value(1)
        return bool(self._byte(op[0]) & 1)

    def read_begin(self):
        self._cs.value(0)
        self._op[0] = self._byte(_DR)
        self._spi.write(self._op)

    def read_end(self):
        self._cs.value(1)

    def read(self, mv):
        self._spi.readinto(mv)
        rev = self._rev
        if rev:
            for i in range(len(mv)):
                mv[i] = rev[mv[i]]
        return len(mv)
