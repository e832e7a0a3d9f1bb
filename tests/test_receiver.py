"""The acquirer's receiver (host_tools/receiver, docs/upload.md), in process:
the ASGI app with the client certificate handed over as a TLS server does,
against SQLite and PostgreSQL. Real wallets (wallet_sim) sign every payment.
tests/test_receiver_tls.py runs it as a process over real mutual TLS."""
import json
import os
import random
import uuid

import pytest
from host_tools import pki
from host_tools import wallet_sim as ws
from host_tools.receiver import app as app_mod, cli, config, storage, testing, wire

T0 = 1764000000
TID1, TID2 = "5445524d30303031", "5445524d30303032"


@pytest.fixture(scope="module")
def pg():
    p = testing.postgres_for_tests()
    yield p
    p.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path):
    if request.param == "sqlite":
        return "sqlite:///%s/receiver.db" % tmp_path
    return request.getfixturevalue("pg").create_database("t_" + uuid.uuid4().hex[:12])


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    pki.init(d)
    return d


@pytest.fixture(scope="module")
def issuer():
    return ws.Issuer(kid=b"ISSUER01")


class Acquirer:
    """A Receiver on db_url and a TestClient per terminal certificate."""

    def __init__(self, pki_dir, db_url, issuers, clock=lambda: T0 + 60, **cfg):
        self.pki_dir = pki_dir
        self.config = config.from_dict(testing.acquirer_config(pki_dir, [i.config() for i in issuers], **cfg))
        self.db = storage.open_storage(db_url)
        self.db.init_schema()
        self.receiver = app_mod.Receiver(self.config, self.db, clock)
        self.app = app_mod.create_app(self.receiver)
        self._ca = pki.load_ca(pki_dir)
        self._clients = {}
        self._certs = {}

    def cert(self, tid):
        if tid not in self._certs:
            self._certs[tid] = pki.terminal_cert(self._ca, self.pki_dir / "terminals", tid)
        return self._certs[tid]

    def client(self, tid, cert_pem=None):
        key = (tid, cert_pem)
        if key not in self._clients:
            pem = cert_pem if cert_pem is not None else (
                self.cert(tid).files["cert_pem"].read_text() if tid else None)
            self._clients[key] = testing.AsgiClient(testing.asgi_with_client_cert(self.app, pem))
        return self._clients[key]

    def post(self, tid, body, **kw):
        return self.client(tid, kw.pop("cert_pem", None)).post(
            "/v1/upload", content=body, headers={"content-type": "application/octet-stream"})

    def sync(self, term, nonce=None):
        """One exchange for a TerminalSim; checks the response as the terminal would."""
        nonce = nonce or os.urandom(16)
        r = self.post(term.id_hex, term.body(nonce=nonce))
        assert r.status_code == 200, r.text
        ack, bundle = wire.check_response(r.content, self.config.update_key_public, nonce, term.id_hex)
        term.acknowledge(ack)
        return ack, bundle

    def ledger(self):
        return self.db.ledger()


def terminal(tid=TID1, **kw):
    return testing.TerminalSim(tid, clock=lambda: T0, **kw)


def phone(issuer, **kw):
    kw.setdefault("hints", False)  # the receiver checks against the key itself; hints cost the test time
    return ws.Phone(issuer, **kw)


def test_upload_stores_acknowledges_and_signs_the_bundle(pki_dir, db_url, issuer):
    acq = Acquirer(pki_dir, db_url, [issuer], deny={"wallets": [["22" * 8, "11" * 16]], "serials": []})
    term = terminal()
    p = phone(issuer)
    for i in range(3):
        term.pay(p, 100 + i, "REF%d" % i)
    ack, bundle = acq.sync(term)
    assert ack == 3 and term.pending() == []
    assert bundle["time"] == T0 + 60 and bundle["version"] == 1 and bundle["terminal_id"] == TID1
    assert bundle["issuers"] == [issuer.config()] and bundle["deny"] == {"wallets": [["22" * 8, "11" * 16]], "serials": []}
    assert bundle["risk"] == {"max_offline_age_s": 7 * 86400}
    rows = acq.ledger()
    assert [(r["record_id"], r["amount"], r["counter"], r["status"], r["reason"]) for r in rows] == \
        [(1, 100, 1, "ok", ""), (2, 101, 2, "ok", ""), (3, 102, 3, "ok", "")]
    r = rows[0]
    assert (r["terminal_id"], r["wallet_id"], r["issuer_kid"], r["currency"], r["merchant_id"], r["reference"],
            r["time"], r["cursor"]) == (TID1, p.wallet_id.hex(), issuer.kid.hex(), 978, "MARKET-7", "REF0", T0, 0)
    # An empty exchange: only the bundle and the time; the ack stays.
    assert acq.sync(term)[0] == 3
    # A tampered signature over the bundle is refused by the terminal's check.
    nonce = os.urandom(16)
    body = acq.post(TID1, term.body(nonce=nonce)).content
    bad = body.replace(b'"sig":"', b'"sig":"0', 1)[:-2] + b'"}'
    with pytest.raises(wire.BundleError):
        wire.check_response(bad, acq.config.update_key_public, nonce, TID1)
    with pytest.raises(wire.BundleError):  # another exchange's nonce
        wire.check_response(body, acq.config.update_key_public, os.urandom(16), TID1)


def test_retry_is_idempotent_and_a_changed_record_is_a_conflict(pki_dir, db_url, issuer):
    acq = Acquirer(pki_dir, db_url, [issuer])
    term = terminal()
    p = phone(issuer)
    for i in range(4):
        term.pay(p, 10 * (i + 1))
    body = term.body()
    first = acq.post(TID1, body)
    assert first.status_code == 200 and first.json()["ack"] == 4
    before = acq.ledger()
    # The acknowledgement was lost: the same batch again, and again.
    for _ in range(2):
        again = acq.post(TID1, body)
        assert again.status_code == 200 and again.json()["ack"] == 4
    assert acq.ledger() == before
    # A batch that starts below the ack and overlaps it, plus one new record.
    term.pay(p, 50)
    r = acq.post(TID1, wire.encode_upload(term.journal[2:], after=2))
    assert r.status_code == 200 and r.json()["ack"] == 5 and len(acq.ledger()) == 5
    # Same record id, different bytes: refused, nothing of the batch stored, terminal flagged.
    lie = list(term.journal)
    rid, payload = lie[1]
    lie[1] = (rid, payload[:-1] + bytes((payload[-1] ^ 1,)))
    term.pay(p, 60)
    lie.append(term.journal[-1])
    r = acq.post(TID1, wire.encode_upload(lie, after=0))
    assert r.status_code == 409 and r.json()["error"] == "conflict" and "record 2" in r.json()["detail"]
    # A record left out of a range it was stored in is a lie too.
    r = acq.post(TID1, wire.encode_upload(term.journal[:2] + term.journal[3:], after=0))
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    assert len(acq.ledger()) == 5
    t = acq.db.terminals()[0]
    assert t["ack"] == 5 and t["conflicts"] == 2 and [e["kind"] for e in t["events"]] == ["conflict", "conflict"]
    # The honest batch still goes through.
    r = acq.post(TID1, wire.encode_upload(term.journal[5:], after=5))
    assert r.status_code == 200 and r.json()["ack"] == 6


def test_gap_answers_the_ack(pki_dir, db_url, issuer):
    acq = Acquirer(pki_dir, db_url, [issuer])
    term = terminal()
    p = phone(issuer)
    for _ in range(3):
        term.pay(p, 5)
    r = acq.post(TID1, wire.encode_upload(term.journal[2:], after=2))
    assert r.status_code == 409 and r.json() == {"error": "gap", "detail": r.json()["detail"], "ack": 0}
    assert acq.ledger() == []
    assert acq.sync(term)[0] == 3
    # Journal ids may have gaps: the batch's claim covers them.
    term.next_id = 10
    term.pay(p, 5)
    assert acq.sync(term)[0] == 10


def test_cloned_wallet_at_two_terminals_is_flagged_double_spend(pki_dir, db_url, issuer):
    acq = Acquirer(pki_dir, db_url, [issuer])
    t1, t2 = terminal(TID1), terminal(TID2)
    p = phone(issuer)
    t1.pay(p, 100)                    # counter 1
    clone = ws.Phone(issuer, device_key=p.key, credential=p.credential, counter=p.counter)
    t1.pay(p, 200)                    # counter 2 at terminal 1
    t2.pay(clone, 250)                # counter 2 again, at terminal 2
    t2.pay(clone, 300)                # counter 3: only the clone used it
    acq.sync(t1)
    acq.sync(t2)
    rows = {(r["terminal_id"], r["record_id"]): r for r in acq.ledger()}
    assert [(k, r["counter"], r["status"], r["reason"]) for k, r in sorted(rows.items())] == [
        ((TID1, 1), 1, "ok", ""), ((TID1, 2), 2, "flagged", "double-spend"),
        ((TID2, 1), 2, "flagged", "double-spend"), ((TID2, 2), 3, "ok", "")]
    # The same payment journaled twice by one terminal, inside one batch.
    t3 = terminal("5445524d30303033")
    rid = t3.pay(p, 10)
    t3.journal.append((rid + 1, t3.journal[-1][1]))
    t3.next_id = rid + 2
    acq.sync(t3)
    assert [r["reason"] for r in acq.db.ledger("5445524d30303033")] == ["double-spend", "double-spend"]


def test_offline_spend_over_the_limit_between_syncs_is_flagged(pki_dir, db_url, issuer):
    acq = Acquirer(pki_dir, db_url, [issuer])
    term = terminal()
    p = phone(issuer, offline_limit=1000, tap_limit=800)
    other = phone(issuer, offline_limit=1000, tap_limit=800)
    term.pay(p, 600)
    term.pay(other, 700)
    acq.sync(term)                     # records 1-2 acknowledged: cursor 2
    term.pay(p, 600)                   # 600 since the sync: within the limit
    term.pay(other, 200)
    acq.sync(term)
    term.pay(p, 300)                   # cursor 4: 300
    term.pay(p, 500)                   # 800
    term.pay(p, 250)                   # 1050 > 1000
    # Uploaded in two batches: the last one's spend counts the two stored before.
    r = acq.post(TID1, term.body(limit=2))
    assert r.json()["ack"] == 6
    term.acknowledge(6)
    acq.sync(term)
    # At another terminal the wallet's spend counts on its own: 500 + 600.
    late = testing.TerminalSim(TID2, clock=lambda: T0)
    late.pay(other, 500)
    late.pay(other, 600)
    acq.sync(late)
    got = [(r["terminal_id"][-1], r["record_id"], r["amount"], r["reason"]) for r in acq.ledger()]
    assert got == [("1", 1, 600, ""), ("1", 2, 700, ""), ("1", 3, 600, ""), ("1", 4, 200, ""),
                   ("1", 5, 300, ""), ("1", 6, 500, ""), ("1", 7, 250, "over-offline-limit"),
                   ("2", 1, 500, ""), ("2", 2, 600, "over-offline-limit")]


def test_every_rule_the_receiver_can_check_flags_the_payment(pki_dir, db_url, issuer):
    unknown = ws.Issuer(kid=b"UNKNOWN1")
    retired = ws.Issuer(kid=b"RETIRED1", not_before=0, not_after=T0 - 1)
    acq = Acquirer(pki_dir, db_url, [issuer, retired], clock=lambda: T0 + 60,
                   deny={"wallets": [], "serials": []})
    denied = phone(issuer)
    acq.config.deny_wallets.add(issuer.kid + denied.wallet_id)
    serial_denied = phone(issuer, serial=b"SERIAL01")
    acq.config.deny_serials.add(issuer.kid + b"SERIAL01")
    term = terminal()
    cases = [
        (phone(issuer), 100, {}, ""),
        (phone(issuer, not_after=T0 - 1), 100, {}, "expired"),
        (phone(issuer, not_before=T0 + 1), 100, {}, "not-yet-valid"),
        (phone(issuer, currency=840), 100, {}, "currency"),
        (phone(issuer, tap_limit=99), 100, {}, "over-tap-limit"),
        (denied, 100, {}, "deny-listed"),
        (serial_denied, 100, {}, "deny-listed"),
        (phone(unknown), 100, {}, "issuer-unknown"),
        (phone(retired), 100, {}, "issuer-key-invalid"),
        (phone(issuer, fault="bad_sig"), 100, {}, "bad-device-sig"),
        (phone(issuer, forge=True), 100, {}, "bad-issuer-sig"),
        (phone(issuer, fault="other_amount"), 100, {}, "bad-device-sig"),
        (phone(issuer), 100, {"ttime": T0 + 3600}, "time-in-future"),
    ]
    for ph, amount, kw, _ in cases:
        term.pay(ph, amount, **kw)
    # A payment taken (and signed) at another terminal, uploaded by this one.
    other = terminal(TID2)
    other.pay(phone(issuer), 100)
    term.journal.append((term.next_id, other.journal[0][1]))
    term.next_id += 1
    # Corrupt records are stored flagged (the terminal cannot mend them; the
    # acquirer keeps the evidence) and acknowledged.
    term.journal.append((term.next_id, os.urandom(300)))
    term.journal.append((term.next_id + 1, term.journal[0][1][:-7]))
    term.next_id += 2
    ack, _ = acq.sync(term)
    assert ack == term.next_id - 1
    got = [r["reason"] for r in acq.ledger()]
    # The time-in-future record (T0 + 3600) makes every later one's clock go back.
    assert got == [c[3] for c in cases] + ["terminal-mismatch,clock-went-back", "malformed", "malformed"]
    statuses = {r["status"] for r in acq.ledger()[1:]}
    assert statuses == {"flagged"} and acq.ledger()[0]["status"] == "ok"


def test_hostile_uploads_get_a_4xx_and_change_nothing(pki_dir, db_url, issuer):
    acq = Acquirer(pki_dir, db_url, [issuer])
    term = terminal()
    p = phone(issuer)
    for _ in range(3):
        term.pay(p, 10)
    acq.sync(term)
    for _ in range(2):
        term.pay(p, 10)
    good = term.body()
    before = (acq.ledger(), acq.db.terminals())
    rnd = random.Random(7)
    bodies = [good[:n] for n in sorted(rnd.sample(range(len(good)), 40))]          # truncated
    bodies += [bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 3000))) for _ in range(40)]
    bodies += [b"OPU1" + bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 500))) for _ in range(40)]
    bodies += [good + b"\x00", good[:28] + b"\x00\x41" + good[30:],                 # trailing byte, count 65
               good[:34] + b"\x00\x00" + good[36:],                                 # a zero-length record
               good[:34] + b"\x06\x01" + good[36:],                                 # a record over 1536 bytes
               wire.encode_upload(term.pending()[::-1], after=3),                   # ids out of order
               wire.encode_upload(term.pending()[1:], after=4)]                     # after above the ack
    statuses = set()
    for b in bodies:
        r = acq.post(TID1, b)
        assert 400 <= r.status_code < 500, (r.status_code, b[:40])
        assert r.json()["error"] in ("malformed", "gap"), r.text
        statuses.add(r.status_code)
    assert statuses == {400, 409}
    # Oversized: refused from its Content-Length alone, and when it streams.
    r = acq.post(TID1, b"\x00" * (wire.MAX_BODY + 1))
    assert r.status_code == 413 and r.json()["error"] == "too-large"
    r = acq.post(TID1, [good[:30], b"\x00" * 70000])  # chunked: no Content-Length
    assert r.status_code == 411 and r.json()["error"] == "length-required"
    assert acq.client(TID1).get("/v1/upload").status_code == 405
    assert (acq.ledger(), acq.db.terminals()) == before
    r = acq.post(TID1, good)
    assert r.status_code == 200 and r.json()["ack"] == 5


def test_unknown_and_revoked_terminals_are_refused(pki_dir, db_url, issuer, tmp_path):
    acq = Acquirer(pki_dir, db_url, [issuer])
    term = terminal()
    term.pay(phone(issuer), 10)
    body = term.body()
    assert acq.post(None, body).json() == {"error": "unknown-terminal", "detail": "no client certificate"}
    # A certificate that another CA issued, and one whose CN is not a terminal id.
    rogue_ca = pki.create_ca(tmp_path / "rogue")
    rogue = pki.terminal_cert(rogue_ca, tmp_path / "rogue", TID1).files["cert_pem"].read_text()
    r = acq.post(TID1, body, cert_pem=rogue)
    assert r.status_code == 403 and r.json()["error"] == "unknown-terminal"
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID
    ca = pki.load_ca(pki_dir)
    odd = pki.terminal_cert(ca, tmp_path, TID1)
    bad_cn = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "till-7")]))
              .issuer_name(ca.cert.subject).public_key(odd.key.public_key()).serial_number(7)
              .not_valid_before(odd.cert.not_valid_before_utc).not_valid_after(odd.cert.not_valid_after_utc)
              .sign(ca.key, hashes.SHA256()))
    from cryptography.hazmat.primitives.serialization import Encoding
    r = acq.post(TID1, body, cert_pem=bad_cn.public_bytes(Encoding.PEM).decode())
    assert r.status_code == 403 and "not a terminal id" in r.json()["detail"]
    assert acq.ledger() == []
    # Revoked by fingerprint: that certificate only; a new one works.
    cert = acq.cert(TID1)
    assert cli.revoke_main(["--db", db_url, "--fingerprint", cert.fingerprint, "--reason", "lost"],
                           out=lambda s: None) == 0
    r = acq.post(TID1, body)
    assert r.status_code == 403 and r.json()["error"] == "revoked"
    fresh = pki.terminal_cert(ca, tmp_path / "new", TID1).files["cert_pem"].read_text()
    assert acq.post(TID1, body, cert_pem=fresh).status_code == 200
    # Revoked by terminal id: every certificate it has.
    assert cli.revoke_main(["--db", db_url, "--terminal", TID1], out=lambda s: None) == 0
    r = acq.post(TID1, body, cert_pem=fresh)
    assert r.status_code == 403 and r.json()["error"] == "revoked"
    listed = []
    assert cli.revoke_main(["--db", db_url, "--list"], out=listed.append) == 0
    assert sorted(json.loads(x)["kind"] for x in listed) == ["fingerprint", "terminal"]
    # A config that lists its terminals refuses the others.
    acq2 = Acquirer(pki_dir, db_url, [issuer], terminals={TID2: {"merchant_id": "MARKET-7"}})
    r = acq2.post(TID2, body)
    # TID1's payment, uploaded again by TID2: not its own, and a second use of the counter.
    assert r.status_code == 200 and acq2.db.ledger(TID2)[0]["reason"] == "terminal-mismatch,double-spend"
    assert acq2.post("5445524d30303039", body).json()["error"] == "unknown-terminal"


def test_ledger_cli_prints_one_json_object_per_payment(pki_dir, db_url, issuer, capsys):
    acq = Acquirer(pki_dir, db_url, [issuer])
    term = terminal()
    p = phone(issuer)
    term.pay(p, 1250, "T-1")
    term.pay(ws.Phone(issuer, device_key=p.key, credential=p.credential, counter=0, hints=False), 99)
    acq.sync(term)
    lines = []
    assert cli.ledger_main(["--db", db_url], out=lines.append) == 0
    rows = [json.loads(x) for x in lines]
    need = {"terminal_id", "record_id", "wallet_id", "counter", "amount", "currency", "merchant_id", "status", "reason"}
    assert all(need <= set(r) for r in rows) and len(rows) == 2
    # The clone reused counter 1: both payments are flagged, the first one afterwards.
    assert [(r["amount"], r["counter"], r["status"], r["reason"]) for r in rows] == \
        [(1250, 1, "flagged", "double-spend"), (99, 1, "flagged", "double-spend")]
    assert rows[0]["reference"] == "T-1" and rows[0]["merchant_id"] == "MARKET-7"
    term.pay(p, 5)
    acq.sync(term)
    flagged = []
    assert cli.ledger_main(["--db", db_url, "--flagged"], out=flagged.append) == 0
    assert [json.loads(x)["record_id"] for x in flagged] == [1, 2]
    assert cli.ledger_main(["--db", "mysql://x"], out=flagged.append) == 1


def test_a_stalled_or_dropped_body_stores_nothing(pki_dir, db_url, issuer, monkeypatch):
    import asyncio
    acq = Acquirer(pki_dir, db_url, [issuer])
    term = terminal()
    term.pay(phone(issuer), 10)
    body = term.body()
    app = testing.asgi_with_client_cert(acq.app, acq.cert(TID1).files["cert_pem"].read_text())
    monkeypatch.setattr(app_mod, "BODY_TIMEOUT_S", 0.2)

    def call(after_first):
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "https", "path": "/v1/upload", "raw_path": b"/v1/upload", "query_string": b"",
                 "root_path": "", "headers": [(b"content-length", str(len(body)).encode())],
                 "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 443)}
        sent, out = [], []

        async def receive():
            if not sent:
                sent.append(1)
                return {"type": "http.request", "body": body[:20], "more_body": True}
            return await after_first()

        async def send(m):
            out.append(m)
        asyncio.run(app(scope, receive, send))
        return out[0]["status"], json.loads(out[1]["body"])

    async def stall():
        await asyncio.sleep(3600)

    async def drop():
        return {"type": "http.disconnect"}
    assert call(stall) == (408, {"error": "timeout", "detail": "body not received within 0.2 s"})
    assert call(drop)[0] == 400
    assert acq.ledger() == [] and acq.db.terminals() == []
    assert acq.sync(term)[0] == 1


def test_test_faults_answer_500_before_and_after_the_commit(pki_dir, db_url, issuer, tmp_path):
    from host_tools.receiver import faults
    acq = Acquirer(pki_dir, db_url, [issuer])
    assert acq.receiver.faults is None  # off unless asked for (offpay receiver --fault-file)
    ff = tmp_path / "faults"
    faults.add(ff, "500-before", TID2)
    t1, t2, p = terminal(TID1), terminal(TID2), phone(issuer)
    t1.pay(p, 10)
    assert acq.sync(t1)[0] == 1 and faults.pending(ff) == 1
    acq.receiver.faults = faults.FaultFile(ff)
    t1.pay(p, 11)
    assert acq.sync(t1)[0] == 2 and faults.pending(ff) == 1  # the line is for another terminal
    t2.pay(p, 20)
    t2.pay(p, 21)
    body = t2.body()
    r = acq.post(TID2, body)
    assert (r.status_code, r.json()["error"]) == (500, "internal") and faults.pending(ff) == 0
    assert [x["terminal_id"] for x in acq.ledger()] == [TID1] * 2  # before the commit: nothing stored
    faults.add(ff, "500-after")  # any terminal
    r = acq.post(TID2, body)
    assert (r.status_code, r.json()["error"]) == (500, "internal")
    assert [x["record_id"] for x in acq.db.ledger(TID2)] == [1, 2]
    assert {t["terminal_id"]: t["ack"] for t in acq.db.terminals()} == {TID1: 2, TID2: 2}
    # The terminal heard no ack and sends the same batch again: stored once, acknowledged.
    assert acq.sync(t2)[0] == 2 and len(acq.ledger()) == 4 and faults.pending(ff) == 0


def test_missing_postgresql_skips_here_but_fails_in_ci(monkeypatch):
    monkeypatch.setattr(testing, "pg_bin_dir", lambda: None)
    monkeypatch.delenv(testing.REQUIRE_PG, raising=False)
    with pytest.raises(pytest.skip.Exception, match="POS_REQUIRE_PG=1"):
        testing.postgres_for_tests()
    monkeypatch.setenv(testing.REQUIRE_PG, "1")  # what .ci/run sets
    with pytest.raises(pytest.fail.Exception, match="not found"):
        testing.postgres_for_tests()
