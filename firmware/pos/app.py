# The terminal application: boot (config, journal, reader), then one asyncio loop
# serving the till link; each charge is taken by pos.terminal.Terminal.
#
#   idle -> charge -> field on, poll -> SELECT -> AUTHORIZE -> verify -> persist
#        -> approved/declined feedback -> wait for the phone to leave -> idle

from micropython import const
import asyncio
import gc
import os
import sys
import time

# The 16 KB P-256 G table at boot, not at the first tap: that tap should neither
# pay for the import nor look for 4 KB blocks in a heap the imports fragmented.
from pos import p256_gtab  # noqa: F401
from pos import apdu, reason, record, rules, sig, till, tlv, token
from pos.clock import DEFAULT_MAX_OFFLINE_AGE_S
from pos.outcomes import Outcomes
from pos.pn532 import PN532Error
from pos.seqno import Sequence
from pos.terminal import Terminal

_FEED_MS = const(1000)


def _slow_summary(payload):
    # The whole-credential path, for a record summary() does not recognise.
    req, resp, ref, _ = record.decode(payload)
    f = tlv.decode(resp, token.RESPONSE_SPEC, [None] * len(token.RESPONSE_SPEC))
    q = tlv.decode(req, token.REQUEST_SPEC, [None] * len(token.REQUEST_SPEC))
    c = token.Credential(f[0])
    return (c.issuer_kid, c.wallet_id, c.serial, c.not_before, tlv.uint(f[1]),
            tlv.uint(q[3]), tlv.uint(q[6]), ref)


class Replay:
    """Boot's view of each journal record (journal.open's visit): rebuilds each
    wallet's last counter and offline spend, so a reboot (or a power cut)
    cannot reopen a replay window or reset a limit, and the index of approved
    references (pos.outcomes). Reads the few fields it needs where version 1
    puts them (pos.record.summary), not the whole credential."""

    def __init__(self, verifier, outcomes=None, tick=None):
        self.table = verifier.table
        self.outcomes = outcomes
        self.tick = tick
        self.n = 0
        self.newest = 0   # newest terminal time in a record (the clock's floor)
        self.full = 0     # wallets the table had no room for
        self._f = [None] * 4

    def __call__(self, rid, payload, synced):
        if self.tick is not None and not self.n & 15:
            self.tick()
        try:
            try:
                kid, wid, serial, nb, counter, amount, t, ref = record.summary(payload, self._f)
            except tlv.TLVError:
                kid, wid, serial, nb, counter, amount, t, ref = _slow_summary(payload)
        except tlv.TLVError:
            # The journal's CRC passed, so this is not ours to read: keep the
            # reference index in journal order and go on.
            if self.outcomes is not None:
                self.outcomes.add(b"")
            return
        if self.outcomes is not None:
            self.outcomes.add(ref)
        table = self.table
        key = rules.key_of(kid, wid, nb, serial)
        seen = table.get(key)
        spent = seen[1] if seen else 0
        if rid > synced:
            spent += amount
        last = seen[0] if seen else 0
        try:
            table.put(key, counter if counter > last else last, spent)
        except MemoryError:
            # Table full: such a wallet is declined CAPACITY until the next
            # sync (a wallet the table does not hold cannot pay while it is full).
            self.full += 1
        if t > self.newest:
            self.newest = t
        self.n += 1


def restore(verifier, journal, outcomes=None, tick=None):
    """Replay an open journal (as boot does in journal.open's pass). Returns
    (records restored, newest terminal time)."""
    r = Replay(verifier, outcomes, tick)
    synced = journal.cursor()
    for rid, payload in journal.records():
        r(rid, payload, synced)
    return r.n, r.newest


class TillSession:
    """One till connection: commands in, results out. A charge runs as a task,
    so STATUS, QUERY and CANCEL are answered while the terminal waits for a
    phone. Every accepted CHARGE gets exactly one RESULT line; a result that
    cannot be delivered stays answerable by QUERY."""

    def __init__(self, term, reader, writer):
        self.term, self.reader, self.writer = term, reader, writer
        self.charging = False  # this session started the charge in progress
        self._buf = bytearray(till.MAX_LINE + 1)

    async def send(self, line):
        self.writer.write(line)
        await self.writer.drain()

    async def serve(self):
        try:
            await self._serve()
        except OSError as e:  # the link broke under a read or a write
            self.term.log("TILL link lost: %s" % (e,))
        finally:
            if self.charging:
                # The till went away: its charge must not take a phone for
                # nobody. If AUTHORIZE is already out the payment may still be
                # stored; QUERY tells a till that comes back.
                self.term.cancel()

    async def _serve(self):
        term = self.term
        while True:
            try:
                line = await till.read_line(self.reader, till.MAX_LINE, self._buf)
                if line is None:
                    return
                cmd = till.parse(line)
            except till.TillError as e:
                await self.send(till.error(e.reason))
                continue
            op = cmd[0]
            if op == till.CHARGE:
                ref = cmd[3]
                if term.state != "idle":
                    await self.send(till.error("busy"))
                    continue
                rid = term.outcomes.approved(ref)
                if rid is not None:
                    # Paid already under this reference: answer that, charge nobody.
                    await self.send(till.approved(ref, rid))
                    continue
                term.claim(ref)  # now: a second CHARGE is busy, a CANCEL counts
                self.charging = True
                asyncio.create_task(self._charge(cmd[1], cmd[2], ref))
            elif op == till.STATUS:
                st, pending, up = term.status()
                await self.send(till.status(st, pending, up))
            elif op == till.QUERY:
                await self.send(_outcome(cmd[1], term.outcomes.query(cmd[1])))
            else:
                ref = term.outcomes.current
                r = term.cancel()
                if r is None or ref is None:
                    await self.send(till.error("nothing-to-cancel"))
                elif r:
                    await self.send(till.cancelled(ref))
                else:
                    await self.send(till.error("too-late"))

    async def _charge(self, amount, currency, ref):
        term = self.term
        t0 = time.ticks_ms()
        code, rid = await term.charge(amount, currency, ref)
        self.charging = False
        try:
            tm = term.timing
            term.log("TAP %s ref=%s ms=%d %s" % (
                reason.name(code), ref.decode(), time.ticks_diff(time.ticks_ms(), t0),
                " ".join("%s=%s" % (k, tm[k]) for k in sorted(tm))))
        except Exception:  # noqa: the log is not the answer
            pass
        term.timing = {}
        line = till.approved(ref, rid) if code == reason.APPROVED else \
            till.declined(ref, reason.name(code))
        try:
            await self.send(line)
        except Exception as e:  # noqa: OSError and a closed stream alike
            term.log("TILL result not delivered (%s): QUERY %s answers it" % (e, ref.decode()))
        try:
            term.idle_work()  # the result is out: now this costs nobody time
        except Exception as e:  # noqa: idle work only saves time later
            term.log("ERROR idle work: %r" % (e,))


def _outcome(ref, q):
    if q is None:
        return till.outcome(ref, "UNKNOWN")
    if q[0] == "in-progress":
        return till.outcome(ref, "IN-PROGRESS")
    if q[0] == "approved":
        return till.outcome(ref, "APPROVED", q[1])
    return till.outcome(ref, "DECLINED", reason.name(q[1]))


async def _feed(wdt):
    # The watchdog is fed by its own task: it runs as long as the event loop
    # does, through taps and uploads, and stops (so the chip resets) if the
    # loop is ever held.
    while True:
        wdt.feed()
        await asyncio.sleep_ms(_FEED_MS)


def _show(feedback, led, text, log):
    # Boot-time feedback: a broken display must not stop the terminal.
    try:
        feedback.led(led)
        feedback.show(text)
    except Exception as e:  # noqa: any driver fault
        log("FEEDBACK failed: %r" % (e,))


async def run(wire, log=print, p256="native"):
    from pos.journal import Journal, JournalError
    backend = p256
    from pos import p256
    # The field engine's code first (on a port that loads native code into the
    # heap it is one large block), then the big long-lived buffers, while the
    # heap is still in one piece; the board's objects after them.
    backend = p256.use(backend)
    gc.collect()
    table = rules.WalletTable(256)
    p256.reserve()  # the wallets' key tables, 16 KB, before anything else fragments the heap
    bufs = (apdu.Chained(), bytearray(record.MAX))
    try:
        board = wire() if callable(wire) else wire
    except OSError as e:
        # E.g. an ESP32 flashed without the journal partition: say so and take
        # no payment (there is no feedback device to show it on yet).
        log("BOARD %s" % (e,))
        return 5
    wdt = getattr(board, "wdt", None)
    tick = wdt.feed if wdt is not None else None
    journal = Journal(board.journal_dev)
    from pos import config, console
    try:
        # The one config parser: `offpay provision` runs this same code.
        cfg, policy = config.load(board.config_path)
    except rules.ConfigError as e:
        log("CONFIG %s" % (e,))
        _show(board.feedback, "red", "NOT PROVISIONED", log)
        return 2
    # The acquirer's bundle first: its text and parse (up to 16 KB, garbage
    # again once its policy is built) need a heap still in one piece. Loaded
    # at the end of boot, a 100-entry deny list found no room, and the
    # terminal crashed on every boot.
    fsdir = board.config_path.rsplit("/", 1)[0]
    verifier = rules.Verifier(policy, table)
    risk = dict(cfg.get("risk") or {})
    store = _bundle_store(cfg, fsdir, verifier, risk, log)
    gc.collect()
    upbuf = upctx = None
    if cfg.get("uplink"):
        # The upload's body and answer, 18 KB in one piece, and the TLS
        # context (3 KB in one piece): now, before the journal, the bundle,
        # the console and the caches have cut the heap up.
        from pos import uplink
        upbuf = bytearray(uplink.BUF_SIZE)
        try:
            upctx = uplink.context(uplink.credentials(cfg["uplink"]))
        except (uplink.UplinkError, MemoryError) as e:
            log("UPLINK cannot start: %r" % (e,))
    # The trusted clock (pos.clock): the acquirer's signed time, held up by
    # what the terminal wrote; never the RTC, which restarts at 2000.
    from pos.clock import Clock
    clock = Clock(fsdir, log)
    clock.load()
    console.hooks["clock"] = clock  # `offpay provision` gives a running terminal its time
    # The USB console from now on: locked in production, a technician's raw
    # REPL inside the running app otherwise (pos.console, pos.lock).
    con = console.attach(cfg, clock.now)
    log = con.log
    clock.log = log
    gc.collect()
    outcomes = Outcomes(journal)
    replay = Replay(verifier, outcomes, tick)
    try:
        # A full journal takes a while to scan and replay on the device: the
        # watchdog is fed all along (it started with the board), and the
        # replay happens in the same pass as the scan.
        report = journal.open(tick, replay)
    except JournalError as e:
        log("JOURNAL %s" % (e,))
        _show(board.feedback, "red", "STORAGE FAULT", log)
        return 4
    for where, good, dropped, why in report:
        log("JOURNAL dropped %d bytes of %s after offset %d: %s" % (dropped, where, good, why))
    try:
        journal.prepare()  # the first approval should only program flash too
    except JournalError as e:
        log("STORAGE prepare failed: %s" % (e,))  # append() erases itself, slowly
    if replay.full:
        log("CAPACITY %d records of wallets the table had no room for" % replay.full)
    clock.note_record(replay.newest)
    # The policy holds the issuers and the deny list now, as bytes; their JSON
    # form (up to 1024 deny entries) would only take heap.
    cfg.pop("issuers", None)
    cfg.pop("deny", None)
    policy = None  # the provisioned one; a held bundle's replaced it in the verifier
    for iss in verifier.policy.issuers.values():  # the bundle's, when one is held
        if iss.alg == token.ALG_ES256:
            if tick:
                tick()
            try:
                sig.warm("ES256", iss.key, True)  # every first-seen wallet's credential: verify it warm
            except MemoryError:
                # Only time is lost: a first-seen wallet's check is then cold.
                log("WARM no heap for issuer %s's key table" % iss.kid.hex())
    n = replay.n
    seq = Sequence(board.config_path.rsplit("/", 1)[0] + "/seq", journal.next_rid())
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
            if tick:
                tick()
            await asyncio.sleep_ms(200)
    else:
        _show(board.feedback, "red", "READER FAULT", log)
        return 3
    term = Terminal(nfc, journal, verifier, cfg, board.feedback, clock.now, log, bufs,
                    seq, outcomes)
    term.gate = lambda: clock.gate(risk.get("max_offline_age_s", DEFAULT_MAX_OFFLINE_AGE_S))
    term.link_up = board.wifi.isconnected
    term.nfc_baud = baud
    term.probe = getattr(board, "probe", None)
    # A new config from the technician takes effect without a reboot, and only
    # whole: config.reloader applies it only if all of it is valid.
    # (While the terminal holds an acquirer bundle, its keys and deny list stay
    # in force: they are newer than anything provisioned.)
    console.hooks["reload"] = config.reloader(board.config_path, [
        lambda c, p: None if store is not None and store.held else verifier.set_policy(p),
        lambda c, p: term.apply(c),
        lambda c, p: console.configure(con, c)])
    console.hooks["journal_dev"] = board.journal_dev
    console.hooks["journal"] = journal
    if wdt is not None:
        asyncio.create_task(_feed(wdt))
    gc.collect()
    up = None
    if upctx is not None:
        up = _uplink(journal, cfg, store, clock, board, term, verifier, risk, log, upbuf, upctx)
    elif cfg.get("uplink"):
        log("UPLINK not started: payments stay on this terminal until it is fixed")
    upbuf = upctx = None
    if up is not None:
        # The uplink holds the DER forms now: the PEM texts (a few KB) go.
        cfg["uplink"] = {"url": cfg["uplink"]["url"]}
    if up is not None:
        term.uplink = up
        asyncio.create_task(up.run())
    board.wifi.active(True)
    board.wifi.connect()  # returns at once; the station keeps trying in the background

    async def handler(reader, writer):
        await TillSession(term, reader, writer).serve()

    await board.till.start(handler)
    _show(board.feedback, "off", "READY" if clock.is_set() else "CLOCK NOT SET", log)
    gc.collect()
    log("READY terminal=%s pn532=%d.%d records=%d pending=%d heap_free=%d clock=%s p256=%s" % (
        cfg["terminal_id"], fw[1], fw[2], n, journal.pending(), gc.mem_free(),
        clock.now() if clock.is_set() else "unset", backend))
    while True:
        if term.state == "idle":
            try:
                term.idle_work()
                clock.checkpoint()
            except Exception as e:  # noqa: idle work only saves time later
                log("ERROR idle work: %r" % (e,))
        await asyncio.sleep_ms(1000)


def _bundle_store(cfg, fsdir, verifier, risk, log):
    # The acquirer's update bundle, if provisioning pinned its key; the one
    # held is applied now. (A plain function, not in run()'s frame: what the
    # bundle's parse leaves behind is garbage once it returns.)
    key = cfg.get("update_key")
    if not key:
        return None
    from pos.bundle import Store
    # validate builds the policy a bundle brings (Bundle.policy): the one applied.
    store = Store(fsdir, bytes.fromhex(key), cfg["terminal_id"],
                  validate=lambda b: rules.Policy.from_config(b.policy_config()), log=log)
    held = store.load()
    if held is not None:
        # The acquirer's newer word on keys, deny list and risk.
        verifier.set_policy(held.policy)
        risk.update(held.risk)
        log("BUNDLE version %d" % held.version)
    return store


def sync(verifier, journal, upto):
    """After the acquirer acknowledged every record up to `upto`: each
    wallet's offline spend is what it spent since (its unacknowledged records
    here). Counters and newest credentials are kept while the table has room
    (PROTOCOL.md section 6); a table over half full is rebuilt from the
    unacknowledged records alone, which frees the synced wallets' entries."""
    t = verifier.table
    if t.count > t.capacity // 2:
        t.clear()
    else:
        t.reset_spend()
    r = Replay(verifier)
    for rid, payload in journal.records(upto + 1):
        r(rid, payload, upto)
    return r.n


def _shed(verifier, log):
    verifier.shed()
    log("MEMORY low: verification caches dropped for an upload")


def _uplink(journal, cfg, store, clock, board, term, verifier, risk, log, buf, ctx):
    if not cfg.get("uplink") or store is None:
        log("UPLINK not provisioned: payments stay on this terminal")
        return None
    from pos.uplink import Uplink, UplinkError

    def on_ack(upto):
        n = sync(verifier, journal, upto)
        log("SYNC acknowledged up to %d; %d still pending" % (upto, n))
        term.feedback_ready(clock.is_set())

    def on_bundle(b):
        # At once: a wallet denied now is declined on the next tap.
        verifier.set_policy(b.policy)
        risk.update(b.risk)
        term.feedback_ready(clock.is_set())

    try:
        return Uplink(journal, cfg, store, clock, board.wifi.isconnected,
                      lambda: term.state == "idle", on_ack=on_ack, on_bundle=on_bundle,
                      set_rtc=getattr(board, "set_rtc", None), log=log,
                      on_memory=lambda: _shed(verifier, log), buf=buf, ctx=ctx,
                      **getattr(board, "uplink_opts", {}))
    except (UplinkError, MemoryError) as e:
        # The terminal still takes payments offline; they wait in the journal.
        log("UPLINK cannot start: %r" % (e,))
        return None


def main(wire, p256="native"):
    """Run the terminal. `wire` is the board's wire() (called once the firmware's
    own buffers are allocated) or an already wired board object. `p256`: the
    board's choice of field arithmetic for signature checks, "native" (viper,
    about 3x faster on the ESP32 estimate) or "mpz"; a port that cannot run
    the native engine stays on mpz (pos.p256.use)."""
    return asyncio.run(run(wire, p256=p256))
