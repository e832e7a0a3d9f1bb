# Store-and-forward upload (docs/upload.md): an asyncio task that sends the
# journal's unacknowledged records to the acquirer's receiver over mutual TLS,
# trims the journal to the receiver's ack, and takes the signed update bundle
# and the acquirer's time from the same response.
#
# It never delays a tap:
#   * it starts an exchange only when the link is up and the terminal is idle,
#     and gives up the exchange (closing the connection, freeing TLS memory)
#     at its next step once the terminal is no longer idle; the records stay
#     unacknowledged and go in a later exchange;
#   * the batch is read from the journal synchronously, between awaits (the
#     journal is not re-entrant and the charge path appends to it), into one
#     preallocated buffer that later takes the response too;
#   * every call into mbedTLS runs at most one handshake step (tls.Paced).
#
# Every network step has a timeout (connect, TLS handshake, each write and
# read wait, the whole exchange); failures back off exponentially with
# jitter. The ack trims the journal only up to the end of the batch sent,
# never below the cursor.
#
# The socket is driven here, not through asyncio's Stream: Stream.write/drain
# would copy each chunk and cannot be stopped between handshake steps
# (tls.ready() waits for the socket as Stream does).

import asyncio
import errno
import gc
import json
import os
import socket
import ssl
import struct
import time

from micropython import const

from pos import answer, http, tls
from pos.bundle import BundleError
from pos.journal import JournalError

_MAGIC = b"OPU1"
_HEAD = const(30)            # magic, nonce, bundle version, after, count
_ROOM = const(256)           # the HTTP head goes in front of the body, in the same buffer
_MAX_COUNT = const(64)
_MAX_PAYLOAD = const(1536)
RESPONSE_MAX = const(16384)  # docs/upload.md section 3
BUF_SIZE = const(18432)      # http.MAX_HEAD + RESPONSE_MAX: the body out, then the answer in
_CHUNK = const(4096)         # one TLS record (mbedTLS OUT_CONTENT_LEN)


class UplinkError(Exception):
    # args[0]: a short token for the log and status
    pass


class Yielded(Exception):
    # The terminal stopped being idle mid-exchange: not a failure.
    pass


def build(journal, buf, nonce, version, limit, log=print):
    """The request body (docs/upload.md section 2) into buf: the records after
    the journal's cursor, in order, up to 64 of them and `limit` bytes.
    Returns (length, after, count, last id sent). Synchronous on purpose: the
    journal's generator is opened and dropped here with no await in between,
    since the charge path appends to the journal."""
    mv = memoryview(buf)
    after = journal.cursor()
    mv[0:4] = _MAGIC
    mv[4:20] = nonce
    struct.pack_into(">II", buf, 20, version, after)
    p, count, last = _HEAD, 0, after
    errors = journal.read_errors
    for rid, payload in journal.records(after + 1):
        n = len(payload)
        if not 0 < n <= _MAX_PAYLOAD:
            log("UPLINK record %d of %d bytes skipped: not a payment record" % (rid, n))
            continue
        if count == _MAX_COUNT or p + 6 + n > limit:
            break
        struct.pack_into(">IH", buf, p, rid, n)
        mv[p + 6:p + 6 + n] = payload
        p += 6 + n
        count += 1
        last = rid
    if journal.read_errors != errors:
        log("UPLINK journal read errors while batching: %d" % (journal.read_errors - errors))
    struct.pack_into(">H", buf, 28, count)
    return p, after, count, last


def credentials(up):
    """(CA, certificate, key) as DER from the uplink config's PEM texts."""
    try:
        return [tls.pem_der(up.get(k)) for k in ("ca", "cert", "key")]
    except ValueError as e:
        raise UplinkError("config: %s" % (e.args[0],))


def context(ders):
    """The uplink's one SSLContext: the acquirer's CA pinned, the terminal's
    certificate and key. The app makes it right after the config is read,
    before the journal, the bundle and the caches have cut the heap up: on a
    terminal that held a bundle, the 3 KB it needs in one piece was not there
    at the end of boot, and such a terminal never uploaded again."""
    ca, cert, key = ders
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        ctx.load_verify_locations(cadata=ca)
        ctx.load_cert_chain(cert, key)
    except ValueError as e:
        raise UplinkError("credentials: %s" % (e,))
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Backoff:
    """Retry delays: exponential from min_ms up to max_ms, of which the upper
    half is random ("equal jitter"): never zero, never above max_ms, and
    terminals that failed together drift apart."""

    def __init__(self, min_ms, max_ms):
        self.min_ms = min_ms
        self.max_ms = max_ms
        self.n = 0

    def reset(self):
        self.n = 0

    def next(self, long=False):
        d = self.max_ms
        if not long:
            d = self.min_ms << self.n
            if d >= self.max_ms:
                d = self.max_ms
            else:
                self.n += 1
        half = d // 2
        return half + int.from_bytes(os.urandom(4), "big") % (d - half + 1)


class Uplink:
    """One terminal's link to the receiver. Construct at boot (after the
    journal is open); create_task(run()) once; see the module comment.

    cfg: the terminal config dict: "terminal_id", "uplink": {"url", "ca",
    "cert", "key"} (PEM). store: a pos.bundle.Store. clock: a pos.clock.Clock.
    link_up(), idle(): callables -> bool. on_ack(rid): called after the
    journal was trimmed to rid. on_bundle(bundle): called with a verified
    bundle whose content is new. set_rtc(t): the board's, called with
    clock.tls_time() before each connection (certificate validity checks)."""

    def __init__(self, journal, cfg, store, clock, link_up, idle, on_ack=None, on_bundle=None,
                 set_rtc=None, log=print, on_memory=None, buf=None, connect_ms=10000, tls_ms=30000, io_ms=15000,
                 exchange_ms=60000, backoff_ms=(2000, 300000), interval_ms=600000,
                 poll_ms=1000, quiet_ms=5000, time_refresh_s=1800, batch_bytes=RESPONSE_MAX,
                 pace=True, ctx=None):
        up = cfg.get("uplink")
        if not isinstance(up, dict):
            raise UplinkError("no uplink config")
        try:
            self.host, self.port, self.path = http.parse_url(up.get("url"))
        except ValueError as e:
            raise UplinkError("config: %s" % (e.args[0],))
        ders = credentials(up)
        # Made once, at boot (the app makes it first thing, see context()): a
        # bad certificate or key fails there, not at the first sync, and an
        # exchange never needs the context's 3 KB in one piece from a heap the
        # day's taps have cut up (nor parses the certificates again).
        self._ctx = ctx if ctx is not None else context(ders)
        for der in ders[:2]:
            clock.hint(tls.not_before(der))
        ders = None
        self.journal, self.store, self.clock = journal, store, clock
        self.link_up, self.idle = link_up, idle
        self.on_ack, self.on_bundle, self.set_rtc, self.log = on_ack, on_bundle, set_rtc, log
        self.on_memory = on_memory
        self.connect_ms, self.tls_ms, self.io_ms, self.exchange_ms = connect_ms, tls_ms, io_ms, exchange_ms
        self.interval_ms, self.poll_ms, self.quiet_ms, self.pace = interval_ms, poll_ms, quiet_ms, pace
        self.time_refresh_s = time_refresh_s  # verify a same-version bundle for its time only this often
        self.backoff = Backoff(backoff_ms[0], backoff_ms[1])
        self.batch_bytes = min(batch_bytes, RESPONSE_MAX)
        hp = self.host if ":" not in self.host else "[" + self.host + "]"
        self._host_hdr = ("%s:%d" % (hp, self.port)).encode()
        self.path = self.path.encode()
        if len(http.request_head(b"POST", self._host_hdr, self.path, RESPONSE_MAX, b"application/octet-stream")) > _ROOM:
            raise UplinkError("url too long")
        self._addr = None
        # One buffer for the request body and then the response: 18 KB, for good.
        self._buf = buf if buf is not None and len(buf) >= BUF_SIZE else bytearray(BUF_SIZE)
        self._mv = memoryview(self._buf)
        self._ss = self._raw = None
        self.state = "idle"       # idle | sync | backoff
        self.last_error = None
        self.acked = journal.cursor()
        self.exchanges = 0
        self.exchanges_ok = 0
        self.failures = 0
        self._retry_at = self._synced_at = None
        self._busy_at = time.ticks_ms()

    # -- the task ---------------------------------------------------------------

    async def run(self):
        """The uplink task: forever, never raises."""
        was_up = self.link_up()
        while True:
            await asyncio.sleep_ms(self.poll_ms)
            up = self.link_up()
            if up and not was_up:
                self.backoff.reset()  # the link just came back: the backlog goes now
                self._retry_at = None
            was_up = up
            if not self.idle():
                self.touch()
                continue
            if not up or not self._due():
                continue
            try:
                await self.sync()
            except Exception as e:  # noqa: the uplink must outlive any bug; say what it was
                self._failed("bug %r" % (e,), False)

    def touch(self):
        """The terminal is busy (the app may call this when a charge starts):
        no exchange starts until it has been idle for quiet_ms. Customers come
        in queues; a quiet spell is when the next charge is least likely to
        land on the handshake's public-key steps."""
        self._busy_at = time.ticks_ms()

    def _due(self):
        now = time.ticks_ms()
        if time.ticks_diff(now, self._busy_at) < self.quiet_ms:
            return False
        if self._retry_at is not None and time.ticks_diff(self._retry_at, now) > 0:
            return False
        if self.journal.pending():
            return True
        return self._synced_at is None or time.ticks_diff(now, self._synced_at) >= self.interval_ms

    async def sync(self):
        """One exchange. True when the receiver answered 200 (whatever its
        bundle); otherwise the failure is logged and the retry scheduled."""
        self.state = "sync"
        self.exchanges += 1
        try:
            return await self._exchange()
        except Yielded:
            self.state = "idle"
            self.log("UPLINK yielded to a charge")
            return False
        except asyncio.TimeoutError:
            return self._failed("timeout", False)
        except http.HTTPError as e:
            return self._failed("http %s" % (e.args[0],), False)
        except UplinkError as e:
            return self._failed(e.args[0], e.args[1] if len(e.args) > 1 else False)
        except (OSError, ValueError) as e:  # network, TLS (certificate checks raise ValueError)
            return self._failed("net %s" % (e,), False)
        except JournalError as e:
            return self._failed("journal %r" % (e,), False)
        except MemoryError:
            # The app may free what only saves time (verification caches)
            # for the exchange; the retry then comes at the normal backoff.
            if self.on_memory is not None:
                self.on_memory()
            gc.collect()
            return self._failed("memory", False)
        finally:
            self._close()

    def _failed(self, why, long):
        self.failures += 1
        self.last_error = why
        self.state = "backoff"
        d = self.backoff.next(long)
        self._retry_at = time.ticks_add(time.ticks_ms(), d)
        self.log("UPLINK failed: %s (retry in %d ms)" % (why, d))
        return False

    # -- one exchange --------------------------------------------------------------

    async def _exchange(self):
        self._check_idle()
        nonce = os.urandom(16)
        length, after, count, last = build(self.journal, self._mv[_ROOM:], nonce, self.store.version,
                                           self.batch_bytes, self.log)
        t0 = time.ticks_ms()
        self._deadline = time.ticks_add(t0, self.exchange_ms)
        head = http.request_head(b"POST", self._host_hdr, self.path, length, b"application/octet-stream")
        start = _ROOM - len(head)
        self._mv[start:_ROOM] = head
        await self._open()
        # Head and body in one stream (the TLS handshake runs in the first
        # write): a receiver that answers on the head alone (404, 413, 403)
        # finds the whole request sent, or is heard before the next record.
        await self._send(self._mv[start:_ROOM + length], self.tls_ms)
        status, body = await http.read_response(self._recv, self._buf, RESPONSE_MAX)
        self._close()
        ms = time.ticks_diff(time.ticks_ms(), t0)
        if status == 200:
            await self._accept(body, nonce, after, count, last, ms)
            return True
        try:
            err = json.loads(body) if len(body) else {}
        except ValueError:
            err = {}
        token = err.get("error") if isinstance(err, dict) else None
        if status == 409 and token == "gap":
            # The receiver holds less than this terminal trimmed: nothing the
            # terminal can resend fixes that; an operator must look.
            self.log("UPLINK receiver ack %r is below the cursor %d" % (err.get("ack"), after))
        raise UplinkError("status %d %s" % (status, token), status in (403, 409))

    async def _accept(self, body, nonce, after, count, last, ms):
        # The body lies in self._buf right after the head, which
        # http.read_response read from the buffer's start.
        start = self._buf.find(b"\r\n\r\n") + 4
        try:
            # The bundle text stays in the buffer, decoded in place (pos.answer).
            ack, text, sig = answer.parse(self._buf, start, start + len(body))
        except answer.AnswerError as e:
            raise UplinkError(e.args[0])
        body = None
        self.exchanges_ok += 1
        self._trim(ack, after, last)
        self.backoff.reset()
        self._retry_at = None
        self._synced_at = time.ticks_ms()
        self.state = "idle"
        self.last_error = None
        self.log("UPLINK sent=%d after=%d last=%d ack=%d ms=%d" % (count, after, last, ack, ms))
        await asyncio.sleep_ms(0)
        if not self.idle():
            # The bundle's check is the longest step left (an ES256 verify):
            # not now. Every answer carries the bundle, so the next one will.
            self.log("UPLINK bundle left for the next exchange: a charge started")
            return
        try:
            if text is None or sig is None or len(sig) != 128:
                raise BundleError("malformed")
            try:
                s = bytes.fromhex(sig)
            except ValueError:
                raise BundleError("malformed")
            age = self.clock.offline_age()
            # The text where it came in (the decoded bytes are what was
            # signed): no copy of a text of up to 16 KB.
            b = self.store.check(text, s, nonce, need_time=age is None or age >= self.time_refresh_s)
            text = None
        except BundleError as e:
            self.log("UPLINK bundle refused: %s (kept version %d)" % (e.args[0], self.store.version))
            return
        if b is None:
            return  # same content, and the clock had a recent acquirer time: no verify spent
        self.clock.set_acquirer(b.time)
        if not self.store.is_new(b):
            return
        try:
            await self.store.save(b)
        except OSError as e:
            self.log("UPLINK bundle %d not stored: %s (applied until reboot)" % (b.version, e))
        self.log("UPLINK bundle version %d" % b.version)
        if self.on_bundle:
            self.on_bundle(b)

    def _trim(self, ack, after, last):
        # Only up to the end of the batch sent, never below the cursor.
        upto = ack if ack < last else last
        if ack > last:
            self.log("UPLINK ack %d is beyond the batch sent (last %d)" % (ack, last))
        if upto > self.journal.cursor():
            self.journal.mark_uploaded(upto)
            self.acked = upto
            if self.on_ack:
                self.on_ack(upto)

    # -- connection ------------------------------------------------------------------

    def _check_idle(self):
        if not self.idle():
            raise Yielded()

    async def _gate(self):
        # Let every task that became ready run first (a till command that
        # arrived during the last TLS step among them), then look again.
        await asyncio.sleep_ms(0)
        self._check_idle()
        if time.ticks_diff(time.ticks_ms(), self._deadline) >= 0:
            raise asyncio.TimeoutError()

    async def _wait(self, s, ev, limit_at):
        now = time.ticks_ms()
        left = min(time.ticks_diff(limit_at, now), time.ticks_diff(self._deadline, now), self.io_ms)
        if left <= 0:
            raise asyncio.TimeoutError()
        await asyncio.wait_for_ms(tls.ready(s, ev), left)

    async def _open(self):
        if self.set_rtc:
            self.set_rtc(self.clock.tls_time())
        if self._addr is None:
            if not http.ip_literal(self.host):
                self.log("UPLINK resolving %s (blocks until the resolver answers)" % self.host)
            self._addr = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0][-1]
        s = socket.socket()
        self._raw = s
        s.setblocking(False)
        try:
            s.connect(self._addr)
        except OSError as e:
            if e.args[0] != errno.EINPROGRESS:  # 115 on Linux, 119 on lwIP
                self._addr = None  # resolve again next time
                raise
        await self._wait(s, tls.POLLOUT, time.ticks_add(time.ticks_ms(), self.connect_ms))
        await self._gate()
        self._paced = tls.Paced(s, self.pace)
        self._ss = self._ctx.wrap_socket(self._paced, server_hostname=self.host,
                                               do_handshake_on_connect=False)
        self._raw = None  # closed with the TLS socket from now on

    def _close(self):
        for s in (self._ss, self._raw):
            if s is not None:
                try:
                    s.close()
                except OSError:
                    pass
        self._ss = self._raw = None

    async def _send(self, data, limit_ms):
        mv = memoryview(data)
        limit_at = time.ticks_add(time.ticks_ms(), limit_ms)
        off = 0
        while off < len(mv):
            await self._gate()
            if off and self._paced.readable():
                return  # the receiver answered already: hear it rather than write into a reset
            n = self._ss.write(mv[off:off + _CHUNK])
            if n is None:  # TLS waits on the network (a handshake step, a full socket)
                await self._wait(self._ss, self._paced.need, limit_at)
            else:
                off += n

    async def _recv(self, mv):
        while True:
            await self._gate()
            n = self._ss.readinto(mv)
            if n is not None:
                return n
            await self._wait(self._ss, self._paced.need, self._deadline)
