"""Serving the receiver: uvicorn over TLS with client-certificate verification.

uvicorn (0.55, pinned) does not fill in the ASGI TLS extension
(scope["extensions"]["tls"]), so the app could not see which terminal is
connected. TLSH11Protocol is uvicorn's h11 protocol plus that extension: when
a connection is made (after the TLS handshake) it reads the verified peer
certificate from the transport's ssl_object and wraps the app, for that
connection only, in a function that adds the extension to each request's
scope. Nothing else of uvicorn's request handling changes.
"""
import socket
import ssl
import sys

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def tls_extension(ssl_object):
    """The ASGI TLS extension's dict for a connection (asgi.readthedocs.io, 'TLS')."""
    der = ssl_object.getpeercert(binary_form=True)
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(ssl_object.version()),
        "cipher_suite": None,
    }


class TLSH11Protocol(H11Protocol):
    def connection_made(self, transport):
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None:
            return
        tls = tls_extension(ssl_object)
        app = self.app

        async def app_with_tls(scope, receive, send):
            scope.setdefault("extensions", {})["tls"] = tls
            return await app(scope, receive, send)
        self.app = app_with_tls


def _ssl_factory(config, default):
    ctx = default()
    # mbedTLS on the terminal speaks TLS 1.2; nothing older is offered.
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def check_tls_files(cert, key, client_ca):
    """ValueError unless the server certificate, its key and the CA load."""
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        ctx.load_verify_locations(str(client_ca))
    except (OSError, ssl.SSLError) as e:
        raise ValueError("TLS files (%s, %s, %s): %s" % (cert, key, client_ca, e))


def parse_listen(s):
    """HOST:PORT ([v6]:PORT too) -> (host, port)."""
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError("--listen wants HOST:PORT, not %r" % (s,))
    return host.strip("[]"), int(port)


def bind(host, port):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(app, sock, cert, key, client_ca, log_level="warning", access_log=False, out=print):
    """Run `app` on the bound socket until SIGINT/SIGTERM."""
    cfg = uvicorn.Config(
        app, http=TLSH11Protocol, lifespan="off", log_level=log_level, access_log=access_log,
        server_header=False, proxy_headers=False, timeout_keep_alive=5, limit_concurrency=256,
        h11_max_incomplete_event_size=16 * 1024,
        ssl_certfile=str(cert), ssl_keyfile=str(key), ssl_ca_certs=str(client_ca),
        # OPTIONAL, not REQUIRED: a certificate that is presented is verified
        # against the terminal CA in the handshake all the same, and a client
        # with none gets a clear 403 from the app instead of a broken handshake.
        ssl_cert_reqs=ssl.CERT_OPTIONAL, ssl_context_factory=_ssl_factory)
    server = uvicorn.Server(cfg)
    host, port = sock.getsockname()[:2]
    out("offpay receiver listening on https://%s:%d" % ("[%s]" % host if ":" in host else host, port))
    sys.stdout.flush()
    server.run(sockets=[sock])
    return 0
