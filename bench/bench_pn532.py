"""PN532 link budget: the firmware driver (MicroPython unix port) against host_tools.pn532_sim.

Reports, per phase of one tap (activation, SELECT, AUTHORIZE incl. GET RESPONSE rounds):
the simulator's virtual clock (air time at 106 kbps, UART at 115200, modelled reader and
phone time) and the wall-clock time the driver took in the unix port (host overhead only,
simulator answering instantly). The phone is synthetic, sized after PROTOCOL.md: SELECT
answers 3 bytes; AUTHORIZE sends 80 bytes and gets tags 31..34 back, at most 240 data
bytes per R-APDU, the rest by GET RESPONSE. Phone compute times are assumptions
(SELECT 2 ms, AUTHORIZE 40 ms for ES256 + counter persist, GET RESPONSE 1 ms).
"""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from host_tools.pn532_sim import PN532Sim  # noqa: E402

MP = r"""
import sys, time
from sockuart import SockUART
from pos.pn532 import PN532
from pos.pn532_hsu import PN532_HSU

nfc = PN532(PN532_HSU(SockUART(int(sys.argv[1]))))
SELECT = b"\x00\xa4\x04\x00\x08\xf0\x4f\x46\x46\x50\x41\x59\x01\x00"
AUTH = b"\x80\xa0\x00\x00\x50" + bytes(80) + b"\x00"
N = int(sys.argv[2])
t = time.ticks_us
acc = {"begin": 0, "activation": 0, "select": 0, "authorize": 0, "release": 0}
t0 = t(); nfc.begin(); acc["begin"] = time.ticks_diff(t(), t0)
for i in range(N):
    t0 = t(); tg = nfc.poll(500); acc["activation"] += time.ticks_diff(t(), t0)
    assert tg is not None
    t0 = t(); r = nfc.apdu(SELECT); acc["select"] += time.ticks_diff(t(), t0)
    assert r[-2:] == b"\x90\x00"
    t0 = t()
    r = nfc.apdu(AUTH)
    data = bytearray(r[:-2])
    while r[-2] == 0x61:
        r = nfc.apdu(b"\x00\xc0\x00\x00" + bytes((r[-1],)))
        data += r[:-2]
    acc["authorize"] += time.ticks_diff(t(), t0)
    assert r[-2:] == b"\x90\x00"
    t0 = t(); nfc.release(); acc["release"] += time.ticks_diff(t(), t0)
for k in acc:
    print("WALL", k, acc[k] // (N if k != "begin" else 1))
print("AUTHLEN", len(data))
"""


class WalletLike:
    """Answers with PROTOCOL.md-sized responses; chains at 240 bytes with 61 xx."""

    def __init__(self, cred_len):
        self.uid = b"\x08\x12\x34\x56"
        self.resp = (b"\x31" + self._len(cred_len) + bytes(cred_len) + b"\x32\x04" + bytes(4)
                     + b"\x33\x01\x01" + b"\x34\x40" + bytes(64))
        self.pending = b""
        self.processing_us = 2000

    @staticmethod
    def _len(n):
        return bytes([n]) if n < 0x80 else (bytes([0x81, n]) if n < 256 else bytes([0x82, n >> 8, n & 0xFF]))

    def _chunk(self, data):
        part, self.pending = data[:240], data[240:]
        if self.pending:
            n = len(self.pending)
            return part + bytes([0x61, n if n < 256 else 0])
        return part + b"\x90\x00"

    def transceive(self, apdu):
        ins = apdu[1]
        if ins == 0xA4:
            self.processing_us = 2000
            return b"\x01\x01\x01\x90\x00"
        if ins == 0xA0:
            self.processing_us = 40000
            return self._chunk(self.resp)
        if ins == 0xC0:
            self.processing_us = 1000
            return self._chunk(self.pending)
        return b"\x6d\x00"


def run(cred_len, n=20, time_scale=0.0):
    exe = os.environ.get("MICROPYTHON") or str(Path(sys.executable).with_name("micropython"))
    env = dict(os.environ, MICROPYPATH=":".join([str(ROOT / "boards" / "unix"), str(ROOT / "firmware")]))
    with PN532Sim(0, seed=1, time_scale=time_scale) as sim:
        phone = WalletLike(cred_len)
        sim.add_phone(phone)
        p = subprocess.run([exe, "-X", "heapsize=128k", "-c", MP, str(sim.port), str(n)],
                           capture_output=True, text=True, timeout=120, env=env)
        if p.returncode:
            print(p.stdout, p.stderr)
            raise SystemExit(1)
        wall = {}
        for line in p.stdout.splitlines():
            w = line.split()
            if w[0] == "WALL":
                wall[w[1]] = int(w[2])
        ph = sim.phases()
    return ph, wall, n, len(phone.resp)


def main():
    print("Per tap; virtual clock from the simulator (us), wall = driver in the unix port (us, mean).")
    for cred in (200, 1024):
        ph, wall, n, rlen = run(cred)
        print("\ncredential %d bytes -> AUTHORIZE response %d bytes, %d taps" % (cred, rlen, n))
        print("%-11s %5s %9s %9s %9s %9s %9s %9s" % ("phase", "cmds", "air", "uart", "reader",
                                                    "phone", "total", "wall"))
        for name in ("activation", "select", "authorize"):
            t = ph.get(name)
            if not t:
                continue
            c = t["commands"] / n
            print("%-11s %5.1f %9.0f %9.0f %9.0f %9.0f %9.0f %9d" % (
                name, c, t["air_us"] / n, t["uart_us"] / n, t["reader_us"] / n,
                t["phone_us"] / n, t["total_us"] / n, wall.get(name, 0)))
        print("begin() wall %d us, release() wall %d us" % (wall["begin"], wall["release"]))
    # paced: the simulator sleeps the modelled time before each response, so the driver's
    # timeouts and waits run against realistic delays
    ph, wall, n, rlen = run(1024, n=3, time_scale=1.0)
    print("\npaced run (time_scale=1), credential 1024: wall per tap (us): "
          + ", ".join("%s %d" % (k, wall[k]) for k in ("activation", "select", "authorize"))
          + "; modelled: " + ", ".join("%s %d" % (k, ph[k]["total_us"] / n - ph[k]["uart_us"] / n)
                                        for k in ("activation", "select", "authorize"))
          + " (modelled minus UART, which the socket does not pace)")
    mem = subprocess.run([os.environ.get("MICROPYTHON") or str(Path(sys.executable).with_name("micropython")),
                          "-X", "heapsize=128k", "-c", MEM], capture_output=True, text=True,
                         env=dict(os.environ, MICROPYPATH=str(ROOT / "firmware")), timeout=30)
    print(mem.stdout.strip())


MEM = """
import gc
from pos.pn532 import PN532
from pos.pn532_hsu import PN532_HSU
class U:
    def any(self): return 0
gc.collect(); a = gc.mem_free()
nfc = PN532(PN532_HSU(U()))
gc.collect(); print("driver RAM (PN532 + PN532_HSU objects, unix port): %d bytes" % (a - gc.mem_free()))
"""


if __name__ == "__main__":
    main()
