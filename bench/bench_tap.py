"""Tap speed: per-phase time of a whole tap on the emulated terminal.

The firmware (.mpy) runs in the unix port against the PN532 simulator (which
answers at once; its virtual clock models what the radio, the 115200-baud UART,
the reader and the phone would take). For each phase the table gives the
firmware's own time in the unix port (from the terminal's TAP log line), the
modelled physical time, and an ESP32 estimate:

    ESP32 = unix firmware time x factor + modelled physical time
    factor: 70-90x for the verify phase (big-int work), 100-130x elsewhere
    (interpreter-bound), both for an ESP32 at 240 MHz (boards/esp32 sets it).

The unix firmware time of the radio phases includes the loopback socket round
trips to the simulator, so those estimates err on the slow side. Persistence
scales the unix port's littlefs-on-a-file time; real NOR flash adds its own
program/erase latency (a 4 KB sector erase is ~45 ms), which is not modelled.
"""
import os
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
    # firmware time = wall time of the phase minus time slept waiting on the reader
    fw = {p: (int(parts[p]) - int(parts.get(p + "_idle", 0))) / 1000 for p in PHASES}
    time.sleep(0.15)  # the phone leaves; the next customer steps up
    return fw, phys


def main():
    now = int(time.time())
    iss = ws.Issuer(alg="ES256", not_before=now - 86400, not_after=now + 86400)
    cfg = {"terminal_id": "5445524d30303031", "merchant_id": "BENCH", "currency": 978,
           "issuers": [iss.config()]}
    rows = {"first-seen": [], "returning": []}
    d = tempfile.mkdtemp()
    with Emulator(Path(d), cfg, heap=os.environ.get("TAP_HEAP", demo.HEAP)) as emu:
        emu.provision()
        emu.start()
        till = emu.till()
        regular = ws.Phone(iss)
        tap(emu, till, regular, "WARMUP")
        for i in range(N):
            rows["first-seen"].append(tap(emu, till, ws.Phone(iss), "F%d" % i))
            rows["returning"].append(tap(emu, till, regular, "R%d" % i))
    print(__doc__.split("\n\n")[0])
    print("Unix-port heap for the terminal: %s. Medians of %d taps each.\n" % (demo.HEAP, N))
    print("| wallet | phase | unix firmware ms | modelled air+UART+reader+phone ms | ESP32 estimate ms |")
    print("|---|---|---|---|---|")
    for kind, taps in rows.items():
        lo_tot = hi_tot = unix_tot = 0.0
        for p in PHASES:
            fw = statistics.median(t[0][p] for t in taps)
            ph = statistics.median(t[1][p] for t in taps)
            f_lo, f_hi = (70, 90) if p == "verify" else (100, 130)
            lo, hi = fw * f_lo + ph, fw * f_hi + ph
            lo_tot += lo
            hi_tot += hi
            unix_tot += fw
            print("| %s | %s | %.2f | %.1f | %.0f-%.0f |" % (kind, p, fw, ph, lo, hi))
        goal = GOAL_FIRST if kind == "first-seen" else GOAL_RETURNING
        print("| %s | **total** | %.2f | | **%.0f-%.0f** (goal <= %d ms: %s; contactless target 500 ms) |" % (
            kind, unix_tot, lo_tot, hi_tot, goal, "met" if hi_tot <= goal else
            ("met at the low end" if lo_tot <= goal else "NOT met")))


if __name__ == "__main__":
    main()
