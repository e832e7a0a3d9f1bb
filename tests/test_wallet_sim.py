"""The wallet simulator answers APDUs as PROTOCOL.md says, and misbehaves on demand."""
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from host_tools import wallet_sim as ws
from host_tools.journal_dump import verify_signature


def authorize(phone, amount=500, un=None):
    apdu, data = ws.authorize_apdu(b"TERM0001", b"M1", amount, 978, un or os.urandom(16), 1764000000, 1)
    out, sw = ws.run_tap(phone, apdu)
    return out, sw, data


def test_select_then_authorize_with_chaining():
    phone = ws.Phone(ws.Issuer())
    out, sw = ws.run_tap(phone, ws.SELECT_APDU)
    assert (out, sw) == (b"\x01\x02\x01\x81", b"\x90\x00")  # version 01, option 81
    old = ws.Phone(ws.Issuer(), by_reference=False)
    assert ws.run_tap(old, ws.SELECT_APDU) == (b"\x01\x01\x01", b"\x90\x00")
    out, sw, data = authorize(phone)
    assert sw == b"\x90\x00" and len(out) > ws.CHUNK
    f = ws.parse_tlv(out)
    assert f[0x31] == phone.credential and int.from_bytes(f[0x32], "big") == 1
    sig = f[0x34]
    der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    phone.key.public_key().verify(der, ws.auth_message(data, 1, 1, phone.credential), ec.ECDSA(hashes.SHA256()))
    assert [sw for _, sw in phone.log][1][:2] == "61"


def test_counter_strictly_increases():
    phone = ws.Phone(ws.Issuer())
    ws.run_tap(phone, ws.SELECT_APDU)
    counters = [int.from_bytes(ws.parse_tlv(authorize(phone)[0])[0x32], "big") for _ in range(3)]
    assert counters == [1, 2, 3]


def test_status_words_for_bad_commands():
    phone = ws.Phone(ws.Issuer())
    apdu, _ = ws.authorize_apdu(b"TERM0001", b"M1", 1, 978, b"u" * 16, 1, 1)
    assert phone.transceive(apdu)[-2:] == b"\x69\x85"                       # not selected
    assert phone.transceive(b"\x00\xa4\x04\x00\x03abc\x00") == b"\x6a\x82"  # other AID
    ws.run_tap(phone, ws.SELECT_APDU)
    assert phone.transceive(b"\x80\xa0\x00\x00\x03\x21\x01\x01\x00") == b"\x6a\x80"  # missing fields
    assert phone.transceive(b"\x80\xa0\x00\x00\x05\x21\x01") == b"\x67\x00"          # Lc lies
    assert phone.transceive(b"\x80\xb0\x00\x00\x00") == b"\x6d\x00"
    assert phone.transceive(b"\xa0\xa0\x00\x00\x00") == b"\x6e\x00"
    assert phone.transceive(b"\x00\xc0\x00\x00\x00") == b"\x69\x85"        # nothing pending
    assert phone.transceive(b"\x00") == b"\x67\x00"
    bad_version = apdu.replace(b"\x21\x01\x01", b"\x21\x01\x02")
    assert phone.transceive(bad_version) == b"\x6a\x81"


def test_faults():
    iss = ws.Issuer()
    refuse = ws.Phone(iss, fault="refuse")
    ws.run_tap(refuse, ws.SELECT_APDU)
    assert authorize(refuse)[1] == b"\x69\x82"
    no_app = ws.Phone(iss, fault="no_app")
    assert ws.run_tap(no_app, ws.SELECT_APDU)[1] == b"\x6a\x82"
    trunc = ws.Phone(iss, fault="truncate")
    ws.run_tap(trunc, ws.SELECT_APDU)
    out = authorize(trunc)[0]
    try:
        ws.parse_tlv(out)
        assert False, "truncated answer parsed"
    except ws.TLVError:
        pass
    replay = ws.Phone(iss, fault="replay")
    ws.run_tap(replay, ws.SELECT_APDU)
    assert authorize(replay)[0] == authorize(replay)[0]


def _parts(phone, apdu, rounds=64):
    # Every R-APDU of one exchange, following 61 xx and 6C xx like a terminal.
    out, cmd = [], bytes(apdu)
    for _ in range(rounds):
        r = phone.transceive(cmd)
        out.append(r)
        if r[-2] == 0x6C and len(r) == 2:
            cmd = cmd[:-1] + r[-1:]
        elif r[-2] == 0x61:
            cmd = bytes((0, 0xC0, 0, 0, r[-1]))
        else:
            return out
    return out


def test_every_fault_does_what_it_says():
    iss = ws.Issuer()
    with pytest.raises(ValueError):
        ws.Phone(iss, fault="no_such_fault")
    forged = ws.parse_credential(ws.Phone(iss, fault="bad_cred_sig").credential)
    body = ws.Phone(iss, fault="bad_cred_sig").credential
    assert not verify_signature("ES256", iss.public,
                                ws.CRED_DOMAIN + body[:len(body) - len(ws.tlv(0x1F, forged["issuer_sig"]))],
                                forged["issuer_sig"])
    def answer(fault, **kw):
        p = ws.Phone(iss, fault=fault, **kw)
        ws.run_tap(p, ws.SELECT_APDU)
        apdu, _ = ws.authorize_apdu(b"TERM0001", b"M1", 5, 978, os.urandom(16), 1, 1)
        return _parts(p, apdu)
    over = ws.parse_tlv(b"".join(r[:-2] for r in answer("oversize")))
    assert len(over[0x31]) == 1025                                   # one over tag 31's bound
    assert sum(len(r) - 2 for r in answer("flood")) > ws.MAX_RESPONSE
    assert max(len(r) - 2 for r in answer("big_part")) > ws.MAX_PART
    sixc = answer("sixc_data")
    assert sixc[-1][-2] == 0x6C and len(sixc[-1]) > 2                # 6C with data
    assert len(answer("endless_chain")) == 64 and answer("endless_chain")[-1][-2] == 0x61


def test_chaining_options_part_size_and_exact_le():
    iss = ws.Issuer()
    apdu, _ = ws.authorize_apdu(b"TERM0001", b"M1", 5, 978, os.urandom(16), 1, 1)
    rsa = ws.Issuer(alg="RS256")  # a 680-byte answer: over 512, so 61 00 comes up
    for chunk in (1, 20, 256):
        p = ws.Phone(rsa, chunk=chunk)
        ws.run_tap(p, ws.SELECT_APDU)
        rs = _parts(p, apdu, rounds=1000)
        assert rs[-1][-2:] == b"\x90\x00" and max(len(r) - 2 for r in rs) == chunk
    assert rs[0][-2:] == b"\x61\x00"  # 256 or more still to come
    p = ws.Phone(iss, chunk=100, exact_le=True)
    ws.run_tap(p, ws.SELECT_APDU)
    rs = _parts(p, apdu)
    assert rs[0] == b"\x6c\x64" and all(len(r) <= 102 for r in rs)
    data = b"".join(r[:-2] for r in rs if r[-2] != 0x6C)
    f = ws.parse_tlv(data)
    assert int.from_bytes(f[0x32], "big") == 1  # the 6C'd AUTHORIZE and its repeat: one signature
    ws.run_tap(p, ws.SELECT_APDU)
    out, sw = ws.run_tap(p, apdu)  # the host's terminal loop follows 6C too
    assert sw == b"\x90\x00" and ws.parse_tlv(out)[0x31] == p.credential


def _by_reference(phone, un=None):
    apdu, data = ws.authorize_apdu(b"TERM0001", b"M1", 500, 978, un or os.urandom(16), 1764000000, 1,
                                   p1=ws.P1_BY_REFERENCE)
    return _parts(phone, apdu), data


def test_answer_by_reference_names_the_credential_first():
    """P1 = 01 (PROTOCOL.md 5.7): 32, 33, 34, 35 in a first part of their own,
    the credential last as tag 36; tag 35 is SHA-256 of it and the signature
    covers that hash, exactly as in a version-1 answer."""
    phone = ws.Phone(ws.Issuer(), deterministic=True)
    ws.run_tap(phone, ws.SELECT_APDU)
    rs, data = _by_reference(phone)
    assert len(rs[0]) == ws.REF_HEAD + 2 and rs[0][-2] == 0x61 and rs[-1][-2:] == b"\x90\x00"
    answer = b"".join(r[:-2] for r in rs)
    f = ws.parse_tlv(answer)
    assert list(f) == [0x32, 0x33, 0x34, 0x35, 0x36]
    assert f[0x36] == phone.credential and f[0x35] == phone.credential_hash
    msg = ws.auth_message(data, int.from_bytes(f[0x32], "big"), 1, phone.credential)
    assert verify_signature("ES256", ws.es256_public(phone.key), msg, f[0x34])
    full = ws.parse_tlv(ws.full_response(answer))
    assert list(full) == [0x31, 0x32, 0x33, 0x34] and full[0x31] == phone.credential
    assert full[0x34] == f[0x34]
    # A wallet from before the option, or a P1 no version knows: 6A 86.
    old = ws.Phone(ws.Issuer(), by_reference=False)
    ws.run_tap(old, ws.SELECT_APDU)
    assert _by_reference(old)[0] == [b"\x6a\x86"] and old.counter == 0
    apdu, _ = ws.authorize_apdu(b"TERM0001", b"M1", 5, 978, os.urandom(16), 1, 1, p1=0x02)
    assert phone.transceive(apdu) == b"\x6a\x86"
    # 6C before every part: the first part is still the 109 bytes up to tag 35.
    sixc = ws.Phone(ws.Issuer(), exact_le=True, chunk=100)
    ws.run_tap(sixc, ws.SELECT_APDU)
    rs, _ = _by_reference(sixc)
    assert rs[0] == b"\x6c\x64" and len(rs[1]) == 100 + 2
    sixc = ws.Phone(ws.Issuer(), exact_le=True)
    ws.run_tap(sixc, ws.SELECT_APDU)
    rs, _ = _by_reference(sixc)
    assert rs[0] == bytes((0x6C, ws.REF_HEAD)) and len(rs[1]) == ws.REF_HEAD + 2
    assert list(ws.parse_tlv(b"".join(r[:-2] for r in rs if r[-2] != 0x6C))) == [0x32, 0x33, 0x34, 0x35, 0x36]


def test_reference_faults_do_what_they_say():
    iss = ws.Issuer()
    other = ws.Phone(iss)

    def answer(fault, by_ref=True, **kw):
        p = ws.Phone(iss, fault=fault, deterministic=True, **kw)
        ws.run_tap(p, ws.SELECT_APDU)
        if by_ref:
            rs, data = _by_reference(p)
        else:
            apdu, data = ws.authorize_apdu(b"TERM0001", b"M1", 5, 978, os.urandom(16), 1, 1)
            rs = _parts(p, apdu)
        return p, ws.parse_tlv(b"".join(r[:-2] for r in rs)), data
    p, f, _ = answer("omit_cred", by_ref=False)
    assert list(f) == [0x32, 0x33, 0x34]
    p, f, _ = answer("omit_cred")
    assert list(f) == [0x32, 0x33, 0x34, 0x35] and f[0x35] == p.credential_hash
    p, f, data = answer("wrong_hash")
    assert f[0x36] == p.credential and f[0x35] != p.credential_hash
    assert verify_signature("ES256", ws.es256_public(p.key),   # signed for its real credential
                            ws.auth_message(data, 1, 1, p.credential), f[0x34])
    p, f, data = answer("foreign_ref", foreign=other.credential)
    assert f[0x35] == other.credential_hash and f[0x36] == p.credential
    assert verify_signature("ES256", ws.es256_public(p.key),   # signed for the one it names
                            ws.auth_message(data, 1, 1, other.credential), f[0x34])
    with pytest.raises(ValueError):
        ws.Phone(iss, fault="foreign_ref")


def test_timing_model_charges_hce_per_apdu_and_signing_on_authorize():
    """What host_tools.pn532_sim reads after each APDU: HCE_US for any command,
    plus the keystore's signing time on the AUTHORIZE that signs; a figure a
    test sets holds for every command."""
    iss = ws.Issuer()
    for keystore in ("tee", "strongbox"):
        p = ws.Phone(iss, keystore=keystore)
        ws.run_tap(p, ws.SELECT_APDU)
        assert p.processing_us == ws.HCE_US
        apdu, _ = ws.authorize_apdu(b"TERM0001", b"M1", 5, 978, os.urandom(16), 1, 1)
        r = p.transceive(apdu)
        assert r[-2] == 0x61 and p.processing_us == ws.HCE_US + ws.SIGN_US[keystore]
        p.transceive(b"\x00\xc0\x00\x00" + r[-1:])
        assert p.processing_us == ws.HCE_US
    assert ws.SIGN_US["strongbox"] > ws.SIGN_US["tee"] > 0
    refuse = ws.Phone(iss, fault="refuse")  # nothing signed: HCE time only
    ws.run_tap(refuse, ws.SELECT_APDU)
    authorize(refuse)
    assert refuse.processing_us == ws.HCE_US
    p.processing_us = 1234
    ws.run_tap(p, ws.SELECT_APDU)
    assert p.processing_us == 1234
