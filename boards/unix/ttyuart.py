"""A machine.UART look-alike for the MicroPython unix port over a serial tty:
a real PN532 on a USB-UART adapter (`offpay emulate --pn532 /dev/ttyUSB0`),
or the PN532 simulator behind a pty (`pn532-sim --pty`).

    uart = TtyUART("/dev/ttyUSB0", baudrate=115200, *, timeout=0, timeout_char=2, rxbuf=1024)
    uart.write(b) -> n     uart.any() -> bytes waiting     uart.readinto(buf[, nbytes]) -> n | None
    uart.init(baudrate=921600)     uart.close() / deinit()

The tty is raw with VMIN = VTIME = 0, so a read returns at once with what has
arrived; timeouts are machine.UART's (wait `timeout` ms for the first byte,
then `timeout_char` ms between bytes), as boards/unix/sockuart.py does them.
"""
import select
import termios
import time

_VTIME = 5  # indices into the termios cc list (Linux)
_VMIN = 6
_SPEEDS = {9600: termios.B9600, 57600: termios.B57600, 115200: termios.B115200,
           230400: termios.B230400, 460800: termios.B460800, 921600: termios.B921600}


class TtyUART:
    def __init__(self, path, baudrate=115200, *, timeout=0, timeout_char=2, rxbuf=1024):
        self._f = open(path, "r+b")
        self._fd = self._f.fileno()
        termios.setraw(self._fd)
        self.init(baudrate)
        self._poll = select.poll()
        self._poll.register(self._f, select.POLLIN)
        self.timeout = timeout
        self.timeout_char = timeout_char
        self._buf = bytearray(rxbuf)
        self._mv = memoryview(self._buf)
        self._n = 0
        self.busy_us = 0  # as SockUART: time in this emulation (a FIFO in C on a device)

    def init(self, baudrate=None, **kw):
        if baudrate is None:
            return
        speed = _SPEEDS.get(baudrate)
        if speed is None:
            raise ValueError("unsupported baud rate %d" % baudrate)
        a = termios.tcgetattr(self._fd)
        a[4] = a[5] = speed
        cc = a[6]
        cc[_VMIN] = 0 if isinstance(cc[_VMIN], int) else b"\x00"
        cc[_VTIME] = 0 if isinstance(cc[_VTIME], int) else b"\x00"
        termios.tcsetattr(self._fd, termios.TCSANOW, a)
        self.baudrate = baudrate

    def _fill(self, ms):
        if self._n < len(self._buf) and self._poll.poll(ms):
            try:
                r = self._f.readinto(self._mv[self._n:])
            except OSError:
                r = None
            if r:
                self._n += r
        return self._n

    def any(self):
        return self._n or self._fill(0)

    def _take(self, mv, n):
        k = min(n, self._n)
        mv[0:k] = self._mv[0:k]
        rest = self._n - k
        if rest:
            self._buf[0:rest] = self._mv[k:self._n]
        self._n = rest
        return k

    def readinto(self, buf, nbytes=None):
        t = time.ticks_us()
        mv = memoryview(buf)
        n = len(mv) if nbytes is None else min(nbytes, len(mv))
        got = 0
        wait = self.timeout
        while got < n:
            if not self._n:
                deadline = time.ticks_add(time.ticks_ms(), wait)
                while not self._fill(max(0, time.ticks_diff(deadline, time.ticks_ms()))):
                    if time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                        break
                if not self._n:
                    break
            got += self._take(mv[got:], n - got)
            wait = self.timeout_char
        self.busy_us += time.ticks_diff(time.ticks_us(), t)
        return got or None

    def read(self, n=None):
        if n is None:
            n = max(self._fill(self.timeout), 1)
        b = bytearray(n)
        got = self.readinto(b)
        return bytes(b[:got]) if got else None

    def write(self, b):
        t = time.ticks_us()
        n = self._f.write(b)
        self.busy_us += time.ticks_diff(time.ticks_us(), t)
        return n

    def flush(self):
        pass

    def close(self):
        self._f.close()

    deinit = close
