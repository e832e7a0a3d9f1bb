"""Runs every tests/mp/test_*.py inside the MicroPython unix port (heap capped at 128k)."""
from pathlib import Path

import pytest

from conftest import run_mp

MP_TESTS = sorted((Path(__file__).parent / "mp").glob("test_*.py"))


@pytest.mark.parametrize("script", MP_TESTS, ids=[p.stem for p in MP_TESTS])
def test_in_unix_port(script):
    # A script may ask for a bigger heap on its first line ("# heap: 512k"), e.g.
    # when it compiles many firmware modules from source, which a device never does.
    first = script.read_text().split("\n", 1)[0]
    heap = first.split(":", 1)[1].split()[0] if first.startswith("# heap:") else "128k"
    r = run_mp(script, heap=heap)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "FAIL" not in r.stdout, out
    assert " passed, 0 failed" in r.stdout, out
