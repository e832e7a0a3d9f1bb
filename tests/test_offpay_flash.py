"""offpay flash: the partition table binary parses back, images for other
chips are refused before anything is written, and esptool's calls land on a
fake ESP32 ROM loader (tests/fakes/esp32_rom.py) as they would on a chip."""
import sys
from pathlib import Path

import pytest

from host_tools import flash, partitions

sys.path.insert(0, str(Path(__file__).parent / "fakes"))
from esp32_rom import FakeESP32  # noqa: E402


def _image(chip_id=0, size=0x20000):
    img = bytearray(b"\x5a" * size)
    img[0] = 0xE9
    img[1] = 0
    img[12] = chip_id
    img[13] = 0
    return bytes(img)


def test_partition_table_round_trip_and_layout():
    parts, blob = partitions.project_table()
    assert len(blob) == partitions.MAX_LEN
    assert partitions.decode(blob) == parts
    j, v, app = (partitions.find(parts, n) for n in ("journal", "vfs", "factory"))
    # An explicit vfs (so MicroPython >= 1.26 does not derive one) and the journal after it.
    assert v is not None and j.offset == v.end and j.end <= 4 * 1024 * 1024
    assert app.offset == 0x10000 and app.end <= v.offset
    bad = bytearray(blob)
    bad[5] ^= 1
    with pytest.raises(partitions.PartitionError):
        partitions.decode(bytes(bad))


def test_image_for_another_chip_is_refused(tmp_path):
    p = tmp_path / "s3.bin"
    p.write_bytes(_image(chip_id=9))
    with pytest.raises(flash.FlashError, match="ESP32-S3"):
        flash.check_image(p)
    p.write_bytes(b"not an image" * 4000)
    with pytest.raises(flash.FlashError, match="not an ESP firmware image"):
        flash.check_image(p)
    assert flash.main(["--port", "/dev/null", "--image", str(p)]) == 1


def test_esptool_writes_image_and_table_then_skips_what_is_there():
    with FakeESP32() as chip:
        chip.flash[0x300000:0x300004] = b"junk"  # a stale region the new layout must erase
        flash.write_image(chip.port, _image(), stub=False, connect_mode="no-reset")
        assert chip.errors == []
        assert partitions.decode(chip.flash[0x8000:0x8000 + partitions.MAX_LEN]) == partitions.project_table()[0]
        # The merged image carries its own table at 0x8000; the project's replaces it.
        img = _image()
        assert chip.flash[0x1000:0x8000] == img[:0x7000]
        assert chip.flash[0x8c00:0x21000] == img[0x7c00:]
        assert chip.flash[0x300000:0x300004] == b"\xff" * 4
        writes = sum(1 for op, _ in chip.log if op == 0x03)
        chip.log.clear()
        flash.write_image(chip.port, _image(), stub=False, connect_mode="no-reset")
        assert writes > 0 and sum(1 for op, _ in chip.log if op == 0x03) == 0  # nothing rewritten


def test_a_journal_with_payments_is_not_erased_by_a_new_table():
    with FakeESP32() as chip:
        chip.flash[0x300000:0x300004] = b"PJL1"
        with pytest.raises(flash.FlashError, match="holds payments"):
            flash.write_image(chip.port, _image(), stub=False, connect_mode="no-reset")
        assert chip.flash[0x300000:0x300004] == b"PJL1"
        assert chip.flash[0x8000:0x8002] == b"\xff\xff"  # nothing written


def test_no_chip_and_a_chip_that_stops_answering():
    assert flash.main(["--port", "/dev/does-not-exist", "--image", "nope.bin"]) == 1
    with FakeESP32(silent_after=2) as chip:
        with pytest.raises(flash.FlashError, match="stopped answering|esptool"):
            flash.write_image(chip.port, _image(), stub=False, connect_mode="no-reset")


def test_build_writes_a_manifest_of_every_file_and_its_hash(tmp_path):
    # offpay build --board esp32: xtensawin .mpy of every firmware and board
    # module (boards/modules.json, the one list), main.py as source, hashes.
    import hashlib
    import json
    from host_tools.build import build, load_manifest, sources
    out = build("esp32", tmp_path / "b")
    m = load_manifest(out)
    assert m["board"] == "esp32" and m["arch"] == "xtensawin" and m["version"]
    want = {("main.py" if rel.name == "main.py" else rel.with_suffix(".mpy").as_posix())
            for _, rel in sources("esp32")}
    assert set(m["files"]) == want and {"pos/service.mpy", "pos/console.mpy", "board.mpy"} <= want
    for rel, digest in m["files"].items():
        assert hashlib.sha256((out / rel).read_bytes()).hexdigest() == digest, rel
    assert (out / "pos" / "app.mpy").read_bytes()[:2] == b"M\x06"  # .mpy version 6
    assert json.loads((out / "manifest.json").read_text()) == m
