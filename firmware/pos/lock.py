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
# The terminal's clock may be wrong; the nonce, not the clock, makes a token
# fresh, and the clock only bounds how long the console stays open.
#
# What this protects and what it cannot: README, "Hardening".
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
        self._nonce = None
        self._issued = 0
        self._fails = 0
        self._penalty = None

    def is_open(self):
        if not self.production:
            return True
        if self.until is None:
            return False
        if int(self.clock()) >= self.until:
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
            return None
        return "bad-time"
