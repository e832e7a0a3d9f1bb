"""Where the journal lives on the ESP32.

    path = flash.setup(label="journal", mountpoint="/flash")

1. A data partition labelled `label` (add it to the partition table, e.g.
   `journal, data, 0x82, , 1M`): mounted as littlefs at `mountpoint`; the
   journal directory is `<mountpoint>/journal`.  Keeping payments off the
   code/config file system means a firmware or config update never competes
   with them for space, and a reformat of "/" never touches them.
   A blank partition (both superblock blocks erased) is formatted; one that
   holds something but does not mount is NOT formatted (it may hold
   payments): the OSError goes up and the app must refuse to take payments.
2. No such partition: the journal is the directory "/journal" on the root
   file system MicroPython already mounted at "/" (littlefs on the esp32
   port's "vfs" partition).

Returns the directory to hand to pos.journal.Journal.
"""
from micropython import const

import vfs

_CHUNK = const(256)


def _blank(part, block_size):
    buf = bytearray(_CHUNK)
    for block in (0, 1):
        for off in range(0, block_size, _CHUNK):
            part.readblocks(block, buf, off)
            for b in buf:
                if b != 0xFF:
                    return False
    return True


def setup(label="journal", mountpoint="/flash"):
    import esp32

    found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=label)
    if not found:
        return "/journal"
    part = found[0]
    if _blank(part, part.ioctl(5, 0)):
        vfs.VfsLfs2.mkfs(part)
    vfs.mount(vfs.VfsLfs2(part), mountpoint)
    return mountpoint + "/journal"
