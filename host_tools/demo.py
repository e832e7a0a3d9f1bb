"""`make demo`: a market's day on two emulated terminals and the acquirer.

Starts the acquirer's receiver (host_tools/receiver, SQLite, mutual TLS with a
test PKI), the PN532 simulator and the firmware in the unix port for each
terminal (128k of heap for the firmware's data, plus the measured footprint
of its code, which the ESP32 build keeps in flash: see
host_tools.emulator.Emulator), provisions them, and plays taps through the
register link as a till would, with the Wi-Fi down: phones paying, one over
its per-tap limit, one replaying an old authorization, a cloned wallet, one
with an expired credential, forged signatures, one left on the reader; and a
copy of the cloned wallet paying at the second terminal. Then the Wi-Fi comes
back: the backlog uploads, and the receiver's ledger is printed beside the
terminals' journals. Exits 0 only if every tap ended as expected and the
ledger holds every approved payment exactly once, the cloned wallet's flagged.
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from host_tools import journal_dump
from host_tools import wallet_sim as ws
from host_tools.emulator import Emulator
from host_tools.records import parse_record

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
    # The cloned wallet's copy, from before its first payment: it pays again,
    # with the same counter, at the market's other terminal.
    c = phones["clone"]
    phones["twin"] = P(bank_a, "twin", device_key=c.key, credential=c.credential, counter=c.counter)
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


def _terminal(workdir, config, rx, tid, heap):
    # A terminal provisioned for the acquirer: its TLS identity (a client
    # certificate from the acquirer's test CA), the receiver's URL and CA,
    # the bundle key. Wi-Fi down to begin with.
    t = rx.terminal_cert(tid).files
    cfg = dict(config, terminal_id=tid, update_key=rx.update_key,
               uplink={"url": rx.url + "/v1/upload", "ca": rx.ca_pem.read_text(),
                       "cert": t["cert_pem"].read_text(), "key": t["key_pem"].read_text()})
    emu = Emulator(workdir / tid, cfg, heap=heap, env={"POS_UPLINK_FAST": "1"})
    emu.set_link(False)
    emu.provision()
    emu.start()
    return emu


def _wait_synced(till, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        st = till.call("STATUS")
        if st.split()[2] == "0" and st.endswith(" up"):
            return st
        if time.monotonic() > deadline:
            return st
        time.sleep(0.2)


def _ledger(db):
    r = subprocess.run([sys.executable, "-m", "host_tools", "ledger", "--db", db],
                       capture_output=True, text=True, timeout=60,
                       cwd=str(Path(__file__).resolve().parents[1]))
    return [json.loads(line) for line in r.stdout.splitlines()] if r.returncode == 0 else []


def run(workdir, out=print, heap=HEAP):
    from host_tools.receiver import testing  # starts a receiver with a test PKI
    workdir = Path(workdir)
    config, phones = make_world()
    issuers = config["issuers"]
    db = "sqlite:///%s" % (workdir / "ledger.db")
    out("starting the acquirer's receiver (SQLite ledger, mutual TLS) ...")
    rx = testing.start_receiver(workdir / "acquirer", db, issuers=issuers)
    terms = []
    try:
        out("provisioning two emulated terminals (unix port: heap %s for data + the code's measured\n"
            "footprint, which the ESP32 build freezes into flash) ..." % heap)
        t1 = _terminal(workdir, config, rx, "5445524d30303031", heap)
        terms.append(t1)
        t2 = _terminal(workdir, config, rx, "5445524d30303032", heap)
        terms.append(t2)
        return _session(t1, t2, rx, db, phones, out)
    finally:
        for emu in terms:
            emu.stop()
        rx.stop()


def _session(t1, t2, rx, db, phones, out):
    till, till2 = t1.till(), t2.till()
    sim = t1.sim
    ok = 0
    totals = {"APPROVED": 0, "DECLINED": 0}
    amount_approved = 0
    approved = {}  # (terminal id, record id) -> customer
    out("Wi-Fi is DOWN: the terminals work offline\n")
    out("tap ms: the terminal's own time in the unix port, phone found to decision stored\n"
        "(ESP32 estimates: make bench)\n")
    out("  #  customer   amount  result                       tap ms  note")
    session = SESSION + [("twin", 300, "APPROVED", "the clone's copy, at the other terminal")]
    try:
        for i, (name, amount, expect, note) in enumerate(session, 1):
            phone = phones[name]
            emu, tl = (t2, till2) if name == "twin" else (t1, till)
            if name == "grace":
                # frank's phone is still on the reader; he takes it away a moment later
                # (grace can only reach the reader once he has, and the terminal
                # takes her only once the field has been empty for a second)
                threading.Timer(1.0, sim.remove_phone, (phones["frank"],)).start()
                time.sleep(2.3)
            line = emu.pay(tl, phone, amount, "REF%03d" % i, keep=name == "frank")
            parts = line.split()
            result = " ".join(parts[2:4]) if parts[2] == "DECLINED" else parts[2]
            tap = emu.last_tap_ms()
            mark = "ok" if result == expect else "UNEXPECTED (wanted %s)" % expect
            ok += result == expect
            totals[parts[2]] = totals.get(parts[2], 0) + 1
            if parts[2] == "APPROVED":
                amount_approved += amount
                approved[(emu.config["terminal_id"], int(parts[3]))] = name
            out("%3d  %-8s %5d.%02d  %-27s %7s  %s  [%s]" % (
                i, name, amount // 100, amount % 100, result,
                "%.0f" % tap if tap is not None else "-", note, mark))
        out("\nSTATUS: %s" % till.call("STATUS"))
        out("\nWi-Fi comes BACK: the backlog goes to the acquirer over mutual TLS")
        for emu in (t1, t2):
            emu.set_link(True)
        for emu, tl in ((t1, till), (t2, till2)):
            st = _wait_synced(tl)
            acks = [l for l in emu.lines if l.startswith("SYNC acknowledged")]
            out("  terminal %s: %s; %s" % (emu.config["terminal_id"],
                                           acks[-1] if acks else "nothing acknowledged", st))
        rows = {(r["terminal_id"], r["record_id"]): r for r in _ledger(db)}
        out("\nThe acquirer's ledger beside the terminals' journals:")
        out("  terminal          rid  customer  amount  journal   ledger")
        journal = {}
        for emu in (t1, t2):
            records, _ = journal_dump.read_records(emu.image)
            for rid, payload in records:
                journal[(emu.config["terminal_id"], rid)] = parse_record(payload)
        for key in sorted(set(journal) | set(rows)):
            r = rows.get(key)
            j = journal.get(key)
            out("  %s %4d  %-8s %5s  %-8s  %s" % (
                key[0], key[1], approved.get(key, "?"),
                "%d.%02d" % divmod((j or r)["amount"], 100),
                "stored" if j else "-",
                ("%s %s" % (r["status"], r["reason"] or "")).strip() if r else "MISSING"))
    finally:
        till.close()
        till2.close()
    frank_paid = sum(1 for ins, sw in phones["frank"].log if ins == 0xA0)
    flagged = {k for k, r in rows.items() if r["status"] == "flagged"}
    clones = {k for k, v in approved.items() if v in ("clone", "twin")}
    ledger_ok = set(rows) == set(approved) and flagged == clones and all(
        "double-spend" in rows[k]["reason"] for k in clones)
    out("\nSummary: %d taps, %d approved (%d.%02d EUR), %d declined; %d/%d as expected; "
        "frank authorized %d time(s); ledger: %d payments, %d flagged (the cloned wallet's), %s" % (
            len(session), totals["APPROVED"], amount_approved // 100, amount_approved % 100,
            totals["DECLINED"], ok, len(session), frank_paid, len(rows), len(flagged),
            "each approved payment exactly once" if ledger_ok else "NOT the approved payments"))
    return 0 if ok == len(session) and frank_paid == 1 and ledger_ok else 1


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
