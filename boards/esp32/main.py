try:
    # First of all: from here on Ctrl-C is a byte (pos.console reads it), never
    # a KeyboardInterrupt into MicroPython's REPL. The statements before a
    # loop or a call into Python code are where the VM raises an interrupt
    # that arrived earlier, and they are all inside this try.
    import micropython
    micropython.kbd_intr(-1)

    import gc

    # Loading modules leaves the heap in small pieces; hold one contiguous
    # region through the imports and hand it back for the long-lived buffers.
    gc.collect()
    _hold = bytearray(20 * 1024)

    import machine

    import board
    from pos import app, service

    _hold = None
    gc.collect()

    def _keepalive(feed):
        # A test-mode terminal whose app was stopped: MicroPython's REPL is
        # the technician's now, and the watchdog the board armed cannot be
        # stopped. A timer feeds it (its callback runs in the MicroPython
        # task, which is the one the task watchdog watches) so the REPL is
        # not reset under them; machine.reset() or Ctrl-D starts the
        # terminal again.
        machine.Timer(0).init(period=1000, mode=machine.Timer.PERIODIC, callback=lambda t: feed())

    code = None
    try:
        code = app.main(service.wired(board.wire))
    finally:
        # Whatever ended the app: a config that does not load, a fault, or
        # SystemExit. pos.service holds the console (locked unless nothing
        # says "production") or resets; only a test-mode terminal reaches
        # the REPL.
        service.after_app(code, machine.reset, _keepalive)
except KeyboardInterrupt:
    # A Ctrl-C that arrived while the board booted, before kbd_intr(-1): a
    # reset, never the REPL (a USB cable must not open a locked terminal by
    # sending Ctrl-C at power-up).
    import machine
    machine.reset()
