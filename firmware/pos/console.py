# The terminal's USB console while the app runs: the technician's way in.
#
# The app never gives the console to MicroPython's REPL: micropython.kbd_intr(-1)
# turns Ctrl-C into an ordinary byte, and this task reads every byte itself.
# What it answers depends on the lock (pos.lock):
#
#   * always: lines "OFFPAY STATUS", "OFFPAY CHALLENGE", "OFFPAY UNLOCK <until>
#     <sig>", "OFFPAY LOCK" (unlock protocol: pos.lock);
#   * only while open (test mode, or unlocked): MicroPython's raw REPL protocol
#     (Ctrl-A, code, Ctrl-D -> "OK" output 04 errors 04 ">"), which is what
#     mpremote and every `offpay` subcommand speak. Code runs inside the
#     running app, between its other tasks, so a technician reads and writes
#     files, pulls logs and applies a new config without stopping or rebooting
#     the terminal. Raw-paste mode is declined ("R\x00"); mpremote then falls
#     back to the classic raw REPL by itself.
#
# While a raw REPL session is open the app's log lines are not printed (they
# would corrupt the protocol) but still kept in the event log ring (recent()).
# A session ends with Ctrl-B or after _SESSION_MS without a byte.
#
# The watchdog: the app's own task feeds it, but not while technician code
# runs (it runs synchronously); long technician commands call tick() (e.g.
# `offpay logs` once per journal block), and every command is framed by one.
#
# When the app cannot run or stops, pos.service keeps this console served
# (board main.py -> service.after_app):
#   * the config did not load, or the journal or the reader failed at boot:
#     service.hold() serves the console, and feeds the watchdog, instead of
#     ending at MicroPython's REPL. Its lock is the config's, or, when there
#     is no loadable config, pos.lock.fallback()'s: locked unless nothing on
#     flash says "production" (a fresh board is open, so it can be
#     provisioned). `offpay provision` puts a config in place; the reload
#     then answers "ok ... restarting" and the terminal reboots into it. A
#     fault other than the config reboots after 10 minutes without a
#     technician, to try again.
#   * technician code raised SystemExit (or the app crashed): a production
#     terminal, locked or unlocked, resets (MicroPython's REPL would outlive
#     the unlock's end); a test-mode one leaves the REPL to the technician,
#     with the watchdog fed by the board's keepalive so it is not reset under
#     them.
import sys
import time

import asyncio
import select
from micropython import const

from pos import apdulog

_LINE_MAX = const(200)
_CODE_MAX = const(16384)
_RING_BYTES = const(2048)  # event log kept (the newest lines that fit)
_RING_LINE = const(160)   # bytes of each kept
_SESSION_MS = const(30000)
_BURST = const(512)       # bytes taken per wake-up before other tasks run again

_BANNER = "raw REPL; CTRL-B to exit\r\n>"

# What the app shares with technician commands, e.g. hooks["reload"]() to take
# a new config, hooks["journal"] for `offpay logs`. Filled by the app.
hooks = {}
current = None  # the running Console, for technician commands
_board = None   # the wired board (wired()): its watchdog and config path


def _hex(b):
    return "".join("%02x" % x for x in b)


class Console:
    def __init__(self, lock, out=None, inp=None, tee=None):
        global current
        self.lock = lock
        self._out = out or sys.stdout
        self._in = inp if inp is not None else getattr(sys.stdin, "buffer", sys.stdin)
        self.tee = tee  # callable(line) -> None: a copy of every log line (emulator)
        self.raw = False
        self._line = bytearray(_LINE_MAX)
        self._n = 0
        self._code = bytearray(256)
        self._c = 0
        self._paste = 0  # bytes of a raw-paste request still expected
        # One preallocated byte ring, lines back to back: the event log costs
        # a fixed 4 KB and leaves no long-lived scraps in the heap.
        self._ring = bytearray(_RING_BYTES)
        self._head = 0
        self._wrapped = False
        self.dropped = 0  # log lines not printed during raw sessions
        self.ns = {}
        self.state = "running"  # or "not-provisioned", "fault": hold()
        self.last_rx = time.ticks_ms()  # the last byte from the host
        current = self

    # -- the event log ----------------------------------------------------------

    def log(self, line):
        """The app's log: printed, except during a raw REPL session; always kept
        in the event log ring and passed to tee."""
        line = str(line)
        self._keep(line)
        if line.startswith("TAP ") and apdulog.current is not None:
            apdulog.current.note(line)  # the decision, in order with its exchanges
        if self.tee is not None:
            self.tee(line)
        if self.raw:
            self.dropped += 1
            return
        self._write(line + "\n")

    def _keep(self, line):
        b = line.encode()[:_RING_LINE]
        r = self._ring
        size = len(r)
        h = self._head
        for part in (b, b"\n"):
            n = len(part)
            k = n if n < size - h else size - h
            r[h:h + k] = part[:k]
            if n > k:
                r[0:n - k] = part[k:]
                self._wrapped = True
            h = (h + n) % size
            if h == 0:
                self._wrapped = True
        self._head = h

    def recent(self):
        """The kept log lines, oldest first (technician use: allocates)."""
        r = self._ring
        h = self._head
        data = bytes(r[h:]) + bytes(r[:h]) if self._wrapped else bytes(r[:h])
        lines = data.split(b"\n")
        if self._wrapped:
            lines = lines[1:]  # the oldest line is cut by the wrap
        out = []
        for x in lines:
            if x:
                try:
                    out.append(x.decode())
                except UnicodeError:  # a multi-byte character cut at _RING_LINE
                    pass
        return out

    def _write(self, s):
        self._out.write(s)

    # -- the byte stream --------------------------------------------------------

    async def run(self):
        """Read the console until the app stops (a SystemExit from technician
        code ends the app)."""
        import micropython
        micropython.kbd_intr(-1)  # Ctrl-C is a byte for this task, never an interrupt
        r = asyncio.StreamReader(self._in)
        p = select.poll()
        p.register(self._in, select.POLLIN)
        while True:
            try:
                if self.raw:
                    try:
                        b = await asyncio.wait_for_ms(r.read(1), _SESSION_MS)
                    except asyncio.TimeoutError:
                        self.raw = False  # the tool went away: logging resumes
                        continue
                else:
                    b = await r.read(1)
                if not b:
                    await asyncio.sleep_ms(200)  # no host on the line (emulator: EOF)
                    continue
                self.feed(b[0] if not isinstance(b, str) else ord(b))
                # Whatever else has arrived, without a trip through the scheduler
                # per byte (mpremote sends code in 256-byte writes).
                k = 0
                while k < _BURST and p.poll(0):
                    b = self._in.read(1)
                    if not b:
                        break
                    self.feed(b[0] if not isinstance(b, str) else ord(b))
                    k += 1
            except OSError:
                await asyncio.sleep_ms(200)  # e.g. EIO: nobody holds the line's other end
            except UnicodeError:
                pass

    def feed(self, c):
        """One byte from the host."""
        self.last_rx = time.ticks_ms()
        if self.raw:
            self._raw_byte(c)
            return
        if c == 1:
            if self.lock.is_open():
                self.raw = True
                self._c = 0
                self._write("\r\n" + _BANNER)
            return
        if c == 3:
            self._n = 0
            return
        if c == 13 or c == 10:
            if self._n:
                line = bytes(self._line[:self._n])
                self._n = 0
                self._command(line)
            return
        if self._n < _LINE_MAX:
            self._line[self._n] = c
            self._n += 1

    def _raw_byte(self, c):
        if self._paste:
            self._paste -= 1
            if not self._paste:
                self._write("R\x00")  # raw-paste not offered: classic raw REPL
            return
        if c == 5 and not self._c:
            self._paste = 2
            return
        if c == 1:
            self._c = 0
            self._write("\r\n" + _BANNER)
        elif c == 2:
            self.raw = False
            self._c = 0
            self._write("\r\n")
        elif c == 3:
            self._c = 0
        elif c == 4:
            if self._c == 0:
                # Ctrl-D on an empty command: MicroPython soft-resets here. The app
                # keeps running; only the technician namespace starts afresh.
                self.ns = {}
                self._write("soft reboot\r\n" + _BANNER)
            else:
                self._exec()
        elif self._c < _CODE_MAX:
            if self._c == len(self._code):
                self._code.extend(bytes(min(len(self._code), _CODE_MAX - self._c)))
            self._code[self._c] = c
            self._c += 1
        else:
            self._c = _CODE_MAX + 1  # too long: refused at Ctrl-D

    def _exec(self):
        n = self._c
        self._c = 0
        self._write("OK")
        if n > _CODE_MAX:
            self._write("\x04MemoryError: command longer than %d bytes\r\n\x04>" % _CODE_MAX)
            return
        try:
            code = bytes(self._code[:n]).decode()
            if len(self._code) > 1024:
                self._code = bytearray(256)  # give a big buffer back
            tick()
            exec(code, self.ns)
            tick()
            self._write("\x04\x04>")
        except Exception as e:  # noqa: the technician's code, reported to the tool
            self._write("\x04")
            sys.print_exception(e, self._out)
            self._write("\x04>")

    # -- OFFPAY lines (always answered) -----------------------------------------

    def _command(self, line):
        parts = line.split()
        if not parts or parts[0] != b"OFFPAY" or len(parts) < 2:
            return
        lk = self.lock
        cmd = parts[1]
        if cmd == b"STATUS":
            self._say("STATUS %s %s %s %s" % ("production" if lk.production else "test",
                                              "open" if lk.is_open() else "locked",
                                              _hex(lk.terminal_id), self.state))
        elif cmd == b"CHALLENGE":
            ch = lk.challenge()
            if ch is None:
                self._say("REFUSED wait")
            else:
                self._say("CHALLENGE %s %s %d" % (_hex(lk.terminal_id), _hex(ch[0]), ch[1]))
        elif cmd == b"UNLOCK" and len(parts) == 4:
            try:
                until = int(parts[2])
                sig = bytes.fromhex(parts[3].decode())
            except ValueError:
                lk.unlock(None, b"")  # a malformed answer still uses up the challenge
                self._say("REFUSED malformed")
                return
            why = lk.unlock(until, sig)
            self._say("REFUSED " + why if why else "UNLOCKED %d" % until)
        elif cmd == b"LOCK":
            lk.engage()
            self._say("LOCKED" if lk.production else "TEST-MODE")
        else:
            self._say("REFUSED unknown")

    def _say(self, s):
        self._write("OFFPAY " + s + "\r\n")


def reload():
    """`offpay provision`'s last step: the app takes the config now in place.
    Prints one line for the tool."""
    fn = hooks.get("reload")
    if fn is None:
        print("RELOAD unsupported")
        return
    print("RELOAD %s" % (fn(),))


def attach(cfg, clock, tee=None):
    """The app's one call at boot, once the config is loaded: locks the console
    as the config's mode says and starts serving it. Returns the Console; its
    log() is the app's log from then on."""
    from pos import lock
    key = cfg.get("technician_key")
    lk = lock.Lock(bytes.fromhex(cfg["terminal_id"]), bytes.fromhex(key) if key else None,
                   cfg.get("mode") == "production", clock)
    con = Console(lk, tee=tee)
    _remember(con, cfg)
    asyncio.create_task(con.run())
    return con


def configure(con, cfg):
    """Apply a reloaded config's lock settings (an applier for config.reloader):
    a terminal switched to production locks at once, and an unlock in force
    ends (the technician key may have changed)."""
    key = cfg.get("technician_key")
    con.lock.terminal_id = bytes.fromhex(cfg["terminal_id"])
    con.lock.key = bytes.fromhex(key) if key else None
    con.lock.production = cfg.get("mode") == "production"
    con.lock.engage()
    _remember(con, cfg)


def _remember(con, cfg):
    # The lock record (pos.lock.remember), so that a production terminal
    # whose config later fails to load stays locked.
    if _board is None:
        return
    from pos import lock
    try:
        lock.remember(_board.config_path, cfg)
    except OSError as e:
        con.log("LOCK record not written: %s" % (e,))


# -- the watchdog under technician code --------------------------------------------

def tick():
    """Feed the watchdog from technician code that runs long (the app's own
    feeding task waits while it does)."""
    w = getattr(_board, "wdt", None)
    if w is not None:
        w.feed()
