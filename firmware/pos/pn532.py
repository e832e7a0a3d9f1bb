"""PN532 NFC reader: protocol core (frame codec + commands).

Same file on the ESP32 and in the unix port. The driver never creates a bus:
a transport object (pos.pn532_hsu.PN532_HSU, pos.pn532_i2c.PN532_I2C,
pos.pn532_spi.PN532_SPI) wraps a bus the board passes in.

    from pos.pn532 import PN532, TargetLost, PN532Timeout
    from pos.pn532_hsu import PN532_HSU
    nfc = PN532(PN532_HSU(uart))
    nfc.begin()                     # wake, GetFirmwareVersion, SAM + RF config
    tgt = nfc.poll(500)             # Target or None
    if tgt:
        rsp = nfc.apdu(b"\\x00\\xa4\\x04\\x00...")   # R-APDU data + SW1 SW2 (bytes)
        nfc.release()
    while nfc.present(): ...        # wait until the phone leaves

Public API (PN532):
    PN532(transport, *, timeout_ms=1000, retries=2, poll_ms=2, sleep_ms=None,
          chunk=262, max_response=4096)
    begin(passive_retries=0xFF) -> (ic, ver, rev, support)
    firmware_version() -> (ic, ver, rev, support)
    sam_configuration(mode=1, timeout=0x14, irq=1)
    rf_field(on)                      RFConfiguration item 1
    rf_timeouts(atr_res=0x0B, retry=0x0A)   RFConfiguration item 2 (codes per UM0701)
    set_retries(atr=0xFF, psl=0x01, passive=0xFF)   RFConfiguration item 5
    poll(timeout_ms=100) -> Target | None
        InListPassiveTarget (1 target, 106 kbps type A). With MaxRetries 0xFF (default) the
        PN532 keeps polling; at timeout_ms the driver aborts it with an ACK and returns None.
        A "NbTg = 0" answer (finite retries) is re-sent until timeout_ms.
    apdu(capdu, timeout_ms=None) -> bytes       R-APDU data + SW1 SW2
        InDataExchange; C-APDUs > chunk (262) go out in parts with the MI bit (0x40) in Tg;
        while the status has MI, "D4 40 Tg" (no data) fetches the next part. timeout_ms
        (default self.timeout_ms) applies to each frame. Never re-sent on errors (an APDU
        may not be idempotent): corrupted answers are re-requested with NACK instead.
    release() -> bool                           InRelease; target cleared even if it fails
    present(timeout_ms=50) -> bool
        active target: Diagnose NumTst 6 (ISO 14443-4 presence check, status 0 = present);
        no active target: a short poll + InRelease (re-activates the phone if it is there).
    recover() -> True                           wake-up, ACK (abort), drain, SAM + RF config;
                                                3 attempts, then re-raises the last error
    power_down(wake=None)                       PowerDown (wake = transport.WAKE_SOURCE);
                                                the next command sends the wake-up first
    wakeup()
    target                                      the active Target or None
    firmware                                    (ic, ver, rev, support) after begin()
    async variants: poll_async, apdu_async, present_async, release_async, recover_async

Module level: encode(buf, cmd, params=b"", data=b"") -> n; decode(buf, n) -> (kind, off, len)
with kind ACK / NACK / DATA (raises FrameError).

Target: .tg .sens_res (int) .sel_res (int) .uid (bytes) .ats (bytes, b"" if none)

Exceptions (all derive from PN532Error):
    PN532Timeout   the reader did not ACK / answer in time -> reader problem, call recover()
    FrameError     garbage, bad checksum (after NACK retries), truncated or oversized frame
    StatusError    non-zero status byte from the PN532 (.status); the error frame gives 0x7F
    TargetLost     subclass of StatusError: RF-level failure (target timeout 0x01, CRC,
                   parity, protocol, 0x13, 0x27, 0x29, 0x2B, ...): the phone left the field
                   or the exchange broke; the reader itself is fine. Also raised by apdu()
                   when no target is active.

Waiting / asyncio: every command is a generator that yields "sleep N ms" requests
while it waits for the reader to become ready (ACK, response). The plain methods
run it with sleep_ms (blocking, but every wait is bounded by a timeout); the
*_async methods run the same generator with `await asyncio.sleep_ms`, so a
single asyncio loop keeps running while the reader polls for a phone or the
phone computes an APDU answer. Once a frame starts arriving it is read in one go
(bounded by the transport's byte timeout: <= ~25 ms for the largest frame at
115200 baud). The driver is not re-entrant: one caller at a time.

Transport interface (duck-typed): wakeup(), reset(), write(buf), ready() -> bool,
read_begin(), read(mv) -> n (fills mv, fewer bytes on timeout), read_end(),
drain(), WAKE_SOURCE (PowerDown wake-up enable bit), STREAM (True for a byte stream
like HSU, where ready() may be asked between bytes).
"""
from micropython import const
import time

# Frame bytes
_TFI_HOST = const(0xD4)
_TFI_PN532 = const(0xD5)
_TFI_ERROR = const(0x7F)

# Commands
_CMD_DIAGNOSE = const(0x00)
_CMD_GETFW = const(0x02)
_CMD_SAMCONFIG = const(0x14)
_CMD_POWERDOWN = const(0x16)
_CMD_RFCONFIG = const(0x32)
_CMD_SET_BAUD = const(0x10)
_CMD_INDATAEXCHANGE = const(0x40)
_CMD_INLIST = const(0x4A)
_CMD_INRELEASE = const(0x52)

_MI = const(0x40)  # More Information bit (Tg byte / status byte)
_MAX_LEN = const(265)  # max TFI+PD the PN532 handles (extended frame)
_BUF_LEN = const(276)  # 00 00 FF FF FF LM LL LCS + 265 + DCS 00 (+1)
_MAX_SKIP = const(300)  # garbage bytes tolerated before a start code
_SHORT_MS = const(100)  # local (non-RF) commands
_ACK_MS = const(30)  # ACK arrives ~1 ms after the command frame; plus tx time
_SETTLE_MS = const(5)
_SPIN_MS = const(3)  # poll without sleeping for the first ms of a wait

# Frame kinds returned by decode()
ACK = const(1)
NACK = const(2)
DATA = const(3)

_ACK_FRAME = b"\x00\x00\xff\x00\xff\x00"
_BAUDS = (9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600, 1288000)
_NACK_FRAME = b"\x00\x00\xff\xff\x00\x00"
# Status codes meaning "the RF exchange / the target failed", not the reader.
_LOST = b"\x01\x02\x03\x04\x05\x06\x0a\x0b\x13\x23\x25\x27\x29\x2a\x2b\x2c"


def hard_reset(pin, sleep_ms):
    """Pulse RSTPD_N (active low) when the board wired it; transports share this."""
    if pin is not None:
        pin.value(0)
        sleep_ms(10)
        pin.value(1)
        sleep_ms(10)


class PN532Error(Exception):
    pass


class PN532Timeout(PN532Error):
    pass


class FrameError(PN532Error):
    pass


class StatusError(PN532Error):
    def __init__(self, status, msg="status"):
        super().__init__(msg, status)
        self.status = status


class TargetLost(StatusError):
    pass


class Target:
    def __init__(self, tg, sens_res, sel_res, uid, ats):
        self.tg = tg
        self.sens_res = sens_res
        self.sel_res = sel_res
        self.uid = uid
        self.ats = ats

    def __repr__(self):
        return "<Target %d uid=%s sak=%02x>" % (self.tg, self.uid.hex(), self.sel_res)


def encode(buf, cmd, params=b"", data=b""):
    """Write a host->PN532 frame (D4 cmd params data) into buf; return its length.

    Uses an extended frame when LEN > 255. Raises ValueError if it does not fit."""
    ln = 2 + len(params) + len(data)
    if ln > _MAX_LEN or len(buf) < ln + 10:
        raise ValueError("frame too long")
    buf[0] = 0
    buf[1] = 0
    buf[2] = 0xFF
    if ln > 255:
        buf[3] = 0xFF
        buf[4] = 0xFF
        buf[5] = ln >> 8
        buf[6] = ln & 0xFF
        buf[7] = (-(buf[5] + buf[6])) & 0xFF
        i = 8
    else:
        buf[3] = ln
        buf[4] = (-ln) & 0xFF
        i = 5
    s = _TFI_HOST + cmd
    buf[i] = _TFI_HOST
    buf[i + 1] = cmd
    i += 2
    n = len(params)
    if n:
        buf[i:i + n] = params
        s += sum(params)
        i += n
    n = len(data)
    if n:
        buf[i:i + n] = data
        s += sum(data)
        i += n
    buf[i] = (-s) & 0xFF
    buf[i + 1] = 0
    return i + 2


def decode(buf, n):
    """Parse one frame from buf[:n] (leading garbage skipped).

    Returns (kind, offset, length): kind ACK/NACK/DATA; for DATA, buf[offset:offset+length]
    is TFI+PD. Raises FrameError for anything malformed or truncated."""
    i = 0
    while True:
        if i + 1 >= n:
            raise FrameError("no start code")
        if buf[i] == 0 and buf[i + 1] == 0xFF:
            break
        i += 1
    i += 2
    if i + 2 > n:
        raise FrameError("truncated")
    ln = buf[i]
    lcs = buf[i + 1]
    i += 2
    if ln == 0 and lcs == 0xFF:
        return ACK, i, 0
    if ln == 0xFF and lcs == 0:
        return NACK, i, 0
    if ln == 0xFF and lcs == 0xFF:
        if i + 3 > n:
            raise FrameError("truncated")
        if (buf[i] + buf[i + 1] + buf[i + 2]) & 0xFF:
            raise FrameError("LCS")
        ln = (buf[i] << 8) | buf[i + 1]
        i += 3
    elif (ln + lcs) & 0xFF:
        raise FrameError("LCS")
    if ln == 0 or ln > _MAX_LEN:
        raise FrameError("length")
    if i + ln + 1 > n:
        raise FrameError("truncated")
    if sum(memoryview(buf)[i:i + ln + 1]) & 0xFF:
        raise FrameError("DCS")
    return DATA, i, ln


class PN532:
    def __init__(self, transport, *, timeout_ms=1000, retries=2, poll_ms=2, sleep_ms=None,
                 chunk=262, max_response=4096):
        self._t = transport
        self._stream = getattr(transport, "STREAM", False)  # byte stream (HSU) vs framed reads
        self.timeout_ms = timeout_ms
        self.retries = retries
        self.poll_ms = poll_ms
        self._sleep = sleep_ms or time.sleep_ms
        self.idle_us = 0
        self.chunk = min(chunk, 262)
        self.max_response = max_response
        self._tx = bytearray(_BUF_LEN)
        self._txv = memoryview(self._tx)
        self._rx = bytearray(_BUF_LEN)
        self._rxv = memoryview(self._rx)
        self._b1 = memoryview(bytearray(1))
        self._p = bytearray(3)  # small parameter scratch
        self._asleep = True
        self._passive = 0xFF
        self.target = None
        self.firmware = None

    # ---- frame level -------------------------------------------------------------------
    def _recv(self):
        """Read one frame that is (starting to be) available. -> (kind, length); kind 0
        when only 0x00 filler arrived. DATA payload (TFI+PD) is left in self._rx[0:length]."""
        t = self._t
        rx = self._rx
        b1 = self._b1
        stream = self._stream
        t.read_begin()
        try:
            prev = -1
            skipped = 0
            junk = False
            while True:
                if stream and not junk and skipped and not t.ready():
                    return 0, 0  # only 00 filler so far: let the caller wait (and yield)
                if t.read(b1) != 1:
                    if junk:
                        raise FrameError("no start code")
                    return 0, 0  # only 00s (a postamble / preamble): nothing yet
                b = b1[0]
                if prev == 0 and b == 0xFF:
                    break
                if b:
                    junk = True
                prev = b
                skipped += 1
                if skipped > _MAX_SKIP:
                    raise FrameError("garbage")
            if t.read(self._rxv[0:2]) != 2:
                raise FrameError("truncated")
            ln = rx[0]
            lcs = rx[1]
            if ln == 0 and lcs == 0xFF:
                return ACK, 0
            if ln == 0xFF and lcs == 0:
                return NACK, 0
            if ln == 0xFF and lcs == 0xFF:
                if t.read(self._rxv[0:3]) != 3:
                    raise FrameError("truncated")
                if (rx[0] + rx[1] + rx[2]) & 0xFF:
                    raise FrameError("LCS")
                ln = (rx[0] << 8) | rx[1]
            elif (ln + lcs) & 0xFF:
                raise FrameError("LCS")
            if ln == 0 or ln > _MAX_LEN:
                raise FrameError("length")
            if t.read(self._rxv[0:ln + 1]) != ln + 1:
                raise FrameError("truncated")
            # sum() walks the buffer in C; a bytecode loop here cost ~10 ms a
            # tap on the ESP32 (frames of up to 262 bytes).
            if sum(self._rxv[0:ln + 1]) & 0xFF:
                raise FrameError("DCS")
            return DATA, ln
        finally:
            t.read_end()

    def _wait(self, start, ms):
        """Generator: yield sleep requests until the transport is ready; PN532Timeout
        once ms have passed since start (ticks_ms). All of it counts as idle_us:
        on a device the loop spins while the reader and the radio work."""
        t = self._t
        c = time.ticks_us()
        try:
            while not t.ready():
                waited = time.ticks_diff(time.ticks_ms(), start)
                if waited >= ms:
                    raise PN532Timeout("no answer")
                # ACKs come ~1 ms after a command: poll tightly at first (0 = just yield)
                yield 0 if waited < _SPIN_MS else self.poll_ms
        finally:
            self.idle_us += time.ticks_diff(time.ticks_us(), c)

    def _abort(self):
        """Send ACK: the PN532 aborts the command in progress. Drop whatever was in flight."""
        self._t.write(_ACK_FRAME)
        c = time.ticks_us()
        self._sleep(_SETTLE_MS)
        self.idle_us += time.ticks_diff(time.ticks_us(), c)
        self._t.drain()

    def _call(self, cmd, params=b"", data=b"", timeout_ms=_SHORT_MS, idle_ok=False):
        """Generator: one command/response. Returns the response length; the response
        parameters (after D5, cmd+1) are self._rx[2:2+length]. With idle_ok a response
        timeout aborts the command and returns -1 (used by poll)."""
        if self._asleep:
            self.wakeup()
        t = self._t
        n = encode(self._tx, cmd, params, data)
        frame = self._txv[0:n]
        want = cmd + 1
        errors = 0
        acked = False
        sends = 0
        while not acked:
            t.write(frame)
            sends += 1
            start = time.ticks_ms()
            while True:
                try:
                    yield from self._wait(start, _ACK_MS + n // 8)
                except PN532Timeout:
                    raise PN532Timeout("no ACK")
                try:
                    kind, ln = self._recv()
                except FrameError:
                    # corrupted ACK: the command presumably runs; go and wait for the response
                    errors += 1
                    if errors > self.retries:
                        raise
                    acked = True
                    break
                if kind == 0:
                    continue
                if kind == ACK:
                    acked = True
                    break
                if kind == NACK:
                    if sends > self.retries:
                        raise FrameError("NACKed")
                    break  # resend the command (it was not executed)
                if self._rx[0] == _TFI_PN532 and self._rx[1] == want:
                    return ln - 2  # ACK lost but the response is here
                errors += 1  # stale frame from an aborted command
                if errors > self.retries + 2:
                    raise FrameError("unexpected frame")
        start = time.ticks_ms()
        while True:
            try:
                yield from self._wait(start, timeout_ms)
            except PN532Timeout:
                self._abort()
                if idle_ok:
                    return -1
                raise
            try:
                kind, ln = self._recv()
            except FrameError:
                errors += 1
                if errors > self.retries:
                    raise
                t.write(_NACK_FRAME)  # ask for the same response again
                continue
            if kind == 0:
                continue
            if kind != DATA:
                errors += 1
                if errors > self.retries + 2:
                    raise FrameError("unexpected ACK/NACK")
                continue
            rx = self._rx
            if rx[0] == _TFI_ERROR:
                raise StatusError(_TFI_ERROR, "error frame")
            if ln < 2 or rx[0] != _TFI_PN532 or rx[1] != want:
                errors += 1
                if errors > self.retries + 2:
                    raise FrameError("unexpected response")
                continue
            return ln - 2

    # idle_us counts time spent waiting for the reader (in _wait, _abort and
    # poll's retries), so the app can report its own work per phase apart
    # from the reader's and the radio's.
    def _run(self, g):
        sleep = self._sleep
        try:
            while True:
                ms = next(g)
                if ms:
                    sleep(ms)
        except StopIteration as e:
            return e.value

    async def _arun(self, g):
        import asyncio

        try:
            while True:
                await asyncio.sleep_ms(next(g))
        except StopIteration as e:
            return e.value

    def _status(self, st):
        code = st & 0x3F
        if code:
            if code in _LOST:
                self.target = None
                raise TargetLost(code, "target lost")
            raise StatusError(code)
        return st

    # ---- commands ----------------------------------------------------------------------
    def wakeup(self):
        self._t.wakeup()
        self._asleep = False

    def firmware_version(self):
        ln = self._run(self._call(_CMD_GETFW))
        if ln < 4:
            raise FrameError("short response")
        r = self._rx
        return (r[2], r[3], r[4], r[5])

    @property
    def transport(self):
        return self._t

    def set_baudrate(self, baud):
        """SetSerialBaudRate (HSU only): the PN532 switches after our ACK, then the
        transport follows. At 115200 the UART costs about as much as the radio;
        921600 takes most of it off every tap."""
        code = _BAUDS.index(baud)  # ValueError for a rate the PN532 does not have
        p = self._p
        p[0] = code
        self._run(self._call(_CMD_SET_BAUD, memoryview(p)[0:1]))
        self._t.write(_ACK_FRAME)
        self._sleep(1)  # the chip needs a moment before it listens at the new rate
        self._t.set_baudrate(baud)

    def _sam_g(self, mode=1, timeout=0x14, irq=1):
        p = self._p
        p[0] = mode
        p[1] = timeout
        p[2] = irq
        yield from self._call(_CMD_SAMCONFIG, p)

    def sam_configuration(self, mode=1, timeout=0x14, irq=1):
        self._run(self._sam_g(mode, timeout, irq))

    def _rfconfig_g(self, item, a, b=-1, c=-1):
        p = self._p
        p[0] = a
        n = 1
        if b >= 0:
            p[1] = b
            n = 2
        if c >= 0:
            p[2] = c
            n = 3
        yield from self._call(_CMD_RFCONFIG, bytes((item,)), memoryview(p)[0:n])

    def _rfconfig(self, item, a, b=-1, c=-1):
        self._run(self._rfconfig_g(item, a, b, c))

    def rf_field(self, on):
        self._rfconfig(0x01, 0x01 if on else 0x00)
        if not on:
            self.target = None

    def rf_timeouts(self, atr_res=0x0B, retry=0x0A):
        self._rfconfig(0x02, 0x00, atr_res, retry)

    def set_retries(self, atr=0xFF, psl=0x01, passive=0xFF):
        self._rfconfig(0x05, atr, psl, passive)
        self._passive = passive

    def _configure_g(self):
        # SAM normal mode, the RF timeouts and retries that rf_timeouts() and
        # set_retries() default to.
        yield from self._sam_g()
        yield from self._rfconfig_g(0x02, 0x00, 0x0B, 0x0A)
        yield from self._rfconfig_g(0x05, 0xFF, 0x01, self._passive)

    def _configure(self):
        self._run(self._configure_g())

    def begin(self, passive_retries=0xFF):
        self.target = None
        self._t.reset()
        self.wakeup()
        self._passive = passive_retries
        self.firmware = self.firmware_version()
        self._configure()
        return self.firmware

    def _poll_g(self, timeout_ms):
        start = time.ticks_ms()
        self.target = None
        while True:
            left = timeout_ms - time.ticks_diff(time.ticks_ms(), start)
            if left <= 0:
                return None
            ln = yield from self._call(_CMD_INLIST, b"\x01\x00", b"", left, True)
            if ln < 0:
                return None
            r = self._rx
            if ln < 1 or r[2] == 0:
                c = time.ticks_us()
                yield self.poll_ms  # "no target" (finite MaxRetries): try again
                self.idle_us += time.ticks_diff(time.ticks_us(), c)
                continue
            if ln < 6:
                raise FrameError("short target data")
            ulen = r[7]
            if ulen > 10 or 6 + ulen > ln:
                raise FrameError("bad UID length")
            uid = bytes(r[8:8 + ulen])
            ats = bytes(r[8 + ulen:2 + ln])
            self.target = Target(r[3], (r[4] << 8) | r[5], r[6], uid, ats)
            return self.target

    def poll(self, timeout_ms=100):
        return self._run(self._poll_g(timeout_ms))

    async def poll_async(self, timeout_ms=100):
        return await self._arun(self._poll_g(timeout_ms))

    def _apdu_g(self, capdu, timeout_ms):
        if self.target is None:
            raise TargetLost(0x27, "no target")
        if timeout_ms is None:
            timeout_ms = self.timeout_ms
        tg = self.target.tg
        p = memoryview(self._p)[0:1]
        mv = memoryview(capdu)
        n = len(mv)
        pos = 0
        chunk = self.chunk
        while n - pos > chunk:
            p[0] = tg | _MI
            ln = yield from self._call(_CMD_INDATAEXCHANGE, p, mv[pos:pos + chunk], timeout_ms)
            if ln < 1:
                raise FrameError("short response")
            self._status(self._rx[2])
            pos += chunk
        p[0] = tg
        ln = yield from self._call(_CMD_INDATAEXCHANGE, p, mv[pos:], timeout_ms)
        if ln < 1:
            raise FrameError("short response")
        st = self._status(self._rx[2])
        out = bytearray(self._rxv[3:2 + ln])
        while st & _MI:
            ln = yield from self._call(_CMD_INDATAEXCHANGE, p, b"", timeout_ms)
            if ln < 1:
                raise FrameError("short response")
            st = self._status(self._rx[2])
            if len(out) + ln - 1 > self.max_response:
                raise FrameError("response too long")
            out.extend(self._rxv[3:2 + ln])
        return bytes(out)

    def apdu(self, capdu, timeout_ms=None):
        return self._run(self._apdu_g(capdu, timeout_ms))

    async def apdu_async(self, capdu, timeout_ms=None):
        return await self._arun(self._apdu_g(capdu, timeout_ms))

    def _release_g(self):
        tgt = self.target
        self.target = None
        p = memoryview(self._p)[0:1]
        p[0] = tgt.tg if tgt else 0
        ln = yield from self._call(_CMD_INRELEASE, p)
        # a failed release of a target that is gone anyway is not an error
        return ln >= 1 and (self._rx[2] & 0x3F) == 0

    def release(self):
        return self._run(self._release_g())

    async def release_async(self):
        return await self._arun(self._release_g())

    def _present_g(self, timeout_ms):
        if self.target is not None:
            # Diagnose NumTst 6: ISO 14443-4 presence check of the active target
            ln = yield from self._call(_CMD_DIAGNOSE, b"\x06", b"", _SHORT_MS + timeout_ms)
            if ln >= 1 and (self._rx[2] & 0x3F) == 0:
                return True
            self.target = None
            return False
        t = yield from self._poll_g(timeout_ms)
        if t is None:
            return False
        self.target = None
        p = memoryview(self._p)[0:1]
        p[0] = t.tg
        yield from self._call(_CMD_INRELEASE, p)
        return True

    def present(self, timeout_ms=50):
        return self._run(self._present_g(timeout_ms))

    async def present_async(self, timeout_ms=50):
        return await self._arun(self._present_g(timeout_ms))

    def _recover_g(self):
        self.target = None
        t = self._t
        err = None
        for _ in range(3):
            try:
                t.reset()
                self.wakeup()
                t.write(_ACK_FRAME)
                c = time.ticks_us()
                yield _SETTLE_MS
                self.idle_us += time.ticks_diff(time.ticks_us(), c)
                t.drain()
                yield from self._configure_g()
                return True
            except PN532Error as e:
                err = e
        raise err

    def recover(self):
        """Wake-up + ACK (abort) + drain + SAM/RF configuration; up to 3 attempts."""
        return self._run(self._recover_g())

    async def recover_async(self):
        return await self._arun(self._recover_g())

    def power_down(self, wake=None):
        p = self._p
        p[0] = self._t.WAKE_SOURCE if wake is None else wake
        ln = self._run(self._call(_CMD_POWERDOWN, memoryview(p)[0:1]))
        self.target = None
        if ln >= 1:
            self._status(self._rx[2])
        self._asleep = True
