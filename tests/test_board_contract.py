"""The same method and value checks against both boards' Feedback, Wifi and
TillPort (tests/mp_board/board_contract.py, in the unix port; the ESP32 board's
modules over tests/fakes)."""
import socket

from conftest import ROOT, run_mp


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_both_boards_keep_the_same_contract(tmp_path, monkeypatch):
    monkeypatch.setenv("POS_ROOT", str(ROOT))
    monkeypatch.setenv("POS_TEST_TMP", str(tmp_path))
    monkeypatch.setenv("POS_TILL_PORT", str(_free_port()))
    r = run_mp(ROOT / "tests" / "mp_board" / "board_contract.py", heap="512k",
               path=[ROOT / "tests" / "fakes"], timeout=60)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "FAIL" not in r.stdout, out
    assert "4 passed, 0 failed" in r.stdout, out
