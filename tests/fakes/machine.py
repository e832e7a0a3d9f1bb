# Fake of MicroPython's `machine` module (ESP32 port), for running boards/esp32
# in the unix port.  Constructor signatures and method names follow the
# MicroPython docs; every hardware touch is appended to `calls` so tests can
# assert the wiring.  Not a simulator: values are remembered, not emulated.
import io

calls = []
_freq = 160000000


def reset_calls():
    del calls[:]


def freq(hz=None):
    global _freq
    if hz is None:
        return _freq
    calls.append(("freq", hz))
    _freq = hz


def reset():
    calls.append(("reset",))
    raise SystemExit("machine.reset")


def unique_id():
    return b"\x24\x0a\xc4\x00\x00\x01"


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    IRQ_RISING = 1
    IRQ_FALLING = 2

    def __init__(self, id, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        if not isinstance(id, int) or not 0 <= id <= 39 or 6 <= id <= 11:
            raise ValueError("invalid pin")  # 6..11 are the SPI flash on a WROOM
        if mode == Pin.OUT and id >= 34:
            raise ValueError("pin can only be input")
        self.id = id
        self.mode = mode
        self.pull = pull
        self._value = 0 if value is None else int(bool(value))
        calls.append(("Pin", id, mode, pull, value))

    def init(self, mode=-1, pull=-1, *, value=None, drive=None, hold=None):
        self.mode = mode
        if value is not None:
            self._value = int(bool(value))
        calls.append(("Pin.init", self.id, mode, pull, value))

    def value(self, x=None):
        if x is None:
            return self._value
        self._value = int(bool(x))
        calls.append(("Pin.value", self.id, self._value))

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, x=None):
        return self.value(x)

    def irq(self, handler=None, trigger=IRQ_FALLING | IRQ_RISING):
        calls.append(("Pin.irq", self.id, trigger))


class PWM:
    def __init__(self, dest, *, freq=None, duty=None, duty_u16=None, duty_ns=None, invert=False):
        if not isinstance(dest, Pin):
            dest = Pin(dest, Pin.OUT)
        self.pin = dest
        self._freq = freq or 5000
        self._duty = 0 if duty_u16 is None else duty_u16
        calls.append(("PWM", dest.id, freq, duty_u16))

    def init(self, *, freq=None, duty_u16=None, duty_ns=None):
        if freq is not None:
            self._freq = freq
        if duty_u16 is not None:
            self._duty = duty_u16
        calls.append(("PWM.init", self.pin.id, freq, duty_u16))

    def freq(self, value=None):
        if value is None:
            return self._freq
        if not 1 <= value <= 40000000:
            raise ValueError("frequency out of range")
        self._freq = value
        calls.append(("PWM.freq", self.pin.id, value))

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        if not 0 <= value <= 65535:
            raise ValueError("duty out of range")
        self._duty = value
        calls.append(("PWM.duty_u16", self.pin.id, value))

    def duty(self, value=None):
        if value is None:
            return self._duty >> 6
        self.duty_u16(value << 6)

    def deinit(self):
        calls.append(("PWM.deinit", self.pin.id))


_MP_STREAM_POLL = 3
_MP_STREAM_POLL_RD = 0x0001
_MP_STREAM_POLL_WR = 0x0004


class UART(io.IOBase):
    # A stream (io.IOBase + ioctl poll) so asyncio.StreamReader can wait on
    # it as it does on the real UART.  Tests feed bytes with _feed() and
    # read what the firmware wrote from .tx.
    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, *, tx=None, rx=None,
                 rts=None, cts=None, txbuf=None, rxbuf=256, timeout=0, timeout_char=0,
                 invert=0, flow=0):
        if id not in (0, 1, 2):
            raise ValueError("UART(%r) does not exist" % (id,))
        self.id = id
        self.baudrate = baudrate
        self.tx_pin = tx
        self.rx_pin = rx
        self.rxbuf = rxbuf
        self.timeout = timeout
        self._rx = bytearray()
        self.tx = bytearray()
        calls.append(("UART", id, baudrate, tx, rx))

    def init(self, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        self.baudrate = baudrate
        calls.append(("UART.init", self.id, baudrate))

    def deinit(self):
        calls.append(("UART.deinit", self.id))

    def _feed(self, data):
        self._rx += data

    def any(self):
        return len(self._rx)

    def read(self, n=-1):
        if not self._rx:
            return None
        if n is None or n < 0:
            n = len(self._rx)
        b = bytes(self._rx[:n])
        self._rx = self._rx[n:]
        return b

    def readinto(self, buf, nbytes=None):
        n = len(buf) if nbytes is None else nbytes
        b = self.read(n)
        if b is None:
            return None
        buf[:len(b)] = b
        return len(b)

    def readline(self):
        i = self._rx.find(b"\n")
        return self.read(len(self._rx) if i < 0 else i + 1)

    def write(self, buf):
        self.tx += buf
        return len(buf)

    def flush(self):
        pass

    def txdone(self):
        return True

    def ioctl(self, req, arg):
        if req == _MP_STREAM_POLL:
            ret = arg & _MP_STREAM_POLL_WR
            if self._rx:
                ret |= arg & _MP_STREAM_POLL_RD
            return ret
        return 0


class WDT:
    def __init__(self, id=0, timeout=5000):
        if not 1 <= timeout:
            raise ValueError("timeout")
        self.timeout = timeout
        self.feeds = 0
        calls.append(("WDT", id, timeout))

    def feed(self):
        self.feeds += 1


class I2C:
    def __init__(self, id, *, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id
        self.devices = []
        calls.append(("I2C", id, scl.id if isinstance(scl, Pin) else scl,
                      sda.id if isinstance(sda, Pin) else sda, freq))

    def scan(self):
        return list(self.devices)

    def writeto(self, addr, buf, stop=True):
        return 1

    def writevto(self, addr, vector, stop=True):
        return 1


class SoftI2C(I2C):
    def __init__(self, scl, sda, *, freq=400000, timeout=50000):
        super().__init__(-1, scl=scl, sda=sda, freq=freq, timeout=timeout)


class RTC:
    """The real-time clock: datetime((y, m, d, weekday, h, mi, s, subsec)) sets it."""
    set_to = None

    def datetime(self, dt=None):
        if dt is None:
            return RTC.set_to
        if len(dt) != 8:
            raise ValueError("datetime takes 8 fields")
        RTC.set_to = tuple(dt)
