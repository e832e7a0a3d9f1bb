"""A technician's session with one terminal over its USB console, shared by
every `offpay` subcommand that talks to a device.

The line is a serial port (`/dev/ttyUSB0`, or the emulated terminal's pty
from `offpay emulate`). Two protocols run on it (firmware/pos/console.py):

* `OFFPAY ...` lines, answered even by a locked terminal: status() and the
  unlock challenge (host_tools/lock.py);
* MicroPython's raw REPL, spoken here through mpremote's own SerialTransport,
  answered by a running terminal only while it is open (test mode or
  unlocked), and by a terminal whose app is not running (a fresh board).

Every failure is a DeviceError whose message names the problem: no such
port, a locked terminal, a device that stopped answering.
"""
import errno
import hashlib
import time

import serial
from mpremote.transport import TransportError, TransportExecError
from mpremote.transport_serial import SerialTransport

# Where things live on each board's file system.
PATHS = {
    "esp32": {"config": "/config.json", "lib": "/lib", "main": "/main.py"},
    "unix": {"config": "/flash/config.json", "lib": "/flash/lib", "main": "/flash/main.py"},
}


class DeviceError(Exception):
    pass


_REFUSALS = {errno.ENOSPC: "its file system is full", errno.ENOENT: "no such directory",
             errno.EACCES: "permission denied", errno.EROFS: "read-only file system",
             errno.EISDIR: "a directory is in the way", errno.ENOTDIR: "a file is in the way"}


def _open_error(port, e):
    text = str(e)
    if "No such file" in text or "could not open" in text or "failed to access" in text:
        return DeviceError("cannot open %s: no such device (unplugged, or the wrong port?)" % port)
    if "Permission denied" in text:
        return DeviceError("cannot open %s: permission denied (add yourself to the dialout group)" % port)
    if "busy" in text.lower() or "lock" in text.lower():
        return DeviceError("cannot open %s: another program holds the port (close the monitor)" % port)
    return DeviceError("cannot open %s: %s" % (port, text))


def status(port, timeout=3.0, ser=None):
    """The terminal's own answer to OFFPAY STATUS: {"mode", "lock", "terminal",
    "state"} (state: "running", or "not-provisioned" / "fault" while
    pos.service holds the console), or None when something else answers (a
    stock MicroPython REPL: no app running). DeviceError when the port cannot
    be opened."""
    own = ser is None
    if own:
        try:
            ser = serial.serial_for_url(port, 115200, timeout=0.1, exclusive=True)
        except (serial.SerialException, OSError) as e:
            raise _open_error(port, e)
    try:
        ser.reset_input_buffer()
        # Ctrl-B leaves a raw REPL someone left open; Ctrl-C clears a half line.
        ser.write(b"\x02\r\x03OFFPAY STATUS\r\n")
        deadline = time.monotonic() + timeout
        buf = b""
        while time.monotonic() < deadline:
            buf += ser.read(256)
            for line in buf.split(b"\n")[:-1]:  # whole lines only: a line cut short is no answer
                parts = line.strip().split()
                if len(parts) in (5, 6) and parts[:2] == [b"OFFPAY", b"STATUS"]:
                    return {"mode": parts[2].decode(), "lock": parts[3].decode(),
                            "terminal": parts[4].decode(),
                            "state": parts[5].decode() if len(parts) == 6 else "running"}
            if b">>> " in buf or b"SyntaxError" in buf:
                return None  # MicroPython's own REPL answered: no app running
        return None
    finally:
        if own:
            ser.close()


class Session:
    """A raw REPL session: `with Session(port) as s: s.exec("print(1)")`.

    It refuses to start on a locked terminal, and never soft-resets the board
    (the app keeps running; pos.console serves the session)."""

    def __init__(self, port, timeout=5.0, chunk=512):
        self.port = port
        self.timeout = timeout
        self.chunk = chunk
        self.t = None
        self.state = None
        self.board = None

    def __enter__(self):
        self.state = status(self.port)
        if self.state is not None and self.state["lock"] != "open":
            what = "" if self.state["state"] == "running" else \
                " and %s (pos.service holds its console)" % self.state["state"].replace("-", " ")
            raise DeviceError("terminal %s on %s is locked (production mode)%s: run `offpay unlock "
                              "--port %s --key TECHNICIAN_KEY` first"
                              % (self.state["terminal"], self.port, what, self.port))
        try:
            self.t = SerialTransport(self.port, baudrate=115200, timeout=self.timeout)
        except (TransportError, serial.SerialException, OSError) as e:
            raise _open_error(self.port, e)
        try:
            self.t.enter_raw_repl(soft_reset=False, timeout_overall=self.timeout)
        except (TransportError, serial.SerialException, OSError) as e:
            self.close()
            raise DeviceError("%s does not answer as a MicroPython terminal (%s)" % (self.port, e))
        plat = self.eval("__import__('sys').platform")
        self.board = "esp32" if plat == "esp32" else "unix"
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.t is not None:
            try:
                self.t.exit_raw_repl()
            except (TransportError, serial.SerialException, OSError):
                pass
            try:
                self.t.close()
            except (serial.SerialException, OSError):
                pass
            self.t = None

    @property
    def paths(self):
        return PATHS[self.board]

    def exec(self, code, timeout=None, consumer=None):
        """Run code on the device; its printed output (str). A device error
        becomes DeviceError with the device's last traceback line. With
        `consumer`, the output goes to consumer(bytes) as it arrives instead
        (for a progress bar) and "" is returned."""
        try:
            out, err = self.t.exec_raw(code, timeout=timeout or self.timeout, data_consumer=consumer)
        except (TransportError, serial.SerialException, OSError) as e:
            raise DeviceError("%s stopped answering (%s)" % (self.port, e))
        if err:
            lines = err.decode(errors="replace").strip().splitlines()
            raise DeviceError("on the device: %s" % (lines[-1] if lines else "error"))
        return "" if consumer else out.decode(errors="replace")

    def eval(self, expr):
        import ast
        return ast.literal_eval(self.exec("print(repr(%s))" % expr).strip())

    def sha256(self, path):
        """Hex SHA-256 of a file on the device, or None when it does not exist."""
        out = self.exec(
            "import hashlib\ntry:\n f=open(%r,'rb')\nexcept OSError:\n print('NONE')\nelse:\n"
            " h=hashlib.sha256();b=bytearray(512)\n while True:\n  n=f.readinto(b)\n  if not n:break\n"
            "  h.update(memoryview(b)[:n])\n f.close();print(h.digest().hex())" % path).strip()
        return None if out == "NONE" else out

    def write(self, path, data, progress=None):
        """Write `data` to `path` on the device (not atomic: see put)."""
        try:
            self.t.fs_writefile(path, data, chunk_size=self.chunk,
                                progress_callback=(lambda n, total: progress(n)) if progress else None)
        except OSError as e:
            if not isinstance(e, serial.SerialException) and e.errno in _REFUSALS:
                # The device answered: its file system said no (mpremote
                # passes the device's OSError on).
                raise DeviceError("%s refused writing %s: %s" % (self.port, path, _REFUSALS[e.errno]))
            raise DeviceError("%s stopped answering while writing %s (%s)" % (self.port, path, e))
        except (TransportError, TransportExecError) as e:
            raise DeviceError("%s stopped answering while writing %s (%s)" % (self.port, path, e))

    def put(self, path, data, progress=None):
        """Atomically replace `path` with `data`: written beside it, read back
        and compared by SHA-256, then renamed over it. On any failure the old
        file is still there, untouched."""
        tmp = path + ".new"
        try:
            self.write(tmp, data, progress)
        except DeviceError:
            try:  # what was written of it: gone, if the device still answers
                self.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass" % tmp)
            except DeviceError:
                pass
            raise
        want = hashlib.sha256(data).hexdigest()
        got = self.sha256(tmp)
        if got != want:
            self.exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass" % tmp)
            raise DeviceError("%s did not read back identically (sha256 %s, sent %s): left as it was"
                              % (path, got, want))
        self.exec("import os\nos.rename(%r, %r)" % (tmp, path))
        return want

    def read(self, path, progress=None):
        try:
            return bytes(self.t.fs_readfile(path, chunk_size=self.chunk))
        except (TransportError, TransportExecError, serial.SerialException, OSError) as e:
            raise DeviceError("cannot read %s from %s (%s)" % (path, self.port, e))

    def app_running(self):
        return self.exec("import sys\nc=sys.modules.get('pos.console')\n"
                         "print(bool(c and c.current))").strip() == "True"

    def restart_app(self):
        """Start the terminal app on a board where it is not running (a fresh
        board at its REPL), without a reset. The app then owns the line."""
        pre = "import vfs\ntry:\n vfs.umount('/flash')\nexcept OSError:\n pass\n" if self.board == "unix" else ""
        try:
            self.t.exec_raw_no_follow(pre + "import sys\nsys.modules.pop('main', None)\nimport main\n")
        except (TransportError, serial.SerialException, OSError) as e:
            raise DeviceError("could not start the app on %s (%s)" % (self.port, e))
        self.t.close()
        self.t = None
