# Fake of MicroPython's `esp32` module: Partition only, with a partition table
# a test sets up (add_partition).  Each partition is backed by a host file
# (the 128k test heap cannot hold one) that behaves like NOR flash: erase ->
# 0xFF, program only clears bits.  Partition objects implement the extended
# block protocol, as the real ones do, so vfs.VfsLfs2 mounts them.
import os

calls = []
_table = []

_IOCTL_BLOCK_COUNT = 4
_IOCTL_BLOCK_SIZE = 5
_IOCTL_BLOCK_ERASE = 6
_FF = b"\xff" * 256


def add_partition(label, size, type=1, subtype=0x82, path=None):
    path = path or "%s/esp32_part_%s.bin" % (os.getenv("POS_TEST_TMP") or "/tmp", label)
    with open(path, "wb") as f:
        for _ in range(size // 256):
            f.write(_FF)
    _table.append((type, subtype, label, size, path))


def reset():
    del _table[:]
    del calls[:]


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = 0
    TYPE_DATA = 1

    def __init__(self, id, block_size=4096):
        if not isinstance(id, str):
            raise ValueError("only labels are faked")
        for t in _table:
            if t[2] == id:
                break
        else:
            raise ValueError("partition not found")
        self._t = t
        self.block_size = block_size
        calls.append(("Partition", id, block_size))

    @staticmethod
    def find(type=TYPE_APP, subtype=0xff, label=None, block_size=4096):
        calls.append(("Partition.find", type, subtype, label, block_size))
        out = []
        for t in _table:
            if t[0] == type and (subtype == 0xff or t[1] == subtype) and (label is None or t[2] == label):
                out.append(Partition(t[2], block_size))
        return out

    def info(self):
        t = self._t
        return (t[0], t[1], 0x200000, t[3], t[2], False)

    def readblocks(self, block_num, buf, offset=0):
        with open(self._t[4], "rb") as f:
            f.seek(block_num * self.block_size + offset)
            f.readinto(buf)

    def writeblocks(self, block_num, buf, offset=None):
        if offset is None:
            # Simple protocol: erase the blocks first.
            for i in range(len(buf) // self.block_size):
                self.ioctl(_IOCTL_BLOCK_ERASE, block_num + i)
            offset = 0
        a = block_num * self.block_size + offset
        with open(self._t[4], "r+b") as f:
            f.seek(a)
            old = f.read(len(buf))
            new = bytes(old[i] & buf[i] for i in range(len(buf)))
            f.seek(a)
            f.write(new)

    def ioctl(self, cmd, arg):
        if cmd == _IOCTL_BLOCK_COUNT:
            return self._t[3] // self.block_size
        if cmd == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if cmd == _IOCTL_BLOCK_ERASE:
            with open(self._t[4], "r+b") as f:
                f.seek(arg * self.block_size)
                for _ in range(self.block_size // 256):
                    f.write(_FF)
            return 0
        return 0
