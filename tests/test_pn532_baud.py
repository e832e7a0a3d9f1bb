"""SetSerialBaudRate end to end: the driver raises the HSU rate, the simulator
switches on the host's ACK (and models UART time at the new rate), and the link
keeps working; a rate the PN532 does not have is refused before anything is sent."""
from conftest import ROOT, run_mp
from host_tools.pn532_sim import PN532Sim

SCRIPT = """
import sys
sys.path.insert(0, ".frozen")
from sockuart import SockUART
from pos.pn532 import PN532
from pos.pn532_hsu import PN532_HSU
nfc = PN532(PN532_HSU(SockUART(int(sys.argv[1]))))
nfc.begin()
try:
    nfc.set_baudrate(123456)
    print("ACCEPTED BAD RATE")
except ValueError:
    print("REFUSED")
nfc.set_baudrate(921600)
print("FW", nfc.firmware_version())
print("UART", nfc.transport._uart.baudrate)
"""


def test_set_baudrate():
    with PN532Sim(0) as sim:
        assert sim.baud == 115200
        r = run_mp(SCRIPT, sim.port, path=[ROOT / "boards" / "unix"], heap="256k")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "REFUSED" in r.stdout and "FW (50, 1, 6, 7)" in r.stdout, r.stdout
        assert "UART 921600" in r.stdout
        assert sim.baud == 921600
