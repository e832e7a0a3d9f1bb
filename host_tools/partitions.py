"""The ESP32 partition table: boards/esp32/partitions.csv to the binary the
bootloader reads at 0x8000, and back.

No maintained PyPI package ships ESP-IDF's gen_esp32part.py, so this is a
small encoder of the same documented format, tested by parsing its output
back (tests/test_offpay_flash.py): 32-byte entries `<2sBBLL16sL` (magic
AA 50, type, subtype, offset, size, label, flags), then an MD5 entry (EB EB,
14 x FF, MD5 of the entries), padded with FF to 0xC00 bytes.
"""
import hashlib
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT / "boards" / "esp32" / "partitions.csv"
OFFSET = 0x8000          # where the bootloader looks for the table
TABLE_SIZE = 0x1000      # the flash sector the table occupies
MAX_LEN = 0xC00
_ENTRY = struct.Struct("<2sBBLL16sL")
_MAGIC = b"\xaa\x50"
_MD5 = b"\xeb\xeb" + b"\xff" * 14
TYPES = {"app": 0x00, "data": 0x01}
SUBTYPES = {0x00: {"factory": 0x00, "test": 0x20, **{"ota_%d" % i: 0x10 + i for i in range(16)}},
            0x01: {"ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
                   "efuse": 0x05, "undefined": 0x06, "fat": 0x81, "spiffs": 0x82, "littlefs": 0x83}}


class PartitionError(ValueError):
    pass


class Partition:
    def __init__(self, name, type, subtype, offset, size, flags=0):
        self.name, self.type, self.subtype = name, type, subtype
        self.offset, self.size, self.flags = offset, size, flags

    @property
    def end(self):
        return self.offset + self.size

    def __eq__(self, o):
        return (self.name, self.type, self.subtype, self.offset, self.size, self.flags) == \
               (o.name, o.type, o.subtype, o.offset, o.size, o.flags)

    def __repr__(self):
        return "Partition(%r, %d, 0x%x, 0x%x, 0x%x)" % (self.name, self.type, self.subtype,
                                                        self.offset, self.size)


def _int(s):
    s = s.strip()
    mult = 1
    if s[-1:].upper() in ("K", "M"):
        mult = 1024 if s[-1].upper() == "K" else 1024 * 1024
        s = s[:-1]
    return int(s, 0) * mult


def parse_csv(text):
    """Partitions of an ESP-IDF partition CSV (explicit offsets, or none to follow on)."""
    out = []
    nxt = OFFSET + TABLE_SIZE
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        f = [x.strip() for x in (line + ",,,,,").split(",")]
        try:
            ptype = TYPES[f[1]] if f[1] in TYPES else _int(f[1])
            sub = SUBTYPES.get(ptype, {}).get(f[2])
            sub = _int(f[2]) if sub is None else sub
            align = 0x10000 if ptype == 0 else 0x1000
            offset = _int(f[3]) if f[3] else (nxt + align - 1) // align * align
            size = _int(f[4])
        except (ValueError, IndexError, KeyError) as e:
            raise PartitionError("line %d: %s" % (n, e))
        flags = 1 if "encrypted" in f[5] else 0
        out.append(Partition(f[0], ptype, sub, offset, size, flags))
        nxt = offset + size
    check(out)
    return out


def check(parts, flash_size=None):
    names = [p.name for p in parts]
    if len(set(names)) != len(names):
        raise PartitionError("partition names must be unique")
    last = OFFSET + TABLE_SIZE
    for p in sorted(parts, key=lambda p: p.offset):
        if len(p.name.encode()) > 16:
            raise PartitionError("%s: label longer than 16 bytes" % p.name)
        if p.offset < last:
            raise PartitionError("%s at 0x%x overlaps what comes before (ends 0x%x)" % (p.name, p.offset, last))
        if p.offset % (0x10000 if p.type == 0 else 0x1000):
            raise PartitionError("%s: offset 0x%x is not aligned" % (p.name, p.offset))
        last = p.end
    if flash_size is not None and last > flash_size:
        raise PartitionError("the partitions end at 0x%x, beyond the 0x%x-byte flash" % (last, flash_size))


def encode(parts):
    body = b"".join(_ENTRY.pack(_MAGIC, p.type, p.subtype, p.offset, p.size,
                                p.name.encode().ljust(16, b"\x00"), p.flags) for p in parts)
    body += _MD5 + hashlib.md5(body).digest()
    if len(body) > MAX_LEN:
        raise PartitionError("too many partitions")
    return body + b"\xff" * (MAX_LEN - len(body))


def decode(blob):
    """Partitions of a binary table (e.g. read from 0x8000 of a flash dump);
    PartitionError when it is not one or its MD5 does not match."""
    out = []
    md5 = hashlib.md5()
    for o in range(0, min(len(blob), MAX_LEN), 32):
        e = bytes(blob[o:o + 32])
        if len(e) < 32 or e == b"\xff" * 32:
            break
        if e[:2] == _MD5[:2]:
            if e[16:] != md5.digest():
                raise PartitionError("partition table MD5 does not match")
            continue
        magic, t, s, off, size, label, flags = _ENTRY.unpack(e)
        if magic != _MAGIC:
            raise PartitionError("no partition table (entry %d has magic %s)" % (o // 32, magic.hex()))
        md5.update(e)
        out.append(Partition(label.split(b"\x00")[0].decode(errors="replace"), t, s, off, size, flags))
    if not out:
        raise PartitionError("no partition table")
    return out


def find(parts, name):
    for p in parts:
        if p.name == name:
            return p
    return None


def project_table():
    """(partitions, binary) of boards/esp32/partitions.csv."""
    parts = parse_csv(CSV.read_text())
    return parts, encode(parts)
