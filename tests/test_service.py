"""The terminal out of service, in the unix port: pos.lock's fallback for a
config that does not load and its lock record, an unlock that lasts in
ticks, the console's watchdog feeds and TAP notes, pos.service's hold and
what follows the app (tests/mp/service_unit.py); and boards/esp32/main.py
against the fakes of machine/esp32: a test-mode app stopped by SystemExit
leaves the REPL with the watchdog fed by a timer, a production one resets,
and a board without a loadable config holds its console until a good
config is reloaded, then resets."""
import json
import os
import time

from cryptography.hazmat.primitives.asymmetric import ec

from conftest import ROOT, run_mp
from host_tools import lock, provision
from host_tools import wallet_sim as ws

TID = "5445524d30303031"


def _data(tmp_path):
    tech = ec.generate_private_key(ec.SECP256R1())
    nonce, now = os.urandom(16), int(time.time())
    until = now + 600
    d = {"tid": TID, "tech": provision.ec_public_hex(_pem(tmp_path, tech), "k", True),
         "nonce": nonce.hex(), "now": now, "until": until,
         "sig": lock.sign_unlock(tech, bytes.fromhex(TID), nonce, until).hex(),
         "issuer": ws.Issuer(alg="ES256").config()}
    (tmp_path / "data.json").write_text(json.dumps(d))
    return d


def _pem(tmp_path, key):
    from cryptography.hazmat.primitives import serialization
    p = tmp_path / "tech.pem"
    p.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    return str(p)


def test_lock_console_and_service_in_the_unix_port(tmp_path, monkeypatch):
    _data(tmp_path)
    monkeypatch.setenv("POS_TEST_DATA", str(tmp_path / "data.json"))
    monkeypatch.setenv("POS_TEST_TMP", str(tmp_path))
    r = run_mp(ROOT / "tests" / "mp" / "service_unit.py", heap="512k", timeout=120, input="")
    out = r.stdout + r.stderr
    assert r.returncode == 0 and " passed, 0 failed" in r.stdout, out


# boards/esp32/main.py as the board runs it, with a stand-in app (the real one
# needs a PN532) and the real pos.service / pos.console / pos.lock.
ESP32_MAIN = r"""
import json, os, sys, time
import machine, esp32
D = json.load(open(os.getenv("POS_TEST_DATA")))
TMP = os.getenv("POS_TEST_TMP")
CASE = os.getenv("POS_CASE")


import micropython as _mp


class Micropython:
    # The first thing main.py does, recorded among the board's calls.
    const = staticmethod(_mp.const)

    @staticmethod
    def kbd_intr(c):
        machine.calls.append(("kbd_intr", c))
        if CASE == "ctrl-c" and len(machine.calls) == 1:
            raise KeyboardInterrupt  # a Ctrl-C that arrived during boot fires now


sys.modules["micropython"] = Micropython


class Timer:
    made = []

    def __init__(self, id):
        Timer.made.append(self)

    def init(self, period, mode, callback):
        self.period, self.callback = period, callback


machine.Timer = Timer
machine.Timer.PERIODIC = 1


class Board:
    pass


def wire():
    b = Board()
    b.wdt = machine.WDT(timeout=8000)
    b.config_path = TMP + "/config.json"
    b.journal_dev = None
    b.clock = time.time
    return b


class board:
    wire = staticmethod(wire)


sys.modules["board"] = board


class App:
    @staticmethod
    def main(w):
        from pos import console
        b = w()
        if CASE == "unprovisioned":
            # The config does not load: app.run returns 2 before any console.
            feeds = [0]
            real = b.wdt.feed

            def feed():
                # The technician provisions while the console is held: a good
                # config, then the reload the CLI sends.
                real()
                feeds[0] += 1
                if feeds[0] == 5:
                    with open(b.config_path, "w") as f:
                        f.write(json.dumps({"terminal_id": D["tid"], "merchant_id": "M",
                                            "currency": 978, "issuers": [D["issuer"]]}))
                    print("RELOAD", console.hooks["reload"]())
            b.wdt.feed = feed
            return 2
        from pos import lock
        console.current = console.Console(lock.Lock(bytes(8), None, CASE == "production"))
        raise SystemExit


import pos
pos.app = App
sys.modules["pos.app"] = App
try:
    exec(open(sys.argv[1]).read())
except SystemExit as e:
    print("ENDED", repr(e.args))
print("CALLS", [c[0] for c in machine.calls])
print("TIMERS", [t.period for t in Timer.made])
from pos import console
for t in Timer.made:
    before = console._board.wdt.feeds
    t.callback(t)
    print("FED", console._board.wdt.feeds - before)
"""


def test_esp32_main_after_the_app(tmp_path, monkeypatch):
    _data(tmp_path)
    monkeypatch.setenv("POS_TEST_DATA", str(tmp_path / "data.json"))
    monkeypatch.setenv("POS_TEST_TMP", str(tmp_path))
    path = [ROOT / "tests" / "fakes"]
    main = ROOT / "boards" / "esp32" / "main.py"
    res = {}
    for case in ("test", "production", "unprovisioned", "ctrl-c"):
        monkeypatch.setenv("POS_CASE", case)
        r = run_mp(ESP32_MAIN, main, heap="512k", path=path, timeout=60, input="")
        res[case] = r.stdout + r.stderr
        assert r.returncode == 0, res[case]
    # Before anything else, Ctrl-C stops being an interrupt; one that came
    # during boot resets the board rather than open the REPL.
    for case in res:
        assert "CALLS ['kbd_intr', " in res[case], res[case]
    assert "ENDED ('machine.reset',)" in res["ctrl-c"] and "CALLS ['kbd_intr', 'reset']" in res["ctrl-c"]
    # Test mode: the REPL follows (SystemExit goes on), a 1 s timer feeds the watchdog.
    assert "ENDED ()" in res["test"] and "'reset'" not in res["test"], res["test"]
    assert "TIMERS [1000]" in res["test"] and "FED 1" in res["test"], res["test"]
    # Production: reset, no timer.
    assert "ENDED ('machine.reset',)" in res["production"] and "TIMERS []" in res["production"]
    # No loadable config: the console is held (the watchdog fed) until the
    # reload finds a good config, then the board resets into it.
    out = res["unprovisioned"]
    assert "SERVICE not-provisioned (code 2): console open" in out, out
    assert "RELOAD ok " in out and " test restarting" in out, out
    assert "ENDED ('machine.reset',)" in out and "TIMERS []" in out, out
