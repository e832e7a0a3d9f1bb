"""Shared fixtures: run firmware code in the real MicroPython unix port."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
SHARED = Path(os.environ.get("POS_SHARED", ROOT.parent / "shared"))
WYCHEPROOF = SHARED / "wycheproof"

# MicroPython scripts, run by test_firmware_unit.py inside the unix port, not by CPython.
collect_ignore = ["mp", "mp_board"]


def micropython_cmd():
    exe = os.environ.get("MICROPYTHON") or str(Path(sys.executable).with_name("micropython"))
    return exe


def run_mp(script, *args, heap="128k", path=(), timeout=300, input=None, cwd=None):
    """Run a MicroPython script (path or source text) in the unix port.

    firmware/ and tests/mp are on MICROPYPATH, plus any extra `path` entries.
    Returns the CompletedProcess (text mode)."""
    env = dict(os.environ)
    # ".frozen" first, as in the port's default path: asyncio and friends live there.
    mp_path = [".frozen"] + [str(p) for p in path] + [str(FIRMWARE), str(ROOT / "tests" / "mp")]
    env["MICROPYPATH"] = ":".join(mp_path)
    cmd = [micropython_cmd(), "-X", "heapsize=" + heap]
    if isinstance(script, Path) or (isinstance(script, str) and script.endswith(".py") and "\n" not in script):
        cmd.append(str(script))
    else:
        cmd += ["-c", script]
    cmd += [str(a) for a in args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                          input=input, cwd=cwd)


@pytest.fixture
def mp():
    return run_mp
