"""The upload fault campaign's machinery (tests/test_fault_campaign.py).

Terminals upload to real receiver processes through host_tools.faultproxy
(one proxy per terminal; with two receivers the proxy alternates between
them, connection by connection, as a load balancer passing TLS through
would). Each session of a terminal:

  1. 0-3 taps, link down (real taps: phones through the PN532 simulator and
     the till link for the emulated terminal);
  2. one fault drawn: a proxy fault for the next connection, the listener
     closed (connection refused), or a receiver 500 before / after commit
     (receiver --fault-file); sometimes a power cut during a tap or during
     the exchange;
  3. the link comes up for one exchange, whose outcome is checked against the
     fault (a terminal must never trim what the receiver does not hold, must
     not trim on a failure, must trim on a clean pass), then goes down. In
     some sessions a charge arrives while the exchange runs (the uplink must
     give way; the tap is paid as any other).

An emulated terminal's exchange that fails for want of heap ("UPLINK failed:
memory") is counted and its retry taken as the session's exchange; a boot
that crashes is power-cycled again, counted, and fails the campaign at the end.

At the end every terminal drains its backlog with no faults, and the
receiver's ledger must be exactly the approved payments: every APPROVED the
tills heard plus every record found on a terminal's flash (read from the
image at each power cut and at the end), each once, none flagged.

A terminal is an adapter (CpyTerminal: testing.TerminalSim in CPython;
EmuTerminal: the firmware in the unix port) with: tap(k, rng, cut_last),
exchange(cut_after, during), settle(), power_cut() -> records on flash,
cursor, pending, pending_bytes(), records(), close(), memory_failures,
boot_crashes.
"""
import collections
import http.client
import json
import random
import ssl
import threading
import time

from host_tools import journal_dump, records
from host_tools import wallet_sim as ws
from host_tools.faultproxy import Fault
from host_tools.receiver import faults as rx_faults
from host_tools.receiver import testing

# Fault kind -> weight. "pass" sessions are what moves the backlog; the rest
# each exercise one failure.
WEIGHTS = {"pass": 30, "refuse": 8, "reset_up": 10, "reset_down": 8, "ack_lost": 12,
           "slow": 8, "stall": 4, "500-before": 10, "500-after": 10}
# The exchange cannot succeed under these (once the fault took effect).
FAILING = {"refuse", "reset_up", "reset_down", "ack_lost", "stall", "500-before", "500-after"}
HEAD_BYTES = 150  # HTTP request head, about: reset_up cuts inside head + body


def draw(rng, pending_bytes):
    """(kind, Fault or None) for one session."""
    kind = rng.choices(list(WEIGHTS), list(WEIGHTS.values()))[0]
    request = HEAD_BYTES + 30 + pending_bytes
    if kind == "reset_up":
        return kind, Fault("reset_up", n=rng.randint(1, request - 1))
    if kind == "reset_down":
        return kind, Fault("reset_down", n=rng.randint(1, 200))
    if kind == "ack_lost":
        return kind, Fault("ack_lost", how=rng.choice(("rst", "fin", "hold")))
    if kind == "slow":
        return kind, Fault("slow", chunk=rng.choice((64, 256, 1024)), delay=rng.choice((0.001, 0.005, 0.02)))
    if kind == "stall":
        return kind, Fault("stall")
    if kind == "pass":
        return kind, Fault("pass")
    return kind, None


class Oracle:
    """What the receiver's ledger must hold at the end: (terminal, record id)
    -> (amount, reference) of every approved payment."""

    def __init__(self):
        self.lock = threading.Lock()
        self.approved = {}

    def heard(self, tid, rid, amount, ref):
        with self.lock:
            old = self.approved.setdefault((tid, rid), (amount, ref))
        if old != (amount, ref):
            raise AssertionError("terminal %s approved record %d twice: %r then %r"
                                 % (tid, rid, old, (amount, ref)))

    def on_flash(self, tid, recs):
        """Records read from a terminal's flash: each is a payment it approved."""
        for rid, payload in recs:
            rec = records.parse_record(payload)
            self.heard(tid, rid, rec["amount"], rec["reference"].decode())


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.sessions = 0
        self.taps = 0
        self.approved = 0
        self.drawn = collections.Counter()
        self.applied = collections.Counter()   # the fault took effect on a connection / in the receiver
        self.outcomes = collections.Counter()
        self.cuts = collections.Counter()      # power cuts, by where

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                c = getattr(self, k)
                if isinstance(c, collections.Counter):
                    c[v] += 1
                else:
                    setattr(self, k, c + v)

    def summary(self):
        return {"sessions": self.sessions, "taps": self.taps, "approved": self.approved,
                "faults_drawn": dict(self.drawn), "faults_applied": dict(self.applied),
                "outcomes": dict(self.outcomes), "power_cuts": dict(self.cuts),
                "power_cuts_total": sum(self.cuts.values())}


class Campaign:
    def __init__(self, terminals, proxies, fault_file, db, seed, sessions, cut_rate=0.05, log=print):
        self.terminals, self.proxies, self.fault_file, self.db = terminals, proxies, fault_file, db
        self.seed, self.sessions, self.cut_rate, self.log = seed, sessions, cut_rate, log
        self.oracle = Oracle()
        self.stats = Stats()
        self.errors = []
        self._stop = threading.Event()  # the first failure stops every terminal

    def summary(self):
        s = self.stats.summary()
        mem = [k for t in self.terminals for k in t.memory_failures]
        s["uplink_memory_failures"] = len(mem)
        s["uplink_memory_failures_with_a_connection_open"] = sum(1 for k in mem if k)
        s["boot_crashes"] = [c for t in self.terminals for c in t.boot_crashes]
        s["boots_retried_for_a_taken_till_port"] = sum(t.port_races for t in self.terminals)
        s["boots_retried_for_a_starved_reader_simulator"] = sum(t.reader_starved for t in self.terminals)
        s["duration_s"] = round(getattr(self, "duration", 0), 1)
        return s

    def receiver_ack(self, tid):
        for t in self.db.terminals():
            if t["terminal_id"] == tid:
                return t["ack"]
        return 0

    def run(self):
        t0 = time.monotonic()
        threads = []
        per = [self.sessions // len(self.terminals) + (i < self.sessions % len(self.terminals))
               for i in range(len(self.terminals))]
        for i, term in enumerate(self.terminals):
            rng = random.Random("%s/%d" % (self.seed, i))
            th = threading.Thread(target=self._terminal, args=(term, self.proxies[i], rng, per[i]), daemon=True)
            th.start()
            threads.append(th)
        for th in threads:
            th.join()
        if self.errors:
            raise self.errors[0]
        for term in self.terminals:
            self._drain(term)
        self.duration = time.monotonic() - t0

    def _terminal(self, term, proxy, rng, n):
        try:
            for i in range(n):
                if self._stop.is_set():
                    return
                self._session(term, proxy, rng, i)
        except BaseException as e:  # noqa: BLE001 -- re-raised by run() in the main thread
            e.add_note("terminal %s, session %d (seed %s); its last sessions (index, fault, power cut, outcome, "
                       "cursor before, after, receiver fault lines left):\n  %s" % (
                           term.tid, i, self.seed, "\n  ".join(repr(h) for h in term.history[-6:])))
            self.errors.append(e)
            self._stop.set()

    def _session(self, term, proxy, rng, i):
        st = self.stats
        cut = rng.random() < self.cut_rate
        where = rng.choice(("tap", "exchange")) if cut else None
        k = rng.choices((0, 1, 2, 3), (3, 4, 2, 1))[0]
        if where == "tap":
            k = max(k, 1)
        for rid, amount, ref in term.tap(k, rng, cut_last=(where == "tap")):
            self.oracle.heard(term.tid, rid, amount, ref)
            st.add(approved=1)
        st.add(taps=k, sessions=1)
        if where == "tap":
            self.oracle.on_flash(term.tid, term.power_cut())
            st.add(cuts="tap")
        kind, fault = draw(rng, term.pending_bytes())
        st.add(drawn=kind)
        n_conn = len(proxy.connections)
        term.settle()
        before = term.cursor
        if kind == "refuse":
            proxy.refuse()
        elif kind in rx_faults.KINDS:
            rx_faults.add(self.fault_file, kind, term.tid)
        else:
            proxy.plan(fault)
        during = None
        if where is None and rng.random() < 0.06:
            # A charge arrives mid-exchange: the uplink must give way to it.
            def during():
                for rid, amount, ref in term.tap(1, rng):
                    self.oracle.heard(term.tid, rid, amount, ref)
                    st.add(approved=1)
                st.add(taps=1, outcomes="tap during the exchange")
        try:
            cut_after = rng.uniform(0.0, 0.4) if where == "exchange" else None
            outcome = term.exchange(cut_after, during)
        finally:
            proxy.reopen()
            proxy.clear_plan()
        if where == "exchange":
            self.oracle.on_flash(term.tid, term.power_cut())
            st.add(cuts="exchange")
        left = rx_faults.discard(self.fault_file, term.tid) if kind in rx_faults.KINDS else 0
        conns = proxy.connections[n_conn:]
        if outcome.endswith("(after memory)"):
            # The terminal ran short of heap first (EmuTerminal.exchange); the
            # fault met that attempt or this one: not counted, not judged.
            st.add(outcomes="masked by a memory failure")
            term.history.append((i, kind, fault, where, outcome, before, term.cursor, left))
            ack = self.receiver_ack(term.tid)
            assert term.cursor <= ack, "terminal %s trimmed past the receiver's ack %d" % (term.tid, ack)
            return
        if kind == "refuse":
            applied = outcome.startswith("failed") and not conns
        elif kind in rx_faults.KINDS:
            applied = not left
        else:
            applied = bool(conns) and conns[0].cut
        if applied:
            st.add(applied=kind)
        st.add(outcomes=outcome.split(":")[0])
        term.history.append((i, kind, fault, where, outcome, before, term.cursor, left))
        self._check_session(term, kind, applied, outcome, before, where)

    def _check_session(self, term, kind, applied, outcome, before, where):
        what = "session with %s%s: outcome %r, cursor %d -> %d" % (
            kind, " (power cut in the %s)" % where if where else "", outcome, before, term.cursor)
        ack = self.receiver_ack(term.tid)
        # The one safety property: the terminal never trims a record the
        # receiver does not hold durably.
        assert term.cursor <= ack, "%s: terminal trimmed past the receiver's ack %d" % (what, ack)
        if where == "exchange":
            return
        if kind in FAILING and applied:
            assert not outcome.startswith("ok"), "%s: a failed exchange was taken as a success" % what
            assert term.cursor == before, "%s: the journal was trimmed on a failure" % what
        if kind == "pass" and not outcome.startswith("yielded"):
            assert outcome.startswith("ok"), "%s: a clean exchange failed" % what

    def _drain(self, term, timeout=120):
        deadline = time.monotonic() + timeout
        while term.pending:
            if time.monotonic() > deadline:
                raise AssertionError("terminal %s: %d records still pending after the drain" % (term.tid, term.pending))
            term.exchange(None)
        # The last exchange: every record acknowledged, and the receiver agrees.
        term.settle()
        ack = self.receiver_ack(term.tid)
        assert term.cursor == ack, "terminal %s drained: its cursor %d, the receiver's ack %d; last sessions:\n  %s" % (
            term.tid, term.cursor, ack, "\n  ".join(repr(h) for h in term.history[-6:]))

    def check_ledger(self):
        """The receiver holds exactly the approved payments, each once, none flagged."""
        for term in self.terminals:
            self.oracle.on_flash(term.tid, term.records())
        tids = {t.tid for t in self.terminals}
        rows = [r for r in self.db.ledger() if r["terminal_id"] in tids]
        got = {}
        for r in rows:
            key = (r["terminal_id"], r["record_id"])
            assert key not in got, "stored twice: %r" % (key,)
            got[key] = r
        want = self.oracle.approved
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        assert not missing, "approved but not in the ledger: %r" % missing[:20]
        assert not extra, "in the ledger, never approved: %r" % extra[:20]
        for key, (amount, ref) in want.items():
            r = got[key]
            assert (r["amount"], r["reference"]) == (amount, ref), (key, r, amount, ref)
        flagged = [r for r in rows if r["status"] != "ok"]
        assert not flagged, "flagged: %r" % flagged[:5]
        spends = collections.Counter((r["issuer_kid"], r["wallet_id"], r["counter"]) for r in rows)
        assert max(spends.values(), default=1) == 1
        for t in self.db.terminals():
            assert t["terminal_id"] not in tids or t["conflicts"] == 0, "conflict: %r" % (t,)
        crashes = [(t.tid, c) for t in self.terminals for c in t.boot_crashes]
        assert not crashes, "boots that crashed (power-cycled again): %r" % crashes
        return len(rows)


# --- the CPython terminal ------------------------------------------------------------
class CpyTerminal:
    """testing.TerminalSim as a campaign terminal: payments from wallet_sim
    phones, uploads over TLS 1.2 (as the terminal speaks) through the proxy.
    Its journal lives in memory, as if on flash; a power cut loses only the
    exchange in flight. For developing the campaign without the firmware."""

    def __init__(self, tid, rx, proxy, issuer, phones=4, timeout=2.0):
        self.tid = tid
        self.sim = testing.TerminalSim(tid, merchant_id="MARKET-7")
        self.rx, self.proxy, self.timeout = rx, proxy, timeout
        self.phones = [ws.Phone(issuer, name="p%d" % i) for i in range(phones)]
        ctx = ssl.create_default_context(cafile=str(rx.ca_pem))
        f = rx.terminal_cert(tid).files
        ctx.load_cert_chain(str(f["cert_pem"]), str(f["key_pem"]))
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        self.ctx = ctx
        self.refs = 0
        self._conn = None
        self.memory_failures = []
        self.boot_crashes = []
        self.port_races = 0
        self.reader_starved = 0
        self.history = []

    @property
    def cursor(self):
        return self.sim.cursor

    @property
    def pending(self):
        return len(self.sim.pending())

    def pending_bytes(self):
        return sum(6 + len(p) for _, p in self.sim.pending()[:64])

    def tap(self, k, rng, cut_last=False):
        out = []
        for j in range(k):
            self.refs += 1
            ref, amount = "R%d" % self.refs, rng.randint(1, 900)
            rid = self.sim.pay(rng.choice(self.phones), amount, ref)
            if not (cut_last and j == k - 1):  # the till never heard the last one
                out.append((rid, amount, ref))
        return out

    def exchange(self, cut_after=None, during=None):
        body = self.sim.body()
        conn = http.client.HTTPSConnection("127.0.0.1", self.proxy.port, context=self.ctx, timeout=self.timeout)
        timer = None
        if cut_after is not None:
            timer = threading.Timer(cut_after, self._cut, (conn,))
            timer.start()
        try:
            conn.request("POST", "/v1/upload", body, {"Content-Type": "application/octet-stream",
                                                       "Connection": "close"})
            r = conn.getresponse()
            data = r.read()
            if timer is not None:
                timer.cancel()
                if timer.finished.is_set() and getattr(conn, "_cut", False):
                    return "failed: power cut"
            if r.status != 200:
                return "failed: status %d" % r.status
            ack = json.loads(data)["ack"]
            last = max([rid for rid, _ in self.sim.pending()[:64]] or [self.sim.cursor])
            self.sim.acknowledge(min(ack, last))
            return "ok: ack=%d" % ack
        except (OSError, http.client.HTTPException, ValueError) as e:
            return "failed: %s" % type(e).__name__
        finally:
            if timer is not None:
                timer.cancel()
            conn.close()

    def _cut(self, conn):
        conn._cut = True
        if conn.sock is not None:
            try:
                conn.sock.shutdown(2)
            except OSError:
                pass

    def settle(self):
        pass

    def power_cut(self):
        return list(self.sim.journal)

    def records(self):
        return list(self.sim.journal)

    def close(self):
        pass


# --- the emulated terminal -------------------------------------------------------------
class EmuTerminal:
    """The firmware in the unix port (host_tools.emulator.Emulator), its
    Wi-Fi link switched by the campaign, paid through the PN532 simulator
    and the till link. What it did is read from its log: "UPLINK sent=..
    ack=.." (an exchange that trimmed), "UPLINK failed: ..", "SYNC
    acknowledged up to N"."""

    # boards/unix: the uplink's settings for the campaign. An exchange starts
    # 50 ms after the last charge (the link comes up only between taps here),
    # and every wait is short, so a stalled link costs a second or two, not
    # the device's 15 s; with nothing pending an exchange (for the bundle and
    # the time) is due 0.3 s after the last one, so every session has one.
    ENV = {"POS_UPLINK_FAST": "1", "POS_UPLINK_OPTS": json.dumps({
        "quiet_ms": 50, "poll_ms": 20, "connect_ms": 1000, "tls_ms": 3000, "io_ms": 2000,
        "exchange_ms": 6000, "backoff_ms": [100, 1000], "interval_ms": 300})}
    RECORD_BYTES = 570              # a journal record with its upload framing, about

    def __init__(self, workdir, cfg, issuer, proxy, phones=4, heap=None, timeout=40.0):
        from host_tools import demo
        from host_tools.emulator import Emulator
        self._Emulator = Emulator
        self.workdir, self.cfg, self.proxy = workdir, cfg, proxy
        self.tid = cfg["terminal_id"]
        self.heap = heap or demo.HEAP
        self.timeout = timeout
        self.phones = [ws.Phone(issuer, name="p%d" % i) for i in range(phones)]
        self.refs = 0
        self.cursor = 0          # what the terminal trimmed to, from its log
        self.trims = []          # (line index, rid): every SYNC line
        self.memory_failures = []  # per "UPLINK failed: memory": connections opened in that session so far
        self.history = []          # per session, for the failure message
        self.boot_crashes = []     # the last line of each boot that did not reach READY
        self.port_races = 0        # boots that found their till port taken (see _start)
        self.reader_starved = 0    # boots whose simulated reader did not answer (see _start)
        self.emu = Emulator(workdir, cfg, heap=self.heap, env=self.ENV)
        self.emu.provision()
        self._start()

    def _start(self):
        # A boot that crashes is power-cycled again (as a production ESP32
        # resets), up to 10 times; each crash is kept and fails the campaign
        # at its end (Campaign.check_ledger), after the ledger was checked.
        for attempt in range(10):
            self.emu.set_link(False)
            try:
                self.emu.start()
                break
            except RuntimeError as e:
                last = str(e).splitlines()[-1]
                if "EADDRINUSE" in last:
                    # The emulator's till port, picked free by host_tools.emulator
                    # and taken meanwhile by one of the campaign's many outgoing
                    # connections: the test bench's race, not the terminal's.
                    self.port_races += 1
                elif "READER start failed" in str(e) and "code 3" in last:
                    # The PN532 simulator (a thread of this process, beside a
                    # dozen others) did not answer the boot's retries in time:
                    # the terminal did what it should (READER FAULT).
                    self.reader_starved += 1
                else:
                    self.boot_crashes.append(last)
                if attempt == 9:
                    raise
                self.emu = self._Emulator(self.workdir, self.cfg, heap=self.heap, env=self.ENV)
        broken = [l for l in self.emu.lines if l.startswith(("UPLINK cannot start", "UPLINK not started"))]
        # A boot that cannot upload would only show later as "no exchange".
        assert not broken, "terminal %s booted without its uplink: %r" % (self.tid, broken)
        self.till = self.emu.till()
        self._scanned = 0
        self.trims = []  # line indices are this process's

    def settle(self):
        """Wait for an exchange the terminal started before the link went
        down (e.g. a retry while a charge held the campaign) to end, and take
        in what it logged, so that it cannot meet the next session's fault."""
        time.sleep(0.03)  # an exchange that saw the link up has connected by now
        deadline = time.monotonic() + self.timeout
        while True:
            busy = self.proxy.open_connections()
            if not busy:
                break
            if time.monotonic() > deadline:
                raise AssertionError("terminal %s: a connection stayed open: %r" % (self.tid, busy))
            time.sleep(0.01)
        self._scan()

    def _scan(self, upto=None):
        lines = self.emu.lines
        end = len(lines) if upto is None else upto
        while self._scanned < end:
            ln = lines[self._scanned]
            if ln.startswith("SYNC acknowledged up to "):
                rid = int(ln.split()[4].rstrip(";"))
                self.trims.append((self._scanned, rid))
                self.cursor = max(self.cursor, rid)
            self._scanned += 1

    def status(self):
        """(state, pending) from the till's STATUS."""
        parts = self.till.call("STATUS").split()
        return parts[1], int(parts[2])

    @property
    def pending(self):
        return self.status()[1]

    def pending_bytes(self):
        return min(self.pending, 64) * self.RECORD_BYTES

    def tap(self, k, rng, cut_last=False):
        out = []
        for j in range(k):
            self.refs += 1
            ref, amount = "R%d" % self.refs, rng.randint(1, 900)
            phone = rng.choice(self.phones)
            if cut_last and j == k - 1:
                self.till.send("CHARGE %d 978 %s" % (amount, ref))
                self.emu.sim.add_phone(phone)
                time.sleep(rng.uniform(0.0, 0.4))
                return out  # power_cut() follows: the till never hears this one
            n = len(self.emu.lines)
            self.till.send("CHARGE %d 978 %s" % (amount, ref))
            self.emu.sim.add_phone(phone)
            line = self.till.read()
            self.emu.sim.remove_phone(phone)
            self.emu.wait_for("FIELD clear", n, timeout=self.timeout)
            parts = line.split()
            assert parts[:2] == ["RESULT", ref], line
            if parts[2] == "APPROVED":
                out.append((int(parts[3]), amount, ref))
        return out

    _OUTCOME = ("UPLINK sent=", "UPLINK failed", "UPLINK yielded")

    def exchange(self, cut_after=None, during=None):
        """Link up until the terminal's next exchange ends; its outcome. With
        cut_after (s): the power is cut that long after the exchange's
        connection opened (or after it ended, or once the link was up 1 s
        with no connection), and the outcome is "cut". during(): called once
        the exchange's connection is open (a charge that arrives mid-upload)."""
        n = seen = len(self.emu.lines)
        conns = len(self.proxy.connections)
        mem = len(self.memory_failures)
        self.emu.set_link(True)
        line = None
        try:
            deadline = time.monotonic() + self.timeout
            while line is None:
                if during is not None and len(self.proxy.connections) > conns:
                    during()
                    during = None
                if cut_after is not None and (len(self.proxy.connections) > conns or
                                              time.monotonic() > deadline - self.timeout + 1.0):
                    time.sleep(cut_after)
                    return "cut"
                for k in range(seen, len(self.emu.lines)):
                    ln = self.emu.lines[k]
                    seen = k + 1
                    if ln.startswith("UPLINK failed: memory"):
                        # Short of heap (the tap path's caches hold it): the
                        # uplink drops them and retries at its backoff, with
                        # the link still up. Counted, and the session's
                        # exchange is the retry.
                        self.memory_failures.append(len(self.proxy.connections) - conns)
                        continue
                    if ln.startswith(self._OUTCOME):
                        line = ln
                        break
                else:
                    if time.monotonic() > deadline:
                        raise AssertionError("terminal %s: no exchange within %g s after the link came up "
                                             "(this boot's log, the last 40 lines; the link came up after "
                                             "line %d):\n%s" % (self.tid, self.timeout, n,
                                                                 "\n".join(self.emu.lines[-40:])))
                    if self.emu.proc.poll() is not None:
                        raise AssertionError("terminal %s died:\n%s" % (self.tid, "\n".join(self.emu.lines[-30:])))
                    time.sleep(0.005)
        finally:
            self.emu.set_link(False)
        end = self.emu.lines.index(line, n)
        self._scan(end + 1)  # the cursor as this exchange left it; settle() takes in the rest
        trimmed = [rid for i, rid in self.trims if n <= i < end]
        # After a memory failure the fault met the failed attempt, not this one.
        masked = " (after memory)" if len(self.memory_failures) > mem else ""
        if line.startswith("UPLINK sent="):
            return "ok: ack=%s%s" % (line.split("ack=")[1].split()[0], masked)
        if trimmed:
            # A trim belongs to the exchange that ended with "UPLINK sent=".
            raise AssertionError("terminal %s trimmed to %r in an exchange that ended %r" % (self.tid, trimmed, line))
        return ("failed: " + line.split(":", 1)[-1].strip() if "failed" in line else "yielded") + masked

    def _read_flash(self):
        recs, cursor, problems = journal_dump.read_journal(self.emu.image)
        assert not problems, problems
        return recs, cursor

    def power_cut(self):
        self.emu.proc.kill()
        self.emu.proc.wait()
        self.emu._reader.join(5)
        self._scan()
        self.till.close()
        self.emu.stop()
        recs, cursor = self._read_flash()
        # The flash cursor may be ahead of the log: the cut fell between the trim and its log line.
        self.cursor = max(self.cursor, cursor)
        self.emu = self._Emulator(self.workdir, self.cfg, heap=self.heap, env=self.ENV)
        self._start()
        return recs

    def records(self):
        self.till.close()
        self.emu.stop()
        return self._read_flash()[0]

    def close(self):
        self.emu.stop()
