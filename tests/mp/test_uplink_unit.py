# heap: 512k
# The uplink's parsers and codecs in the unix port, without a network: the
# bounded HTTP response reader against scripted reads, PEM/DER and the
# certificate time, URLs, backoff bounds and the bundle's shape checks.
import asyncio
import json

import unit
from pos import http
from pos.http import parse_url
from pos.bundle import BundleError, parse
from pos.tls import not_before, pem_der
from pos.uplink import Backoff
from pos import answer

CERT_2025 = """-----BEGIN CERTIFICATE-----
MIIBAzCBq6ADAgECAgEBMAoGCCqGSM49BAMCMAwxCjAIBgNVBAMMAXQwHhcNMjUw
NjAxMTIzNDU2WhcNMjYwNzA2MTIzNDU2WjAMMQowCAYDVQQDDAF0MFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEoNRk8wgk9Em/RcpM4Slp3p4K5IDP+y2+RdsWo6Rv
jBn+ThXF9BDsyvBgEjHnDK6WWFMXe/0XTpR1gpXFqV63fzAKBggqhkjOPQQDAgNH
ADBEAiBIFimk9C81geF2j8hjsoBUAtXrTpjbL8LsqAAMinmaPgIgY1b71Eoa+QaM
uiWuQfwuoBFE83gY389z0wyPqZ1Xh4k=
-----END CERTIFICATE-----
"""
CERT_2051 = """-----BEGIN CERTIFICATE-----\r
MIIBCDCBr6ADAgECAgEBMAoGCCqGSM49BAMCMAwxCjAIBgNVBAMMAXQwIhgPMjA1\r
MTAxMDIwMzA0MDVaGA8yMDUyMDIwNjAzMDQwNVowDDEKMAgGA1UEAwwBdDBZMBMG\r
ByqGSM49AgEGCCqGSM49AwEHA0IABKDUZPMIJPRJv0XKTOEpad6eCuSAz/stvkXb\r
FqOkb4wZ/k4VxfQQ7MrwYBIx5wyullhTF3v9F06UdYKVxalet38wCgYIKoZIzj0E\r
AwIDSAAwRQIgYEmgNdAdKAGlkNCj7xPH2WaTFRARWtoKrZVtBKLCIWgCIQCs9mVe\r
7NyxXNAuLIpwDwsYXZqvAPlGASufaQ2MUCrUhw==\r
-----END CERTIFICATE-----\r
"""


def reads(chunks):
    # recv(mv) handing out the scripted chunks, as many bytes as fit.
    data = [bytes(c) for c in chunks]

    async def recv(mv):
        if not data:
            return 0
        c = data[0]
        n = min(len(c), len(mv))
        mv[:n] = c[:n]
        if n == len(c):
            data.pop(0)
        else:
            data[0] = c[n:]
        return n
    return recv


def response(chunks, cap=100):
    buf = bytearray(http.MAX_HEAD + cap)
    st, body = asyncio.run(http.read_response(reads(chunks), buf, cap))
    return st, bytes(body)


def refused(chunks, why, cap=100):
    try:
        response(chunks, cap)
    except http.HTTPError as e:
        assert e.args[0] == why, (e.args, why)
        return
    raise AssertionError("accepted")


def test_response_read_in_any_pieces():
    msg = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ack\": 12}"
    for step in (1, 2, 3, 5, 64, len(msg)):
        assert response([msg[i:i + step] for i in range(0, len(msg), step)]) == (200, b'{"ack": 12}')
    # Bytes past Content-Length are not the body.
    assert response([b"HTTP/1.0 500 X\r\ncontent-length: 2\r\n\r\nhiTRAILING"]) == (500, b"hi")
    # No Content-Length: the body runs to the end of the stream, up to the cap.
    assert response([b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 60, b"y" * 40]) == (200, b"x" * 60 + b"y" * 40)


def test_bad_responses_are_refused_within_the_caps():
    refused([b"\x16\x03\x01garbage" * 400], "head-too-large")
    refused([b"SSH-2.0-OpenSSH\r\n\r\n"], "status-line")
    refused([b"HTTP/1.1 20x OK\r\n\r\n"], "status-line")
    refused([b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 5000], "head-too-large")
    refused([b"HTTP/1.1 200 OK\r\nContent-Length: 101\r\n\r\n" + b"x" * 101], "body-too-large")
    refused([b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n"], "length")
    refused([b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"], "length")
    refused([b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"], "length")
    refused([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"], "chunked")
    refused([b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"], "header")
    refused([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"], "truncated")
    refused([b"HTTP/1.1 200 OK\r\n"], "truncated")
    refused([b"HTTP/1.1 200 OK\r\n\r\n", b"z" * 101], "body-too-large")
    refused([b"HTTP/1.1 200 OK\r\n\r\n"] + [b"z" * 1000] * 1000, "body-too-large")


def test_request_head():
    h = http.request_head(b"POST", b"10.0.0.1:8443", b"/v1/upload", 1234, b"application/octet-stream")
    assert h == (b"POST /v1/upload HTTP/1.1\r\nHost: 10.0.0.1:8443\r\n"
                 b"Content-Type: application/octet-stream\r\nContent-Length: 1234\r\n"
                 b"Connection: close\r\n\r\n")


def test_pem_and_certificate_time():
    der = pem_der(CERT_2025)
    assert der[0] == 0x30 and len(der) == 263
    assert not_before(der) == 1748781296      # 2025-06-01 12:34:56 UTC, UTCTime
    assert not_before(pem_der(CERT_2051.encode())) == 2556241445  # 2051, GeneralizedTime
    assert not_before(b"\x30\x03\x02\x01\x01") == 0 and not_before(der[:40]) == 0
    for bad in ("no pem", b"-----BEGIN X-----\n!!!!\n-----END X-----", None, "-----BEGIN X-----"):
        unit.raises(ValueError, pem_der, bad)


def test_urls():
    assert parse_url("https://127.0.0.1:8443/v1/upload") == ("127.0.0.1", 8443, "/v1/upload")
    assert parse_url("https://acq.example") == ("acq.example", 443, "/")
    assert parse_url("https://[::1]:9/x") == ("::1", 9, "/x")
    for bad in ("http://h/x", "https://:80/x", "https://h:0/", "https://h:70000/", "https://h:x/",
                "https://[::1]x/", None):
        unit.raises(ValueError, parse_url, bad)


def test_backoff_bounds():
    b = Backoff(100, 1000)
    seen = []
    for _ in range(8):
        seen.append(b.next())
    lo = [50, 100, 200, 400, 500, 500, 500, 500]
    hi = [100, 200, 400, 800, 1000, 1000, 1000, 1000]
    for d, a, z in zip(seen, lo, hi):
        assert a <= d <= z, (seen,)
    many = [b.next() for _ in range(400)]
    assert min(many) >= 500 and max(many) <= 1000 and len(set(many)) > 100  # jitter
    assert all(500 <= b.next(True) <= 1000 for _ in range(50))
    b.reset()
    assert 50 <= b.next() <= 100


def bundle(**over):
    d = {"v": 1, "version": 3, "terminal_id": "5445524d30303031", "nonce": "00" * 16,
         "time": 1764000000, "deny": {"wallets": ["22" * 16, ["0102030405060708", "11" * 16]],
                                      "serials": ["0102030405060708" + "33" * 8]},
         "issuers": [{"kid": "x"}], "risk": {"max_offline_age_s": 604800}}
    d.update(over)
    return json.dumps(d).encode()


def test_bundle_shape():
    b = parse(bundle(), b"s" * 64)
    assert b.version == 3 and b.time == 1764000000 and b.risk == {"max_offline_age_s": 604800}
    assert b.wallets() == [b"\x22" * 16, bytes(range(1, 9)) + b"\x11" * 16]
    assert b.serials() == [bytes(range(1, 9)) + b"\x33" * 8] and b.issuers == [{"kid": "x"}]
    # The deny entries decoded where the JSON pairs were (never held twice),
    # in the shape rules.Policy.from_config takes as it takes the config's.
    assert b.policy_config() == {"issuers": [{"kid": "x"}], "deny": {
        "wallets": [b"\x22" * 16, bytes(range(1, 9)) + b"\x11" * 16], "serials": [bytes(range(1, 9)) + b"\x33" * 8]}}
    assert parse(bundle(deny={}), b"s" * 64).wallets() == []
    w = lambda *e: {"wallets": list(e)}
    bad = [b"not json", b"[1]", bundle(v=2), bundle(version=-1), bundle(version=True),
           bundle(version=1 << 32), bundle(time="now"), bundle(deny=w(["01", "11" * 16])),
           bundle(deny=w(["zz" * 8, "11" * 16])), bundle(deny=w(["01" * 8])), bundle(deny=w("11" * 15)),
           bundle(deny=[["01" * 8, "11" * 16]]), bundle(deny={"wallets": {}}),
           bundle(deny={"serials": ["01" * 8]}), bundle(deny=w(*(["11" * 16] * 1025))),
           bundle(issuers=[1]), bundle(issuers={}), bundle(risk={"max_offline_age_s": 1.5})]
    for k in ("version", "time", "terminal_id", "nonce", "deny", "issuers", "risk"):
        d = json.loads(bundle())
        del d[k]  # "issuers" missing would retire every key: refused, not defaulted
        bad.append(json.dumps(d).encode())
    for t in bad:
        try:
            parse(t, b"s" * 64)
        except BundleError as e:
            assert e.args[0] == "malformed"
            continue
        raise AssertionError(t)



def _answer(body):
    # The body after a head, in a buffer as the uplink holds it.
    head = b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body)
    buf = bytearray(head + body + b"\xee" * 40)
    return buf, len(head), len(head) + len(body)


def test_answer_decodes_the_bundle_in_place():
    text = json.dumps({"v": 1, "deny": {"wallets": [["ab" * 8, "cd" * 16]]}, "s": "q\\\"/\t\u0041"})
    for body in (json.dumps({"ack": 7, "bundle": text, "sig": "ab" * 64}),
                 '{ "sig" : "%s" , "bundle" :\n %s, "ack": 7 }' % ("ab" * 64, json.dumps(text)),
                 '{"ack":7,"bundle":"%s","sig":"%s"}' % (text.replace("\\", "\\\\").replace('"', '\\"')
                                                          .replace("A", "\\u0041").replace("/", "\\/"), "ab" * 64)):
        buf, a, b = _answer(body.encode())
        ack, mv, sig = answer.parse(buf, a, b)
        assert ack == 7 and sig == "ab" * 64, body
        assert bytes(mv) == text.encode(), (bytes(mv), text)
        assert buf[b:] == b"\xee" * 40  # nothing written past the body
    # A long text with escapes all through it.
    text = json.dumps({"deny": [["%016x" % i, "%032x" % i] for i in range(120)]})
    buf, a, b = _answer(json.dumps({"ack": 1, "bundle": text, "sig": "00" * 64}).encode())
    assert bytes(answer.parse(buf, a, b)[1]) == text.encode()


def test_answer_refuses_what_is_not_the_answer():
    for body, why in ((b'{"ack":1,"bundle":"abc', "bundle string not closed"),
                      (b'{"ack":1,"bundle":"a\\qb","sig":"x"}', "bad escape"),
                      (b'{"ack":1,"bundle":"a\\u00e9","sig":"x"}', "bundle not ASCII"),
                      (b'{"ack":1,"bundle":"a\\u12","sig":"x"}', "bad escape"),
                      (b'{"ack":1,"bundle":"a\\u+123","sig":"x"}', "bad escape"),
                      (b'{"ack":1,"bundle":"a\\', "bundle string not closed"),
                      (b'[1]', "response without ack"), (b'{"ack":-1}', "response without ack"),
                      (b'{"ack":true,"bundle":"x"}', "response without ack"),
                      (b'{"ack":1,"bundle":"x"', "response not json"), (b'garbage', "response not json")):
        buf, a, b = _answer(body)
        try:
            answer.parse(buf, a, b)
        except answer.AnswerError as e:
            assert e.args[0] == why, (body, e.args[0], why)
            continue
        raise AssertionError(body)
    # No bundle, or one that is not the top-level string: ack only.
    for body in (b'{"ack":3}', b'{"ack":3,"bundle":5}', b'{"ack":3,"x":{"bundle":"y"},"bundle":"z"}'):
        buf, a, b = _answer(body)
        assert answer.parse(buf, a, b) == (3, None, None), body


unit.run(globals())
