# Replays wallet answers (made by the host's wallet simulator) through the
# firmware's offline rules; prints one decision per tap. Driven by tests/test_rules.py.
import json
import sys
from pos import reason, rules


def main(path):
    with open(path) as f:
        sc = json.load(f)
    v = rules.Verifier(rules.Policy.from_config(sc["policy"]), rules.WalletTable(sc.get("capacity", 512)))
    for tap in sc["taps"]:
        if tap.get("sync"):
            v.table.reset_spend()
            print("SYNC")
            continue
        req = rules.Request()
        req.amount = tap["amount"]
        req.currency = tap["currency"]
        req.time = tap["time"]
        req.data = memoryview(bytes.fromhex(tap["request"]))
        r = v.check(req, bytes.fromhex(tap["response"]))
        if r == reason.APPROVED:
            v.commit(v.cred.wallet_id, v.counter, req.amount)
        print(reason.name(r), "hit" if v.cache_hit else "miss")


main(sys.argv[1])
