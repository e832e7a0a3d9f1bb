"""The receiver's own check of one uploaded payment (docs/upload.md section 5):
both signatures with `cryptography`, and every rule of PROTOCOL.md section 6
that does not need the terminal's wallet table. Stateless per record; the
checks that need other records (double spending, the offline limit, the
terminal's clock) are made by storage.py inside the database transaction.

A credential's parse, its loaded device key and its issuer signature's
verdict are cached by the credential's SHA-256 (as the terminal does): a
returning wallet costs one signature verification."""
import hashlib
import threading

from host_tools import records

_CACHE_MAX = 65536


class Verdict:
    """One record's fields as stored, and why it is flagged (`reasons`)."""

    __slots__ = ("record_id", "payload", "digest", "issuer_kid", "wallet_id", "serial", "counter",
                 "amount", "currency", "merchant_id", "reference", "seq", "time", "cursor",
                 "offline_limit", "genuine", "reasons", "detail")

    def __init__(self, record_id, payload):
        self.record_id, self.payload = record_id, payload
        self.digest = hashlib.sha256(payload).digest()
        self.issuer_kid = self.wallet_id = self.serial = self.merchant_id = self.reference = None
        self.counter = self.amount = self.currency = self.seq = self.time = self.cursor = None
        self.offline_limit = None
        self.genuine = False          # both signatures verify with a known issuer key
        self.reasons = []
        self.detail = ""

    def flag(self, reason):
        if reason not in self.reasons:
            self.reasons.append(reason)

    @property
    def status(self):
        return "flagged" if self.reasons else "ok"


class _Cred:
    __slots__ = ("cred", "error", "issuer_ok", "device_pub")

    def __init__(self, cred=None, error="", issuer_ok=False, device_pub=None):
        self.cred, self.error, self.issuer_ok, self.device_pub = cred, error, issuer_ok, device_pub


class Checker:
    def __init__(self, config):
        self.config = config
        self._cache = {}
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def _credential(self, raw):
        h = hashlib.sha256(raw).digest()
        c = self._cache.get(h)
        if c is not None:
            self.hits += 1
            return c
        self.misses += 1
        try:
            cred = records.parse_credential(raw)
        except records.RecordError as e:
            c = _Cred(error=str(e))
        else:
            iss = self.config.issuers.get(cred["issuer_kid"])
            issuer_ok = iss is not None and iss.alg_code == cred["issuer_alg"] and \
                records.verify_loaded(iss.alg, iss.public, cred["signed"], cred["issuer_sig"])
            try:
                pub = records.load_public("ES256", cred["device_key"]) if cred["device_alg"] == 1 else None
            except ValueError:
                pub = None  # not a point on P-256: the device signature cannot verify
            c = _Cred(cred, "", issuer_ok, pub)
        with self._lock:
            if len(self._cache) >= _CACHE_MAX:
                del self._cache[next(iter(self._cache))]
            self._cache[h] = c
        return c

    def check(self, record_id, payload, terminal_id, now, merchant_id=None):
        """A Verdict on one record uploaded by `terminal_id` (8 bytes) at time
        `now`; merchant_id: the one the config names for this terminal, if any."""
        v = Verdict(record_id, payload)
        try:
            rec = records.parse_record(payload)
        except records.RecordError as e:
            v.flag("malformed")
            v.detail = str(e)
            return v
        t = rec["time"]
        v.amount, v.currency, v.time, v.seq = rec["amount"], rec["currency"], t, rec["seq"]
        v.counter, v.cursor = rec["counter"], rec["cursor"]
        v.merchant_id = rec["merchant_id"].decode("utf-8", "backslashreplace")
        v.reference = rec["reference"].decode("utf-8", "backslashreplace")
        c = self._credential(rec["credential"])
        if c.error:
            v.flag("malformed")
            v.detail = c.error
            return v
        cred = c.cred
        v.issuer_kid, v.wallet_id, v.serial = cred["issuer_kid"].hex(), cred["wallet_id"].hex(), cred["serial"].hex()
        v.offline_limit = cred["offline_limit"]
        cfg = self.config
        # PROTOCOL.md section 6, in its order.
        if rec["version"] != 1:
            v.flag("unsupported")
        iss = cfg.issuers.get(cred["issuer_kid"])
        if iss is None:
            v.flag("issuer-unknown")
        else:
            if iss.alg_code != cred["issuer_alg"] or not iss.not_before <= t <= iss.not_after:
                v.flag("issuer-key-invalid")
            if not c.issuer_ok:
                v.flag("bad-issuer-sig")
        device_ok = False
        if cred["device_alg"] != 1 or rec["sig_alg"] != 1:
            v.flag("unsupported")
        elif c.device_pub is not None:
            device_ok = records.verify_loaded("ES256", c.device_pub, records.device_message(rec), rec["device_sig"])
        if t < cred["not_before"]:
            v.flag("not-yet-valid")
        if t > cred["not_after"]:
            v.flag("expired")
        if cred["issuer_kid"] + cred["wallet_id"] in cfg.deny_wallets \
                or cred["issuer_kid"] + cred["serial"] in cfg.deny_serials:
            v.flag("deny-listed")
        if cred["currency"] != rec["currency"]:
            v.flag("currency")
        if rec["amount"] > cred["tap_limit"]:
            v.flag("over-tap-limit")
        if not device_ok:
            v.flag("bad-device-sig")
        # What only the acquirer can check: the payment names the terminal that
        # uploaded it (and its merchant), and a time the acquirer has not reached.
        if rec["terminal_id"] != terminal_id:
            v.flag("terminal-mismatch")
        if merchant_id is not None and v.merchant_id != merchant_id:
            v.flag("merchant-mismatch")
        if t > now + cfg.max_clock_skew:
            v.flag("time-in-future")
        v.genuine = iss is not None and c.issuer_ok and device_ok
        return v
