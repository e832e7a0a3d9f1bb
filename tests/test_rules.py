"""Offline rules end to end: tokens from the wallet simulator, decided by the
firmware in the unix port (heap capped at 128k)."""
import json
import os

import pytest

from conftest import ROOT, run_mp
from host_tools import wallet_sim as ws

NOW = 1764000000
TID, MID = b"TERM0001", b"MARKET-7"


class Scenario:
    def __init__(self, issuers, deny=None):
        self.policy = {"issuers": [i.config() for i in issuers], "deny": deny or {}}
        self.taps, self.expect = [], []
        self.seq = 0

    def tap(self, phone, amount, expect, currency=978, time=NOW, response=None):
        self.seq += 1
        apdu, data = ws.authorize_apdu(TID, MID, amount, currency, os.urandom(16), time, self.seq)
        if response is None:
            ws.run_tap(phone, ws.SELECT_APDU)
            response, sw = ws.run_tap(phone, apdu)
        self.taps.append({"request": data.hex(), "response": response.hex(), "amount": amount,
                          "currency": currency, "time": time})
        self.expect.append(expect)
        return response

    def sync(self):
        self.taps.append({"sync": True})
        self.expect.append("SYNC")

    def run(self, tmp_path, capacity=512):
        p = tmp_path / "scenario.json"
        p.write_text(json.dumps({"policy": self.policy, "taps": self.taps, "capacity": capacity}))
        r = run_mp(ROOT / "tests" / "mp" / "rules_replay.py", p, heap="1M")  # the scenario JSON is test data
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.split("\n")[:-1]
        return [line.split()[0] for line in lines], lines


@pytest.fixture(scope="module")
def es_issuer():
    return ws.Issuer(alg="ES256", not_before=NOW - 10**6, not_after=NOW + 10**6)


def test_every_rule_has_its_reason(tmp_path, es_issuer):
    other = ws.Issuer(alg="ES256")  # not provisioned on the terminal
    old_key = ws.Issuer(alg="ES256", not_before=NOW - 10**7, not_after=NOW - 1)
    good = ws.Phone(es_issuer, tap_limit=5000, offline_limit=8000)
    denied = ws.Phone(es_issuer)
    denied_serial = ws.Phone(es_issuer)
    sc = Scenario([es_issuer, old_key], deny={
        "wallets": [denied.wallet_id.hex()],
        "serials": [(es_issuer.kid + ws.parse_credential(denied_serial.credential)["serial"]).hex()]})
    sc.tap(good, 1000, "APPROVED")
    sc.tap(good, 1200, "APPROVED")                       # returning wallet
    sc.tap(good, 5001, "OVER_TAP_LIMIT")
    sc.tap(good, 4000, "APPROVED")                       # 6200 spent of 8000
    sc.tap(good, 2000, "OVER_OFFLINE_LIMIT")
    sc.tap(good, 100, "CURRENCY", currency=840)
    sc.sync()
    sc.tap(good, 2000, "APPROVED")                       # spend restarts after sync
    sc.tap(ws.Phone(es_issuer, fault="bad_sig"), 100, "DEVICE_SIG")
    sc.tap(ws.Phone(es_issuer, hints=False), 100, "APPROVED")  # no key hints: 256 doublings
    sc.tap(ws.Phone(es_issuer, wrong_hints=True), 100, "DEVICE_SIG")  # signed but wrong hints
    sc.tap(ws.Phone(es_issuer, fault="bad_cred_sig", credential=es_issuer.issue(b"\x04" + b"\x01" * 64, forge=True)), 100, "ISSUER_SIG")
    sc.tap(ws.Phone(es_issuer, fault="other_amount"), 100, "DEVICE_SIG")
    sc.tap(ws.Phone(es_issuer, not_after=NOW - 1), 100, "EXPIRED")
    sc.tap(ws.Phone(es_issuer, not_before=NOW + 60), 100, "NOT_YET_VALID")
    sc.tap(ws.Phone(other), 100, "ISSUER_UNKNOWN")
    sc.tap(ws.Phone(old_key), 100, "ISSUER_KEY_INVALID")
    sc.tap(denied, 100, "DENY_LISTED")
    sc.tap(denied_serial, 100, "DENY_LISTED")
    for fault in ("truncate", "garbage", "oversize"):
        sc.tap(ws.Phone(es_issuer, fault=fault), 100, "MALFORMED")
    got, lines = sc.run(tmp_path)
    assert got == sc.expect, "\n".join(lines)
    assert lines[1].endswith("hit"), "returning wallet must hit the credential cache"


def test_replays_are_declined(tmp_path, es_issuer):
    sc = Scenario([es_issuer])
    replayer = ws.Phone(es_issuer, fault="replay")
    sc.tap(replayer, 300, "APPROVED")          # first answer is genuine
    sc.tap(replayer, 300, "DEVICE_SIG")        # old answer to a new challenge
    cloned = ws.Phone(es_issuer, fault="stale_counter")
    sc.tap(cloned, 300, "APPROVED")
    sc.tap(cloned, 300, "COUNTER_REPLAY")      # fresh signature, old counter
    # The very same request and answer twice (as if a terminal repeated its UN).
    phone = ws.Phone(es_issuer)
    resp = sc.tap(phone, 700, "APPROVED")
    sc.taps.append(dict(sc.taps[-1]))
    sc.expect.append("COUNTER_REPLAY")
    got, lines = sc.run(tmp_path)
    assert got == sc.expect, "\n".join(lines)


def test_rsa_issuer_and_compressed_device_key(tmp_path):
    rs = ws.Issuer(alg="RS256", not_before=NOW - 5, not_after=NOW + 5)
    rs3k = ws.Issuer(alg="RS256", rsa_bits=3072, not_before=NOW - 5, not_after=NOW + 5)
    es = ws.Issuer(alg="ES256", not_before=NOW - 5, not_after=NOW + 5)
    sc = Scenario([rs, rs3k, es])
    p = ws.Phone(rs)
    sc.tap(p, 100, "APPROVED")
    sc.tap(p, 100, "APPROVED")
    sc.tap(ws.Phone(rs3k), 100, "APPROVED")
    sc.tap(ws.Phone(es, compressed_key=True), 100, "APPROVED")
    got, lines = sc.run(tmp_path)
    assert got == sc.expect, "\n".join(lines)


def test_wallet_table_full_declines_new_wallets(tmp_path, es_issuer):
    sc = Scenario([es_issuer])
    phones = [ws.Phone(es_issuer) for _ in range(4)]
    for p in phones[:3]:
        sc.tap(p, 10, "APPROVED")
    sc.tap(phones[3], 10, "CAPACITY")
    sc.tap(phones[0], 10, "APPROVED")          # known wallets still pay
    got, lines = sc.run(tmp_path, capacity=4)
    assert got == sc.expect, "\n".join(lines)


def test_random_and_mutated_answers_are_declined(tmp_path, es_issuer):
    sc = Scenario([es_issuer])
    phone = ws.Phone(es_issuer)
    good = sc.tap(phone, 10, "APPROVED")
    rnd = __import__("random").Random(7)
    for i in range(300):
        if i % 3 == 0:
            resp = os.urandom(rnd.randrange(0, 400))
        else:
            b = bytearray(good)
            for _ in range(rnd.randrange(1, 4)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            resp = bytes(b[:rnd.randrange(len(b) // 2, len(b) + 1)])
        sc.tap(phone, 10, None, response=resp)
    got, lines = sc.run(tmp_path)
    assert got[0] == "APPROVED"
    # Nothing mutated may pass: the device signature covers every byte that matters.
    assert all(g != "APPROVED" for g in got[1:]), [l for l in lines[1:] if l.startswith("APPROVED")]
    assert set(got[1:]) <= {"MALFORMED", "ISSUER_UNKNOWN", "ISSUER_KEY_INVALID", "ISSUER_SIG",
                            "UNSUPPORTED", "DEVICE_SIG", "COUNTER_REPLAY", "EXPIRED",
                            "NOT_YET_VALID", "CURRENCY", "OVER_TAP_LIMIT", "OVER_OFFLINE_LIMIT"}
