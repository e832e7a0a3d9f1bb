"""The upload fault campaign (issue 10, item 5): emulated terminals (the
firmware in the unix port) take real taps and upload through a
fault-injecting proxy (host_tools/faultproxy.py) to real receiver processes,
for 1,000 randomized sessions with power cuts mixed in; at the end the
receiver's ledger is exactly the approved payments, each once. Then the same
with two receivers on one PostgreSQL, each terminal's connections
alternating between them. tests/fault_campaign.py has the machinery.

POS_CAMPAIGN_SEED=N replays a campaign (each terminal's sessions are drawn
from the seed; the interleaving of terminals is not), POS_CAMPAIGN_SESSIONS
changes its length, POS_CAMPAIGN_TERMINALS the number of terminals (1: one
terminal's sessions alone, the closest to a replay), POS_CAMPAIGN_HEAP the
terminals' data heap (default: the 128 KB the demo and the tests give)."""
import concurrent.futures
import os
import random
import time

import pytest

from fault_campaign import Campaign, CpyTerminal, EmuTerminal
from host_tools import wallet_sim as ws
from host_tools.faultproxy import FaultProxy
from host_tools.receiver import storage, testing

NOW = int(time.time())
SESSIONS = int(os.environ.get("POS_CAMPAIGN_SESSIONS", "1000"))
TERMINALS = int(os.environ.get("POS_CAMPAIGN_TERMINALS", "12"))
HEAP = os.environ.get("POS_CAMPAIGN_HEAP")  # None: the demo's and the tests' 128 KB data heap


def seed():
    s = os.environ.get("POS_CAMPAIGN_SEED") or str(random.SystemRandom().randrange(1 << 32))
    print("fault campaign seed %s (POS_CAMPAIGN_SEED=%s reproduces it)" % (s, s))
    return s


@pytest.fixture(scope="module")
def issuer():
    return ws.Issuer(alg="ES256", not_before=NOW - 86400, not_after=NOW + 30 * 86400)


def terminal_config(rx, tid, issuer, port):
    f = rx.terminal_cert(tid).files
    return {"terminal_id": tid, "merchant_id": "MARKET-7", "currency": 978,
            "charge_timeout_ms": 2000, "removal_ms": 200, "issuers": [issuer.config()],
            "update_key": rx.update_key,
            "uplink": {"url": "https://127.0.0.1:%d/v1/upload" % port, "ca": rx.ca_pem.read_text(),
                       "cert": f["cert_pem"].read_text(), "key": f["key_pem"].read_text()}}


def backend(rx):
    host, port = rx.url.rsplit("/", 1)[-1].rsplit(":", 1)
    return host, int(port)


def campaign(tmp_path, issuer, db_url, receivers):
    ff = tmp_path / "faults"
    rxs = [testing.start_receiver(tmp_path, db_url, issuers=[issuer.config()], name="receiver%d" % i,
                                  fault_file=ff) for i in range(receivers)]
    proxies, terms = [], []
    try:
        for i in range(TERMINALS):
            proxies.append(FaultProxy([backend(rx) for rx in rxs]))

        def make(i):
            tid = "5445524d%08x" % (i + 1)
            return EmuTerminal(tmp_path / tid, terminal_config(rxs[0], tid, issuer, proxies[i].port), issuer,
                               proxies[i], heap=HEAP)
        with concurrent.futures.ThreadPoolExecutor(4) as ex:  # provisioning is mostly waiting on mpremote
            terms.extend(ex.map(make, range(TERMINALS)))
        db = storage.open_storage(db_url)
        c = Campaign(terms, proxies, ff, db, seed(), SESSIONS)
        c.run()
        n = c.check_ledger()
        s = c.summary()
        print("campaign: %d sessions in %.0f s, %d payments in the ledger; %r" % (
            s["sessions"], c.duration, n, s))
        for rx in rxs:
            assert rx.alive(), rx.log_path.read_text()[-3000:]
        return c
    finally:
        for t in terms:
            t.close()
        for px in proxies:
            px.close()
        for rx in rxs:
            rx.stop()


def check_numbers(c):
    s = c.stats
    assert s.sessions >= SESSIONS
    # Every kind of fault took effect, and power cuts happened in taps and exchanges.
    for kind in ("refuse", "reset_up", "reset_down", "ack_lost", "stall", "500-before", "500-after"):
        assert s.applied[kind] >= 1, (kind, c.stats.summary())
    assert s.cuts["tap"] >= 1 and s.cuts["exchange"] >= 1, c.stats.summary()


def test_campaign_sqlite(tmp_path, issuer):
    check_numbers(campaign(tmp_path, issuer, "sqlite:///%s/ledger.db" % tmp_path, receivers=1))


@pytest.fixture(scope="module")
def pg():
    p = testing.postgres_for_tests()
    yield p
    p.stop()


def test_campaign_two_receivers_on_postgresql(tmp_path, issuer, pg):
    c = campaign(tmp_path, issuer, pg.create_database("campaign"), receivers=2)
    check_numbers(c)
    # Each terminal's connections went to both receivers.
    for px in c.proxies:
        assert {conn.backend for conn in px.connections} == {0, 1}


# --- the campaign can fail ------------------------------------------------------------
class TrimsOn500(CpyTerminal):
    """A terminal that takes a 500 for an acknowledgement of what it sent."""

    def exchange(self, cut_after=None, during=None):
        out = super().exchange(cut_after, during)
        if out == "failed: status 500":
            self.sim.acknowledge(max([r for r, _ in self.sim.pending()[:64]] or [0]))
        return out


class ReusesIds(CpyTerminal):
    """A terminal whose record ids restart from the cursor after a power cut."""

    def power_cut(self):
        recs = super().power_cut()
        self.sim.next_id = self.sim.cursor + 1
        self.sim.journal = [(r, p) for r, p in self.sim.journal if r <= self.sim.cursor]
        return recs


class ForgetsUnheard(CpyTerminal):
    """A terminal that loses a payment it approved (never uploads it)."""

    def tap(self, k, rng, cut_last=False):
        out = super().tap(k, rng, cut_last)
        if out:
            self.sim.journal = [(r, p) for r, p in self.sim.journal if r != out[-1][0]]
        return out


@pytest.mark.parametrize("bad, why", [
    (TrimsOn500, "trimmed past the receiver's ack|trimmed on a failure|not in the ledger"),
    (ReusesIds, "not in the ledger|approved record .* twice|conflict|a clean exchange failed"),
    (ForgetsUnheard, "approved but not in the ledger|a failed exchange was taken as a success")])
def test_the_campaign_catches_a_terminal_that_loses_or_repeats_payments(tmp_path, issuer, bad, why):
    # The CPython stand-in terminal (testing.TerminalSim) behind the same
    # adapter: honest, it passes; with each bug, the campaign fails.
    db_url = "sqlite:///%s/ledger.db" % tmp_path
    ff = tmp_path / "faults"
    rx = testing.start_receiver(tmp_path, db_url, issuers=[issuer.config()], fault_file=ff)
    try:
        db = storage.open_storage(db_url)
        for cls, tid in ((CpyTerminal, "5445524d00000001"), (bad, "5445524d00000002")):
            px = FaultProxy([backend(rx)])
            try:
                c = Campaign([cls(tid, rx, px, issuer, timeout=0.5)], [px], ff, db, "7", 40, cut_rate=0.2)
                if cls is CpyTerminal:
                    c.run()
                    assert c.check_ledger() >= c.stats.approved > 20
                else:
                    with pytest.raises(AssertionError, match=why):
                        c.run()
                        c.check_ledger()
            finally:
                px.close()
    finally:
        rx.stop()
