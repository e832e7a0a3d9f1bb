"""End to end: the firmware PN532 driver (MicroPython unix port, boards/unix/sockuart.py)
against host_tools.pn532_sim over TCP, with fault injection through the control port."""
import json

import pytest

from conftest import ROOT, run_mp
from host_tools.pn532_sim import PN532Sim

MP_SCRIPT = r"""
import sys
import socket
from sockuart import SockUART
from pos.pn532 import PN532, PN532Timeout, TargetLost, FrameError, StatusError
from pos.pn532_hsu import PN532_HSU

PORT, CTL = int(sys.argv[1]), int(sys.argv[2])


class Ctl:
    def __init__(self, port):
        s = socket.socket()
        s.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
        self.s = s

    def __call__(self, line):
        self.s.write(line.encode() + b"\n")
        r = self.s.readline().decode().strip()
        if not r.startswith("ok"):
            raise RuntimeError(r)
        return r[3:]


def step(name, fn):
    try:
        r = fn()
    except Exception as e:
        r = "EXC %s %s" % (type(e).__name__, e.args[1] if len(e.args) > 1 else "")
    print("STEP %s %s" % (name, r))


ctl = Ctl(CTL)
nfc = PN532(PN532_HSU(SockUART(PORT)))
SELECT = b"\x00\xa4\x04\x00\x07\xf0\x01\x02\x03\x04\x05\x06\x00"
READ600 = b"\x00\xb0\x00\x00\x00\x02\x58"  # extended Le = 600
BIG = bytes(i & 0xFF for i in range(700))
WRITE_BIG = b"\x00\xd6\x00\x00\x00\x02\xbc" + BIG

step("begin", lambda: nfc.begin())
ctl("clear")
step("poll_empty", lambda: nfc.poll(100))
ctl("add echo")
step("poll", lambda: nfc.poll(300).uid.hex())
step("select", lambda: nfc.apdu(SELECT).hex())
ctl("reset_clock")
step("read600", lambda: (lambda r: "%d %s %s" % (len(r), r[-2:].hex(), r[:-2] == bytes(i & 0xFF for i in range(600))))(nfc.apdu(READ600)))
step("write700", lambda: (lambda r: "%d %s" % (len(r), r[:-2] == BIG))(nfc.apdu(WRITE_BIG)))
ctl("corrupt 2")
step("corrupt", lambda: nfc.apdu(SELECT).hex())
ctl("garbage 24")
step("garbage", lambda: nfc.apdu(SELECT).hex())
ctl("nack 1")
step("nack", lambda: nfc.firmware_version())
ctl("silence 1")
step("silence", lambda: nfc.apdu(SELECT, 200))
step("silence_recover", lambda: nfc.recover())
step("silence_after", lambda: (nfc.poll(300) is not None, nfc.apdu(SELECT).hex()))
ctl("silence 1 ack")
step("noresp", lambda: nfc.apdu(SELECT, 100))
step("noresp_recover", lambda: nfc.recover())
step("noresp_after", lambda: (nfc.poll(300) is not None, nfc.apdu(SELECT).hex()))
ctl("remove_after 1")
step("remove_ok", lambda: nfc.apdu(SELECT).hex())
step("remove_lost", lambda: nfc.apdu(SELECT))
step("remove_target", lambda: nfc.target)
step("remove_poll", lambda: nfc.poll(50))
ctl("add echo")
step("mid_poll", lambda: nfc.poll(300) is not None)
ctl("remove_after 0 mid")
step("mid_chain", lambda: nfc.apdu(READ600))
ctl("add echo 08aabbcc")
ctl("add echo 08aabbcd")
step("two_phones", lambda: nfc.poll(300).uid.hex())
step("present_active", lambda: nfc.present())
step("release", lambda: nfc.release())
step("present_released", lambda: nfc.present())
ctl("clear")
step("present_gone", lambda: nfc.present())
ctl("wedge")
step("wedged", lambda: nfc.firmware_version())
step("wedged_recover", lambda: nfc.recover())
step("wedged_after", lambda: nfc.firmware_version())
step("power_down", lambda: nfc.power_down())
step("after_power_down", lambda: nfc.firmware_version())

if ".frozen" not in sys.path:
    sys.path.append(".frozen")
import asyncio

ctl("add echo")


async def session():
    t = await nfc.poll_async(300)
    r = await nfc.apdu_async(READ600)
    return "%s %d" % (t.uid.hex()[:2], len(r))

step("async", lambda: asyncio.run(session()))
print("DONE")
"""


def parse(out):
    steps = {}
    for line in out.splitlines():
        if line.startswith("STEP "):
            _, name, rest = (line + " ").split(" ", 2)
            steps[name] = rest.strip()
    return steps


@pytest.fixture(scope="module")
def session():
    with PN532Sim(0, control_port=0, seed=42) as sim:
        r = run_mp(MP_SCRIPT, sim.port, sim.control_port, path=[ROOT / "boards" / "unix"], timeout=60)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "DONE" in r.stdout, out
        yield parse(r.stdout), sim, out


def test_begin_and_poll(session):
    s, sim, out = session
    assert s["begin"] == "(50, 1, 6, 7)"
    assert s["poll_empty"] == "None"
    assert len(s["poll"]) == 8 and s["poll"].startswith("08")
    assert s["select"] == "9000"


def test_chaining_long_apdus(session):
    s, sim, out = session
    assert s["read600"] == "602 9000 True"  # response chained over 3 InDataExchange frames
    assert s["write700"] == "702 True"  # command chained (MI) and response chained


def test_checksum_garbage_nack_recovered(session):
    s, sim, out = session
    assert s["corrupt"] == "9000"
    assert s["garbage"] == "9000"
    assert s["nack"] == "(50, 1, 6, 7)"
    assert sim.stats["host_nacks"] >= 2 and sim.stats["corrupted"] == 2
    assert sim.stats["nacked"] == 1 and sim.stats["garbage_sent"] == 1


def test_silence_timeout_then_recover(session):
    s, sim, out = session
    assert s["silence"].startswith("EXC PN532Timeout")
    assert s["silence_recover"] == "True"
    assert s["silence_after"] == "(True, '9000')"
    assert s["noresp"].startswith("EXC PN532Timeout")
    assert s["noresp_recover"] == "True"
    assert s["noresp_after"] == "(True, '9000')"


def test_phone_removed_mid_exchange(session):
    s, sim, out = session
    assert s["remove_ok"] == "9000"
    assert s["remove_lost"] == "EXC TargetLost 1"
    assert s["remove_target"] == "None"
    assert s["remove_poll"] == "None"
    assert s["mid_poll"] == "True"
    assert s["mid_chain"] == "EXC TargetLost 1"


def test_two_phones_anticollision(session):
    s, sim, out = session
    # bits go LSB first; first collision is bit 0 of byte 3 (cc=...0, cd=...1): '1' wins
    assert s["two_phones"] == "08aabbcd"
    assert sim.stats["collisions"] >= 1


def test_presence_release(session):
    s, sim, out = session
    assert s["present_active"] == "True"
    assert s["release"] == "True"
    assert s["present_released"] == "True"
    assert s["present_gone"] == "False"


def test_wedged_reader_recovers(session):
    s, sim, out = session
    assert s["wedged"].startswith("EXC PN532Timeout")
    assert s["wedged_recover"] == "True"
    assert s["wedged_after"] == "(50, 1, 6, 7)"
    assert s["power_down"] == "None"
    assert s["after_power_down"] == "(50, 1, 6, 7)"
    assert sim.stats["wakeups"] >= 3


def test_async_variant(session):
    s, sim, out = session
    assert s["async"] == "08 602"


def test_clock_per_phase(session):
    s, sim, out = session
    ph = sim.phases()
    assert {"activation", "select", "reader"} <= set(ph)
    act = ph["activation"]
    assert act["commands"] >= 5 and act["air_us"] > 0
    sel = sim.totals("select")
    assert sel["air_us"] > 0 and sel["phone_us"] > 0 and sel["uart_us"] > 0
    assert json.loads(json.dumps(sim.totals()))["total_us"] > 0
