"""Journal and unix flash device: unit tests in the unix port on real littlefs,
plus a host-side check that the image is plain littlefs (littlefs-python)."""
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
    data = (tmp_path / "host_check.img").read_bytes()
    assert len(data) == 64 * 4096
    ctx = littlefs.UserContext(len(data), bytearray(data))
    fs = littlefs.LittleFS(context=ctx, block_size=4096, block_count=64, mount=True)
    with fs.open("hello.txt", "r") as f:
        assert f.read() == "from the unix port"
    names = sorted(fs.listdir("journal"))
    assert "cursor" in names
    segs = [n for n in names if n.endswith(".seg")]
    # Decode the frames with the documented layout, independently of journal.py.
    rids = []
    for name in segs:
        with fs.open("journal/" + name, "rb") as f:
            blob = f.read()
        off = 0
        first = None
        while off < len(blob):
            magic, ver, n, rid, crc = struct.unpack_from("<BBHII", blob, off)
            assert (magic, ver) == (0xA5, 1)
            payload = blob[off + 12:off + 12 + n]
            assert zlib.crc32(payload, zlib.crc32(blob[off:off + 8])) == crc
            assert payload == b"payment %d" % (rid - 1)
            rids.append(rid)
            first = rid if first is None else first
            off += 12 + n
        assert int(name[:8], 16) == first  # a segment is named by its first id
    with fs.open("journal/cursor", "rb") as f:
        c = f.read()
    assert c[:4] == b"CUR1" and struct.unpack_from("<I", c, 4)[0] == 3
    assert zlib.crc32(c[:8]) == struct.unpack_from("<I", c, 8)[0]
    # Uploaded segments were deleted; everything after the cursor is there.
    assert rids == sorted(rids) and rids[-1] == 30
    assert set(range(4, 31)) <= set(rids)
