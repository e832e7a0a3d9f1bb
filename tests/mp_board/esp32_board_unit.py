# boards/esp32 modules in the unix port against tests/fakes (machine, network,
# esp32).  Checks the wiring: which pins, which peripheral settings, which
# calls, and that the pieces work with the firmware (till protocol, journal).
import os
import sys

if ".frozen" not in sys.path:
    sys.path.append(".frozen")
import asyncio  # noqa: E402

import esp32  # noqa: E402  (the fake)
import machine  # noqa: E402  (the fake)
import network  # noqa: E402  (the fake)
import unit  # noqa: E402

import feedback  # noqa: E402
import flash  # noqa: E402
import hw  # noqa: E402
import pins  # noqa: E402
import tillport  # noqa: E402
import wifi  # noqa: E402
from pos import till  # noqa: E402


def test_fakes_are_the_ones_imported():
    assert machine.__file__.endswith("fakes/machine.py"), machine.__file__
    assert network.__file__.endswith("fakes/network.py")
    assert esp32.__file__.endswith("fakes/esp32.py")


def test_hw_setup_sets_clock_and_starts_watchdog():
    machine.reset_calls()
    wdt = hw.setup()
    assert ("freq", 240000000) in machine.calls
    assert ("WDT", 0, 8000) in machine.calls
    assert machine.freq() == 240000000
    wdt.feed()
    assert wdt.feeds == 1


def test_pin_map_is_usable():
    outs = (pins.LED_RED, pins.LED_GREEN, pins.LED_BLUE, pins.BUZZER, pins.TILL_TX,
            pins.PN532_TX, pins.PN532_RST, pins.I2C_SCL, pins.I2C_SDA)
    ins = (pins.TILL_RX, pins.PN532_RX)
    used = outs + ins
    assert len(set(used)) == len(used), "a GPIO is used twice"
    for p in used:
        assert not 6 <= p <= 11 and p not in (0, 2, 5, 12, 15), p  # flash / strapping
    for p in outs:
        machine.Pin(p, machine.Pin.OUT)  # the fake rejects input-only pins


def test_feedback_wiring_and_leds():
    machine.reset_calls()
    fb = feedback.create()
    assert ("Pin", 25, machine.Pin.OUT, -1, 0) in machine.calls
    assert ("Pin", 26, machine.Pin.OUT, -1, 0) in machine.calls
    assert ("Pin", 27, machine.Pin.OUT, -1, 0) in machine.calls
    assert ("PWM", 13, 2000, 0) in machine.calls
    fb.led("yellow")
    assert [fb.leds[c].value() for c in ("red", "green", "blue")] == [1, 1, 0]
    fb.led("blue")
    assert [fb.leds[c].value() for c in ("red", "green", "blue")] == [0, 0, 1]
    unit.raises(ValueError, fb.led, "purple")
    unit.raises(ValueError, fb.beep, "fanfare")


def test_beep_does_not_block_and_ends_silent():
    fb = feedback.create()
    bz = fb.buzzer

    async def main():
        machine.reset_calls()
        fb.beep("retry")
        # beep() returned at once; the tone runs in the background.
        await asyncio.sleep_ms(10)
        assert bz.duty_u16() == 32768 and bz.freq() == 1500
        await asyncio.sleep_ms(300)
        assert bz.duty_u16() == 0
        fb.beep("error")
        await asyncio.sleep_ms(10)
        fb.beep("ok")  # a newer beep cuts the old one short
        await asyncio.sleep_ms(10)
        assert bz.freq() == 2000
        await asyncio.sleep_ms(200)
        assert bz.duty_u16() == 0

    asyncio.run(main())
    steps = [c for c in machine.calls if c[0] in ("PWM.freq", "PWM.duty_u16")]
    assert steps[:4] == [("PWM.freq", 13, 1500), ("PWM.duty_u16", 13, 32768), ("PWM.duty_u16", 13, 0),
                         ("PWM.freq", 13, 1500)], steps


class FakeDisplay:
    def __init__(self):
        self.lines = []
        self.shown = 0

    def fill(self, c):
        self.lines = []

    def text(self, s, x, y, c=1):
        self.lines.append((s, x, y))

    def show(self):
        self.shown += 1


def test_display_text_wraps_at_16_columns():
    d = FakeDisplay()
    fb = feedback.Feedback({}, machine.PWM(machine.Pin(13, machine.Pin.OUT)), d)
    fb.show("DECLINED OVER_TAP_LIMIT")
    assert d.lines == [("DECLINED OVER_TA", 0, 4), ("P_LIMIT", 0, 12)] and d.shown == 1
    fb.show("PAY 12.50\nTAP PHONE")
    assert [l[0] for l in d.lines] == ["PAY 12.50", "TAP PHONE"]
    fb.off()
    assert d.lines == [] and fb.color == "off"


def test_wifi_wraps_wlan_station():
    network.reset()
    w = wifi.Wifi("shop", "secret")
    assert ("WLAN", network.STA_IF) in network.calls
    assert not w.isconnected()
    w.connect()
    assert ("WLAN.active", True) in network.calls and ("WLAN.connect", "shop", "secret") in network.calls
    assert w.isconnected() and w.status() == network.STAT_GOT_IP
    network.WLAN.ap_up = False
    assert not w.isconnected()
    network.WLAN.ap_up = True
    n = len(network.calls)
    w.connect()  # already connected: no new join
    assert network.calls[n:] == []
    w.disconnect()
    assert not w.isconnected()
    w.active(False)
    assert not w.active()


def test_tillport_uart2_line_protocol():
    machine.reset_calls()
    port = tillport.TillPort()
    assert ("UART", 2, 115200, 17, 16) in machine.calls
    uart = port.uart
    seen = []

    async def handler(reader, writer):
        buf = bytearray(till.MAX_LINE + 1)
        while True:
            try:
                line = await till.read_line(reader, till.MAX_LINE, buf)
                cmd = till.parse(line)
                seen.append(cmd)
                writer.write(till.status("idle", 0, True))
            except till.TillError as e:
                writer.write(till.error(e.reason))
            await writer.drain()

    async def main():
        await port.start(handler)
        uart._feed(b"STATUS\r\n" + b"#" * 200 + b"\n")
        for _ in range(100):
            await asyncio.sleep_ms(5)
            if uart.tx.count(b"\n") >= 2:
                break
        port.close()

    asyncio.run(main())
    assert bytes(uart.tx) == b"STATUS idle 0 up\nERR line-too-long\n", uart.tx
    assert seen == [("STATUS",)]


def test_flash_without_partition_refuses():
    esp32.reset()
    unit.raises(flash.JournalSetupError, flash.setup)


def test_flash_partition_is_the_raw_journal():
    esp32.reset()
    esp32.add_partition("journal", 8 * 4096)
    part = flash.setup("journal")
    assert ("Partition.find", esp32.Partition.TYPE_DATA, 0xff, "journal", 4096) in esp32.calls
    import gc
    gc.collect()
    from pos.journal import Journal
    j = Journal(part)
    assert j.open() == []
    assert j.append(b"on the esp32 partition") == 1
    assert j.prepare()
    # A reboot: a new Partition object on the same flash.
    j = Journal(flash.setup("journal"))
    assert j.open() == [] and list(j.records()) == [(1, b"on the esp32 partition")]


def test_flash_foreign_data_is_not_erased():
    esp32.reset()
    esp32.add_partition("journal", 8 * 4096)
    p = esp32.Partition("journal")
    p.writeblocks(3, b"\x00" * 16, 0)
    import gc
    gc.collect()
    from pos.journal import Journal, JournalError
    unit.raises(JournalError, Journal(flash.setup("journal")).open)
    b = bytearray(16)
    p.readblocks(3, b, 0)
    assert b == bytearray(16)  # still the old bytes: nothing was erased


def test_set_rtc_puts_the_trusted_time_in_the_rtc():
    import board
    import time
    t = 1764000000  # 2025-11-24 16:00:00 UTC
    board.set_rtc(t)
    y, mo, d, h, mi, sec, wd = time.gmtime(t if time.gmtime(0)[0] != 2000 else t - 946684800)[:7]
    assert machine.RTC.set_to == (y, mo, d, wd, h, mi, sec, 0), machine.RTC.set_to
    assert machine.RTC.set_to[:3] == (2025, 11, 24)


unit.run(globals())
