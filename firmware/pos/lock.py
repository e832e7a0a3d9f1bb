# Production lock: who may use the terminal's USB console.
#
# A terminal in production mode starts locked. While the app runs it reads
# the console itself (pos.console) with micropython.kbd_intr(-1), so Ctrl-C
# never breaks into the REPL and mpremote cannot get a raw REPL. Only a
# technician's unlock opens it, for a limited time:
#
#   terminal -> "OFFPAY CHALLENGE <terminal id> <nonce> <now>"   (fresh nonce)
#   tool     -> "OFFPAY UNLOCK <until> <signature>"
#
# The signature is ES256 (r || s) by the technician key pinned in the config
# (`technician_key`) over
#
#   "OFFPAY-UNLOCK-V1" 00 || terminal id (8) || nonce (16) || until (u32, big-endian)
#
# `until` is a time on the terminal's own clock (the challenge says what that
# clock reads), at most MAX_UNLOCK_S ahead. A token opens only this terminal,
# only for the challenge it answers, and only once: a challenge is consumed by
# the first answer, right or wrong, and expires after _CHALLENGE_MS. After
# _MAX_FAILS wrong answers the terminal refuses challenges for _PENALTY_MS.
# The terminal's clock may be wrong, or unset (0) until its first sync; the
# nonce, not the clock, makes a token fresh. The clock only says how long
# the unlock lasts (until - now, as the challenge gave now), and that long is
# then counted in ticks: a sync that moves the clock neither ends an unlock
# early nor stretches it.
#
# A config that does not load must not open the console: fallback() decides
# the lock of such a terminal from what is on its flash (the config's own
# text, read leniently, and the lock record that remember() keeps beside it
# while a production config runs), and stays locked unless nothing there says
# "production". Such a terminal is reachable only by a signed unlock with
# the technician key found there, or by a re-flash.
#
# What this protects and what it cannot: README, "Hardening".
import json
import os
import time

from micropython import const

from pos import sig

DOMAIN = b"OFFPAY-UNLOCK-V1\x00"
NONCE_LEN = const(16)
MAX_UNLOCK_S = const(8 * 3600)
_CHALLENGE_MS = const(120000)
_MAX_FAILS = const(3)
_PENALTY_MS = const(60000)
_RECORD = "lock.json"
_RECORD_MAX = const(512)
_CONFIG_MAX = const(32768)  # pos.config.MAX_BYTES: a bigger file is not a config
_NO_ID = b"\x00" * 8


def message(terminal_id, nonce, until):
    """The bytes an unlock token signs."""
    return DOMAIN + bytes(terminal_id) + bytes(nonce) + until.to_bytes(4, "big")


class Lock:
    def __init__(self, terminal_id, key, production, clock=time.time):
        """terminal_id: 8 bytes; key: the technician's SEC1 public key (bytes)
        or None; production: start locked."""
        self.terminal_id = terminal_id
        self.key = key
        self.production = production
        self.clock = clock
        self.until = None  # open until this time (terminal clock); None: see production
        self._opened = 0   # ticks_ms when the unlock was accepted
        self._open_ms = 0  # ... and for how long
        self._nonce = None
        self._issued = 0
        self._fails = 0
        self._penalty = None

    def is_open(self):
        if not self.production:
            return True
        if self.until is None:
            return False
        if time.ticks_diff(time.ticks_ms(), self._opened) >= self._open_ms:
            self.until = None  # the unlock ran out: locked again
            return False
        return True

    def engage(self):
        """Lock now (a technician's `offpay lock`, or the end of a session)."""
        self.until = None
        self._nonce = None

    def challenge(self):
        """(nonce, now) for a new unlock, or None while refusing after failures."""
        if self._penalty is not None:
            if time.ticks_diff(time.ticks_ms(), self._penalty) < _PENALTY_MS:
                return None
            self._penalty = None
            self._fails = 0
        self._nonce = os.urandom(NONCE_LEN)
        self._issued = time.ticks_ms()
        return self._nonce, int(self.clock())

    def unlock(self, until, signature):
        """Check a token; None when the console is now open, else why not."""
        nonce, self._nonce = self._nonce, None  # one answer per challenge
        if nonce is None or time.ticks_diff(time.ticks_ms(), self._issued) > _CHALLENGE_MS:
            return "no-challenge"
        if self.key is None:
            return "no-technician-key"
        now = int(self.clock())
        ok = isinstance(until, int) and now < until <= now + MAX_UNLOCK_S
        if ok:
            ok = sig.verify("ES256", self.key, message(self.terminal_id, nonce, until), signature)
            if not ok:
                self._fails += 1
                if self._fails >= _MAX_FAILS:
                    self._penalty = time.ticks_ms()
                return "bad-signature"
            self._fails = 0
            self.until = until
            self._opened = time.ticks_ms()
            self._open_ms = (until - now) * 1000
            return None
        return "bad-time"


# -- when the config does not load --------------------------------------------

def record_path(config_path):
    """The lock record's file: beside the config."""
    return config_path.rsplit("/", 1)[0] + "/" + _RECORD


def remember(config_path, cfg):
    """Keep the lock record in step with the config that now runs: a
    production config's terminal id and technician key are written (only
    when they changed: this runs at every boot), a test config removes the
    record. OSError if the file system refuses."""
    path = record_path(config_path)
    if cfg.get("mode") != "production":
        try:
            os.remove(path)
        except OSError:
            pass  # none: nothing to forget
        return
    # Both are hex strings pos.config has checked: nothing to escape.
    text = '{"terminal_id":"%s","technician_key":"%s"}' % (cfg["terminal_id"], cfg["technician_key"])
    if _read(path, _RECORD_MAX) == text:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.rename(tmp, path)  # atomic on littlefs: the old record or the new one


def _read(path, limit):
    # The file's text; None when there is none; False when it is unreadable
    # (too big, or not text).
    try:
        size = os.stat(path)[6]
    except OSError:
        return None
    if size > limit:
        return False
    try:
        with open(path) as f:
            return f.read(size)
    except (OSError, UnicodeError):
        return False


def _load(path, limit):
    # A JSON object file: the dict; None when there is no file; False when
    # there is one but it is not a JSON object (empty, too big, garbled).
    text = _read(path, limit)
    if text is None:
        return None
    try:
        v = json.loads(text) if text else None
    except (ValueError, TypeError):
        return False
    return v if isinstance(v, dict) else False


def _key(v):
    from pos import config
    try:
        return config.ec_key(v, "technician_key")
    except config.ConfigError:
        return None


def _tid(v):
    try:
        b = bytes.fromhex(v)
    except (TypeError, ValueError):
        return None
    return b if len(b) == 8 else None


def fallback(config_path, clock=time.time):
    """The Lock of a terminal whose config did not load (missing, unreadable
    or refused by pos.config). Open only when nothing on flash says the
    terminal was in production: no lock record, and no config at all (a
    fresh board) or a JSON config whose mode is not "production". Otherwise
    locked, and unlocked only by the technician key of the config (if it is
    still a usable key) or of the record; with neither, only a re-flash
    reaches the terminal."""
    rec = _load(record_path(config_path), _RECORD_MAX)
    cfg = _load(config_path, _CONFIG_MAX)
    tid = key = None
    for src in (cfg, rec):
        if src:
            tid = tid or _tid(src.get("terminal_id"))
            key = key or _key(src.get("technician_key"))
    production = rec is not None or cfg is False or (cfg is not None and cfg.get("mode") == "production")
    return Lock(tid or _NO_ID, key, production, clock)
