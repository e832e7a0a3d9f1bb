"""Credential by reference (PROTOCOL.md 5.7) end to end: the emulated terminal
(firmware in the unix port, PN532 simulator, till link) with the option on and
switched off (`credential_by_reference: false`, a terminal as before the
option), each with a wallet that offers it and one from before it (the
simulator with by_reference=False). All four pairings pay, first seen and
returning; only the new pair leaves the credential off the air, and every
journal record still holds it, re-verified by the host's journal tool."""
import json
import time

import pytest

from host_tools import demo, journal_dump
from host_tools import wallet_sim as ws
from host_tools.emulator import Emulator

NOW = int(time.time())


@pytest.fixture(scope="module")
def issuer():
    return ws.Issuer(alg="ES256", not_before=NOW - 86400, not_after=NOW + 86400)


def config(issuer, **kw):
    cfg = {"terminal_id": "5445524d30303031", "merchant_id": "TEST", "currency": 978,
           "charge_timeout_ms": 4000, "removal_ms": 300, "issuers": [issuer.config()]}
    cfg.update(kw)
    return cfg


def pay(emu, till, phone, amount, ref):
    """(till line, TAP log fields, AUTHORIZE commands the reader carried)."""
    n = len(emu.lines)
    emu.sim.reset_clock()
    till.send("CHARGE %d 978 %s" % (amount, ref))
    emu.sim.add_phone(phone)
    line = till.read()
    emu.sim.remove_phone(phone)
    phone.removed()
    emu.wait_for("FIELD clear", n)
    tap = emu.last_tap(n)
    return line, tap[1] if tap else {}, emu.sim.totals("authorize")["commands"]


def test_four_pairings_pay_and_the_record_keeps_the_credential(tmp_path, issuer):
    seen = {}
    for terminal_new in (True, False):
        work = tmp_path / ("new" if terminal_new else "old")
        with Emulator(work, config(issuer, credential_by_reference=terminal_new),
                      heap=demo.HEAP) as emu:
            emu.provision()
            emu.start()
            till = emu.till()
            # Someone pays first, so the terminal holds a credential from the
            # start (it offers the option only then) and each pair's first tap
            # is a first-seen wallet at a terminal that could use a reference.
            assert pay(emu, till, ws.Phone(issuer), 100, "W")[0] == "RESULT W APPROVED 1"
            phones = {}
            for wallet_new in (True, False):
                phone = ws.Phone(issuer, by_reference=wallet_new)
                phones[wallet_new] = phone
                for k in ("first", "returning"):
                    ref = "%s%s%s" % ("T" if terminal_new else "t", "W" if wallet_new else "w", k[0])
                    line, fields, cmds = pay(emu, till, phone, 250, ref)
                    assert line.startswith("RESULT %s APPROVED " % ref), (line, emu.lines[-8:])
                    seen[(terminal_new, wallet_new, k)] = (fields.get("byref"), cmds)
                # The P1 a wallet from before the option would refuse never reached it.
                assert "6a86" not in [sw for _, sw in phone.log], phone.log
        records, problems = journal_dump.read_records(work / "flash.img")
        assert not problems and len(records) == 5, problems
        issuers = {i["kid"]: i for i in json.loads((work / "config.json").read_text())["issuers"]}
        creds = [journal_dump.parse_record(p)["credential"] for _, p in records]  # tags 31..34
        for _, payload in records:
            assert journal_dump.check_record(payload, issuers)["ok"]
        # The record of a tap whose credential stayed off the air holds it all the same.
        assert creds[1:] == [phones[True].credential] * 2 + [phones[False].credential] * 2
    # Only a new wallet at a new terminal, once the terminal holds its
    # credential, sends it by reference: one AUTHORIZE, no GET RESPONSE.
    assert seen[(True, True, "returning")] == ("held", 1), seen
    assert seen[(True, True, "first")][0] == "sent" and seen[(True, True, "first")][1] >= 3, seen
    for pair in [(True, False), (False, True), (False, False)]:
        for k in ("first", "returning"):
            byref, cmds = seen[pair + (k,)]
            assert byref is None and cmds >= 3, (pair, k, seen)


def test_a_wallet_that_names_the_wrong_credential_is_declined(tmp_path, issuer):
    """Through the terminal: a hash that is not the credential's (CRED_HASH), a
    credential left out unasked (MALFORMED), and another wallet's credential
    named and signed for, which the terminal holds (DEVICE_SIG). Nothing is
    stored, and the wallet whose credential was named still pays."""
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.provision()
        emu.start()
        till = emu.till()
        victim = ws.Phone(issuer)
        assert pay(emu, till, victim, 100, "V1")[0] == "RESULT V1 APPROVED 1"
        cases = [("wrong_hash", {}, "CRED_HASH", "sent"), ("omit_cred", {}, "MALFORMED", "sent"),
                 ("foreign_ref", {"foreign": victim.credential}, "DEVICE_SIG", "held")]
        for i, (fault, kw, want, how) in enumerate(cases):
            line, fields, _ = pay(emu, till, ws.Phone(issuer, fault=fault, **kw), 100, "B%d" % i)
            assert line == "RESULT B%d DECLINED %s" % (i, want), (fault, line, emu.lines[-6:])
            assert fields.get("byref") == how, (fault, fields)
        line, fields, cmds = pay(emu, till, victim, 100, "V2")
        assert line == "RESULT V2 APPROVED 2" and fields.get("byref") == "held" and cmds == 1
    records, _ = journal_dump.read_records(tmp_path / "flash.img")
    assert len(records) == 2
