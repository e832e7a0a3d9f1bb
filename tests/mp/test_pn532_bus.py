# PN532 I2C and SPI transports over hand-written fake buses that behave like the chip's
# host interfaces (status byte / ready bit, NACK re-send, SPI DW/SR/DR with LSB-first bits).
import unit
from pos.pn532 import PN532, FrameError
from pos.pn532_i2c import PN532_I2C
from pos.pn532_spi import PN532_SPI
from test_pn532_core import ACK, NACK, FakeChip, nosleep


def rev8(b):
    r = 0
    for i in range(8):
        if b & (1 << i):
            r |= 0x80 >> i
    return r


class FakeI2C:
    """Each read: status byte (bit 0 ready) + the current frame from its start.
    A data read (len > 1) consumes the frame; a NACK written re-queues it."""

    def __init__(self, chip, addr=0x24):
        self.chip = chip
        self.addr = addr
        self.cur = None
        self.last = None
        self.reads = 0

    def writeto(self, addr, buf):
        assert addr == self.addr
        b = bytes(buf)
        self.cur = None
        self.chip.receive(b)  # a NACK makes the chip queue its last response again

    def readfrom_into(self, addr, buf):
        assert addr == self.addr
        if self.cur is None and self.chip.out:
            self.cur = self.chip.out.pop(0)
        for i in range(len(buf)):
            buf[i] = 0
        if self.cur is None:
            return
        buf[0] = 1
        n = min(len(self.cur), len(buf) - 1)
        buf[1:1 + n] = self.cur[:n]
        if len(buf) > 1:
            self.reads += 1
            self.last = self.cur
            self.cur = None


class FakePin:
    def __init__(self, bus):
        self.bus = bus
        self.v = 1

    def value(self, v=None):
        if v is None:
            return self.v
        if v and not self.v:
            self.bus.cs_high()
        if not v and self.v:
            self.bus.cs_low()
        self.v = v


class FakeSPI:
    """SPI mode 0, PN532 expects LSB first: this bus is MSB first, so every byte is
    bit-reversed here (the transport must reverse them too)."""

    def __init__(self, chip):
        self.chip = chip
        self.op = None
        self.wbuf = bytearray()
        self.cur = None
        self.pos = 0

    def cs_low(self):
        self.op = None
        self.wbuf = bytearray()

    def cs_high(self):
        if self.op == 0x01 and self.wbuf:
            self.chip.receive(bytes(self.wbuf))
        if self.op == 0x03 and self.cur is not None and self.pos > 0:
            self.cur = None  # frame consumed
        self.op = None

    def write(self, buf):
        for b in buf:
            b = rev8(b)
            if self.op is None:
                self.op = b
            elif self.op == 0x01:
                self.wbuf.append(b)

    def readinto(self, buf):
        if self.cur is None and self.chip.out:
            self.cur = self.chip.out.pop(0)
            self.pos = 0
        for i in range(len(buf)):
            if self.op == 0x02:
                v = 1 if self.cur is not None else 0
            elif self.op == 0x03 and self.cur is not None and self.pos < len(self.cur):
                v = self.cur[self.pos]
                self.pos += 1
            else:
                v = 0
            buf[i] = rev8(v)


def check_session(nfc, chip):
    assert nfc.begin() == (0x32, 1, 6, 7)
    t = nfc.poll(20)
    assert t is not None and t.uid == b"\x08\x01\x02\x03"
    assert nfc.apdu(b"\x00\xa4\x04\x00\x02\x01\x02") == b"\x00\xa4\x04\x00\x02\x01\x02\x90\x00"
    body = bytes(i & 0xFF for i in range(600)) + b"\x90\x00"
    chip.exchange = lambda tg, d: [body[:262], body[262:524], body[524:]]
    assert nfc.apdu(b"\x00\xb0\x00\x00\x00") == body
    big = bytes(i & 0xFF for i in range(500))
    chip.exchange = lambda tg, d: b"\x00" + bytes(d[-3:]) + b"\x90\x00"
    assert nfc.apdu(big) == big[-3:] + b"\x90\x00"
    chip.corrupt = 1
    assert nfc.apdu(b"\x01\x02\x03") == b"\x01\x02\x03\x90\x00"
    assert nfc.release()


def test_i2c_session():
    chip = FakeChip()
    bus = FakeI2C(chip)
    nfc = PN532(PN532_I2C(bus, sleep_ms=nosleep), sleep_ms=nosleep)
    check_session(nfc, chip)
    assert chip.nacks >= 3  # long frames re-read via NACK + the corrupted one


def test_i2c_wake_source():
    chip = FakeChip()
    nfc = PN532(PN532_I2C(FakeI2C(chip), sleep_ms=nosleep), sleep_ms=nosleep)
    nfc.begin()
    nfc.power_down()
    assert chip.cmds[-1] == (0x16, b"\x80")


def test_spi_session():
    chip = FakeChip()
    bus = FakeSPI(chip)
    cs = FakePin(bus)
    nfc = PN532(PN532_SPI(bus, cs, sleep_ms=nosleep), sleep_ms=nosleep)
    check_session(nfc, chip)
    nfc.power_down()
    assert chip.cmds[-1] == (0x16, b"\x20")


def test_spi_garbled_response_bounded():
    chip = FakeChip()
    bus = FakeSPI(chip)
    nfc = PN532(PN532_SPI(bus, FakePin(bus), sleep_ms=nosleep), sleep_ms=nosleep)
    nfc.begin()
    chip.corrupt = 10
    unit.raises(FrameError, nfc.firmware_version)


if __name__ == "__main__":
    unit.run(globals())
