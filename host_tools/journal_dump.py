"""Read a terminal's payment journal from its flash image and re-verify every
payment, independently of the firmware: littlefs-python mounts the image, the
frames are decoded from their documented layout (firmware/pos/journal.py), the
records from PROTOCOL.md section 9, and both signatures are checked with
`cryptography` against the issuer keys of a terminal config.

    python -m host_tools journal --image var/demo/flash.img --config cfg.json
Exit 0 when every record is intact and verifies, 1 otherwise.
"""
import argparse
import json
import struct
import sys
import zlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from host_tools import wallet_sim as ws

_HEADER = struct.Struct("<BBHII")  # magic, version, length, record id, CRC-32


def read_records(image, block_size=4096, journal_dir="journal"):
    """[(rid, payload)] of every intact frame, plus [problems]."""
    import littlefs
    data = bytearray(Path(image).read_bytes())
    fs = littlefs.LittleFS(context=littlefs.UserContext(len(data), data), block_size=block_size,
                           block_count=len(data) // block_size, mount=True)
    out, problems = [], []
    for name in sorted(n for n in fs.listdir(journal_dir) if n.endswith(".seg")):
        with fs.open(journal_dir + "/" + name, "rb") as f:
            blob = f.read()
        off = 0
        while off + _HEADER.size <= len(blob):
            magic, ver, n, rid, crc = _HEADER.unpack_from(blob, off)
            payload = blob[off + 12:off + 12 + n]
            if (magic, ver) != (0xA5, 1) or len(payload) != n or \
                    zlib.crc32(payload, zlib.crc32(blob[off:off + 8])) != crc:
                problems.append("%s: bad frame at offset %d" % (name, off))
                break
            out.append((rid, payload))
            off += 12 + n
    return out, problems


def verify_signature(alg, key, message, sig):
    """ES256 (r||s) or RS256 (PKCS#1 v1.5) with `cryptography`: True or False."""
    try:
        if alg == "ES256":
            pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
            der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            pub.verify(der, message, ec.ECDSA(hashes.SHA256()))
        else:
            pub = rsa.RSAPublicNumbers(65537, int.from_bytes(key, "big")).public_key()
            pub.verify(sig, message, padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError):
        return False


def check_record(payload, issuers):
    """A dict describing the payment; 'ok' says whether both signatures verify."""
    rec = ws.parse_tlv(payload)
    req, resp, ref = ws.parse_tlv(rec[0x41]), ws.parse_tlv(rec[0x42]), rec[0x43]
    cred_raw = resp[0x31]
    cred = ws.parse_credential(cred_raw)
    counter = int.from_bytes(resp[0x32], "big")
    iss = issuers.get(cred["issuer_kid"].hex())
    body = cred_raw[:len(cred_raw) - len(ws.tlv(0x1F, cred["issuer_sig"]))]
    issuer_ok = iss is not None and verify_signature(iss["alg"], bytes.fromhex(iss["key"]),
                                            ws.CRED_DOMAIN + body, cred["issuer_sig"])
    device_ok = verify_signature("ES256", cred["device_key"],
                        ws.auth_message(rec[0x41], counter, resp[0x33][0], cred_raw), resp[0x34])
    return {"reference": ref.decode(errors="replace"), "amount": int.from_bytes(req[0x24], "big"),
            "currency": int.from_bytes(req[0x25], "big"), "wallet": cred["wallet_id"].hex(),
            "counter": counter, "seq": int.from_bytes(req[0x28], "big"),
            "time": int.from_bytes(req[0x27], "big"), "ok": issuer_ok and device_ok,
            "why": "" if issuer_ok and device_ok else ("issuer signature" if not issuer_ok else "device signature")}


def main(argv=None, out=print):
    ap = argparse.ArgumentParser(prog="host_tools journal", description=__doc__.split("\n\n")[0])
    ap.add_argument("--image", required=True, help="the terminal's littlefs flash image")
    ap.add_argument("--config", required=True, help="terminal config with the issuer keys")
    a = ap.parse_args(argv)
    try:
        issuers = {i["kid"]: i for i in json.loads(Path(a.config).read_text())["issuers"]}
        records, problems = read_records(a.image)
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
    out("%d records, %d problems" % (len(records), bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
