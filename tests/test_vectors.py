"""PROTOCOL.md test vectors: reproducible from fixed keys, valid under
`cryptography`, and accepted byte for byte by the firmware in the unix port."""
import json

from conftest import ROOT, run_mp
from host_tools import vectors
from host_tools.journal_dump import verify_signature
from host_tools import wallet_sim as ws

FILE = ROOT / "tests" / "vectors" / "protocol_v1.json"


def test_vectors_are_reproducible():
    assert json.loads(FILE.read_text()) == vectors.build()


def test_vector_signatures_verify_with_cryptography():
    for v in json.loads(FILE.read_text())["vectors"]:
        iss = v["issuer"]
        sig = ws.parse_credential(bytes.fromhex(v["credential"]))["issuer_sig"]
        assert verify_signature(iss["alg"], bytes.fromhex(iss["key"]),
                                bytes.fromhex(v["credential_signed_bytes"]), sig)
        assert verify_signature("ES256", bytes.fromhex(v["device"]["public_key"]),
                                bytes.fromhex(v["signed_message"]),
                                bytes.fromhex(v["device_signature"]))
        assert not verify_signature("ES256", bytes.fromhex(v["device"]["public_key"]),
                                    bytes.fromhex(v["signed_message"]) + b"x",
                                    bytes.fromhex(v["device_signature"]))


def test_firmware_accepts_vectors_byte_for_byte():
    r = run_mp(ROOT / "tests" / "mp" / "vectors_check.py", FILE)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("OK ") == 2, r.stdout
