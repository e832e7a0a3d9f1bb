"""boards/esp32/board.py wires the real parts: run against the fakes of
machine/network/esp32 (tests/fakes) in the unix port and check the calls."""
from conftest import ROOT, run_mp

SCRIPT = """
import board, machine, time
import esp32
esp32.add_partition("journal", 8 * 4096)
b = board.wire("market-wifi", "secret")
assert type(b.nfc).__name__ == "PN532"
assert b.journal_dev.ioctl(4, 0) == 8       # the raw 'journal' partition
assert b.config_path == "/config.json"
for want in (("freq", 240000000), ("WDT", 0, 8000), ("UART", 1, 115200, 32, 33), ("UART", 2, 115200, 17, 16)):
    assert want in machine.calls, (want, machine.calls)
b.wdt.feed()


class Clock2000:
    # The ESP32 port's time: seconds since 2000-01-01.
    def time(self):
        return 815000000

    def gmtime(self, t):
        return (2000, 1, 1, 0, 0, 0, 5, 1) if t == 0 else time.gmtime(t)


# The terminal's clock is Unix time (PROTOCOL.md tag 27) on either epoch.
assert b.clock is board.clock
real = board.time
board.time = Clock2000()
try:
    assert b.clock() == 815000000 + 946684800, b.clock()   # 2025-10-28 in Unix time
finally:
    board.time = real
t0 = time.time()
assert t0 <= b.clock() <= time.time()                      # a 1970-epoch port: unchanged
print("WIRED")
"""


def test_esp32_board_wires_against_fakes():
    r = run_mp(SCRIPT, heap="512k", path=[ROOT / "tests" / "fakes", ROOT / "boards" / "esp32"])
    assert r.returncode == 0 and "WIRED" in r.stdout, r.stdout + r.stderr
