"""The receiver as deployed: `python -m host_tools receiver` (uvicorn, TLS,
client certificates) driven by real TLS clients, the CLI's exit codes, and two
receiver processes against one PostgreSQL racing on a cloned wallet."""
import json
import os
import ssl
import subprocess
import sys
import threading
import uuid

import httpx
import pytest

from conftest import ROOT
from host_tools import pki
from host_tools import wallet_sim as ws
from host_tools.receiver import testing, wire

TID1, TID2 = "5445524d30303031", "5445524d30303032"


@pytest.fixture(scope="module")
def pg():
    p = testing.postgres_for_tests()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def issuer():
    return ws.Issuer(kid=b"ISSUER01")


def offpay(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "host_tools"] + list(args), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_mutual_tls_with_and_without_a_client_certificate(tmp_path, issuer):
    db = "sqlite:///%s/rx.db" % tmp_path
    with testing.start_receiver(tmp_path, db, issuers=[issuer.config()]) as rx:
        term = testing.TerminalSim(TID1)
        for i in range(3):
            term.pay(ws.Phone(issuer, hints=False), 100 + i, "R%d" % i)
        nonce = os.urandom(16)
        r = rx.post(TID1, term.body(nonce=nonce))
        assert r.status_code == 200, r.text
        ack, bundle = wire.check_response(r.content, rx.update_key, nonce, TID1)
        assert ack == 3 and bundle["issuers"] == [issuer.config()]
        # A TLS 1.2 client (what mbedTLS on the terminal speaks), same answer.
        ctx = rx.ssl_context(TID1)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        with httpx.Client(verify=ctx) as c:
            r = c.post(rx.url + "/v1/upload", content=term.body())
        assert r.status_code == 200 and r.json()["ack"] == 3
        # No client certificate: the handshake completes, the app refuses.
        r = rx.post(None, term.body())
        assert r.status_code == 403 and r.json()["error"] == "unknown-terminal"
        # A certificate from another CA fails the handshake itself.
        rogue = pki.terminal_cert(pki.create_ca(tmp_path / "rogue"), tmp_path / "rogue", TID1).files
        ctx = rx.ssl_context()
        ctx.load_cert_chain(str(rogue["cert_pem"]), str(rogue["key_pem"]))
        with pytest.raises(httpx.HTTPError):
            with httpx.Client(verify=ctx) as c:
                c.post(rx.url + "/v1/upload", content=term.body())
        # A terminal pinning another CA does not talk to this receiver.
        other = ssl.create_default_context(cafile=str(tmp_path / "rogue" / "ca.pem"))
        with pytest.raises(httpx.ConnectError):
            with httpx.Client(verify=other) as c:
                c.post(rx.url + "/v1/upload", content=term.body())
        # The OpenAPI description is served.
        with httpx.Client(verify=rx.ssl_context()) as c:
            spec = c.get(rx.url + "/openapi.json").json()
        assert "/v1/upload" in spec["paths"] and "409" in spec["paths"]["/v1/upload"]["post"]["responses"]
        assert rx.alive()
    assert not rx.alive()
    # The ledger, as other tools read it.
    out = offpay("ledger", "--db", db)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(x) for x in out.stdout.splitlines()]
    assert [(r["record_id"], r["amount"], r["status"]) for r in rows] == [(1, 100, "ok"), (2, 101, "ok"), (3, 102, "ok")]


def test_cli_help_and_exit_codes(tmp_path):
    for cmd in ("receiver", "ledger", "revoke", "terminals", "pki"):
        r = offpay(cmd, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout, (cmd, r.stderr)
    assert offpay("receiver", "--db", "sqlite:///x.db").returncode == 2          # --listen, --config missing
    assert offpay("receiver", "--db", "sqlite:///x.db", "--listen", "nowhere", "--config", "c.json").returncode == 2
    r = offpay("receiver", "--db", "sqlite:///%s/x.db" % tmp_path, "--listen", "127.0.0.1:0",
               "--config", str(tmp_path / "missing.json"))
    assert r.returncode == 1 and "missing.json" in r.stderr
    pki.init(tmp_path)
    cfg = testing.acquirer_config(tmp_path, deny={"wallets": [["%016x" % i, "%032x" % i] for i in range(101)]})
    (tmp_path / "big.json").write_text(json.dumps(cfg))
    r = offpay("receiver", "--db", "sqlite:///%s/x.db" % tmp_path, "--listen", "127.0.0.1:0",
               "--config", str(tmp_path / "big.json"))
    assert r.returncode == 1 and "at most 100 entries" in r.stderr, r.stderr
    cfg = testing.acquirer_config(tmp_path, deny={"wallets": [["%016x" % i, "%032x" % i] for i in range(100)]},
                                  issuers=[{"kid": "%016x" % i, "alg": "RS256", "key": "ab" * 512,
                                            "not_before": 0, "not_after": 1} for i in range(16)])
    (tmp_path / "big.json").write_text(json.dumps(cfg))
    r = offpay("receiver", "--db", "sqlite:///%s/x.db" % tmp_path, "--listen", "127.0.0.1:0",
               "--config", str(tmp_path / "big.json"))
    assert r.returncode == 1 and "over the terminal's 16384" in r.stderr, r.stderr
    r = offpay("revoke", "--db", "sqlite:///%s/x.db" % tmp_path, "--terminal", "12")
    assert r.returncode == 1 and "16 hex" in r.stderr
    r = offpay("revoke", "--db", "sqlite:///%s/x.db" % tmp_path, "--cert", str(tmp_path / "server.pem"))
    assert r.returncode == 0 and r.stdout.startswith("revoked fingerprint ")


def test_two_receivers_on_one_postgresql_flag_a_cloned_wallet_once(tmp_path, pg, issuer):
    db = pg.create_database("t_" + uuid.uuid4().hex[:12])
    rx1 = testing.start_receiver(tmp_path, db, issuers=[issuer.config()], name="rx1")
    rx2 = testing.start_receiver(tmp_path, db, issuers=[issuer.config()], name="rx2")
    try:
        t1, t2 = testing.TerminalSim(TID1), testing.TerminalSim(TID2)
        honest = []
        for i in range(24):
            p = ws.Phone(issuer, hints=False)
            clone = ws.Phone(issuer, device_key=p.key, credential=p.credential, counter=p.counter)
            t1.pay(p, 10 + i)
            t2.pay(clone, 20 + i)        # the same counter, at the other terminal
            honest.append(ws.Phone(issuer, hints=False))
            t1.pay(honest[-1], 1)
        errors = []

        def upload(rx, term):
            try:
                while term.pending():
                    # Small batches: the two receivers' transactions interleave.
                    r = rx.post(term.id_hex, term.body(limit=4))
                    assert r.status_code == 200, r.text
                    term.acknowledge(r.json()["ack"])
            except Exception as e:  # noqa: BLE001 -- reported by the main thread
                errors.append(e)
        threads = [threading.Thread(target=upload, args=a) for a in ((rx1, t1), (rx2, t2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        out = offpay("ledger", "--db", db)
        assert out.returncode == 0, out.stderr
        rows = [json.loads(x) for x in out.stdout.splitlines()]
        assert len(rows) == 72
        flagged = [r for r in rows if r["status"] == "flagged"]
        assert len(flagged) == 48 and all(r["reason"] == "double-spend" for r in flagged)
        assert all(r["amount"] == 1 for r in rows if r["status"] == "ok")
        assert rx1.alive() and rx2.alive()
    finally:
        rx1.stop()
        rx2.stop()
