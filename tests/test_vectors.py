"""PROTOCOL.md section 8, read out of PROTOCOL.md itself: every printed byte is
rebuilt from the printed inputs (labels, primes, fields) by the host's wallet
simulator, checked with `cryptography`, and accepted byte for byte by the
firmware in the unix port; so the document cannot go stale."""
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from conftest import ROOT, run_mp
from host_tools import vectors
from host_tools import wallet_sim as ws
from host_tools.journal_dump import verify_signature

DOC = ROOT / "PROTOCOL.md"
FILE = ROOT / "tests" / "vectors" / "protocol_v1.json"
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


@pytest.fixture(scope="module")
def printed():
    return vectors.parse_markdown(DOC.read_text())


def test_protocol_md_prints_an_es256_and_an_rs256_vector_and_two_by_reference(printed):
    algs = [v["inputs"]["issuer_alg"] for v in printed]
    assert algs == ["ES256", "RS256", "ES256", "ES256"]
    assert [v["inputs"]["key_hints"] for v in printed] == ["no", "yes", "yes", "yes"]
    assert [v["inputs"]["by_reference"] for v in printed] == ["no", "no", "yes", "yes"]
    assert [v["inputs"].get("terminal_holds") for v in printed] == [None, None, "yes", "no"]
    # Every exchange of a vector is printed, the chaining's 61 xx included; a
    # terminal that holds the credential ends on the first part's 61 xx.
    last = [v["blocks"]["exchange %d R-APDU" % (len([k for k in v["blocks"] if k.endswith("C-APDU")]))]
            for v in printed]
    assert [r[-4:-2] for r in last] == ["90", "90", "61", "90"]
    assert any(b.endswith("6100") for v in printed for k, b in v["blocks"].items() if "R-APDU" in k)
    # By reference: option 81 in the SELECT answer, P1 = 01, the hash in the
    # first part; both terminals store the same version-1 record response.
    ref = printed[2:]
    assert all(v["blocks"]["exchange 1 R-APDU"] == "010201819000" for v in ref)
    assert all(v["blocks"]["exchange 2 C-APDU"][4:6] == "01" for v in ref)
    assert all(v["blocks"]["exchange 2 C-APDU"][4:6] == "00" for v in printed[:2])
    for v in ref:
        first = bytes.fromhex(v["blocks"]["exchange 2 R-APDU"])[:-2]
        assert len(first) == ws.REF_HEAD and first[75:77] == b"\x35\x20"
        assert first[77:].hex() == v["blocks"]["credential hash"]
        rec = ws.parse_tlv(bytes.fromhex(v["blocks"]["record response"]))
        assert rec[0x31].hex() == v["blocks"]["credential"] and len(rec) == 4


def test_printed_keys_follow_from_their_labels_and_primes(printed):
    """The issuer key labels (and the RSA primes) are what the document says they
    are: the derivation rule of section 8 gives the printed keys."""
    for v in printed:
        inp, b = v["inputs"], v["blocks"]
        for who in ("issuer", "device"):
            if who == "issuer" and inp["issuer_alg"] == "RS256":
                p, q = int(b["issuer rsa prime p"], 16), int(b["issuer rsa prime q"], 16)
                assert (p * q).to_bytes(256, "big").hex() == b["issuer public key"]
                assert p.bit_length() == q.bit_length() == 1024
                pem = vectors.fixed_rsa_key().private_numbers()
                assert {pem.p, pem.q} == {p, q}  # the PEM in tests/vectors is the same key
                continue
            label = inp[who + "_label"]
            d = int.from_bytes(hashlib.sha256(label.encode()).digest(), "big") % (_N - 1) + 1
            assert "%064x" % d == b[who + " private scalar"], (who, label)
            assert ws.es256_public(ec.derive_private_key(d, ec.SECP256R1())).hex() == \
                b[who + " public key"]
        assert v["config"]["issuers"][0]["key"] == b["issuer public key"]
        assert v["config"]["issuers"][0]["kid"] == inp["issuer_kid"]


def test_host_simulator_rebuilds_every_printed_byte(printed):
    """From the printed inputs alone (primes for RSA), the wallet simulator gives
    back every block, the config and the inputs themselves."""
    for v in printed:
        primes = None
        if v["inputs"]["issuer_alg"] == "RS256":
            primes = (int(v["blocks"]["issuer rsa prime p"], 16), int(v["blocks"]["issuer rsa prime q"], 16))
        again = vectors.vector(v["inputs"], rsa_primes=primes)
        assert again["config"] == v["config"]
        for name, h in v["blocks"].items():
            assert again["blocks"][name] == h, name
        assert set(again["blocks"]) == set(v["blocks"])


def test_printed_credential_and_request_say_what_the_inputs_say(printed):
    for v in printed:
        inp, b = v["inputs"], v["blocks"]
        c = ws.parse_credential(bytes.fromhex(b["credential"]))
        assert c["issuer_kid"].hex() == inp["issuer_kid"] and c["wallet_id"].hex() == inp["wallet_id"]
        assert c["serial"].hex() == inp["serial"] and c["device_key"].hex() == b["device public key"]
        for k in ("tap_limit", "offline_limit", "currency", "not_before", "not_after"):
            assert c[k] == inp[k], k
        assert (c["device_hints"] is not None) == (inp["key_hints"] == "yes")
        req = ws.parse_tlv(bytes.fromhex(b["exchange 2 C-APDU"])[5:-1])
        assert req[0x23] == inp["merchant_id"].encode() == v["config"]["merchant_id"].encode()
        assert req[0x22].hex() == inp["terminal_id"] and req[0x26].hex() == inp["un"]
        assert [int.from_bytes(req[t], "big") for t in (0x24, 0x25, 0x27, 0x28)] == \
            [inp["amount"], inp["currency"], inp["time"], inp["seq"]]
        assert b["credential hash"] == hashlib.sha256(bytes.fromhex(b["credential"])).hexdigest()


def test_printed_signatures_verify_with_cryptography(printed):
    for v in printed:
        b = v["blocks"]
        js = vectors.to_json(v)
        assert verify_signature(v["inputs"]["issuer_alg"], bytes.fromhex(b["issuer public key"]),
                                bytes.fromhex(js["credential_signed_bytes"]),
                                ws.parse_credential(bytes.fromhex(b["credential"]))["issuer_sig"])
        msg, sig = bytes.fromhex(b["signed message"]), bytes.fromhex(b["device signature"])
        key = bytes.fromhex(b["device public key"])
        assert verify_signature("ES256", key, msg, sig)
        assert not verify_signature("ES256", key, msg + b"x", sig)


def test_firmware_accepts_the_printed_vectors_byte_for_byte(printed, tmp_path):
    p = tmp_path / "printed.json"
    p.write_text(json.dumps(vectors.build_json(printed)))
    # The heap also holds the firmware compiled from source here, and the
    # compiler's peak while it does: not the terminal's data budget (that is
    # the emulated terminal's 128k beside its measured code, tests/test_terminal.py).
    r = run_mp(ROOT / "tests" / "mp" / "vectors_check.py", p, heap="192k")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("OK ") == len(printed) == 4, r.stdout


def test_generated_files_match_the_document(printed):
    """`python -m host_tools vectors` would change nothing: section 8 is exactly
    what it renders, and the JSON other tests use holds the printed vectors."""
    assert vectors.section(DOC.read_text()) == vectors.render(vectors.build())
    assert json.loads(FILE.read_text()) == json.loads(json.dumps(vectors.build_json(printed)))
