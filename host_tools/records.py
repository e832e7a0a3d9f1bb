"""A journal record (PROTOCOL.md section 9) on the host: bounded, strict
decoding and signature checks with `cryptography`.

Shared by `host_tools journal` (re-verifying a flash image) and the acquirer's
receiver (re-verifying every uploaded payment), so both read a record the same
way. The TLV layer is wallet_sim's canonical parser (an implementation
independent of the firmware); this module adds each message's field table:
which tags are allowed, which are required, and every field's length bounds,
checked before a value is used.
"""
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from host_tools import wallet_sim as ws


class RecordError(ws.TLVError):
    """A record, or a message inside it, that does not follow PROTOCOL.md."""


# tag: (min length, max length, required), from the tables of PROTOCOL.md.
CREDENTIAL_SPEC = {
    0x01: (1, 1, True), 0x02: (8, 8, True), 0x03: (1, 1, True), 0x04: (16, 16, True),
    0x05: (8, 8, True), 0x06: (1, 1, True), 0x07: (33, 65, True), 0x08: (4, 4, True),
    0x09: (4, 4, True), 0x0A: (2, 2, True), 0x0B: (4, 4, True), 0x0C: (4, 4, True),
    0x0D: (195, 195, False), 0x1F: (64, 512, True),
}
REQUEST_SPEC = {
    0x21: (1, 1, True), 0x22: (8, 8, True), 0x23: (1, 16, True), 0x24: (4, 4, True),
    0x25: (2, 2, True), 0x26: (16, 16, True), 0x27: (4, 4, True), 0x28: (4, 4, True),
}
RESPONSE_SPEC = {0x31: (1, 1024, True), 0x32: (4, 4, True), 0x33: (1, 1, True), 0x34: (64, 64, True)}
# 43 (till reference) is written by every terminal so far; 44 (the terminal's
# upload cursor when it took the payment) is newer, so both are optional here.
RECORD_SPEC = {0x41: (1, 80, True), 0x42: (1, 1200, True), 0x43: (0, 32, False), 0x44: (4, 4, False)}
MAX_RECORD = 1536
_REQUIRED = {id(spec): frozenset(t for t, (_, _, req) in spec.items() if req)
             for spec in (CREDENTIAL_SPEC, REQUEST_SPEC, RESPONSE_SPEC, RECORD_SPEC)}


def fields(data, spec, what):
    """{tag: bytes} of a canonical TLV message checked against `spec`."""
    try:
        f = ws.parse_tlv(data)
    except (ws.TLVError, IndexError) as e:
        raise RecordError("%s: %s" % (what, e))
    for tag, value in f.items():
        bounds = spec.get(tag)
        if bounds is None:
            raise RecordError("%s: unknown tag %02x" % (what, tag))
        if not bounds[0] <= len(value) <= bounds[1]:
            raise RecordError("%s: tag %02x has length %d" % (what, tag, len(value)))
    required = _REQUIRED[id(spec)]
    if not required <= f.keys():
        raise RecordError("%s: tag %02x missing" % (what, min(required - f.keys())))
    return f


def _uint(b):
    return int.from_bytes(b, "big")


def parse_credential(raw):
    """The credential's fields (wallet_sim.parse_credential's names) plus
    'signed': the bytes its issuer signature covers."""
    f = fields(raw, CREDENTIAL_SPEC, "credential")
    if f[0x01][0] != ws.VERSION:
        raise RecordError("credential version %d" % f[0x01][0])
    if f[0x04] == bytes(16):
        raise RecordError("credential: all-zero wallet id")
    sig = f[0x1F]
    return {
        "version": f[0x01][0], "issuer_kid": f[0x02], "issuer_alg": f[0x03][0],
        "wallet_id": f[0x04], "serial": f[0x05], "device_alg": f[0x06][0],
        "device_key": f[0x07], "tap_limit": _uint(f[0x08]), "offline_limit": _uint(f[0x09]),
        "currency": _uint(f[0x0A]), "not_before": _uint(f[0x0B]), "not_after": _uint(f[0x0C]),
        "device_hints": f.get(0x0D), "issuer_sig": sig,
        # The signature is the credential's last field: what it signs is the prefix.
        "signed": ws.CRED_DOMAIN + bytes(raw[:len(raw) - len(ws.tlv(0x1F, sig))]),
    }


def parse_record(payload):
    """A journal record's payment as a dict. The credential is left raw
    ('credential'), so a caller can cache its parse by hash; RecordError when
    the record or its request/response does not parse."""
    if len(payload) > MAX_RECORD:
        raise RecordError("record of %d bytes" % len(payload))
    rec = fields(payload, RECORD_SPEC, "record")
    req_raw, resp_raw = rec[0x41], rec[0x42]
    req = fields(req_raw, REQUEST_SPEC, "request")
    resp = fields(resp_raw, RESPONSE_SPEC, "response")
    return {
        "request": req_raw, "credential": resp[0x31],
        "version": req[0x21][0], "terminal_id": req[0x22], "merchant_id": req[0x23],
        "amount": _uint(req[0x24]), "currency": _uint(req[0x25]), "un": req[0x26],
        "time": _uint(req[0x27]), "seq": _uint(req[0x28]),
        "counter": _uint(resp[0x32]), "sig_alg": resp[0x33][0], "device_sig": resp[0x34],
        "reference": rec.get(0x43, b""),
        "cursor": _uint(rec[0x44]) if 0x44 in rec else None,
    }


def device_message(rec):
    """The bytes the wallet's device key signed for this payment."""
    return ws.auth_message(rec["request"], rec["counter"], rec["sig_alg"], rec["credential"])


def encode_record(request, response, reference=b"", cursor=None):
    """A journal record payload as a terminal writes it (tests, bench, demo)."""
    out = ws.tlv(0x41, request) + ws.tlv(0x42, response) + ws.tlv(0x43, reference)
    if cursor is not None:
        out += ws.tlv(0x44, struct.pack(">I", cursor))
    return out


def load_public(alg, key):
    """A `cryptography` public key from a PROTOCOL.md key encoding (SEC1 point
    for ES256, the modulus for RS256); ValueError when it is not one."""
    if alg == "ES256":
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes(key))
    if alg == "RS256":
        n = int.from_bytes(key, "big")
        if not 2048 <= n.bit_length() <= 4096:
            raise ValueError("RS256 modulus of %d bits" % n.bit_length())
        return rsa.RSAPublicNumbers(65537, n).public_key()
    raise ValueError("unknown algorithm %r" % (alg,))


_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())  # immutable: one for every verify (the receiver's hot path)


def verify_loaded(alg, pub, message, sig):
    """ES256 (r||s) or RS256 (PKCS#1 v1.5) with a loaded key: True or False."""
    try:
        if alg == "ES256":
            if len(sig) != 64:
                return False
            der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            pub.verify(der, bytes(message), _ECDSA_SHA256)
        else:
            pub.verify(bytes(sig), bytes(message), padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError):
        return False


def verify_signature(alg, key, message, sig):
    """ES256 (r||s) or RS256 (PKCS#1 v1.5) with `cryptography`: True or False."""
    try:
        pub = load_public(alg, key)
    except ValueError:
        return False
    return verify_loaded(alg, pub, message, sig)
