"""Wi-Fi station of the ESP32 terminal: network.WLAN(STA_IF) behind the same
methods as boards/unix/wifi.py.

    w = Wifi(ssid, key, wlan=None)
    .active([bool])  .connect()  .disconnect()  .isconnected()
    .status()  .ifconfig()

connect() only starts joining (WLAN.connect returns at once); the ESP-IDF
station reconnects by itself, so the uploader just polls isconnected().
"""
import network


class Wifi:
    def __init__(self, ssid=None, key=None, wlan=None):
        self.ssid = ssid
        self.key = key
        self.wlan = wlan if wlan is not None else network.WLAN(network.STA_IF)

    def active(self, on=None):
        if on is None:
            return self.wlan.active()
        self.wlan.active(on)
        return None

    def connect(self):
        w = self.wlan
        if not w.active():
            w.active(True)
        if not w.isconnected():
            w.connect(self.ssid, self.key)

    def disconnect(self):
        self.wlan.disconnect()

    def isconnected(self):
        return self.wlan.isconnected()

    def status(self):
        return self.wlan.status()

    def ifconfig(self):
        return self.wlan.ifconfig()
