# Power cuts while the bundle and the clock are written (driven by
# tests/test_uplink.py): littlefs on the emulated NOR chip (boards/unix/flash),
# the power dies at program/erase op k of Store.save() / Clock.save(), for
# every k until a save completes; after each cut the chip is mounted again and
# the terminal must find the old bundle or the new one, verified, and a clock
# no earlier than the old floor. argv[1]: JSON {"key", "terminal_id",
# "old": [text, sig hex], "new": [text, sig hex], "dir": work dir}.
import asyncio
import json
import sys

import flash
from pos.bundle import Store
from pos.clock import Clock

with open(sys.argv[1]) as f:
    A = json.load(f)
KEY = bytes.fromhex(A["key"])
IMG = A["dir"] + "/cut.img"
BLOCKS = 24
T_OLD = 1764000000


def mount(cut_at=None):
    dev = flash.FlashDevice(IMG, BLOCKS, 4096, strict=True, cut_at=cut_at)
    flash.mount(flash.Partition(dev, 0, BLOCKS), "/s")
    return dev


def down(dev):
    try:
        flash.umount("/s")
    except (OSError, flash.PowerCut):
        pass
    dev.close()


def store():
    return Store("/s", KEY, A["terminal_id"], log=print)


def bundle(pair):
    return store().check(pair[0].encode(), bytes.fromhex(pair[1]))


def base():
    import os
    try:
        os.remove(IMG)
    except OSError:
        pass
    dev = mount()
    asyncio.run(store().save(bundle(A["old"])))
    c = Clock("/s", print)
    c.set_acquirer(T_OLD)
    ops = dev.ops
    down(dev)
    return ops


def sweep(what):
    seen = {}
    k = 0
    while True:
        k += 1
        base()
        dev = mount(cut_at=None)
        start = dev.ops
        down(dev)
        dev = mount(cut_at=start + k)  # the cut lands inside the save, not the mount
        done = False
        try:
            if what == "bundle":
                asyncio.run(store().save(bundle(A["new"])))
            else:
                c = Clock("/s", print)
                c.load()
                c.set_acquirer(T_OLD + 3600)
            done = True
        except flash.PowerCut:
            pass
        down(dev)
        dev = mount()
        if what == "bundle":
            s = store()
            b = s.load()
            got = b.version if b else None
        else:
            c = Clock("/s", print)
            c.load()
            got = c.now() - c.now() % 3600 if c.is_set() else None
        down(dev)
        seen[str(got)] = seen.get(str(got), 0) + 1
        if done:
            break
    print("R " + json.dumps({"what": what, "cuts": k - 1, "seen": seen}))


sweep("bundle")
sweep("clock")
