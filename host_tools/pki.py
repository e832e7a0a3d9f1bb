"""The acquirer's keys and certificates for the upload link (docs/upload.md):
a CA, the receiver's server certificate, one client certificate per terminal
(subject CN = the terminal id in hex), and the ES256 update key that signs
update bundles.

Every key is EC P-256: small and fast for the terminal's mbedTLS. Each
certificate and key is written as PEM and as DER (MicroPython's `ssl` loads
either; DER is smaller on flash). Keys are unencrypted: these are test and
demo keys; a production CA keeps its key offline.

    python -m host_tools pki init --out DIR                 # CA, server cert, update key
    python -m host_tools pki terminal --out DIR --terminal 5445524d30303031
"""
import argparse
import datetime
import hashlib
import ipaddress
import json
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


class Pair:
    """A certificate and its private key, and where their files are."""

    def __init__(self, cert, key, files):
        self.cert, self.key, self.files = cert, key, files

    @property
    def fingerprint(self):
        return fingerprint(self.cert)


def fingerprint(cert):
    """SHA-256 of the certificate's DER, hex: the key of the revocation table."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write(out, stem, cert, key):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = {"cert_pem": out / (stem + ".pem"), "cert_der": out / (stem + ".der"),
             "key_pem": out / (stem + "-key.pem"), "key_der": out / (stem + "-key.der")}
    files["cert_pem"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["cert_der"].write_bytes(cert.public_bytes(serialization.Encoding.DER))
    # SEC1 ("EC PRIVATE KEY"): what mbedTLS and OpenSSL both parse without PKCS#8.
    fmt = serialization.PrivateFormat.TraditionalOpenSSL
    files["key_pem"].write_bytes(key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    files["key_der"].write_bytes(key.private_bytes(serialization.Encoding.DER, fmt, serialization.NoEncryption()))
    for k in ("key_pem", "key_der"):
        files[k].chmod(0o600)
    return files


def _builder(subject, issuer, public, not_before, days):
    start = not_before or datetime.datetime.now(datetime.timezone.utc) - _DAY
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
            .public_key(public).serial_number(x509.random_serial_number())
            .not_valid_before(start).not_valid_after(start + days * _DAY)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False))


def create_ca(out, name="OFFPAY test acquirer CA", days=3650, not_before=None):
    """A self-signed CA (path length 0) in out/ca.pem, ca.der, ca-key.pem, ca-key.der."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (_builder(subject, subject, key.public_key(), not_before, days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Pair(cert, key, _write(out, "ca", cert, key))


def load_ca(out):
    """The CA written by create_ca into `out`."""
    out = Path(out)
    cert = x509.load_pem_x509_certificate((out / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((out / "ca-key.pem").read_bytes(), None)
    return Pair(cert, key, {"cert_pem": out / "ca.pem", "key_pem": out / "ca-key.pem"})


def _leaf(ca, subject, usage, sans, days, not_before):
    key = _key()
    b = (_builder(subject, ca.cert.subject, key.public_key(), not_before, days)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                      key_encipherment=False, data_encipherment=False,
                                      key_agreement=False, key_cert_sign=False, crl_sign=False,
                                      encipher_only=False, decipher_only=False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
                        critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca.key, hashes.SHA256()), key


def server_cert(ca, out, hosts=("127.0.0.1", "localhost", "::1"), days=825, not_before=None):
    """The receiver's TLS certificate for `hosts` (IP addresses or DNS names),
    in out/server.pem, server-key.pem (+ .der)."""
    sans = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert, key = _leaf(ca, subject, ExtendedKeyUsageOID.SERVER_AUTH, sans, days, not_before)
    return Pair(cert, key, _write(out, "server", cert, key))


def terminal_cert(ca, out, terminal_id, days=3650, not_before=None):
    """A terminal's client certificate: CN = its 16-hex-digit id, in
    out/terminal-<id>.pem, terminal-<id>-key.pem (+ .der)."""
    tid = bytes.fromhex(terminal_id).hex()
    if len(tid) != 16:
        raise ValueError("a terminal id is 16 hex digits: %r" % (terminal_id,))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, tid)])
    cert, key = _leaf(ca, subject, ExtendedKeyUsageOID.CLIENT_AUTH, None, days, not_before)
    return Pair(cert, key, _write(out, "terminal-" + tid, cert, key))


def update_key(out):
    """The acquirer's ES256 update key in out/update-key.pem (+ .der); returns
    (private key, public key as SEC1 hex: the terminal config's `update_key`)."""
    key = _key()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fmt = serialization.PrivateFormat.TraditionalOpenSSL
    for name, enc in (("update-key.pem", serialization.Encoding.PEM), ("update-key.der", serialization.Encoding.DER)):
        (out / name).write_bytes(key.private_bytes(enc, fmt, serialization.NoEncryption()))
        (out / name).chmod(0o600)
    return key, public_hex(key)


def public_hex(key):
    return key.public_key().public_bytes(serialization.Encoding.X962,
                                         serialization.PublicFormat.UncompressedPoint).hex()


def load_key(path):
    """A PEM or DER private key file."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----"):
        return serialization.load_pem_private_key(data, None)
    return serialization.load_der_private_key(data, None)


def init(out, hosts=("127.0.0.1", "localhost", "::1")):
    """CA + server certificate + update key in `out`: what a receiver needs.
    Returns a dict of the paths and the update key's public hex."""
    ca = create_ca(out)
    srv = server_cert(ca, out, hosts)
    _, pub = update_key(out)
    return {"ca": str(ca.files["cert_pem"]), "ca_der": str(ca.files["cert_der"]),
            "server_cert": str(srv.files["cert_pem"]), "server_key": str(srv.files["key_pem"]),
            "update_key": str(Path(out) / "update-key.pem"), "update_key_public": pub}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="offpay pki", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="create a CA, the receiver's server certificate and the update key")
    p.add_argument("--out", required=True, help="directory for the files")
    p.add_argument("--host", action="append", help="server name or IP (repeatable; default 127.0.0.1, localhost, ::1)")
    p = sub.add_parser("terminal", help="issue a terminal's client certificate with the CA in --out")
    p.add_argument("--out", required=True, help="the directory of `pki init`")
    p.add_argument("--terminal", required=True, help="terminal id, 16 hex digits")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "init":
            print(json.dumps(init(a.out, tuple(a.host) if a.host else ("127.0.0.1", "localhost", "::1"))))
        else:
            t = terminal_cert(load_ca(a.out), a.out, a.terminal)
            print(json.dumps({k: str(v) for k, v in t.files.items()} | {"fingerprint": t.fingerprint}))
    except (OSError, ValueError) as e:
        print("pki: %s" % (e,), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
