# Replays wallet answers (made by the host's wallet simulator) through the
# firmware's offline rules; prints one decision per tap. Driven by tests/test_rules.py.
# A tap {"sync": true} acknowledges every record so far (offline spend restarts);
# {"reboot": true} starts a new Verifier and rebuilds it from the journal with
# app.restore, as a power cut and a boot would. A tap with "byref" carries an
# answer by reference (PROTOCOL.md 5.7): its first `first` bytes arrive before a
# 61 xx, where the terminal asks Verifier.held() whether to stop, then
# Verifier.unreference() gives the version-1 response that check() decides on
# and the journal record keeps.
import json
import sys
from pos import app, reason, rules, tlv


class Journal:
    """The journal's restore interface: records (rid, payload) and the upload cursor."""

    def __init__(self):
        self.recs = []
        self.synced = 0

    def records(self):
        return iter(self.recs)

    def cursor(self):
        return self.synced


def record(req, resp):
    # The payload terminal._persist writes: 41 request, 42 response, 43 reference.
    buf = bytearray(1400)
    pos = tlv.put(buf, 0, 0x41, req)
    pos = tlv.put(buf, pos, 0x42, resp)
    pos = tlv.put(buf, pos, 0x43, b"R")
    return bytes(buf[:pos])


def main(path):
    with open(path) as f:
        sc = json.load(f)
    policy = rules.Policy.from_config(sc["policy"])
    cap = sc.get("capacity", 512)
    v = rules.Verifier(policy, rules.WalletTable(cap))
    journal = Journal()
    for tap in sc["taps"]:
        if tap.get("sync"):
            v.table.reset_spend()
            journal.synced = len(journal.recs)
            print("SYNC")
            continue
        if tap.get("reboot"):
            v = rules.Verifier(policy, rules.WalletTable(cap))
            print("REBOOT", app.restore(v, journal)[0])  # (records restored, newest time)
            continue
        req = rules.Request()
        req.amount = tap["amount"]
        req.currency = tap["currency"]
        req.time = tap["time"]
        req.data = memoryview(bytes.fromhex(tap["request"]))
        resp = bytes.fromhex(tap["response"])
        how = ""
        if tap.get("byref"):
            first = memoryview(resp)[:tap.get("first", 109)]
            stopped = len(first) < len(resp) and v.held(first)
            how = " held" if stopped else " sent"
            n = len(first) if stopped else len(resp)
            buf = bytearray(1200)  # apdu.Chained's buffer, the answer in front
            buf[:n] = memoryview(resp)[:n]
            r, resp = v.unreference(buf, n, stopped)
            if r:
                print(reason.name(r), "-" + how)
                continue
            resp = bytes(resp)
            if tap.get("expect_response"):  # the record response the host expects
                assert resp == bytes.fromhex(tap["expect_response"]), "record response differs"
        r = v.check(req, resp)
        if r == reason.APPROVED:
            journal.recs.append((len(journal.recs) + 1, record(req.data, resp)))
            v.commit(v.cred.wallet_id, v.counter, req.amount)
        print(reason.name(r), ("hit" if v.cache_hit else "miss") + how)


main(sys.argv[1])
