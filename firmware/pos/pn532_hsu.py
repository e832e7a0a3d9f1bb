"""PN532 over HSU (UART, 115200 8N1). Thin transport for pos.pn532.PN532.

    PN532_HSU(uart, *, timeout_ms=20, sleep_ms=None, reset=None)

`uart` is anything shaped like machine.UART: any(), readinto(buf), write(buf)
(e.g. machine.UART(2, 115200, timeout=0) on the ESP32, boards/unix/sockuart.py in the
unix port). `reset` is an optional Pin-like (RSTPD_N, active low) for a hard reset.
"""
from micropython import const

from pos.pn532 import hard_reset
import time

_DRAIN_MAX = const(64)
# 0x55 wakes the PN532 from power-down / LowVbat; the zeros give it time to start.
_WAKE = b"\x55\x55\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"


class PN532_HSU:
    WAKE_SOURCE = 0x10  # PowerDown WakeUpEnable bit for HSU
    STREAM = True

    def __init__(self, uart, *, timeout_ms=20, sleep_ms=None, reset=None):
        self._uart = uart
        self.timeout_ms = timeout_ms
        self._sleep = sleep_ms or time.sleep_ms
        self._reset = reset
        self._junkv = memoryview(bytearray(32))

    def reset(self):
        hard_reset(self._reset, self._sleep)

    def set_baudrate(self, baud):
        # machine.UART.init() re-clocks the port and keeps its pins and buffers
        self._uart.init(baudrate=baud)

    def wakeup(self):
        self.drain()
        self._uart.write(_WAKE)
        self._sleep(2)

    def drain(self):
        """Discard pending input (stale bytes of an aborted exchange)."""
        u = self._uart
        for _ in range(_DRAIN_MAX):
            n = u.any()
            if not n:
                return
            # exactly what is there: a larger read would wait timeout_char for more
            u.readinto(self._junkv[0:n] if n < 32 else self._junkv)

    def write(self, buf):
        self.drain()
        self._uart.write(buf)

    def ready(self):
        return self._uart.any() > 0

    def read_begin(self):
        pass

    def read_end(self):
        pass

    def read(self, mv):
        """Fill mv; returns the count read (fewer than len(mv) on timeout)."""
        n = len(mv)
        got = 0
        u = self._uart
        start = time.ticks_ms()
        limit = self.timeout_ms + n // 8
        while got < n:
            r = u.readinto(mv[got:] if got else mv)
            if r:
                got += r
                continue
            waited = time.ticks_diff(time.ticks_ms(), start)
            if waited >= limit:
                break
            if waited >= 2:  # bytes come every 87 us: spin briefly, then back off
                self._sleep(1)
        return got
