# The acquirer's signed update bundle (docs/upload.md section 4): deny list,
# issuer keys, risk parameters and the acquirer's time, checked, kept on
# flash and handed to the app.
#
# Checks: shape (bounded JSON), terminal id, the nonce of this exchange, the
# version, then the signature over the exact bytes received (pinned update
# key), before anything in it is used. Anything wrong refuses the whole
# bundle and the terminal keeps the one it had. The signature check is the
# costly step (an ES256 verify: 150-430 ms on the ESP32, estimated), so a
# bundle that brings no new content is verified only when its time is wanted
# (need_time): the uplink asks for the time when its last one is old.
#
# Memory: a bundle near the 16 KB limit is mostly deny entries. The text is
# hashed where it lies (no signed-message copy), the deny list stays in the
# parsed JSON (as bytes only on request), and the store keeps just the
# version: the app keeps what it applies, nothing here holds a second copy.
#
# On flash: one file, the 64-byte signature then the bundle text, written to a
# temp name and renamed over the old one (littlefs renames atomically), in
# slices with a yield between, so no single step holds the event loop for more
# than about one flash block erase. At boot the file is verified again: the
# signature is the only proof that the content came from the acquirer.

import asyncio
import hashlib
import json
import os

from micropython import const

from pos import p256

DOMAIN = b"OFFPAY-BUNDLE-V1\x00"
MAX_TEXT = const(16384)  # the whole response is at most 16 KB (docs/upload.md section 3)
_SIG = const(64)
_SLICE = const(1024)
_MAX_DENY = const(1024)
_MAX_ISSUERS = const(16)
_U32_MAX = const(0xFFFFFFFF)
_NAME = "bundle.bin"


class BundleError(ValueError):
    # args[0]: "signature", "terminal", "nonce", "version" or "malformed"
    pass


def _hex(s, n):
    if not isinstance(s, str) or len(s) != 2 * n:
        raise BundleError("malformed")
    try:
        return bytes.fromhex(s)
    except ValueError:
        raise BundleError("malformed")


def _u32(v):
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= _U32_MAX:
        raise BundleError("malformed")
    return v


def _wallet(e):
    # A wallet id (the config shape of PROTOCOL.md section 7), or an
    # [issuer kid, wallet id] pair (wallets keyed by issuer too).
    if isinstance(e, list) and len(e) == 2:
        return _hex(e[0], 8) + _hex(e[1], 16)
    return _hex(e, 16)


class Bundle:
    """A bundle. version, time (the acquirer's, u32 seconds); issuers: the
    complete set, config-style dicts; deny: {"wallets": [...], "serials":
    [...]} (docs/upload.md section 4) with each entry decoded to its bytes;
    risk: a dict of u32. policy_config() is {"issuers", "deny"}, the shape
    rules.Policy.from_config takes (as from the config); wallets() and
    serials() give the deny entries. policy: what Store's validate built
    from it (the app applies that one rather than building it twice)."""

    def __init__(self, d, text, signature):
        self.version = d["version"]
        self.time = d["time"]
        self.terminal_id = d["terminal_id"]
        self.nonce = d["nonce"]
        self.issuers = d["issuers"]
        self.deny = d["deny"]
        self.risk = d["risk"]
        self.text = text          # dropped once stored
        self.sig = signature
        self.policy = None        # what Store's validate made of it, if anything

    def policy_config(self):
        return {"issuers": self.issuers, "deny": self.deny}

    def wallets(self):
        """Denied wallets: issuer kid (8) + wallet id (16) for a pair, the
        wallet id (16) for a bare id."""
        return self.deny.get("wallets", [])

    def serials(self):
        """Denied credentials: issuer kid (8) + serial (8)."""
        return self.deny.get("serials", [])


def parse(text, signature):
    """The shape of a bundle text (str or bytes): a Bundle (not yet verified), or
    BundleError("malformed")."""
    try:
        d = json.loads(text)
    except ValueError:
        raise BundleError("malformed")
    # Every field is required: "issuers" is the complete set, so a bundle
    # that merely lacked it would retire every key.
    if not isinstance(d, dict) or d.get("v") != 1:
        raise BundleError("malformed")
    for k in ("version", "time", "terminal_id", "nonce", "deny", "issuers", "risk"):
        if k not in d:
            raise BundleError("malformed")
    _u32(d["version"])
    _u32(d["time"])
    deny, issuers, risk = d["deny"], d["issuers"], d["risk"]
    if not isinstance(deny, dict) or not isinstance(issuers, list) or len(issuers) > _MAX_ISSUERS \
            or not isinstance(risk, dict):
        raise BundleError("malformed")
    wallets = deny.get("wallets", [])
    serials = deny.get("serials", [])
    if not isinstance(wallets, list) or not isinstance(serials, list) \
            or len(wallets) + len(serials) > _MAX_DENY:
        raise BundleError("malformed")
    # Decoded in place, entry by entry: each JSON pair becomes garbage as its
    # 24 bytes take its slot, so a long deny list is never held twice.
    for i in range(len(wallets)):
        wallets[i] = _wallet(wallets[i])
    for i in range(len(serials)):
        serials[i] = _hex(serials[i], 16)
    for i in issuers:
        if not isinstance(i, dict):
            raise BundleError("malformed")
    for k in risk:
        _u32(risk[k])
    return Bundle(d, text, signature)


def verify(key, text, signature):
    """ES256 by `key` over DOMAIN || text, hashed in place (no copy of a
    16 KB text). p256.verify_digest never raises on bad input."""
    if not isinstance(signature, (bytes, bytearray)) or len(signature) != _SIG:
        return False
    h = hashlib.sha256(DOMAIN)
    h.update(text)
    return p256.verify_digest(key, h.digest(), signature)


class Store:
    """The bundle the terminal holds, in `directory` (on littlefs); only its
    version stays in RAM.

    validate: optional callable(bundle) that raises ValueError for content
    the app cannot apply (e.g. an issuer entry rules.py refuses); such a
    bundle is refused as malformed before anything is stored."""

    def __init__(self, directory, update_key, terminal_id, validate=None, log=print):
        self._path = directory + "/" + _NAME
        self._tmp = self._path + ".tmp"
        self.key = update_key
        self.terminal_id = terminal_id.lower()
        self.validate = validate
        self.log = log
        self.version = 0   # of the bundle held (0: none)
        self.held = False
        self.verified = 0  # signature checks done (each an ES256 verify)

    def check(self, text, signature, nonce=None, need_time=True):
        """A Bundle from a received text (str, bytes or a memoryview: its bytes are what
        was signed, the UTF-8 bytes) and signature (64 bytes),
        checked against this terminal, the exchange's nonce (16 bytes; None
        at boot), the held version and the pinned key. BundleError if not.
        None when it brings no new content and need_time is False: then it
        is not verified, and nothing in it may be used."""
        if not isinstance(text, (str, bytes, bytearray, memoryview)) or len(text) > MAX_TEXT:
            raise BundleError("malformed")
        b = parse(text, signature)
        if not isinstance(b.terminal_id, str) or b.terminal_id.lower() != self.terminal_id:
            raise BundleError("terminal")
        if nonce is not None and (not isinstance(b.nonce, str) or b.nonce.lower() != nonce.hex()):
            raise BundleError("nonce")
        if b.version < self.version:
            raise BundleError("version")
        if not need_time and not self.is_new(b):
            return None
        self.verified += 1
        if not verify(self.key, text, signature):
            raise BundleError("signature")
        if self.validate is not None:
            try:
                b.policy = self.validate(b)
            except ValueError as e:
                self.log("BUNDLE content refused: %s" % (e,))
                raise BundleError("malformed")
        return b

    def is_new(self, b):
        """True when b's content replaces the held one (a bundle with the
        held version updates only the time)."""
        return not self.held or b.version > self.version

    def load(self):
        """The stored bundle, verified again, or None (missing, or refused:
        logged). Call at boot; apply it, then let it go."""
        try:
            n = os.stat(self._path)[6]
            if not _SIG < n <= _SIG + MAX_TEXT:
                raise BundleError("malformed")
            with open(self._path, "rb") as f:
                s = f.read(_SIG)
                text = f.read(n - _SIG)
            b = self.check(text, s)
        except OSError:
            return None  # never received one
        except BundleError as e:
            self.log("BUNDLE stored copy refused (%s): ignored" % (e.args[0],))
            return None
        self.version, self.held = b.version, True
        b.text = None
        return b

    async def save(self, b):
        """Store b atomically and hold it. OSError if the flash fails (the
        old file is then still the one on flash)."""
        mv = memoryview(b.text)
        with open(self._tmp, "wb") as f:
            f.write(b.sig)
            off = 0
            while off < len(mv):
                f.write(mv[off:off + _SLICE])
                off += _SLICE
                await asyncio.sleep_ms(0)
        os.rename(self._tmp, self._path)
        self.version, self.held = b.version, True
        b.text = None
