"""The emulated terminal end to end: firmware (.mpy) in the unix port, PN532
simulator, littlefs image, till link over loopback TCP."""
import time

import pytest

from host_tools import demo
from host_tools import wallet_sim as ws
from host_tools.emulator import Emulator

NOW = int(time.time())


def config(*issuers, **kw):
    # removal_ms: the field must stay empty this long before the next tap is
    # taken; shorter than the default 1000 here, where dropouts are not tested.
    cfg = {"terminal_id": "5445524d30303031", "merchant_id": "TEST", "currency": 978,
           "charge_timeout_ms": 4000, "removal_ms": 300, "issuers": [i.config() for i in issuers]}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def issuer():
    return ws.Issuer(alg="ES256", not_before=NOW - 86400, not_after=NOW + 86400)


def pay(emu, till, phone, amount, ref):
    return emu.pay(till, phone, amount, ref)


def test_demo_session_ends_as_expected(tmp_path):
    lines = []
    assert demo.run(tmp_path, out=lines.append) == 0, "\n".join(lines)
    assert any("14/14 as expected" in l and "each approved payment exactly once" in l
               for l in lines), "\n".join(lines)


def test_till_commands_and_errors(tmp_path, issuer):
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.provision()
        emu.start()
        till = emu.till()
        assert till.call("STATUS") == "STATUS idle 0 down"
        assert till.call("HELLO") == "ERR unknown-command"
        assert till.call("CHARGE 12x 978 R1") == "ERR bad-amount"
        assert till.call("CANCEL") == "ERR nothing-to-cancel"
        assert till.call("CHARGE 100 840 R2") == "RESULT R2 DECLINED BAD_AMOUNT"
        sim, polls = emu.sim, emu.sim.commands_seen[0x4A]
        till.send("CHARGE 100 978 R3")
        # Not a sleep: the terminal's first InListPassiveTarget says it is charging.
        assert sim.wait_until(lambda: sim.commands_seen[0x4A] > polls), emu.lines[-10:]
        assert till.call("STATUS").startswith("STATUS charging")
        assert till.call("CHARGE 100 978 R4") == "ERR busy"
        assert till.call("CANCEL") == "CANCELLED R3"
        assert till.read() == "RESULT R3 DECLINED CANCELLED"  # every CHARGE gets one RESULT
        till.send("X" * 500)
        assert till.read() == "ERR line-too-long"
        emu.set_link(True)
        assert till.call("STATUS") == "STATUS idle 0 up"
        phone = ws.Phone(issuer)
        assert pay(emu, till, phone, 250, "R5") == "RESULT R5 APPROVED 1"
        assert till.call("STATUS") == "STATUS idle 1 up"


def test_no_phone_times_out(tmp_path, issuer):
    with Emulator(tmp_path, config(issuer, charge_timeout_ms=800), heap=demo.HEAP) as emu:
        emu.provision()
        emu.start()
        till = emu.till()
        assert till.call("CHARGE 100 978 T1") == "RESULT T1 DECLINED TIMEOUT"


def test_phone_pulled_away_mid_exchange_is_asked_again(tmp_path, issuer):
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.provision()
        emu.start()
        till = emu.till()
        phone = ws.Phone(issuer)
        emu.sim.remove_phone_after(2, phone)  # at GET RESPONSE, mid AUTHORIZE
        till.send("CHARGE 700 978 M1")
        emu.sim.add_phone(phone)
        deadline = time.time() + 3
        while time.time() < deadline and not any("TAP AGAIN" in l for l in emu.lines):
            time.sleep(0.05)
        assert any("TAP AGAIN" in l for l in emu.lines), "\n".join(emu.lines[-20:])
        emu.sim.add_phone(phone)   # the customer taps again
        assert till.read() == "RESULT M1 APPROVED 1"
        emu.sim.remove_phone(phone)


def test_payments_and_counters_survive_a_restart(tmp_path, issuer):
    phone = ws.Phone(issuer, fault="stale_counter")
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.provision()
        emu.start()
        till = emu.till()
        assert pay(emu, till, phone, 300, "A1") == "RESULT A1 APPROVED 1"
        emu.proc.kill()  # power cut: no shutdown path at all
        emu.proc.wait()
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.start()
        assert any("records=1 pending=1" in l for l in emu.lines), emu.lines
        till = emu.till()
        # The cloned wallet replays its counter: the restored table still knows it.
        assert pay(emu, till, phone, 300, "A2") == "RESULT A2 DECLINED COUNTER_REPLAY"
        assert till.call("STATUS") == "STATUS idle 1 down"


def test_unprovisioned_or_bad_config_is_refused_with_a_reason(tmp_path, issuer):
    import json
    import subprocess
    import sys
    from pathlib import Path
    from host_tools.provision import ProvisionError

    def mpremote():
        return str(Path(sys.executable).with_name("mpremote"))
    for name, cfg in (("none", None), ("long-merchant", config(issuer, merchant_id="M" * 17)),
                      ("bad-key", dict(config(issuer), issuers=[{"kid": "zz"}]))):
        emu = Emulator(tmp_path / name, cfg or config(issuer), heap=demo.HEAP)
        try:
            if cfg is not None:
                # The technician's tool refuses it...
                with pytest.raises(ProvisionError):
                    emu.provision()
                # ...and a config that got onto the flash anyway is refused by the terminal.
                raw = tmp_path / (name + ".json")
                raw.write_text(json.dumps(cfg))
                with emu.repl() as url:
                    subprocess.run([mpremote(), "connect", url, "resume", "fs", "cp", str(raw),
                                    ":/flash/config.json"], check=True, capture_output=True, timeout=60)
            with pytest.raises(RuntimeError):
                emu.start(wait=10)
            assert any(l.startswith("CONFIG ") for l in emu.lines), (name, emu.lines)
            assert any("NOT PROVISIONED" in l for l in emu.lines), name
        finally:
            emu.stop()


def test_journal_tool_reverifies_stored_payments(tmp_path, issuer):
    """`host_tools journal` decodes the journal from a flash image on the host and
    re-verifies every stored payment; a tampered record fails."""
    import json
    from host_tools import journal_dump
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.provision()
        emu.start()
        till = emu.till()
        assert pay(emu, till, ws.Phone(issuer), 1234, "J1") == "RESULT J1 APPROVED 1"
        assert pay(emu, till, ws.Phone(issuer), 99, "J2") == "RESULT J2 APPROVED 2"
    lines = []
    assert journal_dump.main(["--image", str(tmp_path / "flash.img"), "--config",
                              str(tmp_path / "config.json")], out=lines.append) == 0, lines
    assert lines[-1] == "2 records (0 uploaded), 0 problems" and "12.34" in lines[0] and "verified" in lines[1]
    # The partition alone, as `esptool read_flash` dumps it from an ESP32.
    part = tmp_path / "journal.bin"
    part.write_bytes((tmp_path / "flash.img").read_bytes()[journal_dump.UNIX_JOURNAL_OFFSET:])
    again = []
    assert journal_dump.main(["--image", str(part), "--offset", "0", "--config",
                              str(tmp_path / "config.json")], out=again.append) == 0
    assert again == lines
    # Not a journal there (the file system part): a clear failure, exit 1.
    assert journal_dump.main(["--image", str(part), "--offset", "0x%x" % (len(part.read_bytes()) - 8192),
                              "--config", str(tmp_path / "config.json")], out=again.append) == 1
    records, problems = journal_dump.read_records(tmp_path / "flash.img")
    issuers = {i["kid"]: i for i in json.loads((tmp_path / "config.json").read_text())["issuers"]}
    rid, payload = records[0]
    i = payload.index(b"\x24\x04")  # the amount field of the stored request
    forged = payload[:i + 5] + bytes((payload[i + 5] ^ 1,)) + payload[i + 6:]
    r = journal_dump.check_record(forged, issuers)
    assert not r["ok"] and r["why"] == "device signature"


def test_data_heap_is_128k_beside_the_measured_code(tmp_path, issuer):
    from host_tools.emulator import heap_bytes
    emu = Emulator(tmp_path, config(issuer), heap=demo.HEAP)
    assert demo.HEAP == "128k"
    code = emu.code_bytes
    assert 40 * 1024 < code < 200 * 1024  # every firmware and board module, imported
    assert heap_bytes(emu.heapsize) == (128 * 1024 + code + 1023) // 1024 * 1024
    # Without the allowance the same firmware cannot even start: its code is in the heap.
    small = Emulator(tmp_path / "small", config(issuer), heap="128k")
    small.heapsize = "128k"
    small.provision()
    with pytest.raises(RuntimeError, match="MemoryError"):
        small.start()


def test_tap_log_separates_firmware_from_emulated_hardware(tmp_path, issuer):
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.provision()
        emu.start()
        assert int(next(l for l in emu.lines if l.startswith("READY")).split("heap_free=")[1].split()[0]) > 64 * 1024
        till = emu.till()
        n = len(emu.lines)
        assert pay(emu, till, ws.Phone(issuer), 250, "H1") == "RESULT H1 APPROVED 1"
        deadline = time.time() + 5
        while emu.last_tap(n) is None and time.time() < deadline:
            time.sleep(0.02)
        _, parts = emu.last_tap(n)
        for phase in ("activation", "select", "authorize", "verify", "persist"):
            wall, idle, hw = (int(parts[phase + k]) for k in ("", "_idle", "_hw"))
            assert 0 <= idle <= wall and 0 <= hw <= wall, (phase, parts)
        assert int(parts["authorize_hw"]) > 0  # the APDUs went through the emulated UART
        ops, nbytes, erases, _ = (int(x) for x in parts["persist_flash"].split("/"))
        # The record reached the chip in program ops only (the first one opens
        # block 0: its header too): the journal erases while idle, not in a tap.
        assert 1 <= ops <= 2 and nbytes >= 300 and erases == 0, parts
        assert "verify_flash" not in parts  # deciding touches no flash


def test_a_long_day_of_new_wallets_fits_the_heap(tmp_path, issuer):
    """More new wallets than any cache holds, with a regular in between, on the
    128k data heap: every tap is approved, and the verification caches never
    have to be dropped for lack of memory (no MEMORY line), nothing raises."""
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.provision()
        emu.start()
        till = emu.till()
        regular = ws.Phone(issuer)
        for i in range(50):  # as the tap bench, where a MemoryError once turned a tap away
            phone = regular if i % 2 else ws.Phone(issuer)
            line = pay(emu, till, phone, 100, "D%d" % i)  # waits for the removal to be seen
            assert line.startswith("RESULT D%d APPROVED" % i), (line, emu.lines[-8:])
        assert not any("MEMORY" in l or "ERROR" in l for l in emu.lines), emu.lines[-20:]
