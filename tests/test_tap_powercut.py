"""Power cuts during a tap, at every flash operation the tap performs: the terminal
is killed (SIGKILL) in the middle of a program/erase, restarted on the same
image, and must never have said APPROVED for a payment that is not on flash, nor
forget a stored payment's counter."""
import shutil
import time

import pytest

from host_tools import demo
from host_tools import wallet_sim as ws
from host_tools.emulator import Emulator

NOW = int(time.time())


@pytest.mark.parametrize("torn", [False, True], ids=["op-dropped", "op-half-written"])
def test_power_cut_at_every_flash_operation_of_a_tap(tmp_path, torn):
    iss = ws.Issuer(alg="ES256", not_before=NOW - 86400, not_after=NOW + 86400)
    cfg = {"terminal_id": "5445524d30303031", "merchant_id": "CUT", "currency": 978,
           "charge_timeout_ms": 3000, "issuers": [iss.config()]}
    base = tmp_path / "base"
    with Emulator(base, cfg, heap=demo.HEAP) as emu:
        emu.provision()
    outcomes = {}
    for k in range(1, 80):
        work = tmp_path / ("k%d" % k)
        work.mkdir()
        shutil.copy(base / "flash.img", work / "flash.img")
        phone = ws.Phone(iss, fault="stale_counter")  # a clone replays its last counter
        said = None
        emu = Emulator(work, cfg, heap=demo.HEAP,
                       env={"POS_FLASH_CUT_AT": str(k), "POS_FLASH_CUT_MODE": "exit",
                            "POS_FLASH_CUT_TORN": "1" if torn else "0"})
        try:
            emu.start()
        except RuntimeError:
            said = "died booting"
        if said is None:
            try:
                till = emu.till()
            except OSError:
                # Cut after READY, in the idle work (the sequence reservation
                # on the file system): there is no till link to talk to.
                said = "died idle"
        if said is None:
            try:
                till.send("CHARGE 400 978 P%d" % k)
            except OSError:
                # The cut landed in the idle work between accept and CHARGE.
                said = "died idle"
                emu.proc.wait(5)
        if said is None:
            emu.sim.add_phone(phone)
            try:
                said = till.read()
            except (ConnectionError, OSError):
                said = "died in the tap"
                emu.proc.wait(5)  # the link drops as the process dies: let it finish
        cut = emu.proc.poll() is not None
        emu.stop()
        emu.sim.remove_phone(phone)
        # Power back: same image, no cut.
        with Emulator(work, cfg, heap=demo.HEAP) as again:
            again.start()
            ready = next(l for l in again.lines if l.startswith("READY"))
            stored = "records=1" in ready
            if said and "APPROVED" in said:
                assert stored, "APPROVED was said but the record is gone (cut at op %d)" % k
            if stored and phone.last_counter is not None:
                till = again.till()
                till.send("CHARGE 400 978 R%d" % k)
                again.sim.add_phone(phone)
                assert till.read() == "RESULT R%d DECLINED COUNTER_REPLAY" % k, k
        outcomes[k] = (said, stored)
        if not cut:
            break  # the tap completed before op k: every op of it has been cut once
    else:
        pytest.fail("the tap never completed without a cut")
    # A tap programs a block header and its record: two ops to cut, then a clean run.
    assert len(outcomes) >= 3, outcomes
    assert any(s == "died in the tap" for s, _ in outcomes.values()), outcomes
    assert list(outcomes.values())[-1][0].endswith("APPROVED 1"), outcomes
