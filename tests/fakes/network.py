# Fake of MicroPython's `network` module (ESP32 port): WLAN station only.
# Calls are recorded in `calls`; a test flips `WLAN.ap_up` to take the access
# point away or bring it back.
STA_IF = 0
AP_IF = 1

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202

calls = []


class WLAN:
    ap_up = True  # the environment: is the access point reachable?
    _state = {}  # per interface: network.WLAN(STA_IF) is one interface however often made

    def __init__(self, interface_id=STA_IF):
        if interface_id not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface identifier")
        st = WLAN._state.get(interface_id)
        if st is None:
            st = WLAN._state[interface_id] = {"active": False, "ssid": None, "cfg": {}}
        self._st = st
        calls.append(("WLAN", interface_id))

    @property
    def _active(self):
        return self._st["active"]

    @property
    def _ssid(self):
        return self._st["ssid"]

    def active(self, is_active=None):
        if is_active is None:
            return self._active
        self._st["active"] = bool(is_active)
        if not is_active:
            self._st["ssid"] = None
        calls.append(("WLAN.active", self._active))

    def connect(self, ssid=None, key=None, *, bssid=None):
        if not self._active:
            raise OSError("Wifi Not Started")
        self._st["ssid"] = ssid
        calls.append(("WLAN.connect", ssid, key))

    def disconnect(self):
        self._st["ssid"] = None
        calls.append(("WLAN.disconnect",))

    def isconnected(self):
        return self._active and self._ssid is not None and WLAN.ap_up

    def status(self, param=None):
        if param == "rssi":
            return -60
        if not self._active or self._ssid is None:
            return STAT_IDLE
        return STAT_GOT_IP if WLAN.ap_up else STAT_NO_AP_FOUND

    def ifconfig(self, config=None):
        if config is not None:
            calls.append(("WLAN.ifconfig", config))
            return None
        if self.isconnected():
            return ("192.168.1.50", "255.255.255.0", "192.168.1.1", "192.168.1.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")

    def config(self, *args, **kw):
        if args:
            return self._st["cfg"].get(args[0])
        self._st["cfg"].update(kw)
        calls.append(("WLAN.config", kw))


def reset():
    WLAN._state.clear()
    WLAN.ap_up = True
    del calls[:]
