# Checks protocol vectors byte for byte with the firmware's own code: the terminal
# config, the APDUs the terminal builds and follows, the signed message, and the
# decision. Input: the JSON layout of host_tools.vectors.to_json (tests/test_vectors.py
# writes the vectors it parsed out of PROTOCOL.md in that layout). A vector by
# reference (PROTOCOL.md 5.7) runs the exchange with the verifier's stop test,
# holding the credential beforehand when the vector says the terminal does, and
# rebuilds the record response byte for byte.
import hashlib
import json
import sys
from pos import apdu, reason, rules, token


def check(v):
    cfg = v["config"]
    t = v["terminal"]
    assert cfg["terminal_id"] == t["terminal_id"] and cfg["merchant_id"] == t["merchant_id"]
    byref = v["by_reference"]
    buf = bytearray(96)
    n, data = apdu.build_authorize(buf, bytes.fromhex(cfg["terminal_id"]), cfg["merchant_id"].encode(),
                                   t["amount"], cfg["currency"], bytes.fromhex(t["un"]), t["time"], t["seq"],
                                   apdu.P1_BY_REFERENCE if byref else 0)
    ex = v["exchanges"]
    assert bytes(buf[:n]) == bytes.fromhex(ex[1]["command"]), "AUTHORIZE command differs"
    assert apdu.SELECT == bytes.fromhex(ex[0]["command"]), "SELECT differs"
    select = bytes.fromhex(ex[0]["response"])
    assert apdu.parse_select(select) is None
    assert apdu.offers(select, apdu.OPT_BY_REFERENCE) == byref
    # The config as printed, parsed the way the terminal parses it at boot; a
    # small wallet table: this heap also holds the firmware compiled from source.
    ver = rules.Verifier(rules.Policy.from_config(cfg), rules.WalletTable(8))
    req = rules.Request()
    req.amount, req.currency, req.time, req.data = t["amount"], cfg["currency"], t["time"], data
    record_response = bytes.fromhex(v["record_response"])
    if v["terminal_holds"]:
        # The terminal has verified this credential before (here: this very
        # tap's record response, decided without committing it).
        assert reason.name(ver.check(req, record_response)) == v["expect"]
        assert ver.offer_reference()
    script = [(bytes.fromhex(e["command"]), bytes.fromhex(e["response"])) for e in ex[1:]]

    def xfer(cmd):
        want, resp = script.pop(0)
        assert bytes(cmd) == want, "terminal sent %s, vector has %s" % (bytes(cmd).hex(), want.hex())
        return resp
    chained = apdu.Chained()
    sw, rdata = chained.exchange(xfer, buf[:n], ver.held if byref else None)
    assert sw == 0x9000 and not script
    assert bytes(rdata) == bytes.fromhex(v["response_data"])
    assert chained.stopped == v["terminal_holds"]
    if byref:
        r, rdata = ver.unreference(chained.buf, len(rdata), chained.stopped)
        assert r == reason.APPROVED, reason.name(r)
    assert bytes(rdata) == record_response, "record response differs"
    cred = token.Credential(bytes.fromhex(v["credential"]))
    assert cred.signed_bytes() == bytes.fromhex(v["credential_signed_bytes"])
    h = hashlib.sha256(cred.raw).digest()
    assert h == bytes.fromhex(v["credential_hash"])
    msg = bytearray(token.MAX_SIGNED)
    m = token.signed_message(msg, data, v["counter"], token.ALG_ES256, h)
    assert bytes(msg[:m]) == bytes.fromhex(v["signed_message"]), "signed message differs"
    r = ver.check(req, rdata)
    assert reason.name(r) == v["expect"], reason.name(r)
    # The same answer to another challenge must not pass.
    other = bytearray(data)
    other[bytes(data).index(b"\x26\x10") + 2] ^= 1
    req.data = memoryview(other)
    r = rules.Verifier(rules.Policy.from_config(cfg), rules.WalletTable(8)).check(req, rdata)
    assert r == reason.DEVICE_SIG, reason.name(r)
    print("OK", v["name"])


with open(sys.argv[1]) as f:
    for v in json.load(f)["vectors"]:
        check(v)
