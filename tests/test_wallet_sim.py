"""The wallet simulator answers APDUs as PROTOCOL.md says, and misbehaves on demand."""
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils

from host_tools import wallet_sim as ws


def authorize(phone, amount=500, un=None):
    apdu, data = ws.authorize_apdu(b"TERM0001", b"M1", amount, 978, un or os.urandom(16), 1764000000, 1)
    out, sw = ws.run_tap(phone, apdu)
    return out, sw, data


def test_select_then_authorize_with_chaining():
    phone = ws.Phone(ws.Issuer())
    out, sw = ws.run_tap(phone, ws.SELECT_APDU)
    assert (out, sw) == (b"\x01\x01\x01", b"\x90\x00")
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
