"""Helpers to run a real receiver (and a throwaway PostgreSQL) from tests, the
bench and the demo, plus a CPython stand-in for a terminal's journal.

    pg = start_postgres()                          # initdb + pg_ctl in a temp dir
    rx = start_receiver(tmp_path, pg.create_database("t1"), issuers=[iss.config()])
    url, ca_pem, stop = rx                         # or rx.url, rx.ca_pem, rx.stop()
    cert = rx.terminal_cert("5445524d30303031")    # pki.Pair: .files["cert_pem"], ...
    r = rx.post("5445524d30303031", body)          # one upload over mutual TLS
    stop(); pg.stop()

start_receiver runs `python -m host_tools receiver` as its own process (as a
deployment would, and so that several can share one database).
"""
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from host_tools import pki, records
from host_tools import wallet_sim as ws

ROOT = Path(__file__).resolve().parents[2]
REQUIRE_PG = "POS_REQUIRE_PG"  # "1" (set by .ci/run): a missing PostgreSQL fails instead of skipping


# --- PostgreSQL -----------------------------------------------------------------
def pg_bin_dir():
    """The directory of initdb/pg_ctl/postgres, or None."""
    exe = shutil.which("pg_ctl")
    if exe:
        return Path(exe).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return found[-1].parent if found else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postgres:
    """A private PostgreSQL cluster on 127.0.0.1 (trust auth, user offpay)."""

    def __init__(self, fsync=False):
        bindir = pg_bin_dir()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install -y postgresql)")
        self.dir = Path(tempfile.mkdtemp(prefix="offpay-pg-"))
        self._as = []
        if os.geteuid() == 0:
            # initdb refuses to run as root: the cluster belongs to the
            # postgres user the Debian package creates.
            import pwd
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no 'postgres' user to run PostgreSQL as")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.data = self.dir / "data"
        self.log = self.dir / "log"
        self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", "offpay", "-A", "trust",
                   "-E", "UTF8", "--no-sync"])
        opts = "-c listen_addresses=127.0.0.1 -c unix_socket_directories=%s -c max_connections=100" % self.dir
        if not fsync:
            # Tests only: a crash loses the cluster, which is thrown away anyway.
            opts += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self.pg_ctl = str(bindir / "pg_ctl")
        for _ in range(5):
            self.port = free_port()
            r = self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                           "-o", "%s -c port=%d" % (opts, self.port), "start"], check=False)
            if r.returncode == 0:
                break
        else:
            raise RuntimeError("pg_ctl start failed: %s" % self._logtail())
        self.url = "postgresql://offpay@127.0.0.1:%d/postgres" % self.port

    def _logtail(self):
        try:
            return self.log.read_text()[-2000:]
        except OSError:
            return ""

    def _run(self, cmd, check=True):
        r = subprocess.run(self._as + cmd, capture_output=True, text=True, timeout=120)
        if check and r.returncode:
            raise RuntimeError("%s failed: %s%s" % (cmd[0], r.stdout[-1000:], r.stderr[-1000:]))
        return r

    def create_database(self, name):
        """A fresh database; returns its URL."""
        import psycopg
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(name)
        with psycopg.connect(self.url, autocommit=True) as c:
            c.execute("DROP DATABASE IF EXISTS %s" % name)
            c.execute("CREATE DATABASE %s" % name)
        return "postgresql://offpay@127.0.0.1:%d/%s" % (self.port, name)

    def stop(self):
        if self.data.exists():
            self._run([self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def start_postgres(fsync=False):
    return Postgres(fsync)


def postgres_for_tests():
    """A Postgres for a pytest fixture: skipped (with the reason) where the
    binaries are absent, but failed when POS_REQUIRE_PG=1 (CI)."""
    import pytest
    if pg_bin_dir() is None:
        msg = "PostgreSQL binaries not found (apt-get install -y postgresql)"
        if os.environ.get(REQUIRE_PG) == "1":
            pytest.fail(msg + " and %s=1" % REQUIRE_PG)
        pytest.skip(msg + "; set %s=1 to make this a failure" % REQUIRE_PG)
    return start_postgres()


# --- the receiver -----------------------------------------------------------------
def acquirer_config(pki_dir, issuers=(), **overrides):
    """An acquirer config dict using the files of pki.init(pki_dir)."""
    p = Path(pki_dir).resolve()
    cfg = {"tls": {"cert": str(p / "server.pem"), "key": str(p / "server-key.pem"), "client_ca": str(p / "ca.pem")},
           "update_key": str(p / "update-key.pem"), "bundle_version": 1, "issuers": list(issuers),
           "deny": {"wallets": [], "serials": []}, "risk": {"max_offline_age_s": 7 * 86400}}
    cfg.update(overrides)
    return cfg


class ReceiverProcess:
    """A running `offpay receiver`. Unpacks as (url, ca_pem, stop)."""

    def __init__(self, proc, url, pki_dir, config_path, db_url, log_path):
        self.proc, self.url, self.pki_dir = proc, url, Path(pki_dir)
        self.config_path, self.db_url, self.log_path = config_path, db_url, log_path
        self.ca_pem = self.pki_dir / "ca.pem"
        self.ca_der = self.pki_dir / "ca.der"
        self.update_key = pki.public_hex(pki.load_key(self.pki_dir / "update-key.pem"))
        self._certs = {}

    def __iter__(self):
        return iter((self.url, self.ca_pem, self.stop))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def terminal_cert(self, terminal_id):
        """A client certificate for a terminal, issued by this receiver's CA
        (files in pki_dir/terminals/: PEM and DER of the cert and the key)."""
        tid = terminal_id.lower()
        if tid not in self._certs:
            self._certs[tid] = pki.terminal_cert(pki.load_ca(self.pki_dir), self.pki_dir / "terminals", tid)
        return self._certs[tid]

    def ssl_context(self, terminal_id=None):
        """A client SSLContext that pins the CA and presents the terminal's cert."""
        ctx = ssl.create_default_context(cafile=str(self.ca_pem))
        if terminal_id is not None:
            f = self.terminal_cert(terminal_id).files
            ctx.load_cert_chain(str(f["cert_pem"]), str(f["key_pem"]))
        return ctx

    def post(self, terminal_id, body, timeout=30, path="/v1/upload"):
        """One upload as the terminal (None: without a client certificate)."""
        import httpx
        with httpx.Client(verify=self.ssl_context(terminal_id), timeout=timeout) as c:
            return c.post(self.url + path, content=body,
                          headers={"content-type": "application/octet-stream", "connection": "close"})

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def start_receiver(tmp_path, db_url, issuers=(), config=None, name="receiver", timeout=30, fault_file=None):
    """Start `python -m host_tools receiver` on 127.0.0.1 (a free port) against
    db_url. The PKI (CA, server cert, update key) is made in tmp_path/pki once
    and shared by every receiver started with the same tmp_path. `config`:
    overrides of the acquirer config (acquirer_config's keys). `fault_file`:
    TEST ONLY, the receiver's --fault-file (receiver/faults.py)."""
    tmp_path = Path(tmp_path)
    pki_dir = tmp_path / "pki"
    if not (pki_dir / "ca.pem").exists():
        pki.init(pki_dir)
    cfg = acquirer_config(pki_dir, issuers, **(config or {}))
    config_path = tmp_path / (name + ".json")
    config_path.write_text(json.dumps(cfg, indent=1))
    log_path = tmp_path / (name + ".log")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "host_tools", "receiver", "--db", db_url,
                                 "--listen", "127.0.0.1:0", "--config", str(config_path)]
                                + (["--fault-file", str(fault_file)] if fault_file else []),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ROOT), env=env)
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(r"listening on (https://\S+)", log_path.read_text(errors="replace"))
        if m:
            return ReceiverProcess(proc, m.group(1), pki_dir, config_path, db_url, log_path)
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise RuntimeError("receiver did not start (exit %s): %s" % (proc.returncode, log_path.read_text()[-3000:]))
        time.sleep(0.05)


# --- a terminal's journal, in CPython ---------------------------------------------------
class TerminalSim:
    """The terminal's side of payments and uploads, without the firmware: takes
    payments from wallet_sim phones into a journal of records (PROTOCOL.md s.9
    with tag 44), and builds upload batches from its cursor (docs/upload.md)."""

    def __init__(self, terminal_id, merchant_id="MARKET-7", currency=978, clock=None):
        self.terminal_id = bytes.fromhex(terminal_id) if isinstance(terminal_id, str) else terminal_id
        self.merchant_id = merchant_id.encode() if isinstance(merchant_id, str) else merchant_id
        self.currency = currency
        self.clock = clock or (lambda: int(time.time()))
        self.journal = []      # [(record id, payload)]
        self.cursor = 0        # every record id <= cursor is acknowledged
        self.next_id = 1
        self.seq = 0

    @property
    def id_hex(self):
        return self.terminal_id.hex()

    def pay(self, phone, amount, reference="", ttime=None, record_id=None):
        """A tap: the phone answers AUTHORIZE, the record is journaled (the
        terminal's own checks are not modelled: the receiver's are under test)."""
        self.seq += 1
        apdu, data = ws.authorize_apdu(self.terminal_id, self.merchant_id, amount, self.currency,
                                       os.urandom(16), self.clock() if ttime is None else ttime, self.seq)
        ws.run_tap(phone, ws.SELECT_APDU)
        resp, sw = ws.run_tap(phone, apdu)
        if sw != ws.SW_OK:
            raise RuntimeError("wallet answered %s" % sw.hex())
        rid = self.next_id if record_id is None else record_id
        self.next_id = rid + 1
        self.journal.append((rid, records.encode_record(data, resp, reference.encode(), self.cursor)))
        return rid

    def pending(self):
        return [(rid, p) for rid, p in self.journal if rid > self.cursor]

    def body(self, limit=64, nonce=None, held_version=0):
        from host_tools.receiver import wire
        return wire.encode_upload(self.pending()[:limit], self.cursor, held_version, nonce)

    def acknowledge(self, ack):
        self.cursor = max(self.cursor, ack)



def asgi_with_client_cert(app, cert_pem):
    """The ASGI app as a TLS server hands it a connection authenticated by
    `cert_pem` (str or bytes; None: no client certificate): for in-process
    tests and the bench, which run the app without a TLS server."""
    if isinstance(cert_pem, bytes):
        cert_pem = cert_pem.decode()
    tls = {"server_cert": None, "client_cert_chain": [cert_pem] if cert_pem else [],
           "client_cert_name": None, "client_cert_error": None, "tls_version": 0x0303, "cipher_suite": None}

    async def wrapped(scope, receive, send):
        if scope["type"] == "http":
            scope.setdefault("extensions", {})["tls"] = tls
        await app(scope, receive, send)
    return wrapped


class AsgiResponse:
    def __init__(self, status_code, headers, content):
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self):
        return self.content.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.content)


class AsgiClient:
    """Calls an ASGI app in process, as an HTTP/1.1 server would hand it one
    request: no sockets, no client library (tests and the bench). A body given
    as a list of chunks is sent without Content-Length, as a chunked one is."""

    def __init__(self, app):
        import asyncio
        self.app = app
        self.loop = asyncio.new_event_loop()

    def close(self):
        self.loop.close()

    def request(self, method, path, content=b"", headers=()):
        return self.loop.run_until_complete(self._request(method, path, content, dict(headers)))

    def post(self, path, content=b"", headers=()):
        return self.request("POST", path, content, headers)

    def get(self, path):
        return self.request("GET", path)

    async def apost(self, path, content=b"", headers=()):
        """post() from a coroutine, in the caller's event loop (concurrent requests)."""
        return await self._request("POST", path, content, dict(headers))

    async def _request(self, method, path, content, headers):
        chunks = [content] if isinstance(content, (bytes, bytearray)) else list(content)
        hdrs = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        if isinstance(content, (bytes, bytearray)):
            hdrs.append((b"content-length", str(len(content)).encode()))
        else:
            hdrs.append((b"transfer-encoding", b"chunked"))
        scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
                 "method": method, "scheme": "https", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "headers": hdrs,
                 "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 443), "state": {}}
        messages = [{"type": "http.request", "body": bytes(c), "more_body": i < len(chunks) - 1}
                    for i, c in enumerate(chunks)]
        out = {"status": None, "headers": [], "body": []}

        async def receive():
            if messages:
                return messages.pop(0)
            return {"type": "http.disconnect"}

        async def send(m):
            if m["type"] == "http.response.start":
                out["status"], out["headers"] = m["status"], m.get("headers", [])
            elif m["type"] == "http.response.body":
                out["body"].append(m.get("body", b""))
        await self.app(scope, receive, send)
        return AsgiResponse(out["status"], out["headers"], b"".join(out["body"]))
