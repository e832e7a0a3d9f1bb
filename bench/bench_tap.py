"""Tap speed: per-phase time of a whole tap on the emulated terminal.

The firmware (.mpy) runs in the unix port against the PN532 simulator (which
answers at once; its virtual clock models what the radio, the UART, the reader
and the phone would take). Each phase's wall time in the unix port is split,
from the terminal's TAP log line, into:

    idle      waiting on the reader (the driver's sleeps)
    emulated  inside the unix board's emulated hardware (SockUART, the NOR
              flash image): C drivers and silicon on a device, so not scaled
    firmware  the rest: the firmware's own work, interpreter and big ints

    ESP32 = firmware x factor + modelled reader/radio/phone + modelled flash
    factor: 70-90x for the verify phase (big-int work), 100-130x elsewhere
    (interpreter-bound), both for an ESP32 at 240 MHz (boards/esp32 sets it).

Flash model (persist): the program ops, bytes and erases littlefs asked the
emulated chip for, timed with a W25Q32JV's typical figures (datasheet, not
measured): 30 us per program op + 2.5 us per further byte, 45 ms per 4 KB
sector erase, reads at 40 MHz quad I/O (~20 MB/s). littlefs copies a file's
tail block on every append, so every approved tap costs one erase.
"""
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from host_tools import demo  # noqa: E402
from host_tools import wallet_sim as ws  # noqa: E402
from host_tools.emulator import Emulator  # noqa: E402

N = 25
PHASES = ("activation", "select", "authorize", "verify", "persist")
# W25Q32JV typical: first byte 30 us, each further byte 2.5 us, 4 KB erase 45 ms.
PROG_OP_US, PROG_BYTE_US, ERASE_US, READ_BYTE_US = 30.0, 2.5, 45000.0, 0.05


def flash_us(counters):
    """Modelled NOR time for "ops/bytes/erases/read_bytes" deltas of a phase."""
    if not counters:
        return 0.0
    ops, nbytes, erases, read = (int(x) for x in counters.split("/"))
    prog = ops * PROG_OP_US + max(0, nbytes - ops) * PROG_BYTE_US
    return prog + erases * ERASE_US + read * READ_BYTE_US
SIM_PHASE = {"activation": "activation", "select": "select", "authorize": "authorize"}
GOAL_RETURNING, GOAL_FIRST = 300, 500


def tap(emu, till, phone, ref):
    # The customer holds the phone out as the till starts the charge: the first
    # poll finds it, so activation is the reader's work, not the customer's delay.
    emu.sim.reset_clock()
    n = len(emu.lines)
    emu.sim.add_phone(phone)
    till.send("CHARGE 500 978 %s" % ref)
    result = till.read()
    phys = {p: emu.sim.totals(SIM_PHASE[p])["total_us"] / 1000 if p in SIM_PHASE else 0.0
            for p in PHASES}
    emu.sim.remove_phone(phone)
    assert "APPROVED" in result, result
    deadline = time.time() + 5
    while (logged := emu.last_tap(n)) is None and time.time() < deadline:
        time.sleep(0.01)
    parts = logged[1]
    fw, emu_ms = {}, {}
    for p in PHASES:
        emu_ms[p] = int(parts.get(p + "_hw", 0)) / 1000
        fw[p] = (int(parts[p]) - int(parts.get(p + "_idle", 0))) / 1000 - emu_ms[p]
        phys[p] += flash_us(parts.get(p + "_flash")) / 1000
    time.sleep(0.15)  # the phone leaves; the next customer steps up
    return fw, phys, emu_ms


def main():
    now = int(time.time())
    iss = ws.Issuer(alg="ES256", not_before=now - 86400, not_after=now + 86400)
    cfg = {"terminal_id": "5445524d30303031", "merchant_id": "BENCH", "currency": 978,
           "issuers": [iss.config()]}
    rows = {"first-seen": [], "returning": []}
    d = tempfile.mkdtemp()
    with Emulator(Path(d), cfg, heap=demo.HEAP) as emu:
        heapsize = emu.heapsize
        emu.provision()
        emu.start()
        till = emu.till()
        regular = ws.Phone(iss)
        tap(emu, till, regular, "WARMUP")
        for i in range(N):
            rows["first-seen"].append(tap(emu, till, ws.Phone(iss), "F%d" % i))
            rows["returning"].append(tap(emu, till, regular, "R%d" % i))
    print(__doc__.split("\n\n")[0])
    print("Unix-port heap: %s for data (-X heapsize=%s with the code). Medians of %d taps each.\n"
          % (demo.HEAP, heapsize, N))
    print("| wallet | phase | unix firmware ms | unix emulated hw ms (not scaled) "
          "| modelled reader+radio+phone+flash ms | ESP32 estimate ms |")
    print("|---|---|---|---|---|---|")
    for kind, taps in rows.items():
        lo_tot = hi_tot = unix_tot = 0.0
        for p in PHASES:
            fw = statistics.median(t[0][p] for t in taps)
            ph = statistics.median(t[1][p] for t in taps)
            em = statistics.median(t[2][p] for t in taps)
            f_lo, f_hi = (70, 90) if p == "verify" else (100, 130)
            lo, hi = fw * f_lo + ph, fw * f_hi + ph
            lo_tot += lo
            hi_tot += hi
            unix_tot += fw
            print("| %s | %s | %.2f | %.2f | %.1f | %.0f-%.0f |" % (kind, p, fw, em, ph, lo, hi))
        goal = GOAL_FIRST if kind == "first-seen" else GOAL_RETURNING
        print("| %s | **total** | %.2f | | | **%.0f-%.0f** (goal <= %d ms: %s; contactless target 500 ms) |" % (
            kind, unix_tot, lo_tot, hi_tot, goal, "met" if hi_tot <= goal else
            ("met at the low end" if lo_tot <= goal else "NOT met")))


if __name__ == "__main__":
    main()
