"""PN532 simulator: the HSU frame protocol byte for byte, over TCP (and optionally a pty).

    from host_tools.pn532_sim import PN532Sim, EchoPhone
    with PN532Sim(port=0) as sim:            # 0 = ephemeral; sim.port is the bound port
        sim.add_phone(EchoPhone())           # any object with transceive(apdu) -> bytes
        ... the terminal connects to 127.0.0.1:sim.port ...
        sim.totals("activation")["air_us"]

    python -m host_tools.pn532_sim --port 0 [--pty] [--phone echo] [--control-port 0]

A test running elsewhere (e.g. a MicroPython script) can drive faults and phones over an
optional line-based control port: PN532Sim(control_port=0) -> sim.control_port; one command
per line, answered "ok ..." or "err ..."; see PN532Sim.control().

The reader: ACK after each valid command frame, then the response frame; host NACK ->
the last response is sent again; host ACK -> the command in progress is aborted; frames
with a bad LCS/DCS are ignored (no ACK); unknown commands/bad parameters -> ACK + error
frame (00 00 FF 01 FF 7F 81 00); normal and extended frames both ways. It starts asleep
(LowVbat): bytes are ignored until a 0x55 wake-up byte (the two bytes after it are lost
while the oscillator starts, hence the 55 55 00 00 ... preamble); PowerDown and wedge()
put it back there.

Commands: GetFirmwareVersion (32 01 06 07), GetGeneralStatus, SAMConfiguration,
RFConfiguration (items 1 field, 2 timeouts, 4, 5 MaxRetries, analog ones accepted),
InListPassiveTarget (106 kbps type A; MaxTg 1 or 2), InDataExchange (MI chaining both
ways, 262 data bytes per frame), InRelease, InDeselect, Diagnose (0 echo, 6 presence),
PowerDown. With MxRtyPassiveActivation = 0xFF an InListPassiveTarget with no phone stays
pending until a phone arrives or the host aborts it with an ACK; with a finite count it
answers NbTg = 0.

Two phones in the field: bitwise anticollision (ISO 14443-3) picks one, the reader
taking the '1' branch at the first colliding UID bit (bits in transmission order, LSB
first); the collision costs an extra anticollision round of air time. MaxTg = 2 lists both.

Phones: `transceive(apdu: bytes) -> bytes` (R-APDU data + SW1 SW2); optional attributes
uid (4 or 7 bytes; default random 4-byte NFCID1 starting 0x08), processing_us (phone
time for the APDU it just answered, read after each transceive, so a phone can charge
each command its own time: host_tools.wallet_sim.Phone models Android HCE and keystore
signing, PROTOCOL.md 5.7; default PN532Sim(phone_us=...)), ats (bytes, TL first).

Virtual clock (never slows the simulation unless time_scale > 0): per command, UART time
(10 bits/byte at `baud`, both directions incl. ACK), reader processing `reader_us`, air
time at 106 kbps (1 ETU = 128/13.56 MHz; 9 bits/byte + SOF/EOF; 1172/fc frame delay each
way; ISO-DEP I-blocks limited by FSC (from the ATS) one way and the PN532's FSD the other,
R(ACK) per chained block) and phone time. Phase of a command: set_phase(name) if set,
else "activation" (InListPassiveTarget), ins_names[INS] of the APDU ("select" for A4,
"authorize" for A0; GET RESPONSE (C0) counts for the command it continues), or
"apdu_XX", or "reader" for everything else. totals(phase) / phases() / log / reset_clock().

Faults (each applies to upcoming traffic; clear_faults() resets):
    corrupt_responses(n=1)      bad DCS in the next n response frames (resends too)
    nack_commands(n=1)          answer NACK instead of ACK to the next n commands (not executed)
    silence(n=1, ack=False)     next n commands get no response (no ACK unless ack=True)
    garbage(data=None, n=16)    bytes sent before the next frame (default: n random 01..FE)
    remove_phone_after(k, phone=None, mid_chain=False)
                                phone leaves after k more completed APDUs (the next one gets
                                status 0x01 timeout), or with mid_chain right after the first
                                part of the next chained (MI) response
    wedge()                     stops answering until a wake-up (0x55) sequence
"""
import argparse
import collections
import os
import random
import select
import socket
import sys
import threading
import time

ACK = b"\x00\x00\xff\x00\xff\x00"
NACK = b"\x00\x00\xff\xff\x00\x00"
ERROR_FRAME = b"\x00\x00\xff\x01\xff\x7f\x81\x00"

FC = 13.56e6
ETU_US = 128 / FC * 1e6  # 9.44 us at 106 kbps
FDT_US = 1172 / FC * 1e6  # minimum frame delay time, ~86 us
FSC_TABLE = (16, 24, 32, 40, 48, 64, 96, 128, 256)
MAX_DATA = 262  # InDataExchange data per frame (PN532 buffer)

_ASLEEP, _AWAKE = 0, 1


def frame(payload):
    """PN532 -> host information frame (normal or extended) around payload (TFI+PD)."""
    n = len(payload)
    dcs = (-sum(payload)) & 0xFF
    if n > 255:
        lm, ll = n >> 8, n & 0xFF
        return bytes([0, 0, 0xFF, 0xFF, 0xFF, lm, ll, (-(lm + ll)) & 0xFF]) + bytes(payload) + bytes([dcs, 0])
    return bytes([0, 0, 0xFF, n, (-n) & 0xFF]) + bytes(payload) + bytes([dcs, 0])


def air_frame_us(nbytes, bits=None):
    """Air time of one ISO 14443-A frame at 106 kbps: SOF + 9 bits per byte + EOF."""
    b = bits if bits is not None else 9 * nbytes
    return (b + 2) * ETU_US


def exchange_us(n_out, n_in, bits_out=None):
    return air_frame_us(n_out, bits_out) + FDT_US + air_frame_us(n_in) + FDT_US


class EchoPhone:
    """Minimal phone: SELECT -> 9000, anything else -> echo of the data + 9000.

    A command with INS 0xB0 and Le returns Le bytes (0 = 256, extended Le allowed)."""

    def __init__(self, uid=None, processing_us=None):
        if uid is not None:
            self.uid = bytes(uid)
        if processing_us is not None:
            self.processing_us = processing_us
        self.apdus = []

    def transceive(self, apdu):
        apdu = bytes(apdu)
        self.apdus.append(apdu)
        if len(apdu) >= 4 and apdu[1] == 0xA4:
            return b"\x90\x00"
        if len(apdu) >= 5 and apdu[1] == 0xB0:
            le = apdu[-1] or 256
            if len(apdu) == 7 and apdu[4] == 0:
                le = (apdu[5] << 8 | apdu[6]) or 65536
            return bytes(i & 0xFF for i in range(le)) + b"\x90\x00"
        if len(apdu) > 7 and apdu[4] == 0:  # extended Lc
            lc = apdu[5] << 8 | apdu[6]
            return apdu[7:7 + lc] + b"\x90\x00"
        if len(apdu) > 5:
            return apdu[5:5 + apdu[4]] + b"\x90\x00"
        return b"\x90\x00"


class _Active:
    def __init__(self, tg, phone, uid, ats):
        self.tg = tg
        self.phone = phone
        self.uid = uid
        self.ats = ats
        fsci = ats[1] & 0x0F if len(ats) > 1 else 2
        self.fsc = FSC_TABLE[min(fsci, 8)]
        self.cmd = bytearray()  # C-APDU parts received with MI
        self.rest = b""  # R-APDU parts not yet delivered
        self.phase = None


# SetSerialBaudRate codes 0..8 (UM0701 7.2.13)
BAUD_RATES = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1288000)


class PN532Sim:
    def __init__(self, port=0, host="127.0.0.1", *, pty=False, control_port=None, seed=None,
                 baud=115200,
                 time_scale=0.0, fsd=64, reader_us=300, phone_us=2000,
                 firmware=(0x32, 0x01, 0x06, 0x07), ins_names=None, log_max=10000):
        self.host = host
        self.port = port
        self.use_pty = pty
        self.control_port = control_port
        self._csock = None
        self.pty_path = None
        self.baud = baud
        self.time_scale = time_scale
        self.fsd = fsd
        self.reader_us = reader_us
        self.phone_us = phone_us
        self.firmware = bytes(firmware)
        self.ins_names = {0xA4: "select", 0xA0: "authorize"}  # PROTOCOL.md section 5
        if ins_names:
            self.ins_names.update(ins_names)
        self.rng = random.Random(seed)
        self.lock = threading.RLock()
        # Notified whenever the simulator has handled bytes or a timer: tests
        # wait on it (wait_until) instead of sleeping against this thread.
        self._changed = threading.Condition(self.lock)
        self.commands_seen = collections.Counter()  # PN532 command code -> count
        self.log = collections.deque(maxlen=log_max)
        self.errors = []  # exceptions raised by phones
        self.stats = collections.Counter()
        self._phones = []
        self._uids = {}
        self._threads = []
        self._stop = threading.Event()
        self._lsock = None
        self._conns = []
        self._master = self._slave = None
        self._phase = None
        self._prev_phase = None
        self._totals = {}
        self._reset_chip()
        self.clear_faults()

    # ---- lifecycle ---------------------------------------------------------------------
    def start(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((self.host, self.port))
        ls.listen(4)
        ls.settimeout(0.05)
        self._lsock = ls
        self.port = ls.getsockname()[1]
        self._spawn(self._accept_loop)
        if self.use_pty:
            import tty

            self._master, self._slave = os.openpty()
            tty.setraw(self._slave)
            self.pty_path = os.ttyname(self._slave)
            self._spawn(self._pty_loop)
        if self.control_port is not None:
            cs = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            cs.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            cs.bind((self.host, self.control_port))
            cs.listen(2)
            cs.settimeout(0.05)
            self._csock = cs
            self.control_port = cs.getsockname()[1]
            self._spawn(self._control_accept)
        self._spawn(self._tick_loop)
        return self

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(2)
        for c in list(self._conns):
            try:
                c.close()
            except OSError:
                pass
        for ls in (self._lsock, self._csock):
            if ls:
                ls.close()
        for fd in (self._master, self._slave):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self._threads.append(t)

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                c, _ = self._lsock.accept()
            except (socket.timeout, OSError):
                continue
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.append(c)
            self._spawn(self._conn_loop, c)

    def _conn_loop(self, c):
        c.settimeout(0.01)

        def out(b):
            try:
                c.sendall(b)
            except OSError:
                pass

        try:
            while not self._stop.is_set():
                try:
                    d = c.recv(4096)
                except socket.timeout:
                    continue
                except OSError:
                    break
                if not d:
                    break
                self.feed(d, out)
        finally:
            try:
                c.close()
            except OSError:
                pass
            if c in self._conns:
                self._conns.remove(c)

    def _pty_loop(self):
        m = self._master

        def out(b):
            try:
                os.write(m, b)
            except OSError:
                pass

        while not self._stop.is_set():
            r, _, _ = select.select([m], [], [], 0.02)
            if not r:
                continue
            try:
                d = os.read(m, 4096)
            except OSError:
                time.sleep(0.01)
                continue
            if d:
                self.feed(d, out)

    def _control_accept(self):
        while not self._stop.is_set():
            try:
                c, _ = self._csock.accept()
            except (socket.timeout, OSError):
                continue
            self._conns.append(c)
            self._spawn(self._control_loop, c)

    def _control_loop(self, c):
        c.settimeout(0.05)
        buf = b""
        while not self._stop.is_set():
            try:
                d = c.recv(1024)
            except socket.timeout:
                continue
            except OSError:
                break
            if not d:
                break
            buf += d
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                try:
                    reply = "ok " + str(self.control(line.decode().strip()))
                except Exception as e:  # report to the client, keep serving
                    reply = "err %s: %s" % (type(e).__name__, e)
                try:
                    c.sendall(reply.encode() + b"\n")
                except OSError:
                    return

    def control(self, line):
        """One text command (control port / CLI): add [echo] [uid-hex] | remove | clear |
        corrupt N | nack N | silence N [ack] | garbage N | remove_after K [mid] | wedge |
        clear_faults | phase NAME|- | reset_clock | totals [PHASE] | stats. Returns a string."""
        import json

        w = line.split()
        if not w:
            return ""
        op, a = w[0], w[1:]
        if op == "add":
            uid = next((bytes.fromhex(x) for x in a if x != "echo"), None)
            self.add_phone(EchoPhone(uid=uid))
            return str(len(self.phones))
        if op in ("remove", "clear"):
            self.clear()
        elif op == "corrupt":
            self.corrupt_responses(int(a[0]) if a else 1)
        elif op == "nack":
            self.nack_commands(int(a[0]) if a else 1)
        elif op == "silence":
            self.silence(int(a[0]) if a else 1, ack="ack" in a)
        elif op == "garbage":
            self.garbage(n=int(a[0]) if a else 16)
        elif op == "remove_after":
            self.remove_phone_after(int(a[0]) if a else 0, mid_chain="mid" in a)
        elif op == "wedge":
            self.wedge()
        elif op == "clear_faults":
            self.clear_faults()
        elif op == "phase":
            self.set_phase(None if not a or a[0] == "-" else a[0])
        elif op == "reset_clock":
            self.reset_clock()
        elif op == "totals":
            return json.dumps(self.totals(a[0] if a else None))
        elif op == "stats":
            return json.dumps(dict(self.stats))
        else:
            raise ValueError("unknown command " + op)
        return ""

    def _tick_loop(self):
        while not self._stop.is_set():
            time.sleep(0.005)
            self.tick()

    # ---- phones ------------------------------------------------------------------------
    def add_phone(self, phone):
        with self.lock:
            if phone not in self._phones:
                self._phones.append(phone)

    def remove_phone(self, phone):
        with self.lock:
            if phone in self._phones:
                self._phones.remove(phone)

    def clear(self):
        with self.lock:
            self._phones.clear()

    @property
    def phones(self):
        with self.lock:
            return list(self._phones)

    def uid_of(self, phone):
        u = getattr(phone, "uid", None)
        if u:
            return bytes(u)
        with self.lock:
            if id(phone) not in self._uids:
                self._uids[id(phone)] = bytes([0x08]) + bytes(self.rng.getrandbits(8) for _ in range(3))
            return self._uids[id(phone)]

    # ---- faults ------------------------------------------------------------------------
    def clear_faults(self):
        with self.lock:
            self._f_corrupt = 0
            self._f_nack = 0
            self._f_silence = 0
            self._f_silence_ack = False
            self._f_garbage = b""
            self._f_remove = None  # (k, phone, mid_chain)

    def corrupt_responses(self, n=1):
        with self.lock:
            self._f_corrupt = n

    def nack_commands(self, n=1):
        with self.lock:
            self._f_nack = n

    def silence(self, n=1, ack=False):
        with self.lock:
            self._f_silence = n
            self._f_silence_ack = ack

    def garbage(self, data=None, n=16):
        with self.lock:
            if data is None:
                data = bytes(self.rng.randint(1, 0xFE) for _ in range(n))
            self._f_garbage += bytes(data)

    def remove_phone_after(self, k, phone=None, mid_chain=False):
        with self.lock:
            self._f_remove = [k, phone, mid_chain]

    def wedge(self):
        with self.lock:
            self._state = _ASLEEP
            self._pending = None
            self.stats["wedged"] += 1

    @property
    def asleep(self):
        return self._state == _ASLEEP

    # ---- clock -------------------------------------------------------------------------
    def set_phase(self, name):
        with self.lock:
            self._phase = name

    def reset_clock(self):
        with self.lock:
            self._totals = {}
            self.log.clear()

    def _account(self, phase, cmd, uart_us, air_us=0.0, phone_us=0.0, reader_us=None):
        rec = dict(phase=phase, cmd=cmd, uart_us=uart_us, air_us=air_us, phone_us=phone_us,
                   reader_us=self.reader_us if reader_us is None else reader_us)
        self.log.append(rec)
        t = self._totals.setdefault(phase, dict(commands=0, uart_us=0.0, air_us=0.0,
                                                 phone_us=0.0, reader_us=0.0))
        t["commands"] += 1
        for k in ("uart_us", "air_us", "phone_us", "reader_us"):
            t[k] += rec[k]
        return rec

    def totals(self, phase=None):
        """Sums for one phase (or all phases when None): commands, uart_us, air_us,
        phone_us, reader_us, total_us."""
        with self.lock:
            acc = dict(commands=0, uart_us=0.0, air_us=0.0, phone_us=0.0, reader_us=0.0)
            for name, t in self._totals.items():
                if phase is None or name == phase:
                    for k in acc:
                        acc[k] += t[k]
            acc["total_us"] = acc["uart_us"] + acc["air_us"] + acc["phone_us"] + acc["reader_us"]
            return acc

    def phases(self):
        with self.lock:
            return {name: self.totals(name) for name in self._totals}

    # ---- byte engine -------------------------------------------------------------------
    def _reset_chip(self):
        self._state = _ASLEEP
        self._swallow = 0
        self._inbuf = bytearray()
        self._partial_t = None
        self._pending = None  # (out, maxtg, cmd_len) for a waiting InListPassiveTarget
        self._out = None
        self._last = None  # last response frame (for NACK)
        self._active = {}
        self._field = False
        self._retries = [0xFF, 0x01, 0xFF]
        self._rf_timeouts = [0x00, 0x0B, 0x0A]
        self._sam = None
        self._baud_next = None

    def _uart_us(self, n):
        return n * 10e6 / self.baud

    def feed(self, data, out):
        """Bytes from the host; `out(bytes)` sends to the host."""
        delayed = []
        with self.lock:
            self.stats["rx_bytes"] += len(data)
            self._inbuf += data
            self._out = out
            self._partial_t = time.monotonic()
            self._process(out, delayed)
        self._flush(delayed)
        with self.lock:
            self._changed.notify_all()  # after the answer is out: a waiter sees it sent

    def wait_until(self, pred, timeout=10.0):
        """Block until pred() (called under the simulator's lock) is true; returns
        its last value (falsy on timeout). E.g. wait_until(lambda:
        sim.commands_seen[0x4A] > n) waits for the terminal's next poll."""
        end = time.monotonic() + timeout
        with self._changed:
            while True:
                v = pred()
                left = end - time.monotonic()
                if v or left <= 0:
                    return v
                self._changed.wait(min(left, 0.1))

    def tick(self):
        """Timers: stale partial frames are dropped; a pending poll completes when a phone appears."""
        delayed = []
        with self.lock:
            if self._inbuf and self._partial_t and time.monotonic() - self._partial_t > 0.05:
                i = self._inbuf.find(b"\x00\xff")
                del self._inbuf[:i + 2 if i >= 0 else len(self._inbuf)]
                self._partial_t = time.monotonic()
                self._process(self._out, delayed)
            if self._pending and self._phones:
                out, maxtg, clen = self._pending
                self._pending = None
                payload, rec = self._inlist(maxtg, clen)
                self._respond(out, 0x4A, payload, rec, delayed)
        self._flush(delayed)
        if delayed:
            with self.lock:
                self._changed.notify_all()

    def _flush(self, delayed):
        for out, data, wait_us in delayed:
            if wait_us and self.time_scale > 0:
                time.sleep(wait_us * self.time_scale / 1e6)
            if out is not None:
                out(data)

    def _send(self, out, data, delayed, wait_us=0):
        if self._f_garbage:
            data = self._f_garbage + data
            self._f_garbage = b""
            self.stats["garbage_sent"] += 1
        self.stats["tx_bytes"] += len(data)
        delayed.append((out, data, wait_us))

    def _process(self, out, delayed):
        buf = self._inbuf
        while buf:
            if self._state == _ASLEEP:
                i = buf.find(0x55)
                if i < 0:
                    buf.clear()
                    return
                del buf[:i + 1]
                self._state = _AWAKE
                self._swallow = 2
                self._pending = None
                self.stats["wakeups"] += 1
                continue
            if self._swallow:
                k = min(self._swallow, len(buf))
                del buf[:k]
                self._swallow -= k
                continue
            i = buf.find(b"\x00\xff")
            if i < 0:
                keep = 1 if buf[-1] == 0 else 0
                del buf[:len(buf) - keep]
                return
            del buf[:i]
            if len(buf) < 4:
                return
            ln, lcs = buf[2], buf[3]
            if ln == 0 and lcs == 0xFF:  # host ACK: abort
                del buf[:4]
                self.stats["host_acks"] += 1
                if self._baud_next:
                    # SetSerialBaudRate takes effect on the host's ACK (UM0701 7.2.13)
                    self.baud, self._baud_next = self._baud_next, None
                if self._pending:
                    self._pending = None
                    self.stats["aborted"] += 1
                continue
            if ln == 0xFF and lcs == 0x00:  # host NACK: resend last response
                del buf[:4]
                self.stats["host_nacks"] += 1
                if self._last is not None and out is not None:
                    self._send(out, self._wire(self._last), delayed)
                continue
            if ln == 0xFF and lcs == 0xFF:
                if len(buf) < 7:
                    return
                if (buf[4] + buf[5] + buf[6]) & 0xFF:
                    del buf[:2]
                    self.stats["bad_frames"] += 1
                    continue
                ln, hdr = buf[4] << 8 | buf[5], 7
            elif (ln + lcs) & 0xFF:
                del buf[:2]
                self.stats["bad_frames"] += 1
                continue
            else:
                hdr = 4
            if ln == 0 or ln > 265:
                del buf[:2]
                self.stats["bad_frames"] += 1
                continue
            need = hdr + ln + 1
            if len(buf) < need:
                return
            body = bytes(buf[hdr:hdr + ln])
            dcs = buf[hdr + ln]
            del buf[:need]
            if (sum(body) + dcs) & 0xFF:
                self.stats["bad_frames"] += 1
                continue
            self._command(out, body, need + 2, delayed)  # + preamble + postamble

    def _wire(self, resp):
        """A response frame as it goes on the wire (maybe corrupted by a fault)."""
        if self._f_corrupt > 0:
            self._f_corrupt -= 1
            self.stats["corrupted"] += 1
            b = bytearray(resp)
            b[-2] ^= 0x5A
            return bytes(b)
        return resp

    def _respond(self, out, cmd, payload, rec, delayed):
        if payload is None:
            resp = ERROR_FRAME
        else:
            resp = frame(bytes([0xD5, cmd + 1]) + bytes(payload))
        self._last = resp
        if rec is not None:
            rec["uart_us"] += self._uart_us(len(resp))
            t = self._totals[rec["phase"]]
            t["uart_us"] += self._uart_us(len(resp))
            wait = rec["air_us"] + rec["phone_us"] + rec["reader_us"]
        else:
            wait = 0
        self._send(out, self._wire(resp), delayed, wait)

    def _command(self, out, body, nbytes, delayed):
        self.stats["commands"] += 1
        if self._f_silence > 0:
            self._f_silence -= 1
            self.stats["silenced"] += 1
            if self._f_silence_ack:
                self._send(out, ACK, delayed)
            return
        if self._f_nack > 0:
            self._f_nack -= 1
            self.stats["nacked"] += 1
            self._send(out, NACK, delayed)
            return
        self._send(out, ACK, delayed)
        if len(body) < 2 or body[0] != 0xD4:
            self._last = ERROR_FRAME
            self._send(out, ERROR_FRAME, delayed)
            return
        cmd, p = body[1], body[2:]
        self.commands_seen[cmd] += 1
        self._pending = None
        uart = self._uart_us(nbytes + len(ACK))
        try:
            if cmd == 0x4A:
                if len(p) < 2 or not 1 <= p[0] <= 2:
                    payload, rec = None, None
                elif p[1] != 0x00:
                    payload, rec = b"\x00", self._account("activation", cmd, uart)
                elif not self._phones and self._retries[2] == 0xFF:
                    self._pending = (out, p[0], nbytes)
                    self._field = True
                    return
                else:
                    payload, rec = self._inlist(p[0], nbytes)
            elif cmd == 0x40:
                payload, rec = self._indataexchange(p, uart)
            else:
                payload = self._simple(cmd, p)
                rec = self._account(self._phase or "reader", cmd, uart)
        except _Syntax:
            payload, rec = None, None
        self._respond(out, cmd, payload, rec, delayed)
        if cmd == 0x16 and payload == b"\x00":
            self._state = _ASLEEP
            self._active.clear()
            self._field = False

    def _simple(self, cmd, p):
        if cmd == 0x02:
            return self.firmware
        if cmd == 0x10:  # SetSerialBaudRate
            if len(p) != 1 or p[0] >= len(BAUD_RATES):
                raise _Syntax
            self._baud_next = BAUD_RATES[p[0]]
            return b""
        if cmd == 0x14:
            if not p or not 1 <= p[0] <= 4:
                raise _Syntax
            self._sam = bytes(p)
            return b""
        if cmd == 0x32:
            if not p:
                raise _Syntax
            item, d = p[0], p[1:]
            if item == 0x01 and len(d) == 1:
                self._field = bool(d[0] & 1)
                if not self._field:
                    self._active.clear()
            elif item == 0x02 and len(d) == 3:
                self._rf_timeouts = list(d)
            elif item == 0x05 and len(d) == 3:
                self._retries = list(d)
            elif item in (0x04, 0x0A, 0x0B, 0x0C, 0x0D) and d:
                pass
            else:
                raise _Syntax
            return b""
        if cmd == 0x00:
            if not p:
                raise _Syntax
            if p[0] == 0x06:
                a = self._active.get(1)
                ok = a is not None and a.phone in self._phones
                if not ok:
                    self._active.clear()
                return b"\x00" if ok else b"\x01"
            if p[0] == 0x00:
                return bytes(p)
            raise _Syntax
        if cmd in (0x52, 0x44):
            if not p:
                raise _Syntax
            tg = p[0]
            if tg == 0:
                self._active.clear()
            elif tg in self._active:
                if cmd == 0x52:
                    del self._active[tg]
            else:
                return b"\x27"
            return b"\x00"
        if cmd == 0x16:
            if not p:
                raise _Syntax
            return b"\x00"
        if cmd == 0x04:
            r = bytearray([0x00, 1 if self._field else 0, len(self._active)])
            for tg in sorted(self._active):
                r += bytes([tg, 0, 0, 0x10])
            r.append(0x00)
            return bytes(r)
        raise _Syntax

    # ---- ISO 14443-A -------------------------------------------------------------------
    @staticmethod
    def _bits(uid):
        out = []
        for b in uid:
            out.extend((b >> i) & 1 for i in range(8))
        return out

    def _anticollision(self, phones):
        """Bitwise anticollision over the cascade-level bytes; the '1' branch wins."""
        cands = list(phones)
        collisions = 0
        keys = {id(ph): self._bits(self._cl_bytes(self.uid_of(ph))) for ph in cands}
        nbits = max(len(k) for k in keys.values())
        for i in range(nbits):
            vals = {keys[id(ph)][i] if i < len(keys[id(ph)]) else 0 for ph in cands}
            if len(vals) > 1:
                collisions += 1
                cands = [ph for ph in cands if i < len(keys[id(ph)]) and keys[id(ph)][i] == 1]
            if len(cands) == 1:
                break
        return cands[0], collisions

    @staticmethod
    def _cl_bytes(uid):
        if len(uid) == 4:
            return uid
        return b"\x88" + uid[:3] + uid[3:]

    def _activation_air(self, uid, ats, collisions):
        us = exchange_us(0, 2, bits_out=7)  # REQA -> ATQA
        levels = 1 if len(uid) == 4 else (2 if len(uid) == 7 else 3)
        for _ in range(levels):
            us += exchange_us(2, 5)  # ANTICOLLISION -> UID CLn + BCC
            us += exchange_us(9, 3)  # SELECT -> SAK + CRC
        us += collisions * exchange_us(4, 3)  # extra anticollision rounds (partial UID)
        us += exchange_us(4, len(ats) + 2)  # RATS -> ATS + CRC
        return us

    def _inlist(self, maxtg, cmd_len):
        uart = self._uart_us(cmd_len + len(ACK))
        self._active.clear()
        self._field = True
        phones = list(self._phones)
        if not phones:
            tries = self._retries[2] + 1
            air = tries * exchange_us(0, 0, bits_out=7)
            return b"\x00", self._account("activation", 0x4A, uart, air)
        chosen = []
        air = 0.0
        rest = phones
        while rest and len(chosen) < maxtg:
            ph, coll = self._anticollision(rest)
            if coll:
                self.stats["collisions"] += coll
            uid = self.uid_of(ph)
            ats = bytes(getattr(ph, "ats", b"\x05\x78\x80\x70\x02"))
            air += self._activation_air(uid, ats, coll)
            chosen.append((ph, uid, ats))
            rest = [x for x in rest if x is not ph]
        out = bytearray([len(chosen)])
        for i, (ph, uid, ats) in enumerate(chosen):
            tg = i + 1
            self._active[tg] = _Active(tg, ph, uid, ats)
            sak = 0x20
            out += bytes([tg, 0x00, 0x04 if len(uid) == 4 else 0x44, sak, len(uid)]) + uid + ats
        self.stats["activations"] += 1
        return bytes(out), self._account(self._phase or "activation", 0x4A, uart, air,
                                         phone_us=0.0)

    def _iso_dep_air(self, n, maxblock):
        """Air time to move n INF bytes one way in I-blocks (PCB + INF + CRC2) with R(ACK)s."""
        per = maxblock - 3
        blocks = max(1, -(-n // per))
        us = 0.0
        left = n
        for b in range(blocks):
            k = min(per, left)
            left -= k
            us += air_frame_us(k + 3) + FDT_US
            if b < blocks - 1:
                us += air_frame_us(3) + FDT_US  # R(ACK)
        return us

    def _phone_gone(self, a):
        return a.phone not in self._phones

    def _indataexchange(self, p, uart):
        if not p:
            raise _Syntax
        tg, mi, data = p[0] & 0x3F, p[0] & 0x40, bytes(p[1:])
        a = self._active.get(tg)
        if a is None:
            return b"\x27", self._account(self._phase or "reader", 0x40, uart)
        if len(data) > MAX_DATA:
            raise _Syntax
        phase = self._phase or a.phase
        if a.rest and not data and not mi:  # host asks for the next part of a long response
            if self._phone_gone(a):
                return self._lost(a, phase, uart)
            part, a.rest = a.rest[:MAX_DATA], a.rest[MAX_DATA:]
            air = self._iso_dep_air(len(part), self.fsd)
            self._mid_chain_check(a)
            return bytes([0x40 if a.rest else 0x00]) + part, self._account(phase, 0x40, uart, air)
        a.rest = b""
        if not a.cmd:
            a.phase = self._phase or self._name_of(data)
            phase = a.phase
        a.cmd += data
        if self._phone_gone(a):
            a.cmd = bytearray()
            return self._lost(a, phase, uart)
        if mi:
            air = self._iso_dep_air(len(data), a.fsc)
            return b"\x00", self._account(phase, 0x40, uart, air)
        capdu, a.cmd = bytes(a.cmd), bytearray()
        if self._f_remove is not None and not self._f_remove[2] \
                and self._f_remove[1] in (None, a.phone):
            if self._f_remove[0] <= 0:
                self._f_remove = None
                self.remove_phone(a.phone)
                self.stats["removed"] += 1
                return self._lost(a, phase, uart)
            self._f_remove[0] -= 1
        try:
            rapdu = bytes(a.phone.transceive(capdu))
        except Exception as e:  # a phone bug: report it, the reader sees a timeout
            self.errors.append(e)
            return self._lost(a, phase, uart)
        # After transceive: the phone's time for this very command (see the docstring).
        pus = getattr(a.phone, "processing_us", None)
        pus = self.phone_us if pus is None else pus
        air = self._iso_dep_air(len(data), a.fsc)
        part, a.rest = rapdu[:MAX_DATA], rapdu[MAX_DATA:]
        air += self._iso_dep_air(len(part), self.fsd)
        if a.rest:
            self._mid_chain_check(a)
        self.stats["apdus"] += 1
        return (bytes([0x40 if a.rest else 0x00]) + part,
                self._account(phase, 0x40, uart, air, phone_us=pus))

    def _mid_chain_check(self, a):
        f = self._f_remove
        if f is not None and f[2] and f[1] in (None, a.phone) and a.rest:
            self._f_remove = None
            self.remove_phone(a.phone)
            self.stats["removed"] += 1

    def _lost(self, a, phase, uart):
        self._active.pop(a.tg, None)
        fwi = (a.ats[3] >> 4) if len(a.ats) > 3 else 4
        fwt = 256 * 16 / FC * (1 << fwi) * 1e6
        return b"\x01", self._account(phase, 0x40, uart, fwt)

    def _name_of(self, capdu):
        if len(capdu) < 2:
            return "apdu"
        if capdu[1] == 0xC0 and self._prev_phase:  # GET RESPONSE continues the last command
            return self._prev_phase
        self._prev_phase = self.ins_names.get(capdu[1], "apdu_%02X" % capdu[1])
        return self._prev_phase


class _Syntax(Exception):
    pass


def main(argv=None):
    ap = argparse.ArgumentParser(prog="pn532-sim", description="PN532 HSU simulator")
    ap.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = ephemeral)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--pty", action="store_true", help="also serve on a pseudo-terminal")
    ap.add_argument("--phone", choices=["none", "echo"], default="none",
                    help="put a demo phone in the field")
    ap.add_argument("--time-scale", type=float, default=0.0,
                    help="sleep modelled time x scale before each response (0 = instant)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--control-port", type=int, default=None,
                    help="line-based control port (0 = ephemeral), see PN532Sim.control")
    ap.add_argument("--duration", type=float, default=None, help="exit after N seconds")
    a = ap.parse_args(argv)
    sim = PN532Sim(a.port, a.host, pty=a.pty, control_port=a.control_port, seed=a.seed,
                   time_scale=a.time_scale).start()
    if a.phone == "echo":
        sim.add_phone(EchoPhone())
    print("pn532-sim listening on %s:%d" % (a.host, sim.port), flush=True)
    print("PORT=%d" % sim.port, flush=True)
    if sim.pty_path:
        print("PTY=%s" % sim.pty_path, flush=True)
    if sim.control_port is not None:
        print("CONTROL=%d" % sim.control_port, flush=True)
    try:
        t0 = time.monotonic()
        while a.duration is None or time.monotonic() - t0 < a.duration:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
