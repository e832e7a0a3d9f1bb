# The terminal out of service: what a board's main.py does once app.main has
# ended, so that the end of the app is never an open door or a watchdog reset
# under a technician (pos.console's header says what each case does).
#
#   code = None
#   try:
#       code = app.main(service.wired(board.wire))
#   finally:
#       service.after_app(code, machine.reset, keepalive)
import time

import asyncio
from micropython import const

from pos import console

NOT_PROVISIONED = const(2)  # app.run's answer when the config does not load
RESET_EXIT = const(80)      # the unix board's "reset": the process ends with this code
_RETRY_MS = const(600000)   # a faulted terminal with nobody at its console reboots to retry
_HOLD_MS = const(500)       # between the reload's answer and the reboot: the tool reads it


def wired(wire):
    """The board's wire() as app.main should call it: the same board, which
    pos.console then knows (its watchdog for tick() and hold(), its config
    path for the lock record)."""
    def w():
        console._board = wire()
        return console._board
    return w


async def hold(board, code, inp=None, out=None, retry_ms=_RETRY_MS):
    """Serve the console while the app cannot run (app.run returned `code`),
    feeding the watchdog. Returns when the terminal should reboot: a valid
    config is in place (the reload answered "ok ... restarting"), or, for a
    fault other than the config, nobody has used the console for retry_ms."""
    from pos import lock
    con = console.current
    if con is None:
        # The app ended before it attached a console: the config did not load.
        con = console.Console(lock.fallback(board.config_path, board.clock), out, inp)
    con.state = "not-provisioned" if code == NOT_PROVISIONED else "fault"
    con.last_rx = time.ticks_ms()
    due = []

    def reload():
        from pos import config
        r = config.report(board.config_path)
        if not r.startswith("CONFIG OK "):
            return "refused " + r[len("CONFIG REFUSED "):]
        due.append(time.ticks_ms())
        return "ok %s restarting" % r[len("CONFIG OK "):]

    console.hooks["reload"] = reload
    console.hooks["journal_dev"] = board.journal_dev
    con.log("SERVICE %s (code %d): console %s" % (con.state, code,
                                                 "open" if con.lock.is_open() else "locked"))
    asyncio.create_task(con.run())
    wdt = getattr(board, "wdt", None)
    while True:
        if wdt is not None:
            wdt.feed()
        now = time.ticks_ms()
        if due and time.ticks_diff(now, due[0]) >= _HOLD_MS:
            return
        if code != NOT_PROVISIONED and time.ticks_diff(now, con.last_rx) >= retry_ms:
            con.log("SERVICE rebooting to retry")
            return
        await asyncio.sleep_ms(50)  # fed well within an emulated watchdog scaled to the ESP32 (80 ms)


def after_app(code, reset, keepalive=None):
    """A board's main.py, once app.main has ended: `code` is what it returned
    (None when it raised). reset() reboots the board; keepalive(feed), if
    given, keeps the watchdog fed under MicroPython's REPL. Returns (or
    raises the technician's SystemExit) only when the REPL is to follow: a
    test-mode terminal whose app, or held console, was stopped."""
    b = console._board
    stopped = None
    if code is not None and b is not None:
        asyncio.new_event_loop()  # the app's tasks (till, uplink, feeding) stay behind
        try:
            asyncio.run(hold(b, code))
        except SystemExit as e:
            stopped = e  # the technician stopped the console: as if they had stopped the app
        if stopped is None:
            reset()
            return
    con = console.current
    if con is None or con.lock.production:
        reset()  # never the REPL on a production terminal, locked or not
        return
    w = getattr(b, "wdt", None)
    if keepalive is not None and w is not None:
        keepalive(w.feed)
    if stopped is not None:
        raise stopped  # on to the REPL, with its exit status
