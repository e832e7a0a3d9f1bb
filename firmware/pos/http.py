# A bounded HTTP/1.1 client codec for the uplink: one request, one response,
# Connection: close. The response is read into the caller's preallocated
# buffer and nothing else grows: a head over MAX_HEAD, a body over the cap
# (announced or actual), chunked encoding or a malformed head is refused with
# HTTPError, so a hostile or broken server costs bounded memory and time.

from micropython import const

MAX_HEAD = const(2048)
_MAX_DIGITS = const(9)


class HTTPError(Exception):
    # args[0]: "head-too-large", "status-line", "header", "length",
    # "body-too-large", "truncated" or "chunked"
    pass


def request_head(method, host, path, length, ctype):
    """The request head (bytes) for a body of `length` bytes."""
    return b"%s %s HTTP/1.1\r\nHost: %s\r\nContent-Type: %s\r\nContent-Length: %d\r\n" \
        b"Connection: close\r\n\r\n" % (method, path, host, ctype, length)


def parse_head(head):
    """(status, content length or -1) from the head's bytes, without the
    final CRLF CRLF."""
    lines = head.split(b"\r\n")
    st = lines[0].split(b" ", 2)
    if len(st) < 2 or not st[0].startswith(b"HTTP/1.") or len(st[1]) != 3 or not st[1].isdigit():
        raise HTTPError("status-line")
    status = int(st[1])
    length = -1
    for ln in lines[1:]:
        k, sep, v = ln.partition(b":")
        if not sep or not k or k != k.strip():
            raise HTTPError("header")
        k = k.lower()
        v = v.strip()
        if k == b"content-length":
            if not v.isdigit() or len(v) > _MAX_DIGITS or (length >= 0 and int(v) != length):
                raise HTTPError("length")
            length = int(v)
        elif k == b"transfer-encoding" and v.lower() != b"identity":
            raise HTTPError("chunked")
    return status, length


async def read_response(recv, buf, max_body):
    """Read one response with `recv(memoryview) -> awaitable n` (0 at end of
    stream) into `buf` (at least MAX_HEAD + max_body bytes). Returns (status,
    memoryview of the body). Without a Content-Length the body runs to the
    end of the stream, within the same cap."""
    if len(buf) < MAX_HEAD + max_body:
        raise ValueError("buffer too small")
    mv = memoryview(buf)
    n = 0
    end = -1
    while end < 0:
        if n >= MAX_HEAD:
            raise HTTPError("head-too-large")
        k = await recv(mv[n:MAX_HEAD])
        if not k:
            raise HTTPError("truncated")
        # The terminator may straddle two reads: look from 3 bytes back.
        end = buf.find(b"\r\n\r\n", n - 3 if n > 3 else 0, n + k)
        n += k
    status, length = parse_head(bytes(mv[:end]))
    start = end + 4
    if length > max_body:
        raise HTTPError("body-too-large")
    if length >= 0:
        stop = start + length
        while n < stop:
            k = await recv(mv[n:stop])
            if not k:
                raise HTTPError("truncated")
            n += k
        return status, mv[start:stop]
    # To the end of the stream: one byte of room past the cap tells a body
    # that is too large from one that fits exactly.
    cap = start + max_body + 1
    while True:
        k = await recv(mv[n:cap])
        if not k:
            return status, mv[start:n]
        n += k
        if n >= cap:
            raise HTTPError("body-too-large")


def parse_url(url):
    """(host, port, path) of an https:// URL."""
    if not isinstance(url, str) or not url.startswith("https://"):
        raise ValueError("url")
    rest = url[8:]
    k = rest.find("/")
    hostport, path = (rest, "/") if k < 0 else (rest[:k], rest[k:])
    port = 443
    if hostport.startswith("["):           # [v6]:port
        k = hostport.find("]")
        host, tail = hostport[1:k], hostport[k + 1:]
        if tail:
            if not tail.startswith(":"):
                raise ValueError("url")
            port = tail[1:]
    else:
        host, _, p = hostport.partition(":")
        if p:
            port = p
    try:
        port = int(port)
    except ValueError:
        raise ValueError("url")
    if not host or not 0 < port < 65536:
        raise ValueError("url")
    return host, port, path


def ip_literal(host):
    return host.replace(".", "").isdigit() or ":" in host
