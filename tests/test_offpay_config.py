"""The config checks of `offpay provision` are the terminal's own: the firmware
parser (firmware/pos/config.py) runs in the unix port on every candidate."""
import copy
import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools import provision, wallet_sim as ws
from host_tools.lock import sign_unlock  # noqa: F401 (the CLI module imports cleanly)

ISS = ws.Issuer(alg="ES256", not_before=0, not_after=0xFFFFFFFF)
RSA = ws.Issuer(alg="RS256", not_before=0, not_after=0xFFFFFFFF)
TECH = ec.generate_private_key(ec.SECP256R1())
TECH_HEX = TECH.public_key().public_bytes(serialization.Encoding.X962,
                                          serialization.PublicFormat.UncompressedPoint).hex()
GOOD = {"terminal_id": "5445524d30303031", "merchant_id": "MARKET-7", "currency": 978,
        "issuers": [ISS.config(), RSA.config()]}


def _off_curve(key_hex):
    b = bytearray(bytes.fromhex(key_hex))
    b[-1] ^= 1  # y no longer matches x
    return b.hex()


def _variant(**change):
    c = copy.deepcopy(GOOD)
    for k, v in change.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    return c


def _issuer(**kw):
    e = dict(ISS.config())
    e.update(kw)
    return e


BAD = {
    "off-curve ES256 key": (_variant(issuers=[_issuer(key=_off_curve(ISS.config()["key"]))]), "on the curve"),
    "duplicate kid": (_variant(issuers=[ISS.config(), _issuer(key=ws.Issuer(alg="ES256").config()["key"])]),
                      "listed twice"),
    "even RSA modulus": (_variant(issuers=[dict(RSA.config(), key=RSA.config()["key"][:-2] + "00")]), "odd modulus"),
    "short RSA modulus": (_variant(issuers=[dict(RSA.config(), key="c3" * 128 + "")]), None),
    "no issuers": (_variant(issuers=[]), "1..16"),
    "misspelt field": (dict(GOOD, isuers=[]), "unknown setting"),
    "terminal id length": (_variant(terminal_id="5445"), "terminal_id"),
    "merchant too long": (_variant(merchant_id="M" * 17), "merchant_id"),
    "currency as text": (_variant(currency="978"), "currency"),
    "timeout too long": (_variant(charge_timeout_ms=10 ** 9), "charge_timeout_ms"),
    "not_after before not_before": (_variant(issuers=[_issuer(not_before=10, not_after=5)]), "not_after"),
    "bad wifi key": (_variant(wifi={"ssid": "shop", "key": "short"}), "wifi.key"),
    "risk out of range": (_variant(risk={"max_offline_age_s": 5}), "risk.max_offline_age_s"),
    "unknown risk": (_variant(risk={"max_offline_spend": 5}), "unknown setting"),
    "production without technician key": (_variant(mode="production"), "technician_key"),
    "production with a test issuer": (_variant(mode="production", technician_key=TECH_HEX,
                                               issuers=[_issuer(test=True)]), "test key"),
    "uplink without PEM": (_variant(uplink={"url": "https://r.example/v1/upload", "ca": "x", "cert": "y", "key": "z"},
                                    update_key=ISS.config()["key"]), "PEM"),
    "http url": (_variant(uplink={"url": "http://r.example/v1/upload"}), "https"),
    "mode typo": (_variant(mode="prod"), "mode"),
    "bare deny wallet id": (_variant(deny={"wallets": ["57414c4c45542d303030303030303031"]}), "pair"),
}


def test_firmware_parser_refuses_each_bad_config_and_takes_good_ones(tmp_path):
    paths, names = [], []
    for name, (cfg, _) in BAD.items():
        p = tmp_path / ("%d.json" % len(paths))
        p.write_text(json.dumps(cfg))
        paths.append(p)
        names.append(name)
    good = [GOOD, _variant(mode="production", technician_key=TECH_HEX),
            _variant(wifi={"ssid": "shop", "key": "12345678"}, risk={"max_offline_age_s": 604800})]
    for g in good:
        p = tmp_path / ("good%d.json" % len(paths))
        p.write_text(json.dumps(g))
        paths.append(p)
    (tmp_path / "junk.json").write_text("{not json")
    paths.append(tmp_path / "junk.json")
    verdicts = provision.firmware_check(paths)
    for name, (ok, what, _) in zip(names, verdicts):
        assert not ok, "the firmware accepted: %s" % name
        want = BAD[name][1]
        assert want is None or want in what, (name, what)
    for ok, what, mode in verdicts[len(names):len(names) + len(good)]:
        assert ok, what
    assert verdicts[-1][0] is False and "JSON" in verdicts[-1][1]


def test_tls_identity_made_with_the_test_ca_or_imported_and_checked(tmp_path, capsys):
    # provision's host-only checks: a certificate chaining to the CA, its key,
    # its CN the terminal id, no test identity in production.
    from cryptography import x509
    from cryptography.x509.oid import NameOID
    from host_tools import pki
    pki.init(tmp_path / "pki")
    (tmp_path / "iss.json").write_text(json.dumps(ISS.config()))
    base = ["--terminal-id", GOOD["terminal_id"], "--merchant-id", "M", "--currency", "978",
            "--issuer", str(tmp_path / "iss.json"), "--update-key", str(tmp_path / "pki" / "update-key.pem"),
            "--url", "https://receiver.example:8443/v1/upload"]
    out = tmp_path / "c.json"
    assert provision.main(base + ["--tls-test-ca", str(tmp_path / "pki"), "--out", str(out)]) == 0
    up = json.loads(out.read_text())["uplink"]
    cert = x509.load_pem_x509_certificate(up["cert"].encode())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == GOOD["terminal_id"]
    assert up["test"] is True and "PRIVATE KEY" in up["key"] and up["ca"].startswith("-----BEGIN CERTIFICATE")
    # Production refuses a test identity.
    capsys.readouterr()
    assert provision.main(base + ["--tls-test-ca", str(tmp_path / "pki"), "--mode", "production",
                                  "--technician-key", TECH_HEX, "--out", str(out)]) == 1
    assert "refuses a test CA" in capsys.readouterr().err
    # Imported: the pair offpay pki made for this terminal passes; another
    # terminal's certificate, or a key that is not the certificate's, does not.
    ca = pki.load_ca(tmp_path / "pki")
    mine = pki.terminal_cert(ca, tmp_path / "t1", GOOD["terminal_id"]).files
    other = pki.terminal_cert(ca, tmp_path / "t2", "5445524d30303032").files
    imp = base + ["--ca", str(tmp_path / "pki" / "ca.pem"), "--out", str(out)]
    assert provision.main(imp + ["--tls-cert", str(mine["cert_pem"]), "--tls-key", str(mine["key_pem"])]) == 0
    capsys.readouterr()
    assert provision.main(imp + ["--tls-cert", str(other["cert_pem"]), "--tls-key", str(other["key_pem"])]) == 1
    assert "CN is ['5445524d30303032'], not the terminal id" in capsys.readouterr().err
    assert provision.main(imp + ["--tls-cert", str(mine["cert_pem"]), "--tls-key", str(other["key_pem"])]) == 1
    assert "does not belong to the certificate" in capsys.readouterr().err
