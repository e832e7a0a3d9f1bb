# The terminal's configuration: the one parser and validator of the provisioned
# JSON. The terminal runs it at boot; `offpay provision` runs this very file in
# the unix port before it sends anything, and the terminal runs it again on the
# uploaded copy before it renames it into place, so host and terminal cannot
# disagree on what a config means (PROTOCOL.md section 7).
#
#   cfg, policy = config.load("/config.json")   # ConfigError names the problem
#   cfg, policy = config.parse(text)
#
# `cfg` is the JSON dict, checked, with defaults filled in; `policy` is the
# rules.Policy of its issuers and deny list (rules.py builds it: the issuer and
# deny-list schema lives there). Every size is bounded before it is used.
import hashlib
import json
import os

from micropython import const

from pos import p256, rules, token

MAX_BYTES = const(32768)
_MAX_URL = const(256)
_MAX_PEM = const(4096)
_MAX_NAME = const(32)
_MAX_TIMEOUT_MS = const(600000)
_MIN_TIMEOUT_MS = const(100)
_RSA_MIN_BITS = const(2048)
_RSA_MAX_BITS = const(4096)

MODES = ("test", "production")

# Top-level settings the terminal understands; anything else is refused, so a
# misspelt key ("isuers") is an error, not a silently missing setting.
_FIELDS = ("terminal_id", "merchant_id", "currency", "charge_timeout_ms", "relay_ms",
           "removal_ms", "issuers", "deny", "credential_by_reference",
           "uplink", "update_key", "wifi", "risk", "mode", "technician_key")
_ISSUER_FIELDS = ("kid", "alg", "key", "not_before", "not_after", "test", "name")
_UPLINK_FIELDS = ("url", "ca", "cert", "key", "test")
# Risk parameters: (minimum, maximum).
_RISK = {"max_offline_age_s": (3600, 90 * 86400)}

# SHA-256 (first 8 bytes) of keys published as test keys: the PROTOCOL.md
# test vectors' issuers (ES256 and RS256-2048). A production config refuses
# them wherever they appear.
_TEST_KEYS = (b"\x50\x4a\xc9\x93\xa2\xab\x72\xa1", b"\xa8\xfe\xc7\xf6\xa1\x1b\xb2\x6d")


class ConfigError(rules.ConfigError):
    pass


def _fail(msg):
    raise ConfigError(msg)


def _obj(v, what, fields):
    if not isinstance(v, dict):
        _fail("%s must be an object" % what)
    for k in v:
        if k not in fields:
            _fail("%s: unknown setting %r" % (what, k))
    return v


def _int(v, what, lo, hi):
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        _fail("%s must be an integer in %d..%d" % (what, lo, hi))
    return v


def _str(v, what, lo, hi):
    if not isinstance(v, str):
        _fail("%s must be a string" % what)
    n = len(v.encode())
    if not lo <= n <= hi:
        _fail("%s must be %d..%d bytes" % (what, lo, hi))
    return v


def _hex(v, what, n=None):
    if not isinstance(v, str) or len(v) > 1100:
        _fail("%s must be a hex string" % what)
    try:
        b = bytes.fromhex(v)
    except ValueError:
        _fail("%s is not hex" % what)
    if n is not None and len(b) != n:
        _fail("%s must be %d bytes (%d hex digits)" % (what, n, 2 * n))
    return b


def _is_test_key(key):
    return hashlib.sha256(key).digest()[:8] in _TEST_KEYS


def ec_key(v, what):
    """A SEC1 P-256 public key (hex) that is on the curve, as bytes."""
    key = _hex(v, what)
    if len(key) not in (33, 65) or p256.decode_point(key) is None:
        _fail("%s is not a P-256 public key on the curve" % what)
    return key


def rsa_key(key, what):
    # What pos.rsa accepts: an odd modulus of 2048..4096 bits, leading zero
    # bytes allowed. A key it would refuse makes every tap fail.
    i = 0
    while i < len(key) and key[i] == 0:
        i += 1
    bits = 0
    if i < len(key):
        b = key[i]
        bits = 8 * (len(key) - i - 1)
        while b:
            bits += 1
            b >>= 1
    if not _RSA_MIN_BITS <= bits <= _RSA_MAX_BITS or not key[-1] & 1:
        _fail("%s: an RS256 key is an odd modulus of %d..%d bits (this one: %d bits)"
              % (what, _RSA_MIN_BITS, _RSA_MAX_BITS, bits))


def _issuers(items, production):
    if not isinstance(items, list) or not 1 <= len(items) <= 16:
        _fail("issuers must be a list of 1..16 keys")
    seen = []
    for i, it in enumerate(items):
        what = "issuers[%d]" % i
        _obj(it, what, _ISSUER_FIELDS)
        for k in ("kid", "alg", "key", "not_before", "not_after"):
            if k not in it:
                _fail("%s lacks %s" % (what, k))
        kid = _hex(it["kid"], what + ".kid", 8)
        if kid in seen:
            # A second entry must never replace the first: the rogue one's
            # wallets would be approved under the genuine issuer's id.
            _fail("issuer kid %s listed twice" % it["kid"])
        seen.append(kid)
        what = "issuer %s" % it["kid"]
        if it["alg"] == "ES256":
            key = ec_key(it["key"], what + " key")
        elif it["alg"] == "RS256":
            key = _hex(it["key"], what + " key")
            rsa_key(key, what)
        else:
            _fail("%s: alg must be ES256 or RS256" % what)
        nb = _int(it["not_before"], what + " not_before", 0, 0xFFFFFFFF)
        if _int(it["not_after"], what + " not_after", 0, 0xFFFFFFFF) < nb:
            _fail("%s: not_after is before not_before" % what)
        if "name" in it:
            _str(it["name"], what + " name", 0, _MAX_NAME)
        if production and (it.get("test") is True or _is_test_key(key)):
            _fail("%s is a test key: a production terminal refuses it" % what)


def _pem(v, what, kinds):
    import binascii
    if not isinstance(v, str) or not 0 < len(v) <= _MAX_PEM:
        _fail("%s must be a PEM text of at most %d bytes" % (what, _MAX_PEM))
    lines = v.strip().split("\n")
    head = lines[0].strip()
    kind = None
    for k in kinds:
        if head == "-----BEGIN %s-----" % k:
            kind = k
    if kind is None or lines[-1].strip() != "-----END %s-----" % kind:
        _fail("%s must be PEM: %s" % (what, " or ".join(kinds)))
    try:
        der = binascii.a2b_base64("".join(l.strip() for l in lines[1:-1]))
    except ValueError:
        _fail("%s: the PEM body is not base64" % what)
    if len(der) < 16 or der[0] != 0x30:
        _fail("%s: the PEM body is not DER" % what)


def _uplink(v, production):
    _obj(v, "uplink", _UPLINK_FIELDS)
    url = _str(v.get("url"), "uplink.url", 12, _MAX_URL)
    if not url.startswith("https://") or " " in url or len(url.split("/")[2]) == 0:
        _fail("uplink.url must be an https:// URL")
    _pem(v.get("ca"), "uplink.ca", ("CERTIFICATE",))
    _pem(v.get("cert"), "uplink.cert", ("CERTIFICATE",))
    _pem(v.get("key"), "uplink.key", ("EC PRIVATE KEY", "PRIVATE KEY"))
    if production and v.get("test") is True:
        _fail("uplink is a test identity: a production terminal refuses it")


def _wifi(v):
    _obj(v, "wifi", ("ssid", "key"))
    _str(v.get("ssid"), "wifi.ssid", 1, 32)
    key = _str(v.get("key", ""), "wifi.key", 0, 64)
    if key and not 8 <= len(key) <= 63:
        try:
            ok = len(key) == 64 and len(bytes.fromhex(key)) == 32
        except ValueError:
            ok = False
        if not ok:
            _fail("wifi.key must be empty (open network), 8..63 characters or 64 hex digits")


def check(cfg):
    """Validate a config dict in place (defaults filled in); returns its
    rules.Policy. ConfigError names the first problem."""
    _obj(cfg, "the config", _FIELDS)
    for k in ("terminal_id", "merchant_id", "currency", "issuers"):
        if k not in cfg:
            _fail("the config lacks %s" % k)
    mode = cfg.setdefault("mode", "test")
    if mode not in MODES:
        _fail("mode must be \"test\" or \"production\"")
    production = mode == "production"
    _hex(cfg["terminal_id"], "terminal_id", token.TERMINAL_ID_LEN)
    _str(cfg["merchant_id"], "merchant_id", 1, token.MAX_MERCHANT_ID)
    _int(cfg["currency"], "currency (ISO 4217 numeric)", 1, 999)
    _int(cfg.setdefault("charge_timeout_ms", 30000), "charge_timeout_ms", _MIN_TIMEOUT_MS,
         _MAX_TIMEOUT_MS)
    # The AUTHORIZE exchange's relay bound and the empty field before a new tap
    # (pos.terminal says why their defaults are what they are).
    _int(cfg.setdefault("relay_ms", 600), "relay_ms", 100, 5000)
    _int(cfg.setdefault("removal_ms", 1000), "removal_ms", 200, 5000)
    cfg.setdefault("credential_by_reference", True)  # PROTOCOL.md 5.7; rules.Policy checks it
    _issuers(cfg["issuers"], production)
    for k in ("update_key", "technician_key"):
        if k in cfg:
            key = ec_key(cfg[k], k)
            if production and _is_test_key(key):
                _fail("%s is a test key: a production terminal refuses it" % k)
    if production and "technician_key" not in cfg:
        _fail("a production config needs technician_key: nothing could unlock the terminal")
    if "uplink" in cfg:
        _uplink(cfg["uplink"], production)
        if "update_key" not in cfg:
            _fail("uplink needs update_key: bundles from the receiver could not be verified")
    if "wifi" in cfg:
        _wifi(cfg["wifi"])
    risk = _obj(cfg.setdefault("risk", {}), "risk", _RISK)
    for k in risk:
        _int(risk[k], "risk." + k, _RISK[k][0], _RISK[k][1])
    try:
        return rules.Policy.from_config(cfg)
    except rules.ConfigError as e:
        raise ConfigError(str(e))


def parse(text):
    """(config dict, rules.Policy) from the config's JSON text (str or bytes)."""
    if len(text) > MAX_BYTES:
        _fail("config larger than %d bytes" % MAX_BYTES)
    try:
        cfg = json.loads(text)
    except (ValueError, TypeError, UnicodeError):
        _fail("config is not JSON")
    return cfg, check(cfg)


def load(path):
    """(config dict, rules.Policy) from a file; ConfigError when it is missing,
    too large or refused."""
    try:
        size = os.stat(path)[6]
    except OSError:
        raise ConfigError("no config at %s: provision the terminal first" % path)
    if size > MAX_BYTES:
        _fail("config larger than %d bytes" % MAX_BYTES)
    with open(path, "rb") as f:
        text = f.read(size)  # bounded: size was checked above
    return parse(text)


def digest(path):
    """SHA-256 hex of a file, read in bounded chunks (provisioning's read-back)."""
    h = hashlib.sha256()
    buf = bytearray(512)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(memoryview(buf)[:n])
    return "".join("%02x" % b for b in h.digest())


def report(path):
    """One line for the technician CLI: "CONFIG OK <sha256> <mode>" or
    "CONFIG REFUSED <reason>". Never raises for a bad config."""
    try:
        cfg, _ = load(path)
    except ConfigError as e:
        return "CONFIG REFUSED %s" % (e,)
    return "CONFIG OK %s %s" % (digest(path), cfg["mode"])


def reloader(path, appliers):
    """The running app's reload: a callable that loads `path`, and only if the
    whole config is valid hands (cfg, policy) to each applier in order.
    Returns "ok <sha256> <mode>" or "refused <why>" (nothing applied). The
    technician CLI calls it through pos.console.reload()."""
    def reload():
        try:
            cfg, policy = load(path)
        except ConfigError as e:
            return "refused %s" % (e,)
        for fn in appliers:
            fn(cfg, policy)
        return "ok %s %s" % (digest(path), cfg["mode"])
    return reload
