"""The real terminal: ESP32-WROOM-32 + PN532 on UART1 (HSU), till on UART2,
journal on the raw `journal` partition, LEDs/buzzer, optional SSD1306."""
import time

import machine

import feedback
import flash
import hw
import pins
import tillport
import wifi

CONFIG = "/config.json"
_EPOCH_2000 = 946684800  # the esp32 port counts seconds from 2000-01-01


class Board:
    pass


def clock():
    t = time.time()
    return t + _EPOCH_2000 if time.gmtime(0)[0] == 2000 else t


def set_rtc(t):
    """Set the RTC to unix time t (the trusted clock, pos.clock): mbedTLS checks
    certificate validity against it, and a 2000-01-01 RTC would make every
    certificate not yet valid."""
    if time.gmtime(0)[0] == 2000:
        t -= _EPOCH_2000
    y, mo, d, h, mi, s, wd = time.gmtime(t)[:7]
    machine.RTC().datetime((y, mo, d, wd, h, mi, s, 0))


def wire(ssid=None, key=None):
    from pos.pn532 import PN532
    from pos.pn532_hsu import PN532_HSU
    b = Board()
    b.wdt = hw.setup()
    b.journal_dev = flash.setup()
    b.config_path = CONFIG
    uart = machine.UART(pins.PN532_UART, baudrate=115200, tx=pins.PN532_TX, rx=pins.PN532_RX,
                        timeout=0, rxbuf=512)
    rst = machine.Pin(pins.PN532_RST, machine.Pin.OUT, value=1)
    b.nfc = PN532(PN532_HSU(uart, reset=rst))
    b.nfc_baud = 921600  # SetSerialBaudRate after start-up: UART time per tap drops ~8x
    b.wifi = wifi.Wifi(ssid, key)
    display = None
    try:
        import ssd1306
        i2c = machine.I2C(pins.I2C_ID, scl=machine.Pin(pins.I2C_SCL), sda=machine.Pin(pins.I2C_SDA))
        if pins.DISPLAY_ADDR in i2c.scan():
            display = ssd1306.SSD1306_I2C(128, 64, i2c, pins.DISPLAY_ADDR)
    except (ImportError, OSError):
        display = None  # the display is optional: the terminal works without one
    b.feedback = feedback.create(display)
    b.till = tillport.TillPort()
    b.clock = clock
    b.set_rtc = set_rtc
    return b
