"""Emulated Wi-Fi station for the unix board.

The link state lives in a control file (path from the `control` argument or
POS_WIFI): "up" means the access point is reachable, anything else (or no
file) means it is not.  A test takes the link down or brings it back by
rewriting the file; the firmware sees it at its next isconnected().

Same methods as boards/esp32/wifi.py, which wraps network.WLAN(STA_IF):
    Wifi(ssid=None, key=None, control=None)
    .active([bool])  .connect()  .disconnect()  .isconnected()
    .status()  .ifconfig()
"""
from micropython import const
import os

STAT_IDLE = const(1000)
STAT_CONNECTING = const(1001)
STAT_GOT_IP = const(1010)
STAT_NO_AP_FOUND = const(201)


class Wifi:
    def __init__(self, ssid=None, key=None, control=None):
        self.ssid = ssid
        self.key = key
        self.control = control or os.getenv("POS_WIFI")
        self._active = False
        self._wanted = False

    def _link(self):
        if not self.control:
            return False
        try:
            with open(self.control) as f:
                return f.read(8).strip() == "up"
        except OSError:
            return False

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)
        if not on:
            self._wanted = False
        return None

    def connect(self):
        # Like WLAN.connect(): starts joining and returns; the station keeps
        # trying, so the link comes back on its own when the AP does.
        self._active = True
        self._wanted = True

    def disconnect(self):
        self._wanted = False

    def isconnected(self):
        return self._active and self._wanted and self._link()

    def status(self):
        if not (self._active and self._wanted):
            return STAT_IDLE
        return STAT_GOT_IP if self._link() else STAT_NO_AP_FOUND

    def ifconfig(self):
        if self.isconnected():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
