# Drives pos.uplink in the unix port against tests/uplink_receiver.py (real
# sockets, real TLS), for tests/test_uplink.py. argv[1]: a JSON scenario:
#   {"cfg": terminal config, "image": flash image path, "opts": Uplink kwargs,
#    "steps": [{"do": "append", "n": 5, "size": 300}, {"do": "sync"},
#              {"do": "reboot"}, {"do": "sync", "busy_after_ms": 30},
#              {"do": "run", "ms": 1500}, ...]}
# Prints one "R {json}" line per step.
import asyncio
import json
import sys
import time

import flash
from pos.bundle import Store
from pos.clock import Clock
from pos.journal import Journal
from pos.uplink import Uplink

with open(sys.argv[1]) as f:
    SC = json.load(f)
CFG = SC["cfg"]
logs = []


def log(s):
    logs.append(s)
    print(s)


class State:
    pass


def boot():
    st = State()
    st.part = flash.setup(SC["image"], "/flash")
    st.j = Journal(st.part)
    st.j.open()
    st.clock = Clock("/flash", log)
    st.clock.load()
    st.store = Store("/flash", bytes.fromhex(CFG["update_key"]), CFG["terminal_id"], log=log)
    st.store.load()
    if SC.get("warm"):  # what the app does at boot: the update key's table, pinned
        from pos import sig
        sig.warm("ES256", bytes.fromhex(CFG["update_key"]), True)
    st.acks = []
    st.bundles = []
    st.idle = True
    st.link = True
    st.up = Uplink(st.j, CFG, st.store, st.clock, lambda: st.link, lambda: st.idle,
                   on_ack=st.acks.append, on_bundle=lambda b: st.bundles.append(b.version),
                   log=log, **SC.get("opts", {}))
    return st


def shutdown(st):
    st.j.close()
    flash.umount("/flash")
    flash.device.close()


def report(st, i, extra):
    r = {"step": i, "cursor": st.j.cursor(), "pending": st.j.pending(), "next": st.j.next_rid(),
         "acks": st.acks, "bundles": st.bundles, "version": st.store.version,
         "acq": st.clock.acquirer_time(), "now": st.clock.now(), "err": st.up.last_error,
         "failures": st.up.failures, "exchanges": st.up.exchanges,
         "verified": st.store.verified}
    r.update(extra)
    print("R " + json.dumps(r))


async def probe(out):
    # The longest the event loop went without running this task.
    t = time.ticks_us()
    while True:
        await asyncio.sleep_ms(0)
        n = time.ticks_us()
        d = time.ticks_diff(n, t)
        t = n
        if d > out[0]:
            out[0] = d


async def busy_after(st, ms):
    await asyncio.sleep_ms(ms)
    st.idle = False


async def idle_after(st, ms):
    await asyncio.sleep_ms(ms)
    st.idle = True


async def main():
    st = boot()
    for i, step in enumerate(SC["steps"]):
        do = step["do"]
        extra = {}
        if do == "append":
            size = step.get("size", 200)
            for _ in range(step["n"]):
                rid = st.j.next_rid()
                st.j.append(("%d:" % rid).encode() + b"x" * (size - len(str(rid)) - 1))
        elif do == "sync":
            gap = [0]
            pt = asyncio.create_task(probe(gap))
            bt = asyncio.create_task(busy_after(st, step["busy_after_ms"])) if "busy_after_ms" in step else None
            t0 = time.ticks_ms()
            ok = await st.up.sync()
            extra = {"ok": ok, "ms": time.ticks_diff(time.ticks_ms(), t0), "gap_us": gap[0]}
            pt.cancel()
            if bt:
                bt.cancel()
            st.idle = True
        elif do == "run":
            t = asyncio.create_task(st.up.run())
            await asyncio.sleep_ms(step["ms"])
            t.cancel()
            extra = {"ok": st.up.last_error is None}
        elif do == "link":
            st.link = step["up"]
        elif do == "busy":  # the terminal is busy for the first ms of the next step
            st.idle = False
            asyncio.create_task(idle_after(st, step["ms"]))
        elif do == "reboot":
            shutdown(st)
            st = boot()
        elif do == "clock":
            extra = {"is_set": st.clock.is_set(), "gate": st.clock.gate(step.get("max", 259200))}
        report(st, i, extra)


asyncio.run(main())
