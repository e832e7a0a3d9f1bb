"""Runs every tests/mp/test_*.py inside the MicroPython unix port (heap capped at 128k)."""
from pathlib import Path

import pytest

from conftest import run_mp

MP_TESTS = sorted((Path(__file__).parent / "mp").glob("test_*.py"))


@pytest.mark.parametrize("script", MP_TESTS, ids=[p.stem for p in MP_TESTS])
def test_in_unix_port(script):
    r = run_mp(script)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "FAIL" not in r.stdout, out
    assert " passed, 0 failed" in r.stdout, out
