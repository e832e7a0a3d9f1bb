# The terminal application: one asyncio loop serving the till link and taking taps.
#
#   idle -> charge -> field on, poll -> SELECT -> AUTHORIZE -> verify -> persist
#        -> approved/declined feedback -> wait for the phone to leave -> idle
#
# The NFC driver's calls are short and bounded by their own timeouts, so the loop
# stays responsive to the till (CANCEL, STATUS) between them. A payment is
# approved only after journal.append() has returned: the record is on flash.

import asyncio
import gc
import os
import sys
import time

from micropython import const

# The 16 KB P-256 G table at boot, not at the first tap: that tap should neither
# pay for the import nor look for 4 KB blocks in a heap the imports fragmented.
from pos import p256_gtab  # noqa: F401
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
        self.timing = {}
        self.nfc_baud = None  # HSU line rate after start-up, if the board raised it

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

    # -- one charge ------------------------------------------------------------

    async def _take(self, amount, currency, ref):
        nfc = self.nfc
        start = time.ticks_ms()
        failures = 0
        if self._field_busy:
            # Never charge a phone that was left on the reader after the last tap:
            # the removal watcher must see the field empty first.
            self.state = "waiting for removal"
            while self._field_busy:
                if self._cancel:
                    return reason.CANCELLED, None
                if time.ticks_diff(time.ticks_ms(), start) > self.charge_timeout:
                    return reason.TIMEOUT, None
                await asyncio.sleep_ms(20)
            self.state = "charging"
        while True:
            if self._cancel:
                return reason.CANCELLED, None
            if time.ticks_diff(time.ticks_ms(), start) > self.charge_timeout:
                return reason.TIMEOUT, None
            t0, i0 = time.ticks_us(), nfc.idle_us
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
            self.timing = {"activation": time.ticks_diff(time.ticks_us(), t0),
                           "activation_idle": nfc.idle_us - i0}
            self._field_busy = True
            code, rid = reason.READER, None
            try:
                code, rid = self._tap(amount, currency, ref)
            finally:
                self._release()
                if code != reason.CARD_REMOVED and code != reason.PROTOCOL:
                    # A decision (or a bug) happened: this phone must leave first.
                    asyncio.create_task(self._watch_removal())
            if code == reason.CARD_REMOVED or code == reason.PROTOCOL:
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
            t0, i0 = time.ticks_us(), nfc.idle_us
            sw = apdu.parse_select(nfc.apdu(apdu.SELECT))
            tm["select"] = time.ticks_diff(time.ticks_us(), t0)
            tm["select_idle"] = nfc.idle_us - i0
            if sw is not None:
                return reason.NO_WALLET, None
            self.seq += 1
            now = int(self.clock())
            n, data = apdu.build_authorize(self._cmd, self.terminal_id, self.merchant_id, amount,
                                           currency, os.urandom(token.UN_LEN), now, self.seq)
            t0, i0 = time.ticks_us(), nfc.idle_us
            sw, resp = self._chained.exchange(nfc.apdu, memoryview(self._cmd)[:n])
            tm["authorize"] = time.ticks_diff(time.ticks_us(), t0)
            tm["authorize_idle"] = nfc.idle_us - i0
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
        t0 = time.ticks_us()
        code = self.verifier.check(req, resp)
        tm["verify"] = time.ticks_diff(time.ticks_us(), t0)
        tm["cache"] = self.verifier.cache_hit
        if code != reason.APPROVED:
            return code, None
        t0 = time.ticks_us()
        try:
            rid = self._persist(data, resp, ref)
        except (JournalError, OSError, tlv.TLVError) as e:
            self.log("STORAGE %s" % (e,))
            return reason.STORAGE, None
        tm["persist"] = time.ticks_diff(time.ticks_us(), t0)
        cred = self.verifier.cred
        self.verifier.commit(cred.wallet_id, self.verifier.counter, amount)
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
    f = tlv.decode(payload, ((_T_REQUEST, 1, token.MAX_REQUEST, True),
                             (_T_RESPONSE, 1, token.MAX_RESPONSE, True),
                             (_T_REFERENCE, 0, till.MAX_REF, True)), [None] * 3)
    return f[0], f[1], f[2]


def restore(verifier, journal):
    """Rebuild each wallet's last counter and offline spend from the journal, so a
    reboot (or a power cut) cannot reopen a replay window or reset a limit."""
    f = [None] * len(token.RESPONSE_SPEC)
    q = [None] * len(token.REQUEST_SPEC)
    synced = journal.cursor()
    n = 0
    for rid, payload in journal.records():
        try:
            req, resp, _ = decode_record(payload)
            tlv.decode(resp, token.RESPONSE_SPEC, f)
            tlv.decode(req, token.REQUEST_SPEC, q)
            wid = token.Credential(f[0]).wallet_id
        except tlv.TLVError:
            continue  # the journal's CRC passed, so this is a newer layout: skip
        counter = tlv.uint(f[1])
        seen = verifier.table.get(wid)
        spent = seen[1] if seen else 0
        if rid > synced:
            spent += tlv.uint(q[3])
        last = seen[0] if seen else 0
        verifier.table.put(wid, counter if counter > last else last, spent)
        n += 1
    return n


def load_config(path):
    import json
    try:
        st = os.stat(path)
        if st[6] > 32768:
            raise rules.ConfigError("config larger than 32 KiB")
        with open(path) as fh:
            cfg = json.load(fh)
        for key in ("terminal_id", "merchant_id", "currency"):
            if key not in cfg:
                raise rules.ConfigError("config lacks %s" % key)
        if len(bytes.fromhex(cfg["terminal_id"])) != token.TERMINAL_ID_LEN:
            raise rules.ConfigError("terminal_id must be 8 bytes of hex")
        if not 1 <= len(cfg["merchant_id"].encode()) <= token.MAX_MERCHANT_ID:
            raise rules.ConfigError("merchant_id must be 1..16 bytes of UTF-8")
        return cfg
    except OSError:
        raise rules.ConfigError("no config at %s: provision the terminal first" % path)
    except (ValueError, TypeError) as e:
        raise rules.ConfigError("config does not parse: %s" % (e,))


class TillSession:
    """One till connection: commands in, results out; a charge runs as a task so
    STATUS and CANCEL are answered while the terminal waits for a phone."""

    def __init__(self, term, reader, writer):
        self.term, self.reader, self.writer = term, reader, writer
        self.ref = None
        self._buf = bytearray(till.MAX_LINE + 1)

    async def send(self, line):
        self.writer.write(line)
        await self.writer.drain()

    async def serve(self):
        while True:
            try:
                line = await till.read_line(self.reader, till.MAX_LINE, self._buf)
                if line is None:
                    self.term.cancel()  # the till went away: do not take a tap for nobody
                    return
                cmd = till.parse(line)
            except till.TillError as e:
                await self.send(till.error(e.reason))
                continue
            if cmd[0] == till.CHARGE:
                if self.term.state != "idle":
                    await self.send(till.error("busy"))
                    continue
                self.term.state = "charging"
                self.ref = cmd[3]
                asyncio.create_task(self._charge(cmd[1], cmd[2], cmd[3]))
            elif cmd[0] == till.STATUS:
                st, pending, up = self.term.status()
                await self.send(till.status(st, pending, up))
            elif not self.term.cancel():
                await self.send(till.error("nothing-to-cancel"))

    async def _charge(self, amount, currency, ref):
        term = self.term
        t0 = time.ticks_ms()
        try:
            code, rid = await term.charge(amount, currency, ref)
        except Exception as e:  # noqa: never leave the till waiting; say why
            term.log("ERROR charge failed: %r" % (e,))
            sys.print_exception(e)
            term.state = "idle"
            code, rid = reason.READER, None
        tm = term.timing
        term.log("TAP %s ref=%s ms=%d %s" % (
            reason.name(code), ref.decode(), time.ticks_diff(time.ticks_ms(), t0),
            " ".join("%s=%s" % (k, tm[k]) for k in sorted(tm))))
        term.timing = {}
        try:
            if code == reason.CANCELLED:
                await self.send(till.cancelled(ref))
            elif code == reason.APPROVED:
                await self.send(till.approved(ref, rid))
            else:
                await self.send(till.declined(ref, reason.name(code), rid))
        except OSError as e:
            term.log("TILL result not delivered: %s" % (e,))


async def run(wire, log=print):
    from pos.journal import Journal
    # The big long-lived buffers first, while the heap is still in one piece;
    # the board's objects after them.
    gc.collect()
    table = rules.WalletTable(256)
    bufs = (apdu.Chained(), bytearray(RECORD_MAX))
    board = wire() if callable(wire) else wire
    journal = Journal(board.journal_dir)
    try:
        cfg = load_config(board.config_path)
        policy = rules.Policy.from_config(cfg)
    except rules.ConfigError as e:
        log("CONFIG %s" % (e,))
        board.feedback.led("red")
        board.feedback.show("NOT PROVISIONED")
        return 2
    gc.collect()
    for seg, good, dropped, why in journal.open():
        log("JOURNAL dropped %d bytes of %s after offset %d: %s" % (dropped, seg, good, why))
    verifier = rules.Verifier(policy, table)
    n = restore(verifier, journal)
    nfc = board.nfc
    baud = getattr(board, "nfc_baud", None)
    for attempt in range(3):
        try:
            fw = nfc.begin()
            if baud:
                nfc.set_baudrate(baud)
            break
        except PN532Error as e:
            log("READER start failed (%s), retrying" % (e,))
            await asyncio.sleep_ms(200)
    else:
        board.feedback.led("red")
        board.feedback.show("READER FAULT")
        return 3
    term = Terminal(nfc, journal, verifier, cfg, board.feedback, board.clock, log, bufs)
    term.link_up = board.wifi.isconnected
    term.nfc_baud = baud
    board.wifi.active(True)
    board.wifi.connect()  # returns at once; the station keeps trying in the background

    async def handler(reader, writer):
        await TillSession(term, reader, writer).serve()

    await board.till.start(handler)
    board.feedback.led("off")
    board.feedback.show("READY")
    log("READY terminal=%s pn532=%d.%d records=%d pending=%d" % (
        cfg["terminal_id"], fw[1], fw[2], n, journal.pending()))
    wdt = getattr(board, "wdt", None)
    while True:
        if wdt:
            wdt.feed()
        await asyncio.sleep_ms(1000)


def main(wire):
    """Run the terminal. `wire` is the board's wire() (called once the firmware's
    own buffers are allocated) or an already wired board object."""
    return asyncio.run(run(wire))
