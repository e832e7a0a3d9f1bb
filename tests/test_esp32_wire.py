"""boards/esp32/board.py wires the real parts: run against the fakes of
machine/network/esp32 (tests/fakes) in the unix port and check the calls."""
from conftest import ROOT, run_mp

SCRIPT = """
import board, machine
import esp32
esp32.add_partition("journal", 8 * 4096)
b = board.wire("market-wifi", "secret")
assert type(b.nfc).__name__ == "PN532"
assert b.journal_dev.ioctl(4, 0) == 8       # the raw 'journal' partition
assert b.config_path == "/config.json"
assert isinstance(int(b.clock()), int)
for want in (("freq", 240000000), ("WDT", 0, 8000), ("UART", 1, 115200, 32, 33), ("UART", 2, 115200, 17, 16)):
    assert want in machine.calls, (want, machine.calls)
b.wdt.feed()
print("WIRED")
"""


def test_esp32_board_wires_against_fakes():
    r = run_mp(SCRIPT, heap="512k", path=[ROOT / "tests" / "fakes", ROOT / "boards" / "esp32"])
    assert r.returncode == 0 and "WIRED" in r.stdout, r.stdout + r.stderr
