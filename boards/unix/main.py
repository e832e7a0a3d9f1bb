import gc
import sys

# Loading modules leaves the heap in small pieces; hold one contiguous region
# through the imports and hand it back for the long-lived buffers.
gc.collect()
_hold = bytearray(16 * 1024)

import board
from pos import app, service

_hold = None
gc.collect()


def _reset():
    # The emulated board's reset: the process ends with RESET_EXIT, and the
    # launcher (`offpay emulate`) boots a new one on the same flash image.
    sys.exit(service.RESET_EXIT)


code = None
try:
    code = app.main(service.wired(board.wire))
finally:
    # As on the ESP32 (boards/esp32/main.py): pos.service holds the console or
    # resets. It returns only when a test-mode app was stopped (SystemExit):
    # the process then ends with that exit status, and `offpay emulate` puts
    # MicroPython's REPL on the line, as the ESP32 would.
    service.after_app(code, _reset)
