# A session of whole taps through the firmware's own Terminal.charge(), in one
# process: the real PN532 driver (pos.pn532 over pos.pn532_hsu), the terminal,
# the verifier, the journal and the outcomes index, with an NFC reader that is
# a UART and a flash chip that is RAM. Run by bench/esp32/run.py twice:
#
#   record (MicroPython unix port): the UART is boards/unix/sockuart.py to
#     host_tools.pn532_sim with the wallets of host_tools.wallet_sim behind
#     it; every byte written and read is logged to a transcript file, and the
#     simulator's virtual clock gives the modelled reader, radio and phone time
#     of each tap (run.py reads it).
#   replay (the esp32est emulation, where there is no network): the UART
#     answers from that transcript. The firmware does exactly what it did when
#     recorded (same code, same state, a fixed clock and challenge sequence),
#     and every byte it writes is checked against the transcript: a session
#     that strays from it fails rather than times something else.
#
# What is measured per tap is the firmware's own work, from the start of the
# poll that finds the phone to charge() returning (activation, SELECT, building
# the AUTHORIZE, the exchange, verify, persist, release, the outcome): wall time
# minus the time inside the stand-in UART and flash (`busy_us`; machine.UART,
# the flash driver and the chips on a device, where the simulator's and the
# NOR model's figures stand for them).
import gc
import sys
import time

if not hasattr(time, "time"):
    # The qemu port's time module has no time(), which pos.terminal reads at
    # import (its clock's default; the session passes its own clock); the
    # ESP32's has. A stand-in while it loads.
    _shim = type("time", (), {})()
    for _a in dir(time):
        if not _a.startswith("__"):
            setattr(_shim, _a, getattr(time, _a))
    _shim.time = lambda: NOW
    sys.modules["time"] = _shim
    try:
        from pos import terminal
    finally:
        sys.modules["time"] = time

from pos import apdu, p256, record, rules, sig, terminal, token  # noqa: F401,E402
from pos.journal import Journal  # noqa: E402
from pos.outcomes import Outcomes
from pos.pn532 import PN532
from pos.pn532_hsu import PN532_HSU
from pos.seqno import Sequence

import asyncio  # the bench's stand-in (bench/esp32/mp/asyncio.py)

NOW = 1764000000  # the terminal's clock during the session (the issuer is valid then)
AMOUNT = 500
CURRENCY = 978
BAUD = 921600  # both boards raise the PN532's HSU rate to this after start-up
CFG = {"terminal_id": "5445524d30303031", "merchant_id": "BENCH", "currency": CURRENCY,
       "removal_ms": 200}
_W = 0x57  # transcript record kinds: bytes the terminal wrote, bytes it read
_R = 0x52
_BS = 4096
_FF = memoryview(b"\xff" * 256)
us = time.ticks_us
diff = time.ticks_diff


class Diverged(Exception):
    pass


class RecUART:
    """Record mode: a UART that logs its traffic as [kind, len16, bytes]."""

    def __init__(self, uart, path):
        self.u = uart
        self.f = open(path, "wb")
        self.busy_us = 0

    def _log(self, kind, b):
        n = len(b)
        self.f.write(bytes((kind, n >> 8, n & 0xFF)))
        self.f.write(b)

    def write(self, b):
        t = us()
        self._log(_W, b)
        n = self.u.write(b)
        self.busy_us += diff(us(), t)
        return n

    def any(self):
        return self.u.any()

    def readinto(self, buf, nbytes=None):
        t = us()
        r = self.u.readinto(buf) if nbytes is None else self.u.readinto(buf, nbytes)
        if r:
            self._log(_R, memoryview(buf)[:r])
        self.busy_us += diff(us(), t)
        return r

    def init(self, **kw):
        self.u.init(**kw)

    def close(self):
        self.f.close()


class ReplayUART:
    """Replay mode: what the reader sent after each write is there at once;
    every write must be the recorded one."""

    def __init__(self, path, cap=2048):
        self.f = open(path, "rb")
        self.busy_us = 0
        self._h = bytearray(3)
        self._buf = bytearray(cap)
        self._mv = memoryview(self._buf)
        self._exp = memoryview(bytearray(cap))
        self._pos = self._end = 0
        self.writes = 0
        self._next = self._advance()

    def _advance(self):
        # Release the reader's bytes up to the next recorded write; return
        # that write's length (-1: the transcript ends).
        h = self._h
        while True:
            if self.f.readinto(h) != 3:
                return -1
            n = h[1] << 8 | h[2]
            if h[0] != _R:
                return n
            if self._pos == self._end:
                self._pos = self._end = 0
            e = self._end
            if e + n > len(self._buf) or self.f.readinto(self._mv[e:e + n]) != n:
                raise Diverged("transcript: reader bytes")
            self._end = e + n

    def write(self, b):
        t = us()
        n = len(b)
        if n != self._next or self.f.readinto(self._exp[:n]) != n or self._exp[:n] != b:
            raise Diverged("write %d differs from the recording: %s, recorded %d bytes: %s" % (
                self.writes, bytes(b).hex(), self._next, bytes(self._exp[:n]).hex() if n == self._next else ""))
        self.writes += 1
        self._next = self._advance()
        self.busy_us += diff(us(), t)
        return n

    def any(self):
        return self._end - self._pos

    def readinto(self, buf, nbytes=None):
        t = us()
        k = self._end - self._pos
        m = len(buf) if nbytes is None else nbytes
        if k > m:
            k = m
        if k:
            buf[:k] = self._mv[self._pos:self._pos + k]
            self._pos += k
        self.busy_us += diff(us(), t)
        return k or None

    def init(self, **kw):
        pass

    def close(self):
        if self._next != -1 or self._pos != self._end:
            raise Diverged("the session ended before its recording did")
        self.f.close()


POOL_BLOCKS = 8  # flash blocks a session programs at most (records and cursor)


class Flash:
    """A NOR-like journal partition of 256 blocks (1 MiB, as on the ESP32)
    whose programmed blocks live in `pool`, a buffer the caller allocates
    before anything else (the bench adds its size to the emulation's heap: a
    device keeps this on flash). Erased = 0xFF. Counts what the bench's NOR
    model times: program ops, bytes, erases, bytes read."""

    def __init__(self, pool, blocks=256):
        self.blocks = blocks
        self.pool = memoryview(pool)
        self.free = list(range(len(pool) // _BS))
        self.slot = {}
        self.programs = self.prog_bytes = self.erases = self.read_bytes = 0
        self.busy_us = 0

    def readblocks(self, block, buf, off=0):
        t = us()
        n = len(buf)
        self.read_bytes += n
        s = self.slot.get(block)
        if s is None:
            for k in range(0, n, 256):
                m = n - k if n - k < 256 else 256
                buf[k:k + m] = _FF[:m]
        else:
            o = s * _BS + off
            buf[:] = self.pool[o:o + n]
        self.busy_us += diff(us(), t)

    def writeblocks(self, block, buf, off=0):
        t = us()
        n = len(buf)
        self.programs += 1
        self.prog_bytes += n
        s = self.slot.get(block)
        if s is None:
            if not self.free:
                raise OSError(28)  # ENOSPC: the bench's pool is too small for its session
            s = self.slot[block] = self.free.pop()
            for k in range(s * _BS, (s + 1) * _BS, 256):
                self.pool[k:k + 256] = _FF
        o = s * _BS + off
        self.pool[o:o + n] = buf
        self.busy_us += diff(us(), t)

    def ioctl(self, op, arg):
        if op == 4:
            return self.blocks
        if op == 5:
            return _BS
        if op == 6:
            self.erases += 1
            s = self.slot.pop(arg, None)
            if s is not None:
                self.free.append(s)
            return 0
        return None


class _Seq(Sequence):
    # The real Sequence, its reservation file kept in RAM (no file system
    # here); on a device the file is written while idle, not during a tap.
    def _load(self):
        return 0

    def _reserve(self, upto):
        self._limit = upto


class _Os:
    # The terminal's challenges (os.urandom): a fixed sequence, so a replayed
    # session sends what was recorded and the recorded signatures verify.
    def __init__(self, n=64):
        self.uns = [bytes((i * 37 + k * 11) & 0xFF for k in range(token.UN_LEN)) for i in range(n)]
        self.i = 0

    def urandom(self, n):
        r = self.uns[self.i]
        self.i += 1
        return r


class _Feedback:
    def led(self, c):
        pass

    def beep(self, b):
        pass

    def show(self, t):
        pass


class _Probe:
    # Terminal.probe, as the unix board's but only the time inside the
    # stand-in hardware (the flash counters are read around the charge). Its
    # first call in a charge is the mark taken before the poll that finds the
    # phone: the tap's start.
    def __init__(self, uart, dev):
        self.uart = uart
        self.dev = dev
        self.start = None

    def __call__(self):
        p = (self.uart.busy_us + self.dev.busy_us,)
        if self.start is None:
            self.start = (us(), p[0])
        return p


PHASES = ("activation", "select", "authorize", "verify", "persist")


def _probe_cost(term, n=32):
    # What the probe adds to one phase's bookkeeping (_mark + _phase), in us:
    # a device has no probe, so the whole tap leaves it out (5 phases a tap).
    saved, probe = term.timing, term.probe
    res = []
    for p in (probe, None):
        term.probe = p
        term.timing = {}
        gc.collect()
        t = us()
        for _ in range(n):
            term._phase("x", term._mark())
        res.append(diff(us(), t))
    term.probe, term.timing = probe, saved
    return (res[0] - res[1]) // n


def _flash(d):
    return (d.programs, d.prog_bytes, d.erases, d.read_bytes)


def session(uart, plan, policy_cfg, pool, engine=None):
    """Take one charge per entry of `plan` (wallet kinds; the recording puts
    the matching wallet on the reader); the journal's flash in `pool`
    (bytearray of POOL_BLOCKS x 4 KB). Returns ([per tap: (kind, code,
    whole-tap firmware us, engine us, [phase firmware us], flash counters of
    the charge "ops/bytes/erases/read", byref)], heap free before the first
    tap, probe us per phase). `engine`: [us] the caller's wrappers add to
    while the field engine runs, or None."""
    terminal.os = _Os(len(plan) + 4)
    p256._cache.clear()
    del p256._pinned[:]
    p256.shed()
    gc.collect()
    table = rules.WalletTable(256)
    p256.reserve()  # as pos.app.run, before anything else fragments the heap
    bufs = (apdu.Chained(), bytearray(record.MAX))
    dev = Flash(pool)
    journal = Journal(dev)
    journal.open()
    journal.prepare()
    policy = rules.Policy.from_config(policy_cfg)
    verifier = rules.Verifier(policy, table)
    for iss in policy.issuers.values():
        if iss.alg == token.ALG_ES256:
            sig.warm("ES256", iss.key, True)  # as pos.app.run at boot
    seq = _Seq("seq", journal.next_rid())
    nfc = PN532(PN532_HSU(uart))
    nfc.begin()
    nfc.set_baudrate(BAUD)
    lines = []
    term = terminal.Terminal(nfc, journal, verifier, CFG, _Feedback(), lambda: NOW, lines.append,
                             bufs, seq, Outcomes(journal))
    probe = _Probe(uart, dev)
    term.probe = probe
    cost = _probe_cost(term)
    out = []
    gc.collect()
    free = gc.mem_free()
    for i, kind in enumerate(plan):
        del lines[:]
        if engine is not None:
            engine[0] = 0
        f0 = _flash(dev)
        probe.start = None
        code, rid = asyncio.run(term.charge(AMOUNT, CURRENCY, ("T%d" % i).encode()))
        t1 = us()
        hw1 = probe()[0]
        t0, hw0 = probe.start
        whole = diff(t1, t0) - (hw1 - hw0) - len(PHASES) * cost
        f1 = _flash(dev)
        for ln in lines:
            print("TAPLOG %d %s" % (i, ln))
        if code != 0:
            raise AssertionError("tap %d (%s): code %d\n%s" % (i, kind, code, "\n".join(lines)))
        tm = term.timing
        ph = [tm[p] - tm.get(p + "_hw", 0) for p in PHASES]
        out.append((kind, code, whole, engine[0] if engine is not None else 0, ph,
                    "/".join(str(f1[k] - f0[k]) for k in range(4)), tm.get("byref", "")))
        # Between customers, as on the counter: the phone has left (the
        # removal watcher would say so), and the terminal does its idle work.
        term._field_busy = False
        term.idle_work()
        if journal.pending() > 8:
            journal.mark_uploaded(journal.next_rid() - 1)  # as an upload would
            journal.prepare()
        gc.collect()
    uart.close()
    return out, free, cost


def record_main(port, transcript, plan_path, policy_path):
    """The record pass (unix port): connect to the simulator, run, log."""
    import json
    from sockuart import SockUART
    with open(plan_path) as f:
        plan = f.read().split()
    with open(policy_path) as f:
        pol = json.loads(f.read())
    assert p256.use("native") == "native"
    uart = RecUART(SockUART(port, timeout=0, timeout_char=2), transcript)
    res = session(uart, plan, pol, bytearray(POOL_BLOCKS * _BS))[0]
    for r in res:
        print("TAP", r[0], r[1], r[5], r[6])
