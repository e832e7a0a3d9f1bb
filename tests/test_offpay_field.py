"""A terminal from the field, on a desk: the virtual terminal (offpay
emulate's, the ESP32's 1 MiB journal) takes payments and meets a phone that
breaks the chaining rules and one that stops answering; a technician pulls
its logs over mpremote. Then, as issue 11 asks:

* `offpay replay upload` to the real receiver (host_tools/receiver), twice:
  the second run sends nothing and changes nothing;
* `offpay logs --dump`: the terminal's flash as `esptool read-flash` would
  dump it on an ESP32 (the project's partition table, the config in the vfs
  littlefs, the journal partition holding the terminal's own journal), with
  records tampered with and slipped in: each one flagged for what it is;
* `offpay replay session`: each recorded tap replays through a fresh emulated
  terminal with the field's outcome (a genuine approval as DEVICE_SIG), and a
  replay under another issuer key differs, and says so.
"""
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from host_tools import journal_dump, partitions, records
from host_tools import wallet_sim as ws
from host_tools.emulate import VirtualTerminal
from host_tools.emulator import Till
from host_tools.pn532_sim import PN532Sim

ROOT = Path(__file__).resolve().parents[1]
TID = "5445524d30303031"
NOW = int(time.time())


def offpay(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "host_tools"] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    d = tmp_path_factory.mktemp("field")
    iss = ws.Issuer(alg="ES256", kid=b"ISSUER01", not_before=NOW - 86400, not_after=NOW + 86400)
    cfg = {"terminal_id": TID, "merchant_id": "MARKET-7", "currency": 978, "issuers": [iss.config()],
           "removal_ms": 300, "charge_timeout_ms": 5000}
    (d / "cfg.json").write_text(json.dumps(cfg))
    # Real time: the slow phone is slow on the clock the terminal's relay bound counts.
    sim = PN532Sim(control_port=0, time_scale=1.0)
    phones = {"alice": ws.Phone(iss), "bob": ws.Phone(iss)}
    with VirtualTerminal(d / "vt", sim=sim, env={"POS_FLASH_BLOCKS": "320"}) as vt:
        r = offpay("provision", "--port", vt.port, "--config", d / "cfg.json")
        assert r.returncode == 0, r.stderr
        till = Till(vt.till_port)
        results = []

        def pay(phone, amount, ref):
            till.send("CHARGE %d 978 %s" % (amount, ref))
            sim.add_phone(phone)
            results.append(till.read())
            sim.remove_phone(phone)
            time.sleep(0.45)  # the field stays empty for removal_ms
        pay(phones["alice"], 250, "A1")
        pay(phones["alice"], 120, "A2")
        pay(phones["bob"], 990, "B1")
        pay(ws.Phone(iss, fault="sixc_data"), 300, "P1")  # 6C with data: chaining broken
        slow = ws.Phone(iss)
        slow.processing_us = 900000  # answers SELECT, then nothing within the relay bound
        pay(slow, 400, "S1")
        till.close()
        r = offpay("logs", "--port", vt.port, "--out", d / "logs.jsonl", "--raw-journal", d / "journal.bin")
        assert r.returncode == 0, r.stderr
    assert results == ["RESULT A1 APPROVED 1", "RESULT A2 APPROVED 2", "RESULT B1 APPROVED 3",
                       "RESULT P1 DECLINED PROTOCOL", "RESULT S1 DECLINED TIMEOUT"], results
    return {"dir": d, "issuer": iss, "cfg": cfg, "phones": phones,
            "lines": [json.loads(l) for l in (d / "logs.jsonl").read_text().splitlines()]}


def test_logs_from_the_running_terminal(field):
    pays = [l for l in field["lines"] if l["type"] == "payment"]
    assert [(p["rid"], p["reference"], p["amount"], p["ok"]) for p in pays] == \
        [(1, "A1", 250, True), (2, "A2", 120, True), (3, "B1", 990, True)]
    notes = [l["note"] for l in field["lines"] if l["type"] == "apdu" and "note" in l]
    assert any(n.startswith("TAP AUTHORIZE not answered within 600 ms") for n in notes), notes
    assert any(n.startswith("TAP PROTOCOL ref=P1") for n in notes), notes


# -- replay upload ----------------------------------------------------------------

def test_replay_upload_to_the_receiver_twice_is_a_no_op(field, tmp_path):
    from host_tools.receiver import testing
    db = "sqlite:///%s/rx.db" % tmp_path
    with testing.start_receiver(tmp_path, db, issuers=[field["issuer"].config()]) as rx:
        pair = rx.terminal_cert(TID).files
        args = ["replay", "upload", "--journal", field["dir"] / "journal.bin", "--url", rx.url + "/v1/upload",
                "--ca", rx.ca_pem, "--cert", pair["cert_pem"], "--key", pair["key_pem"]]
        r = offpay(*args)
        assert r.returncode == 0 and "uploaded records 1..3, receiver ack 3" in r.stdout, r.stdout + r.stderr
        first = offpay("ledger", "--db", db).stdout
        rows = [json.loads(l) for l in first.splitlines()]
        assert [(x["record_id"], x["reference"], x["status"]) for x in rows] == \
            [(1, "A1", "ok"), (2, "A2", "ok"), (3, "B1", "ok")], rows
        r = offpay(*args)
        assert r.returncode == 0 and "nothing to upload: the receiver holds every record up to 3" in r.stdout
        assert "uploaded" not in r.stdout
        assert offpay("ledger", "--db", db).stdout == first  # byte for byte, received_at included
        terms = [json.loads(l) for l in offpay("terminals", "--db", db).stdout.splitlines()]
        assert [(t["terminal_id"], t["ack"], t["conflicts"]) for t in terms] == [(TID, 3, 0)], terms
        # Another terminal's certificate: refused before anything is sent.
        other = rx.terminal_cert("5445524d30303032").files
        r = offpay(*args[:-4], "--cert", other["cert_pem"], "--key", other["key_pem"])
        assert r.returncode == 1 and "wrong terminal" in r.stderr, r.stderr


# -- logs from a raw flash dump ------------------------------------------------------

_FRAME = struct.Struct("<BBHII")
_BLOCK = struct.Struct("<4sIII")
BS = 4096


def _frame(rid, payload):
    head = struct.pack("<BBHI", 0xA5, 1, len(payload), rid)
    return head + struct.pack("<I", zlib.crc32(payload, zlib.crc32(head))) + payload


def _append(journal, recs):
    """The journal partition with recs [(rid, payload)] appended as the
    terminal appends them: into its newest block while they fit, then a new
    block (header: seq + 1, base = the record's id)."""
    j = bytearray(journal)
    ring = len(j) // BS - 2
    blocks = [(struct.unpack_from("<I", j, i * BS + 4)[0], i) for i in range(ring)
              if j[i * BS:i * BS + 4] == b"PJL1"]
    seq, cur = max(blocks)
    off = _end(j, cur)
    for rid, payload in recs:
        f = _frame(rid, payload)
        if off + len(f) > BS:
            cur, seq, off = cur + 1, seq + 1, _BLOCK.size
            head = struct.pack("<4sII", b"PJL1", seq, rid)
            j[cur * BS:cur * BS + 16] = head + struct.pack("<I", zlib.crc32(head))
        j[cur * BS + off:cur * BS + off + len(f)] = f
        off += len(f)
    return bytes(j)


def _end(j, block):
    off = _BLOCK.size
    while j[block * BS + off] != 0xFF:
        off += _FRAME.size + _FRAME.unpack_from(j, block * BS + off)[2]
    return off


def _signed(phone, amount, ttime, seq, cursor=0, ref=b"X"):
    """A record as a terminal writes it, both signatures genuine."""
    apdu, data = ws.authorize_apdu(bytes.fromhex(TID), b"MARKET-7", amount, 978, os.urandom(16), ttime, seq)
    ws.run_tap(phone, ws.SELECT_APDU)
    resp, sw = ws.run_tap(phone, apdu)
    assert sw == ws.SW_OK
    return records.encode_record(data, resp, ref, cursor)


def _esp32_dump(path, fs_files, journal):
    """A whole 4 MiB flash as `esptool read-flash 0 0x400000` reads it off an
    ESP32 flashed by `offpay flash`: the project's partition table at 0x8000,
    a (stand-in) app image, the vfs littlefs with the terminal's files, and
    the journal partition."""
    from littlefs import LittleFS
    parts, table = partitions.project_table()
    img = bytearray(b"\xff" * 0x400000)
    img[partitions.OFFSET:partitions.OFFSET + len(table)] = table
    app = partitions.find(parts, "factory")
    img[app.offset:app.offset + 4] = b"\xe9\x03\x02\x20"
    vfs, jp = partitions.find(parts, "vfs"), partitions.find(parts, "journal")
    fs = LittleFS(block_size=BS, block_count=vfs.size // BS)
    for name, data in fs_files.items():
        with fs.open(name, "wb") as f:
            f.write(data)
    img[vfs.offset:vfs.end] = fs.context.buffer
    assert len(journal) == jp.size  # the emulator ran with the ESP32's journal size
    img[jp.offset:jp.end] = journal
    Path(path).write_bytes(bytes(img))


def test_logs_from_an_esp32_flash_dump_flag_every_tampered_payment(field, tmp_path):
    from littlefs import LittleFS
    d, iss = field["dir"], field["issuer"]
    image = (d / "vt" / "flash.img").read_bytes()
    journal = image[journal_dump.UNIX_JOURNAL_OFFSET:]
    # The terminal's own files, off the emulated chip's littlefs (64 blocks).
    fs = LittleFS(block_size=BS, block_count=64, mount=False)
    fs.context.buffer = bytearray(image[:journal_dump.UNIX_JOURNAL_OFFSET])
    fs.mount()
    files = {n: fs.open(n, "rb").read() for n in fs.listdir("/") if n in ("config.json", "clock.bin")}
    assert "config.json" in files
    recs, _, _ = journal_dump.read_journal(d / "journal.bin", 0)
    assert [rid for rid, _ in recs] == [1, 2, 3]
    # Tampered with: A2's amount raised (its frame's CRC made good again).
    rec2 = bytearray(recs[1][1])
    at = rec2.find(b"\x24\x04" + struct.pack(">I", 120)) + 2  # the request's amount (tag 24)
    rec2[at:at + 4] = struct.pack(">I", 1200)  # within its limits: only the signature tells
    off = journal.find(recs[1][1]) - _FRAME.size
    tampered = bytearray(journal)
    tampered[off:off + _FRAME.size + len(rec2)] = _frame(2, bytes(rec2))
    # Slipped in: A1 again under a new id; and genuinely signed payments the
    # terminal would have declined (the wallet is real, the rules are not met).
    dave = ws.Phone(iss, not_after=NOW - 60)
    carol = ws.Phone(iss, tap_limit=500)
    erin = ws.Phone(iss, offline_limit=600)
    frank = ws.Phone(iss, counter=8)
    extra = [(4, recs[0][1]),                                   # duplicate of 1
             (5, _signed(dave, 100, NOW, 5)),                  # expired at its own time
             (6, _signed(carol, 900, NOW, 6)),                 # over the per-tap limit
             (7, _signed(erin, 400, NOW, 7)),                  # ok: 400 of 600 offline
             (8, _signed(erin, 300, NOW, 8)),                  # 700 since cursor 0: over 600
             (9, _signed(frank, 100, NOW, 9))]                 # counter 9
    frank.counter = 2
    extra.append((10, _signed(frank, 100, NOW, 10)))           # counter 3 after 9: a replay
    _esp32_dump(tmp_path / "dump.bin", files, _append(tampered, extra))
    r = offpay("logs", "--dump", tmp_path / "dump.bin", "--out", tmp_path / "l.jsonl")
    out = [json.loads(l) for l in (tmp_path / "l.jsonl").read_text().splitlines()]
    flags = {l["rid"]: l["flags"] for l in out if l["type"] == "payment"}
    assert r.returncode == 1, r.stderr  # flagged payments
    assert flags == {1: [], 2: ["device-signature"], 3: [], 4: ["duplicate"], 5: ["expired"],
                     6: ["over-tap-limit"], 7: [], 8: ["over-offline-limit"], 9: [],
                     10: ["counter-replay"]}, flags
    summary = out[-1]
    assert summary == {"type": "summary", "payments": 10, "flagged": 6, "uploaded_up_to": 0,
                       "terminal": TID}, summary
    assert not any(l["type"] == "problem" for l in out), out
    # A dump that stops short of the journal, or without a partition table: named.
    (tmp_path / "short.bin").write_bytes((tmp_path / "dump.bin").read_bytes()[:0x300000])
    r = offpay("logs", "--dump", tmp_path / "short.bin")
    assert r.returncode == 1 and "dump the whole flash" in r.stderr
    (tmp_path / "blank.bin").write_bytes(b"\xff" * 0x400000)
    r = offpay("logs", "--dump", tmp_path / "blank.bin")
    assert r.returncode == 1 and "no ESP32 partition table at 0x8000" in r.stderr


# -- replay session -------------------------------------------------------------------

def test_replay_session_reproduces_each_recorded_tap(field):
    d = field["dir"]
    r = offpay("replay", "session", "--log", d / "logs.jsonl", "--config", d / "cfg.json", "--list")
    listing = r.stdout.splitlines()
    assert r.returncode == 0, r.stdout + r.stderr
    # The terminal's 2 KB APDU ring keeps its newest exchanges: the fault
    # taps, and the approvals before them that still fit.
    n = len(listing)
    assert n >= 5 and all("field APPROVED" in l for l in listing[:n - 4]), listing
    assert all("3 exchanges, field PROTOCOL, 3.00 at " in l for l in listing[n - 4:n - 1]), listing
    assert listing[-1] == "tap %d: 1 exchanges, then silence, field TIMEOUT" % n, listing
    r = offpay("replay", "session", "--log", d / "logs.jsonl", "--config", d / "cfg.json")
    assert r.returncode == 0, r.stdout + r.stderr
    # A genuine approval cannot replay (its signature answers the field's
    # challenge): DEVICE_SIG. The chaining fault replays attempt by attempt as
    # the terminal retried it, and the silent phone times out as it did.
    assert r.stdout.splitlines() == \
        ["tap %d: field APPROVED, replay DEVICE_SIG: consistent" % k for k in range(1, n - 3)] + \
        ["tap %d: field PROTOCOL, replay PROTOCOL: consistent" % k for k in range(n - 3, n)] + \
        ["tap %d: field TIMEOUT, replay TIMEOUT: consistent" % n], r.stdout


def test_a_replay_that_ends_otherwise_says_so(field, tmp_path):
    # The desk's config holds another key under the field issuer's id: the
    # credential no longer verifies, which the field never saw.
    d = field["dir"]
    other = ws.Issuer(alg="ES256", kid=b"ISSUER01", not_before=NOW - 86400, not_after=NOW + 86400)
    (tmp_path / "cfg.json").write_text(json.dumps(dict(field["cfg"], issuers=[other.config()])))
    r = offpay("replay", "session", "--log", d / "logs.jsonl", "--config", tmp_path / "cfg.json", "--tap", "1")
    assert r.returncode == 1 and r.stdout.strip() == "tap 1: field APPROVED, replay ISSUER_SIG: DIFFERS", r.stdout


def _exchange(phone, capdu):
    """[(C-APDU, R-APDU)] of one command and its GET RESPONSE parts."""
    out = [(capdu, phone.transceive(capdu))]
    while out[-1][1][-2] == 0x61:
        c = b"\x00\xc0\x00\x00" + out[-1][1][-1:]
        out.append((c, phone.transceive(c)))
    return out


def _parts(phone, capdu):
    data = b""
    for _, r in _exchange(phone, capdu):
        data += r[:-2]
    return data, r[-2:]


def test_the_recorded_wallet_answers_as_the_replay_terminal_asks(field):
    # Credential by reference (PROTOCOL.md 5.7) depends on what a terminal
    # holds: the recorded phone answers the replay's terminal as the recorded
    # wallet would, from what it said in the field.
    from host_tools import replay
    iss = field["issuer"]
    auth = ws.authorize_apdu(bytes.fromhex(TID), b"MARKET-7", 250, 978, os.urandom(16), NOW, 1)[0]
    byref = auth[:2] + b"\x01" + auth[3:]
    for p1, cmd in ((1, byref), (0, auth)):
        phone = ws.Phone(iss)
        select = phone.transceive(ws.SELECT_APDU)
        assert select == bytes.fromhex("010201819000")  # the wallet offers option 81
        tap = {"exchanges": [(ws.SELECT_APDU, select)] + _exchange(phone, cmd), "field": "APPROVED",
               "silent": False}
        rp = replay.RecordedPhone(tap, sim=None)
        # Asked by reference in the field; the replay's terminal holds nothing
        # yet and asks for version 1: the version-1 answer the wallet would send.
        # Asked for version 1 in the field: option 81 is not offered again.
        assert rp.transceive(ws.SELECT_APDU) == (select if p1 else bytes.fromhex("0101019000"))
        data, sw = _parts(rp, auth)
        f = ws.parse_tlv(data)
        assert sw == ws.SW_OK and sorted(f) == [0x31, 0x32, 0x33, 0x34] and rp.diverged is None, (p1, f.keys())
        assert ws.parse_credential(f[0x31])["wallet_id"] == phone.wallet_id


def test_every_flag_of_a_payment_can_be_raised():
    # logs.verify on records made on the host, one rule broken each (the
    # dump test above covers the rest end to end).
    from host_tools import logs
    iss = ws.Issuer(alg="ES256", not_before=NOW - 86400, not_after=NOW + 86400)
    late = ws.Issuer(alg="ES256", not_before=NOW + 3600, not_after=NOW + 7200)
    stranger = ws.Issuer(alg="ES256")
    denied = ws.Phone(iss)
    cfg = {"terminal_id": TID, "issuers": [iss.config(), late.config()],
           "deny": {"wallets": [[iss.kid.hex(), denied.wallet_id.hex()]], "serials": []}}

    def other_terminal(phone):
        apdu, data = ws.authorize_apdu(bytes.fromhex("5445524d30303032"), b"M", 100, 978,
                                       os.urandom(16), NOW, 1)
        ws.run_tap(phone, ws.SELECT_APDU)
        resp, _ = ws.run_tap(phone, apdu)
        return records.encode_record(data, resp, b"T", 0)

    recs = [(1, _signed(ws.Phone(iss), 100, NOW, 1)),
            (2, _signed(denied, 100, NOW, 2)),
            (3, other_terminal(ws.Phone(iss))),
            (4, _signed(ws.Phone(stranger), 100, NOW, 4)),
            (5, _signed(ws.Phone(late), 100, NOW, 5)),
            (6, _signed(ws.Phone(iss, not_before=NOW + 60), 100, NOW, 6)),
            (7, _signed(ws.Phone(iss, currency=840), 100, NOW, 7)),
            (8, _signed(ws.Phone(iss, fault="bad_cred_sig"), 100, NOW, 8)),
            (9, b"\x41\x05junk")]
    got = {p["rid"]: p["flags"] for p in logs.verify(recs, {i["kid"]: i for i in cfg["issuers"]}, cfg)}
    assert got == {1: [], 2: ["deny-listed"], 3: ["terminal-mismatch"], 4: ["issuer-unknown"],
                   5: ["issuer-key-not-valid"], 6: ["not-yet-valid"], 7: ["currency"],
                   8: ["issuer-signature"], 9: ["unreadable"]}, got
