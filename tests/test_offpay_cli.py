"""Every offpay subcommand: --help, usage errors, clear failures on a wrong
port, and the whole technician flow through real mpremote against the
virtual terminal (offpay emulate's pty): provision into a fresh board, a
re-provisioning taken by the running app without a reboot, a refused config
that leaves the terminal as it was, lock, a locked console, unlock with a
signed token, and logs pulled from the running terminal."""
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from host_tools import device, provision, wallet_sim as ws

ROOT = Path(__file__).resolve().parents[1]
TECHNICIAN = ("build", "provision", "flash", "lock", "unlock", "logs", "replay", "replay upload",
              "replay session", "emulate", "journal", "issuer")


def offpay(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "host_tools"] + list(args), capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def _main(argv, capsys):
    from host_tools.__main__ import main
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own exits
        rc = e.code
    return rc, capsys.readouterr()


def test_every_command_has_help_and_usage_errors(capsys):
    # In process (argparse exits the same way): one interpreter for all of them.
    from host_tools.__main__ import COMMANDS
    for cmd in list(COMMANDS) + ["replay upload", "replay session"]:
        rc, out = _main(cmd.split() + ["--help"], capsys)
        assert rc == 0 and "usage" in out.out.lower(), (cmd, out.err)
        if cmd in TECHNICIAN:
            assert "exit status: 0 " in " ".join(out.out.split()), (cmd, out.out)
        rc, out = _main(cmd.split() + ["--no-such-option"], capsys)
        assert rc == 2, cmd
    rc, out = _main(["--help"], capsys)
    assert rc == 0 and "exit status (every command): 0 done, 1 failed" in out.out
    assert _main(["no-such-command"], capsys)[0] == 2


def test_progress_bar_when_drawn(capsys):
    from host_tools.progress import bar
    with bar("re-verify", None, enabled=True, unit="records") as advance:
        advance(1, total=3)
        advance(3)
    err = capsys.readouterr().err
    assert "re-verify" in err and "3/3" in err, err
    with bar("copy", 10, enabled=False) as advance:  # stderr not a terminal: nothing drawn
        advance(10)
    assert capsys.readouterr().err == ""


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


def mpremote(port, *args, timeout=30):
    return subprocess.run([str(Path(sys.executable).with_name("mpremote")), "connect", port, "resume"]
                          + list(args), capture_output=True, text=True, timeout=timeout)


def _raw_repl_answers(port):
    # mpremote's way in: Ctrl-C, then Ctrl-A, and the raw REPL's banner.
    import serial
    import time
    with serial.Serial(port, 115200, timeout=0.1) as ser:
        ser.write(b"\r\x03\r\x01")
        buf, end = b"", time.monotonic() + 1.5
        while time.monotonic() < end and b"raw REPL" not in buf:
            buf += ser.read(256)
        ser.write(b"\x02")
    return b"raw REPL" in buf


def _stop_app(port):
    # Technician code that ends the app: sent, not waited for (the terminal
    # may reset under it).
    with device.Session(port) as s:
        s.t.exec_raw_no_follow("raise SystemExit")


def _tiny_build(d):
    # A build of three small files: the copy through mpremote without
    # filling the emulated chip's 256 KB littlefs (the unix build is 168 KB).
    import hashlib
    files = {"pos/a.mpy": b"M" * 700, "pos/b.mpy": b"N" * 3000, "main.py": b"# main\n"}
    for rel, data in files.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(data)
    (d / "manifest.json").write_text(json.dumps({"board": "unix", "version": "t1", "files": {
        rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}}))
    return d


def test_technician_flow_on_the_virtual_terminal(tmp_path, monkeypatch):
    """Issue 11 end to end through real mpremote: a fresh board provisioned;
    a refused config keeps the old; a re-provisioning taken without a
    reboot; lock; a locked console; unlock; logs of a full journal pulled
    under the watchdog (emulated, 2 s) without a reset; a production
    terminal whose config stops loading stays locked (NOT PROVISIONED) and
    is reachable by a signed unlock only, from the config's key or, when the
    config is unreadable, the lock record's; SystemExit on a production
    terminal resets it locked, on a test one leaves the REPL."""
    from host_tools import fill_journal, lock
    from host_tools.emulate import VirtualTerminal
    iss = ws.Issuer(alg="ES256", not_before=0, not_after=0xFFFFFFFF)
    (tmp_path / "iss.json").write_text(json.dumps(iss.config()))
    tech = ec.generate_private_key(ec.SECP256R1())
    (tmp_path / "tech.pem").write_bytes(tech.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    tid = "5445524d30303031"
    # A journal the pull takes longer than the watchdog's timeout over (64
    # blocks of payments), on a board that was never provisioned.
    (tmp_path / "vt").mkdir()
    stored = fill_journal.fill(tmp_path / "vt" / "flash.img", iss, blocks=128, wallets=4)
    with VirtualTerminal(tmp_path / "vt", env={"POS_FLASH_BLOCKS": "128", "POS_WDT_MS": "2000"}) as vt:
        # A fresh board holds its console open: it can be provisioned.
        assert vt.wait_console() == {"mode": "test", "lock": "open", "terminal": "0" * 16,
                                     "state": "not-provisioned"}
        # offpay flash's copy: every file through mpremote, each verified by
        # SHA-256, then a reset; the second time only what changed.
        from host_tools import flash
        built = _tiny_build(tmp_path / "build")
        monkeypatch.setattr(flash, "build", lambda board: built)
        said = []
        assert flash.copy_firmware(vt.port, "unix", out=said.append) == (3, 3)
        vt.wait_console()
        assert vt.boots == 2 and said == ["firmware t1: 3 files copied, 3 verified by SHA-256"]
        (tmp_path / "build" / "pos" / "b.mpy").write_bytes(b"O" * 3000)
        man = json.loads((tmp_path / "build" / "manifest.json").read_text())
        man["files"]["pos/b.mpy"] = __import__("hashlib").sha256(b"O" * 3000).hexdigest()
        (tmp_path / "build" / "manifest.json").write_text(json.dumps(man))
        assert flash.copy_firmware(vt.port, "unix", out=said.append) == (1, 3)
        r = mpremote(vt.port, "exec", "print(open('/flash/lib/pos/b.mpy').read(3))")
        assert r.stdout.strip() == "OOO" and vt.boots == 3, r.stdout + r.stderr
        base = ["--terminal-id", tid, "--merchant-id", "MARKET-7", "--currency", "978",
                "--issuer", str(tmp_path / "iss.json")]
        r = offpay("provision", "--port", vt.port, *base)
        assert r.returncode == 0, r.stderr
        assert "the terminal restarts with the new config" in r.stdout and "terminal clock: " in r.stdout
        assert device.status(vt.port) == {"mode": "test", "lock": "open", "terminal": tid, "state": "running"}
        assert vt.boots == 4
        # A config the terminal refuses: named, and the terminal keeps its old one.
        bad = iss.config()
        bad["key"] = bad["key"][:-2] + ("00" if bad["key"][-2:] != "00" else "01")
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        r = offpay("provision", "--port", vt.port, *base[:-1], str(tmp_path / "bad.json"))
        assert r.returncode == 1 and "curve" in r.stderr
        # Re-provisioning with a technician key: the running app takes it.
        r = offpay("provision", "--port", vt.port, *base, "--technician-key", str(tmp_path / "tech.pem"))
        assert r.returncode == 0 and "running terminal took the new config" in r.stdout, r.stderr
        assert vt.boots == 4  # no reboot
        r = mpremote(vt.port, "exec", "import json; print(json.load(open('/flash/config.json'))['technician_key'][:4])")
        assert r.returncode == 0 and r.stdout.strip() == "04" + provision.ec_public_hex(
            str(tmp_path / "tech.pem"), "k", True)[2:4]
        # Lock: production mode, the console refuses the raw REPL.
        r = offpay("lock", "--port", vt.port)
        assert r.returncode == 0, r.stderr
        locked = {"mode": "production", "lock": "locked", "terminal": tid, "state": "running"}
        assert device.status(vt.port) == locked
        r = offpay("logs", "--port", vt.port)
        assert r.returncode == 1 and "locked" in r.stderr
        # A wrong key does not unlock; the technician's does.
        other = ec.generate_private_key(ec.SECP256R1())
        with pytest.raises(lock.LockError, match="does not verify"):
            lock.unlock(vt.port, other, 5, out=lambda *a: None)
        r = offpay("unlock", "--port", vt.port, "--key", str(tmp_path / "tech.pem"), "--minutes", "5")
        assert r.returncode == 0, r.stderr
        # The whole journal comes over while the app runs; the pull feeds the
        # watchdog (without that, it fires and the terminal reboots mid-pull).
        r = offpay("logs", "--port", vt.port, "--out", str(tmp_path / "logs.jsonl"))
        lines = [json.loads(l) for l in (tmp_path / "logs.jsonl").read_text().splitlines()]
        assert lines[-1]["type"] == "summary" and lines[-1]["terminal"] == tid
        assert lines[-1]["payments"] == stored > 400, lines[-1]
        assert any(l["type"] == "event" and l["line"].startswith("READY") for l in lines)
        assert vt.boots == 4, "the watchdog reset the terminal during the pull"
        # (fill_journal repeats 4 wallets' taps: flagged duplicates, exit 1.)
        assert r.returncode == 1 and lines[-1]["flagged"] == stored - 4, r.stderr
        r = offpay("lock", "--port", vt.port)
        assert r.returncode == 0 and device.status(vt.port) == locked

        # The config stops loading (here: a config with an off-curve issuer
        # key, as a firmware update that tightens the parser would see it).
        def unlock():
            r = offpay("unlock", "--port", vt.port, "--key", str(tmp_path / "tech.pem"), "--minutes", "5")
            assert r.returncode == 0, r.stderr

        def reboot_with(text):
            unlock()
            (tmp_path / "swap.json").write_text(text)
            r = mpremote(vt.port, "fs", "cp", str(tmp_path / "swap.json"), ":/flash/config.json")
            assert r.returncode == 0, r.stderr
            vt.power_cycle()
            return vt.wait_console()

        r = offpay("provision", "--out", str(tmp_path / "prod.json"), *base, "--mode", "production",
                   "--technician-key", str(tmp_path / "tech.pem"))
        assert r.returncode == 0, r.stderr
        refused = dict(json.loads((tmp_path / "prod.json").read_text()), issuers=[bad])
        held = {"mode": "production", "lock": "locked", "terminal": tid, "state": "not-provisioned"}
        assert reboot_with(json.dumps(refused)) == held
        r = offpay("logs", "--port", vt.port)
        assert r.returncode == 1 and "locked" in r.stderr and "not provisioned" in r.stderr
        assert not _raw_repl_answers(vt.port)  # what mpremote asks first: no answer
        unlock()
        r = offpay("provision", "--port", vt.port, "--config", str(tmp_path / "prod.json"))
        assert r.returncode == 0 and "the terminal restarts with the new config" in r.stdout, r.stderr
        assert device.status(vt.port) == locked
        # Unreadable (not JSON): the lock record the terminal kept says
        # production, and its technician key still unlocks.
        assert reboot_with("{garbled") == dict(held, terminal=tid)
        unlock()
        r = offpay("provision", "--port", vt.port, "--config", str(tmp_path / "prod.json"))
        assert r.returncode == 0, r.stderr
        # SystemExit from technician code: a production terminal resets, locked.
        boots = vt.boots
        unlock()
        _stop_app(vt.port)
        deadline = time.monotonic() + 10
        while vt.boots == boots and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vt.wait_console() == locked and vt.boots == boots + 1
        # A test-mode one leaves MicroPython's REPL to the technician.
        unlock()
        r = offpay("provision", "--port", vt.port, "--config", str(tmp_path / "prod.json"), "--mode", "test")
        assert r.returncode == 0, r.stderr
        _stop_app(vt.port)
        time.sleep(0.5)
        r = mpremote(vt.port, "exec", "import sys; print('at the REPL', 'pos.console' in sys.modules)")
        assert "at the REPL False" in r.stdout and vt.at_repl, r.stdout + r.stderr


def test_emulate_with_a_pn532_on_a_serial_line(tmp_path):
    # `offpay emulate --pn532 DEVICE`: the firmware's HSU driver over a serial
    # device (boards/unix/ttyuart.py) instead of the simulator's TCP port; here
    # the simulator behind a pty stands in for a PN532 on a USB-UART adapter.
    from host_tools.emulate import VirtualTerminal
    from host_tools.emulator import Till
    from host_tools.pn532_sim import PN532Sim
    r = offpay("emulate", "--pn532", "/dev/ttyNOPE9")
    assert r.returncode == 1 and "no serial device /dev/ttyNOPE9" in r.stderr
    iss = ws.Issuer(alg="ES256")
    (tmp_path / "cfg.json").write_text(json.dumps({
        "terminal_id": "5445524d30303031", "merchant_id": "M", "currency": 978, "removal_ms": 300,
        "issuers": [iss.config()]}))
    with PN532Sim(pty=True) as sim, VirtualTerminal(tmp_path / "vt", pn532=sim.pty_path) as vt:
        r = offpay("provision", "--port", vt.port, "--config", str(tmp_path / "cfg.json"))
        assert r.returncode == 0, r.stderr
        till = Till(vt.till_port)
        till.send("CHARGE 250 978 T1")
        sim.add_phone(ws.Phone(iss))
        assert till.read() == "RESULT T1 APPROVED 1"
        till.close()
        assert sim.stats["apdus"] >= 2  # SELECT and AUTHORIZE went over the pty
