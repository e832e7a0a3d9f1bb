# Offline risk rules: the terminal's decision on a wallet token, as pure logic.
#
# Order matters twice over. Cheap static checks come before the device signature
# check so a returning wallet's decline costs little (a first-seen wallet's two
# signatures are checked together, sharing an inversion, and only the issuer's
# verdict is read before the cheap checks); signatures come before stateful
# checks so nothing a phone sends touches the wallet table before it is proven
# genuine. The table itself
# only changes in commit(), which the app calls after the record is on flash.
# Wallet state (counter, offline spend, newest credential, deny entries) is
# keyed by issuer key id and wallet id together.

import hashlib

from micropython import const

from pos import p256, reason, tlv, token
from pos.sig import is_warm, verify, verify_pair, warm

_ALG_NAMES = {token.ALG_ES256: "ES256", token.ALG_RS256: "RS256"}
_ALGS = {"ES256": token.ALG_ES256, "RS256": token.ALG_RS256}

# A wallet is named by (issuer key id, wallet id): a wallet id is only unique
# within its issuer, and an issuer must not be able to touch another issuer's
# wallets' counters or spend by reusing their ids (PROTOCOL.md section 6).
_ID = const(24)            # issuer key id (8) + wallet id (16)
_GEN = const(12)           # newest credential seen: not-before (4) + serial (8)
_KEY = const(36)           # _ID + _GEN: what wallet_key() returns
_SLOT = const(44)          # _KEY + last counter (4) + offline spend (4)
_PAGE = const(32)          # slots per page (1408 bytes)
_CACHE_MAX = const(16)     # credentials whose issuer signature is already verified
_MAX_ISSUERS = const(16)
_MAX_DENY = const(1024)


class ConfigError(ValueError):
    pass


class Issuer:
    def __init__(self, kid, alg, key, not_before, not_after):
        self.kid = kid
        self.alg = alg
        self.key = key
        self.not_before = not_before
        self.not_after = not_after


def _hex(s, n=None):
    try:
        b = bytes.fromhex(s)
    except (ValueError, TypeError):
        raise ConfigError("not hex: %r" % (s,))
    if n is not None and len(b) != n:
        raise ConfigError("expected %d bytes: %r" % (n, s))
    return b


def wallet_key(cred):
    """The wallet table's key for a credential: issuer kid + wallet id (which
    wallet) + not-before + serial (which of its credentials; compared as bytes,
    that is by not-before, then serial)."""
    return key_of(cred.issuer_kid, cred.wallet_id, cred.not_before, cred.serial)


def key_of(kid, wallet_id, not_before, serial):
    """wallet_key() from the fields themselves (boot replays the journal
    without parsing whole credentials)."""
    return bytes(kid) + bytes(wallet_id) + not_before.to_bytes(4, "big") + bytes(serial)


def _pair(e):
    # A deny-list wallet entry: ["<issuer kid, 16 hex>", "<wallet id, 32 hex>"],
    # or those 24 bytes already decoded (pos.bundle decodes a bundle's).
    if isinstance(e, bytes):
        if len(e) != 24:
            raise ConfigError("deny.wallets entries are [kid, wallet id] pairs: a bare wallet id names no issuer")
        return e
    if isinstance(e, str):
        raise ConfigError("deny.wallets entries are [\"<kid 16 hex>\", \"<wallet id 32 hex>\"] "
                          "pairs: a bare wallet id %r names no issuer" % (e,))
    if not isinstance(e, (list, tuple)) or len(e) != 2:
        raise ConfigError("not a [kid, wallet id] pair: %r" % (e,))
    return _hex(e[0], 8) + _hex(e[1], 16)


def _serial(e):
    # A deny-list credential: issuer kid + serial, 32 hex, or its 16 bytes.
    if isinstance(e, bytes) and len(e) == 16:
        return e
    return _hex(e, 16)


def _u32(v):
    if not isinstance(v, int) or not 0 <= v <= 0xFFFFFFFF:
        raise ConfigError("not a u32: %r" % (v,))
    return v


class Keys:
    """A set of equal-length byte strings (deny-list entries) held as one bytes
    block: a set of 100 bytes objects took three times the heap (7.5 KB in
    the 64-bit unix port), and with a full bundle the taps after it ran out of
    heap. `in` is a find() over the block, aligned: no allocation."""

    def __init__(self, keys, size):
        self.size = size
        self._b = b"".join(set(keys))

    def __contains__(self, key):
        k = self.size
        if len(key) != k:
            return False
        b = self._b
        i = b.find(key)
        while i >= 0:
            if i % k == 0:
                return True
            i = b.find(key, i + 1)
        return False

    def __len__(self):
        return len(self._b) // self.size

    def __iter__(self):
        b, k = self._b, self.size
        for i in range(0, len(b), k):
            yield b[i:i + k]


class Policy:
    """What the terminal trusts: issuer public keys and the deny list."""

    def __init__(self, issuers=(), deny_wallets=(), deny_serials=(), by_reference=None):
        self.issuers = {}
        for i in issuers:
            self.issuers[i.kid] = i
        self.deny_wallets = Keys(deny_wallets, 24)  # issuer kid (8) + wallet id (16)
        self.deny_serials = Keys(deny_serials, 16)  # issuer kid (8) + serial (8)
        # The config's credential_by_reference (PROTOCOL.md 5.7, section 7);
        # None when the dict had no say (an uplink bundle's issuers and deny
        # list): the verifier then keeps what it had.
        self.by_reference = by_reference

    @classmethod
    def from_config(cls, cfg):
        """Build from the provisioned config dict: fields "issuers" and "deny"
        of the schema in PROTOCOL.md section 7. Anything outside it is a
        ConfigError, so a terminal never runs on a half-understood policy."""
        try:
            items = cfg["issuers"]
            deny = cfg.get("deny", {})
            if not isinstance(items, list) or not 1 <= len(items) <= _MAX_ISSUERS:
                raise ConfigError("issuers: a list of 1..%d keys" % _MAX_ISSUERS)
            issuers = []
            for it in items:
                alg = _ALGS.get(it["alg"])
                if alg is None:
                    raise ConfigError("unknown alg %r" % (it["alg"],))
                kid, key = _hex(it["kid"], 8), _hex(it["key"])
                # SEC1 compressed or uncompressed; an RSA modulus of 2048..4096 bits.
                if len(key) not in (33, 65) if alg == token.ALG_ES256 else not 256 <= len(key) <= 512:
                    raise ConfigError("issuer %s: %s key of %d bytes" % (it["kid"], it["alg"], len(key)))
                nb, na = _u32(it["not_before"]), _u32(it["not_after"])
                if nb > na:
                    raise ConfigError("issuer %s: not_before after not_after" % it["kid"])
                if any(i.kid == kid for i in issuers):
                    raise ConfigError("issuer %s listed twice" % it["kid"])
                issuers.append(Issuer(kid, alg, key, nb, na))
            if not isinstance(deny, dict):
                raise ConfigError("deny: an object")
            wallets = deny.get("wallets", [])
            serials = deny.get("serials", [])
            if not isinstance(wallets, list) or not isinstance(serials, list):
                raise ConfigError("deny.wallets and deny.serials: lists")
            if len(wallets) + len(serials) > _MAX_DENY:
                raise ConfigError("deny list too long")
            ref = cfg.get("credential_by_reference")
            if ref is not None and not isinstance(ref, bool):
                raise ConfigError("credential_by_reference: true or false")
            return cls(issuers, [_pair(w) for w in wallets], [_serial(s) for s in serials], ref)
        except (KeyError, AttributeError, TypeError) as e:
            raise ConfigError("bad policy: %r" % (e,))


class WalletTable:
    """Per wallet (issuer kid + wallet id): the newest credential seen, the last
    counter and the offline spend since the last sync, in fixed pages of slots.

    Keys are wallet_key() values: the first 24 bytes say which wallet, the last
    12 which of its credentials (the slot keeps the newest one seen).
    Bounded by construction: when full, new wallets are declined (CAPACITY) until
    the terminal syncs, rather than growing the heap or forgetting a counter.
    Pages of 1.4 KB rather than one block, so a fragmented heap can still hold it."""

    def __init__(self, capacity=256):
        self.capacity = capacity
        self.pages = [bytearray(_PAGE * _SLOT) for _ in range((capacity + _PAGE - 1) // _PAGE)]
        self.count = 0
        self._empty = bytes(_ID)  # all zero marks a free slot (a wallet id is never zero)

    def _find(self, key):
        # Open addressing; wallet ids are random (issuer-assigned), so their first
        # bytes hash well; the kid's are mixed in so that two issuers' equal ids
        # land apart. Returns (page, offset, found); page None when full.
        cap = self.capacity
        i = (((key[8] ^ key[0]) << 16) | ((key[9] ^ key[1]) << 8) | (key[10] ^ key[2])) % cap
        pages = self.pages
        ident = memoryview(key)[:_ID]
        for _ in range(cap):
            page = pages[i // _PAGE]
            o = (i % _PAGE) * _SLOT
            mv = memoryview(page)[o:o + _ID]
            if mv == ident:
                return page, o, True
            if mv == self._empty:
                return page, o, False
            i += 1
            if i == cap:
                i = 0
        return None, 0, False

    def get(self, key):
        """(last counter, offline spend, newest credential as not-before + serial)
        or None for a wallet not seen since it was last forgotten."""
        b, o, found = self._find(key)
        if not found:
            return None
        o += _KEY
        return (int.from_bytes(b[o:o + 4], "big"), int.from_bytes(b[o + 4:o + 8], "big"),
                bytes(b[o - _GEN:o]))

    def has_room(self, key):
        b, o, found = self._find(key)
        return found or (b is not None and self.count < self.capacity - 1)

    def put(self, key, counter, spent):
        """Store a wallet's counter and spend; its newest credential becomes the
        key's if that is newer than the one stored."""
        b, o, found = self._find(key)
        if not found:
            if b is None or self.count >= self.capacity - 1:
                raise MemoryError("wallet table full")
            self.count += 1
            b[o:o + _KEY] = key
        elif memoryview(key)[_ID:_KEY] > memoryview(b)[o + _ID:o + _KEY]:
            b[o + _ID:o + _KEY] = memoryview(key)[_ID:_KEY]
        o += _KEY
        b[o:o + 4] = counter.to_bytes(4, "big")
        b[o + 4:o + 8] = min(spent, 0xFFFFFFFF).to_bytes(4, "big")

    def clear(self):
        """Forget every wallet (after a sync the acquirer holds their records;
        the app replays what is still unacknowledged). The pages stay: no
        allocation."""
        for b in self.pages:
            for o in range(0, len(b), _SLOT):
                b[o:o + _ID] = self._empty
        self.count = 0

    def reset_spend(self):
        """After a sync the acquirer has the records: offline spend starts again,
        counters and newest credentials are kept so old authorizations and
        superseded credentials still cannot be used."""
        for b in self.pages:
            for o in range(_KEY + 4, len(b), _SLOT):
                b[o:o + 4] = b"\x00\x00\x00\x00"


class Request:
    """What this terminal asked for in one tap."""

    def __init__(self):
        self.amount = 0
        self.currency = 0
        self.time = 0
        self.data = None  # memoryview of the AUTHORIZE data field as sent


class Verifier:
    def __init__(self, policy, table=None):
        self.policy = policy
        self.table = table if table is not None else WalletTable()
        self.cache = {}
        self._f = [None] * len(token.RESPONSE_SPEC)
        self._msg = bytearray(token.MAX_SIGNED)
        self.cred = None
        self.counter = 0
        self.cache_hit = False
        self.no_hints = set()  # issuer kids whose hints proved wrong: not used again
        # Credential by reference (PROTOCOL.md 5.7): on unless the config says no.
        self.by_reference = policy.by_reference is not False
        self._held = None  # the cached credential held() found for this tap
        self._rf = [None] * len(token.REF_RESPONSE_SPEC)
        self._scratch = bytearray(token.SIGNED_FIELDS)

    def shed(self):
        """Drop what only saves time (verified credentials, wallets' key tables;
        issuer keys stay), e.g. when the heap runs short."""
        self.cache = {}
        p256.shed()

    def set_policy(self, policy):
        self.policy = policy
        self.cache = {}  # a re-provisioned key set invalidates what was verified
        if policy.by_reference is not None:
            self.by_reference = policy.by_reference

    def _credential(self, raw, now):
        # (credential, reason, its hash, issuer whose signature is still to be
        # verified or None when the cache vouches for it).
        h = hashlib.sha256(raw).digest()
        cred = self.cache.get(h)
        self.cache_hit = cred is not None
        if cred is None:
            try:
                cred = token.Credential(raw)
            except tlv.TLVError:
                return None, reason.MALFORMED, h, None
        iss = self.policy.issuers.get(cred.issuer_kid)
        if iss is None:
            return None, reason.ISSUER_UNKNOWN, h, None
        if iss.alg != cred.issuer_alg or not iss.not_before <= now <= iss.not_after:
            return None, reason.ISSUER_KEY_INVALID, h, None
        return cred, reason.APPROVED, h, None if self.cache_hit else iss

    # -- credential by reference (PROTOCOL.md 5.7) ------------------------------

    def offer_reference(self):
        """Whether to ask this tap's wallet for its credential by reference:
        switched on, and holding some credential it could name (an empty cache
        would only add the hash to the air)."""
        return self.by_reference and len(self.cache) > 0

    def held(self, data):
        """apdu.Chained's stop test for an answer by reference: True once the
        parts so far hold its fixed start (32..35) and the hash there names a
        credential this verifier has verified. That credential is kept for
        unreference(), so a cache dropped in between cannot lose it."""
        h = token.ref_head(data)
        self._held = self.cache.get(bytes(h)) if h is not None else None
        return self._held is not None

    def unreference(self, buf, n, stopped):
        """The answer by reference in bytearray `buf`[:n] (apdu.Chained's
        buffer), turned in place into the version-1 response it stands for
        (credential, counter, algorithm, signature: what check() decides on and
        the journal record holds). Returns (reason, response view or None).
        `stopped`: the exchange ended after the hash because held() knew it;
        else the whole answer came, and its credential (tag 36) must be the
        one its hash (tag 35) names. The device signature covers that hash, so
        a wallet cannot name one credential and sign for another."""
        if stopped:
            cred = self._held
            if cred is None or n < token.REF_HEAD:
                return reason.MALFORMED, None
            raw = cred.raw
        else:
            try:
                f = tlv.decode(memoryview(buf)[:n], token.REF_RESPONSE_SPEC, self._rf)
            except tlv.TLVError:
                return reason.MALFORMED, None  # also: no credential, unasked to omit it
            if hashlib.sha256(f[4]).digest() != f[3]:
                return reason.CRED_HASH, None
            raw = None  # tag 36, in place
        m = token.unreference(buf, n, raw, self._scratch)
        return reason.APPROVED, memoryview(buf)[:m]

    def _remember(self, h, cred):
        if len(self.cache) >= _CACHE_MAX:
            del self.cache[next(iter(self.cache))]
        self.cache[h] = cred

    def check(self, req, data):
        """Decide on the AUTHORIZE response `data` (without SW). Returns a reason
        code; on APPROVED, self.cred and self.counter describe the token."""
        self.cred = None
        f = self._f
        try:
            tlv.decode(data, token.RESPONSE_SPEC, f)
        except tlv.TLVError:
            return reason.MALFORMED
        now = req.time
        cred, r, h, iss = self._credential(f[0], now)
        if r:
            return r
        counter = tlv.uint(f[1])
        es256 = cred.device_alg == token.ALG_ES256 and f[2][0] == cred.device_alg
        hints = cred.device_hints if cred.issuer_kid not in self.no_hints else None
        device = None
        if es256:
            n = token.signed_message(self._msg, req.data, counter, cred.device_alg, h)
            device = ("ES256", cred.device_key, memoryview(self._msg)[:n], f[3], hints)
        device_ok = None
        if iss is not None:
            issuer = (_ALG_NAMES[iss.alg], iss.key, cred.signed_bytes(), cred.issuer_sig, None)
            if device is not None:
                # A first-seen wallet: both signatures at once (one inversion).
                # The device answer counts only once the issuer's has passed:
                # its key and hints come from this credential.
                issuer_ok, device_ok = verify_pair(issuer, device)
            else:
                issuer_ok = verify(*issuer)
            if not issuer_ok:
                return reason.ISSUER_SIG
            self._remember(h, cred)
        if not es256:
            return reason.UNSUPPORTED
        if now < cred.not_before:
            return reason.NOT_YET_VALID
        if now > cred.not_after:
            return reason.EXPIRED
        p = self.policy
        if (cred.issuer_kid + cred.wallet_id) in p.deny_wallets or \
                (cred.issuer_kid + cred.serial) in p.deny_serials:
            return reason.DENY_LISTED
        if cred.currency != req.currency:
            return reason.CURRENCY
        if req.amount > cred.tap_limit:
            return reason.OVER_TAP_LIMIT
        if device_ok is None:
            device_ok = verify(*device)
        if not device_ok:
            return reason.DEVICE_SIG
        key = wallet_key(cred)
        seen = self.table.get(key)
        spent = 0
        if seen is not None:
            # The issuer has re-issued this wallet's credential and the newer
            # one has paid here: the older one may carry a limit, device key
            # or validity the issuer has withdrawn (PROTOCOL.md section 6).
            if memoryview(key)[_ID:] < seen[2]:
                return reason.SUPERSEDED
            if counter <= seen[0]:
                return reason.COUNTER_REPLAY
            spent = seen[1]
        elif not self.table.has_room(key):
            return reason.CAPACITY
        if spent + req.amount > cred.offline_limit:
            return reason.OVER_OFFLINE_LIMIT
        self.cred = cred
        self.counter = counter
        return reason.APPROVED

    def warm(self, cred):
        """Idle work after a payment: build the device key's table, so the
        wallet's next verify is a warm one, and check the credential's hints
        against it (the table is computed from the key itself). Hints that
        differ are an issuer defect: that issuer's hints are not used again,
        and this returns False. MemoryError propagates."""
        if is_warm("ES256", cred.device_key) or not warm("ES256", cred.device_key):
            return True
        if cred.device_hints is not None and \
                p256.hints_match(cred.device_key, cred.device_hints) is False:
            self.no_hints.add(cred.issuer_kid)
            return False
        return True

    def commit(self, wallet_id, counter, amount):
        """Record the tap check() just approved; call only once its record is
        durable. The table key comes from that credential (issuer kid + wallet
        id + its age); `wallet_id` must be its wallet id."""
        cred = self.cred
        if cred is None or wallet_id != cred.wallet_id:
            raise ValueError("commit of a tap that was not just approved")
        key = wallet_key(cred)
        seen = self.table.get(key)
        self.table.put(key, counter, (seen[1] if seen else 0) + amount)
