"""A machine.UART look-alike for the MicroPython unix port, over TCP (e.g. to host_tools.pn532_sim).

    uart = SockUART(port, host="127.0.0.1", *, timeout=0, timeout_char=2, rxbuf=1024)
    uart.write(b) -> n          uart.any() -> bytes waiting
    uart.read([n]) -> bytes | None      uart.readinto(buf[, nbytes]) -> n | None
    uart.close() / deinit()

Timeouts as machine.UART: wait up to `timeout` ms for the first byte, then up to
`timeout_char` ms between bytes; return what arrived (None if nothing).
"""
import select
import socket
import time


class SockUART:
    def __init__(self, port, host="127.0.0.1", *, timeout=0, timeout_char=2, rxbuf=1024):
        ai = socket.getaddrinfo(host, port)[0][-1]
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.connect(ai)
        try:  # no Nagle: a UART does not hold small writes back (40 ms stalls otherwise)
            s.setsockopt(getattr(socket, "IPPROTO_TCP", 6), getattr(socket, "TCP_NODELAY", 1), 1)
        except (OSError, AttributeError):
            pass
        s.setblocking(False)
        self._sock = s
        self._poll = select.poll()
        self._poll.register(s, select.POLLIN)
        self.timeout = timeout
        self.timeout_char = timeout_char
        self._buf = bytearray(rxbuf)
        self._mv = memoryview(self._buf)
        self._n = 0
        self._eof = False
        self.busy_us = 0  # time spent in this emulation (a UART's FIFO in C on a device)

    def _fill(self, ms):
        """Pull whatever the socket has (waiting up to ms for something); return buffered count."""
        if self._n < len(self._buf) and not self._eof:
            if self._poll.poll(ms):
                try:
                    r = self._sock.readinto(self._mv[self._n:])
                except OSError:
                    r = None
                if r == 0:
                    self._eof = True
                elif r:
                    self._n += r
        return self._n

    def any(self):
        # Not in busy_us: the driver counts a look that finds nothing as waiting.
        # Bytes already buffered answer without a syscall, as a UART's FIFO
        # count is one register read on a device.
        if self._n:
            return self._n
        return self._fill(0)

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
        try:
            return self._readinto(buf, nbytes)
        finally:
            self.busy_us += time.ticks_diff(time.ticks_us(), t)

    def _readinto(self, buf, nbytes):
        mv = memoryview(buf)
        n = len(mv) if nbytes is None else min(nbytes, len(mv))
        got = 0
        wait = self.timeout
        while got < n:
            if not self._fill(0):
                deadline = time.ticks_add(time.ticks_ms(), wait)
                while not self._fill(max(0, time.ticks_diff(deadline, time.ticks_ms()))):
                    if self._eof or time.ticks_diff(deadline, time.ticks_ms()) <= 0:
                        break
                if not self._n:
                    break
            got += self._take(mv[got:], n - got)
            wait = self.timeout_char
        return got or None

    def read(self, n=None):
        if n is None:
            n = max(self._fill(self.timeout), 1)
        b = bytearray(n)
        got = self.readinto(b)
        if not got:
            return None
        return bytes(b[:got])

    def write(self, b):
        t = time.ticks_us()
        try:
            return self._write(b)
        finally:
            self.busy_us += time.ticks_diff(time.ticks_us(), t)

    def _write(self, b):
        mv = memoryview(b)
        sent = 0
        while sent < len(mv):
            try:
                r = self._sock.write(mv[sent:])
            except OSError:
                r = None
            if r:
                sent += r
            else:
                time.sleep_ms(1)
        return sent

    def init(self, baudrate=None, **kw):
        # A socket has no line rate: the simulator models the UART time itself.
        self.baudrate = baudrate

    def flush(self):
        pass

    def close(self):
        try:
            self._poll.unregister(self._sock)
        except (OSError, ValueError):
            pass
        self._sock.close()

    deinit = close
