"""`offpay conformance`: does a wallet follow PROTOCOL.md? A scripted list of
cases, run against the wallet directly (APDUs from the host, as a reader would
send them) and through the terminal itself (the real firmware in the
MicroPython unix port, host_tools.emulator + host_tools.pn532_sim, driven over
its till link). Prints a pass/fail table per PROTOCOL.md section; exit 0 when
every case passed, 1 otherwise, 2 on usage errors. A wallet maker runs it before
shipping, as EMV Level 2 test tools are used.

    offpay conformance                        # the wallet simulator (host_tools/wallet_sim.py)
    offpay conformance --wallet mypkg.mod:factory
    offpay conformance --only 5.3 --json      # one section; the table as JSON lines

The kit is the wallet's issuer for the run: it makes a test issuer key (ES256)
and asks the wallet for one wallet per case, with the credential terms the case
needs (limits, currency, validity). A wallet is plugged in as a factory,
`factory(issuer, **terms) -> phone`: `issuer` is a host_tools.wallet_sim.Issuer
(issue() signs a credential for a device public key), `terms` are
Issuer.issue()'s keyword arguments, and `phone.transceive(apdu) -> R-APDU`
carries one APDU to the wallet (a real phone behind the wallet maker's own
reader fits behind that call). A new phone is a fresh wallet (counter 0).
`--wallet pn532` (a phone on a PN532 reader) waits for the real-reader support.

Cases marked "sim" run only against the simulator: they are its adversarial
modes (every chaining shape and fault of wallet_sim), which show that the
terminal declines each with the reason PROTOCOL.md gives.
"""
import argparse
import hashlib
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from host_tools import wallet_sim as ws
from host_tools.journal_dump import verify_signature

SECTIONS = {
    "4": "the credential",
    "5.1": "SELECT",
    "5.3": "response chaining",
    "5.5": "what a wallet does, case by case",
    "5.6": "counter",
    "5.7": "credential by reference",
    "6": "the terminal's decision (firmware in the unix port)",
}
TERMINAL_ID = bytes.fromhex("5445524d30303031")
MERCHANT = "CONFORMANCE"
CURRENCY = 978
_RULES = {0x21: 1, 0x22: 8, 0x24: 4, 0x25: 2, 0x26: 16, 0x27: 4, 0x28: 4}


class Failed(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Failed(why)


def sw(resp):
    return resp[-2:].hex()


class Reader:
    """The host as a reader, with the terminal's chaining rules (5.3) and their
    bounds checked on the wallet's side: every R-APDU data part at most Le and
    256 bytes, the whole answer in at most `rounds` R-APDUs."""

    def __init__(self, phone):
        self.phone = phone
        self.seq = 0

    def send(self, apdu):
        return bytes(self.phone.transceive(bytes(apdu)))

    def authorize_apdu(self, amount=100, currency=CURRENCY, le=0, un=None, p1=0):
        self.seq += 1
        apdu, data = ws.authorize_apdu(TERMINAL_ID, MERCHANT.encode(), amount, currency,
                                       un or os.urandom(16), int(time.time()), self.seq, p1=p1)
        return apdu[:-1] + bytes((le,)), data

    def chain(self, apdu, rounds=16, stop_at=None):
        """Follow 61 xx and 6C xx like the terminal; returns (data, sw, R-APDUs).
        stop_at: end, as a terminal that holds the credential does (5.7), once
        that many bytes came and more are announced (sw is then the 61 xx)."""
        out, n, cmd, again = b"", 0, bytes(apdu), False
        while True:
            n += 1
            check(n <= rounds, "more than %d R-APDUs" % rounds)
            r = self.send(cmd)
            check(len(r) >= 2, "R-APDU shorter than a status word")
            k, le = len(r) - 2, cmd[-1] or 256
            check(k <= 256, "an R-APDU data part of %d bytes (at most 256)" % k)
            if r[-2] == 0x6C:
                check(k == 0, "6C xx with data")
                check(not again, "6C xx to a command repeated after 6C")
                cmd, again = cmd[:-1] + r[-1:], True
                continue
            again = False
            check(k <= le, "a part of %d bytes for Le = %d" % (k, le))
            out += r[:-2]
            check(len(out) <= ws.MAX_RESPONSE, "more than 1200 bytes of response data")
            if r[-2] != 0x61 or (stop_at is not None and len(out) >= stop_at):
                return out, sw(r), n
            cmd = bytes((0x00, 0xC0, 0x00, 0x00, r[-1]))

    def select(self):
        r = self.send(ws.SELECT_APDU)
        check(sw(r) == "9000", "SELECT answered %s" % sw(r))
        return r

    def offers_reference(self):
        """SELECT; whether the answer lists option 81 (5.7)."""
        return ws.OPT_BY_REFERENCE in ws.parse_tlv(self.select()[:-2]).get(0x01, b"")

    def pay(self, amount=100, currency=CURRENCY, le=0, rounds=16):
        """SELECT + AUTHORIZE; returns (request data, parsed answer, raw answer)."""
        self.select()
        apdu, data = self.authorize_apdu(amount, currency, le)
        out, s, _ = self.chain(apdu, rounds)
        check(s == "9000", "AUTHORIZE answered %s" % s)
        try:
            f = ws.parse_tlv(out)
        except ws.TLVError as e:
            raise Failed("answer does not parse as canonical TLV: %s" % e)
        check(sorted(f) == [0x31, 0x32, 0x33, 0x34], "answer tags %s, not 31..34"
              % [hex(t) for t in sorted(f)])
        return data, f, out


# ---- the cases --------------------------------------------------------------------------

class Kit:
    def __init__(self, factory, workdir, log=None):
        self.factory = factory
        self.simulator = factory is simulator
        self.workdir = Path(workdir)
        self.now = int(time.time())
        self.issuer = ws.Issuer(alg="ES256", not_before=self.now - 86400,
                                not_after=self.now + 365 * 86400)
        self.log = log or (lambda *a: None)
        self.emu = None
        self.till = None
        self.refs = 0

    def wallet(self, **terms):
        t = {"tap_limit": 5000, "offline_limit": 20000, "currency": CURRENCY,
             "not_before": self.now - 3600, "not_after": self.now + 30 * 86400}
        t.update(terms)
        return self.factory(self.issuer, **t)

    # -- section 4 and 5.1: direct ---------------------------------------------------
    def c_select(self):
        r = Reader(self.wallet()).select()
        f = ws.parse_tlv(r[:-2])
        check(list(f) == [0x01] and 1 <= len(f[0x01]) <= 8, "SELECT data is not 01 LL <versions>")
        check(1 in f[0x01], "version 01 not offered")

    def c_select_other(self):
        r = Reader(self.wallet()).send(b"\x00\xa4\x04\x00\x07\xa0\x00\x00\x00\x03\x10\x10\x00")
        check(sw(r) == "6a82", "another AID answered %s" % sw(r))

    def c_select_p1p2(self):
        r = Reader(self.wallet()).send(b"\x00\xa4\x00\x0c" + ws.SELECT_APDU[4:])
        check(sw(r) == "6a86", "SELECT P1P2 000C answered %s" % sw(r))

    def c_credential(self):
        rd = Reader(self.wallet())
        data, f, _ = rd.pay()
        cred = f[0x31]
        try:
            c = ws.parse_tlv(cred)
        except ws.TLVError as e:
            raise Failed("credential is not canonical TLV: %s" % e)
        need = {0x01: (1, 1), 0x02: (8, 8), 0x03: (1, 1), 0x04: (16, 16), 0x05: (8, 8),
                0x06: (1, 1), 0x07: (33, 65), 0x08: (4, 4), 0x09: (4, 4), 0x0A: (2, 2),
                0x0B: (4, 4), 0x0C: (4, 4), 0x1F: (64, 512)}
        for tag, (lo, hi) in need.items():
            check(tag in c, "required tag %02X missing" % tag)
            check(lo <= len(c[tag]) <= hi, "tag %02X of %d bytes" % (tag, len(c[tag])))
        extra = set(c) - set(need) - {0x0D}
        check(not extra, "tags not in section 4: %s" % sorted(extra))
        check(len(cred) <= 1024, "credential of %d bytes" % len(cred))
        check(c[0x01] == b"\x01" and c[0x02] == self.issuer.kid and c[0x06] == b"\x01",
              "version, issuer kid or device algorithm wrong")
        check(c[0x04] != bytes(16), "all-zero wallet id")
        body = cred[:len(cred) - len(ws.tlv(0x1F, c[0x1F]))]
        check(verify_signature("ES256", self.issuer.public, ws.CRED_DOMAIN + body, c[0x1F]),
              "issuer signature does not verify")
        if 0x0D in c:
            check(c[0x0D] == ws.key_hints(c[0x07]), "key hints (tag 0D) are not 2^64/128/192 Q")

    def c_device_signature(self):
        rd = Reader(self.wallet())
        data, f, _ = rd.pay()
        c = ws.parse_tlv(f[0x31])
        check(f[0x33] == b"\x01" and len(f[0x34]) == 64, "tag 33/34 not ES256")
        msg = ws.auth_message(data, int.from_bytes(f[0x32], "big"), 1, f[0x31])
        check(verify_signature("ES256", c[0x07], msg, f[0x34]),
              "device signature does not verify over section 5.2's message")

    # -- 5.3: direct ---------------------------------------------------------------------
    def c_chain_le256(self):
        _, _, out = Reader(self.wallet()).pay()
        check(len(out) > 256, "an answer that fits one R-APDU: chaining not exercised")

    def c_chain_small_le(self):
        # Parts of at most 32 bytes when asked for them (or 6C, then the part).
        rd = Reader(self.wallet())
        rd.select()
        apdu, _ = rd.authorize_apdu(le=32)
        out, s, _ = rd.chain(apdu, rounds=80)
        check(s == "9000", "answered %s" % s)
        ws.parse_tlv(out)

    def c_chain_le1(self):
        rd = Reader(self.wallet())
        rd.select()
        apdu, _ = rd.authorize_apdu(le=1)
        r = rd.send(apdu)
        check(r[-2] in (0x61, 0x6C, 0x90) and len(r) - 2 <= 1,
              "AUTHORIZE with Le = 1 answered %d bytes + %s" % (len(r) - 2, sw(r)))

    def c_nothing_pending_after(self):
        rd = Reader(self.wallet())
        rd.pay()
        r = rd.send(b"\x00\xc0\x00\x00\x00")
        check(sw(r) == "6985", "GET RESPONSE after the last part answered %s" % sw(r))

    def c_select_drops_pending(self):
        rd = Reader(self.wallet())
        rd.select()
        apdu, _ = rd.authorize_apdu()
        first = rd.send(apdu)
        check(first[-2] in (0x61, 0x6C), "no chaining to drop (%s)" % sw(first))
        rd.select()
        r = rd.send(b"\x00\xc0\x00\x00\x00")
        check(sw(r) == "6985", "GET RESPONSE after a new SELECT answered %s" % sw(r))

    # -- 5.5: direct ---------------------------------------------------------------------
    def _bad(self, apdu_fn, want, select=True):
        rd = Reader(self.wallet())
        if select:
            rd.select()
        apdu = apdu_fn(rd)
        r = rd.send(apdu)
        check(sw(r) == want, "answered %s, not %s" % (sw(r), want))

    def c_authorize_unselected(self):
        self._bad(lambda rd: rd.authorize_apdu()[0], "6985", select=False)

    def c_authorize_p1p2(self):
        self._bad(lambda rd: b"\x80\xa0\x02\x00" + rd.authorize_apdu()[0][4:], "6a86")
        self._bad(lambda rd: b"\x80\xa0\x00\x01" + rd.authorize_apdu()[0][4:], "6a86")

    def c_wrong_lc(self):
        self._bad(lambda rd: b"\x80\xa0\x00\x00\x50" + rd.authorize_apdu()[0][5:], "6700")

    def c_missing_field(self):
        def apdu(rd):
            data = rd.authorize_apdu()[1]
            data = data.replace(ws.tlv(0x26, ws.parse_tlv(data)[0x26]), b"")  # no UN
            return bytes((0x80, 0xA0, 0, 0, len(data))) + data + b"\x00"
        self._bad(apdu, "6a80")

    def c_unknown_tag(self):
        def apdu(rd):
            data = rd.authorize_apdu()[1] + ws.tlv(0x29, b"\x00")
            return bytes((0x80, 0xA0, 0, 0, len(data))) + data + b"\x00"
        self._bad(apdu, "6a80")

    def c_field_bounds(self):
        def apdu(rd):
            data = rd.authorize_apdu()[1]
            data = data.replace(ws.tlv(0x23, MERCHANT.encode()), ws.tlv(0x23, b"M" * 17))
            return bytes((0x80, 0xA0, 0, 0, len(data))) + data + b"\x00"
        self._bad(apdu, "6a80")

    def c_version(self):
        self._bad(lambda rd: rd.authorize_apdu()[0].replace(b"\x21\x01\x01", b"\x21\x01\x02", 1), "6a81")

    def c_unknown_ins(self):
        self._bad(lambda rd: b"\x80\xb2\x00\x00\x00", "6d00")

    def c_unknown_cla(self):
        self._bad(lambda rd: b"\xa0\xa0\x00\x00\x00", "6e00")

    def c_nothing_pending(self):
        self._bad(lambda rd: b"\x00\xc0\x00\x00\x00", "6985")

    def c_signs_other_currency(self):
        Reader(self.wallet()).pay(currency=840)

    def c_signs_over_limit(self):
        Reader(self.wallet(tap_limit=100)).pay(amount=101)

    # -- 5.6: direct ---------------------------------------------------------------------
    def c_first_counter(self):
        _, f, _ = Reader(self.wallet()).pay()
        check(int.from_bytes(f[0x32], "big") == 1, "a new wallet's first counter is %d, not 1"
              % int.from_bytes(f[0x32], "big"))

    def c_counter_increases(self):
        rd = Reader(self.wallet())
        c1 = int.from_bytes(rd.pay()[1][0x32], "big")
        rd.select()
        rd.send(rd.authorize_apdu()[0])  # answer abandoned after its first part
        c3 = int.from_bytes(rd.pay()[1][0x32], "big")
        check(c3 >= c1 + 2, "counters %d then %d: the abandoned answer's was reused" % (c1, c3))

    # -- 5.7: direct ---------------------------------------------------------------------
    def _by_reference(self, **kw):
        """SELECT; None if the wallet does not list option 81 (then P1 01 must
        be 6A 86, as for any wallet before the option), else the answer by
        reference: (request data, fields, R-APDUs, reader)."""
        rd = Reader(self.wallet())
        apdu, data = rd.authorize_apdu(p1=ws.P1_BY_REFERENCE)
        if not rd.offers_reference():
            r = rd.send(apdu)
            check(sw(r) == "6a86", "P1 01 without option 81 answered %s, not 6A 86" % sw(r))
            return None
        out, s, n = rd.chain(apdu, **kw)
        check(s == "9000" or kw.get("stop_at"), "AUTHORIZE P1 01 answered %s" % s)
        return data, out, n, rd

    def c_ref_select(self):
        rd = Reader(self.wallet())
        v = ws.parse_tlv(rd.select()[:-2])[0x01]
        check(1 in v, "version 01 not listed")
        check(all(x == 1 or x >= 0x80 for x in v), "versions %s: only 01 and options 80..FF" % v.hex())

    def c_ref_layout(self):
        got = self._by_reference()
        if got is None:
            return
        data, out, _, rd = got
        try:
            f = ws.parse_tlv(out)
        except ws.TLVError as e:
            raise Failed("answer does not parse as canonical TLV: %s" % e)
        check(list(f) == [0x32, 0x33, 0x34, 0x35, 0x36], "answer tags %s, not 32..36"
              % [hex(t) for t in f])
        check(len(f[0x32]) == 4 and f[0x33] == b"\x01" and len(f[0x34]) == 64
              and len(f[0x35]) == 32, "fields 32..35 out of their bounds")
        check(f[0x35] == hashlib.sha256(f[0x36]).digest(), "tag 35 is not SHA-256 of tag 36")
        # The credential is the one a version-1 answer carries.
        _, v1, _ = rd.pay()
        check(v1[0x31] == f[0x36], "tag 36 differs from the version-1 answer's tag 31")

    def c_ref_first_part(self):
        rd = Reader(self.wallet())
        if not rd.offers_reference():
            return
        apdu, _ = rd.authorize_apdu(p1=ws.P1_BY_REFERENCE)
        r = rd.send(apdu)
        check(r[-2] == 0x61, "first R-APDU %s: the credential must follow by chaining" % sw(r))
        check(len(r) - 2 == ws.REF_HEAD, "first part of %d bytes, not the 109 up to tag 35"
              % (len(r) - 2))

    def c_ref_signature(self):
        got = self._by_reference()
        if got is None:
            return
        data, out, _, _ = got
        f = ws.parse_tlv(out)
        c = ws.parse_tlv(f[0x36])
        msg = ws.auth_message(data, int.from_bytes(f[0x32], "big"), 1, cred_hash=f[0x35])
        check(verify_signature("ES256", c[0x07], msg, f[0x34]),
              "device signature does not cover tag 35 as section 5.2's message")

    def c_ref_abandoned(self):
        got = self._by_reference(stop_at=ws.REF_HEAD)
        if got is None:
            return
        _, out, _, rd = got
        c1 = int.from_bytes(out[2:6], "big")
        c2 = int.from_bytes(rd.pay()[1][0x32], "big")
        check(c2 > c1, "counters %d then %d after an answer read up to tag 35" % (c1, c2))

    # -- 6: through the terminal ---------------------------------------------------------
    def _terminal(self):
        if self.emu is None:
            from host_tools.emulator import Emulator
            cfg = {"terminal_id": TERMINAL_ID.hex(), "merchant_id": MERCHANT,
                   "currency": CURRENCY, "charge_timeout_ms": 8000, "removal_ms": 300,
                   "issuers": [self.issuer.config()]}
            self.emu = Emulator(self.workdir / "terminal", cfg, heap="128k")
            self.emu.provision()
            self.emu.start()
            self.till = self.emu.till()
        return self.emu

    def charge(self, phone, amount, currency=CURRENCY):
        """One charge over the till with `phone` on the reader: "APPROVED" or the
        decline reason."""
        emu = self._terminal()
        self.refs += 1
        ref = "C%d" % self.refs
        n = len(emu.lines)
        self.till.send("CHARGE %d %03d %s" % (amount, currency, ref))
        emu.sim.add_phone(phone)
        try:
            line = self.till.read()
        finally:
            emu.sim.remove_phone(phone)
            if hasattr(phone, "removed"):
                phone.removed()
        emu.wait_for("FIELD clear", n)
        w = line.split()
        check(w[:2] == ["RESULT", ref], "till got %r" % line)
        return w[2] if w[2] == "APPROVED" else w[3]

    def expect(self, phone, amount, want):
        got = self.charge(phone, amount)
        check(got == want, "terminal answered %s, not %s" % (got, want))

    def c_t_approved(self):
        p = self.wallet()
        self.expect(p, 1250, "APPROVED")
        self.expect(p, 250, "APPROVED")  # returning wallet

    def c_t_tap_limit(self):
        self.expect(self.wallet(tap_limit=1000), 1001, "OVER_TAP_LIMIT")

    def c_t_offline_limit(self):
        p = self.wallet(offline_limit=1500)
        self.expect(p, 1000, "APPROVED")
        self.expect(p, 600, "OVER_OFFLINE_LIMIT")

    def c_t_currency(self):
        self.expect(self.wallet(currency=840), 100, "CURRENCY")

    def c_t_expired(self):
        self.expect(self.wallet(not_before=self.now - 90 * 86400, not_after=self.now - 60),
                    100, "EXPIRED")

    def c_t_not_yet_valid(self):
        self.expect(self.wallet(not_before=self.now + 3600), 100, "NOT_YET_VALID")

    def c_t_by_reference(self):
        # A returning wallet that offers option 81: the terminal, holding its
        # credential, reads the AUTHORIZE answer up to tag 35 and no further.
        p = Recorder(self.wallet())
        self.expect(p, 300, "APPROVED")
        p.log = []
        self.expect(p, 300, "APPROVED")
        if p.offered:
            check([c[:3] for c in p.log] == [b"\x00\xa4\x04", b"\x80\xa0\x01"],
                  "the terminal sent %s: a held credential was fetched"
                  % [c[:4].hex() for c in p.log])

    def c_t_replay(self):
        # The wallet's genuine answer, recorded and played back to a new challenge.
        rec = Recorder(self.wallet())
        self.expect(rec, 300, "APPROVED")
        self.expect(Replayer(rec.answers, rec.select), 300, "DEVICE_SIG")

    # -- sim only: the terminal against every adversarial wallet shape ------------------
    def c_s_shapes(self, **kw):
        want = kw.pop("want")
        first = kw.pop("first", None)
        if kw.pop("victim", False):
            # A wallet pays first, so the terminal holds a credential (it then
            # asks for credentials by reference); a foreign_ref names it.
            victim = ws.Phone(self.issuer, not_before=self.now - 3600)
            self.expect(victim, 100, "APPROVED")
            if kw.get("fault") == "foreign_ref":
                kw["foreign"] = victim.credential
        p = ws.Phone(self.issuer, not_before=self.now - 3600, **kw)
        if first:
            self.expect(p, 100, first)
        self.expect(p, 100, want)


class Recorder:
    """Passes APDUs to a phone and keeps its last AUTHORIZE exchange's R-APDUs,
    every command (log) and whether its SELECT answer listed option 81."""

    def __init__(self, phone):
        self.phone = phone
        self.answers = []
        self.log = []
        self.offered = False
        self.select = None

    def transceive(self, apdu):
        apdu = bytes(apdu)
        self.log.append(apdu)
        r = bytes(self.phone.transceive(apdu))
        if apdu[1] == 0xA4 and r[-2:] == b"\x90\x00":
            self.select = r
            self.offered = ws.OPT_BY_REFERENCE in ws.parse_tlv(r[:-2]).get(0x01, b"")
        if apdu[1] == 0xA0:
            self.answers = [r]
        elif apdu[1] == 0xC0 and self.answers:
            self.answers.append(r)
        return r

    def removed(self):
        if hasattr(self.phone, "removed"):
            self.phone.removed()


class Replayer:
    """Answers SELECT as the recorded wallet did (so the terminal asks for the
    same answer layout), then plays back recorded R-APDUs in order."""

    def __init__(self, answers, select=None):
        self.answers = list(answers)
        self.select = select or ws.tlv(0x01, b"\x01") + b"\x90\x00"
        self._left = []

    def transceive(self, apdu):
        if apdu[1] == 0xA4:
            return self.select
        if apdu[1] == 0xA0:
            self._left = list(self.answers)
        return self._left.pop(0) if self._left else b"\x69\x85"


def simulator(issuer, **terms):
    """The default wallet: host_tools.wallet_sim.Phone, a fresh wallet per call."""
    return ws.Phone(issuer, **terms)


def _sim_cases():
    # (name, Phone arguments, expected decline): every fault of wallet_sim and the
    # chaining shapes of PROTOCOL.md 5.3, as the terminal must answer them.
    faults = {
        "bad_sig": "DEVICE_SIG", "bad_cred_sig": "ISSUER_SIG", "other_amount": "DEVICE_SIG",
        "truncate": "MALFORMED", "oversize": "MALFORMED", "garbage": "MALFORMED",
        "refuse": "WALLET_ERROR", "no_app": "NO_WALLET", "endless_chain": "PROTOCOL",
        "flood": "PROTOCOL", "big_part": "PROTOCOL", "sixc_data": "PROTOCOL",
        "omit_cred": "MALFORMED", "wrong_hash": "CRED_HASH", "foreign_ref": "DEVICE_SIG",
    }
    by_ref = ("omit_cred", "wrong_hash", "foreign_ref")
    out = [("5.3", "parts of 1 byte: more than 16 R-APDUs", dict(chunk=1, want="PROTOCOL")),
           ("5.3", "parts of 256 bytes, 61 00", dict(chunk=256, want="APPROVED")),
           ("5.3", "parts of 20 bytes: within 16 R-APDUs", dict(chunk=20, hints=False, want="APPROVED")),
           ("5.3", "6C xx before every part", dict(chunk=100, exact_le=True, want="APPROVED")),
           ("5.7", "a wallet from before option 81: approved, returning too",
            dict(by_reference=False, victim=True, first="APPROVED", want="APPROVED")),
           ("5.7", "by reference, 6C xx before every part", dict(chunk=100, exact_le=True, victim=True,
                                                               first="APPROVED", want="APPROVED")),
           ("5.7", "by reference, parts of 20 bytes", dict(chunk=20, hints=False, victim=True,
                                                         first="APPROVED", want="APPROVED"))]
    for f in ws.FAULTS:
        if f is None:
            continue
        sec = "5.3" if faults.get(f) == "PROTOCOL" else "5.7" if f in by_ref else "6"
        if f == "replay":
            out.append((sec, "fault replay: old answer to a new challenge",
                        dict(fault=f, first="APPROVED", want="DEVICE_SIG")))
        elif f == "stale_counter":
            out.append((sec, "fault stale_counter: counter reused",
                        dict(fault=f, first="APPROVED", want="COUNTER_REPLAY")))
        elif f in by_ref:
            out.append((sec, "fault %s" % f, dict(fault=f, victim=True, want=faults[f])))
        else:
            out.append((sec, "fault %s" % f, dict(fault=f, want=faults[f])))
    return out


CASES = [
    ("5.1", "SELECT of the AID: 01 LL <versions> 90 00, version 01 offered", "c_select"),
    ("5.1", "SELECT of another AID: 6A 82", "c_select_other"),
    ("5.1", "SELECT with P1 P2 00 0C: 6A 86", "c_select_p1p2"),
    ("4", "credential: required tags, bounds, canonical, issuer signature", "c_credential"),
    ("4", "device signature over the section 5.2 message", "c_device_signature"),
    ("5.3", "Le = 00: parts of at most 256 bytes, 16 R-APDUs, 1200 bytes", "c_chain_le256"),
    ("5.3", "Le = 32 every time: parts of at most 32 bytes (or 6C)", "c_chain_small_le"),
    ("5.3", "AUTHORIZE with Le = 1: at most 1 byte, or 6C", "c_chain_le1"),
    ("5.3", "GET RESPONSE after the last part: 69 85", "c_nothing_pending_after"),
    ("5.3", "a new SELECT drops the pending answer", "c_select_drops_pending"),
    ("5.5", "AUTHORIZE before SELECT: 69 85", "c_authorize_unselected"),
    ("5.5", "AUTHORIZE with P1 P2 02 00 or 00 01: 6A 86", "c_authorize_p1p2"),
    ("5.5", "Lc that does not match: 67 00", "c_wrong_lc"),
    ("5.5", "request without tag 26: 6A 80", "c_missing_field"),
    ("5.5", "request with an unknown tag: 6A 80", "c_unknown_tag"),
    ("5.5", "merchant id of 17 bytes: 6A 80", "c_field_bounds"),
    ("5.5", "protocol version 02: 6A 81", "c_version"),
    ("5.5", "unknown INS: 6D 00", "c_unknown_ins"),
    ("5.5", "unknown CLA: 6E 00", "c_unknown_cla"),
    ("5.5", "GET RESPONSE with nothing pending: 69 85", "c_nothing_pending"),
    ("5.5", "another currency than the credential's: signs, 90 00", "c_signs_other_currency"),
    ("5.5", "an amount over its own limit: signs, 90 00", "c_signs_over_limit"),
    ("5.6", "a new wallet's first counter is 1", "c_first_counter"),
    ("5.6", "counter strictly increases, an abandoned answer's is not reused", "c_counter_increases"),
    ("5.7", "SELECT lists 01, and beside it only options (80..FF)", "c_ref_select"),
    ("5.7", "P1 01: 32..36, 35 = SHA-256(36), 36 its credential (no option 81: 6A 86)",
     "c_ref_layout"),
    ("5.7", "P1 01: the first part ends after tag 35 (109 bytes), 61 xx", "c_ref_first_part"),
    ("5.7", "P1 01: the device signature covers tag 35", "c_ref_signature"),
    ("5.7", "an answer read only up to tag 35: its counter is not reused", "c_ref_abandoned"),
    ("6", "approved, and approved again as a returning wallet", "c_t_approved"),
    ("6", "over the per-tap limit: OVER_TAP_LIMIT", "c_t_tap_limit"),
    ("6", "over the offline limit: OVER_OFFLINE_LIMIT", "c_t_offline_limit"),
    ("6", "credential in another currency: CURRENCY", "c_t_currency"),
    ("6", "expired credential: EXPIRED", "c_t_expired"),
    ("6", "credential not yet valid: NOT_YET_VALID", "c_t_not_yet_valid"),
    ("6", "its answer replayed to a new challenge: DEVICE_SIG", "c_t_replay"),
    ("6", "returning, by reference: approved, the held credential not fetched", "c_t_by_reference"),
]


def run(factory=simulator, only=None, out=print, workdir=None, as_json=False):
    """Run the cases; print the table; returns the rows (section, case, ok, why)."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="offpay-conformance-") as tmp:
        kit = Kit(factory, workdir or tmp)
        todo = [(s, n, getattr(kit, m), {}) for s, n, m in CASES]
        if kit.simulator:
            todo += [(s, "sim: " + n, kit.c_s_shapes, kw) for s, n, kw in _sim_cases()]
        try:
            for sec, name, fn, kw in todo:
                if only and not any(sec == o or sec.startswith(o + ".") for o in only):
                    continue
                t0 = time.monotonic()
                try:
                    fn(**kw)
                    ok, why = True, ""
                except Failed as e:
                    ok, why = False, str(e)
                except Exception as e:  # noqa: a wallet that crashes a case fails it, the run goes on
                    ok, why = False, "%s: %s" % (type(e).__name__, e)
                rows.append((sec, name, ok, why, time.monotonic() - t0))
        finally:
            if kit.emu is not None:
                kit.till.close()
                kit.emu.stop()
    _table(rows, out, as_json)
    return rows


def _table(rows, out, as_json):
    if as_json:
        for sec, name, ok, why, dt in rows:
            out(json.dumps({"section": sec, "case": name, "pass": ok, "why": why,
                            "seconds": round(dt, 2)}))
        return
    order = sorted({r[0] for r in rows}, key=lambda s: [int(x) for x in s.split(".")])
    width = max([len(r[1]) for r in rows] + [10])
    for sec in order:
        mine = [r for r in rows if r[0] == sec]
        out("PROTOCOL.md %s %s: %d/%d passed" % (sec, SECTIONS.get(sec, ""),
                                                  sum(r[2] for r in mine), len(mine)))
        for _, name, ok, why, _ in mine:
            out("  %-4s  %-*s  %s" % ("pass" if ok else "FAIL", width, name, why))
    n_ok = sum(r[2] for r in rows)
    out("%d passed, %d failed" % (n_ok, len(rows) - n_ok))


def load_factory(spec):
    if spec in (None, "sim", "simulator"):
        return simulator
    if spec.startswith("pn532"):
        raise SystemExit("conformance: --wallet pn532 needs the real-reader (PN532) support, "
                         "which does not exist yet; use a factory (module:callable)")
    mod, _, attr = spec.partition(":")
    if not attr:
        raise SystemExit("conformance: --wallet takes sim, or module:callable")
    return getattr(importlib.import_module(mod), attr)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="offpay conformance", description=__doc__.split("\n\n")[0])
    ap.add_argument("--wallet", default="sim",
                    help="sim (default), or module:callable, a factory(issuer, **terms) -> phone")
    ap.add_argument("--only", action="append", help="a PROTOCOL.md section (repeatable), e.g. 5.3")
    ap.add_argument("--json", action="store_true", help="one JSON line per case")
    ap.add_argument("--workdir", help="keep the emulated terminal's files (log, flash) here")
    a = ap.parse_args(argv)
    try:
        factory = load_factory(a.wallet)
    except (ImportError, AttributeError) as e:
        print("conformance: cannot load wallet %r: %s" % (a.wallet, e), file=sys.stderr)
        return 2
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    rows = run(factory, a.only, workdir=a.workdir, as_json=a.json)
    return 0 if rows and all(r[2] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
