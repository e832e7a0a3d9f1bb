# Checks the fixed-key protocol vectors byte for byte with the firmware's own code.
import json
import sys
from pos import apdu, reason, rules, token


def check(v):
    t = v["terminal"]
    buf = bytearray(96)
    n, data = apdu.build_authorize(buf, bytes.fromhex(t["terminal_id"]), bytes.fromhex(t["merchant_id"]),
                                   t["amount"], t["currency"], bytes.fromhex(t["un"]), t["time"], t["seq"])
    ex = v["exchanges"]
    assert bytes(buf[:n]) == bytes.fromhex(ex[1]["command"]), "AUTHORIZE command differs"
    assert apdu.SELECT == bytes.fromhex(ex[0]["command"]), "SELECT differs"
    assert apdu.parse_select(bytes.fromhex(ex[0]["response"])) is None
    script = [(bytes.fromhex(e["command"]), bytes.fromhex(e["response"])) for e in ex[1:]]

    def xfer(cmd):
        want, resp = script.pop(0)
        assert bytes(cmd) == want, "terminal sent %s, vector has %s" % (bytes(cmd).hex(), want.hex())
        return resp
    sw, rdata = apdu.Chained().exchange(xfer, buf[:n])
    assert sw == 0x9000 and not script
    assert bytes(rdata) == bytes.fromhex(v["response_data"])
    cred = token.Credential(bytes.fromhex(v["credential"]))
    assert cred.signed_bytes() == bytes.fromhex(v["credential_signed_bytes"])
    import hashlib
    h = hashlib.sha256(cred.raw).digest()
    assert h == bytes.fromhex(v["credential_hash"])
    msg = bytearray(token.MAX_SIGNED)
    m = token.signed_message(msg, data, v["counter"], token.ALG_ES256, h)
    assert bytes(msg[:m]) == bytes.fromhex(v["signed_message"]), "signed message differs"
    ver = rules.Verifier(rules.Policy.from_config({"issuers": [v["issuer"]]}))
    req = rules.Request()
    req.amount, req.currency, req.time, req.data = t["amount"], t["currency"], t["time"], data
    r = ver.check(req, rdata)
    assert reason.name(r) == v["expect"], reason.name(r)
    print("OK", v["name"])


with open(sys.argv[1]) as f:
    for v in json.load(f)["vectors"]:
        check(v)
