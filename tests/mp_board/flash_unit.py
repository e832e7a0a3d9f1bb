# boards/unix/flash.py: NOR semantics, block-device protocol, power-cut
# injector, mount helper.  Run by tests/test_journal.py.
import os
import vfs

import flash
import unit

TMP = os.getenv("POS_TEST_TMP") or "/tmp"
IMG = TMP + "/flash_test.img"


def new(blocks=8, **kw):
    try:
        os.remove(IMG)
    except OSError:
        pass
    return flash.FlashDevice(IMG, blocks, **kw)


def read(dev, block, off, n):
    b = bytearray(n)
    dev.readblocks(block, b, off)
    return bytes(b)


def test_fresh_chip_is_erased_and_sized():
    dev = new(8)
    assert os.stat(IMG)[6] == 8 * 4096
    assert dev.ioctl(4, 0) == 8 and dev.ioctl(5, 0) == 4096
    assert dev.ioctl(1, 0) == 0 and dev.ioctl(3, 0) == 0 and dev.ioctl(2, 0) == 0
    assert read(dev, 7, 4000, 96) == b"\xff" * 96
    assert flash.is_blank(dev)
    dev.close()


def test_program_only_clears_bits():
    dev = new()
    dev.writeblocks(2, b"\x0f\xf0\xaa", 10)
    assert read(dev, 2, 10, 3) == b"\x0f\xf0\xaa"
    dev.writeblocks(2, b"\xff\x0f\x55", 10)  # 1s over 0s do not come back
    assert read(dev, 2, 10, 3) == b"\x0f\x00\x00"
    assert dev.violations == 1
    dev.writeblocks(2, b"\x0e", 10)  # clearing more bits is fine
    assert read(dev, 2, 10, 1) == b"\x0e" and dev.violations == 1
    dev.close()


def test_strict_mode_raises():
    dev = new(strict=True)
    dev.writeblocks(1, b"\x00", 0)
    unit.raises(flash.NorViolation, dev.writeblocks, 1, b"\x01", 0)
    assert read(dev, 1, 0, 1) == b"\x00"
    dev.close()


def test_erase_sets_whole_block_only():
    dev = new()
    dev.writeblocks(3, b"\x00" * 4096, 0)
    dev.writeblocks(4, b"\x00" * 16, 0)
    assert dev.ioctl(6, 3) == 0
    assert read(dev, 3, 0, 4096) == b"\xff" * 4096
    assert read(dev, 4, 0, 16) == b"\x00" * 16
    unit.raises(ValueError, dev.ioctl, 6, 8)
    dev.close()


def test_simple_protocol_erases_then_writes():
    dev = new()
    dev.writeblocks(5, b"\x00" * 4096, 0)
    dev.writeblocks(5, b"\x5a" * 8192)  # offset None: whole blocks, erase implied
    assert read(dev, 5, 0, 8) == b"\x5a" * 8 and read(dev, 6, 4088, 8) == b"\x5a" * 8
    assert dev.violations == 0
    dev.close()


def test_ops_are_counted_and_cut_drops_the_op():
    dev = new()
    dev.writeblocks(0, b"\x00", 0)
    dev.ioctl(6, 1)
    assert dev.ops == 2 and dev.programs == 1 and dev.erases == 1
    dev.cut_at = 3
    unit.raises(flash.PowerCut, dev.writeblocks, 0, b"\x00\x00", 1)
    assert dev.dead and dev.ops == 3
    # Dead: nothing more reaches the image, every access says so.
    unit.raises(flash.PowerCut, dev.writeblocks, 0, b"\x00", 5)
    unit.raises(flash.PowerCut, dev.readblocks, 0, bytearray(1), 0)
    unit.raises(flash.PowerCut, dev.ioctl, 6, 0)
    dev.close()
    dev = flash.FlashDevice(IMG, 8)
    assert read(dev, 0, 0, 8) == b"\x00" + b"\xff" * 7
    dev.close()


def test_power_cut_is_not_an_exception():
    # Firmware's `except Exception` must not survive a power cut.
    assert not issubclass(flash.PowerCut, Exception)
    assert issubclass(flash.PowerCut, BaseException)


def test_torn_program_and_erase():
    dev = new(cut_at=1, torn=True)
    unit.raises(flash.PowerCut, dev.writeblocks, 0, b"\x00" * 8, 0)
    dev.close()
    dev = flash.FlashDevice(IMG, 8)
    assert read(dev, 0, 0, 8) == b"\x00" * 4 + b"\xff" * 4
    dev.writeblocks(1, b"\x00" * 4096, 0)
    dev.cut_at = dev.ops + 1
    dev.torn = True
    unit.raises(flash.PowerCut, dev.ioctl, 6, 1)
    dev.close()
    dev = flash.FlashDevice(IMG, 8)
    assert read(dev, 1, 2040, 16) == b"\xff" * 8 + b"\x00" * 8
    dev.close()


def test_mount_formats_only_a_blank_chip():
    dev = new(32)
    fs = flash.mount(dev, "/flash")
    with open("/flash/hello.txt", "w") as f:
        f.write("written by the unix port")
    flash.umount("/flash")
    dev.close()
    dev = flash.FlashDevice(IMG, 32)
    assert not flash.is_blank(dev)
    flash.mount(dev, "/flash")  # existing fs: mounted, not reformatted
    assert open("/flash/hello.txt").read() == "written by the unix port"
    flash.umount("/flash")
    # Garbage that is not blank is never formatted away.
    dev.ioctl(6, 0)
    dev.ioctl(6, 1)
    dev.writeblocks(0, b"\x00" * 64, 0)
    dev.writeblocks(1, b"\x00" * 64, 0)
    unit.raises(OSError, flash.mount, dev, "/flash")
    dev.close()


def test_in_process_power_cut_and_remount():
    # The "raise" mode: cut inside this process, drop the vfs, remount.
    from pos.journal import Journal
    dev = new(32, strict=True)
    j = Journal(flash.Partition(dev, 8, 24))
    j.open()
    j.append(b"first")
    dev.cut_at = dev.ops + 1  # an append is one program
    try:
        j.append(b"second")
        raise AssertionError("no cut")
    except flash.PowerCut:
        pass
    dev.close()
    dev = flash.FlashDevice(IMG, 32, strict=True)
    j = Journal(flash.Partition(dev, 8, 24))
    assert j.open() == []
    assert list(j.records()) == [(1, b"first")]
    assert j.append(b"again") == 2
    dev.close()


def test_partition_is_a_window_on_the_chip():
    dev = new(16, strict=True)
    p = flash.Partition(dev, 4, 8)
    assert p.ioctl(4, 0) == 8 and p.ioctl(5, 0) == 4096
    p.ioctl(6, 0)
    p.writeblocks(7, b"end", 4093)
    assert read(dev, 11, 4093, 3) == b"end"
    unit.raises(OSError, p.writeblocks, 7, b"over", 4093)
    unit.raises(OSError, p.readblocks, 8, bytearray(1), 0)
    unit.raises(OSError, p.ioctl, 6, 8)
    unit.raises(ValueError, flash.Partition, dev, 10, 8)
    dev.close()


def test_from_env_defaults():
    dev = flash.from_env(IMG, 8)
    if os.getenv("POS_FLASH_CUT_AT") is None:
        assert dev.cut_at is None and dev.mode == "raise" and not dev.torn
    dev.close()


def test_write_image_for_host_tool():
    # tests/test_journal.py then reads this image on the host: littlefs-python
    # for the file system, host_tools/journal_dump.py for the journal.
    path = TMP + "/host_check.img"
    try:
        os.remove(path)
    except OSError:
        pass
    from pos.journal import Journal
    dev = flash.FlashDevice(path, flash.FS_BLOCKS + 8, strict=True)
    flash.mount(flash.Partition(dev, 0, flash.FS_BLOCKS), "/flash")
    with open("/flash/hello.txt", "w") as f:
        f.write("from the unix port")
    flash.umount("/flash")
    j = Journal(flash.Partition(dev, flash.FS_BLOCKS, 8))
    j.open()
    for i in range(300):
        j.append(b"payment %d" % i)
    j.mark_uploaded(3)
    dev.close()


unit.run(globals())
