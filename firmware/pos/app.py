# The terminal application: boot (config, journal, reader), then one asyncio loop
# serving the till link; each charge is taken by pos.terminal.Terminal.
#
#   idle -> charge -> field on, poll -> SELECT -> AUTHORIZE -> verify -> persist
#        -> approved/declined feedback -> wait for the phone to leave -> idle

import asyncio
import gc
import os
import sys
import time

# The 16 KB P-256 G table at boot, not at the first tap: that tap should neither
# pay for the import nor look for 4 KB blocks in a heap the imports fragmented.
from pos import p256_gtab  # noqa: F401
from pos import apdu, reason, rules, sig, till, tlv, token
from pos.pn532 import PN532Error
from pos.terminal import RECORD_MAX, Terminal, decode_record


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
            wid = rules.wallet_key(token.Credential(f[0]))  # issuer kid + wallet id + credential age
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
        term.idle_work()  # the result is out: now this costs nobody time


async def run(wire, log=print):
    from pos.journal import Journal, JournalError
    # The big long-lived buffers first, while the heap is still in one piece;
    # the board's objects after them.
    gc.collect()
    table = rules.WalletTable(256)
    from pos import p256
    p256.reserve()  # the wallets' key tables, 16 KB, before anything else fragments the heap
    bufs = (apdu.Chained(), bytearray(RECORD_MAX))
    try:
        board = wire() if callable(wire) else wire
    except OSError as e:
        # E.g. an ESP32 flashed without the journal partition: say so and take
        # no payment (there is no feedback device to show it on yet).
        log("BOARD %s" % (e,))
        return 5
    journal = Journal(board.journal_dev)
    try:
        cfg = load_config(board.config_path)
        policy = rules.Policy.from_config(cfg)
    except rules.ConfigError as e:
        log("CONFIG %s" % (e,))
        board.feedback.led("red")
        board.feedback.show("NOT PROVISIONED")
        return 2
    gc.collect()
    try:
        report = journal.open()
    except JournalError as e:
        log("JOURNAL %s" % (e,))
        board.feedback.led("red")
        board.feedback.show("STORAGE FAULT")
        return 4
    for where, good, dropped, why in report:
        log("JOURNAL dropped %d bytes of %s after offset %d: %s" % (dropped, where, good, why))
    try:
        journal.prepare()  # the first approval should only program flash too
    except JournalError as e:
        log("STORAGE prepare failed: %s" % (e,))  # append() erases itself, slowly
    verifier = rules.Verifier(policy, table)
    for iss in policy.issuers.values():
        if iss.alg == token.ALG_ES256:
            sig.warm("ES256", iss.key, True)  # every first-seen wallet's credential: verify it warm
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
    term.probe = getattr(board, "probe", None)
    board.wifi.active(True)
    board.wifi.connect()  # returns at once; the station keeps trying in the background

    async def handler(reader, writer):
        await TillSession(term, reader, writer).serve()

    await board.till.start(handler)
    board.feedback.led("off")
    board.feedback.show("READY")
    gc.collect()
    log("READY terminal=%s pn532=%d.%d records=%d pending=%d heap_free=%d" % (
        cfg["terminal_id"], fw[1], fw[2], n, journal.pending(), gc.mem_free()))
    wdt = getattr(board, "wdt", None)
    while True:
        if wdt:
            wdt.feed()
        if term.state == "idle":
            term.idle_work()
        await asyncio.sleep_ms(1000)


def main(wire):
    """Run the terminal. `wire` is the board's wire() (called once the firmware's
    own buffers are allocated) or an already wired board object."""
    return asyncio.run(run(wire))
