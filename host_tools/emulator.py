"""The emulated terminal: the real firmware files in the MicroPython unix port,
wired by boards/unix to the PN532 simulator, a littlefs flash image and a Wi-Fi
link a test can take down. `Emulator` starts it; `Till` speaks its register link
as a merchant's till would (docs/till.md)."""
import contextlib
import json
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
import tty
from pathlib import Path

from host_tools.build import build, not_wired
from host_tools.pn532_sim import PN532Sim

ROOT = Path(__file__).resolve().parents[1]


def micropython():
    return os.environ.get("MICROPYTHON") or str(Path(sys.executable).with_name("micropython"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Till:
    """A till's end of the register link: one line out, lines back."""

    def __init__(self, port, timeout=60):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.file = self.sock.makefile("rwb")

    def send(self, line):
        self.file.write(line.encode() + b"\n")
        self.file.flush()

    def read(self):
        line = self.file.readline()
        if not line:
            raise ConnectionError("terminal closed the till link")
        return line.decode().strip()

    def call(self, line):
        self.send(line)
        return self.read()

    def close(self):
        self.file.close()  # the socket's fd stays open while its file object does
        self.sock.close()


# Modules of the build that boards/unix never imports (other PN532 transports):
# boards/modules.json, the one module list.
_NOT_WIRED = not_wired("unix")

_FOOTPRINT = r"""
import asyncio, gc, sys
gc.collect()
a = gc.mem_alloc()
for name in sys.argv[1:]:
    __import__(name)
gc.collect()
print(gc.mem_alloc() - a)
"""


def wired_modules(build_dir):
    """Names of the build's modules that the emulated board imports."""
    build_dir = Path(build_dir)
    names = sorted(str(p.relative_to(build_dir).with_suffix("")).replace(os.sep, ".")
                   for p in build_dir.rglob("*.mpy"))
    return [n for n in names if n not in _NOT_WIRED and not n.endswith("__init__")]


def code_footprint(build_dir, names=None):
    """Bytes of heap that importing the build's firmware and board modules (or
    just `names`) takes in the unix port: bytecode, constants (the P-256
    table), qstrs and function objects, all of which a device build freezes
    into flash. Measured, not estimated: a fresh process imports them and
    reads gc.mem_alloc()."""
    if names is None:
        names = wired_modules(build_dir)
    r = subprocess.run([micropython(), "-X", "heapsize=4m", "-c", _FOOTPRINT] + names,
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MICROPYPATH=".frozen:" + str(build_dir)))
    if r.returncode:
        raise RuntimeError("measuring the code footprint failed:\n" + r.stdout + r.stderr)
    return int(r.stdout.split()[-1])


def heap_bytes(spec):
    """ "128k" -> 131072 (the unix port's -X heapsize syntax)."""
    spec = str(spec).strip().lower()
    mult = {"k": 1024, "m": 1024 * 1024}.get(spec[-1:], 1)
    return int(spec.rstrip("km")) * mult


class Emulator:
    """Runs boards/unix/main.py in the unix port against a PN532 simulator.

    Heap: `heap` is the cap for the firmware's data, as on the device. On the
    ESP32 the firmware is frozen into flash (boards/esp32/manifest.py), so its
    code takes no heap; the unix port can only load .mpy into the heap, so the
    process gets `heap` plus the code's measured footprint (code_footprint()).
    Code that grows still has to fit beside the same data budget."""

    def __init__(self, workdir, config, heap="128k", sim=None, env=None):
        self.workdir = Path(workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config
        self.heap = heap
        self.sim = sim or PN532Sim()
        self.image = self.workdir / "flash.img"
        self.wifi_file = self.workdir / "wifi"
        self.log_path = self.workdir / "terminal.log"
        self.till_port = free_port()
        self.extra_env = env or {}
        self.build_dir = build("unix")
        self.code_bytes = code_footprint(self.build_dir)
        kb = (heap_bytes(heap) + self.code_bytes + 1023) // 1024
        self.heapsize = "%dk" % kb  # what -X heapsize gets
        self.proc = None
        self.sim_started = False
        self.lines = []
        self._reader = None

    def env(self):
        env = dict(os.environ)
        env.update({
            "MICROPYPATH": ".frozen:" + str(self.build_dir),
            "POS_FLASH": str(self.image),
            "POS_PN532": "127.0.0.1:%d" % self.sim.port,
            "POS_TILL": "127.0.0.1:%d" % self.till_port,
            "POS_WIFI": str(self.wifi_file),
        })
        env.update(self.extra_env)
        return env

    def last_tap(self, since=0):
        """The terminal's TAP log line after line `since`, as (reason, {phase: value})."""
        for line in reversed(self.lines[since:]):
            if line.startswith("TAP "):
                parts = line.split()
                return parts[1], dict(p.split("=", 1) for p in parts[2:] if "=" in p)
        return None

    def last_tap_ms(self):
        """The terminal's own time for the last tap, activation to decision stored,
        less the time it spent polling an empty field before the phone arrived."""
        tap = self.last_tap()
        if tap is None:
            return None
        parts = tap[1]
        us = [int(parts[k]) for k in ("activation", "select", "authorize", "verify", "persist")
              if k in parts]
        if not us:
            return None
        return (sum(us) - int(parts.get("activation_idle", 0))) / 1000

    def provision(self):
        """Put the config on the terminal's flash the way a technician does: the
        CLI's mpremote path over the emulated terminal's REPL."""
        from host_tools.provision import provision
        cfg = self.workdir / "config.json"
        cfg.write_text(json.dumps(self.config))
        with self.repl() as url:
            r = provision(url, cfg, board="unix", out=lambda *a: None)
            if self.seed_clock:
                self.set_clock(url, int(time.time()))
            return r

    seed_clock = True  # a technician's provisioning gives the terminal its first trusted time

    def set_clock(self, url, t):
        """Write the terminal's trusted-clock file (pos.clock) with time `t`, as
        the technician's provisioning does: the first trusted time a terminal
        without an acquirer sync has."""
        code = ("from pos.clock import Clock\nc = Clock('/flash')\nc.load()\n"
                "c.set_acquirer(%d)\nprint('CLOCK', c.save())\n" % t)
        r = subprocess.run([str(Path(sys.executable).with_name("mpremote")), "connect", url,
                            "resume", "exec", code], capture_output=True, text=True, timeout=60)
        if r.returncode or "CLOCK True" not in r.stdout:
            raise RuntimeError("setting the terminal's clock failed: " + r.stdout + r.stderr)

    @contextlib.contextmanager
    def repl(self):
        """The emulated terminal's USB REPL: the unix port on a pty with the flash
        mounted, bridged to socket://127.0.0.1:PORT for mpremote."""
        master, slave = pty.openpty()
        tty.setraw(slave)
        proc = subprocess.Popen(
            [micropython(), "-X", "heapsize=" + self.heapsize, "-i", "-c", "import flash; flash.setup()"],
            stdin=slave, stdout=slave, stderr=slave, env=self.env(), close_fds=True)
        os.close(slave)
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        stop = threading.Event()

        def bridge():
            srv.settimeout(0.2)
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except OSError:
                    continue
                with conn:
                    while not stop.is_set():
                        r, _, _ = select.select([master, conn], [], [], 0.2)
                        try:
                            if master in r:
                                conn.sendall(os.read(master, 4096))
                            if conn in r:
                                d = conn.recv(4096)
                                if not d:
                                    break
                                os.write(master, d)
                        except OSError:
                            break

        t = threading.Thread(target=bridge, daemon=True)
        t.start()
        try:
            yield "socket://127.0.0.1:%d" % srv.getsockname()[1]
        finally:
            stop.set()
            t.join(2)
            srv.close()
            proc.kill()
            proc.wait()
            os.close(master)

    def start(self, wait=20):
        if not self.sim_started:
            self.sim.start()
            self.sim_started = True
        self.set_link(self.wifi_file.read_text().strip() == "up" if self.wifi_file.exists() else False)
        self.proc = subprocess.Popen(
            [micropython(), "-X", "heapsize=" + self.heapsize, str(self.build_dir / "main.py")],
            env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self._ready.wait(wait)
        if not any(l.startswith("READY") for l in self.lines) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("terminal did not come up (exit %s):\n%s" % (
                self.proc.returncode, "\n".join(self.lines[-30:])))
        return self

    def _pump(self):
        with open(self.log_path, "a") as log:
            for line in self.proc.stdout:
                line = line.rstrip("\n")
                self.lines.append(line)
                log.write(line + "\n")
                log.flush()
                if line.startswith("READY") or line.startswith("SERVICE "):
                    self._ready.set()  # up, or out of service (pos.service): start() decides
        self._ready.set()  # the process ended: start() must not wait for READY

    def till(self):
        return Till(self.till_port)

    def set_link(self, up):
        """Take the terminal's Wi-Fi link down or bring it back."""
        self.wifi_file.write_text("up\n" if up else "down\n")

    def pay(self, till, phone, amount, ref, keep=False, currency=978):
        """One sale as a till and a customer make it: CHARGE, the phone comes
        into the field, the RESULT line. Unless `keep` (the phone stays on the
        reader), the phone leaves and this waits until the terminal has seen
        the field empty (its "FIELD clear" line), as the next customer does."""
        n = len(self.lines)
        till.send("CHARGE %d %03d %s" % (amount, currency, ref))
        self.sim.add_phone(phone)
        line = till.read()
        if not keep:
            self.sim.remove_phone(phone)
            self.wait_for("FIELD clear", n)
        return line

    def wait_for(self, prefix, since=0, timeout=10.0):
        """The first log line after line `since` that starts with `prefix`,
        waiting for it up to `timeout` seconds; None if none came."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines[since:]:
                if line.startswith(prefix):
                    return line
            if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None
                                               and not self._reader.is_alive()):
                return None
            time.sleep(0.01)

    def events(self, prefix="EVENT"):
        return [l for l in self.lines if l.startswith(prefix)]

    def stop(self, timeout=5):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader:
            self._reader.join(2)
        if self.sim_started:
            self.sim.stop()
            self.sim_started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
