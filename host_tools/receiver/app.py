"""The receiver's ASGI app (FastAPI): `POST /v1/upload` (docs/upload.md) and
its OpenAPI description at /openapi.json.

The terminal is identified by its TLS client certificate, which the server
hands over in the ASGI TLS extension (scope["extensions"]["tls"], see
server.py). The app checks that certificate again itself (issued by the
terminal CA, CN a terminal id), so it never trusts a server that did not
verify it."""
import asyncio
import hashlib
import time

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect
from starlette.exceptions import HTTPException as StarletteHTTPException

from host_tools.receiver import checks, faults, storage, wire

BODY_TIMEOUT_S = 30     # a client that stalls mid-body is cut off (408)
_CERT_CACHE_MAX = 4096


class UploadAck(BaseModel):
    ack: int = Field(description="highest record id held durably for this terminal with no gap before it")
    bundle: str = Field(description="the update bundle, a JSON text (docs/upload.md section 4)")
    sig: str = Field(description="ES256 r||s, 128 hex digits, by the update key over "
                                 "'OFFPAY-BUNDLE-V1' 00 || bundle bytes")


class UploadError(BaseModel):
    error: str = Field(description="malformed, unknown-terminal, revoked, gap, conflict, too-large, "
                                   "length-required, timeout")
    detail: str
    ack: int | None = Field(default=None, description="with error 'gap': the receiver's ack")


class Refused(Exception):
    def __init__(self, status, error, detail, **extra):
        super().__init__(detail)
        self.status, self.error, self.detail, self.extra = status, error, detail, extra


def _error(status, error, detail, **extra):
    return JSONResponse({"error": error, "detail": detail, **extra}, status_code=status)


class Identity:
    __slots__ = ("terminal_id", "fingerprint")

    def __init__(self, terminal_id, fingerprint):
        self.terminal_id, self.fingerprint = terminal_id, fingerprint


class Receiver:
    """The app's state: config, database, payment checker."""

    def __init__(self, config, db, clock=time.time, faults=None):
        self.config, self.db, self.clock = config, db, clock
        # TEST ONLY (faults.py): a FaultFile when started with --fault-file.
        self.faults = faults
        self.checker = checks.Checker(config)
        self._client_ca = None
        if config.client_ca is not None:
            self._client_ca = x509.load_pem_x509_certificate(config.client_ca.read_bytes())
        self._certs = {}
        self._acked = {}   # terminal id -> the last ack this process answered

    def identify(self, scope):
        tls = (scope.get("extensions") or {}).get("tls") or {}
        chain = tls.get("client_cert_chain") or ()
        if not chain:
            raise Refused(403, "unknown-terminal", "no client certificate")
        pem = chain[0]
        ident = self._certs.get(pem)
        if ident is None:
            ident = self._identity(pem)
            if len(self._certs) >= _CERT_CACHE_MAX:
                self._certs.clear()
            self._certs[pem] = ident
        if isinstance(ident, Refused):
            raise ident
        t = self.config.terminals
        if t is not None and ident.terminal_id not in t:
            raise Refused(403, "unknown-terminal", "terminal %s is not in the acquirer's config" % ident.terminal_id)
        return ident

    def _identity(self, pem):
        try:
            cert = x509.load_pem_x509_certificate(pem.encode() if isinstance(pem, str) else pem)
            if self._client_ca is None:
                return Refused(403, "unknown-terminal", "the receiver has no terminal CA configured")
            cert.verify_directly_issued_by(self._client_ca)
            cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            cn = cns[0].value if len(cns) == 1 else ""
            tid = bytes.fromhex(cn) if isinstance(cn, str) and len(cn) == 16 else b""
        except InvalidSignature:
            return Refused(403, "unknown-terminal", "client certificate not issued by the terminal CA")
        except (ValueError, TypeError) as e:
            return Refused(403, "unknown-terminal", "client certificate: %s" % (e,))
        if len(tid) != 8:
            return Refused(403, "unknown-terminal", "client certificate CN %r is not a terminal id" % (cn,))
        return Identity(tid.hex(), hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest())

    def ingest(self, ident, body):
        """The whole exchange after the body is read: a response body (bytes)
        for a 200, or Refused. Runs in a worker thread (CPU and database)."""
        try:
            up = wire.parse_upload(body)
        except wire.WireError as e:
            raise Refused(400, "malformed", str(e))
        now = int(self.clock())
        tid = ident.terminal_id
        tid_bytes = bytes.fromhex(tid)
        merchant = (self.config.terminals or {}).get(tid, {}).get("merchant_id")
        check = self.checker.check
        # The records are checked before the transaction, so that the
        # database (SQLite's one writer, the terminal's row lock) is held for
        # the storing only. Records this process has seen acknowledged are
        # skipped; any other the transaction finds new is checked there.
        known = max(up.after, self._acked.get(tid, 0))
        early = {}
        for rid, payload in up.records:
            if rid > known:
                v = check(rid, payload, tid_bytes, now, merchant)
                early[rid] = (v, tuple(v.reasons))

        def verdict(rid, payload):
            if rid not in early:
                return check(rid, payload, tid_bytes, now, merchant)
            v, reasons = early[rid]
            v.reasons = list(reasons)  # the transaction adds flags, and may be retried
            return v
        fault = self.faults.take(tid) if self.faults is not None else None
        if fault == "500-before":
            raise faults.InjectedFault("500 before commit")
        try:
            ack = self.db.ingest(tid, ident.fingerprint, up, verdict, now)
        except storage.Revoked as e:
            raise Refused(403, "revoked", str(e))
        except storage.Gap as e:
            raise Refused(409, "gap", str(e), ack=e.ack)
        except storage.Conflict as e:
            raise Refused(409, "conflict", str(e))
        self._acked[tid] = ack
        if fault == "500-after":
            raise faults.InjectedFault("500 after commit")
        text = self.config.bundle_text(tid, up.nonce.hex(), now)
        return wire.response_body(ack, text, wire.sign_bundle(self.config.update_key, text))


async def _read_body(request, limit):
    size = 0
    parts = []
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, "too-large", "body over %d bytes" % wire.MAX_BODY)
        parts.append(chunk)
    return b"".join(parts)


def create_app(receiver):
    """The FastAPI app serving `receiver` (a Receiver)."""
    app = FastAPI(title="OFFPAY acquirer receiver", version="1",
                  description="Terminals upload stored payments and receive the signed update bundle "
                              "(docs/upload.md). Mutual TLS: the client certificate names the terminal.",
                  docs_url=None, redoc_url=None)
    app.state.receiver = receiver

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return _error(exc.status_code, {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "http"),
                      str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request, exc):
        # e.g. the database went away: the terminal retries (docs/upload.md s.3).
        return _error(500, "internal", type(exc).__name__)

    @app.post("/v1/upload", response_model=UploadAck,
              responses={s: {"model": UploadError} for s in (400, 403, 408, 409, 411, 413)},
              openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                  "schema": {"type": "string", "format": "binary",
                             "description": "OPU1 batch: docs/upload.md section 2"}}}}})
    async def upload(request: Request):
        """Upload a batch of journal records; the answer acknowledges what is
        stored and carries the signed update bundle for this exchange's nonce."""
        try:
            ident = receiver.identify(request.scope)
            length = request.headers.get("content-length")
            if length is None or not length.isdigit():
                raise Refused(411, "length-required", "Content-Length is mandatory")
            if int(length) > wire.MAX_BODY:
                raise Refused(413, "too-large", "body of %s bytes, over %d" % (length, wire.MAX_BODY))
            try:
                body = await asyncio.wait_for(_read_body(request, int(length)), BODY_TIMEOUT_S)
            except asyncio.TimeoutError:
                raise Refused(408, "timeout", "body not received within %g s" % BODY_TIMEOUT_S)
            except ClientDisconnect:
                # The link dropped mid-body: nothing was stored; nobody reads the answer.
                raise Refused(400, "malformed", "the client went away before its body was complete")
            out = await run_in_threadpool(receiver.ingest, ident, body)
        except Refused as e:
            return _error(e.status, e.error, e.detail, **e.extra)
        except faults.InjectedFault as e:  # test only: the answer a failing database gives
            return _error(500, "internal", str(e))
        return Response(out, media_type="application/json")

    return app
