import sys

try:
    # As on the ESP32 (boards/esp32/main.py): Ctrl-C is a byte from here on.
    import micropython
    micropython.kbd_intr(-1)

    import gc

    # Loading modules leaves the heap in small pieces; hold one contiguous
    # region through the imports and hand it back for the long-lived buffers.
    gc.collect()
    _hold = bytearray(16 * 1024)

    import board
    from pos import app, service

    _hold = None
    gc.collect()

    def _reset():
        # The emulated board's reset: the process ends with RESET_EXIT, and
        # the launcher (`offpay emulate`) boots a new one on the same image.
        sys.exit(service.RESET_EXIT)

    code = None
    try:
        code = app.main(service.wired(board.wire))
    finally:
        # As on the ESP32: pos.service holds the console or resets. It
        # returns only when a test-mode app was stopped (SystemExit): the
        # process then ends with that exit status, and `offpay emulate` puts
        # MicroPython's REPL on the line, as the ESP32 would.
        service.after_app(code, _reset)
except KeyboardInterrupt:
    sys.exit(80)  # pos.service.RESET_EXIT: a Ctrl-C at boot resets, as on the ESP32
