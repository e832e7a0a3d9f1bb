# boards/unix wiring pieces: wifi control file, feedback events, till TCP port.
import os
import sys

if ".frozen" not in sys.path:
    sys.path.append(".frozen")
import asyncio  # noqa: E402

import feedback  # noqa: E402
import tillport  # noqa: E402
import unit  # noqa: E402
import wifi  # noqa: E402
from pos import till  # noqa: E402

TMP = os.getenv("POS_TEST_TMP") or "/tmp"


def test_wifi_follows_control_file():
    ctl = TMP + "/wifi"
    try:
        os.remove(ctl)
    except OSError:
        pass
    w = wifi.Wifi("shop", "secret", control=ctl)
    assert not w.isconnected() and w.status() == wifi.STAT_IDLE  # no file: down
    w.connect()
    assert w.active() and not w.isconnected() and w.status() == wifi.STAT_NO_AP_FOUND
    with open(ctl, "w") as f:
        f.write("up\n")
    assert w.isconnected() and w.status() == wifi.STAT_GOT_IP
    assert w.ifconfig()[0] == "127.0.0.1"
    with open(ctl, "w") as f:
        f.write("down\n")
    assert not w.isconnected()
    with open(ctl, "w") as f:
        f.write("up\n")
    assert w.isconnected()  # comes back without another connect()
    w.disconnect()
    assert not w.isconnected()
    w.connect()
    w.active(False)
    assert not w.isconnected() and not w.active()


def test_feedback_prints_one_line_per_event():
    out = []
    fb = feedback.Feedback(out.append)
    fb.led("green")
    fb.beep("ok")
    fb.show("APPROVED 12.50")
    fb.show('two\nlines "quoted"')
    fb.off()
    assert out == ["EVENT led green", "EVENT beep ok", 'EVENT display "APPROVED 12.50"',
                   'EVENT display "two\\nlines \\"quoted\\""', "EVENT led off", 'EVENT display ""']
    assert fb.color == "off"


# That the esp32 board's Feedback, Wifi and TillPort have the same methods and
# accept the same values: tests/mp_board/board_contract.py, against both.


def test_tillport_serves_line_protocol_over_tcp():
    # tests/test_boards.py puts a free port in POS_TILL, as the emulator does.
    port = tillport.TillPort()
    got = []

    async def handler(reader, writer):
        buf = bytearray(till.MAX_LINE + 1)
        while True:
            try:
                line = await till.read_line(reader, till.MAX_LINE, buf)
                if line is None:
                    return
                cmd = till.parse(line)
                got.append(cmd)
                if cmd[0] == "STATUS":
                    writer.write(till.status("idle", 2, False))
                else:
                    writer.write(till.approved(cmd[3], 7))
            except till.TillError as e:
                writer.write(till.error(e.reason))
            await writer.drain()

    async def main():
        await port.start(handler)
        r, w = await asyncio.open_connection("127.0.0.1", port.port)
        w.write(b"STATUS\n" + b"X" * 300 + b"\nCHARGE 1250 978 REF001\r\n")
        await w.drain()
        lines = []
        for _ in range(3):
            lines.append(await r.readline())
        w.close()
        await w.wait_closed()
        await asyncio.sleep_ms(20)
        port.close()
        return lines

    lines = asyncio.run(main())
    assert lines == [b"STATUS idle 2 down\n", b"ERR line-too-long\n", b"RESULT REF001 APPROVED 7\n"], lines
    assert got == [("STATUS",), ("CHARGE", 1250, 978, b"REF001")]


def test_tillport_port_from_env():
    spec = os.getenv("POS_TILL")
    p = tillport.TillPort()
    if spec is None:
        assert (p.host, p.port) == ("127.0.0.1", 7070)
    else:
        assert "%s:%d" % (p.host, p.port) == spec
    assert tillport.TillPort(port=1234).port == 1234


unit.run(globals())
