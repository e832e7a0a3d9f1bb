"""LEDs, buzzer and optional display of the ESP32 terminal.

Same methods as boards/unix/feedback.py:
    fb = Feedback(leds, buzzer, display=None)   # hardware passed in
    fb.led("green")  fb.beep("ok")  fb.show("APPROVED 12.50")  fb.off()
    fb = create(display=None)                   # from boards/esp32/pins.py

leds: {"red": Pin, "green": Pin, "blue": Pin} (one RGB LED or three LEDs,
active high); "yellow"/"white" mix them.  buzzer: a machine.PWM on a passive
piezo.  display: anything with fill/text/show (framebuf-based SSD1306 driver).

beep() never blocks the caller: the tone starts now and an asyncio task
stops it (and plays the rest of the pattern), so the till link and the NFC
loop keep running.
"""
from micropython import const

import asyncio

_COLS = const(16)  # 8x8 font on 128 px
_ROWS = const(8)

_MIX = {
    "off": (),
    "red": ("red",),
    "green": ("green",),
    "blue": ("blue",),
    "yellow": ("red", "green"),
    "white": ("red", "green", "blue"),
}

# (frequency Hz, on ms, off ms) steps.
_PATTERNS = {
    "ok": ((2000, 120, 0),),
    "error": ((400, 400, 0),),
    "retry": ((1500, 60, 60), (1500, 60, 0)),
    "key": ((3000, 20, 0),),
}

_DUTY = const(32768)  # 50 %: loudest square wave on a piezo


class Feedback:
    def __init__(self, leds, buzzer, display=None):
        self.leds = leds
        self.buzzer = buzzer
        self.display = display
        self.color = None
        self.text = ""
        self._tone = None
        buzzer.duty_u16(0)

    def led(self, color):
        on = _MIX.get(color)
        if on is None:
            raise ValueError("unknown color")
        for name, pin in self.leds.items():
            pin.value(name in on)
        self.color = color

    def beep(self, kind):
        steps = _PATTERNS.get(kind)
        if steps is None:
            raise ValueError("unknown beep")
        if self._tone is not None:
            self._tone.cancel()
        self._tone = asyncio.create_task(self._play(steps))

    async def _play(self, steps):
        bz = self.buzzer
        try:
            for f, on_ms, off_ms in steps:
                bz.freq(f)
                bz.duty_u16(_DUTY)
                await asyncio.sleep_ms(on_ms)
                bz.duty_u16(0)
                if off_ms:
                    await asyncio.sleep_ms(off_ms)
        finally:
            bz.duty_u16(0)  # also when a newer beep cancels this one

    def show(self, text):
        self.text = text
        d = self.display
        if d is None:
            return
        d.fill(0)
        row = 0
        for line in text.split("\n"):
            while line and row < _ROWS:
                d.text(line[:_COLS], 0, row * 8 + 4, 1)
                line = line[_COLS:]
                row += 1
        d.show()

    def off(self):
        self.led("off")
        self.show("")


def create(display=None):
    """The terminal's own LEDs and buzzer, from pins.py."""
    from machine import PWM, Pin

    import pins
    leds = {
        "red": Pin(pins.LED_RED, Pin.OUT, value=0),
        "green": Pin(pins.LED_GREEN, Pin.OUT, value=0),
        "blue": Pin(pins.LED_BLUE, Pin.OUT, value=0),
    }
    buzzer = PWM(Pin(pins.BUZZER, Pin.OUT), freq=2000, duty_u16=0)
    return Feedback(leds, buzzer, display)
