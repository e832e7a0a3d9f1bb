"""`offpay provision`: put everything a terminal needs onto it, checked by the
firmware's own parser, written atomically, read back, and taken by the
running terminal without a reboot.

    offpay provision --port /dev/ttyUSB0 --config base.json \\
        --terminal-id 5445524d30303031 --merchant-id MARKET-7 --currency 978 \\
        --issuer bank-a.json --ca acquirer-ca.pem --update-key update-key.pem \\
        --tls-test-ca var/pki --url https://receiver.example:8443/v1/upload \\
        --wifi-ssid shop --wifi-key secret123 --max-offline-age 604800 \\
        --technician-key tech.pub.pem --mode production

Order of work, so that a failure at any step leaves the terminal as it was:
  1. assemble the config (a base JSON plus the options) on the host; a
     malformed key or certificate file is named and refused;
  2. host-only checks the terminal cannot make: certificates chain to the CA,
     the TLS key matches its certificate, its CN is the terminal id, and a
     production config holds no test identity (a test CA's certificate);
  3. the firmware's own parser (firmware/pos/config.py) runs in the MicroPython
     unix port on the exact bytes to be sent: it is the terminal's check;
  4. the bytes go to `<config>.new` on the terminal (mpremote's transport),
     are read back and compared by SHA-256, checked again by the parser the
     terminal itself runs, and only then renamed over the config (atomic on
     littlefs);
  5. the technician's time is offered to the terminal's trusted clock (it
     only moves forward; --no-clock skips it): a terminal takes no payment
     before its first trusted time;
  6. the running app takes the new config (pos.console.reload); a terminal
     out of service (no loadable config before, or a fault: pos.service)
     reboots into it; the tool waits until its app runs and reads its status.

Private issuer keys never go onto a terminal: a private key file given as an
issuer is refused. Exit status: 0 provisioned, 1 failed (nothing changed on
the terminal unless step 6 says otherwise), 2 usage.
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from host_tools import device

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = {b: p["config"] for b, p in device.PATHS.items()}


class ProvisionError(Exception):
    pass


def micropython():
    return os.environ.get("MICROPYTHON") or str(Path(sys.executable).with_name("micropython"))


# -- the firmware's own check ------------------------------------------------------

_CHECK = """
import sys
from pos import config
for p in sys.argv[1:]:
    print(config.report(p))
"""


def firmware_check(paths):
    """[(ok, sha256 or reason, mode)] for config files, judged by
    firmware/pos/config.py running in the MicroPython unix port."""
    env = dict(os.environ, MICROPYPATH=".frozen:" + str(ROOT / "firmware"))
    r = subprocess.run([micropython(), "-X", "heapsize=512k", "-c", _CHECK] + [str(p) for p in paths],
                       capture_output=True, text=True, timeout=60, env=env)
    lines = [l for l in r.stdout.splitlines() if l.startswith("CONFIG ")]
    if r.returncode or len(lines) != len(paths):
        raise ProvisionError("the firmware's config parser failed to run:\n" + (r.stdout + r.stderr)[-800:])
    out = []
    for l in lines:
        parts = l.split(" ", 2)
        if parts[1] == "OK":
            sha, mode = parts[2].split()
            out.append((True, sha, mode))
        else:
            out.append((False, parts[2], None))
    return out


def check_bytes(data):
    """(sha256, mode) if the terminal would take these config bytes; else ProvisionError."""
    with tempfile.NamedTemporaryFile("wb", suffix=".json", delete=False) as f:
        f.write(data)
    try:
        ok, what, mode = firmware_check([f.name])[0]
    finally:
        os.unlink(f.name)
    if not ok:
        raise ProvisionError("the terminal would refuse this config: %s" % what)
    return what, mode


# -- key and certificate files ----------------------------------------------------

def _read(path, what):
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ProvisionError("%s %s: %s" % (what, path, e.strerror or e))


def ec_public_hex(spec, what, allow_private=False):
    """SEC1 hex of a P-256 public key given as hex, or a PEM/DER file (public,
    or private when allowed: only its public half is used)."""
    if all(c in "0123456789abcdefABCDEF" for c in spec) and len(spec) in (66, 130):
        return spec.lower()
    data = _read(spec, what)
    key = None
    try:
        if b"PRIVATE KEY" in data:
            if not allow_private:
                raise ProvisionError("%s %s is a private key: give its public key" % (what, spec))
            key = serialization.load_pem_private_key(data, None).public_key()
        elif data.lstrip().startswith(b"-----"):
            key = serialization.load_pem_public_key(data)
        else:
            try:
                key = serialization.load_der_public_key(data)
            except ValueError:
                if not allow_private:
                    raise
                key = serialization.load_der_private_key(data, None).public_key()
    except (ValueError, TypeError) as e:
        raise ProvisionError("%s %s is not a readable key (%s)" % (what, spec, str(e).split("\n")[0]))
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise ProvisionError("%s %s is not a P-256 (ES256) key" % (what, spec))
    return key.public_bytes(serialization.Encoding.X962,
                            serialization.PublicFormat.UncompressedPoint).hex()


def issuer_entries(path):
    """The issuer entries in a file: the JSON `offpay issuer` prints (one entry
    or a list). Private keys are refused: they never go onto a terminal."""
    data = _read(path, "issuer file")
    if b"PRIVATE KEY" in data:
        raise ProvisionError("issuer file %s is a PRIVATE key: a terminal holds only issuers' public "
                             "entries (the JSON `offpay issuer` printed)" % path)
    try:
        v = json.loads(data)
    except (ValueError, UnicodeError):
        raise ProvisionError("issuer file %s is not an issuer entry (JSON as `offpay issuer` prints)" % path)
    items = v if isinstance(v, list) else [v]
    if not all(isinstance(i, dict) for i in items):
        raise ProvisionError("issuer file %s: entries must be JSON objects" % path)
    return items


def _pem_cert(path, what):
    data = _read(path, what)
    try:
        return x509.load_pem_x509_certificate(data), data.decode()
    except ValueError as e:
        raise ProvisionError("%s %s is not a PEM certificate (%s)" % (what, path, e))


def _is_test_ca(cert):
    names = cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME) + \
        cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return any("test" in n.value.lower() for n in names)


def _signed_by(cert, ca):
    try:
        ca.public_key().verify(cert.signature, cert.tbs_certificate_bytes,
                               ec.ECDSA(cert.signature_hash_algorithm))
        return True
    except (InvalidSignature, TypeError, ValueError, AttributeError):
        return False


def host_checks(cfg):
    """What only the host can check: X.509 chains and key pairs."""
    up = cfg.get("uplink")
    if not isinstance(up, dict):
        return
    try:
        ca = x509.load_pem_x509_certificate(up["ca"].encode())
        cert = x509.load_pem_x509_certificate(up["cert"].encode())
        key = serialization.load_pem_private_key(up["key"].encode(), None)
    except (KeyError, AttributeError, ValueError, TypeError) as e:
        raise ProvisionError("uplink: the CA, certificate or key does not parse (%s)" % (e,))
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise ProvisionError("uplink: the TLS key does not belong to the certificate")
    cn = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    if cn != [cfg.get("terminal_id")]:
        raise ProvisionError("uplink: the certificate's CN is %s, not the terminal id %s"
                             % (cn, cfg.get("terminal_id")))
    if not _signed_by(cert, ca):
        raise ProvisionError("uplink: the terminal certificate is not issued by the given CA")
    if cfg.get("mode") == "production" and (_is_test_ca(ca) or up.get("test") is True):
        raise ProvisionError("uplink: a production terminal refuses a test CA or test identity")


# -- assembling the config from options -------------------------------------------

def assemble(a):
    cfg = {}
    if a.config:
        try:
            cfg = json.loads(_read(a.config, "config"))
        except (ValueError, UnicodeError):
            raise ProvisionError("config %s is not JSON" % a.config)
        if not isinstance(cfg, dict):
            raise ProvisionError("config %s is not a JSON object" % a.config)
    for k in ("terminal_id", "merchant_id", "currency", "mode"):
        v = getattr(a, k)
        if v is not None:
            cfg[k] = v
    if a.issuer:
        entries = []
        for p in a.issuer:
            entries += issuer_entries(p)
        cfg["issuers"] = entries
    if a.update_key:
        cfg["update_key"] = ec_public_hex(a.update_key, "update key", allow_private=True)
    if a.technician_key:
        cfg["technician_key"] = ec_public_hex(a.technician_key, "technician key", allow_private=True)
    if a.wifi_ssid is not None:
        cfg["wifi"] = {"ssid": a.wifi_ssid, "key": a.wifi_key or ""}
    if a.max_offline_age is not None:
        cfg.setdefault("risk", {})["max_offline_age_s"] = a.max_offline_age
    if a.url or a.ca or a.tls_cert or a.tls_test_ca:
        up = dict(cfg.get("uplink") or {})
        if a.url:
            up["url"] = a.url
        if a.tls_test_ca:
            from host_tools import pki
            if "terminal_id" not in cfg:
                raise ProvisionError("--tls-test-ca needs the terminal id (--terminal-id)")
            try:
                ca = pki.load_ca(a.tls_test_ca)
                pair = pki.terminal_cert(ca, a.tls_test_ca, cfg["terminal_id"])
            except (OSError, ValueError) as e:
                raise ProvisionError("--tls-test-ca %s: %s" % (a.tls_test_ca, e))
            up["cert"] = pair.files["cert_pem"].read_text()
            up["key"] = pair.files["key_pem"].read_text()
            up["ca"] = ca.files["cert_pem"].read_text()
            up["test"] = True
        if a.ca:
            up["ca"] = _pem_cert(a.ca, "CA")[1]
        if a.tls_cert:
            if not a.tls_key:
                raise ProvisionError("--tls-cert needs --tls-key")
            up["cert"] = _pem_cert(a.tls_cert, "TLS certificate")[1]
            key = _read(a.tls_key, "TLS key")
            try:
                serialization.load_pem_private_key(key, None)
            except (ValueError, TypeError) as e:
                raise ProvisionError("TLS key %s is not a PEM private key (%s)" % (a.tls_key, e))
            up["key"] = key.decode()
        cfg["uplink"] = up
    return cfg


def encode(cfg):
    return json.dumps(cfg, separators=(",", ":"), sort_keys=True).encode()


# -- the device ---------------------------------------------------------------------

def provision(port, config_file, board=None, out=print):
    """Put a config file on the terminal at `port` (a serial port, or a
    socket:// URL) without starting or reloading its app: the emulator's
    boot-time provisioning (host_tools.emulator.Emulator.provision)."""
    data = _read(config_file, "config")
    provision_bytes(port, data, out=out, take=False)
    return 0


def provision_bytes(port, data, out=print, progress=None, take=True, clock=True):
    """Write checked config bytes to the terminal on `port`; with `take`, the
    terminal then runs on them, and its status is returned; with `clock`, the
    technician's time is offered to its trusted clock first (set_clock).
    ProvisionError/DeviceError on failure."""
    sha, mode = check_bytes(data)
    with device.Session(port) as s:
        path = s.paths["config"]
        tmp = path + ".new"
        out("writing %d bytes to %s:%s" % (len(data), port, path))
        s.write(tmp, data, progress)
        got = s.sha256(tmp)
        if got != sha:
            s.exec("import os\nos.remove(%r)" % tmp)
            raise ProvisionError("the config did not read back identically (sha256 %s, sent %s): "
                                 "the terminal keeps its old config" % (got, sha))
        try:
            verdict = s.exec("from pos import config\nprint(config.report(%r))" % tmp).strip()
        except device.DeviceError as e:
            s.exec("import os\nos.remove(%r)" % tmp)
            hint = ": flash the firmware first (offpay flash)" if "ImportError" in str(e) else ""
            raise ProvisionError("the terminal could not check the config (%s); it keeps its old "
                                 "one%s" % (e, hint))
        if not verdict.startswith("CONFIG OK"):
            s.exec("import os\nos.remove(%r)" % tmp)
            raise ProvisionError("the terminal refuses this config (%s): it keeps its old one"
                                 % verdict.split(" ", 2)[-1])
        s.exec("import os\nos.rename(%r, %r)" % (tmp, path))
        if s.sha256(path) != sha:
            raise ProvisionError("the config in place does not read back identically: provision again")
        out("config in place, sha256 %s (mode %s)" % (sha, mode))
        if not take:
            return None
        if clock:
            out(set_clock(s, path))
        restarting = False
        if s.app_running():
            r = s.exec("from pos import console\nconsole.reload()", timeout=30).strip()
            if not r.startswith("RELOAD ok"):
                raise ProvisionError("the terminal did not take the new config: %s" % r)
            # A terminal out of service (pos.service: it had no loadable config,
            # or a fault) reboots into the new config; a running one takes it.
            restarting = r.endswith(" restarting")
            out("the terminal restarts with the new config" if restarting
                else "the running terminal took the new config")
        else:
            s.restart_app()
            restarting = True
            out("started the terminal app")
    st = wait_running(port, 30 if restarting else 10)
    out("terminal %s: mode %s, console %s" % (st["terminal"], st["mode"], st["lock"]))
    return st


def set_clock(s, config_path, now=None):
    """Offer the technician's time to the terminal's trusted clock (pos.clock:
    its first trusted time until the acquirer's signed one; the clock only
    moves forward). The running app's own clock takes it when the app shares
    it (console.hooks["clock"]); otherwise the file does, at the next boot."""
    import time
    now = int(time.time()) if now is None else now
    fsdir = config_path.rsplit("/", 1)[0]
    r = s.exec("from pos import console\nfrom pos.clock import Clock\nc = console.hooks.get('clock')\n"
               "if c is None:\n c = Clock(%r)\n c.load()\nprint('CLOCK', c.set_acquirer(%d), c.now())"
               % (fsdir, now)).split()
    if r[:2] != ["CLOCK", "True"]:
        raise ProvisionError("the terminal's clock did not take the time %d (%s)" % (now, " ".join(r)))
    return "terminal clock: %s (technician's time offered: %d)" % (r[2], now)


def wait_running(port, timeout):
    """The terminal's status once its app is running; ProvisionError when it
    stays out of service or does not answer."""
    import time
    st = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = device.status(port, timeout=1.0)
        if st is not None and st["state"] == "running":
            return st
        time.sleep(0.2)
    if st is None:
        raise ProvisionError("the config is in place but the terminal app did not come up on %s "
                             "(see its log: mpremote connect %s repl)" % (port, port))
    raise ProvisionError("the config is in place but the terminal is out of service (%s): pull its "
                         "log with `offpay logs --port %s`" % (st["state"], port))


def options(ap):
    ap.add_argument("--config", help="a base config JSON (PROTOCOL.md section 7); options override it")
    ap.add_argument("--terminal-id", dest="terminal_id", help="16 hex digits")
    ap.add_argument("--merchant-id", dest="merchant_id", help="1..16 bytes")
    ap.add_argument("--currency", type=int, help="ISO 4217 numeric, e.g. 978")
    ap.add_argument("--issuer", action="append", metavar="FILE",
                    help="issuer entry JSON (`offpay issuer` prints it); repeatable, replaces the base's")
    ap.add_argument("--ca", help="the acquirer CA certificate (PEM) the receiver is verified with")
    ap.add_argument("--update-key", help="the acquirer's bundle key: SEC1 hex or a PEM/DER key file")
    ap.add_argument("--tls-cert", help="import the terminal's TLS client certificate (PEM)")
    ap.add_argument("--tls-key", help="... and its private key (PEM)")
    ap.add_argument("--tls-test-ca", metavar="DIR",
                    help="create and certify a TLS identity with the test CA of `offpay pki init --out DIR`")
    ap.add_argument("--url", help="the receiver's upload URL (https://...)")
    ap.add_argument("--wifi-ssid")
    ap.add_argument("--wifi-key")
    ap.add_argument("--max-offline-age", type=int, metavar="SECONDS",
                    help="risk: decline once the terminal has not synced for this long")
    ap.add_argument("--technician-key", help="the technician unlock key: SEC1 hex or a PEM/DER key file")
    ap.add_argument("--mode", choices=("test", "production"))
    ap.add_argument("--no-clock", dest="clock", action="store_false",
                    help="do not offer this computer's time to the terminal's trusted clock")


def main(argv=None):
    ap = argparse.ArgumentParser(prog="offpay provision", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 provisioned, 1 failed, 2 usage")
    ap.add_argument("--port", help="the terminal's serial port (or `offpay emulate`'s pty)")
    ap.add_argument("--out", help="write the checked config here instead of to a terminal")
    options(ap)
    a = ap.parse_args(argv)
    if not a.port and not a.out:
        ap.error("give --port (a terminal) or --out (a file)")
    try:
        cfg = assemble(a)
        host_checks(cfg)
        data = encode(cfg)
        sha, mode = check_bytes(data)
        if a.out:
            Path(a.out).write_bytes(data)
            print("config checked by the firmware's parser: %s (mode %s, sha256 %s)" % (a.out, mode, sha))
            return 0
        from host_tools.progress import bar
        with bar("config", len(data)) as advance:
            provision_bytes(a.port, data, progress=advance, clock=a.clock)
    except (ProvisionError, device.DeviceError) as e:
        print("provision failed: %s" % (e,), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
