"""The uplink (firmware/pos/uplink.py, bundle.py, clock.py) in the unix port
against a real HTTPS receiver with client-certificate checks
(tests/uplink_receiver.py): batches and acks, the receiver's failures, a
hostile receiver, bad bundles, and the clock and bundle across reboots."""
import json

import pytest

from conftest import ROOT, run_mp
from uplink_receiver import Receiver

BOARD = ROOT / "boards" / "unix"
SESSION = ROOT / "tests" / "mp" / "uplink_session.py"
TID = "5445524d30303031"
FAST = {"connect_ms": 1000, "tls_ms": 3000, "io_ms": 700, "exchange_ms": 4000,
        "backoff_ms": [100, 400], "poll_ms": 20, "quiet_ms": 0, "time_refresh_s": 0}


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    from host_tools import pki
    out = tmp_path_factory.mktemp("pki")
    paths = pki.init(out)
    term = pki.terminal_cert(pki.load_ca(out), out, TID)
    other = pki.init(out / "other")  # a CA the terminal does not trust
    return {"paths": paths, "term": term, "other": other,
            "update_key": pki.load_key(paths["update_key"]), "pki": pki, "out": out}


@pytest.fixture
def rcv(pki):
    p = pki["paths"]
    r = Receiver(p["server_cert"], p["server_key"], p["ca"], pki["update_key"], TID)
    yield r
    r.close()


def cfg(pki, url):
    t = pki["term"].files
    return {"terminal_id": TID, "merchant_id": "M1", "currency": "EUR",
            "update_key": pki["paths"]["update_key_public"],
            "uplink": {"url": url, "ca": open(pki["paths"]["ca"]).read(),
                       "cert": t["cert_pem"].read_text(), "key": t["key_pem"].read_text()}}


def session(tmp_path, pki, url, steps, opts=None, image="flash.img"):
    sc = {"cfg": cfg(pki, url), "image": str(tmp_path / image), "opts": dict(FAST, **(opts or {})),
          "steps": steps}
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(sc))
    r = run_mp(SESSION, path, path=[BOARD], heap="512k", timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    res = [json.loads(ln[2:]) for ln in r.stdout.splitlines() if ln.startswith("R ")]
    assert len(res) == len(steps), out
    return res, out


def test_batches_and_ack_trim_the_journal(tmp_path, pki, rcv):
    # 100 records of 400 bytes: more than one batch holds (64 records, 16 KB).
    res, out = session(tmp_path, pki, rcv.url, [
        {"do": "append", "n": 100, "size": 400}, {"do": "sync"}, {"do": "sync"}, {"do": "sync"},
        {"do": "sync"}])
    assert [r["ok"] for r in res[1:]] == [True] * 4, out
    b1, b2, b3, b4 = rcv.requests
    assert b1["after"] == 0 and b1["rids"] == list(range(1, len(b1["rids"]) + 1))
    assert 30 + 406 * len(b1["rids"]) <= 16384 < 30 + 406 * (len(b1["rids"]) + 1)
    assert b2["after"] == b1["rids"][-1] and b2["rids"][0] == b1["rids"][-1] + 1
    assert b3["rids"][-1] == 100 and b4["rids"] == [] and b4["after"] == 100
    assert sorted(rcv.held) == list(range(1, 101))
    assert all(rcv.held[i].startswith(b"%d:" % i) for i in rcv.held)
    assert res[1]["cursor"] == b1["rids"][-1] and res[3]["cursor"] == 100 and res[3]["pending"] == 0
    assert res[4]["acks"] == [b1["rids"][-1], b2["rids"][-1], 100]  # on_ack once per new ack
    # Mutual TLS: the receiver saw the terminal's certificate; the request is
    # the documented one.
    assert {r["cn"] for r in rcv.requests} == {TID}
    assert b1["line"] == "POST /v1/upload HTTP/1.1" and b1["host"] == "127.0.0.1:%d" % rcv.port
    # Nothing was ever malformed and every bundle was taken: version 1, time.
    assert rcv.errors == [] and res[1]["version"] == 1 and res[1]["bundles"] == [1]
    assert res[1]["acq"] == rcv.time and res[4]["bundles"] == [1]


def test_ack_is_bounded_by_the_batch_and_the_cursor(tmp_path, pki, rcv):
    rcv.script = [{"ack": 10}, {"ack": 50}, {"ack": 4}]
    res, out = session(tmp_path, pki, rcv.url, [
        {"do": "append", "n": 20, "size": 100}, {"do": "sync"},
        {"do": "append", "n": 5, "size": 100}, {"do": "sync"}, {"do": "sync"}])
    # A receiver acking less than it got: the terminal trims to its ack only.
    assert res[1]["cursor"] == 10 and res[1]["pending"] == 10
    # Acking beyond the batch (ids 11..25) never trims past what was sent.
    assert rcv.requests[1]["after"] == 10 and rcv.requests[1]["rids"] == list(range(11, 26))
    assert res[3]["cursor"] == 25 and "beyond the batch" in out
    # An ack below the cursor changes nothing.
    assert res[4]["cursor"] == 25 and res[4]["acks"] == [10, 25]


def test_receiver_failures_keep_every_record(tmp_path, pki, rcv):
    rcv.script = [{"do": "500-before"}, {"do": "500-after"}, {"do": "reset-mid-body"},
                  {"do": "reset-mid-response"}, {"do": "stall", "s": 2},
                  {"do": "early", "status": 403, "error": "revoked"}]
    res, out = session(tmp_path, pki, rcv.url, [{"do": "append", "n": 30, "size": 300}]
                       + [{"do": "sync"}] * 7)
    assert [r["ok"] for r in res[1:]] == [False] * 6 + [True], out
    # A refusal sent on the head alone is heard, and backs off long (max 400 ms here).
    assert res[6]["err"] == "status 403 revoked" and "status 403 revoked (retry in" in out
    assert int(out.split("status 403 revoked (retry in ")[1].split()[0]) >= 200
    assert all(r["cursor"] == 0 for r in res[1:6])  # no ack seen: nothing trimmed
    assert "status 500" in res[1]["err"] and "status 500" in res[2]["err"]
    assert res[5]["err"] == "timeout" and res[5]["ms"] < 1500  # io_ms 700
    # 500 before commit stored nothing; 500 after commit and the cut response
    # stored the batch, so the retries send the same ids again: idempotent.
    assert res[7]["cursor"] == 30 and sorted(rcv.held) == list(range(1, 31))
    assert [r["after"] for r in rcv.requests] == [0] * len(rcv.requests)


def test_refused_connection_and_backoff(tmp_path, pki, rcv):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there
    res, out = session(tmp_path, pki, "https://127.0.0.1:%d/v1/upload" % port, [
        {"do": "append", "n": 3}, {"do": "sync"}, {"do": "run", "ms": 1500}],
        opts={"backoff_ms": [100, 400]})
    assert res[1]["ok"] is False and res[1]["err"].startswith("net")
    # Backoff: delays 50-100, 100-200, 200-400, then 200-400 each: within
    # 1.5 s of run() at most 1 + ~6 further attempts, and at least 3.
    delays = [int(ln.rsplit("retry in ", 1)[1].split()[0]) for ln in out.splitlines() if "retry in" in ln]
    assert 4 <= len(delays) <= 9, out
    assert 50 <= delays[0] <= 100 and 100 <= delays[1] <= 200 and all(200 <= d <= 400 for d in delays[2:])


def test_hostile_receiver_costs_bounded_memory(tmp_path, pki, rcv):
    # heap 512k for the whole session; a receiver streaming megabytes is cut at
    # its 16 KB cap, a 50 MB Content-Length is refused before any body is read.
    rcv.script = [{"do": "garbage", "n": 100000}, {"do": "huge-length"}, {"do": "huge-stream", "mb": 4},
                  {"do": "huge-head"}, {"do": "slow", "gap": 0.2}]
    res, out = session(tmp_path, pki, rcv.url, [{"do": "append", "n": 2}] + [{"do": "sync"}] * 6)
    errs = [r["err"] for r in res[1:6]]
    assert errs[0] in ("http status-line", "http head-too-large"), out
    assert errs[1] == "http body-too-large" and errs[2] == "http body-too-large"
    assert errs[3] == "http head-too-large"
    assert errs[4] == "timeout" and res[5]["ms"] < 5000  # a trickle hits the exchange deadline
    assert res[6]["ok"] and res[6]["cursor"] == 2


def test_bad_bundles_are_refused_and_the_old_one_kept(tmp_path, pki, rcv):
    other = pki["pki"].load_key(pki["other"]["update_key"])
    rcv.script = [{}, {"bundle": {"version": 3, "deny": {"wallets": ["11" * 16], "serials": []}}},
                  {"bundle": {"version": 4}, "key": other},
                  {"bundle": {"version": 4}, "flip": True},
                  {"bundle": {"version": 2}},
                  {"bundle": {"version": 5, "nonce": "00" * 16}},
                  {"bundle": {"version": 5, "terminal_id": "00" * 8}},
                  {"bundle": {"version": 5, "deny": "all"}},
                  {"bundle": {"version": 3, "time": rcv.time + 100}}]
    res, out = session(tmp_path, pki, rcv.url, [{"do": "sync"}] * 9 + [{"do": "reboot"}])
    assert all(r["ok"] for r in res[:9]), out
    assert [r["version"] for r in res[:9]] == [1, 3, 3, 3, 3, 3, 3, 3, 3]
    assert res[8]["bundles"] == [1, 3]  # on_bundle only for new content
    for why in ("signature", "version", "nonce", "terminal", "malformed"):
        assert "bundle refused: %s" % why in out
    assert out.count("bundle refused: signature") == 2  # other key, and bytes changed after signing
    # The same version still sets the time; the clock never went back.
    assert res[7]["acq"] == rcv.time and res[8]["acq"] == rcv.time + 100
    # After a reboot the stored bundle (version 3) is loaded and verified again.
    assert res[9]["version"] == 3 and res[9]["acq"] == rcv.time + 100
    assert res[9]["now"] >= rcv.time + 100


def test_receiver_outside_the_pinned_ca_is_refused(tmp_path, pki):
    o = pki["other"]
    r = Receiver(o["server_cert"], o["server_key"], pki["paths"]["ca"], pki["update_key"], TID)
    try:
        res, out = session(tmp_path, pki, r.url, [{"do": "append", "n": 1}, {"do": "sync"}])
    finally:
        r.close()
    assert res[1]["ok"] is False and res[1]["cursor"] == 0 and r.requests == []


def test_yields_to_a_charge_mid_exchange(tmp_path, pki, rcv):
    rcv.script = [{"do": "slow", "gap": 0.05}]
    res, out = session(tmp_path, pki, rcv.url, [
        {"do": "append", "n": 5}, {"do": "sync", "busy_after_ms": 100}, {"do": "sync"}])
    assert res[1]["ok"] is False and "yielded to a charge" in out and res[1]["failures"] == 0
    assert res[1]["ms"] < 200 and res[1]["cursor"] == 0
    assert res[2]["ok"] and res[2]["cursor"] == 5


def test_task_uploads_when_the_link_is_up_and_the_terminal_quiet(tmp_path, pki, rcv):
    res, out = session(tmp_path, pki, rcv.url, [
        {"do": "append", "n": 70, "size": 300},
        {"do": "link", "up": False}, {"do": "run", "ms": 400},
        {"do": "link", "up": True}, {"do": "busy", "ms": 100}, {"do": "run", "ms": 350},
        {"do": "run", "ms": 1500}], opts={"quiet_ms": 400})
    assert res[2]["exchanges"] == 0 and res[2]["pending"] == 70  # the link is down
    # Busy until 100 ms into the run, then 400 ms of quiet needed: nothing yet.
    assert res[5]["exchanges"] == 0
    # Then the backlog goes, batch after batch, without anyone calling sync().
    assert res[6]["cursor"] == 70 and res[6]["exchanges"] >= 2 and res[6]["failures"] == 0


def test_same_content_is_verified_only_when_the_time_is_wanted(tmp_path, pki, rcv):
    # Each verify is an ES256 check (150-430 ms on the ESP32): a bundle with
    # the held version is checked for its time only when the last one is old.
    rcv.script = [{}, {"bundle": {"time": rcv.time + 60}}, {"bundle": {"time": rcv.time + 90}},
                  {"bundle": {"version": 2, "time": rcv.time + 120}}, {"bundle": {"version": 2, "nonce": "00" * 16}}]
    res, out = session(tmp_path, pki, rcv.url, [{"do": "sync"}] * 5, opts={"time_refresh_s": 3600})
    assert [r["verified"] for r in res] == [1, 1, 1, 2, 2], out
    assert [r["acq"] for r in res] == [rcv.time] * 3 + [rcv.time + 120] * 2
    assert res[3]["bundles"] == [1, 2] and "bundle refused: nonce" in out  # still checked, unverified


def test_against_the_real_receiver(tmp_path):
    # The firmware's uplink and host_tools/receiver agree on the wire: mutual
    # TLS with offpay's PKI, the batch body, the ack, and a bundle whose
    # signature (over the JSON-decoded string) verifies with the pinned key.
    import subprocess
    import sys
    testing = pytest.importorskip("host_tools.receiver.testing")
    db = "sqlite:///" + str(tmp_path / "rx.db")
    rx = testing.start_receiver(tmp_path, db)
    try:
        t = rx.terminal_cert(TID).files
        c = {"terminal_id": TID, "update_key": rx.update_key,
             "uplink": {"url": rx.url + "/v1/upload", "ca": rx.ca_pem.read_text(), "cert": t["cert_pem"].read_text(),
                        "key": t["key_pem"].read_text()}}
        sc = {"cfg": c, "image": str(tmp_path / "f.img"), "opts": FAST,
              "steps": [{"do": "append", "n": 30, "size": 300}, {"do": "sync"}, {"do": "sync"},
                        {"do": "reboot"}, {"do": "append", "n": 2, "size": 50}, {"do": "sync"}]}
        (tmp_path / "sc.json").write_text(json.dumps(sc))
        r = run_mp(SESSION, tmp_path / "sc.json", path=[BOARD], heap="512k", timeout=120)
        out = r.stdout + r.stderr
        res = [json.loads(ln[2:]) for ln in r.stdout.splitlines() if ln.startswith("R ")]
        assert r.returncode == 0 and len(res) == 6, out + rx.log_path.read_text()[-3000:]
        assert [res[i]["ok"] for i in (1, 2, 5)] == [True] * 3, out
        assert res[1]["cursor"] == 30 and res[1]["version"] == 1 and res[1]["bundles"] == [1]
        assert "bundle refused" not in out and res[1]["acq"] > 0
        assert res[3]["version"] == 1 and res[5]["cursor"] == 32  # kept across a reboot; ids go on
        led = subprocess.run([sys.executable, "-m", "host_tools", "ledger", "--db", db], cwd=ROOT,
                             capture_output=True, text=True, timeout=60)
        rows = [json.loads(ln) for ln in led.stdout.splitlines()]
        # Not payments (filler bytes): stored flagged, acknowledged all the same.
        assert sorted(x["record_id"] for x in rows) == list(range(1, 33))
        assert {x["terminal_id"] for x in rows} == {TID} and {x["status"] for x in rows} == {"flagged"}
    finally:
        rx.stop()


def test_power_cut_while_storing_keeps_the_old_bundle_or_the_new(tmp_path, pki):
    # Every flash operation of Store.save() and Clock.save() in turn is the
    # one the power dies in; after each, the chip must hold a verified
    # bundle (old or new) and a clock no earlier than the old floor. (littlefs
    # commits a file only at close, so the temp-and-rename is what keeps this
    # true on a file system that does not; removing the old file first, say,
    # fails here: 27 of 28 cuts then leave no bundle.)
    from uplink_receiver import sign
    key = pki["update_key"]

    def signed(version):
        t = json.dumps({"v": 1, "version": version, "terminal_id": TID, "nonce": "00" * 16,
                        "time": 1764000000, "deny": {"wallets": ["11" * 16] * (40 * version)},
                        "issuers": [], "risk": {}}, separators=(",", ":"))
        return [t, sign(key, t.encode())]

    arg = tmp_path / "a.json"
    arg.write_text(json.dumps({"key": pki["paths"]["update_key_public"], "terminal_id": TID,
                               "old": signed(1), "new": signed(2), "dir": str(tmp_path)}))
    r = run_mp(ROOT / "tests" / "mp" / "store_powercut.py", arg, path=[BOARD], heap="256k", timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    res = {x["what"]: x for x in (json.loads(ln[2:]) for ln in r.stdout.splitlines() if ln.startswith("R "))}
    b, c = res["bundle"], res["clock"]
    assert b["cuts"] >= 5 and set(b["seen"]) == {"1", "2"}, out  # never None: never lost, never torn
    assert "refused" not in out
    assert c["cuts"] >= 1 and set(c["seen"]) <= {"1764000000", "1764003600"}, out
