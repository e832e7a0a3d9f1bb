"""The upload exchange's bytes (docs/upload.md sections 2-4): the request body,
the JSON response and the signed update bundle. Pure functions, bounded: the
receiver parses with them, and tests, the bench and emulated terminals build
and check with them."""
import json
import os
import struct

from host_tools import records
from host_tools import wallet_sim as ws

MAGIC = b"OPU1"
MAX_BODY = 65536
MAX_COUNT = 64
MAX_RESPONSE = 16384
BUNDLE_DOMAIN = b"OFFPAY-BUNDLE-V1\x00"
_HEAD = struct.Struct(">4s16sIIH")   # magic, nonce, bundle version held, after, count
_REC = struct.Struct(">IH")          # record id, payload length


class WireError(ValueError):
    """A request body that does not follow docs/upload.md (400 malformed)."""


class Upload:
    def __init__(self, nonce, held_version, after, records_):
        self.nonce, self.held_version, self.after, self.records = nonce, held_version, after, records_


def parse_upload(body):
    """Upload of a request body; WireError says what is wrong with it."""
    if len(body) > MAX_BODY:
        raise WireError("body of %d bytes, over %d" % (len(body), MAX_BODY))
    if len(body) < _HEAD.size:
        raise WireError("body of %d bytes, shorter than the %d-byte header" % (len(body), _HEAD.size))
    magic, nonce, held, after, count = _HEAD.unpack_from(body)
    if magic != MAGIC:
        raise WireError("bad magic %r" % (magic,))
    if count > MAX_COUNT:
        raise WireError("count %d, over %d" % (count, MAX_COUNT))
    off, last, out = _HEAD.size, after, []
    mv = memoryview(body)
    for i in range(count):
        if off + _REC.size > len(body):
            raise WireError("record %d: truncated header" % i)
        rid, n = _REC.unpack_from(body, off)
        off += _REC.size
        if not 1 <= n <= records.MAX_RECORD:
            raise WireError("record %d: length %d" % (i, n))
        if off + n > len(body):
            raise WireError("record %d: truncated payload" % i)
        if rid <= last:
            raise WireError("record %d: id %d not above %d" % (i, rid, last))
        out.append((rid, bytes(mv[off:off + n])))
        off += n
        last = rid
    if off != len(body):
        raise WireError("%d bytes after the last record" % (len(body) - off))
    return Upload(nonce, held, after, out)


def encode_upload(records_, after=0, held_version=0, nonce=None):
    """A request body: records_ is [(record id, payload)] in ascending order."""
    nonce = os.urandom(16) if nonce is None else nonce
    parts = [_HEAD.pack(MAGIC, nonce, held_version, after, len(records_))]
    for rid, payload in records_:
        parts.append(_REC.pack(rid, len(payload)) + bytes(payload))
    return b"".join(parts)


def sign_bundle(key, text):
    """The 128-hex-digit ES256 r||s over the bundle text (docs/upload.md s.3)."""
    return ws.es256_sign(key, BUNDLE_DOMAIN + text.encode()).hex()


def response_body(ack, bundle_text, sig_hex):
    return ('{"ack":%d,"bundle":%s,"sig":"%s"}' % (ack, json.dumps(bundle_text), sig_hex)).encode()


class BundleError(ValueError):
    pass


def check_response(body, update_key_public, nonce, terminal_id_hex, held_version=0):
    """What a terminal checks in a 200 response (docs/upload.md section 4):
    returns (ack, bundle dict) or raises BundleError. For tests and emulated
    terminals; the firmware does the same with pos.sig."""
    if len(body) > MAX_RESPONSE:
        raise BundleError("response of %d bytes" % len(body))
    try:
        r = json.loads(body)
        text, sig = r["bundle"], bytes.fromhex(r["sig"])
        ack = r["ack"]
        pub = records.load_public("ES256", bytes.fromhex(update_key_public))
    except (ValueError, KeyError, TypeError) as e:
        raise BundleError("response: %s" % (e,))
    if not isinstance(ack, int) or not 0 <= ack <= 0xFFFFFFFF:
        raise BundleError("ack %r" % (ack,))
    if not records.verify_loaded("ES256", pub, BUNDLE_DOMAIN + text.encode(), sig):
        raise BundleError("bundle signature")
    try:
        b = json.loads(text)
    except ValueError as e:
        raise BundleError("bundle: %s" % (e,))
    if b.get("v") != 1 or b.get("nonce") != nonce.hex() or b.get("terminal_id") != terminal_id_hex:
        raise BundleError("bundle not for this exchange")
    if not isinstance(b.get("version"), int) or b["version"] < held_version:
        raise BundleError("bundle version %r older than %d" % (b.get("version"), held_version))
    return ack, b

