"""Emulated LED, buzzer and display for the unix board: one log line per event.

    EVENT led green
    EVENT beep ok
    EVENT display "APPROVED 12.50"

Same methods as boards/esp32/feedback.py, so the app cannot tell them apart.
A test reads the events from the process output (host_tools.emulator).

Fault injection: POS_FAULT_FEEDBACK="led,beep,show" (any of them) makes those
methods raise OSError(EIO), as a display on a loose I2C wire does.
"""
import os

# What boards/esp32/feedback.py accepts (its _MIX and _PATTERNS); anything
# else is a ValueError on both boards (tests/mp_board/board_contract.py).
COLORS = ("off", "red", "green", "blue", "yellow", "white")
BEEPS = ("ok", "error", "retry", "key")


class Feedback:
    def __init__(self, out=print, faults=None):
        self._out = out
        self.color = None
        self.text = ""
        f = os.getenv("POS_FAULT_FEEDBACK") if faults is None else faults
        self._faults = f.split(",") if f else ()

    def _fault(self, what):
        if what in self._faults:
            raise OSError(5)

    def led(self, color):
        """color: "red", "green", "blue", "yellow", "white" or "off"."""
        if color not in COLORS:
            raise ValueError("unknown color")
        self._fault("led")
        self.color = color
        self._out("EVENT led %s" % color)

    def beep(self, kind):
        """kind: "ok", "error", "retry" or "key"."""
        if kind not in BEEPS:
            raise ValueError("unknown beep")
        self._fault("beep")
        self._out("EVENT beep %s" % kind)

    def show(self, text):
        self._fault("show")
        self.text = text
        # Quoted so that the log line stays one line whatever the text holds.
        self._out('EVENT display "%s"' % text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))

    def off(self):
        self.led("off")
        self.show("")
