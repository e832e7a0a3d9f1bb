"""PROTOCOL.md test vectors: reproducible from fixed keys, valid under
`cryptography`, and accepted byte for byte by the firmware in the unix port."""
import json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from conftest import ROOT, run_mp
from host_tools import vectors
from host_tools import wallet_sim as ws

FILE = ROOT / "tests" / "vectors" / "protocol_v1.json"


def test_vectors_are_reproducible():
    assert json.loads(FILE.read_text()) == vectors.build()


def test_vector_signatures_verify_with_cryptography():
    for v in json.loads(FILE.read_text())["vectors"]:
        iss = v["issuer"]
        signed = bytes.fromhex(v["credential_signed_bytes"])
        sig = ws.parse_credential(bytes.fromhex(v["credential"]))["issuer_sig"]
        key = bytes.fromhex(iss["key"])
        if iss["alg"] == "ES256":
            pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
            der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            pub.verify(der, signed, ec.ECDSA(hashes.SHA256()))
        else:
            pub = rsa.RSAPublicNumbers(65537, int.from_bytes(key, "big")).public_key()
            pub.verify(sig, signed, padding.PKCS1v15(), hashes.SHA256())
        dev = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), bytes.fromhex(v["device"]["public_key"]))
        ds = bytes.fromhex(v["device_signature"])
        der = utils.encode_dss_signature(int.from_bytes(ds[:32], "big"), int.from_bytes(ds[32:], "big"))
        dev.verify(der, bytes.fromhex(v["signed_message"]), ec.ECDSA(hashes.SHA256()))


def test_firmware_accepts_vectors_byte_for_byte():
    r = run_mp(ROOT / "tests" / "mp" / "vectors_check.py", FILE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("OK ") == 2, r.stdout
