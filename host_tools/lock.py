"""`offpay lock` and `offpay unlock`: a terminal's production lock
(firmware/pos/lock.py has the protocol).

    offpay lock --port /dev/ttyUSB0
        A test-mode terminal is re-provisioned with mode "production" (its
        config must hold a technician key, and no test keys: the firmware's
        parser refuses them); the running app locks at once. A production
        terminal that a technician unlocked is locked again.

    offpay unlock --port /dev/ttyUSB0 --key technician.pem [--minutes 30]
        Answers the terminal's challenge with an ES256 signature by the
        technician key over its terminal id, its fresh nonce and the time the
        unlock ends (on the terminal's own clock). The console then serves
        mpremote and every offpay subcommand until that time, a re-provisioning,
        `offpay lock` or a reboot.

Exit status: 0 done, 1 failed, 2 usage.
"""
import argparse
import json
import sys
import time

import serial
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils

from host_tools import device

DOMAIN = b"OFFPAY-UNLOCK-V1\x00"
MAX_UNLOCK_S = 8 * 3600


class LockError(Exception):
    pass


def load_signing_key(path):
    try:
        data = open(path, "rb").read()
    except OSError as e:
        raise LockError("technician key %s: %s" % (path, e.strerror or e))
    try:
        key = (serialization.load_pem_private_key(data, None) if data.lstrip().startswith(b"-----")
               else serialization.load_der_private_key(data, None))
    except (ValueError, TypeError) as e:
        raise LockError("technician key %s is not a private key (%s)" % (path, str(e).split("\n")[0]))
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise LockError("technician key %s is not a P-256 (ES256) key" % path)
    return key


def sign_unlock(key, terminal_id, nonce, until):
    """The token: r || s (64 bytes) over DOMAIN || id || nonce || until."""
    der = key.sign(DOMAIN + terminal_id + nonce + until.to_bytes(4, "big"), ec.ECDSA(hashes.SHA256()))
    r, s = utils.decode_dss_signature(der)
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def _ask(ser, line, want, timeout=3.0):
    ser.reset_input_buffer()
    ser.write(b"\x02\r\x03" + line + b"\r\n")
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        buf += ser.read(256)
        for l in buf.split(b"\n")[:-1]:  # whole lines only: a line cut short is no answer
            parts = l.strip().split()
            if len(parts) >= 2 and parts[0] == b"OFFPAY" and parts[1] in want:
                return [p.decode() for p in parts[1:]]
    raise LockError("no answer to %s: not a terminal app on this port, or it is not running"
                    % line.decode())


def unlock(port, key, minutes=30, out=print):
    if not 0 < minutes * 60 <= MAX_UNLOCK_S:
        raise LockError("an unlock lasts 1..%d minutes" % (MAX_UNLOCK_S // 60))
    try:
        ser = serial.serial_for_url(port, 115200, timeout=0.1, exclusive=True)
    except (serial.SerialException, OSError) as e:
        raise device._open_error(port, e)
    with ser:
        ans = _ask(ser, b"OFFPAY CHALLENGE", (b"CHALLENGE", b"REFUSED"))
        if ans[0] == "REFUSED":
            raise LockError("the terminal refuses challenges for a while after wrong answers: wait a minute")
        tid, nonce, now = bytes.fromhex(ans[1]), bytes.fromhex(ans[2]), int(ans[3])
        until = now + minutes * 60
        sig = sign_unlock(key, tid, nonce, until)
        ans = _ask(ser, b"OFFPAY UNLOCK %d %s" % (until, sig.hex().encode()), (b"UNLOCKED", b"REFUSED"))
        if ans[0] != "UNLOCKED":
            why = {"bad-signature": "the signature does not verify: not this terminal's technician key",
                   "no-technician-key": "the terminal has no technician key",
                   "bad-time": "the unlock time is outside what the terminal allows",
                   "no-challenge": "the challenge expired"}.get(ans[1], ans[1])
            raise LockError("the terminal refused the unlock: %s" % why)
    out("terminal %s unlocked for %d minutes (until %d on its clock)" % (tid.hex(), minutes, until))
    return until


def lock(port, out=print):
    st = device.status(port)
    if st is None:
        raise LockError("no terminal app answers on %s: provision it first" % port)
    if st["mode"] == "production":
        with serial.serial_for_url(port, 115200, timeout=0.1, exclusive=True) as ser:
            _ask(ser, b"OFFPAY LOCK", (b"LOCKED",))
        out("terminal %s locked" % st["terminal"])
        return
    from host_tools import provision
    with device.Session(port) as s:
        data = s.read(s.paths["config"])
    cfg = json.loads(data)
    if "technician_key" not in cfg:
        raise LockError("the terminal has no technician key: nothing could unlock it again. "
                        "Provision one first (offpay provision --technician-key PUBLIC.pem)")
    cfg["mode"] = "production"
    provision.provision_bytes(port, provision.encode(cfg), out=out)
    st = device.status(port)
    if st is None or st["lock"] != "locked":
        raise LockError("the terminal did not lock (status %r)" % (st,))
    out("terminal %s is in production mode and locked" % st["terminal"])


def main_lock(argv=None):
    ap = argparse.ArgumentParser(prog="offpay lock", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 locked, 1 failed, 2 usage")
    ap.add_argument("--port", required=True, help="the terminal's serial port")
    a = ap.parse_args(argv)
    from host_tools import provision
    try:
        lock(a.port)
    except (LockError, device.DeviceError, provision.ProvisionError, ValueError) as e:
        print("lock failed: %s" % (e,), file=sys.stderr)
        return 1
    return 0


def main_unlock(argv=None):
    ap = argparse.ArgumentParser(prog="offpay unlock", description=__doc__.split("\n\n")[0],
                                 epilog="exit status: 0 unlocked, 1 failed, 2 usage")
    ap.add_argument("--port", required=True, help="the terminal's serial port")
    ap.add_argument("--key", required=True, help="the technician's private key (PEM or DER, P-256)")
    ap.add_argument("--minutes", type=int, default=30, help="how long the console stays open (default 30)")
    a = ap.parse_args(argv)
    try:
        unlock(a.port, load_signing_key(a.key), a.minutes)
    except (LockError, device.DeviceError) as e:
        print("unlock failed: %s" % (e,), file=sys.stderr)
        return 1
    return 0
