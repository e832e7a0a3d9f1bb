"""Payments reach the acquirer, end to end: emulated terminals (the firmware in
the unix port) take taps offline, the link comes back, the backlog goes over
mutual TLS to the real receiver (host_tools/receiver, SQLite), the journal is
trimmed to its ack, and the signed bundle comes back: a wallet the acquirer
denies is declined on the next tap, and a cloned wallet that paid at two
terminals is flagged in the ledger."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from host_tools import demo
from host_tools import wallet_sim as ws
from host_tools.emulator import Emulator
from host_tools.receiver import testing

ROOT = Path(__file__).resolve().parents[1]
NOW = int(time.time())


@pytest.fixture(scope="module")
def issuer():
    return ws.Issuer(alg="ES256", not_before=NOW - 86400, not_after=NOW + 86400)


def terminal_config(rx, tid, issuer):
    t = rx.terminal_cert(tid).files
    return {"terminal_id": tid, "merchant_id": "MARKET-7", "currency": 978,
            "charge_timeout_ms": 4000, "removal_ms": 300, "issuers": [issuer.config()],
            "update_key": rx.update_key,
            "uplink": {"url": rx.url + "/v1/upload", "ca": rx.ca_pem.read_text(),
                       "cert": t["cert_pem"].read_text(), "key": t["key_pem"].read_text()}}


def pay(emu, till, phone, amount, ref):
    return emu.pay(till, phone, amount, ref)


def ledger(db):
    r = subprocess.run([sys.executable, "-m", "host_tools", "ledger", "--db", db], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def wait_status(till, want, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        st = till.call("STATUS")
        if st == want:
            return
        if time.monotonic() > deadline:
            raise AssertionError("STATUS stayed %r, wanted %r" % (st, want))
        time.sleep(0.1)


def test_offline_backlog_uploads_and_updates_come_back(tmp_path, issuer):
    denied = ws.Phone(issuer)
    dw = ws.parse_credential(denied.credential)
    db = "sqlite:///" + str(tmp_path / "ledger.db")
    rx = testing.start_receiver(tmp_path, db, issuers=[issuer.config()], config={
        "bundle_version": 2,
        "deny": {"wallets": [[issuer.kid.hex(), dw["wallet_id"].hex()]], "serials": []}})
    terms = []
    try:
        original = ws.Phone(issuer)
        clone = ws.Phone(issuer, device_key=original.key, credential=original.credential,
                         counter=original.counter)
        for i, tid in enumerate(("5445524d30303031", "5445524d30303032")):
            emu = Emulator(tmp_path / tid, terminal_config(rx, tid, issuer), heap=demo.HEAP,
                           env={"POS_UPLINK_FAST": "1"})
            emu.set_link(False)
            emu.provision()
            emu.start()
            terms.append((emu, emu.till()))
        (t1, till1), (t2, till2) = terms
        # Offline: taps are approved and stored.
        assert pay(t1, till1, ws.Phone(issuer), 1250, "A1") == "RESULT A1 APPROVED 1"
        assert pay(t1, till1, denied, 500, "A2") == "RESULT A2 APPROVED 2"
        assert pay(t1, till1, original, 700, "A3") == "RESULT A3 APPROVED 3"
        assert pay(t2, till2, clone, 700, "B1") == "RESULT B1 APPROVED 1"
        limited = ws.Phone(issuer, offline_limit=1000)
        assert pay(t2, till2, limited, 800, "B2") == "RESULT B2 APPROVED 2"
        assert pay(t2, till2, limited, 500, "B3") == "RESULT B3 DECLINED OVER_OFFLINE_LIMIT"
        assert till1.call("STATUS") == "STATUS idle 3 down"
        # The link comes back: the backlog goes, the journal is acknowledged.
        t1.set_link(True)
        t2.set_link(True)
        wait_status(till1, "STATUS idle 0 up")
        wait_status(till2, "STATUS idle 0 up")
        assert t1.wait_for("SYNC acknowledged up to 3")
        assert t1.wait_for("UPLINK bundle version 2")
        # Synced: the offline limit counts again from here.
        assert pay(t2, till2, limited, 500, "B4") == "RESULT B4 APPROVED 3"
        # The acquirer's deny list is in force at once: no reboot.
        assert pay(t1, till1, denied, 500, "A4") == "RESULT A4 DECLINED DENY_LISTED"
        assert pay(t1, till1, ws.Phone(issuer), 300, "A5") == "RESULT A5 APPROVED 4"
        wait_status(till1, "STATUS idle 0 up")
        wait_status(till2, "STATUS idle 0 up")
        rows = {(r["terminal_id"], r["record_id"]): r for r in ledger(db)}
        assert set(rows) == {(t1.config["terminal_id"], 1), (t1.config["terminal_id"], 2),
                             (t1.config["terminal_id"], 3), (t1.config["terminal_id"], 4),
                             (t2.config["terminal_id"], 1), (t2.config["terminal_id"], 2),
                             (t2.config["terminal_id"], 3)}, rows
        assert rows[(t1.config["terminal_id"], 1)]["status"] == "ok"
        assert rows[(t1.config["terminal_id"], 1)]["amount"] == 1250
        # Paid before the terminal knew: the acquirer flags it.
        assert rows[(t1.config["terminal_id"], 2)]["status"] == "flagged"
        assert "deny" in rows[(t1.config["terminal_id"], 2)]["reason"]
        # The same counter at two terminals: both flagged as a double spend.
        for key in ((t1.config["terminal_id"], 3), (t2.config["terminal_id"], 1)):
            assert rows[key]["status"] == "flagged" and "double-spend" in rows[key]["reason"], rows[key]
        # A reboot keeps the cursor, the bundle and the clock.
        t1.proc.kill()
        t1.proc.wait()
        t1.stop()
        again = Emulator(t1.workdir, t1.config, heap=demo.HEAP, env={"POS_UPLINK_FAST": "1"})
        again.start()
        terms[0] = (again, again.till())
        assert any("BUNDLE version 2" in l for l in again.lines)
        ready = next(l for l in again.lines if l.startswith("READY"))
        assert "pending=0" in ready and "clock=unset" not in ready, ready
        assert pay(again, terms[0][1], denied, 500, "A6") == "RESULT A6 DECLINED DENY_LISTED"
        # And it still uploads: a terminal that held a bundle once found no 3 KB
        # in one piece for its TLS context at the end of boot, and never
        # uploaded again (the fault campaign found it).
        assert not [l for l in again.lines if l.startswith("UPLINK cannot start")], again.lines
        assert pay(again, terms[0][1], ws.Phone(issuer), 300, "A7") == "RESULT A7 APPROVED 5"
        assert again.wait_for("SYNC acknowledged up to 5", timeout=30)
    finally:
        for emu, till in terms:
            till.close()
            emu.stop()
        rx.stop()


def test_a_terminal_without_a_trusted_time_takes_no_payment(tmp_path, issuer):
    cfg = {"terminal_id": "5445524d30303039", "merchant_id": "MARKET-7", "currency": 978,
           "issuers": [issuer.config()]}
    emu = Emulator(tmp_path, cfg, heap=demo.HEAP)
    emu.seed_clock = False  # provisioned without the technician's time, never synced
    emu.provision()
    with emu:
        emu.start()
        assert any(l.startswith("READY") and "clock=unset" in l for l in emu.lines)
        till = emu.till()
        phone = ws.Phone(issuer)
        emu.sim.add_phone(phone)
        assert till.call("CHARGE 100 978 T1") == "RESULT T1 DECLINED CLOCK_UNSET"
        assert sum(1 for ins, _ in phone.log if ins == 0xA0) == 0
        assert 'EVENT display "CLOCK NOT SET"' in emu.lines


def test_a_terminal_takes_the_largest_deny_list(tmp_path, issuer):
    # The receiver's most (receiver/config.py MAX_DENY) in one bundle: the
    # terminal applies it in an exchange, boots with it stored (its parse
    # comes first in boot, before the heap is cut up), and uploads again.
    # Before, 100 entries left it retrying "memory" for ever, and the stored
    # bundle crashed every boot.
    from host_tools.receiver.config import MAX_DENY
    denied = ws.Phone(issuer)
    dw = ws.parse_credential(denied.credential)
    deny = [[issuer.kid.hex(), "%032x" % (i + 1)] for i in range(MAX_DENY - 1)]
    deny.append([issuer.kid.hex(), dw["wallet_id"].hex()])
    db = "sqlite:///" + str(tmp_path / "ledger.db")
    rx = testing.start_receiver(tmp_path, db, issuers=[issuer.config()], config={
        "bundle_version": 2, "deny": {"wallets": deny, "serials": []}})
    tid = "5445524d30303031"
    emu = again = None
    try:
        emu = Emulator(tmp_path / tid, terminal_config(rx, tid, issuer), heap=demo.HEAP,
                       env={"POS_UPLINK_FAST": "1"})
        emu.set_link(True)
        emu.provision()
        emu.start()
        till = emu.till()
        assert emu.wait_for("UPLINK bundle version 2", timeout=30), emu.lines[-20:]
        assert pay(emu, till, denied, 100, "D1") == "RESULT D1 DECLINED DENY_LISTED"
        emu.set_link(False)
        for i in range(12):
            got = pay(emu, till, ws.Phone(issuer), 100, "X%d" % i)
            assert got == "RESULT X%d APPROVED %d" % (i, i + 1), (got, emu.lines[-30:])
        till.close()
        emu.proc.kill()
        emu.proc.wait()
        emu.stop()
        again = Emulator(tmp_path / tid, emu.config, heap=demo.HEAP, env={"POS_UPLINK_FAST": "1"})
        again.start()
        assert any("BUNDLE version 2" in l for l in again.lines)
        assert not [l for l in again.lines if l.startswith("UPLINK cannot start")], again.lines
        till = again.till()
        assert pay(again, till, denied, 100, "D2") == "RESULT D2 DECLINED DENY_LISTED"
        again.set_link(True)
        assert again.wait_for("SYNC acknowledged up to 12", timeout=30), again.lines[-20:]
        till.close()
    finally:
        for e in (emu, again):
            if e is not None:
                e.stop()
        rx.stop()
