# Taking one payment: poll -> SELECT -> AUTHORIZE -> verify -> persist, with the
# reader's failures, a phone that moves away, and a phone left on the reader.
#
# The NFC driver's calls are short and bounded by their own timeouts, so the loop
# stays responsive to the till (CANCEL, STATUS) between them. A payment is
# approved only after journal.append() has returned: the record is on flash.

import asyncio
import gc
import os
import time

from micropython import const

from pos import apdu, reason, rules, till, tlv, token
from pos.journal import JournalError
from pos.pn532 import PN532Error, TargetLost

_POLL_MS = const(60)           # one InListPassiveTarget attempt
_CHARGE_TIMEOUT_MS = const(30000)
_MAX_READER_FAILURES = const(3)
_MAX_AMOUNT = const(0x7FFFFFFF)
_T_REQUEST = const(0x41)
_T_RESPONSE = const(0x42)
_T_REFERENCE = const(0x43)
RECORD_MAX = const(1400)
_RECORD_SPEC = ((_T_REQUEST, 1, token.MAX_REQUEST, True),
                (_T_RESPONSE, 1, token.MAX_RESPONSE, True),
                (_T_REFERENCE, 0, till.MAX_REF, True))


class Terminal:
    def __init__(self, nfc, journal, verifier, cfg, feedback, clock=time.time, log=print,
                 bufs=None):
        self.nfc = nfc
        self.journal = journal
        self.verifier = verifier
        self.terminal_id = bytes.fromhex(cfg["terminal_id"])
        self.merchant_id = cfg["merchant_id"].encode()
        self.currency = cfg["currency"]
        self.charge_timeout = cfg.get("charge_timeout_ms", _CHARGE_TIMEOUT_MS)
        self.feedback = feedback
        self.clock = clock
        self.log = log
        self.state = "idle"
        self.link_up = None  # callable -> bool, set by main()
        self.seq = journal.next_rid()
        self._cmd = bytearray(96)
        self._chained, self._rec = bufs or (apdu.Chained(), bytearray(RECORD_MAX))
        self._req = rules.Request()
        self._cancel = False
        self._field_busy = False  # a phone from the last tap may still be there
        self._to_warm = None  # credential of a wallet that just paid, for idle_work()
        self.timing = {}
        self.nfc_baud = None  # HSU line rate after start-up, if the board raised it
        # An emulated board's counters: (us in emulated hardware, flash
        # counters...); logged per phase so the tap bench can tell firmware
        # time from the emulation's. None on a device.
        self.probe = None

    # -- the till's view --------------------------------------------------------

    def cancel(self):
        if self.state == "idle":
            return False
        self._cancel = True
        return True

    def status(self):
        up = self.link_up() if self.link_up else False
        return self.state, self.journal.pending(), up

    async def charge(self, amount, currency, ref):
        """Take one payment. Returns (reason code, record id or None)."""
        if not 0 < amount <= _MAX_AMOUNT or currency != self.currency:
            self.state = "idle"
            return reason.BAD_AMOUNT, None
        self._cancel = False
        self.state = "charging"
        gc.collect()  # now, before the customer taps, not in the middle of a verify
        self.feedback.show("PAY %d.%02d" % (amount // 100, amount % 100))
        self.feedback.led("blue")
        try:
            code, rid = await self._take(amount, currency, ref)
        finally:
            self.state = "idle"
        if code == reason.APPROVED:
            self.feedback.led("green")
            self.feedback.beep("ok")
            self.feedback.show("APPROVED")
        else:
            self.feedback.led("red")
            self.feedback.beep("error")
            self.feedback.show("DECLINED " + reason.name(code))
        return code, rid

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

    async def _take(self, amount, currency, ref):
        nfc = self.nfc
        start = time.ticks_ms()
        failures = 0
        while True:
            if self._cancel:
                return reason.CANCELLED, None
            if time.ticks_diff(time.ticks_ms(), start) > self.charge_timeout:
                return reason.TIMEOUT, None
            if self._field_busy:
                # Never charge a phone that was left on the reader after the last
                # tap: the removal watcher must see the field empty first.
                self.state = "waiting for removal"
                await asyncio.sleep_ms(20)
                continue
            self.state = "charging"
            m = self._mark()
            try:
                target = await nfc.poll_async(_POLL_MS)
            except PN532Error as e:
                failures += 1
                self.log("READER poll failed (%s), recovering" % (e,))
                if not self._recover() and failures >= _MAX_READER_FAILURES:
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
                code, rid = self._tap(amount, currency, ref)
            finally:
                self._release()
                retry = code == reason.CARD_REMOVED or code == reason.PROTOCOL
                if not retry:
                    # A decision (or a bug) happened: this phone must leave first.
                    asyncio.create_task(self._watch_removal())
            if retry:
                # The exchange broke before any decision: nothing was charged, so
                # the same phone may simply be presented again.
                self.log("TAP %s, present the phone again" % reason.name(code))
                self.feedback.show("TAP AGAIN")
                self.feedback.beep("retry")
                self._field_busy = False
                continue
            # The phone may stay on the reader: the result goes out now, and the
            # next charge first waits for the field to clear (see above).
            return code, rid

    def _tap(self, amount, currency, ref):
        nfc = self.nfc
        tm = self.timing
        try:
            m = self._mark()
            sw = apdu.parse_select(nfc.apdu(apdu.SELECT))
            self._phase("select", m)
            if sw is not None:
                return reason.NO_WALLET, None
            self.seq += 1
            now = int(self.clock())
            n, data = apdu.build_authorize(self._cmd, self.terminal_id, self.merchant_id, amount,
                                           currency, os.urandom(token.UN_LEN), now, self.seq)
            m = self._mark()
            sw, resp = self._chained.exchange(nfc.apdu, memoryview(self._cmd)[:n])
            self._phase("authorize", m)
        except TargetLost:
            return reason.CARD_REMOVED, None
        except PN532Error as e:
            self.log("READER exchange failed: %s" % (e,))
            self._recover()
            return reason.CARD_REMOVED, None
        except (apdu.APDUError, tlv.TLVError):
            return reason.PROTOCOL, None
        if sw != apdu.SW_OK:
            return reason.WALLET_ERROR, None
        req = self._req
        req.amount, req.currency, req.time, req.data = amount, currency, now, data
        m = self._mark()
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
            rid = self._persist(data, resp, ref)
        except (JournalError, OSError, tlv.TLVError) as e:
            self.log("STORAGE %s" % (e,))
            return reason.STORAGE, None
        self._phase("persist", m)
        cred = self.verifier.cred
        self.verifier.commit(cred.wallet_id, self.verifier.counter, amount)
        self._to_warm = cred
        return reason.APPROVED, rid

    def _persist(self, data, resp, ref):
        buf = self._rec
        pos = tlv.put(buf, 0, _T_REQUEST, data)
        if pos + len(resp) + len(ref) + 8 > len(buf):
            raise tlv.TLVError("record too large")
        pos = tlv.put(buf, pos, _T_RESPONSE, resp)
        pos = tlv.put(buf, pos, _T_REFERENCE, ref)
        return self.journal.append(memoryview(buf)[:pos])

    async def _watch_removal(self):
        # The only user of the reader while a phone may still be in the field.
        while self._field_busy:
            try:
                if not await self.nfc.present_async():
                    self._field_busy = False
                    return
            except PN532Error:
                self._recover()
            await asyncio.sleep_ms(50)

    def _release(self):
        try:
            self.nfc.release()
        except PN532Error:
            self._recover()

    def _recover(self):
        try:
            self.nfc.recover()
            return True
        except PN532Error as e:
            self.log("READER recovery failed: %s" % (e,))
        if self.nfc_baud:
            # A reader that was power-cycled talks 115200 again: meet it there.
            try:
                self.nfc.transport.set_baudrate(115200)
                self.nfc.begin()
                self.nfc.set_baudrate(self.nfc_baud)
                self.log("READER restarted at %d baud" % self.nfc_baud)
                return True
            except (PN532Error, ValueError) as e:
                self.log("READER restart failed: %s" % (e,))
        return False


def decode_record(payload):
    """(request data, response data, reference) views of a journal payload."""
    f = tlv.decode(payload, _RECORD_SPEC, [None] * 3)
    return f[0], f[1], f[2]
