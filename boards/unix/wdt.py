"""Emulated watchdog for the unix board (the ESP32 board's is machine.WDT).

    wdt = WDT(timeout_ms)     # POS_WDT_MS, or no watchdog at all
    wdt.feed()

A hardware watchdog resets the chip when it is not fed for timeout_ms. Here
the gap is checked when the next feed comes (or at exit): a gap over the
timeout prints "WATCHDOG fired" and ends the process with exit code 9, as a
reset would end the run. A test sets POS_WDT_MS to the device's timeout
divided by the ESP32/unix speed ratio, so firmware that would starve the
ESP32's 8 s watchdog starves this one too. `max_gap` is the longest gap seen.
"""
import sys
import time

_EXIT = 9


class WDT:
    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.max_gap = 0
        self._last = time.ticks_ms()

    def feed(self):
        now = time.ticks_ms()
        gap = time.ticks_diff(now, self._last)
        self._last = now
        if gap > self.max_gap:
            self.max_gap = gap
        if gap > self.timeout_ms:
            print("WATCHDOG fired: not fed for %d ms (timeout %d)" % (gap, self.timeout_ms))
            sys.exit(_EXIT)
