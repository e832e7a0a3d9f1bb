"""Journal and unix flash device: unit tests in the unix port on the emulated
NOR chip, plus host-side checks of the image: littlefs-python reads its file
system, host_tools/journal_dump.py its journal."""
import struct
import zlib

import pytest

from conftest import ROOT, run_mp

MP = ROOT / "tests" / "mp_board"
BOARD = ROOT / "boards" / "unix"


def _run(script, tmp_path, monkeypatch):
    monkeypatch.setenv("POS_TEST_TMP", str(tmp_path))
    for k in ("POS_FLASH_CUT_AT", "POS_FLASH_CUT_MODE", "POS_FLASH_CUT_TORN"):
        monkeypatch.delenv(k, raising=False)
    r = run_mp(MP / script, path=[BOARD], timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert "FAIL" not in r.stdout, out
    assert " passed, 0 failed" in r.stdout, out
    return r


def test_journal_in_unix_port(tmp_path, monkeypatch):
    r = _run("journal_unit.py", tmp_path, monkeypatch)
    for line in r.stdout.splitlines():
        if line.startswith("BENCH"):
            print(line)


def test_flash_device_in_unix_port(tmp_path, monkeypatch):
    _run("flash_unit.py", tmp_path, monkeypatch)


def test_host_tool_reads_the_image(tmp_path, monkeypatch):
    littlefs = pytest.importorskip("littlefs")
    _run("flash_unit.py", tmp_path, monkeypatch)
    path = tmp_path / "host_check.img"
    data = path.read_bytes()
    assert len(data) == (64 + 8) * 4096
    # The first 64 blocks are plain littlefs: what provisioning writes.
    fs = littlefs.LittleFS(context=littlefs.UserContext(64 * 4096, bytearray(data[:64 * 4096])),
                           block_size=4096, block_count=64, mount=True)
    with fs.open("hello.txt", "r") as f:
        assert f.read() == "from the unix port"
    # The rest is the raw journal; the host tool decodes it from the documented
    # layout, independently of firmware/pos/journal.py.
    from host_tools import journal_dump
    records, cursor, problems = journal_dump.read_journal(path, offset=64 * 4096)
    assert problems == [] and cursor == 3
    rids = [rid for rid, _ in records]
    assert rids == list(range(1, 301))
    assert all(p == b"payment %d" % (rid - 1) for rid, p in records)
    # Block 0 opened first: header b"PJL1", seq 1, base id 1, CRC-32 of those.
    head = data[64 * 4096:64 * 4096 + 16]
    assert head[:12] == b"PJL1" + struct.pack("<II", 1, 1)
    assert struct.unpack_from("<I", head, 12)[0] == zlib.crc32(head[:12])
