"""Byte-level protocol test vectors from fixed keys (PROTOCOL.md, "Test vectors").

Device and ES256 issuer keys are derived from fixed labels, ECDSA signatures are
deterministic (RFC 6979) and RSA PKCS#1 v1.5 is deterministic by nature, so the
output is identical on every run. `python -m host_tools vectors` rewrites
tests/vectors/protocol_v1.json; tests check both that it is reproducible and
that the firmware, in the unix port, accepts it byte for byte.
"""
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools import wallet_sim as ws

VECTORS = Path(__file__).resolve().parents[1] / "tests" / "vectors"
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def fixed_ec_key(label):
    d = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (_N - 1) + 1
    return ec.derive_private_key(d, ec.SECP256R1()), d


def fixed_rsa_key():
    pem = (VECTORS / "issuer_rsa2048_TEST_ONLY.pem").read_bytes()
    return serialization.load_pem_private_key(pem, password=None)


TERMINAL = {"terminal_id": "5445524d30303031", "merchant_id": "4d45524348414e542d3432",
            "amount": 1250, "currency": 978, "un": "00112233445566778899aabbccddeeff",
            "time": 1764000000, "seq": 7}


def vector(issuer_alg):
    if issuer_alg == "ES256":
        ikey, _ = fixed_ec_key("offpay test issuer ES256")
        issuer = ws.Issuer(kid=bytes.fromhex("4953535545523031"), alg="ES256", key=ikey)
    else:
        issuer = ws.Issuer(kid=bytes.fromhex("4953535545523032"), alg="RS256", key=fixed_rsa_key())
    issuer.not_before, issuer.not_after = 1700000000, 1900000000
    dkey, dscalar = fixed_ec_key("offpay test device 1")
    phone = ws.Phone(issuer, device_key=dkey, counter=41, deterministic=True,
                     wallet_id=bytes.fromhex("57414c4c45542d303030303030303031"),
                     serial=bytes.fromhex("0000000000000101"), tap_limit=5000,
                     offline_limit=20000, currency=978, not_before=1750000000,
                     not_after=1800000000)
    t = TERMINAL
    apdu, data = ws.authorize_apdu(bytes.fromhex(t["terminal_id"]), bytes.fromhex(t["merchant_id"]),
                                   t["amount"], t["currency"], bytes.fromhex(t["un"]),
                                   t["time"], t["seq"])
    exchanges = [(ws.SELECT_APDU, phone.transceive(ws.SELECT_APDU))]
    resp = phone.transceive(apdu)
    exchanges.append((apdu, resp))
    while resp[-2] == 0x61:
        get = bytes((0x00, 0xC0, 0x00, 0x00, resp[-1]))
        resp = phone.transceive(get)
        exchanges.append((get, resp))
    rdata = b"".join(r[:-2] for _, r in exchanges[1:])
    f = ws.parse_tlv(rdata)
    cred = f[0x31]
    return {
        "name": "issuer %s, device ES256, approved" % issuer_alg,
        "issuer": issuer.config(),
        "device": {"private_scalar": "%064x" % dscalar, "public_key": ws.es256_public(dkey).hex()},
        "credential": cred.hex(),
        "credential_signed_bytes": (ws.CRED_DOMAIN + cred[:len(cred) - len(ws.tlv(0x1F, ws.parse_tlv(cred)[0x1F]))]).hex(),
        "credential_hash": hashlib.sha256(cred).hexdigest(),
        "terminal": t,
        "exchanges": [{"command": c.hex(), "response": r.hex()} for c, r in exchanges],
        "authorize_data": data.hex(),
        "response_data": rdata.hex(),
        "counter": 42,
        "signed_message": ws.auth_message(data, 42, ws.ALG_ES256, cred).hex(),
        "device_signature": f[0x34].hex(),
        "expect": "APPROVED",
    }


def build():
    return {"protocol": 1, "vectors": [vector("ES256"), vector("RS256")]}


def main(argv=None):
    out = VECTORS / "protocol_v1.json"
    out.write_text(json.dumps(build(), indent=1) + "\n")
    print("wrote", out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
