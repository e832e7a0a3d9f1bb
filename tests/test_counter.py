"""At the counter (docs/till.md): the till always hears the truth, no phone pays
twice, and the reader never holds the loop. The emulated terminal end to end
through its till link, with faults injected in the display, the journal's
flash, the till link, the phone and the field."""
import socket
import time

import pytest

from host_tools import demo
from host_tools import wallet_sim as ws
from host_tools.emulator import Emulator
from host_tools.pn532_sim import PN532Sim

NOW = int(time.time())
LATENCY_MS = 50  # STATUS and CANCEL are answered within this in any phase of a tap


def config(issuer, **kw):
    cfg = {"terminal_id": "5445524d30303031", "merchant_id": "TEST", "currency": 978,
           "charge_timeout_ms": 4000, "removal_ms": 300, "issuers": [issuer.config()]}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def issuer():
    return ws.Issuer(alg="ES256", not_before=NOW - 86400, not_after=NOW + 86400)


def authorizes(phone):
    """Device signatures the phone made: AUTHORIZE commands it answered."""
    return sum(1 for ins, _ in phone.log if ins == 0xA0)


def start(tmp_path, cfg, env=None, sim=None):
    emu = Emulator(tmp_path, cfg, heap=demo.HEAP, env=env, sim=sim)
    emu.provision()
    emu.start()
    return emu


def pay(emu, till, phone, amount, ref, keep=False):
    return emu.pay(till, phone, amount, ref, keep)


def timed(till, line):
    t = time.monotonic()
    answer = till.call(line)
    return answer, (time.monotonic() - t) * 1000


def wait(cond, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in %.1f s" % timeout)
        time.sleep(0.005)


def slow_phone(issuer, ms, **kw):
    phone = ws.Phone(issuer, **kw)
    phone.processing_us = ms * 1000  # the simulator (time_scale 1) waits this per APDU
    return phone


def real_time_sim():
    return PN532Sim(time_scale=1.0)


def test_display_and_buzzer_failures_never_change_the_answer(tmp_path, issuer):
    emu = start(tmp_path, config(issuer), env={"POS_FAULT_FEEDBACK": "led,beep,show"})
    with emu:
        till = emu.till()
        assert pay(emu, till, ws.Phone(issuer), 250, "F1") == "RESULT F1 APPROVED 1"
        assert till.call("QUERY F1") == "OUTCOME F1 APPROVED 1"
        assert pay(emu, till, ws.Phone(issuer, fault="bad_sig"), 250, "F2") == \
            "RESULT F2 DECLINED DEVICE_SIG"
        assert till.call("STATUS") == "STATUS idle 1 down"
        assert any(l.startswith("FEEDBACK failed") for l in emu.lines)
        assert not any(l.startswith("ERROR") for l in emu.lines), emu.lines[-10:]


def test_flash_error_after_the_data_landed_is_settled_by_reading_back(tmp_path, issuer):
    emu = start(tmp_path, config(issuer), env={"POS_JOURNAL_FAIL": "after:1"})
    with emu:
        till = emu.till()
        assert pay(emu, till, ws.Phone(issuer), 300, "L1") == "RESULT L1 APPROVED 1"
        line = pay(emu, till, ws.Phone(issuer), 400, "L2")
        assert line.startswith("RESULT L2 APPROVED ") and int(line.split()[-1]) > 1
        emu.proc.kill()  # power cut
        emu.proc.wait()
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.start()
        assert any("records=2 pending=2" in l for l in emu.lines), emu.lines
        till = emu.till()
        assert till.call("QUERY L1") == "OUTCOME L1 APPROVED 1"
        # A till that re-sends the same sale is told the stored result; nobody pays.
        assert till.call("CHARGE 300 978 L1") == "RESULT L1 APPROVED 1"


def test_flash_error_before_the_data_landed_is_a_decline_nothing_stored(tmp_path, issuer):
    emu = start(tmp_path, config(issuer), env={"POS_JOURNAL_FAIL": "before:1"})
    with emu:
        till = emu.till()
        assert pay(emu, till, ws.Phone(issuer), 300, "S1") == "RESULT S1 DECLINED STORAGE"
        assert till.call("QUERY S1") == "OUTCOME S1 DECLINED STORAGE"
        line = pay(emu, till, ws.Phone(issuer), 300, "S2")
        assert line.startswith("RESULT S2 APPROVED ")
        emu.proc.kill()
        emu.proc.wait()
    with Emulator(tmp_path, config(issuer), heap=demo.HEAP) as emu:
        emu.start()
        assert any("records=1 pending=1" in l for l in emu.lines), emu.lines
        till = emu.till()
        assert till.call("QUERY S1") == "OUTCOME S1 UNKNOWN"  # declines do not survive a reboot
        assert till.call("QUERY S2") == "OUTCOME S2 APPROVED %s" % line.split()[-1]


def test_cancel_and_status_at_every_phase(tmp_path, issuer):
    # relay_ms: the simulator's slow phone is slow at every APDU, GET RESPONSE too.
    emu = start(tmp_path, config(issuer, relay_ms=3000), sim=real_time_sim())
    with emu:
        till = emu.till()
        # Polling for a phone: honoured, at once.
        till.send("CHARGE 100 978 C1")
        wait(lambda: "charging" in till.call("STATUS"))
        answer, ms = timed(till, "CANCEL")
        assert answer == "CANCELLED C1" and ms < LATENCY_MS, (answer, ms)
        assert till.read() == "RESULT C1 DECLINED CANCELLED"
        late = ws.Phone(issuer)
        emu.sim.add_phone(late)
        time.sleep(0.3)
        assert authorizes(late) == 0  # no phone is charged for a cancelled sale
        assert till.call("STATUS") == "STATUS idle 0 down"
        emu.sim.remove_phone(late)

        # Waiting for the last payer's phone to leave: honoured.
        stay = ws.Phone(issuer)
        assert pay(emu, till, stay, 100, "C2", keep=True) == "RESULT C2 APPROVED 1"
        till.send("CHARGE 100 978 C3")
        wait(lambda: "waiting-for-removal" in till.call("STATUS"))
        answer, ms = timed(till, "CANCEL")
        assert answer == "CANCELLED C3" and ms < LATENCY_MS
        assert till.read() == "RESULT C3 DECLINED CANCELLED"
        n = len(emu.lines)
        emu.sim.remove_phone(stay)
        assert emu.wait_for("FIELD clear", n)

        # During SELECT (the phone takes 400 ms to answer each command): honoured.
        phone = slow_phone(issuer, 400)
        till.send("CHARGE 100 978 C4")
        emu.sim.add_phone(phone)
        wait(lambda: any(ins == 0xA4 for ins, _ in phone.log))
        answer, ms = timed(till, "STATUS")
        assert answer.startswith("STATUS charging") and ms < LATENCY_MS, (answer, ms)
        answer, ms = timed(till, "CANCEL")
        assert answer == "CANCELLED C4" and ms < LATENCY_MS
        assert till.read() == "RESULT C4 DECLINED CANCELLED"
        assert authorizes(phone) == 0
        n = len(emu.lines)
        emu.sim.remove_phone(phone)
        assert emu.wait_for("FIELD clear", n)

        # After AUTHORIZE went out: too late; the real result follows.
        phone = slow_phone(issuer, 300)
        till.send("CHARGE 100 978 C5")
        emu.sim.add_phone(phone)
        wait(lambda: authorizes(phone) == 1)
        answer, ms = timed(till, "STATUS")
        assert answer.startswith("STATUS authorizing") and ms < LATENCY_MS, (answer, ms)
        answer, ms = timed(till, "CANCEL")
        assert answer == "ERR too-late" and ms < LATENCY_MS
        assert till.read() == "RESULT C5 APPROVED 2"
        emu.sim.remove_phone(phone)
        # Idle again: nothing to cancel.
        assert till.call("CANCEL") == "ERR nothing-to-cancel"


def test_a_till_that_goes_away_cancels_and_can_learn_the_truth(tmp_path, issuer):
    emu = start(tmp_path, config(issuer, relay_ms=3000), sim=real_time_sim())
    with emu:
        # Hangs up right after CHARGE: the next phone is not charged.
        t = emu.till()
        t.send("CHARGE 100 978 D1")
        t.close()
        phone = ws.Phone(issuer)
        emu.sim.add_phone(phone)
        till = emu.till()
        wait(lambda: till.call("QUERY D1") == "OUTCOME D1 DECLINED CANCELLED")
        assert authorizes(phone) == 0
        n = len(emu.lines)
        emu.sim.remove_phone(phone)
        emu.wait_for("FIELD clear", n)  # (if it was activated at all)

        # Hangs up while the phone answers SELECT: cancelled, nobody charged.
        phone = slow_phone(issuer, 400)
        t = emu.till()
        t.send("CHARGE 100 978 D2")
        emu.sim.add_phone(phone)
        wait(lambda: any(ins == 0xA4 for ins, _ in phone.log))
        t.close()
        wait(lambda: till.call("QUERY D2") == "OUTCOME D2 DECLINED CANCELLED")
        assert authorizes(phone) == 0
        n = len(emu.lines)
        emu.sim.remove_phone(phone)
        assert emu.wait_for("FIELD clear", n)

        # Hangs up after AUTHORIZE went out: the payment is stored, and a till
        # that comes back learns it; re-sending the sale charges nobody.
        phone = slow_phone(issuer, 300)
        t = emu.till()
        t.send("CHARGE 100 978 D3")
        emu.sim.add_phone(phone)
        wait(lambda: authorizes(phone) == 1)
        t.sock.shutdown(socket.SHUT_RDWR)
        t.close()
        assert till.call("QUERY D3") in ("OUTCOME D3 IN-PROGRESS", "OUTCOME D3 APPROVED 1")
        wait(lambda: till.call("QUERY D3") == "OUTCOME D3 APPROVED 1")
        emu.sim.remove_phone(phone)
        assert till.call("CHARGE 100 978 D3") == "RESULT D3 APPROVED 1"
        assert authorizes(phone) == 1
        assert till.call("QUERY NEVER-SEEN") == "OUTCOME NEVER-SEEN UNKNOWN"
        assert till.call("STATUS") == "STATUS idle 1 down"
        assert any("TILL result not delivered" in l for l in emu.lines)


def test_till_garbage_and_floods_during_a_charge(tmp_path, issuer):
    emu = start(tmp_path, config(issuer))
    with emu:
        till = emu.till()
        till.send("CHARGE 100 978 G1")
        for junk in ("\x01\x02", "X" * 300, "CHARGE", "QUERY", "QUERY bad!ref", "CANCEL now"):
            till.send(junk)
        answers = [till.read() for _ in range(6)]
        assert answers == ["ERR bad-char", "ERR line-too-long", "ERR bad-args", "ERR bad-args",
                           "ERR bad-reference", "ERR bad-args"], answers
        phone = ws.Phone(issuer)
        emu.sim.add_phone(phone)
        assert till.read() == "RESULT G1 APPROVED 1"
        # A flood of lines without LF costs nothing but time.
        till.sock.sendall(b"Z" * 20000 + b"\n")
        assert till.read() == "ERR line-too-long"
        assert till.call("QUERY G1") == "OUTCOME G1 APPROVED 1"


def test_a_phone_left_on_the_reader_is_not_charged_again(tmp_path, issuer):
    cfg = config(issuer, charge_timeout_ms=2500)
    del cfg["removal_ms"]  # the default: the field must stay empty for 1 s
    emu = start(tmp_path, cfg)
    with emu:
        till = emu.till()
        phone = ws.Phone(issuer)
        assert pay(emu, till, phone, 500, "P1", keep=True) == "RESULT P1 APPROVED 1"
        for i, gap_ms in enumerate((50, 150, 400, 900)):
            # Next sale; the paid phone drops out of the field for a moment.
            till.send("CHARGE 500 978 P%d" % (i + 2))
            wait(lambda: "waiting-for-removal" in till.call("STATUS"))
            emu.sim.remove_phone(phone)
            time.sleep(gap_ms / 1000)
            emu.sim.add_phone(phone)
            assert till.read() == "RESULT P%d DECLINED TIMEOUT" % (i + 2), gap_ms
            assert authorizes(phone) == 1, gap_ms
        # A customer who means to pay twice lifts the phone away and taps again
        # after the prompt.
        n = len(emu.lines)
        till.send("CHARGE 500 978 P9")
        wait(lambda: "waiting-for-removal" in till.call("STATUS"))
        emu.sim.remove_phone(phone)
        assert emu.wait_for("FIELD clear", n)
        emu.sim.add_phone(phone)
        assert till.read() == "RESULT P9 APPROVED 2"
        assert authorizes(phone) == 2


def test_a_slow_phone_never_holds_the_loop_and_the_deadline_holds(tmp_path, issuer):
    emu = start(tmp_path, config(issuer, charge_timeout_ms=5000), sim=real_time_sim())
    with emu:
        till = emu.till()
        phone = slow_phone(issuer, 900)
        t0 = time.monotonic()
        till.send("CHARGE 100 978 W1")
        emu.sim.add_phone(phone)
        worst = 0
        result = None
        while result is None:
            answer, ms = timed(till, "STATUS")
            if answer.startswith("RESULT"):  # the result came while we asked
                result = answer
                answer = till.read()
            assert answer.startswith("STATUS"), answer
            worst = max(worst, ms)
            if answer.startswith("STATUS idle"):
                break
            time.sleep(0.1)
        elapsed = time.monotonic() - t0
        assert worst < LATENCY_MS, worst
        # SELECT answered after 0.9 s; AUTHORIZE not within the relay bound.
        assert result == "RESULT W1 DECLINED TIMEOUT"
        assert elapsed < 5.0, elapsed
        assert authorizes(phone) == 1
        assert any("not answered within 600 ms" in l for l in emu.lines)


class SixC:
    """A wallet that answers every AUTHORIZE, repeat included, with 6C 10: a
    terminal that follows it blindly asks it to sign forever."""

    def __init__(self):
        self.authorizes = 0
        self.uid = b"\x08\x11\x22\x33"

    def transceive(self, apdu):
        if apdu[1] == 0xA4:
            return b"\x01\x01\x01\x90\x00"
        if apdu[1] == 0xA0:
            self.authorizes += 1
            return b"\x6c\x10"
        return b"\x69\x85"

    def removed(self):
        pass


def test_retries_are_bounded_and_the_till_hears_protocol(tmp_path, issuer):
    emu = start(tmp_path, config(issuer))
    with emu:
        till = emu.till()
        six = SixC()
        t0 = time.monotonic()
        assert pay(emu, till, six, 100, "R1") == "RESULT R1 DECLINED PROTOCOL"
        assert six.authorizes <= 6, six.authorizes  # 3 attempts, one 6C repeat each
        endless = ws.Phone(issuer, fault="endless_chain")
        assert pay(emu, till, endless, 100, "R2") == "RESULT R2 DECLINED PROTOCOL"
        assert authorizes(endless) <= 3
        assert time.monotonic() - t0 < 8


def test_boot_with_a_full_esp32_journal_under_the_watchdog(tmp_path, issuer):
    """The ESP32's 1 MiB journal partition, full, and a watchdog scaled to this
    host: the ESP32's 8 s over the ESP32/unix speed ratio (100-130 for
    interpreted code; the low end, so a loaded test host does not fire it),
    so boot must feed it at least every 80 ms here. Boot without the feeds
    during the journal's scan fails this."""
    from host_tools.fill_journal import fill
    emu = Emulator(tmp_path / "t", config(issuer), heap=demo.HEAP,
                   env={"POS_FLASH_BLOCKS": "320", "POS_WDT_MS": "80"})
    n = fill(emu.image, issuer, blocks=320)
    assert n > 1500, n  # the whole partition, in records
    emu.provision()
    emu.start(wait=60)
    with emu:
        ready = next(l for l in emu.lines if l.startswith("READY"))
        assert "records=%d" % n in ready, ready
        assert not any(l.startswith("WATCHDOG") for l in emu.lines), emu.lines[-5:]
        till = emu.till()
        # Full: a new payment is declined STORAGE (nothing is uploaded yet), and
        # a stored one is still found by its reference.
        assert till.call("QUERY FULL-7").startswith("OUTCOME FULL-7 APPROVED ")
        assert pay(emu, till, ws.Phone(issuer), 100, "X1") == "RESULT X1 DECLINED STORAGE"
