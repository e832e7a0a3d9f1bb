"""File-backed NOR-flash block device for `vfs.VfsLfs2` on the unix port.

The image file holds the whole chip, so a test can "pull the plug", start a new
process and mount the very same bytes again, or hand the image to a host tool
(littlefs-python) to inspect.

NOR semantics, because littlefs' power-loss guarantees rest on them:
  * erase (ioctl 6) sets a whole block to 0xFF;
  * program can only clear bits: new = old & data.  Programming a 1 over a 0
    does not set it; `violations` counts such attempts and `strict=True`
    raises `NorViolation` instead.

Power-cut injector: every program and every erase is one "op", numbered from 1
(`dev.ops` counts them).  With `cut_at=k` op k never completes: it is dropped
(or, with `torn=True`, half of it lands) and then the power goes:
  * mode "raise" (default): `PowerCut` is raised and the device stays dead:
    every later access raises `PowerCut` again, so a `finally: f.close()`
    can neither reach the image nor turn the cut into another exception.
    (A littlefs file the cut left open is closed later by the GC, on the
    dead device, and MicroPython prints that failure on stderr.)  Handy for
    a few cut points inside one test process;
  * mode "exit": the process is killed with SIGKILL on the spot (no unwinding,
    no finalisers), like a real brown-out.  A new process then remounts.
Environment (read by `from_env`, used by `setup`): POS_FLASH_CUT_AT=k,
POS_FLASH_CUT_MODE=raise|exit, POS_FLASH_CUT_TORN=1.

Block-device protocol: the extended one (readblocks/writeblocks with an
offset, ioctl 1..6) that VfsLfs2 uses, plus the simple one (offset None:
whole-block erase+write) that VfsFat would use.
"""
from micropython import const
import os
import sys
import time
import vfs

_BLOCK_SIZE = const(4096)
_BLOCKS = const(256)
_CHUNK = const(256)  # bounded scratch: a program op is applied in slices of this size

_IOCTL_INIT = const(1)
_IOCTL_DEINIT = const(2)
_IOCTL_SYNC = const(3)
_IOCTL_BLOCK_COUNT = const(4)
_IOCTL_BLOCK_SIZE = const(5)
_IOCTL_BLOCK_ERASE = const(6)

_CUT_EXIT = const(86)

device = None  # the FlashDevice setup() mounted (for the emulator's probe)


class PowerCut(BaseException):
    # BaseException, not Exception: firmware code that catches Exception must
    # not be able to "survive" a power cut.
    pass


class NorViolation(Exception):
    pass


class FlashDevice:
    def __init__(self, path, blocks=_BLOCKS, block_size=_BLOCK_SIZE, strict=False,
                 cut_at=None, torn=False, mode="raise"):
        self.path = path
        self.blocks = blocks
        self.block_size = block_size
        self.strict = strict
        self.cut_at = cut_at
        self.torn = torn
        self.mode = mode
        self.ops = 0
        self.erases = 0
        self.programs = 0
        self.prog_bytes = 0  # for the tap bench's NOR timing model
        self.read_bytes = 0
        self.busy_us = 0  # time spent emulating the chip (C and silicon on a device)
        self.violations = 0
        self.dead = False
        self._dead_exc = PowerCut("device is dead")
        self._scratch = bytearray(_CHUNK)
        self._ff = b"\xff" * _CHUNK
        size = blocks * block_size
        try:
            cur = os.stat(path)[6]
        except OSError:
            cur = -1
        if cur != size:
            # A fresh chip ships erased.
            with open(path, "wb") as f:
                for _ in range(size // _CHUNK):
                    f.write(self._ff)
        self._f = open(path, "r+b")

    def close(self):
        if self._f is not None:
            self._f.close()
            self._f = None

    # -- power-cut injection -------------------------------------------------

    def _tick(self):
        # Returns True when this op is the one the power dies in.
        self.ops += 1
        return self.cut_at is not None and self.ops >= self.cut_at

    def _dead(self):
        # Any access after the cut.  Inside the GC (finalising a littlefs
        # file the cut abandoned) the heap is locked, so raise the instance
        # made in advance: littlefs gives up at once instead of retrying.
        try:
            exc = PowerCut("device is dead")
        except MemoryError:
            exc = self._dead_exc
        raise exc

    def _die(self):
        self.dead = True
        if self.mode == "exit":
            # SIGKILL ourselves: no exception unwinding, no finally blocks,
            # exactly what a brown-out does.  $PPID of the shell is us.
            os.system("kill -9 $PPID")
            sys.exit(_CUT_EXIT)
        raise PowerCut("power cut at op %d" % self.ops)

    # -- raw NOR operations --------------------------------------------------

    def _erase(self, addr, n):
        f = self._f
        f.seek(addr)
        while n > 0:
            m = n if n < _CHUNK else _CHUNK
            f.write(memoryview(self._ff)[:m])
            n -= m

    def _program(self, addr, data):
        f = self._f
        n = len(data)
        i = 0
        while i < n:
            m = n - i
            if m > _CHUNK:
                m = _CHUNK
            old = memoryview(self._scratch)[:m]
            f.seek(addr + i)
            f.readinto(old)
            o = int.from_bytes(old, "little")
            d = int.from_bytes(data[i:i + m], "little")
            if d | o != o:
                # littlefs must never program over non-erased bits.
                self.violations += 1
                if self.strict:
                    raise NorViolation("program sets 0->1 at 0x%x" % (addr + i))
            f.seek(addr + i)
            f.write((o & d).to_bytes(m, "little"))
            i += m

    def erase_block(self, block):
        if block < 0 or block >= self.blocks:
            raise ValueError("block out of range")
        if self.dead:
            self._dead()
        cut = self._tick()
        self.erases += 1
        addr = block * self.block_size
        if cut:
            if self.torn:
                self._erase(addr, self.block_size // 2)
            self._die()
        t = time.ticks_us()
        self._erase(addr, self.block_size)
        self.busy_us += time.ticks_diff(time.ticks_us(), t)

    def program(self, addr, buf):
        if addr < 0 or addr + len(buf) > self.blocks * self.block_size:
            raise ValueError("program out of range")
        if self.dead:
            self._dead()
        cut = self._tick()
        self.programs += 1
        data = memoryview(buf)
        self.prog_bytes += len(data)
        if cut:
            if self.torn:
                self._program(addr, data[:len(data) // 2])
            self._die()
        t = time.ticks_us()
        self._program(addr, data)
        self.busy_us += time.ticks_diff(time.ticks_us(), t)

    # -- block-device protocol ----------------------------------------------

    def readblocks(self, block, buf, offset=0):
        if self.dead:
            self._dead()
        t = time.ticks_us()
        f = self._f
        f.seek(block * self.block_size + offset)
        n = f.readinto(buf)
        self.busy_us += time.ticks_diff(time.ticks_us(), t)
        self.read_bytes += len(buf)
        if n != len(buf):
            raise OSError(5)  # EIO: read past the end of the chip

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            # Simple protocol: whole blocks, erase implied.
            bs = self.block_size
            mv = memoryview(buf)
            for i in range(len(buf) // bs):
                self.erase_block(block + i)
                self.program((block + i) * bs, mv[i * bs:(i + 1) * bs])
        else:
            self.program(block * self.block_size + offset, buf)

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.blocks
        if op == _IOCTL_BLOCK_SIZE:
            return self.block_size
        if op == _IOCTL_BLOCK_ERASE:
            self.erase_block(arg)
            return 0
        if op == _IOCTL_INIT or op == _IOCTL_DEINIT or op == _IOCTL_SYNC:
            if self.dead:
                self._dead()
            return 0
        return None


def from_env(path, blocks=_BLOCKS, block_size=_BLOCK_SIZE, strict=False):
    """A device whose power-cut settings come from POS_FLASH_CUT_* variables."""
    at = os.getenv("POS_FLASH_CUT_AT")
    return FlashDevice(path, blocks, block_size, strict,
                       cut_at=int(at) if at else None,
                       torn=os.getenv("POS_FLASH_CUT_TORN") == "1",
                       mode=os.getenv("POS_FLASH_CUT_MODE") or "raise")


def is_blank(dev):
    """True when both superblock blocks are fully erased (a never-formatted chip)."""
    buf = bytearray(_CHUNK)
    ff = b"\xff" * _CHUNK
    for block in (0, 1):
        for off in range(0, dev.ioctl(_IOCTL_BLOCK_SIZE, 0), _CHUNK):
            dev.readblocks(block, buf, off)
            if buf != ff:
                return False
    return True


def mount(dev, mountpoint="/flash"):
    """Format the device if it is blank, then mount littlefs at `mountpoint`.

    A chip that is not blank but does not mount is NOT formatted: it may still
    hold payments, so the OSError goes up for a human (or a host tool)."""
    if is_blank(dev):
        vfs.VfsLfs2.mkfs(dev)
    fs = vfs.VfsLfs2(dev)
    vfs.mount(fs, mountpoint)
    return fs


def umount(mountpoint="/flash"):
    vfs.umount(mountpoint)


class Partition:
    """Blocks first..first+blocks-1 of a device, as a device of their own:
    the emulated chip's partition table, as esp32.Partition gives the ESP32
    firmware its "journal" partition."""

    def __init__(self, dev, first, blocks, fail=None):
        if first < 0 or blocks < 1 or first + blocks > dev.blocks:
            raise ValueError("partition outside the device")
        self.dev = dev
        self.first = first
        self.blocks = blocks
        # Fault injection for the journal: "after:N" / "before:N" makes the
        # N-th program of a record frame (magic 0xA5) raise OSError(EIO) after
        # the data landed / without writing it (a chip that reports an error
        # either way).
        self._fail = None
        if fail:
            when, n = fail.split(":")
            self._fail = (when == "after", int(n))
        self._frames = 0

    def readblocks(self, block, buf, offset=0):
        self._check(block, offset, len(buf))
        self.dev.readblocks(self.first + block, buf, offset)

    def writeblocks(self, block, buf, offset=None):
        self._check(block, offset or 0, len(buf))
        if self._fail is not None and offset is not None and len(buf) >= 12 and buf[0] == 0xA5:
            self._frames += 1
            if self._frames == self._fail[1]:
                if self._fail[0]:
                    self.dev.writeblocks(self.first + block, buf, offset)
                raise OSError(5)
        self.dev.writeblocks(self.first + block, buf, offset)

    def _check(self, block, offset, n):
        if block < 0 or block * self.dev.block_size + offset + n > self.blocks * self.dev.block_size:
            raise OSError(5)  # EIO, as esp32.Partition reports an access outside it

    def ioctl(self, op, arg):
        if op == _IOCTL_BLOCK_COUNT:
            return self.blocks
        if op == _IOCTL_BLOCK_ERASE:
            if not 0 <= arg < self.blocks:
                raise OSError(5)
            arg += self.first
        return self.dev.ioctl(op, arg)


# The emulated chip's partition table: littlefs for config and the like, then
# the raw journal (host_tools/journal_dump.py reads the same layout).
FS_BLOCKS = const(64)


def setup(image=None, mountpoint="/flash", blocks=None):
    """Board entry: image file (POS_FLASH if not given) -> device (cut
    settings from env) -> littlefs on its first FS_BLOCKS mounted at
    `mountpoint`. Returns the rest of the chip, the journal's partition, as
    boards/esp32/flash.setup() does. The chip has POS_FLASH_BLOCKS blocks
    (default 256; 320 gives the journal the ESP32 partition's 1 MiB)."""
    global device
    image = image or os.getenv("POS_FLASH") or "flash.img"
    if blocks is None:
        blocks = int(os.getenv("POS_FLASH_BLOCKS") or _BLOCKS)
    device = from_env(image, blocks)
    mount(Partition(device, 0, FS_BLOCKS), mountpoint)
    return Partition(device, FS_BLOCKS, blocks - FS_BLOCKS, os.getenv("POS_JOURNAL_FAIL"))
