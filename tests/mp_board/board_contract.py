# The boards' contract: boards/unix and boards/esp32 hand the app a Feedback, a
# Wifi and a TillPort that the app cannot tell apart. The same checks run
# against both boards' classes (esp32 over tests/fakes), so a method or a value
# that one accepts and the other refuses fails here.
import os
import sys

if ".frozen" not in sys.path:
    sys.path.append(".frozen")
import asyncio  # noqa: E402

import machine  # noqa: E402  (the fake)
import network  # noqa: E402  (the fake)
import unit  # noqa: E402
from pos import till  # noqa: E402

ROOT = os.getenv("POS_ROOT")
TMP = os.getenv("POS_TEST_TMP") or "/tmp"
_MODS = ("feedback", "wifi", "tillport", "pins")


def load(board):
    # Both boards name their modules alike: import one board's set, then take
    # them out of sys.modules so the other board's can be imported next.
    sys.path.insert(0, ROOT + "/boards/" + board)
    try:
        mods = {}
        for n in ("feedback", "wifi", "tillport"):
            mods[n] = __import__(n)
        return mods
    finally:
        sys.path.pop(0)
        for n in _MODS:
            if n in sys.modules:
                del sys.modules[n]


UNIX = load("unix")
ESP32 = load("esp32")


class UnixBoard:
    name = "unix"
    m = UNIX

    def feedback(self):
        self.out = []
        return self.m["feedback"].Feedback(self.out.append)

    def wifi(self):
        self.ctl = TMP + "/contract_wifi"
        self.link(False)
        return self.m["wifi"].Wifi("shop", "secret", control=self.ctl)

    def link(self, up):
        with open(self.ctl, "w") as f:
            f.write("up\n" if up else "down\n")

    def tillport(self):
        return self.m["tillport"].TillPort(port=int(os.getenv("POS_TILL_PORT")))

    async def till_exchange(self, port, data, lines):
        r, w = await asyncio.open_connection("127.0.0.1", port.port)
        w.write(data)
        await w.drain()
        out = b""
        for _ in range(lines):
            out += await r.readline()
        w.close()
        await w.wait_closed()
        return out


class Esp32Board:
    name = "esp32"
    m = ESP32

    def feedback(self):
        leds = {c: machine.Pin(p, machine.Pin.OUT) for c, p in (("red", 25), ("green", 26), ("blue", 27))}
        return self.m["feedback"].Feedback(leds, machine.PWM(machine.Pin(13, machine.Pin.OUT)))

    def wifi(self):
        network.reset()
        self.link(False)
        return self.m["wifi"].Wifi("shop", "secret")

    def link(self, up):
        network.WLAN.ap_up = up

    def tillport(self):
        return self.m["tillport"].TillPort()

    async def till_exchange(self, port, data, lines):
        uart = port.uart
        uart._feed(data)
        for _ in range(200):
            await asyncio.sleep_ms(5)
            if uart.tx.count(b"\n") >= lines:
                break
        return bytes(uart.tx)


BOARDS = (UnixBoard(), Esp32Board())
COLORS = ("off", "red", "green", "blue", "yellow", "white")
BEEPS = ("ok", "error", "retry", "key")
PUBLIC = {"feedback": ("led", "beep", "show", "off"),
          "wifi": ("active", "connect", "disconnect", "isconnected", "status", "ifconfig"),
          "tillport": ("start", "close")}


def test_same_public_methods():
    for kind, names in PUBLIC.items():
        cls = {"feedback": "Feedback", "wifi": "Wifi", "tillport": "TillPort"}[kind]
        sets = []
        for b in BOARDS:
            c = getattr(b.m[kind], cls)
            for n in names:
                assert callable(getattr(c, n, None)), (b.name, cls, n)
            sets.append(sorted(n for n in dir(c) if not n.startswith("_")))
        assert sets[0] == sets[1], (cls, sets)


def test_feedback_accepts_and_refuses_the_same_values():
    async def main():
        for b in BOARDS:
            fb = b.feedback()
            assert fb.color is None and fb.text == "", b.name
            for c in COLORS:
                fb.led(c)
                assert fb.color == c, (b.name, c)
            for k in BEEPS:
                assert fb.beep(k) is None, (b.name, k)
            for bad in ("purple", "GREEN", "", None):
                unit.raises(ValueError, fb.led, bad)
            assert fb.color == "white", (b.name, "a refused color changed the LED")
            for bad in ("fanfare", "OK", ""):
                unit.raises(ValueError, fb.beep, bad)
            for text in ("APPROVED", "PAY 12.50\nTAP PHONE", "", "DECLINED OVER_TAP_LIMIT"):
                fb.show(text)
                assert fb.text == text, (b.name, text)
            fb.off()
            assert (fb.color, fb.text) == ("off", ""), b.name
            await asyncio.sleep_ms(450)  # the esp32 board's beeps end by themselves
    asyncio.run(main())


def test_wifi_same_states_and_values():
    for b in BOARDS:
        w = b.wifi()
        assert w.active() is False and w.isconnected() is False, b.name
        idle = w.status()
        assert isinstance(idle, int) and idle == 1000, (b.name, idle)  # STAT_IDLE
        ip = w.ifconfig()
        assert isinstance(ip, tuple) and len(ip) == 4 and ip[0] == "0.0.0.0", (b.name, ip)
        assert w.active(True) is None and w.active() is True, b.name
        assert w.connect() is None, b.name
        assert w.isconnected() is False and w.status() == 201, (b.name, w.status())  # NO_AP_FOUND
        b.link(True)
        assert w.isconnected() is True and w.status() == 1010, (b.name, w.status())  # GOT_IP
        ip = w.ifconfig()
        assert len(ip) == 4 and all(isinstance(x, str) and x.count(".") == 3 for x in ip), (b.name, ip)
        assert ip[0] != "0.0.0.0", b.name
        b.link(False)
        assert w.isconnected() is False, b.name
        b.link(True)
        assert w.isconnected() is True, (b.name, "the station must come back by itself")
        assert w.disconnect() is None and w.isconnected() is False and w.status() == 1000, b.name
        w.connect()
        assert w.isconnected() is True, b.name
        assert w.active(False) is None and w.active() is False and w.isconnected() is False, b.name


def test_tillport_serves_the_same_bytes():
    script = b"STATUS\r\n" + b"#" * 200 + b"\nCHARGE 1250 978 R1\n"
    want = b"STATUS idle 0 down\nERR line-too-long\nRESULT R1 APPROVED 7\n"
    for b in BOARDS:
        port = b.tillport()
        seen = []

        async def handler(reader, writer):
            buf = bytearray(till.MAX_LINE + 1)
            while True:
                try:
                    line = await till.read_line(reader, till.MAX_LINE, buf)
                    if line is None:
                        return
                    cmd = till.parse(line)
                    seen.append(cmd)
                    writer.write(till.status("idle", 0, False) if cmd[0] == "STATUS"
                                 else till.approved(cmd[3], 7))
                except till.TillError as e:
                    writer.write(till.error(e.reason))
                await writer.drain()

        async def main():
            assert await port.start(handler) is not None, b.name
            out = await b.till_exchange(port, script, 3)
            port.close()
            port.close()  # closing twice is harmless on both
            await asyncio.sleep_ms(20)
            return out

        out = asyncio.run(main())
        assert out == want, (b.name, out)
        assert seen == [("STATUS",), ("CHARGE", 1250, 978, b"R1")], (b.name, seen)


unit.run(globals())
