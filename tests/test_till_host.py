"""till.parse() under hypothesis in CPython (same source file as the firmware):
any bytes give a command tuple or TillError, never another exception; and what
the formatters produce stays one bounded line."""
import sys

from hypothesis import given, settings, strategies as st

from conftest import FIRMWARE

sys.path.insert(0, str(FIRMWARE))
from pos import till  # noqa: E402
from pos.till import TillError  # noqa: E402

REASONS = {"line-too-long", "empty-line", "bad-char", "unknown-command", "bad-args",
           "bad-amount", "bad-currency", "bad-reference"}


def _check(line):
    try:
        cmd = till.parse(line)
    except TillError as e:
        assert e.reason in REASONS
        return None
    assert cmd[0] in ("CHARGE", "STATUS", "CANCEL")
    return cmd


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes(line):
    _check(line)


WORDS = st.sampled_from([b"CHARGE", b"STATUS", b"CANCEL", b"0", b"1250", b"978", b"000",
                         b"REF-1", b"x" * 40, b"\r", b"\t", b"\xff", b"-1", b"0012"])


@settings(max_examples=2000, deadline=None)
@given(st.lists(WORDS, max_size=6), st.sampled_from([b" ", b"  "]))
def test_token_soup(words, sep):
    _check(sep.join(words))


REF_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./:"
REF = st.lists(st.sampled_from(REF_CHARS), min_size=1, max_size=till.MAX_REF).map(bytes)


@settings(max_examples=500, deadline=None)
@given(st.integers(1, till.MAX_AMOUNT), st.integers(1, 999), REF)
def test_charge_round_trip(amount, cur, ref):
    assert till.parse(b"CHARGE %d %03d %s" % (amount, cur, ref)) == ("CHARGE", amount, cur, ref)


@settings(max_examples=500, deadline=None)
@given(REF, st.integers(0, 0xFFFFFFFF), st.sampled_from(["STORAGE", "OVER_TAP_LIMIT", "TIMEOUT"]))
def test_result_lines_are_single_bounded_lines(ref, rid, why):
    for line in (till.approved(ref, rid), till.declined(ref, why, rid), till.declined(ref, why)):
        assert line.endswith(b"\n") and line.count(b"\n") == 1 and len(line) <= till.MAX_LINE + 1
        assert ref in line.split()
