"""`offpay emulate`: a virtual terminal on a pty that mpremote and every
`offpay` subcommand treat as a real device.

The firmware (build/unix) runs in the MicroPython unix port with the emulated
board, exactly as `host_tools.emulator.Emulator` runs it, except that its
console is a pseudo-terminal: the process's stdin/stdout/stderr are the pty's
master side, and the slave (`/dev/pts/N`) is the "USB port" a technician opens
with `mpremote connect /dev/pts/N` or `offpay provision --port /dev/pts/N`.
No bridge copies bytes: pyserial (inside mpremote) opens the slave like any
serial adapter, and the kernel's pty carries the bytes.

Like a board on USB power, the terminal "reboots" when its process ends with
the board's reset (pos.service.RESET_EXIT), the emulated watchdog's exit or a
signal: a fresh process starts on the same pty and flash image. A test-mode
terminal whose app was stopped (SystemExit) leaves MicroPython's REPL on the
line, as an ESP32 does: a bare REPL process with the flash mounted takes the
pty, and when it ends the terminal boots again. An unprovisioned terminal
holds its console (pos.service) rather than stop.

    offpay emulate --workdir var/vt [--config cfg.json] [--pn532 /dev/ttyUSB0]

`--pn532 DEVICE` runs the firmware against a real PN532 on a USB-UART adapter
(HSU) instead of the simulator; `--pn532-sim-pty` puts the simulator behind a
pty and uses that (how the tests check the serial path).
"""
import argparse
import fcntl
import os
import pty
import subprocess
import sys
import termios
import threading
import time
import tty
from pathlib import Path

from host_tools import emulator
from host_tools.build import build
from host_tools.pn532_sim import PN532Sim

_DRAIN = 8192  # bytes of console output nobody read: dropped, as a UART with no listener
RESET_EXIT = 80     # pos.service.RESET_EXIT: the emulated board's machine.reset()
WATCHDOG_EXIT = 9   # boards/unix/wdt.py: the emulated watchdog fired


class VirtualTerminal:
    def __init__(self, workdir, heap="128k", pn532=None, sim=None, env=None, restart=True):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.image = self.workdir / "flash.img"
        self.wifi_file = self.workdir / "wifi"
        self.pn532 = pn532
        self.sim = sim if sim is not None or pn532 else PN532Sim(control_port=0)
        self.till_port = emulator.free_port()
        self.extra_env = env or {}
        self.restart = restart
        self.build_dir = build("unix")
        code = emulator.code_footprint(self.build_dir)
        self.heapsize = "%dk" % ((emulator.heap_bytes(heap) + code + 1023) // 1024)
        self.proc = None
        self.boots = 0
        self.at_repl = False  # the line is MicroPython's REPL (the app was stopped)
        self.port = None
        self._master = self._keep = None
        self._stop = threading.Event()
        self._monitor = None

    def env(self):
        env = dict(os.environ)
        env.update({
            "MICROPYPATH": ".frozen:" + str(self.build_dir),
            "POS_FLASH": str(self.image),
            "POS_PN532": self.pn532 or "127.0.0.1:%d" % self.sim.port,
            "POS_TILL": "127.0.0.1:%d" % self.till_port,
            "POS_WIFI": str(self.wifi_file),
        })
        env.update(self.extra_env)
        return env

    def _spawn(self, repl=False):
        # repl: MicroPython's REPL on the line with the flash mounted, as an
        # ESP32 is once a test-mode app has stopped.
        code = ["-i", "-c", "import flash; flash.setup()"] if repl else ["-c", "import main"]
        self.proc = subprocess.Popen(
            [emulator.micropython(), "-X", "heapsize=" + self.heapsize] + code,
            stdin=self._master, stdout=self._master, stderr=self._master, env=self.env(),
            cwd=str(self.workdir), close_fds=True)
        self.at_repl = repl
        self.boots += not repl

    def start(self):
        if self.sim is not None and not self.pn532:
            self.sim.start()
        if not self.wifi_file.exists():
            self.wifi_file.write_text("down\n")
        self._master, slave = pty.openpty()
        tty.setraw(slave)
        self.port = os.ttyname(slave)
        # Held open but never read: the line stays "plugged in" for the
        # firmware (no EIO) whether or not a technician has it open.
        self._keep = slave
        self._spawn()
        self._monitor = threading.Thread(target=self._watch, daemon=True)
        self._monitor.start()
        return self

    def _watch(self):
        buf = bytearray(4)
        while not self._stop.is_set():
            rc = self.proc.poll()
            if rc is not None and self.restart and not self._stop.is_set():
                # The board's reset, its watchdog, a kill, or the REPL ending:
                # it boots again. Any other end of the app leaves the REPL.
                self._spawn(repl=not self.at_repl and rc not in (RESET_EXIT, WATCHDOG_EXIT) and rc >= 0)
            try:
                fcntl.ioctl(self._keep, termios.FIONREAD, buf)
                if int.from_bytes(buf, sys.byteorder) > _DRAIN:
                    termios.tcflush(self._keep, termios.TCIFLUSH)
            except OSError:
                pass
            self._stop.wait(0.3)

    def wait_console(self, timeout=30):
        """Wait until the terminal app answers on its console; its status."""
        from host_tools import device
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = device.status(self.port, timeout=1.0)
            if st is not None:
                return st
            time.sleep(0.2)
        raise RuntimeError("the virtual terminal's app did not come up on %s" % self.port)

    def set_link(self, up):
        self.wifi_file.write_text("up\n" if up else "down\n")

    def power_cycle(self, timeout=10):
        """Pull the plug and plug it in again: the terminal boots anew on the
        same flash image."""
        boots = self.boots
        self.proc.kill()
        deadline = time.monotonic() + timeout
        while self.boots == boots:
            if time.monotonic() > deadline:
                raise RuntimeError("the virtual terminal did not boot again")
            time.sleep(0.05)

    def stop(self):
        self._stop.set()
        if self._monitor:
            self._monitor.join(2)
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for fd in (self._master, self._keep):
            if fd is not None:
                os.close(fd)
        self._master = self._keep = None
        if self.sim is not None and not self.pn532:
            self.sim.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def main(argv=None):
    ap = argparse.ArgumentParser(prog="offpay emulate", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 stopped (Ctrl-C or --duration), 1 failed to start "
                                        "(or --config refused), 2 usage")
    ap.add_argument("--workdir", default="var/emulate", help="flash image and files (default var/emulate)")
    ap.add_argument("--config", help="provision this config once the terminal is up")
    ap.add_argument("--heap", default="128k", help="heap for the firmware's data (default 128k)")
    ap.add_argument("--pn532", metavar="DEVICE", help="a real PN532 (HSU) on this serial device")
    ap.add_argument("--pn532-sim-pty", action="store_true",
                    help="run the PN532 simulator behind a pty and use that serial path")
    ap.add_argument("--duration", type=float, help="stop after N seconds (default: until Ctrl-C)")
    a = ap.parse_args(argv)
    sim = None
    pn532 = a.pn532
    if a.pn532 and not os.path.exists(a.pn532):
        print("emulate: no serial device %s (is the USB-UART adapter plugged in?)" % a.pn532,
              file=sys.stderr)
        return 1
    if a.pn532_sim_pty:
        sim = PN532Sim(pty=True, control_port=0).start()
        pn532 = sim.pty_path
    try:
        vt = VirtualTerminal(a.workdir, a.heap, pn532=pn532,
                             sim=sim if not a.pn532_sim_pty else None).start()
    except (RuntimeError, OSError) as e:
        print("emulate: %s" % (e,), file=sys.stderr)
        return 1
    try:
        print("PORT=%s" % vt.port, flush=True)
        print("TILL=127.0.0.1:%d" % vt.till_port, flush=True)
        if vt.sim is not None:
            print("PN532_CONTROL=127.0.0.1:%d" % vt.sim.control_port, flush=True)
        elif sim is not None:
            print("PN532_CONTROL=127.0.0.1:%d" % sim.control_port, flush=True)
        if a.config:
            from host_tools import provision
            rc = provision.main(["--port", vt.port, "--config", a.config])
            if rc:
                return rc
        print("virtual terminal running: mpremote connect %s ... (Ctrl-C stops it)" % vt.port,
              flush=True)
        t0 = time.monotonic()
        while a.duration is None or time.monotonic() - t0 < a.duration:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        vt.stop()
        if sim is not None:
            sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
