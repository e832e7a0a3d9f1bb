"""The emulated board: what the firmware gets in the unix port.

PN532 over HSU to the simulator (POS_PN532=host:port), littlefs on a
file-backed NOR image (POS_FLASH), the till on a loopback TCP port (POS_TILL),
Wi-Fi from a control file (POS_WIFI), feedback as EVENT lines on stdout.
"""
import os
import time

import feedback
import flash
import tillport
import wifi
from sockuart import SockUART

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
    b.journal_dir = flash.setup()
    b.config_path = CONFIG
    host, port = _pn532_addr()
    b.nfc = PN532(PN532_HSU(SockUART(port, host)))
    b.nfc_baud = 921600  # SetSerialBaudRate after start-up: UART time per tap drops ~8x
    b.wifi = wifi.Wifi()
    b.feedback = feedback.Feedback()
    b.till = tillport.TillPort()
    b.clock = time.time
    b.wdt = None
    return b
