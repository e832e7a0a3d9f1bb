# The acquirer's signed update bundle (docs/upload.md section 4): deny list,
# issuer keys, risk parameters and the acquirer's time, checked, kept on
# flash and handed to the app.
#
# Checks: shape (bounded JSON), terminal id, the nonce of this exchange, the
# version, then the signature over the exact bytes received (pinned update
# key, pos.sig), before anything in it is used. Anything wrong refuses the
# whole bundle and the terminal keeps the one it had. The signature check is
# the costly step (an ES256 verify: 150-430 ms on the ESP32, estimated), so
# a bundle that brings no new content is verified only when its time is
# wanted (need_time): the uplink asks for the time when its last one is old.
#
# On flash: one file, the 64-byte signature then the bundle text, written to a
# temp name and renamed over the old one (littlefs renames atomically), in
# slices with a yield between, so no single step holds the event loop for more
# than about one flash block erase. At boot the file is verified again: the
# signature is the only proof that the content came from the acquirer.

import asyncio
import json
import os

from micropython import const

from pos import sig

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


class Bundle:
    """A bundle. issuers: the complete set, config-style dicts; deny: the
    config-style {"wallets": [...], "serials": [...]} (docs/upload.md section
    4), so the app can build its policy from {"issuers", "deny"} exactly as
    from its config; also as bytes: deny_wallets (issuer kid 8 + wallet id 16
    for a [kid, wallet id] pair, wallet id 16 for a bare one) and
    deny_serials (issuer kid 8 + serial 8); risk: a dict of u32; time: the
    acquirer's time (u32 seconds)."""

    def __init__(self, version, time, deny, issuers, risk, text, signature):
        self.version = version
        self.time = time
        self.deny = deny
        self.issuers = issuers
        self.risk = risk
        self.text = text
        self.sig = signature
        self.deny_wallets = []
        self.deny_serials = []

    def policy_config(self):
        """{"issuers", "deny"}: the shape of the terminal config's policy."""
        return {"issuers": self.issuers, "deny": self.deny}


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


def parse(text, signature):
    """The shape of a bundle text (bytes): a Bundle (not yet verified), or
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
    deny = d["deny"]
    issuers = d["issuers"]
    risk = d["risk"]
    if not isinstance(deny, dict) or not isinstance(issuers, list) or len(issuers) > _MAX_ISSUERS \
            or not isinstance(risk, dict):
        raise BundleError("malformed")
    wallets = deny.get("wallets", [])
    serials = deny.get("serials", [])
    if not isinstance(wallets, list) or not isinstance(serials, list) \
            or len(wallets) + len(serials) > _MAX_DENY:
        raise BundleError("malformed")
    dw = []
    for e in wallets:
        # A wallet id (the config shape of PROTOCOL.md section 7), or an
        # [issuer kid, wallet id] pair (wallets keyed by issuer too).
        if isinstance(e, list) and len(e) == 2:
            dw.append(_hex(e[0], 8) + _hex(e[1], 16))
        else:
            dw.append(_hex(e, 16))
    ds = [_hex(e, 16) for e in serials]
    for i in issuers:
        if not isinstance(i, dict):
            raise BundleError("malformed")
    for k in risk:
        _u32(risk[k])
    b = Bundle(_u32(d["version"]), _u32(d["time"]), deny, issuers, risk, text, signature)
    b.deny_wallets = dw
    b.deny_serials = ds
    b.terminal_id = d["terminal_id"]
    b.nonce = d["nonce"]
    return b


class Store:
    """The bundle the terminal holds, in `directory` (on littlefs).

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
        self.held = None
        self.verified = 0  # signature checks done (each an ES256 verify)

    @property
    def version(self):
        return self.held.version if self.held else 0

    def check(self, text, signature, nonce=None, need_time=True):
        """A Bundle from a received text (bytes) and signature (64 bytes),
        checked against this terminal, the exchange's nonce (16 bytes; None
        at boot), the held version and the pinned key. BundleError if not.
        None when it brings no new content and need_time is False: then it
        is not verified, and nothing in it may be used."""
        if not isinstance(text, (bytes, bytearray)) or len(text) > MAX_TEXT:
            raise BundleError("malformed")
        b = parse(bytes(text), bytes(signature))
        if not isinstance(b.terminal_id, str) or b.terminal_id.lower() != self.terminal_id:
            raise BundleError("terminal")
        if nonce is not None and (not isinstance(b.nonce, str) or b.nonce.lower() != nonce.hex()):
            raise BundleError("nonce")
        if b.version < self.version:
            raise BundleError("version")
        if not need_time and not self.is_new(b):
            return None
        if not sig.verify("ES256", self.key, DOMAIN + b.text, b.sig):
            raise BundleError("signature")
        self.verified += 1
        if self.validate is not None:
            try:
                self.validate(b)
            except ValueError as e:
                self.log("BUNDLE content refused: %s" % (e,))
                raise BundleError("malformed")
        return b

    def is_new(self, b):
        """True when b's content replaces the held one (a bundle with the
        held version updates only the time)."""
        return self.held is None or b.version > self.held.version

    def load(self):
        """The stored bundle, verified again, or None (missing, or refused:
        logged). Call at boot."""
        try:
            n = os.stat(self._path)[6]
            if not _SIG < n <= _SIG + MAX_TEXT:
                raise BundleError("malformed")
            with open(self._path, "rb") as f:
                s = f.read(_SIG)
                text = f.read(n - _SIG)
            self.held = self.check(text, s)
        except OSError:
            return None  # never received one
        except BundleError as e:
            self.log("BUNDLE stored copy refused (%s): ignored" % (e.args[0],))
            self.held = None
        return self.held

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
        self.held = b
