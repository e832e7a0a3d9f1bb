# A NOR-like block device in RAM (erase = 0xFF) for the firmware's Journal, in
# the bench's MicroPython scripts (bench/esp32/ops.py and mkjournal.py,
# bench/esp32_uplink.py). Erased in 256-byte pieces and read through a
# memoryview, so the device itself takes no heap beyond its blocks.

_FF = b"\xff" * 256


class RamDev:
    def __init__(self, blocks, bs=4096):
        self.bs = bs
        self.blocks = blocks
        self.buf = bytearray(blocks * bs)
        for i in range(blocks):
            self.ioctl(6, i)

    def readblocks(self, block, buf, off=0):
        o = block * self.bs + off
        buf[:] = memoryview(self.buf)[o:o + len(buf)]

    def writeblocks(self, block, buf, off=0):
        o = block * self.bs + off
        self.buf[o:o + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return self.bs
        if op == 6:
            o = arg * self.bs
            for k in range(o, o + self.bs, 256):
                self.buf[k:k + 256] = _FF
            return 0
        return None
