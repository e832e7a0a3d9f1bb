"""Emulated LED, buzzer and display for the unix board: one log line per event.

    EVENT led green
    EVENT beep ok
    EVENT display "APPROVED 12.50"

Same methods as boards/esp32/feedback.py, so the app cannot tell them apart.
A test reads the events from the process output (host_tools.emulator).
"""


class Feedback:
    def __init__(self, out=print):
        self._out = out
        self.color = None
        self.text = ""

    def led(self, color):
        """color: "red", "green", "blue", "yellow", "white" or "off"."""
        self.color = color
        self._out("EVENT led %s" % color)

    def beep(self, kind):
        """kind: "ok", "error", "retry" or "key"."""
        self._out("EVENT beep %s" % kind)

    def show(self, text):
        self.text = text
        # Quoted so that the log line stays one line whatever the text holds.
        self._out('EVENT display "%s"' % text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))

    def off(self):
        self.led("off")
        self.show("")
