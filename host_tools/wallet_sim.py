"""Wallet and issuer simulator: the phone side of PROTOCOL.md, in CPython.

An `Issuer` holds a signing key and issues credentials; a `Phone` holds a device
key and a credential and answers the terminal's APDUs exactly as an Android HCE
wallet following PROTOCOL.md would -- or misbehaves on demand (`Phone.fault`).
`Phone(by_reference=False)` is a wallet from before credential by reference
(PROTOCOL.md 5.7): it does not list option 81 and answers P1 = 01 with 6A 86.

Timing model: a Phone says how long it took over each command in
`processing_us`, which host_tools.pn532_sim reads after every APDU and adds to
its virtual clock: HCE_US for any command (Android's NFC stack delivering the
APDU to the wallet's HostApduService and taking its answer back), plus the
keystore's signing time on an AUTHORIZE it signs (SIGN_US). These figures are
assumptions, not measurements; PROTOCOL.md section 5.7 gives them with their
sources. Setting `processing_us` to a number fixes it for every command.

This is deliberately a second, independent implementation of the encoding (it
does not import the firmware), so the two sides cross-check each other.
"""
import hashlib
import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

AID = b"\xF0OFFPAY\x01"
VERSION = 1
ALG_ES256, ALG_RS256 = 1, 2
ALG_NAMES = {ALG_ES256: "ES256", ALG_RS256: "RS256"}
CRED_DOMAIN = b"OFFPAY-CRED-V1\x00"
AUTH_DOMAIN = b"OFFPAY-AUTH-V1\x00"
CHUNK = 240          # bytes of response data per R-APDU before chaining (default)
OPT_BY_REFERENCE = 0x81  # SELECT answer entry: credential by reference (PROTOCOL.md 5.7)
P1_BY_REFERENCE = 0x01
REF_HEAD = 109       # 32 04 | 33 01 | 34 40 | 35 20: the first part of an answer by reference
# The phone's time (PROTOCOL.md 5.7, "Timing model"; assumptions, not measured):
HCE_US = 5000        # per APDU: NFC controller -> Android NFC service -> HostApduService -> back
SIGN_US = {"tee": 40000,        # ECDSA P-256, Android Keystore key in the TEE (KeyMint in TrustZone)
           "strongbox": 150000,  # the same in a StrongBox secure element
           "none": 0}
MAX_PART = 256       # largest R-APDU data part PROTOCOL.md allows
MAX_RESPONSE = 1200  # largest AUTHORIZE response data a terminal takes
MAX_ROUNDS = 16      # R-APDUs one AUTHORIZE exchange may take, the first answer included
FAULTS = (
    None,             # behave
    "bad_sig",        # flip a bit of the device signature
    "bad_cred_sig",   # present a credential whose issuer signature is forged
    "replay",         # answer with the previous tap's counter and signature (byte for byte
                      # when the terminal asks for the same layout, P1 00 or 01)
    "stale_counter",  # sign this challenge properly but reuse the last counter
    "other_amount",   # sign a different amount than the terminal asked for
    "truncate",       # cut the response short
    "oversize",       # claim a credential longer than any the terminal accepts (1025 bytes)
    "garbage",        # random bytes with 9000
    "refuse",         # 6982: user did not confirm
    "no_app",         # not our wallet: SELECT fails with 6A82
    "endless_chain",  # keep answering 61xx forever
    "flood",          # chain more than 1200 bytes of response data
    "big_part",       # send the last part in one R-APDU of more than 256 data bytes
    "sixc_data",      # answer a GET RESPONSE with data and 6C xx
    "omit_cred",      # leave the credential out, unasked (no tag 31; by reference: no tag 36)
    "wrong_hash",     # by reference: announce (tag 35) a hash that is not its credential's
    "foreign_ref",    # by reference: name the credential `foreign` (another wallet's) and sign for it
)

SW_OK = b"\x90\x00"


class TLVError(ValueError):
    pass


def tlv(tag, value):
    n = len(value)
    if n < 0x80:
        head = bytes((tag, n))
    elif n < 0x100:
        head = bytes((tag, 0x81, n))
    elif n <= 0xFFFF:
        head = bytes((tag, 0x82, n >> 8, n & 0xFF))
    else:
        raise TLVError("too long")
    return head + bytes(value)


def parse_tlv(data):
    """Strict canonical parse: returns {tag: bytes}, tags strictly ascending."""
    out = {}
    pos, last = 0, -1
    while pos < len(data):
        if len(data) - pos < 2:
            raise TLVError("truncated")
        tag, ln = data[pos], data[pos + 1]
        pos += 2
        if ln == 0x81:
            ln = data[pos]
            pos += 1
            if ln < 0x80:
                raise TLVError("non-minimal")
        elif ln == 0x82:
            ln = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
            if ln < 0x100:
                raise TLVError("non-minimal")
        elif ln >= 0x80:
            raise TLVError("bad length")
        if tag <= last:
            raise TLVError("order")
        if pos + ln > len(data):
            raise TLVError("overrun")
        out[tag] = bytes(data[pos:pos + ln])
        last = tag
        pos += ln
    return out


def u32(v):
    return struct.pack(">I", v)


def es256_sign(key, message, deterministic=False):
    der = key.sign(message, ec.ECDSA(hashes.SHA256(), deterministic_signing=deterministic))
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def es256_public(key, compressed=False):
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    fmt = PublicFormat.CompressedPoint if compressed else PublicFormat.UncompressedPoint
    return key.public_key().public_bytes(Encoding.X962, fmt)


class Issuer:
    """An issuer: a key id, an algorithm and a private key."""

    def __init__(self, kid=None, alg="ES256", key=None, not_before=0, not_after=0xFFFFFFFF,
                 rsa_bits=2048):
        self.kid = kid or os.urandom(8)
        self.alg = {"ES256": ALG_ES256, "RS256": ALG_RS256}[alg]
        if key is None:
            if self.alg == ALG_ES256:
                key = ec.generate_private_key(ec.SECP256R1())
            else:
                key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
        self.key = key
        self.not_before, self.not_after = not_before, not_after

    @property
    def public(self):
        if self.alg == ALG_ES256:
            return es256_public(self.key)
        n = self.key.public_key().public_numbers().n
        return n.to_bytes((n.bit_length() + 7) // 8, "big")

    def config(self):
        """This issuer's entry in a terminal's provisioning config."""
        return {"kid": self.kid.hex(), "alg": ALG_NAMES[self.alg], "key": self.public.hex(),
                "not_before": self.not_before, "not_after": self.not_after}

    def sign(self, message):
        if self.alg == ALG_ES256:
            return es256_sign(self.key, message, deterministic=True)
        return self.key.sign(message, padding.PKCS1v15(), hashes.SHA256())

    def issue(self, device_public, wallet_id=None, serial=None, tap_limit=5000,
              offline_limit=20000, currency=978, not_before=0, not_after=0xFFFFFFFF,
              forge=False, hints=True, wrong_hints=False):
        """A credential (bytes) binding a device key to limits, signed by this issuer.
        hints: include tag 0D (key_hints), which speeds up a terminal's first
        verify of this device key; wrong_hints: a buggy issuer's (signed) hints."""
        body = b"".join((
            tlv(0x01, bytes((VERSION,))),
            tlv(0x02, self.kid),
            tlv(0x03, bytes((self.alg,))),
            tlv(0x04, wallet_id or os.urandom(16)),
            tlv(0x05, serial or os.urandom(8)),
            tlv(0x06, bytes((ALG_ES256,))),
            tlv(0x07, device_public),
            tlv(0x08, u32(tap_limit)),
            tlv(0x09, u32(offline_limit)),
            tlv(0x0A, struct.pack(">H", currency)),
            tlv(0x0B, u32(not_before)),
            tlv(0x0C, u32(not_after)),
        ))
        if hints:
            h = key_hints(device_public)
            if wrong_hints:
                h = h[65:130] + h[:65] + h[130:]  # on the curve, in the wrong places
            body += tlv(0x0D, h)
        sig = self.sign(CRED_DOMAIN + body)
        if forge:
            sig = bytes(sig[:-1]) + bytes((sig[-1] ^ 1,))
        return body + tlv(0x1F, sig)


def parse_credential(raw):
    f = parse_tlv(raw)
    return {
        "version": f[0x01][0], "issuer_kid": f[0x02], "issuer_alg": f[0x03][0],
        "wallet_id": f[0x04], "serial": f[0x05], "device_alg": f[0x06][0],
        "device_key": f[0x07], "tap_limit": int.from_bytes(f[0x08], "big"),
        "offline_limit": int.from_bytes(f[0x09], "big"),
        "currency": int.from_bytes(f[0x0A], "big"),
        "not_before": int.from_bytes(f[0x0B], "big"),
        "not_after": int.from_bytes(f[0x0C], "big"), "issuer_sig": f[0x1F],
        "device_hints": f.get(0x0D),
    }


_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B


def key_hints(device_public):
    """Tag 0D of a credential: 2^64, 2^128 and 2^192 times the device key,
    uncompressed SEC1 (PROTOCOL.md), computed from the public key alone."""
    from host_tools.gen_p256_table import P, add
    x = int.from_bytes(device_public[1:33], "big")
    if device_public[0] == 4:
        y = int.from_bytes(device_public[33:65], "big")
    else:
        y = pow((x * x * x - 3 * x + _B) % P, (P + 1) // 4, P)
        if (y ^ device_public[0]) & 1:
            y = P - y
    pt, out = (x, y), b""
    for _ in range(3):
        for _ in range(64):
            pt = add(pt, pt)
        out += b"\x04" + pt[0].to_bytes(32, "big") + pt[1].to_bytes(32, "big")
    return out


def auth_message(request_data, counter, alg, credential=None, cred_hash=None):
    """The bytes the device signs (PROTOCOL.md, "Device signature"): over the
    credential's SHA-256 (given, or computed from `credential`)."""
    if cred_hash is None:
        cred_hash = hashlib.sha256(credential).digest()
    return (AUTH_DOMAIN + bytes(request_data) + tlv(0x32, u32(counter))
            + tlv(0x33, bytes((alg,))) + tlv(0x35, cred_hash))


def full_response(answer):
    """The version-1 response (31..34) an answer by reference (32..36) stands
    for: what a terminal stores in its journal record (PROTOCOL.md 5.7)."""
    f = parse_tlv(answer)
    return (tlv(0x31, f[0x36]) + tlv(0x32, f[0x32]) + tlv(0x33, f[0x33]) + tlv(0x34, f[0x34]))


class Phone:
    """A phone with an HCE wallet. `transceive(apdu) -> response` as over NFC."""

    def __init__(self, issuer, name="phone", device_key=None, counter=0, fault=None,
                 credential=None, uid=None, deterministic=False, compressed_key=False,
                 chunk=CHUNK, exact_le=False, by_reference=True, keystore="tee",
                 hce_us=HCE_US, foreign=None, **cred_args):
        """chunk: data bytes per R-APDU part; exact_le: answer `6C xx` to a
        command whose Le is not exactly the next part's length, and send the
        part only when the command is repeated with Le = xx (both are allowed
        by PROTOCOL.md section 5.3; a terminal must follow them).
        by_reference: list option 81 and answer P1 = 01 (PROTOCOL.md 5.7).
        keystore ("tee", "strongbox", "none") and hce_us: the timing model.
        foreign: the credential fault "foreign_ref" names."""
        if fault not in FAULTS:
            raise ValueError("unknown fault %r" % (fault,))
        if fault == "foreign_ref" and foreign is None:
            raise ValueError("fault foreign_ref needs foreign=<another wallet's credential>")
        self.by_reference = by_reference
        self.hce_us = hce_us
        self.sign_us = SIGN_US[keystore]
        self.foreign = foreign
        self._fixed_us = None
        self._busy_us = 0
        self._signed = False
        self._cut = None  # the first part of an answer by reference ends after tag 35
        self.name = name
        self.key = device_key or ec.generate_private_key(ec.SECP256R1())
        self.counter = counter
        self.fault = fault
        self.deterministic = deterministic
        self.chunk = chunk
        self.exact_le = exact_le
        self.uid = uid or (b"\x08" + os.urandom(3))  # random NFCID1, as phones do
        pub = es256_public(self.key, compressed=compressed_key)
        if credential is None and fault == "bad_cred_sig":
            cred_args["forge"] = True
        self.credential = credential or issuer.issue(pub, **cred_args)
        self.selected = False
        self.pending = b""
        self._sixc = None  # (request, Le) of an AUTHORIZE answered 6C, awaiting its repeat
        self.last_response = None
        self.last_counter = None
        self._last_fields = None  # 32..34 of the last answer, for the fault replay
        self.log = []     # (ins, status word) per command, for tests

    @property
    def wallet_id(self):
        return parse_credential(self.credential)["wallet_id"]

    @property
    def credential_hash(self):
        return hashlib.sha256(self.credential).digest()

    @property
    def processing_us(self):
        """The phone's time over the command it last answered (what
        host_tools.pn532_sim charges), or the fixed figure a test set."""
        return self._busy_us if self._fixed_us is None else self._fixed_us

    @processing_us.setter
    def processing_us(self, us):
        self._fixed_us = us

    def removed(self):
        """The phone left the field: the wallet session ends."""
        self.selected = False
        self.pending = b""

    def transceive(self, apdu):
        apdu = bytes(apdu)
        self._signed = False
        resp = self._dispatch(apdu)
        self._busy_us = self.hce_us + (self.sign_us if self._signed else 0)
        self.log.append((apdu[1] if len(apdu) > 1 else None, resp[-2:].hex()))
        return resp

    def _dispatch(self, apdu):
        if len(apdu) < 4:
            return b"\x67\x00"
        cla, ins, p1, p2 = apdu[:4]
        body = apdu[4:]
        data, le = b"", None
        if len(body) == 1:
            le = body[0] or 256
        elif len(body) > 1:
            lc = body[0]
            if lc == 0 or len(body) not in (1 + lc, 2 + lc):
                return b"\x67\x00"
            data = body[1:1 + lc]
            if len(body) == 2 + lc:
                le = body[-1] or 256
        if cla == 0x00 and ins == 0xA4:
            if p1 != 0x04 or p2 != 0x00:
                return b"\x6A\x86"
            if self.fault == "no_app" or data != AID:
                self.selected = False
                return b"\x6A\x82"
            self.selected = True
            self.pending = b""
            self._cut = None
            versions = (VERSION, OPT_BY_REFERENCE) if self.by_reference else (VERSION,)
            return tlv(0x01, bytes(versions)) + SW_OK
        if cla == 0x00 and ins == 0xC0:
            if self.fault == "endless_chain":
                return b"\x00" * 16 + b"\x61\x10"
            if not self.pending:
                return b"\x69\x85"
            if self.fault == "sixc_data":
                return self.pending[:8] + bytes((0x6C, min(len(self.pending), self.chunk) & 0xFF))
            return self._chunk(le or 256)
        if cla == 0x80 and ins == 0xA0:
            if not self.selected:
                return b"\x69\x85"
            byref = p1 == P1_BY_REFERENCE and self.by_reference
            if p2 or (p1 and not byref):
                return b"\x6A\x86"
            if self.exact_le and self._sixc is not None and self._sixc[0] == (p1, data) \
                    and le == self._sixc[1]:
                # The repeat that a 6C asked for: the answer was made then.
                self._sixc = None
                return self._chunk(le)
            self._sixc = None
            return self._authorize(data, le or 256, byref, p1)
        if cla not in (0x00, 0x80):
            return b"\x6E\x00"
        return b"\x6D\x00"

    def _chunk(self, le):
        rest = len(self.pending)
        if self.fault == "big_part":
            # Everything but the last 300 bytes first, then those in one part.
            n = rest - 300 if rest > 300 else rest
        else:
            n = min(rest, self.chunk, self._cut or rest)
            if self.exact_le and le != n:
                # ISO 7816-4: wrong Le, SW2 = the exact length; nothing is sent
                # and the part stays pending until the command is repeated.
                return bytes((0x6C, n & 0xFF))
            n = min(n, le)
        self._cut = None
        out, self.pending = self.pending[:n], self.pending[n:]
        if self.pending:
            rest = len(self.pending)
            return out + bytes((0x61, rest if rest < 256 else 0))
        return out + SW_OK

    def _layout(self, fields, named, carried, byref):
        """The answer's data: version 1 (31 credential | 32..34), or by
        reference (PROTOCOL.md 5.7: 32..34 | 35 hash | 36 credential, the
        first part ending after the hash, so a terminal that holds the
        credential reads no further). An empty `carried` leaves it out."""
        if byref:
            self._cut = REF_HEAD
            return fields + tlv(0x35, named) + (tlv(0x36, carried) if carried else b"")
        return (tlv(0x31, carried) if carried else b"") + fields

    def _authorize(self, data, le, byref=False, p1=0):
        self._cut = None
        try:
            req = parse_tlv(data)
            need = {0x21: 1, 0x22: 8, 0x24: 4, 0x25: 2, 0x26: 16, 0x27: 4, 0x28: 4}
            for tag, n in need.items():
                if len(req.get(tag, b"")) != n:
                    raise TLVError("field %02x" % tag)
            if not 1 <= len(req.get(0x23, b"")) <= 16 or set(req) - set(need) - {0x23}:
                raise TLVError("fields")
        except (TLVError, IndexError):
            return b"\x6A\x80"
        if req[0x21][0] != VERSION:
            return b"\x6A\x81"
        if self.fault == "refuse":
            return b"\x69\x82"
        if self.fault == "garbage":
            return os.urandom(40) + SW_OK
        if self.fault == "replay" and self._last_fields is not None:
            # What an eavesdropper holds: the old counter and signature, laid
            # out as this terminal asks (the credential is public anyway).
            self.pending = self._layout(self._last_fields, self.credential_hash, self.credential,
                                        byref)
            return self._chunk(le)
        if self.fault == "stale_counter" and self.last_counter is not None:
            counter = self.last_counter
        else:
            self.counter += 1
            counter = self.counter
        signed = data
        if self.fault == "other_amount":
            amount = int.from_bytes(req[0x24], "big") + 1
            signed = data.replace(tlv(0x24, req[0x24]), tlv(0x24, u32(amount)), 1)
        # The hash the answer names and the signature covers: its own
        # credential's (the fault foreign_ref names another one's).
        named = self.credential_hash
        if byref and self.fault == "foreign_ref":
            named = hashlib.sha256(self.foreign).digest()
        self._signed = True
        sig = es256_sign(self.key, auth_message(signed, counter, ALG_ES256, cred_hash=named),
                         deterministic=self.deterministic)
        if self.fault == "bad_sig":
            sig = sig[:10] + bytes((sig[10] ^ 0x40,)) + sig[11:]
        cred = self.credential
        if self.fault == "oversize":
            cred = cred + b"\x00" * max(0, 1025 - len(cred))  # one byte over tag 31's bound
        fields = tlv(0x32, u32(counter)) + tlv(0x33, bytes((ALG_ES256,))) + tlv(0x34, sig)
        self._last_fields = fields
        carried = b"" if self.fault == "omit_cred" else cred
        if byref and self.fault == "wrong_hash":
            named = hashlib.sha256(named + b"wrong").digest()
        resp = self._layout(fields, named, carried, byref)
        if self.fault == "flood":
            resp = resp + b"\x00" * (MAX_RESPONSE + 1 - len(resp))
        if self.exact_le:
            self._sixc = ((p1, data), min(len(resp), self.chunk, self._cut or len(resp)))
        if self.fault == "truncate":
            resp = resp[:len(resp) // 2]
        self.last_response = resp
        self.last_counter = counter
        self.pending = resp
        return self._chunk(le)


def authorize_apdu(terminal_id, merchant_id, amount, currency, un, ttime, seq, p1=0):
    """Build an AUTHORIZE command as a terminal would (used by tests and vectors);
    p1 = P1_BY_REFERENCE asks for the credential by reference."""
    data = b"".join((
        tlv(0x21, bytes((VERSION,))), tlv(0x22, terminal_id), tlv(0x23, merchant_id),
        tlv(0x24, u32(amount)), tlv(0x25, struct.pack(">H", currency)), tlv(0x26, un),
        tlv(0x27, u32(ttime)), tlv(0x28, u32(seq)),
    ))
    return bytes((0x80, 0xA0, p1, 0x00, len(data))) + data + b"\x00", data


SELECT_APDU = bytes((0x00, 0xA4, 0x04, 0x00, len(AID))) + AID + b"\x00"


def run_tap(phone, apdu, rounds=MAX_ROUNDS):
    """Send an APDU and follow the chaining as PROTOCOL.md 5.3 tells a terminal:
    `61 xx` -> GET RESPONSE with Le = xx, `6C xx` -> the same command again with
    Le = xx; at most `rounds` R-APDUs. Returns (data, sw)."""
    out = b""
    cmd = bytes(apdu)
    resp = phone.transceive(cmd)
    for i in range(rounds):
        sw1 = resp[-2]
        if sw1 == 0x6C and len(resp) == 2:
            cmd = cmd[:-1] + resp[-1:]
        else:
            out += resp[:-2]
            if sw1 != 0x61:
                return out, resp[-2:]
            cmd = bytes((0x00, 0xC0, 0x00, 0x00, resp[-1]))
        if i + 1 < rounds:
            resp = phone.transceive(cmd)
    raise RuntimeError("more than %d R-APDUs" % rounds)
