"""The acquirer's config file (docs/upload.md section 6): what the receiver
trusts and what it sends terminals in every update bundle.

A JSON object; paths are relative to the file's directory:

    {"tls": {"cert": "server.pem", "key": "server-key.pem", "client_ca": "ca.pem"},
     "update_key": "update-key.pem",
     "bundle_version": 1,
     "issuers": [<issuer entries as in the terminal config, PROTOCOL.md section 7>],
     "deny": {"wallets": [["<kid 16 hex>", "<wallet id 32 hex>"]], "serials": ["<kid 16 hex><serial 16 hex>"]},
     "risk": {"max_offline_age_s": 604800},
     "terminals": {"5445524d30303031": {"merchant_id": "MARKET-7"}},
     "max_clock_skew_s": 600}

Everything is checked when the file is loaded, so a receiver with a bad
config does not start; that includes the signed response fitting the
16384 bytes a terminal accepts.
"""
import json
from pathlib import Path

from host_tools import pki, records
from host_tools.receiver import wire

MAX_ISSUERS = 16          # the terminal's limits (firmware/pos/rules.py)
# Deny entries in one bundle: what an emulated terminal (128 KB data heap)
# was seen to take at boot and in an exchange; 150 ran it out of heap in the
# bundle's parse (tests/test_sync_e2e.py test_a_terminal_takes_the_largest_deny_list).
MAX_DENY = 100
U32 = 0xFFFFFFFF


class ConfigError(ValueError):
    pass


class Issuer:
    """A trusted issuer key, loaded once."""

    def __init__(self, entry):
        self.kid = bytes.fromhex(entry["kid"])
        self.alg = entry["alg"]
        self.alg_code = {"ES256": 1, "RS256": 2}[self.alg]
        self.key = bytes.fromhex(entry["key"])
        self.public = records.load_public(self.alg, self.key)
        self.not_before, self.not_after = entry["not_before"], entry["not_after"]
        self.entry = {"kid": self.kid.hex(), "alg": self.alg, "key": self.key.hex(),
                      "not_before": self.not_before, "not_after": self.not_after}


def _u32(v, what):
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= U32:
        raise ConfigError("%s must be a u32, not %r" % (what, v))
    return v


def _hex_list(items, n, what):
    if not isinstance(items, list):
        raise ConfigError("%s must be a list" % what)
    out = []
    for s in items:
        try:
            b = bytes.fromhex(s)
        except (TypeError, ValueError):
            b = b""
        if len(b) != n:
            raise ConfigError("%s: %r is not %d hex digits" % (what, s, 2 * n))
        out.append(b)
    return out


def _pairs(items, what):
    # [["<kid 16 hex>", "<wallet id 32 hex>"], ...] -> kid + wallet id bytes
    if not isinstance(items, list):
        raise ConfigError("%s must be a list" % what)
    out = []
    for e in items:
        if not isinstance(e, list) or len(e) != 2:
            raise ConfigError("%s: %r is not a [\"<kid 16 hex>\", \"<wallet id 32 hex>\"] pair"
                              % (what, e))
        out.append(_hex_list([e[0]], 8, what)[0] + _hex_list([e[1]], 16, what)[0])
    return out


class AcquirerConfig:
    """A loaded, checked acquirer config. Build with `load(path)` or
    `from_dict(d, base_dir)`."""

    def __init__(self, d, base):
        if not isinstance(d, dict):
            raise ConfigError("the config must be a JSON object")
        self.raw = d
        try:
            tls = d.get("tls", {})
            self.tls_cert = self._path(base, tls.get("cert"))
            self.tls_key = self._path(base, tls.get("key"))
            self.client_ca = self._path(base, tls.get("client_ca"))
            self.update_key_path = self._path(base, d["update_key"])
            self.update_key = pki.load_key(self.update_key_path)
            self.update_key_public = pki.public_hex(self.update_key)
            self.bundle_version = _u32(d["bundle_version"], "bundle_version")
            items = d.get("issuers", [])
            if not isinstance(items, list) or len(items) > MAX_ISSUERS:
                raise ConfigError("issuers: a list of at most %d" % MAX_ISSUERS)
            self.issuers = {}
            for e in items:
                iss = Issuer(e)
                _u32(iss.not_before, "issuer not_before")
                _u32(iss.not_after, "issuer not_after")
                if iss.kid in self.issuers or len(iss.kid) != 8:
                    raise ConfigError("issuer kid %r: duplicate or not 16 hex digits" % (e["kid"],))
                self.issuers[iss.kid] = iss
            deny = d.get("deny", {})
            # (issuer kid, wallet id) pairs, as the terminal's config and
            # PROTOCOL.md section 7: a wallet id is unique only within its issuer.
            self.deny_wallets = set(_pairs(deny.get("wallets", []), "deny.wallets"))
            self.deny_serials = set(_hex_list(deny.get("serials", []), 16, "deny.serials"))
            if len(self.deny_wallets) + len(self.deny_serials) > MAX_DENY:
                raise ConfigError("deny: at most %d entries (what a terminal's heap takes in one bundle)" % MAX_DENY)
            self.risk = d.get("risk", {})
            if not isinstance(self.risk, dict):
                raise ConfigError("risk must be an object")
            for k, v in self.risk.items():
                _u32(v, "risk." + k)
            terminals = d.get("terminals")
            self.terminals = None
            if terminals is not None:
                if not isinstance(terminals, dict):
                    raise ConfigError("terminals must be an object keyed by terminal id")
                self.terminals = {}
                for tid, t in terminals.items():
                    _hex_list([tid], 8, "terminals")
                    m = (t or {}).get("merchant_id")
                    if m is not None and not (isinstance(m, str) and 1 <= len(m.encode()) <= 16):
                        raise ConfigError("terminals.%s.merchant_id: 1..16 bytes" % tid)
                    self.terminals[tid.lower()] = {"merchant_id": m}
            self.max_clock_skew = _u32(d.get("max_clock_skew_s", 600), "max_clock_skew_s")
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as e:
            raise ConfigError("config: %s: %s" % (type(e).__name__, e))
        # The bundle's fixed part, serialised once; the per-exchange fields
        # (terminal, nonce, time) are spliced in front of it (upload.md s.4).
        self.bundle_tail = json.dumps({
            "deny": {"wallets": sorted([w[:8].hex(), w[8:].hex()] for w in self.deny_wallets),
                     "serials": sorted(s.hex() for s in self.deny_serials)},
            "issuers": [i.entry for i in self.issuers.values()],
            "risk": self.risk}, separators=(",", ":"), sort_keys=False)[1:]
        worst = len(wire.response_body(U32, self.bundle_text("f" * 16, "f" * 32, U32), "f" * 128))
        if worst > wire.MAX_RESPONSE:
            raise ConfigError("the signed response would be %d bytes, over the terminal's %d: "
                              "fewer deny entries or issuers" % (worst, wire.MAX_RESPONSE))

    @staticmethod
    def _path(base, p):
        if p is None:
            return None
        if not isinstance(p, str):
            raise ConfigError("a path must be a string: %r" % (p,))
        return (Path(base) / p).resolve()

    def bundle_text(self, terminal_id_hex, nonce_hex, now):
        return '{"v":1,"version":%d,"terminal_id":"%s","nonce":"%s","time":%d,%s' % (
            self.bundle_version, terminal_id_hex, nonce_hex, now, self.bundle_tail)


def load(path):
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError("%s: %s" % (path, e))
    return AcquirerConfig(d, p.parent)


def from_dict(d, base="."):
    return AcquirerConfig(d, base)
