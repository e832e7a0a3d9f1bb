"""The emulated board: what the firmware gets in the unix port.

PN532 over HSU to the simulator (POS_PN532=host:port) or a serial device
(POS_PN532=/dev/ttyUSB0: boards/unix/ttyuart.py), littlefs and the raw
journal partition on a file-backed NOR image (POS_FLASH), the till on a
loopback TCP port (POS_TILL), Wi-Fi from a control file (POS_WIFI), feedback as EVENT lines on stdout.
POS_FLASH_BLOCKS sizes the chip (the ESP32's 1 MiB journal: 320), POS_WDT_MS arms a
watchdog (boards/unix/wdt.py); POS_FAULT_FEEDBACK and POS_JOURNAL_FAIL inject the
faults their modules describe.
"""
import os
import time

import feedback
import flash
import tillport
import wifi
from sockuart import SockUART
from wdt import WDT

CONFIG = "/flash/config.json"


class Board:
    pass


def _pn532_addr():
    spec = os.getenv("POS_PN532") or "127.0.0.1:7071"
    host, port = spec.rsplit(":", 1)
    return host, int(port)


def wire():
    from pos.pn532 import PN532
    from pos.pn532_hsu import PN532_HSU
    b = Board()
    b.journal_dev = flash.setup()
    b.config_path = CONFIG
    spec = os.getenv("POS_PN532") or ""
    if spec.startswith("/"):
        # A serial device: a real PN532 on a USB-UART, or the simulator's pty.
        from ttyuart import TtyUART
        uart = TtyUART(spec)
    else:
        host, port = _pn532_addr()
        uart = SockUART(port, host)
    b.nfc = PN532(PN532_HSU(uart))
    b.nfc_baud = 921600  # SetSerialBaudRate after start-up: UART time per tap drops ~8x
    b.wifi = wifi.Wifi()
    b.feedback = feedback.Feedback()
    b.till = tillport.TillPort()
    b.clock = time.time
    if os.getenv("POS_UPLINK_FAST"):
        # Tests and the demo: an upload starts 0.3 s after the last charge,
        # not 5 s, and a failed one is retried within seconds.
        b.uplink_opts = {"quiet_ms": 300, "poll_ms": 100, "backoff_ms": (200, 2000),
                         "interval_ms": 2000}
    if os.getenv("POS_UPLINK_OPTS"):
        # The fault campaign (tests/fault_campaign.py): a test's own uplink
        # settings, JSON, e.g. {"io_ms": 1000}, so a stalled link times out
        # in a second, not in 15.
        import json
        b.uplink_opts = dict(getattr(b, "uplink_opts", {}), **json.loads(os.getenv("POS_UPLINK_OPTS")))
    wdt_ms = os.getenv("POS_WDT_MS")
    b.wdt = WDT(int(wdt_ms)) if wdt_ms else None
    dev = flash.device
    # For the tap bench: time spent in this board's emulated UART and flash
    # (C and silicon on a device), then what a NOR chip would have done:
    # program ops, bytes programmed, blocks erased, bytes read.
    b.probe = lambda: (uart.busy_us + dev.busy_us, dev.programs, dev.prog_bytes, dev.erases,
                       dev.read_bytes)
    return b
