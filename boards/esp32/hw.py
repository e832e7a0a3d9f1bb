"""ESP32 system setup: CPU clock and the watchdog.

    wdt = hw.setup()      # call first thing in main; then wdt.feed() from the loop

The watchdog cannot be stopped once started: a wedged loop resets the
terminal, and the journal (committed before every APPROVED) survives it.
"""
import machine

import pins


def setup(cpu_hz=pins.CPU_HZ, wdt_ms=pins.WDT_MS):
    # Full speed: signature checks dominate a tap's latency.
    machine.freq(cpu_hz)
    return machine.WDT(timeout=wdt_ms)
