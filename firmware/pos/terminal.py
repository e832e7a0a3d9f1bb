# Taking one payment: poll -> SELECT -> AUTHORIZE -> verify -> persist, with the
# reader's failures, a phone that moves away, a phone left on the reader, a
# slow or relayed phone, and a till that cancels.
#
# Every wait on the reader is awaited (pos.pn532's *_async), so the loop keeps
# answering the till (STATUS, CANCEL) and feeding the watchdog during a tap. A
# payment is approved only after journal.append() has returned: the record is
# on flash, and from then on the answer is APPROVED whatever fails afterwards.

import asyncio
import gc
import os
import time

from micropython import const

from pos import apdu, reason, record, rules, tlv, token
from pos.apdulog import ApduLog
from pos.journal import JournalError
from pos.outcomes import Outcomes
from pos.pn532 import PN532Error, PN532Timeout, TargetLost
from pos.seqno import SeqError

_POLL_MS = const(60)           # one InListPassiveTarget attempt
_CHARGE_TIMEOUT_MS = const(30000)
# The AUTHORIZE exchange, command to last part, must finish within this: the
# phone signs inside it (TEE-backed keys take tens of ms, StrongBox-class
# secure elements a few hundred), and a relay to a phone far away needs more.
_RELAY_MS = const(600)
_SELECT_MS = const(1000)
# A new tap is taken only once the field has stayed empty this long: a phone
# resting on the reader drops out of the field for 100-150 ms now and then,
# and a customer who lifts the phone away to pay again takes longer than this.
_REMOVAL_MS = const(1000)
_PRESENCE_MS = const(50)
_MAX_ATTEMPTS = const(3)       # failed exchanges (no decision) per charge
_RETRY_PAUSE_MS = const(400)   # time to present the phone again
_MAX_READER_FAILURES = const(3)
_MAX_AMOUNT = const(0x7FFFFFFF)
RECORD_MAX = record.MAX


class _RelayTimeout(Exception):
    pass


class Terminal:
    def __init__(self, nfc, journal, verifier, cfg, feedback, clock=time.time, log=print,
                 bufs=None, seq=None, outcomes=None):
        self.nfc = nfc
        self.journal = journal
        self.verifier = verifier
        self.apply(cfg)
        self.feedback = feedback
        self.clock = clock
        self.log = log
        self.state = "idle"
        self.link_up = None  # callable -> bool, set by main()
        self.seq = seq  # pos.seqno.Sequence: never reused, also across reboots
        self.outcomes = outcomes or Outcomes(journal)
        self._cmd = bytearray(96)
        self._chained, self._rec = bufs or (apdu.Chained(), bytearray(RECORD_MAX))
        self._req = rules.Request()
        self._cancel = False
        self._committed = False   # AUTHORIZE sent: CANCEL can no longer stop it
        self._rid = None          # record id once this charge's payment is durable
        self._field_busy = False  # a phone from the last tap may still be there
        self._t_auth = 0
        self._to_warm = None  # credential of a wallet that just paid, for idle_work()
        self.gate = None      # callable -> reason code (0: may take payments), the clock's
        self.uplink = None    # pos.uplink.Uplink, told when a charge starts
        self._stale = False   # the display says the clock or sync is missing
        self.timing = {}
        self.apdulog = ApduLog(2048)  # the recent exchanges (about two taps), for `offpay logs` / replay
        self.nfc_baud = None  # HSU line rate after start-up, if the board raised it
        # An emulated board's counters: (us in emulated hardware, flash
        # counters...); logged per phase so the tap bench can tell firmware
        # time from the emulation's. None on a device.
        self.probe = None

    def apply(self, cfg):
        """Take a (validated, pos.config) config's charge settings; a charge in
        progress keeps the ones it started with only where it read them."""
        self.terminal_id = bytes.fromhex(cfg["terminal_id"])
        self.merchant_id = cfg["merchant_id"].encode()
        self.currency = cfg["currency"]
        self.charge_timeout = cfg.get("charge_timeout_ms", _CHARGE_TIMEOUT_MS)
        self.relay_ms = cfg.get("relay_ms", _RELAY_MS)
        self.removal_ms = cfg.get("removal_ms", _REMOVAL_MS)

    # -- the till's view --------------------------------------------------------

    def cancel(self):
        """The till's CANCEL. None: no charge in progress; True: honoured (no
        AUTHORIZE will be sent for this charge); False: too late, AUTHORIZE is
        out and the real result follows. Either way the charge takes no
        further attempt."""
        if self.state == "idle":
            return None
        self._cancel = True
        return not self._committed

    def status(self):
        up = self.link_up() if self.link_up else False
        return self.state, self.journal.pending(), up

    def _say(self, led, beep, text):
        # The display, LED and buzzer only tell; none of their failures may
        # change what the till hears.
        fb = self.feedback
        try:
            if led:
                fb.led(led)
            if beep:
                fb.beep(beep)
            if text is not None:
                fb.show(text)
        except Exception as e:  # noqa: any driver fault, OSError or a bug alike
            try:
                self.log("FEEDBACK failed: %r" % (e,))
            except Exception:  # noqa: nothing left to tell it on
                pass

    def claim(self, ref):
        """Start a charge for `ref` now (the till's CHARGE): from here on
        STATUS says charging and a CANCEL, or the till going away, counts,
        even before charge() has run."""
        self._cancel = False
        self._committed = False
        self._rid = None
        self.state = "charging"
        self.outcomes.begin(ref)
        if self.uplink is not None:
            self.uplink.touch()  # an upload in progress gives way at its next step

    async def charge(self, amount, currency, ref):
        """Take one payment (claim() first, or it is claimed now). Returns
        (reason code, record id or None). Never raises once a record is
        durable: the answer is then APPROVED."""
        if self.state == "idle":
            self.claim(ref)
        code = reason.BAD_AMOUNT if not 0 < amount <= _MAX_AMOUNT or currency != self.currency \
            else (self.gate() if self.gate is not None else 0)
        if code:
            # Before any tap: a charge the terminal must not take at all. No
            # trusted time (never synced, never provisioned with one), or no
            # sync for longer than the risk parameters allow.
            self.state = "idle"
            self.outcomes.end(ref, code, None)
            if code == reason.CLOCK_UNSET or code == reason.OFFLINE_TOO_LONG:
                self._stale = True
                self._say("red", "error", "CLOCK NOT SET" if code == reason.CLOCK_UNSET
                          else "SYNC NEEDED")
            return code, None
        try:
            gc.collect()  # now, before the customer taps, not in the middle of a verify
            self._say("blue", None, "PAY %d.%02d" % (amount // 100, amount % 100))
            code, rid = await self._take(amount, currency, ref)
        except Exception as e:  # noqa: a bug must not lose a stored payment's answer
            try:
                self.log("ERROR charge failed: %r" % (e,))
            except Exception:  # noqa
                pass
            code, rid = (reason.APPROVED, self._rid) if self._rid is not None \
                else (reason.READER, None)
        finally:
            self.state = "idle"
            self._committed = False
        self.outcomes.end(ref, code, rid)
        if code == reason.APPROVED:
            self._say("green", "ok", "APPROVED")
        else:
            self._say("red", "error", "DECLINED " + reason.name(code))
        return code, rid

    def feedback_ready(self, clock_ok):
        """After a sync: a display that said the clock or a sync was missing
        says READY again."""
        if self._stale and clock_ok and self.state == "idle":
            self._stale = False
            self._say("off", None, "READY")

    def idle_work(self):
        """Work that would slow a tap down, done between taps: the journal
        erases its next block, so the next approval only programs flash; the
        key of a wallet that just paid gets its verification table, so its
        next verify needs 32 doublings (64 with hints, 256 without). A failure here
        loses nothing: append() erases (slowly) or declines with STORAGE, and
        a key without a table is verified cold."""
        try:
            self.journal.prepare()
        except (JournalError, OSError) as e:
            self.log("STORAGE prepare failed: %s" % (e,))
        self.outcomes.trim(self.journal.count())
        try:
            self.seq.idle()
        except SeqError as e:
            self.log("STORAGE %s" % (e,))
        cred = self._to_warm
        self._to_warm = None
        if cred is None:
            return
        try:
            ok = self.verifier.warm(cred)
        except MemoryError:
            self.log("WARM no heap for a key table")
            return
        if not ok:
            self.log("WARNING issuer %s signs wrong key hints: no longer used"
                     % cred.issuer_kid.hex())

    # -- one charge ------------------------------------------------------------

    def _mark(self):
        return time.ticks_us(), self.nfc.idle_us, self.probe() if self.probe else None

    def _phase(self, name, m):
        # name: wall us; name_idle: waiting on the reader; with an emulated
        # board's probe also name_hw (us in emulated hardware) and name_flash
        # (deltas of its flash counters, "/"-separated).
        tm = self.timing
        tm[name] = time.ticks_diff(time.ticks_us(), m[0])
        tm[name + "_idle"] = self.nfc.idle_us - m[1]
        if m[2] is not None:
            p = self.probe()
            tm[name + "_hw"] = p[0] - m[2][0]
            d = [p[i] - m[2][i] for i in range(1, len(p))]
            if any(d):
                tm[name + "_flash"] = "/".join(str(x) for x in d)

    def _left(self, start):
        return self.charge_timeout - time.ticks_diff(time.ticks_ms(), start)

    async def _take(self, amount, currency, ref):
        nfc = self.nfc
        start = time.ticks_ms()
        failures = 0
        attempts = 0
        while True:
            if self._cancel:
                return reason.CANCELLED, None
            left = self._left(start)
            if left <= 0:
                return reason.TIMEOUT, None
            if self._field_busy:
                # Never charge a phone that was left on the reader after the last
                # tap: the removal watcher must see the field empty first.
                if self.state != "waiting for removal":
                    self.state = "waiting for removal"
                    self._say(None, None, "REMOVE PHONE")
                await asyncio.sleep_ms(20)
                continue
            if self.state == "waiting for removal":
                self._say(None, None, "PAY %d.%02d" % (amount // 100, amount % 100))
            self.state = "charging"
            m = self._mark()
            try:
                target = await nfc.poll_async(_POLL_MS if left > _POLL_MS else left)
            except PN532Error as e:
                failures += 1
                self.log("READER poll failed (%s), recovering" % (e,))
                if not await self._recover() and failures >= _MAX_READER_FAILURES:
                    return reason.READER, None
                await asyncio.sleep_ms(50)
                continue
            if target is None:
                await asyncio.sleep_ms(0)
                continue
            self.timing = {}
            self._phase("activation", m)
            self._field_busy = True
            code, rid = reason.READER, None
            try:
                code, rid = await self._tap(amount, currency, ref, start)
            finally:
                await self._release()
                retry = code == reason.CARD_REMOVED or code == reason.PROTOCOL
                attempts += retry
                if not retry or attempts >= _MAX_ATTEMPTS or self._cancel:
                    # A decision (or a bug, or the last attempt): this phone
                    # must leave the field before the next charge can start.
                    asyncio.create_task(self._watch_removal())
            if not retry:
                return code, rid
            if attempts >= _MAX_ATTEMPTS:
                return code, None
            if self._cancel:
                return reason.CANCELLED, None
            # The exchange broke before any decision: nothing was charged, so
            # the same phone may be presented again, after a pause (a wallet
            # that keeps failing must not be asked to sign in a tight loop).
            self.log("TAP %s, present the phone again" % reason.name(code))
            self._say(None, "retry", "TAP AGAIN")
            self._field_busy = False
            self._committed = False
            await asyncio.sleep_ms(_RETRY_PAUSE_MS)

    async def _xfer_auth(self, cmd):
        # One command of the AUTHORIZE exchange, within the relay bound.
        left = self.relay_ms - time.ticks_diff(time.ticks_ms(), self._t_auth)
        if left <= 0:
            raise _RelayTimeout()
        try:
            r = await self.nfc.apdu_async(cmd, left)
        except PN532Timeout:
            raise _RelayTimeout()
        self.apdulog.add(cmd, r)
        return r

    async def _tap(self, amount, currency, ref, start):
        nfc = self.nfc
        tm = self.timing
        try:
            m = self._mark()
            left = self._left(start)
            r = await nfc.apdu_async(apdu.SELECT, _SELECT_MS if left > _SELECT_MS else max(left, 1))
            self.apdulog.add(apdu.SELECT, r)
            sw = apdu.parse_select(r)
            self._phase("select", m)
            if sw is not None:
                return reason.NO_WALLET, None
            # Credential by reference (PROTOCOL.md 5.7): only from a wallet that
            # lists the option, and while the verifier holds credentials.
            byref = self.verifier.offer_reference() and apdu.offers(r, apdu.OPT_BY_REFERENCE)
            # The last moment a CANCEL (or the charge's deadline) can stop this
            # charge: nothing between here and the AUTHORIZE waits.
            if self._cancel:
                return reason.CANCELLED, None
            if self._left(start) <= 0:
                return reason.TIMEOUT, None
            try:
                seq = self.seq.next()
            except SeqError as e:
                self.log("STORAGE %s" % (e,))
                return reason.STORAGE, None
            now = int(self.clock())
            n, data = apdu.build_authorize(self._cmd, self.terminal_id, self.merchant_id, amount,
                                           currency, os.urandom(token.UN_LEN), now, seq,
                                           apdu.P1_BY_REFERENCE if byref else 0)
            self._committed = True
            self.state = "authorizing"
            m = self._mark()
            self._t_auth = time.ticks_ms()
            sw, resp = await self._chained.exchange_async(
                self._xfer_auth, memoryview(self._cmd)[:n], self.verifier.held if byref else None)
            self._phase("authorize", m)
        except _RelayTimeout:
            self.log("TAP AUTHORIZE not answered within %d ms" % self.relay_ms)
            await self._recover()
            return reason.TIMEOUT, None
        except TargetLost:
            return reason.CARD_REMOVED, None
        except PN532Error as e:
            self.log("READER exchange failed: %s" % (e,))
            await self._recover()
            return reason.CARD_REMOVED, None
        except (apdu.APDUError, tlv.TLVError) as e:
            self.log("TAP PROTOCOL %s" % (e,))
            return reason.PROTOCOL, None
        if sw != apdu.SW_OK:
            return reason.WALLET_ERROR, None
        self.state = "deciding"
        req = self._req
        req.amount, req.currency, req.time, req.data = amount, currency, now, data
        m = self._mark()
        if byref:
            # The version-1 response it stands for: the verifier decides on it
            # and the journal record holds it, the credential included.
            tm["byref"] = "held" if self._chained.stopped else "sent"
            code, resp = self.verifier.unreference(self._chained.buf, len(resp),
                                                   self._chained.stopped)
            if code:
                return code, None
        try:
            code = self.verifier.check(req, resp)
        except MemoryError:
            # The caches only save time: drop them and decide again, rather
            # than turn a genuine customer away.
            self.verifier.shed()
            gc.collect()
            self.log("MEMORY low: verification caches dropped")
            code = self.verifier.check(req, resp)
        self._phase("verify", m)
        tm["cache"] = self.verifier.cache_hit
        if code != reason.APPROVED:
            return code, None
        m = self._mark()
        try:
            n = record.encode(self._rec, data, resp, ref, self.journal.cursor())
            rid = self.journal.append(memoryview(self._rec)[:n])
        except (JournalError, OSError, tlv.TLVError) as e:
            self.log("STORAGE %s" % (e,))
            return reason.STORAGE, None
        # Durable: from here on the answer is APPROVED, whatever fails.
        self._rid = rid
        self.outcomes.add(ref)
        self._phase("persist", m)
        cred = self.verifier.cred
        self.verifier.commit(cred.wallet_id, self.verifier.counter, amount)
        self._to_warm = cred
        return reason.APPROVED, rid

    async def _watch_removal(self):
        # The only user of the reader while a phone may still be in the field.
        # Done only when the field has stayed empty for removal_ms: a phone
        # that drops out for a moment and comes back is still the last payer.
        empty_since = None
        t0 = time.ticks_ms()
        while True:
            try:
                present = await self.nfc.present_async(_PRESENCE_MS)
            except PN532Error:
                present = True  # unknown is not empty
                await self._recover()
            now = time.ticks_ms()
            if present:
                empty_since = None
            elif empty_since is None:
                empty_since = now
            elif time.ticks_diff(now, empty_since) >= self.removal_ms:
                self._field_busy = False
                self.log("FIELD clear after %d ms" % time.ticks_diff(now, t0))
                return
            await asyncio.sleep_ms(20)

    async def _release(self):
        try:
            await self.nfc.release_async()
        except PN532Error:
            await self._recover()

    async def _recover(self):
        try:
            await self.nfc.recover_async()
            return True
        except PN532Error as e:
            self.log("READER recovery failed: %s" % (e,))
        if self.nfc_baud:
            # A reader that was power-cycled talks 115200 again: meet it there.
            # (Rare, and bounded by the driver's timeouts: done blocking.)
            try:
                self.nfc.transport.set_baudrate(115200)
                self.nfc.begin()
                self.nfc.set_baudrate(self.nfc_baud)
                self.log("READER restarted at %d baud" % self.nfc_baud)
                return True
            except (PN532Error, ValueError) as e:
                self.log("READER restart failed: %s" % (e,))
        return False
