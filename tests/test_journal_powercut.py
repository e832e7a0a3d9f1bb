"""Power-cut sweep for the payment journal on raw NOR flash (the test that matters most).

For every program/erase op k of a workload (appends across block switches and
a wrap of the ring, block header programs, erases of uploaded blocks, cursor
frames and the switch to the other cursor block), a fresh process runs
the workload on the flash image and is SIGKILLed at op k (the op is dropped,
or half-applied in the torn variant).  The next process remounts the same
image and checks: every acknowledged record is present and intact, nothing
partial or foreign is returned, the cursor is the old or the new value, the
id of a new append is fresh and the journal still takes appends.
"""
import os
from pathlib import Path

import pytest

from conftest import ROOT, run_mp

SCRIPT = ROOT / "tests" / "mp_board" / "powercut.py"
BOARD = ROOT / "boards" / "unix"


def _step(monkeypatch, **env):
    for k in ("POS_STEP", "POS_STEP_VERIFY", "POS_FLASH_CUT_AT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, str(v))
    return run_mp(SCRIPT, path=[BOARD], timeout=60)


@pytest.mark.parametrize("torn", [False, True], ids=["dropped-op", "torn-op"])
def test_power_cut_at_every_flash_op(tmp_path, monkeypatch, torn):
    monkeypatch.setenv("POS_TEST_TMP", str(tmp_path))
    monkeypatch.setenv("POS_FLASH_CUT_MODE", "exit")
    monkeypatch.setenv("POS_FLASH_CUT_TORN", "1" if torn else "0")
    r = _step(monkeypatch, POS_STEP="base")
    assert r.returncode == 0 and "BASE" in r.stdout, r.stdout + r.stderr
    k = 1
    killed = 0
    while True:
        r = _step(monkeypatch, POS_STEP="run", POS_STEP_VERIFY=int(k > 1), POS_FLASH_CUT_AT=k)
        out = r.stdout + r.stderr
        if k > 1:
            assert "VERIFIED" in r.stdout, "after cut at op %d:\n%s" % (k - 1, out)
        if r.returncode == 0:
            assert "COMPLETED" in r.stdout, out
            total = int(r.stdout.split("COMPLETED")[1].split()[0])
            break
        # The device killed the process in the middle of a flash op.
        assert r.returncode == -9, "cut at op %d: rc=%s\n%s" % (k, r.returncode, out)
        killed += 1
        k += 1
        assert k < 2000, "workload never completes"
    r = _step(monkeypatch, POS_STEP_VERIFY=1)
    assert r.returncode == 0 and "VERIFIED" in r.stdout, r.stdout + r.stderr
    assert killed == total >= 80, (killed, total)
