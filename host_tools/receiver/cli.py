"""`offpay receiver`, `offpay ledger`, `offpay revoke`, `offpay terminals`.

Exit codes: 0 success, 1 the operation failed, 2 usage error.
"""
import argparse
import json
import sys
from pathlib import Path

from host_tools.receiver import storage

DB_HELP = "database URL: sqlite:///path (created if absent) or postgresql://user@host:port/db"


def _db(url):
    db = storage.open_storage(url)
    db.init_schema()
    return db


def _fail(prog, e):
    print("%s: %s" % (prog, e), file=sys.stderr)
    return 1


def receiver_main(argv=None):
    """Run the acquirer's receiver: HTTPS with mutual TLS (docs/upload.md)."""
    ap = argparse.ArgumentParser(prog="offpay receiver", description=receiver_main.__doc__)
    ap.add_argument("--db", required=True, help=DB_HELP)
    ap.add_argument("--listen", required=True, help="HOST:PORT to listen on (port 0: any free port; "
                                                    "the chosen one is printed)")
    ap.add_argument("--config", required=True, help="acquirer config JSON (docs/upload.md section 6)")
    ap.add_argument("--tls-cert", help="server certificate PEM (default: the config's tls.cert)")
    ap.add_argument("--tls-key", help="server key PEM (default: the config's tls.key)")
    ap.add_argument("--client-ca", help="CA that issues terminal certificates (default: tls.client_ca)")
    ap.add_argument("--db-pool", type=int, default=4, help="PostgreSQL connections per process (default 4)")
    ap.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    ap.add_argument("--access-log", action="store_true", help="log every request")
    ap.add_argument("--fault-file", help="TEST ONLY, never in a deployment: a queue of injected 500s "
                                         "(host_tools/receiver/faults.py)")
    a = ap.parse_args(argv)
    from host_tools.receiver import app as app_mod, config, server
    try:
        host, port = server.parse_listen(a.listen)
    except ValueError as e:
        ap.error(str(e))
    try:
        cfg = config.load(a.config)
        cert = Path(a.tls_cert).resolve() if a.tls_cert else cfg.tls_cert
        key = Path(a.tls_key).resolve() if a.tls_key else cfg.tls_key
        ca = Path(a.client_ca).resolve() if a.client_ca else cfg.client_ca
        if not (cert and key and ca):
            raise config.ConfigError("TLS needs a server certificate, its key and the terminal CA "
                                     "(config tls.cert/key/client_ca or --tls-cert/--tls-key/--client-ca)")
        cfg.client_ca = ca
        server.check_tls_files(cert, key, ca)  # a bad file fails here, with exit 1, not in uvicorn
        db = storage.open_storage(a.db, pool=a.db_pool)
        db.init_schema()
        fault_file = None
        if a.fault_file:
            from host_tools.receiver import faults
            fault_file = faults.FaultFile(a.fault_file)
            print("offpay receiver: TEST FAULTS ENABLED from %s" % a.fault_file, file=sys.stderr, flush=True)
        receiver = app_mod.Receiver(cfg, db, faults=fault_file)
        sock = server.bind(host, port)
    except (config.ConfigError, storage.StorageError, OSError, ValueError) as e:
        return _fail("offpay receiver", e)
    except Exception as e:  # the database driver's own errors (e.g. cannot connect)
        return _fail("offpay receiver", "%s: %s" % (type(e).__name__, e))
    return server.serve(app_mod.create_app(receiver), sock, cert, key, ca, a.log_level, a.access_log)


def ledger_main(argv=None, out=print):
    """Print every stored payment as one JSON object per line."""
    ap = argparse.ArgumentParser(prog="offpay ledger", description=ledger_main.__doc__)
    ap.add_argument("--db", required=True, help=DB_HELP)
    ap.add_argument("--terminal", help="only this terminal's payments (16 hex digits)")
    ap.add_argument("--flagged", action="store_true", help="only flagged payments")
    a = ap.parse_args(argv)
    try:
        rows = _db(a.db).ledger(a.terminal)
    except Exception as e:  # noqa: BLE001 -- any database failure is exit 1 with its message
        return _fail("offpay ledger", "%s: %s" % (type(e).__name__, e))
    for r in rows:
        if a.flagged and r["status"] != "flagged":
            continue
        out(json.dumps(r, sort_keys=False))
    return 0


def revoke_main(argv=None, out=print):
    """Revoke a terminal (by id) or one of its certificates (by SHA-256
    fingerprint or file); every receiver on the database refuses it (403) from
    its next upload on. --list prints the revocations."""
    ap = argparse.ArgumentParser(prog="offpay revoke", description=revoke_main.__doc__)
    ap.add_argument("--db", required=True, help=DB_HELP)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--terminal", help="terminal id, 16 hex digits: every certificate it has")
    g.add_argument("--fingerprint", help="SHA-256 of the certificate's DER, 64 hex digits")
    g.add_argument("--cert", help="the certificate file (PEM or DER)")
    g.add_argument("--list", action="store_true", help="print the revocations as JSON lines")
    ap.add_argument("--reason", default="", help="why (kept with the revocation)")
    a = ap.parse_args(argv)
    try:
        if a.terminal is not None:
            kind, value = "terminal", a.terminal
            if len(bytes.fromhex(value)) != 8:
                raise ValueError("a terminal id is 16 hex digits")
        elif a.fingerprint is not None:
            kind, value = "fingerprint", a.fingerprint
            if len(bytes.fromhex(value)) != 32:
                raise ValueError("a fingerprint is 64 hex digits")
        elif a.cert is not None:
            from cryptography import x509
            from host_tools import pki
            data = Path(a.cert).read_bytes()
            cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
            kind, value = "fingerprint", pki.fingerprint(cert)
    except (ValueError, OSError) as e:
        return _fail("offpay revoke", e)
    try:
        db = _db(a.db)
        if a.list:
            for r in db.revoked():
                out(json.dumps(r))
            return 0
        db.revoke(kind, value, a.reason)
    except Exception as e:  # noqa: BLE001
        return _fail("offpay revoke", "%s: %s" % (type(e).__name__, e))
    out("revoked %s %s" % (kind, value.lower()))
    return 0


def terminals_main(argv=None, out=print):
    """Print each terminal the receiver has heard from (ack, last seen, conflicts
    and their log) as one JSON object per line."""
    ap = argparse.ArgumentParser(prog="offpay terminals", description=terminals_main.__doc__)
    ap.add_argument("--db", required=True, help=DB_HELP)
    a = ap.parse_args(argv)
    try:
        rows = _db(a.db).terminals()
    except Exception as e:  # noqa: BLE001
        return _fail("offpay terminals", "%s: %s" % (type(e).__name__, e))
    for r in rows:
        out(json.dumps(r))
    return 0
