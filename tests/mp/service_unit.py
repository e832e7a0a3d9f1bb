# pos.lock, pos.console and pos.service in the unix port (driven by
# tests/test_service.py, which signs the unlock tokens on the host):
# the lock of a terminal whose config does not load, the lock record, an
# unlock that lasts in ticks, the console's STATUS / raw REPL / watchdog,
# TAP lines in the APDU log, the out-of-service hold, and what follows the app.
import json
import os
import sys
import time

import asyncio

import unit
from pos import apdulog, console, lock, service

D = json.load(open(os.getenv("POS_TEST_DATA")))
TMP = os.getenv("POS_TEST_TMP")
TID = bytes.fromhex(D["tid"])


class Out:
    def __init__(self):
        self.text = ""

    def write(self, s):
        self.text += s


class WDT:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class Board:
    def __init__(self, name):
        self.config_path = "%s/%s/config.json" % (TMP, name)
        try:
            os.mkdir("%s/%s" % (TMP, name))
        except OSError:
            pass
        self.wdt = WDT()
        self.journal_dev = None
        self.clock = lambda: D["now"]


def put(path, text):
    with open(path, "w") as f:
        f.write(text)


def rm(path):
    try:
        os.remove(path)
    except OSError:
        pass


def cfg(mode="production", key=True, good=True):
    c = {"terminal_id": D["tid"], "merchant_id": "M", "currency": 978, "mode": mode,
         "issuers": [D["issuer"] if good else dict(D["issuer"], key="04" + "00" * 64)]}
    if key:
        c["technician_key"] = D["tech"]
    return json.dumps(c)


def fresh():
    console.current = None
    console.hooks.clear()
    console._board = None


def test_fallback_opens_only_when_nothing_says_production():
    b = Board("fb")
    path, rec = b.config_path, lock.record_path(b.config_path)
    cases = (
        # (config text or None, lock record?, production?, technician key found?)
        (None, False, False, False),            # a fresh board: open, to be provisioned
        (cfg("test", good=False), False, False, True),   # a refused test config: open
        (cfg("production", good=False), False, True, True),  # refused production: locked, key from it
        ("{not json", False, True, False),     # unreadable, no record: locked, no key (re-flash)
        ("", False, True, False),              # empty
        ("[1, 2]", False, True, False),        # JSON, not an object
        (None, True, True, True),              # config gone, the record remains: locked, its key
        ("{not json", True, True, True),
        (cfg("test", good=False), True, True, True),  # the record outranks a test config that fails
    )
    for text, record, production, key in cases:
        rm(path)
        rm(rec)
        if text is not None:
            put(path, text)
        if record:
            put(rec, '{"terminal_id":"%s","technician_key":"%s"}' % (D["tid"], D["tech"]))
        lk = lock.fallback(path, b.clock)
        assert lk.production == production, (text, record)
        assert (lk.key is not None) == key, (text, record)
        assert lk.is_open() == (not production), (text, record)
        if key:
            assert lk.key == bytes.fromhex(D["tech"]) and lk.terminal_id == TID
    # A key that is no P-256 point is no key.
    rm(rec)
    put(path, json.dumps({"mode": "production", "technician_key": "04" + "00" * 64}))
    assert lock.fallback(path).key is None and lock.fallback(path).terminal_id == bytes(8)


def test_the_lock_record_follows_the_running_config():
    b = Board("rec")
    rec = lock.record_path(b.config_path)
    rm(rec)
    c = json.loads(cfg())
    real = lock.os
    lock.os = Spy()
    try:
        lock.remember(b.config_path, c)
        assert json.load(open(rec)) == {"terminal_id": D["tid"], "technician_key": D["tech"]}
        lock.remember(b.config_path, c)          # unchanged: not rewritten (every boot calls it)
        assert Spy.renames == 1 and not _exists(rec + ".tmp")
    finally:
        lock.os = real
    lock.remember(b.config_path, json.loads(cfg("test")))
    assert not _exists(rec)                   # a test config: nothing to keep locked
    # attach() and configure() keep it through the board the app was wired with.
    fresh()
    console._board = b
    con = console.attach(c, b.clock)
    assert _exists(rec) and con.lock.production and not con.lock.is_open()
    console.configure(con, json.loads(cfg("test")))
    assert not _exists(rec) and con.lock.is_open()
    fresh()


class Spy:
    # os for pos.lock, counting renames.
    renames = 0

    def __getattr__(self, name):
        return getattr(os, name)

    def rename(self, a, b):
        Spy.renames += 1
        os.rename(a, b)


def _exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False


class Nonce:
    @staticmethod
    def urandom(n):
        return bytes.fromhex(D["nonce"])


def _unlocked(clock):
    lk = lock.Lock(TID, bytes.fromhex(D["tech"]), True, clock)
    real = lock.os
    lock.os = Nonce
    try:
        assert lk.challenge() == (bytes.fromhex(D["nonce"]), D["now"])
    finally:
        lock.os = real
    return lk


def test_an_unlock_lasts_its_length_in_ticks_whatever_the_clock_does():
    t = [D["now"]]
    lk = _unlocked(lambda: t[0])
    bad = bytearray(bytes.fromhex(D["sig"]))
    bad[-1] ^= 1
    assert lk.unlock(D["until"], bytes(bad)) == "bad-signature"
    lk = _unlocked(lambda: t[0])
    assert lk.unlock(D["until"], bytes.fromhex(D["sig"])) is None and lk.is_open()
    assert lk.unlock(D["until"], bytes.fromhex(D["sig"])) == "no-challenge"  # one answer per challenge
    t[0] += 10 ** 6   # a sync moves the clock far ahead: still open
    assert lk.is_open()
    t[0] = 0          # or back to "unset"
    assert lk.is_open()
    lk._open_ms = 50  # the length runs out (in ticks)
    time.sleep_ms(60)
    assert not lk.is_open() and lk.until is None


def test_console_status_and_a_locked_raw_repl():
    fresh()
    out = Out()
    con = console.Console(lock.Lock(TID, None, True), out=out, inp=open("/dev/null", "rb"))
    for c in b"OFFPAY STATUS\r":
        con.feed(c)
    assert out.text == "OFFPAY STATUS production locked %s running\r\n" % D["tid"], out.text
    out.text = ""
    con.feed(1)
    assert out.text == "" and not con.raw   # no raw REPL while locked
    fresh()


def test_technician_code_is_framed_by_watchdog_feeds():
    fresh()
    b = Board("wdt")
    console._board = b
    out = Out()
    con = console.Console(lock.Lock(TID, None, False), out=out, inp=open("/dev/null", "rb"))
    for c in b"\x01x = 6 * 7\x04":
        con.feed(c)
    assert out.text.endswith("OK\x04\x04>") and con.ns["x"] == 42, repr(out.text)
    assert b.wdt.feeds == 2
    for c in b"from pos import console\nfor i in range(5):\n console.tick()\n\x04":
        con.feed(c)
    assert b.wdt.feeds == 9   # 2 framing + 5 from the command
    fresh()


def test_tap_lines_are_kept_in_order_with_the_exchanges():
    fresh()
    log = apdulog.ApduLog(512)
    con = console.Console(lock.Lock(TID, None, False), out=Out(), inp=open("/dev/null", "rb"))
    log.add(b"\x00\xa4\x04\x00", b"\x90\x00")
    con.log("TAP AUTHORIZE not answered within 600 ms")
    con.log("READY terminal=x")   # not a tap's: stays out of the APDU log
    con.log("TAP TIMEOUT ref=R1 ms=700")
    e = log.entries()
    assert [x.get("note") for x in e] == [None, "TAP AUTHORIZE not answered within 600 ms",
                                          "TAP TIMEOUT ref=R1 ms=700"], e
    assert e[0]["c"] == "00a40400" and e[0]["r"] == "9000"
    for i in range(40):   # the ring keeps the newest that fit
        con.log("TAP PROTOCOL, present the phone again %d" % i)
    e = log.entries()
    assert e[-1]["note"].endswith(" 39") and len(e) < 40
    apdulog.current = None
    fresh()


def _run(coro, limit_ms):
    # Run `coro` to its end; the time it took in ms.
    t0 = time.ticks_ms()
    asyncio.new_event_loop()
    asyncio.run(asyncio.wait_for_ms(coro, limit_ms))
    return time.ticks_diff(time.ticks_ms(), t0)


def test_a_production_terminal_without_a_loadable_config_holds_its_console_locked():
    fresh()
    b = Board("hold")
    rm(lock.record_path(b.config_path))
    put(b.config_path, cfg("production", good=False))
    out = Out()
    said = {}

    async def technician():
        await asyncio.sleep_ms(350)
        con = console.current
        said["feeds"] = b.wdt.feeds
        for c in b"OFFPAY STATUS\r\x01":
            con.feed(c)
        said["status"] = out.text
        said["refused"] = console.hooks["reload"]()
        put(b.config_path, cfg("production"))
        said["ok"] = console.hooks["reload"]()

    async def both():
        asyncio.create_task(technician())
        await service.hold(b, service.NOT_PROVISIONED, inp=open("/dev/null", "rb"), out=out)

    ms = _run(both(), 5000)
    assert said["feeds"] >= 3, said              # the watchdog is fed while it holds
    assert "OFFPAY STATUS production locked %s not-provisioned" % D["tid"] in said["status"], said
    assert "raw REPL" not in said["status"]
    assert said["refused"].startswith("refused ") and "curve" in said["refused"], said
    assert said["ok"].startswith("ok ") and said["ok"].endswith(" production restarting"), said
    assert 350 < ms < 1500, ms                   # returned (to reboot) just after the good reload
    fresh()


def test_a_fault_retries_by_rebooting_when_nobody_is_at_the_console():
    fresh()
    b = Board("fault")
    out = Out()
    console.current = console.Console(lock.Lock(TID, None, False), out=out, inp=open("/dev/null", "rb"))
    ms = _run(service.hold(b, 3, inp=None, out=out, retry_ms=300), 3000)
    assert 250 < ms < 1500 and "SERVICE rebooting to retry" in out.text, (ms, out.text)
    assert console.current.state == "fault"
    fresh()


def test_after_the_app_only_a_test_mode_terminal_reaches_the_repl():
    calls = []

    def reset():
        calls.append("reset")

    for production, unlocked in ((True, False), (True, True), (False, False)):
        fresh()
        b = Board("after")
        console._board = b
        lk = lock.Lock(TID, None, production)
        if unlocked:
            lk.until, lk._opened, lk._open_ms = D["until"], time.ticks_ms(), 60000
        console.current = console.Console(lk, out=Out(), inp=open("/dev/null", "rb"))
        del calls[:]
        service.after_app(None, reset, lambda feed: (feed(), calls.append("keepalive")))
        if production:
            assert calls == ["reset"], (production, unlocked, calls)   # never the REPL
        else:
            assert calls == ["keepalive"] and b.wdt.feeds == 1, calls   # the REPL, watchdog fed
    fresh()
    del calls[:]
    service.after_app(None, reset)                    # nothing attached, nothing known
    assert calls == ["reset"]


unit.run(globals())
