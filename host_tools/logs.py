"""`offpay logs`: a terminal's journal and event log as JSON lines, every
payment re-verified on the host and flagged when it fails.

    offpay logs --port /dev/ttyUSB0 [--out logs.jsonl] [--raw-journal journal.bin]
    esptool read-flash 0 0x400000 dump.bin        # a dead terminal's whole flash
    offpay logs --dump dump.bin [--config cfg.json]

From a live terminal (mpremote's transport, read while the app runs): its
config (for the issuer keys), the journal partition block by block (erased
blocks are skipped on the device), the console's event log and the recent
APDU exchanges. From a raw flash dump: the partition table at 0x8000 says where
`journal` and `vfs` are; the config comes from the dump's littlefs file system
(littlefs-python) unless --config is given.

Each payment line: {"type": "payment", "rid", "reference", "amount",
"currency", "wallet", "counter", "seq", "time", "issuer", "ok", "flags": [...]};
flags: "issuer-signature", "device-signature", "issuer-unknown",
"issuer-key-not-valid" and "expired"/"not-yet-valid" (against the record's
own time), "currency", "over-tap-limit", "over-offline-limit" (the wallet's
verified spend since the record's upload cursor), "duplicate" (the same
issuer, wallet and counter twice), "counter-replay" (a counter below the
wallet's highest before it), "deny-listed" (on the config's deny list),
"terminal-mismatch" (another terminal id than the config's), "unreadable".
Then {"type": "event", "line"}, {"type": "apdu", "t", "c", "r"} or
{"type": "apdu", "t", "note"} (pos.apdulog: exchanges and the terminal's
TAP lines, in order), {"type": "problem", "what"} and one {"type": "summary"}.
Exit status: 0 every payment verifies, 1 a payment is flagged or reading
failed, 2 usage.
"""
import argparse
import base64
import json
import sys
import tempfile
from pathlib import Path

from host_tools import device, journal_dump, partitions
from host_tools.progress import bar
from host_tools.records import RecordError, parse_credential, parse_record

# The journal partition in 512-byte pieces, only those not erased: a running
# terminal's heap has no 4 KB to spare (nor the 5.5 KB of a block's base64).
_PULL = """
import sys, binascii
c = sys.modules.get('pos.console')
dev = c.hooks.get('journal_dev') if c else None
if dev is None:
    try:
        import esp32
        dev = esp32.Partition.find(esp32.Partition.TYPE_DATA, label='journal')[0]
    except ImportError:
        import flash
        dev = flash.Partition(flash.device, flash.FS_BLOCKS, flash.device.blocks - flash.FS_BLOCKS)
n = dev.ioctl(4, 0)
bs = dev.ioctl(5, 0)
b = bytearray(512)
ff = b'\\xff' * 512
tick = getattr(c, 'tick', None) if c else None
print('BLOCKS', n, bs)
for i in range(n):
    if tick:
        tick()  # the watchdog: a full journal takes longer than its timeout
    for o in range(0, bs, 512):
        dev.readblocks(i, b, o)
        if b != ff:
            print('C', i, o, binascii.b2a_base64(b).decode().strip())
    print('K', i)
"""

_EVENTS = """
import sys
c = sys.modules.get('pos.console')
if c and c.current:
    for l in c.current.recent():
        print('L', repr(l))
a = sys.modules.get('pos.apdulog')
if a and a.current:
    for e in a.current.entries():
        print('A', repr(e))
"""


class LogsError(Exception):
    pass


def _deny(cfg):
    d = (cfg or {}).get("deny") or {}
    wallets = {(str(k).lower(), str(w).lower()) for k, w in
               (e for e in d.get("wallets", []) if isinstance(e, (list, tuple)) and len(e) == 2)}
    return wallets, {str(x).lower() for x in d.get("serials", [])}


def verify(records, issuers, cfg=None, progress=None):
    """Payment dicts (with flags) for [(rid, payload)] in record-id order.

    Each record is judged on its own (signatures; the issuer key's and the
    credential's validity at the record's own time; currency; per-tap limit;
    the config's deny list and terminal id) and against the records before
    it: the same (issuer, wallet, counter) again is "duplicate", a counter
    below the wallet's highest so far "counter-replay", and the verified
    spend of the wallet since the record's upload cursor (tag 44) over the
    credential's offline limit "over-offline-limit", as the receiver counts
    it (docs/upload.md section 5)."""
    out = []
    seen = {}
    top = {}       # (kid, wallet) -> highest counter so far
    spends = {}    # (kid, wallet) -> [(rid, amount)] of verified payments
    deny_w, deny_s = _deny(cfg)
    tid = (cfg or {}).get("terminal_id")
    for n, (rid, payload) in enumerate(records):
        if progress:
            progress(n + 1)
        try:
            rec = parse_record(payload)
            cred = parse_credential(rec["credential"])
            r = journal_dump.check_record(payload, issuers)
        except (RecordError, KeyError, IndexError, ValueError) as e:
            out.append({"type": "payment", "rid": rid, "ok": False, "flags": ["unreadable"], "why": str(e)})
            continue
        flags = []
        kid = cred["issuer_kid"].hex()
        iss = issuers.get(kid)
        t = rec["time"]
        if iss is None:
            flags.append("issuer-unknown")
            if r["why"] == "device signature":
                flags.append("device-signature")
        else:
            if not r["ok"]:
                flags.append("issuer-signature" if r["why"] == "issuer signature" else "device-signature")
            if not iss["not_before"] <= t <= iss["not_after"]:
                flags.append("issuer-key-not-valid")
        if t < cred["not_before"]:
            flags.append("not-yet-valid")
        if t > cred["not_after"]:
            flags.append("expired")
        if rec["currency"] != cred["currency"]:
            flags.append("currency")
        if rec["amount"] > cred["tap_limit"]:
            flags.append("over-tap-limit")
        wallet = (kid, cred["wallet_id"].hex())
        if wallet in deny_w or kid + cred["serial"].hex() in deny_s:
            flags.append("deny-listed")
        if tid and rec["terminal_id"].hex() != str(tid).lower():
            flags.append("terminal-mismatch")
        key = wallet + (rec["counter"],)
        if key in seen:
            flags.append("duplicate")
        elif rec["counter"] < top.get(wallet, -1):
            flags.append("counter-replay")
        seen[key] = rid
        top[wallet] = max(top.get(wallet, -1), rec["counter"])
        if r["ok"] and iss is not None:
            mine = spends.setdefault(wallet, [])
            mine.append((rid, rec["amount"]))
            if rec["cursor"] is not None and \
                    sum(a for i, a in mine if i > rec["cursor"]) > cred["offline_limit"]:
                flags.append("over-offline-limit")
        r.pop("why", None)
        r.update({"type": "payment", "rid": rid, "issuer": kid, "ok": not flags, "flags": flags})
        out.append(r)
    return out


def _journal_records(blob):
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(blob)
        f.flush()
        return journal_dump.read_journal(f.name, 0)


def from_dump(path, config=None):
    """(config dict or None, journal bytes, [problems]) of a raw flash dump."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise LogsError("dump %s: %s" % (path, e.strerror or e))
    try:
        parts = partitions.decode(data[partitions.OFFSET:partitions.OFFSET + partitions.MAX_LEN])
    except partitions.PartitionError as e:
        raise LogsError("%s: no ESP32 partition table at 0x8000 (%s): a whole-flash dump "
                        "(esptool read-flash 0 ALL) is needed" % (path, e))
    jp = partitions.find(parts, "journal")
    if jp is None:
        raise LogsError("%s: the partition table has no journal partition" % path)
    if jp.end > len(data):
        raise LogsError("%s ends at 0x%x, before the journal partition does (0x%x): dump the "
                        "whole flash" % (path, len(data), jp.end))
    cfg = config
    problems = []
    vfs = partitions.find(parts, "vfs")
    if cfg is None and vfs is not None and vfs.end <= len(data):
        try:
            from littlefs import LittleFS
            fs = LittleFS(block_size=4096, block_count=vfs.size // 4096, mount=False)
            fs.context.buffer = bytearray(data[vfs.offset:vfs.end])
            fs.mount()
            with fs.open("config.json", "r") as f:
                cfg = json.loads(f.read())
        except Exception as e:  # noqa: any littlefs failure: the config is optional here
            problems.append("no config in the dump's file system (%s): give --config" % (e,))
    return cfg, data[jp.offset:jp.end], problems


def from_device(port, progress=None):
    """(config dict or None, journal bytes, events, apdus) pulled over the
    console; progress(blocks done, total) as the journal's blocks arrive."""
    buf = bytearray()
    state = {"start": 0, "blocks": 0, "total": None}

    def consume(b):
        buf.extend(b)
        if b != b"\n" or not progress:
            return
        line = bytes(buf[state["start"]:]).split()
        state["start"] = len(buf)
        if line[:1] == [b"BLOCKS"] and len(line) == 3:
            state["total"] = int(line[1])
        elif line[:1] == [b"K"]:
            state["blocks"] += 1
            progress(state["blocks"], state["total"])

    with device.Session(port, timeout=20) as s:
        try:
            cfg = json.loads(s.read(s.paths["config"]))
        except (device.DeviceError, ValueError):
            cfg = None
        s.exec(_PULL, timeout=120, consumer=consume)
        out = buf.decode(errors="replace")
        ev = s.exec(_EVENTS, timeout=30)
    n = bs = 0
    done = set()
    blob = bytearray()
    for line in out.splitlines():
        p = line.split()
        if p[:1] == ["BLOCKS"] and len(p) == 3:
            n, bs = int(p[1]), int(p[2])
            blob = bytearray(b"\xff" * (n * bs))
        elif p[:1] == ["C"] and len(p) == 4 and blob:
            piece = base64.b64decode(p[3])
            at = int(p[1]) * bs + int(p[2])
            if not 0 <= at <= len(blob) - len(piece) or len(piece) > 512:
                raise LogsError("the terminal sent a journal piece outside its partition: %r" % line[:60])
            blob[at:at + len(piece)] = piece
        elif p[:1] == ["K"] and len(p) == 2:
            done.add(int(p[1]))
    if not n or len(done) != n:
        raise LogsError("the journal did not come over whole (%d of %d blocks)" % (len(done), n))
    import ast
    events = [ast.literal_eval(l[2:]) for l in ev.splitlines() if l.startswith("L ")]
    apdus = [ast.literal_eval(l[2:]) for l in ev.splitlines() if l.startswith("A ")]
    return cfg, bytes(blob), events, apdus


def main(argv=None):
    ap = argparse.ArgumentParser(prog="offpay logs", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 all verified, 1 flagged or failed, 2 usage")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--port", help="a live terminal's serial port")
    src.add_argument("--dump", help="a raw whole-flash dump (esptool read-flash 0 0x400000 dump.bin)")
    ap.add_argument("--config", help="the terminal's config JSON (for the issuer keys)")
    ap.add_argument("--out", help="write the JSON lines here (default stdout)")
    ap.add_argument("--raw-journal", help="also save the journal partition's bytes here (for offpay replay)")
    a = ap.parse_args(argv)
    events, apdus = [], []
    try:
        cfg = json.loads(Path(a.config).read_text()) if a.config else None
        if a.dump:
            cfg, blob, problems = from_dump(a.dump, cfg)
        else:
            with bar("journal blocks", None, unit="blocks") as advance:
                dcfg, blob, events, apdus = from_device(a.port, advance)
            cfg = cfg or dcfg
            problems = [] if cfg else ["the terminal has no readable config: give --config"]
        records, cursor, jp = _journal_records(blob)
    except (LogsError, device.DeviceError, OSError, ValueError) as e:
        print("logs failed: %s" % (e,), file=sys.stderr)
        return 1
    if a.raw_journal:
        Path(a.raw_journal).write_bytes(blob)
    issuers = {i["kid"]: i for i in (cfg or {}).get("issuers", [])}
    with bar("re-verify", len(records), unit="records") as advance:
        lines = verify(records, issuers, cfg, advance)
    lines += [{"type": "event", "line": l} for l in events]
    lines += [dict(type="apdu", **e) if isinstance(e, dict) else {"type": "apdu", "entry": e} for e in apdus]
    lines += [{"type": "problem", "what": p} for p in problems + jp]
    flagged = sum(1 for l in lines if l["type"] == "payment" and not l["ok"])
    lines.append({"type": "summary", "payments": len(records), "flagged": flagged,
                  "uploaded_up_to": cursor, "terminal": (cfg or {}).get("terminal_id")})
    text = "".join(json.dumps(l, sort_keys=True) + "\n" for l in lines)
    if a.out:
        Path(a.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 1 if flagged or jp else 0


if __name__ == "__main__":
    sys.exit(main())
