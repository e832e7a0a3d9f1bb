# pos.clock in the unix port: never back, floor and persistence on littlefs,
# offline age, and ticks that wrap.
import os
import vfs

import unit
from pos import reason
from pos.clock import Clock

T0 = 1764000000


class RamBlocks:
    # A littlefs block device in RAM (extended protocol).
    def __init__(self, n=16, bs=512):
        self.bs = bs
        self.data = bytearray(b"\xff" * n * bs)

    def readblocks(self, b, buf, off=0):
        a = b * self.bs + off
        buf[:] = self.data[a:a + len(buf)]

    def writeblocks(self, b, buf, off=None):
        a = b * self.bs + (off or 0)
        self.data[a:a + len(buf)] = buf

    def ioctl(self, op, arg):
        if op == 4:
            return len(self.data) // self.bs
        if op == 5:
            return self.bs
        if op == 6:
            a = arg * self.bs
            self.data[a:a + self.bs] = b"\xff" * self.bs
        return 0


class Ticks:
    # Ticks the test moves, wrapping at 2^30 ms (~12.4 days) as on the ESP32
    # (the unix port's period is 2^62: it would never wrap here).
    PERIOD = 1 << 30

    def __init__(self, start=0):
        self.t = start

    def ticks_ms(self):
        return self.t

    def ticks_add(self, t, d):
        return (t + d) % self.PERIOD

    def ticks_diff(self, a, b):
        return ((a - b + self.PERIOD // 2) % self.PERIOD) - self.PERIOD // 2

    def advance(self, ms):
        self.t = self.ticks_add(self.t, ms)


DEV = RamBlocks()
vfs.VfsLfs2.mkfs(DEV)
vfs.mount(vfs.VfsLfs2(DEV), "/c")
logs = []


def clock(ticks=None):
    return Clock("/c", logs.append, ticks or Ticks())


def wipe():
    for n in os.listdir("/c"):
        os.remove("/c/" + n)


def test_unset_clock_takes_no_payment():
    wipe()
    c = clock()
    assert not c.load() and not c.is_set() and c.now() == 0
    assert c.gate(1000) == reason.CLOCK_UNSET and c.offline_age() is None
    c.note_record(946684800 + 60)  # a record stamped by an RTC at 2000-01-01: not a trusted time
    c.set_acquirer(12345)
    c.set_acquirer(True)
    assert not c.is_set()
    c.hint(T0)  # a certificate's notBefore: good enough for TLS, not for payments
    assert c.tls_time() == T0 and not c.is_set()


def test_acquirer_time_and_offline_age():
    wipe()
    tk = Ticks()
    c = clock(tk)
    assert c.set_acquirer(T0)
    assert c.is_set() and c.now() == T0 and c.gate(3600) == reason.APPROVED
    tk.advance(3601 * 1000)
    assert c.now() == T0 + 3601 and c.offline_age() == 3601
    assert c.gate(3600) == reason.OFFLINE_TOO_LONG and c.gate(7200) == reason.APPROVED
    c.set_acquirer(T0 + 3700)  # a sync: the age starts again
    assert c.offline_age() == 0 and c.gate(3600) == reason.APPROVED


def test_never_goes_back():
    wipe()
    tk = Ticks()
    c = clock(tk)
    c.set_acquirer(T0)
    tk.advance(10000)
    c.set_acquirer(T0 - 500)   # an acquirer clock behind ours
    assert c.now() == T0 + 10 and c.acquirer_time() == T0
    c.note_record(T0 + 100)    # the newest record is ahead: the floor follows
    assert c.now() == T0 + 100
    c.note_record(T0 + 50)
    assert c.now() == T0 + 100
    last = 0
    for _ in range(50):
        tk.advance(777)
        n = c.now()
        assert n >= last
        last = n


def test_floor_persists_and_reboot_resumes_there():
    wipe()
    tk = Ticks()
    c = clock(tk)
    c.set_acquirer(T0)         # written
    tk.advance(5 * 3600 * 1000)
    c.checkpoint(600)          # 5 h gained: written
    c2 = clock(Ticks(12345))   # a reboot: ticks restart anywhere
    assert c2.load() and c2.now() == T0 + 5 * 3600 and c2.acquirer_time() == T0
    assert c2.offline_age() == 5 * 3600
    # A record newer than the file (the journal keeps it) raises the floor at boot.
    c2.note_record(T0 + 6 * 3600)
    assert c2.now() == T0 + 6 * 3600
    # checkpoint writes only when it gained enough.
    with open("/c/clock.bin", "rb") as f:
        before = f.read()
    c2.checkpoint(3 * 3600)
    with open("/c/clock.bin", "rb") as f:
        assert f.read() == before
    c2.checkpoint(600)
    assert clock().load() and clock().now() == 0  # a fresh instance before load() is unset
    c3 = clock()
    c3.load()
    assert c3.now() == T0 + 6 * 3600
    assert sorted(os.listdir("/c")) == ["clock.bin"]  # the temp file was renamed away


def test_corrupt_file_leaves_it_unset():
    wipe()
    c = clock()
    c.set_acquirer(T0)
    with open("/c/clock.bin", "rb") as f:
        b = bytearray(f.read())
    b[6] ^= 1
    with open("/c/clock.bin", "wb") as f:
        f.write(b)
    c2 = clock()
    assert not c2.load() and not c2.is_set()
    with open("/c/clock.bin", "wb") as f:
        f.write(b"PCK1" + bytes(20))
    assert not clock().load()


def test_ticks_wrap_over_weeks():
    # Start just before the ticks wrap and run 30 days, reading the clock
    # hourly as the app's idle loop does (far more often, really).
    wipe()
    tk = Ticks(Ticks.PERIOD - 5000)
    c = clock(tk)
    c.set_acquirer(T0)
    for _ in range(30 * 24):
        tk.advance(3600 * 1000)
        c.now()
    assert c.now() == T0 + 30 * 24 * 3600
    tk.advance(999)
    assert c.now() == T0 + 30 * 24 * 3600
    tk.advance(1)
    assert c.now() == T0 + 30 * 24 * 3600 + 1


unit.run(globals())
