"""Every offpay subcommand: --help, usage errors, clear failures on a wrong
port, and the whole technician flow through real mpremote against the
virtual terminal (offpay emulate's pty): provision into a fresh board, a
re-provisioning taken by the running app without a reboot, a refused config
that leaves the terminal as it was, lock, a locked console, unlock with a
signed token, and logs pulled from the running terminal."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools import device, provision, wallet_sim as ws

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ("build", "provision", "flash", "lock", "unlock", "logs", "replay", "emulate")


def offpay(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "host_tools"] + list(args), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.parametrize("cmd", COMMANDS)
def test_help_and_usage(cmd):
    r = offpay(cmd, "--help")
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr
    r = offpay(cmd, "--no-such-option")
    assert r.returncode == 2


def test_wrong_port_is_named():
    cfg = ROOT / "tests" / "vectors" / "protocol_v1.json"
    r = offpay("provision", "--port", "/dev/ttyNOPE9", "--terminal-id", "5445524d30303031",
               "--merchant-id", "M", "--currency", "978", "--issuer", str(cfg))
    assert r.returncode == 1
    r = offpay("lock", "--port", "/dev/ttyNOPE9")
    assert r.returncode == 1 and "/dev/ttyNOPE9" in r.stderr and "no such device" in r.stderr


def test_private_issuer_key_is_refused(tmp_path):
    r = offpay("issuer", "--key-out", str(tmp_path / "k.pem"))
    assert r.returncode == 0
    r = offpay("provision", "--out", str(tmp_path / "c.json"), "--terminal-id", "5445524d30303031",
               "--merchant-id", "M", "--currency", "978", "--issuer", str(tmp_path / "k.pem"))
    assert r.returncode == 1 and "PRIVATE key" in r.stderr


def _app_wires_console():
    return "console.attach" in (ROOT / "firmware" / "pos" / "app.py").read_text() or \
        os.environ.get("OFFPAY_VT_MICROPYPATH")


needs_console = pytest.mark.skipif(not _app_wires_console(),
                                   reason="firmware/pos/app.py does not start pos.console yet")


@needs_console
def test_technician_flow_on_the_virtual_terminal(tmp_path):
    from host_tools.emulate import VirtualTerminal
    from host_tools import lock
    iss = ws.Issuer(alg="ES256", not_before=0, not_after=0xFFFFFFFF)
    (tmp_path / "iss.json").write_text(json.dumps(iss.config()))
    tech = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "tech.pem").write_bytes(tech.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    env = {"MICROPYPATH": os.environ["OFFPAY_VT_MICROPYPATH"]} if os.environ.get("OFFPAY_VT_MICROPYPATH") else {}
    with VirtualTerminal(tmp_path / "vt", env=env) as vt:
        base = ["--terminal-id", "5445524d30303031", "--merchant-id", "MARKET-7", "--currency", "978",
                "--issuer", str(tmp_path / "iss.json")]
        r = offpay("provision", "--port", vt.port, *base)
        assert r.returncode == 0, r.stderr
        assert "started the terminal app" in r.stdout
        assert device.status(vt.port)["lock"] == "open"
        # A config the terminal refuses: named, and the terminal keeps its old one.
        bad = iss.config()
        bad["key"] = bad["key"][:-2] + ("00" if bad["key"][-2:] != "00" else "01")
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        r = offpay("provision", "--port", vt.port, *base[:-1], str(tmp_path / "bad.json"))
        assert r.returncode == 1 and "curve" in r.stderr
        # Re-provisioning with a technician key: the running app takes it.
        r = offpay("provision", "--port", vt.port, *base, "--technician-key", str(tmp_path / "tech.pem"))
        assert r.returncode == 0 and "running terminal took the new config" in r.stdout, r.stderr
        assert vt.boots == 1  # no reboot
        r = subprocess.run([str(Path(sys.executable).with_name("mpremote")), "connect", vt.port, "resume",
                            "exec", "import json; print(json.load(open('/flash/config.json'))['technician_key'][:4])"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and r.stdout.strip() == "04" + provision.ec_public_hex(
            str(tmp_path / "tech.pem"), "k", True)[2:4]
        # Lock: production mode, the console refuses the raw REPL.
        r = offpay("lock", "--port", vt.port)
        assert r.returncode == 0, r.stderr
        assert device.status(vt.port) == {"mode": "production", "lock": "locked", "terminal": "5445524d30303031"}
        r = offpay("logs", "--port", vt.port)
        assert r.returncode == 1 and "locked" in r.stderr
        # A wrong key does not unlock; the technician's does.
        other = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(lock.LockError, match="does not verify"):
            lock.unlock(vt.port, other, 5, out=lambda *a: None)
        r = offpay("unlock", "--port", vt.port, "--key", str(tmp_path / "tech.pem"), "--minutes", "5")
        assert r.returncode == 0, r.stderr
        r = offpay("logs", "--port", vt.port, "--out", str(tmp_path / "logs.jsonl"))
        assert r.returncode == 0, r.stderr
        lines = [json.loads(l) for l in (tmp_path / "logs.jsonl").read_text().splitlines()]
        assert lines[-1]["type"] == "summary" and lines[-1]["terminal"] == "5445524d30303031"
        assert any(l["type"] == "event" and l["line"].startswith("READY") for l in lines)
        r = offpay("lock", "--port", vt.port)
        assert r.returncode == 0 and device.status(vt.port)["lock"] == "locked"
