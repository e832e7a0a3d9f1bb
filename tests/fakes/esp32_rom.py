"""A fake ESP32 in its ROM download mode, on a pty, for esptool's calls where
no chip exists (tests/test_offpay_flash.py).

It speaks the serial bootloader protocol as Espressif documents it: SLIP
frames, command packets (direction 00, opcode, length, checksum, data) and
responses (01, opcode, length, value, data, 4 status bytes for the ROM), and
implements the commands esptool's ROM path uses: SYNC (answered 8 times),
READ_REG/WRITE_REG (the chip-detect magic, efuses as zero, the SPI
controller's user commands enough to report a 4 MB flash ID),
SPI_SET_PARAMS, SPI_ATTACH, FLASH_BEGIN/DATA/END (erase then program the
4 MB `flash` bytearray), SPI_FLASH_MD5, READ_FLASH_SLOW, CHANGE_BAUDRATE.
Anything else is answered "invalid command", as the ROM does. `log` keeps
(opcode, args) of every command, so a test checks what esptool did.
"""
import hashlib
import os
import struct
import threading
import tty

ESP32_MAGIC = 0x00F01D83
CHIP_DETECT_MAGIC_REG = 0x40001000
SPI_BASE = 0x3FF42000
FLASH_SIZE = 4 * 1024 * 1024


class FakeESP32:
    def __init__(self, flash=None, silent_after=None):
        self.flash = bytearray(flash if flash is not None else b"\xff" * FLASH_SIZE)
        self.regs = {}
        self.log = []
        self.errors = []  # commands the fake could not parse: a test asserts there are none
        self.silent_after = silent_after  # stop answering after this many FLASH_DATA (a pulled cable)
        self._data_blocks = 0
        self._begin = None
        self._stop = threading.Event()
        self._master, slave = os.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        self._slave = slave
        self._t = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._t.start()
        return self

    def stop(self):
        self._stop.set()
        self._t.join(2)
        os.close(self._master)
        os.close(self._slave)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- SLIP ---------------------------------------------------------------------

    def _send(self, op, val=0, data=b"", status=b"\x00\x00\x00\x00"):
        body = struct.pack("<BBHI", 1, op, len(data) + len(status), val) + data + status
        out = body.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
        os.write(self._master, b"\xc0" + out + b"\xc0")

    def _run(self):
        import select
        buf = bytearray()
        frame = None
        while not self._stop.is_set():
            r, _, _ = select.select([self._master], [], [], 0.05)
            if not r:
                continue
            try:
                chunk = os.read(self._master, 4096)
            except OSError:
                continue
            for b in chunk:
                if b == 0xC0:
                    if frame is not None and len(frame) >= 8:
                        self._packet(bytes(frame).replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb"))
                        frame = None
                    else:
                        frame = bytearray()
                elif frame is not None:
                    frame.append(b)
            del buf[:]

    def _packet(self, p):
        direction, op, n, _chk = struct.unpack("<BBHI", p[:8])
        data = p[8:8 + n]
        if direction != 0:
            return
        if self.silent_after is not None and self._data_blocks >= self.silent_after:
            return  # unplugged
        self.log.append((op, data[:16]))
        h = getattr(self, "_op_%02x" % op, None)
        if h is None:
            self._send(op, status=b"\x01\x05\x00\x00")  # invalid command
            return
        try:
            h(op, data)
        except (struct.error, IndexError, TypeError) as e:
            self.errors.append((op, repr(e)))
            self._send(op, status=b"\x01\x07\x00\x00")

    # -- commands -------------------------------------------------------------------

    def _op_08(self, op, data):  # SYNC: the ROM answers eight times
        for _ in range(8):
            self._send(op, val=0x20120707)

    def _op_0a(self, op, data):  # READ_REG
        addr, = struct.unpack("<I", data[:4])
        if addr == CHIP_DETECT_MAGIC_REG:
            val = ESP32_MAGIC
        else:
            val = self.regs.get(addr, 0)
        self._send(op, val=val)

    def _op_09(self, op, data):  # WRITE_REG
        addr, value, _mask, _delay = struct.unpack("<IIII", data[:16])
        self.regs[addr] = value
        if addr == SPI_BASE and value & (1 << 18):  # SPI_CMD_USR: run the user command
            cmd = self.regs.get(SPI_BASE + 0x24, 0) & 0xFF
            self.regs[SPI_BASE + 0x80] = 0x164020 if cmd == 0x9F else 0  # JEDEC ID: 4 MB
            self.regs[SPI_BASE] = 0  # done
        self._send(op)

    def _ok(self, op, data):
        self._send(op)

    _op_0b = _ok  # SPI_SET_PARAMS
    _op_0d = _ok  # SPI_ATTACH
    _op_0f = _ok  # CHANGE_BAUDRATE

    def _op_02(self, op, data):  # FLASH_BEGIN: erase, then blocks follow
        size, blocks, block, offset = struct.unpack("<IIII", data[:16])
        if offset + size > len(self.flash) or offset % 4096:
            self._send(op, status=b"\x01\x06\x00\x00")
            return
        erase = (size + 4095) // 4096 * 4096
        self.flash[offset:offset + erase] = b"\xff" * erase
        self._begin = [offset, block]
        self._send(op)

    def _op_03(self, op, data):  # FLASH_DATA
        n, seq, _a, _b = struct.unpack("<IIII", data[:16])
        off = self._begin[0] + seq * self._begin[1]
        self.flash[off:off + n] = data[16:16 + n]
        self._data_blocks += 1
        self._send(op)

    def _op_04(self, op, data):  # FLASH_END
        self._send(op)

    def _op_13(self, op, data):  # SPI_FLASH_MD5: 32 hex digits from the ROM
        addr, size, _a, _b = struct.unpack("<IIII", data[:16])
        self._send(op, data=hashlib.md5(self.flash[addr:addr + size]).hexdigest().encode())

    def _op_0e(self, op, data):  # READ_FLASH_SLOW: 64-byte blocks
        addr, n = struct.unpack("<II", data[:8])
        self._send(op, data=bytes(self.flash[addr:addr + n]).ljust(64, b"\xff"))
