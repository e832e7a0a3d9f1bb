"""Read a terminal's payment journal from a flash image and re-verify every
payment, independently of the firmware: blocks and frames are decoded from
their documented layout (firmware/pos/journal.py), the records from
PROTOCOL.md section 9, and both signatures are checked with `cryptography`
against the issuer keys of a terminal config.

    python -m host_tools journal --image var/demo/flash.img --config cfg.json
    esptool.py read_flash 0x300000 0x100000 journal.bin   # an ESP32's partition
    python -m host_tools journal --image journal.bin --offset 0 --config cfg.json
Exit 0 when every record is intact and verifies, 1 otherwise.
"""
import argparse
import json
import struct
import sys
import zlib
from pathlib import Path

from host_tools import wallet_sim as ws
# Shared with the acquirer's receiver; verify_signature is also this module's API.
from host_tools.records import device_message, parse_credential, parse_record, verify_signature

_HEADER = struct.Struct("<BBHII")  # magic, version, length, record id, CRC-32
_BLOCK = struct.Struct("<4sIII")  # b"PJL1", seq, base id, CRC-32
# The emulated chip's partition table (boards/unix/flash.py): 64 blocks of
# littlefs, then the journal.
UNIX_JOURNAL_OFFSET = 64 * 4096


def _frames(blob, start, magic):
    # (rid, payload) of the valid frames from `start`, and the offset where
    # they stop plus why (None: erased space).
    out = []
    off = start
    while off + _HEADER.size <= len(blob) and blob[off] != 0xFF:
        m, ver, n, rid, crc = _HEADER.unpack_from(blob, off)
        payload = blob[off + 12:off + 12 + n]
        if (m, ver) != (magic, 1) or len(payload) != n or \
                zlib.crc32(payload, zlib.crc32(blob[off:off + 8])) != crc:
            return out, off, "bad frame"
        out.append((rid, payload))
        off += 12 + n
    if any(b != 0xFF for b in blob[off:]):
        return out, off, "data after the last frame"
    return out, off, None


def read_journal(image, offset=UNIX_JOURNAL_OFFSET, block_size=4096):
    """([(rid, payload)] of every intact record in id order, cursor, [problems])."""
    data = Path(image).read_bytes()[offset:]
    nblocks = len(data) // block_size
    if nblocks < 5:
        raise ValueError("%s: no journal partition at offset %d" % (image, offset))
    blocks = [data[i * block_size:(i + 1) * block_size] for i in range(nblocks)]
    ring, problems, records = blocks[:-2], [], []
    used = []
    for i, b in enumerate(ring):
        magic, seq, base, crc = _BLOCK.unpack_from(b)
        if magic == b"PJL1" and seq and zlib.crc32(b[:12]) == crc:
            used.append((seq, i))
        elif any(x != 0xFF for x in b):
            problems.append("block %d: no valid block header" % i)
    for seq, i in sorted(used):
        frames, off, why = _frames(ring[i], _BLOCK.size, 0xA5)
        records += frames
        if why:
            problems.append("block %d: %s at offset %d" % (i, why, off))
    cursor = 0
    for k, b in enumerate(blocks[-2:]):
        frames, off, why = _frames(b, 0, 0xC5)
        cursor = max([cursor] + [rid for rid, _ in frames])
        if why:
            problems.append("cursor block %d: %s at offset %d" % (k, why, off))
    rids = [rid for rid, _ in records]
    if rids != sorted(set(rids)):
        problems.append("record ids out of order")
    return records, cursor, problems


def read_records(image, offset=UNIX_JOURNAL_OFFSET, block_size=4096):
    """[(rid, payload)] of every intact record, plus [problems]."""
    records, _, problems = read_journal(image, offset, block_size)
    return records, problems


def check_record(payload, issuers):
    """A dict describing the payment; 'ok' says whether both signatures verify."""
    rec = parse_record(payload)
    cred = parse_credential(rec["credential"])
    iss = issuers.get(cred["issuer_kid"].hex())
    issuer_ok = iss is not None and verify_signature(iss["alg"], bytes.fromhex(iss["key"]),
                                                     cred["signed"], cred["issuer_sig"])
    device_ok = verify_signature("ES256", cred["device_key"], device_message(rec), rec["device_sig"])
    return {"reference": rec["reference"].decode(errors="replace"), "amount": rec["amount"],
            "currency": rec["currency"], "wallet": cred["wallet_id"].hex(),
            "counter": rec["counter"], "seq": rec["seq"],
            "time": rec["time"], "ok": issuer_ok and device_ok,
            "why": "" if issuer_ok and device_ok else ("issuer signature" if not issuer_ok else "device signature")}


def main(argv=None, out=print):
    ap = argparse.ArgumentParser(prog="offpay journal", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 every record intact and verified, 1 otherwise, 2 usage")
    ap.add_argument("--image", required=True, help="a flash image: the emulator's, or a dumped partition")
    ap.add_argument("--offset", type=lambda v: int(v, 0), default=UNIX_JOURNAL_OFFSET,
                    help="where the journal partition starts in the image (default %d, the "
                         "emulated terminal's; 0 for a dump of the partition alone)" % UNIX_JOURNAL_OFFSET)
    ap.add_argument("--config", required=True, help="terminal config with the issuer keys")
    a = ap.parse_args(argv)
    try:
        issuers = {i["kid"]: i for i in json.loads(Path(a.config).read_text())["issuers"]}
        records, cursor, problems = read_journal(a.image, a.offset)
    except (OSError, ValueError, KeyError) as e:
        print("journal: %s" % (e,), file=sys.stderr)
        return 1
    bad = len(problems)
    for p in problems:
        out("PROBLEM " + p)
    for rid, payload in records:
        try:
            r = check_record(payload, issuers)
        except (ws.TLVError, KeyError, IndexError) as e:
            out("%6d  unreadable record: %s" % (rid, e))
            bad += 1
            continue
        bad += not r["ok"]
        out("%6d  %-10s %7d.%02d %03d  wallet %s  counter %d  seq %d  %s" % (
            rid, r["reference"], r["amount"] // 100, r["amount"] % 100, r["currency"],
            r["wallet"][:12], r["counter"], r["seq"], "verified" if r["ok"] else "FAILED " + r["why"]))
    out("%d records (%d uploaded), %d problems" % (len(records), sum(r <= cursor for r, _ in records), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
