"""`offpay conformance`: the wallet simulator passes every case, through the real
firmware in the unix port where a case needs the terminal; each wallet_sim fault
and chaining shape is declined end to end with the reason PROTOCOL.md gives; and
a wallet that breaks a rule fails exactly that rule's case."""
import json
import subprocess
import sys

from conftest import ROOT
from host_tools import conformance
from host_tools import wallet_sim as ws


def test_the_simulator_passes_every_case_end_to_end():
    lines = []
    rows = conformance.run(out=lines.append)
    failed = [r for r in rows if not r[2]]
    assert not failed, "\n".join(lines)
    assert {r[0] for r in rows} == set(conformance.SECTIONS)
    assert lines[-1] == "%d passed, 0 failed" % len(rows)
    names = [r[1] for r in rows]
    # Every fault the simulator offers has its end-to-end row (and passed it).
    for f in ws.FAULTS[1:]:
        assert any(n.startswith("sim: fault %s" % f) for n in names), f
    for shape in ("parts of 1 byte", "parts of 256 bytes, 61 00", "6C xx before every part"):
        assert any(shape in n for n in names), shape


class Broken(ws.Phone):
    """A wallet with three mistakes a wallet maker could make: it takes any
    protocol version, ignores Le, and keeps its counter in memory until the
    whole answer was read (so an abandoned answer's counter is used again)."""

    read_all = True

    def transceive(self, apdu):
        apdu = bytes(apdu)
        if apdu[:2] == b"\x80\xa0":
            apdu = apdu.replace(b"\x21\x01\x02", b"\x21\x01\x01", 1)
        if apdu[:2] in (b"\x00\xc0", b"\x80\xa0"):
            apdu = apdu[:-1] + b"\x00"
        return super().transceive(apdu)

    def _authorize(self, data, le, *rest):
        if not self.read_all:
            self.counter -= 1
        self.read_all = False
        return super()._authorize(data, le, *rest)

    def _chunk(self, le):
        r = super()._chunk(le)
        self.read_all = r[-2:] == b"\x90\x00"
        return r


def broken(issuer, **terms):
    return Broken(issuer, **terms)


def test_a_wallet_that_breaks_rules_fails_those_cases():
    lines = []
    rows = conformance.run(broken, only=["5.3", "5.5", "5.6"], out=lines.append)
    failed = sorted(r[1] for r in rows if not r[2])
    assert failed == sorted([
        "protocol version 02: 6A 81",
        "Le = 32 every time: parts of at most 32 bytes (or 6C)",
        "AUTHORIZE with Le = 1: at most 1 byte, or 6C",
        "counter strictly increases, an abandoned answer's is not reused",
    ]), "\n".join(lines)
    assert lines[-1] == "%d passed, 4 failed" % (len(rows) - 4)


class SloppyReference(ws.Phone):
    """A wallet with option 81 and two mistakes in it: its first part runs on
    past tag 35 (240 bytes, as in version 1), and it takes its counter back
    when the answer was not read to the end."""

    read_all = True

    def _authorize(self, data, le, byref=False, p1=0):
        if not self.read_all:
            self.counter -= 1
        self.read_all = False
        return super()._authorize(data, le, byref, p1)

    def _chunk(self, le):
        self._cut = None
        r = super()._chunk(le)
        self.read_all = r[-2:] == b"\x90\x00"
        return r


def test_by_reference_cases_tell_an_old_wallet_from_a_sloppy_one():
    """A wallet from before option 81 passes every 5.7 case (P1 01 is 6A 86 to
    it, and the terminal pays it as before); one that offers the option but
    gets it wrong fails exactly those cases."""
    lines = []
    rows = conformance.run(lambda issuer, **t: ws.Phone(issuer, by_reference=False, **t),
                           only=["5.7"], out=lines.append)
    assert rows and all(r[2] for r in rows), "\n".join(lines)
    rows = conformance.run(lambda issuer, **t: SloppyReference(issuer, **t), only=["5.7"],
                           out=lines.append)
    assert sorted(r[1] for r in rows if not r[2]) == sorted([
        "P1 01: the first part ends after tag 35 (109 bytes), 61 xx",
        "an answer read only up to tag 35: its counter is not reused"]), "\n".join(lines)


def test_cli_json_and_usage():
    r = subprocess.run([sys.executable, "-m", "host_tools", "conformance", "--only", "5.1", "--json"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(l) for l in r.stdout.splitlines()]
    assert [x["section"] for x in rows] == ["5.1"] * 3 and all(x["pass"] for x in rows)
    r = subprocess.run([sys.executable, "-m", "host_tools", "conformance", "--wallet", "pn532"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "real-reader" in r.stderr
