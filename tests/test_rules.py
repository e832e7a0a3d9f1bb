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

    def tap(self, phone, amount, expect, currency=978, time=NOW, response=None, byref=False):
        """byref: ask with P1 = 01 and let the firmware see the answer as the
        terminal does (Verifier.held after the first part, then unreference)."""
        self.seq += 1
        apdu, data = ws.authorize_apdu(TID, MID, amount, currency, os.urandom(16), time, self.seq,
                                       p1=ws.P1_BY_REFERENCE if byref else 0)
        genuine = response is None
        if genuine:
            ws.run_tap(phone, ws.SELECT_APDU)
            response, sw = ws.run_tap(phone, apdu)
        t = {"request": data.hex(), "response": response.hex(), "amount": amount,
             "currency": currency, "time": time}
        if byref:
            t["byref"] = True
        if byref and genuine and phone.fault is None:
            try:
                t["expect_response"] = ws.full_response(response).hex()
            except (KeyError, ws.TLVError):
                pass
        self.taps.append(t)
        self.expect.append(expect)
        return response

    def sync(self):
        self.taps.append({"sync": True})
        self.expect.append("SYNC")

    def reboot(self, records):
        """A power cut and a boot: the wallet table is rebuilt from the journal."""
        self.taps.append({"reboot": True})
        self.expect.append("REBOOT %d" % records)

    def run(self, tmp_path, capacity=512):
        p = tmp_path / "scenario.json"
        p.write_text(json.dumps({"policy": self.policy, "taps": self.taps, "capacity": capacity}))
        r = run_mp(ROOT / "tests" / "mp" / "rules_replay.py", p, heap="1M")  # the scenario JSON is test data
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.split("\n")[:-1]
        return [l if l.startswith("REBOOT") else l.split()[0] for l in lines], lines


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
        "wallets": [[es_issuer.kid.hex(), denied.wallet_id.hex()]],
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
    sc.tap(ws.Phone(es_issuer, fault="bad_cred_sig"), 100, "ISSUER_SIG")
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


def test_credential_by_reference(tmp_path, es_issuer):
    """PROTOCOL.md 5.7 through the firmware's rules: a credential the verifier
    holds is taken from its cache after the answer's first 109 bytes (tag 35),
    one it does not hold is read and must hash to tag 35; either way check()
    decides on the version-1 response with the credential, which is what the
    journal keeps (a reboot restores from it). The hash named must be the
    credential signed for, and an answer that leaves the credential out, or
    uses the other layout, is declined."""
    phone = ws.Phone(es_issuer)
    stranger = ws.Phone(es_issuer)   # its credential never reaches the terminal
    sc = Scenario([es_issuer])
    sc.tap(phone, 100, "APPROVED")                       # first seen: version-1 answer
    sc.tap(phone, 200, "APPROVED", byref=True)           # held: 109 bytes read
    sc.tap(ws.Phone(es_issuer), 100, "APPROVED", byref=True)  # not held: read in full
    sc.tap(ws.Phone(es_issuer, fault="wrong_hash"), 100, "CRED_HASH", byref=True)
    sc.tap(ws.Phone(es_issuer, fault="omit_cred"), 100, "MALFORMED", byref=True)
    sc.tap(ws.Phone(es_issuer, fault="omit_cred"), 100, "MALFORMED")
    # Naming a credential the terminal holds (someone else's) and signing for it.
    sc.tap(ws.Phone(es_issuer, fault="foreign_ref", foreign=phone.credential), 100,
           "DEVICE_SIG", byref=True)
    # Naming one it does not hold: the credential sent is not the one named.
    sc.tap(ws.Phone(es_issuer, fault="foreign_ref", foreign=stranger.credential), 100,
           "CRED_HASH", byref=True)
    # A version-1 answer where one by reference was asked for, and the reverse.
    v1 = _answer(ws.Phone(es_issuer, by_reference=False))
    sc.tap(phone, 100, "MALFORMED", byref=True, response=v1)
    sc.tap(phone, 100, "MALFORMED", response=_answer(phone, p1=ws.P1_BY_REFERENCE))
    sc.tap(phone, 300, "APPROVED", byref=True)
    sc.reboot(4)
    sc.tap(phone, 50, "APPROVED", byref=True)            # after a boot: the cache is empty
    got, lines = sc.run(tmp_path)
    assert got == sc.expect, "\n".join(lines)
    assert lines[1] == "APPROVED hit held" and lines[2] == "APPROVED miss sent", lines
    assert lines[-1] == "APPROVED miss sent", lines
    assert ws.parse_tlv(v1).keys() == {0x31, 0x32, 0x33, 0x34}


def _answer(phone, p1=0):
    # The phone's whole answer to an AUTHORIZE with this P1, to hand to a
    # terminal that asked with the other one.
    apdu, _ = ws.authorize_apdu(TID, MID, 100, 978, os.urandom(16), NOW, 99, p1=p1)
    ws.run_tap(phone, ws.SELECT_APDU)
    return ws.run_tap(phone, apdu)[0]


def test_mutated_answers_by_reference_are_declined(tmp_path, es_issuer):
    """Random and mutated answers by reference, held and not held: declined
    with a reason, never a crash, never approved."""
    sc = Scenario([es_issuer])
    phone = ws.Phone(es_issuer)
    sc.tap(phone, 10, "APPROVED")
    good = sc.tap(phone, 10, "APPROVED", byref=True)
    rnd = __import__("random").Random(11)
    for i in range(200):
        if i % 4 == 0:
            resp = os.urandom(rnd.randrange(0, 600))
        else:
            b = bytearray(good)
            for _ in range(rnd.randrange(1, 4)):
                # Half the mutations inside the first 109 bytes (what a held tap reads).
                b[rnd.randrange(109 if i % 2 else len(b))] = rnd.randrange(256)
            resp = bytes(b[:rnd.randrange(len(b) // 2, len(b) + 1)] if i % 3 else b)
        sc.tap(phone, 10, None, response=resp, byref=True)
    got, lines = sc.run(tmp_path)
    assert got[:2] == ["APPROVED", "APPROVED"], lines[:2]
    assert all(g != "APPROVED" for g in got[2:]), [l for l in lines[2:] if l.startswith("APPROVED")]
    assert set(got[2:]) <= {"MALFORMED", "CRED_HASH", "ISSUER_UNKNOWN", "ISSUER_KEY_INVALID",
                            "ISSUER_SIG", "UNSUPPORTED", "DEVICE_SIG", "COUNTER_REPLAY", "EXPIRED",
                            "NOT_YET_VALID", "CURRENCY", "OVER_TAP_LIMIT",
                            "OVER_OFFLINE_LIMIT"}, set(got)
    assert "CRED_HASH" in got and "DEVICE_SIG" in got and "MALFORMED" in got


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


def test_wallet_state_is_keyed_by_issuer_and_wallet_id(tmp_path, es_issuer):
    """Issuer B reusing issuer A's wallet id touches none of A's wallet's state:
    not its counter (B's 0xFFFFFFFF would lock A's customer out for good), not
    its offline spend, not its deny entry."""
    b = ws.Issuer(alg="ES256", not_before=NOW - 10, not_after=NOW + 10)
    a_phone = ws.Phone(es_issuer, offline_limit=1000)
    wid = a_phone.wallet_id
    b_phone = ws.Phone(b, wallet_id=wid, counter=0xFFFFFFFE, offline_limit=1000)
    b_denied = ws.Phone(b, wallet_id=os.urandom(16))
    a_same_id = ws.Phone(es_issuer, wallet_id=b_denied.wallet_id)
    sc = Scenario([es_issuer, b], deny={"wallets": [[b.kid.hex(), b_denied.wallet_id.hex()]]})
    sc.tap(b_phone, 900, "APPROVED")            # counter 0xFFFFFFFF under issuer B
    sc.tap(a_phone, 900, "APPROVED")            # A's wallet: its own counter and spend
    sc.tap(a_phone, 200, "OVER_OFFLINE_LIMIT")  # 900 + 200 of A's own 1000
    sc.tap(b_denied, 10, "DENY_LISTED")
    sc.tap(a_same_id, 10, "APPROVED")           # the same id under A is not denied
    sc.reboot(3)
    sc.tap(a_phone, 50, "APPROVED")             # restored per issuer too: 950 of 1000
    sc.tap(a_phone, 60, "OVER_OFFLINE_LIMIT")
    got, lines = sc.run(tmp_path)
    assert got == sc.expect, "\n".join(lines)


def test_an_older_credential_is_declined_once_a_newer_one_paid(tmp_path, es_issuer):
    """The issuer re-issued the wallet with a lower limit (not-before later):
    once the new credential has paid here, the old one is SUPERSEDED, also
    after a sync and a reboot; before that, the old one's spend counts against
    the new one's limit."""
    wid = os.urandom(16)
    old = ws.Phone(es_issuer, wallet_id=wid, not_before=NOW - 5000, tap_limit=5000,
                   offline_limit=20000)
    new = ws.Phone(es_issuer, wallet_id=wid, not_before=NOW - 100, tap_limit=1000,
                   offline_limit=1000, counter=1000)
    sc = Scenario([es_issuer])
    sc.tap(old, 800, "APPROVED")
    sc.tap(new, 300, "OVER_OFFLINE_LIMIT")      # 800 already spent offline, limit 1000
    sc.tap(new, 200, "APPROVED")
    sc.tap(old, 100, "SUPERSEDED")
    sc.sync()
    sc.tap(old, 5000, "SUPERSEDED")             # the issue: 5,800 against a limit of 1,000
    sc.reboot(2)
    sc.tap(old, 100, "SUPERSEDED")              # the journal remembers the newest credential
    sc.tap(new, 900, "APPROVED")
    got, lines = sc.run(tmp_path)
    assert got == sc.expect, "\n".join(lines)


def test_equal_not_before_orders_credentials_by_serial(tmp_path, es_issuer):
    wid = os.urandom(16)
    low = ws.Phone(es_issuer, wallet_id=wid, serial=bytes(7) + b"\x01", not_before=NOW - 9)
    high = ws.Phone(es_issuer, wallet_id=wid, serial=bytes(7) + b"\x02", not_before=NOW - 9,
                    counter=50)
    sc = Scenario([es_issuer])
    sc.tap(low, 10, "APPROVED")
    sc.tap(high, 10, "APPROVED")
    sc.tap(low, 10, "SUPERSEDED")
    got, lines = sc.run(tmp_path)
    assert got == sc.expect, "\n".join(lines)


CONFIG_CHECK = """
import sys
from pos import rules
K = "04" + "11" * 64
def issuer(**kw):
    d = {"kid": "4953535545523031", "alg": "ES256", "key": K, "not_before": 0, "not_after": 1}
    d.update(kw)
    return d
good = {"issuers": [issuer()], "deny": {"wallets": [["4953535545523031", "ab" * 16]],
                                         "serials": ["4953535545523031" + "00" * 8]}}
p = rules.Policy.from_config(good)
assert set(p.deny_wallets) == {bytes.fromhex("4953535545523031" + "ab" * 16)}
assert bytes.fromhex("4953535545523031" + "ab" * 16) in p.deny_wallets
assert bytes.fromhex("4953535545523031" + "00" * 8) in p.deny_serials and len(p.deny_serials) == 1
# In the block, but not at an entry's start: not an entry.
assert bytes.fromhex("53535545523031" + "ab" * 16 + "00") not in rules.Keys([b"I" + bytes.fromhex("53535545523031" + "ab" * 16), bytes(24)], 24)
assert bytes(23) not in p.deny_wallets
bad = [
    {"deny": {}},                                            # no issuers
    {"issuers": []},
    {"issuers": [issuer()] * 17},
    {"issuers": [issuer(), issuer()]},                       # one kid twice
    {"issuers": [issuer(alg="EdDSA")]},
    {"issuers": [issuer(key="04" + "11" * 40)]},             # not a SEC1 length
    {"issuers": [issuer(alg="RS256", key="c1" * 256 + "01")]},  # 2056 bits: fine...
    {"issuers": [issuer(alg="RS256", key="c1" * 200)]},      # ...1600 bits: too short
    {"issuers": [issuer(not_before=5, not_after=4)]},
    {"issuers": [issuer(not_after=2 ** 32)]},
    {"issuers": [issuer(kid="49535355")]},
    {"issuers": [issuer()], "deny": {"wallets": ["ab" * 16]}},  # the old bare form
    {"issuers": [issuer()], "deny": {"wallets": [["4953535545523031"]]}},
    {"issuers": [issuer()], "deny": {"wallets": [["4953535545523031", "ab" * 15]]}},
    {"issuers": [issuer()], "deny": {"serials": ["4953"]}},
    {"issuers": [issuer()], "deny": []},
    {"issuers": [issuer()], "deny": {"wallets": [["4953535545523031", "ab" * 16]] * 1025}},
]
for i, cfg in enumerate(bad):
    try:
        rules.Policy.from_config(cfg)
        print("ACCEPTED", i)
    except rules.ConfigError as e:
        print("REFUSED", i, e)
"""


def test_policy_config_follows_the_schema():
    r = run_mp(CONFIG_CHECK, heap="512k")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.split("\n")[:-1]
    # Entry 6 is a valid RS256 modulus length (257 bytes, 2056 bits): accepted.
    assert [l.split()[0] for l in lines] == ["REFUSED"] * 6 + ["ACCEPTED"] + ["REFUSED"] * 10, lines
    assert "bare wallet id" in lines[11], lines[11]
