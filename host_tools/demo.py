"""`make demo`: a market stall's session on the emulated terminal.

Starts the PN532 simulator and the firmware in the unix port (128k of heap for
the firmware's data, plus the measured footprint of its code, which the ESP32
build keeps in flash: see host_tools.emulator.Emulator), provisions issuer keys onto its flash, and plays taps through the
register link as a till would: phones paying, one over its per-tap limit, one
replaying an old authorization, a cloned wallet, one with an expired
credential, forged signatures, one left on the reader. Prints a line per tap
and a summary; exits 0 only if every tap ended as expected.
"""
import argparse
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from host_tools import wallet_sim as ws
from host_tools.emulator import Emulator

NOW = int(time.time())
YEAR = 365 * 86400


def make_world():
    bank_a = ws.Issuer(alg="ES256", not_before=NOW - YEAR, not_after=NOW + YEAR)
    bank_b = ws.Issuer(alg="RS256", not_before=NOW - YEAR, not_after=NOW + YEAR)
    rogue = ws.Issuer(alg="ES256")
    P = ws.Phone
    phones = {
        "alice": P(bank_a, "alice", tap_limit=5000, offline_limit=20000),
        "bob": P(bank_b, "bob"),
        "carol": P(bank_a, "carol", tap_limit=2000),
        "dave": P(bank_a, "dave", fault="replay"),
        "erin": P(bank_a, "erin", not_before=NOW - 2 * YEAR, not_after=NOW - 86400),
        "mallory": P(bank_a, "mallory", fault="bad_sig"),
        "trent": P(rogue, "trent"),
        "frank": P(bank_b, "frank"),
        "grace": P(bank_a, "grace"),
        "clone": P(bank_a, "clone", fault="stale_counter"),
    }
    config = {
        "terminal_id": "5445524d30303031", "merchant_id": "MARKET-7", "currency": 978,
        "charge_timeout_ms": 8000,
        "issuers": [bank_a.config(), bank_b.config()],
        "deny": {"wallets": [], "serials": []},
    }
    return config, phones


# (phone, amount in cents, expected outcome, how the phone behaves)
SESSION = [
    ("alice", 1250, "APPROVED", "first visit"),
    ("bob", 899, "APPROVED", "RSA issuer"),
    ("carol", 3000, "DECLINED OVER_TAP_LIMIT", "above her per-tap limit"),
    ("dave", 450, "APPROVED", "genuine tap"),
    ("dave", 450, "DECLINED DEVICE_SIG", "replays that old authorization"),
    ("erin", 700, "DECLINED EXPIRED", "expired credential"),
    ("mallory", 1500, "DECLINED DEVICE_SIG", "forged tap signature"),
    ("trent", 1500, "DECLINED ISSUER_UNKNOWN", "credential from an unknown issuer"),
    ("clone", 300, "APPROVED", "genuine tap"),
    ("clone", 300, "DECLINED COUNTER_REPLAY", "cloned wallet reusing a counter"),
    ("frank", 2000, "APPROVED", "pays, then leaves the phone on the reader"),
    ("grace", 650, "APPROVED", "next customer: frank must not pay twice"),
    ("alice", 320, "APPROVED", "returning wallet"),
]


HEAP = "128k"  # the firmware's data; see Emulator and README, "Memory"


def run(workdir, out=print, heap=HEAP):
    config, phones = make_world()
    emu = Emulator(workdir, config, heap=heap)
    emu.set_link(False)
    out("provisioning the emulated terminal (unix port: heap %s for data + %d KB measured\n"
        "for the code, which the ESP32 build freezes into flash; -X heapsize=%s) ..." % (
            heap, emu.code_bytes // 1024, emu.heapsize))
    emu.provision()
    emu.start()
    till = emu.till()
    sim = emu.sim
    ok = 0
    totals = {"APPROVED": 0, "DECLINED": 0}
    amount_approved = 0
    out("Wi-Fi is DOWN: the terminal works offline\n")
    out("tap ms: the terminal's own time in the unix port, phone found to decision stored\n"
        "(ESP32 estimates: make bench)\n")
    out("  #  customer   amount  result                       tap ms  note")
    try:
        for i, (name, amount, expect, note) in enumerate(SESSION, 1):
            phone = phones[name]
            left_on = name == "frank"
            till.send("CHARGE %d 978 REF%03d" % (amount, i))
            t0 = time.monotonic()
            if name == "grace":
                # frank's phone is still on the reader; he takes it away a moment later
                # (grace can only reach the reader once he has, and the terminal
                # takes her only once the field has been empty for a second)
                threading.Timer(1.0, sim.remove_phone, (phones["frank"],)).start()
                time.sleep(2.3)
            sim.add_phone(phone)
            line = till.read()
            wall = (time.monotonic() - t0) * 1000
            if not left_on:
                sim.remove_phone(phone)
                time.sleep(1.2)  # the next customer steps up
            parts = line.split()
            result = " ".join(parts[2:4]) if parts[2] == "DECLINED" else parts[2]
            tap = emu.last_tap_ms()
            mark = "ok" if result == expect else "UNEXPECTED (wanted %s)" % expect
            ok += result == expect
            totals[parts[2]] = totals.get(parts[2], 0) + 1
            if parts[2] == "APPROVED":
                amount_approved += amount
            out("%3d  %-8s %5d.%02d  %-27s %7s  %s  [%s]" % (
                i, name, amount // 100, amount % 100, result,
                "%.0f" % tap if tap is not None else "-", note, mark))
        status = till.call("STATUS")
        out("\nSTATUS: %s" % status)
    finally:
        till.close()
        emu.stop()
    frank_paid = sum(1 for ins, sw in phones["frank"].log if ins == 0xA0)
    out("\nSummary: %d taps, %d approved (%d.%02d EUR), %d declined; %d/%d as expected; "
        "frank authorized %d time(s)" % (len(SESSION), totals["APPROVED"], amount_approved // 100,
                                         amount_approved % 100, totals["DECLINED"], ok,
                                         len(SESSION), frank_paid))
    return 0 if ok == len(SESSION) and frank_paid == 1 else 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="host_tools demo", description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", help="keep the flash image and logs here (default: a temp dir)")
    a = ap.parse_args(argv)
    if a.workdir:
        shutil.rmtree(a.workdir, ignore_errors=True)
        return run(Path(a.workdir))
    with tempfile.TemporaryDirectory() as d:
        return run(Path(d))


if __name__ == "__main__":
    sys.exit(main())
